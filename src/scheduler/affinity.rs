//! InterPodAffinity: place a pod near (podAffinity) or away from (podAntiAffinity) pods with
//! given labels, in the same topology domain (node, zone…). Pure functions of the pod and the
//! nodes with the pods they hold.
//!
//! Mirrors `pkg/scheduler/framework/plugins/interpodaffinity`: PreFilter counts, per topology
//! pair, the existing pods that match all the incoming pod's required affinity terms, those
//! that match each of its required anti-affinity terms, and the existing pods whose required
//! anti-affinity terms match the incoming pod; Filter rejects a node by those counts with
//! upstream's reasons (affinity: unresolvable; anti-affinity: resolvable by preemption), and
//! lets the first pod of a group whose affinity matches itself in. Score adds the weights of the
//! incoming pod's preferred terms, the existing pods' preferred terms and their required
//! affinity terms (`hardPodAffinityWeight` 1) per domain, normalized between the lowest and the
//! highest. Leaves out `matchLabelKeys`/`mismatchLabelKeys` and namespace labels other than
//! `kubernetes.io/metadata.name` (the scheduler does not watch namespaces, so a
//! namespaceSelector sees only the name label every namespace carries).

use std::collections::{BTreeMap, BTreeSet};

use k8s_openapi::api::core::v1::{Affinity, Pod, PodAffinityTerm, WeightedPodAffinityTerm};

use super::filter::{Rejection, node_labels};
use super::node_info::{NodeInfo, PodRequests};
use super::score::MAX_NODE_SCORE;
use super::spread::{Requirement, matches, requirements};

pub const PLUGIN: &str = "InterPodAffinity";
/// Upstream's `ErrReasonAffinityRulesNotMatch`.
pub const AFFINITY_NOT_MATCH: &str = "node(s) didn't match pod affinity rules";
/// Upstream's `ErrReasonAntiAffinityRulesNotMatch`.
pub const ANTI_AFFINITY_NOT_MATCH: &str = "node(s) didn't match pod anti-affinity rules";
/// Upstream's `ErrReasonExistingAntiAffinityRulesNotMatch`.
pub const EXISTING_ANTI_AFFINITY_NOT_MATCH: &str =
    "node(s) didn't satisfy existing pods anti-affinity rules";
/// Upstream's default `hardPodAffinityWeight`: what an existing pod's required affinity term
/// adds to the score of a domain where the incoming pod would satisfy it.
pub const HARD_POD_AFFINITY_WEIGHT: i64 = 1;
/// The label every namespace carries with its own name.
const NAMESPACE_NAME_LABEL: &str = "kubernetes.io/metadata.name";

/// A term made ready to match with (upstream's `framework.AffinityTerm`).
#[derive(Debug, Clone)]
struct Term {
    namespaces: BTreeSet<String>,
    /// `None`: no namespaceSelector (matches no namespace beyond `namespaces`).
    namespace_selector: Option<Vec<Requirement>>,
    /// `None`: no labelSelector, which matches no pod.
    selector: Option<Vec<Requirement>>,
    key: String,
    weight: i64,
}

impl Term {
    /// `owner_ns` is the namespace of the pod the term belongs to: the default when the term
    /// names neither namespaces nor a namespaceSelector.
    fn new(t: &PodAffinityTerm, owner_ns: &str, weight: i64) -> Term {
        let mut namespaces: BTreeSet<String> = t.namespaces.iter().flatten().cloned().collect();
        if namespaces.is_empty() && t.namespace_selector.is_none() {
            namespaces.insert(owner_ns.to_owned());
        }
        Term {
            namespaces,
            namespace_selector: t.namespace_selector.as_ref().map(requirements),
            selector: t.label_selector.as_ref().map(requirements),
            key: t.topology_key.clone(),
            weight,
        }
    }

    /// Whether a pod in namespace `ns` with these labels matches the term.
    fn matches(&self, ns: &str, labels: &BTreeMap<String, String>) -> bool {
        let ns_labels = BTreeMap::from([(NAMESPACE_NAME_LABEL.to_owned(), ns.to_owned())]);
        (self.namespaces.contains(ns) || matches(&self.namespace_selector, &ns_labels))
            && matches(&self.selector, labels)
    }
}

/// A pod's four kinds of terms.
#[derive(Debug, Clone, Default)]
struct Terms {
    required_affinity: Vec<Term>,
    required_anti: Vec<Term>,
    preferred_affinity: Vec<Term>,
    preferred_anti: Vec<Term>,
}

