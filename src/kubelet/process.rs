//! Static pods as host processes: on a node without a container runtime (`--runtime
//! simulated`) the kubelet still runs the control plane's static pods for real, each container
//! as a process of the host (host network, the host's files), supervised with upstream's
//! restartPolicy and CrashLoopBackOff. klab's own; upstream's closest relative is running the
//! control plane as systemd units, as "Kubernetes the hard way" does.
//!
//! A container's command is looked up in PATH, except the component names klab answers to
//! (`kube-apiserver`, `klab-store`, …), which run this very binary under that name, so `ps`
//! shows what it shows on a kubeadm node. Each process gets its own session, writes its output
//! to `<log dir>/<container>/<attempt>.log`, and is recorded in
//! `<pod dir>/processes/<container>.json` with its start time, so a restarted kubelet adopts
//! it instead of starting a second copy. Leaves out init containers, probes and resource
//! limits.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::{Container, Pod};
use serde::{Deserialize, Serialize};

use super::spec::PodRef;
use super::status::{Observed, Run, Seen, View};

const BACKOFF_START: Duration = Duration::from_secs(10);
const BACKOFF_MAX: Duration = Duration::from_secs(300);

/// What the kubelet writes down about a process it started, to find it again.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct Record {
    pid: i32,
    /// Field 22 of /proc/PID/stat: tells the process from a later one with the same pid.
    start_ticks: u64,
    attempt: u32,
    started: i64,
    hash: String,
}

/// Whether every container of `pod` names its command: a host process has no image to read
/// an entrypoint from, so a static pod without commands is simulated instead, as any pod.
pub fn runnable(pod: &Pod) -> bool {
    pod.spec.as_ref().is_some_and(|s| {
        s.containers
            .iter()
            .all(|c| c.command.as_ref().is_some_and(|c| !c.is_empty()))
    })
}

/// One pod's processes, as one pod worker keeps them between syncs.
pub struct ProcessRuntime {
    root: PathBuf,
    children: HashMap<String, Child>,
    /// The newest exited instance of each container, and when it may start again.
    exited: HashMap<String, (Seen, Instant)>,
    /// The current back-off delay of each container that has exited before.
    delays: HashMap<String, Duration>,
    /// The instance before the current one, for lastState.
    previous: HashMap<String, Seen>,
}

fn now_nanos() -> i64 {
    k8s_openapi::jiff::Timestamp::now().as_nanosecond() as i64
}

/// The start time of process `pid`, or `None` when it does not exist (or is a zombie).
pub fn start_ticks(pid: i32) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name (field 2) is in parentheses and may hold spaces: split after it.
    let rest = &stat[stat.rfind(')')? + 2..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    if fields.first() == Some(&"Z") {
        return None;
    }
    fields.get(19)?.parse().ok()
}

fn alive(r: &Record) -> bool {
    start_ticks(r.pid) == Some(r.start_ticks)
}

fn signal(pid: i32, sig: rustix::process::Signal) {
    if let Some(p) = rustix::process::Pid::from_raw(pid) {
        // The process leads its own session and group: signal the whole group.
        let _ = rustix::process::kill_process_group(p, sig);
        let _ = rustix::process::kill_process(p, sig);
    }
}

/// The program and argv[0] of a container's command: klab itself under a component's name,
/// else the command as PATH finds it.
fn program(argv0: &str) -> PathBuf {
    let is_component = argv0 == "klab"
        || crate::cli::COMPONENT_LINKS
            .iter()
            .any(|(link, _)| *link == argv0);
    if is_component {
        if let Ok(exe) = std::env::current_exe() {
            return exe;
        }
    }
    PathBuf::from(argv0)
}

impl ProcessRuntime {
    pub fn new(root: &Path) -> ProcessRuntime {
        ProcessRuntime {
            root: root.to_path_buf(),
            children: HashMap::new(),
            exited: HashMap::new(),
            delays: HashMap::new(),
            previous: HashMap::new(),
        }
    }

