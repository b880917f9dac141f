//! The API server as a client of kubelets: `pods/log`, `pods/exec`, `pods/attach`,
//! `pods/portforward` and `nodes/proxy`, proxied to the node's :10250 server.
//!
//! Mirrors upstream's `pkg/registry/core/pod/rest` (LogREST, ExecREST, AttachREST,
//! PortForwardREST), `LogLocation` and `streamLocation` in `pkg/registry/core/pod/strategy.go`
//! (which container, which node, which address and port), and `pkg/kubelet/client` (the
//! client certificate of `--kubelet-client-certificate`/`--kubelet-client-key`, the kubelet's
//! serving certificate checked against `--kubelet-certificate-authority` when given). Upgrade
//! requests (WebSocket or SPDY) pass through byte for byte, as upstream's
//! `UpgradeAwareHandler`; klab has no `StreamTranslatorHandler`: its kubelet speaks WebSocket
//! itself. `nodes/proxy` sends any request on to the node's kubelet (`kubectl get --raw
//! /api/v1/nodes/N/proxy/stats/summary`). Leaves out `insecureSkipTLSVerifyBackend`
//! and the `node:port` form of node proxy names; `pods/proxy` and `services/proxy`, which dial
//! pods rather than kubelets, are [`super::podproxy`].

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::{HeaderMap, Method, StatusCode};
use http_body_util::{BodyExt, Limited};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use serde_json::Value;
use tokio_rustls::TlsConnector;

use super::handler::{Ctx, Resp};
use super::rest::fetch;
use super::status::ApiError;
use crate::api::resources::{self, Resource};
use crate::cli::ApiserverArgs;
use crate::pki::AnyServer;
use crate::stream::proxy;
use crate::stream::remotecommand::Options;

/// What can be wrong with the kubelet client's flags.
#[derive(Debug, thiserror::Error)]
pub enum KubeletClientError {
    #[error("reading {flag} {}", path.display())]
    Read {
        flag: &'static str,
        path: PathBuf,
        #[source]
        source: rustls::pki_types::pem::Error,
    },
    #[error("--kubelet-client-certificate and --kubelet-client-key must be given together")]
    Pair,
    #[error("adding a CA of --kubelet-certificate-authority {}", path.display())]
    Ca {
        path: PathBuf,
        #[source]
        source: rustls::Error,
    },
    #[error("building the kubelet client's TLS configuration")]
    Tls(#[source] rustls::Error),
    #[error("building the verifier of kubelet certificates")]
    Verifier(#[source] rustls::client::VerifierBuilderError),
}

/// How the API server reaches kubelets.
pub struct KubeletClient {
    tls: TlsConnector,
    verify: bool,
    preferred: Vec<String>,
}

fn read_err<'a>(
    flag: &'static str,
    path: &'a Path,
) -> impl FnOnce(rustls::pki_types::pem::Error) -> KubeletClientError + 'a {
    move |source| KubeletClientError::Read {
        flag,
        path: path.to_path_buf(),
        source,
    }
}

