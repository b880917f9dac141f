//! `klab up`, `klab status` and `klab down` end to end, as a learner runs them: a real cluster
//! from one command, used with real kubectl, then removed without a trace. On containerd
//! (root, CI) and on the simulated runtime (the control plane as host processes), on
//! klab-store and on real etcd.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use crate::sim::eventually;
use crate::{klab, require, scratch};

/// A cluster `klab up` made; `klab down` runs when it drops, so a failing test cleans up.
struct Up {
    name: String,
    dir: PathBuf,
    kubectl: PathBuf,
}

impl Up {
    fn start(name: &str, extra: &[&str]) -> Option<Up> {
        let kubectl = require("kubectl")?;
        let dir = std::fs::canonicalize(scratch(&format!("up-{name}"))).unwrap();
        std::fs::remove_dir(&dir).unwrap();
        let out = klab()
            .args(["up", "--name", name, "--dir"])
            .arg(&dir)
            .args(extra)
            .timeout(Duration::from_secs(300))
            .output()
            .unwrap();
        let up = Up {
            name: name.into(),
            dir,
            kubectl,
        };
        let text = String::from_utf8_lossy(&out.stdout).to_string();
        assert!(
            out.status.success(),
            "klab up failed:\n{text}\n{}\nkubelet log:\n{}",
            String::from_utf8_lossy(&out.stderr),
            std::fs::read_to_string(
                up.dir
                    .join("logs")
                    .join(format!("kubelet-{name}-control-plane.log"))
            )
            .unwrap_or_default()
        );
        assert!(text.contains("export KUBECONFIG="), "{text}");
        if name == "sim" {
            // The progress display, as the book shows it: times and the folder vary.
            let mut s = crate::snapshot_settings();
            s.add_filter(r"\d+\.\d+s", "[T]s");
            s.add_filter(
                &regex_escape(&up.dir.display().to_string()),
                "/root/.klab/sim",
            );
            s.bind(|| insta::assert_snapshot!("up_simulated", text));
        }
        Some(up)
    }

    fn kubeconfig(&self) -> PathBuf {
        self.dir.join("kubernetes/admin.conf")
    }

    fn kubectl(&self, args: &[&str]) -> String {
        let out = Command::new(&self.kubectl)
            .arg("--kubeconfig")
            .arg(self.kubeconfig())
            .args(args)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "kubectl {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    fn try_kubectl(&self, args: &[&str]) -> Option<String> {
        let out = Command::new(&self.kubectl)
            .arg("--kubeconfig")
            .arg(self.kubeconfig())
            .args(args)
            .output()
            .ok()?;
        out.status
            .success()
            .then(|| String::from_utf8_lossy(&out.stdout).into_owned())
    }

    fn klab(&self, args: &[&str]) -> std::process::Output {
        klab()
            .args(args)
            .args(["--name", &self.name, "--dir"])
            .arg(&self.dir)
            .output()
            .unwrap()
    }

    fn down(&self) -> String {
        let out = self.klab(&["down"]);
        assert!(
            out.status.success(),
            "klab down: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }
}

impl Drop for Up {
    fn drop(&mut self) {
        if self.dir.exists() {
            let _ = self.klab(&["down"]);
        }
    }
}

fn regex_escape(s: &str) -> String {
    s.chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '/' || c == '_' {
                c.to_string()
            } else {
                format!("\\{c}")
            }
        })
        .collect()
}

#[test]
fn the_control_plane_manifests_are_kubeadms() {
    let plan = klab::cluster::manifests::example();
    for (file, pod) in klab::cluster::manifests::control_plane(&plan) {
        let name = format!(
            "manifest_{}",
            file.trim_end_matches(".yaml").replace('-', "_")
        );
        crate::snap!(name, klab::cluster::manifests::to_yaml(&pod));
    }
}

/// Processes whose command line names `dir`.
fn processes_under(dir: &Path) -> Vec<String> {
    let d = dir.display().to_string();
    std::fs::read_dir("/proc")
        .unwrap()
        .flatten()
        .filter_map(|e| {
            e.file_name().to_str()?.parse::<u32>().ok()?;
            let cmd = std::fs::read(e.path().join("cmdline")).ok()?;
            let cmd = String::from_utf8_lossy(&cmd).replace('\0', " ");
            cmd.contains(&d).then_some(cmd)
        })
        .collect()
}

