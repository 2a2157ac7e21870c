//! The `tessera meta` process.

use std::future::Future;
use std::path::PathBuf;

use tessera_rpc::Secret;
use tokio::net::TcpListener;

use crate::api::service;
use crate::settings::Settings;
use crate::store::MetaStore;
use crate::types::MetaError;

#[derive(Debug, Clone)]
pub struct MetaConfig {
    /// Directory holding `meta.redb`.
    pub data: PathBuf,
    /// Settings for a new cluster; an existing cluster refuses others.
    pub settings: Option<Settings>,
    /// How long a datanode may stay silent before it is `down`.
    pub node_timeout: std::time::Duration,
}

/// Opens the store (creating the data directory) without serving it.
pub async fn open(config: &MetaConfig) -> Result<MetaStore, MetaError> {
    let config = config.clone();
    tessera_rpc::blocking(move || {
        std::fs::create_dir_all(&config.data)
            .map_err(|e| MetaError::Storage(format!("{}: {e}", config.data.display())))?;
        let store = MetaStore::open(&config.data.join("meta.redb"), config.settings)?;
        store.health().set_timeout(config.node_timeout);
        Ok(store)
    })
    .await
}

/// Serves meta on `listener` until `shutdown` resolves.
pub async fn run(
    config: MetaConfig,
    listener: TcpListener,
    secret: Secret,
    shutdown: impl Future<Output = ()>,
) -> Result<(), MetaError> {
    let store = open(&config).await?;
    serve_store(store, listener, secret, shutdown).await;
    Ok(())
}

/// Serves an already opened store.
pub async fn serve_store(
    store: MetaStore,
    listener: TcpListener,
    secret: Secret,
    shutdown: impl Future<Output = ()>,
) {
    tracing::info!(settings = %store.settings(), addr = ?listener.local_addr().ok(), "meta serving");
    let last = store.clone();
    let sweeper = tokio::spawn(sweep_health(store.clone()));
    let metrics: std::sync::Arc<dyn tessera_rpc::metrics::Source> =
        std::sync::Arc::new(crate::metrics::MetaMetrics {
            store: store.clone(),
        });
    tessera_rpc::metrics::register(&metrics);
    tessera_rpc::serve(listener, secret, service(store), shutdown).await;
    drop(metrics);
    sweeper.abort();
    // Lazy changes still waiting become durable before meta goes.
    if let Err(e) = last.apply(crate::change::Change::Sync).await {
        tracing::error!(error = %e, "meta could not make its last changes durable");
    }
}

/// Logs datanodes going down and coming back (see [`crate::health`]).
pub async fn sweep_health(store: MetaStore) {
    let mut tick = tokio::time::interval(std::time::Duration::from_millis(500));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        if let Ok(ring) = store.ring().await {
            store.health().sweep(&ring);
        }
    }
}
