//! The resource table: every REST resource klab's API server serves, one entry each.
//!
//! Mirrors what upstream spreads over each type's `registry/*/storage` package and the
//! discovery documents (`/api/v1`, `/apis/<group>/<version>`): group, version, kind, plural and
//! singular names, short names, scope, verbs, categories, subresources and the etcd key prefix
//! (upstream's own, exceptions included: nodes live under `minions`, services under
//! `services/specs`, endpoints under `services/endpoints`). Adding a resource is one entry.

/// The verbs of an ordinary stored resource, in discovery's order.
pub const STORED: &[&str] = &[
    "create",
    "delete",
    "deletecollection",
    "get",
    "list",
    "patch",
    "update",
    "watch",
];
/// Verbs of a review resource: computed on the spot, never stored.
const CREATE_ONLY: &[&str] = &["create"];

/// One REST resource.
#[derive(Debug)]
pub struct Resource {
    /// API group, `""` for the legacy core group served under `/api`.
    pub group: &'static str,
    pub version: &'static str,
    pub kind: &'static str,
    pub plural: &'static str,
    pub singular: &'static str,
    pub short_names: &'static [&'static str],
    pub namespaced: bool,
    pub verbs: &'static [&'static str],
    pub categories: &'static [&'static str],
    /// Subresources served beside the resource (`status`, `scale`).
    pub subresources: &'static [&'static str],
    /// Key prefix in etcd; empty for resources that are computed, never stored.
    pub etcd_prefix: &'static str,
    /// Whether `metadata.generation` counts spec changes (upstream: the workload kinds).
    pub has_generation: bool,
}

impl Resource {
    /// `v1` for the core group, `group/version` otherwise, as objects carry it.
    pub fn api_version(&self) -> String {
        if self.group.is_empty() {
            self.version.to_owned()
        } else {
            format!("{}/{}", self.group, self.version)
        }
    }

    /// Whether objects of this resource live in etcd.
    pub fn is_stored(&self) -> bool {
        !self.etcd_prefix.is_empty()
    }

    /// The etcd key of one object (`namespace` is ignored for cluster-scoped resources).
    pub fn key(&self, namespace: &str, name: &str) -> String {
        if self.namespaced {
            format!("{}/{namespace}/{name}", self.etcd_prefix)
        } else {
            format!("{}/{name}", self.etcd_prefix)
        }
    }

    /// The etcd prefix that a list covers: one namespace, or all of them.
    pub fn list_prefix(&self, namespace: Option<&str>) -> String {
        match namespace {
            Some(ns) if self.namespaced => format!("{}/{ns}/", self.etcd_prefix),
            _ => format!("{}/", self.etcd_prefix),
        }
    }
}

macro_rules! res {
    ($group:expr, $version:expr, $kind:expr, $plural:expr, $singular:expr, [$($short:expr),*],
     $ns:expr, $verbs:expr, [$($cat:expr),*], [$($sub:expr),*], $prefix:expr, $gen:expr) => {
        Resource {
            group: $group,
            version: $version,
            kind: $kind,
            plural: $plural,
            singular: $singular,
            short_names: &[$($short),*],
            namespaced: $ns,
            verbs: $verbs,
            categories: &[$($cat),*],
            subresources: &[$($sub),*],
            etcd_prefix: $prefix,
            has_generation: $gen,
        }
    };
}

