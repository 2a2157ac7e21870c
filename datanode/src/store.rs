//! The block store: extent rows in one redb file, one group-commit thread.
//!
//! Puts are verified (SHA-256 of every block, off the runtime) before the
//! commit thread sees them; the commit thread merges them into the rows they
//! touch and commits every job waiting in one durable transaction. Gets copy
//! the asked-for records out of their rows without hashing them: the reader
//! verifies end to end, and reports what it finds damaged
//! ([`BlockStore::report_corrupt`]).

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use redb::{
    Database, Durability, ReadableDatabase, ReadableTable, ReadableTableMetadata, TableDefinition,
    TableHandle,
};
use tessera_rpc::Payload;
use tessera_rpc::group::GroupCommit;
use tokio::sync::oneshot;

use crate::DatanodeError;
use crate::block::*;
use crate::extent::{self, Entry, GROUP_BLOCKS, Lookup, Record, Row, RowKey};
use crate::wire::{GetBatchBuilder, PutItem};

/// `(object, role, group) -> extent row` (see [`crate::extent`]).
const EXTENTS: TableDefinition<(u64, u8, u64), &[u8]> = TableDefinition::new("extents");
const INFO: TableDefinition<&str, &str> = TableDefinition::new("info");
/// "blocks": how many block records the rows hold.
const COUNTERS: TableDefinition<&str, u64> = TableDefinition::new("counters");
/// Objects deleted by GC. A get of one answers `Gone`, so a reader still
/// streaming a replaced file gets an error instead of holes.
const DELETED: TableDefinition<u64, ()> = TableDefinition::new("deleted");
/// `(deleted at, object) -> ()`: when each tombstone in [`DELETED`] was
/// laid, so that old ones are pruned (see [`StoreOptions::tombstone_ttl`]).
const TOMBSTONES: TableDefinition<(i64, u64), ()> = TableDefinition::new("tombstones");
/// Table name -> format version (see [`tessera_rpc::formats`]).
const FORMATS: TableDefinition<&str, u32> = TableDefinition::new("formats");
const TABLE_FORMATS: &[(&str, u32)] = &[
    ("extents", extent::ROW_VERSION as u32),
    ("info", 1),
    ("counters", 1),
    ("deleted", 1),
    ("tombstones", 1),
];
/// The table of the first format: one row per block.
const OLD_BLOCKS_TABLE: &str = "blocks";

/// Most jobs folded into one transaction.
const MAX_BATCH: usize = 256;

type Reply<T> = oneshot::Sender<Result<T, DatanodeError>>;

enum Job {
    /// Verified writes, sorted by (object, role, index), with their positions in
    /// the caller's batch.
    Put(Vec<(usize, PutItem)>, Reply<Vec<(usize, PutResult)>>),
    Delete(Vec<u64>, Reply<u64>),
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct StoreStats {
    /// Block records held.
    pub blocks: u64,
    /// Extent rows holding them.
    pub rows: u64,
    /// Size of the redb file.
    pub bytes: u64,
    /// Damaged records found by reads since start (entries failing their check).
    pub corrupt_reads: u64,
    /// Blocks whose bytes readers found not matching their SHA-256, since start.
    pub corrupt_reported: u64,
    /// Damaged transfers refused since start.
    pub damaged_puts: u64,
    /// Durable commits since start (each holds every put waiting when it began).
    pub commits: u64,
    /// Blocks stored by puts since start, and their bytes.
    pub written_blocks: u64,
    pub written_bytes: u64,
    /// Blocks asked for by gets since start (found, missing or damaged),
    /// and the bytes of the answers.
    pub read_blocks: u64,
    pub read_bytes: u64,
    /// Size of the file system holding the data, bytes (0: unknown).
    pub capacity: u64,
    /// Bytes more this node can take: free space on that file system less
    /// the reserve (see [`StoreOptions::reserve_bytes`]).
    pub available: u64,
}

/// How a block store is opened.
#[derive(Debug, Clone)]
pub struct StoreOptions {
    /// redb page cache, bytes.
    pub cache_bytes: usize,
    /// Free space kept on the data directory's file system: a put that
    /// would eat into it is refused as "full" before redb runs out of room.
    /// `None`: 64 MiB, or a sixteenth of a smaller file system.
    pub reserve_bytes: Option<u64>,
    /// How long a deleted object's tombstone lasts. While it does, late
    /// puts into the object are refused and gets answer `Gone`; after, a
    /// late put could only leave garbage no file refers to.
    pub tombstone_ttl: Duration,
}

impl Default for StoreOptions {
    fn default() -> Self {
        StoreOptions {
            cache_bytes: 256 << 20,
            reserve_bytes: None,
            tombstone_ttl: Duration::from_secs(3600),
        }
    }
}

/// Free space as puts are admitted against it.
#[derive(Default)]
struct Space {
    /// The file system is below the reserve: deletes compact the file.
    near_full: std::sync::atomic::AtomicBool,
    /// Room promised to puts admitted and not committed yet.
    pending: AtomicU64,
    /// When the file was last compacted.
    last_compaction: std::sync::Mutex<Option<std::time::Instant>>,
}

/// A put's share of [`Space::pending`], given back when it is done.
struct Admitted<'a>(&'a Space, u64);

