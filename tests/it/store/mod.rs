//! klab-store tested from the outside: one conformance suite run against klab-store and real
//! etcd with identical expectations, real `etcdctl` against klab-store, and a crash test.
//!
//! Mirrors etcd's own integration tests in spirit (`tests/integration`, `tests/e2e`). Tests that
//! need `etcd` or `etcdctl` fail when they are missing and `CI` is set; elsewhere they skip
//! with a printed reason.

pub mod conformance;
pub mod crash;
pub mod etcdctl;
pub mod procs;
pub mod tls;

/// Every conformance scenario gives the same transcript on klab-store as on etcd 3.4.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn conformance_matches_etcd() {
    let Some(etcd_bin) = procs::require("etcd") else {
        return;
    };
    let etcd = procs::Proc::etcd(&etcd_bin);
    let klab = procs::Proc::klab(None);
    let want = conformance::run_all(&etcd.endpoint).await;
    let got = conformance::run_all(&klab.endpoint).await;
    conformance::assert_same(&got, &want);
}

/// The scenarios run on klab-store alone, so the suite is exercised even without etcd.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn conformance_runs_on_klab_store() {
    let klab = procs::Proc::klab(None);
    let transcript = conformance::run_all(&klab.endpoint).await;
    assert!(transcript.iter().all(|(_, lines)| !lines.is_empty()));
}

#[test]
fn etcdctl_against_klab_store() {
    let Some(etcdctl) = procs::require("etcdctl") else {
        return;
    };
    etcdctl::run(&etcdctl);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acknowledged_writes_survive_sigkill() {
    crash::run().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_and_health() {
    let klab = procs::Proc::klab(None);
    let mut client = etcd_client::Client::connect([&klab.endpoint], None)
        .await
        .unwrap();
    client.put("m", "1", None).await.unwrap();
    let metrics = procs::http_get(&klab.metrics, "/metrics");
    for name in [
        "etcd_disk_wal_fsync_duration_seconds_bucket",
        "etcd_disk_backend_commit_duration_seconds_count",
        "etcd_mvcc_db_total_size_in_bytes",
        "etcd_debugging_mvcc_current_revision 2",
    ] {
        assert!(metrics.contains(name), "{name} missing from:\n{metrics}");
    }
    assert!(procs::http_get(&klab.metrics, "/health").ends_with("{\"health\":\"true\"}"));
    assert!(procs::http_get(&klab.metrics, "/readyz").ends_with("\r\n\r\nok"));
    assert!(procs::http_get(&klab.metrics, "/livez").ends_with("\r\n\r\nok"));
}

/// A full disk: the write that does not fit is refused with etcd's NOSPACE error, every later
/// write is refused too, reads go on, and after a restart every acknowledged write is there.
/// Needs root to mount a small tmpfs; skips elsewhere.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn full_disk_refuses_writes_and_keeps_acknowledged_ones() {
    let dir = tempfile::tempdir().unwrap();
    let Some(_mount) = procs::SmallDisk::mount(dir.path(), "256k") else {
        return;
    };
    let mut klab = procs::Proc::klab(Some(dir.path()));
    let mut c = etcd_client::Client::connect([&klab.endpoint], None)
        .await
        .unwrap();
    let mut acked = Vec::new();
    let refused = loop {
        let key = format!("full/{:04}", acked.len());
        match c.put(key.clone(), vec![b'x'; 8192], None).await {
            Ok(_) => acked.push(key),
            Err(e) => break e,
        }
        assert!(acked.len() < 1000, "a 256 KiB disk never filled up");
    };
    let etcd_client::Error::GRpcStatus(status) = refused else {
        panic!("{refused}")
    };
    assert_eq!(status.code(), tonic::Code::ResourceExhausted);
    assert_eq!(
        status.message(),
        "etcdserver: mvcc: database space exceeded"
    );
    assert!(
        c.put("full/later", "small", None).await.is_err(),
        "later writes are refused too"
    );
    assert!(procs::http_get(&klab.metrics, "/health").contains("\"health\":\"false\""));
    let prefix = Some(etcd_client::GetOptions::new().with_prefix());
    assert_eq!(
        c.get("full/", prefix.clone()).await.unwrap().count(),
        acked.len() as i64
    );
    klab.kill();
    let klab = procs::Proc::klab(Some(dir.path()));
    let mut c = etcd_client::Client::connect([&klab.endpoint], None)
        .await
        .unwrap();
    let after = c.get("full/", prefix).await.unwrap();
    let keys: Vec<&str> = after.kvs().iter().map(|kv| kv.key_str().unwrap()).collect();
    assert_eq!(keys, acked, "exactly the acknowledged writes survive");
}

/// https with `--client-cert-auth`: a client with a certificate from the trusted CA gets in,
/// a client without one does not.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_with_client_certificates() {
    use etcd_client::{Certificate, ConnectOptions, Identity, TlsOptions};
    if procs::require("openssl").is_none() {
        return;
    }
    let pki = tempfile::tempdir().unwrap();
    tls::make_pki(pki.path());
    let klab = procs::Proc::klab_tls(pki.path());
    let read = |f: &str| std::fs::read(pki.path().join(f)).unwrap();
    let ca = Certificate::from_pem(read("ca.crt"));
    let with_cert = TlsOptions::new()
        .ca_certificate(ca.clone())
        .identity(Identity::from_pem(read("client.crt"), read("client.key")));
    let opts = ConnectOptions::new().with_tls(with_cert);
    let mut c = etcd_client::Client::connect([&klab.endpoint], Some(opts))
        .await
        .unwrap();
    c.put("tls", "yes", None).await.unwrap();
    assert_eq!(c.get("tls", None).await.unwrap().kvs()[0].value(), b"yes");

    let without = ConnectOptions::new()
        .with_tls(TlsOptions::new().ca_certificate(ca))
        .with_timeout(std::time::Duration::from_secs(5));
    let refused = match etcd_client::Client::connect([&klab.endpoint], Some(without)).await {
        Ok(mut c) => c.get("tls", None).await.is_err(),
        Err(_) => true,
    };
    assert!(refused, "a client without a certificate got in");

    // The CKA way: etcdctl with the API server's etcd client certificate.
    if let Some(etcdctl) = procs::require("etcdctl") {
        let f = |n: &str| pki.path().join(n).display().to_string();
        let out = std::process::Command::new(etcdctl)
            .arg(format!(
                "--endpoints={}",
                klab.endpoint.trim_start_matches("https://")
            ))
            .args([
                "--cacert",
                &f("ca.crt"),
                "--cert",
                &f("client.crt"),
                "--key",
                &f("client.key"),
            ])
            .args(["get", "tls"])
            .output()
            .unwrap();
        assert_eq!(String::from_utf8_lossy(&out.stdout), "tls\nyes\n");
    }
}

