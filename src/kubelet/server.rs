//! The kubelet's HTTPS server on :10250: `/healthz`, `/pods` (the pods this kubelet runs, as a
//! PodList) and `/containerLogs/<ns>/<pod>/<container>` (`tailLines`, `timestamps`,
//! `previous`), read from the CRI log files. Clients authenticate with a certificate signed by
//! `--client-ca-file` when it is given. Mirrors upstream's `pkg/kubelet/server`; leaves out
//! authorization (SubjectAccessReview), `follow`, `/exec`, `/attach`, `/stats/summary`.

use std::collections::BTreeMap;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};

use bytes::Bytes;
use http::{Request, Response, StatusCode};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use k8s_openapi::api::core::v1::Pod;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use tokio_rustls::TlsAcceptor;

use super::Error;
use super::spec::PodRef;

/// The pods the kubelet runs, by `ns/name`, as the server shows them.
pub type Running = Arc<RwLock<BTreeMap<String, Pod>>>;

/// Where the server listens and with which credentials.
#[derive(Debug, Clone)]
pub struct Options {
    pub addr: SocketAddr,
    pub cert: Option<PathBuf>,
    pub key: Option<PathBuf>,
    pub client_ca: Option<PathBuf>,
    pub root: PathBuf,
    pub node: String,
}

type BoxError = Box<dyn std::error::Error + Send + Sync>;

fn tls_err<E: Into<BoxError>>(path: &Path) -> impl FnOnce(E) -> Error + '_ {
    move |e| Error::ServerTls {
        path: path.to_path_buf(),
        source: e.into(),
    }
}

/// Without --tls-cert-file, the kubelet makes a self-signed certificate in
/// `<root-dir>/pki/kubelet.{crt,key}`, as upstream does.
fn self_signed(o: &Options) -> Result<(PathBuf, PathBuf), Error> {
    let dir = o.root.join("pki");
    let (crt, key) = (dir.join("kubelet.crt"), dir.join("kubelet.key"));
    if crt.exists() && key.exists() {
        return Ok((crt, key));
    }
    let names = vec![o.node.clone(), "localhost".into(), "127.0.0.1".into()];
    let made = rcgen::generate_simple_self_signed(names).map_err(tls_err(&crt))?;
    let write = |path: &Path, data: String| {
        std::fs::create_dir_all(&dir)
            .and_then(|()| std::fs::write(path, data))
            .map_err(|source| Error::PodDir {
                path: path.to_path_buf(),
                source,
            })
    };
    write(&crt, made.cert.pem())?;
    write(&key, made.signing_key.serialize_pem())?;
    Ok((crt, key))
}

fn tls(o: &Options) -> Result<TlsAcceptor, Error> {
    let (crt, key) = match (&o.cert, &o.key) {
        (Some(c), Some(k)) => (c.clone(), k.clone()),
        _ => self_signed(o)?,
    };
    let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(&crt)
        .map_err(tls_err(&crt))?
        .collect::<Result<_, _>>()
        .map_err(tls_err(&crt))?;
    let key_der = PrivateKeyDer::from_pem_file(&key).map_err(tls_err(&key))?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = rustls::ServerConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .map_err(tls_err(&crt))?;
    let builder = match &o.client_ca {
        Some(ca) => {
            let mut roots = rustls::RootCertStore::empty();
            for c in CertificateDer::pem_file_iter(ca).map_err(tls_err(ca))? {
                let c = c.map_err(tls_err(ca))?;
                roots.add(c).map_err(tls_err(ca))?;
            }
            let v = rustls::server::WebPkiClientVerifier::builder_with_provider(
                Arc::new(roots),
                provider,
            )
            .build()
            .map_err(tls_err(ca))?;
            builder.with_client_cert_verifier(v)
        }
        None => builder.with_no_client_auth(),
    };
    let config = builder
        .with_single_cert(chain, key_der)
        .map_err(tls_err(&crt))?;
    Ok(TlsAcceptor::from(Arc::new(config)))
}

fn reply(code: StatusCode, ctype: &str, body: impl Into<Bytes>) -> Response<Full<Bytes>> {
    let mut r = Response::new(Full::new(body.into()));
    *r.status_mut() = code;
    if let Ok(v) = http::HeaderValue::from_str(ctype) {
        r.headers_mut().insert(http::header::CONTENT_TYPE, v);
    }
    r
}

/// The text of one CRI log file (`<time> <stream> <P|F> <text>` per line), as kubectl logs
/// shows it: partial lines joined, optionally with their timestamps, the last `tail` lines.
pub fn render_log(raw: &str, timestamps: bool, tail: Option<usize>) -> String {
    let mut lines: Vec<String> = Vec::new();
    let mut partial = String::new();
    for l in raw.lines() {
        let mut parts = l.splitn(4, ' ');
        let (Some(ts), Some(stream), Some(tag)) = (parts.next(), parts.next(), parts.next()) else {
            // Not CRI's format: a host process's own output (see kubelet::process), as is.
            lines.push(l.to_string());
            continue;
        };
        if !matches!(stream, "stdout" | "stderr") || !matches!(tag, "P" | "F") {
            lines.push(l.to_string());
            continue;
        }
        let text = parts.next().unwrap_or_default();
        if partial.is_empty() && timestamps {
            partial.push_str(ts);
            partial.push(' ');
        }
        partial.push_str(text);
        if tag == "F" {
            lines.push(std::mem::take(&mut partial));
        }
    }
    let skip = tail.map_or(0, |t| lines.len().saturating_sub(t));
    lines[skip..].iter().map(|l| format!("{l}\n")).collect()
}

