//! `Fs`: the file-system API every front end calls (WebDAV now, FUSE and the
//! CLI later). Namespace calls go to meta; content goes through [`BlockIo`].

use std::sync::Arc;

use bytes::Bytes;
use futures::{StreamExt, TryStreamExt};
use tessera_datanode::Block;
use tessera_meta::api::{NewNode, WriteGrant};
use tessera_meta::{FileKind, Inode, MetaClient, SetAttr, now_ns};
use tessera_rpc::Transport;
use tokio_util::sync::CancellationToken;

pub use crate::engine::FsOptions;
use crate::engine::{Engine, EngineRef};
use crate::error::{Error, Result};
use crate::io::BlockIo;
use crate::path::split_path;
use crate::reader::FileReader;
use crate::repair::{self, RepairQueue};
use crate::ring::{RingCache, RingView};
use crate::stats::Stats;
use crate::stripe::{self, BLOCK_SIZE};
use crate::writer::{ObjectWriter, Target};

pub use crate::stripe::MAX_FILE_SIZE;

fn check_end(offset: u64, len: u64) -> Result<()> {
    match offset.checked_add(len) {
        Some(end) if end <= MAX_FILE_SIZE => Ok(()),
        _ => Err(Error::Invalid(format!(
            "a file may not grow past {MAX_FILE_SIZE} bytes (offset {offset} + {len})"
        ))),
    }
}

/// File data the cluster holds and can still take (see [`Fs::space`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Space {
    pub used: u64,
    pub available: u64,
}

/// The file-system API: a thin facade over the [`Engine`].
#[derive(Clone)]
pub struct Fs {
    engine: EngineRef,
    /// The last [`Fs::space`] answer and when it was asked.
    space: Arc<std::sync::Mutex<Option<(std::time::Instant, Space)>>>,
    repair_rx: Arc<std::sync::Mutex<Option<tokio::sync::mpsc::Receiver<Vec<repair::RepairJob>>>>>,
    /// Reported on the process's metrics endpoint while any clone lives.
    _metrics: Arc<dyn tessera_rpc::metrics::Source>,
}

impl Fs {
    /// Connects to meta at `meta_addr` and loads the ring.
    pub async fn connect(meta_addr: &str, transport: Transport, options: FsOptions) -> Result<Fs> {
        let meta = MetaClient::new(&transport, meta_addr);
        let ring =
            Arc::new(RingCache::load(meta.clone(), transport, options.datanode_timeout).await?);
        let (repair, repair_rx) = RepairQueue::new();
        let io = BlockIo {
            ring,
            stats: Arc::new(Stats::default()),
            repair,
            missed: repair::MissedLog::default(),
            retry: options.retry,
            hedge_after: options.hedge_after,
            detached: Arc::new(tokio::sync::Semaphore::new(
                options.detached_put_bytes.div_ceil(1024).max(1),
            )),
        };
        let engine = Arc::new(Engine::new(meta, io, options));
        let metrics: Arc<dyn tessera_rpc::metrics::Source> =
            Arc::new(crate::metrics::GatewayMetrics {
                holder: engine.holder,
                stats: engine.io.stats.clone(),
                repair: engine.io.repair.clone(),
                missed: engine.io.missed.clone(),
                ring: engine.io.ring.clone(),
            });
        tessera_rpc::metrics::register(&metrics);
        Ok(Fs {
            engine,
            space: Arc::default(),
            repair_rx: Arc::new(std::sync::Mutex::new(Some(repair_rx))),
            _metrics: metrics,
        })
    }