fn pods_running(up: &Up, selector: &str, n: usize) -> bool {
    up.try_kubectl(&[
        "get",
        "pods",
        "-l",
        selector,
        "-o",
        "jsonpath={.items[*].status.phase}",
    ])
    .is_some_and(|s| s.split_whitespace().filter(|p| *p == "Running").count() >= n)
}

#[test]
fn up_simulated_runs_the_control_plane_as_static_pods_and_down_removes_it() {
    let _guard = crate::containerd_host();
    let Some(up) = Up::start("sim", &["--runtime", "simulated", "--workers", "1"]) else {
        return;
    };
    let nodes = up.kubectl(&["get", "nodes", "-o", "name"]);
    assert_eq!(
        nodes.split_whitespace().collect::<Vec<_>>(),
        ["node/sim-control-plane", "node/sim-worker"]
    );
    // The control plane shows up as mirror pods, as on a kubeadm node (the kubelet mirrors
    // them once its node is registered).
    let mirrors = || {
        let cp = up
            .try_kubectl(&["-n", "kube-system", "get", "pods", "-o", "name"])
            .unwrap_or_default();
        [
            "kube-apiserver",
            "kube-controller-manager",
            "kube-scheduler",
            "klab-store",
        ]
        .iter()
        .all(|c| cp.contains(&format!("pod/{c}-sim-control-plane")))
    };
    assert!(eventually(30, mirrors));
    // The five steps: a Deployment becomes pods, scheduled and "running".
    up.kubectl(&[
        "create",
        "deployment",
        "web",
        "--image=busybox",
        "--replicas=3",
    ]);
    assert!(eventually(60, || pods_running(&up, "app=web", 3)));

    // A second `up` with the same name refuses, naming what to do.
    let again = klab()
        .args(["up", "--name", "sim", "--runtime", "simulated", "--dir"])
        .arg(&up.dir)
        .output()
        .unwrap();
    assert!(!again.status.success());
    let err = String::from_utf8_lossy(&again.stderr);
    assert!(
        err.contains("already up") && err.contains("klab down"),
        "{err}"
    );

    // `klab ps` on the node: each component by role, with its flags.
    let ps = String::from_utf8_lossy(
        &klab()
            .args(["ps", "--flags", "kube-apiserver"])
            .output()
            .unwrap()
            .stdout,
    )
    .into_owned();
    assert!(ps.contains("--etcd-servers"), "{ps}");
    assert!(ps.contains("https://127.0.0.1:2379"), "{ps}");

    // status: every component, running.
    let status = String::from_utf8_lossy(&up.klab(&["status"]).stdout).into_owned();
    assert!(
        status.contains("kube-apiserver-sim-control-plane"),
        "{status}"
    );
    assert!(
        !status.contains("stopped") && !status.contains("exited"),
        "{status}"
    );

    // Editing a manifest restarts that component with the new flags.
    let manifest = up.dir.join("kubernetes/manifests/kube-scheduler.yaml");
    let text = std::fs::read_to_string(&manifest).unwrap();
    std::fs::write(
        &manifest,
        text.replace("- --leader-elect=true", "- --leader-elect=false"),
    )
    .unwrap();
    assert!(eventually(30, || processes_under(&up.dir).iter().any(
        |p| p.starts_with("kube-scheduler") && p.contains("--leader-elect=false")
    )));

    let said = up.down();
    assert!(said.contains("Deleted"), "{said}");
    assert!(!up.dir.exists());
    assert!(
        eventually(10, || processes_under(&up.dir).is_empty()),
        "{:?}",
        processes_under(&up.dir)
    );
}

