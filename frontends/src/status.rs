//! `tessera status`: the cluster as meta sees it, as a table or as JSON.

use std::time::Duration;

use anyhow::{Context, Result};
use tessera_meta::{ClusterHealth, MetaClient, NodeState, Progress};
use tessera_rpc::{Secret, Transport};

/// Asks meta at `meta` for the cluster's health.
pub async fn fetch(meta: &str, secret: Secret) -> Result<ClusterHealth> {
    let transport = Transport::new(secret);
    health(&MetaClient::new(&transport, meta), meta).await
}

async fn health(client: &MetaClient, meta: &str) -> Result<ClusterHealth> {
    tokio::time::timeout(Duration::from_secs(10), client.health())
        .await
        .map_err(|_| anyhow::anyhow!("meta at {meta} did not answer within 10 s"))?
        .with_context(|| format!("cannot get the cluster's status from meta at {meta}"))
}

/// `tessera scrub`: asks every datanode for a pass now; with `wait`, waits
/// for every node that is up to finish it and prints the sums.
pub async fn scrub(meta: &str, secret: Secret, wait: bool, json: bool) -> Result<()> {
    let transport = Transport::new(secret);
    let client = MetaClient::new(&transport, meta);
    let ask = || async {
        tokio::time::timeout(Duration::from_secs(10), client.request_scrub())
            .await
            .map_err(|_| anyhow::anyhow!("meta at {meta} did not answer within 10 s"))?
            .with_context(|| format!("cannot ask meta at {meta} for a scrub"))
    };
    let mut pass = ask().await?;
    if !wait {
        println!("scrub pass {pass} asked of every datanode; `tessera status` shows its progress");
        return Ok(());
    }
    let started = std::time::Instant::now();
    let h = loop {
        tokio::time::sleep(Duration::from_millis(250)).await;
        let h = health(&client, meta).await?;
        if h.scrub_requested < pass {
            // Meta restarted and forgot the request: ask again.
            pass = ask().await?;
            continue;
        }
        let live: Vec<_> = h
            .nodes
            .iter()
            .filter(|n| n.state != NodeState::Down)
            .collect();
        if !live.is_empty()
            && live
                .iter()
                .all(|n| n.report.is_some_and(|r| r.heal.scrub_pass >= pass))
        {
            break h;
        }
    };
    let mut sum = tessera_meta::ScrubCounts::default();
    let mut per_node = Vec::new();
    for n in &h.nodes {
        let Some(r) = n
            .report
            .filter(|r| n.state != NodeState::Down && r.heal.scrub_pass >= pass)
        else {
            continue;
        };
        sum.add(&r.heal.scrub);
        per_node.push((n.slot, r.heal.scrub));
    }
    let skipped: Vec<u32> = h
        .nodes
        .iter()
        .filter(|n| n.state == NodeState::Down)
        .map(|n| n.slot)
        .collect();
    let secs = started.elapsed().as_secs_f64();
    if json {
        let nodes: Vec<serde_json::Value> = per_node
            .iter()
            .map(|(slot, c)| {
                serde_json::json!({"slot": slot, "checked": c.checked, "corrupt": c.corrupt,
                    "missing": c.missing, "repaired": c.repaired})
            })
            .collect();
        println!(
            "{}",
            serde_json::json!({
                "pass": pass,
                "checked": sum.checked,
                "corrupt": sum.corrupt,
                "missing": sum.missing,
                "repaired": sum.repaired,
                "seconds": secs,
                "datanodes": nodes,
                "down": skipped,
            })
        );
    } else {
        for (slot, c) in &per_node {
            println!(
                "slot {slot}: {} blocks checked, {} corrupt, {} missing, {} repaired",
                c.checked, c.corrupt, c.missing, c.repaired
            );
        }
        if !skipped.is_empty() {
            println!("not scrubbed (down): slots {skipped:?}");
        }
        println!(
            "scrub pass {pass}: {} blocks checked, {} corrupt found, {} missing found, {} repaired in {secs:.1} s",
            sum.checked, sum.corrupt, sum.missing, sum.repaired
        );
    }
    Ok(())
}

