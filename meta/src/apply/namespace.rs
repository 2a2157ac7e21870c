//! Changes to the namespace: entries and the inodes they name (create,
//! unlink, rmdir, rename) and attributes (setattr).

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

    /// Drops an inode that lost its last name.
    fn drop_inode(&mut self, inode: &Inode) -> Result<(), MetaError> {
        self.wrote()?;
        self.inodes.remove(inode.ino).map_err(storage)?;
        self.drop_props(inode.ino)?;
        self.queue_gc(inode.object)
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
        self.wrote()?;
        self.dirents
            .insert((parent, name.as_str()), ino)
            .map_err(storage)?;
        self.touch_dir(parent, now, if kind == FileKind::Dir { 1 } else { 0 })?;
        Ok(Outcome::Inode(inode))
    }

    pub(super) fn unlink(
        &mut self,
        parent: u64,
        name: String,
        now: i64,
    ) -> Result<Outcome, MetaError> {
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
        self.wrote()?;
        self.dirents
            .remove((parent, name.as_str()))
            .map_err(storage)?;
        self.drop_inode(&inode)?;
        self.touch_dir(parent, now, -1)?;
        Ok(Outcome::Done)
    }

    pub(super) fn rename(
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
        inode.ctime = now;
        inode.version = self.tick()?;
        self.put(&inode)?;
        Ok(Outcome::Inode(inode))
    }
}
