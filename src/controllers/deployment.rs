//! The deployment controller: rolls a Deployment's pod template out through ReplicaSets.
//!
//! Mirrors `pkg/controller/deployment`: one ReplicaSet per pod template, named
//! `<deployment>-<pod-template-hash>` (upstream's FNV-32a hash, safe-encoded), carrying the
//! `pod-template-hash` label and the `deployment.kubernetes.io/revision` annotation; the
//! RollingUpdate strategy (scale the new ReplicaSet up within maxSurge, the old ones down
//! while at least replicas−maxUnavailable pods stay available) and Recreate (old down to zero
//! and gone, then new up); ScalingReplicaSet Events; status and the Available and Progressing
//! conditions that `kubectl rollout status` reads, with `progressDeadlineSeconds` (a rollout
//! that makes no progress for that long is marked ProgressDeadlineExceeded, and the controller
//! wakes at the deadline to say so). `kubectl rollout undo` works because kubectl writes the
//! old template back and the old ReplicaSet becomes the newest revision again.
//! `minReadySeconds` is passed to the ReplicaSets, whose controller counts availability.
//! Leaves out hash collisions and adoption.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use k8s_openapi::api::apps::v1::{Deployment, ReplicaSet};
use k8s_openapi::api::core::v1::PodTemplateSpec;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use kube::api::{Api, DeleteParams, Patch, PatchParams, PostParams};
use kube::runtime::reflector::Store;
use serde_json::{Value, json};
use tokio::sync::Notify;

use super::runner;
use super::{RESYNC, controller_of, owner_ref};
use crate::component::events::{Recorder, reference};
use crate::component::{chain, log, now_rfc3339};

pub const HASH_LABEL: &str = "pod-template-hash";
pub const REVISION: &str = "deployment.kubernetes.io/revision";

/// FNV-32a over the template's JSON, as upstream's `ComputeHash` (which hashes Go's dump of
/// the struct, so the strings differ from upstream's; the scheme is the same).
pub fn template_hash(t: &PodTemplateSpec) -> String {
    let bytes = serde_json::to_vec(t).unwrap_or_default();
    let mut h: u32 = 0x811c_9dc5;
    for b in bytes {
        h ^= u32::from(b);
        h = h.wrapping_mul(0x0100_0193);
    }
    const ALPHANUMS: &[u8] = b"bcdfghjklmnpqrstvwxz2456789";
    h.to_string()
        .bytes()
        .map(|b| ALPHANUMS[usize::from(b) % ALPHANUMS.len()] as char)
        .collect()
}

/// maxSurge and maxUnavailable as pod counts (surge rounds up, unavailable down; never
/// both zero), as upstream's `ResolveFenceposts`.
pub fn fenceposts(
    surge: Option<&IntOrString>,
    unavailable: Option<&IntOrString>,
    replicas: i32,
) -> (i32, i32) {
    let resolve = |v: Option<&IntOrString>, up: bool| -> i32 {
        match v {
            None => {
                let q = f64::from(replicas) * 0.25;
                if up {
                    q.ceil() as i32
                } else {
                    q.floor() as i32
                }
            }
            Some(IntOrString::Int(i)) => *i,
            Some(IntOrString::String(s)) => {
                let pct: f64 = s.trim_end_matches('%').parse().unwrap_or(25.0);
                let q = f64::from(replicas) * pct / 100.0;
                if up {
                    q.ceil() as i32
                } else {
                    q.floor() as i32
                }
            }
        }
    };
    let (s, u) = (resolve(surge, true), resolve(unavailable, false));
    if s == 0 && u == 0 { (0, 1) } else { (s, u) }
}

fn revision(rs: &ReplicaSet) -> i64 {
    rs.metadata
        .annotations
        .as_ref()
        .and_then(|a| a.get(REVISION))
        .and_then(|r| r.parse().ok())
        .unwrap_or(0)
}

fn spec_replicas(rs: &ReplicaSet) -> i32 {
    rs.spec.as_ref().and_then(|s| s.replicas).unwrap_or(0)
}

