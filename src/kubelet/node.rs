//! The kubelet's Node: registration (capacity from procfs, addresses, nodeInfo), the status
//! it refreshes every 10 s with conditions from real measurements, and the node Lease in
//! kube-node-lease renewed every 10 s. Mirrors upstream's `kubelet_node_status.go`,
//! `nodestatus/setters.go` and `nodelease`; leaves out images, volumes and daemon endpoints.

use std::collections::BTreeMap;
use std::path::Path;

use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::api::core::v1::{
    DaemonEndpoint, Node, NodeAddress, NodeCondition, NodeDaemonEndpoints, NodeSpec, NodeStatus,
    NodeSystemInfo,
};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta, OwnerReference, Time};
use k8s_openapi::jiff::Timestamp;
use kube::api::{Api, Patch, PatchParams, PostParams};

use super::Error;

/// The version the kubelet reports: the Kubernetes minor klab follows, marked as klab's.
pub const KUBELET_VERSION: &str = concat!("v1.33.0-klab.", env!("CARGO_PKG_VERSION"));
/// Upstream's default --max-pods.
const MAX_PODS: &str = "110";
/// Upstream's default hard eviction thresholds, used for the pressure conditions.
const MEMORY_AVAILABLE_MIN_KIB: u64 = 100 * 1024;
const DISK_AVAILABLE_MIN_PERCENT: u64 = 10;
const PID_AVAILABLE_MIN_PERCENT: u64 = 10;

/// What the node is, as registration needs it.
#[derive(Debug, Clone)]
pub struct Identity {
    pub name: String,
    pub ip: String,
    pub labels: BTreeMap<String, String>,
    pub provider_id: Option<String>,
    /// `containerd://1.6.20`, or `simulated://` on the simulated runtime.
    pub runtime_version: String,
    /// The port of the :10250 server, published as `status.daemonEndpoints` so the API server
    /// knows where to send logs and exec.
    pub port: u16,
}

fn read(path: &str) -> String {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .trim()
        .to_string()
}

fn os_image() -> String {
    read("/etc/os-release")
        .lines()
        .find_map(|l| l.strip_prefix("PRETTY_NAME="))
        .map(|v| v.trim_matches('"').to_string())
        .unwrap_or_else(|| "Linux".into())
}

/// `/proc/meminfo`, in KiB.
pub(super) fn meminfo() -> BTreeMap<String, u64> {
    read("/proc/meminfo")
        .lines()
        .filter_map(|l| {
            let (k, v) = l.split_once(':')?;
            let kib = v.split_whitespace().next()?.parse().ok()?;
            Some((k.to_string(), kib))
        })
        .collect()
}

/// Bytes available and total on the filesystem of `path` (the kubelet's nodefs).
fn disk(path: &Path) -> Option<(u64, u64)> {
    let s = rustix::fs::statvfs(path).ok()?;
    Some((s.f_bavail * s.f_frsize, s.f_blocks * s.f_frsize))
}

fn pids() -> (u64, u64) {
    let max = read("/proc/sys/kernel/pid_max").parse().unwrap_or(32768);
    let used = std::fs::read_dir("/proc")
        .map(|d| {
            d.flatten()
                .filter(|e| e.file_name().to_string_lossy().parse::<u32>().is_ok())
                .count() as u64
        })
        .unwrap_or(0);
    (used, max)
}

fn resources(root: &Path) -> BTreeMap<String, Quantity> {
    let cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
    let mem = meminfo().get("MemTotal").copied().unwrap_or(0);
    let mut r = BTreeMap::from([
        ("cpu".to_string(), Quantity(cpus.to_string())),
        ("memory".to_string(), Quantity(format!("{mem}Ki"))),
        ("pods".to_string(), Quantity(MAX_PODS.into())),
    ]);
    if let Some((_, total)) = disk(root) {
        r.insert(
            "ephemeral-storage".into(),
            Quantity(format!("{}Ki", total / 1024)),
        );
    }
    r
}

