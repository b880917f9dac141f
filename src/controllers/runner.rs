//! The watch loop every controller runs: informers fill caches from the API server and wake the
//! controller; the controller compares desired with current state and acts; repeat.
//!
//! Mirrors client-go's shared informers (`reflector` + `store`) and the controllers' work
//! loops, simplified: instead of a work queue of object keys, each wake-up runs one *pass*
//! over every object the controller owns. That is level-triggered by construction (a pass
//! only reads the caches, so after a restart the first pass converges from what is in the
//! API), and cheap at a workshop's scale. Expectations (see [`Expectations`]) stop a pass from
//! acting twice on writes the caches have not shown yet.

use std::collections::{HashMap, HashSet};
use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::StreamExt;
use kube::api::Api;
use kube::runtime::WatchStreamExt;
use kube::runtime::reflector::{self, Store};
use kube::runtime::watcher;
use tokio::sync::Notify;

use crate::component::log;

/// Starts an informer: a cache of every `K` the API serves, kept current by a watch, that
/// wakes `wake` on every change.
pub fn informer<K>(api: Api<K>, wake: Arc<Notify>) -> Store<K>
where
    K: kube::Resource<DynamicType = ()>
        + Clone
        + serde::de::DeserializeOwned
        + std::fmt::Debug
        + Send
        + Sync
        + 'static,
{
    let (reader, writer) = reflector::store();
    let stream = reflector::reflector(
        writer,
        watcher::watcher(api, watcher::Config::default()).default_backoff(),
    );
    tokio::spawn(async move {
        tokio::pin!(stream);
        while let Some(ev) = stream.next().await {
            if let Err(e) = ev {
                log('W', format!("watch error (retrying): {e}"));
            }
            wake.notify_one();
        }
    });
    reader
}

/// Waits for the caches' first lists (upstream's `WaitForCacheSync`).
pub async fn synced(name: &str, ready: Vec<Ready>) {
    for r in ready {
        r.await;
    }
    log('I', format!("Caches are synced for {name}"));
}

/// Waits for the next wake-up, or `resync` at most (for time-based work such as grace
/// periods), then lets a burst of watch events land before the next pass.
pub async fn next(wake: &Notify, resync: Duration) {
    tokio::select! {
        _ = wake.notified() => {}
        _ = tokio::time::sleep(resync) => {}
    }
    tokio::time::sleep(Duration::from_millis(20)).await;
}

/// A cache's first list having arrived.
pub type Ready = std::pin::Pin<Box<dyn Future<Output = ()> + Send>>;

pub fn ready<K>(store: &Store<K>) -> Ready
where
    K: kube::Resource<DynamicType = ()> + Clone + Send + Sync + 'static,
{
    let s = store.clone();
    Box::pin(async move {
        let _ = s.wait_until_ready().await;
    })
}

/// Upstream's `ControllerExpectations`: what a controller wrote and is waiting to see in its
/// cache before it acts on the same owner again.
#[derive(Debug, Default)]
pub struct Expectations {
    pending: HashMap<String, Pending>,
}

#[derive(Debug)]
struct Pending {
    creates: HashSet<String>,
    deletes: HashSet<String>,
    since: Instant,
}

/// How long to wait for the cache before acting anyway (upstream waits five minutes).
pub const EXPECTATIONS_TIMEOUT: Duration = Duration::from_secs(60);

impl Expectations {
    pub fn created(&mut self, owner: &str, name: &str) {
        self.entry(owner).creates.insert(name.to_owned());
    }

    pub fn deleted(&mut self, owner: &str, name: &str) {
        self.entry(owner).deletes.insert(name.to_owned());
    }

    fn entry(&mut self, owner: &str) -> &mut Pending {
        self.pending
            .entry(owner.to_owned())
            .or_insert_with(|| Pending {
                creates: HashSet::new(),
                deletes: HashSet::new(),
                since: Instant::now(),
            })
    }

    /// Whether the cache shows everything written for `owner`: `seen(name)` tells whether a
    /// name is in the cache and still live (not being deleted).
    pub fn satisfied(&mut self, owner: &str, seen: impl Fn(&str) -> Option<bool>) -> bool {
        let Some(p) = self.pending.get_mut(owner) else {
            return true;
        };
        p.creates.retain(|n| seen(n).is_none());
        p.deletes.retain(|n| seen(n) == Some(true));
        if (p.creates.is_empty() && p.deletes.is_empty())
            || p.since.elapsed() > EXPECTATIONS_TIMEOUT
        {
            self.pending.remove(owner);
            return true;
        }
        false
    }
}
