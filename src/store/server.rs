//! The `klab-store` process: flags to listeners, TLS, the metrics endpoint, background loops.
//!
//! Mirrors etcd's `embed` package for a single member: one gRPC server per
//! `--listen-client-urls` entry (http or https, with client-certificate checks when
//! `--client-cert-auth` is set), `/metrics` and `/health` on `--listen-metrics-urls`.
//! Leaves out peer URLs (there are no peers) and HTTP on the client port.

use std::net::SocketAddr;
use std::path::PathBuf;

use tokio::net::TcpListener;
use tokio::task::JoinHandle;
use tonic::transport::server::TcpIncoming;
use tonic::transport::{Certificate, Identity, Server, ServerTlsConfig};

use super::backend::Store;
use super::grpc::Services;
use super::wal::WalError;
use super::{compactor, metrics_http};
use crate::cli::StoreArgs;

#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    #[error("opening the data directory")]
    OpenData(#[source] WalError),
    #[error(transparent)]
    ParseFlag(#[from] compactor::ParseFlagError),
    #[error(
        "invalid --experimental-watch-progress-notify-interval {0:?}: use a duration (\"10m\")"
    )]
    ParseProgressInterval(String),
    #[error("invalid listen URL {url:?}: expected http://HOST:PORT or https://HOST:PORT")]
    ParseUrl { url: String },
    #[error("{url} is https, but --cert-file and --key-file are not both set")]
    MissingCert { url: String },
    #[error("reading {path}")]
    ReadTlsFile {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("--client-cert-auth needs --trusted-ca-file")]
    MissingTrustedCa,
    #[error("listening on {url}")]
    Listen {
        url: String,
        #[source]
        source: std::io::Error,
    },
    #[error("configuring TLS for {url}")]
    ConfigureTls {
        url: String,
        #[source]
        source: tonic::transport::Error,
    },
    #[error("starting the async runtime")]
    StartRuntime(#[source] std::io::Error),
}

/// A listen URL split into whether it is TLS and its address.
fn parse_url(url: &str) -> Result<(bool, String), ServeError> {
    let bad = || ServeError::ParseUrl {
        url: url.to_owned(),
    };
    let (tls, rest) = if let Some(r) = url.strip_prefix("https://") {
        (true, r)
    } else if let Some(r) = url.strip_prefix("http://") {
        (false, r)
    } else {
        return Err(bad());
    };
    let host_port = rest.split('/').next().unwrap_or_default();
    if !host_port.contains(':') {
        return Err(bad());
    }
    Ok((tls, host_port.to_owned()))
}

async fn bind(url: &str, addr: &str) -> Result<TcpListener, ServeError> {
    TcpListener::bind(addr)
        .await
        .map_err(|source| ServeError::Listen {
            url: url.to_owned(),
            source,
        })
}

fn read(path: &PathBuf) -> Result<Vec<u8>, ServeError> {
    std::fs::read(path).map_err(|source| ServeError::ReadTlsFile {
        path: path.clone(),
        source,
    })
}

fn tls_config(args: &StoreArgs, url: &str) -> Result<ServerTlsConfig, ServeError> {
    let (Some(cert), Some(key)) = (&args.cert_file, &args.key_file) else {
        return Err(ServeError::MissingCert {
            url: url.to_owned(),
        });
    };
    let mut cfg = ServerTlsConfig::new().identity(Identity::from_pem(read(cert)?, read(key)?));
    if args.client_cert_auth {
        let ca = args
            .trusted_ca_file
            .as_ref()
            .ok_or(ServeError::MissingTrustedCa)?;
        cfg = cfg.client_ca_root(Certificate::from_pem(read(ca)?));
    }
    Ok(cfg)
}

/// Runs the store until SIGINT or SIGTERM.
pub fn run(args: StoreArgs) -> Result<(), ServeError> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(ServeError::StartRuntime)?;
    runtime.block_on(serve(args))
}

async fn serve(args: StoreArgs) -> Result<(), ServeError> {
    let running = start(&args).await?;
    eprintln!(
        "klab-store: ready to serve client requests on {} (member {:x}, revision {})",
        args.listen_client_urls.join(","),
        running.store.0.ids.member_id,
        running.store.visible()
    );
    shutdown_signal().await;
    eprintln!("klab-store: received signal, shutting down");
    running.stop().await;
    Ok(())
}

/// A store serving in this process: what `klab-store` runs, and what in-process tests start.
pub struct Running {
    pub store: Store,
    /// The bound client addresses, in `--listen-client-urls` order (port 0 resolved).
    pub client_addrs: Vec<SocketAddr>,
    /// The bound metrics addresses, in `--listen-metrics-urls` order.
    pub metrics_addrs: Vec<SocketAddr>,
    stop: tokio::sync::watch::Sender<bool>,
    servers: Vec<JoinHandle<()>>,
    background: Vec<JoinHandle<()>>,
}

impl Running {
    /// Stops serving; every write acknowledged so far is already on disk.
    pub async fn stop(self) {
        let _ = self.stop.send(true);
        self.store.close();
        for s in self.servers {
            let _ = s.await;
        }
        for b in self.background {
            b.abort();
        }
    }
}

