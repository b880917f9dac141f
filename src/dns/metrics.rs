//! The DNS server's HTTP side, on CoreDNS's ports and paths: `health` (`:8080/health`, "OK"
//! while the process runs), `ready` (`:8181/ready`, 200 once the Service and EndpointSlice
//! watches have listed, 503 before) and `prometheus` (`:9153/metrics`).
//!
//! Mirrors CoreDNS's `health`, `ready` and `prometheus` plugins and the names of its core
//! metrics (`coredns_dns_requests_total`, `coredns_dns_responses_total`,
//! `coredns_forward_requests_total`, `coredns_forward_responses_total`, `coredns_build_info`).
//! Leaves out the histograms (request duration and size), `lameduck` and the cache's metrics.

use std::collections::BTreeMap;
use std::fmt::Write;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use axum::Router;
use axum::http::{StatusCode, header};
use axum::routing::get;
use hickory_proto::op::ResponseCode;
use hickory_proto::rr::RecordType;
use tokio::net::TcpListener;

use super::server::{Proto, State};

/// Counters by metric name and label set, as Prometheus prints them.
#[derive(Debug, Default)]
pub struct Metrics {
    /// `server` label: the address the DNS server listens on, as CoreDNS's `dns://:53`.
    server: String,
    counters: Mutex<BTreeMap<(&'static str, String), u64>>,
}

/// An rcode as CoreDNS's labels spell it (`dns.RcodeToString`).
fn rcode(code: ResponseCode) -> String {
    match code {
        ResponseCode::NoError => "NOERROR".into(),
        ResponseCode::FormErr => "FORMERR".into(),
        ResponseCode::ServFail => "SERVFAIL".into(),
        ResponseCode::NXDomain => "NXDOMAIN".into(),
        ResponseCode::NotImp => "NOTIMP".into(),
        ResponseCode::Refused => "REFUSED".into(),
        other => u16::from(other).to_string(),
    }
}

fn family(addr: &str) -> &'static str {
    if addr.contains('[') { "2" } else { "1" }
}

impl Metrics {
    pub fn new(listen: &str) -> Metrics {
        Metrics {
            server: format!("dns://{listen}"),
            counters: Mutex::default(),
        }
    }

    fn add(&self, name: &'static str, labels: String) {
        if let Ok(mut c) = self.counters.lock() {
            *c.entry((name, labels)).or_default() += 1;
        }
    }

    pub fn request(&self, proto: Proto, qtype: RecordType) {
        self.add(
            "coredns_dns_requests_total",
            format!(
                "server=\"{}\",zone=\".\",view=\"\",proto=\"{}\",family=\"{}\",type=\"{qtype}\"",
                self.server,
                proto.label(),
                family(&self.server)
            ),
        );
    }

    pub fn response(&self, code: ResponseCode) {
        self.add(
            "coredns_dns_responses_total",
            format!(
                "server=\"{}\",zone=\".\",view=\"\",rcode=\"{}\",plugin=\"\"",
                self.server,
                rcode(code)
            ),
        );
    }

    pub fn forward_request(&self, to: &SocketAddr) {
        self.add("coredns_forward_requests_total", format!("to=\"{to}\""));
    }

    pub fn forward_response(&self, to: &SocketAddr, code: ResponseCode) {
        self.add(
            "coredns_forward_responses_total",
            format!("to=\"{to}\",rcode=\"{}\"", rcode(code)),
        );
    }

    /// Prometheus' text format.
    pub fn render(&self) -> String {
        let mut out = String::new();
        let _ = writeln!(
            out,
            "# HELP coredns_build_info A metric with a constant '1' value labeled by version, revision, and goversion from which CoreDNS was built.\n\
             # TYPE coredns_build_info gauge\n\
             coredns_build_info{{version=\"klab-{}\",revision=\"\",goversion=\"\"}} 1",
            env!("CARGO_PKG_VERSION")
        );
        let counters = self.counters.lock().map(|c| c.clone()).unwrap_or_default();
        let mut last = "";
        for ((name, labels), v) in &counters {
            if *name != last {
                let _ = writeln!(out, "# TYPE {name} counter");
                last = name;
            }
            let _ = writeln!(out, "{name}{{{labels}}} {v}");
        }
        out
    }
}

/// Which endpoint one listener serves.
#[derive(Debug, Clone, Copy)]
pub enum Endpoint {
    Health,
    Ready,
    Metrics,
}

/// Serves one endpoint until the process ends.
pub async fn serve(listener: TcpListener, state: Arc<State>, what: Endpoint) {
    let app = match what {
        Endpoint::Health => Router::new().route("/health", get(|| async { "OK" })),
        Endpoint::Ready => Router::new().route(
            "/ready",
            get(move || {
                let ready = state.is_ready();
                async move {
                    if ready {
                        (StatusCode::OK, "OK")
                    } else {
                        (StatusCode::SERVICE_UNAVAILABLE, "kubernetes")
                    }
                }
            }),
        ),
        Endpoint::Metrics => Router::new().route(
            "/metrics",
            get(move || {
                let body = state.metrics.render();
                async move { ([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], body) }
            }),
        ),
    };
    if let Err(e) = axum::serve(listener, app).await {
        eprintln!("coredns: http server: {e}");
    }
}
