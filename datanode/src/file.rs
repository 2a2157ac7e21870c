//! The datanode's redb file: redb's own file backend, with the kernel's
//! read-ahead replaced by a short one of our own, and redb's page writes
//! sent to the disk directly (`O_DIRECT`), sorted and coalesced.
//!
//! **Reads.** A node's extent rows of its two replica roles lie side by
//! side in the file, and a read asks for one role. With the disk's
//! read-ahead (8 MiB on this machine's virtio disk) a sequential read of a
//! Tessera file made the datanodes read twice its bytes from disk, the
//! other role's rows thrown away. So the file is opened `POSIX_FADV_RANDOM`
//! (each redb page, an extent row being one 64 KiB page, is read with one
//! I/O of its size), and a read of a row page asks the kernel for the next
//! [`PREFETCH`] bytes in the background: rows written together mostly lie
//! together, and a random reader finds the rows around it warm. A get of
//! many rows (a chunk of a sequential read: [`reading_in_bulk`]) reads its
//! row pages once: they are read directly (`O_DIRECT`, into an aligned
//! buffer), not into page cache pages allocated for them and thrown away,
//! and without the prefetch (a sequential reader keeps several chunks in
//! flight).
//!
//! **Writes.** Through the page cache, copying redb's pages into freshly
//! allocated cache pages was two thirds of the commit thread's time
//! (`copy_folio_from_iter_atomic`, ext4's delayed allocation), all of it to
//! be written out and dropped again at the `fdatasync` that follows every
//! commit. So page-aligned writes are staged ([`Staged`]: a copy in an
//! aligned buffer) and, at the next `sync_data`, written in file order,
//! adjacent pages in one `pwritev` on a second descriptor opened
//! `O_DIRECT`, before the `fdatasync` that makes them durable. The file sees
//! redb's writes in the order redb made them: anything that is not a staged
//! write (an unaligned write such as redb's 320-byte header, `set_len`,
//! `len`, `close`) writes the staged pages out first, and a read overlays
//! the staged pages it overlaps, so redb reads what it wrote. Where the file
//! system refuses `O_DIRECT` (tmpfs), writes go through the page cache as
//! redb's own backend does.

use std::collections::BTreeMap;
use std::fs::File;
use std::io::{self, IoSlice};
use std::ops::Bound;
use std::os::fd::{AsRawFd, RawFd};
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Mutex, RwLock};

use redb::backends::FileBackend;
use redb::{BackendError, StorageBackend};

/// Bytes after a row page read ahead (two rows).
const PREFETCH: i64 = 128 << 10;
/// Reads at least this long are of row pages (branch pages are 4 KiB).
const ROW_PAGE: usize = 32 << 10;
/// Alignment of direct writes: offset, length and buffer (redb's pages are
/// 4 KiB or multiples; any disk's logical block divides it).
const ALIGN: usize = 4096;
/// Staged bytes beyond which pages are written out before the next sync
/// (a transaction larger than this still commits; it only stages less).
const STAGE_LIMIT: usize = 64 << 20;
/// Most buffers in one `pwritev` (Linux's `IOV_MAX`).
const IOV_MAX: usize = 1024;
/// Row reads longer than this go through the page cache (the aligned
/// buffers kept per thread for direct reads stay small).
const DIRECT_READ_MAX: usize = 1 << 20;

thread_local! {
    /// Set while this thread reads rows in bulk (see [`reading_in_bulk`]).
    static BULK: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
}

/// Runs `f`, which reads many consecutive rows, each once (a chunk of a
/// sequential read, a rebuild, a scrub): row pages it reads are read
/// directly, without page cache pages allocated for them or a prefetch.
pub(crate) fn reading_in_bulk<T>(f: impl FnOnce() -> T) -> T {
    struct Restore(bool);
    impl Drop for Restore {
        fn drop(&mut self) {
            BULK.set(self.0);
        }
    }
    let _restore = Restore(BULK.replace(true));
    f()
}

