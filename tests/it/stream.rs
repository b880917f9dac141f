//! `kubectl logs` (`-f`, `--tail`, `--previous`, `--timestamps`, `-c`) and `kubectl exec`
//! (with and without stdin) end to end: real kubectl → `klab apiserver` (proxying with its
//! kubelet client certificate) → `klab kubelet` → real containerd. kubectl 1.32 speaks
//! WebSocket (`v5.channel.k8s.io`); kubectl 1.27 speaks SPDY, which the kubelet passes on to
//! containerd's streaming server. Also: RBAC on pods/exec, and a kubelet that is gone.

use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use crate::apiserver::harness::{Backend, Cluster, require, text};
use serde_json::Value;

use crate::kubelet::{
    NODE, POD_CIDR, apply, container, kubectl, node_ready, start_kubelet, status_of, wait_for,
};

/// Asserts what a command printed on stdout, showing all it printed when that differs.
fn assert_stdout(out: &Output, expected: &str) {
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        expected,
        "{}",
        text(out)
    );
}

const TALK: &str = r#"apiVersion: v1
kind: Pod
metadata:
  name: talk
spec:
  nodeName: kl-node
  terminationGracePeriodSeconds: 1
  containers:
  - name: c
    image: busybox
    command: ["sh", "-c", "echo one; echo two; echo three; while [ ! -f /tmp/go ]; do sleep 0.2; done; echo released; exec sleep 3600"]
  - name: side
    image: busybox
    command: ["sh", "-c", "echo from the side; exec sleep 3600"]
"#;

/// A pod reading a ConfigMap (whole, and one key by subPath) and a Secret from volumes.
const VOLUMES: &str = r#"apiVersion: v1
kind: ConfigMap
metadata:
  name: greeting
data:
  message: hello
---
apiVersion: v1
kind: Secret
metadata:
  name: word
stringData:
  password: first
---
apiVersion: v1
kind: Pod
metadata:
  name: reader
spec:
  nodeName: kl-node
  terminationGracePeriodSeconds: 1
  containers:
  - name: c
    image: busybox
    command: ["sleep", "3600"]
    volumeMounts:
    - {name: conf, mountPath: /etc/greeting}
    - {name: conf, mountPath: /etc/message, subPath: message}
    - {name: word, mountPath: /etc/word}
  volumes:
  - {name: conf, configMap: {name: greeting}}
  - {name: word, secret: {secretName: word}}
"#;

/// A pod for `kubectl attach` (its container reads stdin) and one for `port-forward`.
const CHAT_AND_WEB: &str = r#"apiVersion: v1
kind: Pod
metadata:
  name: chat
spec:
  nodeName: kl-node
  terminationGracePeriodSeconds: 1
  containers:
  - name: c
    image: busybox
    stdin: true
    command: ["sh", "-c", "while read l; do echo heard $l; done"]
---
apiVersion: v1
kind: Pod
metadata:
  name: web
spec:
  nodeName: kl-node
  terminationGracePeriodSeconds: 1
  containers:
  - name: web
    image: localhost/klab/echo:1.0
    ports: [{containerPort: 8080}]
"#;

/// alice may get and list pods, and nothing more: no pods/exec, no pods/log.
const READER: &str = r#"apiVersion: rbac.authorization.k8s.io/v1
kind: Role
metadata:
  name: pod-reader
rules:
- apiGroups: [""]
  resources: ["pods"]
  verbs: ["get", "list"]
---
apiVersion: rbac.authorization.k8s.io/v1
kind: RoleBinding
metadata:
  name: alice-reads-pods
subjects:
- kind: User
  name: alice
  apiGroup: rbac.authorization.k8s.io
roleRef:
  kind: Role
  name: pod-reader
  apiGroup: rbac.authorization.k8s.io
"#;

const AGAIN: &str = r#"apiVersion: v1
kind: Pod
metadata:
  name: again
spec:
  nodeName: kl-node
  terminationGracePeriodSeconds: 1
  volumes: [{name: data, emptyDir: {}}]
  containers:
  - name: c
    image: busybox
    command: ["sh", "-c", "if [ -f /data/once ]; then echo second; exec sleep 3600; fi; touch /data/once; echo first; exit 1"]
    volumeMounts: [{name: data, mountPath: /data}]