#[rustfmt::skip]
/// Every resource served, core group first, then the named groups in discovery order.
pub static RESOURCES: &[Resource] = &[
    res!("", "v1", "Namespace", "namespaces", "namespace", ["ns"], false, STORED, [], ["status", "finalize"], "/registry/namespaces", false),
    res!("", "v1", "Node", "nodes", "node", ["no"], false, STORED, [], ["status", "proxy"], "/registry/minions", false),
    res!("", "v1", "Pod", "pods", "pod", ["po"], true, STORED, ["all"], ["status", "binding", "eviction", "log", "exec", "attach", "portforward", "proxy"], "/registry/pods", false),
    res!("", "v1", "Binding", "bindings", "binding", [], true, CREATE_ONLY, [], [], "", false),
    res!("", "v1", "Service", "services", "service", ["svc"], true, STORED, ["all"], ["status", "proxy"], "/registry/services/specs", false),
    res!("", "v1", "Endpoints", "endpoints", "endpoints", ["ep"], true, STORED, [], [], "/registry/services/endpoints", false),
    res!("", "v1", "ConfigMap", "configmaps", "configmap", ["cm"], true, STORED, [], [], "/registry/configmaps", false),
    res!("", "v1", "Secret", "secrets", "secret", [], true, STORED, [], [], "/registry/secrets", false),
    res!("", "v1", "ServiceAccount", "serviceaccounts", "serviceaccount", ["sa"], true, STORED, [], ["token"], "/registry/serviceaccounts", false),
    res!("", "v1", "Event", "events", "event", ["ev"], true, STORED, [], [], "/registry/events", false),
    res!("", "v1", "ReplicationController", "replicationcontrollers", "replicationcontroller", ["rc"], true, STORED, ["all"], ["status", "scale"], "/registry/controllers", true),
    res!("", "v1", "PersistentVolumeClaim", "persistentvolumeclaims", "persistentvolumeclaim", ["pvc"], true, STORED, [], ["status"], "/registry/persistentvolumeclaims", false),
    res!("", "v1", "PersistentVolume", "persistentvolumes", "persistentvolume", ["pv"], false, STORED, [], ["status"], "/registry/persistentvolumes", false),
    res!("", "v1", "LimitRange", "limitranges", "limitrange", ["limits"], true, STORED, [], [], "/registry/limitranges", false),
    res!("", "v1", "ResourceQuota", "resourcequotas", "resourcequota", ["quota"], true, STORED, [], ["status"], "/registry/resourcequotas", false),
    res!("", "v1", "PodTemplate", "podtemplates", "podtemplate", [], true, STORED, [], [], "/registry/podtemplates", false),
    res!("apps", "v1", "Deployment", "deployments", "deployment", ["deploy"], true, STORED, ["all"], ["status", "scale"], "/registry/deployments", true),
    res!("apps", "v1", "ReplicaSet", "replicasets", "replicaset", ["rs"], true, STORED, ["all"], ["status", "scale"], "/registry/replicasets", true),
    res!("apps", "v1", "DaemonSet", "daemonsets", "daemonset", ["ds"], true, STORED, ["all"], ["status"], "/registry/daemonsets", true),
    res!("apps", "v1", "StatefulSet", "statefulsets", "statefulset", ["sts"], true, STORED, ["all"], ["status", "scale"], "/registry/statefulsets", true),
    res!("apps", "v1", "ControllerRevision", "controllerrevisions", "controllerrevision", [], true, STORED, [], [], "/registry/controllerrevisions", false),
    res!("batch", "v1", "Job", "jobs", "job", [], true, STORED, ["all"], ["status"], "/registry/jobs", true),
    res!("batch", "v1", "CronJob", "cronjobs", "cronjob", ["cj"], true, STORED, ["all"], ["status"], "/registry/cronjobs", true),
    res!("autoscaling", "v2", "HorizontalPodAutoscaler", "horizontalpodautoscalers", "horizontalpodautoscaler", ["hpa"], true, STORED, ["all"], ["status"], "/registry/horizontalpodautoscalers", false),
    res!("policy", "v1", "PodDisruptionBudget", "poddisruptionbudgets", "poddisruptionbudget", ["pdb"], true, STORED, [], ["status"], "/registry/poddisruptionbudgets", true),
    res!("coordination.k8s.io", "v1", "Lease", "leases", "lease", [], true, STORED, [], [], "/registry/leases", false),
    res!("events.k8s.io", "v1", "Event", "events", "event", ["ev"], true, STORED, [], [], "/registry/events", false),
    res!("discovery.k8s.io", "v1", "EndpointSlice", "endpointslices", "endpointslice", [], true, STORED, [], [], "/registry/endpointslices", false),
    res!("networking.k8s.io", "v1", "Ingress", "ingresses", "ingress", ["ing"], true, STORED, [], ["status"], "/registry/ingress", true),
    res!("networking.k8s.io", "v1", "IngressClass", "ingressclasses", "ingressclass", [], false, STORED, [], [], "/registry/ingressclasses", false),
    res!("networking.k8s.io", "v1", "NetworkPolicy", "networkpolicies", "networkpolicy", ["netpol"], true, STORED, [], [], "/registry/networkpolicies", true),
    res!("storage.k8s.io", "v1", "StorageClass", "storageclasses", "storageclass", ["sc"], false, STORED, [], [], "/registry/storageclasses", false),
    res!("scheduling.k8s.io", "v1", "PriorityClass", "priorityclasses", "priorityclass", ["pc"], false, STORED, [], [], "/registry/priorityclasses", false),
    res!("node.k8s.io", "v1", "RuntimeClass", "runtimeclasses", "runtimeclass", [], false, STORED, [], [], "/registry/runtimeclasses", false),
    res!("rbac.authorization.k8s.io", "v1", "ClusterRole", "clusterroles", "clusterrole", [], false, STORED, [], [], "/registry/clusterroles", false),
    res!("rbac.authorization.k8s.io", "v1", "ClusterRoleBinding", "clusterrolebindings", "clusterrolebinding", [], false, STORED, [], [], "/registry/clusterrolebindings", false),
    res!("rbac.authorization.k8s.io", "v1", "Role", "roles", "role", [], true, STORED, [], [], "/registry/roles", false),
    res!("rbac.authorization.k8s.io", "v1", "RoleBinding", "rolebindings", "rolebinding", [], true, STORED, [], [], "/registry/rolebindings", false),
    res!("authentication.k8s.io", "v1", "SelfSubjectReview", "selfsubjectreviews", "selfsubjectreview", [], false, CREATE_ONLY, [], [], "", false),
    res!("authentication.k8s.io", "v1", "TokenReview", "tokenreviews", "tokenreview", [], false, CREATE_ONLY, [], [], "", false),
    res!("authorization.k8s.io", "v1", "SelfSubjectAccessReview", "selfsubjectaccessreviews", "selfsubjectaccessreview", [], false, CREATE_ONLY, [], [], "", false),
    res!("authorization.k8s.io", "v1", "SelfSubjectRulesReview", "selfsubjectrulesreviews", "selfsubjectrulesreview", [], false, CREATE_ONLY, [], [], "", false),
    res!("authorization.k8s.io", "v1", "SubjectAccessReview", "subjectaccessreviews", "subjectaccessreview", [], false, CREATE_ONLY, [], [], "", false),
];

