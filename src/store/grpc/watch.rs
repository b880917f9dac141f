//! The Watch service: many watches on one bidirectional stream, each on a key or a range.
//!
//! Mirrors etcd's `v3rpc/watch.go` and `mvcc/watchable_store.go`. Every watcher remembers the
//! next revision it owes its client; whenever a revision becomes durable, the stream reads the
//! events it owes from the store's history. So a watcher that starts in the past, or fell
//! behind, catches up from history exactly as a live one is fed: no event is lost or sent twice.
//! A watcher whose next revision was compacted away is cancelled with `compact_revision` set.
//! Leaves out fragmenting of very large responses.

use std::collections::BTreeMap;
use std::pin::Pin;
use std::time::Duration;

use etcd_client::proto::{PbWatchRequest, PbWatchRequestUnion, PbWatchResponse, PbWatchService};
use tokio::sync::mpsc;
use tokio_stream::Stream;
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status, Streaming};

use super::header_at;
use crate::store::backend::Store;
use crate::store::mvcc::{EVENT_DELETE, EVENT_PUT, KeyRange};

/// etcd's default `--experimental-watch-progress-notify-interval`.
pub const PROGRESS_INTERVAL: Duration = Duration::from_secs(600);

pub struct WatchService {
    pub store: Store,
    /// How often watchers that asked for it hear the current revision when nothing changed.
    pub progress_interval: Duration,
}

type WatchStream = Pin<Box<dyn Stream<Item = Result<PbWatchResponse, Status>> + Send>>;
type Tx = mpsc::Sender<Result<PbWatchResponse, Status>>;

#[tonic::async_trait]
impl PbWatchService for WatchService {
    type WatchStream = WatchStream;

    async fn watch(
        &self,
        req: Request<Streaming<PbWatchRequest>>,
    ) -> Result<Response<WatchStream>, Status> {
        let (tx, rx) = mpsc::channel(64);
        let (store, every) = (self.store.clone(), self.progress_interval);
        tokio::spawn(run_stream(store, req.into_inner(), tx, every));
        Ok(Response::new(Box::pin(ReceiverStream::new(rx))))
    }
}

struct Watcher {
    range: KeyRange,
    /// The first revision whose events this watcher has not yet sent.
    next: i64,
    prev_kv: bool,
    no_put: bool,
    no_delete: bool,
    progress_notify: bool,
}

#[derive(Default)]
struct Watchers {
    map: BTreeMap<i64, Watcher>,
    next_id: i64,
}

async fn run_stream(
    store: Store,
    mut incoming: Streaming<PbWatchRequest>,
    tx: Tx,
    progress_every: Duration,
) {
    let mut watchers = Watchers::default();
    let mut revisions = store.subscribe();
    let mut progress = tokio::time::interval(progress_every);
    progress.tick().await;
    loop {
        let alive = tokio::select! {
            msg = incoming.message() => match msg {
                Ok(Some(req)) => handle(&store, &mut watchers, req, &tx).await,
                _ => false,
            },
            changed = revisions.changed() => changed.is_ok() && deliver(&store, &mut watchers, &tx).await,
            _ = progress.tick() => notify_progress(&store, &watchers, &tx).await,
        };
        if !alive {
            break;
        }
    }
}

