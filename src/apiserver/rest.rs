//! The REST verbs on stored resources: routing a request to get, list, watch, create, update,
//! patch, delete, deletecollection or a subresource, and the helpers they share.
//!
//! Mirrors the apiserver's generic registry (`registry/generic/registry.Store`) and the
//! handlers in `endpoints/handlers`. The verbs live beside this file: [`super::list`],
//! [`super::watch`], [`super::write`] (create, update, patch), [`super::delete`] and
//! [`super::subresources`] (token, eviction, binding, scale) and [`super::kubelet`] (log, exec,
//! attach, portforward, proxied to the node's kubelet) and [`super::podproxy`] (pods/proxy and
//! services/proxy, the API server dialing a pod).

use serde_json::{Value, json};

use super::delete::{delete, delete_collection};
use super::handler::{Ctx, Resp, json as json_resp};
use super::list::list;
use super::status::{ApiError, Target};
use super::storage::{Item, StorageError};
use super::subresources::{bind, evict, scale_get, scale_write, token_request};
use super::write::{create, patch_object, update};
use super::{State, body, review, table, watch};
use crate::api::resources::{self, Resource};
use crate::api::validation::NameRule;

impl From<StorageError> for ApiError {
    fn from(e: StorageError) -> Self {
        match e {
            StorageError::Compacted(rev) => ApiError::gone(format!(
                "too old resource version: {rev}: the revision has been compacted"
            )),
            other => {
                let mut msg = other.to_string();
                let mut src = std::error::Error::source(&other);
                while let Some(s) = src {
                    msg.push_str(": ");
                    msg.push_str(&s.to_string());
                    src = s.source();
                }
                ApiError::internal(msg)
            }
        }
    }
}

pub fn target<'a>(res: &'a Resource, name: &'a str) -> Target<'a> {
    Target {
        group: res.group,
        plural: res.plural,
        name,
    }
}

pub(super) fn now() -> String {
    time::OffsetDateTime::now_utc()
        .replace_nanosecond(0)
        .ok()
        .and_then(|t| {
            t.format(&time::format_description::well_known::Rfc3339)
                .ok()
        })
        .unwrap_or_default()
}

pub(super) fn plus_seconds(secs: i64) -> String {
    let t = time::OffsetDateTime::now_utc() + time::Duration::seconds(secs);
    t.replace_nanosecond(0)
        .ok()
        .and_then(|t| {
            t.format(&time::format_description::well_known::Rfc3339)
                .ok()
        })
        .unwrap_or_default()
}

/// A random version-4 UUID, as upstream gives every object.
pub fn uuid() -> String {
    let b: [u8; 16] = rand::random();
    let h: String = b.iter().map(|x| format!("{x:02x}")).collect();
    format!(
        "{}-{}-4{}-{:x}{}-{}",
        &h[0..8],
        &h[8..12],
        &h[13..16],
        (b[8] & 0x3) | 0x8,
        &h[17..20],
        &h[20..32]
    )
}

/// generateName's suffix: five characters from upstream's alphabet (no vowels, no 0/1/3).
pub(super) fn random_suffix() -> String {
    const ALPHABET: &[u8] = b"bcdfghjklmnpqrstvwxz2456789";
    (0..5)
        .map(|_| ALPHABET[rand::random_range(0..ALPHABET.len())] as char)
        .collect()
}

pub(super) fn name_rule(res: &Resource) -> NameRule {
    match res.plural {
        "namespaces" | "services" => NameRule::Label,
        _ if res.group == "rbac.authorization.k8s.io" => NameRule::PathSegment,
        _ => NameRule::Subdomain,
    }
}

pub(super) fn meta_str<'a>(v: &'a Value, field: &str) -> &'a str {
    v.get("metadata")
        .and_then(|m| m.get(field))
        .and_then(Value::as_str)
        .unwrap_or_default()
}

pub(super) fn meta_mut(v: &mut Value) -> &mut serde_json::Map<String, Value> {
    if !v.get("metadata").is_some_and(Value::is_object) {
        v["metadata"] = json!({});
    }
    v["metadata"]
        .as_object_mut()
        .expect("metadata was just made an object")
}

pub async fn fetch(state: &State, res: &Resource, ns: &str, name: &str) -> Result<Item, ApiError> {
    state
        .store
        .get(&res.key(ns, name))
        .await?
        .ok_or_else(|| ApiError::not_found(&target(res, name)))
}

/// Entry point for every resource request.
pub async fn dispatch(ctx: Ctx) -> Result<Resp, ApiError> {
    let info = ctx.info.clone();
    let res = resources::find(&info.group, &info.version, &info.resource)
        .ok_or_else(ApiError::page_not_found)?;
    if !res.namespaced && !info.namespace.is_empty() && res.plural != "namespaces" {
        return Err(ApiError::page_not_found());
    }
    if !res.verbs.contains(&info.verb.as_str()) && info.subresource.is_empty() {
        return Err(ApiError::method_not_allowed(format!(
            "the server does not allow this method on the requested resource ({} {})",
            info.verb, res.plural
        )));
    }
    if let Some(stored) = super::convert::stored_as(res) {
        return super::convert::serve(ctx, res, stored).await;
    }
    dispatch_to(ctx, res).await
}

