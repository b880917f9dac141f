//! The REST verbs on stored resources: get, list, create, update, patch, delete,
//! deletecollection, and the `status`, `scale` and `finalize` subresources.
//!
//! Mirrors the apiserver's generic registry (`registry/generic/registry.Store`) and the
//! handlers in `endpoints/handlers`: names and generateName, uid and creationTimestamp,
//! optimistic concurrency on resourceVersion, status kept apart from spec, generation counting
//! spec changes, graceful pod deletion, finalizers, paging with continue tokens, and the
//! NamespaceLifecycle admission check (no creates in missing or terminating namespaces).

use std::sync::Arc;

use base64::Engine;
use serde_json::{Value, json};

use super::handler::{Ctx, Resp, json as json_resp};
use super::status::{ApiError, Target};
use super::storage::{Item, StorageError, Written, set_resource_version};
use super::{State, body, defaults, patch, review, table, watch};
use crate::api::resources::{self, RESOURCES, Resource};
use crate::api::selector::{self, FieldTerm, LabelSelector};
use crate::api::validation::{NameRule, check_name};

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

fn now() -> String {
    time::OffsetDateTime::now_utc()
        .replace_nanosecond(0)
        .ok()
        .and_then(|t| {
            t.format(&time::format_description::well_known::Rfc3339)
                .ok()
        })
        .unwrap_or_default()
}

fn plus_seconds(secs: i64) -> String {
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
fn random_suffix() -> String {
    const ALPHABET: &[u8] = b"bcdfghjklmnpqrstvwxz2456789";
    (0..5)
        .map(|_| ALPHABET[rand::random_range(0..ALPHABET.len())] as char)
        .collect()
}

fn name_rule(res: &Resource) -> NameRule {
    match res.plural {
        "namespaces" | "services" => NameRule::Label,
        _ if res.group == "rbac.authorization.k8s.io" => NameRule::PathSegment,
        _ => NameRule::Subdomain,
    }
}

fn meta_str<'a>(v: &'a Value, field: &str) -> &'a str {
    v.get("metadata")
        .and_then(|m| m.get(field))
        .and_then(Value::as_str)
        .unwrap_or_default()
}

fn meta_mut(v: &mut Value) -> &mut serde_json::Map<String, Value> {
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
    if res.plural == "bindings" && info.verb == "create" {
        let b = body::decode(ctx.content_type(), &ctx.body)?;
        let pod = meta_str(&b, "name").to_owned();
        return bind(&ctx, &pod, &b).await;
    }
    if !res.is_stored() {
        return review::create(&ctx, res).await;
    }
    let sub = info.subresource.as_str();
    if !sub.is_empty() && !res.subresources.contains(&sub) {
        return Err(ApiError::page_not_found());
    }
    match (info.verb.as_str(), sub) {
        ("get", "" | "status") => get(&ctx, res).await,
        ("get", "scale") => scale_get(&ctx, res).await,
        ("list", "") => list(&ctx, res).await,
        ("watch", "") => watch::serve(&ctx, res).await,
        ("create", "") => create(&ctx, res).await,
        ("create", "token") => token_request(&ctx, res).await,
        ("create", "eviction") => evict(&ctx, res).await,
        (_, "log" | "exec" | "attach" | "portforward") => Err(ApiError::unavailable(format!(
            "pods/{sub} is not built in klab yet: the API server does not proxy to kubelets (--kubelet-client-certificate); it arrives with the kubelet"
        ))),
        ("create", "binding") => {
            let b = body::decode(ctx.content_type(), &ctx.body)?;
            bind(&ctx, &info.name, &b).await
        }
        ("update", "scale") | ("patch", "scale") => scale_write(&ctx, res).await,
        ("update", _) => update(&ctx, res).await,
        ("patch", _) => patch_object(&ctx, res).await,
        ("delete", "") => delete(&ctx, res).await,
        ("deletecollection", "") => delete_collection(&ctx, res).await,
        _ => Err(ApiError::method_not_allowed(format!(
            "the server does not allow this method on the requested resource ({} {}/{sub})",
            info.verb, res.plural
        ))),
    }
}

