//! `klab probe` against a real klab API server (on klab-store) and a real etcd: the happy path,
//! and each failure a learner meets — unknown CA, a name not in the certificate, nothing
//! listening, a client certificate the server does not trust, an expired one.

use std::path::{Path, PathBuf};

use klab::cli::ProbeArgs;
use klab::kubeconfig::Source;
use klab::tools::probe;

use crate::apiserver::harness::{Backend, Cluster};
use crate::{free_port, klab, now};

fn args() -> ProbeArgs {
    ProbeArgs {
        kubeconfig: None,
        context: None,
        server: None,
        cacert: None,
        cert: None,
        key: None,
        tls_server_name: None,
        insecure_skip_tls_verify: false,
        verbosity: 0,
        output: None,
    }
}

fn run(a: &ProbeArgs, source: &Source) -> (probe::Report, String, String) {
    let target = probe::target(a, source).unwrap();
    let rt = tokio::runtime::Runtime::new().unwrap();
    let mut log = Vec::new();
    let report = rt
        .block_on(probe::probe(&target, a.verbosity, now(), &mut log))
        .unwrap();
    let mut out = Vec::new();
    probe::render(&report, now(), &mut out).unwrap();
    (
        report,
        String::from_utf8(out).unwrap(),
        String::from_utf8(log).unwrap(),
    )
}

/// Snapshots a probe's output with what changes from run to run replaced: ports, temp
/// paths, the throwaway PKI's dates, the negotiated cipher, the server's version.
fn snap_stable(name: &str, text: &str, cluster_dir: &Path) {
    let mut s = crate::snapshot_settings();
    s.add_filter(&regex_escape(&cluster_dir.display().to_string()), "[DIR]");
    s.add_filter(r"127\.0\.0\.1:\d+", "127.0.0.1:[PORT]");
    s.add_filter(r"until \d{4}-\d\d-\d\d \([^)]*\)", "until [DATE] ([LEFT])");
    s.add_filter(r"TLS13_[A-Z0-9_]+", "[CIPHER]");
    s.add_filter(r"v\d+\.\d+\.\d+[^ ]* \([^)]*\)", "[VERSION]");
    s.bind(|| insta::assert_snapshot!(name, text));
}

fn regex_escape(s: &str) -> String {
    s.chars()
        .map(|c| {
            if c.is_alphanumeric() || c == '/' {
                c.to_string()
            } else {
                format!("\\{c}")
            }
        })
        .collect()
}

fn source(p: &Path) -> Source {
    Source {
        explicit: Some(p.to_path_buf()),
        ..Source::default()
    }
}

