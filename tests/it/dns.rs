//! Cluster DNS: the records as a pure function of Services and EndpointSlices (the listing
//! the book shows), and `klab dns` as a real process on a real API server, filled through
//! real kubectl and asked with real `dig` over UDP and TCP, forwarding to a second `klab dns`.

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::Service;
use k8s_openapi::api::discovery::v1::EndpointSlice;
use klab::dns::records::Zone;
use serde_json::json;

use crate::apiserver::harness::{Backend, Cluster, Proc, ok};
use crate::{http_get, snap};

/// A Service `ns/name` (or `name` in default).
fn service(name: &str, spec: serde_json::Value) -> Service {
    let (ns, name) = name.split_once('/').unwrap_or(("default", name));
    serde_json::from_value(json!({"metadata": {"name": name, "namespace": ns}, "spec": spec}))
        .unwrap()
}

fn slice(svc: &str, endpoints: serde_json::Value) -> EndpointSlice {
    serde_json::from_value(json!({
        "metadata": {"name": format!("{svc}-abcde"), "namespace": "default",
                     "labels": {"kubernetes.io/service-name": svc}},
        "addressType": "IPv4",
        "endpoints": endpoints,
        "ports": [{"name": "pg", "port": 5432, "protocol": "TCP"}],
    }))
    .unwrap()
}

#[test]
fn records_listing() {
    let zone = Zone::build(
        &[
            service(
                "echo",
                json!({"clusterIP": "10.96.0.20",
                       "ports": [{"name": "http", "port": 80, "protocol": "TCP"},
                                 {"port": 9000, "protocol": "TCP"}]}),
            ),
            service(
                "kube-system/kube-dns",
                json!({"clusterIP": "10.96.0.10",
                       "ports": [{"name": "dns", "port": 53, "protocol": "UDP"},
                                 {"name": "dns-tcp", "port": 53, "protocol": "TCP"}]}),
            ),
            service(
                "db",
                json!({"clusterIP": "None", "ports": [{"name": "pg", "port": 5432}]}),
            ),
            service(
                "search",
                json!({"type": "ExternalName", "externalName": "search.example.com"}),
            ),
        ],
        &[slice(
            "db",
            json!([
                {"addresses": ["10.244.0.7"], "hostname": "db-0", "conditions": {"ready": true}},
                {"addresses": ["10.244.0.8"], "hostname": "db-1", "conditions": {"ready": true}},
                {"addresses": ["10.244.0.9"], "hostname": "db-2", "conditions": {"ready": false}},
            ]),
        )],
        "cluster.local",
        30,
        1764547200,
    );
    snap!("dns_records", zone.listing());
}

const OBJECTS: &str = "apiVersion: v1
kind: Service
metadata: {name: echo, namespace: default}
spec:
  clusterIP: 10.96.0.20
  ports: [{name: http, port: 80, protocol: TCP, targetPort: 8080}]
---
apiVersion: v1
kind: Service
metadata: {name: db, namespace: default}
spec:
  clusterIP: None
  ports: [{name: pg, port: 5432, protocol: TCP}]
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata:
  name: db-abcde
  namespace: default
  labels: {kubernetes.io/service-name: db}
addressType: IPv4
ports: [{name: pg, port: 5432, protocol: TCP}]
endpoints:
- addresses: [10.244.0.7]
  hostname: db-0
  conditions: {ready: true}
- addresses: [10.244.0.8]
  conditions: {ready: true}
- addresses: [10.244.0.9]
  conditions: {ready: false}
";

/// `klab dns` on free loopback ports, killed when dropped.
struct Dns {
    port: u16,
    health: u16,
    ready: u16,
    metrics: u16,
    log: std::path::PathBuf,
    _proc: Proc,
}

impl Dns {
    fn start(cluster: &Cluster, name: &str, domain: &str, upstream: &str) -> Dns {
        let (port, health, ready, metrics) = (
            crate::free_port(),
            crate::free_port(),
            crate::free_port(),
            crate::free_port(),
        );
        let log = cluster.dir.path().join(format!("{name}.log"));
        let child = Command::new(env!("CARGO_BIN_EXE_klab"))
            .args(["dns", "--kubeconfig"])
            .arg(&cluster.kubeconfig)
            .arg(format!("--listen=127.0.0.1:{port}"))
            .arg(format!("--cluster-domain={domain}"))
            .arg(format!("--upstream={upstream}"))
            .arg(format!("--health=127.0.0.1:{health}"))
            .arg(format!("--ready=127.0.0.1:{ready}"))
            .arg(format!("--prometheus=127.0.0.1:{metrics}"))
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .unwrap();
        let dns = Dns {
            port,
            health,
            ready,
            metrics,
            log,
            _proc: Proc(child),
        };
        wait_for(
            &format!("{name} /ready"),
            || http_get(dns.ready, "/ready").0 == 200,
            &dns.log,
        );
        dns
    }

