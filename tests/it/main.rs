//! klab's integration tests, one crate: in-process snapshot tests of every tool's output,
//! the CLI as a user runs it (assert_cmd), and tests against real software (etcd, curl).
//!
//! Tests that need a program CI installs call [`require`]: under CI (`CI` set) a missing
//! program fails the test; on a developer machine it skips with a note.

mod apiserver;
mod book;
mod certs;
mod cluster_dump;
mod cluster_info;
mod controllers;
mod dns;
mod kubelet;
mod lab;
mod probe;
mod proxy;
mod ps;
mod real;
mod runtime;
mod scheduler;
mod sim;
mod store;
mod stream;
mod up;

use std::path::{Path, PathBuf};

use time::OffsetDateTime;

/// Taken by every test that starts containerd: one containerd per host at a time (containerd
/// 1.6 keeps state in /run/containerd whatever its config says), and one `cni0` bridge. The
/// mutex orders this test binary's threads; the file lock orders test runs of other
/// checkouts on the same host (two worktrees' runs would otherwise break each other).
pub fn containerd_host() -> ContainerdHost {
    static IN_PROCESS: std::sync::Mutex<()> = std::sync::Mutex::new(());
    let thread = IN_PROCESS.lock().unwrap_or_else(|p| p.into_inner());
    let path = std::env::temp_dir().join("klab-tests-containerd.lock");
    let file = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&path)
        .unwrap_or_else(|e| panic!("open {}: {e}", path.display()));
    // flock(2) through rustix: `File::lock` needs Rust 1.89, above the crate's rust-version.
    rustix::fs::flock(&file, rustix::fs::FlockOperation::LockExclusive)
        .unwrap_or_else(|e| panic!("lock {}: {e}", path.display()));
    ContainerdHost {
        _thread: thread,
        _file: file,
    }
}

/// The host's containerd is this test's until the guard drops (the file lock goes with the
/// file).
pub struct ContainerdHost {
    _thread: std::sync::MutexGuard<'static, ()>,
    _file: std::fs::File,
}

/// Whether this host can run pods on containerd (`false`: skip): containerd, runc, ctr,
/// busybox and iptables, the programs in `also`, and the CNI plugins. Under CI anything
/// missing fails the test, as [`require`] does.
pub fn containerd_prerequisites(also: &[&str]) -> bool {
    let programs = ["containerd", "runc", "ctr", "busybox", "iptables"];
    programs
        .iter()
        .chain(also)
        .all(|program| require(program).is_some())
        && cni_plugins()
}

/// Whether the CNI plugins are installed; under CI their absence fails the test.
fn cni_plugins() -> bool {
    if Path::new(klab::runtime::cni::DEBIAN_PLUGIN_DIR)
        .join("bridge")
        .exists()
    {
        return true;
    }
    assert!(
        std::env::var_os("CI").is_none(),
        "CNI plugins missing: .ci/run installs them"
    );
    eprintln!("skipping: containernetworking-plugins not installed");
    false
}

/// Runs `scenario` with a containerd of its own in `dir` (the host's, see
/// [`containerd_host`]): a bridge network for `pod_cidr`, the local images preloaded. Then it
/// removes every sandbox and stops containerd, also when the scenario panics, and passes the
/// panic on.
pub fn with_containerd(dir: &Path, pod_cidr: &str, scenario: impl FnOnce(&Path)) {
    let _one = containerd_host();
    let containerd = start_containerd(dir, pod_cidr);
    klab::runtime::images::preload(&containerd.config.socket(), dir).unwrap();
    let socket = containerd.config.socket();
    let outcome = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| scenario(&socket)));
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(clean(&socket));
    drop(containerd);
    if let Err(e) = outcome {
        std::panic::resume_unwind(e);
    }
}

