//! Block I/O against the replicas, through [`fan_out`]: counting
//! acknowledgements and answers, retrying, verifying and queueing repairs.
//!
//! - [`BlockIo::write`]: the blocks of a batch are packed once per replica
//!   set (the blocks whose first replica is the same slot), and that one
//!   buffer goes to every replica of the set; returns once every block has W
//!   durable copies. While fewer than W replicas of a block can take it, the
//!   write **blocks and retries** with capped backoff (visible in
//!   [`Stats::blocked_now`]); dropping the future interrupts it.
//! - [`BlockIo::read`]: asks replicas in placement order until Q answered and a
//!   valid copy is in hand, verifying every copy's SHA-256 here (the one
//!   check on the read path); the highest generation wins; missing, stale and
//!   corrupt replicas are repaired in the background, never served, and
//!   damaged copies are reported to the datanode that holds them.

use std::collections::BTreeMap;
use std::ops::{ControlFlow, Range};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use bytes::Bytes;
use tessera_datanode::api::CallError;
use tessera_datanode::wire::put_segment;
use tessera_datanode::{BLOCK_SIZE, Block, BlockKey, BlockWrite, GetResult, PutResult};
use tessera_datanode::{DatanodeClient, DatanodeError};
use tessera_meta::{ObjectRef, RepairRange};
use tokio::sync::Semaphore;
use tokio::task::JoinHandle;

use crate::error::{Error, Result};
use crate::fanout::fan_out;
use crate::placement;
use crate::quorum::{QuorumFailure, ReadState, Seen, WriteTally};
use crate::repair::{MissedLog, RepairJob, RepairQueue};
use crate::ring::RingCache;
use crate::stats::{BlockedGuard, Stats};

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
            // A blocked write resumes within this of its node returning.
            max: Duration::from_millis(500),
        }
    }
}

#[derive(Clone)]
pub struct BlockIo {
    pub(crate) ring: Arc<RingCache>,
    pub(crate) stats: Arc<Stats>,
    pub(crate) repair: RepairQueue,
    /// Replicas that missed acknowledged writes, on their way to meta.
    pub(crate) missed: MissedLog,
    pub(crate) retry: RetryPolicy,
    /// How long a read waits for a replica before asking the next one too.
    pub(crate) hedge_after: Duration,
    /// Budget (KiB) for the data of puts left running after a write was
    /// acknowledged (to replicas slower than the first W).
    pub(crate) detached: Arc<Semaphore>,
}

/// Most data held by puts still running after their write was acknowledged.
pub const DETACHED_PUT_BYTES: usize = 256 << 20;

/// The blocks of a write whose first replica is one slot, packed once.
struct ReplicaSet {
    /// The slot of the first replica; replica `k` is on `(first + k) mod width`.
    first: u32,
    /// Positions of its blocks in the write.
    blocks: Vec<usize>,
    segment: Bytes,
}

/// Packs `blocks` (indices `first..` of `object`) into one segment per replica set.
fn replica_sets(object: &ObjectRef, first: u64, blocks: &[Block]) -> Vec<ReplicaSet> {
    let mut by_first: BTreeMap<u32, Vec<usize>> = BTreeMap::new();
    for i in 0..blocks.len() {
        by_first
            .entry(placement::slot(object, first + i as u64, 0))
            .or_default()
            .push(i);
    }
    by_first
        .into_iter()
        .map(|(slot, members)| ReplicaSet {
            first: slot,
            segment: put_segment(
                object.id,
                members.iter().map(|&i| (first + i as u64, &blocks[i])),
            ),
            blocks: members,
        })
        .collect()
}

