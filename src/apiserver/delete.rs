//! DELETE and deletecollection: graceful pod deletion, finalizers, and namespace termination.
//!
//! Mirrors `registry/generic/registry.Store.Delete` (preconditions, `gracePeriodSeconds`,
//! `propagationPolicy` finalizers, deletionTimestamp while finalizers remain), pod storage's
//! graceful deletion and namespace storage's `Delete`: the first DELETE of a namespace only
//! marks it (deletionTimestamp, phase `Terminating`); emptying it is the namespace
//! controller's work in kube-controller-manager (`controllers::namespace`), which then removes
//! the `kubernetes` finalizer through `namespaces/{name}/finalize`. The namespace goes once
//! `spec.finalizers` and `metadata.finalizers` are both empty. Leaves out the garbage
//! collector (owner references) and Orphan/Foreground propagation for namespaces.

use std::sync::Arc;

use serde_json::{Value, json};

use super::handler::{Ctx, Resp, json as json_resp};
use super::list::{collect, list_opts};
use super::rest::{dry_run, fetch, meta_mut, meta_str, now, plus_seconds, target};
use super::status::{ApiError, Target};
use super::storage::{Written, set_resource_version};
use super::write::write_update;
use super::{State, body};
use crate::api::resources::Resource;

/// DeleteOptions from the body and the query.
#[derive(Debug, Default, Clone)]
pub struct DeleteOpts {
    pub grace: Option<i64>,
    pub propagation: Option<String>,
    pub uid: Option<String>,
    pub resource_version: Option<String>,
}

pub(super) fn delete_opts(ctx: &Ctx) -> Result<DeleteOpts, ApiError> {
    let mut o = DeleteOpts::default();
    if !ctx.body.is_empty() {
        let b = body::decode(ctx.content_type(), &ctx.body)?;
        o.grace = b.get("gracePeriodSeconds").and_then(Value::as_i64);
        o.propagation = b
            .get("propagationPolicy")
            .and_then(Value::as_str)
            .map(str::to_owned);
        o.uid = b
            .pointer("/preconditions/uid")
            .and_then(Value::as_str)
            .map(str::to_owned);
        o.resource_version = b
            .pointer("/preconditions/resourceVersion")
            .and_then(Value::as_str)
            .map(str::to_owned);
    }
    if let Some(g) = ctx.query.get("gracePeriodSeconds") {
        o.grace = Some(
            g.parse()
                .map_err(|_| ApiError::bad_request(format!("invalid gracePeriodSeconds {g:?}")))?,
        );
    }
    if let Some(p) = ctx.query.get("propagationPolicy") {
        o.propagation = Some(p.clone());
    }
    if let Some(p) = &o.propagation {
        if !matches!(p.as_str(), "Background" | "Foreground" | "Orphan") {
            return Err(ApiError::invalid(
                "DeleteOptions",
                &Target {
                    group: "",
                    plural: "",
                    name: "",
                },
                &[(
                    "propagationPolicy".into(),
                    format!(
                        "Unsupported value: \"{p}\": supported values: \"Foreground\", \"Background\", \"Orphan\""
                    ),
                )],
            ));
        }
    }
    Ok(o)
}

/// Whether a successful immediate delete answers with the object (else a Status).
pub(super) fn returns_deleted_object(res: &Resource) -> bool {
    matches!(res.plural, "pods" | "namespaces" | "services")
}

