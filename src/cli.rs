//! Command-line definitions (clap derive) and the multi-call argv mapping; no logic lives here.
//!
//! Flag names follow the upstream tools a learner already knows: `--kubeconfig` and
//! `--context` as kubectl, `-o json|yaml` as kubectl, `--pki-dir` as `kubeadm certs`.

use std::ffi::OsString;
use std::path::PathBuf;

use clap::{Args, Parser, Subcommand, ValueEnum};

/// The links klab answers to, each naming the subcommand that runs that component.
///
/// Started as `kube-apiserver --secure-port=6443`, klab behaves as
/// `klab apiserver --secure-port=6443`, so `ps` shows upstream names.
pub const COMPONENT_LINKS: &[(&str, &str)] = &[
    ("kube-apiserver", "apiserver"),
    ("kube-controller-manager", "controller-manager"),
    ("kube-scheduler", "scheduler"),
    ("cloud-controller-manager", "cloud-controller-manager"),
    ("kubelet", "kubelet"),
    ("kube-proxy", "proxy"),
    ("klab-store", "store"),
    ("coredns", "dns"),
];

/// Rewrites argv for a multi-call start: `kube-apiserver ARGS` becomes `klab apiserver ARGS`.
pub fn argv_for(args: impl IntoIterator<Item = OsString>) -> Vec<OsString> {
    let mut args: Vec<OsString> = args.into_iter().collect();
    let Some(argv0) = args.first() else {
        return vec![OsString::from("klab")];
    };
    let name = std::path::Path::new(argv0)
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    if let Some((_, sub)) = COMPONENT_LINKS.iter().find(|(link, _)| *link == name) {
        args.insert(1, OsString::from(*sub));
    }
    args
}

#[derive(Debug, Parser)]
#[command(
    name = "klab",
    version,
    about = "An educational Kubernetes cluster lab, and the tools to look inside any cluster",
    long_about = None,
    propagate_version = true
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Create a cluster on this machine, as kubeadm and kind do: PKI, static pods, kubelets
    Up(UpArgs),
    /// Delete a cluster `klab up` made: processes, containers, chains, mounts and its folder
    Down(DownArgs),
    /// Show a cluster's components and whether they run
    Status(StatusArgs),
    /// Work with the certificates behind a kubeconfig or a PKI folder
    #[command(subcommand)]
    Certs(CertsCommand),
    /// Show the cluster's processes the way `ps auxww` shows them on a node, with their flags
    Ps(PsArgs),
    /// Talk to an API server (or etcd) the way curl and kubectl do, and explain every step
    Probe(ProbeArgs),
    /// Show where the control plane and the cluster services run, as `kubectl cluster-info`
    ClusterInfo(ClusterInfoArgs),
    /// Run klab-store, the cluster's etcd v3-compatible store (also started as `klab-store`)
    Store(Box<StoreArgs>),
    /// Run kube-apiserver, the Kubernetes REST API over HTTPS (also started as `kube-apiserver`)
    Apiserver(Box<ApiserverArgs>),
    /// Run the kubelet, the node agent that runs pods through CRI (also started as `kubelet`)
    Kubelet(Box<KubeletArgs>),
    /// Run kube-proxy: Services and EndpointSlices programmed into iptables (also started as `kube-proxy`)
    Proxy(Box<ProxyArgs>),
    /// Run cluster DNS, a small CoreDNS: Services as DNS names, the rest forwarded (also started as `coredns`)
    Dns(Box<DnsArgs>),
    /// Run kube-scheduler, which binds pending pods to nodes (also started as `kube-scheduler`)
    Scheduler(Box<SchedulerArgs>),
    /// Run kube-controller-manager, the control loops (also started as `kube-controller-manager`)
    ControllerManager(Box<ControllerManagerArgs>),
    /// Run cloud-controller-manager with the `local` provider (also `cloud-controller-manager`)
    CloudControllerManager(Box<CloudControllerManagerArgs>),
    /// Measure a component against its upstream counterpart, side by side
    #[command(subcommand)]
    Bench(BenchCommand),
    /// Guided labs that check themselves: break the cluster on purpose and repair it
    Lab(LabArgs),
}

/// `klab lab`: which cluster (as `klab up` names it) and which labs.
#[derive(Debug, Args)]
pub struct LabArgs {
    /// The cluster's name, as `klab up --name` (its folder is $HOME/.klab/NAME)
    #[arg(long, value_name = "NAME", default_value = "klab", global = true)]
    pub cluster: String,
    /// The cluster's folder, as `klab up --dir` (overrides --cluster's default folder)
    #[arg(long, value_name = "DIR", global = true)]
    pub cluster_dir: Option<PathBuf>,
    /// Read the labs from this folder instead of those built into klab
    #[arg(long, value_name = "DIR", global = true)]
    pub labs_dir: Option<PathBuf>,
    #[command(subcommand)]
    pub command: LabCommand,
}

#[derive(Debug, Subcommand)]
pub enum LabCommand {
    /// List the labs
    List {
        #[arg(short, long, value_enum)]
        output: Option<OutputFormat>,
    },
    /// Check that every lab file is valid
    Validate,
    /// Start a lab (and the cluster, with `klab up`, if it is not up): run its setup, show step 1
    Start {
        /// The lab (`03-the-memory`, `the-memory` or `03`)
        name: String,
    },
    /// Where you are: the lab, the step, the hints shown
    Status,
    /// Run the current step's checks, say what is still wrong, and move on when they pass
    Check {
        /// Check this step instead of the current one (moves on only if it is the current one)
        #[arg(long, value_name = "N")]
        step: Option<usize>,
    },
    /// Show the next hint of the current step
    Hint,
    /// Undo the lab's faults and objects, and forget the progress
    Reset {
        /// The lab to reset (default: the one in progress)
        name: Option<String>,
    },
    /// Show and run a step's solution, then check it
    Solve {
        /// The step (1 is the first)
        step: usize,
    },
    /// Write a lab in another form
    Export {
        /// Write a Killercoda scenario (index.json, step pages, verify scripts) into DIR
        #[arg(long, value_name = "DIR")]
        killercoda: Option<PathBuf>,
        /// Print the lab as Markdown (the book's chapter)
        #[arg(long, required_unless_present = "killercoda")]
        markdown: bool,
        /// The lab
        name: String,
    },
}

