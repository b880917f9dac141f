//! kube-controller-manager: the control loops that make the cluster's current state match the
//! desired state written in the API, each a controller of its own in one process.
//!
//! Mirrors `k8s.io/kubernetes/cmd/kube-controller-manager`: `--controllers` chooses which
//! run (`*` the defaults, `name` to add, `-name` to remove), all share one client, one leader
//! election and one health server. Every controller follows [`runner`]'s loop. Leaves out the
//! controllers not listed in [`ALL`], and the per-controller service-account credentials.

pub mod daemonset;
pub mod deployment;
pub mod endpoints;
pub mod gc;
pub mod namespace;
pub mod nodeipam;
pub mod nodelifecycle;
pub mod podgc;
pub mod replicaset;
pub mod rootca;
pub mod runner;
pub mod serviceaccount;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::core::v1::{Pod, PodTemplateSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, ObjectMeta, OwnerReference};

use crate::cli::ControllerManagerArgs;
use crate::component::{self, ComponentError, health, log};

/// The controllers klab has, by upstream's names.
pub const ALL: &[&str] = &[
    "deployment",
    "replicaset",
    "daemonset",
    "garbage-collector",
    "namespace",
    "serviceaccount",
    "nodeipam",
    "node-lifecycle",
    "podgc",
    "endpoints",
    "endpointslice",
    "root-ca-cert-publisher",
];

