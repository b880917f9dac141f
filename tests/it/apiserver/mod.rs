//! kube-apiserver tested from the outside: real etcd and klab-store underneath, real kubectl and
//! curl on top, a PKI made for each test.
//!
//! Mirrors upstream's `test/integration/apiserver` and kubectl's `test/cmd` in spirit. Tests that
//! need `etcd`, `kubectl` or `curl` fail when they are missing and `CI` is set; elsewhere they
//! skip with a printed reason.

mod events;
pub mod harness;
mod openapi;
mod podproxy;

use std::io::Read;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use harness::{Backend, Cluster, ok, require, text};
use serde_json::Value;

/// Every kubectl on PATH (`kubectl`, and versioned `kubectl.1.NN` where the image has them),
/// plus those listed in `$KLAB_KUBECTLS` (colon-separated paths, e.g. Debian's 1.20).
fn kubectls() -> Vec<PathBuf> {
    let Some(main) = require("kubectl") else {
        return vec![];
    };
    let mut out = vec![main];
    if let Some(extra) = std::env::var_os("KLAB_KUBECTLS") {
        out.extend(std::env::split_paths(&extra).filter(|p| p.is_file()));
    }
    for dir in std::env::split_paths(&std::env::var_os("PATH").unwrap_or_default()) {
        let Ok(entries) = std::fs::read_dir(&dir) else {
            continue;
        };
        for e in entries.flatten() {
            let name = e.file_name().to_string_lossy().into_owned();
            if name.starts_with("kubectl.1.")
                && !out
                    .iter()
                    .any(|p| p.file_name() == Some(e.file_name().as_os_str()))
            {
                out.push(e.path());
            }
        }
    }
    out
}

/// kubectl's client minor version (`32` for 1.32).
fn kubectl_minor(k: &std::path::Path) -> u32 {
    let out = Command::new(k)
        .args(["version", "--client", "-o", "json"])
        .output()
        .unwrap();
    let v: Value = serde_json::from_slice(&out.stdout).unwrap_or_else(|_| panic!("{}", text(&out)));
    let minor = v["clientVersion"]["minor"].as_str().unwrap_or("0");
    minor.trim_end_matches('+').parse().unwrap_or(0)
}

