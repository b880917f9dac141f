//! kube-controller-manager (and the scheduler beside it) as processes against a real API server
//! with simulated nodes and the simulated kubelet of `sim`: Deployments scheduled and spread,
//! scale, cascading deletion, a restart mid-rollout, leader election, node lifecycle, and real
//! kubectl driving a deployment.

use std::collections::BTreeMap;

use k8s_openapi::api::apps::v1::{Deployment, ReplicaSet};
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::{Node, Pod, ServiceAccount};
use kube::api::{Api, DeleteParams, Patch, PatchParams, PostParams};
use serde_json::json;

use crate::apiserver::harness::{ok, require};
use crate::sim::{Plane, eventually, live, node_of};

fn deployment(name: &str, replicas: i32, image: &str) -> serde_json::Value {
    json!({
        "apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": {"name": name},
        "spec": {
            "replicas": replicas,
            "selector": {"matchLabels": {"app": name}},
            "strategy": {"type": "RollingUpdate", "rollingUpdate": {"maxSurge": 1, "maxUnavailable": 1}},
            "template": {"metadata": {"labels": {"app": name}},
                "spec": {"containers": [{"name": "c", "image": image,
                    "resources": {"requests": {"cpu": "100m", "memory": "64Mi"}}}]}},
        },
    })
}

fn deploy(p: &Plane, name: &str) -> Option<Deployment> {
    let api: Api<Deployment> = Api::namespaced(p.client.clone(), "default");
    p.rt.block_on(api.get_opt(name)).ok().flatten()
}

fn replicasets(p: &Plane) -> Vec<ReplicaSet> {
    let api: Api<ReplicaSet> = Api::namespaced(p.client.clone(), "default");
    p.rt.block_on(api.list(&Default::default()))
        .map(|l| l.items)
        .unwrap_or_default()
}

/// The deployment reports `n` available replicas, all updated, and exactly `n` live pods
/// run with `image`.
fn settled(p: &Plane, name: &str, n: i32, image: &str) -> bool {
    let Some(d) = deploy(p, name) else {
        return false;
    };
    let s = d.status.unwrap_or_default();
    let pods = p.pods("default");
    let live = live(&pods);
    s.observed_generation == d.metadata.generation
        && s.available_replicas == Some(n)
        && s.updated_replicas == Some(n)
        && s.replicas == Some(n)
        && live.len() == n as usize
        && live.iter().all(|p| {
            node_of(p).is_some()
                && p.spec
                    .as_ref()
                    .map(|s| s.containers[0].image.as_deref() == Some(image))
                    == Some(true)
        })
}

fn cm_args() -> Vec<&'static str> {
    vec!["--leader-elect=false", "--node-monitor-grace-period=1h"]
}

#[test]
fn a_deployment_of_ten_is_scheduled_spread_scaled_and_deleted() {
    let Some(p) = Plane::start() else { return };
    p.nodes(&["node-1", "node-2", "node-3"], "4", "8Gi", json!([]));
    p.kubelet();
    let _s = p.component("scheduler", "a", &["--leader-elect=false"]);
    let _cm = p.component("controller-manager", "a", &cm_args());
    p.apply_json(
        "/apis/apps/v1/namespaces/default/deployments",
        deployment("web", 10, "nginx:1"),
    );
    assert!(
        eventually(60, || settled(&p, "web", 10, "nginx:1")),
        "deployment did not settle: {:?}\n{}",
        deploy(&p, "web").and_then(|d| d.status),
        p.log("controller-manager", "a")
    );
    let mut per_node: BTreeMap<String, usize> = BTreeMap::new();
    for pod in p.pods("default") {
        *per_node.entry(node_of(&pod).unwrap()).or_default() += 1;
        let owner = &pod.metadata.owner_references.as_ref().unwrap()[0];
        assert_eq!(
            (owner.kind.as_str(), owner.controller),
            ("ReplicaSet", Some(true))
        );
    }
    let (min, max) = (
        per_node.values().min().unwrap(),
        per_node.values().max().unwrap(),
    );
    assert!(
        per_node.len() == 3 && max - min <= 2,
        "not spread: {per_node:?}"
    );
    // The serviceaccount controller made `default` in a namespace it found.
    let sa: Api<ServiceAccount> = Api::namespaced(p.client.clone(), "kube-public");
    assert!(eventually(20, || p
        .rt
        .block_on(sa.get_opt("default"))
        .ok()
        .flatten()
        .is_some()));

    let api: Api<Deployment> = Api::namespaced(p.client.clone(), "default");
    p.rt.block_on(api.patch_scale(
        "web",
        &PatchParams::default(),
        &Patch::Merge(json!({"spec": {"replicas": 4}})),
    ))
    .unwrap();
    assert!(
        eventually(60, || settled(&p, "web", 4, "nginx:1")),
        "scale down to 4 did not settle"
    );

    p.rt.block_on(api.delete("web", &DeleteParams::background()))
        .unwrap();
    assert!(
        eventually(60, || replicasets(&p).is_empty()
            && p.pods("default").is_empty()),
        "replica sets {} and pods {} left after deleting the deployment",
        replicasets(&p).len(),
        p.pods("default").len()
    );
}

