//! The simulated runtime: pods move through the states a real node would give them, but no
//! process runs, and the status says so (a `klab.dev/Simulated` condition and message). For
//! nodes without containerd and for scale tests; klab's own idea, no upstream counterpart
//! (kubemark's hollow kubelet is the closest).

use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::jiff::Timestamp;

use super::spec::{self, PodRef};
use super::status::{Observed, Run, Seen, View};

/// When a container "started", as the pod's status already says (so a restarted kubelet
/// adopts its simulated pods unchanged), else now.
fn started(pod: &Pod, name: &str, now: i64) -> i64 {
    pod.status
        .as_ref()
        .and_then(|s| s.container_statuses.as_ref())
        .and_then(|cs| cs.iter().find(|c| c.name == name))
        .and_then(|c| c.state.as_ref()?.running.as_ref()?.started_at.as_ref())
        .map(|t| t.0.as_nanosecond() as i64)
        .unwrap_or(now)
}

/// What a simulated node shows for `pod`: init containers completed, containers running,
/// no pod IP (nothing owns a network namespace) unless the pod uses the host's network.
pub fn observe(pod: &Pod, host_ip: &str) -> Observed {
    let now = Timestamp::now().as_nanosecond() as i64;
    let r = PodRef::of(pod);
    // Init containers "ran" when the pod started, so their times stay put across syncs.
    let t0 = pod
        .status
        .as_ref()
        .and_then(|s| s.start_time.as_ref())
        .map(|t| t.0.as_nanosecond() as i64)
        .unwrap_or(now);
    let spec = pod.spec.clone().unwrap_or_default();
    let seen = |name: &str, state: Run| Seen {
        id: format!("simulated://{}/{name}", r.uid),
        attempt: 0,
        hash: String::new(),
        image_ref: String::new(),
        state,
    };
    let init = spec
        .init_containers
        .iter()
        .flatten()
        .map(|c| View {
            name: c.name.clone(),
            image: c.image.clone().unwrap_or_default(),
            current: Some(seen(
                &c.name,
                Run::Exited {
                    code: 0,
                    reason: "Completed".into(),
                    message: super::status::SIMULATED_MESSAGE.into(),
                    started: t0,
                    finished: t0,
                },
            )),
            ..Default::default()
        })
        .collect();
    let containers = spec
        .containers
        .iter()
        .map(|c| View {
            name: c.name.clone(),
            image: c.image.clone().unwrap_or_default(),
            current: Some(seen(
                &c.name,
                Run::Running {
                    started: started(pod, &c.name, now),
                },
            )),
            ..Default::default()
        })
        .collect();
    Observed {
        init,
        containers,
        sandbox_ready: true,
        pod_ip: if spec::host_network(pod) {
            host_ip.into()
        } else {
            String::new()
        },
        host_ip: host_ip.into(),
        simulated: true,
    }
}
