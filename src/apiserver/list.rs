//! LIST: label and field selectors, and paging with continue tokens, read from etcd at one
//! revision.
//!
//! Mirrors the apiserver's list path (`registry/generic/registry.Store.List` over
//! `storage/etcd3.GetList`): `limit` and `continue` (a token holding the revision and the next
//! key, so every page comes from the same snapshot; a compacted revision is 410 Expired),
//! `resourceVersionMatch=Exact`, `remainingItemCount`, and the field selectors each resource
//! supports. Leaves out the watch cache that upstream serves most lists from.

use base64::Engine;
use serde_json::{Value, json};

use super::handler::{Ctx, Resp, json as json_resp};
use super::rest::labels_of;
use super::status::ApiError;
use super::storage::StorageError;
use super::{State, table};
use crate::api::resources::Resource;
use crate::api::selector::{self, FieldTerm, LabelSelector};

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
pub(super) fn field_path(res: &Resource, field: &str) -> Option<&'static str> {
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

pub(super) fn field_value(obj: &Value, path: &str) -> String {
    match obj.pointer(path) {
        Some(Value::String(s)) => s.clone(),
        Some(Value::Bool(b)) => b.to_string(),
        Some(Value::Number(n)) => n.to_string(),
        _ if path == "/spec/unschedulable" => "false".into(),
        _ => String::new(),
    }
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
pub(super) struct ContinueToken {
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

pub(super) async fn list(ctx: &Ctx, res: &Resource) -> Result<Resp, ApiError> {
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