/// A rollout that cannot move (its pods fit on no node) is marked ProgressDeadlineExceeded
/// once progressDeadlineSeconds pass, and `kubectl rollout status` then fails with upstream's
/// words.
#[test]
fn a_stuck_rollout_exceeds_its_progress_deadline() {
    let Some(p) = Plane::start() else { return };
    p.nodes(&["node-1"], "1", "2Gi", json!([]));
    p.kubelet();
    let _s = p.component("scheduler", "a", &["--leader-elect=false"]);
    let _cm = p.component("controller-manager", "a", &cm_args());
    let mut d = deployment("stuck", 2, "nginx:1");
    d["spec"]["progressDeadlineSeconds"] = json!(2);
    d["spec"]["template"]["spec"]["containers"][0]["resources"]["requests"]["cpu"] = json!("64");
    p.apply_json("/apis/apps/v1/namespaces/default/deployments", d);
    let progressing = |p: &Plane| {
        deploy(p, "stuck")
            .and_then(|d| d.status)
            .and_then(|s| s.conditions)
            .unwrap_or_default()
            .into_iter()
            .find(|c| c.type_ == "Progressing")
    };
    assert!(
        eventually(60, || progressing(&p).is_some_and(
            |c| c.status == "False" && c.reason.as_deref() == Some("ProgressDeadlineExceeded")
        )),
        "{:?}\n{}",
        progressing(&p),
        p.log("controller-manager", "a")
    );
    let c = progressing(&p).unwrap();
    let message = c.message.unwrap_or_default();
    assert!(
        message.starts_with("ReplicaSet \"stuck-")
            && message.ends_with("\" has timed out progressing."),
        "{message}"
    );
    if let Some(kubectl) = require("kubectl") {
        let out = p.cluster.kubectl_with(
            &kubectl,
            &["rollout", "status", "deployment/stuck", "--timeout=30s"],
        );
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success());
        assert!(
            err.contains("deployment \"stuck\" exceeded its progress deadline"),
            "{err}"
        );
    }
}

