//! Protobuf request bodies for the kinds kubectl sends that way (Namespace, ConfigMap, Secret).
//!
//! kubectl 1.32+ creates namespaces with `application/vnd.kubernetes.protobuf`. The wire form
//! is upstream's envelope (`k8s\0` then a `runtime.Unknown` holding apiVersion, kind and the
//! object's bytes); the messages below declare only the fields of upstream's `generated.proto`
//! that klab decodes, with upstream's field numbers. Other kinds get `415`, and client-go then
//! retries in JSON.

use std::collections::BTreeMap;

use prost::Message;
use serde_json::{Map, Value, json};

use super::status::ApiError;

const MAGIC: &[u8] = b"k8s\x00";

#[derive(Clone, PartialEq, Message)]
struct TypeMeta {
    #[prost(string, tag = "1")]
    api_version: String,
    #[prost(string, tag = "2")]
    kind: String,
}

#[derive(Clone, PartialEq, Message)]
struct Unknown {
    #[prost(message, optional, tag = "1")]
    type_meta: Option<TypeMeta>,
    #[prost(bytes = "vec", tag = "2")]
    raw: Vec<u8>,
}

#[derive(Clone, PartialEq, Message)]
struct ObjectMeta {
    #[prost(string, tag = "1")]
    name: String,
    #[prost(string, tag = "2")]
    generate_name: String,
    #[prost(string, tag = "3")]
    namespace: String,
    #[prost(btree_map = "string, string", tag = "11")]
    labels: BTreeMap<String, String>,
    #[prost(btree_map = "string, string", tag = "12")]
    annotations: BTreeMap<String, String>,
    #[prost(string, repeated, tag = "14")]
    finalizers: Vec<String>,
}

#[derive(Clone, PartialEq, Message)]
struct NamespaceSpec {
    #[prost(string, repeated, tag = "1")]
    finalizers: Vec<String>,
}

#[derive(Clone, PartialEq, Message)]
struct Namespace {
    #[prost(message, optional, tag = "1")]
    metadata: Option<ObjectMeta>,
    #[prost(message, optional, tag = "2")]
    spec: Option<NamespaceSpec>,
}

#[derive(Clone, PartialEq, Message)]
struct ConfigMap {
    #[prost(message, optional, tag = "1")]
    metadata: Option<ObjectMeta>,
    #[prost(btree_map = "string, string", tag = "2")]
    data: BTreeMap<String, String>,
    #[prost(btree_map = "string, bytes", tag = "3")]
    binary_data: BTreeMap<String, Vec<u8>>,
    #[prost(bool, optional, tag = "4")]
    immutable: Option<bool>,
}

#[derive(Clone, PartialEq, Message)]
struct Secret {
    #[prost(message, optional, tag = "1")]
    metadata: Option<ObjectMeta>,
    #[prost(btree_map = "string, bytes", tag = "2")]
    data: BTreeMap<String, Vec<u8>>,
    #[prost(string, optional, tag = "3")]
    r#type: Option<String>,
    #[prost(btree_map = "string, string", tag = "4")]
    string_data: BTreeMap<String, String>,
    #[prost(bool, optional, tag = "5")]
    immutable: Option<bool>,
}

fn meta_json(m: Option<ObjectMeta>) -> Value {
    let m = m.unwrap_or_default();
    let mut out = Map::new();
    let mut put = |k: &str, v: Value| {
        out.insert(k.into(), v);
    };
    if !m.name.is_empty() {
        put("name", m.name.into());
    }
    if !m.generate_name.is_empty() {
        put("generateName", m.generate_name.into());
    }
    if !m.namespace.is_empty() {
        put("namespace", m.namespace.into());
    }
    if !m.labels.is_empty() {
        put("labels", json!(m.labels));
    }
    if !m.annotations.is_empty() {
        put("annotations", json!(m.annotations));
    }
    if !m.finalizers.is_empty() {
        put("finalizers", json!(m.finalizers));
    }
    Value::Object(out)
}

fn b64(map: BTreeMap<String, Vec<u8>>) -> Value {
    use base64::Engine;
    let e = base64::engine::general_purpose::STANDARD;
    json!(
        map.into_iter()
            .map(|(k, v)| (k, e.encode(v)))
            .collect::<BTreeMap<_, _>>()
    )
}

fn bad(e: prost::DecodeError) -> ApiError {
    ApiError::bad_request(format!("decoding the protobuf body: {e}"))
}

/// Decodes an enveloped protobuf body into the JSON form of the object.
pub fn decode(body: &[u8]) -> Result<Value, ApiError> {
    let inner = body
        .strip_prefix(MAGIC)
        .ok_or_else(|| ApiError::bad_request("protobuf body lacks the k8s\\0 prefix"))?;
    let unknown = Unknown::decode(inner).map_err(bad)?;
    let tm = unknown.type_meta.unwrap_or_default();
    let raw = unknown.raw.as_slice();
    let mut obj = match (tm.api_version.as_str(), tm.kind.as_str()) {
        ("v1", "Namespace") => {
            let ns = Namespace::decode(raw).map_err(bad)?;
            let mut o = json!({"metadata": meta_json(ns.metadata)});
            if let Some(spec) = ns.spec.filter(|s| !s.finalizers.is_empty()) {
                o["spec"] = json!({"finalizers": spec.finalizers});
            }
            o
        }
        ("v1", "ConfigMap") => {
            let cm = ConfigMap::decode(raw).map_err(bad)?;
            let mut o = json!({"metadata": meta_json(cm.metadata)});
            if !cm.data.is_empty() {
                o["data"] = json!(cm.data);
            }
            if !cm.binary_data.is_empty() {
                o["binaryData"] = b64(cm.binary_data);
            }
            if let Some(i) = cm.immutable {
                o["immutable"] = i.into();
            }
            o
        }
        ("v1", "Secret") => {
            let s = Secret::decode(raw).map_err(bad)?;
            let mut o = json!({"metadata": meta_json(s.metadata)});
            if !s.data.is_empty() {
                o["data"] = b64(s.data);
            }
            if !s.string_data.is_empty() {
                o["stringData"] = json!(s.string_data);
            }
            if let Some(t) = s.r#type {
                o["type"] = t.into();
            }
            if let Some(i) = s.immutable {
                o["immutable"] = i.into();
            }
            o
        }
        _ => {
            return Err(ApiError::unsupported_media_type(
                "application/vnd.kubernetes.protobuf",
            ));
        }
    };
    obj["apiVersion"] = tm.api_version.into();
    obj["kind"] = tm.kind.into();
    Ok(obj)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn namespace_round_trip() {
        let ns = Namespace {
            metadata: Some(ObjectMeta {
                name: "team-a".into(),
                ..Default::default()
            }),
            spec: None,
        };
        let unknown = Unknown {
            type_meta: Some(TypeMeta {
                api_version: "v1".into(),
                kind: "Namespace".into(),
            }),
            raw: ns.encode_to_vec(),
        };
        let mut body = MAGIC.to_vec();
        body.extend(unknown.encode_to_vec());
        let v = decode(&body).unwrap();
        assert_eq!(v["metadata"]["name"], "team-a");
        assert_eq!(v["kind"], "Namespace");
        assert!(decode(b"nope").is_err());
    }
}
