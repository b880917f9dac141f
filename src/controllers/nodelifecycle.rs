//! The node lifecycle controller: notices nodes that stop reporting, marks them, taints them,
//! and evicts the pods that do not tolerate that.
//!
//! Mirrors `pkg/controller/nodelifecycle` and the taint-eviction controller: a node whose Lease
//! (`kube-node-lease/<node>`) and Ready heartbeat have not changed for
//! `--node-monitor-grace-period` (as this controller observed them, on its own clock) gets its
//! conditions set to Unknown ("Kubelet stopped posting node status.") and the
//! `node.kubernetes.io/unreachable` taints (NoSchedule and NoExecute); a node that reports
//! Ready=False gets `node.kubernetes.io/not-ready`. Pods on a node with a NoExecute taint they
//! do not tolerate are deleted at once, those tolerating it for `tolerationSeconds` after that.
//! With the API server's DefaultTolerationSeconds admission (on by default) every pod
//! tolerates both taints for 300 s, so a node's pods go five minutes after it went silent.
//! Leaves out zone-aware rate limits of eviction.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::{Node, Pod, Taint};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::jiff::Timestamp;
use kube::api::{Api, DeleteParams, Patch, PatchParams};
use kube::runtime::reflector::Store;
use serde_json::json;
use tokio::sync::Notify;

use super::runner;
use crate::component::events::{Recorder, reference};
use crate::component::{chain, log, now_rfc3339};
use crate::scheduler::filter::tolerates;

pub const UNREACHABLE: &str = "node.kubernetes.io/unreachable";
pub const NOT_READY: &str = "node.kubernetes.io/not-ready";

fn ready_status(n: &Node) -> Option<String> {
    n.status
        .as_ref()?
        .conditions
        .as_ref()?
        .iter()
        .find(|c| c.type_ == "Ready")
        .map(|c| c.status.clone())
}

/// The taints a node should carry for its Ready condition.
pub fn condition_taints(ready: Option<&str>) -> Vec<(&'static str, &'static str)> {
    match ready {
        Some("True") => vec![],
        Some("False") => vec![(NOT_READY, "NoSchedule"), (NOT_READY, "NoExecute")],
        _ => vec![(UNREACHABLE, "NoSchedule"), (UNREACHABLE, "NoExecute")],
    }
}

/// When a pod must leave a node with these NoExecute taints: `None` if never (it tolerates
/// them all forever), else the moment (`now` if it tolerates one not at all).
pub fn eviction_time(pod: &Pod, taints: &[Taint], now: Timestamp) -> Option<Timestamp> {
    let tols = pod
        .spec
        .as_ref()
        .and_then(|s| s.tolerations.clone())
        .unwrap_or_default();
    let mut when: Option<Timestamp> = None;
    for t in taints.iter().filter(|t| t.effect == "NoExecute") {
        let matching: Vec<_> = tols.iter().filter(|tol| tolerates(tol, t)).collect();
        let at = if matching.is_empty() {
            now
        } else if matching.iter().any(|m| m.toleration_seconds.is_none()) {
            continue;
        } else {
            let secs = matching
                .iter()
                .filter_map(|m| m.toleration_seconds)
                .min()
                .unwrap_or(0)
                .max(0);
            let added = t.time_added.as_ref().map(|t| t.0).unwrap_or(now);
            added + k8s_openapi::jiff::SignedDuration::from_secs(secs)
        };
        when = Some(when.map_or(at, |w: Timestamp| w.min(at)));
    }
    when
}

struct Controller {
    client: kube::Client,
    nodes: Store<Node>,
    leases: Store<Lease>,
    pods: Store<Pod>,
    events: Recorder,
    grace: Duration,
    observed: HashMap<String, (String, Instant)>,
}

