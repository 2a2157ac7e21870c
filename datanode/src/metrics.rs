//! A datanode's metrics: its store's counts and traffic, corrupt blocks
//! found, and its healing (see [`tessera_rpc::metrics`]).

use std::sync::{Arc, Mutex, OnceLock};

use tessera_meta::HealReport;
use tessera_rpc::metrics::{Collecting, Labels, Samples, Source};

use crate::store::BlockStore;

/// What one datanode reports at a scrape, labelled with its slot and id.
pub struct NodeMetrics {
    pub(crate) store: BlockStore,
    pub(crate) heal: Arc<Mutex<HealReport>>,
    /// The ring slot, once registered.
    pub(crate) slot: Arc<OnceLock<u32>>,
}

impl Source for NodeMetrics {
    fn collect<'a>(&'a self, out: &'a mut Samples) -> Collecting<'a> {
        Box::pin(async move {
            let slot = self.slot.get().map_or_else(String::new, u32::to_string);
            let l: Labels = vec![("slot", slot), ("node", self.store.node_id().to_string())];
            let heal = *self.heal.lock().unwrap_or_else(|e| e.into_inner());
            // A store that cannot be read now still reports its healing.
            if let Ok(s) = self.store.stats().await {
                out.gauge(
                    "tessera_datanode_blocks",
                    "Block records held",
                    &l,
                    s.blocks as f64,
                );
                out.gauge(
                    "tessera_datanode_rows",
                    "Extent rows holding them",
                    &l,
                    s.rows as f64,
                );
                out.gauge(
                    "tessera_datanode_file_bytes",
                    "Size of the node's block file",
                    &l,
                    s.bytes as f64,
                );
                out.gauge(
                    "tessera_datanode_capacity_bytes",
                    "Size of the file system holding the node's data",
                    &l,
                    s.capacity as f64,
                );
                out.gauge(
                    "tessera_datanode_available_bytes",
                    "Bytes the node can still take (free space less its reserve)",
                    &l,
                    s.available as f64,
                );
                let c = |out: &mut Samples, name, help, v| out.counter(name, help, &l, v);
                c(
                    out,
                    "tessera_datanode_written_blocks",
                    "Blocks stored by puts",
                    s.written_blocks,
                );
                c(
                    out,
                    "tessera_datanode_written_bytes",
                    "Bytes of blocks stored by puts",
                    s.written_bytes,
                );
                c(
                    out,
                    "tessera_datanode_read_blocks",
                    "Blocks asked for by gets",
                    s.read_blocks,
                );
                c(
                    out,
                    "tessera_datanode_read_bytes",
                    "Bytes of get answers",
                    s.read_bytes,
                );
                c(
                    out,
                    "tessera_datanode_commits",
                    "Durable commits (group commit)",
                    s.commits,
                );
                let found = "Corrupt blocks found, by who found them: a read of a damaged \
                             record, a reader's checksum, a damaged transfer, a scrub pass";
                for (by, n) in [
                    ("read", s.corrupt_reads),
                    ("reader", s.corrupt_reported),
                    ("transfer", s.damaged_puts),
                    ("scrub", heal.scrub_total.corrupt),
                ] {
                    let mut l = l.clone();
                    l.push(("found_by", by.to_string()));
                    out.counter("tessera_datanode_corrupt_blocks", found, &l, n);
                }
            }
            let t = heal.scrub_total;
            let c = |out: &mut Samples, name, help, v| out.counter(name, help, &l, v);
            c(
                out,
                "tessera_datanode_scrub_checked_blocks",
                "Blocks checked by finished scrub passes",
                t.checked,
            );
            c(
                out,
                "tessera_datanode_scrub_missing_blocks",
                "Copies scrub passes found missing or stale",
                t.missing,
            );
            c(
                out,
                "tessera_datanode_repaired_blocks",
                "Blocks copied in from other replicas (repair queue, rebuild, scrub)",
                heal.repaired,
            );
            let g = |out: &mut Samples, name, help, v: f64| out.gauge(name, help, &l, v);
            g(
                out,
                "tessera_datanode_scrub_passes",
                "Number of the last finished scrub pass",
                heal.scrub_pass as f64,
            );
            g(
                out,
                "tessera_datanode_scrubbing",
                "1 while a scrub pass runs",
                heal.scrubbing.is_some() as u8 as f64,
            );
            g(
                out,
                "tessera_datanode_rebuilding",
                "1 while the node copies its slot's blocks from the other replicas",
                heal.rebuild.is_some() as u8 as f64,
            );
            if let Some(p) = heal.rebuild {
                let done = if p.total == 0 {
                    0.0
                } else {
                    p.done as f64 / p.total as f64
                };
                g(
                    out,
                    "tessera_datanode_rebuild_progress",
                    "Share of the rebuild done (0 to 1)",
                    done,
                );
            }
        })
    }
}