/// `--auto-compaction-retention=2s`: etcd's periodic compactor compacts to the revision seen one
/// retention window ago, so an early revision becomes unreadable.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn periodic_auto_compaction() {
    let klab = procs::Proc::klab_with(None, &["--auto-compaction-retention=2s"]);
    let mut c = etcd_client::Client::connect([&klab.endpoint], None)
        .await
        .unwrap();
    let first = c
        .put("ac", "1", None)
        .await
        .unwrap()
        .header()
        .unwrap()
        .revision();
    let old = Some(etcd_client::GetOptions::new().with_revision(first));
    for i in 0..200 {
        c.put("ac", i.to_string(), None).await.unwrap();
        if let Err(etcd_client::Error::GRpcStatus(s)) = c.get("ac", old.clone()).await {
            assert_eq!(
                s.message(),
                "etcdserver: mvcc: required revision has been compacted"
            );
            return;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    panic!("revision {first} was never compacted");
}

/// Calls klab-store does not implement answer at once with gRPC's Unimplemented, never hang.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unsupported_calls_are_refused_not_hung() {
    let klab = procs::Proc::klab(None);
    let opts = etcd_client::ConnectOptions::new().with_timeout(std::time::Duration::from_secs(5));
    let mut c = etcd_client::Client::connect([&klab.endpoint], Some(opts))
        .await
        .unwrap();
    let code = |r: Result<(), etcd_client::Error>| match r {
        Err(etcd_client::Error::GRpcStatus(s)) => s.code(),
        other => panic!("expected a gRPC status, got {other:?}"),
    };
    assert_eq!(
        code(c.auth_enable().await.map(|_| ())),
        tonic::Code::Unimplemented
    );
    assert_eq!(
        code(c.user_list().await.map(|_| ())),
        tonic::Code::Unimplemented
    );
    assert_eq!(
        code(c.hash_kv(0).await.map(|_| ())),
        tonic::Code::Unimplemented
    );
    assert_eq!(
        code(c.member_remove(1).await.map(|_| ())),
        tonic::Code::Unimplemented
    );
}

