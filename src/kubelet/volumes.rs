//! A pod's volumes on the host, and each container's CRI mounts of them: emptyDir (a folder
//! in the pod's data folder), hostPath, configMap and secret (read from the API and written
//! as files, once, when the pod starts), downwardAPI, and projected volumes (service-account
//! token, configMap, secret and downwardAPI sources in one folder). Mirrors upstream's volume
//! manager and the emptydir, hostpath, configmap, secret, downwardapi and projected plugins,
//! with their folder names (`volumes/kubernetes.io~empty-dir/<name>`); projected and
//! downwardAPI files are written the way upstream's `AtomicWriter` does (a `..<timestamp>`
//! folder, a `..data` symlink swapped by rename, top-level symlinks through it), and a
//! projected token is requested again at 80% of its life. Leaves out updates of
//! configMap/secret contents, tmpfs emptyDirs and every network volume.

use std::collections::{BTreeMap, HashMap};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use k8s_cri::v1 as cri;
use k8s_openapi::api::authentication::v1::{BoundObjectReference, TokenRequest, TokenRequestSpec};
use k8s_openapi::api::core::v1::{
    ConfigMap, Container, DownwardAPIVolumeFile, KeyToPath, Pod, Secret, ServiceAccount,
};
use kube::api::{Api, PostParams};

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

/// The files of a volume, by path inside it: content and mode.
type Files = BTreeMap<String, (Vec<u8>, u32)>;

/// Whether `rel` stays inside the volume (no `..`, no absolute path).
fn inside(rel: &str) -> bool {
    !rel.is_empty()
        && Path::new(rel)
            .components()
            .all(|c| matches!(c, std::path::Component::Normal(_)))
}

/// Adds `data`'s keys to `out` as `items` maps them (all keys when empty).
fn select(out: &mut Files, data: &BTreeMap<String, Vec<u8>>, items: &[KeyToPath], mode: u32) {
    if items.is_empty() {
        for (k, v) in data {
            out.insert(k.clone(), (v.clone(), mode));
        }
        return;
    }
    for i in items {
        if let Some(v) = data.get(&i.key) {
            out.insert(
                i.path.clone(),
                (v.clone(), i.mode.map_or(mode, |m| m as u32)),
            );
        }
    }
}

/// A ConfigMap's keys and values, `None` when it does not exist.
async fn config_map_data(
    client: &kube::Client,
    ns: &str,
    name: &str,
) -> Result<Option<BTreeMap<String, Vec<u8>>>, kube::Error> {
    let api: Api<ConfigMap> = Api::namespaced(client.clone(), ns);
    Ok(api.get_opt(name).await?.map(|found| {
        let mut files = BTreeMap::new();
        for (k, s) in found.data.unwrap_or_default() {
            files.insert(k, s.into_bytes());
        }
        for (k, b) in found.binary_data.unwrap_or_default() {
            files.insert(k, b.0);
        }
        files
    }))
}

/// A Secret's keys and values, `None` when it does not exist.
async fn secret_data(
    client: &kube::Client,
    ns: &str,
    name: &str,
) -> Result<Option<BTreeMap<String, Vec<u8>>>, kube::Error> {
    let api: Api<Secret> = Api::namespaced(client.clone(), ns);
    Ok(api.get_opt(name).await?.map(|found| {
        found
            .data
            .unwrap_or_default()
            .into_iter()
            .map(|(k, b)| (k, b.0))
            .collect()
    }))
}

/// downwardAPI items: the pod's own fields (fieldRef) as files.
fn downward(out: &mut Files, pod: &Pod, items: &[DownwardAPIVolumeFile], mode: u32) {
    for i in items {
        if let Some(f) = &i.field_ref {
            let value = super::env::field(pod, &f.field_path, "", "");
            out.insert(
                i.path.clone(),
                (value.into_bytes(), i.mode.map_or(mode, |m| m as u32)),
            );
        }
    }
}

