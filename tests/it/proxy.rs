//! kube-proxy: the pure rule generation on fixed Services and EndpointSlices (snapshots the
//! book reads line by line), and the rules applied by real iptables-restore inside a network
//! namespace of the test's own, so the host's rules are never touched.

use k8s_openapi::api::core::v1::Service;
use k8s_openapi::api::discovery::v1::EndpointSlice;
use klab::proxy::rules::{self, Config, JUMPS};
use serde_json::json;

use crate::{http_get, snap};

pub fn service(name: &str, ip: &str, extra: serde_json::Value) -> Service {
    let mut spec = json!({
        "clusterIP": ip,
        "ports": [{"name": "http", "port": 80, "protocol": "TCP", "targetPort": 8080}],
    });
    if let (Some(s), Some(e)) = (spec.as_object_mut(), extra.as_object()) {
        for (k, v) in e {
            s.insert(k.clone(), v.clone());
        }
    }
    serde_json::from_value(json!({
        "metadata": {"name": name, "namespace": "default"},
        "spec": spec,
    }))
    .unwrap()
}

/// A slice for `svc` with `ready` and not-ready pod IPs on port 8080 named http.
pub fn slice(svc: &str, ready: &[&str], not_ready: &[&str]) -> EndpointSlice {
    let mut eps: Vec<serde_json::Value> = ready
        .iter()
        .map(|ip| json!({"addresses": [ip], "conditions": {"ready": true}, "nodeName": "node1"}))
        .collect();
    eps.extend(
        not_ready
            .iter()
            .map(|ip| json!({"addresses": [ip], "conditions": {"ready": false}})),
    );
    serde_json::from_value(json!({
        "metadata": {"name": format!("{svc}-abcde"), "namespace": "default",
                     "labels": {"kubernetes.io/service-name": svc}},
        "addressType": "IPv4",
        "endpoints": eps,
        "ports": [{"name": "http", "port": 8080, "protocol": "TCP"}],
    }))
    .unwrap()
}

pub fn config() -> Config {
    Config {
        cluster_cidr: Some("10.244.0.0/16".into()),
        node_ips: vec![],
        hostname: "node1".into(),
    }
}

fn text(services: &[Service], slices: &[EndpointSlice], config: &Config) -> String {
    rules::generate(services, slices, config).restore_text(JUMPS, &[])
}

#[test]
fn one_service_several_endpoints() {
    let out = text(
        &[service("echo", "10.96.0.20", json!({}))],
        &[slice(
            "echo",
            &["10.244.0.5", "10.244.0.6", "10.244.0.7"],
            &["10.244.0.8"],
        )],
        &config(),
    );
    snap!("proxy_rules_clusterip", out);
}

#[test]
fn node_port() {
    let out = text(
        &[service(
            "web",
            "10.96.0.30",
            json!({"type": "NodePort",
                   "ports": [{"name": "http", "port": 80, "protocol": "TCP", "nodePort": 30080}]}),
        )],
        &[slice("web", &["10.244.0.5", "10.244.0.6"], &[])],
        &Config {
            node_ips: vec!["192.168.1.10".parse().unwrap()],
            ..config()
        },
    );
    snap!("proxy_rules_nodeport", out);
}

#[test]
fn session_affinity() {
    let out = text(
        &[service(
            "sticky",
            "10.96.0.40",
            json!({"sessionAffinity": "ClientIP",
                   "sessionAffinityConfig": {"clientIP": {"timeoutSeconds": 600}}}),
        )],
        &[slice("sticky", &["10.244.0.5", "10.244.0.6"], &[])],
        &config(),
    );
    snap!("proxy_rules_affinity", out);
}

#[test]
fn no_ready_endpoints_reject() {
    let out = text(
        &[
            service("empty", "10.96.0.50", json!({})),
            service(
                "empty-np",
                "10.96.0.51",
                json!({"type": "NodePort",
                       "ports": [{"name": "http", "port": 80, "protocol": "TCP", "nodePort": 30051}]}),
            ),
        ],
        &[slice("empty", &[], &["10.244.0.9"])],
        &config(),
    );
    snap!("proxy_rules_no_endpoints", out);
}

#[test]
fn headless_external_name_and_ipv6_program_nothing() {
    let r = rules::generate(
        &[
            service("headless", "None", json!({})),
            service(
                "ext",
                "",
                json!({"type": "ExternalName", "externalName": "example.com"}),
            ),
            service("v6", "fd00::10", json!({})),
        ],
        &[],
        &config(),
    );
    assert_eq!(r.service_ports, 0);
    assert_eq!(
        r.skipped,
        ["default/v6:http: cluster IP fd00::10 is not IPv4"]
    );
}