impl Drop for Admitted<'_> {
    fn drop(&mut self) {
        self.0.pending.fetch_sub(self.1, Ordering::Relaxed);
    }
}

/// The database, reopened in place when it reports an I/O error (redb
/// refuses every later commit until it is).
struct DbCell {
    path: PathBuf,
    cache_bytes: usize,
    /// A tokio lock: async readers wait for a reopen or compaction without
    /// holding a runtime thread; the commit thread takes it blocking.
    db: tokio::sync::RwLock<Option<Arc<Database>>>,
}

impl DbCell {
    /// The open database, waiting (asynchronously) while the commit thread
    /// reopens or compacts it; an error if a reopen failed.
    async fn get(&self) -> Result<Arc<Database>, DatanodeError> {
        self.db
            .read()
            .await
            .clone()
            .ok_or_else(|| storage("the database could not be reopened after an I/O error"))
    }

    /// For the commit thread: the database, reopening it if a previous
    /// attempt failed.
    fn get_or_reopen(&self) -> Result<Arc<Database>, DatanodeError> {
        let open = self.db.blocking_read().clone();
        match open {
            Some(db) => Ok(db),
            None => self.reopen(),
        }
    }

    /// Takes the database out of the cell once readers let go of it
    /// (waiting briefly); the caller puts one back.
    fn take(slot: &mut Option<Arc<Database>>) -> Result<Option<Database>, DatanodeError> {
        let Some(mut old) = slot.take() else {
            return Ok(None);
        };
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        loop {
            match Arc::try_unwrap(old) {
                Ok(db) => return Ok(Some(db)),
                Err(still) if std::time::Instant::now() < deadline => {
                    old = still;
                    std::thread::sleep(Duration::from_millis(1));
                }
                Err(still) => {
                    *slot = Some(still);
                    return Err(storage("readers hold the database"));
                }
            }
        }
    }

    /// Compacts the file (blocking readers while it runs).
    fn compact(&self) -> Result<(), DatanodeError> {
        let mut slot = self.db.blocking_write();
        let Some(mut db) = Self::take(&mut slot)? else {
            return Ok(());
        };
        let before = std::fs::metadata(&self.path).map(|m| m.len()).unwrap_or(0);
        let result = db.compact().map(|_| ()).map_err(storage);
        *slot = Some(Arc::new(db));
        let after = std::fs::metadata(&self.path).map(|m| m.len()).unwrap_or(0);
        tracing::info!(before, after, "compacted the block file");
        result
    }

    /// Closes the database (waiting briefly for readers to let go) and
    /// opens it again.
    fn reopen(&self) -> Result<Arc<Database>, DatanodeError> {
        let mut slot = self.db.blocking_write();
        drop(Self::take(&mut slot)?);
        let db = open_db(&self.path, self.cache_bytes)
            .map_err(|e| storage(format!("reopening {}: {e}", self.path.display())))?;
        tracing::warn!(path = %self.path.display(), "reopened the database after an I/O error");
        let db = Arc::new(db);
        *slot = Some(db.clone());
        Ok(db)
    }
}

#[derive(Clone)]
pub struct BlockStore {
    db: Arc<DbCell>,
    reserve_bytes: Option<u64>,
    space: Arc<Space>,
    path: PathBuf,
    writer: Arc<GroupCommit<Job>>,
    node_id: String,
    corrupt_reads: Arc<AtomicU64>,
    corrupt_reported: Arc<AtomicU64>,
    damaged_puts: Arc<AtomicU64>,
    commits: Arc<AtomicU64>,
    traffic: Arc<Traffic>,
}

/// Blocks and bytes in and out since start (see [`StoreStats`]).
#[derive(Debug, Default)]
struct Traffic {
    written_blocks: AtomicU64,
    written_bytes: AtomicU64,
    read_blocks: AtomicU64,
    read_bytes: AtomicU64,
}

/// Opens (or creates) the redb file at `path` (see [`crate::file`]).
fn open_db(path: &Path, cache_bytes: usize) -> Result<Database, redb::DatabaseError> {
    Database::builder()
        .set_cache_size(cache_bytes)
        .create_with_backend(crate::file::BlockFile::open(path)?)
}

fn storage(e: impl std::fmt::Display) -> DatanodeError {
    DatanodeError::Storage(e.to_string())
}

impl BlockStore {
    /// Opens or creates `dir/blocks.redb`. Blocking.
    pub fn open(dir: &Path, cache_bytes: usize) -> Result<BlockStore, DatanodeError> {
        Self::open_with(
            dir,
            StoreOptions {
                cache_bytes,
                ..StoreOptions::default()
            },
        )
    }

