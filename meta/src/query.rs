//! The read side of the store: each query runs in one read transaction
//! (see `MetaStore::read`), so what it answers is one consistent snapshot.

use redb::{ReadableTable, ReadableTableMetadata};

use crate::dav::{locks_around, props_of};
use crate::schema::{
    DIRENTS, FLOCKS, GC, GC_DONE, INODES, LEASES, LOCKS, PROPS, REPAIRS, RING, SESSIONS,
    StoredRepair, WRITES, WriteLease, XATTRS, dec, get_inode, storage, xattrs_of,
};
use crate::store::MetaStore;
use crate::types::*;

impl MetaStore {
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
            parent_and_entry(&inodes, &dirents, &components, &name)
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

    /// One look at a path for a WebDAV request: what is there, its parent
    /// or entries as `want` says, their dead properties, and the live locks
    /// around it (see [`DavView`]); the properties only `with_props`. A missing last component is not an
    /// error (a PUT or LOCK creates it); a missing directory above it is.
    pub async fn view(
        &self,
        components: Vec<String>,
        want: ViewWant,
        with_props: bool,
    ) -> Result<DavView, MetaError> {
        self.read(move |tx| {
            let (inodes, dirents) = namespace(tx)?;
            let (inode, parent) = match components.split_last() {
                None => (Some(get_inode(&inodes, ROOT_INO)?), None),
                Some((name, dir)) => {
                    let (parent, inode) = parent_and_entry(&inodes, &dirents, dir, name)?;
                    (inode, Some(parent))
                }
            };
            let entries = match &inode {
                Some(i) if want == ViewWant::Listing && i.is_dir() => {
                    Some(list_dir(&inodes, &dirents, i.ino)?)
                }
                _ => None,
            };
            let props_t = tx.open_table(PROPS).map_err(storage)?;
            let mut props = Vec::new();
            let inos = inode
                .iter()
                .map(|i| i.ino)
                .chain(entries.iter().flatten().map(|(_, i)| i.ino))
                .filter(|_| with_props);
            for ino in inos {
                let p = props_of(&props_t, ino)?;
                if !p.is_empty() {
                    props.push((ino, p));
                }
            }
            let locks_t = tx.open_table(LOCKS).map_err(storage)?;
            let now = now_ns();
            let locks = locks_around(&locks_t, &components.join("/"), now)?
                .iter()
                .map(|l| l.report(now))
                .collect();
            Ok(DavView {
                inode,
                parent: if want == ViewWant::Parent {
                    parent
                } else {
                    None
                },
                entries,
                props,
                locks,
            })
        })
        .await
    }

    /// The live locks around a path: its own, its ancestors' deep ones,
    /// and every one below it.
    pub async fn locks(&self, components: Vec<String>) -> Result<Vec<LockInfo>, MetaError> {
        self.read(move |tx| {
            for c in &components {
                validate_name(c)?;
            }
            let t = tx.open_table(LOCKS).map_err(storage)?;
            let now = now_ns();
            Ok(locks_around(&t, &components.join("/"), now)?
                .iter()
                .map(|l| l.report(now))
                .collect())
        })
        .await
    }

    /// The value of extended attribute `name` of `ino`.
    pub async fn get_xattr(&self, ino: u64, name: Vec<u8>) -> Result<Vec<u8>, MetaError> {
        self.read(move |tx| {
            let inodes = tx.open_table(INODES).map_err(storage)?;
            get_inode(&inodes, ino)?;
            let t = tx.open_table(XATTRS).map_err(storage)?;
            t.get((ino, name.as_slice()))
                .map_err(storage)?
                .map(|v| v.value().to_vec())
                .ok_or_else(|| MetaError::NoAttr(String::from_utf8_lossy(&name).into_owned()))
        })
        .await
    }

    /// The names of the extended attributes of `ino`, in byte order.
    pub async fn list_xattr(&self, ino: u64) -> Result<Vec<Vec<u8>>, MetaError> {
        self.read(move |tx| {
            let inodes = tx.open_table(INODES).map_err(storage)?;
            get_inode(&inodes, ino)?;
            let t = tx.open_table(XATTRS).map_err(storage)?;
            Ok(xattrs_of(&t, ino)?.into_iter().map(|(n, _)| n).collect())
        })
        .await
    }