/// `klab up`'s flags.
#[derive(Debug, Args)]
pub struct UpArgs {
    /// The cluster's name: nodes are <name>-control-plane, <name>-worker, …
    #[arg(long, default_value = "klab")]
    pub name: String,
    /// Worker nodes besides the control-plane node
    #[arg(long, default_value_t = 0)]
    pub workers: usize,
    /// Where the API server keeps its objects: klab-store, or real etcd
    #[arg(long, value_enum, default_value = "klab")]
    pub store: crate::cluster::manifests::StoreKind,
    /// containerd (real pods; needs root) or simulated (no pods run; the control plane runs as host processes)
    #[arg(long, value_enum, default_value = "containerd")]
    pub runtime: RuntimeKind,
    /// The cluster's folder (default: ~/.klab/<name>)
    #[arg(long, value_name = "DIR")]
    pub dir: Option<PathBuf>,
    /// The API server's port
    #[arg(long, default_value_t = 6443)]
    pub api_port: u16,
    /// Seconds to wait for each step (API server, nodes, add-ons)
    #[arg(long, value_name = "SECONDS", default_value_t = 120)]
    pub wait: u64,
    /// Also merge the cluster's context into ~/.kube/config
    #[arg(long)]
    pub merge_kubeconfig: bool,
}

/// `klab down`'s flags.
#[derive(Debug, Args)]
pub struct DownArgs {
    /// The cluster's name
    #[arg(long, default_value = "klab")]
    pub name: String,
    /// The cluster's folder (default: ~/.klab/<name>)
    #[arg(long, value_name = "DIR")]
    pub dir: Option<PathBuf>,
}

/// `klab status`'s flags.
#[derive(Debug, Args)]
pub struct StatusArgs {
    /// The cluster's name
    #[arg(long, default_value = "klab")]
    pub name: String,
    /// The cluster's folder (default: ~/.klab/<name>)
    #[arg(long, value_name = "DIR")]
    pub dir: Option<PathBuf>,
}

/// Machine-readable output, as kubectl's `-o`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum OutputFormat {
    Json,
    Yaml,
}

/// Which kubeconfig and context to read, resolved as kubectl resolves them.
#[derive(Debug, Clone, Default, Args)]
pub struct KubeconfigArgs {
    /// Path to the kubeconfig file (default: $KUBECONFIG, merged as kubectl does, else ~/.kube/config)
    #[arg(long, value_name = "PATH")]
    pub kubeconfig: Option<PathBuf>,
    /// The kubeconfig context to use (default: its current-context)
    #[arg(long, value_name = "NAME")]
    pub context: Option<String>,
}

#[derive(Debug, Subcommand)]
pub enum CertsCommand {
    /// Write the CA, client certificate and key of a kubeconfig context as PEM files for curl
    Extract(ExtractArgs),
    /// Explain certificates: who they name, who signed them, when they expire, whether they fit
    Inspect(InspectArgs),
    /// A table of certificate expirations, like `kubeadm certs check-expiration`
    CheckExpiration(CheckExpirationArgs),
}

#[derive(Debug, Args)]
pub struct ExtractArgs {
    #[command(flatten)]
    pub kubeconfig: KubeconfigArgs,
    /// Folder to write ca.pem, cert.pem and key.pem into
    #[arg(long, value_name = "DIR", default_value = ".")]
    pub out_dir: PathBuf,
    /// Overwrite files that already exist
    #[arg(long)]
    pub force: bool,
    /// Print the PEM data instead of writing files
    #[arg(long, conflicts_with_all = ["out_dir", "force"])]
    pub stdout: bool,
}

#[derive(Debug, Args)]
pub struct InspectArgs {
    /// PEM files holding certificates and private keys (a CA among them is used to verify the others)
    #[arg(value_name = "FILE", required_unless_present_any = ["kubeconfig", "context"])]
    pub files: Vec<PathBuf>,
    /// Inspect the certificates of a kubeconfig context instead of files
    #[arg(long, value_name = "PATH", conflicts_with = "files")]
    pub kubeconfig: Option<PathBuf>,
    /// The kubeconfig context to inspect (default: its current-context)
    #[arg(long, value_name = "NAME", conflicts_with = "files")]
    pub context: Option<String>,
    /// A CA certificate to verify the chain against
    #[arg(long, value_name = "FILE")]
    pub ca: Option<PathBuf>,
    #[arg(short, long, value_enum)]
    pub output: Option<OutputFormat>,
}

#[derive(Debug, Args)]
pub struct CheckExpirationArgs {
    /// The PKI folder, as kubeadm's --cert-dir
    #[arg(long, value_name = "DIR", default_value = "/etc/kubernetes/pki")]
    pub pki_dir: PathBuf,
    /// Where admin.conf and the other kubeconfigs live (default: the PKI folder's parent)
    #[arg(long, value_name = "DIR")]
    pub kubeconfig_dir: Option<PathBuf>,
    #[arg(short, long, value_enum)]
    pub output: Option<OutputFormat>,
}

#[derive(Debug, Args)]
pub struct ClusterInfoArgs {
    #[command(subcommand)]
    pub command: Option<ClusterInfoCommand>,
    #[command(flatten)]
    pub kubeconfig: KubeconfigArgs,
    /// The namespace of the cluster services, as kubectl's -n (default kube-system)
    #[arg(short, long, default_value = "kube-system")]
    pub namespace: String,
}

#[derive(Debug, Subcommand)]
pub enum ClusterInfoCommand {
    /// Dump the cluster's state (and pod logs) as `kubectl cluster-info dump`, plus klab's diagnosis
    Dump(DumpArgs),
}

