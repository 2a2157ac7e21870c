//! Self-healing rates through real processes: a wiped datanode's rebuild
//! (MB/s of file data copied), a requested scrub pass (blocks checked per
//! second), and the repair queue (blocks queued while a node was down, and
//! how soon they are copied once it is back).
//!
//! `cargo bench -p tessera-integration --bench heal` (HEAL_MIB sets the
//! data written, default 1024).

use std::process::Command;
use std::time::{Duration, Instant};

use serde_json::Value;
use tessera_integration::data::pseudo_random;
use tessera_integration::http::{Http, StatusCode};
use tessera_integration::procs::{ProcCluster, R2W2Q1, binary};

fn status(c: &ProcCluster) -> Value {
    let out = Command::new(binary())
        .args([
            "status",
            "--meta",
            &c.meta_addr(),
            "--json",
            "--secret-file",
        ])
        .arg(&c.secret_file)
        .output()
        .expect("status");
    serde_json::from_slice(&out.stdout).expect("status JSON")
}

fn wait(c: &ProcCluster, what: &str, ok: impl Fn(&Value) -> bool) -> Value {
    let deadline = Instant::now() + Duration::from_secs(600);
    loop {
        let v = status(c);
        if ok(&v) {
            return v;
        }
        assert!(Instant::now() < deadline, "{what}: {v:#}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

async fn fill(http: &Http, mib: usize) {
    let file = 64usize;
    for i in 0..mib.div_ceil(file) {
        let r = http
            .put(&format!("/f{i}.bin"), pseudo_random(i as u64, file << 20))
            .await
            .unwrap();
        assert_eq!(r.status, StatusCode::CREATED);
    }
}

#[tokio::main]
async fn main() {
    let mib: usize = std::env::var("HEAL_MIB")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1024);

    // Rebuild and scrub: 3 datanodes, R=2 W=2 Q=1.
    let mut c = ProcCluster::start(3, R2W2Q1);
    let http = Http::new(&c.gateway_addr());
    fill(&http, mib).await;
    let blocks = (mib as u64) << 11;
    let v = wait(&c, "counts", |v| {
        (0..3)
            .map(|i| v["datanodes"][i]["blocks"].as_u64().unwrap_or(0))
            .sum::<u64>()
            == 2 * blocks
    });
    let held = v["datanodes"][1]["blocks"].as_u64().unwrap();
    let id = v["datanodes"][1]["id"].clone();
    c.wipe_datanode(1);
    let started = Instant::now();
    wait(&c, "rebuilt", |v| {
        let n = &v["datanodes"][1];
        n["id"] != id && n["state"] == "up" && n["blocks"] == held
    });
    let secs = started.elapsed().as_secs_f64();
    let log = c.datanode_log(1);
    let line = log
        .lines()
        .find(|l| l.contains("rebuild done"))
        .unwrap_or("");
    println!(
        "rebuild: {held} blocks ({:.0} MiB of file data) in {secs:.2} s as seen by status: {:.0} MB/s",
        held as f64 / 2048.0,
        held as f64 * 512.0 / secs / 1e6
    );
    println!("  datanode: {}", &line[line.find("slot=").unwrap_or(0)..]);

    let out = Command::new(binary())
        .args([
            "scrub",
            "--meta",
            &c.meta_addr(),
            "--wait",
            "--json",
            "--secret-file",
        ])
        .arg(&c.secret_file)
        .output()
        .expect("scrub");
    let s: Value = serde_json::from_slice(&out.stdout).expect("scrub JSON");
    let (checked, secs) = (
        s["checked"].as_u64().unwrap(),
        s["seconds"].as_f64().unwrap(),
    );
    println!(
        "scrub pass (3 nodes at once): {checked} blocks checked in {secs:.2} s: {:.0} blocks/s, {:.0} MB/s of stored blocks; corrupt {}, repaired {}",
        checked as f64 / secs,
        checked as f64 * 512.0 / secs / 1e6,
        s["corrupt"],
        s["repaired"]
    );
    drop(c);

    // Repair queue: R=3 W=2 Q=2, writes while one node is down.
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
    wait(&c, "down", |v| v["datanodes"][2]["state"] == "down");
    std::thread::sleep(Duration::from_millis(1200));
    let part = (mib / 4).max(64);
    let started = Instant::now();
    fill(&http, part).await;
    let write_secs = started.elapsed().as_secs_f64();
    let want = (part as u64) << 11;
    wait(&c, "queued", |v| v["under_replicated_blocks"] == want);
    c.respawn_datanode(2);
    let started = Instant::now();
    wait(&c, "drained", |v| {
        v["under_replicated_blocks"] == 0 && v["datanodes"][2]["blocks"] == want
    });
    let secs = started.elapsed().as_secs_f64();
    println!(
        "repair queue: {part} MiB written at W=2 with one of 3 nodes down in {write_secs:.2} s ({:.0} MB/s); {want} blocks queued, copied within {secs:.2} s of the node's return: {:.0} MB/s",
        (part << 20) as f64 / write_secs / 1e6,
        (want * 512) as f64 / secs / 1e6
    );
}
