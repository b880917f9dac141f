//! `/metrics` and `/health` over plain HTTP, as etcd serves them on `--listen-metrics-urls`.

use axum::Router;
use axum::http::{StatusCode, header};
use axum::response::IntoResponse;
use axum::routing::get;
use tokio::net::TcpListener;

use super::backend::Store;

/// Serves the metrics endpoints until the process ends.
pub async fn serve(listener: TcpListener, store: Store) {
    let metrics_store = store.clone();
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
