//! `klab certs inspect`: what `openssl x509 -text` says, in the API server's terms (user,
//! groups), plus the two checks curl and kubectl make silently: the chain and the key.

use std::io::Write;
use std::path::{Path, PathBuf};

use serde::Serialize;
use time::OffsetDateTime;

use super::{Error, identity, read};
use crate::api::duration::short_human;
use crate::cli::OutputFormat;
use crate::kubeconfig::{self, Credentials, Source};
use crate::pki::{self, Certificate, PrivateKey};
use crate::tools::output::write_structured;

/// One certificate and the verdicts about it.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Inspected {
    pub source: String,
    #[serde(flatten)]
    pub cert: Certificate,
    /// The user and groups the API server would see (client certificates only).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub api_user: Option<ApiUser>,
    pub valid_now: bool,
    pub seconds_left: i64,
    /// `signed by <source>`, `self-signed`, `NOT signed by …`, or `unknown issuer`.
    pub chain: String,
    pub chain_ok: Option<bool>,
    /// Which key file matches this certificate, if any was given.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub private_key: Option<String>,
    pub key_ok: Option<bool>,
}

#[derive(Debug, Serialize)]
pub struct ApiUser {
    pub user: String,
    pub groups: Vec<String>,
}

struct Key {
    source: String,
    key: PrivateKey,
}

struct Found {
    source: String,
    cert: Certificate,
}

/// Whether a key file is meant for a certificate: the same name with another extension
/// (`apiserver.crt`, `apiserver.key`), or the only key given beside the only client certificate.
fn belongs(cert_source: &str, key: &Key, lone_pair: bool) -> bool {
    let stem = |s: &str| {
        Path::new(s)
            .with_extension("")
            .to_string_lossy()
            .into_owned()
    };
    lone_pair || stem(cert_source) == stem(&key.source)
}

fn judge(found: Vec<Found>, cas: &[Found], keys: &[Key], now: OffsetDateTime) -> Vec<Inspected> {
    let lone_pair = keys.len() == 1 && found.iter().filter(|f| !f.cert.is_ca).count() == 1;
    found
        .into_iter()
        .map(|Found { source, cert }| {
            let self_signed = cert.subject == cert.issuer && cert.signed_by(&cert);
            let (chain, chain_ok) = if self_signed {
                ("self-signed (a root CA)".to_string(), Some(true))
            } else if let Some(ca) = cas.iter().find(|ca| cert.signed_by(&ca.cert)) {
                (
                    format!("signed by {} ({})", ca.cert.subject, ca.source),
                    Some(true),
                )
            } else if let Some(ca) = cas.iter().find(|ca| ca.cert.subject == cert.issuer) {
                (
                    format!(
                        "NOT signed by {} ({}): the signature does not verify",
                        ca.cert.subject, ca.source
                    ),
                    Some(false),
                )
            } else if !cas.is_empty() {
                let names: Vec<&str> = cas.iter().map(|c| c.source.as_str()).collect();
                (
                    format!("NOT signed by the CA given ({})", names.join(", ")),
                    Some(false),
                )
            } else {
                (
                    "unknown: no CA given to check against (add the CA file or --ca)".into(),
                    None,
                )
            };
            let (mut private_key, mut key_ok) = (None, None);
            if let Some(k) = keys.iter().find(|k| cert.matches_key(&k.key) == Some(true)) {
                private_key = Some(format!("matches {}", k.source));
                key_ok = Some(true);
            } else if let Some(k) = keys.iter().find(|k| belongs(&source, k, lone_pair)) {
                private_key = Some(format!("does NOT match {}", k.source));
                key_ok = Some(false);
            }
            let client = cert.ext_key_usage.is_empty()
                || cert.ext_key_usage.iter().any(|u| u == "clientAuth");
            let api_user = (!cert.is_ca && client).then(|| {
                let (user, groups) = identity(&cert);
                ApiUser { user, groups }
            });
            Inspected {
                source,
                valid_now: cert.valid_at(now),
                seconds_left: cert.seconds_left(now),
                api_user,
                chain,
                chain_ok,
                private_key,
                key_ok,
                cert,
            }
        })
        .collect()
}

fn when(t: OffsetDateTime) -> String {
    let f = time::macros::format_description!("[year]-[month]-[day] [hour]:[minute]:[second] UTC");
    t.format(&f).unwrap_or_else(|_| t.to_string())
}

fn render(items: &[Inspected], now: OffsetDateTime, out: &mut dyn Write) -> std::io::Result<()> {
    for (i, it) in items.iter().enumerate() {
        if i > 0 {
            writeln!(out)?;
        }
        let c = &it.cert;
        writeln!(out, "{}", it.source)?;
        let row = |out: &mut dyn Write, k: &str, v: &str| writeln!(out, "  {k:<14} {v}");
        row(out, "Subject:", &c.subject)?;
        if let Some(u) = &it.api_user {
            let v = format!("user \"{}\", groups [{}]", u.user, u.groups.join(", "));
            row(out, "API identity:", &v)?;
        }
        row(out, "Issuer:", &c.issuer)?;
        row(out, "Serial:", &c.serial)?;
        row(out, "Not before:", &when(c.not_before))?;
        let left = if !it.valid_now && now < c.not_before {
            "NOT YET VALID".to_string()
        } else if it.seconds_left < 0 {
            format!("EXPIRED {} ago", short_human(-it.seconds_left))
        } else {
            format!("{} left", short_human(it.seconds_left))
        };
        row(
            out,
            "Not after:",
            &format!("{} ({left})", when(c.not_after)),
        )?;
        if !c.sans.is_empty() {
            row(out, "SANs:", &c.sans.join(", "))?;
        }
        row(out, "Public key:", &c.key_type)?;
        if !c.key_usage.is_empty() {
            row(out, "Key usage:", &c.key_usage.join(", "))?;
        }
        if !c.ext_key_usage.is_empty() {
            row(out, "Ext key usage:", &c.ext_key_usage.join(", "))?;
        }
        row(
            out,
            "CA:",
            if c.is_ca {
                "yes: it can sign other certificates"
            } else {
                "no"
            },
        )?;
        row(out, "Chain:", &it.chain)?;
        if let Some(k) = &it.private_key {
            row(out, "Private key:", k)?;
        }
    }
    Ok(())
}

