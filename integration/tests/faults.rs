//! Process-level fault tests: the real `tessera` binary as separate meta,
//! datanode and gateway processes, killed with SIGKILL.

use std::time::Duration;

use bytes::Bytes;
use tessera_datanode::{DatanodeClient, GetResult};
use tessera_gateway::placement;
use tessera_integration::data::{corrupt_in_file, pseudo_random, tagged_blocks};
use tessera_integration::http::{Http, StatusCode};
use tessera_integration::procs::{Proc, ProcCluster, R2W2Q1};
use tessera_meta::MetaClient;
use tessera_rpc::Transport;

const R3W2Q2: &[&str] = &[
    "--replicas",
    "3",
    "--write-quorum",
    "2",
    "--read-quorum",
    "2",
];

async fn wait_log(p: &Proc, needle: &str, within: Duration) -> bool {
    let deadline = tokio::time::Instant::now() + within;
    while tokio::time::Instant::now() < deadline {
        if p.log().contains(needle) {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    false
}

/// (a) R=2 W=2: a datanode killed, a PUT blocks; restarted, the PUT
/// completes with the bytes intact.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_put_blocks_while_a_datanode_is_down_then_completes() {
    let mut c = ProcCluster::start(3, R2W2Q1);
    let http = Http::new(&c.gateway_addr());
    c.kill_datanode(1);
    let data = pseudo_random(1, 3 << 20);
    let put = {
        let (http, body) = (http.clone(), data.clone());
        tokio::spawn(async move { http.put("/blocked.bin", body).await.unwrap() })
    };
    let gw = c.gateway.as_ref().unwrap();
    assert!(
        wait_log(gw, "write blocked", Duration::from_secs(30)).await,
        "the PUT never blocked:\n{}",
        gw.log()
    );
    assert!(
        !put.is_finished(),
        "the PUT finished while a replica was down at W=R=2"
    );
    c.restart_datanode(1);
    let reply = tokio::time::timeout(Duration::from_secs(60), put)
        .await
        .expect("the PUT completes")
        .unwrap();
    assert_eq!(reply.status, StatusCode::CREATED, "{}", reply.text());
    let back = http.get("/blocked.bin").await.unwrap();
    assert_eq!(back.status, StatusCode::OK);
    assert!(back.body == data, "bytes differ after a blocked write");
}

/// (b) R=3 W=2 Q=2: one datanode down, writes and reads go on unblocked,
/// through the gateway process and through an engine in this process
/// (whose counters say no write ever blocked).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn b_one_datanode_down_r3_w2_q2_nothing_blocks() {
    use tessera_gateway::{Fs, FsOptions, Stats};
    let mut c = ProcCluster::start(3, R3W2Q2);
    let http = Http::new(&c.gateway_addr());
    c.kill_datanode(2);
    let fs = Fs::connect(
        &c.meta_addr(),
        Transport::new(c.secret()),
        FsOptions::default(),
    )
    .await
    .unwrap();
    for i in 0..5u64 {
        let name = format!("engine-{i}");
        let size = 300_000 + i * 999;
        let inode = tokio::time::timeout(
            Duration::from_secs(20),
            tessera_integration::cluster::write_stream(&fs, &name, size),
        )
        .await
        .expect("an engine write did not block");
        let back = tessera_integration::cluster::read_stream(&fs, inode).await;
        assert_eq!(back, size);
    }
    assert_eq!(
        Stats::get(&fs.stats().blocked_total),
        0,
        "a write blocked with W=2 of 3 replicas up"
    );
    for i in 0..5u64 {
        let data = pseudo_random(10 + i, 400_000 + i as usize * 777);
        let path = format!("/b{i}.bin");
        let put =
            tokio::time::timeout(Duration::from_secs(20), http.put(&path, data.clone())).await;
        assert_eq!(
            put.expect("PUT did not block").unwrap().status,
            StatusCode::CREATED
        );
        let got = tokio::time::timeout(Duration::from_secs(20), http.get(&path))
            .await
            .expect("GET did not block")
            .unwrap();
        assert_eq!(got.status, StatusCode::OK);
        assert!(got.body == data);
    }
}

