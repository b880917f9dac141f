//! kube-scheduler: watches pods that have no node and nodes, and binds each pod to the node
//! that fits it best, or says in an Event why none does.
//!
//! Mirrors `k8s.io/kubernetes/cmd/kube-scheduler` and `pkg/scheduler`: a cache of nodes and
//! what their pods request (with *assumed* pods counted as soon as a node is chosen, before the
//! binding is written), a scheduling queue, one scheduling cycle at a time ([`decide`]: the
//! filter and score plugins, and preemption ([`preempt`]) when nothing fits) and a binding
//! cycle that runs in the background ([`bind`]). Pending pods are tried in order of
//! `spec.priority`; pods nominated to a node after preempting there hold their room against
//! less important pods (upstream's nominator). Leaves out profiles and the configuration
//! file and the volume plugins.

pub mod affinity;
pub mod bind;
pub mod decide;
pub mod filter;
pub mod node_info;
pub mod preempt;
pub mod queue;
pub mod score;
pub mod spread;

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::StreamExt;
use k8s_openapi::api::core::v1::{Node, Pod};
use kube::api::Api;
use kube::runtime::WatchStreamExt;
use kube::runtime::watcher::{self, Event};
use tokio::sync::mpsc;

use crate::cli::SchedulerArgs;
use crate::component::{self, health, log};
use node_info::{NodeInfo, PodRequests};

