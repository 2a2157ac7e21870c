//! Block I/O against the replicas: the one place that fans out, counts
//! acknowledgements and answers, retries and queues repairs.
//!
//! - [`BlockIo::write`]: one batch per datanode, all in parallel; returns once
//!   every block has W durable copies. While fewer than W replicas of a block
//!   can take it, the write **blocks and retries** with capped backoff (visible
//!   in [`Stats::blocked_now`]); dropping the future interrupts it.
//! - [`BlockIo::read`]: asks replicas in placement order until Q answered and a
//!   valid copy is in hand; the highest generation wins; missing, stale and
//!   corrupt replicas are repaired in the background, never served.

use std::collections::BTreeMap;
use std::ops::Range;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use tessera_datanode::{Block, BlockKey, BlockWrite, GetResult, PutResult};
use tessera_meta::ObjectRef;
use tokio::sync::mpsc;

use crate::error::{Error, Result};
use crate::placement;
use crate::quorum::{QuorumFailure, WriteTally};
use crate::repair::{RepairJob, RepairQueue};
use crate::ring::RingCache;

/// Counters a gateway exposes (status, metrics).
#[derive(Debug, Default)]
pub struct Stats {
    /// Writes currently blocked waiting for W replicas.
    pub blocked_now: AtomicU64,
    /// Writes that ever blocked.
    pub blocked_total: AtomicU64,
    /// Replica copies found missing, stale or corrupt by reads.
    pub bad_replicas_seen: AtomicU64,
    /// Corrupt copies among them.
    pub corrupt_seen: AtomicU64,
    pub repairs_queued: AtomicU64,
    pub repairs_done: AtomicU64,
    pub repairs_failed: AtomicU64,
    pub repairs_dropped: AtomicU64,
    /// Reads that failed for want of Q replicas or a valid copy.
    pub read_failures: AtomicU64,
    /// Objects deleted from datanodes by GC.
    pub gc_objects: AtomicU64,
}

impl Stats {
    pub fn get(c: &AtomicU64) -> u64 {
        c.load(Ordering::Relaxed)
    }
    fn add(c: &AtomicU64, n: u64) {
        c.fetch_add(n, Ordering::Relaxed);
    }
}

/// Backoff of a blocked write.
#[derive(Debug, Clone, Copy)]
pub struct RetryPolicy {
    pub first: Duration,
    pub max: Duration,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        RetryPolicy {
            first: Duration::from_millis(50),
            max: Duration::from_secs(2),
        }
    }
}

#[derive(Clone)]
pub struct BlockIo {
    pub(crate) ring: Arc<RingCache>,
    pub(crate) stats: Arc<Stats>,
    pub(crate) repair: RepairQueue,
    pub(crate) retry: RetryPolicy,
}

/// Decrements the blocked-writes gauge however the write ends.
struct BlockedGuard<'a>(&'a Stats);

impl Drop for BlockedGuard<'_> {
    fn drop(&mut self) {
        self.0.blocked_now.fetch_sub(1, Ordering::Relaxed);
    }
}

/// What one replica said about one block during a read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Seen {
    Valid(u64),
    Missing,
    Corrupt,
    Gone,
}

#[derive(Default)]
struct ReadState {
    answers: u32,
    tried: u64,
    best: Option<Block>,
    seen: Vec<(u32, Seen)>,
    failures: Vec<String>,
    done: bool,
}

impl ReadState {
    /// Done asking: Q answered and a valid copy is in hand.
    fn has_copy(&self, q: u32) -> bool {
        self.answers >= q && self.best.is_some()
    }

    /// A hole: Q answered, every replica was asked, none has a copy (valid
    /// or corrupt). A single "missing" (say, from a node that lost its disk)
    /// is never taken for a hole while another replica may hold the block.
    fn is_hole(&self, q: u32, r: u32) -> bool {
        self.answers >= q
            && self.best.is_none()
            && self.tried.count_ones() >= r
            && self.seen.iter().all(|(_, s)| *s == Seen::Missing)
    }
}

