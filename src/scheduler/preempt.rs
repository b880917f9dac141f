//! DefaultPreemption, the PostFilter: when no node fits a pod, find nodes where evicting pods
//! of lower priority would make it fit, keep as many of them as possible, and choose the node
//! whose eviction hurts least. Pure: the caller deletes the victims and nominates the node.
//!
//! Mirrors `pkg/scheduler/framework/preemption` (`Evaluator.Preempt`: `findCandidates`,
//! `DryRunPreemption`, `SelectCandidate` with `pickOneNodeForPreemption`) and
//! `plugins/defaultpreemption` (`PodEligibleToPreemptOthers`, `SelectVictimsOnNode`), with
//! upstream's message texts. Leaves out PodDisruptionBudgets (no candidate is counted as
//! violating one), extenders, asynchronous preemption and the random offset: nodes are tried
//! in order, until upstream's number of candidates is found (10 % of them, at least 100).

use std::cmp::Reverse;
use std::collections::HashMap;

use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::jiff::Timestamp;
use serde_json::{Value, json};

use super::decide::{Nominated, PreFilters, filter_node, fit_error_message, nominated_node};
use super::filter::Rejection;
use super::node_info::{NodeInfo, PodRequests};

/// A node whose filters failed in a way evicting pods cannot change (taints, affinity…).
pub const NOT_HELPFUL: &str = "Preemption is not helpful for scheduling";
/// A node without pods of lower priority than the incoming pod.
pub const NO_VICTIMS: &str = "No preemption victims found for incoming pod";
pub const POLICY_NEVER: &str = "not eligible due to preemptionPolicy=Never.";
pub const TERMINATING_VICTIM: &str = "not eligible due to a terminating pod on the nominated node.";

/// A pod that would be evicted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Victim {
    pub key: String,
    pub priority: i32,
    pub start_time: Option<Timestamp>,
}

/// What the dry run found on one node.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// Evicting these pods (most important first) lets the pod fit.
    Victims(Vec<Victim>),
    /// Preemption does not help here, in upstream's words.
    NotHelpful(Vec<String>),
}

/// What to do with the preemptor's `status.nominatedNodeName`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Nomination {
    Keep,
    Clear,
    Set(String),
}

/// The PostFilter's result for one pod.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Preemption {
    /// Why the pod may not preempt at all, if it may not.
    pub not_eligible: Option<&'static str>,
    /// Every node's verdict, in the order the nodes were given.
    pub nodes: Vec<(String, Verdict)>,
    /// The node chosen among those with victims.
    pub chosen: Option<String>,
}

/// How many candidate nodes to find before choosing (upstream's `GetOffsetAndNumCandidates`).
pub fn candidates_to_find(potential: usize) -> usize {
    (potential / 10).max(100).min(potential)
}

/// Upstream's `MoreImportantPod`: higher priority, then started earlier (a pod not started
/// yet counts as starting now).
fn importance(p: &PodRequests) -> (Reverse<i32>, Timestamp) {
    (Reverse(p.priority), p.start_time.unwrap_or(Timestamp::MAX))
}

fn rejection_of<'a>(
    filtered: &'a [(String, Option<Rejection>)],
    node: &str,
) -> Option<&'a Rejection> {
    filtered
        .iter()
        .find(|(n, _)| n == node)
        .and_then(|(_, rej)| rej.as_ref())
}

/// Upstream's `PodEligibleToPreemptOthers`.
fn not_eligible(
    pod: &Pod,
    key: &str,
    r: &PodRequests,
    nodes: &[&NodeInfo],
    filtered: &[(String, Option<Rejection>)],
    nominated: &Nominated,
) -> Option<&'static str> {
    if pod
        .spec
        .as_ref()
        .and_then(|s| s.preemption_policy.as_deref())
        == Some("Never")
    {
        return Some(POLICY_NEVER);
    }
    let nom = nominated_node(pod, key, nominated)?;
    // A nominated node that now rejects the pod for good is no reason to wait.
    if rejection_of(filtered, &nom).is_some_and(|rej| rej.unresolvable) {
        return None;
    }
    let n = nodes.iter().find(|n| n.name() == nom)?;
    n.pods
        .values()
        .any(|p| p.priority < r.priority && p.preempted)
        .then_some(TERMINATING_VICTIM)
}

