//! WebDAV basics over a real socket, against an in-process cluster.

use bytes::Bytes;
use tessera_integration::cluster::TestCluster;
use tessera_integration::data::pseudo_random;
use tessera_integration::http::{Http, StatusCode};
use tessera_meta::Settings;

async fn cluster() -> (TestCluster, Http) {
    let mut c = TestCluster::start(3, Settings::default()).await;
    let addr = c.webdav().await;
    (c, Http::new(&addr))
}

fn empty() -> Bytes {
    Bytes::new()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn options_put_get_range_head() {
    let (c, h) = cluster().await;
    let o = h.request("OPTIONS", "/", &[], empty()).await.unwrap();
    assert!(o.status.is_success());
    assert!(o.headers.get("dav").is_some(), "OPTIONS advertises DAV");

    let data = pseudo_random(1, 10_000);
    let put = h.put("/f.bin", data.clone()).await.unwrap();
    assert_eq!(put.status, StatusCode::CREATED);
    let etag1 = put.headers.get("etag").cloned();
    let again = h.put("/f.bin", data.clone()).await.unwrap();
    assert_eq!(
        again.status,
        StatusCode::NO_CONTENT,
        "replacing answers 204"
    );
    assert_ne!(
        again.headers.get("etag").cloned(),
        etag1,
        "a new version has a new ETag"
    );

    let get = h.get("/f.bin").await.unwrap();
    assert_eq!(get.status, StatusCode::OK);
    assert!(get.body == data);
    let r = h
        .request("GET", "/f.bin", &[("Range", "bytes=510-1029")], empty())
        .await
        .unwrap();
    assert_eq!(r.status, StatusCode::PARTIAL_CONTENT);
    assert_eq!(&r.body[..], &data[510..1030]);
    let tail = h
        .request("GET", "/f.bin", &[("Range", "bytes=-7")], empty())
        .await
        .unwrap();
    assert_eq!(&tail.body[..], &data[data.len() - 7..]);
    let head = h.request("HEAD", "/f.bin", &[], empty()).await.unwrap();
    assert_eq!(head.status, StatusCode::OK);
    assert_eq!(head.headers.get("content-length").unwrap(), "10000");
    assert!(head.body.is_empty());

    let zero = h.put("/empty", empty()).await.unwrap();
    assert_eq!(zero.status, StatusCode::CREATED);
    assert_eq!(h.get("/empty").await.unwrap().body.len(), 0);
    c.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn collections_delete_copy_move_propfind() {
    let (c, h) = cluster().await;
    assert_eq!(
        h.request("MKCOL", "/a", &[], empty()).await.unwrap().status,
        StatusCode::CREATED
    );
    assert_eq!(
        h.request("MKCOL", "/a", &[], empty()).await.unwrap().status,
        StatusCode::METHOD_NOT_ALLOWED
    );
    assert_eq!(
        h.request("MKCOL", "/x/y", &[], empty())
            .await
            .unwrap()
            .status,
        StatusCode::CONFLICT
    );
    assert_eq!(
        h.request("MKCOL", "/a/b", &[], empty())
            .await
            .unwrap()
            .status,
        StatusCode::CREATED
    );
    assert_eq!(
        h.put("/nope/f", "x").await.unwrap().status,
        StatusCode::CONFLICT,
        "PUT into a missing collection"
    );
    let d1 = pseudo_random(2, 3000);
    assert_eq!(
        h.put("/a/b/one", d1.clone()).await.unwrap().status,
        StatusCode::CREATED
    );
    assert_eq!(
        h.put("/a/two", "two").await.unwrap().status,
        StatusCode::CREATED
    );

    // PROPFIND depth 0 and 1.
    let p0 = h
        .request("PROPFIND", "/a/", &[("Depth", "0")], empty())
        .await
        .unwrap();
    assert_eq!(p0.status.as_u16(), 207);
    assert_eq!(p0.text().matches("<D:response>").count(), 1);
    let p1 = h
        .request("PROPFIND", "/a/", &[("Depth", "1")], empty())
        .await
        .unwrap();
    assert_eq!(
        p1.text().matches("<D:response>").count(),
        3,
        "{}",
        p1.text()
    );
    assert!(p1.text().contains("/a/two") && p1.text().contains("/a/b/"));

    // COPY a tree, MOVE a file, then DELETE a tree.
    let cp = h
        .request(
            "COPY",
            "/a",
            &[("Destination", "/acopy"), ("Depth", "infinity")],
            empty(),
        )
        .await
        .unwrap();
    assert_eq!(cp.status, StatusCode::CREATED, "{}", cp.text());
    assert!(h.get("/acopy/b/one").await.unwrap().body == d1);
    let mv = h
        .request("MOVE", "/a/two", &[("Destination", "/moved")], empty())
        .await
        .unwrap();
    assert_eq!(mv.status, StatusCode::CREATED);
    assert_eq!(h.get("/a/two").await.unwrap().status, StatusCode::NOT_FOUND);
    assert_eq!(&h.get("/moved").await.unwrap().body[..], b"two");
    let over = h
        .request(
            "MOVE",
            "/moved",
            &[("Destination", "/acopy/two"), ("Overwrite", "F")],
            empty(),
        )
        .await
        .unwrap();
    assert_eq!(
        over.status,
        StatusCode::PRECONDITION_FAILED,
        "Overwrite: F onto an existing file"
    );
    assert_eq!(
        h.request("DELETE", "/a", &[], empty())
            .await
            .unwrap()
            .status,
        StatusCode::NO_CONTENT
    );
    assert_eq!(
        h.get("/a/b/one").await.unwrap().status,
        StatusCode::NOT_FOUND
    );
    assert_eq!(
        h.request("DELETE", "/a", &[], empty())
            .await
            .unwrap()
            .status,
        StatusCode::NOT_FOUND
    );
    assert!(
        h.get("/acopy/b/one").await.unwrap().body == d1,
        "the copy is independent"
    );
    c.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_paths_get_400_and_change_nothing() {
    let (c, h) = cluster().await;
    let long = format!("/{}", "n".repeat(256));
    // Each bad path and the one-line reason it is refused.
    for (bad, why) in [
        ("/a%00b", "NUL"),
        ("/%2e%2e/etc/passwd", "root"),
        ("/x/../../y", "root"),
        (long.as_str(), "255"),
        ("/bad%zzescape", "percent-escape"),
    ] {
        for method in ["GET", "PUT", "MKCOL", "DELETE", "PROPFIND"] {
            let r = h
                .request(method, bad, &[], Bytes::from_static(b"data"))
                .await
                .unwrap();
            assert_eq!(
                r.status,
                StatusCode::BAD_REQUEST,
                "{method} {bad}: {}",
                r.text()
            );
            let text = r.text();
            assert!(
                text.contains(why) && text.lines().count() == 1,
                "{method} {bad}: the reply should be one line naming the problem: {text:?}"
            );
            assert_eq!(
                r.headers.get("content-type").and_then(|v| v.to_str().ok()),
                Some("text/plain; charset=utf-8"),
                "{method} {bad}"
            );
        }
    }
    // A name of exactly 255 bytes is fine.
    let ok = format!("/{}", "n".repeat(255));
    assert_eq!(h.put(&ok, "x").await.unwrap().status, StatusCode::CREATED);
    let listing = h
        .request("PROPFIND", "/", &[("Depth", "1")], empty())
        .await
        .unwrap();
    assert_eq!(
        listing.text().matches("<D:response>").count(),
        2,
        "only the root and the valid file"
    );
    assert_eq!(
        h.get("/missing").await.unwrap().status,
        StatusCode::NOT_FOUND
    );
    c.shutdown().await;
}

/// Fewer than Q replicas reachable: the read fails with 503 naming the
/// nodes, rather than serving something it cannot vouch for.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unreachable_replicas_give_503() {
    let (mut c, h) = cluster().await;
    let data = pseudo_random(3, 200_000);
    assert_eq!(
        h.put("/q.bin", data).await.unwrap().status,
        StatusCode::CREATED
    );
    c.stop_node(0).await;
    c.stop_node(1).await;
    c.stop_node(2).await;
    let r = h.get("/q.bin").await.unwrap();
    assert_eq!(r.status, StatusCode::SERVICE_UNAVAILABLE, "{}", r.text());
    assert!(
        r.text().contains("slot"),
        "the message names the nodes: {}",
        r.text()
    );
    c.shutdown().await;
}

/// What a small PUT, a listing and a GET cost: meta calls (counted by meta)
/// and durable commits (counted by each datanode).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_small_put_costs_two_meta_calls_and_one_commit_per_datanode() {
    use std::sync::atomic::Ordering;
    use std::time::Duration;
    // No background work (GC passes, ring refreshes) during the count.
    let options = tessera_gateway::FsOptions {
        gc_interval: Duration::from_secs(3600),
        ring_refresh: Duration::from_secs(3600),
        ..tessera_integration::cluster::test_options()
    };
    let mut c = TestCluster::start_with(3, Settings::default(), options).await;
    let h = Http::new(&c.webdav().await);
    // The first upload takes this gateway's lease of object ids.
    assert_eq!(
        h.put("/warm", pseudo_random(1, 4096)).await.unwrap().status,
        StatusCode::CREATED
    );
    let meta_calls = |c: &TestCluster| c.meta_store.counters().calls.load(Ordering::Relaxed);
    async fn commits(c: &TestCluster) -> Vec<u64> {
        let mut v = Vec::new();
        for i in 0..3 {
            v.push(c.node(i).stats().await.unwrap().1.commits);
        }
        v
    }
    for i in 0..5 {
        let (m0, d0) = (meta_calls(&c), commits(&c).await);
        let body = pseudo_random(10 + i, 4096);
        let path = format!("/small-{i}");
        let r = h.put(&path, body.clone()).await.unwrap();
        assert_eq!(r.status, StatusCode::CREATED);
        let (m1, d1) = (meta_calls(&c), commits(&c).await);
        assert!(m1 - m0 <= 2, "PUT {i}: {} meta calls", m1 - m0);
        // 8 blocks, 2 copies each, spread over the 3 nodes: every node
        // holds some, and commits them once.
        let per_node: Vec<u64> = d0.iter().zip(&d1).map(|(a, b)| b - a).collect();
        assert_eq!(per_node, [1, 1, 1], "PUT {i}: commits per datanode");
        assert!(h.get(&path).await.unwrap().body == body);
    }
    let m0 = meta_calls(&c);
    let list = h
        .request("PROPFIND", "/", &[("Depth", "1")], Bytes::new())
        .await
        .unwrap();
    assert_eq!(list.status.as_u16(), 207);
    assert!(list.text().contains("small-4"));
    assert_eq!(
        meta_calls(&c) - m0,
        1,
        "PROPFIND Depth 1 is one call to meta"
    );
    let m0 = meta_calls(&c);
    assert_eq!(h.get("/small-0").await.unwrap().status, StatusCode::OK);
    assert_eq!(meta_calls(&c) - m0, 1, "GET is one call to meta");
    c.shutdown().await;
}

/// Deleting the root is refused before anything is touched (it used to
/// delete every member first, then answer 403).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn delete_of_the_root_is_refused_and_changes_nothing() {
    let (c, h) = cluster().await;
    let data = pseudo_random(4, 3000);
    assert_eq!(
        h.put("/keep.bin", data.clone()).await.unwrap().status,
        StatusCode::CREATED
    );
    assert_eq!(
        h.request("MKCOL", "/dir", &[], empty())
            .await
            .unwrap()
            .status,
        StatusCode::CREATED
    );
    for root in ["/", "//", "/dir/.."] {
        let r = h.request("DELETE", root, &[], empty()).await.unwrap();
        assert_eq!(
            r.status,
            StatusCode::FORBIDDEN,
            "DELETE {root}: {}",
            r.text()
        );
    }
    // Nor can it be overwritten by a COPY or MOVE (which would first
    // delete what it holds).
    let addr = h.addr();
    for method in ["COPY", "MOVE"] {
        for dest in ["/", "/dir/.."] {
            let d = format!("http://{addr}{dest}");
            let r = h
                .request(
                    method,
                    "/dir",
                    &[("Destination", d.as_str()), ("Overwrite", "T")],
                    empty(),
                )
                .await
                .unwrap();
            assert_eq!(
                r.status,
                StatusCode::FORBIDDEN,
                "{method} to {dest}: {}",
                r.text()
            );
        }
    }
    let back = h.get("/keep.bin").await.unwrap();
    assert_eq!(back.status, StatusCode::OK);
    assert!(back.body == data, "a refused DELETE changed a file");
    let list = h
        .request("PROPFIND", "/dir", &[("Depth", "0")], empty())
        .await
        .unwrap();
    assert_eq!(list.status.as_u16(), 207, "the collection is still there");
    // Deleting a collection below the root still works.
    let r = h.request("DELETE", "/dir", &[], empty()).await.unwrap();
    assert!(r.status.is_success(), "{}", r.status);
    c.shutdown().await;
}

