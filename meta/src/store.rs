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

use crate::types::*;

const INODES: TableDefinition<u64, &[u8]> = TableDefinition::new("inodes");
const DIRENTS: TableDefinition<(u64, &str), u64> = TableDefinition::new("dirents");
const RING: TableDefinition<u32, &[u8]> = TableDefinition::new("ring");
const COUNTERS: TableDefinition<&str, u64> = TableDefinition::new("counters");
const CONFIG: TableDefinition<&str, &[u8]> = TableDefinition::new("config");
const GC: TableDefinition<u64, &[u8]> = TableDefinition::new("gc");
/// Object ids leased to gateways: first id -> [`Lease`]. A lease is the
/// pending-upload record of every id in it: an id can be published (or
/// abandoned) once, while its lease lives; past the upload TTL, the lease's
/// unused ids go to GC.
const LEASES: TableDefinition<u64, &[u8]> = TableDefinition::new("leases");
/// Leased ids already published or abandoned.
const LEASE_USED: TableDefinition<u64, ()> = TableDefinition::new("lease_used");
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
];

/// Most object ids in one lease.
pub const MAX_LEASE: u64 = 4096;

/// A range of object ids handed to a gateway (see [`LEASES`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
struct Lease {
    end: u64,
    /// When it was granted, ns since the epoch, by meta's clock.
    granted: i64,
}

/// Most changes applied in one transaction.
const MAX_BATCH: usize = 4096;

/// A change to the namespace or the ring.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub enum Change {
    Create {
        parent: u64,
        name: String,
        kind: FileKind,
        mode: u32,
        uid: u32,
        gid: u32,
        target: Option<String>,
        /// Placement seed for the file's future content.
        seed: u64,
        /// Fail with `Exists` if the name is taken (else return what is there).
        exclusive: bool,
    },
    Unlink {
        parent: u64,
        name: String,
    },
    Rmdir {
        parent: u64,
        name: String,
    },
    Rename {
        parent: u64,
        name: String,
        new_parent: u64,
        new_name: String,
        no_replace: bool,
    },
    SetAttr {
        ino: u64,
        attr: SetAttr,
    },
    /// Sets the size of a file whose content is `object` (growing it: the new
    /// bytes read as zeros).
    Resize {
        ino: u64,
        object: u64,
        size: u64,
    },
    /// Leases `count` fresh object ids (at most [`MAX_LEASE`]) to a gateway,
    /// which places each new object itself: one durable commit for many
    /// uploads. Returns the range, the generation their blocks are written
    /// with, and the ring width to place them over.
    LeaseObjects {
        count: u64,
    },
    /// A generation for writing into `ino`'s current object.
    BeginWrite {
        ino: u64,
    },
    /// Records a write into the current object that ended at `end`.
    /// The first write into a file without content adopts `object`.
    CommitWrite {
        ino: u64,
        object: ObjectRef,
        end: u64,
        mtime: i64,
    },
    /// Replaces the content of `ino` with `object` if its content is still
    /// `expect` (an object id); the old object goes to GC.
    SwapObject {
        ino: u64,
        expect: u64,
        object: ObjectRef,
        size: u64,
        mtime: i64,
    },
    /// Makes `object` (fully written) the content of `parent/name`, creating
    /// the file or swapping out its old object, which goes to GC.
    Publish {
        parent: u64,
        name: String,
        object: ObjectRef,
        size: u64,
        mode: u32,
        mtime: i64,
    },
    /// An upload that will never be published: its object goes to GC.
    Abandon {
        object: u64,
    },
    /// Moves the unused ids of leases granted more than `ttl_ns` ago (by
    /// meta's clock) to GC and forgets those leases.
    ReapLeases {
        ttl_ns: i64,
    },
    GcDone {
        objects: Vec<u64>,
    },
    Register {
        node_id: String,
        addr: String,
        slot: Option<u32>,
    },
}

/// What a change produced.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub enum Outcome {
    Inode(Inode),
    Lease {
        first: u64,
        count: u64,
        generation: u64,
        width: u32,
    },
    Generation(u64),
    Slot(u32),
    Count(u64),
    Done,
}

type Job = (Change, oneshot::Sender<Result<Outcome, MetaError>>);

#[derive(Clone)]
pub struct MetaStore {
    db: Arc<Database>,
    writer: Arc<GroupCommit<Job>>,
    settings: Settings,
    counters: Arc<MetaCounters>,
}

