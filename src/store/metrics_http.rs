//! `/metrics`, `/health`, `/livez` and `/readyz` over plain HTTP, as etcd serves them on
//! `--listen-metrics-urls` (kubeadm's etcd probes call `/health`, or `/livez` and `/readyz` in
//! newer releases).

use axum::Router;
use axum::http::{StatusCode, header};
use axum::response::IntoResponse;
use axum::routing::get;
use tokio::net::TcpListener;

use super::backend::Store;

/// Serves the metrics endpoints until the process ends.
pub async fn serve(listener: TcpListener, store: Store) {
    let metrics_store = store.clone();
    let ready_store = store.clone();
    let app = Router::new()
        .route(
            "/metrics",
            get(move || {
                let body = metrics_store.0.metrics.render();
                async move { ([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], body) }
            }),
        )
        .route(
            "/health",
            get(move || {
                let healthy = store.failure().is_none();
                async move { health(healthy) }
            }),
        )
        // The process answers, so it is live; it is ready as long as it accepts writes.
        .route("/livez", get(|| async { "ok" }))
        .route(
            "/readyz",
            get(move || {
                let ready = ready_store.failure().is_none();
                async move {
                    if ready {
                        (StatusCode::OK, "ok")
                    } else {
                        (StatusCode::SERVICE_UNAVAILABLE, "not ok")
                    }
                }
            }),
        );
    if let Err(e) = axum::serve(listener, app).await {
        eprintln!("klab-store: metrics server: {e}");
    }
}

/// etcd's health answer: `{"health":"true"}`, or 503 with `"false"` when writes are refused.
fn health(healthy: bool) -> impl IntoResponse {
    let status = if healthy {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    let body = format!("{{\"health\":\"{healthy}\"}}");
    (status, [(header::CONTENT_TYPE, "application/json")], body)
}
