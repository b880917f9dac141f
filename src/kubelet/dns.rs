//! A pod's resolv.conf, as the kubelet hands it to the runtime in the sandbox's CRI
//! `DNSConfig`: from the pod's `dnsPolicy` and `dnsConfig`, the kubelet's `--cluster-dns` and
//! `--cluster-domain`, and the node's own resolv.conf (`--resolv-conf`).
//!
//! Mirrors upstream's `pkg/kubelet/network/dns` (`GetPodDNS`): ClusterFirst (the default) uses
//! the cluster DNS with the search path `<ns>.svc.<domain> svc.<domain> <domain>` followed by
//! the node's searches and `ndots:5`, except for host-network pods, which get the node's
//! resolv.conf unless they ask for ClusterFirstWithHostNet; Default is the node's resolv.conf;
//! None is only the pod's `dnsConfig`, which is merged into every policy. With no
//! `--cluster-dns`, ClusterFirst falls back to Default, as upstream. Leaves out the
//! MissingClusterDNS event and the warnings for too-long search lines.

use std::path::Path;

use k8s_cri::v1 as cri;
use k8s_openapi::api::core::v1::Pod;

/// Upstream's limits: three nameservers, 32 search domains.
const MAX_NAMESERVERS: usize = 3;
const MAX_SEARCHES: usize = 32;

/// The resolver settings of a resolv.conf.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Resolv {
    pub nameservers: Vec<String>,
    pub searches: Vec<String>,
    pub options: Vec<String>,
}

impl Resolv {
    /// Parses resolv.conf text: `nameserver`, `search` (or `domain`) and `options` lines.
    pub fn parse(text: &str) -> Resolv {
        let mut r = Resolv::default();
        for line in text.lines() {
            let line = line.split(['#', ';']).next().unwrap_or_default();
            let mut words = line.split_whitespace();
            match words.next() {
                Some("nameserver") => r.nameservers.extend(words.next().map(str::to_owned)),
                // The last search or domain line wins, as in resolv.conf(5).
                Some("search" | "domain") => r.searches = words.map(str::to_owned).collect(),
                Some("options") => r.options.extend(words.map(str::to_owned)),
                _ => {}
            }
        }
        r
    }

    /// The node's resolv.conf; an empty path (upstream's `--resolv-conf=""`) or a missing
    /// file means none.
    pub fn load(path: &Path) -> Resolv {
        if path.as_os_str().is_empty() {
            return Resolv::default();
        }
        std::fs::read_to_string(path)
            .map(|t| Resolv::parse(&t))
            .unwrap_or_default()
    }
}

/// The kubelet's DNS settings, from its flags or its config file.
#[derive(Debug, Clone, Default)]
pub struct Settings {
    /// `--cluster-dns`: the cluster DNS Service's IPs.
    pub cluster_dns: Vec<String>,
    /// `--cluster-domain`: `cluster.local` on kubeadm and kind clusters; empty: none.
    pub cluster_domain: String,
    /// The node's own resolv.conf.
    pub host: Resolv,
}

fn push_unique(list: &mut Vec<String>, items: impl IntoIterator<Item = String>) {
    for i in items {
        if !list.contains(&i) {
            list.push(i);
        }
    }
}

