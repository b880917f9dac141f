//! The plain-words diagnosis of `klab cluster-info dump` (`klab/diagnosis.txt`): what a
//! workshop helper reads first in a dump — NotReady and tainted nodes, Pending pods with the
//! scheduler's FailedScheduling words, waiting containers (CrashLoopBackOff, image pulls),
//! failed pods and failed probes (the kubelet's Unhealthy events). kubectl has no counterpart;
//! the reasons and messages quoted are upstream's, from the objects' status and Events.
//!
//! A pure function from the dumped objects to text; it leaves out volumes, quotas and
//! controllers' conditions (a Deployment's Progressing), which need more than these objects.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use k8s_openapi::api::core::v1::{ContainerStatus, Event, Node, Pod};

/// The objects the diagnosis reads, as a dump holds them.
#[derive(Debug, Default, Clone)]
pub struct Objects {
    /// The namespaces dumped, in the dump's order.
    pub namespaces: Vec<String>,
    pub nodes: Vec<Node>,
    pub pods: Vec<Pod>,
    pub events: Vec<Event>,
}

/// Why a dump folder could not be read back.
#[derive(Debug, thiserror::Error)]
pub enum ReadError {
    #[error("reading {}", path.display())]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{} is not a JSON list as `kubectl cluster-info dump` writes one", path.display())]
    Parse {
        path: PathBuf,
        #[source]
        source: serde_json::Error,
    },
}

/// The items of a list that parse as `T`; an item that does not is left out (the diagnosis
/// reads what it can, as a person would).
pub fn items<T: serde::de::DeserializeOwned>(list: &serde_json::Value) -> Vec<T> {
    list.get("items")
        .and_then(|i| i.as_array())
        .map(|items| {
            items
                .iter()
                .filter_map(|i| serde_json::from_value(i.clone()).ok())
                .collect()
        })
        .unwrap_or_default()
}

impl Objects {
    /// Reads a dump folder in kubectl's JSON layout (`nodes.json`, `<ns>/pods.json`,
    /// `<ns>/events.json`), whoever wrote it: klab or `kubectl cluster-info dump`.
    pub fn from_dump_dir(dir: &Path) -> Result<Objects, ReadError> {
        let read = |path: PathBuf| -> Result<serde_json::Value, ReadError> {
            let text = std::fs::read_to_string(&path).map_err(|source| ReadError::Read {
                path: path.clone(),
                source,
            })?;
            serde_json::from_str(&text).map_err(|source| ReadError::Parse { path, source })
        };
        let mut objects = Objects {
            nodes: items(&read(dir.join("nodes.json"))?),
            ..Objects::default()
        };
        let entries = std::fs::read_dir(dir).map_err(|source| ReadError::Read {
            path: dir.to_path_buf(),
            source,
        })?;
        let mut namespaces: Vec<PathBuf> = entries
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.join("pods.json").is_file())
            .collect();
        namespaces.sort();
        for ns in namespaces {
            let name = ns
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default();
            objects.namespaces.push(name);
            objects
                .pods
                .extend(items::<Pod>(&read(ns.join("pods.json"))?));
            if ns.join("events.json").is_file() {
                objects
                    .events
                    .extend(items::<Event>(&read(ns.join("events.json"))?));
            }
        }
        Ok(objects)
    }
}

fn ns_name(meta: &k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta) -> String {
    format!(
        "{}/{}",
        meta.namespace.as_deref().unwrap_or(""),
        meta.name.as_deref().unwrap_or("")
    )
}

/// How many times an Event happened: `count` (core/v1), `series.count`, or once.
fn times(e: &Event) -> i32 {
    e.series
        .as_ref()
        .and_then(|s| s.count)
        .or(e.count)
        .unwrap_or(1)
        .max(1)
}

