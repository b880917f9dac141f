//! What the API server writes at startup, and service address allocation.
//!
//! Mirrors upstream's post-start hooks: `rbac/bootstrap-roles` (the default ClusterRoles and
//! ClusterRoleBindings from `plugin/pkg/auth/authorizer/rbac/bootstrappolicy`, a subset:
//! cluster-admin, admin/edit/view, system:discovery, system:basic-user,
//! system:public-info-viewer, system:kubelet-api-admin and the roles of the control-plane
//! identities), the system namespaces (`default`, `kube-system`, `kube-public`,
//! `kube-node-lease`), the built-in PriorityClasses
//! (`scheduling/bootstrap-system-priority-classes`), and the `default/kubernetes` Service and
//! Endpoints. Existing objects are left alone (upstream
//! reconciles them). ClusterIPs and NodePorts are allocated by scanning the services; upstream
//! keeps a bitmap allocator, and two racing creates can get the same address here.

use std::collections::HashSet;
use std::net::Ipv4Addr;

use serde_json::{Value, json};

use super::State;
use super::status::ApiError;
use super::write::create_object;
use crate::api::resources::find;

#[derive(Debug, thiserror::Error)]
#[error("creating {what}: {message}")]
pub struct BootstrapError {
    what: String,
    message: String,
}

fn rule(groups: &[&str], resources: &[&str], verbs: &[&str]) -> Value {
    json!({"apiGroups": groups, "resources": resources, "verbs": verbs})
}

fn non_resource(urls: &[&str], verbs: &[&str]) -> Value {
    json!({"nonResourceURLs": urls, "verbs": verbs})
}

const READ: &[&str] = &["get", "list", "watch"];
const WRITE: &[&str] = &[
    "create",
    "delete",
    "deletecollection",
    "get",
    "list",
    "patch",
    "update",
    "watch",
];

