//! The garbage collector: deletes objects whose owners are gone, and carries out foreground
//! and orphan deletion of owners.
//!
//! Mirrors `pkg/controller/garbagecollector`: an object whose every owner reference names an
//! object that no longer exists (checked against the API, not only the cache, as upstream's
//! `attemptToDeleteItem` does) is deleted in the background; an owner being deleted with the
//! `foregroundDeletion` finalizer has its dependents deleted first, then loses the finalizer;
//! one with the `orphan` finalizer has its dependents' owner references removed, then loses
//! the finalizer. Leaves out discovery: it watches the kinds klab's controllers own and create
//! (Deployments, ReplicaSets, DaemonSets, ControllerRevisions, Pods, Services, EndpointSlices),
//! not every resource.

use std::collections::HashMap;
use std::sync::Arc;

use futures::StreamExt;
use k8s_openapi::api::apps::v1::{ControllerRevision, DaemonSet, Deployment, ReplicaSet};
use k8s_openapi::api::core::v1::{Pod, Service};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use kube::api::{Api, ApiResource, DeleteParams, DynamicObject, Patch, PatchParams};
use kube::runtime::reflector::{self, Store};
use kube::runtime::{WatchStreamExt, watcher};
use serde_json::json;
use tokio::sync::Notify;

use super::RESYNC;
use super::runner::{self, Ready};
use crate::component::{chain, log};

fn kinds() -> Vec<ApiResource> {
    vec![
        ApiResource::erase::<Deployment>(&()),
        ApiResource::erase::<ReplicaSet>(&()),
        ApiResource::erase::<DaemonSet>(&()),
        ApiResource::erase::<ControllerRevision>(&()),
        ApiResource::erase::<Pod>(&()),
        ApiResource::erase::<Service>(&()),
        ApiResource::erase::<EndpointSlice>(&()),
    ]
}

fn informer(
    client: &kube::Client,
    ar: &ApiResource,
    wake: Arc<Notify>,
) -> (Store<DynamicObject>, Ready) {
    let api: Api<DynamicObject> = Api::all_with(client.clone(), ar);
    let writer = reflector::store::Writer::new(ar.clone());
    let reader = writer.as_reader();
    let stream = reflector::reflector(
        writer,
        watcher::watcher(api, watcher::Config::default()).default_backoff(),
    );
    tokio::spawn(async move {
        tokio::pin!(stream);
        while let Some(ev) = stream.next().await {
            if let Err(e) = ev {
                log(
                    'W',
                    format!("garbage collector watch error (retrying): {e}"),
                );
            }
            wake.notify_one();
        }
    });
    let r = reader.clone();
    (
        reader,
        Box::pin(async move {
            let _ = r.wait_until_ready().await;
        }),
    )
}

struct Gc {
    client: kube::Client,
    stores: Vec<(ApiResource, Store<DynamicObject>)>,
}

fn has_finalizer(o: &DynamicObject, f: &str) -> bool {
    o.metadata.finalizers.iter().flatten().any(|x| x == f)
}

impl Gc {
    fn api(&self, ar: &ApiResource, ns: Option<&str>) -> Api<DynamicObject> {
        match ns {
            Some(ns) => Api::namespaced_with(self.client.clone(), ns, ar),
            None => Api::all_with(self.client.clone(), ar),
        }
    }

    /// Whether the owner named by a reference still exists with that uid, asked of the API.
    async fn owner_exists(
        &self,
        ns: Option<&str>,
        r: &k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference,
    ) -> bool {
        let Some((ar, _)) = self
            .stores
            .iter()
            .find(|(ar, _)| ar.kind == r.kind && ar.api_version == r.api_version)
        else {
            return true; // A kind this collector does not know: never assume it is gone.
        };
        match self.api(ar, ns).get_opt(&r.name).await {
            Ok(Some(o)) => o.metadata.uid.as_deref() == Some(r.uid.as_str()),
            Ok(None) => false,
            Err(_) => true,
        }
    }