/// Started through its link name with the flags of kubeadm's etcd manifest (peer flags are
/// accepted and ignored), klab-store serves on every listen URL, and a watch that asked for
/// progress notifications gets them at the configured interval.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kubeadm_etcd_flags_through_the_klab_store_link() {
    let dir = tempfile::tempdir().unwrap();
    let link = dir.path().join("klab-store");
    std::os::unix::fs::symlink(env!("CARGO_BIN_EXE_klab"), &link).unwrap();
    let (a, b, peer) = (procs::free_port(), procs::free_port(), procs::free_port());
    let peer = format!("http://127.0.0.1:{peer}");
    let mut child = std::process::Command::new(&link)
        .arg(format!("--advertise-client-urls=http://127.0.0.1:{a}"))
        .arg("--client-cert-auth=false")
        .arg(format!("--data-dir={}", dir.path().join("data").display()))
        .arg("--experimental-initial-corrupt-check=true")
        .arg("--experimental-watch-progress-notify-interval=1s")
        .arg(format!("--initial-advertise-peer-urls={peer}"))
        .arg(format!("--initial-cluster=node={peer}"))
        .arg(format!(
            "--listen-client-urls=http://127.0.0.1:{a},http://127.0.0.1:{b}"
        ))
        .arg(format!("--listen-peer-urls={peer}"))
        .arg("--name=node")
        .arg("--peer-client-cert-auth=true")
        .arg("--snapshot-count=10000")
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    while std::net::TcpStream::connect(("127.0.0.1", b)).is_err() {
        assert!(
            std::time::Instant::now() < deadline,
            "klab-store did not start"
        );
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    let mut ca = etcd_client::Client::connect([format!("http://127.0.0.1:{a}")], None)
        .await
        .unwrap();
    let mut cb = etcd_client::Client::connect([format!("http://127.0.0.1:{b}")], None)
        .await
        .unwrap();
    ca.put("k", "from a", None).await.unwrap();
    assert_eq!(cb.get("k", None).await.unwrap().kvs()[0].value(), b"from a");
    let members = cb.member_list().await.unwrap();
    assert_eq!(members.members()[0].name(), "node");
    assert_eq!(
        members.members()[0].peer_urls(),
        std::slice::from_ref(&peer)
    );
    let opts = etcd_client::WatchOptions::new().with_progress_notify();
    let mut w = cb.watch("quiet", Some(opts)).await.unwrap();
    assert!(w.message().await.unwrap().unwrap().created());
    let progress = w.message().await.unwrap().unwrap();
    assert!(progress.events().is_empty() && progress.header().unwrap().revision() == 2);
    let _ = child.kill();
    let _ = child.wait();
}

/// `klab bench store --endpoints` measures a running store and reports every row, as a table
/// and as JSON (the figures themselves are not asserted: no timing asserts in tests).
#[test]
fn bench_reports_every_row() {
    let klab = procs::Proc::klab(None);
    let run = |extra: &[&str]| {
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_klab"))
            .args([
                "bench",
                "store",
                "--puts",
                "40",
                "--endpoints",
                &klab.endpoint,
            ])
            .args(extra)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap()
    };
    let table = run(&[]);
    assert!(table.starts_with("BENCHMARK"), "{table}");
    for row in [
        "put, 1 client",
        "put, 64 clients",
        "range, 64 clients",
        "watch, put to event",
    ] {
        assert!(table.contains(row), "{row} missing:\n{table}");
    }
    let json: serde_json::Value = serde_json::from_str(&run(&["-o", "json"])).unwrap();
    assert_eq!(json.as_array().map(Vec::len), Some(5));
}

/// A watch far behind catches up in bounded responses: 6 MiB of history reaches a client whose
/// messages are limited to gRPC's default 4 MiB, and 1 500 small revisions arrive complete.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn long_history_watch_arrives_in_bounded_responses() {
    let klab = procs::Proc::klab(None);
    let mut c = etcd_client::Client::connect([&klab.endpoint], None)
        .await
        .unwrap();
    let first = c.put("h/big", vec![b'x'; 100 * 1024], None).await.unwrap();
    let first = first.header().unwrap().revision();
    for _ in 1..60 {
        c.put("h/big", vec![b'x'; 100 * 1024], None).await.unwrap();
    }
    for i in 0..1500 {
        c.put("h/small", i.to_string(), None).await.unwrap();
    }
    let opts = etcd_client::WatchOptions::new()
        .with_prefix()
        .with_start_revision(first);
    let mut w = c.watch("h/", Some(opts)).await.unwrap();
    let (mut events, mut responses, mut last) = (0, 0, 0);
    while events < 1560 {
        let resp = w.message().await.unwrap().unwrap();
        for e in resp.events() {
            let rev = e.kv().unwrap().mod_revision();
            assert_eq!(rev, first + events, "events arrive in order, none missing");
            last = rev;
            events += 1;
        }
        responses += 1;
    }
    assert_eq!(last, first + 1559);
    assert!(responses > 3, "catch-up came in {responses} responses");
}
