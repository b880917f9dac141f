//! Non-resource endpoints: discovery, `/version`, and the health checks.
//!
//! Mirrors the apiserver's legacy discovery documents (`/api` APIVersions, `/apis`
//! APIGroupList, `/api/v1` and `/apis/<group>/<version>` APIResourceList with verbs, short
//! names, categories and subresources) and `healthz`: `/healthz`, `/livez`, `/readyz` and their
//! `?verbose` listings and per-check paths (`/readyz/etcd`), and aggregated discovery
//! (`apidiscovery.k8s.io/v2`, every group's resources in one document, which kubectl 1.30+
//! asks for first on `/api` and `/apis`). `/openapi/v2` and `/openapi/v3` are [`openapi`]'s.

use serde_json::{Value, json};

use super::handler::{Resp, full, json as json_resp};
use super::request::{Query, RequestInfo};
use super::status::ApiError;
use super::{State, openapi};
use crate::api::resources::{RESOURCES, groups};

/// The Kubernetes version klab's API follows (its resource set and semantics).
pub const KUBE_MINOR: &str = "32";

fn version() -> Value {
    json!({
        "major": "1",
        "minor": KUBE_MINOR,
        "gitVersion": format!("v1.{KUBE_MINOR}.0-klab.{}", env!("CARGO_PKG_VERSION")),
        "gitCommit": "",
        "gitTreeState": "clean",
        "buildDate": "",
        "goVersion": "n/a (klab is written in Rust)",
        "compiler": "rustc",
        "platform": format!("{}/{}", std::env::consts::OS, if std::env::consts::ARCH == "x86_64" { "amd64" } else { std::env::consts::ARCH }),
    })
}

/// A subresource's kind, group, version (empty = the resource's own) and verbs.
fn subresource(
    r: &crate::api::resources::Resource,
    sub: &str,
) -> (&'static str, &'static str, &'static str, Value) {
    match sub {
        "scale" => (
            "Scale",
            "autoscaling",
            "v1",
            json!(["get", "patch", "update"]),
        ),
        "finalize" => (r.kind, "", "", json!(["update"])),
        "binding" => ("Binding", "", "", json!(["create"])),
        "eviction" => ("Eviction", "policy", "v1", json!(["create"])),
        "log" => ("Pod", "", "", json!(["get"])),
        "exec" | "attach" | "portforward" => ("PodExecOptions", "", "", json!(["create", "get"])),
        "proxy" => (
            match r.plural {
                "pods" => "PodProxyOptions",
                "services" => "ServiceProxyOptions",
                _ => "NodeProxyOptions",
            },
            "",
            "",
            json!(["create", "delete", "get", "patch", "update"]),
        ),
        "token" => (
            "TokenRequest",
            "authentication.k8s.io",
            "v1",
            json!(["create"]),
        ),
        _ => (r.kind, "", "", json!(["get", "patch", "update"])),
    }
}

fn resource_list(group: &str, version: &str) -> Option<Value> {
    let mut out = Vec::new();
    for r in RESOURCES
        .iter()
        .filter(|r| r.group == group && r.version == version)
    {
        let mut e = json!({
            "name": r.plural,
            "singularName": r.singular,
            "namespaced": r.namespaced,
            "kind": r.kind,
            "verbs": r.verbs,
        });
        if !r.short_names.is_empty() {
            e["shortNames"] = json!(r.short_names);
        }
        if !r.categories.is_empty() {
            e["categories"] = json!(r.categories);
        }
        out.push(e);
        for sub in r.subresources {
            let (kind, group, version, verbs) = subresource(r, sub);
            let mut s = json!({"name": format!("{}/{sub}", r.plural), "singularName": "", "namespaced": r.namespaced, "kind": kind, "verbs": verbs});
            if !group.is_empty() {
                s["group"] = group.into();
                s["version"] = version.into();
            }
            out.push(s);
        }
    }
    if out.is_empty() {
        return None;
    }
    let gv = if group.is_empty() {
        version.to_owned()
    } else {
        format!("{group}/{version}")
    };
    Some(
        json!({"kind": "APIResourceList", "apiVersion": "v1", "groupVersion": gv, "resources": out}),
    )
}