/// A network namespace of the test's own, deleted when dropped, so the host's rules are
/// never touched.
struct Netns(String);

impl Netns {
    /// `None` (a printed skip) outside CI when `ip` or iptables is missing.
    fn new(tag: &str) -> Option<Netns> {
        crate::require("ip")?;
        crate::require("iptables-restore")?;
        crate::require("iptables-save")?;
        let name = format!("klab-proxy-test-{}-{tag}", std::process::id());
        let out = std::process::Command::new("ip")
            .args(["netns", "add", &name])
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "ip netns add {name}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        Some(Netns(name))
    }

    fn iptables(&self) -> klab::proxy::apply::Iptables {
        klab::proxy::apply::Iptables::new(Some(self.0.clone()))
    }

    /// The KUBE-related lines of iptables-save (chains, and rules in or into KUBE-* chains),
    /// in iptables-save's order, each with its table.
    fn kube_lines(&self) -> Vec<String> {
        let saved = self.iptables().save().unwrap();
        let mut table = String::new();
        saved
            .lines()
            .filter_map(|l| {
                if let Some(t) = l.strip_prefix('*') {
                    table = t.to_owned();
                    return None;
                }
                l.contains("KUBE-").then(|| format!("{table} {l}"))
            })
            .collect()
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        let _ = std::process::Command::new("ip")
            .args(["netns", "delete", &self.0])
            .output();
    }
}

fn two_services(echo_ready: &[&str]) -> (Vec<Service>, Vec<EndpointSlice>) {
    (
        vec![
            service("echo", "10.96.0.20", json!({})),
            service(
                "web",
                "10.96.0.30",
                json!({"type": "NodePort", "sessionAffinity": "ClientIP",
                       "ports": [{"name": "http", "port": 80, "protocol": "TCP", "nodePort": 30080}]}),
            ),
        ],
        vec![
            slice("echo", echo_ready, &[]),
            slice("web", &["10.244.0.7"], &[]),
        ],
    )
}

#[test]
fn iptables_restore_takes_the_rules_and_a_resync_rewrites_them() {
    let Some(ns) = Netns::new("apply") else {
        return;
    };
    let ipt = ns.iptables();
    // A rule of the user's own, which kube-proxy must never touch.
    ipt.restore("*nat\n:MINE - [0:0]\n-A POSTROUTING -d 192.0.2.1/32 -j MINE\nCOMMIT\n")
        .unwrap();

    let (s, e) = two_services(&["10.244.0.5", "10.244.0.6"]);
    let first = rules::generate(&s, &e, &config());
    let synced = ipt.sync(&first).unwrap();
    assert_eq!(synced.jumps_added, JUMPS.len());
    let saved = ipt.save().unwrap();
    for chain in first.nat.chains.iter().chain(&first.filter.chains) {
        assert!(
            saved.contains(&format!(":{chain} ")),
            "{chain} not in\n{saved}"
        );
    }
    assert!(saved.contains("--probability 0.50000000000"), "{saved}");
    assert!(saved.contains("-A POSTROUTING -d 192.0.2.1/32 -j MINE"));

    // The same rules again: nothing added, nothing deleted, the same table.
    let before = ns.kube_lines();
    let again = ipt.sync(&first).unwrap();
    assert_eq!((again.jumps_added, again.stale_deleted), (0, 0));
    assert_eq!(ns.kube_lines(), before);

    // One endpoint gone: its KUBE-SEP chain is deleted, the balancing rule is rewritten.
    let (s2, e2) = two_services(&["10.244.0.6"]);
    let second = rules::generate(&s2, &e2, &config());
    let synced = ipt.sync(&second).unwrap();
    assert_eq!(synced.stale_deleted, 1);
    let saved = ipt.save().unwrap();
    assert!(!saved.contains("10.244.0.5:8080"), "{saved}");
    assert!(!saved.contains("--probability"), "{saved}");
    assert!(saved.contains("-A POSTROUTING -d 192.0.2.1/32 -j MINE"));
}