impl KubeletClient {
    pub fn from_flags(args: &ApiserverArgs) -> Result<KubeletClient, KubeletClientError> {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let builder = rustls::ClientConfig::builder_with_provider(provider.clone())
            .with_safe_default_protocol_versions()
            .map_err(KubeletClientError::Tls)?;
        let builder = match &args.kubelet_certificate_authority {
            Some(ca) => {
                let mut roots = rustls::RootCertStore::empty();
                for c in CertificateDer::pem_file_iter(ca)
                    .map_err(read_err("--kubelet-certificate-authority", ca))?
                {
                    let c = c.map_err(read_err("--kubelet-certificate-authority", ca))?;
                    roots.add(c).map_err(|source| KubeletClientError::Ca {
                        path: ca.clone(),
                        source,
                    })?;
                }
                let v = rustls::client::WebPkiServerVerifier::builder_with_provider(
                    Arc::new(roots),
                    provider,
                )
                .build()
                .map_err(KubeletClientError::Verifier)?;
                builder.with_webpki_verifier(v)
            }
            // Upstream's behaviour without --kubelet-certificate-authority: kubelets usually
            // serve self-signed certificates.
            None => builder
                .dangerous()
                .with_custom_certificate_verifier(Arc::new(AnyServer::new(provider))),
        };
        let config = match (&args.kubelet_client_certificate, &args.kubelet_client_key) {
            (Some(crt), Some(key)) => {
                let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(crt)
                    .map_err(read_err("--kubelet-client-certificate", crt))?
                    .collect::<Result<_, _>>()
                    .map_err(read_err("--kubelet-client-certificate", crt))?;
                let key = PrivateKeyDer::from_pem_file(key)
                    .map_err(read_err("--kubelet-client-key", key))?;
                builder
                    .with_client_auth_cert(chain, key)
                    .map_err(KubeletClientError::Tls)?
            }
            (None, None) => builder.with_no_client_auth(),
            _ => return Err(KubeletClientError::Pair),
        };
        Ok(KubeletClient {
            tls: TlsConnector::from(Arc::new(config)),
            verify: args.kubelet_certificate_authority.is_some(),
            preferred: args.kubelet_preferred_address_types.clone(),
        })
    }
}

/// The container a request is about: the one named, or the pod's only one. Upstream's
/// `validateContainer`, with its messages.
fn container_of(pod: &Value, name: &str, asked: Option<&str>) -> Result<String, ApiError> {
    let names = |field: &str| -> Vec<String> {
        pod.pointer(&format!("/spec/{field}"))
            .and_then(Value::as_array)
            .map(|a| {
                a.iter()
                    .filter_map(|c| c["name"].as_str().map(str::to_owned))
                    .collect()
            })
            .unwrap_or_default()
    };
    let (main, init) = (names("containers"), names("initContainers"));
    match asked.filter(|a| !a.is_empty()) {
        Some(c) if main.iter().chain(&init).any(|n| n == c) => Ok(c.to_owned()),
        Some(c) => Err(ApiError::bad_request(format!(
            "container {c} is not valid for pod {name}"
        ))),
        None if main.len() == 1 => Ok(main[0].clone()),
        None => {
            let mut msg = format!(
                "a container name must be specified for pod {name}, choose one of: [{}]",
                main.join(" ")
            );
            if !init.is_empty() {
                msg.push_str(&format!(
                    " or one of the init containers: [{}]",
                    init.join(" ")
                ));
            }
            Err(ApiError::bad_request(msg))
        }
    }
}

/// Where the pod's kubelet listens (see [`node_kubelet`]).
async fn kubelet_of(ctx: &Ctx, pod: &Value, name: &str) -> Result<(String, String, u16), ApiError> {
    let node = pod
        .pointer("/spec/nodeName")
        .and_then(Value::as_str)
        .filter(|n| !n.is_empty())
        .ok_or_else(|| ApiError::bad_request(format!("pod {name} does not have a host assigned")))?
        .to_owned();
    node_kubelet(ctx, node).await
}

/// Where a node's kubelet listens: the node's first address of a preferred type, and the
/// port it published in `status.daemonEndpoints`.
async fn node_kubelet(ctx: &Ctx, node: String) -> Result<(String, String, u16), ApiError> {
    let nodes = resources::find("", "v1", "nodes").expect("nodes are in the table");
    let n = fetch(&ctx.state, nodes, "", &node).await?.value;
    let addresses = n
        .pointer("/status/addresses")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    let kubelet = &ctx.state.kubelet;
    let address = kubelet
        .preferred
        .iter()
        .find_map(|t| {
            addresses
                .iter()
                .find(|a| a["type"].as_str() == Some(t.as_str()))
                .and_then(|a| a["address"].as_str())
        })
        .ok_or_else(|| {
            ApiError::internal(format!(
                "no preferred addresses found; known addresses: {addresses:?} (the node {node} has none of the types {:?})",
                kubelet.preferred
            ))
        })?
        .to_owned();
    let port = n
        .pointer("/status/daemonEndpoints/kubeletEndpoint/Port")
        .and_then(Value::as_u64)
        .and_then(|p| u16::try_from(p).ok())
        .filter(|p| *p != 0)
        .unwrap_or(10250);
    Ok((node, address, port))
}