#[test]
fn up_on_etcd_keeps_the_objects_under_registry_keys() {
    let _guard = crate::containerd_host();
    let Some(etcdctl) = require("etcdctl") else {
        return;
    };
    require("etcd");
    let Some(up) = Up::start("etcd", &["--runtime", "simulated", "--store", "etcd"]) else {
        return;
    };
    let ps = String::from_utf8_lossy(&klab().args(["ps"]).output().unwrap().stdout).into_owned();
    assert!(ps.contains("etcd"), "{ps}");
    up.kubectl(&["create", "configmap", "hello", "--from-literal=a=b"]);
    let pki = up.dir.join("kubernetes/pki");
    let out = Command::new(etcdctl)
        .env("ETCDCTL_API", "3")
        .arg("--endpoints=https://127.0.0.1:2379")
        .arg(format!("--cacert={}", pki.join("etcd/ca.crt").display()))
        .arg(format!(
            "--cert={}",
            pki.join("apiserver-etcd-client.crt").display()
        ))
        .arg(format!(
            "--key={}",
            pki.join("apiserver-etcd-client.key").display()
        ))
        .args([
            "get",
            "/registry/configmaps/default/hello",
            "--print-value-only",
        ])
        .output()
        .unwrap();
    let value = String::from_utf8_lossy(&out.stdout);
    assert!(value.contains("\"a\":\"b\""), "{value}");
    up.down();
    assert!(processes_under(&up.dir).is_empty());
}

#[test]
fn up_refuses_a_taken_port_and_names_it() {
    let _guard = crate::containerd_host();
    let port = crate::free_port();
    let _busy = std::net::TcpListener::bind(("0.0.0.0", port)).unwrap();
    let dir = std::fs::canonicalize(scratch("up-busy")).unwrap();
    let out = klab()
        .args([
            "up",
            "--name",
            "busy",
            "--runtime",
            "simulated",
            "--api-port",
        ])
        .arg(port.to_string())
        .arg("--dir")
        .arg(dir.join("cluster"))
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains(&format!("port {port} is taken")) && err.contains("kube-apiserver"),
        "{err}"
    );
    // Nothing was written: the folder does not exist.
    assert!(!dir.join("cluster").exists());
    let bad = klab()
        .args([
            "up",
            "--name",
            "Not_A_Name",
            "--runtime",
            "simulated",
            "--dir",
        ])
        .arg(dir.join("bad"))
        .output()
        .unwrap();
    assert!(String::from_utf8_lossy(&bad.stderr).contains("lower-case letters"));
    let none = klab()
        .args(["down", "--name", "nothing", "--dir"])
        .arg(dir.join("nothing"))
        .output()
        .unwrap();
    assert!(!none.status.success());
    assert!(String::from_utf8_lossy(&none.stderr).contains("does not exist"));
}

fn iptables_kube_chains() -> usize {
    Command::new("iptables-save")
        .output()
        .map(|o| {
            String::from_utf8_lossy(&o.stdout)
                .lines()
                .filter(|l| l.starts_with(":KUBE-"))
                .count()
        })
        .unwrap_or(0)
}

