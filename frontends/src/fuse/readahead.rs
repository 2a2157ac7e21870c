//! Reads of open files, and the read-ahead that keeps a reader reading in
//! order supplied: whole chunks of one version of a file's content,
//! fetched while the reader consumes the ones before.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use bytes::Bytes;
use fuser::Errno;
use tessera_gateway::{Error, Fs};
use tessera_meta::Inode;

use super::core::{Mount, OpenFile, Result, err};

/// Size of a chunk read ahead, and how many are kept in flight beyond the
/// one being read.
const AHEAD_CHUNK: u64 = 4 << 20;
const AHEAD_CHUNKS: u64 = 8;
/// Most bytes all files of a mount hold read ahead at once; past it, reads
/// in order fetch only what they need.
const AHEAD_BUDGET: u64 = 256 << 20;
static AHEAD_HELD: AtomicU64 = AtomicU64::new(0);

type Fetch = futures::future::Shared<
    std::pin::Pin<Box<dyn Future<Output = std::result::Result<Bytes, Errno>> + Send>>,
>;

/// Read-ahead of one open file: whole chunks of one version of its
/// content, fetched while the reader consumes the ones before.
#[derive(Default)]
pub(super) struct ReadAhead {
    /// Where the last read ended; a read starting there is in order.
    last_end: u64,
    /// The content the chunks are of (object id, inode version).
    of: (u64, u64),
    chunks: std::collections::BTreeMap<u64, (Fetch, tokio::task::AbortHandle)>,
}

impl ReadAhead {
    fn drop_chunk(&mut self, index: u64) {
        if let Some((_, h)) = self.chunks.remove(&index) {
            h.abort();
            AHEAD_HELD.fetch_sub(AHEAD_CHUNK, Ordering::Relaxed);
        }
    }

    fn clear(&mut self) {
        let all: Vec<u64> = self.chunks.keys().copied().collect();
        for i in all {
            self.drop_chunk(i);
        }
    }

    /// Whether a read at `offset` continues the reads before it.
    fn in_order(&self, offset: u64) -> bool {
        offset == self.last_end
            || self
                .chunks
                .keys()
                .next()
                .is_some_and(|first| offset >= first * AHEAD_CHUNK && offset < self.horizon())
    }

    fn horizon(&self) -> u64 {
        self.chunks
            .keys()
            .next_back()
            .map(|l| (l + 1) * AHEAD_CHUNK)
            .unwrap_or(0)
    }

    /// Starts fetching chunk `index` of `inode` unless it is here.
    fn fetch(&mut self, fs: &Fs, inode: &Inode, index: u64) {
        if self.chunks.contains_key(&index) {
            return;
        }
        let (fs, inode) = (fs.clone(), inode.clone());
        let task = tokio::spawn(async move {
            fs.read(&inode, index * AHEAD_CHUNK, AHEAD_CHUNK)
                .await
                .map_err(err)
        });
        let abort = task.abort_handle();
        let fetch: std::pin::Pin<Box<dyn Future<Output = _> + Send>> =
            Box::pin(async move { task.await.unwrap_or(Err(Errno::EIO)) });
        AHEAD_HELD.fetch_add(AHEAD_CHUNK, Ordering::Relaxed);
        self.chunks
            .insert(index, (futures::FutureExt::shared(fetch), abort));
    }
}

impl Drop for ReadAhead {
    fn drop(&mut self) {
        self.clear();
    }
}

