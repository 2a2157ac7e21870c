//! The accept loop shared by every Tessera service.

use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;

use bytes::Bytes;
use http::{Method, Request, Response, StatusCode};
use http_body_util::{BodyExt, Limited};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::graceful::GracefulShutdown;
use serde::Serialize;
use serde::de::DeserializeOwned;
use std::time::Duration;
use tokio::net::TcpListener;
use tokio::sync::Semaphore;

use crate::body::Segments;
use crate::{MAX_BODY, SECRET_HEADER, Secret, codec};

/// Raw bytes that follow a message's header, as segments sent one after the
/// other (received, they arrive as one buffer).
pub type Payload = Vec<Bytes>;

/// A service reachable over the internal wire. `handle` is a plain async
/// function, testable without sockets; service errors travel inside
/// `Response`. `payload` is the raw bytes sent after the request header
/// (empty for most calls); the handler answers with its response and the raw
/// bytes to send after it.
pub trait Service: Send + Sync + 'static {
    type Request: DeserializeOwned + Serialize + Send + 'static;
    type Response: Serialize + DeserializeOwned + Send + 'static;
    /// Short name used in logs ("meta", "datanode").
    const NAME: &'static str;

    /// The name of `req`'s call in metrics ("put", "get"): a service
    /// labels each kind of request; the default puts all under "call".
    fn call_name(_req: &Self::Request) -> &'static str {
        "call"
    }

    fn handle(
        &self,
        req: Self::Request,
        payload: Bytes,
    ) -> impl Future<Output = (Self::Response, Payload)> + Send;

    /// [`Service::handle`] for a caller in this process ([`crate::local`]):
    /// the payload is the caller's own memory, handed over, not bytes that
    /// crossed a wire. The same as `handle` unless a service has checks
    /// that only a transfer needs (a datanode's checksums of received
    /// blocks).
    fn handle_local(
        &self,
        req: Self::Request,
        payload: Bytes,
    ) -> impl Future<Output = (Self::Response, Payload)> + Send {
        self.handle(req, payload)
    }
}

/// HTTP/2 settings shared by server and client: large windows so that batch
/// calls of several MiB are not throttled by flow control.
pub(crate) const STREAM_WINDOW: u32 = 16 << 20;
pub(crate) const CONN_WINDOW: u32 = 64 << 20;
pub(crate) const MAX_FRAME: u32 = 1 << 20;

/// Bounds on what one server holds for its clients.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// Connections served at once; past it the server stops accepting
    /// (clients wait in the listen backlog) until one closes.
    pub max_connections: usize,
    /// A connection that sends nothing for this long after it is accepted
    /// is closed (it would hold a slot forever).
    pub first_byte: Duration,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_connections: 1024,
            first_byte: Duration::from_secs(10),
        }
    }
}

/// Waits until `stream` has bytes to read; false if it sent none within
/// `within` or closed first.
pub async fn first_byte(stream: &tokio::net::TcpStream, within: Duration) -> bool {
    let mut b = [0u8; 1];
    matches!(
        tokio::time::timeout(within, stream.peek(&mut b)).await,
        Ok(Ok(n)) if n > 0
    )
}

/// Serves `service` on `listener` until `shutdown` resolves, then lets
/// in-flight calls finish.
pub async fn serve<S: Service>(
    listener: TcpListener,
    secret: Secret,
    service: Arc<S>,
    shutdown: impl Future<Output = ()>,
) {
    serve_with(listener, secret, service, Limits::default(), shutdown).await
}

