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

use redb::{
    Database, ReadableDatabase, ReadableTable, ReadableTableMetadata, TableDefinition, TableHandle,
};
use tessera_rpc::group::GroupCommit;
use tokio::sync::oneshot;

use crate::apply::Tables;
pub use crate::change::{Change, MAX_LEASE, Outcome};
use crate::types::*;

pub(crate) const INODES: TableDefinition<u64, &[u8]> = TableDefinition::new("inodes");
pub(crate) const DIRENTS: TableDefinition<(u64, &str), u64> = TableDefinition::new("dirents");
pub(crate) const RING: TableDefinition<u32, &[u8]> = TableDefinition::new("ring");
pub(crate) const COUNTERS: TableDefinition<&str, u64> = TableDefinition::new("counters");
pub(crate) const CONFIG: TableDefinition<&str, &[u8]> = TableDefinition::new("config");
pub(crate) const GC: TableDefinition<u64, &[u8]> = TableDefinition::new("gc");
/// Object ids leased to gateways: first id -> [`crate::apply::Lease`]. A lease is the
/// pending-upload record of every id in it: an id can be published (or
/// abandoned) once, while its lease lives; past the upload TTL, the lease's
/// unused ids go to GC.
pub(crate) const LEASES: TableDefinition<u64, &[u8]> = TableDefinition::new("leases");
/// Leased ids already published or abandoned.
pub(crate) const LEASE_USED: TableDefinition<u64, ()> = TableDefinition::new("lease_used");
/// Inode -> [`crate::apply::WriteLease`]: who is writing a file in place,
/// and how far uncommitted writes may have left bytes past its end.
pub(crate) const WRITES: TableDefinition<u64, &[u8]> = TableDefinition::new("writes");
/// Table name -> format version (see [`tessera_rpc::formats`]).
const FORMATS: TableDefinition<&str, u32> = TableDefinition::new("formats");
/// The format of each table's records (postcard). Bump a table's version
/// when its records change, and teach [`dec`]'s callers the old one.
const TABLE_FORMATS: &[(&str, u32)] = &[
    ("inodes", 1),
    ("dirents", 1),
    ("ring", 1),
    ("counters", 1),
    ("config", 1),
    ("gc", 1),
    ("leases", 1),
    ("lease_used", 1),
    ("writes", 1),
];

/// Most changes applied in one transaction.
const MAX_BATCH: usize = 4096;

type Job = (Change, oneshot::Sender<Result<Outcome, MetaError>>);

#[derive(Clone)]
pub struct MetaStore {
    db: Arc<Database>,
    writer: Arc<GroupCommit<Job>>,
    settings: Settings,
    counters: Arc<MetaCounters>,
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

pub(crate) fn storage(e: impl std::fmt::Display) -> MetaError {
    MetaError::Storage(e.to_string())
}

/// A record as stored: postcard, a documented and stable format.
pub(crate) fn enc<T: serde::Serialize>(v: &T) -> Vec<u8> {
    tessera_rpc::codec::encode(v)
}

pub(crate) fn dec<T: serde::de::DeserializeOwned>(b: &[u8]) -> Result<T, MetaError> {
    tessera_rpc::codec::decode(b)
        .map_err(|e| MetaError::Storage(format!("corrupt meta record: {e}")))
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
        }
        tx.commit().map_err(storage)?;
        let db = Arc::new(db);
        let wdb = db.clone();
        let counters = Arc::new(MetaCounters::default());
        let commits = counters.clone();
        let fail_write = Arc::new(AtomicU64::new(0));
        let faults = fail_write.clone();
        let writer = GroupCommit::spawn("meta-writer", MAX_BATCH, 4 * MAX_BATCH, move |jobs| {
            commit_batch(&wdb, jobs, &faults);
            commits.commits.fetch_add(1, Ordering::Relaxed);
        })
        .map_err(storage)?;
        let writer = Arc::new(writer);
        Ok(MetaStore {
            db,
            writer,
            settings,
            counters,
            fail_write,
        })
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

    pub fn settings(&self) -> Settings {
        self.settings
    }

    /// Applies one change (group-committed with whatever else is waiting).
    pub async fn apply(&self, change: Change) -> Result<Outcome, MetaError> {
        let (tx, rx) = oneshot::channel();
        self.writer
            .submit((change, tx))
            .await
            .map_err(|_| storage("the meta writer has stopped"))?;
        rx.await
            .map_err(|_| storage("the meta writer has stopped"))?
    }

    async fn read<T: Send + 'static>(
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

