//! The kubelet, the node agent: registers the Node and keeps its Lease and status fresh,
//! watches the pods bound to it (field selector `spec.nodeName`) and the static pods of
//! --pod-manifest-path, and runs each through CRI (or the simulated runtime) with a worker per
//! pod. Mirrors upstream's `pkg/kubelet` (`kubelet.go` syncLoop, pod workers, node status,
//! node lease, prober, server with its streaming endpoints, volume manager).

pub mod auth;
pub mod config;
pub mod dns;
pub mod env;
pub mod events;
pub mod node;
pub mod pleg;
pub mod pods;
pub mod probe;
pub mod process;
pub mod server;
pub mod simulated;
pub mod spec;
pub mod static_pods;
pub mod stats;
pub mod status;
pub mod stream;
pub mod sync;
pub mod volumes;
pub mod worker;

use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::core::v1::Pod;
use kube::api::Api;
use kube::runtime::watcher;
use tokio_stream::StreamExt;

use crate::cli::{KubeletArgs, RuntimeKind};
use crate::runtime::cri::Cri;
use pods::{Pods, uid};
use worker::Shared;

/// What can fail in the kubelet, by step.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("starting the kubelet's async runtime")]
    StartRuntime(#[source] std::io::Error),
    #[error("connecting to the API server")]
    Client(#[source] crate::client::Error),
    #[error(
        "connecting to the container runtime at {endpoint} (start containerd first, or use --runtime simulated)"
    )]
    Connect {
        endpoint: String,
        #[source]
        source: crate::runtime::Error,
    },
    #[error("reading the kubelet config file {}", path.display())]
    ReadConfig {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("parsing the kubelet config file {} as a KubeletConfiguration", path.display())]
    ParseConfig {
        path: PathBuf,
        #[source]
        source: serde_yaml::Error,
    },
    #[error("the kubelet config file {} has kind {kind:?}, not KubeletConfiguration", path.display())]
    ConfigKind { path: PathBuf, kind: String },
    #[error("--node-labels: {0:?} is not key=value")]
    NodeLabel(String),
    #[error("creating {}", path.display())]
    PodDir {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("registering node {node}")]
    Register {
        node: String,
        #[source]
        source: kube::Error,
    },
    #[error("updating the status of node {node}")]
    NodeStatus {
        node: String,
        #[source]
        source: kube::Error,
    },
    #[error("renewing lease kube-node-lease/{node}")]
    Lease {
        node: String,
        #[source]
        source: kube::Error,
    },
    #[error("pod {pod}")]
    Runtime {
        pod: String,
        #[source]
        source: crate::runtime::Error,
    },
    #[error("writing the status of pod {pod}")]
    PodStatus {
        pod: String,
        #[source]
        source: kube::Error,
    },
    #[error("deleting pod {pod} once its containers stopped")]
    DeletePod {
        pod: String,
        #[source]
        source: kube::Error,
    },
    #[error("reading static pod manifest {}", path.display())]
    ReadManifest {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("parsing static pod manifest {} as a Pod", path.display())]
    ParseManifest {
        path: PathBuf,
        #[source]
        source: serde_yaml::Error,
    },
    #[error("loading the :10250 server's TLS material from {}", path.display())]
    ServerTls {
        path: PathBuf,
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    #[error("listening on {addr} (is another kubelet running? see --port)")]
    Listen {
        addr: std::net::SocketAddr,
        #[source]
        source: std::io::Error,
    },
    #[error("--address {0:?} is not an IP address")]
    Address(String),
    #[error("--authorization-mode {0:?}: the kubelet knows AlwaysAllow and Webhook")]
    AuthorizationMode(String),
    #[error("pod {pod}: reading the source of volume {volume}")]
    Volume {
        pod: String,
        volume: String,
        #[source]
        source: kube::Error,
    },
    #[error("pod {pod}: reading {what} for a container's environment")]
    Env {
        pod: String,
        what: String,
        #[source]
        source: kube::Error,
    },
    #[error("pod {pod}: {what} not found (the pod waits until it exists)")]
    Missing { pod: String, what: String },
    #[error("writing mirror pod {pod}")]
    Mirror {
        pod: String,
        #[source]
        source: kube::Error,
    },
}

/// An error and its causes on one line, as the kubelet logs them.
pub fn chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut cur = e.source();
    while let Some(c) = cur {
        s.push_str(": ");
        s.push_str(&c.to_string());
        cur = c.source();
    }
    s
}

