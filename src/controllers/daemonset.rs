//! The daemonset controller: one pod of each DaemonSet on every node that fits it.
//!
//! Mirrors `pkg/controller/daemon`: the daemon predicates (`NodeShouldRunDaemonPod`: node
//! name, nodeSelector and required node affinity, NoSchedule/NoExecute taints against the
//! pod's tolerations plus the automatic daemon tolerations), pods bound to their node the way
//! upstream does since 1.12 (required node affinity on `metadata.name`, which the scheduler
//! honours), the `controller-revision-hash` and `pod-template-generation` labels, one
//! ControllerRevision per template (`kubectl rollout history ds/x`), failed pods deleted and
//! recreated with a per-node backoff (Event FailedDaemonPod), surplus pods deleted (oldest
//! kept), the RollingUpdate strategy (within `maxUnavailable`, or with `maxSurge` a new pod
//! beside the old one until it is available) and OnDelete, and the status that `kubectl get
//! ds` and `kubectl rollout status ds/x` read. Leaves out slow-start create batches, adoption
//! of orphaned pods, ControllerRevision hash collisions, and upstream's surge rule that keeps
//! misscheduled pods until replacements elsewhere are available. Pods left bound to a deleted node are not this controller's job: podgc
//! removes them, as upstream.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::{Duration, Instant};

