//! The Services and EndpointSlices that kube-proxy and CoreDNS both serve from: a listing once
//! (their `rules` and `records` commands), and caches kept current by watches (their serving
//! loops). Mirrors the Service and EndpointSlice informers of upstream's kube-proxy
//! (`pkg/proxy/config`) and CoreDNS's `kubernetes` plugin, without their indexers.

use std::sync::Arc;

use k8s_openapi::api::core::v1::Service;
use k8s_openapi::api::discovery::v1::EndpointSlice;
use kube::api::{Api, ListParams};
use kube::runtime::reflector::Store;
use kube::runtime::{WatchStreamExt, reflector, watcher};
use tokio::sync::Notify;
use tokio_stream::StreamExt;

/// Which list or watch failed: `"services"` or `"endpointslices"`, for the caller's error.
pub type What = &'static str;

/// Lists every Service and EndpointSlice once, as they are now.
pub async fn list(
    client: kube::Client,
) -> Result<(Vec<Service>, Vec<EndpointSlice>), (What, kube::Error)> {
    let services = Api::<Service>::all(client.clone())
        .list(&ListParams::default())
        .await
        .map_err(|e| ("services", e))?;
    let slices = Api::<EndpointSlice>::all(client)
        .list(&ListParams::default())
        .await
        .map_err(|e| ("endpointslices", e))?;
    Ok((services.items, slices.items))
}

/// The caches of every Service and EndpointSlice.
pub struct Caches {
    pub services: Store<Service>,
    pub slices: Store<EndpointSlice>,
}

impl Caches {
    /// Starts both watches; every event, and every watch error (logged as `{who}: watching
    /// {what}: {error}`; the watches retry with back-off), rings `changed`.
    pub fn start(client: kube::Client, changed: Arc<Notify>, who: &'static str) -> Caches {
        let (services, svc_writer) = reflector::store::<Service>();
        let (slices, eps_writer) = reflector::store::<EndpointSlice>();
        let svc_stream = reflector::reflector(
            svc_writer,
            watcher::watcher(Api::<Service>::all(client.clone()), Default::default())
                .default_backoff(),
        );
        let eps_stream = reflector::reflector(
            eps_writer,
            watcher::watcher(Api::<EndpointSlice>::all(client), Default::default())
                .default_backoff(),
        );
        tokio::spawn(drive(svc_stream, changed.clone(), who, "services"));
        tokio::spawn(drive(eps_stream, changed, who, "endpointslices"));
        Caches { services, slices }
    }

    /// Waits until both watches have listed (as long as the API server takes to answer).
    /// Fails, naming the watch, only if a watch ended before its first list.
    pub async fn wait_until_ready(&self) -> Result<(), What> {
        self.services
            .wait_until_ready()
            .await
            .map_err(|_| "services")?;
        self.slices
            .wait_until_ready()
            .await
            .map_err(|_| "endpointslices")
    }

    /// What the caches hold now.
    pub fn snapshot(&self) -> (Vec<Service>, Vec<EndpointSlice>) {
        let svcs = self
            .services
            .state()
            .iter()
            .map(|s| (**s).clone())
            .collect();
        let eps = self.slices.state().iter().map(|s| (**s).clone()).collect();
        (svcs, eps)
    }
}

/// Feeds a reflector's store and rings `changed` on every event.
async fn drive<S, T, E>(stream: S, changed: Arc<Notify>, who: &'static str, what: What)
where
    S: tokio_stream::Stream<Item = Result<T, E>>,
    E: std::fmt::Display,
{
    let mut stream = std::pin::pin!(stream);
    while let Some(event) = stream.next().await {
        if let Err(e) = event {
            eprintln!("{who}: watching {what}: {e}");
        }
        changed.notify_one();
    }
}
