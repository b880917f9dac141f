//! `klab cluster-info` beside real `kubectl cluster-info`, on klab's API server: the same
//! bytes, once the cluster has a service labelled as a cluster service.

use std::process::Command;

use crate::apiserver::harness::{Backend, Cluster};
use crate::{klab, require};

const KUBE_DNS: &str = r#"
apiVersion: v1
kind: Service
metadata:
  name: kube-dns
  namespace: kube-system
  labels:
    k8s-app: kube-dns
    kubernetes.io/cluster-service: "true"
    kubernetes.io/name: CoreDNS
spec:
  selector:
    k8s-app: kube-dns
  ports:
  - name: dns
    port: 53
    protocol: UDP
  - name: dns-tcp
    port: 53
    protocol: TCP
"#;

/// kubectl colours its output; the words are what must match.
fn strip_ansi(s: &str) -> String {
    let mut out = String::new();
    let mut chars = s.chars();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' {
            for d in chars.by_ref() {
                if d.is_ascii_alphabetic() {
                    break;
                }
            }
        } else {
            out.push(c);
        }
    }
    out
}

#[test]
fn cluster_info_matches_kubectl() {
    let Some(kubectl) = require("kubectl") else {
        return;
    };
    let Some(cluster) = Cluster::start(Backend::KlabStore, &[]) else {
        return;
    };
    let kubeconfig = cluster.kubeconfig.clone();
    let apply = |yaml: &str| {
        let file = cluster.dir.path().join("svc.yaml");
        std::fs::write(&file, yaml).unwrap();
        let out = Command::new(&kubectl)
            .arg("--kubeconfig")
            .arg(&kubeconfig)
            .args(["apply", "-f"])
            .arg(&file)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    };
    let run_both = || {
        let theirs = Command::new(&kubectl)
            .arg("--kubeconfig")
            .arg(&kubeconfig)
            .arg("cluster-info")
            .output()
            .unwrap();
        assert!(
            theirs.status.success(),
            "{}",
            String::from_utf8_lossy(&theirs.stderr)
        );
        let mine = klab()
            .arg("cluster-info")
            .arg("--kubeconfig")
            .arg(&kubeconfig)
            .output()
            .unwrap();
        assert!(
            mine.status.success(),
            "{}",
            String::from_utf8_lossy(&mine.stderr)
        );
        (
            strip_ansi(&String::from_utf8_lossy(&theirs.stdout)),
            String::from_utf8(mine.stdout).unwrap(),
        )
    };
    let (theirs, mine) = run_both();
    assert_eq!(mine, theirs);
    apply(KUBE_DNS);
    let (theirs, mine) = run_both();
    assert!(
        mine.contains("CoreDNS is running at https://127.0.0.1:"),
        "{mine}"
    );
    assert!(
        mine.contains("/api/v1/namespaces/kube-system/services/kube-dns:dns/proxy"),
        "{mine}"
    );
    assert_eq!(mine, theirs);
}

#[test]
fn cluster_info_names_a_dead_api_server() {
    let dir = crate::scratch("cluster-info-dead");
    let kc = dir.join("kubeconfig");
    std::fs::write(
        &kc,
        format!(
            "apiVersion: v1\nkind: Config\nclusters:\n- name: c\n  cluster:\n    server: https://127.0.0.1:{}\n    insecure-skip-tls-verify: true\nusers:\n- name: u\n  user:\n    token: t\ncontexts:\n- name: x\n  context: {{cluster: c, user: u}}\ncurrent-context: x\n",
            crate::free_port()
        ),
    )
    .unwrap();
    let out = klab()
        .arg("cluster-info")
        .arg("--kubeconfig")
        .arg(&kc)
        .output()
        .unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8(out.stderr).unwrap();
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    assert!(
        stderr.contains("listing Services in kube-system") && stderr.contains("klab probe"),
        "{stderr}"
    );
}

/// The seed's cluster, rendered in-process: what the book shows.
#[test]
fn cluster_info_of_the_seed_cluster() {
    let dns: k8s_openapi::api::core::v1::Service = serde_yaml::from_str(KUBE_DNS).unwrap();
    let text = crate::capture(|o| {
        klab::tools::cluster_info::render("https://10.1.0.4:6443", &[dns], o).unwrap()
    });
    crate::snap!("cluster_info_seed", text);
}
