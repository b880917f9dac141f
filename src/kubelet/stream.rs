//! The kubelet's streaming endpoints on :10250: `/exec/<ns>/<pod>/<container>`,
//! `/attach/<ns>/<pod>/<container>` and `/portForward/<ns>/<pod>`, where the API server sends
//! `kubectl exec`, `attach` and `port-forward`.
//!
//! Mirrors upstream's `pkg/kubelet/server` (`getExec`, `getAttach`, `getPortForward`) and its
//! CRI streaming proxy. A SPDY request (kubectl before 1.31, and the fallback after) is
//! proxied byte for byte to the URL CRI `Exec`/`Attach`/`PortForward` returns, as upstream
//! does. A WebSocket request (`v5.channel.k8s.io`, what kubectl 1.31+ tries first) ends
//! here and is translated to SPDY toward the runtime's URL
//! ([`crate::stream::remotecommand::translate`]), because containerd's streaming server
//! speaks WebSocket only up to v4, which cannot close stdin. Leaves out port-forward over
//! WebSocket (kubectl falls back to SPDY) and authorization of the caller (any client the CA
//! signed may stream).

use http::{Request, Response, StatusCode};
use hyper::body::Incoming;
use hyper::upgrade::OnUpgrade;
use k8s_cri::v1 as cri;

use super::server::{Options, Running, reply};
use super::spec::{self, PodRef};
use crate::runtime::cri::Cri;
use crate::stream::remotecommand as rc;
use crate::stream::{Body, proxy, spdy};

/// Which streaming endpoint a request is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Exec,
    Attach,
    PortForward,
}

fn text(code: StatusCode, msg: impl Into<String>) -> Response<Body> {
    let mut m = msg.into();
    m.push('\n');
    reply(code, "text/plain", m)
}

/// The pod's uid, if this kubelet runs it.
fn pod_uid(running: &Running, ns: &str, name: &str) -> Option<String> {
    running
        .read()
        .ok()?
        .get(&format!("{ns}/{name}"))
        .map(|p| PodRef::of(p).uid)
}

/// The running container `name` of the pod with `uid`: its id and attempt.
pub async fn running_container(cri: &mut Cri, uid: &str, name: &str) -> Option<(String, u32)> {
    let all = cri.list_containers().await.ok()?;
    all.into_iter()
        .filter(|c| c.state == cri::ContainerState::ContainerRunning as i32)
        .filter(|c| c.labels.get(spec::POD_UID).map(String::as_str) == Some(uid))
        .filter(|c| c.labels.get(spec::CONTAINER_NAME).map(String::as_str) == Some(name))
        .map(|c| (c.id, c.metadata.map(|m| m.attempt).unwrap_or(0)))
        .max_by_key(|(_, attempt)| *attempt)
}

async fn ready_sandbox(cri: &mut Cri, uid: &str) -> Option<String> {
    let all = cri.list_pod_sandboxes().await.ok()?;
    all.into_iter()
        .filter(|s| s.state == cri::PodSandboxState::SandboxReady as i32)
        .find(|s| s.labels.get(spec::POD_UID).map(String::as_str) == Some(uid))
        .map(|s| s.id)
}