#[test]
fn up_on_containerd_runs_real_pods_behind_a_service_and_down_leaves_nothing() {
    let _guard = crate::containerd_host();
    if require("containerd").is_none() || require("iptables-save").is_none() {
        return;
    }
    let Some(up) = Up::start("ctr", &[]) else {
        return;
    };
    // The control plane runs as containers of the klab image, mirrored into the API (the
    // mirror pod's status follows `klab up` by a moment).
    let mut image = String::new();
    assert!(
        eventually(30, || {
            image = up
                .try_kubectl(&[
                    "-n",
                    "kube-system",
                    "get",
                    "pod",
                    "kube-apiserver-ctr-control-plane",
                    "-o",
                    "jsonpath={.spec.containers[0].image} {.status.phase}",
                ])
                .unwrap_or_default();
            image.starts_with("localhost/klab/klab:") && image.ends_with("Running")
        }),
        "{image}"
    );
    up.kubectl(&[
        "create",
        "deployment",
        "echo",
        "--image=localhost/klab/echo:1.0",
        "--replicas=2",
    ]);
    up.kubectl(&[
        "expose",
        "deployment",
        "echo",
        "--port=80",
        "--target-port=8080",
    ]);
    assert!(eventually(90, || pods_running(&up, "app=echo", 2)));
    let names = up.kubectl(&[
        "get",
        "pods",
        "-l",
        "app=echo",
        "-o",
        "jsonpath={.items[*].metadata.name}",
    ]);
    let ip = up.kubectl(&["get", "svc", "echo", "-o", "jsonpath={.spec.clusterIP}"]);
    // The Service answers from the host, through kube-proxy's rules, from both pods.
    let mut seen = std::collections::BTreeSet::new();
    assert!(eventually(60, || {
        if let Ok(o) = Command::new("timeout")
            .args(["5", "busybox", "wget", "-qO-", &format!("http://{ip}/")])
            .output()
        {
            let who = String::from_utf8_lossy(&o.stdout).trim().to_string();
            if !who.is_empty() {
                seen.insert(who);
            }
        }
        seen.len() == 2
    }));
    for n in &seen {
        assert!(names.contains(n.as_str()), "{n} not in {names}");
    }

    // The Service's name resolves from inside a pod: its resolv.conf (ClusterFirst) names the
    // kube-dns Service, kube-proxy takes the query to a CoreDNS pod (`klab dns`), which
    // answers from the Services it watches. The pod succeeds only if an echo pod answered,
    // by the full name and by the short one (the search path).
    up.kubectl(&[
        "run",
        "dns-client",
        "--image=busybox",
        "--restart=Never",
        "--command",
        "--",
        "sh",
        "-c",
        "wget -qO- http://echo.default.svc.cluster.local/ | grep -q echo- && wget -qO- http://echo/ | grep -q echo-",
    ]);
    assert!(eventually(120, || up
        .try_kubectl(&["get", "pod", "dns-client", "-o", "jsonpath={.status.phase}"])
        .is_some_and(|p| p == "Succeeded")));

    up.down();
    assert!(
        processes_under(&up.dir).is_empty(),
        "{:?}",
        processes_under(&up.dir)
    );
    let mounts = std::fs::read_to_string("/proc/self/mounts").unwrap();
    assert!(!mounts.contains(&up.dir.display().to_string()), "{mounts}");
    assert_eq!(iptables_kube_chains(), 0);
    let links = Command::new("ip")
        .args(["link", "show", "cni0"])
        .output()
        .unwrap();
    assert!(!links.status.success(), "cni0 is left behind");
    let netns = std::fs::read_dir("/var/run/netns")
        .map(|d| {
            d.flatten()
                .filter(|e| e.file_name().to_string_lossy().starts_with("cni-"))
                .count()
        })
        .unwrap_or(0);
    assert_eq!(netns, 0, "CNI network namespaces are left behind");
}

/// Requests `url` with busybox wget `n` times from the host; the answers, counted.
fn tally_from_host(url: &str, n: usize) -> std::collections::BTreeMap<String, usize> {
    let mut seen = std::collections::BTreeMap::new();
    for _ in 0..n {
        if let Ok(o) = Command::new("timeout")
            .args(["5", "busybox", "wget", "-qO-", url])
            .output()
        {
            let who = String::from_utf8_lossy(&o.stdout).trim().to_string();
            *seen.entry(who).or_default() += 1;
        }
    }
    seen
}

