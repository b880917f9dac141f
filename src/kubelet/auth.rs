//! Who may call the kubelet's :10250 server, and what they may do there. Mirrors upstream's
//! `pkg/kubelet/server/auth.go` and the delegating authenticator and authorizer it is built
//! from (`pkg/kubelet/apis/config` `KubeletAuthentication`/`KubeletAuthorization`):
//! authentication by x509 client certificate (`--client-ca-file`), by bearer token through a
//! TokenReview (`--authentication-token-webhook`), or as `system:anonymous`
//! (`--anonymous-auth`); authorization `AlwaysAllow`, or `Webhook`: one SubjectAccessReview
//! per request for `nodes/<subresource>` of this node, the verb from the HTTP method, the
//! answers cached (allowed 5 min, denied 30 s, as upstream's defaults). Leaves out the
//! `KubeletFineGrainedAuthz` feature (`nodes/pods`, `nodes/healthz`, `nodes/configz`) and
//! the TTL flags.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use http::{HeaderMap, Method, StatusCode};
use k8s_openapi::api::authentication::v1::{TokenReview, TokenReviewSpec};
use k8s_openapi::api::authorization::v1::{
    ResourceAttributes, SubjectAccessReview, SubjectAccessReviewSpec,
};
use kube::api::{Api, PostParams};

/// How long an allowed answer is kept (`authorization.webhook.cacheAuthorizedTTL`).
pub const AUTHORIZED_TTL: Duration = Duration::from_secs(5 * 60);
/// How long a denied answer is kept (`authorization.webhook.cacheUnauthorizedTTL`).
pub const UNAUTHORIZED_TTL: Duration = Duration::from_secs(30);
/// How long a token's review is kept (`authentication.webhook.cacheTTL`).
pub const TOKEN_TTL: Duration = Duration::from_secs(2 * 60);

/// `--authorization-mode`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    AlwaysAllow,
    Webhook,
}

impl Mode {
    pub fn parse(s: &str) -> Option<Mode> {
        match s.trim() {
            "AlwaysAllow" => Some(Mode::AlwaysAllow),
            "Webhook" => Some(Mode::Webhook),
            _ => None,
        }
    }
}

/// The flags that decide who gets in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Settings {
    /// Requests without credentials are `system:anonymous` (else 401).
    pub anonymous: bool,
    /// Bearer tokens are checked with a TokenReview.
    pub token_webhook: bool,
    pub mode: Mode,
}

/// The caller, as the API server would see it.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct User {
    pub name: String,
    pub uid: String,
    pub groups: Vec<String>,
}

impl User {
    fn anonymous() -> User {
        User {
            name: "system:anonymous".into(),
            uid: String::new(),
            groups: vec!["system:unauthenticated".into()],
        }
    }

    /// The user of a verified client certificate: CN, one group per O, and
    /// `system:authenticated`.
    pub fn from_cert(der: &[u8]) -> Option<User> {
        let c = crate::pki::Certificate::from_der(der.to_vec(), "client certificate", 0).ok()?;
        let mut groups = c.organizations;
        groups.push("system:authenticated".into());
        Some(User {
            name: c.common_name?,
            uid: String::new(),
            groups,
        })
    }
}

/// What a request asks for, in RBAC's terms: `<verb> nodes/<subresource>` on this node.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Attributes {
    pub verb: String,
    pub subresource: String,
}

/// Whether `path` is `prefix` or below it (upstream's `isSubpath`).
fn is_subpath(path: &str, prefix: &str) -> bool {
    path == prefix
        || path
            .strip_prefix(prefix)
            .is_some_and(|rest| rest.starts_with('/'))
}

/// Upstream's `GetRequestAttributes`: the verb from the method, and the subresource from the
/// path: `/stats` → stats, `/metrics` → metrics, `/logs` → log, `/checkpoint` → checkpoint,
/// anything else (`/pods`, `/exec`, `/containerLogs`, `/healthz`, …) → proxy.
pub fn attributes(method: &Method, path: &str) -> Attributes {
    let verb = match *method {
        Method::POST => "create",
        Method::GET => "get",
        Method::PUT => "update",
        Method::PATCH => "patch",
        Method::DELETE => "delete",
        _ => "",
    };
    let subresource = [
        ("/stats", "stats"),
        ("/metrics", "metrics"),
        ("/logs", "log"),
        ("/checkpoint", "checkpoint"),
    ]
    .iter()
    .find(|(prefix, _)| is_subpath(path, prefix))
    .map_or("proxy", |(_, s)| s);
    Attributes {
        verb: verb.into(),
        subresource: subresource.into(),
    }
}

