//! `klab lab`: the labs parse and match the book; the engine's output (list, validate, a
//! step, a failing check, hints, a Killercoda export) is snapshot-tested in-process; and the
//! labs run end to end — setup, each step's checks fail, its solution runs, the checks pass,
//! reset leaves the cluster clean — through the `klab` binary, on a real klab API server
//! (over real etcd with client certificates) with klab's controller-manager and scheduler.

use std::path::{Path, PathBuf};
use std::process::Command;

use klab::lab::spec::Need;
use klab::lab::{Cluster as LabCluster, Engine, catalog, render};
use serde_json::json;

use crate::apiserver::harness::{Backend, Cluster, Proc};
use crate::sim::Plane;
use crate::{capture, klab, now, require, scratch, snap};

fn labs() -> Vec<klab::lab::Lab> {
    catalog::load(None).expect("the built-in labs are valid")
}

#[test]
fn the_built_in_labs_are_the_labs_folder() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("labs");
    let from_dir = catalog::load(Some(&dir)).unwrap();
    let names = |l: &[klab::lab::Lab]| l.iter().map(|l| l.name.clone()).collect::<Vec<_>>();
    assert_eq!(
        names(&from_dir),
        names(&labs()),
        "src/lab/catalog.rs EMBEDDED"
    );
    assert!(from_dir.len() >= 10);
}

#[test]
fn list_and_validate() {
    let labs = labs();
    snap!("lab_list", capture(|o| render::list(&labs, o).unwrap()));
    snap!(
        "lab_list_yaml",
        capture(|o| render::list_structured(&labs, klab::cli::OutputFormat::Yaml, o).unwrap())
    );
    snap!(
        "lab_validate",
        capture(|o| klab::lab::validate(&labs, o).unwrap())
    );
}

#[test]
fn a_broken_lab_file_is_named_with_its_field() {
    let dir = scratch("lab-broken");
    let lab = dir.join("01-broken");
    std::fs::create_dir_all(&lab).unwrap();
    std::fs::write(
        lab.join("lab.yaml"),
        "title: T\nlevel: beginner\ntime: 15m\nintro: I\nsteps:\n- title: S\n  instructions: do it\n  check:\n  - deployment: web\n  solution: 'true'\n",
    )
    .unwrap();
    let out = klab()
        .args(["lab", "--labs-dir"])
        .arg(&dir)
        .arg("validate")
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert_eq!(
        String::from_utf8_lossy(&out.stderr),
        "error: target/test-scratch/lab-broken/01-broken/lab.yaml: steps[0].check[0]: deployment: \"web\" is not NAMESPACE/NAME\n"
    );
}

/// The book's lab chapters are generated from the labs: regenerate with `KLAB_BLESS=1`.
#[test]
fn book_chapters_are_the_labs() {
    let book = Path::new(env!("CARGO_MANIFEST_DIR")).join("book/src/labs");
    for lab in labs() {
        let page = book.join(format!("{}.md", lab.name));
        let want = render::markdown(&lab);
        if std::env::var_os("KLAB_BLESS").is_some() {
            std::fs::create_dir_all(&book).unwrap();
            std::fs::write(&page, &want).unwrap();
        }
        let have = std::fs::read_to_string(&page).unwrap_or_default();
        assert!(
            have == want,
            "{} drifted from labs/{}/lab.yaml: run `KLAB_BLESS=1 cargo test --test it lab::book_chapters_are_the_labs`",
            page.display(),
            lab.name
        );
    }
}

/// A cluster folder with no API server behind it: enough for file checks, hints and status.
fn offline_cluster(name: &str) -> LabCluster {
    let dir = scratch(name);
    std::fs::create_dir_all(dir.join("kubernetes/pki")).unwrap();
    std::fs::copy(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures/kubeadm/pki/ca.crt"),
        dir.join("kubernetes/pki/ca.crt"),
    )
    .unwrap();
    std::fs::write(dir.join("cluster.json"), "{}\n").unwrap();
    LabCluster::new("klab", Some(dir))
}

