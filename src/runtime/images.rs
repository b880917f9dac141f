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
    let layer_digest = format!("sha256:{}", sha256(&layer));
    let mut blobs: Vec<(String, Vec<u8>)> = vec![(layer_digest.clone(), layer.clone())];
    let mut manifests = Vec::new();
    for image in IMAGES {
        let mut config = json!({
            "architecture": "amd64",
            "os": "linux",
            "config": {
                "Cmd": image.cmd,
                "Env": ["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"],
                "WorkingDir": "/"
            },
            "rootfs": { "type": "layers", "diff_ids": [layer_digest] },
            "history": [{ "created_by": "klab: Debian busybox-static" }]
        });
        if let Some(port) = image.exposed_port {
            config["config"]["ExposedPorts"] = json!({ format!("{port}/tcp"): {} });
        }
        let config = serde_json::to_vec(&config).map_err(std::io::Error::other)?;
        let config_digest = format!("sha256:{}", sha256(&config));
        let manifest = serde_json::to_vec(&json!({
            "schemaVersion": 2,
            "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "config": {
                "mediaType": "application/vnd.oci.image.config.v1+json",
                "digest": config_digest,
                "size": config.len()
            },
            "layers": [{
                "mediaType": "application/vnd.oci.image.layer.v1.tar",
                "digest": layer_digest,
                "size": layer.len()
            }]
        }))
        .map_err(std::io::Error::other)?;
        let manifest_digest = format!("sha256:{}", sha256(&manifest));
        for name in image.names {
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

/// Builds the layout from this machine's busybox and imports it into containerd's `k8s.io`
/// namespace (the only one CRI sees). Returns every image name imported.
pub fn preload(socket: &Path, work_dir: &Path) -> Result<Vec<&'static str>, Error> {
    let busybox_path = which("busybox", "busybox-static")?;
    let ctr = which("ctr", "containerd")?;
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
    let file = work_dir.join("klab-images.oci.tar");
    let write = |source| Error::Write {
        path: file.clone(),
        source,
    };
    let bytes = layout(&busybox, &applets).map_err(write)?;
    std::fs::write(&file, bytes).map_err(write)?;
    let out = Command::new(ctr)
        .arg("--address")
        .arg(socket)
        .args(["--namespace", "k8s.io", "images", "import"])
        .arg(&file)
        .output()
        .map_err(|source| Error::Command {
            command: "ctr images import".into(),
            source,
        })?;
    if !out.status.success() {
        return Err(Error::Import {
            file,
            stderr: String::from_utf8_lossy(&out.stderr).trim().into(),
        });
    }
    Ok(IMAGES
        .iter()
        .flat_map(|i| i.names.iter().copied())
        .collect())
}
