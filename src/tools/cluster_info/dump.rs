//! `klab cluster-info dump`: kubectl's `cluster-info dump` (kubectl
//! pkg/cmd/clusterinfo/clusterinfo_dump.go) — the same lists in the same order, files and
//! separators (`nodes.json`; per namespace events, replication-controllers, services,
//! daemonsets, deployments, replicasets, pods; `<ns>/<pod>/logs.txt` with kubectl's START/END
//! markers and, where a log request fails, the line kubectl writes) — plus a `klab/` folder
//! with component flags, certificate expirations, store health and a diagnosis.
//!
//! Unlike kubectl, a dump into a folder is staged and moved into place only when complete, so
//! a failure (API server gone, disk full) leaves no half-written dump. Items are written as the
//! API server sent them, their top level and metadata in Go's field order; kubectl decodes them
//! into Go types first, which adds empty required fields and reorders deeper ones — the objects
//! are the same, not always the bytes. `--pod-running-timeout` and output formats other than
//! json and yaml are left out.

use std::io::{IsTerminal as _, Write};
use std::path::{Path, PathBuf};
use std::time::Duration;

use http_body_util::BodyExt as _;
use k8s_openapi::api::core::v1::{Event, Node, Pod};
use serde::Serialize as _;
use serde_json::{Map, Value};

use super::diagnosis::{self, Objects};
use super::extras;
use crate::cli::OutputFormat;

/// kubectl's per-request limit for pod logs is its 20 s pod-running timeout; the same here.
const LOG_TIMEOUT: Duration = Duration::from_secs(20);

/// Why a dump failed. Nothing of a failed dump stays in the output folder.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("reading the kubeconfig")]
    Kubeconfig(#[source] kube::config::KubeconfigError),
    #[error("building an API client")]
    Client(#[source] kube::Error),
    #[error("building the request GET {path}")]
    Request {
        path: String,
        #[source]
        source: http::Error,
    },
    #[error(
        "listing {what} (is the API server up? `klab probe` explains the connection); nothing was written"
    )]
    List {
        what: String,
        #[source]
        source: kube::Error,
    },
    #[error("the API server's answer to GET {path} is not JSON")]
    Decode {
        path: String,
        #[source]
        source: serde_json::Error,
    },
    #[error(
        "cannot write the dump into {}: choose a folder you may write to, or leave out --output-directory to print to stdout",
        path.display()
    )]
    OutputDir {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("writing {}; the partial dump was removed", path.display())]
    Write {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error(
        "moving the finished dump into place at {}: the files before it are in place, the rest were removed; run the dump again",
        path.display()
    )]
    Commit {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("writing the output")]
    Output(#[from] std::io::Error),
}

/// What to dump, and where: kubectl's flags.
#[derive(Debug, Clone)]
pub struct Options {
    /// `None` (or `-`) prints everything to stdout, as kubectl.
    pub output_dir: Option<PathBuf>,
    pub namespaces: Vec<String>,
    pub all_namespaces: bool,
    /// The namespace dumped beside kube-system when `namespaces` is empty.
    pub default_namespace: String,
    pub format: OutputFormat,
    /// For `klab/certificates.txt`.
    pub pki_dir: Option<PathBuf>,
    pub kubeconfig: crate::kubeconfig::Source,
    pub context: Option<String>,
}

/// The lists of one namespace, in kubectl's order: file name, API path, list kind, apiVersion.
const NAMESPACED: &[(&str, &str, &str, &str)] = &[
    (
        "events",
        "/api/v1/namespaces/{ns}/events",
        "EventList",
        "v1",
    ),
    (
        "replication-controllers",
        "/api/v1/namespaces/{ns}/replicationcontrollers",
        "ReplicationControllerList",
        "v1",
    ),
    (
        "services",
        "/api/v1/namespaces/{ns}/services",
        "ServiceList",
        "v1",
    ),
    (
        "daemonsets",
        "/apis/apps/v1/namespaces/{ns}/daemonsets",
        "DaemonSetList",
        "apps/v1",
    ),
    (
        "deployments",
        "/apis/apps/v1/namespaces/{ns}/deployments",
        "DeploymentList",
        "apps/v1",
    ),
    (
        "replicasets",
        "/apis/apps/v1/namespaces/{ns}/replicasets",
        "ReplicaSetList",
        "apps/v1",
    ),
    ("pods", "/api/v1/namespaces/{ns}/pods", "PodList", "v1"),
];

