//! The engine core that the file-system facade ([`crate::Fs`]) and every
//! worker (reader, writer, GC, repair) hold: the meta client, block I/O
//! over the ring, the stats, the options, and the object ids leased from
//! meta.

use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use tessera_datanode::Block;
use tessera_meta::api::{CallError, ObjectLease, WriteGrant};
use tessera_meta::{Inode, MetaClient, MetaError, ObjectRef};

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
    /// How long a read waits for a replica before also asking the next one
    /// (a hung datanode then costs this, not the whole call timeout).
    pub hedge_after: Duration,
    /// Most data held by puts to slow replicas that keep running after
    /// their write was acknowledged (see `BlockIo::detach`).
    pub detached_put_bytes: usize,
    /// How long meta's write lease of a file (taken for each in-place write,
    /// see [`Engine::leased`]) lasts unless renewed; a gateway that dies
    /// mid-write holds other gateways' writes to that file this long.
    pub write_lease: Duration,
    /// Names and attributes change lazily in meta: answered once committed
    /// and durable within milliseconds or at the next fsync, as on a local
    /// file system (FUSE mounts). Content commits are always durable.
    pub lazy_names: bool,
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
            ring_refresh: Duration::from_millis(500),
            lease_ids: 256,
            detached_put_bytes: crate::io::DETACHED_PUT_BYTES,
            hedge_after: Duration::from_millis(300),
            write_lease: Duration::from_secs(30),
            lazy_names: false,
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
    /// This gateway's name in meta's write leases: random per process.
    pub(crate) holder: u64,
}

