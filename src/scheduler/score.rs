//! Score plugins: how good is each feasible node? Pure functions, each giving 0–100 per node,
//! normalized over all feasible nodes where upstream normalizes, then weighted.
//!
//! Mirrors `pkg/scheduler/framework/plugins`: NodeResourcesFit with the LeastAllocated
//! strategy (weight 1), NodeResourcesBalancedAllocation (1), TaintToleration (3),
//! NodeAffinity's preferred terms (2), PodTopologySpread (2, in [`super::spread`]) and
//! InterPodAffinity (2, in [`super::affinity`]), upstream's default weights. Leaves out
//! ImageLocality.

use k8s_openapi::api::core::v1::Pod;

use super::filter::{node_labels, node_taints, term_matches, tolerates};
use super::node_info::{NodeInfo, PodRequests};

pub const MAX_NODE_SCORE: i64 = 100;

/// The score plugins with their weights, in the order they are shown.
pub const SCORES: &[(&str, i64)] = &[
    ("NodeResourcesFit", 1),
    ("NodeResourcesBalancedAllocation", 1),
    ("TaintToleration", 3),
    ("NodeAffinity", 2),
    ("PodTopologySpread", 2),
    ("InterPodAffinity", 2),
];

/// Every plugin's normalized score (before weighting) for one node, and the weighted total.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeScore {
    pub node: String,
    pub plugins: Vec<(&'static str, i64)>,
    pub total: i64,
}

fn least_allocated_one(requested: i64, capacity: i64) -> i64 {
    if capacity <= 0 || requested > capacity {
        return 0;
    }
    (capacity - requested) * MAX_NODE_SCORE / capacity
}

/// LeastAllocated: the free share of CPU and memory after placing the pod, averaged.
pub fn least_allocated(r: &PodRequests, n: &NodeInfo) -> i64 {
    let cpu = least_allocated_one(
        n.non_zero_requested.milli_cpu + r.non_zero.milli_cpu,
        n.allocatable.milli_cpu,
    );
    let mem = least_allocated_one(
        n.non_zero_requested.memory + r.non_zero.memory,
        n.allocatable.memory,
    );
    (cpu + mem) / 2
}

/// BalancedAllocation: how close the CPU and memory shares are after placing the pod.
pub fn balanced_allocation(r: &PodRequests, n: &NodeInfo) -> i64 {
    let frac = |req: i64, cap: i64| {
        if cap <= 0 {
            1.0
        } else {
            (req as f64 / cap as f64).min(1.0)
        }
    };
    let cpu = frac(
        n.non_zero_requested.milli_cpu + r.non_zero.milli_cpu,
        n.allocatable.milli_cpu,
    );
    let mem = frac(
        n.non_zero_requested.memory + r.non_zero.memory,
        n.allocatable.memory,
    );
    let std = (cpu - mem).abs() / 2.0;
    ((1.0 - std) * MAX_NODE_SCORE as f64) as i64
}

/// TaintToleration, raw: how many PreferNoSchedule taints the pod does not tolerate.
pub fn intolerable_prefer_no_schedule(pod: &Pod, n: &NodeInfo) -> i64 {
    let tols = pod
        .spec
        .as_ref()
        .and_then(|s| s.tolerations.as_deref())
        .unwrap_or_default();
    node_taints(n)
        .iter()
        .filter(|t| t.effect == "PreferNoSchedule" && !tols.iter().any(|tol| tolerates(tol, t)))
        .count() as i64
}

/// NodeAffinity, raw: the sum of the weights of the preferred terms the node matches.
pub fn preferred_affinity(pod: &Pod, n: &NodeInfo) -> i64 {
    let terms = pod
        .spec
        .as_ref()
        .and_then(|s| s.affinity.as_ref())
        .and_then(|a| a.node_affinity.as_ref())
        .and_then(|a| {
            a.preferred_during_scheduling_ignored_during_execution
                .as_deref()
        })
        .unwrap_or_default();
    let labels = node_labels(n);
    terms
        .iter()
        .filter(|t| term_matches(&t.preference, labels, n.name()))
        .map(|t| i64::from(t.weight))
        .sum()
}

/// Upstream's DefaultNormalizeScore: scale to 0–100 by the highest raw score, optionally
/// reversed (fewer is better).
fn normalize(raw: &[i64], reverse: bool) -> Vec<i64> {
    let max = raw.iter().copied().max().unwrap_or(0);
    raw.iter()
        .map(|&s| {
            let scaled = if max == 0 {
                0
            } else {
                s * MAX_NODE_SCORE / max
            };
            if reverse {
                if max == 0 {
                    MAX_NODE_SCORE
                } else {
                    MAX_NODE_SCORE - scaled
                }
            } else {
                scaled
            }
        })
        .collect()
}

/// Scores every feasible node; `all` is every node, which topology spread counts over.
pub fn run(pod: &Pod, r: &PodRequests, nodes: &[&NodeInfo], all: &[&NodeInfo]) -> Vec<NodeScore> {
    let taints: Vec<i64> = nodes
        .iter()
        .map(|n| intolerable_prefer_no_schedule(pod, n))
        .collect();
    let affinity: Vec<i64> = nodes.iter().map(|n| preferred_affinity(pod, n)).collect();
    let (taints, affinity) = (normalize(&taints, true), normalize(&affinity, false));
    let spread = super::spread::score(pod, nodes, all);
    let inter_pod = super::affinity::score(pod, nodes, all);
    nodes
        .iter()
        .enumerate()
        .map(|(i, n)| {
            let plugins = vec![
                ("NodeResourcesFit", least_allocated(r, n)),
                ("NodeResourcesBalancedAllocation", balanced_allocation(r, n)),
                ("TaintToleration", taints[i]),
                ("NodeAffinity", affinity[i]),
                ("PodTopologySpread", spread[i]),
                ("InterPodAffinity", inter_pod[i]),
            ];
            let total = plugins
                .iter()
                .zip(SCORES)
                .map(|((_, s), (_, w))| s * w)
                .sum();
            NodeScore {
                node: n.name().to_owned(),
                plugins,
                total,
            }
        })
        .collect()
}
