//! The block store: one redb file, one group-commit thread.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use redb::{
    Database, Durability, ReadableDatabase, ReadableTable, ReadableTableMetadata, TableDefinition,
};
use tessera_rpc::group::GroupCommit;
use tokio::sync::oneshot;

use crate::DatanodeError;
use crate::block::*;
use crate::wire::{GetBatch, GetBatchBuilder};

const BLOCKS: TableDefinition<(u64, u64), &[u8]> = TableDefinition::new("blocks");
const INFO: TableDefinition<&str, &str> = TableDefinition::new("info");
/// Objects deleted by GC. A get of one answers `Gone`, so a reader still
/// streaming a replaced file gets an error instead of holes.
const DELETED: TableDefinition<u64, ()> = TableDefinition::new("deleted");

/// Most jobs folded into one transaction.
const MAX_BATCH: usize = 256;

enum Job {
    Put(
        Vec<BlockWrite>,
        oneshot::Sender<Result<Vec<PutResult>, DatanodeError>>,
    ),
    Delete(Vec<u64>, oneshot::Sender<Result<u64, DatanodeError>>),
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct StoreStats {
    pub blocks: u64,
    /// Size of the redb file.
    pub bytes: u64,
    /// Corrupt records found by reads since start.
    pub corrupt_reads: u64,
    /// Damaged transfers refused since start.
    pub damaged_puts: u64,
}

#[derive(Clone)]
pub struct BlockStore {
    db: Arc<Database>,
    path: PathBuf,
    writer: Arc<GroupCommit<Job>>,
    node_id: String,
    corrupt_reads: Arc<AtomicU64>,
    damaged_puts: Arc<AtomicU64>,
}

fn storage(e: impl std::fmt::Display) -> DatanodeError {
    DatanodeError::Storage(e.to_string())
}

impl BlockStore {
    /// Opens or creates `dir/blocks.redb`. Blocking.
    pub fn open(dir: &Path, cache_bytes: usize) -> Result<BlockStore, DatanodeError> {
        std::fs::create_dir_all(dir).map_err(|e| storage(format!("{}: {e}", dir.display())))?;
        let path = dir.join("blocks.redb");
        let db = Database::builder()
            .set_cache_size(cache_bytes)
            .create(&path)
            .map_err(|e| match e {
                redb::DatabaseError::DatabaseAlreadyOpen => storage(format!(
                    "{} is in use by another process (is another tessera running on this directory?)",
                    path.display()
                )),
                e => storage(format!("{}: {e}", path.display())),
            })?;
        let tx = db.begin_write().map_err(storage)?;
        let node_id = {
            tx.open_table(BLOCKS).map_err(storage)?;
            tx.open_table(DELETED).map_err(storage)?;
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
        let db = Arc::new(db);
        let wdb = db.clone();
        let writer =
            GroupCommit::spawn("datanode-commit", MAX_BATCH, move |jobs| commit(&wdb, jobs))
                .map_err(storage)?;
        Ok(BlockStore {
            db,
            path,
            writer: Arc::new(writer),
            node_id,
            corrupt_reads: Arc::default(),
            damaged_puts: Arc::default(),
        })
    }

    /// The id this node registers under, kept in its data directory.
    pub fn node_id(&self) -> &str {
        &self.node_id
    }

    /// Verifies and durably stores `writes`; one result per write, in order.
    pub async fn put(&self, writes: Vec<BlockWrite>) -> Result<Vec<PutResult>, DatanodeError> {
        // Hash off the runtime, in parallel with other batches, before the
        // commit thread sees anything.
        let (good, verdicts) = tessera_rpc::blocking(move || {
            let verdicts: Vec<bool> = writes.iter().map(|w| w.block.is_valid()).collect();
            let good: Vec<BlockWrite> = writes
                .into_iter()
                .zip(&verdicts)
                .filter_map(|(w, ok)| ok.then_some(w))
                .collect();
            (good, verdicts)
        })
        .await;
        let damaged = verdicts.iter().filter(|ok| !**ok).count() as u64;
        if damaged > 0 {
            self.damaged_puts.fetch_add(damaged, Ordering::Relaxed);
            tracing::warn!(
                damaged,
                "refused blocks whose bytes do not match their checksum"
            );
        }
        let mut stored = if good.is_empty() {
            Vec::new()
        } else {
            let (tx, rx) = oneshot::channel();
            self.writer.submit(Job::Put(good, tx)).map_err(storage)?;
            rx.await.map_err(storage)??
        }
        .into_iter();
        Ok(verdicts
            .into_iter()
            .map(|ok| {
                if ok {
                    stored.next().unwrap_or(PutResult::Damaged)
                } else {
                    PutResult::Damaged
                }
            })
            .collect())
    }

    /// Reads and verifies `keys`; one result per key, in order.
    pub async fn get(&self, keys: Vec<BlockKey>) -> Result<Vec<GetResult>, DatanodeError> {
        self.get_packed(keys).await?.results().map_err(storage)
    }

    /// Like [`BlockStore::get`], packed for the wire: each verified record is
    /// copied from redb into one buffer, then into the reply.
    pub async fn get_packed(&self, keys: Vec<BlockKey>) -> Result<GetBatch, DatanodeError> {
        let db = self.db.clone();
        let (batch, corrupt) =
            tessera_rpc::blocking(move || -> Result<(GetBatch, u64), DatanodeError> {
                let tx = db.begin_read().map_err(storage)?;
                let table = tx.open_table(BLOCKS).map_err(storage)?;
                let deleted = tx.open_table(DELETED).map_err(storage)?;
                read_sorted(&table, &deleted, &keys)
            })
            .await?;
        if corrupt > 0 {
            self.corrupt_reads.fetch_add(corrupt, Ordering::Relaxed);
            tracing::warn!(corrupt, "corrupt blocks found on read");
        }
        Ok(batch)
    }

    /// Deletes every block of `objects`; returns how many were removed.
    pub async fn delete_objects(&self, objects: Vec<u64>) -> Result<u64, DatanodeError> {
        let (tx, rx) = oneshot::channel();
        self.writer
            .submit(Job::Delete(objects, tx))
            .map_err(storage)?;
        rx.await.map_err(storage)?
    }

    pub async fn stats(&self) -> Result<StoreStats, DatanodeError> {
        let db = self.db.clone();
        let path = self.path.clone();
        let (blocks, bytes) =
            tessera_rpc::blocking(move || -> Result<(u64, u64), DatanodeError> {
                let tx = db.begin_read().map_err(storage)?;
                let blocks = tx
                    .open_table(BLOCKS)
                    .map_err(storage)?
                    .len()
                    .map_err(storage)?;
                let bytes = std::fs::metadata(&path).map(|m| m.len()).unwrap_or(0);
                Ok((blocks, bytes))
            })
            .await?;
        Ok(StoreStats {
            blocks,
            bytes,
            corrupt_reads: self.corrupt_reads.load(Ordering::Relaxed),
            damaged_puts: self.damaged_puts.load(Ordering::Relaxed),
        })
    }
}

/// What one key turned out to be.
#[derive(Clone, Copy)]
enum Found {
    Missing,
    Corrupt,
    Gone,
    /// A verified record at `side[start..end]`.
    At(usize, usize),
}

/// Reads `keys` (any order) with one range scan per run of the same object,
/// several times faster than point lookups, verifying every record found.
/// Verified records are copied once into a side buffer, then packed in the
/// order of `keys`. Returns the batch and how many records were corrupt.
fn read_sorted(
    table: &redb::ReadOnlyTable<(u64, u64), &'static [u8]>,
    deleted: &redb::ReadOnlyTable<u64, ()>,
    keys: &[BlockKey],
) -> Result<(GetBatch, u64), DatanodeError> {
    let mut side: Vec<u8> = Vec::with_capacity(keys.len() * (40 + BLOCK_SIZE));
    let mut found = vec![Found::Missing; keys.len()];
    let mut order: Vec<usize> = (0..keys.len()).collect();
    order.sort_by_key(|&i| (keys[i].object, keys[i].index));
    let mut run_start = 0;
    while run_start < order.len() {
        let object = keys[order[run_start]].object;
        let mut run_end = run_start;
        while run_end < order.len() && keys[order[run_end]].object == object {
            run_end += 1;
        }
        let run = &order[run_start..run_end];
        run_start = run_end;
        if deleted.get(object).map_err(storage)?.is_some() {
            for &i in run {
                found[i] = Found::Gone;
            }
            continue;
        }
        let (first, last) = (keys[run[0]].index, keys[run[run.len() - 1]].index);
        let mut want = run.iter().copied().peekable();
        let iter = match table.range((object, first)..=(object, last)) {
            Ok(iter) => iter,
            Err(e) => {
                tracing::warn!(object, error = %e, "unreadable blocks");
                for &i in run {
                    found[i] = Found::Corrupt;
                }
                continue;
            }
        };
        for entry in iter {
            if want.peek().is_none() {
                break;
            }
            let (k, v) = match entry {
                Ok(kv) => kv,
                Err(e) => {
                    // A page redb cannot read: the blocks still wanted are corrupt.
                    tracing::warn!(object, error = %e, "unreadable blocks");
                    for i in want.by_ref() {
                        found[i] = Found::Corrupt;
                    }
                    break;
                }
            };
            let index = k.value().1;
            while want.next_if(|&i| keys[i].index < index).is_some() {}
            let rec = v.value();
            let mut at = None;
            while let Some(i) = want.next_if(|&i| keys[i].index == index) {
                found[i] = match at {
                    Some(f) => f,
                    None if Block::verify_record(rec) => {
                        let start = side.len();
                        side.extend_from_slice(rec);
                        let f = Found::At(start, side.len());
                        at = Some(f);
                        f
                    }
                    None => Found::Corrupt,
                };
            }
        }
    }
    let mut b = GetBatchBuilder::with_capacity(keys.len());
    let mut corrupt = 0;
    for f in found {
        match f {
            Found::At(start, end) => {
                let rec = &side[start..end];
                b.found(
                    Block::record_generation(rec).unwrap_or(0),
                    &rec[8..40],
                    &rec[40..],
                );
            }
            Found::Missing => b.missing(),
            Found::Gone => b.gone(),
            Found::Corrupt => {
                corrupt += 1;
                b.corrupt();
            }
        }
    }
    Ok((b.finish(), corrupt))
}

fn getrandom_fill(buf: &mut [u8]) {
    getrandom::fill(buf).expect("the OS random source is available");
}

/// Applies a batch of jobs in one durable transaction, then answers each.
fn commit(db: &Database, jobs: Vec<Job>) {
    let result = (|| -> Result<Vec<JobOutcome>, DatanodeError> {
        let mut tx = db.begin_write().map_err(storage)?;
        tx.set_durability(Durability::Immediate).map_err(storage)?;
        let mut outcomes = Vec::with_capacity(jobs.len());
        {
            let mut table = tx.open_table(BLOCKS).map_err(storage)?;
            for job in &jobs {
                outcomes.push(match job {
                    Job::Put(writes, _) => {
                        let mut results = Vec::with_capacity(writes.len());
                        let deleted = tx.open_table(DELETED).map_err(storage)?;
                        // (object, deleted?) of the last object looked up.
                        let mut last: Option<(u64, bool)> = None;
                        for w in writes {
                            let gone = match last {
                                Some((o, g)) if o == w.key.object => g,
                                _ => {
                                    let g = deleted.get(w.key.object).map_err(storage)?.is_some();
                                    last = Some((w.key.object, g));
                                    g
                                }
                            };
                            if gone {
                                // A late write into a collected object must not
                                // bring its blocks back.
                                results.push(PutResult::Gone);
                                continue;
                            }
                            let key = (w.key.object, w.key.index);
                            let rec = w.block.encode();
                            // Insert, and put the old record back if it was newer:
                            // one B-tree operation in the common case.
                            let old = table
                                .insert(key, rec.as_slice())
                                .map_err(storage)?
                                .map(|g| g.value().to_vec());
                            let old_gen = old.as_deref().and_then(Block::record_generation);
                            match (old, old_gen) {
                                (Some(old), Some(g)) if g > w.block.generation => {
                                    table.insert(key, old.as_slice()).map_err(storage)?;
                                    results.push(PutResult::Newer(g));
                                }
                                _ => results.push(PutResult::Stored),
                            }
                        }
                        JobOutcome::Put(results)
                    }
                    Job::Delete(objects, _) => {
                        let mut removed = 0u64;
                        let mut deleted = tx.open_table(DELETED).map_err(storage)?;
                        for &o in objects {
                            deleted.insert(o, ()).map_err(storage)?;
                            table
                                .retain_in((o, 0)..=(o, u64::MAX), |_, _| {
                                    removed += 1;
                                    false
                                })
                                .map_err(storage)?;
                        }
                        JobOutcome::Delete(removed)
                    }
                });
            }
        }
        tx.commit().map_err(storage)?;
        Ok(outcomes)
    })();
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
    Put(Vec<PutResult>),
    Delete(u64),
}