/// Available pods of `rs` as far as a rolling update may count them: never more than its
/// spec asks for. Right after a scale-down the ReplicaSet's status still counts the pods being
/// deleted; counting them would let the next sync scale down again below maxUnavailable.
fn counted_available(rs: &ReplicaSet) -> i32 {
    st(rs).2.min(spec_replicas(rs))
}

fn st(rs: &ReplicaSet) -> (i32, i32, i32) {
    let s = rs.status.clone().unwrap_or_default();
    (
        s.replicas,
        s.ready_replicas.unwrap_or(0),
        s.available_replicas.unwrap_or(0),
    )
}

struct Controller {
    client: kube::Client,
    deploys: Store<Deployment>,
    rs: Store<ReplicaSet>,
    events: Recorder,
    /// ReplicaSets written (by name, the replicas asked for) and not yet seen so.
    pending: HashMap<String, (Option<i32>, Instant)>,
    /// The soonest a progressing rollout reaches its progress deadline, seen in this pass.
    next_deadline: Option<Duration>,
}

/// What the Progressing condition should say, as upstream's `syncRolloutStatus` decides.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Progress {
    /// Every replica updated and available: NewReplicaSetAvailable.
    Complete,
    /// Something moved (or a new rollout began): ReplicaSetUpdated, with a fresh update time.
    Progressing,
    /// Nothing moved and the deadline is not reached: the condition stays as it was.
    Unchanged,
    /// Nothing moved for progressDeadlineSeconds: False, ProgressDeadlineExceeded.
    TimedOut,
}

pub const TIMED_OUT: &str = "ProgressDeadlineExceeded";

/// Decides the Progressing condition. `last` is the previous condition's reason and update
/// time (seconds since the epoch); `deadline` is progressDeadlineSeconds (none while paused).
pub fn progress(
    complete: bool,
    progressed: bool,
    last: Option<(&str, i64)>,
    deadline: Option<i64>,
    now: i64,
) -> Progress {
    if complete {
        return Progress::Complete;
    }
    let Some((reason, updated)) = last else {
        return Progress::Progressing;
    };
    if progressed || reason == "NewReplicaSetAvailable" {
        return Progress::Progressing;
    }
    match deadline {
        _ if reason == TIMED_OUT => Progress::TimedOut,
        Some(d) if updated + d < now => Progress::TimedOut,
        _ => Progress::Unchanged,
    }
}

impl Controller {
    fn settled(&mut self, owned: &[Arc<ReplicaSet>]) -> bool {
        let seen: HashMap<String, i32> =
            owned.iter().map(|r| (rkey(r), spec_replicas(r))).collect();
        self.pending.retain(|k, (want, since)| {
            since.elapsed() < Duration::from_secs(60)
                && match (want, seen.get(k)) {
                    (None, s) => s.is_none(),
                    (Some(w), Some(s)) => w != s,
                    (Some(_), None) => true,
                }
        });
        owned.iter().all(|r| !self.pending.contains_key(&rkey(r)))
    }

    async fn pass(&mut self) {
        let mut by_owner: HashMap<String, Vec<Arc<ReplicaSet>>> = HashMap::new();
        for r in self.rs.state() {
            if let Some(o) = controller_of(r.metadata.owner_references.as_ref()) {
                by_owner.entry(o.uid.clone()).or_default().push(r);
            }
        }
        self.next_deadline = None;
        for d in self.deploys.state() {
            let owned = by_owner
                .remove(d.metadata.uid.as_deref().unwrap_or_default())
                .unwrap_or_default();
            if d.metadata.deletion_timestamp.is_some() || !self.settled(&owned) {
                continue;
            }
            self.sync(&d, owned).await;
        }
    }