    pub async fn getattr(&self, ino: u64) -> Result<Inode, MetaError> {
        self.read(move |tx| {
            let t = tx.open_table(INODES).map_err(storage)?;
            get_inode(&t, ino)
        })
        .await
    }

    pub async fn lookup(&self, parent: u64, name: String) -> Result<Inode, MetaError> {
        self.read(move |tx| {
            let inodes = tx.open_table(INODES).map_err(storage)?;
            let dirents = tx.open_table(DIRENTS).map_err(storage)?;
            let dir = get_inode(&inodes, parent)?;
            if !dir.is_dir() {
                return Err(MetaError::NotADirectory(format!("inode {parent}")));
            }
            let ino = dirents
                .get((parent, name.as_str()))
                .map_err(storage)?
                .ok_or_else(|| MetaError::NotFound(name.clone()))?
                .value();
            get_inode(&inodes, ino)
        })
        .await
    }

    /// Walks `components` from the root in one read transaction.
    pub async fn resolve(&self, components: Vec<String>) -> Result<Inode, MetaError> {
        self.read(move |tx| {
            let (inodes, dirents) = namespace(tx)?;
            walk(&inodes, &dirents, &components)
        })
        .await
    }

    /// What a create or replace of `components` needs, in one read: the
    /// directory holding it and what is there now, if anything.
    pub async fn resolve_parent(
        &self,
        mut components: Vec<String>,
    ) -> Result<(Inode, Option<Inode>), MetaError> {
        self.read(move |tx| {
            let (inodes, dirents) = namespace(tx)?;
            let name = components
                .pop()
                .ok_or_else(|| MetaError::Invalid("the root has no parent".into()))?;
            validate_name(&name)?;
            let parent = walk(&inodes, &dirents, &components)?;
            if !parent.is_dir() {
                return Err(MetaError::NotADirectory(format!(
                    "/{}",
                    components.join("/")
                )));
            }
            let existing = match dirents.get((parent.ino, name.as_str())).map_err(storage)? {
                Some(ino) => Some(get_inode(&inodes, ino.value())?),
                None => None,
            };
            Ok((parent, existing))
        })
        .await
    }

    /// The inode at `components` and, if it is a directory, its entries
    /// with their inodes: a listing in one read.
    pub async fn list(
        &self,
        components: Vec<String>,
    ) -> Result<(Inode, Option<Vec<(String, Inode)>>), MetaError> {
        self.read(move |tx| {
            let (inodes, dirents) = namespace(tx)?;
            let inode = walk(&inodes, &dirents, &components)?;
            let entries = match inode.is_dir() {
                true => Some(list_dir(&inodes, &dirents, inode.ino)?),
                false => None,
            };
            Ok((inode, entries))
        })
        .await
    }

    /// Entries of a directory with their inodes, in name order.
    pub async fn readdir(&self, ino: u64) -> Result<Vec<(String, Inode)>, MetaError> {
        self.read(move |tx| {
            let (inodes, dirents) = namespace(tx)?;
            let dir = get_inode(&inodes, ino)?;
            if !dir.is_dir() {
                return Err(MetaError::NotADirectory(format!("inode {ino}")));
            }
            list_dir(&inodes, &dirents, ino)
        })
        .await
    }

    pub async fn ring(&self) -> Result<Ring, MetaError> {
        let settings = self.settings;
        self.read(move |tx| {
            let t = tx.open_table(RING).map_err(storage)?;
            let mut slots = Vec::new();
            for e in t.iter().map_err(storage)? {
                let (_, v) = e.map_err(storage)?;
                slots.push(dec::<RingSlot>(v.value())?);
            }
            Ok(Ring { settings, slots })
        })
        .await
    }

    /// Up to `limit` objects that have waited for GC at least `min_age_ns`
    /// (by meta's clock, the one that queued them), oldest id first.
    pub async fn gc_list(&self, limit: usize, min_age_ns: i64) -> Result<Vec<GcEntry>, MetaError> {
        let before = now_ns().saturating_sub(min_age_ns.max(0));
        self.read(move |tx| {
            let t = tx.open_table(GC).map_err(storage)?;
            let mut out = Vec::new();
            for e in t.iter().map_err(storage)? {
                if out.len() >= limit {
                    break;
                }
                let (_, v) = e.map_err(storage)?;
                let entry = dec::<GcEntry>(v.value())?;
                if entry.queued <= before {
                    out.push(entry);
                }
            }
            Ok(out)
        })
        .await
    }

