//! PodTopologySpread: keep a pod's kind evenly spread over topology domains (nodes, zones).
//! Pure functions of the pod and the nodes with the labels of the pods they hold.
//!
//! Mirrors `pkg/scheduler/framework/plugins/podtopologyspread`: PreFilter counts the pods that
//! match each constraint's selector per domain, over the nodes that pass the pod's nodeSelector
//! and required node affinity (upstream's default `nodeAffinityPolicy: Honor`) whatever their
//! taints (`nodeTaintsPolicy: Ignore`); Filter rejects a node whose domain would exceed
//! `maxSkew` (`whenUnsatisfiable: DoNotSchedule`); Score prefers domains with fewer matching
//! pods (`ScheduleAnyway`). `matchLabelKeys` and `minDomains` are honoured. Leaves out the
//! cluster-level default constraints, the `nodeAffinityPolicy`/`nodeTaintsPolicy` fields
//! (their defaults always apply) and does not skip pods that are terminating.

use std::collections::{BTreeMap, BTreeSet};

use k8s_openapi::api::core::v1::{Pod, TopologySpreadConstraint};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;

use super::filter::{Rejection, node_affinity, node_labels};
use super::node_info::{NodeInfo, PodRequests};
use super::score::MAX_NODE_SCORE;

pub const PLUGIN: &str = "PodTopologySpread";
/// Upstream's `ErrReasonConstraintsNotMatch`.
pub const NOT_MATCH: &str = "node(s) didn't match pod topology spread constraints";
/// Upstream's `ErrReasonNodeLabelNotMatch`.
pub const MISSING_LABEL: &str =
    "node(s) didn't match pod topology spread constraints (missing required label)";
pub const HOSTNAME: &str = "kubernetes.io/hostname";

/// One requirement of a selector: key, operator, values.
pub(super) type Requirement = (String, String, Vec<String>);

/// A constraint made ready to count with: its selector merged with `matchLabelKeys`.
#[derive(Debug, Clone)]
struct Constraint {
    max_skew: i64,
    key: String,
    min_domains: i64,
    /// `None`: no labelSelector, which matches no pod (upstream's `labels.Nothing()`).
    selector: Option<Vec<Requirement>>,
    /// Whether the incoming pod matches its own selector (it then counts itself).
    self_match: bool,
}

/// Whether labels satisfy a selector; `None` matches nothing.
pub(super) fn matches(sel: &Option<Vec<Requirement>>, labels: &BTreeMap<String, String>) -> bool {
    let Some(reqs) = sel else {
        return false;
    };
    reqs.iter().all(|(k, op, values)| {
        let have = labels.get(k);
        match op.as_str() {
            "In" => have.is_some_and(|v| values.contains(v)),
            "NotIn" => have.is_none_or(|v| !values.contains(v)),
            "Exists" => have.is_some(),
            "DoesNotExist" => have.is_none(),
            _ => false,
        }
    })
}

/// A label selector as requirements (`matchLabels` as `In`); an empty one matches everything.
pub(super) fn requirements(s: &LabelSelector) -> Vec<Requirement> {
    let mut reqs: Vec<Requirement> = s
        .match_labels
        .iter()
        .flatten()
        .map(|(k, v)| (k.clone(), "In".to_owned(), vec![v.clone()]))
        .collect();
    reqs.extend(s.match_expressions.iter().flatten().map(|r| {
        (
            r.key.clone(),
            r.operator.clone(),
            r.values.clone().unwrap_or_default(),
        )
    }));
    reqs
}

fn constraints(pod: &Pod, when: &str) -> Vec<Constraint> {
    let own = pod.metadata.labels.clone().unwrap_or_default();
    let raw: &[TopologySpreadConstraint] = pod
        .spec
        .as_ref()
        .and_then(|s| s.topology_spread_constraints.as_deref())
        .unwrap_or_default();
    raw.iter()
        .filter(|c| c.when_unsatisfiable == when)
        .map(|c| {
            let selector = c.label_selector.as_ref().map(|s| {
                let mut reqs = requirements(s);
                // matchLabelKeys: the pod's own value of each key joins the selector.
                for k in c.match_label_keys.iter().flatten() {
                    if let Some(v) = own.get(k) {
                        reqs.push((k.clone(), "In".to_owned(), vec![v.clone()]));
                    }
                }
                reqs
            });
            let self_match = matches(&selector, &own);
            Constraint {
                max_skew: i64::from(c.max_skew),
                key: c.topology_key.clone(),
                min_domains: i64::from(c.min_domains.unwrap_or(1)),
                selector,
                self_match,
            }
        })
        .collect()
}

