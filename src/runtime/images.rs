//! Local images for a node that cannot reach a registry: genuine busybox (Debian's static
//! build), a pause image, and an HTTP echo image that answers with its pod's name, written as
//! one OCI image layout (the format `docker save` and `skopeo copy oci-archive:` produce) and
//! imported with containerd's own `ctr`.
//!
//! Image names are the ones workshop manifests use (`busybox`, `busybox:stable`), because CRI
//! normalizes `busybox` to `docker.io/library/busybox:latest`; the image under those names is
//! a real busybox, not a stand-in.

use std::path::Path;
use std::process::Command;

use ring::digest::{SHA256, digest};
use serde_json::json;

use super::{Error, which};

/// The sandbox image klab's containerd config names.
pub const PAUSE: &str = "localhost/klab/pause:3.10";
/// The echo image of the load-balancing demo: `wget -qO- http://POD:8080` prints the pod name.
pub const ECHO: &str = "localhost/klab/echo:1.0";

/// One image of the layout: its names, and what it runs.
#[derive(Debug, Clone)]
pub struct LocalImage {
    pub names: &'static [&'static str],
    pub cmd: &'static [&'static str],
    pub exposed_port: Option<u16>,
}

/// The images every klab node carries, all on the same busybox root filesystem.
pub const IMAGES: &[LocalImage] = &[
    LocalImage {
        names: &[PAUSE],
        // Holds the pod's namespaces and does nothing else, like registry.k8s.io/pause.
        cmd: &["sleep", "2147483647"],
        exposed_port: None,
    },
    LocalImage {
        names: &[
            "docker.io/library/busybox:latest",
            "docker.io/library/busybox:stable",
            "docker.io/library/busybox:1.35",
        ],
        cmd: &["sh"],
        exposed_port: None,
    },
    LocalImage {
        names: &[ECHO],
        cmd: &[
            "sh",
            "-c",
            "mkdir -p /www && hostname > /www/index.html && exec httpd -f -p 8080 -h /www",
        ],
        exposed_port: Some(8080),
    },
];

fn sha256(bytes: &[u8]) -> String {
    let d = digest(&SHA256, bytes);
    d.as_ref().iter().map(|b| format!("{b:02x}")).collect()
}

fn header(kind: tar::EntryType, mode: u32, size: u64) -> tar::Header {
    let mut h = tar::Header::new_ustar();
    h.set_entry_type(kind);
    h.set_mode(mode);
    h.set_size(size);
    h.set_mtime(0);
    h.set_uid(0);
    h.set_gid(0);
    h
}

fn add_file(
    b: &mut tar::Builder<Vec<u8>>,
    path: &str,
    mode: u32,
    data: &[u8],
) -> std::io::Result<()> {
    let mut h = header(tar::EntryType::Regular, mode, data.len() as u64);
    b.append_data(&mut h, path, data)
}

/// The root filesystem layer: busybox, a link per applet in /bin, and the few files a
/// container expects (/etc/passwd, /tmp).
fn rootfs_layer(busybox: &[u8], applets: &[String]) -> std::io::Result<Vec<u8>> {
    let mut b = tar::Builder::new(Vec::new());
    for dir in [
        "bin", "dev", "etc", "proc", "root", "sys", "tmp", "var", "www",
    ] {
        let mode = if dir == "tmp" { 0o1777 } else { 0o755 };
        let mut h = header(tar::EntryType::Directory, mode, 0);
        b.append_data(&mut h, format!("{dir}/"), std::io::empty())?;
    }
    add_file(&mut b, "bin/busybox", 0o755, busybox)?;
    for applet in applets.iter().filter(|a| a.as_str() != "busybox") {
        let mut h = header(tar::EntryType::Symlink, 0o777, 0);
        b.append_link(&mut h, format!("bin/{applet}"), "busybox")?;
    }
    add_file(
        &mut b,
        "etc/passwd",
        0o644,
        b"root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/nonexistent:/bin/false\n",
    )?;
    add_file(&mut b, "etc/group", 0o644, b"root:x:0:\nnogroup:x:65534:\n")?;
    b.into_inner()
}

