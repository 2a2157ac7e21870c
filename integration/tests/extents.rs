//! The engine over extent rows: in-place writes that cross row boundaries,
//! concurrent writers into one row, and a replica left a generation behind.

use std::time::Duration;

use bytes::Bytes;
use tessera_datanode::GetResult;
use tessera_datanode::extent::GROUP_BLOCKS;
use tessera_gateway::Fs;
use tessera_gateway::placement::{self, seed_for_path};
use tessera_integration::cluster::{TestCluster, test_options};
use tessera_integration::data::pseudo_random;
use tessera_meta::{Inode, ROOT_INO, Settings};

/// Bytes of the file covered by one extent row.
const ROW: u64 = GROUP_BLOCKS * 512;

async fn put(fs: &Fs, name: &str, data: &[u8]) -> Inode {
    let mut w = fs
        .replace(ROOT_INO, name, seed_for_path(name), 0o644)
        .await
        .unwrap();
    w.write(Bytes::copy_from_slice(data)).await.unwrap();
    w.finish(Some(data.len() as u64)).await.unwrap()
}

async fn read_all(fs: &Fs, ino: u64) -> Vec<u8> {
    let inode = fs.getattr(ino).await.unwrap();
    fs.read(&inode, 0, inode.size).await.unwrap().to_vec()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn partial_overwrites_across_row_boundaries() {
    let c = TestCluster::start(3, Settings::default()).await;
    let fs = &c.fs;
    let mut model = pseudo_random(1, (3 * ROW) as usize + 777);
    let f = put(fs, "rows", &model).await;
    // Unaligned writes straddling one row boundary, two boundaries, the
    // last partial block, and a write that extends the file.
    let writes: [(u64, usize); 5] = [
        (ROW - 700, 1500),
        (ROW - 1, 2),
        (ROW / 2 + 3, (ROW + ROW / 2) as usize + 10),
        (3 * ROW + 500, 400),
        (3 * ROW + 700, 1000),
    ];
    for (n, (off, len)) in writes.into_iter().enumerate() {
        let patch = pseudo_random(10 + n as u64, len);
        fs.write_at(f.ino, off, &patch).await.unwrap();
        let end = off as usize + len;
        if model.len() < end {
            model.resize(end, 0);
        }
        model[off as usize..end].copy_from_slice(&patch);
        let back = read_all(fs, f.ino).await;
        assert_eq!(back.len(), model.len(), "write {n}");
        assert!(back == model, "write {n} at {off}+{len} reads back wrong");
    }
    // Ranged reads across the boundaries see the same bytes.
    let inode = fs.getattr(f.ino).await.unwrap();
    for (off, len) in [(ROW - 3, 7u64), (2 * ROW - 512, 1024), (0, 3 * ROW + 1)] {
        let got = fs.read(&inode, off, len).await.unwrap();
        let end = (off + len).min(model.len() as u64) as usize;
        assert!(got[..] == model[off as usize..end], "read at {off}+{len}");
    }
    c.shutdown().await;
}

/// Two gateways, each with several writers, fill distinct blocks of the
/// same rows at once: every datanode merges concurrent puts into one row
/// without losing any.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_writers_to_neighbouring_blocks_of_one_row() {
    let c = TestCluster::start(3, Settings::default()).await;
    let other = Fs::connect(&c.meta_addr, c.transport(), test_options())
        .await
        .unwrap();
    let f = put(&c.fs, "shared", &[0u8; 512]).await;
    let blocks = 64u64;
    let block = |j: u64| {
        let mut b = format!("block-{j:04}-").repeat(50).into_bytes();
        b.truncate(512);
        b
    };
    let tasks: Vec<_> = (0..blocks)
        .map(|j| {
            let fs = if j % 2 == 0 {
                c.fs.clone()
            } else {
                other.clone()
            };
            let data = block(j);
            tokio::spawn(async move { fs.write_at(f.ino, j * 512, &data).await.unwrap() })
        })
        .collect();
    for t in tasks {
        t.await.unwrap();
    }
    let back = read_all(&c.fs, f.ino).await;
    assert_eq!(back.len() as u64, blocks * 512);
    for j in 0..blocks {
        let got = &back[(j * 512) as usize..((j + 1) * 512) as usize];
        assert!(got == block(j), "block {j} lost an update");
    }
    c.shutdown().await;
}

/// R=3 W=2: a node down during an overwrite keeps the old generation; reads
/// at Q=2 meet it and serve the newer copy, and it gets the newer copy back
/// (written back by the reads, or copied by the node itself from meta's
/// repair queue, whichever comes first).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stale_generation_replica_is_repaired() {
    let settings = Settings {
        replicas: 3,
        write_quorum: 2,
        read_quorum: 2,
    };
    let mut c = TestCluster::start(3, settings).await;
    let size = 2 * ROW as usize;
    let v1 = pseudo_random(1, size);
    let f = put(&c.fs, "stale", &v1).await;
    c.stop_node(2).await;
    let v2 = pseudo_random(2, size);
    let after = c.fs.write_at(f.ino, 0, &v2).await.unwrap();
    c.restart_node(2).await;
    // Node 2 holds every block, at the old generation.
    let node = c.node(2);
    let object = after.object;
    let blocks = (size / 512) as u64;
    let role_of = |i: u64| {
        (0..3)
            .find(|&k| placement::slot(&object, i, k) == 2)
            .unwrap()
    };
    // The blocks a Q=2 read asks node 2 for: those it holds as replica 0 or 1.
    let asked: Vec<u64> = (0..blocks).filter(|&i| role_of(i) < 2).collect();
    assert!(!asked.is_empty());
    let gen_on_node = |r: &GetResult| match r {
        GetResult::Found(b) => b.generation,
        other => panic!("{other:?}"),
    };
    let first = node
        .get(object.id, role_of(asked[0]) as u8, vec![asked[0]])
        .await
        .unwrap();
    let old_gen = gen_on_node(&first[0]);
    assert!(
        read_all(&c.fs, f.ino).await == v2,
        "the newer copy is served"
    );
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    loop {
        let mut stale = 0;
        for &i in &asked {
            let r = node
                .get(object.id, role_of(i) as u8, vec![i])
                .await
                .unwrap();
            match &r[0] {
                GetResult::Found(b) if b.generation > old_gen => {
                    assert!(b.data[..] == v2[(i * 512) as usize..((i + 1) * 512) as usize]);
                }
                _ => stale += 1,
            }
        }
        if stale == 0 {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "{stale} of {} blocks still stale on node 2",
            asked.len()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    c.shutdown().await;
}
