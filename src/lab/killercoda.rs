//! `klab lab export --killercoda`: a lab as a Killercoda scenario (klab's own mapping onto
//! Killercoda's format: `index.json` with `details.intro`, `details.steps[]` of `text` and
//! `verify` files, `details.finish`, and `backend.imageid`).
//!
//! The verify scripts call `klab lab check --step N`, the same checks as on a laptop; the
//! intro's background script starts the lab. The scenario assumes an image with klab, kubectl
//! and etcdctl installed (Killercoda's `ubuntu` image plus an install step you add): klab does
//! not download itself.

use std::path::{Path, PathBuf};

use serde_json::json;

use super::progress::write_atomic;
use super::spec::Lab;

#[derive(Debug, thiserror::Error)]
#[error("writing {}", path.display())]
pub struct ExportError {
    pub path: PathBuf,
    #[source]
    pub source: std::io::Error,
}

/// The scenario's files, as (relative path, contents, executable).
pub fn files(lab: &Lab) -> Vec<(String, String, bool)> {
    let x = |t: &str| super::cluster::expand(t.trim(), "klab", "/root/.klab/klab");
    let mut files = vec![];
    let mut steps = vec![];
    for (i, s) in lab.steps.iter().enumerate() {
        let n = i + 1;
        let mut text = format!("# {}\n\n{}\n\n", s.title, x(&s.instructions));
        for (j, h) in s.hints.iter().enumerate() {
            text.push_str(&format!(
                "<details><summary>Hint {}</summary>\n\n{}\n\n</details>\n\n",
                j + 1,
                x(h)
            ));
        }
        text.push_str(&format!(
            "<details><summary>Solution</summary>\n\n```plain\n{}\n```{{{{exec}}}}\n\n</details>\n",
            x(&s.solution)
        ));
        files.push((format!("step{n}/text.md"), text, false));
        files.push((
            format!("step{n}/verify.sh"),
            format!(
                "#!/bin/sh\n# The same checks as `klab lab check` on step {n} of {}; it also moves the lab on.\nexec klab lab check --step {n}\n",
                lab.name
            ),
            true,
        ));
        steps.push(json!({
            "title": s.title,
            "text": format!("step{n}/text.md"),
            "verify": format!("step{n}/verify.sh"),
        }));
    }
    files.push((
        "intro.md".into(),
        format!(
            "# {}\n\n*{} · about {} minutes*\n\n{}\n\nThe cluster and the lab are being prepared in the background (`klab lab start {}`); `klab lab status` shows where you are.\n",
            lab.title,
            lab.level.as_str(),
            lab.minutes(),
            x(&lab.intro),
            lab.name
        ),
        false,
    ));
    files.push((
        "setup.sh".into(),
        format!(
            "#!/bin/sh\n# Starts the cluster (klab up) and the lab; klab must be installed in the image.\nklab lab start {} > /tmp/klab-lab-start.log 2>&1\n",
            lab.name
        ),
        true,
    ));
    files.push((
        "finish.md".into(),
        format!(
            "# Done\n\n{}\n",
            x(lab.finish.as_deref().unwrap_or("Every step passed."))
        ),
        false,
    ));
    let index = json!({
        "title": lab.title,
        "description": first_sentence(&lab.intro),
        "details": {
            "intro": {"text": "intro.md", "background": "setup.sh"},
            "steps": steps,
            "finish": {"text": "finish.md"},
        },
        "backend": {"imageid": "ubuntu"},
    });
    let mut index = serde_json::to_string_pretty(&index).unwrap_or_default();
    index.push('\n');
    files.insert(0, ("index.json".into(), index, false));
    files
}

fn first_sentence(text: &str) -> String {
    let flat = text.split_whitespace().collect::<Vec<_>>().join(" ");
    match flat.find(". ") {
        Some(i) => flat[..=i].to_owned(),
        None => flat,
    }
}

/// Writes the scenario into `dir` (created if needed), each file atomically.
pub fn export(lab: &Lab, dir: &Path) -> Result<Vec<PathBuf>, ExportError> {
    let mut written = vec![];
    for (rel, text, exec) in files(lab) {
        let path = dir.join(&rel);
        let err = |source| ExportError {
            path: path.clone(),
            source,
        };
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent).map_err(err)?;
        }
        write_atomic(&path, text.as_bytes()).map_err(err)?;
        if exec {
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).map_err(err)?;
        }
        written.push(path);
    }
    Ok(written)
}
