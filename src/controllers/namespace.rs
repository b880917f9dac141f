//! The namespace controller: empties a namespace being deleted, then lets it go.
//!
//! Mirrors `pkg/controller/namespace` and its `deletion.namespacedResourcesDeleter`: the API
//! server only marks a deleted namespace (deletionTimestamp, phase `Terminating`); this
//! controller finds every namespaced resource through the API's discovery (so it empties
//! custom resources too, and works against any API server), deletes each one's content with
//! deletecollection (list and delete one by one where a resource has no deletecollection),
//! waits for graceful pods and finalizers with upstream's estimates, keeps the namespace's five
//! deletion conditions with upstream's reasons and messages, and, once nothing is left,
//! removes the `kubernetes` finalizer through `PUT namespaces/{name}/finalize`; the API
//! server then deletes the namespace. Level-triggered: a restart finds the terminating
//! namespaces in its first list and carries on. Leaves out the discovery of resources only
//! served by a group's non-preferred versions, and the per-controller service account.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::{Namespace, NamespaceCondition, NamespaceSpec, Pod};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{APIResourceList, Time};
use kube::api::{Api, ApiResource, DeleteParams, DynamicObject, ListParams, PostParams};
use kube::runtime::reflector::Store;
use tokio::sync::Notify;

use super::runner;
use crate::component::{chain, log};

/// The finalizer the API server puts on every namespace and this controller removes.
pub const FINALIZER: &str = "kubernetes";
/// Upstream's `namespaceDeletionGracePeriod`: a namespace event is handled this long after it
/// arrives, so that creations racing with the deletion have landed.
pub const DELETION_GRACE: Duration = Duration::from_secs(5);
/// Upstream's `--namespace-sync-period`: how often a terminating namespace is looked at again
/// without any event.
pub const SYNC_PERIOD: Duration = Duration::from_secs(300);
/// Upstream's `finalizerEstimateSeconds`: how long to expect finalizers on content to take.
pub const FINALIZER_ESTIMATE: i64 = 15;
/// Upstream's rate limiter for failed syncs: 5 ms, doubling, at most 60 s.
const BACKOFF_BASE: Duration = Duration::from_millis(5);
const BACKOFF_MAX: Duration = Duration::from_secs(60);

/// The condition types this controller keeps, in upstream's order.
pub const CONDITION_TYPES: [&str; 5] = [
    "NamespaceDeletionDiscoveryFailure",
    "NamespaceDeletionGroupVersionParsingFailure",
    "NamespaceDeletionContentFailure",
    "NamespaceContentRemaining",
    "NamespaceFinalizersRemaining",
];

/// The reason and message of a condition type when all is well (status `False`).
fn ok_condition(ty: &str) -> (&'static str, &'static str) {
    match ty {
        "NamespaceDeletionDiscoveryFailure" => (
            "ResourcesDiscovered",
            "All resources successfully discovered",
        ),
        "NamespaceDeletionGroupVersionParsingFailure" => (
            "ParsedGroupVersions",
            "All legacy kube types successfully parsed",
        ),
        "NamespaceDeletionContentFailure" => (
            "ContentDeleted",
            "All content successfully deleted, may be waiting on finalization",
        ),
        "NamespaceContentRemaining" => ("ContentRemoved", "All content successfully removed"),
        _ => (
            "ContentHasNoFinalizers",
            "All content-preserving finalizers finished",
        ),
    }
}

/// A resource the controller deletes, as discovery lists it.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct Gvr {
    pub group: String,
    pub version: String,
    pub resource: String,
    pub kind: String,
    pub deletecollection: bool,
    pub list: bool,
}

impl std::fmt::Display for Gvr {
    /// As Go's `schema.GroupVersionResource` prints, which upstream's messages use.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{}/{}, Resource={}",
            self.group, self.version, self.resource
        )
    }
}

impl Gvr {
    fn api_resource(&self) -> ApiResource {
        let api_version = if self.group.is_empty() {
            self.version.clone()
        } else {
            format!("{}/{}", self.group, self.version)
        };
        ApiResource {
            group: self.group.clone(),
            version: self.version.clone(),
            api_version,
            kind: self.kind.clone(),
            plural: self.resource.clone(),
        }
    }
}