/// Finds a resource by group, version and plural name.
pub fn find(group: &str, version: &str, plural: &str) -> Option<&'static Resource> {
    RESOURCES
        .iter()
        .find(|r| r.group == group && r.version == version && r.plural == plural)
}

/// The named API groups in discovery order, each with its one served version.
pub fn groups() -> Vec<(&'static str, &'static str)> {
    let mut out: Vec<(&str, &str)> = Vec::new();
    for r in RESOURCES.iter().filter(|r| !r.group.is_empty()) {
        if !out.iter().any(|(g, _)| *g == r.group) {
            out.push((r.group, r.version));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_follow_upstream() {
        let pods = find("", "v1", "pods").unwrap();
        assert_eq!(pods.key("default", "web"), "/registry/pods/default/web");
        let nodes = find("", "v1", "nodes").unwrap();
        assert_eq!(nodes.key("ignored", "n1"), "/registry/minions/n1");
        let svc = find("", "v1", "services").unwrap();
        assert_eq!(svc.list_prefix(Some("a")), "/registry/services/specs/a/");
        assert_eq!(pods.list_prefix(None), "/registry/pods/");
    }

    #[test]
    fn every_plural_is_unique_within_its_group() {
        for (i, a) in RESOURCES.iter().enumerate() {
            for b in &RESOURCES[i + 1..] {
                assert!(
                    !(a.group == b.group && a.plural == b.plural),
                    "{}",
                    a.plural
                );
            }
        }
    }
}
