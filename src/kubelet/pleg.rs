//! The pod lifecycle event generator: one relist of the runtime per second for the whole
//! node, and a wake-up for each pod whose sandboxes or containers changed state since the
//! last relist. Mirrors upstream's `GenericPLEG` (`pkg/kubelet/pleg/generic.go`): pod workers
//! sleep until something happens to their pod instead of each asking the runtime every
//! second, which would cost containerd O(pods) list calls per second on an idle node.

use std::collections::{BTreeMap, HashSet};
use std::time::Duration;

use k8s_cri::v1 as cri;
use tokio::sync::broadcast;

use super::spec;
use crate::runtime::cri::Cri;

/// How often the runtime is relisted (upstream's `relistPeriod`).
pub const RELIST_PERIOD: Duration = Duration::from_secs(1);

/// Every sandbox and container of each pod, by pod uid: (id, state), sorted.
pub type Snapshot = BTreeMap<String, Vec<(String, i32)>>;

/// Groups what the runtime listed by pod. Only `node`'s sandboxes count (kubelets of one
/// host share a containerd) and the containers in them.
pub fn snapshot(
    node: &str,
    sandboxes: &[cri::PodSandbox],
    containers: &[cri::Container],
) -> Snapshot {
    let mut out = Snapshot::new();
    let mut mine = HashSet::new();
    for s in sandboxes {
        let on_node = s.labels.get(spec::NODE).is_none_or(|n| n == node);
        let Some(uid) = s.labels.get(spec::POD_UID).filter(|_| on_node) else {
            continue;
        };
        mine.insert(s.id.as_str());
        out.entry(uid.clone())
            .or_default()
            .push((s.id.clone(), s.state));
    }
    for c in containers {
        let Some(uid) = c.labels.get(spec::POD_UID) else {
            continue;
        };
        if mine.contains(c.pod_sandbox_id.as_str()) {
            out.entry(uid.clone())
                .or_default()
                .push((c.id.clone(), c.state));
        }
    }
    for v in out.values_mut() {
        v.sort();
    }
    out
}

/// The pods whose sandboxes or containers appeared, changed state or went away.
pub fn changed(before: &Snapshot, now: &Snapshot) -> Vec<String> {
    let gone = before.keys().filter(|k| !now.contains_key(*k));
    let new_or_changed = now
        .iter()
        .filter(|(k, v)| before.get(*k) != Some(*v))
        .map(|(k, _)| k);
    let mut out: Vec<String> = gone.chain(new_or_changed).cloned().collect();
    out.sort();
    out
}

/// Relists every [`RELIST_PERIOD`] and sends the uid of each pod that changed. A failed
/// relist is skipped (the next one compares against the last good one), as upstream.
pub async fn run(mut cri: Cri, node: String, events: broadcast::Sender<String>) {
    let mut last = Snapshot::new();
    let mut tick = tokio::time::interval(RELIST_PERIOD);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        let sandboxes = match cri.list_pod_sandboxes().await {
            Ok(s) => s,
            Err(_) => continue,
        };
        let containers = match cri.list_containers().await {
            Ok(c) => c,
            Err(_) => continue,
        };
        let now = snapshot(&node, &sandboxes, &containers);
        for uid in changed(&last, &now) {
            // Nobody listening (no pod workers yet) is not an error.
            let _ = events.send(uid);
        }
        last = now;
    }
}

/// Waits until the relister reports pod `uid` (or reports so much that this receiver fell
/// behind, which may include it). Never returns when there is no relister.
pub async fn wait_for(events: &mut Option<broadcast::Receiver<String>>, uid: &str) {
    let Some(rx) = events else {
        return std::future::pending().await;
    };
    loop {
        match rx.recv().await {
            Ok(u) if u == uid => return,
            Ok(_) => {}
            Err(broadcast::error::RecvError::Lagged(_)) => return,
            Err(broadcast::error::RecvError::Closed) => return std::future::pending().await,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sandbox(id: &str, uid: &str, node: &str, state: i32) -> cri::PodSandbox {
        cri::PodSandbox {
            id: id.into(),
            state,
            labels: [
                (spec::POD_UID.to_owned(), uid.to_owned()),
                (spec::NODE.to_owned(), node.to_owned()),
            ]
            .into(),
            ..Default::default()
        }
    }

    fn container(id: &str, uid: &str, sandbox: &str, state: i32) -> cri::Container {
        cri::Container {
            id: id.into(),
            pod_sandbox_id: sandbox.into(),
            state,
            labels: [(spec::POD_UID.to_owned(), uid.to_owned())].into(),
            ..Default::default()
        }
    }

    #[test]
    fn only_pods_whose_runtime_state_changed_are_woken() {
        let running = cri::ContainerState::ContainerRunning as i32;
        let exited = cri::ContainerState::ContainerExited as i32;
        let ready = cri::PodSandboxState::SandboxReady as i32;
        let sandboxes = [
            sandbox("s1", "a", "n1", ready),
            sandbox("s2", "b", "n1", ready),
            sandbox("s3", "c", "n2", ready),
        ];
        let before = snapshot(
            "n1",
            &sandboxes,
            &[
                container("c1", "a", "s1", running),
                container("c2", "b", "s2", running),
                container("c3", "c", "s3", running),
            ],
        );
        // Another node's pod is not this kubelet's.
        assert_eq!(before.keys().collect::<Vec<_>>(), ["a", "b"]);
        assert!(changed(&before, &before).is_empty());
        // b's container exited and a new one started for a: both woken, nothing else.
        let after = snapshot(
            "n1",
            &sandboxes,
            &[
                container("c1", "a", "s1", running),
                container("c4", "a", "s1", running),
                container("c2", "b", "s2", exited),
                container("c3", "c", "s3", exited),
            ],
        );
        assert_eq!(changed(&before, &after), ["a", "b"]);
        // A pod whose sandbox went away is woken too.
        let gone = snapshot(
            "n1",
            &sandboxes[..1],
            &[container("c1", "a", "s1", running)],
        );
        assert_eq!(changed(&before, &gone), ["b"]);
    }
}
