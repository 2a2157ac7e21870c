//! Self-healing, run by each datanode for its own slot: copying the blocks
//! placement assigns to the slot from the other replicas.
//!
//! - **Repair queue**: ranges meta holds for this slot (replicas that missed
//!   writes acknowledged at W < R) are compared with the other replicas and
//!   copied where this node's copy is missing or older; done ranges leave
//!   the queue.
//! - **Rebuild**: a node that lost its storage and took its slot back walks
//!   every object files hold (meta's list) and copies its share, several
//!   large batches at a time, while it serves; `status` shows it
//!   `rebuilding` with progress until it is done. A note in its data
//!   directory makes a restarted node resume.
//! - **Scrub**: passes over the same list read every local copy and check
//!   its SHA-256; damaged and missing copies are fetched from the other
//!   replicas. Background passes go at a set rate; `tessera scrub` asks
//!   every node for a full-speed pass now.
//!
//! A copy is taken only from enough other replicas to be sure it is the
//! newest acknowledged one (`R - W + 1` of them, as a read quorum over the
//! replicas this node cannot vouch for), and only if its bytes match its
//! SHA-256; a block no one else answers for stays queued.

use std::collections::BTreeMap;
use std::ops::Range;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tessera_meta::{
    HealReport, LiveObject, MetaClient, ObjectRef, Progress, RepairEntry, ScrubCounts, Settings,
};
use tessera_rpc::Transport;
use tokio::sync::watch;
use tokio::task::JoinSet;

use crate::api::{DATANODE_TIMEOUT, DatanodeClient};
use crate::block::{BLOCK_SIZE, Block, GetResult, PutResult};
use crate::store::BlockStore;
use crate::wire::PutItem;

/// Blocks of an object handled in one step (8 MiB of the file; a node holds
/// R/N of them, asked for in one call per replica).
const STEP: u64 = 16_384;
/// Steps in flight at once during a rebuild or a requested scrub.
const PARALLEL: usize = 4;
/// Objects asked of meta at once.
const PAGE: u32 = 2_000;
/// Queued repairs taken at once.
const REPAIRS: u32 = 256;
/// The note a rebuilding node keeps in its data directory.
pub const REBUILDING: &str = "rebuilding";

/// What a healing pass does with the copies this node holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Check {
    /// Compare every block with the other replicas (repairs, rebuild).
    Compare,
    /// Verify local copies; ask the others only for damaged or missing ones
    /// (scrub).
    Verify,
}

/// How a datanode heals itself.
#[derive(Debug, Clone, Copy)]
pub struct HealOptions {
    /// Background scrub rate, bytes of local copies read per second (0: no
    /// background scrub; `tessera scrub` still runs one).
    pub scrub_rate: u64,
    /// Pause between background scrub passes.
    pub scrub_pause: Duration,
}

impl Default for HealOptions {
    fn default() -> Self {
        HealOptions {
            scrub_rate: 4 << 20,
            scrub_pause: Duration::from_secs(3600),
        }
    }
}

/// The other replicas, as this node sees them now.
struct Peers {
    settings: Settings,
    /// By slot; `None` for this node's own slot, an empty one, or one meta
    /// reports down.
    clients: Vec<Option<DatanodeClient>>,
}

/// Blocks of an object to heal, and how often they could not be settled.
type Step = (ObjectRef, Range<u64>, u32);

/// What healing one range did.
#[derive(Debug, Default, Clone, Copy)]
struct Healed {
    counts: ScrubCounts,
    /// Bytes copied in.
    bytes: u64,
    /// Blocks of this node's share in the range.
    blocks: u64,
    /// Some blocks could not be settled (too few replicas answered).
    unsettled: bool,
}

/// What the heartbeat tells the healer: work waiting in meta.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Wake {
    pub repairs: u64,
    pub scrub: u64,
}

#[derive(Clone)]
pub struct Healer {
    store: BlockStore,
    meta: MetaClient,
    transport: Transport,
    slot: u32,
    options: HealOptions,
    report: Arc<Mutex<HealReport>>,
}

impl Healer {
    pub fn new(
        store: BlockStore,
        meta: MetaClient,
        transport: Transport,
        slot: u32,
        options: HealOptions,
        report: Arc<Mutex<HealReport>>,
    ) -> Healer {
        Healer {
            store,
            meta,
            transport,
            slot,
            options,
            report,
        }
    }

    fn update(&self, f: impl FnOnce(&mut HealReport)) {
        f(&mut self.report.lock().unwrap_or_else(|e| e.into_inner()));
    }

