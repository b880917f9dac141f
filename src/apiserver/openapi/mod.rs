//! `/openapi/v2` and `/openapi/v3`: the API's operations and the schemas of its kinds.
//!
//! Mirrors kube-apiserver's OpenAPI endpoints (kube-openapi's `handler` and `handler3`).
//! `/openapi/v2` is one Swagger 2.0 document for the whole API, served as JSON or, when asked
//! with `Accept: application/com.github.proto-openapi.spec.v2@v1.0+protobuf` (what client-go's
//! discovery sends), as gnostic's protobuf ([`gnostic`]); kubectl 1.20 validates objects and
//! computes `apply` patches from it and `kubectl explain` prints its descriptions. `/openapi/v3`
//! lists one OpenAPI 3.0 document per group-version, each with its REST paths (tagged with
//! `x-kubernetes-group-version-kind` and `x-kubernetes-action`) and the `components.schemas`
//! they reach; kubectl 1.27+ reads it for `explain` and to learn that PATCH accepts
//! `fieldValidation`, leaving validation to the server, which checks every field against the
//! same schemas ([`strict`]). The schemas are
//! derived from k8s-openapi's types ([`schemas`]), built lazily on the first request and kept
//! as encoded bytes with upstream's ETag (the SHA-512 of the body). Left out: request and
//! response body schemas in the paths, List kinds, the gzip and v3 protobuf encodings.

pub mod gnostic;
pub mod schemas;

use std::sync::OnceLock;
use std::time::Instant;

use bytes::Bytes;
use http::HeaderMap;
use serde_json::{Map, Value, json};

use super::handler::{Resp, full};
use super::status::ApiError;
use crate::api::resources::{RESOURCES, Resource};

/// Which OpenAPI version a piece of the document is for.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Form {
    V2,
    V3,
}

fn param(form: Form, name: &str) -> Value {
    match form {
        Form::V3 => {
            json!({"name": name, "in": "query", "schema": {"type": "string", "uniqueItems": true}})
        }
        Form::V2 => json!({"name": name, "in": "query", "type": "string", "uniqueItems": true}),
    }
}

