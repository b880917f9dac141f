//! A TLS verifier that accepts any server certificate and still checks the handshake's
//! signatures: Go's `tls.Config{InsecureSkipVerify: true}` as upstream uses it in the kubelet's
//! HTTPS prober (`pkg/probe/http`), in the API server's kubelet client without
//! `--kubelet-certificate-authority`, and towards `https:` backends of pods/proxy and
//! services/proxy.

use std::sync::Arc;

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::CryptoProvider;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{DigitallySignedStruct, SignatureScheme};

/// Accepts whatever certificate the server presents, for any name, at any time; only the
/// handshake's signatures are checked (with the provider's algorithms), so the peer must still
/// hold the key of the certificate it showed.
///
/// Right where the question is "does it answer", not "who is it", or where upstream knowingly
/// does the same:
/// - HTTPS liveness, readiness and startup probes: the kubelet's prober never verifies the
///   pod's certificate (pods serve self-signed ones; the pod IP is the identity);
/// - the API server reaching kubelets without `--kubelet-certificate-authority` (upstream's
///   default: kubelets serve self-signed certificates);
/// - `klab probe --insecure-skip-tls-verify` (kubectl's flag), which says so in its report.
///
/// Wrong everywhere else: a client that sends a token or a secret, or acts on what the server
/// answers, must verify the server against a CA (a kubeconfig's `certificate-authority-data`,
/// `--kubelet-certificate-authority`), or anyone on the path can be that server.
#[derive(Debug)]
pub struct AnyServer(Arc<CryptoProvider>);

impl AnyServer {
    /// A verifier that checks handshake signatures with `provider`'s algorithms.
    pub fn new(provider: Arc<CryptoProvider>) -> AnyServer {
        AnyServer(provider)
    }
}

impl ServerCertVerifier for AnyServer {
    fn verify_server_cert(
        &self,
        _: &CertificateDer<'_>,
        _: &[CertificateDer<'_>],
        _: &ServerName<'_>,
        _: &[u8],
        _: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}
