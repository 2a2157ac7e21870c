//! Throughput of the engine next to the limits of its parts, in one run.
//!
//! 1. Baseline, the first layout's limit: the same blocks inserted R times
//!    straight into redb as one row per block, one redb file per datanode,
//!    one thread per core, 2048 blocks per durable transaction.
//! 2. The extent-row limit: the same blocks put R times straight into three
//!    datanode `BlockStore`s (verified, merged into extent rows, durable),
//!    two batches in flight per store, no network.
//! 3. Engine: an in-process cluster (3 datanodes, R=2 W=2 Q=1); 1 GiB written
//!    through `Fs` (streamed, whole-file replace), then read back.
//! 4. SHA-256 over 512-byte blocks on one core (the read path hashes every
//!    block once), one at a time and batched as the engine hashes them.
//! 5. Gateway memory: the real `tessera gateway` process while a 4 GiB PUT
//!    streams through it (peak RSS from /proc).
//!
//! `TESSERA_BENCH_MIB` (default 1024) sets the size of 1-2;
//! `TESSERA_BENCH_RSS_MIB` (default 4096, 0 to skip) the size of 3;
//! `TESSERA_TEST_CACHE_MIB` (default 64) the redb cache of each datanode in 1-2.

use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use redb::{Database, Durability, TableDefinition};
use tessera_datanode::{Block, BlockStore};
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

/// A block record of the first layout: generation, sha256, 512 bytes.
fn record(i: u64) -> Vec<u8> {
    let mut data = [0u8; 512];
    data[..8].copy_from_slice(&i.to_le_bytes());
    let b = Block::new(1, Bytes::copy_from_slice(&data));
    let mut rec = Vec::with_capacity(40 + 512);
    rec.extend_from_slice(&b.generation.to_le_bytes());
    rec.extend_from_slice(&b.sha256);
    rec.extend_from_slice(&b.data);
    rec
}

/// The blocks placement gives each of `nodes` nodes, for `r` replicas,
/// with the replica role each is held in.
fn per_node(blocks: u64, r: u32, nodes: u32) -> Vec<Vec<(u64, u8)>> {
    let object = ObjectRef {
        id: 1,
        seed: seed_for_path("/bench"),
        width: nodes,
    };
    let mut per_node: Vec<Vec<(u64, u8)>> = vec![Vec::new(); nodes as usize];
    for i in 0..blocks {
        for (k, s) in placement::replicas(&object, i, r).enumerate() {
            per_node[s as usize].push((i, k as u8));
        }
    }
    per_node
}

/// The same blocks put R times into three datanode stores, as the engine
/// sends them: 4 MiB chunks of the file, each node's share in one put.
async fn extent_store_limit(blocks: u64, r: u32, nodes: u32) -> Duration {
    let dir = tempfile::tempdir().unwrap();
    let cache = env_mib("TESSERA_TEST_CACHE_MIB", 64) as usize;
    let stores: Vec<BlockStore> = (0..nodes)
        .map(|n| BlockStore::open(&dir.path().join(format!("n{n}")), cache << 20).unwrap())
        .collect();
    let chunk = 8192u64;
    let data = Bytes::from(tessera_integration::data::pseudo_random(
        3,
        512 * chunk as usize,
    ));
    let blocks_of_chunk: Vec<Block> = data
        .chunks(512)
        .map(|c| Block::new(1, data.slice_ref(c)))
        .collect();
    let per_node = per_node(blocks, r, nodes);
    let start = Instant::now();
    let tasks: Vec<_> = stores
        .into_iter()
        .zip(per_node)
        .map(|(store, mine)| {
            let blocks_of_chunk = blocks_of_chunk.clone();
            tokio::spawn(async move {
                // Two chunks in flight per store, like a streaming upload.
                let sem = Arc::new(tokio::sync::Semaphore::new(2));
                let mut puts = Vec::new();
                for part in mine.chunk_by(|a, b| a.0 / chunk == b.0 / chunk) {
                    let items: Vec<_> = part
                        .iter()
                        .map(|&(index, role)| tessera_datanode::wire::PutItem {
                            object: 1,
                            role,
                            index,
                            block: blocks_of_chunk[(index % chunk) as usize].clone(),
                        })
                        .collect();
                    let (store, permit) = (store.clone(), sem.clone().acquire_owned().await);
                    puts.push(tokio::spawn(async move {
                        store.put(items).await.unwrap();
                        drop(permit);
                    }));
                }
                for p in puts {
                    p.await.unwrap();
                }
            })
        })
        .collect();
    for t in tasks {
        t.await.unwrap();
    }
    start.elapsed()
}