"#;

/// kubectl's client minor version (`32` for 1.32).
fn kubectl_minor(k: &Path) -> u32 {
    let out = Command::new(k)
        .args(["version", "--client", "-o", "json"])
        .output()
        .unwrap();
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap_or_default();
    let minor = v["clientVersion"]["minor"].as_str().unwrap_or("0");
    minor.trim_end_matches('+').parse().unwrap_or(0)
}

/// A kubectl older than 1.31, which speaks SPDY only: Debian's 1.20 from `$KLAB_KUBECTLS`
/// (CI), or a versioned `kubectl.1.NN` on PATH or beside `kubectl` (the Cloud SDK keeps them
/// there). Under CI there must be one.
fn spdy_kubectl() -> Option<PathBuf> {
    let mut candidates: Vec<PathBuf> = std::env::var_os("KLAB_KUBECTLS")
        .map(|v| std::env::split_paths(&v).collect())
        .unwrap_or_default();
    let mut dirs: Vec<PathBuf> =
        std::env::split_paths(&std::env::var_os("PATH").unwrap_or_default()).collect();
    if let Some(real) = require("kubectl").and_then(|k| std::fs::canonicalize(k).ok()) {
        dirs.extend(real.parent().map(Path::to_path_buf));
    }
    for d in dirs {
        candidates.extend((27..=30).map(|m| d.join(format!("kubectl.1.{m}"))));
    }
    let found = candidates
        .into_iter()
        .filter(|p| p.is_file())
        .find(|p| kubectl_minor(p) < 31);
    if found.is_none() {
        assert!(
            std::env::var_os("CI").is_none(),
            "no kubectl older than 1.31 (SPDY): .ci/run sets KLAB_KUBECTLS"
        );
        eprintln!("skipping the SPDY part: no kubectl older than 1.31");
    }
    found
}

/// Runs kubectl (`bin`) with `stdin` fed to it.
fn kubectl_in(c: &Cluster, bin: &str, args: &[&str], stdin: &[u8]) -> Output {
    let mut child = Command::new(bin)
        .env("KUBECONFIG", &c.kubeconfig)
        .env_remove("KUBERNETES_SERVICE_HOST")
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut input = child.stdin.take().unwrap();
    input.write_all(stdin).unwrap();
    drop(input);
    child.wait_with_output().unwrap()
}

/// One transcript entry: the command line, then what kubectl wrote (stdout, then stderr),
/// then a non-zero exit status.
pub(crate) fn transcript(t: &mut String, shown: &str, out: &Output) {
    t.push_str(&format!("$ {shown}\n{}", text(out)));
    if let Some(code) = out.status.code().filter(|c| *c != 0) {
        t.push_str(&format!("(exit status {code})\n"));
    }
}

