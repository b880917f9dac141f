//! `klab probe`: what `curl --cacert ca.pem --cert cert.pem --key key.pem https://host:6443`
//! does, explained — the TLS handshake and the server's chain, who the API server thinks you
//! are (SelfSubjectReview), its version, health and discovery — and, when something fails, in
//! plain words why. `-v 6` and `-v 8` log each request the way `kubectl --v=6/8` does.
//!
//! Works on any API server, and on etcd's `/version` and `/health` over TLS.

mod http;
mod tls;

use std::io::Write;
use std::path::PathBuf;
use std::time::Duration;

use serde::Serialize;
use time::OffsetDateTime;

use crate::api::duration::short_human;
use crate::cli::ProbeArgs;
use crate::kubeconfig::{self, Credentials, Source};
use crate::pki::{self, Certificate};
use crate::tools::output::write_structured;
use http::{Exchange, Http};
use tls::ClientSide;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(transparent)]
    Kubeconfig(#[from] kubeconfig::Error),
    #[error(transparent)]
    Pki(#[from] pki::Error),
    #[error("reading {}", path.display())]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{0}")]
    Usage(String),
    #[error("{0}")]
    Credentials(String),
    #[error("resolving {host}")]
    Resolve {
        host: String,
        #[source]
        source: std::io::Error,
    },
    #[error("connecting to {addr}")]
    Connect {
        addr: String,
        #[source]
        source: std::io::Error,
    },
    #[error("no answer from {addr} in time")]
    Timeout { addr: String },
    #[error("the TLS handshake failed")]
    Handshake(#[source] std::io::Error),
    #[error("HTTP over the TLS connection failed")]
    Http(#[source] hyper::Error),
    #[error("the server closed the connection: {0}")]
    Closed(String),
    #[error("building a request: {0}")]
    Request(String),
    #[error("the probe found a problem: {0}")]
    Failed(String),
    #[error("writing the output")]
    Output(#[from] std::io::Error),
}

/// Everything the probe learned, for the human view and for `-o json|yaml`.
#[derive(Debug, Default, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Report {
    pub server: String,
    pub source: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tls: Option<TlsFacts>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub client_certificate: Option<Certificate>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub identity: Option<Identity>,
    /// `kube-apiserver`, `etcd` or `unknown`, from /version.
    pub kind: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub version: Option<String>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub health: Vec<(String, String)>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub discovery: Option<Discovery>,
    pub requests: Vec<Exchange>,
    /// Plain-words findings; empty when all is well.
    pub problems: Vec<String>,
}

#[derive(Debug, Default, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct TlsFacts {
    pub host: String,
    pub server_name: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub protocol: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cipher: Option<String>,
    pub chain: Vec<Certificate>,
    pub name_in_sans: Option<bool>,
    pub verified: bool,
    pub insecure_skip_verify: bool,
}

#[derive(Debug, Default, Serialize)]
pub struct Identity {
    pub user: String,
    pub groups: Vec<String>,
}

#[derive(Debug, Default, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Discovery {
    pub core_resources: usize,
    pub groups: Vec<String>,
}

/// What to probe, with what.
pub struct Target {
    pub url: String,
    pub source: String,
    pub client: ClientSide,
    pub token: Option<String>,
    pub client_cert: Option<Certificate>,
}

fn read(path: &PathBuf) -> Result<Vec<u8>, Error> {
    std::fs::read(path).map_err(|source| Error::Read {
        path: path.clone(),
        source,
    })
}

/// Decides the URL and credentials from explicit files or a kubeconfig, as kubectl would.
pub fn target(args: &ProbeArgs, source: &Source) -> Result<Target, Error> {
    let explicit = args.cacert.is_some() || args.cert.is_some() || args.key.is_some();
    let (mut url, origin, mut ca, mut insecure, mut identity, mut token, mut tls_name) = (
        args.server.clone(),
        String::new(),
        None,
        args.insecure_skip_tls_verify,
        None,
        None,
        None,
    );
    let origin = if explicit {
        if url.is_none() {
            return Err(Error::Usage(
                "--cacert/--cert/--key need --server URL".into(),
            ));
        }
        ca = args.cacert.as_ref().map(read).transpose()?;
        identity = match (&args.cert, &args.key) {
            (Some(c), Some(k)) => Some((read(c)?, read(k)?)),
            (None, None) => None,
            _ => return Err(Error::Usage("--cert and --key go together".into())),
        };
        format!("{origin}files given on the command line")
    } else {
        let r = kubeconfig::load(source)?.resolve(args.context.as_deref())?;
        url = url.or(r.cluster.value.server.clone());
        insecure |= r.cluster.value.insecure_skip_tls_verify == Some(true);
        tls_name = r.cluster.value.tls_server_name.clone();
        if let Some(m) = r.ca() {
            ca = Some(m.bytes()?);
        }
        match r.credentials() {
            Credentials::ClientCert { cert, key } => identity = Some((cert.bytes()?, key.bytes()?)),
            Credentials::Token => token = r.user.value.token.clone(),
            Credentials::TokenFile(f) => {
                let t = read(&PathBuf::from(&f))?;
                token = Some(String::from_utf8_lossy(&t).trim().to_string());
            }
            Credentials::Exec { command } => {
                return Err(Error::Credentials(format!(
                    "user \"{}\" gets credentials from the exec plugin \"{command}\", which klab probe does not run; probe with --cert/--key or a token",
                    r.user_name
                )));
            }
            _ => {}
        }
        format!(
            "context \"{}\" of {}",
            r.context_name,
            r.cluster.file.display()
        )
    };
    let url = url.ok_or_else(|| {
        Error::Usage("no server: the kubeconfig names none (pass --server URL)".into())
    })?;
    let host = url_parts(&url)?.0;
    let client_cert = match &identity {
        Some((cert, _)) => pki::parse_certs("the client certificate", cert)?
            .into_iter()
            .next(),
        None => None,
    };
    let server_name = args.tls_server_name.clone().or(tls_name).unwrap_or(host);
    Ok(Target {
        url,
        source: origin,
        client: ClientSide {
            ca_pem: ca,
            insecure,
            identity,
            server_name,
        },
        token,
        client_cert,
    })
}

/// `https://host:port[/…]` to (host, port).
fn url_parts(url: &str) -> Result<(String, u16), Error> {
    let rest = match url.split_once("://") {
        Some(("https", rest)) => rest,
        Some((scheme, _)) => {
            return Err(Error::Usage(format!(
                "{url}: klab probe speaks HTTPS, not {scheme}; for the legacy insecure port use curl http://127.0.0.1:8080"
            )));
        }
        None => {
            return Err(Error::Usage(format!(
                "{url} is not a URL (https://host:port)"
            )));
        }
    };
    let authority = rest.split('/').next().unwrap_or("");
    let (host, port) = match authority.rsplit_once(':') {
        Some((h, p)) if !h.ends_with(']') || authority.starts_with('[') => match p.parse::<u16>() {
            Ok(port) => (h, port),
            Err(_) => (authority, 443),
        },
        _ => (authority, 443),
    };
    Ok((
        host.trim_start_matches('[')
            .trim_end_matches(']')
            .to_string(),
        port,
    ))
}

fn tls_alert(text: &str) -> Option<&'static str> {
    [
        ("CertificateExpired", "CertificateExpired"),
        ("BadCertificate", "BadCertificate"),
        ("UnknownCA", "UnknownCA"),
        ("CertificateRequired", "CertificateRequired"),
        ("CertificateUnknown", "CertificateUnknown"),
    ]
    .into_iter()
    .find(|(k, _)| text.contains(k))
    .map(|(_, v)| v)
}

