//! kube-scheduler as a process against a real API server (klab-store underneath) with simulated
//! nodes: upstream's FailedScheduling message, taints and tolerations, retry when a node
//! arrives, topology spread constraints, inter-pod affinity and anti-affinity, and `--explain`.

use k8s_openapi::api::core::v1::{Event, Pod};
use kube::api::{Api, ListParams};
use serde_json::json;

use crate::apiserver::harness::{ok, require};
use crate::sim::{Plane, eventually, live, node_of};

fn pod(name: &str, cpu: &str, tolerations: serde_json::Value) -> serde_json::Value {
    json!({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": name},
        "spec": {"tolerations": tolerations, "containers": [{"name": "c", "image": "busybox",
            "resources": {"requests": {"cpu": cpu, "memory": "64Mi"}}}]},
    })
}

fn events(p: &Plane, reason: &str) -> Vec<Event> {
    let api: Api<Event> = Api::namespaced(p.client.clone(), "default");
    p.rt.block_on(api.list(&ListParams::default().fields(&format!("reason={reason}"))))
        .map(|l| l.items)
        .unwrap_or_default()
}

/// Waits up to `secs` for a FailedScheduling event with exactly `want` as its message; fails
/// with the messages seen and the scheduler's log.
fn assert_failed_scheduling(p: &Plane, secs: u64, want: &str) {
    let messages = || -> Vec<Option<String>> {
        events(p, "FailedScheduling")
            .into_iter()
            .map(|e| e.message)
            .collect()
    };
    assert!(
        eventually(secs, || messages()
            .iter()
            .any(|m| m.as_deref() == Some(want))),
        "no FailedScheduling event with the upstream message {want:?}; events: {:?}\nlog: {}",
        messages(),
        p.log("scheduler", "a")
    );
}

fn get(p: &Plane, name: &str) -> Option<Pod> {
    let api: Api<Pod> = Api::namespaced(p.client.clone(), "default");
    p.rt.block_on(api.get_opt(name)).ok().flatten()
}

#[test]
fn a_pod_too_big_stays_pending_with_upstreams_message_until_a_node_fits() {
    let Some(p) = Plane::start() else { return };
    p.nodes(
        &["gpu-1"],
        "2",
        "4Gi",
        json!([{"key": "dedicated", "value": "gpu", "effect": "NoSchedule"}]),
    );
    p.nodes(&["small-1", "small-2"], "2", "4Gi", json!([]));
    let _s = p.component("scheduler", "a", &["--leader-elect=false"]);
    p.apply_json(
        "/api/v1/namespaces/default/pods",
        pod("big", "3", json!([])),
    );
    // The tainted node cannot be helped by evicting pods; the small ones hold no pod of lower
    // priority to evict.
    let want = "0/3 nodes are available: 1 node(s) had untolerated taint {dedicated: gpu}, 2 Insufficient cpu. \
preemption: 0/3 nodes are available: 1 Preemption is not helpful for scheduling, \
2 No preemption victims found for incoming pod.";
    assert_failed_scheduling(&p, 20, want);
    let big = get(&p, "big").unwrap();
    assert_eq!(node_of(&big), None);
    let cond = big.status.unwrap().conditions.unwrap_or_default();
    assert!(
        cond.iter().any(|c| c.type_ == "PodScheduled"
            && c.status == "False"
            && c.reason.as_deref() == Some("Unschedulable")),
        "{cond:?}"
    );
    // A node that fits arrives: the unschedulable pod is retried and bound to it.
    p.nodes(&["large-1"], "8", "16Gi", json!([]));
    assert!(
        eventually(30, || get(&p, "big").and_then(|b| node_of(&b)).as_deref()
            == Some("large-1")),
        "{}",
        p.log("scheduler", "a")
    );
    assert!(eventually(10, || events(&p, "Scheduled")
        .iter()
        .any(
            |e| e.message.as_deref() == Some("Successfully assigned default/big to large-1")
        )));
}

