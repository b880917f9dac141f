//! Errors on the wire: `Status` objects with upstream's reasons and codes.
//!
//! Mirrors apimachinery's `pkg/api/errors` (NewNotFound, NewAlreadyExists, NewConflict,
//! NewInvalid, NewForbidden, …). Bodies are compact JSON with `kind` first, as upstream writes
//! them, because some clients compare them byte for byte.

use serde_json::{Value, json};

/// An API error: becomes an HTTP status code and a `Status` body.
#[derive(Debug, Clone, PartialEq)]
pub struct ApiError {
    pub code: u16,
    pub reason: &'static str,
    pub message: String,
    pub details: Option<Value>,
}

/// What an error is about: the resource's plural (and group) and the object's name.
pub struct Target<'a> {
    pub group: &'a str,
    pub plural: &'a str,
    pub name: &'a str,
}

fn qualified(t: &Target) -> String {
    if t.group.is_empty() {
        t.plural.to_owned()
    } else {
        format!("{}.{}", t.plural, t.group)
    }
}

fn details(t: &Target) -> Value {
    let mut d = serde_json::Map::new();
    if !t.name.is_empty() {
        d.insert("name".into(), t.name.into());
    }
    if !t.group.is_empty() {
        d.insert("group".into(), t.group.into());
    }
    d.insert("kind".into(), t.plural.into());
    Value::Object(d)
}

impl ApiError {
    pub fn new(code: u16, reason: &'static str, message: impl Into<String>) -> Self {
        ApiError {
            code,
            reason,
            message: message.into(),
            details: None,
        }
    }

    fn with(code: u16, reason: &'static str, message: String, t: &Target) -> Self {
        ApiError {
            code,
            reason,
            message,
            details: Some(details(t)),
        }
    }

    pub fn not_found(t: &Target) -> Self {
        Self::with(
            404,
            "NotFound",
            format!("{} \"{}\" not found", qualified(t), t.name),
            t,
        )
    }

    pub fn already_exists(t: &Target) -> Self {
        Self::with(
            409,
            "AlreadyExists",
            format!("{} \"{}\" already exists", qualified(t), t.name),
            t,
        )
    }

    pub fn conflict(t: &Target) -> Self {
        let msg = format!(
            "Operation cannot be fulfilled on {} \"{}\": the object has been modified; please apply your changes to the latest version and try again",
            qualified(t),
            t.name
        );
        Self::with(409, "Conflict", msg, t)
    }

    /// 422 Invalid with one cause per field, as `field.ErrorList` renders.
    pub fn invalid(kind: &str, t: &Target, causes: &[(String, String)]) -> Self {
        let joined: Vec<String> = causes.iter().map(|(f, m)| format!("{f}: {m}")).collect();
        let list = if joined.len() == 1 {
            joined[0].clone()
        } else {
            format!("[{}]", joined.join(", "))
        };
        let mut d = serde_json::Map::new();
        if !t.name.is_empty() {
            d.insert("name".into(), t.name.into());
        }
        d.insert("group".into(), t.group.into());
        d.insert("kind".into(), kind.into());
        d.insert(
            "causes".into(),
            causes
                .iter()
                .map(|(f, m)| json!({"reason": "FieldValueInvalid", "message": m, "field": f}))
                .collect(),
        );
        ApiError {
            code: 422,
            reason: "Invalid",
            message: format!("{kind} \"{}\" is invalid: {list}", t.name),
            details: Some(Value::Object(d)),
        }
    }

    pub fn forbidden(t: &Target, why: &str) -> Self {
        let what = if t.name.is_empty() {
            qualified(t)
        } else {
            format!("{} \"{}\"", qualified(t), t.name)
        };
        Self::with(403, "Forbidden", format!("{what} is forbidden: {why}"), t)
    }

    pub fn bad_request(message: impl Into<String>) -> Self {
        Self::new(400, "BadRequest", message)
    }

    pub fn unauthorized() -> Self {
        Self::new(401, "Unauthorized", "Unauthorized")
    }

    pub fn method_not_allowed(message: impl Into<String>) -> Self {
        Self::new(405, "MethodNotAllowed", message)
    }

    pub fn unsupported_media_type(content_type: &str) -> Self {
        Self::new(
            415,
            "UnsupportedMediaType",
            format!(
                "the body of the request was in an unknown format - accepted media types include: application/json, application/yaml, application/vnd.kubernetes.protobuf (Namespace, ConfigMap, Secret only); got {content_type:?}"
            ),
        )
    }

    pub fn too_large() -> Self {
        Self::new(
            413,
            "RequestEntityTooLarge",
            "Request entity too large: limit is 3145728",
        )
    }

    pub fn gone(message: impl Into<String>) -> Self {
        Self::new(410, "Expired", message)
    }

    pub fn internal(message: impl Into<String>) -> Self {
        Self::new(
            500,
            "InternalError",
            format!("Internal error occurred: {}", message.into()),
        )
    }

    pub fn unavailable(message: impl Into<String>) -> Self {
        Self::new(503, "ServiceUnavailable", message)
    }

    pub fn page_not_found() -> Self {
        Self::new(
            404,
            "NotFound",
            "the server could not find the requested resource",
        )
    }

    /// The `Status` object, `kind` first.
    pub fn to_status(&self) -> Value {
        let mut m = serde_json::Map::new();
        m.insert("kind".into(), "Status".into());
        m.insert("apiVersion".into(), "v1".into());
        m.insert("metadata".into(), json!({}));
        m.insert("status".into(), "Failure".into());
        m.insert("message".into(), self.message.clone().into());
        m.insert("reason".into(), self.reason.into());
        if let Some(d) = &self.details {
            m.insert("details".into(), d.clone());
        }
        m.insert("code".into(), self.code.into());
        Value::Object(m)
    }
}

/// A `Status` of success, as a delete of most resources answers.
pub fn success(t: &Target, uid: &str) -> Value {
    let mut d = details(t).as_object().cloned().unwrap_or_default();
    if !uid.is_empty() {
        d.insert("uid".into(), uid.into());
    }
    json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Success", "details": d})
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kind_first_compact() {
        let e = ApiError::not_found(&Target {
            group: "",
            plural: "pods",
            name: "x",
        });
        assert_eq!(
            serde_json::to_string(&e.to_status()).unwrap(),
            r#"{"kind":"Status","apiVersion":"v1","metadata":{},"status":"Failure","message":"pods \"x\" not found","reason":"NotFound","details":{"name":"x","kind":"pods"},"code":404}"#
        );
    }
}
