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
}

/// An object waiting to be deleted from the datanodes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct GcEntry {
    pub object: ObjectRef,
    /// When it was queued, ns since the epoch.
    pub queued: i64,
}

/// Attributes a caller may change; `None` leaves one as it is.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SetAttr {
    pub mode: Option<u32>,
    pub uid: Option<u32>,
    pub gid: Option<u32>,
    pub atime: Option<i64>,
    pub mtime: Option<i64>,
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
    #[error("cluster settings: {0}")]
    Settings(String),
    #[error("meta storage failed: {0}")]
    Storage(String),
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
