//! A WebDAV client for the command line: any Tessera gateway (or any
//! WebDAV server) over HTTP/1.1 with keep-alive, Basic auth, and bodies
//! streamed both ways.

use std::time::SystemTime;

use bytes::Bytes;
use http::{HeaderMap, HeaderValue, Method, Request, Response, StatusCode, header};
use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt, Empty, Full};
use hyper::body::Incoming;
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use quick_xml::events::Event;
use quick_xml::name::ResolveResult;
use quick_xml::reader::NsReader;
use tokio_rustls::rustls::{ClientConfig, RootCertStore};
use xmltree::{Element, XMLNode};

use super::CliError;
use super::path::RemotePath;

pub type Body = BoxBody<Bytes, std::io::Error>;

/// One entry of a listing, from a PROPFIND answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    /// The absolute remote path ("/a/b.txt"; "/" for the root).
    pub path: String,
    pub dir: bool,
    pub size: u64,
    /// Seconds since the epoch (0: unknown).
    pub mtime: i64,
    /// The strong ETag, without quotes.
    pub etag: Option<String>,
}

impl Entry {
    /// The last component of the path ("" for the root).
    pub fn name(&self) -> &str {
        self.path.rsplit('/').next().unwrap_or("")
    }
}

#[derive(Clone)]
pub struct Dav {
    http: Client<HttpsConnector<HttpConnector>, Body>,
    /// "http://host:port", no trailing slash.
    origin: String,
    /// The path the URL gives ("" or "/prefix").
    prefix: String,
    auth: Option<HeaderValue>,
}

