//! Chaos: rounds of concurrent WebDAV writers (new files and overwrites of
//! 0.5 to 4 MiB) against real `tessera` processes, while a random datanode
//! or the gateway is SIGKILLed, SIGSTOPped for a while, or restarted, at a
//! random moment. The harness records which writes were acknowledged and
//! checks, after every round, that every name reads back as its latest
//! acknowledged content or a later unacknowledged attempt, byte for byte
//! (never a mix of two versions), that every process is alive, and at the
//! end that no block is left that GC should have collected.
//!
//! `TESSERA_CHAOS_ROUNDS` (default 10) sets the rounds, `TESSERA_CHAOS_SEED`
//! replays a run: the seed is printed at the start and in every failure.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tessera_datanode::DatanodeClient;
use tessera_integration::data::pseudo_random;
use tessera_integration::http::{Http, StatusCode};
use tessera_integration::procs::{ProcCluster, R2W2Q1};
use tessera_meta::MetaClient;
use tessera_rpc::Transport;

const NAMES: usize = 8;
const WRITERS: usize = 3;
const PUTS_PER_WRITER: usize = 3;
const REPLICAS: u64 = 2;

/// SplitMix64: small, seedable, good enough to pick faults.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }

    fn between(&mut self, lo: u64, hi: u64) -> u64 {
        lo + self.below(hi - lo + 1)
    }
}

/// One PUT: what it wrote (regenerated from `id` when checked) and whether
/// it was acknowledged.
#[derive(Debug, Clone)]
struct Attempt {
    name: usize,
    id: u64,
    size: usize,
    start: Instant,
    end: Instant,
    acked: bool,
}

fn content(seed: u64, id: u64, size: usize) -> Vec<u8> {
    pseudo_random(seed ^ id.wrapping_mul(0xA24B_AED4_963E_E407), size)
}

fn path(name: usize) -> String {
    format!("/chaos-{name}.bin")
}

#[derive(Debug, Clone, Copy)]
enum Fault {
    KillDatanode(usize),
    StopDatanode(usize),
    RestartDatanode(usize),
    KillGateway,
    StopGateway,
}

/// Runs one fault to its end: the process is back before this returns.
fn inject(c: &mut ProcCluster, fault: Fault, pause: Duration, gateway: &Mutex<String>) {
    match fault {
        Fault::KillDatanode(i) => {
            c.kill_datanode(i);
            std::thread::sleep(pause);
            c.respawn_datanode(i);
        }
        Fault::StopDatanode(i) => {
            let p = c.datanodes[i].as_ref().expect("running");
            p.pause();
            std::thread::sleep(pause);
            p.resume();
        }
        Fault::RestartDatanode(i) => {
            c.stop_datanode(i);
            std::thread::sleep(pause);
            c.respawn_datanode(i);
        }
        Fault::KillGateway => {
            c.kill_gateway();
            std::thread::sleep(pause);
            c.start_gateway();
            *gateway.lock().unwrap() = c.gateway_addr();
        }
        Fault::StopGateway => {
            let g = c.gateway.as_ref().expect("running");
            g.pause();
            std::thread::sleep(pause);
            g.resume();
        }
    }
}

