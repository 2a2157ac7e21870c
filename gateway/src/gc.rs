//! Garbage collection: objects that were replaced, unlinked or abandoned are
//! deleted from every datanode once their grace period is over, then dropped
//! from meta's queue. A datanode that is down keeps the entry queued.

use std::time::Duration;

use tessera_meta::now_ns;
use tessera_meta::store::Change;
use tokio_util::sync::CancellationToken;

use crate::error::Result;
use crate::fs::Fs;

/// Objects handled per pass.
const BATCH: u32 = 256;

pub async fn run(fs: Fs, shutdown: CancellationToken) {
    loop {
        tokio::select! {
            _ = tokio::time::sleep(fs.options().gc_interval) => {}
            _ = shutdown.cancelled() => return,
        }
        if let Err(e) = once(&fs).await {
            tracing::debug!(error = %e, "gc pass failed");
        }
    }
}

/// One pass; returns how many objects were deleted.
pub async fn once(fs: &Fs) -> Result<u64> {
    let now = now_ns();
    let ttl = fs.options().pending_ttl.as_nanos() as i64;
    fs.meta()
        .change(Change::ReapPending { before: now - ttl })
        .await?;
    let grace = fs.options().gc_grace.as_nanos() as i64;
    let due: Vec<u64> = fs
        .meta()
        .gc_list(BATCH)
        .await?
        .into_iter()
        .filter(|e| e.queued <= now - grace)
        .map(|e| e.object.id)
        .collect();
    if due.is_empty() {
        return Ok(0);
    }
    let view = fs.ring();
    let calls = view.nodes.iter().flatten().map(|c| {
        let due = due.clone();
        async move {
            c.with_timeout(Duration::from_secs(30))
                .delete_objects(due)
                .await
        }
    });
    let results = futures::future::join_all(calls).await;
    if let Some(e) = results.iter().find_map(|r| r.as_ref().err()) {
        tracing::info!(error = %e, objects = due.len(), "gc waits for a datanode");
        return Ok(0);
    }
    let n = due.len() as u64;
    fs.meta().change(Change::GcDone { objects: due }).await?;
    fs.stats()
        .gc_objects
        .fetch_add(n, std::sync::atomic::Ordering::Relaxed);
    tracing::debug!(objects = n, "gc deleted objects");
    Ok(n)
}