/// The kubectl workshop scenario, with and without a namespace.
fn kubectl_scenario(c: &Cluster, k: &std::path::Path) {
    let kc = |args: &[&str]| c.kubectl_with(k, args);
    let minor = kubectl_minor(k);
    let ns = ok(kc(&["get", "namespaces"]));
    for want in [
        "default",
        "kube-system",
        "kube-public",
        "kube-node-lease",
        "STATUS",
        "Active",
    ] {
        assert!(ns.contains(want), "{ns}");
    }
    ok(kc(&["create", "namespace", "team-a"]));
    ok(kc(&[
        "create",
        "deployment",
        "web",
        "--image=nginx:1.25",
        "-n",
        "team-a",
        "--port=80",
    ]));
    let deploy = ok(kc(&["get", "deploy", "-n", "team-a"]));
    assert!(
        deploy.contains("READY") && deploy.contains("UP-TO-DATE") && deploy.contains("web"),
        "{deploy}"
    );
    ok(kc(&[
        "scale",
        "deployment",
        "web",
        "-n",
        "team-a",
        "--replicas=3",
    ]));
    let replicas = ok(kc(&[
        "get",
        "deploy",
        "web",
        "-n",
        "team-a",
        "-o",
        "jsonpath={.spec.replicas}/{.metadata.generation}",
    ]));
    assert_eq!(replicas, "3/2");

    ok(kc(&[
        "run",
        "p1",
        "--image=busybox",
        "-n",
        "team-a",
        "-l",
        "app=p",
    ]));
    ok(kc(&["run", "p0", "--image=busybox"]));
    let pods = ok(kc(&["get", "pods", "-n", "team-a", "-o", "wide"]));
    for want in [
        "READY",
        "STATUS",
        "RESTARTS",
        "NOMINATED NODE",
        "p1",
        "Pending",
    ] {
        assert!(pods.contains(want), "{pods}");
    }
    assert!(
        ok(kc(&["get", "pods"])).contains("p0"),
        "the default namespace"
    );
    assert!(ok(kc(&["get", "pods", "-A"])).contains("team-a"));
    ok(kc(&["label", "pod", "p1", "-n", "team-a", "tier=front"]));
    let selected = ok(kc(&[
        "get",
        "pods",
        "-n",
        "team-a",
        "-l",
        "tier in (front,back),app=p",
        "-o",
        "name",
    ]));
    assert_eq!(selected.trim(), "pod/p1");
    assert!(
        ok(kc(&[
            "get",
            "pods",
            "-n",
            "team-a",
            "-l",
            "tier=back",
            "-o",
            "name"
        ]))
        .trim()
        .is_empty()
    );

    let manifest = c.dir.path().join("cm.yaml");
    std::fs::write(&manifest, "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: applied\n  namespace: team-a\ndata:\n  k: one\n").unwrap();
    assert!(ok(kc(&["apply", "-f", manifest.to_str().unwrap()])).contains("created"));
    std::fs::write(&manifest, "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: applied\n  namespace: team-a\ndata:\n  k: two\n").unwrap();
    assert!(ok(kc(&["apply", "-f", manifest.to_str().unwrap()])).contains("configured"));
    assert_eq!(
        ok(kc(&[
            "get",
            "cm",
            "applied",
            "-n",
            "team-a",
            "-o",
            "jsonpath={.data.k}"
        ])),
        "two"
    );
    ok(kc(&[
        "create",
        "job",
        "once",
        "--image=busybox",
        "-n",
        "team-a",
        "--",
        "true",
    ]));
    let job_selector = ok(kc(&[
        "get",
        "job",
        "once",
        "-n",
        "team-a",
        "-o",
        "jsonpath={.spec.selector.matchLabels}",
    ]));
    assert!(
        job_selector.contains("batch.kubernetes.io/controller-uid"),
        "{job_selector}"
    );
    let all = ok(kc(&["get", "all", "-n", "team-a"]));
    assert!(
        all.contains("pod/p1")
            && all.contains("deployment.apps/web")
            && all.contains("job.batch/once"),
        "{all}"
    );

    let resources = ok(kc(&["api-resources"]));
    for want in [
        "deploy",
        "po",
        "svc",
        "rbac.authorization.k8s.io/v1",
        "leases",
    ] {
        assert!(resources.contains(want), "{resources}");
    }
    if minor >= 28 {
        let whoami = ok(kc(&["auth", "whoami"]));
        assert!(
            whoami.contains("admin") && whoami.contains("system:masters"),
            "{whoami}"
        );
    }
    assert_eq!(ok(kc(&["auth", "can-i", "create", "pods"])).trim(), "yes");
    let denied = kc(&["--context", "alice", "auth", "can-i", "create", "pods"]);
    assert_eq!(String::from_utf8_lossy(&denied.stdout).trim(), "no");
    // Impersonation needs the impersonate verb; admin has it, alice does not.
    let as_alice = kc(&["auth", "can-i", "create", "pods", "--as=alice"]);
    assert_eq!(String::from_utf8_lossy(&as_alice.stdout).trim(), "no");
    let escalate = kc(&["--context", "alice", "get", "pods", "--as=admin"]);
    assert!(
        text(&escalate).contains("cannot impersonate resource \"users\""),
        "{}",
        text(&escalate)
    );
    let list = ok(kc(&["--context", "alice", "auth", "can-i", "--list"]));
    assert!(
        list.contains("selfsubjectaccessreviews.authorization.k8s.io"),
        "{list}"
    );
    let forbidden = kc(&["--context", "alice", "get", "pods", "-n", "team-a"]);
    assert!(
        text(&forbidden).contains("User \"alice\" cannot list resource \"pods\""),
        "{}",
        text(&forbidden)
    );
    ok(kc(&[
        "create",
        "role",
        "pod-reader",
        "--verb=get,list,watch",
        "--resource=pods",
        "-n",
        "team-a",
    ]));
    ok(kc(&[
        "create",
        "rolebinding",
        "alice-reads",
        "--role=pod-reader",
        "--user=alice",
        "-n",
        "team-a",
    ]));
    assert!(ok(kc(&["--context", "alice", "get", "pods", "-n", "team-a"])).contains("p1"));
    assert_eq!(
        ok(kc(&[
            "--context",
            "alice",
            "auth",
            "can-i",
            "list",
            "pods",
            "-n",
            "team-a"
        ]))
        .trim(),
        "yes"
    );

    // `get -w`, bounded: the watch must show a pod created after it started.
    let mut watch = Command::new(k)
        .env("KUBECONFIG", &c.kubeconfig)
        .args(["get", "pods", "-n", "team-a", "-w", "--request-timeout=60s"])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut stdout = watch.stdout.take().unwrap();
    let reader = std::thread::spawn(move || {
        let mut seen = String::new();
        let mut buf = [0u8; 4096];
        let deadline = Instant::now() + Duration::from_secs(60);
        while !seen.contains("watched") && Instant::now() < deadline {
            match stdout.read(&mut buf) {
                Ok(0) | Err(_) => break,
                Ok(n) => seen.push_str(&String::from_utf8_lossy(&buf[..n])),
            }
        }
        seen
    });
    // The watch lists first (p1 appears), then the new pod arrives as an event.
    std::thread::sleep(Duration::from_millis(500));
    ok(kc(&["run", "watched", "--image=busybox", "-n", "team-a"]));
    let seen = reader.join().unwrap();
    let _ = watch.kill();
    let _ = watch.wait();
    assert!(seen.contains("p1") && seen.contains("watched"), "{seen}");

    ok(kc(&["delete", "pod", "p0"]));
    assert!(text(&kc(&["get", "pod", "p0"])).contains("NotFound"));
    // The API server only marks the namespace Terminating; kube-controller-manager's
    // namespace controller empties it and releases it, and `kubectl delete` waits for that.
    let _cm = c.component(
        "controller-manager",
        &format!("ns-{}", k.file_name().unwrap_or_default().to_string_lossy()),
        &["--controllers=namespace", "--leader-elect=false"],
    );
    ok(kc(&["delete", "namespace", "team-a", "--timeout=120s"]));
    let gone = ok(kc(&["get", "namespaces", "-o", "name"]));
    assert!(!gone.contains("team-a"), "{gone}");
}