    /// Rebuilds first if the node is rebuilding, then works the repair
    /// queue and scrubs, as `wake` says, until `stop` turns true.
    pub async fn run(
        self: Arc<Self>,
        mut wake: watch::Receiver<Wake>,
        stop: watch::Receiver<bool>,
    ) {
        let stopped = {
            let mut stop = stop.clone();
            async move {
                let _ = stop.wait_for(|&s| s).await;
            }
        };
        tokio::pin!(stopped);
        match self.store.note(REBUILDING).await {
            Ok(Some(_)) => {
                tokio::select! {
                    _ = self.rebuild() => {}
                    _ = &mut stopped => return,
                }
            }
            Ok(None) => {}
            Err(e) => tracing::error!(error = %e, "cannot read whether the node is rebuilding"),
        }
        let mut scrubbed = self
            .report
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .scrub_pass;
        let mut next_background =
            Instant::now() + self.options.scrub_pause.min(Duration::from_secs(60));
        loop {
            let now = *wake.borrow_and_update();
            if now.repairs > 0 {
                tokio::select! {
                    _ = self.work_repairs() => {}
                    _ = &mut stopped => return,
                }
            }
            if now.scrub > scrubbed {
                tokio::select! {
                    _ = self.scrub(now.scrub, 0) => {}
                    _ = &mut stopped => return,
                }
                scrubbed = now.scrub;
                next_background = Instant::now() + self.options.scrub_pause;
                continue;
            }
            if self.options.scrub_rate > 0 && Instant::now() >= next_background {
                // A background pass gives way to a requested one (it
                // starts over at full speed) and to repairs between steps.
                let wanted = wake.clone();
                let interrupted = async move {
                    let mut w = wanted;
                    let _ = w.wait_for(|w| w.scrub > scrubbed || w.repairs > 0).await;
                };
                tokio::select! {
                    _ = self.scrub(scrubbed, self.options.scrub_rate) => {
                        next_background = Instant::now() + self.options.scrub_pause;
                    }
                    _ = interrupted => {}
                    _ = &mut stopped => return,
                }
                continue;
            }
            let until = tokio::time::Instant::from_std(next_background);
            tokio::select! {
                r = wake.changed() => if r.is_err() { return },
                _ = tokio::time::sleep_until(until), if self.options.scrub_rate > 0 => {}
                _ = &mut stopped => return,
            }
        }
    }

    async fn peers(&self) -> Result<Peers, String> {
        let ring = self.meta.ring().await.map_err(|e| e.to_string())?;
        let len = ring.width() as usize;
        let mut clients = vec![None; len];
        for s in &ring.slots {
            if s.slot != self.slot && !ring.down.contains(&s.slot) {
                clients[s.slot as usize] = Some(DatanodeClient::new(
                    &self.transport,
                    &s.addr,
                    DATANODE_TIMEOUT,
                ));
            }
        }
        Ok(Peers {
            settings: ring.settings,
            clients,
        })
    }

    /// Every object files hold, from meta.
    async fn objects(&self) -> Result<Vec<LiveObject>, String> {
        let mut out = Vec::new();
        let mut after = 0;
        loop {
            let page = self
                .meta
                .objects(after, PAGE)
                .await
                .map_err(|e| e.to_string())?;
            let Some(last) = page.last() else {
                return Ok(out);
            };
            after = last.ino;
            let full = page.len() as u32 == PAGE;
            out.extend(page);
            if !full {
                return Ok(out);
            }
        }
    }

    /// Copies the queued repairs of this slot, until the queue is empty or
    /// what is left cannot be settled now.
    async fn work_repairs(&self) {
        loop {
            let entries = match self.meta.repairs(Some(self.slot), REPAIRS).await {
                Ok(e) => e,
                Err(e) => {
                    tracing::debug!(error = %e, "cannot read the repair queue");
                    return;
                }
            };
            if entries.is_empty() {
                return;
            }
            let peers = match self.peers().await {
                Ok(p) => Arc::new(p),
                Err(e) => {
                    tracing::debug!(error = %e, "cannot read the ring");
                    return;
                }
            };
            let started = Instant::now();
            let mut done: Vec<RepairEntry> = Vec::new();
            let (mut copied, mut bytes, mut blocks) = (0, 0, 0);
            for e in &entries {
                let mut settled = true;
                let mut at = e.range.first;
                while at < e.range.end {
                    let end = e.range.end.min(at + STEP);
                    let h = self
                        .heal(&peers, e.range.object, at..end, Check::Compare)
                        .await;
                    settled &= !h.unsettled;
                    copied += h.counts.repaired;
                    bytes += h.bytes;
                    blocks += h.blocks;
                    at = end;
                }
                if settled {
                    done.push(*e);
                }
            }
            self.update(|r| r.repaired += copied);
            let finished = done.len();
            if !done.is_empty()
                && let Err(e) = self.meta.repair_done(done).await
            {
                tracing::warn!(error = %e, "cannot mark repairs done");
                return;
            }
            tracing::info!(
                ranges = finished,
                blocks,
                copied,
                bytes,
                ms = started.elapsed().as_millis() as u64,
                "repaired replicas from the repair queue"
            );
            if finished < entries.len() {
                // The rest waits for replicas to come back.
                return;
            }
        }
    }