/// Upstream's `SelectVictimsOnNode`: remove every pod of lower priority; if the pod then fits,
/// put them back one by one, most important first, keeping each that still lets it fit.
pub fn select_victims(
    pod: &Pod,
    key: &str,
    r: &PodRequests,
    n: &NodeInfo,
    pre: &PreFilters,
    nominated: &Nominated,
) -> Verdict {
    let mut potential: Vec<(String, PodRequests)> = n
        .pods
        .iter()
        .filter(|(_, p)| p.priority < r.priority)
        .map(|(k, p)| (k.clone(), p.clone()))
        .collect();
    if potential.is_empty() {
        return Verdict::NotHelpful(vec![NO_VICTIMS.into()]);
    }
    let (mut node, mut pre) = (n.clone(), pre.clone());
    for (k, p) in &potential {
        node.remove_pod(k);
        pre.update(pod, &node, k, p, -1);
    }
    if let Err(rej) = filter_node(pod, key, r, &node, &pre, nominated) {
        return Verdict::NotHelpful(rej.reasons);
    }
    potential.sort_by_key(|(_, p)| importance(p));
    let mut victims = Vec::new();
    for (k, p) in potential {
        node.add_pod(&k, &p);
        pre.update(pod, &node, &k, &p, 1);
        if filter_node(pod, key, r, &node, &pre, nominated).is_err() {
            node.remove_pod(&k);
            pre.update(pod, &node, &k, &p, -1);
            victims.push(Victim {
                key: k,
                priority: p.priority,
                start_time: p.start_time,
            });
        }
    }
    if victims.is_empty() {
        return Verdict::NotHelpful(vec![format!(
            "expected at least one victim pod on node {:?}",
            n.name()
        )]);
    }
    Verdict::Victims(victims)
}

/// Upstream's `pickOneNodeForPreemption` (without PDBs): the lowest most important victim,
/// then the smallest sum of priorities, then the fewest victims, then the node whose most
/// important victims started latest; the first such node.
pub fn pick<'a>(candidates: &[(&'a str, &[Victim])]) -> Option<&'a str> {
    let rank = |v: &[Victim]| {
        let highest = v.first().map_or(i32::MIN, |x| x.priority);
        // Upstream shifts every priority by MaxInt32+1 so that the sum stays positive.
        let sum: i64 = v
            .iter()
            .map(|x| i64::from(x.priority) + i64::from(i32::MAX) + 1)
            .sum();
        let earliest = v
            .iter()
            .filter(|x| x.priority == highest)
            .map(|x| x.start_time.unwrap_or(Timestamp::MAX))
            .min()
            .unwrap_or(Timestamp::MAX);
        (highest, sum, v.len(), Reverse(earliest))
    };
    candidates
        .iter()
        .min_by_key(|(_, v)| rank(v))
        .map(|(n, _)| *n)
}