/// Sends `head` on a fresh connection and returns what the server sends
/// back before it closes (or within `within`).
async fn raw_exchange(addr: &str, head: &[u8], within: std::time::Duration) -> (Vec<u8>, bool) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
    s.write_all(head).await.unwrap();
    let mut got = Vec::new();
    let closed = tokio::time::timeout(within, async {
        let mut b = [0u8; 4096];
        loop {
            match s.read(&mut b).await {
                Ok(0) | Err(_) => return,
                Ok(n) => got.extend_from_slice(&b[..n]),
            }
        }
    })
    .await
    .is_ok();
    (got, closed)
}

/// A client that never finishes its header (slowloris) is cut off, and
/// connections past the limit get a clear 503 instead of hanging.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_headers_are_cut_off_and_connections_are_bounded() {
    use std::time::Duration;
    let mut c = TestCluster::start(2, Settings::default()).await;
    let addr = c
        .webdav_with(tessera::webdav::Limits {
            max_connections: 2,
            header_read_timeout: Duration::from_millis(1500),
        })
        .await;
    // Two clients hold both slots with headers they never finish.
    let partial = b"PROPFIND / HTTP/1.1\r\nHost: x\r\nDepth: 0\r\n";
    let holders: Vec<_> = (0..2)
        .map(|_| {
            let a = addr.clone();
            tokio::spawn(async move { raw_exchange(&a, partial, Duration::from_secs(20)).await })
        })
        .collect();
    tokio::time::sleep(Duration::from_millis(300)).await;
    let (third, closed) = raw_exchange(
        &addr,
        b"OPTIONS / HTTP/1.1\r\nHost: x\r\n\r\n",
        Duration::from_secs(5),
    )
    .await;
    assert!(closed, "the refused connection is closed");
    let third = String::from_utf8_lossy(&third);
    assert!(third.starts_with("HTTP/1.1 503"), "{third}");
    // The slow ones are cut off by the header timeout, well before 20 s.
    for h in holders {
        let (_, closed) = h.await.unwrap();
        assert!(closed, "a never-finished header kept its connection open");
    }
    // With the slots free again, requests are served.
    let h = Http::new(&addr);
    assert!(
        h.request("OPTIONS", "/", &[], empty())
            .await
            .unwrap()
            .status
            .is_success()
    );
    c.shutdown().await;
}

