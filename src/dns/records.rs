//! The cluster's DNS records as a pure function of its Services and EndpointSlices, and the
//! lookup that answers one question from them.
//!
//! Mirrors CoreDNS's `kubernetes` plugin as configured by kubeadm (`pods insecure`, `ttl 30`),
//! which implements the Kubernetes DNS specification (kubernetes/dns, `docs/specification.md`):
//! A/AAAA for a Service's cluster IP, one A per ready endpoint for a headless Service and
//! per-endpoint names under it, SRV for named ports, CNAME for ExternalName, `a-b-c-d.<ns>.pod`
//! names, the `dns-version` TXT record, SOA for the zone, and PTR (reverse) records for the
//! addresses it knows (the Corefile's `in-addr.arpa ip6.arpa` with `fallthrough`: reverse names
//! it does not know are forwarded). Leaves out wildcards, multi-cluster and
//! `endpoint_pod_names`.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::{self, Write};
use std::net::IpAddr;

use k8s_openapi::api::core::v1::Service;
use k8s_openapi::api::discovery::v1::EndpointSlice;

/// The version of the Kubernetes DNS specification these records follow.
pub const SPEC_VERSION: &str = "1.1.0";

/// The data of one record.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub enum Data {
    Ip(IpAddr),
    Srv {
        priority: u16,
        weight: u16,
        port: u16,
        target: String,
    },
    Cname(String),
    Txt(String),
    Ptr(String),
}

/// A record: its owner name (lowercase, fully qualified with the trailing dot) and data.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct Rec {
    pub name: String,
    pub data: Data,
}

/// The types of question the zone can answer; anything else is `Other` (no data).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Qtype {
    A,
    Aaaa,
    Srv,
    Cname,
    Txt,
    Soa,
    Ns,
    Ptr,
    Any,
    Other,
}

/// The zone's start of authority, as CoreDNS writes it for the cluster domain.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Soa {
    pub zone: String,
    pub mname: String,
    pub rname: String,
    pub serial: u32,
    pub refresh: i32,
    pub retry: i32,
    pub expire: i32,
    pub minimum: u32,
}

/// What the zone says about one question.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Lookup {
    /// The answer records, and records that help use them (the A records of SRV targets).
    Answer {
        answers: Vec<Rec>,
        additional: Vec<Rec>,
    },
    /// The SOA record itself (a question for the zone's SOA).
    Soa,
    /// The name exists, but has no record of this type: NOERROR with the SOA.
    NoData,
    /// The name does not exist in the cluster domain: NXDOMAIN with the SOA.
    NxDomain,
    /// The name is outside the cluster domain: forward it.
    Outside,
}

/// Every record of the cluster domain, by owner name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Zone {
    /// The cluster domain, lowercase with the trailing dot (`cluster.local.`).
    pub domain: String,
    pub ttl: u32,
    pub soa: Soa,
    pub names: BTreeMap<String, BTreeSet<Data>>,
}

/// `name` lowercase with exactly one trailing dot.
pub fn fqdn(name: &str) -> String {
    let mut n = name.trim_end_matches('.').to_ascii_lowercase();
    n.push('.');
    n
}

/// An IP as a DNS label, as CoreDNS names endpoints without a hostname: `10-244-0-5`.
pub fn dashed(ip: &IpAddr) -> String {
    ip.to_string().replace(['.', ':'], "-")
}

/// The reverse-lookup name of an address: `20.0.96.10.in-addr.arpa.`, or the nibbles of an
/// IPv6 address under `ip6.arpa.`.
pub fn reverse_name(ip: &IpAddr) -> String {
    match ip {
        IpAddr::V4(v4) => {
            let o = v4.octets();
            format!("{}.{}.{}.{}.in-addr.arpa.", o[3], o[2], o[1], o[0])
        }
        IpAddr::V6(v6) => {
            let mut s = String::new();
            for b in v6.octets().iter().rev() {
                let _ = write!(s, "{:x}.{:x}.", b & 0xf, b >> 4);
            }
            s.push_str("ip6.arpa.");
            s
        }
    }
}

fn ready(ep: &k8s_openapi::api::discovery::v1::Endpoint) -> bool {
    // Upstream: an unset condition means ready.
    ep.conditions.as_ref().and_then(|c| c.ready).unwrap_or(true)
}