/// Builds the OCI image layout (as a tar) holding every image of `IMAGES`.
pub fn layout(busybox: &[u8], applets: &[String]) -> std::io::Result<Vec<u8>> {
    let layer = rootfs_layer(busybox, applets)?;
    let images: Vec<Image> = IMAGES
        .iter()
        .map(|i| Image {
            names: i.names.iter().map(|n| n.to_string()).collect(),
            cmd: i.cmd.iter().map(|c| c.to_string()).collect(),
            exposed_port: i.exposed_port,
        })
        .collect();
    oci_layout(&[layer], &images)
}

/// One image of a layout, all images sharing the same layers.
struct Image {
    names: Vec<String>,
    cmd: Vec<String>,
    exposed_port: Option<u16>,
}

fn oci_layout(layers: &[Vec<u8>], images: &[Image]) -> std::io::Result<Vec<u8>> {
    let digests: Vec<String> = layers
        .iter()
        .map(|l| format!("sha256:{}", sha256(l)))
        .collect();
    let mut blobs: Vec<(String, Vec<u8>)> = digests
        .iter()
        .cloned()
        .zip(layers.iter().cloned())
        .collect();
    let mut manifests = Vec::new();
    for image in images {
        let mut config = json!({
            "architecture": "amd64",
            "os": "linux",
            "config": {
                "Cmd": image.cmd,
                "Env": ["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"],
                "WorkingDir": "/"
            },
            "rootfs": { "type": "layers", "diff_ids": digests },
            "history": [{ "created_by": "klab: Debian busybox-static" }]
        });
        if let Some(port) = image.exposed_port {
            config["config"]["ExposedPorts"] = json!({ format!("{port}/tcp"): {} });
        }
        let config = serde_json::to_vec(&config).map_err(std::io::Error::other)?;
        let config_digest = format!("sha256:{}", sha256(&config));
        let layer_refs: Vec<serde_json::Value> = digests
            .iter()
            .zip(layers)
            .map(|(d, l)| {
                json!({
                    "mediaType": "application/vnd.oci.image.layer.v1.tar",
                    "digest": d,
                    "size": l.len()
                })
            })
            .collect();
        let manifest = serde_json::to_vec(&json!({
            "schemaVersion": 2,
            "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "config": {
                "mediaType": "application/vnd.oci.image.config.v1+json",
                "digest": config_digest,
                "size": config.len()
            },
            "layers": layer_refs
        }))
        .map_err(std::io::Error::other)?;
        let manifest_digest = format!("sha256:{}", sha256(&manifest));
        for name in &image.names {
            manifests.push(json!({
                "mediaType": "application/vnd.oci.image.manifest.v1+json",
                "digest": manifest_digest,
                "size": manifest.len(),
                "annotations": { "io.containerd.image.name": name }
            }));
        }
        blobs.push((config_digest, config));
        blobs.push((manifest_digest, manifest));
    }
    let index = serde_json::to_vec(&json!({ "schemaVersion": 2, "manifests": manifests }))
        .map_err(std::io::Error::other)?;
    let mut b = tar::Builder::new(Vec::new());
    add_file(
        &mut b,
        "oci-layout",
        0o644,
        br#"{"imageLayoutVersion":"1.0.0"}"#,
    )?;
    add_file(&mut b, "index.json", 0o644, &index)?;
    for (digest, data) in &blobs {
        let name = format!("blobs/sha256/{}", digest.trim_start_matches("sha256:"));
        add_file(&mut b, &name, 0o644, data)?;
    }
    b.into_inner()
}

