//! PATCH bodies: JSON patch (RFC 6902), JSON merge patch (RFC 7386) and strategic merge patch.
//!
//! Strategic merge patch mirrors apimachinery's `strategicpatch` for what kubectl's
//! `apply`, `edit`, `set image` and friends send for built-in kinds: lists of objects merged by
//! their patch merge key (containers and volumes by `name`, container ports by
//! `containerPort`, service ports by `port`, …), `finalizers` merged as a set, and the
//! `$patch: delete|replace`, `$deleteFromPrimitiveList/…`, `$setElementOrder/…` and
//! `$retainKeys` directives. The merge keys come from a table keyed by field name, not from
//! OpenAPI. Server-side apply (`application/apply-patch+yaml`) is not built.

use serde_json::{Map, Value};

use super::status::ApiError;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PatchType {
    Json,
    Merge,
    Strategic,
}

impl PatchType {
    pub fn from_content_type(ct: &str) -> Result<PatchType, ApiError> {
        match ct.split(';').next().unwrap_or_default().trim() {
            "application/json-patch+json" => Ok(PatchType::Json),
            "application/merge-patch+json" => Ok(PatchType::Merge),
            "application/strategic-merge-patch+json" => Ok(PatchType::Strategic),
            "application/apply-patch+yaml" | "application/apply-patch+cbor" => Err(ApiError::new(
                415,
                "UnsupportedMediaType",
                "server-side apply (application/apply-patch+yaml) is not built in klab yet: use client-side `kubectl apply`",
            )),
            other => Err(ApiError::new(
                415,
                "UnsupportedMediaType",
                format!(
                    "the body of the request was in an unknown format - accepted media types include: application/json-patch+json, application/merge-patch+json, application/strategic-merge-patch+json; got {other:?}"
                ),
            )),
        }
    }
}

/// Applies a patch body to `target`.
pub fn apply(kind: PatchType, target: &Value, body: &[u8]) -> Result<Value, ApiError> {
    let patch: Value = serde_json::from_slice(body)
        .map_err(|e| ApiError::bad_request(format!("error decoding patch: {e}")))?;
    match kind {
        PatchType::Merge => {
            if !patch.is_object() {
                return Err(ApiError::bad_request("a merge patch must be a JSON object"));
            }
            Ok(merge(target, &patch))
        }
        PatchType::Strategic => {
            if !patch.is_object() {
                return Err(ApiError::bad_request(
                    "a strategic merge patch must be a JSON object",
                ));
            }
            Ok(strategic(target, &patch, ""))
        }
        PatchType::Json => json_patch(target, &patch),
    }
}

/// RFC 7386: objects merge recursively, `null` deletes, anything else replaces.
pub fn merge(target: &Value, patch: &Value) -> Value {
    let Value::Object(p) = patch else {
        return patch.clone();
    };
    let mut out = target.as_object().cloned().unwrap_or_default();
    for (k, v) in p {
        if v.is_null() {
            out.remove(k);
        } else {
            let merged = merge(out.get(k).unwrap_or(&Value::Null), v);
            out.insert(k.clone(), merged);
        }
    }
    Value::Object(out)
}

/// The patch merge key of a list field, from upstream's `patchMergeKey` tags; `has` says
/// whether the list's items carry a field (`ports` of containers and of services differ).
/// `/openapi/v2` publishes the same keys, so `kubectl apply` patches as the server merges.
pub(super) fn merge_key(field: &str, has: impl Fn(&str) -> bool) -> Option<&'static str> {
    let key = match field {
        "containers"
        | "initContainers"
        | "ephemeralContainers"
        | "env"
        | "volumes"
        | "imagePullSecrets"
        | "readinessGates" => "name",
        "volumeMounts" => "mountPath",
        "volumeDevices" => "devicePath",
        "hostAliases" => "ip",
        "ownerReferences" => "uid",
        "conditions" | "addresses" => "type",
        "taints" => "key",
        "ports" => {
            if has("containerPort") {
                "containerPort"
            } else {
                "port"
            }
        }
        _ => return None,
    };
    Some(key)
}

/// Lists of scalars that upstream merges as sets rather than replaces.
pub(super) fn is_set_list(field: &str) -> bool {
    field == "finalizers"
}