/// Runs preemption for a pod that no node fits. `filtered` holds every node's rejection.
pub fn preempt(
    pod: &Pod,
    key: &str,
    r: &PodRequests,
    nodes: &[&NodeInfo],
    filtered: &[(String, Option<Rejection>)],
    nominated: &Nominated,
) -> Preemption {
    let by_node: HashMap<&str, &Rejection> = filtered
        .iter()
        .filter_map(|(n, rej)| rej.as_ref().map(|rej| (n.as_str(), rej)))
        .collect();
    let rejection = |name: &str| by_node.get(name).copied();
    if let Some(why) = not_eligible(pod, key, r, nodes, filtered, nominated) {
        return Preemption {
            not_eligible: Some(why),
            ..Preemption::default()
        };
    }
    let potential = nodes
        .iter()
        .filter(|n| rejection(n.name()).is_some_and(|rej| !rej.unresolvable))
        .count();
    let want = candidates_to_find(potential);
    let pre = PreFilters::new(pod, nodes);
    let mut out = Preemption::default();
    let mut found = 0;
    for n in nodes {
        let resolvable = rejection(n.name()).is_some_and(|rej| !rej.unresolvable);
        let verdict = if resolvable && found < want {
            select_victims(pod, key, r, n, &pre, nominated)
        } else {
            Verdict::NotHelpful(vec![NOT_HELPFUL.into()])
        };
        if matches!(verdict, Verdict::Victims(_)) {
            found += 1;
        }
        out.nodes.push((n.name().to_owned(), verdict));
    }
    let candidates: Vec<(&str, &[Victim])> = out
        .nodes
        .iter()
        .filter_map(|(n, v)| match v {
            Verdict::Victims(v) => Some((n.as_str(), v.as_slice())),
            Verdict::NotHelpful(_) => None,
        })
        .collect();
    out.chosen = pick(&candidates).map(str::to_owned);
    out
}

impl Preemption {
    /// The PostFilter's part of the FailedScheduling message; none when a node was chosen.
    pub fn message(&self, all: usize) -> Option<String> {
        if let Some(why) = self.not_eligible {
            return Some(format!("preemption: {why}"));
        }
        if self.chosen.is_some() {
            return None;
        }
        let reasons = self.nodes.iter().flat_map(|(_, v)| match v {
            Verdict::NotHelpful(r) => r.as_slice(),
            Verdict::Victims(_) => &[],
        });
        Some(format!(
            "preemption: {}",
            fit_error_message(all, reasons.map(String::as_str), None)
        ))
    }

    /// What happens to the preemptor's nomination: set to the chosen node, cleared when no
    /// node can help, kept when the pod was not eligible.
    pub fn nomination(&self) -> Nomination {
        match (&self.not_eligible, &self.chosen) {
            (Some(_), _) => Nomination::Keep,
            (None, Some(n)) => Nomination::Set(n.clone()),
            (None, None) => Nomination::Clear,
        }
    }

    /// The chosen node's victims.
    pub fn victims(&self) -> &[Victim] {
        let Some(chosen) = &self.chosen else {
            return &[];
        };
        self.nodes
            .iter()
            .find_map(|(n, v)| match v {
                Verdict::Victims(v) if n == chosen => Some(v.as_slice()),
                _ => None,
            })
            .unwrap_or_default()
    }

    /// The decision as `--explain` log lines.
    pub fn lines(&self, pod: &str) -> Vec<String> {
        if let Some(why) = self.not_eligible {
            return vec![format!("{pod}: preemption: {why}")];
        }
        let mut out: Vec<String> = self
            .nodes
            .iter()
            .map(|(n, v)| match v {
                Verdict::Victims(v) => {
                    let names: Vec<String> = v
                        .iter()
                        .map(|x| format!("{} (priority {})", x.key, x.priority))
                        .collect();
                    format!("{pod}: preemption {n}: would evict {}", names.join(", "))
                }
                Verdict::NotHelpful(r) => format!("{pod}: preemption {n}: {}", r.join(", ")),
            })
            .collect();
        out.push(match &self.chosen {
            Some(n) => format!("{pod}: preemption: nominated {n}"),
            None => format!("{pod}: preemption: no node helps"),
        });
        out
    }

