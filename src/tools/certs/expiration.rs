//! `klab certs check-expiration`: kubeadm's `certs check-expiration` table, read from a PKI
//! folder and the kubeconfigs beside it (the kubeadm layout of /etc/kubernetes).

use std::io::Write;
use std::path::Path;

use serde::Serialize;
use time::OffsetDateTime;

use super::Error;
use crate::api::duration::short_human;
use crate::cli::OutputFormat;
use crate::kubeconfig::{self, Credentials, Source};
use crate::pki;
use crate::tools::output::{write_structured, write_table};

/// Where kubeadm keeps each certificate: in the PKI folder, or inside a kubeconfig beside it.
enum Location {
    Pki(&'static str),
    Kubeconfig(&'static str),
}

/// kubeadm's list, in its order: name, where, signing CA.
const LEAVES: &[(&str, Location, &str)] = &[
    ("admin.conf", Location::Kubeconfig("admin.conf"), "ca"),
    ("apiserver", Location::Pki("apiserver.crt"), "ca"),
    (
        "apiserver-etcd-client",
        Location::Pki("apiserver-etcd-client.crt"),
        "etcd-ca",
    ),
    (
        "apiserver-kubelet-client",
        Location::Pki("apiserver-kubelet-client.crt"),
        "ca",
    ),
    (
        "controller-manager.conf",
        Location::Kubeconfig("controller-manager.conf"),
        "ca",
    ),
    (
        "etcd-healthcheck-client",
        Location::Pki("etcd/healthcheck-client.crt"),
        "etcd-ca",
    ),
    ("etcd-peer", Location::Pki("etcd/peer.crt"), "etcd-ca"),
    ("etcd-server", Location::Pki("etcd/server.crt"), "etcd-ca"),
    (
        "front-proxy-client",
        Location::Pki("front-proxy-client.crt"),
        "front-proxy-ca",
    ),
    (
        "scheduler.conf",
        Location::Kubeconfig("scheduler.conf"),
        "ca",
    ),
    (
        "super-admin.conf",
        Location::Kubeconfig("super-admin.conf"),
        "ca",
    ),
];

/// The CAs: name, certificate and key file in the PKI folder.
const AUTHORITIES: &[(&str, &str, &str)] = &[
    ("ca", "ca.crt", "ca.key"),
    ("etcd-ca", "etcd/ca.crt", "etcd/ca.key"),
    ("front-proxy-ca", "front-proxy-ca.crt", "front-proxy-ca.key"),
];

/// One row, shaped like kubeadm's `-o json` (`CertificateExpirationInfo`).
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Expiration {
    pub name: String,
    #[serde(with = "time::serde::rfc3339::option")]
    pub expiration_date: Option<OffsetDateTime>,
    /// Nanoseconds, as Go's `time.Duration` marshals.
    pub residual_time: i64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub certificate_authority: Option<String>,
    pub externally_managed: bool,
    pub missing: bool,
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ExpirationInfo {
    pub kind: &'static str,
    pub api_version: &'static str,
    pub certificates: Vec<Expiration>,
    pub certificate_authorities: Vec<Expiration>,
}

fn expiry_of_file(path: &Path) -> Option<OffsetDateTime> {
    let bytes = std::fs::read(path).ok()?;
    let certs = pki::parse_certs(&path.display().to_string(), &bytes).ok()?;
    Some(certs[0].not_after)
}

fn expiry_of_kubeconfig(path: &Path) -> Option<OffsetDateTime> {
    if !path.exists() {
        return None;
    }
    let source = Source {
        explicit: Some(path.to_path_buf()),
        ..Source::default()
    };
    let r = kubeconfig::load(&source).ok()?.resolve(None).ok()?;
    let Credentials::ClientCert { cert, .. } = r.credentials() else {
        return None;
    };
    let bytes = cert.bytes().ok()?;
    let certs = pki::parse_certs(&cert.describe(), &bytes).ok()?;
    Some(certs[0].not_after)
}

fn row(
    name: &str,
    expires: Option<OffsetDateTime>,
    ca: Option<&str>,
    external: bool,
    now: OffsetDateTime,
) -> Expiration {
    Expiration {
        name: name.to_string(),
        expiration_date: expires,
        residual_time: expires
            .map(|e| (e - now).whole_nanoseconds() as i64)
            .unwrap_or(0),
        certificate_authority: ca.map(str::to_string),
        externally_managed: external,
        missing: expires.is_none(),
    }
}

/// Reads every certificate kubeadm tracks; a missing or unreadable one is marked missing.
pub fn collect(
    pki_dir: &Path,
    config_dir: &Path,
    now: OffsetDateTime,
) -> Result<ExpirationInfo, Error> {
    if !pki_dir.is_dir() {
        return Err(Error::NoPkiDir(pki_dir.to_path_buf()));
    }
    // kubeadm calls a CA "externally managed" when its key is not on the node.
    let external = |ca: &str| {
        AUTHORITIES
            .iter()
            .find(|(n, _, _)| *n == ca)
            .is_some_and(|(_, crt, key)| pki_dir.join(crt).exists() && !pki_dir.join(key).exists())
    };
    let certificates = LEAVES
        .iter()
        .map(|(name, loc, ca)| {
            let expires = match loc {
                Location::Pki(f) => expiry_of_file(&pki_dir.join(f)),
                Location::Kubeconfig(f) => expiry_of_kubeconfig(&config_dir.join(f)),
            };
            row(name, expires, Some(ca), external(ca), now)
        })
        .collect();
    let certificate_authorities = AUTHORITIES
        .iter()
        .map(|(name, crt, _)| {
            row(
                name,
                expiry_of_file(&pki_dir.join(crt)),
                None,
                external(name),
                now,
            )
        })
        .collect();
    Ok(ExpirationInfo {
        kind: "CertificateExpirationInfo",
        api_version: "output.kubeadm.k8s.io/v1alpha3",
        certificates,
        certificate_authorities,
    })
}

fn cells(e: &Expiration, with_ca: bool) -> Vec<String> {
    let f =
        time::macros::format_description!("[month repr:short] [day], [year] [hour]:[minute] UTC");
    let mut v = vec![
        if e.missing {
            format!("!MISSING! {}", e.name)
        } else {
            e.name.clone()
        },
        e.expiration_date
            .and_then(|d| d.format(&f).ok())
            .unwrap_or_default(),
        if e.missing {
            String::new()
        } else {
            short_human(e.residual_time / 1_000_000_000)
        },
    ];
    if with_ca {
        v.push(e.certificate_authority.clone().unwrap_or_default());
    }
    v.push(if e.externally_managed { "yes" } else { "no" }.into());
    v
}

pub fn check_expiration(
    pki_dir: &Path,
    config_dir: &Path,
    format: Option<OutputFormat>,
    now: OffsetDateTime,
    out: &mut dyn Write,
) -> Result<(), Error> {
    let info = collect(pki_dir, config_dir, now)?;
    if let Some(f) = format {
        write_structured(out, f, &info)?;
        return Ok(());
    }
    let rows: Vec<Vec<String>> = info.certificates.iter().map(|e| cells(e, true)).collect();
    write_table(
        out,
        &[
            "CERTIFICATE",
            "EXPIRES",
            "RESIDUAL TIME",
            "CERTIFICATE AUTHORITY",
            "EXTERNALLY MANAGED",
        ],
        &rows,
    )?;
    writeln!(out)?;
    let rows: Vec<Vec<String>> = info
        .certificate_authorities
        .iter()
        .map(|e| cells(e, false))
        .collect();
    write_table(
        out,
        &[
            "CERTIFICATE AUTHORITY",
            "EXPIRES",
            "RESIDUAL TIME",
            "EXTERNALLY MANAGED",
        ],
        &rows,
    )?;
    Ok(())
}
