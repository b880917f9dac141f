//! `/stats/summary`: the node's and its pods' CPU, memory and filesystem use, in upstream's
//! Summary API shape (`k8s.io/kubelet/pkg/apis/stats/v1alpha1`), what `kubectl top` and
//! metrics-server read through `nodes/NAME/proxy/stats/summary`. Mirrors the kubelet's
//! `pkg/kubelet/server/stats` with the CRI stats provider: the node's figures from procfs and
//! statvfs (upstream asks cAdvisor for the root cgroup), each container's from CRI
//! `ListContainerStats`, a pod's the sum of its containers'. CPU rates (`usageNanoCores`)
//! come from two readings, as cAdvisor computes them. Without a container runtime (simulated
//! pods, static pods as host processes) pods are listed without figures, and the summary says
//! so. Leaves out network, volumes, `systemContainers`, `runtime.imageFs` and the
//! `only_cpu_and_memory` query.

use std::collections::HashMap;
use std::path::Path;
use std::sync::Mutex;
use std::time::Duration;

use k8s_cri::v1 as cri;
use k8s_openapi::api::core::v1::Pod;
use serde_json::{Value, json};

use super::spec;
use crate::runtime::cri::Cri;

/// One cumulative CPU reading: nanoseconds of CPU used, at a time in nanoseconds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CpuSample {
    pub at_ns: i64,
    pub used_ns: u64,
}

/// The previous CPU readings, by container ID (`""` is the node), to turn into rates.
#[derive(Debug, Default)]
pub struct Rates(Mutex<HashMap<String, CpuSample>>);

impl Rates {
    /// Nanocores used between the last reading of `id` and `now` (`None` on the first).
    pub fn rate(&self, id: &str, now: CpuSample) -> Option<u64> {
        let mut m = self.0.lock().ok()?;
        let before = m.insert(id.to_owned(), now)?;
        let dt = now.at_ns.checked_sub(before.at_ns).filter(|d| *d > 0)?;
        let used = now.used_ns.checked_sub(before.used_ns)?;
        Some((u128::from(used) * 1_000_000_000 / dt as u128) as u64)
    }
}

/// The node's memory, in bytes, computed as upstream's eviction manager and cAdvisor do:
/// working set is usage less inactive file pages, available is capacity less working set.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct NodeMemory {
    pub total: u64,
    pub free: u64,
    pub inactive_file: u64,
    pub anon: u64,
    pub page_faults: u64,
    pub major_page_faults: u64,
}

/// What `/stats/summary` shows of the node.
#[derive(Debug, Clone, Default)]
pub struct NodeSample {
    pub name: String,
    pub boot: i64,
    pub cpu: Option<CpuSample>,
    pub nano_cores: Option<u64>,
    pub memory: NodeMemory,
    /// statvfs of the kubelet's root dir: (available, capacity, used, inodes free, inodes).
    pub fs: Option<(u64, u64, u64, u64, u64)>,
}

fn rfc3339_ns(ns: i64) -> String {
    time::OffsetDateTime::from_unix_timestamp_nanos(i128::from(ns))
        .ok()
        .and_then(|t| t.replace_nanosecond(0).ok())
        .and_then(|t| {
            t.format(&time::format_description::well_known::Rfc3339)
                .ok()
        })
        .unwrap_or_default()
}

fn cpu_json(at_ns: i64, used_ns: Option<u64>, nano_cores: Option<u64>) -> Value {
    let mut v = json!({"time": rfc3339_ns(at_ns)});
    if let Some(n) = nano_cores {
        v["usageNanoCores"] = n.into();
    }
    if let Some(u) = used_ns {
        v["usageCoreNanoSeconds"] = u.into();
    }
    v
}

