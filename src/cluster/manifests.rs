//! The control plane's static pod manifests, as `kubeadm init phase control-plane` and
//! `phase etcd local` write them into /etc/kubernetes/manifests: one pod per component on the
//! host network, the flags of the seed's kubeadm node, the PKI and kubeconfigs mounted from
//! the host at the paths the flags name. A pure function of the [`Plan`], snapshot-tested.
//!
//! The same manifests serve both runtimes: on containerd each pod runs the klab image (its
//! component names are links to the klab binary) with hostPath mounts at the host's own paths;
//! without one, the kubelet runs the same commands as host processes.

use std::path::PathBuf;

use serde_json::{Value, json};

/// The klab image: the klab binary under every component's name, for control-plane pods.
pub fn klab_image() -> String {
    format!("localhost/klab/klab:{}", env!("CARGO_PKG_VERSION"))
}

/// Which store the API server keeps its objects in.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize, clap::ValueEnum,
)]
#[serde(rename_all = "lowercase")]
pub enum StoreKind {
    /// klab-store, klab's etcd v3-compatible store
    Klab,
    /// Real etcd (if installed)
    Etcd,
}

/// Everything the manifests depend on.
#[derive(Debug, Clone)]
pub struct Plan {
    pub cluster: String,
    pub node: String,
    pub node_ip: String,
    pub api_port: u16,
    pub store: StoreKind,
    /// The node's /etc/kubernetes.
    pub kubernetes_dir: PathBuf,
    /// The store's data folder (/var/lib/etcd on kubeadm).
    pub store_dir: PathBuf,
    pub service_cidr: String,
    pub pod_cidr: String,
}

/// The store's client port, as etcd's.
pub const STORE_PORT: u16 = 2379;

impl Plan {
    fn pki(&self, file: &str) -> String {
        self.kubernetes_dir
            .join("pki")
            .join(file)
            .display()
            .to_string()
    }

    fn conf(&self, file: &str) -> String {
        self.kubernetes_dir.join(file).display().to_string()
    }
}

fn host_path(name: &str, path: &str, kind: &str) -> (Value, Value) {
    (
        json!({"name": name, "hostPath": {"path": path, "type": kind}}),
        json!({"name": name, "mountPath": path, "readOnly": kind != "DirectoryOrCreate"}),
    )
}

/// One static pod: kubeadm's shape (labels component and tier, priority class, host network,
/// liveness probe on the component's health endpoint).
fn pod(
    name: &str,
    command: Vec<String>,
    mounts: Vec<(Value, Value)>,
    probe: Option<Value>,
) -> Value {
    let (volumes, volume_mounts): (Vec<Value>, Vec<Value>) = mounts.into_iter().unzip();
    let mut container = json!({
        "name": name,
        "image": klab_image(),
        "imagePullPolicy": "IfNotPresent",
        "command": command,
        "resources": {"requests": {"cpu": "100m"}},
        "volumeMounts": volume_mounts,
    });
    if let Some(p) = probe {
        container["livenessProbe"] = p;
    }
    json!({
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {
            "name": name,
            "namespace": "kube-system",
            "labels": {"component": name, "tier": "control-plane"},
        },
        "spec": {
            "hostNetwork": true,
            "priorityClassName": "system-node-critical",
            "containers": [container],
            "volumes": volumes,
        },
    })
}

fn flags(command: &str, flags: &[(&str, String)]) -> Vec<String> {
    std::iter::once(command.to_string())
        .chain(flags.iter().map(|(k, v)| format!("--{k}={v}")))
        .collect()
}

fn https_probe(port: u16, path: &str) -> Value {
    json!({
        "httpGet": {"host": "127.0.0.1", "path": path, "port": port, "scheme": "HTTPS"},
        "initialDelaySeconds": 10,
        "periodSeconds": 10,
        "timeoutSeconds": 15,
        "failureThreshold": 8,
    })
}

fn store(p: &Plan) -> (String, Value) {
    let name = match p.store {
        StoreKind::Klab => "klab-store",
        StoreKind::Etcd => "etcd",
    };
    let client_urls = format!("https://127.0.0.1:{STORE_PORT}");
    let mut f = vec![
        ("advertise-client-urls", client_urls.clone()),
        ("cert-file", p.pki("etcd/server.crt")),
        ("client-cert-auth", "true".into()),
        ("data-dir", p.store_dir.display().to_string()),
        ("key-file", p.pki("etcd/server.key")),
        ("listen-client-urls", client_urls),
        ("listen-metrics-urls", "http://127.0.0.1:2381".into()),
        ("name", p.node.clone()),
        ("trusted-ca-file", p.pki("etcd/ca.crt")),
    ];
    if p.store == StoreKind::Etcd {
        // Real etcd is a one-member raft cluster: it needs its peer side even alone.
        f.extend([
            (
                "initial-advertise-peer-urls",
                "http://127.0.0.1:2380".into(),
            ),
            (
                "initial-cluster",
                format!("{}=http://127.0.0.1:2380", p.node),
            ),
            ("listen-peer-urls", "http://127.0.0.1:2380".into()),
        ]);
    }
    f.sort();
    let mounts = vec![
        host_path("etcd-certs", &p.pki("etcd"), "Directory"),
        host_path(
            "etcd-data",
            &p.store_dir.display().to_string(),
            "DirectoryOrCreate",
        ),
    ];
    let probe = json!({
        "httpGet": {"host": "127.0.0.1", "path": "/health", "port": 2381, "scheme": "HTTP"},
        "initialDelaySeconds": 10,
        "periodSeconds": 10,
        "failureThreshold": 8,
    });
    (name.into(), pod(name, flags(name, &f), mounts, Some(probe)))
}

