//! Events as upstream components write them: core/v1 Events about an object, with reason,
//! message, type and the reporting component. Mirrors `client-go/tools/record` without its
//! aggregation and rate limiting (each call writes one Event); best effort, as upstream:
//! a failed write is logged, never fatal.

use k8s_openapi::api::core::v1::{Event, EventSource, ObjectReference};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta, Time};
use k8s_openapi::jiff::Timestamp;
use kube::api::{Api, PostParams};

/// Writes Events in the name of one component (`default-scheduler`, `deployment-controller`…).
#[derive(Clone)]
pub struct Recorder {
    client: kube::Client,
    component: String,
    instance: String,
}

impl Recorder {
    pub fn new(client: kube::Client, component: &str) -> Recorder {
        let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
            .map(|h| h.trim().to_owned())
            .unwrap_or_else(|_| "localhost".into());
        Recorder {
            client,
            component: component.to_owned(),
            instance: format!("{component}-{host}"),
        }
    }

    /// Records an Event (`kind` Normal or Warning) about `target`.
    pub async fn emit(&self, target: ObjectReference, kind: &str, reason: &str, message: &str) {
        self.emit_related(target, None, kind, reason, reason, message)
            .await;
    }

    /// Records an Event about `target` that another object took part in (`related`, as
    /// upstream's `Eventf(regarding, related, …)`), with its own `action`.
    pub async fn emit_related(
        &self,
        target: ObjectReference,
        related: Option<ObjectReference>,
        kind: &str,
        reason: &str,
        action: &str,
        message: &str,
    ) {
        let ns = target.namespace.clone().unwrap_or_else(|| "default".into());
        let now = Timestamp::now();
        let name = format!(
            "{}.{:x}",
            target.name.as_deref().unwrap_or("object"),
            now.as_nanosecond()
        );
        let ev = Event {
            metadata: ObjectMeta {
                name: Some(name),
                namespace: Some(ns.clone()),
                ..Default::default()
            },
            involved_object: target,
            reason: Some(reason.into()),
            message: Some(message.into()),
            type_: Some(kind.into()),
            count: Some(1),
            first_timestamp: Some(Time(now)),
            last_timestamp: Some(Time(now)),
            event_time: Some(MicroTime(now)),
            action: Some(action.into()),
            related,
            source: Some(EventSource {
                component: Some(self.component.clone()),
                host: None,
            }),
            reporting_component: Some(self.component.clone()),
            reporting_instance: Some(self.instance.clone()),
            ..Default::default()
        };
        let api: Api<Event> = Api::namespaced(self.client.clone(), &ns);
        match api.create(&PostParams::default(), &ev).await {
            Err(e) if !super::namespace_terminating(&e) => {
                super::log('W', format!("writing event {reason} ({message}): {e}"));
            }
            _ => {}
        }
    }
}

/// A reference to an object for an Event, from its kind, apiVersion and metadata.
pub fn reference<K: kube::Resource<DynamicType = ()>>(obj: &K) -> ObjectReference {
    let m = obj.meta();
    ObjectReference {
        api_version: Some(K::api_version(&()).into_owned()),
        kind: Some(K::kind(&()).into_owned()),
        name: m.name.clone(),
        namespace: m.namespace.clone(),
        uid: m.uid.clone(),
        resource_version: m.resource_version.clone(),
        field_path: None,
    }
}