use k8s_openapi::api::apps::v1::{ControllerRevision, DaemonSet, DaemonSetStatus};
use k8s_openapi::api::core::v1::{
    Affinity, Node, NodeAffinity, NodeSelector, NodeSelectorRequirement, NodeSelectorTerm, Pod,
    PodTemplateSpec, Taint, Toleration,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use k8s_openapi::apimachinery::pkg::runtime::RawExtension;
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use k8s_openapi::jiff::Timestamp;
use kube::api::{Api, DeleteParams, Patch, PatchParams, PostParams};
use kube::runtime::reflector::Store;
use serde_json::json;
use tokio::sync::Notify;

use super::replicaset::{is_ready, pods_by_owner};
use super::runner::{self, Expectations};
use super::{RESYNC, controller_of, owner_ref, pod_from_template};
use crate::component::events::{Recorder, reference};
use crate::component::{chain, log, namespace_terminating};
use crate::scheduler::filter::{term_matches, tolerates};

/// The label naming the ControllerRevision (template) a daemon pod was made from.
pub const HASH_LABEL: &str = "controller-revision-hash";
/// The label with the DaemonSet's template generation when the pod was made.
pub const GENERATION_LABEL: &str = "pod-template-generation";
/// Where the API server records the template generation (apps/v1 keeps it as an annotation).
pub const GENERATION_ANNOTATION: &str = "deprecated.daemonset.template.generation";

/// The tolerations every daemon pod gets (`AddOrUpdateDaemonPodTolerations`): a daemon keeps
/// running on a node that is unhealthy, under pressure or cordoned, because it is part of the
/// node. `node.kubernetes.io/network-unavailable` only for host-network pods, which need no
/// pod network.
pub fn daemon_tolerations(host_network: bool) -> Vec<Toleration> {
    let t = |key: &str, effect: &str| Toleration {
        key: Some(key.into()),
        operator: Some("Exists".into()),
        effect: Some(effect.into()),
        ..Default::default()
    };
    let mut out = vec![
        t("node.kubernetes.io/not-ready", "NoExecute"),
        t("node.kubernetes.io/unreachable", "NoExecute"),
        t("node.kubernetes.io/disk-pressure", "NoSchedule"),
        t("node.kubernetes.io/memory-pressure", "NoSchedule"),
        t("node.kubernetes.io/pid-pressure", "NoSchedule"),
        t("node.kubernetes.io/unschedulable", "NoSchedule"),
    ];
    if host_network {
        out.push(t("node.kubernetes.io/network-unavailable", "NoSchedule"));
    }
    out
}

/// The template generation: the API server's annotation, else `metadata.generation`.
pub fn template_generation(ds: &DaemonSet) -> Option<i64> {
    ds.metadata
        .annotations
        .as_ref()
        .and_then(|a| a.get(GENERATION_ANNOTATION))
        .and_then(|g| g.parse().ok())
        .or(ds.metadata.generation)
}

/// The template the DaemonSet's pods are made from (`CreatePodTemplate`): the user's template
/// with the daemon tolerations and the revision labels added.
pub fn pod_template(ds: &DaemonSet, hash: &str) -> PodTemplateSpec {
    let mut t = ds
        .spec
        .as_ref()
        .map(|s| s.template.clone())
        .unwrap_or_default();
    let meta = t.metadata.get_or_insert_with(Default::default);
    let labels = meta.labels.get_or_insert_with(Default::default);
    labels.insert(HASH_LABEL.into(), hash.into());
    if let Some(g) = template_generation(ds) {
        labels.insert(GENERATION_LABEL.into(), g.to_string());
    }
    let spec = t.spec.get_or_insert_with(Default::default);
    let host_network = spec.host_network == Some(true);
    let tols = spec.tolerations.get_or_insert_with(Vec::new);
    for want in daemon_tolerations(host_network) {
        // Upstream's AddOrUpdateTolerationInPodSpec: an identical toleration is not repeated.
        if !tols.iter().any(|have| {
            have.key == want.key
                && have.operator.as_deref().unwrap_or("Equal") == "Exists"
                && have.effect == want.effect
        }) {
            tols.push(want);
        }
    }
    t
}

fn name_requirement(node: &str) -> NodeSelectorRequirement {
    NodeSelectorRequirement {
        key: "metadata.name".into(),
        operator: "In".into(),
        values: Some(vec![node.into()]),
    }
}

/// The pod for one node (`ReplaceDaemonSetPodNodeNameNodeAffinity`): its required node
/// affinity becomes exactly `metadata.name In [node]`, so the scheduler places it there and
/// nowhere else. The template's own terms are dropped: the controller already checked that
/// the node matches them.
pub fn daemon_pod(ds: &DaemonSet, template: &PodTemplateSpec, node: &str) -> Pod {
    let mut pod = pod_from_template(ds, template);
    let required = NodeSelector {
        node_selector_terms: vec![NodeSelectorTerm {
            match_fields: Some(vec![name_requirement(node)]),
            ..Default::default()
        }],
    };
    let affinity = pod
        .spec
        .get_or_insert_default()
        .affinity
        .get_or_insert_with(Affinity::default);
    affinity
        .node_affinity
        .get_or_insert_with(NodeAffinity::default)
        .required_during_scheduling_ignored_during_execution = Some(required);
    pod
}

/// The node a daemon pod is for (`GetTargetNodeName`): its `nodeName` once scheduled, before
/// that the node its `metadata.name` affinity names.
pub fn target_node(p: &Pod) -> Option<String> {
    let spec = p.spec.as_ref()?;
    if let Some(n) = spec.node_name.as_ref().filter(|n| !n.is_empty()) {
        return Some(n.clone());
    }
    let terms = &spec
        .affinity
        .as_ref()?
        .node_affinity
        .as_ref()?
        .required_during_scheduling_ignored_during_execution
        .as_ref()?
        .node_selector_terms;
    terms
        .iter()
        .flat_map(|t| t.match_fields.iter().flatten())
        .find(|r| {
            r.key == "metadata.name"
                && r.operator == "In"
                && r.values.as_ref().is_some_and(|v| v.len() == 1)
        })
        .and_then(|r| r.values.as_ref()?.first().cloned())
}

/// Upstream's `NodeShouldRunDaemonPod` for the pod the DaemonSet would put on `node`:
/// `(should_run, should_continue_running)`. A node whose labels, name or affinity do not fit
/// gets no pod and loses its pod; an untolerated NoSchedule taint only stops new pods; an
/// untolerated NoExecute taint also removes a running one.
pub fn should_run(template: &PodTemplateSpec, node: &Node) -> (bool, bool) {
    let Some(spec) = template.spec.as_ref() else {
        return (false, false);
    };
    let name = node.metadata.name.as_deref().unwrap_or_default();
    static NO_LABELS: BTreeMap<String, String> = BTreeMap::new();
    let labels = node.metadata.labels.as_ref().unwrap_or(&NO_LABELS);
    let fits_name = spec
        .node_name
        .as_deref()
        .is_none_or(|n| n.is_empty() || n == name);
    let fits_selector = spec
        .node_selector
        .iter()
        .flatten()
        .all(|(k, v)| labels.get(k) == Some(v));
    let fits_affinity = spec
        .affinity
        .as_ref()
        .and_then(|a| a.node_affinity.as_ref())
        .and_then(|a| {
            a.required_during_scheduling_ignored_during_execution
                .as_ref()
        })
        .is_none_or(|req| {
            req.node_selector_terms
                .iter()
                .any(|t| term_matches(t, labels, name))
        });
    if !(fits_name && fits_selector && fits_affinity) {
        return (false, false);
    }
    let tols = spec.tolerations.as_deref().unwrap_or_default();
    let taints: &[Taint] = node
        .spec
        .as_ref()
        .and_then(|s| s.taints.as_deref())
        .unwrap_or_default();
    let untolerated = |effect: &str| {
        taints
            .iter()
            .any(|t| t.effect == effect && !tols.iter().any(|tol| tolerates(tol, t)))
    };
    let no_execute = untolerated("NoExecute");
    (!no_execute && !untolerated("NoSchedule"), !no_execute)
}

fn is_failed(p: &Pod) -> bool {
    matches!(
        p.status.as_ref().and_then(|s| s.phase.as_deref()),
        Some("Failed" | "Succeeded")
    )
}

fn created(p: &Pod) -> (String, String) {
    (
        p.metadata
            .creation_timestamp
            .as_ref()
            .map(|t| t.0.to_string())
            .unwrap_or_default(),
        p.metadata.name.clone().unwrap_or_default(),
    )
}

/// Whether a pod has been Ready for `min_ready` seconds (`IsPodAvailable`).
pub fn is_available(p: &Pod, min_ready: i32, now: Timestamp) -> bool {
    if !is_ready(p) {
        return false;
    }
    if min_ready <= 0 {
        return true;
    }
    let since = p
        .status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .and_then(|cs| cs.iter().find(|c| c.type_ == "Ready"))
        .and_then(|c| c.last_transition_time.as_ref());
    since.is_some_and(|t| t.0.as_second() + i64::from(min_ready) <= now.as_second())
}

/// Whether a pod was made from the current template (`IsPodUpdated`): its revision hash or
/// its template generation matches.
pub fn is_updated(p: &Pod, hash: &str, generation: Option<i64>) -> bool {
    let labels = p.metadata.labels.as_ref();
    let label = |k: &str| labels.and_then(|l| l.get(k)).map(String::as_str);
    (!hash.is_empty() && label(HASH_LABEL) == Some(hash))
        || generation.is_some_and(|g| label(GENERATION_LABEL) == Some(g.to_string().as_str()))
}

/// A DaemonSet's pods that still count, by the node they are for: a finished pod already
/// being deleted is gone (`getNodesToDaemonPods`), oldest first on each node.
pub fn by_node(pods: &[Arc<Pod>]) -> BTreeMap<String, Vec<Arc<Pod>>> {
    let mut out: BTreeMap<String, Vec<Arc<Pod>>> = BTreeMap::new();
    for p in pods {
        if is_failed(p) && p.metadata.deletion_timestamp.is_some() {
            continue;
        }
        if let Some(n) = target_node(p) {
            out.entry(n).or_default().push(p.clone());
        }
    }
    for v in out.values_mut() {
        v.sort_by_key(|p| created(p));
    }
    out
}

/// What one pass of `manage` does.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Plan {
    /// Nodes that need a daemon pod.
    pub create: Vec<String>,
    /// Pods to delete: on nodes that no longer fit, or beyond one per node.
    pub delete: Vec<String>,
    /// Failed pods to delete, with their node (subject to the failed-pod backoff).
    pub failed: Vec<(String, String)>,
}

