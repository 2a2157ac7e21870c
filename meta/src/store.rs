//! The meta store: one redb file.
//!
//! Reads open a read transaction inside `spawn_blocking`. Every change is a
//! [`Change`] sent to one writer thread, which applies all changes waiting in
//! its queue inside one write transaction and commits once (group commit).
//! Each change validates everything before it writes anything, so a change
//! that fails leaves no trace while its neighbours in the batch commit.

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use redb::{Database, ReadableDatabase, ReadableTable, TableHandle};
use tessera_rpc::group::GroupCommit;
use tokio::sync::oneshot;

use crate::apply::Tables;
pub use crate::change::{Change, MAX_LEASE, Outcome};
use crate::schema::{
    CONFIG, COUNTERS, DIRENTS, FLOCKS, FORMATS, GC, INODES, LEASE_USED, LEASES, LOCKS, ORPHANS,
    PROPS, RING, SESSIONS, TABLE_FORMATS, WRITES, XATTRS, dec, enc, storage,
};
use crate::types::*;

/// Most changes applied in one transaction.
const MAX_BATCH: usize = 4096;

/// A change, who made it (its origin in the change feed), whether it may
/// be answered before it is durable, and where to answer.
type Job = (
    u64,
    bool,
    Change,
    oneshot::Sender<Result<Outcome, MetaError>>,
);

/// Lazy changes become durable within this long (a durable commit follows).
pub const LAZY_WINDOW: std::time::Duration = std::time::Duration::from_millis(50);

/// [`LAZY_WINDOW`], or `TESSERA_META_LAZY_WINDOW_MS` (crash tests stretch
/// it, so that only an explicit sync can have made a change durable).
fn lazy_window() -> std::time::Duration {
    std::env::var("TESSERA_META_LAZY_WINDOW_MS")
        .ok()
        .and_then(|v| v.parse().ok())
        .map(std::time::Duration::from_millis)
        .unwrap_or(LAZY_WINDOW)
}

/// Events kept for the change feed; a watcher further behind is told it
/// lost some.
const FEED_CAPACITY: usize = 65_536;
/// Most events in one answer to a watcher.
const FEED_PAGE: usize = 10_000;

/// The change feed: the events of the last committed changes, in order.
pub(crate) struct Feed {
    inner: std::sync::Mutex<FeedInner>,
    notify: tokio::sync::Notify,
}

struct FeedInner {
    /// The sequence number the next event gets.
    next: u64,
    events: std::collections::VecDeque<(u64, Event)>,
    capacity: usize,
}

impl Feed {
    fn new() -> Self {
        Feed {
            inner: std::sync::Mutex::new(FeedInner {
                // Sequence numbers start from the clock, so that after a
                // restart of meta every watcher is behind (and told so).
                next: (now_ns() / 1000).max(1) as u64,
                events: std::collections::VecDeque::new(),
                capacity: FEED_CAPACITY,
            }),
            notify: tokio::sync::Notify::new(),
        }
    }

    fn publish(&self, events: Vec<(u64, Event)>) {
        if events.is_empty() {
            return;
        }
        {
            let mut f = self.inner.lock().expect("feed");
            for e in events {
                f.events.push_back(e);
                f.next += 1;
            }
            while f.events.len() > f.capacity {
                f.events.pop_front();
            }
        }
        self.notify.notify_waiters();
    }

    /// What a watcher at `since` gets now, or `None` if nothing yet.
    fn page(&self, since: u64) -> Option<Events> {
        let f = self.inner.lock().expect("feed");
        let first = f.next - f.events.len() as u64;
        if since == 0 {
            return Some(Events {
                next: f.next,
                lost: false,
                events: Vec::new(),
            });
        }
        if since < first || since > f.next {
            return Some(Events {
                next: f.next,
                lost: true,
                events: Vec::new(),
            });
        }
        if since == f.next {
            return None;
        }
        let events: Vec<(u64, Event)> = f
            .events
            .iter()
            .skip((since - first) as usize)
            .take(FEED_PAGE)
            .cloned()
            .collect();
        Some(Events {
            next: since + events.len() as u64,
            lost: false,
            events,
        })
    }
}

