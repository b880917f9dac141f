//! The protobuf form of `/openapi/v2`: gnostic's `openapi.v2.Document`, as kubectl 1.20 asks for it.
//!
//! client-go's discovery `OpenAPISchema()` sends `Accept:
//! application/com.github.proto-openapi.spec.v2@v1.0+protobuf` and decodes the body with
//! gnostic's `openapi_v2.Document` (kube-openapi's `proto` models then read definitions, their
//! `x-kubernetes-group-version-kind` and the patch extensions). The messages below are the subset
//! of gnostic's `OpenAPIv2.proto` that klab's document uses, with that file's field numbers; a
//! vendor extension's value travels as YAML text (`Any.yaml`), and JSON is YAML. Left out:
//! security definitions, tags, body and header parameters, response schemas, numeric limits.

use prost::Message;
use serde_json::{Map, Value};

#[derive(Clone, PartialEq, Message)]
pub struct Document {
    #[prost(string, tag = "1")]
    pub swagger: String,
    #[prost(message, optional, tag = "2")]
    pub info: Option<Info>,
    #[prost(message, optional, tag = "8")]
    pub paths: Option<Paths>,
    #[prost(message, optional, tag = "9")]
    pub definitions: Option<Definitions>,
}

#[derive(Clone, PartialEq, Message)]
pub struct Info {
    #[prost(string, tag = "1")]
    pub title: String,
    #[prost(string, tag = "2")]
    pub version: String,
}

#[derive(Clone, PartialEq, Message)]
pub struct Paths {
    #[prost(message, repeated, tag = "2")]
    pub path: Vec<NamedPathItem>,
}

#[derive(Clone, PartialEq, Message)]
pub struct NamedPathItem {
    #[prost(string, tag = "1")]
    pub name: String,
    #[prost(message, optional, tag = "2")]
    pub value: Option<PathItem>,
}

#[derive(Clone, PartialEq, Message)]
pub struct PathItem {
    #[prost(message, optional, tag = "2")]
    pub get: Option<Operation>,
    #[prost(message, optional, tag = "3")]
    pub put: Option<Operation>,
    #[prost(message, optional, tag = "4")]
    pub post: Option<Operation>,
    #[prost(message, optional, tag = "5")]
    pub delete: Option<Operation>,
    #[prost(message, optional, tag = "8")]
    pub patch: Option<Operation>,
}

#[derive(Clone, PartialEq, Message)]
pub struct Operation {
    #[prost(string, tag = "3")]
    pub description: String,
    #[prost(string, tag = "5")]
    pub operation_id: String,
    #[prost(message, repeated, tag = "8")]
    pub parameters: Vec<ParametersItem>,
    #[prost(message, optional, tag = "9")]
    pub responses: Option<Responses>,
    #[prost(message, repeated, tag = "13")]
    pub vendor_extension: Vec<NamedAny>,
}

/// `ParametersItem { oneof { Parameter parameter = 1; … } }`.
#[derive(Clone, PartialEq, Message)]
pub struct ParametersItem {
    #[prost(message, optional, tag = "1")]
    pub parameter: Option<Parameter>,
}

/// `Parameter { oneof { BodyParameter body_parameter = 1; NonBodyParameter non_body_parameter = 2; } }`.
#[derive(Clone, PartialEq, Message)]
pub struct Parameter {
    #[prost(message, optional, tag = "2")]
    pub non_body_parameter: Option<NonBodyParameter>,
}

/// `NonBodyParameter { oneof { …; QueryParameterSubSchema query_parameter_sub_schema = 3; … } }`.
#[derive(Clone, PartialEq, Message)]
pub struct NonBodyParameter {
    #[prost(message, optional, tag = "3")]
    pub query_parameter_sub_schema: Option<QueryParameterSubSchema>,
}

#[derive(Clone, PartialEq, Message)]
pub struct QueryParameterSubSchema {
    #[prost(string, tag = "2")]
    pub r#in: String,
    #[prost(string, tag = "3")]
    pub description: String,
    #[prost(string, tag = "4")]
    pub name: String,
    #[prost(string, tag = "6")]
    pub r#type: String,
    #[prost(bool, tag = "20")]
    pub unique_items: bool,
}

