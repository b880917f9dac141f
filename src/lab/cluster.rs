//! The cluster a lab runs on, seen through the cluster folder that `klab up` writes (klab's own
//! contract: `cluster.json`, `kubernetes/admin.conf`, `kubernetes/pki/`, `kubernetes/manifests/`,
//! the kubeadm layout), and the shell every setup, check and solution runs in.

use std::ffi::OsString;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// Replaces `{cluster}` and `{cluster_dir}` in a lab's text.
pub fn expand(text: &str, name: &str, dir: &str) -> String {
    text.replace("{cluster_dir}", dir)
        .replace("{cluster}", name)
}

/// A cluster folder and the cluster's name.
#[derive(Debug, Clone)]
pub struct Cluster {
    pub name: String,
    pub dir: PathBuf,
}

/// What a shell script did.
#[derive(Debug, Clone)]
pub struct ShellOutput {
    /// The exit code, or `None` when it was killed (timeout) or did not start.
    pub code: Option<i32>,
    /// stdout and stderr, interleaved as they were read.
    pub output: String,
}

impl ShellOutput {
    pub fn success(&self) -> bool {
        self.code == Some(0)
    }

    /// The last few lines, for an error message.
    pub fn tail(&self, lines: usize) -> String {
        let all: Vec<&str> = self
            .output
            .lines()
            .filter(|l| !l.trim().is_empty())
            .collect();
        all[all.len().saturating_sub(lines)..].join("\n")
    }
}

impl Cluster {
    /// `--cluster-dir`, else `$HOME/.klab/NAME`.
    pub fn new(name: &str, dir: Option<PathBuf>) -> Cluster {
        let dir = dir.unwrap_or_else(|| {
            std::env::var_os("HOME")
                .map(PathBuf::from)
                .unwrap_or_else(|| PathBuf::from("/root"))
                .join(".klab")
                .join(name)
        });
        Cluster {
            name: name.to_owned(),
            dir,
        }
    }

    /// The folder as an absolute path: shells run in the work folder, so a relative
    /// `--cluster-dir` would point elsewhere there.
    pub fn abs_dir(&self) -> PathBuf {
        std::path::absolute(&self.dir).unwrap_or_else(|_| self.dir.clone())
    }

    /// `cluster.json` exists once `klab up` finished.
    pub fn is_up(&self) -> bool {
        self.dir.join("cluster.json").is_file()
    }

    pub fn kubeconfig(&self) -> PathBuf {
        self.dir.join("kubernetes/admin.conf")
    }

    pub fn pki(&self) -> PathBuf {
        self.dir.join("kubernetes/pki")
    }

    pub fn manifests(&self) -> PathBuf {
        self.dir.join("kubernetes/manifests")
    }

    pub fn manifest(&self, component: &str) -> PathBuf {
        self.manifests().join(format!("{component}.yaml"))
    }

    /// Where a lab's shell commands run and its files (ca.pem, …) land.
    pub fn work_dir(&self, lab: &str) -> PathBuf {
        self.dir.join("labs").join(lab)
    }

    /// Where a lab keeps the manifests it moved away or changed, to put them back on reset.
    pub fn stash(&self, lab: &str) -> PathBuf {
        self.dir.join("lab-stash").join(lab)
    }

    /// Replaces `{cluster}` with the cluster's name and `{cluster_dir}` with its folder.
    pub fn expand(&self, text: &str) -> String {
        expand(text, &self.name, &self.dir.display().to_string())
    }

    /// The environment of every lab shell: the admin kubeconfig, the cluster folder, this
    /// klab first on PATH, and etcdctl's variables as the API server's manifest names them.
    pub fn env(&self) -> Vec<(String, OsString)> {
        let dir = self.abs_dir();
        let mut env = vec![
            (
                "KUBECONFIG".to_owned(),
                dir.join("kubernetes/admin.conf").into_os_string(),
            ),
            ("KLAB_CLUSTER_DIR".to_owned(), dir.clone().into_os_string()),
            ("KLAB_CLUSTER".to_owned(), OsString::from(&self.name)),
        ];
        let mut paths: Vec<PathBuf> = vec![];
        if let Some(bin) = std::env::current_exe()
            .ok()
            .and_then(|e| e.parent().map(Path::to_path_buf))
        {
            paths.push(bin);
        }
        paths.extend(std::env::split_paths(
            &std::env::var_os("PATH").unwrap_or_else(|| "/usr/local/bin:/usr/bin:/bin".into()),
        ));
        if let Ok(p) = std::env::join_paths(paths) {
            env.push(("PATH".to_owned(), p));
        }
        for (var, flag) in [
            ("ETCDCTL_ENDPOINTS", "--etcd-servers"),
            ("ETCDCTL_CACERT", "--etcd-cafile"),
            ("ETCDCTL_CERT", "--etcd-certfile"),
            ("ETCDCTL_KEY", "--etcd-keyfile"),
        ] {
            if let Some(v) = self.manifest_flag("kube-apiserver", flag) {
                env.push((var.to_owned(), OsString::from(v)));
            }
        }
        env
    }

