//! The datanode's redb file: redb's own file backend, with the kernel's
//! read-ahead replaced by a short one of our own.
//!
//! A node's extent rows of its two replica roles lie side by side in the
//! file, and a read asks for one role. With the disk's read-ahead (8 MiB on
//! this machine's virtio disk) a sequential read of a Tessera file made the
//! datanodes read twice its bytes from disk, the other role's rows thrown
//! away. So the file is opened `POSIX_FADV_RANDOM` (each redb page, an
//! extent row being one 64 KiB page, is read with one I/O of its size), and
//! a read of a row page asks the kernel for the next [`PREFETCH`] bytes in
//! the background: rows written together mostly lie together, and a random
//! reader finds the rows around it warm.

use std::io;
use std::ops::Bound;
use std::os::fd::{AsRawFd, RawFd};
use std::path::Path;

use redb::backends::FileBackend;
use redb::{BackendError, StorageBackend};

/// Bytes after a row page read ahead (two rows).
const PREFETCH: i64 = 128 << 10;
/// Reads at least this long are of row pages (branch pages are 4 KiB).
const ROW_PAGE: usize = 32 << 10;

#[derive(Debug)]
pub(crate) struct BlockFile {
    inner: FileBackend,
    /// `inner`'s descriptor, for advice; it lives as long as `inner`.
    fd: RawFd,
}

impl BlockFile {
    pub(crate) fn open(path: &Path) -> Result<BlockFile, redb::DatabaseError> {
        let file = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(path)?;
        let fd = file.as_raw_fd();
        advise(fd, 0, 0, libc::POSIX_FADV_RANDOM);
        Ok(BlockFile {
            inner: FileBackend::new(file)?,
            fd,
        })
    }
}

fn advise(fd: RawFd, offset: i64, len: i64, advice: libc::c_int) {
    // SAFETY: a plain syscall on a descriptor the caller keeps open.
    let r = unsafe { libc::posix_fadvise(fd, offset, len, advice) };
    if r != 0 {
        tracing::debug!(errno = r, advice, "posix_fadvise refused");
    }
}

impl StorageBackend for BlockFile {
    fn len(&self) -> Result<u64, io::Error> {
        self.inner.len()
    }

    fn read(&self, offset: u64, out: &mut [u8]) -> Result<(), io::Error> {
        if out.len() >= ROW_PAGE {
            let end = offset.saturating_add(out.len() as u64);
            if let Ok(end) = i64::try_from(end) {
                advise(self.fd, end, PREFETCH, libc::POSIX_FADV_WILLNEED);
            }
        }
        self.inner.read(offset, out)
    }

    fn set_len(&self, len: u64) -> Result<(), io::Error> {
        self.inner.set_len(len)
    }

    fn sync_data(&self) -> Result<(), io::Error> {
        self.inner.sync_data()
    }

    fn write(&self, offset: u64, data: &[u8]) -> Result<(), io::Error> {
        self.inner.write(offset, data)
    }

    fn close(&self) -> Result<(), io::Error> {
        self.inner.close()
    }

    fn try_lock_range(&self, start: Bound<u64>, end: Bound<u64>) -> Result<bool, BackendError> {
        self.inner.try_lock_range(start, end)
    }

    fn try_lock_shared_range(
        &self,
        start: Bound<u64>,
        end: Bound<u64>,
    ) -> Result<bool, BackendError> {
        self.inner.try_lock_shared_range(start, end)
    }

    fn lock_range(&self, start: Bound<u64>, end: Bound<u64>) -> Result<(), BackendError> {
        self.inner.lock_range(start, end)
    }

    fn lock_shared_range(&self, start: Bound<u64>, end: Bound<u64>) -> Result<(), BackendError> {
        self.inner.lock_shared_range(start, end)
    }

    fn unlock_range(&self, start: Bound<u64>, end: Bound<u64>) -> Result<(), BackendError> {
        self.inner.unlock_range(start, end)
    }

    fn query_lock_range(&self, start: Bound<u64>, end: Bound<u64>) -> Result<bool, BackendError> {
        self.inner.query_lock_range(start, end)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use redb::ReadableDatabase;

    /// The wrapper keeps redb's file lock (a second open of the file is
    /// refused) and stores what redb writes through it.
    #[test]
    fn redb_through_the_wrapper_locks_and_persists() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("t.redb");
        const T: redb::TableDefinition<u64, &[u8]> = redb::TableDefinition::new("t");
        let row = vec![7u8; 64 << 10];
        {
            let db = redb::Database::builder()
                .create_with_backend(BlockFile::open(&path).unwrap())
                .unwrap();
            let second =
                redb::Database::builder().create_with_backend(BlockFile::open(&path).unwrap());
            assert!(
                matches!(second, Err(redb::DatabaseError::DatabaseAlreadyOpen)),
                "a second open must be refused: {second:?}"
            );
            let tx = db.begin_write().unwrap();
            tx.open_table(T).unwrap().insert(1, row.as_slice()).unwrap();
            tx.commit().unwrap();
        }
        let db = redb::Database::builder()
            .create_with_backend(BlockFile::open(&path).unwrap())
            .unwrap();
        let tx = db.begin_read().unwrap();
        let got = tx.open_table(T).unwrap().get(1).unwrap().unwrap();
        assert_eq!(got.value(), row.as_slice());
    }
}
