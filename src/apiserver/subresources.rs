//! Subresources with their own verbs: `serviceaccounts/token`, `pods/eviction`,
//! `pods/binding` (and `bindings`), and `scale`.
//!
//! Mirrors upstream's TokenREST, EvictionREST, BindingREST and ScaleREST: each reads the
//! parent object and writes it (or a token) back through the same optimistic transaction.

use serde_json::{Value, json};

use super::delete::{DeleteOpts, delete_one};
use super::handler::{Ctx, Resp, json as json_resp};
use super::rest::{fetch, labels_of, meta_str, now, target};
use super::status::ApiError;
use super::storage::Written;
use super::write::{merge_for_update, write_update};
use super::{body, patch};
use crate::api::resources::{self, Resource};

/// TokenRequest (`kubectl create token SA`): a signed, expiring token for a service account.
pub(super) async fn token_request(ctx: &Ctx, res: &Resource) -> Result<Resp, ApiError> {
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
pub(super) async fn evict(ctx: &Ctx, pods: &'static Resource) -> Result<Resp, ApiError> {
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
/// `BindingREST`: a pod already bound, or being deleted, is a 409 Conflict; the Binding's
/// annotations are copied onto the pod.
pub(super) async fn bind(ctx: &Ctx, pod: &str, binding: &Value) -> Result<Resp, ApiError> {
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
        // Upstream's setPodHostAndAnnotations: the Binding's annotations land on the pod.
        if let Some(extra) = binding
            .pointer("/metadata/annotations")
            .and_then(Value::as_object)
        {
            if !obj["metadata"]["annotations"].is_object() {
                obj["metadata"]["annotations"] = json!({});
            }
            for (k, v) in extra {
                obj["metadata"]["annotations"][k] = v.clone();
            }
        }
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
pub(super) fn scale_of(obj: &Value) -> Value {
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

pub(super) async fn scale_get(ctx: &Ctx, res: &Resource) -> Result<Resp, ApiError> {
    let item = fetch(&ctx.state, res, &ctx.info.namespace, &ctx.info.name).await?;
    Ok(json_resp(200, &scale_of(&item.value)))
}

pub(super) async fn scale_write(ctx: &Ctx, res: &Resource) -> Result<Resp, ApiError> {
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
