//! From a Pod to CRI requests: the sandbox and container configs, the labels that let a
//! restarted kubelet find its containers again, and the container spec hash. Mirrors
//! upstream's `kuberuntime_sandbox.go`, `kuberuntime_container.go` and `labels.go` (the
//! `io.kubernetes.*` label and annotation names are upstream's; the sandbox's DNS config comes
//! from `kubelet::dns`); leaves out volumes, security contexts (but `privileged`) and
//! resources.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use k8s_cri::v1 as cri;
use k8s_openapi::api::core::v1::{Container, Pod};

pub const POD_NAME: &str = "io.kubernetes.pod.name";
pub const POD_NAMESPACE: &str = "io.kubernetes.pod.namespace";
pub const POD_UID: &str = "io.kubernetes.pod.uid";
pub const CONTAINER_NAME: &str = "io.kubernetes.container.name";
pub const CONTAINER_HASH: &str = "io.kubernetes.container.hash";
pub const GRACE: &str = "io.kubernetes.pod.terminationGracePeriod";
/// klab marks each sandbox with its node, so kubelets sharing one containerd (`klab up
/// --workers` on one host) leave each other's pods alone.
pub const NODE: &str = "klab.dev/node";
/// klab marks init containers so a restarted kubelet tells them from app containers.
pub const INIT: &str = "klab.dev/init-container";

/// The names that identify a pod everywhere in the kubelet.
#[derive(Debug, Clone)]
pub struct PodRef {
    pub namespace: String,
    pub name: String,
    pub uid: String,
}

impl PodRef {
    pub fn of(pod: &Pod) -> PodRef {
        PodRef {
            namespace: pod
                .metadata
                .namespace
                .clone()
                .unwrap_or_else(|| "default".into()),
            name: pod.metadata.name.clone().unwrap_or_default(),
            uid: pod.metadata.uid.clone().unwrap_or_default(),
        }
    }

    /// `ns/name`, as kubectl and the kubelet's log lines name a pod.
    pub fn key(&self) -> String {
        format!("{}/{}", self.namespace, self.name)
    }

    fn labels(&self) -> HashMap<String, String> {
        HashMap::from([
            (POD_NAME.into(), self.name.clone()),
            (POD_NAMESPACE.into(), self.namespace.clone()),
            (POD_UID.into(), self.uid.clone()),
        ])
    }

    /// The pod's data folder under --root-dir, as upstream's `pods/<uid>`.
    pub fn dir(&self, root: &Path) -> PathBuf {
        root.join("pods").join(&self.uid)
    }

    /// The pod's log folder, as upstream's `/var/log/pods/<ns>_<name>_<uid>`, kept under
    /// --root-dir so the kubelet writes nowhere else.
    pub fn log_dir(&self, root: &Path) -> PathBuf {
        root.join("logs")
            .join(format!("{}_{}_{}", self.namespace, self.name, self.uid))
    }
}

pub fn host_network(pod: &Pod) -> bool {
    pod.spec
        .as_ref()
        .and_then(|s| s.host_network)
        .unwrap_or(false)
}

/// The pod's terminationGracePeriodSeconds (default 30, as upstream).
pub fn grace_period(pod: &Pod) -> i64 {
    pod.metadata
        .deletion_grace_period_seconds
        .unwrap_or_else(|| {
            pod.spec
                .as_ref()
                .and_then(|s| s.termination_grace_period_seconds)
                .unwrap_or(30)
        })
}

/// A hash of the container's spec: when it changes, the container is replaced (upstream hashes
/// the same struct with fnv32a; any stable digest serves).
pub fn container_hash(c: &Container) -> String {
    let bytes = serde_json::to_vec(c).unwrap_or_default();
    let d = ring::digest::digest(&ring::digest::SHA256, &bytes);
    d.as_ref()[..4].iter().map(|b| format!("{b:02x}")).collect()
}