    fn record_path(&self, r: &PodRef, container: &str) -> PathBuf {
        r.dir(&self.root)
            .join("processes")
            .join(format!("{container}.json"))
    }

    fn read_record(&self, r: &PodRef, container: &str) -> Option<Record> {
        let bytes = std::fs::read(self.record_path(r, container)).ok()?;
        serde_json::from_slice(&bytes).ok()
    }

    fn start(&mut self, pod: &Pod, c: &Container, attempt: u32) -> Result<Record, String> {
        let r = PodRef::of(pod);
        let argv: Vec<String> = c
            .command
            .iter()
            .flatten()
            .chain(c.args.iter().flatten())
            .cloned()
            .collect();
        let Some(argv0) = argv.first() else {
            return Err(
                "the container has no command: a host process has no image to read an \
                        entrypoint from"
                    .into(),
            );
        };
        let log_dir = r.log_dir(&self.root).join(&c.name);
        let proc_dir = r.dir(&self.root).join("processes");
        for d in [&log_dir, &proc_dir] {
            std::fs::create_dir_all(d).map_err(|e| format!("creating {}: {e}", d.display()))?;
        }
        let log_path = log_dir.join(format!("{attempt}.log"));
        let log = std::fs::File::create(&log_path)
            .map_err(|e| format!("creating {}: {e}", log_path.display()))?;
        let err_log = log
            .try_clone()
            .map_err(|e| format!("opening {}: {e}", log_path.display()))?;
        let mut cmd = Command::new(program(argv0));
        {
            use std::os::unix::process::CommandExt;
            cmd.arg0(argv0);
            // Its own session: a signal to the kubelet's group does not reach it, and the
            // kubelet can stop the process with everything it started.
            unsafe {
                cmd.pre_exec(|| {
                    rustix::process::setsid().map_err(std::io::Error::from)?;
                    Ok(())
                });
            }
        }
        cmd.args(&argv[1..])
            .stdin(Stdio::null())
            .stdout(log)
            .stderr(err_log);
        for e in c.env.iter().flatten() {
            if let Some(v) = &e.value {
                cmd.env(&e.name, v);
            }
        }
        if let Some(dir) = &c.working_dir {
            cmd.current_dir(dir);
        }
        let child = cmd.spawn().map_err(|e| format!("starting {argv0}: {e}"))?;
        let pid = child.id() as i32;
        let record = Record {
            pid,
            start_ticks: start_ticks(pid).unwrap_or_default(),
            attempt,
            started: now_nanos(),
            hash: super::spec::container_hash(c),
        };
        self.children.insert(c.name.clone(), child);
        let path = self.record_path(&r, &c.name);
        let tmp = path.with_extension("json.tmp");
        let body = serde_json::to_vec(&record).unwrap_or_default();
        std::fs::write(&tmp, body)
            .and_then(|()| std::fs::rename(&tmp, &path))
            .map_err(|e| format!("writing {}: {e}", path.display()))?;
        eprintln!(
            "kubelet: pod {}: started container {} as process {pid}",
            r.key(),
            c.name
        );
        Ok(record)
    }

    /// The exit of a process that was running: its code when it was our child, else unknown.
    fn reap(&mut self, container: &str, rec: &Record) -> Seen {
        let code = self
            .children
            .remove(container)
            .and_then(|mut ch| ch.try_wait().ok().flatten().or_else(|| ch.wait().ok()))
            .and_then(|s| {
                use std::os::unix::process::ExitStatusExt;
                s.code().or_else(|| s.signal().map(|n| 128 + n))
            });
        Seen {
            id: format!("process://{}", rec.pid),
            attempt: rec.attempt,
            hash: rec.hash.clone(),
            image_ref: String::new(),
            state: Run::Exited {
                code: code.unwrap_or(255),
                reason: match code {
                    Some(0) => "Completed".into(),
                    Some(_) => "Error".into(),
                    None => "Unknown".into(),
                },
                message: if code.is_none() {
                    "the process ended while the kubelet was not watching".into()
                } else {
                    String::new()
                },
                started: rec.started,
                finished: now_nanos(),
            },
        }
    }

