//! Pod status from what the runtime shows: phase, conditions and container statuses, computed
//! by a pure function. Mirrors upstream's `kubelet_pods.go` (`getPhase`,
//! `convertToAPIContainerStatuses`) and `status/generate.go`; leaves out readiness probes
//! (ready = running), resize status and ephemeral containers.

use k8s_openapi::api::core::v1::{
    ContainerState, ContainerStateRunning, ContainerStateTerminated, ContainerStateWaiting,
    ContainerStatus, Pod, PodCondition, PodIP, PodStatus,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::jiff::Timestamp;

/// One container instance as the runtime reports it.
#[derive(Debug, Clone, PartialEq)]
pub struct Seen {
    pub id: String,
    pub attempt: u32,
    pub hash: String,
    pub image_ref: String,
    pub state: Run,
}

/// A container instance's state, times in nanoseconds since the epoch (CRI's unit).
#[derive(Debug, Clone, PartialEq)]
pub enum Run {
    Created,
    Running {
        started: i64,
    },
    Exited {
        code: i32,
        reason: String,
        message: String,
        started: i64,
        finished: i64,
    },
}

/// What the kubelet knows about one container of the spec: its newest instance, the one
/// before (for lastState), and why it is waiting, if it is.
#[derive(Debug, Clone, Default)]
pub struct View {
    pub name: String,
    pub image: String,
    pub current: Option<Seen>,
    pub previous: Option<Seen>,
    pub waiting: Option<(String, String)>,
    /// The readiness probe's verdict; `None` when the container has no readiness probe.
    pub probe_ready: Option<bool>,
    /// The startup probe's verdict; `None` when the container has no startup probe.
    pub probe_started: Option<bool>,
}

impl View {
    /// Running, not waiting to restart, started, and passing its readiness probe if it has one.
    pub fn ready(&self) -> bool {
        self.started() && self.probe_ready.unwrap_or(true)
    }

    /// Running, not waiting to restart, and past its startup probe if it has one (upstream's
    /// `containerStatuses[].started`).
    pub fn started(&self) -> bool {
        self.waiting.is_none() && self.running() && self.probe_started.unwrap_or(true)
    }

    pub fn running(&self) -> bool {
        matches!(
            self.current.as_ref().map(|s| &s.state),
            Some(Run::Running { .. })
        )
    }

    /// The exit code of the newest instance, if it has exited.
    pub fn exit_code(&self) -> Option<i32> {
        match self.current.as_ref().map(|s| &s.state) {
            Some(Run::Exited { code, .. }) => Some(*code),
            _ => None,
        }
    }
}

/// Everything [`build`] needs besides the pod.
#[derive(Debug, Clone, Default)]
pub struct Observed {
    pub init: Vec<View>,
    pub containers: Vec<View>,
    pub sandbox_ready: bool,
    pub pod_ip: String,
    pub host_ip: String,
    /// Set by the simulated runtime: said in the status so nobody takes the pod for real.
    pub simulated: bool,
}

/// The condition and message the simulated runtime puts on every pod it "runs".
pub const SIMULATED_CONDITION: &str = "klab.dev/Simulated";
pub const SIMULATED_MESSAGE: &str = "simulated: no containers run";

fn time(nanos: i64) -> Option<Time> {
    Timestamp::from_nanosecond(nanos as i128)
        .ok()
        .and_then(|t| Timestamp::from_second(t.as_second()).ok())
        .map(Time)
}

fn state_of(seen: &Seen) -> ContainerState {
    match &seen.state {
        Run::Created => ContainerState {
            waiting: Some(ContainerStateWaiting {
                reason: Some("ContainerCreating".into()),
                message: None,
            }),
            ..Default::default()
        },
        Run::Running { started } => ContainerState {
            running: Some(ContainerStateRunning {
                started_at: time(*started),
            }),
            ..Default::default()
        },
        Run::Exited {
            code,
            reason,
            message,
            started,
            finished,
        } => ContainerState {
            terminated: Some(ContainerStateTerminated {
                exit_code: *code,
                reason: Some(if reason.is_empty() {
                    if *code == 0 { "Completed" } else { "Error" }.into()
                } else {
                    reason.clone()
                }),
                message: (!message.is_empty()).then(|| message.clone()),
                started_at: time(*started),
                finished_at: time(*finished),
                container_id: Some(seen.id.clone()),
                ..Default::default()
            }),
            ..Default::default()
        },
    }
}

fn container_status(v: &View) -> ContainerStatus {
    let waiting = |reason: &str, message: &str| ContainerState {
        waiting: Some(ContainerStateWaiting {
            reason: Some(reason.into()),
            message: (!message.is_empty()).then(|| message.into()),
        }),
        ..Default::default()
    };
    let (state, last) = match (&v.waiting, &v.current) {
        // Waiting to restart: the exited instance is the last state.
        (Some((r, m)), Some(cur)) if matches!(cur.state, Run::Exited { .. }) => {
            (waiting(r, m), Some(state_of(cur)))
        }
        (Some((r, m)), _) => (waiting(r, m), v.previous.as_ref().map(state_of)),
        (None, Some(cur)) => (state_of(cur), v.previous.as_ref().map(state_of)),
        (None, None) => (waiting("ContainerCreating", ""), None),
    };
    let started = v.started();
    let ready = v.ready();
    ContainerStatus {
        name: v.name.clone(),
        image: v.image.clone(),
        image_id: v
            .current
            .as_ref()
            .map(|s| s.image_ref.clone())
            .unwrap_or_default(),
        container_id: v.current.as_ref().map(|s| s.id.clone()),
        restart_count: v.current.as_ref().map(|s| s.attempt as i32).unwrap_or(0),
        ready,
        started: Some(started),
        state: Some(state),
        last_state: Some(last.unwrap_or_default()),
        ..Default::default()
    }
}

fn restart_policy(pod: &Pod) -> &str {
    pod.spec
        .as_ref()
        .and_then(|s| s.restart_policy.as_deref())
        .unwrap_or("Always")
}

/// Whether every init container has completed successfully.
pub fn initialized(obs: &Observed) -> bool {
    obs.init.iter().all(|v| v.exit_code() == Some(0))
}

/// upstream's `getPhase`, for the cases klab's kubelet produces.
pub fn phase(pod: &Pod, obs: &Observed) -> &'static str {
    let policy = restart_policy(pod);
    if !initialized(obs) {
        let failed = obs
            .init
            .iter()
            .any(|v| v.exit_code().is_some_and(|c| c != 0));
        return if failed && policy == "Never" {
            "Failed"
        } else {
            "Pending"
        };
    }
    let (mut running, mut waiting, mut failed) = (0, 0, 0);
    for v in &obs.containers {
        match v.exit_code() {
            _ if v.running() => running += 1,
            Some(0) => {}
            Some(_) => failed += 1,
            None => waiting += 1,
        }
    }
    if waiting > 0 {
        return "Pending";
    }
    if running > 0 {
        return "Running";
    }
    match policy {
        "Always" => "Running",
        "OnFailure" if failed > 0 => "Running",
        _ if failed > 0 => "Failed",
        _ => "Succeeded",
    }
}