    /// A flag's value in a component's static pod manifest (`- --flag=value` lines).
    pub fn manifest_flag(&self, component: &str, flag: &str) -> Option<String> {
        let text = std::fs::read_to_string(self.manifest(component)).ok()?;
        let prefix = format!("{flag}=");
        text.lines().find_map(|l| {
            let item = l.trim().trim_start_matches("- ").trim().trim_matches('"');
            item.strip_prefix(&prefix)
                .map(|v| v.trim_matches('"').to_owned())
        })
    }

    /// Runs `script` with `sh -eu` in the lab's work folder, with the lab environment, killed
    /// after `timeout`.
    pub fn shell(
        &self,
        lab: &str,
        script: &str,
        timeout: Duration,
    ) -> std::io::Result<ShellOutput> {
        let work = self.work_dir(lab);
        std::fs::create_dir_all(&work)?;
        let mut child = Command::new("sh")
            .arg("-eu")
            .arg("-c")
            .arg(expand(
                script,
                &self.name,
                &self.abs_dir().display().to_string(),
            ))
            .current_dir(&work)
            .envs(self.env())
            .env(
                "KLAB_STASH",
                std::path::absolute(self.stash(lab).join("manifests"))?,
            )
            .env_remove("ETCDCTL_API")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()?;
        let readers: Vec<_> = [
            child
                .stdout
                .take()
                .map(|s| Box::new(s) as Box<dyn Read + Send>),
            child
                .stderr
                .take()
                .map(|s| Box::new(s) as Box<dyn Read + Send>),
        ]
        .into_iter()
        .flatten()
        .map(|mut r| {
            std::thread::spawn(move || {
                let mut buf = Vec::new();
                let _ = r.read_to_end(&mut buf);
                buf
            })
        })
        .collect();
        let deadline = Instant::now() + timeout;
        let code = loop {
            if let Some(status) = child.try_wait()? {
                break status.code();
            }
            if Instant::now() >= deadline {
                let _ = child.kill();
                let _ = child.wait();
                break None;
            }
            std::thread::sleep(Duration::from_millis(20));
        };
        let mut output = String::new();
        for r in readers {
            // A script that left a background child holding the pipe would block here; the
            // scripts in labs/ do not, and the kill above ends the direct child.
            if let Ok(buf) = r.join() {
                output.push_str(&String::from_utf8_lossy(&buf));
            }
        }
        if code.is_none() {
            output.push_str(&format!("(stopped after {} s)\n", timeout.as_secs()));
        }
        Ok(ShellOutput { code, output })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn manifest_flags_are_read_as_kubeadm_writes_them() {
        let dir = tempfile::tempdir().unwrap();
        let c = Cluster::new("klab", Some(dir.path().to_path_buf()));
        std::fs::create_dir_all(c.manifests()).unwrap();
        std::fs::write(
            c.manifest("kube-apiserver"),
            "spec:\n  containers:\n  - command:\n    - kube-apiserver\n    - --etcd-servers=https://127.0.0.1:2379\n    - \"--etcd-cafile=/pki/etcd/ca.crt\"\n",
        )
        .unwrap();
        assert_eq!(
            c.manifest_flag("kube-apiserver", "--etcd-servers")
                .as_deref(),
            Some("https://127.0.0.1:2379")
        );
        assert_eq!(
            c.manifest_flag("kube-apiserver", "--etcd-cafile")
                .as_deref(),
            Some("/pki/etcd/ca.crt")
        );
        assert_eq!(c.manifest_flag("kube-apiserver", "--nope"), None);
    }
}