impl Plan {
    pub fn is_empty(&self) -> bool {
        self.create.is_empty() && self.delete.is_empty() && self.failed.is_empty()
    }
}

/// Upstream's `manage` and `podsShouldBeOnNode`, pure: for every node, whether it needs a
/// pod, which of its pods go. Unscheduled pods for nodes that no longer exist go too (the
/// scheduler would never place them, so podgc never would remove them). With `surge`, a node
/// may hold an old and a new pod while the new one is not yet available.
pub fn manage(
    rev: &Revision,
    surge: bool,
    nodes: &[Arc<Node>],
    pods: &BTreeMap<String, Vec<Arc<Pod>>>,
) -> Plan {
    let template = rev.template;
    let mut plan = Plan::default();
    let name = |p: &Pod| p.metadata.name.clone().unwrap_or_default();
    for node in nodes {
        let n = node.metadata.name.clone().unwrap_or_default();
        let (run, keep) = should_run(template, node);
        let on_node = pods.get(&n).map(Vec::as_slice).unwrap_or_default();
        if run && on_node.is_empty() {
            plan.create.push(n);
        } else if keep {
            let mut running = Vec::new();
            for p in on_node {
                if p.metadata.deletion_timestamp.is_some() {
                    continue;
                }
                match p.status.as_ref().and_then(|s| s.phase.as_deref()) {
                    Some("Failed") => plan.failed.push((n.clone(), name(p))),
                    // A daemon is not meant to finish: one that did is replaced.
                    Some("Succeeded") => plan.delete.push(name(p)),
                    _ => running.push(p),
                }
            }
            if !surge {
                // More than one running pod on a node: keep the oldest.
                plan.delete.extend(running.iter().skip(1).map(|p| name(p)));
                continue;
            }
            // Surge: the oldest new and the oldest old pod may both stay while the new one
            // is not available yet and the old one is ready; every other pod goes.
            let (mut newest, mut oldest) = (None, None);
            for p in running {
                let slot = if rev.updated(p) {
                    &mut newest
                } else {
                    &mut oldest
                };
                if slot.is_none() {
                    *slot = Some(p);
                } else {
                    plan.delete.push(name(p));
                }
            }
            if let (Some(new), Some(old)) = (newest, oldest) {
                if !is_ready(old) || rev.available(new) {
                    plan.delete.push(name(old));
                }
            }
        } else {
            plan.delete.extend(
                on_node
                    .iter()
                    .filter(|p| p.metadata.deletion_timestamp.is_none())
                    .map(|p| name(p)),
            );
        }
    }
    for (n, on_node) in pods {
        if !nodes
            .iter()
            .any(|node| node.metadata.name.as_deref() == Some(n.as_str()))
        {
            plan.delete.extend(
                on_node
                    .iter()
                    .filter(|p| {
                        p.metadata.deletion_timestamp.is_none()
                            && p.spec
                                .as_ref()
                                .and_then(|s| s.node_name.as_deref())
                                .is_none_or(str::is_empty)
                    })
                    .map(|p| name(p)),
            );
        }
    }
    plan
}

/// `maxSurge` and `maxUnavailable` as node counts (`SurgeCount`, `UnavailableCount`):
/// percentages of the desired nodes rounded up; unavailable defaults to 1, surge to 0, and if
/// both come to 0 unavailable is 1, as upstream.
pub fn fenceposts(
    surge: Option<&IntOrString>,
    unavailable: Option<&IntOrString>,
    desired: usize,
) -> (usize, usize) {
    let count = |v: Option<&IntOrString>, default: usize| match v {
        None => default,
        Some(IntOrString::Int(i)) => (*i).max(0) as usize,
        Some(IntOrString::String(s)) => {
            let pct: usize = s.trim_end_matches('%').parse().unwrap_or(0);
            (desired * pct).div_ceil(100)
        }
    };
    let (s, u) = (count(surge, 0), count(unavailable, 1));
    if s == 0 && u == 0 { (0, 1) } else { (s, u) }
}

/// The current revision of a DaemonSet, as the rollout and the status judge pods by it.
pub struct Revision<'a> {
    /// The pod template with the daemon tolerations and revision labels.
    pub template: &'a PodTemplateSpec,
    pub hash: &'a str,
    pub generation: Option<i64>,
    pub min_ready: i32,
    pub now: Timestamp,
}

impl Revision<'_> {
    fn updated(&self, p: &Pod) -> bool {
        is_updated(p, self.hash, self.generation)
    }

    fn available(&self, p: &Pod) -> bool {
        is_available(p, self.min_ready, self.now)
    }
}

/// Upstream's `rollingUpdate` without surge, pure: the old pods to delete now so that at most
/// `max_unavailable` desired nodes lack an available up-to-date pod. An old pod that is not
/// available anyway is always replaced (and counts against the budget, as in upstream since
/// 1.22).
pub fn rolling_update(
    rev: &Revision,
    nodes: &[Arc<Node>],
    pods: &BTreeMap<String, Vec<Arc<Pod>>>,
    max_unavailable: usize,
) -> Vec<String> {
    let mut per_node: BTreeMap<&str, &[Arc<Pod>]> = pods
        .iter()
        .map(|(n, v)| (n.as_str(), v.as_slice()))
        .collect();
    for node in nodes {
        if should_run(rev.template, node).0 {
            let n = node.metadata.name.as_deref().unwrap_or_default();
            per_node.entry(n).or_insert(&[]);
        }
    }
    let mut unavailable = 0;
    let (mut replace, mut candidates) = (Vec::new(), Vec::new());
    for on_node in per_node.values() {
        let (mut new, mut old, mut ok) = (None, None, true);
        for p in on_node
            .iter()
            .filter(|p| p.metadata.deletion_timestamp.is_none())
        {
            let slot = if rev.updated(p) { &mut new } else { &mut old };
            if slot.is_some() {
                ok = false;
            }
            *slot = Some(p);
        }
        match (ok, new, old) {
            // Two of a kind, both or neither: the manage loop sorts this node out first.
            (false, _, _) | (true, None, None) | (true, Some(_), Some(_)) => unavailable += 1,
            (true, Some(new), None) => {
                if !rev.available(new) {
                    unavailable += 1;
                }
            }
            (true, None, Some(old)) => {
                let name = old.metadata.name.clone().unwrap_or_default();
                if !rev.available(old) {
                    replace.push(name);
                    unavailable += 1;
                } else if unavailable < max_unavailable {
                    candidates.push(name);
                }
            }
        }
    }
    let room = max_unavailable
        .saturating_sub(unavailable)
        .min(candidates.len());
    replace.extend(candidates.into_iter().take(room));
    replace
}