/// Handles one client request; returns false once the client is gone.
async fn handle(store: &Store, watchers: &mut Watchers, req: PbWatchRequest, tx: &Tx) -> bool {
    match req.request_union {
        Some(PbWatchRequestUnion::CreateRequest(c)) => {
            // etcd reads an empty key as "\0" and a "\0" range end as "every key from key".
            let key = if c.key.is_empty() { vec![0] } else { c.key };
            let latest = store.visible();
            // Ids are never reused on a stream, as etcd's watchStream hands them out.
            let id = if c.watch_id != 0 && !watchers.map.contains_key(&c.watch_id) {
                c.watch_id
            } else {
                while watchers.map.contains_key(&watchers.next_id) {
                    watchers.next_id += 1;
                }
                watchers.next_id += 1;
                watchers.next_id - 1
            };
            let watcher = Watcher {
                range: KeyRange::new(&key, &c.range_end),
                next: if c.start_revision > 0 {
                    c.start_revision
                } else {
                    latest + 1
                },
                prev_kv: c.prev_kv,
                // FilterType: NOPUT=0, NODELETE=1.
                no_put: c.filters.contains(&0),
                no_delete: c.filters.contains(&1),
                progress_notify: c.progress_notify,
            };
            watchers.map.insert(id, watcher);
            let created = PbWatchResponse {
                header: header_at(store, latest),
                watch_id: id,
                created: true,
                ..Default::default()
            };
            tx.send(Ok(created)).await.is_ok() && deliver(store, watchers, tx).await
        }
        Some(PbWatchRequestUnion::CancelRequest(c)) => {
            if watchers.map.remove(&c.watch_id).is_none() {
                return true;
            }
            let canceled = PbWatchResponse {
                header: header_at(store, store.visible()),
                watch_id: c.watch_id,
                canceled: true,
                ..Default::default()
            };
            tx.send(Ok(canceled)).await.is_ok()
        }
        Some(PbWatchRequestUnion::ProgressRequest(_)) => {
            // Not tied to one watcher: etcd answers with watch id -1.
            let resp = PbWatchResponse {
                header: header_at(store, store.visible()),
                watch_id: -1,
                ..Default::default()
            };
            tx.send(Ok(resp)).await.is_ok()
        }
        None => true,
    }
}

/// Sends every watcher the durable events it has not sent yet, in responses of at most
/// [`MAX_REVS`] revisions and about [`MAX_BYTES`] (etcd batches catch-up the same way), so a
/// watcher far behind never holds the store's lock for long nor exceeds a client's message size.
async fn deliver(store: &Store, watchers: &mut Watchers, tx: &Tx) -> bool {
    loop {
        let (out, behind) = collect(store, watchers);
        for resp in out {
            if tx.send(Ok(resp)).await.is_err() {
                return false;
            }
        }
        if !behind {
            return true;
        }
    }
}

/// etcd's `watchBatchMaxRevs`.
const MAX_REVS: i64 = 1000;
/// Below gRPC's default 4 MiB message limit on the client side.
const MAX_BYTES: usize = 1 << 20;

/// One round of [`deliver`]: the responses to send, and whether some watcher is still behind.
fn collect(store: &Store, watchers: &mut Watchers) -> (Vec<PbWatchResponse>, bool) {
    let latest = store.visible();
    let mut out = Vec::new();
    let mut behind = false;
    let mut compacted_ids = Vec::new();
    store.read(|state, _| {
        let compacted = state.mvcc.compacted();
        for (&id, w) in watchers.map.iter_mut().filter(|(_, w)| w.next <= latest) {
            if w.next < compacted {
                compacted_ids.push(id);
                out.push(PbWatchResponse {
                    header: header_at(store, 0),
                    watch_id: id,
                    canceled: true,
                    compact_revision: compacted,
                    ..Default::default()
                });
                continue;
            }
            let to = latest.min(w.next + MAX_REVS - 1);
            let (mut events, next) =
                state
                    .mvcc
                    .events(&w.range, (w.next, to), w.prev_kv, MAX_BYTES);
            w.next = next;
            behind |= next <= latest;
            events.retain(|e| {
                !(w.no_put && e.r#type == EVENT_PUT || w.no_delete && e.r#type == EVENT_DELETE)
            });
            if !events.is_empty() {
                out.push(PbWatchResponse {
                    header: header_at(store, latest),
                    watch_id: id,
                    events,
                    ..Default::default()
                });
            }
        }
    });
    for id in compacted_ids {
        watchers.map.remove(&id);
    }
    (out, behind)
}

/// etcd's periodic progress notification, for watchers that asked for it.
async fn notify_progress(store: &Store, watchers: &Watchers, tx: &Tx) -> bool {
    let latest = store.visible();
    for (&id, _) in watchers
        .map
        .iter()
        .filter(|(_, w)| w.progress_notify && w.next > latest)
    {
        let resp = PbWatchResponse {
            header: header_at(store, latest),
            watch_id: id,
            ..Default::default()
        };
        if tx.send(Ok(resp)).await.is_err() {
            return false;
        }
    }
    true
}
