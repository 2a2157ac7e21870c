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

/// Serves the process's Prometheus metrics (`GET /metrics`) on `addr`, if
/// given, until `shutdown`; returns the address it listens on.
pub async fn metrics(
    addr: Option<&str>,
    shutdown: &CancellationToken,
) -> Result<Option<SocketAddr>> {
    let Some(addr) = addr else {
        return Ok(None);
    };
    let (listener, bound) = bind(addr, "metrics").await?;
    tokio::spawn(tessera_rpc::metrics::serve(
        listener,
        shutdown.clone().cancelled_owned(),
    ));
    Ok(Some(bound))
}

/// Where the metrics are, for a ready line: " (metrics on http://…/metrics)".
pub fn metrics_note(at: Option<SocketAddr>) -> String {
    at.map(|a| format!(" (metrics on http://{a}/metrics)"))
        .unwrap_or_default()
}

/// `tessera meta`.
pub async fn meta(
    listen: &str,
    data: PathBuf,
    settings: Option<Settings>,
    node_timeout: Duration,
    secret: Secret,
    metrics: Option<SocketAddr>,
    shutdown: CancellationToken,
) -> Result<()> {
    let config = MetaConfig {
        data,
        settings,
        node_timeout,
    };
    let store = tessera_meta::server::open(&config).await?;
    let (listener, addr) = bind(listen, "meta").await?;
    println!(
        "tessera meta listening on {addr} ({}){}",
        store.settings(),
        metrics_note(metrics)
    );
    tessera_meta::server::serve_store(store, listener, secret, shutdown.cancelled_owned()).await;
    Ok(())
}

/// `tessera datanode`.
pub async fn datanode(
    listen: &str,
    config: DatanodeConfig,
    secret: Secret,
    metrics: Option<SocketAddr>,
    shutdown: CancellationToken,
) -> Result<()> {
    let (listener, addr) = bind(listen, "datanode").await?;
    config.registered_addr(&addr.to_string())?;
    let store = tessera_datanode::server::open(&config).await?;
    drop(store); // opened once to fail early on a bad data directory; run reopens it
    println!(
        "tessera datanode listening on {addr}{}",
        metrics_note(metrics)
    );
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
    access: &Access,
    secret: Secret,
    options: FsOptions,
    metrics: Option<SocketAddr>,
    shutdown: CancellationToken,
) -> Result<()> {
    let security = access.security()?;
    let (listener, addr) = bind(webdav, "webdav").await?;
    access.check_exposure(addr, &security)?;
    let fs = connect_fs(meta, secret, options, Duration::from_secs(30)).await?;
    let workers = fs.start_background(shutdown.clone());
    println!(
        "tessera gateway listening on {}://{addr}/ (WebDAV{}){}",
        access.scheme(),
        access.describe(),
        metrics_note(metrics)
    );
    crate::webdav::serve_secure(
        listener,
        fs,
        crate::webdav::Limits::default(),
        security,
        shutdown.cancelled_owned(),
    )
    .await;
    for w in workers {
        let _ = w.await;
    }
    Ok(())
}

/// Who may use a WebDAV gateway, and over what (the `--users`, `--no-auth`,
/// `--tls-cert` and `--tls-key` flags).
#[derive(Debug, Clone, Default)]
pub struct Access {
    pub users: Option<std::path::PathBuf>,
    pub no_auth: bool,
    pub tls_cert: Option<std::path::PathBuf>,
    pub tls_key: Option<std::path::PathBuf>,
}

impl Access {
    /// Loads the users file and the TLS identity.
    pub fn security(&self) -> Result<crate::webdav::Security> {
        if self.users.is_some() && self.no_auth {
            anyhow::bail!("--users and --no-auth contradict each other; give one");
        }
        let auth = match &self.users {
            Some(path) => Some(std::sync::Arc::new(
                crate::webdav::auth::Auth::load(path).map_err(anyhow::Error::msg)?,
            )),
            None => None,
        };
        let tls = match (&self.tls_cert, &self.tls_key) {
            (Some(c), Some(k)) => {
                Some(crate::webdav::auth::tls_acceptor(c, k).map_err(anyhow::Error::msg)?)
            }
            (None, None) => None,
            _ => anyhow::bail!("--tls-cert and --tls-key go together"),
        };
        Ok(crate::webdav::Security { auth, tls })
    }

    /// Refuses to serve anyone who can reach a non-loopback address
    /// without authentication, unless `--no-auth` says so.
    pub fn check_exposure(
        &self,
        addr: std::net::SocketAddr,
        security: &crate::webdav::Security,
    ) -> Result<()> {
        if !addr.ip().is_loopback() && security.auth.is_none() && !self.no_auth {
            anyhow::bail!(
                "refusing to serve WebDAV on {addr} without authentication: anyone who can \
                 reach it could read and change every file. Give --users FILE (make one \
                 with `tessera user add NAME --users FILE`), or --no-auth if that is what \
                 you want"
            );
        }
        Ok(())
    }

    pub fn scheme(&self) -> &'static str {
        if self.tls_cert.is_some() {
            "https"
        } else {
            "http"
        }
    }

    fn describe(&self) -> String {
        match &self.users {
            Some(u) => format!(", users from {}", u.display()),
            None => String::new(),
        }
    }
}
