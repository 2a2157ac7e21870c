//! How each [`Change`] is applied inside meta's write transaction: one
//! function per change, each validating everything before it writes
//! anything, so a change that fails leaves no trace while its neighbours in
//! the batch commit.
//!
//! The changes are grouped by concern: [`namespace`] (names and
//! attributes), [`content`] (object ids, uploads and in-place writes),
//! [`queues`] (reaping uploads, the GC queue), [`ring`] (datanodes) and
//! [`dav`] (WebDAV locks and dead properties).

mod content;
mod dav;
mod namespace;
mod posix;
mod queues;
mod repairs;
mod ring;

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use redb::ReadableTable;

use crate::change::{Change, Outcome};
use crate::schema::*;
use crate::types::*;

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
    locks: redb::Table<'t, &'static str, &'static [u8]>,
    props: redb::Table<'t, (u64, &'static str, &'static str), &'static [u8]>,
    xattrs: redb::Table<'t, (u64, &'static [u8]), &'static [u8]>,
    flocks: redb::Table<'t, u64, &'static [u8]>,
    sessions: redb::Table<'t, u64, i64>,
    orphans: redb::Table<'t, u64, u64>,
    repairs: redb::Table<'t, (u32, u64, u64), &'static [u8]>,
    gc_done: redb::Table<'t, (u64, u32), ()>,
    /// What the changes applied so far touched, for the change feed.
    pub(crate) events: Vec<Event>,
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
            locks: tx.open_table(LOCKS).map_err(storage)?,
            props: tx.open_table(PROPS).map_err(storage)?,
            xattrs: tx.open_table(XATTRS).map_err(storage)?,
            flocks: tx.open_table(FLOCKS).map_err(storage)?,
            sessions: tx.open_table(SESSIONS).map_err(storage)?,
            orphans: tx.open_table(ORPHANS).map_err(storage)?,
            repairs: tx.open_table(REPAIRS).map_err(storage)?,
            gc_done: tx.open_table(GC_DONE).map_err(storage)?,
            events: Vec::new(),
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
        self.events.push(Event::Inode(inode.ino));
        Ok(())
    }

    /// Names `ino` as `parent/name` (replacing what the name held).
    fn put_entry(&mut self, parent: u64, name: &str, ino: u64) -> Result<(), MetaError> {
        self.wrote()?;
        self.dirents.insert((parent, name), ino).map_err(storage)?;
        self.events.push(Event::Entry {
            parent,
            name: name.to_string(),
        });
        Ok(())
    }

    fn remove_entry(&mut self, parent: u64, name: &str) -> Result<(), MetaError> {
        self.wrote()?;
        self.dirents.remove((parent, name)).map_err(storage)?;
        self.events.push(Event::Entry {
            parent,
            name: name.to_string(),
        });
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

    /// Marks a directory changed (an entry came or went); returns it.
    fn touch_dir(&mut self, ino: u64, now: i64, nlink_delta: i32) -> Result<Inode, MetaError> {
        let mut d = self.inode(ino)?;
        d.mtime = now;
        d.ctime = now;
        d.nlink = (d.nlink as i64 + nlink_delta as i64).max(1) as u32;
        d.version = self.tick()?;
        self.put(&d)?;
        Ok(d)
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
            } => self.create(
                parent, name, kind, mode, uid, gid, target, seed, exclusive, now,
            ),
            Change::Unlink { parent, name, hold } => self.unlink(parent, name, hold, now),
            Change::Rmdir { parent, name } => self.rmdir(parent, name, now),
            Change::Rename {
                parent,
                name,
                new_parent,
                new_name,
                flags,
            } => {
                if flags.exchange {
                    if flags.no_replace {
                        return Err(MetaError::Invalid(
                            "RENAME_EXCHANGE and RENAME_NOREPLACE together".into(),
                        ));
                    }
                    self.exchange(parent, &name, new_parent, &new_name, now)
                } else {
                    self.rename(parent, &name, new_parent, &new_name, flags, now)
                }
            }
            Change::Link {
                ino,
                new_parent,
                new_name,
            } => self.link(ino, new_parent, new_name, now),
            Change::RenewSession { session, ttl_ns } => self.renew_session(session, ttl_ns, now),
            Change::EndSession { session } => self.end_session(session),
            Change::Forget { ino, session } => self.forget(ino, session),
            Change::SetXattr {
                ino,
                name,
                value,
                mode,
            } => self.set_xattr(ino, name, value, mode, now),
            Change::RemoveXattr { ino, name } => self.remove_xattr(ino, name, now),
            Change::SetLock { ino, lock } => self.set_lock(ino, lock, now),
            Change::ReleaseLocks {
                ino,
                session,
                owner,
            } => self.release_locks(ino, session, owner),
            Change::Sync => Ok(Outcome::Done),
            Change::SetAttr { ino, attr } => self.set_attr(ino, attr, now),
            Change::Resize {
                ino,
                object,
                size,
                holder,
            } => self.resize(ino, object, size, holder, now),
            Change::LeaseObjects { count } => self.lease_objects(count, now),
            Change::BeginWrite {
                ino,
                end,
                holder,
                ttl_ns,
            } => self.begin_write(ino, end, holder, ttl_ns, now),
            Change::EndWrite { ino, holder } => self.abort_write(ino, holder),
            Change::RenewUpload { object } => self.renew_upload(object, now),
            Change::CommitWrite {
                ino,
                object,
                end,
                mtime,
                holder,
            } => self.commit_write(ino, object, end, mtime, holder, now),
            Change::SwapObject {
                ino,
                expect,
                object,
                size,
                mtime,
            } => self.swap_object(ino, expect, object, size, mtime, now),
            Change::Publish {
                parent,
                name,
                object,
                size,
                mode,
                mtime,
            } => self.publish(parent, name, object, size, mode, mtime, now),
            Change::Abandon { object } => self.abandon(object),
            Change::ReapLeases { ttl_ns } => self.reap_leases(ttl_ns, now),
            Change::GcDone { objects } => self.gc_done(objects),
            Change::GcDoneOn { slot, objects } => self.gc_done_on(slot, objects),
            Change::NeedRepair { ranges } => self.need_repair(ranges),
            Change::RepairDone { done } => self.repair_done(done),
            Change::Register {
                node_id,
                addr,
                slot,
            } => self.register(node_id, addr, slot),
            Change::Lock(req) => self.lock(req, now),
            Change::Unlock {
                path,
                token,
                principal,
            } => self.unlock(&path, &token, principal.as_deref(), now),
            Change::RefreshLock {
                path,
                token,
                timeout_s,
                principal,
            } => self.refresh_lock(&path, &token, timeout_s, principal.as_deref(), now),
            Change::DropLocks { path } => self.drop_locks(&path),
            Change::PatchProps { ino, patch, mtime } => self.patch_props(ino, patch, mtime, now),
            Change::CopyProps { from, to } => self.copy_props(from, to),
        }
    }
}