/// Why a request is refused: the status and the body upstream's filter writes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refusal {
    pub code: StatusCode,
    pub body: String,
}

impl Refusal {
    fn unauthorized() -> Refusal {
        Refusal {
            code: StatusCode::UNAUTHORIZED,
            body: "Unauthorized".into(),
        }
    }

    fn about(code: StatusCode, what: &str, user: &User, a: &Attributes) -> Refusal {
        Refusal {
            code,
            body: format!(
                "{what} (user={}, verb={}, resource=nodes, subresource={})",
                user.name, a.verb, a.subresource
            ),
        }
    }
}

type Decisions = HashMap<(User, Attributes), (bool, Instant)>;
type Tokens = HashMap<String, (Option<User>, Instant)>;

/// The server's gate: authenticates each request and asks the API server about it.
pub struct Gate {
    settings: Settings,
    node: String,
    client: kube::Client,
    decisions: Mutex<Decisions>,
    tokens: Mutex<Tokens>,
}

impl std::fmt::Debug for Gate {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Gate")
            .field("settings", &self.settings)
            .field("node", &self.node)
            .finish_non_exhaustive()
    }
}

/// Keeps a cache from growing without end: expired entries go once it is large.
fn prune<K, V>(m: &mut HashMap<K, (V, Instant)>) {
    if m.len() > 4096 {
        let now = Instant::now();
        m.retain(|_, (_, until)| *until > now);
    }
}

fn bearer(headers: &HeaderMap) -> Option<&str> {
    let v = headers.get(http::header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, token) = v.split_once(' ')?;
    let token = token.trim();
    (scheme.eq_ignore_ascii_case("bearer") && !token.is_empty()).then_some(token)
}

impl Gate {
    pub fn new(settings: Settings, node: String, client: kube::Client) -> Gate {
        Gate {
            settings,
            node,
            client,
            decisions: Mutex::default(),
            tokens: Mutex::default(),
        }
    }

    /// Upstream's auth filter: 401 when no authenticator knows the caller, 403 when the
    /// authorizer does not allow it, 500 when the authorizer could not be asked.
    pub async fn check(
        &self,
        cert: Option<&[u8]>,
        method: &Method,
        path: &str,
        headers: &HeaderMap,
    ) -> Result<User, Refusal> {
        let user = self
            .authenticate(cert, headers)
            .await
            .ok_or_else(Refusal::unauthorized)?;
        let a = attributes(method, path);
        match self.authorize(&user, &a).await {
            Ok(true) => Ok(user),
            Ok(false) => Err(Refusal::about(
                StatusCode::FORBIDDEN,
                "Forbidden",
                &user,
                &a,
            )),
            Err(e) => {
                eprintln!(
                    "kubelet: asking the API server whether {} may {} nodes/{}: {}",
                    user.name,
                    a.verb,
                    a.subresource,
                    super::chain(&e)
                );
                Err(Refusal::about(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "Authorization error",
                    &user,
                    &a,
                ))
            }
        }
    }

    /// x509 first (the TLS layer verified the chain), then a bearer token, then anonymous.
    async fn authenticate(&self, cert: Option<&[u8]>, headers: &HeaderMap) -> Option<User> {
        if let Some(u) = cert.and_then(User::from_cert) {
            return Some(u);
        }
        if let Some(token) = bearer(headers).filter(|_| self.settings.token_webhook) {
            return self.review_token(token).await;
        }
        self.settings.anonymous.then(User::anonymous)
    }

