//! Tessera's datanode: 512-byte blocks in one redb file.
//!
//! A block record is `(object_id, block_index) -> (generation, sha256, bytes)`.
//! Puts are verified (a damaged transfer is refused) and group-committed with
//! `Durability::Immediate`: a put is acknowledged only after its transaction
//! is on disk. Gets recompute the SHA-256 and report a bad record as
//! `Corrupt`, never returning its bytes. A record is never replaced by one of
//! a lower generation.
//!
//! - [`block`]: block keys, records and their checksums (pure).
//! - [`store`]: the redb block store and its group-commit thread.
//! - [`wire`]: packed wire encodings of block batches.
//! - [`api`]: request/response enums, [`DatanodeService`], the typed [`DatanodeClient`].
//! - [`server`]: `run(config, listener, secret, shutdown)` for `tessera datanode`.

pub mod api;
pub mod block;
pub mod server;
pub mod store;
pub mod wire;

pub use api::{DatanodeClient, DatanodeRequest, DatanodeService};
pub use block::{BLOCK_SIZE, Block, BlockKey, BlockWrite, GetResult, PutResult};
pub use server::{DatanodeConfig, run};
pub use store::{BlockStore, StoreStats};

/// Errors a datanode reports as a whole (per-block outcomes travel in replies).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize, thiserror::Error)]
pub enum DatanodeError {
    #[error("datanode storage failed: {0}")]
    Storage(String),
    #[error("invalid request: {0}")]
    Invalid(String),
}