#[derive(Debug)]
pub(crate) struct BlockFile {
    inner: FileBackend,
    /// `inner`'s descriptor, for advice; it lives as long as `inner`.
    fd: RawFd,
    /// The same file opened `O_DIRECT`, if its file system takes that.
    direct: Option<File>,
    /// Row pages read directly (tests).
    #[cfg(test)]
    direct_reads: std::sync::atomic::AtomicU64,
    /// Cleared if a direct write is refused as invalid: from then on
    /// everything goes through `inner`.
    direct_ok: AtomicBool,
    /// Writes not in the file yet. Readers take it shared; staging and
    /// clearing take it exclusive, and only while holding `writing`.
    staged: RwLock<Staged>,
    /// Held by whatever changes the file or `staged`, so that pages being
    /// written out (under `staged` shared, readers still served) are not
    /// staged over or cleared by anyone else meanwhile.
    writing: Mutex<()>,
}

/// Page writes not in the file yet, by file offset; no two overlap.
#[derive(Debug, Default)]
struct Staged {
    pages: BTreeMap<u64, Page>,
    bytes: usize,
}

impl Staged {
    /// The staged pages overlapping `[offset, end)`, by offset.
    fn overlapping(&self, offset: u64, end: u64) -> impl Iterator<Item = (u64, &Page)> {
        let mut hits: Vec<(u64, &Page)> = self
            .pages
            .range(..end)
            .rev()
            .take_while(move |(k, p)| **k + p.len() as u64 > offset)
            .map(|(k, p)| (*k, p))
            .collect();
        hits.reverse();
        hits.into_iter()
    }
}

/// A copy of one page write in a buffer aligned for `O_DIRECT`.
#[derive(Debug)]
struct Page {
    buf: Vec<u8>,
    at: usize,
}

impl Page {
    fn new(data: &[u8]) -> Option<Page> {
        let mut buf: Vec<u8> = Vec::with_capacity(data.len() + ALIGN);
        let at = buf.as_ptr().align_offset(ALIGN);
        if at >= ALIGN {
            return None;
        }
        // Within the capacity: the buffer does not move.
        buf.resize(at, 0);
        buf.extend_from_slice(data);
        Some(Page { buf, at })
    }

    fn data(&self) -> &[u8] {
        &self.buf[self.at..]
    }

    fn len(&self) -> usize {
        self.buf.len() - self.at
    }
}

impl BlockFile {
    pub(crate) fn open(path: &Path) -> Result<BlockFile, redb::DatabaseError> {
        Self::open_as(path, true)
    }

    /// Opens the file, with direct writes if `direct` and the file system
    /// takes them.
    fn open_as(path: &Path, direct: bool) -> Result<BlockFile, redb::DatabaseError> {
        let file = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(path)?;
        let fd = file.as_raw_fd();
        advise(fd, 0, 0, libc::POSIX_FADV_RANDOM);
        let direct = match std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .custom_flags(libc::O_DIRECT)
            .open(path)
        {
            Ok(f) if direct => Some(f),
            Ok(_) => None,
            Err(e) => {
                tracing::debug!(path = %path.display(), error = %e, "no direct writes; writing through the page cache");
                None
            }
        };
        Ok(BlockFile {
            inner: FileBackend::new(file)?,
            fd,
            direct_ok: AtomicBool::new(direct.is_some()),
            direct,
            staged: RwLock::default(),
            writing: Mutex::default(),
            #[cfg(test)]
            direct_reads: Default::default(),
        })
    }

    /// Whether page writes go to the disk directly.
    #[cfg(test)]
    pub(crate) fn is_direct(&self) -> bool {
        self.direct_ok.load(Ordering::Relaxed)
    }

    /// Writes every staged page to the file (not durably: `sync_data` does
    /// that) and forgets them. The caller holds `writing`.
    fn write_out(&self) -> io::Result<()> {
        let staged = self.staged.read().unwrap_or_else(|e| e.into_inner());
        if staged.pages.is_empty() {
            return Ok(());
        }
        let mut run: Vec<IoSlice<'_>> = Vec::new();
        let mut run_at = 0u64;
        let mut run_end = 0u64;
        for (&offset, page) in &staged.pages {
            if !run.is_empty() && (offset != run_end || run.len() == IOV_MAX) {
                self.write_run(run_at, &mut run)?;
            }
            if run.is_empty() {
                run_at = offset;
            }
            run.push(IoSlice::new(page.data()));
            run_end = offset + page.len() as u64;
        }
        self.write_run(run_at, &mut run)?;
        drop(staged);
        let mut staged = self.staged.write().unwrap_or_else(|e| e.into_inner());
        *staged = Staged::default();
        Ok(())
    }