    /// Copies every block placement assigns to this slot from the other
    /// replicas, then clears the rebuilding note.
    async fn rebuild(&self) {
        let started = Instant::now();
        self.update(|r| r.rebuild = Some(Progress::default()));
        tracing::info!(
            slot = self.slot,
            "rebuild started: copying this slot's blocks from the other replicas"
        );
        let healed = self
            .pass(Check::Compare, 0, |r, p| r.rebuild = Some(p))
            .await;
        let secs = started.elapsed().as_secs_f64().max(1e-3);
        tracing::info!(
            slot = self.slot,
            blocks = healed.blocks,
            copied = healed.counts.repaired,
            bytes = healed.bytes,
            seconds = format!("{secs:.1}"),
            mb_per_s = format!("{:.1}", healed.bytes as f64 / secs / 1e6),
            "rebuild done"
        );
        if let Err(e) = self.store.set_note(REBUILDING, None).await {
            tracing::error!(error = %e, "cannot clear the rebuilding note");
        }
        self.update(|r| {
            r.rebuild = None;
            r.repaired += healed.counts.repaired;
        });
    }

    /// One scrub pass, numbered `pass`, at `rate` bytes of local copies a
    /// second (0: as fast as it goes).
    async fn scrub(&self, pass: u64, rate: u64) {
        let started = Instant::now();
        self.update(|r| r.scrubbing = Some(Progress::default()));
        let healed = self
            .pass(Check::Verify, rate, |r, p| r.scrubbing = Some(p))
            .await;
        let c = healed.counts;
        let secs = started.elapsed().as_secs_f64().max(1e-3);
        let line = format!(
            "scrub pass done: {} blocks checked, {} corrupt, {} missing, {} repaired",
            c.checked, c.corrupt, c.missing, c.repaired
        );
        if c.corrupt + c.missing > 0 {
            tracing::warn!(
                slot = self.slot,
                pass,
                blocks_per_s = (c.checked as f64 / secs) as u64,
                "{line}"
            );
        } else {
            tracing::info!(
                slot = self.slot,
                pass,
                blocks_per_s = (c.checked as f64 / secs) as u64,
                "{line}"
            );
        }
        self.update(|r| {
            r.scrubbing = None;
            r.scrub_pass = pass;
            r.scrub = c;
            r.scrub_total.add(&c);
            r.repaired += c.repaired;
        });
    }