impl Controller {
    async fn pass(&mut self) {
        let now = Instant::now();
        let api: Api<Node> = Api::all(self.client.clone());
        for n in self.nodes.state() {
            let name = n.metadata.name.clone().unwrap_or_default();
            let lease = self.leases.state().into_iter().find(|l| {
                l.metadata.namespace.as_deref() == Some("kube-node-lease")
                    && l.metadata.name.as_deref() == Some(&name)
            });
            let renew = lease
                .and_then(|l| l.spec.clone()?.renew_time)
                .map(|t| t.0.to_string())
                .unwrap_or_default();
            let beat = n
                .status
                .as_ref()
                .and_then(|s| s.conditions.as_ref())
                .and_then(|cs| cs.iter().find(|c| c.type_ == "Ready"))
                .and_then(|c| c.last_heartbeat_time.as_ref())
                .map(|t| t.0.to_string())
                .unwrap_or_default();
            let sig = format!("{renew}|{beat}");
            let e = self
                .observed
                .entry(name.clone())
                .or_insert((sig.clone(), now));
            if e.0 != sig {
                *e = (sig, now);
            }
            let silent = now.duration_since(e.1) > self.grace;
            let mut ready = ready_status(&n);
            if silent && ready.as_deref() != Some("Unknown") {
                let conditions: Vec<serde_json::Value> = n
                    .status
                    .as_ref()
                    .and_then(|s| s.conditions.clone())
                    .unwrap_or_default()
                    .into_iter()
                    .map(|c| {
                        let mut v = serde_json::to_value(&c).unwrap_or_default();
                        if matches!(
                            c.type_.as_str(),
                            "Ready" | "MemoryPressure" | "DiskPressure" | "PIDPressure"
                        ) {
                            v["status"] = json!("Unknown");
                            v["reason"] = json!("NodeStatusUnknown");
                            v["message"] = json!("Kubelet stopped posting node status.");
                            v["lastTransitionTime"] = json!(now_rfc3339());
                        }
                        v
                    })
                    .collect();
                let conditions = if conditions.iter().any(|c| c["type"] == "Ready") {
                    conditions
                } else {
                    vec![
                        json!({"type": "Ready", "status": "Unknown", "reason": "NodeStatusNeverUpdated",
                        "message": "Kubelet never posted node status.", "lastTransitionTime": now_rfc3339()}),
                    ]
                };
                let patch = json!({"status": {"conditions": conditions}});
                match api
                    .patch_status(&name, &PatchParams::default(), &Patch::Merge(&patch))
                    .await
                {
                    Ok(_) => {
                        ready = Some("Unknown".into());
                        self.events
                            .emit(
                                reference(&*n),
                                "Normal",
                                "NodeNotReady",
                                &format!("Node {name} status is now: NodeNotReady"),
                            )
                            .await;
                    }
                    Err(e) => log(
                        'E',
                        format!("node lifecycle: marking {name} Unknown: {}", chain(&e)),
                    ),
                }
            }
            let want = condition_taints(ready.as_deref());
            let current = n
                .spec
                .as_ref()
                .and_then(|s| s.taints.clone())
                .unwrap_or_default();
            let ours = |t: &Taint| t.key == UNREACHABLE || t.key == NOT_READY;
            let mut taints: Vec<Taint> = current
                .iter()
                .filter(|t| !ours(t) || want.contains(&(t.key.as_str(), t.effect.as_str())))
                .cloned()
                .collect();
            for (k, e) in &want {
                if !taints.iter().any(|t| t.key == *k && t.effect == *e) {
                    taints.push(Taint {
                        key: (*k).into(),
                        effect: (*e).into(),
                        time_added: Some(Time(Timestamp::now())),
                        value: None,
                    });
                }
            }
            if taints != current {
                let patch = json!({"spec": {"taints": taints}});
                if let Err(e) = api
                    .patch(&name, &PatchParams::default(), &Patch::Merge(&patch))
                    .await
                {
                    log(
                        'E',
                        format!("node lifecycle: tainting {name}: {}", chain(&e)),
                    );
                }
            }
            self.evict(&name, &current).await;
        }
    }

    async fn evict(&self, node: &str, taints: &[Taint]) {
        if !taints.iter().any(|t| t.effect == "NoExecute") {
            return;
        }
        let now = Timestamp::now();
        for p in self.pods.state() {
            if p.spec.as_ref().and_then(|s| s.node_name.as_deref()) != Some(node)
                || p.metadata.deletion_timestamp.is_some()
            {
                continue;
            }
            if eviction_time(&p, taints, now).is_some_and(|at| at <= now) {
                let ns = p.metadata.namespace.clone().unwrap_or_default();
                let name = p.metadata.name.clone().unwrap_or_default();
                let api: Api<Pod> = Api::namespaced(self.client.clone(), &ns);
                match api.delete(&name, &DeleteParams::default()).await {
                    Ok(_) => {
                        self.events
                            .emit(
                                reference(&*p),
                                "Normal",
                                "TaintManagerEviction",
                                &format!("Marking for deletion Pod {ns}/{name}"),
                            )
                            .await;
                    }
                    Err(e) => log(
                        'E',
                        format!("node lifecycle: evicting {ns}/{name}: {}", chain(&e)),
                    ),
                }
            }
        }
    }
}

pub async fn run(client: kube::Client, grace: Duration, period: Duration) {
    let wake = Arc::new(Notify::new());
    let nodes = runner::informer(Api::<Node>::all(client.clone()), wake.clone());
    let leases = runner::informer(
        Api::<Lease>::namespaced(client.clone(), "kube-node-lease"),
        wake.clone(),
    );
    let pods = runner::informer(Api::<Pod>::all(client.clone()), wake.clone());
    let ready = vec![
        runner::ready(&nodes),
        runner::ready(&leases),
        runner::ready(&pods),
    ];
    let mut c = Controller {
        events: Recorder::new(client.clone(), "node-controller"),
        client,
        nodes,
        leases,
        pods,
        grace,
        observed: HashMap::new(),
    };
    runner::synced("taint", ready).await;
    loop {
        c.pass().await;
        runner::next(&wake, period).await;
    }
}