/// (c) A block corrupted on disk in one replica: GET returns the right
/// bytes, and the bad copy is repaired.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn c_corrupt_replica_is_not_served_and_is_repaired() {
    let mut c = ProcCluster::start(3, R2W2Q1);
    let http = Http::new(&c.gateway_addr());
    let data = tagged_blocks("corruption-test", 64);
    assert_eq!(
        http.put("/c.bin", data.clone()).await.unwrap().status,
        StatusCode::CREATED
    );

    let transport = Transport::new(c.secret());
    let inode = MetaClient::new(&transport, &c.meta_addr())
        .resolve(vec!["c.bin".into()])
        .await
        .unwrap();
    // A block whose first replica is datanode 0 (slot 0), so the GET reads it there.
    let b = (0..64u64)
        .find(|&i| placement::slot(&inode.object, i, 0) == 0)
        .expect("a block on slot 0");
    let block = &data[b as usize * 512..(b as usize + 1) * 512];

    c.stop_datanode(0);
    let hits = corrupt_in_file(&c.datanode_file(0), &block[..96]).unwrap();
    assert!(hits >= 1, "block {b} not found in datanode 0's file");
    c.restart_datanode(0);

    // Every GET serves the right bytes; one of them meets the corrupt copy
    // (once the gateway has the restarted node's address) and repairs it.
    let node = DatanodeClient::new(&transport, &c.datanode_addr(0), Duration::from_secs(5));
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        let got = http.get("/c.bin").await.unwrap();
        assert_eq!(got.status, StatusCode::OK, "{}", got.text());
        assert!(got.body == data, "a corrupt copy was served");
        match node
            .get(inode.object.id, 0, vec![b])
            .await
            .unwrap()
            .pop()
            .unwrap()
        {
            GetResult::Found(found) if found.data[..] == *block => break,
            other => {
                assert!(
                    tokio::time::Instant::now() < deadline,
                    "block {b} not repaired on datanode 0: {other:?}"
                );
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    }
    // The gateway logs the repair once the datanode has answered it.
    let gw = c.gateway.as_ref().unwrap();
    assert!(
        wait_log(gw, "repaired replicas", Duration::from_secs(10)).await,
        "no repair logged:\n{}",
        gw.log()
    );
    // The gateway found the damage (the datanode does not hash on reads)
    // and reported it to the node that holds it.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        let (_, stats) = node.stats().await.unwrap();
        if stats.corrupt_reported >= 1 {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "never reported: {stats:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// (d) Every process killed and restarted on its data: every file is there,
/// byte for byte.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn d_everything_restarted_keeps_every_file() {
    let mut c = ProcCluster::start(3, R2W2Q1);
    let http = Http::new(&c.gateway_addr());
    assert_eq!(
        http.request("MKCOL", "/dir", &[], Bytes::new())
            .await
            .unwrap()
            .status,
        StatusCode::CREATED
    );
    let files: Vec<(String, Vec<u8>)> = [0usize, 1, 511, 512, 513, 1 << 20, 5 << 20]
        .iter()
        .enumerate()
        .map(|(i, &n)| (format!("/dir/f{n}"), pseudo_random(40 + i as u64, n)))
        .collect();
    for (p, d) in &files {
        assert_eq!(
            http.put(p, d.clone()).await.unwrap().status,
            StatusCode::CREATED
        );
    }
    c.restart_all();
    let http = Http::new(&c.gateway_addr());
    for (p, d) in &files {
        let got = http.get(p).await.unwrap();
        assert_eq!(got.status, StatusCode::OK, "{p}");
        assert!(got.body == *d, "{p} differs after restart");
    }
    let listing = http
        .request("PROPFIND", "/dir/", &[("Depth", "1")], Bytes::new())
        .await
        .unwrap();
    assert_eq!(listing.status.as_u16(), 207);
    for (p, _) in &files {
        assert!(
            listing.text().contains(p.as_str()),
            "{p} missing from the listing"
        );
    }
}

/// (e) A gateway killed in the middle of replacing a file: the old content is
/// still served whole.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn e_gateway_killed_mid_replace_keeps_the_old_file() {
    let mut c = ProcCluster::start(3, R2W2Q1);
    let http = Http::new(&c.gateway_addr());
    let v1 = pseudo_random(77, 3 << 20);
    assert_eq!(
        http.put("/e.bin", v1.clone()).await.unwrap().status,
        StatusCode::CREATED
    );

    // Stream a new version (chunked, no length) and kill the gateway after 24 MiB.
    let mut upload = http.put_streaming("/e.bin");
    for i in 0..6u64 {
        upload
            .send(Bytes::from(pseudo_random(1000 + i, 4 << 20)))
            .await
            .unwrap();
    }
    c.kill_gateway();
    let outcome = upload.finish().await;
    assert!(
        !outcome.is_ok_and(|s| s.is_success()),
        "the upload cannot have succeeded"
    );

    c.start_gateway();
    let http = Http::new(&c.gateway_addr());
    let got = http.get("/e.bin").await.unwrap();
    assert_eq!(got.status, StatusCode::OK);
    assert_eq!(
        got.body.len(),
        v1.len(),
        "a half-written replacement is visible"
    );
    assert!(got.body == v1, "the old content is not served whole");
}