#[derive(Clone)]
pub struct MetaStore {
    db: Arc<Database>,
    writer: Arc<GroupCommit<Job>>,
    pub(crate) settings: Settings,
    counters: Arc<MetaCounters>,
    feed: Arc<Feed>,
    health: Arc<crate::health::Health>,
    #[cfg_attr(not(feature = "fault-injection"), allow(dead_code))]
    fail_write: Arc<AtomicU64>,
}

/// What meta has done since it started (for tests, status and metrics).
#[derive(Debug, Default)]
pub struct MetaCounters {
    /// Requests answered.
    pub calls: AtomicU64,
    /// Durable commits (each holds every change waiting when it began).
    pub commits: AtomicU64,
}

impl MetaStore {
    /// Opens (or creates) the store at `path`. A new cluster takes `requested`
    /// (or the defaults); an existing one refuses settings other than its own.
    /// Blocking: call it from `blocking()` or before the runtime starts.
    pub fn open(path: &Path, requested: Option<Settings>) -> Result<MetaStore, MetaError> {
        if let Some(s) = requested {
            s.validate().map_err(MetaError::Settings)?;
        }
        let db = Database::builder()
            .set_cache_size(64 << 20)
            .create(path)
            .map_err(|e| match e {
                redb::DatabaseError::DatabaseAlreadyOpen => storage(format!(
                    "{} is in use by another process (is another tessera running on this directory?)",
                    path.display()
                )),
                e => storage(format!("{}: {e}", path.display())),
            })?;
        let tx = db.begin_write().map_err(storage)?;
        let settings;
        {
            let tables: Vec<String> = tx
                .list_tables()
                .map_err(storage)?
                .map(|t| t.name().to_string())
                .collect();
            let mut formats = tx.open_table(FORMATS).map_err(storage)?;
            let mut recorded = Vec::new();
            for e in formats.iter().map_err(storage)? {
                let (k, v) = e.map_err(storage)?;
                recorded.push((k.value().to_string(), v.value()));
            }
            let new = tessera_rpc::formats::check(
                &path.display().to_string(),
                &recorded,
                &tables,
                TABLE_FORMATS,
            )
            .map_err(MetaError::Storage)?;
            for (t, v) in new {
                formats.insert(t, v).map_err(storage)?;
            }
            drop(formats);
            let mut config = tx.open_table(CONFIG).map_err(storage)?;
            let stored = config
                .get("settings")
                .map_err(storage)?
                .map(|v| dec::<Settings>(v.value()))
                .transpose()?;
            settings = match (stored, requested) {
                (Some(s), Some(r)) if s != r => {
                    return Err(MetaError::Settings(format!(
                        "this cluster was created with {s}; refusing to start with {r}"
                    )));
                }
                (Some(s), _) => s,
                (None, r) => {
                    let s = r.unwrap_or_default();
                    config
                        .insert("settings", enc(&s).as_slice())
                        .map_err(storage)?;
                    s
                }
            };
            let mut inodes = tx.open_table(INODES).map_err(storage)?;
            if inodes.get(ROOT_INO).map_err(storage)?.is_none() {
                let now = now_ns();
                let root = Inode {
                    ino: ROOT_INO,
                    kind: FileKind::Dir,
                    mode: 0o755,
                    uid: 0,
                    gid: 0,
                    size: 0,
                    atime: now,
                    mtime: now,
                    ctime: now,
                    nlink: 2,
                    version: 1,
                    object: ObjectRef::NONE,
                    parent: ROOT_INO,
                    target: None,
                };
                inodes
                    .insert(ROOT_INO, enc(&root).as_slice())
                    .map_err(storage)?;
                let mut counters = tx.open_table(COUNTERS).map_err(storage)?;
                counters.insert("next_ino", ROOT_INO + 1).map_err(storage)?;
                counters.insert("next_object", 1).map_err(storage)?;
                counters.insert("clock", 1).map_err(storage)?;
            }
            tx.open_table(DIRENTS).map_err(storage)?;
            tx.open_table(RING).map_err(storage)?;
            tx.open_table(GC).map_err(storage)?;
            tx.open_table(LEASES).map_err(storage)?;
            tx.open_table(LEASE_USED).map_err(storage)?;
            tx.open_table(WRITES).map_err(storage)?;
            tx.open_table(LOCKS).map_err(storage)?;
            tx.open_table(PROPS).map_err(storage)?;
            tx.open_table(XATTRS).map_err(storage)?;
            tx.open_table(FLOCKS).map_err(storage)?;
            tx.open_table(SESSIONS).map_err(storage)?;
            tx.open_table(ORPHANS).map_err(storage)?;
        }
        tx.commit().map_err(storage)?;
        let db = Arc::new(db);
        let wdb = db.clone();
        let counters = Arc::new(MetaCounters::default());
        let commits = counters.clone();
        let fail_write = Arc::new(AtomicU64::new(0));
        let faults = fail_write.clone();
        let feed = Arc::new(Feed::new());
        let wfeed = feed.clone();
        // Set while lazy changes wait for a durable commit.
        let pending = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let wpending = pending.clone();
        let writer = GroupCommit::spawn("meta-writer", MAX_BATCH, 4 * MAX_BATCH, move |jobs| {
            let durable = jobs.iter().any(|(_, lazy, _, _)| !lazy);
            commit_batch(&wdb, jobs, &faults, &wfeed, durable);
            wpending.store(!durable, Ordering::Release);
            commits.commits.fetch_add(1, Ordering::Relaxed);
        })
        .map_err(storage)?;
        // Makes lazy changes durable soon after they were committed.
        if let Some(weak) = writer.weak() {
            let window = lazy_window();
            std::thread::Builder::new()
                .name("meta-syncer".into())
                .spawn(move || {
                    loop {
                        std::thread::sleep(window / 2);
                        if !pending.swap(false, Ordering::AcqRel) {
                            if weak.strong_count() == 0 {
                                return;
                            }
                            continue;
                        }
                        let Some(tx) = weak.upgrade() else { return };
                        let (reply, _) = oneshot::channel();
                        if tx.blocking_send((0, false, Change::Sync, reply)).is_err() {
                            return;
                        }
                    }
                })
                .map_err(storage)?;
        }
        let writer = Arc::new(writer);
        Ok(MetaStore {
            db,
            writer,
            settings,
            counters,
            feed,
            health: Arc::default(),
            fail_write,
        })
    }

