//! Static pods: manifests read from --pod-manifest-path, run by the kubelet itself, and shown
//! in the API as mirror pods (annotation `kubernetes.io/config.mirror`). A manifest's content
//! decides its pod's uid, so an edited manifest is a new pod: the old one stops and the new
//! one starts. Mirrors upstream's `config/file.go` and `pod/mirror_client.go`; leaves out
//! inotify (the folder is read every few seconds, as upstream's fallback does) and HTTP sources.

use std::collections::BTreeMap;
use std::path::Path;

use k8s_openapi::api::core::v1::Pod;
use kube::api::{Api, DeleteParams, PostParams};

use super::Error;

pub const CONFIG_SOURCE: &str = "kubernetes.io/config.source";
pub const CONFIG_HASH: &str = "kubernetes.io/config.hash";
pub const CONFIG_MIRROR: &str = "kubernetes.io/config.mirror";

/// Whether `pod` is a mirror pod, i.e. the API's picture of a static pod.
pub fn is_mirror(pod: &Pod) -> bool {
    pod.metadata
        .annotations
        .as_ref()
        .is_some_and(|a| a.contains_key(CONFIG_MIRROR))
}

fn hash(bytes: &[u8], node: &str) -> String {
    let mut all = bytes.to_vec();
    all.extend_from_slice(node.as_bytes());
    let d = ring::digest::digest(&ring::digest::SHA256, &all);
    d.as_ref()[..16]
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// One manifest as the pod the kubelet runs: named `<name>-<node>`, bound to the node, its
/// uid the hash of the file.
pub fn load(path: &Path, node: &str) -> Result<Pod, Error> {
    let bytes = std::fs::read(path).map_err(|source| Error::ReadManifest {
        path: path.to_path_buf(),
        source,
    })?;
    let mut pod: Pod = serde_yaml::from_slice(&bytes).map_err(|source| Error::ParseManifest {
        path: path.to_path_buf(),
        source,
    })?;
    let uid = hash(&bytes, node);
    let m = &mut pod.metadata;
    m.name = Some(format!("{}-{node}", m.name.clone().unwrap_or_default()));
    m.namespace.get_or_insert_with(|| "default".into());
    m.uid = Some(uid.clone());
    let a = m.annotations.get_or_insert_with(BTreeMap::new);
    a.insert(CONFIG_SOURCE.into(), "file".into());
    a.insert(CONFIG_HASH.into(), uid);
    pod.spec.get_or_insert_with(Default::default).node_name = Some(node.into());
    pod.status = None;
    Ok(pod)
}

/// Every manifest of the folder (`.yaml`, `.yml`, `.json`), skipping and reporting bad ones.
pub fn load_all(dir: &Path, node: &str) -> Vec<Pod> {
    let mut files: Vec<_> = std::fs::read_dir(dir)
        .map(|d| d.flatten().map(|e| e.path()).collect())
        .unwrap_or_default();
    files.sort();
    files
        .iter()
        .filter(|p| {
            p.extension()
                .is_some_and(|e| e == "yaml" || e == "yml" || e == "json")
        })
        .filter_map(|p| match load(p, node) {
            Ok(pod) => Some(pod),
            Err(e) => {
                eprintln!("kubelet: {}", super::chain(&e));
                None
            }
        })
        .collect()
}

/// Creates the mirror pod of `pod`, replacing a stale one (another manifest version).
pub async fn ensure_mirror(
    client: &kube::Client,
    pod: &Pod,
    existing: Option<&Pod>,
) -> Result<(), Error> {
    let ns = pod.metadata.namespace.clone().unwrap_or_default();
    let name = pod.metadata.name.clone().unwrap_or_default();
    let uid = pod.metadata.uid.clone().unwrap_or_default();
    let api: Api<Pod> = Api::namespaced(client.clone(), &ns);
    let err = |source| Error::Mirror {
        pod: format!("{ns}/{name}"),
        source,
    };
    if let Some(old) = existing {
        let current = old
            .metadata
            .annotations
            .as_ref()
            .and_then(|a| a.get(CONFIG_MIRROR));
        if current == Some(&uid) && old.metadata.deletion_timestamp.is_none() {
            return Ok(());
        }
        delete_mirror(client, old).await?;
    }
    let mut mirror = pod.clone();
    mirror.metadata.uid = None;
    mirror
        .metadata
        .annotations
        .get_or_insert_with(BTreeMap::new)
        .insert(CONFIG_MIRROR.into(), uid);
    match api.create(&PostParams::default(), &mirror).await {
        Ok(_) => Ok(()),
        Err(kube::Error::Api(s)) if s.code == 409 => Ok(()),
        Err(e) => Err(err(e)),
    }
}

pub async fn delete_mirror(client: &kube::Client, mirror: &Pod) -> Result<(), Error> {
    let ns = mirror.metadata.namespace.clone().unwrap_or_default();
    let name = mirror.metadata.name.clone().unwrap_or_default();
    let api: Api<Pod> = Api::namespaced(client.clone(), &ns);
    match api
        .delete(&name, &DeleteParams::default().grace_period(0))
        .await
    {
        Ok(_) => Ok(()),
        Err(kube::Error::Api(s)) if s.code == 404 => Ok(()),
        Err(source) => Err(Error::Mirror {
            pod: format!("{ns}/{name}"),
            source,
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_manifest_becomes_a_node_bound_pod_whose_uid_follows_the_file() {
        let dir = std::env::temp_dir().join(format!("klab-static-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let f = dir.join("web.yaml");
        std::fs::write(&f, "apiVersion: v1\nkind: Pod\nmetadata:\n  name: web\nspec:\n  containers:\n  - name: c\n    image: busybox\n").unwrap();
        let a = load(&f, "n1").unwrap();
        assert_eq!(a.metadata.name.as_deref(), Some("web-n1"));
        assert_eq!(a.metadata.namespace.as_deref(), Some("default"));
        assert_eq!(a.spec.as_ref().unwrap().node_name.as_deref(), Some("n1"));
        let ann = a.metadata.annotations.clone().unwrap();
        assert_eq!(ann[CONFIG_SOURCE], "file");
        assert_eq!(Some(&ann[CONFIG_HASH]), a.metadata.uid.as_ref());
        assert_eq!(load(&f, "n1").unwrap().metadata.uid, a.metadata.uid);
        std::fs::write(&f, "apiVersion: v1\nkind: Pod\nmetadata:\n  name: web\nspec:\n  containers:\n  - name: c\n    image: busybox:stable\n").unwrap();
        assert_ne!(load(&f, "n1").unwrap().metadata.uid, a.metadata.uid);
        std::fs::write(dir.join("bad.yaml"), "kind: [").unwrap();
        assert!(
            load(&dir.join("bad.yaml"), "n1").is_err(),
            "a bad manifest is an error, not a panic"
        );
        assert_eq!(load_all(&dir, "n1").len(), 1);
        let _ = std::fs::remove_dir_all(&dir);
    }
}
