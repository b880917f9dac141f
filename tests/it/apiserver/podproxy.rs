//! `pods/proxy` and `services/proxy` against a real HTTP server the test runs on this host's
//! own (non-loopback) address, standing behind a Pod whose status and Endpoints the test writes
//! through the API, driven by real kubectl: `get --raw`, and `kubectl proxy` with curl.
//!
//! Mirrors upstream's `test/e2e/network/proxy.go` in spirit: path and query arrive intact,
//! the errors are upstream's Status, RBAC asks for the subresource.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{IpAddr, TcpListener, TcpStream, UdpSocket};
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use rustls::pki_types::{PrivateKeyDer, PrivatePkcs8KeyDer};

use super::harness::{Backend, Cluster, Proc, free_port, ok, require, text};
use crate::stream::transcript;

/// This host's address on its default route: what upstream lets the API server dial as a pod
/// (not loopback). Connecting a UDP socket only chooses a route; nothing is sent.
fn host_ip() -> IpAddr {
    let s = UdpSocket::bind("0.0.0.0:0").unwrap();
    s.connect("198.51.100.1:9")
        .expect("a route off this host, to find an address that is not loopback");
    let ip = s.local_addr().unwrap().ip();
    assert!(!ip.is_loopback() && !ip.is_unspecified(), "{ip}");
    ip
}

/// One connection of the test's server: the request line (method and target) and body echoed
/// back as the response body, or, for `Connection: Upgrade`, a `101` and then every byte
/// echoed until the client closes.
fn answer(conn: impl Read + Write) {
    let mut r = BufReader::new(conn);
    let mut line = String::new();
    if r.read_line(&mut line).is_err() {
        return;
    }
    let (mut length, mut upgrade) = (0usize, false);
    loop {
        let mut h = String::new();
        if r.read_line(&mut h).unwrap_or(0) == 0 || h.trim().is_empty() {
            break;
        }
        let lower = h.to_ascii_lowercase();
        if let Some(v) = lower.strip_prefix("content-length:") {
            length = v.trim().parse().unwrap_or(0);
        }
        if lower.starts_with("upgrade:") {
            upgrade = true;
        }
    }
    if upgrade {
        let _ = r.get_mut().write_all(
            b"HTTP/1.1 101 Switching Protocols\r\nConnection: Upgrade\r\nUpgrade: echo\r\n\r\n",
        );
        let _ = r.get_mut().flush();
        let mut buf = [0u8; 1024];
        while let Ok(n) = r.read(&mut buf) {
            if n == 0 || r.get_mut().write_all(&buf[..n]).is_err() {
                break;
            }
            let _ = r.get_mut().flush();
        }
        return;
    }
    let mut body = vec![0u8; length];
    let _ = r.read_exact(&mut body);
    let mut parts = line.split_whitespace();
    let reply = format!(
        "{} {}\n{}",
        parts.next().unwrap_or_default(),
        parts.next().unwrap_or_default(),
        String::from_utf8_lossy(&body)
    );
    let conn = r.get_mut();
    let _ = write!(
        conn,
        "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{reply}",
        reply.len()
    );
    let _ = conn.flush();
}

/// The test's backend: a tiny HTTP server on `ip`, answering until the test process ends;
/// with `tls`, behind a self-signed certificate (as a pod serving https would be).
fn serve(ip: IpAddr, tls: bool) -> u16 {
    let l = TcpListener::bind((ip, 0)).unwrap();
    let port = l.local_addr().unwrap().port();
    let config = tls.then(|| {
        let ck = rcgen::generate_simple_self_signed(vec!["web".into()]).unwrap();
        let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(ck.signing_key.serialize_der()));
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let config = rustls::ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_no_client_auth()
            .with_single_cert(vec![ck.cert.der().clone()], key)
            .unwrap();
        Arc::new(config)
    });
    std::thread::spawn(move || {
        for c in l.incoming().flatten() {
            let config = config.clone();
            std::thread::spawn(move || match config {
                Some(config) => {
                    let Ok(server) = rustls::ServerConnection::new(config) else {
                        return;
                    };
                    answer(rustls::StreamOwned::new(server, c));
                }
                None => answer(c),
            });
        }
    });
    port
}

