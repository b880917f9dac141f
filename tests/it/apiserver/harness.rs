//! Starting a store (etcd or klab-store) and `klab apiserver` as real processes on loopback,
//! with a throwaway PKI and kubeconfig, and driving them with real kubectl and curl.

use std::io::Read;
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use klab::apiserver::devpki::{self, Client};

pub use crate::{free_port, require};

fn wait_port(port: u16, child: &mut Child, what: &str) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while TcpStream::connect(("127.0.0.1", port)).is_err() {
        if let Ok(Some(status)) = child.try_wait() {
            let mut err = String::new();
            if let Some(mut e) = child.stderr.take() {
                let _ = e.read_to_string(&mut err);
            }
            panic!("{what} exited with {status} before listening: {err}");
        }
        assert!(Instant::now() < deadline, "{what} did not listen on {port}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// A child process killed when dropped.
pub struct Proc(pub Child);

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Which store the API server runs on.
#[derive(Clone, Copy, Debug)]
pub enum Backend {
    Etcd,
    /// etcd on https, requiring client certificates (the API server's --etcd-* TLS flags).
    EtcdTls,
    KlabStore,
}

/// A store, an API server, a PKI and a kubeconfig.
pub struct Cluster {
    pub dir: tempfile::TempDir,
    pub url: String,
    pub etcd_endpoint: String,
    pub kubeconfig: PathBuf,
    pub log: PathBuf,
    _store: Proc,
    _apiserver: Proc,
}

fn start_store(backend: Backend, dir: &Path) -> Option<(Proc, String)> {
    let port = free_port();
    let scheme = if matches!(backend, Backend::EtcdTls) {
        "https"
    } else {
        "http"
    };
    let endpoint = format!("{scheme}://127.0.0.1:{port}");
    let mut child = match backend {
        Backend::Etcd | Backend::EtcdTls => {
            let bin = require("etcd")?;
            let peer = format!("http://127.0.0.1:{}", free_port());
            let tls: Vec<String> = if matches!(backend, Backend::EtcdTls) {
                vec![
                    format!("--cert-file={}", dir.join("apiserver.crt").display()),
                    format!("--key-file={}", dir.join("apiserver.key").display()),
                    format!("--trusted-ca-file={}", dir.join("ca.crt").display()),
                    "--client-cert-auth".into(),
                ]
            } else {
                vec![]
            };
            Command::new(bin)
                .args(tls)
                .arg("--name=t")
                .arg(format!("--data-dir={}", dir.join("etcd").display()))
                .arg(format!("--listen-client-urls={endpoint}"))
                .arg(format!("--advertise-client-urls={endpoint}"))
                .arg(format!("--listen-peer-urls={peer}"))
                .arg(format!("--initial-advertise-peer-urls={peer}"))
                .arg(format!("--initial-cluster=t={peer}"))
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .unwrap()
        }
        Backend::KlabStore => Command::new(env!("CARGO_BIN_EXE_klab"))
            .arg("store")
            .arg(format!("--data-dir={}", dir.join("store").display()))
            .arg(format!("--listen-client-urls={endpoint}"))
            .arg(format!("--advertise-client-urls={endpoint}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    };
    wait_port(port, &mut child, "the store");
    Some((Proc(child), endpoint))
}

pub const USERS: &[&str] = &["admin", "alice", "system:node:n1"];

impl Cluster {
    /// Starts everything (`{dir}` in `extra` is the cluster's folder), or `None` (a printed skip) when a needed tool is missing outside CI.
    pub fn start(backend: Backend, extra: &[&str]) -> Option<Cluster> {
        let dir = tempfile::tempdir().unwrap();
        devpki::write_pki(
            dir.path(),
            &[
                Client {
                    user: "admin",
                    groups: &["system:masters"],
                },
                Client {
                    user: "alice",
                    groups: &["dev"],
                },
                Client {
                    user: "system:node:n1",
                    groups: &["system:nodes"],
                },
                // The API server's identity towards kubelets, as kubeadm names it.
                Client {
                    user: "kube-apiserver-kubelet-client",
                    groups: &[],
                },
            ],
        )
        .unwrap();
        std::fs::write(
            dir.path().join("tokens.csv"),
            "s3cret,tina,1001,\"dev,ops\"\n",
        )
        .unwrap();
        let (store, etcd_endpoint) = start_store(backend, dir.path())?;
        let port = free_port();
        let log = dir.path().join("apiserver.log");
        let d = dir.path();
        let mut child = Command::new(env!("CARGO_BIN_EXE_klab"))
            .arg("apiserver")
            .arg(format!("--secure-port={port}"))
            .arg("--bind-address=127.0.0.1")
            .arg(format!(
                "--tls-cert-file={}",
                d.join("apiserver.crt").display()
            ))
            .arg(format!(
                "--tls-private-key-file={}",
                d.join("apiserver.key").display()
            ))
            .arg(format!("--client-ca-file={}", d.join("ca.crt").display()))
            .arg(format!(
                "--token-auth-file={}",
                d.join("tokens.csv").display()
            ))
            .arg(format!("--etcd-servers={etcd_endpoint}"))
            .arg("--authorization-mode=Node,RBAC")
            .args(if matches!(backend, Backend::EtcdTls) {
                vec![
                    format!("--etcd-cafile={}", d.join("ca.crt").display()),
                    format!("--etcd-certfile={}", d.join("admin.crt").display()),
                    format!("--etcd-keyfile={}", d.join("admin.key").display()),
                ]
            } else {
                vec![]
            })
            // `{dir}` in an extra flag names the cluster's folder (its PKI lives there).
            .args(
                extra
                    .iter()
                    .map(|a| a.replace("{dir}", &d.display().to_string())),
            )
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .unwrap();
        wait_port(port, &mut child, "kube-apiserver");
        let url = format!("https://127.0.0.1:{port}");
        let kubeconfig = devpki::write_kubeconfig(d, &url, USERS).unwrap();
        Some(Cluster {
            dir,
            url,
            etcd_endpoint,
            kubeconfig,
            log,
            _store: store,
            _apiserver: Proc(child),
        })
    }

    pub fn path(&self, f: &str) -> String {
        self.dir.path().join(f).display().to_string()
    }

    /// Starts `klab <component> --kubeconfig=… ARGS` against this API server (as the
    /// kubeconfig's admin), logging to `<component>-<tag>.log` in the cluster's folder.
    pub fn component(&self, component: &str, tag: &str, args: &[&str]) -> Proc {
        let log = self.component_log_path(component, tag);
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_klab"));
        cmd.arg(component)
            .arg(format!("--kubeconfig={}", self.kubeconfig.display()));
        if !args.iter().any(|a| a.starts_with("--secure-port")) {
            cmd.arg("--secure-port=0");
        }
        let child = cmd
            .args(args)
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .unwrap();
        Proc(child)
    }

    pub fn component_log_path(&self, component: &str, tag: &str) -> PathBuf {
        self.dir.path().join(format!("{component}-{tag}.log"))
    }

    pub fn component_log(&self, component: &str, tag: &str) -> String {
        std::fs::read_to_string(self.component_log_path(component, tag)).unwrap_or_default()
    }

    /// Runs kubectl (the given binary) against this cluster.
    pub fn kubectl_with(&self, bin: &Path, args: &[&str]) -> Output {
        Command::new(bin)
            .env("KUBECONFIG", &self.kubeconfig)
            .env_remove("KUBERNETES_SERVICE_HOST")
            .args(args)
            .output()
            .unwrap()
    }

    /// Runs kubectl against this cluster with a bearer token as its only credential (no
    /// kubeconfig).
    pub fn kubectl_token(&self, token: &str, args: &[&str]) -> Output {
        Command::new("kubectl")
            .env("KUBECONFIG", "/dev/null")
            .args([
                "--server",
                &self.url,
                "--certificate-authority",
                &self.path("ca.crt"),
                "--token",
                token,
            ])
            .args(args)
            .output()
            .unwrap()
    }

    /// curl as `user` (a client certificate name, or `None` for no credentials), returning
    /// the status code and body.
    pub fn curl(
        &self,
        user: Option<&str>,
        method: &str,
        path: &str,
        ctype: &str,
        body: Option<&[u8]>,
    ) -> (u16, String) {
        let mut cmd = Command::new("curl");
        cmd.args(["-sS", "-o", "-", "-w", "\n%{http_code}", "-X", method])
            .arg("--cacert")
            .arg(self.path("ca.crt"));
        if let Some(u) = user {
            let f = devpki::file_stem(u);
            cmd.arg("--cert").arg(self.path(&format!("{f}.crt")));
            cmd.arg("--key").arg(self.path(&format!("{f}.key")));
        }
        if let Some(b) = body {
            let f = self.dir.path().join("body.bin");
            std::fs::write(&f, b).unwrap();
            cmd.arg("-H").arg(format!("Content-Type: {ctype}"));
            cmd.arg("--data-binary").arg(format!("@{}", f.display()));
        }
        let out = cmd.arg(format!("{}{path}", self.url)).output().unwrap();
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        let (body, code) = text.rsplit_once('\n').unwrap_or(("", "0"));
        (code.trim().parse().unwrap_or(0), body.to_owned())
    }
}

/// The text of a command's output, stdout then stderr.
pub fn text(out: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// Asserts success and returns stdout.
pub fn ok(out: Output) -> String {
    assert!(out.status.success(), "command failed: {}", text(&out));
    String::from_utf8_lossy(&out.stdout).into_owned()
}
