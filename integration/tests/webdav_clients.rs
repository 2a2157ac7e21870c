//! The quirks of real WebDAV clients, each replayed from the requests the
//! client sends (headers as they send them): macOS Finder, GNOME's gvfs,
//! davfs2, and Windows Explorer's files over 4 GiB.

use std::sync::atomic::Ordering;

use bytes::Bytes;
use tessera_integration::cluster::TestCluster;
use tessera_integration::data::pseudo_random;
use tessera_integration::http::{Http, StatusCode};
use tessera_meta::Settings;

fn empty() -> Bytes {
    Bytes::new()
}

async fn cluster() -> (TestCluster, Http) {
    let mut c = TestCluster::start(3, Settings::default()).await;
    let addr = c.webdav().await;
    (c, Http::new(&addr))
}

const FINDER: (&str, &str) = (
    "User-Agent",
    "WebDAVFS/3.0.0 (03008000) Darwin/21.6.0 (x86_64)",
);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn finder_short_chunked_uploads_store_nothing_and_its_dot_files_are_cheap() {
    let (c, h) = cluster().await;
    h.request("MKCOL", "/Photos", &[FINDER], empty())
        .await
        .unwrap();
    let old = pseudo_random(3, 3000);
    h.put("/Photos/a.jpg", old.clone()).await.unwrap();

    // Finder sends chunked bodies and announces the length in
    // X-Expected-Entity-Length. A body that ends short (the transfer was
    // cut, then the chunked stream closed) must store nothing.
    for (path, before) in [("/Photos/a.jpg", Some(&old)), ("/Photos/b.jpg", None)] {
        let mut put = h.put_streaming_with(path, &[FINDER, ("X-Expected-Entity-Length", "10000")]);
        put.send(Bytes::from(vec![9u8; 6000])).await.unwrap();
        let status = put.finish().await.unwrap();
        assert_eq!(status, StatusCode::BAD_REQUEST, "{path}");
        let got = h.get(path).await.unwrap();
        match before {
            Some(b) => assert!(got.body == b[..], "{path} keeps its old content"),
            None => assert_eq!(got.status, StatusCode::NOT_FOUND, "{path} was not created"),
        }
    }
    // The whole body, as announced: stored.
    let mut put = h.put_streaming_with(
        "/Photos/b.jpg",
        &[FINDER, ("X-Expected-Entity-Length", "10000")],
    );
    put.send(Bytes::from(vec![7u8; 4000])).await.unwrap();
    put.send(Bytes::from(vec![7u8; 6000])).await.unwrap();
    assert_eq!(put.finish().await.unwrap(), StatusCode::CREATED);
    assert_eq!(h.get("/Photos/b.jpg").await.unwrap().body.len(), 10000);

    // `._name` (AppleDouble) and `.DS_Store`: a small PUT each, two calls
    // to meta apiece, like any small file.
    let calls = || c.meta_store.counters().calls.load(Ordering::Relaxed);
    for name in ["/Photos/._a.jpg", "/Photos/.DS_Store", "/._Photos"] {
        let before = calls();
        let r = h
            .request("PUT", name, &[FINDER], pseudo_random(4, 4096))
            .await
            .unwrap();
        assert_eq!(r.status, StatusCode::CREATED, "{name}");
        assert!(
            calls() - before <= 2,
            "{name}: {} meta calls",
            calls() - before
        );
        // Finder asks for the ones it did not write; a 404 costs one call.
        let before = calls();
        let missing = format!("{name}.missing");
        let r = h
            .request("PROPFIND", &missing, &[FINDER, ("Depth", "0")], empty())
            .await
            .unwrap();
        assert_eq!(r.status, StatusCode::NOT_FOUND);
        assert_eq!(calls() - before, 1);
    }
    c.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gvfs_walks_ancestors_and_its_empty_put_leaves_no_junk() {
    let (c, h) = cluster().await;
    let gvfs = ("User-Agent", "gvfs/1.50.4");
    h.request("MKCOL", "/a", &[], empty()).await.unwrap();
    h.request("MKCOL", "/a/b", &[], empty()).await.unwrap();
    // gvfs asks about every ancestor of what it opens.
    for p in ["/", "/a/", "/a/b/"] {
        let r = h
            .request("PROPFIND", p, &[gvfs, ("Depth", "0")], empty())
            .await
            .unwrap();
        assert_eq!(r.status, StatusCode::MULTI_STATUS, "{p}");
    }
    let (_, gc0, _) = c.fs.meta().counts().await.unwrap();
    // Saving a file: an empty PUT to create it, then the real one.
    let r = h
        .request("PUT", "/a/b/doc.odt", &[gvfs], empty())
        .await
        .unwrap();
    assert_eq!(r.status, StatusCode::CREATED);
    let tag = r.headers.get("etag").unwrap().to_str().unwrap().to_string();
    let data = pseudo_random(5, 50_000);
    let r = h
        .request(
            "PUT",
            "/a/b/doc.odt",
            &[gvfs, ("If-Match", tag.as_str())],
            data.clone(),
        )
        .await
        .unwrap();
    assert_eq!(r.status, StatusCode::NO_CONTENT);
    assert!(h.get("/a/b/doc.odt").await.unwrap().body == data);
    // The placeholder's (empty) object is collected: nothing is left.
    let mut left = u64::MAX;
    for _ in 0..100 {
        left = c.fs.meta().counts().await.unwrap().1;
        if left == gc0 {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    assert_eq!(left, gc0, "the empty first version left garbage");
    let props = h
        .request("PROPFIND", "/a/b/", &[gvfs, ("Depth", "1")], empty())
        .await
        .unwrap()
        .text();
    assert_eq!(
        props.matches("doc.odt").count(),
        2,
        "one entry (href and name): {props}"
    );
    c.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn davfs2_locks_a_missing_name_then_puts_with_a_quoted_if_match() {
    let (c, h) = cluster().await;
    let ua = ("User-Agent", "davfs2/1.6.1 neon/0.32.5");
    h.request("MKCOL", "/dv", &[], empty()).await.unwrap();
    // As davfs2 sends it (captured): single-quoted namespace, Depth 0.
    let body = "<?xml version=\"1.0\" encoding=\"utf-8\"?>\n<lockinfo xmlns='DAV:'>\n <lockscope><exclusive/></lockscope>\n<locktype><write/></locktype><owner>davfs2 1.6.1</owner>\n</lockinfo>\n";
    let l = h
        .request(
            "LOCK",
            "/dv/new%20file.txt",
            &[
                ua,
                ("Content-Type", "application/xml"),
                ("Depth", "0"),
                ("Timeout", "Second-1800"),
            ],
            body,
        )
        .await
        .unwrap();
    assert_eq!(l.status, StatusCode::CREATED, "{}", l.text());
    let token = l
        .headers
        .get("lock-token")
        .unwrap()
        .to_str()
        .unwrap()
        .to_string();
    let head = h
        .request("HEAD", "/dv/new%20file.txt", &[ua], empty())
        .await
        .unwrap();
    assert_eq!(head.status, StatusCode::OK);
    let tag = head
        .headers
        .get("etag")
        .unwrap()
        .to_str()
        .unwrap()
        .to_string();
    assert!(tag.starts_with('"'), "a quoted ETag: {tag}");
    let url = format!("<http://{}/dv/new%20file.txt> ({token})", "127.0.0.1");
    let data = pseudo_random(6, 3813);
    let put = h
        .request(
            "PUT",
            "/dv/new%20file.txt",
            &[ua, ("If-Match", tag.as_str()), ("If", url.as_str())],
            data.clone(),
        )
        .await
        .unwrap();
    assert_eq!(put.status, StatusCode::NO_CONTENT, "{}", put.text());
    // A stale ETag is refused, even with the lock.
    let stale = h
        .request(
            "PUT",
            "/dv/new%20file.txt",
            &[ua, ("If-Match", tag.as_str()), ("If", url.as_str())],
            "x",
        )
        .await
        .unwrap();
    assert_eq!(stale.status, StatusCode::PRECONDITION_FAILED);
    let un = h
        .request(
            "UNLOCK",
            "/dv/new%20file.txt",
            &[ua, ("Lock-Token", token.as_str())],
            empty(),
        )
        .await
        .unwrap();
    assert_eq!(un.status, StatusCode::NO_CONTENT);
    assert!(h.get("/dv/new%20file.txt").await.unwrap().body == data);
    c.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn files_over_4_gib_keep_64_bit_sizes_and_offsets() {
    // Explorer copies files over 4 GiB; everything that carries a size or
    // an offset must be 64-bit. A ranged PUT past 4 GiB makes such a file
    // without sending 4 GiB (the rest reads as zeros).
    let (c, h) = cluster().await;
    let past: u64 = (4 << 30) + 1000;
    let tail = pseudo_random(7, 2000);
    let range = format!("bytes {past}-{}/*", past + 1999);
    let put = h
        .request(
            "PUT",
            "/big.iso",
            &[("Content-Range", range.as_str())],
            tail.clone(),
        )
        .await
        .unwrap();
    assert!(put.status.is_success(), "{} {}", put.status, put.text());
    let size = past + 2000;
    let head = h.request("HEAD", "/big.iso", &[], empty()).await.unwrap();
    assert_eq!(
        head.headers.get("content-length").unwrap(),
        &size.to_string()
    );
    let pf = h
        .request("PROPFIND", "/big.iso", &[("Depth", "0")], empty())
        .await
        .unwrap()
        .text();
    assert!(
        pf.contains(&format!("<D:getcontentlength>{size}</D:getcontentlength>")),
        "{pf}"
    );
    let r = format!("bytes={}-{}", past - 10, past + 1999);
    let got = h
        .request("GET", "/big.iso", &[("Range", r.as_str())], empty())
        .await
        .unwrap();
    assert_eq!(got.status, StatusCode::PARTIAL_CONTENT);
    assert_eq!(&got.body[..10], &[0u8; 10]);
    assert_eq!(&got.body[10..], &tail[..]);
    c.shutdown().await;
}