/// `kubectl cluster-info dump`'s flags, with kubectl's names and meaning.
#[derive(Debug, Args)]
pub struct DumpArgs {
    #[command(flatten)]
    pub kubeconfig: KubeconfigArgs,
    /// Where to write the files; empty or "-" writes everything to stdout, as kubectl
    #[arg(long, value_name = "DIR")]
    pub output_directory: Option<PathBuf>,
    /// A comma-separated list of namespaces to dump (default: kube-system and the context's namespace)
    #[arg(long, value_name = "NS,...", value_delimiter = ',')]
    pub namespaces: Vec<String>,
    /// Dump all namespaces; --namespaces is then ignored, as in kubectl
    #[arg(short = 'A', long)]
    pub all_namespaces: bool,
    /// The namespace dumped beside kube-system (default: the context's namespace, else default)
    #[arg(short, long, value_name = "NS")]
    pub namespace: Option<String>,
    /// The format of the object files (and of their file extension), as kubectl's -o
    #[arg(short, long, value_enum, default_value = "json")]
    pub output: OutputFormat,
    /// The PKI folder whose certificates klab/certificates.txt lists (default:
    /// /etc/kubernetes/pki, else the folder of the local kube-apiserver's --client-ca-file)
    #[arg(long, value_name = "DIR")]
    pub pki_dir: Option<PathBuf>,
}

#[derive(Debug, Args)]
pub struct ProbeArgs {
    /// Path to the kubeconfig file (default: $KUBECONFIG, merged as kubectl does, else ~/.kube/config)
    #[arg(long, value_name = "PATH")]
    pub kubeconfig: Option<PathBuf>,
    /// The kubeconfig context to use (default: its current-context)
    #[arg(long, value_name = "NAME")]
    pub context: Option<String>,
    /// The server URL (default: the context's cluster server)
    #[arg(long, short = 's', value_name = "URL")]
    pub server: Option<String>,
    /// A CA certificate file to trust instead of the kubeconfig's (with --server, like curl's --cacert)
    #[arg(long, value_name = "FILE")]
    pub cacert: Option<PathBuf>,
    /// A client certificate file (like curl's --cert)
    #[arg(long, value_name = "FILE")]
    pub cert: Option<PathBuf>,
    /// The client certificate's private key file (like curl's --key)
    #[arg(long, value_name = "FILE")]
    pub key: Option<PathBuf>,
    /// The name to check the server's certificate against, as kubectl's --tls-server-name
    #[arg(long, value_name = "NAME")]
    pub tls_server_name: Option<String>,
    /// Do not verify the server's certificate (and say so), as kubectl's flag
    #[arg(long)]
    pub insecure_skip_tls_verify: bool,
    /// Log each request as kubectl --v does: 6 for one line each, 8 with headers and bodies
    #[arg(short = 'v', long = "v", value_name = "LEVEL", default_value_t = 0)]
    pub verbosity: u8,
    #[arg(short, long, value_enum)]
    pub output: Option<OutputFormat>,
}

#[derive(Debug, Args)]
pub struct PsArgs {
    /// Read a captured `ps auxww` text instead of this machine's /proc ("-" for stdin)
    #[arg(long, value_name = "FILE")]
    pub from: Option<PathBuf>,
    /// Show every process, not only the cluster's
    #[arg(long)]
    pub all: bool,
    /// Explain each component's flags (all components, or only COMPONENT)
    #[arg(long, value_name = "COMPONENT", num_args = 0..=1, conflicts_with = "check")]
    pub flags: Option<Option<String>>,
    /// Judge the security-relevant flags, in kube-bench's shape
    #[arg(long)]
    pub check: bool,
    #[arg(short, long, value_enum)]
    pub output: Option<OutputFormat>,
}

/// klab-store's flags: etcd's names with etcd's meaning.
#[derive(Debug, Clone, Args)]
pub struct StoreArgs {
    /// Human-readable name for this member
    #[arg(long, default_value = "default")]
    pub name: String,
    /// Path to the data directory (default: NAME.etcd)
    #[arg(long, value_name = "DIR")]
    pub data_dir: Option<PathBuf>,
    /// URLs to listen on for client traffic (http:// or https://, comma-separated)
    #[arg(
        long,
        value_name = "URLS",
        value_delimiter = ',',
        default_value = "http://localhost:2379"
    )]
    pub listen_client_urls: Vec<String>,
    /// Client URLs to advertise to the rest of the cluster (shown by `member list`)
    #[arg(
        long,
        value_name = "URLS",
        value_delimiter = ',',
        default_value = "http://localhost:2379"
    )]
    pub advertise_client_urls: Vec<String>,
    /// Path to the client server TLS certificate file
    #[arg(long, value_name = "FILE")]
    pub cert_file: Option<PathBuf>,
    /// Path to the client server TLS key file
    #[arg(long, value_name = "FILE")]
    pub key_file: Option<PathBuf>,
    /// Path to the client server TLS trusted CA certificate file
    #[arg(long, value_name = "FILE")]
    pub trusted_ca_file: Option<PathBuf>,
    /// Require client certificates signed by --trusted-ca-file
    #[arg(long, num_args = 0..=1, default_missing_value = "true", action = clap::ArgAction::Set, default_value = "false")]
    pub client_cert_auth: bool,
    /// URLs to serve /metrics and /health on (http only, comma-separated)
    #[arg(long, value_name = "URLS", value_delimiter = ',')]
    pub listen_metrics_urls: Vec<String>,
    /// Auto compaction retention: hours ("1") or a duration ("5m"); 0 disables
    #[arg(long, value_name = "RETENTION", default_value = "0")]
    pub auto_compaction_retention: String,
    /// Auto compaction mode: periodic (retention is time) or revision (retention is revisions)
    #[arg(long, value_name = "MODE", default_value = "periodic", value_parser = ["periodic", "revision"])]
    pub auto_compaction_mode: String,
    /// How often watches with progress_notify hear the current revision (default 10m)
    #[arg(long, value_name = "DURATION")]
    pub experimental_watch_progress_notify_interval: Option<String>,
    #[command(flatten)]
    pub ignored: StoreIgnoredArgs,
}

