//! The kubelet's HTTPS server on :10250: `/healthz`, `/pods` (the pods this kubelet runs, as a
//! PodList), `/stats/summary` ([`super::stats`]), `/containerLogs/<ns>/<pod>/<container>`
//! (`follow`, `tailLines`, `timestamps`, `sinceSeconds`, `sinceTime`, `limitBytes`,
//! `previous`), read from the CRI log files, and the streaming endpoints `/exec`, `/attach`
//! and `/portForward` ([`super::stream`]). Every request passes [`super::auth`] first
//! (client certificates signed by `--client-ca-file`, bearer tokens, anonymous; then
//! AlwaysAllow or a SubjectAccessReview). Mirrors upstream's `pkg/kubelet/server`.

use std::collections::BTreeMap;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};

use bytes::Bytes;
use http::{Request, Response, StatusCode};
use http_body_util::{BodyExt, Full, StreamBody};
use hyper::body::{Frame, Incoming};
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use k8s_openapi::api::core::v1::Pod;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use tokio::sync::mpsc;
use tokio_rustls::TlsAcceptor;
use tokio_stream::wrappers::ReceiverStream;

use super::auth::Gate;
use super::spec::PodRef;
use super::{Error, stream};
use crate::runtime::cri::Cri;
use crate::stream::Body;

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
    /// The runtime, for exec, attach, port-forward and following logs (`None`: simulated).
    pub cri: Option<Cri>,
    /// Who may call, and what they may do.
    pub gate: Arc<Gate>,
    /// The previous CPU readings behind `/stats/summary`'s rates.
    pub rates: Arc<super::stats::Rates>,
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
            // A certificate is asked for, not required: callers without one may still be
            // a bearer token or anonymous, which the gate decides (upstream's
            // VerifyClientCertIfGiven).
            let v = rustls::server::WebPkiClientVerifier::builder_with_provider(
                Arc::new(roots),
                provider,
            )
            .allow_unauthenticated()
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

pub(super) fn reply(code: StatusCode, ctype: &str, body: impl Into<Bytes>) -> Response<Body> {
    let mut r = Response::new(Full::new(body.into()).boxed());
    *r.status_mut() = code;
    if let Ok(v) = http::HeaderValue::from_str(ctype) {
        r.headers_mut().insert(http::header::CONTENT_TYPE, v);
    }
    r
}

/// What `kubectl logs` asks of a log besides the container: `timestamps`, `tailLines`,
/// `sinceSeconds`/`sinceTime` and `limitBytes`.
#[derive(Debug, Default, Clone)]
pub struct LogOptions {
    pub timestamps: bool,
    pub tail: Option<usize>,
    /// Lines written before this are left out.
    pub since: Option<time::OffsetDateTime>,
    /// At most this many bytes are sent.
    pub limit: Option<usize>,
}

impl LogOptions {
    fn from_query(q: &BTreeMap<String, String>) -> LogOptions {
        let rfc3339 = &time::format_description::well_known::Rfc3339;
        let since_seconds = q
            .get("sinceSeconds")
            .and_then(|s| s.parse::<i64>().ok())
            .map(|s| time::OffsetDateTime::now_utc() - time::Duration::seconds(s));
        let since_time = q
            .get("sinceTime")
            .and_then(|t| time::OffsetDateTime::parse(t, rfc3339).ok());
        LogOptions {
            timestamps: q.get("timestamps").is_some_and(|v| v == "true" || v == "1"),
            tail: q.get("tailLines").and_then(|t| t.parse().ok()),
            since: since_seconds.or(since_time),
            limit: q.get("limitBytes").and_then(|t| t.parse().ok()),
        }
    }
}

/// At most `limit` bytes of `text`, cut at a character boundary.
fn cut(text: &mut String, limit: usize) {
    if text.len() > limit {
        let mut end = limit;
        while !text.is_char_boundary(end) {
            end -= 1;
        }
        text.truncate(end);
    }
}

/// Turns CRI log lines (`<time> <stream> <P|F> <text>`) into the lines kubectl logs shows:
/// partial lines (`P`) joined to the next full one, optionally with their timestamps, those
/// written before `since` left out.
#[derive(Debug, Default)]
struct LogLines {
    timestamps: bool,
    since: Option<time::OffsetDateTime>,
    partial: String,
    /// Whether the line being joined is one to leave out (decided at its first part).
    skipped: Option<bool>,
}

impl LogLines {
    fn new(o: &LogOptions) -> LogLines {
        LogLines {
            timestamps: o.timestamps,
            since: o.since,
            ..Default::default()
        }
    }

