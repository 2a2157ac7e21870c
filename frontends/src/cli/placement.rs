//! Where a file's blocks live: `stat --meta ADDR`, for a caller with
//! cluster access (the cluster secret), asked of meta directly.

use std::path::Path;

use serde_json::{Value, json};
use tessera_meta::{MetaClient, ObjectRef};
use tessera_rpc::{Secret, Transport};

use super::CliError;
use super::path::RemotePath;

/// One slot's share of a file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Share {
    pub slot: u32,
    pub id: String,
    pub addr: String,
    pub state: &'static str,
    /// Blocks of the file placement puts on this slot (all replicas).
    pub blocks: u64,
}

/// A file's object and where its blocks are.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Placement {
    pub object: u64,
    pub blocks: u64,
    pub replicas: u32,
    pub shares: Vec<Share>,
}

impl Placement {
    pub fn to_json(&self) -> Value {
        json!({
            "object": self.object,
            "blocks": self.blocks,
            "replicas": self.replicas,
            "slots": self.shares.iter().map(|s| json!({
                "slot": s.slot, "id": s.id, "addr": s.addr, "state": s.state, "blocks": s.blocks,
            })).collect::<Vec<_>>(),
        })
    }

    pub fn to_text(&self) -> String {
        if self.blocks == 0 {
            return "blocks:   none (empty, or not a file)\n".into();
        }
        let mut out = format!(
            "blocks:   {} of 512 B, {} copies each (object {})\n",
            self.blocks, self.replicas, self.object
        );
        for s in &self.shares {
            out.push_str(&format!(
                "  slot {:<3} {:<21} {:<10} {} blocks\n",
                s.slot, s.addr, s.state, s.blocks
            ));
        }
        out
    }
}

/// Asks meta at `meta` where the blocks of `path` are. The secret comes
/// from `secret_file`, else TESSERA_SECRET.
pub async fn locate(
    meta: &str,
    secret_file: Option<&Path>,
    path: &RemotePath,
) -> Result<Placement, CliError> {
    let env = std::env::var("TESSERA_SECRET").ok();
    let secret = Secret::resolve(secret_file, env.as_deref()).map_err(|e| {
        CliError::usage(format!(
            "--meta needs the cluster secret (--secret-file FILE or TESSERA_SECRET): {e}"
        ))
    })?;
    let transport = Transport::new(secret);
    let client = MetaClient::new(&transport, meta);
    let unreachable = |e: tessera_meta::api::CallError| CliError::failed(meta, e.to_string());
    let components = path.components().map(str::to_string).collect();
    let inode = client.resolve(components).await.map_err(|e| match e {
        tessera_meta::api::CallError::Meta(m) => CliError::failed(path.as_str(), m.to_string()),
        e => unreachable(e),
    })?;
    let health = client.health().await.map_err(unreachable)?;
    Ok(placement(
        inode.object,
        inode.size,
        health.settings.replicas,
        &health,
    ))
}

/// The shares of an object of `size` bytes on the cluster `health` shows.
pub fn placement(
    object: ObjectRef,
    size: u64,
    replicas: u32,
    health: &tessera_meta::ClusterHealth,
) -> Placement {
    let blocks = if object.is_none() {
        0
    } else {
        size.div_ceil(512)
    };
    let r = replicas.min(object.width.max(1));
    let shares = health
        .nodes
        .iter()
        .map(|n| Share {
            slot: n.slot,
            id: n.id.clone(),
            addr: n.addr.clone(),
            state: n.state.as_str(),
            blocks: object.blocks_on(n.slot, 0..blocks, r),
        })
        .filter(|s| s.blocks > 0)
        .collect();
    Placement {
        object: object.id,
        blocks,
        replicas: r,
        shares,
    }
}