/// etcd flags that kubeadm's etcd manifest passes and a single member without peers has no use
/// for: accepted, so the same manifest starts etcd or klab-store, and otherwise ignored.
#[derive(Debug, Clone, Default, Args)]
pub struct StoreIgnoredArgs {
    /// Shown by `member list` only: klab-store has no peers
    #[arg(long, value_name = "URLS", hide_short_help = true)]
    pub initial_advertise_peer_urls: Option<String>,
    /// Ignored: klab-store has no peers
    #[arg(long, value_name = "URLS", hide_short_help = true)]
    pub listen_peer_urls: Option<String>,
    /// Ignored: klab-store is a single member
    #[arg(long, value_name = "NAME=URL,...", hide_short_help = true)]
    pub initial_cluster: Option<String>,
    /// Ignored: klab-store is a single member
    #[arg(long, value_name = "STATE", hide_short_help = true)]
    pub initial_cluster_state: Option<String>,
    /// Ignored: klab-store is a single member
    #[arg(long, value_name = "TOKEN", hide_short_help = true)]
    pub initial_cluster_token: Option<String>,
    /// Ignored: klab-store has no peers
    #[arg(long, value_name = "FILE", hide_short_help = true)]
    pub peer_cert_file: Option<PathBuf>,
    /// Ignored: klab-store has no peers
    #[arg(long, value_name = "FILE", hide_short_help = true)]
    pub peer_key_file: Option<PathBuf>,
    /// Ignored: klab-store has no peers
    #[arg(long, value_name = "FILE", hide_short_help = true)]
    pub peer_trusted_ca_file: Option<PathBuf>,
    /// Ignored: klab-store has no peers
    #[arg(long, num_args = 0..=1, default_missing_value = "true", hide_short_help = true)]
    pub peer_client_cert_auth: Option<String>,
    /// Ignored: klab-store snapshots after each compaction and every 64 MiB of log
    #[arg(long, value_name = "N", hide_short_help = true)]
    pub snapshot_count: Option<String>,
    /// Ignored: the WAL's checksums are checked at every start
    #[arg(long, num_args = 0..=1, default_missing_value = "true", hide_short_help = true)]
    pub experimental_initial_corrupt_check: Option<String>,
}

/// kube-apiserver's flags: upstream's names with upstream's meaning (a subset).
#[derive(Debug, Clone, Args)]
pub struct ApiserverArgs {
    /// The port to serve HTTPS with authentication and authorization on
    #[arg(long, default_value_t = 6443)]
    pub secure_port: u16,
    /// The IP address to listen on for --secure-port
    #[arg(long, value_name = "IP", default_value = "0.0.0.0")]
    pub bind_address: String,
    /// The IP address on which to advertise the apiserver to members of the cluster
    #[arg(long, value_name = "IP")]
    pub advertise_address: Option<String>,
    /// File containing the default x509 certificate for HTTPS
    #[arg(long, value_name = "FILE")]
    pub tls_cert_file: PathBuf,
    /// File containing the default x509 private key matching --tls-cert-file
    #[arg(long, value_name = "FILE")]
    pub tls_private_key_file: PathBuf,
    /// Client certificates signed by this CA authenticate as CN (user) and O (groups)
    #[arg(long, value_name = "FILE")]
    pub client_ca_file: Option<PathBuf>,
    /// Static bearer tokens: CSV lines token,user,uid,"group1,group2"
    #[arg(long, value_name = "FILE")]
    pub token_auth_file: Option<PathBuf>,
    /// Allow anonymous requests as system:anonymous (klab's default is false; upstream's is true)
    #[arg(long, num_args = 0..=1, default_missing_value = "true", action = clap::ArgAction::Set, default_value = "false")]
    pub anonymous_auth: bool,
    /// Ordered list of authorizers: AlwaysAllow, AlwaysDeny, RBAC, Node (comma-separated)
    #[arg(
        long,
        value_name = "MODES",
        value_delimiter = ',',
        default_value = "AlwaysAllow"
    )]
    pub authorization_mode: Vec<String>,
    /// etcd servers to connect to (scheme://ip:port, comma-separated)
    #[arg(long, value_name = "URLS", value_delimiter = ',', required = true)]
    pub etcd_servers: Vec<String>,
    /// SSL Certificate Authority file used to secure etcd communication
    #[arg(long, value_name = "FILE")]
    pub etcd_cafile: Option<PathBuf>,
    /// SSL certification file used to secure etcd communication
    #[arg(long, value_name = "FILE")]
    pub etcd_certfile: Option<PathBuf>,
    /// SSL key file used to secure etcd communication
    #[arg(long, value_name = "FILE")]
    pub etcd_keyfile: Option<PathBuf>,
    /// A CIDR notation IP range from which to assign service cluster IPs
    #[arg(long, value_name = "CIDR", default_value = "10.96.0.0/12")]
    pub service_cluster_ip_range: String,
    /// A port range to reserve for services with NodePort visibility
    #[arg(long, value_name = "RANGE", default_value = "30000-32767")]
    pub service_node_port_range: String,
    /// Admission plugins to enable besides the defaults (klab builds NamespaceLifecycle, always
    /// on, and NodeRestriction)
    #[arg(long, value_name = "PLUGINS", value_delimiter = ',')]
    pub enable_admission_plugins: Vec<String>,
    /// Admission plugins to disable (only plugins klab builds can be named)
    #[arg(long, value_name = "PLUGINS", value_delimiter = ',')]
    pub disable_admission_plugins: Vec<String>,
    /// The tolerationSeconds of the `node.kubernetes.io/not-ready:NoExecute` toleration that
    /// the DefaultTolerationSeconds plugin adds to every pod that lacks one
    #[arg(long, value_name = "SECONDS", default_value_t = 300)]
    pub default_not_ready_toleration_seconds: i64,
    /// The tolerationSeconds of the `node.kubernetes.io/unreachable:NoExecute` toleration that
    /// the DefaultTolerationSeconds plugin adds to every pod that lacks one
    #[arg(long, value_name = "SECONDS", default_value_t = 300)]
    pub default_unreachable_toleration_seconds: i64,
    /// Private key that signs service-account tokens (TokenRequest, `kubectl create token`)
    #[arg(long, value_name = "FILE")]
    pub service_account_signing_key_file: Option<PathBuf>,
    /// Public keys (PEM) that verify service-account tokens; repeatable
    #[arg(long, value_name = "FILE")]
    pub service_account_key_file: Vec<PathBuf>,
    /// Issuer (`iss`) and audience of the service-account tokens this server issues and accepts
    #[arg(
        long,
        value_name = "URL",
        default_value = "https://kubernetes.default.svc.cluster.local"
    )]
    pub service_account_issuer: String,
    /// Legacy plain-HTTP port on 127.0.0.1 with NO authentication or authorization (0 = off)
    #[arg(long, default_value_t = 0)]
    pub insecure_port: u16,
    /// Client certificate the API server presents to kubelets (logs, exec, attach, port-forward)
    #[arg(long, value_name = "FILE")]
    pub kubelet_client_certificate: Option<PathBuf>,
    /// Private key of --kubelet-client-certificate
    #[arg(long, value_name = "FILE")]
    pub kubelet_client_key: Option<PathBuf>,
    /// CA that signs the kubelets' serving certificates (unset: the kubelet's certificate is
    /// not verified, as upstream)
    #[arg(long, value_name = "FILE")]
    pub kubelet_certificate_authority: Option<PathBuf>,
    /// The order of Node address types to reach a kubelet by (where node names do not
    /// resolve, put InternalIP first)
    #[arg(
        long,
        value_name = "TYPES",
        value_delimiter = ',',
        default_value = "Hostname,InternalDNS,InternalIP,ExternalDNS,ExternalIP"
    )]
    pub kubelet_preferred_address_types: Vec<String>,
}

