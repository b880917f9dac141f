//! One scheduling cycle for one pod: filter the nodes, score the feasible ones, pick the best,
//! or, when none fits, try preemption and say why in upstream's FailedScheduling words. Pure:
//! the caller brings the nodes, the nominated pods, where to start and a source of randomness
//! for ties.
//!
//! Mirrors `schedulePod` in `pkg/scheduler/schedule_one.go`: the nominated node first
//! (`evaluateNominatedNode`), `findNodesThatFitPod` with `percentageOfNodesToScore` (stop after
//! enough feasible nodes, resume at the next node next time), filters run with the nominated
//! pods of equal or higher priority counted (`RunFilterPluginsWithNominatedPods`),
//! `prioritizeNodes`, `selectHost` (random among equal best), the PostFilter
//! ([`super::preempt`]) and `FitError`'s message.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::Pod;
use serde_json::{Value, json};

use super::affinity;
use super::filter::{self, Rejection};
use super::node_info::{NodeInfo, PodRequests};
use super::preempt::{self, Nomination, Preemption};
use super::score::{self, NodeScore};
use super::spread;

/// Pods nominated to run on a node (after preempting there), by node: key and what it counts.
pub type Nominated = BTreeMap<String, Vec<(String, PodRequests)>>;

/// How many feasible nodes to look for before scoring (upstream's adaptive percentage).
pub fn feasible_nodes_to_find(all: usize) -> usize {
    const MIN_FEASIBLE: usize = 100;
    if all < MIN_FEASIBLE {
        return all;
    }
    let pct = 50usize.saturating_sub(all / 125).max(5);
    (all * pct / 100).max(MIN_FEASIBLE)
}

/// Everything the cycle decided, node by node: the material of `--explain`.
#[derive(Debug, Clone, Default)]
pub struct Explanation {
    /// Nodes in the order they were looked at, with the rejecting plugin if any.
    pub filtered: Vec<(String, Option<Rejection>)>,
    pub scores: Vec<NodeScore>,
    pub selected: Option<String>,
    /// What preemption found when no node fitted.
    pub preemption: Option<Preemption>,
}

#[derive(Debug, Clone)]
pub enum Outcome {
    Fits {
        node: String,
    },
    /// No node fits: the FailedScheduling message, and what to do with the pod's
    /// `status.nominatedNodeName` (set when preemption chose a node and its victims).
    Unschedulable {
        message: String,
        nomination: Nomination,
        victims: Vec<String>,
    },
}

pub struct Decision {
    pub outcome: Outcome,
    pub explanation: Explanation,
    /// Where the next cycle should start looking.
    pub next_start: usize,
}

/// Upstream's FitError message: "0/N nodes are available:", the reasons counted over nodes
/// and sorted and closed by a full stop, then the PostFilter's message (preemption's) as is.
pub fn fit_error_message<'a>(
    all: usize,
    reasons: impl IntoIterator<Item = &'a str>,
    post_filter: Option<&str>,
) -> String {
    if all == 0 {
        return "no nodes available to schedule pods".into();
    }
    let mut counts: BTreeMap<&str, usize> = BTreeMap::new();
    for reason in reasons {
        *counts.entry(reason).or_default() += 1;
    }
    let mut parts: Vec<String> = counts.iter().map(|(r, n)| format!("{n} {r}")).collect();
    parts.sort();
    let mut msg = format!("0/{all} nodes are available:");
    if !parts.is_empty() {
        msg.push_str(&format!(" {}.", parts.join(", ")));
    }
    if let Some(p) = post_filter {
        msg.push_str(&format!(" {p}"));
    }
    msg
}

fn key_of(pod: &Pod) -> String {
    format!(
        "{}/{}",
        pod.metadata.namespace.as_deref().unwrap_or_default(),
        pod.metadata.name.as_deref().unwrap_or_default()
    )
}

/// The node the pod is nominated to: the scheduler's own record, else the pod's status.
pub fn nominated_node(pod: &Pod, key: &str, nominated: &Nominated) -> Option<String> {
    nominated
        .iter()
        .find(|(_, pods)| pods.iter().any(|(k, _)| k == key))
        .map(|(n, _)| n.clone())
        .or_else(|| {
            pod.status
                .as_ref()
                .and_then(|s| s.nominated_node_name.clone())
                .filter(|n| !n.is_empty())
        })
}