/// `address:port`, with an IPv6 address in brackets (Go's `net.JoinHostPort`).
pub(super) fn host_port(address: &str, port: u16) -> String {
    if address.contains(':') {
        format!("[{address}]:{port}")
    } else {
        format!("{address}:{port}")
    }
}

/// A TCP connection to `backend` (`host:port`) within 10 s, or why not, worded as Go's net
/// package words it (`dial tcp 10.0.0.5:80: connect: connection refused`), which is what
/// upstream's messages show.
pub(super) async fn dial_tcp(backend: &str) -> Result<tokio::net::TcpStream, String> {
    let tcp = tokio::time::timeout(
        Duration::from_secs(10),
        tokio::net::TcpStream::connect(backend),
    )
    .await
    .map_err(|_| format!("dial tcp {backend}: i/o timeout"))?
    .map_err(|e| {
        let why = match e.kind() {
            std::io::ErrorKind::ConnectionRefused => "connect: connection refused".to_owned(),
            _ => e.to_string(),
        };
        format!("dial tcp {backend}: {why}")
    })?;
    let _ = tcp.set_nodelay(true);
    Ok(tcp)
}

/// A TLS connection to the kubelet, authenticated with the API server's client certificate.
async fn dial(
    ctx: &Ctx,
    node: &str,
    address: &str,
    port: u16,
) -> Result<tokio_rustls::client::TlsStream<tokio::net::TcpStream>, ApiError> {
    let backend = host_port(address, port);
    let fail = |why: String| {
        ApiError::internal(format!(
            "error dialing backend: {why} (the kubelet of node {node}, from its status.addresses and status.daemonEndpoints; is it running?)"
        ))
    };
    let tcp = dial_tcp(&backend).await.map_err(fail)?;
    let kubelet = &ctx.state.kubelet;
    let name = if kubelet.verify {
        ServerName::try_from(address.to_owned())
            .map_err(|e| fail(format!("{address} is not a server name: {e}")))?
    } else {
        ServerName::try_from("kubelet").map_err(|e| fail(e.to_string()))?
    };
    kubelet
        .tls
        .connect(name, tcp)
        .await
        .map_err(|e| fail(format!("tls handshake with {backend}: {e}")))
}

/// A kubelet's error answer as a Status: its status code and its text.
async fn kubelet_error(resp: http::Response<crate::stream::Body>) -> ApiError {
    let code = resp.status();
    let text = Limited::new(resp.into_body(), 64 * 1024)
        .collect()
        .await
        .map(|b| String::from_utf8_lossy(&b.to_bytes()).trim().to_owned())
        .unwrap_or_default();
    match code {
        StatusCode::NOT_FOUND => ApiError::new(404, "NotFound", text),
        StatusCode::BAD_REQUEST => ApiError::bad_request(text),
        StatusCode::FORBIDDEN => ApiError::new(403, "Forbidden", text),
        StatusCode::UNAUTHORIZED => ApiError::new(
            401,
            "Unauthorized",
            format!(
                "the kubelet refused the API server's client certificate (--kubelet-client-certificate): {text}"
            ),
        ),
        _ => ApiError::internal(text),
    }
}

fn phase_done(pod: &Value) -> Option<&str> {
    pod.pointer("/status/phase")
        .and_then(Value::as_str)
        .filter(|p| matches!(*p, "Succeeded" | "Failed"))
}

