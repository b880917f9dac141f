//! How every klab component reaches the API server: kube-rs, configured from a kubeconfig,
//! exactly as a controller written against upstream Kubernetes would be.
//!
//! Components talk only through the API server (see the architecture chapter); this is the
//! one place that turns a `--kubeconfig` flag into a client.

use std::path::{Path, PathBuf};

/// Why no client could be made from a kubeconfig.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("reading kubeconfig {}", path.display())]
    Read {
        path: PathBuf,
        #[source]
        source: kube::config::KubeconfigError,
    },
    #[error("using kubeconfig {}", path.display())]
    Config {
        path: PathBuf,
        #[source]
        source: kube::config::KubeconfigError,
    },
    #[error("building an API client from kubeconfig {}", path.display())]
    Client {
        path: PathBuf,
        #[source]
        source: kube::Error,
    },
}

/// A client for the API server and identity that `kubeconfig` names (its current context).
pub async fn from_kubeconfig(kubeconfig: &Path) -> Result<kube::Client, Error> {
    let path = kubeconfig.to_path_buf();
    let kc = kube::config::Kubeconfig::read_from(kubeconfig).map_err(|source| Error::Read {
        path: path.clone(),
        source,
    })?;
    let options = kube::config::KubeConfigOptions::default();
    let config = kube::Config::from_custom_kubeconfig(kc, &options)
        .await
        .map_err(|source| Error::Config {
            path: path.clone(),
            source,
        })?;
    kube::Client::try_from(config).map_err(|source| Error::Client { path, source })
}