    /// Writes adjacent pages starting at `offset`, and empties `run`.
    fn write_run(&self, mut offset: u64, run: &mut Vec<IoSlice<'_>>) -> io::Result<()> {
        let mut rest = &mut run[..];
        while !rest.is_empty() {
            let Some(direct) = self
                .direct
                .as_ref()
                .filter(|_| self.direct_ok.load(Ordering::Relaxed))
            else {
                for s in rest.iter() {
                    self.inner.write(offset, s)?;
                    offset += s.len() as u64;
                }
                break;
            };
            let n = rest.len().min(IOV_MAX) as libc::c_int;
            // SAFETY: `IoSlice` is ABI-compatible with `iovec` on Unix; the
            // slices and the descriptor outlive the call.
            let r = unsafe {
                libc::pwritev(
                    direct.as_raw_fd(),
                    rest.as_ptr().cast(),
                    n,
                    offset as libc::off_t,
                )
            };
            if r < 0 {
                let e = io::Error::last_os_error();
                match e.raw_os_error() {
                    Some(libc::EINTR) => continue,
                    Some(libc::EINVAL) => {
                        tracing::warn!(error = %e, "direct writes refused; writing through the page cache");
                        self.direct_ok.store(false, Ordering::Relaxed);
                        continue;
                    }
                    _ => return Err(e),
                }
            }
            if r == 0 {
                return Err(io::ErrorKind::WriteZero.into());
            }
            offset += r as u64;
            IoSlice::advance_slices(&mut rest, r as usize);
        }
        run.clear();
        Ok(())
    }

    /// Reads `[offset, offset + out.len())` from the file, directly (offset
    /// and length aligned) or through the page cache.
    fn read_file(&self, offset: u64, out: &mut [u8], direct: bool) -> io::Result<()> {
        use std::os::unix::fs::FileExt;
        thread_local! {
            static ALIGNED: std::cell::RefCell<Vec<u8>> = const { std::cell::RefCell::new(Vec::new()) };
        }
        let Some(file) = self.direct.as_ref().filter(|_| direct) else {
            return self.inner.read(offset, out);
        };
        let read: io::Result<()> = ALIGNED.with(|b| {
            let mut b = b.borrow_mut();
            if b.len() < out.len() + ALIGN {
                b.resize(out.len() + ALIGN, 0);
            }
            let at = b.as_ptr().align_offset(ALIGN);
            if at >= ALIGN {
                return Err(io::ErrorKind::Unsupported.into());
            }
            let buf = &mut b[at..at + out.len()];
            file.read_exact_at(buf, offset)?;
            #[cfg(test)]
            self.direct_reads.fetch_add(1, Ordering::Relaxed);
            out.copy_from_slice(buf);
            Ok(())
        });
        match read {
            Err(e)
                if matches!(e.raw_os_error(), Some(libc::EINVAL))
                    || e.kind() == io::ErrorKind::Unsupported =>
            {
                self.inner.read(offset, out)
            }
            r => r,
        }
    }