    /// (inodes, objects waiting for GC, uploads in progress)
    pub async fn counts(&self) -> Result<(u64, u64, u64), MetaError> {
        self.read(move |tx| {
            let n = |len: Result<u64, redb::StorageError>| len.map_err(storage);
            Ok((
                n(tx.open_table(INODES).map_err(storage)?.len())?,
                n(tx.open_table(GC).map_err(storage)?.len())?,
                n(tx.open_table(LEASES).map_err(storage)?.len())?,
            ))
        })
        .await
    }
}

type ReadInodes = redb::ReadOnlyTable<u64, &'static [u8]>;
type ReadDirents = redb::ReadOnlyTable<(u64, &'static str), u64>;

fn namespace(tx: &redb::ReadTransaction) -> Result<(ReadInodes, ReadDirents), MetaError> {
    Ok((
        tx.open_table(INODES).map_err(storage)?,
        tx.open_table(DIRENTS).map_err(storage)?,
    ))
}

/// The inode at `components`, walking from the root.
fn walk(
    inodes: &ReadInodes,
    dirents: &ReadDirents,
    components: &[String],
) -> Result<Inode, MetaError> {
    let mut cur = get_inode(inodes, ROOT_INO)?;
    let mut walked = String::new();
    for c in components {
        validate_name(c)?;
        if !cur.is_dir() {
            return Err(MetaError::NotADirectory(format!("/{walked}")));
        }
        walked.push_str(if walked.is_empty() { "" } else { "/" });
        walked.push_str(c);
        let ino = dirents
            .get((cur.ino, c.as_str()))
            .map_err(storage)?
            .ok_or_else(|| MetaError::NotFound(format!("/{walked}")))?
            .value();
        cur = get_inode(inodes, ino)?;
    }
    Ok(cur)
}

/// The entries of directory `ino` with their inodes, in name order.
fn list_dir(
    inodes: &ReadInodes,
    dirents: &ReadDirents,
    ino: u64,
) -> Result<Vec<(String, Inode)>, MetaError> {
    let mut out = Vec::new();
    for entry in dirents.range((ino, "")..).map_err(storage)? {
        let (k, v) = entry.map_err(storage)?;
        let (p, name) = k.value();
        if p != ino {
            break;
        }
        out.push((name.to_string(), get_inode(inodes, v.value())?));
    }
    Ok(out)
}

pub(crate) fn get_inode(
    t: &impl ReadableTable<u64, &'static [u8]>,
    ino: u64,
) -> Result<Inode, MetaError> {
    let v = t
        .get(ino)
        .map_err(storage)?
        .ok_or_else(|| MetaError::NotFound(format!("inode {ino}")))?;
    dec(v.value())
}

/// Applies a batch of changes in one durable transaction. A change that
/// fails before writing anything is simply answered with its error. One
/// that fails after writing part of itself (a storage error in the middle)
/// would leave that part behind, so the transaction is dropped and the batch
/// redone without it: every change is all or nothing.
fn commit_batch(db: &Database, jobs: Vec<Job>, fail_write: &Arc<AtomicU64>) {
    let mut failed: Vec<Option<MetaError>> = vec![None; jobs.len()];
    let result = loop {
        match apply_batch(db, &jobs, &mut failed, fail_write) {
            Ok(Some(outcomes)) => break Ok(outcomes),
            Ok(None) => continue,
            Err(e) => break Err(e),
        }
    };
    match result {
        Ok(outcomes) => {
            for ((_, reply), outcome) in jobs.into_iter().zip(outcomes) {
                let _ = reply.send(outcome);
            }
        }
        Err(e) => {
            tracing::error!(error = %e, "meta commit failed");
            for (_, reply) in jobs {
                let _ = reply.send(Err(e.clone()));
            }
        }
    }
}

/// One attempt at a batch, skipping the changes in `failed`. `Ok(None)`: a
/// change failed half-way; it is now in `failed` and nothing was committed.
fn apply_batch(
    db: &Database,
    jobs: &[Job],
    failed: &mut [Option<MetaError>],
    fail_write: &Arc<AtomicU64>,
) -> Result<Option<Vec<Result<Outcome, MetaError>>>, MetaError> {
    let mut tx = db.begin_write().map_err(storage)?;
    tx.set_durability(redb::Durability::Immediate)
        .map_err(storage)?;
    let mut outcomes = Vec::with_capacity(jobs.len());
    {
        let mut w = Tables::open(&tx, fail_write.clone())?;
        for (i, (change, _)) in jobs.iter().enumerate() {
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
            outcomes.push(outcome);
        }
    }
    tx.commit().map_err(storage)?;
    Ok(Some(outcomes))
}
