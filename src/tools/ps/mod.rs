//! `klab ps`: the cluster's processes as `ps auxww` shows them inside a kind or kubeadm node,
//! grouped by role, with every flag explained (`--flags`) and judged (`--check`, kube-bench's
//! shape). Works on this machine's /proc or on a captured `ps auxww` text.

mod capture;
pub mod catalog;
pub mod check;
mod explain;
mod live;
mod process;

use std::collections::{BTreeMap, HashSet};
use std::io::Write;
use std::path::{Path, PathBuf};

use serde::Serialize;

pub use check::{Report, check};
pub use explain::explain;
pub use process::{Effective, GivenFlag, Process};

use crate::cli::{OutputFormat, PsArgs};
use crate::tools::output::write_structured;
use catalog::Plane;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("reading {}", path.display())]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{what} is not a `ps auxww` capture: {reason}")]
    NotACapture { what: String, reason: String },
    #[error("{what}:{line}: not a `ps auxww` line: {reason}")]
    BadLine {
        what: String,
        line: usize,
        reason: String,
    },
    #[error("reading /proc: {0}")]
    Proc(String),
    #[error("unknown component \"{name}\" (known: {known})")]
    UnknownComponent { name: String, known: String },
    #[error("writing the output")]
    Output(#[from] std::io::Error),
}

/// Where the processes come from.
pub enum Source<'a> {
    Live,
    Capture { what: String, text: &'a str },
}

/// Loads the processes: all of them with `all`, else the cluster's and their descendants.
pub fn load(source: Source<'_>, all: bool) -> Result<Vec<Process>, Error> {
    let procs = match source {
        Source::Live => live::processes()?,
        Source::Capture { what, text } => capture::parse(&what, text)?,
    };
    if all {
        return Ok(procs);
    }
    // Keep components, and everything below them (a shim's pause and app processes, the
    // kubelet's host-process pods), so a pod's processes appear under the shim that runs them.
    let mut keep: HashSet<u32> = procs
        .iter()
        .filter(|p| p.component().is_some())
        .map(|p| p.pid)
        .collect();
    loop {
        let before = keep.len();
        for p in &procs {
            if p.ppid.is_some_and(|pp| keep.contains(&pp)) {
                keep.insert(p.pid);
            }
        }
        if keep.len() == before {
            break;
        }
    }
    Ok(procs
        .into_iter()
        .filter(|p| keep.contains(&p.pid))
        .collect())
}

/// Orders processes as a tree (parents first, children indented with ps f's `\_ `) where
/// parents are known; a capture keeps its own order.
fn tree(procs: &[Process]) -> Vec<(usize, &Process)> {
    let pids: HashSet<u32> = procs.iter().map(|p| p.pid).collect();
    let mut children: BTreeMap<u32, Vec<&Process>> = BTreeMap::new();
    let mut roots = Vec::new();
    for p in procs {
        match p.ppid.filter(|pp| pids.contains(pp) && *pp != p.pid) {
            Some(pp) => children.entry(pp).or_default().push(p),
            None => roots.push(p),
        }
    }
    fn walk<'a>(
        p: &'a Process,
        depth: usize,
        children: &BTreeMap<u32, Vec<&'a Process>>,
        out: &mut Vec<(usize, &'a Process)>,
    ) {
        out.push((depth, p));
        for c in children.get(&p.pid).into_iter().flatten() {
            walk(c, depth + 1, children, out);
        }
    }
    let mut out = Vec::new();
    for r in roots {
        walk(r, 0, &children, &mut out);
    }
    out
}

/// The `ps auxww` table: numbers right-aligned, one space apart, COMMAND last and whole.
fn write_ps_table(procs: &[Process], out: &mut dyn Write) -> std::io::Result<()> {
    let header = [
        "USER", "PID", "%CPU", "%MEM", "VSZ", "RSS", "TTY", "STAT", "START", "TIME",
    ];
    let right = [
        false, true, true, true, true, true, false, false, false, true,
    ];
    let rows: Vec<(Vec<String>, String)> = tree(procs)
        .into_iter()
        .map(|(depth, p)| {
            let prefix = if depth == 0 {
                String::new()
            } else {
                format!("{} \\_ ", "    ".repeat(depth - 1))
            };
            let cells = vec![
                p.user.clone(),
                p.pid.to_string(),
                format!("{:.1}", p.cpu),
                format!("{:.1}", p.mem),
                p.vsz.to_string(),
                p.rss.to_string(),
                p.tty.clone(),
                p.stat.clone(),
                p.start.clone(),
                p.time.clone(),
            ];
            (cells, format!("{prefix}{}", p.command))
        })
        .collect();
    let mut widths: Vec<usize> = header.iter().map(|h| h.len()).collect();
    for (cells, _) in &rows {
        for (w, c) in widths.iter_mut().zip(cells) {
            *w = (*w).max(c.len());
        }
    }
    let line = |cells: &[String], command: &str| -> String {
        let mut s = String::new();
        for ((c, w), r) in cells.iter().zip(&widths).zip(right) {
            if r {
                s.push_str(&format!("{c:>w$} "))
            } else {
                s.push_str(&format!("{c:<w$} "))
            }
        }
        s.push_str(command);
        s
    };
    let head: Vec<String> = header.iter().map(|h| h.to_string()).collect();
    writeln!(out, "{}", line(&head, "COMMAND"))?;
    for (cells, command) in &rows {
        writeln!(out, "{}", line(cells, command))?;
    }
    Ok(())
}