    /// One CRI line; a finished kubectl line when this one ends it.
    fn push(&mut self, l: &str) -> Option<String> {
        let mut parts = l.splitn(4, ' ');
        let (Some(ts), Some(stream), Some(tag)) = (parts.next(), parts.next(), parts.next()) else {
            // Not CRI's format: a host process's own output (see kubelet::process), as is.
            return Some(format!(
                "{l}
"
            ));
        };
        if !matches!(stream, "stdout" | "stderr") || !matches!(tag, "P" | "F") {
            return Some(format!("{l}\n"));
        }
        let text = parts.next().unwrap_or_default();
        let skipped = *self.skipped.get_or_insert_with(|| {
            self.since.is_some_and(|since| {
                time::OffsetDateTime::parse(ts, &time::format_description::well_known::Rfc3339)
                    .is_ok_and(|t| t < since)
            })
        });
        if self.partial.is_empty() && self.timestamps {
            self.partial.push_str(ts);
            self.partial.push(' ');
        }
        self.partial.push_str(text);
        if tag != "F" {
            return None;
        }
        self.skipped = None;
        let line = format!("{}\n", std::mem::take(&mut self.partial));
        (!skipped).then_some(line)
    }
}

/// The text of one CRI log file (`<time> <stream> <P|F> <text>` per line), as kubectl logs
/// shows it: partial lines joined, optionally with their timestamps, from `since`, the last
/// `tail` lines, at most `limit` bytes.
pub fn render_log(raw: &str, o: &LogOptions) -> String {
    let mut r = LogLines::new(o);
    let lines: Vec<String> = raw.lines().filter_map(|l| r.push(l)).collect();
    let skip = o.tail.map_or(0, |t| lines.len().saturating_sub(t));
    let mut text = lines[skip..].concat();
    if let Some(limit) = o.limit {
        cut(&mut text, limit);
    }
    text
}

/// The bytes of `path` from `offset` up to the last newline, and the offset after it.
fn complete_lines(path: &Path, offset: u64) -> (String, u64) {
    use std::io::{Read, Seek, SeekFrom};
    let mut buf = Vec::new();
    let read = std::fs::File::open(path).and_then(|mut f| {
        f.seek(SeekFrom::Start(offset))?;
        f.read_to_end(&mut buf)
    });
    if read.is_err() {
        return (String::new(), offset);
    }
    let end = buf.iter().rposition(|b| *b == b'\n').map_or(0, |i| i + 1);
    buf.truncate(end);
    (
        String::from_utf8_lossy(&buf).into_owned(),
        offset + end as u64,
    )
}

/// Where a followed log comes from, and how to tell when its container has stopped.
struct Followed {
    path: PathBuf,
    offset: u64,
    lines: LogLines,
    /// Bytes still allowed by `limitBytes`.
    left: Option<usize>,
    cri: Option<Cri>,
    uid: String,
    container: String,
    attempt: u32,
}

/// `follow=true`: sends lines as the container writes them, until the container stops (then
/// the rest of its log, then the end) or the client goes away. Polls the file, as upstream's
/// `ReadLogs` does when it cannot watch it.
async fn follow(mut f: Followed, tx: mpsc::Sender<Result<Frame<Bytes>, Infallible>>) {
    let mut tick = 0u32;
    let mut alive = true;
    loop {
        if tick % 4 == 0 {
            alive = match f.cri.as_mut() {
                Some(cri) => stream::running_container(cri, &f.uid, &f.container)
                    .await
                    .is_some_and(|(_, attempt)| attempt == f.attempt),
                None => false,
            };
        }
        tick = tick.wrapping_add(1);
        let (raw, next) = complete_lines(&f.path, f.offset);
        f.offset = next;
        let mut text: String = raw.lines().filter_map(|l| f.lines.push(l)).collect();
        if let Some(left) = f.left.as_mut() {
            cut(&mut text, *left);
            *left -= text.len();
        }
        if !text.is_empty() && tx.send(Ok(Frame::data(Bytes::from(text)))).await.is_err() {
            return;
        }
        if !alive || f.left == Some(0) {
            return;
        }
        tokio::select! {
            () = tokio::time::sleep(std::time::Duration::from_millis(250)) => {}
            () = tx.closed() => return,
        }
    }
}

