//! The OpenAPI definitions of every served kind, derived once from k8s-openapi's `schemars` impls.
//!
//! Mirrors the `definitions` of upstream's `/openapi/v2` (kube-openapi's generated
//! `GetOpenAPIDefinitions`): one schema per Go type under upstream's names
//! (`io.k8s.api.core.v1.Pod`, `io.k8s.apimachinery.pkg.apis.meta.v1.ObjectMeta`), with
//! upstream's descriptions, `x-kubernetes-group-version-kind` on the kinds, and the
//! strategic-merge-patch extensions (`x-kubernetes-patch-merge-key`/`-strategy`) that client-side
//! `kubectl apply` reads. k8s-openapi carries upstream's names and descriptions but not the patch
//! tags, so those come from the table the server's own strategic merge patch uses
//! ([`super::super::patch::merge_key`]): the client computes its patch with the same keys the
//! server merges by. List kinds (`PodList`) are not described.

use k8s_openapi::Resource as Kind;
use schemars::{JsonSchema, SchemaGenerator, generate::SchemaSettings};
use serde_json::{Map, Value, json};

use super::super::patch;

/// One top-level kind: its group, version, kind and definition name.
#[derive(Debug, Clone)]
pub struct Gvk {
    pub group: &'static str,
    pub version: &'static str,
    pub kind: &'static str,
    pub name: String,
}

fn kind<T: JsonSchema + Kind>(g: &mut SchemaGenerator) -> Gvk {
    g.subschema_for::<T>();
    Gvk {
        group: T::GROUP,
        version: T::VERSION,
        kind: T::KIND,
        name: T::schema_name().into_owned(),
    }
}

/// Every kind in [`crate::api::resources::RESOURCES`] and the kinds its subresources take.
fn kinds(g: &mut SchemaGenerator) -> Vec<Gvk> {
    use k8s_openapi::api::{
        apps, authentication, authorization, autoscaling, batch, coordination, core, discovery,
        events, networking, node, policy, rbac, scheduling, storage,
    };
    type Add = fn(&mut SchemaGenerator) -> Gvk;
    let all: &[Add] = &[
        kind::<core::v1::Namespace>,
        kind::<core::v1::Node>,
        kind::<core::v1::Pod>,
        kind::<core::v1::Binding>,
        kind::<core::v1::Service>,
        kind::<core::v1::Endpoints>,
        kind::<core::v1::ConfigMap>,
        kind::<core::v1::Secret>,
        kind::<core::v1::ServiceAccount>,
        kind::<core::v1::Event>,
        kind::<core::v1::ReplicationController>,
        kind::<core::v1::PersistentVolumeClaim>,
        kind::<core::v1::PersistentVolume>,
        kind::<core::v1::LimitRange>,
        kind::<core::v1::ResourceQuota>,
        kind::<core::v1::PodTemplate>,
        kind::<apps::v1::Deployment>,
        kind::<apps::v1::ReplicaSet>,
        kind::<apps::v1::DaemonSet>,
        kind::<apps::v1::StatefulSet>,
        kind::<apps::v1::ControllerRevision>,
        kind::<batch::v1::Job>,
        kind::<batch::v1::CronJob>,
        kind::<autoscaling::v2::HorizontalPodAutoscaler>,
        kind::<autoscaling::v1::Scale>,
        kind::<policy::v1::PodDisruptionBudget>,
        kind::<policy::v1::Eviction>,
        kind::<coordination::v1::Lease>,
        kind::<discovery::v1::EndpointSlice>,
        kind::<events::v1::Event>,
        kind::<networking::v1::Ingress>,
        kind::<networking::v1::IngressClass>,
        kind::<networking::v1::NetworkPolicy>,
        kind::<storage::v1::StorageClass>,
        kind::<scheduling::v1::PriorityClass>,
        kind::<node::v1::RuntimeClass>,
        kind::<rbac::v1::ClusterRole>,
        kind::<rbac::v1::ClusterRoleBinding>,
        kind::<rbac::v1::Role>,
        kind::<rbac::v1::RoleBinding>,
        kind::<authentication::v1::SelfSubjectReview>,
        kind::<authentication::v1::TokenReview>,
        kind::<authentication::v1::TokenRequest>,
        kind::<authorization::v1::SelfSubjectAccessReview>,
        kind::<authorization::v1::SelfSubjectRulesReview>,
        kind::<authorization::v1::SubjectAccessReview>,
    ];
    all.iter().map(|add| add(g)).collect()
}

