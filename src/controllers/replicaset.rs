//! The replicaset controller: keeps `spec.replicas` pods running for each ReplicaSet.
//!
//! Mirrors `pkg/controller/replicaset`: pods it creates carry the ReplicaSet as their
//! controller owner reference; too few pods → create (Event SuccessfulCreate "Created pod:
//! x"), too many → delete the least useful first (unscheduled, then pending, then not ready,
//! then the newest; Event SuccessfulDelete); status counts replicas, ready and available pods.
//! A pod counts as available once it has been Ready for `minReadySeconds`, and the controller
//! wakes when the next one will be. Leaves out adopting orphaned pods that match the selector
//! and slow-start batches.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::apps::v1::ReplicaSet;
use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::jiff::Timestamp;
use kube::api::{Api, DeleteParams, Patch, PatchParams, PostParams};
use kube::runtime::reflector::Store;
use serde_json::json;
use tokio::sync::Notify;

use super::daemonset::is_available;
use super::runner::{self, Expectations};
use super::{RESYNC, controller_of, pod_from_template};
use crate::component::events::{Recorder, reference};
use crate::component::{chain, log, namespace_terminating};

/// Whether a pod is Ready (its Ready condition is True).
pub fn is_ready(p: &Pod) -> bool {
    p.status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .is_some_and(|cs| cs.iter().any(|c| c.type_ == "Ready" && c.status == "True"))
}

/// Whether a pod still counts: not being deleted, not finished.
pub fn is_active(p: &Pod) -> bool {
    p.metadata.deletion_timestamp.is_none()
        && !matches!(
            p.status.as_ref().and_then(|s| s.phase.as_deref()),
            Some("Succeeded" | "Failed")
        )
}

/// Pods owned (as controller) by the object with this uid, grouped once per pass.
pub fn pods_by_owner(pods: &Store<Pod>) -> HashMap<String, Vec<Arc<Pod>>> {
    let mut out: HashMap<String, Vec<Arc<Pod>>> = HashMap::new();
    for p in pods.state() {
        if let Some(r) = controller_of(p.metadata.owner_references.as_ref()) {
            out.entry(r.uid.clone()).or_default().push(p);
        }
    }
    out
}

/// Upstream's deletion ranking: the pod to delete first sorts first.
fn deletion_rank(p: &Pod) -> (u8, u8, u8, std::cmp::Reverse<String>) {
    let scheduled = p
        .spec
        .as_ref()
        .and_then(|s| s.node_name.as_deref())
        .is_some_and(|n| !n.is_empty());
    let phase = match p.status.as_ref().and_then(|s| s.phase.as_deref()) {
        Some("Pending") => 0,
        Some("Unknown") => 1,
        Some("Running") => 2,
        _ => 0,
    };
    let created = p
        .metadata
        .creation_timestamp
        .as_ref()
        .map(|t| t.0.to_string())
        .unwrap_or_default();
    (
        u8::from(scheduled),
        phase,
        u8::from(is_ready(p)),
        std::cmp::Reverse(created),
    )
}

struct Controller {
    client: kube::Client,
    rs: Store<ReplicaSet>,
    pods: Store<Pod>,
    events: Recorder,
    expectations: Expectations,
    /// The soonest a Ready pod becomes available (minReadySeconds), seen in this pass.
    next_available: Option<Duration>,
}

/// How long until a Ready pod has been Ready for `min_ready` seconds (none if it is not
/// Ready, or already available).
pub fn until_available(p: &Pod, min_ready: i32, now: Timestamp) -> Option<Duration> {
    if !is_ready(p) || is_available(p, min_ready, now) {
        return None;
    }
    let since = p
        .status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .and_then(|cs| cs.iter().find(|c| c.type_ == "Ready"))
        .and_then(|c| c.last_transition_time.as_ref())?;
    let left = since.0.as_second() + i64::from(min_ready) - now.as_second();
    Some(Duration::from_secs(left.max(0) as u64 + 1))
}

impl Controller {
    async fn pass(&mut self) {
        self.next_available = None;
        let owned = pods_by_owner(&self.pods);
        for rs in self.rs.state() {
            self.sync(
                &rs,
                owned.get(rs.metadata.uid.as_deref().unwrap_or_default()),
            )
            .await;
        }
    }

