//! Values that cross the wire between meta and its clients.

use serde::{Deserialize, Serialize};

pub use crate::settings::Settings;

/// The inode number of the root directory.
pub const ROOT_INO: u64 = 1;

/// Longest name of one path component, in bytes.
pub const MAX_NAME: usize = 255;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum FileKind {
    File,
    Dir,
    Symlink,
    /// Named pipes, sockets and device nodes are metadata only: the kernel
    /// of the machine that opens one does the rest.
    Fifo,
    Socket,
    /// With its device number (`rdev`).
    CharDevice(u32),
    BlockDevice(u32),
}

/// Where an object's blocks live: replica `k` of block `i` is on ring slot
/// `(seed + i + k) mod width`. `width` is the ring size when the object was
/// made, so adding datanodes never moves existing data.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct ObjectRef {
    pub id: u64,
    pub seed: u64,
    pub width: u32,
}

impl ObjectRef {
    /// "No object": directories, symlinks and never-written files.
    pub const NONE: ObjectRef = ObjectRef {
        id: 0,
        seed: 0,
        width: 0,
    };

    pub fn is_none(&self) -> bool {
        self.id == 0
    }

    /// The ring slot of replica `k` of block `index`.
    pub fn slot(&self, index: u64, k: u32) -> u32 {
        let n = self.width.max(1) as u64;
        ((self.seed % n + index % n + k as u64) % n) as u32
    }

    /// The replica number `slot` holds block `index` as, with `r` copies
    /// (capped at the width), if it holds one.
    pub fn role_on(&self, slot: u32, index: u64, r: u32) -> Option<u32> {
        let n = self.width.max(1) as u64;
        if slot as u64 >= n {
            return None;
        }
        let first = (self.seed % n + index % n) % n;
        let k = (slot as u64 + n - first) % n;
        (k < r.min(self.width.max(1)) as u64).then_some(k as u32)
    }

    /// How many of blocks `range` have a replica on `slot`, with `r` copies.
    pub fn blocks_on(&self, slot: u32, range: std::ops::Range<u64>, r: u32) -> u64 {
        let n = self.width.max(1) as u64;
        if slot as u64 >= n || range.is_empty() {
            return 0;
        }
        // Every n consecutive blocks put exactly min(r, n) replicas on each slot.
        let cycles = (range.end - range.start) / n;
        let tail = range.start + cycles * n..range.end;
        cycles * r.min(n as u32) as u64
            + tail.filter(|&i| self.role_on(slot, i, r).is_some()).count() as u64
    }
}

/// Blocks `first..end` of an object whose replica on `slot` missed a write
/// that was acknowledged without it (W < R): meta's repair queue keeps
/// these until that slot's datanode has copied them from the others.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct RepairRange {
    pub slot: u32,
    pub object: ObjectRef,
    pub first: u64,
    pub end: u64,
}

/// A queued repair as meta hands it out; `seq` changes whenever the range
/// does, so a repair finished against an older range leaves the newer one.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct RepairEntry {
    pub range: RepairRange,
    pub seq: u64,
}

/// An object some file holds, with how many blocks it may have (the file's
/// size, or further if uncommitted writes went past it).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct LiveObject {
    pub ino: u64,
    pub object: ObjectRef,
    pub blocks: u64,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Inode {
    pub ino: u64,
    pub kind: FileKind,
    /// Permission bits (no file-type bits).
    pub mode: u32,
    pub uid: u32,
    pub gid: u32,
    pub size: u64,
    /// Nanoseconds since the Unix epoch.
    pub atime: i64,
    pub mtime: i64,
    pub ctime: i64,
    pub nlink: u32,
    /// Bumped by every committed change; unique across the cluster, so it
    /// doubles as a strong ETag.
    pub version: u64,
    pub object: ObjectRef,
    /// The directory holding this inode (the root is its own parent).
    pub parent: u64,
    /// A symlink's target.
    pub target: Option<String>,
}

impl Inode {
    pub fn is_dir(&self) -> bool {
        self.kind == FileKind::Dir
    }
}

/// One slot of the datanode ring.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RingSlot {
    pub slot: u32,
    pub node_id: String,
    pub addr: String,
}

/// The ring and the settings, as a gateway needs them.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Ring {
    pub settings: Settings,
    pub slots: Vec<RingSlot>,
    /// Slots whose datanode meta considers down (no heartbeat within the
    /// node timeout, see [`crate::health`]); gateways send them nothing.
    #[serde(default)]
    pub down: Vec<u32>,
    /// Slots whose datanode is rebuilding (it lost its storage): its
    /// "missing" answers do not count toward a read quorum.
    #[serde(default)]
    pub rebuilding: Vec<u32>,
}

