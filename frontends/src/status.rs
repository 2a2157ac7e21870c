//! `tessera status`: the cluster as meta sees it, as a table or as JSON.

use std::time::Duration;

use anyhow::{Context, Result};
use tessera_meta::{ClusterHealth, MetaClient};
use tessera_rpc::{Secret, Transport};

/// Asks meta at `meta` for the cluster's health.
pub async fn fetch(meta: &str, secret: Secret) -> Result<ClusterHealth> {
    let transport = Transport::new(secret);
    let client = MetaClient::new(&transport, meta);
    tokio::time::timeout(Duration::from_secs(10), client.health())
        .await
        .map_err(|_| anyhow::anyhow!("meta at {meta} did not answer within 10 s"))?
        .with_context(|| format!("cannot get the cluster's status from meta at {meta}"))
}

/// The JSON shape of `status --json` (`../shared/DESIGN.md`, more fields);
/// `under_replicated_blocks` is `null` until meta keeps a repair queue.
pub fn to_json(h: &ClusterHealth) -> serde_json::Value {
    let nodes: Vec<serde_json::Value> = h
        .nodes
        .iter()
        .map(|n| {
            let r = n.report.unwrap_or_default();
            serde_json::json!({
                "slot": n.slot,
                "id": n.id,
                "addr": n.addr,
                "state": n.state.as_str(),
                "blocks": n.report.map(|_| r.blocks),
                "bytes": n.report.map(|_| r.bytes),
                "capacity": n.report.map(|_| r.capacity),
                "available": n.report.map(|_| r.available),
                "last_seen_ms": n.last_seen_ms,
            })
        })
        .collect();
    serde_json::json!({
        "cluster": {
            "replicas": h.settings.replicas,
            "write_quorum": h.settings.write_quorum,
            "read_quorum": h.settings.read_quorum,
            "node_timeout_ms": h.node_timeout_ms,
        },
        "datanodes": nodes,
        "under_replicated_blocks": null,
        "blocked_writes": h.blocked_writes,
        "gateways": h.gateways,
    })
}

/// Bytes for people: 1023 B, 1.5 KiB, 12.0 GiB.
fn human(bytes: u64) -> String {
    const UNITS: [&str; 6] = ["B", "KiB", "MiB", "GiB", "TiB", "PiB"];
    let mut v = bytes as f64;
    let mut u = 0;
    while v >= 1024.0 && u + 1 < UNITS.len() {
        v /= 1024.0;
        u += 1;
    }
    if u == 0 {
        format!("{bytes} B")
    } else {
        format!("{v:.1} {}", UNITS[u])
    }
}

/// The table `status` prints by default.
pub fn to_table(h: &ClusterHealth) -> String {
    let s = h.settings;
    let mut rows = vec![
        [
            "SLOT",
            "STATE",
            "ID",
            "ADDRESS",
            "BLOCKS",
            "BYTES",
            "CAPACITY",
            "LAST HEARD",
        ]
        .map(String::from),
    ];
    for n in &h.nodes {
        let dash = || "-".to_string();
        rows.push([
            n.slot.to_string(),
            n.state.as_str().to_string(),
            n.id.clone(),
            n.addr.clone(),
            n.report.map_or_else(dash, |r| r.blocks.to_string()),
            n.report.map_or_else(dash, |r| human(r.bytes)),
            n.report.map_or_else(dash, |r| {
                if r.capacity == 0 {
                    dash()
                } else {
                    human(r.capacity)
                }
            }),
            n.last_seen_ms.map_or_else(
                || "never".to_string(),
                |ms| format!("{:.1} s ago", ms as f64 / 1000.0),
            ),
        ]);
    }
    let widths: Vec<usize> = (0..8)
        .map(|c| rows.iter().map(|r| r[c].chars().count()).max().unwrap_or(0))
        .collect();
    let mut out = format!(
        "cluster: {} replicas, writes wait for {}, reads for {}; a datanode silent for {} ms is down\n\n",
        s.replicas, s.write_quorum, s.read_quorum, h.node_timeout_ms
    );
    for r in &rows {
        let line: Vec<String> = r
            .iter()
            .zip(&widths)
            .map(|(cell, w)| format!("{cell:<w$}"))
            .collect();
        out.push_str(line.join("  ").trim_end());
        out.push('\n');
    }
    let down = h
        .nodes
        .iter()
        .filter(|n| n.state == tessera_meta::NodeState::Down)
        .count();
    out.push('\n');
    if down > 0 {
        out.push_str(&format!("{down} of {} datanodes down\n", h.nodes.len()));
    }
    out.push_str("under-replicated blocks: not tracked yet (no repair queue)\n");
    out.push_str(&format!(
        "blocked writes: {} ({} gateways and mounts reporting)\n",
        h.blocked_writes, h.gateways
    ));
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_read_as_people_write_them() {
        assert_eq!(human(0), "0 B");
        assert_eq!(human(1023), "1023 B");
        assert_eq!(human(1536), "1.5 KiB");
        assert_eq!(human(12 << 30), "12.0 GiB");
    }
}
