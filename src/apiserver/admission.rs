//! Admission: the NodeRestriction, Priority and ServiceAccount plugins (NamespaceLifecycle's
//! checks live in the create path).
//!
//! Priority mirrors `plugin/pkg/admission/priority`: a new pod's `spec.priorityClassName` is
//! resolved to `spec.priority` and `spec.preemptionPolicy` from its scheduling.k8s.io/v1
//! PriorityClass (the built-in `system-node-critical` and `system-cluster-critical` are
//! written at start), an unknown class is Forbidden, and a pod without a class gets 0; it
//! leaves out the `globalDefault` class and the kube-system-only rule for the system classes.
//!
//! Mirrors `plugin/pkg/admission/noderestriction`: with `--enable-admission-plugins=
//! NodeRestriction`, a kubelet (`system:node:<name>` in `system:nodes`) may create, modify and
//! delete only its own Node object, create only mirror pods bound to itself, and update the
//! status of, delete or evict only the pods bound to itself. Leaves out its label rules
//! (`node-restriction.kubernetes.io/`) and the checks on pods' service-account and volume refs.
//!
//! DefaultTolerationSeconds mirrors `plugin/pkg/admission/defaulttolerationseconds`: a new pod
//! that does not already tolerate `node.kubernetes.io/not-ready:NoExecute` (or
//! `unreachable`) gets a toleration of it for `--default-not-ready-toleration-seconds`
//! (`--default-unreachable-toleration-seconds`), 300 s each by default. That is why, on a
//! kubeadm cluster as on klab, a pod stays five minutes on a node that stopped answering
//! before the node lifecycle controller evicts it.
//!
//! The ServiceAccount plugin mirrors `plugin/pkg/admission/serviceaccount`'s mutation: a pod
//! without `spec.serviceAccountName` gets `default`, and unless `automountServiceAccountToken`
//! is false (on the pod, else on the ServiceAccount) a `kube-api-access-<5 chars>` projected
//! volume (bound token, the cluster's CA, the namespace) mounted read-only at
//! [`SA_MOUNT`] in every container. Where upstream rejects a pod whose ServiceAccount does
//! not exist yet, klab admits it without the volume, so clusters without the serviceaccount
//! controller still run pods.

use serde_json::Value;

use super::authn::UserInfo;
use super::body;
use super::handler::Ctx;
use super::rest::{fetch, target};
use super::status::ApiError;
use crate::api::resources::Resource;

/// Upstream's built-in classes (`pkg/apis/scheduling`): name, value, description.
pub const SYSTEM_PRIORITY_CLASSES: &[(&str, i64, &str)] = &[
    (
        "system-node-critical",
        2_000_001_000,
        "Used for system critical pods that must not be moved from their current node.",
    ),
    (
        "system-cluster-critical",
        2_000_000_000,
        "Used for system critical pods that must run in the cluster, but can be moved to another node if necessary.",
    ),
];

/// The Priority plugin on a pod about to be created.
pub async fn priority(
    state: &super::State,
    res: &Resource,
    pod: &mut Value,
) -> Result<(), ApiError> {
    let name = pod
        .pointer("/metadata/name")
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_owned();
    let class = pod
        .pointer("/spec/priorityClassName")
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_owned();
    let (value, policy) = if class.is_empty() {
        (0, "PreemptLowerPriority".to_owned())
    } else {
        let pcs = crate::api::resources::find("scheduling.k8s.io", "v1", "priorityclasses")
            .ok_or_else(ApiError::page_not_found)?;
        let Some(pc) = state.store.get(&pcs.key("", &class)).await? else {
            return Err(forbid(
                res,
                &name,
                format!("no PriorityClass with name {class} was found"),
            ));
        };
        (
            pc.value.get("value").and_then(Value::as_i64).unwrap_or(0),
            pc.value
                .get("preemptionPolicy")
                .and_then(Value::as_str)
                .unwrap_or("PreemptLowerPriority")
                .to_owned(),
        )
    };
    if let Some(given) = pod.pointer("/spec/priority").and_then(Value::as_i64) {
        if given != value {
            return Err(forbid(
                res,
                &name,
                format!(
                    "the integer value of priority ({given}) must not be provided in pod spec; priority admission controller computed {value} from the given PriorityClass name"
                ),
            ));
        }
    }
    if let Some(spec) = pod.get_mut("spec").and_then(Value::as_object_mut) {
        spec.insert("priority".into(), value.into());
        spec.entry("preemptionPolicy").or_insert(policy.into());
    }
    Ok(())
}