#[test]
fn taints_keep_pods_away_unless_tolerated() {
    let Some(p) = Plane::start() else { return };
    p.nodes(
        &["tainted"],
        "4",
        "8Gi",
        json!([{"key": "team", "value": "blue", "effect": "NoSchedule"}]),
    );
    p.nodes(
        &["also-tainted"],
        "4",
        "8Gi",
        json!([{"key": "maintenance", "effect": "NoExecute"}]),
    );
    let _s = p.component("scheduler", "a", &["--leader-elect=false"]);
    p.apply_json(
        "/api/v1/namespaces/default/pods",
        pod(
            "tolerant",
            "100m",
            json!([{"key": "team", "operator": "Equal", "value": "blue", "effect": "NoSchedule"}]),
        ),
    );
    p.apply_json(
        "/api/v1/namespaces/default/pods",
        pod("plain", "100m", json!([])),
    );
    assert!(
        eventually(20, || get(&p, "tolerant")
            .and_then(|x| node_of(&x))
            .as_deref()
            == Some("tainted")),
        "{}",
        p.log("scheduler", "a")
    );
    let want = "0/2 nodes are available: 1 node(s) had untolerated taint {maintenance: }, 1 node(s) had untolerated taint {team: blue}. \
preemption: 0/2 nodes are available: 2 Preemption is not helpful for scheduling.";
    assert_failed_scheduling(&p, 20, want);
    assert_eq!(get(&p, "plain").and_then(|x| node_of(&x)), None);
}

