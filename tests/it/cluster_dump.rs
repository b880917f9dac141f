//! `klab cluster-info dump` beside real `kubectl cluster-info dump` on klab's API server (with
//! klab's scheduler and simulated nodes): the same files, the same objects, the same stream
//! order and log lines; the diagnosis of a fixture dump as the book shows it; and the errors a
//! learner meets (a dead API server, a folder that cannot be written) leaving nothing behind.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::Command;

use k8s_openapi::api::core::v1::Event;
use kube::api::{Api, ListParams};
use serde_json::{Value, json};

use crate::sim::{Plane, eventually};
use crate::{klab, require};

/// Objects a learner creates with kubectl: a node that is down, a service, a deployment (no
/// controller-manager runs here, so it stays without pods) and a pod too big for any node.
const OBJECTS: &str = r#"
apiVersion: v1
kind: Node
metadata:
  name: down
spec:
  taints:
  - key: node.kubernetes.io/unreachable
    effect: NoSchedule
status:
  conditions:
  - type: Ready
    status: "False"
    reason: KubeletNotReady
    message: container runtime network not ready
---
apiVersion: v1
kind: Service
metadata:
  name: web
  namespace: default
spec:
  selector:
    app: web
  ports:
  - port: 80
---
apiVersion: apps/v1
kind: Deployment
metadata:
  name: web
  namespace: default
spec:
  replicas: 1
  selector:
    matchLabels:
      app: web
  template:
    metadata:
      labels:
        app: web
    spec:
      containers:
      - name: web
        image: busybox
---
apiVersion: v1
kind: Pod
metadata:
  name: big
  namespace: default
spec:
  initContainers:
  - name: setup
    image: busybox
  containers:
  - name: app
    image: busybox
    resources:
      requests:
        cpu: "8"
"#;

/// Every file below `dir`, as paths relative to it.
fn files(dir: &Path) -> BTreeSet<String> {
    fn walk(base: &Path, dir: &Path, out: &mut BTreeSet<String>) {
        for e in std::fs::read_dir(dir).unwrap() {
            let p = e.unwrap().path();
            if p.is_dir() {
                walk(base, &p, out);
            } else {
                out.insert(p.strip_prefix(base).unwrap().display().to_string());
            }
        }
    }
    let mut out = BTreeSet::new();
    walk(dir, dir, &mut out);
    out
}

/// A list file's kind and apiVersion and its items by namespace/name/resourceVersion.
fn identities(path: &Path) -> (String, String, BTreeSet<String>) {
    let v: Value = serde_json::from_str(&std::fs::read_to_string(path).unwrap())
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let s = |v: &Value, p: &str| {
        v.pointer(p)
            .and_then(Value::as_str)
            .unwrap_or("")
            .to_string()
    };
    let items = v["items"]
        .as_array()
        .unwrap_or_else(|| panic!("{}: no items array", path.display()))
        .iter()
        .map(|i| {
            format!(
                "{}/{}@{}",
                s(i, "/metadata/namespace"),
                s(i, "/metadata/name"),
                s(i, "/metadata/resourceVersion")
            )
        })
        .collect();
    (s(&v, "/kind"), s(&v, "/apiVersion"), items)
}

/// The lines of a stdout dump that are not inside a JSON document: the documents' braces and
/// the log lines, in order — kubectl's order and separators.
fn skeleton(text: &str) -> Vec<String> {
    text.lines()
        .filter(|l| !l.starts_with(' '))
        .map(String::from)
        .collect()
}

struct Run {
    kubectl: PathBuf,
    kubeconfig: PathBuf,
}

impl Run {
    fn kubectl(&self, args: &[&str]) -> String {
        let out = Command::new(&self.kubectl)
            .arg("--kubeconfig")
            .arg(&self.kubeconfig)
            .args(args)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "kubectl {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap()
    }

    fn klab(&self, args: &[&str]) -> String {
        let out = klab()
            .args(["cluster-info", "dump", "--kubeconfig"])
            .arg(&self.kubeconfig)
            .args(args)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "klab {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(out.stderr.is_empty(), "progress must be quiet when piped");
        String::from_utf8(out.stdout).unwrap()
    }
}