const MIRROR: &str = "kubernetes.io/config.mirror";

/// Where the ServiceAccount plugin mounts a pod's API credentials, as upstream.
pub const SA_MOUNT: &str = "/var/run/secrets/kubernetes.io/serviceaccount";
/// The prefix of the projected volume's name.
pub const SA_VOLUME_PREFIX: &str = "kube-api-access-";

fn forbid(res: &Resource, name: &str, why: String) -> ApiError {
    ApiError::forbidden(&target(res, name), &why)
}

/// The node a kubelet user speaks for, if the request comes from one.
fn node_of(user: &UserInfo) -> Option<&str> {
    let node = user.name.strip_prefix("system:node:")?;
    user.groups
        .iter()
        .any(|g| g == "system:nodes")
        .then_some(node)
}

/// Checks a request from a kubelet against NodeRestriction's rules.
pub async fn node_restriction(ctx: &Ctx, res: &Resource) -> Result<(), ApiError> {
    if !ctx.state.node_restriction {
        return Ok(());
    }
    let Some(node) = node_of(&ctx.user) else {
        return Ok(());
    };
    let info = &ctx.info;
    let write = matches!(
        info.verb.as_str(),
        "create" | "update" | "patch" | "delete" | "deletecollection"
    );
    if !write || !res.group.is_empty() {
        return Ok(());
    }
    match res.plural {
        "nodes" => {
            let name = if info.verb == "create" {
                let b = body::decode(ctx.content_type(), &ctx.body)?;
                b.pointer("/metadata/name")
                    .and_then(Value::as_str)
                    .unwrap_or_default()
                    .to_owned()
            } else {
                info.name.clone()
            };
            if name != node {
                return Err(forbid(
                    res,
                    &name,
                    format!("node \"{node}\" is not allowed to modify node \"{name}\""),
                ));
            }
        }
        "pods" if info.verb == "create" && info.subresource.is_empty() => {
            let b = body::decode(ctx.content_type(), &ctx.body)?;
            let name = b
                .pointer("/metadata/name")
                .and_then(Value::as_str)
                .unwrap_or_default();
            let mirror = b
                .pointer("/metadata/annotations")
                .and_then(|a| a.get(MIRROR))
                .is_some();
            let bound = b.pointer("/spec/nodeName").and_then(Value::as_str) == Some(node);
            if !mirror || !bound {
                return Err(forbid(
                    res,
                    name,
                    format!(
                        "pod does not have \"{MIRROR}\" annotation, node \"{node}\" can only create mirror pods bound to itself"
                    ),
                ));
            }
        }
        "pods" => {
            let pod = fetch(&ctx.state, res, &info.namespace, &info.name).await?;
            let on = pod
                .value
                .pointer("/spec/nodeName")
                .and_then(Value::as_str)
                .unwrap_or_default();
            let allowed_sub = matches!(info.subresource.as_str(), "status" | "eviction" | "")
                && (!info.subresource.is_empty() || info.verb == "delete");
            if on != node || !allowed_sub {
                return Err(forbid(
                    res,
                    &info.name,
                    format!(
                        "node \"{node}\" can only update pod status for, or delete, pods with spec.nodeName set to itself"
                    ),
                ));
            }
        }
        _ => {}
    }
    Ok(())
}

/// The DefaultTolerationSeconds plugin's settings: seconds a pod stays on a node that is
/// not ready, or unreachable, before it is evicted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DefaultTolerations {
    pub not_ready: i64,
    pub unreachable: i64,
}

