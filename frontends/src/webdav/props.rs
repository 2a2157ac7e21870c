//! PROPFIND (RFC 4918 §9.1), answered by Tessera itself from one look at
//! meta: live properties computed from the inode (one quoted ETag, as GET
//! sends it), dead properties from meta, locks from meta, RFC 4331 quota
//! from the datanodes, a 404 propstat for every property asked for and
//! missing, and each property once.
//!
//! Also the Windows properties of PROPPATCH: `Win32LastModifiedTime` sets the
//! file's mtime, the other `Win32*` ones are kept as dead properties, and
//! PROPFIND reports what was kept.

use bytes::Bytes;
use http::{HeaderMap, StatusCode};
use tessera_gateway::{Error, Fs, Space, split_path};
use tessera_meta::{DavView, DeadProp, FileKind, Inode, LockInfo, ViewWant};
use xmltree::{Element, XMLNode};

use super::browse::{encode, escape, rfc3339};

pub const DAV: &str = "DAV:";
pub const MS: &str = "urn:schemas-microsoft-com:";

/// Largest PROPFIND or PROPPATCH body read, bytes (dav-server's limit for
/// the XML bodies it reads).
pub const MAX_BODY: usize = 64 << 10;
/// Deepest element nesting accepted in a request body: the XML parser
/// recurses per level, and no WebDAV body needs more than a few.
pub const MAX_DEPTH: usize = 100;

/// Whether `xml` nests elements at most `max` deep: a cheap scan before
/// the (recursive) parser sees it. It errs towards "too deep": quoted
/// attribute values, comments, CDATA and processing instructions are
/// skipped whole, and anything it cannot follow counts as an open element.
pub fn shallow(xml: &[u8], max: usize) -> bool {
    let find = |from: usize, pat: &[u8]| {
        xml.get(from..)
            .and_then(|r| r.windows(pat.len()).position(|w| w == pat))
            .map(|p| from + p + pat.len())
    };
    let mut depth = 0usize;
    let mut i = 0;
    while let Some(at) = xml[i..].iter().position(|&b| b == b'<') {
        let start = i + at;
        let rest = &xml[start + 1..];
        i = if rest.starts_with(b"!--") {
            match find(start, b"-->") {
                Some(e) => e,
                None => return true,
            }
        } else if rest.starts_with(b"![CDATA[") {
            match find(start, b"]]>") {
                Some(e) => e,
                None => return true,
            }
        } else if rest.starts_with(b"?") || rest.starts_with(b"!") {
            match find(start, b">") {
                Some(e) => e,
                None => return true,
            }
        } else {
            // A tag: find its end outside quoted attribute values.
            let mut j = start + 1;
            let mut quote = None;
            while j < xml.len() {
                match (quote, xml[j]) {
                    (None, b'"' | b'\'') => quote = Some(xml[j]),
                    (Some(q), c) if c == q => quote = None,
                    (None, b'>') => break,
                    _ => {}
                }
                j += 1;
            }
            let closing = rest.first() == Some(&b'/');
            let empty = j < xml.len() && quote.is_none() && xml[j - 1] == b'/';
            if closing {
                depth = depth.saturating_sub(1);
            } else if !empty {
                depth += 1;
                if depth > max {
                    return false;
                }
            }
            j + 1
        };
        if i >= xml.len() {
            break;
        }
    }
    true
}

/// A property's name: its namespace (`None`: no namespace) and local name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Name {
    pub ns: Option<String>,
    pub local: String,
}

impl Name {
    fn of(ns: &str, local: &str) -> Name {
        Name {
            ns: Some(ns.to_string()),
            local: local.to_string(),
        }
    }

    fn is(&self, ns: &str, local: &str) -> bool {
        self.ns.as_deref() == Some(ns) && self.local == local
    }

    fn of_dead(p: &DeadProp) -> Name {
        Name {
            ns: p.namespace.clone().filter(|n| !n.is_empty()),
            local: p.name.clone(),
        }
    }
}

/// What a PROPFIND asks for.
#[derive(Debug, PartialEq, Eq)]
pub enum Ask {
    /// Every dead property and the live ones RFC 4918 lists, plus `include`.
    All(Vec<Name>),
    /// The names only.
    Names,
    /// These properties.
    Props(Vec<Name>),
}

