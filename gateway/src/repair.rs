//! Read-repair: a bounded queue and one worker that writes the best copy of
//! a block back to the replicas that were missing, stale or corrupt. And
//! the [`MissedLog`]: replicas that missed acknowledged writes, sent to
//! meta's repair queue for their datanodes to copy.

use std::collections::BTreeMap;
use std::ops::ControlFlow;
use std::sync::Arc;
use std::sync::atomic::Ordering;

use tessera_datanode::{BlockWrite, PutResult};
use tessera_meta::{MetaClient, RepairRange};
use tokio::sync::{Notify, mpsc};

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

    /// Batches of repairs waiting for the worker.
    pub fn len(&self) -> usize {
        self.tx.max_capacity() - self.tx.capacity()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
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

/// Ranges held at most while meta cannot take them; past that they are
/// dropped (and counted): the datanodes' scrub finds those copies missing.
const MISSED_HELD: usize = 100_000;
/// Ranges sent to meta in one change at most.
const MISSED_BATCH: usize = 4096;

/// Replicas that missed writes acknowledged without them (W < R), kept
/// until [`run_missed`] has them in meta's repair queue.
#[derive(Clone, Default)]
pub struct MissedLog {
    inner: Arc<MissedInner>,
}

#[derive(Default)]
struct MissedInner {
    ranges: std::sync::Mutex<Vec<RepairRange>>,
    wake: Notify,
}

impl MissedLog {
    pub fn record(&self, range: RepairRange) {
        let mut ranges = self.inner.ranges.lock().unwrap_or_else(|e| e.into_inner());
        if ranges.len() >= MISSED_HELD {
            tracing::warn!(
                slot = range.slot,
                object = range.object.id,
                "too many missed replicas waiting for meta; leaving this one to the scrub"
            );
            return;
        }
        ranges.push(range);
        drop(ranges);
        self.inner.wake.notify_one();
    }

    /// Ranges not in meta's queue yet.
    pub fn pending(&self) -> usize {
        self.inner
            .ranges
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .len()
    }

    /// Takes up to [`MISSED_BATCH`] ranges, adjacent ones of one object and
    /// slot merged.
    fn take(&self) -> Vec<RepairRange> {
        let mut ranges = self.inner.ranges.lock().unwrap_or_else(|e| e.into_inner());
        let n = ranges.len().min(MISSED_BATCH);
        let mut batch: Vec<RepairRange> = ranges.drain(..n).collect();
        drop(ranges);
        batch.sort_by_key(|r| (r.slot, r.object.id, r.first));
        let mut out: Vec<RepairRange> = Vec::with_capacity(batch.len());
        for r in batch {
            match out.last_mut() {
                Some(l) if (l.slot, l.object.id) == (r.slot, r.object.id) && r.first <= l.end => {
                    l.end = l.end.max(r.end)
                }
                _ => out.push(r),
            }
        }
        out
    }

    /// Puts ranges back after meta refused or could not be reached.
    fn put_back(&self, batch: Vec<RepairRange>) {
        let mut ranges = self.inner.ranges.lock().unwrap_or_else(|e| e.into_inner());
        let room = MISSED_HELD.saturating_sub(ranges.len());
        ranges.extend(batch.into_iter().take(room));
    }
}

/// Sends missed replicas to meta's repair queue as they come, retrying
/// while meta is unreachable, until `shutdown` resolves.
pub async fn run_missed(
    meta: MetaClient,
    log: MissedLog,
    shutdown: impl std::future::Future<Output = ()>,
) {
    let mut shutdown = std::pin::pin!(shutdown);
    let mut delay = std::time::Duration::from_millis(100);
    loop {
        let batch = log.take();
        if batch.is_empty() {
            tokio::select! {
                _ = log.inner.wake.notified() => continue,
                _ = &mut shutdown => return,
            }
        }
        let n = batch.len();
        match meta.need_repair(batch.clone()).await {
            Ok(()) => {
                tracing::info!(ranges = n, "queued repairs of replicas that missed writes");
                delay = std::time::Duration::from_millis(100);
            }
            Err(tessera_meta::api::CallError::Meta(e)) => {
                tracing::warn!(error = %e, ranges = n, "meta refused repair ranges");
            }
            Err(e) => {
                tracing::debug!(error = %e, "cannot queue repairs yet; retrying");
                log.put_back(batch);
                tokio::select! {
                    _ = tokio::time::sleep(delay) => {}
                    _ = &mut shutdown => return,
                }
                delay = (delay * 2).min(std::time::Duration::from_secs(2));
            }
        }
    }
}
