//! The WebDAV front end: dav-server over `Fs`, served by hyper.

pub mod auth;
mod browse;
mod davfs;
pub mod errors;
mod locks;
mod props;

use std::convert::Infallible;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use dav_server::{DavConfig, DavHandler};
use http::{Request, Response, StatusCode};
use http_body_util::combinators::UnsyncBoxBody;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::server::graceful::GracefulShutdown;
use tessera_gateway::{Fs, split_path};
use tokio::net::TcpListener;
use tokio::sync::Semaphore;

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
        "PUT" | "LOCK" => Prefetch::Parent,
        "PROPFIND" if depth_one => Prefetch::Listing,
        _ => Prefetch::Inode,
    }
}

fn text(status: StatusCode, msg: String) -> Response<Body> {
    respond(status, "text/plain; charset=utf-8", msg)
}

/// A whole response: `status`, a `Content-Type` and a body.
fn respond(status: StatusCode, content_type: &'static str, body: String) -> Response<Body> {
    let mut r = Response::new(
        Full::new(Bytes::from(body))
            .map_err(|e: Infallible| match e {})
            .boxed_unsync(),
    );
    *r.status_mut() = status;
    r.headers_mut().insert(
        http::header::CONTENT_TYPE,
        http::HeaderValue::from_static(content_type),
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

/// Most bytes of a request line and headers (and of one read buffer).
const MAX_HEAD_BYTES: usize = 64 << 10;

/// Most byte ranges one GET may ask for (Apache allows 200).
const MAX_RANGES: usize = 64;

/// Refuses headers that are malformed or abusive before dav-server reads
/// them: a `Depth` other than 0, 1 or infinity; a `Destination` that is not
/// a URL or path, or whose path is malformed or climbs above the root; a
/// `Range` of more than [`MAX_RANGES`] parts.
pub fn check_headers(headers: &http::HeaderMap) -> Result<(), String> {
    if let Some(d) = headers.get("depth") {
        let ok = d.to_str().is_ok_and(|d| {
            matches!(
                d.trim().to_ascii_lowercase().as_str(),
                "0" | "1" | "infinity"
            )
        });
        if !ok {
            return Err(format!("bad Depth header {d:?}: use 0, 1 or infinity"));
        }
    }
    if let Some(dest) = headers.get("destination") {
        let dest = dest
            .to_str()
            .map_err(|_| "the Destination header is not text".to_string())?;
        let uri: http::Uri = dest
            .parse()
            .map_err(|_| format!("the Destination header {dest:?} is not a URL or path"))?;
        if uri.path().is_empty() || !uri.path().starts_with('/') {
            return Err(format!(
                "the Destination header {dest:?} has no absolute path"
            ));
        }
        check_path(uri.path()).map_err(|m| format!("Destination: {m}"))?;
    }
    for name in ["if-match", "if-none-match"] {
        if let Some(v) = headers.get(name) {
            let v = v
                .to_str()
                .map_err(|_| format!("the {name} header is not text"))?;
            check_etag_list(v).map_err(|why| format!("bad {name} header: {why}"))?;
        }
    }
    if let Some(v) = headers.get("if") {
        let v = v
            .to_str()
            .map_err(|_| "the If header is not text".to_string())?;
        check_if(v).map_err(|why| format!("bad If header: {why}"))?;
    }
    if let Some(range) = headers.get("range") {
        let parts = range.as_bytes().iter().filter(|b| **b == b',').count() + 1;
        if parts > MAX_RANGES {
            return Err(format!(
                "{parts} ranges in one Range header; at most {MAX_RANGES}"
            ));
        }
    }
    Ok(())
}

/// Checks an `If-Match` / `If-None-Match` value (RFC 9110 §13.1): `*`, or
/// entity tags `[W/]"..."` separated by commas. dav-server's parser panics
/// on a lone `"`.
pub fn check_etag_list(v: &str) -> Result<(), String> {
    if v.trim() == "*" {
        return Ok(());
    }
    for tag in v.split(',') {
        let tag = tag.trim();
        let quoted = tag.strip_prefix("W/").unwrap_or(tag);
        let ok = quoted.len() >= 2
            && quoted.starts_with('"')
            && quoted.ends_with('"')
            && !quoted[1..quoted.len() - 1].contains('"');
        if !ok {
            return Err(format!("{tag:?} is not an entity tag"));
        }
    }
    Ok(())
}

/// Checks an `If` header against RFC 4918 §10.4 before dav-server parses
/// it (its parser indexes past the end of an unclosed `<`, `[`):
/// `If = 1*( [ "<" Resource-Tag ">" ] "(" 1*( ["Not"] ( "<" State-token ">"
/// | "[" entity-tag "]" ) ) ")" )`.
pub fn check_if(v: &str) -> Result<(), String> {
    let b = v.as_bytes();
    let mut i = 0;
    let mut lists = 0;
    let skip = |i: &mut usize| {
        while *i < b.len() && b" 	".contains(&b[*i]) {
            *i += 1;
        }
    };
    // A `<...>` (no whitespace inside); returns the index after `>`.
    let coded = |i: usize| -> Result<usize, String> {
        let end = b[i + 1..]
            .iter()
            .position(|&c| c == b'>' || c.is_ascii_whitespace() || c == b'<')
            .map(|p| i + 1 + p)
            .filter(|&e| b[e] == b'>' && e > i + 1)
            .ok_or("an unclosed or empty <...>")?;
        Ok(end + 1)
    };
    loop {
        skip(&mut i);
        if i == b.len() {
            break;
        }
        match b[i] {
            b'<' => {
                i = coded(i)?;
                skip(&mut i);
                if i == b.len() || b[i] != b'(' {
                    return Err("a resource tag must be followed by a list".into());
                }
            }
            b'(' => {
                i += 1;
                let mut conditions = 0;
                loop {
                    skip(&mut i);
                    if i == b.len() {
                        return Err("an unclosed list".into());
                    }
                    if b[i] == b')' {
                        if conditions == 0 {
                            return Err("an empty list".into());
                        }
                        i += 1;
                        break;
                    }
                    if b[i..].starts_with(b"Not") {
                        i += 3;
                        skip(&mut i);
                        if i == b.len() {
                            return Err("Not without a condition".into());
                        }
                    }
                    match b[i] {
                        b'<' => i = coded(i)?,
                        b'[' => {
                            i += 1;
                            if b[i..].starts_with(b"W/") {
                                i += 2;
                            }
                            if i == b.len() || b[i] != b'"' {
                                return Err("an entity tag must be quoted".into());
                            }
                            let close = b[i + 1..]
                                .iter()
                                .position(|&c| c == b'"')
                                .ok_or("an unclosed entity tag")?;
                            let tag = &b[i + 1..i + 1 + close];
                            if tag
                                .iter()
                                .any(|c| c.is_ascii_whitespace() || c.is_ascii_control())
                            {
                                return Err("whitespace in an entity tag".into());
                            }
                            i += close + 2;
                            if i == b.len() || b[i] != b']' {
                                return Err("an unclosed [entity tag]".into());
                            }
                            i += 1;
                        }
                        _ => return Err("a condition must be <state-token> or [etag]".into()),
                    }
                    conditions += 1;
                }
                lists += 1;
            }
            _ => return Err("expected ( or <".into()),
        }
    }
    if lists == 0 {
        return Err("no condition list".into());
    }
    Ok(())
}

/// The authority of a `Destination` that names a server other than the
/// one the request was sent to (its `Host`).
fn foreign_destination(headers: &http::HeaderMap) -> Option<String> {
    let dest: http::Uri = headers.get("destination")?.to_str().ok()?.parse().ok()?;
    let authority = dest.authority()?.as_str().to_ascii_lowercase();
    let host = headers
        .get(http::header::HOST)
        .and_then(|h| h.to_str().ok())
        .map(|h| h.to_ascii_lowercase());
    (host.as_deref() != Some(authority.as_str())).then_some(authority)
}

/// Whether a COPY or MOVE would land on its own source or inside it (a
/// collection copied into itself would copy its own copy).
fn destination_within_source(source: &str, headers: &http::HeaderMap) -> bool {
    let components = |raw: &str| {
        percent_decode(raw)
            .and_then(|p| String::from_utf8(p).ok())
            .and_then(|p| split_path(&p).ok())
    };
    let Some(dest) = headers
        .get("destination")
        .and_then(|d| d.to_str().ok())
        .and_then(|d| d.parse::<http::Uri>().ok())
    else {
        return false;
    };
    match (components(source), components(dest.path())) {
        (Some(src), Some(dst)) => dst.starts_with(&src),
        _ => false,
    }
}

/// The decoded path of a request's `Destination`, if it has a valid one.
fn destination_path(headers: &http::HeaderMap) -> Option<String> {
    let dest: http::Uri = headers.get("destination")?.to_str().ok()?.parse().ok()?;
    String::from_utf8(percent_decode(dest.path())?).ok()
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
pub async fn serve_request(
    dav: &DavHandler,
    fs: &Fs,
    principal: Option<String>,
    req: Request<Incoming>,
) -> Response<Body> {
    if let Err(msg) = check_path(req.uri().path()) {
        return text(StatusCode::BAD_REQUEST, format!("{msg}\n"));
    }
    if let Err(msg) = check_headers(req.headers()) {
        return text(StatusCode::BAD_REQUEST, format!("{msg}\n"));
    }
    if matches!(req.method().as_str(), "COPY" | "MOVE")
        && destination_path(req.headers())
            .is_some_and(|d| split_path(&d).is_ok_and(|c| c.is_empty()))
    {
        // Overwriting the root would first delete everything in it.
        return text(
            StatusCode::FORBIDDEN,
            "the root collection cannot be overwritten; nothing was changed\n".into(),
        );
    }
    if matches!(req.method().as_str(), "COPY" | "MOVE")
        && destination_within_source(req.uri().path(), req.headers())
    {
        return text(
            StatusCode::FORBIDDEN,
            "the destination is the source or inside it; nothing was changed\n".into(),
        );
    }
    if let Some(other) = foreign_destination(req.headers()) {
        // RFC 4918 §9.8.5: a destination on another server is a 502.
        return text(
            StatusCode::BAD_GATEWAY,
            format!(
                "the Destination {other:?} is on another server; copy and move stay on this one\n"
            ),
        );
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
    let method = req.method().clone();
    let raw_path = req.uri().path().to_string();
    // A PUT may say the file's modification time (ownCloud's X-OC-Mtime,
    // which rclone and the tessera CLI send): applied once it is stored.
    let put_mtime = match put_mtime(&req) {
        Ok(m) => m,
        Err(msg) => return text(StatusCode::BAD_REQUEST, msg),
    };
    let mut own = DavFs::for_request(fs.clone(), prefetch_for(&req));
    if method.as_str() == "COPY"
        && let Some(dest) = destination_path(req.headers())
        && let Some(src) = percent_decode(&raw_path).and_then(|p| String::from_utf8(p).ok())
    {
        own = own.copying(&src, &dest);
    }
    if let Some(ns) = put_mtime {
        // Taken by the upload, which publishes with it; what is left after
        // the request (a ranged PUT) is applied below.
        own.windows_patch(Some(ns), Vec::new());
    }
    let ls = locks::MetaLs::new(own.clone(), principal.clone());
    let body_failed = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let req = req.map(|b| DrainOnDrop {
        body: Some(b),
        failed: body_failed.clone(),
    });
    if method.as_str() == "PROPFIND" {
        return propfind_request(fs, req).await;
    }
    let mut config = DavConfig::new()
        .filesystem(Box::new(own.clone()))
        .locksystem(Box::new(ls));
    if let Some(user) = principal {
        config = config.principal(user);
    }
    if method.as_str() == "PROPPATCH" {
        return proppatch_request(dav, config, &own, req).await;
    }
    let (resp, err) = if method.as_str() == "LOCK" {
        // dav-server parses a LOCK body with a recursive XML parser: a body
        // nested a few thousand deep overflowed the stack and aborted the
        // gateway. Read and check it first.
        let (parts, body) = req.into_parts();
        let body = match small_body(body).await {
            Ok(b) => b,
            Err(r) => return r,
        };
        let req = Request::from_parts(parts, Full::new(body));
        errors::with_error_slot(dav.handle_with(config, req)).await
    } else {
        errors::with_error_slot(dav.handle_with(config, req)).await
    };
    if body_failed.load(std::sync::atomic::Ordering::Relaxed) {
        // The client's body broke off (shorter than its Content-Length, bad
        // chunking): the upload failed on the client's side, and nothing
        // was stored.
        return text(
            StatusCode::BAD_REQUEST,
            "the request body ended early or was malformed; nothing was stored\n".into(),
        );
    }
    if let Some(err) = err
        && let Some((status, msg)) = errors::refine(resp.status(), &err)
    {
        return text(status, msg);
    }
    if put_mtime.is_some()
        && resp.status().is_success()
        && let Some(path) = percent_decode(&raw_path).and_then(|p| String::from_utf8(p).ok())
    {
        if let Err(e) = own.apply_windows_patch(&path).await {
            let (status, _) = errors::refine(StatusCode::INTERNAL_SERVER_ERROR, &e)
                .unwrap_or((StatusCode::INTERNAL_SERVER_ERROR, String::new()));
            return text(
                status,
                format!("stored, but its modification time was not set: {e}\n"),
            );
        }
        let mut resp = resp.map(|b| b.boxed_unsync());
        resp.headers_mut()
            .insert("x-oc-mtime", http::HeaderValue::from_static("accepted"));
        return resp;
    }
    // dav-server has no GET for collections: a browser gets a listing.
    if resp.status() == StatusCode::METHOD_NOT_ALLOWED
        && (method == http::Method::GET || method == http::Method::HEAD)
        && let Some(page) = browse::listing(fs, &raw_path).await
    {
        let body = if method == http::Method::HEAD {
            Bytes::new()
        } else {
            Bytes::from(page.clone())
        };
        let mut r = Response::new(
            Full::new(body)
                .map_err(|e: Infallible| match e {})
                .boxed_unsync(),
        );
        r.headers_mut().insert(
            http::header::CONTENT_TYPE,
            http::HeaderValue::from_static("text/html; charset=utf-8"),
        );
        r.headers_mut().insert(
            http::header::CONTENT_LENGTH,
            http::HeaderValue::from(page.len()),
        );
        return r;
    }
    resp.map(|b| b.boxed_unsync())
}

/// The modification time a PUT's `X-OC-Mtime` header gives (seconds since
/// the epoch, a fraction allowed), in ns; `Err` for a header that is not
/// one.
fn put_mtime<B>(req: &Request<B>) -> Result<Option<i64>, String> {
    if req.method() != http::Method::PUT {
        return Ok(None);
    }
    let Some(v) = req.headers().get("x-oc-mtime") else {
        return Ok(None);
    };
    let text = v.to_str().unwrap_or("").trim();
    if let Ok(secs) = text.parse::<i64>()
        && (0..100_000_000_000).contains(&secs)
    {
        return Ok(Some(secs * 1_000_000_000));
    }
    let secs = text
        .parse::<f64>()
        .ok()
        .filter(|s| s.is_finite() && *s >= 0.0 && *s < 1e11)
        .ok_or_else(|| {
            "X-OC-Mtime must be seconds since 1970 (e.g. 1700000000); nothing was stored\n"
                .to_string()
        })?;
    Ok(Some((secs * 1e9) as i64))
}

/// Reads a request body of at most [`props::MAX_BODY`] bytes.
async fn small_body<B>(body: B) -> Result<Bytes, Response<Body>>
where
    B: http_body::Body<Data = Bytes>,
    B::Error: std::error::Error + Send + Sync + 'static,
{
    match http_body_util::Limited::new(body, props::MAX_BODY)
        .collect()
        .await
    {
        Ok(b) => {
            let b = b.to_bytes();
            if !props::shallow(&b, props::MAX_DEPTH) {
                return Err(text(
                    StatusCode::BAD_REQUEST,
                    format!(
                        "the XML body nests deeper than {} elements\n",
                        props::MAX_DEPTH
                    ),
                ));
            }
            Ok(b)
        }
        Err(e) if e.is::<http_body_util::LengthLimitError>() => Err(text(
            StatusCode::PAYLOAD_TOO_LARGE,
            format!("the request body is over {} bytes\n", props::MAX_BODY),
        )),
        Err(_) => Err(text(
            StatusCode::BAD_REQUEST,
            "the request body ended early or was malformed\n".into(),
        )),
    }
}

fn xml_response(status: StatusCode, body: String) -> Response<Body> {
    respond(status, "application/xml; charset=utf-8", body)
}

/// PROPFIND, answered by [`props::propfind`]. Depth infinity is refused
/// (RFC 4918 §9.1: `propfind-finite-depth`), as Apache does by default: a
/// whole tree in one answer is a denial of service waiting to happen.
async fn propfind_request<B>(fs: &Fs, req: Request<B>) -> Response<Body>
where
    B: http_body::Body<Data = Bytes>,
    B::Error: std::error::Error + Send + Sync + 'static,
{
    let depth = req
        .headers()
        .get("depth")
        .map(|d| d.as_bytes().trim_ascii().to_ascii_lowercase());
    let depth_one = match depth.as_deref() {
        Some(b"0") => false,
        Some(b"1") => true,
        _ => {
            return xml_response(
                StatusCode::FORBIDDEN,
                "<?xml version=\"1.0\" encoding=\"utf-8\"?>\n<D:error xmlns:D=\"DAV:\">\
                 <D:propfind-finite-depth/></D:error>\n"
                    .into(),
            );
        }
    };
    let Some(path) = percent_decode(req.uri().path()).and_then(|p| String::from_utf8(p).ok())
    else {
        return text(StatusCode::BAD_REQUEST, "malformed path\n".into());
    };
    let headers = req.headers().clone();
    let body = match small_body(req.into_body()).await {
        Ok(b) => b,
        Err(r) => return r,
    };
    match props::propfind(fs, &path, depth_one, &headers, &body).await {
        Ok(xml) => xml_response(StatusCode::MULTI_STATUS, xml),
        Err(props::Refusal(status, msg)) => text(status, msg),
    }
}

/// PROPPATCH: dav-server applies it (live properties refused, dead ones
/// through [`DavFs`], If headers and locks checked), and Tessera applies
/// the Windows properties dav-server only pretends to set — in the same
/// change as the dead properties when there are any, else once every
/// property of the request succeeded.
async fn proppatch_request<B>(
    dav: &DavHandler,
    config: DavConfig,
    own: &DavFs,
    req: Request<B>,
) -> Response<Body>
where
    B: http_body::Body<Data = Bytes>,
    B::Error: std::error::Error + Send + Sync + 'static,
{
    let (parts, body) = req.into_parts();
    let body = match small_body(body).await {
        Ok(b) => b,
        Err(r) => return r,
    };
    let (mtime, keep) = props::win32_patch(&body);
    let windows = mtime.is_some() || !keep.is_empty();
    if windows {
        own.windows_patch(mtime, keep);
    }
    let path = percent_decode(parts.uri.path()).and_then(|p| String::from_utf8(p).ok());
    let req = Request::from_parts(parts, Full::new(body));
    let (resp, err) = errors::with_error_slot(dav.handle_with(config, req)).await;
    if let Some(err) = err
        && let Some((status, msg)) = errors::refine(resp.status(), &err)
    {
        return text(status, msg);
    }
    if !windows || resp.status() != StatusCode::MULTI_STATUS || !own.windows_pending() {
        return resp.map(|b| b.boxed_unsync());
    }
    let (parts, body) = resp.into_parts();
    let Ok(collected) = body.collect().await.map(|b| b.to_bytes()) else {
        return text(
            StatusCode::INTERNAL_SERVER_ERROR,
            "PROPPATCH failed\n".into(),
        );
    };
    if props::all_ok(&collected)
        && let Some(path) = path
        && let Err(e) = own.apply_windows_patch(&path).await
    {
        return text(
            errors::refine(StatusCode::INTERNAL_SERVER_ERROR, &e)
                .map_or(StatusCode::INTERNAL_SERVER_ERROR, |(s, _)| s),
            format!("{e}\n"),
        );
    }
    Response::from_parts(
        parts,
        Full::new(collected)
            .map_err(|e: Infallible| match e {})
            .boxed_unsync(),
    )
}

/// A request body that, if the request is answered before all of it was
/// read (a PUT refused half-way: 507, 412), reads and discards the rest in
/// the background for a while. Closing at once would reset the connection
/// with the client's bytes unread, and the client would see "connection
/// reset" instead of the answer (a lingering close, as Apache does).
struct DrainOnDrop {
    body: Option<Incoming>,
    /// Set when reading the body failed (it ended early, or was malformed).
    failed: Arc<std::sync::atomic::AtomicBool>,
}

/// Most a refused upload is drained, in bytes and time.
const DRAIN_BYTES: u64 = 1 << 30;
const DRAIN_TIME: Duration = Duration::from_secs(10);

impl http_body::Body for DrainOnDrop {
    type Data = Bytes;
    type Error = hyper::Error;

    fn poll_frame(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<http_body::Frame<Bytes>, hyper::Error>>> {
        let polled = match self.body.as_mut() {
            Some(b) => std::pin::Pin::new(b).poll_frame(cx),
            None => return std::task::Poll::Ready(None),
        };
        if let std::task::Poll::Ready(Some(Err(_))) = &polled {
            self.failed
                .store(true, std::sync::atomic::Ordering::Relaxed);
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.body.as_ref().is_none_or(|b| b.is_end_stream())
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.body
            .as_ref()
            .map(|b| b.size_hint())
            .unwrap_or_else(|| http_body::SizeHint::with_exact(0))
    }
}

impl Drop for DrainOnDrop {
    fn drop(&mut self) {
        let Some(mut body) = self.body.take() else {
            return;
        };
        if http_body::Body::is_end_stream(&body) {
            return;
        }
        if let Ok(rt) = tokio::runtime::Handle::try_current() {
            rt.spawn(async move {
                let _ = tokio::time::timeout(DRAIN_TIME, async {
                    let mut seen = 0u64;
                    while let Some(Ok(frame)) = body.frame().await {
                        seen += frame.data_ref().map_or(0, |d| d.len() as u64);
                        if seen > DRAIN_BYTES {
                            break;
                        }
                    }
                })
                .await;
            });
        }
    }
}

/// Bounds on what the WebDAV listener holds for its clients.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// Connections served at once; one more is answered 503 and closed.
    pub max_connections: usize,
    /// A client must send a request's whole header within this long (and
    /// an idle keep-alive connection is closed after it): a slowloris
    /// cannot hold sockets forever.
    pub header_read_timeout: Duration,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_connections: 1024,
            header_read_timeout: Duration::from_secs(30),
        }
    }
}

/// Serves WebDAV on `listener` until `shutdown` resolves, then lets open
/// requests finish.
pub async fn serve(listener: TcpListener, fs: Fs, shutdown: impl Future<Output = ()>) {
    serve_with(listener, fs, Limits::default(), shutdown).await
}

/// [`serve`] with explicit [`Limits`].
pub async fn serve_with(
    listener: TcpListener,
    fs: Fs,
    limits: Limits,
    shutdown: impl Future<Output = ()>,
) {
    serve_secure(listener, fs, limits, Security::default(), shutdown).await
}

/// Who may use a gateway and how they reach it.
#[derive(Default, Clone)]
pub struct Security {
    /// Basic authentication against a users file; `None`: anyone.
    pub auth: Option<Arc<auth::Auth>>,
    /// TLS; `None`: plain HTTP.
    pub tls: Option<tokio_rustls::TlsAcceptor>,
}

/// The answer to a request that was not let in: 401 with a challenge (or
/// 429 when its address failed too often), saying nothing more.
fn denied(d: auth::Denied) -> Response<Body> {
    let msg = match d {
        auth::Denied::Unauthorized => "authentication required\n",
        auth::Denied::TooMany => "too many failed logins from this address; wait a minute\n",
    };
    let mut r = text(d.status(), msg.into());
    match d {
        auth::Denied::Unauthorized => {
            r.headers_mut().insert(
                http::header::WWW_AUTHENTICATE,
                http::HeaderValue::from_str(&format!(
                    "Basic realm=\"{}\", charset=\"UTF-8\"",
                    auth::REALM
                ))
                .expect("a valid header"),
            );
        }
        auth::Denied::TooMany => {
            r.headers_mut().insert(
                http::header::RETRY_AFTER,
                http::HeaderValue::from(auth::FAILURE_WINDOW.as_secs()),
            );
        }
    }
    r
}

/// [`serve_with`] behind authentication and TLS as `security` says.
pub async fn serve_secure(
    listener: TcpListener,
    fs: Fs,
    limits: Limits,
    security: Security,
    shutdown: impl Future<Output = ()>,
) {
    let dav = handler(fs.clone());
    let graceful = GracefulShutdown::new();
    let slots = Arc::new(Semaphore::new(limits.max_connections.max(1)));
    let mut shutdown = std::pin::pin!(shutdown);
    loop {
        let (stream, peer) = tokio::select! {
            a = listener.accept() => match a {
                Ok(x) => x,
                Err(e) => {
                    tracing::warn!(error = %e, "webdav accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            _ = &mut shutdown => break,
        };
        let Ok(permit) = slots.clone().try_acquire_owned() else {
            tracing::warn!(%peer, limit = limits.max_connections, "too many connections: answered 503");
            tokio::spawn(refuse_busy(stream));
            continue;
        };
        let _ = stream.set_nodelay(true);
        let (dav, fs, auth) = (dav.clone(), fs.clone(), security.auth.clone());
        let service = service_fn(move |req: Request<Incoming>| {
            let (dav, fs, auth) = (dav.clone(), fs.clone(), auth.clone());
            async move {
                let principal = match &auth {
                    Some(a) => match a.check(req.headers(), peer.ip()).await {
                        Ok(user) => Some(user),
                        Err(d) => return Ok::<_, Infallible>(denied(d)),
                    },
                    None => None,
                };
                Ok(serve_request(&dav, &fs, principal, req).await)
            }
        });
        let builder = {
            let mut b = hyper::server::conn::http1::Builder::new();
            b.timer(TokioTimer::new())
                .header_read_timeout(limits.header_read_timeout)
                // Request line and headers past this are refused (431), as
                // Apache refuses fields past 8 KiB.
                .max_buf_size(MAX_HEAD_BYTES);
            b
        };
        match &security.tls {
            None => {
                let conn = graceful.watch(builder.serve_connection(TokioIo::new(stream), service));
                tokio::spawn(async move {
                    let _permit = permit;
                    let _ = conn.await;
                });
            }
            Some(tls) => {
                // The handshake runs in the connection's task, bounded like
                // a request header, so a silent client holds nothing else.
                let tls = tls.clone();
                let watcher = graceful.watcher();
                let timeout = limits.header_read_timeout;
                tokio::spawn(async move {
                    let _permit = permit;
                    let stream = match tokio::time::timeout(timeout, tls.accept(stream)).await {
                        Ok(Ok(s)) => s,
                        Ok(Err(e)) => {
                            tracing::debug!(%peer, error = %e, "TLS handshake failed");
                            return;
                        }
                        Err(_) => return,
                    };
                    let conn = builder.serve_connection(TokioIo::new(stream), service);
                    let _ = watcher.watch(conn).await;
                });
            }
        }
    }
    drop(listener);
    // Open connections get a while to finish, then are dropped.
    let _ = tokio::time::timeout(Duration::from_secs(10), graceful.shutdown()).await;
}

/// Answers a connection over the limit with a 503 and closes it.
async fn refuse_busy(mut stream: tokio::net::TcpStream) {
    use tokio::io::AsyncWriteExt;
    let body = "too many connections to this gateway; retry shortly\n";
    let reply = format!(
        "HTTP/1.1 503 Service Unavailable\r\nContent-Type: text/plain\r\nContent-Length: {}\r\nRetry-After: 1\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    let _ = tokio::time::timeout(Duration::from_secs(2), async {
        let _ = stream.write_all(reply.as_bytes()).await;
        let _ = stream.shutdown().await;
    })
    .await;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn etag_lists() {
        for ok in ["*", "\"a\"", "W/\"a\", \"b\"", "\"\""] {
            assert!(check_etag_list(ok).is_ok(), "{ok}");
        }
        for bad in ["\"", "W/\"", "a", "\"a\",", "\"a\"b\"", ""] {
            assert!(check_etag_list(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn if_headers() {
        for ok in [
            "(<opaquelocktoken:a-b>)",
            "(Not <urn:uuid:x> [\"etag\"])",
            "<http://h/a> ([W/\"1-2\"]) (<urn:x>)",
            "  (<a>)(<b>)  ",
        ] {
            assert!(check_if(ok).is_ok(), "{ok}");
        }
        for bad in [
            "[",
            "(",
            "<",
            "(<a",
            "(<a>",
            "([\"x\"",
            "([x])",
            "()",
            "<a>",
            "Not",
            "(Not)",
            "(<a b>)",
            "x",
            "",
            "([\"a b\"])",
            "(<>)",
        ] {
            assert!(check_if(bad).is_err(), "{bad}");
        }
    }

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
