//! fuser's callbacks: each hands its request to a task on the Tokio runtime
//! and answers from there, so the kernel's requests run concurrently and no
//! callback blocks fuser's thread.

use std::ffi::OsStr;
use std::path::Path;
use std::sync::Arc;
use std::time::SystemTime;

use fuser::{
    AccessFlags, CopyFileRangeFlags, Errno, FileHandle, FopenFlags, Generation, INodeNo, InitFlags,
    KernelConfig, LockOwner, OpenFlags, RenameFlags, ReplyAttr, ReplyCreate, ReplyData,
    ReplyDirectory, ReplyDirectoryPlus, ReplyEmpty, ReplyEntry, ReplyLock, ReplyLseek, ReplyOpen,
    ReplyStatfs, ReplyWrite, ReplyXattr, Request, TimeOrNow, WriteFlags,
};
use tessera_meta::{FileKind, Inode};

use super::attr::{file_attr, file_type, ns_of};
use super::caller::Caller;
use super::core::Mount;

/// Answers an entry request with `inode`, telling the mount what the
/// kernel now holds.
fn entry(m: &Mount, reply: ReplyEntry, inode: &Inode, size: u64) {
    m.introduce(inode, size);
    reply.entry(
        &m.ttl(),
        &file_attr(inode, size),
        Generation(m.generation(inode.ino)),
    );
}

pub struct FuseFs {
    pub mount: Arc<Mount>,
    pub rt: tokio::runtime::Handle,
}

impl FuseFs {
    /// Runs `f` on the runtime with the mount: for requests that may wait
    /// long (data that waits for datanodes, locks that wait for a holder).
    fn spawn<F, Fut>(&self, f: F)
    where
        F: FnOnce(Arc<Mount>) -> Fut,
        Fut: std::future::Future<Output = ()> + Send + 'static,
    {
        self.rt.spawn(f(self.mount.clone()));
    }

    /// Runs `f` to its end on this fuser thread: for requests answered by
    /// meta alone, which wait at most one meta call's timeout. Inside
    /// `tessera up` the call to meta then runs here end to end (redb reads
    /// too, see [`tessera_rpc::allow_blocking_here`]), with no hand-off to a
    /// runtime worker and back: on this machine each wake-up of a sleeping
    /// thread costs about as much as meta's work for a create. The mount
    /// has several fuser threads, so one waiting on meta stalls nothing else.
    fn inline<F, Fut>(&self, f: F)
    where
        F: FnOnce(Arc<Mount>) -> Fut,
        Fut: std::future::Future<Output = ()>,
    {
        tessera_rpc::allow_blocking_here();
        self.rt.block_on(f(self.mount.clone()));
    }
}

fn caller(req: &Request) -> Caller {
    Caller {
        pid: req.pid(),
        uid: req.uid(),
        gid: req.gid(),
    }
}

fn time_ns(t: TimeOrNow) -> i64 {
    match t {
        TimeOrNow::SpecificTime(t) => ns_of(t),
        TimeOrNow::Now => tessera_meta::now_ns(),
    }
}

fn owned(name: &OsStr) -> std::ffi::OsString {
    name.to_os_string()
}

impl fuser::Filesystem for FuseFs {
    fn init(&mut self, _req: &Request, config: &mut KernelConfig) -> std::io::Result<()> {
        for cap in [
            InitFlags::FUSE_WRITEBACK_CACHE,
            InitFlags::FUSE_POSIX_LOCKS,
            InitFlags::FUSE_FLOCK_LOCKS,
            InitFlags::FUSE_AUTO_INVAL_DATA,
            InitFlags::FUSE_DO_READDIRPLUS,
            InitFlags::FUSE_READDIRPLUS_AUTO,
            InitFlags::FUSE_PARALLEL_DIROPS,
            InitFlags::FUSE_CACHE_SYMLINKS,
            // Set-ID bits are dropped by the mount (write, truncate,
            // chown), so the kernel need not ask for security.capability
            // before every write: otherwise a GETXATTR round trip each,
            // which made 4 KiB writes 2.5 times slower than 1 MiB ones.
            InitFlags::FUSE_HANDLE_KILLPRIV_V2,
        ] {
            if config.add_capabilities(cap).is_err() {
                tracing::info!(?cap, "the kernel does not offer this FUSE capability");
            }
        }
        let _ = config.set_max_write(1 << 20);
        let _ = config.set_max_readahead(1 << 20);
        let _ = config.set_max_background(64);
        let _ = config.set_congestion_threshold(48);
        let _ = config.set_time_granularity(std::time::Duration::from_nanos(1));
        Ok(())
    }