fn strategic(target: &Value, patch: &Value, _field: &str) -> Value {
    let Value::Object(p) = patch else {
        return patch.clone();
    };
    if p.get("$patch").and_then(Value::as_str) == Some("replace") {
        let mut p = p.clone();
        p.remove("$patch");
        return Value::Object(p);
    }
    let mut out = target.as_object().cloned().unwrap_or_default();
    for (k, v) in p {
        if k == "$retainKeys" || k == "$patch" || k.starts_with("$setElementOrder/") {
            continue;
        }
        if let Some(field) = k.strip_prefix("$deleteFromPrimitiveList/") {
            let drop: Vec<&Value> = v.as_array().map(|a| a.iter().collect()).unwrap_or_default();
            if let Some(list) = out.get_mut(field).and_then(Value::as_array_mut) {
                list.retain(|x| !drop.contains(&x));
            }
            continue;
        }
        if v.is_null() {
            out.remove(k);
            continue;
        }
        let current = out.get(k).cloned().unwrap_or(Value::Null);
        let merged = match (v, &current) {
            (Value::Array(pl), Value::Array(cl)) => merge_list(k, cl, pl),
            (Value::Array(pl), _) => Value::Array(
                pl.iter()
                    .filter(|i| i.get("$patch").is_none())
                    .cloned()
                    .collect(),
            ),
            (Value::Object(_), _) => strategic(&current, v, k),
            _ => v.clone(),
        };
        out.insert(k.clone(), merged);
    }
    Value::Object(out)
}

fn merge_list(field: &str, current: &[Value], patch: &[Value]) -> Value {
    if is_set_list(field) {
        let mut out = current.to_vec();
        for p in patch {
            if !out.contains(p) {
                out.push(p.clone());
            }
        }
        return Value::Array(out);
    }
    let Some(key) = merge_key(field, |k| patch.iter().any(|i| i.get(k).is_some())) else {
        return Value::Array(patch.to_vec());
    };
    let mut out = current.to_vec();
    for p in patch {
        let id = p.get(key);
        let pos = out.iter().position(|c| id.is_some() && c.get(key) == id);
        let delete = p.get("$patch").and_then(Value::as_str) == Some("delete");
        match (pos, delete) {
            (Some(i), true) => {
                out.remove(i);
            }
            (Some(i), false) => out[i] = strategic(&out[i], p, field),
            (None, true) => {}
            (None, false) => out.push(strategic(&Value::Null, p, field)),
        }
    }
    Value::Array(out)
}

fn bad_op(msg: impl Into<String>) -> ApiError {
    ApiError::new(422, "Invalid", msg)
}

fn unescape(token: &str) -> String {
    token.replace("~1", "/").replace("~0", "~")
}

/// Splits a JSON pointer into its parent pointer and last token.
fn split_pointer(path: &str) -> Result<(String, String), ApiError> {
    let Some(idx) = path.rfind('/') else {
        return Err(bad_op(format!("invalid JSON pointer {path:?}")));
    };
    Ok((path[..idx].to_owned(), unescape(&path[idx + 1..])))
}

fn add(doc: &mut Value, path: &str, value: Value) -> Result<(), ApiError> {
    if path.is_empty() {
        *doc = value;
        return Ok(());
    }
    let (parent, last) = split_pointer(path)?;
    match doc.pointer_mut(&parent) {
        Some(Value::Object(m)) => {
            m.insert(last, value);
            Ok(())
        }
        Some(Value::Array(a)) => {
            let idx = if last == "-" {
                a.len()
            } else {
                last.parse::<usize>()
                    .ok()
                    .filter(|i| *i <= a.len())
                    .ok_or_else(|| bad_op(format!("add operation: index {last} out of range")))?
            };
            a.insert(idx, value);
            Ok(())
        }
        _ => Err(bad_op(format!(
            "add operation does not apply: doc is missing path: \"{path}\": missing value"
        ))),
    }
}

fn remove(doc: &mut Value, path: &str) -> Result<Value, ApiError> {
    let (parent, last) = split_pointer(path)?;
    let missing = || {
        bad_op(format!(
            "remove operation does not apply: doc is missing path: \"{path}\": missing value"
        ))
    };
    match doc.pointer_mut(&parent) {
        Some(Value::Object(m)) => m.shift_remove(&last).ok_or_else(missing),
        Some(Value::Array(a)) => {
            let i = last
                .parse::<usize>()
                .ok()
                .filter(|i| *i < a.len())
                .ok_or_else(missing)?;
            Ok(a.remove(i))
        }
        _ => Err(missing()),
    }
}

