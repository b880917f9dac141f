//! The nodeipam controller: gives every node a pod CIDR from `--cluster-cidr`.
//!
//! Mirrors `pkg/controller/nodeipam` with the RangeAllocator (`--allocate-node-cidrs`,
//! `--cluster-cidr`, `--node-cidr-mask-size`): ranges already on nodes are marked used at
//! start, each node without `spec.podCIDR` gets the lowest free one, and when none is left the
//! node gets a CIDRNotAvailable Event. Leaves out IPv6 and dual stack.

use std::collections::HashSet;
use std::net::Ipv4Addr;
use std::sync::Arc;

use k8s_openapi::api::core::v1::Node;
use kube::api::{Api, Patch, PatchParams};
use serde_json::json;
use tokio::sync::Notify;

use super::{RESYNC, runner};
use crate::component::events::{Recorder, reference};
use crate::component::{chain, log};

/// An IPv4 CIDR.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cidr {
    pub base: u32,
    pub bits: u8,
}

impl Cidr {
    pub fn parse(s: &str) -> Option<Cidr> {
        let (ip, bits) = s.split_once('/')?;
        let ip: Ipv4Addr = ip.trim().parse().ok()?;
        let bits: u8 = bits.trim().parse().ok()?;
        if bits > 32 {
            return None;
        }
        let mask = if bits == 0 {
            0
        } else {
            u32::MAX << (32 - bits)
        };
        Some(Cidr {
            base: u32::from(ip) & mask,
            bits,
        })
    }

    /// The `i`th subnet of prefix `size` inside this range, if there is one.
    pub fn subnet(&self, size: u8, i: u32) -> Option<Cidr> {
        if size < self.bits || size > 32 {
            return None;
        }
        let count = 1u64 << (size - self.bits);
        if u64::from(i) >= count {
            return None;
        }
        let step = 1u64 << (32 - size);
        Some(Cidr {
            base: self.base + (u64::from(i) * step) as u32,
            bits: size,
        })
    }
}

impl std::fmt::Display for Cidr {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", Ipv4Addr::from(self.base), self.bits)
    }
}

/// The lowest subnet not in `used`.
pub fn next_free(range: Cidr, size: u8, used: &HashSet<String>) -> Option<Cidr> {
    (0..)
        .map_while(|i| range.subnet(size, i))
        .find(|c| !used.contains(&c.to_string()))
}

pub async fn run(client: kube::Client, range: Cidr, size: u8) {
    let wake = Arc::new(Notify::new());
    let nodes = runner::informer(Api::<Node>::all(client.clone()), wake.clone());
    let events = Recorder::new(client.clone(), "cidrAllocator");
    let api: Api<Node> = Api::all(client.clone());
    runner::synced("node ipam", vec![runner::ready(&nodes)]).await;
    let mut used: HashSet<String> = HashSet::new();
    loop {
        let all = nodes.state();
        used.extend(all.iter().filter_map(|n| n.spec.as_ref()?.pod_cidr.clone()));
        for n in all {
            if n.spec.as_ref().and_then(|s| s.pod_cidr.as_ref()).is_some() {
                continue;
            }
            let name = n.metadata.name.clone().unwrap_or_default();
            let Some(c) = next_free(range, size, &used) else {
                events
                    .emit(
                        reference(&*n),
                        "Normal",
                        "CIDRNotAvailable",
                        &format!("Node {name} status is now: CIDRNotAvailable"),
                    )
                    .await;
                continue;
            };
            let patch = json!({"spec": {"podCIDR": c.to_string(), "podCIDRs": [c.to_string()]}});
            match api
                .patch(&name, &PatchParams::default(), &Patch::Merge(&patch))
                .await
            {
                Ok(_) => {
                    log('I', format!("Set node {name} PodCIDR to [{c}]"));
                    used.insert(c.to_string());
                }
                Err(e) => log(
                    'E',
                    format!("nodeipam: setting the podCIDR of {name}: {}", chain(&e)),
                ),
            }
        }
        runner::next(&wake, RESYNC).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn subnets_in_order_skipping_used() {
        let r = Cidr::parse("10.244.0.0/16").unwrap();
        let mut used = HashSet::new();
        assert_eq!(
            next_free(r, 24, &used).unwrap().to_string(),
            "10.244.0.0/24"
        );
        used.insert("10.244.0.0/24".to_owned());
        assert_eq!(
            next_free(r, 24, &used).unwrap().to_string(),
            "10.244.1.0/24"
        );
        let tiny = Cidr::parse("10.0.0.0/24").unwrap();
        used.insert("10.0.0.0/24".to_owned());
        assert_eq!(next_free(tiny, 24, &used), None);
    }
}
