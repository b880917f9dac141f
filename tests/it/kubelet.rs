//! The kubelet as a real `klab kubelet` process against `klab apiserver` on klab-store, driven
//! with real kubectl: on real containerd (a pod runs, a crash loops, a changed image replaces
//! the container, a kubelet restart adopts what runs, a deletion stops the processes), and on
//! the simulated runtime (pods and static pods, which say they are simulated).

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::apiserver::harness::{Backend, Cluster, Proc, ok, require};

pub(crate) const NODE: &str = "kl-node";
/// The runtime test's pod CIDR: the host has one `cni0` bridge, with one address.
pub(crate) const POD_CIDR: &str = "10.88.77.0/24";

/// Starts `klab kubelet` with its :10250 server on `port`, clients checked against the
/// cluster's CA and every request authorized by the API server, as `klab up` and kubeadm run
/// it (unless `extra` names an --authorization-mode).
pub(crate) fn start_kubelet(c: &Cluster, root: &Path, port: u16, extra: &[&str]) -> Proc {
    let locked = if extra.iter().any(|a| a.starts_with("--authorization-mode")) {
        vec![]
    } else {
        vec![
            "--anonymous-auth=false",
            "--authentication-token-webhook",
            "--authorization-mode=Webhook",
        ]
    };
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(root.with_extension("log"))
        .unwrap();
    let child: Child = Command::new(env!("CARGO_BIN_EXE_klab"))
        .arg("kubelet")
        .arg(format!("--kubeconfig={}", c.kubeconfig.display()))
        .arg(format!("--hostname-override={NODE}"))
        .arg("--node-ip=127.0.0.1")
        .arg("--node-labels=klab.dev/test=yes")
        .arg(format!("--root-dir={}", root.display()))
        .arg(format!("--port={port}"))
        .arg("--address=127.0.0.1")
        .arg(format!("--client-ca-file={}", c.path("ca.crt")))
        .args(locked)
        .args(extra)
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .unwrap();
    Proc(child)
}

