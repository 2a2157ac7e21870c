//! Garbage collection: objects that were replaced, unlinked or abandoned are
//! deleted from every datanode once their grace period is over, each node
//! on its own: meta records which slots deleted each object and drops it
//! from the queue once all have. A datanode that is down keeps only its own
//! deletes waiting.

use std::collections::BTreeMap;
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

/// One pass; returns how many queued objects it handled. Meta's clock
/// alone decides what is old enough (expired leases, the grace period).
/// Each datanode that is up deletes the objects it has not deleted yet;
/// an object leaves the queue once every slot of the ring has deleted it,
/// so a node that was down while files were deleted is cleaned when it
/// is back, and holds up nothing meanwhile.
pub async fn once(engine: &EngineRef) -> Result<u64> {
    let (meta, options) = (engine.meta(), engine.options());
    meta.reap_leases(options.pending_ttl).await?;
    let due = meta.gc_due(BATCH, options.gc_grace).await?;
    if due.is_empty() {
        return Ok(0);
    }
    let view = engine.io.ring.refresh().await;
    let mut per_slot: BTreeMap<u32, Vec<u64>> = BTreeMap::new();
    for d in &due {
        for slot in view.ring.slots.iter().map(|s| s.slot) {
            if !d.done.contains(&slot) {
                per_slot.entry(slot).or_default().push(d.entry.object.id);
            }
        }
    }
    let calls = per_slot.into_iter().filter_map(|(slot, objects)| {
        let client = view
            .usable(slot)
            .ok()?
            .with_timeout(Duration::from_secs(30));
        Some(async move { (slot, client.delete_objects(objects.clone()).await, objects) })
    });
    let mut deleted = 0;
    for (slot, result, objects) in futures::future::join_all(calls).await {
        match result {
            Ok(blocks) => {
                meta.gc_done_on(slot, objects.clone()).await?;
                deleted += objects.len() as u64;
                tracing::debug!(slot, objects = objects.len(), blocks, "gc deleted objects");
            }
            Err(e) => {
                tracing::info!(slot, error = %e, objects = objects.len(), "gc waits for a datanode")
            }
        }
    }
    engine
        .io
        .stats
        .gc_objects
        .fetch_add(deleted, std::sync::atomic::Ordering::Relaxed);
    // Nothing deleted (a node not answering yet): no pass back to back.
    Ok(if deleted == 0 { 0 } else { due.len() as u64 })
}
