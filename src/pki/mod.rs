//! X.509 certificates and private keys as the API server reads them: CN is the user, O the
//! groups, the chain must end at `--client-ca-file`, and the key must fit the certificate.
//!
//! Mirrors what `openssl x509 -text`, `kubeadm certs` and client-go's cert utilities show,
//! reduced to what a learner needs. Reading only; klab's PKI writer lives with `klab up`. Also
//! home of [`AnyServer`], the one TLS verifier that accepts any server certificate.

mod any_server;
mod key;

use std::net::IpAddr;

use rustls_pki_types::pem::{self, SectionKind};
use serde::Serialize;
use time::OffsetDateTime;
use x509_parser::extensions::GeneralName;
use x509_parser::prelude::{FromDer, X509Certificate};
use x509_parser::public_key::PublicKey;

pub use any_server::AnyServer;
pub use key::PrivateKey;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("{what} is not PEM: found no \"-----BEGIN …-----\" block")]
    NotPem { what: String },
    #[error("{what} holds no certificate (only {found})")]
    NoCertificate { what: String, found: String },
    #[error("{what} holds no private key")]
    NoKey { what: String },
    #[error("{what}: malformed PEM")]
    Pem {
        what: String,
        #[source]
        source: pem::Error,
    },
    #[error("{what}: certificate {index} is not valid X.509 DER: {reason}")]
    Der {
        what: String,
        index: usize,
        reason: String,
    },
    #[error("{what}: the private key is not valid {format} DER: {reason}")]
    KeyDer {
        what: String,
        format: &'static str,
        reason: String,
    },
}

/// The PEM blocks of a file, in order.
pub fn pem_sections(what: &str, bytes: &[u8]) -> Result<Vec<(SectionKind, Vec<u8>)>, Error> {
    let mut out = Vec::new();
    let mut reader = std::io::BufReader::new(bytes);
    loop {
        match pem::from_buf(&mut reader) {
            Ok(Some(section)) => out.push(section),
            Ok(None) => break,
            Err(source) => {
                return Err(Error::Pem {
                    what: what.into(),
                    source,
                });
            }
        }
    }
    if out.is_empty() {
        return Err(Error::NotPem { what: what.into() });
    }
    Ok(out)
}

fn section_name(kind: SectionKind) -> &'static str {
    match kind {
        SectionKind::Certificate => "CERTIFICATE",
        SectionKind::PublicKey => "PUBLIC KEY",
        SectionKind::RsaPrivateKey => "RSA PRIVATE KEY",
        SectionKind::PrivateKey => "PRIVATE KEY",
        SectionKind::EcPrivateKey => "EC PRIVATE KEY",
        SectionKind::Crl => "X509 CRL",
        SectionKind::Csr => "CERTIFICATE REQUEST",
        SectionKind::EchConfigList => "ECHCONFIG",
        _ => "unknown",
    }
}

/// Every certificate in a PEM file (a bundle has several).
pub fn parse_certs(what: &str, bytes: &[u8]) -> Result<Vec<Certificate>, Error> {
    let sections = pem_sections(what, bytes)?;
    let certs: Vec<Certificate> = sections
        .iter()
        .filter(|(k, _)| *k == SectionKind::Certificate)
        .enumerate()
        .map(|(i, (_, der))| Certificate::from_der(der.clone(), what, i + 1))
        .collect::<Result<_, _>>()?;
    if certs.is_empty() {
        let found: Vec<&str> = sections.iter().map(|(k, _)| section_name(*k)).collect();
        return Err(Error::NoCertificate {
            what: what.into(),
            found: found.join(", "),
        });
    }
    Ok(certs)
}

/// The first private key in a PEM file.
pub fn parse_key(what: &str, bytes: &[u8]) -> Result<PrivateKey, Error> {
    let sections = pem_sections(what, bytes)?;
    let (kind, der) = sections
        .into_iter()
        .find(|(k, _)| {
            matches!(
                k,
                SectionKind::PrivateKey | SectionKind::RsaPrivateKey | SectionKind::EcPrivateKey
            )
        })
        .ok_or_else(|| Error::NoKey { what: what.into() })?;
    PrivateKey::from_der(kind, &der).map_err(|(format, reason)| Error::KeyDer {
        what: what.into(),
        format,
        reason,
    })
}

/// A parsed certificate and the facts a learner asks about.
#[derive(Debug, Clone, Serialize)]
pub struct Certificate {
    #[serde(skip)]
    pub der: Vec<u8>,
    pub subject: String,
    /// CN: the user name the API server sees.
    pub common_name: Option<String>,
    /// O: the groups the API server sees.
    pub organizations: Vec<String>,
    pub issuer: String,
    pub serial: String,
    #[serde(with = "time::serde::rfc3339")]
    pub not_before: OffsetDateTime,
    #[serde(with = "time::serde::rfc3339")]
    pub not_after: OffsetDateTime,
    pub sans: Vec<String>,
    pub key_type: String,
    pub key_usage: Vec<String>,
    pub ext_key_usage: Vec<String>,
    pub is_ca: bool,
}