/// The definitions in `/openapi/v2` form (`#/definitions/…` refs), and the kinds among them.
pub fn build() -> (Map<String, Value>, Vec<Gvk>) {
    let settings = SchemaSettings::draft2020_12().with(|s| {
        s.definitions_path = "/definitions".into();
        s.meta_schema = None;
    });
    let mut g = SchemaGenerator::new(settings);
    let gvks = kinds(&mut g);
    let mut defs = g.take_definitions(false);
    for (name, schema) in defs.iter_mut() {
        to_upstream_v2(name, schema);
    }
    annotate_patch(&mut defs);
    for k in &gvks {
        if let Some(Value::Object(d)) = defs.get_mut(&k.name) {
            d.insert(
                "x-kubernetes-group-version-kind".into(),
                json!([{"group": k.group, "kind": k.kind, "version": k.version}]),
            );
        }
    }
    (defs, gvks)
}

/// Where k8s-openapi's schema of a type differs from what upstream publishes in v2.
///
/// `IntOrString` and `Quantity` carry only `x-kubernetes-int-or-string`; upstream (and
/// kube-openapi's `proto` models, which need a type to validate against) say `type: string`,
/// `IntOrString` with `format: int-or-string`. k8s-openapi lists `metadata` as required on
/// every kind because its Rust field is not optional; upstream does not.
pub fn to_upstream_v2(name: &str, schema: &mut Value) {
    let Some(m) = schema.as_object_mut() else {
        return;
    };
    if m.contains_key("x-kubernetes-int-or-string") && !m.contains_key("type") {
        m.insert("type".into(), "string".into());
        if name.ends_with(".IntOrString") {
            m.insert("format".into(), "int-or-string".into());
        }
    }
    if let Some(Value::Array(req)) = m.get_mut("required") {
        req.retain(|r| r != "metadata");
        if req.is_empty() {
            m.remove("required");
        }
    }
}

/// The definition name a `#/definitions/…` reference points at.
fn ref_name(schema: &Value) -> Option<&str> {
    schema.get("$ref")?.as_str()?.strip_prefix("#/definitions/")
}

/// Adds `x-kubernetes-patch-merge-key`/`x-kubernetes-patch-strategy` to list properties that
/// klab's strategic merge patch merges by key (or as a set).
fn annotate_patch(defs: &mut Map<String, Value>) {
    let fields_of = |defs: &Map<String, Value>, name: &str| -> Vec<String> {
        defs.get(name)
            .and_then(|d| d.get("properties"))
            .and_then(Value::as_object)
            .map(|p| p.keys().cloned().collect())
            .unwrap_or_default()
    };
    let mut tags: Vec<(String, String, Value)> = Vec::new();
    for (def, schema) in defs.iter() {
        let Some(props) = schema.get("properties").and_then(Value::as_object) else {
            continue;
        };
        for (field, p) in props {
            if p.get("type").and_then(Value::as_str) != Some("array") {
                continue;
            }
            let ext = match p.get("items").and_then(ref_name) {
                Some(item) => {
                    let have = fields_of(defs, item);
                    patch::merge_key(field, |k| have.iter().any(|h| h == k))
                        .filter(|key| have.iter().any(|h| h == key))
                        .map(|key| json!({"x-kubernetes-patch-merge-key": key, "x-kubernetes-patch-strategy": "merge"}))
                }
                None => patch::is_set_list(field)
                    .then(|| json!({"x-kubernetes-patch-strategy": "merge"})),
            };
            if let Some(ext) = ext {
                tags.push((def.clone(), field.clone(), ext));
            }
        }
    }
    for (def, field, ext) in tags {
        let prop = defs
            .get_mut(&def)
            .and_then(|d| d.get_mut("properties"))
            .and_then(|p| p.get_mut(&field));
        if let (Some(Value::Object(prop)), Value::Object(ext)) = (prop, ext) {
            prop.extend(ext);
        }
    }
}

/// A schema in `/openapi/v3` form: refs point into `#/components/schemas/`, and a `$ref` with
/// siblings (a field's own description) becomes `allOf: [{$ref}]` beside them, as upstream's v3.
pub fn to_v3(schema: &mut Value) {
    match schema {
        Value::Object(m) => {
            if let Some(Value::String(r)) = m.get_mut("$ref") {
                if let Some(name) = r.strip_prefix("#/definitions/") {
                    *r = format!("#/components/schemas/{name}");
                }
                if m.len() > 1 {
                    let r = m.remove("$ref").unwrap_or_default();
                    m.insert("allOf".into(), json!([{"$ref": r}]));
                }
            }
            for v in m.values_mut() {
                to_v3(v);
            }
        }
        Value::Array(a) => a.iter_mut().for_each(to_v3),
        _ => {}
    }
}

