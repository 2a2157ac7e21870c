//! Streaming reads with read-ahead of whole chunks.

use std::collections::VecDeque;

use bytes::Bytes;
use tessera_meta::Inode;
use tokio::task::JoinHandle;

use crate::engine::EngineRef;
use crate::error::{Error, Result};
use crate::stripe::BLOCK_SIZE;

pub struct FileReader {
    engine: EngineRef,
    inode: Inode,
    pos: u64,
    /// Chunks being fetched: (start offset, task).
    ahead: VecDeque<(u64, JoinHandle<Result<Bytes>>)>,
    /// The chunk being consumed: (start offset, bytes).
    current: Option<(u64, Bytes)>,
    /// Start of the next chunk to fetch.
    next_fetch: u64,
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
    pub(crate) fn new(engine: EngineRef, inode: Inode) -> Self {
        FileReader {
            engine,
            inode,
            pos: 0,
            ahead: VecDeque::new(),
            current: None,
            next_fetch: 0,
        }
    }

    pub fn inode(&self) -> &Inode {
        &self.inode
    }

    pub fn position(&self) -> u64 {
        self.pos
    }

    fn chunk(&self) -> u64 {
        (self.engine.options().chunk_blocks * BLOCK_SIZE) as u64
    }

    pub fn seek(&mut self, pos: u64) {
        if pos == self.pos {
            return;
        }
        self.pos = pos;
        let holds = |start: u64, len: usize| pos >= start && pos < start + len as u64;
        if self
            .current
            .as_ref()
            .is_some_and(|(s, b)| holds(*s, b.len()))
        {
            return;
        }
        // Read-ahead from elsewhere in the file is of no use now.
        for (_, h) in self.ahead.drain(..) {
            h.abort();
        }
        self.next_fetch = (pos / self.chunk()) * self.chunk();
    }

    /// Keeps up to `inflight_chunks` chunks from `next_fetch` on being fetched.
    fn fill(&mut self) {
        let chunk = self.chunk();
        while self.ahead.len() < self.engine.options().inflight_chunks.max(1)
            && self.next_fetch < self.inode.size
        {
            let (engine, inode, start) = (self.engine.clone(), self.inode.clone(), self.next_fetch);
            self.ahead.push_back((
                start,
                tokio::spawn(async move { engine.read(&inode, start, chunk).await }),
            ));
            self.next_fetch += chunk;
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
