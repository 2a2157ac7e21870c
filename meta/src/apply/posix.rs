//! What a POSIX mount needs besides names and content: mount sessions and
//! the orphans they hold (files unlinked while open), extended attributes,
//! and byte range locks (fcntl and flock) shared by every mount.

use redb::ReadableTable;

use super::Tables;
use crate::change::Outcome;
use crate::schema::{dec, enc, storage, xattrs_of};
use crate::types::*;

impl Tables<'_> {
    pub(super) fn session_live(&self, session: u64, now: i64) -> Result<bool, MetaError> {
        Ok(self
            .sessions
            .get(session)
            .map_err(storage)?
            .is_some_and(|e| e.value() > now))
    }

    pub(super) fn renew_session(
        &mut self,
        session: u64,
        ttl_ns: i64,
        now: i64,
    ) -> Result<Outcome, MetaError> {
        if session == 0 || ttl_ns <= 0 {
            return Err(MetaError::Invalid("a session needs an id and a TTL".into()));
        }
        self.wrote()?;
        self.sessions
            .insert(session, now.saturating_add(ttl_ns))
            .map_err(storage)?;
        Ok(Outcome::Done)
    }

    /// Ends `session`: its orphans are dropped and its locks released.
    pub(super) fn end_session(&mut self, session: u64) -> Result<Outcome, MetaError> {
        let mut held = Vec::new();
        for e in self.orphans.iter().map_err(storage)? {
            let (k, v) = e.map_err(storage)?;
            if v.value() == session {
                held.push(k.value());
            }
        }
        for ino in held {
            self.forget(ino, session)?;
        }
        let mut locked = Vec::new();
        for e in self.flocks.iter().map_err(storage)? {
            let (k, v) = e.map_err(storage)?;
            let locks: Vec<FileLock> = dec(v.value())?;
            if locks.iter().any(|l| l.session == session) {
                locked.push(k.value());
            }
        }
        for ino in locked {
            self.release_locks(ino, session, None)?;
        }
        if self.sessions.get(session).map_err(storage)?.is_some() {
            self.wrote()?;
            self.sessions.remove(session).map_err(storage)?;
        }
        Ok(Outcome::Done)
    }

    /// Ends the sessions whose time ran out (a mount that died).
    pub(super) fn reap_sessions(&mut self, now: i64) -> Result<(), MetaError> {
        let mut dead = Vec::new();
        for e in self.sessions.iter().map_err(storage)? {
            let (k, v) = e.map_err(storage)?;
            if v.value() <= now {
                dead.push(k.value());
            }
        }
        for s in dead {
            self.end_session(s)?;
        }
        Ok(())
    }

    /// The orphan `ino` held by `session` goes (its last handle closed).
    pub(super) fn forget(&mut self, ino: u64, session: u64) -> Result<Outcome, MetaError> {
        let holder = self.orphans.get(ino).map_err(storage)?.map(|v| v.value());
        if holder != Some(session) {
            return Ok(Outcome::Done);
        }
        self.wrote()?;
        self.orphans.remove(ino).map_err(storage)?;
        if let Ok(inode) = self.inode(ino)
            && inode.nlink == 0
        {
            self.drop_inode(&inode)?;
        }
        Ok(Outcome::Done)
    }

    /// Drops everything kept about `ino` here (it is being deleted).
    pub(super) fn drop_posix(&mut self, ino: u64) -> Result<(), MetaError> {
        let names = self.xattr_names(ino)?;
        for n in names {
            self.wrote()?;
            self.xattrs.remove((ino, n.as_slice())).map_err(storage)?;
        }
        if self.flocks.get(ino).map_err(storage)?.is_some() {
            self.wrote()?;
            self.flocks.remove(ino).map_err(storage)?;
        }
        if self.orphans.get(ino).map_err(storage)?.is_some() {
            self.wrote()?;
            self.orphans.remove(ino).map_err(storage)?;
        }
        Ok(())
    }

    // ----- extended attributes -----

    fn xattr_names(&self, ino: u64) -> Result<Vec<Vec<u8>>, MetaError> {
        Ok(xattrs_of(&self.xattrs, ino)?
            .into_iter()
            .map(|(n, _)| n)
            .collect())
    }

    fn xattr_bytes(&self, ino: u64) -> Result<usize, MetaError> {
        Ok(xattrs_of(&self.xattrs, ino)?.iter().map(|(_, b)| b).sum())
    }

    fn touch_inode(&mut self, ino: u64, now: i64) -> Result<(), MetaError> {
        let mut inode = self.inode(ino)?;
        inode.ctime = now;
        inode.version = self.tick()?;
        self.put(&inode)
    }

    pub(super) fn set_xattr(
        &mut self,
        ino: u64,
        name: Vec<u8>,
        value: Vec<u8>,
        mode: XattrMode,
        now: i64,
    ) -> Result<Outcome, MetaError> {
        if name.is_empty() || name.len() > MAX_XATTR_NAME {
            return Err(MetaError::Invalid(format!(
                "an attribute name has 1 to {MAX_XATTR_NAME} bytes"
            )));
        }
        if value.len() > MAX_XATTR_VALUE {
            return Err(MetaError::Invalid(format!(
                "an attribute value has at most {MAX_XATTR_VALUE} bytes"
            )));
        }
        self.inode(ino)?;
        let shown = String::from_utf8_lossy(&name).into_owned();
        let old = self
            .xattrs
            .get((ino, name.as_slice()))
            .map_err(storage)?
            .map(|v| v.value().len());
        match (mode, old) {
            (XattrMode::Create, Some(_)) => return Err(MetaError::Exists(shown)),
            (XattrMode::Replace, None) => return Err(MetaError::NoAttr(shown)),
            _ => {}
        }
        let total = self.xattr_bytes(ino)? - old.map(|o| o + name.len()).unwrap_or(0)
            + name.len()
            + value.len();
        if total > MAX_XATTR_BYTES {
            return Err(MetaError::NoSpace(format!(
                "inode {ino}: extended attributes over {MAX_XATTR_BYTES} bytes"
            )));
        }
        self.wrote()?;
        self.xattrs
            .insert((ino, name.as_slice()), value.as_slice())
            .map_err(storage)?;
        self.touch_inode(ino, now)?;
        Ok(Outcome::Done)
    }

    pub(super) fn remove_xattr(
        &mut self,
        ino: u64,
        name: Vec<u8>,
        now: i64,
    ) -> Result<Outcome, MetaError> {
        self.inode(ino)?;
        if self
            .xattrs
            .get((ino, name.as_slice()))
            .map_err(storage)?
            .is_none()
        {
            return Err(MetaError::NoAttr(
                String::from_utf8_lossy(&name).into_owned(),
            ));
        }
        self.wrote()?;
        self.xattrs
            .remove((ino, name.as_slice()))
            .map_err(storage)?;
        self.touch_inode(ino, now)?;
        Ok(Outcome::Done)
    }

    // ----- byte range locks -----

    fn locks_of(&self, ino: u64) -> Result<Vec<FileLock>, MetaError> {
        match self.flocks.get(ino).map_err(storage)? {
            Some(v) => dec(v.value()),
            None => Ok(Vec::new()),
        }
    }

    fn put_locks(&mut self, ino: u64, locks: &[FileLock]) -> Result<(), MetaError> {
        self.wrote()?;
        if locks.is_empty() {
            self.flocks.remove(ino).map_err(storage)?;
        } else {
            self.flocks
                .insert(ino, enc(&locks.to_vec()).as_slice())
                .map_err(storage)?;
        }
        Ok(())
    }

    pub(super) fn set_lock(
        &mut self,
        ino: u64,
        lock: FileLock,
        now: i64,
    ) -> Result<Outcome, MetaError> {
        if lock.start > lock.end {
            return Err(MetaError::Invalid(
                "a lock range ends before it starts".into(),
            ));
        }
        self.inode(ino)?;
        let mut locks = Vec::new();
        // Locks of sessions that ended are dead: drop them on the way.
        for l in self.locks_of(ino)? {
            if l.session == lock.session || self.session_live(l.session, now)? {
                locks.push(l);
            }
        }
        if lock.kind != LockKind::Unlock
            && let Some(c) = locks.iter().find(|l| lock.conflicts(l))
        {
            return Err(MetaError::WouldBlock(Box::new(c.clone())));
        }
        let locks = apply_lock(locks, lock);
        self.put_locks(ino, &locks)?;
        Ok(Outcome::Done)
    }

    pub(super) fn release_locks(
        &mut self,
        ino: u64,
        session: u64,
        owner: Option<u64>,
    ) -> Result<Outcome, MetaError> {
        let locks = self.locks_of(ino)?;
        let keep: Vec<FileLock> = locks
            .iter()
            .filter(|l| !(l.session == session && owner.is_none_or(|o| o == l.owner)))
            .cloned()
            .collect();
        if keep.len() != locks.len() {
            self.put_locks(ino, &keep)?;
        }
        Ok(Outcome::Done)
    }
}

