//! A gateway's metrics (see [`tessera_rpc::metrics`]): its [`Stats`], its
//! queues, and the datanodes it is told are down. Every WebDAV gateway
//! and mount is one, labelled with its name in meta.

use std::sync::Arc;

use tessera_rpc::metrics::{Collecting, Labels, Samples, Source};

use crate::repair::{MissedLog, RepairQueue};
use crate::ring::RingCache;
use crate::stats::Stats;

pub(crate) struct GatewayMetrics {
    pub(crate) holder: u64,
    pub(crate) stats: Arc<Stats>,
    pub(crate) repair: RepairQueue,
    pub(crate) missed: MissedLog,
    pub(crate) ring: Arc<RingCache>,
}

impl Source for GatewayMetrics {
    fn collect<'a>(&'a self, out: &'a mut Samples) -> Collecting<'a> {
        Box::pin(async move {
            let l: Labels = vec![("gateway", format!("{:016x}", self.holder))];
            let s = &*self.stats;
            let counters = [
                (
                    "tessera_gateway_written_blocks",
                    "Blocks written with W copies (each once)",
                    &s.written_blocks,
                ),
                (
                    "tessera_gateway_written_bytes",
                    "Bytes of file data written with W copies",
                    &s.written_bytes,
                ),
                ("tessera_gateway_read_blocks", "Blocks read", &s.read_blocks),
                (
                    "tessera_gateway_read_bytes",
                    "Bytes of file data read",
                    &s.read_bytes,
                ),
                (
                    "tessera_gateway_blocked_writes",
                    "Writes that blocked waiting for W replicas",
                    &s.blocked_total,
                ),
                (
                    "tessera_gateway_bad_replicas",
                    "Replica copies reads found missing, stale or corrupt",
                    &s.bad_replicas_seen,
                ),
                (
                    "tessera_gateway_corrupt_blocks",
                    "Corrupt copies found by reads (SHA-256 mismatch or reported damaged)",
                    &s.corrupt_seen,
                ),
                (
                    "tessera_gateway_read_repairs_queued",
                    "Copies queued for read-repair",
                    &s.repairs_queued,
                ),
                (
                    "tessera_gateway_read_repairs_done",
                    "Copies rewritten by read-repair",
                    &s.repairs_done,
                ),
                (
                    "tessera_gateway_read_repairs_failed",
                    "Read-repair writes that failed",
                    &s.repairs_failed,
                ),
                (
                    "tessera_gateway_read_repairs_dropped",
                    "Read-repairs dropped on a full queue (left to scrub)",
                    &s.repairs_dropped,
                ),
                (
                    "tessera_gateway_read_failures",
                    "Reads failed for want of Q replicas or a valid copy",
                    &s.read_failures,
                ),
                (
                    "tessera_gateway_gc_objects",
                    "Objects GC deleted from datanodes",
                    &s.gc_objects,
                ),
                (
                    "tessera_gateway_hedged_reads",
                    "Reads that asked a second replica because the first was slow",
                    &s.hedged_reads,
                ),
                (
                    "tessera_gateway_direct_reads",
                    "Read chunks answered straight from their first replicas",
                    &s.direct_reads,
                ),
                (
                    "tessera_gateway_detached_dropped_bytes",
                    "Bytes of replica puts cancelled after their write was acknowledged",
                    &s.detached_dropped,
                ),
            ];
            for (name, help, c) in counters {
                out.counter(name, help, &l, Stats::get(c));
            }
            let view = self.ring.get();
            let gauges = [
                (
                    "tessera_gateway_blocked_writes_now",
                    "Writes blocked now waiting for W replicas",
                    Stats::get(&s.blocked_now),
                ),
                (
                    "tessera_gateway_detached_bytes",
                    "Bytes held by replica puts still running after their write was acknowledged",
                    Stats::get(&s.detached_bytes),
                ),
                (
                    "tessera_gateway_read_repair_queue",
                    "Batches of read-repairs waiting for the worker",
                    self.repair.len() as u64,
                ),
                (
                    "tessera_gateway_missed_replicas_queue",
                    "Ranges of missed replicas not yet in meta's repair queue",
                    self.missed.pending() as u64,
                ),
                (
                    "tessera_gateway_datanodes_down",
                    "Datanodes meta reports down, which this gateway does not call",
                    view.ring.down.len() as u64,
                ),
            ];
            for (name, help, v) in gauges {
                out.gauge(name, help, &l, v as f64);
            }
        })
    }
}
