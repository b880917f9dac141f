//! `/openapi/v3`: which operations and query parameters the server supports, without schemas.
//!
//! Mirrors the shape of upstream's OpenAPI v3 discovery (`/openapi/v3` lists one document per
//! group-version; each document has the REST paths with their operations, tagged with
//! `x-kubernetes-group-version-kind` and `x-kubernetes-action`). kubectl reads it to learn that
//! PATCH accepts `fieldValidation`, and then leaves validation to the server (see
//! [`strict`]). Component schemas are not built, so `kubectl explain` does not work, and
//! `/openapi/v2` is not served.

use serde_json::{Map, Value, json};

use crate::api::resources::{RESOURCES, Resource};

fn param(name: &str) -> Value {
    json!({"name": name, "in": "query", "schema": {"type": "string", "uniqueItems": true}})
}

fn op(r: &Resource, action: &str, params: &[&str]) -> Value {
    json!({
        "operationId": format!("{action}{}", r.kind),
        "x-kubernetes-action": action,
        "x-kubernetes-group-version-kind": {"group": r.group, "version": r.version, "kind": r.kind},
        "parameters": params.iter().map(|p| param(p)).collect::<Vec<_>>(),
        "responses": {"200": {"description": "OK"}},
    })
}

fn gv_path(group: &str, version: &str) -> String {
    if group.is_empty() {
        format!("api/{version}")
    } else {
        format!("apis/{group}/{version}")
    }
}

/// The `/openapi/v3` index.
pub fn index() -> Value {
    let mut paths = Map::new();
    for r in RESOURCES {
        let p = gv_path(r.group, r.version);
        paths.insert(
            p.clone(),
            json!({"serverRelativeURL": format!("/openapi/v3/{p}")}),
        );
    }
    json!({"paths": paths})
}

/// One group-version's document, or `None` if nothing is served there.
pub fn document(gv: &str) -> Option<Value> {
    let write = ["dryRun", "fieldManager", "fieldValidation"];
    let mut paths = Map::new();
    for r in RESOURCES
        .iter()
        .filter(|r| gv_path(r.group, r.version) == gv)
    {
        let base = format!("/{gv}");
        let (collection, item) = if r.namespaced {
            (
                format!("{base}/namespaces/{{namespace}}/{}", r.plural),
                format!("{base}/namespaces/{{namespace}}/{}/{{name}}", r.plural),
            )
        } else {
            (
                format!("{base}/{}", r.plural),
                format!("{base}/{}/{{name}}", r.plural),
            )
        };
        let mut c = Map::new();
        if r.verbs.contains(&"list") {
            c.insert(
                "get".into(),
                op(
                    r,
                    "list",
                    &[
                        "labelSelector",
                        "fieldSelector",
                        "limit",
                        "continue",
                        "watch",
                        "resourceVersion",
                    ],
                ),
            );
        }
        c.insert("post".into(), op(r, "post", &write));
        paths.insert(collection, Value::Object(c));
        if r.verbs.contains(&"get") {
            paths.insert(
                item,
                json!({
                    "get": op(r, "get", &[]),
                    "put": op(r, "put", &write),
                    "patch": op(r, "patch", &["dryRun", "fieldManager", "fieldValidation", "force"]),
                    "delete": op(r, "delete", &["dryRun", "gracePeriodSeconds", "propagationPolicy"]),
                }),
            );
        }
    }
    if paths.is_empty() {
        return None;
    }
    Some(json!({
        "openapi": "3.0.0",
        "info": {"title": "Kubernetes (klab)", "version": format!("v1.{}.0", super::discovery::KUBE_MINOR)},
        "paths": paths,
        "components": {"schemas": {}},
    }))
}

/// `fieldValidation=Strict` as far as klab knows the fields: top-level fields per kind and
/// `metadata`'s fields. Deeper unknown fields are kept, as with `Ignore`.
pub mod strict {
    use serde_json::Value;

    const META: &[&str] = &[
        "name",
        "generateName",
        "namespace",
        "selfLink",
        "uid",
        "resourceVersion",
        "generation",
        "creationTimestamp",
        "deletionTimestamp",
        "deletionGracePeriodSeconds",
        "labels",
        "annotations",
        "ownerReferences",
        "finalizers",
        "managedFields",
    ];

    fn top(kind: &str) -> &'static [&'static str] {
        match kind {
            "ConfigMap" => &["data", "binaryData", "immutable"],
            "Secret" => &["data", "stringData", "type", "immutable"],
            "ServiceAccount" => &[
                "secrets",
                "imagePullSecrets",
                "automountServiceAccountToken",
            ],
            "Endpoints" => &["subsets"],
            "Event" => &[
                "involvedObject",
                "reason",
                "message",
                "source",
                "firstTimestamp",
                "lastTimestamp",
                "count",
                "type",
                "eventTime",
                "series",
                "action",
                "related",
                "reportingComponent",
                "reportingInstance",
            ],
            "EndpointSlice" => &["addressType", "endpoints", "ports"],
            "Role" | "ClusterRole" => &["rules", "aggregationRule"],
            "RoleBinding" | "ClusterRoleBinding" => &["subjects", "roleRef"],
            "StorageClass" => &[
                "provisioner",
                "parameters",
                "reclaimPolicy",
                "mountOptions",
                "allowVolumeExpansion",
                "volumeBindingMode",
                "allowedTopologies",
            ],
            "PriorityClass" => &["value", "globalDefault", "description", "preemptionPolicy"],
            "RuntimeClass" => &["handler", "overhead", "scheduling"],
            "ControllerRevision" => &["data", "revision"],
            "PodTemplate" => &["template"],
            _ => &["spec", "status"],
        }
    }

    /// The unknown fields of `obj`, as upstream names them (`.spec.foo` style, without dot).
    pub fn unknown_fields(kind: &str, obj: &Value) -> Vec<String> {
        let mut out = Vec::new();
        let Some(m) = obj.as_object() else {
            return out;
        };
        for k in m.keys() {
            if !["apiVersion", "kind", "metadata"].contains(&k.as_str())
                && !top(kind).contains(&k.as_str())
            {
                out.push(k.clone());
            }
        }
        if let Some(meta) = m.get("metadata").and_then(Value::as_object) {
            for k in meta.keys().filter(|k| !META.contains(&k.as_str())) {
                out.push(format!("metadata.{k}"));
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn documents_carry_patch_with_field_validation() {
        let d = document("apis/apps/v1").unwrap();
        let patch = &d["paths"]["/apis/apps/v1/namespaces/{namespace}/deployments/{name}"]["patch"];
        assert_eq!(
            patch["x-kubernetes-group-version-kind"]["kind"],
            "Deployment"
        );
        assert!(
            patch["parameters"]
                .as_array()
                .unwrap()
                .iter()
                .any(|p| p["name"] == "fieldValidation")
        );
        assert!(document("apis/nope/v1").is_none());
        assert!(index()["paths"]["api/v1"].is_object());
    }

    #[test]
    fn strict_top_level() {
        let bad = json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "a", "nmae": "b"}, "dta": {}});
        assert_eq!(
            strict::unknown_fields("ConfigMap", &bad),
            ["dta", "metadata.nmae"]
        );
    }
}
