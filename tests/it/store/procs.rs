//! Starting klab-store and etcd as real processes on free loopback ports.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub use crate::{free_port, require};

/// A running store process, killed when dropped.
pub struct Proc {
    pub child: Child,
    pub endpoint: String,
    pub metrics: String,
    _dir: Option<tempfile::TempDir>,
}

impl Proc {
    /// Starts klab-store on `data_dir` (a fresh temporary one if `None`).
    pub fn klab(data_dir: Option<&Path>) -> Proc {
        Self::klab_with(data_dir, &[])
    }

    /// Starts klab-store with extra flags.
    pub fn klab_with(data_dir: Option<&Path>, extra: &[&str]) -> Proc {
        let dir = data_dir.is_none().then(|| tempfile::tempdir().unwrap());
        let data = data_dir
            .map(Path::to_owned)
            .unwrap_or_else(|| dir.as_ref().unwrap().path().to_owned());
        let (port, mport) = (free_port(), free_port());
        let endpoint = format!("http://127.0.0.1:{port}");
        let metrics = format!("127.0.0.1:{mport}");
        let child = Command::new(env!("CARGO_BIN_EXE_klab"))
            .arg("store")
            .arg(format!("--data-dir={}", data.display()))
            .arg(format!("--listen-client-urls={endpoint}"))
            .arg(format!("--advertise-client-urls={endpoint}"))
            .arg(format!("--listen-metrics-urls=http://{metrics}"))
            .args(extra)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let p = Proc {
            child,
            endpoint,
            metrics,
            _dir: dir,
        };
        p.wait_ready(port);
        p
    }

    /// Starts klab-store on https with client-certificate auth, using the PKI in `pki`.
    pub fn klab_tls(pki: &Path) -> Proc {
        let dir = tempfile::tempdir().unwrap();
        let (port, mport) = (free_port(), free_port());
        let endpoint = format!("https://127.0.0.1:{port}");
        let metrics = format!("127.0.0.1:{mport}");
        let child = Command::new(env!("CARGO_BIN_EXE_klab"))
            .arg("store")
            .arg(format!("--data-dir={}", dir.path().display()))
            .arg(format!("--listen-client-urls={endpoint}"))
            .arg(format!("--listen-metrics-urls=http://{metrics}"))
            .arg(format!("--cert-file={}", pki.join("server.crt").display()))
            .arg(format!("--key-file={}", pki.join("server.key").display()))
            .arg(format!(
                "--trusted-ca-file={}",
                pki.join("ca.crt").display()
            ))
            .arg("--client-cert-auth=true")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let p = Proc {
            child,
            endpoint,
            metrics,
            _dir: Some(dir),
        };
        p.wait_ready(port);
        p
    }

    /// Starts a single-member etcd on loopback ports with a temporary data directory.
    pub fn etcd(bin: &Path) -> Proc {
        let dir = tempfile::tempdir().unwrap();
        let (port, peer, mport) = (free_port(), free_port(), free_port());
        let endpoint = format!("http://127.0.0.1:{port}");
        let peer_url = format!("http://127.0.0.1:{peer}");
        let metrics = format!("127.0.0.1:{mport}");
        let child = Command::new(bin)
            .arg("--name=t")
            .arg(format!("--data-dir={}", dir.path().join("etcd").display()))
            .arg(format!("--listen-client-urls={endpoint}"))
            .arg(format!("--advertise-client-urls={endpoint}"))
            .arg(format!("--listen-peer-urls={peer_url}"))
            .arg(format!("--initial-advertise-peer-urls={peer_url}"))
            .arg(format!("--initial-cluster=t={peer_url}"))
            .arg(format!("--listen-metrics-urls=http://{metrics}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let p = Proc {
            child,
            endpoint,
            metrics,
            _dir: Some(dir),
        };
        p.wait_ready(port);
        // etcd accepts connections before it has elected itself; wait for /health.
        let deadline = Instant::now() + Duration::from_secs(20);
        while !http_get(&p.metrics, "/health").contains("\"health\":\"true\"") {
            assert!(Instant::now() < deadline, "etcd did not become healthy");
            std::thread::sleep(Duration::from_millis(100));
        }
        p
    }

    fn wait_ready(&self, port: u16) {
        let deadline = Instant::now() + Duration::from_secs(20);
        while TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(
                Instant::now() < deadline,
                "{} did not start listening",
                self.endpoint
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// SIGKILL, as a crash.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        self.kill();
    }
}

/// A tiny HTTP/1.0 GET; returns the whole response (empty on connection errors).
pub fn http_get(addr: &str, path: &str) -> String {
    let Ok(mut s) = TcpStream::connect(addr) else {
        return String::new();
    };
    let _ = s.set_read_timeout(Some(Duration::from_secs(5)));
    let _ = write!(s, "GET {path} HTTP/1.0\r\nHost: {addr}\r\n\r\n");
    let mut out = String::new();
    let _ = s.read_to_string(&mut out);
    out
}

/// A small tmpfs mounted for a test, unmounted when dropped.
pub struct SmallDisk(PathBuf);

impl SmallDisk {
    /// Mounts a tmpfs of `size` on `dir`; `None` (with a printed reason) where that is not allowed.
    pub fn mount(dir: &Path, size: &str) -> Option<SmallDisk> {
        let ok = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(dir)
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success());
        if !ok {
            eprintln!("skipping: mounting a small tmpfs needs root");
        }
        ok.then(|| SmallDisk(dir.to_owned()))
    }
}

impl Drop for SmallDisk {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.0).status();
    }
}