    fn lookup(&self, _req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEntry) {
        if let Ok(n) = super::core::name_of(name)
            && self.mount.dircache.absent(parent.0, n)
        {
            return reply.error(Errno::ENOENT);
        }
        let name = owned(name);
        self.inline(move |m| async move {
            match m.lookup(parent.0, &name).await {
                Ok((i, size)) => entry(&m, reply, &i, size),
                Err(e) => reply.error(e),
            }
        });
    }

    fn forget(&self, _req: &Request, ino: INodeNo, _nlookup: u64) {
        self.mount.forget(ino.0);
    }

    fn getattr(&self, _req: &Request, ino: INodeNo, _fh: Option<FileHandle>, reply: ReplyAttr) {
        // A directory's attributes the mount knows are answered at once.
        if let Some(d) = self.mount.dircache.attr(ino.0) {
            return reply.attr(&self.mount.ttl(), &file_attr(&d, d.size));
        }
        self.inline(move |m| async move {
            match m.getattr(ino.0).await {
                Ok((i, size)) => reply.attr(&m.ttl(), &file_attr(&i, size)),
                Err(e) => reply.error(e),
            }
        });
    }

    fn setattr(
        &self,
        req: &Request,
        ino: INodeNo,
        mode: Option<u32>,
        uid: Option<u32>,
        gid: Option<u32>,
        size: Option<u64>,
        atime: Option<TimeOrNow>,
        mtime: Option<TimeOrNow>,
        _ctime: Option<SystemTime>,
        _fh: Option<FileHandle>,
        _crtime: Option<SystemTime>,
        _chgtime: Option<SystemTime>,
        _bkuptime: Option<SystemTime>,
        _flags: Option<fuser::BsdFileFlags>,
        reply: ReplyAttr,
    ) {
        // The kernel writes back the times of a file this mount unlinked
        // for good as it drops it: nothing is left to set.
        if self.mount.is_gone(ino.0) {
            return reply.error(Errno::ENOENT);
        }
        let who = caller(req);
        let job = move |m: Arc<Mount>| async move {
            let r = m
                .setattr(
                    ino.0,
                    mode,
                    uid,
                    gid,
                    size,
                    atime.map(time_ns),
                    mtime.map(time_ns),
                    who,
                )
                .await;
            match r {
                Ok((i, size)) => reply.attr(&m.ttl(), &file_attr(&i, size)),
                Err(e) => reply.error(e),
            }
        };
        // A truncate sends data first; the rest is meta's alone.
        if size.is_some() {
            self.spawn(job)
        } else {
            self.inline(job)
        }
    }

    fn readlink(&self, _req: &Request, ino: INodeNo, reply: ReplyData) {
        self.inline(move |m| async move {
            match m.readlink(ino.0).await {
                Ok(t) => reply.data(&t),
                Err(e) => reply.error(e),
            }
        });
    }

    fn mknod(
        &self,
        req: &Request,
        parent: INodeNo,
        name: &OsStr,
        mode: u32,
        _umask: u32,
        rdev: u32,
        reply: ReplyEntry,
    ) {
        let (name, who) = (owned(name), (req.uid(), req.gid()));
        self.inline(move |m| async move {
            match m.mknod(parent.0, &name, mode, rdev, who).await {
                Ok(i) => entry(&m, reply, &i, i.size),
                Err(e) => reply.error(e),
            }
        });
    }