impl Mount {
    pub async fn read(
        self: &Arc<Self>,
        fh: u64,
        offset: u64,
        size: u32,
        pid: u32,
    ) -> Result<Bytes> {
        let file = self.handle(fh)?;
        if file.has_writes() {
            self.flush(&file, pid).await?;
        }
        let inode = self.current_inode(&file).await?;
        self.touch_atime(&file);
        if let Some(fetches) = self.read_ahead(&file, &inode, offset, size) {
            let end = (offset + size as u64).min(inode.size);
            let mut out = Vec::new();
            let mut ok = true;
            let whole = fetches.len() == 1;
            for (index, fetch) in fetches {
                match fetch.await {
                    Ok(chunk) => {
                        let base = index * AHEAD_CHUNK;
                        let from = (offset.max(base) - base).min(chunk.len() as u64) as usize;
                        let to = ((end - base).min(chunk.len() as u64) as usize).max(from);
                        if whole {
                            // Within one chunk: a slice of it, no copy.
                            return Ok(chunk.slice(from..to));
                        }
                        out.extend_from_slice(&chunk[from..to]);
                    }
                    Err(_) => {
                        ok = false;
                        break;
                    }
                }
            }
            if ok {
                return Ok(Bytes::from(out));
            }
            // Read again below, which sees a replaced content through.
            file.ahead.lock().expect("read-ahead").clear();
        }
        match self.fs.read(&inode, offset, size as u64).await {
            Ok(b) => Ok(b),
            Err(Error::NotFound(_)) => {
                // The content was replaced under us: read the new one.
                self.stale(file.ino);
                let inode = self.current_inode(&file).await?;
                self.fs.read(&inode, offset, size as u64).await.map_err(err)
            }
            Err(e) => Err(err(e)),
        }
    }

    /// Whether a read of `fh` at `offset` can run on the thread that took
    /// it: nothing buffered to send first, and either a read elsewhere than
    /// where the last one ended (it reads just what it asks, one datanode
    /// call) or a read in order whose chunks have arrived.
    pub fn read_may_run_here(&self, fh: u64, offset: u64, size: u32) -> bool {
        let Ok(file) = self.handle(fh) else {
            return true;
        };
        if file.has_writes() {
            return false;
        }
        let ra = file.ahead.lock().expect("read-ahead");
        if !ra.in_order(offset) {
            return true;
        }
        let end = offset + size as u64;
        let (first, last) = (offset / AHEAD_CHUNK, end.saturating_sub(1) / AHEAD_CHUNK);
        (first..=last).all(|i| {
            ra.chunks
                .get(&i)
                .is_some_and(|(f, _)| f.peek().is_some_and(|r| r.is_ok()))
        })
    }

    /// For a read that continues the ones before it: the chunks holding
    /// `[offset, offset + size)`, with the following ones set fetching.
    /// `None` for a read elsewhere (it reads just what it asks).
    fn read_ahead(
        &self,
        file: &OpenFile,
        inode: &Inode,
        offset: u64,
        size: u32,
    ) -> Option<Vec<(u64, Fetch)>> {
        let mut ra = file.ahead.lock().expect("read-ahead");
        let end = (offset + size as u64).min(inode.size);
        if !ra.in_order(offset) || end <= offset {
            ra.last_end = offset + size as u64;
            ra.clear();
            return None;
        }
        ra.last_end = ra.last_end.max(end);
        if ra.of != (inode.object.id, inode.version) {
            ra.clear();
            ra.of = (inode.object.id, inode.version);
        }
        let (first, last) = (offset / AHEAD_CHUNK, (end - 1) / AHEAD_CHUNK);
        let before: Vec<u64> = ra.chunks.range(..first).map(|(i, _)| *i).collect();
        for i in before {
            ra.drop_chunk(i);
        }
        for i in first..=last {
            ra.fetch(&self.fs, inode, i);
        }
        let chunks = inode.size.div_ceil(AHEAD_CHUNK);
        for i in last + 1..(last + 1 + AHEAD_CHUNKS).min(chunks) {
            if AHEAD_HELD.load(Ordering::Relaxed) >= AHEAD_BUDGET {
                break;
            }
            ra.fetch(&self.fs, inode, i);
        }
        Some(
            (first..=last)
                .map(|i| (i, ra.chunks[&i].0.clone()))
                .collect(),
        )
    }
}