#[test]
fn a_session_start_check_hints_status() {
    let labs = labs();
    let engine = Engine {
        labs: &labs,
        cluster: offline_cluster("lab-session"),
        now: now(),
    };
    let mut text = String::new();
    text.push_str("$ klab lab start 02-the-front-door\n");
    text.push_str(&capture(|o| engine.start("02-the-front-door", o).unwrap()));
    text.push_str("\n$ klab lab check\n");
    text.push_str(&capture(|o| assert!(!engine.check(None, o).unwrap())));
    for _ in 0..3 {
        text.push_str("\n$ klab lab hint\n");
        text.push_str(&capture(|o| engine.hint(o).unwrap()));
    }
    text.push_str("\n$ klab lab status\n");
    text.push_str(&capture(|o| engine.status(o).unwrap()));
    snap!("lab_session", text);
    let progress: serde_json::Value = serde_json::from_slice(
        &std::fs::read(engine.cluster.dir.join("lab-progress.json")).unwrap(),
    )
    .unwrap();
    assert_eq!(progress["step"], 1);
    assert_eq!(progress["hints_shown"], 2);
    capture(|o| engine.reset(None, o).unwrap());
    assert!(!engine.cluster.dir.join("lab-progress.json").exists());
}

#[test]
fn killercoda_export() {
    let dir = scratch("lab-killercoda");
    let out = klab()
        .args(["lab", "export", "--killercoda"])
        .arg(&dir)
        .arg("03-the-memory")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let index = std::fs::read_to_string(dir.join("index.json")).unwrap();
    let v: serde_json::Value = serde_json::from_str(&index).unwrap();
    for step in v["details"]["steps"].as_array().unwrap() {
        for f in ["text", "verify"] {
            let file = dir.join(step[f].as_str().unwrap());
            assert!(file.is_file(), "{}", file.display());
        }
    }
    let verify = std::fs::read_to_string(dir.join("step2/verify.sh")).unwrap();
    snap!(
        "lab_killercoda",
        format!("index.json:\n{index}\nstep2/verify.sh:\n{verify}")
    );
}

/// Writes the cluster folder `klab up` would write, for the harness's API server: the admin
/// kubeconfig, the CA, and the API server's manifest with the flags it really runs with (so
/// the labs find the store as they would on a kubeadm node).
fn cluster_dir_for(c: &Cluster, name: &str) -> PathBuf {
    let dir = std::fs::canonicalize(scratch(name)).unwrap();
    let k = dir.join("kubernetes");
    std::fs::create_dir_all(k.join("pki")).unwrap();
    std::fs::create_dir_all(k.join("manifests")).unwrap();
    std::fs::copy(&c.kubeconfig, k.join("admin.conf")).unwrap();
    std::fs::copy(c.path("ca.crt"), k.join("pki/ca.crt")).unwrap();
    std::fs::copy(c.path("ca.key"), k.join("pki/ca.key")).unwrap();
    let port = c.url.rsplit(':').next().unwrap();
    std::fs::write(
        k.join("manifests/kube-apiserver.yaml"),
        format!(
            "# The harness's kube-apiserver, as a static pod manifest (not run by a kubelet).\napiVersion: v1\nkind: Pod\nmetadata:\n  name: kube-apiserver\n  namespace: kube-system\nspec:\n  containers:\n  - name: kube-apiserver\n    command:\n    - kube-apiserver\n    - --secure-port={port}\n    - --etcd-servers={}\n    - --etcd-cafile={}\n    - --etcd-certfile={}\n    - --etcd-keyfile={}\n",
            c.etcd_endpoint,
            c.path("ca.crt"),
            c.path("admin.crt"),
            c.path("admin.key"),
        ),
    )
    .unwrap();
    std::fs::write(
        dir.join("cluster.json"),
        json!({"name": "klab", "note": "written by tests/it/lab.rs for the harness's API server"})
            .to_string(),
    )
    .unwrap();
    dir
}

fn lab_cmd(dir: &Path, args: &[&str]) -> std::process::Output {
    klab()
        .arg("lab")
        .arg("--cluster-dir")
        .arg(dir)
        .args(args)
        .output()
        .unwrap()
}