impl Terms {
    fn of(affinity: Option<&Affinity>, ns: &str) -> Terms {
        let required = |ts: Option<&Vec<PodAffinityTerm>>| -> Vec<Term> {
            ts.into_iter()
                .flatten()
                .map(|t| Term::new(t, ns, HARD_POD_AFFINITY_WEIGHT))
                .collect()
        };
        let preferred = |ts: Option<&Vec<WeightedPodAffinityTerm>>| -> Vec<Term> {
            ts.into_iter()
                .flatten()
                .map(|t| Term::new(&t.pod_affinity_term, ns, i64::from(t.weight)))
                .collect()
        };
        let a = affinity.and_then(|a| a.pod_affinity.as_ref());
        let anti = affinity.and_then(|a| a.pod_anti_affinity.as_ref());
        Terms {
            required_affinity: required(a.and_then(|a| {
                a.required_during_scheduling_ignored_during_execution
                    .as_ref()
            })),
            required_anti: required(anti.and_then(|a| {
                a.required_during_scheduling_ignored_during_execution
                    .as_ref()
            })),
            preferred_affinity: preferred(a.and_then(|a| {
                a.preferred_during_scheduling_ignored_during_execution
                    .as_ref()
            })),
            preferred_anti: preferred(anti.and_then(|a| {
                a.preferred_during_scheduling_ignored_during_execution
                    .as_ref()
            })),
        }
    }
}

fn namespace(pod: &Pod) -> &str {
    pod.metadata.namespace.as_deref().unwrap_or_default()
}

fn namespace_of_key(key: &str) -> &str {
    key.split('/').next().unwrap_or_default()
}

/// A topology key and one of its values.
type Pair = (String, String);

/// Adds `delta` to the pair (key, the node's value of key), if the node has the key; a pair
/// that falls to 0 is dropped, so that "no pair" means "no matching pod anywhere".
fn bump(counts: &mut BTreeMap<Pair, i64>, n: &NodeInfo, key: &str, delta: i64) {
    let Some(value) = node_labels(n).get(key) else {
        return;
    };
    let pair = (key.to_owned(), value.clone());
    let c = counts.entry(pair.clone()).or_default();
    *c += delta;
    if *c == 0 {
        counts.remove(&pair);
    }
}

fn count(counts: &BTreeMap<Pair, i64>, key: &str, value: &str) -> i64 {
    counts
        .get(&(key.to_owned(), value.to_owned()))
        .copied()
        .unwrap_or(0)
}

/// PreFilter's state for one pod: its required terms and the counts per topology pair.
#[derive(Debug, Clone, Default)]
pub struct PreFilter {
    ns: String,
    labels: BTreeMap<String, String>,
    terms: Terms,
    /// Whether the pod matches all its own required affinity terms.
    self_match: bool,
    /// Existing pods matching all the required affinity terms, per term's pair.
    affinity: BTreeMap<Pair, i64>,
    /// Existing pods matching each required anti-affinity term, per term's pair.
    anti: BTreeMap<Pair, i64>,
    /// Existing pods' required anti-affinity terms that match the incoming pod.
    existing_anti: BTreeMap<Pair, i64>,
}

impl PreFilter {
    /// Counts over every node, as upstream does.
    pub fn new(pod: &Pod, nodes: &[&NodeInfo]) -> PreFilter {
        let ns = namespace(pod).to_owned();
        let labels = pod.metadata.labels.clone().unwrap_or_default();
        let terms = Terms::of(pod.spec.as_ref().and_then(|s| s.affinity.as_ref()), &ns);
        let self_match = terms
            .required_affinity
            .iter()
            .all(|t| t.matches(&ns, &labels));
        let mut pf = PreFilter {
            ns,
            labels,
            terms,
            self_match,
            ..PreFilter::default()
        };
        for n in nodes {
            for (key, other) in &n.pods {
                pf.update(n, key, other, 1);
            }
        }
        pf
    }

    /// Another pod appears on (`delta` 1) or leaves (`delta` -1) node `n`: upstream's
    /// PreFilterExtensions AddPod and RemovePod, used for nominated pods and by preemption.
    pub fn update(&mut self, n: &NodeInfo, key: &str, other: &PodRequests, delta: i64) {
        let other_ns = namespace_of_key(key);
        let required = &self.terms.required_affinity;
        if !required.is_empty() && required.iter().all(|t| t.matches(other_ns, &other.labels)) {
            for t in required {
                bump(&mut self.affinity, n, &t.key, delta);
            }
        }
        for t in &self.terms.required_anti {
            if t.matches(other_ns, &other.labels) {
                bump(&mut self.anti, n, &t.key, delta);
            }
        }
        if other.pod_affinity.is_some() {
            let theirs = Terms::of(other.pod_affinity.as_ref(), other_ns);
            for t in &theirs.required_anti {
                if t.matches(&self.ns, &self.labels) {
                    bump(&mut self.existing_anti, n, &t.key, delta);
                }
            }
        }
    }

