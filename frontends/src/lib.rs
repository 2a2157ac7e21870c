//! Tessera's front ends and processes.
//!
//! - [`webdav`]: dav-server over the gateway's `Fs`, served by hyper.
//! - [`servers`]: the long-running commands (`meta`, `datanode`, `gateway`):
//!   bind, print one ready line naming the address, serve until shutdown.
//! - [`fuse`]: fuser over the gateway's `Fs` (`tessera mount`).
//! - [`cli`]: the file commands (`ls`, `put`, `get`, …), a WebDAV client.
//! - [`up`]: meta, N datanodes and a WebDAV gateway in one process.
//!
//! `main.rs` only parses the command line and calls these.

pub mod cli;
pub mod fuse;
pub mod servers;
pub mod status;
pub mod up;
pub mod webdav;

/// Bytes for people: 1023 B, 1.5 KiB, 12.0 GiB (WebDAV listings, `status`).
pub(crate) fn human_bytes(bytes: u64) -> String {
    const UNITS: [&str; 6] = ["B", "KiB", "MiB", "GiB", "TiB", "PiB"];
    let mut v = bytes as f64;
    let mut u = 0;
    while v >= 1024.0 && u + 1 < UNITS.len() {
        v /= 1024.0;
        u += 1;
    }
    if u == 0 {
        format!("{bytes} B")
    } else {
        format!("{v:.1} {}", UNITS[u])
    }
}
