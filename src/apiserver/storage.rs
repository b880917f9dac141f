//! Objects in etcd through the etcd v3 API: JSON values under upstream's `/registry/…` keys.
//!
//! Mirrors the apiserver's `storage/etcd3` package: creates are transactions guarded by
//! `create_revision == 0`, updates and deletes by `mod_revision == resourceVersion`, lists are
//! ranges read at one revision (so paging is consistent), and `resourceVersion` is the key's
//! `mod_revision`, never stored in the value. Leaves out protobuf values and encryption at rest.

use std::path::PathBuf;

use etcd_client::{
    Certificate, Client, Compare, CompareOp, ConnectOptions, GetOptions, Identity, TlsOptions, Txn,
    TxnOp, TxnOpResponse, WatchOptions, WatchStream,
};
use serde_json::Value;

use crate::cli::ApiserverArgs;

#[derive(Debug, thiserror::Error)]
pub enum StorageError {
    #[error("reading etcd TLS file {path}")]
    ReadTlsFile {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("connecting to etcd at {endpoints:?}")]
    Connect {
        endpoints: Vec<String>,
        #[source]
        source: etcd_client::Error,
    },
    #[error("etcd request failed")]
    Request(#[source] etcd_client::Error),
    #[error("the value stored under {key} is not a JSON object")]
    Decode {
        key: String,
        #[source]
        source: serde_json::Error,
    },
    #[error("encoding an object as JSON")]
    Encode(#[source] serde_json::Error),
    #[error("the requested revision {0} has been compacted")]
    Compacted(i64),
}

/// One stored object, with `metadata.resourceVersion` filled in from etcd's `mod_revision`.
#[derive(Debug, Clone)]
pub struct Item {
    pub key: String,
    pub value: Value,
    pub mod_revision: i64,
}

/// One page of a list, read at `revision`.
#[derive(Debug)]
pub struct Page {
    pub items: Vec<Item>,
    pub revision: i64,
    /// Whether keys remain after the last item.
    pub more: bool,
    /// How many keys remain after this page.
    pub remaining: i64,
}

#[derive(Clone)]
pub struct Store {
    client: Client,
}

/// What an optimistic write found when it lost the race.
pub enum Written {
    Ok(i64),
    /// The key existed (create) or moved on (update, delete).
    Conflict,
}

fn read_file(path: &PathBuf) -> Result<Vec<u8>, StorageError> {
    std::fs::read(path).map_err(|source| StorageError::ReadTlsFile {
        path: path.clone(),
        source,
    })
}

fn request(e: etcd_client::Error) -> StorageError {
    if let etcd_client::Error::GRpcStatus(s) = &e
        && s.message().contains("compacted")
    {
        return StorageError::Compacted(0);
    }
    StorageError::Request(e)
}

/// Sets `metadata.resourceVersion` on a decoded object.
pub fn set_resource_version(value: &mut Value, rev: i64) {
    if let Some(meta) = value.get_mut("metadata").and_then(Value::as_object_mut) {
        meta.insert("resourceVersion".into(), Value::String(rev.to_string()));
    }
}

/// Decodes a stored value and stamps its resourceVersion.
pub fn decode(key: &[u8], value: &[u8], rev: i64) -> Result<Item, StorageError> {
    let key = String::from_utf8_lossy(key).into_owned();
    let mut value: Value =
        serde_json::from_slice(value).map_err(|source| StorageError::Decode {
            key: key.clone(),
            source,
        })?;
    set_resource_version(&mut value, rev);
    Ok(Item {
        key,
        value,
        mod_revision: rev,
    })
}

fn encode(value: &Value) -> Result<Vec<u8>, StorageError> {
    let mut v = value.clone();
    if let Some(meta) = v.get_mut("metadata").and_then(Value::as_object_mut) {
        meta.remove("resourceVersion");
    }
    serde_json::to_vec(&v).map_err(StorageError::Encode)
}

/// The first key after every key that starts with `prefix` (etcd's range end for a prefix).
pub fn prefix_end(prefix: &str) -> Vec<u8> {
    let mut end = prefix.as_bytes().to_vec();
    while let Some(last) = end.pop() {
        if last < 0xff {
            end.push(last + 1);
            return end;
        }
    }
    vec![0]
}

impl Store {
    /// Connects to `--etcd-servers`, with mTLS when the etcd TLS flags are set.
    pub async fn connect(args: &ApiserverArgs) -> Result<Store, StorageError> {
        let mut options = ConnectOptions::new()
            .with_connect_timeout(std::time::Duration::from_secs(5))
            .with_keep_alive(
                std::time::Duration::from_secs(30),
                std::time::Duration::from_secs(10),
            );
        if args.etcd_servers.iter().any(|s| s.starts_with("https://")) {
            let mut tls = TlsOptions::new();
            if let Some(ca) = &args.etcd_cafile {
                tls = tls.ca_certificate(Certificate::from_pem(read_file(ca)?));
            }
            if let (Some(cert), Some(key)) = (&args.etcd_certfile, &args.etcd_keyfile) {
                tls = tls.identity(Identity::from_pem(read_file(cert)?, read_file(key)?));
            }
            options = options.with_tls(tls);
        }
        let client = Client::connect(&args.etcd_servers, Some(options))
            .await
            .map_err(|source| StorageError::Connect {
                endpoints: args.etcd_servers.clone(),
                source,
            })?;
        Ok(Store { client })
    }

    pub async fn get(&self, key: &str) -> Result<Option<Item>, StorageError> {
        let resp = self
            .client
            .kv_client()
            .get(key, None)
            .await
            .map_err(request)?;
        match resp.kvs().first() {
            Some(kv) => decode(kv.key(), kv.value(), kv.mod_revision()).map(Some),
            None => Ok(None),
        }
    }

    /// The store's current revision (what a list with no items reports).
    pub async fn revision(&self) -> Result<i64, StorageError> {
        let resp = self
            .client
            .kv_client()
            .get(
                "/registry/health",
                Some(GetOptions::new().with_count_only()),
            )
            .await
            .map_err(request)?;
        Ok(resp.header().map(|h| h.revision()).unwrap_or_default())
    }

    /// Reads up to `limit` keys (0 = all) under `prefix`, from `start` on, at `revision` (0 =
    /// now).
    pub async fn list(
        &self,
        prefix: &str,
        start: Option<&str>,
        limit: i64,
        revision: i64,
    ) -> Result<Page, StorageError> {
        let mut opts = GetOptions::new()
            .with_range(prefix_end(prefix))
            .with_limit(limit);
        if revision > 0 {
            opts = opts.with_revision(revision);
        }
        let from = start.unwrap_or(prefix);
        let resp = self
            .client
            .kv_client()
            .get(from, Some(opts))
            .await
            .map_err(|e| match request(e) {
                StorageError::Compacted(_) => StorageError::Compacted(revision),
                other => other,
            })?;
        let items = resp
            .kvs()
            .iter()
            .map(|kv| decode(kv.key(), kv.value(), kv.mod_revision()))
            .collect::<Result<Vec<_>, _>>()?;
        let revision = resp.header().map(|h| h.revision()).unwrap_or_default();
        let remaining = resp.count() - items.len() as i64;
        Ok(Page {
            items,
            revision,
            more: resp.more(),
            remaining: remaining.max(0),
        })
    }

    /// Writes `value` if the key does not exist yet.
    pub async fn create(&self, key: &str, value: &Value) -> Result<Written, StorageError> {
        let txn = Txn::new()
            .when([Compare::create_revision(key, CompareOp::Equal, 0)])
            .and_then([TxnOp::put(key, encode(value)?, None)]);
        self.commit(txn).await
    }

    /// Replaces the value if the key's `mod_revision` is still `expected`.
    pub async fn update(
        &self,
        key: &str,
        value: &Value,
        expected: i64,
    ) -> Result<Written, StorageError> {
        let txn = Txn::new()
            .when([Compare::mod_revision(key, CompareOp::Equal, expected)])
            .and_then([TxnOp::put(key, encode(value)?, None)]);
        self.commit(txn).await
    }

    /// Deletes the key if its `mod_revision` is still `expected`.
    pub async fn delete(&self, key: &str, expected: i64) -> Result<Written, StorageError> {
        let txn = Txn::new()
            .when([Compare::mod_revision(key, CompareOp::Equal, expected)])
            .and_then([TxnOp::delete(key, None)]);
        self.commit(txn).await
    }

    async fn commit(&self, txn: Txn) -> Result<Written, StorageError> {
        let resp = self.client.kv_client().txn(txn).await.map_err(request)?;
        if !resp.succeeded() {
            return Ok(Written::Conflict);
        }
        let rev = resp
            .op_responses()
            .into_iter()
            .find_map(|r| match r {
                TxnOpResponse::Put(p) => p.header().map(|h| h.revision()),
                TxnOpResponse::Delete(d) => d.header().map(|h| h.revision()),
                _ => None,
            })
            .or_else(|| resp.header().map(|h| h.revision()))
            .unwrap_or_default();
        Ok(Written::Ok(rev))
    }

    /// Watches every key under `prefix` from `start_revision` on, with previous values.
    pub async fn watch(
        &self,
        prefix: &str,
        start_revision: i64,
    ) -> Result<WatchStream, StorageError> {
        let opts = WatchOptions::new()
            .with_range(prefix_end(prefix))
            .with_start_revision(start_revision)
            .with_prev_key();
        self.client
            .watch_client()
            .watch(prefix, Some(opts))
            .await
            .map_err(request)
    }

    /// Whether etcd answers (the `etcd` check of /readyz and /livez).
    pub async fn healthy(&self) -> bool {
        self.revision().await.is_ok()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn range_end_of_prefix() {
        assert_eq!(prefix_end("/registry/pods/"), b"/registry/pods0".to_vec());
    }
}