    /// Opens (or creates) the store in `dir` with explicit options.
    pub fn open_with(dir: &Path, options: StoreOptions) -> Result<BlockStore, DatanodeError> {
        let cache_bytes = options.cache_bytes;
        std::fs::create_dir_all(dir).map_err(|e| storage(format!("{}: {e}", dir.display())))?;
        let path = dir.join("blocks.redb");
        let db = open_db(&path, cache_bytes).map_err(|e| match e {
            redb::DatabaseError::DatabaseAlreadyOpen => storage(format!(
                "{} is in use by another process (is another tessera running on this directory?)",
                path.display()
            )),
            e => storage(format!("{}: {e}", path.display())),
        })?;
        let tx = db.begin_write().map_err(storage)?;
        let node_id = {
            let tables: Vec<String> = tx
                .list_tables()
                .map_err(storage)?
                .map(|t| t.name().to_string())
                .collect();
            if tables.iter().any(|t| t == OLD_BLOCKS_TABLE) {
                return Err(storage(format!(
                    "{} holds blocks in the first datanode format (one row per block), \
                     written by an earlier Tessera; this build stores extent rows (format {}) \
                     and does not convert. Move the directory aside and start the node on an \
                     empty one: its blocks are still on their other replicas",
                    path.display(),
                    extent::ROW_VERSION
                )));
            }
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
            .map_err(DatanodeError::Storage)?;
            for (t, v) in new {
                formats.insert(t, v).map_err(storage)?;
            }
            tx.open_table(EXTENTS).map_err(storage)?;
            let deleted = tx.open_table(DELETED).map_err(storage)?;
            let mut times = tx.open_table(TOMBSTONES).map_err(storage)?;
            if times.is_empty().map_err(storage)? && !deleted.is_empty().map_err(storage)? {
                // Tombstones laid before their times were kept: from now.
                let now = now_ns();
                for e in deleted.iter().map_err(storage)? {
                    times
                        .insert((now, e.map_err(storage)?.0.value()), ())
                        .map_err(storage)?;
                }
            }
            drop((deleted, times));
            tx.open_table(COUNTERS).map_err(storage)?;
            let mut info = tx.open_table(INFO).map_err(storage)?;
            let existing = info
                .get("node_id")
                .map_err(storage)?
                .map(|v| v.value().to_string());
            match existing {
                Some(id) => id,
                None => {
                    let mut raw = [0u8; 8];
                    getrandom_fill(&mut raw);
                    let id: String = raw.iter().map(|b| format!("{b:02x}")).collect();
                    info.insert("node_id", id.as_str()).map_err(storage)?;
                    id
                }
            }
        };
        tx.commit().map_err(storage)?;
        let db = Arc::new(DbCell {
            path: path.clone(),
            cache_bytes,
            db: tokio::sync::RwLock::new(Some(Arc::new(db))),
        });
        let wdb = db.clone();
        let commits = Arc::new(AtomicU64::new(0));
        let counted = commits.clone();
        let ttl = options.tombstone_ttl;
        let space = Arc::new(Space::default());
        let measured = space.clone();
        let writer = GroupCommit::spawn("datanode-commit", MAX_BATCH, 2 * MAX_BATCH, move |jobs| {
            commit(&wdb, jobs, ttl, &measured);
            counted.fetch_add(1, Ordering::Relaxed);
        })
        .map_err(storage)?;
        Ok(BlockStore {
            db,
            reserve_bytes: options.reserve_bytes,
            space,
            path,
            writer: Arc::new(writer),
            node_id,
            corrupt_reads: Arc::default(),
            corrupt_reported: Arc::default(),
            damaged_puts: Arc::default(),
            commits,
            traffic: Arc::default(),
        })
    }