fn node_json(n: &NodeSample, now_ns: i64) -> Value {
    let m = &n.memory;
    let usage = m.total.saturating_sub(m.free);
    let working_set = usage.saturating_sub(m.inactive_file);
    let mut node = json!({
        "nodeName": n.name,
        "startTime": rfc3339_ns(n.boot * 1_000_000_000),
        "cpu": cpu_json(
            n.cpu.map_or(now_ns, |c| c.at_ns),
            n.cpu.map(|c| c.used_ns),
            n.nano_cores,
        ),
        "memory": {
            "time": rfc3339_ns(now_ns),
            "availableBytes": m.total.saturating_sub(working_set),
            "usageBytes": usage,
            "workingSetBytes": working_set,
            "rssBytes": m.anon,
            "pageFaults": m.page_faults,
            "majorPageFaults": m.major_page_faults,
        },
    });
    if let Some((available, capacity, used, inodes_free, inodes)) = n.fs {
        node["fs"] = json!({
            "time": rfc3339_ns(now_ns),
            "availableBytes": available,
            "capacityBytes": capacity,
            "usedBytes": used,
            "inodesFree": inodes_free,
            "inodes": inodes,
            "inodesUsed": inodes.saturating_sub(inodes_free),
        });
    }
    node
}

fn u64_of(v: Option<&cri::UInt64Value>) -> Option<u64> {
    v.map(|v| v.value)
}

/// One container's entry, and its figures to add to its pod's.
fn container_json(s: &cri::ContainerStats, nano_cores: Option<u64>) -> Value {
    let name = s
        .attributes
        .as_ref()
        .and_then(|a| a.metadata.as_ref())
        .map(|m| m.name.clone())
        .unwrap_or_default();
    let mut c = json!({"name": name});
    if let Some(cpu) = &s.cpu {
        // The rate over the kubelet's own two readings when it has them: containerd 1.6
        // sends usageNanoCores as 0 rather than leaving it out.
        let n = nano_cores.or(u64_of(cpu.usage_nano_cores.as_ref()));
        c["cpu"] = cpu_json(
            cpu.timestamp,
            u64_of(cpu.usage_core_nano_seconds.as_ref()),
            n,
        );
    }
    if let Some(m) = &s.memory {
        let mut mem = json!({"time": rfc3339_ns(m.timestamp)});
        for (key, v) in [
            ("availableBytes", &m.available_bytes),
            ("usageBytes", &m.usage_bytes),
            ("workingSetBytes", &m.working_set_bytes),
            ("rssBytes", &m.rss_bytes),
            ("pageFaults", &m.page_faults),
            ("majorPageFaults", &m.major_page_faults),
        ] {
            if let Some(v) = u64_of(v.as_ref()) {
                mem[key] = v.into();
            }
        }
        c["memory"] = mem;
    }
    if let Some(fs) = &s.writable_layer {
        let mut rootfs = json!({"time": rfc3339_ns(fs.timestamp)});
        if let Some(u) = u64_of(fs.used_bytes.as_ref()) {
            rootfs["usedBytes"] = u.into();
        }
        if let Some(i) = u64_of(fs.inodes_used.as_ref()) {
            rootfs["inodesUsed"] = i.into();
        }
        c["rootfs"] = rootfs;
    }
    c
}

/// Sums the numbers under `section` (`cpu`, `memory`) of the containers, as a pod's figures.
fn pod_sum(containers: &[Value], section: &str) -> Option<Value> {
    let with: Vec<&Value> = containers.iter().filter_map(|c| c.get(section)).collect();
    let first = with.first()?;
    let mut sum = json!({"time": first["time"].clone()});
    for key in [
        "usageNanoCores",
        "usageCoreNanoSeconds",
        "usageBytes",
        "workingSetBytes",
        "rssBytes",
        "pageFaults",
        "majorPageFaults",
    ] {
        let values: Vec<u64> = with.iter().filter_map(|v| v[key].as_u64()).collect();
        if !values.is_empty() {
            sum[key] = values.iter().sum::<u64>().into();
        }
    }
    Some(sum)
}