/// With minReadySeconds, a Ready pod counts as available only once it has been Ready that
/// long: whenever the ReplicaSet reports `n` available, at least `n` of its pods have been
/// Ready for minReadySeconds by the time the status is read.
#[test]
fn min_ready_seconds_hold_pods_back_from_available() {
    let Some(p) = Plane::start() else { return };
    p.nodes(&["node-1"], "4", "8Gi", json!([]));
    p.kubelet();
    let _s = p.component("scheduler", "a", &["--leader-elect=false"]);
    let _cm = p.component("controller-manager", "a", &cm_args());
    let mut d = deployment("slow", 2, "nginx:1");
    d["spec"]["minReadySeconds"] = json!(2);
    p.apply_json("/apis/apps/v1/namespaces/default/deployments", d);
    let ready_long_enough = |p: &Plane| {
        let now = k8s_openapi::jiff::Timestamp::now().as_second();
        p.pods("default")
            .iter()
            .filter(|pod| {
                pod.status
                    .as_ref()
                    .and_then(|s| s.conditions.as_ref())
                    .and_then(|cs| cs.iter().find(|c| c.type_ == "Ready" && c.status == "True"))
                    .and_then(|c| c.last_transition_time.as_ref())
                    .is_some_and(|t| t.0.as_second() + 2 <= now)
            })
            .count() as i32
    };
    assert!(
        eventually(60, || {
            let rs = replicasets(&p);
            let Some(s) = rs.first().and_then(|r| r.status.clone()) else {
                return false;
            };
            let available = s.available_replicas.unwrap_or(0);
            assert!(
                available <= ready_long_enough(&p),
                "{available} available before minReadySeconds: {s:?}"
            );
            available == 2
        }),
        "{:?}\n{}",
        replicasets(&p).first().and_then(|r| r.status.clone()),
        p.log("controller-manager", "a")
    );
    assert!(
        eventually(30, || settled(&p, "slow", 2, "nginx:1")),
        "{:?}",
        deploy(&p, "slow").and_then(|d| d.status)
    );
}

#[test]
fn orphan_deletion_keeps_the_replica_sets_and_pods() {
    let Some(p) = Plane::start() else { return };
    p.nodes(&["node-1"], "4", "8Gi", json!([]));
    p.kubelet();
    let _s = p.component("scheduler", "a", &["--leader-elect=false"]);
    let _cm = p.component("controller-manager", "a", &cm_args());
    p.apply_json(
        "/apis/apps/v1/namespaces/default/deployments",
        deployment("keep", 2, "nginx:1"),
    );
    assert!(eventually(60, || settled(&p, "keep", 2, "nginx:1")));
    let api: Api<Deployment> = Api::namespaced(p.client.clone(), "default");
    p.rt.block_on(api.delete("keep", &DeleteParams::orphan()))
        .unwrap();
    assert!(
        eventually(30, || deploy(&p, "keep").is_none()),
        "the orphan finalizer was not removed"
    );
    let rs = replicasets(&p);
    assert_eq!(rs.len(), 1);
    assert!(
        rs[0]
            .metadata
            .owner_references
            .as_ref()
            .is_none_or(|r| r.is_empty())
    );
    assert_eq!(live(&p.pods("default")).len(), 2);
}

#[test]
fn controller_manager_and_scheduler_killed_mid_rollout_converge_with_no_extra_pods() {
    let Some(p) = Plane::start() else { return };
    p.nodes(&["node-1", "node-2"], "4", "8Gi", json!([]));
    p.kubelet();
    let sched = p.component("scheduler", "a", &["--leader-elect=false"]);
    let cm = p.component("controller-manager", "a", &cm_args());
    p.apply_json(
        "/apis/apps/v1/namespaces/default/deployments",
        deployment("roll", 6, "nginx:1"),
    );
    assert!(eventually(60, || settled(&p, "roll", 6, "nginx:1")));
    let api: Api<Deployment> = Api::namespaced(p.client.clone(), "default");
    let patch = json!({"spec": {"template": {"spec": {"containers": [{"name": "c", "image": "nginx:2",
        "resources": {"requests": {"cpu": "100m", "memory": "64Mi"}}}]}}}});
    p.rt.block_on(api.patch("roll", &PatchParams::default(), &Patch::Merge(&patch)))
        .unwrap();
    // Kill it as soon as the new ReplicaSet exists, in the middle of the rollout.
    assert!(eventually(30, || replicasets(&p).len() == 2));
    drop(cm);
    drop(sched);
    let _s = p.component("scheduler", "b", &["--leader-elect=false"]);
    let _cm = p.component("controller-manager", "b", &cm_args());
    assert!(
        eventually(90, || settled(&p, "roll", 6, "nginx:2")),
        "{:?}\n{}",
        deploy(&p, "roll").and_then(|d| d.status),
        p.log("controller-manager", "b")
    );
    let rs = replicasets(&p);
    assert_eq!(rs.len(), 2, "one ReplicaSet per template");
    let replicas: Vec<i32> = rs
        .iter()
        .map(|r| r.spec.as_ref().unwrap().replicas.unwrap())
        .collect();
    assert!(
        replicas.contains(&0) && replicas.contains(&6),
        "{replicas:?}"
    );
    let d = deploy(&p, "roll").unwrap();
    assert_eq!(
        d.metadata.annotations.unwrap()["deployment.kubernetes.io/revision"],
        "2"
    );
}