fn condition(kind: &str, ok: bool, reason: &str, message: &str, now: &Time) -> NodeCondition {
    NodeCondition {
        type_: kind.into(),
        status: if ok { "True" } else { "False" }.into(),
        reason: Some(reason.into()),
        message: Some(message.into()),
        last_heartbeat_time: Some(now.clone()),
        last_transition_time: Some(now.clone()),
    }
}

/// The node's conditions from what procfs and statvfs say now; `runtime_problem` is why the
/// runtime is not ready, if it is not.
pub fn conditions(root: &Path, runtime_problem: Option<&str>, now: &Time) -> Vec<NodeCondition> {
    let mem_available = meminfo().get("MemAvailable").copied().unwrap_or(u64::MAX);
    let memory = mem_available < MEMORY_AVAILABLE_MIN_KIB;
    let disk_pressure = disk(root).is_some_and(|(avail, total)| {
        total > 0 && avail * 100 / total < DISK_AVAILABLE_MIN_PERCENT
    });
    let (used, max) = pids();
    let pid = max > 0 && (max - used.min(max)) * 100 / max < PID_AVAILABLE_MIN_PERCENT;
    let pressure = |kind: &str, on: bool, yes: &str, no: &str| {
        let (reason, msg) = if on {
            (
                format!("KubeletHas{yes}"),
                format!("kubelet has {}", yes.to_lowercase()),
            )
        } else {
            (
                format!("KubeletHas{no}"),
                format!("kubelet has {}", no.to_lowercase()),
            )
        };
        condition(kind, on, &reason, &msg, now)
    };
    let ready = match runtime_problem {
        None => condition(
            "Ready",
            true,
            "KubeletReady",
            "kubelet is posting ready status",
            now,
        ),
        Some(why) => condition("Ready", false, "KubeletNotReady", why, now),
    };
    vec![
        pressure(
            "MemoryPressure",
            memory,
            "InsufficientMemory",
            "SufficientMemory",
        ),
        pressure(
            "DiskPressure",
            disk_pressure,
            "DiskPressure",
            "NoDiskPressure",
        ),
        pressure("PIDPressure", pid, "InsufficientPID", "SufficientPID"),
        ready,
    ]
}

/// The whole status, as `kubectl describe node` shows it. A condition whose status is the
/// same as in `prev` keeps its lastTransitionTime.
pub fn status(
    id: &Identity,
    root: &Path,
    runtime_problem: Option<&str>,
    prev: &[NodeCondition],
) -> NodeStatus {
    let now = Time(
        Timestamp::from_second(Timestamp::now().as_second()).unwrap_or_else(|_| Timestamp::now()),
    );
    let r = resources(root);
    NodeStatus {
        capacity: Some(r.clone()),
        allocatable: Some(r),
        addresses: Some(vec![
            NodeAddress {
                type_: "InternalIP".into(),
                address: id.ip.clone(),
            },
            NodeAddress {
                type_: "Hostname".into(),
                address: id.name.clone(),
            },
        ]),
        conditions: Some(
            conditions(root, runtime_problem, &now)
                .into_iter()
                .map(|mut c| {
                    if let Some(p) = prev
                        .iter()
                        .find(|p| p.type_ == c.type_ && p.status == c.status)
                    {
                        c.last_transition_time = p.last_transition_time.clone();
                    }
                    c
                })
                .collect(),
        ),
        daemon_endpoints: Some(NodeDaemonEndpoints {
            kubelet_endpoint: Some(DaemonEndpoint {
                port: i32::from(id.port),
            }),
        }),
        node_info: Some(NodeSystemInfo {
            architecture: std::env::consts::ARCH
                .replace("x86_64", "amd64")
                .replace("aarch64", "arm64"),
            boot_id: read("/proc/sys/kernel/random/boot_id"),
            container_runtime_version: id.runtime_version.clone(),
            kernel_version: read("/proc/sys/kernel/osrelease"),
            // Deprecated upstream, but the Python client requires the field.
            kube_proxy_version: String::new(),
            kubelet_version: KUBELET_VERSION.into(),
            machine_id: read("/etc/machine-id"),
            operating_system: std::env::consts::OS.into(),
            os_image: os_image(),
            system_uuid: read("/sys/class/dmi/id/product_uuid"),
            ..Default::default()
        }),
        ..Default::default()
    }
}

