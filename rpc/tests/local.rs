//! Calls between services of one process (`tessera_rpc::local`): the same
//! answers as over the wire, without the socket. A binary of its own, as
//! enabling local calls is for the whole process.

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

    async fn handle(&self, (n, data): Self::Request, payload: Bytes) -> (Self::Response, Payload) {
        if n == u64::MAX {
            tokio::time::sleep(Duration::from_secs(5)).await;
        }
        (
            Ok((n * 2, data.len() + payload.len())),
            vec![payload.clone(), payload],
        )
    }

    /// Tells the caller it was called in the process (n 7 only).
    async fn handle_local(&self, req: Self::Request, payload: Bytes) -> (Self::Response, Payload) {
        if req.0 == 7 {
            return (Err("local".into()), vec![]);
        }
        self.handle(req, payload).await
    }
}

/// Serves `Echo` on a runtime of its own until the returned sender is
/// dropped. `frozen`: the runtime's only thread then blocks, so a call over
/// the socket gets no answer while a call in the process still does;
/// otherwise it keeps answering (started before local calls are enabled,
/// it is reached over its socket only).
fn start_echo(secret: &'static str, frozen: bool) -> (String, std::sync::mpsc::Sender<()>) {
    let (addr_tx, addr_rx) = std::sync::mpsc::channel();
    let (stop_tx, stop_rx) = std::sync::mpsc::channel::<()>();
    std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async move {
            let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
            let addr = listener.local_addr().unwrap().to_string();
            let secret = Secret::new(secret).unwrap();
            if frozen {
                tokio::spawn(serve(listener, secret, Arc::new(Echo), async {
                    std::future::pending::<()>().await
                }));
                tokio::time::sleep(Duration::from_millis(50)).await;
                addr_tx.send(addr).unwrap();
                let _ = stop_rx.recv();
            } else {
                addr_tx.send(addr).unwrap();
                let stopped = tokio::task::spawn_blocking(move || {
                    let _ = stop_rx.recv();
                });
                serve(listener, secret, Arc::new(Echo), async {
                    let _ = stopped.await;
                })
                .await
            }
        });
    });
    (addr_rx.recv().unwrap(), stop_tx)
}

/// One test: enabling is for the whole process, and the first part needs
/// it off.
#[tokio::test]
async fn calls_in_the_process_skip_the_socket_and_answer_as_the_wire_does() {
    // Before enabling: over the socket, which the frozen server never answers.
    let (addr, _thaw) = start_echo("the-right-secret-123", true);
    let t = Transport::new(Secret::new("the-right-secret-123").unwrap());
    let c = t.client::<Echo>(&addr, Duration::from_millis(500));
    assert!(matches!(
        c.call(&(1, vec![])).await,
        Err(Error::Timeout { .. })
    ));
    // Over a socket, `handle` answers.
    let (open_addr, _open_thaw) = start_echo("the-right-secret-123", false);
    let over_socket = t.client::<Echo>(&open_addr, Duration::from_secs(5));
    assert_eq!(over_socket.call(&(7, vec![])).await.unwrap(), Ok((14, 0)));

    tessera_rpc::local::enable();
    let (addr, _thaw) = start_echo("the-right-secret-123", true);
    let c = t.client::<Echo>(&addr, Duration::from_secs(5));
    let a = Bytes::from((0..3_000_000u32).map(|i| i as u8).collect::<Vec<u8>>());
    let (resp, back) = c
        .call_with(&(3, vec![1, 2]), vec![a.clone(), Bytes::new()])
        .await
        .unwrap();
    // In the process, `handle_local` does.
    assert_eq!(c.call(&(7, vec![])).await.unwrap(), Err("local".into()));
    assert_eq!(resp, Ok((6, 2 + a.len())));
    assert!(back.len() == 2 * a.len() && back[..a.len()] == a[..] && back[a.len()..] == a[..]);

    // A wrong secret is refused here too.
    let wrong = Transport::new(Secret::new("the-wrong-secret-456").unwrap());
    assert!(matches!(
        wrong
            .client::<Echo>(&addr, Duration::from_secs(5))
            .call(&(1, vec![]))
            .await,
        Err(Error::Unauthorized { .. })
    ));
    // And the caller's timeout holds.
    let c = t.client::<Echo>(&addr, Duration::from_millis(200));
    assert!(matches!(
        c.call(&(u64::MAX, vec![])).await,
        Err(Error::Timeout { .. })
    ));

    // A service that stopped is not called in the process any more.
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(serve(
        listener,
        Secret::new("the-right-secret-123").unwrap(),
        Arc::new(Echo),
        async {
            let _ = stopped.await;
        },
    ));
    let c = t.client::<Echo>(&addr, Duration::from_secs(2));
    // serve registers when it first runs.
    let mut answered = false;
    for _ in 0..50 {
        if let Ok(r) = c.call(&(5, vec![])).await {
            assert_eq!(r, Ok((10, 0)));
            answered = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert!(answered);
    stop.send(()).unwrap();
    server.await.unwrap();
    assert!(matches!(
        c.call(&(1, vec![])).await,
        Err(Error::Connect { .. })
    ));
}
