//! The runtime layer against real containerd, runc and the CNI plugins: a pod sandbox with a
//! network, an HTTP echo container reached from the host, exec, logs, stop and removal — the
//! CRI calls the kubelet makes, in the order it makes them.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::time::Duration;

use k8s_cri::v1 as cri;
use klab::runtime::cri::Cri;
use klab::runtime::images;

use crate::{klab, scratch};

const POD_CIDR: &str = "10.88.77.0/24";

fn sandbox_config(logs: &Path) -> cri::PodSandboxConfig {
    cri::PodSandboxConfig {
        metadata: Some(cri::PodSandboxMetadata {
            name: "echo-pod".into(),
            uid: "4c0e9c4e-klab-test".into(),
            namespace: "default".into(),
            attempt: 0,
        }),
        hostname: "echo-pod".into(),
        log_directory: logs.display().to_string(),
        ..Default::default()
    }
}

fn container(name: &str, image: &str, args: &[&str]) -> cri::ContainerConfig {
    cri::ContainerConfig {
        metadata: Some(cri::ContainerMetadata {
            name: name.into(),
            attempt: 0,
        }),
        image: Some(cri::ImageSpec {
            image: image.into(),
            ..Default::default()
        }),
        args: args.iter().map(|s| s.to_string()).collect(),
        log_path: format!("{name}.log"),
        ..Default::default()
    }
}

fn http_get(ip: &str, port: u16) -> std::io::Result<String> {
    let mut s = TcpStream::connect_timeout(
        &format!("{ip}:{port}").parse().unwrap(),
        Duration::from_secs(5),
    )?;
    s.set_read_timeout(Some(Duration::from_secs(5)))?;
    write!(s, "GET / HTTP/1.0\r\nHost: {ip}\r\n\r\n")?;
    let mut body = String::new();
    s.read_to_string(&mut body)?;
    Ok(body)
}