/// `GET pods/NAME/log`: the kubelet's `/containerLogs`, streamed back as it comes
/// (`follow=true` streams until the container stops or the client leaves).
pub(super) async fn log(ctx: &Ctx, pods: &Resource) -> Result<Resp, ApiError> {
    let info = &ctx.info;
    let pod = fetch(&ctx.state, pods, &info.namespace, &info.name)
        .await?
        .value;
    let asked = ctx.query.get("container").map(String::as_str);
    let container = container_of(&pod, &info.name, asked)?;
    let (node, address, port) = kubelet_of(ctx, &pod, &info.name).await?;
    // The serializer is not Send: it is built and finished before any await.
    let query = {
        let mut q = form_urlencoded::Serializer::new(String::new());
        for k in [
            "follow",
            "previous",
            "timestamps",
            "tailLines",
            "sinceSeconds",
            "sinceTime",
            "limitBytes",
        ] {
            if let Some(v) = ctx.query.get(k) {
                q.append_pair(k, v);
            }
        }
        q.finish()
    };
    let path = format!(
        "/containerLogs/{}/{}/{container}?{query}",
        info.namespace, info.name
    );
    let tls = dial(ctx, &node, &address, port).await?;
    let resp = proxy::forward(
        tls,
        &address,
        Method::GET,
        &path,
        &HeaderMap::new(),
        Bytes::new(),
        None,
    )
    .await
    .map_err(|e| ApiError::internal(crate::kubelet::chain(&e)))?;
    if resp.status() != StatusCode::OK {
        return Err(kubelet_error(resp).await);
    }
    Ok(resp)
}

/// `pods/NAME/exec`, `attach`, `portforward`: the upgrade request sent on to the kubelet, and
/// on `101` the two connections joined byte for byte.
pub(super) async fn stream(ctx: &Ctx, pods: &Resource, sub: &str) -> Result<Resp, ApiError> {
    let info = &ctx.info;
    if !proxy::is_upgrade(&ctx.headers) {
        return Err(ApiError::bad_request(
            "Upgrade request required (kubectl sends one: WebSocket v5.channel.k8s.io or SPDY/3.1)",
        ));
    }
    let pod = fetch(&ctx.state, pods, &info.namespace, &info.name)
        .await?
        .value;
    if let Some(phase) = phase_done(&pod) {
        return Err(ApiError::bad_request(format!(
            "cannot {sub} into a container in a completed pod; current phase is {phase}"
        )));
    }
    let opts = Options::from_query(&ctx.raw_query);
    let path = match sub {
        "portforward" => {
            let ports: Vec<String> = form_urlencoded::parse(ctx.raw_query.as_bytes())
                .filter(|(k, _)| k == "ports")
                .flat_map(|(_, v)| {
                    v.split(',')
                        .map(|p| format!("port={}", p.trim()))
                        .collect::<Vec<_>>()
                })
                .filter(|p| p[5..].bytes().all(|b| b.is_ascii_digit()))
                .collect();
            format!(
                "/portForward/{}/{}?{}",
                info.namespace,
                info.name,
                ports.join("&")
            )
        }
        _ => {
            let container = container_of(&pod, &info.name, opts.container.as_deref())?;
            if sub == "exec" && opts.command.is_empty() {
                return Err(ApiError::bad_request("you must specify at least 1 command"));
            }
            if !(opts.stdin || opts.stdout || opts.stderr) {
                return Err(ApiError::bad_request(
                    "you must specify at least 1 of stdin, stdout, stderr",
                ));
            }
            let endpoint = if sub == "exec" { "exec" } else { "attach" };
            format!(
                "/{endpoint}/{}/{}/{container}?{}",
                info.namespace,
                info.name,
                opts.to_query()
            )
        }
    };
    let (node, address, port) = kubelet_of(ctx, &pod, &info.name).await?;
    let tls = dial(ctx, &node, &address, port).await?;
    let upgrade = ctx.upgrade.lock().ok().and_then(|mut u| u.take());
    let method = if proxy::upgrade_to(&ctx.headers) == "websocket" {
        Method::GET
    } else {
        Method::POST
    };
    let resp = proxy::forward(
        tls,
        &address,
        method,
        &path,
        &ctx.headers,
        Bytes::new(),
        upgrade,
    )
    .await
    .map_err(|e| ApiError::internal(crate::kubelet::chain(&e)))?;
    if resp.status() == StatusCode::SWITCHING_PROTOCOLS {
        return Ok(resp);
    }
    Err(kubelet_error(resp).await)
}