#[test]
fn a_rolling_update_keeps_availability_within_max_unavailable() {
    let Some(p) = Plane::start() else { return };
    p.nodes(&["node-1", "node-2"], "4", "8Gi", json!([]));
    p.kubelet();
    let _s = p.component("scheduler", "a", &["--leader-elect=false"]);
    let _cm = p.component("controller-manager", "a", &cm_args());
    p.apply_json(
        "/apis/apps/v1/namespaces/default/deployments",
        deployment("av", 6, "nginx:1"),
    );
    assert!(eventually(60, || settled(&p, "av", 6, "nginx:1")));
    let api: Api<Deployment> = Api::namespaced(p.client.clone(), "default");
    let patch = json!({"spec": {"template": {"spec": {"containers": [{"name": "c", "image": "nginx:2",
        "resources": {"requests": {"cpu": "100m", "memory": "64Mi"}}}]}}}});
    p.rt.block_on(api.patch("av", &PatchParams::default(), &Patch::Merge(&patch)))
        .unwrap();
    // maxUnavailable is 1 and maxSurge 1: every observed state has at least 5 ready pods, and
    // the ReplicaSets ask for at most 7 (the surge bounds what is asked for; a pod being
    // scaled away may live a moment longer, upstream as here).
    let mut observed = 0;
    let done = eventually(90, || {
        let pods = p.pods("default");
        let live = live(&pods);
        let ready = live
            .iter()
            .filter(|p| {
                p.status
                    .as_ref()
                    .and_then(|s| s.conditions.as_ref())
                    .is_some_and(|c| c.iter().any(|c| c.type_ == "Ready" && c.status == "True"))
            })
            .count();
        assert!(ready >= 5, "only {ready} ready pods during the rollout");
        let asked: i32 = replicasets(&p)
            .iter()
            .map(|r| r.spec.as_ref().and_then(|s| s.replicas).unwrap_or(0))
            .sum();
        assert!(
            asked <= 7,
            "the ReplicaSets ask for {asked} pods during the rollout"
        );
        observed += 1;
        settled(&p, "av", 6, "nginx:2")
    });
    assert!(done && observed > 1, "the rollout did not finish");
}

fn holder(p: &Plane) -> Option<String> {
    let api: Api<Lease> = Api::namespaced(p.client.clone(), "kube-system");
    p.rt.block_on(api.get_opt("kube-controller-manager"))
        .ok()
        .flatten()
        .and_then(|l| l.spec?.holder_identity)
}

