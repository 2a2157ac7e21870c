//! Hostile input against real `tessera` processes: every request gets a
//! clear 4xx (or a closed connection), no process dies, no stored byte
//! changes, and no reply carries a stack trace or more than a short message.

use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use tessera_integration::data::pseudo_random;
use tessera_integration::http::{Http, Reply, StatusCode};
use tessera_integration::procs::{ProcCluster, R2W2Q1};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// Sends raw bytes on a fresh connection; returns what comes back before
/// the server closes it (or within five seconds).
async fn raw(addr: &str, bytes: &[u8], close_write: bool) -> String {
    let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
    let _ = s.write_all(bytes).await;
    if close_write {
        let _ = s.shutdown().await;
    }
    let mut got = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(5), s.read_to_end(&mut got)).await;
    String::from_utf8_lossy(&got).into_owned()
}

/// A raw reply that is a refusal: a closed connection or a clean 4xx.
fn assert_raw_refused(what: &str, reply: &str) {
    assert!(
        reply.is_empty() || (400..500).contains(&status_of(reply)),
        "{what}: {reply}"
    );
    assert_clean(what, reply);
}

fn status_of(reply: &str) -> u16 {
    reply
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0)
}

/// A refusal: 4xx, a short plain message, nothing from inside the server.
fn assert_refused(what: &str, r: &Reply) {
    assert!(
        r.status.is_client_error(),
        "{what}: expected a 4xx, got {} {}",
        r.status,
        r.text()
    );
    assert_clean(what, &r.text());
}

fn assert_clean(what: &str, body: &str) {
    assert!(
        body.len() < 2048,
        "{what}: a {} byte error body",
        body.len()
    );
    for leak in ["panicked", "RUST_BACKTRACE", "stack backtrace", ".rs:"] {
        assert!(
            !body.contains(leak),
            "{what}: the reply leaks {leak:?}: {body}"
        );
    }
}

fn deep_xml(depth: usize) -> String {
    let mut s = String::from("<?xml version=\"1.0\"?><D:propfind xmlns:D=\"DAV:\">");
    s.push_str(&"<D:prop>".repeat(depth));
    s.push_str(&"</D:prop>".repeat(depth));
    s.push_str("</D:propfind>");
    s
}