    fn mkdir(
        &self,
        req: &Request,
        parent: INodeNo,
        name: &OsStr,
        mode: u32,
        _umask: u32,
        reply: ReplyEntry,
    ) {
        let (name, uid, gid) = (owned(name), req.uid(), req.gid());
        self.inline(move |m| async move {
            match m
                .make(parent.0, &name, FileKind::Dir, mode, uid, gid, None, true)
                .await
            {
                Ok(i) => entry(&m, reply, &i, i.size),
                Err(e) => reply.error(e),
            }
        });
    }

    fn unlink(&self, _req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEmpty) {
        let name = owned(name);
        self.inline(move |m| async move {
            match m.unlink(parent.0, &name).await {
                Ok(()) => reply.ok(),
                Err(e) => reply.error(e),
            }
        });
    }

    fn rmdir(&self, _req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEmpty) {
        let name = owned(name);
        self.inline(move |m| async move {
            match m.rmdir(parent.0, &name).await {
                Ok(()) => reply.ok(),
                Err(e) => reply.error(e),
            }
        });
    }

    fn symlink(
        &self,
        req: &Request,
        parent: INodeNo,
        link_name: &OsStr,
        target: &Path,
        reply: ReplyEntry,
    ) {
        let (name, target, who) = (
            owned(link_name),
            target.to_path_buf(),
            (req.uid(), req.gid()),
        );
        self.inline(move |m| async move {
            match m.symlink(parent.0, &name, &target, who).await {
                Ok(i) => entry(&m, reply, &i, i.size),
                Err(e) => reply.error(e),
            }
        });
    }

    fn rename(
        &self,
        _req: &Request,
        parent: INodeNo,
        name: &OsStr,
        newparent: INodeNo,
        newname: &OsStr,
        flags: RenameFlags,
        reply: ReplyEmpty,
    ) {
        let (name, newname) = (owned(name), owned(newname));
        self.inline(move |m| async move {
            match m
                .rename((parent.0, &name), (newparent.0, &newname), flags)
                .await
            {
                Ok(()) => reply.ok(),
                Err(e) => reply.error(e),
            }
        });
    }

    fn link(
        &self,
        _req: &Request,
        ino: INodeNo,
        newparent: INodeNo,
        newname: &OsStr,
        reply: ReplyEntry,
    ) {
        let newname = owned(newname);
        self.inline(move |m| async move {
            match m.link(ino.0, newparent.0, &newname).await {
                Ok((i, size)) => entry(&m, reply, &i, size),
                Err(e) => reply.error(e),
            }
        });
    }

    fn open(&self, _req: &Request, ino: INodeNo, flags: OpenFlags, reply: ReplyOpen) {
        self.inline(move |m| async move {
            match m.open(ino.0, flags.0).await {
                Ok((fh, keep)) => {
                    let f = if keep {
                        FopenFlags::FOPEN_KEEP_CACHE
                    } else {
                        FopenFlags::empty()
                    };
                    reply.opened(FileHandle(fh), f)
                }
                Err(e) => reply.error(e),
            }
        });
    }

    fn read(
        &self,
        req: &Request,
        _ino: INodeNo,
        fh: FileHandle,
        offset: u64,
        size: u32,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        reply: ReplyData,
    ) {
        let pid = req.pid();
        let job = move |m: Arc<Mount>| async move {
            match m.read(fh.0, offset, size, pid).await {
                Ok(b) => reply.data(&b),
                Err(e) => reply.error(e),
            }
        };
        // A read that waits on nothing but one datanode call, or on
        // nothing at all (its read-ahead arrived), runs here.
        if self.mount.read_may_run_here(fh.0, offset, size) {
            self.inline(job)
        } else {
            self.spawn(job)
        }
    }

