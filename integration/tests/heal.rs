//! Self-healing through real processes and real kills: a wiped datanode
//! rebuilds its slot, scrub repairs blocks damaged at rest, and replicas
//! that missed acknowledged writes are copied from meta's repair queue.

use std::process::Command;
use std::time::{Duration, Instant};

use serde_json::Value;
use tessera_datanode::{DatanodeClient, GetResult};
use tessera_integration::data::{corrupt_in_file, pseudo_random, tagged_blocks};
use tessera_integration::http::{Http, StatusCode};
use tessera_integration::metrics::Scrape;
use tessera_integration::procs::{ProcCluster, R2W2Q1, binary};
use tessera_meta::{MetaClient, ObjectRef};
use tessera_rpc::Transport;

fn tessera(args: &[&str]) -> (Option<i32>, String, String) {
    let out = Command::new(binary())
        .args(args)
        .output()
        .expect("run tessera");
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn status_json(c: &ProcCluster) -> Value {
    let meta = c.meta_addr();
    let secret = c.secret_file.to_str().expect("utf-8").to_string();
    let (code, out, err) = tessera(&[
        "status",
        "--meta",
        &meta,
        "--secret-file",
        &secret,
        "--json",
    ]);
    assert_eq!(code, Some(0), "status failed: {err}");
    serde_json::from_str(&out).unwrap_or_else(|e| panic!("not JSON ({e}): {out}"))
}

/// Polls `status --json` until `ok` holds; returns every answer seen.
async fn wait_status(
    c: &ProcCluster,
    what: &str,
    within: Duration,
    ok: impl Fn(&Value) -> bool,
) -> Vec<Value> {
    let deadline = Instant::now() + within;
    let mut seen = Vec::new();
    loop {
        let v = status_json(c);
        let done = ok(&v);
        seen.push(v);
        if done {
            return seen;
        }
        assert!(
            Instant::now() < deadline,
            "{what}: not within {within:?}; last status: {:#}",
            seen.last().unwrap()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

fn blocks_of(v: &Value, slot: usize) -> u64 {
    v["datanodes"][slot]["blocks"].as_u64().unwrap_or(0)
}

/// Files of several sizes: empty, one block, unaligned, several rows.
fn files() -> Vec<(String, Vec<u8>)> {
    let mut out = vec![("/empty".to_string(), Vec::new())];
    for (i, len) in [1usize, 512, 4096, 70_001, 1 << 20, 3 << 20]
        .iter()
        .enumerate()
    {
        out.push((format!("/f{i}.bin"), pseudo_random(40 + i as u64, *len)));
    }
    for i in 0..30 {
        out.push((
            format!("/small/{i}.txt"),
            pseudo_random(100 + i, 300 + 97 * i as usize),
        ));
    }
    out
}

async fn put_all(http: &Http, files: &[(String, Vec<u8>)]) {
    assert_eq!(
        http.request("MKCOL", "/small", &[], bytes::Bytes::new())
            .await
            .unwrap()
            .status,
        StatusCode::CREATED
    );
    for (path, data) in files {
        let r = http.put(path, data.clone()).await.unwrap();
        assert_eq!(r.status, StatusCode::CREATED, "PUT {path}: {}", r.text());
    }
}

async fn check_all(http: &Http, files: &[(String, Vec<u8>)], when: &str) {
    for (path, data) in files {
        let r = http.get(path).await.unwrap();
        assert_eq!(r.status, StatusCode::OK, "{when}: GET {path}: {}", r.text());
        assert!(
            r.body == data[..],
            "{when}: {path} read back different bytes"
        );
    }
}

/// Waits until the gateway has heard of the latest node states.
async fn settle_ring() {
    // Gateways poll the ring every 500 ms.
    tokio::time::sleep(Duration::from_millis(1200)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wiped_datanode_rebuilds_its_slot_and_serves_with_either_neighbour_stopped() {
    let mut c = ProcCluster::start(3, R2W2Q1);
    let http = Http::new(&c.gateway_addr());
    let files = files();
    put_all(&http, &files).await;
    let before = wait_status(&c, "counts reported", Duration::from_secs(10), |v| {
        let total: u64 = (0..3).map(|i| blocks_of(v, i)).sum();
        let want: u64 = files
            .iter()
            .map(|(_, d)| 2 * d.len().div_ceil(512) as u64)
            .sum();
        total == want
    })
    .await;
    let held = blocks_of(before.last().unwrap(), 1);
    assert!(held > 0);
    let old_id = before.last().unwrap()["datanodes"][1]["id"].clone();

    c.wipe_datanode(1);
    let seen = wait_status(&c, "slot 1 rebuilt", Duration::from_secs(60), |v| {
        let n = &v["datanodes"][1];
        n["state"] == "up" && n["id"] != old_id && n["rebuild"].is_null() && n["blocks"] == held
    })
    .await;
    // It was shown rebuilding (with its progress), unless it finished
    // before the first look.
    let log = c.datanode_log(1);
    assert!(log.contains("rebuild started"), "{log}");
    assert!(log.contains("rebuild done"), "{log}");
    for v in &seen {
        let n = &v["datanodes"][1];
        if n["state"] == "rebuilding" {
            assert!(n["rebuild"]["total_blocks"].is_u64(), "{n}");
        }
    }
    let done = log.lines().find(|l| l.contains("rebuild done")).unwrap();
    println!("{done}");

    // Every file reads back with either neighbour of slot 1 stopped.
    for other in [0, 2] {
        c.kill_datanode(other);
        settle_ring().await;
        check_all(&http, &files, &format!("slot {other} stopped")).await;
        c.respawn_datanode(other);
        settle_ring().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rebuilding_node_that_is_killed_resumes_its_rebuild() {
    let mut c = ProcCluster::start(3, R2W2Q1);
    let http = Http::new(&c.gateway_addr());
    let data = pseudo_random(7, 24 << 20);
    assert_eq!(
        http.put("/big.bin", data.clone()).await.unwrap().status,
        StatusCode::CREATED
    );
    c.wipe_datanode(2);
    // Killed as soon as its rebuild starts: the note in its directory
    // makes the next start go on rebuilding instead of serving holes.
    let started = Instant::now();
    while !c.datanode_log(2).contains("rebuild started") {
        assert!(
            started.elapsed() < Duration::from_secs(20),
            "{}",
            c.datanode_log(2)
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    c.kill_datanode(2);
    c.respawn_datanode(2);
    wait_status(&c, "slot 2 rebuilt", Duration::from_secs(60), |v| {
        v["datanodes"][2]["state"] == "up" && v["datanodes"][2]["rebuild"].is_null()
    })
    .await;
    assert_eq!(c.datanode_log(2).matches("rebuild started").count(), 2);
    for other in [0, 1] {
        c.kill_datanode(other);
        settle_ring().await;
        let r = http.get("/big.bin").await.unwrap();
        assert_eq!(r.status, StatusCode::OK);
        assert!(r.body == data[..], "slot {other} stopped: different bytes");
        c.respawn_datanode(other);
        settle_ring().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scrub_finds_and_repairs_blocks_damaged_at_rest() {
    let mut c = ProcCluster::start(3, R2W2Q1);
    let http = Http::new(&c.gateway_addr());
    let data = tagged_blocks("scrub-test", 600);
    assert_eq!(
        http.put("/tagged.bin", data.clone()).await.unwrap().status,
        StatusCode::CREATED
    );
    // Damage blocks at rest in slot 0's file while it is stopped.
    c.stop_datanode(0);
    let mut hits = 0;
    for b in (0..600).step_by(7) {
        hits += corrupt_in_file(&c.datanode_file(0), &data[b * 512..b * 512 + 96]).unwrap();
    }
    assert!(hits > 0, "nothing of the file found in slot 0's file");
    c.respawn_datanode(0);

    let meta = c.meta_addr();
    let secret = c.secret_file.to_str().unwrap().to_string();
    let scrub = || {
        let (code, out, err) = tessera(&[
            "scrub",
            "--meta",
            &meta,
            "--secret-file",
            &secret,
            "--wait",
            "--json",
        ]);
        assert_eq!(code, Some(0), "scrub failed: {err}");
        serde_json::from_str::<Value>(&out).unwrap_or_else(|e| panic!("{e}: {out}"))
    };
    let first = scrub();
    let blocks: u64 = 2 * 600;
    assert_eq!(first["checked"], blocks, "{first}");
    let corrupt = first["corrupt"].as_u64().unwrap();
    // Every damaged copy that is live data was found (old page copies in
    // the file may hold the same bytes too, so hits can be more).
    assert!(
        corrupt > 0 && corrupt <= hits as u64,
        "{first} (hits {hits})"
    );
    assert_eq!(first["repaired"], corrupt, "{first}");
    let slot0 = first["datanodes"]
        .as_array()
        .unwrap()
        .iter()
        .find(|n| n["slot"] == 0)
        .unwrap();
    assert_eq!(slot0["corrupt"], corrupt, "{first}");
    // So do slot 0's metrics (it was restarted before the pass: these are
    // the pass's own counts).
    let m = Scrape::get(&c.datanodes[0].as_ref().unwrap().metrics_addr()).await;
    let at = [("slot", "0")];
    assert_eq!(
        m.one(
            "tessera_datanode_corrupt_blocks_total",
            &[at[0], ("found_by", "scrub")]
        ),
        corrupt as f64
    );
    assert_eq!(
        m.one("tessera_datanode_scrub_checked_blocks_total", &at),
        slot0["checked"].as_u64().unwrap() as f64
    );
    assert!(m.one("tessera_datanode_repaired_blocks_total", &at) >= corrupt as f64);
    assert!(m.one("tessera_datanode_scrub_passes", &at) >= 1.0);
    // status counts them too.
    let v = status_json(&c);
    assert_eq!(v["datanodes"][0]["scrub"]["corrupt"], corrupt, "{v}");
    assert!(
        v["datanodes"][0]["repaired"].as_u64().unwrap() >= corrupt,
        "{v}"
    );

    // A second pass finds nothing left; slot 0 alone serves the file.
    let second = scrub();
    assert_eq!(second["corrupt"], 0, "{second}");
    assert_eq!(second["checked"], blocks, "{second}");
    c.kill_datanode(1);
    c.kill_datanode(2);
    let client = direct(&c, 0);
    let o = object_of(&c, "tagged.bin").await;
    for k in 0..2u32 {
        let idx: Vec<u64> = (0..600u64)
            .filter(|&i| o.role_on(0, i, 2) == Some(k))
            .collect();
        let got = client.get(o.id, k as u8, idx.clone()).await.unwrap();
        for (i, g) in idx.iter().zip(got) {
            match g {
                GetResult::Found(b) => {
                    assert!(b.is_valid(), "block {i} still damaged");
                    assert!(b.data[..] == data[*i as usize * 512..][..512], "block {i}");
                }
                other => panic!("block {i}: {other:?}"),
            }
        }
    }
}

fn direct(c: &ProcCluster, i: usize) -> DatanodeClient {
    let transport = Transport::new(c.secret());
    DatanodeClient::new(&transport, &c.datanode_addr(i), Duration::from_secs(10))
}

async fn object_of(c: &ProcCluster, name: &str) -> ObjectRef {
    let transport = Transport::new(c.secret());
    let meta = MetaClient::new(&transport, &c.meta_addr());
    let path = name.split('/').map(String::from).collect();
    meta.resolve(path).await.unwrap().object
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn r3_w2_missed_writes_are_repaired_from_the_queue_without_reads() {
    let settings = [
        "--replicas",
        "3",
        "--write-quorum",
        "2",
        "--read-quorum",
        "2",
    ];
    let mut c = ProcCluster::start(3, &settings);
    let http = Http::new(&c.gateway_addr());
    c.kill_datanode(2);
    wait_status(&c, "slot 2 down", Duration::from_secs(10), |v| {
        v["datanodes"][2]["state"] == "down"
    })
    .await;
    settle_ring().await;
    let data = pseudo_random(11, 2 << 20);
    let small = pseudo_random(12, 5000);
    for (path, d) in [("/missed.bin", &data), ("/small.bin", &small)] {
        let r = http.put(path, d.clone()).await.unwrap();
        assert_eq!(r.status, StatusCode::CREATED, "{}", r.text());
    }
    let want = (data.len().div_ceil(512) + small.len().div_ceil(512)) as u64;
    let v = wait_status(&c, "missed blocks queued", Duration::from_secs(10), |v| {
        v["under_replicated_blocks"] == want
    })
    .await;
    let v = v.last().unwrap();
    assert_eq!(v["datanodes"][2]["under_replicated"], want, "{v}");
    assert_eq!(v["datanodes"][0]["under_replicated"], 0, "{v}");

    // Back, it copies them from the others: nothing reads the files.
    c.respawn_datanode(2);
    let started = Instant::now();
    wait_status(&c, "repair queue drained", Duration::from_secs(20), |v| {
        v["under_replicated_blocks"] == 0 && v["datanodes"][2]["blocks"] == want
    })
    .await;
    println!(
        "{want} queued blocks repaired within {:?} of the node's return",
        started.elapsed()
    );
    let log = c.datanode_log(2);
    assert!(
        log.contains("repaired replicas from the repair queue"),
        "{log}"
    );

    // The other two stop: the returned node holds every replica alone
    // (read straight from it, as a Q=1 cluster would).
    c.kill_datanode(0);
    c.kill_datanode(1);
    let client = direct(&c, 2);
    for (name, d) in [("missed.bin", &data), ("small.bin", &small)] {
        let o = object_of(&c, name).await;
        let n = d.len().div_ceil(512) as u64;
        for k in 0..3u32 {
            let idx: Vec<u64> = (0..n).filter(|&i| o.role_on(2, i, 3) == Some(k)).collect();
            let got = client.get(o.id, k as u8, idx.clone()).await.unwrap();
            for (i, g) in idx.iter().zip(got) {
                let GetResult::Found(b) = g else {
                    panic!("{name} block {i}: {g:?}");
                };
                let at = *i as usize * 512;
                let end = (at + 512).min(d.len());
                assert!(b.is_valid() && b.data[..] == d[at..end], "{name} block {i}");
            }
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deleting_everything_empties_every_datanode_even_one_down_during_the_deletes() {
    let mut c = ProcCluster::start_with(3, R2W2Q1, &["--gc-grace", "0"]);
    let http = Http::new(&c.gateway_addr());
    let mut files = files();
    files.push(("/big.bin".to_string(), pseudo_random(9, 40 << 20)));
    put_all(&http, &files).await;
    // Replaced once: the first version is garbage at once.
    let r = http
        .put("/big.bin", pseudo_random(10, 40 << 20))
        .await
        .unwrap();
    assert_eq!(r.status, StatusCode::NO_CONTENT, "{}", r.text());
    let full = wait_status(&c, "every node reporting", Duration::from_secs(10), |v| {
        (0..3).all(|i| blocks_of(v, i) > 0)
    })
    .await;
    let bytes_before: Vec<u64> = (0..3)
        .map(|i| {
            full.last().unwrap()["datanodes"][i]["bytes"]
                .as_u64()
                .unwrap()
        })
        .collect();

    c.kill_datanode(2);
    wait_status(&c, "slot 2 down", Duration::from_secs(10), |v| {
        v["datanodes"][2]["state"] == "down"
    })
    .await;
    for (path, _) in &files {
        let r = http
            .request("DELETE", path, &[], bytes::Bytes::new())
            .await
            .unwrap();
        assert_eq!(r.status, StatusCode::NO_CONTENT, "DELETE {path}");
    }
    let r = http
        .request("DELETE", "/small", &[], bytes::Bytes::new())
        .await
        .unwrap();
    assert_eq!(r.status, StatusCode::NO_CONTENT);
    // The nodes that are up are emptied while slot 2 is down, and their
    // files are given back their room.
    let emptied = wait_status(&c, "slots 0 and 1 empty", Duration::from_secs(40), |v| {
        (0..2).all(|i| {
            blocks_of(v, i) == 0
                && v["datanodes"][i]["bytes"].as_u64().unwrap() < bytes_before[i] / 4
        })
    })
    .await;
    assert_eq!(emptied.last().unwrap()["datanodes"][2]["state"], "down");

    // Back, slot 2 is emptied too.
    c.respawn_datanode(2);
    wait_status(&c, "slot 2 empty", Duration::from_secs(40), |v| {
        v["datanodes"][2]["state"] == "up" && blocks_of(v, 2) == 0
    })
    .await;
}
