//! The long-running processes: bind, announce, serve until shutdown.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context, Result};
use tessera_datanode::DatanodeConfig;
use tessera_gateway::{Fs, FsOptions};
use tessera_meta::{MetaConfig, Settings};
use tessera_rpc::{Secret, Transport};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

pub async fn bind(addr: &str, what: &str) -> Result<(TcpListener, SocketAddr)> {
    let l = TcpListener::bind(addr)
        .await
        .with_context(|| format!("{what}: cannot listen on {addr}"))?;
    let a = l.local_addr()?;
    Ok((l, a))
}

/// `tessera meta`.
pub async fn meta(
    listen: &str,
    data: PathBuf,
    settings: Option<Settings>,
    secret: Secret,
    shutdown: CancellationToken,
) -> Result<()> {
    let store = tessera_meta::server::open(&MetaConfig { data, settings }).await?;
    let (listener, addr) = bind(listen, "meta").await?;
    println!("tessera meta listening on {addr} ({})", store.settings());
    tessera_meta::server::serve_store(store, listener, secret, shutdown.cancelled_owned()).await;
    Ok(())
}

/// `tessera datanode`.
pub async fn datanode(
    listen: &str,
    config: DatanodeConfig,
    secret: Secret,
    shutdown: CancellationToken,
) -> Result<()> {
    let (listener, addr) = bind(listen, "datanode").await?;
    config.registered_addr(&addr.to_string())?;
    let store = tessera_datanode::server::open(&config).await?;
    drop(store); // opened once to fail early on a bad data directory; run reopens it
    println!("tessera datanode listening on {addr}");
    tessera_datanode::run(config, listener, secret, shutdown.cancelled_owned()).await?;
    Ok(())
}

/// Connects a gateway engine to meta, retrying while meta is not up yet.
pub async fn connect_fs(
    meta: &str,
    secret: Secret,
    options: FsOptions,
    patience: Duration,
) -> Result<Fs> {
    let deadline = tokio::time::Instant::now() + patience;
    let transport = Transport::new(secret);
    loop {
        match Fs::connect(meta, transport.clone(), options.clone()).await {
            Ok(fs) => return Ok(fs),
            Err(e) if tokio::time::Instant::now() < deadline => {
                tracing::info!(error = %e, "waiting for meta");
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
            Err(e) => return Err(e).with_context(|| format!("cannot reach meta at {meta}")),
        }
    }
}

/// `tessera gateway`.
pub async fn gateway(
    meta: &str,
    webdav: &str,
    secret: Secret,
    options: FsOptions,
    shutdown: CancellationToken,
) -> Result<()> {
    let fs = connect_fs(meta, secret, options, Duration::from_secs(30)).await?;
    let workers = fs.start_background(shutdown.clone());
    let (listener, addr) = bind(webdav, "webdav").await?;
    println!("tessera gateway listening on http://{addr}/ (WebDAV)");
    crate::webdav::serve(listener, fs, shutdown.cancelled_owned()).await;
    for w in workers {
        let _ = w.await;
    }
    Ok(())
}