/// Reads a PROPFIND body (empty: allprop).
pub fn parse_propfind(body: &[u8]) -> Result<Ask, String> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return Ok(Ask::All(Vec::new()));
    }
    let root = Element::parse(body).map_err(|e| format!("the PROPFIND body is not XML: {e}"))?;
    if root.name != "propfind" || root.namespace.as_deref() != Some(DAV) {
        return Err("the PROPFIND body is not a DAV:propfind element".into());
    }
    let children: Vec<&Element> = root
        .children
        .iter()
        .filter_map(XMLNode::as_element)
        .filter(|e| e.namespace.as_deref() == Some(DAV))
        .collect();
    let names = |e: &Element| -> Vec<Name> {
        e.children
            .iter()
            .filter_map(XMLNode::as_element)
            .map(|p| Name {
                ns: p.namespace.clone().filter(|n| !n.is_empty()),
                local: p.name.clone(),
            })
            .collect()
    };
    if children.iter().any(|e| e.name == "allprop") {
        let include = children
            .iter()
            .find(|e| e.name == "include")
            .map(|e| names(e))
            .unwrap_or_default();
        return Ok(Ask::All(include));
    }
    if children.iter().any(|e| e.name == "propname") {
        return Ok(Ask::Names);
    }
    match children.iter().find(|e| e.name == "prop") {
        Some(p) => Ok(Ask::Props(names(p))),
        None => Err("the PROPFIND body names no prop, propname or allprop".into()),
    }
}

/// What every resource of one PROPFIND shares.
pub struct Context {
    /// The client is Windows' WebDAV redirector: it gets the Win32 ones too.
    pub microsoft: bool,
    /// RFC 4331 figures, when asked for.
    pub space: Option<Space>,
}

/// One resource of the answer.
pub struct Resource<'a> {
    pub href: String,
    pub name: &'a str,
    /// Its key in meta's lock table (components joined by '/').
    pub key: String,
    pub inode: &'a Inode,
    pub dead: &'a [DeadProp],
    pub locks: &'a [LockInfo],
}

/// The live properties allprop reports (RFC 4918 §14.2 and the `Win32`
/// ones Windows expects).
fn allprop_live(microsoft: bool) -> Vec<Name> {
    let mut v: Vec<Name> = [
        "creationdate",
        "displayname",
        "getcontentlength",
        "getcontenttype",
        "getetag",
        "getlastmodified",
        "lockdiscovery",
        "resourcetype",
        "supportedlock",
    ]
    .iter()
    .map(|n| Name::of(DAV, n))
    .collect();
    if microsoft {
        v.extend(
            [
                "Win32CreationTime",
                "Win32FileAttributes",
                "Win32LastAccessTime",
                "Win32LastModifiedTime",
            ]
            .iter()
            .map(|n| Name::of(MS, n)),
        );
    }
    v
}

/// The quoted, strong ETag of an inode: the same as GET's `ETag` header.
pub fn etag(inode: &Inode) -> String {
    format!("\"{:x}-{:x}\"", inode.ino, inode.version)
}

/// Escapes text for XML element content. Characters XML 1.0 cannot carry
/// at all (control characters a file name may hold) become U+FFFD, so one
/// odd name cannot make a whole listing unreadable.
fn xml_text(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '\t' | '\n' | '\r' => out.push(c),
            c if (c as u32) < 0x20 || c == '\u{FFFE}' || c == '\u{FFFF}' => out.push('\u{FFFD}'),
            c => out.push(c),
        }
    }
    out
}

fn http_date(ns: i64) -> String {
    let t = std::time::UNIX_EPOCH + std::time::Duration::from_nanos(ns.max(0) as u64);
    httpdate::fmt_http_date(t)
}

