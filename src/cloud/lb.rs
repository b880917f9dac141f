//! The service (load balancer) controller of the `local` provider: every Service of type
//! LoadBalancer gets an address from `--load-balancer-ip-range` in
//! `status.loadBalancer.ingress`.
//!
//! Mirrors `k8s.io/cloud-provider/controllers/service` (EnsuringLoadBalancer and
//! EnsuredLoadBalancer Events) with a provider whose "load balancer" is only the address:
//! traffic to it reaches the Service's node ports only if something on the machine routes it
//! (kube-proxy does not yet). Addresses in use are read back from the Services at every pass,
//! so a restart never hands out an address twice; `spec.loadBalancerIP` is honoured when free.

use std::collections::HashSet;
use std::net::Ipv4Addr;
use std::sync::Arc;

use k8s_openapi::api::core::v1::Service;
use kube::api::{Api, Patch, PatchParams};
use serde_json::json;
use tokio::sync::Notify;

use crate::component::events::{Recorder, reference};
use crate::component::{chain, log};
use crate::controllers::{RESYNC, runner};

fn ingress_ips(s: &Service) -> Vec<String> {
    s.status
        .as_ref()
        .and_then(|s| s.load_balancer.as_ref())
        .and_then(|lb| lb.ingress.as_ref())
        .map(|i| i.iter().filter_map(|x| x.ip.clone()).collect())
        .unwrap_or_default()
}

/// The address to give: the requested one if free and in range, else the lowest free one.
pub fn allocate(
    range: (u32, u32),
    used: &HashSet<String>,
    requested: Option<&str>,
) -> Option<String> {
    if let Some(r) = requested.and_then(|r| r.parse::<Ipv4Addr>().ok()) {
        let n = u32::from(r);
        if n >= range.0 && n <= range.1 && !used.contains(&r.to_string()) {
            return Some(r.to_string());
        }
    }
    (range.0..=range.1)
        .map(|n| Ipv4Addr::from(n).to_string())
        .find(|ip| !used.contains(ip))
}

pub async fn run(client: kube::Client, range: (u32, u32)) {
    let wake = Arc::new(Notify::new());
    let svcs = runner::informer(Api::<Service>::all(client.clone()), wake.clone());
    let events = Recorder::new(client.clone(), "service-controller");
    runner::synced("service", vec![runner::ready(&svcs)]).await;
    loop {
        let all = svcs.state();
        let mut used: HashSet<String> = all.iter().flat_map(|s| ingress_ips(s)).collect();
        for s in all {
            let is_lb = s.spec.as_ref().and_then(|s| s.type_.as_deref()) == Some("LoadBalancer");
            if !is_lb || !ingress_ips(&s).is_empty() {
                continue;
            }
            let ns = s.metadata.namespace.clone().unwrap_or_default();
            let name = s.metadata.name.clone().unwrap_or_default();
            events
                .emit(
                    reference(&*s),
                    "Normal",
                    "EnsuringLoadBalancer",
                    "Ensuring load balancer",
                )
                .await;
            let requested = s.spec.as_ref().and_then(|s| s.load_balancer_ip.as_deref());
            let Some(ip) = allocate(range, &used, requested) else {
                events
                    .emit(
                        reference(&*s),
                        "Warning",
                        "SyncLoadBalancerFailed",
                        "Error syncing load balancer: no free address in --load-balancer-ip-range",
                    )
                    .await;
                continue;
            };
            let api: Api<Service> = Api::namespaced(client.clone(), &ns);
            let patch =
                json!({"status": {"loadBalancer": {"ingress": [{"ip": ip, "ipMode": "VIP"}]}}});
            match api
                .patch_status(&name, &PatchParams::default(), &Patch::Merge(&patch))
                .await
            {
                Ok(_) => {
                    used.insert(ip);
                    events
                        .emit(
                            reference(&*s),
                            "Normal",
                            "EnsuredLoadBalancer",
                            "Ensured load balancer",
                        )
                        .await;
                }
                Err(e) => log('E', format!("service-lb: {ns}/{name}: {}", chain(&e))),
            }
        }
        runner::next(&wake, RESYNC).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lowest_free_or_requested() {
        let r = crate::cloud::parse_range("10.0.0.1-10.0.0.3").unwrap();
        let mut used = HashSet::new();
        assert_eq!(allocate(r, &used, None).as_deref(), Some("10.0.0.1"));
        used.insert("10.0.0.1".to_owned());
        assert_eq!(
            allocate(r, &used, Some("10.0.0.3")).as_deref(),
            Some("10.0.0.3")
        );
        assert_eq!(
            allocate(r, &used, Some("10.0.0.1")).as_deref(),
            Some("10.0.0.2")
        );
        used.insert("10.0.0.2".to_owned());
        used.insert("10.0.0.3".to_owned());
        assert_eq!(allocate(r, &used, None), None);
    }
}