#[test]
fn leader_election_fails_over_to_the_second_copy() {
    let Some(p) = Plane::start() else { return };
    p.nodes(&["node-1"], "4", "8Gi", json!([]));
    p.kubelet();
    let _s = p.component("scheduler", "a", &["--leader-elect=false"]);
    let le = [
        "--leader-elect=true",
        "--leader-elect-lease-duration=4s",
        "--leader-elect-renew-deadline=3s",
        "--leader-elect-retry-period=500ms",
        "--node-monitor-grace-period=1h",
    ];
    let first = p.component("controller-manager", "a", &le);
    assert!(eventually(20, || holder(&p).is_some()));
    let _second = p.component("controller-manager", "b", &le);
    let leader = holder(&p).unwrap();
    p.apply_json(
        "/apis/apps/v1/namespaces/default/deployments",
        deployment("ha", 2, "nginx:1"),
    );
    assert!(eventually(60, || settled(&p, "ha", 2, "nginx:1")));
    assert!(
        p.log("controller-manager", "b")
            .contains("attempting to acquire leader lease")
    );
    assert!(
        !p.log("controller-manager", "b")
            .contains("successfully acquired"),
        "two leaders"
    );
    drop(first);
    assert!(
        eventually(30, || holder(&p).is_some_and(|h| h != leader)),
        "the second copy did not take over:\n{}",
        p.log("controller-manager", "b")
    );
    let api: Api<Deployment> = Api::namespaced(p.client.clone(), "default");
    p.rt.block_on(api.patch_scale(
        "ha",
        &PatchParams::default(),
        &Patch::Merge(json!({"spec": {"replicas": 3}})),
    ))
    .unwrap();
    assert!(
        eventually(60, || settled(&p, "ha", 3, "nginx:1")),
        "the new leader did not act"
    );
}

#[test]
fn nodes_get_pod_cidrs_and_a_silent_node_is_tainted_and_emptied() {
    // DefaultTolerationSeconds admission with 2 s instead of 300 s for an unreachable node.
    let Some(p) = Plane::start_with(&["--default-unreachable-toleration-seconds=2"]) else {
        return;
    };
    p.nodes(&["node-1", "node-2"], "4", "8Gi", json!([]));
    // Two pods already on node-1: one with only the tolerations admission adds, one that
    // tolerates an unreachable node forever.
    let pods: Api<Pod> = Api::namespaced(p.client.clone(), "default");
    let bound = |name: &str, tolerations: serde_json::Value| -> Pod {
        let pod = serde_json::from_value(json!({
            "metadata": {"name": name},
            "spec": {"nodeName": "node-1", "tolerations": tolerations,
                     "containers": [{"name": "c", "image": "nginx:1"}]},
        }))
        .unwrap();
        p.rt.block_on(pods.create(&PostParams::default(), &pod))
            .unwrap()
    };
    let short = bound("short", json!([]));
    let admitted: Vec<_> = short
        .spec
        .unwrap()
        .tolerations
        .unwrap_or_default()
        .into_iter()
        .map(|t| (t.key.unwrap_or_default(), t.effect, t.toleration_seconds))
        .collect();
    assert_eq!(
        admitted,
        [
            (
                "node.kubernetes.io/not-ready".to_owned(),
                Some("NoExecute".to_owned()),
                Some(300)
            ),
            (
                "node.kubernetes.io/unreachable".to_owned(),
                Some("NoExecute".to_owned()),
                Some(2)
            ),
        ]
    );
    bound(
        "stays",
        json!([{"key": "node.kubernetes.io/unreachable", "operator": "Exists", "effect": "NoExecute"}]),
    );
    p.kubelet();
    let _s = p.component("scheduler", "a", &["--leader-elect=false"]);
    let _cm = p.component(
        "controller-manager",
        "a",
        &[
            "--leader-elect=false",
            "--allocate-node-cidrs=true",
            "--cluster-cidr=10.244.0.0/16",
            "--node-monitor-grace-period=3s",
            "--node-monitor-period=1s",
        ],
    );
    let nodes: Api<Node> = Api::all(p.client.clone());
    let cidrs = || -> Vec<Option<String>> {
        p.rt.block_on(nodes.list(&Default::default()))
            .map(|l| {
                l.items
                    .into_iter()
                    .map(|n| n.spec.and_then(|s| s.pod_cidr))
                    .collect()
            })
            .unwrap_or_default()
    };
    assert!(eventually(20, || cidrs().iter().all(Option::is_some)));
    let mut got: Vec<String> = cidrs().into_iter().flatten().collect();
    got.sort();
    assert_eq!(got, ["10.244.0.0/24", "10.244.1.0/24"]);
    // Nobody heartbeats for these nodes: after the grace period they are Unknown and tainted,
    // and their pods (which tolerate nothing) are evicted.
    p.apply_json(
        "/apis/apps/v1/namespaces/default/deployments",
        deployment("evict", 2, "nginx:1"),
    );
    let node = |name: &str| p.rt.block_on(nodes.get(name)).unwrap();
    assert!(eventually(30, || {
        let n = node("node-1");
        let ready = n.status.and_then(|s| s.conditions).unwrap_or_default();
        let taints = n.spec.and_then(|s| s.taints).unwrap_or_default();
        ready
            .iter()
            .any(|c| c.type_ == "Ready" && c.status == "Unknown")
            && taints
                .iter()
                .any(|t| t.key == "node.kubernetes.io/unreachable" && t.effect == "NoExecute")
    }));
    // The pod tolerating the taint for 2 s is evicted; the one tolerating it forever stays.
    let names = || -> Vec<String> {
        p.rt.block_on(pods.list(&Default::default()))
            .map(|l| {
                l.items
                    .into_iter()
                    .filter_map(|x| x.metadata.name)
                    .collect()
            })
            .unwrap_or_default()
    };
    assert!(
        eventually(30, || !names().contains(&"short".to_owned())),
        "the pod was not evicted after its 2 s:\n{}",
        p.log("controller-manager", "a")
    );
    assert!(names().contains(&"stays".to_owned()));
    let events: Api<k8s_openapi::api::core::v1::Event> =
        Api::namespaced(p.client.clone(), "default");
    assert!(
        eventually(30, || p
            .rt
            .block_on(events.list(&Default::default()))
            .map(|l| l
                .items
                .iter()
                .any(|e| e.reason.as_deref() == Some("FailedScheduling")))
            .unwrap_or(false)),
        "replacement pods should find no node"
    );
}

