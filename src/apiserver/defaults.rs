//! Defaulting and create-time preparation for the built-in kinds.
//!
//! Mirrors upstream's `pkg/apis/*/v1/defaults.go` for the fields learners see (pod restart and
//! DNS policy, grace period, image pull policy; deployment replicas, strategy and history;
//! service type and ports; namespace finalizers and phase; secret type) and the strategies'
//! `PrepareForCreate` (status reset on create). Leaves out most other defaults.

use serde_json::{Map, Value, json};

fn obj<'a>(v: &'a mut Value, key: &str) -> Option<&'a mut Map<String, Value>> {
    let m = v.as_object_mut()?;
    m.entry(key).or_insert_with(|| json!({})).as_object_mut()
}

fn default(m: &mut Map<String, Value>, key: &str, val: Value) {
    m.entry(key).or_insert(val);
}

/// Upstream's pull policy default: Always for `:latest` or untagged images, else IfNotPresent.
fn pull_policy(image: &str) -> &'static str {
    let last = image.rsplit('/').next().unwrap_or(image);
    if image.contains('@') {
        "IfNotPresent"
    } else {
        match last.split_once(':') {
            Some((_, "latest")) | None => "Always",
            Some(_) => "IfNotPresent",
        }
    }
}

/// Defaults of a PodSpec (a pod's own, or a template's).
pub fn pod_spec(spec: &mut Map<String, Value>) {
    default(spec, "restartPolicy", "Always".into());
    default(spec, "dnsPolicy", "ClusterFirst".into());
    default(spec, "schedulerName", "default-scheduler".into());
    default(spec, "terminationGracePeriodSeconds", 30.into());
    default(spec, "securityContext", json!({}));
    default(spec, "enableServiceLinks", true.into());
    for list in ["initContainers", "containers"] {
        let Some(cs) = spec.get_mut(list).and_then(Value::as_array_mut) else {
            continue;
        };
        for c in cs.iter_mut().filter_map(Value::as_object_mut) {
            let image = c.get("image").and_then(Value::as_str).unwrap_or_default();
            let policy = pull_policy(image);
            default(c, "imagePullPolicy", policy.into());
            default(c, "terminationMessagePath", "/dev/termination-log".into());
            default(c, "terminationMessagePolicy", "File".into());
            default(c, "resources", json!({}));
            if let Some(ports) = c.get_mut("ports").and_then(Value::as_array_mut) {
                for p in ports.iter_mut().filter_map(Value::as_object_mut) {
                    default(p, "protocol", "TCP".into());
                }
            }
        }
    }
}

fn template(v: &mut Value) {
    if let Some(spec) = v
        .pointer_mut("/spec/template/spec")
        .and_then(Value::as_object_mut)
    {
        pod_spec(spec);
    }
}

/// Applies defaults and create-time resets for `kind`.
pub fn on_create(kind: &str, v: &mut Value) {
    match kind {
        "Pod" => {
            if let Some(spec) = obj(v, "spec") {
                pod_spec(spec);
            }
            v["status"] = json!({"phase": "Pending", "qosClass": qos_class(v)});
        }
        "Deployment" => {
            if let Some(spec) = obj(v, "spec") {
                default(spec, "replicas", 1.into());
                default(spec, "revisionHistoryLimit", 10.into());
                default(spec, "progressDeadlineSeconds", 600.into());
                default(
                    spec,
                    "strategy",
                    json!({"type": "RollingUpdate", "rollingUpdate": {"maxUnavailable": "25%", "maxSurge": "25%"}}),
                );
            }
            template(v);
            v["status"] = json!({});
        }
        "ReplicaSet" => {
            if let Some(spec) = obj(v, "spec") {
                default(spec, "replicas", 1.into());
            }
            template(v);
            v["status"] = json!({"replicas": 0});
        }
        "DaemonSet" => {
            if let Some(spec) = obj(v, "spec") {
                default(spec, "revisionHistoryLimit", 10.into());
                default(
                    spec,
                    "updateStrategy",
                    json!({"type": "RollingUpdate", "rollingUpdate": {"maxUnavailable": 1, "maxSurge": 0}}),
                );
            }
            template(v);
            v["status"] = json!({"currentNumberScheduled": 0, "numberMisscheduled": 0, "desiredNumberScheduled": 0, "numberReady": 0});
        }
        "Job" => {
            job_selector(v);
            if let Some(spec) = obj(v, "spec") {
                default(spec, "parallelism", 1.into());
                default(spec, "completions", 1.into());
                default(spec, "backoffLimit", 6.into());
                default(spec, "completionMode", "NonIndexed".into());
                default(spec, "suspend", false.into());
            }
            template(v);
            v["status"] = json!({});
        }
        "CronJob" => {
            if let Some(spec) = obj(v, "spec") {
                default(spec, "concurrencyPolicy", "Allow".into());
                default(spec, "suspend", false.into());
                default(spec, "successfulJobsHistoryLimit", 3.into());
                default(spec, "failedJobsHistoryLimit", 1.into());
            }
            if let Some(spec) = v
                .pointer_mut("/spec/jobTemplate/spec/template/spec")
                .and_then(Value::as_object_mut)
            {
                pod_spec(spec);
            }
            v["status"] = json!({});
        }
        "Service" => {
            if let Some(spec) = obj(v, "spec") {
                default(spec, "type", "ClusterIP".into());
                default(spec, "sessionAffinity", "None".into());
                default(spec, "internalTrafficPolicy", "Cluster".into());
                if let Some(ports) = spec.get_mut("ports").and_then(Value::as_array_mut) {
                    for p in ports.iter_mut().filter_map(Value::as_object_mut) {
                        default(p, "protocol", "TCP".into());
                        if let Some(port) = p.get("port").cloned() {
                            default(p, "targetPort", port);
                        }
                    }
                }
            }
            v["status"] = json!({"loadBalancer": {}});
        }
        "Namespace" => {
            let name = v.pointer("/metadata/name").cloned().unwrap_or_default();
            if let Some(labels) = v.get_mut("metadata").and_then(|m| obj(m, "labels")) {
                labels.insert("kubernetes.io/metadata.name".into(), name);
            }
            if let Some(spec) = obj(v, "spec") {
                default(spec, "finalizers", json!(["kubernetes"]));
            }
            v["status"] = json!({"phase": "Active"});
        }
        "Secret" => {
            if let Some(m) = v.as_object_mut() {
                if m.get("type")
                    .and_then(Value::as_str)
                    .is_none_or(str::is_empty)
                {
                    m.insert("type".into(), "Opaque".into());
                }
            }
            secret_string_data(v);
        }
        _ => {}
    }
}

