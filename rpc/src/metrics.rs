//! Prometheus metrics of a process, served on `GET /metrics`.
//!
//! Two kinds live here:
//! - the wire's own, recorded as calls happen: per service and call, RPCs
//!   served and made, their latency histograms, bytes in and out, calls
//!   refused ([`Rpc`], one per process);
//! - what each service counts already (a datanode's blocks and scrubs, a
//!   gateway's blocked writes, meta's node states and queues): a
//!   [`Source`] registered with [`register`] reads its own counters when
//!   the endpoint is scraped, so nothing is counted twice and a service
//!   stopped leaves the output with it.
//!
//! [`serve`] answers HTTP/1 on a listener of its own (the RPC port speaks
//! HTTP/2 only, and a gateway's WebDAV port belongs to its files), in the
//! Prometheus text format, or OpenMetrics when the scraper asks for it.

use std::collections::BTreeMap;
use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::AtomicU64;
use std::sync::{Arc, LazyLock, Mutex, Weak};
use std::time::Duration;

use bytes::Bytes;
use http::{Method, Request, Response, StatusCode, header};
use http_body_util::Full;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;
use tokio::net::TcpListener;

/// Labels of one RPC: the service and the call.
type CallLabels = [(&'static str, &'static str); 2];
/// Labels of a client's RPC: service, call and outcome.
type OutcomeLabels = [(&'static str, &'static str); 3];
/// Labels of one service.
type ServiceLabels = [(&'static str, &'static str); 1];

/// Latency buckets: 50 µs to about 6.5 s, doubling.
fn latency() -> Histogram {
    Histogram::new(exponential_buckets(50e-6, 2.0, 18))
}

/// The wire's metrics, shared by every service and client of the process.
#[derive(Debug)]
pub struct Rpc {
    served: Family<CallLabels, Counter>,
    served_seconds: Family<CallLabels, Histogram, fn() -> Histogram>,
    served_in: Family<ServiceLabels, Counter>,
    served_out: Family<ServiceLabels, Counter>,
    refused: Family<CallLabels, Counter>,
    called: Family<OutcomeLabels, Counter>,
    called_seconds: Family<CallLabels, Histogram, fn() -> Histogram>,
    called_out: Family<ServiceLabels, Counter>,
    called_in: Family<ServiceLabels, Counter>,
}

static RPC: LazyLock<Rpc> = LazyLock::new(|| Rpc {
    served: Family::default(),
    served_seconds: Family::new_with_constructor(latency),
    served_in: Family::default(),
    served_out: Family::default(),
    refused: Family::default(),
    called: Family::default(),
    called_seconds: Family::new_with_constructor(latency),
    called_out: Family::default(),
    called_in: Family::default(),
});

/// The process's wire metrics.
pub fn rpc() -> &'static Rpc {
    &RPC
}

impl Rpc {
    /// A call `service`/`call` served in `took`, `received` bytes in and
    /// `sent` out.
    pub fn served(
        &self,
        service: &'static str,
        call: &'static str,
        took: Duration,
        received: usize,
        sent: usize,
    ) {
        let labels = [("service", service), ("call", call)];
        self.served.get_or_create(&labels).inc();
        self.served_seconds
            .get_or_create(&labels)
            .observe(took.as_secs_f64());
        let s = [("service", service)];
        self.served_in.get_or_create(&s).inc_by(received as u64);
        self.served_out.get_or_create(&s).inc_by(sent as u64);
    }

    /// A call `service` refused before it reached the handler, for `why`
    /// ("secret", "malformed", "body").
    pub fn refused(&self, service: &'static str, why: &'static str) {
        self.refused
            .get_or_create(&[("service", service), ("reason", why)])
            .inc();
    }

