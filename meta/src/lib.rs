//! Tessera's metadata service.
//!
//! Meta owns the namespace (inodes and directory entries), versions, the ring
//! of datanode slots, the cluster settings (R, W, Q), the queue of objects
//! waiting for garbage collection and the objects of uploads in progress.
//!
//! - [`types`]: what crosses the wire: [`Inode`], [`ObjectRef`], [`Settings`], [`RingSlot`], [`MetaError`].
//! - [`settings`]: validation of R, W, Q.
//! - `schema`: the redb tables, their format versions, meta's own records and how records are encoded.
//! - [`store`]: [`MetaStore`]: opening the redb file, and the writer thread that group-commits concurrent changes.
//! - `query`: the reads of [`MetaStore`], each in one read transaction inside `spawn_blocking`.
//! - [`change`]: the changes (the write half of the API) and their outcomes.
//! - `apply`: applies each change inside the write transaction, dispatching by concern to:
//!   - `apply::namespace`: create, unlink, rmdir, rename and setattr;
//!   - `apply::content`: leases of object ids, publish, swap and abandon, and write leases;
//!   - `apply::queues`: reaping expired upload leases into the GC queue, and emptying it;
//!   - `apply::ring`: datanodes registering in the ring.
//! - [`health`]: datanodes' heartbeats and states, gateways' blocked writes (in memory).
//! - `metrics`: node states, queue lengths and namespace counts on the Prometheus endpoint.
//! - [`api`]: the request/response enums, the [`MetaService`] handler and the typed [`MetaClient`].
//! - [`server`]: `run(config, listener, shutdown)` for the `tessera meta` process.

pub mod api;
mod apply;
pub mod change;
mod dav;
pub mod health;
mod metrics;
mod query;
mod schema;
pub mod server;
pub mod settings;
pub mod store;
pub mod types;

pub use api::{MetaClient, MetaRequest, MetaResponse, MetaService};
pub use health::{
    BeatReply, ClusterHealth, HealReport, NodeHealth, NodeReport, NodeState, Progress, ScrubCounts,
};
pub use server::{MetaConfig, run};
pub use settings::Settings;
pub use store::MetaStore;
pub use types::*;