impl Dav {
    /// A client for `url` ("http://127.0.0.1:8080", "https://…", with a
    /// path prefix or not). Over https the server's certificate must chain
    /// to `ca_cert` (PEM) if given, else to the system's roots.
    pub fn new(
        url: &str,
        auth: Option<(String, String)>,
        ca_cert: Option<&std::path::Path>,
    ) -> Result<Dav, CliError> {
        let uri: http::Uri = url
            .parse()
            .map_err(|e| CliError::usage(format!("--url {url:?} is not a URL: {e}")))?;
        let scheme = match uri.scheme_str() {
            Some(s @ ("http" | "https")) => s.to_string(),
            _ => {
                return Err(CliError::usage(format!(
                    "--url {url:?}: give http://HOST:PORT or https://HOST:PORT"
                )));
            }
        };
        let authority = uri
            .authority()
            .ok_or_else(|| CliError::usage(format!("--url {url:?} names no host")))?;
        let mut connector = HttpConnector::new();
        connector.set_nodelay(true);
        connector.set_connect_timeout(Some(std::time::Duration::from_secs(5)));
        connector.enforce_http(false);
        let tls = tls_config(ca_cert)?;
        let connector = hyper_rustls::HttpsConnectorBuilder::new()
            .with_tls_config(tls)
            .https_or_http()
            .enable_http1()
            .wrap_connector(connector);
        let http = Client::builder(TokioExecutor::new())
            .pool_max_idle_per_host(64)
            .build(connector);
        let auth = auth.map(|(user, password)| {
            use base64::Engine;
            let token =
                base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}"));
            HeaderValue::from_str(&format!("Basic {token}")).expect("base64 is a valid header")
        });
        Ok(Dav {
            http,
            origin: format!("{scheme}://{authority}"),
            prefix: uri.path().trim_end_matches('/').to_string(),
            auth,
        })
    }

    /// The URL of `path` (escaped), with a trailing slash for a collection.
    fn url(&self, path: &RemotePath, dir: bool) -> String {
        let mut u = format!("{}{}{}", self.origin, self.prefix, path.escaped());
        if dir && !u.ends_with('/') {
            u.push('/');
        }
        u
    }

    /// "http://host:port" and the path prefix of the URL.
    pub fn origin(&self) -> String {
        format!("{}{}", self.origin, self.prefix)
    }

    /// The URL of `path` for a Destination header.
    pub fn destination(&self, path: &RemotePath, dir: bool) -> String {
        self.url(path, dir)
    }

    /// Sends one request; the caller reads the answer.
    pub async fn send(
        &self,
        method: Method,
        path: &RemotePath,
        dir: bool,
        headers: &[(header::HeaderName, String)],
        body: Body,
    ) -> Result<Response<Incoming>, CliError> {
        let mut req = Request::builder().method(method).uri(self.url(path, dir));
        if let Some(a) = &self.auth {
            req = req.header(header::AUTHORIZATION, a.clone());
        }
        for (k, v) in headers {
            req = req.header(k, v);
        }
        let req = req
            .body(body)
            .map_err(|e| CliError::usage(format!("{path}: {e}")))?;
        self.http.request(req).await.map_err(|e| {
            CliError::failed(
                path.as_str(),
                format!(
                    "cannot reach the gateway at {}: {}",
                    self.origin,
                    tessera_rpc::client::error_chain(&e)
                ),
            )
        })
    }

    /// A request without a body whose answer is read whole.
    pub async fn call(
        &self,
        method: Method,
        path: &RemotePath,
        dir: bool,
        headers: &[(header::HeaderName, String)],
        body: Bytes,
    ) -> Result<(StatusCode, HeaderMap, Bytes), CliError> {
        let r = self.send(method, path, dir, headers, full(body)).await?;
        let (parts, body) = r.into_parts();
        let body = body
            .collect()
            .await
            .map_err(|e| CliError::failed(path.as_str(), format!("answer cut short: {e}")))?
            .to_bytes();
        Ok((parts.status, parts.headers, body))
    }

    /// PROPFIND at `depth` ("0", "1", "infinity"): the entries, the path
    /// itself first.
    pub async fn propfind(&self, path: &RemotePath, depth: &str) -> Result<Vec<Entry>, CliError> {
        const ASK: &str = "<?xml version=\"1.0\"?><D:propfind xmlns:D=\"DAV:\"><D:prop>\
            <D:resourcetype/><D:getcontentlength/><D:getlastmodified/><D:getetag/>\
            </D:prop></D:propfind>";
        let (status, _, body) = self
            .call(
                Method::from_bytes(b"PROPFIND").expect("valid method"),
                path,
                false,
                &[
                    (header::HeaderName::from_static("depth"), depth.to_string()),
                    (header::CONTENT_TYPE, "application/xml".into()),
                ],
                Bytes::from_static(ASK.as_bytes()),
            )
            .await?;
        if status != StatusCode::MULTI_STATUS {
            return Err(CliError::status(path.as_str(), status, &body));
        }
        let mut entries = parse_multistatus(&body, &self.prefix)
            .map_err(|e| CliError::failed(path.as_str(), format!("unreadable listing: {e}")))?;
        // The path itself first, the rest in name order.
        let me = path.as_str().trim_end_matches('/').to_string();
        entries.sort_by(|a, b| {
            (a.path.trim_end_matches('/') != me, &a.path)
                .cmp(&(b.path.trim_end_matches('/') != me, &b.path))
        });
        Ok(entries)
    }

    /// The entry at `path`, or `None` when there is none (404).
    pub async fn stat(&self, path: &RemotePath) -> Result<Option<Entry>, CliError> {
        match self.propfind(path, "0").await {
            Ok(mut e) if !e.is_empty() => Ok(Some(e.remove(0))),
            Ok(_) => Err(CliError::failed(path.as_str(), "the server listed nothing")),
            Err(e) if e.status == Some(StatusCode::NOT_FOUND) => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// Who holds the lock on `path` and until when ("alice until 14:02
    /// UTC"), if the server says.
    pub async fn lock_holder(&self, path: &RemotePath) -> Option<String> {
        const ASK: &str = "<?xml version=\"1.0\"?><D:propfind xmlns:D=\"DAV:\"><D:prop>\
            <D:lockdiscovery/></D:prop></D:propfind>";
        let (status, _, body) = self
            .call(
                Method::from_bytes(b"PROPFIND").expect("valid method"),
                path,
                false,
                &[(header::HeaderName::from_static("depth"), "0".into())],
                Bytes::from_static(ASK.as_bytes()),
            )
            .await
            .ok()?;
        if status != StatusCode::MULTI_STATUS {
            return None;
        }
        lock_holder(&body, SystemTime::now())
    }

    /// Sets `path`'s modification time (a PROPPATCH of the property
    /// Windows clients set; Tessera applies it as the file's mtime).
    pub async fn set_mtime(&self, path: &RemotePath, mtime: SystemTime) -> Result<(), CliError> {
        let body = format!(
            "<?xml version=\"1.0\"?><D:propertyupdate xmlns:D=\"DAV:\" \
             xmlns:Z=\"urn:schemas-microsoft-com:\"><D:set><D:prop>\
             <Z:Win32LastModifiedTime>{}</Z:Win32LastModifiedTime>\
             </D:prop></D:set></D:propertyupdate>",
            httpdate::fmt_http_date(mtime)
        );
        let (status, _, body) = self
            .call(
                Method::from_bytes(b"PROPPATCH").expect("valid method"),
                path,
                false,
                &[(header::CONTENT_TYPE, "application/xml".into())],
                Bytes::from(body),
            )
            .await?;
        if status != StatusCode::MULTI_STATUS && !status.is_success() {
            return Err(CliError::status(path.as_str(), status, &body));
        }
        Ok(())
    }
}

/// TLS for https URLs: the roots in `ca_cert`, else the system's.
fn tls_config(ca_cert: Option<&std::path::Path>) -> Result<ClientConfig, CliError> {
    use rustls_pki_types::CertificateDer;
    use rustls_pki_types::pem::PemObject;
    let builder = ClientConfig::builder_with_provider(std::sync::Arc::new(
        tokio_rustls::rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .map_err(|e| CliError::usage(format!("TLS: {e}")))?;
    let config = match ca_cert {
        Some(path) => {
            let mut roots = RootCertStore::empty();
            let certs = CertificateDer::pem_file_iter(path)
                .and_then(|i| i.collect::<Result<Vec<_>, _>>())
                .map_err(|e| CliError::usage(format!("--ca-cert {}: {e}", path.display())))?;
            let (added, _) = roots.add_parsable_certificates(certs);
            if added == 0 {
                return Err(CliError::usage(format!(
                    "--ca-cert {}: no certificate in it",
                    path.display()
                )));
            }
            builder.with_root_certificates(roots).with_no_client_auth()
        }
        None => {
            use hyper_rustls::ConfigBuilderExt;
            builder
                .with_native_roots()
                .map_err(|e| {
                    CliError::usage(format!("cannot read the system's certificates: {e}"))
                })?
                .with_no_client_auth()
        }
    };
    Ok(config)
}

/// The body of an answer read for its error message: whatever arrived
/// (nothing if it broke off), since the status already says it failed.
pub async fn error_body(resp: Response<Incoming>) -> Bytes {
    resp.into_body()
        .collect()
        .await
        .map(|b| b.to_bytes())
        .unwrap_or_default()
}

pub fn full(b: Bytes) -> Body {
    Full::new(b).map_err(|never| match never {}).boxed()
}

pub fn empty() -> Body {
    Empty::new().map_err(|never| match never {}).boxed()
}

const DAV_NS: &str = "DAV:";

fn dav_child<'a>(e: &'a Element, name: &str) -> Option<&'a Element> {
    e.children
        .iter()
        .filter_map(XMLNode::as_element)
        .find(|c| c.name == name && c.namespace.as_deref() == Some(DAV_NS))
}

fn text(e: &Element) -> String {
    e.get_text()
        .map(|t| t.trim().to_string())
        .unwrap_or_default()
}

/// The DAV: elements a listing reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Tag {
    Response,
    Href,
    Propstat,
    Status,
    ResourceType,
    Collection,
    Length,
    Modified,
    Etag,
    Other,
}