fn namespace(pod: &Pod) -> &str {
    pod.metadata.namespace.as_deref().unwrap_or_default()
}

/// How many pods on the node, in the namespace, match the selector.
fn count_on(n: &NodeInfo, ns: &str, sel: &Option<Vec<Requirement>>) -> i64 {
    n.pods
        .iter()
        .filter(|(key, r)| key.split('/').next() == Some(ns) && matches(sel, &r.labels))
        .count() as i64
}

/// Whether the node takes part in counting: it passes the pod's node affinity and carries
/// every constraint's topology key.
fn eligible(pod: &Pod, cs: &[Constraint], n: &NodeInfo) -> bool {
    let labels = node_labels(n);
    node_affinity(pod, n).is_ok() && cs.iter().all(|c| labels.contains_key(&c.key))
}

/// Matching pods per domain for each constraint: `counts[i][domain value]`.
fn domain_counts(pod: &Pod, cs: &[Constraint], nodes: &[&NodeInfo]) -> Vec<BTreeMap<String, i64>> {
    let ns = namespace(pod);
    let mut counts = vec![BTreeMap::new(); cs.len()];
    for n in nodes.iter().filter(|n| eligible(pod, cs, n)) {
        let labels = node_labels(n);
        for (i, c) in cs.iter().enumerate() {
            let Some(value) = labels.get(&c.key) else {
                continue;
            };
            *counts[i].entry(value.clone()).or_default() += count_on(n, ns, &c.selector);
        }
    }
    counts
}

/// PreFilter's state for one pod: its DoNotSchedule constraints and the counts per domain.
#[derive(Debug, Clone, Default)]
pub struct PreFilter {
    constraints: Vec<Constraint>,
    counts: Vec<BTreeMap<String, i64>>,
}

impl PreFilter {
    /// Counts over every node (not only those the cycle will look at), as upstream does.
    pub fn new(pod: &Pod, nodes: &[&NodeInfo]) -> PreFilter {
        let constraints = constraints(pod, "DoNotSchedule");
        if constraints.is_empty() {
            return PreFilter::default();
        }
        let counts = domain_counts(pod, &constraints, nodes);
        PreFilter {
            constraints,
            counts,
        }
    }

    /// Another pod appears on (`delta` 1) or leaves (`delta` -1) node `n`: upstream's
    /// PreFilterExtensions AddPod and RemovePod, used for nominated pods and by preemption.
    pub fn update(&mut self, pod: &Pod, n: &NodeInfo, key: &str, other: &PodRequests, delta: i64) {
        if self.constraints.is_empty()
            || key.split('/').next() != Some(namespace(pod))
            || !eligible(pod, &self.constraints, n)
        {
            return;
        }
        let labels = node_labels(n);
        for (c, counts) in self.constraints.iter().zip(self.counts.iter_mut()) {
            if let Some(value) = labels.get(&c.key) {
                if matches(&c.selector, &other.labels) {
                    *counts.entry(value.clone()).or_default() += delta;
                }
            }
        }
    }

    /// Filter: would placing the pod here make some domain exceed maxSkew?
    pub fn filter(&self, n: &NodeInfo) -> Result<(), Rejection> {
        let labels = node_labels(n);
        for (c, counts) in self.constraints.iter().zip(&self.counts) {
            let Some(value) = labels.get(&c.key) else {
                return Err(Rejection {
                    plugin: PLUGIN,
                    reasons: vec![MISSING_LABEL.into()],
                    unresolvable: true,
                });
            };
            // Fewer domains than minDomains: the global minimum is taken as 0.
            let min = if (counts.len() as i64) < c.min_domains {
                0
            } else {
                counts.values().copied().min().unwrap_or(0)
            };
            let here = counts.get(value).copied().unwrap_or(0);
            let skew = here + i64::from(c.self_match) - min;
            if skew > c.max_skew {
                return Err(Rejection {
                    plugin: PLUGIN,
                    reasons: vec![NOT_MATCH.into()],
                    unresolvable: false,
                });
            }
        }
        Ok(())
    }
}

