//! Listeners and connections: HTTPS on `--secure-port`, and the legacy `--insecure-port`.
//!
//! Mirrors the apiserver's `SecureServingInfo`: TLS via rustls, HTTP/1.1 and HTTP/2 chosen by
//! ALPN, the client certificate checked once per connection. The insecure port (removed
//! upstream in 1.20, kept here because the course's seed shows it) serves plain HTTP on
//! 127.0.0.1 only, with no authentication or authorization, and says so loudly.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;

use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use rustls::ServerConfig;
use tokio::net::TcpListener;
use tokio_rustls::TlsAcceptor;

use super::authn::UserInfo;
use super::{ApiserverError, State, handler};
use crate::cli::ApiserverArgs;

/// What the connection says about its client, before any request is read.
#[derive(Debug, Clone)]
pub enum Peer {
    /// No client certificate was presented.
    NoCert,
    /// A certificate chained to `--client-ca-file`: this user.
    Cert(UserInfo),
    /// A certificate that did not verify: why.
    BadCert(String),
    /// The insecure port: no authentication, no authorization.
    Insecure,
}

async fn bind(addr: String) -> Result<TcpListener, ApiserverError> {
    TcpListener::bind(&addr)
        .await
        .map_err(|source| ApiserverError::Listen { addr, source })
}

fn peer_of(state: &State, conn: &rustls::ServerConnection) -> Peer {
    let Some(chain) = conn.peer_certificates() else {
        return Peer::NoCert;
    };
    let Some(checker) = &state.client_certs else {
        return Peer::NoCert;
    };
    match checker.verify(chain) {
        Ok(()) => match super::authn::user_from_cert(&chain[0]) {
            Some(u) => Peer::Cert(u),
            None => Peer::BadCert("the certificate has no common name".into()),
        },
        Err(e) => Peer::BadCert(e),
    }
}

async fn serve_conn<I>(state: Arc<State>, io: I, peer: Peer, remote: SocketAddr)
where
    I: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let svc = service_fn(move |req| {
        let (state, peer) = (state.clone(), peer.clone());
        async move { Ok::<_, Infallible>(handler::handle(state, peer, remote, req).await) }
    });
    let _ = auto::Builder::new(TokioExecutor::new())
        .serve_connection_with_upgrades(TokioIo::new(io), svc)
        .await;
}

/// Serves until SIGINT or SIGTERM.
pub async fn serve(
    state: Arc<State>,
    args: &ApiserverArgs,
    tls: Arc<ServerConfig>,
) -> Result<(), ApiserverError> {
    let addr = if args.bind_address.contains(':') {
        format!("[{}]:{}", args.bind_address, args.secure_port)
    } else {
        format!("{}:{}", args.bind_address, args.secure_port)
    };
    let secure = bind(addr.clone()).await?;
    eprintln!("kube-apiserver: serving securely on {addr}");
    if args.insecure_port != 0 {
        let insecure_addr = format!("127.0.0.1:{}", args.insecure_port);
        let insecure = bind(insecure_addr.clone()).await?;
        eprintln!(
            "WARNING: --insecure-port={}: serving plain HTTP on {insecure_addr} with NO authentication and NO authorization; anyone on this machine is cluster-admin. Upstream removed this port in 1.20.",
            args.insecure_port
        );
        let state = state.clone();
        tokio::spawn(async move {
            while let Ok((stream, remote)) = insecure.accept().await {
                let _ = stream.set_nodelay(true);
                tokio::spawn(serve_conn(state.clone(), stream, Peer::Insecure, remote));
            }
        });
    }
    let acceptor = TlsAcceptor::from(tls);
    let accept_loop = async {
        loop {
            let Ok((stream, remote)) = secure.accept().await else {
                continue;
            };
            let _ = stream.set_nodelay(true);
            let (state, acceptor) = (state.clone(), acceptor.clone());
            tokio::spawn(async move {
                let Ok(tls) = acceptor.accept(stream).await else {
                    return;
                };
                let peer = peer_of(&state, tls.get_ref().1);
                serve_conn(state, tls, peer, remote).await;
            });
        }
    };
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .map_err(|source| ApiserverError::Listen {
            addr: "SIGTERM handler".into(),
            source,
        })?;
    tokio::select! {
        () = accept_loop => {}
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
    }
    eprintln!("kube-apiserver: shutting down");
    Ok(())
}