/// The resources of discovery's lists that live in namespaces and can be deleted (not
/// subresources), and the group versions that could not be parsed (upstream's
/// `ParseGroupVersion` message).
pub fn deletable(lists: &[APIResourceList]) -> (Vec<Gvr>, Vec<String>) {
    let mut out = Vec::new();
    let mut bad = Vec::new();
    for l in lists {
        let (group, version) = match l.group_version.split('/').collect::<Vec<_>>()[..] {
            [v] if !v.is_empty() => ("", v),
            [g, v] if !v.is_empty() => (g, v),
            _ => {
                bad.push(format!(
                    "unexpected GroupVersion string: {}",
                    l.group_version
                ));
                continue;
            }
        };
        for r in &l.resources {
            let has = |verb: &str| r.verbs.iter().any(|v| v == verb);
            if !r.namespaced || r.name.contains('/') || !has("delete") {
                continue;
            }
            out.push(Gvr {
                group: group.to_owned(),
                version: version.to_owned(),
                resource: r.name.clone(),
                kind: r.kind.clone(),
                deletecollection: has("deletecollection"),
                list: has("list"),
            });
        }
    }
    out.sort();
    (out, bad)
}

/// What is left of one resource after a deletion round.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct Left {
    /// Seconds to wait before looking again (0: nothing to wait for).
    pub estimate: i64,
    pub remaining: usize,
    pub finalizers: BTreeMap<String, usize>,
}

/// What a deletion round found, for the conditions.
#[derive(Debug, Default)]
pub struct Round {
    pub discovery_error: Option<String>,
    pub parse_errors: Vec<String>,
    pub content_errors: Vec<String>,
    /// `resource.group` → instances left.
    pub remaining: BTreeMap<String, usize>,
    /// finalizer → instances carrying it.
    pub finalizers: BTreeMap<String, usize>,
    pub estimate: i64,
}

impl Round {
    fn add(&mut self, gvr: &Gvr, left: Left) {
        self.estimate = self.estimate.max(left.estimate);
        if left.remaining > 0 {
            *self
                .remaining
                .entry(format!("{}.{}", gvr.resource, gvr.group))
                .or_default() += left.remaining;
            for (f, n) in left.finalizers {
                *self.finalizers.entry(f).or_default() += n;
            }
        }
    }

    fn failed(&self) -> bool {
        self.discovery_error.is_some()
            || !self.parse_errors.is_empty()
            || !self.content_errors.is_empty()
    }

    /// The failing conditions this round found (status `True`), upstream's
    /// `namespaceConditionUpdater`.
    pub fn failing(&self) -> Vec<(&'static str, &'static str, String)> {
        let mut out = Vec::new();
        if let Some(e) = &self.discovery_error {
            out.push((CONDITION_TYPES[0], "DiscoveryFailed", e.clone()));
        }
        if !self.parse_errors.is_empty() {
            out.push((
                CONDITION_TYPES[1],
                "GroupVersionParsingFailed",
                self.parse_errors.join(", "),
            ));
        }
        if !self.content_errors.is_empty() {
            let mut errs = self.content_errors.clone();
            errs.sort();
            out.push((
                CONDITION_TYPES[2],
                "ContentDeletionFailed",
                format!(
                    "Failed to delete all resource types, {} remaining: {}",
                    errs.len(),
                    errs.join(", ")
                ),
            ));
        }
        if !self.remaining.is_empty() {
            let list: Vec<String> = self
                .remaining
                .iter()
                .map(|(r, n)| format!("{r} has {n} resource instances"))
                .collect();
            out.push((
                CONDITION_TYPES[3],
                "SomeResourcesRemain",
                format!("Some resources are remaining: {}", list.join(", ")),
            ));
        }
        if !self.finalizers.is_empty() {
            let list: Vec<String> = self
                .finalizers
                .iter()
                .map(|(f, n)| format!("{f} in {n} resource instances"))
                .collect();
            out.push((
                CONDITION_TYPES[4],
                "SomeFinalizersRemain",
                format!(
                    "Some content in the namespace has finalizers remaining: {}",
                    list.join(", ")
                ),
            ));
        }
        out
    }
}

