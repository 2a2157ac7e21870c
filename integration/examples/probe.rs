//! Where read time goes: one 8192-block get, direct and over RPC.
use bytes::Bytes;
use std::time::Instant;
use tessera_datanode::*;
use tessera_integration::cluster::TestCluster;
use tessera_meta::Settings;

#[tokio::main]
async fn main() {
    let c = TestCluster::start(3, Settings::default()).await;
    let node = c.node(0);
    let n = 8192u64;
    let writes: Vec<BlockWrite> = (0..n)
        .map(|i| BlockWrite {
            key: BlockKey {
                object: 9,
                index: i,
            },
            block: Block::new(1, Bytes::from(vec![i as u8; 512])),
        })
        .collect();
    let t = Instant::now();
    node.put(writes.clone()).await.unwrap();
    println!("put 8192 over rpc: {:?}", t.elapsed());
    let keys: Vec<BlockKey> = (0..n)
        .map(|i| BlockKey {
            object: 9,
            index: i,
        })
        .collect();
    for _ in 0..3 {
        let t = Instant::now();
        let r = node.get(keys.clone()).await.unwrap();
        println!("get 8192 over rpc: {:?} ({} results)", t.elapsed(), r.len());
    }
    let t = Instant::now();
    let enc = tessera_rpc::codec::encode(&writes);
    println!(
        "encode 8192 writes: {:?} ({} bytes)",
        t.elapsed(),
        enc.len()
    );
    let t = Instant::now();
    let _: Vec<BlockWrite> = tessera_rpc::codec::decode(&enc).unwrap();
    println!("decode 8192 writes: {:?}", t.elapsed());
    let dir = tempfile::tempdir().unwrap();
    let s = BlockStore::open(dir.path(), 64 << 20).unwrap();
    s.put(writes).await.unwrap();
    for _ in 0..3 {
        let t = Instant::now();
        s.get(keys.clone()).await.unwrap();
        println!("get 8192 direct: {:?}", t.elapsed());
    }
    c.shutdown().await;
}