    /// The first live lock of another owner that keeps `lock` from being
    /// taken on `ino`, if any (F_GETLK).
    pub async fn get_lock(&self, ino: u64, lock: FileLock) -> Result<Option<FileLock>, MetaError> {
        self.read(move |tx| {
            let inodes = tx.open_table(INODES).map_err(storage)?;
            get_inode(&inodes, ino)?;
            let t = tx.open_table(FLOCKS).map_err(storage)?;
            let sessions = tx.open_table(SESSIONS).map_err(storage)?;
            let Some(v) = t.get(ino).map_err(storage)? else {
                return Ok(None);
            };
            let locks: Vec<FileLock> = dec(v.value())?;
            let now = now_ns();
            for l in locks {
                let live = sessions
                    .get(l.session)
                    .map_err(storage)?
                    .is_some_and(|e| e.value() > now);
                if live && lock.conflicts(&l) {
                    return Ok(Some(l));
                }
            }
            Ok(None)
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
            Ok(Ring {
                settings,
                slots,
                down: Vec::new(),
                rebuilding: Vec::new(),
            })
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

    /// Up to `limit` queued repairs of `slot` (every slot: `None`), in
    /// order of slot, object and block.
    pub async fn repairs(
        &self,
        slot: Option<u32>,
        limit: usize,
    ) -> Result<Vec<RepairEntry>, MetaError> {
        self.read(move |tx| {
            let t = tx.open_table(REPAIRS).map_err(storage)?;
            let iter = match slot {
                Some(s) => t.range((s, 0, 0)..=(s, u64::MAX, u64::MAX)),
                None => t.iter(),
            };
            let mut out = Vec::new();
            for e in iter.map_err(storage)?.take(limit) {
                let (k, v) = e.map_err(storage)?;
                out.push(repair_entry(k.value(), dec(v.value())?));
            }
            Ok(out)
        })
        .await
    }

    /// Ranges waiting in the repair queue.
    pub async fn repair_ranges(&self) -> Result<u64, MetaError> {
        self.read(move |tx| {
            tx.open_table(REPAIRS)
                .map_err(storage)?
                .len()
                .map_err(storage)
        })
        .await
    }

    /// Per slot, how many blocks the repair queue says it misses, with `r`
    /// copies per block.
    pub async fn under_replicated(&self, r: u32) -> Result<Vec<(u32, u64)>, MetaError> {
        self.read(move |tx| {
            let t = tx.open_table(REPAIRS).map_err(storage)?;
            let mut out: Vec<(u32, u64)> = Vec::new();
            for e in t.iter().map_err(storage)? {
                let (k, v) = e.map_err(storage)?;
                let RepairEntry { range, .. } = repair_entry(k.value(), dec(v.value())?);
                let n = range
                    .object
                    .blocks_on(range.slot, range.first..range.end, r);
                match out.last_mut() {
                    Some((s, total)) if *s == range.slot => *total += n,
                    _ => out.push((range.slot, n)),
                }
            }
            Ok(out)
        })
        .await
    }

    /// Up to `limit` objects held by files, in inode order after inode
    /// `after`: what the datanodes should hold (scrub and rebuild walk it).
    pub async fn live_objects(
        &self,
        after: u64,
        limit: usize,
    ) -> Result<Vec<LiveObject>, MetaError> {
        self.read(move |tx| {
            let inodes = tx.open_table(INODES).map_err(storage)?;
            let writes = tx.open_table(WRITES).map_err(storage)?;
            let mut out = Vec::new();
            for e in inodes.range(after.saturating_add(1)..).map_err(storage)? {
                if out.len() >= limit {
                    break;
                }
                let (k, v) = e.map_err(storage)?;
                let inode: Inode = dec(v.value())?;
                if inode.object.is_none() {
                    continue;
                }
                let dirty = match writes.get(k.value()).map_err(storage)? {
                    Some(w) => dec::<WriteLease>(w.value())?.dirty_end,
                    None => 0,
                };
                out.push(LiveObject {
                    ino: inode.ino,
                    object: inode.object,
                    blocks: inode.size.max(dirty).div_ceil(512),
                });
            }
            Ok(out)
        })
        .await
    }

    /// Like [`MetaStore::gc_list`], each with the slots that deleted it,
    /// leaving out those only slots in `skip` (down) still have to delete:
    /// a node that is down holds up nothing but its own deletes.
    pub async fn gc_due(
        &self,
        limit: usize,
        min_age_ns: i64,
        slots: u32,
        skip: Vec<u32>,
    ) -> Result<Vec<GcDue>, MetaError> {
        let before = now_ns().saturating_sub(min_age_ns.max(0));
        self.read(move |tx| {
            let t = tx.open_table(GC).map_err(storage)?;
            let done_t = tx.open_table(GC_DONE).map_err(storage)?;
            let mut out = Vec::new();
            for e in t.iter().map_err(storage)? {
                if out.len() >= limit {
                    break;
                }
                let (k, v) = e.map_err(storage)?;
                let entry = dec::<GcEntry>(v.value())?;
                if entry.queued > before {
                    continue;
                }
                let id = k.value();
                let mut done = Vec::new();
                for d in done_t.range((id, 0)..=(id, u32::MAX)).map_err(storage)? {
                    done.push(d.map_err(storage)?.0.value().1);
                }
                if (0..slots)
                    .filter(|s| !done.contains(s))
                    .all(|s| skip.contains(&s))
                {
                    continue;
                }
                out.push(GcDue { entry, done });
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

/// The directory at `dir` and what its entry `name` holds, if anything.
fn parent_and_entry(
    inodes: &ReadInodes,
    dirents: &ReadDirents,
    dir: &[String],
    name: &str,
) -> Result<(Inode, Option<Inode>), MetaError> {
    validate_name(name)?;
    let parent = walk(inodes, dirents, dir)?;
    if !parent.is_dir() {
        return Err(MetaError::NotADirectory(format!("/{}", dir.join("/"))));
    }
    let existing = match dirents.get((parent.ino, name)).map_err(storage)? {
        Some(ino) => Some(get_inode(inodes, ino.value())?),
        None => None,
    };
    Ok((parent, existing))
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

fn repair_entry((slot, id, first): (u32, u64, u64), stored: StoredRepair) -> RepairEntry {
    RepairEntry {
        range: RepairRange {
            slot,
            object: ObjectRef {
                id,
                seed: stored.seed,
                width: stored.width,
            },
            first,
            end: stored.end,
        },
        seq: stored.seq,
    }
}
