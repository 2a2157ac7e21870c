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
use crate::heal::{HealOptions, Healer, REBUILDING, Wake};
use crate::store::{BlockStore, StoreOptions};

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
    /// The address peers and gateways reach this node at, registered with
    /// meta. `None`: the address it listens on, which must then be one
    /// others can reach (not `0.0.0.0`).
    pub advertise: Option<String>,
    /// Free space to keep, bytes (`None`: see [`StoreOptions::reserve_bytes`]).
    pub reserve_bytes: Option<u64>,
    /// How long tombstones of deleted objects are kept.
    pub tombstone_ttl: Duration,
    /// Scrub rate and pauses.
    pub heal: HealOptions,
}

impl DatanodeConfig {
    pub fn new(data: PathBuf, meta: String) -> Self {
        DatanodeConfig {
            data,
            meta,
            slot: None,
            cache_bytes: 256 << 20,
            advertise: None,
            reserve_bytes: None,
            tombstone_ttl: StoreOptions::default().tombstone_ttl,
            heal: HealOptions::default(),
        }
    }

    /// The address to register: `--advertise`, else the listening address
    /// if others can reach it.
    pub fn registered_addr(&self, listening: &str) -> Result<String, DatanodeError> {
        if let Some(a) = &self.advertise {
            let ok = match a.parse::<std::net::SocketAddr>() {
                Ok(s) => !s.ip().is_unspecified() && s.port() != 0,
                // A host name and a port.
                Err(_) => a.rsplit_once(':').is_some_and(|(h, p)| {
                    !h.is_empty()
                        && h.chars()
                            .all(|c| c.is_ascii_alphanumeric() || ".-".contains(c))
                        && p.parse::<u16>().is_ok_and(|p| p != 0)
                }),
            };
            if !ok {
                return Err(DatanodeError::Invalid(format!(
                    "--advertise {a:?} is not an address peers can reach (HOST:PORT, not 0.0.0.0)"
                )));
            }
            return Ok(a.clone());
        }
        match listening.parse::<std::net::SocketAddr>() {
            Ok(s) if s.ip().is_unspecified() => Err(DatanodeError::Invalid(format!(
                "listening on {listening}, an address peers cannot reach: \
                 give the address they should use with --advertise HOST:PORT"
            ))),
            _ => Ok(listening.to_string()),
        }
    }
}

pub async fn open(config: &DatanodeConfig) -> Result<BlockStore, DatanodeError> {
    let data = config.data.clone();
    let options = StoreOptions {
        cache_bytes: config.cache_bytes,
        reserve_bytes: config.reserve_bytes,
        tombstone_ttl: config.tombstone_ttl,
    };
    tessera_rpc::blocking(move || BlockStore::open_with(&data, options)).await
}

/// Serves blocks on `listener` at once and registers with meta in the
/// background (retrying until meta answers), until `shutdown` resolves.
pub async fn run(
    config: DatanodeConfig,
    listener: TcpListener,
    secret: Secret,
    shutdown: impl Future<Output = ()>,
) -> Result<(), DatanodeError> {
    let listening = listener
        .local_addr()
        .map_err(|e| DatanodeError::Storage(e.to_string()))?
        .to_string();
    let addr = config.registered_addr(&listening)?;
    let store = open(&config).await?;
    let transport = Transport::new(secret.clone());
    let meta = MetaClient::new(&transport, &config.meta);
    let node_id = store.node_id().to_string();
    let (stop_reports, stopped) = tokio::sync::watch::channel(false);
    let heal = Arc::new(std::sync::Mutex::new(tessera_meta::HealReport::default()));
    let slot = Arc::new(std::sync::OnceLock::new());
    let metrics: Arc<dyn tessera_rpc::metrics::Source> = Arc::new(crate::metrics::NodeMetrics {
        store: store.clone(),
        heal: heal.clone(),
        slot: slot.clone(),
    });
    tessera_rpc::metrics::register(&metrics);
    let reports = tokio::spawn(report_to_meta(
        Reporter {
            meta,
            transport: transport.clone(),
            store: store.clone(),
            addr: addr.clone(),
            wanted: config.slot,
            heal: config.heal,
            report: heal,
            slot,
        },
        stopped,
    ));
    tracing::info!(%node_id, %addr, data = %config.data.display(), "datanode serving");
    tessera_rpc::serve(
        listener,
        secret,
        Arc::new(DatanodeService::new(store)),
        shutdown,
    )
    .await;
    // The store is closed when this returns: wait for the reporter to let
    // go of it (it stops between heartbeats).
    let _ = stop_reports.send(true);
    let _ = reports.await;
    drop(metrics);
    Ok(())
}

/// What the reporter needs: meta, the node, and what it shares with the
/// node's metrics.
struct Reporter {
    meta: MetaClient,
    transport: Transport,
    store: BlockStore,
    addr: String,
    /// The slot asked for (`--slot`).
    wanted: Option<u32>,
    heal: HealOptions,
    /// The node's healing, as heartbeats and metrics show it.
    report: Arc<std::sync::Mutex<tessera_meta::HealReport>>,
    /// Set to the slot once registered.
    slot: Arc<std::sync::OnceLock<u32>>,
}

/// The note of the slot a node registered in.
const SLOT: &str = "slot";