#[test]
fn explain_logs_and_annotates_each_decision() {
    let Some(p) = Plane::start() else { return };
    p.nodes(&["busy"], "1", "2Gi", json!([]));
    p.nodes(&["roomy"], "8", "16Gi", json!([]));
    p.nodes(
        &["tainted"],
        "8",
        "16Gi",
        json!([{"key": "x", "value": "y", "effect": "NoSchedule"}]),
    );
    let port = crate::free_port();
    let secure_port = format!("--secure-port={port}");
    let _s = p.component(
        "scheduler",
        "a",
        &[
            "--leader-elect=false",
            "--explain",
            "--bind-address=127.0.0.1",
            &secure_port,
        ],
    );
    p.apply_json(
        "/api/v1/namespaces/default/pods",
        pod("web", "500m", json!([])),
    );
    assert!(
        eventually(20, || get(&p, "web").and_then(|x| node_of(&x)).is_some()),
        "{}",
        p.log("scheduler", "a")
    );
    let web = get(&p, "web").unwrap();
    assert_eq!(
        node_of(&web).as_deref(),
        Some("roomy"),
        "LeastAllocated prefers the roomy node"
    );
    let ann = web.metadata.annotations.unwrap_or_default();
    let explain: serde_json::Value =
        serde_json::from_str(&ann["scheduler.klab.dev/explain"]).unwrap();
    assert_eq!(explain["selected"], "roomy");
    assert_eq!(
        explain["filter"]["tainted"]["TaintToleration"],
        "node(s) had untolerated taint {x: y}"
    );
    assert_eq!(explain["filter"]["roomy"], "passed");
    assert!(
        explain["score"]["roomy"]["total"].as_i64() > explain["score"]["busy"]["total"].as_i64()
    );
    let log = p.log("scheduler", "a");
    assert!(
        log.contains("default/web: filter tainted: rejected by TaintToleration"),
        "{log}"
    );
    assert!(log.contains("default/web: selected roomy"), "{log}");
    // /healthz and /metrics over HTTPS with the scheduler's self-signed certificate.
    let curl = |path: &str| {
        let out = std::process::Command::new("curl")
            .args(["-sk", &format!("https://127.0.0.1:{port}{path}")])
            .output()
            .unwrap();
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    if crate::require("curl").is_some() {
        assert_eq!(curl("/healthz"), "ok");
        assert!(
            curl("/metrics").contains("scheduler_schedule_attempts_total{result=\"scheduled\"} 1")
        );
    }
}

/// A pod of app=spread with a hostname constraint (maxSkew 1, DoNotSchedule) that tolerates
/// the taint `full=yes` (or not).
fn spread_pod(name: &str, tolerate: bool) -> serde_json::Value {
    let tolerations = if tolerate {
        json!([{"key": "full", "operator": "Exists", "effect": "NoSchedule"}])
    } else {
        json!([])
    };
    json!({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": name, "labels": {"app": "spread"}},
        "spec": {
            "tolerations": tolerations,
            "topologySpreadConstraints": [{"maxSkew": 1, "topologyKey": "kubernetes.io/hostname",
                "whenUnsatisfiable": "DoNotSchedule", "labelSelector": {"matchLabels": {"app": "spread"}}}],
            "containers": [{"name": "c", "image": "busybox",
                "resources": {"requests": {"cpu": "100m", "memory": "64Mi"}}}]},
    })
}

#[test]
fn topology_spread_places_six_pods_two_per_node_and_keeps_a_seventh_pending() {
    let Some(p) = Plane::start() else { return };
    p.nodes(&["spread-a", "spread-b"], "4", "8Gi", json!([]));
    p.nodes(
        &["spread-c"],
        "4",
        "8Gi",
        json!([{"key": "full", "value": "yes", "effect": "NoSchedule"}]),
    );
    p.kubelet();
    let _s = p.component("scheduler", "a", &["--leader-elect=false"]);
    for i in 0..6 {
        p.apply_json(
            "/api/v1/namespaces/default/pods",
            spread_pod(&format!("web-{i}"), true),
        );
    }
    let per_node = |p: &Plane| {
        let mut count = std::collections::BTreeMap::<String, usize>::new();
        for pod in crate::sim::live(&p.pods("default")) {
            if let Some(n) = node_of(pod) {
                *count.entry(n).or_default() += 1;
            }
        }
        count
    };
    assert!(
        eventually(30, || per_node(&p).values().sum::<usize>() == 6),
        "{:?}\n{}",
        per_node(&p),
        p.log("scheduler", "a")
    );
    let spread: Vec<usize> = per_node(&p).into_values().collect();
    assert_eq!(spread, [2, 2, 2], "maxSkew 1 over three nodes");
    // One pod leaves spread-c: the domains hold 2, 2 and 1. A pod that does not tolerate
    // spread-c's taint would make a or b hold 3 against c's 1, a skew of 2.
    let on_c = p
        .pods("default")
        .into_iter()
        .find(|x| node_of(x).as_deref() == Some("spread-c"))
        .and_then(|x| x.metadata.name)
        .unwrap();
    let api: Api<Pod> = Api::namespaced(p.client.clone(), "default");
    p.rt.block_on(api.delete(&on_c, &Default::default()))
        .unwrap();
    assert!(eventually(20, || get(&p, &on_c).is_none()));
    p.apply_json(
        "/api/v1/namespaces/default/pods",
        spread_pod("extra", false),
    );
    let want = "0/3 nodes are available: 1 node(s) had untolerated taint {full: yes}, \
2 node(s) didn't match pod topology spread constraints. \
preemption: 0/3 nodes are available: 1 Preemption is not helpful for scheduling, \
2 No preemption victims found for incoming pod.";
    assert_failed_scheduling(&p, 20, want);
    assert_eq!(get(&p, "extra").and_then(|x| node_of(&x)), None);
}

/// The API server's Priority admission: a pod's priorityClassName becomes spec.priority from
/// the built-in classes (or 0 without one), and an unknown class is Forbidden in upstream's
/// words.
#[test]
fn priority_class_names_resolve_to_spec_priority() {
    let Some(p) = Plane::start() else { return };
    let mut critical = pod("critical", "100m", json!([]));
    critical["spec"]["priorityClassName"] = json!("system-cluster-critical");
    p.apply_json("/api/v1/namespaces/default/pods", critical);
    p.apply_json(
        "/api/v1/namespaces/default/pods",
        pod("plain", "100m", json!([])),
    );
    let prio = |name: &str| get(&p, name).and_then(|x| x.spec).and_then(|s| s.priority);
    assert_eq!(prio("critical"), Some(2_000_000_000));
    assert_eq!(prio("plain"), Some(0));
    let mut unknown = pod("unknown", "100m", json!([]));
    unknown["spec"]["priorityClassName"] = json!("gold");
    let (code, body) = p.cluster.curl(
        Some("admin"),
        "POST",
        "/api/v1/namespaces/default/pods",
        "application/json",
        Some(unknown.to_string().as_bytes()),
    );
    assert_eq!(code, 403, "{body}");
    let status: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(
        status["message"],
        "pods \"unknown\" is forbidden: no PriorityClass with name gold was found"
    );
    assert_eq!(status["reason"], "Forbidden");
    let (code, body) = p.cluster.curl(
        Some("admin"),
        "GET",
        "/apis/scheduling.k8s.io/v1/priorityclasses/system-node-critical",
        "application/json",
        None,
    );
    assert_eq!(code, 200, "{body}");
    assert!(body.contains("2000001000"), "{body}");
}

/// The book's explained decision: one pod, three nodes, every filter verdict and score, and
/// the FailedScheduling message for a pod that fits nowhere. In-process: the plugins are pure.
#[test]
fn an_explained_decision() {
    use klab::scheduler::decide::{Nominated, Outcome, schedule};
    use klab::scheduler::node_info::{NodeInfo, PodRequests};
    use std::sync::Arc;

    let node = |name: &str, cpu: &str, taints: serde_json::Value| {
        let n: k8s_openapi::api::core::v1::Node = serde_json::from_value(json!({
            "metadata": {"name": name},
            "spec": {"taints": taints},
            "status": {"allocatable": {"cpu": cpu, "memory": "8Gi", "pods": "110"}},
        }))
        .unwrap();
        NodeInfo::new(Arc::new(n))
    };
    let mut busy = node("busy", "2", json!([]));
    let running: Pod = serde_json::from_value(pod("db", "1500m", json!([]))).unwrap();
    busy.add_pod("default/db", &PodRequests::of(&running));
    let roomy = node("roomy", "4", json!([]));
    let tainted = node(
        "gpu",
        "8",
        json!([{"key": "dedicated", "value": "gpu", "effect": "NoSchedule"}]),
    );
    let nodes = [&busy, &roomy, &tainted];
    let web: Pod = serde_json::from_value(pod("web", "500m", json!([]))).unwrap();
    let d = schedule(&web, &nodes, &Nominated::new(), 0, true, &mut |_| 0);
    let mut text = d.explanation.lines("default/web").join("\n");
    let big: Pod = serde_json::from_value(pod("big", "6", json!([]))).unwrap();
    let d = schedule(&big, &nodes, &Nominated::new(), 0, true, &mut |_| 0);
    text.push('\n');
    text.push_str(&d.explanation.lines("default/big").join("\n"));
    if let Outcome::Unschedulable { message, .. } = d.outcome {
        text.push_str(&format!("\nFailedScheduling: {message}"));
    }
    crate::snap!("scheduler_explain", text);
}

/// The book's explained preemption: three nodes full of batch pods (priority 100) beside web
/// pods (priority 1000), a tainted one, and an urgent pod of priority 1000. In-process.
#[test]
fn an_explained_preemption() {
    use klab::scheduler::decide::{Nominated, Outcome, schedule};
    use klab::scheduler::node_info::{NodeInfo, PodRequests};
    use std::sync::Arc;

    let node = |name: &str, taints: serde_json::Value| {
        let n: k8s_openapi::api::core::v1::Node = serde_json::from_value(json!({
            "metadata": {"name": name},
            "spec": {"taints": taints},
            "status": {"allocatable": {"cpu": "4", "memory": "8Gi", "pods": "110"}},
        }))
        .unwrap();
        NodeInfo::new(Arc::new(n))
    };
    let run = |n: &mut NodeInfo, name: &str, cpu: &str, priority: i32, started: &str| {
        let mut v = pod(name, cpu, json!([]));
        v["spec"]["priority"] = json!(priority);
        v["status"] = json!({"startTime": started});
        let p: Pod = serde_json::from_value(v).unwrap();
        n.add_pod(&format!("default/{name}"), &PodRequests::of(&p));
    };
    let mut a = node("node-a", json!([]));
    run(&mut a, "web-1", "1", 1000, "2026-11-01T09:00:00Z");
    run(&mut a, "batch-1", "2", 100, "2026-11-01T10:00:00Z");
    run(&mut a, "batch-2", "1", 100, "2026-11-01T10:05:00Z");
    let mut b = node("node-b", json!([]));
    run(&mut b, "web-2", "3", 1000, "2026-11-01T09:00:00Z");
    run(&mut b, "batch-3", "1", 100, "2026-11-01T10:00:00Z");
    let mut c = node("node-c", json!([]));
    run(&mut c, "web-3", "2", 1000, "2026-11-01T09:00:00Z");
    run(&mut c, "batch-4", "1", 100, "2026-11-01T10:00:00Z");
    run(&mut c, "batch-5", "1", 100, "2026-11-01T10:00:00Z");
    let gpu = node(
        "gpu",
        json!([{"key": "dedicated", "value": "gpu", "effect": "NoSchedule"}]),
    );
    let nodes = [&a, &b, &c, &gpu];
    let mut urgent = pod("urgent", "2", json!([]));
    urgent["spec"]["priority"] = json!(1000);
    let urgent: Pod = serde_json::from_value(urgent).unwrap();
    let d = schedule(&urgent, &nodes, &Nominated::new(), 0, true, &mut |_| 0);
    let mut text = d.explanation.lines("default/urgent").join("\n");
    let Outcome::Unschedulable {
        message, victims, ..
    } = d.outcome
    else {
        panic!("urgent fits without preemption")
    };
    assert_eq!(victims, ["default/batch-1"]);
    text.push_str(&format!("\nFailedScheduling: {message}"));
    crate::snap!("scheduler_preemption_explain", text);
}

/// A PriorityClass through the API.
fn priority_class(p: &Plane, name: &str, value: i32, policy: &str) {
    p.apply_json(
        "/apis/scheduling.k8s.io/v1/priorityclasses",
        json!({"apiVersion": "scheduling.k8s.io/v1", "kind": "PriorityClass",
            "metadata": {"name": name}, "value": value, "preemptionPolicy": policy}),
    );
}

fn classed(name: &str, cpu: &str, class: &str) -> serde_json::Value {
    let mut v = pod(name, cpu, json!([]));
    v["spec"]["priorityClassName"] = json!(class);
    v
}

/// Two nodes of 2 CPUs, each running two `batch` pods of 1 CPU (priority 100); an `urgent` pod
/// (priority 1000) of 1 CPU arrives. Both nodes are equally good candidates (one victim of
/// priority 100 each), so the first, node-1, is chosen; of its two victims of equal priority
/// and start, batch-1 is tried first and fits back, so batch-2 goes.
#[test]
fn a_high_priority_pod_preempts_low_priority_pods_and_is_bound_where_they_were() {
    let Some(kubectl) = crate::require("kubectl") else {
        return;
    };
    let Some(p) = Plane::start() else { return };
    p.nodes(&["node-1", "node-2"], "2", "4Gi", json!([]));
    p.kubelet();
    let k = |args: &[&str]| crate::apiserver::harness::ok(p.cluster.kubectl_with(&kubectl, args));
    k(&["create", "priorityclass", "batch", "--value=100"]);
    k(&["create", "priorityclass", "urgent", "--value=1000"]);
    // Every watch event of every pod, to see what passes by quickly: the nomination and the
    // victim's DisruptionTarget condition before it is gone.
    let seen: std::sync::Arc<std::sync::Mutex<Vec<Pod>>> = Default::default();
    {
        let (seen, api) = (
            seen.clone(),
            Api::<Pod>::namespaced(p.client.clone(), "default"),
        );
        p.rt.spawn(async move {
            use futures::StreamExt;
            use kube::runtime::WatchStreamExt;
            // With backoff: once the test's API server is gone, retries must not spin.
            let stream = kube::runtime::watcher::watcher(api, Default::default()).default_backoff();
            tokio::pin!(stream);
            while let Some(ev) = stream.next().await {
                if let Ok(kube::runtime::watcher::Event::Apply(x)) = ev {
                    seen.lock().unwrap().push(x);
                }
            }
        });
    }
    // The batch pods are placed by hand (spec.nodeName), so the scenario is the same each run.
    for (i, node) in [(1, "node-1"), (2, "node-1"), (3, "node-2"), (4, "node-2")] {
        let mut batch = classed(&format!("batch-{i}"), "1", "batch");
        batch["spec"]["nodeName"] = json!(node);
        p.apply_json("/api/v1/namespaces/default/pods", batch);
    }
    let _s = p.component("scheduler", "a", &["--leader-elect=false", "--explain"]);
    p.apply_json(
        "/api/v1/namespaces/default/pods",
        classed("urgent", "1", "urgent"),
    );
    assert!(
        eventually(60, || get(&p, "urgent")
            .and_then(|u| node_of(&u))
            .as_deref()
            == Some("node-1")),
        "urgent was not bound to node-1\n{}",
        p.log("scheduler", "a")
    );
    let urgent = get(&p, "urgent").unwrap();
    let uid = urgent.metadata.uid.clone().unwrap();
    let names = |p: &Plane| {
        let mut n: Vec<String> = p
            .pods("default")
            .into_iter()
            .filter_map(|x| x.metadata.name)
            .collect();
        n.sort();
        n
    };
    assert_eq!(names(&p), ["batch-1", "batch-3", "batch-4", "urgent"]);
    // The nomination was written before the binding, and cleared once urgent was bound.
    let seen = seen.lock().unwrap().clone();
    assert!(
        seen.iter()
            .any(|x| x.metadata.name.as_deref() == Some("urgent")
                && node_of(x).is_none()
                && x.status
                    .as_ref()
                    .and_then(|s| s.nominated_node_name.as_deref())
                    == Some("node-1")),
        "urgent was never nominated to node-1"
    );
    assert!(
        eventually(20, || get(&p, "urgent")
            .and_then(|u| u.status)
            .and_then(|s| s.nominated_node_name)
            .is_none()),
        "nominatedNodeName stays after binding"
    );
    // --explain: the decision is in the log and, while urgent waited, in its annotation.
    let log = p.log("scheduler", "a");
    for want in [
        "default/urgent: preemption node-1: would evict default/batch-2 (priority 100)",
        "default/urgent: preemption node-2: would evict default/batch-4 (priority 100)",
        "default/urgent: preemption: nominated node-1",
    ] {
        assert!(log.contains(want), "no {want:?} in:\n{log}");
    }
    let explained = seen.iter().find_map(|x| {
        let a = x.metadata.annotations.as_ref()?;
        let v: serde_json::Value =
            serde_json::from_str(a.get("scheduler.klab.dev/explain")?).ok()?;
        (x.metadata.name.as_deref() == Some("urgent") && !v["preemption"].is_null()).then_some(v)
    });
    let explained = explained.expect("no explain annotation with the preemption");
    assert_eq!(
        explained["preemption"],
        json!({"nodes": {"node-1": {"victims": ["default/batch-2"]},
                         "node-2": {"victims": ["default/batch-4"]}},
               "nominated": "node-1"})
    );
    let marked: Vec<&str> = seen
        .iter()
        .filter(|x| {
            x.status
                .as_ref()
                .and_then(|s| s.conditions.as_ref())
                .is_some_and(|cs| {
                    cs.iter().any(|c| {
                        c.type_ == "DisruptionTarget"
                            && c.status == "True"
                            && c.reason.as_deref() == Some("PreemptionByScheduler")
                            && c.message.as_deref()
                                == Some("default-scheduler: preempting to accommodate a higher priority pod")
                    })
                })
        })
        .filter_map(|x| x.metadata.name.as_deref())
        .collect();
    assert!(
        !marked.is_empty() && marked.iter().all(|n| *n == "batch-2"),
        "{marked:?}"
    );
    let want = format!("Preempted by pod {uid} on node node-1");
    assert!(
        eventually(10, || events(&p, "Preempted").iter().any(|e| {
            e.message.as_deref() == Some(want.as_str())
                && e.involved_object.name.as_deref() == Some("batch-2")
                && e.action.as_deref() == Some("Preempting")
                && e.related.as_ref().and_then(|r| r.name.as_deref()) == Some("urgent")
        })),
        "{:?}",
        events(&p, "Preempted")
    );
    // Real kubectl reads the same story (the book shows this output).
    let events = k(&[
        "get",
        "events",
        "-o",
        "custom-columns=TYPE:.type,REASON:.reason,OBJECT:.involvedObject.name,MESSAGE:.message",
    ]);
    crate::snap!(
        "scheduler_preemption_events",
        events.replace(&uid, "<uid of urgent>")
    );
    let describe = k(&["describe", "pod", "urgent"]);
    for want in [
        "Priority:             1000",
        "Priority Class Name:  urgent",
        "0/2 nodes are available: 2 Insufficient cpu.",
        "Successfully assigned default/urgent to node-1",
    ] {
        assert!(describe.contains(want), "no {want:?} in:\n{describe}");
    }
}

#[test]
fn preemption_policy_never_and_equal_priority_never_preempt() {
    let Some(p) = Plane::start() else { return };
    p.nodes(&["node-1"], "1", "4Gi", json!([]));
    p.kubelet();
    priority_class(&p, "peer", 500, "PreemptLowerPriority");
    priority_class(&p, "polite", 1000, "Never");
    let _s = p.component("scheduler", "a", &["--leader-elect=false"]);
    p.apply_json(
        "/api/v1/namespaces/default/pods",
        classed("holder", "1", "peer"),
    );
    assert!(eventually(20, || get(&p, "holder")
        .and_then(|h| node_of(&h))
        .is_some()));
    p.apply_json(
        "/api/v1/namespaces/default/pods",
        classed("polite", "1", "polite"),
    );
    p.apply_json(
        "/api/v1/namespaces/default/pods",
        classed("equal", "1", "peer"),
    );
    let message_of = |name: &str| {
        events(&p, "FailedScheduling")
            .into_iter()
            .filter(|e| e.involved_object.name.as_deref() == Some(name))
            .filter_map(|e| e.message)
            .collect::<Vec<_>>()
    };
    for (name, want) in [
        (
            "polite",
            "0/1 nodes are available: 1 Insufficient cpu. preemption: not eligible due to preemptionPolicy=Never.",
        ),
        (
            "equal",
            "0/1 nodes are available: 1 Insufficient cpu. preemption: 0/1 nodes are available: 1 No preemption victims found for incoming pod.",
        ),
    ] {
        assert!(
            eventually(20, || message_of(name).iter().any(|m| m == want)),
            "{name}: {:?}\n{}",
            message_of(name),
            p.log("scheduler", "a")
        );
        let pending = get(&p, name).unwrap();
        assert_eq!(node_of(&pending), None);
        assert_eq!(
            pending.status.and_then(|s| s.nominated_node_name),
            None,
            "{name} was nominated"
        );
    }
    let holder = get(&p, "holder").unwrap();
    assert!(holder.metadata.deletion_timestamp.is_none());
    assert_eq!(node_of(&holder).as_deref(), Some("node-1"));
    assert!(events(&p, "Preempted").is_empty());
}

/// A pod of `app` with this affinity (podAffinity and/or podAntiAffinity).
fn affine(name: &str, app: &str, affinity: serde_json::Value) -> serde_json::Value {
    let mut v = pod(name, "100m", json!([]));
    v["metadata"]["namespace"] = json!("default");
    v["metadata"]["labels"] = json!({ "app": app });
    v["spec"]["affinity"] = affinity;
    v
}

fn app_term(app: &str) -> serde_json::Value {
    json!({"labelSelector": {"matchLabels": {"app": app}}, "topologyKey": "kubernetes.io/hostname"})
}

/// Where the live pods of `default` run, by name.
fn placement(p: &Plane) -> std::collections::BTreeMap<String, Option<String>> {
    live(&p.pods("default"))
        .into_iter()
        .map(|x| (x.metadata.name.clone().unwrap_or_default(), node_of(x)))
        .collect()
}

/// Workshop case "spread replicas over nodes": a Deployment of 3 whose pods refuse to share a
/// node takes one node each; a 4th replica has nowhere to go and says why in upstream's words.
/// Real kubectl scales it and shows the result (`get pods -o wide`, `describe pod`).
#[test]
fn required_anti_affinity_spreads_a_deployment_over_nodes_and_keeps_a_fourth_replica_pending() {
    let Some(kubectl) = require("kubectl") else {
        return;
    };
    let Some(p) = Plane::start() else { return };
    p.nodes(&["node-1", "node-2", "node-3"], "4", "8Gi", json!([]));
    p.kubelet();
    let _s = p.component("scheduler", "a", &["--leader-elect=false"]);
    let _cm = p.component(
        "controller-manager",
        "a",
        &["--leader-elect=false", "--node-monitor-grace-period=1h"],
    );
    let template = affine(
        "unused",
        "web",
        json!({"podAntiAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": [app_term("web")]}}),
    );
    p.apply_json(
        "/apis/apps/v1/namespaces/default/deployments",
        json!({
            "apiVersion": "apps/v1", "kind": "Deployment",
            "metadata": {"name": "web"},
            "spec": {"replicas": 3, "selector": {"matchLabels": {"app": "web"}},
                     "template": {"metadata": {"labels": {"app": "web"}}, "spec": template["spec"]}},
        }),
    );
    let bound = |p: &Plane| placement(p).values().flatten().cloned().collect::<Vec<_>>();
    assert!(
        eventually(60, || bound(&p).len() == 3),
        "{:?}\n{}",
        placement(&p),
        p.log("scheduler", "a")
    );
    let mut nodes = bound(&p);
    nodes.sort();
    assert_eq!(
        nodes,
        ["node-1", "node-2", "node-3"],
        "one replica per node"
    );
    let k = |args: &[&str]| p.cluster.kubectl_with(&kubectl, args);
    ok(k(&["scale", "deployment", "web", "--replicas=4"]));
    let want = "0/3 nodes are available: 3 node(s) didn't match pod anti-affinity rules. \
preemption: 0/3 nodes are available: 3 No preemption victims found for incoming pod.";
    assert_failed_scheduling(&p, 60, want);
    let pending: Vec<String> = placement(&p)
        .into_iter()
        .filter(|(_, n)| n.is_none())
        .map(|(name, _)| name)
        .collect();
    assert_eq!(pending.len(), 1, "{:?}", placement(&p));
    let wide = ok(k(&["get", "pods", "-o", "wide"]));
    let lines: Vec<&str> = wide.lines().filter(|l| l.starts_with("web-")).collect();
    assert_eq!(lines.len(), 4, "{wide}");
    for node in ["node-1", "node-2", "node-3"] {
        assert_eq!(
            lines.iter().filter(|l| l.contains(node)).count(),
            1,
            "{wide}"
        );
    }
    assert!(
        lines
            .iter()
            .any(|l| l.starts_with(&pending[0]) && l.contains("Pending") && l.contains("<none>")),
        "{wide}"
    );
    let described = ok(k(&["describe", "pod", &pending[0]]));
    assert!(described.contains("FailedScheduling"), "{described}");
    assert!(
        described.contains("3 node(s) didn't match pod anti-affinity rules"),
        "{described}"
    );
}

