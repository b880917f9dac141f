//! kube-apiserver: the Kubernetes REST API over HTTPS, storing objects in etcd.
//!
//! Mirrors `k8s.io/kubernetes/cmd/kube-apiserver` in miniature: flags as upstream, HTTPS with
//! client certificates, an authentication chain, authorizers (AlwaysAllow, RBAC, Node),
//! generic REST storage over the etcd v3 API with watch, discovery, Table output and health
//! checks. Objects are JSON values shaped as the upstream types; see the book chapter for what
//! is not built yet (admission plugins, OpenAPI, server-side apply, protobuf beyond a few kinds).
//!
//! The request path, outside in: [`server`] (TLS, connections) → [`handler`] (authn, authz,
//! routing, the log line) → [`rest`] (verbs) → [`storage`] (etcd).

pub mod admission;
pub mod authn;
pub mod authz;
pub mod body;
pub mod bootstrap;
pub mod convert;
pub mod defaults;
pub mod delete;
pub mod devpki;
pub mod discovery;
pub mod handler;
pub mod kubelet;
pub mod list;
pub mod openapi;
pub mod patch;
pub mod podproxy;
pub mod protobuf;
pub mod request;
pub mod rest;
pub mod review;
pub mod satoken;
pub mod server;
pub mod status;
pub mod storage;
pub mod subresources;
pub mod table;
pub mod tls;
pub mod watch;
pub mod write;

use std::collections::HashMap;
use std::net::Ipv4Addr;
use std::sync::Arc;

use crate::cli::ApiserverArgs;