/// RFC 6902 JSON patch.
pub fn json_patch(target: &Value, patch: &Value) -> Result<Value, ApiError> {
    let ops = patch
        .as_array()
        .ok_or_else(|| ApiError::bad_request("a JSON patch must be an array of operations"))?;
    let mut doc = target.clone();
    for op in ops {
        let name = op.get("op").and_then(Value::as_str).unwrap_or_default();
        let path = op.get("path").and_then(Value::as_str).unwrap_or_default();
        let value = || {
            op.get("value")
                .cloned()
                .ok_or_else(|| bad_op(format!("{name} operation needs a value")))
        };
        let from = || {
            op.get("from")
                .and_then(Value::as_str)
                .ok_or_else(|| bad_op(format!("{name} operation needs from")))
        };
        match name {
            "add" => add(&mut doc, path, value()?)?,
            "remove" => {
                remove(&mut doc, path)?;
            }
            "replace" => {
                remove(&mut doc, path)?;
                add(&mut doc, path, value()?)?;
            }
            "move" => {
                let v = remove(&mut doc, from()?)?;
                add(&mut doc, path, v)?;
            }
            "copy" => {
                let v = doc
                    .pointer(from()?)
                    .cloned()
                    .ok_or_else(|| bad_op("copy operation: from is missing"))?;
                add(&mut doc, path, v)?;
            }
            "test" => {
                if doc.pointer(path) != Some(&value()?) {
                    return Err(bad_op(format!("testing value {path} failed")));
                }
            }
            other => return Err(bad_op(format!("Unexpected kind: {other}"))),
        }
    }
    Ok(doc)
}

/// Keeps `Map` in scope for readers: objects are `serde_json::Map`s in insertion order.
pub type Object = Map<String, Value>;

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn merge_patch() {
        let t = json!({"metadata": {"labels": {"a": "1", "b": "2"}}, "spec": {"x": 1}});
        let p = json!({"metadata": {"labels": {"a": null, "c": "3"}}});
        assert_eq!(
            merge(&t, &p),
            json!({"metadata": {"labels": {"b": "2", "c": "3"}}, "spec": {"x": 1}})
        );
    }

    #[test]
    fn strategic_merges_containers_by_name() {
        let t = json!({"spec": {"containers": [{"name": "a", "image": "x:1"}, {"name": "b", "image": "y:1"}], "finalizers": ["f1"]}});
        let p = json!({"spec": {"$setElementOrder/containers": [{"name": "a"}, {"name": "b"}], "containers": [{"name": "b", "image": "y:2"}, {"name": "c", "image": "z"}], "finalizers": ["f2"]}});
        let got = strategic(&t, &p, "");
        assert_eq!(got["spec"]["containers"][1]["image"], "y:2");
        assert_eq!(got["spec"]["containers"][2]["name"], "c");
        assert_eq!(got["spec"]["containers"][0]["image"], "x:1");
        assert_eq!(got["spec"]["finalizers"], json!(["f1", "f2"]));
        let del = json!({"spec": {"containers": [{"name": "a", "$patch": "delete"}]}});
        assert_eq!(
            strategic(&got, &del, "")["spec"]["containers"]
                .as_array()
                .unwrap()
                .len(),
            2
        );
    }

    #[test]
    fn json_patch_ops() {
        let t = json!({"a": [1, 2], "b": {"c": 1}});
        let p = json!([{"op": "add", "path": "/a/-", "value": 3}, {"op": "replace", "path": "/b/c", "value": 2}, {"op": "remove", "path": "/a/0"}, {"op": "test", "path": "/b/c", "value": 2}]);
        assert_eq!(
            json_patch(&t, &p).unwrap(),
            json!({"a": [2, 3], "b": {"c": 2}})
        );
        assert_eq!(
            json_patch(&t, &json!([{"op": "remove", "path": "/zz"}]))
                .unwrap_err()
                .code,
            422
        );
    }
}
