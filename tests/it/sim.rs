//! A control plane for scenario tests: the API server from the harness (klab-store underneath),
//! klab's scheduler and controller-manager as real processes, simulated nodes (Node objects
//! created through the API and marked Ready by the test) and a simulated kubelet.
//!
//! The simulated kubelet is the test's stand-in for kubemark's hollow kubelet, and says so:
//! for pods bound to simulated nodes it writes the status a kubelet would (Running, Ready, a
//! pod IP) and completes graceful deletions (a kubelet deletes with grace 0 once containers
//! stopped). No container runs; nothing here claims one did.

use std::time::{Duration, Instant};

use futures::StreamExt;
use k8s_openapi::api::core::v1::{Node, Pod};
use kube::api::{Api, DeleteParams, Patch, PatchParams, PostParams};
use kube::runtime::watcher;
use serde_json::json;

use crate::apiserver::harness::{Backend, Cluster, Proc};

pub struct Plane {
    pub cluster: Cluster,
    pub rt: tokio::runtime::Runtime,
    pub client: kube::Client,
}

impl Plane {
    /// An API server on klab-store, or `None` (skip) outside CI when a program is missing.
    pub fn start() -> Option<Plane> {
        Self::start_with(&[])
    }

    /// [`Plane::start`] with extra API server flags.
    pub fn start_with(apiserver_flags: &[&str]) -> Option<Plane> {
        let cluster = Cluster::start(Backend::KlabStore, apiserver_flags)?;
        let rt = tokio::runtime::Runtime::new().unwrap();
        let client = rt
            .block_on(klab::client::from_kubeconfig(&cluster.kubeconfig))
            .unwrap();
        Some(Plane {
            cluster,
            rt,
            client,
        })
    }

    /// Starts `klab <component> --kubeconfig=… ARGS`, logging to `<component>-<tag>.log`.
    pub fn component(&self, component: &str, tag: &str, args: &[&str]) -> Proc {
        self.cluster.component(component, tag, args)
    }

    pub fn log(&self, component: &str, tag: &str) -> String {
        self.cluster.component_log(component, tag)
    }

    /// Creates simulated nodes, Ready, with this much CPU and memory.
    pub fn nodes(&self, names: &[&str], cpu: &str, memory: &str, taints: serde_json::Value) {
        let api: Api<Node> = Api::all(self.client.clone());
        for name in names {
            let node: Node = serde_json::from_value(json!({
                "metadata": {"name": name, "labels": {"kubernetes.io/hostname": name}},
                "spec": {"taints": taints},
                "status": {
                    "capacity": {"cpu": cpu, "memory": memory, "pods": "110"},
                    "allocatable": {"cpu": cpu, "memory": memory, "pods": "110"},
                    "conditions": [{"type": "Ready", "status": "True", "reason": "KubeletReady",
                                    "message": "simulated node", "lastHeartbeatTime": "2026-01-01T00:00:00Z"}],
                },
            }))
            .unwrap();
            self.rt
                .block_on(api.create(&PostParams::default(), &node))
                .unwrap();
        }
    }

    /// Runs the simulated kubelet for every node in the background.
    pub fn kubelet(&self) {
        let client = self.client.clone();
        self.rt.spawn(async move {
            let all: Api<Pod> = Api::all(client.clone());
            let stream = watcher::watcher(all, watcher::Config::default());
            tokio::pin!(stream);
            let mut ip = 0u32;
            while let Some(ev) = stream.next().await {
                let p = match ev {
                    Ok(watcher::Event::Apply(p) | watcher::Event::InitApply(p)) => p,
                    Ok(_) => continue,
                    Err(_) => {
                        // The API server is gone (the test ended) or restarting: wait, as
                        // a kubelet's informer backs off.
                        tokio::time::sleep(std::time::Duration::from_millis(500)).await;
                        continue;
                    }
                };
                let Some(_node) = p.spec.as_ref().and_then(|s| s.node_name.clone()) else {
                    continue;
                };
                let ns = p.metadata.namespace.clone().unwrap_or_default();
                let name = p.metadata.name.clone().unwrap_or_default();
                let api: Api<Pod> = Api::namespaced(client.clone(), &ns);
                if p.metadata.deletion_timestamp.is_some() {
                    let _ = api.delete(&name, &DeleteParams { grace_period_seconds: Some(0), ..Default::default() }).await;
                    continue;
                }
                if p.status.as_ref().and_then(|s| s.pod_ip.as_ref()).is_none() {
                    ip += 1;
                    let patch = json!({"status": {
                        "phase": "Running",
                        "podIP": format!("10.244.{}.{}", ip / 250, ip % 250 + 2),
                        "conditions": [
                            {"type": "Ready", "status": "True", "lastTransitionTime": k8s_openapi::jiff::Timestamp::now().strftime("%Y-%m-%dT%H:%M:%SZ").to_string()},
                            {"type": "PodScheduled", "status": "True"},
                        ],
                    }});
                    let _ = api.patch_status(&name, &PatchParams::default(), &Patch::Merge(&patch)).await;
                }
            }
        });
    }

    pub fn pods(&self, ns: &str) -> Vec<Pod> {
        let api: Api<Pod> = Api::namespaced(self.client.clone(), ns);
        self.rt
            .block_on(api.list(&Default::default()))
            .map(|l| l.items)
            .unwrap_or_default()
    }

    pub fn apply_json(&self, path: &str, v: serde_json::Value) {
        let (code, body) = self.cluster.curl(
            Some("admin"),
            "POST",
            path,
            "application/json",
            Some(v.to_string().as_bytes()),
        );
        assert!(code == 201 || code == 200, "POST {path}: {code} {body}");
    }
}

/// Polls `f` until it is true or `secs` pass; returns whether it became true.
pub fn eventually(secs: u64, mut f: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + Duration::from_secs(secs);
    while Instant::now() < deadline {
        if f() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    f()
}

pub fn node_of(p: &Pod) -> Option<String> {
    p.spec.as_ref().and_then(|s| s.node_name.clone())
}

pub fn live(pods: &[Pod]) -> Vec<&Pod> {
    pods.iter()
        .filter(|p| p.metadata.deletion_timestamp.is_none())
        .collect()
}