/// Answers one streaming request.
pub async fn serve(
    o: &Options,
    running: &Running,
    kind: Kind,
    rest: &str,
    query: &str,
    mut req: Request<Incoming>,
) -> Response<Body> {
    let parts: Vec<&str> = rest.split('/').filter(|s| !s.is_empty()).collect();
    let (ns, pod, container) = match (kind, &parts[..]) {
        (Kind::PortForward, [ns, pod, ..]) => (*ns, *pod, ""),
        (Kind::Exec | Kind::Attach, [ns, pod, c]) => (*ns, *pod, *c),
        _ => {
            return text(
                StatusCode::BAD_REQUEST,
                "want /exec|/attach/<namespace>/<pod>/<container> or /portForward/<namespace>/<pod>",
            );
        }
    };
    let Some(uid) = pod_uid(running, ns, pod) else {
        return text(
            StatusCode::NOT_FOUND,
            format!("pod {ns}/{pod} is not running on this node"),
        );
    };
    let Some(mut cri) = o.cri.clone() else {
        return text(
            StatusCode::BAD_REQUEST,
            format!(
                "pod {ns}/{pod} runs on the simulated runtime: it has no processes to stream from"
            ),
        );
    };
    let opts = rc::Options::from_query(query);
    let websocket = rc::is_websocket(req.headers());
    let spdy = proxy::upgrade_to(req.headers()).starts_with("spdy/");
    if !websocket && !spdy {
        return text(
            StatusCode::BAD_REQUEST,
            "Upgrade request required (WebSocket v5.channel.k8s.io or SPDY/3.1)",
        );
    }
    if kind == Kind::PortForward && websocket {
        // client-go falls back to SPDY when the WebSocket upgrade is refused.
        return text(
            StatusCode::BAD_REQUEST,
            "port-forward over WebSocket is not built in klab's kubelet; use SPDY/3.1",
        );
    }
    let protocol = if websocket {
        let Some(p) = rc::negotiate(req.headers()) else {
            return text(
                StatusCode::BAD_REQUEST,
                "no WebSocket subprotocol in common: klab serves v5.channel.k8s.io and v4.channel.k8s.io",
            );
        };
        p
    } else {
        ""
    };
    let upgrade = req.extensions_mut().remove::<OnUpgrade>();
    let url = match kind {
        Kind::PortForward => {
            let Some(sandbox) = ready_sandbox(&mut cri, &uid).await else {
                return text(
                    StatusCode::NOT_FOUND,
                    format!("pod {ns}/{pod} has no ready sandbox"),
                );
            };
            let ports: Vec<i32> = form_urlencoded::parse(query.as_bytes())
                .filter(|(k, _)| k == "port")
                .filter_map(|(_, v)| v.parse().ok())
                .collect();
            cri.port_forward(&sandbox, &ports).await
        }
        Kind::Exec | Kind::Attach => {
            let Some((id, _)) = running_container(&mut cri, &uid, container).await else {
                return text(
                    StatusCode::NOT_FOUND,
                    format!("container {container} is not running in pod {ns}/{pod}"),
                );
            };
            if kind == Kind::Exec {
                cri.exec(&id, &opts.command, opts.streams()).await
            } else {
                cri.attach(&id, opts.streams()).await
            }
        }
    };
    let url = match url {
        Ok(u) => u,
        Err(e) => {
            return text(StatusCode::INTERNAL_SERVER_ERROR, super::chain(&e));
        }
    };
    if spdy {
        return proxy_spdy(&url, req, upgrade).await;
    }
    let session = match spdy::connect(&url, opts.streams()).await {
        Ok(s) => s,
        Err(e) => return text(StatusCode::INTERNAL_SERVER_ERROR, super::chain(&e)),
    };
    let Some(resp) = rc::accept(req.headers(), protocol) else {
        return text(StatusCode::BAD_REQUEST, "missing Sec-WebSocket-Key");
    };
    tokio::spawn(async move {
        let Some(up) = upgrade else { return };
        let Some(mut ws) = rc::open(up).await else {
            return;
        };
        if rc::ready(&mut ws, &opts).await {
            rc::translate(ws, session).await;
        }
    });
    resp
}

/// The runtime's URL, and the client's SPDY request sent there unchanged.
async fn proxy_spdy(
    url: &str,
    req: Request<Incoming>,
    upgrade: Option<OnUpgrade>,
) -> Response<Body> {
    let Some((addr, path)) = spdy::split_url(url) else {
        return text(
            StatusCode::INTERNAL_SERVER_ERROR,
            format!("the runtime's streaming URL {url:?} is not http://HOST:PORT/PATH"),
        );
    };
    let tcp = match tokio::net::TcpStream::connect(addr).await {
        Ok(t) => t,
        Err(e) => {
            return text(
                StatusCode::BAD_GATEWAY,
                format!("connecting to the runtime's streaming server at {addr}: {e}"),
            );
        }
    };
    match proxy::forward(
        tcp,
        addr,
        req.method().clone(),
        path,
        req.headers(),
        bytes::Bytes::new(),
        upgrade,
    )
    .await
    {
        Ok(r) => r,
        Err(e) => text(StatusCode::BAD_GATEWAY, super::chain(&e)),
    }
}
