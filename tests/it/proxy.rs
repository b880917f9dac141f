//! kube-proxy: the pure rule generation on fixed Services and EndpointSlices (snapshots the
//! book reads line by line), and the rules applied by real iptables-restore inside a network
//! namespace of the test's own, so the host's rules are never touched.

use k8s_openapi::api::core::v1::Service;
use k8s_openapi::api::discovery::v1::EndpointSlice;
use klab::proxy::rules::{self, Config, JUMPS};
use serde_json::json;

use crate::snap;

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