fn condition(old: &Option<PodStatus>, kind: &str, ok: bool, now: &Time) -> PodCondition {
    let status = if ok { "True" } else { "False" };
    let prev = old
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .and_then(|cs| cs.iter().find(|c| c.type_ == kind));
    let since = match prev {
        Some(c) if c.status == status => c.last_transition_time.clone(),
        _ => Some(now.clone()),
    };
    PodCondition {
        type_: kind.into(),
        status: status.into(),
        last_transition_time: since,
        ..Default::default()
    }
}

/// The pod's whole status. `now` is only used for times that start now (startTime, a
/// condition that changed), so an unchanged pod yields an unchanged status.
pub fn build(pod: &Pod, obs: &Observed, now: Timestamp) -> PodStatus {
    let now = Time(Timestamp::from_second(now.as_second()).unwrap_or(now));
    let old = pod.status.clone();
    let ready = !obs.containers.is_empty() && obs.containers.iter().all(View::ready);
    let phase = phase(pod, obs);
    let mut conditions = vec![
        condition(&old, "PodReadyToStartContainers", obs.sandbox_ready, &now),
        condition(&old, "Initialized", initialized(obs), &now),
        condition(&old, "Ready", ready, &now),
        condition(&old, "ContainersReady", ready, &now),
        condition(&old, "PodScheduled", true, &now),
    ];
    let mut message = None;
    if obs.simulated {
        let mut c = condition(&old, SIMULATED_CONDITION, true, &now);
        c.reason = Some("SimulatedRuntime".into());
        c.message = Some(SIMULATED_MESSAGE.into());
        conditions.push(c);
        message = Some(SIMULATED_MESSAGE.to_string());
    }
    let ips = |ip: &str| (!ip.is_empty()).then(|| vec![PodIP { ip: ip.into() }]);
    PodStatus {
        phase: Some(phase.into()),
        conditions: Some(conditions),
        message,
        host_ip: (!obs.host_ip.is_empty()).then(|| obs.host_ip.clone()),
        host_ips: ips(&obs.host_ip).map(|v| {
            v.into_iter()
                .map(|p| k8s_openapi::api::core::v1::HostIP { ip: p.ip })
                .collect()
        }),
        pod_ip: (!obs.pod_ip.is_empty()).then(|| obs.pod_ip.clone()),
        pod_ips: ips(&obs.pod_ip),
        start_time: old
            .as_ref()
            .and_then(|s| s.start_time.clone())
            .or(Some(now)),
        qos_class: old.as_ref().and_then(|s| s.qos_class.clone()),
        init_container_statuses: (!obs.init.is_empty())
            .then(|| obs.init.iter().map(container_status).collect()),
        container_statuses: Some(obs.containers.iter().map(container_status).collect()),
        ..Default::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pod(policy: &str) -> Pod {
        serde_json::from_value(serde_json::json!({
            "metadata": {"name": "p"},
            "spec": {"restartPolicy": policy, "containers": [{"name": "c"}]}
        }))
        .unwrap()
    }

    fn view(state: Option<Run>, waiting: Option<&str>) -> View {
        View {
            name: "c".into(),
            image: "busybox".into(),
            current: state.map(|state| Seen {
                id: "containerd://1".into(),
                attempt: 2,
                hash: "h".into(),
                image_ref: "sha256:x".into(),
                state,
            }),
            previous: None,
            waiting: waiting.map(|r| (r.into(), String::new())),
            probe_ready: None,
            probe_started: None,
        }
    }

    fn exited(code: i32) -> Option<Run> {
        Some(Run::Exited {
            code,
            reason: String::new(),
            message: String::new(),
            started: 0,
            finished: 0,
        })
    }

    fn obs(v: View) -> Observed {
        Observed {
            containers: vec![v],
            sandbox_ready: true,
            ..Default::default()
        }
    }

    #[test]
    fn phases_follow_the_restart_policy() {
        let running = obs(view(Some(Run::Running { started: 0 }), None));
        assert_eq!(phase(&pod("Never"), &running), "Running");
        assert_eq!(phase(&pod("Never"), &obs(view(exited(1), None))), "Failed");
        assert_eq!(
            phase(&pod("Never"), &obs(view(exited(0), None))),
            "Succeeded"
        );
        assert_eq!(
            phase(&pod("OnFailure"), &obs(view(exited(1), None))),
            "Running"
        );
        assert_eq!(
            phase(&pod("Always"), &obs(view(exited(0), None))),
            "Running"
        );
        assert_eq!(phase(&pod("Always"), &obs(view(None, None))), "Pending");
    }

    #[test]
    fn crash_loop_shows_waiting_with_the_exit_as_last_state() {
        let s = build(
            &pod("Always"),
            &obs(view(exited(1), Some("CrashLoopBackOff"))),
            Timestamp::UNIX_EPOCH,
        );
        let c = &s.container_statuses.unwrap()[0];
        assert_eq!(c.restart_count, 2);
        let st = c.state.as_ref().unwrap();
        assert_eq!(
            st.waiting.as_ref().unwrap().reason.as_deref(),
            Some("CrashLoopBackOff")
        );
        let last = c.last_state.as_ref().unwrap().terminated.as_ref().unwrap();
        assert_eq!((last.exit_code, last.reason.as_deref()), (1, Some("Error")));
        assert!(!c.ready);
    }

    #[test]
    fn a_container_before_its_startup_probe_passes_is_neither_started_nor_ready() {
        let mut v = view(Some(Run::Running { started: 0 }), None);
        v.probe_started = Some(false);
        v.probe_ready = Some(true);
        let s = build(&pod("Always"), &obs(v.clone()), Timestamp::UNIX_EPOCH);
        let c = &s.container_statuses.unwrap()[0];
        assert_eq!((c.started, c.ready), (Some(false), false));
        v.probe_started = Some(true);
        let s = build(&pod("Always"), &obs(v), Timestamp::UNIX_EPOCH);
        let c = &s.container_statuses.unwrap()[0];
        assert_eq!((c.started, c.ready), (Some(true), true));
    }
}
