//! `klab certs`: snapshots of every output on the fixtures, the files it writes, and its errors.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use klab::cli::{ExtractArgs, KubeconfigArgs, OutputFormat};
use klab::kubeconfig::Source;
use klab::tools::certs;

use crate::{capture, klab, now, scratch, snap};

fn source(path: &str) -> Source {
    Source {
        explicit: Some(PathBuf::from(path)),
        ..Source::default()
    }
}

fn extract_args(out_dir: &Path, context: Option<&str>) -> ExtractArgs {
    ExtractArgs {
        kubeconfig: KubeconfigArgs {
            kubeconfig: None,
            context: context.map(String::from),
        },
        out_dir: out_dir.to_path_buf(),
        force: false,
        stdout: false,
    }
}

/// Runs extract in-process; returns stdout and stderr as one text.
fn extract(source: &Source, args: &ExtractArgs) -> Result<String, certs::Error> {
    let mut out = Vec::new();
    let mut err = Vec::new();
    certs::extract(args, source, now(), &mut out, &mut err)?;
    Ok(format!(
        "{}{}",
        String::from_utf8(err).unwrap(),
        String::from_utf8(out).unwrap()
    ))
}

fn read(p: impl AsRef<Path>) -> Vec<u8> {
    std::fs::read(p.as_ref()).unwrap_or_else(|e| panic!("{}: {e}", p.as_ref().display()))
}

fn mode(p: impl AsRef<Path>) -> u32 {
    std::fs::metadata(p).unwrap().permissions().mode() & 0o777
}

#[test]
fn extract_kind_kubeconfig_writes_the_three_files() {
    let dir = scratch("extract-kind");
    let text = extract(
        &source("fixtures/kubeconfig/kind.yaml"),
        &extract_args(&dir, None),
    )
    .unwrap();
    snap!("certs_extract_kind", text);
    assert_eq!(
        read(dir.join("ca.pem")),
        read("fixtures/kubeadm/pki/ca.crt")
    );
    assert_eq!(read(dir.join("cert.pem")), read("fixtures/certs/admin.crt"));
    assert_eq!(read(dir.join("key.pem")), read("fixtures/certs/admin.key"));
    assert_eq!(mode(dir.join("key.pem")), 0o600);
    assert_eq!(mode(dir.join("cert.pem")), 0o644);
    let leftovers: Vec<_> = std::fs::read_dir(&dir)
        .unwrap()
        .filter_map(Result::ok)
        .collect();
    assert_eq!(
        leftovers.len(),
        3,
        "only the three PEM files, no temporary files"
    );
}

#[test]
fn extract_follows_file_references_relative_to_the_kubeconfig() {
    let dir = scratch("extract-files");
    let text = extract(
        &source("fixtures/kubeconfig/files.yaml"),
        &extract_args(&dir, None),
    )
    .unwrap();
    snap!("certs_extract_files", text);
    assert_eq!(
        read(dir.join("ca.pem")),
        read("fixtures/kubeadm/pki/ca.crt")
    );
    assert_eq!(read(dir.join("cert.pem")), read("fixtures/certs/admin.crt"));
    assert_eq!(read(dir.join("key.pem")), read("fixtures/certs/admin.key"));
}

#[test]
fn extract_picks_the_context_asked_for() {
    let dir = scratch("extract-staging");
    let text = extract(
        &source("fixtures/kubeconfig/multi.yaml"),
        &extract_args(&dir, Some("staging")),
    )
    .unwrap();
    snap!("certs_extract_staging", text);
    assert_eq!(read(dir.join("cert.pem")), read("fixtures/certs/jane.crt"));
    assert_eq!(
        read(dir.join("ca.pem")),
        read("fixtures/certs/staging-ca.crt")
    );
}

