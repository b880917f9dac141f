//! `klab bench pods`: pod startup latency — from the create call to the moment a watch sees
//! every container running — for batches of pods created at once, p50 and p99 per batch, on
//! containerd and on the simulated runtime, with the kubelet's resident memory afterwards.
//!
//! Mirrors upstream's pod-startup SLI (`e2e/node` density tests and the SIG Scalability SLO:
//! p99 ≤ 5 s excluding image pulls; klab's images are local, so there are no pulls). The
//! cluster comes from `klab up` as a subprocess (store, API server, scheduler,
//! controller-manager and kubelet as processes); everything is observed from the outside
//! through the admin kubeconfig. There is no upstream kubelet on these machines to run beside
//! it, so the table prints the SLO as the target instead of a ratio.

use std::collections::HashMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use futures::StreamExt;
use k8s_openapi::api::core::v1::Pod;
use kube::api::{Api, DeleteParams, ListParams, PostParams};
use kube::runtime::{WatchStreamExt, watcher};
use serde::Serialize;

use super::up::{down, rss_under};
use crate::cli::{BenchPodsArgs, RuntimeKind};
use crate::tools::output::{write_structured, write_table};

#[derive(Debug, thiserror::Error)]
pub enum BenchPodsError {
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
    #[error("creating pod {pod}")]
    Create {
        pod: String,
        #[source]
        source: kube::Error,
    },
    #[error("deleting the batch of {0} pods")]
    Delete(usize, #[source] kube::Error),
    #[error("watching pods")]
    Watch(#[source] watcher::Error),
    #[error("only {running} of {pods} pods were running after 180 s")]
    Timeout { running: usize, pods: usize },
    #[error("starting the async runtime")]
    Runtime(#[source] std::io::Error),
    #[error("writing the report")]
    Write(#[source] std::io::Error),
}

/// One batch's figures.
#[derive(Debug, Clone, Serialize)]
pub struct Row {
    pub runtime: String,
    pub pods: usize,
    pub p50_s: f64,
    pub p99_s: f64,
    pub max_s: f64,
    /// The kubelet's resident memory after the runtime's batches, in MiB.
    pub kubelet_rss_mib: f64,
}

/// The `q` quantile of `v` (nearest rank, as upstream's e2e latency summaries).
pub fn quantile(v: &[f64], q: f64) -> f64 {
    let mut s = v.to_vec();
    s.sort_by(f64::total_cmp);
    if s.is_empty() {
        return 0.0;
    }
    let rank = ((q * s.len() as f64).ceil() as usize).clamp(1, s.len());
    s[rank - 1]
}

fn all_running(p: &Pod) -> bool {
    let Some(st) = p.status.as_ref() else {
        return false;
    };
    let want = p.spec.as_ref().map_or(0, |s| s.containers.len());
    let cs = st.container_statuses.as_deref().unwrap_or_default();
    want > 0
        && cs.len() == want
        && cs
            .iter()
            .all(|c| c.state.as_ref().is_some_and(|s| s.running.is_some()))
}

fn run_err(what: &str) -> impl FnOnce(std::io::Error) -> BenchPodsError + '_ {
    move |source| BenchPodsError::Run {
        what: what.to_owned(),
        source,
    }
}

/// Creates `n` pods at once and returns each one's startup latency in seconds.
async fn batch(pods: &Api<Pod>, tag: &str, n: usize) -> Result<Vec<f64>, BenchPodsError> {
    let label = format!("klab-bench={tag}");
    let stream = watcher(pods.clone(), watcher::Config::default().labels(&label))
        .applied_objects()
        .boxed();
    let mut stream = stream;
    let mut created: HashMap<String, Instant> = HashMap::new();
    let mut done: HashMap<String, f64> = HashMap::new();
    // The watch is established before the first create, so no transition is missed.
    let creates = async {
        for i in 0..n {
            let name = format!("bench-{tag}-{i}");
            let pod: Pod = serde_json::from_value(serde_json::json!({
                "metadata": {"name": name, "labels": {"klab-bench": tag}},
                "spec": {
                    "terminationGracePeriodSeconds": 0,
                    "containers": [{"name": "c", "image": crate::runtime::images::ECHO}],
                },
            }))
            .unwrap_or_default();
            let t = Instant::now();
            pods.create(&PostParams::default(), &pod)
                .await
                .map_err(|source| BenchPodsError::Create {
                    pod: name.clone(),
                    source,
                })?;
            created.insert(name, t);
        }
        Ok::<_, BenchPodsError>(created)
    };
    let watching = async {
        let deadline = Instant::now() + Duration::from_secs(180);
        let mut seen: HashMap<String, Instant> = HashMap::new();
        while seen.len() < n {
            let left = deadline.saturating_duration_since(Instant::now());
            match tokio::time::timeout(left, stream.next()).await {
                Ok(Some(Ok(p))) => {
                    let name = p.metadata.name.clone().unwrap_or_default();
                    if all_running(&p) {
                        seen.entry(name).or_insert_with(Instant::now);
                    }
                }
                Ok(Some(Err(e))) => return Err(BenchPodsError::Watch(e)),
                Ok(None) | Err(_) => {
                    return Err(BenchPodsError::Timeout {
                        running: seen.len(),
                        pods: n,
                    });
                }
            }
        }
        Ok(seen)
    };
    let (created, seen) = tokio::join!(creates, watching);
    let (created, seen) = (created?, seen?);
    for (name, t) in &created {
        if let Some(at) = seen.get(name) {
            done.insert(name.clone(), at.saturating_duration_since(*t).as_secs_f64());
        }
    }
    pods.delete_collection(
        &DeleteParams::default(),
        &ListParams::default().labels(&label),
    )
    .await
    .map_err(|e| BenchPodsError::Delete(n, e))?;
    // Let the batch go before the next one, so batches do not overlap.
    let deadline = Instant::now() + Duration::from_secs(60);
    while Instant::now() < deadline {
        let left = pods
            .list(&ListParams::default().labels(&label))
            .await
            .map(|l| l.items.len())
            .unwrap_or(0);
        if left == 0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    Ok(done.into_values().collect())
}

async fn one_runtime(
    runtime: RuntimeKind,
    dir: &Path,
    sizes: &[usize],
) -> Result<Vec<Row>, BenchPodsError> {
    let exe = std::env::current_exe().map_err(run_err("klab"))?;
    let rt = match runtime {
        RuntimeKind::Containerd => "containerd",
        RuntimeKind::Simulated => "simulated",
    };
    let out = Command::new(&exe)
        .args(["up", "--name", "bench", "--runtime", rt, "--dir"])
        .arg(dir)
        .stdin(Stdio::null())
        .output()
        .map_err(run_err("klab up"))?;
    if !out.status.success() {
        return Err(BenchPodsError::Up(format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        )));
    }
    let client = crate::client::from_kubeconfig(&dir.join("kubernetes/admin.conf")).await?;
    let pods: Api<Pod> = Api::namespaced(client, "default");
    let mut rows = Vec::new();
    for (i, &n) in sizes.iter().enumerate() {
        eprintln!("{rt}: a batch of {n} pods …");
        let lat = batch(&pods, &format!("b{i}"), n).await?;
        rows.push(Row {
            runtime: rt.into(),
            pods: n,
            p50_s: quantile(&lat, 0.5),
            p99_s: quantile(&lat, 0.99),
            max_s: quantile(&lat, 1.0),
            kubelet_rss_mib: 0.0,
        });
    }
    let rss = rss_under(dir).get("kubelet").copied().unwrap_or(0.0);
    for r in &mut rows {
        r.kubelet_rss_mib = rss;
    }
    Ok(rows)
}

async fn measure(args: &BenchPodsArgs) -> Result<Vec<Row>, BenchPodsError> {
    let runtimes: Vec<RuntimeKind> = super::up::runtimes(args.runtime);
    let base: PathBuf =
        std::env::temp_dir().join(format!("klab-bench-pods-{}", std::process::id()));
    let mut rows = Vec::new();
    for rt in runtimes {
        let dir = base.join(format!("{rt:?}").to_lowercase());
        let r = one_runtime(rt, &dir, &args.batches).await;
        down(&dir);
        rows.extend(r?);
    }
    let _ = std::fs::remove_dir_all(&base);
    Ok(rows)
}

pub fn run(args: BenchPodsArgs, out: &mut dyn Write) -> anyhow::Result<()> {
    let rt = tokio::runtime::Runtime::new().map_err(BenchPodsError::Runtime)?;
    let rows = rt.block_on(measure(&args))?;
    if let Some(format) = args.output {
        write_structured(out, format, &rows).map_err(BenchPodsError::Write)?;
        return Ok(());
    }
    let table: Vec<Vec<String>> = rows
        .iter()
        .map(|r| {
            vec![
                r.runtime.clone(),
                r.pods.to_string(),
                format!("{:.2}", r.p50_s),
                format!("{:.2}", r.p99_s),
                format!("{:.2}", r.max_s),
                format!("{:.1}", r.kubelet_rss_mib),
            ]
        })
        .collect();
    write_table(
        out,
        &[
            "RUNTIME",
            "PODS",
            "P50 (S)",
            "P99 (S)",
            "MAX (S)",
            "KUBELET RSS (MIB)",
        ],
        &table,
    )
    .map_err(BenchPodsError::Write)?;
    writeln!(
        out,
        "\ntargets (issue 6): p99 ≤ 2 s for 10 pods; kubelet RSS ≤ 50 MB. Upstream's SLO: p99 ≤ 5 s excluding image pulls."
    )
    .map_err(BenchPodsError::Write)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quantiles_by_nearest_rank() {
        let v: Vec<f64> = (1..=10).map(f64::from).collect();
        assert_eq!(quantile(&v, 0.5), 5.0);
        assert_eq!(quantile(&v, 0.99), 10.0);
        assert_eq!(quantile(&[], 0.5), 0.0);
        assert_eq!(quantile(&[3.0], 0.99), 3.0);
    }
}