    /// A call made to `service`, with its `outcome` ("ok", or the wire
    /// error's kind).
    pub fn called(
        &self,
        service: &'static str,
        call: &'static str,
        outcome: &'static str,
        took: Duration,
        sent: usize,
        received: usize,
    ) {
        self.called
            .get_or_create(&[("service", service), ("call", call), ("outcome", outcome)])
            .inc();
        self.called_seconds
            .get_or_create(&[("service", service), ("call", call)])
            .observe(took.as_secs_f64());
        let s = [("service", service)];
        self.called_out.get_or_create(&s).inc_by(sent as u64);
        self.called_in.get_or_create(&s).inc_by(received as u64);
    }

    fn register(&self, r: &mut Registry) {
        r.register(
            "tessera_rpc_served_calls",
            "RPC calls served, by service and call",
            self.served.clone(),
        );
        r.register(
            "tessera_rpc_served_seconds",
            "Time to handle an RPC call, by service and call",
            self.served_seconds.clone(),
        );
        r.register(
            "tessera_rpc_served_received_bytes",
            "Bytes of RPC requests served",
            self.served_in.clone(),
        );
        r.register(
            "tessera_rpc_served_sent_bytes",
            "Bytes of RPC replies sent",
            self.served_out.clone(),
        );
        r.register(
            "tessera_rpc_refused_calls",
            "RPC calls refused before their handler (bad secret, malformed request)",
            self.refused.clone(),
        );
        r.register(
            "tessera_rpc_client_calls",
            "RPC calls made, by service, call and outcome",
            self.called.clone(),
        );
        r.register(
            "tessera_rpc_client_seconds",
            "Time an RPC call made took, answer or error, by service and call",
            self.called_seconds.clone(),
        );
        r.register(
            "tessera_rpc_client_sent_bytes",
            "Bytes of RPC requests sent",
            self.called_out.clone(),
        );
        r.register(
            "tessera_rpc_client_received_bytes",
            "Bytes of RPC replies received",
            self.called_in.clone(),
        );
    }
}

/// One label set of a [`Samples`] family.
pub type Labels = Vec<(&'static str, String)>;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Counter,
    Gauge,
}

struct Series {
    help: &'static str,
    kind: Kind,
    values: Vec<(Labels, f64)>,
}

/// What [`Source`]s report at a scrape: named families of values, each
/// with its labels. A name reported by several sources (three datanodes of
/// `tessera up`) becomes one family with their label sets.
#[derive(Default)]
pub struct Samples {
    series: BTreeMap<&'static str, Series>,
}

impl Samples {
    /// A counter (a total since the process started). `name` without
    /// `_total`: the encoder adds it.
    pub fn counter(&mut self, name: &'static str, help: &'static str, labels: &Labels, v: u64) {
        self.push(name, help, Kind::Counter, labels, v as f64);
    }

    /// A gauge (a value now).
    pub fn gauge(&mut self, name: &'static str, help: &'static str, labels: &Labels, v: f64) {
        self.push(name, help, Kind::Gauge, labels, v);
    }

    fn push(&mut self, name: &'static str, help: &'static str, kind: Kind, l: &Labels, v: f64) {
        let s = self.series.entry(name).or_insert_with(|| Series {
            help,
            kind,
            values: Vec::new(),
        });
        // The first report of a name fixes its kind: a clash is a bug in
        // a source, dropped rather than served as a broken family.
        debug_assert_eq!(s.kind, kind, "metric {name} reported as two kinds");
        if s.kind == kind {
            s.values.push((l.clone(), v));
        }
    }

    fn register(self, r: &mut Registry) {
        for (name, s) in self.series {
            match s.kind {
                Kind::Counter => {
                    let f = Family::<Labels, Counter>::default();
                    for (l, v) in s.values {
                        f.get_or_create(&l).inc_by(v as u64);
                    }
                    r.register(name, s.help, f);
                }
                Kind::Gauge => {
                    let f = Family::<Labels, Gauge<f64, AtomicU64>>::default();
                    for (l, v) in s.values {
                        f.get_or_create(&l).set(v);
                    }
                    r.register(name, s.help, f);
                }
            }
        }
    }
}

