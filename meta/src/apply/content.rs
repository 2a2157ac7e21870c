//! The content of files: leases of object ids for uploads (lease, renew,
//! publish, swap, abandon) and write leases for in-place writes (begin,
//! commit, resize, end).

use redb::{ReadableTable, ReadableTableMetadata};

use super::Tables;
use crate::change::{MAX_LEASE, Outcome};
use crate::schema::{Lease, WriteLease, dec, enc, storage};
use crate::types::*;

/// The longest write lease a gateway may take (it renews a longer write).
const MAX_WRITE_LEASE_NS: i64 = 120_000_000_000;

impl Tables<'_> {
    pub(super) fn lease_objects(&mut self, count: u64, now: i64) -> Result<Outcome, MetaError> {
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

    pub(super) fn renew_upload(&mut self, object: u64, now: i64) -> Result<Outcome, MetaError> {
        self.check_claim(object)?;
        let (first, mut lease) = self.lease_of(object)?;
        lease.granted = now;
        self.wrote()?;
        self.leases
            .insert(first, enc(&lease).as_slice())
            .map_err(storage)?;
        Ok(Outcome::Done)
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

    #[allow(clippy::too_many_arguments)]
    pub(super) fn publish(
        &mut self,
        parent: u64,
        name: String,
        object: ObjectRef,
        size: u64,
        mode: u32,
        mtime: i64,
        now: i64,
    ) -> Result<Outcome, MetaError> {
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
                self.put_entry(parent, &name, inode.ino)?;
                self.touch_dir(parent, now, 0)?;
                inode
            }
        };
        self.mark_used(object.id)?;
        Ok(Outcome::Inode(inode))
    }

    pub(super) fn swap_object(
        &mut self,
        ino: u64,
        expect: u64,
        object: ObjectRef,
        size: u64,
        mtime: i64,
        now: i64,
    ) -> Result<Outcome, MetaError> {
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

    pub(super) fn abandon(&mut self, object: u64) -> Result<Outcome, MetaError> {
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

    pub(super) fn begin_write(
        &mut self,
        ino: u64,
        end: u64,
        holder: u64,
        ttl_ns: i64,
        now: i64,
    ) -> Result<Outcome, MetaError> {
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

    pub(super) fn commit_write(
        &mut self,
        ino: u64,
        object: ObjectRef,
        end: u64,
        mtime: i64,
        holder: u64,
        now: i64,
    ) -> Result<Outcome, MetaError> {
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

    pub(super) fn resize(
        &mut self,
        ino: u64,
        object: u64,
        size: u64,
        holder: u64,
        now: i64,
    ) -> Result<Outcome, MetaError> {
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

    pub(super) fn abort_write(&mut self, ino: u64, holder: u64) -> Result<Outcome, MetaError> {
        let size = self.inode(ino)?.size;
        self.end_write(ino, holder, size)?;
        Ok(Outcome::Done)
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
}
