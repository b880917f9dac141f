//! Liveness, readiness and startup probes: exec (CRI `ExecSync`), tcpSocket and httpGet against the pod
//! IP, with upstream's defaults (period 10 s, timeout 1 s, failure threshold 3, success
//! threshold 1). Mirrors upstream's `pkg/kubelet/prober`, HTTPS included (like upstream's
//! prober it does not verify the certificate: a probe asks "are you alive", not "who are
//! you"); leaves out gRPC probes.

use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::{Container, Probe};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use k8s_openapi::jiff::Timestamp;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::pki::AnyServer;
use crate::runtime::cri::Cri;

/// A probe's result, with why it failed.
pub type Outcome = Result<(), String>;

fn port(c: &Container, p: &IntOrString) -> Option<u16> {
    match p {
        IntOrString::Int(n) => u16::try_from(*n).ok(),
        IntOrString::String(name) => c
            .ports
            .iter()
            .flatten()
            .find(|cp| cp.name.as_deref() == Some(name))
            .and_then(|cp| u16::try_from(cp.container_port).ok()),
    }
}

trait Conn: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send {}
impl<T: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send> Conn for T {}

async fn http_get(host: &str, port: u16, path: &str, https: bool) -> Outcome {
    let scheme = if https { "https" } else { "http" };
    let tcp = TcpStream::connect((host, port))
        .await
        .map_err(|e| format!("Get \"{scheme}://{host}:{port}{path}\": {e}"))?;
    let mut s: Box<dyn Conn> = if https {
        let provider = std::sync::Arc::new(rustls::crypto::ring::default_provider());
        let config = rustls::ClientConfig::builder_with_provider(provider.clone())
            .with_safe_default_protocol_versions()
            .map_err(|e| e.to_string())?
            .dangerous()
            .with_custom_certificate_verifier(std::sync::Arc::new(AnyServer::new(provider)))
            .with_no_client_auth();
        let name =
            rustls::pki_types::ServerName::try_from(host.to_string()).map_err(|e| e.to_string())?;
        let tls = tokio_rustls::TlsConnector::from(std::sync::Arc::new(config))
            .connect(name, tcp)
            .await
            .map_err(|e| format!("Get \"{scheme}://{host}:{port}{path}\": {e}"))?;
        Box::new(tls)
    } else {
        Box::new(tcp)
    };
    let req = format!(
        "GET {path} HTTP/1.0\r\nHost: {host}:{port}\r\nUser-Agent: kube-probe/1.33\r\n\r\n"
    );
    s.write_all(req.as_bytes())
        .await
        .map_err(|e| e.to_string())?;
    let mut head = vec![0u8; 64];
    let n = s.read(&mut head).await.map_err(|e| e.to_string())?;
    let line = String::from_utf8_lossy(&head[..n]).to_string();
    let code: u16 = line
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    if (200..400).contains(&code) {
        Ok(())
    } else {
        Err(format!("HTTP probe failed with statuscode: {code}"))
    }
}

/// Runs `probe` once against container `id` of container spec `c` in a pod at `pod_ip`.
pub async fn run(cri: &mut Cri, c: &Container, id: &str, pod_ip: &str, probe: &Probe) -> Outcome {
    let timeout = Duration::from_secs(probe.timeout_seconds.unwrap_or(1).max(1) as u64);
    let host = |h: &Option<String>| h.clone().unwrap_or_else(|| pod_ip.to_string());
    let work = async {
        if let Some(e) = &probe.exec {
            let cmd: Vec<&str> = e.command.iter().flatten().map(String::as_str).collect();
            let (code, out, err) = cri
                .exec_sync(id, &cmd, timeout)
                .await
                .map_err(|e| e.to_string())?;
            return if code == 0 {
                Ok(())
            } else {
                Err(format!(
                    "exec probe exited with {code}: {}{}",
                    String::from_utf8_lossy(&out),
                    String::from_utf8_lossy(&err)
                ))
            };
        }
        if let Some(t) = &probe.tcp_socket {
            let p = port(c, &t.port).ok_or("tcpSocket: unknown port")?;
            return TcpStream::connect((host(&t.host).as_str(), p))
                .await
                .map(|_| ())
                .map_err(|e| format!("dial tcp {}:{p}: {e}", host(&t.host)));
        }
        if let Some(h) = &probe.http_get {
            let https = h.scheme.as_deref() == Some("HTTPS");
            let p = port(c, &h.port).ok_or("httpGet: unknown port")?;
            let path = h.path.clone().unwrap_or_else(|| "/".into());
            return http_get(&host(&h.host), p, &path, https).await;
        }
        Err("this probe type (gRPC) is not built in klab yet".into())
    };
    match tokio::time::timeout(timeout + Duration::from_secs(1), work).await {
        Ok(r) => r,
        Err(_) => Err(format!("probe timed out after {}s", timeout.as_secs())),
    }
}

/// One probe's history on one container instance.
#[derive(Debug, Clone, Default)]
pub struct Tracker {
    last: Option<Instant>,
    successes: i32,
    failures: i32,
    /// The probe's verdict: passed (readiness: ready) or failed enough (liveness: restart).
    pub ok: bool,
    pub failed: bool,
    pub message: String,
}

impl Tracker {
    /// Whether the probe is due: initialDelaySeconds after the container started, then every
    /// periodSeconds.
    pub fn due(&self, probe: &Probe, started_nanos: i64) -> bool {
        let running = Timestamp::now().as_nanosecond() as i64 - started_nanos;
        let delay = i64::from(probe.initial_delay_seconds.unwrap_or(0)) * 1_000_000_000;
        let period = Duration::from_secs(probe.period_seconds.unwrap_or(10).max(1) as u64);
        running >= delay && self.last.is_none_or(|t| t.elapsed() >= period)
    }

    pub fn record(&mut self, probe: &Probe, outcome: Outcome) {
        self.last = Some(Instant::now());
        match outcome {
            Ok(()) => {
                self.failures = 0;
                self.successes += 1;
                if self.successes >= probe.success_threshold.unwrap_or(1) {
                    self.ok = true;
                    self.failed = false;
                }
            }
            Err(why) => {
                self.successes = 0;
                self.failures += 1;
                self.message = why;
                if self.failures >= probe.failure_threshold.unwrap_or(3) {
                    self.ok = false;
                    self.failed = true;
                }
            }
        }
    }
}