#[derive(Debug, thiserror::Error)]
pub enum ControllerError {
    #[error("starting the async runtime")]
    StartRuntime(#[source] std::io::Error),
    #[error(transparent)]
    Component(#[from] ComponentError),
    #[error("invalid --controllers: unknown controller {0:?} (klab has: {all})", all = ALL.join(", "))]
    UnknownController(String),
    #[error("invalid --cluster-cidr {0:?}: expected an IPv4 CIDR such as 10.244.0.0/16")]
    ClusterCidr(String),
    #[error("--allocate-node-cidrs needs --cluster-cidr")]
    NoClusterCidr,
    #[error("reading --root-ca-file {path}")]
    RootCaFile {
        path: std::path::PathBuf,
        #[source]
        source: std::io::Error,
    },
}

/// Upstream controllers klab has not built: named in `--controllers`, they are skipped with a
/// note instead of failing, so kubeadm's and the seed's command lines start.
pub const NOT_BUILT: &[&str] = &[
    "bootstrapsigner",
    "tokencleaner",
    "statefulset",
    "job",
    "cronjob",
    "serviceaccount-token",
    "ttl",
    "ttl-after-finished",
    "csrsigning",
    "csrapproving",
    "csrcleaner",
    "horizontalpodautoscaling",
    "disruption",
    "persistentvolume-binder",
    "attachdetach",
    "persistentvolume-expander",
    "pvc-protection",
    "pv-protection",
    "clusterrole-aggregation",
    "route",
    "service",
    "cloud-node-lifecycle",
    "resourcequota",
    "replicationcontroller",
    "ephemeral-volume",
    "endpointslice-mirroring",
];

/// Which controllers `--controllers` turns on, upstream's way.
pub fn enabled(flags: &[String], all: &[&str]) -> Result<Vec<String>, String> {
    let mut on: Vec<String> = Vec::new();
    let star = flags.iter().any(|f| f == "*");
    for name in all {
        let off = flags.iter().any(|f| f.strip_prefix('-') == Some(name));
        let named = flags.iter().any(|f| f == name);
        if (star || named) && !off {
            on.push((*name).to_owned());
        }
    }
    for f in flags {
        let n = f.strip_prefix('-').unwrap_or(f);
        if n != "*" && !all.contains(&n) {
            if NOT_BUILT.contains(&n) {
                log(
                    'W',
                    format!("--controllers names {n:?}, which klab has not built yet: skipped"),
                );
                continue;
            }
            return Err(n.to_owned());
        }
    }
    Ok(on)
}

/// Whether labels match a metav1 LabelSelector (matchLabels and matchExpressions).
pub fn selector_matches(sel: &LabelSelector, labels: &BTreeMap<String, String>) -> bool {
    let ml = sel.match_labels.as_ref();
    let me = sel.match_expressions.as_deref().unwrap_or_default();
    if ml.is_none_or(BTreeMap::is_empty) && me.is_empty() {
        return false;
    }
    ml.into_iter()
        .flatten()
        .all(|(k, v)| labels.get(k) == Some(v))
        && me.iter().all(|r| {
            let have = labels.get(&r.key);
            let values = r.values.as_deref().unwrap_or_default();
            match r.operator.as_str() {
                "In" => have.is_some_and(|v| values.contains(v)),
                "NotIn" => have.is_none_or(|v| !values.contains(v)),
                "Exists" => have.is_some(),
                "DoesNotExist" => have.is_none(),
                _ => false,
            }
        })
}

/// The controller owner reference of an object, if any.
pub fn controller_of(refs: Option<&Vec<OwnerReference>>) -> Option<&OwnerReference> {
    refs.into_iter()
        .flatten()
        .find(|r| r.controller == Some(true))
}

/// An owner reference that makes `owner` the controller of what carries it.
pub fn owner_ref<K: kube::Resource<DynamicType = ()>>(owner: &K) -> OwnerReference {
    OwnerReference {
        api_version: K::api_version(&()).into_owned(),
        kind: K::kind(&()).into_owned(),
        name: owner.meta().name.clone().unwrap_or_default(),
        uid: owner.meta().uid.clone().unwrap_or_default(),
        controller: Some(true),
        block_owner_deletion: Some(true),
    }
}

/// A pod for `owner` made from its template (upstream's `GetPodFromTemplate`): named
/// `<owner>-` plus a generated suffix, in the owner's namespace, with the template's labels,
/// annotations and spec, and `owner` as its controller.
pub fn pod_from_template<K: kube::Resource<DynamicType = ()>>(
    owner: &K,
    template: &PodTemplateSpec,
) -> Pod {
    let meta = template.metadata.clone().unwrap_or_default();
    Pod {
        metadata: ObjectMeta {
            generate_name: Some(format!(
                "{}-",
                owner.meta().name.as_deref().unwrap_or_default()
            )),
            namespace: owner.meta().namespace.clone(),
            labels: meta.labels,
            annotations: meta.annotations,
            owner_references: Some(vec![owner_ref(owner)]),
            ..Default::default()
        },
        spec: template.spec.clone(),
        status: None,
    }
}

/// Runs kube-controller-manager until a controller fails or leadership is lost.
pub fn run(args: ControllerManagerArgs) -> Result<(), ControllerError> {
    let on = enabled(&args.controllers, ALL).map_err(ControllerError::UnknownController)?;
    let grace = component::parse_duration(&args.node_monitor_grace_period).map_err(|reason| {
        ComponentError::Flag {
            flag: "node-monitor-grace-period",
            reason,
        }
    })?;
    let period = component::parse_duration(&args.node_monitor_period).map_err(|reason| {
        ComponentError::Flag {
            flag: "node-monitor-period",
            reason,
        }
    })?;
    let cidr = match (&args.cluster_cidr, args.allocate_node_cidrs) {
        (Some(c), true) => {
            Some(nodeipam::Cidr::parse(c).ok_or_else(|| ControllerError::ClusterCidr(c.clone()))?)
        }
        (None, true) => return Err(ControllerError::NoClusterCidr),
        _ => None,
    };
    let root_ca =
        match &args.root_ca_file {
            Some(path) => Some(std::fs::read_to_string(path).map_err(|source| {
                ControllerError::RootCaFile {
                    path: path.clone(),
                    source,
                }
            })?),
            None => None,
        };
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(ControllerError::StartRuntime)?;
    rt.block_on(async move {
        let metrics = Arc::new(health::Metrics::default());
        let client = component::start(
            &args.common,
            args.secure_port,
            "kube-controller-manager",
            metrics.clone(),
        )
        .await?;
        let lost = component::elect(&client, &args.common, "kube-controller-manager").await?;
        let mut tasks = tokio::task::JoinSet::new();
        for name in &on {
            log('I', format!("Starting \"{name}\""));
            let c = client.clone();
            match name.as_str() {
                "deployment" => tasks.spawn(deployment::run(c)),
                "replicaset" => tasks.spawn(replicaset::run(c)),
                "daemonset" => tasks.spawn(daemonset::run(c)),
                "garbage-collector" => tasks.spawn(gc::run(c)),
                "namespace" => tasks.spawn(namespace::run(c)),
                "serviceaccount" => tasks.spawn(serviceaccount::run(c)),
                "nodeipam" => match cidr {
                    Some(cidr) => tasks.spawn(nodeipam::run(c, cidr, args.node_cidr_mask_size)),
                    None => {
                        log('I', "Skipping \"nodeipam\": --allocate-node-cidrs is false");
                        continue;
                    }
                },
                "node-lifecycle" => tasks.spawn(nodelifecycle::run(c, grace, period)),
                "podgc" => tasks.spawn(podgc::run(c)),
                "endpoints" => tasks.spawn(endpoints::run_endpoints(c)),
                "endpointslice" => tasks.spawn(endpoints::run_slices(c)),
                "root-ca-cert-publisher" => match &root_ca {
                    Some(ca) => tasks.spawn(rootca::run(c, ca.clone())),
                    None => {
                        log(
                            'I',
                            "Skipping \"root-ca-cert-publisher\": --root-ca-file is not set",
                        );
                        continue;
                    }
                },
                _ => continue,
            };
        }
        tokio::select! {
            _ = tasks.join_next() => Ok(()),
            e = lost => Err(ControllerError::Component(e)),
        }
    })
}

/// How often every controller re-runs a pass even without events.
pub const RESYNC: Duration = Duration::from_secs(30);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn controllers_flag_as_upstream() {
        let f = |s: &[&str]| enabled(&s.iter().map(|x| x.to_string()).collect::<Vec<_>>(), ALL);
        assert_eq!(f(&["*"]).unwrap().len(), ALL.len());
        let some = f(&["*", "-nodeipam"]).unwrap();
        assert!(!some.contains(&"nodeipam".to_owned()) && some.contains(&"deployment".to_owned()));
        assert_eq!(f(&["replicaset"]).unwrap(), ["replicaset"]);
        assert_eq!(f(&["bogus"]), Err("bogus".to_owned()));
        assert_eq!(
            f(&["*", "bootstrapsigner", "tokencleaner"]).unwrap().len(),
            ALL.len()
        );
    }
}