fn scenario(c: &Cluster, root: &Path, socket: &Path) {
    let log = root.with_extension("log");
    let endpoint = format!("--container-runtime-endpoint=unix://{}", socket.display());
    let port = crate::free_port();
    let serving = [
        format!("--tls-cert-file={}", c.path("apiserver.crt")),
        format!("--tls-private-key-file={}", c.path("apiserver.key")),
    ];
    kubectl(
        c,
        &[
            "create",
            "clusterrolebinding",
            "kubeadm:apiserver-kubelet-client",
            "--clusterrole=system:kubelet-api-admin",
            "--user=kube-apiserver-kubelet-client",
        ],
    );
    let kubelet = start_kubelet(c, root, port, &[&endpoint, &serving[0], &serving[1]]);
    wait_for("node Ready", 60, &log, || node_ready(c));
    apply(c, "talk", TALK);
    apply(c, "volumes", VOLUMES);
    apply(c, "again", AGAIN);
    apply(c, "chat", CHAT_AND_WEB);
    wait_for("talk Running", 60, &log, || {
        status_of(c, "talk").filter(|s| s["phase"] == "Running")
    });
    let k = |args: &[&str]| c.kubectl_with(Path::new("kubectl"), args);
    for (container, line) in [("c", "three"), ("side", "from the side")] {
        wait_for(
            &format!("talk's {container} to write {line:?}"),
            30,
            &log,
            || {
                let out = k(&["logs", "talk", "-c", container]);
                (out.status.success() && String::from_utf8_lossy(&out.stdout).contains(line))
                    .then_some(())
            },
        );
    }
    let mut t = String::new();

    // /stats/summary through nodes/proxy: the running busybox pod with its containers' memory
    // and CPU, from containerd's ListContainerStats.
    let raw = format!("/api/v1/nodes/{NODE}/proxy/stats/summary");
    let summary: Value = serde_json::from_str(&kubectl(c, &["get", "--raw", &raw])).unwrap();
    assert_eq!(summary["node"]["nodeName"], NODE, "{summary}");
    let talk = summary["pods"]
        .as_array()
        .and_then(|p| p.iter().find(|p| p["podRef"]["name"] == "talk"))
        .unwrap_or_else(|| panic!("talk is not in {summary}"));
    assert!(
        talk["memory"]["workingSetBytes"].as_u64() > Some(0),
        "{talk}"
    );
    let names: Vec<&str> = talk["containers"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|c| c["memory"]["workingSetBytes"].as_u64() > Some(0))
        .filter(|c| c["cpu"]["usageCoreNanoSeconds"].as_u64() > Some(0))
        .filter_map(|c| c["name"].as_str())
        .collect();
    assert!(names.contains(&"c") && names.contains(&"side"), "{talk}");
    assert!(summary.get("klabNote").is_none(), "{summary}");

    // ConfigMap and Secret volumes follow their objects (the atomic writer swaps `..data`);
    // a key mounted by subPath keeps the content the container started with, as upstream.
    wait_for("reader Running", 60, &log, || {
        status_of(c, "reader").filter(|s| s["phase"] == "Running")
    });
    let cat = |path: &str| kubectl(c, &["exec", "reader", "--", "cat", path]);
    assert_eq!(cat("/etc/greeting/message"), "hello");
    assert_eq!(cat("/etc/message"), "hello");
    assert_eq!(cat("/etc/word/password"), "first");
    kubectl(
        c,
        &[
            "patch",
            "configmap",
            "greeting",
            "-p",
            r#"{"data":{"message":"bonjour"}}"#,
        ],
    );
    kubectl(
        c,
        &[
            "patch",
            "secret",
            "word",
            "-p",
            r#"{"data":{"password":"c2Vjb25k"}}"#,
        ],
    );
    wait_for("the new ConfigMap value in the pod", 60, &log, || {
        (cat("/etc/greeting/message") == "bonjour").then_some(())
    });
    wait_for("the new Secret value in the pod", 60, &log, || {
        (cat("/etc/word/password") == "second").then_some(())
    });
    assert_eq!(
        cat("/etc/message"),
        "hello",
        "subPath mounts are not updated"
    );

    // Logs, through the API server to the kubelet's /containerLogs.
    for (shown, args) in [
        ("kubectl logs talk -c c", &["logs", "talk", "-c", "c"][..]),
        (
            "kubectl logs talk -c c --tail=1",
            &["logs", "talk", "-c", "c", "--tail=1"][..],
        ),
        (
            "kubectl logs talk -c side",
            &["logs", "talk", "-c", "side"][..],
        ),
        (
            "kubectl logs talk -c c --limit-bytes=8",
            &["logs", "talk", "-c", "c", "--limit-bytes=8"][..],
        ),
        (
            "kubectl logs talk -c c --since=1h",
            &["logs", "talk", "-c", "c", "--since=1h"][..],
        ),
        (
            "kubectl logs talk -c c --since-time=2100-01-01T00:00:00Z",
            &[
                "logs",
                "talk",
                "-c",
                "c",
                "--since-time=2100-01-01T00:00:00Z",
            ][..],
        ),
    ] {
        let out = k(args);
        assert!(out.status.success(), "{shown}: {}", text(&out));
        transcript(&mut t, shown, &out);
    }
    let stamped = kubectl(c, &["logs", "talk", "-c", "c", "--timestamps"]);
    let words: Vec<(&str, &str)> = stamped
        .lines()
        .map(|l| l.split_once(' ').unwrap())
        .collect();
    assert_eq!(
        words.iter().map(|w| w.1).collect::<Vec<_>>(),
        ["one", "two", "three"]
    );
    for (ts, _) in &words {
        time::OffsetDateTime::parse(ts, &time::format_description::well_known::Rfc3339)
            .unwrap_or_else(|e| panic!("{ts:?} is not RFC 3339: {e}"));
    }
    // Without a container, a pod of two is a 400 with upstream's message.
    let (code, body) = c.curl(
        Some("admin"),
        "GET",
        "/api/v1/namespaces/default/pods/talk/log",
        "",
        None,
    );
    assert_eq!(code, 400, "{body}");
    assert!(
        body.contains("a container name must be specified for pod talk, choose one of: [c side]"),
        "{body}"
    );

    // `logs -f` streams: the line written after an exec arrives on the same response.
    let mut follow = Command::new("kubectl")
        .env("KUBECONFIG", &c.kubeconfig)
        .args(["logs", "-f", "talk", "-c", "c"])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let (tx, rx) = mpsc::channel();
    let stdout = follow.stdout.take().unwrap();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines() {
            let Ok(line) = line else { break };
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    let mut seen = Vec::new();
    let until = |want: &str, seen: &mut Vec<String>| {
        while !seen.iter().any(|l| l == want) {
            match rx.recv_timeout(Duration::from_secs(60)) {
                Ok(l) => seen.push(l),
                Err(_) => panic!("kubectl logs -f: no {want:?} line; got {seen:?}"),
            }
        }
    };
    until("three", &mut seen);
    let out = k(&["exec", "talk", "-c", "c", "--", "touch", "/tmp/go"]);
    assert!(out.status.success(), "{}", text(&out));
    until("released", &mut seen);
    assert_eq!(seen, ["one", "two", "three", "released"]);
    let _ = follow.kill();
    let _ = follow.wait();

    // Exec over WebSocket (kubectl 1.32): without stdin, with stdin, an exit code.
    let shown = "kubectl exec talk -c c -- cat /etc/hostname";
    let out = k(&["exec", "talk", "-c", "c", "--", "cat", "/etc/hostname"]);
    assert_stdout(&out, "talk\n");
    transcript(&mut t, shown, &out);
    let out = kubectl_in(
        c,
        "kubectl",
        &["exec", "-i", "talk", "-c", "c", "--", "cat"],
        b"hi\n",
    );
    assert_stdout(&out, "hi\n");
    transcript(&mut t, "echo hi | kubectl exec -i talk -c c -- cat", &out);
    let out = kubectl_in(
        c,
        "kubectl",
        &[
            "exec",
            "-i",
            "talk",
            "-c",
            "c",
            "--",
            "sh",
            "-c",
            "read x; echo got $x; echo to stderr >&2",
        ],
        b"abc\n",
    );
    assert!(out.status.success(), "{}", text(&out));
    assert_eq!(String::from_utf8_lossy(&out.stdout), "got abc\n");
    assert_eq!(String::from_utf8_lossy(&out.stderr), "to stderr\n");
    let out = k(&[
        "exec",
        "talk",
        "-c",
        "c",
        "--",
        "sh",
        "-c",
        "echo out; exit 3",
    ]);
    assert_eq!(out.status.code(), Some(3), "{}", text(&out));
    transcript(
        &mut t,
        "kubectl exec talk -c c -- sh -c 'echo out; exit 3'",
        &out,
    );
    // Exec output streams while the command runs: "early" arrives before "late" is written,
    // and "late" only after a second exec lets the first one go on.
    let mut long = Command::new("kubectl")
        .env("KUBECONFIG", &c.kubeconfig)
        .args(["exec", "talk", "-c", "c", "--", "sh", "-c"])
        .arg("echo early; while [ ! -f /tmp/stop ]; do sleep 0.2; done; echo late")
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut long_out = BufReader::new(long.stdout.take().unwrap());
    let mut line = String::new();
    long_out.read_line(&mut line).unwrap();
    assert_eq!(line, "early\n");
    let out = k(&["exec", "talk", "-c", "c", "--", "touch", "/tmp/stop"]);
    assert!(out.status.success(), "{}", text(&out));
    line.clear();
    long_out.read_line(&mut line).unwrap();
    assert_eq!(line, "late\n");
    assert!(long.wait().unwrap().success());

    // kubectl cp is tar over exec: binary stdin one way, binary stdout the other.
    let there = c.dir.path().join("to-copy.txt");
    std::fs::write(&there, "copied in and out\n").unwrap();
    kubectl(
        c,
        &[
            "cp",
            there.to_str().unwrap(),
            "talk:/tmp/copied.txt",
            "-c",
            "c",
        ],
    );
    let back = c.dir.path().join("copied-back.txt");
    kubectl(
        c,
        &[
            "cp",
            "talk:/tmp/copied.txt",
            back.to_str().unwrap(),
            "-c",
            "c",
        ],
    );
    assert_eq!(
        std::fs::read_to_string(&back).unwrap(),
        "copied in and out\n"
    );

    let apiserver_log = std::fs::read_to_string(&c.log).unwrap();
    assert!(
        apiserver_log.contains(r#"verb="GET" URI="/api/v1/namespaces/default/pods/talk/exec?"#),
        "kubectl 1.32 upgrades with a WebSocket GET"
    );

    // Exec over SPDY (kubectl 1.27): the kubelet proxies it to containerd byte for byte.
    if let Some(old) = spdy_kubectl() {
        let old = old.display().to_string();
        let out = c.kubectl_with(
            Path::new(&old),
            &["exec", "talk", "-c", "side", "--", "cat", "/etc/hostname"],
        );
        assert_stdout(&out, "talk\n");
        let out = kubectl_in(
            c,
            &old,
            &["exec", "-i", "talk", "-c", "side", "--", "cat"],
            b"spdy\n",
        );
        assert_stdout(&out, "spdy\n");
        let out = c.kubectl_with(
            Path::new(&old),
            &["exec", "talk", "-c", "side", "--", "sh", "-c", "exit 4"],
        );
        assert_eq!(out.status.code(), Some(4), "{}", text(&out));
        let apiserver_log = std::fs::read_to_string(&c.log).unwrap();
        assert!(
            apiserver_log
                .contains(r#"verb="CREATE" URI="/api/v1/namespaces/default/pods/talk/exec?"#),
            "kubectl 1.27 upgrades with a SPDY POST"
        );
    }

    // attach: stdin to the container's own process, its output back (WebSocket, then SPDY).
    for pod in ["chat", "web"] {
        wait_for(&format!("{pod} Running"), 60, &log, || {
            status_of(c, pod).filter(|s| s["phase"] == "Running")
        });
    }
    // stdin stays open until the answer is back: closing it may end the session first.
    let mut attach = Command::new("kubectl")
        .env("KUBECONFIG", &c.kubeconfig)
        .args(["attach", "-i", "chat", "-c", "c"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut to_chat = attach.stdin.take().unwrap();
    to_chat.write_all(b"one\n").unwrap();
    let mut from_chat = BufReader::new(attach.stdout.take().unwrap());
    let mut heard = String::new();
    from_chat.read_line(&mut heard).unwrap();
    assert_eq!(heard, "heard one\n");
    let _ = attach.kill();
    let _ = attach.wait();
    drop(to_chat);

    // port-forward: kubectl's WebSocket attempt is refused, it falls back to SPDY, which the
    // kubelet passes on to containerd.
    let local = crate::free_port();
    let mut pf = Command::new("kubectl")
        .env("KUBECONFIG", &c.kubeconfig)
        .args(["port-forward", "pod/web", &format!("{local}:8080")])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut first = String::new();
    // Kept open until kubectl is killed: a closed pipe would end kubectl at its next line.
    let mut pf_out = BufReader::new(pf.stdout.take().unwrap());
    pf_out.read_line(&mut first).unwrap();
    assert!(first.starts_with("Forwarding from"), "{first:?}");
    let out = Command::new("curl")
        .args(["-sS", &format!("http://127.0.0.1:{local}/")])
        .output()
        .unwrap();
    let _ = pf.kill();
    let _ = pf.wait();
    drop(pf_out);
    assert_stdout(&out, "web\n");

    // --previous: the log of the container before its restart.
    wait_for("again restarted and Running", 90, &log, || {
        container(c, "again")
            .filter(|s| s["restartCount"].as_i64() >= Some(1) && s["state"]["running"].is_object())
    });
    wait_for("again's second log", 30, &log, || {
        (kubectl(c, &["logs", "again"]) == "second\n").then_some(())
    });
    let out = k(&["logs", "again", "--previous"]);
    assert!(out.status.success(), "{}", text(&out));
    transcript(&mut t, "kubectl logs again --previous", &out);

    // RBAC: alice may read pods, but not exec into them (pods/exec) nor read logs (pods/log).
    apply(c, "reader", READER);
    let out = k(&[
        "--context",
        "alice",
        "exec",
        "talk",
        "-c",
        "c",
        "--",
        "true",
    ]);
    assert!(!out.status.success());
    transcript(
        &mut t,
        "kubectl --context alice exec talk -c c -- true",
        &out,
    );
    let out = k(&["--context", "alice", "logs", "talk", "-c", "c"]);
    assert!(!out.status.success());
    transcript(&mut t, "kubectl --context alice logs talk -c c", &out);

    // A kubelet that is gone: the API server says which backend it could not dial.
    drop(kubelet);
    let port_text = format!("127.0.0.1:{port}");
    for (shown, args) in [
        ("kubectl logs talk -c c", &["logs", "talk", "-c", "c"][..]),
        (
            "kubectl exec talk -c c -- true",
            &["exec", "talk", "-c", "c", "--", "true"][..],
        ),
    ] {
        let out = k(args);
        assert!(!out.status.success());
        assert!(
            text(&out).contains(&format!("error dialing backend: dial tcp {port_text}")),
            "{}",
            text(&out)
        );
        transcript(
            &mut t,
            &format!("{shown}    # with the kubelet stopped"),
            &out,
        );
    }
    crate::snap!("stream_kubectl", t.replace(&port_text, "127.0.0.1:10250"));

    // A kubelet with a self-signed certificate is refused: --kubelet-certificate-authority.
    let _self_signed = start_kubelet(c, root, port, &[&endpoint]);
    let refused = wait_for("the self-signed kubelet refused", 60, &log, || {
        let out = k(&["logs", "talk", "-c", "c"]);
        let t = text(&out);
        (!out.status.success() && t.contains("tls handshake")).then_some(t)
    });
    assert!(refused.contains("invalid peer certificate"), "{refused}");
}

#[test]
fn kubectl_logs_and_exec_through_apiserver_and_kubelet_on_containerd() {
    if !crate::containerd_prerequisites(&["kubectl", "curl"]) {
        return;
    }
    let Some(cluster) = Cluster::start(
        Backend::KlabStore,
        &[
            // kubeadm's identity, allowed by the kubelet's SubjectAccessReviews through
            // the binding the scenario creates, as `klab up` does.
            "--kubelet-client-certificate={dir}/kube-apiserver-kubelet-client.crt",
            "--kubelet-client-key={dir}/kube-apiserver-kubelet-client.key",
            // The node's name (kl-node) does not resolve here: its InternalIP does the job.
            "--kubelet-preferred-address-types=InternalIP,Hostname",
            // The kubelet serves a certificate from the cluster's CA (for 127.0.0.1).
            "--kubelet-certificate-authority={dir}/ca.crt",
        ],
    ) else {
        return;
    };
    let dir: PathBuf = cluster.dir.path().to_path_buf();
    crate::with_containerd(&dir, POD_CIDR, |socket| {
        scenario(&cluster, &dir.join("kubelet"), socket)
    });
}