/// Starts a containerd in `dir/containerd` with a bridge network for `pod_cidr` (its conflist
/// in `dir/cni`). The caller holds [`containerd_host`].
pub fn start_containerd(dir: &Path, pod_cidr: &str) -> klab::runtime::containerd::Containerd {
    use klab::runtime::containerd::{Config, Containerd};
    use klab::runtime::{cni, images};
    let cni_conf = dir.join("cni");
    cni::write_conflist(&cni_conf, pod_cidr).unwrap();
    Containerd::start(Config {
        dir: dir.join("containerd"),
        sandbox_image: images::PAUSE.into(),
        cni_conf_dir: cni_conf,
        cni_bin_dir: cni::DEBIAN_PLUGIN_DIR.into(),
    })
    .unwrap()
}

/// Stops and removes every sandbox, so no shim outlives the test.
async fn clean(socket: &Path) {
    if let Ok(mut cri) = klab::runtime::cri::Cri::connect(socket).await {
        for s in cri.list_pod_sandboxes().await.unwrap_or_default() {
            let _ = cri.stop_pod_sandbox(&s.id).await;
            let _ = cri.remove_pod_sandbox(&s.id).await;
        }
    }
}

/// The fixed "now" of every snapshot: a week into the fixtures' validity.
pub fn now() -> OffsetDateTime {
    time::macros::datetime!(2026-12-01 00:00:00 UTC)
}

/// Snapshots live in the top-level `snapshots/` folder, named without the module path, so
/// the book can include them by a stable name.
pub fn snapshot_settings() -> insta::Settings {
    let mut s = insta::Settings::clone_current();
    s.set_snapshot_path(Path::new(env!("CARGO_MANIFEST_DIR")).join("snapshots"));
    s.set_prepend_module_to_snapshot(false);
    s.set_omit_expression(true);
    s
}

/// Asserts a snapshot of a tool's text output under klab's settings.
#[macro_export]
macro_rules! snap {
    ($name:expr, $text:expr) => {
        $crate::snapshot_settings().bind(|| insta::assert_snapshot!($name, $text));
    };
}

/// Runs a tool function into a string.
pub fn capture(f: impl FnOnce(&mut Vec<u8>)) -> String {
    let mut out = Vec::new();
    f(&mut out);
    String::from_utf8(out).expect("tools write UTF-8")
}

/// A fresh, empty folder under target/ with a stable relative path, so outputs that name it
/// are the same on every machine.
pub fn scratch(name: &str) -> PathBuf {
    let dir = PathBuf::from("target/test-scratch").join(name);
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("create scratch dir");
    dir
}

/// The path of a program the test needs, or `None` (skip) outside CI; under CI, a panic.
pub fn require(program: &str) -> Option<PathBuf> {
    let found = std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|d| d.join(program))
            .find(|p| p.is_file())
    });
    if found.is_none() {
        if std::env::var_os("CI").is_some() {
            panic!("{program} is not installed, and CI must run this test: .ci/run installs it");
        }
        eprintln!("skipping: {program} is not installed (CI installs it)");
    }
    found
}

/// A TCP port on loopback that was free a moment ago.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// GET `path` on 127.0.0.1:`port` over plain HTTP/1.0: the status code and body.
pub fn http_get(port: u16, path: &str) -> (u16, String) {
    use std::io::{Read, Write};
    let Ok(mut s) = std::net::TcpStream::connect(("127.0.0.1", port)) else {
        return (0, String::new());
    };
    let _ = write!(s, "GET {path} HTTP/1.0\r\nHost: localhost\r\n\r\n");
    let mut text = String::new();
    let _ = s.read_to_string(&mut text);
    let code = text
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    let body = text
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_owned())
        .unwrap_or_default();
    (code, body)
}

/// The klab binary under test.
pub fn klab() -> assert_cmd::Command {
    let mut cmd = assert_cmd::Command::cargo_bin("klab").expect("klab binary");
    cmd.env_remove("KUBECONFIG");
    cmd
}