fn run_kubectl_suite(backend: Backend) {
    let ks = kubectls();
    if ks.is_empty() {
        return;
    }
    for k in ks {
        let Some(c) = Cluster::start(backend, &[]) else {
            return;
        };
        eprintln!("kubectl scenario with {} on {backend:?}", k.display());
        kubectl_scenario(&c, &k);
    }
}

#[test]
fn kubectl_on_real_etcd() {
    run_kubectl_suite(Backend::Etcd);
}

#[test]
fn kubectl_on_klab_store() {
    run_kubectl_suite(Backend::KlabStore);
}

fn status(body: &str) -> Value {
    serde_json::from_str(body).unwrap_or_else(|e| panic!("not JSON ({e}): {body}"))
}

/// Asserts an upstream-style Status: code, reason, compact JSON with `kind` first.
fn assert_status(got: (u16, String), code: u16, reason: &str) -> Value {
    let (c, body) = got;
    assert_eq!(c, code, "{body}");
    assert!(
        body.starts_with("{\"kind\":\"Status\",\"apiVersion\":\"v1\""),
        "{body}"
    );
    let s = status(&body);
    assert_eq!(s["reason"], reason, "{body}");
    assert_eq!(s["code"], code);
    s
}

#[test]
fn bad_input_is_refused_with_upstream_status_and_nothing_stored() {
    if require("curl").is_none() {
        return;
    }
    let Some(c) = Cluster::start(Backend::KlabStore, &[]) else {
        return;
    };
    let cms = "/api/v1/namespaces/default/configmaps";
    let admin = Some("admin");
    let json = "application/json";

    assert_status(
        c.curl(
            admin,
            "POST",
            cms,
            json,
            Some(b"{\"metadata\": {\"name\": "),
        ),
        400,
        "BadRequest",
    );
    assert_status(
        c.curl(
            admin,
            "POST",
            cms,
            "application/yaml",
            Some(b"metadata: [\n"),
        ),
        400,
        "BadRequest",
    );
    let s = assert_status(
        c.curl(
            admin,
            "POST",
            cms,
            json,
            Some(br#"{"metadata":{"name":"Bad_Name"}}"#),
        ),
        422,
        "Invalid",
    );
    assert_eq!(s["details"]["causes"][0]["field"], "metadata.name");
    assert_status(
        c.curl(
            admin,
            "POST",
            cms,
            json,
            Some(br#"{"kind":"Secret","apiVersion":"v1","metadata":{"name":"k"}}"#),
        ),
        400,
        "BadRequest",
    );
    let s = assert_status(
        c.curl(
            admin,
            "POST",
            cms,
            json,
            Some(br#"{"metadata":{"name":"l","labels":{"bad key":"v"}}}"#),
        ),
        422,
        "Invalid",
    );
    assert_eq!(s["details"]["causes"][0]["field"], "metadata.labels");
    let s = assert_status(
        c.curl(
            admin,
            "POST",
            "/api/v1/namespaces/default/pods",
            json,
            Some(br#"{"metadata":{"name":"noimage"},"spec":{"containers":[{"name":"c"}]}}"#),
        ),
        422,
        "Invalid",
    );
    assert_eq!(
        s["details"]["causes"][0]["field"],
        "spec.containers[0].image"
    );
    assert_status(
        c.curl(admin, "POST", cms, json, Some(br#"{"metadata":{}}"#)),
        422,
        "Invalid",
    );
    assert_status(
        c.curl(
            admin,
            "POST",
            "/api/v1/namespaces/nowhere/configmaps",
            json,
            Some(br#"{"metadata":{"name":"x"}}"#),
        ),
        404,
        "NotFound",
    );
    assert_status(
        c.curl(
            admin,
            "GET",
            "/api/v1/namespaces/default/widgets",
            json,
            None,
        ),
        404,
        "NotFound",
    );
    assert_status(
        c.curl(admin, "POST", cms, "text/plain", Some(b"hello")),
        415,
        "UnsupportedMediaType",
    );
    let big = format!(
        "{{\"metadata\":{{\"name\":\"big\"}},\"data\":{{\"a\":\"{}\"}}}}",
        "x".repeat(4 << 20)
    );
    assert_status(
        c.curl(admin, "POST", cms, json, Some(big.as_bytes())),
        413,
        "RequestEntityTooLarge",
    );
    for name in ["Bad_Name", "x", "k", "big", "l"] {
        assert_status(
            c.curl(admin, "GET", &format!("{cms}/{name}"), json, None),
            404,
            "NotFound",
        );
    }

    // Optimistic concurrency: a stale resourceVersion is a 409 and leaves the object alone.
    let (code, body) = c.curl(
        admin,
        "POST",
        cms,
        json,
        Some(br#"{"metadata":{"name":"cc"},"data":{"v":"1"}}"#),
    );
    assert_eq!(code, 201, "{body}");
    let created = status(&body);
    let rv = created["metadata"]["resourceVersion"]
        .as_str()
        .unwrap()
        .to_owned();
    let update = |v: &str| {
        format!(r#"{{"metadata":{{"name":"cc","resourceVersion":"{rv}"}},"data":{{"v":"{v}"}}}}"#)
    };
    assert_eq!(
        c.curl(
            admin,
            "PUT",
            &format!("{cms}/cc"),
            json,
            Some(update("2").as_bytes())
        )
        .0,
        200
    );
    assert_status(
        c.curl(
            admin,
            "PUT",
            &format!("{cms}/cc"),
            json,
            Some(update("3").as_bytes()),
        ),
        409,
        "Conflict",
    );
    let (_, now) = c.curl(admin, "GET", &format!("{cms}/cc"), json, None);
    assert_eq!(status(&now)["data"]["v"], "2");
    assert_status(
        c.curl(
            admin,
            "POST",
            cms,
            json,
            Some(br#"{"metadata":{"name":"cc"}}"#),
        ),
        409,
        "AlreadyExists",
    );

    // Authentication and authorization.
    assert_status(c.curl(None, "GET", cms, json, None), 401, "Unauthorized");
    assert_status(
        c.curl(Some("stranger"), "GET", cms, json, None),
        401,
        "Unauthorized",
    );
    let s = assert_status(
        c.curl(
            Some("alice"),
            "POST",
            cms,
            json,
            Some(br#"{"metadata":{"name":"sneaky"}}"#),
        ),
        403,
        "Forbidden",
    );
    assert!(
        s["message"]
            .as_str()
            .unwrap()
            .contains("User \"alice\" cannot create resource \"configmaps\"")
    );
    assert_status(
        c.curl(admin, "GET", &format!("{cms}/sneaky"), json, None),
        404,
        "NotFound",
    );
    // Every request is logged with verb, path, user, status and latency.
    let log = std::fs::read_to_string(&c.log).unwrap();
    assert!(
        log.contains("verb=\"CREATE\"")
            && log.contains("user=\"alice\"")
            && log.contains("resp=403"),
        "{log}"
    );
}

#[test]
fn lists_page_and_select() {
    if require("curl").is_none() {
        return;
    }
    let Some(c) = Cluster::start(Backend::KlabStore, &[]) else {
        return;
    };
    let cms = "/api/v1/namespaces/default/configmaps";
    for i in 0..7 {
        let body = format!(
            r#"{{"metadata":{{"name":"cm-{i}","labels":{{"parity":"{}"}}}}}}"#,
            if i % 2 == 0 { "even" } else { "odd" }
        );
        assert_eq!(
            c.curl(
                Some("admin"),
                "POST",
                cms,
                "application/json",
                Some(body.as_bytes())
            )
            .0,
            201
        );
    }
    let mut names = Vec::new();
    let mut cont = String::new();
    loop {
        let (code, body) = c.curl(
            Some("admin"),
            "GET",
            &format!("{cms}?limit=3&continue={cont}"),
            "",
            None,
        );
        assert_eq!(code, 200, "{body}");
        let l = status(&body);
        names.extend(
            l["items"]
                .as_array()
                .unwrap()
                .iter()
                .map(|i| i["metadata"]["name"].as_str().unwrap().to_owned()),
        );
        match l["metadata"]["continue"].as_str() {
            Some(t) => {
                cont = t
                    .replace('=', "%3D")
                    .replace('+', "%2B")
                    .replace('/', "%2F")
            }
            None => break,
        }
    }
    assert_eq!(names, (0..7).map(|i| format!("cm-{i}")).collect::<Vec<_>>());
    let (_, body) = c.curl(
        Some("admin"),
        "GET",
        &format!("{cms}?labelSelector=parity%3Dodd&limit=2"),
        "",
        None,
    );
    let l = status(&body);
    assert_eq!(l["items"].as_array().unwrap().len(), 2);
    assert!(l["metadata"]["continue"].is_string());
    let (_, body) = c.curl(
        Some("admin"),
        "GET",
        &format!("{cms}?fieldSelector=metadata.name%3Dcm-4"),
        "",
        None,
    );
    assert_eq!(status(&body)["items"].as_array().unwrap().len(), 1);
    assert_status(
        c.curl(
            Some("admin"),
            "GET",
            &format!("{cms}?fieldSelector=spec.nodeName%3Dx"),
            "",
            None,
        ),
        400,
        "BadRequest",
    );
    assert_status(
        c.curl(
            Some("admin"),
            "GET",
            &format!("{cms}?labelSelector=a%20in%20b"),
            "",
            None,
        ),
        400,
        "BadRequest",
    );
}

/// Watch resumes after a resourceVersion, and a compacted one ends with 410 Expired.
#[test]
fn watch_resumes_and_expires_after_compaction() {
    if require("curl").is_none() {
        return;
    }
    let Some(c) = Cluster::start(Backend::Etcd, &[]) else {
        return;
    };
    let cms = "/api/v1/namespaces/default/configmaps";
    let (_, body) = c.curl(
        Some("admin"),
        "POST",
        cms,
        "application/json",
        Some(br#"{"metadata":{"name":"w"}}"#),
    );
    let rv: i64 = status(&body)["metadata"]["resourceVersion"]
        .as_str()
        .unwrap()
        .parse()
        .unwrap();
    let patch = br#"{"data":{"k":"v"}}"#;
    assert_eq!(
        c.curl(
            Some("admin"),
            "PATCH",
            &format!("{cms}/w"),
            "application/merge-patch+json",
            Some(patch)
        )
        .0,
        200
    );
    let (code, body) = c.curl(
        Some("admin"),
        "GET",
        &format!("{cms}?watch=1&resourceVersion={rv}&timeoutSeconds=1"),
        "",
        None,
    );
    assert_eq!(code, 200);
    let first: Value = serde_json::from_str(body.lines().next().unwrap()).unwrap();
    assert_eq!(first["type"], "MODIFIED");
    assert_eq!(first["object"]["data"]["k"], "v");

    // sendInitialEvents: the current objects, then the initial-events-end bookmark.
    let (_, body) = c.curl(Some("admin"), "GET", &format!("{cms}?watch=1&sendInitialEvents=true&resourceVersionMatch=NotOlderThan&allowWatchBookmarks=true&timeoutSeconds=1"), "", None);
    let events: Vec<Value> = body
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(events[0]["type"], "ADDED");
    assert_eq!(events[1]["type"], "BOOKMARK");
    assert_eq!(
        events[1]["object"]["metadata"]["annotations"]["k8s.io/initial-events-end"],
        "true"
    );
    assert_status(
        c.curl(
            Some("admin"),
            "GET",
            &format!("{cms}?watch=1&sendInitialEvents=true"),
            "",
            None,
        ),
        422,
        "Invalid",
    );

    // One more write, so that compacting at the newest revision covers the resume point.
    let (code, _) = c.curl(
        Some("admin"),
        "POST",
        cms,
        "application/json",
        Some(br#"{"metadata":{"name":"w2"}}"#),
    );
    assert_eq!(code, 201);
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let mut client = etcd_client::Client::connect([c.etcd_endpoint.as_str()], None)
            .await
            .unwrap();
        let now = client
            .get("/registry", None)
            .await
            .unwrap()
            .header()
            .unwrap()
            .revision();
        client.compact(now, None).await.unwrap();
    });
    let (code, body) = c.curl(
        Some("admin"),
        "GET",
        &format!("{cms}?watch=1&resourceVersion={rv}&timeoutSeconds=2"),
        "",
        None,
    );
    assert_eq!(code, 200);
    let ev: Value = serde_json::from_str(body.lines().next().unwrap_or("{}")).unwrap();
    assert_eq!(ev["type"], "ERROR", "{body}");
    assert_eq!(ev["object"]["code"], 410);
    assert_eq!(ev["object"]["reason"], "Expired");
}

#[test]
fn tokens_anonymous_and_insecure_port() {
    if require("curl").is_none() || require("kubectl").is_none() {
        return;
    }
    let insecure = harness::free_port();
    let flag = format!("--insecure-port={insecure}");
    let Some(c) = Cluster::start(Backend::KlabStore, &["--anonymous-auth=true", &flag]) else {
        return;
    };
    // A static token from --token-auth-file.
    let out = c.kubectl_token("s3cret", &["auth", "whoami", "-o", "json"]);
    let who: Value =
        serde_json::from_slice(&out.stdout).unwrap_or_else(|_| panic!("{}", text(&out)));
    assert_eq!(who["status"]["userInfo"]["username"], "tina");
    assert!(
        who["status"]["userInfo"]["groups"]
            .as_array()
            .unwrap()
            .contains(&"ops".into())
    );
    // Anonymous (allowed here): public info yes, resources no.
    assert_eq!(c.curl(None, "GET", "/version", "", None).0, 200);
    assert_eq!(
        c.curl(None, "GET", "/readyz?verbose", "", None)
            .1
            .lines()
            .last(),
        Some("readyz check passed")
    );
    let s = assert_status(
        c.curl(None, "GET", "/api/v1/namespaces/default/pods", "", None),
        403,
        "Forbidden",
    );
    assert!(s["message"].as_str().unwrap().contains("system:anonymous"));
    // The legacy insecure port: plain HTTP, loopback, no authentication.
    let out = Command::new("curl")
        .args([
            "-sS",
            &format!("http://127.0.0.1:{insecure}/api/v1/namespaces"),
        ])
        .output()
        .unwrap();
    assert!(String::from_utf8_lossy(&out.stdout).contains("NamespaceList"));
    assert!(
        std::fs::read_to_string(&c.log)
            .unwrap()
            .contains("NO authentication")
    );
}

/// The Python `kubernetes` client: `$KLAB_PYTHON` (default `python3`) must import it.
#[test]
fn python_client() {
    let python = std::env::var("KLAB_PYTHON").unwrap_or_else(|_| "python3".into());
    let has_client = Command::new(&python)
        .args(["-c", "import kubernetes"])
        .output()
        .is_ok_and(|o| o.status.success());
    if !has_client {
        assert!(
            std::env::var_os("CI").is_none(),
            "{python} cannot import kubernetes under CI (pip install kubernetes, set KLAB_PYTHON)"
        );
        eprintln!(
            "skipping: {python} cannot import kubernetes (set KLAB_PYTHON to a venv's python)"
        );
        return;
    }
    let Some(c) = Cluster::start(Backend::KlabStore, &[]) else {
        return;
    };
    let script = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/it/apiserver/python_client.py"
    );
    let out = Command::new(&python)
        .arg(script)
        .arg(&c.kubeconfig)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", text(&out));
    assert!(String::from_utf8_lossy(&out.stdout).contains("python client ok"));
}

/// Eviction honours a PodDisruptionBudget; pods/log and exec of a pod on no node say why not.
#[test]
fn eviction_and_streams_of_an_unscheduled_pod() {
    if require("curl").is_none() || require("kubectl").is_none() {
        return;
    }
    let Some(c) = Cluster::start(Backend::KlabStore, &[]) else {
        return;
    };
    let k = PathBuf::from("kubectl");
    ok(c.kubectl_with(&k, &["run", "e", "--image=busybox", "-l", "app=e"]));
    ok(c.kubectl_with(
        &k,
        &[
            "create",
            "pdb",
            "keep-e",
            "--selector=app=e",
            "--min-available=1",
        ],
    ));
    let evict = br#"{"apiVersion":"policy/v1","kind":"Eviction","metadata":{"name":"e","namespace":"default"}}"#;
    let path = "/api/v1/namespaces/default/pods/e/eviction";
    assert_status(
        c.curl(Some("admin"), "POST", path, "application/json", Some(evict)),
        429,
        "TooManyRequests",
    );
    ok(c.kubectl_with(&k, &["delete", "pdb", "keep-e"]));
    assert_eq!(
        c.curl(Some("admin"), "POST", path, "application/json", Some(evict))
            .0,
        201
    );
    assert!(text(&c.kubectl_with(&k, &["get", "pod", "e"])).contains("NotFound"));
    ok(c.kubectl_with(&k, &["run", "l", "--image=busybox"]));
    // No node, no kubelet to ask: logs and exec say so (a 400, before any upgrade).
    for args in [&["logs", "l"][..], &["exec", "l", "--", "true"][..]] {
        let out = c.kubectl_with(&k, args);
        assert!(!out.status.success());
        assert!(
            text(&out).contains("pod l does not have a host assigned"),
            "{}",
            text(&out)
        );
    }
}

/// The scheduler's write: `pods/binding` sets spec.nodeName once; a second bind is a 409.
#[test]
fn binding_assigns_a_node_once() {
    if require("curl").is_none() {
        return;
    }
    let Some(c) = Cluster::start(Backend::KlabStore, &[]) else {
        return;
    };
    let pods = "/api/v1/namespaces/default/pods";
    let pod =
        br#"{"metadata":{"name":"b"},"spec":{"containers":[{"name":"c","image":"busybox"}]}}"#;
    assert_eq!(
        c.curl(Some("admin"), "POST", pods, "application/json", Some(pod))
            .0,
        201
    );
    let bind = br#"{"apiVersion":"v1","kind":"Binding","metadata":{"name":"b"},"target":{"kind":"Node","name":"node-1"}}"#;
    let (code, body) = c.curl(
        Some("admin"),
        "POST",
        &format!("{pods}/b/binding"),
        "application/json",
        Some(bind),
    );
    assert_eq!(code, 201, "{body}");
    let (_, body) = c.curl(Some("admin"), "GET", &format!("{pods}/b"), "", None);
    let p = status(&body);
    assert_eq!(p["spec"]["nodeName"], "node-1");
    assert_eq!(p["status"]["conditions"][0]["type"], "PodScheduled");
    assert_status(
        c.curl(
            Some("admin"),
            "POST",
            "/api/v1/namespaces/default/bindings",
            "application/json",
            Some(bind),
        ),
        409,
        "Conflict",
    );
    // Bound pods are deleted gracefully: the kubelet finishes the job.
    let (code, body) = c.curl(Some("admin"), "DELETE", &format!("{pods}/b"), "", None);
    assert_eq!(code, 200);
    assert!(
        status(&body)["metadata"]["deletionTimestamp"].is_string(),
        "{body}"
    );
    assert_eq!(
        c.curl(
            Some("admin"),
            "DELETE",
            &format!("{pods}/b?gracePeriodSeconds=0"),
            "",
            None
        )
        .0,
        200
    );
    assert_status(
        c.curl(Some("admin"), "GET", &format!("{pods}/b"), "", None),
        404,
        "NotFound",
    );
}

/// The API server reaches etcd over mTLS with --etcd-cafile, --etcd-certfile, --etcd-keyfile.
#[test]
fn etcd_over_mutual_tls() {
    if require("curl").is_none() {
        return;
    }
    let Some(c) = Cluster::start(Backend::EtcdTls, &[]) else {
        return;
    };
    assert!(c.etcd_endpoint.starts_with("https://"));
    let (code, body) = c.curl(Some("admin"), "GET", "/readyz/etcd", "", None);
    assert_eq!((code, body.as_str()), (200, "ok"));
    let (code, body) = c.curl(
        Some("admin"),
        "GET",
        "/api/v1/namespaces/kube-system",
        "",
        None,
    );
    assert_eq!(code, 200, "{body}");
}

/// TokenRequest (`kubectl create token`) with a kubeadm-style RSA key; the token authenticates
/// as the service account until the service account is deleted.
#[test]
fn service_account_tokens() {
    if require("curl").is_none() || require("kubectl").is_none() || require("openssl").is_none() {
        return;
    }
    let keys = tempfile::tempdir().unwrap();
    let (key, public) = (keys.path().join("sa.key"), keys.path().join("sa.pub"));
    let openssl = |args: &[&str]| {
        let out = Command::new("openssl").args(args).output().unwrap();
        assert!(out.status.success(), "{}", text(&out));
    };
    openssl(&[
        "genrsa",
        "-traditional",
        "-out",
        key.to_str().unwrap(),
        "2048",
    ]);
    openssl(&[
        "rsa",
        "-in",
        key.to_str().unwrap(),
        "-pubout",
        "-out",
        public.to_str().unwrap(),
    ]);
    let flags = [
        format!("--service-account-signing-key-file={}", key.display()),
        format!("--service-account-key-file={}", public.display()),
    ];
    let flags: Vec<&str> = flags.iter().map(String::as_str).collect();
    let Some(c) = Cluster::start(Backend::KlabStore, &flags) else {
        return;
    };
    let k = PathBuf::from("kubectl");
    ok(c.kubectl_with(&k, &["create", "serviceaccount", "robot"]));
    let token = ok(c.kubectl_with(&k, &["create", "token", "robot"]))
        .trim()
        .to_owned();
    assert_eq!(token.split('.').count(), 3);
    let as_robot = |args: &[&str]| c.kubectl_token(&token, args);
    let who = ok(as_robot(&["auth", "whoami"]));
    assert!(
        who.contains("system:serviceaccount:default:robot")
            && who.contains("system:serviceaccounts:default"),
        "{who}"
    );
    assert!(text(&as_robot(&["get", "pods"])).contains("Forbidden"));
    ok(c.kubectl_with(
        &k,
        &[
            "create",
            "rolebinding",
            "robot-view",
            "--clusterrole=view",
            "--serviceaccount=default:robot",
        ],
    ));
    assert!(as_robot(&["get", "pods"]).status.success());
    ok(c.kubectl_with(&k, &["delete", "serviceaccount", "robot"]));
    assert!(text(&as_robot(&["get", "pods"])).contains("Unauthorized"));
    let short = c.kubectl_with(&k, &["create", "token", "robot"]);
    assert!(text(&short).contains("NotFound") || text(&short).contains("not found"));
}

/// `klab bench api` runs end to end at a tiny size and prints its table (figures not asserted).
#[test]
fn bench_api_smoke() {
    if require("etcd").is_none() {
        return;
    }
    let out = Command::new(env!("CARGO_BIN_EXE_klab"))
        .args([
            "bench",
            "api",
            "--creates=20",
            "--clients=2",
            "--list-sizes=10",
            "--watchers=3",
            "--watch-events=5",
        ])
        .output()
        .unwrap();
    let table = ok(out);
    for want in [
        "BENCHMARK",
        "ON KLAB-STORE",
        "ON ETCD",
        "create pod (2 clients)",
        "list 10 pods",
        "watch fan-out (3 watchers x 5 events)",
    ] {
        assert!(table.contains(want), "{table}");
    }
}

/// The Node authorizer: a kubelet reads a secret only when a pod bound to its node uses it;
/// NodeRestriction: it writes only its own Node and the pods bound to it.
#[test]
fn node_authorizer_follows_pod_references() {
    if require("curl").is_none() {
        return;
    }
    let restrict = ["--enable-admission-plugins=NodeRestriction"];
    let Some(c) = Cluster::start(Backend::KlabStore, &restrict) else {
        return;
    };
    let (admin, node, json) = (Some("admin"), Some("system:node:n1"), "application/json");
    let secrets = "/api/v1/namespaces/default/secrets";
    for name in ["used", "unused"] {
        let body = format!(r#"{{"metadata":{{"name":"{name}"}},"stringData":{{"k":"v"}}}}"#);
        assert_eq!(
            c.curl(admin, "POST", secrets, json, Some(body.as_bytes()))
                .0,
            201
        );
    }
    let pod = br#"{"metadata":{"name":"p"},"spec":{"nodeName":"n1","containers":[{"name":"c","image":"busybox","envFrom":[{"secretRef":{"name":"used"}}]}]}}"#;
    assert_eq!(
        c.curl(
            admin,
            "POST",
            "/api/v1/namespaces/default/pods",
            json,
            Some(pod)
        )
        .0,
        201
    );
    assert_eq!(
        c.curl(node, "GET", &format!("{secrets}/used"), "", None).0,
        200
    );
    assert_eq!(
        c.curl(
            node,
            "GET",
            &format!("{secrets}?fieldSelector=metadata.name%3Dused"),
            "",
            None
        )
        .0,
        200
    );
    assert_status(
        c.curl(node, "GET", &format!("{secrets}/unused"), "", None),
        403,
        "Forbidden",
    );
    assert_status(c.curl(node, "GET", secrets, "", None), 403, "Forbidden");
    let me = br#"{"metadata":{"name":"n1"}}"#;
    assert_eq!(c.curl(node, "POST", "/api/v1/nodes", json, Some(me)).0, 201);
    assert_eq!(
        c.curl(
            node,
            "GET",
            "/api/v1/pods?fieldSelector=spec.nodeName%3Dn1",
            "",
            None
        )
        .0,
        200
    );
    assert_status(
        c.curl(
            node,
            "DELETE",
            "/api/v1/namespaces/default/secrets/used",
            "",
            None,
        ),
        403,
        "Forbidden",
    );
    let other = br#"{"metadata":{"name":"n2"}}"#;
    assert_status(
        c.curl(node, "POST", "/api/v1/nodes", json, Some(other)),
        403,
        "Forbidden",
    );
    let status = br#"{"status":{"phase":"Running"}}"#;
    let merge = "application/merge-patch+json";
    let p_status = "/api/v1/namespaces/default/pods/p/status";
    assert_eq!(c.curl(node, "PATCH", p_status, merge, Some(status)).0, 200);
    let elsewhere = br#"{"metadata":{"name":"q"},"spec":{"nodeName":"n2","containers":[{"name":"c","image":"busybox"}]}}"#;
    assert_eq!(
        c.curl(
            admin,
            "POST",
            "/api/v1/namespaces/default/pods",
            json,
            Some(elsewhere)
        )
        .0,
        201
    );
    let q_status = "/api/v1/namespaces/default/pods/q/status";
    assert_status(
        c.curl(node, "PATCH", q_status, merge, Some(status)),
        403,
        "Forbidden",
    );
    let plain = br#"{"metadata":{"name":"r"},"spec":{"nodeName":"n1","containers":[{"name":"c","image":"busybox"}]}}"#;
    assert_status(
        c.curl(
            node,
            "POST",
            "/api/v1/namespaces/default/pods",
            json,
            Some(plain),
        ),
        403,
        "Forbidden",
    );
}

/// kube-rs, the client klab's own components use: typed CRUD, optimistic concurrency, and the
/// kube-runtime watcher (list, then watch with bookmarks).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kube_rs_client() {
    use k8s_openapi::api::core::v1::ConfigMap;
    use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams, PostParams};
    use kube::runtime::{WatchStreamExt, watcher};
    use tokio_stream::StreamExt;

    let Some(c) = Cluster::start(Backend::KlabStore, &[]) else {
        return;
    };
    let kubeconfig = kube::config::Kubeconfig::read_from(&c.kubeconfig).unwrap();
    let config = kube::Config::from_custom_kubeconfig(kubeconfig, &Default::default())
        .await
        .unwrap();
    let client = kube::Client::try_from(config).unwrap();
    assert_eq!(client.apiserver_version().await.unwrap().major, "1");
    let cms: Api<ConfigMap> = Api::namespaced(client.clone(), "default");

    let seen = tokio::spawn({
        let cms = cms.clone();
        async move {
            let stream = watcher(cms, watcher::Config::default()).applied_objects();
            let mut stream = std::pin::pin!(stream);
            let mut names = Vec::new();
            while let Some(Ok(cm)) = stream.next().await {
                let name = cm.metadata.name.clone().unwrap_or_default();
                names.push(name.clone());
                if name == "kr-2" {
                    break;
                }
            }
            names
        }
    });

    let cm = |name: &str| -> ConfigMap {
        serde_json::from_value(serde_json::json!({
            "metadata": {"name": name, "labels": {"from": "kube-rs"}},
            "data": {"k": "v"}
        }))
        .unwrap()
    };
    let created = cms
        .create(&PostParams::default(), &cm("kr-1"))
        .await
        .unwrap();
    assert!(created.metadata.uid.is_some());
    let listed = cms
        .list(&ListParams::default().labels("from=kube-rs"))
        .await
        .unwrap();
    assert_eq!(listed.items.len(), 1);
    let patch = serde_json::json!({"data": {"k": "patched"}});
    let patched = cms
        .patch("kr-1", &PatchParams::default(), &Patch::Merge(&patch))
        .await
        .unwrap();
    assert_eq!(patched.data.unwrap()["k"], "patched");
    // Replacing with the stale resourceVersion from the create loses: 409 Conflict.
    let err = cms
        .replace("kr-1", &PostParams::default(), &created)
        .await
        .unwrap_err();
    assert!(
        matches!(&err, kube::Error::Api(s) if s.code == 409),
        "{err:?}"
    );
    cms.create(&PostParams::default(), &cm("kr-2"))
        .await
        .unwrap();
    let names = tokio::time::timeout(Duration::from_secs(60), seen)
        .await
        .unwrap()
        .unwrap();
    assert!(
        names.contains(&"kr-1".to_owned()) && names.contains(&"kr-2".to_owned()),
        "{names:?}"
    );
    cms.delete("kr-1", &DeleteParams::default()).await.unwrap();
    let gone = cms.get_opt("kr-1").await.unwrap();
    assert!(gone.is_none());
}
