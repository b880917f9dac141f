//! `klab bench proxy`: time from an EndpointSlice change to kube-proxy's rules generated and
//! applied with iptables-restore, at 10, 100 and 1,000 Services.
//!
//! Mirrors what upstream's `kubeproxy_sync_proxy_rules_duration_seconds` measures (a sync:
//! generate, then iptables-restore of the chains that changed; a full sync also reads
//! iptables-save and rewrites every chain), into a network namespace made for the run
//! so the host's rules are never touched. The change is made to the objects in memory: the
//! watch from the API server to the reflector is not in the figure. There is no upstream
//! kube-proxy on these machines, so the target is printed beside the figures.

use std::io::Write;
use std::process::Command;
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::Service;
use k8s_openapi::api::discovery::v1::EndpointSlice;
use serde::Serialize;
use serde_json::json;

use crate::cli::BenchProxyArgs;
use crate::proxy::apply::{ApplyError, Iptables, Syncer};
use crate::proxy::rules::{self, Config};
use crate::tools::output::{write_structured, write_table};

#[derive(Debug, thiserror::Error)]
pub enum BenchProxyError {
    #[error("creating network namespace {name} with `ip netns add` (needs root and iproute2)")]
    Netns {
        name: String,
        #[source]
        source: std::io::Error,
    },
    #[error("`ip netns add {name}` failed: {stderr}")]
    NetnsRefused { name: String, stderr: String },
    #[error("building the benchmark's objects")]
    Objects(#[source] serde_json::Error),
    #[error("applying the rules")]
    Apply(#[source] ApplyError),
    #[error("writing the report")]
    Write(#[source] std::io::Error),
}

/// A network namespace deleted when dropped.
struct Netns(String);

impl Netns {
    fn create(name: String) -> Result<Self, BenchProxyError> {
        let out = Command::new("ip")
            .args(["netns", "add", &name])
            .output()
            .map_err(|source| BenchProxyError::Netns {
                name: name.clone(),
                source,
            })?;
        if !out.status.success() {
            return Err(BenchProxyError::NetnsRefused {
                name,
                stderr: String::from_utf8_lossy(&out.stderr).trim().to_owned(),
            });
        }
        Ok(Self(name))
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        let _ = Command::new("ip")
            .args(["netns", "delete", &self.0])
            .output();
    }
}

#[derive(Debug, Serialize)]
pub struct Row {
    pub services: usize,
    pub rule_lines: usize,
    pub changes: usize,
    pub full_sync_ms: f64,
    pub generate_p50_ms: f64,
    pub sync_p50_ms: f64,
    pub sync_p99_ms: f64,
}

/// The address of pod `n`, counted through 10.244.0.0/16 from .2.
fn pod_ip(n: usize) -> String {
    let n = n + 2;
    format!("10.244.{}.{}", (n / 250) % 256, n % 250 + 1)
}

fn objects(
    services: usize,
    endpoints: usize,
) -> Result<(Vec<Service>, Vec<EndpointSlice>), BenchProxyError> {
    let mut svcs = Vec::new();
    let mut slices = Vec::new();
    for i in 0..services {
        let name = format!("svc-{i}");
        svcs.push(
            serde_json::from_value(json!({
                "metadata": {"name": name, "namespace": "bench"},
                "spec": {"clusterIP": format!("10.96.{}.{}", i / 250, i % 250 + 1),
                         "ports": [{"name": "http", "port": 80, "protocol": "TCP"}]},
            }))
            .map_err(BenchProxyError::Objects)?,
        );
        let eps: Vec<serde_json::Value> = (0..endpoints)
            .map(|e| json!({"addresses": [pod_ip(i * endpoints + e)], "conditions": {"ready": true}}))
            .collect();
        slices.push(
            serde_json::from_value(json!({
                "metadata": {"name": format!("{name}-x"), "namespace": "bench",
                             "labels": {"kubernetes.io/service-name": name}},
                "addressType": "IPv4",
                "endpoints": eps,
                "ports": [{"name": "http", "port": 8080, "protocol": "TCP"}],
            }))
            .map_err(BenchProxyError::Objects)?,
        );
    }
    Ok((svcs, slices))
}

fn percentile(sorted: &[Duration], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i.min(sorted.len() - 1)].as_secs_f64() * 1000.0
}

fn bench_row(
    ipt: &Iptables,
    services: usize,
    args: &BenchProxyArgs,
) -> Result<Row, BenchProxyError> {
    let (svcs, mut slices) = objects(services, args.endpoints.max(1))?;
    let config = Config {
        cluster_cidr: Some("10.244.0.0/16".into()),
        node_ips: vec![],
        hostname: "bench".into(),
    };
    let start = Instant::now();
    let first = rules::generate(&svcs, &slices, &config);
    let rule_lines = first.nat.rules.len() + first.filter.rules.len();
    let mut syncer = Syncer::new(ipt.clone());
    syncer.sync(&first, true).map_err(BenchProxyError::Apply)?;
    let full_sync_ms = start.elapsed().as_secs_f64() * 1000.0;
    let mut generate = Vec::new();
    let mut total = Vec::new();
    let mut next_pod = services * args.endpoints.max(1) + 1000;
    for c in 0..args.changes {
        // One endpoint of one Service moves to a new pod, as a rolling update does.
        let slice = &mut slices[c % services.max(1)];
        if let Some(ep) = slice.endpoints.first_mut() {
            ep.addresses = vec![pod_ip(next_pod)];
            next_pod += 1;
        }
        let start = Instant::now();
        let r = rules::generate(&svcs, &slices, &config);
        generate.push(start.elapsed());
        syncer.sync(&r, false).map_err(BenchProxyError::Apply)?;
        total.push(start.elapsed());
    }
    generate.sort();
    total.sort();
    Ok(Row {
        services,
        rule_lines,
        changes: args.changes,
        full_sync_ms,
        generate_p50_ms: percentile(&generate, 0.5),
        sync_p50_ms: percentile(&total, 0.5),
        sync_p99_ms: percentile(&total, 0.99),
    })
}

pub fn run(args: BenchProxyArgs, out: &mut dyn Write) -> Result<(), BenchProxyError> {
    let mut rows = Vec::new();
    for &n in &args.services {
        // A fresh namespace per row, so each starts from an empty table.
        let ns = Netns::create(format!("klab-bench-proxy-{}-{n}", std::process::id()))?;
        let ipt = Iptables::new(Some(ns.0.clone()));
        rows.push(bench_row(&ipt, n, &args)?);
    }
    if let Some(format) = args.output {
        write_structured(out, format, &rows).map_err(BenchProxyError::Write)?;
        return Ok(());
    }
    let table: Vec<Vec<String>> = rows
        .iter()
        .map(|r| {
            vec![
                r.services.to_string(),
                r.rule_lines.to_string(),
                r.changes.to_string(),
                format!("{:.2}", r.full_sync_ms),
                format!("{:.2}", r.generate_p50_ms),
                format!("{:.2}", r.sync_p50_ms),
                format!("{:.2}", r.sync_p99_ms),
                if r.services >= 1000 {
                    format!(
                        "p99 <= 1000 ms: {}",
                        if r.sync_p99_ms <= 1000.0 {
                            "met"
                        } else {
                            "missed"
                        }
                    )
                } else {
                    String::new()
                },
            ]
        })
        .collect();
    write_table(
        out,
        &[
            "SERVICES",
            "RULES",
            "CHANGES",
            "FULL SYNC MS",
            "GENERATE P50 MS",
            "SYNC P50 MS",
            "SYNC P99 MS",
            "TARGET",
        ],
        &table,
    )
    .map_err(BenchProxyError::Write)?;
    writeln!(
        out,
        "full sync = generate + iptables-save + restore of every chain (the first sync, and every --iptables-sync-period);\n\
         sync = an EndpointSlice change to generate + restore of the changed chains; all in a network namespace of its own"
    )
    .map_err(BenchProxyError::Write)?;
    Ok(())
}
