//! A pod's volumes on the host, and each container's CRI mounts of them: emptyDir (a folder
//! in the pod's data folder), hostPath, and configMap and secret (read from the API and written
//! as files, once, when the pod starts). Mirrors upstream's volume manager and the emptydir,
//! hostpath, configmap and secret plugins, with their folder names
//! (`volumes/kubernetes.io~empty-dir/<name>`); leaves out updates of configMap/secret
//! contents, projected volumes, tmpfs emptyDirs and every network volume.

use std::collections::{BTreeMap, HashMap};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use k8s_cri::v1 as cri;
use k8s_openapi::api::core::v1::{ConfigMap, Container, KeyToPath, Pod, Secret};
use kube::api::Api;

use super::Error;
use super::spec::PodRef;

fn write_err(path: &Path) -> impl FnOnce(std::io::Error) -> Error + '_ {
    move |source| Error::PodDir {
        path: path.to_path_buf(),
        source,
    }
}

/// Writes `files` (key → content) into `dir`, as `items` maps them (all keys when empty),
/// with `mode` (default 0644).
fn write_files(
    dir: &Path,
    files: &BTreeMap<String, Vec<u8>>,
    items: &[KeyToPath],
    mode: Option<i32>,
) -> Result<(), Error> {
    std::fs::create_dir_all(dir).map_err(write_err(dir))?;
    let chosen: Vec<(String, String, Option<i32>)> = if items.is_empty() {
        files.keys().map(|k| (k.clone(), k.clone(), mode)).collect()
    } else {
        items
            .iter()
            .map(|i| (i.key.clone(), i.path.clone(), i.mode.or(mode)))
            .collect()
    };
    for (key, rel, m) in chosen {
        let Some(data) = files.get(&key) else {
            continue;
        };
        // A relative path inside the volume, never outside it.
        if Path::new(&rel)
            .components()
            .any(|c| !matches!(c, std::path::Component::Normal(_)))
        {
            continue;
        }
        let path = dir.join(&rel);
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent).map_err(write_err(parent))?;
        }
        std::fs::write(&path, data).map_err(write_err(&path))?;
        let perm = std::fs::Permissions::from_mode(m.unwrap_or(0o644) as u32);
        std::fs::set_permissions(&path, perm).map_err(write_err(&path))?;
    }
    Ok(())
}

/// Makes every volume of the pod exist on the host; returns where each one is, by name.
pub async fn prepare(
    client: &kube::Client,
    pod: &Pod,
    root: &Path,
) -> Result<HashMap<String, PathBuf>, Error> {
    let r = PodRef::of(pod);
    let base = r.dir(root).join("volumes");
    let mut out = HashMap::new();
    for v in pod.spec.iter().flat_map(|s| s.volumes.iter().flatten()) {
        let api_err = |source| Error::Volume {
            pod: r.key(),
            volume: v.name.clone(),
            source,
        };
        if v.empty_dir.is_some() {
            let dir = base.join("kubernetes.io~empty-dir").join(&v.name);
            std::fs::create_dir_all(&dir).map_err(write_err(&dir))?;
            out.insert(v.name.clone(), dir);
        } else if let Some(h) = &v.host_path {
            let path = PathBuf::from(&h.path);
            if h.type_.as_deref() == Some("DirectoryOrCreate") {
                std::fs::create_dir_all(&path).map_err(write_err(&path))?;
            }
            out.insert(v.name.clone(), path);
        } else if let Some(cm) = &v.config_map {
            let dir = base.join("kubernetes.io~configmap").join(&v.name);
            if !dir.exists() {
                let api: Api<ConfigMap> = Api::namespaced(client.clone(), &r.namespace);
                let found = api.get_opt(&cm.name).await.map_err(api_err)?;
                let mut files: BTreeMap<String, Vec<u8>> = BTreeMap::new();
                if let Some(found) = found {
                    for (k, s) in found.data.unwrap_or_default() {
                        files.insert(k, s.into_bytes());
                    }
                    for (k, b) in found.binary_data.unwrap_or_default() {
                        files.insert(k, b.0);
                    }
                } else if !cm.optional.unwrap_or(false) {
                    return Err(Error::Missing {
                        pod: r.key(),
                        what: format!("configmap {:?}", cm.name),
                    });
                }
                let items = cm.items.clone().unwrap_or_default();
                write_files(&dir, &files, &items, cm.default_mode)?;
            }
            out.insert(v.name.clone(), dir);
        } else if let Some(sec) = &v.secret {
            let dir = base.join("kubernetes.io~secret").join(&v.name);
            if !dir.exists() {
                let name = sec.secret_name.clone().unwrap_or_default();
                let api: Api<Secret> = Api::namespaced(client.clone(), &r.namespace);
                let found = api.get_opt(&name).await.map_err(api_err)?;
                let mut files: BTreeMap<String, Vec<u8>> = BTreeMap::new();
                if let Some(found) = found {
                    for (k, b) in found.data.unwrap_or_default() {
                        files.insert(k, b.0);
                    }
                } else if !sec.optional.unwrap_or(false) {
                    return Err(Error::Missing {
                        pod: r.key(),
                        what: format!("secret {name:?}"),
                    });
                }
                let items = sec.items.clone().unwrap_or_default();
                write_files(&dir, &files, &items, sec.default_mode)?;
            }
            out.insert(v.name.clone(), dir);
        } else {
            eprintln!(
                "kubelet: pod {}: volume {} has a type klab does not mount yet; skipped",
                r.key(),
                v.name
            );
        }
    }
    Ok(out)
}

/// The CRI mounts of container `c`: each volumeMount whose volume was prepared.
pub fn mounts(c: &Container, volumes: &HashMap<String, PathBuf>) -> Vec<cri::Mount> {
    c.volume_mounts
        .iter()
        .flatten()
        .filter_map(|m| {
            let mut host = volumes.get(&m.name)?.clone();
            if let Some(sub) = m.sub_path.as_deref().filter(|s| !s.is_empty()) {
                host = host.join(sub);
            }
            Some(cri::Mount {
                container_path: m.mount_path.clone(),
                host_path: host.display().to_string(),
                readonly: m.read_only.unwrap_or(false),
                ..Default::default()
            })
        })
        .collect()
}
