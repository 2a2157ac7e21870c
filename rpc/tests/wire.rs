//! The wire against a real socket: calls, a wrong secret, garbage bodies.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use tessera_rpc::{Error, Payload, Secret, Service, Transport, serve};
use tokio::net::TcpListener;

struct Echo;

impl Service for Echo {
    type Request = (u64, Vec<u8>);
    type Response = Result<(u64, usize), String>;
    const NAME: &'static str = "echo";

    /// Doubles `n`, counts the bytes received, and sends the payload back
    /// twice (two segments).
    async fn handle(&self, (n, data): Self::Request, payload: Bytes) -> (Self::Response, Payload) {
        if n == 0 {
            return (Err("zero".into()), vec![]);
        }
        if n == u64::MAX {
            tokio::time::sleep(Duration::from_secs(5)).await;
        }
        (
            Ok((n * 2, data.len() + payload.len())),
            vec![payload.clone(), payload],
        )
    }
}

async fn start(secret: &str) -> (String, tokio::sync::oneshot::Sender<()>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    let (tx, rx) = tokio::sync::oneshot::channel::<()>();
    let secret = Secret::new(secret).unwrap();
    tokio::spawn(serve(listener, secret, Arc::new(Echo), async {
        let _ = rx.await;
    }));
    (addr, tx)
}

#[tokio::test]
async fn calls_round_trip_and_multiplex() {
    let (addr, _stop) = start("the-right-secret-123").await;
    let t = Transport::new(Secret::new("the-right-secret-123").unwrap());
    let c = t.client::<Echo>(&addr, Duration::from_secs(5));
    assert_eq!(
        c.call(&(21, vec![0; 3 << 20])).await.unwrap(),
        Ok((42, 3 << 20))
    );
    assert_eq!(c.call(&(0, vec![])).await.unwrap(), Err("zero".to_string()));
    let calls = (1..=64u64).map(|i| {
        let c = c.clone();
        async move { c.call(&(i, vec![1; 4096])).await.unwrap().unwrap().0 }
    });
    let got = futures_join(calls).await;
    assert_eq!(got, (1..=64u64).map(|i| i * 2).collect::<Vec<_>>());
}

#[tokio::test]
async fn raw_payloads_travel_both_ways() {
    let (addr, _stop) = start("the-right-secret-123").await;
    let t = Transport::new(Secret::new("the-right-secret-123").unwrap());
    let c = t.client::<Echo>(&addr, Duration::from_secs(5));
    let a = Bytes::from((0..3_000_000u32).map(|i| i as u8).collect::<Vec<u8>>());
    let b = Bytes::from_static(b"tail");
    let (resp, back) = c
        .call_with(&(3, vec![1, 2]), vec![a.clone(), Bytes::new(), b.clone()])
        .await
        .unwrap();
    assert_eq!(resp, Ok((6, 2 + a.len() + b.len())));
    let mut want = Vec::new();
    for _ in 0..2 {
        want.extend_from_slice(&a);
        want.extend_from_slice(&b);
    }
    assert_eq!(back.len(), want.len());
    assert!(back == want, "payload came back changed");
    // No payload: an empty one comes back.
    let (resp, back) = c.call_with(&(4, vec![]), vec![]).await.unwrap();
    assert_eq!((resp, back.len()), (Ok((8, 0)), 0));
}

async fn futures_join<F: std::future::Future<Output = u64> + Send + 'static>(
    fs: impl Iterator<Item = F>,
) -> Vec<u64> {
    let handles: Vec<_> = fs.map(tokio::spawn).collect();
    let mut out = vec![];
    for h in handles {
        out.push(h.await.unwrap());
    }
    out
}

#[tokio::test]
async fn wrong_secret_is_refused() {
    let (addr, _stop) = start("the-right-secret-123").await;
    let t = Transport::new(Secret::new("the-wrong-secret-456").unwrap());
    let c = t.client::<Echo>(&addr, Duration::from_secs(5));
    assert!(matches!(
        c.call(&(1, vec![])).await,
        Err(Error::Unauthorized { .. })
    ));
}

#[tokio::test]
async fn timeout_and_dead_peer_are_errors() {
    let (addr, _stop) = start("the-right-secret-123").await;
    let t = Transport::new(Secret::new("the-right-secret-123").unwrap());
    let c = t.client::<Echo>(&addr, Duration::from_millis(200));
    assert!(matches!(
        c.call(&(u64::MAX, vec![])).await,
        Err(Error::Timeout { .. })
    ));
    // A port nobody listens on.
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let dead = l.local_addr().unwrap().to_string();
    drop(l);
    let c = t.client::<Echo>(&dead, Duration::from_secs(2));
    assert!(matches!(
        c.call(&(1, vec![])).await,
        Err(Error::Connect { .. })
    ));
}

/// A malformed body gets 400 and the server keeps serving.
#[tokio::test]
async fn garbage_gets_an_error_reply_not_a_panic() {
    let (addr, _stop) = start("the-right-secret-123").await;
    // A service whose request type does not match the server's.
    struct Other;
    impl Service for Other {
        type Request = String;
        type Response = Result<(u64, usize), String>;
        const NAME: &'static str = "other";
        async fn handle(&self, _: String, _: Bytes) -> (Self::Response, Payload) {
            unreachable!()
        }
    }
    let t = Transport::new(Secret::new("the-right-secret-123").unwrap());
    let bad = t.client::<Other>(&addr, Duration::from_secs(5));
    // An empty string is one zero byte: a u64, then nothing where the Vec's
    // length should be.
    let err = bad.call(&String::new()).await.unwrap_err();
    assert!(matches!(err, Error::BadRequest { .. }), "{err:?}");
    let good = t.client::<Echo>(&addr, Duration::from_secs(5));
    assert_eq!(good.call(&(2, vec![])).await.unwrap(), Ok((4, 0)));
}

/// A server holds a bounded number of connections: past the limit, callers
/// wait for a free one; a connection that never sends anything is closed
/// instead of holding its slot forever.
#[tokio::test]
async fn connections_are_bounded_and_silent_ones_are_closed() {
    use tokio::io::AsyncReadExt;
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    let limits = tessera_rpc::Limits {
        max_connections: 2,
        first_byte: Duration::from_millis(800),
    };
    let secret = Secret::new("the-right-secret-123").unwrap();
    tokio::spawn(tessera_rpc::serve_with(
        listener,
        secret.clone(),
        Arc::new(Echo),
        limits,
        std::future::pending(),
    ));
    // Two silent connections take both slots.
    let mut silent = Vec::new();
    for _ in 0..2 {
        silent.push(tokio::net::TcpStream::connect(&addr).await.unwrap());
    }
    tokio::time::sleep(Duration::from_millis(100)).await;
    let t = Transport::new(secret);
    let c = t.client::<Echo>(&addr, Duration::from_millis(300));
    assert!(
        c.call(&(1, vec![])).await.is_err(),
        "a third connection was served past the limit"
    );
    // The silent ones are closed by the server, which frees the slots.
    for s in &mut silent {
        let mut b = [0u8; 1];
        let n = tokio::time::timeout(Duration::from_secs(5), s.read(&mut b))
            .await
            .expect("the server closes a silent connection")
            .unwrap_or(0);
        assert_eq!(n, 0);
    }
    let c = t.client::<Echo>(&addr, Duration::from_secs(5));
    assert_eq!(c.call(&(2, vec![])).await.unwrap(), Ok((4, 0)));
}
