//! A node's containerd, started by klab with a config of its own (as kind's node image does),
//! so a cluster needs no system service: root, state and socket under the node's folder, the
//! CRI plugin pointed at klab's sandbox image and CNI folders.
//!
//! Two settings come from what was measured on these machines (see the book's runtime
//! chapter): `restrict_oom_score_adj`, because root here lacks CAP_SYS_RESOURCE, and the CNI
//! plugin folder of Debian's package. containerd 1.6 still keeps some state in
//! /run/containerd and /var/run/netns whatever its config says, so one host runs one klab
//! containerd at a time.

use std::fs::File;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use super::{Error, which};

/// Everything klab decides about a node's containerd.
#[derive(Debug, Clone)]
pub struct Config {
    /// The node's runtime folder: root/, state/, the socket, the log, config.toml.
    pub dir: PathBuf,
    /// The image of every pod's sandbox (pause) container.
    pub sandbox_image: String,
    pub cni_conf_dir: PathBuf,
    pub cni_bin_dir: PathBuf,
}

impl Config {
    pub fn socket(&self) -> PathBuf {
        self.dir.join("containerd.sock")
    }

    pub fn log(&self) -> PathBuf {
        self.dir.join("containerd.log")
    }

    /// containerd's config.toml (schema version 2, containerd 1.6+).
    pub fn toml(&self) -> String {
        let d = |p: &Path| p.display().to_string();
        format!(
            r#"# Written by klab: a node's containerd, with the CRI plugin set up for klab.
version = 2
root = "{root}"
state = "{state}"

[grpc]
  address = "{socket}"

[ttrpc]
  address = "{socket}.ttrpc"

[plugins."io.containerd.grpc.v1.cri"]
  sandbox_image = "{sandbox}"
  # root on these machines lacks CAP_SYS_RESOURCE: without this, runc cannot set oom_score_adj.
  restrict_oom_score_adj = true

  [plugins."io.containerd.grpc.v1.cri".cni]
    bin_dir = "{cni_bin}"
    conf_dir = "{cni_conf}"
"#,
            root = d(&self.dir.join("root")),
            state = d(&self.dir.join("state")),
            socket = d(&self.socket()),
            sandbox = self.sandbox_image,
            cni_bin = d(&self.cni_bin_dir),
            cni_conf = d(&self.cni_conf_dir),
        )
    }
}

/// A running containerd. Dropping it stops it.
#[derive(Debug)]
pub struct Containerd {
    child: Child,
    pub config: Config,
}

fn tail(path: &Path, lines: usize) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}

impl Containerd {
    /// Writes the config and starts containerd; returns once its socket accepts connections.
    pub fn start(config: Config) -> Result<Containerd, Error> {
        let binary = which("containerd", "containerd")?;
        let write = |path: &Path| {
            let path = path.to_path_buf();
            move |source| Error::Write { path, source }
        };
        std::fs::create_dir_all(&config.dir).map_err(write(&config.dir))?;
        let toml_path = config.dir.join("config.toml");
        std::fs::write(&toml_path, config.toml()).map_err(write(&toml_path))?;
        let log = File::create(config.log()).map_err(write(&config.log()))?;
        let _ = std::fs::remove_file(config.socket());
        let child = Command::new(binary)
            .arg("--config")
            .arg(&toml_path)
            .stdin(Stdio::null())
            .stdout(log.try_clone().map_err(write(&config.log()))?)
            .stderr(log)
            .spawn()
            .map_err(Error::Spawn)?;
        let mut me = Containerd { child, config };
        me.wait_ready(Duration::from_secs(30))?;
        Ok(me)
    }

    fn wait_ready(&mut self, timeout: Duration) -> Result<(), Error> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Ok(Some(status)) = self.child.try_wait() {
                return Err(Error::Exited {
                    status: status.to_string(),
                    log: self.config.log(),
                    tail: tail(&self.config.log(), 10),
                });
            }
            if std::os::unix::net::UnixStream::connect(self.config.socket()).is_ok() {
                return Ok(());
            }
            if Instant::now() > deadline {
                return Err(Error::NotReady {
                    socket: self.config.socket(),
                    log: self.config.log(),
                    seconds: timeout.as_secs(),
                });
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Writes the config and starts containerd detached (its own session, so it outlives
    /// `klab up`, as a systemd unit would); returns its pid once its socket accepts
    /// connections.
    pub fn start_detached(config: &Config) -> Result<i32, Error> {
        use std::os::unix::process::CommandExt;
        let binary = which("containerd", "containerd")?;
        let write = |path: &Path| {
            let path = path.to_path_buf();
            move |source| Error::Write { path, source }
        };
        std::fs::create_dir_all(&config.dir).map_err(write(&config.dir))?;
        let toml_path = config.dir.join("config.toml");
        std::fs::write(&toml_path, config.toml()).map_err(write(&toml_path))?;
        let log = File::create(config.log()).map_err(write(&config.log()))?;
        let _ = std::fs::remove_file(config.socket());
        let mut cmd = Command::new(binary);
        cmd.arg("--config")
            .arg(&toml_path)
            .stdin(Stdio::null())
            .stdout(log.try_clone().map_err(write(&config.log()))?)
            .stderr(log);
        unsafe {
            cmd.pre_exec(|| {
                rustix::process::setsid().map_err(std::io::Error::from)?;
                Ok(())
            });
        }
        let child = cmd.spawn().map_err(Error::Spawn)?;
        let mut me = Containerd {
            child,
            config: config.clone(),
        };
        let ready = me.wait_ready(Duration::from_secs(30));
        let pid = me.child.id() as i32;
        if ready.is_err() {
            me.stop(Duration::from_secs(2));
        }
        ready?;
        // From here on it is a daemon: nobody waits for it and dropping must not stop it.
        std::mem::forget(me);
        Ok(pid)
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// SIGTERM, then SIGKILL after `grace`. Shims and their containers keep running, as with
    /// upstream: stop the pods first to stop them.
    pub fn stop(&mut self, grace: Duration) {
        if let Ok(Some(_)) = self.child.try_wait() {
            return;
        }
        if let Some(pid) = rustix::process::Pid::from_raw(self.child.id() as i32) {
            let _ = rustix::process::kill_process(pid, rustix::process::Signal::TERM);
        }
        let deadline = Instant::now() + grace;
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Containerd {
    fn drop(&mut self) {
        self.stop(Duration::from_secs(5));
    }
}