impl DefaultTolerations {
    /// Adds the tolerations a new pod lacks. A toleration already covers a taint when its key
    /// is the taint's or empty, and its effect NoExecute or empty (upstream's test: the
    /// operator and value are not looked at).
    pub fn mutate_pod(&self, pod: &mut Value) {
        let Some(spec) = pod.get_mut("spec").and_then(Value::as_object_mut) else {
            return;
        };
        let tolerations = spec
            .entry("tolerations")
            .or_insert_with(|| Value::Array(Vec::new()));
        if !tolerations.is_array() {
            *tolerations = Value::Array(Vec::new());
        }
        let Some(list) = tolerations.as_array_mut() else {
            return;
        };
        let covers = |t: &Value, key: &str| {
            let k = t.get("key").and_then(Value::as_str).unwrap_or("");
            let e = t.get("effect").and_then(Value::as_str).unwrap_or("");
            (k.is_empty() || k == key) && (e.is_empty() || e == "NoExecute")
        };
        for (key, seconds) in [
            (NOT_READY_TAINT, self.not_ready),
            (UNREACHABLE_TAINT, self.unreachable),
        ] {
            if !list.iter().any(|t| covers(t, key)) {
                list.push(serde_json::json!({
                    "key": key,
                    "operator": "Exists",
                    "effect": "NoExecute",
                    "tolerationSeconds": seconds,
                }));
            }
        }
    }
}

const NOT_READY_TAINT: &str = "node.kubernetes.io/not-ready";
const UNREACHABLE_TAINT: &str = "node.kubernetes.io/unreachable";

/// The projected volume upstream's ServiceAccount plugin adds, under the name `name`.
pub fn api_access_volume(name: &str) -> Value {
    serde_json::json!({
        "name": name,
        "projected": {
            "defaultMode": 420,
            "sources": [
                {"serviceAccountToken": {"expirationSeconds": 3607, "path": "token"}},
                {"configMap": {"name": "kube-root-ca.crt", "items": [{"key": "ca.crt", "path": "ca.crt"}]}},
                {"downwardAPI": {"items": [{"path": "namespace", "fieldRef": {"apiVersion": "v1", "fieldPath": "metadata.namespace"}}]}},
            ],
        },
    })
}

