//! What the kernel sees of meta's inodes, and the one mapping from gateway
//! errors to errno.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use fuser::{Errno, FileAttr, FileType, INodeNo};
use tessera_gateway::Error;
use tessera_meta::{FileKind, Inode};

/// `st_blksize`: what `cp` and stdio size their buffers by. Large, since
/// every call to the cluster costs a round trip.
pub const BLKSIZE: u32 = 128 * 1024;

pub fn system_time(ns: i64) -> SystemTime {
    if ns >= 0 {
        UNIX_EPOCH + Duration::from_nanos(ns as u64)
    } else {
        UNIX_EPOCH - Duration::from_nanos(ns.unsigned_abs())
    }
}

pub fn ns_of(t: SystemTime) -> i64 {
    match t.duration_since(UNIX_EPOCH) {
        Ok(d) => i64::try_from(d.as_nanos()).unwrap_or(i64::MAX),
        Err(e) => -i64::try_from(e.duration().as_nanos()).unwrap_or(i64::MAX),
    }
}

pub fn file_type(kind: FileKind) -> FileType {
    match kind {
        FileKind::File => FileType::RegularFile,
        FileKind::Dir => FileType::Directory,
        FileKind::Symlink => FileType::Symlink,
        FileKind::Fifo => FileType::NamedPipe,
        FileKind::Socket => FileType::Socket,
        FileKind::CharDevice(_) => FileType::CharDevice,
        FileKind::BlockDevice(_) => FileType::BlockDevice,
    }
}

/// The attributes of `inode`, with `size` as this mount knows it (writes
/// it holds may have grown the file past what meta has).
pub fn file_attr(inode: &Inode, size: u64) -> FileAttr {
    let rdev = match inode.kind {
        FileKind::CharDevice(r) | FileKind::BlockDevice(r) => r,
        _ => 0,
    };
    FileAttr {
        ino: INodeNo(inode.ino),
        size,
        blocks: size.div_ceil(512),
        atime: system_time(inode.atime),
        mtime: system_time(inode.mtime),
        ctime: system_time(inode.ctime),
        crtime: system_time(inode.ctime),
        kind: file_type(inode.kind),
        perm: (inode.mode & 0o7777) as u16,
        nlink: inode.nlink,
        uid: inode.uid,
        gid: inode.gid,
        rdev,
        blksize: BLKSIZE,
        flags: 0,
    }
}

/// The errno a Linux program gets for a gateway error.
pub fn errno(e: &Error) -> Errno {
    match e {
        Error::NotFound(_) => Errno::ENOENT,
        Error::Exists(_) => Errno::EEXIST,
        Error::NotEmpty(_) => Errno::ENOTEMPTY,
        Error::NotADirectory(_) => Errno::ENOTDIR,
        Error::IsADirectory(_) => Errno::EISDIR,
        Error::InvalidPath(_) | Error::Invalid(_) => Errno::EINVAL,
        Error::NotPermitted(_) => Errno::EPERM,
        Error::NoAttr(_) => Errno::from_i32(libc::ENODATA),
        Error::WouldBlock(_) | Error::Locked(_) => Errno::EAGAIN,
        Error::NoSpace(_) => Errno::ENOSPC,
        Error::Conflict(_) => Errno::EAGAIN,
        Error::Unavailable { .. }
        | Error::Corrupt { .. }
        | Error::MetaUnavailable(_)
        | Error::TooFewDatanodes(_)
        | Error::Incomplete(_)
        | Error::Internal(_) => Errno::EIO,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times_round_trip_to_the_nanosecond() {
        for ns in [0i64, 1, 1_700_000_000_123_456_789, -1_500_000_000] {
            assert_eq!(ns_of(system_time(ns)), ns);
        }
    }
}
