//! Filter plugins: may this pod run on this node? Pure functions of the pod and a NodeInfo.
//!
//! Mirrors `pkg/scheduler/framework/plugins` (NodeName, NodeUnschedulable, TaintToleration,
//! NodeAffinity with nodeSelector, NodeResourcesFit on requests, NodePorts) and their reason
//! strings, which the FailedScheduling message counts. PodTopologySpread and InterPodAffinity
//! need every node's counts, so they live in [`super::spread`] and [`super::affinity`] and run
//! last. Leaves out the volume plugins.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{
    NodeSelectorRequirement, NodeSelectorTerm, Pod, Taint, Toleration,
};

use super::node_info::{NodeInfo, PodRequests};

/// Why a filter plugin rejected a node, in upstream's words.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rejection {
    pub plugin: &'static str,
    pub reasons: Vec<String>,
    /// Upstream's UnschedulableAndUnresolvable: evicting other pods would not help.
    pub unresolvable: bool,
}

pub const FILTERS: &[&str] = &[
    "NodeUnschedulable",
    "NodeName",
    "TaintToleration",
    "NodeAffinity",
    "NodePorts",
    "NodeResourcesFit",
    "PodTopologySpread",
    "InterPodAffinity",
];

/// Runs every filter in upstream's order; the first that rejects the node decides.
pub fn run(pod: &Pod, r: &PodRequests, n: &NodeInfo) -> Result<(), Rejection> {
    node_unschedulable(pod, n)?;
    node_name(pod, n)?;
    taint_toleration(pod, n)?;
    node_affinity(pod, n)?;
    node_ports(r, n)?;
    node_resources_fit(r, n)
}

fn reject(plugin: &'static str, reason: impl Into<String>, unresolvable: bool) -> Rejection {
    Rejection {
        plugin,
        reasons: vec![reason.into()],
        unresolvable,
    }
}

pub fn node_name(pod: &Pod, n: &NodeInfo) -> Result<(), Rejection> {
    match pod.spec.as_ref().and_then(|s| s.node_name.as_deref()) {
        Some(want) if !want.is_empty() && want != n.name() => Err(reject(
            "NodeName",
            "node(s) didn't match the requested node name",
            true,
        )),
        _ => Ok(()),
    }
}

fn tolerations(pod: &Pod) -> &[Toleration] {
    pod.spec
        .as_ref()
        .and_then(|s| s.tolerations.as_deref())
        .unwrap_or_default()
}

pub fn node_unschedulable(pod: &Pod, n: &NodeInfo) -> Result<(), Rejection> {
    if n.node.spec.as_ref().and_then(|s| s.unschedulable) != Some(true) {
        return Ok(());
    }
    let taint = Taint {
        key: "node.kubernetes.io/unschedulable".into(),
        effect: "NoSchedule".into(),
        ..Default::default()
    };
    if !tolerations(pod).iter().any(|t| tolerates(t, &taint)) {
        return Err(reject(
            "NodeUnschedulable",
            "node(s) were unschedulable",
            true,
        ));
    }
    Ok(())
}

/// Whether a toleration tolerates a taint (`v1helper.ToleratesTaint`).
pub fn tolerates(t: &Toleration, taint: &Taint) -> bool {
    if let Some(e) = t.effect.as_deref().filter(|e| !e.is_empty()) {
        if e != taint.effect {
            return false;
        }
    }
    let key = t.key.as_deref().unwrap_or_default();
    if !key.is_empty() && key != taint.key {
        return false;
    }
    match t.operator.as_deref().unwrap_or("Equal") {
        "Exists" => true,
        "Equal" => {
            !key.is_empty()
                && t.value.as_deref().unwrap_or_default()
                    == taint.value.as_deref().unwrap_or_default()
        }
        _ => false,
    }
}

pub fn node_taints(n: &NodeInfo) -> &[Taint] {
    n.node
        .spec
        .as_ref()
        .and_then(|s| s.taints.as_deref())
        .unwrap_or_default()
}

pub fn taint_toleration(pod: &Pod, n: &NodeInfo) -> Result<(), Rejection> {
    let tols = tolerations(pod);
    let untolerated = node_taints(n).iter().find(|taint| {
        matches!(taint.effect.as_str(), "NoSchedule" | "NoExecute")
            && !tols.iter().any(|t| tolerates(t, taint))
    });
    match untolerated {
        Some(t) => Err(reject(
            "TaintToleration",
            format!(
                "node(s) had untolerated taint {{{}: {}}}",
                t.key,
                t.value.as_deref().unwrap_or_default()
            ),
            true,
        )),
        None => Ok(()),
    }
}

