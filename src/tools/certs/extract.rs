//! `klab certs extract`: the seed's three `egrep | awk | base64 -d` lines as one command that
//! also follows file references, merges KUBECONFIG, checks what it wrote and never half-writes.

use std::fs::{self, OpenOptions};
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use time::OffsetDateTime;

use super::{Error, identity};
use crate::cli::ExtractArgs;
use crate::kubeconfig::{self, Credentials, Resolved, Source};
use crate::pki;

/// One PEM file to write: its name, content, mode and what it is.
struct Output {
    name: &'static str,
    bytes: Vec<u8>,
    mode: u32,
    what: String,
}

/// Why a user has no client certificate, and how curl would authenticate instead.
fn no_cert_reason(r: &Resolved, creds: &Credentials) -> Option<String> {
    let who = format!("user \"{}\" of context \"{}\"", r.user_name, r.context_name);
    let server = r
        .cluster
        .value
        .server
        .clone()
        .unwrap_or_else(|| "https://HOST:6443".into());
    let bearer = format!("curl --cacert ca.pem -H \"Authorization: Bearer $TOKEN\" {server}");
    Some(match creds {
        Credentials::ClientCert { .. } => return None,
        Credentials::Token => format!(
            "{who} authenticates with a bearer token, not a client certificate, so there is no \
             cert.pem or key.pem to extract; curl sends the token as a header instead: {bearer}"
        ),
        Credentials::TokenFile(f) => format!(
            "{who} reads a bearer token from {f}, not a client certificate; use it with: \
             TOKEN=$(cat {f}); {bearer}"
        ),
        Credentials::Exec { command } => format!(
            "{who} gets its credentials at run time from the exec plugin \"{command}\" \
             (kubectl runs it on every request), so the kubeconfig holds no client certificate; \
             run the plugin to get a token, then: {bearer}"
        ),
        Credentials::AuthProvider { name } => format!(
            "{who} uses the \"{name}\" auth provider (tokens issued at run time), not a client \
             certificate; get a token from it, then: {bearer}"
        ),
        Credentials::Basic => format!(
            "{who} uses a user name and password (basic auth, removed from Kubernetes in 1.19), \
             not a client certificate"
        ),
        Credentials::Incomplete { missing } => format!(
            "{who} has half a client certificate: the {missing} is missing from the kubeconfig"
        ),
        Credentials::None => format!(
            "{who} carries no credentials at all: requests would be anonymous \
             (refused unless the API server runs with --anonymous-auth=true)"
        ),
    })
}

fn describe_cert(cert: &pki::Certificate, now: OffsetDateTime) -> String {
    let mut s = cert.subject.clone();
    if !cert.is_ca {
        let (user, groups) = identity(cert);
        s.push_str(&format!(" (user \"{user}\", groups {})", groups.join(", ")));
    }
    if !cert.valid_at(now) {
        s.push_str(" [NOT VALID NOW]");
    }
    s
}