    fn write(
        &self,
        req: &Request,
        ino: INodeNo,
        fh: FileHandle,
        offset: u64,
        data: &[u8],
        write_flags: WriteFlags,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        reply: ReplyWrite,
    ) {
        // Taken into the file's buffer here, straight from fuser's; only a
        // writer that must wait for room (too much held) waits on the
        // runtime.
        let (pid, who) = (req.pid(), caller(req));
        let _rt = self.rt.enter();
        let n = data.len() as u32;
        // A write to a set-ID file by a process without CAP_FSETID: the
        // kernel sends it through (not cached) and leaves dropping the bits
        // to the mount (FUSE_HANDLE_KILLPRIV_V2).
        let kill = write_flags.contains(WriteFlags::FUSE_WRITE_KILL_SUIDGID);
        match self.mount.buffer_write(fh.0, offset, data) {
            Err(e) => reply.error(e),
            Ok(false) if !kill => reply.written(n),
            Ok(wait) => self.spawn(move |m| async move {
                let r = async {
                    if wait {
                        m.wait_for_room(fh.0, pid).await?;
                    }
                    if kill {
                        m.drop_set_id(ino.0, who).await?;
                        m.forget_attributes(ino.0).await;
                    }
                    Ok(())
                };
                match r.await {
                    Ok(()) => reply.written(n),
                    Err(e) => reply.error(e),
                }
            }),
        }
    }

    fn flush(
        &self,
        req: &Request,
        _ino: INodeNo,
        fh: FileHandle,
        lock_owner: LockOwner,
        reply: ReplyEmpty,
    ) {
        if self.mount.flush_is_noop(fh.0) {
            return reply.ok();
        }
        let pid = req.pid();
        self.spawn(move |m| async move {
            match m.flush_fh(fh.0, lock_owner.0, pid).await {
                Ok(()) => reply.ok(),
                Err(e) => reply.error(e),
            }
        });
    }

    fn release(
        &self,
        _req: &Request,
        _ino: INodeNo,
        fh: FileHandle,
        _flags: OpenFlags,
        lock_owner: Option<LockOwner>,
        _flush: bool,
        reply: ReplyEmpty,
    ) {
        // Answered here when the close needs nothing from the cluster.
        match self.mount.release(fh.0, lock_owner.map(|o| o.0)) {
            Err(e) => reply.error(e),
            Ok(None) => reply.ok(),
            Ok(Some(rest)) => {
                self.rt.spawn(async move {
                    match rest.await {
                        Ok(()) => reply.ok(),
                        Err(e) => reply.error(e),
                    }
                });
            }
        }
    }

    fn fsync(
        &self,
        req: &Request,
        ino: INodeNo,
        _fh: FileHandle,
        _datasync: bool,
        reply: ReplyEmpty,
    ) {
        let pid = req.pid();
        self.spawn(move |m| async move {
            match m.fsync_ino(ino.0, pid).await {
                Ok(()) => reply.ok(),
                Err(e) => reply.error(e),
            }
        });
    }

    fn opendir(&self, _req: &Request, ino: INodeNo, _flags: OpenFlags, reply: ReplyOpen) {
        let fh = self.mount.opendir(ino.0);
        reply.opened(FileHandle(fh), FopenFlags::empty());
    }

    fn readdir(
        &self,
        _req: &Request,
        ino: INodeNo,
        fh: FileHandle,
        offset: u64,
        mut reply: ReplyDirectory,
    ) {
        self.inline(move |m| async move {
            let (dir, entries) = match m.listing(fh.0, offset).await {
                Ok(l) => l,
                Err(e) => return reply.error(e),
            };
            let mut i = offset;
            if i == 0 {
                if reply.add(ino, 1, fuser::FileType::Directory, ".") {
                    return reply.ok();
                }
                i = 1;
            }
            if i == 1 {
                let parent = m.parent_of(dir).await.unwrap_or(dir);
                if reply.add(INodeNo(parent), 2, fuser::FileType::Directory, "..") {
                    return reply.ok();
                }
                i = 2;
            }
            for (k, (name, inode)) in entries.iter().enumerate().skip((i - 2) as usize) {
                if reply.add(
                    INodeNo(inode.ino),
                    k as u64 + 3,
                    file_type(inode.kind),
                    name,
                ) {
                    break;
                }
            }
            reply.ok()
        });
    }

