//! The gateway's view of the ring: one datanode client per slot, refreshed
//! from meta.

use std::sync::{Arc, RwLock};
use std::time::Duration;

use tessera_datanode::DatanodeClient;
use tessera_meta::{MetaClient, Ring, Settings};
use tessera_rpc::Transport;

/// Clients for every ring slot, by slot number.
pub struct RingView {
    pub settings: Settings,
    pub nodes: Vec<Option<DatanodeClient>>,
    pub ring: Ring,
}

impl RingView {
    pub fn node(&self, slot: u32) -> Option<&DatanodeClient> {
        self.nodes.get(slot as usize).and_then(|n| n.as_ref())
    }

    /// The client for `slot`, unless the slot is empty or meta says its
    /// node is down (then the error, in words naming the slot).
    pub fn usable(&self, slot: u32) -> Result<&DatanodeClient, String> {
        match self.node(slot) {
            None => Err(format!("{}: no datanode", self.describe(slot))),
            Some(_) if self.ring.down.contains(&slot) => Err(format!(
                "{}: down (no heartbeat to meta)",
                self.describe(slot)
            )),
            Some(c) => Ok(c),
        }
    }

    /// Whether `slot`'s datanode is rebuilding: a block it does not hold
    /// may just not be copied yet.
    pub fn rebuilding(&self, slot: u32) -> bool {
        self.ring.rebuilding.contains(&slot)
    }

    /// "slot 2 (127.0.0.1:4001)" for messages.
    pub fn describe(&self, slot: u32) -> String {
        match self.node(slot) {
            Some(c) => format!("slot {slot} ({})", c.addr()),
            None => format!("slot {slot} (empty)"),
        }
    }
}

pub struct RingCache {
    meta: MetaClient,
    transport: Transport,
    timeout: Duration,
    current: RwLock<Arc<RingView>>,
    /// When the last refresh triggered by a failure started.
    last_nudge: std::sync::Mutex<Option<std::time::Instant>>,
}

impl RingCache {
    pub async fn load(
        meta: MetaClient,
        transport: Transport,
        timeout: Duration,
    ) -> Result<Self, crate::Error> {
        let ring = meta.ring().await?;
        let view = build(&transport, ring, timeout, None);
        Ok(RingCache {
            meta,
            transport,
            timeout,
            current: RwLock::new(Arc::new(view)),
            last_nudge: std::sync::Mutex::new(None),
        })
    }

    pub fn get(&self) -> Arc<RingView> {
        self.current.read().expect("ring lock").clone()
    }

    /// A datanode call failed: its node may have moved. Refreshes the ring in
    /// the background, at most five times a second.
    pub fn refresh_soon(self: &Arc<Self>) {
        let now = std::time::Instant::now();
        {
            let mut last = self.last_nudge.lock().expect("nudge lock");
            if last.is_some_and(|t| now.duration_since(t) < Duration::from_millis(200)) {
                return;
            }
            *last = Some(now);
        }
        let me = self.clone();
        tokio::spawn(async move {
            me.refresh().await;
        });
    }

    /// Fetches the ring from meta; keeps the old view if meta is unreachable.
    pub async fn refresh(&self) -> Arc<RingView> {
        match self.meta.ring().await {
            Ok(ring) => {
                let old = self.get();
                if old.ring == ring {
                    return old;
                }
                if old.ring.slots == ring.slots {
                    tracing::info!(down = ?ring.down, rebuilding = ?ring.rebuilding, "datanode states changed");
                } else {
                    tracing::info!(slots = ring.slots.len(), down = ?ring.down, "ring changed");
                }
                let view = Arc::new(build(&self.transport, ring, self.timeout, Some(&old)));
                *self.current.write().expect("ring lock") = view.clone();
                view
            }
            Err(e) => {
                tracing::debug!(error = %e, "ring refresh failed");
                self.get()
            }
        }
    }
}

fn build(transport: &Transport, ring: Ring, timeout: Duration, old: Option<&RingView>) -> RingView {
    let len = ring.width() as usize;
    let mut nodes: Vec<Option<DatanodeClient>> = vec![None; len];
    for s in &ring.slots {
        let reuse = old
            .and_then(|o| o.node(s.slot))
            .filter(|c| c.addr() == s.addr)
            .cloned();
        nodes[s.slot as usize] =
            Some(reuse.unwrap_or_else(|| DatanodeClient::new(transport, &s.addr, timeout)));
    }
    RingView {
        settings: ring.settings,
        nodes,
        ring,
    }
}