fn cluster_roles() -> Vec<(&'static str, Vec<Value>)> {
    let all_ns = &[
        "pods",
        "pods/proxy",
        "services",
        "services/proxy",
        "endpoints",
        "configmaps",
        "secrets",
        "serviceaccounts",
        "events",
        "persistentvolumeclaims",
    ];
    let apps = &[
        "deployments",
        "replicasets",
        "daemonsets",
        "statefulsets",
        "deployments/scale",
        "replicasets/scale",
    ];
    vec![
        (
            "cluster-admin",
            vec![rule(&["*"], &["*"], &["*"]), non_resource(&["*"], &["*"])],
        ),
        (
            "admin",
            vec![
                rule(&[""], all_ns, WRITE),
                rule(&["apps"], apps, WRITE),
                rule(
                    &["rbac.authorization.k8s.io"],
                    &["roles", "rolebindings"],
                    WRITE,
                ),
                rule(&["coordination.k8s.io"], &["leases"], WRITE),
                rule(&["discovery.k8s.io"], &["endpointslices"], READ),
                rule(&["batch"], &["jobs", "cronjobs"], WRITE),
                rule(&[""], &["namespaces"], READ),
            ],
        ),
        (
            "edit",
            vec![
                rule(&[""], all_ns, WRITE),
                rule(&["apps"], apps, WRITE),
                rule(&["coordination.k8s.io"], &["leases"], WRITE),
                rule(&["batch"], &["jobs", "cronjobs"], WRITE),
                rule(&[""], &["namespaces"], READ),
            ],
        ),
        (
            "view",
            vec![rule(
                &["", "apps", "batch", "discovery.k8s.io"],
                &[
                    "pods",
                    "services",
                    "endpoints",
                    "configmaps",
                    "serviceaccounts",
                    "events",
                    "deployments",
                    "replicasets",
                    "daemonsets",
                    "statefulsets",
                    "jobs",
                    "cronjobs",
                    "endpointslices",
                    "namespaces",
                    "pods/status",
                    "deployments/scale",
                    "replicasets/scale",
                ],
                READ,
            )],
        ),
        (
            "system:discovery",
            vec![non_resource(
                &[
                    "/api",
                    "/api/*",
                    "/apis",
                    "/apis/*",
                    "/healthz",
                    "/livez",
                    "/openapi",
                    "/openapi/*",
                    "/readyz",
                    "/version",
                    "/version/",
                ],
                &["get"],
            )],
        ),
        (
            "system:basic-user",
            vec![
                rule(
                    &["authorization.k8s.io"],
                    &["selfsubjectaccessreviews", "selfsubjectrulesreviews"],
                    &["create"],
                ),
                rule(
                    &["authentication.k8s.io"],
                    &["selfsubjectreviews"],
                    &["create"],
                ),
            ],
        ),
        (
            "system:public-info-viewer",
            vec![non_resource(
                &["/healthz", "/livez", "/readyz", "/version", "/version/"],
                &["get"],
            )],
        ),
        (
            "system:kube-scheduler",
            vec![
                rule(
                    &["", "events.k8s.io"],
                    &["events"],
                    &["create", "patch", "update"],
                ),
                rule(
                    &["coordination.k8s.io"],
                    &["leases"],
                    &["create", "get", "list", "update", "watch"],
                ),
                rule(
                    &[""],
                    &[
                        "nodes",
                        "namespaces",
                        "services",
                        "replicationcontrollers",
                        "persistentvolumeclaims",
                        "persistentvolumes",
                    ],
                    READ,
                ),
                rule(&[""], &["pods"], &["delete", "get", "list", "watch"]),
                rule(&[""], &["bindings", "pods/binding"], &["create"]),
                rule(&[""], &["pods/status"], &["patch", "update"]),
                rule(&["apps"], &["replicasets", "statefulsets"], READ),
            ],
        ),
        (
            "system:kube-controller-manager",
            vec![rule(&["*"], &["*"], WRITE)],
        ),
        (
            // Upstream's controller role (`buildControllerRoles`), which the namespace
            // controller holds when kube-controller-manager runs with
            // --use-service-account-credentials; klab's controllers share the manager's own
            // identity, whose role above covers the same.
            "system:controller:namespace-controller",
            vec![
                rule(&[""], &["namespaces"], &["delete", "get", "list", "watch"]),
                rule(
                    &[""],
                    &["namespaces/finalize", "namespaces/status"],
                    &["update"],
                ),
                rule(
                    &["*"],
                    &["*"],
                    &["delete", "deletecollection", "get", "list"],
                ),
            ],
        ),
        (
            "system:node-proxier",
            vec![
                rule(&[""], &["endpoints", "services", "nodes"], READ),
                rule(&["discovery.k8s.io"], &["endpointslices"], READ),
                rule(
                    &["", "events.k8s.io"],
                    &["events"],
                    &["create", "patch", "update"],
                ),
            ],
        ),
        (
            // Full access to kubelets' API (:10250), for the API server's kubelet client.
            "system:kubelet-api-admin",
            vec![
                rule(&[""], &["nodes"], &["get", "list", "watch", "proxy"]),
                rule(
                    &[""],
                    &["nodes/proxy", "nodes/metrics", "nodes/stats", "nodes/log"],
                    &["*"],
                ),
            ],
        ),
        (
            "system:node",
            vec![
                rule(
                    &[""],
                    &["nodes", "nodes/status"],
                    &["create", "get", "list", "watch", "patch", "update"],
                ),
                rule(
                    &[""],
                    &["pods", "services", "endpoints", "configmaps", "secrets"],
                    READ,
                ),
                rule(&[""], &["pods/status"], &["patch", "update"]),
                rule(&[""], &["pods"], &["create", "delete"]),
                rule(
                    &["", "events.k8s.io"],
                    &["events"],
                    &["create", "patch", "update"],
                ),
                rule(
                    &["coordination.k8s.io"],
                    &["leases"],
                    &["create", "delete", "get", "patch", "update"],
                ),
            ],
        ),
    ]
}

fn cluster_role_bindings() -> Vec<(&'static str, &'static str, Value)> {
    let group =
        |g: &str| json!({"apiGroup": "rbac.authorization.k8s.io", "kind": "Group", "name": g});
    let user =
        |u: &str| json!({"apiGroup": "rbac.authorization.k8s.io", "kind": "User", "name": u});
    vec![
        (
            "cluster-admin",
            "cluster-admin",
            json!([group("system:masters")]),
        ),
        (
            "system:discovery",
            "system:discovery",
            json!([group("system:authenticated")]),
        ),
        (
            "system:basic-user",
            "system:basic-user",
            json!([group("system:authenticated")]),
        ),
        (
            "system:public-info-viewer",
            "system:public-info-viewer",
            json!([
                group("system:authenticated"),
                group("system:unauthenticated")
            ]),
        ),
        (
            "system:kube-scheduler",
            "system:kube-scheduler",
            json!([user("system:kube-scheduler")]),
        ),
        (
            "system:kube-controller-manager",
            "system:kube-controller-manager",
            json!([user("system:kube-controller-manager")]),
        ),
        (
            "system:node-proxier",
            "system:node-proxier",
            json!([user("system:kube-proxy")]),
        ),
        (
            "system:controller:namespace-controller",
            "system:controller:namespace-controller",
            json!([{"kind": "ServiceAccount", "name": "namespace-controller", "namespace": "kube-system"}]),
        ),
    ]
}