    fn readdirplus(
        &self,
        _req: &Request,
        ino: INodeNo,
        fh: FileHandle,
        offset: u64,
        mut reply: ReplyDirectoryPlus,
    ) {
        self.inline(move |m| async move {
            let (dir, entries) = match m.listing(fh.0, offset).await {
                Ok(l) => l,
                Err(e) => return reply.error(e),
            };
            let mut i = offset;
            if i < 2 {
                let (d, size) = match m.getattr(dir).await {
                    Ok(d) => d,
                    Err(e) => return reply.error(e),
                };
                let attr = file_attr(&d, size);
                let gen_of = |ino: u64| Generation(m.generation(ino));
                if i == 0 && reply.add(ino, 1, ".", &m.ttl(), &attr, gen_of(ino.0)) {
                    return reply.ok();
                }
                let mut pattr = attr;
                pattr.ino = INodeNo(d.parent);
                if reply.add(
                    INodeNo(d.parent),
                    2,
                    "..",
                    &m.ttl(),
                    &pattr,
                    gen_of(d.parent),
                ) {
                    return reply.ok();
                }
                i = 2;
            }
            for (k, (name, inode)) in entries.iter().enumerate().skip((i - 2) as usize) {
                let size = m.size_of(inode);
                m.introduce(inode, size);
                if reply.add(
                    INodeNo(inode.ino),
                    k as u64 + 3,
                    name,
                    &m.ttl(),
                    &file_attr(inode, size),
                    Generation(m.generation(inode.ino)),
                ) {
                    break;
                }
            }
            reply.ok()
        });
    }

    fn releasedir(
        &self,
        _req: &Request,
        _ino: INodeNo,
        fh: FileHandle,
        _flags: OpenFlags,
        reply: ReplyEmpty,
    ) {
        self.mount.releasedir(fh.0);
        reply.ok();
    }

    fn fsyncdir(
        &self,
        req: &Request,
        _ino: INodeNo,
        _fh: FileHandle,
        _datasync: bool,
        reply: ReplyEmpty,
    ) {
        // Names change lazily in meta: make them durable.
        let pid = req.pid();
        self.spawn(move |m| async move {
            match m.sync_meta(pid).await {
                Ok(()) => reply.ok(),
                Err(e) => reply.error(e),
            }
        });
    }

    fn statfs(&self, _req: &Request, _ino: INodeNo, reply: ReplyStatfs) {
        // Asks every datanode: spawned, as one may be slow to answer.
        self.spawn(move |m| async move {
            let (used, available, files) = m.statfs().await;
            const BS: u64 = 4096;
            let blocks = (used + available) / BS;
            let free = available / BS;
            // Inodes are not a limited resource: report plenty.
            let ffree = u64::from(u32::MAX);
            reply.statfs(
                blocks,
                free,
                free,
                files + ffree,
                ffree,
                BS as u32,
                255,
                BS as u32,
            );
        });
    }

    fn setxattr(
        &self,
        req: &Request,
        ino: INodeNo,
        name: &OsStr,
        value: &[u8],
        flags: i32,
        _position: u32,
        reply: ReplyEmpty,
    ) {
        let (name, value, uid) = (owned(name), value.to_vec(), req.uid());
        self.inline(move |m| async move {
            match m.setxattr(ino.0, &name, &value, flags, uid).await {
                Ok(()) => reply.ok(),
                Err(e) => reply.error(e),
            }
        });
    }

    fn getxattr(&self, req: &Request, ino: INodeNo, name: &OsStr, size: u32, reply: ReplyXattr) {
        // `ls -l` asks every file for ACLs: answer those at once.
        if let Err(e) = super::core::check_xattr_name(name, req.uid()) {
            return reply.error(e);
        }
        let (name, uid) = (owned(name), req.uid());
        self.inline(move |m| async move {
            match m.getxattr(ino.0, &name, uid).await {
                Ok(v) => answer_xattr(reply, &v, size),
                Err(e) => reply.error(e),
            }
        });
    }

    fn listxattr(&self, req: &Request, ino: INodeNo, size: u32, reply: ReplyXattr) {
        let uid = req.uid();
        self.inline(move |m| async move {
            match m.listxattr(ino.0, uid).await {
                Ok(v) => answer_xattr(reply, &v, size),
                Err(e) => reply.error(e),
            }
        });
    }

    fn removexattr(&self, req: &Request, ino: INodeNo, name: &OsStr, reply: ReplyEmpty) {
        let (name, uid) = (owned(name), req.uid());
        self.inline(move |m| async move {
            match m.removexattr(ino.0, &name, uid).await {
                Ok(()) => reply.ok(),
                Err(e) => reply.error(e),
            }
        });
    }