impl BlockIo {
    /// Writes `blocks` as indices `first..` of `object`; returns when each has
    /// W durable copies, blocking while that is impossible.
    pub async fn write(&self, object: &ObjectRef, first: u64, blocks: Vec<Block>) -> Result<()> {
        let n = blocks.len();
        if n == 0 {
            return Ok(());
        }
        let blocks = Arc::new(blocks);
        let mut view = self.ring.get();
        let (r, w) = (view.settings.replicas, view.settings.write_quorum);
        let mut tally = WriteTally::new(n, w);
        let mut backoff = self.retry.first;
        let mut blocked: Option<BlockedGuard> = None;
        let mut round = 0u32;
        loop {
            // First round: every replica. Later rounds: the replicas still
            // missing for blocks still short of W.
            let mut targets: BTreeMap<u32, Vec<(usize, u32)>> = BTreeMap::new();
            for i in 0..n {
                if round > 0 && !tally.is_short(i) {
                    continue;
                }
                for k in 0..r.min(object.width) {
                    if !tally.has(i, k) {
                        let slot = placement::slot(object, first + i as u64, k);
                        targets.entry(slot).or_default().push((i, k));
                    }
                }
            }
            let (tx, mut rx) = mpsc::unbounded_channel();
            let mut failures = Vec::new();
            let mut outstanding = 0;
            for (slot, items) in targets {
                let Some(client) = view.node(slot).cloned() else {
                    failures.push(format!("{}: no datanode", view.describe(slot)));
                    continue;
                };
                let writes: Vec<BlockWrite> = items
                    .iter()
                    .map(|&(i, _)| BlockWrite {
                        key: BlockKey {
                            object: object.id,
                            index: first + i as u64,
                        },
                        block: blocks[i].clone(),
                    })
                    .collect();
                let tx = tx.clone();
                outstanding += 1;
                // A spawned task: if the write returns at W, slower replicas
                // still finish in the background.
                tokio::spawn(async move {
                    let res = client.put(writes).await;
                    let _ = tx.send((slot, items, res));
                });
            }
            drop(tx);
            while outstanding > 0 && !tally.complete() {
                let Some((slot, items, res)) = rx.recv().await else {
                    break;
                };
                outstanding -= 1;
                match res {
                    Ok(results) => {
                        for (&(i, k), res) in items.iter().zip(results) {
                            match res {
                                PutResult::Stored | PutResult::Newer(_) => tally.ack(i, k),
                                PutResult::Gone => {
                                    return Err(Error::Conflict(format!(
                                        "object {} (deleted while being written)",
                                        object.id
                                    )));
                                }
                                PutResult::Damaged => failures.push(format!(
                                    "{}: block {} damaged in transfer",
                                    view.describe(slot),
                                    first + i as u64
                                )),
                            }
                        }
                    }
                    Err(e) => {
                        self.ring.refresh_soon();
                        failures.push(format!("{}: {e}", view.describe(slot)));
                    }
                }
            }
            if tally.complete() {
                if blocked.is_some() {
                    tracing::info!(
                        object = object.id,
                        rounds = round,
                        "blocked write completed"
                    );
                }
                return Ok(());
            }
            if blocked.is_none() {
                self.stats.blocked_now.fetch_add(1, Ordering::Relaxed);
                Stats::add(&self.stats.blocked_total, 1);
                blocked = Some(BlockedGuard(&self.stats));
            }
            let failure = QuorumFailure {
                needed: w,
                ok: tally.min_acks(),
                failures,
            };
            if round.is_multiple_of(10) {
                tracing::warn!(object = object.id, first, blocks = n, %failure, "write blocked: waiting for enough replicas");
            }
            tokio::time::sleep(backoff).await;
            backoff = (backoff * 2).min(self.retry.max);
            view = self.ring.refresh().await;
            round += 1;
        }
    }