/// [`serve`] with explicit [`Limits`].
pub async fn serve_with<S: Service>(
    listener: TcpListener,
    secret: Secret,
    service: Arc<S>,
    limits: Limits,
    shutdown: impl Future<Output = ()>,
) {
    let secret = Arc::new(secret);
    let _local = listener
        .local_addr()
        .ok()
        .map(|a| crate::local::register(a.to_string(), service.clone(), secret.clone()));
    let graceful = GracefulShutdown::new();
    let slots = Arc::new(Semaphore::new(limits.max_connections.max(1)));
    let mut shutdown = std::pin::pin!(shutdown);
    loop {
        let permit = tokio::select! {
            p = slots.clone().acquire_owned() => p.expect("never closed"),
            _ = &mut shutdown => break,
        };
        let (stream, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(x) => x,
                Err(e) => {
                    tracing::warn!(service = S::NAME, error = %e, "accept failed");
                    tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                    continue;
                }
            },
            _ = &mut shutdown => break,
        };
        let _ = stream.set_nodelay(true);
        let service = service.clone();
        let secret = secret.clone();
        let watcher = graceful.watcher();
        let first_byte = limits.first_byte;
        tokio::spawn(async move {
            let _permit = permit;
            // hyper would wait for a silent client's preface forever.
            if !self::first_byte(&stream, first_byte).await {
                tracing::debug!(service = S::NAME, %peer, "closed a connection that sent nothing");
                return;
            }
            let conn =
                hyper::server::conn::http2::Builder::new(TokioExecutor::new())
                    .initial_stream_window_size(STREAM_WINDOW)
                    .initial_connection_window_size(CONN_WINDOW)
                    .max_frame_size(MAX_FRAME)
                    .max_send_buf_size(4 << 20)
                    .serve_connection(
                        TokioIo::new(stream),
                        service_fn(move |req| {
                            let service = service.clone();
                            let secret = secret.clone();
                            async move {
                                Ok::<_, Infallible>(dispatch(&*service, &secret, peer, req).await)
                            }
                        }),
                    );
            if let Err(e) = watcher.watch(conn).await {
                tracing::debug!(service = S::NAME, %peer, error = %e, "connection ended");
            }
        });
    }
    drop(listener);
    // In-flight calls get a while to finish; idle pooled connections close.
    let _ = tokio::time::timeout(std::time::Duration::from_secs(5), graceful.shutdown()).await;
}

fn reply(status: StatusCode, body: impl Into<Bytes>) -> Response<Segments> {
    let mut r = Response::new(Segments::new([body.into()]));
    *r.status_mut() = status;
    r
}

async fn dispatch<S: Service>(
    service: &S,
    secret: &Secret,
    peer: SocketAddr,
    req: Request<Incoming>,
) -> Response<Segments> {
    if req.method() != Method::POST || req.uri().path() != "/rpc" {
        return reply(StatusCode::NOT_FOUND, "tessera rpc: POST /rpc only\n");
    }
    let presented = req.headers().get(SECRET_HEADER).map(|v| v.as_bytes());
    if !presented.is_some_and(|p| secret.matches(p)) {
        // Never log what was presented: it may be a near-miss of the secret.
        tracing::warn!(service = S::NAME, %peer, present = presented.is_some(), "refused a call without the cluster secret");
        crate::metrics::rpc().refused(S::NAME, "secret");
        return reply(
            StatusCode::UNAUTHORIZED,
            "tessera rpc: bad or missing cluster secret\n",
        );
    }
    let body = match Limited::new(req.into_body(), MAX_BODY).collect().await {
        Ok(b) => b.to_bytes(),
        Err(e) => {
            tracing::warn!(service = S::NAME, %peer, error = %e, "unreadable request body");
            crate::metrics::rpc().refused(S::NAME, "body");
            return reply(StatusCode::BAD_REQUEST, format!("unreadable body: {e}\n"));
        }
    };
    let received = body.len();
    let started = std::time::Instant::now();
    let (request, payload): (S::Request, Bytes) = match codec::decode_frame(body) {
        Ok(r) => r,
        Err(e) => {
            tracing::warn!(service = S::NAME, %peer, error = %e, "malformed request");
            crate::metrics::rpc().refused(S::NAME, "malformed");
            return reply(StatusCode::BAD_REQUEST, format!("malformed request: {e}\n"));
        }
    };
    let call = S::call_name(&request);
    let (response, payload) = service.handle(request, payload).await;
    let head = Bytes::from(codec::encode(&response));
    let sent = head.len() + payload.iter().map(Bytes::len).sum::<usize>();
    crate::metrics::rpc().served(S::NAME, call, started.elapsed(), received, sent);
    Response::new(Segments::new(std::iter::once(head).chain(payload)))
}