/// The PreFilter states of the plugins that count pods over every node: PodTopologySpread and
/// InterPodAffinity.
#[derive(Debug, Clone, Default)]
pub struct PreFilters {
    pub spread: spread::PreFilter,
    pub affinity: affinity::PreFilter,
}

impl PreFilters {
    pub fn new(pod: &Pod, nodes: &[&NodeInfo]) -> PreFilters {
        PreFilters {
            spread: spread::PreFilter::new(pod, nodes),
            affinity: affinity::PreFilter::new(pod, nodes),
        }
    }

    /// Another pod appears on (`delta` 1) or leaves (`delta` -1) node `n`.
    pub fn update(&mut self, pod: &Pod, n: &NodeInfo, key: &str, other: &PodRequests, delta: i64) {
        self.spread.update(pod, n, key, other, delta);
        self.affinity.update(n, key, other, delta);
    }

    /// The filters that read the counts, in upstream's order.
    pub fn filter(&self, n: &NodeInfo) -> Result<(), Rejection> {
        self.spread.filter(n)?;
        self.affinity.filter(n)
    }
}

/// Runs the filters on one node as upstream's `RunFilterPluginsWithNominatedPods`: first with
/// the other pods nominated to it that are at least as important counted as if bound there,
/// then (when there were any) without them; the pod must pass both.
pub fn filter_node(
    pod: &Pod,
    key: &str,
    r: &PodRequests,
    n: &NodeInfo,
    pre: &PreFilters,
    nominated: &Nominated,
) -> Result<(), Rejection> {
    let others: Vec<&(String, PodRequests)> = nominated
        .get(n.name())
        .into_iter()
        .flatten()
        .filter(|(k, p)| k != key && p.priority >= r.priority)
        .collect();
    if !others.is_empty() {
        let (mut with, mut pre_with) = (n.clone(), pre.clone());
        for (k, p) in others {
            with.add_pod(k, p);
            pre_with.update(pod, &with, k, p, 1);
        }
        filter::run(pod, r, &with).and_then(|()| pre_with.filter(&with))?;
    }
    filter::run(pod, r, n).and_then(|()| pre.filter(n))
}

/// Runs one cycle. `explain` looks at every node instead of stopping early.
pub fn schedule(
    pod: &Pod,
    nodes: &[&NodeInfo],
    nominated: &Nominated,
    start: usize,
    explain: bool,
    pick: &mut dyn FnMut(usize) -> usize,
) -> Decision {
    let r = PodRequests::of(pod);
    let key = key_of(pod);
    let all = nodes.len();
    let mut explanation = Explanation::default();
    let pre = PreFilters::new(pod, nodes);
    // A pod that preempted goes to its nominated node if it fits there now.
    if let Some(n) = nominated_node(pod, &key, nominated)
        .and_then(|want| nodes.iter().find(|n| n.name() == want))
    {
        if filter_node(pod, &key, &r, n, &pre, nominated).is_ok() {
            let node = n.name().to_owned();
            explanation.filtered.push((node.clone(), None));
            explanation.selected = Some(node.clone());
            return Decision {
                outcome: Outcome::Fits { node },
                explanation,
                next_start: start,
            };
        }
    }
    let want = if explain {
        all
    } else {
        feasible_nodes_to_find(all)
    };
    let mut feasible: Vec<&NodeInfo> = Vec::new();
    let mut looked = 0;
    while looked < all && feasible.len() < want {
        let n = nodes[(start + looked) % all];
        looked += 1;
        match filter_node(pod, &key, &r, n, &pre, nominated) {
            Ok(()) => {
                feasible.push(n);
                explanation.filtered.push((n.name().to_owned(), None));
            }
            Err(rej) => {
                explanation.filtered.push((n.name().to_owned(), Some(rej)));
            }
        }
    }
    let next_start = if all == 0 { 0 } else { (start + looked) % all };
    if feasible.is_empty() {
        // Every node was looked at and rejected the pod: the PostFilter may make room.
        let p = preempt::preempt(pod, &key, &r, nodes, &explanation.filtered, nominated);
        let reasons = explanation
            .filtered
            .iter()
            .filter_map(|(_, rej)| rej.as_ref())
            .flat_map(|rej| rej.reasons.iter().map(String::as_str));
        let message = fit_error_message(all, reasons, p.message(all).as_deref());
        let outcome = Outcome::Unschedulable {
            message,
            nomination: p.nomination(),
            victims: p.victims().iter().map(|v| v.key.clone()).collect(),
        };
        explanation.preemption = Some(p);
        return Decision {
            outcome,
            explanation,
            next_start,
        };
    }
    let scores = score::run(pod, &r, &feasible, nodes);
    let best = scores.iter().map(|s| s.total).max().unwrap_or(0);
    let top: Vec<&NodeScore> = scores.iter().filter(|s| s.total == best).collect();
    let node = top[pick(top.len()).min(top.len() - 1)].node.clone();
    explanation.scores = scores;
    explanation.selected = Some(node.clone());
    Decision {
        outcome: Outcome::Fits { node },
        explanation,
        next_start,
    }
}

