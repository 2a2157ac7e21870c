//! What datanodes and gateways last told meta about themselves: soft state,
//! in memory only (it is rebuilt within a heartbeat of a restart).
//!
//! Every datanode reports once a second ([`NodeReport`]: blocks, bytes,
//! capacity); a slot whose holder has not reported for the node timeout
//! (default [`DEFAULT_NODE_TIMEOUT`]) is `down`, and `up` again with its
//! next report. For a timeout after meta starts, a node it has not heard
//! from yet counts as up: it had no chance to report. Gateways (and mounts)
//! report their blocked writes, summed in [`ClusterHealth::blocked_writes`].

use std::collections::HashMap;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

use crate::settings::Settings;
use crate::types::Ring;

/// How long a datanode may stay silent before it is `down`.
pub const DEFAULT_NODE_TIMEOUT: Duration = Duration::from_secs(3);
/// How often datanodes and gateways report.
pub const HEARTBEAT_INTERVAL: Duration = Duration::from_secs(1);

/// What a datanode reports.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeReport {
    /// Block records held.
    pub blocks: u64,
    /// Size of its block file.
    pub bytes: u64,
    /// Size of the file system holding its data (0: unknown).
    pub capacity: u64,
    /// Bytes it can still take.
    pub available: u64,
    /// What it did to heal itself.
    pub heal: HealReport,
}

/// A datanode's self-healing: its rebuild, its scrub passes, its repairs.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct HealReport {
    /// Set while the node copies its slot's blocks from the other replicas
    /// (it lost its storage): it is `rebuilding` until done.
    pub rebuild: Option<Progress>,
    /// The scrub pass running now, if one is.
    pub scrubbing: Option<Progress>,
    /// The last scrub pass finished: its number (passes asked for with
    /// `tessera scrub` take meta's scrub number) and what it found.
    pub scrub_pass: u64,
    pub scrub: ScrubCounts,
    /// Every finished scrub pass since the node started, added up.
    pub scrub_total: ScrubCounts,
    /// Blocks copied from other replicas since the node started, by the
    /// repair queue, rebuild and scrub.
    pub repaired: u64,
}

/// How far a pass over a node's blocks is.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Progress {
    /// Blocks handled and expected.
    pub done: u64,
    pub total: u64,
    /// Bytes of blocks copied in.
    pub bytes: u64,
    pub elapsed_ms: u64,
}

/// What one scrub pass over a node found.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ScrubCounts {
    /// Blocks whose copy on the node was read and checked.
    pub checked: u64,
    /// Copies found damaged (failing their SHA-256, or unreadable).
    pub corrupt: u64,
    /// Copies found missing, or older than another replica's.
    pub missing: u64,
    /// Copies written back from other replicas.
    pub repaired: u64,
}

impl ScrubCounts {
    pub fn add(&mut self, o: &ScrubCounts) {
        self.checked += o.checked;
        self.corrupt += o.corrupt;
        self.missing += o.missing;
        self.repaired += o.repaired;
    }
}

/// What meta answers a datanode's heartbeat.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct BeatReply {
    /// Ranges waiting in the repair queue for the node's slot.
    pub repairs: u64,
    /// The scrub pass asked for last (`tessera scrub`); a node that has not
    /// finished that pass starts it now.
    pub scrub: u64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum NodeState {
    Up,
    Down,
    /// Up, and copying its slot's blocks from the other replicas: a block
    /// it says it does not hold may not be copied yet.
    Rebuilding,
}

impl NodeState {
    pub fn as_str(self) -> &'static str {
        match self {
            NodeState::Up => "up",
            NodeState::Down => "down",
            NodeState::Rebuilding => "rebuilding",
        }
    }
}

/// One ring slot as meta sees it now.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeHealth {
    pub slot: u32,
    pub id: String,
    pub addr: String,
    pub state: NodeState,
    /// The holder's last report, if it made one since meta started.
    pub report: Option<NodeReport>,
    /// Milliseconds since that report.
    pub last_seen_ms: Option<u64>,
    /// Blocks of this slot waiting in the repair queue.
    pub under_replicated: u64,
}

/// The cluster as meta sees it now.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClusterHealth {
    pub settings: Settings,
    pub nodes: Vec<NodeHealth>,
    /// Writes blocked for want of datanodes, summed over the gateways and
    /// mounts that reported within the node timeout.
    pub blocked_writes: u64,
    /// Gateways and mounts that reported within the node timeout.
    pub gateways: u32,
    /// The node timeout, milliseconds.
    pub node_timeout_ms: u64,
    /// Blocks the repair queue holds for replicas that missed them, summed
    /// over the slots (per slot in each node's `under_replicated`).
    pub under_replicated_blocks: u64,
    /// The scrub pass asked for last (0: none since meta started).
    pub scrub_requested: u64,
}

