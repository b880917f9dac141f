//! The pods the kubelet knows, from both sources (the API's pods bound to the node, and the
//! static pods of --pod-manifest-path with their mirror pods), and the worker each one gets.
//! Mirrors upstream's pod config merging (`pkg/kubelet/config`), pod manager and the
//! housekeeping that removes orphaned sandboxes.

use std::collections::HashMap;
use std::sync::Arc;

use k8s_openapi::api::core::v1::Pod;
use tokio::sync::watch;
use tokio::task::JoinHandle;

use super::worker::{self, Desired, Shared, Source};
use super::{chain, server, static_pods, sync};

/// The pods the kubelet knows and the worker of each.
pub struct Pods {
    pub shared: Arc<Shared>,
    pub running: server::Running,
    pub api: HashMap<String, Pod>,
    pub mirrors: HashMap<String, Pod>,
    pub statics: HashMap<String, Pod>,
    pub workers: HashMap<String, (watch::Sender<Desired>, JoinHandle<()>)>,
}

pub fn uid(pod: &Pod) -> String {
    pod.metadata.uid.clone().unwrap_or_default()
}

fn key(pod: &Pod) -> String {
    format!(
        "{}/{}",
        pod.metadata.namespace.as_deref().unwrap_or_default(),
        pod.metadata.name.as_deref().unwrap_or_default()
    )
}

impl Pods {
    fn show(&self, pod: &Pod, gone: bool) {
        if let Ok(mut m) = self.running.write() {
            if gone {
                m.remove(&key(pod));
            } else {
                m.insert(key(pod), pod.clone());
            }
        }
    }

    fn dispatch(&mut self, uid: &str, desired: Desired, source: Source) {
        if let Some((tx, task)) = self.workers.get(uid) {
            if !task.is_finished() {
                tx.send_replace(desired);
                return;
            }
        }
        if let Desired::Run(_) = desired {
            let (tx, rx) = watch::channel(desired);
            let task = tokio::spawn(worker::run(self.shared.clone(), rx, source));
            self.workers.insert(uid.to_string(), (tx, task));
        }
    }

    pub fn apply(&mut self, pod: Pod) {
        if static_pods::is_mirror(&pod) {
            let hash = pod
                .metadata
                .annotations
                .as_ref()
                .and_then(|a| a.get(static_pods::CONFIG_MIRROR))
                .cloned()
                .unwrap_or_default();
            // The mirror carries the static pod's status as the API last saw it.
            if let Some(mut s) = self.statics.get(&hash).cloned() {
                s.status = pod.status.clone();
                self.dispatch(&hash, Desired::Run(Box::new(s)), Source::File);
            }
            self.mirrors.insert(key(&pod), pod);
            return;
        }
        let u = uid(&pod);
        self.show(&pod, false);
        self.api.insert(u.clone(), pod.clone());
        self.dispatch(&u, Desired::Run(Box::new(pod)), Source::Api);
    }

    pub fn delete(&mut self, pod: &Pod) {
        if static_pods::is_mirror(pod) {
            self.mirrors.remove(&key(pod));
            return;
        }
        let u = uid(pod);
        self.show(pod, true);
        self.api.remove(&u);
        self.dispatch(&u, Desired::Gone, Source::Api);
    }

    /// Reads the manifests again: new ones start, removed or edited ones stop; mirrors follow.
    pub async fn refresh_statics(&mut self, dir: &std::path::Path, node: &str) {
        let now: HashMap<String, Pod> = static_pods::load_all(dir, node)
            .into_iter()
            .map(|p| (uid(&p), p))
            .collect();
        let gone: Vec<String> = self
            .statics
            .keys()
            .filter(|u| !now.contains_key(*u))
            .cloned()
            .collect();
        for u in gone {
            if let Some(p) = self.statics.remove(&u) {
                self.show(&p, true);
            }
            self.dispatch(&u, Desired::Gone, Source::File);
        }
        for (u, pod) in now {
            let mirror = self.mirrors.get(&key(&pod)).cloned();
            if let Err(e) =
                static_pods::ensure_mirror(&self.shared.client, &pod, mirror.as_ref()).await
            {
                eprintln!("kubelet: {}", chain(&e));
            }
            if !self.statics.contains_key(&u) {
                eprintln!("kubelet: static pod {} from {}", key(&pod), dir.display());
                self.show(&pod, false);
                self.statics.insert(u.clone(), pod.clone());
                self.dispatch(&u, Desired::Run(Box::new(pod)), Source::File);
            }
        }
        let stale: Vec<Pod> = self
            .mirrors
            .values()
            .filter(|m| !self.statics.values().any(|s| key(s) == key(m)))
            .cloned()
            .collect();
        for m in stale {
            if let Err(e) = static_pods::delete_mirror(&self.shared.client, &m).await {
                eprintln!("kubelet: {}", chain(&e));
            }
        }
    }

    /// Stops sandboxes of pods nobody wants any more (deleted while the kubelet was down).
    pub async fn remove_orphans(&mut self) {
        let known: Vec<String> = self
            .api
            .keys()
            .chain(self.statics.keys())
            .chain(self.workers.keys())
            .cloned()
            .collect();
        let Some(mut cri) = self.shared.cri.clone() else {
            for uid in super::process::remove_orphans(&self.shared.root, &known) {
                eprintln!("kubelet: stopped the processes of unknown static pod {uid}");
            }
            return;
        };
        for (uid, sandbox) in sync::orphans(&mut cri, &known, &self.shared.node).await {
            eprintln!("kubelet: removing sandbox {sandbox} of unknown pod {uid}");
            let mut cri = cri.clone();
            tokio::spawn(async move { sync::remove_orphan(&mut cri, &sandbox).await });
        }
    }
}
