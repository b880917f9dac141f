//! The scheduler's writes: the binding, the explain annotation, the PodScheduled condition,
//! the nominated node, the eviction of preemption victims and the Scheduled/FailedScheduling/
//! Preempted Events.
//!
//! Mirrors the DefaultBinder plugin (`POST pods/<name>/binding`), the scheduler's
//! `handleSchedulingFailure` (the PodScheduled=False/Unschedulable condition, the nominated
//! node and the Event) and preemption's `prepareCandidate` (the DisruptionTarget condition,
//! a graceful delete and a Preempted Event per victim). After a binding the pod's
//! `status.nominatedNodeName` is cleared, as upstream's API server does from 1.35
//! (`ClearingNominatedNodeNameAfterBinding`); here the scheduler does it, so it happens with
//! any API server.
//! klab's API server has the `binding` subresource (and copies the Binding's annotations onto
//! the pod, as upstream does). Should a server answer 404 for it, the binder says so once and
//! sets `spec.nodeName` (and the annotations) with one merge patch guarded by the pod's
//! resourceVersion instead, so a pod is never bound twice.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use k8s_openapi::api::core::v1::{Binding, ObjectReference, Pod};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::api::{Api, DeleteParams, Patch, PatchParams, PostParams};
use serde_json::{Value, json};

use crate::component::events::{Recorder, reference};
use crate::component::log;

use super::node_info::{DISRUPTION_TARGET, PREEMPTION_BY_SCHEDULER};
use super::preempt::Nomination;

pub const EXPLAIN_ANNOTATION: &str = "scheduler.klab.dev/explain";

#[derive(Debug, thiserror::Error)]
pub enum BindError {
    #[error("binding pod {pod} to node {node}")]
    Bind {
        pod: String,
        node: String,
        #[source]
        source: kube::Error,
    },
    #[error("marking preemption victim {pod} as a disruption target")]
    MarkVictim {
        pod: String,
        #[source]
        source: kube::Error,
    },
    #[error("deleting preemption victim {pod}")]
    DeleteVictim {
        pod: String,
        #[source]
        source: kube::Error,
    },
}

fn name_of(pod: &Pod) -> (String, String) {
    (
        pod.metadata.namespace.clone().unwrap_or_default(),
        pod.metadata.name.clone().unwrap_or_default(),
    )
}

fn is_not_found(e: &kube::Error) -> bool {
    matches!(e, kube::Error::Api(s) if s.code == 404)
}

/// The pod's conditions as JSON, without those of type `except`.
fn other_conditions(pod: &Pod, except: &str) -> Vec<Value> {
    pod.status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .map(|cs| {
            cs.iter()
                .filter(|c| c.type_ != except)
                .filter_map(|c| serde_json::to_value(c).ok())
                .collect()
        })
        .unwrap_or_default()
}

/// Binds pods, remembering whether the API server has the binding subresource.
#[derive(Clone)]
pub struct Binder {
    client: kube::Client,
    pub events: Recorder,
    no_binding_subresource: Arc<AtomicBool>,
}

fn is_missing_subresource(e: &kube::Error) -> bool {
    matches!(e, kube::Error::Api(s) if s.code == 404 && s.details.as_ref().is_none_or(|d| d.name.is_empty()))
}

impl Binder {
    pub fn new(client: kube::Client, component: &str) -> Binder {
        Binder {
            events: Recorder::new(client.clone(), component),
            client,
            no_binding_subresource: Arc::new(AtomicBool::new(false)),
        }
    }

    /// Binds `pod` to `node` and records the Scheduled Event; clears the pod's nomination
    /// when it has one (`nominated`: in its status or in the scheduler's memory).
    pub async fn bind(
        &self,
        pod: &Pod,
        node: &str,
        explain: Option<Value>,
        nominated: bool,
    ) -> Result<(), BindError> {
        let ns = pod.metadata.namespace.clone().unwrap_or_default();
        let name = pod.metadata.name.clone().unwrap_or_default();
        let api: Api<Pod> = Api::namespaced(self.client.clone(), &ns);
        let err = |source| BindError::Bind {
            pod: format!("{ns}/{name}"),
            node: node.to_owned(),
            source,
        };
        // Upstream copies a Binding's annotations onto the pod; the fallback patch does the same.
        let annotations: std::collections::BTreeMap<String, String> = explain
            .map(|e| (EXPLAIN_ANNOTATION.to_owned(), e.to_string()))
            .into_iter()
            .collect();
        let mut bound = false;
        if !self.no_binding_subresource.load(Ordering::Relaxed) {
            let binding = Binding {
                metadata: ObjectMeta {
                    name: Some(name.clone()),
                    namespace: Some(ns.clone()),
                    uid: pod.metadata.uid.clone(),
                    annotations: Some(annotations.clone()).filter(|a| !a.is_empty()),
                    ..Default::default()
                },
                target: ObjectReference {
                    kind: Some("Node".into()),
                    api_version: Some("v1".into()),
                    name: Some(node.to_owned()),
                    ..Default::default()
                },
            };
            match api
                .create_subresource::<Binding, Value>(
                    "binding",
                    &name,
                    &PostParams::default(),
                    &binding,
                )
                .await
            {
                Ok(_) => bound = true,
                Err(e) if is_missing_subresource(&e) => {
                    if !self.no_binding_subresource.swap(true, Ordering::Relaxed) {
                        log(
                            'W',
                            "the API server has no pods/binding subresource: binding by setting spec.nodeName (guarded by resourceVersion) instead",
                        );
                    }
                }
                Err(e) => return Err(err(e)),
            }
        }
        if !bound {
            let patch = json!({
                "metadata": {"resourceVersion": pod.metadata.resource_version, "annotations": annotations},
                "spec": {"nodeName": node},
            });
            api.patch(&name, &PatchParams::default(), &Patch::Merge(&patch))
                .await
                .map_err(err)?;
        }
        self.events
            .emit(
                reference(pod),
                "Normal",
                "Scheduled",
                &format!("Successfully assigned {ns}/{name} to {node}"),
            )
            .await;
        if nominated {
            self.clear_nominated(pod).await;
        }
        Ok(())
    }