/// The busybox root filesystem layer, from this machine's busybox-static.
fn busybox_layer() -> Result<Vec<u8>, Error> {
    let busybox_path = which("busybox", "busybox-static")?;
    let busybox = std::fs::read(&busybox_path).map_err(|source| Error::Read {
        path: busybox_path.clone(),
        source,
    })?;
    let list = Command::new(&busybox_path)
        .arg("--list")
        .output()
        .map_err(|source| Error::Command {
            command: "busybox --list".into(),
            source,
        })?;
    let applets: Vec<String> = String::from_utf8_lossy(&list.stdout)
        .lines()
        .map(str::to_string)
        .collect();
    rootfs_layer(&busybox, &applets).map_err(|source| Error::Write {
        path: busybox_path,
        source,
    })
}

/// Writes `bytes` (an OCI layout tar) to `file` and imports it into containerd's `k8s.io`
/// namespace (the only one CRI sees) with `ctr`.
fn import(socket: &Path, file: &Path, bytes: &[u8]) -> Result<(), Error> {
    let ctr = which("ctr", "containerd")?;
    std::fs::write(file, bytes).map_err(|source| Error::Write {
        path: file.to_path_buf(),
        source,
    })?;
    let out = Command::new(ctr)
        .arg("--address")
        .arg(socket)
        .args(["--namespace", "k8s.io", "images", "import"])
        .arg(file)
        .output()
        .map_err(|source| Error::Command {
            command: "ctr images import".into(),
            source,
        })?;
    if !out.status.success() {
        return Err(Error::Import {
            file: file.to_path_buf(),
            stderr: String::from_utf8_lossy(&out.stderr).trim().into(),
        });
    }
    Ok(())
}

/// Builds the layout from this machine's busybox and imports it. Returns every image name
/// imported.
pub fn preload(socket: &Path, work_dir: &Path) -> Result<Vec<&'static str>, Error> {
    let layer = busybox_layer()?;
    let file = work_dir.join("klab-images.oci.tar");
    let images: Vec<Image> = IMAGES
        .iter()
        .map(|i| Image {
            names: i.names.iter().map(|n| n.to_string()).collect(),
            cmd: i.cmd.iter().map(|c| c.to_string()).collect(),
            exposed_port: i.exposed_port,
        })
        .collect();
    let bytes = oci_layout(&[layer], &images).map_err(|source| Error::Write {
        path: file.clone(),
        source,
    })?;
    import(socket, &file, &bytes)?;
    Ok(IMAGES
        .iter()
        .flat_map(|i| i.names.iter().copied())
        .collect())
}

/// Host programs the klab image carries besides klab, when this machine has them: iptables
/// for kube-proxy, etcd for `klab up --store etcd`.
const HOST_PROGRAMS: &[&str] = &["iptables", "iptables-save", "iptables-restore", "etcd"];

/// The shared libraries `ldd` names for `program` (the loader included), as paths.
fn libraries(program: &Path) -> Vec<std::path::PathBuf> {
    let Ok(out) = Command::new("ldd").arg(program).output() else {
        return Vec::new();
    };
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| {
            let l = l.trim();
            let path = match l.split_once("=>") {
                Some((_, rest)) => rest.split_whitespace().next()?,
                None => l.split_whitespace().next()?,
            };
            path.starts_with('/').then(|| path.into())
        })
        .collect()
}