const LAUGHS: &str = r#"<?xml version="1.0"?>
<!DOCTYPE lolz [
 <!ENTITY lol "lol">
 <!ENTITY lol1 "&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;">
 <!ENTITY lol2 "&lol1;&lol1;&lol1;&lol1;&lol1;&lol1;&lol1;&lol1;&lol1;&lol1;">
 <!ENTITY lol3 "&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;">
 <!ENTITY lol4 "&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;">
 <!ENTITY lol5 "&lol4;&lol4;&lol4;&lol4;&lol4;&lol4;&lol4;&lol4;&lol4;&lol4;">
 <!ENTITY lol6 "&lol5;&lol5;&lol5;&lol5;&lol5;&lol5;&lol5;&lol5;&lol5;&lol5;">
 <!ENTITY lol7 "&lol6;&lol6;&lol6;&lol6;&lol6;&lol6;&lol6;&lol6;&lol6;&lol6;">
 <!ENTITY lol8 "&lol7;&lol7;&lol7;&lol7;&lol7;&lol7;&lol7;&lol7;&lol7;&lol7;">
 <!ENTITY lol9 "&lol8;&lol8;&lol8;&lol8;&lol8;&lol8;&lol8;&lol8;&lol8;&lol8;">
]>"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_webdav_requests_get_4xx_and_change_nothing() {
    let mut c = ProcCluster::start(3, R2W2Q1);
    let addr = c.gateway_addr();
    let h = Http::new(&addr);
    let data = pseudo_random(7, 100_000);
    assert_eq!(
        h.put("/keep.bin", data.clone()).await.unwrap().status,
        StatusCode::CREATED
    );
    for p in ["/d", "/d/sub"] {
        assert_eq!(
            h.request("MKCOL", p, &[], Bytes::new())
                .await
                .unwrap()
                .status,
            StatusCode::CREATED
        );
    }
    let listing = |h: Http| async move {
        h.request("PROPFIND", "/", &[("Depth", "1")], Bytes::new())
            .await
            .unwrap()
            .text()
            .lines()
            .filter(|l| l.contains("<D:href>"))
            .map(String::from)
            .collect::<Vec<_>>()
    };
    let before = listing(h.clone()).await;

    // XML bombs: deep nesting, entity expansion, garbage.
    let deep = deep_xml(50_000);
    let laughs_find = format!(
        "{LAUGHS}<D:propfind xmlns:D=\"DAV:\"><D:prop><D:x>&lol9;</D:x></D:prop></D:propfind>"
    );
    let laughs_patch = format!(
        "{LAUGHS}<D:propertyupdate xmlns:D=\"DAV:\"><D:set><D:prop><D:x>&lol9;</D:x></D:prop></D:set></D:propertyupdate>"
    );
    let garbage = Bytes::from(pseudo_random(3, 5000));
    // Deep but small enough to be read whole: it must not reach a
    // recursive parser (a LOCK body like this aborted the process).
    let deep_small = deep_xml(3_500);
    assert!(deep_small.len() < 64 << 10);
    for (what, method, path, body) in [
        ("deep XML", "PROPFIND", "/", Bytes::from(deep)),
        (
            "deep small XML",
            "PROPFIND",
            "/",
            Bytes::from(deep_small.clone()),
        ),
        (
            "deep small XML",
            "PROPPATCH",
            "/keep.bin",
            Bytes::from(deep_small.clone()),
        ),
        (
            "deep small XML",
            "LOCK",
            "/keep.bin",
            Bytes::from(deep_small.clone()),
        ),
        (
            "deep small XML",
            "LOCK",
            "/new-lock",
            Bytes::from(deep_small),
        ),
        ("billion laughs", "PROPFIND", "/", Bytes::from(laughs_find)),
        (
            "billion laughs",
            "PROPPATCH",
            "/keep.bin",
            Bytes::from(laughs_patch),
        ),
        ("garbage", "PROPFIND", "/", garbage.clone()),
        ("garbage", "PROPPATCH", "/keep.bin", garbage.clone()),
    ] {
        let r = tokio::time::timeout(
            Duration::from_secs(20),
            h.request(method, path, &[("Depth", "0")], body),
        )
        .await
        .unwrap_or_else(|_| panic!("{what} {method}: no answer"))
        .unwrap();
        assert_refused(&format!("{what} {method}"), &r);
    }

    // Bad headers.
    for depth in ["banana", "2", "-1", ""] {
        let r = h
            .request("PROPFIND", "/", &[("Depth", depth)], Bytes::new())
            .await
            .unwrap();
        assert_refused(&format!("Depth: {depth:?}"), &r);
    }
    for (dest, why) in [
        (":::not a uri", "malformed"),
        ("http://other.example/x", "another host"),
        ("/../../etc/x", "above the root"),
        ("/a%zz", "bad escape"),
        ("/d/sub/inside", "into itself"),
    ] {
        for method in ["COPY", "MOVE"] {
            let src = if why == "into itself" {
                "/d"
            } else {
                "/keep.bin"
            };
            let r = h
                .request(method, src, &[("Destination", dest)], Bytes::new())
                .await
                .unwrap();
            // RFC 4918 answers a destination on another server with 502.
            if why == "another host" && r.status == StatusCode::BAD_GATEWAY {
                assert_clean(why, &r.text());
                continue;
            }
            assert_refused(&format!("{method} to {why}"), &r);
        }
    }
    let ranges: Vec<String> = (0..10_000)
        .map(|i| format!("{}-{}", i * 3, i * 3 + 1))
        .collect();
    let range = format!("bytes={}", ranges.join(","));
    let r = h
        .request("GET", "/keep.bin", &[("Range", &range)], Bytes::new())
        .await
        .unwrap();
    assert_refused("10,000 ranges", &r);

    // Over-long paths and headers, a negative length, a body cut short.
    let long = format!("GET /{} HTTP/1.1\r\nHost: x\r\n\r\n", "a/".repeat(50_000));
    let reply = raw(&addr, long.as_bytes(), false).await;
    assert_raw_refused("100 KB path", &reply);
    let r = h.get(&format!("/{}", "abc/".repeat(1000))).await.unwrap();
    assert_refused("a 4 KB path of missing names", &r);
    let big = format!(
        "GET /keep.bin HTTP/1.1\r\nHost: x\r\nX-Big: {}\r\n\r\n",
        "b".repeat(200_000)
    );
    let reply = raw(&addr, big.as_bytes(), false).await;
    assert_raw_refused("200 KB header", &reply);
    let neg = raw(
        &addr,
        b"PUT /neg.bin HTTP/1.1\r\nHost: x\r\nContent-Length: -5\r\n\r\nhello",
        false,
    )
    .await;
    assert_raw_refused("negative length", &neg);
    let cut = raw(
        &addr,
        b"PUT /cut.bin HTTP/1.1\r\nHost: x\r\nContent-Length: 100000\r\n\r\nonly a few bytes",
        true,
    )
    .await;
    assert_raw_refused("short body", &cut);

    // Nothing changed, and everything still answers.
    tokio::time::sleep(Duration::from_millis(300)).await;
    for p in ["/neg.bin", "/cut.bin", "/x", "/etc/x"] {
        assert_eq!(
            h.get(p).await.unwrap().status,
            StatusCode::NOT_FOUND,
            "{p} was created"
        );
    }
    let back = h.get("/keep.bin").await.unwrap();
    assert!(
        back.status == StatusCode::OK && back.body == data,
        "a stored byte changed"
    );
    assert_eq!(listing(h.clone()).await, before, "the namespace changed");
    assert!(c.meta.is_alive(), "meta died");
    for (i, d) in c.datanodes.iter_mut().enumerate() {
        assert!(d.as_mut().unwrap().is_alive(), "datanode {i} died");
    }
    let g = c.gateway.as_mut().unwrap();
    assert!(g.is_alive(), "the gateway died:\n{}", g.log());
}