fn container_logs(o: &Options, running: &Running, path: &str, query: &str) -> Response<Body> {
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
    let known = pod.spec.as_ref().is_some_and(|s| {
        s.containers
            .iter()
            .chain(s.init_containers.iter().flatten())
            .any(|c| c.name == container)
    });
    if !known {
        return reply(
            StatusCode::NOT_FOUND,
            "text/plain",
            format!("container {container} is not in pod {ns}/{name}\n"),
        );
    }
    let pod_ref = PodRef::of(&pod);
    let dir = pod_ref.log_dir(&o.root).join(container);
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
    let on = |k: &str| q.get(k).is_some_and(|v| v == "true" || v == "1");
    let previous = on("previous");
    let pick = if previous {
        attempts.iter().rev().nth(1)
    } else {
        attempts.last()
    };
    let Some(&attempt) = pick else {
        let why = if previous {
            format!("previous terminated container \"{container}\" in pod \"{name}\" not found")
        } else {
            format!(
                "no logs of container {container} in pod {ns}/{name} (a simulated pod has none)"
            )
        };
        return reply(StatusCode::BAD_REQUEST, "text/plain", format!("{why}\n"));
    };
    let file = dir.join(format!("{attempt}.log"));
    let opts = LogOptions::from_query(&q);
    if !on("follow") || previous {
        let raw = std::fs::read_to_string(&file).unwrap_or_default();
        return reply(StatusCode::OK, "text/plain", render_log(&raw, &opts));
    }
    let (raw, offset) = complete_lines(&file, 0);
    let first = render_log(&raw, &opts);
    let left = opts.limit.map(|l| l.saturating_sub(first.len()));
    if left == Some(0) {
        return reply(StatusCode::OK, "text/plain", first);
    }
    let (tx, rx) = mpsc::channel(16);
    let followed = Followed {
        path: file,
        offset,
        lines: LogLines::new(&opts),
        left,
        cri: o.cri.clone(),
        uid: pod_ref.uid,
        container: container.to_owned(),
        attempt,
    };
    tokio::spawn(async move {
        if !first.is_empty() && tx.send(Ok(Frame::data(Bytes::from(first)))).await.is_err() {
            return;
        }
        follow(followed, tx).await;
    });
    let mut r = Response::new(StreamBody::new(ReceiverStream::new(rx)).boxed());
    r.headers_mut().insert(
        http::header::CONTENT_TYPE,
        http::HeaderValue::from_static("text/plain"),
    );
    r
}

async fn handle(
    o: &Options,
    running: &Running,
    cert: Option<&[u8]>,
    req: Request<Incoming>,
) -> Response<Body> {
    let path = req.uri().path().to_owned();
    let query = req.uri().query().unwrap_or_default().to_owned();
    if let Err(refused) = o.gate.check(cert, req.method(), &path, req.headers()).await {
        return reply(refused.code, "text/plain", refused.body);
    }
    for (prefix, kind) in [
        ("/exec/", stream::Kind::Exec),
        ("/attach/", stream::Kind::Attach),
        ("/portForward/", stream::Kind::PortForward),
    ] {
        if let Some(rest) = path.strip_prefix(prefix) {
            return stream::serve(o, running, kind, rest, &query, req).await;
        }
    }
    if req.method() != http::Method::GET {
        return reply(
            StatusCode::METHOD_NOT_ALLOWED,
            "text/plain",
            "only GET is served\n",
        );
    }
    match path.as_str() {
        "/healthz" => reply(StatusCode::OK, "text/plain", "ok"),
        "/stats/summary" | "/stats/summary/" => {
            let pods: Vec<Pod> = running
                .read()
                .map(|m| m.values().cloned().collect())
                .unwrap_or_default();
            match super::stats::serve(&o.node, &o.root, o.cri.clone(), &o.rates, &pods).await {
                Ok(s) => reply(StatusCode::OK, "application/json", s.to_string()),
                Err(e) => reply(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "text/plain",
                    format!("{}\n", super::chain(&e)),
                ),
            }
        }
        "/pods" | "/pods/" => {
            let items: Vec<Pod> = running
                .read()
                .map(|m| m.values().cloned().collect())
                .unwrap_or_default();
            let list = serde_json::json!({"kind": "PodList", "apiVersion": "v1", "metadata": {}, "items": items});
            reply(StatusCode::OK, "application/json", list.to_string())
        }
        _ => match path.strip_prefix("/containerLogs/") {
            Some(rest) => container_logs(o, running, rest, &query),
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
            // The TLS layer verified the chain against --client-ca-file; the leaf names the
            // caller.
            let cert: Option<Arc<[u8]>> = tls
                .get_ref()
                .1
                .peer_certificates()
                .and_then(|c| c.first())
                .map(|c| Arc::from(c.as_ref()));
            let svc = service_fn(move |req| {
                let (o, running, cert) = (o.clone(), running.clone(), cert.clone());
                async move { Ok::<_, Infallible>(handle(&o, &running, cert.as_deref(), req).await) }
            });
            let _ = auto::Builder::new(TokioExecutor::new())
                .serve_connection_with_upgrades(TokioIo::new(tls), svc)
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
        let o = |timestamps, tail| LogOptions {
            timestamps,
            tail,
            ..Default::default()
        };
        assert_eq!(render_log(raw, &o(false, None)), "one\ntwo\nthree\n");
        assert_eq!(render_log(raw, &o(false, Some(1))), "three\n");
        assert_eq!(
            render_log(raw, &o(true, Some(1))),
            "2026-01-01T00:00:02Z three\n"
        );
        let since = LogOptions {
            since: Some(time::macros::datetime!(2026-01-01 00:00:01 UTC)),
            ..Default::default()
        };
        assert_eq!(
            render_log(raw, &since),
            "two\nthree\n",
            "a joined line counts from its first part"
        );
        let limited = LogOptions {
            limit: Some(6),
            ..Default::default()
        };
        assert_eq!(render_log(raw, &limited), "one\ntw");
    }
}