impl Certificate {
    pub fn from_der(der: Vec<u8>, what: &str, index: usize) -> Result<Self, Error> {
        let bad = |reason: String| Error::Der {
            what: what.into(),
            index,
            reason,
        };
        let (_, x) = X509Certificate::from_der(&der).map_err(|e| bad(e.to_string()))?;
        let subject_name = x.subject();
        let common_name = subject_name
            .iter_common_name()
            .next()
            .and_then(|a| a.as_str().ok())
            .map(str::to_string);
        let organizations = subject_name
            .iter_organization()
            .filter_map(|a| a.as_str().ok())
            .map(str::to_string)
            .collect();
        let mut sans = Vec::new();
        if let Ok(Some(ext)) = x.subject_alternative_name() {
            for name in &ext.value.general_names {
                sans.push(match name {
                    GeneralName::DNSName(d) => format!("DNS:{d}"),
                    GeneralName::IPAddress(ip) => format!("IP:{}", ip_string(ip)),
                    GeneralName::URI(u) => format!("URI:{u}"),
                    GeneralName::RFC822Name(e) => format!("email:{e}"),
                    other => format!("{other:?}"),
                });
            }
        }
        let key_usage = match x.key_usage() {
            Ok(Some(ku)) => ku
                .value
                .to_string()
                .split(", ")
                .map(str::to_string)
                .collect(),
            _ => Vec::new(),
        };
        let mut ext_key_usage = Vec::new();
        if let Ok(Some(eku)) = x.extended_key_usage() {
            let e = eku.value;
            for (on, name) in [
                (e.server_auth, "serverAuth"),
                (e.client_auth, "clientAuth"),
                (e.code_signing, "codeSigning"),
                (e.email_protection, "emailProtection"),
                (e.time_stamping, "timeStamping"),
                (e.ocsp_signing, "OCSPSigning"),
                (e.any, "any"),
            ] {
                if on {
                    ext_key_usage.push(name.to_string());
                }
            }
            ext_key_usage.extend(e.other.iter().map(|o| o.to_id_string()));
        }
        let key_type = key_type(&x);
        let cert = Certificate {
            subject: x.subject().to_string(),
            common_name,
            organizations,
            issuer: x.issuer().to_string(),
            serial: x.raw_serial_as_string(),
            not_before: x.validity().not_before.to_datetime(),
            not_after: x.validity().not_after.to_datetime(),
            sans,
            key_type,
            key_usage,
            ext_key_usage,
            is_ca: x.is_ca(),
            der: Vec::new(),
        };
        Ok(Certificate { der, ..cert })
    }

    fn parsed(&self) -> X509Certificate<'_> {
        // The DER was parsed once in `from_der`; it cannot fail the second time.
        X509Certificate::from_der(&self.der)
            .map(|(_, x)| x)
            .expect("DER parsed before")
    }

    /// Whether `issuer` signed this certificate (names match and the signature verifies).
    pub fn signed_by(&self, issuer: &Certificate) -> bool {
        let (me, ca) = (self.parsed(), issuer.parsed());
        me.issuer() == ca.subject() && me.verify_signature(Some(ca.public_key())).is_ok()
    }

    /// Whether `key` is the private half of this certificate's public key.
    pub fn matches_key(&self, key: &PrivateKey) -> Option<bool> {
        let x = self.parsed();
        let spki = x.public_key();
        key.matches(
            spki.subject_public_key.data.as_ref(),
            spki.parsed().ok().as_ref(),
        )
    }

    /// Seconds until expiry (negative once expired).
    pub fn seconds_left(&self, now: OffsetDateTime) -> i64 {
        (self.not_after - now).whole_seconds()
    }

    /// Valid at `now`: not before its start, not after its end.
    pub fn valid_at(&self, now: OffsetDateTime) -> bool {
        self.not_before <= now && now <= self.not_after
    }
}

fn ip_string(raw: &[u8]) -> String {
    match raw.len() {
        4 => IpAddr::from(<[u8; 4]>::try_from(raw).unwrap_or_default()).to_string(),
        16 => IpAddr::from(<[u8; 16]>::try_from(raw).unwrap_or_default()).to_string(),
        _ => format!("{raw:02x?}"),
    }
}

fn key_type(x: &X509Certificate<'_>) -> String {
    let spki = x.public_key();
    match spki.parsed() {
        Ok(PublicKey::RSA(rsa)) => {
            let modulus = rsa.modulus.iter().skip_while(|b| **b == 0).count();
            format!("RSA {}", modulus * 8)
        }
        Ok(PublicKey::EC(_)) => {
            let curve = spki
                .algorithm
                .parameters
                .as_ref()
                .and_then(|p| p.as_oid().ok())
                .map(|oid| oid.to_id_string());
            match curve.as_deref() {
                Some("1.2.840.10045.3.1.7") => "ECDSA P-256".into(),
                Some("1.3.132.0.34") => "ECDSA P-384".into(),
                Some("1.3.132.0.35") => "ECDSA P-521".into(),
                Some(other) => format!("ECDSA {other}"),
                None => "ECDSA".into(),
            }
        }
        _ => match spki.algorithm.algorithm.to_id_string().as_str() {
            "1.3.101.112" => "Ed25519".into(),
            "1.3.101.113" => "Ed448".into(),
            other => format!("unknown ({other})"),
        },
    }
}