    /// Admits a put of `bytes` unless it would eat into the free-space
    /// reserve (counting puts admitted but not committed yet): a full disk
    /// is answered "full" at once, before redb fails on it, and the reserve
    /// stays for deletes, which need room to free room.
    fn admit(&self, bytes: u64) -> Result<Admitted<'_>, DatanodeError> {
        // New rows take a little more than their blocks; rows rewritten
        // copy-on-write take a page each (the reserve covers that).
        let need = bytes.saturating_add(bytes / 4).max(256 << 10);
        let pending = self.space.pending.fetch_add(need, Ordering::Relaxed);
        let admitted = Admitted(&self.space, need);
        let Some((free, total)) = free_space(self.db.path.parent().unwrap_or(Path::new(".")))
        else {
            return Ok(admitted);
        };
        let reserve = self
            .reserve_bytes
            .unwrap_or_else(|| (64u64 << 20).min(total / 16));
        let wanted = reserve.saturating_add(pending).saturating_add(need);
        if free >= wanted {
            self.space.near_full.store(false, Ordering::Relaxed);
            return Ok(admitted);
        }
        // Deletes from now on compact the file, so that room they free
        // inside it returns to the file system.
        self.space.near_full.store(true, Ordering::Relaxed);
        Err(DatanodeError::Full(format!(
            "{free} bytes free on {}, {reserve} kept in reserve, {pending} promised to writes \
             in progress; cannot take {bytes} more",
            self.db.path.display()
        )))
    }

    /// The id this node registers under, kept in its data directory.
    pub fn node_id(&self) -> &str {
        &self.node_id
    }

    /// A note the node keeps about itself (say, that it is rebuilding).
    pub async fn note(&self, key: &'static str) -> Result<Option<String>, DatanodeError> {
        let db = self.db.get().await?;
        tessera_rpc::blocking(move || {
            let tx = db.begin_read().map_err(storage)?;
            let info = tx.open_table(INFO).map_err(storage)?;
            Ok(info
                .get(key)
                .map_err(storage)?
                .map(|v| v.value().to_string()))
        })
        .await
    }

    /// Sets (or with `None` removes) a note, durably.
    pub async fn set_note(
        &self,
        key: &'static str,
        value: Option<String>,
    ) -> Result<(), DatanodeError> {
        if key == "node_id" {
            return Err(DatanodeError::Invalid("the node id is not a note".into()));
        }
        let db = self.db.get().await?;
        tessera_rpc::blocking(move || {
            let tx = db.begin_write().map_err(storage)?;
            {
                let mut info = tx.open_table(INFO).map_err(storage)?;
                match &value {
                    Some(v) => info.insert(key, v.as_str()).map_err(storage)?,
                    None => info.remove(key).map_err(storage)?,
                };
            }
            tx.commit().map_err(storage)
        })
        .await
    }

    /// Verifies and durably stores `items`; one result per item, in order.
    pub async fn put(&self, items: Vec<PutItem>) -> Result<Vec<PutResult>, DatanodeError> {
        self.put_checked(items, true).await
    }

    /// Durably stores `items` that did not cross a wire (a gateway in this
    /// process hashed these very bytes): their checksums are stored as
    /// given, not computed again. Scrub and every read still check them.
    pub async fn put_unreceived(
        &self,
        items: Vec<PutItem>,
    ) -> Result<Vec<PutResult>, DatanodeError> {
        self.put_checked(items, false).await
    }

    async fn put_checked(
        &self,
        items: Vec<PutItem>,
        verify: bool,
    ) -> Result<Vec<PutResult>, DatanodeError> {
        let n = items.len();
        let sizes: Vec<u32> = items.iter().map(|i| i.block.data.len() as u32).collect();
        // Hash off the runtime (in parallel with other batches; inline for a
        // few blocks) before the commit thread sees anything; sort for the
        // row merge meanwhile.
        let bytes = items.iter().map(|i| i.block.data.len()).sum();
        let _admitted = self.admit(bytes as u64)?;
        // Unverified, only the sort is left: inline unless the batch is large.
        let work = if verify { bytes } else { n * 8 };
        let (mut good, damaged) = tessera_rpc::compute(work, move || {
            let mut good = Vec::with_capacity(items.len());
            let mut damaged = Vec::new();
            let digests = if verify {
                crate::sha::digest_all(items.iter().map(|i| &i.block.data[..]))
            } else {
                Vec::new()
            };
            for (pos, item) in items.into_iter().enumerate() {
                let fits = item.block.data.len() <= BLOCK_SIZE;
                if fits && (!verify || digests[pos] == item.block.sha256) {
                    good.push((pos, item));
                } else {
                    damaged.push(pos);
                }
            }
            good.sort_by_key(|(_, i)| (i.object, i.role, i.index));
            (good, damaged)
        })
        .await;
        let mut results = vec![PutResult::Damaged; n];
        if !damaged.is_empty() {
            self.damaged_puts
                .fetch_add(damaged.len() as u64, Ordering::Relaxed);
            tracing::warn!(
                damaged = damaged.len(),
                "refused blocks whose bytes do not match their checksum"
            );
        }
        if good.is_empty() {
            return Ok(results);
        }
        let (tx, rx) = oneshot::channel();
        good.shrink_to_fit();
        self.writer
            .submit(Job::Put(good, tx))
            .await
            .map_err(storage)?;
        let (mut blocks, mut bytes) = (0, 0);
        for (pos, r) in rx.await.map_err(storage)?? {
            if r == PutResult::Stored {
                blocks += 1;
                bytes += u64::from(sizes[pos]);
            }
            results[pos] = r;
        }
        self.traffic
            .written_blocks
            .fetch_add(blocks, Ordering::Relaxed);
        self.traffic
            .written_bytes
            .fetch_add(bytes, Ordering::Relaxed);
        Ok(results)
    }

    /// Blocks `indices` (strictly increasing) of `object`, packed for the
    /// wire, without hashing them. Also returns how many were corrupt.
    pub async fn get_packed(
        &self,
        object: u64,
        role: u8,
        indices: Vec<u64>,
    ) -> Result<(Payload, usize), DatanodeError> {
        if indices.windows(2).any(|w| w[0] >= w[1]) {
            return Err(DatanodeError::Invalid(
                "block indices must be strictly increasing".into(),
            ));
        }
        let asked = indices.len() as u64;
        let db = self.db.get().await?;
        let (batch, corrupt) = tessera_rpc::blocking(move || {
            let tx = db.begin_read().map_err(storage)?;
            let table = tx.open_table(EXTENTS).map_err(storage)?;
            let deleted = tx.open_table(DELETED).map_err(storage)?;
            read_rows(&table, &deleted, object, role, &indices)
        })
        .await?;
        if corrupt > 0 {
            self.corrupt_reads
                .fetch_add(corrupt as u64, Ordering::Relaxed);
            tracing::warn!(object, corrupt, "damaged block records found on read");
        }
        let batch = batch.finish();
        let t = &self.traffic;
        t.read_blocks.fetch_add(asked, Ordering::Relaxed);
        let bytes = batch.iter().map(|b| b.len() as u64).sum();
        t.read_bytes.fetch_add(bytes, Ordering::Relaxed);
        Ok((batch, corrupt))
    }

    /// Like [`BlockStore::get_packed`], decoded (tests and tools).
    pub async fn get(
        &self,
        object: u64,
        role: u8,
        indices: Vec<u64>,
    ) -> Result<Vec<GetResult>, DatanodeError> {
        let n = indices.len();
        let (payload, _) = self.get_packed(object, role, indices).await?;
        crate::wire::parse_get(n, bytes::Bytes::from(payload.concat())).map_err(storage)
    }

    /// A reader found these blocks' bytes not matching their SHA-256: they
    /// are counted here and repaired by the reader; scrub finds the rest.
    pub fn report_corrupt(&self, object: u64, indices: &[u64]) {
        self.corrupt_reported
            .fetch_add(indices.len() as u64, Ordering::Relaxed);
        tracing::warn!(
            object,
            blocks = ?&indices[..indices.len().min(16)],
            count = indices.len(),
            "a reader found blocks damaged at rest on this node"
        );
    }

    /// Deletes every block of `objects`; returns how many were removed.
    pub async fn delete_objects(&self, objects: Vec<u64>) -> Result<u64, DatanodeError> {
        let (tx, rx) = oneshot::channel();
        self.writer
            .submit(Job::Delete(objects, tx))
            .await
            .map_err(storage)?;
        rx.await.map_err(storage)?
    }

    pub async fn stats(&self) -> Result<StoreStats, DatanodeError> {
        let db = self.db.get().await?;
        let path = self.path.clone();
        let dir = path.parent().unwrap_or(Path::new(".")).to_path_buf();
        let reserve_bytes = self.reserve_bytes;
        let (blocks, rows, bytes, space) = tessera_rpc::blocking(
            move || -> Result<(u64, u64, u64, (u64, u64)), DatanodeError> {
                let tx = db.begin_read().map_err(storage)?;
                let rows = tx
                    .open_table(EXTENTS)
                    .map_err(storage)?
                    .len()
                    .map_err(storage)?;
                let blocks = tx
                    .open_table(COUNTERS)
                    .map_err(storage)?
                    .get("blocks")
                    .map_err(storage)?
                    .map_or(0, |v| v.value());
                let bytes = std::fs::metadata(&path).map(|m| m.len()).unwrap_or(0);
                let space = match free_space(&dir) {
                    Some((free, total)) => {
                        let reserve =
                            reserve_bytes.unwrap_or_else(|| (64u64 << 20).min(total / 16));
                        (total, free.saturating_sub(reserve))
                    }
                    None => (0, 0),
                };
                Ok((blocks, rows, bytes, space))
            },
        )
        .await?;
        let (capacity, available) = space;
        Ok(StoreStats {
            blocks,
            rows,
            bytes,
            corrupt_reads: self.corrupt_reads.load(Ordering::Relaxed),
            corrupt_reported: self.corrupt_reported.load(Ordering::Relaxed),
            damaged_puts: self.damaged_puts.load(Ordering::Relaxed),
            commits: self.commits.load(Ordering::Relaxed),
            written_blocks: self.traffic.written_blocks.load(Ordering::Relaxed),
            written_bytes: self.traffic.written_bytes.load(Ordering::Relaxed),
            read_blocks: self.traffic.read_blocks.load(Ordering::Relaxed),
            read_bytes: self.traffic.read_bytes.load(Ordering::Relaxed),
            capacity,
            available,
        })
    }
}