/// Sets the five conditions from a round, keeping `lastTransitionTime` where the status did
/// not change; returns whether anything changed (upstream's `updateConditions`).
pub fn update_conditions(conds: &mut Vec<NamespaceCondition>, round: &Round, now: &Time) -> bool {
    let failing = round.failing();
    let mut changed = false;
    for ty in CONDITION_TYPES {
        let (status, reason, message) = match failing.iter().find(|(t, _, _)| *t == ty) {
            Some((_, reason, message)) => ("True", *reason, message.clone()),
            None => {
                let (reason, message) = ok_condition(ty);
                ("False", reason, message.to_owned())
            }
        };
        match conds.iter_mut().find(|c| c.type_ == ty) {
            None => {
                conds.push(NamespaceCondition {
                    type_: ty.to_owned(),
                    status: status.to_owned(),
                    reason: Some(reason.to_owned()),
                    message: Some(message),
                    last_transition_time: Some(now.clone()),
                });
                changed = true;
            }
            Some(c) => {
                if c.status != status
                    || c.reason.as_deref() != Some(reason)
                    || c.message.as_deref() != Some(message.as_str())
                {
                    if c.status != status {
                        c.last_transition_time = Some(now.clone());
                    }
                    c.status = status.to_owned();
                    c.reason = Some(reason.to_owned());
                    c.message = Some(message);
                    changed = true;
                }
            }
        }
    }
    changed
}

/// How long graceful pods may still take: the longest terminationGracePeriodSeconds of the
/// pods not yet finished, or 0 once that long has passed since the namespace was deleted
/// (upstream's `estimateGracefulTerminationForPods`).
pub fn pod_estimate(pods: &[Pod], since_deletion: Duration) -> i64 {
    let longest = pods
        .iter()
        .filter(|p| {
            let phase = p.status.as_ref().and_then(|s| s.phase.as_deref());
            !matches!(phase, Some("Succeeded" | "Failed"))
        })
        .filter_map(|p| p.spec.as_ref()?.termination_grace_period_seconds)
        .max()
        .unwrap_or(0);
    if since_deletion >= Duration::from_secs(longest.max(0) as u64) {
        0
    } else {
        longest
    }
}

/// Why a sync did not finish.
#[derive(Debug, thiserror::Error)]
pub enum SyncError {
    #[error("reading namespace {ns}")]
    Get {
        ns: String,
        #[source]
        source: kube::Error,
    },
    #[error("marking namespace {ns} Terminating")]
    MarkTerminating {
        ns: String,
        #[source]
        source: kube::Error,
    },
    #[error("finalizing namespace {ns}")]
    Finalize {
        ns: String,
        #[source]
        source: kube::Error,
    },
    #[error("namespace {ns} was deleted and created again while it was being finalized")]
    UidChanged { ns: String },
    #[error("deleting the content of namespace {ns}: {}", errors.join("; "))]
    Content { ns: String, errors: Vec<String> },
    #[error("some content remains in the namespace, estimate {0} seconds before it is removed")]
    Remaining(i64),
}

/// The message of an API error as upstream's conditions show it: the Status's message.
fn api_message(e: &kube::Error) -> String {
    match e {
        kube::Error::Api(s) => s.message.clone(),
        other => chain(other),
    }
}

fn is_code(e: &kube::Error, codes: &[u16]) -> bool {
    matches!(e, kube::Error::Api(s) if codes.contains(&s.code))
}

/// A resource's items in the namespace; `None` when the resource cannot be listed (404, 405:
/// gone from the server, or no list verb after all), which counts as nothing left.
async fn list_present(api: &Api<DynamicObject>) -> Result<Option<Vec<DynamicObject>>, kube::Error> {
    match api.list(&ListParams::default()).await {
        Ok(l) => Ok(Some(l.items)),
        Err(e) if is_code(&e, &[404, 405]) => Ok(None),
        Err(e) => Err(e),
    }
}