    async fn scale(&mut self, d: &Deployment, rs: &ReplicaSet, to: i32) {
        let from = spec_replicas(rs);
        if from == to {
            return;
        }
        let (ns, name) = (ns_of(rs), rs.metadata.name.clone().unwrap_or_default());
        let api: Api<ReplicaSet> = Api::namespaced(self.client.clone(), &ns);
        let want = d.spec.as_ref().and_then(|s| s.replicas).unwrap_or(1);
        let (surge, _) = surge_unavailable(d);
        let patch = json!({
            "metadata": {"annotations": {
                "deployment.kubernetes.io/desired-replicas": want.to_string(),
                "deployment.kubernetes.io/max-replicas": (want + surge).to_string(),
            }},
            "spec": {"replicas": to},
        });
        match api
            .patch(&name, &PatchParams::default(), &Patch::Merge(&patch))
            .await
        {
            Ok(_) => {
                self.pending.insert(rkey(rs), (Some(to), Instant::now()));
                let dir = if to > from { "up" } else { "down" };
                self.events
                    .emit(
                        reference(d),
                        "Normal",
                        "ScalingReplicaSet",
                        &format!("Scaled {dir} replica set {name} from {from} to {to}"),
                    )
                    .await;
            }
            Err(e) => log(
                'E',
                format!("deployment: scaling replica set {ns}/{name}: {}", chain(&e)),
            ),
        }
    }

    async fn sync(&mut self, d: &Deployment, owned: Vec<Arc<ReplicaSet>>) {
        let Some(spec) = d.spec.as_ref() else {
            return;
        };
        let dname = d.metadata.name.clone().unwrap_or_default();
        let ns = d.metadata.namespace.clone().unwrap_or_default();
        let hash = template_hash(&spec.template);
        let new_name = format!("{dname}-{hash}");
        let replicas = spec.replicas.unwrap_or(1);
        let max_rev = owned.iter().map(|r| revision(r)).max().unwrap_or(0);
        let new = owned
            .iter()
            .find(|r| r.metadata.name.as_deref() == Some(&new_name))
            .cloned();
        let olds: Vec<Arc<ReplicaSet>> = owned
            .iter()
            .filter(|r| r.metadata.name.as_deref() != Some(&new_name))
            .cloned()
            .collect();
        let rs_api: Api<ReplicaSet> = Api::namespaced(self.client.clone(), &ns);
        let paused = spec.paused == Some(true);
        let recreate = spec.strategy.as_ref().and_then(|s| s.type_.as_deref()) == Some("Recreate");
        let Some(new) = new else {
            if paused {
                return self.status(d, &owned, None).await;
            }
            let old_running = olds.iter().any(|r| spec_replicas(r) > 0);
            let start = if old_running { 0 } else { replicas };
            let mut t = spec.template.clone();
            let mut meta = t.metadata.clone().unwrap_or_default();
            meta.labels
                .get_or_insert_default()
                .insert(HASH_LABEL.into(), hash.clone());
            t.metadata = Some(meta.clone());
            let mut selector = spec.selector.clone();
            selector
                .match_labels
                .get_or_insert_default()
                .insert(HASH_LABEL.into(), hash.clone());
            let (surge, _) = surge_unavailable(d);
            let rs = ReplicaSet {
                metadata: ObjectMeta {
                    name: Some(new_name.clone()),
                    namespace: Some(ns.clone()),
                    labels: meta.labels.clone(),
                    annotations: Some(
                        [
                            (REVISION.to_owned(), (max_rev + 1).to_string()),
                            (
                                "deployment.kubernetes.io/desired-replicas".to_owned(),
                                replicas.to_string(),
                            ),
                            (
                                "deployment.kubernetes.io/max-replicas".to_owned(),
                                (replicas + surge).to_string(),
                            ),
                        ]
                        .into(),
                    ),
                    owner_references: Some(vec![owner_ref(d)]),
                    ..Default::default()
                },
                spec: Some(k8s_openapi::api::apps::v1::ReplicaSetSpec {
                    replicas: Some(start),
                    selector,
                    template: Some(t),
                    min_ready_seconds: spec.min_ready_seconds,
                }),
                status: None,
            };
            match rs_api.create(&PostParams::default(), &rs).await {
                Ok(_) => {
                    self.pending
                        .insert(format!("{ns}/{new_name}"), (Some(start), Instant::now()));
                    if start > 0 {
                        self.events
                            .emit(
                                reference(d),
                                "Normal",
                                "ScalingReplicaSet",
                                &format!("Scaled up replica set {new_name} from 0 to {start}"),
                            )
                            .await;
                    }
                    self.set_revision(d, max_rev + 1).await;
                }
                Err(kube::Error::Api(s)) if s.code == 409 => {}
                Err(e) => log(
                    'E',
                    format!(
                        "deployment {ns}/{dname}: creating replica set {new_name}: {}",
                        chain(&e)
                    ),
                ),
            }
            return;
        };
        if revision(&new) < max_rev {
            // A rollback: the old template is the newest revision again.
            let patch = json!({"metadata": {"annotations": {REVISION: (max_rev + 1).to_string()}}});
            if rs_api
                .patch(&new_name, &PatchParams::default(), &Patch::Merge(&patch))
                .await
                .is_ok()
            {
                self.set_revision(d, max_rev + 1).await;
                self.events
                    .emit(
                        reference(d),
                        "Normal",
                        "DeploymentRollback",
                        &format!(
                            "Rolled back deployment {dname} to revision {}",
                            revision(&new)
                        ),
                    )
                    .await;
            }
            self.pending
                .insert(rkey(&new), (Some(spec_replicas(&new)), Instant::now()));
            return;
        }
        if !paused {
            if recreate {
                self.recreate(d, &new, &olds, replicas).await;
            } else {
                self.rolling(d, &new, &olds, replicas).await;
            }
            self.cleanup(d, &olds).await;
        }
        self.status(d, &owned, Some(&new)).await;
    }

