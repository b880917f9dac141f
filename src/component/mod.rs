//! What kube-scheduler, kube-controller-manager and cloud-controller-manager share: leader
//! election on a Lease, the /healthz and /metrics server, core/v1 Events, klog-style lines;
//! what kube-proxy and the DNS server share: their Service and EndpointSlice caches; and the
//! Prometheus histogram that klab-store and kube-proxy export their latencies with.
//!
//! Mirrors `k8s.io/client-go/tools/leaderelection`, `k8s.io/apiserver`'s secure serving for
//! components, and `client-go/tools/record`. Each piece talks only to the API server.

pub mod events;
pub mod health;
pub mod leader;
pub mod metrics;
pub mod services;

use std::time::Duration;

/// Writes one log line in klog's shape (`I1128 20:30:00.123456 pid file] message`).
pub fn log(level: char, msg: impl std::fmt::Display) {
    let now = time::OffsetDateTime::now_utc();
    eprintln!(
        "{level}{:02}{:02} {:02}:{:02}:{:02}.{:06} {:>7} {msg}",
        u8::from(now.month()),
        now.day(),
        now.hour(),
        now.minute(),
        now.second(),
        now.microsecond(),
        std::process::id(),
    );
}

/// Parses a Go-style duration flag (`40s`, `5m`, `1h30m`, `500ms`).
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let bad = || format!("invalid duration {s:?}: expected a number and a unit, such as 40s or 5m");
    let mut total = Duration::ZERO;
    let mut rest = s.trim();
    if rest == "0" {
        return Ok(total);
    }
    if rest.is_empty() {
        return Err(bad());
    }
    while !rest.is_empty() {
        let num_end = rest
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .ok_or_else(bad)?;
        let n: f64 = rest[..num_end].parse().map_err(|_| bad())?;
        rest = &rest[num_end..];
        let unit_end = rest
            .find(|c: char| c.is_ascii_digit() || c == '.')
            .unwrap_or(rest.len());
        let secs = match &rest[..unit_end] {
            "ms" => n / 1000.0,
            "s" => n,
            "m" => n * 60.0,
            "h" => n * 3600.0,
            _ => return Err(bad()),
        };
        total += Duration::from_secs_f64(secs);
        rest = &rest[unit_end..];
    }
    Ok(total)
}

#[cfg(test)]
mod tests {
    #[test]
    fn go_durations() {
        use std::time::Duration;
        assert_eq!(super::parse_duration("40s"), Ok(Duration::from_secs(40)));
        assert_eq!(super::parse_duration("1m30s"), Ok(Duration::from_secs(90)));
        assert_eq!(
            super::parse_duration("500ms"),
            Ok(Duration::from_millis(500))
        );
        assert!(super::parse_duration("soon").is_err());
    }
}

/// Now, as Kubernetes writes a `Time` (RFC 3339, whole seconds, UTC).
pub fn now_rfc3339() -> String {
    k8s_openapi::jiff::Timestamp::now()
        .strftime("%Y-%m-%dT%H:%M:%SZ")
        .to_string()
}

#[derive(Debug, thiserror::Error)]
pub enum ComponentError {
    #[error("invalid --{flag}: {reason}")]
    Flag { flag: &'static str, reason: String },
    #[error(transparent)]
    Client(#[from] crate::client::Error),
    #[error(transparent)]
    Health(#[from] health::HealthError),
    #[error(transparent)]
    Leader(#[from] leader::LeaderError),
}

/// Whether the API refused a write because its namespace is being deleted: nothing to do or
/// report, the namespace controller is emptying it (upstream's
/// `HasStatusCause(err, NamespaceTerminatingCause)`).
pub fn namespace_terminating(e: &kube::Error) -> bool {
    matches!(e, kube::Error::Api(s) if s.details.as_ref().is_some_and(|d| d
        .causes
        .iter()
        .any(|c| c.reason == crate::api::NAMESPACE_TERMINATING_CAUSE)))
}

/// An error and its sources on one line, as the CLI prints them.
pub fn chain(e: &dyn std::error::Error) -> String {
    let mut out = e.to_string();
    let mut src = e.source();
    while let Some(s) = src {
        out.push_str(": ");
        out.push_str(&s.to_string());
        src = s.source();
    }
    out
}

fn duration_flag(flag: &'static str, v: &str) -> Result<Duration, ComponentError> {
    parse_duration(v).map_err(|reason| ComponentError::Flag { flag, reason })
}

/// The start every component shares: the client from `--kubeconfig` and the health server.
pub async fn start(
    args: &crate::cli::ComponentArgs,
    secure_port: u16,
    name: &str,
    metrics: std::sync::Arc<health::Metrics>,
) -> Result<kube::Client, ComponentError> {
    let client = crate::client::from_kubeconfig(&args.kubeconfig).await?;
    if let Some(addr) = health::serve(&args.bind_address, secure_port, metrics).await? {
        log('I', format!("{name}: serving securely on {addr}"));
    }
    Ok(client)
}

/// With `--leader-elect`, waits to become the leader; the returned future completes with an
/// error when leadership is lost (and never completes without leader election).
pub async fn elect(
    client: &kube::Client,
    args: &crate::cli::ComponentArgs,
    name: &str,
) -> Result<impl std::future::Future<Output = ComponentError> + use<>, ComponentError> {
    let cfg = leader::Config {
        namespace: args.leader_elect_resource_namespace.clone(),
        name: args
            .leader_elect_resource_name
            .clone()
            .unwrap_or_else(|| name.to_owned()),
        identity: leader::identity(),
        lease_duration: duration_flag(
            "leader-elect-lease-duration",
            &args.leader_elect_lease_duration,
        )?,
        renew_deadline: duration_flag(
            "leader-elect-renew-deadline",
            &args.leader_elect_renew_deadline,
        )?,
        retry_period: duration_flag("leader-elect-retry-period", &args.leader_elect_retry_period)?,
    };
    let elector = if args.leader_elect {
        let mut e = leader::Elector::new(client.clone(), cfg);
        e.acquire().await;
        Some(e)
    } else {
        None
    };
    Ok(async move {
        match elector {
            Some(e) => ComponentError::Leader(e.hold().await),
            None => std::future::pending().await,
        }
    })
}