#[derive(Clone, PartialEq, Message)]
pub struct Responses {
    #[prost(message, repeated, tag = "1")]
    pub response_code: Vec<NamedResponseValue>,
}

#[derive(Clone, PartialEq, Message)]
pub struct NamedResponseValue {
    #[prost(string, tag = "1")]
    pub name: String,
    #[prost(message, optional, tag = "2")]
    pub value: Option<ResponseValue>,
}

/// `ResponseValue { oneof { Response response = 1; JsonReference json_reference = 2; } }`.
#[derive(Clone, PartialEq, Message)]
pub struct ResponseValue {
    #[prost(message, optional, tag = "1")]
    pub response: Option<Response>,
}

#[derive(Clone, PartialEq, Message)]
pub struct Response {
    #[prost(string, tag = "1")]
    pub description: String,
}

#[derive(Clone, PartialEq, Message)]
pub struct Definitions {
    #[prost(message, repeated, tag = "1")]
    pub additional_properties: Vec<NamedSchema>,
}

#[derive(Clone, PartialEq, Message)]
pub struct NamedSchema {
    #[prost(string, tag = "1")]
    pub name: String,
    #[prost(message, optional, tag = "2")]
    pub value: Option<Schema>,
}

#[derive(Clone, PartialEq, Message)]
pub struct Schema {
    #[prost(string, tag = "1")]
    pub r#ref: String,
    #[prost(string, tag = "2")]
    pub format: String,
    #[prost(string, tag = "3")]
    pub title: String,
    #[prost(string, tag = "4")]
    pub description: String,
    #[prost(message, optional, tag = "5")]
    pub default: Option<Any>,
    #[prost(string, repeated, tag = "19")]
    pub required: Vec<String>,
    #[prost(message, repeated, tag = "20")]
    pub r#enum: Vec<Any>,
    #[prost(message, optional, tag = "21")]
    pub additional_properties: Option<AdditionalPropertiesItem>,
    #[prost(message, optional, tag = "22")]
    pub r#type: Option<TypeItem>,
    #[prost(message, optional, tag = "23")]
    pub items: Option<ItemsItem>,
    #[prost(message, repeated, tag = "24")]
    pub all_of: Vec<Schema>,
    #[prost(message, optional, tag = "25")]
    pub properties: Option<Properties>,
    #[prost(bool, tag = "27")]
    pub read_only: bool,
    #[prost(message, repeated, tag = "31")]
    pub vendor_extension: Vec<NamedAny>,
}

/// `AdditionalPropertiesItem { oneof { Schema schema = 1; bool boolean = 2; } }`.
#[derive(Clone, PartialEq, Message)]
pub struct AdditionalPropertiesItem {
    #[prost(oneof = "AdditionalProperties", tags = "1, 2")]
    pub oneof: Option<AdditionalProperties>,
}

#[derive(Clone, PartialEq, prost::Oneof)]
pub enum AdditionalProperties {
    #[prost(message, boxed, tag = "1")]
    Schema(Box<Schema>),
    #[prost(bool, tag = "2")]
    Boolean(bool),
}

#[derive(Clone, PartialEq, Message)]
pub struct TypeItem {
    #[prost(string, repeated, tag = "1")]
    pub value: Vec<String>,
}

#[derive(Clone, PartialEq, Message)]
pub struct ItemsItem {
    #[prost(message, repeated, tag = "1")]
    pub schema: Vec<Schema>,
}

#[derive(Clone, PartialEq, Message)]
pub struct Properties {
    #[prost(message, repeated, tag = "1")]
    pub additional_properties: Vec<NamedSchema>,
}

#[derive(Clone, PartialEq, Message)]
pub struct NamedAny {
    #[prost(string, tag = "1")]
    pub name: String,
    #[prost(message, optional, tag = "2")]
    pub value: Option<Any>,
}

/// gnostic's `Any`: the value as YAML text in field 2 (field 1, a `google.protobuf.Any`, is unused).
#[derive(Clone, PartialEq, Message)]
pub struct Any {
    #[prost(string, tag = "2")]
    pub yaml: String,
}

fn any(v: &Value) -> Any {
    Any {
        yaml: v.to_string(),
    }
}

