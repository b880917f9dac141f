//! The `klab/` folder of `klab cluster-info dump`, beyond what kubectl dumps: the component
//! flags of this machine's cluster processes (`klab ps --flags`), certificate expirations (the
//! kubeconfig's client certificate and kubeadm's `certs check-expiration` table for the PKI
//! folder), and the store's health as `etcdctl endpoint status` and `endpoint health` see it,
//! at the API server's own `--etcd-servers`.
//!
//! Each part says plainly what it could not see (not root, no local control plane, a managed
//! cluster's hidden store) instead of failing the dump.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::Duration;

use k8s_openapi::api::core::v1::Pod;
use time::OffsetDateTime;

use crate::api::duration::short_human;
use crate::kubeconfig::{self, Credentials};
use crate::pki;
use crate::tools::certs;
use crate::tools::ps::{self, Process};

/// How long the store gets to answer before store.txt says it did not.
const STORE_TIMEOUT: Duration = Duration::from_secs(3);

/// What the API server was told about its store, and where klab read it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct StoreFlags {
    pub source: String,
    pub etcd_servers: Vec<String>,
    pub cafile: Option<PathBuf>,
    pub certfile: Option<PathBuf>,
    pub keyfile: Option<PathBuf>,
    /// `--client-ca-file`: its folder is the PKI folder on a kubeadm-style node.
    pub client_ca_file: Option<PathBuf>,
}

impl StoreFlags {
    fn from_pairs<'a>(source: String, pairs: impl Iterator<Item = (&'a str, &'a str)>) -> Self {
        let mut f = StoreFlags {
            source,
            ..Default::default()
        };
        for (name, value) in pairs {
            match name {
                "etcd-servers" => {
                    f.etcd_servers = value
                        .split(',')
                        .filter(|s| !s.is_empty())
                        .map(String::from)
                        .collect()
                }
                "etcd-cafile" => f.cafile = Some(value.into()),
                "etcd-certfile" => f.certfile = Some(value.into()),
                "etcd-keyfile" => f.keyfile = Some(value.into()),
                "client-ca-file" => f.client_ca_file = Some(value.into()),
                _ => {}
            }
        }
        f
    }
}

/// The API server's store flags: from the local kube-apiserver process that serves `port`, else
/// from the kube-apiserver mirror pod's command (kubeadm and `klab up` write it there).
pub fn store_flags(procs: &[Process], port: u16, pods: &[Pod]) -> Option<StoreFlags> {
    for p in procs {
        if p.component().map(|c| c.name) != Some("kube-apiserver") {
            continue;
        }
        let flags = p.flags();
        let serves = flags
            .iter()
            .find(|f| f.name == "secure-port")
            .and_then(|f| f.value.as_deref())
            .map(|v| v.parse::<u16>().ok() == Some(port))
            .unwrap_or(port == 6443);
        if serves {
            return Some(StoreFlags::from_pairs(
                format!("the kube-apiserver process {} on this machine", p.pid),
                flags
                    .iter()
                    .filter_map(|f| Some((f.name.as_str(), f.value.as_deref()?))),
            ));
        }
    }
    for pod in pods {
        let meta = &pod.metadata;
        let is_apiserver = meta.namespace.as_deref() == Some("kube-system")
            && (meta
                .labels
                .as_ref()
                .and_then(|l| l.get("component"))
                .is_some_and(|c| c == "kube-apiserver")
                || meta
                    .name
                    .as_deref()
                    .is_some_and(|n| n.starts_with("kube-apiserver-")));
        let Some(container) = pod
            .spec
            .as_ref()
            .and_then(|s| s.containers.first())
            .filter(|_| is_apiserver)
        else {
            continue;
        };
        let argv: Vec<&str> = container
            .command
            .iter()
            .flatten()
            .chain(container.args.iter().flatten())
            .map(String::as_str)
            .collect();
        let pairs = argv
            .iter()
            .filter_map(|a| a.strip_prefix("--")?.split_once('='));
        return Some(StoreFlags::from_pairs(
            format!(
                "the command of the mirror pod kube-system/{}",
                meta.name.as_deref().unwrap_or("")
            ),
            pairs,
        ));
    }
    None
}

