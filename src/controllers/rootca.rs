//! The root-ca-cert-publisher controller: a ConfigMap `kube-root-ca.crt` with the cluster's CA
//! (`ca.crt`) in every active namespace, so pods can verify the API server.
//!
//! Mirrors `pkg/controller/certificates/rootcacertpublisher`: creates the ConfigMap where it is
//! missing and puts `ca.crt` back when someone changed it, with upstream's annotation
//! `kubernetes.io/description`. Leaves out its metrics.

use std::collections::BTreeMap;
use std::sync::Arc;

use k8s_openapi::api::core::v1::{ConfigMap, Namespace};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::api::{Api, PostParams};
use tokio::sync::Notify;

use super::{RESYNC, runner};
use crate::component::{chain, log};

/// The ConfigMap's name, as upstream.
pub const NAME: &str = "kube-root-ca.crt";
const DESCRIPTION: &str = "Contains a CA bundle that can be used to verify the kube-apiserver when using internal endpoints such as the internal service IP or kubernetes.default.svc. No other usage is guaranteed across distributions of Kubernetes clusters.";

/// The ConfigMap the controller wants in namespace `ns`.
pub fn desired(ns: &str, ca: &str) -> ConfigMap {
    ConfigMap {
        metadata: ObjectMeta {
            name: Some(NAME.into()),
            namespace: Some(ns.into()),
            annotations: Some(BTreeMap::from([(
                "kubernetes.io/description".into(),
                DESCRIPTION.into(),
            )])),
            ..Default::default()
        },
        data: Some(BTreeMap::from([("ca.crt".into(), ca.into())])),
        ..Default::default()
    }
}

pub async fn run(client: kube::Client, ca: String) {
    let wake = Arc::new(Notify::new());
    let namespaces = runner::informer(Api::<Namespace>::all(client.clone()), wake.clone());
    let maps = runner::informer(Api::<ConfigMap>::all(client.clone()), wake.clone());
    runner::synced(
        "root CA certificate publisher",
        vec![runner::ready(&namespaces), runner::ready(&maps)],
    )
    .await;
    loop {
        let current = maps.state();
        for ns in namespaces.state() {
            let name = ns.metadata.name.clone().unwrap_or_default();
            let active = ns.metadata.deletion_timestamp.is_none()
                && ns.status.as_ref().and_then(|s| s.phase.as_deref()) != Some("Terminating");
            if !active {
                continue;
            }
            let found = current.iter().find(|cm| {
                cm.metadata.namespace.as_deref() == Some(&name)
                    && cm.metadata.name.as_deref() == Some(NAME)
            });
            let api = Api::<ConfigMap>::namespaced(client.clone(), &name);
            let result = match found {
                None => api
                    .create(&PostParams::default(), &desired(&name, &ca))
                    .await
                    .map(drop),
                Some(cm) => {
                    let has = cm.data.as_ref().and_then(|d| d.get("ca.crt"));
                    if has.map(String::as_str) == Some(ca.as_str()) {
                        continue;
                    }
                    let mut fixed = (**cm).clone();
                    fixed
                        .data
                        .get_or_insert_with(BTreeMap::new)
                        .insert("ca.crt".into(), ca.clone());
                    api.replace(NAME, &PostParams::default(), &fixed)
                        .await
                        .map(drop)
                }
            };
            match result {
                Ok(()) => {}
                Err(kube::Error::Api(s)) if s.code == 409 || s.code == 404 => {}
                Err(e) => log(
                    'E',
                    format!(
                        "root-ca-cert-publisher: syncing {name}/{NAME}: {}",
                        chain(&e)
                    ),
                ),
            }
        }
        runner::next(&wake, RESYNC).await;
    }
}
