//! Tessera's front ends and processes.
//!
//! - [`webdav`]: dav-server over the gateway's `Fs`, served by hyper.
//! - [`servers`]: the long-running commands (`meta`, `datanode`, `gateway`):
//!   bind, print one ready line naming the address, serve until shutdown.
//! - [`fuse`]: fuser over the gateway's `Fs` (`tessera mount`).
//! - [`up`]: meta, N datanodes and a WebDAV gateway in one process.
//!
//! `main.rs` only parses the command line and calls these.

pub mod fuse;
pub mod servers;
pub mod status;
pub mod up;
pub mod webdav;