fn op(form: Form, r: &Resource, action: &str, params: &[&str]) -> Value {
    json!({
        "operationId": format!("{action}{}", r.kind),
        "x-kubernetes-action": action,
        "x-kubernetes-group-version-kind": {"group": r.group, "version": r.version, "kind": r.kind},
        "parameters": params.iter().map(|p| param(form, p)).collect::<Vec<_>>(),
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

/// The REST paths of the resources of one group-version (`api/v1`), or of all of them.
fn paths(form: Form, gv: Option<&str>) -> Map<String, Value> {
    let write = ["dryRun", "fieldManager", "fieldValidation"];
    let mut paths = Map::new();
    for r in RESOURCES
        .iter()
        .filter(|r| gv.is_none_or(|gv| gv_path(r.group, r.version) == gv))
    {
        let base = format!("/{}", gv_path(r.group, r.version));
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
                    form,
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
        c.insert("post".into(), op(form, r, "post", &write));
        paths.insert(collection, Value::Object(c));
        if r.verbs.contains(&"get") {
            paths.insert(
                item,
                json!({
                    "get": op(form, r, "get", &[]),
                    "put": op(form, r, "put", &write),
                    "patch": op(form, r, "patch", &["dryRun", "fieldManager", "fieldValidation", "force"]),
                    "delete": op(form, r, "delete", &["dryRun", "gracePeriodSeconds", "propagationPolicy"]),
                }),
            );
        }
    }
    paths
}

fn info() -> Value {
    json!({"title": "Kubernetes (klab)", "version": format!("v1.{}.0", super::discovery::KUBE_MINOR)})
}

/// One group-version's `/openapi/v3` document, or `None` if nothing is served there.
fn document(gv: &str, defs: &Map<String, Value>, gvks: &[schemas::Gvk]) -> Option<Value> {
    let paths = paths(Form::V3, Some(gv));
    if paths.is_empty() {
        return None;
    }
    let roots = gvks
        .iter()
        .filter(|k| gv_path(k.group, k.version) == gv)
        .map(|k| k.name.as_str());
    let mut components = Map::new();
    for name in schemas::closure(defs, roots) {
        let mut s = defs[name].clone();
        schemas::to_v3(&mut s);
        components.insert(name.to_owned(), s);
    }
    Some(json!({
        "openapi": "3.0.0",
        "info": info(),
        "paths": paths,
        "components": {"schemas": components},
    }))
}

/// The whole `/openapi/v2` document.
fn swagger(defs: Map<String, Value>) -> Value {
    json!({
        "swagger": "2.0",
        "info": info(),
        "paths": paths(Form::V2, None),
        "definitions": defs,
    })
}

/// An encoded document and its ETag.
struct Cached {
    body: Bytes,
    etag: String,
}

impl Cached {
    fn new(body: Vec<u8>) -> Cached {
        let sum = ring::digest::digest(&ring::digest::SHA512, &body);
        let etag = sum.as_ref().iter().map(|b| format!("{b:02X}")).collect();
        Cached {
            body: body.into(),
            etag,
        }
    }

    /// `200` with the body, or `304` when the client already has this version.
    fn respond(&self, content_type: &str, headers: &HeaderMap) -> Resp {
        let quoted = format!("\"{}\"", self.etag);
        let fresh = headers
            .get_all(http::header::IF_NONE_MATCH)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .any(|v| v.split(',').any(|t| t.trim() == quoted || t.trim() == "*"));
        let mut resp = if fresh {
            full(304, content_type, Bytes::new())
        } else {
            full(200, content_type, self.body.clone())
        };
        if let Ok(v) = http::HeaderValue::from_str(&quoted) {
            resp.headers_mut().insert(http::header::ETAG, v);
        }
        resp.headers_mut()
            .insert(http::header::VARY, http::HeaderValue::from_static("Accept"));
        resp
    }
}

/// Everything served under `/openapi`, built once.
struct Spec {
    v2_json: Cached,
    v2_pb: Cached,
    v3: Vec<(String, Cached)>,
    strict: strict::Schemas,
}

static SPEC: OnceLock<Spec> = OnceLock::new();

fn build() -> Spec {
    let start = Instant::now();
    let (defs, gvks) = schemas::build();
    let mut gvs: Vec<String> = RESOURCES
        .iter()
        .map(|r| gv_path(r.group, r.version))
        .collect();
    gvs.sort();
    gvs.dedup();
    let v3 = gvs
        .into_iter()
        .filter_map(|gv| {
            let doc = document(&gv, &defs, &gvks)?;
            Some((
                gv,
                Cached::new(serde_json::to_vec(&doc).unwrap_or_default()),
            ))
        })
        .collect();
    let count = defs.len();
    let strict = strict::Schemas::new(&defs, &gvks);
    let doc = swagger(defs);
    let spec = Spec {
        v2_json: Cached::new(serde_json::to_vec(&doc).unwrap_or_default()),
        v2_pb: Cached::new(gnostic::encode(&doc)),
        v3,
        strict,
    };
    eprintln!(
        "kube-apiserver: built the OpenAPI documents in {} ms ({count} definitions; /openapi/v2 {} bytes as JSON, {} as protobuf)",
        start.elapsed().as_millis(),
        spec.v2_json.body.len(),
        spec.v2_pb.body.len(),
    );
    spec
}

/// The documents, built on first use off the async workers (it takes a moment).
async fn spec() -> &'static Spec {
    if let Some(s) = SPEC.get() {
        return s;
    }
    match tokio::task::spawn_blocking(|| SPEC.get_or_init(build)).await {
        Ok(s) => s,
        Err(_) => SPEC.get_or_init(build),
    }
}

/// The media types of `/openapi/v2` in protobuf: client-go's (deprecated) and upstream's own.
/// The answer is labelled with the second: `@` is not allowed in a media type, and Go's
/// `mime.ParseMediaType` (client-go 1.20) fails the request on it.
const V2_PROTOBUF: &[&str] = &[
    "application/com.github.proto-openapi.spec.v2@v1.0+protobuf",
    "application/com.github.proto-openapi.spec.v2.v1.0+protobuf",
];

/// The unknown fields of `obj` (a `kind` of `api_version`) by its schema; `None` when the
/// kind has none.
pub async fn unknown_fields(api_version: &str, kind: &str, obj: &Value) -> Option<Vec<String>> {
    spec().await.strict.unknown_fields(api_version, kind, obj)
}

/// `GET /openapi/v2`, negotiated on `Accept` as upstream: protobuf if asked for, else JSON.
pub async fn v2(headers: &HeaderMap) -> Result<Resp, ApiError> {
    let accept: Vec<&str> = headers
        .get_all(http::header::ACCEPT)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(|v| v.split(';').next().unwrap_or_default().trim())
        .collect();
    let spec = spec().await;
    if accept.iter().any(|a| V2_PROTOBUF.contains(a)) {
        return Ok(spec.v2_pb.respond(V2_PROTOBUF[1], headers));
    }
    if accept.is_empty()
        || accept
            .iter()
            .any(|a| matches!(*a, "application/json" | "application/*" | "*/*" | ""))
    {
        return Ok(spec.v2_json.respond("application/json", headers));
    }
    Err(ApiError::new(
        406,
        "NotAcceptable",
        format!(
            "only the following media types are accepted: application/json, {}",
            V2_PROTOBUF.join(", ")
        ),
    ))
}

/// `GET /openapi/v3/<group-version>`.
pub async fn v3(gv: &str, headers: &HeaderMap) -> Result<Resp, ApiError> {
    spec()
        .await
        .v3
        .iter()
        .find(|(g, _)| g == gv)
        .map(|(_, c)| c.respond("application/json", headers))
        .ok_or_else(ApiError::page_not_found)
}

/// `fieldValidation=Strict` as far as klab knows the fields: top-level fields per kind and
/// `metadata`'s fields. Deeper unknown fields are kept, as with `Ignore`.
/// Server-side field validation (`?fieldValidation=Strict`, what kubectl 1.27+ sends instead of
/// validating itself): the fields of an object that its kind's schema does not have.
///
/// Mirrors the strict decoding of upstream's API server: every unknown field, at any depth, is
/// reported by its path (`spec.template.spec.containers[0].imagee`). Walks the same
/// definitions `/openapi/v2` publishes, kept without their descriptions.
pub mod strict {
    use serde_json::{Map, Value};

    /// The definitions, without descriptions, and each kind's definition name.
    pub struct Schemas {
        defs: Map<String, Value>,
        kinds: Vec<((&'static str, &'static str), String)>,
    }

    fn strip(v: &mut Value) {
        match v {
            Value::Object(m) => {
                m.remove("description");
                m.values_mut().for_each(strip);
            }
            Value::Array(a) => a.iter_mut().for_each(strip),
            _ => {}
        }
    }

    impl Schemas {
        pub fn new(defs: &Map<String, Value>, gvks: &[super::schemas::Gvk]) -> Schemas {
            let mut defs = defs.clone();
            defs.values_mut().for_each(strip);
            let kinds = gvks
                .iter()
                .map(|g| {
                    let api_version = if g.group.is_empty() {
                        g.version
                    } else {
                        // Leaked once per kind at startup of the validator: a few dozen.
                        &*Box::leak(format!("{}/{}", g.group, g.version).into_boxed_str())
                    };
                    ((api_version, g.kind), g.name.clone())
                })
                .collect();
            Schemas { defs, kinds }
        }

        /// The unknown fields of `obj`, a `kind` of `api_version`, in upstream's path form;
        /// `None` when the kind has no schema here.
        pub fn unknown_fields(
            &self,
            api_version: &str,
            kind: &str,
            obj: &Value,
        ) -> Option<Vec<String>> {
            let (_, name) = self
                .kinds
                .iter()
                .find(|((v, k), _)| *v == api_version && *k == kind)?;
            let mut out = Vec::new();
            self.walk(self.defs.get(name)?, obj, String::new(), &mut out);
            Some(out)
        }

        /// Follows `$ref`, `allOf` and the non-null branch of `anyOf`/`oneOf` to the schema
        /// that describes a value.
        fn resolve<'a>(&'a self, mut schema: &'a Value) -> &'a Value {
            for _ in 0..16 {
                if let Some(name) = schema
                    .get("$ref")
                    .and_then(Value::as_str)
                    .and_then(|r| r.strip_prefix("#/definitions/"))
                {
                    match self.defs.get(name) {
                        Some(d) => schema = d,
                        None => return schema,
                    }
                    continue;
                }
                let branch = ["allOf", "anyOf", "oneOf"].iter().find_map(|k| {
                    schema
                        .get(*k)?
                        .as_array()?
                        .iter()
                        .find(|s| s.get("type").and_then(Value::as_str) != Some("null"))
                });
                match branch {
                    Some(b) if schema.get("properties").is_none() => schema = b,
                    _ => return schema,
                }
            }
            schema
        }

        fn walk(&self, schema: &Value, v: &Value, path: String, out: &mut Vec<String>) {
            let schema = self.resolve(schema);
            let at = |k: &str| {
                if path.is_empty() {
                    k.to_owned()
                } else {
                    format!("{path}.{k}")
                }
            };
            match v {
                Value::Object(m) => {
                    let props = schema.get("properties").and_then(Value::as_object);
                    let extra = schema.get("additionalProperties");
                    for (k, child) in m {
                        match (props.and_then(|p| p.get(k)), extra) {
                            (Some(s), _) => self.walk(s, child, at(k), out),
                            (None, Some(s)) if s.is_object() => self.walk(s, child, at(k), out),
                            (None, Some(Value::Bool(true))) => {}
                            // A schema that names no fields (free-form, like RawExtension)
                            // accepts any.
                            (None, _) if props.is_none() => {}
                            (None, _) => out.push(at(k)),
                        }
                    }
                }
                Value::Array(a) => {
                    if let Some(items) = schema.get("items") {
                        for (i, child) in a.iter().enumerate() {
                            self.walk(items, child, format!("{path}[{i}]"), out);
                        }
                    }
                }
                _ => {}
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn documents_carry_patch_with_field_validation() {
        let (defs, gvks) = schemas::build();
        let d = document("apis/apps/v1", &defs, &gvks).unwrap();
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
        assert!(document("apis/nope/v1", &defs, &gvks).is_none());
        let schemas = d["components"]["schemas"].as_object().unwrap();
        let deploy = &schemas["io.k8s.api.apps.v1.Deployment"];
        assert_eq!(
            deploy["x-kubernetes-group-version-kind"][0]["kind"],
            "Deployment"
        );
        assert_eq!(
            deploy["properties"]["spec"]["allOf"][0]["$ref"],
            "#/components/schemas/io.k8s.api.apps.v1.DeploymentSpec"
        );
        assert!(schemas.contains_key("io.k8s.api.core.v1.Container"));
        assert!(!schemas.contains_key("io.k8s.api.core.v1.Pod"));
        assert!(index()["paths"]["api/v1"].is_object());
    }

    #[test]
    fn strict_finds_unknown_fields_at_any_depth() {
        let (defs, gvks) = schemas::build();
        let s = strict::Schemas::new(&defs, &gvks);
        let bad = json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "a", "nmae": "b", "labels": {"any": "x"}}, "dta": {}});
        assert_eq!(
            s.unknown_fields("v1", "ConfigMap", &bad).unwrap(),
            ["metadata.nmae", "dta"],
            "in the order of the document, as upstream's decoder meets them"
        );
        let deploy = json!({"apiVersion": "apps/v1", "kind": "Deployment",
            "metadata": {"name": "web", "annotations": {"a": "b"}},
            "spec": {"replicas": 2, "selector": {"matchLabels": {"app": "web"}},
                "strategy": {"rollingUpdate": {"maxSurge": "25%"}},
                "template": {"metadata": {"labels": {"app": "web"}}, "spec": {
                    "containers": [
                        {"name": "a", "image": "nginx", "resources": {"limits": {"cpu": "1"}}},
                        {"name": "b", "imagee": "nginx", "ports": [{"containerPort": 80, "prot": "TCP"}]},
                    ],
                    "nodeSelectr": {}}}}});
        assert_eq!(
            s.unknown_fields("apps/v1", "Deployment", &deploy).unwrap(),
            [
                "spec.template.spec.containers[1].imagee",
                "spec.template.spec.containers[1].ports[0].prot",
                "spec.template.spec.nodeSelectr",
            ]
        );
        let mut good = deploy.clone();
        good["spec"]["template"]["spec"] = json!({"containers": [{"name": "a", "image": "nginx"}]});
        assert_eq!(
            s.unknown_fields("apps/v1", "Deployment", &good).unwrap(),
            Vec::<String>::new()
        );
        assert!(s.unknown_fields("v1", "NoSuchKind", &good).is_none());
    }
}