/// Discovery as upstream's `ServerPreferredNamespacedResources`: the core version and each
/// group's preferred version. A group that fails is left out and named in the error.
async fn discover(client: &kube::Client) -> (Vec<APIResourceList>, Option<String>) {
    let mut lists = Vec::new();
    let mut failed: Vec<String> = Vec::new();
    match client.list_core_api_versions().await {
        Ok(v) => {
            for version in v.versions.iter().take(1) {
                match client.list_core_api_resources(version).await {
                    Ok(l) => lists.push(l),
                    Err(e) => failed.push(format!("{version}: {}", api_message(&e))),
                }
            }
        }
        Err(e) => return (lists, Some(api_message(&e))),
    }
    match client.list_api_groups().await {
        Ok(groups) => {
            for g in groups.groups {
                let Some(gv) = g
                    .preferred_version
                    .as_ref()
                    .or(g.versions.first())
                    .map(|v| v.group_version.clone())
                else {
                    continue;
                };
                match client.list_api_group_resources(&gv).await {
                    Ok(l) => lists.push(l),
                    Err(e) => failed.push(format!("{gv}: {}", api_message(&e))),
                }
            }
        }
        Err(e) => return (lists, Some(api_message(&e))),
    }
    if failed.is_empty() {
        return (lists, None);
    }
    failed.sort();
    let msg = format!(
        "Discovery failed for some groups, {} failing: unable to retrieve the complete list of server APIs: {}",
        failed.len(),
        failed.join(", ")
    );
    (lists, Some(msg))
}

struct Deleter {
    client: kube::Client,
}

impl Deleter {
    /// One sync of one namespace (upstream's `namespacedResourcesDeleter.Delete`): `Ok` when
    /// there is nothing more to do for it.
    async fn sync(&self, name: &str) -> Result<(), SyncError> {
        let api: Api<Namespace> = Api::all(self.client.clone());
        let get = |source| SyncError::Get {
            ns: name.to_owned(),
            source,
        };
        let Some(mut ns) = api.get_opt(name).await.map_err(get)? else {
            return Ok(());
        };
        let Some(deleted_at) = ns.metadata.deletion_timestamp.clone() else {
            return Ok(());
        };
        let phase = ns.status.as_ref().and_then(|s| s.phase.as_deref());
        if phase != Some("Terminating") {
            ns.status.get_or_insert_default().phase = Some("Terminating".into());
            match api.replace_status(name, &PostParams::default(), &ns).await {
                Ok(n) => ns = n,
                Err(e) if is_code(&e, &[404]) => return Ok(()),
                Err(source) => {
                    return Err(SyncError::MarkTerminating {
                        ns: name.to_owned(),
                        source,
                    });
                }
            }
        }
        let finalized = ns
            .spec
            .as_ref()
            .and_then(|s| s.finalizers.as_ref())
            .is_none_or(Vec::is_empty);
        if finalized {
            return Ok(());
        }
        let since = (k8s_openapi::jiff::Timestamp::now() - deleted_at.0)
            .total(k8s_openapi::jiff::Unit::Second)
            .unwrap_or(0.0)
            .max(0.0);
        let round = self
            .delete_all_content(name, Duration::from_secs_f64(since))
            .await;
        let mut status = ns.status.clone().unwrap_or_default();
        let conds = status.conditions.get_or_insert_default();
        let now = Time(k8s_openapi::jiff::Timestamp::now());
        if update_conditions(conds, &round, &now) {
            let mut updated = ns.clone();
            updated.status = Some(status);
            match api
                .replace_status(name, &PostParams::default(), &updated)
                .await
            {
                Ok(n) => ns = n,
                Err(e) => log(
                    'W',
                    format!(
                        "Couldn't update status condition for namespace {name:?}: {}",
                        api_message(&e)
                    ),
                ),
            }
        }
        if round.failed() {
            let mut errors = round.content_errors.clone();
            errors.extend(round.parse_errors.iter().cloned());
            errors.extend(round.discovery_error.iter().cloned());
            return Err(SyncError::Content {
                ns: name.to_owned(),
                errors,
            });
        }
        if round.estimate > 0 {
            return Err(SyncError::Remaining(round.estimate));
        }
        self.finalize(&api, ns).await
    }

