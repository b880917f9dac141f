//! Events about a pod, as `kubectl describe pod` shows them: Pulled, Created, Started,
//! Killing, BackOff, Unhealthy, Failed — core/v1 Events from source `kubelet`. Mirrors
//! upstream's event recorder for the kubelet's reasons; leaves out aggregation into series
//! (each event is written once; BackOff once per back-off period).

use k8s_openapi::api::core::v1::{Event, EventSource, ObjectReference, Pod};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, Time};
use k8s_openapi::jiff::Timestamp;
use kube::api::{Api, PostParams};

/// One event waiting to be written: Normal or Warning, reason, message.
#[derive(Debug, Clone)]
pub struct Pending {
    pub warning: bool,
    pub reason: &'static str,
    pub message: String,
}

/// Writes `events` about `pod`; a failure is logged, never fatal (events are best effort, as
/// upstream).
pub async fn write(client: &kube::Client, pod: &Pod, node: &str, events: Vec<Pending>) {
    let ns = pod.metadata.namespace.clone().unwrap_or_default();
    let name = pod.metadata.name.clone().unwrap_or_default();
    let api: Api<Event> = Api::namespaced(client.clone(), &ns);
    for e in events {
        let now = Timestamp::now();
        let ev = Event {
            metadata: ObjectMeta {
                name: Some(format!("{name}.{:x}", now.as_nanosecond())),
                namespace: Some(ns.clone()),
                ..Default::default()
            },
            involved_object: ObjectReference {
                api_version: Some("v1".into()),
                kind: Some("Pod".into()),
                name: Some(name.clone()),
                namespace: Some(ns.clone()),
                uid: pod.metadata.uid.clone(),
                ..Default::default()
            },
            reason: Some(e.reason.into()),
            message: Some(e.message),
            type_: Some(if e.warning { "Warning" } else { "Normal" }.into()),
            source: Some(EventSource {
                component: Some("kubelet".into()),
                host: Some(node.into()),
            }),
            first_timestamp: Some(Time(now)),
            last_timestamp: Some(Time(now)),
            count: Some(1),
            reporting_component: Some("kubelet".into()),
            reporting_instance: Some(node.into()),
            ..Default::default()
        };
        if let Err(err) = api.create(&PostParams::default(), &ev).await {
            eprintln!(
                "kubelet: writing event {} for pod {ns}/{name}: {err}",
                e.reason
            );
        }
    }
}