    fn view(&mut self, pod: &Pod, c: &Container) -> View {
        let r = PodRef::of(pod);
        let policy = pod
            .spec
            .as_ref()
            .and_then(|s| s.restart_policy.clone())
            .unwrap_or_else(|| "Always".into());
        let mut view = View {
            name: c.name.clone(),
            image: c.image.clone().unwrap_or_default(),
            ..Default::default()
        };
        let record = self.read_record(&r, &c.name);
        // A running process whose spec changed is replaced, as a container would be.
        if let Some(rec) = record
            .as_ref()
            .filter(|rec| alive(rec) && rec.hash != super::spec::container_hash(c))
        {
            eprintln!(
                "kubelet: pod {}: container {} changed, restarting",
                r.key(),
                c.name
            );
            stop(rec.pid, Duration::from_secs(5));
        }
        match record {
            Some(rec) if alive(&rec) => {
                // A child that exited leaves a zombie: reap it to learn the exit.
                let exited = self
                    .children
                    .get_mut(&c.name)
                    .is_some_and(|ch| matches!(ch.try_wait(), Ok(Some(_))));
                if !exited {
                    view.current = Some(Seen {
                        id: format!("process://{}", rec.pid),
                        attempt: rec.attempt,
                        hash: rec.hash.clone(),
                        image_ref: String::new(),
                        state: Run::Running {
                            started: rec.started,
                        },
                    });
                    view.previous = self.previous.get(&c.name).cloned();
                    return view;
                }
                self.note_exit(&c.name, &rec);
            }
            Some(rec) if !self.exited.contains_key(&c.name) => self.note_exit(&c.name, &rec),
            _ => {}
        }
        let attempt = match self.exited.get(&c.name) {
            None => 0,
            Some((seen, until)) => {
                let code = match &seen.state {
                    Run::Exited { code, .. } => *code,
                    _ => 0,
                };
                let restart = policy == "Always" || (policy == "OnFailure" && code != 0);
                view.current = Some(seen.clone());
                view.previous = self.previous.get(&c.name).cloned();
                if !restart {
                    return view;
                }
                if Instant::now() < *until {
                    view.waiting = Some((
                        "CrashLoopBackOff".into(),
                        format!(
                            "back-off {}s restarting failed container={} pod={}_{}({})",
                            self.delays
                                .get(&c.name)
                                .copied()
                                .unwrap_or_default()
                                .as_secs(),
                            c.name,
                            r.name,
                            r.namespace,
                            r.uid
                        ),
                    ));
                    return view;
                }
                seen.attempt + 1
            }
        };
        match self.start(pod, c, attempt) {
            Ok(rec) => {
                if let Some((seen, _)) = self.exited.remove(&c.name) {
                    self.previous.insert(c.name.clone(), seen);
                }
                view.current = Some(Seen {
                    id: format!("process://{}", rec.pid),
                    attempt: rec.attempt,
                    hash: rec.hash,
                    image_ref: String::new(),
                    state: Run::Running {
                        started: rec.started,
                    },
                });
                view.previous = self.previous.get(&c.name).cloned();
            }
            Err(msg) => {
                eprintln!("kubelet: pod {}: {msg}", r.key());
                view.waiting = Some(("RunContainerError".into(), msg));
            }
        }
        view
    }

    /// Remembers an exit and when the next start may come: at once after the first exit,
    /// then after a delay that doubles up to five minutes, as upstream's back-off.
    fn note_exit(&mut self, container: &str, rec: &Record) {
        let seen = self.reap(container, rec);
        let (until, next) = match self.delays.get(container) {
            None => (Instant::now(), BACKOFF_START),
            Some(d) => (Instant::now() + *d, (*d * 2).min(BACKOFF_MAX)),
        };
        self.delays.insert(container.into(), next);
        self.exited.insert(container.into(), (seen, until));
    }

