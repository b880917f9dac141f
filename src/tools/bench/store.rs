//! `klab bench store`: put, range and watch latency of klab-store beside real etcd, same run.
//!
//! Mirrors etcd's own `tools/benchmark` (`put`, `range`, `watch-latency`) in a bounded form: a
//! fixed number of operations per row, with 1 and 64 concurrent clients. Both stores run with
//! the same durability (every acknowledged write fsynced; etcd does this by default). Without
//! `--endpoints` it starts both itself on loopback ports with fresh data directories.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use etcd_client::{Client, WatchOptions};
use serde::Serialize;

use crate::cli::BenchStoreArgs;
use crate::tools::output::{write_structured, write_table};

use super::free_port;

/// Concurrent clients in the "many clients" rows, as etcd's benchmark `--clients`.
const MANY: usize = 64;
/// Connections those clients share, as etcd's benchmark `--conns`.
const CONNS: usize = 8;
const VALUE: [u8; 256] = [b'v'; 256];

#[derive(Debug, thiserror::Error)]
pub enum BenchError {
    #[error("starting {what}")]
    Start {
        what: String,
        #[source]
        source: std::io::Error,
    },
    #[error("{what} at {endpoint} did not become ready within 20 s")]
    NotReady { what: String, endpoint: String },
    #[error("request to {endpoint} failed")]
    Request {
        endpoint: String,
        #[source]
        source: etcd_client::Error,
    },
    #[error("the watch stream of {endpoint} ended early")]
    WatchEnded { endpoint: String },
    #[error("starting the async runtime")]
    Runtime(#[source] std::io::Error),
    #[error("writing the report")]
    Write(#[source] std::io::Error),
}

/// One measured store: a name, an endpoint, and the process behind it if the bench started it.
struct Target {
    name: String,
    endpoint: String,
    child: Option<Child>,
    dir: Option<PathBuf>,
}

impl Drop for Target {
    fn drop(&mut self) {
        if let Some(c) = &mut self.child {
            let _ = c.kill();
            let _ = c.wait();
        }
        if let Some(d) = &self.dir {
            let _ = std::fs::remove_dir_all(d);
        }
    }
}

fn temp_dir(name: &str) -> PathBuf {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos());
    std::env::temp_dir().join(format!("klab-bench-{name}-{}-{nanos}", std::process::id()))
}

fn spawn(
    what: &str,
    cmd: &mut Command,
    endpoint: String,
    dir: PathBuf,
) -> Result<Target, BenchError> {
    let child = cmd
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .map_err(|source| BenchError::Start {
            what: what.to_owned(),
            source,
        })?;
    Ok(Target {
        name: what.to_owned(),
        endpoint,
        child: Some(child),
        dir: Some(dir),
    })
}

fn start_klab_store() -> Result<Target, BenchError> {
    let exe = std::env::current_exe().map_err(|source| BenchError::Start {
        what: "klab-store".into(),
        source,
    })?;
    let dir = temp_dir("klab-store");
    let url = format!("http://127.0.0.1:{}", free_port());
    let mut cmd = Command::new(exe);
    cmd.arg("store")
        .arg(format!("--data-dir={}", dir.display()))
        .arg(format!("--listen-client-urls={url}"))
        .arg(format!("--advertise-client-urls={url}"));
    spawn("klab-store", &mut cmd, url, dir)
}

fn start_etcd(bin: &Path) -> Result<Target, BenchError> {
    let dir = temp_dir("etcd");
    let url = format!("http://127.0.0.1:{}", free_port());
    let peer = format!("http://127.0.0.1:{}", free_port());
    let mut cmd = Command::new(bin);
    cmd.arg("--name=bench")
        .arg(format!("--data-dir={}", dir.display()))
        .arg(format!("--listen-client-urls={url}"))
        .arg(format!("--advertise-client-urls={url}"))
        .arg(format!("--listen-peer-urls={peer}"))
        .arg(format!("--initial-advertise-peer-urls={peer}"))
        .arg(format!("--initial-cluster=bench={peer}"));
    spawn("etcd", &mut cmd, url, dir)
}

/// Waits until a put goes through (etcd answers only once it has elected itself).
async fn ready(t: &Target) -> Result<Client, BenchError> {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        if let Ok(mut c) = Client::connect([&t.endpoint], None).await {
            if c.put("bench/ready", "1", None).await.is_ok() {
                return Ok(c);
            }
        }
        if Instant::now() > deadline {
            return Err(BenchError::NotReady {
                what: t.name.clone(),
                endpoint: t.endpoint.clone(),
            });
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// One row's figures.
#[derive(Debug, Clone, Serialize)]
struct Figures {
    ops_per_sec: f64,
    p50_ms: f64,
    p99_ms: f64,
}

fn figures(mut lat: Vec<Duration>, wall: Duration) -> Figures {
    lat.sort();
    let at = |q: f64| lat.get(((lat.len() as f64 * q) as usize).min(lat.len().saturating_sub(1)));
    let ms = |d: Option<&Duration>| d.map_or(0.0, |d| d.as_secs_f64() * 1000.0);
    Figures {
        ops_per_sec: lat.len() as f64 / wall.as_secs_f64().max(1e-9),
        p50_ms: ms(at(0.50)),
        p99_ms: ms(at(0.99)),
    }
}

#[derive(Clone, Copy)]
enum Op {
    Put,
    Range,
}

/// `total` operations spread over `clients` concurrent clients on up to `CONNS` connections.
async fn run_ops(
    endpoint: &str,
    op: Op,
    clients: usize,
    total: usize,
) -> Result<Figures, BenchError> {
    let err = |source| BenchError::Request {
        endpoint: endpoint.to_owned(),
        source,
    };
    let mut conns = Vec::new();
    for _ in 0..clients.min(CONNS) {
        conns.push(Client::connect([endpoint], None).await.map_err(err)?);
    }
    let started = Instant::now();
    let mut tasks = Vec::new();
    for i in 0..clients {
        let mut c = conns[i % conns.len()].clone();
        let n = total / clients + usize::from(i < total % clients);
        tasks.push(tokio::spawn(async move {
            let mut lat = Vec::with_capacity(n);
            for j in 0..n {
                let t = Instant::now();
                let key = format!("bench/k/{:04}", (i * 7919 + j) % 1000);
                match op {
                    Op::Put => c.put(key, VALUE.to_vec(), None).await.map(|_| ())?,
                    Op::Range => c.get("bench/ready", None).await.map(|_| ())?,
                }
                lat.push(t.elapsed());
            }
            Ok::<_, etcd_client::Error>(lat)
        }));
    }
    let mut lat = Vec::with_capacity(total);
    for t in tasks {
        match t.await {
            Ok(Ok(l)) => lat.extend(l),
            Ok(Err(e)) => return Err(err(e)),
            Err(_) => {
                return Err(BenchError::WatchEnded {
                    endpoint: endpoint.to_owned(),
                });
            }
        }
    }
    Ok(figures(lat, started.elapsed()))
}

/// Time from sending a put to receiving its watch event, one write at a time.
async fn watch_latency(endpoint: &str, n: usize) -> Result<Figures, BenchError> {
    let err = |source| BenchError::Request {
        endpoint: endpoint.to_owned(),
        source,
    };
    let ended = || BenchError::WatchEnded {
        endpoint: endpoint.to_owned(),
    };
    let mut c = Client::connect([endpoint], None).await.map_err(err)?;
    let mut w = c
        .watch("bench/watch", Some(WatchOptions::new()))
        .await
        .map_err(err)?;
    w.message().await.map_err(err)?.ok_or_else(ended)?;
    let started = Instant::now();
    let mut lat = Vec::with_capacity(n);
    for i in 0..n {
        let t = Instant::now();
        c.put("bench/watch", i.to_string(), None)
            .await
            .map_err(err)?;
        loop {
            let resp = w.message().await.map_err(err)?.ok_or_else(ended)?;
            if !resp.events().is_empty() {
                break;
            }
        }
        lat.push(t.elapsed());
    }
    Ok(figures(lat, started.elapsed()))
}

/// A column of the human table: its name and how to read it from the figures.
type Metric = (&'static str, fn(&Figures) -> f64);

#[derive(Debug, Serialize)]
struct Row {
    benchmark: String,
    results: Vec<(String, Figures)>,
}

async fn measure(endpoint: &str, puts: usize) -> Result<Vec<(String, Figures)>, BenchError> {
    Ok(vec![
        (
            "put, 1 client".into(),
            run_ops(endpoint, Op::Put, 1, puts).await?,
        ),
        (
            format!("put, {MANY} clients"),
            run_ops(endpoint, Op::Put, MANY, puts * 4).await?,
        ),
        (
            "range, 1 client".into(),
            run_ops(endpoint, Op::Range, 1, puts).await?,
        ),
        (
            format!("range, {MANY} clients"),
            run_ops(endpoint, Op::Range, MANY, puts * 4).await?,
        ),
        (
            "watch, put to event".into(),
            watch_latency(endpoint, puts / 10).await?,
        ),
    ])
}

pub fn run(args: BenchStoreArgs, out: &mut dyn Write) -> anyhow::Result<()> {
    let runtime = tokio::runtime::Runtime::new().map_err(BenchError::Runtime)?;
    let rows = runtime.block_on(bench(&args))?;
    if let Some(format) = args.output {
        write_structured(out, format, &rows).map_err(BenchError::Write)?;
        return Ok(());
    }
    let names: Vec<String> = rows
        .first()
        .map(|r| r.results.iter().map(|(n, _)| n.clone()).collect())
        .unwrap_or_default();
    let mut header = vec!["BENCHMARK".to_owned(), "METRIC".to_owned()];
    header.extend(names.iter().map(|n| n.to_uppercase()));
    if names.len() == 2 {
        header.push(format!(
            "{}/{}",
            names[0].to_uppercase(),
            names[1].to_uppercase()
        ));
    }
    let mut table = Vec::new();
    for row in &rows {
        let metrics: [Metric; 3] = [
            ("ops/s", |f| f.ops_per_sec),
            ("p50 ms", |f| f.p50_ms),
            ("p99 ms", |f| f.p99_ms),
        ];
        for (metric, get) in metrics {
            let mut line = vec![row.benchmark.clone(), metric.to_owned()];
            let values: Vec<f64> = row.results.iter().map(|(_, f)| get(f)).collect();
            line.extend(values.iter().map(|v| format!("{v:.2}")));
            if let [a, b] = values[..] {
                line.push(format!("{:.2}", a / b.max(1e-9)));
            }
            table.push(line);
        }
    }
    let header: Vec<&str> = header.iter().map(String::as_str).collect();
    write_table(out, &header, &table).map_err(BenchError::Write)?;
    Ok(())
}

async fn bench(args: &BenchStoreArgs) -> Result<Vec<Row>, BenchError> {
    let targets: Vec<Target> = if args.endpoints.is_empty() {
        vec![start_klab_store()?, start_etcd(&args.etcd)?]
    } else {
        args.endpoints
            .iter()
            .map(|e| Target {
                name: e.clone(),
                endpoint: e.clone(),
                child: None,
                dir: None,
            })
            .collect()
    };
    let mut per_target = Vec::new();
    for t in &targets {
        ready(t).await?;
        per_target.push((t.name.clone(), measure(&t.endpoint, args.puts).await?));
    }
    let benchmarks: Vec<String> = per_target
        .first()
        .map(|(_, m)| m.iter().map(|(b, _)| b.clone()).collect())
        .unwrap_or_default();
    Ok(benchmarks
        .into_iter()
        .enumerate()
        .map(|(i, benchmark)| Row {
            benchmark,
            results: per_target
                .iter()
                .map(|(n, m)| (n.clone(), m[i].1.clone()))
                .collect(),
        })
        .collect())
}