/// The element `<p:local xmlns:p="ns">text</p:local>` (text escaped).
fn element(name: &Name, inner: Option<&str>) -> String {
    let (open, close) = match name.ns.as_deref() {
        Some(DAV) => (format!("D:{}", name.local), format!("D:{}", name.local)),
        Some(ns) => (
            format!("X:{} xmlns:X=\"{}\"", name.local, escape(ns)),
            format!("X:{}", name.local),
        ),
        None => (format!("{} xmlns=\"\"", name.local), name.local.clone()),
    };
    match inner {
        Some(text) => format!("<{open}>{text}</{close}>"),
        None => format!("<{open}/>"),
    }
}

/// A stored dead property's XML without its XML declaration.
fn dead_xml(p: &DeadProp) -> Option<String> {
    let xml = std::str::from_utf8(p.xml.as_deref()?).ok()?.trim_start();
    let xml = match xml.strip_prefix("<?xml") {
        Some(rest) => rest.split_once("?>")?.1,
        None => xml,
    };
    let xml = xml.trim();
    // Anything but one element (as dav-server stores them) is not pasted
    // into the answer.
    (xml.starts_with('<') && xml.ends_with('>')).then(|| xml.to_string())
}

fn is_below(key: &str, ancestor: &str) -> bool {
    super::locks::is_below(key, ancestor)
}

fn activelock(l: &LockInfo) -> String {
    let owner = l
        .owner
        .as_deref()
        .map(|o| match o.trim_start().strip_prefix("<?xml") {
            Some(rest) => rest.split_once("?>").map_or("", |(_, x)| x).to_string(),
            None => o.to_string(),
        })
        .unwrap_or_default();
    format!(
        "<D:activelock><D:locktype><D:write/></D:locktype><D:lockscope><D:{}/></D:lockscope>\
         <D:depth>{}</D:depth>{owner}<D:timeout>Second-{}</D:timeout>\
         <D:locktoken><D:href>{}</D:href></D:locktoken>\
         <D:lockroot><D:href>{}</D:href></D:lockroot></D:activelock>",
        if l.shared { "shared" } else { "exclusive" },
        if l.deep { "infinity" } else { "0" },
        l.remaining_s,
        xml_text(&l.token),
        xml_text(&l.href),
    )
}

/// Windows' attribute bits: directory, or archive; hidden for dot names.
fn win32_attributes(name: &str, inode: &Inode) -> String {
    let mut a = if inode.kind == FileKind::Dir {
        0x10
    } else {
        0x20
    };
    if name.starts_with('.') {
        a |= 0x02;
    }
    format!("{a:08x}")
}

