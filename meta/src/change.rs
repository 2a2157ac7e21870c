//! The changes meta applies (the write half of its API) and what they
//! produce. They travel on the wire inside `MetaRequest::Change`; gateways
//! and datanodes use the typed methods of [`crate::MetaClient`] instead.

use crate::types::*;

/// Most object ids in one lease.
pub const MAX_LEASE: u64 = 4096;

/// A change to the namespace or the ring.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub enum Change {
    Create {
        parent: u64,
        name: String,
        kind: FileKind,
        mode: u32,
        uid: u32,
        gid: u32,
        target: Option<String>,
        /// Placement seed for the file's future content.
        seed: u64,
        /// Fail with `Exists` if the name is taken (else return what is there).
        exclusive: bool,
    },
    /// Removes a name. If that was the inode's last name and `hold` names a
    /// mount session that has it open, the inode is kept (an orphan: no
    /// name, readable and writable by inode) until that session forgets it
    /// or ends.
    Unlink {
        parent: u64,
        name: String,
        hold: Option<u64>,
    },
    Rmdir {
        parent: u64,
        name: String,
    },
    Rename {
        parent: u64,
        name: String,
        new_parent: u64,
        new_name: String,
        flags: RenameFlags,
    },
    /// A new name for a file (a hard link).
    Link {
        ino: u64,
        new_parent: u64,
        new_name: String,
    },
    /// Creates or renews a mount's session, which holds its file locks and
    /// orphans; one not renewed within `ttl_ns` ends (see `ReapLeases`).
    RenewSession {
        session: u64,
        ttl_ns: i64,
    },
    /// Ends a session: its locks and orphans go.
    EndSession {
        session: u64,
    },
    /// The session closed its last handle of `ino`: an orphan it holds goes.
    Forget {
        ino: u64,
        session: u64,
    },
    SetXattr {
        ino: u64,
        name: Vec<u8>,
        value: Vec<u8>,
        mode: XattrMode,
    },
    RemoveXattr {
        ino: u64,
        name: Vec<u8>,
    },
    /// Takes, changes or releases (`LockKind::Unlock`) a byte range lock
    /// with POSIX semantics: the owner's own locks in the range are
    /// replaced; a live lock of another owner that conflicts answers
    /// `MetaError::WouldBlock`.
    SetLock {
        ino: u64,
        lock: FileLock,
    },
    /// Releases an owner's locks on `ino` (`owner` None: all of the session's).
    ReleaseLocks {
        ino: u64,
        session: u64,
        owner: Option<u64>,
    },
    /// Changes nothing; answered once everything committed before it is
    /// durable (fsync of a directory).
    Sync,
    SetAttr {
        ino: u64,
        attr: SetAttr,
    },
    /// Sets the size of a file whose content is `object` (growing it: the
    /// gateway zeroed what [`Outcome::Write`] named first) and ends
    /// `holder`'s write lease.
    Resize {
        ino: u64,
        object: u64,
        size: u64,
        holder: u64,
    },
    /// Leases `count` fresh object ids (at most [`MAX_LEASE`]) to a gateway,
    /// which places each new object itself: one durable commit for many
    /// uploads. Returns the range, the generation their blocks are written
    /// with, and the ring width to place them over.
    LeaseObjects {
        count: u64,
    },
    /// Takes (or renews) the write lease of `ino` for `holder` (one gateway
    /// process) for `ttl_ns`, for an in-place write that may reach `end`.
    /// Fails with `Busy` while another holder's lease lives: in-place writes
    /// of one file are serialised across gateways, so a read-modify-write
    /// of a partial block never loses another gateway's update. Returns a
    /// generation and how far uncommitted writes may have left bytes.
    BeginWrite {
        ino: u64,
        end: u64,
        holder: u64,
        ttl_ns: i64,
    },
    /// Records a write into the current object that ended at `end` and ends
    /// `holder`'s write lease. The first write into a file without content
    /// adopts `object`.
    CommitWrite {
        ino: u64,
        object: ObjectRef,
        end: u64,
        mtime: i64,
        holder: u64,
    },
    /// Ends `holder`'s write lease of `ino` without committing anything (the
    /// write failed).
    EndWrite {
        ino: u64,
        holder: u64,
    },
    /// Keeps the lease of a pending upload of `object` alive (a long upload
    /// renews it while it streams). Fails if the lease expired or the id was
    /// published or abandoned.
    RenewUpload {
        object: u64,
    },
    /// Replaces the content of `ino` with `object` if its content is still
    /// `expect` (an object id); the old object goes to GC.
    SwapObject {
        ino: u64,
        expect: u64,
        object: ObjectRef,
        size: u64,
        mtime: i64,
    },
    /// Makes `object` (fully written) the content of `parent/name`, creating
    /// the file or swapping out its old object, which goes to GC.
    Publish {
        parent: u64,
        name: String,
        object: ObjectRef,
        size: u64,
        mode: u32,
        mtime: i64,
    },
    /// An upload that will never be published: its object goes to GC.
    Abandon {
        object: u64,
    },
    /// Moves the unused ids of leases granted more than `ttl_ns` ago (by
    /// meta's clock) to GC and forgets those leases.
    ReapLeases {
        ttl_ns: i64,
    },
    GcDone {
        objects: Vec<u64>,
    },
    /// The datanode in `slot` deleted these queued objects; each leaves the
    /// GC queue once every slot of the ring has.
    GcDoneOn {
        slot: u32,
        objects: Vec<u64>,
    },
    /// Queues repairs: each range's replica on its slot missed a write
    /// acknowledged without it. Overlapping and adjacent ranges of one
    /// object and slot are merged.
    NeedRepair {
        ranges: Vec<RepairRange>,
    },
    /// These queued repairs are done: each leaves the queue unless its
    /// range changed since it was handed out (its `seq`).
    RepairDone {
        done: Vec<RepairEntry>,
    },
    Register {
        node_id: String,
        addr: String,
        slot: Option<u32>,
    },
    /// Takes a WebDAV lock unless a lock of another request conflicts
    /// (`MetaError::Locked` names it): an exclusive lock conflicts with any
    /// other lock covering the same resources, a shared one with exclusive
    /// ones. Answers `Outcome::Lock`.
    Lock(LockRequest),
    /// Releases the lock `token` covering `path` (on it, or a deep one on
    /// an ancestor). A lock taken by a user is released only by that user
    /// (`principal`); otherwise `MetaError::Locked`.
    Unlock {
        path: String,
        token: String,
        principal: Option<String>,
    },
    /// Restarts the timeout of lock `token` covering `path`, as `Unlock`
    /// finds it and with the same rule for who may.
    RefreshLock {
        path: String,
        token: String,
        timeout_s: u64,
        principal: Option<String>,
    },
    /// Drops every lock on `path` and below (it was deleted or moved away).
    DropLocks {
        path: String,
    },
    /// Sets (`true`) and removes (`false`) dead properties of `ino`, in
    /// order, all or nothing; `mtime`, if given, becomes the file's mtime.
    PatchProps {
        ino: u64,
        patch: Vec<(bool, DeadProp)>,
        mtime: Option<i64>,
    },
    /// Gives `to` the dead properties of `from` (a COPY), replacing its own.
    CopyProps {
        from: u64,
        to: u64,
    },
}