#[test]
fn a_partial_sync_leaves_the_same_tables_as_a_full_one() {
    let (Some(partial), Some(full)) = (Netns::new("partial"), Netns::new("full")) else {
        return;
    };
    let (s, e) = two_services(&["10.244.0.5", "10.244.0.6"]);
    let (s2, e2) = two_services(&["10.244.0.6", "10.244.0.8", "10.244.0.9"]);
    let mut syncer = klab::proxy::apply::Syncer::new(partial.iptables());
    syncer
        .sync(&rules::generate(&s, &e, &config()), true)
        .unwrap();
    let changed = syncer
        .sync(&rules::generate(&s2, &e2, &config()), false)
        .unwrap();
    assert_eq!(changed.stale_deleted, 1);
    full.iptables()
        .sync(&rules::generate(&s2, &e2, &config()))
        .unwrap();
    assert_eq!(partial.kube_lines(), full.kube_lines());
}

#[test]
fn cleanup_leaves_no_kube_chain_and_keeps_the_users_rules() {
    let Some(ns) = Netns::new("cleanup") else {
        return;
    };
    let ipt = ns.iptables();
    ipt.restore("*filter\n:MINE - [0:0]\n-A INPUT -s 192.0.2.1/32 -j MINE\nCOMMIT\n")
        .unwrap();
    let (s, e) = two_services(&["10.244.0.5"]);
    ipt.sync(&rules::generate(&s, &e, &config())).unwrap();
    assert!(!ns.kube_lines().is_empty());

    // Through the CLI, as `kube-proxy --cleanup` runs.
    let out = crate::klab()
        .args(["proxy", "--cleanup", "--netns", &ns.0])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("removed"));
    assert_eq!(ns.kube_lines(), Vec::<String>::new());
    assert!(
        ipt.save()
            .unwrap()
            .contains("-A INPUT -s 192.0.2.1/32 -j MINE")
    );
}

