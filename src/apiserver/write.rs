//! Writes: create, update (PUT) and patch, with upstream's create-time preparation and
//! optimistic concurrency.
//!
//! Mirrors `registry/generic/registry.Store.Create/Update` and the handlers in
//! `endpoints/handlers` (create, update, patch): name or generateName, uid, creationTimestamp,
//! generation, defaults, validation, NamespaceLifecycle's checks, `fieldValidation=Strict`,
//! `dryRun=All`, status kept apart from spec, and the write as an etcd transaction on the
//! resourceVersion it read (409 Conflict when someone else wrote first).

use serde_json::{Value, json};

use super::handler::{Ctx, Resp, json as json_resp};
use super::rest::{
    check_type, dry_run, fetch, meta_mut, meta_str, name_rule, now, random_suffix, target, uuid,
};
use super::status::{ApiError, Target};
use super::storage::{Item, Written, set_resource_version};
use super::{State, body, defaults, patch};
use crate::api::resources::{self, Resource};
use crate::api::validation::check_name;

/// NamespaceLifecycle: the namespace must exist and not be terminating (upstream's
/// `<resource> "<name>" is forbidden: unable to create new content …`).
pub(super) async fn check_namespace(
    state: &State,
    ns: &str,
    what: &Target<'_>,
) -> Result<(), ApiError> {
    let nsres = resources::find("", "v1", "namespaces").expect("namespaces is in the table");
    let item = fetch(state, nsres, "", ns).await?;
    if item.value.pointer("/metadata/deletionTimestamp").is_some() {
        let mut e = ApiError::forbidden(
            what,
            &format!(
                "unable to create new content in namespace {ns} because it is being terminated"
            ),
        );
        // The cause controllers look for to stay quiet about writes a terminating namespace
        // refuses (upstream's `NamespaceTerminatingCause`).
        if let Some(d) = e.details.as_mut().and_then(Value::as_object_mut) {
            d.insert(
                "causes".into(),
                json!([{"reason": crate::api::NAMESPACE_TERMINATING_CAUSE,
                    "message": format!("namespace {ns} is being terminated"),
                    "field": "metadata.namespace"}]),
            );
        }
        return Err(e);
    }
    Ok(())
}

/// `fieldValidation=Strict`, as far as [`super::openapi::strict`] knows the fields.
pub(super) async fn check_strict(ctx: &Ctx, res: &Resource, obj: &Value) -> Result<(), ApiError> {
    if ctx.query.get("fieldValidation").map(String::as_str) != Some("Strict") {
        return Ok(());
    }
    let api_version = if res.group.is_empty() {
        res.version.to_owned()
    } else {
        format!("{}/{}", res.group, res.version)
    };
    let unknown = super::openapi::unknown_fields(&api_version, res.kind, obj)
        .await
        .unwrap_or_default();
    if unknown.is_empty() {
        return Ok(());
    }
    let list: Vec<String> = unknown
        .iter()
        .map(|f| format!("unknown field \"{f}\""))
        .collect();
    Err(ApiError::bad_request(format!(
        "{} in version \"{}\" cannot be handled as a {}: strict decoding error: {}",
        res.kind,
        res.version,
        res.kind,
        list.join(", ")
    )))
}

pub(super) async fn create(ctx: &Ctx, res: &Resource) -> Result<Resp, ApiError> {
    let mut obj = body::decode(ctx.content_type(), &ctx.body)?;
    check_type(res, &mut obj)?;
    check_strict(ctx, res, &obj).await?;
    let ns = ctx.info.namespace.clone();
    if res.namespaced {
        let body_ns = meta_str(&obj, "namespace");
        if !body_ns.is_empty() && body_ns != ns {
            return Err(ApiError::bad_request(
                "the namespace of the provided object does not match the namespace sent on the request",
            ));
        }
        check_namespace(&ctx.state, &ns, &target(res, meta_str(&obj, "name"))).await?;
    }
    if res.kind == "Pod" {
        super::admission::priority(&ctx.state, res, &mut obj).await?;
    }
    let (v, code) = create_object(&ctx.state, res, &ns, obj, dry_run(ctx)).await?;
    Ok(json_resp(code, &v))
}

