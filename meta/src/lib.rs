//! Tessera's metadata service.
//!
//! Meta owns the namespace (inodes and directory entries), versions, the ring
//! of datanode slots, the cluster settings (R, W, Q), the queue of objects
//! waiting for garbage collection and the objects of uploads in progress.
//!
//! - [`types`]: what crosses the wire: [`Inode`], [`ObjectRef`], [`Settings`], [`RingSlot`], [`MetaError`].
//! - [`settings`]: validation of R, W, Q.
//! - [`store`]: the redb file; reads run in `spawn_blocking`, every change goes
//!   through one writer thread that group-commits concurrent changes.
//! - [`change`]: the changes (the write half of the API) and their outcomes;
//!   `apply` applies each inside the write transaction.
//! - [`api`]: the request/response enums, the [`MetaService`] handler and the typed [`MetaClient`].
//! - [`server`]: `run(config, listener, shutdown)` for the `tessera meta` process.

pub mod api;
mod apply;
pub mod change;
pub mod server;
pub mod settings;
pub mod store;
pub mod types;

pub use api::{MetaClient, MetaRequest, MetaResponse, MetaService};
pub use server::{MetaConfig, run};
pub use settings::Settings;
pub use store::MetaStore;
pub use types::*;
