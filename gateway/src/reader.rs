//! Streaming reads with read-ahead of whole chunks.

use std::collections::VecDeque;

use bytes::Bytes;
use tessera_meta::Inode;
use tokio::task::JoinHandle;

use crate::error::{Error, Result};
use crate::fs::Fs;
use crate::stripe::BLOCK_SIZE;

pub struct FileReader {
    fs: Fs,
    inode: Inode,
    pos: u64,
    /// Chunks being fetched: (start offset, task).
    ahead: VecDeque<(u64, JoinHandle<Result<Bytes>>)>,
    /// The chunk being consumed: (start offset, bytes).
    current: Option<(u64, Bytes)>,
}

impl std::fmt::Debug for FileReader {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FileReader")
            .field("ino", &self.inode.ino)
            .field("pos", &self.pos)
            .finish()
    }
}

impl FileReader {
    pub(crate) fn new(fs: Fs, inode: Inode) -> Self {
        FileReader {
            fs,
            inode,
            pos: 0,
            ahead: VecDeque::new(),
            current: None,
        }
    }

    pub fn inode(&self) -> &Inode {
        &self.inode
    }

    pub fn position(&self) -> u64 {
        self.pos
    }

    fn chunk(&self) -> u64 {
        (self.fs.options().chunk_blocks * BLOCK_SIZE) as u64
    }

    pub fn seek(&mut self, pos: u64) {
        if pos != self.pos {
            self.pos = pos;
            for (_, h) in self.ahead.drain(..) {
                h.abort();
            }
        }
    }

    /// Keeps chunks from the one holding `pos` fetched ahead.
    fn fill(&mut self) {
        let chunk = self.chunk();
        let mut next = match self.ahead.back() {
            Some((s, _)) => s + chunk,
            None => (self.pos / chunk) * chunk,
        };
        while self.ahead.len() < self.fs.options().inflight_chunks.max(1) && next < self.inode.size
        {
            let (fs, inode) = (self.fs.clone(), self.inode.clone());
            self.ahead.push_back((
                next,
                tokio::spawn(async move { fs.read(&inode, next, chunk).await }),
            ));
            next += chunk;
        }
    }

    /// The next bytes from the current position: at most `max`, empty at the end.
    pub async fn read(&mut self, max: usize) -> Result<Bytes> {
        if self.pos >= self.inode.size || max == 0 {
            return Ok(Bytes::new());
        }
        loop {
            if let Some((start, bytes)) = &self.current
                && self.pos >= *start
                && self.pos < start + bytes.len() as u64
            {
                let from = (self.pos - start) as usize;
                let n = max.min(bytes.len() - from);
                let out = bytes.slice(from..from + n);
                self.pos += n as u64;
                return Ok(out);
            }
            // Drop read-ahead that does not hold the position (after a seek).
            while let Some((s, _)) = self.ahead.front() {
                if *s + self.chunk() <= self.pos || *s > self.pos {
                    if let Some((_, h)) = self.ahead.pop_front() {
                        h.abort();
                    }
                    if self.ahead.is_empty() {
                        break;
                    }
                } else {
                    break;
                }
            }
            self.fill();
            let (start, task) = self
                .ahead
                .pop_front()
                .ok_or_else(|| Error::Internal("read-ahead is empty".into()))?;
            let bytes = task
                .await
                .map_err(|e| Error::Internal(format!("read task failed: {e}")))??;
            self.fill();
            if bytes.is_empty() {
                return Ok(Bytes::new());
            }
            self.current = Some((start, bytes));
        }
    }
}

impl Drop for FileReader {
    fn drop(&mut self) {
        for (_, h) in self.ahead.drain(..) {
            h.abort();
        }
    }
}
