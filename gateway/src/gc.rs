//! Garbage collection: objects that were replaced, unlinked or abandoned are
//! deleted from every datanode once their grace period is over, then dropped
//! from meta's queue. A datanode that is down keeps the entry queued.

use std::time::Duration;

use tokio_util::sync::CancellationToken;

use crate::engine::EngineRef;
use crate::error::Result;

/// Objects handled per pass (one delete call to each datanode).
const BATCH: u32 = 2048;

/// Runs a pass every `gc_interval`, and passes back to back while they come
/// back full, so a backlog (many replaced files, the unused ids of expired
/// leases) drains at the datanodes' pace rather than one batch per interval.
pub async fn run(engine: EngineRef, shutdown: CancellationToken) {
    loop {
        tokio::select! {
            _ = tokio::time::sleep(engine.options().gc_interval) => {}
            _ = shutdown.cancelled() => return,
        }
        loop {
            match once(&engine).await {
                Ok(n) if n >= BATCH as u64 && !shutdown.is_cancelled() => continue,
                Ok(_) => break,
                Err(e) => {
                    tracing::debug!(error = %e, "gc pass failed");
                    break;
                }
            }
        }
    }
}

/// One pass; returns how many objects were deleted. Meta's clock alone
/// decides what is old enough (expired leases, the grace period).
pub async fn once(engine: &EngineRef) -> Result<u64> {
    let (meta, options) = (engine.meta(), engine.options());
    meta.reap_leases(options.pending_ttl).await?;
    let due: Vec<u64> = meta
        .gc_list(BATCH, options.gc_grace)
        .await?
        .into_iter()
        .map(|e| e.object.id)
        .collect();
    if due.is_empty() {
        return Ok(0);
    }
    // Every datanode of the ring must delete them: a slot this gateway does
    // not know yet (or an empty one) would keep the blocks forever.
    let view = engine.io.ring.refresh().await;
    if view.nodes.is_empty() || view.nodes.iter().any(Option::is_none) {
        tracing::info!(
            objects = due.len(),
            "gc waits for a complete view of the ring"
        );
        return Ok(0);
    }
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
    meta.gc_done(due).await?;
    engine
        .io
        .stats
        .gc_objects
        .fetch_add(n, std::sync::atomic::Ordering::Relaxed);
    tracing::debug!(objects = n, "gc deleted objects");
    Ok(n)
}
