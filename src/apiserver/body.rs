//! Decoding request bodies: JSON, YAML and (for a few kinds) protobuf, into JSON values.
//!
//! Mirrors the apiserver's negotiated serializers. Like upstream's default (non-strict) field
//! validation, unknown fields are kept and `null` fields are dropped, so what kubectl sends
//! (`creationTimestamp: null`) decodes.

use serde_json::Value;

use super::protobuf;
use super::status::ApiError;

/// Drops `null` members of objects, at every depth.
pub fn prune_nulls(v: &mut Value) {
    match v {
        Value::Object(m) => {
            m.retain(|_, x| !x.is_null());
            m.values_mut().for_each(prune_nulls);
        }
        Value::Array(a) => a.iter_mut().for_each(prune_nulls),
        _ => {}
    }
}

/// Decodes a body by its Content-Type into a JSON object.
pub fn decode(content_type: &str, body: &[u8]) -> Result<Value, ApiError> {
    let media = content_type.split(';').next().unwrap_or_default().trim();
    let mut v: Value = match media {
        "" | "application/json" | "*/*" => serde_json::from_slice(body).map_err(|e| {
            ApiError::bad_request(format!("couldn't get version/kind; json parse error: {e}"))
        })?,
        "application/yaml" | "application/x-yaml" | "text/yaml" => serde_yaml::from_slice(body)
            .map_err(|e| {
                ApiError::bad_request(format!("error converting YAML to JSON: yaml: {e}"))
            })?,
        "application/vnd.kubernetes.protobuf" => protobuf::decode(body)?,
        other => return Err(ApiError::unsupported_media_type(other)),
    };
    if !v.is_object() {
        return Err(ApiError::bad_request(
            "the body of the request must be a JSON or YAML object",
        ));
    }
    prune_nulls(&mut v);
    Ok(v)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nulls_and_errors() {
        let v = decode(
            "application/json",
            br#"{"metadata":{"creationTimestamp":null,"name":"a"}}"#,
        )
        .unwrap();
        assert_eq!(v, serde_json::json!({"metadata": {"name": "a"}}));
        assert_eq!(decode("application/json", b"{").unwrap_err().code, 400);
        assert_eq!(decode("application/yaml", b"a: [").unwrap_err().code, 400);
        assert_eq!(decode("application/json", b"[1]").unwrap_err().code, 400);
        assert_eq!(decode("text/plain", b"x").unwrap_err().code, 415);
        assert!(decode("application/yaml", b"metadata:\n  name: a\n").is_ok());
    }
}