/// Workshop cases "put the cache next to the app" (required podAffinity) and "spread when
/// possible" (preferred podAntiAffinity, which gives way when every node is taken).
#[test]
fn required_affinity_joins_the_cache_and_preferred_anti_affinity_spreads_when_possible() {
    let Some(p) = Plane::start() else { return };
    p.nodes(&["node-1", "node-2", "node-3"], "4", "8Gi", json!([]));
    p.kubelet();
    let _s = p.component("scheduler", "a", &["--leader-elect=false"]);
    p.apply_json(
        "/api/v1/namespaces/default/pods",
        affine("cache", "cache", json!(null)),
    );
    assert!(eventually(30, || get(&p, "cache")
        .and_then(|x| node_of(&x))
        .is_some()));
    let cache_node = get(&p, "cache").and_then(|x| node_of(&x)).unwrap();
    let near = json!({"podAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": [app_term("cache")]}});
    for i in 0..3 {
        p.apply_json(
            "/api/v1/namespaces/default/pods",
            affine(&format!("app-{i}"), "app", near.clone()),
        );
    }
    assert!(
        eventually(30, || (0..3).all(|i| get(&p, &format!("app-{i}"))
            .and_then(|x| node_of(&x))
            .is_some())),
        "{:?}\n{}",
        placement(&p),
        p.log("scheduler", "a")
    );
    for i in 0..3 {
        let on = get(&p, &format!("app-{i}")).and_then(|x| node_of(&x));
        assert_eq!(on.as_deref(), Some(cache_node.as_str()), "app-{i}");
    }
    // Preferred anti-affinity: three spread pods find three nodes; a fourth still runs.
    let apart = json!({"podAntiAffinity": {"preferredDuringSchedulingIgnoredDuringExecution":
        [{"weight": 100, "podAffinityTerm": app_term("spread")}]}});
    for i in 0..4 {
        p.apply_json(
            "/api/v1/namespaces/default/pods",
            affine(&format!("spread-{i}"), "spread", apart.clone()),
        );
        let name = format!("spread-{i}");
        assert!(
            eventually(30, || get(&p, &name).and_then(|x| node_of(&x)).is_some()),
            "{name}: {:?}\n{}",
            placement(&p),
            p.log("scheduler", "a")
        );
    }
    let on: Vec<String> = (0..3)
        .filter_map(|i| get(&p, &format!("spread-{i}")).and_then(|x| node_of(&x)))
        .collect();
    let distinct: std::collections::BTreeSet<&String> = on.iter().collect();
    assert_eq!(distinct.len(), 3, "{on:?}");
}