    /// Reads blocks `range` of `object`. `None` is a hole (never written).
    pub async fn read(&self, object: &ObjectRef, range: Range<u64>) -> Result<Vec<Option<Block>>> {
        let n = (range.end - range.start) as usize;
        if n == 0 || object.is_none() {
            return Ok(vec![None; n]);
        }
        let view = self.ring.get();
        let (r, q) = (
            view.settings.replicas.min(object.width),
            view.settings.read_quorum,
        );
        let q = q.min(r);
        let mut states: Vec<ReadState> = (0..n).map(|_| ReadState::default()).collect();
        loop {
            let mut targets: BTreeMap<u32, Vec<(usize, u32)>> = BTreeMap::new();
            for (i, st) in states.iter_mut().enumerate() {
                if st.done {
                    continue;
                }
                if st.has_copy(q) || st.is_hole(q, r) {
                    st.done = true;
                    continue;
                }
                let need = if st.answers < q { q - st.answers } else { 1 };
                let next: Vec<u32> = (0..r)
                    .filter(|k| st.tried & (1 << k) == 0)
                    .take(need as usize)
                    .collect();
                if next.is_empty() {
                    st.done = true;
                    continue;
                }
                for k in next {
                    st.tried |= 1 << k;
                    let slot = placement::slot(object, range.start + i as u64, k);
                    targets.entry(slot).or_default().push((i, k));
                }
            }
            if targets.is_empty() {
                break;
            }
            let calls = targets.into_iter().map(|(slot, items)| {
                let client = view.node(slot).cloned();
                let keys: Vec<BlockKey> = items
                    .iter()
                    .map(|&(i, _)| BlockKey {
                        object: object.id,
                        index: range.start + i as u64,
                    })
                    .collect();
                async move {
                    let res = match client {
                        Some(c) => c.get(keys).await.map_err(|e| e.to_string()),
                        None => Err("no datanode".to_string()),
                    };
                    // Verify every copy again here, off the runtime: a block
                    // damaged on the way is not an answer.
                    let res = match res {
                        Ok(results) => Ok(tessera_rpc::blocking(move || {
                            results
                                .into_iter()
                                .map(|r| match r {
                                    GetResult::Found(b) if !b.is_valid() => None,
                                    r => Some(r),
                                })
                                .collect::<Vec<_>>()
                        })
                        .await),
                        Err(e) => Err(e),
                    };
                    (slot, items, res)
                }
            });
            for (slot, items, res) in futures::future::join_all(calls).await {
                match res {
                    Ok(results) => {
                        for (&(i, k), got) in items.iter().zip(results) {
                            let st = &mut states[i];
                            let Some(got) = got else {
                                st.failures.push(format!(
                                    "{}: block damaged in transfer",
                                    view.describe(slot)
                                ));
                                continue;
                            };
                            st.answers += 1;
                            let seen = match got {
                                GetResult::Found(b) => {
                                    let g = b.generation;
                                    if st.best.as_ref().is_none_or(|cur| cur.generation < g) {
                                        st.best = Some(b);
                                    }
                                    Seen::Valid(g)
                                }
                                GetResult::Missing => Seen::Missing,
                                GetResult::Gone => Seen::Gone,
                                GetResult::Corrupt => {
                                    Stats::add(&self.stats.corrupt_seen, 1);
                                    Seen::Corrupt
                                }
                            };
                            st.seen.push((k, seen));
                        }
                    }
                    Err(e) => {
                        for &(i, _) in &items {
                            states[i]
                                .failures
                                .push(format!("{}: {e}", view.describe(slot)));
                        }
                    }
                }
            }
        }
        let mut out = Vec::with_capacity(n);
        let mut repairs = Vec::new();
        for (i, st) in states.into_iter().enumerate() {
            let index = range.start + i as u64;
            if st.best.is_none() && st.seen.iter().any(|(_, s)| *s == Seen::Gone) {
                return Err(Error::Conflict(format!(
                    "object {} (replaced or deleted while being read)",
                    object.id
                )));
            }
            if !st.has_copy(q) && !st.is_hole(q, r) {
                Stats::add(&self.stats.read_failures, 1);
                if st.answers < q {
                    return Err(Error::Unavailable {
                        what: format!("reading object {} block {index}", object.id),
                        failure: QuorumFailure {
                            needed: q,
                            ok: st.answers,
                            failures: st.failures,
                        },
                    });
                }
                return Err(Error::Corrupt {
                    object: object.id,
                    index,
                    detail: format!("{} replicas answered, none with a valid copy", st.answers),
                });
            }
            if let Some(best) = &st.best {
                for &(k, seen) in &st.seen {
                    let bad = match seen {
                        Seen::Valid(g) => g < best.generation,
                        Seen::Missing | Seen::Corrupt => true,
                        Seen::Gone => false,
                    };
                    if bad {
                        repairs.push(RepairJob {
                            slot: placement::slot(object, index, k),
                            write: BlockWrite {
                                key: BlockKey {
                                    object: object.id,
                                    index,
                                },
                                block: best.clone(),
                            },
                        });
                    }
                }
            }
            out.push(st.best);
        }
        if !repairs.is_empty() {
            Stats::add(&self.stats.bad_replicas_seen, repairs.len() as u64);
            self.repair.submit(repairs, &self.stats);
        }
        Ok(out)
    }
}