/// POSIX semantics: the owner's locks inside the new lock's range are
/// replaced by it (an unlock just removes them), partly covered ones are
/// split, and the owner's adjacent or overlapping locks of one kind merge.
pub(crate) fn apply_lock(locks: Vec<FileLock>, new: FileLock) -> Vec<FileLock> {
    let mut out = Vec::with_capacity(locks.len() + 2);
    let mut mine = Vec::new();
    for l in locks {
        if !l.same_owner(&new) {
            out.push(l);
            continue;
        }
        if !l.overlaps(&new) {
            mine.push(l);
            continue;
        }
        if l.start < new.start {
            mine.push(FileLock {
                end: new.start - 1,
                ..l.clone()
            });
        }
        if l.end > new.end {
            mine.push(FileLock {
                start: new.end + 1,
                ..l.clone()
            });
        }
    }
    if new.kind != LockKind::Unlock {
        mine.push(new);
    }
    mine.sort_by_key(|l| l.start);
    let mut merged: Vec<FileLock> = Vec::with_capacity(mine.len());
    for l in mine {
        if let Some(last) = merged.last_mut()
            && last.kind == l.kind
            && last.end.saturating_add(1) >= l.start
        {
            last.end = last.end.max(l.end);
            continue;
        }
        merged.push(l);
    }
    out.extend(merged);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lk(owner: u64, start: u64, end: u64, kind: LockKind) -> FileLock {
        FileLock {
            session: 1,
            owner,
            pid: 7,
            start,
            end,
            kind,
        }
    }

    fn ranges(locks: &[FileLock]) -> Vec<(u64, u64, u64, LockKind)> {
        let mut v: Vec<_> = locks
            .iter()
            .map(|l| (l.owner, l.start, l.end, l.kind))
            .collect();
        v.sort_by_key(|r| (r.0, r.1));
        v
    }

    #[test]
    fn unlock_splits_and_like_locks_merge() {
        let l = apply_lock(vec![], lk(1, 0, 99, LockKind::Write));
        let l = apply_lock(l, lk(1, 40, 59, LockKind::Unlock));
        assert_eq!(
            ranges(&l),
            [(1, 0, 39, LockKind::Write), (1, 60, 99, LockKind::Write)]
        );
        let l = apply_lock(l, lk(1, 40, 59, LockKind::Write));
        assert_eq!(ranges(&l), [(1, 0, 99, LockKind::Write)]);
        // Downgrading the middle splits into three; another owner's lock
        // is untouched.
        let l = apply_lock(l, lk(2, 200, 300, LockKind::Read));
        let l = apply_lock(l, lk(1, 10, 19, LockKind::Read));
        assert_eq!(
            ranges(&l),
            [
                (1, 0, 9, LockKind::Write),
                (1, 10, 19, LockKind::Read),
                (1, 20, 99, LockKind::Write),
                (2, 200, 300, LockKind::Read)
            ]
        );
        let l = apply_lock(l, lk(1, 0, u64::MAX, LockKind::Unlock));
        assert_eq!(ranges(&l), [(2, 200, 300, LockKind::Read)]);
    }

    #[test]
    fn conflicts_need_another_owner_an_overlap_and_a_writer() {
        let a = lk(1, 0, 10, LockKind::Read);
        assert!(!a.conflicts(&lk(2, 5, 20, LockKind::Read)));
        assert!(a.conflicts(&lk(2, 5, 20, LockKind::Write)));
        assert!(!a.conflicts(&lk(2, 11, 20, LockKind::Write)));
        assert!(!a.conflicts(&lk(1, 0, 20, LockKind::Write)));
        assert!(lk(1, 0, u64::MAX, LockKind::Write).conflicts(&lk(
            2,
            u64::MAX,
            u64::MAX,
            LockKind::Read
        )));
    }
}