/// Registers with meta, then sends a heartbeat with the node's counts every
/// [`HEARTBEAT_INTERVAL`](tessera_meta::health::HEARTBEAT_INTERVAL) for as
/// long as the node runs, until `stop` turns true. If meta forgot the
/// registration (another node took the slot, or meta's ring was replaced)
/// it says so in the log once per minute and keeps trying.
async fn report_to_meta(reporter: Reporter, mut stop: tokio::sync::watch::Receiver<bool>) {
    let Reporter {
        meta,
        transport,
        store,
        addr,
        wanted,
        heal,
        report,
        slot: noted,
    } = reporter;
    let node_id = store.node_id().to_string();
    let prepared = tokio::select! {
        r = prepare_rebuild(&meta, &store, wanted) => r,
        _ = stop.wait_for(|&s| s) => return,
    };
    if prepared {
        // From the first heartbeat on, meta shows the node rebuilding.
        report.lock().unwrap_or_else(|e| e.into_inner()).rebuild =
            Some(tessera_meta::Progress::default());
    }
    let registered = tokio::select! {
        s = register(meta.clone(), node_id.clone(), addr, wanted) => s,
        _ = stop.wait_for(|&s| s) => None,
    };
    let Some(slot) = registered else {
        return;
    };
    let _ = noted.set(slot);
    if let Err(e) = store.set_note(SLOT, Some(slot.to_string())).await {
        tracing::warn!(error = %e, "cannot note the node's slot");
    }
    let (wake, woken) = tokio::sync::watch::channel(Wake::default());
    let healer = Arc::new(Healer::new(
        store.clone(),
        meta.clone(),
        transport,
        slot,
        heal,
        report.clone(),
    ));
    let healing = tokio::spawn(healer.run(woken, stop.clone()));
    beat_until_stopped(&meta, &store, &node_id, slot, &report, &wake, &mut stop).await;
    // The healer holds the store too: the caller closes it once we return.
    let _ = healing.await;
}

/// Whether this node rebuilds: it was rebuilding when it stopped, or its
/// store never registered and it takes a slot another node held (that
/// node lost its storage). The note is written before the node registers, so a node
/// that stops halfway resumes.
async fn prepare_rebuild(meta: &MetaClient, store: &BlockStore, wanted: Option<u32>) -> bool {
    match store.note(REBUILDING).await {
        Ok(Some(_)) => return true,
        Ok(None) => {}
        Err(e) => {
            tracing::error!(error = %e, "cannot read the node's notes");
            return false;
        }
    }
    // A store that never registered holds nothing the ring counts on.
    let registered_before = match store.note(SLOT).await {
        Ok(n) => n.is_some(),
        Err(e) => {
            tracing::error!(error = %e, "cannot read the node's notes");
            return false;
        }
    };
    let Some(slot) = wanted.filter(|_| !registered_before) else {
        return false;
    };
    let mut delay = Duration::from_millis(50);
    let ring = loop {
        match meta.ring().await {
            Ok(r) => break r,
            Err(e) => tracing::warn!(error = %e, "cannot read the ring yet; retrying"),
        }
        tokio::time::sleep(delay).await;
        delay = (delay * 2).min(Duration::from_secs(2));
    };
    let held = ring
        .slots
        .iter()
        .any(|s| s.slot == slot && s.node_id != store.node_id());
    if !held {
        return false;
    }
    match store.set_note(REBUILDING, Some(slot.to_string())).await {
        Ok(()) => true,
        Err(e) => {
            tracing::error!(error = %e, "cannot note that the node is rebuilding");
            false
        }
    }
}

async fn beat_until_stopped(
    meta: &MetaClient,
    store: &BlockStore,
    node_id: &str,
    slot: u32,
    heal: &std::sync::Mutex<tessera_meta::HealReport>,
    wake: &tokio::sync::watch::Sender<Wake>,
    stop: &mut tokio::sync::watch::Receiver<bool>,
) {
    let mut tick = tokio::time::interval(tessera_meta::health::HEARTBEAT_INTERVAL);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut last_complaint: Option<tokio::time::Instant> = None;
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = stop.wait_for(|&s| s) => return,
        }
        // Not cancelled midway: the counts are read off the runtime, with
        // the database held until they are.
        let report = match store.stats().await {
            Ok(s) => tessera_meta::NodeReport {
                blocks: s.blocks,
                bytes: s.bytes,
                capacity: s.capacity,
                available: s.available,
                heal: *heal.lock().unwrap_or_else(|e| e.into_inner()),
            },
            Err(e) => {
                tracing::warn!(error = %e, "cannot read the node's counts for its heartbeat");
                tessera_meta::NodeReport::default()
            }
        };
        let beat = tokio::select! {
            r = meta.node_beat(slot, node_id, report) => r,
            _ = stop.wait_for(|&s| s) => return,
        };
        match beat {
            Ok(reply) => {
                let now = Wake {
                    repairs: reply.repairs,
                    scrub: reply.scrub,
                };
                wake.send_if_modified(|w| {
                    let changed = *w != now;
                    *w = now;
                    changed
                });
            }
            Err(e) if last_complaint.is_none_or(|t| t.elapsed() >= Duration::from_secs(60)) => {
                tracing::warn!(error = %e, slot, "heartbeat not taken by meta");
                last_complaint = Some(tokio::time::Instant::now());
            }
            Err(_) => {}
        }
    }
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