/// A DELETE of a collection that cannot remove one member answers 207
/// naming only what stayed; what it removed is gone and not reported as a
/// failure.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_partly_failed_delete_names_what_stayed() {
    let (c, h) = cluster().await;
    assert_eq!(
        h.request("MKCOL", "/d", &[], empty()).await.unwrap().status,
        StatusCode::CREATED
    );
    for name in ["a", "b", "c"] {
        let put = h.put(&format!("/d/{name}"), pseudo_random(1, 700)).await;
        assert_eq!(put.unwrap().status, StatusCode::CREATED);
    }
    // The next change meta applies (the first unlink) fails in storage.
    c.meta_store.fail_write_after(1);
    let r = h.request("DELETE", "/d", &[], empty()).await.unwrap();
    assert_eq!(r.status.as_u16(), 207, "{}", r.text());
    let body = r.text();
    let stayed: Vec<&str> = ["a", "b", "c"]
        .into_iter()
        .filter(|n| body.contains(&format!("/d/{n}<")))
        .collect();
    assert_eq!(
        stayed.len(),
        1,
        "exactly the member that failed is named: {body}"
    );
    assert!(
        !body.contains("<D:href>/d/</D:href>"),
        "the collection stayed, but is not a failure of its own: {body}"
    );
    assert!(!body.contains("204"), "{body}");
    for name in ["a", "b", "c"] {
        let got = h.get(&format!("/d/{name}")).await.unwrap().status;
        let want = if stayed.contains(&name) {
            StatusCode::OK
        } else {
            StatusCode::NOT_FOUND
        };
        assert_eq!(got, want, "/d/{name}");
    }
    c.shutdown().await;
}

