//! HTTPS for the API server: rustls (ring), client certificates checked against
//! `--client-ca-file`.
//!
//! Upstream asks for a client certificate without requiring one and verifies it in the x509
//! authenticator, so an untrusted certificate gets a `401 Unauthorized` Status rather than a
//! failed handshake. klab does the same: the handshake only proves the client holds the key;
//! [`ClientCerts::verify`] checks the chain afterwards, per connection.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustls::DistinguishedName;
use rustls::client::danger::HandshakeSignatureValid;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, UnixTime};
use rustls::server::WebPkiClientVerifier;
use rustls::server::danger::{ClientCertVerified, ClientCertVerifier};
use rustls::{DigitallySignedStruct, ServerConfig, SignatureScheme};

#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("reading {path}")]
    ReadPem {
        path: PathBuf,
        #[source]
        source: rustls::pki_types::pem::Error,
    },
    #[error("{path} holds no certificate")]
    NoCertificate { path: PathBuf },
    #[error("building the client certificate verifier from --client-ca-file")]
    BuildVerifier(#[source] rustls::server::VerifierBuilderError),
    #[error("adding a CA certificate from --client-ca-file")]
    AddCa(#[source] rustls::Error),
    #[error("configuring TLS with --tls-cert-file and --tls-private-key-file")]
    Configure(#[source] rustls::Error),
}

fn certs(path: &Path) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let certs = CertificateDer::pem_file_iter(path)
        .and_then(|it| it.collect::<Result<Vec<_>, _>>())
        .map_err(|source| TlsError::ReadPem {
            path: path.to_owned(),
            source,
        })?;
    if certs.is_empty() {
        return Err(TlsError::NoCertificate {
            path: path.to_owned(),
        });
    }
    Ok(certs)
}

/// Verifies client certificate chains after the handshake.
#[derive(Debug, Clone)]
pub struct ClientCerts {
    inner: Arc<dyn ClientCertVerifier>,
}

impl ClientCerts {
    /// Checks a presented chain (end entity first); `Err` says why it is not trusted.
    pub fn verify(&self, chain: &[CertificateDer<'_>]) -> Result<(), String> {
        let (end, rest) = chain.split_first().ok_or("no certificate presented")?;
        self.inner
            .verify_client_cert(end, rest, UnixTime::now())
            .map(|_| ())
            .map_err(|e| e.to_string())
    }
}

/// Accepts any certificate during the handshake (the signature over the handshake is still
/// checked, proving the client holds the key); trust is decided later by [`ClientCerts`].
#[derive(Debug)]
struct Deferred(Arc<dyn ClientCertVerifier>);

impl ClientCertVerifier for Deferred {
    fn client_auth_mandatory(&self) -> bool {
        false
    }
    fn root_hint_subjects(&self) -> &[DistinguishedName] {
        self.0.root_hint_subjects()
    }
    fn verify_client_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _now: UnixTime,
    ) -> Result<ClientCertVerified, rustls::Error> {
        Ok(ClientCertVerified::assertion())
    }
    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.0.verify_tls12_signature(message, cert, dss)
    }
    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.0.verify_tls13_signature(message, cert, dss)
    }
    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.supported_verify_schemes()
    }
}

/// The server's TLS config and, with `--client-ca-file`, the client certificate checker.
pub fn server_config(
    cert_file: &Path,
    key_file: &Path,
    client_ca: Option<&Path>,
) -> Result<(Arc<ServerConfig>, Option<ClientCerts>), TlsError> {
    let chain = certs(cert_file)?;
    let key = PrivateKeyDer::from_pem_file(key_file).map_err(|source| TlsError::ReadPem {
        path: key_file.to_owned(),
        source,
    })?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = ServerConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .map_err(TlsError::Configure)?;
    let (builder, checker) = match client_ca {
        Some(ca) => {
            let mut roots = rustls::RootCertStore::empty();
            for c in certs(ca)? {
                roots.add(c).map_err(TlsError::AddCa)?;
            }
            let inner = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider)
                .allow_unauthenticated()
                .build()
                .map_err(TlsError::BuildVerifier)?;
            let checker = ClientCerts {
                inner: inner.clone(),
            };
            (
                builder.with_client_cert_verifier(Arc::new(Deferred(inner))),
                Some(checker),
            )
        }
        None => (builder.with_no_client_auth(), None),
    };
    let mut cfg = builder
        .with_single_cert(chain, key)
        .map_err(TlsError::Configure)?;
    cfg.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok((Arc::new(cfg), checker))
}
