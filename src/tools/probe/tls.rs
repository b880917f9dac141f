//! The TLS half of a probe: connect, handshake with the kubeconfig's CA and client
//! certificate, and record what the server presented and whether it verified — even when it
//! did not, because that is when a learner needs to see it.

use std::net::ToSocketAddrs;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rustls::client::WebPkiServerVerifier;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use rustls::{DigitallySignedStruct, RootCertStore, SignatureScheme};
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;
use tokio_rustls::client::TlsStream;

use super::Error;
use crate::pki::AnyServer;

/// What the client brings to the handshake.
pub struct ClientSide {
    /// PEM of the CA(s) to trust; `None` with `insecure` skips verification (and says so).
    pub ca_pem: Option<Vec<u8>>,
    pub insecure: bool,
    /// PEM certificate chain and key for client-certificate authentication.
    pub identity: Option<(Vec<u8>, Vec<u8>)>,
    /// The name to check the server's certificate against (default: the URL's host).
    pub server_name: String,
}

/// What the handshake showed.
#[derive(Debug, Default)]
pub struct Seen {
    pub chain: Vec<Vec<u8>>,
    /// `None` when the handshake verified the server; else why it did not.
    pub verify_error: Option<rustls::Error>,
}

/// Wraps the real verifier (WebPKI against the CA, or `pki::AnyServer` with
/// `--insecure-skip-tls-verify`) to remember the chain and the verdict.
#[derive(Debug)]
struct Recording {
    inner: Arc<dyn ServerCertVerifier>,
    seen: Arc<Mutex<Seen>>,
}

impl ServerCertVerifier for Recording {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        let result =
            self.inner
                .verify_server_cert(end_entity, intermediates, server_name, ocsp, now);
        let mut seen = self.seen.lock().unwrap_or_else(|p| p.into_inner());
        seen.chain = std::iter::once(end_entity)
            .chain(intermediates)
            .map(|c| c.to_vec())
            .collect();
        seen.verify_error = result.as_ref().err().cloned();
        result
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.inner.supported_verify_schemes()
    }
}

/// A finished handshake: the stream, and the facts about it.
pub struct Connected {
    pub stream: TlsStream<TcpStream>,
    pub protocol: String,
    pub cipher: String,
    pub connect: Duration,
    pub handshake: Duration,
}

fn pem_certs(pem: &[u8]) -> Result<Vec<CertificateDer<'static>>, Error> {
    use rustls::pki_types::pem::PemObject;
    CertificateDer::pem_slice_iter(pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| Error::Credentials(format!("reading PEM certificates: {e}")))
}

/// Connects to `host:port` and shakes hands. Returns what was seen in every case, and the
/// connection when the handshake succeeded.
pub async fn connect(
    host: &str,
    port: u16,
    client: &ClientSide,
    timeout: Duration,
) -> (Seen, Result<Connected, Error>) {
    let seen = Arc::new(Mutex::new(Seen::default()));
    let result = handshake(host, port, client, timeout, seen.clone()).await;
    let seen = std::mem::take(&mut *seen.lock().unwrap_or_else(|p| p.into_inner()));
    (seen, result)
}

async fn handshake(
    host: &str,
    port: u16,
    client: &ClientSide,
    timeout: Duration,
    seen: Arc<Mutex<Seen>>,
) -> Result<Connected, Error> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let inner: Arc<dyn ServerCertVerifier> = match (&client.ca_pem, client.insecure) {
        (_, true) => Arc::new(AnyServer::new(provider.clone())),
        (Some(pem), false) => {
            let mut roots = RootCertStore::empty();
            for cert in pem_certs(pem)? {
                roots
                    .add(cert)
                    .map_err(|e| Error::Credentials(format!("the CA certificate: {e}")))?;
            }
            WebPkiServerVerifier::builder_with_provider(Arc::new(roots), provider.clone())
                .build()
                .map_err(|e| Error::Credentials(format!("the CA certificate: {e}")))?
        }
        (None, false) => {
            return Err(Error::Credentials(
                "no CA to verify the server with: the kubeconfig names none (pass --cacert FILE)"
                    .into(),
            ));
        }
    };
    let verifier = Arc::new(Recording { inner, seen });
    let builder = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| Error::Credentials(e.to_string()))?
        .dangerous()
        .with_custom_certificate_verifier(verifier);
    let config = match &client.identity {
        Some((cert, key)) => {
            use rustls::pki_types::pem::PemObject;
            let key = PrivateKeyDer::from_pem_slice(key)
                .map_err(|e| Error::Credentials(format!("reading the client key: {e}")))?;
            builder
                .with_client_auth_cert(pem_certs(cert)?, key)
                .map_err(|e| Error::Credentials(format!("the client certificate and key: {e}")))?
        }
        None => builder.with_no_client_auth(),
    };
    let name = ServerName::try_from(client.server_name.clone()).map_err(|_| {
        Error::Credentials(format!(
            "\"{}\" is not a valid server name",
            client.server_name
        ))
    })?;

    let started = Instant::now();
    let addr = (host, port)
        .to_socket_addrs()
        .map_err(|source| Error::Resolve {
            host: host.into(),
            source,
        })?
        .next()
        .ok_or_else(|| Error::Resolve {
            host: host.into(),
            source: std::io::Error::other("no address"),
        })?;
    let tcp = tokio::time::timeout(timeout, TcpStream::connect(addr))
        .await
        .map_err(|_| Error::Timeout {
            addr: addr.to_string(),
        })?
        .map_err(|source| Error::Connect {
            addr: addr.to_string(),
            source,
        })?;
    let connect = started.elapsed();
    let started = Instant::now();
    let stream = tokio::time::timeout(
        timeout,
        TlsConnector::from(Arc::new(config)).connect(name, tcp),
    )
    .await
    .map_err(|_| Error::Timeout {
        addr: addr.to_string(),
    })?
    .map_err(Error::Handshake)?;
    let handshake = started.elapsed();
    let (_, conn) = stream.get_ref();
    let protocol = conn
        .protocol_version()
        .map(|v| format!("{v:?}"))
        .unwrap_or_default();
    let cipher = conn
        .negotiated_cipher_suite()
        .map(|c| format!("{:?}", c.suite()))
        .unwrap_or_default();
    Ok(Connected {
        stream,
        protocol: protocol.replace("TLSv1_", "TLSv1."),
        cipher,
        connect,
        handshake,
    })
}