#[test]
fn extract_merges_kubeconfig_like_kubectl() {
    let a = "fixtures/kubeconfig/merge-a.yaml";
    let b = "fixtures/kubeconfig/merge-b.yaml";
    // a first: its current-context and its definition of "shared" win.
    let dir = scratch("extract-merge-ab");
    let src = Source {
        env: Some(format!("{a}:/does/not/exist:{b}")),
        ..Source::default()
    };
    extract(&src, &extract_args(&dir, None)).unwrap();
    assert_eq!(read(dir.join("cert.pem")), read("fixtures/certs/admin.crt"));
    // b first: b's current-context (only-b) wins, with jane's embedded certificate.
    let dir = scratch("extract-merge-ba");
    let src = Source {
        env: Some(format!("{b}:{a}")),
        ..Source::default()
    };
    let text = extract(&src, &extract_args(&dir, None)).unwrap();
    assert!(text.contains("context \"only-b\""), "{text}");
    assert_eq!(read(dir.join("cert.pem")), read("fixtures/certs/jane.crt"));
    // and "shared" now comes from b: jane again, through b's file reference.
    let dir = scratch("extract-merge-ba-shared");
    extract(&src, &extract_args(&dir, Some("shared"))).unwrap();
    assert_eq!(read(dir.join("cert.pem")), read("fixtures/certs/jane.crt"));
}

#[test]
fn extract_to_stdout_prints_the_pem_files_in_order() {
    let args = ExtractArgs {
        stdout: true,
        ..extract_args(Path::new("unused"), None)
    };
    let text = extract(&source("fixtures/kubeconfig/kind.yaml"), &args).unwrap();
    let mut want = read("fixtures/kubeadm/pki/ca.crt");
    want.extend(read("fixtures/certs/admin.crt"));
    want.extend(read("fixtures/certs/admin.key"));
    assert_eq!(text.as_bytes(), want.as_slice());
    assert!(!Path::new("unused").exists());
}

#[test]
fn extract_warns_about_expired_and_mismatched_credentials() {
    let dir = scratch("extract-expired");
    let text = extract(
        &source("fixtures/kubeconfig/expired.yaml"),
        &extract_args(&dir, None),
    )
    .unwrap();
    snap!("certs_extract_expired", text);
    let dir = scratch("extract-mismatch");
    let text = extract(
        &source("fixtures/kubeconfig/mismatch.yaml"),
        &extract_args(&dir, None),
    )
    .unwrap();
    snap!("certs_extract_mismatch", text);
}

#[test]
fn inspect_explains_a_ca_a_client_cert_and_its_key() {
    let files: Vec<PathBuf> = [
        "fixtures/kubeadm/pki/ca.crt",
        "fixtures/certs/admin.crt",
        "fixtures/certs/admin.key",
    ]
    .iter()
    .map(PathBuf::from)
    .collect();
    let text = capture(|o| certs::inspect_files(&files, None, None, now(), o).unwrap());
    snap!("certs_inspect_admin", text);
    let json = capture(|o| {
        certs::inspect_files(&files, None, Some(OutputFormat::Json), now(), o).unwrap()
    });
    snap!("certs_inspect_admin_json", json);
}

#[test]
fn inspect_finds_what_is_wrong() {
    let files: Vec<PathBuf> = [
        "fixtures/certs/expired.crt",
        "fixtures/certs/mismatch.crt",
        "fixtures/certs/mismatch.key",
        "fixtures/certs/jane.crt",
        "fixtures/certs/ec.crt",
        "fixtures/certs/ec.key",
        "fixtures/certs/ed25519.crt",
        "fixtures/certs/ed25519.key",
        "fixtures/kubeadm/pki/apiserver.crt",
        "fixtures/kubeadm/pki/apiserver-kubelet-client.crt",
        "fixtures/kubeadm/pki/apiserver-kubelet-client.key",
    ]
    .iter()
    .map(PathBuf::from)
    .collect();
    let ca = Path::new("fixtures/kubeadm/pki/ca.crt");
    let text = capture(|o| certs::inspect_files(&files, Some(ca), None, now(), o).unwrap());
    snap!("certs_inspect_problems", text);
    assert!(text.contains("EXPIRED"));
    assert!(text.contains("does NOT match fixtures/certs/mismatch.key"));
    assert!(text.contains("matches fixtures/certs/ec.key"));
    assert!(text.contains("matches fixtures/certs/ed25519.key"));
    assert!(text.contains("matches fixtures/kubeadm/pki/apiserver-kubelet-client.key"));
    assert!(
        text.contains("NOT signed by"),
        "jane is signed by the staging CA, not the cluster CA"
    );
}

