//! What the scheduler knows about a node: the Node and what the pods bound to it request.
//! Mirrors `pkg/scheduler/framework.NodeInfo` (requested and non-zero requested resources,
//! used host ports, pod count, and per pod what the plugins and preemption read: labels for
//! PodTopologySpread, priority and start time for choosing victims); leaves out images,
//! volumes and affinity indexes.

use std::collections::BTreeMap;
use std::sync::Arc;

use k8s_openapi::api::core::v1::{Affinity, Node, Pod};
use k8s_openapi::jiff::Timestamp;

use crate::api::quantity;

/// The condition the scheduler puts on a pod it preempts, and its reason (upstream's
/// `v1.DisruptionTarget` and `v1.PodReasonPreemptionByScheduler`).
pub const DISRUPTION_TARGET: &str = "DisruptionTarget";
pub const PREEMPTION_BY_SCHEDULER: &str = "PreemptionByScheduler";

/// Upstream's defaults for pods that request nothing, used only for scoring, so that
/// request-less pods still spread (`schedutil.DefaultMilliCPURequest`, `DefaultMemoryRequest`).
pub const DEFAULT_MILLI_CPU: i64 = 100;
pub const DEFAULT_MEMORY: i64 = 200 * 1024 * 1024;

/// CPU (millicores), memory (bytes) and pods.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Resources {
    pub milli_cpu: i64,
    pub memory: i64,
    pub pods: i64,
}

/// A host port a pod claims: protocol, host IP and port.
pub type HostPort = (String, String, i32);

/// A pod as the scheduler counts it: its requests, and what plugins and preemption read.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct PodRequests {
    /// Sum of container requests, or the largest init container's if that is more.
    pub requested: Resources,
    /// The same with upstream's defaults for containers that request nothing (for scoring).
    pub non_zero: Resources,
    pub host_ports: Vec<HostPort>,
    /// The pod's labels: what other pods' topology spread constraints count it by.
    pub labels: BTreeMap<String, String>,
    /// The pod's podAffinity and podAntiAffinity, which InterPodAffinity weighs the incoming
    /// pod against (`None` when it has neither).
    pub pod_affinity: Option<Affinity>,
    /// `spec.priority` (0 when unset, as upstream's `PodPriority`).
    pub priority: i32,
    /// `status.startTime`: among victims of equal priority, the one started later goes first.
    pub start_time: Option<Timestamp>,
    /// Being deleted after the scheduler preempted it (upstream's `podTerminatingByPreemption`:
    /// a deletionTimestamp and the DisruptionTarget condition with reason PreemptionByScheduler).
    pub preempted: bool,
}

fn req<'a>(
    map: Option<&'a BTreeMap<String, k8s_openapi::apimachinery::pkg::api::resource::Quantity>>,
    k: &str,
) -> Option<&'a str> {
    map.and_then(|m| m.get(k)).map(|q| q.0.as_str())
}