impl BlockIo {
    /// Writes `blocks` as indices `first..` of `object`; returns when each has
    /// W durable copies, blocking while that is impossible.
    pub async fn write(&self, object: &ObjectRef, first: u64, blocks: Vec<Block>) -> Result<()> {
        let n = blocks.len();
        if n == 0 {
            return Ok(());
        }
        let o = *object;
        let bytes = n * BLOCK_SIZE;
        let data_bytes: u64 = blocks.iter().map(|b| b.data.len() as u64).sum();
        let sets =
            Arc::new(tessera_rpc::compute(bytes, move || replica_sets(&o, first, &blocks)).await);
        let mut view = self.ring.get();
        let (r, w) = (
            view.settings.replicas.min(object.width),
            view.settings.write_quorum,
        );
        let width = object.width.max(1);
        let mut tally = WriteTally::new(n, w);
        // Per block, the replicas that stored it, as bits: set by the puts
        // themselves, so those still running when the write is acknowledged
        // record their outcome too (see `BlockIo::record_misses`).
        let stored = Arc::new(std::sync::Mutex::new(vec![0u64; n]));
        let mut running: Vec<JoinHandle<()>> = Vec::new();
        let mut backoff = self.retry.first;
        let mut blocked: Option<BlockedGuard> = None;
        let mut round = 0u32;
        // Slots that answered "full": not asked again by this write.
        let mut full: BTreeMap<u32, String> = BTreeMap::new();
        loop {
            // Per slot, the replica sets it holds whose blocks it has not
            // acknowledged yet (first round: all of them), each with its
            // replica number there.
            let mut targets: BTreeMap<u32, Vec<(usize, u32)>> = BTreeMap::new();
            for (si, set) in sets.iter().enumerate() {
                for k in 0..r {
                    let wanted = set
                        .blocks
                        .iter()
                        .any(|&i| tally.is_short(i) && !tally.has(i, k));
                    let slot = (set.first + k) % width;
                    if (round == 0 || wanted) && !full.contains_key(&slot) {
                        targets.entry(slot).or_default().push((si, k));
                    }
                }
            }
            let mut failures = Vec::new();
            let mut gone = false;
            let detached = fan_out(
                &self.ring,
                &view,
                targets,
                |client, members| {
                    let (client, sets, stored) = (client.clone(), sets.clone(), stored.clone());
                    let segments: Vec<Bytes> = members
                        .iter()
                        .map(|&(si, _)| sets[si].segment.clone())
                        .collect();
                    let roles: Vec<u8> = members.iter().map(|&(_, k)| k as u8).collect();
                    let count = members.iter().map(|&(si, _)| sets[si].blocks.len()).sum();
                    let members = members.clone();
                    async move {
                        let r = client.put(segments, roles, count).await;
                        if let Ok(results) = &r {
                            let mut stored = stored.lock().unwrap_or_else(|e| e.into_inner());
                            let mut results = results.iter();
                            for (si, k) in members {
                                for &i in &sets[si].blocks {
                                    if let Some(PutResult::Stored | PutResult::Newer(_)) =
                                        results.next()
                                    {
                                        stored[i] |= 1 << k;
                                    }
                                }
                            }
                        }
                        match r {
                            Err(CallError::Datanode(DatanodeError::Full(m))) => Ok(Err(m)),
                            r => r.map(Ok),
                        }
                    }
                },
                |slot, members, result| {
                    match result {
                        Ok(Err(why)) => {
                            full.insert(slot, format!("{} is full: {why}", view.describe(slot)));
                        }
                        Ok(Ok(results)) => {
                            let mut results = results.into_iter();
                            for (si, k) in members {
                                for &i in &sets[si].blocks {
                                    match results.next() {
                                        Some(PutResult::Stored | PutResult::Newer(_)) => {
                                            tally.ack(i, k)
                                        }
                                        Some(PutResult::Gone) => gone = true,
                                        Some(PutResult::Damaged) | None => failures.push(format!(
                                            "{}: block {} damaged in transfer",
                                            view.describe(slot),
                                            first + i as u64
                                        )),
                                    }
                                }
                            }
                        }
                        Err(e) => failures.push(e),
                    }
                    if gone || tally.complete() {
                        ControlFlow::Break(())
                    } else {
                        ControlFlow::Continue(())
                    }
                },
            )
            .await;
            for d in detached {
                let bytes = d
                    .context
                    .iter()
                    .map(|&(si, _)| sets[si].segment.len())
                    .sum();
                running.extend(self.detach(object.id, d.slot, bytes, d.task));
            }
            if gone {
                return Err(Error::Conflict(format!(
                    "object {} (deleted while being written)",
                    object.id
                )));
            }
            if tally.complete() {
                if blocked.is_some() {
                    tracing::info!(
                        object = object.id,
                        rounds = round,
                        "blocked write completed"
                    );
                }
                self.record_misses(object, first, r, &sets, stored, running);
                Stats::add(&self.stats.written_blocks, n as u64);
                Stats::add(&self.stats.written_bytes, data_bytes);
                return Ok(());
            }
            // A full node will not take its blocks by waiting: if some block
            // cannot reach W without the full ones, the write fails now.
            if !full.is_empty() {
                let stuck = sets.iter().any(|s| {
                    let usable = (0..r)
                        .filter(|k| !full.contains_key(&((s.first + k) % width)))
                        .count() as u32;
                    usable < w && s.blocks.iter().any(|&i| tally.is_short(i))
                });
                if stuck {
                    return Err(Error::NoSpace(format!(
                        "object {}: {}",
                        object.id,
                        full.values().cloned().collect::<Vec<_>>().join("; ")
                    )));
                }
            }
            if blocked.is_none() {
                blocked = Some(BlockedGuard::new(&self.stats));
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

    /// A put to a replica slower than the first W still runs after its
    /// write was acknowledged, holding its data. Within the budget it may
    /// finish; past it, it is cancelled and that replica misses those
    /// blocks (read repair restores them), so a slow-but-alive node cannot
    /// make the gateway hold unbounded memory.
    /// Returns the task that ends when the put does, unless it was cancelled.
    fn detach(
        &self,
        object: u64,
        slot: u32,
        bytes: usize,
        task: JoinHandle<()>,
    ) -> Option<JoinHandle<()>> {
        let kib = bytes.div_ceil(1024).min(u32::MAX as usize) as u32;
        match self.detached.clone().try_acquire_many_owned(kib) {
            Ok(permit) => {
                Stats::add(&self.stats.detached_bytes, bytes as u64);
                let stats = self.stats.clone();
                Some(tokio::spawn(async move {
                    let _ = task.await;
                    stats
                        .detached_bytes
                        .fetch_sub(bytes as u64, Ordering::Relaxed);
                    drop(permit);
                }))
            }
            Err(_) => {
                task.abort();
                Stats::add(&self.stats.detached_dropped, bytes as u64);
                tracing::warn!(
                    object,
                    slot,
                    bytes,
                    "a slow replica's put was cancelled: too much data is waiting on slow replicas"
                );
                None
            }
        }
    }

    /// A write was acknowledged (every block on W replicas): once the puts
    /// still `running` end, the replicas that did not store their blocks
    /// (down, failed, cancelled) go to meta's repair queue, one range per
    /// slot, so those datanodes copy them from the others when they can.
    fn record_misses(
        &self,
        object: &ObjectRef,
        first: u64,
        r: u32,
        sets: &Arc<Vec<ReplicaSet>>,
        stored: Arc<std::sync::Mutex<Vec<u64>>>,
        running: Vec<JoinHandle<()>>,
    ) {
        let all = (1u64 << r) - 1;
        let complete = || {
            let stored = stored.lock().unwrap_or_else(|e| e.into_inner());
            stored.iter().all(|m| m & all == all)
        };
        if running.is_empty() && complete() {
            return;
        }
        let (object, sets, missed) = (*object, sets.clone(), self.missed.clone());
        let width = object.width.max(1);
        tokio::spawn(async move {
            for t in running {
                let _ = t.await;
            }
            let stored = stored.lock().unwrap_or_else(|e| e.into_inner()).clone();
            // Per slot, the lowest and highest block it missed.
            let mut per_slot: BTreeMap<u32, (u64, u64)> = BTreeMap::new();
            for set in sets.iter() {
                for k in 0..r {
                    let slot = (set.first + k) % width;
                    for &i in &set.blocks {
                        if stored[i] & (1 << k) == 0 {
                            let index = first + i as u64;
                            let e = per_slot.entry(slot).or_insert((index, index));
                            e.0 = e.0.min(index);
                            e.1 = e.1.max(index);
                        }
                    }
                }
            }
            for (slot, (lo, hi)) in per_slot {
                missed.record(RepairRange {
                    slot,
                    object,
                    first: lo,
                    end: hi + 1,
                });
            }
        });
    }

    /// Reads blocks `range` of `object`. `None` is a hole (never written).
    pub async fn read(&self, object: &ObjectRef, range: Range<u64>) -> Result<Vec<Option<Block>>> {
        let n = (range.end - range.start) as usize;
        if n == 0 || object.is_none() {
            return Ok(vec![None; n]);
        }
        let mut view = self.ring.get();
        let r = view.settings.replicas.min(object.width);
        let q = view.settings.read_quorum.min(r);
        let mut states: Vec<ReadState> = (0..n).map(|_| ReadState::default()).collect();
        let mut refreshed = false;
        loop {
            // Per slot and replica role, the blocks to ask for.
            let mut targets: BTreeMap<(u32, u32), Vec<usize>> = BTreeMap::new();
            for (i, st) in states.iter_mut().enumerate() {
                if st.done {
                    continue;
                }
                let next = if st.has_copy(q) || st.is_hole(q, r) {
                    Vec::new()
                } else {
                    st.next_replicas(q, r)
                };
                if next.is_empty() {
                    st.done = true;
                    continue;
                }
                for k in next {
                    st.tried |= 1 << k;
                    let slot = placement::slot(object, range.start + i as u64, k);
                    targets.entry((slot, k)).or_default().push(i);
                }
            }
            if targets.is_empty() {
                // Replicas that could not be reached may have moved (a
                // restarted datanode listens on a new port): fetch the ring
                // once and ask them again where they are now.
                if refreshed || !states.iter().any(|s| s.unreachable != 0) {
                    break;
                }
                refreshed = true;
                let fresh = self.ring.refresh().await;
                if Arc::ptr_eq(&fresh, &view) {
                    break;
                }
                view = fresh;
                let mut again = false;
                for st in &mut states {
                    again |= st.retry_unreachable(q, r);
                }
                if !again {
                    break;
                }
                continue;
            }
            // A group asked of replica `k` can be hedged to a replica none
            // of its blocks asked yet: the blocks of a group share their
            // first slot, so that replica is on one slot for all of them.
            let hedge_after = self.hedge_after;
            let width = object.width.max(1);
            let calls: Vec<(u32, ReadGroup)> = targets
                .into_iter()
                .map(|((slot, k), items)| {
                    let tried = items.iter().fold(0u64, |t, &i| t | states[i].tried);
                    let hedge = (0..r).find(|j| tried & (1 << j) == 0).map(|j| {
                        let first = (slot + width - k % width) % width;
                        (j, (first + j) % width)
                    });
                    (slot, (k, items, hedge))
                })
                .collect();
            let mut damaged: Vec<(u32, Vec<u64>)> = Vec::new();
            fan_out(
                &self.ring,
                &view,
                calls,
                |client, (k, items, hedge)| {
                    let indices: Vec<u64> = items.iter().map(|&i| range.start + i as u64).collect();
                    let primary = fetch(client.clone(), object.id, *k, indices.clone());
                    let k = *k;
                    let second = hedge.and_then(|(j, s)| Some((j, view.usable(s).ok()?.clone())));
                    let stats = self.stats.clone();
                    let id = object.id;
                    async move {
                        let Some((j, second)) = second else {
                            return primary.await.map(|r| (k, r));
                        };
                        tokio::pin!(primary);
                        tokio::select! {
                            r = &mut primary => return r.map(|r| (k, r)),
                            _ = tokio::time::sleep(hedge_after) => {}
                        }
                        // The replica is slow (hung, overloaded): ask the next
                        // one too and take the first good answer.
                        Stats::add(&stats.hedged_reads, 1);
                        let secondary = fetch(second, id, j, indices);
                        tokio::pin!(secondary);
                        tokio::select! {
                            r = &mut primary => match r {
                                Ok(r) => Ok((k, r)),
                                Err(e) => secondary.await.map(|r| (j, r)).map_err(|_| e),
                            },
                            r = &mut secondary => match r {
                                Ok(r) => Ok((j, r)),
                                Err(_) => primary.await.map(|r| (k, r)),
                            },
                        }
                    }
                },
                |slot, (k, items, _), result| {
                    match result {
                        Ok((used, results)) => {
                            let mut bad = Vec::new();
                            for (&i, (got, ok)) in items.iter().zip(results) {
                                let st = &mut states[i];
                                if used != k {
                                    // The slow replica may still be asked
                                    // again if the read needs it.
                                    st.tried |= 1 << used;
                                    st.unreachable |= 1 << k;
                                }
                                let (seen, block) = match got {
                                    GetResult::Found(_) if !ok => {
                                        bad.push(range.start + i as u64);
                                        (Seen::Corrupt, None)
                                    }
                                    GetResult::Found(b) => (Seen::Valid(b.generation), Some(b)),
                                    GetResult::Missing => (Seen::Missing, None),
                                    GetResult::Gone => (Seen::Gone, None),
                                    GetResult::Corrupt => (Seen::Corrupt, None),
                                };
                                if seen == Seen::Corrupt {
                                    Stats::add(&self.stats.corrupt_seen, 1);
                                }
                                let at = (slot + width - k % width + used) % width;
                                if seen == Seen::Missing && view.rebuilding(at) {
                                    st.missing_unsure(used);
                                } else {
                                    st.answer(used, seen, block);
                                }
                            }
                            if !bad.is_empty() {
                                let at = (slot + width - k % width + used) % width;
                                damaged.push((at, bad));
                            }
                        }
                        Err(e) => {
                            for &i in &items {
                                states[i].failures.push(e.clone());
                                states[i].unreachable |= 1 << k;
                            }
                        }
                    }
                    ControlFlow::Continue(())
                },
            )
            .await;
            self.report_damaged(object.id, damaged);
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
                if st.answers + st.corrupt < q {
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
                    detail: format!(
                        "{} replicas answered, none with a valid copy",
                        st.answers + st.corrupt
                    ),
                });
            }
            for k in st.stale_replicas() {
                if let Some(best) = &st.best {
                    repairs.push(RepairJob {
                        slot: placement::slot(object, index, k),
                        write: BlockWrite {
                            key: BlockKey {
                                object: object.id,
                                index,
                            },
                            role: k as u8,
                            block: best.clone(),
                        },
                    });
                }
            }
            out.push(st.best);
        }
        if !repairs.is_empty() {
            Stats::add(&self.stats.bad_replicas_seen, repairs.len() as u64);
            self.repair.submit(repairs, &self.stats);
        }
        Stats::add(&self.stats.read_blocks, n as u64);
        let bytes = out.iter().flatten().map(|b| b.data.len() as u64).sum();
        Stats::add(&self.stats.read_bytes, bytes);
        Ok(out)
    }

    /// The bytes `[offset, end)` of blocks `range` of `object` (a file of
    /// `size` bytes), when one answer is a quorum (Q=1) and the first
    /// replica of every block answers within `hedge_after` with a valid
    /// copy: one call per slot and the bytes copied straight out of the
    /// answers, with no state per block (a sequential read moves two
    /// million blocks a GiB). `None` for anything else (a node down, slow,
    /// a block missing, corrupt, the object gone): the caller then reads
    /// through [`BlockIo::read`], which settles it.
    pub async fn read_found(
        &self,
        object: &ObjectRef,
        range: Range<u64>,
        offset: u64,
        end: u64,
        size: u64,
    ) -> Option<Vec<u8>> {
        let view = self.ring.get();
        let r = view.settings.replicas.min(object.width);
        if view.settings.read_quorum.min(r) != 1 || object.is_none() || range.is_empty() {
            return None;
        }
        let (id, width) = (object.id, object.width.max(1) as u64);
        let range_len = range.end - range.start;
        // Blocks first, first + width, ... share their first replica's slot.
        // A first replica meta reports down declines at once: the block by
        // block read goes to the next replicas without asking it.
        let firsts = range.start..range.end.min(range.start + width);
        let clients: Option<Vec<DatanodeClient>> = firsts
            .clone()
            .map(|first| view.usable(placement::slot(object, first, 0)).ok().cloned())
            .collect();
        let Some(clients) = clients else {
            Stats::add(&self.stats.direct_reads_declined, 1);
            return None;
        };
        let calls = firsts.zip(clients).map(|(first, client)| {
            let indices: Vec<u64> = (first..range.end).step_by(width as usize).collect();
            async move {
                let n = indices.len();
                let payload = client.get_raw(id, 0, indices).await.ok()?;
                Some((n, payload))
            }
        });
        let answers = tokio::time::timeout(self.hedge_after, futures::future::join_all(calls));
        let answers = answers
            .await
            .ok()
            .and_then(|a| a.into_iter().collect::<Option<Vec<_>>>());
        let Some(answers) = answers else {
            Stats::add(&self.stats.direct_reads_declined, 1);
            return None;
        };
        let bytes = answers.iter().map(|(_, p)| p.len()).sum();
        let out = tessera_rpc::compute(bytes, move || {
            let mut found = Vec::with_capacity(answers.len());
            for (n, payload) in &answers {
                let at = tessera_datanode::wire::found_all(*n, payload)?;
                let digests =
                    tessera_datanode::sha::digest_all(at.iter().map(|f| &payload[f.data.clone()]));
                if digests.iter().zip(&at).any(|(d, f)| *d != f.sha256) {
                    return None;
                }
                found.push(at);
            }
            let mut out = Vec::with_capacity(end.saturating_sub(offset) as usize);
            let w = width as usize;
            for (pos, index) in range.enumerate() {
                let (payload, at) = (&answers[pos % w].1, &found[pos % w][pos / w]);
                let data = Some(&payload[at.data.clone()]);
                crate::engine::append_data(&mut out, index, data, offset, end, size);
            }
            Some(out)
        })
        .await;
        let counter = match &out {
            Some(data) => {
                Stats::add(&self.stats.read_blocks, range_len);
                Stats::add(&self.stats.read_bytes, data.len() as u64);
                &self.stats.direct_reads
            }
            None => &self.stats.direct_reads_declined,
        };
        Stats::add(counter, 1);
        out
    }

    /// Tells each datanode which of its copies failed their SHA-256 here
    /// (in the background; the repair is queued by the read itself).
    fn report_damaged(&self, object: u64, damaged: Vec<(u32, Vec<u64>)>) {
        if damaged.is_empty() {
            return;
        }
        let view = self.ring.get();
        for (slot, indices) in damaged {
            tracing::warn!(
                object,
                slot,
                blocks = indices.len(),
                "copies failed their SHA-256 check"
            );
            if let Some(client) = view.node(slot).cloned() {
                tokio::spawn(async move {
                    if let Err(e) = client.report_corrupt(object, indices).await {
                        tracing::debug!(error = %e, "could not report damaged copies");
                    }
                });
            }
        }
    }
}

/// One call of a read: replica `k`, the blocks' positions in the read, and
/// the replica and slot to hedge to, if any.
type ReadGroup = (u32, Vec<usize>, Option<(u32, u32)>);

/// Asks one replica for blocks and checks their SHA-256 (the one check of
/// the read path; off the runtime unless it is a few blocks). Each result
/// comes with whether its bytes match.
async fn fetch(
    client: tessera_datanode::DatanodeClient,
    object: u64,
    k: u32,
    indices: Vec<u64>,
) -> std::result::Result<Vec<(GetResult, bool)>, tessera_datanode::api::CallError> {
    let results = client.get(object, k as u8, indices).await?;
    let bytes = results.len() * BLOCK_SIZE;
    Ok(tessera_rpc::compute(bytes, move || {
        let found = results.iter().filter_map(|r| match r {
            GetResult::Found(b) => Some(&b.data[..]),
            _ => None,
        });
        let found: Vec<&[u8]> = found.collect();
        let mut digests = tessera_datanode::sha::digest_all(found).into_iter();
        let checks: Vec<bool> = results
            .iter()
            .map(|r| match r {
                GetResult::Found(b) => {
                    let digest = digests.next();
                    b.data.len() <= BLOCK_SIZE && digest == Some(b.sha256)
                }
                _ => true,
            })
            .collect();
        results.into_iter().zip(checks).collect::<Vec<_>>()
    })
    .await)
}
