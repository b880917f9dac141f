//! `klab up`, `klab down` and `klab status`: a whole cluster in one command, as kubeadm and
//! kind make one. `up` writes the PKI and kubeconfigs, the control plane's static pod
//! manifests, starts the node's containerd and each node's kubelet, and waits until the API
//! server answers, the nodes are Ready and the add-ons run; `down` undoes all of it.
//!
//! Mirrors `kubeadm init` (phases certs, kubeconfig, control-plane, etcd, kubelet-start,
//! upload, addon) and kind's `create cluster` (node names, one command, a context named after
//! the cluster). The cluster lives in one folder ([`Layout`]); `cluster.json` there records
//! what `up` started so `down` and `status` find it again.

pub mod addons;
pub mod daemon;
pub mod manifests;
pub mod pki;

use std::io::Write;
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

use crate::cli::{DownArgs, RuntimeKind, StatusArgs, UpArgs};
use daemon::{Daemon, DaemonError};
use manifests::{Plan, StoreKind};
use pki::{Ca, Leaf, PkiError, Usage};

/// What can go wrong while standing a cluster up or taking it down.
#[derive(Debug, thiserror::Error)]
pub enum ClusterError {
    #[error(
        "cluster {name:?} is already up (its folder is {}): see `klab status --name {name}`, or `klab down --name {name}` first",
        dir.display()
    )]
    AlreadyUp { name: String, dir: PathBuf },
    #[error(
        "{} is left from an earlier cluster {name:?}: run `klab down --name {name}` to remove it first",
        dir.display()
    )]
    Leftover { name: String, dir: PathBuf },
    #[error("no cluster {name:?}: {} does not exist (see `klab up --name {name}`)", dir.display())]
    NotFound { name: String, dir: PathBuf },
    #[error("reading {}", path.display())]
    ReadState {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{} is not a cluster record klab can read", path.display())]
    ParseState {
        path: PathBuf,
        #[source]
        source: serde_json::Error,
    },
    #[error(
        "port {port} is taken ({what} needs it): stop what listens there, or pick another with {flag}"
    )]
    PortTaken {
        port: u16,
        what: &'static str,
        flag: &'static str,
    },
    #[error(
        "the containerd runtime needs root (containerd, network namespaces, iptables): run as root, or use --runtime simulated"
    )]
    NotRoot,
    #[error("--name {0:?}: a cluster name is lower-case letters, digits and '-' (it names nodes)")]
    BadName(String),
    #[error("writing the PKI")]
    Pki(#[from] PkiError),
    #[error("starting the node's processes")]
    Daemon(#[from] DaemonError),
    #[error("starting containerd")]
    Runtime(#[from] crate::runtime::Error),
    #[error("connecting to the API server with {}", path.display())]
    Client {
        path: PathBuf,
        #[source]
        source: crate::client::Error,
    },
    #[error("{what} did not happen within {seconds}s{}", hint.as_deref().map(|h| format!("\n{h}")).unwrap_or_default())]
    Timeout {
        what: String,
        seconds: u64,
        hint: Option<String>,
    },
    #[error("{what} exited; the last lines of its log ({}):\n{tail}", log.display())]
    Died {
        what: String,
        log: PathBuf,
        tail: String,
    },
    #[error("setting up the cluster through the API")]
    Api(#[source] kube::Error),
    #[error("starting the async runtime")]
    Tokio(#[source] std::io::Error),
    #[error("removing {}", path.display())]
    Remove {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

/// Where a cluster keeps everything: the control-plane node's /etc/kubernetes, the store's
/// data, each node's kubelet folder, containerd, the daemons' logs and `cluster.json`.
#[derive(Debug, Clone)]
pub struct Layout {
    pub dir: PathBuf,
}

impl Layout {
    /// `--dir`, else `$HOME/.klab/<name>`.
    pub fn new(name: &str, dir: Option<&Path>) -> Layout {
        let dir = dir.map(Path::to_path_buf).unwrap_or_else(|| {
            std::env::var_os("HOME")
                .map(PathBuf::from)
                .unwrap_or_else(|| PathBuf::from("/root"))
                .join(".klab")
                .join(name)
        });
        Layout { dir }
    }
    pub fn state(&self) -> PathBuf {
        self.dir.join("cluster.json")
    }
    pub fn kubernetes(&self) -> PathBuf {
        self.dir.join("kubernetes")
    }
    pub fn pki(&self) -> PathBuf {
        self.kubernetes().join("pki")
    }
    pub fn manifests(&self) -> PathBuf {
        self.kubernetes().join("manifests")
    }
    pub fn admin_conf(&self) -> PathBuf {
        self.kubernetes().join("admin.conf")
    }
    pub fn node(&self, node: &str) -> PathBuf {
        self.dir.join("nodes").join(node)
    }
    pub fn kubelet_root(&self, node: &str) -> PathBuf {
        self.node(node).join("kubelet")
    }
    pub fn containerd(&self) -> PathBuf {
        self.dir.join("containerd")
    }
    pub fn logs(&self) -> PathBuf {
        self.dir.join("logs")
    }
}

/// One node of the cluster.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct NodeRecord {
    pub name: String,
    pub role: String,
    pub kubelet_port: u16,
}

/// What `up` made, as `cluster.json` records it.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct State {
    pub name: String,
    pub runtime: String,
    pub store: StoreKind,
    pub server: String,
    pub kubeconfig: PathBuf,
    pub nodes: Vec<NodeRecord>,
    pub daemons: Vec<Daemon>,
}

impl State {
    pub fn load(layout: &Layout) -> Result<State, ClusterError> {
        let path = layout.state();
        let bytes = std::fs::read(&path).map_err(|source| ClusterError::ReadState {
            path: path.clone(),
            source,
        })?;
        serde_json::from_slice(&bytes).map_err(|source| ClusterError::ParseState { path, source })
    }

    fn save(&self, layout: &Layout) -> Result<(), ClusterError> {
        let body = serde_json::to_vec_pretty(self).unwrap_or_default();
        pki::write_file(&layout.state(), &body, 0o644)?;
        Ok(())
    }
}

/// Node names as kind gives them: `<name>-control-plane`, `<name>-worker`, `<name>-worker2`.
pub fn node_names(cluster: &str, workers: usize) -> Vec<String> {
    std::iter::once(format!("{cluster}-control-plane"))
        .chain((0..workers).map(|i| match i {
            0 => format!("{cluster}-worker"),
            _ => format!("{cluster}-worker{}", i + 1),
        }))
        .collect()
}

/// The service range, as kind's (kubeadm's default is /12).
pub const SERVICE_CIDR: &str = "10.96.0.0/16";
pub const POD_CIDR: &str = "10.244.0.0/16";
/// The API server's address in the service range (the `kubernetes` Service).
const SERVICE_IP: &str = "10.96.0.1";

/// A progress display, one line per step with its time, as kind prints its steps.
struct Progress<'a> {
    out: &'a mut dyn Write,
    start: Instant,
    step: Instant,
}

impl Progress<'_> {
    fn begin(&mut self, what: &str) {
        self.step = Instant::now();
        let _ = write!(self.out, " • {what} …");
        let _ = self.out.flush();
    }
    fn done(&mut self, note: &str) {
        let _ = writeln!(
            self.out,
            " {:.2}s{}{}",
            self.step.elapsed().as_secs_f64(),
            if note.is_empty() { "" } else { "  " },
            note
        );
    }
}

fn port_free(port: u16) -> bool {
    std::net::TcpListener::bind(("0.0.0.0", port)).is_ok()
}

fn kubeconfig_yaml(cluster: &str, server: &str, ca: &str, user: &str, pair: &pki::Pair) -> String {
    use base64::Engine;
    let b = |s: &str| base64::engine::general_purpose::STANDARD.encode(s);
    let context = format!("{user}@{cluster}");
    format!(
        "apiVersion: v1\nkind: Config\nclusters:\n- cluster:\n    certificate-authority-data: {}\n    server: {server}\n  name: {cluster}\ncontexts:\n- context:\n    cluster: {cluster}\n    user: {user}\n  name: {context}\ncurrent-context: {context}\npreferences: {{}}\nusers:\n- name: {user}\n  user:\n    client-certificate-data: {}\n    client-key-data: {}\n",
        b(ca),
        b(&pair.cert),
        b(&pair.key),
    )
}

/// Writes the PKI and the kubeconfigs, as `kubeadm init phase certs all` and `phase
/// kubeconfig all` do, plus each node's kubelet serving certificate and kubeconfig.
fn write_pki(
    layout: &Layout,
    name: &str,
    nodes: &[String],
    node_ip: &str,
    server: &str,
) -> Result<(), ClusterError> {
    let pki = layout.pki();
    let ca = Ca::new("kubernetes")?;
    ca.pair.write(&pki, "ca")?;
    let ip = |s: &str| s.parse::<IpAddr>().ok();
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .unwrap_or_default()
        .trim()
        .to_string();
    let mut dns = vec![
        "kubernetes".to_string(),
        "kubernetes.default".into(),
        "kubernetes.default.svc".into(),
        "kubernetes.default.svc.cluster.local".into(),
        "localhost".into(),
        nodes[0].clone(),
    ];
    if !host.is_empty() {
        dns.push(host);
    }
    let ips: Vec<IpAddr> = [SERVICE_IP, node_ip, "127.0.0.1"]
        .iter()
        .filter_map(|s| ip(s))
        .collect();
    ca.issue(&Leaf {
        cn: "kube-apiserver",
        orgs: &[],
        dns,
        ips: ips.clone(),
        usage: Usage::Server,
    })?
    .write(&pki, "apiserver")?;
    // No admin group: the kubeadm:apiserver-kubelet-client binding gives this identity
    // system:kubelet-api-admin only, as kubeadm does since 1.37 (before, it was an admin).
    ca.client("kube-apiserver-kubelet-client", &[])?
        .write(&pki, "apiserver-kubelet-client")?;
    // The store has a CA of its own, as etcd under kubeadm.
    let etcd = Ca::new("etcd-ca")?;
    let etcd_dir = pki.join("etcd");
    etcd.pair.write(&etcd_dir, "ca")?;
    etcd.issue(&Leaf {
        cn: &nodes[0],
        orgs: &[],
        dns: vec![nodes[0].clone(), "localhost".into()],
        ips: ips.clone(),
        usage: Usage::ServerAndClient,
    })?
    .write(&etcd_dir, "server")?;
    etcd.client("kube-etcd-healthcheck-client", &[])?
        .write(&etcd_dir, "healthcheck-client")?;
    etcd.client("kube-apiserver-etcd-client", &[])?
        .write(&pki, "apiserver-etcd-client")?;
    let sa = pki::service_account_keys()?;
    pki::write_file(&pki.join("sa.key"), sa.key.as_bytes(), 0o600)?;
    pki::write_file(&pki.join("sa.pub"), sa.cert.as_bytes(), 0o644)?;

    let kubeconfig = |file: PathBuf, user: &str, groups: &[&str]| -> Result<(), ClusterError> {
        let pair = ca.client(user, groups)?;
        let text = kubeconfig_yaml(name, server, &ca.pair.cert, user, &pair);
        pki::write_file(&file, text.as_bytes(), 0o600)?;
        Ok(())
    };
    let k = layout.kubernetes();
    kubeconfig(
        k.join("admin.conf"),
        "kubernetes-admin",
        &["kubeadm:cluster-admins"],
    )?;
    kubeconfig(
        k.join("super-admin.conf"),
        "kubernetes-super-admin",
        &["system:masters"],
    )?;
    kubeconfig(
        k.join("controller-manager.conf"),
        "system:kube-controller-manager",
        &[],
    )?;
    kubeconfig(k.join("scheduler.conf"), "system:kube-scheduler", &[])?;
    kubeconfig(
        k.join("cloud-controller-manager.conf"),
        "system:cloud-controller-manager",
        &[],
    )?;
    kubeconfig(k.join("kube-proxy.conf"), "system:kube-proxy", &[])?;
    // CoreDNS runs on the pod network, where 127.0.0.1 is the pod itself: its kubeconfig names
    // the node's address, which the API server's certificate carries.
    let pod_server = server.replacen("127.0.0.1", node_ip, 1);
    let pair = ca.client("system:coredns", &[])?;
    let text = kubeconfig_yaml(name, &pod_server, &ca.pair.cert, "system:coredns", &pair);
    pki::write_file(&k.join("coredns.conf"), text.as_bytes(), 0o600)?;
    for node in nodes {
        let dir = layout.node(node);
        kubeconfig(
            dir.join("kubelet.conf"),
            &format!("system:node:{node}"),
            &["system:nodes"],
        )?;
        ca.issue(&Leaf {
            cn: node,
            orgs: &[],
            dns: vec![node.clone(), "localhost".into()],
            ips: ips.clone(),
            usage: Usage::Server,
        })?
        .write(&dir.join("pki"), "kubelet")?;
    }
    Ok(())
}

fn write_manifests(layout: &Layout, plan: &Plan) -> Result<(), ClusterError> {
    for (file, pod) in manifests::control_plane(plan) {
        let path = layout.manifests().join(file);
        pki::write_file(&path, manifests::to_yaml(&pod).as_bytes(), 0o600)?;
    }
    Ok(())
}

/// Whether a cluster's daemons still run.
fn any_alive(state: &State) -> bool {
    state.daemons.iter().any(Daemon::alive)
}

/// The kubelet's command line for one node (upstream's flags).
fn kubelet_args(
    layout: &Layout,
    node: &NodeRecord,
    node_ip: &str,
    runtime: RuntimeKind,
    control_plane: bool,
) -> Vec<String> {
    let d = layout.node(&node.name);
    let p = |x: PathBuf| x.display().to_string();
    let mut a = vec![
        format!("--kubeconfig={}", p(d.join("kubelet.conf"))),
        format!("--hostname-override={}", node.name),
        format!("--node-ip={node_ip}"),
        format!("--root-dir={}", p(layout.kubelet_root(&node.name))),
        format!("--port={}", node.kubelet_port),
        format!("--tls-cert-file={}", p(d.join("pki/kubelet.crt"))),
        format!("--tls-private-key-file={}", p(d.join("pki/kubelet.key"))),
        format!("--client-ca-file={}", p(layout.pki().join("ca.crt"))),
        // The :10250 server locked down as kubeadm's KubeletConfiguration does: no anonymous
        // callers, bearer tokens reviewed and every request authorized by the API server.
        "--anonymous-auth=false".into(),
        "--authentication-token-webhook=true".into(),
        "--authorization-mode=Webhook".into(),
        // Pods' resolv.conf names the kube-dns Service (dnsPolicy ClusterFirst), as kubeadm's
        // KubeletConfiguration says with clusterDNS and clusterDomain.
        format!("--cluster-dns={}", addons::DNS_IP),
        "--cluster-domain=cluster.local".into(),
        format!(
            "--provider-id=klab://{}/{}",
            layout
                .dir
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default(),
            node.name
        ),
    ];
    if control_plane {
        a.push(format!("--pod-manifest-path={}", p(layout.manifests())));
        a.push("--node-labels=node-role.kubernetes.io/control-plane=".into());
    }
    match runtime {
        RuntimeKind::Containerd => a.push(format!(
            "--container-runtime-endpoint=unix://{}",
            p(layout.containerd().join("containerd.sock"))
        )),
        RuntimeKind::Simulated => a.push("--runtime=simulated".into()),
    }
    a
}

fn valid_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 40
        && name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
        && !name.starts_with('-')
        && !name.ends_with('-')
}

/// Decides the runtime: containerd when asked for and possible, else the simulated one
/// (said out loud).
fn choose_runtime(asked: RuntimeKind, out: &mut dyn Write) -> Result<RuntimeKind, ClusterError> {
    if asked == RuntimeKind::Simulated {
        return Ok(asked);
    }
    if !rustix::process::geteuid().is_root() {
        return Err(ClusterError::NotRoot);
    }
    match crate::runtime::which("containerd", "containerd") {
        Ok(_) => Ok(RuntimeKind::Containerd),
        Err(e) => {
            let _ = writeln!(
                out,
                "note: {e}; falling back to --runtime simulated (the control plane runs as host processes, other pods are simulated)"
            );
            Ok(RuntimeKind::Simulated)
        }
    }
}

/// `klab up`.
pub fn up(args: UpArgs, out: &mut dyn Write) -> Result<(), ClusterError> {
    if !valid_name(&args.name) {
        return Err(ClusterError::BadName(args.name));
    }
    let layout = Layout::new(&args.name, args.dir.as_deref());
    if layout.state().exists() {
        let state = State::load(&layout)?;
        return Err(if any_alive(&state) {
            ClusterError::AlreadyUp {
                name: args.name,
                dir: layout.dir,
            }
        } else {
            ClusterError::Leftover {
                name: args.name,
                dir: layout.dir,
            }
        });
    }
    if layout.dir.exists() && std::fs::read_dir(&layout.dir).is_ok_and(|mut d| d.next().is_some()) {
        return Err(ClusterError::Leftover {
            name: args.name,
            dir: layout.dir,
        });
    }
    let runtime = choose_runtime(args.runtime, out)?;
    let names = node_names(&args.name, args.workers);
    let nodes: Vec<NodeRecord> = names
        .iter()
        .enumerate()
        .map(|(i, n)| NodeRecord {
            name: n.clone(),
            role: if i == 0 { "control-plane" } else { "worker" }.into(),
            kubelet_port: 10250 + (i as u16) * 10,
        })
        .collect();
    for (port, what, flag) in [
        (args.api_port, "kube-apiserver", "--api-port"),
        (
            manifests::STORE_PORT,
            "the store",
            "`klab down` of the other cluster",
        ),
    ] {
        if !port_free(port) {
            return Err(ClusterError::PortTaken { port, what, flag });
        }
    }
    for n in &nodes {
        if !port_free(n.kubelet_port) {
            return Err(ClusterError::PortTaken {
                port: n.kubelet_port,
                what: "a kubelet",
                flag: "`klab down` of the other cluster",
            });
        }
    }
    let node_ip = crate::kubelet::node::detect_ip();
    let server = format!("https://127.0.0.1:{}", args.api_port);
    let mut p = Progress {
        out,
        start: Instant::now(),
        step: Instant::now(),
    };
    let _ = writeln!(
        p.out,
        "Creating cluster {:?} ({} node{}, store {}, runtime {}) in {}",
        args.name,
        nodes.len(),
        if nodes.len() == 1 { "" } else { "s" },
        match args.store {
            StoreKind::Klab => "klab-store",
            StoreKind::Etcd => "etcd",
        },
        match runtime {
            RuntimeKind::Containerd => "containerd",
            RuntimeKind::Simulated => "simulated",
        },
        layout.dir.display()
    );
    let mut state = State {
        name: args.name.clone(),
        runtime: match runtime {
            RuntimeKind::Containerd => "containerd".into(),
            RuntimeKind::Simulated => "simulated".into(),
        },
        store: args.store,
        server: server.clone(),
        kubeconfig: layout.admin_conf(),
        nodes: nodes.clone(),
        daemons: Vec::new(),
    };
    state.save(&layout)?;

    p.begin("Writing certificates and kubeconfigs");
    write_pki(&layout, &args.name, &names, &node_ip, &server)?;
    p.done(&layout.pki().display().to_string());

    p.begin("Writing the control plane's static pod manifests");
    let plan = Plan {
        cluster: args.name.clone(),
        node: names[0].clone(),
        node_ip: node_ip.clone(),
        api_port: args.api_port,
        store: args.store,
        kubernetes_dir: layout.kubernetes(),
        store_dir: layout.dir.join("store"),
        service_cidr: SERVICE_CIDR.into(),
        pod_cidr: POD_CIDR.into(),
    };
    write_manifests(&layout, &plan)?;
    p.done(&layout.manifests().display().to_string());

    let exe = std::env::current_exe().map_err(|source| {
        ClusterError::Daemon(DaemonError::Spawn {
            name: "klab".into(),
            program: "/proc/self/exe".into(),
            source,
        })
    })?;
    if runtime == RuntimeKind::Containerd {
        p.begin("Starting containerd and loading images");
        // Recorded before the images load, so `klab down` finds it if `up` stops halfway.
        let d = start_containerd(&layout)?;
        state.daemons.push(d);
        state.save(&layout)?;
        load_images(&layout, &exe)?;
        p.done("");
    }

    p.begin("Starting the kubelets");
    for (i, n) in nodes.iter().enumerate() {
        let a = kubelet_args(&layout, n, &node_ip, runtime, i == 0);
        let d = Daemon::start(
            &format!("kubelet {}", n.name),
            &exe,
            "kubelet",
            &a,
            &layout.logs().join(format!("kubelet-{}.log", n.name)),
        )?;
        state.daemons.push(d);
    }
    state.save(&layout)?;
    p.done("");

    let wait = Duration::from_secs(args.wait);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(ClusterError::Tokio)?;
    rt.block_on(async {
        p.begin("Waiting for the API server (a static pod)");
        let admin = crate::client::from_kubeconfig(&layout.kubernetes().join("super-admin.conf"))
            .await
            .map_err(|source| ClusterError::Client {
                path: layout.kubernetes().join("super-admin.conf"),
                source,
            })?;
        wait_api(&admin, &layout, &state, wait).await?;
        p.done("");
        p.begin("Creating kubeadm's RBAC and the add-ons (kube-proxy, CoreDNS)");
        addons::apply(&admin, &layout, &state, runtime)
            .await
            .map_err(ClusterError::Api)?;
        p.done("");
        p.begin("Waiting for the nodes to be Ready");
        wait_nodes(&admin, &layout, &state, wait).await?;
        p.done("");
        p.begin("Waiting for kube-proxy and CoreDNS");
        addons::wait(&admin, wait).await?;
        p.done("");
        Ok::<(), ClusterError>(())
    })?;
    let total = p.start.elapsed().as_secs_f64();
    let conf = layout.admin_conf();
    let dir_flag = args
        .dir
        .as_ref()
        .map(|d| format!(" --dir {}", d.display()))
        .unwrap_or_default();
    let _ = writeln!(
        p.out,
        "Cluster {:?} is up in {total:.1}s. Use it with:\n\n  export KUBECONFIG={}\n  kubectl get nodes\n  klab ps\n\nStop it with `klab down --name {}{dir_flag}`.",
        args.name,
        conf.display(),
        args.name
    );
    if args.merge_kubeconfig {
        merge_kubeconfig(&conf, p.out);
    }
    Ok(())
}

fn containerd_config(layout: &Layout) -> crate::runtime::containerd::Config {
    use crate::runtime::{cni, images};
    crate::runtime::containerd::Config {
        dir: layout.containerd(),
        sandbox_image: images::PAUSE.into(),
        cni_conf_dir: layout.containerd().join("cni"),
        cni_bin_dir: cni::DEBIAN_PLUGIN_DIR.into(),
    }
}

/// Imports the node images and the klab image into the node's containerd.
fn load_images(layout: &Layout, exe: &Path) -> Result<(), ClusterError> {
    use crate::runtime::images;
    let config = containerd_config(layout);
    images::preload(&config.socket(), &config.dir)?;
    images::preload_klab(&config.socket(), &config.dir, exe, &manifests::klab_image())?;
    Ok(())
}

fn start_containerd(layout: &Layout) -> Result<Daemon, ClusterError> {
    use crate::runtime::{cni, containerd};
    let config = containerd_config(layout);
    cni::write_conflist(&config.cni_conf_dir, "10.244.0.0/24")?;
    // A cni0 bridge left by an earlier runtime keeps its old address and the bridge plugin
    // refuses to re-address it: start from none (one klab containerd per host, see above).
    let _ = std::process::Command::new("ip")
        .args(["link", "delete", "cni0"])
        .output();
    let pid = containerd::Containerd::start_detached(&config)?;
    Ok(Daemon {
        name: "containerd".into(),
        pid,
        start_ticks: crate::kubelet::process::start_ticks(pid).unwrap_or_default(),
        log: config.log(),
        command: vec![
            "containerd".into(),
            "--config".into(),
            config.dir.join("config.toml").display().to_string(),
        ],
    })
}

async fn wait_api(
    client: &kube::Client,
    layout: &Layout,
    state: &State,
    wait: Duration,
) -> Result<(), ClusterError> {
    let deadline = Instant::now() + wait;
    loop {
        if let Ok(v) = client.apiserver_version().await {
            let _ = v;
            return Ok(());
        }
        for d in &state.daemons {
            if !d.alive() {
                return Err(ClusterError::Died {
                    what: d.name.clone(),
                    log: d.log.clone(),
                    tail: d.tail(15),
                });
            }
        }
        if Instant::now() > deadline {
            return Err(ClusterError::Timeout {
                what: "the API server answering".into(),
                seconds: wait.as_secs(),
                hint: Some(format!(
                    "see the control plane's logs under {} and the kubelet's in {}",
                    layout
                        .kubelet_root(&state.nodes[0].name)
                        .join("logs")
                        .display(),
                    layout.logs().display()
                )),
            });
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

async fn wait_nodes(
    client: &kube::Client,
    layout: &Layout,
    state: &State,
    wait: Duration,
) -> Result<(), ClusterError> {
    use k8s_openapi::api::core::v1::Node;
    let api: kube::Api<Node> = kube::Api::all(client.clone());
    let deadline = Instant::now() + wait;
    loop {
        let ready: Vec<String> = api
            .list(&Default::default())
            .await
            .map(|l| {
                l.items
                    .into_iter()
                    .filter(|n| {
                        n.status
                            .as_ref()
                            .and_then(|s| s.conditions.as_ref())
                            .is_some_and(|c| {
                                c.iter().any(|c| c.type_ == "Ready" && c.status == "True")
                            })
                    })
                    .filter_map(|n| n.metadata.name)
                    .collect()
            })
            .unwrap_or_default();
        let missing: Vec<&NodeRecord> = state
            .nodes
            .iter()
            .filter(|n| !ready.contains(&n.name))
            .collect();
        if missing.is_empty() {
            return Ok(());
        }
        if Instant::now() > deadline {
            return Err(ClusterError::Timeout {
                what: format!("node {} becoming Ready", missing[0].name),
                seconds: wait.as_secs(),
                hint: Some(format!(
                    "see its kubelet's log: {}",
                    layout
                        .logs()
                        .join(format!("kubelet-{}.log", missing[0].name))
                        .display()
                )),
            });
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Merges the cluster's context into ~/.kube/config (only with --merge-kubeconfig).
fn merge_kubeconfig(conf: &Path, out: &mut dyn Write) {
    let home = std::env::var_os("HOME")
        .map(PathBuf::from)
        .unwrap_or_default();
    let target = home.join(".kube").join("config");
    let _ = std::fs::create_dir_all(home.join(".kube"));
    let merged = std::process::Command::new("kubectl")
        .args(["config", "view", "--flatten"])
        .env(
            "KUBECONFIG",
            format!("{}:{}", target.display(), conf.display()),
        )
        .output();
    match merged {
        Ok(o) if o.status.success() => match pki::write_file(&target, &o.stdout, 0o600) {
            Ok(()) => {
                let _ = writeln!(out, "Merged the context into {}", target.display());
            }
            Err(e) => {
                let _ = writeln!(out, "note: could not merge into {}: {e}", target.display());
            }
        },
        _ => {
            let _ = writeln!(
                out,
                "note: could not merge into {} (needs kubectl on PATH)",
                target.display()
            );
        }
    }
}

/// `klab down`: stops the kubelets, the pods, containerd and the control plane's processes,
/// removes the iptables chains, mounts and the folder.
pub fn down(args: DownArgs, out: &mut dyn Write) -> Result<(), ClusterError> {
    let layout = Layout::new(&args.name, args.dir.as_deref());
    if !layout.dir.exists() {
        return Err(ClusterError::NotFound {
            name: args.name,
            dir: layout.dir,
        });
    }
    let state = State::load(&layout).ok();
    let daemons = state
        .as_ref()
        .map(|s| s.daemons.clone())
        .unwrap_or_default();
    let nodes: Vec<String> = state
        .as_ref()
        .map(|s| s.nodes.iter().map(|n| n.name.clone()).collect())
        .unwrap_or_default();
    let _ = writeln!(
        out,
        "Deleting cluster {:?} ({})",
        args.name,
        layout.dir.display()
    );
    for d in daemons.iter().filter(|d| d.name.starts_with("kubelet")) {
        d.stop(Duration::from_secs(5));
        let _ = writeln!(out, " • stopped {}", d.name);
    }
    if let Some(containerd) = daemons.iter().find(|d| d.name == "containerd") {
        if containerd.alive() {
            let socket = layout.containerd().join("containerd.sock");
            let removed = remove_all_pods(&socket);
            let _ = writeln!(out, " • removed {removed} pod sandbox(es) from containerd");
        }
        containerd.stop(Duration::from_secs(5));
        let _ = writeln!(out, " • stopped containerd");
    }
    // Static pods that ran as host processes.
    for n in &nodes {
        let stopped = crate::kubelet::process::remove_orphans(&layout.kubelet_root(n), &[]).len();
        if stopped > 0 {
            let _ = writeln!(out, " • stopped {stopped} static pod(s) of {n}");
        }
    }
    if state.as_ref().is_some_and(|s| s.runtime == "containerd") {
        cleanup_host(out);
    }
    unmount_under(&layout.dir);
    std::fs::remove_dir_all(&layout.dir).map_err(|source| ClusterError::Remove {
        path: layout.dir.clone(),
        source,
    })?;
    let _ = writeln!(out, "Deleted {}", layout.dir.display());
    Ok(())
}

/// Stops and removes every pod sandbox (and so every container) of the node's containerd.
fn remove_all_pods(socket: &Path) -> usize {
    let Ok(rt) = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    else {
        return 0;
    };
    rt.block_on(async {
        let Ok(mut cri) = crate::runtime::cri::Cri::connect(socket).await else {
            return 0;
        };
        let sandboxes = cri.list_pod_sandboxes().await.unwrap_or_default();
        let mut n = 0;
        for s in sandboxes {
            let _ = cri.stop_pod_sandbox(&s.id).await;
            if cri.remove_pod_sandbox(&s.id).await.is_ok() {
                n += 1;
            }
        }
        n
    })
}

/// What kube-proxy and the CNI bridge leave on the host: KUBE-* chains, and cni0.
fn cleanup_host(out: &mut dyn Write) {
    if let Ok(exe) = std::env::current_exe() {
        let ok = std::process::Command::new(exe)
            .args(["proxy", "--cleanup"])
            .output()
            .is_ok_and(|o| o.status.success());
        if ok {
            let _ = writeln!(out, " • removed kube-proxy's iptables chains");
        }
    }
    let deleted = std::process::Command::new("ip")
        .args(["link", "delete", "cni0"])
        .output()
        .is_ok_and(|o| o.status.success());
    if deleted {
        let _ = writeln!(out, " • removed the cni0 bridge");
    }
}

/// Unmounts whatever is still mounted below `dir` (deepest first).
fn unmount_under(dir: &Path) {
    let Ok(mounts) = std::fs::read_to_string("/proc/self/mounts") else {
        return;
    };
    let prefix = dir.display().to_string();
    let mut points: Vec<&str> = mounts
        .lines()
        .filter_map(|l| l.split_whitespace().nth(1))
        .filter(|m| m.starts_with(&prefix))
        .collect();
    points.sort_by_key(|p| std::cmp::Reverse(p.len()));
    for m in points {
        let _ = rustix::mount::unmount(m, rustix::mount::UnmountFlags::DETACH);
    }
}

/// `klab status`: each node's daemons and the control plane's static pods.
pub fn status(args: StatusArgs, out: &mut dyn Write) -> Result<(), ClusterError> {
    let layout = Layout::new(&args.name, args.dir.as_deref());
    if !layout.state().exists() {
        return Err(ClusterError::NotFound {
            name: args.name,
            dir: layout.dir,
        });
    }
    let state = State::load(&layout)?;
    let _ = writeln!(
        out,
        "cluster {:?}: runtime {}, store {}, API server {}\nkubeconfig: {}\n",
        state.name,
        state.runtime,
        match state.store {
            StoreKind::Klab => "klab-store",
            StoreKind::Etcd => "etcd",
        },
        state.server,
        state.kubeconfig.display()
    );
    let mut rows: Vec<Vec<String>> = Vec::new();
    for d in &state.daemons {
        rows.push(vec![
            d.name.clone(),
            "host process".into(),
            if d.alive() { "running" } else { "stopped" }.into(),
            d.pid.to_string(),
        ]);
    }
    let control_plane = &state.nodes[0].name;
    let processes = crate::kubelet::process::list(&layout.kubelet_root(control_plane));
    for (file, pod) in static_pods(&layout) {
        let name = pod["metadata"]["name"]
            .as_str()
            .unwrap_or(&file)
            .to_string();
        let (kind, st, pid) = if state.runtime == "containerd" {
            (
                "static pod (container)",
                "see kubectl -n kube-system get pods".to_string(),
                String::new(),
            )
        } else {
            match processes.iter().find(|p| p.0 == name) {
                Some((_, pid, alive)) => (
                    "static pod (process)",
                    if *alive { "running" } else { "exited" }.to_string(),
                    pid.to_string(),
                ),
                None => (
                    "static pod (process)",
                    "not started".to_string(),
                    String::new(),
                ),
            }
        };
        rows.push(vec![
            format!("{name}-{control_plane}"),
            kind.into(),
            st,
            pid,
        ]);
    }
    let _ = crate::tools::output::write_table(out, &["COMPONENT", "KIND", "STATE", "PID"], &rows);
    Ok(())
}

fn static_pods(layout: &Layout) -> Vec<(String, serde_json::Value)> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(layout.manifests())
        .map(|d| d.flatten().map(|e| e.path()).collect())
        .unwrap_or_default();
    files.sort();
    files
        .into_iter()
        .filter_map(|f| {
            let v: serde_json::Value = serde_yaml::from_slice(&std::fs::read(&f).ok()?).ok()?;
            Some((f.file_name()?.to_string_lossy().into_owned(), v))
        })
        .collect()
}