/// Deletes one object: gracefully, behind finalizers, or at once. Returns the status code and
/// the body upstream answers with.
pub async fn delete_one(
    state: &Arc<State>,
    res: &'static Resource,
    ns: &str,
    name: &str,
    o: &DeleteOpts,
) -> Result<Value, ApiError> {
    let key = res.key(ns, name);
    for _ in 0..5 {
        let current = fetch(state, res, ns, name).await?;
        let mut obj = current.value.clone();
        if o.uid.as_deref().is_some_and(|u| u != meta_str(&obj, "uid")) {
            return Err(ApiError::conflict(&target(res, name)));
        }
        if o.resource_version
            .as_deref()
            .is_some_and(|rv| rv != current.mod_revision.to_string())
        {
            return Err(ApiError::conflict(&target(res, name)));
        }
        let already = obj.pointer("/metadata/deletionTimestamp").is_some();
        if res.plural == "namespaces" {
            if already && !namespace_finalized(&obj) {
                return Ok(obj);
            }
            if !already {
                meta_mut(&mut obj).insert("deletionTimestamp".into(), now().into());
                meta_mut(&mut obj).insert("deletionGracePeriodSeconds".into(), 0.into());
                obj["status"]["phase"] = "Terminating".into();
            }
            // Marked, or removed at once when nothing holds it (write_update deletes a
            // namespace being deleted whose finalizers are all gone).
            if let Some(v) = write_update(state, res, &key, &current, obj).await? {
                return Ok(v);
            }
            continue;
        }
        let mut finalizers: Vec<Value> = obj
            .pointer("/metadata/finalizers")
            .and_then(Value::as_array)
            .cloned()
            .unwrap_or_default();
        if !already {
            let extra = match o.propagation.as_deref() {
                Some("Foreground") => Some("foregroundDeletion"),
                Some("Orphan") => Some("orphan"),
                _ => None,
            };
            if let Some(f) = extra.filter(|f| !finalizers.contains(&json!(f))) {
                finalizers.push(json!(f));
                meta_mut(&mut obj).insert("finalizers".into(), finalizers.clone().into());
            }
        }
        let grace = if res.plural == "pods" {
            let scheduled = obj
                .pointer("/spec/nodeName")
                .and_then(Value::as_str)
                .is_some_and(|n| !n.is_empty());
            let spec_grace = obj
                .pointer("/spec/terminationGracePeriodSeconds")
                .and_then(Value::as_i64)
                .unwrap_or(30);
            if scheduled {
                o.grace.unwrap_or(spec_grace).max(0)
            } else {
                0
            }
        } else {
            0
        };
        if grace > 0 || !finalizers.is_empty() {
            if already && grace > 0 {
                return Ok(obj);
            }
            if !already || grace > 0 {
                let m = meta_mut(&mut obj);
                m.insert("deletionTimestamp".into(), plus_seconds(grace).into());
                m.insert("deletionGracePeriodSeconds".into(), grace.into());
            }
            if !finalizers.is_empty() || grace > 0 {
                match state.store.update(&key, &obj, current.mod_revision).await? {
                    Written::Ok(rev) => {
                        set_resource_version(&mut obj, rev);
                        return Ok(obj);
                    }
                    Written::Conflict => continue,
                }
            }
        }
        match state.store.delete(&key, current.mod_revision).await? {
            Written::Ok(_) if returns_deleted_object(res) => return Ok(current.value),
            Written::Ok(_) => {
                return Ok(super::status::success(
                    &target(res, name),
                    meta_str(&current.value, "uid"),
                ));
            }
            Written::Conflict => continue,
        }
    }
    Err(ApiError::conflict(&target(res, name)))
}

pub(super) async fn delete(ctx: &Ctx, res: &'static Resource) -> Result<Resp, ApiError> {
    let o = delete_opts(ctx)?;
    if dry_run(ctx) {
        let item = fetch(&ctx.state, res, &ctx.info.namespace, &ctx.info.name).await?;
        return Ok(json_resp(200, &item.value));
    }
    let v = delete_one(&ctx.state, res, &ctx.info.namespace, &ctx.info.name, &o).await?;
    Ok(json_resp(200, &v))
}

pub(super) async fn delete_collection(ctx: &Ctx, res: &'static Resource) -> Result<Resp, ApiError> {
    let o = delete_opts(ctx)?;
    let opts = list_opts(ctx, res)?;
    let ns = (!ctx.info.namespace.is_empty()).then_some(ctx.info.namespace.as_str());
    let l = collect(&ctx.state, res, ns, &opts).await?;
    let mut deleted = Vec::new();
    for item in l.items {
        let name = meta_str(&item, "name").to_owned();
        let item_ns = meta_str(&item, "namespace").to_owned();
        match delete_one(&ctx.state, res, &item_ns, &name, &o).await {
            Ok(_) => deleted.push(item),
            Err(e) if e.code == 404 => {}
            Err(e) => return Err(e),
        }
    }
    let out = json!({
        "kind": format!("{}List", res.kind),
        "apiVersion": res.api_version(),
        "metadata": {"resourceVersion": l.revision.to_string()},
        "items": deleted,
    });
    Ok(json_resp(200, &out))
}

/// Whether nothing holds a namespace any more: no `spec.finalizers` (the namespace
/// controller's `kubernetes`, or another's) and no `metadata.finalizers`.
pub(super) fn namespace_finalized(ns: &Value) -> bool {
    ["/spec/finalizers", "/metadata/finalizers"]
        .iter()
        .all(|p| {
            ns.pointer(p)
                .and_then(Value::as_array)
                .is_none_or(|a| a.is_empty())
        })
}
