//! The `tessera datanode` process: serve blocks, register with meta.

use std::future::Future;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use tessera_meta::MetaClient;
use tessera_rpc::{Secret, Transport};
use tokio::net::TcpListener;

use crate::DatanodeError;
use crate::api::DatanodeService;
use crate::store::BlockStore;

#[derive(Debug, Clone)]
pub struct DatanodeConfig {
    /// Directory holding `blocks.redb`.
    pub data: PathBuf,
    /// Address of the metadata service.
    pub meta: String,
    /// Ring slot to take (replacing its holder), else the next free one.
    pub slot: Option<u32>,
    /// redb page cache, bytes.
    pub cache_bytes: usize,
}

impl DatanodeConfig {
    pub fn new(data: PathBuf, meta: String) -> Self {
        DatanodeConfig {
            data,
            meta,
            slot: None,
            cache_bytes: 256 << 20,
        }
    }
}

pub async fn open(config: &DatanodeConfig) -> Result<BlockStore, DatanodeError> {
    let (data, cache) = (config.data.clone(), config.cache_bytes);
    tessera_rpc::blocking(move || BlockStore::open(&data, cache)).await
}

/// Serves blocks on `listener` at once and registers with meta in the
/// background (retrying until meta answers), until `shutdown` resolves.
pub async fn run(
    config: DatanodeConfig,
    listener: TcpListener,
    secret: Secret,
    shutdown: impl Future<Output = ()>,
) -> Result<(), DatanodeError> {
    let store = open(&config).await?;
    let addr = listener
        .local_addr()
        .map_err(|e| DatanodeError::Storage(e.to_string()))?
        .to_string();
    let transport = Transport::new(secret.clone());
    let meta = MetaClient::new(&transport, &config.meta);
    let node_id = store.node_id().to_string();
    let registration = tokio::spawn(register(meta, node_id.clone(), addr.clone(), config.slot));
    tracing::info!(%node_id, %addr, data = %config.data.display(), "datanode serving");
    tessera_rpc::serve(
        listener,
        secret,
        Arc::new(DatanodeService::new(store)),
        shutdown,
    )
    .await;
    registration.abort();
    Ok(())
}

/// Registers with meta, retrying with capped backoff; returns the slot.
pub async fn register(
    meta: MetaClient,
    node_id: String,
    addr: String,
    slot: Option<u32>,
) -> Option<u32> {
    let mut delay = Duration::from_millis(50);
    loop {
        match meta.register(&node_id, &addr, slot).await {
            Ok(s) => {
                tracing::info!(%node_id, slot = s, "registered with meta");
                return Some(s);
            }
            Err(tessera_meta::api::CallError::Meta(e)) => {
                tracing::error!(error = %e, "meta refused the registration");
                return None;
            }
            Err(e) => tracing::warn!(error = %e, "cannot register with meta yet; retrying"),
        }
        tokio::time::sleep(delay).await;
        delay = (delay * 2).min(Duration::from_secs(2));
    }
}