/// The book's explained inter-pod affinity decision: a cache in zone-1, web pods that must
/// run in a zone with a cache, never two on one node, and would rather share the cache's node.
/// Four replicas are scheduled in turn; the fourth finds no room. In-process: the plugins are
/// pure.
#[test]
fn an_explained_inter_pod_affinity_decision() {
    use klab::scheduler::decide::{Nominated, Outcome, schedule};
    use klab::scheduler::node_info::{NodeInfo, PodRequests};
    use std::sync::Arc;

    let node = |name: &str, zone: &str| {
        let n: k8s_openapi::api::core::v1::Node = serde_json::from_value(json!({
            "metadata": {"name": name, "labels": {"kubernetes.io/hostname": name,
                                                  "topology.kubernetes.io/zone": zone}},
            "status": {"allocatable": {"cpu": "4", "memory": "8Gi", "pods": "110"}},
        }))
        .unwrap();
        NodeInfo::new(Arc::new(n))
    };
    let web_affinity = json!({
        "podAffinity": {
            "requiredDuringSchedulingIgnoredDuringExecution": [{
                "labelSelector": {"matchLabels": {"app": "cache"}},
                "topologyKey": "topology.kubernetes.io/zone"}],
            "preferredDuringSchedulingIgnoredDuringExecution": [
                {"weight": 50, "podAffinityTerm": app_term("cache")}],
        },
        "podAntiAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": [app_term("web")]},
    });
    let mut nodes = [
        node("node-a", "zone-1"),
        node("node-b", "zone-1"),
        node("node-c", "zone-1"),
        node("node-d", "zone-2"),
    ];
    let cache: Pod = serde_json::from_value(affine("cache", "cache", json!(null))).unwrap();
    nodes[1].add_pod("default/cache", &PodRequests::of(&cache));
    let mut text = Vec::new();
    for name in ["web-1", "web-2", "web-3", "web-4"] {
        let web: Pod = serde_json::from_value(affine(name, "web", web_affinity.clone())).unwrap();
        let refs: Vec<&NodeInfo> = nodes.iter().collect();
        let d = schedule(&web, &refs, &Nominated::new(), 0, true, &mut |_| 0);
        match d.outcome {
            Outcome::Fits { node } => {
                if name == "web-1" {
                    text.extend(d.explanation.lines(&format!("default/{name}")));
                }
                let n = nodes.iter_mut().find(|n| n.name() == node).unwrap();
                n.add_pod(&format!("default/{name}"), &PodRequests::of(&web));
            }
            Outcome::Unschedulable { message, .. } => {
                assert_eq!(name, "web-4", "{message}");
                text.extend(d.explanation.lines(&format!("default/{name}")));
                text.push(format!("FailedScheduling: {message}"));
            }
        }
    }
    assert!(text.last().unwrap().starts_with("FailedScheduling"));
    crate::snap!("scheduler_affinity_explain", text.join("\n"));
}