fn requirement_matches(r: &NodeSelectorRequirement, value: Option<&str>) -> bool {
    let values = r.values.as_deref().unwrap_or_default();
    let num = |s: &str| s.parse::<i64>().ok();
    match r.operator.as_str() {
        "In" => value.is_some_and(|v| values.iter().any(|x| x == v)),
        "NotIn" => value.is_none_or(|v| !values.iter().any(|x| x == v)),
        "Exists" => value.is_some(),
        "DoesNotExist" => value.is_none(),
        "Gt" | "Lt" => {
            let (Some(have), Some(want)) =
                (value.and_then(num), values.first().and_then(|v| num(v)))
            else {
                return false;
            };
            if r.operator == "Gt" {
                have > want
            } else {
                have < want
            }
        }
        _ => false,
    }
}

/// Whether a node selector term matches a node's labels and name (all requirements hold).
pub fn term_matches(
    term: &NodeSelectorTerm,
    labels: &BTreeMap<String, String>,
    name: &str,
) -> bool {
    let exprs = term.match_expressions.as_deref().unwrap_or_default();
    let fields = term.match_fields.as_deref().unwrap_or_default();
    if exprs.is_empty() && fields.is_empty() {
        return false;
    }
    exprs
        .iter()
        .all(|r| requirement_matches(r, labels.get(&r.key).map(String::as_str)))
        && fields
            .iter()
            .all(|r| r.key == "metadata.name" && requirement_matches(r, Some(name)))
}

static NO_LABELS: BTreeMap<String, String> = BTreeMap::new();

pub fn node_labels(n: &NodeInfo) -> &BTreeMap<String, String> {
    n.node.metadata.labels.as_ref().unwrap_or(&NO_LABELS)
}

pub fn node_affinity(pod: &Pod, n: &NodeInfo) -> Result<(), Rejection> {
    let Some(spec) = &pod.spec else {
        return Ok(());
    };
    let labels = node_labels(n);
    let fail = || {
        Err(reject(
            "NodeAffinity",
            "node(s) didn't match Pod's node affinity/selector",
            true,
        ))
    };
    for (k, v) in spec.node_selector.iter().flatten() {
        if labels.get(k) != Some(v) {
            return fail();
        }
    }
    let required = spec
        .affinity
        .as_ref()
        .and_then(|a| a.node_affinity.as_ref())
        .and_then(|a| {
            a.required_during_scheduling_ignored_during_execution
                .as_ref()
        });
    if let Some(req) = required {
        if !req
            .node_selector_terms
            .iter()
            .any(|t| term_matches(t, labels, n.name()))
        {
            return fail();
        }
    }
    Ok(())
}

pub fn node_ports(r: &PodRequests, n: &NodeInfo) -> Result<(), Rejection> {
    let conflict = r.host_ports.iter().any(|(proto, ip, port)| {
        n.used_ports.iter().any(|(p2, ip2, port2)| {
            proto == p2 && port == port2 && (ip == ip2 || ip == "0.0.0.0" || ip2 == "0.0.0.0")
        })
    });
    if conflict {
        return Err(reject(
            "NodePorts",
            "node(s) didn't have free ports for the requested pod ports",
            false,
        ));
    }
    Ok(())
}

pub fn node_resources_fit(r: &PodRequests, n: &NodeInfo) -> Result<(), Rejection> {
    let mut reasons = Vec::new();
    if n.requested.pods + 1 > n.allocatable.pods {
        reasons.push("Too many pods".to_owned());
    }
    let (want, have, alloc) = (&r.requested, &n.requested, &n.allocatable);
    if want.milli_cpu > 0 && have.milli_cpu + want.milli_cpu > alloc.milli_cpu {
        reasons.push("Insufficient cpu".to_owned());
    }
    if want.memory > 0 && have.memory + want.memory > alloc.memory {
        reasons.push("Insufficient memory".to_owned());
    }
    if reasons.is_empty() {
        return Ok(());
    }
    Err(Rejection {
        plugin: "NodeResourcesFit",
        reasons,
        unresolvable: false,
    })
}
