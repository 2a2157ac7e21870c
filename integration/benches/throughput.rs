//! Throughput of the engine next to the physical limit, in one run.
//!
//! 1. Limit: the same blocks inserted R times straight into redb, one redb
//!    file per datanode, one thread per core, 2048 blocks per durable
//!    transaction.
//! 2. Engine: an in-process cluster (3 datanodes, R=2 W=2 Q=1); 1 GiB written
//!    through `Fs` (streamed, whole-file replace), then read back.
//! 3. Gateway memory: the real `tessera gateway` process while a 4 GiB PUT
//!    streams through it (peak RSS from /proc).
//!
//! `TESSERA_BENCH_MIB` (default 1024) sets the size of 1-2;
//! `TESSERA_BENCH_RSS_MIB` (default 4096, 0 to skip) the size of 3;
//! `TESSERA_TEST_CACHE_MIB` (default 64) the redb cache of each datanode in 1-2.

use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use redb::{Database, Durability, TableDefinition};
use tessera_datanode::Block;
use tessera_gateway::placement::{self, seed_for_path};
use tessera_integration::cluster::{TestCluster, read_stream, write_stream};
use tessera_integration::procs::{ProcCluster, R2W2Q1};
use tessera_meta::{ObjectRef, Settings};

const BLOCKS: TableDefinition<(u64, u64), &[u8]> = TableDefinition::new("blocks");