/// The roles line-up under the table: who plays where, and which of the seed's five
/// control-plane components is not running.
fn write_summary(procs: &[Process], out: &mut dyn Write) -> std::io::Result<()> {
    let planes = [
        (Plane::ControlPlane, "control plane"),
        (Plane::Node, "node"),
        (Plane::Runtime, "runtime"),
        (Plane::Addon, "add-ons"),
    ];
    writeln!(out)?;
    for (plane, label) in planes {
        let mut seen: Vec<(&str, Vec<u32>)> = Vec::new();
        for p in procs {
            let Some(c) = p.component().filter(|c| c.plane == plane) else {
                continue;
            };
            match seen.iter_mut().find(|(n, _)| *n == c.name) {
                Some((_, pids)) => pids.push(p.pid),
                None => seen.push((c.name, vec![p.pid])),
            }
        }
        if seen.is_empty() {
            continue;
        }
        let items: Vec<String> = seen
            .iter()
            .map(|(n, pids)| match pids.as_slice() {
                [one] => format!("{n} ({one})"),
                many => format!("{n} ×{}", many.len()),
            })
            .collect();
        writeln!(out, "{label:<14} {}", items.join(", "))?;
    }
    let running: HashSet<&str> = procs
        .iter()
        .filter_map(|p| p.component())
        .map(|c| c.name)
        .collect();
    let store = ["etcd", "klab-store"].iter().any(|s| running.contains(s));
    let missing: Vec<&str> = [
        "kube-apiserver",
        "kube-controller-manager",
        "kube-scheduler",
        "cloud-controller-manager",
        "kubelet",
        "kube-proxy",
    ]
    .into_iter()
    .filter(|n| !running.contains(n))
    .chain((!store).then_some("etcd or klab-store"))
    .collect();
    if !missing.is_empty() {
        writeln!(out, "{:<14} {}", "not running", missing.join(", "))?;
    }
    Ok(())
}

#[derive(Serialize)]
struct ProcessRecord<'a> {
    #[serde(flatten)]
    process: &'a Process,
    #[serde(skip_serializing_if = "Option::is_none")]
    component: Option<&'static str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    plane: Option<Plane>,
    flags: Vec<GivenFlag>,
}

/// `klab ps` without `--flags` or `--check`.
pub fn list(
    procs: &[Process],
    format: Option<OutputFormat>,
    out: &mut dyn Write,
) -> Result<(), Error> {
    match format {
        Some(f) => {
            let records: Vec<ProcessRecord<'_>> = procs
                .iter()
                .map(|p| ProcessRecord {
                    process: p,
                    component: p.component().map(|c| c.name),
                    plane: p.plane(),
                    flags: p.flags(),
                })
                .collect();
            write_structured(out, f, &records)?;
        }
        None if procs.is_empty() => {
            writeln!(
                out,
                "No cluster processes found (looked for kube-apiserver, etcd, klab-store, the \
                 controllers, kubelet, kube-proxy, containerd and pods).\nStart a cluster with \
                 `klab up`, or read a node's capture with `klab ps --from FILE`."
            )?;
        }
        None => {
            write_ps_table(procs, out)?;
            write_summary(procs, out)?;
        }
    }
    Ok(())
}

fn read_capture(path: &Path) -> Result<(String, String), Error> {
    let read = |source| Error::Read {
        path: path.to_path_buf(),
        source,
    };
    if path == Path::new("-") {
        let mut text = String::new();
        std::io::Read::read_to_string(&mut std::io::stdin(), &mut text).map_err(read)?;
        return Ok(("stdin".into(), text));
    }
    let bytes = std::fs::read(path).map_err(read)?;
    Ok((
        path.display().to_string(),
        String::from_utf8_lossy(&bytes).into_owned(),
    ))
}

pub fn run(args: PsArgs, out: &mut dyn Write) -> anyhow::Result<()> {
    let capture = args.from.as_deref().map(read_capture).transpose()?;
    let source = match &capture {
        Some((what, text)) => Source::Capture {
            what: what.clone(),
            text,
        },
        None => Source::Live,
    };
    let procs = load(source, args.all)?;
    if let Some(component) = &args.flags {
        explain(&procs, component.as_deref(), args.output, out)?;
    } else if args.check {
        check(&procs, args.output, out)?;
    } else {
        list(&procs, args.output, out)?;
    }
    Ok(())
}