/// Who calls the kubelet's server in a test.
#[derive(Clone, Copy)]
enum Caller<'a> {
    /// A client certificate of the cluster's CA, by user name.
    Cert(&'a str),
    /// A bearer token (the API server's --token-auth-file knows `s3cret` as tina).
    Token(&'a str),
    Nobody,
}

/// One request to the kubelet's server: the status code and the body.
fn kubelet_call(port: u16, c: &Cluster, who: Caller, method: &str, path: &str) -> (u16, String) {
    let mut cmd = Command::new("curl");
    cmd.args(["-sSk", "-o", "-", "-w", "\n%{http_code}", "-X", method]);
    match who {
        Caller::Cert(user) => {
            let f = klab::apiserver::devpki::file_stem(user);
            cmd.arg("--cert").arg(c.path(&format!("{f}.crt")));
            cmd.arg("--key").arg(c.path(&format!("{f}.key")));
        }
        Caller::Token(t) => {
            cmd.arg("-H").arg(format!("Authorization: Bearer {t}"));
        }
        Caller::Nobody => {}
    }
    let out = cmd
        .arg(format!("https://127.0.0.1:{port}{path}"))
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let (body, code) = text.rsplit_once('\n').unwrap_or(("", "0"));
    (code.trim().parse().unwrap_or(0), body.to_owned())
}

/// GET on the kubelet's server as the cluster's admin (or with no certificate).
fn kubelet_get(c: &Cluster, port: u16, path: &str, cert: bool) -> Option<String> {
    let mut cmd = Command::new("curl");
    cmd.args(["-sSk", "--fail"]);
    if cert {
        cmd.args([
            "--cert",
            &c.path("admin.crt"),
            "--key",
            &c.path("admin.key"),
        ]);
    }
    let out = cmd
        .arg(format!("https://127.0.0.1:{port}{path}"))
        .output()
        .unwrap();
    out.status
        .success()
        .then(|| String::from_utf8_lossy(&out.stdout).into_owned())
}

/// The API server's flags for a service-account signing key pair made with openssl in `dir`,
/// so that tokens can be requested (by the kubelet, or `kubectl create token`).
fn sa_key_flags(dir: &Path) -> [String; 2] {
    let (key, public) = (dir.join("sa.key"), dir.join("sa.pub"));
    for args in [
        vec![
            "genrsa",
            "-traditional",
            "-out",
            key.to_str().unwrap(),
            "2048",
        ],
        vec![
            "rsa",
            "-in",
            key.to_str().unwrap(),
            "-pubout",
            "-out",
            public.to_str().unwrap(),
        ],
    ] {
        let out = Command::new("openssl").args(&args).output().unwrap();
        assert!(out.status.success(), "openssl {args:?}");
    }
    [
        format!("--service-account-signing-key-file={}", key.display()),
        format!("--service-account-key-file={}", public.display()),
    ]
}

pub(crate) fn kubectl(c: &Cluster, args: &[&str]) -> String {
    ok(c.kubectl_with(Path::new("kubectl"), args))
}

pub(crate) fn get(c: &Cluster, what: &str) -> Option<Value> {
    let out = c.kubectl_with(Path::new("kubectl"), &["get", what, "-o", "json"]);
    out.status
        .success()
        .then(|| serde_json::from_slice(&out.stdout).ok())
        .flatten()
}

/// Polls until `f` gives a value; panics with the kubelet's log after `secs`.
pub(crate) fn wait_for<T>(
    what: &str,
    secs: u64,
    log: &Path,
    mut f: impl FnMut() -> Option<T>,
) -> T {
    let deadline = Instant::now() + Duration::from_secs(secs);
    loop {
        if let Some(v) = f() {
            return v;
        }
        if Instant::now() > deadline {
            let log = std::fs::read_to_string(log).unwrap_or_default();
            panic!("timed out waiting for {what}; kubelet log:\n{log}");
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}

pub(crate) fn apply(c: &Cluster, name: &str, manifest: &str) {
    let f = c.dir.path().join(format!("{name}.yaml"));
    std::fs::write(&f, manifest).unwrap();
    kubectl(c, &["apply", "-f", f.to_str().unwrap()]);
}

fn pod_manifest(name: &str, image: &str, policy: &str, script: &str) -> String {
    format!(
        "apiVersion: v1\nkind: Pod\nmetadata:\n  name: {name}\nspec:\n  nodeName: {NODE}\n  restartPolicy: {policy}\n  terminationGracePeriodSeconds: 10\n  containers:\n  - name: c\n    image: {image}\n    command: [\"sh\", \"-c\", {script:?}]\n"
    )
}

const VOLS: &str = r#"apiVersion: v1
kind: ConfigMap
metadata:
  name: greet
data:
  greeting: hello
---
apiVersion: v1
kind: Secret
metadata:
  name: token
data:
  token: czNjcmV0
---
apiVersion: v1
kind: Pod
metadata:
  name: vols
spec:
  nodeName: kl-node
  terminationGracePeriodSeconds: 1
  volumes:
  - {name: cfg, configMap: {name: greet}}
  - {name: sec, secret: {secretName: token}}
  - {name: scratch, emptyDir: {}}
  initContainers:
  - name: writer
    image: busybox
    command: ["sh", "-c", "echo from the writer > /scratch/note"]
    volumeMounts: [{name: scratch, mountPath: /scratch}]
  containers:
  - name: reader
    image: busybox
    command: ["sh", "-c", "cat /cfg/greeting; echo; cat /sec/token; echo; cat /scratch/note; echo $GREETING $TOKEN $ME $CM_greeting; sleep 3600"]
    env:
    - {name: GREETING, valueFrom: {configMapKeyRef: {name: greet, key: greeting}}}
    - {name: TOKEN, valueFrom: {secretKeyRef: {name: token, key: token}}}
    - {name: ME, valueFrom: {fieldRef: {fieldPath: metadata.name}}}
    envFrom:
    - {prefix: CM_, configMapRef: {name: greet}}
    volumeMounts:
    - {name: cfg, mountPath: /cfg, readOnly: true}
    - {name: sec, mountPath: /sec, readOnly: true}
    - {name: scratch, mountPath: /scratch}
"#;

const PROBED: &str = r#"apiVersion: v1
kind: Pod
metadata:
  name: probed
spec:
  nodeName: kl-node
  terminationGracePeriodSeconds: 1
  containers:
  - name: live
    image: busybox
    command: ["sh", "-c", "touch /tmp/healthy; sleep 2; rm /tmp/healthy; sleep 3600"]
    livenessProbe:
      exec: {command: ["cat", "/tmp/healthy"]}
      periodSeconds: 1
      failureThreshold: 1
  - name: web
    image: localhost/klab/echo:1.0
    ports: [{name: http, containerPort: 8080}]
    readinessProbe:
      httpGet: {path: /, port: http}
      periodSeconds: 1
    livenessProbe:
      tcpSocket: {port: 8080}
      periodSeconds: 1
  - name: idle
    image: busybox
    command: ["sleep", "3600"]
    readinessProbe:
      tcpSocket: {port: 9999}
      periodSeconds: 1
      failureThreshold: 1
"#;

pub(crate) fn node_ready(c: &Cluster) -> Option<Value> {
    let n = get(c, &format!("node/{NODE}"))?;
    let ready = n["status"]["conditions"]
        .as_array()?
        .iter()
        .any(|c| c["type"] == "Ready" && c["status"] == "True");
    ready.then_some(n)
}

pub(crate) fn status_of(c: &Cluster, pod: &str) -> Option<Value> {
    get(c, &format!("pod/{pod}")).map(|p| p["status"].clone())
}

pub(crate) fn container(c: &Cluster, pod: &str) -> Option<Value> {
    status_of(c, pod)?["containerStatuses"].get(0).cloned()
}

fn processes_with(marker: &str) -> usize {
    std::fs::read_dir("/proc")
        .unwrap()
        .flatten()
        .filter(|e| {
            std::fs::read(e.path().join("cmdline"))
                .map(|b| {
                    String::from_utf8_lossy(&b)
                        .replace('\0', " ")
                        .contains(marker)
                })
                .unwrap_or(false)
        })
        .count()
}

fn scenario(c: &Cluster, root: &Path, socket: &Path) {
    let log = root.with_extension("log");
    let endpoint = format!("--container-runtime-endpoint=unix://{}", socket.display());
    let port = crate::free_port();
    let manifests = root.with_extension("manifests");
    std::fs::create_dir_all(&manifests).unwrap();
    let static_pod = |script: &str| {
        format!(
            "apiVersion: v1\nkind: Pod\nmetadata:\n  name: st\n  namespace: kube-system\nspec:\n  terminationGracePeriodSeconds: 1\n  containers:\n  - name: c\n    image: busybox\n    command: [\"sh\", \"-c\", {script:?}]\n"
        )
    };
    std::fs::write(manifests.join("st.yaml"), static_pod("sleep 3700")).unwrap();
    let manifest_flag = format!("--pod-manifest-path={}", manifests.display());
    let mut kubelet = start_kubelet(c, root, port, &[&endpoint, &manifest_flag]);

    // The node registers with capacity, addresses and nodeInfo from the real runtime.
    let n = wait_for("node Ready", 60, &log, || node_ready(c));
    let info = &n["status"]["nodeInfo"];
    assert!(
        info["containerRuntimeVersion"]
            .as_str()
            .unwrap()
            .starts_with("containerd://"),
        "{info}"
    );
    assert_eq!(info["kubeProxyVersion"], "");
    assert!(
        n["status"]["capacity"]["memory"]
            .as_str()
            .unwrap()
            .ends_with("Ki")
    );
    assert_eq!(n["metadata"]["labels"]["klab.dev/test"], "yes");
    let lease = kubectl(
        c,
        &["get", "lease", "-n", "kube-node-lease", NODE, "-o", "json"],
    );
    assert!(
        lease.contains(&format!("\"holderIdentity\": \"{NODE}\"")),
        "{lease}"
    );

    // A busybox pod, bound to the node in its manifest, reaches Running with a pod IP.
    let script = "echo hello from busy; trap 'exit 0' TERM; sleep 3601 & wait";
    apply(
        c,
        "busy",
        &pod_manifest("busy", "busybox", "Always", script),
    );
    let st = wait_for("busy Running", 60, &log, || {
        status_of(c, "busy").filter(|s| s["phase"] == "Running")
    });
    let ip = st["podIP"].as_str().unwrap_or_default();
    assert!(ip.starts_with("10.88.77."), "pod IP {ip} from {POD_CIDR}");
    assert_eq!(st["hostIP"], "127.0.0.1");
    let first = st["containerStatuses"][0].clone();
    assert_eq!(first["ready"], true);
    assert!(
        first["imageID"].as_str().unwrap().starts_with("sha256:"),
        "{first}"
    );
    for cond in ["Initialized", "Ready", "ContainersReady", "PodScheduled"] {
        assert!(
            st["conditions"]
                .as_array()
                .unwrap()
                .iter()
                .any(|c| c["type"] == cond && c["status"] == "True"),
            "{cond} in {st}"
        );
    }

    // In-cluster credentials: the ServiceAccount admission plugin mounts a projected volume,
    // and the kubelet fills it with a bound token, the cluster's CA and the namespace.
    kubectl(c, &["create", "serviceaccount", "default"]);
    let ca = std::fs::read_to_string(c.path("ca.crt")).unwrap();
    kubectl(
        c,
        &[
            "create",
            "configmap",
            "kube-root-ca.crt",
            &format!("--from-file=ca.crt={}", c.path("ca.crt")),
        ],
    );
    // The container prints what it finds at the upstream path, then tries to write there.
    let script = "D=/var/run/secrets/kubernetes.io/serviceaccount; cat $D/namespace; echo; \
                  cat $D/token; echo; cat $D/ca.crt; touch $D/x 2>/dev/null || echo read-only; \
                  sleep 3603";
    apply(
        c,
        "creds",
        &pod_manifest("creds", "busybox", "Always", script),
    );
    wait_for("creds Running", 60, &log, || {
        status_of(c, "creds").filter(|s| s["phase"] == "Running")
    });
    let spec = get(c, "pod/creds").unwrap()["spec"].clone();
    assert_eq!(spec["serviceAccountName"], "default");
    let volume = spec["volumes"][0]["name"].as_str().unwrap().to_owned();
    assert!(volume.starts_with("kube-api-access-"), "{spec}");
    let printed = wait_for("creds' output", 30, &log, || {
        kubelet_get(c, port, "/containerLogs/default/creds/c", true)
            .filter(|l| l.ends_with("read-only\n"))
    });
    let mut lines = printed.lines();
    assert_eq!(lines.next(), Some("default"), "{printed}");
    let token = lines.next().unwrap_or_default().to_owned();
    let rest: Vec<&str> = lines.collect();
    assert_eq!(rest.join("\n") + "\n", format!("{ca}read-only\n"));
    let who = ok(c.kubectl_token(&token, &["auth", "whoami"]));
    assert!(
        who.contains("system:serviceaccount:default:default"),
        "{who}"
    );
    kubectl(c, &["delete", "pod", "creds", "--wait=false"]);

    // The kubelet's server shows the container's log, read from the CRI log file.
    let logs = kubelet_get(c, port, "/containerLogs/default/busy/c", true).unwrap();
    assert_eq!(logs, "hello from busy\n");

    // Volumes: a configMap and a secret written as files, an emptyDir shared by two containers;
    // the environment from the same configMap and secret and from the pod's own fields.
    apply(c, "vols", VOLS);
    wait_for("vols Running", 60, &log, || {
        status_of(c, "vols").filter(|s| s["phase"] == "Running")
    });
    let logs = wait_for("the reader's log", 30, &log, || {
        kubelet_get(c, port, "/containerLogs/default/vols/reader", true)
            .filter(|l| l.lines().count() >= 4)
    });
    assert_eq!(
        logs,
        "hello\ns3cret\nfrom the writer\nhello s3cret vols hello\n"
    );

    // A crashing container is restarted, then backs off.
    apply(
        c,
        "crash",
        &pod_manifest("crash", "busybox", "Always", "exit 1"),
    );
    let crash = wait_for("crash in CrashLoopBackOff", 60, &log, || {
        container(c, "crash").filter(|s| s["state"]["waiting"]["reason"] == "CrashLoopBackOff")
    });
    assert!(crash["restartCount"].as_i64().unwrap() > 0, "{crash}");
    assert_eq!(crash["lastState"]["terminated"]["exitCode"], 1);
    let reasons = wait_for("the crash pod's events", 30, &log, || {
        let out = kubectl(
            c,
            &[
                "get",
                "events",
                "--field-selector",
                "involvedObject.name=crash",
                "-o",
                "json",
            ],
        );
        let v: Value = serde_json::from_str(&out).ok()?;
        let reasons: Vec<String> = v["items"]
            .as_array()?
            .iter()
            .filter(|e| e["source"]["component"] == "kubelet")
            .filter_map(|e| e["reason"].as_str().map(String::from))
            .collect();
        reasons.iter().any(|r| r == "BackOff").then_some(reasons)
    });
    for want in ["Pulled", "Created", "Started"] {
        assert!(reasons.iter().any(|r| r == want), "{want} in {reasons:?}");
    }

    // Probes: a failing liveness probe restarts its container; readiness decides `ready`.
    apply(c, "probed", PROBED);
    let statuses = |c: &Cluster| -> Option<Vec<Value>> {
        status_of(c, "probed")?["containerStatuses"]
            .as_array()
            .cloned()
    };
    let by_name = |all: &[Value], n: &str| all.iter().find(|s| s["name"] == n).cloned().unwrap();
    let all = wait_for("the liveness probe restarting `live`", 90, &log, || {
        statuses(c).filter(|all| {
            all.iter()
                .any(|s| s["name"] == "live" && s["restartCount"].as_i64() >= Some(1))
                && all.iter().any(|s| s["name"] == "web" && s["ready"] == true)
        })
    });
    assert_eq!(
        by_name(&all, "web")["restartCount"],
        0,
        "a passing tcpSocket liveness probe"
    );
    assert_eq!(
        by_name(&all, "idle")["ready"],
        false,
        "a failing readiness probe"
    );
    assert!(by_name(&all, "idle")["state"]["running"].is_object());
    let st = status_of(c, "probed").unwrap();
    assert!(
        st["conditions"]
            .as_array()
            .unwrap()
            .iter()
            .any(|c| c["type"] == "Ready" && c["status"] == "False"),
        "{st}"
    );

    // A startup probe: until it passes the container is neither started nor ready, liveness
    // waits for it (the same failing check as liveness would say "liveness"), and failing
    // failureThreshold times restarts the container. The test passes it by creating a file in
    // a hostPath folder.
    let gate = root.with_extension("gate");
    std::fs::create_dir_all(&gate).unwrap();
    apply(
        c,
        "slow",
        &format!(
            "apiVersion: v1\nkind: Pod\nmetadata:\n  name: slow\nspec:\n  nodeName: {NODE}\n  terminationGracePeriodSeconds: 1\n  volumes:\n  - name: gate\n    hostPath:\n      path: {}\n  containers:\n  - name: c\n    image: busybox\n    command: [\"sleep\", \"3605\"]\n    volumeMounts:\n    - name: gate\n      mountPath: /gate\n    startupProbe:\n      exec:\n        command: [\"cat\", \"/gate/up\"]\n      periodSeconds: 1\n      failureThreshold: 2\n    livenessProbe:\n      exec:\n        command: [\"cat\", \"/gate/up\"]\n      periodSeconds: 1\n      failureThreshold: 1\n    readinessProbe:\n      exec:\n        command: [\"true\"]\n      periodSeconds: 1\n",
            gate.display()
        ),
    );
    let slow = |c: &Cluster| status_of(c, "slow").map(|s| s["containerStatuses"][0].clone());
    let waiting = wait_for("the startup probe restarting `slow`", 60, &log, || {
        slow(c)
            .filter(|s| s["restartCount"].as_i64() >= Some(1) && s["state"]["running"].is_object())
    });
    assert_eq!(waiting["started"], false, "{waiting}");
    assert_eq!(waiting["ready"], false, "{waiting}");
    std::fs::write(gate.join("up"), "up\n").unwrap();
    let up = wait_for("`slow` started and ready", 60, &log, || {
        slow(c).filter(|s| s["started"] == true && s["ready"] == true)
    });
    assert!(up["state"]["running"].is_object(), "{up}");
    let events = kubectl(
        c,
        &[
            "get",
            "events",
            "--field-selector",
            "involvedObject.name=slow",
        ],
    );
    assert!(events.contains("failed startup probe"), "{events}");
    assert!(!events.contains("failed liveness probe"), "{events}");
    kubectl(c, &["delete", "pod", "slow", "--wait=false"]);

    // SIGKILL the kubelet and start it again: the running container is adopted, not restarted.
    let before = container(c, "busy").unwrap();
    drop(kubelet);
    kubelet = start_kubelet(c, root, port, &[&endpoint, &manifest_flag]);
    apply(
        c,
        "after",
        &pod_manifest("after", "busybox", "Always", "sleep 3602"),
    );
    wait_for("a pod created after the restart Running", 60, &log, || {
        status_of(c, "after").filter(|s| s["phase"] == "Running")
    });
    let after = container(c, "busy").unwrap();
    assert_eq!(after["containerID"], before["containerID"]);
    assert_eq!(after["restartCount"], before["restartCount"]);
    assert!(
        processes_with("sleep 3601") > 0,
        "the adopted processes still run"
    );

    // A changed image replaces the container (its spec hash changed).
    kubectl(c, &["set", "image", "pod/busy", "c=busybox:stable"]);
    let replaced = wait_for("busy's container replaced", 60, &log, || {
        container(c, "busy").filter(|s| {
            s["containerID"] != before["containerID"] && s["state"]["running"].is_object()
        })
    });
    assert_eq!(replaced["image"], "busybox:stable");
    assert_eq!(replaced["restartCount"], 1);

    // The static pod runs for real, and an edited manifest restarts it with the new spec.
    let mirror = |c: &Cluster| -> Option<Value> {
        let out = c.kubectl_with(
            Path::new("kubectl"),
            &[
                "get",
                "pod",
                "-n",
                "kube-system",
                &format!("st-{NODE}"),
                "-o",
                "json",
            ],
        );
        out.status
            .success()
            .then(|| serde_json::from_slice(&out.stdout).ok())
            .flatten()
    };
    wait_for("the static pod's mirror Running", 60, &log, || {
        mirror(c).filter(|m| m["status"]["phase"] == "Running")
    });
    assert!(processes_with("sleep 3700") > 0, "the static pod runs");
    std::fs::write(manifests.join("st.yaml"), static_pod("sleep 3701")).unwrap();
    wait_for("the edited static pod Running", 60, &log, || {
        mirror(c).filter(|m| {
            m["spec"]["containers"][0]["command"][2] == "sleep 3701"
                && m["status"]["phase"] == "Running"
        })
    });
    wait_for("the old static pod's process gone", 30, &log, || {
        (processes_with("sleep 3700") == 0).then_some(())
    });
    assert!(processes_with("sleep 3701") > 0, "the new static pod runs");

    // Deleting the pod stops its processes, then the kubelet removes the object.
    kubectl(c, &["delete", "pod", "busy", "--wait=false"]);
    wait_for("busy removed from the API", 60, &log, || {
        get(c, "pod/busy").is_none().then_some(())
    });
    assert_eq!(processes_with("sleep 3601"), 0, "busy's processes are gone");
    drop(kubelet);
}

#[test]
fn kubelet_runs_pods_on_real_containerd() {
    if !crate::containerd_prerequisites(&["kubectl", "openssl"]) {
        return;
    }
    let keys = tempfile::tempdir().unwrap();
    let flags = sa_key_flags(keys.path());
    let flags: Vec<&str> = flags.iter().map(String::as_str).collect();
    let Some(cluster) = Cluster::start(Backend::KlabStore, &flags) else {
        return;
    };
    let dir: PathBuf = cluster.dir.path().to_path_buf();
    crate::with_containerd(&dir, POD_CIDR, |socket| {
        scenario(&cluster, &dir.join("kubelet"), socket)
    });
}

#[test]
fn kubelet_simulated_runtime_and_static_pods() {
    if require("kubectl").is_none() || require("curl").is_none() {
        return;
    }
    let keys = tempfile::tempdir().unwrap();
    let sa = sa_key_flags(keys.path());
    let Some(c) = Cluster::start(
        Backend::KlabStore,
        &[
            "--kubelet-client-certificate={dir}/kube-apiserver-kubelet-client.crt",
            "--kubelet-client-key={dir}/kube-apiserver-kubelet-client.key",
            "--kubelet-preferred-address-types=InternalIP,Hostname",
            &sa[0],
            &sa[1],
        ],
    ) else {
        return;
    };
    // What kubeadm binds (and `klab up`): the API server's kubelet client may use kubelets'
    // API; so may tina (a bearer token), to prove the TokenReview path.
    for (name, user) in [
        (
            "kubeadm:apiserver-kubelet-client",
            "kube-apiserver-kubelet-client",
        ),
        ("tina-kubelet-api", "tina"),
    ] {
        kubectl(
            &c,
            &[
                "create",
                "clusterrolebinding",
                name,
                "--clusterrole=system:kubelet-api-admin",
                &format!("--user={user}"),
            ],
        );
    }
    let root = c.dir.path().join("kubelet");
    let manifests = c.dir.path().join("manifests");
    std::fs::create_dir_all(&manifests).unwrap();
    let web = |image: &str| {
        format!(
            "apiVersion: v1\nkind: Pod\nmetadata:\n  name: web\n  namespace: kube-system\nspec:\n  containers:\n  - name: web\n    image: {image}\n"
        )
    };
    std::fs::write(manifests.join("web.yaml"), web("localhost/klab/echo:1.0")).unwrap();
    // The static pod folder comes from a KubeletConfiguration file, as kubeadm writes it.
    let config = c.dir.path().join("kubelet-config.yaml");
    std::fs::write(
        &config,
        format!(
            "apiVersion: kubelet.config.k8s.io/v1beta1\nkind: KubeletConfiguration\nstaticPodPath: {}\nport: 1\n",
            manifests.display()
        ),
    )
    .unwrap();
    let config_flag = format!("--config={}", config.display());
    let port = crate::free_port();
    let kubelet = start_kubelet(&c, &root, port, &["--runtime=simulated", &config_flag]);
    let log = root.with_extension("log");
    let n = wait_for("node Ready", 60, &log, || node_ready(&c));
    assert_eq!(
        n["status"]["nodeInfo"]["containerRuntimeVersion"],
        "simulated://"
    );

    apply(
        &c,
        "sim",
        &pod_manifest("sim", "busybox", "Always", "sleep 1"),
    );
    let st = wait_for("sim Running", 60, &log, || {
        status_of(&c, "sim").filter(|s| s["phase"] == "Running")
    });
    assert_eq!(st["message"], "simulated: no containers run");
    assert!(
        st["conditions"]
            .as_array()
            .unwrap()
            .iter()
            .any(|c| c["type"] == "klab.dev/Simulated" && c["status"] == "True"),
        "{st}"
    );
    assert!(st.get("podIP").is_none(), "no pod IP is invented: {st}");

    // The :10250 server: who may call it is the API server's decision (Webhook).
    assert_eq!(
        kubelet_get(&c, port, "/healthz", true).as_deref(),
        Some("ok")
    );
    let has_sim = |list: &str| {
        let pods: Value = serde_json::from_str(list).unwrap_or_default();
        pods["items"]
            .as_array()
            .is_some_and(|a| a.iter().any(|p| p["metadata"]["name"] == "sim"))
    };
    assert!(has_sim(&kubelet_get(&c, port, "/pods", true).unwrap()));
    // No credentials with --anonymous-auth=false: 401, upstream's body.
    assert_eq!(
        kubelet_call(port, &c, Caller::Nobody, "GET", "/pods"),
        (401, "Unauthorized".into())
    );
    // A certificate the cluster's CA signed, for a user without RBAC on nodes/proxy: 403.
    assert_eq!(
        kubelet_call(port, &c, Caller::Cert("alice"), "GET", "/pods"),
        (
            403,
            "Forbidden (user=alice, verb=get, resource=nodes, subresource=proxy)".into()
        )
    );
    let exec = "/exec/default/sim/c?command=id&output=1";
    assert_eq!(
        kubelet_call(port, &c, Caller::Cert("alice"), "POST", exec),
        (
            403,
            "Forbidden (user=alice, verb=create, resource=nodes, subresource=proxy)".into()
        )
    );
    // A bearer token, reviewed by the API server (TokenReview), of a user bound to
    // system:kubelet-api-admin; a token nobody issued is 401.
    let (code, body) = kubelet_call(port, &c, Caller::Token("s3cret"), "GET", "/pods");
    assert!(code == 200 && has_sim(&body), "{code} {body}");
    assert_eq!(
        kubelet_call(port, &c, Caller::Token("forged"), "GET", "/pods"),
        (401, "Unauthorized".into())
    );
    // A service account's token is reviewed too: known, and without RBAC, refused.
    kubectl(&c, &["create", "serviceaccount", "watcher"]);
    let token = kubectl(&c, &["create", "token", "watcher"]);
    assert_eq!(
        kubelet_call(port, &c, Caller::Token(token.trim()), "GET", "/pods"),
        (
            403,
            "Forbidden (user=system:serviceaccount:default:watcher, verb=get, resource=nodes, subresource=proxy)".into()
        )
    );
    // Through the API server: nodes/proxy, sent on with the API server's kubelet client
    // certificate, which the kubelet lets in by asking the API server in turn.
    let raw = format!("/api/v1/nodes/{NODE}/proxy/pods");
    assert!(has_sim(&kubectl(&c, &["get", "--raw", &raw])));
    // Any method goes on, and the kubelet's answer comes back as it is (its status and body).
    assert_eq!(
        c.curl(Some("admin"), "POST", &raw, "text/plain", Some(b"x")),
        (405, "only GET is served\n".into())
    );
    // /stats/summary: the node's figures are real; the simulated pod is listed without any,
    // and the summary says why. Its own subresource: nodes/stats.
    let summary: Value = serde_json::from_str(&kubectl(
        &c,
        &[
            "get",
            "--raw",
            &format!("/api/v1/nodes/{NODE}/proxy/stats/summary"),
        ],
    ))
    .unwrap();
    assert_eq!(summary["node"]["nodeName"], NODE);
    assert!(
        summary["node"]["memory"]["workingSetBytes"].as_u64() > Some(0),
        "{summary}"
    );
    assert!(
        summary["node"]["cpu"]["usageCoreNanoSeconds"].as_u64() > Some(0),
        "{summary}"
    );
    assert!(
        summary["node"]["fs"]["capacityBytes"].as_u64() > Some(0),
        "{summary}"
    );
    let sim = summary["pods"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["podRef"]["name"] == "sim")
        .unwrap_or_else(|| panic!("{summary}"));
    assert!(sim.get("memory").is_none(), "{sim}");
    assert!(summary["klabNote"].as_str().unwrap().contains("simulated"));
    assert_eq!(
        kubelet_call(port, &c, Caller::Cert("alice"), "GET", "/stats/summary"),
        (
            403,
            "Forbidden (user=alice, verb=get, resource=nodes, subresource=stats)".into()
        )
    );
    let out = c.kubectl_with(
        Path::new("kubectl"),
        &["--context=alice", "get", "--raw", &raw],
    );
    assert!(
        String::from_utf8_lossy(&out.stderr).contains(
            "User \"alice\" cannot get resource \"nodes/proxy\" in API group \"\" at the cluster scope"
        ),
        "{out:?}"
    );

    // The static pod is mirrored into the API, and an edited manifest replaces it.
    let mirror = |c: &Cluster| -> Option<Value> {
        let out = c.kubectl_with(
            Path::new("kubectl"),
            &[
                "get",
                "pod",
                "-n",
                "kube-system",
                &format!("web-{NODE}"),
                "-o",
                "json",
            ],
        );
        out.status
            .success()
            .then(|| serde_json::from_slice(&out.stdout).ok())
            .flatten()
    };
    let m = wait_for("mirror pod Running", 60, &log, || {
        mirror(&c).filter(|m| m["status"]["phase"] == "Running")
    });
    let hash = m["metadata"]["annotations"]["kubernetes.io/config.mirror"].clone();
    assert!(hash.is_string(), "{m}");
    std::fs::write(manifests.join("web.yaml"), web("busybox:stable")).unwrap();
    let m2 = wait_for("mirror pod of the edited manifest", 60, &log, || {
        mirror(&c).filter(|m| {
            m["metadata"]["annotations"]["kubernetes.io/config.mirror"] != hash
                && m["status"]["phase"] == "Running"
        })
    });
    assert_eq!(m2["spec"]["containers"][0]["image"], "busybox:stable");

    // Deleting a simulated pod: nothing to stop, the kubelet removes the object.
    kubectl(&c, &["delete", "pod", "sim", "--wait=false"]);
    wait_for("sim removed from the API", 60, &log, || {
        get(&c, "pod/sim").is_none().then_some(())
    });

    // --authorization-mode=AlwaysAllow is still there: any authenticated caller gets in.
    drop(kubelet);
    let _open = start_kubelet(
        &c,
        &root,
        port,
        &[
            "--runtime=simulated",
            "--authorization-mode=AlwaysAllow",
            "--anonymous-auth=false",
        ],
    );
    let (code, _) = wait_for("the AlwaysAllow kubelet answering", 60, &log, || {
        let r = kubelet_call(port, &c, Caller::Cert("alice"), "GET", "/pods");
        (r.0 != 0).then_some(r)
    });
    assert_eq!(code, 200);
    assert_eq!(
        kubelet_call(port, &c, Caller::Nobody, "GET", "/pods").0,
        401
    );
}