/// An upload whose pending record expired under it (its gateway stalled
/// past the upload TTL) is refused with 409, and publishes nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_upload_that_outlived_its_ttl_is_refused_with_409() {
    use std::time::Duration;
    let options = tessera_gateway::FsOptions {
        pending_ttl: Duration::from_millis(200),
        gc_interval: Duration::from_millis(50),
        ..tessera_integration::cluster::test_options()
    };
    let mut c = TestCluster::start_with(3, Settings::default(), options).await;
    let h = Http::new(&c.webdav().await);
    let mut put = h.put_streaming("/late.bin");
    put.send(Bytes::from(pseudo_random(1, 1000))).await.unwrap();
    // Meta reaps the lease meanwhile.
    tokio::time::sleep(Duration::from_millis(1000)).await;
    put.send(Bytes::from(pseudo_random(2, 1000))).await.unwrap();
    let status = put.finish().await.unwrap();
    assert_eq!(status, StatusCode::CONFLICT);
    assert_eq!(
        h.get("/late.bin").await.unwrap().status,
        StatusCode::NOT_FOUND
    );
    c.shutdown().await;
}

/// A browser opening a collection gets an HTML listing: names escaped,
/// links that work, sizes and dates; files download as before.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_browser_gets_a_listing_of_a_collection() {
    let (c, h) = cluster().await;
    let data = pseudo_random(5, 1536);
    // The name `<b>&"x'.txt`, escaped in the URL.
    let odd = "/%3Cb%3E%26%22x%27.txt";
    assert_eq!(
        h.put(odd, data.clone()).await.unwrap().status,
        StatusCode::CREATED
    );
    assert_eq!(
        h.request("MKCOL", "/sub%20dir", &[], empty())
            .await
            .unwrap()
            .status,
        StatusCode::CREATED
    );
    assert_eq!(
        h.put("/sub%20dir/inner.bin", "12345").await.unwrap().status,
        StatusCode::CREATED
    );

    let page = h.get("/").await.unwrap();
    assert_eq!(page.status, StatusCode::OK, "{}", page.text());
    assert_eq!(
        page.headers
            .get("content-type")
            .and_then(|v| v.to_str().ok()),
        Some("text/html; charset=utf-8")
    );
    let html = page.text();
    assert!(html.contains("&lt;b&gt;&amp;&quot;x&#39;.txt"), "{html}");
    assert!(
        !html.contains("<b>"),
        "a name went into the page unescaped: {html}"
    );
    assert!(html.contains(&format!("href=\"{odd}\"")), "{html}");
    assert!(html.contains("href=\"/sub%20dir/\""), "{html}");
    assert!(html.contains("1.5 KiB"), "{html}");
    // Directories first.
    assert!(html.find("sub dir/").unwrap() < html.find("x&#39;.txt").unwrap());
    // The links work: the file downloads, the folder lists, with a way up.
    assert!(h.get(odd).await.unwrap().body == data);
    // Without the slash, the browser is sent to the collection's URL.
    let moved = h.get("/sub%20dir").await.unwrap();
    assert_eq!(moved.status, StatusCode::FOUND);
    let to = moved.headers.get("location").and_then(|v| v.to_str().ok());
    assert!(to.is_some_and(|l| l.ends_with("/sub%20dir/")), "{to:?}");
    let inner = h.get("/sub%20dir/").await.unwrap();
    assert_eq!(inner.status, StatusCode::OK);
    let html = inner.text();
    assert!(html.contains("href=\"/sub%20dir/inner.bin\""), "{html}");
    assert!(html.contains("href=\"/\">../"), "{html}");
    assert!(html.contains("5 B"), "{html}");
    let head = h.request("HEAD", "/", &[], empty()).await.unwrap();
    assert_eq!(head.status, StatusCode::OK);
    assert!(head.body.is_empty());
    assert_eq!(
        h.get("/nothing/").await.unwrap().status,
        StatusCode::NOT_FOUND
    );
    c.shutdown().await;
}