    async fn set_revision(&self, d: &Deployment, rev: i64) {
        let api: Api<Deployment> = Api::namespaced(
            self.client.clone(),
            &d.metadata.namespace.clone().unwrap_or_default(),
        );
        let patch = json!({"metadata": {"annotations": {REVISION: rev.to_string()}}});
        let name = d.metadata.name.clone().unwrap_or_default();
        if let Err(e) = api
            .patch(&name, &PatchParams::default(), &Patch::Merge(&patch))
            .await
        {
            log(
                'W',
                format!(
                    "deployment {name}: writing the revision annotation: {}",
                    chain(&e)
                ),
            );
        }
    }

    async fn recreate(
        &mut self,
        d: &Deployment,
        new: &ReplicaSet,
        olds: &[Arc<ReplicaSet>],
        replicas: i32,
    ) {
        let mut waiting = false;
        for o in olds {
            if spec_replicas(o) > 0 {
                self.scale(d, o, 0).await;
                waiting = true;
            } else if st(o).0 > 0 {
                waiting = true;
            }
        }
        if !waiting {
            self.scale(d, new, replicas).await;
        }
    }

    async fn rolling(
        &mut self,
        d: &Deployment,
        new: &ReplicaSet,
        olds: &[Arc<ReplicaSet>],
        replicas: i32,
    ) {
        let (surge, unavailable) = surge_unavailable(d);
        let all: Vec<&ReplicaSet> = std::iter::once(new)
            .chain(olds.iter().map(|r| &**r))
            .collect();
        let total: i32 = all.iter().map(|r| spec_replicas(r)).sum();
        let new_n = spec_replicas(new);
        if new_n > replicas {
            return self.scale(d, new, replicas).await;
        }
        if new_n < replicas {
            let up = (replicas + surge - total).min(replicas - new_n);
            if up > 0 {
                return self.scale(d, new, new_n + up).await;
            }
        }
        // Old ReplicaSets down, keeping replicas − maxUnavailable available.
        let min_available = replicas - unavailable;
        let new_unavailable = (new_n - counted_available(new)).max(0);
        let mut budget = total - min_available - new_unavailable;
        if budget <= 0 {
            return;
        }
        let mut olds: Vec<&Arc<ReplicaSet>> =
            olds.iter().filter(|r| spec_replicas(r) > 0).collect();
        olds.sort_by_key(|r| revision(r));
        // First the old pods that are not available anyway.
        let mut scaled: HashMap<String, i32> = HashMap::new();
        for o in &olds {
            let unhealthy = spec_replicas(o) - counted_available(o);
            if budget <= 0 || unhealthy <= 0 {
                continue;
            }
            let n = unhealthy.min(budget);
            budget -= n;
            scaled.insert(rkey(o), spec_replicas(o) - n);
        }
        // Then available ones, as long as enough stay available.
        let available: i32 = all.iter().map(|r| counted_available(r)).sum();
        let mut can = available - min_available;
        for o in &olds {
            let cur = scaled.get(&rkey(o)).copied().unwrap_or(spec_replicas(o));
            if can <= 0 || cur == 0 {
                continue;
            }
            let n = cur.min(can);
            can -= n;
            scaled.insert(rkey(o), cur - n);
        }
        for o in olds {
            if let Some(to) = scaled.get(&rkey(o)) {
                self.scale(d, o, *to).await;
            }
        }
    }