impl PodRequests {
    pub fn of(pod: &Pod) -> PodRequests {
        let status = pod.status.as_ref();
        let mut out = PodRequests {
            labels: pod.metadata.labels.clone().unwrap_or_default(),
            pod_affinity: pod
                .spec
                .as_ref()
                .and_then(|s| s.affinity.as_ref())
                .filter(|a| a.pod_affinity.is_some() || a.pod_anti_affinity.is_some())
                .map(|a| Affinity {
                    node_affinity: None,
                    ..a.clone()
                }),
            priority: pod.spec.as_ref().and_then(|s| s.priority).unwrap_or(0),
            start_time: status.and_then(|s| s.start_time.as_ref()).map(|t| t.0),
            preempted: pod.metadata.deletion_timestamp.is_some()
                && status
                    .and_then(|s| s.conditions.as_ref())
                    .is_some_and(|cs| {
                        cs.iter().any(|c| {
                            c.type_ == DISRUPTION_TARGET
                                && c.status == "True"
                                && c.reason.as_deref() == Some(PREEMPTION_BY_SCHEDULER)
                        })
                    }),
            ..PodRequests::default()
        };
        let Some(spec) = &pod.spec else {
            return out;
        };
        for c in &spec.containers {
            let r = c.resources.as_ref().and_then(|r| r.requests.as_ref());
            let cpu = req(r, "cpu").and_then(quantity::milli);
            let mem = req(r, "memory").and_then(quantity::value);
            out.requested.milli_cpu += cpu.unwrap_or(0);
            out.requested.memory += mem.unwrap_or(0);
            out.non_zero.milli_cpu += cpu.unwrap_or(DEFAULT_MILLI_CPU);
            out.non_zero.memory += mem.unwrap_or(DEFAULT_MEMORY);
            for p in c.ports.iter().flatten() {
                if let Some(hp) = p.host_port.filter(|hp| *hp > 0) {
                    out.host_ports.push((
                        p.protocol.clone().unwrap_or_else(|| "TCP".into()),
                        p.host_ip.clone().unwrap_or_else(|| "0.0.0.0".into()),
                        hp,
                    ));
                }
            }
        }
        for c in spec.init_containers.iter().flatten() {
            let r = c.resources.as_ref().and_then(|r| r.requests.as_ref());
            let cpu = req(r, "cpu").and_then(quantity::milli).unwrap_or(0);
            let mem = req(r, "memory").and_then(quantity::value).unwrap_or(0);
            out.requested.milli_cpu = out.requested.milli_cpu.max(cpu);
            out.requested.memory = out.requested.memory.max(mem);
        }
        out.requested.pods = 1;
        out.non_zero.pods = 1;
        out
    }
}

/// A node and the sum of what its pods request.
#[derive(Debug, Clone)]
pub struct NodeInfo {
    pub node: Arc<Node>,
    pub allocatable: Resources,
    pub requested: Resources,
    pub non_zero_requested: Resources,
    pub used_ports: Vec<HostPort>,
    /// Pods counted here, by namespace/name.
    pub pods: BTreeMap<String, PodRequests>,
}

impl NodeInfo {
    pub fn new(node: Arc<Node>) -> NodeInfo {
        let alloc = node
            .status
            .as_ref()
            .and_then(|s| s.allocatable.as_ref().or(s.capacity.as_ref()));
        let allocatable = Resources {
            milli_cpu: req(alloc, "cpu").and_then(quantity::milli).unwrap_or(0),
            memory: req(alloc, "memory").and_then(quantity::value).unwrap_or(0),
            pods: req(alloc, "pods").and_then(quantity::value).unwrap_or(0),
        };
        NodeInfo {
            node,
            allocatable,
            requested: Resources::default(),
            non_zero_requested: Resources::default(),
            used_ports: Vec::new(),
            pods: BTreeMap::new(),
        }
    }

    pub fn name(&self) -> &str {
        self.node.metadata.name.as_deref().unwrap_or_default()
    }

    /// Counts a pod on this node (once: a pod already counted is not counted twice).
    pub fn add_pod(&mut self, key: &str, r: &PodRequests) {
        if self.pods.contains_key(key) {
            return;
        }
        self.pods.insert(key.to_owned(), r.clone());
        add(&mut self.requested, &r.requested, 1);
        add(&mut self.non_zero_requested, &r.non_zero, 1);
        self.used_ports.extend(r.host_ports.iter().cloned());
    }

    /// Stops counting a pod here, by what was counted when it was added.
    pub fn remove_pod(&mut self, key: &str) {
        let Some(r) = self.pods.remove(key) else {
            return;
        };
        add(&mut self.requested, &r.requested, -1);
        add(&mut self.non_zero_requested, &r.non_zero, -1);
        for p in &r.host_ports {
            if let Some(i) = self.used_ports.iter().position(|u| u == p) {
                self.used_ports.swap_remove(i);
            }
        }
    }
}

fn add(to: &mut Resources, r: &Resources, sign: i64) {
    to.milli_cpu += sign * r.milli_cpu;
    to.memory += sign * r.memory;
    to.pods += sign * r.pods;
}