    /// Starts the background workers (repair, GC, ring refresh); they stop
    /// when `shutdown` is cancelled. Call once.
    pub fn start_background(
        &self,
        shutdown: CancellationToken,
    ) -> Vec<tokio::task::JoinHandle<()>> {
        let mut tasks = Vec::new();
        if let Some(rx) = self.repair_rx.lock().expect("repair lock").take() {
            let s = shutdown.clone();
            tasks.push(tokio::spawn(repair::run_worker(
                self.engine.io.ring.clone(),
                self.engine.io.stats.clone(),
                rx,
                async move { s.cancelled().await },
            )));
        }
        let s = shutdown.clone();
        tasks.push(tokio::spawn(repair::run_missed(
            self.engine.meta.clone(),
            self.engine.io.missed.clone(),
            async move { s.cancelled().await },
        )));
        tasks.push(tokio::spawn(crate::gc::run(
            self.engine.clone(),
            shutdown.clone(),
        )));
        let ring = self.engine.io.ring.clone();
        let every = self.engine.options.ring_refresh;
        let s = shutdown.clone();
        tasks.push(tokio::spawn(async move {
            loop {
                tokio::select! {
                    _ = tokio::time::sleep(every) => { ring.refresh().await; }
                    _ = s.cancelled() => return,
                }
            }
        }));
        // Heartbeats: meta sums the gateways' blocked writes for `status`.
        let (meta, stats, id) = (
            self.engine.meta.clone(),
            self.engine.io.stats.clone(),
            self.engine.holder,
        );
        tasks.push(tokio::spawn(async move {
            let mut tick = tokio::time::interval(tessera_meta::health::HEARTBEAT_INTERVAL);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tokio::select! {
                    _ = tick.tick() => {
                        let blocked = stats.blocked_now.load(std::sync::atomic::Ordering::Relaxed);
                        if let Err(e) = meta.gateway_beat(id, blocked).await {
                            tracing::debug!(error = %e, "heartbeat not taken by meta");
                        }
                    }
                    _ = shutdown.cancelled() => return,
                }
            }
        }));
        tasks
    }

    /// This gateway's name in meta: random per [`Fs`], the holder of its
    /// write leases and the origin of its changes in meta's change feed.
    pub fn holder(&self) -> u64 {
        self.engine.holder
    }

    pub fn meta(&self) -> &MetaClient {
        &self.engine.meta
    }

    pub fn stats(&self) -> &Stats {
        &self.engine.io.stats
    }

    pub fn ring(&self) -> Arc<RingView> {
        self.engine.io.ring.get()
    }

    /// Fetches the ring from meta now.
    pub async fn refresh_ring(&self) -> Arc<RingView> {
        self.engine.io.ring.refresh().await
    }

    pub fn options(&self) -> &FsOptions {
        &self.engine.options
    }

    /// How much file data the cluster holds and can still take: the
    /// datanodes' stored bytes and free space (less their reserves), each
    /// summed and divided by R, since every byte is stored R times. Asked
    /// of every datanode at most every few seconds; a node that does not
    /// answer counts as empty.
    pub async fn space(&self) -> Space {
        const FRESH: std::time::Duration = std::time::Duration::from_secs(3);
        if let Some((at, space)) = *self.space.lock().expect("space lock")
            && at.elapsed() < FRESH
        {
            return space;
        }
        let ring = self.ring();
        let asks = ring.nodes.iter().flatten().map(|n| async move {
            tokio::time::timeout(std::time::Duration::from_secs(2), n.stats())
                .await
                .ok()
                .and_then(|r| r.ok())
        });
        let (mut used, mut available) = (0u64, 0u64);
        for (_, s) in futures::future::join_all(asks).await.into_iter().flatten() {
            used = used.saturating_add(s.bytes);
            available = available.saturating_add(s.available);
        }
        let r = u64::from(ring.settings.replicas.max(1));
        let space = Space {
            used: used / r,
            available: available / r,
        };
        *self.space.lock().expect("space lock") = Some((std::time::Instant::now(), space));
        space
    }

    // ----- namespace -----

    pub async fn resolve(&self, path: &str) -> Result<Inode> {
        Ok(self.engine.meta.resolve(split_path(path)?).await?)
    }

    /// The directory holding `path` and the last component's name.
    pub async fn parent_of(&self, path: &str) -> Result<(Inode, String)> {
        let mut parts = split_path(path)?;
        let name = parts
            .pop()
            .ok_or_else(|| Error::Invalid("the root has no parent".into()))?;
        let parent = self.engine.meta.resolve(parts).await?;
        if !parent.is_dir() {
            return Err(Error::NotADirectory(path.to_string()));
        }
        Ok((parent, name))
    }

    pub async fn lookup(&self, parent: u64, name: &str) -> Result<Inode> {
        Ok(self.engine.meta.lookup(parent, name).await?)
    }

    pub async fn getattr(&self, ino: u64) -> Result<Inode> {
        Ok(self.engine.meta.getattr(ino).await?)
    }

    pub async fn readdir(&self, ino: u64) -> Result<Vec<(String, Inode)>> {
        Ok(self.engine.meta.readdir(ino).await?)
    }

    pub async fn mkdir(&self, parent: u64, name: &str, mode: u32) -> Result<Inode> {
        self.create_node(parent, name, FileKind::Dir, mode, 0, true)
            .await
    }

    /// Creates an empty file (or returns the existing one unless `exclusive`).
    /// `seed` places its future content (see [`crate::placement::seed_for_path`]).
    pub async fn create(
        &self,
        parent: u64,
        name: &str,
        mode: u32,
        seed: u64,
        exclusive: bool,
    ) -> Result<Inode> {
        self.create_node(parent, name, FileKind::File, mode, seed, exclusive)
            .await
    }

    /// Creates a node of any kind with its owner (the FUSE front end);
    /// `mkdir` and `create` are shorthands with owner root. Also returns
    /// the directory as the create left it (`None`: the file was there).
    pub async fn make(&self, new: NewNode) -> Result<(Inode, Option<Inode>)> {
        Ok(self.engine.meta.create_in(new).await?)
    }

    async fn create_node(
        &self,
        parent: u64,
        name: &str,
        kind: FileKind,
        mode: u32,
        seed: u64,
        exclusive: bool,
    ) -> Result<Inode> {
        let new = NewNode {
            parent,
            name: name.to_string(),
            kind,
            mode,
            uid: 0,
            gid: 0,
            target: None,
            seed,
            exclusive,
        };
        Ok(self.engine.meta.create(new).await?)
    }

    pub async fn unlink(&self, parent: u64, name: &str) -> Result<()> {
        Ok(self.engine.meta.unlink(parent, name).await?)
    }

    pub async fn rmdir(&self, parent: u64, name: &str) -> Result<()> {
        Ok(self.engine.meta.rmdir(parent, name).await?)
    }

    /// Atomic rename; the inode (and so its data placement) is kept.
    pub async fn rename(
        &self,
        parent: u64,
        name: &str,
        new_parent: u64,
        new_name: &str,
        no_replace: bool,
    ) -> Result<Inode> {
        Ok(self
            .engine
            .meta
            .rename((parent, name), (new_parent, new_name), no_replace)
            .await?)
    }

    pub async fn setattr(&self, ino: u64, attr: SetAttr) -> Result<Inode> {
        Ok(self.engine.meta.setattr(ino, attr).await?)
    }

    // ----- content -----

    /// Reads up to `len` bytes at `offset` of the content `inode` describes.
    pub async fn read(&self, inode: &Inode, offset: u64, len: u64) -> Result<Bytes> {
        self.engine.read(inode, offset, len).await
    }

    /// A streaming reader over the content `inode` describes, with read-ahead.
    pub fn reader(&self, inode: Inode) -> FileReader {
        FileReader::new(self.engine.clone(), inode)
    }

    /// A streaming writer that makes new content for `parent/name` and
    /// publishes it atomically on [`ObjectWriter::finish`]. Readers see the old
    /// content (or no file) until then.
    pub async fn replace(
        &self,
        parent: u64,
        name: &str,
        seed: u64,
        mode: u32,
    ) -> Result<ObjectWriter> {
        ObjectWriter::start(
            self.engine.clone(),
            Target::Name {
                parent,
                name: name.to_string(),
                mode,
            },
            seed,
        )
        .await
    }

    /// Like [`Fs::replace`], for an existing inode whose content is still `inode.object`.
    pub async fn replace_inode(&self, inode: &Inode) -> Result<ObjectWriter> {
        ObjectWriter::start(
            self.engine.clone(),
            Target::Inode {
                ino: inode.ino,
                expect: inode.object.id,
            },
            inode.object.seed,
        )
        .await
    }

    /// Writes `data` at `offset` into the file `ino` in place
    /// (read-modify-write of partial blocks), then commits size and mtime.
    /// In-place writes of one file are serialised across gateways by meta's
    /// write lease; bytes a failed write left past the end are zeroed before
    /// this write grows the file over them.
    pub async fn write_at(&self, ino: u64, offset: u64, data: &[u8]) -> Result<Inode> {
        self.write_bytes_at(ino, offset, Bytes::copy_from_slice(data))
            .await
    }

    /// [`Fs::write_at`] of bytes the caller hands over (no copy is made).
    pub async fn write_bytes_at(&self, ino: u64, offset: u64, data: Bytes) -> Result<Inode> {
        check_end(offset, data.len() as u64)?;
        if data.is_empty() {
            let inode = self.getattr(ino).await?;
            if inode.kind != FileKind::File {
                return Err(Error::IsADirectory(format!("inode {ino}")));
            }
            return Ok(inode);
        }
        let _guard = self.engine.write_locks[(ino % 64) as usize].lock().await;
        let end = offset + data.len() as u64;
        self.engine
            .leased(ino, end, |grant| {
                self.write_leased(ino, offset, data, grant)
            })
            .await
    }

    async fn write_leased(
        &self,
        ino: u64,
        offset: u64,
        data: Bytes,
        grant: WriteGrant,
    ) -> Result<Inode> {
        let inode = self.getattr(ino).await?;
        if inode.kind != FileKind::File {
            return Err(Error::IsADirectory(format!("inode {ino}")));
        }
        let generation = grant.generation;
        let object = if inode.object.is_none() {
            self.engine.alloc_object(inode.object.seed).await?.0
        } else {
            inode.object
        };
        let spans = stripe::spans(offset, data.len());
        let first = spans[0].index;
        if grant.dirty_end > inode.size && offset > inode.size {
            self.engine
                .zero_dirty(
                    &object,
                    inode.size,
                    grant.dirty_end.min(offset),
                    first,
                    generation,
                )
                .await?;
        }
        // Old content of the partial blocks at either end, if they survive.
        let mut old: Vec<(u64, Bytes)> = Vec::new();
        for s in [spans.first(), spans.last()].into_iter().flatten() {
            if s.needs_read(inode.size) && !old.iter().any(|(i, _)| *i == s.index) {
                let b = self.engine.io.read(&object, s.index..s.index + 1).await?;
                let bytes = b
                    .into_iter()
                    .next()
                    .flatten()
                    .map(|b| b.data)
                    .unwrap_or_default();
                // Bytes past the old end of file are not content.
                let keep = inode
                    .size
                    .saturating_sub(s.index * BLOCK_SIZE as u64)
                    .min(bytes.len() as u64);
                old.push((s.index, bytes.slice(..keep as usize)));
            }
        }
        let end = offset + data.len() as u64;
        // In chunks, a few in flight: hashing one overlaps sending others.
        let old = std::sync::Arc::new(old);
        let writes = spans
            .chunks(self.engine.options.chunk_blocks.max(1))
            .map(|group| {
                let (group, data, old) = (group.to_vec(), data.clone(), old.clone());
                let engine = self.engine.clone();
                async move {
                    let bytes = group.iter().map(|s| s.data.len()).sum();
                    let first = group[0].index;
                    let blocks = tessera_rpc::compute(bytes, move || {
                        let after = group.iter().map(|s| block_after(s, &data, &old));
                        Block::new_all(generation, after.collect())
                    })
                    .await;
                    engine.io.write(&object, first, blocks).await
                }
            })
            .collect::<Vec<_>>();
        futures::stream::iter(writes)
            .buffer_unordered(self.engine.options.inflight_chunks.max(1))
            .try_for_each(|()| async { Ok(()) })
            .await?;
        Ok(self
            .engine
            .meta
            .commit_write(ino, object, end, now_ns(), self.engine.holder)
            .await?)
    }

    /// Sets the size of file `ino`. Growing exposes zeros (bytes a failed
    /// write left there are zeroed first). Shrinking copies the kept bytes
    /// into a new object and swaps it in atomically, so no stale byte past
    /// the new end can reappear if the file grows again.
    pub async fn truncate(&self, ino: u64, size: u64) -> Result<Inode> {
        check_end(size, 0)?;
        let _guard = self.engine.write_locks[(ino % 64) as usize].lock().await;
        self.engine
            .leased(ino, size, |grant| self.truncate_leased(ino, size, grant))
            .await
    }

    async fn truncate_leased(&self, ino: u64, size: u64, grant: WriteGrant) -> Result<Inode> {
        let inode = self.getattr(ino).await?;
        if inode.kind != FileKind::File {
            return Err(Error::IsADirectory(format!("inode {ino}")));
        }
        let holder = self.engine.holder;
        if size >= inode.size {
            if grant.dirty_end > inode.size && !inode.object.is_none() {
                self.engine
                    .zero_dirty(
                        &inode.object,
                        inode.size,
                        grant.dirty_end.min(size),
                        u64::MAX,
                        grant.generation,
                    )
                    .await?;
            }
            return Ok(self
                .engine
                .meta
                .resize(ino, inode.object.id, size, holder)
                .await?);
        }
        let mut writer = ObjectWriter::start(
            self.engine.clone(),
            Target::Inode {
                ino,
                expect: inode.object.id,
            },
            inode.object.seed,
        )
        .await?;
        let mut reader = self.reader(inode);
        let mut left = size;
        while left > 0 {
            let chunk = reader.read(left.min(4 << 20) as usize).await?;
            if chunk.is_empty() {
                return Err(Error::Internal(format!(
                    "inode {ino}: content ended early while truncating"
                )));
            }
            left -= chunk.len() as u64;
            writer.write(chunk).await?;
        }
        let inode = writer.finish(Some(size)).await?;
        self.engine.meta.end_write(ino, holder).await?;
        Ok(inode)
    }

    /// Copies the content of `src` to `parent/name` (created or replaced atomically).
    pub async fn copy_file(
        &self,
        src: &Inode,
        parent: u64,
        name: &str,
        seed: u64,
    ) -> Result<Inode> {
        let mut writer = self.replace(parent, name, seed, src.mode).await?;
        let mut reader = self.reader(src.clone());
        loop {
            let chunk = reader.read(4 << 20).await?;
            if chunk.is_empty() {
                break;
            }
            writer.write(chunk).await?;
        }
        writer.finish(Some(src.size)).await
    }
}

/// Block `s.index` after a write of `data` over it: a slice of `data` when
/// the write covers it whole, else the old bytes (`old`, of the partial
/// blocks at either end) merged with the new.
fn block_after(s: &stripe::BlockSpan, data: &Bytes, old: &[(u64, Bytes)]) -> Bytes {
    let prior = old
        .iter()
        .find(|(i, _)| *i == s.index)
        .map(|(_, b)| b.as_ref())
        .unwrap_or(&[]);
    if s.start == 0 && s.data.len() >= prior.len() {
        return data.slice(s.data.clone());
    }
    Bytes::from(stripe::merge(prior, s.start, &data[s.data.clone()]))
}