/// Writes `files` into `dir` atomically, as upstream's `AtomicWriter`: the files go to a new
/// `..<timestamp>` folder, the `..data` symlink is swapped to it by a rename, each top-level
/// name is a symlink through `..data`, and the previous folder is removed. A container that
/// reads the volume sees either the old files or the new ones, never half of each.
pub fn write_atomic(dir: &Path, files: &Files) -> Result<(), Error> {
    std::fs::create_dir_all(dir).map_err(write_err(dir))?;
    let stamp = time::OffsetDateTime::now_utc();
    let ts = format!(
        "..{:04}_{:02}_{:02}_{:02}_{:02}_{:02}.{:09}",
        stamp.year(),
        u8::from(stamp.month()),
        stamp.day(),
        stamp.hour(),
        stamp.minute(),
        stamp.second(),
        stamp.nanosecond()
    );
    let fresh = dir.join(&ts);
    std::fs::create_dir_all(&fresh).map_err(write_err(&fresh))?;
    let mut top: Vec<String> = Vec::new();
    for (rel, (data, mode)) in files {
        if !inside(rel) {
            continue;
        }
        let path = fresh.join(rel);
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent).map_err(write_err(parent))?;
        }
        std::fs::write(&path, data).map_err(write_err(&path))?;
        let perm = std::fs::Permissions::from_mode(*mode);
        std::fs::set_permissions(&path, perm).map_err(write_err(&path))?;
        if let Some(std::path::Component::Normal(first)) = Path::new(rel).components().next() {
            let first = first.to_string_lossy().into_owned();
            if !top.contains(&first) {
                top.push(first);
            }
        }
    }
    let data = dir.join("..data");
    let old = std::fs::read_link(&data).ok();
    let tmp = dir.join("..data_tmp");
    let _ = std::fs::remove_file(&tmp);
    std::os::unix::fs::symlink(&ts, &tmp).map_err(write_err(&tmp))?;
    std::fs::rename(&tmp, &data).map_err(write_err(&data))?;
    for name in top {
        let link = dir.join(&name);
        if std::fs::symlink_metadata(&link).is_err() {
            std::os::unix::fs::symlink(Path::new("..data").join(&name), &link)
                .map_err(write_err(&link))?;
        }
    }
    if let Some(old) = old.filter(|o| o.as_os_str() != ts.as_str()) {
        let old = dir.join(old);
        if old.starts_with(dir) {
            let _ = std::fs::remove_dir_all(&old);
        }
    }
    Ok(())
}

fn unix_now() -> i64 {
    time::OffsetDateTime::now_utc().unix_timestamp()
}

/// When a token that is valid from `now` until `expires` is due for renewal: at 80% of its life,
/// as upstream's kubelet token manager.
pub fn refresh_at(now: i64, expires: i64) -> i64 {
    now + (expires - now).max(0) * 8 / 10
}