/// Score for every feasible node, normalized to 0–100 (fewer matching pods in the node's
/// domains scores higher). All 0 when the pod has no ScheduleAnyway constraint.
pub fn score(pod: &Pod, feasible: &[&NodeInfo], all: &[&NodeInfo]) -> Vec<i64> {
    let cs = constraints(pod, "ScheduleAnyway");
    if cs.is_empty() {
        return vec![0; feasible.len()];
    }
    let ignored: Vec<bool> = feasible
        .iter()
        .map(|n| {
            let labels = node_labels(n);
            !cs.iter().all(|c| labels.contains_key(&c.key))
        })
        .collect();
    // Domains among the feasible nodes weigh each constraint by log(domains + 2), so that a
    // constraint over many domains (hostname) does not drown one over few (zone).
    let weights: Vec<f64> = cs
        .iter()
        .map(|c| {
            let domains: BTreeSet<&String> = feasible
                .iter()
                .zip(&ignored)
                .filter(|(_, ig)| !**ig)
                .filter_map(|(n, _)| node_labels(n).get(&c.key))
                .collect();
            ((domains.len() + 2) as f64).ln()
        })
        .collect();
    let counts = domain_counts(pod, &cs, all);
    let ns = namespace(pod);
    let raw: Vec<i64> = feasible
        .iter()
        .zip(&ignored)
        .map(|(n, ig)| {
            if *ig {
                return 0;
            }
            let labels = node_labels(n);
            let mut s = 0.0;
            for (i, c) in cs.iter().enumerate() {
                let cnt = if c.key == HOSTNAME {
                    count_on(n, ns, &c.selector)
                } else {
                    labels
                        .get(&c.key)
                        .and_then(|v| counts[i].get(v))
                        .copied()
                        .unwrap_or(0)
                };
                s += cnt as f64 * weights[i] + (c.max_skew - 1) as f64;
            }
            s.round() as i64
        })
        .collect();
    let considered = || {
        raw.iter()
            .zip(&ignored)
            .filter(|(_, ig)| !**ig)
            .map(|(s, _)| *s)
    };
    let (min, max) = (
        considered().min().unwrap_or(0),
        considered().max().unwrap_or(0),
    );
    raw.iter()
        .zip(&ignored)
        .map(|(&s, ig)| match (*ig, max) {
            (true, _) => 0,
            (false, 0) => MAX_NODE_SCORE,
            (false, _) => MAX_NODE_SCORE * (max + min - s) / max,
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use k8s_openapi::api::core::v1::Node;
    use serde_json::{Value, json};

    use super::*;
    use crate::scheduler::node_info::PodRequests;

    fn node(name: &str, zone: Option<&str>, pods: &[(&str, &str)]) -> NodeInfo {
        let mut labels = json!({"kubernetes.io/hostname": name});
        if let Some(z) = zone {
            labels["topology.kubernetes.io/zone"] = json!(z);
        }
        let n: Node = serde_json::from_value(json!({
            "metadata": {"name": name, "labels": labels},
            "status": {"allocatable": {"cpu": "4", "memory": "8Gi", "pods": "110"}},
        }))
        .unwrap();
        let mut info = NodeInfo::new(Arc::new(n));
        for (i, (ns, app)) in pods.iter().enumerate() {
            let p = pod(ns, &format!("{name}-{i}"), app, json!([]));
            info.add_pod(&format!("{ns}/{name}-{i}"), &PodRequests::of(&p));
        }
        info
    }

    fn pod(ns: &str, name: &str, app: &str, constraints: Value) -> Pod {
        serde_json::from_value(json!({
            "metadata": {"name": name, "namespace": ns, "labels": {"app": app, "rev": "1"}},
            "spec": {"topologySpreadConstraints": constraints,
                     "containers": [{"name": "c", "image": "busybox"}]},
        }))
        .unwrap()
    }

    fn constraint(key: &str, when: &str) -> Value {
        json!({"maxSkew": 1, "topologyKey": key, "whenUnsatisfiable": when,
               "labelSelector": {"matchLabels": {"app": "web"}}})
    }

    fn passing(pf: &PreFilter, nodes: &[&NodeInfo]) -> Vec<String> {
        nodes
            .iter()
            .filter(|n| pf.filter(n).is_ok())
            .map(|n| n.name().to_owned())
            .collect()
    }

    #[test]
    fn do_not_schedule_keeps_the_skew_within_max_skew_per_host() {
        let a = node("a", None, &[("default", "web"), ("default", "web")]);
        let b = node("b", None, &[("default", "web")]);
        let c = node("c", None, &[("default", "web"), ("default", "db")]);
        let nodes = [&a, &b, &c];
        let p = pod(
            "default",
            "new",
            "web",
            json!([constraint(HOSTNAME, "DoNotSchedule")]),
        );
        let pf = PreFilter::new(&p, &nodes);
        // a holds 2, b and c 1 each (db does not match): a would reach 3, skew 2.
        assert_eq!(passing(&pf, &nodes), ["b", "c"]);
        let rej = pf.filter(&a).unwrap_err();
        assert_eq!(rej.reasons, [NOT_MATCH]);
        assert!(!rej.unresolvable);
    }

    #[test]
    fn other_namespaces_and_non_matching_pods_do_not_count() {
        let a = node("a", None, &[("other", "web"), ("other", "web")]);
        let b = node("b", None, &[]);
        let p = pod(
            "default",
            "new",
            "web",
            json!([constraint(HOSTNAME, "DoNotSchedule")]),
        );
        let pf = PreFilter::new(&p, &[&a, &b]);
        assert_eq!(passing(&pf, &[&a, &b]), ["a", "b"]);
    }

    #[test]
    fn zones_count_every_node_in_the_zone_and_a_node_without_the_key_is_rejected() {
        let a1 = node("a1", Some("a"), &[("default", "web")]);
        let a2 = node("a2", Some("a"), &[("default", "web")]);
        let b1 = node("b1", Some("b"), &[("default", "web")]);
        let bare = node("bare", None, &[]);
        let nodes = [&a1, &a2, &b1, &bare];
        let p = pod(
            "default",
            "new",
            "web",
            json!([constraint("topology.kubernetes.io/zone", "DoNotSchedule")]),
        );
        let pf = PreFilter::new(&p, &nodes);
        assert_eq!(passing(&pf, &nodes), ["b1"]);
        let rej = pf.filter(&bare).unwrap_err();
        assert_eq!(rej.reasons, [MISSING_LABEL]);
        assert!(rej.unresolvable);
    }

    #[test]
    fn min_domains_treats_missing_domains_as_empty() {
        let a = node("a", Some("a"), &[("default", "web")]);
        let b = node("b", Some("b"), &[("default", "web")]);
        let mut c = constraint("topology.kubernetes.io/zone", "DoNotSchedule");
        let p = pod("default", "new", "web", json!([c.clone()]));
        assert_eq!(
            passing(&PreFilter::new(&p, &[&a, &b]), &[&a, &b]),
            ["a", "b"]
        );
        // Three zones wanted, two exist: the minimum is 0, so 1 + 1 - 0 > 1 everywhere.
        c["minDomains"] = json!(3);
        let p = pod("default", "new", "web", json!([c]));
        assert!(passing(&PreFilter::new(&p, &[&a, &b]), &[&a, &b]).is_empty());
    }

    #[test]
    fn match_label_keys_narrow_the_selector_to_the_pods_own_values() {
        // The existing pods carry rev=1; a new pod of rev=2 with matchLabelKeys [rev] counts
        // none of them, so any node passes.
        let a = node("a", None, &[("default", "web"), ("default", "web")]);
        let b = node("b", None, &[]);
        let mut c = constraint(HOSTNAME, "DoNotSchedule");
        c["matchLabelKeys"] = json!(["rev"]);
        let mut p = pod("default", "new", "web", json!([c]));
        assert_eq!(passing(&PreFilter::new(&p, &[&a, &b]), &[&a, &b]), ["b"]);
        p.metadata
            .labels
            .as_mut()
            .unwrap()
            .insert("rev".into(), "2".into());
        assert_eq!(
            passing(&PreFilter::new(&p, &[&a, &b]), &[&a, &b]),
            ["a", "b"]
        );
    }

    #[test]
    fn no_constraints_filter_nothing_and_score_zero() {
        let a = node("a", None, &[("default", "web")]);
        let p = pod("default", "new", "web", json!([]));
        assert!(PreFilter::new(&p, &[&a]).filter(&a).is_ok());
        assert_eq!(score(&p, &[&a], &[&a]), [0]);
    }

    #[test]
    fn schedule_anyway_scores_the_emptier_domain_highest() {
        let a = node("a", None, &[("default", "web"), ("default", "web")]);
        let b = node("b", None, &[("default", "web")]);
        let c = node("c", None, &[]);
        let bare: NodeInfo = {
            let n: Node = serde_json::from_value(json!({"metadata": {"name": "bare"}})).unwrap();
            NodeInfo::new(Arc::new(n))
        };
        let nodes = [&a, &b, &c, &bare];
        let p = pod(
            "default",
            "new",
            "web",
            json!([constraint(HOSTNAME, "ScheduleAnyway")]),
        );
        // Three domains: weight ln(5) ≈ 1.61; raw 3, 2, 0 → 100·(3+0−s)/3.
        assert_eq!(score(&p, &nodes, &nodes), [0, 33, 100, 0]);
        // A ScheduleAnyway constraint never filters.
        assert!(PreFilter::new(&p, &nodes).filter(&a).is_ok());
    }
}
