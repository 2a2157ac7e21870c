//! The engine core that the file-system facade ([`crate::Fs`]) and every
//! worker (reader, writer, GC, repair) hold: the meta client, block I/O
//! over the ring, the stats, the options, and the object ids leased from
//! meta.

use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use tessera_datanode::Block;
use tessera_meta::api::ObjectLease;
use tessera_meta::{Inode, MetaClient, ObjectRef};

use crate::error::Result;
use crate::io::{BlockIo, RetryPolicy};
use crate::stripe::{self, BLOCK_SIZE};

/// Tunables of a gateway.
#[derive(Debug, Clone)]
pub struct FsOptions {
    /// Timeout of one datanode call.
    pub datanode_timeout: Duration,
    /// Blocks per chunk of a streamed write or read (4 MiB by default).
    pub chunk_blocks: usize,
    /// Chunks of one stream in flight at once.
    pub inflight_chunks: usize,
    pub retry: RetryPolicy,
    /// How long a replaced or deleted object stays readable before GC deletes
    /// it (readers that opened the old version keep working meanwhile).
    pub gc_grace: Duration,
    pub gc_interval: Duration,
    /// Uploads neither published nor abandoned after this long are collected
    /// (the lease of their object id expires).
    pub pending_ttl: Duration,
    pub ring_refresh: Duration,
    /// Object ids leased from meta at once.
    pub lease_ids: u64,
}

impl Default for FsOptions {
    fn default() -> Self {
        FsOptions {
            datanode_timeout: Duration::from_secs(10),
            chunk_blocks: 8192,
            inflight_chunks: 4,
            retry: RetryPolicy::default(),
            gc_grace: Duration::from_secs(120),
            gc_interval: Duration::from_secs(5),
            pending_ttl: Duration::from_secs(6 * 3600),
            ring_refresh: Duration::from_secs(2),
            lease_ids: 256,
        }
    }
}

pub struct Engine {
    pub(crate) meta: MetaClient,
    pub(crate) io: BlockIo,
    pub(crate) options: FsOptions,
    /// Serialises read-modify-write of the same inode within this gateway.
    pub(crate) write_locks: Vec<tokio::sync::Mutex<()>>,
    /// The ids left of the current lease, and when it was taken.
    lease: tokio::sync::Mutex<Option<(ObjectLease, Instant)>>,
}

impl Engine {
    pub(crate) fn new(meta: MetaClient, io: BlockIo, options: FsOptions) -> Self {
        Engine {
            meta,
            io,
            options,
            write_locks: (0..64).map(|_| tokio::sync::Mutex::new(())).collect(),
            lease: tokio::sync::Mutex::new(None),
        }
    }

    pub fn options(&self) -> &FsOptions {
        &self.options
    }

    pub fn meta(&self) -> &MetaClient {
        &self.meta
    }

    /// A fresh object placed by `seed`, and the generation to write its
    /// blocks with. Ids come from a lease, so this asks meta only once per
    /// [`FsOptions::lease_ids`] objects; a lease older than half the upload
    /// TTL is not used, so no upload starts on an id about to expire.
    pub(crate) async fn alloc_object(&self, seed: u64) -> Result<(ObjectRef, u64)> {
        let mut lease = self.lease.lock().await;
        let fresh = |(l, at): &(ObjectLease, Instant)| {
            l.count > 0 && at.elapsed() < self.options.pending_ttl / 2
        };
        if !lease.as_ref().is_some_and(fresh) {
            let l = self
                .meta
                .lease_objects(self.options.lease_ids.max(1))
                .await?;
            *lease = Some((l, Instant::now()));
        }
        let (l, _) = lease.as_mut().expect("just leased");
        let object = ObjectRef {
            id: l.first,
            seed,
            width: l.width,
        };
        l.first += 1;
        l.count -= 1;
        Ok((object, l.generation))
    }

    /// Reads up to `len` bytes at `offset` of the content `inode` describes.
    pub async fn read(&self, inode: &Inode, offset: u64, len: u64) -> Result<Bytes> {
        let range = stripe::blocks_for_read(offset, len, inode.size);
        if range.is_empty() {
            return Ok(Bytes::new());
        }
        let chunk = self.options.chunk_blocks as u64;
        let mut parts = Vec::new();
        let mut start = range.start;
        while start < range.end {
            let end = (start + chunk).min(range.end);
            parts.push(self.io.read(&inode.object, start..end));
            start = end;
        }
        let end = offset.saturating_add(len).min(inode.size);
        let mut out = Vec::with_capacity((end - offset) as usize);
        let mut index = range.start;
        for blocks in futures::future::try_join_all(parts).await? {
            for b in blocks {
                append_block(&mut out, index, b.as_ref(), offset, end, inode.size);
                index += 1;
            }
        }
        Ok(Bytes::from(out))
    }
}

/// Appends the part of block `index` that falls in `[offset, end)` to `out`;
/// a hole or a short last block reads as zeros up to the file size.
pub(crate) fn append_block(
    out: &mut Vec<u8>,
    index: u64,
    block: Option<&Block>,
    offset: u64,
    end: u64,
    size: u64,
) {
    let bs = BLOCK_SIZE as u64;
    let block_start = index * bs;
    let block_len = (size - block_start).min(bs);
    let from = offset.max(block_start) - block_start;
    let to = end.min(block_start + block_len) - block_start;
    if from >= to {
        return;
    }
    let data = block.map(|b| b.data.as_ref()).unwrap_or(&[]);
    let (from, to) = (from as usize, to as usize);
    let have = data.len().min(to);
    if from < have {
        out.extend_from_slice(&data[from..have]);
    }
    out.resize(out.len() + (to - have.max(from)), 0);
}

/// The engine behind an `Arc`, as workers hold it.
pub type EngineRef = Arc<Engine>;