    /// Writes the staged pages out, for an operation that must find the
    /// file as redb left it.
    fn settle(&self) -> io::Result<std::sync::MutexGuard<'_, ()>> {
        let guard = self.writing.lock().unwrap_or_else(|e| e.into_inner());
        self.write_out()?;
        Ok(guard)
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
        let _settled = self.settle()?;
        self.inner.len()
    }

    fn read(&self, offset: u64, out: &mut [u8]) -> Result<(), io::Error> {
        let end = offset.saturating_add(out.len() as u64);
        let mut direct = false;
        if out.len() >= ROW_PAGE {
            direct = self.direct.is_some()
                && self.direct_ok.load(Ordering::Relaxed)
                && out.len() <= DIRECT_READ_MAX
                && offset.is_multiple_of(ALIGN as u64)
                && out.len().is_multiple_of(ALIGN)
                && BULK.get();
            if !direct && let Ok(end) = i64::try_from(end) {
                advise(self.fd, end, PREFETCH, libc::POSIX_FADV_WILLNEED);
            }
        }
        let staged = self.staged.read().unwrap_or_else(|e| e.into_inner());
        if staged.overlapping(offset, end).next().is_none() {
            // The file holds the latest bytes of the range; a page staged
            // from now on is a later write, which redb does not race with
            // a read of the same page.
            drop(staged);
            return self.read_file(offset, out, direct);
        }
        // Read the file and lay the staged pages over it, holding them so
        // that they are not cleared in between.
        self.read_file(offset, out, direct)?;
        for (at, page) in staged.overlapping(offset, end) {
            let from = at.max(offset);
            let to = (at + page.len() as u64).min(end);
            out[(from - offset) as usize..(to - offset) as usize]
                .copy_from_slice(&page.data()[(from - at) as usize..(to - at) as usize]);
        }
        Ok(())
    }

    fn set_len(&self, len: u64) -> Result<(), io::Error> {
        let _settled = self.settle()?;
        self.inner.set_len(len)
    }

    fn sync_data(&self) -> Result<(), io::Error> {
        let _settled = self.settle()?;
        self.inner.sync_data()
    }

    fn write(&self, offset: u64, data: &[u8]) -> Result<(), io::Error> {
        let aligned = offset.is_multiple_of(ALIGN as u64)
            && data.len().is_multiple_of(ALIGN)
            && !data.is_empty();
        let page = (aligned && self.direct_ok.load(Ordering::Relaxed))
            .then(|| Page::new(data))
            .flatten();
        let Some(page) = page else {
            let _settled = self.settle()?;
            return self.inner.write(offset, data);
        };
        let _writing = self.writing.lock().unwrap_or_else(|e| e.into_inner());
        let end = offset + data.len() as u64;
        let replaces = {
            let staged = self.staged.read().unwrap_or_else(|e| e.into_inner());
            let mut hits = staged.overlapping(offset, end);
            match (hits.next(), hits.next()) {
                (None, _) => true,
                (Some((at, p)), None) => at == offset && p.len() == data.len(),
                _ => false,
            }
        };
        if !replaces {
            // Overlapping pages of other extents: write the older ones
            // out first rather than merging them.
            self.write_out()?;
        }
        let full = {
            let mut staged = self.staged.write().unwrap_or_else(|e| e.into_inner());
            staged.bytes += page.len();
            if let Some(old) = staged.pages.insert(offset, page) {
                staged.bytes -= old.len();
            }
            staged.bytes > STAGE_LIMIT
        };
        if full {
            self.write_out()?;
        }
        Ok(())
    }

    fn close(&self) -> Result<(), io::Error> {
        let settled = self.settle();
        let closed = self.inner.close();
        settled.and(closed)
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

    /// A small deterministic generator (xorshift64*).
    struct Rng(u64);

    impl Rng {
        fn next(&mut self) -> u64 {
            self.0 ^= self.0 >> 12;
            self.0 ^= self.0 << 25;
            self.0 ^= self.0 >> 27;
            self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
        }
        fn below(&mut self, n: u64) -> u64 {
            self.next() % n
        }
    }

    /// Seeded random page writes (aligned, staged; pages of 1-4 units, so
    /// staged pages overlap others of other extents), unaligned writes,
    /// reads across staged and written pages (row-sized ones in bulk, read
    /// directly), `set_len`, `len`, `sync_data` and reopening, checked
    /// against an in-memory model of the file, with direct writes and
    /// without. The seed is printed on a failure.
    #[test]
    fn staged_writes_read_and_persist_as_written() {
        let dir = tempfile::tempdir().unwrap();
        for direct in [true, false] {
            for seed in 1..=12u64 {
                let path = dir.path().join(format!("m-{direct}-{seed}.redb"));
                let mut rng = Rng(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1);
                let mut model = vec![0u8; 16 * ALIGN];
                let mut file = BlockFile::open_as(&path, direct).unwrap();
                let mut bulk_reads = 0u64;
                let mut direct_reads = 0u64;
                assert_eq!(
                    file.is_direct(),
                    direct,
                    "direct writes need a file system that takes O_DIRECT (ext4, xfs, btrfs); \
                     the temp dir {} does not (tmpfs?): set TMPDIR to a directory on disk",
                    dir.path().display()
                );
                file.set_len(model.len() as u64).unwrap();
                for step in 0..400 {
                    let ctx = format!("direct {direct}, seed {seed}, step {step}");
                    let units = model.len() / ALIGN;
                    match rng.below(100) {
                        0..=44 => {
                            let n = 1 + rng.below(4) as usize;
                            let at = rng.below((units - n + 1) as u64) as usize * ALIGN;
                            let fill = rng.next() as u8;
                            let data: Vec<u8> = (0..n * ALIGN)
                                .map(|i| fill.wrapping_add(i as u8 ^ (i >> 9) as u8))
                                .collect();
                            file.write(at as u64, &data).unwrap();
                            model[at..at + data.len()].copy_from_slice(&data);
                        }
                        45..=54 => {
                            let len = 1 + rng.below(600) as usize;
                            let at = rng.below((model.len() - len) as u64) as usize;
                            let data = vec![rng.next() as u8; len];
                            file.write(at as u64, &data).unwrap();
                            model[at..at + len].copy_from_slice(&data);
                        }
                        55..=64 => {
                            // A row page read in bulk: directly, if the
                            // file takes that.
                            let len = 8 * ALIGN;
                            let at = rng.below((units - 8 + 1) as u64) as usize * ALIGN;
                            let mut out = vec![0xEE; len];
                            reading_in_bulk(|| file.read(at as u64, &mut out)).unwrap();
                            assert!(out == model[at..at + len], "{ctx}: bulk read {at}+{len}");
                            bulk_reads += 1;
                        }
                        65..=84 => {
                            let len = 1 + rng.below(5 * ALIGN as u64) as usize;
                            let at = rng.below((model.len() - len) as u64) as usize;
                            let mut out = vec![0xEE; len];
                            file.read(at as u64, &mut out).unwrap();
                            assert!(out == model[at..at + len], "{ctx}: read {at}+{len}");
                        }
                        85..=89 => {
                            let len = (8 + rng.below(17) as usize) * ALIGN;
                            file.set_len(len as u64).unwrap();
                            model.resize(len, 0);
                        }
                        90..=93 => {
                            assert_eq!(file.len().unwrap(), model.len() as u64, "{ctx}");
                        }
                        94..=97 => file.sync_data().unwrap(),
                        _ => {
                            file.sync_data().unwrap();
                            file.close().unwrap();
                            direct_reads += file.direct_reads.load(Ordering::Relaxed);
                            drop(file);
                            file = BlockFile::open_as(&path, direct).unwrap();
                        }
                    }
                }
                // Everything staged reaches the file.
                file.sync_data().unwrap();
                assert!(file.staged.read().unwrap().pages.is_empty());
                direct_reads += file.direct_reads.load(Ordering::Relaxed);
                assert!(bulk_reads > 0, "seed {seed}: no bulk reads drawn");
                let expected = if direct { bulk_reads } else { 0 };
                assert_eq!(
                    direct_reads, expected,
                    "direct {direct}, seed {seed}: direct reads"
                );
                drop(file);
                assert!(
                    std::fs::read(&path).unwrap() == model,
                    "direct {direct}, seed {seed}: file differs from the model"
                );
            }
        }
    }

    /// Page writes wait in the stage until a sync (so adjacent ones go out
    /// in one write); a sync writes them to the file.
    #[test]
    fn page_writes_are_staged_until_a_sync() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("s.redb");
        let file = BlockFile::open(&path).unwrap();
        assert!(
            file.is_direct(),
            "the temp dir must take O_DIRECT (see above)"
        );
        file.set_len(8 * ALIGN as u64).unwrap();
        file.write(ALIGN as u64, &[5; 2 * ALIGN]).unwrap();
        file.write(3 * ALIGN as u64, &[6; ALIGN]).unwrap();
        assert!(std::fs::read(&path).unwrap().iter().all(|&b| b == 0));
        file.sync_data().unwrap();
        let on_disk = std::fs::read(&path).unwrap();
        assert!(on_disk[ALIGN..3 * ALIGN].iter().all(|&b| b == 5));
        assert!(on_disk[3 * ALIGN..4 * ALIGN].iter().all(|&b| b == 6));
        assert!(on_disk[4 * ALIGN..].iter().all(|&b| b == 0));
        // Only row-sized reads in bulk are read directly.
        let mut out = vec![0; 8 * ALIGN];
        file.read(0, &mut out).unwrap();
        assert_eq!(file.direct_reads.load(Ordering::Relaxed), 0);
        reading_in_bulk(|| file.read(0, &mut out)).unwrap();
        assert_eq!(file.direct_reads.load(Ordering::Relaxed), 1);
        assert!(out == on_disk[..8 * ALIGN]);
        assert!(!BULK.get(), "the bulk flag is restored");
    }
}