    /// Clears a pod's `status.nominatedNodeName` (best effort, as upstream's
    /// `ClearNominatedNodeName`).
    pub async fn clear_nominated(&self, pod: &Pod) {
        let (ns, name) = name_of(pod);
        let api: Api<Pod> = Api::namespaced(self.client.clone(), &ns);
        let patch = json!({"status": {"nominatedNodeName": null}});
        if let Err(e) = api
            .patch_status(&name, &PatchParams::default(), &Patch::Merge(&patch))
            .await
        {
            if !is_not_found(&e) {
                log(
                    'W',
                    format!("clearing the nominated node of {ns}/{name}: {e}"),
                );
            }
        }
    }

    /// Evicts one preemption victim as upstream's `PreemptPod`: the DisruptionTarget
    /// condition (reason PreemptionByScheduler), a graceful delete and a Preempted Event.
    /// A victim already gone is no error.
    pub async fn preempt(
        &self,
        victim: &Pod,
        preemptor: &Pod,
        node: &str,
        scheduler: &str,
    ) -> Result<(), BindError> {
        let (ns, name) = name_of(victim);
        let api: Api<Pod> = Api::namespaced(self.client.clone(), &ns);
        let key = format!("{ns}/{name}");
        let mut conditions = other_conditions(victim, DISRUPTION_TARGET);
        conditions.push(json!({
            "type": DISRUPTION_TARGET,
            "status": "True",
            "reason": PREEMPTION_BY_SCHEDULER,
            "message": format!("{scheduler}: preempting to accommodate a higher priority pod"),
            "lastProbeTime": null,
            "lastTransitionTime": crate::component::now_rfc3339(),
        }));
        let patch = json!({"status": {"conditions": conditions}});
        match api
            .patch_status(&name, &PatchParams::default(), &Patch::Merge(&patch))
            .await
        {
            Ok(_) => {}
            Err(e) if is_not_found(&e) => return Ok(()),
            Err(source) => {
                return Err(BindError::MarkVictim { pod: key, source });
            }
        }
        match api.delete(&name, &DeleteParams::default()).await {
            Ok(_) => {}
            Err(e) if is_not_found(&e) => return Ok(()),
            Err(source) => {
                return Err(BindError::DeleteVictim { pod: key, source });
            }
        }
        let uid = preemptor.metadata.uid.clone().unwrap_or_default();
        self.events
            .emit_related(
                reference(victim),
                Some(reference(preemptor)),
                "Normal",
                "Preempted",
                "Preempting",
                &format!("Preempted by pod {uid} on node {node}"),
            )
            .await;
        Ok(())
    }

    /// Records why the pod fits nowhere: the PodScheduled condition, the nominated node (set
    /// or cleared by preemption) and a FailedScheduling Event.
    pub async fn unschedulable(
        &self,
        pod: &Pod,
        message: &str,
        explain: Option<Value>,
        nomination: &Nomination,
    ) {
        let ns = pod.metadata.namespace.clone().unwrap_or_default();
        let name = pod.metadata.name.clone().unwrap_or_default();
        let api: Api<Pod> = Api::namespaced(self.client.clone(), &ns);
        if let Some(e) = explain {
            let patch = json!({"metadata": {"annotations": {EXPLAIN_ANNOTATION: e.to_string()}}});
            if let Err(e) = api
                .patch(&name, &PatchParams::default(), &Patch::Merge(&patch))
                .await
            {
                log(
                    'W',
                    format!("annotating {ns}/{name} with the decision: {e}"),
                );
            }
        }
        let mut conditions = other_conditions(pod, "PodScheduled");
        conditions.push(json!({
            "type": "PodScheduled",
            "status": "False",
            "reason": "Unschedulable",
            "message": message,
            "lastProbeTime": null,
            "lastTransitionTime": crate::component::now_rfc3339(),
        }));
        let mut patch = json!({"status": {"conditions": conditions}});
        match nomination {
            Nomination::Keep => {}
            Nomination::Clear => patch["status"]["nominatedNodeName"] = Value::Null,
            Nomination::Set(n) => patch["status"]["nominatedNodeName"] = json!(n),
        }
        if let Err(e) = api
            .patch_status(&name, &PatchParams::default(), &Patch::Merge(&patch))
            .await
        {
            log(
                'W',
                format!("updating the PodScheduled condition of {ns}/{name}: {e}"),
            );
        }
        self.events
            .emit(reference(pod), "Warning", "FailedScheduling", message)
            .await;
    }
}