fn tag(ns: &ResolveResult<'_>, local: &str) -> Tag {
    if !matches!(ns, ResolveResult::Bound(n) if n.0 == DAV_NS) {
        return Tag::Other;
    }
    match local {
        "response" => Tag::Response,
        "href" => Tag::Href,
        "propstat" => Tag::Propstat,
        "status" => Tag::Status,
        "resourcetype" => Tag::ResourceType,
        "collection" => Tag::Collection,
        "getcontentlength" => Tag::Length,
        "getlastmodified" => Tag::Modified,
        "getetag" => Tag::Etag,
        _ => Tag::Other,
    }
}

/// The text of a predefined or character entity reference.
fn entity(name: &str) -> Option<char> {
    Some(match name {
        "amp" => '&',
        "lt" => '<',
        "gt" => '>',
        "quot" => '"',
        "apos" => '\'',
        _ => {
            let n = name.strip_prefix('#')?;
            let code = match n.strip_prefix('x') {
                Some(hex) => u32::from_str_radix(hex, 16).ok()?,
                None => n.parse().ok()?,
            };
            char::from_u32(code)?
        }
    })
}

/// What one propstat says, applied if its status is 200.
#[derive(Default)]
struct Props {
    ok: bool,
    dir: Option<bool>,
    size: Option<u64>,
    mtime: Option<i64>,
    etag: Option<String>,
}

