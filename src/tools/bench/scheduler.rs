//! `klab bench scheduler --nodes N --pods M`: how many pods per second kube-scheduler binds on
//! N simulated nodes (Node objects only, no kubelet), through a real API server on klab-store.
//!
//! Mirrors upstream's `scheduler_perf` SchedulingBasic workload in spirit: nodes and pending
//! pods exist first, then the scheduler starts as its own process (`klab scheduler`); the
//! throughput is counted from the first binding to the last, as seen by a watch, so start-up
//! and the first list are not in it. There is no upstream kube-scheduler binary on these
//! machines, so the table prints upstream's published figure as the target instead of a ratio.

use std::collections::HashMap;
use std::io::Write;
use std::path::PathBuf;
use std::process::Command;
use std::time::{Duration, Instant};

use super::{Procs, free_port, spawn, wait_port};

use futures::{StreamExt, TryStreamExt};
use k8s_openapi::api::core::v1::{Namespace, Node, Pod};
use kube::api::{Api, PostParams};
use kube::runtime::watcher;
use serde::Serialize;
use serde_json::json;

use crate::apiserver::devpki::{self, Client};
use crate::cli::BenchSchedulerArgs;
use crate::tools::output::{write_structured, write_table};

#[derive(Debug, thiserror::Error)]
pub enum BenchSchedulerError {
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
    #[error(transparent)]
    Client(#[from] crate::client::Error),
    #[error("creating {what}")]
    Create {
        what: String,
        #[source]
        source: kube::Error,
    },
    #[error("watching pods")]
    Watch(#[source] watcher::Error),
    #[error("only {bound} of {pods} pods were bound after {secs} s without progress")]
    Stalled {
        bound: usize,
        pods: usize,
        secs: u64,
    },
    #[error("starting the async runtime")]
    Runtime(#[source] std::io::Error),
    #[error("writing the report")]
    Write(#[source] std::io::Error),
}

fn start_err(what: &str) -> impl FnOnce(std::io::Error) -> BenchSchedulerError + '_ {
    move |source| BenchSchedulerError::Start {
        what: what.to_owned(),
        source,
    }
}

/// klab-store and kube-apiserver, with a PKI and an admin kubeconfig.
async fn start_control_plane() -> Result<(Procs, PathBuf), BenchSchedulerError> {
    let exe = std::env::current_exe().map_err(start_err("klab"))?;
    let dir = std::env::temp_dir().join(format!("klab-bench-scheduler-{}", std::process::id()));
    std::fs::create_dir_all(&dir).map_err(start_err("a temporary folder"))?;
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
    .map_err(BenchSchedulerError::Pki)?;
    let store_port = free_port();
    let url = format!("http://127.0.0.1:{store_port}");
    procs.children.push(spawn(
        "klab-store",
        Command::new(&exe)
            .arg("store")
            .arg(format!("--data-dir={}", dir.join("store").display()))
            .arg(format!("--listen-client-urls={url}"))
            .arg(format!("--advertise-client-urls={url}")),
    )?);
    wait_port(store_port, "klab-store").await?;
    let port = free_port();
    procs.children.push(spawn(
        "kube-apiserver",
        Command::new(&exe)
            .arg("apiserver")
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
            .arg(format!("--etcd-servers={url}")),
    )?);
    wait_port(port, "kube-apiserver").await?;
    let kubeconfig =
        devpki::write_kubeconfig(&dir, &format!("https://127.0.0.1:{port}"), &["admin"])
            .map_err(BenchSchedulerError::Pki)?;
    Ok((procs, kubeconfig))
}

/// A simulated node: what a kubelet would register, and Ready.
pub fn sim_node(name: &str) -> Node {
    serde_json::from_value(json!({
        "metadata": {"name": name, "labels": {"kubernetes.io/hostname": name, "type": "simulated"}},
        "status": {
            "capacity": {"cpu": "8", "memory": "32Gi", "pods": "110"},
            "allocatable": {"cpu": "8", "memory": "32Gi", "pods": "110"},
            "conditions": [{"type": "Ready", "status": "True", "reason": "KubeletReady", "message": "simulated node"}],
        },
    }))
    .unwrap_or_default()
}

fn bench_pod(i: usize) -> Pod {
    serde_json::from_value(json!({
        "metadata": {"name": format!("pod-{i}")},
        "spec": {"containers": [{"name": "c", "image": "registry.k8s.io/pause:3.10",
            "resources": {"requests": {"cpu": "100m", "memory": "128Mi"}}}]},
    }))
    .unwrap_or_default()
}

async fn create_all<K, F>(
    api: &Api<K>,
    n: usize,
    make: F,
    what: &str,
) -> Result<(), BenchSchedulerError>
where
    K: kube::Resource + Clone + serde::de::DeserializeOwned + Serialize + std::fmt::Debug,
    F: Fn(usize) -> K,
{
    futures::stream::iter((0..n).map(|i| {
        let (api, obj) = (api.clone(), make(i));
        async move { api.create(&PostParams::default(), &obj).await }
    }))
    .buffer_unordered(16)
    .map_err(|source| BenchSchedulerError::Create {
        what: what.to_owned(),
        source,
    })
    .try_collect::<Vec<_>>()
    .await?;
    Ok(())
}

#[derive(Debug, Serialize)]
pub struct Figures {
    pub nodes: usize,
    pub pods: usize,
    pub pods_per_sec: f64,
    pub seconds: f64,
    pub nodes_used: usize,
    pub max_pods_per_node: usize,
    pub target: String,
}

async fn measure(nodes: usize, pods: usize) -> Result<Figures, BenchSchedulerError> {
    let (mut procs, kubeconfig) = start_control_plane().await?;
    let client = crate::client::from_kubeconfig(&kubeconfig).await?;
    eprintln!("creating {nodes} nodes and {pods} pending pods …");
    create_all(
        &Api::<Node>::all(client.clone()),
        nodes,
        |i| sim_node(&format!("node-{i}")),
        "nodes",
    )
    .await?;
    let ns: Namespace =
        serde_json::from_value(json!({"metadata": {"name": "bench"}})).unwrap_or_default();
    Api::<Namespace>::all(client.clone())
        .create(&PostParams::default(), &ns)
        .await
        .map_err(|source| BenchSchedulerError::Create {
            what: "namespace bench".into(),
            source,
        })?;
    let pod_api: Api<Pod> = Api::namespaced(client.clone(), "bench");
    create_all(&pod_api, pods, bench_pod, "pods").await?;
    let exe = std::env::current_exe().map_err(start_err("klab"))?;
    eprintln!("starting kube-scheduler …");
    procs.children.push(spawn(
        "kube-scheduler",
        Command::new(exe)
            .arg("scheduler")
            .arg(format!("--kubeconfig={}", kubeconfig.display()))
            .arg("--leader-elect=false")
            .arg("--secure-port=0"),
    )?);
    let mut placed: HashMap<String, String> = HashMap::new();
    let (mut first, mut last) = (None::<Instant>, Instant::now());
    let stream = watcher::watcher(pod_api, watcher::Config::default());
    tokio::pin!(stream);
    while placed.len() < pods {
        let next = tokio::time::timeout(Duration::from_secs(60), stream.next()).await;
        let ev = match next {
            Ok(Some(ev)) => ev.map_err(BenchSchedulerError::Watch)?,
            _ => {
                return Err(BenchSchedulerError::Stalled {
                    bound: placed.len(),
                    pods,
                    secs: 60,
                });
            }
        };
        if let watcher::Event::Apply(p) | watcher::Event::InitApply(p) = ev {
            if let Some(n) = p.spec.as_ref().and_then(|s| s.node_name.clone()) {
                if placed
                    .insert(p.metadata.name.clone().unwrap_or_default(), n)
                    .is_none()
                {
                    let now = Instant::now();
                    first.get_or_insert(now);
                    last = now;
                }
            }
        }
    }
    let secs = first.map_or(0.0, |f| last.duration_since(f).as_secs_f64());
    let mut per_node: HashMap<&str, usize> = HashMap::new();
    for n in placed.values() {
        *per_node.entry(n).or_default() += 1;
    }
    let target = match nodes {
        n if n >= 5000 => "≥ 100 pods/s (issue); upstream 680 on large hardware",
        n if n >= 1000 => "≥ 300 pods/s (issue)",
        _ => "",
    };
    Ok(Figures {
        nodes,
        pods,
        pods_per_sec: if secs > 0.0 {
            (pods.saturating_sub(1)) as f64 / secs
        } else {
            0.0
        },
        seconds: secs,
        nodes_used: per_node.len(),
        max_pods_per_node: per_node.values().copied().max().unwrap_or(0),
        target: target.to_owned(),
    })
}

pub fn run(args: BenchSchedulerArgs, out: &mut dyn Write) -> anyhow::Result<()> {
    let rt = tokio::runtime::Runtime::new().map_err(BenchSchedulerError::Runtime)?;
    let f = rt.block_on(measure(args.nodes, args.pods))?;
    if let Some(format) = args.output {
        write_structured(out, format, &f).map_err(BenchSchedulerError::Write)?;
        return Ok(());
    }
    let row = vec![
        f.nodes.to_string(),
        f.pods.to_string(),
        format!("{:.1}", f.pods_per_sec),
        format!("{:.2}", f.seconds),
        f.nodes_used.to_string(),
        f.max_pods_per_node.to_string(),
        f.target.clone(),
    ];
    write_table(
        out,
        &[
            "NODES",
            "PODS",
            "PODS/S",
            "SECONDS",
            "NODES USED",
            "MAX PODS/NODE",
            "TARGET",
        ],
        &[row],
    )
    .map_err(BenchSchedulerError::Write)?;
    Ok(())
}