/// Upstream's `rollingUpdate` with surge, pure: start a new pod beside the old one on at most
/// `max_surge` nodes at a time, delete an old pod once the new one beside it is available. A
/// node whose old pod is not available gets its new pod at once. Returns the nodes to create
/// on and the pods to delete.
pub fn surge_update(
    rev: &Revision,
    nodes: &[Arc<Node>],
    pods: &BTreeMap<String, Vec<Arc<Pod>>>,
    max_surge: usize,
) -> Plan {
    let mut plan = Plan::default();
    let mut surging = 0;
    let mut candidates = Vec::new();
    for (node, on_node) in pods {
        let (mut new, mut old, mut ok) = (None, None, true);
        for p in on_node
            .iter()
            .filter(|p| p.metadata.deletion_timestamp.is_none())
        {
            let slot = if rev.updated(p) { &mut new } else { &mut old };
            if slot.is_some() {
                ok = false;
            }
            *slot = Some(p);
        }
        match (ok, new, old) {
            // The manage loop sorts this node out first; count it as surging meanwhile.
            (false, _, _) => surging += 1,
            (true, _, None) => {}
            (true, None, Some(old)) => {
                if !rev.available(old) {
                    let fits = nodes.iter().any(|n| {
                        n.metadata.name.as_ref() == Some(node) && should_run(rev.template, n).0
                    });
                    if fits {
                        plan.create.push(node.clone());
                    }
                } else if surging < max_surge {
                    candidates.push(node.clone());
                }
            }
            (true, Some(new), Some(old)) => {
                if rev.available(new) {
                    plan.delete
                        .push(old.metadata.name.clone().unwrap_or_default());
                } else {
                    surging += 1;
                }
            }
        }
    }
    let room = max_surge.saturating_sub(surging).min(candidates.len());
    plan.create.extend(candidates.into_iter().take(room));
    plan
}

/// Upstream's `updateDaemonSetStatus`, pure. `observedGeneration` is set by the caller.
pub fn status(
    rev: &Revision,
    nodes: &[Arc<Node>],
    pods: &BTreeMap<String, Vec<Arc<Pod>>>,
) -> DaemonSetStatus {
    let mut s = DaemonSetStatus::default();
    let (mut available, mut ready, mut updated) = (0, 0, 0);
    for node in nodes {
        let n = node.metadata.name.as_deref().unwrap_or_default();
        let on_node = pods.get(n).filter(|v| !v.is_empty());
        if should_run(rev.template, node).0 {
            s.desired_number_scheduled += 1;
            let Some(on_node) = on_node else { continue };
            s.current_number_scheduled += 1;
            let pod = &on_node[0];
            if is_ready(pod) {
                ready += 1;
                if rev.available(pod) {
                    available += 1;
                }
            }
            if rev.updated(pod) {
                updated += 1;
            }
        } else if on_node.is_some() {
            s.number_misscheduled += 1;
        }
    }
    s.number_ready = ready;
    s.number_available = Some(available);
    s.updated_number_scheduled = Some(updated);
    s.number_unavailable = Some(s.desired_number_scheduled - available);
    s
}

/// Per-node backoff for deleting failed daemon pods (upstream's `failedPodsBackoff`: 1 s,
/// doubling, at most 15 minutes), so a node whose kubelet keeps rejecting the pod is not
/// hammered.
#[derive(Debug, Default)]
struct Backoff {
    next: HashMap<String, (Instant, Duration)>,
}

impl Backoff {
    /// Whether the key may act now; if so, the next time waits twice as long.
    fn allow(&mut self, key: &str) -> bool {
        let now = Instant::now();
        match self.next.get_mut(key) {
            Some((at, _)) if now < *at => false,
            Some((at, d)) => {
                *d = (*d * 2).min(Duration::from_secs(900));
                *at = now + *d;
                true
            }
            None => {
                let d = Duration::from_secs(1);
                self.next.insert(key.to_owned(), (now + d, d));
                true
            }
        }
    }
}

struct Controller {
    client: kube::Client,
    ds: Store<DaemonSet>,
    pods: Store<Pod>,
    nodes: Store<Node>,
    revisions: Store<ControllerRevision>,
    events: Recorder,
    expectations: Expectations,
    backoff: Backoff,
}

impl Controller {
    async fn pass(&mut self) {
        let owned = pods_by_owner(&self.pods);
        let mut nodes = self.nodes.state();
        nodes.sort_by(|a, b| a.metadata.name.cmp(&b.metadata.name));
        let mut revs: HashMap<String, Vec<Arc<ControllerRevision>>> = HashMap::new();
        for r in self.revisions.state() {
            if let Some(o) = controller_of(r.metadata.owner_references.as_ref()) {
                revs.entry(o.uid.clone()).or_default().push(r);
            }
        }
        for ds in self.ds.state() {
            let uid = ds.metadata.uid.clone().unwrap_or_default();
            let owned = owned.get(&uid).cloned().unwrap_or_default();
            let revs = revs.get(&uid).cloned().unwrap_or_default();
            self.sync(&ds, &nodes, &owned, &revs).await;
        }
    }