/// `components.txt`: this machine's cluster processes with their flags explained.
pub fn components(
    procs: &Result<Vec<Process>, ps::Error>,
    out: &mut dyn Write,
) -> std::io::Result<()> {
    writeln!(
        out,
        "The cluster's processes on the machine that ran the dump, flag by flag (`klab ps --flags`)."
    )?;
    writeln!(
        out,
        "On a managed cluster, or when the dump ran elsewhere, the control plane is not here.\n"
    )?;
    match procs {
        Err(e) => writeln!(out, "klab ps could not read the processes: {e}"),
        Ok(procs) if !procs.iter().any(|p| p.component().is_some()) => writeln!(
            out,
            "No cluster component runs on this machine (no kube-apiserver, etcd, klab-store, \
             controllers, kubelet or kube-proxy)."
        ),
        Ok(procs) => ps::explain(procs, None, None, out).map_err(|e| match e {
            ps::Error::Output(io) => io,
            other => std::io::Error::other(other.to_string()),
        }),
    }
}

fn client_cert_lines(
    source: &kubeconfig::Source,
    context: Option<&str>,
    now: OffsetDateTime,
) -> Result<String, String> {
    let merged = kubeconfig::load(source).map_err(|e| e.to_string())?;
    let resolved = merged.resolve(context).map_err(|e| e.to_string())?;
    let Credentials::ClientCert { cert, .. } = resolved.credentials() else {
        return Err(format!(
            "context {} (user {}) does not log in with a client certificate",
            resolved.context_name, resolved.user_name
        ));
    };
    let bytes = cert.bytes().map_err(|e| e.to_string())?;
    let certs = pki::parse_certs(&cert.describe(), &bytes).map_err(|e| e.to_string())?;
    let c = certs.first().ok_or("no certificate in it")?;
    let left = c.seconds_left(now);
    let when = c
        .not_after
        .format(&time::format_description::well_known::Rfc3339)
        .unwrap_or_default();
    Ok(format!(
        "Client certificate of context {} ({}):\n  user {}, groups {}\n  expires {when} ({})\n",
        resolved.context_name,
        cert.describe(),
        c.common_name.as_deref().unwrap_or("(no CN)"),
        if c.organizations.is_empty() {
            "(none)".to_string()
        } else {
            c.organizations.join(", ")
        },
        if left > 0 {
            format!("{} left", short_human(left))
        } else {
            "EXPIRED".to_string()
        }
    ))
}

/// `certificates.txt`: the kubeconfig's client certificate, then the PKI folder's table.
pub fn certificates(
    source: &kubeconfig::Source,
    context: Option<&str>,
    pki_dir: Option<&Path>,
    now: OffsetDateTime,
    out: &mut dyn Write,
) -> std::io::Result<()> {
    match client_cert_lines(source, context, now) {
        Ok(text) => write!(out, "{text}")?,
        Err(why) => writeln!(out, "Client certificate: not read ({why})")?,
    }
    writeln!(out)?;
    let Some(dir) = pki_dir else {
        return writeln!(
            out,
            "PKI folder: none found here (no /etc/kubernetes/pki and no local kube-apiserver \
             naming --client-ca-file); pass --pki-dir DIR on a control-plane node."
        );
    };
    writeln!(
        out,
        "PKI folder {} (as `kubeadm certs check-expiration`):",
        dir.display()
    )?;
    let config_dir = dir.parent().unwrap_or(Path::new("."));
    let mut table = Vec::new();
    match certs::check_expiration(dir, config_dir, None, now, &mut table) {
        Ok(()) => out.write_all(&table),
        Err(e) => writeln!(out, "  not readable here: {e}"),
    }
}

/// The PKI folder to read: the one asked for, kubeadm's, or the local API server's.
pub fn pki_dir(asked: Option<&Path>, flags: Option<&StoreFlags>) -> Option<PathBuf> {
    if let Some(d) = asked {
        return Some(d.to_path_buf());
    }
    let kubeadm = Path::new("/etc/kubernetes/pki");
    if kubeadm.is_dir() {
        return Some(kubeadm.to_path_buf());
    }
    flags
        .and_then(|f| f.client_ca_file.as_ref())
        .and_then(|ca| ca.parent())
        .map(Path::to_path_buf)
}