/// What meta has done since it started (for tests, status and metrics).
#[derive(Debug, Default)]
pub struct MetaCounters {
    /// Requests answered.
    pub calls: AtomicU64,
    /// Durable commits (each holds every change waiting when it began).
    pub commits: AtomicU64,
}

fn storage(e: impl std::fmt::Display) -> MetaError {
    MetaError::Storage(e.to_string())
}

/// A record as stored: postcard, a documented and stable format.
fn enc<T: serde::Serialize>(v: &T) -> Vec<u8> {
    tessera_rpc::codec::encode(v)
}

fn dec<T: serde::de::DeserializeOwned>(b: &[u8]) -> Result<T, MetaError> {
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
        }
        tx.commit().map_err(storage)?;
        let db = Arc::new(db);
        let wdb = db.clone();
        let counters = Arc::new(MetaCounters::default());
        let commits = counters.clone();
        let writer = GroupCommit::spawn("meta-writer", MAX_BATCH, move |jobs| {
            commit_batch(&wdb, jobs);
            commits.commits.fetch_add(1, Ordering::Relaxed);
        })
        .map_err(storage)?;
        let writer = Arc::new(writer);
        Ok(MetaStore {
            db,
            writer,
            settings,
            counters,
        })
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

fn get_inode(t: &impl ReadableTable<u64, &'static [u8]>, ino: u64) -> Result<Inode, MetaError> {
    let v = t
        .get(ino)
        .map_err(storage)?
        .ok_or_else(|| MetaError::NotFound(format!("inode {ino}")))?;
    dec(v.value())
}

fn commit_batch(db: &Database, jobs: Vec<Job>) {
    let result = (|| -> Result<Vec<Result<Outcome, MetaError>>, MetaError> {
        let tx = db.begin_write().map_err(storage)?;
        let mut outcomes = Vec::with_capacity(jobs.len());
        {
            let mut w = Tables::open(&tx)?;
            for (change, _) in &jobs {
                outcomes.push(w.apply(change.clone()));
            }
        }
        tx.commit().map_err(storage)?;
        Ok(outcomes)
    })();
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

struct Tables<'t> {
    inodes: redb::Table<'t, u64, &'static [u8]>,
    dirents: redb::Table<'t, (u64, &'static str), u64>,
    ring: redb::Table<'t, u32, &'static [u8]>,
    counters: redb::Table<'t, &'static str, u64>,
    config: redb::Table<'t, &'static str, &'static [u8]>,
    gc: redb::Table<'t, u64, &'static [u8]>,
    leases: redb::Table<'t, u64, &'static [u8]>,
    lease_used: redb::Table<'t, u64, ()>,
}

impl<'t> Tables<'t> {
    fn open(tx: &'t redb::WriteTransaction) -> Result<Self, MetaError> {
        Ok(Tables {
            inodes: tx.open_table(INODES).map_err(storage)?,
            dirents: tx.open_table(DIRENTS).map_err(storage)?,
            ring: tx.open_table(RING).map_err(storage)?,
            counters: tx.open_table(COUNTERS).map_err(storage)?,
            config: tx.open_table(CONFIG).map_err(storage)?,
            gc: tx.open_table(GC).map_err(storage)?,
            leases: tx.open_table(LEASES).map_err(storage)?,
            lease_used: tx.open_table(LEASE_USED).map_err(storage)?,
        })
    }

    fn next(&mut self, counter: &'static str) -> Result<u64, MetaError> {
        self.take(counter, 1)
    }

    /// Takes `n` consecutive values of a counter; returns the first.
    fn take(&mut self, counter: &'static str, n: u64) -> Result<u64, MetaError> {
        let v = self
            .counters
            .get(counter)
            .map_err(storage)?
            .map(|v| v.value())
            .unwrap_or(1);
        let end = v
            .checked_add(n)
            .ok_or_else(|| storage(format!("counter {counter} exhausted")))?;
        self.counters.insert(counter, end).map_err(storage)?;
        Ok(v)
    }