impl Ring {
    /// Slots the ring spans: one past the highest slot held.
    pub fn width(&self) -> u32 {
        self.slots.iter().map(|s| s.slot + 1).max().unwrap_or(0)
    }
}

/// An object waiting to be deleted from the datanodes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct GcEntry {
    pub object: ObjectRef,
    /// When it was queued, ns since the epoch.
    pub queued: i64,
}

/// An object waiting to be deleted, with the slots whose datanode did.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct GcDue {
    pub entry: GcEntry,
    pub done: Vec<u32>,
}

/// Attributes a caller may change; `None` leaves one as it is.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SetAttr {
    pub mode: Option<u32>,
    pub uid: Option<u32>,
    pub gid: Option<u32>,
    pub atime: Option<i64>,
    pub mtime: Option<i64>,
    /// An access-time update by a read (relatime), not a change: the
    /// ctime and version stay.
    pub access_only: bool,
}

/// A WebDAV write lock (RFC 4918 §6-7). Meta keeps locks by path, so that
/// every gateway sees them, and expires them by its own clock.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LockInfo {
    /// `opaquelocktoken:` and a UUID.
    pub token: String,
    /// The locked path's components joined by '/' ("" is the root).
    pub path: String,
    /// The locked URL path as the client named it (percent-encoded; the
    /// lock root reported back).
    pub href: String,
    /// Who took it (the authenticated user), if known.
    pub principal: Option<String>,
    /// The client's `DAV:owner` element, as XML.
    pub owner: Option<String>,
    pub shared: bool,
    /// Depth infinity: the lock covers everything below the path too.
    pub deep: bool,
    /// The timeout granted, seconds.
    pub timeout_s: u64,
    /// Seconds left, when meta answered.
    pub remaining_s: u64,
}

/// A lock asked for (see `Change::Lock`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LockRequest {
    pub token: String,
    pub path: String,
    pub href: String,
    pub principal: Option<String>,
    pub owner: Option<String>,
    pub shared: bool,
    pub deep: bool,
    pub timeout_s: u64,
}

/// A dead property (RFC 4918 §4): any namespace, any XML value, kept by
/// inode so it follows renames.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeadProp {
    pub namespace: Option<String>,
    pub name: String,
    /// The prefix the client used (cosmetic).
    pub prefix: Option<String>,
    /// The whole property element as the client sent it, as XML.
    pub xml: Option<Vec<u8>>,
}

/// What a WebDAV request wants to know about its path besides its locks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum ViewWant {
    /// The inode (GET, HEAD, DELETE, PROPFIND Depth 0, ...).
    Inode,
    /// The inode and the directory holding it (PUT).
    Parent,
    /// The inode and, for a directory, its entries (PROPFIND Depth 1).
    Listing,
}

/// One look at a path, everything a WebDAV request needs from meta first.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DavView {
    /// What is at the path (`None`: nothing, but its parent exists).
    pub inode: Option<Inode>,
    /// The directory holding the path (with [`ViewWant::Parent`]).
    pub parent: Option<Inode>,
    /// The entries of the directory at the path (with [`ViewWant::Listing`]).
    pub entries: Option<Vec<(String, Inode)>>,
    /// Dead properties of the inode and of the entries, for those having any.
    pub props: Vec<(u64, Vec<DeadProp>)>,
    /// Live locks covering the path (its own, and deep ones of its
    /// ancestors) and those on paths below it.
    pub locks: Vec<LockInfo>,
}

/// Errors meta reports. Each names what it is about.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
pub enum MetaError {
    #[error("{0}: no such file or directory")]
    NotFound(String),
    #[error("{0}: already exists")]
    Exists(String),
    #[error("{0}: directory not empty")]
    NotEmpty(String),
    #[error("{0}: not a directory")]
    NotADirectory(String),
    #[error("{0}: is a directory")]
    IsADirectory(String),
    #[error("bad name {name:?}: {reason}")]
    InvalidName { name: String, reason: String },
    #[error("invalid request: {0}")]
    Invalid(String),
    #[error("{0} changed underneath this operation; retry")]
    Conflict(String),
    #[error("{0}")]
    Busy(String),
    /// A WebDAV lock held by someone else stands in the way.
    #[error("/{}: locked (token {})", .0.path, .0.token)]
    Locked(Box<LockInfo>),
    #[error("cluster settings: {0}")]
    Settings(String),
    #[error("meta storage failed: {0}")]
    Storage(String),
    #[error("{0}: operation not permitted")]
    NotPermitted(String),
    #[error("{0}: no such attribute")]
    NoAttr(String),
    #[error("{0}: no space left")]
    NoSpace(String),
    /// A file lock of another owner stands in the way.
    #[error("inode locked by another owner (bytes {}..={})", .0.start, .0.end)]
    WouldBlock(Box<FileLock>),
}

