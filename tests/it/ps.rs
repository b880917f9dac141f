//! `klab ps`: the seed's kind capture read, explained and judged; live /proc on this machine.

use std::os::unix::process::CommandExt;
use std::process::{Command, Stdio};

use klab::cli::OutputFormat;
use klab::tools::ps::{self, Process, Source};

use crate::{capture, klab, scratch, snap};

fn seed_capture() -> Vec<Process> {
    let text = std::fs::read_to_string("fixtures/ps/kind-control-plane.txt").unwrap();
    ps::load(
        Source::Capture {
            what: "kind-control-plane.txt".into(),
            text: &text,
        },
        false,
    )
    .unwrap()
}

#[test]
fn lists_the_seed_capture_by_role() {
    let procs = seed_capture();
    let text = capture(|o| ps::list(&procs, None, o).unwrap());
    snap!("ps_kind_capture", text);
    assert!(!text.contains("/sbin/init"), "not a cluster process");
    assert!(text.contains("not running    cloud-controller-manager"));
    let json = capture(|o| ps::list(&procs, Some(OutputFormat::Json), o).unwrap());
    snap!("ps_kind_capture_json", json);
}

#[test]
fn all_shows_every_process() {
    let text = std::fs::read_to_string("fixtures/ps/kind-control-plane.txt").unwrap();
    let procs = ps::load(
        Source::Capture {
            what: "x".into(),
            text: &text,
        },
        true,
    )
    .unwrap();
    assert_eq!(procs.len(), text.lines().count() - 1);
}

#[test]
fn explains_every_flag_of_the_seed_capture() {
    let procs = seed_capture();
    let text = capture(|o| ps::explain(&procs, None, None, o).unwrap());
    snap!("ps_kind_flags", text);
    assert!(
        !text.contains("not in klab's catalog"),
        "every flag of the seed is documented"
    );
    let one = capture(|o| ps::explain(&procs, Some("apiserver"), None, o).unwrap());
    snap!("ps_kind_flags_apiserver", one);
    let json = capture(|o| {
        ps::explain(&procs, Some("kube-scheduler"), Some(OutputFormat::Json), o).unwrap()
    });
    snap!("ps_kind_flags_scheduler_json", json);
}

#[test]
fn judges_the_seed_capture_like_kube_bench() {
    let procs = seed_capture();
    let text = capture(|o| ps::check(&procs, None, o).unwrap());
    snap!("ps_kind_check", text);
    let report = ps::check::report(&procs);
    let finding = |id: &str| {
        report
            .groups
            .iter()
            .flat_map(|g| &g.findings)
            .find(|f| f.id == id)
            .unwrap()
            .status
    };
    use ps::check::Status::*;
    assert_eq!(
        finding("1.2.1"),
        Fail,
        "kind's API server leaves --anonymous-auth at its default"
    );
    assert_eq!(finding("1.2.7"), Pass, "Node,RBAC includes RBAC");
    assert_eq!(finding("2.2"), Pass, "etcd --client-cert-auth=true");
    assert_eq!(
        finding("4.2.1"),
        Warn,
        "the kubelet's setting is in its --config file"
    );
    let json = capture(|o| ps::check(&procs, Some(OutputFormat::Json), o).unwrap());
    snap!("ps_kind_check_json", json);
    let v: serde_json::Value = serde_json::from_str(&json).unwrap();
    assert_eq!(v["totals"]["fail"], report.totals.fail);
}

#[test]
fn bad_captures_name_the_file_and_line() {
    let mut report = String::new();
    for f in [
        "fixtures/ps/garbage.txt",
        "fixtures/ps/truncated.txt",
        "fixtures/ps/nope.txt",
    ] {
        let out = klab().args(["ps", "--from", f]).output().unwrap();
        assert!(!out.status.success());
        let stderr = String::from_utf8(out.stderr).unwrap();
        assert_eq!(stderr.lines().count(), 1, "{stderr}");
        report.push_str(&format!("$ klab ps --from {f}\n{stderr}\n"));
    }
    let out = klab()
        .args(["ps", "--flags", "kube-nothing"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    report.push_str(&format!(
        "$ klab ps --flags kube-nothing\n{}",
        String::from_utf8(out.stderr).unwrap()
    ));
    snap!("ps_errors", report);
}

#[test]
fn reads_a_capture_from_stdin() {
    let text = std::fs::read("fixtures/ps/kind-control-plane.txt").unwrap();
    let out = klab()
        .args(["ps", "--from", "-", "-o", "json"])
        .write_stdin(text)
        .output()
        .unwrap();
    assert!(out.status.success());
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let api = v
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["component"] == "kube-apiserver")
        .unwrap();
    assert_eq!(api["pid"], 558);
    assert!(
        api["flags"]
            .as_array()
            .unwrap()
            .iter()
            .any(|f| f["name"] == "etcd-servers")
    );
}

/// A process that looks like an API server with its legacy insecure port open to the world:
/// /bin/sh started through a link named kube-apiserver, so /proc shows that name and flags.
#[test]
fn live_processes_are_found_in_proc_and_judged() {
    let dir = scratch("live-ps");
    let link = dir.join("kube-apiserver");
    std::os::unix::fs::symlink("/bin/sh", &link).unwrap();
    let mut child = Command::new(&link)
        .arg0(link.to_str().unwrap())
        .args(["-c", "sleep 60; true", "kube-apiserver"])
        .args([
            "--insecure-port=8080",
            "--insecure-bind-address=0.0.0.0",
            "--anonymous-auth=true",
        ])
        .stdout(Stdio::null())
        .spawn()
        .unwrap();
    let pid = child.id();
    // Wait until the shell has forked its `sleep`, so the tree has a child to show.
    let children = format!("/proc/{pid}/task/{pid}/children");
    for _ in 0..100 {
        if std::fs::read_to_string(&children).is_ok_and(|c| !c.trim().is_empty()) {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    let result = std::panic::catch_unwind(|| {
        let out = klab().args(["ps", "-o", "json"]).output().unwrap();
        assert!(out.status.success());
        let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        let me = v
            .as_array()
            .unwrap()
            .iter()
            .find(|p| p["pid"] == pid)
            .expect("found in /proc");
        assert_eq!(me["component"], "kube-apiserver");
        assert_eq!(me["user"], "root");
        let sleep = v.as_array().unwrap().iter().find(|p| p["ppid"] == pid);
        assert!(sleep.is_some(), "its child is shown under it");

        let out = klab()
            .args(["ps", "--check", "-o", "json"])
            .output()
            .unwrap();
        let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        let findings = v["groups"][0]["findings"].as_array().unwrap();
        let mine = |id: &str| {
            findings
                .iter()
                .find(|f| f["id"] == id && f["pid"] == pid)
                .unwrap()
                .clone()
        };
        assert_eq!(mine("1.2.19")["status"], "FAIL", "insecure port on 0.0.0.0");
        assert_eq!(mine("1.2.1")["status"], "FAIL");
        assert!(
            mine("1.2.19")["evidence"]
                .as_str()
                .unwrap()
                .contains("--insecure-port=8080")
        );
    });
    let _ = child.kill();
    let _ = child.wait();
    result.unwrap();
}
