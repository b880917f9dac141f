//! `klab bench api`: create, get, list and watch fan-out through kube-apiserver, with the API
//! server on klab-store and on real etcd in the same run.
//!
//! Mirrors the spirit of upstream's API-call latency SLOs (mutating and GET calls, LIST of many
//! objects) and of the watch fan-out that a large cluster's kubelets put on the API server.
//! There is no upstream kube-apiserver on these machines, so the side-by-side comparison is of
//! the store underneath; the issue's targets are printed beside the figures. The client is one
//! HTTP/2 connection with a client certificate, as client-go uses.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::{Procs, free_port, spawn, wait_port};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::client::conn::http2::SendRequest;
use hyper_util::rt::{TokioExecutor, TokioIo};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use serde::Serialize;

use crate::apiserver::devpki::{self, Client};
use crate::cli::BenchApiArgs;
use crate::tools::output::{write_structured, write_table};

#[derive(Debug, thiserror::Error)]
pub enum BenchApiError {
    #[error("starting {what}")]
    Start {
        what: String,
        #[source]
        source: std::io::Error,
    },
    #[error(transparent)]
    Process(#[from] super::ProcessError),
    #[error("making the benchmark's PKI")]
    Pki(#[source] devpki::DevPkiError),
    #[error("setting up TLS to the API server")]
    Tls(#[source] rustls::Error),
    #[error("reading {path}")]
    ReadPem {
        path: PathBuf,
        #[source]
        source: rustls::pki_types::pem::Error,
    },
    #[error("connecting to the API server")]
    Connect(#[source] std::io::Error),
    #[error("HTTP/2 to the API server")]
    Http(#[source] hyper::Error),
    #[error("{method} {path} answered {code}: {body}")]
    Status {
        method: String,
        path: String,
        code: u16,
        body: String,
    },
    #[error("a watch stream ended before all events arrived")]
    WatchEnded,
    #[error("starting the async runtime")]
    Runtime(#[source] std::io::Error),
    #[error("writing the report")]
    Write(#[source] std::io::Error),
}

/// Starts a store (klab-store, or etcd from `etcd`) and an API server on it.
async fn start(backend: &str, etcd: &Path) -> Result<(Procs, u16), BenchApiError> {
    let exe = std::env::current_exe().map_err(|source| BenchApiError::Start {
        what: "klab".into(),
        source,
    })?;
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos());
    let dir = std::env::temp_dir().join(format!(
        "klab-bench-api-{backend}-{}-{nanos}",
        std::process::id()
    ));
    std::fs::create_dir_all(&dir).map_err(|source| BenchApiError::Start {
        what: "a temporary folder".into(),
        source,
    })?;
    let mut procs = Procs {
        children: vec![],
        dir: dir.clone(),
    };
    devpki::write_pki(
        &dir,
        &[Client {
            user: "admin",
            groups: &["system:masters"],
        }],
    )
    .map_err(BenchApiError::Pki)?;
    let store_port = free_port();
    let url = format!("http://127.0.0.1:{store_port}");
    let mut cmd = if backend == "etcd" {
        let peer = format!("http://127.0.0.1:{}", free_port());
        let mut c = Command::new(etcd);
        c.arg("--name=bench")
            .arg(format!("--data-dir={}", dir.join("etcd").display()))
            .arg(format!("--listen-peer-urls={peer}"))
            .arg(format!("--initial-advertise-peer-urls={peer}"))
            .arg(format!("--initial-cluster=bench={peer}"));
        c
    } else {
        let mut c = Command::new(&exe);
        c.arg("store")
            .arg(format!("--data-dir={}", dir.join("store").display()));
        c
    };
    cmd.arg(format!("--listen-client-urls={url}"))
        .arg(format!("--advertise-client-urls={url}"));
    procs.children.push(spawn(backend, &mut cmd)?);
    wait_port(store_port, backend).await?;
    let port = free_port();
    let mut api = Command::new(&exe);
    api.arg("apiserver")
        .arg(format!("--secure-port={port}"))
        .arg("--bind-address=127.0.0.1")
        .arg(format!(
            "--tls-cert-file={}",
            dir.join("apiserver.crt").display()
        ))
        .arg(format!(
            "--tls-private-key-file={}",
            dir.join("apiserver.key").display()
        ))
        .arg(format!("--client-ca-file={}", dir.join("ca.crt").display()))
        .arg(format!("--etcd-servers={url}"))
        .arg("--authorization-mode=Node,RBAC");
    procs.children.push(spawn("kube-apiserver", &mut api)?);
    wait_port(port, "kube-apiserver").await?;
    Ok((procs, port))
}

/// One HTTP/2 connection to the API server, shared by all requests.
#[derive(Clone)]
struct Api {
    send: SendRequest<Full<Bytes>>,
    base: String,
}

fn pem_certs(path: &Path) -> Result<Vec<CertificateDer<'static>>, BenchApiError> {
    CertificateDer::pem_file_iter(path)
        .and_then(|it| it.collect::<Result<Vec<_>, _>>())
        .map_err(|source| BenchApiError::ReadPem {
            path: path.to_owned(),
            source,
        })
}

impl Api {
    async fn connect(port: u16, dir: &Path) -> Result<Api, BenchApiError> {
        let mut roots = rustls::RootCertStore::empty();
        for c in pem_certs(&dir.join("ca.crt"))? {
            roots.add(c).map_err(BenchApiError::Tls)?;
        }
        let key = PrivateKeyDer::from_pem_file(dir.join("admin.key")).map_err(|source| {
            BenchApiError::ReadPem {
                path: dir.join("admin.key"),
                source,
            }
        })?;
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let mut cfg = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(BenchApiError::Tls)?
            .with_root_certificates(roots)
            .with_client_auth_cert(pem_certs(&dir.join("admin.crt"))?, key)
            .map_err(BenchApiError::Tls)?;
        cfg.alpn_protocols = vec![b"h2".to_vec()];
        let tcp = tokio::net::TcpStream::connect(("127.0.0.1", port))
            .await
            .map_err(BenchApiError::Connect)?;
        let _ = tcp.set_nodelay(true);
        let name = ServerName::try_from("127.0.0.1")
            .map_err(|e| BenchApiError::Connect(std::io::Error::other(e)))?;
        let tls = tokio_rustls::TlsConnector::from(Arc::new(cfg))
            .connect(name, tcp)
            .await
            .map_err(BenchApiError::Connect)?;
        let (send, conn) =
            hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(tls))
                .await
                .map_err(BenchApiError::Http)?;
        tokio::spawn(conn);
        Ok(Api {
            send,
            base: format!("https://127.0.0.1:{port}"),
        })
    }

    async fn call(
        &self,
        method: &str,
        path: &str,
        body: Option<Vec<u8>>,
    ) -> Result<hyper::Response<hyper::body::Incoming>, BenchApiError> {
        let req = hyper::Request::builder()
            .method(method)
            .uri(format!("{}{path}", self.base))
            .header("content-type", "application/json")
            .body(Full::new(Bytes::from(body.unwrap_or_default())))
            .map_err(|e| BenchApiError::Connect(std::io::Error::other(e)))?;
        let mut send = self.send.clone();
        send.send_request(req).await.map_err(BenchApiError::Http)
    }

    /// A whole request: fails unless the status is 2xx.
    async fn req(
        &self,
        method: &str,
        path: &str,
        body: Option<Vec<u8>>,
    ) -> Result<Bytes, BenchApiError> {
        let resp = self.call(method, path, body).await?;
        let code = resp.status().as_u16();
        let bytes = resp
            .into_body()
            .collect()
            .await
            .map_err(BenchApiError::Http)?
            .to_bytes();
        if !(200..300).contains(&code) {
            return Err(BenchApiError::Status {
                method: method.into(),
                path: path.into(),
                code,
                body: String::from_utf8_lossy(&bytes).into_owned(),
            });
        }
        Ok(bytes)
    }
}

fn pod(name: &str) -> Vec<u8> {
    format!(r#"{{"apiVersion":"v1","kind":"Pod","metadata":{{"name":"{name}","labels":{{"app":"bench"}}}},"spec":{{"containers":[{{"name":"c","image":"busybox:1.36","command":["sleep","3600"]}}]}}}}"#).into_bytes()
}

/// One row's figures.
#[derive(Debug, Clone, Serialize)]
pub struct Figures {
    pub ops_per_sec: f64,
    pub p50_ms: f64,
    pub p99_ms: f64,
}

fn figures(mut lat: Vec<Duration>, wall: Duration, ops: usize) -> Figures {
    lat.sort();
    let at = |q: f64| lat.get(((lat.len() as f64 * q) as usize).min(lat.len().saturating_sub(1)));
    let ms = |d: Option<&Duration>| d.map_or(0.0, |d| d.as_secs_f64() * 1000.0);
    Figures {
        ops_per_sec: ops as f64 / wall.as_secs_f64().max(1e-9),
        p50_ms: ms(at(0.50)),
        p99_ms: ms(at(0.99)),
    }
}

/// Runs `total` calls of `f(i)` over `clients` concurrent tasks; latency per call.
async fn concurrent<F, Fut>(total: usize, clients: usize, f: F) -> Result<Figures, BenchApiError>
where
    F: Fn(usize) -> Fut + Clone + Send + 'static,
    Fut: std::future::Future<Output = Result<(), BenchApiError>> + Send,
{
    let start = Instant::now();
    let mut tasks = Vec::new();
    let clients = clients.max(1);
    for c in 0..clients {
        let f = f.clone();
        tasks.push(tokio::spawn(async move {
            let mut lat = Vec::new();
            for i in (c..total).step_by(clients) {
                let t = Instant::now();
                f(i).await?;
                lat.push(t.elapsed());
            }
            Ok::<_, BenchApiError>(lat)
        }));
    }
    let mut lat = Vec::new();
    for t in tasks {
        lat.extend(
            t.await
                .map_err(|e| BenchApiError::Connect(std::io::Error::other(e)))??,
        );
    }
    Ok(figures(lat, start.elapsed(), total))
}

async fn create_namespace(api: &Api, ns: &str) -> Result<(), BenchApiError> {
    let body = format!(r#"{{"apiVersion":"v1","kind":"Namespace","metadata":{{"name":"{ns}"}}}}"#);
    api.req("POST", "/api/v1/namespaces", Some(body.into_bytes()))
        .await
        .map(|_| ())
}

async fn fill(api: &Api, ns: &str, n: usize, clients: usize) -> Result<Figures, BenchApiError> {
    create_namespace(api, ns).await?;
    let (api, ns) = (api.clone(), ns.to_owned());
    concurrent(n, clients, move |i| {
        let (api, ns) = (api.clone(), ns.clone());
        async move {
            api.req(
                "POST",
                &format!("/api/v1/namespaces/{ns}/pods"),
                Some(pod(&format!("p-{i}"))),
            )
            .await
            .map(|_| ())
        }
    })
    .await
}

/// Watchers on one namespace; `events` pods written; latency from each write's start to its
/// arrival at each watcher; throughput = events delivered to all watchers per second.
async fn fan_out(api: &Api, watchers: usize, events: usize) -> Result<Figures, BenchApiError> {
    create_namespace(api, "fanout").await?;
    let mut streams = Vec::new();
    for _ in 0..watchers {
        let resp = api
            .call(
                "GET",
                "/api/v1/namespaces/fanout/pods?watch=1&resourceVersion=0",
                None,
            )
            .await?;
        streams.push(resp.into_body());
    }
    let starts: Arc<std::sync::Mutex<Vec<Option<Instant>>>> =
        Arc::new(std::sync::Mutex::new(vec![None; events]));
    let mut readers = Vec::new();
    for mut body in streams {
        let starts = starts.clone();
        readers.push(tokio::spawn(async move {
            let (mut buf, mut got, mut lat) = (Vec::<u8>::new(), 0usize, Vec::new());
            while got < events {
                let Some(frame) = body.frame().await else {
                    return Err(BenchApiError::WatchEnded);
                };
                let Ok(data) = frame.map_err(BenchApiError::Http)?.into_data() else {
                    continue;
                };
                buf.extend_from_slice(&data);
                while let Some(pos) = buf.iter().position(|b| *b == b'\n') {
                    let line: Vec<u8> = buf.drain(..=pos).collect();
                    let Ok(ev) = serde_json::from_slice::<serde_json::Value>(&line) else {
                        continue;
                    };
                    let name = ev
                        .pointer("/object/metadata/name")
                        .and_then(|n| n.as_str())
                        .unwrap_or_default();
                    if let Some(i) = name
                        .strip_prefix("e-")
                        .and_then(|i| i.parse::<usize>().ok())
                    {
                        if let Some(Some(t)) = starts.lock().ok().and_then(|s| s.get(i).copied()) {
                            lat.push(t.elapsed());
                        }
                        got += 1;
                    }
                }
            }
            Ok(lat)
        }));
    }
    let start = Instant::now();
    for i in 0..events {
        if let Ok(mut s) = starts.lock() {
            s[i] = Some(Instant::now());
        }
        api.req(
            "POST",
            "/api/v1/namespaces/fanout/pods",
            Some(pod(&format!("e-{i}"))),
        )
        .await?;
    }
    let mut lat = Vec::new();
    for r in readers {
        lat.extend(
            r.await
                .map_err(|e| BenchApiError::Connect(std::io::Error::other(e)))??,
        );
    }
    let delivered = lat.len();
    Ok(figures(lat, start.elapsed(), delivered))
}

#[derive(Debug, Serialize)]
pub struct Row {
    pub benchmark: String,
    pub target: String,
    pub results: Vec<(String, Figures)>,
}

async fn measure(
    backend: &str,
    args: &BenchApiArgs,
) -> Result<Vec<(String, String, Figures)>, BenchApiError> {
    let (procs, port) = start(backend, &args.etcd).await?;
    let api = Api::connect(port, &procs.dir).await?;
    let mut rows = Vec::new();
    let c = args.clients;
    let create = fill(&api, "bench", args.creates, c).await?;
    rows.push((
        format!("create pod ({c} clients)"),
        "mutating p99 <= 50 ms".to_owned(),
        create,
    ));
    let (a, n) = (api.clone(), args.creates.max(1));
    let get = concurrent(args.creates * 2, c, move |i| {
        let a = a.clone();
        async move {
            a.req(
                "GET",
                &format!("/api/v1/namespaces/bench/pods/p-{}", i % n),
                None,
            )
            .await
            .map(|_| ())
        }
    })
    .await?;
    rows.push((
        format!("get pod ({c} clients)"),
        "GET p99 <= 10 ms".to_owned(),
        get,
    ));
    for &size in &args.list_sizes {
        let ns = format!("list-{size}");
        fill(&api, &ns, size, 16).await?;
        let reps = (20_000 / size.max(1)).clamp(3, 20);
        let (a, path) = (api.clone(), format!("/api/v1/namespaces/{ns}/pods"));
        let list = concurrent(reps, 1, move |_| {
            let (a, path) = (a.clone(), path.clone());
            async move { a.req("GET", &path, None).await.map(|_| ()) }
        })
        .await?;
        let target = if size >= 10_000 {
            "LIST 10k pods <= 1 s"
        } else {
            ""
        };
        rows.push((format!("list {size} pods"), target.to_owned(), list));
    }
    let fan = fan_out(&api, args.watchers, args.watch_events).await?;
    rows.push((
        format!(
            "watch fan-out ({} watchers x {} events)",
            args.watchers, args.watch_events
        ),
        String::new(),
        fan,
    ));
    drop(procs);
    Ok(rows)
}

pub fn run(args: BenchApiArgs, out: &mut dyn Write) -> anyhow::Result<()> {
    let runtime = tokio::runtime::Runtime::new().map_err(BenchApiError::Runtime)?;
    let mut per_backend = Vec::new();
    for backend in ["klab-store", "etcd"] {
        if backend == "etcd" && which(&args.etcd).is_none() {
            eprintln!(
                "etcd not found ({}): measuring klab-store only",
                args.etcd.display()
            );
            continue;
        }
        eprintln!("measuring kube-apiserver on {backend} …");
        per_backend.push((backend, runtime.block_on(measure(backend, &args))?));
    }
    let rows: Vec<Row> = per_backend
        .first()
        .map(|(_, m)| {
            m.iter()
                .enumerate()
                .map(|(i, (bench, target, _))| Row {
                    benchmark: bench.clone(),
                    target: target.clone(),
                    results: per_backend
                        .iter()
                        .map(|(b, m)| ((*b).to_owned(), m[i].2.clone()))
                        .collect(),
                })
                .collect()
        })
        .unwrap_or_default();
    if let Some(format) = args.output {
        write_structured(out, format, &rows).map_err(BenchApiError::Write)?;
        return Ok(());
    }
    let mut header = vec!["BENCHMARK".to_owned(), "METRIC".to_owned()];
    header.extend(
        per_backend
            .iter()
            .map(|(b, _)| format!("ON {}", b.to_uppercase())),
    );
    header.push("TARGET".into());
    type Metric = (&'static str, fn(&Figures) -> f64);
    let metrics: [Metric; 3] = [
        ("ops/s", |f| f.ops_per_sec),
        ("p50 ms", |f| f.p50_ms),
        ("p99 ms", |f| f.p99_ms),
    ];
    let mut table = Vec::new();
    for row in &rows {
        for (metric, get) in metrics {
            let mut line = vec![row.benchmark.clone(), metric.to_owned()];
            line.extend(row.results.iter().map(|(_, f)| format!("{:.2}", get(f))));
            line.push(if metric == "p99 ms" {
                row.target.clone()
            } else {
                String::new()
            });
            table.push(line);
        }
    }
    let header: Vec<&str> = header.iter().map(String::as_str).collect();
    write_table(out, &header, &table).map_err(BenchApiError::Write)?;
    Ok(())
}

fn which(bin: &Path) -> Option<PathBuf> {
    if bin.components().count() > 1 {
        return bin.is_file().then(|| bin.to_owned());
    }
    std::env::var_os("PATH")
        .into_iter()
        .flat_map(|p| std::env::split_paths(&p).collect::<Vec<_>>())
        .map(|d| d.join(bin))
        .find(|p| p.is_file())
}
