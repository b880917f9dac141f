//! kube-proxy's rule generation, a pure function: Services and EndpointSlices in, the text
//! `iptables-restore` reads out, for the nat and filter tables.
//!
//! Mirrors upstream's iptables proxier (`pkg/proxy/iptables/proxier.go`, `syncProxyRules`):
//! the same chain names (KUBE-SERVICES, KUBE-SVC-<hash>, KUBE-SEP-<hash>, KUBE-EXT-<hash>,
//! KUBE-NODEPORTS, KUBE-MARK-MASQ, KUBE-POSTROUTING, filter's KUBE-SERVICES and
//! KUBE-EXTERNAL-SERVICES), the same hashes (`servicePortChainName`,
//! `servicePortEndpointChainName`), the same comments and the same probability arithmetic.
//! Leaves out IPv6, LoadBalancer ingress IPs, externalIPs, externalTrafficPolicy and
//! internalTrafficPolicy `Local`, terminating-endpoint fallback and the KUBE-FIREWALL and
//! KUBE-FORWARD chains.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write;
use std::net::Ipv4Addr;

use k8s_openapi::api::core::v1::Service;
use k8s_openapi::api::discovery::v1::EndpointSlice;

/// The mark KUBE-MARK-MASQ sets and KUBE-POSTROUTING looks for (upstream's default
/// `--iptables-masquerade-bit` 14).
pub const MASQ_MARK: &str = "0x4000/0x4000";

/// The label that ties an EndpointSlice to its Service.
pub const SERVICE_NAME_LABEL: &str = "kubernetes.io/service-name";

/// Session affinity's default stickiness, as upstream (`DefaultClientIPServiceAffinitySeconds`).
pub const DEFAULT_AFFINITY_SECONDS: i32 = 10800;

/// What the rules depend on besides the API objects: this node's view.
#[derive(Debug, Clone, Default)]
pub struct Config {
    /// The pods' address range (`--cluster-cidr`): traffic to a cluster IP from outside it is
    /// masqueraded. `None` masquerades nothing there, as upstream without the flag.
    pub cluster_cidr: Option<String>,
    /// Addresses NodePorts answer on; empty means every local address (`--dst-type LOCAL`).
    pub node_ips: Vec<Ipv4Addr>,
    /// This node's name (`--hostname-override`), named in the rules' header.
    pub hostname: String,
}

/// One table's part of an iptables-restore input: the chains it owns and their rules.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Table {
    pub name: &'static str,
    /// Chains declared (created if missing, flushed if present) by the restore.
    pub chains: Vec<String>,
    /// `-A CHAIN …` lines, in order.
    pub rules: Vec<String>,
}

/// A jump from a built-in chain into a kube-proxy chain, kept first in that chain.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Jump {
    pub table: &'static str,
    pub chain: &'static str,
    pub extra: &'static str,
    pub comment: &'static str,
    pub target: &'static str,
}

impl Jump {
    /// The rule as `iptables -I CHAIN 1` takes it (after the chain name).
    pub fn spec(&self) -> String {
        let mut s = String::new();
        if !self.extra.is_empty() {
            s.push_str(self.extra);
            s.push(' ');
        }
        let _ = write!(
            s,
            "-m comment --comment \"{}\" -j {}",
            self.comment, self.target
        );
        s
    }
}

/// The jumps kube-proxy makes from built-in chains (upstream's `iptablesJumpChains`, the part
/// klab builds).
pub const JUMPS: &[Jump] = &[
    Jump {
        table: "filter",
        chain: "INPUT",
        extra: "-m conntrack --ctstate NEW",
        comment: "kubernetes externally-visible service portals",
        target: "KUBE-EXTERNAL-SERVICES",
    },
    Jump {
        table: "filter",
        chain: "FORWARD",
        extra: "-m conntrack --ctstate NEW",
        comment: "kubernetes externally-visible service portals",
        target: "KUBE-EXTERNAL-SERVICES",
    },
    Jump {
        table: "filter",
        chain: "FORWARD",
        extra: "-m conntrack --ctstate NEW",
        comment: "kubernetes service portals",
        target: "KUBE-SERVICES",
    },
    Jump {
        table: "filter",
        chain: "OUTPUT",
        extra: "-m conntrack --ctstate NEW",
        comment: "kubernetes service portals",
        target: "KUBE-SERVICES",
    },
    Jump {
        table: "nat",
        chain: "OUTPUT",
        extra: "",
        comment: "kubernetes service portals",
        target: "KUBE-SERVICES",
    },
    Jump {
        table: "nat",
        chain: "PREROUTING",
        extra: "",
        comment: "kubernetes service portals",
        target: "KUBE-SERVICES",
    },
    Jump {
        table: "nat",
        chain: "POSTROUTING",
        extra: "",
        comment: "kubernetes postrouting rules",
        target: "KUBE-POSTROUTING",
    },
];