#[test]
fn other_proxy_modes_are_refused_clearly() {
    let out = crate::klab()
        .args(["proxy", "--proxy-mode=ipvs"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("builds only the iptables mode"), "{err}");
}

const ECHO_YAML: &str = "apiVersion: v1
kind: Service
metadata: {name: echo, namespace: default}
spec:
  clusterIP: 10.96.0.20
  ports: [{name: http, port: 80, protocol: TCP, targetPort: 8080}]
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata:
  name: echo-abcde
  namespace: default
  labels: {kubernetes.io/service-name: echo}
addressType: IPv4
ports: [{name: http, port: 8080, protocol: TCP}]
endpoints:
- addresses: [ENDPOINT]
  conditions: {ready: true}
";

fn wait_for(what: &str, mut ok: impl FnMut() -> bool) {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    while !ok() {
        assert!(std::time::Instant::now() < deadline, "timed out: {what}");
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
}

#[test]
fn end_to_end_kubectl_objects_become_rules_in_a_netns() {
    use crate::apiserver::harness::{Backend, Cluster, Proc, ok};
    let Some(kubectl) = crate::require("kubectl") else {
        return;
    };
    let Some(ns) = Netns::new("e2e") else {
        return;
    };
    let Some(cluster) = Cluster::start(Backend::KlabStore, &[]) else {
        return;
    };
    let manifest = |ip: &str| {
        let f = cluster.dir.path().join(format!("echo-{ip}.yaml"));
        std::fs::write(&f, ECHO_YAML.replace("ENDPOINT", ip)).unwrap();
        f.display().to_string()
    };
    ok(cluster.kubectl_with(&kubectl, &["create", "-f", &manifest("10.244.0.5")]));
    let kubeconfig = cluster.kubeconfig.display().to_string();

    // What a learner sees, without root.
    let out = crate::klab()
        .args(["proxy", "rules", "--kubeconfig", &kubeconfig])
        .args(["--cluster-cidr=10.244.0.0/16", "--hostname-override=node1"])
        .output()
        .unwrap();
    let printed = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let svc_chain = rules::service_chain("default/echo:http", "tcp");
    assert!(
        printed.contains(&format!(":{svc_chain} - [0:0]")),
        "{printed}"
    );
    assert!(
        printed.contains("--to-destination 10.244.0.5:8080"),
        "{printed}"
    );

    // kube-proxy itself, programming the test's network namespace.
    let (healthz, metrics) = (crate::free_port(), crate::free_port());
    let log = cluster.dir.path().join("proxy.log");
    let _proxy = Proc(
        std::process::Command::new(env!("CARGO_BIN_EXE_klab"))
            .args(["proxy", "--kubeconfig", &kubeconfig, "--netns", &ns.0])
            .args(["--cluster-cidr=10.244.0.0/16", "--hostname-override=node1"])
            .arg(format!("--healthz-bind-address=127.0.0.1:{healthz}"))
            .arg(format!("--metrics-bind-address=127.0.0.1:{metrics}"))
            .arg("--iptables-min-sync-period=100ms")
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .unwrap(),
    );
    let saved = || ns.iptables().save().unwrap_or_default();
    wait_for("the endpoint's DNAT rule", || {
        saved().contains("--to-destination 10.244.0.5:8080")
    });

    // The endpoint moves: the watch brings the change and the rules follow.
    ok(cluster.kubectl_with(&kubectl, &["replace", "-f", &manifest("10.244.0.9")]));
    wait_for("the moved endpoint's DNAT rule", || {
        let s = saved();
        s.contains("--to-destination 10.244.0.9:8080") && !s.contains("10.244.0.5:8080")
    });

    // No ready endpoints: the cluster IP is refused in the filter table.
    ok(cluster.kubectl_with(&kubectl, &["delete", "endpointslice", "echo-abcde"]));
    wait_for("the REJECT rule", || {
        saved().contains("default/echo:http has no endpoints")
    });

    let (code, body) = http_get(healthz, "/healthz");
    assert_eq!(code, 200, "{body}");
    assert!(body.contains("lastUpdated"), "{body}");
    let (code, body) = http_get(metrics, "/metrics");
    assert_eq!(code, 200, "{body}");
    assert!(
        body.contains("kubeproxy_sync_proxy_rules_duration_seconds_count"),
        "{body}"
    );
    let text = std::fs::read_to_string(&log).unwrap_or_default();
    assert!(text.contains("full sync"), "{text}");
}

#[test]
fn iptables_save_reads_back_what_was_programmed() {
    let Some(ns) = Netns::new("save") else {
        return;
    };
    let ipt = ns.iptables();
    let services = [service("echo", "10.96.0.20", json!({}))];
    let slices = [slice(
        "echo",
        &["10.244.0.5", "10.244.0.6", "10.244.0.7"],
        &["10.244.0.8"],
    )];
    ipt.sync(&rules::generate(&services, &slices, &config()))
        .unwrap();
    // iptables-save's own comment lines carry the time; the rest is what the kernel holds.
    let saved: String = ipt
        .save()
        .unwrap()
        .lines()
        .filter(|l| !l.starts_with('#'))
        .map(|l| format!("{l}\n"))
        .collect();
    snap!("proxy_iptables_save_clusterip", saved);
}

#[test]
fn bench_proxy_runs_in_namespaces_of_its_own() {
    if crate::require("ip").is_none() || crate::require("iptables-restore").is_none() {
        return;
    }
    let out = crate::klab()
        .args([
            "bench",
            "proxy",
            "--services",
            "5",
            "--changes",
            "3",
            "-o",
            "json",
        ])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let rows: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(rows[0]["services"], 5);
    assert_eq!(rows[0]["changes"], 3);
    // Every namespace it made is gone.
    let list = std::process::Command::new("ip")
        .args(["netns", "list"])
        .output()
        .unwrap();
    assert!(!String::from_utf8_lossy(&list.stdout).contains("klab-bench-proxy"));
}

#[test]
fn udp_ports_get_udp_matches_and_upstreams_chain_name() {
    let svc: Service = serde_json::from_value(json!({
        "metadata": {"name": "kube-dns", "namespace": "kube-system"},
        "spec": {"clusterIP": "10.96.0.10",
                 "ports": [{"name": "dns", "port": 53, "protocol": "UDP"}]},
    }))
    .unwrap();
    let eps: EndpointSlice = serde_json::from_value(json!({
        "metadata": {"name": "kube-dns-x", "namespace": "kube-system",
                     "labels": {"kubernetes.io/service-name": "kube-dns"}},
        "addressType": "IPv4",
        "endpoints": [{"addresses": ["10.244.0.3"]}],
        "ports": [{"name": "dns", "port": 53, "protocol": "UDP"}],
    }))
    .unwrap();
    let text = text(&[svc], &[eps], &config());
    // The chain every cluster's iptables-save shows for kube-dns over UDP.
    assert!(
        text.contains("-m udp -p udp -d 10.96.0.10/32 --dport 53 -j KUBE-SVC-TCOU7JCQXEZGVUNU"),
        "{text}"
    );
    // An endpoint without conditions counts as ready, as upstream reads it.
    assert!(
        text.contains("-j DNAT --to-destination 10.244.0.3:53"),
        "{text}"
    );
}