impl Zone {
    /// The zone for `domain` (e.g. `cluster.local`): a pure function of the Services and
    /// EndpointSlices, with the SOA serial given (CoreDNS uses the time of the last change).
    pub fn build(
        services: &[Service],
        slices: &[EndpointSlice],
        domain: &str,
        ttl: u32,
        serial: u32,
    ) -> Zone {
        let domain = fqdn(domain);
        let mut names: BTreeMap<String, BTreeSet<Data>> = BTreeMap::new();
        let mut add = |name: String, data: Data| {
            names.entry(name).or_default().insert(data);
        };
        add(
            format!("dns-version.{domain}"),
            Data::Txt(SPEC_VERSION.into()),
        );
        for svc in services {
            let (Some(name), Some(ns)) = (&svc.metadata.name, &svc.metadata.namespace) else {
                continue;
            };
            let Some(spec) = &svc.spec else { continue };
            let svc_name = format!("{name}.{ns}.svc.{domain}").to_ascii_lowercase();
            if spec.type_.as_deref() == Some("ExternalName") {
                if let Some(target) = spec.external_name.as_deref().filter(|t| !t.is_empty()) {
                    add(svc_name, Data::Cname(fqdn(target)));
                }
                continue;
            }
            let cluster_ips: Vec<IpAddr> = spec
                .cluster_ips
                .iter()
                .flatten()
                .chain(spec.cluster_ip.iter())
                .filter_map(|ip| ip.parse().ok())
                .collect();
            let headless = spec.cluster_ip.as_deref() == Some("None");
            if !headless {
                if cluster_ips.is_empty() {
                    continue;
                }
                for ip in &cluster_ips {
                    add(svc_name.clone(), Data::Ip(*ip));
                }
                for p in spec.ports.iter().flatten() {
                    let (Some(pname), Ok(port)) = (&p.name, u16::try_from(p.port)) else {
                        continue;
                    };
                    let proto = p.protocol.as_deref().unwrap_or("TCP").to_ascii_lowercase();
                    add(
                        format!("_{pname}._{proto}.{svc_name}").to_ascii_lowercase(),
                        Data::Srv {
                            priority: 0,
                            weight: 100,
                            port,
                            target: svc_name.clone(),
                        },
                    );
                }
                continue;
            }
            // Headless: the ready endpoints of the Service's slices, each under its own name.
            let publish_all = spec.publish_not_ready_addresses.unwrap_or(false);
            let mut srv: BTreeMap<String, BTreeSet<(u16, String)>> = BTreeMap::new();
            for slice in slices.iter().filter(|s| {
                s.metadata.namespace.as_deref() == Some(ns.as_str())
                    && s.metadata
                        .labels
                        .as_ref()
                        .and_then(|l| l.get("kubernetes.io/service-name"))
                        == Some(name)
            }) {
                if slice.address_type == "FQDN" {
                    continue;
                }
                for ep in slice.endpoints.iter().filter(|ep| publish_all || ready(ep)) {
                    for ip in ep.addresses.iter().filter_map(|a| a.parse::<IpAddr>().ok()) {
                        let host = ep
                            .hostname
                            .clone()
                            .filter(|h| !h.is_empty())
                            .unwrap_or_else(|| dashed(&ip))
                            .to_ascii_lowercase();
                        let host_name = format!("{host}.{svc_name}");
                        add(svc_name.clone(), Data::Ip(ip));
                        add(host_name.clone(), Data::Ip(ip));
                        for p in slice.ports.iter().flatten() {
                            let (Some(pname), Some(port)) = (
                                p.name.as_deref().filter(|n| !n.is_empty()),
                                p.port.and_then(|p| u16::try_from(p).ok()),
                            ) else {
                                continue;
                            };
                            let proto = p.protocol.as_deref().unwrap_or("TCP").to_ascii_lowercase();
                            srv.entry(format!("_{pname}._{proto}.{svc_name}").to_ascii_lowercase())
                                .or_default()
                                .insert((port, host_name.clone()));
                        }
                    }
                }
            }
            for (owner, targets) in srv {
                // CoreDNS shares a weight of 100 among the records of one name.
                let weight = u16::try_from(100 / targets.len().max(1))
                    .unwrap_or(1)
                    .max(1);
                for (port, target) in targets {
                    add(
                        owner.clone(),
                        Data::Srv {
                            priority: 0,
                            weight,
                            port,
                            target,
                        },
                    );
                }
            }
        }
        // Reverse records: each address points at its most specific name (an endpoint's own
        // name rather than its headless Service's).
        let mut by_ip: BTreeMap<IpAddr, BTreeSet<String>> = BTreeMap::new();
        for (name, data) in &names {
            for d in data {
                if let Data::Ip(ip) = d {
                    by_ip.entry(*ip).or_default().insert(name.clone());
                }
            }
        }
        for (ip, owners) in by_ip {
            for owner in &owners {
                let parent_of_another = owners.iter().any(|o| o.ends_with(&format!(".{owner}")));
                if !parent_of_another {
                    names
                        .entry(reverse_name(&ip))
                        .or_default()
                        .insert(Data::Ptr(owner.clone()));
                }
            }
        }
        Zone {
            soa: Soa {
                zone: domain.clone(),
                mname: format!("ns.dns.{domain}"),
                rname: format!("hostmaster.{domain}"),
                serial,
                refresh: 7200,
                retry: 1800,
                expire: 86400,
                minimum: ttl,
            },
            domain,
            ttl,
            names,
        }
    }

