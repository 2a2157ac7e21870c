//! The datanode's messages, handler and typed client.
//!
//! Headers are postcard; block bytes travel as raw payload after them
//! ([`crate::wire`]).

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use serde::{Deserialize, Serialize};
use tessera_rpc::{Client, Payload, Service, Transport};

use crate::DatanodeError;
use crate::block::*;
use crate::combine::{self, Combiner, SMALL_PUT, Waiting};
use crate::store::{BlockStore, StoreStats};
use crate::wire::{self, PutItem};

/// Most blocks in one put or get call.
pub const MAX_BLOCKS_PER_CALL: usize = 1 << 16;

#[derive(Debug, Clone, Serialize, Deserialize)]
pub enum DatanodeRequest {
    /// Stores the blocks of the put segments in the payload, segment `n`
    /// in replica role `roles[n]`.
    Put {
        roles: Vec<u8>,
    },
    /// Reads blocks `indices` (strictly increasing) of `object` held in
    /// replica role `role`; the reply payload is a get batch.
    Get {
        object: u64,
        role: u8,
        indices: Vec<u64>,
    },
    DeleteObjects(Vec<u64>),
    /// A reader found these blocks' bytes not matching their SHA-256.
    ReportCorrupt {
        object: u64,
        indices: Vec<u64>,
    },
    Stats,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub enum DatanodeReply {
    Put(Vec<PutResult>),
    /// `count` results follow as a get batch.
    Get {
        count: u32,
    },
    Deleted(u64),
    Reported,
    Stats {
        node_id: String,
        stats: StoreStats,
    },
}

pub type DatanodeResponse = Result<DatanodeReply, DatanodeError>;

pub struct DatanodeService {
    store: BlockStore,
}

impl DatanodeService {
    pub fn new(store: BlockStore) -> Self {
        DatanodeService { store }
    }

    /// `received`: the payload crossed a wire, so the blocks of a put are
    /// checked against their checksums before they are stored.
    async fn handle_inner(
        &self,
        req: DatanodeRequest,
        payload: Bytes,
        received: bool,
    ) -> Result<(DatanodeReply, Payload), DatanodeError> {
        let too_many = |n: usize| {
            Err(DatanodeError::Invalid(format!(
                "{n} blocks in one call; at most {MAX_BLOCKS_PER_CALL}"
            )))
        };
        if !payload.is_empty() && !matches!(req, DatanodeRequest::Put { .. }) {
            return Err(DatanodeError::Invalid(
                "only a put carries a payload".into(),
            ));
        }
        Ok(match req {
            DatanodeRequest::Put { roles } => {
                let items = wire::parse_put(&payload, &roles, MAX_BLOCKS_PER_CALL)
                    .map_err(DatanodeError::Invalid)?;
                let stored = if received {
                    self.store.put(items).await?
                } else {
                    self.store.put_unreceived(items).await?
                };
                (DatanodeReply::Put(stored), vec![])
            }
            DatanodeRequest::Get { indices, .. } if indices.len() > MAX_BLOCKS_PER_CALL => {
                return too_many(indices.len());
            }
            DatanodeRequest::Get {
                object,
                role,
                indices,
            } => {
                let count = indices.len() as u32;
                let (batch, _) = self.store.get_packed(object, role, indices).await?;
                (DatanodeReply::Get { count }, batch)
            }
            DatanodeRequest::DeleteObjects(o) if o.len() > MAX_BLOCKS_PER_CALL => {
                return Err(DatanodeError::Invalid(format!(
                    "{} objects in one delete; at most {MAX_BLOCKS_PER_CALL}",
                    o.len()
                )));
            }
            DatanodeRequest::DeleteObjects(o) => (
                DatanodeReply::Deleted(self.store.delete_objects(o).await?),
                vec![],
            ),
            DatanodeRequest::ReportCorrupt { object, indices } => {
                if indices.len() > MAX_BLOCKS_PER_CALL {
                    return too_many(indices.len());
                }
                self.store.report_corrupt(object, &indices);
                (DatanodeReply::Reported, vec![])
            }
            DatanodeRequest::Stats => (
                DatanodeReply::Stats {
                    node_id: self.store.node_id().to_string(),
                    stats: self.store.stats().await?,
                },
                vec![],
            ),
        })
    }
}

impl Service for DatanodeService {
    type Request = DatanodeRequest;
    type Response = DatanodeResponse;
    const NAME: &'static str = "datanode";