/// When an Event last happened: its series' last observation, last timestamp, event time or
/// creation, whichever it has.
fn last_seen(e: &Event) -> Option<k8s_openapi::jiff::Timestamp> {
    e.series
        .as_ref()
        .and_then(|s| s.last_observed_time.as_ref())
        .map(|t| t.0)
        .or_else(|| e.last_timestamp.as_ref().map(|t| t.0))
        .or_else(|| e.event_time.as_ref().map(|t| t.0))
        .or_else(|| e.metadata.creation_timestamp.as_ref().map(|t| t.0))
}

/// Events with this reason, grouped by the pod they are about: (total count, latest message).
fn events_by_pod(events: &[Event], reason: &str) -> BTreeMap<String, (i32, String)> {
    let mut sorted: Vec<&Event> = events
        .iter()
        .filter(|e| e.reason.as_deref() == Some(reason))
        .filter(|e| e.involved_object.kind.as_deref().unwrap_or("Pod") == "Pod")
        .collect();
    sorted.sort_by_key(|e| last_seen(e));
    let mut out: BTreeMap<String, (i32, String)> = BTreeMap::new();
    for e in sorted {
        let o = &e.involved_object;
        let key = format!(
            "{}/{}",
            o.namespace
                .as_deref()
                .or(e.metadata.namespace.as_deref())
                .unwrap_or(""),
            o.name.as_deref().unwrap_or("")
        );
        let entry = out.entry(key).or_default();
        entry.0 += times(e);
        entry.1 = e.message.clone().unwrap_or_default().trim().to_string();
    }
    out
}

fn times_text(n: i32) -> String {
    if n == 1 {
        "once".into()
    } else {
        format!("{n} times")
    }
}

fn node_lines(nodes: &[Node], lines: &mut Vec<String>) -> (usize, usize) {
    let mut sorted: Vec<&Node> = nodes.iter().collect();
    sorted.sort_by_key(|n| n.metadata.name.clone());
    let (mut not_ready, mut tainted) = (0, 0);
    for n in sorted {
        let name = n.metadata.name.as_deref().unwrap_or("");
        let conditions = n
            .status
            .as_ref()
            .and_then(|s| s.conditions.clone())
            .unwrap_or_default();
        match conditions.iter().find(|c| c.type_ == "Ready") {
            Some(c) if c.status == "True" => {}
            Some(c) => {
                not_ready += 1;
                let why = match (c.reason.as_deref(), c.message.as_deref()) {
                    (Some(r), Some(m)) if !m.is_empty() => format!("{r}: {m}"),
                    (Some(r), _) => r.to_string(),
                    (None, Some(m)) => m.to_string(),
                    (None, None) => "no reason given".into(),
                };
                let what = if c.status == "Unknown" {
                    "is NotReady (Ready is Unknown: its kubelet stopped posting status)"
                } else {
                    "is NotReady"
                };
                lines.push(format!("node {name} {what}: {why}"));
            }
            None => {
                not_ready += 1;
                lines.push(format!(
                    "node {name} is NotReady: it has no Ready condition (its kubelet never reported)"
                ));
            }
        }
        for c in &conditions {
            if matches!(
                c.type_.as_str(),
                "MemoryPressure" | "DiskPressure" | "PIDPressure" | "NetworkUnavailable"
            ) && c.status == "True"
            {
                lines.push(format!(
                    "node {name} has {}: {}",
                    c.type_,
                    c.message.as_deref().unwrap_or("no message")
                ));
            }
        }
        let taints = n
            .spec
            .as_ref()
            .and_then(|s| s.taints.clone())
            .unwrap_or_default();
        if !taints.is_empty() {
            tainted += 1;
            let list: Vec<String> = taints
                .iter()
                .map(|t| match t.value.as_deref().filter(|v| !v.is_empty()) {
                    Some(v) => format!("{}={v}:{}", t.key, t.effect),
                    None => format!("{}:{}", t.key, t.effect),
                })
                .collect();
            lines.push(format!(
                "node {name} has taints {} (only pods that tolerate them run there)",
                list.join(", ")
            ));
        }
    }
    (not_ready, tainted)
}