#[test]
fn kubectl_drives_a_deployment_through_scale_rollout_and_undo() {
    let Some(kubectl) = require("kubectl") else {
        return;
    };
    let Some(p) = Plane::start() else { return };
    p.nodes(&["node-1", "node-2"], "4", "8Gi", json!([]));
    p.kubelet();
    let _s = p.component("scheduler", "a", &["--leader-elect=false"]);
    let _cm = p.component("controller-manager", "a", &cm_args());
    let k = |args: &[&str]| p.cluster.kubectl_with(&kubectl, args);
    ok(k(&[
        "create",
        "deployment",
        "web",
        "--image=nginx:1.25",
        "--replicas=4",
    ]));
    ok(k(&["rollout", "status", "deployment/web", "--timeout=90s"]));
    ok(k(&["scale", "deployment", "web", "--replicas=2"]));
    assert!(eventually(60, || settled(&p, "web", 2, "nginx:1.25")));
    ok(k(&["set", "image", "deployment/web", "nginx=nginx:1.26"]));
    ok(k(&["rollout", "status", "deployment/web", "--timeout=90s"]));
    assert!(eventually(60, || settled(&p, "web", 2, "nginx:1.26")));
    ok(k(&["rollout", "undo", "deployment/web"]));
    ok(k(&["rollout", "status", "deployment/web", "--timeout=90s"]));
    assert!(
        eventually(60, || settled(&p, "web", 2, "nginx:1.25")),
        "{}",
        p.log("controller-manager", "a")
    );
    // klab's API server has no Table for events yet, so plain `kubectl get events` shows
    // only NAME and AGE; ask for the columns upstream's table shows.
    let events = ok(k(&[
        "get",
        "events",
        "-o",
        "custom-columns=TYPE:.type,REASON:.reason,OBJECT:.involvedObject.name,MESSAGE:.message",
    ]));
    for reason in [
        "ScalingReplicaSet",
        "SuccessfulCreate",
        "Scheduled",
        "SuccessfulDelete",
    ] {
        assert!(
            events.contains(reason),
            "no {reason} in:\n{events}\n{}",
            p.log("controller-manager", "a")
        );
    }
}