impl Change {
    /// Whether a client may ask for this change *lazily*: committed at once
    /// and visible to all, but made durable with the next durable commit
    /// (within [`crate::store::LAZY_WINDOW`]) rather than before it is
    /// answered, as local file systems treat names and attributes until an
    /// fsync. Changes about content, object ids, the ring and WebDAV locks
    /// are always durable before they are answered.
    pub fn may_be_lazy(&self) -> bool {
        matches!(
            self,
            Change::Create { .. }
                | Change::Unlink { .. }
                | Change::Rmdir { .. }
                | Change::Rename { .. }
                | Change::Link { .. }
                | Change::SetAttr { .. }
                | Change::SetXattr { .. }
                | Change::RemoveXattr { .. }
                | Change::SetLock { .. }
                | Change::ReleaseLocks { .. }
                | Change::RenewSession { .. }
                | Change::Forget { .. }
        )
    }
}

/// What a change produced.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub enum Outcome {
    Inode(Inode),
    Lease {
        first: u64,
        count: u64,
        generation: u64,
        width: u32,
    },
    Generation(u64),
    /// A write lease: the generation to write with, and the end of bytes that
    /// uncommitted writes may have left past the file's size (0: none). A
    /// write or resize that grows the file past its size zeroes them first.
    Write {
        generation: u64,
        dirty_end: u64,
    },
    Slot(u32),
    Count(u64),
    Lock(LockInfo),
    Done,
    /// A node and its directory as a change to a name left them (a node
    /// unlinked for good has nlink 0).
    Entry {
        inode: Inode,
        dir: Inode,
    },
}