/// The Summary: the node, and each pod the kubelet runs with its containers' figures
/// (`stats` by container ID with the CPU rate computed for it; `None`: no runtime).
pub fn summary(
    node: &NodeSample,
    now_ns: i64,
    pods: &[Pod],
    stats: Option<&[(cri::ContainerStats, Option<u64>)]>,
) -> Value {
    let mut out = Vec::new();
    for pod in pods {
        let r = spec::PodRef::of(pod);
        let containers: Vec<Value> = stats
            .unwrap_or_default()
            .iter()
            .filter(|(s, _)| {
                s.attributes
                    .as_ref()
                    .and_then(|a| a.labels.get(spec::POD_UID))
                    == Some(&r.uid)
            })
            .map(|(s, n)| container_json(s, *n))
            .collect();
        let mut p = json!({
            "podRef": {"name": r.name, "namespace": r.namespace, "uid": r.uid},
            "containers": containers,
        });
        if let Some(t) = pod.status.as_ref().and_then(|s| s.start_time.as_ref()) {
            p["startTime"] = json!(t);
        }
        for section in ["cpu", "memory"] {
            if let Some(sum) = pod_sum(&containers, section) {
                p[section] = sum;
            }
        }
        out.push(p);
    }
    let mut s = json!({"node": node_json(node, now_ns), "pods": out});
    if stats.is_none() {
        s["klabNote"] = "no container runtime on this node: pods are listed without figures (simulated pods run no processes; static pods run as host processes, which are not measured); the node's figures are real".into();
    }
    s
}

fn read(path: &str) -> String {
    std::fs::read_to_string(path).unwrap_or_default()
}

/// Nanoseconds of CPU the whole node has used since boot (`/proc/stat`, all but idle and
/// iowait), and the boot time.
fn node_cpu() -> (Option<u64>, i64) {
    let stat = read("/proc/stat");
    let boot = stat
        .lines()
        .find_map(|l| l.strip_prefix("btime "))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0);
    let used = stat.lines().next().and_then(|l| {
        let f: Vec<u64> = l
            .split_whitespace()
            .skip(1)
            .filter_map(|v| v.parse().ok())
            .collect();
        // user nice system idle iowait irq softirq steal: ticks of 1/USER_HZ (100) s.
        let busy = [0, 1, 2, 5, 6, 7]
            .iter()
            .filter_map(|i| f.get(*i))
            .sum::<u64>();
        (f.len() >= 4).then_some(busy * 10_000_000)
    });
    (used, boot)
}

fn node_memory() -> NodeMemory {
    let kib = super::node::meminfo();
    let get = |k: &str| kib.get(k).copied().unwrap_or(0) * 1024;
    let vmstat: HashMap<String, u64> = read("/proc/vmstat")
        .lines()
        .filter_map(|l| {
            let (k, v) = l.split_once(' ')?;
            Some((k.to_owned(), v.trim().parse().ok()?))
        })
        .collect();
    NodeMemory {
        total: get("MemTotal"),
        free: get("MemFree"),
        inactive_file: get("Inactive(file)"),
        anon: get("AnonPages"),
        page_faults: vmstat.get("pgfault").copied().unwrap_or(0),
        major_page_faults: vmstat.get("pgmajfault").copied().unwrap_or(0),
    }
}

fn now_ns() -> i64 {
    i64::try_from(time::OffsetDateTime::now_utc().unix_timestamp_nanos()).unwrap_or(0)
}

/// Reads the node now. The first reading waits a tenth of a second for a second CPU sample,
/// so that even the first answer has a rate.
pub async fn sample_node(name: &str, root: &Path, rates: &Rates) -> NodeSample {
    let read_cpu = || {
        let (used, boot) = node_cpu();
        (
            used.map(|used_ns| CpuSample {
                at_ns: now_ns(),
                used_ns,
            }),
            boot,
        )
    };
    let (mut cpu, boot) = read_cpu();
    let mut nano_cores = cpu.and_then(|c| rates.rate("", c));
    if nano_cores.is_none() {
        tokio::time::sleep(Duration::from_millis(100)).await;
        cpu = read_cpu().0;
        nano_cores = cpu.and_then(|c| rates.rate("", c));
    }
    let fs = rustix::fs::statvfs(root).ok().map(|s| {
        (
            s.f_bavail * s.f_frsize,
            s.f_blocks * s.f_frsize,
            (s.f_blocks - s.f_bfree) * s.f_frsize,
            s.f_ffree,
            s.f_files,
        )
    });
    NodeSample {
        name: name.to_owned(),
        boot,
        cpu,
        nano_cores,
        memory: node_memory(),
        fs,
    }
}

