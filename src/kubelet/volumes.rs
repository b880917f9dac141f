//! A pod's volumes on the host, and each container's CRI mounts of them: emptyDir (a folder
//! in the pod's data folder), hostPath, configMap and secret (read from the API, read again
//! every few seconds and rewritten when they changed, unless immutable), downwardAPI, and
//! projected volumes (service-account token, configMap, secret and downwardAPI sources in one
//! folder). Mirrors upstream's volume manager and the emptydir, hostpath, configmap, secret,
//! downwardapi and projected plugins, with their folder names
//! (`volumes/kubernetes.io~empty-dir/<name>`); all but emptyDir and hostPath are written the
//! way upstream's `AtomicWriter` does (a `..<timestamp>` folder, a `..data` symlink swapped by
//! rename, top-level symlinks through it), and a projected token is requested again at 80% of
//! its life. Leaves out updates of
//! configMap/secret sources of projected volumes, tmpfs emptyDirs and every network volume.

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

/// A ConfigMap's or Secret's keys and values, and whether it is immutable.
type Source = (BTreeMap<String, Vec<u8>>, bool);

/// A ConfigMap's keys and values, `None` when it does not exist.
async fn config_map_data(
    client: &kube::Client,
    ns: &str,
    name: &str,
) -> Result<Option<Source>, kube::Error> {
    let api: Api<ConfigMap> = Api::namespaced(client.clone(), ns);
    Ok(api.get_opt(name).await?.map(|found| {
        let mut files = BTreeMap::new();
        for (k, s) in found.data.unwrap_or_default() {
            files.insert(k, s.into_bytes());
        }
        for (k, b) in found.binary_data.unwrap_or_default() {
            files.insert(k, b.0);
        }
        (files, found.immutable == Some(true))
    }))
}