/// Packs blocks `indices` (sorted) of `object`, one row lookup per group.
/// Returns the batch and how many records were damaged.
/// Rows a get must span to be read in bulk ([`crate::file::reading_in_bulk`]):
/// a random read touches one row per node, a 4 MiB chunk of a sequential
/// read some 24.
const BULK_ROWS: u64 = 4;

fn read_rows(
    table: &redb::ReadOnlyTable<(u64, u8, u64), &'static [u8]>,
    deleted: &redb::ReadOnlyTable<u64, ()>,
    object: u64,
    role: u8,
    indices: &[u64],
) -> Result<(GetBatchBuilder, usize), DatanodeError> {
    let rows = match (indices.first(), indices.last()) {
        (Some(first), Some(last)) => last / GROUP_BLOCKS - first / GROUP_BLOCKS + 1,
        _ => 0,
    };
    if rows >= BULK_ROWS {
        crate::file::reading_in_bulk(|| read_rows_of(table, deleted, object, role, indices))
    } else {
        read_rows_of(table, deleted, object, role, indices)
    }
}

fn read_rows_of(
    table: &redb::ReadOnlyTable<(u64, u8, u64), &'static [u8]>,
    deleted: &redb::ReadOnlyTable<u64, ()>,
    object: u64,
    role: u8,
    indices: &[u64],
) -> Result<(GetBatchBuilder, usize), DatanodeError> {
    let mut b = GetBatchBuilder::with_capacity(indices.len());
    if deleted.get(object).map_err(storage)?.is_some() {
        indices.iter().for_each(|_| b.gone());
        return Ok((b, 0));
    }
    let mut corrupt = 0;
    let mut at = 0;
    while at < indices.len() {
        let group = indices[at] / GROUP_BLOCKS;
        let end = at + indices[at..].partition_point(|&i| i / GROUP_BLOCKS == group);
        let run = &indices[at..end];
        at = end;
        let guard = match table.get((object, role, group)) {
            Ok(g) => g,
            Err(e) => {
                // A page redb cannot read: these blocks are corrupt here.
                tracing::warn!(object, group, error = %e, "unreadable extent row");
                corrupt += run.len();
                run.iter().for_each(|_| b.corrupt());
                continue;
            }
        };
        let Some(guard) = guard else {
            run.iter().for_each(|_| b.missing());
            continue;
        };
        let key = RowKey {
            object,
            role,
            group,
        };
        let row = Row::parse(key, guard.value());
        for &i in run {
            match row.get((i % GROUP_BLOCKS) as u16) {
                Lookup::Found(r) => b.found(r.generation, r.sha256, r.data),
                Lookup::Missing => b.missing(),
                Lookup::Corrupt => {
                    corrupt += 1;
                    b.corrupt();
                }
            }
        }
    }
    Ok((b, corrupt))
}

