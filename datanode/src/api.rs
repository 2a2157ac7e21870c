//! The datanode's messages, handler and typed client.

use std::time::Duration;

use serde::{Deserialize, Serialize};
use tessera_rpc::{Client, Service, Transport};

use crate::DatanodeError;
use crate::block::*;
use crate::store::{BlockStore, StoreStats};
use crate::wire::{GetBatch, PutBatch};

/// Most blocks in one put or get call.
pub const MAX_BLOCKS_PER_CALL: usize = 1 << 16;

#[derive(Debug, Clone, Serialize, Deserialize)]
pub enum DatanodeRequest {
    Put(PutBatch),
    Get(Vec<BlockKey>),
    DeleteObjects(Vec<u64>),
    Stats,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub enum DatanodeReply {
    Put(Vec<PutResult>),
    Get(GetBatch),
    Deleted(u64),
    Stats { node_id: String, stats: StoreStats },
}

pub type DatanodeResponse = Result<DatanodeReply, DatanodeError>;

pub struct DatanodeService {
    store: BlockStore,
}

impl DatanodeService {
    pub fn new(store: BlockStore) -> Self {
        DatanodeService { store }
    }
}

impl Service for DatanodeService {
    type Request = DatanodeRequest;
    type Response = DatanodeResponse;
    const NAME: &'static str = "datanode";

    async fn handle(&self, req: DatanodeRequest) -> DatanodeResponse {
        let too_many = |n: usize| {
            Err(DatanodeError::Invalid(format!(
                "{n} blocks in one call; at most {MAX_BLOCKS_PER_CALL}"
            )))
        };
        Ok(match req {
            DatanodeRequest::Get(k) if k.len() > MAX_BLOCKS_PER_CALL => return too_many(k.len()),
            DatanodeRequest::Put(batch) => {
                let writes = batch.writes().map_err(DatanodeError::Invalid)?;
                if writes.len() > MAX_BLOCKS_PER_CALL {
                    return too_many(writes.len());
                }
                DatanodeReply::Put(self.store.put(writes).await?)
            }
            DatanodeRequest::Get(k) => DatanodeReply::Get(self.store.get_packed(k).await?),
            DatanodeRequest::DeleteObjects(o) => {
                DatanodeReply::Deleted(self.store.delete_objects(o).await?)
            }
            DatanodeRequest::Stats => DatanodeReply::Stats {
                node_id: self.store.node_id().to_string(),
                stats: self.store.stats().await?,
            },
        })
    }
}

/// A failed call to a datanode.
#[derive(Debug, Clone, thiserror::Error)]
pub enum CallError {
    #[error(transparent)]
    Datanode(#[from] DatanodeError),
    #[error(transparent)]
    Rpc(#[from] tessera_rpc::Error),
    #[error("datanode gave an unexpected reply")]
    Unexpected,
}

#[derive(Clone)]
pub struct DatanodeClient {
    rpc: Client<DatanodeService>,
}

/// Default per-call timeout for datanode calls.
pub const DATANODE_TIMEOUT: Duration = Duration::from_secs(10);

impl DatanodeClient {
    pub fn new(transport: &Transport, addr: &str, timeout: Duration) -> Self {
        DatanodeClient {
            rpc: transport.client(addr, timeout),
        }
    }

    pub fn addr(&self) -> &str {
        self.rpc.peer()
    }

    /// The same client with another per-call timeout.
    pub fn with_timeout(&self, timeout: Duration) -> Self {
        DatanodeClient {
            rpc: self.rpc.with_timeout(timeout),
        }
    }

    async fn call(&self, req: &DatanodeRequest) -> Result<DatanodeReply, CallError> {
        Ok(self.rpc.call(req).await??)
    }

    pub async fn put(&self, writes: Vec<BlockWrite>) -> Result<Vec<PutResult>, CallError> {
        let n = writes.len();
        let batch = PutBatch::new(&writes);
        drop(writes);
        match self.call(&DatanodeRequest::Put(batch)).await? {
            DatanodeReply::Put(r) if r.len() == n => Ok(r),
            _ => Err(CallError::Unexpected),
        }
    }

    pub async fn get(&self, keys: Vec<BlockKey>) -> Result<Vec<GetResult>, CallError> {
        let n = keys.len();
        match self.call(&DatanodeRequest::Get(keys)).await? {
            DatanodeReply::Get(r) => match r.results() {
                Ok(results) if results.len() == n => Ok(results),
                _ => Err(CallError::Unexpected),
            },
            _ => Err(CallError::Unexpected),
        }
    }

    pub async fn delete_objects(&self, objects: Vec<u64>) -> Result<u64, CallError> {
        match self.call(&DatanodeRequest::DeleteObjects(objects)).await? {
            DatanodeReply::Deleted(n) => Ok(n),
            _ => Err(CallError::Unexpected),
        }
    }

    pub async fn stats(&self) -> Result<(String, StoreStats), CallError> {
        match self.call(&DatanodeRequest::Stats).await? {
            DatanodeReply::Stats { node_id, stats } => Ok((node_id, stats)),
            _ => Err(CallError::Unexpected),
        }
    }
}