/// A request served by `res`'s own handlers (after the URL's checks in [`dispatch`]).
pub(super) async fn dispatch_to(ctx: Ctx, res: &'static Resource) -> Result<Resp, ApiError> {
    let info = ctx.info.clone();
    if res.plural == "bindings" && info.verb == "create" {
        let b = body::decode(ctx.content_type(), &ctx.body)?;
        let pod = meta_str(&b, "name").to_owned();
        return bind(&ctx, &pod, &b).await;
    }
    if !res.is_stored() {
        return review::create(&ctx, res).await;
    }
    super::admission::node_restriction(&ctx, res).await?;
    let sub = info.subresource.as_str();
    if !sub.is_empty() && !res.subresources.contains(&sub) {
        return Err(ApiError::page_not_found());
    }
    if sub == "proxy" {
        if res.plural == "nodes" {
            return super::kubelet::node_proxy(&ctx).await;
        }
        return super::podproxy::serve(&ctx).await;
    }
    match (info.verb.as_str(), sub) {
        ("get", "" | "status") => get(&ctx, res).await,
        ("get", "scale") => scale_get(&ctx, res).await,
        ("list", "") => list(&ctx, res).await,
        ("watch", "") => watch::serve(&ctx, res).await,
        ("create", "") => create(&ctx, res).await,
        ("create", "token") => token_request(&ctx, res).await,
        ("create", "eviction") => evict(&ctx, res).await,
        ("get", "log") => super::kubelet::log(&ctx, res).await,
        ("get" | "create", "exec" | "attach" | "portforward") => {
            super::kubelet::stream(&ctx, res, sub).await
        }
        ("create", "binding") => {
            let b = body::decode(ctx.content_type(), &ctx.body)?;
            bind(&ctx, &info.name, &b).await
        }
        ("update", "scale") | ("patch", "scale") => scale_write(&ctx, res).await,
        ("update", _) => update(&ctx, res).await,
        ("patch", _) => patch_object(&ctx, res, None).await,
        ("delete", "") => delete(&ctx, res).await,
        ("deletecollection", "") => delete_collection(&ctx, res).await,
        _ => Err(ApiError::method_not_allowed(format!(
            "the server does not allow this method on the requested resource ({} {}/{sub})",
            info.verb, res.plural
        ))),
    }
}

pub(super) async fn get(ctx: &Ctx, res: &Resource) -> Result<Resp, ApiError> {
    let item = fetch(&ctx.state, res, &ctx.info.namespace, &ctx.info.name).await?;
    if ctx.wants_table() {
        let t = table::table(
            res,
            &[item.value],
            &item.mod_revision.to_string(),
            &ctx.query,
        );
        return Ok(json_resp(200, &t));
    }
    Ok(json_resp(200, &item.value))
}

pub(super) fn labels_of(obj: &Value) -> std::collections::BTreeMap<String, String> {
    obj.pointer("/metadata/labels")
        .and_then(Value::as_object)
        .map(|m| {
            m.iter()
                .map(|(k, v)| (k.clone(), v.as_str().unwrap_or_default().to_owned()))
                .collect()
        })
        .unwrap_or_default()
}

/// Checks the body's apiVersion and kind against the URL's resource, then fills them in.
pub(super) fn check_type(res: &Resource, obj: &mut Value) -> Result<(), ApiError> {
    let want_av = res.api_version();
    if let Some(av) = obj.get("apiVersion").and_then(Value::as_str) {
        if av != want_av {
            return Err(ApiError::bad_request(format!(
                "the API version in the data ({av}) does not match the expected API version ({want_av})"
            )));
        }
    }
    if let Some(kind) = obj.get("kind").and_then(Value::as_str) {
        if kind != res.kind {
            return Err(ApiError::bad_request(format!(
                "{kind} in version \"{}\" cannot be handled as a {}: the kind in the data does not match the resource",
                res.version, res.kind
            )));
        }
    }
    // apiVersion and kind first, as upstream serializes every object.
    let mut out = serde_json::Map::new();
    out.insert("apiVersion".into(), want_av.into());
    out.insert("kind".into(), res.kind.into());
    if let Some(m) = obj.as_object_mut() {
        m.remove("apiVersion");
        m.remove("kind");
        out.append(m);
    }
    *obj = Value::Object(out);
    Ok(())
}

pub(super) fn dry_run(ctx: &Ctx) -> bool {
    ctx.query.get("dryRun").is_some_and(|d| d == "All")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn uuid_shape() {
        let u = uuid();
        assert_eq!(u.len(), 36);
        assert_eq!(&u[14..15], "4");
    }
}
