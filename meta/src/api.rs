//! Meta's messages, its handler and its typed client.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use serde::{Deserialize, Serialize};
use tessera_rpc::{Client, Payload, Service, Transport};

use crate::store::{Change, MetaStore, Outcome};
use crate::types::*;

#[derive(Debug, Clone, Serialize, Deserialize)]
pub enum MetaRequest {
    /// Walks a path from the root in one round trip.
    Resolve(Vec<String>),
    Lookup {
        parent: u64,
        name: String,
    },
    GetAttr(u64),
    ReadDir(u64),
    Ring,
    GcList {
        limit: u32,
    },
    Counts,
    Change(Change),
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub enum MetaReply {
    Inode(Inode),
    Entries(Vec<(String, Inode)>),
    Ring(Ring),
    Gc(Vec<GcEntry>),
    Counts { inodes: u64, gc: u64, pending: u64 },
    Outcome(Outcome),
}

pub type MetaResponse = Result<MetaReply, MetaError>;

/// The handler: plain async calls on the store, testable without sockets.
pub struct MetaService {
    store: MetaStore,
}

impl MetaService {
    pub fn new(store: MetaStore) -> Self {
        MetaService { store }
    }
}

impl Service for MetaService {
    type Request = MetaRequest;
    type Response = MetaResponse;
    const NAME: &'static str = "meta";

    async fn handle(&self, req: MetaRequest, payload: Bytes) -> (MetaResponse, Payload) {
        if !payload.is_empty() {
            return (
                Err(MetaError::Invalid("meta calls carry no payload".into())),
                vec![],
            );
        }
        (self.handle_request(req).await, vec![])
    }
}

impl MetaService {
    /// Answers one request (no sockets involved).
    pub async fn handle_request(&self, req: MetaRequest) -> MetaResponse {
        let s = &self.store;
        Ok(match req {
            MetaRequest::Resolve(path) => MetaReply::Inode(s.resolve(path).await?),
            MetaRequest::Lookup { parent, name } => MetaReply::Inode(s.lookup(parent, name).await?),
            MetaRequest::GetAttr(ino) => MetaReply::Inode(s.getattr(ino).await?),
            MetaRequest::ReadDir(ino) => MetaReply::Entries(s.readdir(ino).await?),
            MetaRequest::Ring => MetaReply::Ring(s.ring().await?),
            MetaRequest::GcList { limit } => {
                MetaReply::Gc(s.gc_list(limit.min(10_000) as usize).await?)
            }
            MetaRequest::Counts => {
                let (inodes, gc, pending) = s.counts().await?;
                MetaReply::Counts {
                    inodes,
                    gc,
                    pending,
                }
            }
            MetaRequest::Change(c) => MetaReply::Outcome(s.apply(c).await?),
        })
    }
}

/// A failed call to meta: either meta answered with an error, or it could
/// not be reached.
#[derive(Debug, Clone, thiserror::Error)]
pub enum CallError {
    #[error(transparent)]
    Meta(#[from] MetaError),
    #[error("metadata service unreachable: {0}")]
    Rpc(#[from] tessera_rpc::Error),
    #[error("metadata service gave an unexpected reply to {0}")]
    Unexpected(&'static str),
}

/// The typed client gateways and datanodes use.
#[derive(Clone)]
pub struct MetaClient {
    rpc: Client<MetaService>,
}

/// Default per-call timeout for meta calls.
pub const META_TIMEOUT: Duration = Duration::from_secs(10);

macro_rules! expect {
    ($reply:expr, $pat:pat => $out:expr, $what:literal) => {
        match $reply {
            $pat => Ok($out),
            _ => Err(CallError::Unexpected($what)),
        }
    };
}

impl MetaClient {
    pub fn new(transport: &Transport, addr: &str) -> Self {
        MetaClient {
            rpc: transport.client(addr, META_TIMEOUT),
        }
    }

    pub fn addr(&self) -> &str {
        self.rpc.peer()
    }

    pub async fn call(&self, req: MetaRequest) -> Result<MetaReply, CallError> {
        Ok(self.rpc.call(&req).await??)
    }

    pub async fn resolve(&self, components: Vec<String>) -> Result<Inode, CallError> {
        expect!(self.call(MetaRequest::Resolve(components)).await?, MetaReply::Inode(i) => i, "resolve")
    }

    pub async fn lookup(&self, parent: u64, name: &str) -> Result<Inode, CallError> {
        let req = MetaRequest::Lookup {
            parent,
            name: name.to_string(),
        };
        expect!(self.call(req).await?, MetaReply::Inode(i) => i, "lookup")
    }

    pub async fn getattr(&self, ino: u64) -> Result<Inode, CallError> {
        expect!(self.call(MetaRequest::GetAttr(ino)).await?, MetaReply::Inode(i) => i, "getattr")
    }

    pub async fn readdir(&self, ino: u64) -> Result<Vec<(String, Inode)>, CallError> {
        expect!(self.call(MetaRequest::ReadDir(ino)).await?, MetaReply::Entries(e) => e, "readdir")
    }

    pub async fn ring(&self) -> Result<Ring, CallError> {
        expect!(self.call(MetaRequest::Ring).await?, MetaReply::Ring(r) => r, "ring")
    }

    pub async fn gc_list(&self, limit: u32) -> Result<Vec<GcEntry>, CallError> {
        expect!(self.call(MetaRequest::GcList { limit }).await?, MetaReply::Gc(g) => g, "gc list")
    }

    pub async fn counts(&self) -> Result<(u64, u64, u64), CallError> {
        expect!(self.call(MetaRequest::Counts).await?, MetaReply::Counts { inodes, gc, pending } => (inodes, gc, pending), "counts")
    }

    pub async fn change(&self, change: Change) -> Result<Outcome, CallError> {
        expect!(self.call(MetaRequest::Change(change)).await?, MetaReply::Outcome(o) => o, "change")
    }

    /// Registers datanode `node_id` at `addr` (taking `slot`, or the next
    /// free one); returns its slot.
    pub async fn register(
        &self,
        node_id: &str,
        addr: &str,
        slot: Option<u32>,
    ) -> Result<u32, CallError> {
        let change = Change::Register {
            node_id: node_id.to_string(),
            addr: addr.to_string(),
            slot,
        };
        expect!(self.change(change).await?, Outcome::Slot(s) => s, "register")
    }

    /// A change that yields an inode.
    pub async fn change_inode(&self, change: Change) -> Result<Inode, CallError> {
        expect!(self.change(change).await?, Outcome::Inode(i) => i, "change (inode)")
    }
}

/// The service behind an `Arc`, as `serve` wants it.
pub fn service(store: MetaStore) -> Arc<MetaService> {
    Arc::new(MetaService::new(store))
}
