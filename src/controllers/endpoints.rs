//! The endpoints and endpointslice controllers: which pods stand behind each Service.
//!
//! Mirrors `pkg/controller/endpoint` and `pkg/controller/endpointslice`: for every Service with
//! a selector, the pods it selects that have an IP, ready ones as `addresses` and the others as
//! `notReadyAddresses` (Endpoints), or as endpoints with `conditions.ready` (one EndpointSlice
//! per Service, labelled `kubernetes.io/service-name`). Ports resolve `targetPort` by number or
//! by the container port's name. Leaves out slices of more than 100 endpoints being split,
//! topology hints and headless-service hostnames.

use std::collections::BTreeMap;
use std::sync::Arc;

use k8s_openapi::api::core::v1::{Endpoints, Pod, Service};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use kube::api::{Api, Patch, PatchParams, PostParams};
use kube::runtime::reflector::Store;
use serde_json::{Value, json};
use tokio::sync::Notify;

use super::replicaset::{is_active, is_ready};
use super::{RESYNC, owner_ref, runner};
use crate::component::{chain, log, namespace_terminating};

/// The pods a Service selects, with an IP, in its namespace.
fn backends(svc: &Service, pods: &Store<Pod>) -> Vec<Arc<Pod>> {
    let Some(sel) = svc
        .spec
        .as_ref()
        .and_then(|s| s.selector.clone())
        .filter(|s| !s.is_empty())
    else {
        return vec![];
    };
    let mut out: Vec<Arc<Pod>> = pods
        .state()
        .into_iter()
        .filter(|p| {
            p.metadata.namespace == svc.metadata.namespace
                && is_active(p)
                && p.status
                    .as_ref()
                    .and_then(|s| s.pod_ip.as_deref())
                    .is_some_and(|ip| !ip.is_empty())
                && {
                    let labels = p.metadata.labels.clone().unwrap_or_default();
                    sel.iter().all(|(k, v)| labels.get(k) == Some(v))
                }
        })
        .collect();
    out.sort_by(|a, b| a.metadata.name.cmp(&b.metadata.name));
    out
}

fn target_port(svc_port: &k8s_openapi::api::core::v1::ServicePort, pod: &Pod) -> i32 {
    match &svc_port.target_port {
        Some(IntOrString::Int(p)) => *p,
        Some(IntOrString::String(name)) => pod
            .spec
            .iter()
            .flat_map(|s| s.containers.iter())
            .flat_map(|c| c.ports.iter().flatten())
            .find(|p| p.name.as_deref() == Some(name.as_str()))
            .map(|p| p.container_port)
            .unwrap_or(svc_port.port),
        None => svc_port.port,
    }
}

fn address(p: &Pod) -> Value {
    json!({
        "ip": p.status.as_ref().and_then(|s| s.pod_ip.clone()),
        "nodeName": p.spec.as_ref().and_then(|s| s.node_name.clone()),
        "targetRef": {"kind": "Pod", "namespace": p.metadata.namespace, "name": p.metadata.name, "uid": p.metadata.uid},
    })
}

fn ports(svc: &Service, first: Option<&Pod>) -> Vec<Value> {
    svc.spec
        .iter()
        .flat_map(|s| s.ports.iter().flatten())
        .map(|sp| {
            let port = first.map(|p| target_port(sp, p)).unwrap_or(sp.port);
            json!({"name": sp.name, "port": port, "protocol": sp.protocol.clone().unwrap_or_else(|| "TCP".into())})
        })
        .collect()
}

async fn informers(
    client: &kube::Client,
    wake: &Arc<Notify>,
    name: &str,
) -> (Store<Service>, Store<Pod>) {
    let svcs = runner::informer(Api::<Service>::all(client.clone()), wake.clone());
    let pods = runner::informer(Api::<Pod>::all(client.clone()), wake.clone());
    runner::synced(name, vec![runner::ready(&svcs), runner::ready(&pods)]).await;
    (svcs, pods)
}

fn has_selector(svc: &Service) -> bool {
    svc.spec
        .as_ref()
        .and_then(|s| s.selector.as_ref())
        .is_some_and(|s| !s.is_empty())
}

