//! The namespace controller against a real API server, driven by real kubectl: `kubectl delete
//! namespace` waits until the controller has emptied the namespace; without the controller a
//! namespace stays Terminating with its content; a finalizer on a pod holds it in
//! NamespaceFinalizersRemaining; a controller-manager restarted mid-way finishes the job.

use serde_json::Value;

use crate::apiserver::harness::{ok, text};
use crate::require;
use crate::sim::{Plane, eventually};

fn cm_args() -> Vec<&'static str> {
    vec!["--leader-elect=false", "--node-monitor-grace-period=1h"]
}

/// The namespace as `kubectl get ns NAME -o json` shows it, or `None` once it is gone.
fn namespace(p: &Plane, kubectl: &std::path::Path, name: &str) -> Option<Value> {
    let out = p
        .cluster
        .kubectl_with(kubectl, &["get", "namespace", name, "-o", "json"]);
    if !out.status.success() {
        assert!(text(&out).contains("NotFound"), "{}", text(&out));
        return None;
    }
    serde_json::from_slice(&out.stdout).ok()
}

/// A condition's (status, reason, message).
fn condition(ns: &Value, ty: &str) -> Option<(String, String, String)> {
    let c = ns
        .pointer("/status/conditions")?
        .as_array()?
        .iter()
        .find(|c| c["type"] == ty)?;
    let s = |k: &str| c[k].as_str().unwrap_or_default().to_owned();
    Some((s("status"), s("reason"), s("message")))
}

/// The `spec:` and `status:` part of `kubectl get ns -o yaml`, transition times masked, for
/// the book's example.
fn spec_and_status(yaml: &str) -> String {
    let mut out = String::new();
    for line in yaml.lines().skip_while(|l| !l.starts_with("spec:")) {
        match line.split_once("lastTransitionTime: ") {
            Some((indent, _)) => out.push_str(&format!("{indent}lastTransitionTime: \"…\"")),
            None => out.push_str(line),
        }
        out.push('\n');
    }
    out
}

#[test]
fn kubectl_delete_namespace_waits_while_the_controller_empties_it() {
    let Some(kubectl) = require("kubectl") else {
        return;
    };
    let Some(p) = Plane::start() else { return };
    p.nodes(&["node-1", "node-2"], "4", "8Gi", serde_json::json!([]));
    p.kubelet();
    let _s = p.component("scheduler", "a", &["--leader-elect=false"]);
    let _cm = p.component("controller-manager", "a", &cm_args());
    let k = |args: &[&str]| p.cluster.kubectl_with(&kubectl, args);
    ok(k(&["create", "namespace", "shop"]));
    ok(k(&[
        "create",
        "deployment",
        "web",
        "--image=nginx:1.25",
        "--replicas=2",
        "-n",
        "shop",
    ]));
    ok(k(&["run", "solo", "--image=busybox", "-n", "shop"]));
    ok(k(&[
        "create",
        "configmap",
        "c1",
        "--from-literal=a=1",
        "-n",
        "shop",
    ]));
    ok(k(&[
        "create",
        "configmap",
        "c2",
        "--from-literal=b=2",
        "-n",
        "shop",
    ]));
    ok(k(&[
        "create",
        "service",
        "clusterip",
        "web",
        "--tcp=80:80",
        "-n",
        "shop",
    ]));
    ok(k(&[
        "rollout",
        "status",
        "deployment/web",
        "-n",
        "shop",
        "--timeout=90s",
    ]));
    // kubectl's default --wait: it returns once the namespace is gone.
    let out = k(&["delete", "namespace", "shop", "--timeout=120s"]);
    assert!(
        out.status.success(),
        "{}\n{}",
        text(&out),
        p.log("controller-manager", "a")
    );
    assert!(namespace(&p, &kubectl, "shop").is_none());
    // The other controllers met the refusals of a terminating namespace, and kept quiet.
    let log = p.log("controller-manager", "a");
    assert!(!log.contains("because it is being terminated"), "{log}");
    for kind in [
        "pods",
        "deployments",
        "replicasets",
        "configmaps",
        "services",
    ] {
        let left = ok(k(&["get", kind, "-n", "shop", "-o", "name"]));
        assert!(left.trim().is_empty(), "{kind} left: {left}");
    }
}