async fn get(ctx: &Ctx, res: &Resource) -> Result<Resp, ApiError> {
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

/// Parsed list options: selectors, paging, the revision to read at.
pub struct ListOpts {
    pub labels: LabelSelector,
    pub fields: Vec<FieldTerm>,
    pub limit: i64,
    /// From a continue token: the revision and the key to start at.
    pub cont: Option<(i64, String)>,
    /// An exact revision to read at (`resourceVersionMatch=Exact`), else 0 (latest).
    pub revision: i64,
}

/// The field selectors a resource supports, beyond metadata.name and metadata.namespace.
fn field_path(res: &Resource, field: &str) -> Option<&'static str> {
    Some(match (res.plural, field) {
        (_, "metadata.name") => "/metadata/name",
        (_, "metadata.namespace") => "/metadata/namespace",
        ("pods", "spec.nodeName") => "/spec/nodeName",
        ("pods", "status.phase") => "/status/phase",
        ("pods", "spec.restartPolicy") => "/spec/restartPolicy",
        ("pods", "spec.schedulerName") => "/spec/schedulerName",
        ("pods", "spec.serviceAccountName") => "/spec/serviceAccountName",
        ("pods", "status.podIP") => "/status/podIP",
        ("namespaces", "status.phase") => "/status/phase",
        ("nodes", "spec.unschedulable") => "/spec/unschedulable",
        ("secrets", "type") => "/type",
        ("events", "involvedObject.kind") => "/involvedObject/kind",
        ("events", "involvedObject.namespace") => "/involvedObject/namespace",
        ("events", "involvedObject.name") => "/involvedObject/name",
        ("events", "involvedObject.uid") => "/involvedObject/uid",
        ("events", "involvedObject.apiVersion") => "/involvedObject/apiVersion",
        ("events", "involvedObject.fieldPath") => "/involvedObject/fieldPath",
        ("events", "reason") => "/reason",
        ("events", "type") => "/type",
        ("events", "source") => "/source/component",
        _ => return None,
    })
}

fn field_value(obj: &Value, path: &str) -> String {
    match obj.pointer(path) {
        Some(Value::String(s)) => s.clone(),
        Some(Value::Bool(b)) => b.to_string(),
        Some(Value::Number(n)) => n.to_string(),
        _ if path == "/spec/unschedulable" => "false".into(),
        _ => String::new(),
    }
}

fn labels_of(obj: &Value) -> std::collections::BTreeMap<String, String> {
    obj.pointer("/metadata/labels")
        .and_then(Value::as_object)
        .map(|m| {
            m.iter()
                .map(|(k, v)| (k.clone(), v.as_str().unwrap_or_default().to_owned()))
                .collect()
        })
        .unwrap_or_default()
}

/// Whether an object passes the label and field selectors.
pub fn selected(res: &Resource, obj: &Value, labels: &LabelSelector, fields: &[FieldTerm]) -> bool {
    labels.matches(&labels_of(obj))
        && fields.iter().all(|f| {
            let v = field_path(res, &f.field)
                .map(|p| field_value(obj, p))
                .unwrap_or_default();
            (v == f.value) == f.equals
        })
}

#[derive(serde::Serialize, serde::Deserialize)]
struct ContinueToken {
    v: String,
    rv: i64,
    start: String,
}

