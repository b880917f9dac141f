//! `pods/proxy` and `services/proxy`: the API server dialing a pod itself and passing a request
//! on to it (`kubectl get --raw /api/v1/namespaces/default/pods/web:8080/proxy/healthz`, or
//! `kubectl proxy` and a browser on `…/services/web:80/proxy/`).
//!
//! Mirrors upstream's `ProxyREST` of `pkg/registry/core/pod/rest/subresources.go` and
//! `pkg/registry/core/service/proxy.go`, with their `ResourceLocation`s (pod strategy and
//! service storage): the name is `name`, `name:port` or `scheme:name:port` (`SplitSchemeNamePort`,
//! scheme `http` or `https`); a pod is reached at its IP on the port asked for (a number or a name,
//! passed on as it is) or its first declared container port; a service at one ready address, picked
//! at random, of its Endpoints for the service port asked for (a number is turned into the port's
//! name first), and only an address that belongs to a pod (`targetRef`). The request goes on with
//! its method (GET, POST, PUT, PATCH, DELETE, HEAD, OPTIONS), path, query, headers and body; an
//! upgrade is joined on `101` ([`crate::stream::proxy`]); an empty path is redirected to `/` as
//! upstream does. `https:` backends are not verified, as upstream's proxy transport does not.
//! Leaves out upstream's rewriting of links in proxied HTML, `X-Forwarded-*` headers,
//! `--proxy-client-cert-file` and the legacy `/api/v1/proxy/…` paths.

use std::net::IpAddr;
use std::sync::{Arc, OnceLock};

use http::Method;
use rand::Rng;
use rustls::pki_types::ServerName;
use serde_json::Value;
use tokio_rustls::TlsConnector;

use super::handler::{Ctx, Resp, full};
use super::kubelet::{after_proxy, dial_tcp, host_port};
use super::rest::fetch;
use super::status::ApiError;
use crate::api::resources;
use crate::pki::AnyServer;
use crate::stream::proxy;

/// A connection to a backend, plain TCP or TLS over it.
trait Backend: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send {}
impl<T: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send> Backend for T {}
/// Where a proxied request goes: `http` or `https`, and `host:port`.
#[derive(Debug, Clone, PartialEq)]
struct Location {
    https: bool,
    host: String,
}

/// `name`, `name:port` or `scheme:name:port` as `(https, name, port)`; `None` when the
/// scheme is not `http` or `https`, the name is empty or there are too many colons (upstream's
/// `SplitSchemeNamePort`).
fn split_scheme_name_port(id: &str) -> Option<(bool, &str, &str)> {
    let parts: Vec<&str> = id.split(':').collect();
    let (scheme, name, port) = match parts.as_slice() {
        [name] => ("", *name, ""),
        [name, port] => ("", *name, *port),
        [scheme, name, port] => (*scheme, *name, *port),
        _ => return None,
    };
    if name.is_empty() || !matches!(scheme, "" | "http" | "https") {
        return None;
    }
    Some((scheme == "https", name, port))
}

/// Go's `IP.IsGlobalUnicast`: what upstream lets the API server dial as a pod.
fn global_unicast(ip: &IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => {
            !(v4.is_unspecified()
                || v4.is_loopback()
                || v4.is_multicast()
                || v4.is_link_local()
                || v4.is_broadcast())
        }
        IpAddr::V6(v6) => {
            !(v6.is_unspecified()
                || v6.is_loopback()
                || v6.is_multicast()
                || v6.is_unicast_link_local())
        }
    }
}

/// The pod's IP: the first of `status.podIPs`, else `status.podIP`.
fn pod_ip(pod: &Value) -> &str {
    pod.pointer("/status/podIPs/0/ip")
        .or_else(|| pod.pointer("/status/podIP"))
        .and_then(Value::as_str)
        .unwrap_or_default()
}