    /// Keeps only the last `n` events in the change feed (tests).
    #[doc(hidden)]
    pub fn set_feed_capacity(&self, n: usize) {
        self.feed.inner.lock().expect("feed").capacity = n.max(1);
    }

    /// The change feed from `since` (0: from now on): what happened since,
    /// waiting up to `wait` for something if nothing has.
    pub async fn watch(&self, since: u64, wait: std::time::Duration) -> Events {
        let deadline = tokio::time::Instant::now() + wait;
        loop {
            let notified = self.feed.notify.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            if let Some(page) = self.feed.page(since) {
                return page;
            }
            if tokio::time::timeout_at(deadline, notified).await.is_err() {
                return Events {
                    next: since,
                    lost: false,
                    events: Vec::new(),
                };
            }
        }
    }

    /// Fault injection for tests: the `n`th table write from now fails as
    /// a storage error would (once).
    #[cfg(feature = "fault-injection")]
    pub fn fail_write_after(&self, n: u64) {
        self.fail_write.store(n, Ordering::Relaxed);
    }

    pub fn counters(&self) -> &MetaCounters {
        &self.counters
    }

    /// What datanodes and gateways last reported (in memory).
    pub fn health(&self) -> &crate::health::Health {
        &self.health
    }

    pub fn settings(&self) -> Settings {
        self.settings
    }

    /// Applies one change (group-committed with whatever else is waiting).
    pub async fn apply(&self, change: Change) -> Result<Outcome, MetaError> {
        self.apply_as(0, change).await
    }