impl Resource<'_> {
    /// When the file was created: as Windows set it, else the earlier of
    /// its ctime and mtime (as Apache reports it).
    fn created(&self) -> i64 {
        let kept = self
            .dead(&Name::of(MS, "Win32CreationTime"))
            .and_then(dead_xml)
            .and_then(|x| {
                let text = x.split('>').nth(1)?.split('<').next()?.to_string();
                let t = httpdate::parse_http_date(text.trim()).ok()?;
                let d = t.duration_since(std::time::UNIX_EPOCH).ok()?;
                Some(d.as_nanos().min(i64::MAX as u128) as i64)
            });
        kept.unwrap_or(self.inode.ctime.min(self.inode.mtime))
    }

    fn dead(&self, name: &Name) -> Option<&DeadProp> {
        self.dead.iter().find(|p| Name::of_dead(p) == *name)
    }

    /// A live property's value, as the whole element; `None` if this
    /// resource has no such property.
    fn live(&self, name: &Name, cx: &Context) -> Option<String> {
        let i = self.inode;
        let dir = i.kind == FileKind::Dir;
        let text = |s: String| Some(element(name, Some(&s)));
        match (name.ns.as_deref()?, name.local.as_str()) {
            (DAV, "creationdate") => text(rfc3339(self.created())),
            (DAV, "displayname") => text(xml_text(self.name)),
            (DAV, "getcontentlength") if !dir => text(i.size.to_string()),
            (DAV, "getcontenttype") => text(
                if dir {
                    "httpd/unix-directory"
                } else {
                    mime_guess::from_path(self.name)
                        .first_raw()
                        .unwrap_or("application/octet-stream")
                }
                .to_string(),
            ),
            (DAV, "getetag") => text(etag(i)),
            (DAV, "getlastmodified") => text(http_date(i.mtime)),
            (DAV, "resourcetype") => Some(if dir {
                "<D:resourcetype><D:collection/></D:resourcetype>".to_string()
            } else {
                "<D:resourcetype/>".to_string()
            }),
            (DAV, "lockdiscovery") => {
                let locks: String = self
                    .locks
                    .iter()
                    .filter(|l| l.path == self.key || (l.deep && is_below(&self.key, &l.path)))
                    .map(activelock)
                    .collect();
                text(locks)
            }
            (DAV, "supportedlock") => text(
                "<D:lockentry><D:lockscope><D:exclusive/></D:lockscope>\
                 <D:locktype><D:write/></D:locktype></D:lockentry>\
                 <D:lockentry><D:lockscope><D:shared/></D:lockscope>\
                 <D:locktype><D:write/></D:locktype></D:lockentry>"
                    .to_string(),
            ),
            (DAV, "quota-available-bytes") => text(cx.space?.available.to_string()),
            (DAV, "quota-used-bytes") => text(cx.space?.used.to_string()),
            (MS, "Win32CreationTime") => text(http_date(self.created())),
            (MS, "Win32LastAccessTime") => text(http_date(i.atime)),
            (MS, "Win32LastModifiedTime") => text(http_date(i.mtime)),
            (MS, "Win32FileAttributes") => text(win32_attributes(self.name, i)),
            _ => None,
        }
    }

    /// The value of `name`: a dead property of that name wins (the few
    /// live ones a client may set: displayname, the Win32 ones).
    fn value(&self, name: &Name, cx: &Context) -> Option<String> {
        match self.dead(name) {
            Some(p) => dead_xml(p).or_else(|| Some(element(name, None))),
            None => self.live(name, cx),
        }
    }

    /// This resource's `<D:response>`.
    pub fn response(&self, ask: &Ask, cx: &Context) -> String {
        let mut found = String::new();
        let mut missing = String::new();
        match ask {
            Ask::All(include) => {
                let mut names = allprop_live(cx.microsoft);
                for n in include {
                    if !names.contains(n) {
                        names.push(n.clone());
                    }
                }
                for n in &names {
                    if let Some(v) = self.value(n, cx) {
                        found.push_str(&v);
                    } else if include.contains(n) {
                        missing.push_str(&element(n, None));
                    }
                }
                for p in self.dead {
                    if !names.contains(&Name::of_dead(p))
                        && let Some(x) = dead_xml(p)
                    {
                        found.push_str(&x);
                    }
                }
            }
            Ask::Names => {
                let mut names: Vec<Name> = allprop_live(cx.microsoft)
                    .into_iter()
                    .filter(|n| self.live(n, cx).is_some())
                    .collect();
                for p in self.dead {
                    let n = Name::of_dead(p);
                    if !names.contains(&n) {
                        names.push(n);
                    }
                }
                for n in &names {
                    found.push_str(&element(n, None));
                }
            }
            Ask::Props(names) => {
                for n in names {
                    match self.value(n, cx) {
                        Some(v) => found.push_str(&v),
                        None => missing.push_str(&element(n, None)),
                    }
                }
            }
        }
        let mut out = format!("<D:response><D:href>{}</D:href>", xml_text(&self.href));
        if !found.is_empty() || missing.is_empty() {
            out.push_str(&format!(
                "<D:propstat><D:prop>{found}</D:prop><D:status>HTTP/1.1 200 OK</D:status></D:propstat>"
            ));
        }
        if !missing.is_empty() {
            out.push_str(&format!(
                "<D:propstat><D:prop>{missing}</D:prop><D:status>HTTP/1.1 404 Not Found</D:status></D:propstat>"
            ));
        }
        out.push_str("</D:response>");
        out
    }
}

/// Whether answering `ask` needs the quota figures.
fn wants_space(ask: &Ask) -> bool {
    let quota = |n: &Name| n.is(DAV, "quota-available-bytes") || n.is(DAV, "quota-used-bytes");
    match ask {
        Ask::Props(names) | Ask::All(names) => names.iter().any(quota),
        Ask::Names => false,
    }
}

