//! Who may use a gateway: HTTP Basic against a users file of argon2
//! hashes, throttled guessing, TLS, and a gateway that will not serve a
//! non-loopback address to anyone without being told to.

use std::sync::Arc;

use base64::Engine;
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use tessera::webdav::{Limits, Security, auth};
use tessera_integration::cluster::TestCluster;
use tessera_integration::http::{Http, StatusCode};
use tessera_meta::Settings;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

fn basic(name: &str, password: &str) -> String {
    let v = base64::engine::general_purpose::STANDARD.encode(format!("{name}:{password}"));
    format!("Basic {v}")
}

/// Serves the cluster's `Fs` with `security` on a free loopback port.
async fn serve(c: &TestCluster, security: Security) -> (String, CancellationToken) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    let stop = CancellationToken::new();
    let (fs, s) = (c.fs.clone(), stop.clone());
    tokio::spawn(async move {
        tessera::webdav::serve_secure(
            listener,
            fs,
            Limits::default(),
            security,
            s.cancelled_owned(),
        )
        .await
    });
    (addr, stop)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn basic_auth_guards_every_request_and_throttles_guessing() {
    let c = TestCluster::start(3, Settings::default()).await;
    let users = c.dir.path().join("users");
    auth::add_user(&users, "alice", "correct horse").unwrap();
    let security = Security {
        auth: Some(Arc::new(auth::Auth::load(&users).unwrap())),
        tls: None,
    };
    let (addr, stop) = serve(&c, security).await;
    let h = Http::new(&addr);
    let alice = basic("alice", "correct horse");

    for (method, path) in [
        ("OPTIONS", "/"),
        ("GET", "/"),
        ("PROPFIND", "/"),
        ("PUT", "/f"),
    ] {
        let r = h
            .request(method, path, &[("Depth", "0")], "x")
            .await
            .unwrap();
        assert_eq!(
            r.status,
            StatusCode::UNAUTHORIZED,
            "{method} without credentials"
        );
        let challenge = r.headers.get("www-authenticate").unwrap().to_str().unwrap();
        assert!(
            challenge.starts_with("Basic realm=\"Tessera\""),
            "{challenge}"
        );
    }
    let wrong = h
        .request(
            "PUT",
            "/f",
            &[("Authorization", &basic("alice", "guess"))],
            "x",
        )
        .await
        .unwrap();
    assert_eq!(wrong.status, StatusCode::UNAUTHORIZED);
    assert!(
        !wrong.text().contains("argon2") && !wrong.text().contains("alice"),
        "{}",
        wrong.text()
    );
    assert_eq!(
        h.request(
            "PUT",
            "/f",
            &[("Authorization", &basic("mallory", "x"))],
            "x"
        )
        .await
        .unwrap()
        .status,
        StatusCode::UNAUTHORIZED
    );
    assert_eq!(
        c.fs.resolve("/f")
            .await
            .err()
            .map(|e| e.to_string().contains("no such")),
        Some(true)
    );

    let put = h
        .request("PUT", "/f", &[("Authorization", &alice)], "data")
        .await
        .unwrap();
    assert_eq!(put.status, StatusCode::CREATED);
    let get = h
        .request("GET", "/f", &[("Authorization", &alice)], Bytes::new())
        .await
        .unwrap();
    assert_eq!(&get.body[..], b"data");

    // A lock taken by alice names her as its principal: her token works for her.
    let body = r#"<?xml version="1.0"?><D:lockinfo xmlns:D="DAV:"><D:lockscope><D:exclusive/></D:lockscope><D:locktype><D:write/></D:locktype></D:lockinfo>"#;
    let l = h
        .request("LOCK", "/f", &[("Authorization", &alice)], body)
        .await
        .unwrap();
    assert_eq!(l.status, StatusCode::OK);
    let token = l
        .headers
        .get("lock-token")
        .unwrap()
        .to_str()
        .unwrap()
        .to_string();
    let tagged = format!("({token})");
    let put = h
        .request(
            "PUT",
            "/f",
            &[("Authorization", &alice), ("If", &tagged)],
            "new",
        )
        .await
        .unwrap();
    assert_eq!(put.status, StatusCode::NO_CONTENT);

    // Another user who read the token from lockdiscovery cannot release
    // alice's lock, nor write with it.
    auth::add_user(&users, "bob", "hunter2").unwrap();
    tokio::time::sleep(std::time::Duration::from_millis(2100)).await;
    let bob = basic("bob", "hunter2");
    let steal = h
        .request(
            "UNLOCK",
            "/f",
            &[("Authorization", &bob), ("Lock-Token", &token)],
            Bytes::new(),
        )
        .await
        .unwrap();
    assert!(
        steal.status.is_client_error(),
        "bob's UNLOCK: {}",
        steal.status
    );
    let put = h
        .request(
            "PUT",
            "/f",
            &[("Authorization", &bob), ("If", &tagged)],
            "bob's",
        )
        .await
        .unwrap();
    assert_eq!(put.status, StatusCode::LOCKED);
    let mine = h
        .request(
            "UNLOCK",
            "/f",
            &[("Authorization", &alice), ("Lock-Token", &token)],
            Bytes::new(),
        )
        .await
        .unwrap();
    assert_eq!(mine.status, StatusCode::NO_CONTENT);

    // Guessing is throttled per address: then even the right password waits.
    for i in 0..auth::MAX_FAILURES {
        let _ = h
            .request(
                "GET",
                "/f",
                &[("Authorization", &basic("alice", &format!("g{i}")))],
                Bytes::new(),
            )
            .await
            .unwrap();
    }
    let r = h
        .request("GET", "/f", &[("Authorization", &alice)], Bytes::new())
        .await
        .unwrap();
    assert_eq!(r.status, StatusCode::TOO_MANY_REQUESTS);
    assert!(r.headers.get("retry-after").is_some());

    // Logins from another address are not held up (bob was added while
    // the gateway ran).
    let listener_addr: std::net::SocketAddr = addr.parse().unwrap();
    let stream = tokio::net::TcpSocket::new_v4().unwrap();
    stream.bind("127.0.0.2:0".parse().unwrap()).unwrap();
    let stream = stream.connect(listener_addr).await.unwrap();
    let (mut send, conn) =
        hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream))
            .await
            .unwrap();
    tokio::spawn(conn);
    let req = hyper::Request::get(format!("http://{addr}/f"))
        .header("Authorization", basic("bob", "hunter2"))
        .body(Full::new(Bytes::new()))
        .unwrap();
    let resp = send.send_request(req).await.unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    let body = resp.into_body().collect().await.unwrap().to_bytes();
    assert_eq!(&body[..], b"new");
    stop.cancel();
    c.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_serves_https_and_nothing_in_the_clear() {
    let c = TestCluster::start(3, Settings::default()).await;
    let ck =
        rcgen::generate_simple_self_signed(vec!["localhost".into(), "127.0.0.1".into()]).unwrap();
    let (cert, key) = (c.dir.path().join("cert.pem"), c.dir.path().join("key.pem"));
    std::fs::write(&cert, ck.cert.pem()).unwrap();
    std::fs::write(&key, ck.key_pair.serialize_pem()).unwrap();
    let security = Security {
        auth: None,
        tls: Some(auth::tls_acceptor(&cert, &key).unwrap()),
    };
    let (addr, stop) = serve(&c, security).await;

    // A client that trusts exactly this certificate.
    let mut roots = tokio_rustls::rustls::RootCertStore::empty();
    roots.add(ck.cert.der().clone()).unwrap();
    let config = tokio_rustls::rustls::ClientConfig::builder_with_provider(Arc::new(
        tokio_rustls::rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_root_certificates(roots)
    .with_no_client_auth();
    let connector = tokio_rustls::TlsConnector::from(Arc::new(config));
    let tcp = tokio::net::TcpStream::connect(&addr).await.unwrap();
    let name = rustls_pki_types::ServerName::try_from("localhost").unwrap();
    let tls = connector.connect(name, tcp).await.unwrap();
    let (mut send, conn) = hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(tls))
        .await
        .unwrap();
    tokio::spawn(conn);
    for (method, body, want) in [
        ("PUT", "over tls", StatusCode::CREATED),
        ("GET", "", StatusCode::OK),
    ] {
        let req = hyper::Request::builder()
            .method(method)
            .uri("/secret.txt")
            .header("Host", "localhost")
            .body(Full::new(Bytes::from(body)))
            .unwrap();
        // The connection takes the next request only once it has finished
        // the last one (hyper answers "not ready" otherwise).
        send.ready().await.unwrap();
        let resp = send.send_request(req).await.unwrap();
        assert_eq!(resp.status(), want, "{method}");
        let got = resp.into_body().collect().await.unwrap().to_bytes();
        if method == "GET" {
            assert_eq!(&got[..], b"over tls");
        }
    }
    // Plain HTTP to the TLS port gets no HTTP answer.
    let plain = Http::new(&addr)
        .request("GET", "/secret.txt", &[], Bytes::new())
        .await;
    assert!(
        plain.is_err(),
        "plain HTTP was answered: {:?}",
        plain.map(|r| r.status)
    );
    stop.cancel();
    c.shutdown().await;
}

#[test]
fn a_gateway_will_not_serve_the_network_without_users_unless_told() {
    let bin = tessera_integration::procs::binary();
    let dir = tempfile::tempdir().unwrap();
    let out = std::process::Command::new(&bin)
        .args(["up", "--webdav", "0.0.0.0:0", "--data"])
        .arg(dir.path().join("data"))
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("without authentication") && err.contains("--no-auth"),
        "{err}"
    );
    assert!(
        !dir.path().join("data").exists(),
        "it refused before touching anything"
    );

    // `tessera user add` writes the users file from TESSERA_PASSWORD.
    let users = dir.path().join("users");
    let out = std::process::Command::new(&bin)
        .args(["user", "add", "alice", "--users"])
        .arg(&users)
        .env("TESSERA_PASSWORD", "s3cret pass")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = std::fs::read_to_string(&users).unwrap();
    assert!(
        text.starts_with("alice:$argon2id$") && !text.contains("s3cret"),
        "{text}"
    );
    // A users file that is not one is refused with the line that is wrong.
    std::fs::write(&users, "alice\n").unwrap();
    let out = std::process::Command::new(&bin)
        .args(["up", "--webdav", "127.0.0.1:0", "--users"])
        .arg(&users)
        .arg("--data")
        .arg(dir.path().join("data"))
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("users:1") && err.contains("NAME:ARGON2-HASH"),
        "{err}"
    );
}