fn str_of(m: &Map<String, Value>, k: &str) -> String {
    m.get(k)
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_owned()
}

fn extensions(m: &Map<String, Value>) -> Vec<NamedAny> {
    m.iter()
        .filter(|(k, _)| k.starts_with("x-"))
        .map(|(k, v)| NamedAny {
            name: k.clone(),
            value: Some(any(v)),
        })
        .collect()
}

fn named_schemas(v: Option<&Value>) -> Vec<NamedSchema> {
    v.and_then(Value::as_object)
        .map(|m| {
            m.iter()
                .map(|(k, s)| NamedSchema {
                    name: k.clone(),
                    value: Some(schema(s)),
                })
                .collect()
        })
        .unwrap_or_default()
}

/// One JSON schema object in gnostic's form. Keys it does not carry are dropped.
pub fn schema(v: &Value) -> Schema {
    let Some(m) = v.as_object() else {
        return Schema::default();
    };
    let types = match m.get("type") {
        Some(Value::String(t)) => vec![t.clone()],
        Some(Value::Array(ts)) => ts
            .iter()
            .filter_map(|t| t.as_str().map(str::to_owned))
            .collect(),
        _ => Vec::new(),
    };
    Schema {
        r#ref: str_of(m, "$ref"),
        format: str_of(m, "format"),
        title: str_of(m, "title"),
        description: str_of(m, "description"),
        default: m.get("default").map(any),
        required: m
            .get("required")
            .and_then(Value::as_array)
            .map(|r| {
                r.iter()
                    .filter_map(|s| s.as_str().map(str::to_owned))
                    .collect()
            })
            .unwrap_or_default(),
        r#enum: m
            .get("enum")
            .and_then(Value::as_array)
            .map(|e| e.iter().map(any).collect())
            .unwrap_or_default(),
        additional_properties: m
            .get("additionalProperties")
            .map(|a| AdditionalPropertiesItem {
                oneof: Some(match a {
                    Value::Bool(b) => AdditionalProperties::Boolean(*b),
                    other => AdditionalProperties::Schema(Box::new(schema(other))),
                }),
            }),
        r#type: (!types.is_empty()).then_some(TypeItem { value: types }),
        items: m.get("items").map(|i| ItemsItem {
            schema: match i {
                Value::Array(list) => list.iter().map(schema).collect(),
                one => vec![schema(one)],
            },
        }),
        all_of: m
            .get("allOf")
            .and_then(Value::as_array)
            .map(|a| a.iter().map(schema).collect())
            .unwrap_or_default(),
        properties: m.get("properties").map(|p| Properties {
            additional_properties: named_schemas(Some(p)),
        }),
        read_only: m.get("readOnly").and_then(Value::as_bool).unwrap_or(false),
        vendor_extension: extensions(m),
    }
}

fn operation(v: &Value) -> Option<Operation> {
    let m = v.as_object()?;
    let parameters = m
        .get("parameters")
        .and_then(Value::as_array)
        .map(|ps| {
            ps.iter()
                .filter_map(Value::as_object)
                .map(|p| ParametersItem {
                    parameter: Some(Parameter {
                        non_body_parameter: Some(NonBodyParameter {
                            query_parameter_sub_schema: Some(QueryParameterSubSchema {
                                r#in: str_of(p, "in"),
                                description: str_of(p, "description"),
                                name: str_of(p, "name"),
                                r#type: str_of(p, "type"),
                                unique_items: p
                                    .get("uniqueItems")
                                    .and_then(Value::as_bool)
                                    .unwrap_or(false),
                            }),
                        }),
                    }),
                })
                .collect()
        })
        .unwrap_or_default();
    let responses = m
        .get("responses")
        .and_then(Value::as_object)
        .map(|rs| Responses {
            response_code: rs
                .iter()
                .map(|(code, r)| NamedResponseValue {
                    name: code.clone(),
                    value: Some(ResponseValue {
                        response: Some(Response {
                            description: r
                                .get("description")
                                .and_then(Value::as_str)
                                .unwrap_or_default()
                                .to_owned(),
                        }),
                    }),
                })
                .collect(),
        });
    Some(Operation {
        description: str_of(m, "description"),
        operation_id: str_of(m, "operationId"),
        parameters,
        responses,
        vendor_extension: extensions(m),
    })
}