fn error_chain(e: &(dyn std::error::Error + 'static)) -> String {
    let mut s = e.to_string();
    let mut cur = e.source();
    while let Some(c) = cur {
        s.push_str(": ");
        s.push_str(&c.to_string());
        cur = c.source();
    }
    s
}

/// Why the server refused our client certificate, from what we can see of it locally.
fn client_cert_story(t: &Target, now: OffsetDateTime, alert: &str) -> String {
    let mut s = format!("the server refused the TLS client certificate (alert {alert})");
    match &t.client_cert {
        Some(c) if now > c.not_after => s.push_str(&format!(
            ": it expired on {} — get a new one (kubeadm certs renew, or a fresh kubeconfig)",
            c.not_after.date()
        )),
        Some(c) => s.push_str(&format!(
            ": it was issued by {}; the server trusts only client certificates from its own CA (--trusted-ca-file or --client-ca-file)",
            c.issuer
        )),
        None => s.push_str(": the server requires one, and none was given (add --cert and --key)"),
    }
    s
}

fn verify_story(e: &rustls::Error, facts: &TlsFacts, ca: Option<&Certificate>) -> String {
    use rustls::CertificateError as C;
    let leaf = facts.chain.first();
    let issuer = leaf.map(|c| c.issuer.clone()).unwrap_or_default();
    match e {
        rustls::Error::InvalidCertificate(C::UnknownIssuer | C::BadSignature) => format!(
            "the server's certificate was issued by {issuer}, which the CA you trust ({}) did not sign: the kubeconfig's certificate-authority is another cluster's, or the server got a new CA",
            ca.map(|c| c.subject.as_str()).unwrap_or("none")
        ),
        rustls::Error::InvalidCertificate(C::NotValidForName | C::NotValidForNameContext { .. }) => format!(
            "the server's certificate is not valid for \"{}\": it names {}. Connect with one of those names, or add this one to the serving certificate (kubeadm: --apiserver-cert-extra-sans)",
            facts.server_name,
            leaf.map(|c| c.sans.join(", ")).unwrap_or_default()
        ),
        rustls::Error::InvalidCertificate(C::Expired | C::ExpiredContext { .. }) => format!(
            "the server's certificate expired on {}: renew it (kubeadm certs renew apiserver)",
            leaf.map(|c| c.not_after.date().to_string()).unwrap_or_default()
        ),
        rustls::Error::InvalidCertificate(C::NotValidYet | C::NotValidYetContext { .. }) => {
            "the server's certificate is not valid yet: check the clocks of this machine and the server".into()
        }
        other => format!("the server's certificate did not verify: {other}"),
    }
}

/// Runs the probe: never fails for what it finds (that goes into `problems`), only for inputs.
pub async fn probe(
    t: &Target,
    verbosity: u8,
    now: OffsetDateTime,
    log: &mut dyn Write,
) -> Result<Report, Error> {
    let timeout = Duration::from_secs(10);
    let (host, port) = url_parts(&t.url)?;
    let mut report = Report {
        server: t.url.clone(),
        source: t.source.clone(),
        client_certificate: t.client_cert.clone(),
        kind: "unknown".into(),
        ..Report::default()
    };
    if verbosity >= 6 {
        writeln!(
            log,
            "probe: connecting to {host}:{port}, checking the certificate for \"{}\"",
            t.client.server_name
        )?;
    }
    let (seen, connected) = tls::connect(&host, port, &t.client, timeout).await;
    let chain: Vec<Certificate> = seen
        .chain
        .iter()
        .enumerate()
        .filter_map(|(i, der)| Certificate::from_der(der.clone(), "server", i + 1).ok())
        .collect();
    let name_in_sans = chain.first().map(|leaf| {
        leaf.sans.iter().any(|s| {
            s.strip_prefix("DNS:").or_else(|| s.strip_prefix("IP:"))
                == Some(t.client.server_name.as_str())
        })
    });
    let mut facts = TlsFacts {
        host: format!("{host}:{port}"),
        server_name: t.client.server_name.clone(),
        chain,
        name_in_sans,
        insecure_skip_verify: t.client.insecure,
        ..TlsFacts::default()
    };
    let ca = t
        .client
        .ca_pem
        .as_ref()
        .and_then(|p| pki::parse_certs("ca", p).ok())
        .and_then(|c| c.into_iter().next());
    let conn = match connected {
        Ok(c) => c,
        Err(e) => {
            let problem = match (&e, &seen.verify_error) {
                (_, Some(v)) => verify_story(v, &facts, ca.as_ref()),
                (Error::Connect { addr, source }, _)
                    if source.kind() == std::io::ErrorKind::ConnectionRefused =>
                {
                    format!(
                        "nothing is listening on {addr}: is kube-apiserver running? `klab ps` shows the control plane's processes (in a kind node: docker exec NODE ps auxww | klab ps --from -)"
                    )
                }
                (Error::Handshake(io), _) if tls_alert(&error_chain(io)).is_some() => {
                    client_cert_story(t, now, tls_alert(&error_chain(io)).unwrap_or_default())
                }
                (other, _) => error_chain(other),
            };
            report.tls = Some(facts);
            report.problems.push(problem);
            return Ok(report);
        }
    };
    facts.verified = !t.client.insecure;
    facts.protocol = Some(conn.protocol.clone());
    facts.cipher = Some(conn.cipher.clone());
    if verbosity >= 6 {
        writeln!(
            log,
            "probe: TCP connected in {} ms, TLS ({}) in {} ms",
            conn.connect.as_millis(),
            conn.protocol,
            conn.handshake.as_millis()
        )?;
    }
    if t.client.insecure {
        report.problems.push(
            "insecure-skip-tls-verify is set: nothing proves this server is the one you meant"
                .into(),
        );
    }
    report.tls = Some(facts);
    let authority = if port == 443 {
        host.clone()
    } else {
        format!("{host}:{port}")
    };
    let base = format!("https://{authority}");
    let mut http = Http::new(conn, &base, &authority).await?;

    let call = async |http: &mut Http,
                      method: &str,
                      path: &str,
                      body: Option<serde_json::Value>,
                      report: &mut Report,
                      log: &mut dyn Write|
           -> Result<Option<Exchange>, Error> {
        match http.send(method, path, body, timeout).await {
            Ok(x) => {
                log_exchange(&x, verbosity, log)?;
                report.requests.push(x.clone());
                Ok(Some(x))
            }
            Err(e) => {
                let chain = error_chain(&e);
                report.problems.push(match tls_alert(&chain) {
                    Some(alert) => client_cert_story(t, now, alert),
                    None => format!("{method} {path}: {chain}"),
                });
                Ok(None)
            }
        }
    };
    let Some(version) = call(&mut http, "GET", "/version", None, &mut report, log).await? else {
        return Ok(report);
    };
    let v = version.json().unwrap_or_default();
    if let Some(etcd) = v.get("etcdserver").and_then(|s| s.as_str()) {
        report.kind = "etcd".into();
        report.version = Some(format!(
            "etcd {etcd} (cluster {})",
            v["etcdcluster"].as_str().unwrap_or("?")
        ));
        if let Some(h) = call(&mut http, "GET", "/health", None, &mut report, log).await? {
            report
                .health
                .push(("/health".into(), h.body_text().trim().to_string()));
        }
        return Ok(report);
    }
    match version.status {
        200 => {
            report.kind = "kube-apiserver".into();
            report.version = v
                .get("gitVersion")
                .and_then(|g| g.as_str())
                .map(|g| format!("{g} ({})", v["platform"].as_str().unwrap_or("?")));
        }
        401 => report.problems.push(unauthorized(t)),
        code => report.problems.push(format!(
            "/version answered {code} {}: {}",
            version.reason,
            version.body_text()
        )),
    }
    for path in ["/livez", "/readyz?verbose"] {
        if let Some(x) = call(&mut http, "GET", path, None, &mut report, log).await? {
            report
                .health
                .push((path.into(), x.body_text().trim().to_string()));
        }
    }
    let review = serde_json::json!({
        "apiVersion": "authentication.k8s.io/v1", "kind": "SelfSubjectReview", "metadata": {}
    });
    if let Some(x) = call(
        &mut http,
        "POST",
        "/apis/authentication.k8s.io/v1/selfsubjectreviews",
        Some(review),
        &mut report,
        log,
    )
    .await?
    {
        match x.status {
            200 | 201 => {
                let info = x.json().unwrap_or_default()["status"]["userInfo"].clone();
                report.identity = Some(Identity {
                    user: info["username"].as_str().unwrap_or("").into(),
                    groups: info["groups"]
                        .as_array()
                        .into_iter()
                        .flatten()
                        .filter_map(|g| g.as_str().map(String::from))
                        .collect(),
                });
            }
            401 => {
                if !report
                    .problems
                    .iter()
                    .any(|p| p.contains("does not accept"))
                {
                    report.problems.push(unauthorized(t));
                }
            }
            403 => report.problems.push(format!(
                "authenticated, but RBAC forbids even a SelfSubjectReview: {}",
                x.json()
                    .and_then(|j| j["message"].as_str().map(String::from))
                    .unwrap_or_default()
            )),
            code => report
                .problems
                .push(format!("SelfSubjectReview answered {code} {}", x.reason)),
        }
    }
    let api = call(&mut http, "GET", "/api/v1", None, &mut report, log).await?;
    let apis = call(&mut http, "GET", "/apis", None, &mut report, log).await?;
    if let (Some(api), Some(apis)) = (api, apis)
        && api.status == 200
        && apis.status == 200
    {
        let core = api.json().unwrap_or_default()["resources"]
            .as_array()
            .map(|r| {
                r.iter()
                    .filter(|r| !r["name"].as_str().unwrap_or("/").contains('/'))
                    .count()
            })
            .unwrap_or(0);
        let groups = apis.json().unwrap_or_default()["groups"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|g| {
                g["preferredVersion"]["groupVersion"]
                    .as_str()
                    .map(String::from)
            })
            .collect();
        report.discovery = Some(Discovery {
            core_resources: core,
            groups,
        });
    }
    Ok(report)
}

fn unauthorized(t: &Target) -> String {
    match (&t.client_cert, &t.token) {
        (Some(c), _) => format!(
            "401 Unauthorized: the API server does not accept this client certificate ({}, issued by {}): it is not signed by the CA in the server's --client-ca-file",
            c.subject, c.issuer
        ),
        (None, Some(_)) => "401 Unauthorized: the API server does not know this bearer token".into(),
        (None, None) => "401 Unauthorized: no credentials were sent, and the API server refuses anonymous requests (--anonymous-auth=false)".into(),
    }
}

/// kubectl's `--v=6` (one line per request) and `--v=8` (headers and bodies too).
fn log_exchange(x: &Exchange, verbosity: u8, log: &mut dyn Write) -> std::io::Result<()> {
    if verbosity >= 8 {
        writeln!(log, "round_trippers: {} {}", x.method, x.url)?;
        writeln!(log, "round_trippers: Request Headers:")?;
        for (k, v) in &x.request_headers {
            writeln!(log, "round_trippers:     {k}: {v}")?;
        }
    }
    if verbosity >= 6 {
        writeln!(
            log,
            "round_trippers: {} {} {} {} in {} milliseconds",
            x.method, x.url, x.status, x.reason, x.elapsed_ms
        )?;
    }
    if verbosity >= 8 {
        writeln!(log, "round_trippers: Response Headers:")?;
        for (k, v) in &x.response_headers {
            writeln!(log, "round_trippers:     {k}: {v}")?;
        }
        let body = x.body_text();
        let shown: String = body.chars().take(1024).collect();
        let more = if body.chars().count() > 1024 {
            format!(" [truncated {} chars]", body.chars().count() - 1024)
        } else {
            String::new()
        };
        writeln!(log, "request: Response Body: {}{more}", shown.trim_end())?;
    }
    Ok(())
}

fn cert_line(c: &Certificate, now: OffsetDateTime) -> String {
    let left = c.seconds_left(now);
    let when = if left < 0 {
        format!("EXPIRED {} ago", short_human(-left))
    } else {
        format!("{} left", short_human(left))
    };
    format!(
        "{}, issued by {}, until {} ({when})",
        c.subject,
        c.issuer,
        c.not_after.date()
    )
}

/// The human view of a report.
pub fn render(r: &Report, now: OffsetDateTime, out: &mut dyn Write) -> std::io::Result<()> {
    let row = |out: &mut dyn Write, k: &str, v: &str| writeln!(out, "  {k:<15} {v}");
    writeln!(out, "Probing {} ({})", r.server, r.source)?;
    if let Some(t) = &r.tls {
        writeln!(out, "\nTLS")?;
        row(out, "address", &t.host)?;
        if let (Some(p), Some(c)) = (&t.protocol, &t.cipher) {
            row(out, "protocol", &format!("{p}, {c}"))?;
        }
        for (i, c) in t.chain.iter().enumerate() {
            row(
                out,
                if i == 0 { "server cert" } else { "chain" },
                &cert_line(c, now),
            )?;
            if i == 0 && !c.sans.is_empty() {
                row(out, "names (SANs)", &c.sans.join(", "))?;
            }
        }
        match t.name_in_sans {
            Some(true) => row(
                out,
                "host name",
                &format!("\"{}\" is one of the certificate's names", t.server_name),
            )?,
            Some(false) => row(
                out,
                "host name",
                &format!(
                    "\"{}\" is NOT one of the certificate's names",
                    t.server_name
                ),
            )?,
            None => {}
        }
        let verdict = if t.insecure_skip_verify {
            "NOT CHECKED (insecure-skip-tls-verify)"
        } else if t.verified {
            "yes: the chain ends at the CA you trust"
        } else {
            "no"
        };
        row(out, "verified", verdict)?;
    }
    if let Some(c) = &r.client_certificate {
        row(out, "client cert", &cert_line(c, now))?;
    }
    if let Some(id) = &r.identity {
        writeln!(
            out,
            "\nWho the API server thinks you are (SelfSubjectReview)"
        )?;
        row(out, "user", &id.user)?;
        row(out, "groups", &id.groups.join(", "))?;
    }
    if r.version.is_some() || !r.health.is_empty() {
        writeln!(out, "\nThe server ({})", r.kind)?;
        if let Some(v) = &r.version {
            row(out, "version", v)?;
        }
        for (path, body) in &r.health {
            let mut lines = body.lines();
            row(out, path, lines.next().unwrap_or(""))?;
            for l in lines {
                row(out, "", l)?;
            }
        }
        if let Some(d) = &r.discovery {
            row(
                out,
                "discovery",
                &format!(
                    "core/v1: {} resources; {} groups: {}",
                    d.core_resources,
                    d.groups.len(),
                    d.groups.join(", ")
                ),
            )?;
        }
    }
    if !r.requests.is_empty() {
        writeln!(
            out,
            "\nRequests (-v 6 logs each one, -v 8 with headers and bodies)"
        )?;
        for x in &r.requests {
            let path = x
                .url
                .splitn(4, '/')
                .nth(3)
                .map(|p| format!("/{p}"))
                .unwrap_or_default();
            writeln!(
                out,
                "  {:<5} {:<52} {} {}",
                x.method, path, x.status, x.reason
            )?;
        }
    }
    writeln!(out, "\nDiagnosis")?;
    if r.problems.is_empty() {
        writeln!(
            out,
            "  all good: TLS verified, you are authenticated, the server is healthy"
        )?;
    }
    for p in &r.problems {
        writeln!(
            out,
            "  - {}",
            crate::tools::output::wrap(p, 92).replace('\n', "\n    ")
        )?;
    }
    Ok(())
}

pub fn run(args: ProbeArgs, out: &mut dyn Write) -> anyhow::Result<()> {
    let source = Source::from_env(args.kubeconfig.clone());
    let target = target(&args, &source)?;
    let now = OffsetDateTime::now_utc();
    let rt = tokio::runtime::Runtime::new()?;
    let mut log = std::io::stderr().lock();
    let report = rt.block_on(probe(&target, args.verbosity, now, &mut log))?;
    match args.output {
        Some(f) => write_structured(out, f, &report)?,
        None => render(&report, now, out)?,
    }
    let ok = match report.kind.as_str() {
        "etcd" => !report.health.is_empty(),
        "kube-apiserver" => report.identity.is_some(),
        _ => false,
    };
    if !ok {
        let why = report.problems.first().cloned();
        let why =
            why.unwrap_or_else(|| "the server is neither a Kubernetes API server nor etcd".into());
        return Err(Error::Failed(why).into());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_split_into_host_and_port() {
        assert_eq!(
            url_parts("https://127.0.0.1:6443").unwrap(),
            ("127.0.0.1".into(), 6443)
        );
        assert_eq!(
            url_parts("https://kubernetes.default.svc").unwrap(),
            ("kubernetes.default.svc".into(), 443)
        );
        assert_eq!(
            url_parts("https://[::1]:6443/x").unwrap(),
            ("::1".into(), 6443)
        );
        assert!(
            url_parts("http://127.0.0.1:8080")
                .unwrap_err()
                .to_string()
                .contains("HTTPS")
        );
        assert!(url_parts("localhost:6443").is_err());
    }
}
