//! `tessera status`: heartbeats, datanode states and blocked writes, through
//! the real binary against a cluster of processes (killed with SIGKILL).

use std::time::{Duration, Instant};

use serde_json::Value;
use tessera_integration::data::pseudo_random;
use tessera_integration::http::{Http, StatusCode};
use tessera_integration::procs::{ProcCluster, R2W2Q1, Ran, run_tessera};

fn tessera(args: &[&str]) -> Ran {
    run_tessera(args, &[])
}

fn status(c: &ProcCluster, json: bool) -> Ran {
    let meta = c.meta_addr();
    let secret = c.secret_file.to_str().expect("utf-8").to_string();
    let mut args = vec!["status", "--meta", &meta, "--secret-file", &secret];
    if json {
        args.push("--json");
    }
    let r = tessera(&args);
    assert_eq!(r.code, Some(0), "status failed: {}", r.stderr);
    r
}

fn status_json(c: &ProcCluster) -> Value {
    let r = status(c, true);
    serde_json::from_str(&r.stdout).unwrap_or_else(|e| panic!("not JSON ({e}): {}", r.stdout))
}

/// Polls `status --json` until `ok` holds, or fails with the last answer.
async fn wait_status(
    c: &ProcCluster,
    what: &str,
    within: Duration,
    ok: impl Fn(&Value) -> bool,
) -> Value {
    let deadline = Instant::now() + within;
    loop {
        let v = status_json(c);
        if ok(&v) {
            return v;
        }
        assert!(
            Instant::now() < deadline,
            "{what}: not within {within:?}; last status: {v:#}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

fn node(v: &Value, slot: usize) -> &Value {
    &v["datanodes"][slot]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn status_shows_datanodes_going_down_and_up_and_blocked_writes() {
    let mut c = ProcCluster::start(3, R2W2Q1);
    let http = Http::new(&c.gateway_addr());
    let data = pseudo_random(3, 1 << 20);
    assert_eq!(
        http.put("/one.bin", data.clone()).await.unwrap().status,
        StatusCode::CREATED
    );

    // Every node has reported, with the blocks of that file (R=2).
    let v = wait_status(
        &c,
        "all reporting the file's blocks",
        Duration::from_secs(15),
        |v| {
            let blocks: u64 = (0..3).filter_map(|i| node(v, i)["blocks"].as_u64()).sum();
            blocks == 2 * (1 << 20) / 512
        },
    )
    .await;
    // The shape, field by field.
    let cluster = &v["cluster"];
    assert_eq!(cluster["replicas"], 2);
    assert_eq!(cluster["write_quorum"], 2);
    assert_eq!(cluster["read_quorum"], 1);
    assert_eq!(cluster["node_timeout_ms"], 3000);
    assert_eq!(v["datanodes"].as_array().unwrap().len(), 3);
    for i in 0..3 {
        let n = node(&v, i);
        assert_eq!(n["slot"], i as u64, "{n}");
        let id = n["id"].as_str().unwrap();
        assert!(
            id.len() == 16 && id.chars().all(|c| c.is_ascii_hexdigit()),
            "{n}"
        );
        assert_eq!(n["addr"], c.datanode_addr(i), "{n}");
        assert_eq!(n["state"], "up", "{n}");
        assert!(n["bytes"].as_u64().unwrap() > 0, "{n}");
        assert!(n["capacity"].as_u64().unwrap() > 0, "{n}");
        assert!(
            n["available"].as_u64().unwrap() <= n["capacity"].as_u64().unwrap(),
            "{n}"
        );
        assert!(n["last_seen_ms"].as_u64().unwrap() < 3000, "{n}");
    }
    assert_eq!(v["under_replicated_blocks"], 0, "{v}");
    assert_eq!(v["scrub_requested"], 0, "{v}");
    for i in 0..3 {
        let n = node(&v, i);
        assert_eq!(n["under_replicated"], 0, "{n}");
        assert!(n["rebuild"].is_null(), "{n}");
        assert_eq!(n["repaired"], 0, "{n}");
        let scrub = &n["scrub"];
        assert!(scrub["running"].is_null(), "{n}");
        for f in ["last_pass", "checked", "corrupt", "missing", "repaired"] {
            assert_eq!(scrub[f], 0, "{f}: {n}");
        }
    }
    assert_eq!(v["blocked_writes"], 0);
    assert!(v["gateways"].as_u64().unwrap() >= 1, "{v}");

    // A killed node is down within the timeout and a heartbeat; the others stay up.
    c.kill_datanode(1);
    let killed = Instant::now();
    let v = wait_status(&c, "slot 1 down", Duration::from_secs(8), |v| {
        node(v, 1)["state"] == "down"
    })
    .await;
    assert!(
        killed.elapsed() >= Duration::from_secs(2),
        "down too soon: {:?}",
        killed.elapsed()
    );
    // Meta logs it once (it looks twice a second).
    assert!(
        c.meta.wait_for_log("datanode down", Duration::from_secs(5)),
        "meta did not log the node going down:\n{}",
        c.meta.log()
    );
    assert_eq!(node(&v, 0)["state"], "up");
    assert_eq!(node(&v, 2)["state"], "up");
    let table = status(&c, false).stdout;
    let line = table
        .lines()
        .find(|l| l.starts_with('1') && l.contains("down"))
        .unwrap_or_else(|| panic!("no line for slot 1 down:\n{table}"));
    assert!(
        line.contains(node(&v, 1)["id"].as_str().unwrap()),
        "{table}"
    );
    assert!(table.contains("1 of 3 datanodes down"), "{table}");
    assert!(
        table.contains("SLOT") && table.contains("LAST HEARD"),
        "{table}"
    );

    // A write that needs it blocks, and the gateway reports it.
    let put = {
        let http = http.clone();
        let data = pseudo_random(4, 1 << 20);
        tokio::spawn(async move { http.put("/two.bin", data).await })
    };
    wait_status(
        &c,
        "a blocked write reported",
        Duration::from_secs(8),
        |v| v["blocked_writes"].as_u64() >= Some(1),
    )
    .await;
    assert!(
        !put.is_finished(),
        "the write finished with a node it needs down"
    );

    // Back: up again, the write completes, nothing blocked.
    c.respawn_datanode(1);
    wait_status(&c, "slot 1 up again", Duration::from_secs(8), |v| {
        node(v, 1)["state"] == "up" && node(v, 1)["addr"] == c.datanode_addr(1)
    })
    .await;
    let put = tokio::time::timeout(Duration::from_secs(30), put)
        .await
        .expect("the write resumes");
    assert_eq!(put.unwrap().unwrap().status, StatusCode::CREATED);
    wait_status(&c, "no blocked writes", Duration::from_secs(8), |v| {
        v["blocked_writes"] == 0
    })
    .await;
    assert!(
        c.meta
            .wait_for_log("datanode up again", Duration::from_secs(5)),
        "meta did not log the node coming back:\n{}",
        c.meta.log()
    );
    assert_eq!(
        c.meta.log().matches("datanode down").count(),
        1,
        "{}",
        c.meta.log()
    );
}

#[test]
fn status_says_clearly_when_it_cannot_ask() {
    let dir = tempfile::tempdir().unwrap();
    let secret = dir.path().join("secret");
    std::fs::write(&secret, "process-test-secret-0123456789\n").unwrap();
    // Nothing listens there.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let addr = format!("127.0.0.1:{port}");
    let r = tessera(&[
        "status",
        "--meta",
        &addr,
        "--secret-file",
        secret.to_str().unwrap(),
    ]);
    assert_eq!(r.code, Some(1), "{}", r.stderr);
    assert!(r.stderr.contains(&addr), "{}", r.stderr);
    assert!(r.stdout.is_empty(), "{}", r.stdout);
    assert!(!r.stderr.contains("panicked"), "{}", r.stderr);
    // Bad usage: 2.
    let r = tessera(&["status"]);
    assert_eq!(r.code, Some(2), "{}", r.stderr);
    assert!(r.stderr.contains("--meta"), "{}", r.stderr);
}

/// A datanode that hangs (SIGSTOP: its connections stay open, nothing
/// answers) is reported down by meta, and the gateway stops sending to it:
/// reads go to the other replica at once instead of each waiting for the
/// hedge delay (300 ms) or the datanode call timeout (10 s), and a write that needs it blocks until it
/// answers heartbeats again, then completes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hung_datanode_is_skipped_once_meta_reports_it_down() {
    let c = ProcCluster::start(3, R2W2Q1);
    let http = Http::new(&c.gateway_addr());
    let files: Vec<(String, Vec<u8>)> = (0..20)
        .map(|i| (format!("/f{i}.bin"), pseudo_random(20 + i, 64 << 10)))
        .collect();
    for (name, data) in &files {
        assert_eq!(
            http.put(name, data.clone()).await.unwrap().status,
            StatusCode::CREATED
        );
    }
    let hung = c.datanodes[1].as_ref().expect("running");
    hung.pause();
    wait_status(&c, "slot 1 down", Duration::from_secs(8), |v| {
        node(v, 1)["state"] == "down"
    })
    .await;
    // The gateway polls meta twice a second.
    tokio::time::sleep(Duration::from_millis(1200)).await;
    // Every file has blocks whose first replica is on the hung node; none
    // of the reads waits for it (asking it first, 20 reads would take 6 s
    // of hedge delays alone).
    let started = Instant::now();
    for (name, data) in &files {
        let got = http.get(name).await.unwrap();
        assert_eq!(got.status, StatusCode::OK, "{name}");
        assert!(got.body[..] == data[..], "{name} differs");
    }
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "reads waited for the hung node: {:?} for {} files",
        started.elapsed(),
        files.len()
    );
    // A write needs it (W=2 of R=2): it blocks while the node is down.
    let put = {
        let http = http.clone();
        tokio::spawn(async move { http.put("/during.bin", pseudo_random(40, 1 << 20)).await })
    };
    wait_status(&c, "the write blocked", Duration::from_secs(8), |v| {
        v["blocked_writes"].as_u64() >= Some(1)
    })
    .await;
    hung.resume();
    wait_status(&c, "slot 1 up again", Duration::from_secs(8), |v| {
        node(v, 1)["state"] == "up"
    })
    .await;
    let put = tokio::time::timeout(Duration::from_secs(15), put)
        .await
        .expect("the write resumes");
    assert_eq!(put.unwrap().unwrap().status, StatusCode::CREATED);
    let got = http.get("/during.bin").await.unwrap();
    assert!(got.body[..] == pseudo_random(40, 1 << 20)[..]);
}