    /// Heals this slot's share of every live object; `show` publishes the
    /// progress. Steps that cannot be settled are retried until they are.
    async fn pass(
        &self,
        check: Check,
        rate: u64,
        show: impl Fn(&mut HealReport, Progress),
    ) -> Healed {
        let started = Instant::now();
        let objects = loop {
            match self.objects().await {
                Ok(o) => break o,
                Err(e) => {
                    tracing::warn!(error = %e, "cannot list the objects to heal; retrying");
                    tokio::time::sleep(Duration::from_secs(1)).await;
                }
            }
        };
        let mut peers = loop {
            match self.peers().await {
                Ok(p) => break Arc::new(p),
                Err(e) => {
                    tracing::warn!(error = %e, "cannot read the ring; retrying");
                    tokio::time::sleep(Duration::from_secs(1)).await;
                }
            }
        };
        let r = peers.settings.replicas;
        let mut steps: Vec<(ObjectRef, Range<u64>)> = Vec::new();
        let mut total = 0;
        for o in &objects {
            let mut at = 0;
            while at < o.blocks {
                let end = o.blocks.min(at + STEP);
                let n = o.object.blocks_on(self.slot, at..end, r);
                if n > 0 {
                    steps.push((o.object, at..end));
                    total += n;
                }
                at = end;
            }
        }
        let mut progress = Progress {
            total,
            ..Progress::default()
        };
        self.update(|h| show(h, progress));
        let parallel = if rate > 0 { 1 } else { PARALLEL };
        let mut sum = Healed::default();
        // Each step with the times it could not be settled.
        let mut queue: std::collections::VecDeque<Step> =
            steps.into_iter().map(|(o, r)| (o, r, 0)).collect();
        let mut running: JoinSet<(Step, Healed)> = JoinSet::new();
        let mut read = 0u64;
        while !queue.is_empty() || !running.is_empty() {
            while running.len() < parallel
                && let Some((object, range, tries)) = queue.pop_front()
            {
                let (me, peers) = (self.clone(), peers.clone());
                running.spawn(async move {
                    let h = me.heal(&peers, object, range.clone(), check).await;
                    ((object, range, tries), h)
                });
            }
            let Some(joined) = running.join_next().await else {
                break;
            };
            let Ok(((object, range, tries), h)) = joined else {
                continue;
            };
            // Too few replicas answered: a rebuild tries again until they
            // do (the node cannot vouch for what it lacks); a scrub gives
            // up on the step after a few tries and says so.
            if h.unsettled && (check == Check::Compare || tries < 3) {
                if tries % 20 == 19 {
                    tracing::warn!(object = object.id, blocks = ?range, "too few replicas answer to heal these blocks; still trying");
                }
                queue.push_back((object, range, tries + 1));
                tokio::time::sleep(Duration::from_millis(500)).await;
                if let Ok(p) = self.peers().await {
                    peers = Arc::new(p);
                }
                continue;
            }
            if h.unsettled {
                tracing::warn!(object = object.id, blocks = ?range, "scrub skipped blocks too few replicas answered for");
            }
            sum.counts.add(&h.counts);
            sum.bytes += h.bytes;
            sum.blocks += h.blocks;
            progress.done += h.blocks;
            progress.bytes += h.bytes;
            progress.elapsed_ms = started.elapsed().as_millis() as u64;
            self.update(|r| show(r, progress));
            if rate > 0 {
                read += h.counts.checked * BLOCK_SIZE as u64;
                let due = Duration::from_secs_f64(read as f64 / rate as f64);
                if let Some(wait) = due.checked_sub(started.elapsed()) {
                    tokio::time::sleep(wait).await;
                }
            }
        }
        sum
    }

    /// Heals this slot's share of blocks `range` of `object`.
    async fn heal(
        &self,
        peers: &Peers,
        object: ObjectRef,
        range: Range<u64>,
        check: Check,
    ) -> Healed {
        let r = peers.settings.replicas.min(object.width.max(1));
        let mut by_role: BTreeMap<u32, Vec<u64>> = BTreeMap::new();
        for i in range {
            if let Some(k) = object.role_on(self.slot, i, r) {
                by_role.entry(k).or_default().push(i);
            }
        }
        let mut healed = Healed::default();
        for (k, indices) in by_role {
            healed.blocks += indices.len() as u64;
            match self.heal_role(peers, object, k, indices, check).await {
                Ok(h) => {
                    healed.counts.add(&h.counts);
                    healed.bytes += h.bytes;
                    healed.unsettled |= h.unsettled;
                }
                Err(e) => {
                    tracing::debug!(object = object.id, error = %e, "healing step failed");
                    healed.unsettled = true;
                }
            }
        }
        healed
    }

