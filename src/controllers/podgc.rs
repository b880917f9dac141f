//! The pod garbage collector: removes pods that nothing else would ever remove.
//!
//! Mirrors `pkg/controller/podgc`: a pod bound to a node that no longer exists is *orphaned*
//! (no kubelet will ever confirm its deletion). After the node has been missing from the
//! cache for the quarantine (40 s, as upstream) and a GET confirms it is gone, the pod is
//! marked Failed with the `DisruptionTarget` condition (reason `DeletionByPodGC`) and deleted
//! with grace period 0. A pod being deleted that was never scheduled is deleted at once
//! (`gcUnscheduledTerminating`). Leaves out `--terminated-pod-gc-threshold` (keeping at most
//! N finished pods) and pods terminating on out-of-service nodes.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::{Node, Pod};
use kube::api::{Api, DeleteParams, Patch, PatchParams};
use kube::runtime::reflector::Store;
use serde_json::json;
use tokio::sync::Notify;

use super::runner;
use crate::component::{chain, log, now_rfc3339};

/// How long a node must be missing before its pods count as orphaned (upstream's
/// `quarantineTime`): a node object being recreated, or a cache behind, is not a deleted node.
pub const QUARANTINE: Duration = Duration::from_secs(40);
/// How often the collector looks even without events (upstream's `gcCheckPeriod`).
pub const CHECK_PERIOD: Duration = Duration::from_secs(20);

/// Pods bound to a node not in `nodes`, with that node's name.
pub fn orphaned<'a>(pods: &'a [Arc<Pod>], nodes: &[Arc<Node>]) -> Vec<(&'a Pod, String)> {
    pods.iter()
        .filter_map(|p| {
            let n = p
                .spec
                .as_ref()?
                .node_name
                .as_ref()
                .filter(|n| !n.is_empty())?;
            let known = nodes
                .iter()
                .any(|node| node.metadata.name.as_ref() == Some(n));
            (!known).then(|| (p.as_ref(), n.clone()))
        })
        .collect()
}

/// Pods being deleted that were never bound: no kubelet will finish their deletion.
pub fn unscheduled_terminating(pods: &[Arc<Pod>]) -> Vec<&Pod> {
    pods.iter()
        .filter(|p| {
            p.metadata.deletion_timestamp.is_some()
                && p.spec
                    .as_ref()
                    .and_then(|s| s.node_name.as_deref())
                    .is_none_or(str::is_empty)
        })
        .map(Arc::as_ref)
        .collect()
}

struct Controller {
    client: kube::Client,
    pods: Store<Pod>,
    nodes: Store<Node>,
    /// When each missing node was first seen missing.
    missing: HashMap<String, Instant>,
}

impl Controller {
    async fn pass(&mut self) {
        let (pods, nodes) = (self.pods.state(), self.nodes.state());
        let orphans = orphaned(&pods, &nodes);
        self.missing
            .retain(|n, _| orphans.iter().any(|(_, on)| on == n));
        let nodes_api: Api<Node> = Api::all(self.client.clone());
        let mut gone: HashMap<String, bool> = HashMap::new();
        for (pod, node) in orphans {
            let since = *self
                .missing
                .entry(node.clone())
                .or_insert_with(Instant::now);
            if since.elapsed() < QUARANTINE {
                continue;
            }
            let is_gone = match gone.get(&node) {
                Some(g) => *g,
                None => {
                    let g = matches!(nodes_api.get_opt(&node).await, Ok(None));
                    gone.insert(node.clone(), g);
                    g
                }
            };
            if is_gone {
                self.delete(pod, &node, true).await;
            }
        }
        for pod in unscheduled_terminating(&pods) {
            self.delete(pod, "", false).await;
        }
    }

    async fn delete(&self, pod: &Pod, node: &str, mark_failed: bool) {
        let ns = pod.metadata.namespace.clone().unwrap_or_default();
        let name = pod.metadata.name.clone().unwrap_or_default();
        let api: Api<Pod> = Api::namespaced(self.client.clone(), &ns);
        if mark_failed && pod.metadata.deletion_timestamp.is_none() {
            log(
                'I',
                format!(
                    "Found orphaned Pod assigned to the Node, deleting pod=\"{ns}/{name}\" node=\"{node}\""
                ),
            );
            let patch = json!({"status": {"phase": "Failed", "conditions": [{
                "type": "DisruptionTarget", "status": "True", "reason": "DeletionByPodGC",
                "message": "PodGC: node no longer exists",
                "lastTransitionTime": now_rfc3339(),
            }]}});
            if let Err(e) = api
                .patch_status(&name, &PatchParams::default(), &Patch::Merge(&patch))
                .await
            {
                log(
                    'W',
                    format!("podgc: marking {ns}/{name} failed: {}", chain(&e)),
                );
            }
        }
        let dp = DeleteParams {
            grace_period_seconds: Some(0),
            ..Default::default()
        };
        match api.delete(&name, &dp).await {
            Ok(_) => log(
                'I',
                format!("Forced deletion of orphaned Pod {ns}/{name} succeeded"),
            ),
            Err(kube::Error::Api(s)) if s.code == 404 => {}
            Err(e) => log('W', format!("podgc: deleting {ns}/{name}: {}", chain(&e))),
        }
    }
}

pub async fn run(client: kube::Client) {
    let wake = Arc::new(Notify::new());
    let pods = runner::informer(Api::<Pod>::all(client.clone()), wake.clone());
    let nodes = runner::informer(Api::<Node>::all(client.clone()), wake.clone());
    let ready = vec![runner::ready(&pods), runner::ready(&nodes)];
    let mut c = Controller {
        client,
        pods,
        nodes,
        missing: HashMap::new(),
    };
    runner::synced("GC", ready).await;
    loop {
        c.pass().await;
        runner::next(&wake, CHECK_PERIOD).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pod(name: &str, node: Option<&str>, deleting: bool) -> Arc<Pod> {
        let mut v = json!({"metadata": {"name": name}, "spec": {"containers": []}});
        if let Some(n) = node {
            v["spec"]["nodeName"] = json!(n);
        }
        if deleting {
            v["metadata"]["deletionTimestamp"] = json!("2026-01-01T00:00:00Z");
        }
        Arc::new(serde_json::from_value(v).unwrap())
    }

    #[test]
    fn orphans_are_pods_on_missing_nodes_and_unbound_ones_being_deleted() {
        let nodes: Vec<Arc<Node>> = vec![Arc::new(
            serde_json::from_value(json!({"metadata": {"name": "a"}})).unwrap(),
        )];
        let pods = vec![
            pod("on-a", Some("a"), false),
            pod("on-b", Some("b"), false),
            pod("pending", None, false),
            pod("pending-deleted", None, true),
        ];
        let o: Vec<(&str, String)> = orphaned(&pods, &nodes)
            .into_iter()
            .map(|(p, n)| (p.metadata.name.as_deref().unwrap(), n))
            .collect();
        assert_eq!(o, [("on-b", "b".to_owned())]);
        let u: Vec<&str> = unscheduled_terminating(&pods)
            .iter()
            .map(|p| p.metadata.name.as_deref().unwrap())
            .collect();
        assert_eq!(u, ["pending-deleted"]);
    }
}