    /// Fails unless `id` is a leased object id not yet published or abandoned.
    fn check_claim(&self, id: u64) -> Result<(), MetaError> {
        let expired = || {
            MetaError::Conflict(format!(
                "upload of object {id} (its lease expired, or it was published already)"
            ))
        };
        let lease = self
            .leases
            .range(..=id)
            .map_err(storage)?
            .next_back()
            .transpose()
            .map_err(storage)?
            .map(|(_, v)| dec::<Lease>(v.value()))
            .transpose()?;
        match lease {
            Some(l) if id < l.end => {}
            _ => return Err(expired()),
        }
        if self.lease_used.get(id).map_err(storage)?.is_some() {
            return Err(expired());
        }
        Ok(())
    }

    fn mark_used(&mut self, id: u64) -> Result<(), MetaError> {
        self.lease_used.insert(id, ()).map_err(storage)?;
        Ok(())
    }

    /// The cluster-wide version clock: every committed change takes a new value.
    fn tick(&mut self) -> Result<u64, MetaError> {
        Ok(self.next("clock")? + 1)
    }

    fn inode(&self, ino: u64) -> Result<Inode, MetaError> {
        get_inode(&self.inodes, ino)
    }

    fn put(&mut self, inode: &Inode) -> Result<(), MetaError> {
        self.inodes
            .insert(inode.ino, enc(inode).as_slice())
            .map_err(storage)?;
        Ok(())
    }

    fn entry(&self, parent: u64, name: &str) -> Result<Option<u64>, MetaError> {
        Ok(self
            .dirents
            .get((parent, name))
            .map_err(storage)?
            .map(|v| v.value()))
    }

    fn dir(&self, ino: u64) -> Result<Inode, MetaError> {
        let d = self.inode(ino)?;
        if !d.is_dir() {
            return Err(MetaError::NotADirectory(format!("inode {ino}")));
        }
        Ok(d)
    }

    fn is_empty_dir(&self, ino: u64) -> Result<bool, MetaError> {
        let mut r = self.dirents.range((ino, "")..).map_err(storage)?;
        Ok(match r.next() {
            Some(e) => e.map_err(storage)?.0.value().0 != ino,
            None => true,
        })
    }

    /// Marks a directory changed (an entry came or went).
    fn touch_dir(&mut self, ino: u64, now: i64, nlink_delta: i32) -> Result<(), MetaError> {
        let mut d = self.inode(ino)?;
        d.mtime = now;
        d.ctime = now;
        d.nlink = (d.nlink as i64 + nlink_delta as i64).max(1) as u32;
        d.version = self.tick()?;
        self.put(&d)
    }

    fn queue_gc(&mut self, object: ObjectRef) -> Result<(), MetaError> {
        if object.is_none() {
            return Ok(());
        }
        let entry = GcEntry {
            object,
            queued: now_ns(),
        };
        self.gc
            .insert(object.id, enc(&entry).as_slice())
            .map_err(storage)?;
        Ok(())
    }

    /// Drops an inode that lost its last name.
    fn drop_inode(&mut self, inode: &Inode) -> Result<(), MetaError> {
        self.inodes.remove(inode.ino).map_err(storage)?;
        self.queue_gc(inode.object)
    }

