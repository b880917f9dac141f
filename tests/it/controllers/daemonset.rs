//! The daemonset controller (and podgc beside it) against a real API server with simulated
//! nodes: one pod per fitting node, taints and tolerations, nodes joining and leaving, failed
//! pods replaced, a rolling update one node at a time, and what kubectl shows.

use std::collections::BTreeMap;

use k8s_openapi::api::apps::v1::{ControllerRevision, DaemonSet};
use k8s_openapi::api::core::v1::{Node, Pod};
use kube::api::{Api, DeleteParams, Patch, PatchParams};
use serde_json::json;

use crate::apiserver::harness::ok;
use crate::require;
use crate::sim::{Plane, eventually, live, node_of};

fn daemonset(name: &str, image: &str, spec: serde_json::Value) -> serde_json::Value {
    let mut pod = json!({"containers": [{"name": "c", "image": image}]});
    if let (Some(p), Some(extra)) = (pod.as_object_mut(), spec.as_object()) {
        p.extend(extra.clone());
    }
    json!({
        "apiVersion": "apps/v1", "kind": "DaemonSet",
        "metadata": {"name": name},
        "spec": {
            "selector": {"matchLabels": {"app": name}},
            "template": {"metadata": {"labels": {"app": name}}, "spec": pod},
        },
    })
}

fn ds(p: &Plane, name: &str) -> Option<DaemonSet> {
    let api: Api<DaemonSet> = Api::namespaced(p.client.clone(), "default");
    p.rt.block_on(api.get_opt(name)).ok().flatten()
}

/// Live pods of the DaemonSet `name`, by node (unbound ones under "").
fn pods_by_node(p: &Plane, name: &str) -> BTreeMap<String, Vec<Pod>> {
    let mut out: BTreeMap<String, Vec<Pod>> = BTreeMap::new();
    for pod in live(&p.pods("default")) {
        let owner = pod
            .metadata
            .owner_references
            .as_ref()
            .and_then(|r| r.first());
        if owner.is_some_and(|o| o.kind == "DaemonSet" && o.name == name) {
            out.entry(node_of(pod).unwrap_or_default())
                .or_default()
                .push(pod.clone());
        }
    }
    out
}

fn image(p: &Pod) -> String {
    p.spec.as_ref().unwrap().containers[0]
        .image
        .clone()
        .unwrap_or_default()
}

fn ready(p: &Pod) -> bool {
    p.status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .is_some_and(|c| c.iter().any(|c| c.type_ == "Ready" && c.status == "True"))
}

/// Status numbers as `kubectl get ds` lists them: desired, current, ready, up-to-date,
/// available; plus misscheduled and unavailable.
fn numbers(p: &Plane, name: &str) -> Option<[i32; 7]> {
    let d = ds(p, name)?;
    let s = d.status?;
    (s.observed_generation == d.metadata.generation).then_some([
        s.desired_number_scheduled,
        s.current_number_scheduled,
        s.number_ready,
        s.updated_number_scheduled.unwrap_or(0),
        s.number_available.unwrap_or(0),
        s.number_misscheduled,
        s.number_unavailable.unwrap_or(0),
    ])
}

/// Exactly one live, ready pod on each of `nodes` and none elsewhere, all running `image`.
fn one_each(p: &Plane, name: &str, nodes: &[&str], image_: &str) -> bool {
    let by = pods_by_node(p, name);
    by.keys().map(String::as_str).collect::<Vec<_>>() == nodes
        && by
            .values()
            .all(|v| v.len() == 1 && ready(&v[0]) && image(&v[0]) == image_)
}

/// What the controller adds to a template for one node, in-process and deterministic, for
/// the book: a DaemonSet shaped like kube-proxy's (host network, privileged, tolerating
/// everything) and the pod made for `node-1`.
#[test]
fn the_pod_for_a_node_is_the_template_plus_binding_tolerations_and_revision() {
    use klab::controllers::daemonset::{daemon_pod, pod_template};
    let ds: DaemonSet = serde_json::from_value(json!({
        "apiVersion": "apps/v1", "kind": "DaemonSet",
        "metadata": {"name": "kube-proxy", "namespace": "kube-system",
                     "uid": "6f1c0a52-0000-4000-8000-000000000001", "generation": 1},
        "spec": {
            "selector": {"matchLabels": {"k8s-app": "kube-proxy"}},
            "template": {"metadata": {"labels": {"k8s-app": "kube-proxy"}}, "spec": {
                "hostNetwork": true,
                "tolerations": [{"operator": "Exists"}],
                "containers": [{"name": "kube-proxy", "image": "klab:local",
                    "command": ["kube-proxy", "--kubeconfig=/etc/kubernetes/proxy.conf"],
                    "securityContext": {"privileged": true}}],
            }},
        },
    }))
    .unwrap();
    let hash = klab::controllers::deployment::template_hash(&ds.spec.as_ref().unwrap().template);
    let pod = daemon_pod(&ds, &pod_template(&ds, &hash), "node-1");
    crate::snap!(
        "daemonset_pod_for_node",
        serde_yaml::to_string(&pod).unwrap()
    );
}

