//! Against software nobody here wrote: the seed's shell pipeline, curl, and a real etcd that
//! demands client certificates.

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::{free_port, klab, require, scratch};

/// The seed's recipe, verbatim, run by a real shell.
fn seed_pipeline(kubeconfig: &str, field: &str, out: &Path) {
    let script = format!(
        "cat {kubeconfig} | egrep -i '{field}' | awk -F: '{{print $2}}' | tr -d ' ' | base64 -d > {}",
        out.display()
    );
    let status = Command::new("sh").args(["-c", &script]).status().unwrap();
    assert!(status.success(), "{script}");
}

#[test]
fn extract_is_byte_identical_to_the_seed_pipeline() {
    for bin in ["egrep", "awk", "base64"] {
        if require(bin).is_none() {
            return;
        }
    }
    let dir = scratch("seed-pipeline");
    let kubeconfig = "fixtures/kubeconfig/kind.yaml";
    seed_pipeline(
        kubeconfig,
        "certificate-authority-data",
        &dir.join("myca.pem"),
    );
    seed_pipeline(
        kubeconfig,
        "client-certificate-data",
        &dir.join("mycert.pem"),
    );
    seed_pipeline(kubeconfig, "client-key-data", &dir.join("mykey.pem"));
    klab()
        .args(["certs", "extract", "--kubeconfig", kubeconfig, "--out-dir"])
        .arg(&dir)
        .assert()
        .success();
    for (mine, seed) in [
        ("ca.pem", "myca.pem"),
        ("cert.pem", "mycert.pem"),
        ("key.pem", "mykey.pem"),
    ] {
        let a = std::fs::read(dir.join(mine)).unwrap();
        let b = std::fs::read(dir.join(seed)).unwrap();
        assert!(!a.is_empty());
        assert_eq!(a, b, "{mine} differs from the seed pipeline's {seed}");
    }
}

pub struct Etcd {
    pub child: Child,
    pub url: String,
}

impl Drop for Etcd {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A real etcd on loopback that serves TLS with the fixture server cert and accepts only
/// clients whose certificates the fixture cluster CA signed.
pub fn start_etcd(etcd: &Path, dir: &Path) -> Etcd {
    let (client, peer) = (free_port(), free_port());
    let url = format!("https://127.0.0.1:{client}");
    let fixtures = Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures");
    let log = std::fs::File::create(dir.join("etcd.log")).unwrap();
    let child = Command::new(etcd)
        .args(["--name", "klab-test", "--data-dir"])
        .arg(dir.join("data"))
        .arg(format!("--listen-client-urls={url}"))
        .arg(format!("--advertise-client-urls={url}"))
        .arg(format!("--listen-peer-urls=http://127.0.0.1:{peer}"))
        .arg(format!(
            "--initial-advertise-peer-urls=http://127.0.0.1:{peer}"
        ))
        .arg(format!(
            "--initial-cluster=klab-test=http://127.0.0.1:{peer}"
        ))
        .arg(format!(
            "--cert-file={}",
            fixtures.join("certs/server-localhost.crt").display()
        ))
        .arg(format!(
            "--key-file={}",
            fixtures.join("certs/server-localhost.key").display()
        ))
        .arg(format!(
            "--trusted-ca-file={}",
            fixtures.join("kubeadm/pki/ca.crt").display()
        ))
        .arg("--client-cert-auth=true")
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .unwrap();
    let etcd = Etcd { child, url };
    let deadline = Instant::now() + Duration::from_secs(20);
    while std::net::TcpStream::connect(("127.0.0.1", client)).is_err() {
        assert!(
            Instant::now() < deadline,
            "etcd did not start: see {}",
            dir.join("etcd.log").display()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    etcd
}

fn curl(args: &[&str]) -> (bool, String) {
    let out = Command::new("curl")
        .args(["-sS", "--max-time", "10"])
        .args(args)
        .output()
        .unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), text)
}

/// The seed's `curl --cacert --cert --key` works with the extracted files against a real TLS
/// server that requires client certificates, and fails without them or with an expired one.
#[test]
fn extracted_files_work_with_curl_against_real_etcd() {
    let (Some(etcd), Some(_)) = (require("etcd"), require("curl")) else {
        return;
    };
    let dir = scratch("curl-etcd");
    let server = start_etcd(&etcd, &dir);
    let out = dir.join("pem");
    klab()
        .args([
            "certs",
            "extract",
            "--kubeconfig",
            "fixtures/kubeconfig/kind.yaml",
            "--out-dir",
        ])
        .arg(&out)
        .assert()
        .success();
    let f = |n: &str| out.join(n).display().to_string();
    let url = format!("{}/version", server.url);
    // etcd answers once its TLS listener is serving; give it a few tries.
    let mut answer = (false, String::new());
    for _ in 0..50 {
        answer = curl(&[
            "--cacert",
            &f("ca.pem"),
            "--cert",
            &f("cert.pem"),
            "--key",
            &f("key.pem"),
            &url,
        ]);
        if answer.0 {
            break;
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    assert!(
        answer.0 && answer.1.contains("etcdserver"),
        "curl with the extracted files: {}",
        answer.1
    );

    let (ok, text) = curl(&["--cacert", &f("ca.pem"), &url]);
    assert!(
        !ok,
        "without a client certificate the server must refuse: {text}"
    );

    let expired = dir.join("expired");
    klab()
        .args([
            "certs",
            "extract",
            "--kubeconfig",
            "fixtures/kubeconfig/expired.yaml",
            "--out-dir",
        ])
        .arg(&expired)
        .assert()
        .success()
        .stderr(predicates::str::contains("not valid now"));
    let e = |n: &str| expired.join(n).display().to_string();
    let (ok, text) = curl(&[
        "--cacert",
        &e("ca.pem"),
        "--cert",
        &e("cert.pem"),
        "--key",
        &e("key.pem"),
        &url,
    ]);
    assert!(!ok, "an expired client certificate must be refused: {text}");

    // klab ps sees the real etcd and explains its flags.
    let ps = klab()
        .args(["ps", "--flags", "etcd", "-o", "json"])
        .output()
        .unwrap();
    let v: serde_json::Value = serde_json::from_slice(&ps.stdout).unwrap();
    let mine = v
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["pid"] == server.child.id())
        .expect("etcd found");
    let flag = mine["flags"]
        .as_array()
        .unwrap()
        .iter()
        .find(|f| f["name"] == "client-cert-auth")
        .unwrap();
    assert_eq!(flag["value"], "true");
    assert!(flag["security"].is_string());
}
