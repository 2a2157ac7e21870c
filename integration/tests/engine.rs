//! The gateway engine (`Fs`) against an in-process cluster of real datanodes
//! and meta on loopback sockets with redb files in temp dirs.

use std::sync::atomic::Ordering;
use std::time::Duration;

use bytes::Bytes;
use tessera_gateway::placement::seed_for_path;
use tessera_gateway::{Fs, Stats};
use tessera_integration::cluster::{TestCluster, test_options};
use tessera_integration::data::{corrupt_in_file, pseudo_random};
use tessera_meta::{Inode, ROOT_INO, Settings};

fn settings(r: u32, w: u32, q: u32) -> Settings {
    Settings {
        replicas: r,
        write_quorum: w,
        read_quorum: q,
    }
}

async fn put(fs: &Fs, name: &str, data: &[u8]) -> Inode {
    let mut w = fs
        .replace(ROOT_INO, name, seed_for_path(name), 0o644)
        .await
        .unwrap();
    // Feed in uneven pieces to exercise chunking.
    for piece in data.chunks(300_001) {
        w.write(Bytes::copy_from_slice(piece)).await.unwrap();
    }
    w.finish(Some(data.len() as u64)).await.unwrap()
}

async fn get_all(fs: &Fs, inode: Inode) -> Vec<u8> {
    let mut r = fs.reader(inode);
    let mut out = Vec::new();
    loop {
        let b = r.read(1 << 20).await.unwrap();
        if b.is_empty() {
            return out;
        }
        out.extend_from_slice(&b);
    }
}

