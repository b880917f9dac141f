//! Benchmarks as commands: each runs klab's component and its upstream counterpart in the same
//! run, with the same settings, and prints them side by side with the ratio.

pub mod api;
pub mod pods;
pub mod proxy;
pub mod scheduler;
pub mod store;
pub mod up;

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// Processes a benchmark started: killed (newest first) and their folder removed when dropped.
pub(crate) struct Procs {
    pub children: Vec<Child>,
    pub dir: PathBuf,
}

impl Drop for Procs {
    fn drop(&mut self) {
        for c in self.children.iter_mut().rev() {
            let _ = c.kill();
            let _ = c.wait();
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// A loopback port that was free a moment ago.
pub(crate) fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map_or(0, |a| a.port())
}

/// A process a benchmark needs that did not start or did not come up.
#[derive(Debug, thiserror::Error)]
pub enum ProcessError {
    #[error("starting {what}")]
    Start {
        what: String,
        #[source]
        source: std::io::Error,
    },
    #[error("{what} did not become ready within 30 s")]
    NotReady { what: String },
}

/// Starts `cmd` with its output discarded (a benchmark prints only its table).
pub(crate) fn spawn(what: &str, cmd: &mut Command) -> Result<Child, ProcessError> {
    cmd.stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .map_err(|source| ProcessError::Start {
            what: what.to_owned(),
            source,
        })
}

/// Waits up to 30 seconds for `what` to listen on loopback `port`.
pub(crate) async fn wait_port(port: u16, what: &str) -> Result<(), ProcessError> {
    let deadline = Instant::now() + Duration::from_secs(30);
    while tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .is_err()
    {
        if Instant::now() > deadline {
            return Err(ProcessError::NotReady {
                what: what.to_owned(),
            });
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    Ok(())
}