    async fn sync(
        &mut self,
        ds: &DaemonSet,
        nodes: &[Arc<Node>],
        owned: &[Arc<Pod>],
        revs: &[Arc<ControllerRevision>],
    ) {
        if ds.metadata.deletion_timestamp.is_some() {
            return;
        }
        let uid = ds.metadata.uid.clone().unwrap_or_default();
        let ns = ds.metadata.namespace.clone().unwrap_or_default();
        let name = ds.metadata.name.clone().unwrap_or_default();
        let Some(spec) = ds.spec.as_ref() else { return };
        let hash = super::deployment::template_hash(&spec.template);
        self.history(ds, &hash, revs, owned).await;
        let template = pod_template(ds, &hash);
        let rev = Revision {
            template: &template,
            hash: &hash,
            generation: template_generation(ds),
            min_ready: spec.min_ready_seconds.unwrap_or(0),
            now: Timestamp::now(),
        };
        let pods = by_node(owned);
        let live: HashMap<&str, bool> = owned
            .iter()
            .map(|p| {
                (
                    p.metadata.name.as_deref().unwrap_or_default(),
                    p.metadata.deletion_timestamp.is_none(),
                )
            })
            .collect();
        if self.expectations.satisfied(&uid, |n| live.get(n).copied()) {
            let desired = nodes.iter().filter(|n| should_run(&template, n).0).count();
            let ru = spec
                .update_strategy
                .as_ref()
                .and_then(|s| s.rolling_update.as_ref());
            let (max_surge, max_unavailable) = fenceposts(
                ru.and_then(|r| r.max_surge.as_ref()),
                ru.and_then(|r| r.max_unavailable.as_ref()),
                desired,
            );
            let rolling = spec
                .update_strategy
                .as_ref()
                .is_none_or(|s| s.type_.as_deref().unwrap_or("RollingUpdate") == "RollingUpdate");
            let surge = rolling && max_surge > 0;
            let mut plan = manage(&rev, surge, nodes, &pods);
            for (node, pod) in std::mem::take(&mut plan.failed) {
                if self.backoff.allow(&format!("{uid}/{node}")) {
                    let msg = format!(
                        "Found failed daemon pod {ns}/{pod} on node {node}, will try to kill it"
                    );
                    self.events
                        .emit(reference(ds), "Warning", "FailedDaemonPod", &msg)
                        .await;
                    plan.delete.push(pod);
                }
            }
            if plan.is_empty() && surge {
                plan = surge_update(&rev, nodes, &pods, max_surge);
            } else if plan.is_empty() && rolling {
                plan.delete = rolling_update(&rev, nodes, &pods, max_unavailable);
            }
            self.act(ds, &template, plan).await;
        }
        let mut st = status(&rev, nodes, &pods);
        st.observed_generation = ds.metadata.generation;
        let cur = ds.status.clone().unwrap_or_default();
        let same = cur.desired_number_scheduled == st.desired_number_scheduled
            && cur.current_number_scheduled == st.current_number_scheduled
            && cur.number_misscheduled == st.number_misscheduled
            && cur.number_ready == st.number_ready
            && cur.number_available.unwrap_or(0) == st.number_available.unwrap_or(0)
            && cur.number_unavailable.unwrap_or(0) == st.number_unavailable.unwrap_or(0)
            && cur.updated_number_scheduled.unwrap_or(0)
                == st.updated_number_scheduled.unwrap_or(0)
            && cur.observed_generation == st.observed_generation;
        if !same {
            let api: Api<DaemonSet> = Api::namespaced(self.client.clone(), &ns);
            let patch = json!({"status": {
                "desiredNumberScheduled": st.desired_number_scheduled,
                "currentNumberScheduled": st.current_number_scheduled,
                "numberMisscheduled": st.number_misscheduled,
                "numberReady": st.number_ready,
                "numberAvailable": st.number_available,
                "numberUnavailable": st.number_unavailable,
                "updatedNumberScheduled": st.updated_number_scheduled,
                "observedGeneration": st.observed_generation,
            }});
            if let Err(e) = api
                .patch_status(&name, &PatchParams::default(), &Patch::Merge(&patch))
                .await
            {
                if !matches!(&e, kube::Error::Api(s) if s.code == 404) {
                    log(
                        'W',
                        format!("daemonset {ns}/{name}: updating status: {}", chain(&e)),
                    );
                }
            }
        }
    }

    /// Creates and deletes what the plan says, recording expectations and Events.
    async fn act(&mut self, ds: &DaemonSet, template: &PodTemplateSpec, plan: Plan) {
        let uid = ds.metadata.uid.clone().unwrap_or_default();
        let ns = ds.metadata.namespace.clone().unwrap_or_default();
        let name = ds.metadata.name.clone().unwrap_or_default();
        let api: Api<Pod> = Api::namespaced(self.client.clone(), &ns);
        let creates = plan.create.iter().map(|node| {
            let (api, pod) = (api.clone(), daemon_pod(ds, template, node));
            async move { (node, api.create(&PostParams::default(), &pod).await) }
        });
        for (node, r) in futures::future::join_all(creates).await {
            match r {
                Ok(p) => {
                    let pn = p.metadata.name.clone().unwrap_or_default();
                    self.expectations.created(&uid, &pn);
                    self.events
                        .emit(
                            reference(ds),
                            "Normal",
                            "SuccessfulCreate",
                            &format!("Created pod: {pn}"),
                        )
                        .await;
                }
                Err(e) if namespace_terminating(&e) => {}
                Err(e) => {
                    let msg = format!("Error creating: {}", chain(&e));
                    log('E', format!("daemonset {ns}/{name}: node {node}: {msg}"));
                    self.events
                        .emit(reference(ds), "Warning", "FailedCreate", &msg)
                        .await;
                }
            }
        }
        for pn in plan.delete {
            match api.delete(&pn, &DeleteParams::default()).await {
                Ok(_) => {
                    self.expectations.deleted(&uid, &pn);
                    self.events
                        .emit(
                            reference(ds),
                            "Normal",
                            "SuccessfulDelete",
                            &format!("Deleted pod: {pn}"),
                        )
                        .await;
                }
                Err(kube::Error::Api(s)) if s.code == 404 => {}
                Err(e) => log(
                    'E',
                    format!("daemonset {ns}/{name}: deleting pod {pn}: {}", chain(&e)),
                ),
            }
        }
    }

