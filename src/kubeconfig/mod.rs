//! Kubeconfig files as client-go's `clientcmd` reads them: the v1 `Config` schema, KUBECONFIG
//! merging (first file to define a name wins), file paths relative to the file that names them,
//! and resolving a context to its cluster and user.
//!
//! Left out: `preferences`, `extensions` and proxy settings, which no klab tool reads.

mod load;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use base64::Engine as _;
use serde::{Deserialize, Serialize};

pub use load::{Source, load};

/// Everything that can go wrong between a kubeconfig path and the bytes of a credential.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("reading kubeconfig {}", path.display())]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("parsing kubeconfig {} (is it YAML in kubectl's Config format?)", path.display())]
    Parse {
        path: PathBuf,
        #[source]
        source: serde_yaml::Error,
    },
    #[error(
        "no kubeconfig found: {tried} does not exist; pass --kubeconfig PATH or set KUBECONFIG"
    )]
    NotFound { tried: String },
    #[error("the kubeconfig has no current-context; pass --context NAME (contexts: {available})")]
    NoCurrentContext { available: String },
    #[error("context \"{name}\" not found in the kubeconfig (contexts: {available})")]
    ContextNotFound { name: String, available: String },
    #[error(
        "the kubeconfig's current-context \"{name}\" names no context; pass --context NAME \
         (contexts: {available})"
    )]
    CurrentContextNotFound { name: String, available: String },
    #[error(
        "context \"{context}\" names cluster \"{cluster}\", which the kubeconfig does not define"
    )]
    ClusterNotFound { context: String, cluster: String },
    #[error("context \"{context}\" names user \"{user}\", which the kubeconfig does not define")]
    UserNotFound { context: String, user: String },
    #[error("{field} in {} is not valid base64 (kubectl stores PEM files base64-encoded there)", file.display())]
    Base64 {
        field: &'static str,
        file: PathBuf,
        #[source]
        source: base64::DecodeError,
    },
    #[error("reading {field} file {} named in {}", path.display(), file.display())]
    ReadReferenced {
        field: &'static str,
        path: PathBuf,
        file: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

/// A kubeconfig file: the `Config` kind of `clientcmd/api/v1`.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Kubeconfig {
    #[serde(default, deserialize_with = "null_as_empty")]
    pub clusters: Vec<Named<Cluster>>,
    #[serde(default, deserialize_with = "null_as_empty")]
    pub users: Vec<Named<AuthInfo>>,
    #[serde(default, deserialize_with = "null_as_empty")]
    pub contexts: Vec<Named<Context>>,
    #[serde(
        rename = "current-context",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub current_context: Option<String>,
}

