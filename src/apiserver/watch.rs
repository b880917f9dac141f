//! Watch: a chunked stream of `{"type": …, "object": …}` lines fed by an etcd watch.
//!
//! Mirrors the apiserver's `storage/etcd3/watcher.go` and `endpoints/handlers/watch.go`:
//! without a resourceVersion (or with `0`) the current objects come first as ADDED events;
//! with one, events start after it; a compacted revision ends the stream with an ERROR event
//! carrying `410 Expired`; `allowWatchBookmarks` adds BOOKMARK events; `sendInitialEvents=true`
//! sends the current objects, then a bookmark annotated `k8s.io/initial-events-end`;
//! `timeoutSeconds` ends the stream. Events are filtered by the label and field selectors, and
//! an object that stops matching is sent as DELETED, as upstream does. Leaves out the watch
//! cache: every watch is its own etcd watch.

use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, StreamBody};
use hyper::body::Frame;
use serde_json::{Value, json};
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;

use super::handler::{Ctx, Resp};
use super::list::{ListOpts, collect, list_opts, selected};
use super::status::ApiError;
use super::storage::decode;
use super::{State, table};
use crate::api::resources::Resource;

/// How often an idle watch with bookmarks allowed gets one.
const BOOKMARK_EVERY: Duration = Duration::from_secs(60);

struct Watch {
    res: &'static Resource,
    opts: ListOpts,
    table: bool,
    query: super::request::Query,
    tx: mpsc::Sender<Result<Frame<Bytes>, std::convert::Infallible>>,
}

impl Watch {
    async fn send(&self, kind: &str, obj: &Value) -> bool {
        let rv = obj
            .pointer("/metadata/resourceVersion")
            .and_then(Value::as_str)
            .unwrap_or("")
            .to_owned();
        let object = if kind == "BOOKMARK" || kind == "ERROR" {
            obj.clone()
        } else if self.table {
            table::table(self.res, std::slice::from_ref(obj), &rv, &self.query)
        } else {
            super::convert::to_served(self.res, obj.clone())
        };
        let mut line =
            serde_json::to_vec(&json!({"type": kind, "object": object})).unwrap_or_default();
        line.push(b'\n');
        self.tx
            .send(Ok(Frame::data(Bytes::from(line))))
            .await
            .is_ok()
    }

    async fn bookmark(&self, rev: i64, initial_end: bool) -> bool {
        let mut meta = json!({"resourceVersion": rev.to_string()});
        if initial_end {
            meta["annotations"] = json!({"k8s.io/initial-events-end": "true"});
        }
        let obj =
            json!({"kind": self.res.kind, "apiVersion": self.res.api_version(), "metadata": meta});
        self.send("BOOKMARK", &obj).await
    }

    async fn error(&self, e: &ApiError) {
        let _ = self.send("ERROR", &e.to_status()).await;
    }
}

fn parse_rv(ctx: &Ctx) -> Result<Option<i64>, ApiError> {
    match ctx.query.get("resourceVersion").map(String::as_str) {
        None | Some("") | Some("0") => Ok(None),
        Some(rv) => rv
            .parse::<i64>()
            .map(Some)
            .map_err(|_| ApiError::bad_request(format!("invalid resourceVersion {rv:?}"))),
    }
}

/// Answers a watch request with a streaming body.
pub async fn serve(ctx: &Ctx, res: &'static Resource) -> Result<Resp, ApiError> {
    let mut opts = list_opts(ctx, res)?;
    if !ctx.info.name.is_empty() {
        opts.fields.push(crate::api::selector::FieldTerm {
            field: "metadata.name".into(),
            equals: true,
            value: ctx.info.name.clone(),
        });
    }
    let rv = parse_rv(ctx)?;
    let q = |k: &str| ctx.query.get(k).map(String::as_str);
    let bookmarks = matches!(q("allowWatchBookmarks"), Some("true" | "1"));
    let marker = matches!(q("sendInitialEvents"), Some("true" | "1"));
    let initial = match q("sendInitialEvents") {
        Some("true" | "1") => {
            if q("resourceVersionMatch") != Some("NotOlderThan") || !bookmarks {
                return Err(ApiError::invalid("ListOptions", &super::status::Target { group: "", plural: "", name: "" }, &[("sendInitialEvents".into(), "Forbidden: sendInitialEvents is only supported with resourceVersionMatch=NotOlderThan and allowWatchBookmarks=true".into())]));
            }
            true
        }
        _ => rv.is_none(),
    };
    let timeout = q("timeoutSeconds")
        .and_then(|t| t.parse::<u64>().ok())
        .map(Duration::from_secs);
    let ns = (!ctx.info.namespace.is_empty()).then(|| ctx.info.namespace.clone());
    let (tx, rx) = mpsc::channel(64);
    let w = Watch {
        res,
        opts,
        table: ctx.wants_table(),
        query: ctx.query.clone(),
        tx,
    };
    let state = ctx.state.clone();
    tokio::spawn(async move {
        let run = run(&state, &w, ns.as_deref(), rv, initial, marker, bookmarks);
        match timeout {
            Some(t) => {
                let _ = tokio::time::timeout(t, run).await;
            }
            None => run.await,
        }
    });
    let body = StreamBody::new(ReceiverStream::new(rx)).boxed();
    Ok(http::Response::builder()
        .status(200)
        .header(http::header::CONTENT_TYPE, "application/json")
        .header("transfer-encoding", "chunked")
        .header("cache-control", "no-cache, private")
        .body(body)
        .unwrap_or_else(|_| http::Response::new(http_body_util::Full::new(Bytes::new()).boxed())))
}