/// Creates the Node, or takes over the one of the same name (a kubelet restart).
pub async fn register(client: &kube::Client, id: &Identity, root: &Path) -> Result<(), Error> {
    let api: Api<Node> = Api::all(client.clone());
    let err = |source| Error::Register {
        node: id.name.clone(),
        source,
    };
    let node = Node {
        metadata: ObjectMeta {
            name: Some(id.name.clone()),
            labels: Some(id.labels.clone()),
            ..Default::default()
        },
        spec: Some(NodeSpec {
            provider_id: id.provider_id.clone(),
            ..Default::default()
        }),
        status: None,
    };
    match api.create(&PostParams::default(), &node).await {
        Ok(_) => {}
        Err(kube::Error::Api(s)) if s.code == 409 => {
            let labels = serde_json::json!({"metadata": {"labels": id.labels}});
            api.patch(&id.name, &PatchParams::default(), &Patch::Merge(&labels))
                .await
                .map_err(err)?;
        }
        Err(e) => return Err(err(e)),
    }
    update_status(client, id, root, None, &mut Vec::new()).await
}

pub async fn update_status(
    client: &kube::Client,
    id: &Identity,
    root: &Path,
    runtime_problem: Option<&str>,
    prev: &mut Vec<NodeCondition>,
) -> Result<(), Error> {
    let api: Api<Node> = Api::all(client.clone());
    let st = status(id, root, runtime_problem, prev);
    *prev = st.conditions.clone().unwrap_or_default();
    let body = serde_json::json!({ "status": st });
    api.patch_status(&id.name, &PatchParams::default(), &Patch::Merge(&body))
        .await
        .map_err(|source| Error::NodeStatus {
            node: id.name.clone(),
            source,
        })?;
    Ok(())
}

/// Creates or renews the node's Lease: holder the node, 40 s duration, renewed now.
pub async fn renew_lease(client: &kube::Client, node: &str) -> Result<(), Error> {
    let api: Api<Lease> = Api::namespaced(client.clone(), "kube-node-lease");
    let err = |source| Error::Lease {
        node: node.to_string(),
        source,
    };
    let now = MicroTime(Timestamp::now());
    let spec = LeaseSpec {
        holder_identity: Some(node.into()),
        lease_duration_seconds: Some(40),
        renew_time: Some(now),
        ..Default::default()
    };
    match api.get_opt(node).await.map_err(err)? {
        Some(mut lease) => {
            lease.spec = Some(spec);
            api.replace(node, &PostParams::default(), &lease)
                .await
                .map_err(err)?;
        }
        None => {
            let owner = Api::<Node>::all(client.clone())
                .get_opt(node)
                .await
                .ok()
                .flatten()
                .and_then(|n| n.metadata.uid)
                .map(|uid| OwnerReference {
                    api_version: "v1".into(),
                    kind: "Node".into(),
                    name: node.into(),
                    uid,
                    ..Default::default()
                });
            let lease = Lease {
                metadata: ObjectMeta {
                    name: Some(node.into()),
                    namespace: Some("kube-node-lease".into()),
                    owner_references: owner.map(|o| vec![o]),
                    ..Default::default()
                },
                spec: Some(spec),
            };
            api.create(&PostParams::default(), &lease)
                .await
                .map_err(err)?;
        }
    }
    Ok(())
}

/// The address of the route to the outside world, else loopback (no packet is sent).
pub fn detect_ip() -> String {
    std::net::UdpSocket::bind("0.0.0.0:0")
        .and_then(|s| {
            s.connect("10.255.255.255:1")?;
            s.local_addr()
        })
        .map(|a| a.ip().to_string())
        .unwrap_or_else(|_| "127.0.0.1".into())
}
