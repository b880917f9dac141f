//! The pod network of one node: a CNI `bridge` (cni0, gateway, IP masquerade, host-local IPAM
//! on the node's pod CIDR) followed by `portmap` for hostPort, as kind's kindnet and the CNI
//! reference plugins set it up. No loopback plugin: containerd brings up `lo` itself.

use std::path::{Path, PathBuf};

use super::Error;

/// Where Debian's containernetworking-plugins package puts the plugins (not /opt/cni/bin).
pub const DEBIAN_PLUGIN_DIR: &str = "/usr/lib/cni";

/// The conflist for a node whose pods get addresses from `pod_cidr` (e.g. `10.244.0.0/24`).
pub fn conflist(pod_cidr: &str) -> serde_json::Value {
    serde_json::json!({
        "cniVersion": "1.0.0",
        "name": "klab",
        "plugins": [
            {
                "type": "bridge",
                "bridge": "cni0",
                "isGateway": true,
                "ipMasq": true,
                "hairpinMode": true,
                "ipam": {
                    "type": "host-local",
                    "ranges": [[{ "subnet": pod_cidr }]],
                    "routes": [{ "dst": "0.0.0.0/0" }]
                }
            },
            { "type": "portmap", "capabilities": { "portMappings": true } }
        ]
    })
}

/// Writes `10-klab.conflist` into `conf_dir`; containerd's CRI plugin picks it up live.
pub fn write_conflist(conf_dir: &Path, pod_cidr: &str) -> Result<PathBuf, Error> {
    let path = conf_dir.join("10-klab.conflist");
    let write = |source| Error::Write {
        path: path.clone(),
        source,
    };
    std::fs::create_dir_all(conf_dir).map_err(write)?;
    let text = serde_json::to_string_pretty(&conflist(pod_cidr))
        .map_err(std::io::Error::other)
        .map_err(write)?;
    std::fs::write(&path, text).map_err(write)?;
    Ok(path)
}