#[derive(Debug, thiserror::Error)]
pub enum ApiserverError {
    #[error("starting the async runtime")]
    StartRuntime(#[source] std::io::Error),
    #[error(transparent)]
    Tls(#[from] tls::TlsError),
    #[error(transparent)]
    TokenFile(#[from] authn::TokenFileError),
    #[error(transparent)]
    ServiceAccountKey(#[from] satoken::SaKeyError),
    #[error("connecting to the store")]
    Storage(#[from] storage::StorageError),
    #[error("invalid --authorization-mode {0:?}: expected AlwaysAllow, AlwaysDeny, RBAC or Node")]
    AuthorizationMode(String),
    #[error(
        "admission plugin {0:?} is not built in klab (built: NamespaceLifecycle, NodeRestriction, Priority)"
    )]
    AdmissionPlugin(String),
    #[error("NamespaceLifecycle cannot be disabled in klab")]
    NamespaceLifecycleOff,
    #[error("invalid --service-cluster-ip-range {0:?}: expected an IPv4 CIDR such as 10.96.0.0/12")]
    ServiceRange(String),
    #[error("invalid --service-node-port-range {0:?}: expected LOW-HIGH such as 30000-32767")]
    NodePortRange(String),
    #[error("writing the default objects (namespaces, RBAC roles, the kubernetes service)")]
    Bootstrap(#[source] bootstrap::BootstrapError),
    #[error("setting up the client of kubelets")]
    KubeletClient(#[from] kubelet::KubeletClientError),
    #[error("listening on {addr}")]
    Listen {
        addr: String,
        #[source]
        source: std::io::Error,
    },
}

/// Everything a request handler needs, shared by all connections.
pub struct State {
    pub store: storage::Store,
    pub tokens: HashMap<String, authn::UserInfo>,
    /// Service-account token signer and verifier, when the flags name keys.
    pub sa_tokens: Option<satoken::ServiceAccountTokens>,
    /// Whether the NodeRestriction admission plugin is on.
    pub node_restriction: bool,
    /// Whether the ServiceAccount admission plugin is on (it is by default, as upstream).
    pub service_account_admission: bool,
    /// The DefaultTolerationSeconds plugin's seconds for not-ready and unreachable, when on
    /// (it is by default, as upstream).
    pub default_tolerations: Option<admission::DefaultTolerations>,
    pub anonymous: bool,
    pub authorizers: Vec<authz::Mode>,
    pub client_certs: Option<tls::ClientCerts>,
    /// The service IP range: network address and prefix length.
    pub service_range: (Ipv4Addr, u8),
    pub node_ports: (u16, u16),
    pub advertise: String,
    pub secure_port: u16,
    /// How to reach kubelets for logs, exec, attach and port-forward.
    pub kubelet: kubelet::KubeletClient,
}

fn parse_cidr(s: &str) -> Option<(Ipv4Addr, u8)> {
    let (ip, bits) = s.split_once('/')?;
    let ip: Ipv4Addr = ip.parse().ok()?;
    let bits: u8 = bits.parse().ok()?;
    if !(1..=30).contains(&bits) {
        return None;
    }
    // The network address: host bits cleared, so allocation never runs past the range.
    let mask = u32::MAX << (32 - u32::from(bits));
    Some((Ipv4Addr::from(u32::from(ip) & mask), bits))
}

fn parse_port_range(s: &str) -> Option<(u16, u16)> {
    let (lo, hi) = s.split_once('-')?;
    let (lo, hi) = (lo.trim().parse().ok()?, hi.trim().parse().ok()?);
    (lo <= hi).then_some((lo, hi))
}

/// Runs the API server until SIGINT or SIGTERM.
pub fn run(args: ApiserverArgs) -> Result<(), ApiserverError> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(ApiserverError::StartRuntime)?;
    runtime.block_on(serve(args))
}

async fn serve(args: ApiserverArgs) -> Result<(), ApiserverError> {
    let authorizers = args
        .authorization_mode
        .iter()
        .map(|m| authz::Mode::parse(m).ok_or_else(|| ApiserverError::AuthorizationMode(m.clone())))
        .collect::<Result<Vec<_>, _>>()?;
    let mut node_restriction = false;
    let mut service_account_admission = true;
    let mut default_tolerations = true;
    for p in &args.enable_admission_plugins {
        match p.trim() {
            "NamespaceLifecycle" | "Priority" | "DefaultTolerationSeconds" => {}
            "NodeRestriction" => node_restriction = true,
            "ServiceAccount" => service_account_admission = true,
            other => return Err(ApiserverError::AdmissionPlugin(other.to_owned())),
        }
    }
    for p in &args.disable_admission_plugins {
        match p.trim() {
            "NodeRestriction" => node_restriction = false,
            "ServiceAccount" => service_account_admission = false,
            "DefaultTolerationSeconds" => default_tolerations = false,
            "NamespaceLifecycle" => return Err(ApiserverError::NamespaceLifecycleOff),
            other => return Err(ApiserverError::AdmissionPlugin(other.to_owned())),
        }
    }
    let service_range = parse_cidr(&args.service_cluster_ip_range)
        .ok_or_else(|| ApiserverError::ServiceRange(args.service_cluster_ip_range.clone()))?;
    let node_ports = parse_port_range(&args.service_node_port_range)
        .ok_or_else(|| ApiserverError::NodePortRange(args.service_node_port_range.clone()))?;
    let (tls, client_certs) = tls::server_config(
        &args.tls_cert_file,
        &args.tls_private_key_file,
        args.client_ca_file.as_deref(),
    )?;
    let tokens = match &args.token_auth_file {
        Some(p) => authn::load_tokens(p)?,
        None => HashMap::new(),
    };
    let sa_tokens = satoken::ServiceAccountTokens::load(
        args.service_account_signing_key_file.as_deref(),
        &args.service_account_key_file,
        &args.service_account_issuer,
    )?;
    let kubelet = kubelet::KubeletClient::from_flags(&args)?;
    let store = storage::Store::connect(&args).await?;
    let advertise = args.advertise_address.clone().unwrap_or_else(|| {
        if args.bind_address == "0.0.0.0" {
            "127.0.0.1".into()
        } else {
            args.bind_address.clone()
        }
    });
    let state = Arc::new(State {
        store,
        tokens,
        sa_tokens,
        node_restriction,
        service_account_admission,
        default_tolerations: default_tolerations.then_some(admission::DefaultTolerations {
            not_ready: args.default_not_ready_toleration_seconds,
            unreachable: args.default_unreachable_toleration_seconds,
        }),
        anonymous: args.anonymous_auth,
        authorizers,
        client_certs,
        service_range,
        node_ports,
        advertise,
        secure_port: args.secure_port,
        kubelet,
    });
    // etcd may still be starting (static pods start together): retry for a minute, as
    // upstream's storage layer does, before giving up.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    loop {
        match bootstrap::run(&state).await {
            Ok(()) => break,
            Err(e) if std::time::Instant::now() < deadline => {
                eprintln!(
                    "kube-apiserver: waiting for etcd at {:?}: {e}",
                    args.etcd_servers
                );
                tokio::time::sleep(std::time::Duration::from_secs(1)).await;
            }
            Err(e) => return Err(ApiserverError::Bootstrap(e)),
        }
    }
    server::serve(state, &args, tls).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranges() {
        assert_eq!(
            parse_cidr("10.96.0.7/12"),
            Some((Ipv4Addr::new(10, 96, 0, 0), 12))
        );
        assert_eq!(
            parse_cidr("255.255.255.254/30"),
            Some((Ipv4Addr::new(255, 255, 255, 252), 30))
        );
        assert_eq!(parse_cidr("10.0.0.0/31"), None);
        assert_eq!(parse_cidr("nonsense"), None);
        assert_eq!(parse_port_range("30000-32767"), Some((30000, 32767)));
        assert_eq!(parse_port_range("2-1"), None);
    }
}