/// kube-proxy's flags: upstream's names with upstream's meaning (iptables mode only). They are
/// global, so `klab proxy rules --kubeconfig …` takes them too.
#[derive(Debug, Clone, Args)]
pub struct ProxyArgs {
    #[command(subcommand)]
    pub command: Option<ProxyCommand>,
    /// Path to a kubeconfig file with the API server and credentials (default: in-cluster, then $KUBECONFIG, then ~/.kube/config)
    #[arg(long, value_name = "PATH", global = true)]
    pub kubeconfig: Option<PathBuf>,
    /// The node name this proxy runs for (default: the machine's hostname)
    #[arg(long, value_name = "NAME", global = true)]
    pub hostname_override: Option<String>,
    /// The pods' CIDR: traffic to a cluster IP from outside it is masqueraded
    #[arg(long, value_name = "CIDR", global = true)]
    pub cluster_cidr: Option<String>,
    /// Node IPs NodePorts answer on (klab takes single IPv4 addresses; default: every local address)
    #[arg(long, value_name = "IPS", value_delimiter = ',', global = true)]
    pub nodeport_addresses: Vec<String>,
    /// Which proxy mode to use: only iptables is built
    #[arg(long, value_name = "MODE", default_value = "iptables", global = true)]
    pub proxy_mode: String,
    /// The longest time between full syncs of the rules
    #[arg(long, value_name = "DURATION", default_value = "30s", global = true)]
    pub iptables_sync_period: String,
    /// The shortest time between syncs: changes arriving faster are batched
    #[arg(long, value_name = "DURATION", default_value = "1s", global = true)]
    pub iptables_min_sync_period: String,
    /// IP:port for the health check server (/healthz); empty disables it
    #[arg(
        long,
        value_name = "ADDR",
        default_value = "0.0.0.0:10256",
        global = true
    )]
    pub healthz_bind_address: String,
    /// IP:port for the metrics server (/metrics); empty disables it
    #[arg(
        long,
        value_name = "ADDR",
        default_value = "127.0.0.1:10249",
        global = true
    )]
    pub metrics_bind_address: String,
    /// Remove every KUBE-* chain and the jumps into them, then exit
    #[arg(long, global = true)]
    pub cleanup: bool,
    /// (klab) Program the rules inside this network namespace (`ip netns`), for simulated nodes and tests
    #[arg(long, value_name = "NAME", global = true)]
    pub netns: Option<String>,
}

#[derive(Debug, Clone, Subcommand)]
pub enum ProxyCommand {
    /// Print the iptables-restore input kube-proxy would program, from the API's Services and EndpointSlices (no root needed)
    Rules,
}

/// Cluster DNS's flags: the settings of kubeadm's CoreDNS Corefile, as flags. They are global,
/// so `klab dns records --kubeconfig …` takes them too.
#[derive(Debug, Clone, Args)]
pub struct DnsArgs {
    #[command(subcommand)]
    pub command: Option<DnsCommand>,
    /// Path to a kubeconfig file with the API server and credentials (default: in-cluster, then $KUBECONFIG, then ~/.kube/config)
    #[arg(long, value_name = "PATH", global = true)]
    pub kubeconfig: Option<PathBuf>,
    /// Where to answer DNS, on UDP and TCP (Corefile: `.:53`)
    #[arg(long, value_name = "ADDR", default_value = "0.0.0.0:53", global = true)]
    pub listen: String,
    /// The cluster domain answered from Services and EndpointSlices (Corefile: `kubernetes cluster.local`)
    #[arg(
        long,
        value_name = "DOMAIN",
        default_value = "cluster.local",
        global = true
    )]
    pub cluster_domain: String,
    /// Servers other names are forwarded to, IP or IP:PORT, comma-separated (Corefile: `forward .`; default: the nameservers of --resolv-conf)
    #[arg(long, value_name = "ADDRS", value_delimiter = ',', global = true)]
    pub upstream: Vec<String>,
    /// The resolv.conf whose nameservers are the upstreams when --upstream is not given
    #[arg(
        long,
        value_name = "FILE",
        default_value = "/etc/resolv.conf",
        global = true
    )]
    pub resolv_conf: PathBuf,
    /// The TTL of the cluster's records, in seconds (Corefile: `ttl` in the kubernetes block)
    #[arg(long, value_name = "SECONDS", default_value_t = 30, global = true)]
    pub ttl: u32,
    /// Address of the liveness endpoint /health; empty disables it (Corefile: `health`)
    #[arg(long, value_name = "ADDR", default_value = ":8080", global = true)]
    pub health: String,
    /// Address of the readiness endpoint /ready; empty disables it (Corefile: `ready`)
    #[arg(long, value_name = "ADDR", default_value = ":8181", global = true)]
    pub ready: String,
    /// Address of the Prometheus endpoint /metrics; empty disables it (Corefile: `prometheus`)
    #[arg(long, value_name = "ADDR", default_value = ":9153", global = true)]
    pub prometheus: String,
}