/// Upstream's pod `ResourceLocation`, given the pod: its IP (refused unless global unicast,
/// so a pod without an IP is a 400), and the port asked for or its first declared one.
fn pod_location(pod: &Value, https: bool, port: &str) -> Result<Location, ApiError> {
    let ip = pod_ip(pod);
    if !ip.parse::<IpAddr>().is_ok_and(|a| global_unicast(&a)) {
        return Err(ApiError::bad_request("address not allowed"));
    }
    let declared = || {
        pod.pointer("/spec/containers")
            .and_then(Value::as_array)?
            .iter()
            .find_map(|c| c.pointer("/ports/0/containerPort").and_then(Value::as_u64))
            .map(|p| p.to_string())
    };
    // Without a port, Go's transport dials the scheme's own.
    let port = match (port, declared()) {
        ("", Some(p)) => p,
        ("", None) if https => "443".to_owned(),
        ("", None) => "80".to_owned(),
        (p, _) => p.to_owned(),
    };
    let host = if ip.contains(':') {
        format!("[{ip}]:{port}")
    } else {
        format!("{ip}:{port}")
    };
    Ok(Location { https, host })
}

/// The service port's name that `port` (a number, or a name already) stands for.
fn service_port_name(svc: &Value, name: &str, port: &str) -> Result<String, ApiError> {
    let Ok(number) = port.parse::<u64>() else {
        return Ok(port.to_owned());
    };
    svc.pointer("/spec/ports")
        .and_then(Value::as_array)
        .and_then(|ports| ports.iter().find(|p| p["port"].as_u64() == Some(number)))
        .map(|p| p["name"].as_str().unwrap_or_default().to_owned())
        .ok_or_else(|| {
            ApiError::unavailable(format!(
                "no service port {number} found for service \"{name}\""
            ))
        })
}

/// The candidates of Endpoints for the port named `port`: each ready address with its
/// `targetRef` and the endpoint port, subset by subset.
fn candidates<'a>(eps: &'a Value, port: &str) -> Vec<(&'a Value, u16)> {
    let mut out = Vec::new();
    for ss in eps["subsets"].as_array().into_iter().flatten() {
        let Some(p) = ss["ports"]
            .as_array()
            .into_iter()
            .flatten()
            .find(|p| p["name"].as_str().unwrap_or_default() == port)
            .and_then(|p| p["port"].as_u64())
            .and_then(|p| u16::try_from(p).ok())
        else {
            continue;
        };
        for a in ss["addresses"].as_array().into_iter().flatten() {
            out.push((a, p));
        }
    }
    out
}

/// Upstream's `isValidAddress`: the address names a pod (`targetRef`) that exists and has
/// this IP.
async fn belongs_to_pod(ctx: &Ctx, addr: &Value) -> bool {
    let r = &addr["targetRef"];
    if r["kind"].as_str() != Some("Pod") {
        return false;
    }
    let pods = resources::find("", "v1", "pods").expect("pods are in the table");
    let ns = r["namespace"]
        .as_str()
        .filter(|n| !n.is_empty())
        .unwrap_or(&ctx.info.namespace);
    let Ok(pod) = fetch(&ctx.state, pods, ns, r["name"].as_str().unwrap_or_default()).await else {
        return false;
    };
    let ip = addr["ip"].as_str().unwrap_or_default();
    pod_ip(&pod.value) == ip
        || pod.value["status"]["podIPs"]
            .as_array()
            .into_iter()
            .flatten()
            .any(|p| p["ip"].as_str() == Some(ip))
}

/// Upstream's service `ResourceLocation`: one ready address of a pod behind the service, on
/// the endpoint port of the service port asked for.
async fn service_location(ctx: &Ctx, id: &str) -> Result<Location, ApiError> {
    let (https, name, port) = split_scheme_name_port(id)
        .ok_or_else(|| ApiError::bad_request(format!("invalid service request \"{id}\"")))?;
    let ns = &ctx.info.namespace;
    let port = if port.parse::<u64>().is_ok() {
        let services = resources::find("", "v1", "services").expect("services are in the table");
        let svc = fetch(&ctx.state, services, ns, name).await?.value;
        service_port_name(&svc, name, port)?
    } else {
        port.to_owned()
    };
    let endpoints = resources::find("", "v1", "endpoints").expect("endpoints are in the table");
    let eps = fetch(&ctx.state, endpoints, ns, name).await?.value;
    if eps["subsets"].as_array().is_none_or(Vec::is_empty) {
        return Err(ApiError::unavailable(format!(
            "no endpoints available for service \"{name}\""
        )));
    }
    let mut found = candidates(&eps, &port);
    // Random, as upstream, so repeated requests spread over the pods.
    while !found.is_empty() {
        let i = rand::rng().random_range(0..found.len());
        let (addr, p) = found.swap_remove(i);
        if belongs_to_pod(ctx, addr).await {
            let ip = addr["ip"].as_str().unwrap_or_default();
            return Ok(Location {
                https,
                host: host_port(ip, p),
            });
        }
    }
    Err(ApiError::unavailable(format!(
        "no endpoints available for service \"{id}\""
    )))
}