    async fn sync(&mut self, rs: &ReplicaSet, owned: Option<&Vec<Arc<Pod>>>) {
        let uid = rs.metadata.uid.clone().unwrap_or_default();
        let ns = rs.metadata.namespace.clone().unwrap_or_default();
        let name = rs.metadata.name.clone().unwrap_or_default();
        let owned: Vec<Arc<Pod>> = owned.cloned().unwrap_or_default();
        let live: HashMap<&str, bool> = owned
            .iter()
            .map(|p| (p.metadata.name.as_deref().unwrap_or_default(), is_active(p)))
            .collect();
        let active: Vec<&Arc<Pod>> = owned.iter().filter(|p| is_active(p)).collect();
        let settled = self.expectations.satisfied(&uid, |n| live.get(n).copied());
        let want = rs
            .spec
            .as_ref()
            .and_then(|s| s.replicas)
            .unwrap_or(1)
            .max(0) as usize;
        let pods_api: Api<Pod> = Api::namespaced(self.client.clone(), &ns);
        if settled && rs.metadata.deletion_timestamp.is_none() {
            if active.len() < want {
                if let Some(t) = rs.spec.as_ref().and_then(|s| s.template.as_ref()) {
                    let pod = pod_from_template(rs, t);
                    let creates = (0..want - active.len()).map(|_| {
                        let (api, pod) = (pods_api.clone(), pod.clone());
                        async move { api.create(&PostParams::default(), &pod).await }
                    });
                    for r in futures::future::join_all(creates).await {
                        match r {
                            Ok(p) => {
                                let pn = p.metadata.name.clone().unwrap_or_default();
                                self.expectations.created(&uid, &pn);
                                self.events
                                    .emit(
                                        reference(rs),
                                        "Normal",
                                        "SuccessfulCreate",
                                        &format!("Created pod: {pn}"),
                                    )
                                    .await;
                            }
                            Err(e) if namespace_terminating(&e) => {}
                            Err(e) => {
                                let msg = format!("Error creating: {}", chain(&e));
                                log('E', format!("replicaset {ns}/{name}: {msg}"));
                                self.events
                                    .emit(reference(rs), "Warning", "FailedCreate", &msg)
                                    .await;
                            }
                        }
                    }
                }
            } else if active.len() > want {
                let mut doomed: Vec<&Arc<Pod>> = active.clone();
                doomed.sort_by_key(|p| deletion_rank(p));
                for p in doomed.into_iter().take(active.len() - want) {
                    let pn = p.metadata.name.clone().unwrap_or_default();
                    match pods_api.delete(&pn, &DeleteParams::default()).await {
                        Ok(_) => {
                            self.expectations.deleted(&uid, &pn);
                            self.events
                                .emit(
                                    reference(rs),
                                    "Normal",
                                    "SuccessfulDelete",
                                    &format!("Deleted pod: {pn}"),
                                )
                                .await;
                        }
                        Err(e) => log(
                            'E',
                            format!("replicaset {ns}/{name}: deleting pod {pn}: {}", chain(&e)),
                        ),
                    }
                }
            }
        }
        let ready = active.iter().filter(|p| is_ready(p)).count() as i32;
        let (now, min_ready) = (
            Timestamp::now(),
            rs.spec
                .as_ref()
                .and_then(|s| s.min_ready_seconds)
                .unwrap_or(0),
        );
        let available = active
            .iter()
            .filter(|p| is_available(p, min_ready, now))
            .count() as i32;
        for left in active
            .iter()
            .filter_map(|p| until_available(p, min_ready, now))
        {
            self.next_available = Some(self.next_available.map_or(left, |n| n.min(left)));
        }
        let status = json!({
            "replicas": active.len(),
            "fullyLabeledReplicas": active.len(),
            "readyReplicas": ready,
            "availableReplicas": available,
            "observedGeneration": rs.metadata.generation,
        });
        let cur = rs.status.as_ref();
        let same = cur.is_some_and(|s| {
            s.replicas == active.len() as i32
                && s.ready_replicas.unwrap_or(0) == ready
                && s.available_replicas.unwrap_or(0) == available
                && s.fully_labeled_replicas.unwrap_or(0) == active.len() as i32
                && s.observed_generation == rs.metadata.generation
        });
        if !same {
            let api: Api<ReplicaSet> = Api::namespaced(self.client.clone(), &ns);
            let patch = json!({"status": status});
            if let Err(e) = api
                .patch_status(&name, &PatchParams::default(), &Patch::Merge(&patch))
                .await
            {
                if !matches!(&e, kube::Error::Api(s) if s.code == 404) {
                    log(
                        'W',
                        format!("replicaset {ns}/{name}: updating status: {}", chain(&e)),
                    );
                }
            }
        }
    }
}

pub async fn run(client: kube::Client) {
    let wake = Arc::new(Notify::new());
    let rs = runner::informer(Api::<ReplicaSet>::all(client.clone()), wake.clone());
    let pods = runner::informer(Api::<Pod>::all(client.clone()), wake.clone());
    let ready = vec![runner::ready(&rs), runner::ready(&pods)];
    let mut c = Controller {
        events: Recorder::new(client.clone(), "replicaset-controller"),
        client,
        rs,
        pods,
        expectations: Expectations::default(),
        next_available: None,
    };
    runner::synced("replicaset", ready).await;
    loop {
        c.pass().await;
        let wait = c.next_available.map_or(RESYNC, |d| d.min(RESYNC));
        runner::next(&wake, wait).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ready_since(t: &str) -> Pod {
        serde_json::from_value(json!({
            "metadata": {"name": "p"},
            "status": {"conditions": [{"type": "Ready", "status": "True", "lastTransitionTime": t}]},
        }))
        .unwrap()
    }

    #[test]
    fn a_ready_pod_is_available_after_min_ready_seconds() {
        let p = ready_since("2026-01-01T00:00:00Z");
        let at = |s: &str| s.parse::<Timestamp>().unwrap();
        let early = at("2026-01-01T00:00:04Z");
        assert!(!is_available(&p, 10, early));
        assert_eq!(until_available(&p, 10, early), Some(Duration::from_secs(7)));
        let later = at("2026-01-01T00:00:10Z");
        assert!(is_available(&p, 10, later));
        assert_eq!(until_available(&p, 10, later), None);
        // Without minReadySeconds, Ready is available.
        assert!(is_available(&p, 0, early));
        assert_eq!(until_available(&p, 0, early), None);
    }
}