#[derive(Debug, Clone, Subcommand)]
pub enum DnsCommand {
    /// Print every record the server would answer for the cluster domain, from the API's Services and EndpointSlices
    Records,
}

/// Flags every control-plane component shares, with upstream's names and defaults.
#[derive(Debug, Clone, Args)]
pub struct ComponentArgs {
    /// Path to the kubeconfig with the API server's address and this component's credentials
    #[arg(long, value_name = "PATH")]
    pub kubeconfig: PathBuf,
    /// Accepted for upstream compatibility: klab does not delegate authentication of /metrics
    #[arg(long, value_name = "PATH")]
    pub authentication_kubeconfig: Option<PathBuf>,
    /// Accepted for upstream compatibility: klab does not delegate authorization of /metrics
    #[arg(long, value_name = "PATH")]
    pub authorization_kubeconfig: Option<PathBuf>,
    /// The IP address to serve /healthz and /metrics on (HTTPS, self-signed)
    #[arg(long, value_name = "IP", default_value = "0.0.0.0")]
    pub bind_address: String,
    /// Start a leader election client and gain leadership before running the main loop
    #[arg(long, num_args = 0..=1, default_missing_value = "true", action = clap::ArgAction::Set, default_value = "true")]
    pub leader_elect: bool,
    /// How long a non-leader waits after the last observed renewal before taking over
    #[arg(long, value_name = "DURATION", default_value = "15s")]
    pub leader_elect_lease_duration: String,
    /// How long the leader retries renewing before it gives up leadership (and exits)
    #[arg(long, value_name = "DURATION", default_value = "10s")]
    pub leader_elect_renew_deadline: String,
    /// How long to wait between attempts to acquire or renew
    #[arg(long, value_name = "DURATION", default_value = "2s")]
    pub leader_elect_retry_period: String,
    /// The namespace of the Lease used for leader election
    #[arg(long, value_name = "NAMESPACE", default_value = "kube-system")]
    pub leader_elect_resource_namespace: String,
    /// The name of the Lease used for leader election (default: the component's name)
    #[arg(long, value_name = "NAME")]
    pub leader_elect_resource_name: Option<String>,
    /// Log verbosity, as klog's -v (2 logs each decision)
    #[arg(short = 'v', long = "v", value_name = "LEVEL", default_value_t = 0)]
    pub verbosity: u8,
}

/// kube-scheduler's flags.
#[derive(Debug, Clone, Args)]
pub struct SchedulerArgs {
    #[command(flatten)]
    pub common: ComponentArgs,
    /// The port to serve HTTPS /healthz and /metrics on (0 turns it off)
    #[arg(long, default_value_t = 10259)]
    pub secure_port: u16,
    /// Pods whose spec.schedulerName is this are scheduled by this scheduler
    #[arg(long, value_name = "NAME", default_value = "default-scheduler")]
    pub scheduler_name: String,
    /// Log every decision (each filter verdict, every score) and annotate the pod with it
    #[arg(long)]
    pub explain: bool,
}

/// kube-controller-manager's flags.
#[derive(Debug, Clone, Args)]
pub struct ControllerManagerArgs {
    #[command(flatten)]
    pub common: ComponentArgs,
    /// The port to serve HTTPS /healthz and /metrics on (0 turns it off)
    #[arg(long, default_value_t = 10257)]
    pub secure_port: u16,
    /// Controllers to run: '*' for the defaults, 'foo' to add, '-foo' to remove
    #[arg(long, value_name = "NAMES", value_delimiter = ',', default_value = "*")]
    pub controllers: Vec<String>,
    /// Whether node podCIDRs are allocated from --cluster-cidr
    #[arg(long, num_args = 0..=1, default_missing_value = "true", action = clap::ArgAction::Set, default_value = "false")]
    pub allocate_node_cidrs: bool,
    /// The CIDR range for pods in the cluster (needs --allocate-node-cidrs)
    #[arg(long, value_name = "CIDR")]
    pub cluster_cidr: Option<String>,
    /// The prefix length of each node's podCIDR
    #[arg(long, value_name = "BITS", default_value_t = 24)]
    pub node_cidr_mask_size: u8,
    /// How long a node may stop reporting before it is marked unhealthy
    #[arg(long, value_name = "DURATION", default_value = "50s")]
    pub node_monitor_grace_period: String,
    /// How often node status is checked
    #[arg(long, value_name = "DURATION", default_value = "5s")]
    pub node_monitor_period: String,
    /// The cluster's name (shown in events and used by cloud controllers)
    #[arg(long, value_name = "NAME", default_value = "kubernetes")]
    pub cluster_name: String,
    /// Accepted as kubeadm passes it; klab's controllers all use --kubeconfig's identity
    #[arg(long, num_args = 0..=1, default_missing_value = "true", hide_short_help = true)]
    pub use_service_account_credentials: Option<String>,
    /// The cluster's CA certificate, which root-ca-cert-publisher publishes as the ConfigMap
    /// kube-root-ca.crt in every namespace
    #[arg(long, value_name = "FILE")]
    pub root_ca_file: Option<PathBuf>,
    /// Accepted as kubeadm passes it; the token controller is not built yet
    #[arg(long, value_name = "FILE", hide_short_help = true)]
    pub service_account_private_key_file: Option<PathBuf>,
    /// Accepted as kubeadm passes it; the CSR signer is not built yet
    #[arg(long, value_name = "FILE", hide_short_help = true)]
    pub cluster_signing_cert_file: Option<PathBuf>,
    /// Accepted as kubeadm passes it; the CSR signer is not built yet
    #[arg(long, value_name = "FILE", hide_short_help = true)]
    pub cluster_signing_key_file: Option<PathBuf>,
    /// Accepted as kubeadm passes it; /metrics is not behind delegated authentication yet
    #[arg(long, value_name = "FILE", hide_short_help = true)]
    pub client_ca_file: Option<PathBuf>,
    /// Accepted as kubeadm passes it; /metrics is not behind delegated authentication yet
    #[arg(long, value_name = "FILE", hide_short_help = true)]
    pub requestheader_client_ca_file: Option<PathBuf>,
    /// Accepted as the seed's line passes it; klab has no volume controllers yet
    #[arg(long, num_args = 0..=1, default_missing_value = "true", hide_short_help = true)]
    pub enable_hostpath_provisioner: Option<String>,
    /// Accepted as kubeadm passes it; the service IP allocator lives in the API server
    #[arg(long, value_name = "CIDR", hide_short_help = true)]
    pub service_cluster_ip_range: Option<String>,
}