    /// Removes [`FINALIZER`] from `spec.finalizers` through the finalize subresource,
    /// re-reading on a conflict as upstream's `retryOnConflictError`.
    async fn finalize(&self, api: &Api<Namespace>, mut ns: Namespace) -> Result<(), SyncError> {
        let name = ns.metadata.name.clone().unwrap_or_default();
        let uid = ns.metadata.uid.clone();
        loop {
            let mut left: Vec<String> = ns
                .spec
                .as_ref()
                .and_then(|s| s.finalizers.clone())
                .unwrap_or_default()
                .into_iter()
                .filter(|f| f != FINALIZER)
                .collect();
            left.sort();
            left.dedup();
            ns.spec = Some(NamespaceSpec {
                finalizers: Some(left),
            });
            match api
                .replace_subresource("finalize", &name, &PostParams::default(), &ns)
                .await
            {
                Ok(_) => {
                    log(
                        'I',
                        format!("Namespace {name:?} finalized: its content is gone"),
                    );
                    return Ok(());
                }
                Err(e) if is_code(&e, &[404]) => return Ok(()),
                Err(e) if is_code(&e, &[409]) => {
                    let Some(latest) =
                        api.get_opt(&name).await.map_err(|source| SyncError::Get {
                            ns: name.clone(),
                            source,
                        })?
                    else {
                        return Ok(());
                    };
                    if latest.metadata.uid != uid {
                        return Err(SyncError::UidChanged { ns: name });
                    }
                    ns = latest;
                }
                Err(source) => return Err(SyncError::Finalize { ns: name, source }),
            }
        }
    }

    /// Deletes everything in the namespace that discovery lists (upstream's
    /// `deleteAllContent`), collecting what remains and what failed.
    async fn delete_all_content(&self, ns: &str, since: Duration) -> Round {
        let mut round = Round::default();
        let (lists, discovery_error) = discover(&self.client).await;
        round.discovery_error = discovery_error;
        let (gvrs, parse_errors) = deletable(&lists);
        round.parse_errors = parse_errors;
        for gvr in &gvrs {
            match self.delete_gvr(ns, gvr, since).await {
                Ok(left) => round.add(gvr, left),
                Err((left, e)) => {
                    round.add(gvr, left);
                    round.content_errors.push(e);
                }
            }
        }
        round
    }

    /// Deletes one resource's content in the namespace and says what is left (upstream's
    /// `deleteAllContentForGroupVersionResource`).
    async fn delete_gvr(
        &self,
        ns: &str,
        gvr: &Gvr,
        since: Duration,
    ) -> Result<Left, (Left, String)> {
        let estimate = if gvr.group.is_empty() && gvr.resource == "pods" {
            let pods: Api<Pod> = Api::namespaced(self.client.clone(), ns);
            let list = pods
                .list(&ListParams::default())
                .await
                .map_err(|e| (Left::default(), api_message(&e)))?;
            pod_estimate(&list.items, since)
        } else {
            0
        };
        let fail = |e: &kube::Error| {
            (
                Left {
                    estimate,
                    ..Left::default()
                },
                api_message(e),
            )
        };
        let api: Api<DynamicObject> =
            Api::namespaced_with(self.client.clone(), ns, &gvr.api_resource());
        let mut each = !gvr.deletecollection;
        if gvr.deletecollection {
            match api
                .delete_collection(&DeleteParams::background(), &ListParams::default())
                .await
            {
                Ok(_) => {}
                Err(e) if is_code(&e, &[404, 405]) => each = true,
                Err(e) => return Err(fail(&e)),
            }
        }
        if !gvr.list {
            return Ok(Left {
                estimate,
                ..Left::default()
            });
        }
        if each {
            let Some(items) = list_present(&api).await.map_err(|e| fail(&e))? else {
                return Ok(Left::default());
            };
            for item in items {
                let name = item.metadata.name.unwrap_or_default();
                match api.delete(&name, &DeleteParams::background()).await {
                    Ok(_) => {}
                    Err(e) if is_code(&e, &[404, 405]) => {}
                    Err(e) => return Err(fail(&e)),
                }
            }
        }
        let Some(items) = list_present(&api).await.map_err(|e| fail(&e))? else {
            return Ok(Left::default());
        };
        let mut finalizers: BTreeMap<String, usize> = BTreeMap::new();
        for item in &items {
            for f in item.metadata.finalizers.iter().flatten() {
                *finalizers.entry(f.clone()).or_default() += 1;
            }
        }
        let left = Left {
            estimate,
            remaining: items.len(),
            finalizers,
        };
        if items.is_empty() || estimate > 0 {
            return Ok(left);
        }
        if !left.finalizers.is_empty() {
            return Ok(Left {
                estimate: FINALIZER_ESTIMATE,
                ..left
            });
        }
        Err((
            left,
            format!("unexpected items still remain in namespace: {ns} for gvr: {gvr}"),
        ))
    }
}

