//! Meta's metrics (see [`tessera_rpc::metrics`]): every datanode's state,
//! the repair and GC queues, what gateways report, namespace counts.

use tessera_rpc::metrics::{Collecting, Labels, Samples, Source};

use crate::health::NodeState;
use crate::store::MetaStore;

pub(crate) struct MetaMetrics {
    pub(crate) store: MetaStore,
}

const STATES: [NodeState; 3] = [NodeState::Up, NodeState::Down, NodeState::Rebuilding];

impl Source for MetaMetrics {
    fn collect<'a>(&'a self, out: &'a mut Samples) -> Collecting<'a> {
        Box::pin(async move {
            let none = Labels::new();
            let s = &self.store;
            if let Ok(ring) = s.ring().await {
                let health = s.health().cluster(&ring);
                let mut per_state = [0u64; 3];
                for n in &health.nodes {
                    let l: Labels = vec![("slot", n.slot.to_string()), ("node", n.id.clone())];
                    for (i, state) in STATES.iter().enumerate() {
                        let mut with = l.clone();
                        with.push(("state", state.as_str().to_string()));
                        let now = n.state == *state;
                        per_state[i] += now as u64;
                        out.gauge(
                            "tessera_meta_datanode_state",
                            "1 for each datanode's state now (up, down, rebuilding), 0 for the others",
                            &with,
                            now as u8 as f64,
                        );
                    }
                    if let Some(ms) = n.last_seen_ms {
                        out.gauge(
                            "tessera_meta_datanode_last_seen_seconds",
                            "Seconds since the datanode's last heartbeat",
                            &l,
                            ms as f64 / 1e3,
                        );
                    }
                }
                for (i, state) in STATES.iter().enumerate() {
                    out.gauge(
                        "tessera_meta_datanodes",
                        "Datanodes of the ring in each state",
                        &vec![("state", state.as_str().to_string())],
                        per_state[i] as f64,
                    );
                }
                let g =
                    |out: &mut Samples, name, help, v: u64| out.gauge(name, help, &none, v as f64);
                g(
                    out,
                    "tessera_meta_blocked_writes",
                    "Writes blocked for want of datanodes, summed over the gateways",
                    health.blocked_writes,
                );
                g(
                    out,
                    "tessera_meta_gateways",
                    "Gateways and mounts that reported within the node timeout",
                    health.gateways.into(),
                );
                g(
                    out,
                    "tessera_meta_scrub_requested",
                    "The scrub pass asked for last (tessera scrub)",
                    health.scrub_requested,
                );
                if let Ok(under) = s.under_replicated(ring.settings.replicas).await {
                    // Every slot, 0 where nothing waits.
                    for n in &health.nodes {
                        let blocks = under
                            .iter()
                            .find(|(slot, _)| *slot == n.slot)
                            .map_or(0, |u| u.1);
                        out.gauge(
                            "tessera_meta_under_replicated_blocks",
                            "Blocks the repair queue holds for each slot's replica",
                            &vec![("slot", n.slot.to_string())],
                            blocks as f64,
                        );
                    }
                }
            }
            let g = |out: &mut Samples, name, help, v: u64| out.gauge(name, help, &none, v as f64);
            if let Ok(n) = s.repair_ranges().await {
                g(
                    out,
                    "tessera_meta_repair_queue_ranges",
                    "Ranges of blocks waiting in the repair queue",
                    n,
                );
            }
            if let Ok((inodes, gc, leases)) = s.counts().await {
                g(
                    out,
                    "tessera_meta_inodes",
                    "Files, directories and other inodes",
                    inodes,
                );
                g(
                    out,
                    "tessera_meta_gc_queue_objects",
                    "Objects waiting in the GC queue",
                    gc,
                );
                g(
                    out,
                    "tessera_meta_upload_leases",
                    "Objects of uploads in progress",
                    leases,
                );
            }
        })
    }
}