/// The whole `/openapi/v2` JSON document in gnostic's protobuf encoding.
pub fn encode(doc: &Value) -> Vec<u8> {
    let paths = doc.get("paths").and_then(Value::as_object).map(|ps| Paths {
        path: ps
            .iter()
            .map(|(p, item)| NamedPathItem {
                name: p.clone(),
                value: Some(PathItem {
                    get: item.get("get").and_then(operation),
                    put: item.get("put").and_then(operation),
                    post: item.get("post").and_then(operation),
                    delete: item.get("delete").and_then(operation),
                    patch: item.get("patch").and_then(operation),
                }),
            })
            .collect(),
    });
    Document {
        swagger: doc["swagger"].as_str().unwrap_or("2.0").to_owned(),
        info: Some(Info {
            title: doc["info"]["title"].as_str().unwrap_or_default().to_owned(),
            version: doc["info"]["version"]
                .as_str()
                .unwrap_or_default()
                .to_owned(),
        }),
        paths,
        definitions: Some(Definitions {
            additional_properties: named_schemas(doc.get("definitions")),
        }),
    }
    .encode_to_vec()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn schema_round_trips_the_fields_kubectl_reads() {
        let doc = json!({
            "swagger": "2.0",
            "info": {"title": "Kubernetes", "version": "v1.32.0"},
            "paths": {"/api/v1/pods": {"get": {"operationId": "listPod", "parameters": [{"name": "watch", "in": "query", "type": "string", "uniqueItems": true}], "responses": {"200": {"description": "OK"}}, "x-kubernetes-action": "list"}}},
            "definitions": {
                "io.k8s.api.core.v1.PodSpec": {
                    "description": "PodSpec is a description of a pod.",
                    "type": "object",
                    "required": ["containers"],
                    "properties": {
                        "containers": {"type": "array", "items": {"$ref": "#/definitions/io.k8s.api.core.v1.Container"}, "x-kubernetes-patch-merge-key": "name", "x-kubernetes-patch-strategy": "merge"},
                        "nodeSelector": {"type": "object", "additionalProperties": {"type": "string"}},
                    },
                    "x-kubernetes-group-version-kind": [{"group": "", "kind": "Pod", "version": "v1"}],
                },
            },
        });
        let bytes = encode(&doc);
        let back = Document::decode(bytes.as_slice()).unwrap();
        assert_eq!(back.swagger, "2.0");
        let defs = back.definitions.unwrap().additional_properties;
        let spec = defs[0].value.as_ref().unwrap();
        assert_eq!(defs[0].name, "io.k8s.api.core.v1.PodSpec");
        assert_eq!(spec.r#type.as_ref().unwrap().value, ["object"]);
        assert_eq!(spec.required, ["containers"]);
        let props = &spec.properties.as_ref().unwrap().additional_properties;
        let containers = props[0].value.as_ref().unwrap();
        assert_eq!(
            containers.items.as_ref().unwrap().schema[0].r#ref,
            "#/definitions/io.k8s.api.core.v1.Container"
        );
        assert_eq!(
            containers.vendor_extension[0].name,
            "x-kubernetes-patch-merge-key"
        );
        assert_eq!(
            containers.vendor_extension[0].value.as_ref().unwrap().yaml,
            "\"name\""
        );
        let ap = props[1]
            .value
            .as_ref()
            .unwrap()
            .additional_properties
            .as_ref();
        assert!(matches!(
            ap.unwrap().oneof,
            Some(AdditionalProperties::Schema(ref s)) if s.r#type.as_ref().unwrap().value == ["string"]
        ));
        let gvk: Value =
            serde_json::from_str(&spec.vendor_extension[0].value.as_ref().unwrap().yaml).unwrap();
        assert_eq!(gvk[0]["kind"], "Pod");
        let path = &back.paths.unwrap().path[0];
        let list = path.value.as_ref().unwrap().get.as_ref().unwrap();
        assert_eq!(list.operation_id, "listPod");
        let q = list.parameters[0].parameter.as_ref().unwrap();
        let q = q.non_body_parameter.as_ref().unwrap();
        assert_eq!(q.query_parameter_sub_schema.as_ref().unwrap().name, "watch");
    }
}
