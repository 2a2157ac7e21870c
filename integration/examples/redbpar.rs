//! Do concurrent reads of one BlockStore scale across cores?
use std::time::Instant;

use bytes::Bytes;
use tessera_datanode::*;

#[tokio::main]
async fn main() {
    let dir = tempfile::tempdir().unwrap();
    let cache: usize = std::env::var("CACHE_MIB")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(16);
    let s = BlockStore::open(dir.path(), cache << 20).unwrap();
    let n = 65536u64; // 32 MiB
    for c in 0..8 {
        let w = api::items(
            1,
            0,
            (c * 8192..(c + 1) * 8192).map(|i| (i, Block::new(1, Bytes::from(vec![i as u8; 512])))),
        );
        s.put(w).await.unwrap();
    }
    for par in [1usize, 2, 4] {
        let t = Instant::now();
        let rounds = 16;
        for _ in 0..rounds {
            let calls: Vec<_> = (0..par)
                .map(|j| {
                    let s = s.clone();
                    tokio::spawn(async move {
                        let start = (j as u64 * 8192) % n;
                        let keys: Vec<u64> = (start..start + 8192).collect();
                        s.get_packed(1, 0, keys).await.unwrap()
                    })
                })
                .collect();
            for c in calls {
                c.await.unwrap();
            }
        }
        let bytes = (rounds * par * 8192 * 512) as f64;
        println!(
            "direct get_packed par={par}: {:.0} MB/s",
            bytes / t.elapsed().as_secs_f64() / 1e6
        );
    }
}