    fn apply(&mut self, change: Change) -> Result<Outcome, MetaError> {
        let now = now_ns();
        match change {
            Change::Create {
                parent,
                name,
                kind,
                mode,
                uid,
                gid,
                target,
                seed,
                exclusive,
            } => {
                validate_name(&name)?;
                self.dir(parent)?;
                if let Some(existing) = self.entry(parent, &name)? {
                    let existing = self.inode(existing)?;
                    if exclusive || existing.kind != kind || kind != FileKind::File {
                        return Err(MetaError::Exists(name));
                    }
                    return Ok(Outcome::Inode(existing));
                }
                if kind == FileKind::Symlink && target.is_none() {
                    return Err(MetaError::Invalid("a symlink needs a target".into()));
                }
                let ino = self.next("next_ino")?;
                let inode = Inode {
                    ino,
                    kind,
                    mode: mode & 0o7777,
                    uid,
                    gid,
                    size: target.as_ref().map(|t| t.len() as u64).unwrap_or(0),
                    atime: now,
                    mtime: now,
                    ctime: now,
                    nlink: if kind == FileKind::Dir { 2 } else { 1 },
                    version: self.tick()?,
                    object: ObjectRef {
                        seed,
                        ..ObjectRef::NONE
                    },
                    parent,
                    target,
                };
                self.put(&inode)?;
                self.dirents
                    .insert((parent, name.as_str()), ino)
                    .map_err(storage)?;
                self.touch_dir(parent, now, if kind == FileKind::Dir { 1 } else { 0 })?;
                Ok(Outcome::Inode(inode))
            }
            Change::Unlink { parent, name } => {
                self.dir(parent)?;
                let ino = self
                    .entry(parent, &name)?
                    .ok_or_else(|| MetaError::NotFound(name.clone()))?;
                let mut inode = self.inode(ino)?;
                if inode.is_dir() {
                    return Err(MetaError::IsADirectory(name));
                }
                self.dirents
                    .remove((parent, name.as_str()))
                    .map_err(storage)?;
                inode.nlink = inode.nlink.saturating_sub(1);
                if inode.nlink == 0 {
                    self.drop_inode(&inode)?;
                } else {
                    inode.ctime = now;
                    inode.version = self.tick()?;
                    self.put(&inode)?;
                }
                self.touch_dir(parent, now, 0)?;
                Ok(Outcome::Done)
            }
            Change::Rmdir { parent, name } => {
                self.dir(parent)?;
                let ino = self
                    .entry(parent, &name)?
                    .ok_or_else(|| MetaError::NotFound(name.clone()))?;
                let inode = self.inode(ino)?;
                if !inode.is_dir() {
                    return Err(MetaError::NotADirectory(name));
                }
                if !self.is_empty_dir(ino)? {
                    return Err(MetaError::NotEmpty(name));
                }
                self.dirents
                    .remove((parent, name.as_str()))
                    .map_err(storage)?;
                self.drop_inode(&inode)?;
                self.touch_dir(parent, now, -1)?;
                Ok(Outcome::Done)
            }
            Change::Rename {
                parent,
                name,
                new_parent,
                new_name,
                no_replace,
            } => self.rename(parent, &name, new_parent, &new_name, no_replace, now),
            Change::SetAttr { ino, attr } => {
                let mut inode = self.inode(ino)?;
                if let Some(m) = attr.mode {
                    inode.mode = m & 0o7777;
                }
                if let Some(u) = attr.uid {
                    inode.uid = u;
                }
                if let Some(g) = attr.gid {
                    inode.gid = g;
                }
                if let Some(a) = attr.atime {
                    inode.atime = a;
                }
                if let Some(m) = attr.mtime {
                    inode.mtime = m;
                }
                inode.ctime = now;
                inode.version = self.tick()?;
                self.put(&inode)?;
                Ok(Outcome::Inode(inode))
            }
            Change::Resize { ino, object, size } => {
                let mut inode = self.inode(ino)?;
                if inode.is_dir() {
                    return Err(MetaError::IsADirectory(format!("inode {ino}")));
                }
                if inode.object.id != object {
                    return Err(MetaError::Conflict(format!("inode {ino}")));
                }
                inode.size = size;
                inode.mtime = now;
                inode.ctime = now;
                inode.version = self.tick()?;
                self.put(&inode)?;
                Ok(Outcome::Inode(inode))
            }
            Change::LeaseObjects { count } => {
                if count == 0 || count > MAX_LEASE {
                    return Err(MetaError::Invalid(format!(
                        "a lease holds 1 to {MAX_LEASE} object ids, not {count}"
                    )));
                }
                let width = self.ring.len().map_err(storage)? as u32;
                let settings: Settings = match self.config.get("settings").map_err(storage)? {
                    Some(v) => dec(v.value())?,
                    None => Settings::default(),
                };
                if width < settings.replicas {
                    return Err(MetaError::Settings(format!(
                        "only {width} datanodes have joined; {} copies need at least {}",
                        settings.replicas, settings.replicas
                    )));
                }
                let first = self.take("next_object", count)?;
                let lease = Lease {
                    end: first + count,
                    granted: now,
                };
                self.leases
                    .insert(first, enc(&lease).as_slice())
                    .map_err(storage)?;
                Ok(Outcome::Lease {
                    first,
                    count,
                    generation: self.tick()?,
                    width,
                })
            }
            Change::BeginWrite { ino } => {
                self.inode(ino)?;
                Ok(Outcome::Generation(self.tick()?))
            }
            Change::CommitWrite {
                ino,
                object,
                end,
                mtime,
            } => {
                let mut inode = self.inode(ino)?;
                if inode.is_dir() {
                    return Err(MetaError::IsADirectory(format!("inode {ino}")));
                }
                let adopt = inode.object.is_none() && !object.is_none();
                if adopt {
                    self.check_claim(object.id)?;
                    inode.object = object;
                    self.mark_used(object.id)?;
                } else if inode.object.id != object.id {
                    return Err(MetaError::Conflict(format!("inode {ino}")));
                }
                inode.size = inode.size.max(end);
                inode.mtime = mtime;
                inode.ctime = now;
                inode.version = self.tick()?;
                self.put(&inode)?;
                Ok(Outcome::Inode(inode))
            }
            Change::SwapObject {
                ino,
                expect,
                object,
                size,
                mtime,
            } => {
                let mut inode = self.inode(ino)?;
                if inode.kind != FileKind::File {
                    return Err(MetaError::IsADirectory(format!("inode {ino}")));
                }
                if inode.object.id != expect {
                    return Err(MetaError::Conflict(format!("inode {ino}")));
                }
                self.check_claim(object.id)?;
                self.swap_content(&mut inode, object, size, mtime, now)?;
                Ok(Outcome::Inode(inode))
            }
            Change::Publish {
                parent,
                name,
                object,
                size,
                mode,
                mtime,
            } => {
                validate_name(&name)?;
                self.dir(parent)?;
                self.check_claim(object.id)?;
                let inode = match self.entry(parent, &name)? {
                    Some(ino) => {
                        let mut inode = self.inode(ino)?;
                        if inode.kind != FileKind::File {
                            return Err(MetaError::IsADirectory(name));
                        }
                        self.swap_content(&mut inode, object, size, mtime, now)?;
                        inode
                    }
                    None => {
                        let inode = Inode {
                            ino: self.next("next_ino")?,
                            kind: FileKind::File,
                            mode: mode & 0o7777,
                            uid: 0,
                            gid: 0,
                            size,
                            atime: now,
                            mtime,
                            ctime: now,
                            nlink: 1,
                            version: self.tick()?,
                            object,
                            parent,
                            target: None,
                        };
                        self.put(&inode)?;
                        self.dirents
                            .insert((parent, name.as_str()), inode.ino)
                            .map_err(storage)?;
                        self.touch_dir(parent, now, 0)?;
                        inode
                    }
                };
                self.mark_used(object.id)?;
                Ok(Outcome::Inode(inode))
            }
            Change::Abandon { object } => {
                // An id whose lease is gone was collected with it; one
                // already published is not this upload's to drop.
                if self.check_claim(object).is_ok() {
                    self.mark_used(object)?;
                    self.queue_gc(ObjectRef {
                        id: object,
                        ..ObjectRef::NONE
                    })?;
                }
                Ok(Outcome::Done)
            }
            Change::ReapLeases { ttl_ns } => {
                let before = now.saturating_sub(ttl_ns.max(0));
                let mut expired = Vec::new();
                for e in self.leases.iter().map_err(storage)? {
                    let (k, v) = e.map_err(storage)?;
                    let lease: Lease = dec(v.value())?;
                    if lease.granted < before {
                        expired.push((k.value(), lease.end));
                    }
                }
                let mut collected = 0;
                for (first, end) in expired {
                    for id in first..end {
                        if self.lease_used.remove(id).map_err(storage)?.is_none() {
                            self.queue_gc(ObjectRef {
                                id,
                                ..ObjectRef::NONE
                            })?;
                            collected += 1;
                        }
                    }
                    self.leases.remove(first).map_err(storage)?;
                }
                Ok(Outcome::Count(collected))
            }
            Change::GcDone { objects } => {
                for id in objects {
                    self.gc.remove(id).map_err(storage)?;
                }
                Ok(Outcome::Done)
            }
            Change::Register {
                node_id,
                addr,
                slot,
            } => self.register(node_id, addr, slot),
        }
    }

