//! `tessera up`: meta, N datanodes and a WebDAV gateway in one process, each
//! datanode with its own redb file and loopback port.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use tessera_datanode::DatanodeConfig;
use tessera_gateway::FsOptions;
use tessera_meta::{MetaConfig, MetaStore, Settings};
use tessera_rpc::Secret;
use tokio_util::sync::CancellationToken;

use crate::servers::{bind, connect_fs};

#[derive(Debug, Clone)]
pub struct UpConfig {
    pub data: PathBuf,
    pub datanodes: u32,
    /// Settings for a new cluster (`None`: the stored ones, else defaults).
    pub settings: Option<Settings>,
    pub webdav: String,
    /// Authentication and TLS of the WebDAV gateway.
    pub access: crate::servers::Access,
    pub options: FsOptions,
    /// redb page cache of each datanode.
    pub datanode_cache_bytes: usize,
    /// Also FUSE-mount the file system here.
    pub mount: Option<PathBuf>,
    /// Serve Prometheus metrics of every service here.
    pub metrics: Option<String>,
}

impl Default for UpConfig {
    fn default() -> Self {
        UpConfig {
            data: PathBuf::from("tessera-data"),
            datanodes: 3,
            settings: None,
            webdav: "127.0.0.1:8080".into(),
            access: Default::default(),
            options: FsOptions::default(),
            datanode_cache_bytes: 128 << 20,
            mount: None,
            metrics: None,
        }
    }
}

/// Checks the request against what the data directory already holds.
fn check_cluster(store: &MetaStore, slots: usize, datanodes: u32) -> Result<()> {
    let s = store.settings();
    s.validate_for(datanodes).map_err(anyhow::Error::msg)?;
    if slots > datanodes as usize {
        bail!("this cluster has {slots} datanodes; start it with --datanodes {slots} (or more)");
    }
    Ok(())
}

/// Runs everything until `shutdown` is cancelled. `ready` receives the
/// WebDAV address once it serves.
pub async fn run(
    config: UpConfig,
    shutdown: CancellationToken,
    ready: Option<tokio::sync::oneshot::Sender<std::net::SocketAddr>>,
) -> Result<()> {
    let security = config.access.security()?;
    if let Ok(addr) = config.webdav.parse::<std::net::SocketAddr>() {
        config.access.check_exposure(addr, &security)?;
    }
    let metrics = crate::servers::metrics(config.metrics.as_deref(), &shutdown).await?;
    let data = config.data.clone();
    tokio::fs::create_dir_all(&data)
        .await
        .with_context(|| format!("cannot create {}", data.display()))?;
    let secret_path = data.join("secret");
    let secret = tessera_rpc::blocking(move || Secret::load_or_create(&secret_path)).await?;
    // Meta, datanodes, gateway and mount share this process: their calls
    // to each other skip the sockets.
    tessera_rpc::local::enable();

    // Meta.
    let meta_config = MetaConfig {
        data: data.join("meta"),
        settings: config.settings,
        node_timeout: tessera_meta::health::DEFAULT_NODE_TIMEOUT,
    };
    let store = tessera_meta::server::open(&meta_config).await?;
    let slots = store.ring().await?.slots.len();
    check_cluster(&store, slots, config.datanodes)?;
    let settings = store.settings();
    let (meta_listener, meta_addr) = bind("127.0.0.1:0", "meta").await?;
    let services = CancellationToken::new();
    let mut tasks = Vec::new();
    {
        let (secret, stop) = (secret.clone(), services.clone());
        tasks.push(tokio::spawn(async move {
            tessera_meta::server::serve_store(store, meta_listener, secret, stop.cancelled_owned())
                .await;
            Ok(())
        }));
    }

    // Datanodes: node i always takes slot i, so they join in order.
    let fs = connect_fs(
        &meta_addr.to_string(),
        secret.clone(),
        config.options.clone(),
        Duration::from_secs(10),
    )
    .await?;
    for i in 0..config.datanodes {
        let mut dn = DatanodeConfig::new(data.join(format!("datanode-{i}")), meta_addr.to_string());
        dn.slot = Some(i);
        dn.cache_bytes = config.datanode_cache_bytes;
        let (listener, addr) = bind("127.0.0.1:0", "datanode").await?;
        let (secret, stop) = (secret.clone(), services.clone());
        tasks.push(tokio::spawn(async move {
            tessera_datanode::run(dn, listener, secret, stop.cancelled_owned())
                .await
                .map_err(anyhow::Error::from)
        }));
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        loop {
            let ring = fs.meta().ring().await?;
            if ring
                .slots
                .iter()
                .any(|s| s.slot == i && s.addr == addr.to_string())
            {
                break;
            }
            if tokio::time::Instant::now() > deadline {
                bail!("datanode {i} did not register with meta in time");
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }
    fs.refresh_ring().await;
    let workers = fs.start_background(services.clone());
    let (listener, addr) = bind(&config.webdav, "webdav").await?;
    config.access.check_exposure(addr, &security)?;
    println!(
        "tessera up: WebDAV on {}://{addr}/ — meta on {meta_addr}, {} datanodes ({settings}), data in {}",
        config.access.scheme(),
        config.datanodes,
        data.display()
    );
    println!(
        "tessera up: cluster status with `tessera status --meta {meta_addr} --secret-file {}`",
        data.join("secret").display()
    );
    if let Some(m) = metrics {
        println!("tessera up: Prometheus metrics on http://{m}/metrics");
    }
    // The mount is a client of its own (its own engine and name in meta),
    // so it hears of changes made over WebDAV like any other client.
    let mut mounted = None;
    if let Some(dir) = &config.mount {
        let mfs = connect_fs(
            &meta_addr.to_string(),
            secret.clone(),
            FsOptions {
                lazy_names: true,
                ..config.options.clone()
            },
            Duration::from_secs(10),
        )
        .await?;
        let m = crate::fuse::mount(mfs, dir).await?;
        println!("tessera up: FUSE mount on {}", m.mountpoint().display());
        mounted = Some(m);
    }
    if let Some(r) = ready {
        let _ = r.send(addr);
    }
    crate::webdav::serve_secure(
        listener,
        fs,
        crate::webdav::Limits::default(),
        security,
        shutdown.cancelled_owned(),
    )
    .await;
    if let Some(m) = mounted {
        m.unmount().await?;
    }

    // Shut down in order: gateway done; stop workers and services.
    services.cancel();
    for w in workers {
        let _ = w.await;
    }
    for t in tasks {
        t.await.context("a service task panicked")??;
    }
    println!("tessera up: stopped cleanly");
    Ok(())
}