async fn run(
    state: &State,
    w: &Watch,
    ns: Option<&str>,
    rv: Option<i64>,
    initial: bool,
    marker: bool,
    bookmarks: bool,
) {
    let start_rev = match rv {
        Some(rv) if !initial => rv,
        _ => {
            let all = ListOpts {
                limit: 0,
                cont: None,
                revision: 0,
                labels: w.opts.labels.clone(),
                fields: w.opts.fields.clone(),
            };
            let listed = match collect(state, w.res, ns, &all).await {
                Ok(l) => l,
                Err(e) => return w.error(&e).await,
            };
            for obj in &listed.items {
                if !w.send("ADDED", obj).await {
                    return;
                }
            }
            listed.revision
        }
    };
    if marker && !w.bookmark(start_rev, true).await {
        return;
    }
    let prefix = w.res.list_prefix(ns);
    let mut stream = match state.store.watch(&prefix, start_rev + 1).await {
        Ok(s) => s,
        Err(e) => return w.error(&e.into()).await,
    };
    let mut last = start_rev;
    let mut tick = tokio::time::interval(BOOKMARK_EVERY);
    tick.tick().await;
    loop {
        let msg = tokio::select! {
            m = stream.message() => m,
            _ = tick.tick() => {
                if bookmarks && !w.bookmark(last, false).await {
                    return;
                }
                continue;
            }
            () = w.tx.closed() => return,
        };
        let resp = match msg {
            Ok(Some(r)) => r,
            Ok(None) => return,
            Err(e) => {
                return w
                    .error(&super::storage::StorageError::Request(e).into())
                    .await;
            }
        };
        if resp.compact_revision() > 0 {
            let e = ApiError::gone(format!(
                "too old resource version: {} ({})",
                start_rev,
                resp.compact_revision()
            ));
            return w.error(&e).await;
        }
        if resp.canceled() {
            let e = ApiError::internal(format!(
                "etcd cancelled the watch: {}",
                resp.cancel_reason()
            ));
            return w.error(&e).await;
        }
        for ev in resp.events() {
            let Some(kv) = ev.kv() else { continue };
            last = kv.mod_revision();
            let prev = ev
                .prev_kv()
                .and_then(|p| decode(p.key(), p.value(), p.mod_revision()).ok());
            let was = prev
                .as_ref()
                .is_some_and(|p| selected(w.res, &p.value, &w.opts.labels, &w.opts.fields));
            let sent = match ev.event_type() {
                etcd_client::EventType::Delete => match prev {
                    Some(mut p) if was => {
                        super::storage::set_resource_version(&mut p.value, kv.mod_revision());
                        w.send("DELETED", &p.value).await
                    }
                    _ => true,
                },
                etcd_client::EventType::Put => {
                    let Ok(cur) = decode(kv.key(), kv.value(), kv.mod_revision()) else {
                        continue;
                    };
                    let is = selected(w.res, &cur.value, &w.opts.labels, &w.opts.fields);
                    match (was, is, kv.create_revision() == kv.mod_revision()) {
                        (_, true, true) | (false, true, false) => w.send("ADDED", &cur.value).await,
                        (true, true, false) => w.send("MODIFIED", &cur.value).await,
                        (true, false, _) => w.send("DELETED", &cur.value).await,
                        _ => true,
                    }
                }
            };
            if !sent {
                return;
            }
        }
    }
}