/// One HTTP/2 call to an RPC port, as a hostile client would make it.
async fn rpc_post(addr: &str, secret: Option<&str>, body: Bytes) -> Option<(u16, String)> {
    let stream = tokio::net::TcpStream::connect(addr).await.ok()?;
    let (mut send, conn) = hyper::client::conn::http2::handshake(
        hyper_util::rt::TokioExecutor::new(),
        hyper_util::rt::TokioIo::new(stream),
    )
    .await
    .ok()?;
    tokio::spawn(conn);
    let mut req = hyper::Request::post(format!("http://{addr}/rpc"));
    if let Some(s) = secret {
        req = req.header(tessera_rpc::SECRET_HEADER, s);
    }
    let resp = send
        .send_request(req.body(Full::new(body)).unwrap())
        .await
        .ok()?;
    let status = resp.status().as_u16();
    let body = resp.into_body().collect().await.ok()?.to_bytes();
    Some((status, String::from_utf8_lossy(&body).into_owned()))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_rpc_calls_are_refused_and_kill_nothing() {
    let mut c = ProcCluster::start(2, R2W2Q1);
    let h = Http::new(&c.gateway_addr());
    let data = pseudo_random(9, 50_000);
    assert_eq!(
        h.put("/keep.bin", data.clone()).await.unwrap().status,
        StatusCode::CREATED
    );
    let secret = std::fs::read_to_string(&c.secret_file)
        .unwrap()
        .trim()
        .to_string();
    let ports = [c.meta_addr(), c.datanode_addr(0), c.datanode_addr(1)];
    for addr in &ports {
        // Random bytes instead of HTTP/2: the connection is closed.
        for seed in 0..5 {
            let _ = raw(addr, &pseudo_random(seed, 3000), true).await;
        }
        // No secret, a wrong one.
        let (status, _) = rpc_post(addr, None, Bytes::from_static(b"x"))
            .await
            .unwrap();
        assert_eq!(status, 401, "{addr}: a call without the secret");
        let (status, _) = rpc_post(addr, Some("not-the-secret-at-all"), Bytes::new())
            .await
            .unwrap();
        assert_eq!(status, 401, "{addr}: a call with a wrong secret");
        // Garbage and truncated frames with the secret.
        for body in [
            Bytes::from(pseudo_random(4, 700)),
            Bytes::from_static(&[0x00]),
            Bytes::from_static(&[0xff, 0xff, 0xff, 0xff, 0xff, 0xff]),
            Bytes::new(),
        ] {
            let (status, text) = rpc_post(addr, Some(&secret), body).await.unwrap();
            assert_eq!(status, 400, "{addr}: {text}");
            assert_clean(addr, &text);
        }
    }
    // Oversized: past the wire's limit, refused (or cut off), not buffered.
    let huge = Bytes::from(vec![0u8; tessera_rpc::MAX_BODY + 1]);
    // The server may also reset the stream (no answer at all).
    if let Some((status, text)) = rpc_post(&ports[1], Some(&secret), huge).await {
        assert_eq!(status, 400, "oversized body: {text}");
    }
    // Everything alive, the data intact.
    assert!(c.meta.is_alive(), "meta died");
    for (i, d) in c.datanodes.iter_mut().enumerate() {
        assert!(d.as_mut().unwrap().is_alive(), "datanode {i} died");
    }
    let back = h.get("/keep.bin").await.unwrap();
    assert!(back.status == StatusCode::OK && back.body == data);
}