fn bootstrap_meta(name: &str) -> Value {
    json!({
        "name": name,
        "labels": {"kubernetes.io/bootstrapping": "rbac-defaults"},
        "annotations": {"rbac.authorization.kubernetes.io/autoupdate": "true"},
    })
}

async fn ensure(
    state: &State,
    plural: &str,
    group: &str,
    ns: &str,
    obj: Value,
) -> Result<(), BootstrapError> {
    let res = find(group, "v1", plural).expect("bootstrap resources are in the table");
    let name = obj
        .pointer("/metadata/name")
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_owned();
    let exists = state.store.get(&res.key(ns, &name)).await;
    if matches!(exists, Ok(Some(_))) {
        return Ok(());
    }
    let mut obj = obj;
    obj["apiVersion"] = res.api_version().into();
    obj["kind"] = res.kind.into();
    match create_object(state, res, ns, obj, false).await {
        Ok(_) => Ok(()),
        Err(e) if e.code == 409 => Ok(()),
        Err(e) => Err(BootstrapError {
            what: format!("{plural}/{name}"),
            message: e.message,
        }),
    }
}

/// Writes the default objects that are missing.
pub async fn run(state: &State) -> Result<(), BootstrapError> {
    for ns in ["default", "kube-system", "kube-public", "kube-node-lease"] {
        ensure(
            state,
            "namespaces",
            "",
            "",
            json!({"metadata": {"name": ns}}),
        )
        .await?;
    }
    let rbac = "rbac.authorization.k8s.io";
    for (name, rules) in cluster_roles() {
        ensure(
            state,
            "clusterroles",
            rbac,
            "",
            json!({"metadata": bootstrap_meta(name), "rules": rules}),
        )
        .await?;
    }
    for (name, role, subjects) in cluster_role_bindings() {
        let obj = json!({"metadata": bootstrap_meta(name), "roleRef": {"apiGroup": rbac, "kind": "ClusterRole", "name": role}, "subjects": subjects});
        ensure(state, "clusterrolebindings", rbac, "", obj).await?;
    }
    for (name, value, description) in super::admission::SYSTEM_PRIORITY_CLASSES {
        let obj = json!({"metadata": {"name": name}, "value": value,
            "description": description, "preemptionPolicy": "PreemptLowerPriority"});
        ensure(state, "priorityclasses", "scheduling.k8s.io", "", obj).await?;
    }
    let first = first_service_ip(state);
    let svc = json!({"metadata": {"name": "kubernetes", "labels": {"component": "apiserver", "provider": "kubernetes"}},
        "spec": {"clusterIP": first.to_string(), "ports": [{"name": "https", "port": 443, "protocol": "TCP", "targetPort": state.secure_port}]}});
    ensure(state, "services", "", "default", svc).await?;
    let ep = json!({"metadata": {"name": "kubernetes", "labels": {"endpointslice.kubernetes.io/skip-mirror": "true"}},
        "subsets": [{"addresses": [{"ip": state.advertise}], "ports": [{"name": "https", "port": state.secure_port, "protocol": "TCP"}]}]});
    ensure(state, "endpoints", "", "default", ep).await
}

fn first_service_ip(state: &State) -> Ipv4Addr {
    let (net, _) = state.service_range;
    Ipv4Addr::from(u32::from(net) + 1)
}