/// Issue 7's proof on real containerd: a ClusterIP Service balances across both pods from the
/// host and from a third pod, the NodePort answers on the node's IP, a pod reaches itself
/// through its own Service (hairpin), and a Service scaled to zero refuses connections.
#[test]
fn services_balance_hairpin_and_refuse_on_containerd() {
    let _guard = crate::containerd_host();
    if require("containerd").is_none() || require("busybox").is_none() {
        return;
    }
    let Some(up) = Up::start("svc", &[]) else {
        return;
    };
    up.kubectl(&[
        "create",
        "deployment",
        "echo",
        "--image=localhost/klab/echo:1.0",
        "--replicas=2",
    ]);
    up.kubectl(&[
        "expose",
        "deployment",
        "echo",
        "--port=80",
        "--target-port=8080",
        "--type=NodePort",
    ]);
    assert!(eventually(90, || pods_running(&up, "app=echo", 2)));
    let names = up.kubectl(&[
        "get",
        "pods",
        "-l",
        "app=echo",
        "-o",
        "jsonpath={.items[*].metadata.name}",
    ]);
    let names: Vec<&str> = names.split_whitespace().collect();
    let ip = up.kubectl(&["get", "svc", "echo", "-o", "jsonpath={.spec.clusterIP}"]);
    let node_port = up.kubectl(&[
        "get",
        "svc",
        "echo",
        "-o",
        "jsonpath={.spec.ports[0].nodePort}",
    ]);
    let node_ip = up.kubectl(&[
        "get",
        "node",
        "svc-control-plane",
        "-o",
        "jsonpath={.status.addresses[?(@.type==\"InternalIP\")].address}",
    ]);
    // kube-proxy needs a moment to program both endpoints: wait until both pods answer, so the
    // count below measures the balancing, not the moment the second endpoint arrives.
    assert!(eventually(60, || {
        let t = tally_from_host(&format!("http://{ip}/"), 10);
        names.iter().all(|n| t.contains_key(*n))
    }));

    // From the host: 200 requests, each pod at least a quarter of them.
    let seen = tally_from_host(&format!("http://{ip}/"), 200);
    for n in &names {
        assert!(seen.get(*n).copied().unwrap_or(0) >= 50, "{seen:?}");
    }
    // The NodePort, on the node's IP.
    let seen = tally_from_host(&format!("http://{node_ip}:{node_port}/"), 20);
    assert!(
        seen.keys().filter(|k| names.contains(&k.as_str())).count() >= 1
            && seen.values().sum::<usize>() == 20
            && !seen.contains_key(""),
        "{seen:?}"
    );

    // From a third pod: 200 requests, counted from its log.
    let script =
        format!("for i in $(seq 200); do timeout 5 wget -qO- http://{ip}/; done; echo done");
    up.kubectl(&[
        "run",
        "client",
        "--image=busybox",
        "--restart=Never",
        "--command",
        "--",
        "sh",
        "-c",
        &script,
    ]);
    assert!(eventually(120, || up
        .try_kubectl(&["get", "pod", "client", "-o", "jsonpath={.status.phase}"])
        .is_some_and(|p| p == "Succeeded")));
    let log = up.kubectl(&["logs", "client"]);
    for n in &names {
        let hits = log.lines().filter(|l| l.trim() == *n).count();
        assert!(hits >= 50, "{n}: {hits} of 200\n{log}");
    }

    // Hairpin: each echo pod reaches itself through its own Service.
    for n in &names {
        let out = up.kubectl(&[
            "exec",
            n,
            "--",
            "sh",
            "-c",
            &format!("for i in $(seq 20); do timeout 5 wget -qO- http://{ip}/; done"),
        ]);
        assert_eq!(out.lines().count(), 20, "{n}: {out}");
        assert!(
            out.lines().any(|l| l.trim() == *n),
            "{n} never reached itself: {out}"
        );
    }

    // Scaled to zero, the Service refuses instead of hanging.
    up.kubectl(&["scale", "deployment", "echo", "--replicas=0"]);
    assert!(eventually(60, || {
        Command::new("timeout")
            .args(["5", "busybox", "wget", "-qO-", &format!("http://{ip}/")])
            .output()
            .is_ok_and(|o| {
                !o.status.success() && String::from_utf8_lossy(&o.stderr).contains("refused")
            })
    }));
    up.down();
}

/// `klab bench pods` runs end to end on the simulated runtime at a tiny size and reports one
/// row per batch (figures not asserted).
#[test]
fn bench_pods_smoke() {
    let _guard = crate::containerd_host();
    let out = klab()
        .args([
            "bench",
            "pods",
            "--runtime",
            "simulated",
            "--batches",
            "1,2",
            "-o",
            "json",
        ])
        .timeout(Duration::from_secs(240))
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let rows: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let pods: Vec<i64> = rows
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["pods"].as_i64().unwrap())
        .collect();
    assert_eq!(pods, [1, 2]);
    for r in rows.as_array().unwrap() {
        assert_eq!(r["runtime"], "simulated");
        assert!(r["kubelet_rss_mib"].as_f64().unwrap() > 0.0, "{r}");
    }
}
