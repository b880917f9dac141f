//! One stored kind served in two group-versions: events.k8s.io/v1 Events kept as core/v1 Events.
//!
//! Mirrors upstream's conversion of Event (`pkg/apis/events/v1` and `pkg/apis/core/v1`): both
//! versions live under one key (`/registry/events/<namespace>/<name>`), so an Event written
//! through either API reads back through both. The fields (events.k8s.io/v1 ↔ core/v1): `note` ↔
//! `message`, `regarding` ↔ `involvedObject`, `reportingController` ↔ `reportingComponent`,
//! `deprecatedSource` ↔ `source`, `deprecatedFirstTimestamp` ↔ `firstTimestamp`,
//! `deprecatedLastTimestamp` ↔ `lastTimestamp`, `deprecatedCount` ↔ `count`; `eventTime`,
//! `series`, `action`, `reason`, `related`, `reportingInstance` and `type` keep their names.
//! Objects are stored in the core/v1 form: request bodies are converted on the way in (a patch
//! applies to the events.k8s.io form of the current object), responses and watch events on the
//! way out. Left out: field selectors keep core/v1's names (`involvedObject.name`), and errors
//! name the core resource (`events "x" not found`).

use http_body_util::{BodyExt, Full};
use serde_json::{Map, Value};

use super::handler::{Ctx, Resp};
use super::status::ApiError;
use super::{body, rest, watch, write};
use crate::api::resources::{self, Resource};

/// events.k8s.io/v1 name → core/v1 name, for the fields that differ.
const RENAMED: &[(&str, &str)] = &[
    ("note", "message"),
    ("regarding", "involvedObject"),
    ("reportingController", "reportingComponent"),
    ("deprecatedSource", "source"),
    ("deprecatedFirstTimestamp", "firstTimestamp"),
    ("deprecatedLastTimestamp", "lastTimestamp"),
    ("deprecatedCount", "count"),
];

/// The stored resource that `res` is a second version of, if it is one.
pub fn stored_as(res: &Resource) -> Option<&'static Resource> {
    if res.group == "events.k8s.io" && res.plural == "events" {
        resources::find("", "v1", "events")
    } else {
        None
    }
}

/// The object with `apiVersion`/`kind` first and each field renamed by `name`.
fn renamed(obj: Value, api_version: String, name: impl Fn(&str) -> &str) -> Value {
    let Value::Object(m) = obj else {
        return obj;
    };
    let mut out = Map::new();
    out.insert("apiVersion".into(), api_version.into());
    out.insert(
        "kind".into(),
        m.get("kind").cloned().unwrap_or_else(|| "Event".into()),
    );
    for (k, v) in m {
        if k != "apiVersion" && k != "kind" {
            out.insert(name(&k).to_owned(), v);
        }
    }
    Value::Object(out)
}

/// A stored (core/v1) object in the form `res` serves; unchanged for other resources.
pub fn to_served(res: &Resource, obj: Value) -> Value {
    if stored_as(res).is_none() {
        return obj;
    }
    renamed(obj, res.api_version(), |k| {
        RENAMED
            .iter()
            .find(|(_, core)| *core == k)
            .map_or(k, |(events, _)| events)
    })
}

/// An object in `res`'s served form, in the form it is stored in (core/v1).
pub fn to_stored(res: &Resource, obj: Value) -> Value {
    let Some(stored) = stored_as(res) else {
        return obj;
    };
    renamed(obj, stored.api_version(), |k| {
        RENAMED
            .iter()
            .find(|(events, _)| *events == k)
            .map_or(k, |(_, core)| core)
    })
}