/// Gives a new Service its ClusterIP (unless headless or set) and NodePorts where its type
/// needs them.
pub async fn allocate_service(state: &State, svc: &mut Value) -> Result<(), ApiError> {
    let services = find("", "v1", "services").expect("services is in the table");
    let page = state
        .store
        .list(&services.list_prefix(None), None, 0, 0)
        .await?;
    let used_ips: HashSet<String> = page
        .items
        .iter()
        .filter_map(|i| {
            i.value
                .pointer("/spec/clusterIP")
                .and_then(Value::as_str)
                .map(str::to_owned)
        })
        .collect();
    let used_ports: HashSet<i64> = page
        .items
        .iter()
        .flat_map(|i| {
            i.value
                .pointer("/spec/ports")
                .and_then(Value::as_array)
                .cloned()
                .unwrap_or_default()
        })
        .filter_map(|p| p.get("nodePort").and_then(Value::as_i64))
        .collect();
    let ty = svc
        .pointer("/spec/type")
        .and_then(Value::as_str)
        .unwrap_or("ClusterIP")
        .to_owned();
    if ty == "ExternalName" {
        return Ok(());
    }
    let ip = svc
        .pointer("/spec/clusterIP")
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_owned();
    let (net, bits) = state.service_range;
    let size = 1u32 << (32 - bits as u32);
    let ip = if ip.is_empty() {
        let base = u32::from(net);
        (2..size - 1)
            .map(|i| Ipv4Addr::from(base + i).to_string())
            .find(|c| !used_ips.contains(c))
            .ok_or_else(|| ApiError::internal("failed to allocate a serviceIP: range is full"))?
    } else {
        if ip != "None" && used_ips.contains(&ip) {
            return Err(ApiError::invalid(
                "Service",
                &super::status::Target {
                    group: "",
                    plural: "services",
                    name: "",
                },
                &[(
                    "spec.clusterIPs".into(),
                    format!(
                        "Invalid value: []string{{\"{ip}\"}}: failed to allocate IP {ip}: provided IP is already allocated"
                    ),
                )],
            ));
        }
        ip
    };
    svc["spec"]["clusterIP"] = ip.clone().into();
    if ip != "None" {
        svc["spec"]["clusterIPs"] = json!([ip]);
        svc["spec"]["ipFamilies"] = json!(["IPv4"]);
        svc["spec"]["ipFamilyPolicy"] = "SingleStack".into();
    }
    if ty == "NodePort" || ty == "LoadBalancer" {
        svc["spec"]["externalTrafficPolicy"] = svc
            .pointer("/spec/externalTrafficPolicy")
            .cloned()
            .unwrap_or_else(|| "Cluster".into());
        let (lo, hi) = state.node_ports;
        let mut taken = used_ports;
        if let Some(ports) = svc.pointer_mut("/spec/ports").and_then(Value::as_array_mut) {
            for p in ports.iter_mut() {
                if p.get("nodePort").and_then(Value::as_i64).is_some() {
                    continue;
                }
                let port = (lo as i64..=hi as i64)
                    .find(|x| !taken.contains(x))
                    .ok_or_else(|| {
                        ApiError::internal("failed to allocate a nodePort: range is full")
                    })?;
                taken.insert(port);
                p["nodePort"] = port.into();
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::apiserver::authz::rule_allows;
    use crate::apiserver::request::RequestInfo;

    fn allows(role: &str, verb: &str, group: &str, resource: &str, sub: &str) -> bool {
        let info = RequestInfo {
            is_resource: true,
            verb: verb.into(),
            group: group.into(),
            resource: resource.into(),
            subresource: sub.into(),
            name: "x".into(),
            ..Default::default()
        };
        let roles = cluster_roles();
        let (_, rules) = roles.iter().find(|(n, _)| *n == role).unwrap();
        rules.iter().any(|r| rule_allows(r, &info))
    }

    /// Releasing a namespace (`namespaces/finalize`) is the namespace controller's, as in
    /// upstream's bootstrap policy: neither `admin` nor `edit` may, the controller's roles may,
    /// and they may empty any resource.
    #[test]
    fn only_the_namespace_controller_finalizes_namespaces() {
        for role in [
            "system:controller:namespace-controller",
            "system:kube-controller-manager",
        ] {
            assert!(
                allows(role, "update", "", "namespaces", "finalize"),
                "{role}"
            );
            assert!(allows(role, "update", "", "namespaces", "status"), "{role}");
            assert!(
                allows(role, "deletecollection", "example.com", "widgets", ""),
                "{role}"
            );
        }
        for role in ["admin", "edit", "view"] {
            assert!(
                !allows(role, "update", "", "namespaces", "finalize"),
                "{role}"
            );
        }
        assert!(!allows(
            "system:controller:namespace-controller",
            "create",
            "",
            "pods",
            ""
        ));
    }
}
