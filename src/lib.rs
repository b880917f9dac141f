//! klab: a small, readable Kubernetes and the tools a workshop needs to look inside one.
//!
//! # Crate map
//!
//! Every boundary speaks the real protocol (Kubernetes REST, etcd v3 gRPC, CRI, iptables), so
//! each part can be swapped for its upstream counterpart and every tool also works on a real
//! cluster. The modules, outside in:
//!
//! - [`cli`]: clap definitions and the multi-call argv mapping; no logic.
//! - [`tools`]: what a learner runs (`certs`, `ps`, …). Tools look from the outside: they read
//!   kubeconfigs, certificates, `/proc` and the API, never a component's internals.
//! - [`lab`]: `klab lab`, the guided labs of `labs/`: setup (real faults), checks through the
//!   API, hints, solutions, progress on disk, the book's lab chapters and Killercoda export.
//! - [`client`]: the kube-rs client every component builds from its `--kubeconfig`.
//! - [`kubeconfig`]: loading, merging and resolving kubeconfigs the way kubectl does.
//! - [`pki`]: reading X.509 certificates and private keys and saying what they mean to the
//!   API server (user, groups, chain, expiry).
//! - [`runtime`]: the node's container runtime as the kubelet sees it: a CRI v1 client, a
//!   containerd started with klab's config, the CNI bridge, local images.
//! - [`kubelet`]: the node agent: registers the Node, keeps its Lease, runs the pods bound
//!   to it (and static pods) through CRI or a simulated runtime, and writes their status.
//! - [`store`]: klab-store, the etcd v3-compatible store (MVCC, watch, leases, WAL, gRPC).
//! - [`apiserver`]: kube-apiserver, the Kubernetes REST API over HTTPS, storing objects in
//!   etcd (or klab-store) through the etcd v3 API; authentication, RBAC, watch, discovery.
//! - [`proxy`]: kube-proxy: Services and EndpointSlices turned into iptables rules (a pure
//!   function, `proxy::rules`) and applied atomically with iptables-restore.
//! - [`dns`]: cluster DNS, a small CoreDNS: the cluster domain's records as a pure function of
//!   Services and EndpointSlices (`dns::records`), answered over UDP and TCP, the rest forwarded.
//! - [`scheduler`]: kube-scheduler: the queue, the filter and score plugins (pure), binding.
//! - [`controllers`]: kube-controller-manager: the watch loop ([`controllers::runner`]) and one
//!   file per controller (deployment, replicaset, garbage collector, node lifecycle, …).
//! - [`cloud`]: cloud-controller-manager with the `local` provider (nodes, load balancers).
//! - [`cluster`]: `klab up`/`down`/`status`: the PKI, kubeconfigs and static pod manifests
//!   kubeadm writes, the node's daemons (containerd, kubelets), the add-ons.
//! - [`component`]: what those three share: leader election, /healthz and /metrics, Events;
//!   the Service and EndpointSlice caches of kube-proxy and the DNS server; a Prometheus histogram.
//! - [`stream`]: the streaming protocols of `kubectl logs -f`, `exec` and `attach`, shared by
//!   the API server and the kubelet: an upgrade-aware proxy hop, RemoteCommand over
//!   WebSocket, and a SPDY/3.1 client for the runtime's streaming server.
//! - [`api`]: small pure helpers shared by everything (durations as Kubernetes prints them).
//!
//! The architecture chapter of the book (`book/src/architecture.md`) is the long form of
//! this map, with the invariants that hold between the modules.

pub mod api;
pub mod apiserver;
pub mod cli;
pub mod client;
pub mod cloud;
pub mod cluster;
pub mod component;
pub mod controllers;
pub mod dns;
pub mod kubeconfig;
pub mod kubelet;
pub mod lab;
pub mod pki;
pub mod proxy;
pub mod runtime;
pub mod scheduler;
pub mod store;
pub mod stream;
pub mod tools;

/// Runs one parsed command line. The only place where library errors become `anyhow` errors.
pub fn run(cli: cli::Cli) -> anyhow::Result<()> {
    // One rustls crypto provider for the whole binary: ring. Installing it twice is harmless.
    let _ = rustls::crypto::ring::default_provider().install_default();
    let mut out = std::io::stdout().lock();
    match cli.command {
        cli::Command::Up(args) => Ok(cluster::up(args, &mut out)?),
        cli::Command::Down(args) => Ok(cluster::down(args, &mut out)?),
        cli::Command::Status(args) => Ok(cluster::status(args, &mut out)?),
        cli::Command::Certs(cmd) => tools::certs::run(cmd, &mut out),
        cli::Command::Ps(args) => tools::ps::run(args, &mut out),
        cli::Command::Probe(args) => tools::probe::run(args, &mut out),
        cli::Command::ClusterInfo(cli::ClusterInfoArgs {
            command: Some(cli::ClusterInfoCommand::Dump(dump)),
            ..
        }) => {
            let rt = tokio::runtime::Runtime::new()?;
            let mut progress = tools::cluster_info::dump::Progress::stderr();
            Ok(rt.block_on(tools::cluster_info::dump::run(
                dump,
                &mut out,
                &mut progress,
            ))?)
        }
        cli::Command::ClusterInfo(args) => {
            let rt = tokio::runtime::Runtime::new()?;
            let kc = args.kubeconfig;
            Ok(rt.block_on(tools::cluster_info::cluster_info(
                kc.kubeconfig.as_deref(),
                kc.context.as_deref(),
                &args.namespace,
                &mut out,
            ))?)
        }
        cli::Command::Store(args) => Ok(store::run(*args)?),
        cli::Command::Apiserver(args) => Ok(apiserver::run(*args)?),
        cli::Command::Kubelet(args) => Ok(kubelet::run(*args)?),
        cli::Command::Scheduler(args) => Ok(scheduler::run(*args)?),
        cli::Command::ControllerManager(args) => Ok(controllers::run(*args)?),
        cli::Command::CloudControllerManager(args) => Ok(cloud::run(*args)?),
        cli::Command::Bench(cli::BenchCommand::Store(args)) => {
            tools::bench::store::run(args, &mut out)
        }
        cli::Command::Bench(cli::BenchCommand::Api(args)) => tools::bench::api::run(args, &mut out),
        cli::Command::Bench(cli::BenchCommand::Proxy(args)) => {
            Ok(tools::bench::proxy::run(args, &mut out)?)
        }
        cli::Command::Lab(args) => lab::run(args, &mut out),
        cli::Command::Proxy(args) => Ok(proxy::run(*args, &mut out)?),
        cli::Command::Dns(args) => Ok(dns::run(*args, &mut out)?),
        cli::Command::Bench(cli::BenchCommand::Up(args)) => tools::bench::up::run(args, &mut out),
        cli::Command::Bench(cli::BenchCommand::Pods(args)) => {
            tools::bench::pods::run(args, &mut out)
        }
        cli::Command::Bench(cli::BenchCommand::Scheduler(args)) => {
            tools::bench::scheduler::run(args, &mut out)
        }
    }
}
