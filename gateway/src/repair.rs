//! Read-repair: a bounded queue and one worker that writes the best copy of
//! a block back to the replicas that were missing, stale or corrupt.

use std::collections::BTreeMap;
use std::ops::ControlFlow;
use std::sync::Arc;
use std::sync::atomic::Ordering;

use tessera_datanode::{BlockWrite, PutResult};
use tokio::sync::mpsc;

use crate::fanout::fan_out;
use crate::ring::RingCache;
use crate::stats::Stats;

/// Jobs waiting at most; past that, repairs are dropped (and counted) and
/// left to the scrub.
const QUEUE: usize = 64;
/// Blocks sent to one datanode in one repair call at most.
const BATCH: usize = 4096;

#[derive(Debug, Clone)]
pub struct RepairJob {
    pub slot: u32,
    pub write: BlockWrite,
}

#[derive(Clone)]
pub struct RepairQueue {
    tx: mpsc::Sender<Vec<RepairJob>>,
}

impl RepairQueue {
    /// The queue and its receiving end, for [`run_worker`].
    pub fn new() -> (Self, mpsc::Receiver<Vec<RepairJob>>) {
        let (tx, rx) = mpsc::channel(QUEUE);
        (RepairQueue { tx }, rx)
    }

    /// Queues repairs without waiting; drops them if the queue is full.
    pub fn submit(&self, jobs: Vec<RepairJob>, stats: &Stats) {
        let n = jobs.len() as u64;
        match self.tx.try_send(jobs) {
            Ok(()) => {
                stats.repairs_queued.fetch_add(n, Ordering::Relaxed);
            }
            Err(_) => {
                stats.repairs_dropped.fetch_add(n, Ordering::Relaxed);
                tracing::warn!(blocks = n, "repair queue full; leaving these to the scrub");
            }
        }
    }
}

/// Writes queued repairs until the queue closes or `shutdown` resolves.
pub async fn run_worker(
    ring: Arc<RingCache>,
    stats: Arc<Stats>,
    mut rx: mpsc::Receiver<Vec<RepairJob>>,
    shutdown: impl std::future::Future<Output = ()>,
) {
    let mut shutdown = std::pin::pin!(shutdown);
    loop {
        let first = tokio::select! {
            j = rx.recv() => match j { Some(j) => j, None => return },
            _ = &mut shutdown => return,
        };
        let mut jobs = first;
        while jobs.len() < BATCH {
            match rx.try_recv() {
                Ok(more) => jobs.extend(more),
                Err(_) => break,
            }
        }
        let mut by_slot: BTreeMap<u32, Vec<BlockWrite>> = BTreeMap::new();
        for j in jobs {
            by_slot.entry(j.slot).or_default().push(j.write);
        }
        for writes in by_slot.values_mut() {
            writes.sort_by_key(|w| (w.key.object, w.role, w.key.index));
        }
        let view = ring.get();
        fan_out(
            &ring,
            &view,
            by_slot,
            |client, writes| {
                let (client, writes) = (client.clone(), writes.clone());
                async move { client.put_blocks(&writes).await }
            },
            |slot, writes, result| {
                let n = writes.len() as u64;
                match result {
                    Ok(results) => {
                        let ok = results
                            .iter()
                            .filter(|r| matches!(r, PutResult::Stored | PutResult::Newer(_)))
                            .count() as u64;
                        stats.repairs_done.fetch_add(ok, Ordering::Relaxed);
                        stats.repairs_failed.fetch_add(n - ok, Ordering::Relaxed);
                        tracing::info!(slot, blocks = ok, "repaired replicas");
                    }
                    Err(e) => {
                        stats.repairs_failed.fetch_add(n, Ordering::Relaxed);
                        tracing::warn!(slot, error = %e, "repair failed");
                    }
                }
                ControlFlow::Continue(())
            },
        )
        .await;
    }
}