async fn scenario(cri: &mut Cri, dir: &Path) {
    let version = cri.version().await.unwrap();
    assert_eq!(version.runtime_name, "containerd");
    cri.wait_network_ready(Duration::from_secs(30))
        .await
        .unwrap();
    let names: Vec<String> = cri
        .list_images()
        .await
        .unwrap()
        .into_iter()
        .flat_map(|i| i.repo_tags)
        .collect();
    for want in [
        images::PAUSE,
        images::ECHO,
        "docker.io/library/busybox:latest",
    ] {
        assert!(names.iter().any(|n| n == want), "{want} not in {names:?}");
    }

    let logs = dir.join("pods/default_echo-pod");
    std::fs::create_dir_all(&logs).unwrap();
    let sandbox = sandbox_config(&logs);
    let pod = cri.run_pod_sandbox(sandbox.clone()).await.unwrap();
    let ip = cri
        .pod_sandbox_status(&pod)
        .await
        .unwrap()
        .network
        .unwrap_or_default()
        .ip;
    assert!(
        ip.starts_with("10.88.77."),
        "pod IP {ip} from the node's pod CIDR {POD_CIDR}"
    );

    let echo = cri
        .create_container(&pod, container("echo", images::ECHO, &[]), sandbox.clone())
        .await
        .unwrap();
    cri.start_container(&echo).await.unwrap();
    let shell = container(
        "shell",
        "busybox",
        &["sh", "-c", "echo hello from busybox; sleep 3600"],
    );
    let shell = cri
        .create_container(&pod, shell, sandbox.clone())
        .await
        .unwrap();
    cri.start_container(&shell).await.unwrap();
    for id in [&echo, &shell] {
        let state = cri.container_status(id).await.unwrap().state;
        assert_eq!(
            state,
            cri::ContainerState::ContainerRunning as i32,
            "container {id}"
        );
    }

    // The echo container answers from the pod's own IP, across the CNI bridge.
    let mut answer = Err(std::io::Error::other("not tried"));
    for _ in 0..50 {
        answer = http_get(&ip, 8080);
        if answer.as_ref().is_ok_and(|b| b.contains("echo-pod")) {
            break;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    let body = answer.unwrap();
    assert!(
        body.contains("200 OK") && body.contains("echo-pod"),
        "{body}"
    );

    // Containers of one pod share its network and UTS namespaces: same hostname, and the
    // echo server is on localhost for the shell container.
    let (code, out, _) = cri
        .exec_sync(&shell, &["hostname"], Duration::from_secs(10))
        .await
        .unwrap();
    assert_eq!(
        (code, String::from_utf8_lossy(&out).trim()),
        (0, "echo-pod")
    );
    let (code, out, err) = cri
        .exec_sync(
            &shell,
            &["wget", "-qO-", "http://127.0.0.1:8080/"],
            Duration::from_secs(10),
        )
        .await
        .unwrap();
    assert_eq!(code, 0, "{}", String::from_utf8_lossy(&err));
    assert_eq!(String::from_utf8_lossy(&out).trim(), "echo-pod");

    // CRI logs: one line per write, "<RFC3339Nano> stdout F <text>".
    let log = std::fs::read_to_string(logs.join("shell.log")).unwrap();
    let line = log.lines().next().unwrap_or_default();
    assert!(line.contains(" stdout F hello from busybox"), "{log}");

    // klab ps sees the pod as a node shows it: a shim, and the pod's processes under it.
    let ps = klab().args(["ps", "-o", "json"]).output().unwrap();
    let v: serde_json::Value = serde_json::from_slice(&ps.stdout).unwrap();
    let procs = v.as_array().unwrap();
    let shims: Vec<&serde_json::Value> = procs
        .iter()
        .filter(|p| p["component"] == "containerd-shim-runc-v2")
        .collect();
    assert!(!shims.is_empty(), "a shim per pod");
    let under_shim = |cmd: &str| {
        procs.iter().any(|p| {
            p["command"].as_str().is_some_and(|c| c.contains(cmd))
                && shims.iter().any(|s| s["pid"] == p["ppid"])
        })
    };
    assert!(
        under_shim("sleep 2147483647"),
        "the pause process runs under the shim"
    );
    assert!(
        under_shim("httpd -f -p 8080"),
        "the echo server runs under the shim"
    );

    cri.stop_container(&shell, 2).await.unwrap();
    let status = cri.container_status(&shell).await.unwrap();
    assert_eq!(status.state, cri::ContainerState::ContainerExited as i32);
    cri.stop_pod_sandbox(&pod).await.unwrap();
    cri.remove_pod_sandbox(&pod).await.unwrap();
    assert!(
        cri.list_pod_sandboxes()
            .await
            .unwrap()
            .iter()
            .all(|s| s.id != pod)
    );
}

/// Stops and removes every sandbox, so no shim outlives the test.
async fn clean(cri: &mut Cri) {
    for s in cri.list_pod_sandboxes().await.unwrap_or_default() {
        let _ = cri.stop_pod_sandbox(&s.id).await;
        let _ = cri.remove_pod_sandbox(&s.id).await;
    }
}

#[test]
fn a_pod_runs_on_real_containerd() {
    if !crate::containerd_prerequisites(&[]) {
        return;
    }
    let _one = crate::containerd_host();
    let dir: PathBuf = std::fs::canonicalize(scratch("runtime")).unwrap();
    let containerd = crate::start_containerd(&dir, POD_CIDR);
    let imported = images::preload(&containerd.config.socket(), &dir).unwrap();
    assert!(imported.contains(&images::PAUSE));

    let rt = tokio::runtime::Runtime::new().unwrap();
    let socket = containerd.config.socket();
    let result = rt.block_on(async {
        let mut cri = Cri::connect(&socket).await.unwrap();
        let outcome = tokio::spawn({
            let mut cri = cri.clone();
            let dir = dir.clone();
            async move { scenario(&mut cri, &dir).await }
        })
        .await;
        clean(&mut cri).await;
        outcome
    });
    drop(containerd);
    if let Err(e) = result {
        std::panic::resume_unwind(e.into_panic());
    }
}