struct Beat {
    node_id: String,
    at: Instant,
    /// `None` until the node's first heartbeat (a registration counts as
    /// a sign of life, without counts).
    report: Option<NodeReport>,
}

pub struct Health {
    started: Instant,
    timeout_ms: AtomicU64,
    nodes: Mutex<HashMap<u32, Beat>>,
    /// Gateway id -> (last report, blocked writes).
    gateways: Mutex<HashMap<u64, (Instant, u64)>>,
    /// The state last logged per slot, to log each change once.
    logged: Mutex<HashMap<u32, NodeState>>,
    /// The scrub pass asked for last.
    scrub: AtomicU64,
}

impl Default for Health {
    fn default() -> Self {
        Health::new(DEFAULT_NODE_TIMEOUT)
    }
}

impl Health {
    pub fn new(timeout: Duration) -> Health {
        Health {
            started: Instant::now(),
            timeout_ms: AtomicU64::new(timeout.as_millis().max(1) as u64),
            nodes: Mutex::default(),
            gateways: Mutex::default(),
            logged: Mutex::default(),
            scrub: AtomicU64::new(0),
        }
    }

    /// Asks every datanode for a scrub pass now; returns its number.
    pub fn request_scrub(&self) -> u64 {
        self.scrub.fetch_add(1, Ordering::Relaxed) + 1
    }

    pub fn scrub_requested(&self) -> u64 {
        self.scrub.load(Ordering::Relaxed)
    }

    pub fn timeout(&self) -> Duration {
        Duration::from_millis(self.timeout_ms.load(Ordering::Relaxed))
    }

    pub fn set_timeout(&self, timeout: Duration) {
        self.timeout_ms
            .store(timeout.as_millis().max(1) as u64, Ordering::Relaxed);
    }

    /// Records a datanode's report; the caller checked that `node_id`
    /// holds `slot`.
    pub fn node_beat(&self, slot: u32, node_id: &str, report: NodeReport) {
        let beat = Beat {
            node_id: node_id.to_string(),
            at: Instant::now(),
            report: Some(report),
        };
        lock(&self.nodes).insert(slot, beat);
    }

    /// A node (re)registered in `slot`: it is alive now, so a gateway that
    /// learns of its address does not take it for down until its first
    /// heartbeat.
    pub fn registered(&self, slot: u32, node_id: &str) {
        let mut nodes = lock(&self.nodes);
        let report = nodes
            .get(&slot)
            .filter(|b| b.node_id == node_id)
            .and_then(|b| b.report);
        let beat = Beat {
            node_id: node_id.to_string(),
            at: Instant::now(),
            report,
        };
        nodes.insert(slot, beat);
    }

    /// The slots of `ring` that are down now.
    pub fn down_slots(&self, ring: &Ring) -> Vec<u32> {
        self.slots_in(ring, NodeState::Down)
    }

    /// The slots of `ring` in `state` now.
    pub fn slots_in(&self, ring: &Ring, state: NodeState) -> Vec<u32> {
        self.cluster(ring)
            .nodes
            .iter()
            .filter(|n| n.state == state)
            .map(|n| n.slot)
            .collect()
    }

    /// Records a gateway's report.
    pub fn gateway_beat(&self, id: u64, blocked_writes: u64) {
        let mut g = lock(&self.gateways);
        let now = Instant::now();
        let forget = 3 * self.timeout();
        g.retain(|_, (at, _)| now.duration_since(*at) < forget);
        g.insert(id, (now, blocked_writes));
    }

    /// Every slot of `ring` with its state, and the gateways' sums.
    pub fn cluster(&self, ring: &Ring) -> ClusterHealth {
        let now = Instant::now();
        let timeout = self.timeout();
        let nodes = lock(&self.nodes);
        let slots = ring
            .slots
            .iter()
            .map(|s| {
                let beat = nodes.get(&s.slot).filter(|b| b.node_id == s.node_id);
                let fresh = match beat {
                    Some(b) => now.duration_since(b.at) <= timeout,
                    // Not heard from since meta started: up while it could
                    // not have reported yet.
                    None => now.duration_since(self.started) <= timeout,
                };
                let report = beat.and_then(|b| b.report);
                NodeHealth {
                    slot: s.slot,
                    id: s.node_id.clone(),
                    addr: s.addr.clone(),
                    state: match (fresh, report.and_then(|r| r.heal.rebuild)) {
                        (false, _) => NodeState::Down,
                        (true, Some(_)) => NodeState::Rebuilding,
                        (true, None) => NodeState::Up,
                    },
                    report,
                    last_seen_ms: beat.map(|b| now.duration_since(b.at).as_millis() as u64),
                    under_replicated: 0,
                }
            })
            .collect();
        drop(nodes);
        let gateways = lock(&self.gateways);
        let live: Vec<u64> = gateways
            .values()
            .filter(|(at, _)| now.duration_since(*at) <= timeout)
            .map(|(_, b)| *b)
            .collect();
        ClusterHealth {
            settings: ring.settings,
            nodes: slots,
            blocked_writes: live.iter().sum(),
            gateways: live.len() as u32,
            node_timeout_ms: timeout.as_millis() as u64,
            under_replicated_blocks: 0,
            scrub_requested: self.scrub_requested(),
        }
    }