fn cm_args() -> Vec<&'static str> {
    vec!["--leader-elect=false", "--node-monitor-grace-period=1h"]
}

#[test]
fn a_daemon_set_runs_one_pod_on_each_fitting_node_as_nodes_come_and_go() {
    let Some(p) = Plane::start() else { return };
    p.nodes(&["node-1", "node-2", "node-4"], "4", "8Gi", json!([]));
    p.nodes(
        &["node-3"],
        "4",
        "8Gi",
        json!([{"key": "dedicated", "value": "gpu", "effect": "NoSchedule"}]),
    );
    let nodes: Api<Node> = Api::all(p.client.clone());
    // A cordoned node still runs daemons: they tolerate node.kubernetes.io/unschedulable.
    p.rt.block_on(nodes.patch(
        "node-4",
        &PatchParams::default(),
        &Patch::Merge(json!({"spec": {"unschedulable": true}})),
    ))
    .unwrap();
    p.kubelet();
    let _s = p.component("scheduler", "a", &["--leader-elect=false"]);
    let _cm = p.component("controller-manager", "a", &cm_args());
    p.apply_json(
        "/apis/apps/v1/namespaces/default/daemonsets",
        daemonset("agent", "agent:1", json!({})),
    );
    assert!(
        eventually(60, || one_each(
            &p,
            "agent",
            &["node-1", "node-2", "node-4"],
            "agent:1"
        ) && numbers(&p, "agent")
            == Some([3, 3, 3, 3, 3, 0, 0])),
        "{:?} {:?}\n{}",
        pods_by_node(&p, "agent").keys().collect::<Vec<_>>(),
        numbers(&p, "agent"),
        p.log("controller-manager", "a")
    );
    let d = ds(&p, "agent").unwrap();
    for (node, pods) in pods_by_node(&p, "agent") {
        let pod = &pods[0];
        let owner = &pod.metadata.owner_references.as_ref().unwrap()[0];
        assert_eq!(owner.uid, d.metadata.uid.clone().unwrap());
        assert_eq!(
            (owner.controller, owner.block_owner_deletion),
            (Some(true), Some(true))
        );
        assert!(pod.metadata.name.as_ref().unwrap().starts_with("agent-"));
        let labels = pod.metadata.labels.as_ref().unwrap();
        assert!(labels.contains_key("controller-revision-hash"));
        assert_eq!(labels["pod-template-generation"], "1");
        // Bound through the scheduler by upstream's metadata.name node affinity.
        let spec = pod.spec.as_ref().unwrap();
        let term = &spec
            .affinity
            .as_ref()
            .unwrap()
            .node_affinity
            .as_ref()
            .unwrap()
            .required_during_scheduling_ignored_during_execution
            .as_ref()
            .unwrap()
            .node_selector_terms[0];
        let field = &term.match_fields.as_ref().unwrap()[0];
        assert_eq!(
            (field.key.as_str(), field.values.as_ref().unwrap()),
            ("metadata.name", &vec![node.clone()])
        );
        let tolerated: Vec<&str> = spec
            .tolerations
            .as_ref()
            .unwrap()
            .iter()
            .filter_map(|t| t.key.as_deref())
            .collect();
        assert!(tolerated.contains(&"node.kubernetes.io/unreachable"));
    }

    // A new node gets a pod.
    p.nodes(&["node-5"], "4", "8Gi", json!([]));
    assert!(
        eventually(60, || one_each(
            &p,
            "agent",
            &["node-1", "node-2", "node-4", "node-5"],
            "agent:1"
        ) && numbers(&p, "agent")
            == Some([4, 4, 4, 4, 4, 0, 0])),
        "node-5 got no pod: {:?}",
        numbers(&p, "agent")
    );
    // An untolerated NoExecute taint: the node no longer fits and its pod goes.
    p.rt.block_on(nodes.patch(
        "node-1",
        &PatchParams::default(),
        &Patch::Merge(json!({"spec": {"taints": [{"key": "maintenance", "effect": "NoExecute"}]}})),
    ))
    .unwrap();
    assert!(
        eventually(60, || one_each(
            &p,
            "agent",
            &["node-2", "node-4", "node-5"],
            "agent:1"
        ) && numbers(&p, "agent")
            == Some([3, 3, 3, 3, 3, 0, 0])),
        "node-1's pod stayed: {:?}",
        numbers(&p, "agent")
    );
    // A deleted node's pod goes too: no kubelet will ever finish it, so podgc removes it
    // once the node has been gone for its quarantine.
    p.rt.block_on(nodes.delete("node-2", &DeleteParams::default()))
        .unwrap();
    assert!(
        eventually(120, || one_each(
            &p,
            "agent",
            &["node-4", "node-5"],
            "agent:1"
        ) && numbers(&p, "agent")
            == Some([2, 2, 2, 2, 2, 0, 0])),
        "node-2's pod stayed: {:?}\n{}",
        pods_by_node(&p, "agent").keys().collect::<Vec<_>>(),
        p.log("controller-manager", "a")
    );

    // kube-proxy's shape (klab up's): host network, privileged, tolerating every taint.
    p.apply_json(
        "/apis/apps/v1/namespaces/default/daemonsets",
        daemonset(
            "proxy",
            "kube-proxy:1",
            json!({"hostNetwork": true, "tolerations": [{"operator": "Exists"}],
                   "containers": [{"name": "c", "image": "kube-proxy:1",
                                   "securityContext": {"privileged": true}}]}),
        ),
    );
    assert!(
        eventually(60, || one_each(
            &p,
            "proxy",
            &["node-1", "node-3", "node-4", "node-5"],
            "kube-proxy:1"
        ) && numbers(&p, "proxy")
            == Some([4, 4, 4, 4, 4, 0, 0])),
        "{:?} {:?}",
        pods_by_node(&p, "proxy").keys().collect::<Vec<_>>(),
        numbers(&p, "proxy")
    );
}

