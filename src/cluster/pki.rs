//! The cluster's PKI, written as `kubeadm init phase certs` writes it: the cluster CA, the API
//! server's serving certificate with every name a client may use, its kubelet and store
//! client certificates, the store's own CA and server certificate, the service-account key
//! pair, and the client certificates behind each kubeconfig (upstream's CNs and groups).
//!
//! Mirrors kubeadm's `cmd/kubeadm/app/phases/certs` and `kubeconfig` phases, with kubeadm's
//! `encryptionAlgorithm: ECDSA-P256` (ring cannot generate RSA keys). Everything is v3 with
//! extensions (kube-rs and rustls refuse v1), keys are 0600, and every file is written to a
//! temporary name and renamed, so a failed `klab up` never leaves half a file.

use std::net::IpAddr;
use std::path::{Path, PathBuf};

use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa,
    Issuer, KeyPair, KeyUsagePurpose, SanType,
};

/// What can fail while writing the PKI.
#[derive(Debug, thiserror::Error)]
pub enum PkiError {
    #[error("generating the certificate {name}")]
    Generate {
        name: String,
        #[source]
        source: rcgen::Error,
    },
    #[error("writing {}", path.display())]
    Write {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

/// Writes `data` to `path` atomically, with `mode` (0600 for keys).
pub fn write_file(path: &Path, data: &[u8], mode: u32) -> Result<(), PkiError> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let err = |source| PkiError::Write {
        path: path.to_path_buf(),
        source,
    };
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).map_err(err)?;
    }
    let tmp = path.with_extension("klab-tmp");
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(mode)
        .open(&tmp)
        .map_err(err)?;
    f.write_all(data).and_then(|()| f.sync_all()).map_err(err)?;
    std::fs::rename(&tmp, path).map_err(err)
}

/// A certificate and its key, in PEM.
#[derive(Debug, Clone)]
pub struct Pair {
    pub cert: String,
    pub key: String,
}

impl Pair {
    /// Writes `<dir>/<stem>.crt` (0644) and `<dir>/<stem>.key` (0600).
    pub fn write(&self, dir: &Path, stem: &str) -> Result<(), PkiError> {
        write_file(
            &dir.join(format!("{stem}.crt")),
            self.cert.as_bytes(),
            0o644,
        )?;
        write_file(&dir.join(format!("{stem}.key")), self.key.as_bytes(), 0o600)
    }
}

/// A certificate authority that can sign.
pub struct Ca {
    issuer: Issuer<'static, KeyPair>,
    pub pair: Pair,
}

/// What a leaf certificate is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Usage {
    Server,
    Client,
    /// Both: etcd's server certificate, which etcd also uses as a client to itself.
    ServerAndClient,
}

/// A leaf certificate to issue.
pub struct Leaf<'a> {
    pub cn: &'a str,
    pub orgs: &'a [&'a str],
    pub dns: Vec<String>,
    pub ips: Vec<IpAddr>,
    pub usage: Usage,
}

fn generate(name: &str) -> impl Fn(rcgen::Error) -> PkiError + '_ {
    move |source| PkiError::Generate {
        name: name.into(),
        source,
    }
}

impl Ca {
    /// A new self-signed CA, valid ten years (kubeadm's CA lifetime).
    pub fn new(cn: &str) -> Result<Ca, PkiError> {
        let key = KeyPair::generate().map_err(generate(cn))?;
        let mut p = CertificateParams::new(Vec::<String>::new()).map_err(generate(cn))?;
        p.distinguished_name = DistinguishedName::new();
        p.distinguished_name.push(DnType::CommonName, cn);
        p.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        p.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        let now = time::OffsetDateTime::now_utc();
        p.not_before = now - time::Duration::minutes(5);
        p.not_after = now + time::Duration::days(3650);
        let cert = p.self_signed(&key).map_err(generate(cn))?.pem();
        let pair = Pair {
            cert,
            key: key.serialize_pem(),
        };
        Ok(Ca {
            issuer: Issuer::new(p, key),
            pair,
        })
    }