pub fn run(mut args: KubeletArgs) -> Result<(), Error> {
    if let Some(path) = args.config.clone() {
        config::merge(&mut args, config::load(&path)?);
    }
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(Error::StartRuntime)?;
    rt.block_on(serve(args))
}

fn node_name(args: &KubeletArgs) -> String {
    args.hostname_override
        .clone()
        .unwrap_or_else(|| std::fs::read_to_string("/proc/sys/kernel/hostname").unwrap_or_default())
        .trim()
        .to_lowercase()
}

fn labels(args: &KubeletArgs, node: &str) -> Result<BTreeMap<String, String>, Error> {
    let mut l = BTreeMap::from([
        ("kubernetes.io/hostname".to_string(), node.to_string()),
        (
            "kubernetes.io/os".to_string(),
            std::env::consts::OS.to_string(),
        ),
        (
            "kubernetes.io/arch".to_string(),
            std::env::consts::ARCH.replace("x86_64", "amd64"),
        ),
    ]);
    for kv in args.node_labels.iter().filter(|s| !s.is_empty()) {
        let (k, v) = kv
            .split_once('=')
            .ok_or_else(|| Error::NodeLabel(kv.clone()))?;
        l.insert(k.into(), v.into());
    }
    Ok(l)
}

async fn connect(args: &KubeletArgs) -> Result<(Option<Cri>, String), Error> {
    if args.runtime == RuntimeKind::Simulated {
        return Ok((None, "simulated://".into()));
    }
    let endpoint = &args
        .container_runtime_endpoint
        .clone()
        .unwrap_or_else(|| "unix:///run/containerd/containerd.sock".into());
    let err = |source| Error::Connect {
        endpoint: endpoint.clone(),
        source,
    };
    let socket = PathBuf::from(endpoint.strip_prefix("unix://").unwrap_or(endpoint));
    let mut cri = Cri::connect(&socket).await.map_err(err)?;
    let v = cri.version().await.map_err(err)?;
    Ok((
        Some(cri),
        format!("{}://{}", v.runtime_name, v.runtime_version),
    ))
}

/// Renews the Lease and refreshes the node's status every 10 s (upstream's
/// nodeStatusUpdateFrequency and lease renew interval).
async fn heartbeat(client: kube::Client, id: node::Identity, root: PathBuf, cri: Option<Cri>) {
    let mut tick = tokio::time::interval(Duration::from_secs(10));
    let mut conditions = Vec::new();
    loop {
        tick.tick().await;
        if let Err(e) = node::renew_lease(&client, &id.name).await {
            eprintln!("kubelet: {}", chain(&e));
        }
        let problem = match cri.clone() {
            Some(mut c) => c
                .wait_network_ready(Duration::ZERO)
                .await
                .err()
                .map(|e| format!("container runtime network not ready: {}", chain(&e))),
            None => None,
        };
        if let Err(e) =
            node::update_status(&client, &id, &root, problem.as_deref(), &mut conditions).await
        {
            eprintln!("kubelet: {}", chain(&e));
        }
    }
}

/// Registers the node, retrying until the API server answers, then keeps it fresh.
async fn register_then_heartbeat(
    client: kube::Client,
    id: node::Identity,
    root: PathBuf,
    cri: Option<Cri>,
    register: bool,
) {
    let mut delay = Duration::from_millis(200);
    if register {
        loop {
            match node::register(&client, &id, &root).await {
                Ok(()) => {
                    eprintln!(
                        "kubelet: node {} registered ({})",
                        id.name, id.runtime_version
                    );
                    break;
                }
                Err(e) => {
                    eprintln!("kubelet: {} (retrying in {delay:?})", chain(&e));
                    tokio::time::sleep(delay).await;
                    delay = (delay * 2).min(Duration::from_secs(5));
                }
            }
        }
    }
    heartbeat(client, id, root, cri).await;
}