async fn one_endpoint(endpoint: &str, flags: &StoreFlags) -> Result<String, String> {
    use etcd_client::{Certificate, Client, ConnectOptions, Identity, TlsOptions};
    let mut options = ConnectOptions::new().with_connect_timeout(STORE_TIMEOUT);
    if endpoint.starts_with("https://") {
        let read = |p: &PathBuf| {
            std::fs::read(p).map_err(|e| format!("cannot read {}: {e} (run as root?)", p.display()))
        };
        let mut tls = TlsOptions::new();
        if let Some(ca) = &flags.cafile {
            tls = tls.ca_certificate(Certificate::from_pem(read(ca)?));
        }
        if let (Some(cert), Some(key)) = (&flags.certfile, &flags.keyfile) {
            tls = tls.identity(Identity::from_pem(read(cert)?, read(key)?));
        }
        options = options.with_tls(tls);
    }
    let work = async {
        let mut client = Client::connect([endpoint], Some(options))
            .await
            .map_err(|e| format!("cannot connect: {e}"))?;
        let status = client
            .status()
            .await
            .map_err(|e| format!("status failed: {e}"))?;
        // etcdctl endpoint health: a linearizable read of the key "health" must succeed.
        let health = match client.get("health", None).await {
            Ok(_) => "healthy: a linearizable read succeeded".to_string(),
            Err(e) => format!("unhealthy: a linearizable read failed: {e}"),
        };
        Ok::<String, String>(format!(
            "{endpoint} is {health}\n  version {}, db size {} bytes, leader {:x}, raft index {}, raft term {}",
            status.version(),
            status.db_size(),
            status.leader(),
            status.raft_index(),
            status.raft_term()
        ))
    };
    match tokio::time::timeout(STORE_TIMEOUT * 2, work).await {
        Ok(r) => r,
        Err(_) => Err(format!(
            "no answer within {} s",
            (STORE_TIMEOUT * 2).as_secs()
        )),
    }
}

/// `store.txt`: each `--etcd-servers` endpoint's status and health, or why it was not asked.
pub async fn store(flags: Option<&StoreFlags>, out: &mut dyn Write) -> std::io::Result<()> {
    let Some(flags) = flags else {
        return writeln!(
            out,
            "The API server's --etcd-servers is not known here: no kube-apiserver process on this \
             machine serves the kubeconfig's port, and kube-system has no kube-apiserver mirror pod.\n\
             (On a managed cluster the store is not reachable from outside.)"
        );
    };
    writeln!(
        out,
        "--etcd-servers={} (read from {})",
        flags.etcd_servers.join(","),
        flags.source
    )?;
    if flags.etcd_servers.is_empty() {
        return writeln!(out, "The API server names no store endpoint.");
    }
    for endpoint in &flags.etcd_servers {
        match one_endpoint(endpoint, flags).await {
            Ok(text) => writeln!(out, "{text}")?,
            Err(why) => writeln!(out, "{endpoint} is not reachable from here: {why}")?,
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn store_flags_from_a_mirror_pod() {
        let pod: Pod = serde_json::from_value(serde_json::json!({
            "metadata": {"name": "kube-apiserver-cp", "namespace": "kube-system"},
            "spec": {"containers": [{"name": "kube-apiserver", "command": [
                "kube-apiserver", "--etcd-servers=https://127.0.0.1:2379",
                "--etcd-cafile=/etc/kubernetes/pki/etcd/ca.crt",
                "--client-ca-file=/etc/kubernetes/pki/ca.crt"]}]}
        }))
        .unwrap();
        let f = store_flags(&[], 6443, &[pod]).unwrap();
        assert_eq!(f.etcd_servers, vec!["https://127.0.0.1:2379"]);
        assert_eq!(
            f.cafile.as_deref(),
            Some(Path::new("/etc/kubernetes/pki/etcd/ca.crt"))
        );
        assert!(
            pki_dir(None, Some(&f)).is_some(),
            "a kubeadm folder or the client CA's"
        );
        assert!(f.source.contains("kube-system/kube-apiserver-cp"));
    }
}