    /// Whether `name` (lowercase, with the trailing dot) is the cluster domain or under it.
    pub fn contains(&self, name: &str) -> bool {
        name == self.domain || name.ends_with(&format!(".{}", self.domain))
    }

    /// The answer to one question: `name` is lowercase and fully qualified.
    pub fn lookup(&self, name: &str, qtype: Qtype) -> Lookup {
        let name = fqdn(name);
        if name.ends_with(".in-addr.arpa.") || name.ends_with(".ip6.arpa.") {
            return match self.names.get(&name) {
                Some(data) => self.filter(&name, data, qtype),
                None => Lookup::Outside,
            };
        }
        if !self.contains(&name) {
            return Lookup::Outside;
        }
        if name == self.domain {
            return match qtype {
                Qtype::Soa | Qtype::Any => Lookup::Soa,
                _ => Lookup::NoData,
            };
        }
        if let Some(ip) = self.pod_ip(&name) {
            return self.filter(&name, &BTreeSet::from([Data::Ip(ip)]), qtype);
        }
        if let Some(data) = self.names.get(&name) {
            if qtype == Qtype::Srv && !data.iter().any(|d| matches!(d, Data::Srv { .. })) {
                // SRV for a Service's own name: the records of all its named ports, as CoreDNS.
                let ports: BTreeSet<Data> = self
                    .names
                    .iter()
                    .filter(|(k, _)| {
                        k.strip_suffix(&format!(".{name}")).is_some_and(|p| {
                            let labels: Vec<&str> = p.split('.').collect();
                            labels.len() == 2 && labels.iter().all(|l| l.starts_with('_'))
                        })
                    })
                    .flat_map(|(_, d)| d.iter().cloned())
                    .collect();
                if !ports.is_empty() {
                    return self.filter(&name, &ports, qtype);
                }
            }
            return self.filter(&name, data, qtype);
        }
        // A name with names below it (a namespace, `svc`, `pod`, `_http._tcp.<svc>`) exists
        // without records of its own.
        let below = format!(".{name}");
        let pod = format!("pod.{}", self.domain);
        let namespace_of_pods = name.ends_with(&format!(".{pod}"))
            && name.matches('.').count() == pod.matches('.').count() + 1;
        if name == pod || namespace_of_pods || self.names.keys().any(|k| k.ends_with(&below)) {
            return Lookup::NoData;
        }
        Lookup::NxDomain
    }

    /// `10-244-0-5.<ns>.pod.<domain>` → 10.244.0.5, answered for any namespace as CoreDNS
    /// does with `pods insecure`.
    fn pod_ip(&self, name: &str) -> Option<IpAddr> {
        let rest = name.strip_suffix(&format!(".pod.{}", self.domain))?;
        let (label, ns) = rest.split_once('.')?;
        if ns.is_empty() || ns.contains('.') {
            return None;
        }
        if let Ok(ip) = label.replace('-', ".").parse::<std::net::Ipv4Addr>() {
            return Some(IpAddr::V4(ip));
        }
        label
            .replace('-', ":")
            .parse::<std::net::Ipv6Addr>()
            .ok()
            .map(IpAddr::V6)
    }

