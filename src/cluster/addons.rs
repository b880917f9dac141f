//! What `kubeadm init` creates through the API once the control plane answers: the
//! `kubeadm:cluster-admins` binding behind admin.conf, `kubeadm:apiserver-kubelet-client`
//! (the API server's kubelet client certificate to `system:kubelet-api-admin`), the roles of the identities klab adds
//! (cloud-controller-manager, CoreDNS), and the two add-ons: kube-proxy as a DaemonSet and
//! CoreDNS (klab's DNS server) as a Deployment behind the `kube-dns` Service at 10.96.0.10.
//!
//! Mirrors kubeadm's `phases/addons/{proxy,dns}` and `phases/bootstraptoken/clusterinfo`.
//! One deviation: both add-ons authenticate with a client certificate from a kubeconfig on
//! the node (`kube-proxy.conf`, `coredns.conf`, mounted read-only), as kube-proxy did before
//! service-account tokens were projected into pods; klab's kubelet does not project tokens yet.

use std::time::{Duration, Instant};

use k8s_openapi::api::apps::v1::{DaemonSet, Deployment};
use k8s_openapi::api::core::v1::Service;
use k8s_openapi::api::rbac::v1::{ClusterRole, ClusterRoleBinding};
use kube::Api;
use kube::api::PostParams;
use serde::de::DeserializeOwned;
use serde_json::{Value, json};

use super::manifests::klab_image;
use super::{ClusterError, Layout, POD_CIDR, State};
use crate::cli::RuntimeKind;

/// The cluster DNS Service's address: the tenth of the service range, as kubeadm's.
pub const DNS_IP: &str = "10.96.0.10";

/// Creates `object` unless it exists already.
async fn ensure<K>(api: Api<K>, object: Value) -> Result<(), kube::Error>
where
    K: kube::Resource + Clone + DeserializeOwned + serde::Serialize + std::fmt::Debug,
{
    let object: K = serde_json::from_value(object).map_err(kube::Error::SerdeError)?;
    match api.create(&PostParams::default(), &object).await {
        Ok(_) => Ok(()),
        Err(kube::Error::Api(s)) if s.code == 409 => Ok(()),
        Err(e) => Err(e),
    }
}

fn role(name: &str, rules: Value) -> Value {
    json!({"metadata": {"name": name}, "rules": rules})
}

fn binding(name: &str, role: &str, kind: &str, subject: &str) -> Value {
    json!({
        "metadata": {"name": name},
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": role},
        "subjects": [{"apiGroup": "rbac.authorization.k8s.io", "kind": kind, "name": subject}],
    })
}

fn mount(name: &str, path: &str, kind: &str, read_only: bool) -> (Value, Value) {
    (
        json!({"name": name, "hostPath": {"path": path, "type": kind}}),
        json!({"name": name, "mountPath": path, "readOnly": read_only}),
    )
}

/// kube-proxy's DaemonSet: one pod per node on the host network, privileged for iptables.
pub fn kube_proxy(layout: &Layout) -> Value {
    let conf = layout.kubernetes().join("kube-proxy.conf");
    let conf = conf.display().to_string();
    let (volumes, mounts): (Vec<Value>, Vec<Value>) = [
        mount("kubeconfig", &conf, "File", true),
        mount("xtables-lock", "/run/xtables.lock", "FileOrCreate", false),
    ]
    .into_iter()
    .unzip();
    json!({
        "metadata": {"name": "kube-proxy", "namespace": "kube-system", "labels": {"k8s-app": "kube-proxy"}},
        "spec": {
            "selector": {"matchLabels": {"k8s-app": "kube-proxy"}},
            "template": {
                "metadata": {"labels": {"k8s-app": "kube-proxy"}},
                "spec": {
                    "hostNetwork": true,
                    "priorityClassName": "system-node-critical",
                    "tolerations": [{"operator": "Exists"}],
                    "containers": [{
                        "name": "kube-proxy",
                        "image": klab_image(),
                        "imagePullPolicy": "IfNotPresent",
                        "command": [
                            "kube-proxy",
                            format!("--kubeconfig={conf}"),
                            "--hostname-override=$(NODE_NAME)",
                            format!("--cluster-cidr={POD_CIDR}"),
                        ],
                        "env": [{"name": "NODE_NAME", "valueFrom": {"fieldRef": {"fieldPath": "spec.nodeName"}}}],
                        "securityContext": {"privileged": true},
                        "volumeMounts": mounts,
                    }],
                    "volumes": volumes,
                },
            },
        },
    })
}

/// CoreDNS: klab's DNS server as a two-replica Deployment, as kubeadm deploys CoreDNS.
pub fn coredns(layout: &Layout) -> Value {
    let conf = layout.kubernetes().join("coredns.conf");
    let conf = conf.display().to_string();
    let (volumes, mounts): (Vec<Value>, Vec<Value>) = [mount("kubeconfig", &conf, "File", true)]
        .into_iter()
        .unzip();
    json!({
        "metadata": {"name": "coredns", "namespace": "kube-system", "labels": {"k8s-app": "kube-dns"}},
        "spec": {
            "replicas": 2,
            "selector": {"matchLabels": {"k8s-app": "kube-dns"}},
            "template": {
                "metadata": {"labels": {"k8s-app": "kube-dns"}},
                "spec": {
                    "priorityClassName": "system-cluster-critical",
                    "dnsPolicy": "Default",
                    "tolerations": [{"key": "node-role.kubernetes.io/control-plane", "effect": "NoSchedule"}],
                    "containers": [{
                        "name": "coredns",
                        "image": klab_image(),
                        "imagePullPolicy": "IfNotPresent",
                        "command": ["klab", "dns", format!("--kubeconfig={conf}")],
                        "ports": [
                            {"name": "dns", "containerPort": 53, "protocol": "UDP"},
                            {"name": "dns-tcp", "containerPort": 53, "protocol": "TCP"},
                            {"name": "metrics", "containerPort": 9153, "protocol": "TCP"},
                        ],
                        "volumeMounts": mounts,
                    }],
                    "volumes": volumes,
                },
            },
        },
    })
}

