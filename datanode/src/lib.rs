//! Tessera's datanode: 512-byte blocks in one redb file.
//!
//! A block record is `(generation, sha256, bytes)` for block `index` of an
//! object; a node's records of one object within a group of
//! [`extent::GROUP_BLOCKS`] blocks live together in one extent row keyed
//! `(object, group)`. Puts are verified (a damaged transfer is refused) and
//! group-committed with `Durability::Immediate`: a put is acknowledged only
//! after its transaction is on disk. A record is never replaced by one of a
//! lower generation.
//!
//! One checksum pass per hop: the datanode hashes every block it is given
//! (the transfer), but not the blocks it reads out: the reader verifies
//! them end to end and reports a mismatch back (`ReportCorrupt`, counted in
//! [`StoreStats::corrupt_reported`]); data at rest is covered by scrub. A
//! damaged row entry is caught by its own check and answered as `Corrupt`
//! for exactly that block.
//!
//! - [`block`]: block keys, records and their checksums (pure).
//! - [`extent`]: the extent row codec (pure).
//! - [`store`]: the redb block store and its group-commit thread.
//! - [`wire`]: block payloads on the wire (raw bytes, no serializer).
//! - [`api`]: request/response enums, [`DatanodeService`], the typed [`DatanodeClient`].
//! - [`heal`]: the repair queue, rebuild and scrub, each node for its own slot.
//! - [`metrics`]: what the node shows on its Prometheus endpoint.
//! - [`server`]: `run(config, listener, secret, shutdown)` for `tessera datanode`.

pub mod api;
pub mod block;
mod combine;
pub mod extent;
mod file;
pub mod heal;
pub mod metrics;
pub mod server;
pub mod sha;
pub mod store;
pub mod wire;

pub use api::{DatanodeClient, DatanodeRequest, DatanodeService};
pub use block::{BLOCK_SIZE, Block, BlockKey, BlockWrite, GetResult, PutResult};
pub use server::{DatanodeConfig, run};
pub use store::{BlockStore, StoreOptions, StoreStats};

/// Errors a datanode reports as a whole (per-block outcomes travel in replies).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize, thiserror::Error)]
pub enum DatanodeError {
    #[error("datanode storage failed: {0}")]
    Storage(String),
    #[error("invalid request: {0}")]
    Invalid(String),
    /// No room for the put: the node keeps its free-space reserve.
    #[error("datanode full: {0}")]
    Full(String),
}