    fn filter(&self, name: &str, data: &BTreeSet<Data>, qtype: Qtype) -> Lookup {
        let rec = |d: &Data| Rec {
            name: name.to_owned(),
            data: d.clone(),
        };
        let answers: Vec<Rec> = data
            .iter()
            .filter(|d| match (qtype, d) {
                (Qtype::Any, _) => true,
                (Qtype::A, Data::Ip(IpAddr::V4(_))) => true,
                (Qtype::Aaaa, Data::Ip(IpAddr::V6(_))) => true,
                (Qtype::Srv, Data::Srv { .. }) => true,
                (Qtype::Txt, Data::Txt(_)) => true,
                (Qtype::Ptr, Data::Ptr(_)) => true,
                // A CNAME answers every type: the resolver follows it.
                (_, Data::Cname(_)) => true,
                _ => false,
            })
            .map(rec)
            .collect();
        if answers.is_empty() {
            return Lookup::NoData;
        }
        let additional = answers
            .iter()
            .filter_map(|r| match &r.data {
                Data::Srv { target, .. } => self.names.get(target).map(|d| (target, d)),
                _ => None,
            })
            .flat_map(|(target, d)| {
                d.iter().filter(|d| matches!(d, Data::Ip(_))).map(|d| Rec {
                    name: target.clone(),
                    data: d.clone(),
                })
            })
            .collect::<BTreeSet<Rec>>()
            .into_iter()
            .collect();
        Lookup::Answer {
            answers,
            additional,
        }
    }

    /// The whole zone in the zone-file form `dig` prints, SOA first: what `klab dns records`
    /// shows a learner.
    pub fn listing(&self) -> String {
        let mut out = String::new();
        let _ = writeln!(out, "{}", self.soa_line());
        for (name, data) in &self.names {
            for d in data {
                let _ = writeln!(out, "{}", self.line(name, d));
            }
        }
        out
    }

    fn soa_line(&self) -> String {
        let s = &self.soa;
        format!(
            "{:<48} {} IN SOA {} {} {} {} {} {} {}",
            s.zone, self.ttl, s.mname, s.rname, s.serial, s.refresh, s.retry, s.expire, s.minimum
        )
    }

    fn line(&self, name: &str, d: &Data) -> String {
        format!("{name:<48} {} IN {d}", self.ttl)
    }
}

