//! Tessera's internal wire.
//!
//! Every service (meta, datanode) speaks the same protocol: one HTTP/2
//! `POST /rpc` per call, whose body is the service's `Request` in postcard,
//! optionally followed by raw payload bytes (block data travels there, never
//! through a serializer); the reply is the `Response` in postcard and its own
//! raw payload. Service-level errors live inside each service's `Response`;
//! this crate's [`Error`] covers only the wire (connect, timeout, refused
//! secret, undecodable bodies).
//!
//! - [`secret`]: the cluster secret every call must carry.
//! - [`server`]: the accept loop ([`serve`]) and the [`Service`] trait handlers implement.
//! - [`client`]: a pooled, multiplexed HTTP/2 client with per-call timeouts.
//! - [`codec`]: the one place headers are encoded and decoded (postcard), and frames split.
//! - [`body`]: bodies sent as several segments, never joined.
//! - [`formats`]: format versions of stored tables, checked on open.
//! - [`group`]: group commit, one thread batching concurrent jobs.
//! - [`local`]: calls between services of one process (`tessera up`), without sockets.
//! - [`metrics`]: the process's Prometheus metrics and their `/metrics` endpoint.
//! - [`blocking`]: the one helper through which blocking work leaves the runtime.

pub mod body;
pub mod client;
pub mod codec;
pub mod error;
pub mod formats;
pub mod group;
pub mod local;
pub mod metrics;
pub mod secret;
pub mod server;

pub use client::{Client, Transport};
pub use error::Error;
pub use secret::Secret;
pub use server::{Limits, Payload, Service, serve, serve_with};

/// Header carrying the cluster secret.
pub const SECRET_HEADER: &str = "x-tessera-secret";

/// Largest request or response body accepted on the wire (256 MiB).
pub const MAX_BODY: usize = 256 << 20;

thread_local! {
    static MAY_BLOCK: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
}

/// Marks the calling thread as one that may block: a thread of its own
/// that drives futures with `Handle::block_on` (a FUSE request thread),
/// never a runtime worker. [`blocking`] work then runs on it in place,
/// instead of being handed to another thread and handed back (two
/// wake-ups, which cost more than a small redb transaction).
pub fn allow_blocking_here() {
    MAY_BLOCK.with(|m| m.set(true));
}

/// Whether the calling thread was marked by [`allow_blocking_here`].
pub fn may_block_here() -> bool {
    MAY_BLOCK.with(|m| m.get())
}

/// Runs blocking work (redb transactions, large hashes, `std::fs`) off the
/// async runtime: on the blocking pool, or in place on a thread that may
/// block ([`allow_blocking_here`]). A panic in `f` is re-raised in the
/// caller.
pub async fn blocking<F, R>(f: F) -> R
where
    F: FnOnce() -> R + Send + 'static,
    R: Send + 'static,
{
    if may_block_here() {
        return f();
    }
    match tokio::task::spawn_blocking(f).await {
        Ok(r) => r,
        Err(e) if e.is_panic() => std::panic::resume_unwind(e.into_panic()),
        Err(e) => panic!("blocking task cancelled: {e}"),
    }
}

/// Work on at most this many bytes (hashing a few blocks) runs inline:
/// handing it to another thread costs more than doing it.
pub const INLINE_WORK: usize = 64 << 10;

/// Runs CPU work over `bytes` bytes (hashing, packing): inline when it is
/// small (see [`INLINE_WORK`]), else off the runtime through [`blocking`].
pub async fn compute<F, R>(bytes: usize, f: F) -> R
where
    F: FnOnce() -> R + Send + 'static,
    R: Send + 'static,
{
    if bytes <= INLINE_WORK {
        f()
    } else {
        blocking(f).await
    }
}

/// Keeps the allocator from handing large buffers (block batches of a few
/// MiB) back to the kernel on every free: with glibc's defaults each one is
/// a fresh `mmap`, and the kernel zeroes every page of it again, which cost
/// more than a tenth of the read path's CPU. Freed memory above 256 MiB is
/// still returned. Call once, early in `main`.
pub fn tune_allocator() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    {
        // SAFETY: mallopt only sets allocator parameters; any value is allowed.
        unsafe {
            libc::mallopt(libc::M_MMAP_THRESHOLD, 64 << 20);
            libc::mallopt(libc::M_TRIM_THRESHOLD, 256 << 20);
            // Few arenas: memory freed by one thread is reused by the
            // others instead of each thread's arena keeping its own.
            libc::mallopt(libc::M_ARENA_MAX, 2);
        }
    }
}