/// A TLS client for `https:` backends: pods serve certificates of their own, which upstream's
/// proxy transport does not verify either. Built once; `None` if rustls refused the
/// configuration (it does not, with ring's defaults).
fn insecure_tls() -> Option<&'static TlsConnector> {
    static TLS: OnceLock<Option<TlsConnector>> = OnceLock::new();
    TLS.get_or_init(|| {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let config = rustls::ClientConfig::builder_with_provider(provider.clone())
            .with_safe_default_protocol_versions()
            .ok()?
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(AnyServer::new(provider)))
            .with_no_client_auth();
        Some(TlsConnector::from(Arc::new(config)))
    })
    .as_ref()
}

/// The methods upstream's `ProxyREST` connects (`proxyMethods`).
fn allowed(m: &Method) -> bool {
    [
        Method::GET,
        Method::POST,
        Method::PUT,
        Method::PATCH,
        Method::DELETE,
        Method::HEAD,
        Method::OPTIONS,
    ]
    .contains(m)
}

/// `pods/NAME[:PORT]/proxy[/PATH]` and `services/[SCHEME:]NAME[:PORT]/proxy[/PATH]`: where to,
/// then the request sent on and the pod's answer given back as it is. Authorization already
/// asked for `<verb> pods/proxy` or `services/proxy`.
pub(super) async fn serve(ctx: &Ctx) -> Result<Resp, ApiError> {
    let info = &ctx.info;
    if !allowed(&ctx.method) {
        return Err(ApiError::method_not_allowed(format!(
            "the server does not allow this method on the requested resource ({} {}/proxy)",
            info.verb, info.resource
        )));
    }
    let location = if info.resource == "pods" {
        let (https, name, port) = split_scheme_name_port(&info.name).ok_or_else(|| {
            ApiError::bad_request(format!("invalid pod request \"{}\"", info.name))
        })?;
        let pods = resources::find("", "v1", "pods").expect("pods are in the table");
        let pod = fetch(&ctx.state, pods, &info.namespace, name).await?.value;
        pod_location(&pod, https, port)?
    } else {
        service_location(ctx, &info.name).await?
    };
    let rest = after_proxy(&info.path, &info.resource, &info.name);
    let upgrading = proxy::is_upgrade(&ctx.headers);
    if rest.is_empty() && !upgrading && matches!(ctx.method, Method::GET | Method::HEAD) {
        // Relative links of the page then resolve under `…/proxy/` (upstream's hack for
        // kubernetes/kubernetes#4958).
        let mut to = format!("{}/", info.path);
        if !ctx.raw_query.is_empty() {
            to.push('?');
            to.push_str(&ctx.raw_query);
        }
        let mut resp = full(301, "text/html; charset=utf-8", Vec::new());
        if let Ok(v) = http::HeaderValue::from_str(&to) {
            resp.headers_mut().insert(http::header::LOCATION, v);
        }
        return Ok(resp);
    }
    let mut path = if rest.is_empty() {
        "/".to_owned()
    } else {
        rest.to_owned()
    };
    if !ctx.raw_query.is_empty() {
        path.push('?');
        path.push_str(&ctx.raw_query);
    }
    let unreachable =
        |why: String| ApiError::unavailable(format!("error trying to reach service: {why}"));
    let backend = &location.host;
    let tcp = dial_tcp(backend).await.map_err(unreachable)?;
    let upgrade = ctx.upgrade.lock().ok().and_then(|mut u| u.take());
    let method = ctx.method.clone();
    let io: Box<dyn Backend> = if location.https {
        let host = backend
            .rsplit_once(':')
            .map(|(h, _)| h.trim_matches(['[', ']']))
            .unwrap_or_default();
        let name = ServerName::try_from(host.to_owned())
            .map_err(|e| unreachable(format!("{host} is not a server name: {e}")))?;
        let tls = insecure_tls()
            .ok_or_else(|| unreachable("no TLS configuration for https backends".to_owned()))?
            .connect(name, tcp)
            .await
            .map_err(|e| unreachable(format!("tls handshake with {backend}: {e}")))?;
        Box::new(tls)
    } else {
        Box::new(tcp)
    };
    let sent = proxy::forward(
        io,
        &location.host,
        method,
        &path,
        &ctx.headers,
        ctx.body.clone(),
        upgrade,
    )
    .await;
    sent.map_err(|e| unreachable(crate::kubelet::chain(&e)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn names_with_scheme_and_port() {
        assert_eq!(split_scheme_name_port("web"), Some((false, "web", "")));
        assert_eq!(split_scheme_name_port("web:80"), Some((false, "web", "80")));
        assert_eq!(
            split_scheme_name_port("https:web:"),
            Some((true, "web", ""))
        );
        assert_eq!(
            split_scheme_name_port("http:web:http"),
            Some((false, "web", "http"))
        );
        assert_eq!(split_scheme_name_port("ftp:web:21"), None);
        assert_eq!(split_scheme_name_port(":80"), None);
        assert_eq!(split_scheme_name_port("a:b:c:d"), None);
    }

    #[test]
    fn pod_locations() {
        let pod = json!({
            "spec": {"containers": [{"name": "a"}, {"name": "b", "ports": [{"containerPort": 8080}]}]},
            "status": {"podIP": "10.244.0.7"}
        });
        let at = |p: &str| pod_location(&pod, false, p).unwrap().host;
        assert_eq!(at(""), "10.244.0.7:8080");
        assert_eq!(at("9000"), "10.244.0.7:9000");
        let six = json!({"status": {"podIPs": [{"ip": "fd00::7"}], "podIP": "fd00::7"}});
        assert_eq!(pod_location(&six, true, "").unwrap().host, "[fd00::7]:443");
        for ip in ["", "127.0.0.1", "169.254.1.1", "0.0.0.0", "::1"] {
            let p = json!({"status": {"podIP": ip}});
            assert_eq!(
                pod_location(&p, false, "80").unwrap_err().message,
                "address not allowed",
                "{ip}"
            );
        }
    }

    #[test]
    fn service_ports_and_endpoints() {
        let svc =
            json!({"spec": {"ports": [{"name": "web", "port": 80}, {"name": "", "port": 81}]}});
        assert_eq!(service_port_name(&svc, "s", "80").unwrap(), "web");
        assert_eq!(service_port_name(&svc, "s", "81").unwrap(), "");
        assert_eq!(service_port_name(&svc, "s", "metrics").unwrap(), "metrics");
        let e = service_port_name(&svc, "s", "82").unwrap_err();
        assert_eq!(
            (e.code, e.message.as_str()),
            (503, "no service port 82 found for service \"s\"")
        );
        let eps = json!({"subsets": [
            {"addresses": [{"ip": "10.0.0.1"}], "notReadyAddresses": [{"ip": "10.0.0.9"}],
             "ports": [{"name": "web", "port": 8080}]},
            {"addresses": [{"ip": "10.0.0.2"}], "ports": [{"name": "metrics", "port": 9090}]}
        ]});
        let ips = |port: &str| -> Vec<(String, u16)> {
            candidates(&eps, port)
                .into_iter()
                .map(|(a, p)| (a["ip"].as_str().unwrap().to_owned(), p))
                .collect()
        };
        assert_eq!(ips("web"), vec![("10.0.0.1".to_owned(), 8080)]);
        assert_eq!(ips("metrics"), vec![("10.0.0.2".to_owned(), 9090)]);
        assert!(ips("").is_empty());
    }
}