/// The `kube-dns` Service, labelled so `kubectl cluster-info` lists it.
pub fn kube_dns() -> Value {
    json!({
        "metadata": {
            "name": "kube-dns",
            "namespace": "kube-system",
            "labels": {
                "k8s-app": "kube-dns",
                "kubernetes.io/cluster-service": "true",
                "kubernetes.io/name": "CoreDNS",
            },
        },
        "spec": {
            "clusterIP": DNS_IP,
            "selector": {"k8s-app": "kube-dns"},
            "ports": [
                {"name": "dns", "port": 53, "protocol": "UDP", "targetPort": 53},
                {"name": "dns-tcp", "port": 53, "protocol": "TCP", "targetPort": 53},
                {"name": "metrics", "port": 9153, "protocol": "TCP", "targetPort": 9153},
            ],
        },
    })
}

/// Creates the RBAC and the add-ons (idempotent).
pub async fn apply(
    client: &kube::Client,
    layout: &Layout,
    _state: &State,
    _runtime: RuntimeKind,
) -> Result<(), kube::Error> {
    let roles: Api<ClusterRole> = Api::all(client.clone());
    let bindings: Api<ClusterRoleBinding> = Api::all(client.clone());
    ensure(
        bindings.clone(),
        binding(
            "kubeadm:cluster-admins",
            "cluster-admin",
            "Group",
            "kubeadm:cluster-admins",
        ),
    )
    .await?;
    // The API server's identity towards kubelets (pods/log, exec, nodes/proxy): kubelets
    // ask the API server whether it may, and this binding says yes.
    ensure(
        bindings.clone(),
        binding(
            "kubeadm:apiserver-kubelet-client",
            "system:kubelet-api-admin",
            "User",
            "kube-apiserver-kubelet-client",
        ),
    )
    .await?;
    ensure(
        roles.clone(),
        role(
            "system:coredns",
            json!([
                {"apiGroups": [""], "resources": ["endpoints", "services", "pods", "namespaces"], "verbs": ["list", "watch"]},
                {"apiGroups": ["discovery.k8s.io"], "resources": ["endpointslices"], "verbs": ["list", "watch"]},
            ]),
        ),
    )
    .await?;
    ensure(
        bindings.clone(),
        binding("system:coredns", "system:coredns", "User", "system:coredns"),
    )
    .await?;
    ensure(
        roles,
        role(
            "system:cloud-controller-manager",
            json!([
                {"apiGroups": [""], "resources": ["nodes", "services"], "verbs": ["get", "list", "watch", "update", "patch"]},
                {"apiGroups": [""], "resources": ["nodes/status", "services/status"], "verbs": ["update", "patch"]},
                {"apiGroups": ["", "events.k8s.io"], "resources": ["events"], "verbs": ["create", "patch", "update"]},
                {"apiGroups": ["coordination.k8s.io"], "resources": ["leases"], "verbs": ["get", "list", "watch", "create", "update", "patch"]},
            ]),
        ),
    )
    .await?;
    ensure(
        bindings,
        binding(
            "system:cloud-controller-manager",
            "system:cloud-controller-manager",
            "User",
            "system:cloud-controller-manager",
        ),
    )
    .await?;
    ensure(
        Api::<DaemonSet>::namespaced(client.clone(), "kube-system"),
        kube_proxy(layout),
    )
    .await?;
    ensure(
        Api::<Service>::namespaced(client.clone(), "kube-system"),
        kube_dns(),
    )
    .await?;
    ensure(
        Api::<Deployment>::namespaced(client.clone(), "kube-system"),
        coredns(layout),
    )
    .await
}

/// Waits until kube-proxy runs on every node and CoreDNS has its replicas available.
pub async fn wait(client: &kube::Client, wait: Duration) -> Result<(), ClusterError> {
    let ds: Api<DaemonSet> = Api::namespaced(client.clone(), "kube-system");
    let deploy: Api<Deployment> = Api::namespaced(client.clone(), "kube-system");
    let deadline = Instant::now() + wait;
    loop {
        let proxy_ok = ds
            .get("kube-proxy")
            .await
            .ok()
            .and_then(|d| d.status)
            .is_some_and(|s| {
                s.desired_number_scheduled > 0 && s.number_ready == s.desired_number_scheduled
            });
        let dns_ok = deploy
            .get("coredns")
            .await
            .ok()
            .and_then(|d| d.status)
            .is_some_and(|s| s.available_replicas.unwrap_or(0) >= 1);
        if proxy_ok && dns_ok {
            return Ok(());
        }
        if Instant::now() > deadline {
            let what = if proxy_ok { "CoreDNS" } else { "kube-proxy" };
            return Err(ClusterError::Timeout {
                what: format!("{what} running"),
                seconds: wait.as_secs(),
                hint: Some(format!(
                    "see `kubectl -n kube-system get pods` and `kubectl -n kube-system describe pods -l k8s-app={}`",
                    if proxy_ok { "kube-dns" } else { "kube-proxy" }
                )),
            });
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}