/// Prepares and stores a new object; used by create and by the bootstrap.
pub async fn create_object(
    state: &State,
    res: &Resource,
    ns: &str,
    mut obj: Value,
    dry: bool,
) -> Result<(Value, u16), ApiError> {
    let generate = meta_str(&obj, "generateName").to_owned();
    let mut name = meta_str(&obj, "name").to_owned();
    if name.is_empty() && generate.is_empty() {
        return Err(ApiError::invalid(
            res.kind,
            &target(res, ""),
            &[(
                "metadata.name".into(),
                "Required value: name or generateName is required".into(),
            )],
        ));
    }
    for attempt in 0..8 {
        if !generate.is_empty() && (attempt > 0 || meta_str(&obj, "name").is_empty()) {
            name = format!("{generate}{}", random_suffix());
        }
        if let Err(why) = check_name(name_rule(res), &name) {
            return Err(ApiError::invalid(
                res.kind,
                &target(res, &name),
                &[(
                    "metadata.name".into(),
                    format!("Invalid value: \"{name}\": {why}"),
                )],
            ));
        }
        let m = meta_mut(&mut obj);
        m.insert("name".into(), name.clone().into());
        if res.namespaced {
            m.insert("namespace".into(), ns.into());
        } else {
            m.remove("namespace");
        }
        for f in [
            "resourceVersion",
            "deletionTimestamp",
            "deletionGracePeriodSeconds",
            "selfLink",
        ] {
            m.remove(f);
        }
        m.insert("uid".into(), uuid().into());
        m.insert("creationTimestamp".into(), now().into());
        if res.has_generation {
            m.insert("generation".into(), 1.into());
        } else {
            m.remove("generation");
        }
        defaults::on_create(res.kind, &mut obj);
        if let (true, Some(d)) = (res.kind == "Pod", &state.default_tolerations) {
            d.mutate_pod(&mut obj);
        }
        if res.kind == "Pod" && state.service_account_admission {
            let sa = obj
                .pointer("/spec/serviceAccountName")
                .and_then(Value::as_str)
                .filter(|s| !s.is_empty())
                .unwrap_or("default")
                .to_owned();
            let key = format!("/registry/serviceaccounts/{ns}/{sa}");
            let account = state.store.get(&key).await?.map(|o| o.value);
            super::admission::mutate_pod(&mut obj, account.as_ref(), &super::rest::random_suffix());
        }
        let errs = crate::api::validation::check_object(res.kind, &obj);
        if !errs.is_empty() {
            return Err(ApiError::invalid(res.kind, &target(res, &name), &errs));
        }
        if res.kind == "Service" {
            super::bootstrap::allocate_service(state, &mut obj).await?;
        }
        if dry {
            return Ok((obj, 201));
        }
        match state.store.create(&res.key(ns, &name), &obj).await? {
            Written::Ok(rev) => {
                set_resource_version(&mut obj, rev);
                return Ok((obj, 201));
            }
            Written::Conflict
                if !generate.is_empty()
                    && meta_str(&obj, "name").starts_with(&generate)
                    && attempt < 7 =>
            {
                continue;
            }
            Written::Conflict => return Err(ApiError::already_exists(&target(res, &name))),
        }
    }
    Err(ApiError::already_exists(&target(res, &name)))
}

/// The object an update may write: immutable metadata from `old`, status kept apart from the
/// rest, generation bumped when the spec changed.
pub(super) fn merge_for_update(res: &Resource, old: &Value, mut new: Value, sub: &str) -> Value {
    if sub == "status" {
        let mut out = old.clone();
        out["status"] = new.get("status").cloned().unwrap_or_else(|| json!({}));
        return out;
    }
    if res.subresources.contains(&"status") && res.plural != "namespaces" {
        match old.get("status") {
            Some(s) => new["status"] = s.clone(),
            None => {
                if let Some(m) = new.as_object_mut() {
                    m.remove("status");
                }
            }
        }
    }
    if res.plural == "namespaces" && sub != "finalize" {
        new["spec"] = old.get("spec").cloned().unwrap_or_else(|| json!({}));
        new["status"] = old.get("status").cloned().unwrap_or_else(|| json!({}));
    }
    if res.plural == "namespaces" && sub == "finalize" {
        let spec = new.get("spec").cloned().unwrap_or_else(|| json!({}));
        let mut out = old.clone();
        out["spec"] = spec;
        return out;
    }
    let old_meta = old.get("metadata").cloned().unwrap_or_else(|| json!({}));
    let m = meta_mut(&mut new);
    for f in [
        "name",
        "namespace",
        "uid",
        "creationTimestamp",
        "deletionTimestamp",
        "deletionGracePeriodSeconds",
        "generation",
    ] {
        match old_meta.get(f) {
            Some(v) => m.insert(f.into(), v.clone()),
            None => m.remove(f),
        };
    }
    if res.has_generation && new.get("spec") != old.get("spec") {
        let g = old_meta
            .get("generation")
            .and_then(Value::as_i64)
            .unwrap_or(0)
            + 1;
        new["metadata"]["generation"] = g.into();
    }
    if res.kind == "Secret" {
        defaults::secret_string_data(&mut new);
    }
    new
}

