//! Test harnesses for Tessera.
//!
//! - [`cluster`]: an in-process cluster (meta + N datanodes + gateway `Fs`,
//!   each on `127.0.0.1:0` with its own temp dir) with fault hooks: stop,
//!   restart or wipe a datanode, read a node's blocks directly.
//! - [`procs`]: the real `tessera` binary as separate processes, killed
//!   with SIGKILL, readiness from the line each server prints.
//! - [`http`]: a small HTTP/1 client for WebDAV requests.
//! - [`metrics`]: scrapes of a `/metrics` endpoint, parsed and checked.
//! - [`fuse`]: real kernel FUSE mounts of an in-process cluster.
//! - [`data`]: deterministic test content.
//! - [`tmpfs`]: a small tmpfs to fill a disk for real.

pub mod cluster;
pub mod data;
pub mod fuse;
pub mod http;
pub mod metrics;
pub mod procs;
pub mod tmpfs;

/// Logs for tests: `RUST_LOG=debug cargo test` shows them.
pub fn init_tracing() {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "warn".into()),
        )
        .with_test_writer()
        .try_init();
}
