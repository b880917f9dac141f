//! The labs klab ships (klab's own): `labs/*/lab.yaml` compiled into the binary, so a learner
//! needs no checkout; or read from a folder with `--labs-dir` while writing a lab.

use std::path::{Path, PathBuf};

use super::spec::{Lab, SpecError};

/// Every lab in `labs/`, as (folder name, text). tests/it/lab.rs checks this list against the
/// folder, so a new lab cannot be forgotten here.
pub const EMBEDDED: &[(&str, &str)] = &[
    (
        "01-the-team",
        include_str!("../../labs/01-the-team/lab.yaml"),
    ),
    (
        "02-the-front-door",
        include_str!("../../labs/02-the-front-door/lab.yaml"),
    ),
    (
        "03-the-memory",
        include_str!("../../labs/03-the-memory/lab.yaml"),
    ),
    (
        "04-desired-state",
        include_str!("../../labs/04-desired-state/lab.yaml"),
    ),
    (
        "05-no-coach",
        include_str!("../../labs/05-no-coach/lab.yaml"),
    ),
    (
        "06-player-down",
        include_str!("../../labs/06-player-down/lab.yaml"),
    ),
    (
        "07-passing-lanes",
        include_str!("../../labs/07-passing-lanes/lab.yaml"),
    ),
    (
        "08-no-brain",
        include_str!("../../labs/08-no-brain/lab.yaml"),
    ),
    (
        "09-expired-pass",
        include_str!("../../labs/09-expired-pass/lab.yaml"),
    ),
    (
        "10-a-pods-life",
        include_str!("../../labs/10-a-pods-life/lab.yaml"),
    ),
];

#[derive(Debug, thiserror::Error)]
pub enum CatalogError {
    #[error(transparent)]
    Spec(#[from] SpecError),
    #[error("reading the labs folder {}", path.display())]
    ReadDir {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{}: no lab folders (NN-name/lab.yaml) in it", .0.display())]
    Empty(PathBuf),
}

/// The labs, sorted by name: from `dir` when given, else the compiled-in ones.
pub fn load(dir: Option<&Path>) -> Result<Vec<Lab>, CatalogError> {
    let mut labs = match dir {
        None => EMBEDDED
            .iter()
            .map(|(name, text)| {
                Lab::parse(name, &Path::new("labs").join(name).join("lab.yaml"), text)
            })
            .collect::<Result<Vec<_>, _>>()?,
        Some(dir) => {
            let entries = std::fs::read_dir(dir).map_err(|source| CatalogError::ReadDir {
                path: dir.to_path_buf(),
                source,
            })?;
            let mut labs = vec![];
            for e in entries.flatten() {
                if e.path().join("lab.yaml").is_file() {
                    labs.push(Lab::load(&e.path())?);
                }
            }
            if labs.is_empty() {
                return Err(CatalogError::Empty(dir.to_path_buf()));
            }
            labs
        }
    };
    labs.sort_by(|a, b| a.name.cmp(&b.name));
    Ok(labs)
}