    fn call_name(req: &DatanodeRequest) -> &'static str {
        match req {
            DatanodeRequest::Put { .. } => "put",
            DatanodeRequest::Get { .. } => "get",
            DatanodeRequest::DeleteObjects(_) => "delete_objects",
            DatanodeRequest::ReportCorrupt { .. } => "report_corrupt",
            DatanodeRequest::Stats => "stats",
        }
    }

    async fn handle(&self, req: DatanodeRequest, payload: Bytes) -> (DatanodeResponse, Payload) {
        match self.handle_inner(req, payload, true).await {
            Ok((reply, payload)) => (Ok(reply), payload),
            Err(e) => (Err(e), vec![]),
        }
    }

    /// A gateway in this process hands over the very bytes it hashed a
    /// moment ago: hashing them again here would check nothing that could
    /// have changed (hash each hop once; this call has no hop).
    async fn handle_local(
        &self,
        req: DatanodeRequest,
        payload: Bytes,
    ) -> (DatanodeResponse, Payload) {
        match self.handle_inner(req, payload, false).await {
            Ok((reply, payload)) => (Ok(reply), payload),
            Err(e) => (Err(e), vec![]),
        }
    }
}

/// A failed call to a datanode.
#[derive(Debug, Clone, thiserror::Error)]
pub enum CallError {
    #[error(transparent)]
    Datanode(#[from] DatanodeError),
    #[error(transparent)]
    Rpc(#[from] tessera_rpc::Error),
    #[error("datanode gave an unexpected reply: {0}")]
    Unexpected(String),
}

#[derive(Clone)]
pub struct DatanodeClient {
    rpc: Client<DatanodeService>,
    /// Small puts waiting to share a call (see [`crate::combine`]); shared
    /// by the clones of this client.
    combiner: Arc<Combiner>,
}

/// Default per-call timeout for datanode calls.
pub const DATANODE_TIMEOUT: Duration = Duration::from_secs(10);

impl DatanodeClient {
    pub fn new(transport: &Transport, addr: &str, timeout: Duration) -> Self {
        DatanodeClient {
            rpc: transport.client(addr, timeout),
            combiner: Arc::default(),
        }
    }

    pub fn addr(&self) -> &str {
        self.rpc.peer()
    }

    /// The same client with another per-call timeout.
    pub fn with_timeout(&self, timeout: Duration) -> Self {
        DatanodeClient {
            rpc: self.rpc.with_timeout(timeout),
            combiner: self.combiner.clone(),
        }
    }

    async fn call(
        &self,
        req: &DatanodeRequest,
        payload: Payload,
    ) -> Result<(DatanodeReply, Bytes), CallError> {
        let (resp, payload) = self.rpc.call_with(req, payload).await?;
        Ok((resp?, payload))
    }

    /// Stores the blocks of `segments` (see [`wire::put_segment`]), segment
    /// `n` in replica role `roles[n]`; one result per block, in segment order.
    ///
    /// A small put made while other calls are out to this datanode shares
    /// a call with the puts that came meanwhile ([`crate::combine`]).
    pub async fn put(
        &self,
        segments: Payload,
        roles: Vec<u8>,
        blocks: usize,
    ) -> Result<Vec<PutResult>, CallError> {
        let bytes: usize = segments.iter().map(Bytes::len).sum();
        if bytes > SMALL_PUT {
            return self.put_now(segments, roles, blocks).await;
        }
        let (done, answer) = tokio::sync::oneshot::channel();
        let waiting = Waiting {
            segments,
            roles,
            blocks,
            bytes,
            done,
        };
        if let Some(batch) = self.combiner.enqueue(waiting) {
            let client = self.clone();
            // A task of its own: the call must finish (and hand the next
            // batch on) even if the caller that started it gives up.
            tokio::spawn(async move {
                let mut batch = batch;
                loop {
                    let (segments, roles, blocks) = combine::join(&mut batch);
                    let result = client.put_now(segments, roles, blocks).await;
                    combine::answer(batch, result);
                    match client.combiner.next() {
                        Some(next) => batch = next,
                        None => break,
                    }
                }
            });
        }
        answer.await.unwrap_or_else(|_| {
            Err(CallError::Unexpected(
                "the call carrying this put was dropped".into(),
            ))
        })
    }

    /// One put call of its own.
    async fn put_now(
        &self,
        segments: Payload,
        roles: Vec<u8>,
        blocks: usize,
    ) -> Result<Vec<PutResult>, CallError> {
        match self.call(&DatanodeRequest::Put { roles }, segments).await? {
            (DatanodeReply::Put(r), _) if r.len() == blocks => Ok(r),
            (other, _) => Err(CallError::Unexpected(format!(
                "{other:?} to a put of {blocks}"
            ))),
        }
    }

    /// Stores `writes` (any objects, any order); one result per write.
    pub async fn put_blocks(&self, writes: &[BlockWrite]) -> Result<Vec<PutResult>, CallError> {
        let (mut segments, mut roles) = (Vec::new(), Vec::new());
        let mut at = 0;
        while at < writes.len() {
            let (object, role) = (writes[at].key.object, writes[at].role);
            let end = at
                + writes[at..]
                    .iter()
                    .take_while(|w| (w.key.object, w.role) == (object, role))
                    .count();
            let run = &writes[at..end];
            segments.push(wire::put_segment(
                object,
                run.iter().map(|w| (w.key.index, &w.block)),
            ));
            roles.push(role);
            at = end;
        }
        self.put(segments, roles, writes.len()).await
    }

    /// Blocks `indices` (strictly increasing) of `object` held in replica
    /// role `role`, unverified: the caller checks each against its SHA-256.
    pub async fn get(
        &self,
        object: u64,
        role: u8,
        indices: Vec<u64>,
    ) -> Result<Vec<GetResult>, CallError> {
        let n = indices.len();
        let payload = self.get_raw(object, role, indices).await?;
        wire::parse_get(n, payload).map_err(CallError::Unexpected)
    }

    /// Like [`DatanodeClient::get`], the answer left encoded (see
    /// [`wire::found_all`] and [`wire::parse_get`]).
    pub async fn get_raw(
        &self,
        object: u64,
        role: u8,
        indices: Vec<u64>,
    ) -> Result<Bytes, CallError> {
        let n = indices.len();
        let req = DatanodeRequest::Get {
            object,
            role,
            indices,
        };
        match self.call(&req, vec![]).await? {
            (DatanodeReply::Get { count }, payload) if count as usize == n => Ok(payload),
            (other, _) => Err(CallError::Unexpected(format!("{other:?} to a get of {n}"))),
        }
    }

    pub async fn report_corrupt(&self, object: u64, indices: Vec<u64>) -> Result<(), CallError> {
        match self
            .call(&DatanodeRequest::ReportCorrupt { object, indices }, vec![])
            .await?
        {
            (DatanodeReply::Reported, _) => Ok(()),
            (other, _) => Err(CallError::Unexpected(format!("{other:?} to a report"))),
        }
    }

    pub async fn delete_objects(&self, objects: Vec<u64>) -> Result<u64, CallError> {
        match self
            .call(&DatanodeRequest::DeleteObjects(objects), vec![])
            .await?
        {
            (DatanodeReply::Deleted(n), _) => Ok(n),
            (other, _) => Err(CallError::Unexpected(format!("{other:?} to a delete"))),
        }
    }

    pub async fn stats(&self) -> Result<(String, StoreStats), CallError> {
        match self.call(&DatanodeRequest::Stats, vec![]).await? {
            (DatanodeReply::Stats { node_id, stats }, _) => Ok((node_id, stats)),
            (other, _) => Err(CallError::Unexpected(format!("{other:?} to stats"))),
        }
    }
}

/// Items of a put, as the store takes them (for tools that bypass the wire).
pub fn items(
    object: u64,
    role: u8,
    blocks: impl IntoIterator<Item = (u64, Block)>,
) -> Vec<PutItem> {
    blocks
        .into_iter()
        .map(|(index, block)| PutItem {
            object,
            role,
            index,
            block,
        })
        .collect()
}