/// A PUT with `X-OC-Mtime` (ownCloud's header, sent by rclone and the
/// tessera CLI) stores the file with that modification time and says
/// "accepted"; a header that is not a time is refused and stores nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn put_takes_the_modification_time_from_x_oc_mtime() {
    let (c, h) = cluster().await;
    let put = h
        .request("PUT", "/t.txt", &[("X-OC-Mtime", "1600000000")], "hello")
        .await
        .unwrap();
    assert_eq!(put.status, StatusCode::CREATED);
    assert_eq!(put.headers["x-oc-mtime"], "accepted");
    let head = h.request("HEAD", "/t.txt", &[], empty()).await.unwrap();
    assert_eq!(
        head.headers["last-modified"],
        "Sun, 13 Sep 2020 12:26:40 GMT"
    );
    // A fraction is fine; replacing keeps the new time.
    let again = h
        .request("PUT", "/t.txt", &[("X-OC-Mtime", "1700000000.5")], "hello2")
        .await
        .unwrap();
    assert_eq!(again.status, StatusCode::NO_CONTENT);
    let head = h.request("HEAD", "/t.txt", &[], empty()).await.unwrap();
    assert_eq!(
        head.headers["last-modified"],
        "Tue, 14 Nov 2023 22:13:20 GMT"
    );
    for bad in ["yesterday", "-5", "1e300", ""] {
        let r = h
            .request("PUT", "/bad.txt", &[("X-OC-Mtime", bad)], "x")
            .await
            .unwrap();
        assert_eq!(r.status, StatusCode::BAD_REQUEST, "{bad:?}");
        assert!(r.text().contains("X-OC-Mtime"), "{}", r.text());
        let get = h.get("/bad.txt").await.unwrap();
        assert_eq!(get.status, StatusCode::NOT_FOUND, "{bad:?} stored a file");
    }
    // Without the header a PUT takes the time of the upload, as before.
    let plain = h.put("/p.txt", "x").await.unwrap();
    assert!(plain.headers.get("x-oc-mtime").is_none());
    c.shutdown().await;
}
