//! Prometheus `/metrics` on meta, datanodes and gateways: the real binary
//! as separate processes (`--metrics 127.0.0.1:0`), scraped over HTTP.

use std::time::{Duration, Instant};

use tessera_integration::data::pseudo_random;
use tessera_integration::http::{Http, StatusCode};
use tessera_integration::metrics::Scrape;
use tessera_integration::procs::{Proc, ProcCluster, R2W2Q1};

fn dn(c: &ProcCluster, i: usize) -> &Proc {
    c.datanodes[i].as_ref().expect("datanode running")
}

/// Scrapes `addr` until `ok` holds, or fails with the last scrape.
async fn wait_scrape(addr: &str, what: &str, ok: impl Fn(&Scrape) -> bool) -> Scrape {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let s = Scrape::get(addr).await;
        if ok(&s) {
            return s;
        }
        assert!(
            Instant::now() < deadline,
            "{what}; last scrape:\n{}",
            s.text
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_process_counts_calls_blocks_and_node_states() {
    let mut c = ProcCluster::start(3, R2W2Q1);
    let http = Http::new(&c.gateway_addr());
    // 600 blocks and a bit, R=2 W=2: every block on two nodes.
    let size = 600 * 512 + 100;
    let data = pseudo_random(7, size);
    assert_eq!(
        http.put("/m.bin", data.clone()).await.unwrap().status,
        StatusCode::CREATED
    );
    let got = http.get("/m.bin").await.unwrap();
    assert!(got.body[..] == data[..]);

    let gw = c.gateway.as_ref().unwrap().metrics_addr();
    let g = Scrape::get(&gw).await;
    assert_eq!(
        g.sum("tessera_gateway_written_bytes_total", &[]),
        size as f64
    );
    assert_eq!(g.sum("tessera_gateway_written_blocks_total", &[]), 601.0);
    assert!(g.sum("tessera_gateway_read_bytes_total", &[]) >= size as f64);
    assert_eq!(g.sum("tessera_gateway_blocked_writes_now", &[]), 0.0);
    let puts = [("service", "datanode"), ("call", "put")];
    assert!(
        g.sum(
            "tessera_rpc_client_calls_total",
            &[puts[0], puts[1], ("outcome", "ok")]
        ) >= 3.0
    );
    // Latency histograms per call: every call in a bucket up to +Inf.
    let count = g.sum("tessera_rpc_client_seconds_count", &puts);
    assert!(count >= 3.0, "{}", g.text);
    let inf = [puts[0], puts[1], ("le", "+Inf")];
    assert_eq!(g.sum("tessera_rpc_client_seconds_bucket", &inf), count);
    assert!(g.sum("tessera_rpc_client_sent_bytes_total", &puts[..1]) >= 2.0 * size as f64);

    // Each datanode: its blocks and the puts it served.
    let (mut written, mut blocks, mut received) = (0.0, 0.0, 0.0);
    for i in 0..3 {
        let s = Scrape::get(&dn(&c, i).metrics_addr()).await;
        let slot = i.to_string();
        let l = [("slot", slot.as_str())];
        written += s.one("tessera_datanode_written_bytes_total", &l);
        blocks += s.one("tessera_datanode_blocks", &l);
        received += s.one(
            "tessera_rpc_served_received_bytes_total",
            &[("service", "datanode")],
        );
        assert!(s.one("tessera_rpc_served_calls_total", &puts) >= 1.0);
        assert!(s.one("tessera_rpc_served_seconds_count", &puts) >= 1.0);
        assert!(s.one("tessera_datanode_capacity_bytes", &l) > 0.0);
        assert_eq!(
            s.one(
                "tessera_datanode_corrupt_blocks_total",
                &[l[0], ("found_by", "scrub")]
            ),
            0.0
        );
        assert_eq!(s.one("tessera_datanode_rebuilding", &l), 0.0);
        // Its heartbeats are calls it made to meta.
        assert!(
            s.sum(
                "tessera_rpc_client_calls_total",
                &[("service", "meta"), ("call", "node_beat")]
            ) >= 1.0
        );
    }
    assert_eq!(written, 2.0 * size as f64);
    assert_eq!(blocks, 2.0 * 601.0);
    assert!(received >= written);

    // Meta: every node up, the heartbeats it served, its namespace.
    let meta = c.meta.metrics_addr();
    let m = Scrape::get(&meta).await;
    for slot in ["0", "1", "2"] {
        let at = |state| [("slot", slot), ("state", state)];
        assert_eq!(m.one("tessera_meta_datanode_state", &at("up")), 1.0);
        assert_eq!(m.one("tessera_meta_datanode_state", &at("down")), 0.0);
        assert_eq!(
            m.one("tessera_meta_under_replicated_blocks", &[("slot", slot)]),
            0.0
        );
    }
    assert_eq!(m.one("tessera_meta_datanodes", &[("state", "up")]), 3.0);
    assert!(m.one("tessera_meta_inodes", &[]) >= 2.0);
    assert!(
        m.one(
            "tessera_rpc_served_calls_total",
            &[("service", "meta"), ("call", "node_beat")]
        ) >= 3.0
    );
    assert_eq!(
        m.one(
            "tessera_build_info",
            &[("version", env!("CARGO_PKG_VERSION"))]
        ),
        1.0
    );

    // A node killed shows down; a write that needs it blocks, and says so
    // on the gateway and on meta until the node is back.
    c.kill_datanode(2);
    let down = [("slot", "2"), ("state", "down")];
    wait_scrape(&meta, "slot 2 down", |s| {
        s.one("tessera_meta_datanode_state", &down) == 1.0
            && s.one("tessera_meta_datanodes", &[("state", "down")]) == 1.0
    })
    .await;
    let writer = {
        let http = http.clone();
        let data = pseudo_random(8, 64 * 512);
        tokio::spawn(async move { http.put("/blocked.bin", data).await })
    };
    wait_scrape(&gw, "a blocked write on the gateway", |s| {
        s.sum("tessera_gateway_blocked_writes_now", &[]) >= 1.0
            && s.sum("tessera_gateway_datanodes_down", &[]) == 1.0
    })
    .await;
    wait_scrape(&meta, "a blocked write on meta", |s| {
        s.one("tessera_meta_blocked_writes", &[]) >= 1.0
    })
    .await;
    c.respawn_datanode(2);
    let put = tokio::time::timeout(Duration::from_secs(30), writer)
        .await
        .expect("the blocked write finished")
        .unwrap()
        .unwrap();
    assert_eq!(put.status, StatusCode::CREATED);
    let g = Scrape::get(&gw).await;
    assert_eq!(g.sum("tessera_gateway_blocked_writes_now", &[]), 0.0);
    assert!(g.sum("tessera_gateway_blocked_writes_total", &[]) >= 1.0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_endpoint_answers_only_get_metrics() {
    let c = ProcCluster::start(1, &["--replicas", "1", "--write-quorum", "1"]);
    let http = Http::new(&c.meta.metrics_addr());
    let r = http.get("/").await.unwrap();
    assert_eq!(r.status, StatusCode::NOT_FOUND);
    let r = http.request("POST", "/metrics", &[], "x").await.unwrap();
    assert_eq!(r.status, StatusCode::METHOD_NOT_ALLOWED);
    assert_eq!(r.headers["allow"], "GET, HEAD");
    let r = http.request("HEAD", "/metrics", &[], "").await.unwrap();
    assert_eq!(r.status, StatusCode::OK);
    assert!(r.body.is_empty());
    // OpenMetrics for a scraper that asks for it.
    let accept = [("accept", "application/openmetrics-text; version=1.0.0")];
    let r = http.request("GET", "/metrics", &accept, "").await.unwrap();
    assert_eq!(r.status, StatusCode::OK);
    assert!(
        r.headers["content-type"]
            .to_str()
            .unwrap()
            .starts_with("application/openmetrics-text"),
        "{:?}",
        r.headers
    );
    assert!(r.text().ends_with("# EOF\n"), "{}", r.text());
    // Garbage on the socket does not stop it.
    {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let mut s = tokio::net::TcpStream::connect(c.meta.metrics_addr())
            .await
            .unwrap();
        s.write_all(b"\x00\x01garbage\r\n\r\n").await.unwrap();
        let mut buf = Vec::new();
        let _ = tokio::time::timeout(Duration::from_secs(5), s.read_to_end(&mut buf)).await;
    }
    // A call without the cluster secret is refused, and counted.
    let wrong =
        tessera_rpc::Transport::new(tessera_rpc::Secret::new("not-the-cluster-secret").unwrap());
    let meta = tessera_meta::MetaClient::new(&wrong, &c.meta_addr());
    assert!(meta.ring().await.is_err());
    let m = Scrape::get(&c.meta.metrics_addr()).await;
    assert!(
        m.one(
            "tessera_rpc_refused_calls_total",
            &[("service", "meta"), ("reason", "secret")]
        ) >= 1.0
    );
}

/// Small files uploaded at once share calls to the datanodes (see
/// `tessera_datanode::combine`): the datanodes serve fewer puts than the
/// files would make one by one, and every file reads back whole.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_small_uploads_share_datanode_calls() {
    let c = ProcCluster::start(3, R2W2Q1);
    let http = Http::new(&c.gateway_addr());
    let files = 96usize;
    // 4 KiB each: eight blocks over the three nodes, so one file alone
    // puts to every node.
    let uploads = (0..files).map(|i| {
        let http = http.clone();
        async move {
            let r = http
                .put(&format!("/s{i}.bin"), pseudo_random(i as u64, 4096))
                .await
                .unwrap();
            assert_eq!(r.status, StatusCode::CREATED, "{}", r.text());
        }
    });
    futures::future::join_all(uploads).await;
    let mut served = 0.0;
    for i in 0..3 {
        let s = Scrape::get(&dn(&c, i).metrics_addr()).await;
        served += s.sum(
            "tessera_rpc_served_calls_total",
            &[("service", "datanode"), ("call", "put")],
        );
    }
    let alone = (3 * files) as f64;
    assert!(
        served > 0.0 && served < alone * 0.75,
        "{served} datanode puts for {files} files uploaded at once (one by one: {alone})"
    );
    for i in 0..files {
        let got = http.get(&format!("/s{i}.bin")).await.unwrap();
        assert!(
            got.body[..] == pseudo_random(i as u64, 4096)[..],
            "s{i}.bin"
        );
    }
}
