//! The kubelet's config file (`--config`, a `kubelet.config.k8s.io/v1beta1`
//! KubeletConfiguration, as kubeadm and kind write to /var/lib/kubelet/config.yaml): the fields
//! klab's kubelet has flags for. As upstream, a flag given on the command line wins over the
//! file. Every other field is read and ignored.

use std::path::{Path, PathBuf};

use serde::Deserialize;

use super::Error;
use crate::cli::KubeletArgs;

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct KubeletConfiguration {
    pub kind: Option<String>,
    pub static_pod_path: Option<PathBuf>,
    pub address: Option<String>,
    pub port: Option<u16>,
    pub tls_cert_file: Option<PathBuf>,
    pub tls_private_key_file: Option<PathBuf>,
    pub authentication: Option<Authentication>,
    pub authorization: Option<Authorization>,
    #[serde(rename = "providerID")]
    pub provider_id: Option<String>,
    pub container_runtime_endpoint: Option<String>,
    pub register_node: Option<bool>,
    #[serde(rename = "clusterDNS")]
    pub cluster_dns: Option<Vec<String>>,
    pub cluster_domain: Option<String>,
    pub resolv_conf: Option<PathBuf>,
}

#[derive(Debug, Default, Deserialize)]
pub struct Authentication {
    pub x509: Option<X509>,
    pub anonymous: Option<Enabled>,
    pub webhook: Option<Enabled>,
}

#[derive(Debug, Default, Deserialize)]
pub struct Enabled {
    pub enabled: Option<bool>,
}

#[derive(Debug, Default, Deserialize)]
pub struct Authorization {
    pub mode: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct X509 {
    pub client_ca_file: Option<PathBuf>,
}

pub fn load(path: &Path) -> Result<KubeletConfiguration, Error> {
    let text = std::fs::read_to_string(path).map_err(|source| Error::ReadConfig {
        path: path.to_path_buf(),
        source,
    })?;
    let cfg: KubeletConfiguration =
        serde_yaml::from_str(&text).map_err(|source| Error::ParseConfig {
            path: path.to_path_buf(),
            source,
        })?;
    match cfg.kind.as_deref() {
        Some("KubeletConfiguration") => Ok(cfg),
        other => Err(Error::ConfigKind {
            path: path.to_path_buf(),
            kind: other.unwrap_or_default().to_string(),
        }),
    }
}

/// Fills every flag not given on the command line from the file.
pub fn merge(args: &mut KubeletArgs, cfg: KubeletConfiguration) {
    fn fill<T>(flag: &mut Option<T>, file: Option<T>) {
        if flag.is_none() {
            *flag = file;
        }
    }
    fill(&mut args.pod_manifest_path, cfg.static_pod_path);
    fill(&mut args.address, cfg.address);
    fill(&mut args.port, cfg.port);
    fill(&mut args.tls_cert_file, cfg.tls_cert_file);
    fill(&mut args.tls_private_key_file, cfg.tls_private_key_file);
    // A config file's defaults are upstream's v1beta1 defaults, which lock the server down
    // (the flags' own defaults do not).
    let authn = cfg.authentication.unwrap_or_default();
    fill(
        &mut args.client_ca_file,
        authn.x509.and_then(|x| x.client_ca_file),
    );
    fill(
        &mut args.anonymous_auth,
        Some(authn.anonymous.and_then(|a| a.enabled).unwrap_or(false)),
    );
    fill(
        &mut args.authentication_token_webhook,
        Some(authn.webhook.and_then(|w| w.enabled).unwrap_or(true)),
    );
    fill(
        &mut args.authorization_mode,
        Some(
            cfg.authorization
                .and_then(|a| a.mode)
                .unwrap_or_else(|| "Webhook".into()),
        ),
    );
    fill(&mut args.provider_id, cfg.provider_id);
    fill(
        &mut args.container_runtime_endpoint,
        cfg.container_runtime_endpoint,
    );
    fill(&mut args.register_node, cfg.register_node);
    fill(&mut args.cluster_domain, cfg.cluster_domain);
    fill(&mut args.resolv_conf, cfg.resolv_conf);
    if args.cluster_dns.is_empty() {
        args.cluster_dns = cfg.cluster_dns.unwrap_or_default();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    fn args(extra: &[&str]) -> KubeletArgs {
        let mut argv = vec!["kubelet", "--kubeconfig=k"];
        argv.extend(extra);
        match crate::cli::Cli::parse_from(["klab"].into_iter().chain(argv)).command {
            crate::cli::Command::Kubelet(a) => *a,
            _ => unreachable!("a kubelet command line"),
        }
    }

    #[test]
    fn a_config_file_locks_the_server_down_unless_it_says_otherwise() {
        let file: KubeletConfiguration =
            serde_yaml::from_str("kind: KubeletConfiguration\n").unwrap();
        let mut a = args(&[]);
        merge(&mut a, file);
        assert_eq!(a.anonymous_auth, Some(false));
        assert_eq!(a.authentication_token_webhook, Some(true));
        assert_eq!(a.authorization_mode.as_deref(), Some("Webhook"));
        let file: KubeletConfiguration = serde_yaml::from_str(
            "kind: KubeletConfiguration\nauthentication:\n  anonymous: {enabled: true}\nauthorization: {mode: AlwaysAllow}\n",
        )
        .unwrap();
        let mut a = args(&["--authorization-mode=Webhook"]);
        merge(&mut a, file);
        assert_eq!(a.anonymous_auth, Some(true));
        assert_eq!(
            a.authorization_mode.as_deref(),
            Some("Webhook"),
            "a flag wins over the file"
        );
    }
}