fn getrandom_fill(buf: &mut [u8]) {
    getrandom::fill(buf).expect("the OS random source is available");
}

/// Merges `items` (sorted, all in row `key`) into that row, never lowering
/// a readable block's generation. Returns each item's result and the change
/// in the number of records held.
///
/// What the old row holds but cannot vouch for (a damaged entry, a damaged
/// head, a page redb cannot read) is carried into the new row as damaged,
/// so it goes on reading as `Corrupt` (and gets repaired) instead of
/// turning into a hole. A damaged record's generation is unknown: a write
/// of any generation replaces it.
fn merge_row(
    table: &mut redb::Table<(u64, u8, u64), &'static [u8]>,
    key: RowKey,
    items: &[(usize, PutItem)],
    results: &mut Vec<(usize, PutResult)>,
) -> Result<i64, DatanodeError> {
    let k = (key.object, key.role, key.group);
    let (old, page_unreadable) = match table.get(k) {
        Ok(g) => (g.map(|g| g.value().to_vec()), false),
        Err(e) => {
            tracing::warn!(object = key.object, group = key.group, error = %e, "unreadable extent row; rewriting it");
            (None, true)
        }
    };
    let old_row = old.as_deref().map(|raw| Row::parse(key, raw));
    let old_valid = old_row.as_ref().map_or(0, |r| r.valid());
    /// What each slot of the new row holds.
    #[derive(Clone, Copy)]
    enum Plan<'a> {
        Empty,
        Damaged,
        Held(Record<'a>),
    }
    let mut plan = vec![Plan::Empty; GROUP_BLOCKS as usize];
    if page_unreadable || old_row.as_ref().is_some_and(|r| r.is_unreadable()) {
        plan.fill(Plan::Damaged);
    }
    if let Some(row) = &old_row {
        for r in row.records() {
            plan[r.slot as usize] = Plan::Held(r);
        }
        let mut damaged = 0;
        for s in row.damaged_slots() {
            plan[s as usize] = Plan::Damaged;
            damaged += 1;
        }
        if damaged > 0 && !row.is_unreadable() {
            tracing::warn!(
                object = key.object,
                group = key.group,
                damaged,
                "rewriting an extent row with damaged records; they stay marked damaged"
            );
        }
    }
    for (pos, item) in items {
        let slot = (item.index % GROUP_BLOCKS) as usize;
        let new = Record {
            slot: slot as u16,
            generation: item.block.generation,
            sha256: &item.block.sha256,
            data: &item.block.data,
        };
        match plan[slot] {
            Plan::Held(h) if h.generation > new.generation => {
                results.push((*pos, PutResult::Newer(h.generation)));
            }
            _ => {
                plan[slot] = Plan::Held(new);
                results.push((*pos, PutResult::Stored));
            }
        }
    }
    let entries: Vec<Entry<'_>> = plan
        .iter()
        .enumerate()
        .filter_map(|(slot, p)| match p {
            Plan::Empty => None,
            Plan::Damaged => Some(Entry::Damaged(slot as u16)),
            Plan::Held(r) => Some(Entry::Block(*r)),
        })
        .collect();
    let held = entries
        .iter()
        .filter(|e| matches!(e, Entry::Block(_)))
        .count();
    let len = extent::encoded_len(&entries);
    let mut guard = table.insert_reserve(k, len).map_err(storage)?;
    extent::encode_into(key, &entries, guard.as_mut());
    Ok(held as i64 - old_valid as i64)
}