    /// Makes `object` the content of `inode`; the old object goes to GC.
    fn swap_content(
        &mut self,
        inode: &mut Inode,
        object: ObjectRef,
        size: u64,
        mtime: i64,
        now: i64,
    ) -> Result<(), MetaError> {
        let old = inode.object;
        inode.object = object;
        inode.size = size;
        inode.mtime = mtime;
        inode.ctime = now;
        inode.version = self.tick()?;
        self.put(inode)?;
        self.mark_used(object.id)?;
        if old.id != object.id {
            self.queue_gc(old)?;
        }
        Ok(())
    }

    fn rename(
        &mut self,
        parent: u64,
        name: &str,
        new_parent: u64,
        new_name: &str,
        no_replace: bool,
        now: i64,
    ) -> Result<Outcome, MetaError> {
        validate_name(new_name)?;
        self.dir(parent)?;
        self.dir(new_parent)?;
        let ino = self
            .entry(parent, name)?
            .ok_or_else(|| MetaError::NotFound(name.to_string()))?;
        let mut inode = self.inode(ino)?;
        if parent == new_parent && name == new_name {
            return Ok(Outcome::Inode(inode));
        }
        if inode.is_dir() {
            // A directory may not move into its own subtree.
            let mut cur = new_parent;
            loop {
                if cur == ino {
                    return Err(MetaError::Invalid(format!(
                        "cannot move directory {name:?} into itself"
                    )));
                }
                if cur == ROOT_INO {
                    break;
                }
                cur = self.inode(cur)?.parent;
            }
        }
        let mut dir_delta_new = if inode.is_dir() { 1 } else { 0 };
        if let Some(target) = self.entry(new_parent, new_name)? {
            if target == ino {
                return Ok(Outcome::Inode(inode));
            }
            if no_replace {
                return Err(MetaError::Exists(new_name.to_string()));
            }
            let t = self.inode(target)?;
            match (inode.is_dir(), t.is_dir()) {
                (true, true) => {
                    if !self.is_empty_dir(target)? {
                        return Err(MetaError::NotEmpty(new_name.to_string()));
                    }
                    dir_delta_new = 0;
                }
                (false, true) => return Err(MetaError::IsADirectory(new_name.to_string())),
                (true, false) => return Err(MetaError::NotADirectory(new_name.to_string())),
                (false, false) => {}
            }
            let mut t = t;
            t.nlink = t.nlink.saturating_sub(if t.is_dir() { 2 } else { 1 });
            if t.nlink == 0 || t.is_dir() {
                self.drop_inode(&t)?;
            } else {
                t.ctime = now;
                t.version = self.tick()?;
                self.put(&t)?;
            }
        }
        self.dirents.remove((parent, name)).map_err(storage)?;
        self.dirents
            .insert((new_parent, new_name), ino)
            .map_err(storage)?;
        inode.parent = new_parent;
        inode.ctime = now;
        inode.version = self.tick()?;
        self.put(&inode)?;
        if parent == new_parent {
            self.touch_dir(parent, now, 0)?;
        } else {
            self.touch_dir(parent, now, if inode.is_dir() { -1 } else { 0 })?;
            self.touch_dir(new_parent, now, dir_delta_new)?;
        }
        Ok(Outcome::Inode(inode))
    }