fn waiting_line(pod: &str, s: &ContainerStatus, init: bool) -> Option<String> {
    let state = s.state.as_ref()?;
    let kind = if init { "init container" } else { "container" };
    if let Some(w) = &state.waiting {
        let reason = w.reason.as_deref().unwrap_or("waiting");
        let mut line = format!("pod {pod}: {kind} {} is waiting: {reason}", s.name);
        if let Some(m) = w.message.as_deref().filter(|m| !m.is_empty()) {
            let _ = write!(line, " ({m})");
        }
        if let Some(t) = s.last_state.as_ref().and_then(|l| l.terminated.as_ref()) {
            let _ = write!(
                line,
                "; it last exited with code {}{}",
                t.exit_code,
                t.reason
                    .as_deref()
                    .map(|r| format!(" ({r})"))
                    .unwrap_or_default()
            );
        }
        if s.restart_count > 0 {
            let _ = write!(line, "; restarted {}", times_text(s.restart_count));
        }
        return Some(line);
    }
    if let Some(t) = &state.terminated
        && t.exit_code != 0
    {
        return Some(format!(
            "pod {pod}: {kind} {} exited with code {}{}",
            s.name,
            t.exit_code,
            t.reason
                .as_deref()
                .map(|r| format!(" ({r})"))
                .unwrap_or_default()
        ));
    }
    None
}

fn pod_lines(objects: &Objects, lines: &mut Vec<String>) -> (usize, usize) {
    let failed_scheduling = events_by_pod(&objects.events, "FailedScheduling");
    let mut sorted: Vec<&Pod> = objects.pods.iter().collect();
    sorted.sort_by_key(|p| ns_name(&p.metadata));
    let (mut pending, mut waiting) = (0, 0);
    for p in sorted {
        let key = ns_name(&p.metadata);
        let status = p.status.clone().unwrap_or_default();
        let phase = status.phase.as_deref().unwrap_or("Pending");
        let node = p.spec.as_ref().and_then(|s| s.node_name.clone());
        if phase == "Pending" {
            pending += 1;
            match (&node, failed_scheduling.get(&key)) {
                (None, Some((n, message))) => lines.push(format!(
                    "pod {key} is Pending, not scheduled: {message} (FailedScheduling, {})",
                    times_text(*n)
                )),
                (None, None) => lines.push(format!(
                    "pod {key} is Pending and not scheduled, with no FailedScheduling event (is kube-scheduler running?)"
                )),
                (Some(node), _) => lines.push(format!(
                    "pod {key} is Pending on node {node}: its containers have not started"
                )),
            }
        }
        if phase == "Failed" {
            lines.push(format!(
                "pod {key} has Failed{}{}",
                status
                    .reason
                    .as_deref()
                    .map(|r| format!(": {r}"))
                    .unwrap_or_default(),
                status
                    .message
                    .as_deref()
                    .map(|m| format!(" ({m})"))
                    .unwrap_or_default()
            ));
        }
        let init = status.init_container_statuses.iter().flatten();
        let main = status.container_statuses.iter().flatten();
        for (s, is_init) in init.map(|s| (s, true)).chain(main.map(|s| (s, false))) {
            if let Some(line) = waiting_line(&key, s, is_init) {
                waiting += 1;
                lines.push(line);
            }
        }
    }
    (pending, waiting)
}

