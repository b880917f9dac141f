//! The node's long-running host processes (containerd, each node's kubelet): started detached
//! in a session of their own with their output in a log file, found again by pid and start
//! time, stopped with SIGTERM then SIGKILL. What systemd does for kubeadm's kubelet and
//! containerd units; klab's own, since these machines have no init system to ask.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

use crate::kubelet::process::start_ticks;

/// A started daemon, as `cluster.json` records it.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Daemon {
    pub name: String,
    pub pid: i32,
    pub start_ticks: u64,
    pub log: PathBuf,
    pub command: Vec<String>,
}

#[derive(Debug, thiserror::Error)]
pub enum DaemonError {
    #[error("creating the log file {}", path.display())]
    Log {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("starting {name} ({program})")]
    Spawn {
        name: String,
        program: String,
        #[source]
        source: std::io::Error,
    },
}

impl Daemon {
    /// Starts `program args` detached, its output appended to `log`. `argv0` names it in `ps`.
    pub fn start(
        name: &str,
        program: &Path,
        argv0: &str,
        args: &[String],
        log: &Path,
    ) -> Result<Daemon, DaemonError> {
        use std::os::unix::process::CommandExt;
        let log_err = |source| DaemonError::Log {
            path: log.to_path_buf(),
            source,
        };
        if let Some(dir) = log.parent() {
            std::fs::create_dir_all(dir).map_err(log_err)?;
        }
        let out = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(log)
            .map_err(log_err)?;
        let err = out.try_clone().map_err(log_err)?;
        let mut cmd = Command::new(program);
        cmd.arg0(argv0)
            .args(args)
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err);
        // A session of its own: it outlives `klab up` and a Ctrl-C in its terminal.
        unsafe {
            cmd.pre_exec(|| {
                rustix::process::setsid().map_err(std::io::Error::from)?;
                Ok(())
            });
        }
        let child = cmd.spawn().map_err(|source| DaemonError::Spawn {
            name: name.into(),
            program: program.display().to_string(),
            source,
        })?;
        let pid = child.id() as i32;
        // Nobody waits for it here: once `klab up` exits, init reaps it.
        std::mem::forget(child);
        Ok(Daemon {
            name: name.into(),
            pid,
            start_ticks: start_ticks(pid).unwrap_or_default(),
            log: log.to_path_buf(),
            command: std::iter::once(argv0.to_string())
                .chain(args.iter().cloned())
                .collect(),
        })
    }

    /// Whether this very process still runs (not a later one with the same pid).
    pub fn alive(&self) -> bool {
        start_ticks(self.pid) == Some(self.start_ticks)
    }

    /// SIGTERM, then SIGKILL after `grace`.
    pub fn stop(&self, grace: Duration) {
        if !self.alive() {
            return;
        }
        let Some(pid) = rustix::process::Pid::from_raw(self.pid) else {
            return;
        };
        let _ = rustix::process::kill_process(pid, rustix::process::Signal::TERM);
        let deadline = Instant::now() + grace;
        while Instant::now() < deadline {
            if !self.alive() {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = rustix::process::kill_process(pid, rustix::process::Signal::KILL);
        let deadline = Instant::now() + Duration::from_secs(2);
        while self.alive() && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// The last `n` lines of its log, for an error message.
    pub fn tail(&self, n: usize) -> String {
        tail(&self.log, n)
    }
}

/// The last `n` lines of a file (empty when it cannot be read).
pub fn tail(path: &Path, n: usize) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}
