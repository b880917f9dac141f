//! The cloud-node controller of the `local` provider: initializes nodes that a kubelet with
//! `--cloud-provider=external` registered with the `node.cloudprovider.kubernetes.io/uninitialized`
//! taint.
//!
//! Mirrors `k8s.io/cloud-provider/controllers/node`: sets `spec.providerID`
//! (`local://<node>`), the region, zone and instance-type labels, the node's addresses
//! (InternalIP as the kubelet reported it, else 127.0.0.1, and Hostname), then removes the
//! taint so the scheduler may use the node.

use std::sync::Arc;

use k8s_openapi::api::core::v1::Node;
use kube::api::{Api, Patch, PatchParams};
use serde_json::json;
use tokio::sync::Notify;

use crate::component::{chain, log};
use crate::controllers::{RESYNC, runner};

pub const UNINITIALIZED: &str = "node.cloudprovider.kubernetes.io/uninitialized";

/// The patches that initialize a node: metadata and spec, then status.
pub fn init_patches(n: &Node, zone: &str) -> (serde_json::Value, serde_json::Value) {
    let name = n.metadata.name.clone().unwrap_or_default();
    let taints: Vec<_> = n
        .spec
        .as_ref()
        .and_then(|s| s.taints.clone())
        .unwrap_or_default()
        .into_iter()
        .filter(|t| t.key != UNINITIALIZED)
        .collect();
    let ip = n
        .status
        .as_ref()
        .and_then(|s| s.addresses.as_ref())
        .and_then(|a| a.iter().find(|a| a.type_ == "InternalIP"))
        .map(|a| a.address.clone())
        .unwrap_or_else(|| "127.0.0.1".into());
    let spec = json!({
        "metadata": {"labels": {
            "topology.kubernetes.io/region": "local",
            "topology.kubernetes.io/zone": zone,
            "node.kubernetes.io/instance-type": "local",
        }},
        "spec": {"providerID": format!("local://{name}"), "taints": taints},
    });
    let status = json!({"status": {"addresses": [
        {"type": "InternalIP", "address": ip},
        {"type": "Hostname", "address": name},
    ]}});
    (spec, status)
}

pub async fn run(client: kube::Client, zone: String) {
    let wake = Arc::new(Notify::new());
    let nodes = runner::informer(Api::<Node>::all(client.clone()), wake.clone());
    let api: Api<Node> = Api::all(client.clone());
    runner::synced("cloud node", vec![runner::ready(&nodes)]).await;
    loop {
        for n in nodes.state() {
            let tainted = n
                .spec
                .as_ref()
                .and_then(|s| s.taints.as_ref())
                .is_some_and(|ts| ts.iter().any(|t| t.key == UNINITIALIZED));
            if !tainted {
                continue;
            }
            let name = n.metadata.name.clone().unwrap_or_default();
            let (spec, status) = init_patches(&n, &zone);
            let r = match api
                .patch_status(&name, &PatchParams::default(), &Patch::Merge(&status))
                .await
            {
                Ok(_) => {
                    api.patch(&name, &PatchParams::default(), &Patch::Merge(&spec))
                        .await
                }
                Err(e) => Err(e),
            };
            match r {
                Ok(_) => log(
                    'I',
                    format!("Successfully initialized node {name} with cloud provider"),
                ),
                Err(e) => log(
                    'E',
                    format!("cloud-node: initializing {name}: {}", chain(&e)),
                ),
            }
        }
        runner::next(&wake, RESYNC).await;
    }
}