/// (f) `kill -9` of a datanode while ranged PUTs rewrite extent rows in
/// place: every acknowledged byte reads back, and each replica alone holds
/// all of them (nothing half-written shows from any node).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn f_datanode_killed_while_rewriting_extent_rows() {
    let mut c = ProcCluster::start(3, R2W2Q1);
    let http = Http::new(&c.gateway_addr());
    let size = 8usize << 20;
    let mut model = pseudo_random(1, size);
    assert_eq!(
        http.put("/f.bin", model.clone()).await.unwrap().status,
        StatusCode::CREATED
    );
    for round in 0..6usize {
        let victim = round % 3;
        // Unaligned, across many rows (a row covers 168 KiB of the file).
        let off = 1000 + round * 797_001;
        let len = 3_000_000 + round * 7;
        let patch = pseudo_random(100 + round as u64, len);
        let range = format!("bytes {off}-{}/*", off + len - 1);
        let put = {
            let (http, body) = (http.clone(), Bytes::from(patch.clone()));
            tokio::spawn(async move {
                http.request("PUT", "/f.bin", &[("Content-Range", range.as_str())], body)
                    .await
                    .unwrap()
            })
        };
        tokio::time::sleep(Duration::from_millis(2 + 3 * round as u64)).await;
        c.kill_datanode(victim);
        tokio::time::sleep(Duration::from_millis(200)).await;
        c.restart_datanode(victim);
        let reply = tokio::time::timeout(Duration::from_secs(60), put)
            .await
            .expect("the ranged PUT completes once the node is back")
            .unwrap();
        assert!(reply.status.is_success(), "round {round}: {}", reply.text());
        model[off..off + len].copy_from_slice(&patch);
        let back = http.get("/f.bin").await.unwrap();
        assert!(
            back.body == model,
            "round {round}: acknowledged bytes differ"
        );
    }
    // Some kill landed before its node acknowledged the rewrite: the write
    // blocked until the node was back.
    let gw = c.gateway.as_ref().unwrap();
    assert!(
        gw.log().contains("write blocked"),
        "no kill landed in the middle of a rewrite:\n{}",
        gw.log()
    );
    // At R = W = 2 every block was acknowledged by both of its replicas:
    // with any one node down, the other copies alone give the whole file.
    for down in 0..3 {
        c.stop_datanode(down);
        let back = http.get("/f.bin").await.unwrap();
        assert_eq!(
            back.status,
            StatusCode::OK,
            "node {down} down: {}",
            back.text()
        );
        assert!(back.body == model, "node {down} down: bytes differ");
        c.restart_datanode(down);
    }
}

/// (g) A hung datanode (SIGSTOPped: alive, its sockets open, answering
/// nothing). Reads hedge to the next replica instead of waiting for the
/// call timeout; writes acknowledged by the other two carry on, and the
/// data held for the hung node's puts stays within its budget.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn g_a_hung_datanode_stalls_neither_reads_nor_memory() {
    use std::sync::atomic::Ordering;
    use tessera_gateway::{Fs, FsOptions, Stats};
    let c = ProcCluster::start(3, R3W2Q2);
    let budget = 2usize << 20;
    let options = FsOptions {
        // Without hedging, each read of a block first on the hung node
        // would wait this long.
        datanode_timeout: Duration::from_secs(120),
        hedge_after: Duration::from_millis(100),
        detached_put_bytes: budget,
        chunk_blocks: 1024,
        ..FsOptions::default()
    };
    let fs = Fs::connect(&c.meta_addr(), Transport::new(c.secret()), options)
        .await
        .unwrap();
    let before = tessera_integration::cluster::write_stream(&fs, "before", 8 << 20).await;

    c.datanodes[1].as_ref().unwrap().pause();
    // Reads: every block whose first replica is the hung node.
    let read = tokio::time::timeout(
        Duration::from_secs(60),
        tessera_integration::cluster::read_stream(&fs, before.clone()),
    )
    .await
    .expect("a read waited on the hung node instead of hedging");
    assert_eq!(read, 8 << 20);
    assert!(Stats::get(&fs.stats().hedged_reads) > 0);

    // Writes: acknowledged by the two live nodes; puts to the hung one
    // hold at most the budget, the rest are cancelled.
    let peak = std::sync::Arc::new(std::sync::atomic::AtomicU64::new(0));
    let sampler = {
        let (fs, peak) = (fs.clone(), peak.clone());
        tokio::spawn(async move {
            loop {
                peak.fetch_max(Stats::get(&fs.stats().detached_bytes), Ordering::Relaxed);
                tokio::time::sleep(Duration::from_millis(2)).await;
            }
        })
    };
    let during = tokio::time::timeout(
        Duration::from_secs(60),
        tessera_integration::cluster::write_stream(&fs, "during", 32 << 20),
    )
    .await
    .expect("a write stalled on the hung node");
    sampler.abort();
    assert!(peak.load(Ordering::Relaxed) <= budget as u64);
    assert!(
        Stats::get(&fs.stats().detached_dropped) > 0,
        "puts to the hung node were never cut off"
    );
    c.datanodes[1].as_ref().unwrap().resume();
    let back = tessera_integration::cluster::read_stream(&fs, during).await;
    assert_eq!(back, 32 << 20);
}