/// What [`Source::collect`] returns: reading the counters may await (a
/// redb read off the runtime).
pub type Collecting<'a> = Pin<Box<dyn Future<Output = ()> + Send + 'a>>;

/// Something that reports its counters at each scrape.
pub trait Source: Send + Sync + 'static {
    fn collect<'a>(&'a self, out: &'a mut Samples) -> Collecting<'a>;
}

static SOURCES: LazyLock<Mutex<Vec<Weak<dyn Source>>>> = LazyLock::new(Default::default);

/// Reports `source` at every scrape for as long as it lives (a weak
/// reference: registering keeps nothing alive).
pub fn register(source: &Arc<dyn Source>) {
    let mut s = SOURCES.lock().unwrap_or_else(|e| e.into_inner());
    s.retain(|w| w.strong_count() > 0);
    s.push(Arc::downgrade(source));
}

/// The format of a scrape's answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// Prometheus text format 0.0.4.
    Prometheus,
    /// OpenMetrics 1.0 text.
    OpenMetrics,
}

impl Format {
    pub fn content_type(self) -> &'static str {
        match self {
            Format::Prometheus => prometheus_client::encoding::prometheus_text::CONTENT_TYPE,
            Format::OpenMetrics => "application/openmetrics-text; version=1.0.0; charset=utf-8",
        }
    }

    /// OpenMetrics when an `Accept` header names it, else Prometheus text.
    pub fn from_accept(accept: Option<&str>) -> Format {
        match accept {
            Some(a) if a.contains("application/openmetrics-text") => Format::OpenMetrics,
            _ => Format::Prometheus,
        }
    }
}

/// Every metric of the process, as a scrape sees it.
pub async fn gather(format: Format) -> String {
    let sources: Vec<Arc<dyn Source>> = SOURCES
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .iter()
        .filter_map(Weak::upgrade)
        .collect();
    let mut samples = Samples::default();
    for s in &sources {
        s.collect(&mut samples).await;
    }
    let mut r = Registry::default();
    let info = Family::<ServiceLabels, Gauge>::default();
    info.get_or_create(&[("version", env!("CARGO_PKG_VERSION"))])
        .set(1);
    r.register(
        "tessera_build_info",
        "The running Tessera's version (always 1)",
        info,
    );
    rpc().register(&mut r);
    samples.register(&mut r);
    let mut out = String::new();
    let encoded = match format {
        Format::Prometheus => prometheus_client::encoding::prometheus_text::encode(&mut out, &r),
        Format::OpenMetrics => prometheus_client::encoding::text::encode(&mut out, &r),
    };
    encoded.expect("writing to a String does not fail");
    out
}