#[test]
fn failed_daemon_pods_are_replaced_and_a_template_change_rolls_one_node_at_a_time() {
    let Some(p) = Plane::start() else { return };
    p.nodes(&["node-1", "node-2", "node-3"], "4", "8Gi", json!([]));
    p.kubelet();
    let _s = p.component("scheduler", "a", &["--leader-elect=false"]);
    let _cm = p.component("controller-manager", "a", &cm_args());
    let all = ["node-1", "node-2", "node-3"];
    p.apply_json(
        "/apis/apps/v1/namespaces/default/daemonsets",
        daemonset("logs", "logs:1", json!({})),
    );
    assert!(eventually(60, || one_each(&p, "logs", &all, "logs:1")
        && numbers(&p, "logs") == Some([3, 3, 3, 3, 3, 0, 0])));

    // A pod that failed is deleted and a new one made for its node.
    let failed = pods_by_node(&p, "logs")["node-2"][0].clone();
    let failed_name = failed.metadata.name.clone().unwrap();
    let pods: Api<Pod> = Api::namespaced(p.client.clone(), "default");
    p.rt.block_on(pods.patch_status(
        &failed_name,
        &PatchParams::default(),
        &Patch::Merge(json!({"status": {"phase": "Failed"}})),
    ))
    .unwrap();
    assert!(
        eventually(60, || one_each(&p, "logs", &all, "logs:1")
            && pods_by_node(&p, "logs")["node-2"][0].metadata.name.as_ref()
                != Some(&failed_name)),
        "the failed pod was not replaced\n{}",
        p.log("controller-manager", "a")
    );

    // maxUnavailable 1 (the default): at every observed moment at least two nodes have a
    // ready pod, and no node ever has two.
    let api: Api<DaemonSet> = Api::namespaced(p.client.clone(), "default");
    let patch =
        json!({"spec": {"template": {"spec": {"containers": [{"name": "c", "image": "logs:2"}]}}}});
    p.rt.block_on(api.patch("logs", &PatchParams::default(), &Patch::Merge(&patch)))
        .unwrap();
    let mut observed = 0;
    let done = eventually(120, || {
        let by = pods_by_node(&p, "logs");
        let with_ready = by.values().filter(|v| v.iter().any(ready)).count();
        assert!(
            with_ready >= 2,
            "{with_ready} nodes with a ready pod mid-rollout"
        );
        assert!(
            by.values().all(|v| v.len() == 1),
            "two pods on one node: {by:?}"
        );
        observed += 1;
        one_each(&p, "logs", &all, "logs:2") && numbers(&p, "logs") == Some([3, 3, 3, 3, 3, 0, 0])
    });
    assert!(
        done && observed > 1,
        "the rollout did not finish: {:?}\n{}",
        numbers(&p, "logs"),
        p.log("controller-manager", "a")
    );

    // OnDelete: a template change waits until a pod is deleted by hand.
    let patch = json!({"spec": {"updateStrategy": {"type": "OnDelete", "rollingUpdate": null},
        "template": {"spec": {"containers": [{"name": "c", "image": "logs:3"}]}}}});
    p.rt.block_on(api.patch("logs", &PatchParams::default(), &Patch::Merge(&patch)))
        .unwrap();
    assert!(eventually(30, || numbers(&p, "logs") == Some([3, 3, 3, 0, 3, 0, 0])));
    assert!(one_each(&p, "logs", &all, "logs:2"));
    let victim = pods_by_node(&p, "logs")["node-1"][0]
        .metadata
        .name
        .clone()
        .unwrap();
    p.rt.block_on(pods.delete(&victim, &DeleteParams::default()))
        .unwrap();
    assert!(
        eventually(60, || {
            let by = pods_by_node(&p, "logs");
            by.len() == 3
                && by["node-1"].len() == 1
                && ready(&by["node-1"][0])
                && image(&by["node-1"][0]) == "logs:3"
                && image(&by["node-2"][0]) == "logs:2"
                && numbers(&p, "logs") == Some([3, 3, 3, 1, 3, 0, 0])
        }),
        "{:?}",
        numbers(&p, "logs")
    );
    // Deleting the DaemonSet takes its pods and its revisions with it (garbage collector).
    let revisions: Api<ControllerRevision> = Api::namespaced(p.client.clone(), "default");
    let count_revisions = || {
        p.rt.block_on(revisions.list(&Default::default()))
            .map(|l| l.items.len())
            .unwrap_or(usize::MAX)
    };
    assert_eq!(count_revisions(), 3, "one revision per template");
    p.rt.block_on(api.delete("logs", &DeleteParams::background()))
        .unwrap();
    assert!(
        eventually(60, || p.pods("default").is_empty()
            && count_revisions() == 0),
        "{} pods and {} revisions left",
        p.pods("default").len(),
        count_revisions()
    );
}