#[test]
fn probe_explains_a_healthy_api_server_and_each_failure() {
    let Some(cluster) = Cluster::start(Backend::KlabStore, &[]) else {
        return;
    };
    let dir = cluster.dir.path().to_path_buf();
    let kc = source(&cluster.kubeconfig);

    // All good: TLS verified, identity from the client certificate, health and discovery.
    let (report, text, _) = run(&args(), &kc);
    assert!(report.problems.is_empty(), "{text}");
    let id = report
        .identity
        .as_ref()
        .expect("SelfSubjectReview answered");
    assert_eq!(id.user, "admin");
    assert!(id.groups.contains(&"system:masters".to_string()));
    assert!(
        report
            .health
            .iter()
            .any(|(p, b)| p == "/readyz?verbose" && b.contains("[+]etcd ok")),
        "{text}"
    );
    let d = report.discovery.as_ref().unwrap();
    assert!(
        d.core_resources > 5 && d.groups.iter().any(|g| g == "apps/v1"),
        "{text}"
    );
    snap_stable("probe_apiserver", &text, &dir);

    // -v 8: each request logged with headers and body, as kubectl --v=8.
    let (_, _, log) = run(
        &ProbeArgs {
            verbosity: 8,
            ..args()
        },
        &kc,
    );
    assert!(
        log.contains("round_trippers: GET https://127.0.0.1:"),
        "{log}"
    );
    assert!(
        log.contains("Request Headers:") && log.contains("Response Body: {"),
        "{log}"
    );

    // The wrong CA: the fixtures' kind CA did not sign this server's certificate.
    let fixtures = Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures");
    let wrong_ca = ProbeArgs {
        server: Some(cluster.url.clone()),
        cacert: Some(fixtures.join("kubeadm/pki/ca.crt")),
        cert: Some(dir.join("admin.crt")),
        key: Some(dir.join("admin.key")),
        ..args()
    };
    let (report, text, _) = run(&wrong_ca, &kc);
    assert!(report.problems[0].contains("did not sign"), "{text}");
    snap_stable("probe_wrong_ca", &text, &dir);
    assert!(
        !report.tls.as_ref().unwrap().chain.is_empty(),
        "the chain is shown even so"
    );

    // The same wrong CA with --insecure-skip-tls-verify: any server certificate is accepted
    // (pki::AnyServer), the handshake's signatures still checked, and the report says so.
    let (report, text, _) = run(
        &ProbeArgs {
            insecure_skip_tls_verify: true,
            ..wrong_ca
        },
        &kc,
    );
    let tls = report.tls.as_ref().unwrap();
    assert!(tls.insecure_skip_verify && !tls.chain.is_empty(), "{text}");
    assert_eq!(
        report.problems,
        ["insecure-skip-tls-verify is set: nothing proves this server is the one you meant"],
        "{text}"
    );
    assert_eq!(report.identity.as_ref().unwrap().user, "admin", "{text}");

    // A name the certificate does not carry.
    let (report, text, _) = run(
        &ProbeArgs {
            tls_server_name: Some("api.example.test".into()),
            ..args()
        },
        &kc,
    );
    assert!(
        report.problems[0].contains("is not valid for \"api.example.test\""),
        "{text}"
    );

    // Nothing listening.
    let nothing = ProbeArgs {
        server: Some(format!("https://127.0.0.1:{}", free_port())),
        ..args()
    };
    let (report, text, _) = run(&nothing, &kc);
    assert!(
        report.problems[0].starts_with("nothing is listening on 127.0.0.1:"),
        "{text}"
    );
    assert!(report.problems[0].contains("klab ps"));
    snap_stable("probe_nothing_listening", &text, &dir);

    // A client certificate from another CA: the API server answers 401, as upstream does.
    let stranger = ProbeArgs {
        server: Some(cluster.url.clone()),
        cacert: Some(dir.join("ca.crt")),
        cert: Some(fixtures.join("certs/jane.crt")),
        key: Some(fixtures.join("certs/jane.key")),
        ..args()
    };
    let (report, text, _) = run(&stranger, &kc);
    assert!(report.identity.is_none());
    assert!(
        report.problems.iter().any(|p| p.starts_with(
            "401 Unauthorized: the API server does not accept this client certificate"
        )),
        "{text}"
    );

    // The CLI: exit code 1 and a one-line error for a failed probe; 0 for a good one.
    let out = klab()
        .args(["probe", "--kubeconfig"])
        .arg(&cluster.kubeconfig)
        .arg("--tls-server-name=nope.test")
        .output()
        .unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8(out.stderr).unwrap();
    assert!(
        stderr
            .starts_with("error: the probe found a problem: the server's certificate is not valid"),
        "{stderr}"
    );
    let out = klab()
        .args(["probe", "-o", "json", "--kubeconfig"])
        .arg(&cluster.kubeconfig)
        .output()
        .unwrap();
    assert!(out.status.success());
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["identity"]["user"], "admin");
}

/// etcd over TLS with client-certificate auth: /version and /health, and an expired client
/// certificate refused by the server, explained from the certificate itself.
#[test]
fn probe_reads_etcd_and_explains_a_refused_client_certificate() {
    let Some(etcd) = crate::require("etcd") else {
        return;
    };
    let dir = crate::scratch("probe-etcd");
    let server = crate::real::start_etcd(&etcd, &dir);
    let fixtures: PathBuf = Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures");
    let good = ProbeArgs {
        server: Some(server.url.clone()),
        cacert: Some(fixtures.join("kubeadm/pki/ca.crt")),
        cert: Some(fixtures.join("certs/admin.crt")),
        key: Some(fixtures.join("certs/admin.key")),
        ..args()
    };
    let none = Source::default();
    let mut report = run(&good, &none).0;
    for _ in 0..50 {
        if report.kind == "etcd" {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(200));
        report = run(&good, &none).0;
    }
    assert_eq!(report.kind, "etcd", "{:?}", report.problems);
    assert!(
        report
            .version
            .as_deref()
            .unwrap_or("")
            .starts_with("etcd 3.")
    );
    assert!(
        report
            .health
            .iter()
            .any(|(p, b)| p == "/health" && b.contains("\"health\":\"true\""))
    );

    let expired = ProbeArgs {
        cert: Some(fixtures.join("certs/expired.crt")),
        key: Some(fixtures.join("certs/expired.key")),
        ..good
    };
    let (report, text, _) = run(&expired, &none);
    assert!(
        report.problems[0].contains("refused the TLS client certificate"),
        "{text}"
    );
    assert!(
        report.problems[0].contains("it expired on 2021-01-01"),
        "{text}"
    );
}