#[test]
fn dump_matches_kubectl_file_for_file() {
    let Some(kubectl) = require("kubectl") else {
        return;
    };
    let Some(p) = Plane::start() else { return };
    p.nodes(&["small"], "1", "2Gi", json!([]));
    let run = Run {
        kubectl,
        kubeconfig: p.cluster.kubeconfig.clone(),
    };
    let file = p.cluster.dir.path().join("objects.yaml");
    std::fs::write(&file, OBJECTS).unwrap();
    run.kubectl(&["apply", "-f", file.to_str().unwrap()]);
    run.kubectl(&[
        "run",
        "lone",
        "--image=busybox",
        "--restart=Never",
        "--",
        "sleep",
        "1",
    ]);
    {
        let _scheduler = p.component("scheduler", "dump", &["--leader-elect=false"]);
        let api: Api<Event> = Api::namespaced(p.client.clone(), "default");
        let failed = || {
            p.rt.block_on(api.list(&ListParams::default().fields("reason=FailedScheduling")))
                .map(|l| !l.items.is_empty())
                .unwrap_or(false)
        };
        assert!(
            eventually(30, failed),
            "no FailedScheduling event: {}",
            p.log("scheduler", "dump")
        );
        // The scheduler stops here, so both dumps see the same, settled cluster.
    }

    let base = p.cluster.dir.path();
    let (mine, theirs) = (base.join("klab-dump"), base.join("kubectl-dump"));
    let said = run.klab(&["--output-directory", mine.to_str().unwrap()]);
    assert_eq!(said, format!("Cluster info dumped to {}\n", mine.display()));
    run.kubectl(&[
        "cluster-info",
        "dump",
        "--output-directory",
        theirs.to_str().unwrap(),
    ]);

    let (my_files, their_files) = (files(&mine), files(&theirs));
    let klab_only: BTreeSet<String> = [
        "klab/certificates.txt",
        "klab/components.txt",
        "klab/diagnosis.txt",
        "klab/store.txt",
    ]
    .map(String::from)
    .into();
    assert_eq!(
        my_files
            .difference(&their_files)
            .cloned()
            .collect::<BTreeSet<_>>(),
        klab_only
    );
    assert_eq!(
        their_files.difference(&my_files).count(),
        0,
        "{their_files:?}"
    );
    assert!(
        their_files.contains("default/big/logs.txt"),
        "{their_files:?}"
    );
    let mut kinds = BTreeMap::new();
    for f in &their_files {
        if f.ends_with(".json") {
            let ours = identities(&mine.join(f));
            assert_eq!(ours, identities(&theirs.join(f)), "{f}");
            kinds.insert(f.clone(), ours.0);
        } else {
            // Logs: kubectl's markers and the line it writes where the log request fails.
            assert_eq!(
                std::fs::read_to_string(mine.join(f)).unwrap(),
                std::fs::read_to_string(theirs.join(f)).unwrap(),
                "{f}"
            );
        }
    }
    assert_eq!(kinds["nodes.json"], "NodeList");
    assert_eq!(
        kinds["default/replication-controllers.json"],
        "ReplicationControllerList"
    );
    let big = std::fs::read_to_string(mine.join("default/big/logs.txt")).unwrap();
    assert!(
        big.starts_with("==== START logs for container setup of pod default/big ====\n"),
        "{big}"
    );
    assert!(
        big.ends_with("==== END logs for container app of pod default/big ====\n"),
        "{big}"
    );

    // The diagnosis of kubectl's dump, read back, is klab's diagnosis.txt: same objects.
    let diagnosis = std::fs::read_to_string(mine.join("klab/diagnosis.txt")).unwrap();
    let from_kubectl =
        klab::tools::cluster_info::diagnosis::Objects::from_dump_dir(&theirs).unwrap();
    let read_back = klab::tools::cluster_info::diagnosis::diagnose(&from_kubectl);
    assert_eq!(diagnosis, read_back);
    assert!(
        diagnosis.contains(
            "node down is NotReady: KubeletNotReady: container runtime network not ready"
        ),
        "{diagnosis}"
    );
    assert!(
        diagnosis.contains("pod default/big is Pending, not scheduled: 0/2 nodes are available"),
        "{diagnosis}"
    );
    assert!(diagnosis.contains("(FailedScheduling, "), "{diagnosis}");
    assert!(
        diagnosis.contains("node down has taints node.kubernetes.io/unreachable:NoSchedule"),
        "{diagnosis}"
    );
    let store = std::fs::read_to_string(mine.join("klab/store.txt")).unwrap();
    assert!(
        store.contains(&format!("{} is healthy", p.cluster.etcd_endpoint)),
        "{store}"
    );
    let certs = std::fs::read_to_string(mine.join("klab/certificates.txt")).unwrap();
    assert!(
        certs.contains("user admin, groups system:masters"),
        "{certs}"
    );
    let components = std::fs::read_to_string(mine.join("klab/components.txt")).unwrap();
    assert!(components.contains("kube-apiserver (pid "), "{components}");

    // To stdout: the same documents in the same order, the same log lines.
    let (mine_out, theirs_out) = (run.klab(&[]), run.kubectl(&["cluster-info", "dump"]));
    assert_eq!(skeleton(&mine_out), skeleton(&theirs_out));

    // YAML: the same files, and the same `---` before every document but the first.
    let (mine_y, theirs_y) = (base.join("klab-yaml"), base.join("kubectl-yaml"));
    run.klab(&["-o", "yaml", "--output-directory", mine_y.to_str().unwrap()]);
    run.kubectl(&[
        "cluster-info",
        "dump",
        "-o",
        "yaml",
        "--output-directory",
        theirs_y.to_str().unwrap(),
    ]);
    let their_yaml = files(&theirs_y);
    assert_eq!(
        files(&mine_y)
            .difference(&their_yaml)
            .cloned()
            .collect::<BTreeSet<_>>(),
        klab_only
    );
    for f in their_yaml.iter().filter(|f| f.ends_with(".yaml")) {
        let first = |d: &Path| {
            std::fs::read_to_string(d.join(f))
                .unwrap()
                .lines()
                .next()
                .unwrap_or("")
                .to_string()
        };
        assert_eq!(first(&mine_y), first(&theirs_y), "{f}");
    }

    // -A: every namespace, the same files as kubectl's.
    let (mine_a, theirs_a) = (base.join("klab-all"), base.join("kubectl-all"));
    run.klab(&["-A", "--output-directory", mine_a.to_str().unwrap()]);
    run.kubectl(&[
        "cluster-info",
        "dump",
        "--all-namespaces",
        "--output-directory",
        theirs_a.to_str().unwrap(),
    ]);
    let their_all = files(&theirs_a);
    assert!(their_all.contains("kube-public/pods.json"), "{their_all:?}");
    assert_eq!(
        files(&mine_a)
            .difference(&their_all)
            .cloned()
            .collect::<BTreeSet<_>>(),
        klab_only
    );
    assert_eq!(files(&mine_a).len(), their_all.len() + klab_only.len());
}

