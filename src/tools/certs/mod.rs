//! `klab certs`: get a kubeconfig's certificates out as PEM files, explain certificates, and
//! check their expiry; mirrors the seed's `egrep | awk | base64 -d` recipe, `openssl x509 -text`
//! and `kubeadm certs check-expiration`.

mod expiration;
mod extract;
mod inspect;

use std::io::Write;
use std::path::PathBuf;

use time::OffsetDateTime;

use crate::cli::CertsCommand;
use crate::kubeconfig::{self, Source};

pub use expiration::check_expiration;
pub use extract::extract;
pub use inspect::{inspect_files, inspect_kubeconfig};

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(transparent)]
    Kubeconfig(#[from] kubeconfig::Error),
    #[error(transparent)]
    Pki(#[from] crate::pki::Error),
    #[error("{0}")]
    NoClientCert(String),
    #[error("refusing to overwrite {}: they exist already (pass --force to replace them)", .0.join(", "))]
    Exists(Vec<String>),
    #[error("writing {}", path.display())]
    Write {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("reading {}", path.display())]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("the PKI folder {} does not exist: is this a kubeadm or kind control-plane node? Pass --pki-dir DIR", .0.display())]
    NoPkiDir(PathBuf),
    #[error("writing the output")]
    Output(#[from] std::io::Error),
}

/// Reads a file for a tool, naming it in the error.
fn read(path: &std::path::Path) -> Result<Vec<u8>, Error> {
    std::fs::read(path).map_err(|source| Error::Read {
        path: path.to_path_buf(),
        source,
    })
}

/// Kubernetes' user and groups for a client certificate: CN, and O plus `system:authenticated`.
fn identity(cert: &crate::pki::Certificate) -> (String, Vec<String>) {
    let mut groups = cert.organizations.clone();
    groups.push("system:authenticated".into());
    (cert.common_name.clone().unwrap_or_default(), groups)
}

pub fn run(cmd: CertsCommand, out: &mut dyn Write) -> anyhow::Result<()> {
    let now = OffsetDateTime::now_utc();
    let mut err = std::io::stderr().lock();
    match cmd {
        CertsCommand::Extract(a) => {
            let source = Source::from_env(a.kubeconfig.kubeconfig.clone());
            extract(&a, &source, now, out, &mut err)?;
        }
        CertsCommand::Inspect(a) => {
            if a.files.is_empty() {
                let source = Source::from_env(a.kubeconfig.clone());
                inspect_kubeconfig(
                    &source,
                    a.context.as_deref(),
                    a.ca.as_deref(),
                    a.output,
                    now,
                    out,
                )?;
            } else {
                inspect_files(&a.files, a.ca.as_deref(), a.output, now, out)?;
            }
        }
        CertsCommand::CheckExpiration(a) => {
            let config_dir = a.kubeconfig_dir.clone().unwrap_or_else(|| {
                a.pki_dir
                    .parent()
                    .map(|p| p.to_path_buf())
                    .unwrap_or_else(|| PathBuf::from("."))
            });
            check_expiration(&a.pki_dir, &config_dir, a.output, now, out)?;
        }
    }
    Ok(())
}
