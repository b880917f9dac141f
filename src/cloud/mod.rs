//! cloud-controller-manager with a `local` cloud provider: the seed's fifth control-plane
//! component, doing on one machine what a cloud does for its nodes and load balancers.
//!
//! Mirrors `k8s.io/cloud-provider`'s `cloud-controller-manager` and its cloud-node and
//! service (load balancer) controllers. The `local` provider knows every node as
//! `local://<name>`, in one region and zone, and hands LoadBalancer Services addresses from a
//! configured range, the way MetalLB or a cloud would. Leaves out the route controller and the
//! cloud-node-lifecycle controller (a local node never disappears from its cloud).

pub mod lb;
pub mod node;

use std::net::Ipv4Addr;
use std::sync::Arc;

use crate::cli::CloudControllerManagerArgs;
use crate::component::{self, ComponentError, health, log};

pub const ALL: &[&str] = &["cloud-node", "service-lb"];

#[derive(Debug, thiserror::Error)]
pub enum CloudError {
    #[error("starting the async runtime")]
    StartRuntime(#[source] std::io::Error),
    #[error(transparent)]
    Component(#[from] ComponentError),
    #[error(
        "invalid --controllers: unknown controller {0:?} (cloud-controller-manager has cloud-node, service-lb)"
    )]
    UnknownController(String),
    #[error(
        "invalid --load-balancer-ip-range {0:?}: expected FIRST-LAST IPv4 addresses such as 172.18.255.200-172.18.255.250"
    )]
    Range(String),
}

/// Parses FIRST-LAST into the addresses as numbers.
pub fn parse_range(s: &str) -> Option<(u32, u32)> {
    let (a, b) = s.split_once('-')?;
    let (a, b): (Ipv4Addr, Ipv4Addr) = (a.trim().parse().ok()?, b.trim().parse().ok()?);
    (u32::from(a) <= u32::from(b)).then(|| (u32::from(a), u32::from(b)))
}

pub fn run(args: CloudControllerManagerArgs) -> Result<(), CloudError> {
    let on = crate::controllers::enabled(&args.controllers, ALL)
        .map_err(CloudError::UnknownController)?;
    let range = parse_range(&args.load_balancer_ip_range)
        .ok_or_else(|| CloudError::Range(args.load_balancer_ip_range.clone()))?;
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(CloudError::StartRuntime)?;
    rt.block_on(async move {
        let metrics = Arc::new(health::Metrics::default());
        let client = component::start(
            &args.common,
            args.secure_port,
            "cloud-controller-manager",
            metrics,
        )
        .await?;
        let lost = component::elect(&client, &args.common, "cloud-controller-manager").await?;
        let mut tasks = tokio::task::JoinSet::new();
        for name in &on {
            log('I', format!("Starting \"{name}\""));
            match name.as_str() {
                "cloud-node" => tasks.spawn(node::run(client.clone(), args.zone.clone())),
                _ => tasks.spawn(lb::run(client.clone(), range)),
            };
        }
        tokio::select! {
            _ = tasks.join_next() => Ok(()),
            e = lost => Err(CloudError::Component(e)),
        }
    })
}