pub fn list_opts(ctx: &Ctx, res: &Resource) -> Result<ListOpts, ApiError> {
    let q = &ctx.query;
    let labels = selector::parse_labels(q.get("labelSelector").map(String::as_str).unwrap_or(""))
        .map_err(|e| ApiError::bad_request(e.to_string()))?;
    let fields = selector::parse_fields(q.get("fieldSelector").map(String::as_str).unwrap_or(""))
        .map_err(|e| ApiError::bad_request(e.to_string()))?;
    for f in &fields {
        if field_path(res, &f.field).is_none() {
            return Err(ApiError::bad_request(format!(
                "field label not supported: {}",
                f.field
            )));
        }
    }
    let limit = match q.get("limit") {
        Some(l) => l
            .parse::<i64>()
            .map_err(|_| ApiError::bad_request(format!("invalid limit {l:?}")))?
            .max(0),
        None => 0,
    };
    let cont = match q.get("continue").filter(|c| !c.is_empty()) {
        Some(c) => {
            let bad = || {
                ApiError::bad_request(
                    "continue key is not valid: incorrect encoded start resourceVersion (version meta.k8s.io/v1)",
                )
            };
            let raw = base64::engine::general_purpose::STANDARD
                .decode(c)
                .or_else(|_| base64::engine::general_purpose::URL_SAFE.decode(c))
                .map_err(|_| bad())?;
            let t: ContinueToken = serde_json::from_slice(&raw).map_err(|_| bad())?;
            Some((t.rv, t.start))
        }
        None => None,
    };
    let rv = q.get("resourceVersion").map(String::as_str).unwrap_or("");
    let exact = q.get("resourceVersionMatch").map(String::as_str) == Some("Exact");
    let revision = if exact {
        rv.parse::<i64>()
            .map_err(|_| ApiError::bad_request(format!("invalid resourceVersion {rv:?}")))?
    } else {
        0
    };
    Ok(ListOpts {
        labels,
        fields,
        limit,
        cont,
        revision,
    })
}

/// The objects of one list request, with the list's metadata.
pub struct Listed {
    pub items: Vec<Value>,
    pub revision: i64,
    pub cont: Option<String>,
    pub remaining: Option<i64>,
}

pub async fn collect(
    state: &State,
    res: &Resource,
    ns: Option<&str>,
    o: &ListOpts,
) -> Result<Listed, ApiError> {
    let prefix = res.list_prefix(ns);
    let (mut revision, mut start) = match &o.cont {
        Some((rv, start)) => (*rv, format!("{prefix}{start}")),
        None => (o.revision, prefix.clone()),
    };
    let filtering = !o.labels.is_empty() || !o.fields.is_empty();
    let mut items = Vec::new();
    // Unlimited lists are still read from etcd in chunks at one revision: one huge range
    // response would exceed gRPC's message size limit.
    let chunk = if o.limit > 0 { o.limit } else { 500 };
    loop {
        let page = match state
            .store
            .list(&prefix, Some(&start), chunk, revision)
            .await
        {
            Err(StorageError::Compacted(_)) if o.cont.is_some() => {
                return Err(ApiError::gone(
                    "The provided continue parameter is too old to display a consistent list result. You can start a new list without the continue parameter, or use the continue token in this response to retrieve the remainder of the results. Continuing with the provided token results in an inconsistent list - objects that were created, modified, or deleted between the time the first chunk was returned and now may show up in the list.",
                ));
            }
            other => other?,
        };
        if revision == 0 {
            revision = page.revision;
        }
        let n = page.items.len();
        for (i, it) in page.items.into_iter().enumerate() {
            start = format!("{}\u{0}", it.key);
            if selected(res, &it.value, &o.labels, &o.fields) {
                items.push(it.value);
            }
            if o.limit > 0 && items.len() as i64 == o.limit {
                let left_here = (n - i - 1) as i64;
                if left_here == 0 && !page.more {
                    break;
                }
                let token = ContinueToken {
                    v: "meta.k8s.io/v1".into(),
                    rv: revision,
                    start: start[prefix.len()..].to_owned(),
                };
                let enc = base64::engine::general_purpose::STANDARD
                    .encode(serde_json::to_vec(&token).unwrap_or_default());
                return Ok(Listed {
                    items,
                    revision,
                    cont: Some(enc),
                    remaining: (!filtering).then_some(left_here + page.remaining),
                });
            }
        }
        if !page.more {
            return Ok(Listed {
                items,
                revision,
                cont: None,
                remaining: None,
            });
        }
    }
}