/// The entries of a multistatus body; hrefs made server-relative paths
/// without `prefix`, percent-decoded. A streaming parse: a listing of
/// thousands of entries is a megabyte or more of XML.
pub fn parse_multistatus(body: &[u8], prefix: &str) -> Result<Vec<Entry>, String> {
    let text = std::str::from_utf8(body).map_err(|e| e.to_string())?;
    let mut reader = NsReader::from_str(text);
    let mut stack: Vec<Tag> = Vec::new();
    let mut out = Vec::new();
    let mut buf = String::new();
    let mut entry: Option<Entry> = None;
    let mut props = Props::default();
    loop {
        let (ns, event) = reader.read_resolved_event().map_err(|e| e.to_string())?;
        let (t, ended) = match &event {
            Event::Start(e) => (tag(&ns, e.local_name().as_ref()), false),
            Event::Empty(e) => (tag(&ns, e.local_name().as_ref()), true),
            Event::End(e) => {
                let t = tag(&ns, e.local_name().as_ref());
                match stack.pop() {
                    Some(open) if open == t => {}
                    _ => return Err("mismatched end tag".into()),
                }
                finish(t, &mut buf, &mut entry, &mut props, &mut out, prefix);
                continue;
            }
            Event::Text(e) => {
                buf.push_str(&e.xml10_content());
                continue;
            }
            Event::CData(e) => {
                buf.push_str(&e.xml10_content());
                continue;
            }
            Event::GeneralRef(r) => {
                let name = r.xml10_content();
                buf.push(entity(&name).ok_or_else(|| format!("unknown entity &{name};"))?);
                continue;
            }
            Event::Eof => break,
            _ => continue,
        };
        match t {
            Tag::Response => {
                entry = Some(Entry {
                    path: String::new(),
                    dir: false,
                    size: 0,
                    mtime: 0,
                    etag: None,
                })
            }
            Tag::Propstat => {
                props = Props {
                    ok: true,
                    ..Props::default()
                }
            }
            Tag::Collection if stack.last() == Some(&Tag::ResourceType) => props.dir = Some(true),
            Tag::ResourceType => props.dir = props.dir.or(Some(false)),
            _ => {}
        }
        buf.clear();
        if ended {
            finish(t, &mut buf, &mut entry, &mut props, &mut out, prefix);
        } else {
            stack.push(t);
        }
    }
    Ok(out)
}

/// The end of element `t`: its text in `buf` goes where it belongs.
fn finish(
    t: Tag,
    buf: &mut String,
    entry: &mut Option<Entry>,
    props: &mut Props,
    out: &mut Vec<Entry>,
    prefix: &str,
) {
    let text = std::mem::take(buf);
    let text = text.trim();
    match t {
        Tag::Href => {
            if let Some(e) = entry.as_mut().filter(|e| e.path.is_empty()) {
                // An absolute URL or an absolute path.
                let path = match text.find("://") {
                    Some(i) => text[i + 3..].find('/').map_or("/", |j| &text[i + 3 + j..]),
                    None => text,
                };
                let path = super::path::unescape(path);
                e.path = normalize_listed(path.strip_prefix(prefix).unwrap_or(&path));
            }
        }
        Tag::Status => props.ok = text.contains(" 200"),
        Tag::Length => props.size = text.parse().ok(),
        Tag::Modified => {
            props.mtime = httpdate::parse_http_date(text).ok().map(|t| {
                t.duration_since(std::time::UNIX_EPOCH)
                    .map_or(0, |d| d.as_secs() as i64)
            })
        }
        Tag::Etag => {
            let t = text.trim_start_matches("W/").trim_matches('"');
            props.etag = (!t.is_empty()).then(|| t.to_string());
        }
        Tag::Propstat => {
            if let Some(e) = entry.as_mut()
                && props.ok
            {
                let p = std::mem::take(props);
                e.dir |= p.dir.unwrap_or(false);
                e.size = p.size.unwrap_or(e.size);
                e.mtime = p.mtime.unwrap_or(e.mtime);
                e.etag = p.etag.or(e.etag.take());
            }
        }
        Tag::Response => {
            if let Some(e) = entry.take().filter(|e| !e.path.is_empty()) {
                out.push(e);
            }
        }
        _ => {}
    }
}