/// A request to `res`, served from `stored`'s storage.
pub async fn serve(
    mut ctx: Ctx,
    res: &'static Resource,
    stored: &'static Resource,
) -> Result<Resp, ApiError> {
    match ctx.info.verb.as_str() {
        "watch" => return watch::serve(&ctx, res).await,
        "patch" => {
            let resp = write::patch_object(&ctx, stored, Some(res)).await?;
            return served_response(res, resp).await;
        }
        "create" | "update" => {
            let mut obj = body::decode(ctx.content_type(), &ctx.body)?;
            rest::check_type(res, &mut obj)?;
            let stored_obj = to_stored(res, obj);
            ctx.body = serde_json::to_vec(&stored_obj).unwrap_or_default().into();
            ctx.headers.insert(
                http::header::CONTENT_TYPE,
                http::HeaderValue::from_static("application/json"),
            );
        }
        _ => {}
    }
    let resp = rest::dispatch_to(ctx, stored).await?;
    served_response(res, resp).await
}

/// A JSON response of the stored resource, re-encoded in `res`'s form (Tables and Status as
/// they are).
async fn served_response(res: &Resource, resp: Resp) -> Result<Resp, ApiError> {
    let (mut parts, body) = resp.into_parts();
    let json = parts
        .headers
        .get(http::header::CONTENT_TYPE)
        .is_some_and(|v| v.as_bytes().starts_with(b"application/json"));
    let bytes = match body.collect().await {
        Ok(c) => c.to_bytes(),
        Err(never) => match never {},
    };
    let converted = json
        .then(|| serde_json::from_slice::<Value>(&bytes).ok())
        .flatten()
        .and_then(|mut v| {
            match v.get("kind").and_then(Value::as_str) {
                Some(k) if k == res.kind => v = to_served(res, v),
                Some(k) if k == format!("{}List", res.kind) => {
                    if let Some(items) = v.get_mut("items").and_then(Value::as_array_mut) {
                        for item in items.iter_mut() {
                            *item = to_served(res, item.take());
                        }
                    }
                    v["apiVersion"] = res.api_version().into();
                }
                _ => return None,
            }
            serde_json::to_vec(&v).ok()
        });
    let out = match converted {
        Some(c) => {
            parts.headers.remove(http::header::CONTENT_LENGTH);
            bytes::Bytes::from(c)
        }
        None => bytes,
    };
    Ok(http::Response::from_parts(parts, Full::new(out).boxed()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn events_v1() -> &'static Resource {
        resources::find("events.k8s.io", "v1", "events").unwrap()
    }

    #[test]
    fn core_event_reads_as_events_v1_and_back() {
        let core = json!({
            "apiVersion": "v1", "kind": "Event",
            "metadata": {"name": "e", "namespace": "default"},
            "involvedObject": {"kind": "Pod", "name": "p"},
            "reason": "Scheduled", "message": "assigned to n1", "type": "Normal",
            "source": {"component": "default-scheduler"},
            "firstTimestamp": "2026-01-01T00:00:00Z", "lastTimestamp": "2026-01-01T00:00:01Z",
            "count": 2, "reportingComponent": "default-scheduler",
            "series": {"count": 3, "lastObservedTime": "2026-01-01T00:00:02.000000Z"},
        });
        let served = to_served(events_v1(), core.clone());
        assert_eq!(
            served,
            json!({
                "apiVersion": "events.k8s.io/v1", "kind": "Event",
                "metadata": {"name": "e", "namespace": "default"},
                "regarding": {"kind": "Pod", "name": "p"},
                "reason": "Scheduled", "note": "assigned to n1", "type": "Normal",
                "deprecatedSource": {"component": "default-scheduler"},
                "deprecatedFirstTimestamp": "2026-01-01T00:00:00Z",
                "deprecatedLastTimestamp": "2026-01-01T00:00:01Z",
                "deprecatedCount": 2, "reportingController": "default-scheduler",
                "series": {"count": 3, "lastObservedTime": "2026-01-01T00:00:02.000000Z"},
            })
        );
        assert_eq!(to_stored(events_v1(), served), core);
        let pods = resources::find("", "v1", "pods").unwrap();
        assert_eq!(
            to_served(pods, json!({"message": "x"})),
            json!({"message": "x"})
        );
        assert!(stored_as(pods).is_none());
    }
}
