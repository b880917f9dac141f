//! A learner's progress through a lab, kept in the cluster folder as `lab-progress.json` so
//! they can stop and come back; klab's own. Written atomically (a temporary file, then rename).

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

pub const FILE: &str = "lab-progress.json";

#[derive(Debug, thiserror::Error)]
pub enum ProgressError {
    #[error("reading {}", path.display())]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{} is not klab's progress file (delete it, or run `klab lab reset`)", path.display())]
    Parse {
        path: PathBuf,
        #[source]
        source: serde_json::Error,
    },
    #[error("writing {}", path.display())]
    Write {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

/// Where a learner is.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Progress {
    /// The lab's folder name.
    pub lab: String,
    /// The current step, counted from 1; one past the last when the lab is done.
    pub step: usize,
    /// How many hints of the current step were shown.
    pub hints_shown: usize,
    /// When the lab was started (RFC 3339).
    pub started: String,
    /// Whether the current step's setup ran.
    #[serde(default)]
    pub setup_done: bool,
}

impl Progress {
    pub fn path(cluster_dir: &Path) -> PathBuf {
        cluster_dir.join(FILE)
    }

    /// The saved progress, or `None` when no lab was started.
    pub fn load(cluster_dir: &Path) -> Result<Option<Progress>, ProgressError> {
        let path = Self::path(cluster_dir);
        let text = match std::fs::read(&path) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(source) => return Err(ProgressError::Read { path, source }),
        };
        serde_json::from_slice(&text)
            .map(Some)
            .map_err(|source| ProgressError::Parse { path, source })
    }

    /// Writes the progress: to a temporary file beside it, then renamed over it.
    pub fn save(&self, cluster_dir: &Path) -> Result<(), ProgressError> {
        let path = Self::path(cluster_dir);
        let mut text = serde_json::to_vec_pretty(self).unwrap_or_default();
        text.push(b'\n');
        write_atomic(&path, &text).map_err(|source| ProgressError::Write { path, source })
    }

    /// Forgets the progress.
    pub fn remove(cluster_dir: &Path) -> Result<(), ProgressError> {
        let path = Self::path(cluster_dir);
        match std::fs::remove_file(&path) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(source) => Err(ProgressError::Write { path, source }),
        }
    }
}

/// Writes `data` to `path` so that a reader sees the old file or the new one, never half.
pub fn write_atomic(path: &Path, data: &[u8]) -> std::io::Result<()> {
    use std::io::Write;
    let dir = path.parent().unwrap_or(Path::new("."));
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let tmp = dir.join(format!(".{name}.{}.tmp", std::process::id()));
    let result = (|| {
        let mut f = std::fs::File::create(&tmp)?;
        f.write_all(data)?;
        f.sync_all()?;
        std::fs::rename(&tmp, path)
    })();
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    result
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn progress_round_trips_and_leaves_no_temporary_file() {
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(Progress::load(dir.path()).unwrap(), None);
        let p = Progress {
            lab: "03-the-store".into(),
            step: 2,
            hints_shown: 1,
            started: "2026-12-01T00:00:00Z".into(),
            setup_done: true,
        };
        p.save(dir.path()).unwrap();
        assert_eq!(Progress::load(dir.path()).unwrap(), Some(p));
        let names: Vec<_> = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names, [FILE]);
        Progress::remove(dir.path()).unwrap();
        assert_eq!(Progress::load(dir.path()).unwrap(), None);
    }
}