/// kubectl's printers: JSON indented by four spaces with Go's HTML escaping, or YAML with
/// sorted keys and `---` before every document after the first (the printer counts across
/// files, so every YAML file but nodes.yaml starts with `---`, as kubectl's do).
pub struct Printer {
    format: OutputFormat,
    printed: usize,
}

impl Printer {
    pub fn new(format: OutputFormat) -> Self {
        Printer { format, printed: 0 }
    }

    pub fn extension(&self) -> &'static str {
        match self.format {
            OutputFormat::Json => ".json",
            OutputFormat::Yaml => ".yaml",
        }
    }

    pub fn print(&mut self, value: &Value) -> std::io::Result<Vec<u8>> {
        self.printed += 1;
        match self.format {
            OutputFormat::Json => {
                let mut buf = Vec::new();
                let formatter = serde_json::ser::PrettyFormatter::with_indent(b"    ");
                let mut ser = serde_json::Serializer::with_formatter(&mut buf, formatter);
                value.serialize(&mut ser).map_err(std::io::Error::other)?;
                let mut out = go_html_escape(&buf);
                out.push(b'\n');
                Ok(out)
            }
            OutputFormat::Yaml => {
                let mut out = if self.printed > 1 {
                    b"---\n".to_vec()
                } else {
                    Vec::new()
                };
                let text = serde_yaml::to_string(&sorted(value)).map_err(std::io::Error::other)?;
                out.extend_from_slice(text.as_bytes());
                Ok(out)
            }
        }
    }
}

/// Go's encoding/json escapes `<`, `>`, `&`, U+2028 and U+2029 inside strings; outside strings
/// JSON has none of them, so replacing them everywhere is exact.
fn go_html_escape(json: &[u8]) -> Vec<u8> {
    let text = String::from_utf8_lossy(json);
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '<' => out.push_str("\\u003c"),
            '>' => out.push_str("\\u003e"),
            '&' => out.push_str("\\u0026"),
            '\u{2028}' => out.push_str("\\u2028"),
            '\u{2029}' => out.push_str("\\u2029"),
            c => out.push(c),
        }
    }
    out.into_bytes()
}

/// Keys sorted at every level, as sigs.k8s.io/yaml writes them (through a Go map).
fn sorted(v: &Value) -> Value {
    match v {
        Value::Object(m) => {
            let mut keys: Vec<&String> = m.keys().collect();
            keys.sort();
            Value::Object(
                keys.into_iter()
                    .map(|k| (k.clone(), sorted(&m[k])))
                    .collect(),
            )
        }
        Value::Array(a) => Value::Array(a.iter().map(sorted).collect()),
        other => other.clone(),
    }
}

/// Go's field order of an object and of its ObjectMeta, which kubectl's printer follows.
const OBJECT_ORDER: &[&str] = &["kind", "apiVersion", "metadata", "spec", "status"];
const META_ORDER: &[&str] = &[
    "name",
    "generateName",
    "namespace",
    "selfLink",
    "uid",
    "resourceVersion",
    "generation",
    "creationTimestamp",
    "deletionTimestamp",
    "deletionGracePeriodSeconds",
    "labels",
    "annotations",
    "ownerReferences",
    "finalizers",
    "managedFields",
];

/// `m`'s keys in `order` first, then the rest as they came.
fn in_order(m: &Map<String, Value>, order: &[&str]) -> Map<String, Value> {
    let mut out = Map::new();
    for k in order {
        if let Some(v) = m.get(*k) {
            out.insert((*k).to_string(), v.clone());
        }
    }
    for (k, v) in m {
        if !out.contains_key(k) {
            out.insert(k.clone(), v.clone());
        }
    }
    out
}