/// One group's aggregated discovery entry (`APIGroupDiscovery`), its resources inline.
fn group_discovery(group: &str, version: &str) -> Value {
    let mut resources = Vec::new();
    for r in RESOURCES
        .iter()
        .filter(|r| r.group == group && r.version == version)
    {
        let subresources: Vec<Value> = r
            .subresources
            .iter()
            .map(|sub| {
                let (kind, g, v, verbs) = subresource(r, sub);
                json!({"subresource": sub, "responseKind": {"group": g, "version": v, "kind": kind}, "verbs": verbs})
            })
            .collect();
        let mut e = json!({
            "resource": r.plural,
            "responseKind": {"group": "", "version": "", "kind": r.kind},
            "scope": if r.namespaced { "Namespaced" } else { "Cluster" },
            "singularResource": r.singular,
            "verbs": r.verbs,
        });
        if !r.short_names.is_empty() {
            e["shortNames"] = json!(r.short_names);
        }
        if !r.categories.is_empty() {
            e["categories"] = json!(r.categories);
        }
        if !subresources.is_empty() {
            e["subresources"] = json!(subresources);
        }
        resources.push(e);
    }
    json!({
        "metadata": {"name": group, "creationTimestamp": null},
        "versions": [{"version": version, "resources": resources, "freshness": "Current"}],
    })
}

/// `/api` (core) or `/apis` (named groups) as an `APIGroupDiscoveryList`.
fn aggregated_response(core: bool) -> Resp {
    let items: Vec<Value> = if core {
        vec![group_discovery("", "v1")]
    } else {
        groups()
            .into_iter()
            .map(|(g, v)| group_discovery(g, v))
            .collect()
    };
    let doc = json!({"kind": "APIGroupDiscoveryList", "apiVersion": "apidiscovery.k8s.io/v2", "metadata": {}, "items": items});
    full(
        200,
        "application/json;g=apidiscovery.k8s.io;v=v2;as=APIGroupDiscoveryList",
        serde_json::to_vec(&doc).unwrap_or_default(),
    )
}

fn group_doc(group: &str, version: &str) -> Value {
    let gv = json!({"groupVersion": format!("{group}/{version}"), "version": version});
    json!({"name": group, "versions": [gv.clone()], "preferredVersion": gv})
}

/// A health endpoint: `ok`, or with `?verbose` one `[+]check ok` line per check.
async fn health(state: &State, which: &str, check: Option<&str>, query: &Query) -> Resp {
    let etcd = state.store.healthy().await;
    let mut checks: Vec<(&str, bool)> = vec![("ping", true), ("log", true), ("etcd", etcd)];
    if which == "readyz" {
        checks.push(("informer-sync", true));
        checks.push(("poststarthook/rbac/bootstrap-roles", true));
    }
    if let Some(c) = check {
        return match checks.iter().find(|(n, _)| *n == c) {
            Some((_, true)) => full(200, "text/plain; charset=utf-8", "ok"),
            Some((n, false)) => full(
                500,
                "text/plain; charset=utf-8",
                format!("[-]{n} failed: reason withheld\n{which} check failed\n"),
            ),
            None => json_resp(404, &ApiError::page_not_found().to_status()),
        };
    }
    let ok = checks.iter().all(|(_, ok)| *ok);
    let verbose = query.contains_key("verbose") || !ok;
    if !verbose {
        return full(200, "text/plain; charset=utf-8", "ok");
    }
    let mut out = String::new();
    for (n, ok) in &checks {
        if *ok {
            out.push_str(&format!("[+]{n} ok\n"));
        } else {
            out.push_str(&format!("[-]{n} failed: reason withheld\n"));
        }
    }
    out.push_str(&format!(
        "{which} check {}\n",
        if ok { "passed" } else { "failed" }
    ));
    full(if ok { 200 } else { 500 }, "text/plain; charset=utf-8", out)
}