/// The klab image's own layer: the klab binary with a link per component name (so a
/// manifest's `command: [kube-apiserver, ...]` runs klab as kube-apiserver), the host programs
/// of [`HOST_PROGRAMS`] with the libraries they load, and iptables' extensions.
fn klab_layer(exe: &Path, work_dir: &Path) -> Result<Vec<u8>, Error> {
    let read = |path: &Path| {
        std::fs::read(path).map_err(|source| Error::Read {
            path: path.to_path_buf(),
            source,
        })
    };
    let io = |source| Error::Write {
        path: exe.to_path_buf(),
        source,
    };
    let mut files: std::collections::BTreeMap<String, (Vec<u8>, u32)> = Default::default();
    let mut links: std::collections::BTreeMap<String, String> = Default::default();
    let mut programs = vec![exe.to_path_buf()];
    // Without its debug info (binutils' strip, where installed) the binary is a quarter the
    // size, and the image imports four times faster; the host's copy keeps it.
    let stripped = work_dir.join("klab.stripped");
    let strip_ok = Command::new("strip")
        .args(["--strip-debug", "-o"])
        .arg(&stripped)
        .arg(exe)
        .output()
        .is_ok_and(|o| o.status.success());
    let binary = if strip_ok {
        let b = read(&stripped)?;
        let _ = std::fs::remove_file(&stripped);
        b
    } else {
        read(exe)?
    };
    files.insert("usr/local/bin/klab".into(), (binary, 0o755));
    for (link, _) in crate::cli::COMPONENT_LINKS {
        links.insert(format!("usr/local/bin/{link}"), "klab".into());
    }
    for name in HOST_PROGRAMS {
        let Some(found) = std::env::var_os("PATH").and_then(|paths| {
            std::env::split_paths(&paths)
                .map(|d| d.join(name))
                .find(|p| p.is_file())
        }) else {
            continue;
        };
        let real = std::fs::canonicalize(&found).map_err(|source| Error::Read {
            path: found.clone(),
            source,
        })?;
        let real_str = real.display().to_string();
        files.insert(
            real_str.trim_start_matches('/').into(),
            (read(&real)?, 0o755),
        );
        links.insert(format!("usr/sbin/{name}"), real_str);
        programs.push(real);
    }
    let xtables = Path::new("/usr/lib/x86_64-linux-gnu/xtables");
    if let Ok(dir) = std::fs::read_dir(xtables) {
        for e in dir.flatten() {
            let p = e.path();
            files.insert(
                p.display().to_string().trim_start_matches('/').into(),
                (read(&p)?, 0o644),
            );
            programs.push(p);
        }
    }
    for prog in &programs {
        for lib in libraries(prog) {
            let key = lib
                .display()
                .to_string()
                .trim_start_matches('/')
                .to_string();
            if let std::collections::btree_map::Entry::Vacant(e) = files.entry(key) {
                e.insert((read(&lib)?, 0o755));
            }
        }
    }
    let mut b = tar::Builder::new(Vec::new());
    let mut dirs = std::collections::BTreeSet::new();
    for path in files.keys().chain(links.keys()) {
        let mut cur = Path::new(path).parent();
        while let Some(d) = cur.filter(|d| !d.as_os_str().is_empty()) {
            dirs.insert(d.display().to_string());
            cur = d.parent();
        }
    }
    // Parents before children: sorted by depth, then name.
    let mut dirs: Vec<String> = dirs.into_iter().collect();
    dirs.sort_by_key(|d| (d.matches('/').count(), d.clone()));
    for d in dirs {
        let mut h = header(tar::EntryType::Directory, 0o755, 0);
        b.append_data(&mut h, format!("{d}/"), std::io::empty())
            .map_err(io)?;
    }
    for (path, (data, mode)) in &files {
        add_file(&mut b, path, *mode, data).map_err(io)?;
    }
    for (path, target) in &links {
        let mut h = header(tar::EntryType::Symlink, 0o777, 0);
        b.append_link(&mut h, path, target).map_err(io)?;
    }
    b.into_inner().map_err(io)
}

/// Imports the klab image (`image`): busybox's root filesystem plus [`klab_layer`], so the
/// control plane's static pods and kube-proxy run the very binary that started them.
pub fn preload_klab(socket: &Path, work_dir: &Path, exe: &Path, image: &str) -> Result<(), Error> {
    let layers = vec![busybox_layer()?, klab_layer(exe, work_dir)?];
    let file = work_dir.join("klab-image.oci.tar");
    let bytes = oci_layout(
        &layers,
        &[Image {
            names: vec![image.to_string()],
            cmd: vec!["klab".into()],
            exposed_port: None,
        }],
    )
    .map_err(|source| Error::Write {
        path: file.clone(),
        source,
    })?;
    import(socket, &file, &bytes)?;
    // The tar was only the way in: containerd holds the image now.
    let _ = std::fs::remove_file(&file);
    Ok(())
}