async fn total_blocks(c: &TestCluster, n: usize) -> u64 {
    let mut t = 0;
    for i in 0..n {
        t += c.node(i).stats().await.unwrap().1.blocks;
    }
    t
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn round_trips_of_edge_sizes_and_64_mib() {
    let c = TestCluster::start(3, settings(2, 2, 1)).await;
    for (i, size) in [0usize, 1, 511, 512, 513, 1025, 64 << 20]
        .into_iter()
        .enumerate()
    {
        let data = pseudo_random(i as u64, size);
        let name = format!("f{size}");
        let inode = put(&c.fs, &name, &data).await;
        assert_eq!(inode.size, size as u64);
        let back = get_all(&c.fs, c.fs.resolve(&format!("/{name}")).await.unwrap()).await;
        assert!(back == data, "size {size}: content differs");
        // Random access across a block boundary.
        if size > 600 {
            let part = c.fs.read(&inode, 500, 30).await.unwrap();
            assert_eq!(&part[..], &data[500..530]);
        }
    }
    // R=2: every block stored twice.
    let blocks: u64 = [0u64, 1, 511, 512, 513, 1025, 64 << 20]
        .iter()
        .map(|s| s.div_ceil(512))
        .sum();
    assert_eq!(total_blocks(&c, 3).await, 2 * blocks);
    c.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_writers_to_different_files() {
    let c = TestCluster::start(3, settings(2, 2, 1)).await;
    let tasks: Vec<_> = (0..8u64)
        .map(|i| {
            let fs = c.fs.clone();
            tokio::spawn(async move {
                let data = pseudo_random(100 + i, 700_000 + i as usize * 1000);
                let inode = put(&fs, &format!("w{i}"), &data).await;
                (inode, data)
            })
        })
        .collect();
    for t in tasks {
        let (inode, data) = t.await.unwrap();
        assert!(get_all(&c.fs, inode).await == data);
    }
    assert_eq!(c.fs.readdir(ROOT_INO).await.unwrap().len(), 8);
    c.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn partial_writes_and_truncate_down_then_up_reads_zeros() {
    let c = TestCluster::start(3, settings(2, 2, 1)).await;
    let fs = &c.fs;
    let f = fs
        .create(ROOT_INO, "p", 0o644, seed_for_path("/p"), true)
        .await
        .unwrap();
    let mut model = vec![0u8; 0];
    for (off, len, seed) in [
        (0u64, 1000usize, 1u64),
        (500, 20, 2),
        (1500, 600, 3),
        (3000, 1, 4),
        (511, 2, 5),
    ] {
        let d = pseudo_random(seed, len);
        fs.write_at(f.ino, off, &d).await.unwrap();
        let end = off as usize + len;
        if model.len() < end {
            model.resize(end, 0);
        }
        model[off as usize..end].copy_from_slice(&d);
    }
    let inode = fs.getattr(f.ino).await.unwrap();
    assert_eq!(inode.size, model.len() as u64);
    assert!(get_all(fs, inode).await == model, "in-place writes");

    // Truncate down into the middle of a block, then up: the cut bytes are zeros.
    fs.truncate(f.ino, 700).await.unwrap();
    let grown = fs.truncate(f.ino, 5000).await.unwrap();
    let back = get_all(fs, grown).await;
    assert_eq!(back.len(), 5000);
    assert_eq!(&back[..700], &model[..700]);
    assert!(
        back[700..].iter().all(|b| *b == 0),
        "bytes past a truncation must read as zeros"
    );
    // Offsets past the largest file size are refused, not overflowed.
    for off in [u64::MAX - 5, tessera_gateway::fs::MAX_FILE_SIZE] {
        let err = fs.write_at(f.ino, off, b"xyz").await.unwrap_err();
        assert!(matches!(err, tessera_gateway::Error::Invalid(_)), "{err:?}");
    }
    assert!(fs.truncate(f.ino, u64::MAX).await.is_err());
    // A write past the end leaves a hole of zeros.
    let after = fs.write_at(f.ino, 10_000, b"end").await.unwrap();
    let back = get_all(fs, after).await;
    assert!(back[5000..10_000].iter().all(|b| *b == 0));
    assert_eq!(&back[10_000..], b"end");
    c.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gc_deletes_replaced_unlinked_and_abandoned_objects() {
    let c = TestCluster::start(3, settings(2, 2, 1)).await;
    let a = pseudo_random(1, 100_000);
    put(&c.fs, "a", &a).await;
    put(&c.fs, "a", &pseudo_random(2, 50_000)).await; // replaces a
    put(&c.fs, "b", &pseudo_random(3, 30_000)).await;
    c.fs.unlink(ROOT_INO, "b").await.unwrap();
    {
        // An upload that is dropped before it finishes.
        let mut w = c.fs.replace(ROOT_INO, "c", 1, 0o644).await.unwrap();
        w.write(Bytes::from(vec![7u8; 8 << 20])).await.unwrap();
    }
    assert!(
        c.fs.resolve("/c").await.is_err(),
        "an unfinished upload is never visible"
    );
    let live = 2 * 50_000u64.div_ceil(512);
    // Done when meta's GC queue is empty and only the live file's blocks
    // remain (the gateway's id lease stays until it expires).
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        let t = total_blocks(&c, 3).await;
        let (_, gc, _) = c.fs.meta().counts().await.unwrap();
        if t == live && gc == 0 {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "gc left {t} blocks (expected {live}), {gc} queued"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(Stats::get(&c.fs.stats().gc_objects) >= 3);
    c.shutdown().await;
}

/// R=2 W=2: with one datanode down a write blocks (visible as a count) and
/// completes once the node is back.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn write_blocks_while_quorum_is_impossible_then_completes() {
    let mut c = TestCluster::start(3, settings(2, 2, 1)).await;
    c.stop_node(1).await;
    let data = pseudo_random(9, 2 << 20);
    let fs = c.fs.clone();
    let d = data.clone();
    let writer = tokio::spawn(async move { put(&fs, "blocked", &d).await });
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    while c.fs.stats().blocked_now.load(Ordering::Relaxed) == 0 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the write never blocked"
        );
        assert!(
            !writer.is_finished(),
            "the write finished with a datanode down at W=R"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    c.restart_node(1).await;
    let inode = tokio::time::timeout(Duration::from_secs(30), writer)
        .await
        .expect("write completes")
        .unwrap();
    assert_eq!(c.fs.stats().blocked_now.load(Ordering::Relaxed), 0);
    assert!(Stats::get(&c.fs.stats().blocked_total) >= 1);
    assert!(get_all(&c.fs, inode).await == data);
    c.shutdown().await;
}

/// A node that lost its disk answers "missing" until it has rebuilt its
/// slot: reads never take that for a hole and serve the other replica, and
/// the node ends up holding every block it held before (rebuilt, or
/// repaired by the reads).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wiped_replica_is_not_served_and_gets_its_blocks_back() {
    let mut c = TestCluster::start(3, settings(2, 2, 1)).await;
    let data = pseudo_random(5, 3 << 20);
    let inode = put(&c.fs, "r", &data).await;
    let before = c.node(0).stats().await.unwrap().1.blocks;
    assert!(before > 0);
    c.wipe_node(0).await;
    assert!(
        get_all(&c.fs, inode.clone()).await == data,
        "a wiped replica served as zeros"
    );
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    loop {
        let now = c.node(0).stats().await.unwrap().1.blocks;
        if now == before {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "only {now} of {before} blocks back"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(get_all(&c.fs, inode).await == data);
    c.shutdown().await;
}

/// R=3 W=2 Q=2 with one node down: writes and reads go on without blocking.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_node_down_with_r3_w2_q2_nothing_blocks() {
    let mut c = TestCluster::start(3, settings(3, 2, 2)).await;
    c.stop_node(2).await;
    let data = pseudo_random(11, 1 << 20);
    let inode = tokio::time::timeout(Duration::from_secs(20), put(&c.fs, "x", &data))
        .await
        .expect("write does not block");
    assert!(get_all(&c.fs, inode).await == data);
    assert_eq!(Stats::get(&c.fs.stats().blocked_total), 0);
    c.shutdown().await;
}

/// A reader still holding a replaced file's old version after GC deleted it
/// gets an error, never zeros.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reading_a_collected_object_fails_instead_of_returning_zeros() {
    let c = TestCluster::start(3, settings(2, 2, 1)).await;
    let old = put(&c.fs, "g", &pseudo_random(1, 100_000)).await;
    put(&c.fs, "g", &pseudo_random(2, 10)).await;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    while total_blocks(&c, 3).await != 2 {
        assert!(tokio::time::Instant::now() < deadline, "gc did not run");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let err = c.fs.read(&old, 0, 4096).await.unwrap_err();
    assert!(
        matches!(err, tessera_gateway::Error::Conflict(_)),
        "{err:?}"
    );
    c.shutdown().await;
}

/// Waits until the write blocks (a datanode is down), then gives up on it
/// as a client that disconnects does: its blocks may have reached the nodes
/// that are up, past the end of the file, without being committed.
async fn abandon_blocked_write(fs: &Fs, ino: u64, offset: u64, data: Vec<u8>) {
    let before = Stats::get(&fs.stats().blocked_total);
    let f = fs.clone();
    let write = tokio::spawn(async move { f.write_at(ino, offset, &data).await });
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    while Stats::get(&fs.stats().blocked_total) == before {
        assert!(tokio::time::Instant::now() < deadline, "never blocked");
        assert!(
            !write.is_finished(),
            "the write finished at W=R with a node down"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    write.abort();
    let _ = write.await;
}

/// A write that fails after its blocks reached some replicas must not leave
/// bytes that a later extension (a resize, or a write further on) exposes:
/// the grown region reads as zeros.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bytes_of_an_uncommitted_write_never_reappear() {
    let mut c = TestCluster::start(2, settings(2, 2, 1)).await;
    let fs = c.fs.clone();
    let mut files = Vec::new();
    for name in ["resized", "written"] {
        let f = fs
            .create(ROOT_INO, name, 0o644, seed_for_path(name), true)
            .await
            .unwrap();
        fs.write_at(f.ino, 0, &[b'a'; 100]).await.unwrap();
        files.push(f.ino);
    }
    c.stop_node(1).await;
    for &ino in &files {
        abandon_blocked_write(&fs, ino, 200, vec![0xEE; 3000]).await;
        assert_eq!(
            fs.getattr(ino).await.unwrap().size,
            100,
            "nothing committed"
        );
    }
    c.restart_node(1).await;

    let grown = fs.truncate(files[0], 4000).await.unwrap();
    let back = get_all(&fs, grown).await;
    assert_eq!(&back[..100], &[b'a'; 100]);
    assert!(
        back[100..].iter().all(|b| *b == 0),
        "a resize exposed {} bytes of an uncommitted write",
        back[100..].iter().filter(|b| **b != 0).count()
    );

    let after = fs.write_at(files[1], 3500, b"zz").await.unwrap();
    let back = get_all(&fs, after).await;
    assert_eq!(back.len(), 3502);
    assert!(
        back[100..3500].iter().all(|b| *b == 0),
        "a write further on exposed {} bytes of an uncommitted write",
        back[100..3500].iter().filter(|b| **b != 0).count()
    );
    assert_eq!(&back[3500..], b"zz");
    c.shutdown().await;
}

/// Two gateways (separate engines, as two processes would be) writing
/// different bytes of the same blocks in place: no update is lost.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn partial_writes_from_two_gateways_lose_nothing() {
    let c = TestCluster::start(3, settings(2, 2, 1)).await;
    let other = Fs::connect(&c.meta_addr, c.transport(), test_options())
        .await
        .unwrap();
    let f =
        c.fs.create(ROOT_INO, "shared", 0o644, seed_for_path("/shared"), true)
            .await
            .unwrap();
    c.fs.write_at(f.ino, 0, &[b'.'; 1024]).await.unwrap();
    let writers = [c.fs.clone(), other.clone()]
        .into_iter()
        .enumerate()
        .map(|(k, fs)| {
            tokio::spawn(async move {
                // Gateway k writes bytes k, k+2, k+4, ... of two blocks.
                for i in (k..1024).step_by(2).take(150) {
                    fs.write_at(f.ino, i as u64, &[b'0' + k as u8])
                        .await
                        .unwrap();
                }
            })
        })
        .collect::<Vec<_>>();
    for w in writers {
        w.await.unwrap();
    }
    let back = get_all(&c.fs, c.fs.getattr(f.ino).await.unwrap()).await;
    let lost: Vec<usize> = (0..1024)
        .filter(|&i| i / 2 < 150 && back[i] != b'0' + (i % 2) as u8)
        .collect();
    assert!(
        lost.is_empty(),
        "{} updates lost, first at {:?}",
        lost.len(),
        &lost[..lost.len().min(5)]
    );
    c.shutdown().await;
}

/// Reads and writes driven from a thread that may block (a FUSE request
/// thread) poll their datanode calls in place: reads over one and over
/// every slot answer the right bytes, and a write acknowledged at W=2 of
/// R=3 still gets its third copies stored. (The datanodes are behind
/// sockets here, where a call the client stops waiting for still lands, so
/// this does not tell a call left running from a dropped one.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn calls_from_a_request_thread_run_in_place() {
    let c = TestCluster::start(3, settings(3, 2, 2)).await;
    let data = pseudo_random(12, 3 << 20);
    let inode = put(&c.fs, "x", &[]).await;
    let (fs, rt) = (c.fs.clone(), tokio::runtime::Handle::current());
    let (want, ino) = (data.clone(), inode.ino);
    let inode = tokio::task::spawn_blocking(move || {
        std::thread::spawn(move || {
            tessera_rpc::allow_blocking_here();
            rt.block_on(async {
                let inode = fs.write_at(ino, 0, &want).await.unwrap();
                for (offset, len) in [
                    (0u64, 4096u64),
                    (5000, 3000),
                    (1 << 20, 70_000),
                    (0, 3 << 20),
                ] {
                    let got = fs.read(&inode, offset, len).await.unwrap();
                    let end = (offset + len) as usize;
                    assert!(
                        got[..] == want[offset as usize..end],
                        "read at {offset}+{len}"
                    );
                }
                inode
            })
        })
        .join()
        .unwrap()
    })
    .await
    .unwrap();
    assert_eq!(inode.size, data.len() as u64);
    // Every copy of every block, the slow third ones included.
    let want_blocks = 3 * (data.len() as u64).div_ceil(512);
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    while total_blocks(&c, 3).await < want_blocks {
        assert!(
            std::time::Instant::now() < deadline,
            "third copies never landed"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(total_blocks(&c, 3).await, want_blocks);
    c.shutdown().await;
}

/// Reads at every alignment answer the same bytes whether the first
/// replicas answer them whole (the direct path) or a node is down and they
/// are read block by block; a corrupt first copy is never served.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn direct_and_block_by_block_reads_agree() {
    let mut c = TestCluster::start(3, settings(2, 2, 1)).await;
    let data = pseudo_random(13, 512 * 3 * 41 + 123);
    let inode = put(&c.fs, "x", &data).await;
    let spans = [
        (0u64, 1u64),
        (0, 512),
        (511, 2),
        (700, 5000),
        (1536, 1536),
        (10_000, 50_000),
        (data.len() as u64 - 200, 1000),
        (0, data.len() as u64 + 10),
    ];
    let check = |got: Bytes, (offset, len): (u64, u64)| {
        let end = ((offset + len) as usize).min(data.len());
        assert!(
            got[..] == data[offset as usize..end],
            "read at {offset}+{len}"
        );
    };
    let stats = c.fs.stats();
    for &span in &spans {
        check(c.fs.read(&inode, span.0, span.1).await.unwrap(), span);
    }
    let direct = Stats::get(&stats.direct_reads);
    assert!(direct >= spans.len() as u64, "{direct} direct reads");
    assert_eq!(Stats::get(&stats.direct_reads_declined), 0);
    c.stop_node(1).await;
    for &span in &spans {
        check(c.fs.read(&inode, span.0, span.1).await.unwrap(), span);
    }
    assert!(Stats::get(&c.fs.stats().direct_reads_declined) > 0);
    c.restart_node(1).await;
    // Damage, at rest, the copies of the blocks whose first replica is on
    // node 0: the reads still answer the right bytes (from the other
    // replica), block by block.
    let declined = Stats::get(&c.fs.stats().direct_reads_declined);
    c.stop_node(0).await;
    let file = c.node_data(0).join("blocks.redb");
    let mut damaged = 0;
    for i in 0..(data.len() as u64) / 512 {
        if tessera_gateway::placement::slot(&inode.object, i, 0) == 0 {
            let at = i as usize * 512;
            damaged += corrupt_in_file(&file, &data[at..at + 96]).unwrap();
        }
    }
    assert!(damaged > 10, "only {damaged} copies found to damage");
    c.restart_node(0).await;
    for &span in &spans {
        check(c.fs.read(&inode, span.0, span.1).await.unwrap(), span);
    }
    assert!(Stats::get(&c.fs.stats().direct_reads_declined) > declined);
    c.shutdown().await;
}