    async fn review_token(&self, token: &str) -> Option<User> {
        if let Ok(m) = self.tokens.lock() {
            if let Some((u, until)) = m.get(token) {
                if *until > Instant::now() {
                    return u.clone();
                }
            }
        }
        let review = TokenReview {
            spec: TokenReviewSpec {
                token: Some(token.to_owned()),
                ..Default::default()
            },
            ..Default::default()
        };
        let api: Api<TokenReview> = Api::all(self.client.clone());
        let answer = match api.create(&PostParams::default(), &review).await {
            Ok(a) => a,
            Err(e) => {
                // Not cached: the next request asks again.
                eprintln!("kubelet: reviewing a bearer token: {}", super::chain(&e));
                return None;
            }
        };
        let user = answer
            .status
            .filter(|s| s.authenticated == Some(true))
            .and_then(|s| s.user)
            .and_then(|u| {
                Some(User {
                    name: u.username?,
                    uid: u.uid.unwrap_or_default(),
                    groups: u.groups.unwrap_or_default(),
                })
            });
        if let Ok(mut m) = self.tokens.lock() {
            prune(&mut m);
            m.insert(token.to_owned(), (user.clone(), Instant::now() + TOKEN_TTL));
        }
        user
    }

    async fn authorize(&self, user: &User, a: &Attributes) -> Result<bool, kube::Error> {
        if self.settings.mode == Mode::AlwaysAllow {
            return Ok(true);
        }
        let key = (user.clone(), a.clone());
        if let Ok(m) = self.decisions.lock() {
            if let Some((allowed, until)) = m.get(&key) {
                if *until > Instant::now() {
                    return Ok(*allowed);
                }
            }
        }
        let review = SubjectAccessReview {
            spec: SubjectAccessReviewSpec {
                user: Some(user.name.clone()),
                uid: (!user.uid.is_empty()).then(|| user.uid.clone()),
                groups: Some(user.groups.clone()),
                resource_attributes: Some(ResourceAttributes {
                    verb: Some(a.verb.clone()),
                    version: Some("v1".into()),
                    resource: Some("nodes".into()),
                    subresource: Some(a.subresource.clone()),
                    name: Some(self.node.clone()),
                    ..Default::default()
                }),
                ..Default::default()
            },
            ..Default::default()
        };
        let api: Api<SubjectAccessReview> = Api::all(self.client.clone());
        let answer = api.create(&PostParams::default(), &review).await?;
        let allowed = answer.status.is_some_and(|s| s.allowed);
        let ttl = if allowed {
            AUTHORIZED_TTL
        } else {
            UNAUTHORIZED_TTL
        };
        if let Ok(mut m) = self.decisions.lock() {
            prune(&mut m);
            m.insert(key, (allowed, Instant::now() + ttl));
        }
        Ok(allowed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn attributes_from_method_and_path() {
        let a = |m: Method, p: &str| {
            let a = attributes(&m, p);
            format!("{} {}", a.verb, a.subresource)
        };
        assert_eq!(a(Method::GET, "/pods"), "get proxy");
        assert_eq!(a(Method::POST, "/exec/default/web/c"), "create proxy");
        assert_eq!(a(Method::GET, "/exec/default/web/c"), "get proxy");
        assert_eq!(a(Method::GET, "/stats/summary"), "get stats");
        assert_eq!(a(Method::GET, "/stats"), "get stats");
        assert_eq!(a(Method::GET, "/statsx"), "get proxy");
        assert_eq!(a(Method::GET, "/metrics/cadvisor"), "get metrics");
        assert_eq!(a(Method::GET, "/logs/syslog"), "get log");
        assert_eq!(a(Method::GET, "/containerLogs/a/b/c"), "get proxy");
        assert_eq!(a(Method::DELETE, "/healthz"), "delete proxy");
        assert_eq!(a(Method::PUT, "/x"), "update proxy");
        assert_eq!(a(Method::PATCH, "/x"), "patch proxy");
    }

    #[test]
    fn bearer_tokens() {
        let mut h = HeaderMap::new();
        assert_eq!(bearer(&h), None);
        h.insert(http::header::AUTHORIZATION, "Bearer abc".parse().unwrap());
        assert_eq!(bearer(&h), Some("abc"));
        h.insert(http::header::AUTHORIZATION, "Basic abc".parse().unwrap());
        assert_eq!(bearer(&h), None);
    }

    #[test]
    fn refusal_bodies_as_upstream() {
        let u = User {
            name: "alice".into(),
            uid: String::new(),
            groups: vec![],
        };
        let r = Refusal::about(
            StatusCode::FORBIDDEN,
            "Forbidden",
            &u,
            &attributes(&Method::GET, "/pods"),
        );
        assert_eq!(
            r.body,
            "Forbidden (user=alice, verb=get, resource=nodes, subresource=proxy)"
        );
        assert_eq!(Refusal::unauthorized().body, "Unauthorized");
    }
}