/// Everything one sync programs, plus what it could not program and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rules {
    pub hostname: String,
    pub filter: Table,
    pub nat: Table,
    /// Service ports programmed.
    pub service_ports: usize,
    /// Endpoint chains programmed.
    pub endpoints: usize,
    /// Service ports left out, with the reason (IPv6, a malformed address, …).
    pub skipped: Vec<String>,
}

/// A chain from a table that a sync no longer needs: declared (flushed) then deleted.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct Stale {
    pub table: String,
    pub chain: String,
}

impl Rules {
    /// The iptables-restore input: each table's chains and rules, the missing `jumps`
    /// inserted first in their built-in chains, and the `stale` chains flushed and deleted.
    pub fn restore_text(&self, jumps: &[Jump], stale: &[Stale]) -> String {
        self.restore_text_of(jumps, stale, &|_, _| true)
    }

    /// As [`Rules::restore_text`], but writing only the chains `include` names (table, chain):
    /// with `--noflush`, chains left out keep what they hold, which is how a sync after a
    /// small change stays small (upstream's `MinimizeIPTablesRestore`).
    pub fn restore_text_of(
        &self,
        jumps: &[Jump],
        stale: &[Stale],
        include: &dyn Fn(&str, &str) -> bool,
    ) -> String {
        let mut out = String::new();
        let _ = writeln!(
            out,
            "# kube-proxy (klab) rules for node {}: {} service ports, {} endpoints",
            self.hostname, self.service_ports, self.endpoints
        );
        for reason in &self.skipped {
            let _ = writeln!(out, "# skipped {reason}");
        }
        for table in [&self.filter, &self.nat] {
            let _ = writeln!(out, "*{}", table.name);
            let gone: Vec<&Stale> = stale.iter().filter(|s| s.table == table.name).collect();
            for c in table.chains.iter().filter(|c| include(table.name, c)) {
                let _ = writeln!(out, ":{c} - [0:0]");
            }
            for s in &gone {
                let _ = writeln!(out, ":{} - [0:0]", s.chain);
            }
            for j in jumps.iter().filter(|j| j.table == table.name) {
                let _ = writeln!(out, "-I {} 1 {}", j.chain, j.spec());
            }
            for r in table
                .rules
                .iter()
                .filter(|r| include(table.name, rule_chain(r)))
            {
                let _ = writeln!(out, "{r}");
            }
            for s in &gone {
                let _ = writeln!(out, "-X {}", s.chain);
            }
            let _ = writeln!(out, "COMMIT");
        }
        out
    }

    /// Each owned chain's rules, keyed by (table, chain): what a later sync compares against
    /// to find the chains that changed.
    pub fn by_chain(&self) -> BTreeMap<(String, String), Vec<String>> {
        let mut out = BTreeMap::new();
        for t in [&self.filter, &self.nat] {
            for c in &t.chains {
                out.insert((t.name.to_owned(), c.clone()), Vec::new());
            }
            for r in &t.rules {
                if let Some(v) = out.get_mut(&(t.name.to_owned(), rule_chain(r).to_owned())) {
                    v.push(r.clone());
                }
            }
        }
        out
    }

    /// Every chain this sync owns, per table.
    pub fn owned(&self) -> BTreeSet<(&'static str, &str)> {
        [&self.filter, &self.nat]
            .into_iter()
            .flat_map(|t| t.chains.iter().map(move |c| (t.name, c.as_str())))
            .collect()
    }
}

/// The chain an `-A CHAIN …` line appends to.
fn rule_chain(rule: &str) -> &str {
    rule.split_whitespace().nth(1).unwrap_or("")
}

/// base32 (RFC 4648, standard alphabet) of `data`; only the first 16 characters are ever used.
fn base32(data: &[u8]) -> String {
    const ALPHABET: &[u8; 32] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZ234567";
    let mut out = String::new();
    let mut buffer: u32 = 0;
    let mut bits = 0;
    for &b in data {
        buffer = (buffer << 8) | u32::from(b);
        bits += 8;
        while bits >= 5 {
            bits -= 5;
            out.push(ALPHABET[((buffer >> bits) & 31) as usize] as char);
        }
    }
    if bits > 0 {
        out.push(ALPHABET[((buffer << (5 - bits)) & 31) as usize] as char);
    }
    out
}