    /// Like [`MetaStore::apply`], its events tagged with `origin`.
    pub async fn apply_as(&self, origin: u64, change: Change) -> Result<Outcome, MetaError> {
        self.apply_with(origin, false, change).await
    }

    /// Like [`MetaStore::apply_as`]; a `lazy` change is answered once
    /// committed, before it is durable (within [`LAZY_WINDOW`]).
    pub async fn apply_with(
        &self,
        origin: u64,
        lazy: bool,
        change: Change,
    ) -> Result<Outcome, MetaError> {
        let (tx, rx) = oneshot::channel();
        self.writer
            .submit((origin, lazy, change, tx))
            .await
            .map_err(|_| storage("the meta writer has stopped"))?;
        rx.await
            .map_err(|_| storage("the meta writer has stopped"))?
    }

    pub(crate) async fn read<T: Send + 'static>(
        &self,
        f: impl FnOnce(&redb::ReadTransaction) -> Result<T, MetaError> + Send + 'static,
    ) -> Result<T, MetaError> {
        let db = self.db.clone();
        tessera_rpc::blocking(move || {
            let tx = db.begin_read().map_err(storage)?;
            f(&tx)
        })
        .await
    }
}

/// Applies a batch of changes in one durable transaction. A change that
/// fails before writing anything is simply answered with its error. One
/// that fails after writing part of itself (a storage error in the middle)
/// would leave that part behind, so the transaction is dropped and the batch
/// redone without it: every change is all or nothing.
fn commit_batch(
    db: &Database,
    jobs: Vec<Job>,
    fail_write: &Arc<AtomicU64>,
    feed: &Feed,
    durable: bool,
) {
    let mut failed: Vec<Option<MetaError>> = vec![None; jobs.len()];
    let result = loop {
        match apply_batch(db, &jobs, &mut failed, fail_write, durable) {
            Ok(Some(done)) => break Ok(done),
            Ok(None) => continue,
            Err(e) => break Err(e),
        }
    };
    match result {
        Ok((outcomes, events)) => {
            // Published once durable, before anyone hears of the change.
            feed.publish(events);
            for ((_, _, _, reply), outcome) in jobs.into_iter().zip(outcomes) {
                let _ = reply.send(outcome);
            }
        }
        Err(e) => {
            tracing::error!(error = %e, "meta commit failed");
            for (_, _, _, reply) in jobs {
                let _ = reply.send(Err(e.clone()));
            }
        }
    }
}

type BatchDone = (Vec<Result<Outcome, MetaError>>, Vec<(u64, Event)>);

/// One attempt at a batch, skipping the changes in `failed`. `Ok(None)`: a
/// change failed half-way; it is now in `failed` and nothing was committed.
fn apply_batch(
    db: &Database,
    jobs: &[Job],
    failed: &mut [Option<MetaError>],
    fail_write: &Arc<AtomicU64>,
    durable: bool,
) -> Result<Option<BatchDone>, MetaError> {
    let mut tx = db.begin_write().map_err(storage)?;
    tx.set_durability(if durable {
        redb::Durability::Immediate
    } else {
        redb::Durability::None
    })
    .map_err(storage)?;
    let mut outcomes = Vec::with_capacity(jobs.len());
    let mut events = Vec::new();
    {
        let mut w = Tables::open(&tx, fail_write.clone())?;
        for (i, (origin, _, change, _)) in jobs.iter().enumerate() {
            if let Some(e) = &failed[i] {
                outcomes.push(Err(e.clone()));
                continue;
            }
            let before = w.written;
            let outcome = w.apply(change.clone());
            if let Err(e) = &outcome
                && w.written != before
            {
                tracing::warn!(error = %e, "a change failed half-way; redoing its batch without it");
                failed[i] = Some(e.clone());
                return Ok(None);
            }
            events.extend(
                std::mem::take(&mut w.events)
                    .into_iter()
                    .map(|e| (*origin, e)),
            );
            outcomes.push(outcome);
        }
    }
    tx.commit().map_err(storage)?;
    Ok(Some((outcomes, events)))
}