fn progress_json(p: Option<Progress>) -> serde_json::Value {
    match p {
        None => serde_json::Value::Null,
        Some(p) => serde_json::json!({
            "done_blocks": p.done,
            "total_blocks": p.total,
            "copied_bytes": p.bytes,
            "elapsed_ms": p.elapsed_ms,
        }),
    }
}

/// The JSON shape of `status --json` (`../shared/DESIGN.md`, more fields).
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
                "under_replicated": n.under_replicated,
                "rebuild": progress_json(r.heal.rebuild),
                "scrub": {
                    "running": progress_json(r.heal.scrubbing),
                    "last_pass": r.heal.scrub_pass,
                    "checked": r.heal.scrub.checked,
                    "corrupt": r.heal.scrub.corrupt,
                    "missing": r.heal.scrub.missing,
                    "repaired": r.heal.scrub.repaired,
                },
                "repaired": n.report.map(|_| r.heal.repaired),
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
        "under_replicated_blocks": h.under_replicated_blocks,
        "blocked_writes": h.blocked_writes,
        "gateways": h.gateways,
        "scrub_requested": h.scrub_requested,
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
        let state = match n.report.and_then(|r| r.heal.rebuild) {
            Some(p) if n.state == NodeState::Rebuilding => {
                format!("rebuilding {}%", percent(p))
            }
            _ => n.state.as_str().to_string(),
        };
        rows.push([
            n.slot.to_string(),
            state,
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
    for n in &h.nodes {
        if let (NodeState::Rebuilding, Some(p)) = (n.state, n.report.and_then(|r| r.heal.rebuild)) {
            let secs = (p.elapsed_ms as f64 / 1000.0).max(1e-3);
            out.push_str(&format!(
                "slot {} rebuilding: {} of {} blocks, {} copied ({:.0} MB/s)\n",
                n.slot,
                p.done,
                p.total,
                crate::human_bytes(p.bytes),
                p.bytes as f64 / secs / 1e6
            ));
        }
    }
    let per_slot: Vec<String> = h
        .nodes
        .iter()
        .filter(|n| n.under_replicated > 0)
        .map(|n| format!("slot {}: {}", n.slot, n.under_replicated))
        .collect();
    if per_slot.is_empty() {
        out.push_str(&format!(
            "under-replicated blocks: {}\n",
            h.under_replicated_blocks
        ));
    } else {
        out.push_str(&format!(
            "under-replicated blocks: {} ({})\n",
            h.under_replicated_blocks,
            per_slot.join(", ")
        ));
    }
    out.push_str(&format!(
        "blocked writes: {} ({} gateways and mounts reporting)\n",
        h.blocked_writes, h.gateways
    ));
    out
}

/// How far a pass is, in whole percent.
fn percent(p: Progress) -> u64 {
    (p.done * 100).checked_div(p.total).unwrap_or(0).min(100)
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
                        heal: Default::default(),
                    }),
                    last_seen_ms: Some(400),
                    under_replicated: 0,
                },
                NodeHealth {
                    slot: 1,
                    id: "bbbb".into(),
                    addr: "127.0.0.1:7002".into(),
                    state: NodeState::Down,
                    report: None,
                    last_seen_ms: None,
                    under_replicated: 5,
                },
            ],
            blocked_writes: 3,
            gateways: 2,
            node_timeout_ms: 3000,
            under_replicated_blocks: 5,
            scrub_requested: 0,
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
        assert!(t.contains("under-replicated blocks: 5 (slot 1: 5)"), "{t}");
        let j = to_json(&h);
        assert_eq!(j["datanodes"][1]["blocks"], serde_json::Value::Null);
        assert_eq!(j["datanodes"][0]["capacity"], 12u64 << 30);
        assert_eq!(j["blocked_writes"], 3);
        assert_eq!(j["under_replicated_blocks"], 5);
        assert_eq!(j["datanodes"][1]["under_replicated"], 5);
    }
}