fn container_logs(
    o: &Options,
    running: &Running,
    path: &str,
    query: &str,
) -> Response<Full<Bytes>> {
    let parts: Vec<&str> = path.split('/').collect();
    let [ns, name, container] = parts[..] else {
        return reply(
            StatusCode::BAD_REQUEST,
            "text/plain",
            "want /containerLogs/<namespace>/<pod>/<container>\n",
        );
    };
    let pod = running
        .read()
        .ok()
        .and_then(|m| m.get(&format!("{ns}/{name}")).cloned());
    let Some(pod) = pod else {
        return reply(
            StatusCode::NOT_FOUND,
            "text/plain",
            format!("pod {ns}/{name} is not running on this node\n"),
        );
    };
    let q: BTreeMap<String, String> = form_urlencoded::parse(query.as_bytes())
        .into_owned()
        .collect();
    let dir = PodRef::of(&pod).log_dir(&o.root).join(container);
    let mut attempts: Vec<u32> = std::fs::read_dir(&dir)
        .map(|d| {
            d.flatten()
                .filter_map(|e| {
                    e.file_name()
                        .to_string_lossy()
                        .strip_suffix(".log")?
                        .parse()
                        .ok()
                })
                .collect()
        })
        .unwrap_or_default();
    attempts.sort_unstable();
    let previous = q.get("previous").is_some_and(|v| v == "true");
    let pick = if previous {
        attempts.iter().rev().nth(1)
    } else {
        attempts.last()
    };
    let Some(attempt) = pick else {
        return reply(
            StatusCode::NOT_FOUND,
            "text/plain",
            format!(
                "no logs of container {container} in pod {ns}/{name} (a simulated pod has none)\n"
            ),
        );
    };
    let raw = std::fs::read_to_string(dir.join(format!("{attempt}.log"))).unwrap_or_default();
    let tail = q.get("tailLines").and_then(|t| t.parse().ok());
    let ts = q.get("timestamps").is_some_and(|v| v == "true");
    reply(StatusCode::OK, "text/plain", render_log(&raw, ts, tail))
}

fn handle(o: &Options, running: &Running, req: &Request<Incoming>) -> Response<Full<Bytes>> {
    if req.method() != http::Method::GET {
        return reply(
            StatusCode::METHOD_NOT_ALLOWED,
            "text/plain",
            "only GET is served\n",
        );
    }
    let path = req.uri().path();
    let query = req.uri().query().unwrap_or_default();
    match path {
        "/healthz" => reply(StatusCode::OK, "text/plain", "ok"),
        "/pods" | "/pods/" => {
            let items: Vec<Pod> = running
                .read()
                .map(|m| m.values().cloned().collect())
                .unwrap_or_default();
            let list = serde_json::json!({"kind": "PodList", "apiVersion": "v1", "metadata": {}, "items": items});
            reply(StatusCode::OK, "application/json", list.to_string())
        }
        _ => match path.strip_prefix("/containerLogs/") {
            Some(rest) => container_logs(o, running, rest, query),
            None => reply(StatusCode::NOT_FOUND, "text/plain", "404 page not found\n"),
        },
    }
}

/// Binds and serves until the process ends; errors of one connection end only that one.
pub async fn serve(o: Options, running: Running) -> Result<(), Error> {
    let acceptor = tls(&o)?;
    let listener = tokio::net::TcpListener::bind(o.addr)
        .await
        .map_err(|source| Error::Listen {
            addr: o.addr,
            source,
        })?;
    let o = Arc::new(o);
    loop {
        let Ok((tcp, _)) = listener.accept().await else {
            continue;
        };
        let (acceptor, o, running) = (acceptor.clone(), o.clone(), running.clone());
        tokio::spawn(async move {
            let Ok(tls) = acceptor.accept(tcp).await else {
                return;
            };
            let svc = service_fn(move |req| {
                let r = handle(&o, &running, &req);
                async move { Ok::<_, Infallible>(r) }
            });
            let _ = auto::Builder::new(TokioExecutor::new())
                .serve_connection(TokioIo::new(tls), svc)
                .await;
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cri_log_lines_become_kubectl_logs() {
        let raw = "2026-01-01T00:00:00.1Z stdout F one\n2026-01-01T00:00:01.1Z stdout P tw\n2026-01-01T00:00:01.2Z stdout F o\n2026-01-01T00:00:02Z stderr F three\n";
        assert_eq!(render_log(raw, false, None), "one\ntwo\nthree\n");
        assert_eq!(render_log(raw, false, Some(1)), "three\n");
        assert_eq!(
            render_log(raw, true, Some(1)),
            "2026-01-01T00:00:02Z three\n"
        );
    }
}
