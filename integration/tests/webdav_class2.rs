//! WebDAV class 2 and dead properties, kept in meta: locks every gateway
//! sees and that outlive the gateway that took them, dead properties that
//! follow renames and copies, and one spelling of each ETag.

use std::time::Duration;

use bytes::Bytes;
use tessera_integration::cluster::TestCluster;
use tessera_integration::http::{Http, Reply, StatusCode};
use tessera_meta::Settings;

fn empty() -> Bytes {
    Bytes::new()
}

fn lockinfo(scope: &str, owner: &str) -> String {
    format!(
        r#"<?xml version="1.0" encoding="utf-8"?><D:lockinfo xmlns:D="DAV:"><D:lockscope><D:{scope}/></D:lockscope><D:locktype><D:write/></D:locktype><D:owner>{owner}</D:owner></D:lockinfo>"#
    )
}

async fn lock(h: &Http, path: &str, scope: &str, headers: &[(&str, &str)]) -> Reply {
    let mut hs = vec![("Content-Type", "application/xml")];
    hs.extend_from_slice(headers);
    h.request("LOCK", path, &hs, lockinfo(scope, "alice"))
        .await
        .unwrap()
}

/// The token of a granted lock, from its `Lock-Token` header.
fn token(r: &Reply) -> String {
    let t = r
        .headers
        .get("lock-token")
        .unwrap_or_else(|| panic!("no Lock-Token in {:?}: {}", r.status, r.text()))
        .to_str()
        .unwrap();
    t.trim_matches(|c| c == '<' || c == '>').to_string()
}

fn if_token(t: &str) -> String {
    format!("(<{t}>)")
}

