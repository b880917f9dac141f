//! Reviews: computed answers about the caller, never stored.
//!
//! Mirrors `authentication.k8s.io/v1` SelfSubjectReview (`kubectl auth whoami`) and
//! TokenReview (how a kubelet asks who a bearer token belongs to: a static token or a service
//! account's), and `authorization.k8s.io/v1`
//! SelfSubjectAccessReview (`kubectl auth can-i`), SubjectAccessReview (the same question
//! about someone else) and SelfSubjectRulesReview (`kubectl auth can-i --list`), which run the
//! same authenticators and authorizers as real requests.

use serde_json::{Value, json};

use super::authn::UserInfo;
use super::authz::{self, Decision};
use super::handler::{Ctx, Resp, json as json_resp};
use super::request::RequestInfo;
use super::status::ApiError;
use super::{body, rest};
use crate::api::resources::Resource;

fn attr(v: &Value, key: &str) -> String {
    v.get(key)
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_owned()
}

pub async fn create(ctx: &Ctx, res: &Resource) -> Result<Resp, ApiError> {
    if ctx.info.verb != "create" {
        return Err(ApiError::method_not_allowed(format!(
            "{} only supports create",
            res.plural
        )));
    }
    let mut obj = body::decode(ctx.content_type(), &ctx.body)?;
    obj["apiVersion"] = res.api_version().into();
    obj["kind"] = res.kind.into();
    let meta = json!({"creationTimestamp": rest_now()});
    match res.plural {
        "selfsubjectreviews" => {
            let u = &ctx.user;
            let mut info = json!({"username": u.name, "groups": u.groups});
            if !u.uid.is_empty() {
                info["uid"] = u.uid.clone().into();
            }
            obj["metadata"] = meta;
            obj["status"] = json!({"userInfo": info});
            Ok(json_resp(201, &obj))
        }
        "tokenreviews" => {
            let token = obj
                .pointer("/spec/token")
                .and_then(Value::as_str)
                .unwrap_or_default();
            let status = match super::handler::token_user(&ctx.state, token).await {
                Ok(u) => {
                    json!({"authenticated": true, "user": {"username": u.name, "uid": u.uid, "groups": u.groups}})
                }
                Err(_) => json!({"authenticated": false, "error": "invalid bearer token"}),
            };
            obj["metadata"] = meta;
            obj["status"] = status;
            Ok(json_resp(201, &obj))
        }
        "selfsubjectrulesreviews" => {
            let ns = obj
                .pointer("/spec/namespace")
                .and_then(Value::as_str)
                .unwrap_or_default();
            let rules = authz::rules_for(&ctx.state, &ctx.user, ns).await;
            let (mut resource, mut non_resource) = (Vec::new(), Vec::new());
            for r in rules {
                if r.get("nonResourceURLs").is_some() {
                    non_resource.push(json!({"verbs": r.get("verbs"), "nonResourceURLs": r.get("nonResourceURLs")}));
                }
                if r.get("resources").is_some() {
                    let mut rr = json!({"verbs": r.get("verbs"), "apiGroups": r.get("apiGroups"), "resources": r.get("resources")});
                    if let Some(n) = r.get("resourceNames") {
                        rr["resourceNames"] = n.clone();
                    }
                    resource.push(rr);
                }
            }
            obj["metadata"] = meta;
            obj["status"] = json!({"resourceRules": resource, "nonResourceRules": non_resource, "incomplete": false});
            Ok(json_resp(201, &obj))
        }
        "selfsubjectaccessreviews" | "subjectaccessreviews" => {
            let spec = obj.get("spec").cloned().unwrap_or_default();
            let subject = if res.plural == "subjectaccessreviews" {
                let groups = spec
                    .get("groups")
                    .and_then(Value::as_array)
                    .map(|a| {
                        a.iter()
                            .filter_map(|g| g.as_str().map(str::to_owned))
                            .collect()
                    })
                    .unwrap_or_default();
                UserInfo {
                    name: attr(&spec, "user"),
                    uid: attr(&spec, "uid"),
                    groups,
                }
            } else {
                ctx.user.clone()
            };
            let info = if let Some(ra) = spec.get("resourceAttributes") {
                RequestInfo {
                    is_resource: true,
                    verb: attr(ra, "verb"),
                    group: attr(ra, "group"),
                    version: attr(ra, "version"),
                    namespace: attr(ra, "namespace"),
                    resource: attr(ra, "resource"),
                    subresource: attr(ra, "subresource"),
                    name: attr(ra, "name"),
                    path: String::new(),
                }
            } else if let Some(nr) = spec.get("nonResourceAttributes") {
                RequestInfo {
                    verb: attr(nr, "verb"),
                    path: attr(nr, "path"),
                    ..Default::default()
                }
            } else {
                return Err(ApiError::invalid(
                    res.kind,
                    &rest::target(res, ""),
                    &[("spec.resourceAttributes".into(), "Required value: exactly one of nonResourceAttributes or resourceAttributes must be specified".into())],
                ));
            };
            let decision = authz::authorize(&ctx.state, &subject, &info).await;
            let status = match decision {
                Decision::Allow => {
                    json!({"allowed": true, "reason": "allowed by the configured authorizers"})
                }
                Decision::Deny(why) if !why.is_empty() => {
                    json!({"allowed": false, "denied": true, "reason": why})
                }
                _ => json!({"allowed": false}),
            };
            obj["metadata"] = meta;
            obj["status"] = status;
            Ok(json_resp(201, &obj))
        }
        _ => Err(ApiError::page_not_found()),
    }
}

fn rest_now() -> String {
    time::OffsetDateTime::now_utc()
        .replace_nanosecond(0)
        .ok()
        .and_then(|t| {
            t.format(&time::format_description::well_known::Rfc3339)
                .ok()
        })
        .unwrap_or_default()
}