/// SHA-256 of 512-byte blocks on one core, in bytes per second.
/// SHA-256 of 512-byte blocks one at a time (`sha2`) and as the read and
/// write paths hash them ([`tessera_datanode::sha::digest_all`]: sixteen or
/// two at a time).
fn sha256_rates() -> (f64, f64) {
    let data = tessera_integration::data::pseudo_random(5, 64 << 20);
    let start = Instant::now();
    let mut x = 0u8;
    for c in data.chunks(512) {
        x ^= tessera_datanode::sha::single(c)[0];
    }
    let single = data.len() as f64 / start.elapsed().as_secs_f64() / 1e6;
    let start = Instant::now();
    for batch in data.chunks(4 << 20) {
        for d in tessera_datanode::sha::digest_all(batch.chunks(512)) {
            x ^= d[0];
        }
    }
    let pairs = data.len() as f64 / start.elapsed().as_secs_f64() / 1e6;
    std::hint::black_box(x);
    (single, pairs)
}

/// The same placement the engine uses: (slot, block) pairs for R replicas.
fn raw_redb_limit(blocks: u64, r: u32, nodes: u32) -> Duration {
    let dir = tempfile::tempdir().unwrap();
    let object = ObjectRef {
        id: 1,
        seed: seed_for_path("/bench"),
        width: nodes,
    };
    let _ = object;
    let dbs: Vec<Arc<Database>> = (0..nodes)
        .map(|n| {
            let db = Database::builder()
                .set_cache_size(64 << 20)
                .create(dir.path().join(format!("n{n}.redb")))
                .unwrap();
            Arc::new(db)
        })
        .collect();
    let per_node = per_node(blocks, r, nodes);
    let template = record(0);
    let cores = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(2);
    // One thread per core, taking 2048-block batches round-robin over the
    // nodes, so both cores stay busy with three files.
    let mut batches: Vec<(usize, Vec<u64>)> = Vec::new();
    let chunked: Vec<Vec<Vec<u64>>> = per_node
        .iter()
        .map(|v| {
            v.chunks(2048)
                .map(|c| c.iter().map(|&(i, _)| i).collect())
                .collect()
        })
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
    let (mut rows, mut extents, mut writes, mut reads, mut shas, mut pairs) =
        (vec![], vec![], vec![], vec![], vec![], vec![]);
    for round in 1..=repeat {
        let row = mbps(bytes, raw_redb_limit(blocks, 2, 3));
        let extent = mbps(bytes, rt.block_on(extent_store_limit(blocks, 2, 3)));
        let (w, r) = rt.block_on(engine_round(bytes));
        let (w, r) = (mbps(bytes, w), mbps(bytes, r));
        let (sha, pair) = sha256_rates();
        println!(
            "  round {round}: per-block rows {row:6.1}, extent rows {extent:6.1}, engine write {w:6.1}, \
             read {r:6.1}, sha256 {sha:6.1}, batched {pair:6.1} MB/s"
        );
        rows.push(row);
        extents.push(extent);
        writes.push(w);
        reads.push(r);
        shas.push(sha);
        pairs.push(pair);
    }
    let (row, extent, wm, rm, sha, pair) = (
        median(&mut rows),
        median(&mut extents),
        median(&mut writes),
        median(&mut reads),
        median(&mut shas),
        median(&mut pairs),
    );
    println!("  median of {repeat} (MB/s of file data):");
    println!(
        "  baseline: one redb row per block, {} inserts (R=2), 2048/txn, durable: {row:7.1}",
        blocks * 2
    );
    println!(
        "  limit: extent rows through BlockStore::put (R=2, verified, durable):  {extent:7.1} = {:.2}x baseline",
        extent / row
    );
    println!(
        "  engine write (Fs, streamed):                                         {wm:7.1} = {:.2}x baseline (target 2.5x), {:.2}x the extent limit",
        wm / row,
        wm / extent
    );
    println!(
        "  engine read  (Fs, read-ahead):                                       {rm:7.1} = {:.2}x SHA-256 (target 0.6x)",
        rm / sha
    );
    println!("  SHA-256 of 512-byte blocks, one core:                                {sha:7.1}");
    println!(
        "  SHA-256 of 512-byte blocks batched (the read and write paths), one core: {pair:7.1} = {:.2}x",
        pair / sha
    );

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
