//! A pod worker: one task per pod, syncing it whenever its spec changes and every second
//! (upstream's pod workers plus the PLEG relist), writing status only when it changed, and
//! terminating it: containers stopped within the grace period, then the API object deleted
//! with gracePeriodSeconds=0, as upstream's kubelet does. Leaves out the status manager's
//! batching.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::jiff::Timestamp;
use kube::api::{Api, DeleteParams, Patch, PatchParams, Preconditions};
use tokio::sync::watch;

use super::Error;
use super::process::ProcessRuntime;
use super::spec::{self, PodRef};
use super::status;
use super::sync::PodRuntime;
use super::{events, simulated};
use crate::runtime::cri::Cri;

/// How often a quiet pod is synced anyway (upstream's `--sync-frequency` is a minute).
const RESYNC: Duration = Duration::from_secs(10);

/// What the kubelet wants for one pod.
#[derive(Debug, Clone)]
pub enum Desired {
    Run(Box<Pod>),
    /// Gone from every source (deleted from the API, its manifest removed): stop it.
    Gone,
}

/// What every worker shares.
pub struct Shared {
    pub node: String,
    pub client: kube::Client,
    /// `None`: the simulated runtime.
    pub cri: Option<Cri>,
    /// The PLEG's wake-ups (pod uids), with a runtime.
    pub pleg: Option<tokio::sync::broadcast::Sender<String>>,
    pub root: PathBuf,
    pub host_ip: String,
    /// What pods' resolv.conf is made from.
    pub dns: super::dns::Settings,
}

/// Where a pod came from: the API (deleted through the API) or a manifest file (its mirror
/// pod only reflects it).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Source {
    Api,
    File,
}

async fn write_status(shared: &Shared, pod: &Pod, status: &serde_json::Value) -> Result<(), Error> {
    let r = PodRef::of(pod);
    let api: Api<Pod> = Api::namespaced(shared.client.clone(), &r.namespace);
    let body = serde_json::json!({ "status": status });
    api.patch_status(&r.name, &PatchParams::default(), &Patch::Merge(&body))
        .await
        .map_err(|source| Error::PodStatus {
            pod: r.key(),
            source,
        })?;
    Ok(())
}

async fn delete(shared: &Shared, pod: &Pod) -> Result<(), Error> {
    let r = PodRef::of(pod);
    let api: Api<Pod> = Api::namespaced(shared.client.clone(), &r.namespace);
    let params = DeleteParams {
        grace_period_seconds: Some(0),
        preconditions: Some(Preconditions {
            uid: Some(r.uid.clone()),
            resource_version: None,
        }),
        ..Default::default()
    };
    match api.delete(&r.name, &params).await {
        Ok(_) => Ok(()),
        Err(kube::Error::Api(s)) if s.code == 404 => Ok(()),
        Err(source) => Err(Error::DeletePod {
            pod: r.key(),
            source,
        }),
    }
}

/// Runs one pod until it is terminated.
pub async fn run(shared: Arc<Shared>, mut rx: watch::Receiver<Desired>, source: Source) {
    let mut runtime = shared
        .cri
        .clone()
        .map(|c| PodRuntime::new(c, shared.client.clone(), &shared.root, shared.dns.clone()));
    // Without a container runtime, static pods still run: as host processes.
    let mut processes =
        (shared.cri.is_none() && source == Source::File).then(|| ProcessRuntime::new(&shared.root));
    let mut written: Option<serde_json::Value> = None;
    let mut last: Option<Box<Pod>> = None;
    let mut pleg = shared.pleg.as_ref().map(|tx| tx.subscribe());
    let uid = match &*rx.borrow() {
        Desired::Run(pod) => PodRef::of(pod).uid,
        Desired::Gone => String::new(),
    };
    loop {
        let desired = rx.borrow_and_update().clone();
        match desired {
            Desired::Run(pod) if pod.metadata.deletion_timestamp.is_none() => {
                let observed = match (runtime.as_mut(), processes.as_mut()) {
                    (Some(rt), _) => rt.sync(&pod, &shared.host_ip).await,
                    (None, Some(p)) if super::process::runnable(&pod) => {
                        Ok(p.sync(&pod, &shared.host_ip))
                    }
                    (None, _) => Ok(simulated::observe(&pod, &shared.host_ip)),
                };
                let result = match observed {
                    Ok(obs) => {
                        let st = status::build(&pod, &obs, Timestamp::now());
                        let st_phase = st.phase.clone();
                        let v = serde_json::to_value(st).unwrap_or_default();
                        // Also rewrite when the API lost what was written (a recreated mirror).
                        let api_phase = pod.status.as_ref().and_then(|s| s.phase.as_deref());
                        if written.as_ref() != Some(&v) || api_phase != st_phase.as_deref() {
                            write_status(&shared, &pod, &v)
                                .await
                                .map(|()| written = Some(v))
                        } else {
                            Ok(())
                        }
                    }
                    Err(e) => Err(e),
                };
                if let Err(e) = result {
                    eprintln!("kubelet: {}", super::chain(&e));
                }
                if let Some(rt) = runtime.as_mut() {
                    let pending = rt.take_events();
                    if !pending.is_empty() {
                        events::write(&shared.client, &pod, &shared.node, pending).await;
                    }
                }
                last = Some(pod);
            }
            Desired::Run(pod) => {
                if let Some(p) = processes.as_mut() {
                    p.kill(&pod, spec::grace_period(&pod));
                }
                terminate(&shared, runtime.as_mut(), &pod, source).await;
                return;
            }
            Desired::Gone => {
                // The object is gone already (force-deleted, or its manifest removed): only
                // its containers are left to stop, so nothing is deleted through the API.
                if let Some(pod) = last {
                    if let Some(p) = processes.as_mut() {
                        p.kill(&pod, spec::grace_period(&pod));
                    }
                    terminate(&shared, runtime.as_mut(), &pod, Source::File).await;
                }
                return;
            }
        }
        // With a runtime, the PLEG wakes the worker when its containers change; it still
        // syncs every second while probes run or a container waits (back-off, errors), and
        // every RESYNC otherwise. Without one (simulated, host processes) every second.
        let period = match (&runtime, &last) {
            (Some(rt), Some(pod)) if pleg.is_some() && !rt.needs_ticks(pod) => RESYNC,
            _ => Duration::from_secs(1),
        };
        tokio::select! {
            changed = rx.changed() => if changed.is_err() { return },
            _ = super::pleg::wait_for(&mut pleg, &uid) => {}
            _ = tokio::time::sleep(period) => {}
        }
    }
}

/// Stops the pod's containers within its grace period; an API pod is then deleted for good.
async fn terminate(shared: &Shared, runtime: Option<&mut PodRuntime>, pod: &Pod, source: Source) {
    let r = PodRef::of(pod);
    let grace = spec::grace_period(pod);
    eprintln!("kubelet: pod {}: stopping (grace period {grace}s)", r.key());
    if let Some(rt) = runtime {
        let stopping = pod
            .spec
            .iter()
            .flat_map(|s| &s.containers)
            .map(|c| events::Pending {
                warning: false,
                reason: "Killing",
                message: format!("Stopping container {}", c.name),
            })
            .collect();
        events::write(&shared.client, pod, &shared.node, stopping).await;
        if let Err(e) = rt.kill(pod, grace).await {
            eprintln!("kubelet: {}", super::chain(&e));
        }
    }
    if source == Source::Api {
        if let Err(e) = delete(shared, pod).await {
            eprintln!("kubelet: {}", super::chain(&e));
        }
    }
}