async fn propfind(h: &Http, path: &str, depth: &str, body: &str) -> Reply {
    h.request(
        "PROPFIND",
        path,
        &[("Depth", depth), ("Content-Type", "application/xml")],
        body.to_string(),
    )
    .await
    .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn locks_are_seen_by_every_gateway_and_outlive_the_one_that_took_them() {
    let c = TestCluster::start(3, Settings::default()).await;
    let (addr_a, gw_a) = c.gateway().await;
    let (addr_b, gw_b) = c.gateway().await;
    let (a, b) = (Http::new(&addr_a), Http::new(&addr_b));

    assert_eq!(
        a.put("/doc", "v1").await.unwrap().status,
        StatusCode::CREATED
    );
    let options = b.request("OPTIONS", "/", &[], empty()).await.unwrap();
    let dav = options.headers.get("dav").unwrap().to_str().unwrap();
    assert!(dav.contains('2'), "class 2 advertised: {dav}");
    assert_eq!(options.headers.get("ms-author-via").unwrap(), "DAV");

    let l = lock(&a, "/doc", "exclusive", &[("Timeout", "Second-600")]).await;
    assert_eq!(l.status, StatusCode::OK, "{}", l.text());
    let t = token(&l);

    // Another gateway refuses a write without the token, but reads.
    let put = b.put("/doc", "v2").await.unwrap();
    assert_eq!(put.status, StatusCode::LOCKED, "{}", put.text());
    let get = b.get("/doc").await.unwrap();
    assert_eq!((get.status, &get.body[..]), (StatusCode::OK, &b"v1"[..]));
    for (method, extra) in [
        ("DELETE", None),
        ("MOVE", Some("/moved")),
        ("PROPPATCH", None),
    ] {
        let mut hs = vec![];
        let dest = extra.map(|d| format!("http://{addr_b}{d}"));
        if let Some(d) = &dest {
            hs.push(("Destination", d.as_str()));
        }
        let body = if method == "PROPPATCH" {
            r#"<D:propertyupdate xmlns:D="DAV:"><D:set><D:prop><x:a xmlns:x="urn:x">1</x:a></D:prop></D:set></D:propertyupdate>"#
        } else {
            ""
        };
        let r = b.request(method, "/doc", &hs, body).await.unwrap();
        assert_eq!(r.status, StatusCode::LOCKED, "{method} without the token");
    }
    // It reports the lock.
    let found = propfind(
        &b,
        "/doc",
        "0",
        r#"<D:propfind xmlns:D="DAV:"><D:prop><D:lockdiscovery/></D:prop></D:propfind>"#,
    )
    .await;
    assert!(
        found.text().contains(&t),
        "lockdiscovery names the token: {}",
        found.text()
    );
    assert!(found.text().contains("alice"), "and its owner");
    // With the token, the write goes through.
    let tagged = if_token(&t);
    let put = b
        .request("PUT", "/doc", &[("If", tagged.as_str())], "v2")
        .await
        .unwrap();
    assert_eq!(put.status, StatusCode::NO_CONTENT, "{}", put.text());

    // The gateway that took the lock goes away; the lock stays.
    gw_a.stop().await;
    let (addr_c, gw_c) = c.gateway().await;
    let cc = Http::new(&addr_c);
    assert_eq!(
        cc.put("/doc", "v3").await.unwrap().status,
        StatusCode::LOCKED
    );
    assert_eq!(
        lock(&cc, "/doc", "exclusive", &[]).await.status,
        StatusCode::LOCKED,
        "a second exclusive lock conflicts"
    );
    assert_eq!(
        lock(&cc, "/doc", "shared", &[]).await.status,
        StatusCode::LOCKED,
        "so does a shared one"
    );
    let wrong = cc
        .request(
            "UNLOCK",
            "/doc",
            &[(
                "Lock-Token",
                "<opaquelocktoken:00000000-0000-4000-8000-000000000000>",
            )],
            empty(),
        )
        .await
        .unwrap();
    assert!(
        wrong.status.is_client_error(),
        "a wrong token unlocks nothing"
    );
    assert_eq!(
        cc.put("/doc", "v3").await.unwrap().status,
        StatusCode::LOCKED
    );
    let bracketed = format!("<{t}>");
    let un = cc
        .request(
            "UNLOCK",
            "/doc",
            &[("Lock-Token", bracketed.as_str())],
            empty(),
        )
        .await
        .unwrap();
    assert_eq!(un.status, StatusCode::NO_CONTENT);
    assert_eq!(
        b.put("/doc", "v3").await.unwrap().status,
        StatusCode::NO_CONTENT
    );
    gw_b.stop().await;
    gw_c.stop().await;
    c.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lock_scopes_depths_timeouts_and_lock_null_resources() {
    let mut c = TestCluster::start(3, Settings::default()).await;
    let h = Http::new(&c.webdav().await);

    // Shared locks coexist; an exclusive one does not join them.
    h.put("/s", "x").await.unwrap();
    let s1 = lock(&h, "/s", "shared", &[]).await;
    let s2 = lock(&h, "/s", "shared", &[]).await;
    assert_eq!((s1.status, s2.status), (StatusCode::OK, StatusCode::OK));
    assert_eq!(
        lock(&h, "/s", "exclusive", &[]).await.status,
        StatusCode::LOCKED
    );
    let either = if_token(&token(&s2));
    let put = h
        .request("PUT", "/s", &[("If", either.as_str())], "y")
        .await
        .unwrap();
    assert!(
        put.status.is_success(),
        "one shared token is enough: {}",
        put.status
    );

    // A depth-infinity lock on a collection covers what is and what comes.
    assert_eq!(
        h.request("MKCOL", "/c", &[], empty()).await.unwrap().status,
        StatusCode::CREATED
    );
    h.put("/c/old", "x").await.unwrap();
    let deep = lock(&h, "/c", "exclusive", &[("Depth", "infinity")]).await;
    assert_eq!(deep.status, StatusCode::OK);
    assert_eq!(
        h.put("/c/old", "y").await.unwrap().status,
        StatusCode::LOCKED
    );
    assert_eq!(
        h.put("/c/new", "y").await.unwrap().status,
        StatusCode::LOCKED
    );
    assert_eq!(
        lock(&h, "/c/old", "exclusive", &[]).await.status,
        StatusCode::LOCKED
    );
    let t = if_token(&token(&deep));
    let put = h
        .request("PUT", "/c/new", &[("If", t.as_str())], "y")
        .await
        .unwrap();
    assert_eq!(put.status, StatusCode::CREATED);
    // A depth-0 lock on a collection leaves its members writable.
    h.request("MKCOL", "/d", &[], empty()).await.unwrap();
    let shallow = lock(&h, "/d", "exclusive", &[("Depth", "0")]).await;
    assert_eq!(shallow.status, StatusCode::OK);
    assert_eq!(
        h.put("/d/f", "x").await.unwrap().status,
        StatusCode::CREATED
    );
    // ... but a lock below a collection blocks deleting the collection.
    let member = lock(&h, "/d/f", "exclusive", &[]).await;
    assert_eq!(member.status, StatusCode::OK);
    let del = h.request("DELETE", "/d", &[], empty()).await.unwrap();
    assert!(
        !del.status.is_success(),
        "DELETE past a member's lock: {}",
        del.status
    );
    assert!(h.get("/d/f").await.unwrap().status.is_success());

    // Locking an unmapped URL creates an empty resource the lock holds.
    let ln = lock(&h, "/fresh", "exclusive", &[]).await;
    assert_eq!(ln.status, StatusCode::CREATED, "{}", ln.text());
    assert_eq!(h.get("/fresh").await.unwrap().body.len(), 0);
    assert_eq!(
        h.put("/fresh", "z").await.unwrap().status,
        StatusCode::LOCKED
    );

    // Locks expire by meta's clock, and a refresh restarts the clock.
    h.put("/brief", "x").await.unwrap();
    let brief = lock(&h, "/brief", "exclusive", &[("Timeout", "Second-2")]).await;
    assert_eq!(brief.status, StatusCode::OK);
    assert!(brief.text().contains("Second-2"), "{}", brief.text());
    let bt = if_token(&token(&brief));
    tokio::time::sleep(Duration::from_millis(1200)).await;
    let refresh = h
        .request(
            "LOCK",
            "/brief",
            &[("If", bt.as_str()), ("Timeout", "Second-2")],
            empty(),
        )
        .await
        .unwrap();
    assert_eq!(refresh.status, StatusCode::OK, "{}", refresh.text());
    tokio::time::sleep(Duration::from_millis(1200)).await;
    assert_eq!(
        h.put("/brief", "y").await.unwrap().status,
        StatusCode::LOCKED,
        "refreshed, the lock still holds"
    );
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert_eq!(
        h.put("/brief", "y").await.unwrap().status,
        StatusCode::NO_CONTENT,
        "expired, it no longer does"
    );
    c.shutdown().await;
}

/// The `<D:getetag>` values of a multistatus body.
fn getetags(xml: &str) -> Vec<String> {
    xml.split("<D:getetag>")
        .skip(1)
        .map(|s| s.split("</D:getetag>").next().unwrap().to_string())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn propfind_etags_are_the_quoted_etags_of_get() {
    let mut c = TestCluster::start(3, Settings::default()).await;
    let h = Http::new(&c.webdav().await);
    h.request("MKCOL", "/e", &[], empty()).await.unwrap();
    let mut tags = Vec::new();
    // Enough entries that the multistatus streams in several chunks.
    for i in 0..300 {
        let put = h
            .put(&format!("/e/file-{i:03}"), format!("{i}"))
            .await
            .unwrap();
        tags.push(
            put.headers
                .get("etag")
                .unwrap()
                .to_str()
                .unwrap()
                .to_string(),
        );
    }
    let one = propfind(&h, "/e/file-007", "0", "").await;
    assert_eq!(getetags(&one.text()), vec![tags[7].clone()]);
    let all = propfind(&h, "/e/", "1", "").await;
    assert_eq!(all.status, StatusCode::MULTI_STATUS);
    let listed = getetags(&all.text());
    assert_eq!(listed.len(), 301, "the collection and its 300 files");
    for t in &tags {
        assert!(t.starts_with('"') && t.ends_with('"'), "{t}");
        assert!(listed.contains(t), "{t} listed as GET sends it");
    }
    let get = h.get("/e/file-042").await.unwrap();
    assert_eq!(get.headers.get("etag").unwrap().to_str().unwrap(), tags[42]);
    c.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn conditional_requests_answer_412_and_304() {
    let mut c = TestCluster::start(3, Settings::default()).await;
    let h = Http::new(&c.webdav().await);
    let put = h.put("/f", "one").await.unwrap();
    let tag = put
        .headers
        .get("etag")
        .unwrap()
        .to_str()
        .unwrap()
        .to_string();
    let modified = h
        .request("HEAD", "/f", &[], empty())
        .await
        .unwrap()
        .headers
        .get("last-modified")
        .unwrap()
        .to_str()
        .unwrap()
        .to_string();
    let past = "Mon, 01 Jan 2001 00:00:00 GMT";
    let future = "Fri, 01 Jan 2100 00:00:00 GMT";
    let cases: Vec<(&str, (&str, &str), StatusCode)> = vec![
        (
            "GET",
            ("If-None-Match", tag.as_str()),
            StatusCode::NOT_MODIFIED,
        ),
        (
            "GET",
            ("If-Match", "\"nope\""),
            StatusCode::PRECONDITION_FAILED,
        ),
        ("GET", ("If-Match", tag.as_str()), StatusCode::OK),
        (
            "GET",
            ("If-Modified-Since", modified.as_str()),
            StatusCode::NOT_MODIFIED,
        ),
        ("GET", ("If-Modified-Since", past), StatusCode::OK),
        (
            "GET",
            ("If-Unmodified-Since", past),
            StatusCode::PRECONDITION_FAILED,
        ),
        ("GET", ("If-Unmodified-Since", future), StatusCode::OK),
        (
            "PUT",
            ("If-Match", "\"nope\""),
            StatusCode::PRECONDITION_FAILED,
        ),
        (
            "PUT",
            ("If-None-Match", "*"),
            StatusCode::PRECONDITION_FAILED,
        ),
        (
            "PUT",
            ("If-Unmodified-Since", past),
            StatusCode::PRECONDITION_FAILED,
        ),
        (
            "DELETE",
            ("If-Match", "\"nope\""),
            StatusCode::PRECONDITION_FAILED,
        ),
    ];
    for (method, (name, value), want) in cases {
        let body = if method == "PUT" { "two" } else { "" };
        let r = h
            .request(method, "/f", &[(name, value)], body)
            .await
            .unwrap();
        assert_eq!(r.status, want, "{method} with {name}: {value}");
    }
    assert_eq!(
        &h.get("/f").await.unwrap().body[..],
        b"one",
        "nothing refused changed it"
    );
    let put = h
        .request("PUT", "/f", &[("If-Match", tag.as_str())], "two")
        .await
        .unwrap();
    assert_eq!(put.status, StatusCode::NO_CONTENT);
    let new_tag = put.headers.get("etag").expect("PUT returns the new ETag");
    assert_ne!(new_tag.to_str().unwrap(), tag);
    assert_eq!(
        h.get("/f").await.unwrap().headers.get("etag"),
        Some(new_tag),
        "and it is the one GET sends"
    );
    c.shutdown().await;
}

const PATCH: &str = r#"<?xml version="1.0" encoding="utf-8"?>
<D:propertyupdate xmlns:D="DAV:" xmlns:Z="urn:example:z" xmlns:Q="http://example.com/q">
  <D:set><D:prop>
    <Z:colour>blue</Z:colour>
    <Q:tagged><Q:tag n="1">a &amp; b</Q:tag><Q:tag n="2"/></Q:tagged>
  </D:prop></D:set>
</D:propertyupdate>"#;

const ASK: &str = r#"<?xml version="1.0" encoding="utf-8"?>
<D:propfind xmlns:D="DAV:"><D:prop>
  <Z:colour xmlns:Z="urn:example:z"/><Q:tagged xmlns:Q="http://example.com/q"/>
</D:prop></D:propfind>"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dead_properties_are_kept_in_meta_and_follow_moves_and_copies() {
    let c = TestCluster::start(3, Settings::default()).await;
    let (addr, gw) = c.gateway().await;
    let h = Http::new(&addr);
    h.request("MKCOL", "/dir", &[], empty()).await.unwrap();
    h.put("/dir/f", "x").await.unwrap();
    let r = h.request("PROPPATCH", "/dir/f", &[], PATCH).await.unwrap();
    assert_eq!(r.status, StatusCode::MULTI_STATUS);
    assert!(
        r.text().contains("200 OK") && !r.text().contains("HTTP/1.1 4"),
        "{}",
        r.text()
    );
    let r = h.request("PROPPATCH", "/dir", &[], PATCH).await.unwrap();
    assert_eq!(r.status, StatusCode::MULTI_STATUS);

    // Another gateway sees them (they live in meta).
    gw.stop().await;
    let (addr, gw) = c.gateway().await;
    let h = Http::new(&addr);
    let got = propfind(&h, "/dir/f", "0", ASK).await.text();
    assert!(got.contains("blue"), "{got}");
    assert!(
        got.contains("a &amp; b") && got.contains("n=\"1\""),
        "XML values kept: {got}"
    );

    // A request is all or nothing: a protected property fails it whole.
    let mixed = r#"<D:propertyupdate xmlns:D="DAV:" xmlns:Z="urn:example:z"><D:set><D:prop>
        <Z:colour>red</Z:colour><D:getetag>"x"</D:getetag></D:prop></D:set></D:propertyupdate>"#;
    let r = h.request("PROPPATCH", "/dir/f", &[], mixed).await.unwrap();
    assert_eq!(r.status, StatusCode::MULTI_STATUS);
    assert!(
        r.text().contains("424") || r.text().contains("Failed Dependency"),
        "{}",
        r.text()
    );
    assert!(
        propfind(&h, "/dir/f", "0", ASK)
            .await
            .text()
            .contains("blue")
    );

    // MOVE keeps them; COPY (of a file and of a collection) carries them.
    let dest = format!("http://{addr}/dir/g");
    let mv = h
        .request("MOVE", "/dir/f", &[("Destination", dest.as_str())], empty())
        .await
        .unwrap();
    assert_eq!(mv.status, StatusCode::CREATED);
    assert!(
        propfind(&h, "/dir/g", "0", ASK)
            .await
            .text()
            .contains("blue")
    );
    let dest = format!("http://{addr}/copy");
    let cp = h
        .request("COPY", "/dir", &[("Destination", dest.as_str())], empty())
        .await
        .unwrap();
    assert_eq!(cp.status, StatusCode::CREATED);
    for p in ["/copy", "/copy/g"] {
        assert!(
            propfind(&h, p, "0", ASK).await.text().contains("blue"),
            "{p}"
        );
    }
    // Listing shows them per entry.
    let listing = propfind(&h, "/copy/", "1", ASK).await.text();
    assert_eq!(listing.matches("blue").count(), 2, "{listing}");

    // Removing one leaves the other; a deleted file's properties go with it.
    let remove = r#"<D:propertyupdate xmlns:D="DAV:" xmlns:Z="urn:example:z"><D:remove><D:prop><Z:colour/></D:prop></D:remove></D:propertyupdate>"#;
    let r = h
        .request("PROPPATCH", "/copy/g", &[], remove)
        .await
        .unwrap();
    assert_eq!(r.status, StatusCode::MULTI_STATUS);
    let got = propfind(&h, "/copy/g", "0", ASK).await.text();
    assert!(!got.contains("blue") && got.contains("a &amp; b"), "{got}");
    assert_eq!(
        h.request("DELETE", "/dir/g", &[], empty())
            .await
            .unwrap()
            .status,
        StatusCode::NO_CONTENT
    );
    h.put("/dir/g", "new").await.unwrap();
    assert!(
        !propfind(&h, "/dir/g", "0", ASK)
            .await
            .text()
            .contains("blue")
    );
    gw.stop().await;
    c.shutdown().await;
}

const QUOTA: &str = r#"<?xml version="1.0" encoding="utf-8"?><D:propfind xmlns:D="DAV:"><D:prop><D:quota-available-bytes/><D:quota-used-bytes/></D:prop></D:propfind>"#;

/// The number inside `<D:{prop}>` of a multistatus.
fn number(xml: &str, prop: &str) -> u64 {
    let open = format!("<D:{prop}>");
    xml.split(&open)
        .nth(1)
        .and_then(|s| s.split('<').next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no {prop} in {xml}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_collection_reports_the_clusters_quota_divided_by_r() {
    let mut c = TestCluster::start(3, Settings::default()).await;
    let h = Http::new(&c.webdav().await);
    h.request("MKCOL", "/q", &[], empty()).await.unwrap();
    h.put("/q/f", vec![7u8; 200_000]).await.unwrap();
    let mut available = 0;
    let mut used = 0;
    for i in 0..3 {
        let (_, s) = c.node(i).stats().await.unwrap();
        available += s.available;
        used += s.bytes;
    }
    let r = u64::from(Settings::default().replicas);
    for path in ["/", "/q/"] {
        let xml = propfind(&h, path, "0", QUOTA).await.text();
        let avail = number(&xml, "quota-available-bytes");
        let u = number(&xml, "quota-used-bytes");
        assert!(avail > 0 && u > 0, "{xml}");
        // Free space moves a little while other tests write; within 1%.
        let want = available / r;
        assert!(avail.abs_diff(want) <= want / 100, "{avail} vs {want}");
        assert!(
            u.abs_diff(used / r) <= used / r / 10 + (1 << 20),
            "{u} vs {}",
            used / r
        );
    }
    // Not in allprop (RFC 4331 §3).
    assert!(!propfind(&h, "/", "0", "").await.text().contains("quota"));
    c.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn explorer_locks_puts_sets_its_times_and_unlocks() {
    // The requests Windows' WebDAV redirector sends when a file is saved
    // into a mapped folder (user agent included): LOCK of the new name,
    // PUT with the token, PROPPATCH of the Win32 times and attributes,
    // UNLOCK.
    let mut c = TestCluster::start(3, Settings::default()).await;
    let h = Http::new(&c.webdav().await);
    let ua = ("User-Agent", "Microsoft-WebDAV-MiniRedir/10.0.19045");
    let body = r#"<?xml version="1.0" encoding="utf-8" ?><D:lockinfo xmlns:D="DAV:"><D:lockscope><D:exclusive/></D:lockscope><D:locktype><D:write/></D:locktype><D:owner><D:href>DESKTOP\alice</D:href></D:owner></D:lockinfo>"#;
    let l = h
        .request(
            "LOCK",
            "/Report.docx",
            &[
                ua,
                ("Timeout", "Second-3600"),
                ("Content-Type", "text/xml; charset=\"utf-8\""),
            ],
            body,
        )
        .await
        .unwrap();
    assert_eq!(l.status, StatusCode::CREATED, "{}", l.text());
    let t = if_token(&token(&l));
    let put = h
        .request(
            "PUT",
            "/Report.docx",
            &[ua, ("If", t.as_str())],
            vec![1u8; 5000],
        )
        .await
        .unwrap();
    assert!(put.status.is_success(), "{}", put.status);
    let patch = r#"<?xml version="1.0" encoding="utf-8" ?><D:propertyupdate xmlns:D="DAV:" xmlns:Z="urn:schemas-microsoft-com:"><D:set><D:prop><Z:Win32CreationTime>Tue, 03 Feb 2009 10:11:12 GMT</Z:Win32CreationTime><Z:Win32LastAccessTime>Sun, 22 Nov 2026 08:00:00 GMT</Z:Win32LastAccessTime><Z:Win32LastModifiedTime>Thu, 01 Jan 2004 00:00:00 GMT</Z:Win32LastModifiedTime><Z:Win32FileAttributes>00000021</Z:Win32FileAttributes></D:prop></D:set></D:propertyupdate>"#;
    let without = h
        .request("PROPPATCH", "/Report.docx", &[ua], patch)
        .await
        .unwrap();
    assert_eq!(without.status, StatusCode::LOCKED, "not without the token");
    let pp = h
        .request(
            "PROPPATCH",
            "/Report.docx",
            &[ua, ("If", t.as_str())],
            patch,
        )
        .await
        .unwrap();
    assert_eq!(pp.status, StatusCode::MULTI_STATUS);
    assert_eq!(pp.text().matches("200 OK").count(), 1, "{}", pp.text());
    assert!(
        !pp.text().contains(" 403 ") && !pp.text().contains(" 501 "),
        "{}",
        pp.text()
    );
    let lt = format!("<{}>", token(&l));
    let un = h
        .request(
            "UNLOCK",
            "/Report.docx",
            &[ua, ("Lock-Token", lt.as_str())],
            empty(),
        )
        .await
        .unwrap();
    assert_eq!(un.status, StatusCode::NO_CONTENT);

    // The mtime is the one Windows set; the other values are kept.
    let head = h
        .request("HEAD", "/Report.docx", &[], empty())
        .await
        .unwrap();
    assert_eq!(
        head.headers.get("last-modified").unwrap(),
        "Thu, 01 Jan 2004 00:00:00 GMT"
    );
    let all = h
        .request("PROPFIND", "/Report.docx", &[ua, ("Depth", "0")], empty())
        .await
        .unwrap()
        .text();
    for want in [
        "Tue, 03 Feb 2009 10:11:12 GMT",
        "00000021",
        "<D:getlastmodified>Thu, 01 Jan 2004 00:00:00 GMT</D:getlastmodified>",
        "<D:getcontentlength>5000</D:getcontentlength>",
    ] {
        assert!(all.contains(want), "{want} in {all}");
    }
    assert_eq!(all.matches("Win32FileAttributes").count(), 2, "once: {all}");
    assert!(
        all.contains("<D:creationdate>2009-02-03T10:11:12Z</D:creationdate>"),
        "{all}"
    );
    c.shutdown().await;
}