    /// Logs every slot whose state changed since the last sweep (one line
    /// per change).
    pub fn sweep(&self, ring: &Ring) {
        let cluster = self.cluster(ring);
        let mut logged = lock(&self.logged);
        for n in &cluster.nodes {
            let before = logged.insert(n.slot, n.state);
            match (before, n.state) {
                (Some(NodeState::Up | NodeState::Rebuilding) | None, NodeState::Down) => {
                    tracing::warn!(
                        slot = n.slot,
                        node = %n.id,
                        addr = %n.addr,
                        silent_ms = n.last_seen_ms,
                        "datanode down: no heartbeat within {} ms",
                        cluster.node_timeout_ms
                    )
                }
                (Some(NodeState::Down), NodeState::Up) => {
                    tracing::info!(slot = n.slot, node = %n.id, addr = %n.addr, "datanode up again")
                }
                (Some(NodeState::Up | NodeState::Down) | None, NodeState::Rebuilding) => {
                    tracing::info!(slot = n.slot, node = %n.id, addr = %n.addr, "datanode rebuilding its slot")
                }
                (Some(NodeState::Rebuilding), NodeState::Up) => {
                    tracing::info!(slot = n.slot, node = %n.id, addr = %n.addr, "datanode rebuilt its slot; up")
                }
                _ => {}
            }
        }
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::types::RingSlot;

    fn ring(n: u32) -> Ring {
        Ring {
            down: Vec::new(),
            rebuilding: Vec::new(),
            settings: Settings::default(),
            slots: (0..n)
                .map(|i| RingSlot {
                    slot: i,
                    node_id: format!("node{i}"),
                    addr: format!("127.0.0.1:{}", 7000 + i),
                })
                .collect(),
        }
    }

    #[test]
    fn a_silent_node_goes_down_and_comes_back_up() {
        let h = Health::new(Duration::from_millis(150));
        let r = ring(2);
        // Unheard of just after start: up.
        assert!(h.cluster(&r).nodes.iter().all(|n| n.state == NodeState::Up));
        let report = NodeReport {
            blocks: 5,
            bytes: 4096,
            capacity: 1 << 30,
            available: 1 << 29,
            heal: HealReport::default(),
        };
        std::thread::sleep(Duration::from_millis(200));
        h.node_beat(0, "node0", report);
        // A report from another node than the slot's holder does not count.
        h.node_beat(1, "impostor", report);
        let c = h.cluster(&r);
        assert_eq!(c.nodes[0].state, NodeState::Up);
        assert_eq!(c.nodes[0].report, Some(report));
        assert_eq!(c.nodes[1].state, NodeState::Down);
        assert_eq!(c.nodes[1].report, None);
        std::thread::sleep(Duration::from_millis(200));
        assert_eq!(h.cluster(&r).nodes[0].state, NodeState::Down);
        assert_eq!(h.down_slots(&r), [0, 1]);
        h.node_beat(0, "node0", report);
        assert_eq!(h.cluster(&r).nodes[0].state, NodeState::Up);
        assert_eq!(h.down_slots(&r), [1]);
        // Registering is a sign of life; the counts come with the beats.
        h.registered(1, "node1");
        let c = h.cluster(&r);
        assert_eq!((c.nodes[1].state, c.nodes[1].report), (NodeState::Up, None));
        h.registered(0, "node0");
        assert_eq!(h.cluster(&r).nodes[0].report, Some(report));
    }

    #[test]
    fn blocked_writes_are_summed_over_live_gateways() {
        let h = Health::new(Duration::from_millis(150));
        h.gateway_beat(1, 2);
        h.gateway_beat(2, 3);
        h.gateway_beat(1, 4);
        let c = h.cluster(&ring(1));
        assert_eq!((c.blocked_writes, c.gateways), (7, 2));
        std::thread::sleep(Duration::from_millis(200));
        h.gateway_beat(2, 1);
        let c = h.cluster(&ring(1));
        assert_eq!((c.blocked_writes, c.gateways), (1, 1));
    }
}