/// The failure of a PROPFIND, as a status and a message.
pub struct Refusal(pub StatusCode, pub String);

impl From<Error> for Refusal {
    fn from(e: Error) -> Self {
        let status = match &e {
            Error::NotFound(_) | Error::NotADirectory(_) => StatusCode::NOT_FOUND,
            Error::Invalid(_) | Error::InvalidPath(_) => StatusCode::BAD_REQUEST,
            Error::MetaUnavailable(_) | Error::Unavailable { .. } | Error::TooFewDatanodes(_) => {
                StatusCode::SERVICE_UNAVAILABLE
            }
            _ => StatusCode::INTERNAL_SERVER_ERROR,
        };
        Refusal(status, format!("{e}\n"))
    }
}

/// Answers a PROPFIND of `path` (decoded) with `depth` "0" or "1".
pub async fn propfind(
    fs: &Fs,
    path: &str,
    depth_one: bool,
    headers: &HeaderMap,
    body: &[u8],
) -> Result<String, Refusal> {
    let ask = parse_propfind(body).map_err(|m| Refusal(StatusCode::BAD_REQUEST, m + "\n"))?;
    let components = split_path(path)?;
    let want = if depth_one {
        ViewWant::Listing
    } else {
        ViewWant::Inode
    };
    let view: DavView = fs
        .meta()
        .view(components.clone(), want, true)
        .await
        .map_err(Error::from)?;
    let inode = view
        .inode
        .as_ref()
        .ok_or_else(|| Error::NotFound(path.to_string()))?;
    let microsoft = headers
        .get(http::header::USER_AGENT)
        .and_then(|u| u.to_str().ok())
        .is_some_and(|u| u.contains("Microsoft"));
    let space = if wants_space(&ask) {
        Some(fs.space().await)
    } else {
        None
    };
    let cx = Context { microsoft, space };
    let by_ino: std::collections::HashMap<u64, &[DeadProp]> =
        view.props.iter().map(|(i, p)| (*i, p.as_slice())).collect();
    let props_of = |ino: u64| -> &[DeadProp] { by_ino.get(&ino).copied().unwrap_or(&[]) };
    let key = components.join("/");
    let mut base: String = components
        .iter()
        .map(|c| format!("/{}", encode(c)))
        .collect();
    let name = components.last().map_or("", String::as_str);
    let mut out = String::with_capacity(512 + view.entries.as_ref().map_or(0, Vec::len) * 700);
    out.push_str("<?xml version=\"1.0\" encoding=\"utf-8\"?>\n<D:multistatus xmlns:D=\"DAV:\">");
    let own_href = if inode.is_dir() {
        format!("{base}/")
    } else if base.is_empty() {
        "/".to_string()
    } else {
        base.clone()
    };
    out.push_str(
        &Resource {
            href: own_href,
            name,
            key: key.clone(),
            inode,
            dead: props_of(inode.ino),
            locks: &view.locks,
        }
        .response(&ask, &cx),
    );
    if let Some(entries) = &view.entries {
        base.push('/');
        for (n, i) in entries {
            let mut href = format!("{base}{}", encode(n));
            if i.is_dir() {
                href.push('/');
            }
            let child_key = if key.is_empty() {
                n.clone()
            } else {
                format!("{key}/{n}")
            };
            out.push_str(
                &Resource {
                    href,
                    name: n,
                    key: child_key,
                    inode: i,
                    dead: props_of(i.ino),
                    locks: &view.locks,
                }
                .response(&ask, &cx),
            );
        }
    }
    out.push_str("</D:multistatus>\n");
    Ok(out)
}