impl fmt::Display for Data {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Data::Ip(IpAddr::V4(ip)) => write!(f, "A {ip}"),
            Data::Ip(IpAddr::V6(ip)) => write!(f, "AAAA {ip}"),
            Data::Srv {
                priority,
                weight,
                port,
                target,
            } => write!(f, "SRV {priority} {weight} {port} {target}"),
            Data::Cname(t) => write!(f, "CNAME {t}"),
            Data::Txt(t) => write!(f, "TXT \"{t}\""),
            Data::Ptr(t) => write!(f, "PTR {t}"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn svc(name: &str, spec: serde_json::Value) -> Service {
        serde_json::from_value(
            json!({"metadata": {"name": name, "namespace": "default"}, "spec": spec}),
        )
        .unwrap()
    }

    fn slice(svc: &str, eps: serde_json::Value) -> EndpointSlice {
        serde_json::from_value(json!({
            "metadata": {"name": format!("{svc}-x"), "namespace": "default",
                         "labels": {"kubernetes.io/service-name": svc}},
            "addressType": "IPv4",
            "endpoints": eps,
            "ports": [{"name": "http", "port": 8080, "protocol": "TCP"}],
        }))
        .unwrap()
    }

    fn zone() -> Zone {
        Zone::build(
            &[
                svc(
                    "echo",
                    json!({"clusterIP": "10.96.0.20", "ports": [{"name": "http", "port": 80}]}),
                ),
                svc(
                    "db",
                    json!({"clusterIP": "None", "ports": [{"name": "http", "port": 8080}]}),
                ),
                svc(
                    "ext",
                    json!({"type": "ExternalName", "externalName": "example.com"}),
                ),
            ],
            &[slice(
                "db",
                json!([
                    {"addresses": ["10.244.0.5"], "conditions": {"ready": true}, "hostname": "db-0"},
                    {"addresses": ["10.244.0.6"]},
                    {"addresses": ["10.244.0.7"], "conditions": {"ready": false}},
                ]),
            )],
            "cluster.local",
            5,
            1,
        )
    }

    fn ips(l: Lookup) -> Vec<String> {
        match l {
            Lookup::Answer { answers, .. } => answers.iter().map(|r| r.data.to_string()).collect(),
            other => vec![format!("{other:?}")],
        }
    }

    #[test]
    fn cluster_ip_and_headless_answers() {
        let z = zone();
        assert_eq!(
            ips(z.lookup("echo.default.svc.cluster.local", Qtype::A)),
            ["A 10.96.0.20"]
        );
        assert_eq!(
            ips(z.lookup("DB.default.svc.cluster.local.", Qtype::A)),
            ["A 10.244.0.5", "A 10.244.0.6"]
        );
        assert_eq!(
            ips(z.lookup("db-0.db.default.svc.cluster.local", Qtype::A)),
            ["A 10.244.0.5"]
        );
        assert_eq!(
            ips(z.lookup("10-244-0-6.db.default.svc.cluster.local", Qtype::A)),
            ["A 10.244.0.6"]
        );
        assert_eq!(
            z.lookup("10-244-0-7.db.default.svc.cluster.local", Qtype::A),
            Lookup::NxDomain
        );
    }

    #[test]
    fn srv_names_ports_and_adds_the_targets() {
        let z = zone();
        let Lookup::Answer {
            answers,
            additional,
        } = z.lookup("_http._tcp.db.default.svc.cluster.local", Qtype::Srv)
        else {
            panic!("no answer");
        };
        assert_eq!(answers.len(), 2);
        assert_eq!(
            answers[0].data.to_string(),
            "SRV 0 50 8080 10-244-0-6.db.default.svc.cluster.local."
        );
        assert_eq!(additional.len(), 2);
        assert_eq!(
            ips(z.lookup("_http._tcp.echo.default.svc.cluster.local", Qtype::Srv)),
            ["SRV 0 100 80 echo.default.svc.cluster.local."]
        );
        assert_eq!(
            ips(z.lookup("echo.default.svc.cluster.local", Qtype::Srv)),
            ["SRV 0 100 80 echo.default.svc.cluster.local."]
        );
    }

    #[test]
    fn reverse_names_point_at_the_most_specific_name() {
        let z = zone();
        assert_eq!(
            ips(z.lookup("20.0.96.10.in-addr.arpa", Qtype::Ptr)),
            ["PTR echo.default.svc.cluster.local."]
        );
        assert_eq!(
            ips(z.lookup("5.0.244.10.in-addr.arpa", Qtype::Ptr)),
            ["PTR db-0.db.default.svc.cluster.local."]
        );
        assert_eq!(
            z.lookup("1.1.168.192.in-addr.arpa", Qtype::Ptr),
            Lookup::Outside
        );
        assert_eq!(
            reverse_name(&"fd00::1".parse().unwrap()),
            "1.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.d.f.ip6.arpa."
        );
    }

    #[test]
    fn nodata_nxdomain_outside_and_pods() {
        let z = zone();
        assert_eq!(
            z.lookup("echo.default.svc.cluster.local", Qtype::Aaaa),
            Lookup::NoData
        );
        assert_eq!(
            z.lookup("default.svc.cluster.local", Qtype::A),
            Lookup::NoData
        );
        assert_eq!(
            z.lookup("nope.default.svc.cluster.local", Qtype::A),
            Lookup::NxDomain
        );
        assert_eq!(z.lookup("cluster.local", Qtype::Soa), Lookup::Soa);
        assert_eq!(z.lookup("example.com", Qtype::A), Lookup::Outside);
        assert_eq!(z.lookup("notcluster.local", Qtype::A), Lookup::Outside);
        assert_eq!(
            ips(z.lookup("10-244-1-9.any.pod.cluster.local", Qtype::A)),
            ["A 10.244.1.9"]
        );
        assert_eq!(
            z.lookup("x-y.any.pod.cluster.local", Qtype::A),
            Lookup::NxDomain
        );
        assert_eq!(
            ips(z.lookup("ext.default.svc.cluster.local", Qtype::A)),
            ["CNAME example.com."]
        );
        assert_eq!(
            ips(z.lookup("dns-version.cluster.local", Qtype::Txt)),
            ["TXT \"1.1.0\""]
        );
    }
}
