//! A pooled, multiplexed HTTP/2 client for calls to any Tessera service.

use std::marker::PhantomData;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::{Request, StatusCode, Uri};
use http_body_util::{BodyExt, Limited};
use hyper_util::client::legacy::Client as HyperClient;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::{TokioExecutor, TokioTimer};

use crate::body::Segments;
use crate::server::{CONN_WINDOW, MAX_FRAME, STREAM_WINDOW};
use crate::{Error, MAX_BODY, Payload, SECRET_HEADER, Secret, Service, codec};

/// Connections and the secret, shared by every [`Client`] of one process.
/// Holds at most one HTTP/2 connection per peer and multiplexes calls on it.
#[derive(Clone)]
pub struct Transport {
    http: HyperClient<HttpConnector, Segments>,
    secret: Arc<Secret>,
}

impl Transport {
    pub fn new(secret: Secret) -> Self {
        let mut connector = HttpConnector::new();
        connector.set_nodelay(true);
        connector.set_connect_timeout(Some(Duration::from_secs(2)));
        let http = HyperClient::builder(TokioExecutor::new())
            .http2_only(true)
            .timer(TokioTimer::new())
            .pool_timer(TokioTimer::new())
            .pool_idle_timeout(Duration::from_secs(90))
            .http2_initial_stream_window_size(STREAM_WINDOW)
            .http2_initial_connection_window_size(CONN_WINDOW)
            .http2_max_frame_size(MAX_FRAME)
            .http2_max_send_buf_size(4 << 20)
            .http2_keep_alive_interval(Duration::from_secs(10))
            .http2_keep_alive_timeout(Duration::from_secs(5))
            .build(connector);
        Transport {
            http,
            secret: Arc::new(secret),
        }
    }

    /// A typed client for the service `S` at `addr` ("127.0.0.1:7001").
    pub fn client<S: Service>(&self, addr: &str, timeout: Duration) -> Client<S> {
        Client {
            transport: self.clone(),
            uri: format!("http://{addr}/rpc")
                .parse()
                .unwrap_or_else(|_| Uri::from_static("http://invalid.invalid/rpc")),
            peer: Arc::from(addr),
            timeout,
            _service: PhantomData,
        }
    }
}

/// A typed client of one service at one address.
pub struct Client<S> {
    transport: Transport,
    uri: Uri,
    peer: Arc<str>,
    timeout: Duration,
    _service: PhantomData<fn() -> S>,
}

impl<S> Clone for Client<S> {
    fn clone(&self) -> Self {
        Client {
            transport: self.transport.clone(),
            uri: self.uri.clone(),
            peer: self.peer.clone(),
            timeout: self.timeout,
            _service: PhantomData,
        }
    }
}

impl<S: Service> Client<S> {
    pub fn peer(&self) -> &str {
        &self.peer
    }

    /// The same client with another per-call timeout.
    pub fn with_timeout(&self, timeout: Duration) -> Self {
        Client {
            timeout,
            ..self.clone()
        }
    }

    /// One call without payloads, bounded by this client's timeout.
    pub async fn call(&self, req: &S::Request) -> Result<S::Response, Error> {
        Ok(self.call_with(req, Payload::new()).await?.0)
    }

    /// One call sending `payload` after the request header; returns the
    /// response and the raw payload that followed it (a slice of the
    /// received buffer).
    pub async fn call_with(
        &self,
        req: &S::Request,
        payload: Payload,
    ) -> Result<(S::Response, Bytes), Error> {
        let started = std::time::Instant::now();
        let head = Bytes::from(codec::encode(req));
        let sent = head.len() + payload.iter().map(Bytes::len).sum::<usize>();
        let answer = self.call_timed(head, payload).await;
        let (outcome, received) = match &answer {
            Ok((_, _, received)) => ("ok", *received),
            Err(e) => (e.kind(), 0),
        };
        crate::metrics::rpc().called(
            S::NAME,
            S::call_name(req),
            outcome,
            started.elapsed(),
            sent,
            received,
        );
        answer.map(|(response, payload, _)| (response, payload))
    }