    /// Filter: affinity first (unresolvable: evicting pods cannot bring matching pods
    /// here), then the pod's anti-affinity, then the existing pods' anti-affinity.
    pub fn filter(&self, n: &NodeInfo) -> Result<(), Rejection> {
        let labels = node_labels(n);
        let reject = |reason: &str, unresolvable: bool| {
            Err(Rejection {
                plugin: PLUGIN,
                reasons: vec![reason.into()],
                unresolvable,
            })
        };
        let mut pods_exist = true;
        for t in &self.terms.required_affinity {
            let Some(value) = labels.get(&t.key) else {
                return reject(AFFINITY_NOT_MATCH, true);
            };
            if count(&self.affinity, &t.key, value) <= 0 {
                pods_exist = false;
            }
        }
        // The first pod of a group with affinity to itself: no pod anywhere matches, but the
        // pod matches its own terms, so it may start the group.
        let first_of_its_group = self.affinity.is_empty() && self.self_match;
        if !pods_exist && !first_of_its_group {
            return reject(AFFINITY_NOT_MATCH, true);
        }
        for t in &self.terms.required_anti {
            if let Some(value) = labels.get(&t.key) {
                if count(&self.anti, &t.key, value) > 0 {
                    return reject(ANTI_AFFINITY_NOT_MATCH, false);
                }
            }
        }
        for (k, v) in labels {
            if count(&self.existing_anti, k, v) > 0 {
                return reject(EXISTING_ANTI_AFFINITY_NOT_MATCH, false);
            }
        }
        Ok(())
    }
}

/// Weight per topology pair from one existing pod on node `n` (upstream's
/// `processExistingPod`).
fn score_existing(
    mine: &Terms,
    ns: &str,
    labels: &BTreeMap<String, String>,
    n: &NodeInfo,
    key: &str,
    other: &PodRequests,
    out: &mut BTreeMap<Pair, i64>,
) {
    let other_ns = namespace_of_key(key);
    let mut add = |t: &Term, matched: bool, sign: i64| {
        if matched {
            if let Some(value) = node_labels(n).get(&t.key) {
                *out.entry((t.key.clone(), value.clone())).or_default() += sign * t.weight;
            }
        }
    };
    for t in &mine.preferred_affinity {
        add(t, t.matches(other_ns, &other.labels), 1);
    }
    for t in &mine.preferred_anti {
        add(t, t.matches(other_ns, &other.labels), -1);
    }
    if other.pod_affinity.is_none() {
        return;
    }
    let theirs = Terms::of(other.pod_affinity.as_ref(), other_ns);
    for t in theirs
        .required_affinity
        .iter()
        .chain(&theirs.preferred_affinity)
    {
        add(t, t.matches(ns, labels), 1);
    }
    for t in &theirs.preferred_anti {
        add(t, t.matches(ns, labels), -1);
    }
}