/// cloud-controller-manager's flags.
#[derive(Debug, Clone, Args)]
pub struct CloudControllerManagerArgs {
    #[command(flatten)]
    pub common: ComponentArgs,
    /// The port to serve HTTPS /healthz and /metrics on (0 turns it off)
    #[arg(long, default_value_t = 10258)]
    pub secure_port: u16,
    /// The cloud provider: only `local` (nodes on this machine, addresses from a pool)
    #[arg(long, value_name = "NAME", default_value = "local", value_parser = ["local"])]
    pub cloud_provider: String,
    /// Cloud controllers to run: '*' (cloud-node, service-lb), 'foo' to add, '-foo' to remove
    #[arg(long, value_name = "NAMES", value_delimiter = ',', default_value = "*")]
    pub controllers: Vec<String>,
    /// The `local` provider's LoadBalancer address pool, as FIRST-LAST IPv4 addresses
    #[arg(
        long,
        value_name = "RANGE",
        default_value = "172.18.255.200-172.18.255.250"
    )]
    pub load_balancer_ip_range: String,
    /// The zone label the `local` provider gives every node
    #[arg(long, value_name = "ZONE", default_value = "local-a")]
    pub zone: String,
    /// The cluster's name
    #[arg(long, value_name = "NAME", default_value = "kubernetes")]
    pub cluster_name: String,
}

#[derive(Debug, Subcommand)]
pub enum BenchCommand {
    /// Put, range and watch latency of klab-store beside real etcd
    Store(BenchStoreArgs),
    /// Create, get, list and watch fan-out through kube-apiserver, on klab-store and on etcd
    Api(BenchApiArgs),
    /// Time from an EndpointSlice change to kube-proxy's rules generated and applied (in a network namespace)
    Proxy(BenchProxyArgs),
    /// Pods per second that kube-scheduler binds on simulated nodes (Node objects only)
    Scheduler(BenchSchedulerArgs),
    /// Time from `klab up` to a Ready node and a first pod Running, and every component's RSS
    Up(BenchUpArgs),
    /// Pod startup latency (created → all containers running) in batches, and the kubelet's RSS
    Pods(BenchPodsArgs),
}

#[derive(Debug, Args)]
pub struct BenchPodsArgs {
    /// Measure only this runtime (default: containerd when root and installed, and simulated)
    #[arg(long, value_enum)]
    pub runtime: Option<RuntimeKind>,
    /// Batch sizes, one row each (comma-separated); a batch's pods are created at once
    #[arg(long, value_delimiter = ',', default_value = "1,10,30")]
    pub batches: Vec<usize>,
    #[arg(short, long, value_enum)]
    pub output: Option<OutputFormat>,
}

#[derive(Debug, Args)]
pub struct BenchUpArgs {
    /// Measure only this runtime (default: containerd when root and installed, and simulated)
    #[arg(long, value_enum)]
    pub runtime: Option<RuntimeKind>,
    /// Clusters to create per runtime (medians are reported)
    #[arg(long, default_value_t = 3)]
    pub runs: usize,
    #[arg(short, long, value_enum)]
    pub output: Option<OutputFormat>,
}

#[derive(Debug, Args)]
pub struct BenchProxyArgs {
    /// Service counts, one row each (comma-separated)
    #[arg(long, value_delimiter = ',', default_value = "10,100,1000")]
    pub services: Vec<usize>,
    /// EndpointSlice changes measured per row
    #[arg(long, default_value_t = 50)]
    pub changes: usize,
    /// Ready endpoints per Service
    #[arg(long, default_value_t = 2)]
    pub endpoints: usize,
    #[arg(short, long, value_enum)]
    pub output: Option<OutputFormat>,
}

#[derive(Debug, Args)]
pub struct BenchSchedulerArgs {
    /// Simulated nodes to create (Node objects with 8 CPUs, 32 GiB and 110 pods each)
    #[arg(long, default_value_t = 1000)]
    pub nodes: usize,
    /// Pods to create and have scheduled
    #[arg(long, default_value_t = 1000)]
    pub pods: usize,
    #[arg(short, long, value_enum)]
    pub output: Option<OutputFormat>,
}

#[derive(Debug, Args)]
pub struct BenchApiArgs {
    /// The etcd binary to start beside klab-store (the API server runs on each in turn)
    #[arg(long, value_name = "PATH", default_value = "etcd")]
    pub etcd: PathBuf,
    /// Pods to create (and then get) in the create/get rows
    #[arg(long, default_value_t = 1000)]
    pub creates: usize,
    /// Concurrent clients for create and get
    #[arg(long, default_value_t = 8)]
    pub clients: usize,
    /// Object counts for the list rows (comma-separated)
    #[arg(long, value_delimiter = ',', default_value = "1000,10000")]
    pub list_sizes: Vec<usize>,
    /// Concurrent watchers in the fan-out row
    #[arg(long, default_value_t = 100)]
    pub watchers: usize,
    /// Objects written while the watchers watch
    #[arg(long, default_value_t = 100)]
    pub watch_events: usize,
    #[arg(short, long, value_enum)]
    pub output: Option<OutputFormat>,
}

#[derive(Debug, Args)]
pub struct BenchStoreArgs {
    /// Measure these etcd endpoints instead of starting klab-store and etcd (comma-separated)
    #[arg(long, value_name = "URLS", value_delimiter = ',')]
    pub endpoints: Vec<String>,
    /// The etcd binary to start beside klab-store
    #[arg(long, value_name = "PATH", default_value = "etcd")]
    pub etcd: PathBuf,
    /// Operations in each 1-client row (the 64-client rows do four times as many, the watch row a tenth)
    #[arg(long, default_value_t = 2000)]
    pub puts: usize,
    #[arg(short, long, value_enum)]
    pub output: Option<OutputFormat>,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn argv(args: &[&str]) -> Vec<String> {
        argv_for(args.iter().map(OsString::from))
            .into_iter()
            .map(|a| a.into_string().unwrap())
            .collect()
    }

