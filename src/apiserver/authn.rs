//! Authentication: who is asking. x509 client certificates, static bearer tokens, anonymous.
//!
//! Mirrors the apiserver's `authentication/request/x509` (CN is the user, each O a group, the
//! chain verified against `--client-ca-file` with the client-auth usage), `token/tokenfile`
//! (`--token-auth-file` CSV lines `token,user,uid,"group1,group2"`) and `anonymous`
//! (`system:anonymous` in `system:unauthenticated`, only with `--anonymous-auth=true`).
//! Leaves out service-account tokens, OIDC, webhooks and impersonation.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

/// The authenticated user, as RBAC and `kubectl auth whoami` see it.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct UserInfo {
    pub name: String,
    pub uid: String,
    pub groups: Vec<String>,
}

impl UserInfo {
    /// Adds `system:authenticated`, as upstream does for every authenticated user.
    pub fn authenticated(name: String, uid: String, mut groups: Vec<String>) -> Self {
        if !groups.iter().any(|g| g == "system:authenticated") {
            groups.push("system:authenticated".into());
        }
        UserInfo { name, uid, groups }
    }

    pub fn anonymous() -> Self {
        UserInfo {
            name: "system:anonymous".into(),
            uid: String::new(),
            groups: vec!["system:unauthenticated".into()],
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum TokenFileError {
    #[error("reading --token-auth-file {path}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("--token-auth-file {path} line {line}: expected at least token,user,uid")]
    Parse { path: PathBuf, line: usize },
}

/// Splits one CSV line, honouring double quotes (the groups column is quoted).
fn csv_fields(line: &str) -> Vec<String> {
    let (mut fields, mut cur, mut quoted) = (Vec::new(), String::new(), false);
    for c in line.chars() {
        match c {
            '"' => quoted = !quoted,
            ',' if !quoted => fields.push(std::mem::take(&mut cur)),
            _ => cur.push(c),
        }
    }
    fields.push(cur);
    fields.into_iter().map(|f| f.trim().to_owned()).collect()
}

/// Reads `--token-auth-file` into token → user.
pub fn load_tokens(path: &Path) -> Result<HashMap<String, UserInfo>, TokenFileError> {
    let text = std::fs::read_to_string(path).map_err(|source| TokenFileError::Read {
        path: path.to_owned(),
        source,
    })?;
    let mut out = HashMap::new();
    for (i, line) in text.lines().enumerate() {
        if line.trim().is_empty() || line.trim_start().starts_with('#') {
            continue;
        }
        let f = csv_fields(line);
        if f.len() < 3 || f[0].is_empty() || f[1].is_empty() {
            return Err(TokenFileError::Parse {
                path: path.to_owned(),
                line: i + 1,
            });
        }
        let groups = f
            .get(3)
            .map(|g| {
                g.split(',')
                    .filter(|s| !s.is_empty())
                    .map(str::to_owned)
                    .collect()
            })
            .unwrap_or_default();
        out.insert(
            f[0].clone(),
            UserInfo::authenticated(f[1].clone(), f[2].clone(), groups),
        );
    }
    Ok(out)
}

/// The user named by a verified client certificate: CN, and one group per O.
pub fn user_from_cert(der: &[u8]) -> Option<UserInfo> {
    let (_, cert) = x509_parser::parse_x509_certificate(der).ok()?;
    let subject = cert.subject();
    let name = subject
        .iter_common_name()
        .next()
        .and_then(|cn| cn.as_str().ok())?
        .to_owned();
    let groups = subject
        .iter_organization()
        .filter_map(|o| o.as_str().ok().map(str::to_owned))
        .collect();
    Some(UserInfo::authenticated(name, String::new(), groups))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn token_file_lines() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("tokens.csv");
        std::fs::write(&p, "abc,alice,1001,\"dev,ops\"\n# comment\nxyz,bob,1002\n").unwrap();
        let t = load_tokens(&p).unwrap();
        assert_eq!(t["abc"].groups, ["dev", "ops", "system:authenticated"]);
        assert_eq!(t["xyz"].name, "bob");
        std::fs::write(&p, "lonely\n").unwrap();
        assert!(load_tokens(&p).is_err());
    }
}
