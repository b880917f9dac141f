//! Finding and reading kubeconfig files: `--kubeconfig`, then `$KUBECONFIG`, then `~/.kube/config`,
//! as client-go's loading rules do.

use std::path::{Path, PathBuf};

use super::{Error, Kubeconfig, Merged};

/// Where to look for kubeconfig files.
#[derive(Debug, Clone, Default)]
pub struct Source {
    /// `--kubeconfig`: exactly this file, which must exist.
    pub explicit: Option<PathBuf>,
    /// `$KUBECONFIG`: a `:`-separated list, merged; files that do not exist are skipped.
    pub env: Option<String>,
    /// `$HOME`, for the `~/.kube/config` default.
    pub home: Option<PathBuf>,
}

impl Source {
    /// The process's own environment.
    pub fn from_env(explicit: Option<PathBuf>) -> Self {
        Source {
            explicit,
            env: std::env::var("KUBECONFIG").ok(),
            home: std::env::var_os("HOME").map(PathBuf::from),
        }
    }
}

fn read_one(path: &Path) -> Result<Kubeconfig, Error> {
    let text = std::fs::read_to_string(path).map_err(|source| Error::Read {
        path: path.to_path_buf(),
        source,
    })?;
    if text.trim().is_empty() {
        // kubectl treats an empty file as an empty config.
        return Ok(Kubeconfig::default());
    }
    serde_yaml::from_str(&text).map_err(|source| Error::Parse {
        path: path.to_path_buf(),
        source,
    })
}

/// Loads and merges the kubeconfig files that `source` designates.
pub fn load(source: &Source) -> Result<Merged, Error> {
    let mut merged = Merged::default();
    if let Some(path) = &source.explicit {
        merged.merge(path, read_one(path)?);
        return Ok(merged);
    }
    let listed: Vec<PathBuf> = source
        .env
        .as_deref()
        .unwrap_or("")
        .split(':')
        .filter(|p| !p.is_empty())
        .map(PathBuf::from)
        .collect();
    let candidates = if listed.is_empty() {
        let home = source
            .home
            .clone()
            .unwrap_or_else(|| PathBuf::from("/root"));
        vec![home.join(".kube").join("config")]
    } else {
        listed
    };
    for path in &candidates {
        if path.exists() {
            merged.merge(path, read_one(path)?);
        }
    }
    if merged.files.is_empty() {
        let tried = candidates
            .iter()
            .map(|p| p.display().to_string())
            .collect::<Vec<_>>();
        return Err(Error::NotFound {
            tried: tried.join(", "),
        });
    }
    Ok(merged)
}