/// A Secret's keys and values, `None` when it does not exist.
async fn secret_data(
    client: &kube::Client,
    ns: &str,
    name: &str,
) -> Result<Option<Source>, kube::Error> {
    let api: Api<Secret> = Api::namespaced(client.clone(), ns);
    Ok(api.get_opt(name).await?.map(|found| {
        let files = found
            .data
            .unwrap_or_default()
            .into_iter()
            .map(|(k, b)| (k, b.0))
            .collect();
        (files, found.immutable == Some(true))
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
    // Top-level links of keys that are gone go too (those through `..data` only).
    if let Ok(entries) = std::fs::read_dir(dir) {
        for e in entries.flatten() {
            let name = e.file_name().to_string_lossy().into_owned();
            let through_data = std::fs::read_link(e.path()).is_ok_and(|t| t.starts_with("..data"));
            if through_data && !top.contains(&name) {
                let _ = std::fs::remove_file(e.path());
            }
        }
    }
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
                Some((data, _)) => select(
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
                Some((data, _)) => select(
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

/// How often a configMap or secret volume is read again from the API. Upstream's kubelet
/// notices a change at its next periodic sync of the pod (`syncFrequency`, 1 min); klab reads
/// sooner, to keep a lab's loop short.
pub const RESYNC_SECONDS: i64 = 10;

/// The files under `..data` of an atomically written volume, as [`Files`].
fn current_files(dir: &Path) -> Files {
    fn walk(base: &Path, rel: &Path, out: &mut Files) {
        let Ok(entries) = std::fs::read_dir(base.join(rel)) else {
            return;
        };
        for e in entries.flatten() {
            let rel = rel.join(e.file_name());
            let Ok(meta) = e.metadata() else { continue };
            if meta.is_dir() {
                walk(base, &rel, out);
            } else if let Ok(data) = std::fs::read(base.join(&rel)) {
                let mode = meta.permissions().mode() & 0o7777;
                out.insert(rel.to_string_lossy().into_owned(), (data, mode));
            }
        }
    }
    let mut out = Files::new();
    walk(&dir.join("..data"), Path::new(""), &mut out);
    out
}

/// Why a configMap or secret volume could not be written.
enum KeptError {
    Api(kube::Error),
    Other(Error),
}

impl KeptError {
    fn into_error(self, api: impl FnOnce(kube::Error) -> Error) -> Error {
        match self {
            KeptError::Api(e) => api(e),
            KeptError::Other(e) => e,
        }
    }
}

/// A configMap or secret volume, kept up to date as upstream's plugins do: written with the
/// atomic writer, read again every [`RESYNC_SECONDS`] and rewritten when its content changed,
/// never again once the object is immutable. A container that mounts a key with `subPath`
/// keeps the file it started with (the bind mount holds the old file), as upstream.
struct Kept<'a> {
    pod: &'a PodRef,
    dir: &'a Path,
    what: String,
    optional: bool,
    items: &'a [KeyToPath],
    mode: Option<i32>,
}

impl Kept<'_> {
    /// Beside the volume, not in it: when to read the object again (`never` once immutable).
    fn due_file(&self) -> PathBuf {
        let name = self.dir.file_name().unwrap_or_default().to_string_lossy();
        self.dir.with_file_name(format!("{name}.resync-at"))
    }

    async fn sync(
        &self,
        read: impl std::future::Future<Output = Result<Option<Source>, kube::Error>>,
    ) -> Result<(), KeptError> {
        let written = self.dir.join("..data").exists();
        if self.dir.exists() && !written {
            // Written by an older klab as plain files: left as it is.
            return Ok(());
        }
        let due_file = self.due_file();
        if written {
            let due = std::fs::read_to_string(&due_file).unwrap_or_default();
            let due = due.trim();
            if due == "never" || due.parse::<i64>().is_ok_and(|d| unix_now() < d) {
                return Ok(());
            }
        }
        let found = match read.await {
            Ok(f) => f,
            // A volume already written keeps its files while the API cannot be read.
            Err(e) if written => {
                eprintln!(
                    "kubelet: pod {}: reading {} again: {}",
                    self.pod.key(),
                    self.what,
                    super::chain(&e)
                );
                return Ok(());
            }
            Err(e) => return Err(KeptError::Api(e)),
        };
        let (data, immutable) = match found {
            Some(f) => f,
            // Deleted after the pod started: the files stay (upstream keeps them too).
            None if written => return Ok(()),
            None if self.optional => (BTreeMap::new(), false),
            None => {
                return Err(KeptError::Other(Error::Missing {
                    pod: self.pod.key(),
                    what: self.what.clone(),
                }));
            }
        };
        let mut files = Files::new();
        select(
            &mut files,
            &data,
            self.items,
            self.mode.map_or(0o644, |m| m as u32),
        );
        if !written || current_files(self.dir) != files {
            write_atomic(self.dir, &files).map_err(KeptError::Other)?;
        }
        let due = if immutable {
            "never".to_owned()
        } else {
            (unix_now() + RESYNC_SECONDS).to_string()
        };
        std::fs::write(&due_file, due)
            .map_err(write_err(&due_file))
            .map_err(KeptError::Other)
    }
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
            let kept = Kept {
                pod: &r,
                dir: &dir,
                what: format!("configmap {:?}", cm.name),
                optional: cm.optional.unwrap_or(false),
                items: cm.items.as_deref().unwrap_or_default(),
                mode: cm.default_mode,
            };
            kept.sync(config_map_data(client, &r.namespace, &cm.name))
                .await
                .map_err(|e| e.into_error(api_err))?;
            out.insert(v.name.clone(), dir);
        } else if let Some(sec) = &v.secret {
            let dir = base.join("kubernetes.io~secret").join(&v.name);
            let name = sec.secret_name.clone().unwrap_or_default();
            let kept = Kept {
                pod: &r,
                dir: &dir,
                what: format!("secret {name:?}"),
                optional: sec.optional.unwrap_or(false),
                items: sec.items.as_deref().unwrap_or_default(),
                mode: sec.default_mode,
            };
            kept.sync(secret_data(client, &r.namespace, &name))
                .await
                .map_err(|e| e.into_error(api_err))?;
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
        files.remove("token");
        write_atomic(&dir, &files).unwrap();
        assert!(
            std::fs::symlink_metadata(dir.join("token")).is_err(),
            "a key that is gone loses its link"
        );
    }

    #[tokio::test]
    async fn config_map_volumes_follow_their_object_until_immutable() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("kubernetes.io~configmap").join("conf");
        let pod = PodRef {
            namespace: "default".into(),
            name: "p".into(),
            uid: "u".into(),
        };
        let kept = Kept {
            pod: &pod,
            dir: &dir,
            what: "configmap \"c\"".into(),
            optional: false,
            items: &[],
            mode: None,
        };
        let source = |v: &str, immutable: bool| {
            let data = BTreeMap::from([("k".to_owned(), v.as_bytes().to_vec())]);
            std::future::ready(Ok(Some((data, immutable))))
        };
        let read = || std::fs::read_to_string(dir.join("k")).unwrap();
        kept.sync(source("one", false)).await.ok().unwrap();
        assert_eq!(read(), "one");
        // Not due yet: the object is not read again.
        kept.sync(source("two", false)).await.ok().unwrap();
        assert_eq!(read(), "one");
        std::fs::write(kept.due_file(), "0").unwrap();
        kept.sync(source("two", true)).await.ok().unwrap();
        assert_eq!(read(), "two");
        assert_eq!(std::fs::read_to_string(kept.due_file()).unwrap(), "never");
        std::fs::write(kept.due_file(), "never").unwrap();
        kept.sync(source("three", true)).await.ok().unwrap();
        assert_eq!(read(), "two", "an immutable object is not read again");
        // Missing before the first write: the pod waits.
        let other = tmp.path().join("kubernetes.io~configmap").join("gone");
        let missing = Kept {
            dir: &other,
            ..kept
        };
        let none = std::future::ready(Ok(None));
        assert!(matches!(
            missing.sync(none).await,
            Err(KeptError::Other(Error::Missing { .. }))
        ));
    }
}
