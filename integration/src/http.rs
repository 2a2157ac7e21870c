//! A small HTTP/1 client for WebDAV tests.

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;

pub use hyper::{HeaderMap, Method, StatusCode};

#[derive(Debug)]
pub struct Reply {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub body: Bytes,
}

impl Reply {
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
}

#[derive(Clone)]
pub struct Http {
    client: Client<HttpConnector, Full<Bytes>>,
    base: String,
}

impl Http {
    /// A client for the server at `addr` ("127.0.0.1:8080").
    pub fn new(addr: &str) -> Self {
        Http {
            client: Client::builder(TokioExecutor::new()).build_http(),
            base: format!("http://{addr}"),
        }
    }

    /// The server's address ("127.0.0.1:8080").
    pub fn addr(&self) -> &str {
        self.base.trim_start_matches("http://")
    }

    /// `path` is sent as given (already escaped).
    pub async fn request(
        &self,
        method: &str,
        path: &str,
        headers: &[(&str, &str)],
        body: impl Into<Bytes>,
    ) -> anyhow::Result<Reply> {
        let mut req = hyper::Request::builder()
            .method(Method::from_bytes(method.as_bytes())?)
            .uri(format!("{}{}", self.base, path));
        for (k, v) in headers {
            req = req.header(*k, *v);
        }
        let resp = self
            .client
            .request(req.body(Full::new(body.into()))?)
            .await?;
        let status = resp.status();
        let headers = resp.headers().clone();
        let body = resp.into_body().collect().await?.to_bytes();
        Ok(Reply {
            status,
            headers,
            body,
        })
    }

    pub async fn put(&self, path: &str, body: impl Into<Bytes>) -> anyhow::Result<Reply> {
        self.request("PUT", path, &[], body).await
    }

    pub async fn get(&self, path: &str) -> anyhow::Result<Reply> {
        self.request("GET", path, &[], Bytes::new()).await
    }
}

/// A PUT whose body is fed chunk by chunk, never held whole.
pub struct StreamingPut {
    tx: futures::channel::mpsc::Sender<Bytes>,
    reply: tokio::task::JoinHandle<Result<StatusCode, String>>,
}

impl Http {
    /// Starts `PUT path` with a streamed (chunked) body.
    pub fn put_streaming(&self, path: &str) -> StreamingPut {
        self.put_streaming_with(path, &[])
    }

    /// [`Http::put_streaming`] with extra headers.
    pub fn put_streaming_with(&self, path: &str, headers: &[(&str, &str)]) -> StreamingPut {
        use futures::StreamExt;
        let (tx, rx) = futures::channel::mpsc::channel::<Bytes>(1);
        let body = http_body_util::StreamBody::new(
            rx.map(|b| Ok::<_, std::convert::Infallible>(hyper::body::Frame::data(b))),
        );
        let client = Client::builder(TokioExecutor::new()).build_http();
        let mut req = hyper::Request::put(format!("{}{path}", self.base));
        for (k, v) in headers {
            req = req.header(*k, *v);
        }
        let req = req.body(body);
        let reply = tokio::spawn(async move {
            let req = req.map_err(|e| e.to_string())?;
            client
                .request(req)
                .await
                .map(|r| r.status())
                .map_err(|e| e.to_string())
        });
        StreamingPut { tx, reply }
    }
}

impl StreamingPut {
    /// Sends one chunk; waits while the server is not reading.
    pub async fn send(&mut self, chunk: Bytes) -> anyhow::Result<()> {
        use futures::SinkExt;
        self.tx
            .send(chunk)
            .await
            .map_err(|_| anyhow::anyhow!("the upload ended early"))
    }

    /// Ends the body and waits for the reply: its status, or why there was none.
    pub async fn finish(self) -> Result<StatusCode, String> {
        drop(self.tx);
        self.reply.await.map_err(|e| e.to_string())?
    }
}