/// The `Win32*` properties a PROPPATCH sets: (mtime to set, properties to
/// keep). Everything else in the body is left to the generic handler.
pub fn win32_patch(body: &[u8]) -> (Option<i64>, Vec<DeadProp>) {
    let Ok(root) = Element::parse(body) else {
        return (None, Vec::new());
    };
    let mut mtime = None;
    let mut keep = Vec::new();
    let sets = root
        .children
        .iter()
        .filter_map(XMLNode::as_element)
        .filter(|e| e.name == "set" && e.namespace.as_deref() == Some(DAV));
    for set in sets {
        let props = set
            .children
            .iter()
            .filter_map(XMLNode::as_element)
            .filter(|e| e.name == "prop")
            .flat_map(|p| p.children.iter().filter_map(XMLNode::as_element));
        for p in props {
            if p.namespace.as_deref() != Some(MS) {
                continue;
            }
            let text = p
                .get_text()
                .map(|t| t.trim().to_string())
                .unwrap_or_default();
            match p.name.as_str() {
                "Win32LastModifiedTime" => {
                    if let Ok(t) = httpdate::parse_http_date(&text)
                        && let Ok(d) = t.duration_since(std::time::UNIX_EPOCH)
                    {
                        mtime = Some(d.as_nanos().min(i64::MAX as u128) as i64);
                    }
                }
                "Win32CreationTime" | "Win32LastAccessTime" | "Win32FileAttributes" => {
                    let xml = format!(
                        "<Z:{n} xmlns:Z=\"{MS}\">{}</Z:{n}>",
                        xml_text(&text),
                        n = p.name
                    );
                    keep.push(DeadProp {
                        namespace: Some(MS.to_string()),
                        name: p.name.clone(),
                        prefix: Some("Z".into()),
                        xml: Some(xml.into_bytes()),
                    });
                }
                _ => {}
            }
        }
    }
    (mtime, keep)
}