/// Applies a batch of jobs in one durable transaction, then answers each.
/// A failed commit (a full disk, an I/O error) answers every job with the
/// error, changes nothing, and reopens the database: redb refuses every
/// later transaction of a database that saw an I/O error, so the node
/// would stay broken after the cause went away.
fn commit(cell: &DbCell, jobs: Vec<Job>, tombstone_ttl: Duration, space: &Space) {
    let result = cell
        .get_or_reopen()
        .and_then(|db| apply_jobs(&db, &jobs, tombstone_ttl))
        .map_err(|e| match e {
            DatanodeError::Storage(m) if m.contains("os error 28") => {
                DatanodeError::Full(format!("the disk is full: {m}"))
            }
            e => e,
        });
    if result.is_err()
        && let Err(e) = cell.reopen()
    {
        tracing::error!(error = %e, "cannot reopen the database; will retry on the next write");
    }
    let deleted = jobs.iter().any(|j| matches!(j, Job::Delete(..)));
    let near_full = space.near_full.load(Ordering::Relaxed);
    let compact = result.is_ok() && deleted && (near_full || worth_compacting(cell, space));
    answer_jobs(jobs, result);
    // redb reuses freed pages but never shrinks its file: near a full disk,
    // or when most of the file is free after deletes, room that deletes
    // freed inside it is given back to the file system.
    if compact {
        *space
            .last_compaction
            .lock()
            .unwrap_or_else(|e| e.into_inner()) = Some(std::time::Instant::now());
        match cell.compact() {
            Ok(()) => space.near_full.store(false, Ordering::Relaxed),
            Err(e) => tracing::warn!(error = %e, "cannot compact the database"),
        }
    }
}

/// Bytes a block record takes in its row (its bytes and its entry).
const RECORD_BYTES: u64 = 512 + 56;
/// The file is compacted after deletes once it is this many times the
/// size its records need (rows fill their pages partly, and redb keeps
/// some slack), and larger than [`COMPACT_FLOOR`]; at most once per
/// [`COMPACT_EVERY`].
const COMPACT_RATIO: u64 = 4;
const COMPACT_FLOOR: u64 = 16 << 20;
const COMPACT_EVERY: Duration = Duration::from_secs(10);

/// Whether most of the file is free room that deletes left (so the file
/// does not grow without bound under overwrite churn).
fn worth_compacting(cell: &DbCell, space: &Space) -> bool {
    let recent = space
        .last_compaction
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .is_some_and(|t| t.elapsed() < COMPACT_EVERY);
    if recent {
        return false;
    }
    let len = std::fs::metadata(&cell.path).map(|m| m.len()).unwrap_or(0);
    if len <= COMPACT_FLOOR {
        return false;
    }
    let Ok(db) = cell.get_or_reopen() else {
        return false;
    };
    let blocks = db
        .begin_read()
        .ok()
        .and_then(|tx| tx.open_table(COUNTERS).ok())
        .and_then(|t| t.get("blocks").ok().flatten().map(|v| v.value()))
        .unwrap_or(0);
    let needed = blocks * RECORD_BYTES;
    let worth = len > COMPACT_FLOOR.max(COMPACT_RATIO * needed);
    if worth {
        tracing::info!(
            file = len,
            needed,
            "compacting the block file: most of it is free after deletes"
        );
    }
    worth
}