/// A terminating namespace's place in the queue.
struct Entry {
    /// When to sync it next (`None`: only on a change or after [`SYNC_PERIOD`]).
    due: Option<Instant>,
    /// The resourceVersion the last sync started from.
    synced_rv: Option<String>,
    last_sync: Instant,
    failures: u32,
}

fn backoff(failures: u32) -> Duration {
    BACKOFF_BASE
        .saturating_mul(2u32.saturating_pow(failures.saturating_sub(1).min(20)))
        .min(BACKOFF_MAX)
}

/// Runs the namespace controller: a queue of terminating namespaces, each synced
/// [`DELETION_GRACE`] after it changed, again after its estimate while content remains, with
/// backoff after a failure, and every [`SYNC_PERIOD`] regardless.
pub async fn run(client: kube::Client) {
    let wake = Arc::new(Notify::new());
    let namespaces: Store<Namespace> =
        runner::informer(Api::<Namespace>::all(client.clone()), wake.clone());
    runner::synced("namespace", vec![runner::ready(&namespaces)]).await;
    let deleter = Arc::new(Deleter { client });
    let mut queue: HashMap<String, Entry> = HashMap::new();
    loop {
        let now = Instant::now();
        let terminating: Vec<(String, Option<String>)> = namespaces
            .state()
            .iter()
            .filter(|n| n.metadata.deletion_timestamp.is_some())
            .map(|n| {
                (
                    n.metadata.name.clone().unwrap_or_default(),
                    n.metadata.resource_version.clone(),
                )
            })
            .collect();
        queue.retain(|name, _| terminating.iter().any(|(n, _)| n == name));
        for (name, rv) in &terminating {
            let e = queue.entry(name.clone()).or_insert(Entry {
                due: None,
                synced_rv: None,
                last_sync: now,
                failures: 0,
            });
            let changed = e.synced_rv.as_ref() != rv.as_ref();
            if e.due.is_none() && (changed || e.last_sync.elapsed() >= SYNC_PERIOD) {
                e.due = Some(now + DELETION_GRACE);
            }
        }
        let due: Vec<(String, Option<String>)> = terminating
            .into_iter()
            .filter(|(n, _)| queue.get(n).and_then(|e| e.due).is_some_and(|d| d <= now))
            .collect();
        let results = futures::future::join_all(due.iter().map(|(name, _)| {
            let d = deleter.clone();
            let name = name.clone();
            async move { d.sync(&name).await }
        }))
        .await;
        for ((name, rv), result) in due.into_iter().zip(results) {
            let Some(e) = queue.get_mut(&name) else {
                continue;
            };
            e.synced_rv = rv;
            e.last_sync = Instant::now();
            e.due = match result {
                Ok(()) => {
                    e.failures = 0;
                    None
                }
                Err(SyncError::Remaining(estimate)) => {
                    e.failures = 0;
                    Some(Instant::now() + Duration::from_secs((estimate / 2 + 1) as u64))
                }
                Err(err) => {
                    e.failures += 1;
                    log(
                        'E',
                        format!("deletion of namespace {name} failed: {}", chain(&err)),
                    );
                    Some(Instant::now() + backoff(e.failures))
                }
            };
        }
        let next = queue
            .values()
            .filter_map(|e| e.due)
            .min()
            .map(|d| d.saturating_duration_since(Instant::now()))
            .unwrap_or(SYNC_PERIOD)
            .min(SYNC_PERIOD);
        runner::next(&wake, next).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn only_namespaced_deletable_resources_and_bad_group_versions_named() {
        let lists: Vec<APIResourceList> = serde_json::from_value(json!([
            {"groupVersion": "v1", "resources": [
                {"name": "pods", "namespaced": true, "kind": "Pod", "singularName": "", "verbs": ["create", "delete", "deletecollection", "list"]},
                {"name": "pods/status", "namespaced": true, "kind": "Pod", "singularName": "", "verbs": ["get", "update"]},
                {"name": "bindings", "namespaced": true, "kind": "Binding", "singularName": "", "verbs": ["create"]},
                {"name": "nodes", "namespaced": false, "kind": "Node", "singularName": "", "verbs": ["delete", "list"]},
            ]},
            {"groupVersion": "example.com/v1", "resources": [
                {"name": "widgets", "namespaced": true, "kind": "Widget", "singularName": "", "verbs": ["delete", "list"]},
            ]},
            {"groupVersion": "a/b/c", "resources": []},
        ]))
        .unwrap();
        let (gvrs, bad) = deletable(&lists);
        let names: Vec<String> = gvrs.iter().map(|g| g.to_string()).collect();
        assert_eq!(
            names,
            ["/v1, Resource=pods", "example.com/v1, Resource=widgets"]
        );
        assert!(gvrs[0].deletecollection && !gvrs[1].deletecollection && gvrs[1].list);
        assert_eq!(bad, ["unexpected GroupVersion string: a/b/c"]);
    }

    #[test]
    fn conditions_say_what_remains_and_keep_transition_times() {
        let t0 = Time(k8s_openapi::jiff::Timestamp::from_second(1_000).unwrap());
        let t1 = Time(k8s_openapi::jiff::Timestamp::from_second(2_000).unwrap());
        let mut round = Round::default();
        let pods = Gvr {
            group: String::new(),
            version: "v1".into(),
            resource: "pods".into(),
            kind: "Pod".into(),
            deletecollection: true,
            list: true,
        };
        round.add(
            &pods,
            Left {
                estimate: FINALIZER_ESTIMATE,
                remaining: 2,
                finalizers: BTreeMap::from([("example.com/hold".to_owned(), 1)]),
            },
        );
        let mut conds = Vec::new();
        assert!(update_conditions(&mut conds, &round, &t0));
        let by = |ty: &str| conds.iter().find(|c| c.type_ == ty).unwrap().clone();
        assert_eq!(conds.len(), 5);
        let c = by("NamespaceContentRemaining");
        assert_eq!(
            (c.status.as_str(), c.reason.as_deref(), c.message.as_deref()),
            (
                "True",
                Some("SomeResourcesRemain"),
                Some("Some resources are remaining: pods. has 2 resource instances")
            )
        );
        let c = by("NamespaceFinalizersRemaining");
        assert_eq!(
            c.message.as_deref(),
            Some(
                "Some content in the namespace has finalizers remaining: example.com/hold in 1 resource instances"
            )
        );
        assert_eq!(c.reason.as_deref(), Some("SomeFinalizersRemain"));
        let c = by("NamespaceDeletionDiscoveryFailure");
        assert_eq!(
            (c.status.as_str(), c.reason.as_deref()),
            ("False", Some("ResourcesDiscovered"))
        );
        // The same round again changes nothing; an empty one flips the two to False and
        // stamps only them.
        assert!(!update_conditions(&mut conds, &round, &t1));
        assert!(update_conditions(&mut conds, &Round::default(), &t1));
        let by = |ty: &str| conds.iter().find(|c| c.type_ == ty).unwrap().clone();
        let c = by("NamespaceFinalizersRemaining");
        assert_eq!(
            (
                c.status.as_str(),
                c.reason.as_deref(),
                c.last_transition_time
            ),
            ("False", Some("ContentHasNoFinalizers"), Some(t1.clone()))
        );
        assert_eq!(
            by("NamespaceDeletionContentFailure").last_transition_time,
            Some(t0)
        );
    }

    #[test]
    fn content_failures_are_counted_in_one_message() {
        let round = Round {
            content_errors: vec!["b failed".into(), "a failed".into()],
            ..Round::default()
        };
        let f = round.failing();
        assert_eq!(
            f[0],
            (
                "NamespaceDeletionContentFailure",
                "ContentDeletionFailed",
                "Failed to delete all resource types, 2 remaining: a failed, b failed".to_owned()
            )
        );
    }

    #[test]
    fn graceful_pods_are_waited_for_until_their_grace_has_passed() {
        let pod = |grace: i64, phase: &str| -> Pod {
            serde_json::from_value(json!({"metadata": {"name": "p"},
                "spec": {"containers": [], "terminationGracePeriodSeconds": grace},
                "status": {"phase": phase}}))
            .unwrap()
        };
        let pods = [pod(30, "Running"), pod(100, "Succeeded")];
        assert_eq!(pod_estimate(&pods, Duration::from_secs(5)), 30);
        assert_eq!(pod_estimate(&pods, Duration::from_secs(30)), 0);
        assert_eq!(backoff(1), Duration::from_millis(5));
        assert_eq!(backoff(40), BACKOFF_MAX);
    }
}
