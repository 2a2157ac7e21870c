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
            n.report.map_or_else(dash, |r| crate::human_bytes(r.bytes)),
            n.report.map_or_else(dash, |r| {
                if r.capacity == 0 {
                    dash()
                } else {
                    crate::human_bytes(r.capacity)
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
    use tessera_meta::{NodeHealth, NodeReport, NodeState, Settings};

    #[test]
    fn the_table_names_each_node_and_what_is_unknown() {
        let h = ClusterHealth {
            settings: Settings::default(),
            nodes: vec![
                NodeHealth {
                    slot: 0,
                    id: "aaaa".into(),
                    addr: "127.0.0.1:7001".into(),
                    state: NodeState::Up,
                    report: Some(NodeReport {
                        blocks: 7,
                        bytes: 1536,
                        capacity: 12 << 30,
                        available: 1 << 30,
                    }),
                    last_seen_ms: Some(400),
                },
                NodeHealth {
                    slot: 1,
                    id: "bbbb".into(),
                    addr: "127.0.0.1:7002".into(),
                    state: NodeState::Down,
                    report: None,
                    last_seen_ms: None,
                },
            ],
            blocked_writes: 3,
            gateways: 2,
            node_timeout_ms: 3000,
        };
        let t = to_table(&h);
        let line = |slot: &str| t.lines().find(|l| l.starts_with(slot)).unwrap().to_string();
        let up = line("0 ");
        let up: Vec<&str> = up.split_whitespace().collect();
        assert_eq!(
            up,
            [
                "0",
                "up",
                "aaaa",
                "127.0.0.1:7001",
                "7",
                "1.5",
                "KiB",
                "12.0",
                "GiB",
                "0.4",
                "s",
                "ago"
            ]
        );
        let down = line("1 ");
        assert!(down.contains("down") && down.contains("never"), "{t}");
        assert!(t.contains("1 of 2 datanodes down"), "{t}");
        assert!(t.contains("blocked writes: 3 (2 gateways"), "{t}");
        let j = to_json(&h);
        assert_eq!(j["datanodes"][1]["blocks"], serde_json::Value::Null);
        assert_eq!(j["datanodes"][0]["capacity"], 12u64 << 30);
        assert_eq!(j["blocked_writes"], 3);
    }
}