    /// Issues a leaf certificate valid one year (kubeadm's), with a fresh key.
    pub fn issue(&self, leaf: &Leaf) -> Result<Pair, PkiError> {
        let name = leaf.cn;
        let key = KeyPair::generate().map_err(generate(name))?;
        let mut p = CertificateParams::new(leaf.dns.clone()).map_err(generate(name))?;
        p.subject_alt_names
            .extend(leaf.ips.iter().map(|ip| SanType::IpAddress(*ip)));
        p.distinguished_name = DistinguishedName::new();
        for o in leaf.orgs {
            p.distinguished_name.push(DnType::OrganizationName, *o);
        }
        p.distinguished_name.push(DnType::CommonName, leaf.cn);
        p.key_usages = vec![
            KeyUsagePurpose::DigitalSignature,
            KeyUsagePurpose::KeyEncipherment,
        ];
        p.extended_key_usages = match leaf.usage {
            Usage::Server => vec![ExtendedKeyUsagePurpose::ServerAuth],
            Usage::Client => vec![ExtendedKeyUsagePurpose::ClientAuth],
            Usage::ServerAndClient => vec![
                ExtendedKeyUsagePurpose::ServerAuth,
                ExtendedKeyUsagePurpose::ClientAuth,
            ],
        };
        let now = time::OffsetDateTime::now_utc();
        p.not_before = now - time::Duration::minutes(5);
        p.not_after = now + time::Duration::days(365);
        let cert = p
            .signed_by(&key, &self.issuer)
            .map_err(generate(name))?
            .pem();
        Ok(Pair {
            cert,
            key: key.serialize_pem(),
        })
    }

    /// A client certificate: CN is the user, O the groups.
    pub fn client(&self, user: &str, groups: &[&str]) -> Result<Pair, PkiError> {
        self.issue(&Leaf {
            cn: user,
            orgs: groups,
            dns: Vec::new(),
            ips: Vec::new(),
            usage: Usage::Client,
        })
    }
}

/// The service-account key pair (`sa.key`, `sa.pub`): ES256 for the token signer.
pub fn service_account_keys() -> Result<Pair, PkiError> {
    let key = KeyPair::generate().map_err(generate("sa"))?;
    Ok(Pair {
        cert: key.public_key_pem(),
        key: key.serialize_pem(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn issued_certificates_chain_to_their_ca_and_carry_their_names() {
        let ca = Ca::new("kubernetes").unwrap();
        let server = ca
            .issue(&Leaf {
                cn: "kube-apiserver",
                orgs: &[],
                dns: vec!["kubernetes.default.svc".into()],
                ips: vec!["10.96.0.1".parse().unwrap()],
                usage: Usage::Server,
            })
            .unwrap();
        let ca_cert = crate::pki::parse_certs("ca", ca.pair.cert.as_bytes()).unwrap();
        let cert = crate::pki::parse_certs("server", server.cert.as_bytes()).unwrap();
        assert!(cert[0].signed_by(&ca_cert[0]));
        assert!(cert[0].sans.iter().any(|s| s.contains("10.96.0.1")));
        let admin = ca
            .client("kubernetes-admin", &["kubeadm:cluster-admins"])
            .unwrap();
        let admin = crate::pki::parse_certs("admin", admin.cert.as_bytes()).unwrap();
        assert_eq!(admin[0].common_name.as_deref(), Some("kubernetes-admin"));
        assert_eq!(admin[0].organizations, ["kubeadm:cluster-admins"]);
    }

    #[test]
    fn keys_are_written_private_and_whole() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let ca = Ca::new("etcd-ca").unwrap();
        ca.pair.write(dir.path(), "ca").unwrap();
        let mode = std::fs::metadata(dir.path().join("ca.key"))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
        assert!(!dir.path().join("ca.klab-tmp").exists());
    }
}