    /// Keeps the DaemonSet's history (`constructHistory`): a ControllerRevision
    /// `<ds>-<hash>` for the current template with the highest revision number, and at most
    /// `revisionHistoryLimit` older ones that no pod uses.
    async fn history(
        &self,
        ds: &DaemonSet,
        hash: &str,
        revs: &[Arc<ControllerRevision>],
        owned: &[Arc<Pod>],
    ) {
        let ns = ds.metadata.namespace.clone().unwrap_or_default();
        let name = ds.metadata.name.clone().unwrap_or_default();
        let api: Api<ControllerRevision> = Api::namespaced(self.client.clone(), &ns);
        let rev_hash = |r: &ControllerRevision| {
            r.metadata
                .labels
                .as_ref()
                .and_then(|l| l.get(HASH_LABEL))
                .cloned()
        };
        let max = revs.iter().map(|r| r.revision).max().unwrap_or(0);
        let cur = revs.iter().find(|r| rev_hash(r).as_deref() == Some(hash));
        let result = match cur {
            Some(r) if r.revision == max => Ok(()),
            Some(r) => {
                let patch = json!({"revision": max + 1});
                let rn = r.metadata.name.clone().unwrap_or_default();
                api.patch(&rn, &PatchParams::default(), &Patch::Merge(&patch))
                    .await
                    .map(drop)
            }
            None => {
                let Some(spec) = ds.spec.as_ref() else { return };
                let mut template = serde_json::to_value(&spec.template).unwrap_or_default();
                template["$patch"] = json!("replace");
                let mut labels = spec
                    .template
                    .metadata
                    .as_ref()
                    .and_then(|m| m.labels.clone());
                labels
                    .get_or_insert_with(Default::default)
                    .insert(HASH_LABEL.into(), hash.into());
                let cr = ControllerRevision {
                    metadata: ObjectMeta {
                        name: Some(format!("{name}-{hash}")),
                        namespace: Some(ns.clone()),
                        labels,
                        annotations: ds.metadata.annotations.clone(),
                        owner_references: Some(vec![owner_ref(ds)]),
                        ..Default::default()
                    },
                    data: Some(RawExtension(json!({"spec": {"template": template}}))),
                    revision: max + 1,
                };
                match api.create(&PostParams::default(), &cr).await {
                    Err(kube::Error::Api(s)) if s.code == 409 => Ok(()),
                    r => r.map(drop),
                }
            }
        };
        if let Err(e) = result {
            log(
                'W',
                format!(
                    "daemonset {ns}/{name}: recording revision {hash}: {}",
                    chain(&e)
                ),
            );
        }
        let limit = ds
            .spec
            .as_ref()
            .and_then(|s| s.revision_history_limit)
            .unwrap_or(10)
            .max(0) as usize;
        let in_use: Vec<String> = owned
            .iter()
            .filter_map(|p| p.metadata.labels.as_ref()?.get(HASH_LABEL).cloned())
            .collect();
        let mut old: Vec<&Arc<ControllerRevision>> = revs
            .iter()
            .filter(|r| rev_hash(r).is_none_or(|h| h != hash && !in_use.contains(&h)))
            .collect();
        if old.len() > limit {
            old.sort_by_key(|r| r.revision);
            for r in &old[..old.len() - limit] {
                let rn = r.metadata.name.clone().unwrap_or_default();
                if let Err(e) = api.delete(&rn, &DeleteParams::default()).await {
                    log(
                        'W',
                        format!(
                            "daemonset {ns}/{name}: pruning revision {rn}: {}",
                            chain(&e)
                        ),
                    );
                }
            }
        }
    }
}