    /// Deletes old ReplicaSets with no pods beyond `revisionHistoryLimit` (default 10).
    async fn cleanup(&mut self, d: &Deployment, olds: &[Arc<ReplicaSet>]) {
        let limit = d
            .spec
            .as_ref()
            .and_then(|s| s.revision_history_limit)
            .unwrap_or(10)
            .max(0) as usize;
        let mut idle: Vec<&Arc<ReplicaSet>> = olds
            .iter()
            .filter(|r| spec_replicas(r) == 0 && st(r).0 == 0)
            .collect();
        if idle.len() <= limit {
            return;
        }
        idle.sort_by_key(|r| revision(r));
        let api: Api<ReplicaSet> = Api::namespaced(
            self.client.clone(),
            &d.metadata.namespace.clone().unwrap_or_default(),
        );
        for r in idle.into_iter().take(olds.len().saturating_sub(limit)) {
            let name = r.metadata.name.clone().unwrap_or_default();
            if api.delete(&name, &DeleteParams::background()).await.is_ok() {
                self.pending.insert(rkey(r), (None, Instant::now()));
            }
        }
    }

    async fn status(
        &mut self,
        d: &Deployment,
        owned: &[Arc<ReplicaSet>],
        new: Option<&ReplicaSet>,
    ) {
        let replicas_wanted = d.spec.as_ref().and_then(|s| s.replicas).unwrap_or(1);
        let (_, unavailable) = surge_unavailable(d);
        let replicas: i32 = owned.iter().map(|r| st(r).0).sum();
        let ready: i32 = owned.iter().map(|r| st(r).1).sum();
        let available: i32 = owned.iter().map(|r| st(r).2).sum();
        let updated = new.map(|n| st(n).0).unwrap_or(0);
        let total_spec: i32 = owned.iter().map(|r| spec_replicas(r)).sum();
        let old = d.status.clone().unwrap_or_default();
        let prev = |t: &str| {
            old.conditions
                .iter()
                .flatten()
                .find(|c| c.type_ == t)
                .cloned()
        };
        let cond = |t: &str, status: &str, reason: &str, message: String| -> Value {
            let p = prev(t);
            let now = now_rfc3339();
            let since = p
                .as_ref()
                .filter(|c| c.status == status)
                .and_then(|c| c.last_transition_time.as_ref())
                .map(|t| t.0.strftime("%Y-%m-%dT%H:%M:%SZ").to_string())
                .unwrap_or_else(|| now.clone());
            json!({"type": t, "status": status, "reason": reason, "message": message,
                   "lastUpdateTime": now, "lastTransitionTime": since})
        };
        let avail = if available >= replicas_wanted - unavailable {
            cond(
                "Available",
                "True",
                "MinimumReplicasAvailable",
                "Deployment has minimum availability.".into(),
            )
        } else {
            cond(
                "Available",
                "False",
                "MinimumReplicasUnavailable",
                "Deployment does not have minimum availability.".into(),
            )
        };
        let new_name = new
            .and_then(|n| n.metadata.name.clone())
            .unwrap_or_default();
        let complete = new.is_some()
            && updated == replicas_wanted
            && replicas == replicas_wanted
            && available == replicas_wanted;
        let paused = d.spec.as_ref().and_then(|s| s.paused) == Some(true);
        let deadline = d
            .spec
            .as_ref()
            .and_then(|s| s.progress_deadline_seconds)
            .filter(|_| !paused)
            .map(i64::from);
        // Progress as upstream's `DeploymentProgressing`: more pods updated, ready or
        // available, fewer old ones, or a new generation of the spec.
        let old_old = old.replicas.unwrap_or(0) - old.updated_replicas.unwrap_or(0);
        let progressed = updated > old.updated_replicas.unwrap_or(0)
            || ready > old.ready_replicas.unwrap_or(0)
            || available > old.available_replicas.unwrap_or(0)
            || replicas - updated < old_old
            || old.observed_generation != d.metadata.generation;
        let last_cond = prev("Progressing");
        let last = last_cond.as_ref().map(|c| {
            (
                c.reason.as_deref().unwrap_or_default(),
                c.last_update_time
                    .as_ref()
                    .map(|t| t.0.as_second())
                    .unwrap_or(0),
            )
        });
        let now_s = k8s_openapi::jiff::Timestamp::now().as_second();
        let verdict = progress(complete, progressed, last, deadline, now_s);
        let progressing = match verdict {
            Progress::Complete => cond(
                "Progressing",
                "True",
                "NewReplicaSetAvailable",
                format!("ReplicaSet \"{new_name}\" has successfully progressed."),
            ),
            Progress::Progressing => cond(
                "Progressing",
                "True",
                "ReplicaSetUpdated",
                format!("ReplicaSet \"{new_name}\" is progressing."),
            ),
            Progress::TimedOut => cond(
                "Progressing",
                "False",
                TIMED_OUT,
                format!("ReplicaSet \"{new_name}\" has timed out progressing."),
            ),
            Progress::Unchanged => serde_json::to_value(&last_cond).unwrap_or(Value::Null),
        };
        // Wake at the deadline of a rollout still under way, not only at the next resync.
        if let (Progress::Progressing | Progress::Unchanged, Some(dl)) = (verdict, deadline) {
            let since = match verdict {
                Progress::Unchanged => last.map(|(_, t)| t).unwrap_or(now_s),
                _ => now_s,
            };
            let left = Duration::from_secs((since + dl - now_s).max(0) as u64 + 1);
            self.next_deadline = Some(self.next_deadline.map_or(left, |n| n.min(left)));
        }
        let same_conditions = |c: &Value| {
            prev(c["type"].as_str().unwrap_or_default()).is_some_and(|p| {
                Some(p.status.as_str()) == c["status"].as_str()
                    && p.reason.as_deref() == c["reason"].as_str()
                    && p.message.as_deref() == c["message"].as_str()
            })
        };
        let same = old.replicas == Some(replicas)
            && old.ready_replicas.unwrap_or(0) == ready
            && old.available_replicas.unwrap_or(0) == available
            && old.updated_replicas.unwrap_or(0) == updated
            && old.unavailable_replicas.unwrap_or(0) == (total_spec - available).max(0)
            && old.observed_generation == d.metadata.generation
            && same_conditions(&avail)
            && same_conditions(&progressing);
        if same {
            return;
        }
        let patch = json!({"status": {
            "replicas": replicas, "readyReplicas": ready, "availableReplicas": available,
            "updatedReplicas": updated, "unavailableReplicas": (total_spec - available).max(0),
            "observedGeneration": d.metadata.generation,
            "conditions": [avail, progressing],
        }});
        let ns = d.metadata.namespace.clone().unwrap_or_default();
        let name = d.metadata.name.clone().unwrap_or_default();
        let api: Api<Deployment> = Api::namespaced(self.client.clone(), &ns);
        if let Err(e) = api
            .patch_status(&name, &PatchParams::default(), &Patch::Merge(&patch))
            .await
        {
            log(
                'W',
                format!("deployment {ns}/{name}: updating status: {}", chain(&e)),
            );
        }
    }
}