/// How a rename treats the name it moves to (renameat2).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RenameFlags {
    /// Fail with `Exists` rather than replace (RENAME_NOREPLACE).
    pub no_replace: bool,
    /// Swap the two names (RENAME_EXCHANGE); both must exist.
    pub exchange: bool,
    /// A mount session that holds the replaced file open: if it loses its
    /// last name, meta keeps it (an orphan) until that session forgets it.
    pub hold: Option<u64>,
}

/// What `SetXattr` may do about an existing attribute.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum XattrMode {
    /// Create or replace.
    Any,
    /// Fail with `Exists` if it exists (XATTR_CREATE).
    Create,
    /// Fail with `NoAttr` if it does not (XATTR_REPLACE).
    Replace,
}

/// Longest extended attribute name, in bytes.
pub const MAX_XATTR_NAME: usize = 255;
/// Largest extended attribute value, in bytes (Linux's XATTR_SIZE_MAX).
pub const MAX_XATTR_VALUE: usize = 65536;
/// Most bytes of names and values of one inode's extended attributes.
pub const MAX_XATTR_BYTES: usize = 256 * 1024;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum LockKind {
    Read,
    Write,
    Unlock,
}

/// A POSIX record lock (fcntl) or a flock, held by an owner: a process's
/// lock owner (`owner`) in one mount (`session`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FileLock {
    pub session: u64,
    pub owner: u64,
    pub pid: u32,
    pub start: u64,
    /// Inclusive; `u64::MAX`: to the end of the file, however far.
    pub end: u64,
    pub kind: LockKind,
}

impl FileLock {
    pub fn overlaps(&self, other: &FileLock) -> bool {
        self.start <= other.end && other.start <= self.end
    }

    pub fn same_owner(&self, other: &FileLock) -> bool {
        self.session == other.session && self.owner == other.owner
    }

    /// Whether `other` (of another owner) keeps this one from being taken.
    pub fn conflicts(&self, other: &FileLock) -> bool {
        !self.same_owner(other)
            && self.overlaps(other)
            && (self.kind == LockKind::Write || other.kind == LockKind::Write)
    }
}

/// Something that changed in meta, for the caches of gateways and mounts.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Event {
    /// An inode's attributes or content changed, or it went away.
    Inode(u64),
    /// A name in a directory came, went or now names another inode.
    Entry { parent: u64, name: String },
}

/// A page of meta's change feed (see `MetaRequest::Watch`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Events {
    /// The sequence number to ask for next.
    pub next: u64,
    /// Events were dropped before the caller caught up: drop every cache.
    pub lost: bool,
    /// Each with the origin of the change that made it (0: unnamed).
    pub events: Vec<(u64, Event)>,
}

/// Checks one path component.
pub fn validate_name(name: &str) -> Result<(), MetaError> {
    let bad = |reason: &str| {
        Err(MetaError::InvalidName {
            name: name.chars().take(64).collect(),
            reason: reason.into(),
        })
    };
    if name.is_empty() {
        return bad("empty");
    }
    if name == "." || name == ".." {
        return bad("reserved");
    }
    if name.len() > MAX_NAME {
        return bad("longer than 255 bytes");
    }
    if name.contains('/') {
        return bad("contains '/'");
    }
    if name.contains('\0') {
        return bad("contains NUL");
    }
    Ok(())
}

/// Nanoseconds since the Unix epoch, now.
pub fn now_ns() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos() as i64)
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names() {
        assert!(validate_name("a.txt").is_ok());
        assert!(validate_name(&"x".repeat(255)).is_ok());
        assert!(validate_name(&"é".repeat(128)).is_err());
        for bad in ["", ".", "..", "a/b", "a\0b"] {
            assert!(validate_name(bad).is_err(), "{bad:?}");
        }
        assert!(validate_name(&"x".repeat(256)).is_err());
    }
}