/// The names of `roots` and every definition they reach through `$ref`.
pub fn closure<'a>(
    defs: &'a Map<String, Value>,
    roots: impl IntoIterator<Item = &'a str>,
) -> Vec<&'a str> {
    fn refs<'v>(v: &'v Value, out: &mut Vec<&'v str>) {
        match v {
            Value::Object(m) => {
                if let Some(n) = ref_name(v) {
                    out.push(n);
                }
                m.values().for_each(|c| refs(c, out));
            }
            Value::Array(a) => a.iter().for_each(|c| refs(c, out)),
            _ => {}
        }
    }
    let mut seen: Vec<&str> = Vec::new();
    let mut todo: Vec<&str> = roots.into_iter().collect();
    while let Some(n) = todo.pop() {
        let Some((name, schema)) = defs.get_key_value(n) else {
            continue;
        };
        if seen.contains(&name.as_str()) {
            continue;
        }
        seen.push(name);
        refs(schema, &mut todo);
    }
    seen.sort_unstable();
    seen
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::resources::RESOURCES;

    #[test]
    fn every_served_kind_has_a_definition_with_its_gvk() {
        let (defs, gvks) = build();
        for r in RESOURCES {
            let k = gvks
                .iter()
                .find(|k| k.group == r.group && k.version == r.version && k.kind == r.kind)
                .unwrap_or_else(|| panic!("no schema for {}", r.kind));
            assert_eq!(
                defs[&k.name]["x-kubernetes-group-version-kind"][0]["kind"],
                r.kind
            );
        }
        let pod = &defs["io.k8s.api.core.v1.Pod"];
        assert_eq!(
            pod["properties"]["metadata"]["$ref"],
            "#/definitions/io.k8s.apimachinery.pkg.apis.meta.v1.ObjectMeta"
        );
        assert!(pod.get("required").is_none());
        let containers = &defs["io.k8s.api.core.v1.PodSpec"]["properties"]["containers"];
        assert_eq!(containers["x-kubernetes-patch-merge-key"], "name");
        assert!(
            containers["description"]
                .as_str()
                .unwrap()
                .starts_with("List of containers")
        );
        let ports = &defs["io.k8s.api.core.v1.Container"]["properties"]["ports"];
        assert_eq!(ports["x-kubernetes-patch-merge-key"], "containerPort");
        let sports = &defs["io.k8s.api.core.v1.ServiceSpec"]["properties"]["ports"];
        assert_eq!(sports["x-kubernetes-patch-merge-key"], "port");
        let fin =
            &defs["io.k8s.apimachinery.pkg.apis.meta.v1.ObjectMeta"]["properties"]["finalizers"];
        assert_eq!(fin["x-kubernetes-patch-strategy"], "merge");
        let ios = &defs["io.k8s.apimachinery.pkg.util.intstr.IntOrString"];
        assert_eq!(
            (&ios["type"], &ios["format"]),
            (&json!("string"), &json!("int-or-string"))
        );
        // Every reference resolves.
        let all = closure(&defs, gvks.iter().map(|k| k.name.as_str()));
        assert!(all.len() > 100, "{}", all.len());
        assert_eq!(closure(&defs, all.iter().copied()).len(), all.len());
    }

    #[test]
    fn v3_form_moves_refs_and_wraps_siblings() {
        let mut s = json!({"properties": {
            "metadata": {"$ref": "#/definitions/io.k8s.apimachinery.pkg.apis.meta.v1.ObjectMeta", "description": "Standard object's metadata."},
            "items": {"type": "array", "items": {"$ref": "#/definitions/io.k8s.api.core.v1.Container"}},
        }});
        to_v3(&mut s);
        assert_eq!(
            s,
            json!({"properties": {
                "metadata": {"allOf": [{"$ref": "#/components/schemas/io.k8s.apimachinery.pkg.apis.meta.v1.ObjectMeta"}], "description": "Standard object's metadata."},
                "items": {"type": "array", "items": {"$ref": "#/components/schemas/io.k8s.api.core.v1.Container"}},
            }})
        );
    }

    #[test]
    fn upstream_v2_types_int_or_string_and_drops_required_metadata() {
        let mut ios = json!({"description": "d", "x-kubernetes-int-or-string": true});
        to_upstream_v2("io.k8s.apimachinery.pkg.util.intstr.IntOrString", &mut ios);
        assert_eq!(ios["type"], "string");
        assert_eq!(ios["format"], "int-or-string");
        let mut q = json!({"x-kubernetes-int-or-string": true});
        to_upstream_v2("io.k8s.apimachinery.pkg.api.resource.Quantity", &mut q);
        assert_eq!(
            q,
            json!({"x-kubernetes-int-or-string": true, "type": "string"})
        );
        let mut d = json!({"required": ["metadata", "spec"]});
        to_upstream_v2("io.k8s.api.x.v1.Y", &mut d);
        assert_eq!(d, json!({"required": ["spec"]}));
        let mut p = json!({"required": ["metadata"]});
        to_upstream_v2("io.k8s.api.core.v1.Pod", &mut p);
        assert_eq!(p, json!({}));
    }
}