#[test]
fn inspect_reads_a_kubeconfig_context() {
    let text = capture(|o| {
        certs::inspect_kubeconfig(
            &source("fixtures/kubeconfig/multi.yaml"),
            Some("staging"),
            None,
            None,
            now(),
            o,
        )
        .unwrap()
    });
    snap!("certs_inspect_kubeconfig_staging", text);
    assert!(text.contains("groups [developers, qa, system:authenticated]"));
}

#[test]
fn inspect_a_bundle_shows_each_certificate() {
    let files = vec![PathBuf::from("fixtures/certs/bundle.pem")];
    let text = capture(|o| certs::inspect_files(&files, None, None, now(), o).unwrap());
    assert!(text.contains("fixtures/certs/bundle.pem (certificate 1 of 2)"));
    assert!(
        text.contains("signed by CN=kubernetes (fixtures/certs/bundle.pem (certificate 2 of 2))")
    );
}

#[test]
fn check_expiration_reads_a_kubeadm_node() {
    let pki = Path::new("fixtures/kubeadm/pki");
    let conf = Path::new("fixtures/kubeadm");
    let text = capture(|o| certs::check_expiration(pki, conf, None, now(), o).unwrap());
    snap!("certs_check_expiration", text);
    let later = time::macros::datetime!(2028-01-01 00:00:00 UTC);
    let text = capture(|o| certs::check_expiration(pki, conf, None, later, o).unwrap());
    snap!("certs_check_expiration_2028", text);
    assert!(text.contains("<invalid>"));
    let yaml = capture(|o| {
        certs::check_expiration(pki, conf, Some(OutputFormat::Yaml), now(), o).unwrap()
    });
    snap!("certs_check_expiration_yaml", yaml);
}

#[test]
fn check_expiration_marks_missing_and_external() {
    let dir = scratch("pki-partial");
    let pki = dir.join("pki");
    std::fs::create_dir_all(pki.join("etcd")).unwrap();
    for f in [
        "ca.crt",
        "apiserver.crt",
        "etcd/ca.crt",
        "etcd/ca.key",
        "etcd/server.crt",
    ] {
        std::fs::copy(Path::new("fixtures/kubeadm/pki").join(f), pki.join(f)).unwrap();
    }
    let text = capture(|o| certs::check_expiration(&pki, &dir, None, now(), o).unwrap());
    snap!("certs_check_expiration_partial", text);
}

