//! events.k8s.io/v1 over core/v1's Event storage, proved with curl and kubectl against the real
//! API server: written through either API, read through both with upstream's field mapping.
//!
//! Mirrors upstream's Event conversion (`pkg/apis/events/v1`).

use serde_json::{Value, json};

use super::harness::{Backend, Cluster, ok};

const CORE: &str = "/api/v1/namespaces/default/events";
const V1: &str = "/apis/events.k8s.io/v1/namespaces/default/events";

fn parsed(got: (u16, String), code: u16) -> Value {
    assert_eq!(got.0, code, "{}", got.1);
    serde_json::from_str(&got.1).unwrap_or_else(|e| panic!("not JSON ({e}): {}", got.1))
}

#[test]
fn events_k8s_io_shares_core_events() {
    if super::require("curl").is_none() {
        return;
    }
    let Some(c) = Cluster::start(Backend::KlabStore, &[]) else {
        return;
    };
    let post = |path: &str, body: Value| {
        c.curl(
            Some("admin"),
            "POST",
            path,
            "application/json",
            Some(body.to_string().as_bytes()),
        )
    };
    let get = |path: &str| c.curl(Some("admin"), "GET", path, "", None);

    // Written as core/v1, read as events.k8s.io/v1.
    parsed(
        post(
            CORE,
            json!({"apiVersion": "v1", "kind": "Event",
                "metadata": {"name": "core-made"},
                "involvedObject": {"kind": "Pod", "name": "p", "namespace": "default"},
                "reason": "Started", "message": "from core", "type": "Normal",
                "count": 2, "source": {"component": "kubelet"}}),
        ),
        201,
    );
    let v1 = parsed(get(&format!("{V1}/core-made")), 200);
    assert_eq!(v1["apiVersion"], "events.k8s.io/v1");
    assert_eq!(v1["note"], "from core");
    assert_eq!(v1["regarding"]["name"], "p");
    assert_eq!(v1["deprecatedCount"], 2);
    assert_eq!(v1["deprecatedSource"]["component"], "kubelet");
    assert!(v1.get("message").is_none() && v1.get("involvedObject").is_none());

    // Written as events.k8s.io/v1, read as core/v1.
    let made = parsed(
        post(
            V1,
            json!({"apiVersion": "events.k8s.io/v1", "kind": "Event",
                "metadata": {"name": "v1-made"},
                "eventTime": "2026-01-01T00:00:00.000000Z",
                "reportingController": "klab.dev/test", "reportingInstance": "test-1",
                "action": "Testing", "reason": "Tested", "note": "from events.k8s.io",
                "regarding": {"kind": "Pod", "name": "p", "namespace": "default"},
                "type": "Normal"}),
        ),
        201,
    );
    assert_eq!(made["apiVersion"], "events.k8s.io/v1");
    assert_eq!(made["note"], "from events.k8s.io");
    let core = parsed(get(&format!("{CORE}/v1-made")), 200);
    assert_eq!(core["apiVersion"], "v1");
    assert_eq!(core["message"], "from events.k8s.io");
    assert_eq!(core["involvedObject"]["name"], "p");
    assert_eq!(core["reportingComponent"], "klab.dev/test");

    // A patch names events.k8s.io's fields; the stored object changes under core's names.
    let patched = parsed(
        c.curl(
            Some("admin"),
            "PATCH",
            &format!("{V1}/v1-made"),
            "application/merge-patch+json",
            Some(br#"{"note": "patched"}"#),
        ),
        200,
    );
    assert_eq!(patched["note"], "patched");
    assert_eq!(
        parsed(get(&format!("{CORE}/v1-made")), 200)["message"],
        "patched"
    );

    let list = parsed(get(V1), 200);
    assert_eq!(
        (&list["kind"], &list["apiVersion"]),
        (&json!("EventList"), &json!("events.k8s.io/v1"))
    );
    let notes: Vec<&str> = list["items"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|i| i["note"].as_str())
        .collect();
    assert_eq!(notes, ["from core", "patched"]);

    // A bounded watch from the start lists both as events.k8s.io/v1 objects.
    let (code, stream) = get(&format!("{V1}?watch=1&timeoutSeconds=1"));
    assert_eq!(code, 200, "{stream}");
    let events: Vec<Value> = stream
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(events.len(), 2, "{stream}");
    for e in &events {
        assert_eq!(e["object"]["apiVersion"], "events.k8s.io/v1", "{stream}");
        assert!(e["object"]["note"].is_string(), "{stream}");
    }

    if let Some(k) = super::require("kubectl") {
        let names = ok(c.kubectl_with(
            &k,
            &[
                "get",
                "events.v1.events.k8s.io",
                "-o",
                "jsonpath={.items[*].note}",
            ],
        ));
        assert_eq!(names, "from core patched");
        let table = ok(c.kubectl_with(&k, &["get", "events.events.k8s.io"]));
        assert!(
            table.contains("Tested") && table.contains("pod/p"),
            "{table}"
        );
    }
}