    #[test]
    fn a_component_link_runs_that_component() {
        assert_eq!(
            argv(&["/usr/local/bin/kube-apiserver", "--secure-port=6443"]),
            [
                "/usr/local/bin/kube-apiserver",
                "apiserver",
                "--secure-port=6443"
            ]
        );
        assert_eq!(argv(&["klab-store"]), ["klab-store", "store"]);
        assert_eq!(argv(&["./klab", "ps"]), ["./klab", "ps"]);
        assert_eq!(argv(&[]), ["klab"]);
    }

    #[test]
    fn the_cli_definition_is_consistent() {
        use clap::CommandFactory;
        Cli::command().debug_assert();
    }
}

/// Which container runtime the kubelet drives (klab-only flag).
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum RuntimeKind {
    /// A real CRI runtime (containerd) at --container-runtime-endpoint
    Containerd,
    /// No runtime: pods move through the same states, no process runs, and their status says so
    Simulated,
}

/// The kubelet's flags: upstream's names with upstream's meaning (a subset).
#[derive(Debug, Clone, Args)]
pub struct KubeletArgs {
    /// Path to a kubeconfig file, specifying how to connect to the API server
    #[arg(long, value_name = "FILE")]
    pub kubeconfig: PathBuf,
    /// A KubeletConfiguration file; flags given on the command line win over it
    #[arg(long, value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// If non-empty, use this string as the node's name instead of the hostname
    #[arg(long, value_name = "NAME")]
    pub hostname_override: Option<String>,
    /// IP address of the node (its InternalIP); default: the address of the default route
    #[arg(long, value_name = "IP")]
    pub node_ip: Option<String>,
    /// Labels to add when registering the node (key=value, comma-separated)
    #[arg(long, value_name = "LABELS", value_delimiter = ',', default_value = "")]
    pub node_labels: Vec<String>,
    /// Directory path for managing kubelet files (pod folders)
    #[arg(long, value_name = "DIR", default_value = "/var/lib/kubelet")]
    pub root_dir: PathBuf,
    /// The endpoint of the CRI runtime (unix:///path or a socket path)
    /// (default: unix:///run/containerd/containerd.sock)
    #[arg(long, value_name = "ENDPOINT")]
    pub container_runtime_endpoint: Option<String>,
    /// Accepted and not used: with CRI the runtime's own config names the sandbox (pause)
    /// image, as upstream since 1.27
    #[arg(
        long,
        value_name = "IMAGE",
        default_value = "registry.k8s.io/pause:3.10"
    )]
    pub pod_infra_container_image: String,
    /// Path to the directory of static pod manifests to run
    #[arg(long, value_name = "DIR")]
    pub pod_manifest_path: Option<PathBuf>,
    /// Register the node with the API server
    /// (default: true)
    #[arg(long, num_args = 0..=1, default_missing_value = "true", action = clap::ArgAction::Set)]
    pub register_node: Option<bool>,
    /// Unique identifier of the node in the machine database of a cloud provider (spec.providerID)
    #[arg(long, value_name = "ID")]
    pub provider_id: Option<String>,
    /// The port of the kubelet's HTTPS server (/healthz, /pods, /containerLogs, /exec, /attach,
    /// /portForward)
    /// (default: 10250)
    #[arg(long)]
    pub port: Option<u16>,
    /// The IP address for the kubelet's server to serve on (default: 0.0.0.0)
    #[arg(long, value_name = "IP")]
    pub address: Option<String>,
    /// File containing the x509 certificate for HTTPS (default: self-signed in --root-dir/pki)
    #[arg(long, value_name = "FILE")]
    pub tls_cert_file: Option<PathBuf>,
    /// File containing the x509 private key matching --tls-cert-file
    #[arg(long, value_name = "FILE")]
    pub tls_private_key_file: Option<PathBuf>,
    /// Client certificates signed by this CA authenticate callers of the server (CN the user,
    /// O the groups)
    #[arg(long, value_name = "FILE")]
    pub client_ca_file: Option<PathBuf>,
    /// Requests to the server without credentials are system:anonymous (false: 401)
    /// (default: true; false with a --config file, as upstream's KubeletConfiguration)
    #[arg(long, num_args = 0..=1, default_missing_value = "true", action = clap::ArgAction::Set)]
    pub anonymous_auth: Option<bool>,
    /// Bearer tokens to the server are checked with a TokenReview at the API server
    /// (default: false; true with a --config file)
    #[arg(long, num_args = 0..=1, default_missing_value = "true", action = clap::ArgAction::Set)]
    pub authentication_token_webhook: Option<bool>,
    /// AlwaysAllow, or Webhook: each request to the server is a SubjectAccessReview for
    /// nodes/proxy (stats, metrics, log) of this node (default: AlwaysAllow; Webhook with a
    /// --config file)
    #[arg(long, value_name = "MODE")]
    pub authorization_mode: Option<String>,
    /// DNS server IPs for pods with dnsPolicy ClusterFirst (comma-separated; the kube-dns Service, 10.96.0.10 on klab)
    #[arg(long, value_name = "IPS", value_delimiter = ',')]
    pub cluster_dns: Vec<String>,
    /// The cluster's domain: pods' search path ends in it (cluster.local on klab, kubeadm and kind)
    #[arg(long, value_name = "DOMAIN")]
    pub cluster_domain: Option<String>,
    /// The resolv.conf pods with dnsPolicy Default (and the end of ClusterFirst's search path) are made from
    /// (default: /etc/resolv.conf; empty: none)
    #[arg(long, value_name = "FILE")]
    pub resolv_conf: Option<PathBuf>,
    /// klab only: `containerd` (real pods through CRI) or `simulated` (no processes)
    #[arg(long, value_enum, default_value = "containerd")]
    pub runtime: RuntimeKind,
}