    /// Heals blocks `indices` of `object`, held here as replica `k`.
    async fn heal_role(
        &self,
        peers: &Peers,
        object: ObjectRef,
        k: u32,
        indices: Vec<u64>,
        check: Check,
    ) -> Result<Healed, String> {
        let mut healed = Healed::default();
        let local = self
            .store
            .get(object.id, k as u8, indices.clone())
            .await
            .map_err(|e| e.to_string())?;
        let local = verify(local).await;
        if local.iter().any(|c| matches!(c, Copy::Gone)) {
            // Deleted: nothing to heal.
            return Ok(healed);
        }
        healed.counts.checked = local.iter().filter(|c| !matches!(c, Copy::Missing)).count() as u64;
        let damaged = local.iter().filter(|c| matches!(c, Copy::Damaged)).count() as u64;
        healed.counts.corrupt = damaged;
        if damaged > 0 {
            tracing::warn!(
                object = object.id,
                role = k,
                damaged,
                "copies on this node failed their SHA-256 check"
            );
        }
        let ask: Vec<usize> = match check {
            Check::Compare => (0..indices.len()).collect(),
            Check::Verify => (0..indices.len())
                .filter(|&p| matches!(local[p], Copy::Missing | Copy::Damaged))
                .collect(),
        };
        if ask.is_empty() {
            return Ok(healed);
        }
        let asked: Vec<u64> = ask.iter().map(|&p| indices[p]).collect();
        let (r, w) = (
            peers.settings.replicas.min(object.width.max(1)),
            peers.settings.write_quorum,
        );
        let width = object.width.max(1);
        // The other replicas of these blocks: replica j of each is on one
        // slot, since they share this node's role.
        let mut calls = JoinSet::new();
        for j in (0..r).filter(|&j| j != k) {
            let slot = ((self.slot + width - k) % width + j) % width;
            let Some(client) = peers.clients.get(slot as usize).cloned().flatten() else {
                continue;
            };
            let (id, asked) = (object.id, asked.clone());
            calls.spawn(async move {
                let got = client
                    .get(id, j as u8, asked)
                    .await
                    .map_err(|e| e.to_string());
                match got {
                    Ok(g) => Ok(verify(g).await),
                    Err(e) => Err(e),
                }
            });
        }
        let needed = (r.saturating_sub(w) + 1).clamp(1, r.saturating_sub(1).max(1));
        let mut answered = 0;
        let mut best: Vec<Option<Block>> = vec![None; asked.len()];
        while let Some(joined) = calls.join_next().await {
            let Ok(Ok(copies)) = joined else { continue };
            if copies.len() != asked.len() {
                continue;
            }
            if copies.iter().any(|c| matches!(c, Copy::Gone)) {
                return Ok(healed);
            }
            answered += 1;
            for (b, c) in best.iter_mut().zip(copies) {
                if let Copy::Valid(block) = c
                    && b.as_ref()
                        .is_none_or(|cur| cur.generation < block.generation)
                {
                    *b = Some(block);
                }
            }
        }
        if answered < needed {
            healed.unsettled = true;
            return Ok(healed);
        }
        let mut items = Vec::new();
        for (&p, b) in ask.iter().zip(best) {
            let Some(block) = b else { continue };
            let replace = match &local[p] {
                Copy::Valid(mine) => mine.generation < block.generation,
                Copy::Missing | Copy::Damaged => true,
                Copy::Gone => false,
            };
            if replace {
                if matches!(local[p], Copy::Missing | Copy::Valid(_)) {
                    healed.counts.missing += 1;
                }
                items.push(PutItem {
                    object: object.id,
                    role: k as u8,
                    index: indices[p],
                    block,
                });
            }
        }
        if items.is_empty() {
            return Ok(healed);
        }
        let bytes: u64 = items.iter().map(|i| i.block.data.len() as u64).sum();
        // Verified here already: stored with the checksums as they are.
        let results = self
            .store
            .put_unreceived(items)
            .await
            .map_err(|e| e.to_string())?;
        if results.iter().any(|r| matches!(r, PutResult::Gone)) {
            return Ok(healed);
        }
        healed.counts.repaired = results
            .iter()
            .filter(|r| matches!(r, PutResult::Stored))
            .count() as u64;
        healed.bytes = bytes;
        Ok(healed)
    }
}

/// One replica's copy of a block, checked.
enum Copy {
    Valid(Block),
    Missing,
    /// Failing its SHA-256, or a damaged record.
    Damaged,
    Gone,
}

/// Checks every found copy against its SHA-256 (off the runtime).
async fn verify(results: Vec<GetResult>) -> Vec<Copy> {
    let bytes = results.len() * BLOCK_SIZE;
    tessera_rpc::compute(bytes, move || {
        let found: Vec<&[u8]> = results
            .iter()
            .filter_map(|r| match r {
                GetResult::Found(b) => Some(&b.data[..]),
                _ => None,
            })
            .collect();
        let mut digests = crate::sha::digest_all(found).into_iter();
        results
            .into_iter()
            .map(|r| match r {
                GetResult::Found(b) => {
                    let d = digests.next();
                    if b.data.len() <= BLOCK_SIZE && d == Some(b.sha256) {
                        Copy::Valid(b)
                    } else {
                        Copy::Damaged
                    }
                }
                GetResult::Missing => Copy::Missing,
                GetResult::Corrupt => Copy::Damaged,
                GetResult::Gone => Copy::Gone,
            })
            .collect()
    })
    .await
}