pub async fn non_resource(
    state: &State,
    info: &RequestInfo,
    query: &Query,
    headers: &http::HeaderMap,
) -> Result<Resp, ApiError> {
    let aggregated = headers
        .get_all(http::header::ACCEPT)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .any(|v| v.contains("g=apidiscovery.k8s.io;v=v2;as=APIGroupDiscoveryList"));
    if info.verb != "get" && info.verb != "head" {
        return Err(ApiError::method_not_allowed(format!(
            "the server does not allow this method on the requested resource ({})",
            info.path
        )));
    }
    let parts: Vec<&str> = info.path.trim_matches('/').split('/').collect();
    let resp = match parts.as_slice() {
        ["version"] => json_resp(200, &version()),
        [w @ ("healthz" | "livez" | "readyz")] => health(state, w, None, query).await,
        [w @ ("healthz" | "livez" | "readyz"), check] => health(state, w, Some(check), query).await,
        ["api"] if aggregated => aggregated_response(true),
        ["apis"] if aggregated => aggregated_response(false),
        ["api"] => json_resp(
            200,
            &json!({
                "kind": "APIVersions",
                "versions": ["v1"],
                "serverAddressByClientCIDRs": [{"clientCIDR": "0.0.0.0/0", "serverAddress": format!("{}:{}", state.advertise, state.secure_port)}],
            }),
        ),
        ["apis"] => {
            let groups: Vec<Value> = groups().into_iter().map(|(g, v)| group_doc(g, v)).collect();
            json_resp(
                200,
                &json!({"kind": "APIGroupList", "apiVersion": "v1", "groups": groups}),
            )
        }
        ["api", v] => json_resp(
            200,
            &resource_list("", v).ok_or_else(ApiError::page_not_found)?,
        ),
        ["apis", g] => {
            let (g, v) = groups()
                .into_iter()
                .find(|(name, _)| name == g)
                .ok_or_else(ApiError::page_not_found)?;
            let mut doc = group_doc(g, v);
            doc["kind"] = "APIGroup".into();
            doc["apiVersion"] = "v1".into();
            json_resp(200, &doc)
        }
        ["apis", g, v] => json_resp(
            200,
            &resource_list(g, v).ok_or_else(ApiError::page_not_found)?,
        ),
        ["openapi", "v3"] => json_resp(200, &openapi::index()),
        ["openapi", "v3", rest @ ..] => openapi::v3(&rest.join("/"), headers).await?,
        ["openapi", "v2"] => openapi::v2(headers).await?,
        _ => {
            let mut e = ApiError::page_not_found();
            e.details = Some(json!({}));
            return Err(e);
        }
    };
    Ok(resp)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn apps_discovery_has_short_names_and_scale() {
        let doc = resource_list("apps", "v1").unwrap();
        let res = doc["resources"].as_array().unwrap();
        let deploy = res.iter().find(|r| r["name"] == "deployments").unwrap();
        assert_eq!(deploy["shortNames"], json!(["deploy"]));
        assert_eq!(deploy["categories"], json!(["all"]));
        assert!(
            res.iter()
                .any(|r| r["name"] == "deployments/scale" && r["group"] == "autoscaling")
        );
        assert!(resource_list("nope", "v1").is_none());
    }

    #[test]
    fn aggregated_apps() {
        let g = group_discovery("apps", "v1");
        let res = g["versions"][0]["resources"].as_array().unwrap();
        let deploy = res.iter().find(|r| r["resource"] == "deployments").unwrap();
        assert_eq!(deploy["scope"], "Namespaced");
        assert_eq!(deploy["subresources"][1]["responseKind"]["kind"], "Scale");
        assert_eq!(g["metadata"]["name"], "apps");
    }
}