/// What follows `/{resource}/{name}/proxy` in a request's path, as sent: `/PATH`, or empty
/// when the URL ends at `proxy`.
pub(super) fn after_proxy<'a>(full: &'a str, resource: &str, name: &str) -> &'a str {
    let marker = format!("/{resource}/{name}/proxy");
    full.find(&marker)
        .map(|i| &full[i + marker.len()..])
        .unwrap_or_default()
}

/// The path and query a `nodes/NAME/proxy/PATH` request asks of the kubelet: `/PATH`
/// (`/` when there is none), the query as sent.
fn proxied_path(full: &str, node: &str, raw_query: &str) -> String {
    let rest = after_proxy(full, "nodes", node);
    let mut path = if rest.starts_with('/') {
        rest.to_owned()
    } else {
        format!("/{rest}")
    };
    if !raw_query.is_empty() {
        path.push('?');
        path.push_str(raw_query);
    }
    path
}

/// `nodes/NAME/proxy/PATH` (any method): the request sent on to the node's kubelet as the API
/// server's kubelet client, the kubelet's answer (its status, headers and body) given back as
/// it is, and an upgrade joined on `101`. Upstream's `pkg/registry/core/node/rest`
/// ProxyREST; authorization already asked for `<verb> nodes/proxy`.
pub(super) async fn node_proxy(ctx: &Ctx) -> Result<Resp, ApiError> {
    let info = &ctx.info;
    let path = proxied_path(&info.path, &info.name, &ctx.raw_query);
    let (node, address, port) = node_kubelet(ctx, info.name.clone()).await?;
    let tls = dial(ctx, &node, &address, port).await?;
    let upgrade = ctx.upgrade.lock().ok().and_then(|mut u| u.take());
    proxy::forward(
        tls,
        &address,
        ctx.method.clone(),
        &path,
        &ctx.headers,
        ctx.body.clone(),
        upgrade,
    )
    .await
    .map_err(|e| ApiError::internal(crate::kubelet::chain(&e)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn node_proxy_paths() {
        assert_eq!(
            proxied_path("/api/v1/nodes/n1/proxy/stats/summary", "n1", ""),
            "/stats/summary"
        );
        assert_eq!(proxied_path("/api/v1/nodes/n1/proxy", "n1", ""), "/");
        assert_eq!(
            proxied_path("/api/v1/nodes/n1/proxy/pods/", "n1", "a=1&b=2"),
            "/pods/?a=1&b=2"
        );
    }

    #[test]
    fn which_container() {
        let one = json!({"spec": {"containers": [{"name": "c"}]}});
        assert_eq!(container_of(&one, "p", None).unwrap(), "c");
        assert_eq!(
            container_of(&one, "p", Some("x")).unwrap_err().message,
            "container x is not valid for pod p"
        );
        let two = json!({"spec": {"containers": [{"name": "a"}, {"name": "b"}], "initContainers": [{"name": "i"}]}});
        assert_eq!(
            container_of(&two, "p", None).unwrap_err().message,
            "a container name must be specified for pod p, choose one of: [a b] or one of the init containers: [i]"
        );
        assert_eq!(container_of(&two, "p", Some("i")).unwrap(), "i");
    }
}