/// Renders a projected volume's files; returns them and, when it holds a token, when to
/// render it again.
async fn projected(
    client: &kube::Client,
    pod: &Pod,
    r: &PodRef,
    volume: &str,
    p: &k8s_openapi::api::core::v1::ProjectedVolumeSource,
) -> Result<(Files, Option<i64>), Error> {
    let api_err = |source| Error::Volume {
        pod: r.key(),
        volume: volume.to_owned(),
        source,
    };
    let mode = p.default_mode.map_or(0o644, |m| m as u32);
    let mut out = Files::new();
    let mut refresh = None;
    for src in p.sources.iter().flatten() {
        if let Some(cm) = &src.config_map {
            match config_map_data(client, &r.namespace, &cm.name)
                .await
                .map_err(api_err)?
            {
                Some(data) => select(
                    &mut out,
                    &data,
                    cm.items.as_deref().unwrap_or_default(),
                    mode,
                ),
                None if cm.optional.unwrap_or(false) => {}
                None => {
                    return Err(Error::Missing {
                        pod: r.key(),
                        what: format!("configmap {:?}", cm.name),
                    });
                }
            }
        }
        if let Some(sec) = &src.secret {
            match secret_data(client, &r.namespace, &sec.name)
                .await
                .map_err(api_err)?
            {
                Some(data) => select(
                    &mut out,
                    &data,
                    sec.items.as_deref().unwrap_or_default(),
                    mode,
                ),
                None if sec.optional.unwrap_or(false) => {}
                None => {
                    return Err(Error::Missing {
                        pod: r.key(),
                        what: format!("secret {:?}", sec.name),
                    });
                }
            }
        }
        if let Some(d) = &src.downward_api {
            downward(&mut out, pod, d.items.as_deref().unwrap_or_default(), mode);
        }
        if let Some(t) = &src.service_account_token {
            let account = pod
                .spec
                .as_ref()
                .and_then(|s| s.service_account_name.clone())
                .filter(|s| !s.is_empty())
                .unwrap_or_else(|| "default".into());
            let req = TokenRequest {
                spec: TokenRequestSpec {
                    audiences: t.audience.iter().cloned().collect(),
                    expiration_seconds: Some(t.expiration_seconds.unwrap_or(3600)),
                    bound_object_ref: Some(BoundObjectReference {
                        api_version: Some("v1".into()),
                        kind: Some("Pod".into()),
                        name: Some(r.name.clone()),
                        uid: Some(r.uid.clone()),
                    }),
                },
                ..Default::default()
            };
            let api: Api<ServiceAccount> = Api::namespaced(client.clone(), &r.namespace);
            let now = unix_now();
            let got = api
                .create_token_request(&account, &PostParams::default(), &req)
                .await
                .map_err(api_err)?;
            let Some(status) = got.status else {
                return Err(Error::Missing {
                    pod: r.key(),
                    what: format!(
                        "a token for service account {account:?} (TokenRequest answered without status)"
                    ),
                });
            };
            let expires = status.expiration_timestamp.0.as_second();
            let at = refresh_at(now, expires);
            refresh = Some(refresh.map_or(at, |r: i64| r.min(at)));
            out.insert(t.path.clone(), (status.token.into_bytes(), mode));
        }
    }
    Ok((out, refresh))
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
        } else if let Some(d) = &v.downward_api {
            let dir = base.join("kubernetes.io~downward-api").join(&v.name);
            if !dir.join("..data").exists() {
                let mode = d.default_mode.map_or(0o644, |m| m as u32);
                let mut files = Files::new();
                downward(
                    &mut files,
                    pod,
                    d.items.as_deref().unwrap_or_default(),
                    mode,
                );
                write_atomic(&dir, &files)?;
            }
            out.insert(v.name.clone(), dir);
        } else if let Some(p) = &v.projected {
            let kind = base.join("kubernetes.io~projected");
            let dir = kind.join(&v.name);
            // When the token inside is due for renewal; kept beside the volume, not in it.
            let due_file = kind.join(format!("{}.refresh-at", v.name));
            let due = std::fs::read_to_string(&due_file)
                .ok()
                .and_then(|s| s.trim().parse::<i64>().ok());
            let fresh = dir.join("..data").exists() && due.is_none_or(|d| unix_now() < d);
            if !fresh {
                let (files, refresh) = projected(client, pod, &r, &v.name, p).await?;
                write_atomic(&dir, &files)?;
                match refresh {
                    Some(at) => {
                        std::fs::write(&due_file, at.to_string()).map_err(write_err(&due_file))?
                    }
                    None => {
                        let _ = std::fs::remove_file(&due_file);
                    }
                }
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_renew_at_eighty_percent_of_their_life() {
        assert_eq!(refresh_at(1000, 1000 + 3607), 1000 + 2885);
        assert_eq!(
            refresh_at(1000, 900),
            1000,
            "an expired token is renewed at once"
        );
    }

    #[test]
    fn atomic_writer_swaps_the_data_link() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("vol");
        let mut files = Files::new();
        files.insert("token".into(), (b"one".to_vec(), 0o644));
        files.insert("sub/ns".into(), (b"default".to_vec(), 0o600));
        files.insert("../escape".into(), (b"no".to_vec(), 0o644));
        write_atomic(&dir, &files).unwrap();
        assert_eq!(std::fs::read(dir.join("token")).unwrap(), b"one");
        assert_eq!(std::fs::read(dir.join("sub/ns")).unwrap(), b"default");
        assert!(!tmp.path().join("escape").exists());
        let first = std::fs::read_link(dir.join("..data")).unwrap();
        files.insert("token".into(), (b"two".to_vec(), 0o644));
        write_atomic(&dir, &files).unwrap();
        assert_eq!(std::fs::read(dir.join("token")).unwrap(), b"two");
        assert_eq!(
            std::fs::read_link(dir.join("token")).unwrap(),
            Path::new("..data/token")
        );
        assert!(
            !dir.join(first).exists(),
            "the previous generation is removed"
        );
    }
}