/// The diagnosis: a heading with the counts, then one line per finding.
pub fn diagnose(objects: &Objects) -> String {
    let mut out = String::new();
    let mut namespaces = objects.namespaces.clone();
    namespaces.sort();
    let _ = writeln!(
        out,
        "Diagnosis of {} node(s) and {} pod(s) in namespace(s) {}",
        objects.nodes.len(),
        objects.pods.len(),
        if namespaces.is_empty() {
            "(none)".to_string()
        } else {
            namespaces.join(", ")
        }
    );

    let mut node_findings = Vec::new();
    let (not_ready, tainted) = node_lines(&objects.nodes, &mut node_findings);
    let mut pod_findings = Vec::new();
    let (pending, waiting) = pod_lines(objects, &mut pod_findings);
    let unhealthy = events_by_pod(&objects.events, "Unhealthy");
    let probe_findings: Vec<String> = unhealthy
        .iter()
        .map(|(pod, (n, message))| format!("pod {pod}: {message} (Unhealthy, {})", times_text(*n)))
        .collect();

    let _ = writeln!(out, "\nNodes: {not_ready} NotReady, {tainted} with taints");
    if objects.nodes.is_empty() {
        let _ = writeln!(
            out,
            "  There are no nodes: no pod can run until a kubelet registers one."
        );
    }
    for l in &node_findings {
        let _ = writeln!(out, "  {l}");
    }
    let _ = writeln!(
        out,
        "\nPods: {pending} Pending, {waiting} container(s) waiting or failed"
    );
    for l in &pod_findings {
        let _ = writeln!(out, "  {l}");
    }
    let _ = writeln!(out, "\nProbes: {} pod(s) failed a probe", unhealthy.len());
    for l in &probe_findings {
        let _ = writeln!(out, "  {l}");
    }
    if node_findings.is_empty()
        && pod_findings.is_empty()
        && probe_findings.is_empty()
        && !objects.nodes.is_empty()
    {
        let _ = writeln!(
            out,
            "\nNothing looks wrong: every node is Ready and untainted, no pod is Pending or \
             waiting, and no probe failed."
        );
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn node(name: &str, ready: &str, taints: serde_json::Value) -> Node {
        serde_json::from_value(json!({
            "metadata": {"name": name},
            "spec": {"taints": taints},
            "status": {"conditions": [{"type": "Ready", "status": ready, "reason": "KubeletNotReady",
                                        "message": "container runtime network not ready"}]}
        }))
        .unwrap()
    }

    #[test]
    fn a_healthy_cluster_says_so() {
        let objects = Objects {
            namespaces: vec!["default".into()],
            nodes: vec![node("n1", "True", json!(null))],
            ..Default::default()
        };
        let text = diagnose(&objects);
        assert!(text.contains("Nothing looks wrong"), "{text}");
        assert!(text.contains("Nodes: 0 NotReady, 0 with taints"), "{text}");
    }

    #[test]
    fn not_ready_and_taints_are_named() {
        let objects = Objects {
            nodes: vec![node(
                "n2",
                "False",
                json!([{"key": "node.kubernetes.io/not-ready", "effect": "NoSchedule"}]),
            )],
            ..Default::default()
        };
        let text = diagnose(&objects);
        assert!(
            text.contains(
                "node n2 is NotReady: KubeletNotReady: container runtime network not ready"
            ),
            "{text}"
        );
        assert!(
            text.contains("node n2 has taints node.kubernetes.io/not-ready:NoSchedule"),
            "{text}"
        );
        assert!(!text.contains("Nothing looks wrong"), "{text}");
    }

    #[test]
    fn pending_pods_quote_the_latest_failed_scheduling_event() {
        let pod: Pod = serde_json::from_value(json!({
            "metadata": {"name": "big", "namespace": "default"},
            "status": {"phase": "Pending"}
        }))
        .unwrap();
        let ev = |msg: &str, at: &str, count: i32| -> Event {
            serde_json::from_value(json!({
                "metadata": {"name": format!("big.{at}"), "namespace": "default"},
                "involvedObject": {"kind": "Pod", "namespace": "default", "name": "big"},
                "reason": "FailedScheduling", "message": msg, "count": count,
                "lastTimestamp": at
            }))
            .unwrap()
        };
        let objects = Objects {
            pods: vec![pod],
            events: vec![
                ev(
                    "0/1 nodes are available: 1 Insufficient cpu.",
                    "2026-01-01T00:00:09Z",
                    2,
                ),
                ev("0/1 nodes are available.", "2026-01-01T00:00:01Z", 1),
            ],
            ..Default::default()
        };
        let text = diagnose(&objects);
        assert!(
            text.contains("pod default/big is Pending, not scheduled: 0/1 nodes are available: 1 Insufficient cpu. (FailedScheduling, 3 times)"),
            "{text}"
        );
    }
}
