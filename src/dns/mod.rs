//! Cluster DNS (`klab dns`, or the `coredns` link): a small CoreDNS that watches Services and
//! EndpointSlices through the API server and answers for the cluster domain, forwarding every
//! other name to the upstream servers.
//!
//! Mirrors the CoreDNS deployment kubeadm makes (`kube-system/coredns` behind the `kube-dns`
//! Service) with its default Corefile: `errors`, `health` on :8080, `ready` on :8181,
//! `kubernetes cluster.local in-addr.arpa ip6.arpa { pods insecure; ttl 30 }`,
//! `prometheus :9153`, `forward . /etc/resolv.conf`. The Corefile becomes flags. `records` is the pure translation
//! (unit-tested, and what `klab dns records` prints), `server` the wire side, `metrics` the
//! HTTP endpoints. Leaves out `cache`, `loop`, `reload`, `loadbalance` and reverse (PTR) zones.

pub mod metrics;
pub mod records;
pub mod server;

use std::io::Write;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;

use tokio::sync::Notify;

use crate::cli::{DnsArgs, DnsCommand};
use crate::component::services;
use records::Zone;
use server::State;

/// Why the DNS server could not start or run.
#[derive(Debug, thiserror::Error)]
pub enum DnsError {
    #[error("{flag}={value}: {hint}")]
    Flag {
        flag: &'static str,
        value: String,
        hint: &'static str,
    },
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
    #[error("listening on {addr} ({proto}); a port below 1024 needs root or CAP_NET_BIND_SERVICE")]
    Bind {
        addr: String,
        proto: &'static str,
        #[source]
        source: std::io::Error,
    },
    #[error("the {what} watch stopped before its first list arrived")]
    Watch { what: &'static str },
    #[error("starting the async runtime")]
    Runtime(#[source] std::io::Error),
    #[error("writing the output")]
    Write(#[source] std::io::Error),
}

/// A listen address as CoreDNS writes them (`:8080`) or in full (`127.0.0.1:8080`).
pub fn listen_addr(flag: &'static str, value: &str) -> Result<SocketAddr, DnsError> {
    let full = if value.starts_with(':') {
        format!("0.0.0.0{value}")
    } else {
        value.to_owned()
    };
    full.parse().map_err(|_| DnsError::Flag {
        flag,
        value: value.to_owned(),
        hint: "give IP:PORT or :PORT, such as 0.0.0.0:53 or :8080",
    })
}

/// An upstream server: `IP` (port 53) or `IP:PORT` (`[IPv6]:PORT`).
pub fn upstream_addr(value: &str) -> Option<SocketAddr> {
    value.parse::<SocketAddr>().ok().or_else(|| {
        value
            .parse::<std::net::IpAddr>()
            .ok()
            .map(|ip| (ip, 53).into())
    })
}

/// The `nameserver` lines of a resolv.conf, as `forward . /etc/resolv.conf` reads them.
pub fn resolv_conf_nameservers(text: &str) -> Vec<SocketAddr> {
    text.lines()
        .filter_map(|l| l.trim().strip_prefix("nameserver"))
        .filter_map(|rest| upstream_addr(rest.trim()))
        .collect()
}

fn upstreams(args: &DnsArgs) -> Result<Vec<SocketAddr>, DnsError> {
    if !args.upstream.is_empty() {
        return args
            .upstream
            .iter()
            .map(|u| {
                upstream_addr(u).ok_or_else(|| DnsError::Flag {
                    flag: "--upstream",
                    value: u.clone(),
                    hint: "give IP or IP:PORT, comma-separated",
                })
            })
            .collect();
    }
    let text = std::fs::read_to_string(&args.resolv_conf).unwrap_or_default();
    Ok(resolv_conf_nameservers(&text))
}

/// Whether forwarding to `upstream` would reach this server itself (the shortest loop that
/// CoreDNS's `loop` plugin catches).
pub fn is_self(upstream: &SocketAddr, listen: &SocketAddr) -> bool {
    upstream.port() == listen.port()
        && (upstream.ip() == listen.ip()
            || (listen.ip().is_unspecified() && upstream.ip().is_loopback()))
}

async fn client(kubeconfig: Option<&Path>) -> Result<kube::Client, DnsError> {
    match kubeconfig {
        Some(path) => crate::client::from_kubeconfig(path)
            .await
            .map_err(DnsError::Client),
        None => kube::Client::try_default()
            .await
            .map_err(DnsError::DefaultClient),
    }
}

fn now_serial() -> u32 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| u32::try_from(d.as_secs()).unwrap_or(u32::MAX))
}

/// `klab dns` and `klab dns records`.
pub fn run(args: DnsArgs, out: &mut dyn Write) -> Result<(), DnsError> {
    let rt = tokio::runtime::Runtime::new().map_err(DnsError::Runtime)?;
    match args.command {
        Some(DnsCommand::Records) => {
            let text = rt.block_on(records_text(&args))?;
            out.write_all(text.as_bytes()).map_err(DnsError::Write)
        }
        None => rt.block_on(serve(&args)),
    }
}

/// What `klab dns records` prints: every record the server would answer with, from the
/// API's Services and EndpointSlices as they are now.
async fn records_text(args: &DnsArgs) -> Result<String, DnsError> {
    let client = client(args.kubeconfig.as_deref()).await?;
    let (services, slices) = services::list(client)
        .await
        .map_err(|(what, source)| DnsError::List { what, source })?;
    Ok(Zone::build(
        &services,
        &slices,
        &args.cluster_domain,
        args.ttl,
        now_serial(),
    )
    .listing())
}

async fn bind_http(
    flag: &'static str,
    value: &str,
    state: &Arc<State>,
    what: metrics::Endpoint,
) -> Result<(), DnsError> {
    if value.is_empty() {
        return Ok(());
    }
    let addr = listen_addr(flag, value)?;
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .map_err(|source| DnsError::Bind {
            addr: addr.to_string(),
            proto: "tcp",
            source,
        })?;
    tokio::spawn(metrics::serve(listener, state.clone(), what));
    Ok(())
}

async fn serve(args: &DnsArgs) -> Result<(), DnsError> {
    let listen = listen_addr("--listen", &args.listen)?;
    let mut upstreams = upstreams(args)?;
    upstreams.retain(|u| {
        let me = is_self(u, &listen);
        if me {
            eprintln!("coredns: not forwarding to {u}: that is this server (a loop)");
        }
        !me
    });
    if upstreams.is_empty() {
        eprintln!(
            "coredns: no upstream (no --upstream, no nameserver in {}): names outside {} get SERVFAIL",
            args.resolv_conf.display(),
            args.cluster_domain
        );
    }
    // A kubeconfig that cannot be read fails here, before anything listens.
    let client = client(args.kubeconfig.as_deref()).await?;
    let empty = Zone::build(&[], &[], &args.cluster_domain, args.ttl, now_serial());
    let state = Arc::new(State::new(
        empty,
        upstreams.clone(),
        metrics::Metrics::new(&listen.to_string()),
    ));
    // Listen first, so clients and probes see the process; the cluster domain answers
    // SERVFAIL and /ready says 503 until the watches have listed.
    let udp = tokio::net::UdpSocket::bind(listen)
        .await
        .map_err(|source| DnsError::Bind {
            addr: listen.to_string(),
            proto: "udp",
            source,
        })?;
    let tcp = tokio::net::TcpListener::bind(listen)
        .await
        .map_err(|source| DnsError::Bind {
            addr: listen.to_string(),
            proto: "tcp",
            source,
        })?;
    tokio::spawn(server::serve_udp(udp, state.clone()));
    tokio::spawn(server::serve_tcp(tcp, state.clone()));
    bind_http("--health", &args.health, &state, metrics::Endpoint::Health).await?;
    bind_http("--ready", &args.ready, &state, metrics::Endpoint::Ready).await?;
    bind_http(
        "--prometheus",
        &args.prometheus,
        &state,
        metrics::Endpoint::Metrics,
    )
    .await?;
    eprintln!(
        "coredns: serving {} on {listen} (udp, tcp), forwarding the rest to {}",
        args.cluster_domain,
        upstreams
            .iter()
            .map(ToString::to_string)
            .collect::<Vec<_>>()
            .join(", ")
    );

    let changed = Arc::new(Notify::new());
    let caches = services::Caches::start(client, changed.clone(), "coredns");
    // Until both watches have listed, the server stays unready (and keeps forwarding);
    // the watches retry with back-off, so this waits for the API server as long as it takes.
    caches
        .wait_until_ready()
        .await
        .map_err(|what| DnsError::Watch { what })?;
    loop {
        let (svcs, eps) = caches.snapshot();
        let zone = Zone::build(&svcs, &eps, &args.cluster_domain, args.ttl, now_serial());
        if !state.is_ready() {
            eprintln!(
                "coredns: ready: {} names from {} services and {} endpointslices",
                zone.names.len(),
                svcs.len(),
                eps.len()
            );
        }
        state.set_zone(zone);
        tokio::select! {
            _ = changed.notified() => {}
            _ = tokio::signal::ctrl_c() => return Ok(()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn addresses_as_coredns_writes_them() {
        assert_eq!(
            listen_addr("--health", ":8080").unwrap(),
            "0.0.0.0:8080".parse().unwrap()
        );
        assert!(listen_addr("--listen", "localhost").is_err());
        assert_eq!(
            upstream_addr("10.0.0.2"),
            Some("10.0.0.2:53".parse().unwrap())
        );
        assert_eq!(
            resolv_conf_nameservers("search x\nnameserver 192.168.1.1\nnameserver ::1\n"),
            [
                "192.168.1.1:53".parse().unwrap(),
                "[::1]:53".parse().unwrap()
            ]
        );
        let any: SocketAddr = "0.0.0.0:53".parse().unwrap();
        assert!(is_self(&"127.0.0.1:53".parse().unwrap(), &any));
        assert!(!is_self(&"127.0.0.1:5353".parse().unwrap(), &any));
        assert!(!is_self(
            &"10.0.0.2:53".parse().unwrap(),
            &"10.0.0.1:53".parse().unwrap()
        ));
    }
}