async fn list(ctx: &Ctx, res: &Resource) -> Result<Resp, ApiError> {
    let opts = list_opts(ctx, res)?;
    let ns = (!ctx.info.namespace.is_empty()).then_some(ctx.info.namespace.as_str());
    let l = collect(&ctx.state, res, ns, &opts).await?;
    let mut meta = serde_json::Map::new();
    meta.insert("resourceVersion".into(), l.revision.to_string().into());
    if let Some(c) = &l.cont {
        meta.insert("continue".into(), c.clone().into());
    }
    if let Some(r) = l.remaining {
        meta.insert("remainingItemCount".into(), r.into());
    }
    if ctx.wants_table() {
        let mut t = table::table(res, &l.items, &l.revision.to_string(), &ctx.query);
        t["metadata"] = Value::Object(meta);
        return Ok(json_resp(200, &t));
    }
    let out = json!({
        "kind": format!("{}List", res.kind),
        "apiVersion": res.api_version(),
        "metadata": meta,
        "items": l.items,
    });
    Ok(json_resp(200, &out))
}

/// Checks the body's apiVersion and kind against the URL's resource, then fills them in.
fn check_type(res: &Resource, obj: &mut Value) -> Result<(), ApiError> {
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

/// NamespaceLifecycle: the namespace must exist and not be terminating.
async fn check_namespace(state: &State, ns: &str) -> Result<(), ApiError> {
    let nsres = resources::find("", "v1", "namespaces").expect("namespaces is in the table");
    let item = fetch(state, nsres, "", ns).await?;
    if item.value.pointer("/metadata/deletionTimestamp").is_some() {
        return Err(ApiError::new(
            403,
            "Forbidden",
            format!(
                "unable to create new content in namespace {ns} because it is being terminated"
            ),
        ));
    }
    Ok(())
}

/// `fieldValidation=Strict`, as far as [`super::openapi::strict`] knows the fields.
fn check_strict(ctx: &Ctx, res: &Resource, obj: &Value) -> Result<(), ApiError> {
    if ctx.query.get("fieldValidation").map(String::as_str) != Some("Strict") {
        return Ok(());
    }
    let unknown = super::openapi::strict::unknown_fields(res.kind, obj);
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

async fn create(ctx: &Ctx, res: &Resource) -> Result<Resp, ApiError> {
    let mut obj = body::decode(ctx.content_type(), &ctx.body)?;
    check_type(res, &mut obj)?;
    check_strict(ctx, res, &obj)?;
    let ns = ctx.info.namespace.clone();
    if res.namespaced {
        let body_ns = meta_str(&obj, "namespace");
        if !body_ns.is_empty() && body_ns != ns {
            return Err(ApiError::bad_request(
                "the namespace of the provided object does not match the namespace sent on the request",
            ));
        }
        check_namespace(&ctx.state, &ns).await?;
    }
    let (v, code) = create_object(&ctx.state, res, &ns, obj, dry_run(ctx)).await?;
    Ok(json_resp(code, &v))
}

fn dry_run(ctx: &Ctx) -> bool {
    ctx.query.get("dryRun").is_some_and(|d| d == "All")
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
fn merge_for_update(res: &Resource, old: &Value, mut new: Value, sub: &str) -> Value {
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
async fn write_update(
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
    if deleting && !finalizers_left && res.plural != "namespaces" {
        return match state.store.delete(key, current.mod_revision).await? {
            Written::Ok(_) => Ok(Some(new)),
            Written::Conflict => Ok(None),
        };
    }
    if res.plural == "namespaces" && deleting && !finalizers_left {
        let spec_done = new
            .pointer("/spec/finalizers")
            .and_then(Value::as_array)
            .is_none_or(|a| a.is_empty());
        if spec_done {
            return match state.store.delete(key, current.mod_revision).await? {
                Written::Ok(_) => Ok(Some(new)),
                Written::Conflict => Ok(None),
            };
        }
    }
    match state.store.update(key, &new, current.mod_revision).await? {
        Written::Ok(rev) => {
            set_resource_version(&mut new, rev);
            Ok(Some(new))
        }
        Written::Conflict => Ok(None),
    }
}

async fn update(ctx: &Ctx, res: &Resource) -> Result<Resp, ApiError> {
    let info = &ctx.info;
    let mut obj = body::decode(ctx.content_type(), &ctx.body)?;
    check_type(res, &mut obj)?;
    check_strict(ctx, res, &obj)?;
    let body_name = meta_str(&obj, "name");
    if !body_name.is_empty() && body_name != info.name {
        return Err(ApiError::bad_request(format!(
            "the name of the object ({body_name}) does not match the name on the URL ({})",
            info.name
        )));
    }
    let current = fetch(&ctx.state, res, &info.namespace, &info.name).await?;
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

async fn patch_object(ctx: &Ctx, res: &Resource) -> Result<Resp, ApiError> {
    let info = &ctx.info;
    let kind = patch::PatchType::from_content_type(ctx.content_type())?;
    let key = res.key(&info.namespace, &info.name);
    for _ in 0..5 {
        let current = fetch(&ctx.state, res, &info.namespace, &info.name).await?;
        let mut patched = patch::apply(kind, &current.value, &ctx.body)?;
        body::prune_nulls(&mut patched);
        check_type(res, &mut patched)?;
        check_strict(ctx, res, &patched)?;
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

/// TokenRequest (`kubectl create token SA`): a signed, expiring token for a service account.
async fn token_request(ctx: &Ctx, res: &Resource) -> Result<Resp, ApiError> {
    let info = &ctx.info;
    let Some(signer) = ctx.state.sa_tokens.as_ref().filter(|t| t.can_sign()) else {
        return Err(ApiError::new(
            404,
            "NotFound",
            "the server could not find the requested resource (token requests need --service-account-signing-key-file)",
        ));
    };
    let sa = fetch(&ctx.state, res, &info.namespace, &info.name).await?;
    let req = if ctx.body.is_empty() {
        json!({})
    } else {
        body::decode(ctx.content_type(), &ctx.body)?
    };
    let seconds = req
        .pointer("/spec/expirationSeconds")
        .and_then(Value::as_i64)
        .unwrap_or(3600);
    if seconds < 600 {
        return Err(ApiError::invalid(
            "TokenRequest",
            &target(res, &info.name),
            &[(
                "spec.expirationSeconds".into(),
                format!(
                    "Invalid value: {seconds}: may not specify a duration less than 10 minutes"
                ),
            )],
        ));
    }
    let audiences: Vec<String> = req
        .pointer("/spec/audiences")
        .and_then(Value::as_array)
        .map(|a| {
            a.iter()
                .filter_map(|x| x.as_str().map(str::to_owned))
                .collect()
        })
        .filter(|a: &Vec<String>| !a.is_empty())
        .unwrap_or_else(|| vec![signer.issuer.clone()]);
    let uid = meta_str(&sa.value, "uid");
    let (token, exp) = signer
        .issue(&info.namespace, &info.name, uid, &audiences, seconds)
        .map_err(|e| ApiError::internal(e.to_string()))?;
    let exp_ts = time::OffsetDateTime::from_unix_timestamp(exp)
        .ok()
        .and_then(|t| {
            t.format(&time::format_description::well_known::Rfc3339)
                .ok()
        })
        .unwrap_or_default();
    let out = json!({
        "kind": "TokenRequest", "apiVersion": "authentication.k8s.io/v1",
        "metadata": {"name": info.name, "namespace": info.namespace, "creationTimestamp": now()},
        "spec": {"audiences": audiences, "expirationSeconds": seconds},
        "status": {"token": token, "expirationTimestamp": exp_ts},
    });
    Ok(json_resp(201, &out))
}

/// Eviction (`kubectl drain`): deletes a pod unless a PodDisruptionBudget that selects it
/// allows no disruption now. Mirrors upstream's `EvictionREST` in its main rule; the budget's
/// `status.disruptionsAllowed` is kept by the disruption controller, so until klab has one a
/// budget that selects the pod blocks its eviction (429), as upstream does for a budget whose
/// status is not yet computed.
async fn evict(ctx: &Ctx, pods: &'static Resource) -> Result<Resp, ApiError> {
    let info = &ctx.info;
    let pod = fetch(&ctx.state, pods, &info.namespace, &info.name).await?;
    let eviction = if ctx.body.is_empty() {
        json!({})
    } else {
        body::decode(ctx.content_type(), &ctx.body)?
    };
    let pdbs =
        resources::find("policy", "v1", "poddisruptionbudgets").expect("pdbs are in the table");
    let page = ctx
        .state
        .store
        .list(&pdbs.list_prefix(Some(&info.namespace)), None, 0, 0)
        .await?;
    let labels = labels_of(&pod.value);
    for pdb in page.items {
        let Some(sel) = pdb
            .value
            .pointer("/spec/selector/matchLabels")
            .and_then(Value::as_object)
        else {
            continue;
        };
        let selects = !sel.is_empty()
            && sel
                .iter()
                .all(|(k, v)| labels.get(k).map(String::as_str) == v.as_str());
        let allowed = pdb
            .value
            .pointer("/status/disruptionsAllowed")
            .and_then(Value::as_i64)
            .unwrap_or(0);
        if selects && allowed < 1 {
            let name = meta_str(&pdb.value, "name");
            return Err(ApiError::new(
                429,
                "TooManyRequests",
                format!(
                    "Cannot evict pod as it would violate the pod's disruption budget. The disruption budget {name} needs {} healthy pods and has {} currently",
                    pdb.value
                        .pointer("/status/desiredHealthy")
                        .and_then(Value::as_i64)
                        .unwrap_or(0),
                    pdb.value
                        .pointer("/status/currentHealthy")
                        .and_then(Value::as_i64)
                        .unwrap_or(0)
                ),
            ));
        }
    }
    let o = DeleteOpts {
        grace: eviction
            .pointer("/deleteOptions/gracePeriodSeconds")
            .and_then(Value::as_i64),
        ..Default::default()
    };
    delete_one(&ctx.state, pods, &info.namespace, &info.name, &o).await?;
    let ok = json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Success", "code": 201});
    Ok(json_resp(201, &ok))
}

/// Binds a pod to a node, as the scheduler does (`pods/binding` or `bindings`): sets
/// `spec.nodeName` once and records the PodScheduled condition. Mirrors upstream's
/// `BindingREST`: a pod already bound, or being deleted, is a 409 Conflict.
async fn bind(ctx: &Ctx, pod: &str, binding: &Value) -> Result<Resp, ApiError> {
    let pods = resources::find("", "v1", "pods").expect("pods is in the table");
    let ns = &ctx.info.namespace;
    let node = binding
        .pointer("/target/name")
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_owned();
    if node.is_empty() || pod.is_empty() {
        return Err(ApiError::invalid(
            "Binding",
            &target(pods, pod),
            &[("target.name".into(), "Required value".into())],
        ));
    }
    let key = pods.key(ns, pod);
    for _ in 0..5 {
        let current = fetch(&ctx.state, pods, ns, pod).await?;
        let mut obj = current.value.clone();
        let bound = obj
            .pointer("/spec/nodeName")
            .and_then(Value::as_str)
            .is_some_and(|n| !n.is_empty());
        if bound {
            let on = obj
                .pointer("/spec/nodeName")
                .and_then(Value::as_str)
                .unwrap_or_default();
            let mut e = ApiError::conflict(&target(pods, pod));
            e.message = format!(
                "Operation cannot be fulfilled on pods/binding \"{pod}\": pod {pod} is already assigned to node \"{on}\""
            );
            return Err(e);
        }
        if obj.pointer("/metadata/deletionTimestamp").is_some() {
            let mut e = ApiError::conflict(&target(pods, pod));
            e.message = format!(
                "Operation cannot be fulfilled on pods/binding \"{pod}\": pod {pod} is being deleted, cannot be assigned to a host"
            );
            return Err(e);
        }
        obj["spec"]["nodeName"] = node.clone().into();
        let mut conditions: Vec<Value> = obj
            .pointer("/status/conditions")
            .and_then(Value::as_array)
            .cloned()
            .unwrap_or_default();
        conditions.retain(|c| c.get("type").and_then(Value::as_str) != Some("PodScheduled"));
        conditions.push(json!({"type": "PodScheduled", "status": "True", "lastProbeTime": null, "lastTransitionTime": now()}));
        obj["status"]["conditions"] = conditions.into();
        if let Written::Ok(_) = ctx
            .state
            .store
            .update(&key, &obj, current.mod_revision)
            .await?
        {
            let ok = json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Success", "code": 201});
            return Ok(json_resp(201, &ok));
        }
    }
    Err(ApiError::conflict(&target(pods, pod)))
}

/// A Scale object for deployments and replicasets, as `kubectl scale` reads and writes.
fn scale_of(obj: &Value) -> Value {
    let selector = obj
        .pointer("/spec/selector/matchLabels")
        .and_then(Value::as_object)
        .map(|m| {
            m.iter()
                .map(|(k, v)| format!("{k}={}", v.as_str().unwrap_or_default()))
                .collect::<Vec<_>>()
                .join(",")
        })
        .unwrap_or_default();
    let meta = obj.get("metadata").cloned().unwrap_or_default();
    json!({
        "kind": "Scale",
        "apiVersion": "autoscaling/v1",
        "metadata": {
            "name": meta.get("name"), "namespace": meta.get("namespace"), "uid": meta.get("uid"),
            "resourceVersion": meta.get("resourceVersion"), "creationTimestamp": meta.get("creationTimestamp"),
        },
        "spec": {"replicas": obj.pointer("/spec/replicas").cloned().unwrap_or(json!(0))},
        "status": {"replicas": obj.pointer("/status/replicas").cloned().unwrap_or(json!(0)), "selector": selector},
    })
}

async fn scale_get(ctx: &Ctx, res: &Resource) -> Result<Resp, ApiError> {
    let item = fetch(&ctx.state, res, &ctx.info.namespace, &ctx.info.name).await?;
    Ok(json_resp(200, &scale_of(&item.value)))
}

async fn scale_write(ctx: &Ctx, res: &Resource) -> Result<Resp, ApiError> {
    let info = &ctx.info;
    let key = res.key(&info.namespace, &info.name);
    for _ in 0..5 {
        let current = fetch(&ctx.state, res, &info.namespace, &info.name).await?;
        let scale = scale_of(&current.value);
        let new_scale = if info.verb == "patch" {
            let kind = patch::PatchType::from_content_type(ctx.content_type())?;
            patch::apply(kind, &scale, &ctx.body)?
        } else {
            body::decode(ctx.content_type(), &ctx.body)?
        };
        let rv = meta_str(&new_scale, "resourceVersion").to_owned();
        if !rv.is_empty() && rv != current.mod_revision.to_string() {
            return Err(ApiError::conflict(&target(res, &info.name)));
        }
        let Some(replicas) = new_scale.pointer("/spec/replicas").and_then(Value::as_i64) else {
            return Err(ApiError::invalid(
                "Scale",
                &target(res, &info.name),
                &[("spec.replicas".into(), "Required value".into())],
            ));
        };
        if replicas < 0 {
            return Err(ApiError::invalid(
                "Scale",
                &target(res, &info.name),
                &[(
                    "spec.replicas".into(),
                    format!("Invalid value: {replicas}: must be greater than or equal to 0"),
                )],
            ));
        }
        let mut new = current.value.clone();
        new["spec"]["replicas"] = replicas.into();
        let new = merge_for_update(res, &current.value, new, "");
        if let Some(v) = write_update(&ctx.state, res, &key, &current, new).await? {
            return Ok(json_resp(200, &scale_of(&v)));
        }
    }
    Err(ApiError::conflict(&target(res, &info.name)))
}

/// DeleteOptions from the body and the query.
#[derive(Debug, Default, Clone)]
pub struct DeleteOpts {
    pub grace: Option<i64>,
    pub propagation: Option<String>,
    pub uid: Option<String>,
    pub resource_version: Option<String>,
}

fn delete_opts(ctx: &Ctx) -> Result<DeleteOpts, ApiError> {
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
fn returns_deleted_object(res: &Resource) -> bool {
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
            if already {
                return Ok(obj);
            }
            meta_mut(&mut obj).insert("deletionTimestamp".into(), now().into());
            meta_mut(&mut obj).insert("deletionGracePeriodSeconds".into(), 0.into());
            obj["status"] = json!({"phase": "Terminating"});
            if let Some(v) = write_update(state, res, &key, &current, obj).await? {
                tokio::spawn(finalize_namespace(state.clone(), name.to_owned()));
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

async fn delete(ctx: &Ctx, res: &'static Resource) -> Result<Resp, ApiError> {
    let o = delete_opts(ctx)?;
    if dry_run(ctx) {
        let item = fetch(&ctx.state, res, &ctx.info.namespace, &ctx.info.name).await?;
        return Ok(json_resp(200, &item.value));
    }
    let v = delete_one(&ctx.state, res, &ctx.info.namespace, &ctx.info.name, &o).await?;
    Ok(json_resp(200, &v))
}

async fn delete_collection(ctx: &Ctx, res: &'static Resource) -> Result<Resp, ApiError> {
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

/// Empties a terminating namespace, then removes its `kubernetes` finalizer.
///
/// Upstream, the namespace controller in kube-controller-manager does this; klab's API server
/// does it itself until klab's controllers exist, through the same delete path as a client
/// (graceful pods and finalizers are honoured, so the namespace waits for them).
pub fn finalize_namespace(
    state: Arc<State>,
    ns: String,
) -> std::pin::Pin<Box<dyn std::future::Future<Output = ()> + Send>> {
    Box::pin(finalize_namespace_loop(state, ns))
}

async fn finalize_namespace_loop(state: Arc<State>, ns: String) {
    let nsres = resources::find("", "v1", "namespaces").expect("namespaces is in the table");
    loop {
        let mut left = 0;
        for res in RESOURCES.iter().filter(|r| r.namespaced && r.is_stored()) {
            let Ok(page) = state
                .store
                .list(&res.list_prefix(Some(&ns)), None, 0, 0)
                .await
            else {
                left += 1;
                continue;
            };
            for it in page.items {
                left += 1;
                let name = meta_str(&it.value, "name").to_owned();
                let _ = delete_one(&state, res, &ns, &name, &DeleteOpts::default()).await;
            }
        }
        if left == 0 {
            let Ok(Some(current)) = state.store.get(&nsres.key("", &ns)).await else {
                return;
            };
            let mut obj = current.value.clone();
            obj["spec"]["finalizers"] = json!([]);
            if let Ok(Some(_)) =
                write_update(&state, nsres, &nsres.key("", &ns), &current, obj).await
            {
                return;
            }
        }
        tokio::time::sleep(std::time::Duration::from_secs(1)).await;
        if !matches!(state.store.get(&nsres.key("", &ns)).await, Ok(Some(_))) {
            return;
        }
    }
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