pub fn extract(
    args: &ExtractArgs,
    source: &Source,
    now: OffsetDateTime,
    out: &mut dyn Write,
    warn: &mut dyn Write,
) -> Result<(), Error> {
    let merged = kubeconfig::load(source)?;
    let r = merged.resolve(args.kubeconfig.context.as_deref())?;
    let creds = r.credentials();
    if let Some(reason) = no_cert_reason(&r, &creds) {
        return Err(Error::NoClientCert(reason));
    }
    let Credentials::ClientCert { cert, key } = creds else {
        unreachable!("checked above")
    };

    let mut files = Vec::new();
    let mut warnings = Vec::new();
    let mut ca_cert = None;
    match r.ca() {
        Some(ca) => {
            let bytes = ca.bytes()?;
            let parsed = pki::parse_certs(&ca.describe(), &bytes)?;
            files.push(Output {
                name: "ca.pem",
                what: format!("CA certificate      {}", describe_cert(&parsed[0], now)),
                bytes,
                mode: 0o644,
            });
            ca_cert = Some(parsed);
        }
        None if r.cluster.value.insecure_skip_tls_verify == Some(true) => warnings.push(format!(
            "cluster \"{}\" sets insecure-skip-tls-verify and has no CA: curl needs -k, and \
             nothing proves who the server is",
            r.cluster_name
        )),
        None => warnings.push(format!(
            "cluster \"{}\" names no CA: the server's certificate must be trusted by the \
             system's CA store",
            r.cluster_name
        )),
    }
    let cert_bytes = cert.bytes()?;
    let certs = pki::parse_certs(&cert.describe(), &cert_bytes)?;
    let key_bytes = key.bytes()?;
    let private = pki::parse_key(&key.describe(), &key_bytes)?;
    let leaf = &certs[0];
    if !leaf.valid_at(now) {
        warnings.push(format!(
            "the client certificate is not valid now (valid {} to {}): the API server will \
             refuse it",
            leaf.not_before.date(),
            leaf.not_after.date()
        ));
    }
    if leaf.matches_key(&private) == Some(false) {
        warnings.push(
            "the client key does not belong to the client certificate: curl and kubectl will \
             fail the TLS handshake"
                .into(),
        );
    }
    if let Some(cas) = &ca_cert
        && !cas.iter().any(|ca| leaf.signed_by(ca))
    {
        warnings.push(format!(
            "the client certificate is not signed by this kubeconfig's CA ({}): fine only if \
             the API server's --client-ca-file trusts its issuer ({})",
            cas[0].subject, leaf.issuer
        ));
    }
    files.push(Output {
        name: "cert.pem",
        what: format!("client certificate  {}", describe_cert(leaf, now)),
        bytes: cert_bytes,
        mode: 0o644,
    });
    files.push(Output {
        name: "key.pem",
        what: format!("client key          {}, mode 0600", private.kind),
        bytes: key_bytes,
        mode: 0o600,
    });

    for w in &warnings {
        writeln!(warn, "warning: {w}")?;
    }
    if args.stdout {
        for f in &files {
            out.write_all(&f.bytes)?;
        }
        return Ok(());
    }
    write_all_or_nothing(&args.out_dir, &files, args.force)?;

    writeln!(
        out,
        "Extracted context \"{}\" (cluster \"{}\", user \"{}\") from {}:",
        r.context_name,
        r.cluster_name,
        r.user_name,
        r.user.file.display()
    )?;
    for f in &files {
        writeln!(out, "  {:<9} {}", f.name, f.what)?;
    }
    let shown = |name: &str| -> String {
        if args.out_dir == Path::new(".") {
            name.to_string()
        } else {
            args.out_dir.join(name).display().to_string()
        }
    };
    let server = r
        .cluster
        .value
        .server
        .clone()
        .unwrap_or_else(|| "https://HOST:6443".into());
    let ca_flag = match &ca_cert {
        Some(_) => format!("--cacert {} ", shown("ca.pem")),
        None if r.cluster.value.insecure_skip_tls_verify == Some(true) => "-k ".into(),
        None => String::new(),
    };
    writeln!(out, "\nTalk to the API server with them, as kubectl does:")?;
    writeln!(
        out,
        "  curl {ca_flag}--cert {} --key {} {server}",
        shown("cert.pem"),
        shown("key.pem")
    )?;
    Ok(())
}

/// Writes every file or none: refuses existing files without `force`, writes each to a
/// temporary sibling with its final mode, and renames them only when all are written.
fn write_all_or_nothing(dir: &Path, files: &[Output], force: bool) -> Result<(), Error> {
    let targets: Vec<PathBuf> = files.iter().map(|f| dir.join(f.name)).collect();
    if !force {
        let existing: Vec<String> = targets
            .iter()
            .filter(|t| t.exists())
            .map(|t| t.display().to_string())
            .collect();
        if !existing.is_empty() {
            return Err(Error::Exists(existing));
        }
    }
    fs::create_dir_all(dir).map_err(|source| Error::Write {
        path: dir.into(),
        source,
    })?;
    let mut temps: Vec<PathBuf> = Vec::new();
    let result = (|| {
        for (f, target) in files.iter().zip(&targets) {
            let tmp = dir.join(format!(".{}.klab-tmp-{}", f.name, std::process::id()));
            temps.push(tmp.clone());
            let write = |tmp: &Path| -> std::io::Result<()> {
                let _ = fs::remove_file(tmp);
                let mut file = OpenOptions::new()
                    .write(true)
                    .create_new(true)
                    .mode(f.mode)
                    .open(tmp)?;
                file.write_all(&f.bytes)?;
                file.sync_all()
            };
            write(&tmp).map_err(|source| Error::Write {
                path: target.clone(),
                source,
            })?;
        }
        for (tmp, target) in temps.iter().zip(&targets) {
            fs::rename(tmp, target).map_err(|source| Error::Write {
                path: target.clone(),
                source,
            })?;
        }
        Ok(())
    })();
    if result.is_err() {
        for tmp in &temps {
            let _ = fs::remove_file(tmp);
        }
    }
    result
}