/// Serves `GET /metrics` on `listener` (HTTP/1) until `shutdown` resolves.
pub async fn serve(listener: TcpListener, shutdown: impl Future<Output = ()>) {
    let mut shutdown = std::pin::pin!(shutdown);
    // A scraper needs few connections; past this the server stops accepting.
    let slots = Arc::new(tokio::sync::Semaphore::new(64));
    loop {
        let permit = tokio::select! {
            p = slots.clone().acquire_owned() => p.expect("never closed"),
            _ = &mut shutdown => return,
        };
        let stream = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((s, _)) => s,
                Err(e) => {
                    tracing::warn!(error = %e, "metrics: accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            _ = &mut shutdown => return,
        };
        tokio::spawn(async move {
            let _permit = permit;
            let conn = hyper::server::conn::http1::Builder::new()
                .timer(hyper_util::rt::TokioTimer::new())
                .header_read_timeout(Duration::from_secs(10))
                .serve_connection(TokioIo::new(stream), service_fn(answer));
            let _ = tokio::time::timeout(Duration::from_secs(60), conn).await;
        });
    }
}

async fn answer<B>(req: Request<B>) -> Result<Response<Full<Bytes>>, Infallible> {
    let reply = |status: StatusCode, text: &'static str| {
        let mut r = Response::new(Full::new(Bytes::from_static(text.as_bytes())));
        *r.status_mut() = status;
        r.headers_mut().insert(
            header::CONTENT_TYPE,
            header::HeaderValue::from_static("text/plain; charset=utf-8"),
        );
        r
    };
    if req.uri().path() != "/metrics" {
        return Ok(reply(
            StatusCode::NOT_FOUND,
            "tessera: metrics are at /metrics\n",
        ));
    }
    if req.method() != Method::GET && req.method() != Method::HEAD {
        let mut r = reply(StatusCode::METHOD_NOT_ALLOWED, "GET /metrics only\n");
        r.headers_mut()
            .insert(header::ALLOW, header::HeaderValue::from_static("GET, HEAD"));
        return Ok(r);
    }
    let accept = req
        .headers()
        .get(header::ACCEPT)
        .and_then(|v| v.to_str().ok());
    let format = Format::from_accept(accept);
    let body = if req.method() == Method::HEAD {
        String::new()
    } else {
        gather(format).await
    };
    let mut r = Response::new(Full::new(Bytes::from(body)));
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        header::HeaderValue::from_static(format.content_type()),
    );
    Ok(r)
}

#[cfg(test)]
mod tests {
    use super::*;

    struct Fixed(u64);

    impl Source for Fixed {
        fn collect<'a>(&'a self, out: &'a mut Samples) -> Collecting<'a> {
            Box::pin(async move {
                let l = vec![("node", self.0.to_string())];
                out.counter("tessera_test_things", "Things seen", &l, self.0 * 10);
                out.gauge("tessera_test_level", "A level", &l, self.0 as f64 / 2.0);
            })
        }
    }

    #[tokio::test]
    async fn sources_merge_into_one_family_and_leave_when_dropped() {
        let a: Arc<dyn Source> = Arc::new(Fixed(1));
        let b: Arc<dyn Source> = Arc::new(Fixed(2));
        register(&a);
        register(&b);
        rpc().served("test", "ping", Duration::from_millis(3), 10, 20);
        let text = gather(Format::Prometheus).await;
        assert_eq!(
            text.matches("# TYPE tessera_test_things_total counter")
                .count(),
            1
        );
        assert!(
            text.contains("tessera_test_things_total{node=\"1\"} 10\n"),
            "{text}"
        );
        assert!(
            text.contains("tessera_test_things_total{node=\"2\"} 20\n"),
            "{text}"
        );
        assert!(
            text.contains("tessera_test_level{node=\"2\"} 1.0\n"),
            "{text}"
        );
        assert!(
            text.contains("tessera_rpc_served_calls_total{service=\"test\",call=\"ping\"} 1\n"),
            "{text}"
        );
        // 3 ms: above the 1.6 ms bucket, inside the 3.2 ms one.
        for (le, n) in [("0.0016", 0), ("0.0032", 1), ("+Inf", 1)] {
            let line = format!(
                "tessera_rpc_served_seconds_bucket{{service=\"test\",call=\"ping\",le=\"{le}\"}} {n}\n"
            );
            assert!(text.contains(&line), "{line} in {text}");
        }
        drop(b);
        let text = gather(Format::OpenMetrics).await;
        assert!(
            text.contains("tessera_test_things_total{node=\"1\"} 10\n"),
            "{text}"
        );
        assert!(!text.contains("node=\"2\""), "{text}");
        assert!(text.ends_with("# EOF\n"), "{text}");
    }

    #[test]
    fn accept_header_picks_the_format() {
        assert_eq!(Format::from_accept(None), Format::Prometheus);
        assert_eq!(
            Format::from_accept(Some(
                "application/openmetrics-text; version=1.0.0,text/plain;q=0.5"
            )),
            Format::OpenMetrics
        );
        assert_eq!(Format::from_accept(Some("text/plain")), Format::Prometheus);
    }
}
