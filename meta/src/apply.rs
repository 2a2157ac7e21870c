//! How each [`Change`] is applied inside meta's write transaction: one
//! function per change, each validating everything before it writes
//! anything, so a change that fails leaves no trace while its neighbours in
//! the batch commit.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use redb::{ReadableTable, ReadableTableMetadata};

use crate::change::{Change, MAX_LEASE, Outcome};
use crate::store::*;
use crate::types::*;

/// The longest write lease a gateway may take (it renews a longer write).
const MAX_WRITE_LEASE_NS: i64 = 120_000_000_000;

/// A range of object ids handed to a gateway (see [`crate::store::LEASES`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub(crate) struct Lease {
    end: u64,
    /// When it was granted, ns since the epoch, by meta's clock.
    granted: i64,
}

/// The write lease of one inode and the extent of uncommitted in-place
/// writes into it (see [`Change::BeginWrite`]). Absent: no lease, and every
/// byte past the size is known to be zero or absent.
#[derive(Debug, Clone, Copy, Default, serde::Serialize, serde::Deserialize)]
pub(crate) struct WriteLease {
    /// The gateway holding the lease; 0: none.
    holder: u64,
    /// When the lease ends, ns since the epoch, by meta's clock.
    expires: i64,
    /// Uncommitted writes may have left bytes up to here past the size.
    dirty_end: u64,
}

pub(crate) struct Tables<'t> {
    inodes: redb::Table<'t, u64, &'static [u8]>,
    dirents: redb::Table<'t, (u64, &'static str), u64>,
    ring: redb::Table<'t, u32, &'static [u8]>,
    counters: redb::Table<'t, &'static str, u64>,
    config: redb::Table<'t, &'static str, &'static [u8]>,
    gc: redb::Table<'t, u64, &'static [u8]>,
    leases: redb::Table<'t, u64, &'static [u8]>,
    lease_used: redb::Table<'t, u64, ()>,
    writes: redb::Table<'t, u64, &'static [u8]>,
    /// Writes made so far in this transaction: a change that fails after
    /// its first write has left part of itself behind, and the batch is
    /// redone without it (see `commit_batch`).
    pub(crate) written: u64,
    /// Fault injection (tests): when non-zero, the write that brings it to
    /// zero fails as a storage error would.
    fail_write: Arc<AtomicU64>,
}

impl<'t> Tables<'t> {
    pub(crate) fn open(
        tx: &'t redb::WriteTransaction,
        fail_write: Arc<AtomicU64>,
    ) -> Result<Self, MetaError> {
        Ok(Tables {
            inodes: tx.open_table(INODES).map_err(storage)?,
            dirents: tx.open_table(DIRENTS).map_err(storage)?,
            ring: tx.open_table(RING).map_err(storage)?,
            counters: tx.open_table(COUNTERS).map_err(storage)?,
            config: tx.open_table(CONFIG).map_err(storage)?,
            gc: tx.open_table(GC).map_err(storage)?,
            leases: tx.open_table(LEASES).map_err(storage)?,
            lease_used: tx.open_table(LEASE_USED).map_err(storage)?,
            writes: tx.open_table(WRITES).map_err(storage)?,
            written: 0,
            fail_write,
        })
    }

    /// Called before every write to a table.
    fn wrote(&mut self) -> Result<(), MetaError> {
        self.written += 1;
        let n = self.fail_write.load(Ordering::Relaxed);
        if n > 0 {
            self.fail_write.store(n - 1, Ordering::Relaxed);
            if n == 1 {
                return Err(storage("injected write failure"));
            }
        }
        Ok(())
    }

    fn write_lease(&self, ino: u64) -> Result<WriteLease, MetaError> {
        Ok(match self.writes.get(ino).map_err(storage)? {
            Some(v) => dec(v.value())?,
            None => WriteLease::default(),
        })
    }

    fn set_write_lease(&mut self, ino: u64, w: WriteLease) -> Result<(), MetaError> {
        self.wrote()?;
        if w.holder == 0 && w.dirty_end == 0 {
            self.writes.remove(ino).map_err(storage)?;
        } else {
            self.writes
                .insert(ino, enc(&w).as_slice())
                .map_err(storage)?;
        }
        Ok(())
    }

    /// Ends `holder`'s lease of `ino` (if it holds it) and forgets dirty
    /// bytes the file's `size` now covers.
    fn end_write(&mut self, ino: u64, holder: u64, size: u64) -> Result<(), MetaError> {
        let mut w = self.write_lease(ino)?;
        let before = (w.holder, w.dirty_end);
        if w.holder == holder {
            w.holder = 0;
            w.expires = 0;
        }
        if w.dirty_end <= size {
            w.dirty_end = 0;
        }
        if (w.holder, w.dirty_end) != before {
            self.set_write_lease(ino, w)?;
        }
        Ok(())
    }

    /// Fails unless `holder` holds the write lease of `ino` (it may have
    /// expired, as long as nobody took it since).
    fn held(&self, ino: u64, holder: u64) -> Result<WriteLease, MetaError> {
        let w = self.write_lease(ino)?;
        if w.holder != holder || holder == 0 {
            return Err(MetaError::Conflict(format!(
                "inode {ino}: this write lost its write lease (another write began after it expired)"
            )));
        }
        Ok(w)
    }