/// Writes an updated object, or deletes it when its last finalizer is gone during deletion.
pub(super) async fn write_update(
    state: &State,
    res: &Resource,
    key: &str,
    current: &Item,
    mut new: Value,
) -> Result<Option<Value>, ApiError> {
    let errs = crate::api::validation::check_object(res.kind, &new);
    if !errs.is_empty() {
        let name = meta_str(&new, "name").to_owned();
        return Err(ApiError::invalid(res.kind, &target(res, &name), &errs));
    }
    let deleting = new.pointer("/metadata/deletionTimestamp").is_some();
    let finalizers_left = new
        .pointer("/metadata/finalizers")
        .and_then(Value::as_array)
        .is_some_and(|a| !a.is_empty());
    let gone = if res.plural == "namespaces" {
        super::delete::namespace_finalized(&new)
    } else {
        !finalizers_left
    };
    if deleting && gone {
        return match state.store.delete(key, current.mod_revision).await? {
            Written::Ok(_) => Ok(Some(new)),
            Written::Conflict => Ok(None),
        };
    }
    match state.store.update(key, &new, current.mod_revision).await? {
        Written::Ok(rev) => {
            set_resource_version(&mut new, rev);
            Ok(Some(new))
        }
        Written::Conflict => Ok(None),
    }
}

pub(super) async fn update(ctx: &Ctx, res: &Resource) -> Result<Resp, ApiError> {
    let info = &ctx.info;
    let mut obj = body::decode(ctx.content_type(), &ctx.body)?;
    check_type(res, &mut obj)?;
    check_strict(ctx, res, &obj).await?;
    let body_name = meta_str(&obj, "name");
    if !body_name.is_empty() && body_name != info.name {
        return Err(ApiError::bad_request(format!(
            "the name of the object ({body_name}) does not match the name on the URL ({})",
            info.name
        )));
    }
    let current = match fetch(&ctx.state, res, &info.namespace, &info.name).await {
        // Endpoints may be created by a PUT (upstream's AllowCreateOnUpdate), as the
        // endpoints controller and kube-proxy's older paths do.
        Err(e) if e.code == 404 && res.plural == "endpoints" && info.subresource.is_empty() => {
            meta_mut(&mut obj).insert("name".into(), info.name.clone().into());
            check_namespace(&ctx.state, &info.namespace, &target(res, &info.name)).await?;
            let (v, code) =
                create_object(&ctx.state, res, &info.namespace, obj, dry_run(ctx)).await?;
            return Ok(json_resp(code, &v));
        }
        other => other?,
    };
    let rv = meta_str(&obj, "resourceVersion");
    if !rv.is_empty() && rv != current.mod_revision.to_string() {
        return Err(ApiError::conflict(&target(res, &info.name)));
    }
    let new = merge_for_update(res, &current.value, obj, &info.subresource);
    if dry_run(ctx) {
        return Ok(json_resp(200, &new));
    }
    let key = res.key(&info.namespace, &info.name);
    match write_update(&ctx.state, res, &key, &current, new).await? {
        Some(v) => Ok(json_resp(200, &v)),
        None => Err(ApiError::conflict(&target(res, &info.name))),
    }
}

/// PATCH; with `view`, the patch applies to the object as `view` serves it (another
/// group-version of the same stored kind, [`super::convert`]) and the result is stored back.
pub(super) async fn patch_object(
    ctx: &Ctx,
    res: &Resource,
    view: Option<&Resource>,
) -> Result<Resp, ApiError> {
    let info = &ctx.info;
    let kind = patch::PatchType::from_content_type(ctx.content_type())?;
    let key = res.key(&info.namespace, &info.name);
    for _ in 0..5 {
        let current = fetch(&ctx.state, res, &info.namespace, &info.name).await?;
        let mut patched = match view {
            Some(v) => {
                let served = super::convert::to_served(v, current.value.clone());
                let mut p = patch::apply(kind, &served, &ctx.body)?;
                check_type(v, &mut p)?;
                super::convert::to_stored(v, p)
            }
            None => patch::apply(kind, &current.value, &ctx.body)?,
        };
        body::prune_nulls(&mut patched);
        check_type(res, &mut patched)?;
        check_strict(ctx, res, &patched).await?;
        let rv = meta_str(&patched, "resourceVersion").to_owned();
        if !rv.is_empty() && rv != current.mod_revision.to_string() {
            return Err(ApiError::conflict(&target(res, &info.name)));
        }
        let new = merge_for_update(res, &current.value, patched, &info.subresource);
        if dry_run(ctx) {
            return Ok(json_resp(200, &new));
        }
        if let Some(v) = write_update(&ctx.state, res, &key, &current, new).await? {
            return Ok(json_resp(200, &v));
        }
        if !rv.is_empty() {
            return Err(ApiError::conflict(&target(res, &info.name)));
        }
    }
    Err(ApiError::conflict(&target(res, &info.name)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn update_keeps_status_and_counts_generation() {
        let deploy = resources::find("apps", "v1", "deployments").unwrap();
        let old = json!({"metadata": {"name": "d", "uid": "u", "generation": 1}, "spec": {"replicas": 1}, "status": {"replicas": 1}});
        let new = json!({"metadata": {"name": "d", "uid": "other"}, "spec": {"replicas": 3}, "status": {"replicas": 9}});
        let got = merge_for_update(deploy, &old, new, "");
        assert_eq!(got["metadata"]["uid"], "u");
        assert_eq!(got["metadata"]["generation"], 2);
        assert_eq!(got["status"]["replicas"], 1);
    }
}