fn apply(c: &Cluster, name: &str, yaml: &str) {
    let f = c.dir.path().join(format!("{name}.yaml"));
    std::fs::write(&f, yaml).unwrap();
    ok(c.kubectl_with(Path::new("kubectl"), &["apply", "-f", f.to_str().unwrap()]));
}

/// curl without credentials (kubectl proxy adds them): status code, Location header, body.
fn curl(url: &str, extra: &[&str]) -> (u16, String) {
    let out = Command::new("curl")
        .args(["-sS", "-o", "-", "-w", "\n%{http_code} %{redirect_url}"])
        .args(extra)
        .arg(url)
        .output()
        .unwrap();
    let s = String::from_utf8_lossy(&out.stdout).into_owned();
    let (body, tail) = s.rsplit_once('\n').unwrap_or_default();
    let (code, _) = tail.split_once(' ').unwrap_or((tail, ""));
    (code.parse().unwrap_or(0), format!("{body}|{tail}"))
}

#[test]
fn pods_and_services_proxy() {
    if require("kubectl").is_none() || require("curl").is_none() {
        return;
    }
    let Some(c) = Cluster::start(Backend::KlabStore, &[]) else {
        return;
    };
    let k = Path::new("kubectl");
    let raw = |args: &[&str]| c.kubectl_with(k, &[&["get", "--raw"][..], args].concat());
    let ip = host_ip();
    let port = serve(ip, false);
    let tls_port = serve(ip, true);

    // The pod declares the server's port and carries the host's address as its IP, as a
    // kubelet would write it.
    apply(
        &c,
        "web",
        &format!(
            "apiVersion: v1\nkind: Pod\nmetadata: {{name: web, labels: {{app: web}}}}\nspec:\n  containers:\n  - {{name: c, image: busybox, ports: [{{containerPort: {port}}}]}}\n"
        ),
    );
    ok(c.kubectl_with(
        k,
        &[
            "patch",
            "pod",
            "web",
            "--subresource=status",
            "--type=merge",
            "-p",
            &format!(
                r#"{{"status":{{"phase":"Running","podIP":"{ip}","podIPs":[{{"ip":"{ip}"}}]}}}}"#
            ),
        ],
    ));
    apply(
        &c,
        "svc",
        &format!(
            "apiVersion: v1\nkind: Service\nmetadata: {{name: web}}\nspec:\n  selector: {{app: web}}\n  ports: [{{name: http, port: 80, targetPort: {port}}}, {{name: https, port: 443, targetPort: {tls_port}}}]\n---\napiVersion: v1\nkind: Endpoints\nmetadata: {{name: web}}\nsubsets:\n- addresses: [{{ip: \"{ip}\", targetRef: {{kind: Pod, name: web, namespace: default}}}}]\n  ports: [{{name: http, port: {port}}}, {{name: https, port: {tls_port}}}]\n"
        ),
    );

    // kubectl get --raw: path and query arrive as kubectl sends them (client-go re-encodes a
    // query, so encoded characters are checked through kubectl proxy below), through both subresources and every
    // form of the name.
    let pods = "/api/v1/namespaces/default/pods";
    let svcs = "/api/v1/namespaces/default/services";
    // What the book shows: a transcript of some of the calls below.
    let mut t = String::new();
    for (i, (url, want)) in [
        (
            format!("{pods}/web:{port}/proxy/healthz?verbose=1&x=y"),
            "GET /healthz?verbose=1&x=y\n",
        ),
        (format!("{pods}/web/proxy/"), "GET /\n"),
        (format!("{pods}/http:web:{port}/proxy/a/b/"), "GET /a/b/\n"),
        (
            format!("{svcs}/web:80/proxy/metrics?name=x&name=y"),
            "GET /metrics?name=x&name=y\n",
        ),
        (format!("{svcs}/web:http/proxy/p"), "GET /p\n"),
        (format!("{svcs}/http:web:80/proxy/q?r=s"), "GET /q?r=s\n"),
        // https: the API server speaks TLS to the pod, not checking its certificate.
        (
            format!("{pods}/https:web:{tls_port}/proxy/secure?a=b"),
            "GET /secure?a=b\n",
        ),
        (format!("{svcs}/https:web:443/proxy/s"), "GET /s\n"),
    ]
    .into_iter()
    .enumerate()
    {
        let out = raw(&[&url]);
        if i == 0 || i == 3 {
            transcript(&mut t, &format!("kubectl get --raw '{url}'"), &out);
        }
        assert_eq!(ok(out), want, "{url}");
    }

    // kubectl proxy, and curl on its plain-HTTP port: methods and bodies pass, the bare
    // `…/proxy` redirects to `…/proxy/` as upstream, and an upgrade is joined.
    // Every kubectl at hand (Debian's 1.20 too, from KLAB_KUBECTLS) reaches both.
    for kc in super::kubectls() {
        for sub in [format!("pods/web:{port}"), "services/web:80".to_owned()] {
            let url = format!("/api/v1/namespaces/default/{sub}/proxy/v?k=1");
            let out = c.kubectl_with(&kc, &["get", "--raw", &url]);
            assert_eq!(ok(out), "GET /v?k=1\n", "{} {url}", kc.display());
        }
    }

    let pport = free_port();
    let child = Command::new("kubectl")
        .env("KUBECONFIG", &c.kubeconfig)
        .args(["proxy", &format!("--port={pport}")])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let _proxy = Proc(child);
    let deadline = Instant::now() + Duration::from_secs(30);
    while TcpStream::connect(("127.0.0.1", pport)).is_err() {
        assert!(Instant::now() < deadline, "kubectl proxy did not listen");
        std::thread::sleep(Duration::from_millis(50));
    }
    let base = format!("http://127.0.0.1:{pport}");
    let url = format!("{base}{svcs}/web:80/proxy/x%2Fy/?z=a%20b&z=%26");
    assert_eq!(
        curl(&url, &[]),
        (200, "GET /x%2Fy/?z=a%20b&z=%26\n|200 ".into())
    );
    t.push_str(&format!(
        "$ kubectl proxy --port={pport} &\n$ curl -s '{url}'\nGET /x%2Fy/?z=a%20b&z=%26\n"
    ));
    assert_eq!(
        curl(
            &format!("{base}{pods}/web:{port}/proxy/submit?k=v"),
            &["-X", "POST", "--data-binary", "hello"]
        ),
        (200, "POST /submit?k=v\nhello|200 ".into())
    );
    assert_eq!(
        curl(
            &format!("{base}{svcs}/web:80/proxy/gone"),
            &["-X", "DELETE"]
        )
        .1,
        "DELETE /gone\n|200 "
    );
    let (code, out) = curl(&format!("{base}{svcs}/web:80/proxy?a=1"), &[]);
    assert_eq!(code, 301, "{out}");
    assert!(out.ends_with(&format!("{svcs}/web:80/proxy/?a=1")), "{out}");
    let mut s = TcpStream::connect(("127.0.0.1", pport)).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    write!(
        s,
        "GET {pods}/web/proxy/tunnel HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: Upgrade\r\nUpgrade: echo\r\n\r\n"
    )
    .unwrap();
    let mut head = Vec::new();
    let mut b = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        assert_eq!(
            s.read(&mut b).unwrap(),
            1,
            "{}",
            String::from_utf8_lossy(&head)
        );
        head.push(b[0]);
    }
    assert!(
        head.starts_with(b"HTTP/1.1 101"),
        "{}",
        String::from_utf8_lossy(&head)
    );
    s.write_all(b"ping through the API server").unwrap();
    let mut echoed = [0u8; 27];
    s.read_exact(&mut echoed).unwrap();
    assert_eq!(&echoed, b"ping through the API server");
    drop(s);

    // Errors, as upstream's Status.
    let mut err = |url: &str| {
        let out = raw(&[url]);
        assert!(!out.status.success(), "{url}: {}", text(&out));
        transcript(&mut t, &format!("kubectl get --raw '{url}'"), &out);
        String::from_utf8_lossy(&out.stderr).into_owned()
    };
    apply(
        &c,
        "empty",
        "apiVersion: v1\nkind: Service\nmetadata: {name: empty}\nspec:\n  ports: [{port: 80}]\n---\napiVersion: v1\nkind: Endpoints\nmetadata: {name: empty}\n",
    );
    let e = err(&format!("{svcs}/empty:80/proxy/"));
    assert!(
        e.contains(
            "Error from server (ServiceUnavailable): no endpoints available for service \"empty\""
        ),
        "{e}"
    );
    let e = err(&format!("{svcs}/web:81/proxy/"));
    assert!(
        e.contains("(ServiceUnavailable): no service port 81 found for service \"web\""),
        "{e}"
    );
    let e = err(&format!("{svcs}/web:metrics/proxy/"));
    assert!(
        e.contains("no endpoints available for service \"web:metrics\""),
        "{e}"
    );
    let closed = TcpListener::bind((ip, 0)).unwrap();
    let closed_port = closed.local_addr().unwrap().port();
    drop(closed);
    let e = err(&format!("{pods}/web:{closed_port}/proxy/"));
    assert!(
        e.contains(&format!(
            "(ServiceUnavailable): error trying to reach service: dial tcp {ip}:{closed_port}: connect: connection refused"
        )),
        "{e}"
    );
    ok(c.kubectl_with(k, &["run", "noip", "--image=busybox", "--port=80"]));
    let e = err(&format!("{pods}/noip/proxy/"));
    assert!(e.contains("(BadRequest): address not allowed"), "{e}");
    let e = err(&format!("{pods}/ftp:web:21/proxy/"));
    assert!(e.contains("invalid pod request \"ftp:web:21\""), "{e}");

    // Discovery lists both subresources.
    let v1 = ok(raw(&["/api/v1"]));
    assert!(
        v1.contains(
            r#""name":"pods/proxy","singularName":"","namespaced":true,"kind":"PodProxyOptions""#
        ),
        "{v1}"
    );
    assert!(v1.contains(r#""name":"services/proxy","singularName":"","namespaced":true,"kind":"ServiceProxyOptions""#), "{v1}");

    // RBAC asks for the subresource: alice may not, until the bootstrap `edit` role is bound.
    let alice = |url: &str| c.kubectl_with(k, &["--context=alice", "get", "--raw", url]);
    let url = format!("{pods}/web:{port}/proxy/hi");
    let out = alice(&url);
    transcript(
        &mut t,
        &format!("kubectl --context=alice get --raw '{url}'"),
        &out,
    );
    let denied = text(&out);
    assert!(
        denied.contains(
            "User \"alice\" cannot get resource \"pods/proxy\" in API group \"\" in the namespace \"default\""
        ),
        "{denied}"
    );
    let denied = text(&alice(&format!("{svcs}/web:80/proxy/hi")));
    assert!(
        denied.contains("cannot get resource \"services/proxy\""),
        "{denied}"
    );
    ok(c.kubectl_with(
        k,
        &[
            "create",
            "rolebinding",
            "alice-edit",
            "--clusterrole=edit",
            "--user=alice",
        ],
    ));
    assert_eq!(ok(alice(&url)), "GET /hi\n");
    assert_eq!(ok(alice(&format!("{svcs}/web:80/proxy/hi"))), "GET /hi\n");

    // The addresses of this run replaced by a typical pod's, so the book's copy is stable.
    let t = t
        .replace(&format!("127.0.0.1:{pport}"), "127.0.0.1:8001")
        .replace(&format!("--port={pport}"), "--port=8001")
        .replace(&format!(":{closed_port}"), ":8081")
        .replace(&format!(":{port}"), ":8080")
        .replace(&ip.to_string(), "10.244.0.7");
    crate::snap!("apiserver_pod_proxy", t);
}