impl Engine {
    pub(crate) fn new(meta: MetaClient, io: BlockIo, options: FsOptions) -> Self {
        let holder = random_holder();
        // Its changes carry its name, so it can skip them in the feed.
        let meta = meta.with_origin(holder);
        let meta = if options.lazy_names {
            meta.lazy()
        } else {
            meta
        };
        Engine {
            meta,
            io,
            options,
            write_locks: (0..64).map(|_| tokio::sync::Mutex::new(())).collect(),
            lease: tokio::sync::Mutex::new(None),
            holder,
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
    pub(crate) async fn alloc_object(&self, seed: u64) -> Result<(ObjectRef, u64, Instant)> {
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
        let (l, granted) = lease.as_mut().expect("just leased");
        let object = ObjectRef {
            id: l.first,
            seed,
            width: l.width,
        };
        l.first += 1;
        l.count -= 1;
        Ok((object, l.generation, *granted))
    }

    /// Takes meta's write lease of `ino` for an in-place write that may
    /// reach `end`, waiting while another gateway holds it.
    async fn begin_write(&self, ino: u64, end: u64) -> Result<WriteGrant> {
        let mut pause = Duration::from_millis(1);
        loop {
            let r = self
                .meta
                .begin_write(ino, end, self.holder, self.options.write_lease)
                .await;
            match r {
                Err(CallError::Meta(MetaError::Busy(_))) => {
                    tokio::time::sleep(pause).await;
                    pause = (pause * 2).min(Duration::from_millis(50));
                }
                r => return Ok(r?),
            }
        }
    }

    /// Runs `work` under meta's write lease of `ino` (in-place writes of one
    /// file are serialised across every gateway and mount), renewing the
    /// lease while `work` runs. `work` ends the lease by committing; if it
    /// fails, or is dropped, the lease is ended here.
    pub(crate) async fn leased<T, F>(
        self: &Arc<Self>,
        ino: u64,
        end: u64,
        work: impl FnOnce(WriteGrant) -> F,
    ) -> Result<T>
    where
        F: Future<Output = Result<T>>,
    {
        let grant = self.begin_write(ino, end).await?;
        let mut guard = LeaseGuard {
            engine: Some(self.clone()),
            ino,
        };
        let renew = async {
            let every = self.options.write_lease / 3;
            loop {
                tokio::time::sleep(every).await;
                let r = self
                    .meta
                    .begin_write(ino, end, self.holder, self.options.write_lease)
                    .await;
                if let Err(e) = r {
                    tracing::warn!(ino, error = %e, "cannot renew a write lease");
                }
            }
        };
        let result = tokio::select! {
            r = work(grant) => r,
            () = renew => Err(crate::error::Error::Internal("write lease renewal stopped".into())),
        };
        if result.is_ok() {
            guard.engine = None;
        }
        result
    }

    /// Zeroes what uncommitted writes may have left in `[size, to)` of
    /// `object`, below block `stop` (the caller writes from there), so that
    /// growing the file shows zeros there.
    pub(crate) async fn zero_dirty(
        &self,
        object: &ObjectRef,
        size: u64,
        to: u64,
        stop: u64,
        generation: u64,
    ) -> Result<()> {
        let bs = BLOCK_SIZE as u64;
        let first = size / bs;
        let end = to.div_ceil(bs).min(stop);
        let mut index = first;
        while index < end {
            let n = (end - index).min(self.options.chunk_blocks.max(1) as u64);
            let mut blocks = Vec::with_capacity(n as usize);
            for i in index..index + n {
                let keep = size.saturating_sub(i * bs).min(bs) as usize;
                let data = if keep == 0 {
                    Bytes::new()
                } else {
                    let old = self.io.read(object, i..i + 1).await?;
                    let old = old.into_iter().next().flatten().map(|b| b.data);
                    let old = old.unwrap_or_default();
                    old.slice(..keep.min(old.len()))
                };
                blocks.push(Block::new(generation, data));
            }
            self.io.write(object, index, blocks).await?;
            index += n;
        }
        Ok(())
    }

    /// Reads up to `len` bytes at `offset` of the content `inode` describes.
    pub async fn read(&self, inode: &Inode, offset: u64, len: u64) -> Result<Bytes> {
        let range = stripe::blocks_for_read(offset, len, inode.size);
        if range.is_empty() {
            return Ok(Bytes::new());
        }
        let (chunk, size) = (self.options.chunk_blocks as u64, inode.size);
        let end = offset.saturating_add(len).min(size);
        let mut parts = Vec::new();
        let mut start = range.start;
        while start < range.end {
            let blocks = start..(start + chunk).min(range.end);
            start = blocks.end;
            let (io, object) = (&self.io, &inode.object);
            parts.push(async move {
                // Every first replica answering with a valid copy: the
                // bytes straight from their answers. Anything else: block
                // by block, with retries, hedging and repairs.
                if let Some(bytes) = io
                    .read_found(object, blocks.clone(), offset, end, size)
                    .await
                {
                    return Ok(bytes);
                }
                let first = blocks.start;
                let found = io.read(object, blocks).await?;
                let mut out = Vec::new();
                for (index, b) in (first..).zip(&found) {
                    append_data(
                        &mut out,
                        index,
                        b.as_ref().map(|b| &b.data[..]),
                        offset,
                        end,
                        size,
                    );
                }
                Ok::<_, crate::error::Error>(out)
            });
        }
        let mut parts = futures::future::try_join_all(parts).await?;
        if parts.len() == 1 {
            return Ok(Bytes::from(parts.pop().expect("one part")));
        }
        let mut out = Vec::with_capacity((end - offset) as usize);
        for part in parts {
            out.extend_from_slice(&part);
        }
        Ok(Bytes::from(out))
    }
}

/// Appends the part of block `index` (its bytes; `None` for a hole) that
/// falls in `[offset, end)` to `out`; a hole or a short last block reads as
/// zeros up to the file size.
pub(crate) fn append_data(
    out: &mut Vec<u8>,
    index: u64,
    data: Option<&[u8]>,
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
    let data = data.unwrap_or(&[]);
    let (from, to) = (from as usize, to as usize);
    let have = data.len().min(to);
    if from < have {
        out.extend_from_slice(&data[from..have]);
    }
    out.resize(out.len() + (to - have.max(from)), 0);
}

/// Ends a write lease whose work was dropped or failed (in the background:
/// it may run in `Drop`).
struct LeaseGuard {
    engine: Option<Arc<Engine>>,
    ino: u64,
}

impl Drop for LeaseGuard {
    fn drop(&mut self) {
        let Some(engine) = self.engine.take() else {
            return;
        };
        let ino = self.ino;
        if let Ok(rt) = tokio::runtime::Handle::try_current() {
            rt.spawn(async move {
                if let Err(e) = engine.meta.end_write(ino, engine.holder).await {
                    tracing::warn!(ino, error = %e, "cannot end a write lease");
                }
            });
        }
    }
}

/// A random id for this process's write leases.
fn random_holder() -> u64 {
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u32(std::process::id());
    h.write_u128(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or(0),
    );
    h.finish().max(1)
}

/// The engine behind an `Arc`, as workers hold it.
pub type EngineRef = Arc<Engine>;