pub async fn run_endpoints(client: kube::Client) {
    let wake = Arc::new(Notify::new());
    let eps = runner::informer(Api::<Endpoints>::all(client.clone()), wake.clone());
    let (svcs, pods) = informers(&client, &wake, "endpoint").await;
    loop {
        for svc in svcs.state().iter().filter(|s| has_selector(s)) {
            let ns = svc.metadata.namespace.clone().unwrap_or_default();
            let name = svc.metadata.name.clone().unwrap_or_default();
            let pods = backends(svc, &pods);
            let (ready, not_ready): (Vec<&Arc<Pod>>, Vec<&Arc<Pod>>) =
                pods.iter().partition(|p| is_ready(p));
            let subsets: Vec<Value> = if pods.is_empty() {
                vec![]
            } else {
                let mut s = json!({"ports": ports(svc, pods.first().map(|p| &**p))});
                if !ready.is_empty() {
                    s["addresses"] = ready.iter().map(|p| address(p)).collect();
                }
                if !not_ready.is_empty() {
                    s["notReadyAddresses"] = not_ready.iter().map(|p| address(p)).collect();
                }
                vec![s]
            };
            let current = eps.state().into_iter().find(|e| {
                e.metadata.namespace.as_deref() == Some(&ns)
                    && e.metadata.name.as_deref() == Some(&name)
            });
            let api: Api<Endpoints> = Api::namespaced(client.clone(), &ns);
            let result = match current {
                Some(cur) => {
                    let have = serde_json::to_value(cur.subsets.clone().unwrap_or_default())
                        .unwrap_or_default();
                    let want: Vec<k8s_openapi::api::core::v1::EndpointSubset> =
                        serde_json::from_value(json!(subsets)).unwrap_or_default();
                    if have == serde_json::to_value(&want).unwrap_or_default() {
                        continue;
                    }
                    api.patch(
                        &name,
                        &PatchParams::default(),
                        &Patch::Merge(&json!({"subsets": subsets})),
                    )
                    .await
                    .map(|_| ())
                }
                None => {
                    let ep: Endpoints = match serde_json::from_value(
                        json!({"metadata": {"name": name, "namespace": ns, "labels": svc.metadata.labels}, "subsets": subsets}),
                    ) {
                        Ok(e) => e,
                        Err(_) => continue,
                    };
                    api.create(&PostParams::default(), &ep).await.map(|_| ())
                }
            };
            match result {
                Err(e) if !namespace_terminating(&e) => {
                    log('W', format!("endpoints {ns}/{name}: {}", chain(&e)));
                }
                _ => {}
            }
        }
        runner::next(&wake, RESYNC).await;
    }
}

pub async fn run_slices(client: kube::Client) {
    let wake = Arc::new(Notify::new());
    let slices = runner::informer(Api::<EndpointSlice>::all(client.clone()), wake.clone());
    let (svcs, pods) = informers(&client, &wake, "endpoint_slice").await;
    loop {
        for svc in svcs.state().iter().filter(|s| has_selector(s)) {
            let ns = svc.metadata.namespace.clone().unwrap_or_default();
            let name = svc.metadata.name.clone().unwrap_or_default();
            let pods = backends(svc, &pods);
            let endpoints: Vec<Value> = pods
                .iter()
                .map(|p| {
                    let ready = is_ready(p);
                    json!({
                        "addresses": [p.status.as_ref().and_then(|s| s.pod_ip.clone())],
                        "conditions": {"ready": ready, "serving": ready, "terminating": false},
                        "nodeName": p.spec.as_ref().and_then(|s| s.node_name.clone()),
                        "targetRef": {"kind": "Pod", "namespace": ns, "name": p.metadata.name, "uid": p.metadata.uid},
                    })
                })
                .collect();
            // One slice per Service with a fixed name, so a restarted controller finds it again.
            let slice_name = format!("{name}-klab");
            let mut labels: BTreeMap<String, String> = BTreeMap::new();
            labels.insert("kubernetes.io/service-name".into(), name.clone());
            labels.insert(
                "endpointslice.kubernetes.io/managed-by".into(),
                "endpointslice-controller.k8s.io".into(),
            );
            let want = json!({
                "apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice",
                "metadata": {"name": slice_name, "namespace": ns, "labels": labels, "ownerReferences": [owner_ref(&**svc)]},
                "addressType": "IPv4",
                "endpoints": endpoints,
                "ports": ports(svc, pods.first().map(|p| &**p)),
            });
            let Ok(want_slice) = serde_json::from_value::<EndpointSlice>(want.clone()) else {
                continue;
            };
            let current = slices.state().into_iter().find(|s| {
                s.metadata.namespace.as_deref() == Some(&ns)
                    && s.metadata.name.as_deref() == Some(&slice_name)
            });
            let api: Api<EndpointSlice> = Api::namespaced(client.clone(), &ns);
            let result = match current {
                Some(cur)
                    if cur.endpoints == want_slice.endpoints && cur.ports == want_slice.ports =>
                {
                    continue;
                }
                Some(_) => api
                    .patch(
                        &slice_name,
                        &PatchParams::default(),
                        &Patch::Merge(&json!({"endpoints": endpoints, "ports": want["ports"]})),
                    )
                    .await
                    .map(|_| ()),
                None => api
                    .create(&PostParams::default(), &want_slice)
                    .await
                    .map(|_| ()),
            };
            if let Err(e) = result {
                log(
                    'W',
                    format!("endpointslice {ns}/{slice_name}: {}", chain(&e)),
                );
            }
        }
        runner::next(&wake, RESYNC).await;
    }
}
