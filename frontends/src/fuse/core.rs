//! The file system a mount serves: every FUSE operation as an async call on
//! [`Mount`], answering with an errno the way Linux's own file systems do.
//!
//! Permissions are checked by the kernel (`default_permissions`) against
//! the mode, owner and group meta keeps; what the kernel leaves to file
//! systems is done here: owner and group of new nodes (setgid
//! directories), name limits, the write buffer, locks and orphans.

use std::collections::HashMap;
use std::ffi::OsStr;
use std::os::unix::ffi::OsStrExt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use fuser::{Errno, Notifier};
use tessera_gateway::fs::MAX_FILE_SIZE;
use tessera_gateway::placement::seed_for_path;
use tessera_gateway::{Error, Fs};
use tessera_meta::api::NewNode;
use tessera_meta::{
    FileKind, FileLock, Inode, LockKind, MAX_NAME, RenameFlags, SetAttr, XattrMode, now_ns,
};

use super::attr::errno;
use super::caller::{Caller, interruptible, without_set_id};
use super::dircache::DirCache;
use super::files::WriteBuf;
use super::readahead::ReadAhead;

pub type Result<T, E = Errno> = std::result::Result<T, E>;

/// Buffered writes of one file past this are flushed in the background.
const FLUSH_AT: usize = 32 << 20;
/// Buffered writes of one file past this make writers wait for a flush.
const HOLD_AT: usize = 256 << 20;
/// Largest single in-place write sent to the cluster.
const WRITE_CHUNK: usize = 64 << 20;
/// How long an open file trusts the inode it holds without news from meta.
const INODE_TRUST: Duration = Duration::from_secs(1);
/// How long the kernel keeps names and attributes while meta's feed is
/// followed.
const KERNEL_TTL: Duration = Duration::from_secs(10);

pub(super) fn err(e: Error) -> Errno {
    match &e {
        Error::Unavailable { .. }
        | Error::Corrupt { .. }
        | Error::MetaUnavailable(_)
        | Error::TooFewDatanodes(_)
        | Error::Internal(_) => tracing::warn!(error = %e, "fuse operation failed"),
        _ => tracing::debug!(error = %e, "fuse operation failed"),
    }
    errno(&e)
}

/// A name as meta takes it: at most 255 bytes, UTF-8 (Tessera's names
/// travel over WebDAV too, so other bytes are refused with EINVAL).
pub fn name_of(name: &OsStr) -> Result<&str> {
    if name.len() > MAX_NAME {
        return Err(Errno::ENAMETOOLONG);
    }
    name.to_str().ok_or(Errno::EINVAL)
}

/// One open file, shared by every handle of the inode in this mount.
pub struct OpenFile {
    pub ino: u64,
    state: Mutex<FileState>,
    /// Held while a flush sends buffered writes, so flushes go in order and
    /// a read after a flush sees everything before it.
    flushing: tokio::sync::Mutex<()>,
    /// This mount asked meta to keep the inode when its last name went: it
    /// tells meta to forget it when the last handle closes.
    held: std::sync::atomic::AtomicBool,
    /// A process took a lock on it through this mount: closes release them.
    locked: std::sync::atomic::AtomicBool,
    /// Chunks fetched ahead of a reader reading it in order.
    pub(super) ahead: Mutex<ReadAhead>,
}

struct FileState {
    inode: Inode,
    /// When `inode` was last fetched or produced by this mount's own write.
    fresh: Instant,
    buf: WriteBuf,
    /// The end of writes taken out of `buf` by a flush still running.
    inflight_end: u64,
    /// Handles open on it in this mount.
    opens: u32,
}

