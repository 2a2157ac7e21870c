//! Profiling aid: writes `TESSERA_PROBE_MIB` (default 256) through `Fs`, then
//! reads it back `TESSERA_PROBE_READS` times (default 4), printing MB/s.
//! Run under `perf record -D <ms>` to see only the reads.
use std::time::Instant;

use tessera_integration::cluster::{TestCluster, read_stream, write_stream};
use tessera_meta::Settings;

fn env(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

#[tokio::main]
async fn main() {
    tessera_rpc::tune_allocator();
    let bytes = env("TESSERA_PROBE_MIB", 256) << 20;
    let c = TestCluster::start(3, Settings::default()).await;
    let t = Instant::now();
    let inode = write_stream(&c.fs, "p", bytes).await;
    println!(
        "write {:.1} MB/s",
        bytes as f64 / t.elapsed().as_secs_f64() / 1e6
    );
    for _ in 0..env("TESSERA_PROBE_READS", 4) {
        let t = Instant::now();
        let got = read_stream(&c.fs, inode.clone()).await;
        assert_eq!(got, bytes);
        println!(
            "read {:.1} MB/s",
            bytes as f64 / t.elapsed().as_secs_f64() / 1e6
        );
    }
    if std::env::var("TESSERA_PROBE_RAW").is_ok() {
        raw_gets(&c, inode.object.id, bytes / 512).await;
    }
    c.shutdown().await;
}

/// Concurrent gets straight to one datanode, no gateway logic.
#[allow(dead_code)]
pub async fn raw_gets(c: &TestCluster, object: u64, blocks: u64) {
    let node = c.node(0);
    for n in [1u64, 100, 1000, 2730, 8192] {
        let keys: Vec<u64> = (0..n).collect();
        let mut best = std::time::Duration::MAX;
        for _ in 0..10 {
            let t = Instant::now();
            node.get(object, 0, keys.clone()).await.unwrap();
            best = best.min(t.elapsed());
        }
        println!("get of {n} keys: best {best:?}");
    }
    for par in [1usize, 2, 4, 8] {
        let t = Instant::now();
        let per = 2730u64;
        let total_calls = 64;
        let mut done = 0;
        let mut bytes = 0u64;
        while done < total_calls {
            let calls: Vec<_> = (0..par)
                .map(|j| {
                    let node = node.clone();
                    let start =
                        ((done + j) as u64 * per * 3) % blocks.saturating_sub(per * 3).max(1);
                    async move {
                        let keys: Vec<u64> = (0..per).map(|i| start + i * 3).collect();
                        node.get(object, 0, keys).await.unwrap()
                    }
                })
                .collect();
            for r in futures::future::join_all(calls).await {
                bytes += r
                    .iter()
                    .map(|g| match g {
                        tessera_datanode::GetResult::Found(b) => b.data.len() as u64,
                        _ => 0,
                    })
                    .sum::<u64>();
            }
            done += par;
        }
        println!(
            "raw gets par={par}: {:.1} MB/s found",
            bytes as f64 / t.elapsed().as_secs_f64() / 1e6
        );
    }
}
