//! The node's container runtime, as the kubelet sees it: a CRI v1 client ([`cri`]) talking
//! to a real containerd that klab starts with its own config ([`containerd`]), the CNI
//! bridge network it needs ([`cni`]), and the local images a node without a registry needs
//! ([`images`]).
//!
//! Mirrors what kind does on each node: containerd with the CRI plugin, CNI bridge plus
//! portmap, images preloaded instead of pulled. Only the kubelet (and `klab up` preparing a
//! node) use this module; everything else reaches pods through the API server.

pub mod cni;
pub mod containerd;
pub mod cri;
pub mod images;

use std::path::PathBuf;

/// What can fail between klab and the runtime, by step.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(
        "{program} is not installed (looked in PATH): install it with `apt-get install {package}`"
    )]
    NotInstalled {
        program: &'static str,
        package: &'static str,
    },
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
    #[error("starting containerd")]
    Spawn(#[source] std::io::Error),
    #[error("containerd exited before it was ready ({status}); last lines of {}:\n{tail}", log.display())]
    Exited {
        status: String,
        log: PathBuf,
        tail: String,
    },
    #[error("containerd did not create its socket {} within {seconds}s; see {}", socket.display(), log.display())]
    NotReady {
        socket: PathBuf,
        log: PathBuf,
        seconds: u64,
    },
    #[error("connecting to the CRI socket {}", socket.display())]
    Connect {
        socket: PathBuf,
        #[source]
        source: tonic::transport::Error,
    },
    #[error("CRI {call} failed: {}", status.message())]
    Cri {
        call: &'static str,
        status: tonic::Status,
    },
    #[error("the runtime's network is not ready after {seconds}s: {reason}")]
    NetworkNotReady { seconds: u64, reason: String },
    #[error("importing image {} with ctr failed: {stderr}", file.display())]
    Import { file: PathBuf, stderr: String },
    #[error("running {command}")]
    Command {
        command: String,
        #[source]
        source: std::io::Error,
    },
}

/// Finds a program in PATH, or says which Debian package brings it.
pub fn which(program: &'static str, package: &'static str) -> Result<PathBuf, Error> {
    std::env::var_os("PATH")
        .and_then(|paths| {
            std::env::split_paths(&paths)
                .map(|d| d.join(program))
                .find(|p| p.is_file())
        })
        .ok_or(Error::NotInstalled { program, package })
}