fn apiserver(p: &Plan) -> Value {
    let f = [
        ("advertise-address", p.node_ip.clone()),
        ("authorization-mode", "Node,RBAC".into()),
        ("client-ca-file", p.pki("ca.crt")),
        ("enable-admission-plugins", "NodeRestriction".into()),
        ("etcd-cafile", p.pki("etcd/ca.crt")),
        ("etcd-certfile", p.pki("apiserver-etcd-client.crt")),
        ("etcd-keyfile", p.pki("apiserver-etcd-client.key")),
        ("etcd-servers", format!("https://127.0.0.1:{STORE_PORT}")),
        // klab signs each kubelet's serving certificate with the cluster CA, so the API server
        // can verify kubelets (kubeadm leaves this out and trusts any kubelet certificate).
        ("kubelet-certificate-authority", p.pki("ca.crt")),
        (
            "kubelet-client-certificate",
            p.pki("apiserver-kubelet-client.crt"),
        ),
        ("kubelet-client-key", p.pki("apiserver-kubelet-client.key")),
        (
            "kubelet-preferred-address-types",
            "InternalIP,ExternalIP,Hostname".into(),
        ),
        ("secure-port", p.api_port.to_string()),
        (
            "service-account-issuer",
            "https://kubernetes.default.svc.cluster.local".into(),
        ),
        ("service-account-key-file", p.pki("sa.pub")),
        ("service-account-signing-key-file", p.pki("sa.key")),
        ("service-cluster-ip-range", p.service_cidr.clone()),
        ("tls-cert-file", p.pki("apiserver.crt")),
        ("tls-private-key-file", p.pki("apiserver.key")),
    ];
    pod(
        "kube-apiserver",
        flags("kube-apiserver", &f),
        vec![host_path(
            "k8s-certs",
            &p.kubernetes_dir.join("pki").display().to_string(),
            "Directory",
        )],
        Some(https_probe(p.api_port, "/livez")),
    )
}

fn component(p: &Plan, name: &str, conf: &str, port: u16, extra: &[(&str, String)]) -> Value {
    let mut f = vec![
        ("authentication-kubeconfig", p.conf(conf)),
        ("authorization-kubeconfig", p.conf(conf)),
        ("bind-address", "127.0.0.1".into()),
        ("kubeconfig", p.conf(conf)),
        ("leader-elect", "true".into()),
    ];
    f.extend(extra.iter().cloned());
    f.sort();
    pod(
        name,
        flags(name, &f),
        vec![
            host_path(
                "k8s-certs",
                &p.kubernetes_dir.join("pki").display().to_string(),
                "Directory",
            ),
            host_path("kubeconfig", &p.conf(conf), "FileOrCreate"),
        ],
        Some(https_probe(port, "/healthz")),
    )
}

/// The manifests, by file name, in the order kubeadm writes them.
pub fn control_plane(p: &Plan) -> Vec<(String, Value)> {
    let (store_name, store_pod) = store(p);
    vec![
        (format!("{store_name}.yaml"), store_pod),
        ("kube-apiserver.yaml".into(), apiserver(p)),
        (
            "kube-controller-manager.yaml".into(),
            component(
                p,
                "kube-controller-manager",
                "controller-manager.conf",
                10257,
                &[
                    ("allocate-node-cidrs", "true".into()),
                    ("cluster-cidr", p.pod_cidr.clone()),
                    ("cluster-name", p.cluster.clone()),
                    ("controllers", "*".into()),
                    ("root-ca-file", p.pki("ca.crt")),
                    ("service-account-private-key-file", p.pki("sa.key")),
                    ("service-cluster-ip-range", p.service_cidr.clone()),
                    ("use-service-account-credentials", "true".into()),
                ],
            ),
        ),
        (
            "kube-scheduler.yaml".into(),
            component(p, "kube-scheduler", "scheduler.conf", 10259, &[]),
        ),
        (
            "cloud-controller-manager.yaml".into(),
            component(
                p,
                "cloud-controller-manager",
                "cloud-controller-manager.conf",
                10258,
                &[
                    ("cloud-provider", "local".into()),
                    ("cluster-name", p.cluster.clone()),
                ],
            ),
        ),
    ]
}

/// A manifest as the YAML file kubeadm writes.
pub fn to_yaml(pod: &Value) -> String {
    serde_yaml::to_string(pod).unwrap_or_default()
}

/// The plan of the seed's node (`my-cluster`, node IP 172.26.0.3) under /root/.klab, for the
/// book's examples and the snapshot tests.
pub fn example() -> Plan {
    Plan {
        cluster: "my-cluster".into(),
        node: "my-cluster-control-plane".into(),
        node_ip: "172.26.0.3".into(),
        api_port: 6443,
        store: StoreKind::Klab,
        kubernetes_dir: "/root/.klab/my-cluster/kubernetes".into(),
        store_dir: "/root/.klab/my-cluster/store".into(),
        service_cidr: "10.96.0.0/16".into(),
        pod_cidr: "10.244.0.0/16".into(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_manifest_is_a_pod_the_kubelet_can_load() {
        let dir = tempfile::tempdir().unwrap();
        for store in [StoreKind::Klab, StoreKind::Etcd] {
            let plan = Plan { store, ..example() };
            for (file, pod) in control_plane(&plan) {
                let path = dir.path().join(&file);
                std::fs::write(&path, to_yaml(&pod)).unwrap();
                let loaded = crate::kubelet::static_pods::load(&path, &plan.node).unwrap();
                let name = loaded.metadata.name.unwrap();
                assert!(name.ends_with("-my-cluster-control-plane"), "{name}");
                let c = &loaded.spec.unwrap().containers[0];
                assert!(c.command.as_ref().unwrap()[0].starts_with(file.trim_end_matches(".yaml")));
            }
        }
    }
}