    async fn remove_finalizer(&self, ar: &ApiResource, o: &DynamicObject, f: &str) {
        let left: Vec<String> = o
            .metadata
            .finalizers
            .iter()
            .flatten()
            .filter(|x| *x != f)
            .cloned()
            .collect();
        let patch = json!({"metadata": {"finalizers": left, "resourceVersion": o.metadata.resource_version}});
        let name = o.metadata.name.clone().unwrap_or_default();
        if let Err(e) = self
            .api(ar, o.metadata.namespace.as_deref())
            .patch(&name, &PatchParams::default(), &Patch::Merge(&patch))
            .await
        {
            log(
                'W',
                format!(
                    "garbage collector: removing finalizer {f} from {}/{name}: {}",
                    ar.kind,
                    chain(&e)
                ),
            );
        }
    }

    async fn pass(&mut self) {
        let mut all: Vec<(ApiResource, Arc<DynamicObject>)> = Vec::new();
        for (ar, s) in &self.stores {
            all.extend(s.state().into_iter().map(|o| (ar.clone(), o)));
        }
        let mut dependents: HashMap<String, Vec<usize>> = HashMap::new();
        let mut uids: HashMap<String, usize> = HashMap::new();
        for (i, (_, o)) in all.iter().enumerate() {
            if let Some(u) = &o.metadata.uid {
                uids.insert(u.clone(), i);
            }
            for r in o.metadata.owner_references.iter().flatten() {
                dependents.entry(r.uid.clone()).or_default().push(i);
            }
        }
        for (ar, o) in &all {
            if o.metadata.deletion_timestamp.is_none() {
                continue;
            }
            let uid = o.metadata.uid.clone().unwrap_or_default();
            let deps = dependents.get(&uid).cloned().unwrap_or_default();
            if has_finalizer(o, "orphan") {
                for &i in &deps {
                    let (dar, d) = &all[i];
                    let refs: Vec<_> = d
                        .metadata
                        .owner_references
                        .iter()
                        .flatten()
                        .filter(|r| r.uid != uid)
                        .cloned()
                        .collect();
                    let patch = json!({"metadata": {"ownerReferences": refs, "resourceVersion": d.metadata.resource_version}});
                    let name = d.metadata.name.clone().unwrap_or_default();
                    let _ = self
                        .api(dar, d.metadata.namespace.as_deref())
                        .patch(&name, &PatchParams::default(), &Patch::Merge(&patch))
                        .await;
                }
                if deps.is_empty() {
                    self.remove_finalizer(ar, o, "orphan").await;
                }
            } else if has_finalizer(o, "foregroundDeletion") {
                for &i in &deps {
                    let (dar, d) = &all[i];
                    if d.metadata.deletion_timestamp.is_none() {
                        let name = d.metadata.name.clone().unwrap_or_default();
                        let _ = self
                            .api(dar, d.metadata.namespace.as_deref())
                            .delete(&name, &DeleteParams::foreground())
                            .await;
                    }
                }
                if deps.is_empty() {
                    self.remove_finalizer(ar, o, "foregroundDeletion").await;
                }
            }
        }
        for (ar, o) in &all {
            let refs = o.metadata.owner_references.clone().unwrap_or_default();
            if refs.is_empty() || o.metadata.deletion_timestamp.is_some() {
                continue;
            }
            if refs.iter().any(|r| uids.contains_key(&r.uid)) {
                continue;
            }
            let ns = o.metadata.namespace.as_deref();
            let mut any = false;
            for r in &refs {
                if self.owner_exists(ns, r).await {
                    any = true;
                    break;
                }
            }
            if any {
                continue;
            }
            let name = o.metadata.name.clone().unwrap_or_default();
            log(
                'I',
                format!(
                    "garbage collector: deleting {} {}/{name}: its owners are gone",
                    ar.kind,
                    ns.unwrap_or_default()
                ),
            );
            if let Err(e) = self
                .api(ar, ns)
                .delete(&name, &DeleteParams::background())
                .await
            {
                if !matches!(&e, kube::Error::Api(s) if s.code == 404) {
                    log(
                        'W',
                        format!(
                            "garbage collector: deleting {}/{name}: {}",
                            ar.kind,
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
    let mut stores = Vec::new();
    let mut ready = Vec::new();
    for ar in kinds() {
        let (s, r) = informer(&client, &ar, wake.clone());
        stores.push((ar, s));
        ready.push(r);
    }
    let mut gc = Gc { client, stores };
    runner::synced("garbage collector", ready).await;
    loop {
        gc.pass().await;
        runner::next(&wake, RESYNC).await;
    }
}