/// An item with its top level and metadata in Go's field order (deeper levels as sent).
fn go_order(item: &Value) -> Value {
    let Value::Object(m) = item else {
        return item.clone();
    };
    let mut out = in_order(m, OBJECT_ORDER);
    if let Some(Value::Object(meta)) = out.get("metadata") {
        let meta = in_order(meta, META_ORDER);
        out.insert("metadata".into(), Value::Object(meta));
    }
    Value::Object(out)
}

/// The list as kubectl prints it: kind and apiVersion set by its type setter, the server's
/// list metadata and items.
pub fn as_list(kind: &str, api_version: &str, server: &Value) -> Value {
    let mut m = Map::new();
    m.insert("kind".into(), kind.into());
    m.insert("apiVersion".into(), api_version.into());
    m.insert(
        "metadata".into(),
        server
            .get("metadata")
            .cloned()
            .unwrap_or_else(|| Value::Object(Map::new())),
    );
    let items = match server.get("items") {
        Some(Value::Array(items)) => items.iter().map(go_order).collect(),
        _ => vec![],
    };
    m.insert("items".into(), Value::Array(items));
    Value::Object(m)
}

/// Go's `%q` of a string, for the server message kubectl quotes.
fn go_quote(s: &str) -> String {
    let mut out = String::from("\"");
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if (c as u32) < 0x20 || c as u32 == 0x7f => {
                out.push_str(&format!("\\x{:02x}", c as u32))
            }
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

/// The error text client-go gives a raw request that got a non-2xx answer
/// (`newUnstructuredResponseError` and apimachinery's `NewGenericServerResponse`): the body
/// counts only when it is text; a JSON Status body is reported as "unknown".
pub fn generic_server_response(
    code: u16,
    verb: &str,
    resource: &str,
    name: &str,
    content_type: Option<&str>,
    body: &[u8],
) -> String {
    let is_text = match content_type {
        None | Some("") => true,
        Some(ct) => ct.trim().to_ascii_lowercase().starts_with("text/"),
    };
    let server_message = if is_text {
        let cut = &body[..body.len().min(2048)];
        String::from_utf8_lossy(cut).trim().to_string()
    } else {
        "unknown".to_string()
    };
    let message = match code {
        409 => "the server reported a conflict".to_string(),
        404 => "the server could not find the requested resource".to_string(),
        400 => "the server rejected our request for an unknown reason".to_string(),
        401 => "the server has asked for the client to provide credentials".to_string(),
        403 => server_message,
        406 if server_message.is_empty() || server_message == "unknown" => {
            "the server was unable to respond with a content type that the client supports"
                .to_string()
        }
        406 | 415 => server_message,
        405 => "the server does not allow this method on the requested resource".to_string(),
        422 => "the server rejected our request due to an error in our request".to_string(),
        503 => "the server is currently unable to handle the request".to_string(),
        504 => "the server was unable to return a response in the time allotted, but may still be processing the request".to_string(),
        429 => "the server has received too many requests and has asked us to try again later"
            .to_string(),
        c if c >= 500 => format!(
            "an error on the server ({}) has prevented the request from succeeding",
            go_quote(&server_message)
        ),
        c => format!("the server responded with the status code {c} but did not return more information"),
    };
    let verb = verb.to_ascii_lowercase();
    match (resource.is_empty(), name.is_empty()) {
        (false, false) => format!("{message} ({verb} {resource} {name})"),
        (false, true) => format!("{message} ({verb} {resource})"),
        _ => message,
    }
}

/// One container's part of logs.txt: kubectl's markers around the log, or around the line
/// kubectl writes when the request fails.
async fn container_log(client: &kube::Client, ns: &str, pod: &str, container: &str) -> Vec<u8> {
    let path = format!(
        "/api/v1/namespaces/{ns}/pods/{pod}/log?container={}",
        form_urlencoded::byte_serialize(container.as_bytes()).collect::<String>()
    );
    let mut out =
        format!("==== START logs for container {container} of pod {ns}/{pod} ====\n").into_bytes();
    let body = async {
        let req = http::Request::get(&path)
            .body(kube::client::Body::empty())
            .map_err(|e| e.to_string())?;
        let resp = client
            .send(req)
            .await
            .map_err(|e| format!("Get \"{path}\": {e}"))?;
        let code = resp.status().as_u16();
        let content_type = resp
            .headers()
            .get(http::header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .map(|s| s.split(';').next().unwrap_or("").to_string());
        let bytes = resp
            .into_body()
            .collect()
            .await
            .map_err(|e| format!("reading the log of {ns}/{pod}: {e}"))?
            .to_bytes();
        if (200..=206).contains(&code) {
            Ok(bytes.to_vec())
        } else {
            Err(generic_server_response(
                code,
                "GET",
                "pods",
                pod,
                content_type.as_deref(),
                &bytes,
            ))
        }
    };
    match tokio::time::timeout(LOG_TIMEOUT, body).await {
        Ok(Ok(bytes)) => out.extend_from_slice(&bytes),
        Ok(Err(why)) => out.extend_from_slice(format!("Request log error: {why}\n").as_bytes()),
        Err(_) => out.extend_from_slice(b"Request log error: context deadline exceeded\n"),
    }
    out.extend_from_slice(
        format!("==== END logs for container {container} of pod {ns}/{pod} ====\n").as_bytes(),
    );
    out
}

async fn get_json(client: &kube::Client, path: &str, what: &str) -> Result<Value, Error> {
    let req = http::Request::get(path)
        .body(Vec::new())
        .map_err(|source| Error::Request {
            path: path.into(),
            source,
        })?;
    let text = client
        .request_text(req)
        .await
        .map_err(|source| Error::List {
            what: what.into(),
            source,
        })?;
    serde_json::from_str(&text).map_err(|source| Error::Decode {
        path: path.into(),
        source,
    })
}

/// A dump folder being written: everything goes to a hidden staging folder inside it and is
/// moved into place by [`Staging::commit`]; dropped before that, it removes what it wrote.
struct Staging {
    root: PathBuf,
    tmp: PathBuf,
    created_root: bool,
    committed: bool,
}

fn mkdir_private(dir: &Path) -> std::io::Result<()> {
    use std::os::unix::fs::DirBuilderExt as _;
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
}

impl Staging {
    fn new(root: &Path) -> Result<Staging, Error> {
        let created_root = !root.exists();
        let fail = |source| Error::OutputDir {
            path: root.to_path_buf(),
            source,
        };
        mkdir_private(root).map_err(fail)?;
        let tmp = root.join(format!(".klab-dump-{}", std::process::id()));
        let staging = Staging {
            root: root.to_path_buf(),
            tmp: tmp.clone(),
            created_root,
            committed: false,
        };
        if let Err(source) = mkdir_private(&tmp) {
            return Err(fail(source));
        }
        Ok(staging)
    }

    fn put(&self, rel: &str, bytes: &[u8]) -> Result<(), Error> {
        use std::os::unix::fs::OpenOptionsExt as _;
        let path = self.tmp.join(rel);
        let fail = |source| Error::Write {
            path: self.root.join(rel),
            source,
        };
        if let Some(parent) = path.parent() {
            mkdir_private(parent).map_err(fail)?;
        }
        // kubectl: the dump may hold secrets (logs with credentials), so owner-only files.
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .open(&path)
            .map_err(fail)?;
        f.write_all(bytes).map_err(fail)?;
        Ok(())
    }

    /// Moves every staged file to its place, replacing a previous dump's file of that name as
    /// kubectl overwrites it.
    fn commit(mut self) -> Result<(), Error> {
        fn walk(from: &Path, to: &Path, root: &Path) -> Result<(), Error> {
            let fail = |path: &Path| {
                let path = path.to_path_buf();
                move |source| Error::Commit { path, source }
            };
            for entry in std::fs::read_dir(from).map_err(fail(root))? {
                let entry = entry.map_err(fail(root))?;
                let target = to.join(entry.file_name());
                if entry.file_type().map_err(fail(&target))?.is_dir() {
                    mkdir_private(&target).map_err(fail(&target))?;
                    walk(&entry.path(), &target, root)?;
                } else {
                    std::fs::rename(entry.path(), &target).map_err(fail(&target))?;
                }
            }
            Ok(())
        }
        walk(&self.tmp, &self.root, &self.root)?;
        self.committed = true;
        let _ = std::fs::remove_dir_all(&self.tmp);
        Ok(())
    }
}

impl Drop for Staging {
    fn drop(&mut self) {
        if self.committed {
            return;
        }
        let _ = std::fs::remove_dir_all(&self.tmp);
        if self.created_root {
            // Only removes the folder if the dump left it empty.
            let _ = std::fs::remove_dir(&self.root);
        }
    }
}

/// Where the dump goes: stdout as one stream, or files in a staged folder.
enum Sink<'a> {
    Stream(&'a mut dyn Write),
    Dir(Staging),
}

impl Sink<'_> {
    fn put(&mut self, rel: &str, bytes: &[u8]) -> Result<(), Error> {
        match self {
            Sink::Stream(out) => Ok(out.write_all(bytes)?),
            Sink::Dir(s) => s.put(rel, bytes),
        }
    }
}

/// One line per namespace on a terminal; nothing when stderr is piped or captured.
pub struct Progress {
    out: Option<Box<dyn Write>>,
}

impl Progress {
    /// Progress on stderr when it is a terminal.
    pub fn stderr() -> Self {
        let err = std::io::stderr();
        Progress {
            out: err.is_terminal().then(|| Box::new(err) as Box<dyn Write>),
        }
    }

    pub fn quiet() -> Self {
        Progress { out: None }
    }

    /// A finished step: overwrites the step in progress, ends the line.
    fn line(&mut self, text: &str) {
        if let Some(out) = &mut self.out {
            let _ = writeln!(out, "\r{text}\x1b[K");
        }
    }

    /// A step in progress, overwritten by the next one.
    fn step(&mut self, text: &str) {
        if let Some(out) = &mut self.out {
            let _ = write!(out, "\r{text}\x1b[K");
            let _ = out.flush();
        }
    }
}

/// The namespaces kubectl dumps: all (`-A`), the ones asked for, or kube-system and the
/// context's namespace.
async fn namespaces(client: &kube::Client, opts: &Options) -> Result<Vec<String>, Error> {
    if opts.all_namespaces {
        let list = get_json(client, "/api/v1/namespaces", "namespaces").await?;
        return Ok(list
            .get("items")
            .and_then(Value::as_array)
            .map(|items| {
                items
                    .iter()
                    .filter_map(|i| i.pointer("/metadata/name")?.as_str().map(String::from))
                    .collect()
            })
            .unwrap_or_default());
    }
    if opts.namespaces.is_empty() {
        return Ok(vec!["kube-system".into(), opts.default_namespace.clone()]);
    }
    Ok(opts.namespaces.clone())
}

/// Runs the dump. `out` gets the stream (or kubectl's closing line), `progress` the lines a
/// person watches; `port` is the API server's port, to find its process on this machine.
pub async fn dump(
    client: &kube::Client,
    opts: &Options,
    port: u16,
    out: &mut dyn Write,
    progress: &mut Progress,
) -> Result<(), Error> {
    let dir = opts
        .output_dir
        .as_ref()
        .filter(|d| !d.as_os_str().is_empty() && d.as_os_str() != "-");
    // Stage first: an unwritable folder fails before the API server is asked anything.
    let staging = dir.map(|d| Staging::new(d)).transpose()?;
    let to_dir = staging.is_some();
    let mut sink = match staging {
        Some(s) => Sink::Dir(s),
        None => Sink::Stream(&mut *out),
    };
    let mut printer = Printer::new(opts.format);
    let ext = printer.extension();
    let mut objects = Objects::default();

    let nodes = get_json(client, "/api/v1/nodes", "nodes").await?;
    let nodes = as_list("NodeList", "v1", &nodes);
    objects.nodes = diagnosis::items::<Node>(&nodes);
    sink.put(&format!("nodes{ext}"), &printer.print(&nodes)?)?;
    progress.line(&format!("nodes: {}", objects.nodes.len()));

    let namespaces = namespaces(client, opts).await?;
    for (i, ns) in namespaces.iter().enumerate() {
        let mut pods: Vec<Pod> = Vec::new();
        for (file, path, kind, api_version) in NAMESPACED {
            let path = path.replace("{ns}", ns);
            let server = get_json(client, &path, &format!("{file} in {ns}")).await?;
            let list = as_list(kind, api_version, &server);
            match *file {
                "events" => objects.events.extend(diagnosis::items::<Event>(&list)),
                "pods" => pods = diagnosis::items::<Pod>(&list),
                _ => {}
            }
            sink.put(&format!("{ns}/{file}{ext}"), &printer.print(&list)?)?;
        }
        let total = namespaces.len();
        for (n, pod) in pods.iter().enumerate() {
            progress.step(&format!(
                "[{}/{total}] {ns}: logs of pod {}/{}",
                i + 1,
                n + 1,
                pods.len()
            ));
            let name = pod.metadata.name.clone().unwrap_or_default();
            let spec = pod.spec.clone().unwrap_or_default();
            let mut text = Vec::new();
            let containers = spec
                .init_containers
                .iter()
                .flatten()
                .chain(&spec.containers);
            for c in containers {
                text.extend(container_log(client, ns, &name, &c.name).await);
            }
            sink.put(&format!("{ns}/{name}/logs.txt"), &text)?;
        }
        progress.line(&format!(
            "[{}/{total}] {ns}: 7 lists, logs of {} pod(s)",
            i + 1,
            pods.len()
        ));
        objects.pods.extend(pods);
        objects.namespaces.push(ns.clone());
    }

    if let Sink::Dir(staging) = sink {
        let procs = crate::tools::ps::load(crate::tools::ps::Source::Live, false);
        let mut components = Vec::new();
        extras::components(&procs, &mut components)?;
        staging.put("klab/components.txt", &components)?;

        let flags = procs
            .as_ref()
            .ok()
            .and_then(|p| extras::store_flags(p, port, &objects.pods))
            .or_else(|| extras::store_flags(&[], port, &objects.pods));
        let pki = extras::pki_dir(opts.pki_dir.as_deref(), flags.as_ref());
        let mut certificates = Vec::new();
        extras::certificates(
            &opts.kubeconfig,
            opts.context.as_deref(),
            pki.as_deref(),
            time::OffsetDateTime::now_utc(),
            &mut certificates,
        )?;
        staging.put("klab/certificates.txt", &certificates)?;

        progress.step("klab/: asking the store at --etcd-servers");
        let mut store = Vec::new();
        extras::store(flags.as_ref(), &mut store).await?;
        staging.put("klab/store.txt", &store)?;

        staging.put(
            "klab/diagnosis.txt",
            diagnosis::diagnose(&objects).as_bytes(),
        )?;
        staging.commit()?;
        progress.line("klab/: components, certificates, store, diagnosis");
    }
    if to_dir && let Some(d) = dir {
        writeln!(out, "Cluster info dumped to {}", d.display())?;
    }
    Ok(())
}

/// `klab cluster-info dump` from its flags: the kubeconfig and context as kubectl reads them.
pub async fn run(
    args: crate::cli::DumpArgs,
    out: &mut dyn Write,
    progress: &mut Progress,
) -> Result<(), Error> {
    let kc = args.kubeconfig;
    let kubeconfig = match &kc.kubeconfig {
        Some(p) => kube::config::Kubeconfig::read_from(p),
        None => kube::config::Kubeconfig::read(),
    }
    .map_err(Error::Kubeconfig)?;
    let options = kube::config::KubeConfigOptions {
        context: kc.context.clone(),
        ..Default::default()
    };
    let mut config = kube::Config::from_custom_kubeconfig(kubeconfig, &options)
        .await
        .map_err(Error::Kubeconfig)?;
    // client-go retries a 503 only when the server sends Retry-After; kube-rs's default retry
    // would turn kubectl's one "Request log error" line into 20 s of retries.
    config.default_retry = false;
    let port = config.cluster_url.port_u16().unwrap_or(
        if config.cluster_url.scheme_str() == Some("http") {
            80
        } else {
            443
        },
    );
    let opts = Options {
        output_dir: args.output_directory,
        namespaces: args.namespaces,
        all_namespaces: args.all_namespaces,
        default_namespace: args
            .namespace
            .unwrap_or_else(|| config.default_namespace.clone()),
        format: args.output,
        pki_dir: args.pki_dir,
        kubeconfig: crate::kubeconfig::Source::from_env(kc.kubeconfig.clone()),
        context: kc.context,
    };
    let client = kube::Client::try_from(config).map_err(Error::Client)?;
    dump(&client, &opts, port, out, progress).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn log_errors_read_as_client_go_writes_them() {
        assert_eq!(
            generic_server_response(503, "GET", "pods", "lone", Some("application/json"), b"{}"),
            "the server is currently unable to handle the request (get pods lone)"
        );
        assert_eq!(
            generic_server_response(500, "GET", "pods", "p", Some("text/plain"), b" boom\n"),
            "an error on the server (\"boom\") has prevented the request from succeeding (get pods p)"
        );
        assert_eq!(
            generic_server_response(502, "GET", "pods", "p", Some("application/json"), b"{}"),
            "an error on the server (\"unknown\") has prevented the request from succeeding (get pods p)"
        );
        assert_eq!(
            generic_server_response(404, "GET", "pods", "p", None, b""),
            "the server could not find the requested resource (get pods p)"
        );
    }

    #[test]
    fn json_is_printed_as_go_indents_and_escapes_it() {
        let mut p = Printer::new(OutputFormat::Json);
        let v = as_list(
            "PodList",
            "v1",
            &serde_json::json!({"metadata": {"resourceVersion": "7"}, "items": [{"a": "<&>"}]}),
        );
        let text = String::from_utf8(p.print(&v).unwrap()).unwrap();
        assert_eq!(
            text,
            "{\n    \"kind\": \"PodList\",\n    \"apiVersion\": \"v1\",\n    \"metadata\": {\n        \"resourceVersion\": \"7\"\n    },\n    \"items\": [\n        {\n            \"a\": \"\\u003c\\u0026\\u003e\"\n        }\n    ]\n}\n"
        );
    }

    #[test]
    fn yaml_documents_after_the_first_start_with_a_separator() {
        let mut p = Printer::new(OutputFormat::Yaml);
        let v = as_list("EventList", "v1", &serde_json::json!({"items": null}));
        let first = String::from_utf8(p.print(&v).unwrap()).unwrap();
        let second = String::from_utf8(p.print(&v).unwrap()).unwrap();
        assert!(
            first.starts_with("apiVersion: v1\nitems: []\nkind: EventList\n"),
            "{first}"
        );
        assert!(second.starts_with("---\napiVersion: v1\n"), "{second}");
    }

    #[test]
    fn staging_is_all_or_nothing() {
        use std::os::unix::fs::PermissionsExt as _;
        let tmp = tempfile::tempdir().unwrap();
        // Dropped before commit (an error halfway): the new folder is gone again.
        let fresh = tmp.path().join("fresh");
        let s = Staging::new(&fresh).unwrap();
        s.put("default/pods.json", b"{}").unwrap();
        drop(s);
        assert!(!fresh.exists());
        // Committed over an earlier dump: files replaced, others kept, nothing staged left.
        let old = tmp.path().join("old");
        std::fs::create_dir_all(old.join("default")).unwrap();
        std::fs::write(old.join("default/pods.json"), "old").unwrap();
        std::fs::write(old.join("notes.txt"), "mine").unwrap();
        let s = Staging::new(&old).unwrap();
        s.put("default/pods.json", b"new").unwrap();
        s.put("default/web/logs.txt", b"log").unwrap();
        s.commit().unwrap();
        assert_eq!(
            std::fs::read_to_string(old.join("default/pods.json")).unwrap(),
            "new"
        );
        assert_eq!(
            std::fs::read_to_string(old.join("notes.txt")).unwrap(),
            "mine"
        );
        let mode = std::fs::metadata(old.join("default/web/logs.txt"))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
        let left: Vec<_> = std::fs::read_dir(&old)
            .unwrap()
            .filter_map(|e| e.ok())
            .filter(|e| e.file_name().to_string_lossy().starts_with(".klab-dump"))
            .collect();
        assert!(left.is_empty());
    }
}