fn ns_of(rs: &ReplicaSet) -> String {
    rs.metadata.namespace.clone().unwrap_or_default()
}

fn rkey(rs: &ReplicaSet) -> String {
    format!(
        "{}/{}",
        ns_of(rs),
        rs.metadata.name.as_deref().unwrap_or_default()
    )
}

fn surge_unavailable(d: &Deployment) -> (i32, i32) {
    let spec = d.spec.as_ref();
    let replicas = spec.and_then(|s| s.replicas).unwrap_or(1);
    let ru = spec
        .and_then(|s| s.strategy.as_ref())
        .and_then(|s| s.rolling_update.as_ref());
    fenceposts(
        ru.and_then(|r| r.max_surge.as_ref()),
        ru.and_then(|r| r.max_unavailable.as_ref()),
        replicas,
    )
}

pub async fn run(client: kube::Client) {
    let wake = Arc::new(Notify::new());
    let deploys = runner::informer(Api::<Deployment>::all(client.clone()), wake.clone());
    let rs = runner::informer(Api::<ReplicaSet>::all(client.clone()), wake.clone());
    let ready = vec![runner::ready(&deploys), runner::ready(&rs)];
    let mut c = Controller {
        events: Recorder::new(client.clone(), "deployment-controller"),
        client,
        deploys,
        rs,
        pending: HashMap::new(),
        next_deadline: None,
    };
    runner::synced("deployment", ready).await;
    loop {
        c.pass().await;
        let wait = c.next_deadline.map_or(RESYNC, |d| d.min(RESYNC));
        runner::next(&wake, wait).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_scaled_down_replicaset_counts_no_more_available_pods_than_it_asks_for() {
        // Just scaled from 6 to 5: the status still counts the pod being deleted.
        let rs: ReplicaSet = serde_json::from_value(serde_json::json!({
            "spec": {"replicas": 5, "selector": {}},
            "status": {"replicas": 6, "availableReplicas": 6},
        }))
        .unwrap();
        assert_eq!(counted_available(&rs), 5);
    }

    #[test]
    fn a_rollout_that_stops_moving_times_out_after_its_deadline() {
        let upd = Some(("ReplicaSetUpdated", 1_000));
        // No condition yet, or something moved: progressing, with a fresh update time.
        assert_eq!(
            progress(false, false, None, Some(600), 1_000),
            Progress::Progressing
        );
        assert_eq!(
            progress(false, true, upd, Some(600), 5_000),
            Progress::Progressing
        );
        // Nothing moved: unchanged until the deadline has passed, then timed out.
        assert_eq!(
            progress(false, false, upd, Some(600), 1_600),
            Progress::Unchanged
        );
        assert_eq!(
            progress(false, false, upd, Some(600), 1_601),
            Progress::TimedOut
        );
        // Timed out stays timed out until something moves; paused never times out.
        let out = Some((TIMED_OUT, 1_000));
        assert_eq!(
            progress(false, false, out, Some(600), 1_001),
            Progress::TimedOut
        );
        assert_eq!(
            progress(false, true, out, Some(600), 9_000),
            Progress::Progressing
        );
        assert_eq!(
            progress(false, false, upd, None, 99_000),
            Progress::Unchanged
        );
        // Complete wins over everything.
        assert_eq!(
            progress(true, false, out, Some(1), 99_000),
            Progress::Complete
        );
        // A complete rollout that gets more work (scale up) is progressing again.
        let done = Some(("NewReplicaSetAvailable", 1_000));
        assert_eq!(
            progress(false, false, done, Some(600), 99_000),
            Progress::Progressing
        );
    }

    #[test]
    fn fenceposts_as_upstream() {
        assert_eq!(fenceposts(None, None, 10), (3, 2));
        assert_eq!(
            fenceposts(Some(&IntOrString::Int(0)), Some(&IntOrString::Int(0)), 3),
            (0, 1)
        );
        assert_eq!(
            fenceposts(
                Some(&IntOrString::String("50%".into())),
                Some(&IntOrString::Int(1)),
                3
            ),
            (2, 1)
        );
    }

    #[test]
    fn hash_is_stable_and_safe() {
        let t = PodTemplateSpec::default();
        let h = template_hash(&t);
        assert_eq!(h, template_hash(&t));
        assert!(h.chars().all(|c| "bcdfghjklmnpqrstvwxz2456789".contains(c)));
    }
}