fn env_mib(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn mbps(bytes: u64, d: Duration) -> f64 {
    bytes as f64 / d.as_secs_f64() / 1e6
}

/// A block record like a datanode's: generation, sha256, 512 bytes.
fn record(i: u64) -> Vec<u8> {
    let mut data = [0u8; 512];
    data[..8].copy_from_slice(&i.to_le_bytes());
    Block::new(1, Bytes::copy_from_slice(&data)).encode()
}

/// The same placement the engine uses: (slot, block) pairs for R replicas.
fn raw_redb_limit(blocks: u64, r: u32, nodes: u32) -> Duration {
    let dir = tempfile::tempdir().unwrap();
    let object = ObjectRef {
        id: 1,
        seed: seed_for_path("/bench"),
        width: nodes,
    };
    let dbs: Vec<Arc<Database>> = (0..nodes)
        .map(|n| {
            let db = Database::builder()
                .set_cache_size(64 << 20)
                .create(dir.path().join(format!("n{n}.redb")))
                .unwrap();
            Arc::new(db)
        })
        .collect();
    // Per node, the blocks placement gives it.
    let mut per_node: Vec<Vec<u64>> = vec![Vec::new(); nodes as usize];
    for i in 0..blocks {
        for s in placement::replicas(&object, i, r) {
            per_node[s as usize].push(i);
        }
    }
    let template = record(0);
    let cores = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(2);
    // One thread per core, taking 2048-block batches round-robin over the
    // nodes, so both cores stay busy with three files.
    let mut batches: Vec<(usize, Vec<u64>)> = Vec::new();
    let chunked: Vec<Vec<Vec<u64>>> = per_node
        .iter()
        .map(|v| v.chunks(2048).map(|c| c.to_vec()).collect())
        .collect();
    let most = chunked.iter().map(Vec::len).max().unwrap_or(0);
    for j in (0..most).rev() {
        for (n, c) in chunked.iter().enumerate() {
            if let Some(b) = c.get(j) {
                batches.push((n, b.clone()));
            }
        }
    }
    let work = std::sync::Mutex::new(batches);
    let (work, template, dbs) = (&work, &template, &dbs);
    let start = Instant::now();
    std::thread::scope(|scope| {
        for _ in 0..cores {
            scope.spawn(move || {
                let mut rec = template.clone();
                loop {
                    let Some((n, batch)) = work.lock().unwrap().pop() else {
                        return;
                    };
                    let mut tx = dbs[n].begin_write().unwrap();
                    tx.set_durability(Durability::Immediate).unwrap();
                    {
                        let mut t = tx.open_table(BLOCKS).unwrap();
                        for &i in &batch {
                            rec[40..48].copy_from_slice(&i.to_le_bytes());
                            t.insert((1, i), rec.as_slice()).unwrap();
                        }
                    }
                    tx.commit().unwrap();
                }
            });
        }
    });
    start.elapsed()
}

fn peak_rss_kib(pid: u32) -> u64 {
    let s = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    s.lines()
        .find(|l| l.starts_with("VmHWM:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

fn median(v: &mut [f64]) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    v[v.len() / 2]
}

/// One engine round: write `bytes` through `Fs`, then read them back.
async fn engine_round(bytes: u64) -> (Duration, Duration) {
    let c = TestCluster::start(3, Settings::default()).await;
    let start = Instant::now();
    let inode = write_stream(&c.fs, "bench", bytes).await;
    let w = start.elapsed();
    let start = Instant::now();
    let got = read_stream(&c.fs, inode).await;
    let r = start.elapsed();
    assert_eq!(got, bytes);
    c.shutdown().await;
    (w, r)
}

fn main() {
    let mib = env_mib("TESSERA_BENCH_MIB", 1024);
    let bytes = mib << 20;
    let blocks = bytes / 512;
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();

    let cache = std::env::var("TESSERA_TEST_CACHE_MIB").unwrap_or_else(|_| "64".into());
    println!(
        "tessera throughput bench: {mib} MiB, 3 datanodes, R=2 W=2 Q=1, datanode cache {cache} MiB"
    );
    // The disk here varies a lot from minute to minute: interleave the
    // phases and report medians, so the ratio compares like with like.
    let repeat = env_mib("TESSERA_BENCH_REPEAT", 3).max(1) as usize;
    let (mut limits, mut writes, mut reads) = (vec![], vec![], vec![]);
    for round in 1..=repeat {
        let limit = raw_redb_limit(blocks, 2, 3);
        let (w, r) = rt.block_on(engine_round(bytes));
        println!(
            "  round {round}: limit {:6.1} MB/s, engine write {:6.1} MB/s, read {:6.1} MB/s",
            mbps(bytes, limit),
            mbps(bytes, w),
            mbps(bytes, r)
        );
        limits.push(mbps(bytes, limit));
        writes.push(mbps(bytes, w));
        reads.push(mbps(bytes, r));
    }
    let (limit_mbps, wm, rm) = (median(&mut limits), median(&mut writes), median(&mut reads));
    println!("  median of {repeat}:");
    println!(
        "  limit: redb direct, {} inserts (R=2), 2048/txn, durable: {limit_mbps:7.1} MB/s of file data",
        blocks * 2
    );
    println!(
        "  engine write (Fs, streamed):     {wm:7.1} MB/s = {:.2}x the limit",
        wm / limit_mbps
    );
    println!("  engine read  (Fs, read-ahead):   {rm:7.1} MB/s");

    let rss_mib = env_mib("TESSERA_BENCH_RSS_MIB", 4096);
    if rss_mib > 0 {
        rt.block_on(async {
            let c = ProcCluster::start(3, R2W2Q1);
            let gw = c.gateway.as_ref().unwrap();
            let pid = gw.pid();
            let http = tessera_integration::http::Http::new(&gw.addr);
            let mut upload = http.put_streaming("/big");
            let chunk = Bytes::from(vec![0x5au8; 4 << 20]);
            let start = Instant::now();
            for _ in 0..(rss_mib / 4) {
                upload.send(chunk.clone()).await.unwrap();
            }
            let status = upload.finish().await.unwrap();
            let t = start.elapsed();
            assert!(status.is_success(), "PUT answered {status}");
            println!(
                "  gateway process: {rss_mib} MiB streaming PUT at {:.1} MB/s, peak RSS {} MiB",
                mbps(rss_mib << 20, t),
                peak_rss_kib(pid) / 1024
            );
        });
    }
}