/// Whether a PROPPATCH's multistatus reports every property done.
pub fn all_ok(multistatus: &Bytes) -> bool {
    let text = String::from_utf8_lossy(multistatus);
    text.contains("<D:status>")
        && text
            .split("<D:status>")
            .skip(1)
            .all(|s| s.trim_start().starts_with("HTTP/1.1 200"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn deep_bodies_are_caught_before_parsing() {
        let deep = |n: usize| format!("<a>{}{}</a>", "<b>".repeat(n), "</b>".repeat(n));
        assert!(shallow(deep(50).as_bytes(), MAX_DEPTH));
        assert!(!shallow(deep(200).as_bytes(), MAX_DEPTH));
        let flat = format!("<a>{}</a>", "<b/><c x='1'>t</c>".repeat(1000));
        assert!(shallow(flat.as_bytes(), 3));
        assert!(shallow(b"<?xml version=\"1.0\"?><!-- c --><a/>", 1));
        // Closing tags hidden in comments, CDATA or attribute values do
        // not lower the count; a '/>' inside a value does not close a tag.
        let sneaky = format!(
            "<a>{}</a>",
            "<b x=\"/>\"><!-- </b> --><![CDATA[</b>]]>".repeat(200)
        );
        assert!(!shallow(sneaky.as_bytes(), MAX_DEPTH));
    }

    #[test]
    fn propfind_bodies() {
        assert_eq!(parse_propfind(b"").unwrap(), Ask::All(vec![]));
        assert_eq!(
            parse_propfind(br#"<propfind xmlns="DAV:"><propname/></propfind>"#).unwrap(),
            Ask::Names
        );
        let asked = parse_propfind(
            br#"<D:propfind xmlns:D="DAV:"><D:prop><D:getetag/><x:a xmlns:x="urn:x"/><b xmlns=""/></D:prop></D:propfind>"#,
        )
        .unwrap();
        assert_eq!(
            asked,
            Ask::Props(vec![
                Name::of(DAV, "getetag"),
                Name::of("urn:x", "a"),
                Name {
                    ns: None,
                    local: "b".into()
                }
            ])
        );
        let all = parse_propfind(
            br#"<D:propfind xmlns:D="DAV:"><D:allprop/><D:include><D:quota-used-bytes/></D:include></D:propfind>"#,
        )
        .unwrap();
        assert_eq!(all, Ask::All(vec![Name::of(DAV, "quota-used-bytes")]));
        for bad in [&b"<propfind"[..], b"<x/>", br#"<propfind xmlns="DAV:"/>"#] {
            assert!(parse_propfind(bad).is_err());
        }
    }

    fn inode(kind: FileKind) -> Inode {
        Inode {
            ino: 7,
            kind,
            mode: 0o644,
            uid: 0,
            gid: 0,
            size: 12,
            atime: 0,
            mtime: 0,
            ctime: 0,
            nlink: 1,
            version: 0x2a,
            object: tessera_meta::ObjectRef::NONE,
            parent: 1,
            target: None,
        }
    }

    #[test]
    fn a_response_lists_found_and_missing_properties_once() {
        let i = inode(FileKind::File);
        let dead = vec![DeadProp {
            namespace: Some("urn:x".into()),
            name: "colour".into(),
            prefix: Some("x".into()),
            xml: Some(
                br#"<?xml version="1.0"?><x:colour xmlns:x="urn:x">blue</x:colour>"#.to_vec(),
            ),
        }];
        let r = Resource {
            href: "/a%20b.txt".into(),
            name: "a b.txt",
            key: "a b.txt".into(),
            inode: &i,
            dead: &dead,
            locks: &[],
        };
        let cx = Context {
            microsoft: false,
            space: None,
        };
        let asked = Ask::Props(vec![
            Name::of(DAV, "getetag"),
            Name::of("urn:x", "colour"),
            Name::of("urn:x", "missing"),
        ]);
        let xml = r.response(&asked, &cx);
        assert!(xml.contains("<D:getetag>\"7-2a\"</D:getetag>"), "{xml}");
        assert_eq!(xml.matches("blue").count(), 1, "{xml}");
        assert!(
            xml.contains("404 Not Found") && xml.contains("missing"),
            "{xml}"
        );
        let all = r.response(&Ask::All(vec![]), &cx);
        assert_eq!(all.matches("blue").count(), 1);
        assert!(
            all.contains("<D:getcontenttype>text/plain</D:getcontenttype>"),
            "{all}"
        );
        assert!(
            !all.contains("404"),
            "allprop reports no missing properties"
        );
        // A name with a control character still makes well-formed XML.
        let odd = Resource {
            href: "/odd".into(),
            name: "a\u{1}b<&>",
            key: "odd".into(),
            inode: &i,
            dead: &dead,
            locks: &[],
        };
        let doc = format!(
            "<D:multistatus xmlns:D=\"DAV:\">{}</D:multistatus>",
            odd.response(&Ask::All(vec![]), &cx)
        );
        let parsed = Element::parse(doc.as_bytes()).expect("well-formed");
        assert!(doc.contains("a\u{FFFD}b&lt;&amp;&gt;"), "{doc}");
        drop(parsed);
        let names = r.response(&Ask::Names, &cx);
        assert!(names.contains("<X:colour xmlns:X=\"urn:x\"/>") && !names.contains("blue"));
    }

    #[test]
    fn windows_properties_are_picked_out() {
        let body = br#"<?xml version="1.0" encoding="utf-8" ?><D:propertyupdate xmlns:D="DAV:" xmlns:Z="urn:schemas-microsoft-com:"><D:set><D:prop><Z:Win32CreationTime>Sun, 22 Nov 2026 08:00:00 GMT</Z:Win32CreationTime><Z:Win32LastAccessTime>Sun, 22 Nov 2026 08:00:01 GMT</Z:Win32LastAccessTime><Z:Win32LastModifiedTime>Thu, 01 Jan 2004 00:00:00 GMT</Z:Win32LastModifiedTime><Z:Win32FileAttributes>00000020</Z:Win32FileAttributes></D:prop></D:set></D:propertyupdate>"#;
        let (mtime, keep) = win32_patch(body);
        assert_eq!(mtime, Some(1_072_915_200 * 1_000_000_000));
        let names: Vec<&str> = keep.iter().map(|p| p.name.as_str()).collect();
        assert_eq!(
            names,
            [
                "Win32CreationTime",
                "Win32LastAccessTime",
                "Win32FileAttributes"
            ]
        );
        assert!(all_ok(&Bytes::from_static(
            b"<D:status>HTTP/1.1 200 OK</D:status><D:status>HTTP/1.1 200 OK</D:status>"
        )));
        assert!(!all_ok(&Bytes::from_static(
            b"<D:status>HTTP/1.1 200 OK</D:status><D:status>HTTP/1.1 403 Forbidden</D:status>"
        )));
    }
}
