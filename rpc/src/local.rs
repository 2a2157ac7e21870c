//! Calls between services of one process, without sockets.
//!
//! `tessera up` runs meta, the datanodes and the gateways in one process.
//! Once [`enable`]d, every service [`serve`](crate::serve)d in the process
//! is also reachable at its address from within the process: a call there
//! encodes and decodes exactly the frames it would send over HTTP/2 (so it
//! is checked and behaves the same), and runs the handler in the caller's
//! task; only the loopback TCP, HTTP/2 framing and the wake-ups of the
//! wire are skipped. A caller that gives up (a timeout) drops the handler
//! where it is, which leaves the call's outcome unknown, as a connection
//! lost mid-call does. A service stops being reachable this way when `serve` returns.

use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, LazyLock, RwLock};

use bytes::{Bytes, BytesMut};

use crate::{Secret, Service, codec};

/// Why a call in the process was refused, as the wire would answer.
pub(crate) enum Refused {
    Unauthorized,
    Malformed(String),
}

/// A response: its encoded header, and the payload segments after it.
type Reply = Pin<Box<dyn Future<Output = Result<(Bytes, Vec<Bytes>), Refused>> + Send>>;
/// A served service, type-erased: the request's encoded header, its
/// payload and the caller's secret in, the response out. The frames are
/// exactly the wire's; header and payload are only not joined into one
/// buffer (which would copy every payload byte once more).
pub(crate) type Handler = Arc<dyn Fn(Bytes, Bytes, &str) -> Reply + Send + Sync>;

static ENABLED: AtomicBool = AtomicBool::new(false);
static SERVICES: LazyLock<RwLock<HashMap<String, Handler>>> = LazyLock::new(Default::default);

/// Services served from now on in this process are called directly by
/// clients in it.
pub fn enable() {
    ENABLED.store(true, Ordering::Release);
}

/// The handler of the service served at `addr` in this process, if any.
pub(crate) fn find(addr: &str) -> Option<Handler> {
    if !ENABLED.load(Ordering::Acquire) {
        return None;
    }
    SERVICES.read().expect("local services").get(addr).cloned()
}

/// Keeps `service` reachable at `addr` until dropped.
pub(crate) struct Registration(Option<String>);

impl Drop for Registration {
    fn drop(&mut self) {
        if let Some(addr) = self.0.take() {
            SERVICES.write().expect("local services").remove(&addr);
        }
    }
}

pub(crate) fn register<S: Service>(
    addr: String,
    service: Arc<S>,
    secret: Arc<Secret>,
) -> Registration {
    if !ENABLED.load(Ordering::Acquire) {
        return Registration(None);
    }
    let handler: Handler = Arc::new(move |head: Bytes, payload: Bytes, presented: &str| {
        let allowed = secret.matches(presented.as_bytes());
        let service = service.clone();
        Box::pin(async move {
            let rpc = crate::metrics::rpc();
            if !allowed {
                rpc.refused(S::NAME, "secret");
                return Err(Refused::Unauthorized);
            }
            let started = std::time::Instant::now();
            let received = head.len() + payload.len();
            let (request, rest) = codec::decode_frame::<S::Request>(head).map_err(|e| {
                rpc.refused(S::NAME, "malformed");
                Refused::Malformed(format!("malformed request: {e}"))
            })?;
            if !rest.is_empty() {
                rpc.refused(S::NAME, "malformed");
                return Err(Refused::Malformed(
                    "malformed request: bytes after the header".into(),
                ));
            }
            let call = S::call_name(&request);
            let (response, payload) = service.handle_local(request, payload).await;
            let head = Bytes::from(codec::encode(&response));
            let sent = head.len() + payload.iter().map(Bytes::len).sum::<usize>();
            rpc.served(S::NAME, call, started.elapsed(), received, sent);
            Ok((head, payload))
        })
    });
    SERVICES
        .write()
        .expect("local services")
        .insert(addr.clone(), handler);
    Registration(Some(addr))
}

/// Payload segments as the receiving end of the wire sees them: one
/// buffer (copied only when there are several).
pub(crate) fn join(segments: Vec<Bytes>) -> Bytes {
    let mut full = segments.into_iter().filter(|b| !b.is_empty());
    let Some(first) = full.next() else {
        return Bytes::new();
    };
    let Some(second) = full.next() else {
        return first;
    };
    let rest: Vec<Bytes> = full.collect();
    let len = first.len() + second.len() + rest.iter().map(Bytes::len).sum::<usize>();
    let mut out = BytesMut::with_capacity(len);
    for b in [first, second].into_iter().chain(rest) {
        out.extend_from_slice(&b);
    }
    out.freeze()
}