/// The first active lock of a lockdiscovery answer, in words.
fn lock_holder(body: &[u8], now: SystemTime) -> Option<String> {
    let root = Element::parse(body).ok()?;
    let mut stack = vec![&root];
    while let Some(e) = stack.pop() {
        if e.name == "activelock" && e.namespace.as_deref() == Some(DAV_NS) {
            let owner = dav_child(e, "owner").map(|o| {
                // The owner may be text or an <href>.
                let t = text(o);
                if t.is_empty() {
                    dav_child(o, "href").map(text).unwrap_or_default()
                } else {
                    t
                }
            });
            let until = dav_child(e, "timeout")
                .map(text)
                .and_then(|t| {
                    t.strip_prefix("Second-")
                        .and_then(|n| n.parse::<u64>().ok())
                })
                .map(|secs| {
                    let at = now + std::time::Duration::from_secs(secs);
                    let s = at
                        .duration_since(std::time::UNIX_EPOCH)
                        .map_or(0, |d| d.as_secs());
                    format!("until {:02}:{:02} UTC", s % 86_400 / 3600, s % 3600 / 60)
                });
            let who = owner.filter(|o| !o.is_empty()).map(|o| format!("by {o}"));
            let words: Vec<String> = [who, until].into_iter().flatten().collect();
            return Some(words.join(" "));
        }
        stack.extend(e.children.iter().filter_map(XMLNode::as_element));
    }
    None
}

/// "/a/b/" → "/a/b"; "" → "/".
fn normalize_listed(p: &str) -> String {
    let t = p.trim_end_matches('/');
    if t.is_empty() {
        "/".into()
    } else if t.starts_with('/') {
        t.into()
    } else {
        format!("/{t}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entities_prefixes_and_broken_bodies() {
        let body = br#"<?xml version="1.0"?>
<multistatus xmlns="DAV:" xmlns:x="urn:x"><response>
 <href>/pre/a&amp;b&#x20;c</href>
 <propstat><prop><x:getcontentlength>99</x:getcontentlength>
   <getcontentlength><![CDATA[7]]></getcontentlength></prop>
 <status>HTTP/1.1 200 OK</status></propstat></response></multistatus>"#;
        let e = parse_multistatus(body, "/pre").unwrap();
        assert_eq!(e.len(), 1);
        assert_eq!(
            (e[0].path.as_str(), e[0].size, e[0].dir),
            ("/a&b c", 7, false)
        );
        assert!(parse_multistatus(b"<D:multistatus xmlns:D=\"DAV:\"><D:response>", "").is_ok());
        assert!(parse_multistatus(b"<a><b></a></b>", "").is_err());
        assert!(parse_multistatus(b"<a>&nope;</a>", "").is_err());
        assert!(parse_multistatus(&[0xff, 0xfe], "").is_err());
    }

    #[test]
    fn a_lock_reads_as_who_and_until_when() {
        let body = br#"<D:prop xmlns:D="DAV:"><D:lockdiscovery><D:activelock>
          <D:locktype><D:write/></D:locktype><D:owner>alice</D:owner>
          <D:timeout>Second-120</D:timeout></D:activelock></D:lockdiscovery></D:prop>"#;
        let now = std::time::UNIX_EPOCH + std::time::Duration::from_secs(1_796_464_800);
        assert_eq!(
            lock_holder(body, now).as_deref(),
            Some("by alice until 10:02 UTC")
        );
        assert_eq!(lock_holder(b"<D:prop xmlns:D=\"DAV:\"/>", now), None);
    }

    #[test]
    fn a_multistatus_becomes_entries() {
        let body = br#"<?xml version="1.0" encoding="utf-8"?>
<D:multistatus xmlns:D="DAV:">
 <D:response><D:href>/dir/</D:href><D:propstat><D:prop>
   <D:resourcetype><D:collection/></D:resourcetype>
   <D:getlastmodified>Sat, 05 Dec 2026 10:00:00 GMT</D:getlastmodified>
 </D:prop><D:status>HTTP/1.1 200 OK</D:status></D:propstat></D:response>
 <D:response><D:href>http://h:1/dir/a%20b.txt</D:href><D:propstat><D:prop>
   <D:resourcetype/><D:getcontentlength>12</D:getcontentlength>
   <D:getetag>"v7-1"</D:getetag>
 </D:prop><D:status>HTTP/1.1 200 OK</D:status></D:propstat>
 <D:propstat><D:prop><D:getetag/></D:prop><D:status>HTTP/1.1 404 Not Found</D:status></D:propstat>
 </D:response>
</D:multistatus>"#;
        let e = parse_multistatus(body, "").unwrap();
        assert_eq!(e.len(), 2);
        assert_eq!(e[0].path, "/dir");
        assert!(e[0].dir);
        assert_eq!(e[0].mtime, 1_796_464_800);
        assert_eq!(e[1].path, "/dir/a b.txt");
        assert_eq!(e[1].name(), "a b.txt");
        assert_eq!((e[1].dir, e[1].size), (false, 12));
        assert_eq!(e[1].etag.as_deref(), Some("v7-1"));
    }
}
