//! kube-proxy: watches Services and EndpointSlices through the API server and programs the
//! node's iptables so that Service IPs and NodePorts load-balance across ready endpoints.
//!
//! Mirrors upstream's `cmd/kube-proxy` in iptables mode: the same flags, reflectors (informers
//! upstream) on Services and EndpointSlices, a sync on every change rate-limited by
//! `--iptables-min-sync-period` and a full one every `--iptables-sync-period`, `/healthz` and
//! `/metrics`, and `--cleanup`. `rules` is the pure translation (snapshot-tested), `apply`
//! the iptables side, `metrics` the HTTP endpoints. Leaves out the ipvs and nftables modes,
//! the config file (`--config`), conntrack cleanup for UDP and the Node-object lookups.

pub mod apply;
pub mod metrics;
pub mod rules;

use std::io::Write;
use std::net::Ipv4Addr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::Notify;

use crate::api::duration;
use crate::cli::{ProxyArgs, ProxyCommand};
use crate::component::services;
use apply::Iptables;
use metrics::Metrics;

/// Why kube-proxy could not start or run.
#[derive(Debug, thiserror::Error)]
pub enum ProxyError {
    #[error(
        "--proxy-mode={mode}: klab's kube-proxy builds only the iptables mode; use --proxy-mode=iptables"
    )]
    ProxyMode { mode: String },
    #[error("{flag}={value}: {hint}")]
    Flag {
        flag: &'static str,
        value: String,
        hint: &'static str,
    },
    #[error("reading this machine's hostname (give --hostname-override)")]
    Hostname(#[source] std::io::Error),
    #[error("connecting to the API server")]
    Client(#[source] crate::client::Error),
    #[error(
        "finding the API server: no --kubeconfig, not in a pod, no $KUBECONFIG or ~/.kube/config"
    )]
    DefaultClient(#[source] kube::Error),
    #[error("listing {what} from the API server")]
    List {
        what: &'static str,
        #[source]
        source: kube::Error,
    },
    #[error("the {what} watch stopped before its first list arrived")]
    Watch { what: &'static str },
    #[error("programming iptables")]
    Apply(#[source] apply::ApplyError),
    #[error("listening on {addr}")]
    Bind {
        addr: String,
        #[source]
        source: std::io::Error,
    },
    #[error("starting the async runtime")]
    Runtime(#[source] std::io::Error),
    #[error("writing the output")]
    Write(#[source] std::io::Error),
}

fn duration_flag(flag: &'static str, value: &str) -> Result<Duration, ProxyError> {
    duration::parse(value).ok_or_else(|| ProxyError::Flag {
        flag,
        value: value.to_owned(),
        hint: "give a duration such as 30s, 1m or 500ms",
    })
}

/// The node's view of itself, from the flags.
pub fn config(args: &ProxyArgs) -> Result<rules::Config, ProxyError> {
    let hostname = match &args.hostname_override {
        Some(h) => h.clone(),
        None => std::fs::read_to_string("/proc/sys/kernel/hostname")
            .map_err(ProxyError::Hostname)?
            .trim()
            .to_owned(),
    }
    .to_lowercase();
    if let Some(cidr) = &args.cluster_cidr {
        let valid = cidr.split_once('/').is_some_and(|(ip, bits)| {
            ip.parse::<Ipv4Addr>().is_ok() && bits.parse::<u8>().is_ok_and(|b| b <= 32)
        });
        if !valid {
            return Err(ProxyError::Flag {
                flag: "--cluster-cidr",
                value: cidr.clone(),
                hint: "give an IPv4 CIDR such as 10.244.0.0/16",
            });
        }
    }
    let mut node_ips = Vec::new();
    for a in &args.nodeport_addresses {
        let ip = a.strip_suffix("/32").unwrap_or(a);
        node_ips.push(ip.parse().map_err(|_| ProxyError::Flag {
            flag: "--nodeport-addresses",
            value: a.clone(),
            hint: "klab takes single IPv4 addresses (or IP/32), comma-separated",
        })?);
    }
    Ok(rules::Config {
        cluster_cidr: args.cluster_cidr.clone(),
        node_ips,
        hostname,
    })
}

async fn client(args: &ProxyArgs) -> Result<kube::Client, ProxyError> {
    match &args.kubeconfig {
        Some(path) => crate::client::from_kubeconfig(path)
            .await
            .map_err(ProxyError::Client),
        None => kube::Client::try_default()
            .await
            .map_err(ProxyError::DefaultClient),
    }
}

/// `klab proxy`, `klab proxy rules` and `kube-proxy --cleanup`.
pub fn run(args: ProxyArgs, out: &mut dyn Write) -> Result<(), ProxyError> {
    if !args.proxy_mode.is_empty() && args.proxy_mode != "iptables" {
        return Err(ProxyError::ProxyMode {
            mode: args.proxy_mode,
        });
    }
    let sync_period = duration_flag("--iptables-sync-period", &args.iptables_sync_period)?;
    let min_sync_period =
        duration_flag("--iptables-min-sync-period", &args.iptables_min_sync_period)?;
    let iptables = Iptables::new(args.netns.clone());
    if args.cleanup {
        let removed = iptables.cleanup().map_err(ProxyError::Apply)?;
        writeln!(out, "kube-proxy --cleanup: removed {removed} KUBE-* chains")
            .map_err(ProxyError::Write)?;
        return Ok(());
    }
    let config = config(&args)?;
    let rt = tokio::runtime::Runtime::new().map_err(ProxyError::Runtime)?;
    match args.command {
        Some(ProxyCommand::Rules) => {
            let text = rt.block_on(rules_text(&args, &config))?;
            out.write_all(text.as_bytes()).map_err(ProxyError::Write)
        }
        None => rt.block_on(serve(&args, config, iptables, sync_period, min_sync_period)),
    }
}

/// What `klab proxy rules` prints: the restore input a first sync on a clean node applies.
async fn rules_text(args: &ProxyArgs, config: &rules::Config) -> Result<String, ProxyError> {
    let client = client(args).await?;
    let (services, slices) = services::list(client)
        .await
        .map_err(|(what, source)| ProxyError::List { what, source })?;
    Ok(rules::generate(&services, &slices, config).restore_text(rules::JUMPS, &[]))
}

async fn serve(
    args: &ProxyArgs,
    config: rules::Config,
    iptables: Iptables,
    sync_period: Duration,
    min_sync_period: Duration,
) -> Result<(), ProxyError> {
    let client = client(args).await?;
    let metrics = Arc::new(Metrics::new(sync_period));
    for (addr, health) in [
        (&args.healthz_bind_address, true),
        (&args.metrics_bind_address, false),
    ] {
        if addr.is_empty() {
            continue;
        }
        let listener = tokio::net::TcpListener::bind(addr.as_str())
            .await
            .map_err(|source| ProxyError::Bind {
                addr: addr.clone(),
                source,
            })?;
        tokio::spawn(metrics::serve(listener, metrics.clone(), health));
    }

    let changed = Arc::new(Notify::new());
    let caches = services::Caches::start(client, changed.clone(), "kube-proxy");
    caches
        .wait_until_ready()
        .await
        .map_err(|what| ProxyError::Watch { what })?;
    eprintln!(
        "kube-proxy: node {}, iptables mode, syncing on change (at most every {:?}) and every {:?}",
        config.hostname, min_sync_period, sync_period
    );

    let mut syncer = apply::Syncer::new(iptables);
    let mut last: Option<Instant> = None;
    // The first sync and every periodic one are full; a sync after a change writes only the
    // chains that changed.
    let mut full = true;
    loop {
        if let Some(l) = last {
            tokio::time::sleep(min_sync_period.saturating_sub(l.elapsed())).await;
        }
        let start = Instant::now();
        last = Some(start);
        let (svcs, eps) = caches.snapshot();
        let generated = rules::generate(&svcs, &eps, &config);
        let (ports, endpoints) = (generated.service_ports, generated.endpoints);
        let kind = if full { "full" } else { "partial" };
        let task = tokio::task::spawn_blocking(move || {
            let r = syncer.sync(&generated, full);
            (syncer, r)
        });
        let result = match task.await {
            Ok((s, r)) => {
                syncer = s;
                r
            }
            Err(e) => {
                // The sync thread panicked and took the syncer with it: stop, visibly.
                eprintln!("kube-proxy: sync task failed: {e}");
                return Ok(());
            }
        };
        match result {
            Ok(_) => {
                metrics.observe_sync(start.elapsed());
                eprintln!(
                    "kube-proxy: {kind} sync: {ports} service ports, {endpoints} endpoints in {:.1} ms",
                    start.elapsed().as_secs_f64() * 1000.0
                );
            }
            Err(e) => {
                metrics.observe_failure();
                let mut msg = e.to_string();
                let mut src = std::error::Error::source(&e);
                while let Some(s) = src {
                    msg.push_str(&format!(": {s}"));
                    src = s.source();
                }
                eprintln!("kube-proxy: sync failed: {msg}");
            }
        }
        full = tokio::select! {
            _ = changed.notified() => false,
            _ = tokio::time::sleep(sync_period) => true,
            _ = tokio::signal::ctrl_c() => return Ok(()),
        };
    }
}
