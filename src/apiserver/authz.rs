//! Authorization: may this user do this verb on this resource (or path)?
//!
//! Mirrors the apiserver's authorizer union (`--authorization-mode`, first definite answer
//! wins; `system:masters` allowed before all), the RBAC authorizer (`plugin/pkg/auth/
//! authorizer/rbac`: ClusterRoleBindings, then RoleBindings of the request's namespace, rules
//! matched on verbs, apiGroups, resources with `*` and `res/sub`, resourceNames and
//! nonResourceURLs with a trailing `*`) and a reduced Node authorizer (see [`node`]). Roles
//! are read from the store on each decision; upstream watches them into a cache.

use serde_json::Value;

use super::State;
use super::authn::UserInfo;
use super::request::RequestInfo;
use super::status::{ApiError, Target};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    AlwaysAllow,
    AlwaysDeny,
    Rbac,
    Node,
}

impl Mode {
    pub fn parse(s: &str) -> Option<Mode> {
        match s.trim() {
            "AlwaysAllow" => Some(Mode::AlwaysAllow),
            "AlwaysDeny" => Some(Mode::AlwaysDeny),
            "RBAC" => Some(Mode::Rbac),
            "Node" => Some(Mode::Node),
            _ => None,
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
pub enum Decision {
    Allow,
    Deny(String),
    NoOpinion,
}

/// Runs the configured authorizers in order; no opinion from all of them is a denial.
pub async fn authorize(state: &State, user: &UserInfo, info: &RequestInfo) -> Decision {
    if user.groups.iter().any(|g| g == "system:masters") {
        return Decision::Allow;
    }
    for mode in &state.authorizers {
        let d = match mode {
            Mode::AlwaysAllow => Decision::Allow,
            Mode::AlwaysDeny => Decision::Deny("AlwaysDeny".into()),
            Mode::Rbac => rbac(state, user, info).await,
            Mode::Node => node(state, user, info).await,
        };
        if d != Decision::NoOpinion {
            return d;
        }
    }
    Decision::Deny(String::new())
}

/// Upstream's Forbidden message: `User "u" cannot VERB resource "R" in API group "G" …`.
pub fn forbidden(user: &UserInfo, info: &RequestInfo, why: &str) -> ApiError {
    let mut msg = if info.is_resource {
        let res = if info.subresource.is_empty() {
            info.resource.clone()
        } else {
            format!("{}/{}", info.resource, info.subresource)
        };
        let scope = if info.namespace.is_empty() {
            "at the cluster scope".to_owned()
        } else {
            format!("in the namespace \"{}\"", info.namespace)
        };
        format!(
            "User \"{}\" cannot {} resource \"{res}\" in API group \"{}\" {scope}",
            user.name, info.verb, info.group
        )
    } else {
        format!(
            "User \"{}\" cannot {} path \"{}\"",
            user.name, info.verb, info.path
        )
    };
    if !why.is_empty() {
        msg.push_str(": ");
        msg.push_str(why);
    }
    if !info.is_resource {
        let mut e = ApiError::new(403, "Forbidden", format!("forbidden: {msg}"));
        e.details = Some(serde_json::json!({}));
        return e;
    }
    ApiError::forbidden(
        &Target {
            group: &info.group,
            plural: &info.resource,
            name: &info.name,
        },
        &msg,
    )
}

fn strs(v: &Value, key: &str) -> Vec<String> {
    v.get(key)
        .and_then(Value::as_array)
        .map(|a| {
            a.iter()
                .filter_map(|s| s.as_str().map(str::to_owned))
                .collect()
        })
        .unwrap_or_default()
}

fn has(list: &[String], want: &str) -> bool {
    list.iter().any(|s| s == "*" || s == want)
}

/// Whether one PolicyRule allows the request.
pub fn rule_allows(rule: &Value, info: &RequestInfo) -> bool {
    if !has(&strs(rule, "verbs"), &info.verb) {
        return false;
    }
    if !info.is_resource {
        return strs(rule, "nonResourceURLs").iter().any(|u| {
            u == "*"
                || *u == info.path
                || u.strip_suffix('*')
                    .is_some_and(|p| info.path.starts_with(p))
        });
    }
    if !has(&strs(rule, "apiGroups"), &info.group) {
        return false;
    }
    let combined = if info.subresource.is_empty() {
        info.resource.clone()
    } else {
        format!("{}/{}", info.resource, info.subresource)
    };
    let resource_ok = strs(rule, "resources").iter().any(|r| {
        r == "*"
            || *r == combined
            || (!info.subresource.is_empty() && *r == format!("*/{}", info.subresource))
    });
    if !resource_ok {
        return false;
    }
    let names = strs(rule, "resourceNames");
    names.is_empty() || names.contains(&info.name)
}

/// Whether a binding's subjects include the user.
pub fn subject_matches(subject: &Value, user: &UserInfo, binding_ns: &str) -> bool {
    let kind = subject
        .get("kind")
        .and_then(Value::as_str)
        .unwrap_or_default();
    let name = subject
        .get("name")
        .and_then(Value::as_str)
        .unwrap_or_default();
    match kind {
        "User" => name == user.name,
        "Group" => user.groups.iter().any(|g| g == name),
        "ServiceAccount" => {
            let ns = subject
                .get("namespace")
                .and_then(Value::as_str)
                .filter(|s| !s.is_empty())
                .unwrap_or(binding_ns);
            user.name == format!("system:serviceaccount:{ns}:{name}")
        }
        _ => false,
    }
}

/// The rules a binding grants, read from the role it refers to.
async fn bound_rules(state: &State, binding: &Value, ns: &str) -> Vec<Value> {
    let kind = binding
        .pointer("/roleRef/kind")
        .and_then(Value::as_str)
        .unwrap_or_default();
    let name = binding
        .pointer("/roleRef/name")
        .and_then(Value::as_str)
        .unwrap_or_default();
    let key = match kind {
        "ClusterRole" => format!("/registry/clusterroles/{name}"),
        "Role" => format!("/registry/roles/{ns}/{name}"),
        _ => return vec![],
    };
    match state.store.get(&key).await {
        Ok(Some(item)) => item
            .value
            .get("rules")
            .and_then(Value::as_array)
            .cloned()
            .unwrap_or_default(),
        _ => vec![],
    }
}

/// Every RBAC rule granted to `user` cluster-wide and in `namespace` (if not empty), as
/// SelfSubjectRulesReview reports them.
pub async fn rules_for(state: &State, user: &UserInfo, namespace: &str) -> Vec<Value> {
    let mut prefixes = vec![("/registry/clusterrolebindings/".to_owned(), String::new())];
    if !namespace.is_empty() {
        prefixes.push((
            format!("/registry/rolebindings/{namespace}/"),
            namespace.to_owned(),
        ));
    }
    let mut rules = Vec::new();
    for (prefix, ns) in prefixes {
        let Ok(page) = state.store.list(&prefix, None, 0, 0).await else {
            continue;
        };
        for b in page.items {
            let subjects = b.value.get("subjects").and_then(Value::as_array);
            if subjects.is_some_and(|s| s.iter().any(|s| subject_matches(s, user, &ns))) {
                rules.extend(bound_rules(state, &b.value, &ns).await);
            }
        }
    }
    rules
}

async fn rbac(state: &State, user: &UserInfo, info: &RequestInfo) -> Decision {
    let mut prefixes = vec![("/registry/clusterrolebindings/".to_owned(), String::new())];
    if !info.namespace.is_empty() {
        prefixes.push((
            format!("/registry/rolebindings/{}/", info.namespace),
            info.namespace.clone(),
        ));
    }
    for (prefix, ns) in prefixes {
        let Ok(page) = state.store.list(&prefix, None, 0, 0).await else {
            return Decision::NoOpinion;
        };
        for b in page.items {
            let subjects = b.value.get("subjects").and_then(Value::as_array);
            if !subjects.is_some_and(|s| s.iter().any(|s| subject_matches(s, user, &ns))) {
                continue;
            }
            if bound_rules(state, &b.value, &ns)
                .await
                .iter()
                .any(|r| rule_allows(r, info))
            {
                return Decision::Allow;
            }
        }
    }
    Decision::NoOpinion
}

/// The Node authorizer: a kubelet (`system:node:<name>` in `system:nodes`) gets upstream's
/// static node rules (read nodes, pods, services and endpoints; write nodes, pod status,
/// events and its Lease), and may read a secret, configmap or claim, or ask for a service
/// account's token, only when a pod bound to that node refers to it — upstream's graph of
/// references, computed here from the pods on each request. Upstream's NodeRestriction
/// admission (a kubelet may modify only its own Node and its own pods) is not built.
pub async fn node(state: &State, user: &UserInfo, info: &RequestInfo) -> Decision {
    let Some(node) = user.name.strip_prefix("system:node:") else {
        return Decision::NoOpinion;
    };
    if !user.groups.iter().any(|g| g == "system:nodes") || !info.is_resource {
        return Decision::NoOpinion;
    }
    let read = matches!(info.verb.as_str(), "get" | "list" | "watch");
    let allowed = match (info.group.as_str(), info.resource.as_str()) {
        ("", "nodes") => {
            read || info.name == node || (info.verb == "create" && info.name.is_empty())
        }
        ("", "pods") => {
            read || info.subresource == "status"
                || info.subresource == "eviction"
                || info.verb == "create"
                || info.verb == "delete"
        }
        ("", "services" | "endpoints") | ("discovery.k8s.io", "endpointslices") => read,
        ("", "events") | ("events.k8s.io", "events") => {
            matches!(info.verb.as_str(), "create" | "update" | "patch")
        }
        ("coordination.k8s.io", "leases") => {
            info.namespace == "kube-node-lease"
                && (info.name == node || info.verb == "create" || read)
        }
        ("authentication.k8s.io", "tokenreviews")
        | ("authorization.k8s.io", "subjectaccessreviews") => info.verb == "create",
        ("", "secrets" | "configmaps" | "persistentvolumeclaims") => {
            read && !info.name.is_empty() && referenced(state, node, info).await
        }
        ("", "serviceaccounts") => {
            info.subresource == "token"
                && info.verb == "create"
                && referenced(state, node, info).await
        }
        _ => false,
    };
    if allowed {
        Decision::Allow
    } else {
        Decision::NoOpinion
    }
}

/// Whether a pod bound to `node` in the request's namespace refers to the requested object.
async fn referenced(state: &State, node: &str, info: &RequestInfo) -> bool {
    let prefix = format!("/registry/pods/{}/", info.namespace);
    let Ok(page) = state.store.list(&prefix, None, 0, 0).await else {
        return false;
    };
    page.items.iter().any(|p| {
        p.value.pointer("/spec/nodeName").and_then(Value::as_str) == Some(node)
            && pod_refers(&p.value, &info.resource, &info.name)
    })
}

/// Whether a pod spec names this secret, configmap, claim or service account.
pub fn pod_refers(pod: &Value, resource: &str, name: &str) -> bool {
    let spec = pod.get("spec").cloned().unwrap_or_default();
    let s = |v: &Value, ptr: &str| v.pointer(ptr).and_then(Value::as_str) == Some(name);
    let list = |v: &Value, key: &str| {
        v.get(key)
            .and_then(Value::as_array)
            .cloned()
            .unwrap_or_default()
    };
    let volumes = list(&spec, "volumes");
    let containers: Vec<Value> = ["containers", "initContainers", "ephemeralContainers"]
        .iter()
        .flat_map(|k| list(&spec, k))
        .collect();
    let projected = |kind: &str| {
        volumes.iter().any(|v| {
            list(
                &v.pointer("/projected").cloned().unwrap_or_default(),
                "sources",
            )
            .iter()
            .any(|src| s(src, &format!("/{kind}/name")))
        })
    };
    let env = |from_ref: &str, key_ref: &str| {
        containers.iter().any(|c| {
            list(c, "envFrom")
                .iter()
                .any(|e| s(e, &format!("/{from_ref}/name")))
                || list(c, "env")
                    .iter()
                    .any(|e| s(e, &format!("/valueFrom/{key_ref}/name")))
        })
    };
    match resource {
        "secrets" => {
            volumes.iter().any(|v| s(v, "/secret/secretName"))
                || projected("secret")
                || env("secretRef", "secretKeyRef")
                || list(&spec, "imagePullSecrets")
                    .iter()
                    .any(|r| s(r, "/name"))
        }
        "configmaps" => {
            volumes.iter().any(|v| s(v, "/configMap/name"))
                || projected("configMap")
                || env("configMapRef", "configMapKeyRef")
        }
        "persistentvolumeclaims" => volumes
            .iter()
            .any(|v| s(v, "/persistentVolumeClaim/claimName")),
        "serviceaccounts" => {
            spec.get("serviceAccountName")
                .and_then(Value::as_str)
                .unwrap_or("default")
                == name
        }
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn info(verb: &str, group: &str, res: &str, sub: &str, name: &str) -> RequestInfo {
        RequestInfo {
            is_resource: true,
            verb: verb.into(),
            group: group.into(),
            resource: res.into(),
            subresource: sub.into(),
            name: name.into(),
            namespace: "default".into(),
            ..Default::default()
        }
    }

    #[test]
    fn rules() {
        let r =
            json!({"verbs": ["get", "list"], "apiGroups": [""], "resources": ["pods", "*/status"]});
        assert!(rule_allows(&r, &info("get", "", "pods", "", "x")));
        assert!(rule_allows(&r, &info("get", "", "services", "status", "x")));
        assert!(!rule_allows(&r, &info("delete", "", "pods", "", "x")));
        assert!(!rule_allows(&r, &info("get", "apps", "pods", "", "x")));
        let named =
            json!({"verbs": ["*"], "apiGroups": ["*"], "resources": ["*"], "resourceNames": ["a"]});
        assert!(rule_allows(
            &named,
            &info("get", "apps", "deployments", "", "a")
        ));
        assert!(!rule_allows(
            &named,
            &info("get", "apps", "deployments", "", "b")
        ));
        let nr = json!({"verbs": ["get"], "nonResourceURLs": ["/healthz", "/api/*"]});
        let path = |p: &str| RequestInfo {
            verb: "get".into(),
            path: p.into(),
            ..Default::default()
        };
        assert!(rule_allows(&nr, &path("/api/v1")));
        assert!(!rule_allows(&nr, &path("/apis")));
    }

    #[test]
    fn pod_references() {
        let pod = json!({"spec": {
            "volumes": [{"name": "a", "secret": {"secretName": "tls"}}, {"name": "b", "projected": {"sources": [{"configMap": {"name": "ca"}}]}}],
            "containers": [{"name": "c", "env": [{"name": "X", "valueFrom": {"secretKeyRef": {"name": "db", "key": "k"}}}], "envFrom": [{"configMapRef": {"name": "env"}}]}],
            "imagePullSecrets": [{"name": "pull"}]
        }});
        for (res, name) in [
            ("secrets", "tls"),
            ("secrets", "db"),
            ("secrets", "pull"),
            ("configmaps", "ca"),
            ("configmaps", "env"),
            ("serviceaccounts", "default"),
        ] {
            assert!(pod_refers(&pod, res, name), "{res}/{name}");
        }
        assert!(!pod_refers(&pod, "secrets", "other"));
        assert!(!pod_refers(&pod, "configmaps", "tls"));
    }

    #[test]
    fn subjects() {
        let u = UserInfo::authenticated(
            "system:serviceaccount:kube-system:x".into(),
            String::new(),
            vec!["dev".into()],
        );
        assert!(subject_matches(
            &json!({"kind": "Group", "name": "dev"}),
            &u,
            ""
        ));
        assert!(subject_matches(
            &json!({"kind": "ServiceAccount", "name": "x"}),
            &u,
            "kube-system"
        ));
        assert!(!subject_matches(
            &json!({"kind": "User", "name": "x"}),
            &u,
            ""
        ));
    }
}
