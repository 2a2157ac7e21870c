//! Changes to the namespace: entries and the inodes they name (create,
//! link, unlink, rmdir, rename, exchange) and attributes (setattr).

use redb::ReadableTable;

use super::Tables;
use crate::change::Outcome;
use crate::schema::storage;
use crate::types::*;

impl Tables<'_> {
    fn is_empty_dir(&self, ino: u64) -> Result<bool, MetaError> {
        let mut r = self.dirents.range((ino, "")..).map_err(storage)?;
        Ok(match r.next() {
            Some(e) => e.map_err(storage)?.0.value().0 != ino,
            None => true,
        })
    }

    /// Drops an inode that lost its last name (and every record about it).
    pub(super) fn drop_inode(&mut self, inode: &Inode) -> Result<(), MetaError> {
        self.wrote()?;
        self.inodes.remove(inode.ino).map_err(storage)?;
        self.events.push(Event::Inode(inode.ino));
        self.drop_props(inode.ino)?;
        self.drop_posix(inode.ino)?;
        self.queue_gc(inode.object)
    }

    /// `inode` lost one name: it goes with its last one, unless `hold`
    /// names a live session that has it open (it becomes an orphan).
    fn lose_name(
        &mut self,
        mut inode: Inode,
        hold: Option<u64>,
        now: i64,
    ) -> Result<(), MetaError> {
        let links = if inode.is_dir() { 2 } else { 1 };
        inode.nlink = inode.nlink.saturating_sub(links);
        if inode.nlink == 0 || inode.is_dir() {
            if let Some(session) = hold
                && !inode.is_dir()
                && self.session_live(session, now)?
            {
                inode.nlink = 0;
                inode.ctime = now;
                inode.version = self.tick()?;
                self.put(&inode)?;
                self.wrote()?;
                self.orphans.insert(inode.ino, session).map_err(storage)?;
                return Ok(());
            }
            return self.drop_inode(&inode);
        }
        inode.ctime = now;
        inode.version = self.tick()?;
        self.put(&inode)
    }

    /// A directory may not move into its own subtree.
    fn check_not_inside(&self, dir: u64, new_parent: u64, name: &str) -> Result<(), MetaError> {
        let mut cur = new_parent;
        loop {
            if cur == dir {
                return Err(MetaError::Invalid(format!(
                    "cannot move directory {name:?} into itself"
                )));
            }
            if cur == ROOT_INO {
                return Ok(());
            }
            cur = self.inode(cur)?.parent;
        }
    }

    #[allow(clippy::too_many_arguments)]
    pub(super) fn create(
        &mut self,
        parent: u64,
        name: String,
        kind: FileKind,
        mode: u32,
        uid: u32,
        gid: u32,
        target: Option<String>,
        seed: u64,
        exclusive: bool,
        now: i64,
    ) -> Result<Outcome, MetaError> {
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
        self.put_entry(parent, &name, ino)?;
        let dir = self.touch_dir(parent, now, if kind == FileKind::Dir { 1 } else { 0 })?;
        Ok(Outcome::Entry { inode, dir })
    }

    pub(super) fn link(
        &mut self,
        ino: u64,
        new_parent: u64,
        new_name: String,
        now: i64,
    ) -> Result<Outcome, MetaError> {
        validate_name(&new_name)?;
        self.dir(new_parent)?;
        let mut inode = self.inode(ino)?;
        if inode.is_dir() {
            return Err(MetaError::NotPermitted(format!(
                "{new_name}: hard links to directories"
            )));
        }
        if inode.nlink == 0 {
            // linkat of an unlinked open file: ENOENT, as Linux says.
            return Err(MetaError::NotFound(format!("inode {ino}")));
        }
        if self.entry(new_parent, &new_name)?.is_some() {
            return Err(MetaError::Exists(new_name));
        }
        inode.nlink += 1;
        inode.ctime = now;
        inode.version = self.tick()?;
        self.put(&inode)?;
        self.put_entry(new_parent, &new_name, ino)?;
        self.touch_dir(new_parent, now, 0)?;
        Ok(Outcome::Inode(inode))
    }

    pub(super) fn unlink(
        &mut self,
        parent: u64,
        name: String,
        hold: Option<u64>,
        now: i64,
    ) -> Result<Outcome, MetaError> {
        self.dir(parent)?;
        let ino = self
            .entry(parent, &name)?
            .ok_or_else(|| MetaError::NotFound(name.clone()))?;
        let inode = self.inode(ino)?;
        if inode.is_dir() {
            return Err(MetaError::IsADirectory(name));
        }
        self.remove_entry(parent, &name)?;
        self.lose_name(inode.clone(), hold, now)?;
        let inode = self.inode(ino).unwrap_or(Inode { nlink: 0, ..inode });
        let dir = self.touch_dir(parent, now, 0)?;
        Ok(Outcome::Entry { inode, dir })
    }

    pub(super) fn rmdir(
        &mut self,
        parent: u64,
        name: String,
        now: i64,
    ) -> Result<Outcome, MetaError> {
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
        self.remove_entry(parent, &name)?;
        self.drop_inode(&inode)?;
        Ok(Outcome::Inode(self.touch_dir(parent, now, -1)?))
    }

    pub(super) fn rename(
        &mut self,
        parent: u64,
        name: &str,
        new_parent: u64,
        new_name: &str,
        flags: RenameFlags,
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
            if flags.no_replace {
                return Err(MetaError::Exists(new_name.to_string()));
            }
            return Ok(Outcome::Inode(inode));
        }
        if inode.is_dir() {
            self.check_not_inside(ino, new_parent, name)?;
        }
        let mut dir_delta_new = if inode.is_dir() { 1 } else { 0 };
        let mut replaced = None;
        if let Some(target) = self.entry(new_parent, new_name)? {
            if flags.no_replace {
                return Err(MetaError::Exists(new_name.to_string()));
            }
            if target == ino {
                // Two hard links of one file: POSIX says do nothing.
                return Ok(Outcome::Inode(inode));
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
            replaced = Some(t);
        }
        if let Some(t) = replaced {
            self.lose_name(t, flags.hold, now)?;
        }
        self.remove_entry(parent, name)?;
        self.put_entry(new_parent, new_name, ino)?;
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

    /// RENAME_EXCHANGE: swaps what two names refer to, atomically.
    pub(super) fn exchange(
        &mut self,
        parent: u64,
        name: &str,
        new_parent: u64,
        new_name: &str,
        now: i64,
    ) -> Result<Outcome, MetaError> {
        validate_name(new_name)?;
        self.dir(parent)?;
        self.dir(new_parent)?;
        let a = self
            .entry(parent, name)?
            .ok_or_else(|| MetaError::NotFound(name.to_string()))?;
        let b = self
            .entry(new_parent, new_name)?
            .ok_or_else(|| MetaError::NotFound(new_name.to_string()))?;
        let mut ia = self.inode(a)?;
        if a == b {
            return Ok(Outcome::Inode(ia));
        }
        let mut ib = self.inode(b)?;
        if parent != new_parent {
            if ia.is_dir() {
                self.check_not_inside(a, new_parent, name)?;
            }
            if ib.is_dir() {
                self.check_not_inside(b, parent, new_name)?;
            }
        }
        self.put_entry(parent, name, b)?;
        self.put_entry(new_parent, new_name, a)?;
        if ia.is_dir() {
            ia.parent = new_parent;
        }
        if ib.is_dir() {
            ib.parent = parent;
        }
        ia.ctime = now;
        ia.version = self.tick()?;
        self.put(&ia)?;
        ib.ctime = now;
        ib.version = self.tick()?;
        self.put(&ib)?;
        // A directory moving between parents moves its ".." link.
        let delta = i32::from(ia.is_dir()) - i32::from(ib.is_dir());
        if parent == new_parent {
            self.touch_dir(parent, now, 0)?;
        } else {
            self.touch_dir(parent, now, -delta)?;
            self.touch_dir(new_parent, now, delta)?;
        }
        Ok(Outcome::Inode(ia))
    }

    pub(super) fn set_attr(
        &mut self,
        ino: u64,
        attr: SetAttr,
        now: i64,
    ) -> Result<Outcome, MetaError> {
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
        if !attr.access_only {
            inode.ctime = now;
            inode.version = self.tick()?;
        }
        self.put(&inode)?;
        Ok(Outcome::Inode(inode))
    }
}