fn hash16(input: &str) -> String {
    let digest = ring::digest::digest(&ring::digest::SHA256, input.as_bytes());
    let mut s = base32(digest.as_ref());
    s.truncate(16);
    s
}

/// Upstream's `portProtoHash`: the 16 characters after `KUBE-SVC-`, `KUBE-EXT-`, ….
pub fn port_proto_hash(service_port_name: &str, protocol: &str) -> String {
    hash16(&format!("{service_port_name}{protocol}"))
}

/// Upstream's `servicePortChainName`.
pub fn service_chain(service_port_name: &str, protocol: &str) -> String {
    format!("KUBE-SVC-{}", port_proto_hash(service_port_name, protocol))
}

/// Upstream's `serviceExternalChainName`.
pub fn external_chain(service_port_name: &str, protocol: &str) -> String {
    format!("KUBE-EXT-{}", port_proto_hash(service_port_name, protocol))
}

/// Upstream's `servicePortEndpointChainName`; `endpoint` is `IP:port`.
pub fn endpoint_chain(service_port_name: &str, protocol: &str, endpoint: &str) -> String {
    format!(
        "KUBE-SEP-{}",
        hash16(&format!("{service_port_name}{protocol}{endpoint}"))
    )
}

/// Upstream's `computeProbability`: ten decimals.
fn probability(n: usize) -> String {
    format!("{:.10}", 1.0 / n as f64)
}

/// A comment argument, quoted when it has spaces, as iptables-save prints it; quotes and line
/// breaks cannot reach the restore text.
fn comment(text: &str) -> String {
    let clean: String = text
        .chars()
        .filter(|c| !matches!(c, '"' | '\n' | '\r' | '\\'))
        .collect();
    if clean.contains(' ') {
        format!("-m comment --comment \"{clean}\"")
    } else {
        format!("-m comment --comment {clean}")
    }
}

/// One Service port, with what the rules need to know about it.
struct ServicePort {
    /// `namespace/name` or `namespace/name:port-name` (upstream's `ServicePortName.String()`).
    name: String,
    protocol: String,
    cluster_ip: Ipv4Addr,
    port: i32,
    node_port: Option<i32>,
    affinity_seconds: Option<i32>,
    /// Ready endpoints as `IP:port`, sorted.
    endpoints: Vec<(Ipv4Addr, i32)>,
}

/// Ready endpoints are grouped by (namespace, service, port name, protocol).
type PortKey = (String, String, String, String);

fn service_ports(
    services: &[Service],
    slices: &[EndpointSlice],
    skipped: &mut Vec<String>,
) -> Vec<ServicePort> {
    let mut ready: BTreeMap<PortKey, BTreeSet<(Ipv4Addr, i32)>> = BTreeMap::new();
    for slice in slices {
        if slice.address_type != "IPv4" {
            continue;
        }
        let ns = slice.metadata.namespace.clone().unwrap_or_default();
        let Some(svc) = slice
            .metadata
            .labels
            .as_ref()
            .and_then(|l| l.get(SERVICE_NAME_LABEL))
        else {
            continue;
        };
        for port in slice.ports.iter().flatten() {
            let Some(number) = port.port else { continue };
            let key = (
                ns.clone(),
                svc.clone(),
                port.name.clone().unwrap_or_default(),
                port.protocol.clone().unwrap_or_else(|| "TCP".into()),
            );
            let set = ready.entry(key).or_default();
            for ep in &slice.endpoints {
                // An unset `ready` means ready, as upstream reads it.
                if ep.conditions.as_ref().and_then(|c| c.ready) == Some(false) {
                    continue;
                }
                for addr in &ep.addresses {
                    if let Ok(ip) = addr.parse::<Ipv4Addr>() {
                        set.insert((ip, number));
                    }
                }
            }
        }
    }

    let mut out = Vec::new();
    for svc in services {
        let ns = svc.metadata.namespace.clone().unwrap_or_default();
        let name = svc.metadata.name.clone().unwrap_or_default();
        let Some(spec) = &svc.spec else { continue };
        if spec.type_.as_deref() == Some("ExternalName") {
            continue;
        }
        let ip = spec.cluster_ip.as_deref().unwrap_or("");
        if ip.is_empty() || ip == "None" {
            continue; // headless: DNS answers for it, kube-proxy has nothing to do
        }
        let affinity_seconds = (spec.session_affinity.as_deref() == Some("ClientIP")).then(|| {
            spec.session_affinity_config
                .as_ref()
                .and_then(|c| c.client_ip.as_ref())
                .and_then(|c| c.timeout_seconds)
                .unwrap_or(DEFAULT_AFFINITY_SECONDS)
        });
        let node_ports = matches!(spec.type_.as_deref(), Some("NodePort" | "LoadBalancer"));
        for port in spec.ports.iter().flatten() {
            let port_name = port.name.clone().unwrap_or_default();
            let spn = if port_name.is_empty() {
                format!("{ns}/{name}")
            } else {
                format!("{ns}/{name}:{port_name}")
            };
            let Ok(cluster_ip) = ip.parse::<Ipv4Addr>() else {
                skipped.push(format!("{spn}: cluster IP {ip} is not IPv4"));
                continue;
            };
            let proto = port.protocol.clone().unwrap_or_else(|| "TCP".into());
            let endpoints = ready
                .get(&(ns.clone(), name.clone(), port_name, proto.clone()))
                .map(|s| s.iter().copied().collect())
                .unwrap_or_default();
            out.push(ServicePort {
                name: spn,
                protocol: proto.to_lowercase(),
                cluster_ip,
                port: port.port,
                node_port: port.node_port.filter(|_| node_ports),
                affinity_seconds,
                endpoints,
            });
        }
    }
    out.sort_by(|a, b| (&a.name, &a.protocol).cmp(&(&b.name, &b.protocol)));
    out
}

