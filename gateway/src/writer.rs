//! Streaming writes of new content: bytes go into a fresh object in chunks
//! (a few in flight, so memory stays bounded whatever the size), and the
//! object is swapped into the file atomically only when all of it is on W
//! replicas. An unfinished writer abandons its object to GC.

use std::collections::VecDeque;

use bytes::{Bytes, BytesMut};
use std::time::Instant;
use tessera_datanode::Block;
use tessera_meta::{Inode, ObjectRef, now_ns};
use tokio::task::JoinHandle;

use crate::engine::EngineRef;
use crate::error::{Error, Result};
use crate::stripe::BLOCK_SIZE;

/// Where finished content goes.
#[derive(Debug, Clone)]
pub enum Target {
    /// Create `parent/name`, or replace the content of the file there.
    Name {
        parent: u64,
        name: String,
        mode: u32,
    },
    /// Replace the content of `ino` if it still is object `expect`.
    Inode { ino: u64, expect: u64 },
}

pub struct ObjectWriter {
    engine: EngineRef,
    target: Target,
    object: ObjectRef,
    generation: u64,
    /// When the pending record of `object` was last granted or renewed.
    renewed: Instant,
    buf: BytesMut,
    next_index: u64,
    size: u64,
    inflight: VecDeque<JoinHandle<Result<()>>>,
    done: bool,
    /// A chunk failed: the object has a gap, so nothing more may be written
    /// to it or published.
    failed: bool,
    /// The modification time to publish with (ns), else the time of
    /// publishing.
    mtime: Option<i64>,
}

impl std::fmt::Debug for ObjectWriter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ObjectWriter")
            .field("target", &self.target)
            .field("object", &self.object)
            .field("size", &self.size)
            .finish()
    }
}

impl ObjectWriter {
    pub(crate) async fn start(
        engine: EngineRef,
        target: Target,
        seed: u64,
    ) -> Result<ObjectWriter> {
        let (object, generation, renewed) = engine.alloc_object(seed).await?;
        Ok(ObjectWriter {
            engine,
            target,
            object,
            generation,
            renewed,
            buf: BytesMut::new(),
            next_index: 0,
            size: 0,
            inflight: VecDeque::new(),
            done: false,
            failed: false,
            mtime: None,
        })
    }

    /// Bytes accepted so far.
    pub fn size(&self) -> u64 {
        self.size
    }

    pub fn object(&self) -> ObjectRef {
        self.object
    }

    /// Publishes the file with modification time `ns` (nanoseconds since
    /// the epoch; a client's own, such as a PUT's `X-OC-Mtime`) instead of
    /// the time of publishing: one change in meta instead of two.
    pub fn set_mtime(&mut self, ns: i64) {
        self.mtime = Some(ns);
    }

    fn chunk_bytes(&self) -> usize {
        self.engine.options().chunk_blocks * BLOCK_SIZE
    }

    /// Appends `data`, sending full chunks to the datanodes; waits when too
    /// many chunks are in flight.
    pub async fn write(&mut self, data: Bytes) -> Result<()> {
        if self.done {
            return Err(Error::Internal("write after finish".into()));
        }
        if self.failed {
            return Err(Error::Internal("write after a failed write".into()));
        }
        if self.size + data.len() as u64 > crate::stripe::MAX_FILE_SIZE {
            return Err(Error::Invalid(format!(
                "a file may not grow past {} bytes",
                crate::stripe::MAX_FILE_SIZE
            )));
        }
        self.size += data.len() as u64;
        self.buf.extend_from_slice(&data);
        while self.buf.len() >= self.chunk_bytes() {
            let chunk = self.buf.split_to(self.chunk_bytes()).freeze();
            self.send(chunk).await?;
        }
        Ok(())
    }

    /// Keeps the upload's pending record alive while it streams: renewed
    /// once it is half its TTL old, so a multi-hour upload is not collected
    /// under it (and a short one costs meta nothing).
    async fn renew(&mut self) -> Result<()> {
        if self.renewed.elapsed() >= self.engine.options().pending_ttl / 2 {
            self.engine.meta().renew_upload(self.object.id).await?;
            self.renewed = Instant::now();
        }
        Ok(())
    }

    async fn send(&mut self, chunk: Bytes) -> Result<()> {
        self.renew().await?;
        while self.inflight.len() >= self.engine.options().inflight_chunks.max(1) {
            self.wait_one().await?;
        }
        let first = self.next_index;
        self.next_index += chunk.len().div_ceil(BLOCK_SIZE) as u64;
        let (engine, object, generation) = (self.engine.clone(), self.object, self.generation);
        self.inflight.push_back(tokio::spawn(async move {
            let blocks = tessera_rpc::compute(chunk.len(), move || {
                let data = chunk.chunks(BLOCK_SIZE).map(|c| chunk.slice_ref(c));
                Block::new_all(generation, data.collect())
            })
            .await;
            engine.io.write(&object, first, blocks).await
        }));
        Ok(())
    }

    async fn wait_one(&mut self) -> Result<()> {
        if let Some(h) = self.inflight.pop_front() {
            let result = match h.await {
                Ok(r) => r,
                Err(e) => Err(Error::Internal(format!("write task failed: {e}"))),
            };
            if result.is_err() {
                self.failed = true;
            }
            result?;
        }
        Ok(())
    }

    /// Writes what is left, waits for every chunk, and publishes the object.
    /// With `expected`, a size mismatch (a short or long body) abandons the
    /// upload instead, leaving the old content in place.
    pub async fn finish(mut self, expected: Option<u64>) -> Result<Inode> {
        if self.failed {
            return Err(Error::Internal("finish after a failed write".into()));
        }
        if let Some(e) = expected
            && e != self.size
        {
            return Err(Error::Incomplete(format!(
                "the client announced {e} bytes and sent {}; nothing was stored",
                self.size
            )));
        }
        if !self.buf.is_empty() {
            let rest = self.buf.split().freeze();
            self.send(rest).await?;
        }
        while !self.inflight.is_empty() {
            self.wait_one().await?;
        }
        self.renew().await?;
        let meta = self.engine.meta();
        let mtime = self.mtime.unwrap_or_else(now_ns);
        let inode = match &self.target {
            Target::Name { parent, name, mode } => {
                meta.publish((*parent, name), self.object, self.size, *mode, mtime)
                    .await?
            }
            Target::Inode { ino, expect } => {
                meta.swap_object(*ino, *expect, self.object, self.size, mtime)
                    .await?
            }
        };
        self.done = true;
        Ok(inode)
    }
}

impl Drop for ObjectWriter {
    fn drop(&mut self) {
        for h in self.inflight.drain(..) {
            h.abort();
        }
        if self.done {
            return;
        }
        // Not published: hand the object to GC (best effort; a crash leaves
        // it to meta, which collects the unused ids of expired leases).
        let (meta, object) = (self.engine.meta().clone(), self.object.id);
        if let Ok(rt) = tokio::runtime::Handle::try_current() {
            rt.spawn(async move {
                if let Err(e) = meta.abandon(object).await {
                    tracing::warn!(object, error = %e, "cannot abandon an unfinished upload");
                }
            });
        }
    }
}