#[test]
fn a_surge_rollout_keeps_every_node_served() {
    let Some(p) = Plane::start() else { return };
    let all = ["node-1", "node-2", "node-3"];
    p.nodes(&all, "4", "8Gi", json!([]));
    p.kubelet();
    let _s = p.component("scheduler", "a", &["--leader-elect=false"]);
    let _cm = p.component("controller-manager", "a", &cm_args());
    let mut d = daemonset("cni", "cni:1", json!({}));
    d["spec"]["updateStrategy"] =
        json!({"type": "RollingUpdate", "rollingUpdate": {"maxSurge": 1, "maxUnavailable": 0}});
    p.apply_json("/apis/apps/v1/namespaces/default/daemonsets", d);
    assert!(eventually(60, || one_each(&p, "cni", &all, "cni:1")
        && numbers(&p, "cni") == Some([3, 3, 3, 3, 3, 0, 0])));
    let api: Api<DaemonSet> = Api::namespaced(p.client.clone(), "default");
    let patch =
        json!({"spec": {"template": {"spec": {"containers": [{"name": "c", "image": "cni:2"}]}}}});
    p.rt.block_on(api.patch("cni", &PatchParams::default(), &Patch::Merge(&patch)))
        .unwrap();
    // maxUnavailable 0: the new pod starts beside the old one, which goes only once the new
    // one is available, so every node has a ready pod at every observed moment.
    let mut observed = 0;
    let done = eventually(120, || {
        let by = pods_by_node(&p, "cni");
        for n in all {
            assert!(
                by.get(n).is_some_and(|v| v.iter().any(ready)),
                "{n} has no ready pod mid-rollout: {by:?}"
            );
        }
        observed += 1;
        one_each(&p, "cni", &all, "cni:2") && numbers(&p, "cni") == Some([3, 3, 3, 3, 3, 0, 0])
    });
    assert!(
        done && observed > 1,
        "the rollout did not finish: {:?}\n{}",
        numbers(&p, "cni"),
        p.log("controller-manager", "a")
    );
}