/// The `- name: x` / `cluster: {…}` pairs; the payload's key differs per list.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Named<T> {
    pub name: String,
    #[serde(alias = "cluster", alias = "user", alias = "context", default)]
    pub item: Option<T>,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub struct Cluster {
    pub server: Option<String>,
    pub certificate_authority: Option<String>,
    pub certificate_authority_data: Option<String>,
    pub insecure_skip_tls_verify: Option<bool>,
    pub tls_server_name: Option<String>,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub struct AuthInfo {
    pub client_certificate: Option<String>,
    pub client_certificate_data: Option<String>,
    pub client_key: Option<String>,
    pub client_key_data: Option<String>,
    pub token: Option<String>,
    #[serde(rename = "tokenFile")]
    pub token_file: Option<String>,
    pub username: Option<String>,
    pub password: Option<String>,
    pub exec: Option<ExecConfig>,
    pub auth_provider: Option<AuthProvider>,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct ExecConfig {
    pub command: Option<String>,
    #[serde(default, deserialize_with = "null_as_empty")]
    pub args: Vec<String>,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct AuthProvider {
    pub name: Option<String>,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Context {
    pub cluster: Option<String>,
    pub user: Option<String>,
    pub namespace: Option<String>,
}

fn null_as_empty<'de, D, T>(d: D) -> Result<Vec<T>, D::Error>
where
    D: serde::Deserializer<'de>,
    T: Deserialize<'de>,
{
    Ok(Option::<Vec<T>>::deserialize(d)?.unwrap_or_default())
}

/// An entry of a merged kubeconfig together with the file it came from, because relative
/// paths inside it are relative to that file's folder.
#[derive(Debug, Clone)]
pub struct Origin<T> {
    pub value: T,
    pub file: PathBuf,
}

/// Several kubeconfig files merged the way kubectl merges `KUBECONFIG=a:b`.
#[derive(Debug, Clone, Default)]
pub struct Merged {
    pub files: Vec<PathBuf>,
    pub clusters: BTreeMap<String, Origin<Cluster>>,
    pub users: BTreeMap<String, Origin<AuthInfo>>,
    pub contexts: BTreeMap<String, Origin<Context>>,
    pub current_context: Option<String>,
}

impl Merged {
    /// Adds one file's content; names already defined by an earlier file keep their value.
    pub fn merge(&mut self, file: &Path, config: Kubeconfig) {
        self.files.push(file.to_path_buf());
        fn add<T>(map: &mut BTreeMap<String, Origin<T>>, file: &Path, items: Vec<Named<T>>)
        where
            T: Default,
        {
            for named in items {
                map.entry(named.name).or_insert_with(|| Origin {
                    value: named.item.unwrap_or_default(),
                    file: file.to_path_buf(),
                });
            }
        }
        add(&mut self.clusters, file, config.clusters);
        add(&mut self.users, file, config.users);
        add(&mut self.contexts, file, config.contexts);
        if self.current_context.as_deref().unwrap_or("").is_empty() {
            self.current_context = config.current_context.filter(|c| !c.is_empty());
        }
    }

    fn context_names(&self) -> String {
        if self.contexts.is_empty() {
            return "none".into();
        }
        self.contexts.keys().cloned().collect::<Vec<_>>().join(", ")
    }

    /// The context named `name`, or the current one, with its cluster and user.
    pub fn resolve(&self, name: Option<&str>) -> Result<Resolved, Error> {
        let explicit = name.is_some();
        let name = match name.or(self.current_context.as_deref()) {
            Some(n) => n.to_string(),
            None => {
                return Err(Error::NoCurrentContext {
                    available: self.context_names(),
                });
            }
        };
        let context = self.contexts.get(&name).ok_or_else(|| {
            let (name, available) = (name.clone(), self.context_names());
            if explicit {
                Error::ContextNotFound { name, available }
            } else {
                Error::CurrentContextNotFound { name, available }
            }
        })?;
        let cluster_name = context.value.cluster.clone().unwrap_or_default();
        let cluster = self
            .clusters
            .get(&cluster_name)
            .ok_or_else(|| Error::ClusterNotFound {
                context: name.clone(),
                cluster: cluster_name.clone(),
            })?;
        let user_name = context.value.user.clone().unwrap_or_default();
        let user = self
            .users
            .get(&user_name)
            .ok_or_else(|| Error::UserNotFound {
                context: name.clone(),
                user: user_name.clone(),
            })?;
        Ok(Resolved {
            context_name: name,
            namespace: context.value.namespace.clone(),
            cluster_name,
            cluster: cluster.clone(),
            user_name,
            user: user.clone(),
        })
    }
}

/// One context, resolved: what kubectl would connect to and as whom.
#[derive(Debug, Clone)]
pub struct Resolved {
    pub context_name: String,
    pub namespace: Option<String>,
    pub cluster_name: String,
    pub cluster: Origin<Cluster>,
    pub user_name: String,
    pub user: Origin<AuthInfo>,
}

/// Where a credential's bytes are: inline (`*-data`, base64) or in a file the kubeconfig names.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Material {
    Inline {
        field: &'static str,
        data: String,
        file: PathBuf,
    },
    File {
        field: &'static str,
        path: PathBuf,
        file: PathBuf,
    },
}

impl Material {
    /// Inline data wins over a file reference, as in client-go.
    fn pick(
        data: (&'static str, &Option<String>),
        path: (&'static str, &Option<String>),
        file: &Path,
    ) -> Option<Material> {
        if let Some(d) = data.1.as_ref().filter(|d| !d.trim().is_empty()) {
            return Some(Material::Inline {
                field: data.0,
                data: d.clone(),
                file: file.into(),
            });
        }
        path.1
            .as_ref()
            .filter(|p| !p.is_empty())
            .map(|p| Material::File {
                field: path.0,
                path: relative_to(file, p),
                file: file.into(),
            })
    }

    /// The decoded bytes: base64 of inline data, or the named file's content.
    pub fn bytes(&self) -> Result<Vec<u8>, Error> {
        match self {
            Material::Inline { field, data, file } => {
                let compact: String = data.split_whitespace().collect();
                base64::engine::general_purpose::STANDARD
                    .decode(compact)
                    .map_err(|source| Error::Base64 {
                        field,
                        file: file.clone(),
                        source,
                    })
            }
            Material::File { field, path, file } => {
                std::fs::read(path).map_err(|source| Error::ReadReferenced {
                    field,
                    path: path.clone(),
                    file: file.clone(),
                    source,
                })
            }
        }
    }

    /// Where the bytes come from, for messages: `client-key-data in FILE` or the path.
    pub fn describe(&self) -> String {
        match self {
            Material::Inline { field, file, .. } => format!("{field} in {}", file.display()),
            Material::File { path, .. } => path.display().to_string(),
        }
    }
}

/// Resolves `p` as client-go does: absolute paths stay, others are relative to the kubeconfig's folder.
fn relative_to(kubeconfig: &Path, p: &str) -> PathBuf {
    let p = Path::new(p);
    if p.is_absolute() {
        return p.to_path_buf();
    }
    kubeconfig.parent().unwrap_or(Path::new(".")).join(p)
}

/// How a user proves who it is, in the order client-go prefers them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Credentials {
    ClientCert {
        cert: Material,
        key: Material,
    },
    Token,
    TokenFile(String),
    Basic,
    Exec {
        command: String,
    },
    AuthProvider {
        name: String,
    },
    /// A certificate without its key, or a key without its certificate.
    Incomplete {
        missing: &'static str,
    },
    None,
}

impl Resolved {
    /// The cluster's CA, if the kubeconfig carries one.
    pub fn ca(&self) -> Option<Material> {
        let c = &self.cluster.value;
        Material::pick(
            ("certificate-authority-data", &c.certificate_authority_data),
            ("certificate-authority", &c.certificate_authority),
            &self.cluster.file,
        )
    }

    pub fn credentials(&self) -> Credentials {
        let u = &self.user.value;
        let file = &self.user.file;
        let cert = Material::pick(
            ("client-certificate-data", &u.client_certificate_data),
            ("client-certificate", &u.client_certificate),
            file,
        );
        let key = Material::pick(
            ("client-key-data", &u.client_key_data),
            ("client-key", &u.client_key),
            file,
        );
        match (cert, key) {
            (Some(cert), Some(key)) => return Credentials::ClientCert { cert, key },
            (Some(_), None) => {
                return Credentials::Incomplete {
                    missing: "client key",
                };
            }
            (None, Some(_)) => {
                return Credentials::Incomplete {
                    missing: "client certificate",
                };
            }
            (None, None) => {}
        }
        if let Some(exec) = &u.exec {
            let command = exec.command.clone().unwrap_or_default();
            return Credentials::Exec { command };
        }
        if let Some(p) = &u.auth_provider {
            return Credentials::AuthProvider {
                name: p.name.clone().unwrap_or_default(),
            };
        }
        if u.token.as_deref().is_some_and(|t| !t.is_empty()) {
            return Credentials::Token;
        }
        if let Some(f) = u.token_file.as_ref().filter(|f| !f.is_empty()) {
            return Credentials::TokenFile(f.clone());
        }
        if u.username.is_some() {
            return Credentials::Basic;
        }
        Credentials::None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Kubeconfig {
        serde_yaml::from_str(text).unwrap()
    }

    const A: &str = "
clusters:
- name: shared
  cluster: {server: https://a:6443, certificate-authority: ca.crt}
users:
- name: shared
  user: {client-certificate: certs/a.crt, client-key: /abs/a.key}
contexts:
- name: shared
  context: {cluster: shared, user: shared}
current-context: shared
";
    const B: &str = "
clusters:
- name: shared
  cluster: {server: https://b:6443}
- name: only-b
  cluster: {server: https://only-b:6443}
users:
- name: only-b
  user: {token: abc}
contexts:
- name: shared
  context: {cluster: only-b, user: only-b}
- name: only-b
  context: {cluster: only-b, user: only-b, namespace: dev}
current-context: only-b
";

    #[test]
    fn first_file_to_define_a_name_wins() {
        let mut m = Merged::default();
        m.merge(Path::new("/k/a.yaml"), parse(A));
        m.merge(Path::new("/other/b.yaml"), parse(B));
        assert_eq!(m.current_context.as_deref(), Some("shared"));
        let r = m.resolve(None).unwrap();
        assert_eq!(r.cluster.value.server.as_deref(), Some("https://a:6443"));
        assert_eq!(
            r.ca(),
            Some(Material::File {
                field: "certificate-authority",
                path: "/k/ca.crt".into(),
                file: "/k/a.yaml".into()
            })
        );
        let Credentials::ClientCert { cert, key } = r.credentials() else {
            panic!()
        };
        assert_eq!(cert.describe(), "/k/certs/a.crt");
        assert_eq!(key.describe(), "/abs/a.key");
        let b = m.resolve(Some("only-b")).unwrap();
        assert_eq!(b.namespace.as_deref(), Some("dev"));
        assert_eq!(b.credentials(), Credentials::Token);
    }

    #[test]
    fn unknown_names_are_reported_with_what_exists() {
        let mut m = Merged::default();
        m.merge(Path::new("/k/a.yaml"), parse(A));
        let err = m.resolve(Some("nope")).unwrap_err().to_string();
        assert_eq!(
            err,
            "context \"nope\" not found in the kubeconfig (contexts: shared)"
        );
    }

    #[test]
    fn inline_data_is_decoded_and_bad_base64_is_named() {
        let ok = Material::Inline {
            field: "client-key-data",
            data: "aGVs\nbG8=".into(),
            file: "/k".into(),
        };
        assert_eq!(ok.bytes().unwrap(), b"hello");
        let bad = Material::Inline {
            field: "client-key-data",
            data: "!!!".into(),
            file: "/k".into(),
        };
        assert!(
            bad.bytes()
                .unwrap_err()
                .to_string()
                .starts_with("client-key-data in /k is not valid base64")
        );
    }
}
