//! `klab bench up`: how long `klab up` takes to a Ready node, to the end of `up` (add-ons
//! running), and to a first pod Running, and how much memory every component holds once idle.
//! Each runtime is measured `--runs` times from the outside — `klab up` as a subprocess, the
//! API watched through the admin kubeconfig, RSS read from /proc — and medians are reported.
//!
//! kind's figure for the same steps is tens of seconds (it boots a node container and pulls
//! images); kind cannot run on these machines (no Docker daemon), so it is cited, not run.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::{Node, Pod};
use kube::api::{Api, PostParams};
use serde::Serialize;

use crate::cli::{BenchUpArgs, RuntimeKind};
use crate::tools::output::{write_structured, write_table};

#[derive(Debug, thiserror::Error)]
pub enum BenchUpError {
    #[error("running {what}")]
    Run {
        what: String,
        #[source]
        source: std::io::Error,
    },
    #[error("`klab up` failed:\n{0}")]
    Up(String),
    #[error(transparent)]
    Client(#[from] crate::client::Error),
    #[error("the first pod was not Running within 120 s")]
    PodTimeout,
    #[error("creating the first pod")]
    Create(#[source] kube::Error),
    #[error("starting the async runtime")]
    Runtime(#[source] std::io::Error),
    #[error("writing the report")]
    Write(#[source] std::io::Error),
}

/// One run's figures.
#[derive(Debug, Clone, Serialize)]
pub struct Run {
    pub node_ready_s: f64,
    pub up_s: f64,
    pub first_pod_s: f64,
    /// Resident memory of each component once idle, in MiB, by process name.
    pub rss_mib: BTreeMap<String, f64>,
}

/// The medians of one runtime's runs.
#[derive(Debug, Clone, Serialize)]
pub struct Row {
    pub runtime: String,
    pub runs: usize,
    pub node_ready_s: f64,
    pub up_s: f64,
    pub first_pod_s: f64,
    pub control_plane_rss_mib: f64,
    pub rss_mib: BTreeMap<String, f64>,
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v.get(v.len() / 2).copied().unwrap_or(0.0)
}

/// Each process whose command line names `dir`, with its resident set in MiB.
pub(super) fn rss_under(dir: &Path) -> BTreeMap<String, f64> {
    let d = dir.display().to_string();
    let mut all: BTreeMap<String, f64> = BTreeMap::new();
    for e in std::fs::read_dir("/proc").into_iter().flatten().flatten() {
        if e.file_name()
            .to_str()
            .and_then(|s| s.parse::<u32>().ok())
            .is_none()
        {
            continue;
        }
        let Ok(cmd) = std::fs::read(e.path().join("cmdline")) else {
            continue;
        };
        let cmd = String::from_utf8_lossy(&cmd).replace('\0', " ");
        if !cmd.contains(&d) {
            continue;
        }
        let name = cmd
            .split_whitespace()
            .next()
            .map(|a| a.rsplit('/').next().unwrap_or(a).to_string())
            .unwrap_or_default();
        let kib: f64 = std::fs::read_to_string(e.path().join("status"))
            .ok()
            .and_then(|s| {
                s.lines()
                    .find(|l| l.starts_with("VmRSS:"))
                    .and_then(|l| l.split_whitespace().nth(1)?.parse().ok())
            })
            .unwrap_or(0.0);
        *all.entry(name).or_default() += kib / 1024.0;
    }
    all
}

pub(super) fn node_ready(n: &Node) -> bool {
    n.status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .is_some_and(|c| c.iter().any(|c| c.type_ == "Ready" && c.status == "True"))
}

async fn once(runtime: RuntimeKind, dir: &Path) -> Result<Run, BenchUpError> {
    let exe = std::env::current_exe().map_err(|source| BenchUpError::Run {
        what: "klab".into(),
        source,
    })?;
    let rt = match runtime {
        RuntimeKind::Containerd => "containerd",
        RuntimeKind::Simulated => "simulated",
    };
    let start = Instant::now();
    let mut child = Command::new(&exe)
        .args(["up", "--name", "bench", "--runtime", rt, "--dir"])
        .arg(dir)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|source| BenchUpError::Run {
            what: "klab up".into(),
            source,
        })?;
    // Watch for the Ready node from the outside while `up` runs.
    let admin = dir.join("kubernetes/admin.conf");
    let mut node_ready_s = None;
    let up_s = loop {
        if node_ready_s.is_none() && admin.exists() {
            if let Ok(c) = crate::client::from_kubeconfig(&admin).await {
                let nodes: Api<Node> = Api::all(c);
                if let Ok(l) = nodes.list(&Default::default()).await {
                    if l.items.iter().any(node_ready) {
                        node_ready_s = Some(start.elapsed().as_secs_f64());
                    }
                }
            }
        }
        if let Ok(Some(_)) = child.try_wait() {
            break start.elapsed().as_secs_f64();
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    };
    let out = child
        .wait_with_output()
        .map_err(|source| BenchUpError::Run {
            what: "klab up".into(),
            source,
        })?;
    if !out.status.success() {
        return Err(BenchUpError::Up(format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        )));
    }
    let client = crate::client::from_kubeconfig(&admin).await?;
    let pods: Api<Pod> = Api::namespaced(client, "default");
    let pod: Pod = serde_json::from_value(serde_json::json!({
        "metadata": {"name": "first"},
        "spec": {"containers": [{"name": "c", "image": crate::runtime::images::ECHO}]},
    }))
    .unwrap_or_default();
    let t0 = Instant::now();
    pods.create(&PostParams::default(), &pod)
        .await
        .map_err(BenchUpError::Create)?;
    let first_pod_s = loop {
        let phase = pods.get("first").await.ok().and_then(|p| p.status?.phase);
        if phase.as_deref() == Some("Running") {
            break t0.elapsed().as_secs_f64();
        }
        if t0.elapsed() > Duration::from_secs(120) {
            return Err(BenchUpError::PodTimeout);
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    };
    // Idle: let start-up allocations settle before reading memory.
    tokio::time::sleep(Duration::from_secs(5)).await;
    Ok(Run {
        node_ready_s: node_ready_s.unwrap_or(up_s),
        up_s,
        first_pod_s,
        rss_mib: rss_under(dir),
    })
}

/// The runtimes a cluster benchmark measures: the one asked for, else containerd (when root
/// and installed) and the simulated runtime.
pub(super) fn runtimes(asked: Option<RuntimeKind>) -> Vec<RuntimeKind> {
    if let Some(r) = asked {
        return vec![r];
    }
    let root = rustix::process::geteuid().is_root();
    if root && crate::runtime::which("containerd", "containerd").is_ok() {
        vec![RuntimeKind::Containerd, RuntimeKind::Simulated]
    } else {
        vec![RuntimeKind::Simulated]
    }
}

pub(super) fn down(dir: &Path) {
    if let Ok(exe) = std::env::current_exe() {
        let _ = Command::new(exe)
            .args(["down", "--name", "bench", "--dir"])
            .arg(dir)
            .output();
    }
}

/// The components of the control plane (what the ≤ 150 MB target counts).
const CONTROL_PLANE: &[&str] = &[
    "kube-apiserver",
    "kube-controller-manager",
    "kube-scheduler",
    "cloud-controller-manager",
    "klab-store",
    "etcd",
];

async fn measure(args: &BenchUpArgs) -> Result<Vec<Row>, BenchUpError> {
    let mut rows = Vec::new();
    let runtimes: Vec<RuntimeKind> = runtimes(args.runtime);
    let base: PathBuf = std::env::temp_dir().join(format!("klab-bench-up-{}", std::process::id()));
    for rt in runtimes {
        let mut runs = Vec::new();
        for i in 0..args.runs {
            let dir = base.join(format!("{rt:?}-{i}").to_lowercase());
            eprintln!(
                "klab up --runtime {rt:?} (run {} of {}) …",
                i + 1,
                args.runs
            );
            let r = once(rt, &dir).await;
            down(&dir);
            runs.push(r?);
        }
        let mut rss: BTreeMap<String, Vec<f64>> = BTreeMap::new();
        for r in &runs {
            for (k, v) in &r.rss_mib {
                rss.entry(k.clone()).or_default().push(*v);
            }
        }
        let rss: BTreeMap<String, f64> = rss.into_iter().map(|(k, v)| (k, median(v))).collect();
        rows.push(Row {
            runtime: format!("{rt:?}").to_lowercase(),
            runs: runs.len(),
            node_ready_s: median(runs.iter().map(|r| r.node_ready_s).collect()),
            up_s: median(runs.iter().map(|r| r.up_s).collect()),
            first_pod_s: median(runs.iter().map(|r| r.first_pod_s).collect()),
            control_plane_rss_mib: rss
                .iter()
                .filter(|(k, _)| CONTROL_PLANE.contains(&k.as_str()))
                .map(|(_, v)| v)
                .sum(),
            rss_mib: rss,
        });
    }
    let _ = std::fs::remove_dir_all(&base);
    Ok(rows)
}

pub fn run(args: BenchUpArgs, out: &mut dyn Write) -> anyhow::Result<()> {
    let rt = tokio::runtime::Runtime::new().map_err(BenchUpError::Runtime)?;
    let rows = rt.block_on(measure(&args))?;
    if let Some(format) = args.output {
        write_structured(out, format, &rows).map_err(BenchUpError::Write)?;
        return Ok(());
    }
    let table: Vec<Vec<String>> = rows
        .iter()
        .map(|r| {
            vec![
                r.runtime.clone(),
                r.runs.to_string(),
                format!("{:.2}", r.node_ready_s),
                format!("{:.2}", r.up_s),
                format!("{:.2}", r.first_pod_s),
                format!("{:.0}", r.control_plane_rss_mib),
            ]
        })
        .collect();
    write_table(
        out,
        &[
            "RUNTIME",
            "RUNS",
            "NODE READY (S)",
            "UP DONE (S)",
            "FIRST POD (S)",
            "CONTROL PLANE RSS (MIB)",
        ],
        &table,
    )
    .map_err(BenchUpError::Write)?;
    writeln!(out).map_err(BenchUpError::Write)?;
    let mut per: Vec<Vec<String>> = Vec::new();
    for r in &rows {
        for (k, v) in &r.rss_mib {
            per.push(vec![r.runtime.clone(), k.clone(), format!("{v:.1}")]);
        }
    }
    write_table(out, &["RUNTIME", "PROCESS", "RSS (MIB, MEDIAN)"], &per)
        .map_err(BenchUpError::Write)?;
    writeln!(
        out,
        "\ntargets (issue 8): a Ready node in ≤ 5 s on containerd; control plane ≤ 150 MB idle. kind: tens of seconds (not runnable here)."
    )
    .map_err(BenchUpError::Write)?;
    Ok(())
}