async fn serve(args: KubeletArgs) -> Result<(), Error> {
    let node = node_name(&args);
    let client = crate::client::from_kubeconfig(&args.kubeconfig)
        .await
        .map_err(Error::Client)?;
    let mode = args
        .authorization_mode
        .clone()
        .unwrap_or_else(|| "AlwaysAllow".into());
    let gate = auth::Gate::new(
        auth::Settings {
            anonymous: args.anonymous_auth.unwrap_or(true),
            token_webhook: args.authentication_token_webhook.unwrap_or(false),
            mode: auth::Mode::parse(&mode).ok_or(Error::AuthorizationMode(mode))?,
        },
        node.clone(),
        client.clone(),
    );
    let (cri, runtime_version) = connect(&args).await?;
    std::fs::create_dir_all(&args.root_dir).map_err(|source| Error::PodDir {
        path: args.root_dir.clone(),
        source,
    })?;
    let ip = args.node_ip.clone().unwrap_or_else(node::detect_ip);
    let port = args.port.unwrap_or(10250);
    let id = node::Identity {
        name: node.clone(),
        ip: ip.clone(),
        labels: labels(&args, &node)?,
        provider_id: args.provider_id.clone(),
        runtime_version,
        port,
    };
    // Register and heartbeat in the background: on a control-plane node the API server is
    // one of the static pods this kubelet is about to start, so it cannot be waited for.
    tokio::spawn(register_then_heartbeat(
        client.clone(),
        id,
        args.root_dir.clone(),
        cri.clone(),
        args.register_node.unwrap_or(true),
    ));
    let running = server::Running::default();
    let address = args.address.clone().unwrap_or_else(|| "0.0.0.0".into());
    let address: std::net::IpAddr = address.parse().map_err(|_| Error::Address(address))?;
    let listener = tokio::spawn(server::serve(
        server::Options {
            addr: std::net::SocketAddr::new(address, port),
            cert: args.tls_cert_file.clone(),
            key: args.tls_private_key_file.clone(),
            client_ca: args.client_ca_file.clone(),
            root: args.root_dir.clone(),
            node: node.clone(),
            cri: cri.clone(),
            gate: Arc::new(gate),
            rates: Arc::default(),
        },
        running.clone(),
    ));

    // One relist of the runtime per second for all pods (the PLEG), when there is one.
    let pleg = cri.clone().map(|c| {
        let (tx, _) = tokio::sync::broadcast::channel(1024);
        tokio::spawn(pleg::run(c, node.clone(), tx.clone()));
        tx
    });
    let mut pods = Pods {
        running,
        shared: Arc::new(Shared {
            node: node.clone(),
            client: client.clone(),
            cri,
            pleg,
            root: args.root_dir.clone(),
            host_ip: ip,
            dns: dns::Settings {
                cluster_dns: args.cluster_dns.clone(),
                cluster_domain: args.cluster_domain.clone().unwrap_or_default(),
                host: dns::Resolv::load(
                    args.resolv_conf
                        .as_deref()
                        .unwrap_or(std::path::Path::new("/etc/resolv.conf")),
                ),
            },
        }),
        api: HashMap::new(),
        mirrors: HashMap::new(),
        statics: HashMap::new(),
        workers: HashMap::new(),
    };
    let api: Api<Pod> = Api::all(client);
    let config = watcher::Config::default().fields(&format!("spec.nodeName={node}"));
    let mut events = std::pin::pin!(watcher(api, config));
    let mut tick = tokio::time::interval(Duration::from_secs(5));
    let mut listed: Vec<String> = Vec::new();
    let mut synced = false;
    let mut listener = std::pin::pin!(listener);
    // Static pods first, before anything the API says (the API server may be one of them).
    if let Some(dir) = &args.pod_manifest_path {
        pods.refresh_statics(dir, &node).await;
    }
    loop {
        tokio::select! {
            done = &mut listener => {
                return match done {
                    Ok(result) => result,
                    Err(_) => Ok(()),
                };
            }
            event = events.next() => match event {
                Some(Ok(watcher::Event::Apply(p))) => pods.apply(p),
                Some(Ok(watcher::Event::Delete(p))) => pods.delete(&p),
                Some(Ok(watcher::Event::Init)) => listed.clear(),
                Some(Ok(watcher::Event::InitApply(p))) => {
                    listed.push(uid(&p));
                    pods.apply(p);
                }
                Some(Ok(watcher::Event::InitDone)) => {
                    let gone: Vec<Pod> = pods
                        .api
                        .values()
                        .filter(|p| !listed.contains(&uid(p)))
                        .cloned()
                        .collect();
                    for p in gone {
                        pods.delete(&p);
                    }
                    if !synced {
                        synced = true;
                        pods.remove_orphans().await;
                    }
                }
                Some(Err(e)) => {
                    eprintln!("kubelet: watching pods bound to {node}: {}", chain(&e));
                    tokio::time::sleep(Duration::from_secs(1)).await;
                }
                None => return Ok(()),
            },
            _ = tick.tick() => {
                if let Some(dir) = &args.pod_manifest_path {
                    pods.refresh_statics(dir, &node).await;
                }
                pods.workers.retain(|_, (_, task)| !task.is_finished());
                if synced {
                    pods.remove_orphans().await;
                }
            }
        }
    }
}