/// The ServiceAccount plugin on a new pod: names its account and mounts its credentials.
/// `account` is the pod's ServiceAccount as stored, `None` when it does not exist.
pub fn mutate_pod(pod: &mut Value, account: Option<&Value>, suffix: &str) {
    if pod
        .pointer("/metadata/annotations")
        .and_then(|a| a.get(MIRROR))
        .is_some()
    {
        return;
    }
    let Some(spec) = pod.get_mut("spec").and_then(Value::as_object_mut) else {
        return;
    };
    let named = spec
        .get("serviceAccountName")
        .and_then(Value::as_str)
        .is_some_and(|s| !s.is_empty());
    if !named {
        spec.insert("serviceAccountName".into(), "default".into());
    }
    let Some(account) = account else {
        return;
    };
    let automount = spec
        .get("automountServiceAccountToken")
        .and_then(Value::as_bool)
        .or_else(|| {
            account
                .get("automountServiceAccountToken")
                .and_then(Value::as_bool)
        })
        .unwrap_or(true);
    if !automount {
        return;
    }
    let volumes = spec
        .entry("volumes")
        .or_insert_with(|| Value::Array(Vec::new()));
    if !volumes.is_array() {
        *volumes = Value::Array(Vec::new());
    }
    let Some(list) = volumes.as_array_mut() else {
        return;
    };
    let existing = list.iter().find_map(|v| {
        v.get("name")
            .and_then(Value::as_str)
            .filter(|n| n.starts_with(SA_VOLUME_PREFIX))
            .map(str::to_owned)
    });
    let name = match existing {
        Some(n) => n,
        None => {
            let n = format!("{SA_VOLUME_PREFIX}{suffix}");
            list.push(api_access_volume(&n));
            n
        }
    };
    for key in ["initContainers", "containers"] {
        let Some(cs) = spec.get_mut(key).and_then(Value::as_array_mut) else {
            continue;
        };
        for c in cs.iter_mut().filter_map(Value::as_object_mut) {
            let mounts = c
                .entry("volumeMounts")
                .or_insert_with(|| Value::Array(Vec::new()));
            let Some(mounts) = mounts.as_array_mut() else {
                continue;
            };
            let taken = mounts
                .iter()
                .any(|m| m.get("mountPath").and_then(Value::as_str) == Some(SA_MOUNT));
            if !taken {
                mounts.push(serde_json::json!({
                    "name": name, "readOnly": true, "mountPath": SA_MOUNT,
                }));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn pod() -> Value {
        json!({"metadata": {"name": "p"}, "spec": {"containers": [{"name": "c", "image": "busybox"}], "initContainers": [{"name": "i", "image": "busybox"}]}})
    }

    #[test]
    fn default_tolerations_are_added_unless_one_covers_the_taint() {
        let d = DefaultTolerations {
            not_ready: 300,
            unreachable: 20,
        };
        let mut p = pod();
        d.mutate_pod(&mut p);
        assert_eq!(
            p["spec"]["tolerations"],
            json!([
                {"key": "node.kubernetes.io/not-ready", "operator": "Exists", "effect": "NoExecute", "tolerationSeconds": 300},
                {"key": "node.kubernetes.io/unreachable", "operator": "Exists", "effect": "NoExecute", "tolerationSeconds": 20},
            ])
        );
        // The pod's own toleration of unreachable (forever) is kept and not doubled.
        let mut p = pod();
        p["spec"]["tolerations"] = json!([{"key": "node.kubernetes.io/unreachable", "operator": "Exists", "effect": "NoExecute"}]);
        d.mutate_pod(&mut p);
        let keys: Vec<_> = p["spec"]["tolerations"]
            .as_array()
            .unwrap()
            .iter()
            .map(|t| {
                (
                    t["key"].as_str().unwrap(),
                    t.get("tolerationSeconds").is_some(),
                )
            })
            .collect();
        assert_eq!(
            keys,
            [
                ("node.kubernetes.io/unreachable", false),
                ("node.kubernetes.io/not-ready", true)
            ]
        );
        // A toleration of everything (empty key, operator Exists: static pods' kind) covers
        // both; a NoSchedule one covers neither.
        let mut p = pod();
        p["spec"]["tolerations"] = json!([{"operator": "Exists"}]);
        d.mutate_pod(&mut p);
        assert_eq!(p["spec"]["tolerations"].as_array().unwrap().len(), 1);
        let mut p = pod();
        p["spec"]["tolerations"] = json!([{"key": "node.kubernetes.io/not-ready", "operator": "Exists", "effect": "NoSchedule"}]);
        d.mutate_pod(&mut p);
        assert_eq!(p["spec"]["tolerations"].as_array().unwrap().len(), 3);
    }

    #[test]
    fn service_account_mounts_credentials_everywhere() {
        let mut p = pod();
        mutate_pod(&mut p, Some(&json!({})), "abcde");
        assert_eq!(p["spec"]["serviceAccountName"], "default");
        assert_eq!(
            p["spec"]["volumes"][0],
            api_access_volume("kube-api-access-abcde")
        );
        for c in ["containers", "initContainers"] {
            assert_eq!(
                p["spec"][c][0]["volumeMounts"][0],
                json!({"name": "kube-api-access-abcde", "readOnly": true, "mountPath": SA_MOUNT})
            );
        }
        let again = p.clone();
        mutate_pod(&mut p, Some(&json!({})), "zzzzz");
        assert_eq!(p, again, "a second pass adds nothing");
    }

    #[test]
    fn service_account_respects_automount_false() {
        let mut p = pod();
        p["spec"]["serviceAccountName"] = "robot".into();
        mutate_pod(
            &mut p,
            Some(&json!({"automountServiceAccountToken": false})),
            "abcde",
        );
        assert_eq!(p["spec"]["serviceAccountName"], "robot");
        assert!(p["spec"].get("volumes").is_none());
        let mut p = pod();
        p["spec"]["automountServiceAccountToken"] = false.into();
        mutate_pod(
            &mut p,
            Some(&json!({"automountServiceAccountToken": true})),
            "abcde",
        );
        assert!(p["spec"].get("volumes").is_none());
        let mut p = pod();
        mutate_pod(&mut p, None, "abcde");
        assert_eq!(p["spec"]["serviceAccountName"], "default");
        assert!(p["spec"].get("volumes").is_none(), "no account, no volume");
        let mut p = pod();
        p["metadata"]["annotations"] = json!({MIRROR: "x"});
        mutate_pod(&mut p, Some(&json!({})), "abcde");
        assert!(
            p["spec"].get("serviceAccountName").is_none(),
            "mirror pods are left alone"
        );
    }
}
