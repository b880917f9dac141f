//! The serviceaccount controller: a `default` ServiceAccount in every active namespace.
//!
//! Mirrors `pkg/controller/serviceaccount.ServiceAccountsController` with its default
//! configuration (`default` only). Leaves out the token controller (legacy token Secrets).

use std::sync::Arc;

use k8s_openapi::api::core::v1::{Namespace, ServiceAccount};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::api::{Api, PostParams};
use tokio::sync::Notify;

use super::{RESYNC, runner};
use crate::component::{chain, log};

pub async fn run(client: kube::Client) {
    let wake = Arc::new(Notify::new());
    let namespaces = runner::informer(Api::<Namespace>::all(client.clone()), wake.clone());
    let accounts = runner::informer(Api::<ServiceAccount>::all(client.clone()), wake.clone());
    runner::synced(
        "service account",
        vec![runner::ready(&namespaces), runner::ready(&accounts)],
    )
    .await;
    loop {
        for ns in namespaces.state() {
            let name = ns.metadata.name.clone().unwrap_or_default();
            let active = ns.metadata.deletion_timestamp.is_none()
                && ns.status.as_ref().and_then(|s| s.phase.as_deref()) != Some("Terminating");
            let has = accounts.state().iter().any(|sa| {
                sa.metadata.namespace.as_deref() == Some(&name)
                    && sa.metadata.name.as_deref() == Some("default")
            });
            if !active || has {
                continue;
            }
            let sa = ServiceAccount {
                metadata: ObjectMeta {
                    name: Some("default".into()),
                    namespace: Some(name.clone()),
                    ..Default::default()
                },
                ..Default::default()
            };
            match Api::<ServiceAccount>::namespaced(client.clone(), &name)
                .create(&PostParams::default(), &sa)
                .await
            {
                Ok(_) => {}
                Err(kube::Error::Api(s)) if s.code == 409 || s.code == 404 => {}
                Err(e) => log(
                    'E',
                    format!("serviceaccount: creating {name}/default: {}", chain(&e)),
                ),
            }
        }
        runner::next(&wake, RESYNC).await;
    }
}