fn emit(
    items: Vec<Inspected>,
    orphan_keys: Vec<String>,
    format: Option<OutputFormat>,
    now: OffsetDateTime,
    out: &mut dyn Write,
) -> Result<(), Error> {
    match format {
        Some(f) => write_structured(out, f, &items)?,
        None => {
            render(&items, now, out)?;
            for k in orphan_keys {
                writeln!(out, "\n{k}\n  matches none of the certificates given")?;
            }
        }
    }
    Ok(())
}

/// `klab certs inspect FILE…`: every certificate in the files; any CA among them (or `--ca`)
/// is used to verify the others, any private key is matched against them.
pub fn inspect_files(
    files: &[PathBuf],
    ca: Option<&Path>,
    format: Option<OutputFormat>,
    now: OffsetDateTime,
    out: &mut dyn Write,
) -> Result<(), Error> {
    let mut certs = Vec::new();
    let mut keys = Vec::new();
    let mut cas = Vec::new();
    for path in files {
        let bytes = read(path)?;
        let what = path.display().to_string();
        let sections = pki::pem_sections(&what, &bytes)?;
        let has_cert = sections
            .iter()
            .any(|(k, _)| *k == rustls_pki_types::pem::SectionKind::Certificate);
        if has_cert {
            let parsed = pki::parse_certs(&what, &bytes)?;
            let n = parsed.len();
            for (i, cert) in parsed.into_iter().enumerate() {
                let source = if n > 1 {
                    format!("{what} (certificate {} of {n})", i + 1)
                } else {
                    what.clone()
                };
                if cert.is_ca {
                    cas.push(Found {
                        source: source.clone(),
                        cert: cert.clone(),
                    });
                }
                certs.push(Found { source, cert });
            }
        }
        match pki::parse_key(&what, &bytes) {
            Ok(key) => keys.push(Key { source: what, key }),
            Err(pki::Error::NoKey { .. }) if has_cert => {}
            Err(pki::Error::NoKey { .. }) => {
                let found = pki::parse_certs(&what, &bytes).err().map(Error::from);
                return Err(found.unwrap_or(Error::Pki(pki::Error::NoKey { what })));
            }
            Err(e) => return Err(e.into()),
        }
    }
    if let Some(ca) = ca {
        let what = ca.display().to_string();
        for cert in pki::parse_certs(&what, &read(ca)?)? {
            cas.push(Found {
                source: what.clone(),
                cert,
            });
        }
    }
    let matched: Vec<bool> = keys
        .iter()
        .map(|k| {
            certs
                .iter()
                .any(|c| c.cert.matches_key(&k.key) == Some(true))
        })
        .collect();
    let orphans = keys
        .iter()
        .zip(matched)
        .filter(|(_, m)| !m)
        .map(|(k, _)| format!("{} ({} private key)", k.source, k.key.kind))
        .collect();
    let items = judge(certs, &cas, &keys, now);
    emit(items, orphans, format, now, out)
}

/// `klab certs inspect --kubeconfig P`: the context's CA and client certificate, with the
/// client key matched and the chain verified against the kubeconfig's CA.
pub fn inspect_kubeconfig(
    source: &Source,
    context: Option<&str>,
    ca: Option<&Path>,
    format: Option<OutputFormat>,
    now: OffsetDateTime,
    out: &mut dyn Write,
) -> Result<(), Error> {
    let r = kubeconfig::load(source)?.resolve(context)?;
    let mut cas = Vec::new();
    if let Some(m) = r.ca() {
        let what = m.describe();
        for cert in pki::parse_certs(&what, &m.bytes()?)? {
            cas.push(Found {
                source: what.clone(),
                cert,
            });
        }
    }
    if let Some(ca) = ca {
        let what = ca.display().to_string();
        for cert in pki::parse_certs(&what, &read(ca)?)? {
            cas.push(Found {
                source: what.clone(),
                cert,
            });
        }
    }
    let mut found: Vec<Found> = cas
        .iter()
        .map(|c| Found {
            source: c.source.clone(),
            cert: c.cert.clone(),
        })
        .collect();
    let mut keys = Vec::new();
    match r.credentials() {
        Credentials::ClientCert { cert, key } => {
            let what = cert.describe();
            for c in pki::parse_certs(&what, &cert.bytes()?)? {
                found.push(Found {
                    source: what.clone(),
                    cert: c,
                });
            }
            let kwhat = key.describe();
            keys.push(Key {
                key: pki::parse_key(&kwhat, &key.bytes()?)?,
                source: kwhat,
            });
        }
        other => {
            let note = match other {
                Credentials::Token | Credentials::TokenFile(_) => "a bearer token",
                Credentials::Exec { .. } => "an exec plugin",
                Credentials::AuthProvider { .. } => "an auth provider",
                _ => "no client certificate",
            };
            if found.is_empty() {
                return Err(Error::NoClientCert(format!(
                    "context \"{}\" has no CA and its user \"{}\" uses {note}: no certificate to inspect",
                    r.context_name, r.user_name
                )));
            }
        }
    }
    let items = judge(found, &cas, &keys, now);
    emit(items, Vec::new(), format, now, out)
}