/// The fixture: a kind-like cluster with a worker gone, a pod too big, a crashing container
/// and a failing readiness probe, in kubectl's dump layout.
#[test]
fn diagnosis_of_a_troubled_cluster() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures/cluster-dump");
    let objects = klab::tools::cluster_info::diagnosis::Objects::from_dump_dir(&dir).unwrap();
    let text = klab::tools::cluster_info::diagnosis::diagnose(&objects);
    crate::snap!("cluster_dump_diagnosis", text);
}

fn dead_kubeconfig(dir: &Path) -> PathBuf {
    let kc = dir.join("kubeconfig");
    std::fs::write(
        &kc,
        format!(
            "apiVersion: v1\nkind: Config\nclusters:\n- name: c\n  cluster:\n    server: https://127.0.0.1:{}\n    insecure-skip-tls-verify: true\nusers:\n- name: u\n  user:\n    token: t\ncontexts:\n- name: x\n  context: {{cluster: c, user: u}}\ncurrent-context: x\n",
            crate::free_port()
        ),
    )
    .unwrap();
    kc
}

#[test]
fn a_dead_api_server_leaves_no_dump() {
    let dir = crate::scratch("dump-dead");
    let kc = dead_kubeconfig(&dir);
    let fresh = dir.join("fresh");
    let kept = dir.join("kept");
    std::fs::create_dir_all(&kept).unwrap();
    std::fs::write(kept.join("notes.txt"), "mine\n").unwrap();
    for out_dir in [&fresh, &kept] {
        let out = klab()
            .args(["cluster-info", "dump", "--kubeconfig"])
            .arg(&kc)
            .arg("--output-directory")
            .arg(out_dir)
            .output()
            .unwrap();
        assert!(!out.status.success());
        let stderr = String::from_utf8(out.stderr).unwrap();
        assert!(
            stderr.contains("listing nodes") && stderr.contains("klab probe"),
            "{stderr}"
        );
        assert!(out.stdout.is_empty());
    }
    assert!(!fresh.exists(), "a failed dump leaves no folder behind");
    assert_eq!(files(&kept), BTreeSet::from(["notes.txt".to_string()]));
}

#[test]
fn an_unwritable_output_directory_is_named() {
    let dir = crate::scratch("dump-unwritable");
    let kc = dead_kubeconfig(&dir);
    // A regular file where a folder should be: even root cannot write below it.
    std::fs::write(dir.join("file"), "x").unwrap();
    let target = dir.join("file/dump");
    let out = klab()
        .args(["cluster-info", "dump", "--kubeconfig"])
        .arg(&kc)
        .arg("--output-directory")
        .arg(&target)
        .output()
        .unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8(out.stderr).unwrap();
    assert!(
        stderr.contains(&format!("cannot write the dump into {}", target.display())),
        "{stderr}"
    );
    assert!(stderr.contains("leave out --output-directory"), "{stderr}");
    assert_eq!(
        files(&dir),
        BTreeSet::from(["file".to_string(), "kubeconfig".to_string()])
    );
}
