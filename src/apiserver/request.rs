//! Turning a URL and method into request attributes: verb, resource, namespace, name.
//!
//! Mirrors the apiserver's `endpoints/request.RequestInfoFactory`: `/api/v1/…` and
//! `/apis/<group>/<version>/…`, `namespaces/<ns>/<resource>/<name>/<subresource>`, the
//! namespace subresources `status` and `finalize`, and `watch=1` turning a list into a watch.

use std::collections::HashMap;

/// What a request does, in the terms that authorization and the handlers use.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct RequestInfo {
    pub is_resource: bool,
    pub path: String,
    pub verb: String,
    pub group: String,
    pub version: String,
    pub namespace: String,
    pub resource: String,
    pub subresource: String,
    pub name: String,
}

/// Query parameters, first value wins.
pub type Query = HashMap<String, String>;

pub fn parse_query(q: Option<&str>) -> Query {
    let mut out = HashMap::new();
    for (k, v) in form_urlencoded::parse(q.unwrap_or_default().as_bytes()) {
        out.entry(k.into_owned()).or_insert_with(|| v.into_owned());
    }
    out
}

fn is_true(q: &Query, key: &str) -> bool {
    matches!(q.get(key).map(String::as_str), Some("1" | "true"))
}

pub fn info(method: &http::Method, path: &str, query: &Query) -> RequestInfo {
    let lower = method.as_str().to_ascii_lowercase();
    let mut info = RequestInfo {
        path: path.to_owned(),
        verb: lower.clone(),
        ..Default::default()
    };
    let parts: Vec<&str> = path.trim_matches('/').split('/').collect();
    let rest: &[&str] = match parts.as_slice() {
        ["api", version, rest @ ..] if !rest.is_empty() => {
            info.version = (*version).to_owned();
            rest
        }
        ["apis", group, version, rest @ ..] if !rest.is_empty() => {
            info.group = (*group).to_owned();
            info.version = (*version).to_owned();
            rest
        }
        _ => return info,
    };
    info.is_resource = true;
    let mut rest = rest;
    if rest[0] == "namespaces" && rest.len() > 1 {
        info.namespace = rest[1].to_owned();
        if rest.len() > 2 && !matches!(rest[2], "status" | "finalize") {
            rest = &rest[2..];
        }
    }
    info.resource = rest[0].to_owned();
    if let Some(name) = rest.get(1) {
        info.name = (*name).to_owned();
    }
    if let Some(sub) = rest.get(2) {
        info.subresource = (*sub).to_owned();
    }
    if info.resource == "namespaces" && rest.len() <= 3 {
        // `/api/v1/namespaces/foo` names the namespace object itself.
        info.name = info.namespace.clone();
    }
    info.verb = match (method.as_str(), info.name.is_empty()) {
        ("GET" | "HEAD", true) if is_true(query, "watch") => "watch",
        ("GET" | "HEAD", true) => "list",
        ("GET" | "HEAD", false) if is_true(query, "watch") => "watch",
        ("GET" | "HEAD", false) => "get",
        ("POST", _) => "create",
        ("PUT", _) => "update",
        ("PATCH", _) => "patch",
        ("DELETE", true) => "deletecollection",
        ("DELETE", false) => "delete",
        _ => lower.as_str(),
    }
    .to_owned();
    // A list or watch of one name (`fieldSelector=metadata.name=X`) is about that object, for
    // RBAC's resourceNames and the Node authorizer, as upstream's RequestInfoFactory decides.
    if matches!(info.verb.as_str(), "list" | "watch") && info.name.is_empty() {
        if let Some(sel) = query.get("fieldSelector") {
            let names: Vec<&str> = sel
                .split(',')
                .filter_map(|t| t.trim().strip_prefix("metadata.name="))
                .map(|n| n.trim_start_matches('='))
                .collect();
            if let [one] = names.as_slice() {
                info.name = (*one).to_owned();
            }
        }
    }
    info
}

#[cfg(test)]
mod tests {
    use super::*;

    fn get(path: &str, q: &str) -> RequestInfo {
        info(&http::Method::GET, path, &parse_query(Some(q)))
    }

    #[test]
    fn paths() {
        let i = get("/api/v1/namespaces/default/pods/web/status", "");
        assert_eq!(
            (
                i.verb.as_str(),
                i.namespace.as_str(),
                i.resource.as_str(),
                i.name.as_str(),
                i.subresource.as_str()
            ),
            ("get", "default", "pods", "web", "status")
        );
        let i = get("/apis/apps/v1/deployments", "watch=1");
        assert_eq!((i.group.as_str(), i.verb.as_str()), ("apps", "watch"));
        let i = get("/api/v1/namespaces/kube-system", "");
        assert_eq!(
            (i.resource.as_str(), i.name.as_str(), i.verb.as_str()),
            ("namespaces", "kube-system", "get")
        );
        let i = get("/api/v1/namespaces/kube-system/status", "");
        assert_eq!(
            (i.resource.as_str(), i.subresource.as_str()),
            ("namespaces", "status")
        );
        let i = get("/api/v1/namespaces", "");
        assert_eq!(
            (i.resource.as_str(), i.verb.as_str()),
            ("namespaces", "list")
        );
        let i = get("/version", "");
        assert!(!i.is_resource);
        let i = get(
            "/api/v1/namespaces/a/secrets",
            "watch=1&fieldSelector=metadata.name%3Dtls",
        );
        assert_eq!((i.verb.as_str(), i.name.as_str()), ("watch", "tls"));
    }
}