    /// Refuses while a holder other than `holder` has a live write lease.
    fn check_write_lease(&self, ino: u64, holder: u64, now: i64) -> Result<WriteLease, MetaError> {
        let w = self.write_lease(ino)?;
        if w.holder != 0 && w.holder != holder && w.expires > now {
            return Err(MetaError::Busy(format!(
                "inode {ino} is being written by another gateway"
            )));
        }
        Ok(w)
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
        self.wrote()?;
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
        let lease = self.lease_of(id).map_err(|_| expired())?;
        if self.lease_used.get(id).map_err(storage)?.is_some() || id >= lease.1.end {
            return Err(expired());
        }
        Ok(())
    }

    /// The lease whose range starts at or before `id` (its first id and record).
    fn lease_of(&self, id: u64) -> Result<(u64, Lease), MetaError> {
        let (k, v) = self
            .leases
            .range(..=id)
            .map_err(storage)?
            .next_back()
            .transpose()
            .map_err(storage)?
            .ok_or_else(|| MetaError::NotFound(format!("lease of object {id}")))?;
        Ok((k.value(), dec::<Lease>(v.value())?))
    }

    fn mark_used(&mut self, id: u64) -> Result<(), MetaError> {
        self.wrote()?;
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
        self.wrote()?;
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
        self.wrote()?;
        self.gc
            .insert(object.id, enc(&entry).as_slice())
            .map_err(storage)?;
        Ok(())
    }

    /// Drops an inode that lost its last name.
    fn drop_inode(&mut self, inode: &Inode) -> Result<(), MetaError> {
        self.wrote()?;
        self.inodes.remove(inode.ino).map_err(storage)?;
        self.queue_gc(inode.object)
    }

    pub(crate) fn apply(&mut self, change: Change) -> Result<Outcome, MetaError> {
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
                self.wrote()?;
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
                self.wrote()?;
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
                self.wrote()?;
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
            Change::Resize {
                ino,
                object,
                size,
                holder,
            } => {
                let mut inode = self.inode(ino)?;
                if inode.is_dir() {
                    return Err(MetaError::IsADirectory(format!("inode {ino}")));
                }
                if inode.object.id != object {
                    return Err(MetaError::Conflict(format!("inode {ino}")));
                }
                if size < inode.size {
                    return Err(MetaError::Invalid(format!(
                        "inode {ino}: resize only grows a file (shrinking swaps in a new object)"
                    )));
                }
                self.held(ino, holder)?;
                self.end_write(ino, holder, size)?;
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
                self.wrote()?;
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
            Change::BeginWrite {
                ino,
                end,
                holder,
                ttl_ns,
            } => {
                let inode = self.inode(ino)?;
                if inode.kind != FileKind::File {
                    return Err(MetaError::IsADirectory(format!("inode {ino}")));
                }
                if holder == 0 {
                    return Err(MetaError::Invalid("a write lease needs a holder".into()));
                }
                let mut w = self.check_write_lease(ino, holder, now)?;
                let dirty_end = w.dirty_end;
                w.holder = holder;
                w.expires = now.saturating_add(ttl_ns.clamp(0, MAX_WRITE_LEASE_NS));
                if end > inode.size {
                    w.dirty_end = w.dirty_end.max(end);
                }
                self.set_write_lease(ino, w)?;
                Ok(Outcome::Write {
                    generation: self.tick()?,
                    dirty_end,
                })
            }
            Change::EndWrite { ino, holder } => {
                let size = self.inode(ino)?.size;
                self.end_write(ino, holder, size)?;
                Ok(Outcome::Done)
            }
            Change::RenewUpload { object } => {
                self.check_claim(object)?;
                let (first, mut lease) = self.lease_of(object)?;
                lease.granted = now;
                self.wrote()?;
                self.leases
                    .insert(first, enc(&lease).as_slice())
                    .map_err(storage)?;
                Ok(Outcome::Done)
            }
            Change::CommitWrite {
                ino,
                object,
                end,
                mtime,
                holder,
            } => {
                let mut inode = self.inode(ino)?;
                if inode.is_dir() {
                    return Err(MetaError::IsADirectory(format!("inode {ino}")));
                }
                self.held(ino, holder)?;
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
                self.end_write(ino, holder, inode.size)?;
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
                        self.wrote()?;
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
                        self.wrote()?;
                        if self.lease_used.remove(id).map_err(storage)?.is_none() {
                            self.queue_gc(ObjectRef {
                                id,
                                ..ObjectRef::NONE
                            })?;
                            collected += 1;
                        }
                    }
                    self.wrote()?;
                    self.leases.remove(first).map_err(storage)?;
                }
                Ok(Outcome::Count(collected))
            }
            Change::GcDone { objects } => {
                for id in objects {
                    self.wrote()?;
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
            // The new object holds no uncommitted bytes.
            let mut w = self.write_lease(inode.ino)?;
            if w.dirty_end != 0 {
                w.dirty_end = 0;
                self.set_write_lease(inode.ino, w)?;
            }
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
        self.wrote()?;
        self.dirents.remove((parent, name)).map_err(storage)?;
        self.wrote()?;
        self.dirents
            .insert((new_parent, new_name), ino)
            .map_err(storage)?;
        inode.parent = new_parent;
        inode.ctime = now;
        inode.version = self.tick()?;
        self.put(&inode)?;
        if parent == new_parent {
            // A directory leaving and arriving in the same parent changes
            // nothing, unless it replaced an empty directory there.
            let left = if inode.is_dir() { -1 } else { 0 };
            self.touch_dir(parent, now, left + dir_delta_new)?;
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
        self.wrote()?;
        self.ring
            .insert(slot, enc(&record).as_slice())
            .map_err(storage)?;
        Ok(Outcome::Slot(slot))
    }
}
