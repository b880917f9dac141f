//! `klab cluster-info`: what `kubectl cluster-info` prints — the control plane's URL and every
//! Service labelled `kubernetes.io/cluster-service=true` (in kube-system) as an API-server proxy
//! URL — byte for byte, so a learner can set the two side by side. `klab cluster-info dump`
//! ([`dump`]) writes what `kubectl cluster-info dump` writes, plus klab's own folder.

pub mod diagnosis;
pub mod dump;
pub mod extras;

use std::io::Write;
use std::path::Path;

use k8s_openapi::api::core::v1::Service;
use kube::api::{Api, ListParams};

/// Why cluster-info could not be read.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("reading the kubeconfig")]
    Kubeconfig(#[source] kube::config::KubeconfigError),
    #[error("building an API client")]
    Client(#[source] kube::Error),
    #[error(
        "listing Services in {namespace} (is the API server up? `klab probe` explains the connection)"
    )]
    List {
        namespace: String,
        #[source]
        source: kube::Error,
    },
    #[error("writing the output")]
    Output(#[from] std::io::Error),
}

/// The proxy URL kubectl prints for a Service: `<host>/api/v1/namespaces/<ns>/services/
/// [https:]<name>[:<port name>]/proxy`, or the load balancer's addresses where it has one.
pub fn service_link(host: &str, svc: &Service) -> String {
    let spec = svc.spec.clone().unwrap_or_default();
    let ports = spec.ports.unwrap_or_default();
    let ingress = svc
        .status
        .as_ref()
        .and_then(|s| s.load_balancer.as_ref())
        .and_then(|lb| lb.ingress.as_ref())
        .and_then(|i| i.first().cloned());
    if let Some(ingress) = ingress {
        let ip = ingress
            .ip
            .filter(|ip| !ip.is_empty())
            .or(ingress.hostname)
            .unwrap_or_default();
        return ports
            .iter()
            .map(|p| format!("http://{ip}:{} ", p.port))
            .collect();
    }
    let meta = &svc.metadata;
    let mut name = meta.name.clone().unwrap_or_default();
    if let Some(port) = ports.first() {
        let port_name = port.name.clone().unwrap_or_default();
        let scheme = if port_name == "https" || port.port == 443 {
            "https"
        } else {
            ""
        };
        // utilnet.JoinSchemeNamePort: scheme:name:port, leaving out what is empty.
        name = match (scheme.is_empty(), port_name.is_empty()) {
            (true, true) => name,
            (true, false) => format!("{name}:{port_name}"),
            (false, true) => format!("{scheme}:{name}:"),
            (false, false) => format!("{scheme}:{name}:{port_name}"),
        };
    }
    let ns = meta.namespace.clone().unwrap_or_default();
    format!("{host}/api/v1/namespaces/{ns}/services/{name}/proxy")
}

/// Writes kubectl's cluster-info text for `host` and the cluster services found.
pub fn render(host: &str, services: &[Service], out: &mut dyn Write) -> std::io::Result<()> {
    writeln!(out, "Kubernetes control plane is running at {host}")?;
    for svc in services {
        let labels = svc.metadata.labels.clone().unwrap_or_default();
        let name = labels
            .get("kubernetes.io/name")
            .filter(|n| !n.is_empty())
            .cloned()
            .unwrap_or_else(|| svc.metadata.name.clone().unwrap_or_default());
        writeln!(out, "{name} is running at {}", service_link(host, svc))?;
    }
    writeln!(
        out,
        "\nTo further debug and diagnose cluster problems, use 'kubectl cluster-info dump'."
    )
}

/// Reads the cluster's services through the API server, as kubectl does.
pub async fn cluster_info(
    kubeconfig: Option<&Path>,
    context: Option<&str>,
    namespace: &str,
    out: &mut dyn Write,
) -> Result<(), Error> {
    let kc = match kubeconfig {
        Some(p) => kube::config::Kubeconfig::read_from(p),
        None => kube::config::Kubeconfig::read(),
    }
    .map_err(Error::Kubeconfig)?;
    let options = kube::config::KubeConfigOptions {
        context: context.map(String::from),
        ..Default::default()
    };
    let config = kube::Config::from_custom_kubeconfig(kc, &options)
        .await
        .map_err(Error::Kubeconfig)?;
    let host = config
        .cluster_url
        .to_string()
        .trim_end_matches('/')
        .to_string();
    let client = kube::Client::try_from(config).map_err(Error::Client)?;
    let api: Api<Service> = Api::namespaced(client, namespace);
    let list = api
        .list(&ListParams::default().labels("kubernetes.io/cluster-service=true"))
        .await
        .map_err(|source| Error::List {
            namespace: namespace.into(),
            source,
        })?;
    render(&host, &list.items, out)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn svc(name: &str, port_name: Option<&str>, port: i32) -> Service {
        serde_json::from_value(serde_json::json!({
            "metadata": { "name": name, "namespace": "kube-system" },
            "spec": { "ports": [{ "name": port_name, "port": port }] }
        }))
        .unwrap()
    }

    #[test]
    fn links_follow_kubectl() {
        let host = "https://10.1.0.4:6443";
        assert_eq!(
            service_link(host, &svc("kube-dns", Some("dns"), 53)),
            "https://10.1.0.4:6443/api/v1/namespaces/kube-system/services/kube-dns:dns/proxy"
        );
        assert_eq!(
            service_link(host, &svc("dashboard", None, 443)),
            "https://10.1.0.4:6443/api/v1/namespaces/kube-system/services/https:dashboard:/proxy"
        );
        assert_eq!(
            service_link(host, &svc("metrics", Some("https"), 8443)),
            "https://10.1.0.4:6443/api/v1/namespaces/kube-system/services/https:metrics:https/proxy"
        );
    }

    #[test]
    fn the_seed_output() {
        let mut dns = svc("kube-dns", Some("dns"), 53);
        dns.metadata.labels =
            Some([("kubernetes.io/name".to_string(), "CoreDNS".to_string())].into());
        let mut out = Vec::new();
        render("https://10.1.0.4:6443", &[dns], &mut out).unwrap();
        assert_eq!(
            String::from_utf8(out).unwrap(),
            "Kubernetes control plane is running at https://10.1.0.4:6443\n\
             CoreDNS is running at https://10.1.0.4:6443/api/v1/namespaces/kube-system/services/kube-dns:dns/proxy\n\
             \n\
             To further debug and diagnose cluster problems, use 'kubectl cluster-info dump'.\n"
        );
    }
}