    /// The call, its answer and the bytes the answer took.
    async fn call_timed(
        &self,
        head: Bytes,
        payload: Payload,
    ) -> Result<(S::Response, Bytes, usize), Error> {
        if let Some(handler) = crate::local::find(&self.peer) {
            let payload = crate::local::join(payload);
            let call = self.call_local(handler, head, payload);
            return match tokio::time::timeout(self.timeout, call).await {
                Ok(r) => r,
                Err(_) => Err(Error::Timeout {
                    peer: self.peer.to_string(),
                    after: self.timeout,
                }),
            };
        }
        let body = Segments::new(std::iter::once(head).chain(payload));
        match tokio::time::timeout(self.timeout, self.call_inner(body)).await {
            Ok(r) => r,
            Err(_) => Err(Error::Timeout {
                peer: self.peer.to_string(),
                after: self.timeout,
            }),
        }
    }

    /// A call to a service of this process (see [`crate::local`]).
    async fn call_local(
        &self,
        handler: crate::local::Handler,
        head: Bytes,
        payload: Bytes,
    ) -> Result<(S::Response, Bytes, usize), Error> {
        let peer = || self.peer.to_string();
        let call = handler(head, payload, self.transport.secret.expose());
        // In a task of its own, so that calls made together run in
        // parallel; in place on a thread that drives one request to its end
        // (a FUSE request thread), where a task would only add two wake-ups.
        let answer = if crate::may_block_here() {
            call.await
        } else {
            tokio::spawn(call).await.map_err(|e| Error::Connect {
                peer: peer(),
                message: format!("call failed: {e}"),
            })?
        };
        let (head, payload) = answer.map_err(|refused| match refused {
            crate::local::Refused::Unauthorized => Error::Unauthorized { peer: peer() },
            crate::local::Refused::Malformed(message) => Error::BadRequest {
                peer: peer(),
                message,
            },
        })?;
        let received = head.len() + payload.iter().map(Bytes::len).sum::<usize>();
        let (response, rest) =
            codec::decode_frame::<S::Response>(head).map_err(|message| Error::Decode {
                peer: peer(),
                message,
            })?;
        if !rest.is_empty() {
            return Err(Error::Decode {
                peer: peer(),
                message: "bytes after the response header".into(),
            });
        }
        Ok((response, crate::local::join(payload), received))
    }

    async fn call_inner(&self, body: Segments) -> Result<(S::Response, Bytes, usize), Error> {
        let peer = || self.peer.to_string();
        let request = Request::post(self.uri.clone())
            .header(SECRET_HEADER, self.transport.secret.expose())
            .body(body)
            .expect("a request built from a parsed URI and a valid header is valid");
        let response = self
            .transport
            .http
            .request(request)
            .await
            .map_err(|e| Error::Connect {
                peer: peer(),
                message: error_chain(&e),
            })?;
        let status = response.status();
        let body = Limited::new(response.into_body(), MAX_BODY)
            .collect()
            .await
            .map_err(|e| Error::Connect {
                peer: peer(),
                message: format!("reply interrupted: {e}"),
            })?
            .to_bytes();
        let received = body.len();
        match status {
            StatusCode::OK => match codec::decode_frame(body) {
                Ok((response, payload)) => Ok((response, payload, received)),
                Err(message) => Err(Error::Decode {
                    peer: peer(),
                    message,
                }),
            },
            StatusCode::UNAUTHORIZED => Err(Error::Unauthorized { peer: peer() }),
            StatusCode::BAD_REQUEST => Err(Error::BadRequest {
                peer: peer(),
                message: String::from_utf8_lossy(&body).trim().to_string(),
            }),
            s => Err(Error::Status {
                peer: peer(),
                status: s.as_u16(),
            }),
        }
    }
}

/// An error and its sources, joined with ": ".
pub fn error_chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut cur = e.source();
    while let Some(c) = cur {
        s.push_str(": ");
        s.push_str(&c.to_string());
        cur = c.source();
    }
    s
}