#[derive(Debug, thiserror::Error)]
pub enum SchedulerError {
    #[error("starting the async runtime")]
    StartRuntime(#[source] std::io::Error),
    #[error(transparent)]
    Component(#[from] component::ComponentError),
    #[error("the watch of {0} ended")]
    WatchEnded(&'static str),
}

/// What the scheduler knows about one pod.
struct Tracked {
    pod: Arc<Pod>,
    requests: PodRequests,
    /// The node it is counted on (bound, or assumed while its binding is written).
    on: Option<String>,
}

/// The scheduler's state: owned by one task, changed only by watch events and its own cycles.
pub struct Scheduler {
    name: String,
    explain: bool,
    nodes: BTreeMap<String, NodeInfo>,
    pods: HashMap<String, Tracked>,
    assumed: HashSet<String>,
    /// Pending pods nominated to a node (key → node), from their status or set by this
    /// scheduler's preemption before the status is written.
    nominated: HashMap<String, String>,
    queue: queue::Queue,
    next_start: usize,
    /// Keys of pods whose last FailedScheduling message was this one (no repeats).
    last_failure: HashMap<String, String>,
    binder: bind::Binder,
    bound_tx: mpsc::UnboundedSender<(String, bool)>,
    /// Pods whose failed cycle is being written (victims, nomination, condition, Event): not
    /// tried again until that is done, so a binding never overtakes its own nomination
    /// (upstream gates a pod the same way while it preempts asynchronously).
    writing: HashSet<String>,
    written_tx: mpsc::UnboundedSender<String>,
    metrics: Arc<health::Metrics>,
    nodes_relist: Option<HashSet<String>>,
    pods_relist: Option<HashSet<String>>,
    synced: (bool, bool),
}

fn key_of(pod: &Pod) -> String {
    format!(
        "{}/{}",
        pod.metadata.namespace.as_deref().unwrap_or_default(),
        pod.metadata.name.as_deref().unwrap_or_default()
    )
}

fn node_name(pod: &Pod) -> Option<String> {
    pod.spec
        .as_ref()
        .and_then(|s| s.node_name.clone())
        .filter(|n| !n.is_empty())
}

fn finished(pod: &Pod) -> bool {
    matches!(
        pod.status.as_ref().and_then(|s| s.phase.as_deref()),
        Some("Succeeded" | "Failed")
    )
}

/// Whether a node change could let a waiting pod fit (not a heartbeat).
fn node_changed_for_scheduling(old: &Node, new: &Node) -> bool {
    let alloc = |n: &Node| n.status.as_ref().and_then(|s| s.allocatable.clone());
    old.metadata.labels != new.metadata.labels || old.spec != new.spec || alloc(old) != alloc(new)
}

impl Scheduler {
    fn uncount(&mut self, key: &str) {
        if let Some(t) = self.pods.get_mut(key) {
            if let Some(n) = t.on.take() {
                if let Some(info) = self.nodes.get_mut(&n) {
                    info.remove_pod(key);
                }
            }
        }
    }

    fn count(&mut self, key: &str, node: &str) {
        if let Some(t) = self.pods.get_mut(key) {
            if t.on.as_deref() == Some(node) {
                return;
            }
            if let Some(n) = t.on.take() {
                if let Some(info) = self.nodes.get_mut(&n) {
                    info.remove_pod(key);
                }
            }
            if let Some(info) = self.nodes.get_mut(node) {
                info.add_pod(key, &t.requests);
            }
            t.on = Some(node.to_owned());
        }
    }

    fn on_pod(&mut self, pod: Pod) {
        let key = key_of(&pod);
        if let Some(rl) = self.pods_relist.as_mut() {
            rl.insert(key.clone());
        }
        let bound = node_name(&pod);
        let mine = pod
            .spec
            .as_ref()
            .and_then(|s| s.scheduler_name.as_deref())
            .unwrap_or("default-scheduler")
            == self.name;
        if finished(&pod) {
            self.on_pod_gone(&key);
            return;
        }
        let deleting = pod.metadata.deletion_timestamp.is_some();
        let priority = pod.spec.as_ref().and_then(|s| s.priority).unwrap_or(0);
        let requests = PodRequests::of(&pod);
        let nominated = pod
            .status
            .as_ref()
            .and_then(|s| s.nominated_node_name.clone())
            .filter(|n| !n.is_empty());
        let t = self.pods.entry(key.clone()).or_insert_with(|| Tracked {
            pod: Arc::new(pod.clone()),
            requests: requests.clone(),
            on: None,
        });
        t.pod = Arc::new(pod);
        // What the node counts of the pod changed (labels, start time, preempted): recount.
        if t.requests != requests {
            t.requests = requests;
            if let Some(n) = t.on.clone() {
                self.uncount(&key);
                self.count(&key, &n);
            }
        }
        // A status without a nomination does not undo one this scheduler just made and has
        // not written yet (upstream's nominator keeps it too).
        if bound.is_some() {
            self.nominated.remove(&key);
        } else if let Some(n) = nominated {
            self.nominated.insert(key.clone(), n);
        }
        if let Some(n) = bound {
            self.assumed.remove(&key);
            self.queue.remove(&key);
            self.last_failure.remove(&key);
            self.count(&key, &n);
        } else if self.assumed.contains(&key) {
            // Its binding is being written; the watch has not caught up yet.
        } else if mine && !deleting {
            self.queue.set_priority(&key, priority);
            self.queue.add(&key);
        } else {
            self.queue.remove(&key);
        }
    }

    fn on_pod_gone(&mut self, key: &str) {
        let was_on_node = self.pods.get(key).is_some_and(|t| t.on.is_some());
        self.uncount(key);
        self.pods.remove(key);
        self.assumed.remove(key);
        self.nominated.remove(key);
        self.queue.remove(key);
        self.last_failure.remove(key);
        if was_on_node {
            self.queue.cluster_changed(Instant::now());
        }
    }

    fn on_node(&mut self, node: Node) {
        let name = node.metadata.name.clone().unwrap_or_default();
        if let Some(rl) = self.nodes_relist.as_mut() {
            rl.insert(name.clone());
        }
        let node = Arc::new(node);
        let changed = match self.nodes.get_mut(&name) {
            Some(info) => {
                let changed = node_changed_for_scheduling(&info.node, &node);
                let fresh = NodeInfo::new(node);
                info.node = fresh.node;
                info.allocatable = fresh.allocatable;
                changed
            }
            None => {
                let mut info = NodeInfo::new(node);
                for (k, t) in &self.pods {
                    if t.on.as_deref() == Some(name.as_str()) {
                        info.add_pod(k, &t.requests);
                    }
                }
                self.nodes.insert(name, info);
                true
            }
        };
        if changed {
            self.queue.cluster_changed(Instant::now());
        }
    }

    fn on_node_gone(&mut self, name: &str) {
        self.nodes.remove(name);
    }

    fn pod_event(&mut self, ev: Event<Pod>) {
        match ev {
            Event::Apply(p) | Event::InitApply(p) => self.on_pod(p),
            Event::Delete(p) => self.on_pod_gone(&key_of(&p)),
            Event::Init => self.pods_relist = Some(HashSet::new()),
            Event::InitDone => {
                if let Some(seen) = self.pods_relist.take() {
                    let gone: Vec<String> = self
                        .pods
                        .keys()
                        .filter(|k| !seen.contains(*k) && !self.assumed.contains(*k))
                        .cloned()
                        .collect();
                    for k in gone {
                        self.on_pod_gone(&k);
                    }
                }
                self.synced.1 = true;
            }
        }
    }

    fn node_event(&mut self, ev: Event<Node>) {
        match ev {
            Event::Apply(n) | Event::InitApply(n) => self.on_node(n),
            Event::Delete(n) => self.on_node_gone(n.metadata.name.as_deref().unwrap_or_default()),
            Event::Init => self.nodes_relist = Some(HashSet::new()),
            Event::InitDone => {
                if let Some(seen) = self.nodes_relist.take() {
                    let gone: Vec<String> = self
                        .nodes
                        .keys()
                        .filter(|k| !seen.contains(*k))
                        .cloned()
                        .collect();
                    for k in gone {
                        self.on_node_gone(&k);
                    }
                }
                self.synced.0 = true;
            }
        }
    }

    /// A binding finished: forget the assumption if it failed, and retry the pod later.
    fn on_bound(&mut self, key: String, ok: bool) {
        if ok {
            self.metrics.add(
                "scheduler_schedule_attempts_total{result=\"scheduled\"}",
                1.0,
            );
            return;
        }
        if self.assumed.remove(&key) {
            self.uncount(&key);
            self.queue.error(&key, Instant::now());
        }
        self.metrics
            .add("scheduler_schedule_attempts_total{result=\"error\"}", 1.0);
    }

    /// One scheduling cycle for the next pod in the active queue.
    fn schedule_next(&mut self) {
        let Some(key) = self.queue.pop() else {
            return;
        };
        let Some(t) = self.pods.get(&key) else {
            return;
        };
        if t.on.is_some() {
            return;
        }
        if self.writing.contains(&key) {
            self.queue.error(&key, Instant::now());
            return;
        }
        let pod = t.pod.clone();
        let nodes: Vec<&NodeInfo> = self.nodes.values().collect();
        let start = self.next_start % nodes.len().max(1);
        let mut nominated = decide::Nominated::new();
        for (k, n) in &self.nominated {
            if let Some(t) = self.pods.get(k).filter(|t| t.on.is_none()) {
                nominated
                    .entry(n.clone())
                    .or_default()
                    .push((k.clone(), t.requests.clone()));
            }
        }
        let d = decide::schedule(&pod, &nodes, &nominated, start, self.explain, &mut |n| {
            rand::random_range(0..n.max(1))
        });
        self.next_start = d.next_start;
        let explain = self.explain.then(|| {
            for line in d.explanation.lines(&key) {
                log('I', line);
            }
            d.explanation.to_json()
        });
        match d.outcome {
            decide::Outcome::Fits { node } => {
                let nominated = self.nominated.remove(&key).is_some()
                    || pod
                        .status
                        .as_ref()
                        .and_then(|s| s.nominated_node_name.as_deref())
                        .is_some_and(|n| !n.is_empty());
                self.assumed.insert(key.clone());
                self.count(&key, &node);
                let (binder, tx) = (self.binder.clone(), self.bound_tx.clone());
                tokio::spawn(async move {
                    let ok = match binder.bind(&pod, &node, explain, nominated).await {
                        Ok(()) => true,
                        Err(e) => {
                            log('E', crate::component::chain(&e));
                            false
                        }
                    };
                    let _ = tx.send((key, ok));
                });
            }
            decide::Outcome::Unschedulable {
                message,
                nomination,
                victims,
            } => {
                self.queue.unschedulable(&key, Instant::now());
                self.metrics.add(
                    "scheduler_schedule_attempts_total{result=\"unschedulable\"}",
                    1.0,
                );
                let had_nomination = self.nominated.contains_key(&key);
                let (victims, lower) = match &nomination {
                    preempt::Nomination::Set(node) => self.nominate(&key, &pod, node, &victims),
                    preempt::Nomination::Clear => {
                        self.nominated.remove(&key);
                        (Vec::new(), Vec::new())
                    }
                    preempt::Nomination::Keep => (Vec::new(), Vec::new()),
                };
                let writes_nomination = match &nomination {
                    preempt::Nomination::Set(_) => true,
                    preempt::Nomination::Clear => had_nomination,
                    preempt::Nomination::Keep => false,
                };
                if self.last_failure.get(&key) != Some(&message) || writes_nomination {
                    self.last_failure.insert(key.clone(), message.clone());
                    log('I', format!("Unable to schedule pod {key}: {message}"));
                    let binder = self.binder.clone();
                    let scheduler = self.name.clone();
                    let done = self.written_tx.clone();
                    self.writing.insert(key.clone());
                    tokio::spawn(async move {
                        if let preempt::Nomination::Set(node) = &nomination {
                            for v in &victims {
                                if let Err(e) = binder.preempt(v, &pod, node, &scheduler).await {
                                    log('E', crate::component::chain(&e));
                                }
                            }
                            for p in &lower {
                                binder.clear_nominated(p).await;
                            }
                        }
                        binder
                            .unschedulable(&pod, &message, explain, &nomination)
                            .await;
                        let _ = done.send(key);
                    });
                }
            }
        }
    }

    /// Preemption chose `node` for the pod: nominate it there at once (so the next cycles
    /// count it), and take the nomination away from less important pods nominated to the
    /// same node, which may no longer fit there (upstream's `prepareCandidate`). Returns the
    /// victims and those pods, for the writes.
    fn nominate(
        &mut self,
        key: &str,
        pod: &Pod,
        node: &str,
        victims: &[String],
    ) -> (Vec<Arc<Pod>>, Vec<Arc<Pod>>) {
        let priority = pod.spec.as_ref().and_then(|s| s.priority).unwrap_or(0);
        self.nominated.insert(key.to_owned(), node.to_owned());
        let lower: Vec<String> = self
            .nominated
            .iter()
            .filter(|(k, n)| *k != key && n.as_str() == node)
            .filter(|(k, _)| {
                self.pods
                    .get(*k)
                    .is_some_and(|t| t.requests.priority < priority)
            })
            .map(|(k, _)| k.clone())
            .collect();
        let mut lower_pods = Vec::new();
        for k in &lower {
            self.nominated.remove(k);
            if let Some(t) = self.pods.get(k) {
                lower_pods.push(t.pod.clone());
            }
        }
        if !lower.is_empty() {
            self.queue.cluster_changed(Instant::now());
        }
        let victims: Vec<Arc<Pod>> = victims
            .iter()
            .filter_map(|v| self.pods.get(v).map(|t| t.pod.clone()))
            .collect();
        log(
            'I',
            format!(
                "Preempting {} pod(s) on node {node} for {key}: {}",
                victims.len(),
                victims
                    .iter()
                    .map(|v| key_of(v))
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
        );
        self.metrics.add("scheduler_preemption_attempts_total", 1.0);
        self.metrics
            .add("scheduler_preemption_victims_total", victims.len() as f64);
        (victims, lower_pods)
    }
}

/// Runs kube-scheduler until it fails or loses leadership.
pub fn run(args: SchedulerArgs) -> Result<(), SchedulerError> {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(SchedulerError::StartRuntime)?;
    rt.block_on(async move {
        let metrics = Arc::new(health::Metrics::default());
        let client = component::start(
            &args.common,
            args.secure_port,
            "kube-scheduler",
            metrics.clone(),
        )
        .await?;
        let lost = component::elect(&client, &args.common, "kube-scheduler").await?;
        tokio::select! {
            r = schedule(client, &args, metrics) => r,
            e = lost => Err(SchedulerError::Component(e)),
        }
    })
}

async fn schedule(
    client: kube::Client,
    args: &SchedulerArgs,
    metrics: Arc<health::Metrics>,
) -> Result<(), SchedulerError> {
    let (bound_tx, mut bound_rx) = mpsc::unbounded_channel();
    let (written_tx, mut written_rx) = mpsc::unbounded_channel();
    let mut s = Scheduler {
        name: args.scheduler_name.clone(),
        explain: args.explain,
        nodes: BTreeMap::new(),
        pods: HashMap::new(),
        assumed: HashSet::new(),
        nominated: HashMap::new(),
        queue: queue::Queue::default(),
        next_start: 0,
        last_failure: HashMap::new(),
        binder: bind::Binder::new(client.clone(), &args.scheduler_name),
        bound_tx,
        writing: HashSet::new(),
        written_tx,
        metrics,
        nodes_relist: None,
        pods_relist: None,
        synced: (false, false),
    };
    let pods = watcher(Api::<Pod>::all(client.clone()));
    let nodes = watcher(Api::<Node>::all(client));
    tokio::pin!(pods);
    tokio::pin!(nodes);
    log(
        'I',
        format!(
            "{} started; waiting for the node and pod caches",
            args.scheduler_name
        ),
    );
    loop {
        let now = Instant::now();
        s.queue.flush(now);
        let ready = s.synced == (true, true) && s.queue.len().0 > 0;
        let wake = s
            .queue
            .next_wakeup()
            .unwrap_or(now + Duration::from_secs(1))
            .min(now + Duration::from_secs(1));
        tokio::select! {
            biased;
            ev = pods.next() => match ev {
                Some(Ok(ev)) => s.pod_event(ev),
                Some(Err(e)) => log('W', format!("watching pods: {e}")),
                None => return Err(SchedulerError::WatchEnded("pods")),
            },
            ev = nodes.next() => match ev {
                Some(Ok(ev)) => s.node_event(ev),
                Some(Err(e)) => log('W', format!("watching nodes: {e}")),
                None => return Err(SchedulerError::WatchEnded("nodes")),
            },
            Some((key, ok)) = bound_rx.recv() => s.on_bound(key, ok),
            Some(key) = written_rx.recv() => {
                s.writing.remove(&key);
            }
            _ = std::future::ready(()), if ready => s.schedule_next(),
            _ = tokio::time::sleep_until(wake.into()) => {}
        }
        let (a, b, u) = s.queue.len();
        s.metrics
            .set("scheduler_pending_pods{queue=\"active\"}", a as f64);
        s.metrics
            .set("scheduler_pending_pods{queue=\"backoff\"}", b as f64);
        s.metrics
            .set("scheduler_pending_pods{queue=\"unschedulable\"}", u as f64);
    }
}

/// A watch stream that retries with backoff, as informers do.
pub fn watcher<K>(
    api: Api<K>,
) -> impl futures::Stream<Item = Result<Event<K>, watcher::Error>> + Send
where
    K: kube::Resource + Clone + serde::de::DeserializeOwned + std::fmt::Debug + Send + 'static,
{
    watcher::watcher(api, watcher::Config::default()).default_backoff()
}