/// A Job's generated selector, as upstream's job strategy makes it unless
/// `spec.manualSelector` is true: the job's uid, in the selector and the pod template labels.
fn job_selector(v: &mut Value) {
    if v.pointer("/spec/manualSelector") == Some(&json!(true)) {
        return;
    }
    let uid = v.pointer("/metadata/uid").cloned().unwrap_or_default();
    let name = v.pointer("/metadata/name").cloned().unwrap_or_default();
    let Some(spec) = obj(v, "spec") else {
        return;
    };
    spec.insert(
        "selector".into(),
        json!({"matchLabels": {"batch.kubernetes.io/controller-uid": uid}}),
    );
    let Some(labels) = spec
        .entry("template")
        .or_insert_with(|| json!({}))
        .as_object_mut()
        .and_then(|t| {
            t.entry("metadata")
                .or_insert_with(|| json!({}))
                .as_object_mut()
        })
        .and_then(|m| {
            m.entry("labels")
                .or_insert_with(|| json!({}))
                .as_object_mut()
        })
    else {
        return;
    };
    labels.insert("batch.kubernetes.io/controller-uid".into(), uid.clone());
    labels.insert("batch.kubernetes.io/job-name".into(), name.clone());
    labels.insert("controller-uid".into(), uid);
    labels.insert("job-name".into(), name);
}

/// Folds `stringData` into base64 `data`, as upstream's secret conversion does.
pub fn secret_string_data(v: &mut Value) {
    use base64::Engine;
    let Some(sd) = v.as_object_mut().and_then(|m| m.remove("stringData")) else {
        return;
    };
    let Some(data) = obj(v, "data") else {
        return;
    };
    for (k, s) in sd.as_object().into_iter().flatten() {
        let s = s.as_str().unwrap_or_default();
        let enc = base64::engine::general_purpose::STANDARD.encode(s);
        data.insert(k.clone(), enc.into());
    }
}

/// The QoS class: BestEffort without any requests or limits, Guaranteed when every container
/// has equal cpu and memory requests and limits, Burstable otherwise.
pub fn qos_class(pod: &Value) -> &'static str {
    let containers: Vec<&Value> = pod
        .pointer("/spec/containers")
        .and_then(Value::as_array)
        .map(|a| a.iter().collect())
        .unwrap_or_default();
    let empty = |k: &str, c: &Value| {
        c.pointer(&format!("/resources/{k}"))
            .and_then(Value::as_object)
            .is_none_or(|m| m.is_empty())
    };
    if containers
        .iter()
        .all(|c| empty("requests", c) && empty("limits", c))
    {
        return "BestEffort";
    }
    let guaranteed = containers.iter().all(|c| {
        ["cpu", "memory"].iter().all(|r| {
            let lim = c.pointer(&format!("/resources/limits/{r}"));
            let req = c.pointer(&format!("/resources/requests/{r}")).or(lim);
            lim.is_some() && lim == req
        })
    });
    if guaranteed {
        "Guaranteed"
    } else {
        "Burstable"
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pod_defaults() {
        let mut p = json!({"spec": {"containers": [{"name": "c", "image": "busybox"}, {"name": "d", "image": "nginx:1.25"}]}});
        on_create("Pod", &mut p);
        assert_eq!(p["spec"]["restartPolicy"], "Always");
        assert_eq!(p["spec"]["containers"][0]["imagePullPolicy"], "Always");
        assert_eq!(
            p["spec"]["containers"][1]["imagePullPolicy"],
            "IfNotPresent"
        );
        assert_eq!(p["status"]["phase"], "Pending");
        assert_eq!(p["status"]["qosClass"], "BestEffort");
    }

    #[test]
    fn secret_string_data_is_encoded() {
        let mut s = json!({"stringData": {"a": "hi"}});
        on_create("Secret", &mut s);
        assert_eq!(s, json!({"data": {"a": "aGk="}, "type": "Opaque"}));
    }
}