#[test]
fn a_terminating_namespace_waits_for_the_controller_and_for_finalizers() {
    let Some(kubectl) = require("kubectl") else {
        return;
    };
    let Some(p) = Plane::start() else { return };
    let k = |args: &[&str]| p.cluster.kubectl_with(&kubectl, args);
    ok(k(&["create", "namespace", "keep"]));
    ok(k(&[
        "create",
        "configmap",
        "c1",
        "--from-literal=a=1",
        "-n",
        "keep",
    ]));
    ok(k(&[
        "run",
        "held",
        "--image=busybox",
        "-n",
        "keep",
        "--overrides",
        r#"{"metadata": {"finalizers": ["example.com/hold"]}}"#,
    ]));
    let ns = namespace(&p, &kubectl, "keep").unwrap();
    assert_eq!(ns["spec"]["finalizers"], serde_json::json!(["kubernetes"]));

    // No controller-manager: the API server only marks the namespace.
    ok(k(&["delete", "namespace", "keep", "--wait=false"]));
    let ns = namespace(&p, &kubectl, "keep").unwrap();
    assert_eq!(ns["status"]["phase"], "Terminating");
    assert!(ns.pointer("/metadata/deletionTimestamp").is_some());
    let refused = k(&["create", "configmap", "late", "-n", "keep"]);
    assert!(
        text(&refused).contains(
            "forbidden: unable to create new content in namespace keep because it is being terminated"
        ),
        "{}",
        text(&refused)
    );
    let (code, answer) = p.cluster.curl(
        Some("admin"),
        "POST",
        "/api/v1/namespaces/keep/configmaps",
        "application/json",
        Some(br#"{"metadata": {"name": "late"}}"#),
    );
    let status: Value = serde_json::from_str(&answer).unwrap();
    assert_eq!(code, 403, "{answer}");
    assert_eq!(
        status["details"]["causes"][0]["reason"], "NamespaceTerminating",
        "controllers recognise the refusal by its cause: {answer}"
    );
    // Only the namespace controller may release a namespace.
    let body = serde_json::to_vec(&serde_json::json!({
        "apiVersion": "v1", "kind": "Namespace",
        "metadata": {"name": "keep"}, "spec": {"finalizers": []},
    }))
    .unwrap();
    let (code, answer) = p.cluster.curl(
        Some("alice"),
        "PUT",
        "/api/v1/namespaces/keep/finalize",
        "application/json",
        Some(&body),
    );
    assert_eq!(code, 403, "{answer}");
    assert!(
        answer.contains("cannot update resource \\\"namespaces/finalize\\\""),
        "{answer}"
    );
    assert!(ok(k(&["get", "configmaps", "-n", "keep", "-o", "name"])).contains("c1"));

    // The controller empties what it can and says what holds the namespace.
    let cm = p.component(
        "controller-manager",
        "a",
        &["--controllers=namespace", "--leader-elect=false"],
    );
    let holding =
        |ns: &Value| condition(ns, "NamespaceFinalizersRemaining").is_some_and(|c| c.0 == "True");
    assert!(
        eventually(60, || namespace(&p, &kubectl, "keep")
            .is_some_and(|ns| holding(&ns))),
        "{}",
        p.log("controller-manager", "a")
    );
    let yaml = ok(k(&["get", "namespace", "keep", "-o", "yaml"]));
    crate::snap!("namespace_terminating", spec_and_status(&yaml));
    let ns = namespace(&p, &kubectl, "keep").unwrap();
    assert_eq!(
        condition(&ns, "NamespaceFinalizersRemaining").unwrap(),
        (
            "True".into(),
            "SomeFinalizersRemain".into(),
            "Some content in the namespace has finalizers remaining: example.com/hold in 1 resource instances".into()
        ),
        "{yaml}"
    );
    assert_eq!(
        condition(&ns, "NamespaceContentRemaining").unwrap(),
        (
            "True".into(),
            "SomeResourcesRemain".into(),
            "Some resources are remaining: pods. has 1 resource instances".into()
        ),
        "{yaml}"
    );
    assert_eq!(
        condition(&ns, "NamespaceDeletionDiscoveryFailure")
            .unwrap()
            .1,
        "ResourcesDiscovered"
    );
    assert!(
        ok(k(&["get", "configmaps", "-n", "keep", "-o", "name"]))
            .trim()
            .is_empty()
    );
    let held = ok(k(&["get", "pod", "held", "-n", "keep", "-o", "json"]));
    assert!(held.contains("deletionTimestamp"), "{held}");

    // Stopped mid-way: the finalizer goes, the pod with it, but nobody releases the namespace.
    drop(cm);
    ok(k(&[
        "patch",
        "pod",
        "held",
        "-n",
        "keep",
        "--type=merge",
        "-p",
        r#"{"metadata": {"finalizers": null}}"#,
    ]));
    assert!(
        ok(k(&["get", "pods", "-n", "keep", "-o", "name"]))
            .trim()
            .is_empty()
    );
    let ns = namespace(&p, &kubectl, "keep").unwrap();
    assert_eq!(ns["status"]["phase"], "Terminating");
    assert!(holding(&ns), "the stopped controller updated nothing: {ns}");

    // A new controller-manager starts from what the API shows and finishes.
    let _cm = p.component(
        "controller-manager",
        "b",
        &["--controllers=namespace", "--leader-elect=false"],
    );
    let out = k(&["wait", "--for=delete", "namespace/keep", "--timeout=60s"]);
    assert!(
        out.status.success() || text(&out).contains("NotFound"),
        "{}\n{}",
        text(&out),
        p.log("controller-manager", "b")
    );
    assert!(namespace(&p, &kubectl, "keep").is_none());
    assert!(
        p.log("controller-manager", "b")
            .contains("Caches are synced for namespace")
    );
}