fn apply_jobs(
    db: &Database,
    jobs: &[Job],
    tombstone_ttl: Duration,
) -> Result<Vec<JobOutcome>, DatanodeError> {
    {
        let mut tx = db.begin_write().map_err(storage)?;
        tx.set_durability(Durability::Immediate).map_err(storage)?;
        let mut outcomes = Vec::with_capacity(jobs.len());
        {
            let mut table = tx.open_table(EXTENTS).map_err(storage)?;
            let mut deleted = tx.open_table(DELETED).map_err(storage)?;
            let mut times = tx.open_table(TOMBSTONES).map_err(storage)?;
            let mut blocks_delta = 0i64;
            for job in jobs {
                outcomes.push(match job {
                    Job::Put(items, _) => {
                        let mut results = Vec::with_capacity(items.len());
                        let mut at = 0;
                        while at < items.len() {
                            let object = items[at].1.object;
                            let end = at + items[at..].partition_point(|(_, i)| i.object == object);
                            if deleted.get(object).map_err(storage)?.is_some() {
                                // A late write into a collected object must not
                                // bring its blocks back.
                                results.extend(
                                    items[at..end].iter().map(|(p, _)| (*p, PutResult::Gone)),
                                );
                                at = end;
                                continue;
                            }
                            while at < end {
                                let key = RowKey {
                                    object,
                                    role: items[at].1.role,
                                    group: items[at].1.index / GROUP_BLOCKS,
                                };
                                let stop = at
                                    + items[at..end].partition_point(|(_, i)| {
                                        (i.role, i.index / GROUP_BLOCKS) == (key.role, key.group)
                                    });
                                blocks_delta +=
                                    merge_row(&mut table, key, &items[at..stop], &mut results)?;
                                at = stop;
                            }
                        }
                        JobOutcome::Put(results)
                    }
                    Job::Delete(objects, _) => {
                        let mut removed = 0u64;
                        let now = now_ns();
                        prune_tombstones(&mut deleted, &mut times, now, tombstone_ttl)?;
                        for &o in objects {
                            if deleted.insert(o, ()).map_err(storage)?.is_none() {
                                times.insert((now, o), ()).map_err(storage)?;
                            }
                            table
                                .retain_in(
                                    (o, 0, 0)..=(o, u8::MAX, u64::MAX),
                                    |(_, role, group), raw| {
                                        let key = RowKey {
                                            object: o,
                                            role,
                                            group,
                                        };
                                        removed += Row::parse(key, raw).valid() as u64;
                                        false
                                    },
                                )
                                .map_err(storage)?;
                        }
                        blocks_delta -= removed as i64;
                        JobOutcome::Delete(removed)
                    }
                });
            }
            if blocks_delta != 0 {
                let mut counters = tx.open_table(COUNTERS).map_err(storage)?;
                let held = counters
                    .get("blocks")
                    .map_err(storage)?
                    .map_or(0, |v| v.value());
                counters
                    .insert("blocks", held.saturating_add_signed(blocks_delta))
                    .map_err(storage)?;
            }
        }
        tx.commit().map_err(storage)?;
        Ok(outcomes)
    }
}

fn answer_jobs(jobs: Vec<Job>, result: Result<Vec<JobOutcome>, DatanodeError>) {
    match result {
        Ok(outcomes) => {
            for (job, outcome) in jobs.into_iter().zip(outcomes) {
                match (job, outcome) {
                    (Job::Put(_, reply), JobOutcome::Put(r)) => {
                        let _ = reply.send(Ok(r));
                    }
                    (Job::Delete(_, reply), JobOutcome::Delete(n)) => {
                        let _ = reply.send(Ok(n));
                    }
                    _ => unreachable!("outcomes are built in job order"),
                }
            }
        }
        Err(e) => {
            tracing::error!(error = %e, "datanode commit failed");
            for job in jobs {
                match job {
                    Job::Put(_, reply) => {
                        let _ = reply.send(Err(e.clone()));
                    }
                    Job::Delete(_, reply) => {
                        let _ = reply.send(Err(e.clone()));
                    }
                }
            }
        }
    }
}

enum JobOutcome {
    Put(Vec<(usize, PutResult)>),
    Delete(u64),
}

/// Forgets tombstones laid more than `ttl` before `now`.
fn prune_tombstones(
    deleted: &mut redb::Table<u64, ()>,
    times: &mut redb::Table<(i64, u64), ()>,
    now: i64,
    ttl: Duration,
) -> Result<(), DatanodeError> {
    let cutoff = now.saturating_sub(ttl.as_nanos().min(i64::MAX as u128) as i64);
    let old: Vec<(i64, u64)> = times
        .range(..(cutoff, 0))
        .map_err(storage)?
        .map(|e| e.map(|(k, _)| k.value()).map_err(storage))
        .collect::<Result<_, _>>()?;
    for (at, object) in old {
        times.remove((at, object)).map_err(storage)?;
        deleted.remove(object).map_err(storage)?;
    }
    Ok(())
}

fn now_ns() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos().min(i64::MAX as u128) as i64)
        .unwrap_or(0)
}

/// Bytes free for unprivileged use and the size of the file system holding
/// `dir`; `None` if it cannot be asked.
fn free_space(dir: &Path) -> Option<(u64, u64)> {
    use std::os::unix::ffi::OsStrExt;
    let c = std::ffi::CString::new(dir.as_os_str().as_bytes()).ok()?;
    let mut st: libc::statvfs = unsafe { std::mem::zeroed() };
    // SAFETY: `c` is a NUL-terminated path and `st` a valid out-pointer.
    if unsafe { libc::statvfs(c.as_ptr(), &mut st) } != 0 {
        return None;
    }
    let frsize = st.f_frsize as u64;
    Some((
        (st.f_bavail as u64).saturating_mul(frsize),
        (st.f_blocks as u64).saturating_mul(frsize),
    ))
}