/// The sandbox's DNS config for `pod`.
pub fn pod_dns(pod: &Pod, settings: &Settings) -> cri::DnsConfig {
    let spec = pod.spec.clone().unwrap_or_default();
    let host_network = spec.host_network.unwrap_or(false);
    let policy = spec.dns_policy.as_deref().unwrap_or("ClusterFirst");
    let cluster = match policy {
        "None" => None,
        "ClusterFirstWithHostNet" => Some(true),
        "Default" => Some(false),
        // ClusterFirst, and anything unknown (validation refuses it upstream).
        _ => Some(!host_network),
    };
    let mut r = match cluster {
        None => Resolv::default(),
        Some(true) if !settings.cluster_dns.is_empty() => {
            let ns = pod.metadata.namespace.as_deref().unwrap_or("default");
            let d = settings.cluster_domain.trim_end_matches('.');
            let mut searches = Vec::new();
            if !d.is_empty() {
                searches = vec![format!("{ns}.svc.{d}"), format!("svc.{d}"), d.to_owned()];
            }
            push_unique(&mut searches, settings.host.searches.iter().cloned());
            Resolv {
                nameservers: settings.cluster_dns.clone(),
                searches,
                options: vec!["ndots:5".into()],
            }
        }
        Some(_) => settings.host.clone(),
    };
    if let Some(c) = &spec.dns_config {
        push_unique(&mut r.nameservers, c.nameservers.iter().flatten().cloned());
        let mut searches: Vec<String> = Vec::new();
        push_unique(&mut searches, c.searches.iter().flatten().cloned());
        push_unique(&mut searches, r.searches);
        r.searches = searches;
        // The pod's options win over same-named ones.
        for o in c.options.iter().flatten() {
            let name = o.name.clone().unwrap_or_default();
            r.options
                .retain(|existing| existing.split(':').next() != Some(name.as_str()));
            r.options.push(match &o.value {
                Some(v) => format!("{name}:{v}"),
                None => name,
            });
        }
    }
    r.nameservers.truncate(MAX_NAMESERVERS);
    r.searches.truncate(MAX_SEARCHES);
    cri::DnsConfig {
        servers: r.nameservers,
        searches: r.searches,
        options: r.options,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn pod(spec: serde_json::Value) -> Pod {
        let mut spec = spec;
        spec["containers"] = json!([{"name": "c"}]);
        serde_json::from_value(
            json!({"metadata": {"name": "p", "namespace": "shop"}, "spec": spec}),
        )
        .unwrap()
    }

    fn settings() -> Settings {
        Settings {
            cluster_dns: vec!["10.96.0.10".into()],
            cluster_domain: "cluster.local".into(),
            host: Resolv::parse(
                "# node\nsearch corp.example\nnameserver 192.168.1.1\noptions edns0\n",
            ),
        }
    }

    #[test]
    fn cluster_first_uses_the_cluster_dns_and_search_path() {
        let c = pod_dns(&pod(json!({})), &settings());
        assert_eq!(c.servers, ["10.96.0.10"]);
        assert_eq!(
            c.searches,
            [
                "shop.svc.cluster.local",
                "svc.cluster.local",
                "cluster.local",
                "corp.example"
            ]
        );
        assert_eq!(c.options, ["ndots:5"]);
    }

    #[test]
    fn host_network_default_and_none() {
        let host = pod_dns(&pod(json!({"hostNetwork": true})), &settings());
        assert_eq!(host.servers, ["192.168.1.1"]);
        let with = pod_dns(
            &pod(json!({"hostNetwork": true, "dnsPolicy": "ClusterFirstWithHostNet"})),
            &settings(),
        );
        assert_eq!(with.servers, ["10.96.0.10"]);
        let default = pod_dns(&pod(json!({"dnsPolicy": "Default"})), &settings());
        assert_eq!(default.searches, ["corp.example"]);
        assert_eq!(default.options, ["edns0"]);
        let none = pod_dns(
            &pod(json!({"dnsPolicy": "None", "dnsConfig": {
                "nameservers": ["1.1.1.1"], "searches": ["a.example"],
                "options": [{"name": "ndots", "value": "2"}]}})),
            &settings(),
        );
        assert_eq!(none.servers, ["1.1.1.1"]);
        assert_eq!(none.searches, ["a.example"]);
        assert_eq!(none.options, ["ndots:2"]);
    }

    #[test]
    fn no_cluster_dns_falls_back_to_the_node_and_dns_config_merges() {
        let s = Settings {
            cluster_dns: vec![],
            ..settings()
        };
        assert_eq!(pod_dns(&pod(json!({})), &s).servers, ["192.168.1.1"]);
        let c = pod_dns(
            &pod(json!({"dnsConfig": {"searches": ["extra.example"],
                                       "options": [{"name": "ndots", "value": "1"}]}})),
            &settings(),
        );
        assert_eq!(c.searches[0], "extra.example");
        assert_eq!(c.options, ["ndots:1"]);
    }
}