/// The rules for `services` and their `slices` on the node `config` describes.
pub fn generate(services: &[Service], slices: &[EndpointSlice], config: &Config) -> Rules {
    let mut skipped = Vec::new();
    let ports = service_ports(services, slices, &mut skipped);

    let mut filter = Table {
        name: "filter",
        chains: vec!["KUBE-SERVICES".into(), "KUBE-EXTERNAL-SERVICES".into()],
        rules: vec![],
    };
    let mut nat = Table {
        name: "nat",
        chains: vec![
            "KUBE-SERVICES".into(),
            "KUBE-NODEPORTS".into(),
            "KUBE-POSTROUTING".into(),
            "KUBE-MARK-MASQ".into(),
        ],
        rules: vec![],
    };
    let mark = MASQ_MARK.split('/').next().unwrap_or(MASQ_MARK);
    nat.rules.extend([
        format!("-A KUBE-POSTROUTING -m mark ! --mark {MASQ_MARK} -j RETURN"),
        format!("-A KUBE-POSTROUTING -j MARK --xor-mark {mark}"),
        format!(
            "-A KUBE-POSTROUTING {} -j MASQUERADE --random-fully",
            comment("kubernetes service traffic requiring SNAT")
        ),
        format!("-A KUBE-MARK-MASQ -j MARK --or-mark {mark}"),
    ]);

    let mut services_rules = Vec::new();
    let mut nodeport_rules = Vec::new();
    let mut chain_rules = Vec::new();
    let mut endpoints = 0;
    for sp in &ports {
        let proto = &sp.protocol;
        let pm = format!("-m {proto} -p {proto}");
        let svc_chain = service_chain(&sp.name, proto);
        let ext_chain = external_chain(&sp.name, proto);
        if sp.endpoints.is_empty() {
            filter.rules.push(format!(
                "-A KUBE-SERVICES {} {pm} -d {}/32 --dport {} -j REJECT --reject-with icmp-port-unreachable",
                comment(&format!("{} has no endpoints", sp.name)),
                sp.cluster_ip,
                sp.port
            ));
            if let Some(np) = sp.node_port {
                filter.rules.push(format!(
                    "-A KUBE-EXTERNAL-SERVICES {} -m addrtype --dst-type LOCAL {pm} --dport {np} -j REJECT --reject-with icmp-port-unreachable",
                    comment(&format!("{} has no endpoints", sp.name)),
                ));
            }
            continue;
        }
        services_rules.push(format!(
            "-A KUBE-SERVICES {} {pm} -d {}/32 --dport {} -j {svc_chain}",
            comment(&format!("{} cluster IP", sp.name)),
            sp.cluster_ip,
            sp.port
        ));
        nat.chains.push(svc_chain.clone());
        if let Some(cidr) = &config.cluster_cidr {
            chain_rules.push(format!(
                "-A {svc_chain} {} {pm} -d {}/32 --dport {} ! -s {cidr} -j KUBE-MARK-MASQ",
                comment(&format!("{} cluster IP", sp.name)),
                sp.cluster_ip,
                sp.port
            ));
        }
        if let Some(np) = sp.node_port {
            nat.chains.push(ext_chain.clone());
            nodeport_rules.push(format!(
                "-A KUBE-NODEPORTS {} {pm} --dport {np} -j {ext_chain}",
                comment(&sp.name)
            ));
            chain_rules.push(format!(
                "-A {ext_chain} {} -j KUBE-MARK-MASQ",
                comment(&format!(
                    "masquerade traffic for {} external destinations",
                    sp.name
                ))
            ));
            chain_rules.push(format!("-A {ext_chain} -j {svc_chain}"));
        }
        let seps: Vec<(String, String)> = sp
            .endpoints
            .iter()
            .map(|(ip, port)| {
                let ep = format!("{ip}:{port}");
                (endpoint_chain(&sp.name, proto, &ep), ep)
            })
            .collect();
        if let Some(seconds) = sp.affinity_seconds {
            for (sep, ep) in &seps {
                chain_rules.push(format!(
                    "-A {svc_chain} {} -m recent --name {sep} --rcheck --seconds {seconds} --reap -j {sep}",
                    comment(&format!("{} -> {ep}", sp.name))
                ));
            }
        }
        let n = seps.len();
        for (i, (sep, ep)) in seps.iter().enumerate() {
            let stat = if i + 1 < n {
                format!(
                    " -m statistic --mode random --probability {}",
                    probability(n - i)
                )
            } else {
                String::new()
            };
            chain_rules.push(format!(
                "-A {svc_chain} {}{stat} -j {sep}",
                comment(&format!("{} -> {ep}", sp.name))
            ));
        }
        for ((sep, ep), (ip, _)) in seps.iter().zip(&sp.endpoints) {
            nat.chains.push(sep.clone());
            endpoints += 1;
            // Hairpin: a pod that reaches itself through the Service is masqueraded, or its
            // reply would go straight back to itself and be dropped.
            chain_rules.push(format!(
                "-A {sep} {} -s {ip}/32 -j KUBE-MARK-MASQ",
                comment(&sp.name)
            ));
            let recent = if sp.affinity_seconds.is_some() {
                format!(" -m recent --name {sep} --set")
            } else {
                String::new()
            };
            chain_rules.push(format!(
                "-A {sep} {}{recent} {pm} -j DNAT --to-destination {ep}",
                comment(&sp.name)
            ));
        }
    }
    nat.rules.extend(services_rules);
    let nodeports_comment =
        comment("kubernetes service nodeports; NOTE: this must be the last rule in this chain");
    if config.node_ips.is_empty() {
        nat.rules.push(format!(
            "-A KUBE-SERVICES {nodeports_comment} -m addrtype --dst-type LOCAL -j KUBE-NODEPORTS"
        ));
    } else {
        for ip in &config.node_ips {
            nat.rules.push(format!(
                "-A KUBE-SERVICES {nodeports_comment} -d {ip}/32 -j KUBE-NODEPORTS"
            ));
        }
    }
    nat.rules.extend(nodeport_rules);
    nat.rules.extend(chain_rules);

    Rules {
        hostname: config.hostname.clone(),
        filter,
        nat,
        service_ports: ports.len(),
        endpoints,
        skipped,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chain_names_are_upstreams() {
        // Names read from real clusters' iptables-save.
        assert_eq!(
            service_chain("default/kubernetes:https", "tcp"),
            "KUBE-SVC-NPX46M4PTMTKRN6Y"
        );
        assert_eq!(
            service_chain("kube-system/kube-dns:dns", "udp"),
            "KUBE-SVC-TCOU7JCQXEZGVUNU"
        );
        assert_eq!(
            service_chain("kube-system/kube-dns:dns-tcp", "tcp"),
            "KUBE-SVC-ERIFXISQEP7F7OF4"
        );
    }

    #[test]
    fn base32_matches_rfc4648() {
        assert_eq!(base32(b"foobar"), "MZXW6YTBOI");
        assert_eq!(base32(b"f"), "MY");
    }

    #[test]
    fn probabilities_have_ten_decimals() {
        assert_eq!(probability(3), "0.3333333333");
        assert_eq!(probability(2), "0.5000000000");
    }

    #[test]
    fn comments_cannot_break_the_restore_text() {
        assert_eq!(
            comment("a\"b\nc d"),
            "-m comment --comment \"abc d\"".to_string()
        );
    }
}