    /// The decision as JSON for the explain annotation.
    pub fn to_json(&self) -> Value {
        if let Some(why) = self.not_eligible {
            return json!({ "notEligible": why });
        }
        let nodes: serde_json::Map<String, Value> = self
            .nodes
            .iter()
            .map(|(n, v)| {
                let v = match v {
                    Verdict::Victims(v) => {
                        json!({"victims": v.iter().map(|x| x.key.clone()).collect::<Vec<_>>()})
                    }
                    Verdict::NotHelpful(r) => json!(r.join(", ")),
                };
                (n.clone(), v)
            })
            .collect();
        json!({"nodes": nodes, "nominated": self.chosen})
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use k8s_openapi::api::core::v1::Node;

    use super::*;
    use crate::scheduler::decide::{Outcome, schedule};

    fn node(name: &str, cpu: &str, taints: Value) -> NodeInfo {
        let n: Node = serde_json::from_value(json!({
            "metadata": {"name": name},
            "spec": {"taints": taints},
            "status": {"allocatable": {"cpu": cpu, "memory": "4Gi", "pods": "110"}},
        }))
        .unwrap();
        NodeInfo::new(Arc::new(n))
    }

    fn pod(name: &str, cpu: &str, priority: i32, extra: Value) -> Pod {
        let mut v = json!({
            "metadata": {"name": name, "namespace": "default"},
            "spec": {"priority": priority, "containers": [{"name": "c",
                "resources": {"requests": {"cpu": cpu}}}]},
        });
        if let Value::Object(m) = extra {
            for (k, x) in m {
                v[k.as_str()] = x;
            }
        }
        serde_json::from_value(v).unwrap()
    }

    fn run_on(n: &mut NodeInfo, name: &str, cpu: &str, priority: i32, started: &str) {
        let p = pod(
            name,
            cpu,
            priority,
            json!({"status": {"startTime": started}}),
        );
        n.add_pod(&format!("default/{name}"), &PodRequests::of(&p));
    }

    fn unschedulable(p: &Pod, nodes: &[&NodeInfo]) -> (String, Nomination, Vec<String>) {
        let d = schedule(p, nodes, &Nominated::new(), 0, true, &mut |_| 0);
        match d.outcome {
            Outcome::Unschedulable {
                message,
                nomination,
                victims,
            } => (message, nomination, victims),
            Outcome::Fits { node } => panic!("fits on {node}"),
        }
    }

    #[test]
    fn victims_are_reprieved_from_the_most_important_down() {
        let mut a = node("a", "2100m", json!([]));
        run_on(&mut a, "batch", "1", 0, "2026-01-01T00:00:00Z");
        run_on(&mut a, "web", "500m", 10, "2026-01-01T00:00:00Z");
        run_on(&mut a, "tiny", "100m", 0, "2026-01-01T00:01:00Z");
        let high = pod("high", "1500m", 100, json!({}));
        let (message, nomination, victims) = unschedulable(&high, &[&a]);
        // web (priority 10) is reprieved first and fits beside the preemptor; then batch
        // (started first) no longer fits; tiny does.
        assert_eq!(victims, ["default/batch"]);
        assert_eq!(nomination, Nomination::Set("a".into()));
        assert_eq!(message, "0/1 nodes are available: 1 Insufficient cpu.");
    }

    #[test]
    fn the_node_with_the_least_important_victims_wins() {
        let mut a = node("a", "1", json!([]));
        run_on(&mut a, "mid", "1", 50, "2026-01-01T00:00:00Z");
        let mut b = node("b", "1", json!([]));
        run_on(&mut b, "low-1", "500m", 0, "2026-01-01T00:00:00Z");
        run_on(&mut b, "low-2", "500m", 0, "2026-01-01T00:00:00Z");
        let mut c = node("c", "1", json!([]));
        run_on(&mut c, "low-3", "1", 0, "2026-01-01T00:00:00Z");
        let high = pod("high", "1", 100, json!({}));
        let (_, nomination, victims) = unschedulable(&high, &[&a, &b, &c]);
        // a's victim has priority 50; b and c both 0, but b's sum of priorities is bigger.
        assert_eq!(nomination, Nomination::Set("c".into()));
        assert_eq!(victims, ["default/low-3"]);
        // Equal in all else: the node whose victims started latest.
        let mut d = node("d", "1", json!([]));
        run_on(&mut d, "low-4", "1", 0, "2026-02-01T00:00:00Z");
        let (_, nomination, _) = unschedulable(&high, &[&a, &b, &c, &d]);
        assert_eq!(nomination, Nomination::Set("d".into()));
    }

    #[test]
    fn equal_priority_never_never_and_unresolvable_nodes_in_upstreams_words() {
        let mut a = node("a", "1", json!([]));
        run_on(&mut a, "peer", "1", 100, "2026-01-01T00:00:00Z");
        let b = node(
            "b",
            "8",
            json!([{"key": "k", "value": "v", "effect": "NoSchedule"}]),
        );
        let mut c = node("c", "1", json!([]));
        run_on(&mut c, "low", "500m", 0, "2026-01-01T00:00:00Z");
        let same = pod("same", "1", 100, json!({}));
        let (message, nomination, victims) = unschedulable(&same, &[&a, &b]);
        assert_eq!(
            message,
            "0/2 nodes are available: 1 Insufficient cpu, 1 node(s) had untolerated taint {k: v}. \
preemption: 0/2 nodes are available: 1 No preemption victims found for incoming pod, \
1 Preemption is not helpful for scheduling."
        );
        assert_eq!(nomination, Nomination::Clear);
        assert!(victims.is_empty());
        // Removing every lower-priority pod is not enough on c: the reason is the filter's.
        let huge = pod("huge", "2", 100, json!({}));
        let (message, _, _) = unschedulable(&huge, &[&c]);
        assert!(
            message.ends_with("preemption: 0/1 nodes are available: 1 Insufficient cpu."),
            "{message}"
        );
        let never = pod(
            "never",
            "1",
            1000,
            json!({"spec": {"priority": 1000, "preemptionPolicy": "Never",
                "containers": [{"name": "c", "resources": {"requests": {"cpu": "1"}}}]}}),
        );
        let (message, nomination, _) = unschedulable(&never, &[&c]);
        assert_eq!(
            message,
            "0/1 nodes are available: 1 Insufficient cpu. preemption: not eligible due to preemptionPolicy=Never."
        );
        assert_eq!(nomination, Nomination::Keep);
    }

    #[test]
    fn a_preemptor_waits_while_its_victims_terminate_then_takes_its_node() {
        let mut a = node("a", "1", json!([]));
        let victim = pod(
            "low",
            "1",
            0,
            json!({"metadata": {"name": "low", "namespace": "default",
                    "deletionTimestamp": "2026-01-01T00:00:00Z"},
                "status": {"conditions": [{"type": "DisruptionTarget", "status": "True",
                    "reason": "PreemptionByScheduler"}]}}),
        );
        a.add_pod("default/low", &PodRequests::of(&victim));
        let high = pod(
            "high",
            "1",
            100,
            json!({"status": {"nominatedNodeName": "a"}}),
        );
        let (message, nomination, _) = unschedulable(&high, &[&a]);
        assert_eq!(
            message,
            "0/1 nodes are available: 1 Insufficient cpu. preemption: not eligible due to a terminating pod on the nominated node."
        );
        assert_eq!(nomination, Nomination::Keep);
        a.remove_pod("default/low");
        let d = schedule(&high, &[&a], &Nominated::new(), 0, false, &mut |_| 0);
        assert!(matches!(d.outcome, Outcome::Fits { ref node } if node == "a"));
    }

    #[test]
    fn evicting_pods_resolves_a_topology_spread_rejection() {
        let labelled = |name: &str, taints: Value| {
            let n: Node = serde_json::from_value(json!({
                "metadata": {"name": name, "labels": {"kubernetes.io/hostname": name}},
                "spec": {"taints": taints},
                "status": {"allocatable": {"cpu": "8", "memory": "8Gi", "pods": "110"}},
            }))
            .unwrap();
            NodeInfo::new(Arc::new(n))
        };
        let web = |name: &str, priority: i32| {
            pod(
                name,
                "100m",
                priority,
                json!({"metadata": {"name": name, "namespace": "default", "labels": {"app": "web"}}}),
            )
        };
        let mut a = labelled("a", json!([]));
        for name in ["web-1", "web-2"] {
            a.add_pod(&format!("default/{name}"), &PodRequests::of(&web(name, 0)));
        }
        // b counts as an empty domain (taints are ignored when counting) but rejects the pod.
        let b = labelled(
            "b",
            json!([{"key": "k", "value": "v", "effect": "NoSchedule"}]),
        );
        let mut incoming = web("web-3", 100);
        incoming.spec.as_mut().unwrap().topology_spread_constraints = Some(vec![
            serde_json::from_value(json!({
                "maxSkew": 1, "topologyKey": "kubernetes.io/hostname",
                "whenUnsatisfiable": "DoNotSchedule",
                "labelSelector": {"matchLabels": {"app": "web"}}}))
            .unwrap(),
        ]);
        let (message, nomination, victims) = unschedulable(&incoming, &[&a, &b]);
        assert!(
            message.starts_with(
                "0/2 nodes are available: 1 node(s) didn't match pod topology spread constraints"
            ),
            "{message}"
        );
        // With either web pod back on a, a would hold 2 against b's 0.
        assert_eq!(victims, ["default/web-1", "default/web-2"]);
        assert_eq!(nomination, Nomination::Set("a".into()));
    }

    #[test]
    fn evicting_pods_resolves_anti_affinity_but_not_a_missing_affinity_pod() {
        let labelled = |name: &str| {
            let n: Node = serde_json::from_value(json!({
                "metadata": {"name": name, "labels": {"kubernetes.io/hostname": name}},
                "status": {"allocatable": {"cpu": "8", "memory": "8Gi", "pods": "110"}},
            }))
            .unwrap();
            NodeInfo::new(Arc::new(n))
        };
        let labelled_pod = |name: &str, app: &str, priority: i32| {
            pod(
                name,
                "100m",
                priority,
                json!({"metadata": {"name": name, "namespace": "default", "labels": {"app": app}}}),
            )
        };
        let term = |app: &str| {
            json!([{"labelSelector": {"matchLabels": {"app": app}},
                    "topologyKey": "kubernetes.io/hostname"}])
        };
        // a: the cache (important) and a web pod of low priority; b: a web pod only.
        let mut a = labelled("a");
        for (name, app, prio) in [("cache", "cache", 1000), ("web-low", "web", 0)] {
            a.add_pod(
                &format!("default/{name}"),
                &PodRequests::of(&labelled_pod(name, app, prio)),
            );
        }
        let mut b = labelled("b");
        b.add_pod(
            "default/web-b",
            &PodRequests::of(&labelled_pod("web-b", "web", 0)),
        );
        let mut incoming = labelled_pod("web-new", "web", 100);
        incoming.spec.as_mut().unwrap().affinity = Some(
            serde_json::from_value(json!({
                "podAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": term("cache")},
                "podAntiAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": term("web")},
            }))
            .unwrap(),
        );
        let (message, nomination, victims) = unschedulable(&incoming, &[&a, &b]);
        assert_eq!(
            message,
            "0/2 nodes are available: 1 node(s) didn't match pod affinity rules, \
1 node(s) didn't match pod anti-affinity rules."
        );
        assert_eq!(victims, ["default/web-low"]);
        assert_eq!(nomination, Nomination::Set("a".into()));
    }

    #[test]
    fn nominated_pods_hold_their_room_against_less_important_pods() {
        let a = node("a", "2", json!([]));
        let high = pod("high", "1500m", 100, json!({}));
        let nominated: Nominated = [(
            "a".to_owned(),
            vec![("default/high".to_owned(), PodRequests::of(&high))],
        )]
        .into();
        let low = pod("low", "1", 0, json!({}));
        let d = schedule(&low, &[&a], &nominated, 0, true, &mut |_| 0);
        assert!(
            matches!(d.outcome, Outcome::Unschedulable { ref message, .. } if message.starts_with("0/1 nodes are available: 1 Insufficient cpu.")),
            "{:?}",
            d.outcome
        );
        // A more important pod does not see the nomination.
        let higher = pod("higher", "1", 200, json!({}));
        let d = schedule(&higher, &[&a], &nominated, 0, true, &mut |_| 0);
        assert!(matches!(d.outcome, Outcome::Fits { .. }));
        assert_eq!(candidates_to_find(50), 50);
        assert_eq!(candidates_to_find(5000), 500);
    }
}
