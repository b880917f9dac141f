//! kube-proxy's `/healthz` and `/metrics`, under upstream's names: the sync latency histogram
//! `kubeproxy_sync_proxy_rules_duration_seconds` and the last sync's timestamp.
//!
//! Mirrors upstream's `pkg/proxy/healthcheck` (healthy while syncs keep happening within
//! twice the sync period) and `pkg/proxy/metrics`. Leaves out the per-service health-check
//! ports of `externalTrafficPolicy: Local` and every other metric.

use std::fmt::Write;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime};

use axum::Router;
use axum::http::{StatusCode, header};
use axum::routing::get;
use std::sync::Arc;
use tokio::net::TcpListener;

use crate::component::metrics::Histogram;

/// The counters one kube-proxy keeps.
#[derive(Debug)]
pub struct Metrics {
    sync_period: Duration,
    /// Upstream's buckets: 1 ms doubling fifteen times.
    sync_latency: Histogram,
    failures: AtomicU64,
    last_sync: Mutex<Option<SystemTime>>,
}

impl Metrics {
    pub fn new(sync_period: Duration) -> Self {
        Self {
            sync_period,
            sync_latency: Histogram::doubling(0.001, 15),
            failures: AtomicU64::new(0),
            last_sync: Mutex::new(None),
        }
    }

    /// Records a successful sync that took `d`.
    pub fn observe_sync(&self, d: Duration) {
        self.sync_latency.observe(d);
        if let Ok(mut last) = self.last_sync.lock() {
            *last = Some(SystemTime::now());
        }
    }

    pub fn observe_failure(&self) {
        self.failures.fetch_add(1, Ordering::Relaxed);
    }

    fn last_sync(&self) -> Option<SystemTime> {
        self.last_sync.lock().ok().and_then(|l| *l)
    }

    /// Prometheus text.
    pub fn render(&self) -> String {
        let mut out = String::new();
        self.sync_latency.render(
            "kubeproxy_sync_proxy_rules_duration_seconds",
            "SyncProxyRules latency in seconds",
            &mut out,
        );
        let last = self
            .last_sync()
            .and_then(|t| t.duration_since(SystemTime::UNIX_EPOCH).ok())
            .map_or(0.0, |d| d.as_secs_f64());
        let _ = writeln!(
            out,
            "# HELP kubeproxy_sync_proxy_rules_last_timestamp_seconds The last time proxy rules were successfully synced\n\
             # TYPE kubeproxy_sync_proxy_rules_last_timestamp_seconds gauge\n\
             kubeproxy_sync_proxy_rules_last_timestamp_seconds {last}"
        );
        let _ = writeln!(
            out,
            "# HELP kubeproxy_sync_proxy_rules_iptables_restore_failures_total Failed iptables-restore runs\n\
             # TYPE kubeproxy_sync_proxy_rules_iptables_restore_failures_total counter\n\
             kubeproxy_sync_proxy_rules_iptables_restore_failures_total {}",
            self.failures.load(Ordering::Relaxed)
        );
        out
    }

    /// Upstream's answer: 200 while the last sync is younger than twice the sync period,
    /// 503 otherwise (and before the first sync), with the times as JSON.
    pub fn healthz(&self) -> (StatusCode, String) {
        let now = SystemTime::now();
        let fmt = |t: SystemTime| {
            time::OffsetDateTime::from(t)
                .format(&time::format_description::well_known::Rfc3339)
                .unwrap_or_default()
        };
        let last = self.last_sync();
        let healthy = last.is_some_and(|l| {
            now.duration_since(l)
                .is_ok_and(|age| age <= self.sync_period * 2)
        });
        let body = format!(
            "{{\"lastUpdated\": \"{}\",\"currentTime\": \"{}\"}}",
            last.map(fmt).unwrap_or_default(),
            fmt(now)
        );
        let status = if healthy {
            StatusCode::OK
        } else {
            StatusCode::SERVICE_UNAVAILABLE
        };
        (status, body)
    }
}

/// Serves `/healthz` (when `health`) or `/metrics` until the process ends.
pub async fn serve(listener: TcpListener, metrics: Arc<Metrics>, health: bool) {
    let app = if health {
        Router::new().route(
            "/healthz",
            get(move || {
                let (status, body) = metrics.healthz();
                async move { (status, [(header::CONTENT_TYPE, "application/json")], body) }
            }),
        )
    } else {
        Router::new().route(
            "/metrics",
            get(move || {
                let body = metrics.render();
                async move { ([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], body) }
            }),
        )
    };
    if let Err(e) = axum::serve(listener, app).await {
        eprintln!("kube-proxy: http server: {e}");
    }
}