#[test]
fn kubectl_shows_the_daemon_set_and_waits_for_its_rollout() {
    let Some(kubectl) = require("kubectl") else {
        return;
    };
    let Some(p) = Plane::start() else { return };
    p.nodes(&["node-1", "node-2"], "4", "8Gi", json!([]));
    p.nodes(
        &["node-3"],
        "4",
        "8Gi",
        json!([{"key": "node-role.kubernetes.io/control-plane", "effect": "NoSchedule"}]),
    );
    p.kubelet();
    let _s = p.component("scheduler", "a", &["--leader-elect=false"]);
    let _cm = p.component("controller-manager", "a", &cm_args());
    let k = |args: &[&str]| p.cluster.kubectl_with(&kubectl, args);
    p.apply_json(
        "/apis/apps/v1/namespaces/default/daemonsets",
        daemonset(
            "node-agent",
            "agent:1",
            json!({"nodeSelector": {"kubernetes.io/os": "linux"}}),
        ),
    );
    // No node has the label yet: nothing desired, and the rollout is (trivially) complete.
    assert!(eventually(30, || numbers(&p, "node-agent")
        == Some([0, 0, 0, 0, 0, 0, 0])));
    let nodes: Api<Node> = Api::all(p.client.clone());
    for n in ["node-1", "node-2", "node-3"] {
        p.rt.block_on(nodes.patch(
            n,
            &PatchParams::default(),
            &Patch::Merge(json!({"metadata": {"labels": {"kubernetes.io/os": "linux"}}})),
        ))
        .unwrap();
    }
    ok(k(&["rollout", "status", "ds/node-agent", "--timeout=90s"]));
    assert!(eventually(30, || numbers(&p, "node-agent")
        == Some([2, 2, 2, 2, 2, 0, 0])));
    let table = ok(k(&["get", "ds", "node-agent"]));
    let rows: Vec<Vec<&str>> = table
        .lines()
        .map(|l| l.split_whitespace().collect())
        .collect();
    assert_eq!(
        rows[0],
        [
            "NAME",
            "DESIRED",
            "CURRENT",
            "READY",
            "UP-TO-DATE",
            "AVAILABLE",
            "NODE",
            "SELECTOR",
            "AGE"
        ],
        "{table}"
    );
    assert_eq!(
        rows[1][..7],
        [
            "node-agent",
            "2",
            "2",
            "2",
            "2",
            "2",
            "kubernetes.io/os=linux"
        ],
        "{table}"
    );
    ok(k(&["set", "image", "ds/node-agent", "c=agent:2"]));
    let out = ok(k(&["rollout", "status", "ds/node-agent", "--timeout=90s"]));
    assert!(out.contains("successfully rolled out"), "{out}");
    assert!(one_each(&p, "node-agent", &["node-1", "node-2"], "agent:2"));
    let history = ok(k(&["rollout", "history", "ds/node-agent"]));
    assert!(
        history.contains("\n1 ") && history.contains("\n2 "),
        "two revisions expected:\n{history}"
    );
    ok(k(&["rollout", "undo", "ds/node-agent"]));
    ok(k(&["rollout", "status", "ds/node-agent", "--timeout=90s"]));
    assert!(
        eventually(60, || one_each(
            &p,
            "node-agent",
            &["node-1", "node-2"],
            "agent:1"
        )),
        "undo did not bring agent:1 back"
    );
    // As upstream, the revision rolled back to becomes the newest: 1 is renumbered 3.
    let revisions = || -> Vec<String> {
        let out = ok(k(&["rollout", "history", "ds/node-agent"]));
        out.lines()
            .filter_map(|l| l.split_whitespace().next())
            .filter(|w| w.chars().all(|c| c.is_ascii_digit()))
            .map(str::to_owned)
            .collect()
    };
    assert!(
        eventually(30, || revisions() == ["2", "3"]),
        "{:?}",
        revisions()
    );
    let events = ok(k(&[
        "get",
        "events",
        "-o",
        "custom-columns=REASON:.reason,OBJECT:.involvedObject.name",
    ]));
    for reason in ["SuccessfulCreate", "SuccessfulDelete"] {
        assert!(events.contains(reason), "no {reason} in:\n{events}");
    }
}
