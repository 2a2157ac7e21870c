//! The one place that fans calls out to datanodes: one call per ring slot,
//! all in parallel, each answer handed to the caller's tally as it arrives.
//! Write, read and repair all go through [`fan_out`].

use std::future::Future;
use std::ops::ControlFlow;
use std::sync::Arc;

use tessera_datanode::DatanodeClient;
use tessera_datanode::api::CallError;
use tokio::sync::mpsc;

use crate::ring::{RingCache, RingView};

/// Calls `start(client, &context)` for every `(slot, context)` in `calls`,
/// all at once, and gives each answer to `answer(slot, context, result)`
/// as it arrives. Returns once every call has answered, or as soon as
/// `answer` breaks; calls still running then finish in the background (a
/// write acknowledged by W replicas lets the slower ones complete). A slot
/// with no datanode answers at once with an error. A failed call makes the
/// ring refresh: its node may have moved.
pub(crate) async fn fan_out<C, R, Fut>(
    ring: &Arc<RingCache>,
    view: &RingView,
    calls: impl IntoIterator<Item = (u32, C)>,
    mut start: impl FnMut(&DatanodeClient, &C) -> Fut,
    mut answer: impl FnMut(u32, C, Result<R, String>) -> ControlFlow<()>,
) where
    Fut: Future<Output = Result<R, CallError>> + Send + 'static,
    R: Send + 'static,
{
    let (tx, mut rx) = mpsc::unbounded_channel();
    let mut contexts: Vec<Option<(u32, C)>> = Vec::new();
    let mut outstanding = 0usize;
    for (slot, context) in calls {
        let Some(client) = view.node(slot) else {
            let error = format!("{}: no datanode", view.describe(slot));
            if answer(slot, context, Err(error)).is_break() {
                return;
            }
            continue;
        };
        let call = start(client, &context);
        let (tx, n) = (tx.clone(), contexts.len());
        contexts.push(Some((slot, context)));
        outstanding += 1;
        tokio::spawn(async move {
            let _ = tx.send((n, call.await));
        });
    }
    drop(tx);
    while outstanding > 0 {
        let Some((n, result)) = rx.recv().await else {
            return;
        };
        outstanding -= 1;
        let (slot, context) = contexts[n].take().expect("each call answers once");
        let result = result.map_err(|e| {
            if matches!(e, CallError::Rpc(_)) {
                ring.refresh_soon();
            }
            format!("{}: {e}", view.describe(slot))
        });
        if answer(slot, context, result).is_break() {
            return;
        }
    }
}
