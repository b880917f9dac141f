//! The component's own HTTPS endpoint: /healthz, /livez, /readyz and /metrics on
//! `--bind-address`:`--secure-port`, with a self-signed certificate made at start.
//!
//! Mirrors how kube-scheduler (10259) and kube-controller-manager (10257) serve when no
//! `--tls-cert-file` is given: "Generated self-signed cert in-memory". Leaves out delegated
//! authentication and authorization (`--authentication-kubeconfig`,
//! `--authorization-kubeconfig` are accepted, but /metrics answers anyone who can connect).

use std::collections::BTreeMap;
use std::convert::Infallible;
use std::sync::{Arc, Mutex};

use http_body_util::Full;
use hyper::service::service_fn;
use hyper::{Response, body::Bytes};
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use tokio::net::TcpListener;
use tokio_rustls::TlsAcceptor;

#[derive(Debug, thiserror::Error)]
pub enum HealthError {
    #[error("generating the self-signed serving certificate")]
    Certificate(#[source] rcgen::Error),
    #[error("building the TLS configuration")]
    Tls(#[source] rustls::Error),
    #[error("listening on {addr}")]
    Listen {
        addr: String,
        #[source]
        source: std::io::Error,
    },
}

/// Counters shown on /metrics in Prometheus' text format.
#[derive(Debug, Default)]
pub struct Metrics(Mutex<BTreeMap<String, f64>>);

impl Metrics {
    pub fn add(&self, name: &str, v: f64) {
        if let Ok(mut m) = self.0.lock() {
            *m.entry(name.to_owned()).or_default() += v;
        }
    }

    pub fn set(&self, name: &str, v: f64) {
        if let Ok(mut m) = self.0.lock() {
            m.insert(name.to_owned(), v);
        }
    }

    pub fn render(&self) -> String {
        let m = self.0.lock().map(|m| m.clone()).unwrap_or_default();
        m.iter().map(|(k, v)| format!("{k} {v}\n")).collect()
    }
}

/// Binds `addr:port` (port 0 turns serving off, as upstream) and serves in the background.
pub async fn serve(
    bind_address: &str,
    port: u16,
    metrics: Arc<Metrics>,
) -> Result<Option<std::net::SocketAddr>, HealthError> {
    if port == 0 {
        return Ok(None);
    }
    let ck = rcgen::generate_simple_self_signed(vec!["localhost".into(), "127.0.0.1".into()])
        .map_err(HealthError::Certificate)?;
    let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(ck.signing_key.serialize_der()));
    let cert: CertificateDer<'static> = ck.cert.der().clone();
    let tls = rustls::ServerConfig::builder()
        .with_no_client_auth()
        .with_single_cert(vec![cert], key)
        .map_err(HealthError::Tls)?;
    let acceptor = TlsAcceptor::from(Arc::new(tls));
    let addr = if bind_address.contains(':') {
        format!("[{bind_address}]:{port}")
    } else {
        format!("{bind_address}:{port}")
    };
    let listener = TcpListener::bind(&addr)
        .await
        .map_err(|source| HealthError::Listen { addr, source })?;
    let local = listener.local_addr().ok();
    tokio::spawn(async move {
        while let Ok((tcp, _)) = listener.accept().await {
            let (acceptor, metrics) = (acceptor.clone(), metrics.clone());
            tokio::spawn(async move {
                let Ok(tls) = acceptor.accept(tcp).await else {
                    return;
                };
                let svc = service_fn(move |req: hyper::Request<hyper::body::Incoming>| {
                    let metrics = metrics.clone();
                    async move {
                        let (code, body) = match req.uri().path() {
                            "/healthz" | "/livez" | "/readyz" => (200, "ok".to_owned()),
                            "/metrics" => (200, metrics.render()),
                            _ => (404, "404 page not found\n".to_owned()),
                        };
                        let mut resp = Response::new(Full::new(Bytes::from(body)));
                        *resp.status_mut() =
                            hyper::StatusCode::from_u16(code).unwrap_or(hyper::StatusCode::OK);
                        Ok::<_, Infallible>(resp)
                    }
                });
                let _ = auto::Builder::new(TokioExecutor::new())
                    .serve_connection(TokioIo::new(tls), svc)
                    .await;
            });
        }
    });
    Ok(local)
}
