//! A full disk, for real: datanodes on a small tmpfs. A full node is not a
//! down node: writes fail at once with 507 instead of blocking, stored data
//! stays intact, and the same process takes writes again when space returns.

use std::time::Duration;

use bytes::Bytes;
use tessera_datanode::wire::PutItem;
use tessera_datanode::{Block, BlockStore, DatanodeError, GetResult, StoreOptions};
use tessera_integration::cluster::{TestCluster, test_options};
use tessera_integration::data::pseudo_random;
use tessera_integration::http::{Http, StatusCode};
use tessera_integration::tmpfs::Tmpfs;
use tessera_meta::Settings;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_datanode_answers_507_keeps_its_data_and_recovers() {
    let disk = Tmpfs::mount(48);
    let settings = Settings {
        replicas: 1,
        write_quorum: 1,
        read_quorum: 1,
    };
    let mut c = TestCluster::start_on(1, settings, test_options(), Some(&disk.path)).await;
    let h = Http::new(&c.webdav().await);
    let keep = pseudo_random(1, 1 << 20);
    assert_eq!(
        h.put("/keep.bin", keep.clone()).await.unwrap().status,
        StatusCode::CREATED
    );
    let ballast = disk.fill("ballast", 16 << 20);

    // 40 MB cannot fit: refused within seconds, never "blocked".
    let big = pseudo_random(2, 40 << 20);
    let put = tokio::time::timeout(Duration::from_secs(60), h.put("/big.bin", big.clone()))
        .await
        .expect("a PUT to a full cluster must answer, not block");
    let put = put.unwrap();
    assert_eq!(
        put.status,
        StatusCode::INSUFFICIENT_STORAGE,
        "{}",
        put.text()
    );
    assert!(put.text().contains("full"), "{}", put.text());
    assert_eq!(
        c.fs.stats()
            .blocked_now
            .load(std::sync::atomic::Ordering::Relaxed),
        0
    );
    assert_eq!(
        h.get("/big.bin").await.unwrap().status,
        StatusCode::NOT_FOUND
    );
    let back = h.get("/keep.bin").await.unwrap();
    assert!(back.body == keep, "stored data changed on a full disk");

    // Space returns: the same datanode takes the write.
    std::fs::remove_file(ballast).unwrap();
    let big = pseudo_random(3, 16 << 20);
    let put = h.put("/big.bin", big.clone()).await.unwrap();
    assert_eq!(put.status, StatusCode::CREATED, "{}", put.text());
    assert!(h.get("/big.bin").await.unwrap().body == big);

    // Full again, this time by the datanode itself (down to its reserve,
    // after using any room inside its file). Deleting a file frees room
    // inside the datanode's file, not on the file system, and writes
    // resume in it.
    let _ballast = disk.fill("ballast2", 8 << 20);
    let small = pseudo_random(4, 4 << 20);
    let mut filled = false;
    for i in 0..20 {
        let r = h.put(&format!("/filler-{i}"), small.clone()).await.unwrap();
        if r.status == StatusCode::INSUFFICIENT_STORAGE {
            filled = true;
            break;
        }
        assert_eq!(r.status, StatusCode::CREATED, "{}", r.text());
    }
    assert!(filled, "the datanode never filled up");
    assert_eq!(
        h.request("DELETE", "/big.bin", &[], Bytes::new())
            .await
            .unwrap()
            .status,
        StatusCode::NO_CONTENT
    );
    let mut status = StatusCode::INSUFFICIENT_STORAGE;
    for _ in 0..100 {
        status = h.put("/small.bin", small.clone()).await.unwrap().status;
        if status == StatusCode::CREATED {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(
        status,
        StatusCode::CREATED,
        "room freed inside the file was never used"
    );
    assert!(h.get("/small.bin").await.unwrap().body == small);
    assert!(h.get("/keep.bin").await.unwrap().body == keep);
    c.shutdown().await;
}

fn item(object: u64, index: u64, seed: u64) -> PutItem {
    PutItem {
        object,
        role: 0,
        index,
        block: Block::new(7, Bytes::from(pseudo_random(seed, 512))),
    }
}

/// With no reserve, redb itself runs out of room in a commit. The put fails
/// as "full", nothing half-written shows, and once space returns the same
/// store (reopened in place, not poisoned) takes writes again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_commit_that_hits_enospc_does_not_poison_the_store() {
    let disk = Tmpfs::mount(32);
    let options = StoreOptions {
        cache_bytes: 4 << 20,
        reserve_bytes: Some(0),
        ..StoreOptions::default()
    };
    let s = BlockStore::open_with(&disk.path.join("node"), options).unwrap();
    // 150 full rows (112 blocks of one replica role each, about 64 KiB).
    for o in 0..150u64 {
        let items: Vec<PutItem> = (0..112u64)
            .map(|i| item(100 + o, i, o * 1000 + i))
            .collect();
        s.put(items).await.unwrap();
    }
    let ballast = disk.fill("ballast", 1 << 20);
    // One block into each row: 75 KB of data passes the reserve check, but
    // every row is rewritten whole (copy on write), so the commit needs
    // about 10 MB and runs out of space inside redb.
    let items: Vec<PutItem> = (0..150u64)
        .map(|o| item(100 + o, 5, 7_000_000 + o))
        .collect();
    let e = s.put(items).await.unwrap_err();
    assert!(
        matches!(&e, DatanodeError::Full(m) if m.contains("os error 28")),
        "expected redb to run out of space: {e}"
    );
    std::fs::remove_file(ballast).unwrap();
    // The same store takes writes again, and what it held is intact.
    let mut ok = false;
    for _ in 0..50 {
        if s.put(vec![item(2, 0, 2)]).await.is_ok() {
            ok = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(ok, "the store stayed broken after space returned");
    // What it held is intact, and the failed put left nothing.
    for o in [0u64, 77, 149] {
        let got = s.get(100 + o, 0, vec![4, 5, 6]).await.unwrap();
        let want: Vec<GetResult> = [4u64, 5, 6]
            .into_iter()
            .map(|i| GetResult::Found(item(100 + o, i, o * 1000 + i).block))
            .collect();
        assert_eq!(got, want, "row {o}");
    }
    assert_eq!(
        s.get(2, 0, vec![0]).await.unwrap(),
        vec![GetResult::Found(item(2, 0, 2).block)]
    );
}