    /// Starts what is not running and reports every container, as a pod status needs.
    pub fn sync(&mut self, pod: &Pod, host_ip: &str) -> Observed {
        let containers: Vec<Container> =
            pod.spec.iter().flat_map(|s| s.containers.clone()).collect();
        let views = containers.iter().map(|c| self.view(pod, c)).collect();
        Observed {
            init: Vec::new(),
            containers: views,
            sandbox_ready: true,
            pod_ip: host_ip.into(),
            host_ip: host_ip.into(),
            simulated: false,
        }
    }

    /// Stops every process of the pod: SIGTERM, then SIGKILL after the grace period.
    pub fn kill(&mut self, pod: &Pod, grace: i64) {
        let r = PodRef::of(pod);
        kill_pod(&self.root, &r.uid, Duration::from_secs(grace.max(0) as u64));
        for (_, mut ch) in self.children.drain() {
            let _ = ch.try_wait();
        }
    }
}

fn stop(pid: i32, grace: Duration) {
    let ticks = start_ticks(pid);
    signal(pid, rustix::process::Signal::TERM);
    let deadline = Instant::now() + grace;
    while Instant::now() < deadline {
        if ticks.is_none() || start_ticks(pid) != ticks {
            return;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    signal(pid, rustix::process::Signal::KILL);
}

/// Stops the processes recorded for pod `uid` and forgets them.
fn kill_pod(root: &Path, uid: &str, grace: Duration) {
    let dir = root.join("pods").join(uid).join("processes");
    let Ok(entries) = std::fs::read_dir(&dir) else {
        return;
    };
    for e in entries.flatten() {
        let Some(rec) = std::fs::read(e.path())
            .ok()
            .and_then(|b| serde_json::from_slice::<Record>(&b).ok())
        else {
            continue;
        };
        if alive(&rec) {
            stop(rec.pid, grace);
        }
        let _ = std::fs::remove_file(e.path());
    }
}

/// Every process recorded under `root`: container name, pid, and whether it still runs.
pub fn list(root: &Path) -> Vec<(String, i32, bool)> {
    let mut all = Vec::new();
    let Ok(pods) = std::fs::read_dir(root.join("pods")) else {
        return all;
    };
    for p in pods.flatten() {
        let Ok(entries) = std::fs::read_dir(p.path().join("processes")) else {
            continue;
        };
        for e in entries.flatten() {
            let path = e.path();
            let Some(rec) = std::fs::read(&path)
                .ok()
                .and_then(|b| serde_json::from_slice::<Record>(&b).ok())
            else {
                continue;
            };
            let name = path
                .file_stem()
                .map(|s| s.to_string_lossy().into_owned())
                .unwrap_or_default();
            all.push((name, rec.pid, alive(&rec)));
        }
    }
    all.sort();
    all
}

/// Stops the processes of pods the kubelet no longer knows (a manifest removed or edited
/// while the kubelet was down). Returns the uids it cleaned up.
pub fn remove_orphans(root: &Path, known: &[String]) -> Vec<String> {
    let Ok(pods) = std::fs::read_dir(root.join("pods")) else {
        return Vec::new();
    };
    let mut removed = Vec::new();
    for p in pods.flatten() {
        let uid = p.file_name().to_string_lossy().into_owned();
        if known.contains(&uid) || !p.path().join("processes").is_dir() {
            continue;
        }
        kill_pod(root, &uid, Duration::from_secs(5));
        let _ = std::fs::remove_dir(p.path().join("processes"));
        removed.push(uid);
    }
    removed
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn component_names_run_klab_itself() {
        assert_eq!(program("ls"), PathBuf::from("ls"));
        assert_ne!(program("kube-apiserver"), PathBuf::from("kube-apiserver"));
    }

    #[test]
    fn a_live_process_has_a_start_time_and_a_dead_one_has_none() {
        assert!(start_ticks(std::process::id() as i32).is_some());
        assert!(start_ticks(i32::MAX).is_none());
    }
}