    fn register(
        &mut self,
        node_id: String,
        addr: String,
        slot: Option<u32>,
    ) -> Result<Outcome, MetaError> {
        if node_id.is_empty() || addr.is_empty() {
            return Err(MetaError::Invalid(
                "a datanode needs an id and an address".into(),
            ));
        }
        let mut slots = Vec::new();
        for e in self.ring.iter().map_err(storage)? {
            let (_, v) = e.map_err(storage)?;
            slots.push(dec::<RingSlot>(v.value())?);
        }
        let held = slots.iter().find(|s| s.node_id == node_id).map(|s| s.slot);
        let slot = match (held, slot) {
            (Some(h), Some(want)) if h != want => {
                return Err(MetaError::Invalid(format!(
                    "datanode {node_id} already holds slot {h}; it cannot take slot {want}"
                )));
            }
            (Some(h), _) => h,
            (None, Some(want)) => {
                if want as usize > slots.len() {
                    return Err(MetaError::Invalid(format!(
                        "slot {want} is past the end of the ring ({} slots); slots are taken in order",
                        slots.len()
                    )));
                }
                if let Some(old) = slots.iter().find(|s| s.slot == want) {
                    tracing::warn!(slot = want, old = %old.node_id, new = %node_id, "datanode replaces the holder of its slot");
                }
                want
            }
            (None, None) => slots.len() as u32,
        };
        let record = RingSlot {
            slot,
            node_id,
            addr,
        };
        self.ring
            .insert(slot, enc(&record).as_slice())
            .map_err(storage)?;
        Ok(Outcome::Slot(slot))
    }
}