/// Each bad input: one `error:` line naming the file and the problem, a failing exit code,
/// and nothing written.
#[test]
fn bad_input_gets_one_clear_error_line_and_writes_nothing() {
    let out = scratch("errors");
    let out_s = out.to_str().unwrap();
    let cases: &[(&str, &[&str])] = &[
        (
            "missing kubeconfig",
            &[
                "certs",
                "extract",
                "--kubeconfig",
                "fixtures/kubeconfig/nope.yaml",
            ],
        ),
        (
            "malformed YAML",
            &[
                "certs",
                "extract",
                "--kubeconfig",
                "fixtures/kubeconfig/malformed.yaml",
            ],
        ),
        (
            "bad base64",
            &[
                "certs",
                "extract",
                "--kubeconfig",
                "fixtures/kubeconfig/bad-base64.yaml",
            ],
        ),
        (
            "not PEM",
            &[
                "certs",
                "extract",
                "--kubeconfig",
                "fixtures/kubeconfig/not-pem.yaml",
            ],
        ),
        (
            "unknown context",
            &[
                "certs",
                "extract",
                "--kubeconfig",
                "fixtures/kubeconfig/multi.yaml",
                "--context",
                "prod",
            ],
        ),
        (
            "current-context missing",
            &[
                "certs",
                "extract",
                "--kubeconfig",
                "fixtures/kubeconfig/no-context.yaml",
            ],
        ),
        (
            "token user",
            &[
                "certs",
                "extract",
                "--kubeconfig",
                "fixtures/kubeconfig/token.yaml",
            ],
        ),
        (
            "exec user",
            &[
                "certs",
                "extract",
                "--kubeconfig",
                "fixtures/kubeconfig/exec.yaml",
            ],
        ),
        (
            "inspect non-PEM file",
            &["certs", "inspect", "fixtures/certs/not-pem.txt"],
        ),
        (
            "inspect missing file",
            &["certs", "inspect", "fixtures/certs/nope.crt"],
        ),
        (
            "check-expiration without PKI",
            &[
                "certs",
                "check-expiration",
                "--pki-dir",
                "fixtures/nope/pki",
            ],
        ),
    ];
    let mut report = String::new();
    for (name, args) in cases {
        let mut args = args.to_vec();
        if args[1] == "extract" {
            args.extend(["--out-dir", out_s]);
        }
        let output = klab()
            .args(&args)
            .current_dir(env!("CARGO_MANIFEST_DIR"))
            .output()
            .unwrap();
        let stderr = String::from_utf8(output.stderr).unwrap();
        assert!(!output.status.success(), "{name}: must fail");
        assert_eq!(stderr.lines().count(), 1, "{name}: one line, got {stderr}");
        assert!(stderr.starts_with("error: "), "{name}: {stderr}");
        assert!(output.stdout.is_empty(), "{name}: no output");
        assert_eq!(
            std::fs::read_dir(&out).unwrap().count(),
            0,
            "{name}: wrote files"
        );
        report.push_str(&format!(
            "$ klab {}\n{stderr}\n",
            args.join(" ").replace(out_s, "OUT")
        ));
    }
    snap!("certs_errors", report);
}

#[test]
fn extract_refuses_to_overwrite_without_force() {
    let dir = scratch("overwrite");
    std::fs::write(dir.join("cert.pem"), "keep me").unwrap();
    let args = [
        "certs",
        "extract",
        "--kubeconfig",
        "fixtures/kubeconfig/kind.yaml",
        "--out-dir",
    ];
    let assert = klab().args(args).arg(&dir).assert().failure();
    let stderr = String::from_utf8(assert.get_output().stderr.clone()).unwrap();
    assert!(
        stderr.contains("refusing to overwrite") && stderr.contains("--force"),
        "{stderr}"
    );
    assert_eq!(read(dir.join("cert.pem")), b"keep me");
    assert!(!dir.join("ca.pem").exists(), "nothing half-written");
    klab()
        .args(args)
        .arg(&dir)
        .arg("--force")
        .assert()
        .success();
    assert_eq!(read(dir.join("cert.pem")), read("fixtures/certs/admin.crt"));
}

#[test]
fn extract_honours_the_kubeconfig_environment_variable() {
    let dir = scratch("env");
    klab()
        .env("KUBECONFIG", "fixtures/kubeconfig/multi.yaml")
        .args(["certs", "extract", "--context", "staging", "--out-dir"])
        .arg(&dir)
        .assert()
        .success();
    assert_eq!(read(dir.join("cert.pem")), read("fixtures/certs/jane.crt"));
}

#[test]
fn wrong_flags_are_usage_errors() {
    klab()
        .args(["certs", "extract", "--kubeconfg", "x"])
        .assert()
        .code(2);
    klab().args(["certs", "frobnicate"]).assert().code(2);
    klab().args(["certs", "inspect"]).assert().code(2);
}