impl Explanation {
    /// The decision as log lines: one per node, then the choice.
    pub fn lines(&self, pod: &str) -> Vec<String> {
        let mut out = Vec::new();
        for (node, rej) in &self.filtered {
            match rej {
                Some(r) => out.push(format!(
                    "{pod}: filter {node}: rejected by {}: {}",
                    r.plugin,
                    r.reasons.join(", ")
                )),
                None => out.push(format!("{pod}: filter {node}: passed all filters")),
            }
        }
        for s in &self.scores {
            let parts: Vec<String> = s
                .plugins
                .iter()
                .zip(score::SCORES)
                .map(|((p, v), (_, w))| format!("{p}={v}×{w}"))
                .collect();
            out.push(format!(
                "{pod}: score {}: {} total={}",
                s.node,
                parts.join(" "),
                s.total
            ));
        }
        match &self.selected {
            Some(n) => out.push(format!("{pod}: selected {n}")),
            None => out.push(format!("{pod}: no node fits")),
        }
        if let Some(p) = &self.preemption {
            out.extend(p.lines(pod));
        }
        out
    }

    /// The decision as JSON, for the pod's annotation (in the spirit of
    /// kube-scheduler-simulator's filter-result and score-result annotations).
    pub fn to_json(&self) -> Value {
        let filter: serde_json::Map<String, Value> = self
            .filtered
            .iter()
            .map(|(n, r)| {
                let v = match r {
                    None => json!("passed"),
                    Some(r) => json!({ r.plugin: r.reasons.join(", ") }),
                };
                (n.clone(), v)
            })
            .collect();
        let score: serde_json::Map<String, Value> = self
            .scores
            .iter()
            .map(|s| {
                let mut m: serde_json::Map<String, Value> = s
                    .plugins
                    .iter()
                    .map(|(p, v)| ((*p).to_owned(), json!(v)))
                    .collect();
                m.insert("total".into(), json!(s.total));
                (s.node.clone(), Value::Object(m))
            })
            .collect();
        let mut v = json!({"filter": filter, "score": score, "selected": self.selected});
        if let Some(p) = &self.preemption {
            v["preemption"] = p.to_json();
        }
        v
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use k8s_openapi::api::core::v1::Node;

    use super::*;

    fn node(name: &str, cpu: &str, taints: Value) -> NodeInfo {
        let n: Node = serde_json::from_value(json!({
            "metadata": {"name": name, "labels": {"disk": "ssd"}},
            "spec": {"taints": taints},
            "status": {"allocatable": {"cpu": cpu, "memory": "4Gi", "pods": "110"}},
        }))
        .unwrap();
        NodeInfo::new(Arc::new(n))
    }

    fn pod(spec: Value) -> Pod {
        serde_json::from_value(
            json!({"metadata": {"name": "p", "namespace": "default"}, "spec": spec}),
        )
        .unwrap()
    }

    fn with_cpu(cpu: &str) -> Value {
        json!({"containers": [{"name": "c", "resources": {"requests": {"cpu": cpu}}}]})
    }

    #[test]
    fn the_fit_error_counts_reasons_over_nodes_sorted() {
        let nodes = [
            node(
                "a",
                "1",
                json!([{"key": "k", "value": "v", "effect": "NoSchedule"}]),
            ),
            node("b", "1", json!([])),
            node("c", "1", json!([])),
        ];
        let refs: Vec<&NodeInfo> = nodes.iter().collect();
        let d = schedule(
            &pod(with_cpu("2")),
            &refs,
            &Nominated::new(),
            0,
            false,
            &mut |_| 0,
        );
        let Outcome::Unschedulable { message, .. } = d.outcome else {
            panic!("should not fit")
        };
        assert_eq!(
            message,
            "0/3 nodes are available: 1 node(s) had untolerated taint {k: v}, 2 Insufficient cpu. \
preemption: 0/3 nodes are available: 1 Preemption is not helpful for scheduling, 2 No preemption victims found for incoming pod."
        );
        assert_eq!(
            fit_error_message(0, [], None),
            "no nodes available to schedule pods"
        );
    }

    #[test]
    fn node_selector_affinity_and_node_name_filter() {
        let nodes = [node("a", "2", json!([])), node("b", "2", json!([]))];
        let refs: Vec<&NodeInfo> = nodes.iter().collect();
        let mut spec = with_cpu("100m");
        spec["nodeSelector"] = json!({"disk": "hdd"});
        let d = schedule(&pod(spec), &refs, &Nominated::new(), 0, true, &mut |_| 0);
        assert!(
            matches!(d.outcome, Outcome::Unschedulable { ref message, .. } if message.contains("2 node(s) didn't match Pod's node affinity/selector"))
        );
        let mut spec = with_cpu("100m");
        spec["nodeName"] = json!("b");
        let d = schedule(&pod(spec), &refs, &Nominated::new(), 0, true, &mut |_| 0);
        assert!(matches!(d.outcome, Outcome::Fits { ref node } if node == "b"));
    }

    #[test]
    fn least_allocated_prefers_the_emptier_node_and_host_ports_conflict() {
        let mut busy = node("busy", "2", json!([]));
        let hog = pod(
            json!({"containers": [{"name": "c", "ports": [{"containerPort": 80, "hostPort": 80}],
            "resources": {"requests": {"cpu": "1500m"}}}]}),
        );
        busy.add_pod("default/hog", &PodRequests::of(&hog));
        let free = node("free", "2", json!([]));
        let refs = [&busy, &free];
        let d = schedule(
            &pod(with_cpu("100m")),
            &refs,
            &Nominated::new(),
            0,
            true,
            &mut |_| 0,
        );
        assert!(matches!(d.outcome, Outcome::Fits { ref node } if node == "free"));
        let scores = &d.explanation.scores;
        assert!(
            scores[0].plugins[0].1 < scores[1].plugins[0].1,
            "{scores:?}"
        );
        let d = schedule(&hog, &[&busy], &Nominated::new(), 0, true, &mut |_| 0);
        assert!(
            matches!(d.outcome, Outcome::Unschedulable { ref message, .. } if message.contains("1 node(s) didn't have free ports for the requested pod ports"))
        );
    }

    #[test]
    fn match_fields_on_the_node_name_place_a_daemon_pod() {
        // The daemonset controller's binding: required affinity `metadata.name In [b]`.
        let nodes = [node("a", "2", json!([])), node("b", "2", json!([]))];
        let refs: Vec<&NodeInfo> = nodes.iter().collect();
        let mut spec = with_cpu("100m");
        spec["affinity"] = json!({"nodeAffinity": {"requiredDuringSchedulingIgnoredDuringExecution":
            {"nodeSelectorTerms": [{"matchFields": [{"key": "metadata.name", "operator": "In", "values": ["b"]}]}]}}});
        let d = schedule(
            &pod(spec.clone()),
            &refs,
            &Nominated::new(),
            0,
            true,
            &mut |_| 0,
        );
        assert!(matches!(d.outcome, Outcome::Fits { ref node } if node == "b"));
        spec["affinity"]["nodeAffinity"]["requiredDuringSchedulingIgnoredDuringExecution"]["nodeSelectorTerms"]
            [0]["matchFields"][0]["values"] = json!(["gone"]);
        let d = schedule(&pod(spec), &refs, &Nominated::new(), 0, true, &mut |_| 0);
        assert!(
            matches!(d.outcome, Outcome::Unschedulable { ref message, .. } if message.contains("2 node(s) didn't match Pod's node affinity/selector"))
        );
    }

    #[test]
    fn enough_feasible_nodes_as_upstream() {
        assert_eq!(feasible_nodes_to_find(50), 50);
        assert_eq!(feasible_nodes_to_find(1000), 420);
        assert_eq!(feasible_nodes_to_find(5000), 500);
    }
}