    fn access(&self, _req: &Request, _ino: INodeNo, _mask: AccessFlags, reply: ReplyEmpty) {
        // With default_permissions the kernel checks access itself.
        reply.ok();
    }

    fn create(
        &self,
        req: &Request,
        parent: INodeNo,
        name: &OsStr,
        mode: u32,
        _umask: u32,
        flags: i32,
        reply: ReplyCreate,
    ) {
        let (name, who) = (owned(name), (req.uid(), req.gid()));
        self.inline(move |m| async move {
            match m.create(parent.0, &name, mode, flags, who).await {
                Ok((i, fh)) => {
                    m.introduce(&i, i.size);
                    reply.created(
                        &m.ttl(),
                        &file_attr(&i, i.size),
                        Generation(m.generation(i.ino)),
                        FileHandle(fh),
                        FopenFlags::empty(),
                    )
                }
                Err(e) => reply.error(e),
            }
        });
    }

    fn getlk(
        &self,
        _req: &Request,
        ino: INodeNo,
        _fh: FileHandle,
        lock_owner: LockOwner,
        start: u64,
        end: u64,
        typ: i32,
        pid: u32,
        reply: ReplyLock,
    ) {
        self.inline(move |m| async move {
            match m.getlk(ino.0, lock_owner.0, (start, end), typ, pid).await {
                Ok((s, e, t, p)) => reply.locked(s, e, t, p),
                Err(e) => reply.error(e),
            }
        });
    }

    fn setlk(
        &self,
        req: &Request,
        ino: INodeNo,
        _fh: FileHandle,
        lock_owner: LockOwner,
        start: u64,
        end: u64,
        typ: i32,
        pid: u32,
        sleep: bool,
        reply: ReplyEmpty,
    ) {
        let waiter = req.pid();
        self.spawn(move |m| async move {
            let pid = if pid == 0 { waiter } else { pid };
            match m
                .setlk(ino.0, lock_owner.0, (start, end), typ, pid, sleep)
                .await
            {
                Ok(()) => reply.ok(),
                Err(e) => reply.error(e),
            }
        });
    }

    fn fallocate(
        &self,
        req: &Request,
        _ino: INodeNo,
        fh: FileHandle,
        offset: u64,
        length: u64,
        mode: i32,
        reply: ReplyEmpty,
    ) {
        let who = caller(req);
        self.spawn(move |m| async move {
            match m.fallocate(fh.0, offset, length, mode, who).await {
                Ok(()) => reply.ok(),
                Err(e) => reply.error(e),
            }
        });
    }

    fn lseek(
        &self,
        _req: &Request,
        _ino: INodeNo,
        fh: FileHandle,
        offset: i64,
        whence: i32,
        reply: ReplyLseek,
    ) {
        self.spawn(move |m| async move {
            match m.lseek(fh.0, offset, whence).await {
                Ok(o) => reply.offset(o),
                Err(e) => reply.error(e),
            }
        });
    }

    fn copy_file_range(
        &self,
        req: &Request,
        _ino_in: INodeNo,
        fh_in: FileHandle,
        offset_in: u64,
        _ino_out: INodeNo,
        fh_out: FileHandle,
        offset_out: u64,
        len: u64,
        _flags: CopyFileRangeFlags,
        reply: ReplyWrite,
    ) {
        let who = caller(req);
        self.spawn(move |m| async move {
            match m
                .copy_file_range((fh_in.0, offset_in), (fh_out.0, offset_out), len, who)
                .await
            {
                Ok(n) => reply.written(n),
                Err(e) => reply.error(e),
            }
        });
    }
}

/// Answers getxattr/listxattr: the size when asked for it (size 0), the
/// value if it fits, else ERANGE.
fn answer_xattr(reply: ReplyXattr, value: &[u8], size: u32) {
    if size == 0 {
        reply.size(value.len() as u32);
    } else if value.len() <= size as usize {
        reply.data(value);
    } else {
        reply.error(Errno::ERANGE);
    }
}