fn text(o: &std::process::Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

/// Runs one lab the way CI proves it: start; for every step, the checks fail, the solution
/// runs and the checks pass; then reset leaves no namespace, stash, work folder or progress.
/// Returns what each failing `klab lab check` printed.
pub fn run_lab_end_to_end(dir: &Path, name: &str) -> Vec<String> {
    let mut failing = vec![];
    let labs = labs();
    let lab = labs.iter().find(|l| l.name == name).unwrap();
    let out = lab_cmd(dir, &["start", name]);
    assert!(out.status.success(), "{name}: start: {}", text(&out));
    for n in 1..=lab.steps.len() {
        let out = lab_cmd(dir, &["check"]);
        assert!(
            !out.status.success() && text(&out).contains("FAIL"),
            "{name}: step {n}'s checks pass before its solution: {}",
            text(&out)
        );
        failing.push(String::from_utf8_lossy(&out.stdout).into_owned());
        let out = lab_cmd(dir, &["solve", &n.to_string()]);
        assert!(out.status.success(), "{name}: solve {n}: {}", text(&out));
    }
    let out = lab_cmd(dir, &["status"]);
    assert!(
        text(&out).contains("progress: complete"),
        "{name}: {}",
        text(&out)
    );
    let out = lab_cmd(dir, &["reset"]);
    assert!(out.status.success(), "{name}: reset: {}", text(&out));
    assert!(!dir.join("lab-progress.json").exists());
    assert!(!dir.join("labs").join(name).exists());
    assert!(!dir.join("lab-stash").join(name).exists());
    for ns in &lab.namespaces {
        let out = Command::new("kubectl")
            .env("KUBECONFIG", dir.join("kubernetes/admin.conf"))
            .args(["get", "namespace", ns])
            .output()
            .unwrap();
        assert!(
            !out.status.success(),
            "{name}: namespace {ns} is still there after reset"
        );
    }
    failing
}

/// Every lab whose `needs` the harness meets runs here: an API server (with the CA's key, as
/// kubeadm keeps it), klab's controller-manager and scheduler, and nodes — Node objects with
/// the stand-in kubelet of `sim.rs`, which says plainly that no container runs. Today that is
/// labs 02, 03, 04, 07 and 09; a new lab with the same needs joins without a change here.
#[test]
fn labs_on_an_api_server_run_end_to_end() {
    for p in ["kubectl", "etcdctl", "curl", "openssl"] {
        if require(p).is_none() {
            return;
        }
    }
    let Some(cluster) = Cluster::start(Backend::EtcdTls, &[]) else {
        return;
    };
    let rt = tokio::runtime::Runtime::new().unwrap();
    let client = rt
        .block_on(klab::client::from_kubeconfig(&cluster.kubeconfig))
        .unwrap();
    let plane = Plane {
        cluster,
        rt,
        client,
    };
    let dir = cluster_dir_for(&plane.cluster, "lab-e2e");
    let _s: Proc = plane.component("scheduler", "lab", &["--leader-elect=false"]);
    let _cm: Proc = plane.component(
        "controller-manager",
        "lab",
        &["--leader-elect=false", "--node-monitor-grace-period=1h"],
    );
    plane.nodes(
        &["klab-control-plane", "klab-worker", "klab-worker2"],
        "8",
        "32Gi",
        json!([]),
    );
    plane.kubelet();
    let offered = [Need::Apiserver, Need::Controllers, Need::Nodes, Need::CaKey];
    let mut ran = vec![];
    for lab in labs() {
        if !lab.needs.iter().all(|n| offered.contains(n)) {
            continue;
        }
        let failing = run_lab_end_to_end(&dir, &lab.name);
        if lab.name == "07-passing-lanes" {
            // What a learner reads when a Service selects nothing: the API's answer.
            snap!("lab_check_service", failing[0].clone());
        }
        ran.push(lab.name);
    }
    assert_eq!(
        ran,
        [
            "02-the-front-door",
            "03-the-memory",
            "04-desired-state",
            "07-passing-lanes",
            "09-expired-pass"
        ]
    );
}

/// Every lab, on a whole cluster from `klab up` (static pods, kubelets, kube-proxy).
///
/// Labs 01, 05, 06, 08 and 10 need the static pods, kubelets and processes that only `klab
/// up` runs, and are proven only here.
#[test]
fn every_lab_runs_end_to_end_on_klab_up() {
    // `klab up` takes the cluster ports; one cluster at a time, as the other `up` tests.
    let _guard = crate::containerd_host();
    for p in ["kubectl", "etcdctl", "curl", "openssl"] {
        if require(p).is_none() {
            return;
        }
    }
    let runtime = if crate::require("containerd").is_some() {
        "containerd"
    } else {
        "simulated"
    };
    let dir = std::fs::canonicalize(scratch("lab-up"))
        .unwrap()
        .join("cluster");
    let up = klab()
        // Real pods where CI has them (containerd, root): Services get ready endpoints and
        // kube-proxy real rules; elsewhere the simulated runtime.
        .args([
            "up",
            "--name",
            "klab",
            "--workers",
            "1",
            "--runtime",
            runtime,
            "--dir",
        ])
        .arg(&dir)
        .output()
        .unwrap();
    assert!(up.status.success(), "klab up: {}", text(&up));
    struct Down(PathBuf);
    impl Drop for Down {
        fn drop(&mut self) {
            let with_dir = klab()
                .args(["down", "--name", "klab", "--dir"])
                .arg(&self.0)
                .output();
            if !with_dir.is_ok_and(|o| o.status.success()) {
                let _ = klab().args(["down", "--name", "klab"]).output();
            }
        }
    }
    let _down = Down(dir.clone());
    for lab in labs() {
        let _ = run_lab_end_to_end(&dir, &lab.name);
    }
}

/// Fault injection on static pod manifests, and reset putting them back byte for byte: a lab
/// that breaks kube-scheduler's flag and stops cloud-controller-manager, on a cluster folder
/// (no kubelet acts on it here; `every_lab_runs_end_to_end_on_klab_up` proves the restarts).
#[test]
fn manifest_faults_are_stashed_and_reset_puts_them_back() {
    let labs_dir = scratch("lab-faults-labs");
    std::fs::create_dir_all(labs_dir.join("01-faults")).unwrap();
    std::fs::write(
        labs_dir.join("01-faults/lab.yaml"),
        r#"title: Faults
level: beginner
time: 10m
intro: Two static pods are broken.
steps:
  - title: Repair the control plane
    instructions: Put the scheduler's kubeconfig right and start cloud-controller-manager again.
    setup:
      - set-flag: {manifest: kube-scheduler, flag: --kubeconfig, value: "{old}.missing"}
      - stop: cloud-controller-manager
    check:
      - manifest: kube-scheduler
        lacks: .missing
      - manifest: cloud-controller-manager
        contains: --cloud-provider=local
    solution: |
      sed -i 's/\.missing//' "$KLAB_CLUSTER_DIR/kubernetes/manifests/kube-scheduler.yaml"
      mv "$KLAB_STASH/cloud-controller-manager.yaml" "$KLAB_CLUSTER_DIR/kubernetes/manifests/"
"#,
    )
    .unwrap();
    let labs = catalog::load(Some(&labs_dir)).unwrap();
    let cluster = offline_cluster("lab-faults");
    let manifests = cluster.manifests();
    std::fs::create_dir_all(&manifests).unwrap();
    let originals = [
        (
            "kube-scheduler.yaml",
            "spec:\n  containers:\n  - command:\n    - kube-scheduler\n    - --authentication-kubeconfig=/etc/kubernetes/scheduler.conf\n    - --kubeconfig=/etc/kubernetes/scheduler.conf\n",
        ),
        (
            "cloud-controller-manager.yaml",
            "spec:\n  containers:\n  - command:\n    - cloud-controller-manager\n    - --cloud-provider=local\n",
        ),
    ];
    for (f, t) in originals {
        std::fs::write(manifests.join(f), t).unwrap();
    }
    let engine = Engine {
        labs: &labs,
        cluster,
        now: now(),
    };
    capture(|o| engine.start("01-faults", o).unwrap());
    let broken = std::fs::read_to_string(manifests.join("kube-scheduler.yaml")).unwrap();
    assert!(broken.contains("    - --kubeconfig=/etc/kubernetes/scheduler.conf.missing\n"));
    assert!(broken.contains("--authentication-kubeconfig=/etc/kubernetes/scheduler.conf\n"));
    assert!(!manifests.join("cloud-controller-manager.yaml").exists());
    let mut text = String::from("$ klab lab check\n");
    text.push_str(&capture(|o| assert!(!engine.check(None, o).unwrap())));
    snap!("lab_check_manifests", text);

    // Reset restores both, exactly.
    capture(|o| engine.reset(None, o).unwrap());
    for (f, t) in originals {
        assert_eq!(
            std::fs::read_to_string(manifests.join(f)).unwrap(),
            t,
            "{f}"
        );
    }
    assert!(!engine.cluster.stash("01-faults").exists());

    // The solution repairs what the setup broke, and the lab completes.
    capture(|o| engine.start("01-faults", o).unwrap());
    let out = capture(|o| engine.solve(1, o).unwrap());
    assert!(out.contains("Lab 01-faults is complete."), "{out}");
    for (f, t) in originals {
        assert_eq!(
            std::fs::read_to_string(manifests.join(f)).unwrap(),
            t,
            "{f}"
        );
    }
    capture(|o| engine.reset(None, o).unwrap());
}