/// Score for every feasible node, normalized to 0–100 between the lowest and the highest
/// raw score; all 0 when no term weighs anywhere.
pub fn score(pod: &Pod, feasible: &[&NodeInfo], all: &[&NodeInfo]) -> Vec<i64> {
    let ns = namespace(pod);
    let labels = pod.metadata.labels.clone().unwrap_or_default();
    let mine = Terms::of(pod.spec.as_ref().and_then(|s| s.affinity.as_ref()), ns);
    let mut pairs = BTreeMap::new();
    for n in all {
        if node_labels(n).is_empty() {
            continue;
        }
        for (key, other) in &n.pods {
            score_existing(&mine, ns, &labels, n, key, other, &mut pairs);
        }
    }
    if pairs.is_empty() {
        return vec![0; feasible.len()];
    }
    let raw: Vec<i64> = feasible
        .iter()
        .map(|n| {
            node_labels(n)
                .iter()
                .filter_map(|(k, v)| pairs.get(&(k.clone(), v.clone())))
                .sum()
        })
        .collect();
    let min = raw.iter().copied().min().unwrap_or(0);
    let max = raw.iter().copied().max().unwrap_or(0);
    raw.iter()
        .map(|&s| {
            if max > min {
                (MAX_NODE_SCORE as f64 * ((s - min) as f64 / (max - min) as f64)) as i64
            } else {
                0
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use k8s_openapi::api::core::v1::Node;
    use serde_json::{Value, json};

    use super::*;

    fn node(name: &str, zone: &str, pods: &[(&str, &str, Value)]) -> NodeInfo {
        let n: Node = serde_json::from_value(json!({
            "metadata": {"name": name, "labels": {"kubernetes.io/hostname": name,
                                                  "topology.kubernetes.io/zone": zone}},
            "status": {"allocatable": {"cpu": "4", "memory": "8Gi", "pods": "110"}},
        }))
        .unwrap();
        let mut info = NodeInfo::new(Arc::new(n));
        for (i, (ns, app, affinity)) in pods.iter().enumerate() {
            let p = pod(ns, &format!("{name}-{i}"), app, affinity.clone());
            info.add_pod(&format!("{ns}/{name}-{i}"), &PodRequests::of(&p));
        }
        info
    }

    fn pod(ns: &str, name: &str, app: &str, affinity: Value) -> Pod {
        serde_json::from_value(json!({
            "metadata": {"name": name, "namespace": ns, "labels": {"app": app}},
            "spec": {"affinity": affinity, "containers": [{"name": "c", "image": "busybox"}]},
        }))
        .unwrap()
    }

    fn term(app: &str, key: &str) -> Value {
        json!({"labelSelector": {"matchLabels": {"app": app}}, "topologyKey": key})
    }

    fn required(kind: &str, t: Value) -> Value {
        json!({ kind: {"requiredDuringSchedulingIgnoredDuringExecution": [t]} })
    }

    fn preferred(kind: &str, weight: i32, t: Value) -> Value {
        json!({ kind: {"preferredDuringSchedulingIgnoredDuringExecution":
            [{"weight": weight, "podAffinityTerm": t}]} })
    }

    const HOST: &str = "kubernetes.io/hostname";
    const ZONE: &str = "topology.kubernetes.io/zone";

    fn verdicts(pf: &PreFilter, nodes: &[&NodeInfo]) -> Vec<Option<&'static str>> {
        nodes
            .iter()
            .map(|n| {
                pf.filter(n).err().map(|r| match r.reasons[0].as_str() {
                    AFFINITY_NOT_MATCH => "affinity",
                    ANTI_AFFINITY_NOT_MATCH => "anti",
                    _ => "existing",
                })
            })
            .collect()
    }

    #[test]
    fn required_anti_affinity_on_hostname_keeps_replicas_apart() {
        let anti = required("podAntiAffinity", term("web", HOST));
        let a = node("a", "z1", &[("default", "web", anti.clone())]);
        let b = node("b", "z1", &[("default", "db", json!(null))]);
        let c = node("c", "z2", &[("other", "web", json!(null))]);
        let nodes = [&a, &b, &c];
        let p = pod("default", "new", "web", anti);
        let pf = PreFilter::new(&p, &nodes);
        // a holds a web pod of the same namespace; c's web pod is in another namespace.
        assert_eq!(verdicts(&pf, &nodes), [Some("anti"), None, None]);
        let rej = pf.filter(&a).unwrap_err();
        assert_eq!((rej.plugin, rej.unresolvable), (PLUGIN, false));
    }

    #[test]
    fn required_affinity_follows_the_matching_pod_over_its_zone() {
        let a = node("a", "z1", &[("default", "cache", json!(null))]);
        let b = node("b", "z1", &[]);
        let c = node("c", "z2", &[]);
        let nodes = [&a, &b, &c];
        let by_host = pod(
            "default",
            "app",
            "app",
            required("podAffinity", term("cache", HOST)),
        );
        let pf = PreFilter::new(&by_host, &nodes);
        assert_eq!(
            verdicts(&pf, &nodes),
            [None, Some("affinity"), Some("affinity")]
        );
        assert!(pf.filter(&b).unwrap_err().unresolvable);
        let by_zone = pod(
            "default",
            "app",
            "app",
            required("podAffinity", term("cache", ZONE)),
        );
        let pf = PreFilter::new(&by_zone, &nodes);
        assert_eq!(verdicts(&pf, &nodes), [None, None, Some("affinity")]);
    }

    #[test]
    fn the_first_pod_of_a_self_affine_group_may_go_anywhere() {
        let a = node("a", "z1", &[]);
        let b = node("b", "z2", &[("default", "db", json!(null))]);
        let nodes = [&a, &b];
        let me = pod(
            "default",
            "first",
            "web",
            required("podAffinity", term("web", ZONE)),
        );
        let pf = PreFilter::new(&me, &nodes);
        assert_eq!(verdicts(&pf, &nodes), [None, None]);
        // A pod whose terms it does not match itself gets no such pass.
        let stranger = pod(
            "default",
            "s",
            "api",
            required("podAffinity", term("web", ZONE)),
        );
        let pf = PreFilter::new(&stranger, &nodes);
        assert_eq!(verdicts(&pf, &nodes), [Some("affinity"), Some("affinity")]);
    }

    #[test]
    fn existing_pods_anti_affinity_keeps_the_incoming_pod_out_of_their_zone() {
        let anti = required("podAntiAffinity", term("noisy", ZONE));
        let a = node("a", "z1", &[("default", "quiet", anti)]);
        let b = node("b", "z1", &[]);
        let c = node("c", "z2", &[]);
        let nodes = [&a, &b, &c];
        let p = pod("default", "n", "noisy", json!(null));
        let pf = PreFilter::new(&p, &nodes);
        assert_eq!(
            verdicts(&pf, &nodes),
            [Some("existing"), Some("existing"), None]
        );
        // Preemption's dry run: the quiet pod leaves a, and the zone opens again.
        let mut pf2 = pf.clone();
        let (k, r) = a.pods.iter().next().unwrap();
        pf2.update(&a, k, r, -1);
        assert_eq!(verdicts(&pf2, &nodes), [None, None, None]);
    }

    #[test]
    fn namespaces_and_namespace_selector_choose_where_matching_pods_count() {
        let a = node("a", "z1", &[("team-b", "cache", json!(null))]);
        let b = node("b", "z2", &[("team-c", "cache", json!(null))]);
        let nodes = [&a, &b];
        let mut t = term("cache", HOST);
        t["namespaces"] = json!(["team-b"]);
        let p = pod("team-a", "p", "app", required("podAffinity", t));
        assert_eq!(
            verdicts(&PreFilter::new(&p, &nodes), &nodes),
            [None, Some("affinity")]
        );
        let mut t = term("cache", HOST);
        t["namespaceSelector"] = json!({"matchLabels": {NAMESPACE_NAME_LABEL: "team-c"}});
        let p = pod("team-a", "p", "app", required("podAffinity", t));
        assert_eq!(
            verdicts(&PreFilter::new(&p, &nodes), &nodes),
            [Some("affinity"), None]
        );
        let mut t = term("cache", HOST);
        t["namespaceSelector"] = json!({});
        let p = pod("team-a", "p", "app", required("podAffinity", t));
        assert_eq!(verdicts(&PreFilter::new(&p, &nodes), &nodes), [None, None]);
    }

    #[test]
    fn preferred_terms_score_between_the_lowest_and_the_highest() {
        let a = node("a", "z1", &[("default", "web", json!(null))]);
        let b = node("b", "z1", &[]);
        let c = node("c", "z2", &[]);
        let nodes = [&a, &b, &c];
        let p = pod(
            "default",
            "p",
            "web",
            preferred("podAntiAffinity", 100, term("web", HOST)),
        );
        // a: -100, b and c: 0.
        assert_eq!(score(&p, &nodes, &nodes), [0, 100, 100]);
        let p = pod(
            "default",
            "p",
            "api",
            preferred("podAffinity", 10, term("web", ZONE)),
        );
        assert_eq!(score(&p, &nodes, &nodes), [100, 100, 0]);
        let p = pod("default", "p", "api", json!(null));
        assert_eq!(score(&p, &nodes, &nodes), [0, 0, 0]);
    }

    #[test]
    fn existing_pods_required_affinity_weighs_with_the_hard_weight() {
        // The cache on a wants to be next to web pods: a web pod scores a's zone higher.
        let wants_web = required("podAffinity", term("web", ZONE));
        let a = node("a", "z1", &[("default", "cache", wants_web)]);
        let b = node("b", "z2", &[]);
        let nodes = [&a, &b];
        let p = pod("default", "p", "web", json!(null));
        assert_eq!(score(&p, &nodes, &nodes), [100, 0]);
        // Their preferred anti-affinity pushes the incoming pod away.
        let avoid = preferred("podAntiAffinity", 5, term("web", HOST));
        let a = node("a", "z1", &[("default", "batch", avoid)]);
        let nodes = [&a, &b];
        assert_eq!(score(&p, &nodes, &nodes), [0, 100]);
    }
}