/// The versions `name` may hold now: acknowledged ones no acknowledged
/// write followed (started after it was acknowledged), and unacknowledged
/// attempts no acknowledged write followed either. `None` (no file) is
/// allowed while nothing was acknowledged.
fn allowed(history: &[Attempt], name: usize) -> (Vec<&Attempt>, bool) {
    let of: Vec<&Attempt> = history.iter().filter(|a| a.name == name).collect();
    let acked: Vec<&Attempt> = of.iter().copied().filter(|a| a.acked).collect();
    let superseded = |a: &Attempt| acked.iter().any(|w| w.start > a.end);
    let ok = of.iter().copied().filter(|a| !superseded(a)).collect();
    (ok, acked.is_empty())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chaos_rounds_lose_and_tear_nothing() {
    let seed = std::env::var("TESSERA_CHAOS_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .as_nanos() as u64
        });
    let rounds: usize = std::env::var("TESSERA_CHAOS_ROUNDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(10);
    eprintln!("chaos: seed {seed}, {rounds} rounds (replay with TESSERA_CHAOS_SEED={seed})");
    let mut rng = Rng(seed);
    let mut c = ProcCluster::start_with(3, R2W2Q1, &["--gc-grace", "1", "--upload-ttl", "3"]);
    let gateway = Arc::new(Mutex::new(c.gateway_addr()));
    let history: Arc<Mutex<Vec<Attempt>>> = Arc::default();
    let started = Instant::now();
    let mut next_id = 1u64;
    let mut verified_bytes = 0u64;
    let mut faults_seen = Vec::new();

    for round in 0..rounds {
        // Writers: each PUTs a few random names, sizes 0.5 to 4 MiB.
        let mut writers = Vec::new();
        for _ in 0..WRITERS {
            let mut plan = Vec::new();
            for _ in 0..PUTS_PER_WRITER {
                let name = rng.below(NAMES as u64) as usize;
                let size = rng.between(512 << 10, 4 << 20) as usize;
                plan.push((name, next_id, size));
                next_id += 1;
            }
            let (gateway, history) = (gateway.clone(), history.clone());
            writers.push(tokio::spawn(async move {
                for (name, id, size) in plan {
                    let body = content(seed, id, size);
                    let addr = gateway.lock().unwrap().clone();
                    let start = Instant::now();
                    let put = tokio::time::timeout(
                        Duration::from_secs(120),
                        Http::new(&addr).put(&path(name), body),
                    )
                    .await;
                    let acked = matches!(
                        put,
                        Ok(Ok(ref r)) if r.status == StatusCode::CREATED || r.status == StatusCode::NO_CONTENT
                    );
                    history.lock().unwrap().push(Attempt {
                        name,
                        id,
                        size,
                        start,
                        end: Instant::now(),
                        acked,
                    });
                }
            }));
        }
        // One fault at a random moment while they run.
        let fault = match rng.below(5) {
            0 => Fault::KillDatanode(rng.below(3) as usize),
            1 => Fault::StopDatanode(rng.below(3) as usize),
            2 => Fault::RestartDatanode(rng.below(3) as usize),
            3 => Fault::KillGateway,
            _ => Fault::StopGateway,
        };
        let at = Duration::from_millis(rng.between(0, 400));
        let pause = Duration::from_millis(rng.between(100, 1500));
        faults_seen.push(fault);
        tokio::time::sleep(at).await;
        let g = gateway.clone();
        c = tokio::task::spawn_blocking(move || {
            inject(&mut c, fault, pause, &g);
            c
        })
        .await
        .unwrap();
        for w in writers {
            w.await.unwrap();
        }

        // Every process is alive.
        assert!(c.meta.is_alive(), "seed {seed} round {round}: meta died");
        for (i, d) in c.datanodes.iter_mut().enumerate() {
            let d = d.as_mut().expect("datanode running");
            assert!(
                d.is_alive(),
                "seed {seed} round {round}: datanode {i} died:\n{}",
                d.log()
            );
        }
        let g = c.gateway.as_mut().expect("gateway running");
        assert!(
            g.is_alive(),
            "seed {seed} round {round}: the gateway died:\n{}",
            g.log()
        );

        // Every name holds an allowed version, whole.
        let h = Http::new(&gateway.lock().unwrap().clone());
        let history_now = history.lock().unwrap().clone();
        for name in 0..NAMES {
            let (ok, may_be_absent) = allowed(&history_now, name);
            if ok.is_empty() && may_be_absent {
                continue;
            }
            let got = h.get(&path(name)).await.unwrap();
            if got.status == StatusCode::NOT_FOUND {
                assert!(
                    may_be_absent,
                    "seed {seed} round {round}: {} is gone, but a write to it was acknowledged (LOST)",
                    path(name)
                );
                continue;
            }
            assert_eq!(
                got.status,
                StatusCode::OK,
                "seed {seed} round {round}: GET {}: {}",
                path(name),
                got.text()
            );
            let matched = ok
                .iter()
                .find(|a| a.size == got.body.len() && content(seed, a.id, a.size) == got.body);
            if matched.is_none() {
                let older = history_now.iter().any(|a| {
                    a.name == name
                        && a.size == got.body.len()
                        && content(seed, a.id, a.size) == got.body
                });
                panic!(
                    "seed {seed} round {round}: {} holds {} bytes that are {} (fault {fault:?}; allowed: {:?})",
                    path(name),
                    got.body.len(),
                    if older {
                        "an older version: LOST"
                    } else {
                        "no version written: TORN"
                    },
                    ok.iter().map(|a| (a.id, a.acked)).collect::<Vec<_>>()
                );
            }
            verified_bytes += got.body.len() as u64;
        }
    }

    // No block is left that GC should have collected: once GC and expired
    // uploads are done, the datanodes hold exactly R copies of each block
    // of the files that exist.
    let transport = Transport::new(c.secret());
    let meta = MetaClient::new(&transport, &c.meta_addr());
    let h = Http::new(&gateway.lock().unwrap().clone());
    let mut live_blocks = 0u64;
    for name in 0..NAMES {
        let got = h.get(&path(name)).await.unwrap();
        if got.status == StatusCode::OK {
            live_blocks += (got.body.len() as u64).div_ceil(512);
        }
    }
    let deadline = Instant::now() + Duration::from_secs(120);
    let held = loop {
        let (_, gc, leases) = meta.counts().await.unwrap();
        let mut held = 0;
        for i in 0..c.datanodes.len() {
            let node =
                DatanodeClient::new(&transport, &c.datanode_addr(i), Duration::from_secs(10));
            held += node.stats().await.unwrap().1.blocks;
        }
        if gc == 0 && leases == 0 && held == live_blocks * REPLICAS {
            break held;
        }
        assert!(
            Instant::now() < deadline,
            "seed {seed}: blocks left behind: datanodes hold {held}, files need {} \
             ({gc} objects queued for GC, {leases} upload leases)",
            live_blocks * REPLICAS
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    };
    let history = history.lock().unwrap();
    let acked = history.iter().filter(|a| a.acked).count();
    let acked_bytes: u64 = history
        .iter()
        .filter(|a| a.acked)
        .map(|a| a.size as u64)
        .sum();
    eprintln!(
        "chaos: seed {seed}: {rounds} rounds in {:.0?}, {} writes ({acked} acknowledged, {acked_bytes} bytes), \
         {verified_bytes} bytes verified, 0 lost, 0 torn, {held} blocks held = {live_blocks} x {REPLICAS}; faults: {:?}",
        started.elapsed(),
        history.len(),
        faults_seen
    );
}
