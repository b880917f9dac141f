//! A container's environment: `env` values, `valueFrom` (fieldRef, configMapKeyRef,
//! secretKeyRef) and `envFrom` (configMapRef, secretRef with prefix), read from the API when
//! the container is created. Mirrors upstream's `makeEnvironmentVariables`; leaves out
//! resourceFieldRef and `$(VAR)` expansion.

use std::collections::BTreeMap;

use k8s_cri::v1 as cri;
use k8s_openapi::api::core::v1::{ConfigMap, Container, Pod, Secret};
use kube::api::Api;

use super::Error;
use super::spec::PodRef;

/// The pod's own fields a `fieldRef` can name.
pub(super) fn field(pod: &Pod, path: &str, pod_ip: &str, host_ip: &str) -> String {
    let m = &pod.metadata;
    let s = pod.spec.clone().unwrap_or_default();
    let indexed = |map: &Option<BTreeMap<String, String>>, prefix: &str| {
        let key = path.strip_prefix(prefix)?.strip_suffix("']")?;
        map.as_ref()?.get(key).cloned()
    };
    match path {
        "metadata.name" => m.name.clone().unwrap_or_default(),
        "metadata.namespace" => m.namespace.clone().unwrap_or_default(),
        "metadata.uid" => m.uid.clone().unwrap_or_default(),
        "spec.nodeName" => s.node_name.unwrap_or_default(),
        "spec.serviceAccountName" => s.service_account_name.unwrap_or_default(),
        "status.podIP" => pod_ip.into(),
        "status.hostIP" => host_ip.into(),
        _ => indexed(&m.labels, "metadata.labels['")
            .or_else(|| indexed(&m.annotations, "metadata.annotations['"))
            .unwrap_or_default(),
    }
}

struct Sources<'a> {
    client: &'a kube::Client,
    pod: &'a PodRef,
    config_maps: BTreeMap<String, Option<ConfigMap>>,
    secrets: BTreeMap<String, Option<Secret>>,
}

impl Sources<'_> {
    fn err(&self, what: String) -> impl FnOnce(kube::Error) -> Error + '_ {
        move |source| Error::Env {
            pod: self.pod.key(),
            what,
            source,
        }
    }

    async fn config_map(&mut self, name: &str) -> Result<BTreeMap<String, String>, Error> {
        if !self.config_maps.contains_key(name) {
            let api: Api<ConfigMap> = Api::namespaced(self.client.clone(), &self.pod.namespace);
            let got = api
                .get_opt(name)
                .await
                .map_err(self.err(format!("configmap {name}")))?;
            self.config_maps.insert(name.into(), got);
        }
        Ok(self.config_maps[name]
            .as_ref()
            .and_then(|c| c.data.clone())
            .unwrap_or_default())
    }

    async fn secret(&mut self, name: &str) -> Result<BTreeMap<String, String>, Error> {
        if !self.secrets.contains_key(name) {
            let api: Api<Secret> = Api::namespaced(self.client.clone(), &self.pod.namespace);
            let got = api
                .get_opt(name)
                .await
                .map_err(self.err(format!("secret {name}")))?;
            self.secrets.insert(name.into(), got);
        }
        Ok(self.secrets[name]
            .as_ref()
            .and_then(|s| s.data.clone())
            .unwrap_or_default()
            .into_iter()
            .map(|(k, v)| (k, String::from_utf8_lossy(&v.0).into_owned()))
            .collect())
    }
}

fn missing(pod: &PodRef, what: String) -> Error {
    Error::Missing {
        pod: pod.key(),
        what,
    }
}

/// The container's environment as CRI key/value pairs, `envFrom` first, then `env`.
pub async fn resolve(
    client: &kube::Client,
    pod: &Pod,
    c: &Container,
    pod_ip: &str,
    host_ip: &str,
) -> Result<Vec<cri::KeyValue>, Error> {
    let r = PodRef::of(pod);
    let mut src = Sources {
        client,
        pod: &r,
        config_maps: BTreeMap::new(),
        secrets: BTreeMap::new(),
    };
    let mut out: Vec<(String, String)> = Vec::new();
    for from in c.env_from.iter().flatten() {
        let prefix = from.prefix.clone().unwrap_or_default();
        let data = if let Some(cm) = &from.config_map_ref {
            src.config_map(&cm.name).await?
        } else if let Some(s) = &from.secret_ref {
            src.secret(&s.name).await?
        } else {
            BTreeMap::new()
        };
        out.extend(data.into_iter().map(|(k, v)| (format!("{prefix}{k}"), v)));
    }
    for e in c.env.iter().flatten() {
        let value = match e.value_from.as_ref() {
            None => e.value.clone().unwrap_or_default(),
            Some(vf) => {
                if let Some(f) = &vf.field_ref {
                    field(pod, &f.field_path, pod_ip, host_ip)
                } else if let Some(k) = &vf.config_map_key_ref {
                    match src.config_map(&k.name).await?.get(&k.key) {
                        Some(v) => v.clone(),
                        None if k.optional.unwrap_or(false) => continue,
                        None => {
                            return Err(missing(&r, format!("configmap {} key {}", k.name, k.key)));
                        }
                    }
                } else if let Some(k) = &vf.secret_key_ref {
                    match src.secret(&k.name).await?.get(&k.key) {
                        Some(v) => v.clone(),
                        None if k.optional.unwrap_or(false) => continue,
                        None => {
                            return Err(missing(&r, format!("secret {} key {}", k.name, k.key)));
                        }
                    }
                } else {
                    String::new()
                }
            }
        };
        out.push((e.name.clone(), value));
    }
    Ok(out
        .into_iter()
        .map(|(key, value)| cri::KeyValue { key, value })
        .collect())
}
