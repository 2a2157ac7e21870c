//! The WebDAV front end: dav-server over `Fs`, served by hyper.

mod davfs;
pub mod errors;

use std::convert::Infallible;
use std::future::Future;

use bytes::Bytes;
use dav_server::{DavConfig, DavHandler};
use http::{Request, Response, StatusCode};
use http_body_util::combinators::UnsyncBoxBody;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use hyper_util::server::graceful::GracefulShutdown;
use tessera_gateway::{Fs, split_path};
use tokio::net::TcpListener;

pub use davfs::{DavFs, Prefetch};

type Body = UnsyncBoxBody<Bytes, std::io::Error>;

/// The WebDAV handler over `fs`; each request gets its own [`DavFs`]
/// (see [`serve_request`]).
pub fn handler(fs: Fs) -> DavHandler {
    DavHandler::builder()
        .filesystem(Box::new(DavFs::new(fs)))
        .read_buf_size(1 << 20)
        .build_handler()
}

/// What a request will ask of meta first.
fn prefetch_for(req: &Request<Incoming>) -> Prefetch {
    let depth_one = req
        .headers()
        .get("depth")
        .is_some_and(|d| d.as_bytes().trim_ascii() == b"1");
    match req.method().as_str() {
        "PUT" => Prefetch::Parent,
        "PROPFIND" if depth_one => Prefetch::Listing,
        _ => Prefetch::Inode,
    }
}

fn text(status: StatusCode, msg: String) -> Response<Body> {
    let mut r = Response::new(
        Full::new(Bytes::from(msg))
            .map_err(|e: Infallible| match e {})
            .boxed_unsync(),
    );
    *r.status_mut() = status;
    r.headers_mut().insert(
        http::header::CONTENT_TYPE,
        http::HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    r
}

/// Decodes %XX escapes; `None` if an escape is malformed.
fn percent_decode(s: &str) -> Option<Vec<u8>> {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' {
            let hex = std::str::from_utf8(b.get(i + 1..i + 3)?).ok()?;
            out.push(u8::from_str_radix(hex, 16).ok()?);
            i += 3;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    Some(out)
}

/// Refuses paths with a NUL, `..` above the root, a name over 255 bytes,
/// bad escapes or non-UTF-8 bytes, before anything else looks at them.
pub fn check_path(raw: &str) -> Result<(), String> {
    let decoded = percent_decode(raw).ok_or("malformed percent-escape in the path")?;
    let path = String::from_utf8(decoded).map_err(|_| "the path is not UTF-8".to_string())?;
    split_path(&path).map(|_| ()).map_err(|e| e.to_string())
}

/// Whether a (valid) request path names the root collection.
fn is_root(raw: &str) -> bool {
    percent_decode(raw)
        .and_then(|p| String::from_utf8(p).ok())
        .and_then(|p| split_path(&p).ok())
        .is_some_and(|c| c.is_empty())
}

/// Answers one request, through a [`DavFs`] of its own: what the request
/// looks up first is fetched with what it will want next, so a PUT costs
/// two calls to meta and a PROPFIND of depth 1 one.
pub async fn serve_request(dav: &DavHandler, fs: &Fs, req: Request<Incoming>) -> Response<Body> {
    if let Err(msg) = check_path(req.uri().path()) {
        return text(StatusCode::BAD_REQUEST, format!("{msg}\n"));
    }
    // dav-server deletes a collection's members before the collection: for
    // the root, that emptied the file system and then answered 403. A
    // refused request must change nothing.
    if req.method() == http::Method::DELETE && is_root(req.uri().path()) {
        return text(
            StatusCode::FORBIDDEN,
            "the root collection cannot be deleted; nothing was changed\n".into(),
        );
    }
    let own = DavFs::for_request(fs.clone(), prefetch_for(&req));
    let config = DavConfig::new().filesystem(Box::new(own));
    let (resp, err) = errors::with_error_slot(dav.handle_with(config, req)).await;
    if let Some(err) = err
        && let Some((status, msg)) = errors::refine(resp.status(), &err)
    {
        return text(status, msg);
    }
    resp.map(|b| b.boxed_unsync())
}

/// Serves WebDAV on `listener` until `shutdown` resolves, then lets open
/// requests finish.
pub async fn serve(listener: TcpListener, fs: Fs, shutdown: impl Future<Output = ()>) {
    let dav = handler(fs.clone());
    let graceful = GracefulShutdown::new();
    let mut shutdown = std::pin::pin!(shutdown);
    loop {
        let (stream, _peer) = tokio::select! {
            a = listener.accept() => match a {
                Ok(x) => x,
                Err(e) => {
                    tracing::warn!(error = %e, "webdav accept failed");
                    tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                    continue;
                }
            },
            _ = &mut shutdown => break,
        };
        let _ = stream.set_nodelay(true);
        let (dav, fs) = (dav.clone(), fs.clone());
        let conn = hyper::server::conn::http1::Builder::new().serve_connection(
            TokioIo::new(stream),
            service_fn(move |req| {
                let (dav, fs) = (dav.clone(), fs.clone());
                async move { Ok::<_, Infallible>(serve_request(&dav, &fs, req).await) }
            }),
        );
        let conn = graceful.watch(conn);
        tokio::spawn(async move {
            let _ = conn.await;
        });
    }
    drop(listener);
    // Open connections get a while to finish, then are dropped.
    let _ = tokio::time::timeout(std::time::Duration::from_secs(10), graceful.shutdown()).await;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn path_checks() {
        assert!(check_path("/a/b%20c.txt").is_ok());
        assert!(check_path("/a/../b").is_ok());
        assert!(check_path("/a%00b").is_err());
        assert!(check_path("/..").is_err());
        assert!(check_path("/a/%2e%2e/%2e%2e/etc").is_err());
        assert!(check_path(&format!("/{}", "x".repeat(256))).is_err());
        assert!(check_path("/bad%zz").is_err());
        assert!(check_path("/%ff").is_err());
        for root in ["/", "//", "/./", "/a/..", "/%2e/"] {
            assert!(is_root(root), "{root}");
        }
        assert!(!is_root("/a") && !is_root("/a/"));
    }
}