/// `RunPodSandbox`'s config: the pause container with the pod's hostname, labels, ports and
/// resolv.conf.
pub fn sandbox_config(
    pod: &Pod,
    attempt: u32,
    root: &Path,
    dns: &super::dns::Settings,
) -> cri::PodSandboxConfig {
    let r = PodRef::of(pod);
    let host = host_network(pod);
    let namespace_options = cri::NamespaceOption {
        network: if host {
            cri::NamespaceMode::Node as i32
        } else {
            cri::NamespaceMode::Pod as i32
        },
        pid: cri::NamespaceMode::Container as i32,
        ipc: cri::NamespaceMode::Pod as i32,
        ..Default::default()
    };
    let port_mappings = pod
        .spec
        .iter()
        .flat_map(|s| &s.containers)
        .flat_map(|c| c.ports.iter().flatten())
        .filter(|p| p.host_port.unwrap_or(0) > 0)
        .map(|p| cri::PortMapping {
            protocol: match p.protocol.as_deref() {
                Some("UDP") => cri::Protocol::Udp as i32,
                Some("SCTP") => cri::Protocol::Sctp as i32,
                _ => cri::Protocol::Tcp as i32,
            },
            container_port: p.container_port,
            host_port: p.host_port.unwrap_or(0),
            host_ip: p.host_ip.clone().unwrap_or_default(),
        })
        .collect();
    cri::PodSandboxConfig {
        metadata: Some(cri::PodSandboxMetadata {
            name: r.name.clone(),
            uid: r.uid.clone(),
            namespace: r.namespace.clone(),
            attempt,
        }),
        // A host-network pod shares the node's UTS namespace: setting a hostname fails.
        hostname: if host {
            String::new()
        } else {
            pod.spec
                .as_ref()
                .and_then(|s| s.hostname.clone())
                .unwrap_or_else(|| r.name.clone())
        },
        log_directory: r.log_dir(root).display().to_string(),
        dns_config: Some(super::dns::pod_dns(pod, dns)),
        port_mappings,
        labels: {
            let mut l = r.labels();
            if let Some(n) = pod.spec.as_ref().and_then(|s| s.node_name.clone()) {
                l.insert(NODE.into(), n);
            }
            l
        },
        annotations: pod
            .metadata
            .annotations
            .clone()
            .unwrap_or_default()
            .into_iter()
            .collect(),
        linux: Some(cri::LinuxPodSandboxConfig {
            security_context: Some(cri::LinuxSandboxSecurityContext {
                namespace_options: Some(namespace_options),
                privileged: any_privileged(pod),
                ..Default::default()
            }),
            ..Default::default()
        }),
        ..Default::default()
    }
}

/// `CreateContainer`'s config. The log path is relative to the sandbox's log folder:
/// `<container>/<attempt>.log`, as upstream.
pub fn container_config(
    pod: &Pod,
    c: &Container,
    attempt: u32,
    init: bool,
) -> cri::ContainerConfig {
    let r = PodRef::of(pod);
    let mut labels = r.labels();
    labels.insert(CONTAINER_NAME.into(), c.name.clone());
    if init {
        labels.insert(INIT.into(), "true".into());
    }
    let annotations = HashMap::from([
        (CONTAINER_HASH.into(), container_hash(c)),
        (GRACE.into(), grace_period(pod).to_string()),
    ]);
    cri::ContainerConfig {
        metadata: Some(cri::ContainerMetadata {
            name: c.name.clone(),
            attempt,
        }),
        image: Some(cri::ImageSpec {
            image: c.image.clone().unwrap_or_default(),
            ..Default::default()
        }),
        command: c.command.clone().unwrap_or_default(),
        args: c.args.clone().unwrap_or_default(),
        working_dir: c.working_dir.clone().unwrap_or_default(),
        // The environment needs the API (valueFrom, envFrom): see `kubelet::env`.
        labels,
        annotations,
        log_path: format!("{}/{attempt}.log", c.name),
        stdin: c.stdin.unwrap_or(false),
        stdin_once: c.stdin_once.unwrap_or(false),
        tty: c.tty.unwrap_or(false),
        linux: Some(cri::LinuxContainerConfig {
            security_context: privileged(c).then(|| cri::LinuxContainerSecurityContext {
                privileged: true,
                ..Default::default()
            }),
            ..Default::default()
        }),
        ..Default::default()
    }
}

/// `securityContext.privileged` (kube-proxy needs it to program iptables).
pub fn privileged(c: &Container) -> bool {
    c.security_context
        .as_ref()
        .and_then(|s| s.privileged)
        .unwrap_or(false)
}

fn any_privileged(pod: &Pod) -> bool {
    pod.spec
        .iter()
        .flat_map(|s| {
            s.containers
                .iter()
                .chain(s.init_containers.iter().flatten())
        })
        .any(privileged)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pod(json: serde_json::Value) -> Pod {
        serde_json::from_value(json).unwrap()
    }

    #[test]
    fn a_changed_image_changes_the_hash() {
        let a: Container =
            serde_json::from_value(serde_json::json!({"name": "c", "image": "busybox"})).unwrap();
        let mut b = a.clone();
        assert_eq!(container_hash(&a), container_hash(&b));
        b.image = Some("busybox:stable".into());
        assert_ne!(container_hash(&a), container_hash(&b));
    }

    #[test]
    fn host_network_pods_get_no_hostname() {
        let p = pod(serde_json::json!({
            "metadata": {"name": "p", "namespace": "ns", "uid": "u"},
            "spec": {"hostNetwork": true, "containers": [{"name": "c", "ports": [{"containerPort": 80, "hostPort": 8080}]}]}
        }));
        let c = sandbox_config(&p, 0, Path::new("/r"), &Default::default());
        assert_eq!(c.hostname, "");
        assert_eq!(c.port_mappings[0].host_port, 8080);
        assert_eq!(c.labels[POD_UID], "u");
        assert_eq!(c.log_directory, "/r/logs/ns_p_u");
    }
}