/// The runtime's container stats, each with the CPU rate since its previous reading.
pub async fn container_stats(
    cri: &mut Cri,
    rates: &Rates,
) -> Result<Vec<(cri::ContainerStats, Option<u64>)>, crate::runtime::Error> {
    let stats = cri.list_container_stats().await?;
    Ok(stats
        .into_iter()
        .map(|s| {
            let id = s
                .attributes
                .as_ref()
                .map(|a| a.id.clone())
                .unwrap_or_default();
            let rate = s.cpu.as_ref().and_then(|c| {
                let used_ns = u64_of(c.usage_core_nano_seconds.as_ref())?;
                rates.rate(
                    &id,
                    CpuSample {
                        at_ns: c.timestamp,
                        used_ns,
                    },
                )
            });
            (s, rate)
        })
        .collect())
}

/// The whole answer of `/stats/summary`.
pub async fn serve(
    node: &str,
    root: &Path,
    cri: Option<Cri>,
    rates: &Rates,
    pods: &[Pod],
) -> Result<Value, crate::runtime::Error> {
    let sample = sample_node(node, root, rates).await;
    let stats = match cri {
        Some(mut cri) => Some(container_stats(&mut cri, rates).await?),
        None => None,
    };
    Ok(summary(&sample, now_ns(), pods, stats.as_deref()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rates_from_two_samples() {
        let r = Rates::default();
        let s = |at_ns, used_ns| CpuSample { at_ns, used_ns };
        assert_eq!(r.rate("c", s(1_000_000_000, 0)), None);
        // Half a core: 0.5 s of CPU in one second.
        assert_eq!(
            r.rate("c", s(2_000_000_000, 500_000_000)),
            Some(500_000_000)
        );
        assert_eq!(
            r.rate("c", s(2_000_000_000, 600_000_000)),
            None,
            "no time passed"
        );
    }

    #[test]
    fn summary_shape() {
        let node = NodeSample {
            name: "n1".into(),
            boot: 0,
            cpu: Some(CpuSample {
                at_ns: 0,
                used_ns: 7,
            }),
            nano_cores: Some(3),
            memory: NodeMemory {
                total: 100,
                free: 40,
                inactive_file: 10,
                anon: 20,
                page_faults: 1,
                major_page_faults: 0,
            },
            fs: Some((5, 10, 5, 1, 2)),
        };
        let pod: Pod = serde_json::from_value(json!({
            "metadata": {"name": "web", "namespace": "default", "uid": "u1"},
        }))
        .unwrap();
        let container = |name: &str, uid: &str, bytes: u64| cri::ContainerStats {
            attributes: Some(cri::ContainerAttributes {
                id: name.into(),
                metadata: Some(cri::ContainerMetadata {
                    name: name.into(),
                    attempt: 0,
                }),
                labels: [(spec::POD_UID.to_owned(), uid.to_owned())].into(),
                annotations: HashMap::new(),
            }),
            memory: Some(cri::MemoryUsage {
                working_set_bytes: Some(cri::UInt64Value { value: bytes }),
                ..Default::default()
            }),
            ..Default::default()
        };
        let stats = vec![
            (container("a", "u1", 1000), None),
            (container("b", "u1", 24), None),
            (container("x", "other", 5), None),
        ];
        let s = summary(&node, 0, std::slice::from_ref(&pod), Some(&stats));
        assert_eq!(s["node"]["memory"]["usageBytes"], 60);
        assert_eq!(s["node"]["memory"]["workingSetBytes"], 50);
        assert_eq!(s["node"]["memory"]["availableBytes"], 50);
        assert_eq!(s["node"]["cpu"]["usageNanoCores"], 3);
        assert_eq!(s["node"]["fs"]["inodesUsed"], 1);
        let p = &s["pods"][0];
        assert_eq!(p["podRef"]["uid"], "u1");
        assert_eq!(p["containers"].as_array().unwrap().len(), 2);
        assert_eq!(p["memory"]["workingSetBytes"], 1024);
        assert!(s.get("klabNote").is_none());
        let sim = summary(&node, 0, &[pod], None);
        assert_eq!(sim["pods"][0]["containers"], json!([]));
        assert!(
            sim["klabNote"]
                .as_str()
                .unwrap()
                .contains("no container runtime")
        );
    }
}