/// Opens the data directory and serves on every listen URL.
pub async fn start(args: &StoreArgs) -> Result<Running, ServeError> {
    let retention =
        compactor::parse_retention(&args.auto_compaction_mode, &args.auto_compaction_retention)?;
    let progress = match &args.experimental_watch_progress_notify_interval {
        None => super::grpc::watch::PROGRESS_INTERVAL,
        Some(s) => crate::api::duration::parse(s)
            .filter(|d| !d.is_zero())
            .ok_or_else(|| ServeError::ParseProgressInterval(s.clone()))?,
    };
    let data_dir = args
        .data_dir
        .clone()
        .unwrap_or_else(|| PathBuf::from(format!("{}.etcd", args.name)));
    // No peer ever connects; the peer URLs only appear in `member list`, as etcd shows them.
    let peer_urls = match &args.ignored.initial_advertise_peer_urls {
        Some(urls) => urls.split(',').map(str::to_owned).collect(),
        None => vec!["http://localhost:2380".to_owned()],
    };
    let store = Store::open(
        &data_dir,
        &args.name,
        args.advertise_client_urls.clone(),
        peer_urls,
    )
    .map_err(ServeError::OpenData)?;
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let (mut servers, mut background) = (Vec::new(), Vec::new());
    let (mut client_addrs, mut metrics_addrs) = (Vec::new(), Vec::new());
    for url in &args.listen_client_urls {
        let (tls, addr) = parse_url(url)?;
        let listener = bind(url, &addr).await?;
        client_addrs.push(local_addr(url, &listener)?);
        let mut builder = Server::builder();
        if tls {
            let cfg = tls_config(args, url)?;
            builder = builder
                .tls_config(cfg)
                .map_err(|source| ServeError::ConfigureTls {
                    url: url.clone(),
                    source,
                })?;
        }
        let s = Services::new(&store, progress);
        let router = builder
            .add_service(s.kv)
            .add_service(s.watch)
            .add_service(s.lease)
            .add_service(s.maintenance)
            .add_service(s.cluster);
        let mut stop = stop_rx.clone();
        // Small responses (watch events) must leave at once, not wait for Nagle's algorithm.
        let incoming = TcpIncoming::from(listener).with_nodelay(Some(true));
        let shutdown = async move {
            let _ = stop.wait_for(|s| *s).await;
        };
        let url = url.clone();
        servers.push(tokio::spawn(async move {
            if let Err(e) = router
                .serve_with_incoming_shutdown(incoming, shutdown)
                .await
            {
                eprintln!("klab-store: serving {url}: {e}");
            }
        }));
    }
    for url in &args.listen_metrics_urls {
        let (tls, addr) = parse_url(url)?;
        if tls {
            return Err(ServeError::ParseUrl { url: url.clone() });
        }
        let listener = bind(url, &addr).await?;
        metrics_addrs.push(local_addr(url, &listener)?);
        background.push(tokio::spawn(metrics_http::serve(listener, store.clone())));
    }
    background.push(tokio::spawn(store.clone().expire_leases()));
    if let Some(r) = retention {
        background.push(tokio::spawn(compactor::run(store.clone(), r)));
    }
    Ok(Running {
        store,
        client_addrs,
        metrics_addrs,
        stop: stop_tx,
        servers,
        background,
    })
}

fn local_addr(url: &str, listener: &TcpListener) -> Result<SocketAddr, ServeError> {
    listener.local_addr().map_err(|source| ServeError::Listen {
        url: url.to_owned(),
        source,
    })
}

async fn shutdown_signal() {
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending().await,
        }
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The least powerful test of the whole server: in-process, port 0, the real client.
    #[tokio::test]
    async fn serves_in_process_and_releases_its_data_directory() {
        use clap::Parser;
        let dir = tempfile::tempdir().unwrap();
        let d = format!("--data-dir={}", dir.path().display());
        let cli = crate::cli::Cli::parse_from([
            "klab",
            "store",
            &d,
            "--listen-client-urls=http://127.0.0.1:0",
        ]);
        let crate::cli::Command::Store(args) = cli.command else {
            panic!("not a store command")
        };
        for round in 1..=2 {
            let running = start(&args).await.unwrap();
            let url = format!("http://{}", running.client_addrs[0]);
            let mut c = etcd_client::Client::connect([url], None).await.unwrap();
            let put = c.put("k", round.to_string(), None).await.unwrap();
            assert_eq!(
                put.header().unwrap().revision(),
                round + 1,
                "round {round} continues the history"
            );
            running.stop().await;
        }
    }

    #[test]
    fn listen_urls() {
        assert_eq!(
            parse_url("http://127.0.0.1:2379").unwrap(),
            (false, "127.0.0.1:2379".into())
        );
        assert_eq!(
            parse_url("https://localhost:2379/").unwrap(),
            (true, "localhost:2379".into())
        );
        assert!(parse_url("127.0.0.1:2379").is_err());
        assert!(parse_url("http://host").is_err());
    }
}