#[test]
fn the_cloud_controller_manager_initializes_nodes_and_load_balancers() {
    let Some(p) = Plane::start() else { return };
    p.nodes(
        &["cloudy"],
        "4",
        "8Gi",
        json!([{"key": "node.cloudprovider.kubernetes.io/uninitialized", "value": "true", "effect": "NoSchedule"}]),
    );
    let _ccm = p.component(
        "cloud-controller-manager",
        "a",
        &[
            "--leader-elect=false",
            "--load-balancer-ip-range=172.18.255.200-172.18.255.201",
            "--zone=lab-a",
        ],
    );
    let nodes: Api<Node> = Api::all(p.client.clone());
    assert!(
        eventually(20, || {
            let n = p.rt.block_on(nodes.get("cloudy")).unwrap();
            n.spec.as_ref().and_then(|s| s.provider_id.as_deref()) == Some("local://cloudy")
                && n.spec
                    .as_ref()
                    .and_then(|s| s.taints.as_ref())
                    .is_none_or(|t| t.is_empty())
                && n.metadata
                    .labels
                    .as_ref()
                    .unwrap()
                    .get("topology.kubernetes.io/zone")
                    .map(String::as_str)
                    == Some("lab-a")
        }),
        "{}",
        p.log("cloud-controller-manager", "a")
    );
    p.apply_json(
        "/api/v1/namespaces/default/services",
        json!({"apiVersion": "v1", "kind": "Service", "metadata": {"name": "lb"},
               "spec": {"type": "LoadBalancer", "selector": {"app": "x"}, "ports": [{"port": 80}]}}),
    );
    let svcs: Api<k8s_openapi::api::core::v1::Service> =
        Api::namespaced(p.client.clone(), "default");
    assert!(
        eventually(20, || {
            p.rt.block_on(svcs.get("lb"))
                .ok()
                .and_then(|s| s.status?.load_balancer?.ingress)
                .is_some_and(|i| i.first().and_then(|x| x.ip.as_deref()) == Some("172.18.255.200"))
        }),
        "{}",
        p.log("cloud-controller-manager", "a")
    );
}

mod daemonset;
mod namespace;

#[test]
fn root_ca_cert_publisher_puts_the_ca_in_every_namespace() {
    use k8s_openapi::api::core::v1::ConfigMap;
    let Some(p) = Plane::start() else { return };
    let ca_file = p.cluster.path("ca.crt");
    let ca = std::fs::read_to_string(&ca_file).unwrap();
    let flag = format!("--root-ca-file={ca_file}");
    let _cm = p.component(
        "controller-manager",
        "a",
        &[
            "--leader-elect=false",
            "--controllers=root-ca-cert-publisher",
            &flag,
        ],
    );
    p.apply_json(
        "/api/v1/namespaces",
        json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "team-a"}}),
    );
    let ca_in = |ns: &str| {
        let maps: Api<ConfigMap> = Api::namespaced(p.client.clone(), ns);
        p.rt.block_on(maps.get_opt("kube-root-ca.crt"))
            .ok()
            .flatten()
            .and_then(|m| m.data)
            .and_then(|d| d.get("ca.crt").cloned())
    };
    assert!(
        eventually(30, || ["default", "kube-system", "team-a"]
            .iter()
            .all(|ns| ca_in(ns).as_deref() == Some(ca.as_str()))),
        "kube-root-ca.crt in every namespace; log:\n{}",
        p.log("controller-manager", "a")
    );
    // Changed by hand, it is put back.
    let maps: Api<ConfigMap> = Api::namespaced(p.client.clone(), "team-a");
    p.rt.block_on(maps.patch(
        "kube-root-ca.crt",
        &PatchParams::default(),
        &Patch::Merge(json!({"data": {"ca.crt": "tampered"}})),
    ))
    .unwrap();
    assert!(
        eventually(60, || ca_in("team-a").as_deref() == Some(ca.as_str())),
        "kube-root-ca.crt restored"
    );
}