impl OpenFile {
    fn new(inode: Inode) -> Self {
        OpenFile {
            ino: inode.ino,
            state: Mutex::new(FileState {
                inode,
                fresh: Instant::now(),
                buf: WriteBuf::default(),
                inflight_end: 0,
                opens: 0,
            }),
            flushing: tokio::sync::Mutex::new(()),
            held: std::sync::atomic::AtomicBool::new(false),
            locked: std::sync::atomic::AtomicBool::new(false),
            ahead: Mutex::default(),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, FileState> {
        self.state.lock().expect("open file state")
    }

    /// The size this mount knows: meta's, or further if it holds writes.
    pub fn size(&self) -> u64 {
        let s = self.lock();
        s.inode.size.max(s.buf.end()).max(s.inflight_end)
    }

    pub(super) fn has_writes(&self) -> bool {
        let s = self.lock();
        !s.buf.is_empty() || s.inflight_end > 0
    }
}

struct Handle {
    file: Arc<OpenFile>,
}

/// A directory being read: its listing as of `opendir`/the first read.
struct DirHandle {
    ino: u64,
    entries: Option<Arc<Vec<(String, Inode)>>>,
}

/// What the kernel holds of an inode, as far as this mount told it.
#[derive(Default)]
struct Known {
    /// The generation answered with its lookups; a new one makes the
    /// kernel drop its cached inode and take a fresh one.
    generation: u64,
    /// Size and mtime the kernel believes. With the writeback cache the
    /// kernel keeps its own for a cached file and ignores later answers,
    /// so a file another client changed gets a new generation instead.
    told: Option<(u64, i64)>,
    /// Another client changed it since: the kernel's inode is outdated
    /// until a lookup with the new generation replaces it.
    stale: bool,
    file: bool,
}

/// Everything a mount keeps; cheap to share between tasks.
pub struct Mount {
    pub fs: Fs,
    /// This mount's session in meta (its locks and the orphans it holds).
    pub session: u64,
    files: Mutex<HashMap<u64, Arc<OpenFile>>>,
    handles: Mutex<HashMap<u64, Handle>>,
    dirs: Mutex<HashMap<u64, DirHandle>>,
    next_fh: AtomicU64,
    known: Mutex<HashMap<u64, Known>>,
    /// Directories' attributes and names, answered without meta.
    pub dircache: DirCache,
    /// Files whose last name this mount removed and nobody holds: the
    /// kernel still writes their times back as it drops them.
    gone: Mutex<std::collections::HashSet<u64>>,
    pub notifier: std::sync::OnceLock<Notifier>,
}

impl Mount {
    pub fn new(fs: Fs) -> Self {
        Mount {
            session: fs.holder(),
            fs,
            files: Mutex::default(),
            handles: Mutex::default(),
            dirs: Mutex::default(),
            next_fh: AtomicU64::new(1),
            known: Mutex::default(),
            dircache: DirCache::default(),
            gone: Mutex::default(),
            notifier: std::sync::OnceLock::new(),
        }
    }

    /// How long the kernel may keep names and attributes it was told:
    /// long while meta's feed is followed (it invalidates what changed
    /// elsewhere within milliseconds), a second otherwise.
    pub fn ttl(&self) -> Duration {
        if self.dircache.following() {
            KERNEL_TTL
        } else {
            INODE_TRUST
        }
    }

    /// The generation to answer lookups of `ino` with.
    pub fn generation(&self, ino: u64) -> u64 {
        self.known
            .lock()
            .expect("known")
            .get(&ino)
            .map(|k| k.generation)
            .unwrap_or(0)
    }

    /// An entry reply is about to give the kernel `inode` with `size`: a
    /// kernel that did not hold it takes these as they are.
    pub fn introduce(&self, inode: &Inode, size: u64) {
        let mut known = self.known.lock().expect("known");
        let k = known.entry(inode.ino).or_default();
        k.file = inode.kind == FileKind::File;
        if k.told.is_none() || k.stale {
            k.told = Some((size, inode.mtime));
            k.stale = false;
        }
    }

    /// This mount changed `inode` itself: the kernel's view matches it.
    fn settle(&self, inode: &Inode) {
        let mut known = self.known.lock().expect("known");
        if let Some(k) = known.get_mut(&inode.ino)
            && !k.stale
        {
            k.told = Some((inode.size, inode.mtime));
        }
    }

    /// Whether `ino` was unlinked for good by this mount.
    pub fn is_gone(&self, ino: u64) -> bool {
        self.gone.lock().expect("gone").contains(&ino)
    }

    /// The kernel dropped `ino`.
    pub fn forget(&self, ino: u64) {
        self.gone.lock().expect("gone").remove(&ino);
        if self.open_file(ino).is_none() {
            self.known.lock().expect("known").remove(&ino);
        }
    }

    /// Another client changed `ino`: a file not open here gets a new
    /// generation, so the kernel's next lookup replaces its stale inode.
    pub fn changed_elsewhere(&self, ino: u64) {
        self.stale(ino);
        self.dircache.forget(ino);
        if self.open_file(ino).is_some() {
            return;
        }
        let mut known = self.known.lock().expect("known");
        if let Some(k) = known.get_mut(&ino)
            && k.file
            && !k.stale
        {
            k.generation += 1;
            k.stale = true;
        }
    }

    /// Meta's feed lost events: every file the kernel holds and that is
    /// not open here may have changed.
    pub fn all_changed_elsewhere(&self) {
        let inos: Vec<u64> = self.known.lock().expect("known").keys().copied().collect();
        for ino in inos {
            self.changed_elsewhere(ino);
        }
        self.dircache.clear();
    }

    /// Whether the kernel's cached size or mtime of `inode` (not open
    /// here) is older than meta's; if so, its generation moves on.
    fn outdated(&self, inode: &Inode) -> bool {
        if inode.kind != FileKind::File || self.open_file(inode.ino).is_some() {
            return false;
        }
        let mut known = self.known.lock().expect("known");
        match known.get_mut(&inode.ino) {
            Some(k) if k.stale => true,
            Some(k) if k.told.is_some_and(|t| t != (inode.size, inode.mtime)) => {
                k.generation += 1;
                k.stale = true;
                true
            }
            _ => false,
        }
    }

    /// The inodes open in this mount.
    pub fn open_inodes(&self) -> Vec<u64> {
        self.files.lock().expect("files").keys().copied().collect()
    }

    fn open_file(&self, ino: u64) -> Option<Arc<OpenFile>> {
        self.files.lock().expect("files").get(&ino).cloned()
    }

    pub(super) fn handle(&self, fh: u64) -> Result<Arc<OpenFile>> {
        self.handles
            .lock()
            .expect("handles")
            .get(&fh)
            .map(|h| h.file.clone())
            .ok_or(Errno::EBADF)
    }

    /// The inode and the size to report, including writes held here; a
    /// directory's from the cache when it is trusted.
    async fn attr_of(&self, ino: u64) -> Result<(Inode, u64)> {
        if let Some(d) = self.dircache.attr(ino) {
            let size = d.size;
            return Ok((d, size));
        }
        let epoch = self.dircache.epoch();
        let inode = self.fs.getattr(ino).await.map_err(err)?;
        self.dircache.answered(&inode, epoch);
        Ok(self.with_local_size(inode))
    }

    fn with_local_size(&self, inode: Inode) -> (Inode, u64) {
        match self.open_file(inode.ino) {
            Some(f) => {
                {
                    let mut s = f.lock();
                    if inode.version >= s.inode.version {
                        s.inode = inode.clone();
                        s.fresh = Instant::now();
                    }
                }
                let size = f.size();
                (inode, size)
            }
            None => {
                let size = inode.size;
                (inode, size)
            }
        }
    }

    /// The size to report for `inode`, fetched with a listing.
    pub fn size_of(&self, inode: &Inode) -> u64 {
        match self.open_file(inode.ino) {
            Some(f) if f.has_writes() => inode.size.max(f.size()),
            _ => inode.size,
        }
    }

    // ----- names -----

    pub async fn lookup(&self, parent: u64, name: &OsStr) -> Result<(Inode, u64)> {
        let name = name_of(name)?;
        if self.dircache.absent(parent, name) {
            return Err(Errno::ENOENT);
        }
        let epoch = self.dircache.epoch();
        let inode = self.fs.lookup(parent, name).await.map_err(err)?;
        self.dircache.answered(&inode, epoch);
        Ok(self.with_local_size(inode))
    }

    pub async fn getattr(&self, ino: u64) -> Result<(Inode, u64)> {
        self.attr_of(ino).await
    }

    /// Owner and group of a new node made by `uid`/`gid` in `parent`: a
    /// setgid directory gives its group, and new directories in it keep the
    /// setgid bit.
    async fn owner_for(
        &self,
        parent: u64,
        uid: u32,
        gid: u32,
        mode: u32,
        dir: bool,
    ) -> Result<(u32, u32, u32)> {
        let (p, _) = self.attr_of(parent).await?;
        if p.kind != FileKind::Dir {
            return Err(Errno::ENOTDIR);
        }
        let (pmode, pgid) = (p.mode, p.gid);
        if pmode & libc::S_ISGID != 0 {
            let mode = if dir { mode | libc::S_ISGID } else { mode };
            Ok((uid, pgid, mode))
        } else {
            Ok((uid, gid, mode))
        }
    }

    #[allow(clippy::too_many_arguments)]
    pub async fn make(
        &self,
        parent: u64,
        name: &OsStr,
        kind: FileKind,
        mode: u32,
        uid: u32,
        gid: u32,
        target: Option<String>,
        exclusive: bool,
    ) -> Result<Inode> {
        let name = name_of(name)?;
        let (uid, gid, mode) = self
            .owner_for(parent, uid, gid, mode & 0o7777, kind == FileKind::Dir)
            .await?;
        let new = NewNode {
            parent,
            name: name.to_string(),
            kind,
            mode,
            uid,
            gid,
            target,
            seed: seed_for_path(&format!("{parent}/{name}/{}", now_ns())),
            exclusive,
        };
        let epoch = self.dircache.epoch();
        match self.fs.make(new).await {
            Ok((made, dir)) => {
                self.dircache
                    .added(parent, name, dir.as_ref(), &made, epoch);
                Ok(made)
            }
            Err(e) => {
                if matches!(e, Error::Exists(_)) {
                    self.dircache.entry_changed(parent);
                }
                Err(err(e))
            }
        }
    }

    pub async fn mknod(
        &self,
        parent: u64,
        name: &OsStr,
        mode: u32,
        rdev: u32,
        (uid, gid): (u32, u32),
    ) -> Result<Inode> {
        let kind = match mode & libc::S_IFMT {
            0 | libc::S_IFREG => FileKind::File,
            libc::S_IFIFO => FileKind::Fifo,
            libc::S_IFSOCK => FileKind::Socket,
            libc::S_IFCHR => FileKind::CharDevice(rdev),
            libc::S_IFBLK => FileKind::BlockDevice(rdev),
            libc::S_IFDIR => return Err(Errno::EINVAL),
            _ => return Err(Errno::EINVAL),
        };
        self.make(parent, name, kind, mode, uid, gid, None, true)
            .await
    }

    pub async fn symlink(
        &self,
        parent: u64,
        name: &OsStr,
        target: &std::path::Path,
        (uid, gid): (u32, u32),
    ) -> Result<Inode> {
        let target = target.to_str().ok_or(Errno::EINVAL)?;
        if target.is_empty() {
            return Err(Errno::ENOENT);
        }
        if target.len() >= libc::PATH_MAX as usize {
            return Err(Errno::ENAMETOOLONG);
        }
        self.make(
            parent,
            name,
            FileKind::Symlink,
            0o777,
            uid,
            gid,
            Some(target.to_string()),
            true,
        )
        .await
    }

    pub async fn readlink(&self, ino: u64) -> Result<Bytes> {
        let inode = self.fs.getattr(ino).await.map_err(err)?;
        match (inode.kind, inode.target) {
            (FileKind::Symlink, Some(t)) => Ok(Bytes::from(t.into_bytes())),
            _ => Err(Errno::EINVAL),
        }
    }

    pub async fn link(&self, ino: u64, new_parent: u64, new_name: &OsStr) -> Result<(Inode, u64)> {
        let name = name_of(new_name)?;
        let inode = self
            .fs
            .meta()
            .link(ino, new_parent, name)
            .await
            .map_err(|e| err(e.into()))?;
        self.dircache.forget(new_parent);
        Ok(self.with_local_size(inode))
    }

    /// The session holding `ino` open if it becomes nameless.
    fn hold_for(&self, ino: Option<u64>) -> Option<u64> {
        let file = self.open_file(ino?)?;
        file.held.store(true, Ordering::Relaxed);
        Some(self.session)
    }

    /// The inode a name in `parent` refers to, if any file is open here
    /// (only then does an unlink or rename need to know).
    async fn open_target(&self, parent: u64, name: &str) -> Option<u64> {
        if self.files.lock().expect("files").is_empty() {
            return None;
        }
        self.fs.lookup(parent, name).await.ok().map(|i| i.ino)
    }

    pub async fn unlink(&self, parent: u64, name: &OsStr) -> Result<()> {
        let name = name_of(name)?;
        let hold = self.hold_for(self.open_target(parent, name).await);
        let epoch = self.dircache.epoch();
        match self.fs.meta().unlink_held(parent, name, hold).await {
            Ok((inode, dir)) => {
                self.dircache.removed(parent, name, &dir, epoch);
                if inode.nlink == 0 && hold.is_none() {
                    let mut gone = self.gone.lock().expect("gone");
                    if gone.len() >= 65_536 {
                        gone.clear();
                    }
                    gone.insert(inode.ino);
                }
                Ok(())
            }
            Err(e) => Err(self.name_error(parent, e.into())),
        }
    }

    pub async fn rmdir(&self, parent: u64, name: &OsStr) -> Result<()> {
        let name = name_of(name)?;
        let epoch = self.dircache.epoch();
        match self.fs.meta().rmdir_in(parent, name).await {
            Ok(dir) => {
                self.dircache.removed(parent, name, &dir, epoch);
                self.dircache.child_dir_gone(parent);
                Ok(())
            }
            Err(e) => Err(self.name_error(parent, e.into())),
        }
    }

    /// The errno of a failed change to a name in `parent`; a name found
    /// missing or present against what the cache said makes it forget.
    fn name_error(&self, parent: u64, e: Error) -> Errno {
        if matches!(e, Error::NotFound(_) | Error::Exists(_)) {
            self.dircache.entry_changed(parent);
        }
        err(e)
    }

    pub async fn rename(
        &self,
        (parent, name): (u64, &OsStr),
        (new_parent, new_name): (u64, &OsStr),
        flags: fuser::RenameFlags,
    ) -> Result<()> {
        let name = name_of(name)?;
        let new_name = name_of(new_name)?;
        if flags.contains(fuser::RenameFlags::RENAME_WHITEOUT) {
            return Err(Errno::EINVAL);
        }
        let exchange = flags.contains(fuser::RenameFlags::RENAME_EXCHANGE);
        let no_replace = flags.contains(fuser::RenameFlags::RENAME_NOREPLACE);
        let hold = if exchange {
            None
        } else {
            self.hold_for(self.open_target(new_parent, new_name).await)
        };
        let r = self
            .fs
            .meta()
            .rename_with(
                (parent, name),
                (new_parent, new_name),
                RenameFlags {
                    no_replace,
                    exchange,
                    hold,
                },
            )
            .await;
        match r {
            Ok(_) => {
                self.dircache
                    .renamed((parent, name), (new_parent, new_name), exchange);
                Ok(())
            }
            // Moving a directory into itself.
            Err(tessera_meta::api::CallError::Meta(tessera_meta::MetaError::Invalid(_))) => {
                Err(Errno::EINVAL)
            }
            Err(e) => Err(err(e.into())),
        }
    }

    // ----- attributes -----

    #[allow(clippy::too_many_arguments)]
    pub async fn setattr(
        self: &Arc<Self>,
        ino: u64,
        mode: Option<u32>,
        uid: Option<u32>,
        gid: Option<u32>,
        size: Option<u64>,
        atime: Option<i64>,
        mtime: Option<i64>,
        who: Caller,
    ) -> Result<(Inode, u64)> {
        let pid = who.pid;
        // The kernel leaves set-ID bits to the mount (FUSE_HANDLE_KILLPRIV_V2,
        // see `ops.rs`): a chown of a non-directory drops them, and so does
        // a truncate by a process without CAP_FSETID, as on ext4.
        let chown = uid.is_some() || gid.is_some();
        let mut mode = mode;
        if chown || (size.is_some() && !who.has_fsetid()) {
            let (cur, _) = self.attr_of(ino).await?;
            if cur.kind != FileKind::Dir && (chown || cur.kind == FileKind::File) {
                let base = mode.unwrap_or(cur.mode);
                let killed = without_set_id(base, who.in_group_or_capable(cur.gid));
                if killed != base || mode.is_some() {
                    mode = Some(killed);
                }
            }
        }
        let mut inode = None;
        if let Some(size) = size {
            if size > MAX_FILE_SIZE {
                return Err(Errno::EFBIG);
            }
            let file = self.open_file(ino);
            if let Some(f) = &file {
                self.flush(f, pid).await?;
            }
            let fs = self.fs.clone();
            let done = interruptible(pid, async move {
                tokio::spawn(async move { fs.truncate(ino, size).await })
                    .await
                    .map_err(|_| Errno::EIO)?
                    .map_err(err)
            })
            .await?;
            if let Some(f) = &file {
                let mut s = f.lock();
                s.buf.truncate(size);
                s.inode = done.clone();
                s.fresh = Instant::now();
            }
            inode = Some(done);
        }
        let attr = SetAttr {
            mode: mode.map(|m| m & 0o7777),
            uid,
            gid,
            atime,
            mtime,
            access_only: false,
        };
        if attr != SetAttr::default() {
            let epoch = self.dircache.epoch();
            let i = self.fs.setattr(ino, attr).await.map_err(err)?;
            self.dircache.answered(&i, epoch);
            inode = Some(i);
        }
        match inode {
            Some(i) => {
                self.settle(&i);
                Ok(self.with_local_size(i))
            }
            None => self.attr_of(ino).await,
        }
    }

    // ----- directories -----

    pub fn opendir(&self, ino: u64) -> u64 {
        let fh = self.next_fh.fetch_add(1, Ordering::Relaxed);
        self.dirs
            .lock()
            .expect("dirs")
            .insert(fh, DirHandle { ino, entries: None });
        fh
    }

    pub fn releasedir(&self, fh: u64) {
        self.dirs.lock().expect("dirs").remove(&fh);
    }

    /// The listing a directory handle reads from: fetched once per handle
    /// (offsets stay valid while a program reads it in pieces), again when
    /// it is read from the start.
    pub async fn listing(&self, fh: u64, offset: u64) -> Result<(u64, Arc<Vec<(String, Inode)>>)> {
        let (ino, cached) = {
            let dirs = self.dirs.lock().expect("dirs");
            let d = dirs.get(&fh).ok_or(Errno::EBADF)?;
            (d.ino, d.entries.clone())
        };
        if let Some(e) = cached
            && offset > 0
        {
            return Ok((ino, e));
        }
        let epoch = self.dircache.epoch();
        let entries = Arc::new(self.fs.readdir(ino).await.map_err(err)?);
        for (_, i) in entries.iter() {
            self.dircache.answered(i, epoch);
        }
        self.dircache
            .listed(ino, entries.iter().map(|(n, _)| n.as_str()), epoch);
        if let Some(d) = self.dirs.lock().expect("dirs").get_mut(&fh) {
            d.entries = Some(entries.clone());
        }
        Ok((ino, entries))
    }

    /// The parent of directory `ino` (for "..").
    pub async fn parent_of(&self, ino: u64) -> Result<u64> {
        Ok(self.attr_of(ino).await?.0.parent)
    }

    // ----- files -----

    /// Opens `inode` (already fetched); returns the handle and whether the
    /// kernel may keep the pages it cached (nobody changed the file since).
    pub fn open_inode(&self, inode: Inode) -> (u64, bool) {
        let fh = self.next_fh.fetch_add(1, Ordering::Relaxed);
        let mut files = self.files.lock().expect("files");
        let mut keep = false;
        let file = files
            .entry(inode.ino)
            .or_insert_with(|| Arc::new(OpenFile::new(inode.clone())))
            .clone();
        {
            let mut s = file.lock();
            if s.opens > 0 {
                keep = s.inode.version == inode.version;
            }
            if inode.version >= s.inode.version {
                s.inode = inode;
                s.fresh = Instant::now();
            }
            s.opens += 1;
        }
        drop(files);
        self.handles
            .lock()
            .expect("handles")
            .insert(fh, Handle { file });
        (fh, keep)
    }

    pub async fn open(&self, ino: u64, flags: i32) -> Result<(u64, bool)> {
        let inode = self.fs.getattr(ino).await.map_err(err)?;
        // Close-to-open: another client changed the file since the kernel
        // cached it. ESTALE makes the kernel walk the path again with a
        // fresh lookup, which (new generation) replaces its inode.
        if self.outdated(&inode) {
            return Err(Errno::ESTALE);
        }
        match inode.kind {
            FileKind::Dir => {
                if flags & libc::O_ACCMODE != libc::O_RDONLY {
                    return Err(Errno::EISDIR);
                }
            }
            FileKind::File => {}
            FileKind::Symlink => return Err(Errno::ELOOP),
            // FIFOs, sockets and devices are opened by the kernel itself.
            _ => return Err(Errno::ENXIO),
        }
        Ok(self.open_inode(inode))
    }

    pub async fn create(
        &self,
        parent: u64,
        name: &OsStr,
        mode: u32,
        flags: i32,
        (uid, gid): (u32, u32),
    ) -> Result<(Inode, u64)> {
        let exclusive = flags & libc::O_EXCL != 0;
        let inode = self
            .make(
                parent,
                name,
                FileKind::File,
                mode,
                uid,
                gid,
                None,
                exclusive,
            )
            .await?;
        if inode.kind == FileKind::Dir {
            return Err(Errno::EISDIR);
        }
        let (fh, _) = self.open_inode(inode.clone());
        Ok((inode, fh))
    }

    /// Closes a handle: its file's writes are flushed when the last handle
    /// goes, the owner's flocks are released, and a file nobody names any
    /// more is forgotten by meta. What needs the cluster is returned to run
    /// (`None`: nothing does).
    #[allow(clippy::type_complexity)]
    pub fn release(
        self: &Arc<Self>,
        fh: u64,
        lock_owner: Option<u64>,
    ) -> Result<Option<std::pin::Pin<Box<dyn Future<Output = Result<()>> + Send>>>> {
        let Some(h) = self.handles.lock().expect("handles").remove(&fh) else {
            return Err(Errno::EBADF);
        };
        let file = h.file;
        let unlock = lock_owner.filter(|_| file.locked.load(Ordering::Relaxed));
        let (last, writes) = {
            let mut files = self.files.lock().expect("files");
            let mut s = file.lock();
            s.opens = s.opens.saturating_sub(1);
            let last = s.opens == 0;
            if last {
                files.remove(&file.ino);
            }
            (last, !s.buf.is_empty() || s.inflight_end > 0)
        };
        let held = last && file.held.load(Ordering::Relaxed);
        if unlock.is_none() && !(last && writes) && !held {
            return Ok(None);
        }
        let m = self.clone();
        Ok(Some(Box::pin(async move {
            if let Some(owner) = unlock {
                let _ =
                    m.fs.meta()
                        .release_locks(file.ino, m.session, Some(owner))
                        .await;
            }
            if !last {
                return Ok(());
            }
            // Nobody waits for this answer; keep trying until the cluster
            // has the data (writes block while too few replicas are up).
            let r = m.flush_all(&file).await;
            if let Err(e) = &r {
                tracing::error!(ino = file.ino, error = %e, "writes of a closed file could not be stored");
            }
            if held {
                let _ = m.fs.meta().forget(file.ino, m.session).await;
            }
            r.map_err(err)
        })))
    }

    /// Whether closing `fh` needs nothing sent (no writes held, no locks).
    pub fn flush_is_noop(&self, fh: u64) -> bool {
        self.handle(fh)
            .is_ok_and(|f| !f.locked.load(Ordering::Relaxed) && !f.has_writes())
    }

    /// The file's inode, fetched again unless this mount saw it recently.
    pub(super) async fn current_inode(&self, file: &OpenFile) -> Result<Inode> {
        {
            let s = file.lock();
            if s.fresh.elapsed() < INODE_TRUST {
                return Ok(s.inode.clone());
            }
        }
        let inode = self.fs.getattr(file.ino).await.map_err(err)?;
        let mut s = file.lock();
        if inode.version >= s.inode.version {
            s.inode = inode;
        }
        s.fresh = Instant::now();
        Ok(s.inode.clone())
    }

    /// Drops what this mount knows of `ino`'s content (another client
    /// changed it).
    pub fn stale(&self, ino: u64) {
        if let Some(f) = self.open_file(ino) {
            f.lock().fresh = Instant::now() - INODE_TRUST * 2;
        }
    }

    /// relatime: a read moves the access time if it is not later than
    /// the last change, or a day old (in the background, lazily).
    pub(super) fn touch_atime(&self, file: &OpenFile) {
        const DAY_NS: i64 = 86_400 * 1_000_000_000;
        let now = now_ns();
        {
            let mut s = file.lock();
            let i = &s.inode;
            if i.atime > i.mtime && i.atime > i.ctime && now - i.atime < DAY_NS {
                return;
            }
            s.inode.atime = now;
        }
        let fs = self.fs.clone();
        let ino = file.ino;
        tokio::spawn(async move {
            let attr = SetAttr {
                atime: Some(now),
                access_only: true,
                ..SetAttr::default()
            };
            if let Err(e) = fs.setattr(ino, attr).await {
                tracing::debug!(ino, error = %e, "cannot update the access time");
            }
        });
    }

    pub async fn write(
        self: &Arc<Self>,
        fh: u64,
        offset: u64,
        data: &[u8],
        pid: u32,
    ) -> Result<u32> {
        if self.buffer_write(fh, offset, data)? {
            self.wait_for_room(fh, pid).await?;
        }
        Ok(data.len() as u32)
    }

    /// A writer that [`Mount::buffer_write`] told to wait: returns once the
    /// file's writes are sent.
    pub async fn wait_for_room(self: &Arc<Self>, fh: u64, pid: u32) -> Result<()> {
        let file = self.handle(fh)?;
        self.flush(&file, pid).await
    }

    /// Takes a write into the file's buffer, starting a background flush
    /// past [`FLUSH_AT`]. `Ok(true)`: the buffer holds more than
    /// [`HOLD_AT`], and the writer must [`Mount::wait_for_room`] before it
    /// is answered. Needs the runtime's context (it may spawn).
    pub fn buffer_write(self: &Arc<Self>, fh: u64, offset: u64, data: &[u8]) -> Result<bool> {
        let file = self.handle(fh)?;
        offset
            .checked_add(data.len() as u64)
            .filter(|e| *e <= MAX_FILE_SIZE)
            .ok_or(Errno::EFBIG)?;
        let held = {
            let mut s = file.lock();
            s.buf.insert(offset, data);
            s.buf.bytes()
        };
        if held >= HOLD_AT {
            return Ok(true);
        }
        if held >= FLUSH_AT && file.flushing.try_lock().is_ok() {
            let m = self.clone();
            let f = file.clone();
            tokio::spawn(async move {
                if let Err(e) = flush_file(&m, &f).await {
                    tracing::warn!(ino = f.ino, error = %e, "background flush failed; its writes wait for the next one");
                }
            });
        }
        Ok(false)
    }

    /// Sends the file's buffered writes; returns once W replicas hold them.
    /// A signal to the caller interrupts the wait (EINTR), not the flush,
    /// which carries on in the background: nothing written is dropped.
    pub async fn flush(self: &Arc<Self>, file: &Arc<OpenFile>, pid: u32) -> Result<()> {
        if !file.has_writes() {
            return Ok(());
        }
        let m = self.clone();
        let f = file.clone();
        let task = tokio::spawn(async move { flush_file(&m, &f).await });
        interruptible(pid, async move { task.await.map_err(|_| Errno::EIO) })
            .await?
            .map_err(err)
    }

    async fn flush_all(&self, file: &Arc<OpenFile>) -> std::result::Result<(), Error> {
        flush_file(self, file).await
    }

    /// A close of one descriptor: its writes go to the cluster, and (POSIX)
    /// the closing process's record locks on the file are released.
    pub async fn flush_fh(self: &Arc<Self>, fh: u64, lock_owner: u64, pid: u32) -> Result<()> {
        let file = self.handle(fh)?;
        if !file.locked.load(Ordering::Relaxed) {
            return self.flush(&file, pid).await;
        }
        let meta = self.fs.meta().clone();
        let unlock = meta.release_locks(file.ino, self.session, Some(lock_owner));
        let (flushed, unlocked) = tokio::join!(self.flush(&file, pid), unlock);
        if let Err(e) = unlocked {
            tracing::warn!(ino = file.ino, error = %e, "cannot release the locks of a closed file");
        }
        flushed
    }

    /// fsync: the file's writes are stored on W replicas, and its name and
    /// attributes (changed lazily in meta) are durable.
    pub async fn fsync_ino(self: &Arc<Self>, ino: u64, pid: u32) -> Result<()> {
        if let Some(f) = self.open_file(ino) {
            self.flush(&f, pid).await?;
        }
        self.sync_meta(pid).await
    }

    /// fsyncdir, and the metadata part of fsync.
    pub async fn sync_meta(&self, pid: u32) -> Result<()> {
        let meta = self.fs.meta().clone();
        interruptible(
            pid,
            async move { meta.sync().await.map_err(|e| err(e.into())) },
        )
        .await
    }

    // ----- space -----

    pub async fn statfs(&self) -> (u64, u64, u64) {
        let s = self.fs.space().await;
        let files = self.fs.meta().counts().await.map(|c| c.0).unwrap_or(0);
        (s.used, s.available, files)
    }

    // ----- extended attributes -----

    pub async fn setxattr(
        &self,
        ino: u64,
        name: &OsStr,
        value: &[u8],
        flags: i32,
        uid: u32,
    ) -> Result<()> {
        let name = check_xattr_name(name, uid)?;
        let mode = match flags {
            0 => XattrMode::Any,
            libc::XATTR_CREATE => XattrMode::Create,
            libc::XATTR_REPLACE => XattrMode::Replace,
            _ => return Err(Errno::EINVAL),
        };
        if name.starts_with(b"user.") {
            let inode = self.fs.getattr(ino).await.map_err(err)?;
            // As Linux: user attributes only on files and directories.
            if !matches!(inode.kind, FileKind::File | FileKind::Dir) {
                return Err(Errno::EPERM);
            }
        }
        let r = self.fs.meta().set_xattr(ino, name, value, mode).await;
        // The inode's ctime moved.
        self.dircache.forget(ino);
        r.map_err(|e| err(e.into()))
    }

    pub async fn getxattr(&self, ino: u64, name: &OsStr, uid: u32) -> Result<Vec<u8>> {
        let name = check_xattr_name(name, uid)?;
        self.fs
            .meta()
            .get_xattr(ino, name)
            .await
            .map_err(|e| err(e.into()))
    }

    pub async fn listxattr(&self, ino: u64, uid: u32) -> Result<Vec<u8>> {
        let names = self
            .fs
            .meta()
            .list_xattr(ino)
            .await
            .map_err(|e| err(e.into()))?;
        let mut out = Vec::new();
        for n in names {
            // trusted.* is listed only to privileged callers, as on ext4.
            if n.starts_with(b"trusted.") && uid != 0 {
                continue;
            }
            out.extend_from_slice(&n);
            out.push(0);
        }
        Ok(out)
    }

    pub async fn removexattr(&self, ino: u64, name: &OsStr, uid: u32) -> Result<()> {
        let name = check_xattr_name(name, uid)?;
        let r = self.fs.meta().remove_xattr(ino, name).await;
        self.dircache.forget(ino);
        r.map_err(|e| err(e.into()))
    }

    // ----- locks -----

    fn file_lock(&self, owner: u64, start: u64, end: u64, typ: i32, pid: u32) -> Result<FileLock> {
        let kind = match typ {
            libc::F_RDLCK => LockKind::Read,
            libc::F_WRLCK => LockKind::Write,
            libc::F_UNLCK => LockKind::Unlock,
            _ => return Err(Errno::EINVAL),
        };
        Ok(FileLock {
            session: self.session,
            owner,
            pid,
            start,
            end,
            kind,
        })
    }

    pub async fn getlk(
        &self,
        ino: u64,
        owner: u64,
        (start, end): (u64, u64),
        typ: i32,
        pid: u32,
    ) -> Result<(u64, u64, i32, u32)> {
        let lock = self.file_lock(owner, start, end, typ, pid)?;
        match self
            .fs
            .meta()
            .get_lock(ino, lock)
            .await
            .map_err(|e| err(e.into()))?
        {
            None => Ok((start, end, libc::F_UNLCK, 0)),
            Some(l) => {
                let typ = if l.kind == LockKind::Write {
                    libc::F_WRLCK
                } else {
                    libc::F_RDLCK
                };
                // A lock held through another mount has no pid here.
                let pid = if l.session == self.session { l.pid } else { 0 };
                Ok((l.start, l.end, typ, pid))
            }
        }
    }

    pub async fn setlk(
        &self,
        ino: u64,
        owner: u64,
        (start, end): (u64, u64),
        typ: i32,
        pid: u32,
        sleep: bool,
    ) -> Result<()> {
        let lock = self.file_lock(owner, start, end, typ, pid)?;
        if let Some(f) = self.open_file(ino) {
            f.locked.store(true, Ordering::Relaxed);
        }
        let meta = self.fs.meta().clone();
        let wait = async move {
            let mut pause = Duration::from_millis(5);
            loop {
                match meta.set_lock(ino, lock.clone()).await {
                    Ok(()) => return Ok(()),
                    Err(tessera_meta::api::CallError::Meta(
                        tessera_meta::MetaError::WouldBlock(_),
                    )) if sleep => {
                        tokio::time::sleep(pause).await;
                        pause = (pause * 2).min(Duration::from_millis(100));
                    }
                    Err(e) => return Err(err(e.into())),
                }
            }
        };
        interruptible(pid, wait).await
    }

    // ----- space management -----

    /// fallocate: mode 0 (allocate, growing the size) and
    /// `FALLOC_FL_KEEP_SIZE` cost nothing (blocks are made on write);
    /// `FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE` and `FALLOC_FL_ZERO_RANGE`
    /// write zeros over the range.
    pub async fn fallocate(
        self: &Arc<Self>,
        fh: u64,
        offset: u64,
        length: u64,
        mode: i32,
        who: Caller,
    ) -> Result<()> {
        let pid = who.pid;
        let file = self.handle(fh)?;
        let end = offset
            .checked_add(length)
            .filter(|e| *e <= MAX_FILE_SIZE)
            .ok_or(Errno::EFBIG)?;
        let keep = mode & libc::FALLOC_FL_KEEP_SIZE != 0;
        let punch = mode & libc::FALLOC_FL_PUNCH_HOLE != 0;
        let zero = mode & libc::FALLOC_FL_ZERO_RANGE != 0;
        let known =
            libc::FALLOC_FL_KEEP_SIZE | libc::FALLOC_FL_PUNCH_HOLE | libc::FALLOC_FL_ZERO_RANGE;
        if mode & !known != 0 || (punch && !keep) || (punch && zero) {
            return Err(Errno::EOPNOTSUPP);
        }
        self.flush(&file, pid).await?;
        let size = self.current_inode(&file).await?.size;
        if punch || zero {
            let stop = if keep { end.min(size) } else { end };
            let mut at = offset;
            while at < stop {
                let n = (stop - at).min(WRITE_CHUNK as u64);
                let zeros = vec![0u8; n as usize];
                self.write(fh, at, &zeros, pid).await?;
                at += n;
            }
            self.flush(&file, pid).await?;
        }
        if !keep && end > size {
            self.setattr(file.ino, None, None, None, Some(end), None, None, who)
                .await?;
        } else if !keep {
            self.kill_set_id(file.ino, who).await?;
        }
        Ok(())
    }

    /// A write by `(pid, uid)` that the kernel did not send as a write (a
    /// copy, an allocation): set-ID bits go as a write would take them.
    async fn kill_set_id(&self, ino: u64, who: Caller) -> Result<()> {
        if who.has_fsetid() {
            return Ok(());
        }
        self.drop_set_id(ino, who).await
    }

    /// Makes the kernel ask for `ino`'s attributes again (a change it did
    /// not make itself, such as set-ID bits a write dropped).
    pub async fn forget_attributes(&self, ino: u64) {
        let Some(n) = self.notifier.get().cloned() else {
            return;
        };
        // A negative offset: attributes only, no page is touched.
        let _ =
            tokio::task::spawn_blocking(move || n.inval_inode(fuser::INodeNo(ino), -1, 0)).await;
    }

    /// Drops the file's set-ID bits as a write by `who` does (a write the
    /// kernel flagged FUSE_WRITE_KILL_SUIDGID, leaving this to the mount).
    pub async fn drop_set_id(&self, ino: u64, who: Caller) -> Result<()> {
        let (cur, _) = self.attr_of(ino).await?;
        let killed = without_set_id(cur.mode, who.in_group_or_capable(cur.gid));
        if killed == cur.mode || cur.kind != FileKind::File {
            return Ok(());
        }
        let epoch = self.dircache.epoch();
        let attr = SetAttr {
            mode: Some(killed & 0o7777),
            ..SetAttr::default()
        };
        let i = self.fs.setattr(ino, attr).await.map_err(err)?;
        self.dircache.answered(&i, epoch);
        self.settle(&i);
        Ok(())
    }

    /// SEEK_DATA / SEEK_HOLE: Tessera does not track holes for callers, so
    /// as on file systems without hole support, all of the file is data
    /// and the only hole is at its end.
    pub async fn lseek(&self, fh: u64, offset: i64, whence: i32) -> Result<i64> {
        let file = self.handle(fh)?;
        let size = self.current_inode(&file).await?.size.max(file.size()) as i64;
        match whence {
            libc::SEEK_DATA if offset < size && offset >= 0 => Ok(offset),
            libc::SEEK_HOLE if offset < size && offset >= 0 => Ok(size),
            libc::SEEK_DATA | libc::SEEK_HOLE => Err(Errno::ENXIO),
            _ => Err(Errno::EINVAL),
        }
    }

    pub async fn copy_file_range(
        self: &Arc<Self>,
        (fh_in, offset_in): (u64, u64),
        (fh_out, offset_out): (u64, u64),
        len: u64,
        who: Caller,
    ) -> Result<u32> {
        let pid = who.pid;
        let len = len.min(WRITE_CHUNK as u64) as u32;
        let data = self.read(fh_in, offset_in, len, pid).await?;
        if data.is_empty() {
            return Ok(0);
        }
        let n = self.write(fh_out, offset_out, &data, pid).await?;
        self.kill_set_id(self.handle(fh_out)?.ino, who).await?;
        Ok(n)
    }

    /// Ends the session: every handle is closed and flushed.
    pub async fn shutdown(&self) {
        let files: Vec<Arc<OpenFile>> = self
            .files
            .lock()
            .expect("files")
            .values()
            .cloned()
            .collect();
        for f in files {
            if let Err(e) = flush_file(self, &f).await {
                tracing::error!(ino = f.ino, error = %e, "writes could not be stored at unmount");
            }
        }
        let _ = self.fs.meta().end_session(self.session).await;
    }
}

/// Sends a file's buffered writes in order, in large in-place writes; what
/// fails goes back into the buffer under anything written since.
async fn flush_file(mount: &Mount, file: &Arc<OpenFile>) -> std::result::Result<(), Error> {
    let fs = &mount.fs;
    let _g = file.flushing.lock().await;
    let mut settled = None;
    let runs = {
        let mut s = file.lock();
        let runs = s.buf.take();
        s.inflight_end = runs.last().map(|(o, d)| o + d.len() as u64).unwrap_or(0);
        runs
    };
    let mut result = Ok(());
    let mut runs = runs.into_iter();
    'runs: for (offset, data) in runs.by_ref() {
        let data = Bytes::from(data);
        let mut at = 0usize;
        while at < data.len() {
            let n = (data.len() - at).min(WRITE_CHUNK);
            match fs
                .write_bytes_at(file.ino, offset + at as u64, data.slice(at..at + n))
                .await
            {
                Ok(inode) => {
                    let mut s = file.lock();
                    s.inode = inode;
                    s.fresh = Instant::now();
                    at += n;
                    settled = Some(s.inode.clone());
                }
                Err(e) => {
                    file.lock()
                        .buf
                        .insert_under(offset + at as u64, &data[at..]);
                    result = Err(e);
                    break 'runs;
                }
            }
        }
    }
    {
        let mut s = file.lock();
        for (offset, data) in runs {
            s.buf.insert_under(offset, &data);
        }
        s.inflight_end = 0;
    }
    if let Some(i) = settled {
        mount.settle(&i);
    }
    result
}

/// Which extended attributes a caller may name: `user.*`, and `trusted.*`
/// for root; others (`security.*`, `system.*` ACLs) are not supported.
pub fn check_xattr_name(name: &OsStr, uid: u32) -> Result<&[u8]> {
    let b = name.as_bytes();
    if b.is_empty() || b.len() > 255 {
        return Err(Errno::ERANGE);
    }
    if b.starts_with(b"user.") && b.len() > 5 {
        Ok(b)
    } else if b.starts_with(b"trusted.") && b.len() > 8 {
        if uid != 0 {
            return Err(Errno::EPERM);
        }
        Ok(b)
    } else {
        // security.*, system.* (ACLs) and unknown namespaces.
        Err(Errno::EOPNOTSUPP)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn xattr_namespaces() {
        assert!(check_xattr_name(OsStr::new("user.a"), 1000).is_ok());
        assert_eq!(
            check_xattr_name(OsStr::new("trusted.a"), 1000),
            Err(Errno::EPERM)
        );
        assert!(check_xattr_name(OsStr::new("trusted.a"), 0).is_ok());
        assert_eq!(
            check_xattr_name(OsStr::new("security.selinux"), 0),
            Err(Errno::EOPNOTSUPP)
        );
        assert_eq!(
            check_xattr_name(OsStr::new("user."), 0),
            Err(Errno::EOPNOTSUPP)
        );
    }

    #[test]
    fn names() {
        assert_eq!(
            name_of(OsStr::new(&"x".repeat(256))),
            Err(Errno::ENAMETOOLONG)
        );
        assert_eq!(name_of(OsStr::from_bytes(b"\xff")), Err(Errno::EINVAL));
        assert_eq!(name_of(OsStr::new("a")), Ok("a"));
    }
}
