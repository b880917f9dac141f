//! One request, start to finish: authenticate, authorize, route, answer, log.
//!
//! Mirrors the apiserver's handler chain (`DefaultBuildHandlerChain`): authentication, then
//! authorization on the request attributes, then the REST handlers, with upstream's `httplog`
//! line (verb, URI, user, status, latency) for every request. Leaves out audit, priority and
//! fairness, impersonation and CORS.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;

use bytes::Bytes;
use http::{HeaderMap, Method, Response, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper::upgrade::OnUpgrade;
use serde_json::Value;

use super::authn::UserInfo;
use super::authz::{self, Decision};
use super::request::{self, Query, RequestInfo};
use super::server::Peer;
use super::status::ApiError;
use super::{State, discovery, rest};

pub type Body = http_body_util::combinators::BoxBody<Bytes, Infallible>;
pub type Resp = Response<Body>;

/// Request bodies above this are refused with 413, as upstream's 3 MiB limit.
pub const MAX_BODY: usize = 3 * 1024 * 1024;

/// Everything the REST handlers get about one request.
pub struct Ctx {
    pub state: Arc<State>,
    pub user: UserInfo,
    pub info: RequestInfo,
    /// The HTTP method as sent (`nodes/proxy` passes it on).
    pub method: Method,
    pub query: Query,
    pub headers: HeaderMap,
    pub body: Bytes,
    /// The query as sent, for parameters that repeat (`command=sh&command=-c`).
    pub raw_query: String,
    /// The client's side of a protocol switch (exec, attach, port-forward), taken by the
    /// handler that answers 101.
    pub upgrade: std::sync::Mutex<Option<OnUpgrade>>,
}

impl Ctx {
    /// Whether the client asked for a server-side Table (`kubectl get`).
    pub fn wants_table(&self) -> bool {
        self.headers
            .get_all(http::header::ACCEPT)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .any(|v| v.contains("as=Table"))
    }

    pub fn content_type(&self) -> &str {
        self.headers
            .get(http::header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("application/json")
    }
}

pub fn full(code: u16, content_type: &str, body: impl Into<Bytes>) -> Resp {
    Response::builder()
        .status(StatusCode::from_u16(code).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR))
        .header(http::header::CONTENT_TYPE, content_type)
        .header("cache-control", "no-cache, private")
        .body(Full::new(body.into()).boxed())
        .unwrap_or_else(|_| Response::new(Full::new(Bytes::new()).boxed()))
}

pub fn json(code: u16, v: &Value) -> Resp {
    full(
        code,
        "application/json",
        serde_json::to_vec(v).unwrap_or_default(),
    )
}

pub fn error(e: &ApiError) -> Resp {
    json(e.code, &e.to_status())
}

fn bearer(headers: &HeaderMap) -> Option<&str> {
    headers
        .get(http::header::AUTHORIZATION)?
        .to_str()
        .ok()?
        .strip_prefix("Bearer ")
        .map(str::trim)
}

/// The authentication chain: client certificate, bearer token, then anonymous if allowed.
/// A service-account JWT: valid signature and claims, and the service account still exists
/// with the uid the token names.
async fn service_account(state: &State, token: &str) -> Result<UserInfo, ApiError> {
    let sa = state
        .sa_tokens
        .as_ref()
        .ok_or_else(ApiError::unauthorized)?;
    let claims = sa.verify(token).map_err(|_| ApiError::unauthorized())?;
    let ns = claims
        .pointer("/kubernetes.io/namespace")
        .and_then(serde_json::Value::as_str)
        .unwrap_or_default();
    let name = claims
        .pointer("/kubernetes.io/serviceaccount/name")
        .and_then(serde_json::Value::as_str)
        .unwrap_or_default();
    let uid = claims
        .pointer("/kubernetes.io/serviceaccount/uid")
        .and_then(serde_json::Value::as_str)
        .unwrap_or_default();
    let key = format!("/registry/serviceaccounts/{ns}/{name}");
    let current = state.store.get(&key).await.ok().flatten();
    let alive = current.is_some_and(|i| {
        i.value
            .pointer("/metadata/uid")
            .and_then(serde_json::Value::as_str)
            == Some(uid)
    });
    if !alive {
        return Err(ApiError::unauthorized());
    }
    Ok(UserInfo::authenticated(
        format!("system:serviceaccount:{ns}:{name}"),
        uid.to_owned(),
        vec![
            "system:serviceaccounts".into(),
            format!("system:serviceaccounts:{ns}"),
        ],
    ))
}

/// Who a bearer token belongs to: a `--token-auth-file` token, else a service account's
/// (what requests and TokenReviews both ask).
pub(super) async fn token_user(state: &State, token: &str) -> Result<UserInfo, ApiError> {
    if let Some(u) = state.tokens.get(token) {
        return Ok(u.clone());
    }
    service_account(state, token).await
}

/// The health endpoints, which answer unauthenticated requests even with
/// `--anonymous-auth=false`: upstream's anonymous authenticator restricted to these paths
/// (AuthenticationConfiguration `anonymous.conditions`, 1.32+), so a kubelet's liveness probe
/// can reach them while everything else stays closed.
fn health_path(path: &str) -> bool {
    ["/healthz", "/livez", "/readyz"]
        .iter()
        .any(|p| path == *p || path.strip_prefix(p).is_some_and(|r| r.starts_with('/')))
}

async fn authenticate(
    state: &State,
    peer: &Peer,
    headers: &HeaderMap,
    path: &str,
) -> Result<UserInfo, ApiError> {
    match peer {
        Peer::Insecure => {
            return Ok(UserInfo::authenticated(
                "system:unsecured".into(),
                String::new(),
                vec!["system:masters".into()],
            ));
        }
        Peer::Cert(u) => return Ok(u.clone()),
        Peer::BadCert(_) => return Err(ApiError::unauthorized()),
        Peer::NoCert => {}
    }
    if let Some(token) = bearer(headers) {
        return token_user(state, token).await;
    }
    if state.anonymous || health_path(path) {
        Ok(UserInfo::anonymous())
    } else {
        Err(ApiError::unauthorized())
    }
}

/// Reads the body, refusing more than [`MAX_BODY`] with 413. An oversized body is still
/// drained (up to a bound) before answering, so HTTP/2 clients see the Status rather than a
/// reset stream.
async fn read_body(mut body: hyper::body::Incoming) -> Result<Bytes, ApiError> {
    const DRAIN_LIMIT: usize = 64 * 1024 * 1024;
    let mut buf = bytes::BytesMut::new();
    let mut seen = 0usize;
    while let Some(frame) = body.frame().await {
        let frame =
            frame.map_err(|e| ApiError::bad_request(format!("reading the request body: {e}")))?;
        let Ok(data) = frame.into_data() else {
            continue;
        };
        seen += data.len();
        if seen > DRAIN_LIMIT {
            break;
        }
        if seen <= MAX_BODY {
            buf.extend_from_slice(&data);
        }
    }
    if seen > MAX_BODY {
        return Err(ApiError::too_large());
    }
    Ok(buf.freeze())
}

fn log_verb(info: &RequestInfo, method: &Method) -> String {
    if info.is_resource {
        info.verb.to_ascii_uppercase()
    } else {
        method.as_str().to_owned()
    }
}

pub async fn handle(
    state: Arc<State>,
    peer: Peer,
    remote: SocketAddr,
    req: http::Request<hyper::body::Incoming>,
) -> Resp {
    let start = Instant::now();
    let method = req.method().clone();
    let uri = req
        .uri()
        .path_and_query()
        .map(|p| p.as_str().to_owned())
        .unwrap_or_default();
    let query = request::parse_query(req.uri().query());
    let info = request::info(&method, req.uri().path(), &query);
    let raw_query = req.uri().query().unwrap_or_default().to_owned();
    let (mut parts, body) = req.into_parts();
    let upgrade = parts.extensions.remove::<OnUpgrade>();
    let (user, resp) = match authenticate(&state, &peer, &parts.headers, parts.uri.path()).await {
        Err(e) => (None, error(&e)),
        Ok(user) => {
            let request = Incoming {
                method: method.clone(),
                query,
                raw_query,
                headers: parts.headers,
                body,
                upgrade,
            };
            let resp = match route(&state, &peer, &user, &info, request).await {
                Ok(r) => r,
                Err(e) => error(&e),
            };
            (Some(user), resp)
        }
    };
    if let Peer::BadCert(why) = &peer {
        eprintln!("authentication: client certificate rejected from {remote}: {why}");
    }
    eprintln!(
        "httplog: verb={:?} URI={uri:?} user={:?} latency={:?} resp={} srcIP={:?}",
        log_verb(&info, &method),
        user.as_ref().map(|u| u.name.as_str()).unwrap_or(""),
        start.elapsed(),
        resp.status().as_u16(),
        remote.to_string(),
    );
    resp
}

/// Impersonation (`kubectl --as=USER --as-group=GROUP`): the requester needs the
/// `impersonate` verb on `users` and `groups`, as upstream's impersonation filter checks.
/// `Impersonate-Uid` and `Impersonate-Extra-*` are not built and are refused.
async fn impersonate(
    state: &State,
    user: &UserInfo,
    headers: &HeaderMap,
) -> Result<Option<UserInfo>, ApiError> {
    let values = |name: &str| -> Vec<String> {
        headers
            .get_all(name)
            .iter()
            .filter_map(|v| v.to_str().ok().map(str::to_owned))
            .collect()
    };
    let users = values("impersonate-user");
    let groups = values("impersonate-group");
    let unsupported = headers
        .keys()
        .any(|k| k.as_str() == "impersonate-uid" || k.as_str().starts_with("impersonate-extra-"));
    if users.is_empty() {
        if !groups.is_empty() || unsupported {
            return Err(ApiError::bad_request(
                "impersonating groups or extra fields requires impersonating a user",
            ));
        }
        return Ok(None);
    }
    if unsupported {
        return Err(ApiError::bad_request(
            "Impersonate-Uid and Impersonate-Extra-* are not built in klab",
        ));
    }
    let checks = std::iter::once(("users", users[0].clone()))
        .chain(groups.iter().map(|g| ("groups", g.clone())));
    for (resource, name) in checks {
        let info = RequestInfo {
            is_resource: true,
            verb: "impersonate".into(),
            resource: resource.into(),
            name,
            ..Default::default()
        };
        if let Decision::Deny(why) = authz::authorize(state, user, &info).await {
            return Err(authz::forbidden(user, &info, &why));
        }
    }
    Ok(Some(UserInfo::authenticated(
        users[0].clone(),
        String::new(),
        groups,
    )))
}

/// What `route` gets of the request besides its attributes.
struct Incoming {
    method: Method,
    query: Query,
    raw_query: String,
    headers: HeaderMap,
    body: hyper::body::Incoming,
    upgrade: Option<OnUpgrade>,
}

async fn route(
    state: &Arc<State>,
    peer: &Peer,
    user: &UserInfo,
    info: &RequestInfo,
    request: Incoming,
) -> Result<Resp, ApiError> {
    let Incoming {
        method,
        query,
        raw_query,
        headers,
        body,
        upgrade,
    } = request;
    let impersonated = impersonate(state, user, &headers).await?;
    let user = impersonated.as_ref().unwrap_or(user);
    if !matches!(peer, Peer::Insecure) {
        if let Decision::Deny(why) = authz::authorize(state, user, info).await {
            return Err(authz::forbidden(user, info, &why));
        }
    }
    if !info.is_resource {
        return discovery::non_resource(state, info, &query, &headers).await;
    }
    let body = if matches!(
        info.verb.as_str(),
        "create" | "update" | "patch" | "delete" | "deletecollection"
    ) {
        read_body(body).await?
    } else {
        Bytes::new()
    };
    let ctx = Ctx {
        state: state.clone(),
        user: user.clone(),
        info: info.clone(),
        method,
        query,
        headers,
        body,
        raw_query,
        upgrade: std::sync::Mutex::new(upgrade),
    };
    rest::dispatch(ctx).await
}
