//! Admission: the NodeRestriction and Priority plugins (NamespaceLifecycle's checks live in
//! the create path).
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