pub async fn run(client: kube::Client) {
    let wake = Arc::new(Notify::new());
    let ds = runner::informer(Api::<DaemonSet>::all(client.clone()), wake.clone());
    let pods = runner::informer(Api::<Pod>::all(client.clone()), wake.clone());
    let nodes = runner::informer(Api::<Node>::all(client.clone()), wake.clone());
    let revisions = runner::informer(Api::<ControllerRevision>::all(client.clone()), wake.clone());
    let ready = vec![
        runner::ready(&ds),
        runner::ready(&pods),
        runner::ready(&nodes),
        runner::ready(&revisions),
    ];
    let mut c = Controller {
        events: Recorder::new(client.clone(), "daemonset-controller"),
        client,
        ds,
        pods,
        nodes,
        revisions,
        expectations: Expectations::default(),
        backoff: Backoff::default(),
    };
    runner::synced("daemon sets", ready).await;
    loop {
        c.pass().await;
        runner::next(&wake, RESYNC).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ds(v: serde_json::Value) -> DaemonSet {
        let mut base = json!({
            "metadata": {"name": "proxy", "namespace": "kube-system", "uid": "u1", "generation": 1},
            "spec": {"selector": {"matchLabels": {"app": "p"}},
                "template": {"metadata": {"labels": {"app": "p"}},
                    "spec": {"containers": [{"name": "c", "image": "i"}]}}},
        });
        merge(&mut base, v);
        serde_json::from_value(base).unwrap()
    }

    fn merge(a: &mut serde_json::Value, b: serde_json::Value) {
        match (a, b) {
            (serde_json::Value::Object(a), serde_json::Value::Object(b)) => {
                for (k, v) in b {
                    merge(a.entry(k).or_insert(serde_json::Value::Null), v);
                }
            }
            (a, b) => *a = b,
        }
    }

    fn rev(t: &PodTemplateSpec) -> Revision<'_> {
        Revision {
            template: t,
            hash: "h",
            generation: None,
            min_ready: 0,
            now: Timestamp::now(),
        }
    }

    fn node(name: &str, labels: serde_json::Value, taints: serde_json::Value) -> Arc<Node> {
        Arc::new(
            serde_json::from_value(json!({
                "metadata": {"name": name, "labels": labels},
                "spec": {"taints": taints},
            }))
            .unwrap(),
        )
    }

    fn pod(name: &str, node: &str, hash: &str, ready: bool, created: &str) -> Arc<Pod> {
        Arc::new(
            serde_json::from_value(json!({
                "metadata": {"name": name, "labels": {HASH_LABEL: hash},
                    "creationTimestamp": created},
                "spec": {"nodeName": node, "containers": []},
                "status": {"phase": "Running",
                    "conditions": [{"type": "Ready", "status": if ready { "True" } else { "False" }}]},
            }))
            .unwrap(),
        )
    }

    #[test]
    fn the_daemon_pod_is_bound_by_affinity_and_tolerates_node_trouble() {
        let d = ds(json!({"spec": {"template": {"spec": {"hostNetwork": true,
            "tolerations": [{"key": "node.kubernetes.io/unschedulable", "operator": "Exists", "effect": "NoSchedule"}],
            "affinity": {"nodeAffinity": {"requiredDuringSchedulingIgnoredDuringExecution":
                {"nodeSelectorTerms": [{"matchExpressions": [{"key": "a", "operator": "Exists"}]}]}}}}}}}));
        let t = pod_template(&d, "abc");
        let p = daemon_pod(&d, &t, "node-2");
        assert_eq!(p.metadata.generate_name.as_deref(), Some("proxy-"));
        let labels = p.metadata.labels.as_ref().unwrap();
        assert_eq!(labels[HASH_LABEL], "abc");
        assert_eq!(labels[GENERATION_LABEL], "1");
        let owner = &p.metadata.owner_references.as_ref().unwrap()[0];
        assert_eq!(
            (
                owner.kind.as_str(),
                owner.controller,
                owner.block_owner_deletion
            ),
            ("DaemonSet", Some(true), Some(true))
        );
        assert_eq!(target_node(&p).as_deref(), Some("node-2"));
        let spec = p.spec.as_ref().unwrap();
        let terms = &spec
            .affinity
            .as_ref()
            .unwrap()
            .node_affinity
            .as_ref()
            .unwrap()
            .required_during_scheduling_ignored_during_execution
            .as_ref()
            .unwrap()
            .node_selector_terms;
        assert_eq!(terms.len(), 1);
        assert!(terms[0].match_expressions.is_none());
        let keys: Vec<&str> = spec
            .tolerations
            .as_ref()
            .unwrap()
            .iter()
            .map(|t| t.key.as_deref().unwrap())
            .collect();
        assert_eq!(
            keys,
            [
                "node.kubernetes.io/unschedulable",
                "node.kubernetes.io/not-ready",
                "node.kubernetes.io/unreachable",
                "node.kubernetes.io/disk-pressure",
                "node.kubernetes.io/memory-pressure",
                "node.kubernetes.io/pid-pressure",
                "node.kubernetes.io/network-unavailable",
            ]
        );
        let plain = pod_template(&ds(json!({})), "abc");
        assert_eq!(plain.spec.unwrap().tolerations.unwrap().len(), 6);
    }

    #[test]
    fn predicates_follow_labels_affinity_and_taints() {
        let t = pod_template(
            &ds(json!({"spec": {"template": {"spec": {"nodeSelector": {"role": "edge"}}}}})),
            "h",
        );
        let edge = json!({"role": "edge"});
        assert_eq!(
            should_run(&t, &node("a", edge.clone(), json!([]))),
            (true, true)
        );
        assert_eq!(
            should_run(&t, &node("b", json!({}), json!([]))),
            (false, false)
        );
        let no_sched = json!([{"key": "gpu", "effect": "NoSchedule"}]);
        let no_exec = json!([{"key": "gpu", "effect": "NoExecute"}]);
        assert_eq!(
            should_run(&t, &node("c", edge.clone(), no_sched)),
            (false, true)
        );
        assert_eq!(
            should_run(&t, &node("d", edge.clone(), no_exec)),
            (false, false)
        );
        // The automatic tolerations: a cordoned, unreachable node keeps its daemon.
        let sick = json!([{"key": "node.kubernetes.io/unreachable", "effect": "NoExecute"},
                          {"key": "node.kubernetes.io/unschedulable", "effect": "NoSchedule"}]);
        assert_eq!(should_run(&t, &node("e", edge, sick)), (true, true));
        // kube-proxy's `operator: Exists` tolerates every taint.
        let all = pod_template(
            &ds(json!({"spec": {"template": {"spec": {"tolerations": [{"operator": "Exists"}]}}}})),
            "h",
        );
        let cp = json!([{"key": "node-role.kubernetes.io/control-plane", "effect": "NoSchedule"}]);
        assert_eq!(should_run(&all, &node("f", json!({}), cp)), (true, true));
        let by_name = pod_template(
            &ds(
                json!({"spec": {"template": {"spec": {"affinity": {"nodeAffinity": {"requiredDuringSchedulingIgnoredDuringExecution":
                {"nodeSelectorTerms": [{"matchFields": [{"key": "metadata.name", "operator": "NotIn", "values": ["g"]}]}]}}}}}}}),
            ),
            "h",
        );
        assert!(!should_run(&by_name, &node("g", json!({}), json!([]))).0);
        assert!(should_run(&by_name, &node("h", json!({}), json!([]))).0);
    }

    #[test]
    fn manage_creates_on_empty_nodes_and_deletes_misfits_and_extras() {
        let t = pod_template(
            &ds(json!({"spec": {"template": {"spec": {"nodeSelector": {"d": "y"}}}}})),
            "h",
        );
        let y = json!({"d": "y"});
        let nodes = vec![
            node("a", y.clone(), json!([])),
            node("b", y.clone(), json!([])),
            node("c", json!({}), json!([])),
        ];
        let t0 = "2026-01-01T00:00:00Z";
        let t1 = "2026-01-01T00:00:01Z";
        let pods = by_node(&[
            pod("b-new", "b", "h", true, t1),
            pod("b-old", "b", "h", true, t0),
            pod("c-1", "c", "h", true, t0),
            pod("gone-1", "gone", "h", true, t0),
        ]);
        let plan = manage(&rev(&t), false, &nodes, &pods);
        assert_eq!(plan.create, ["a"]);
        // gone-1 is bound to a deleted node: podgc's job, not this controller's.
        assert_eq!(plan.delete, ["b-new", "c-1"]);
        let mut failed = (*pod("a-1", "a", "h", false, t0)).clone();
        failed.status.as_mut().unwrap().phase = Some("Failed".into());
        let plan = manage(&rev(&t), false, &nodes[..1], &by_node(&[Arc::new(failed)]));
        assert_eq!(plan.failed, [("a".to_owned(), "a-1".to_owned())]);
        assert!(plan.create.is_empty());
    }

    #[test]
    fn a_rolling_update_replaces_one_node_at_a_time() {
        let t = pod_template(&ds(json!({})), "new");
        let nodes: Vec<Arc<Node>> = ["a", "b", "c"]
            .iter()
            .map(|n| node(n, json!({}), json!([])))
            .collect();
        let t0 = "2026-01-01T00:00:00Z";
        let rev = Revision {
            template: &t,
            hash: "new",
            generation: None,
            min_ready: 0,
            now: Timestamp::now(),
        };
        let all_old = by_node(&[
            pod("a-1", "a", "old", true, t0),
            pod("b-1", "b", "old", true, t0),
            pod("c-1", "c", "old", false, t0),
        ]);
        // c's old pod is not available anyway: replaced at once, and it uses up the budget.
        assert_eq!(rolling_update(&rev, &nodes, &all_old, 1), ["c-1"]);
        let one_new = by_node(&[
            pod("a-1", "a", "old", true, t0),
            pod("b-1", "b", "old", true, t0),
            pod("c-2", "c", "new", false, t0),
        ]);
        assert!(rolling_update(&rev, &nodes, &one_new, 1).is_empty());
        let ready = by_node(&[
            pod("a-1", "a", "old", true, t0),
            pod("b-1", "b", "old", true, t0),
            pod("c-2", "c", "new", true, t0),
        ]);
        assert_eq!(rolling_update(&rev, &nodes, &ready, 1), ["a-1"]);
        assert_eq!(rolling_update(&rev, &nodes, &ready, 2), ["a-1", "b-1"]);
        let pct = |p: &str| Some(IntOrString::String(p.into()));
        assert_eq!(fenceposts(None, pct("10%").as_ref(), 3), (0, 1));
        assert_eq!(fenceposts(None, pct("50%").as_ref(), 3), (0, 2));
        let zero = Some(IntOrString::Int(0));
        assert_eq!(fenceposts(zero.as_ref(), zero.as_ref(), 3), (0, 1));
        assert_eq!(fenceposts(pct("34%").as_ref(), zero.as_ref(), 3), (2, 0));
        let st = status(&rev, &nodes, &ready);
        assert_eq!(
            (
                st.desired_number_scheduled,
                st.current_number_scheduled,
                st.number_ready,
                st.updated_number_scheduled,
                st.number_available,
                st.number_unavailable,
                st.number_misscheduled,
            ),
            (3, 3, 3, Some(1), Some(3), Some(0), 0)
        );
        // A NoSchedule taint on c: its pod stays, counted as misscheduled.
        let tainted = vec![
            nodes[0].clone(),
            nodes[1].clone(),
            node(
                "c",
                json!({}),
                json!([{"key": "x", "effect": "NoSchedule"}]),
            ),
        ];
        assert!(manage(&rev, false, &tainted, &one_new).is_empty());
        let st = status(&rev, &tainted, &one_new);
        assert_eq!(
            (
                st.desired_number_scheduled,
                st.number_misscheduled,
                st.number_unavailable
            ),
            (2, 1, Some(0))
        );
    }

    #[test]
    fn a_surge_update_starts_the_new_pod_before_the_old_one_goes() {
        let t = pod_template(&ds(json!({})), "new");
        let nodes: Vec<Arc<Node>> = ["a", "b"]
            .iter()
            .map(|n| node(n, json!({}), json!([])))
            .collect();
        let t0 = "2026-01-01T00:00:00Z";
        let t1 = "2026-01-01T00:00:01Z";
        let rev = Revision {
            template: &t,
            hash: "new",
            generation: None,
            min_ready: 0,
            now: Timestamp::now(),
        };
        let old = by_node(&[
            pod("a-1", "a", "old", true, t0),
            pod("b-1", "b", "old", true, t0),
        ]);
        let plan = surge_update(&rev, &nodes, &old, 1);
        assert_eq!((plan.create, plan.delete), (vec!["a".to_owned()], vec![]));
        // The new pod on a is not ready: both stay, and b waits.
        let surging = by_node(&[
            pod("a-1", "a", "old", true, t0),
            pod("a-2", "a", "new", false, t1),
            pod("b-1", "b", "old", true, t0),
        ]);
        assert!(manage(&rev, true, &nodes, &surging).is_empty());
        assert!(surge_update(&rev, &nodes, &surging, 1).is_empty());
        // Once it is available, a's old pod goes and b's turn begins.
        let ready = by_node(&[
            pod("a-1", "a", "old", true, t0),
            pod("a-2", "a", "new", true, t1),
            pod("b-1", "b", "old", true, t0),
        ]);
        assert_eq!(manage(&rev, true, &nodes, &ready).delete, ["a-1"]);
        let plan = surge_update(&rev, &nodes, &ready, 1);
        assert_eq!(
            (plan.create, plan.delete),
            (vec!["b".to_owned()], vec!["a-1".to_owned()])
        );
        // Without surge, the same node keeps only its oldest pod.
        assert_eq!(manage(&rev, false, &nodes, &surging).delete, ["a-2"]);
    }
}