    /// `dig @127.0.0.1 -p PORT ARGS`, stdout.
    fn dig(&self, args: &[&str]) -> String {
        let out = Command::new("dig")
            .arg("@127.0.0.1")
            .args(["-p", &self.port.to_string()])
            .args(["+time=5", "+tries=1"])
            .args(args)
            .output()
            .unwrap();
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// The answer section's data, one per line, as `dig +short` prints it.
    fn short(&self, name: &str, qtype: &str) -> Vec<String> {
        self.dig(&["+short", name, qtype])
            .lines()
            .map(str::to_owned)
            .collect()
    }
}

fn wait_for(what: &str, mut ok: impl FnMut() -> bool, log: &std::path::Path) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while !ok() {
        assert!(
            Instant::now() < deadline,
            "timed out: {what}\n{}",
            std::fs::read_to_string(log).unwrap_or_default()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn dig_asks_klab_dns_about_services_from_kubectl() {
    let Some(kubectl) = crate::require("kubectl") else {
        return;
    };
    if crate::require("dig").is_none() {
        return;
    }
    let Some(cluster) = Cluster::start(Backend::KlabStore, &[]) else {
        return;
    };
    let manifest = cluster.dir.path().join("objects.yaml");
    std::fs::write(&manifest, OBJECTS).unwrap();
    ok(cluster.kubectl_with(&kubectl, &["create", "-f", &manifest.display().to_string()]));

    // The upstream of the cluster's DNS is a second klab dns answering for another domain,
    // whose own upstream is a port where nothing listens.
    let dead = format!("127.0.0.1:{}", crate::free_port());
    let other = Dns::start(&cluster, "other", "other.test", &dead);
    let dns = Dns::start(
        &cluster,
        "cluster",
        "cluster.local",
        &format!("127.0.0.1:{}", other.port),
    );

    // A ClusterIP Service: its cluster IP, over UDP and over TCP.
    assert_eq!(
        dns.short("echo.default.svc.cluster.local", "A"),
        ["10.96.0.20"]
    );
    assert_eq!(
        dns.short("echo.default.svc.cluster.local", "A"),
        dns.dig(&["+tcp", "+short", "echo.default.svc.cluster.local", "A"])
            .lines()
            .collect::<Vec<_>>()
    );
    let full = dns.dig(&["+tcp", "echo.default.svc.cluster.local", "A"]);
    assert!(full.contains("status: NOERROR"), "{full}");
    assert!(full.contains(" aa "), "authoritative: {full}");

    // A headless Service: one A record per ready endpoint, and each endpoint by name.
    assert_eq!(
        dns.short("db.default.svc.cluster.local", "A"),
        ["10.244.0.7", "10.244.0.8"]
    );
    assert_eq!(
        dns.short("db-0.db.default.svc.cluster.local", "A"),
        ["10.244.0.7"]
    );

    // SRV for the named port, with the targets' addresses in the additional section.
    let srv = dns.dig(&[
        "+noall",
        "+answer",
        "+additional",
        "_pg._tcp.db.default.svc.cluster.local",
        "SRV",
    ]);
    snap!("dns_dig_srv", srv);
    assert_eq!(
        dns.short("_http._tcp.echo.default.svc.cluster.local", "SRV"),
        ["0 100 80 echo.default.svc.cluster.local."]
    );

    // An unknown name in the cluster domain: NXDOMAIN with the zone's SOA.
    let nx = dns.dig(&["nope.default.svc.cluster.local", "A"]);
    assert!(nx.contains("status: NXDOMAIN"), "{nx}");
    assert!(
        nx.contains("IN\tSOA\tns.dns.cluster.local. hostmaster.cluster.local."),
        "{nx}"
    );

    // Reverse lookups for the addresses the cluster knows.
    assert_eq!(
        dns.dig(&["+short", "-x", "10.96.0.20"]).trim(),
        "echo.default.svc.cluster.local."
    );
    assert_eq!(
        dns.dig(&["+short", "-x", "10.244.0.7"]).trim(),
        "db-0.db.default.svc.cluster.local."
    );

    // Pods by address, as `pods insecure`.
    assert_eq!(
        dns.short("10-244-0-99.default.pod.cluster.local", "A"),
        ["10.244.0.99"]
    );

    // Other names are forwarded: the second server answers for its own domain, over UDP
    // and TCP, and says SERVFAIL for what its dead upstream cannot answer.
    assert_eq!(
        dns.short("echo.default.svc.other.test", "A"),
        ["10.96.0.20"]
    );
    assert_eq!(
        dns.dig(&["+tcp", "+short", "echo.default.svc.other.test", "A"])
            .trim(),
        "10.96.0.20"
    );
    let failed = dns.dig(&["example.com", "A"]);
    assert!(failed.contains("status: SERVFAIL"), "{failed}");

    // The watch brings changes: an endpoint becomes ready, a Service goes away.
    ok(cluster.kubectl_with(
        &kubectl,
        &[
            "patch",
            "endpointslice",
            "db-abcde",
            "--type=json",
            "-p",
            r#"[{"op": "replace", "path": "/endpoints/2/conditions/ready", "value": true}]"#,
        ],
    ));
    wait_for(
        "the third endpoint in the headless answer",
        || dns.short("db.default.svc.cluster.local", "A").len() == 3,
        &dns.log,
    );
    ok(cluster.kubectl_with(&kubectl, &["delete", "service", "echo"]));
    wait_for(
        "NXDOMAIN for the deleted Service",
        || {
            dns.dig(&["echo.default.svc.cluster.local", "A"])
                .contains("status: NXDOMAIN")
        },
        &dns.log,
    );

    // What a learner sees without dig.
    let out = crate::klab()
        .args(["dns", "records", "--kubeconfig"])
        .arg(&cluster.kubeconfig)
        .output()
        .unwrap();
    let listing = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        listing.contains("_pg._tcp.db.default.svc.cluster.local.")
            && listing.contains("SRV 0 33 5432 db-0.db.default.svc.cluster.local."),
        "{listing}"
    );

    // CoreDNS's health, readiness and metrics endpoints.
    assert_eq!(http_get(dns.health, "/health"), (200, "OK".into()));
    let (code, metrics) = http_get(dns.metrics, "/metrics");
    assert_eq!(code, 200);
    assert!(metrics.contains("coredns_dns_requests_total{"), "{metrics}");
    assert!(metrics.contains("rcode=\"NXDOMAIN\""), "{metrics}");
    assert!(
        metrics.contains(&format!(
            "coredns_forward_requests_total{{to=\"127.0.0.1:{}\"}}",
            other.port
        )),
        "{metrics}"
    );
    let (code, _) = http_get(other.health, "/health");
    assert_eq!(code, 200);
    let _ = other.metrics;
}

#[test]
fn bad_flags_are_refused_clearly() {
    let out = crate::klab()
        .args(["dns", "--listen", "localhost", "--upstream", "10.0.0.1"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("--listen=localhost"), "{err}");
    let out = crate::klab()
        .args([
            "dns",
            "--listen",
            "127.0.0.1:0",
            "--upstream",
            "dns.example",
        ])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("--upstream=dns.example"), "{err}");
    // A kubeconfig that cannot be read fails before anything listens.
    let out = crate::klab()
        .args([
            "dns",
            "--listen",
            "127.0.0.1:0",
            "--kubeconfig",
            "/nonexistent",
        ])
        .args(["--health=", "--ready=", "--prometheus="])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("reading kubeconfig /nonexistent"), "{err}");
    assert!(!err.contains("serving"), "{err}");
}

/// The kubelet test's pod CIDR: the host has one `cni0` bridge, with one address, the
/// gateway `.1` that pods route through.
const POD_CIDR: &str = "10.88.77.0/24";
const GATEWAY: &str = "10.88.77.1";
const NODE: &str = "dns-node";

const LOOKUP_POD: &str = r#"apiVersion: v1
kind: Pod
metadata: {name: lookup, namespace: default}
spec:
  nodeName: dns-node
  terminationGracePeriodSeconds: 1
  containers:
  - name: c
    image: busybox
    command: ["sh", "-c", "cat /etc/resolv.conf; until nslookup echo.default.svc.cluster.local; do sleep 1; done; echo RESOLVED; sleep 3600"]
"#;

/// The pod's log as the kubelet's server gives it.
fn pod_log(cluster: &Cluster, port: u16) -> String {
    let out = Command::new("curl")
        .args(["-sSk", "--fail", "--cert", &cluster.path("admin.crt")])
        .args(["--key", &cluster.path("admin.key")])
        .arg(format!(
            "https://127.0.0.1:{port}/containerLogs/default/lookup/c"
        ))
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// The whole path on real containerd: the kubelet writes the pod's resolv.conf (ClusterFirst)
/// pointing at the DNS server, and busybox's nslookup inside the pod gets the Service's IP
/// from `klab dns`, listening on the pod network's gateway.
#[test]
fn a_pod_on_real_containerd_resolves_a_service_through_klab_dns() {
    if !crate::containerd_prerequisites(&["kubectl", "curl"]) {
        return;
    }
    let Some(cluster) = Cluster::start(Backend::KlabStore, &[]) else {
        return;
    };
    let dir = cluster.dir.path().to_path_buf();
    crate::with_containerd(&dir, POD_CIDR, |socket| pod_scenario(&cluster, socket));
}

fn pod_scenario(cluster: &Cluster, socket: &std::path::Path) {
    let kubectl = std::path::Path::new("kubectl");
    let root = cluster.dir.path().join("kubelet");
    let log = cluster.dir.path().join("kubelet.log");
    let port = crate::free_port();
    let _kubelet = Proc(
        Command::new(env!("CARGO_BIN_EXE_klab"))
            .arg("kubelet")
            .arg(format!("--kubeconfig={}", cluster.kubeconfig.display()))
            .arg(format!("--hostname-override={NODE}"))
            .arg("--node-ip=127.0.0.1")
            .arg(format!("--root-dir={}", root.display()))
            .arg(format!("--port={port}"))
            .arg("--address=127.0.0.1")
            .arg(format!("--client-ca-file={}", cluster.path("ca.crt")))
            .arg(format!(
                "--container-runtime-endpoint=unix://{}",
                socket.display()
            ))
            .arg(format!("--cluster-dns={GATEWAY}"))
            .arg("--cluster-domain=cluster.local")
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .unwrap(),
    );
    let manifest = cluster.dir.path().join("objects.yaml");
    std::fs::write(&manifest, OBJECTS).unwrap();
    ok(cluster.kubectl_with(kubectl, &["create", "-f", &manifest.display().to_string()]));
    let pod = cluster.dir.path().join("lookup.yaml");
    std::fs::write(&pod, LOOKUP_POD).unwrap();
    ok(cluster.kubectl_with(kubectl, &["create", "-f", &pod.display().to_string()]));

    // The pod starts before any DNS server exists and keeps asking; its first line is the
    // resolv.conf the kubelet had the runtime write.
    wait_for(
        "the lookup pod's resolv.conf in its log",
        || pod_log(cluster, port).contains("ndots"),
        &log,
    );
    let first = pod_log(cluster, port);
    assert!(first.contains(&format!("nameserver {GATEWAY}")), "{first}");
    assert!(
        first.contains("search default.svc.cluster.local svc.cluster.local cluster.local"),
        "{first}"
    );
    assert!(first.contains("options ndots:5"), "{first}");

    // Now the bridge has its gateway address: the DNS server listens there, on port 53.
    let dns_log = cluster.dir.path().join("dns.log");
    let ready = crate::free_port();
    let _dns = Proc(
        Command::new(env!("CARGO_BIN_EXE_klab"))
            .args(["dns", "--kubeconfig"])
            .arg(&cluster.kubeconfig)
            .arg(format!("--listen={GATEWAY}:53"))
            .arg(format!("--upstream=127.0.0.1:{}", crate::free_port()))
            .arg("--health=")
            .arg("--prometheus=")
            .arg(format!("--ready=127.0.0.1:{ready}"))
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&dns_log).unwrap())
            .spawn()
            .unwrap(),
    );
    wait_for(
        "the pod's nslookup answered by klab dns",
        || pod_log(cluster, port).contains("RESOLVED"),
        &dns_log,
    );
    let out = pod_log(cluster, port);
    assert!(out.contains("10.96.0.20"), "{out}");
}
