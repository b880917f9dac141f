//! Protobuf request bodies, decoded by a small schema table into the JSON form of the object.
//!
//! kubectl 1.32+ sends `application/vnd.kubernetes.protobuf` from its typed clients (`create
//! namespace|deployment|configmap|secret|serviceaccount|service|role|rolebinding`, `auth
//! whoami`, `auth can-i`), and does not fall back to JSON on `415`. The wire form is upstream's
//! envelope: `k8s\0`, then a `runtime.Unknown` (typeMeta = 1, raw = 2) whose `raw` holds the
//! object. The tables below give, per message, upstream's field numbers from its
//! `generated.proto` for the fields klab decodes. A field that is not in the table is refused
//! (415, naming it) rather than dropped, so nothing is silently lost. As Go's decoder does,
//! empty strings, zeros and `false` of non-pointer fields count as unset.

use base64::Engine;
use serde_json::{Map, Value};

use super::status::ApiError;

const MAGIC: &[u8] = b"k8s\x00";

/// How one field is encoded.
#[derive(Clone, Copy)]
enum Ty {
    Str,
    Bytes,
    Int,
    Bool,
    Msg(&'static [F]),
    /// `map<string, string>`.
    MapStr,
    /// `map<string, bytes>` (JSON has base64 strings).
    MapBytes,
    /// `map<string, Quantity>`.
    MapQuantity,
    /// `metav1.Time` (seconds = 1, nanos = 2).
    Time,
    /// `intstr.IntOrString` (type = 1, intVal = 2, strVal = 3).
    IntOrString,
    /// A message whose fields JSON shows in the parent (Go's `json:",inline"`).
    Inline(&'static [F]),
}

/// One field: number, JSON name, type, whether repeated, whether a Go pointer (kept when zero).
#[derive(Clone, Copy)]
struct F(u32, &'static str, Ty, bool, bool);

const fn f(n: u32, name: &'static str, ty: Ty) -> F {
    F(n, name, ty, false, false)
}
const fn rep(n: u32, name: &'static str, ty: Ty) -> F {
    F(n, name, ty, true, false)
}
const fn ptr(n: u32, name: &'static str, ty: Ty) -> F {
    F(n, name, ty, false, true)
}

use Ty::*;

const OBJECT_META: &[F] = &[
    f(1, "name", Str),
    f(2, "generateName", Str),
    f(3, "namespace", Str),
    f(4, "selfLink", Str),
    f(5, "uid", Str),
    f(6, "resourceVersion", Str),
    f(7, "generation", Int),
    f(8, "creationTimestamp", Time),
    ptr(10, "deletionGracePeriodSeconds", Int),
    f(11, "labels", MapStr),
    f(12, "annotations", MapStr),
    rep(14, "finalizers", Str),
];
const META: F = f(1, "metadata", Msg(OBJECT_META));

const NAMESPACE: &[F] = &[
    META,
    f(2, "spec", Msg(&[rep(1, "finalizers", Str)])),
    f(3, "status", Msg(&[f(1, "phase", Str)])),
];
const CONFIG_MAP: &[F] = &[
    META,
    f(2, "data", MapStr),
    f(3, "binaryData", MapBytes),
    ptr(4, "immutable", Bool),
];
const SECRET: &[F] = &[
    META,
    f(2, "data", MapBytes),
    f(3, "type", Str),
    f(4, "stringData", MapStr),
    ptr(5, "immutable", Bool),
];
const LOCAL_REF: &[F] = &[f(1, "name", Str)];
const SERVICE_ACCOUNT: &[F] = &[
    META,
    rep(3, "imagePullSecrets", Msg(LOCAL_REF)),
    ptr(4, "automountServiceAccountToken", Bool),
];

const REQUIREMENT: &[F] = &[
    f(1, "key", Str),
    f(2, "operator", Str),
    rep(3, "values", Str),
];
const LABEL_SELECTOR: &[F] = &[
    f(1, "matchLabels", MapStr),
    rep(2, "matchExpressions", Msg(REQUIREMENT)),
];
const CONTAINER_PORT: &[F] = &[
    f(1, "name", Str),
    f(2, "hostPort", Int),
    f(3, "containerPort", Int),
    f(4, "protocol", Str),
    f(5, "hostIP", Str),
];
const ENV_VAR: &[F] = &[f(1, "name", Str), f(2, "value", Str)];
const RESOURCES: &[F] = &[f(1, "limits", MapQuantity), f(2, "requests", MapQuantity)];
const VOLUME_MOUNT: &[F] = &[
    f(1, "name", Str),
    f(2, "readOnly", Bool),
    f(3, "mountPath", Str),
    f(4, "subPath", Str),
    f(6, "subPathExpr", Str),
];
const CONTAINER: &[F] = &[
    f(1, "name", Str),
    f(2, "image", Str),
    rep(3, "command", Str),
    rep(4, "args", Str),
    f(5, "workingDir", Str),
    rep(6, "ports", Msg(CONTAINER_PORT)),
    rep(7, "env", Msg(ENV_VAR)),
    f(8, "resources", Msg(RESOURCES)),
    rep(9, "volumeMounts", Msg(VOLUME_MOUNT)),
    f(13, "terminationMessagePath", Str),
    f(14, "imagePullPolicy", Str),
    f(16, "stdin", Bool),
    f(17, "stdinOnce", Bool),
    f(18, "tty", Bool),
    f(20, "terminationMessagePolicy", Str),
];
const TOLERATION: &[F] = &[
    f(1, "key", Str),
    f(2, "operator", Str),
    f(3, "value", Str),
    f(4, "effect", Str),
    ptr(5, "tolerationSeconds", Int),
];
const POD_SPEC: &[F] = &[
    rep(2, "containers", Msg(CONTAINER)),
    f(3, "restartPolicy", Str),
    ptr(4, "terminationGracePeriodSeconds", Int),
    ptr(5, "activeDeadlineSeconds", Int),
    f(6, "dnsPolicy", Str),
    f(7, "nodeSelector", MapStr),
    f(8, "serviceAccountName", Str),
    f(9, "serviceAccount", Str),
    f(10, "nodeName", Str),
    f(11, "hostNetwork", Bool),
    f(12, "hostPID", Bool),
    f(13, "hostIPC", Bool),
    rep(15, "imagePullSecrets", Msg(LOCAL_REF)),
    f(16, "hostname", Str),
    f(17, "subdomain", Str),
    f(19, "schedulerName", Str),
    rep(20, "initContainers", Msg(CONTAINER)),
    rep(22, "tolerations", Msg(TOLERATION)),
    f(24, "priorityClassName", Str),
    ptr(30, "enableServiceLinks", Bool),
];
const POD_TEMPLATE: &[F] = &[META, f(2, "spec", Msg(POD_SPEC))];
const ROLLING_UPDATE: &[F] = &[
    f(1, "maxUnavailable", IntOrString),
    f(2, "maxSurge", IntOrString),
];
const STRATEGY: &[F] = &[
    f(1, "type", Str),
    f(2, "rollingUpdate", Msg(ROLLING_UPDATE)),
];
const DEPLOYMENT_SPEC: &[F] = &[
    ptr(1, "replicas", Int),
    f(2, "selector", Msg(LABEL_SELECTOR)),
    f(3, "template", Msg(POD_TEMPLATE)),
    f(4, "strategy", Msg(STRATEGY)),
    f(5, "minReadySeconds", Int),
    ptr(6, "revisionHistoryLimit", Int),
    f(7, "paused", Bool),
    ptr(9, "progressDeadlineSeconds", Int),
];
const DEPLOYMENT_STATUS: &[F] = &[
    f(1, "observedGeneration", Int),
    f(2, "replicas", Int),
    f(3, "updatedReplicas", Int),
    f(4, "availableReplicas", Int),
    f(5, "unavailableReplicas", Int),
    f(7, "readyReplicas", Int),
];
const DEPLOYMENT: &[F] = &[
    META,
    f(2, "spec", Msg(DEPLOYMENT_SPEC)),
    f(3, "status", Msg(DEPLOYMENT_STATUS)),
];

const SERVICE_PORT: &[F] = &[
    f(1, "name", Str),
    f(2, "protocol", Str),
    f(3, "port", Int),
    f(4, "targetPort", IntOrString),
    f(5, "nodePort", Int),
];
const SERVICE_SPEC: &[F] = &[
    rep(1, "ports", Msg(SERVICE_PORT)),
    f(2, "selector", MapStr),
    f(3, "clusterIP", Str),
    f(4, "type", Str),
    rep(5, "externalIPs", Str),
    f(7, "sessionAffinity", Str),
    f(8, "loadBalancerIP", Str),
    f(10, "externalName", Str),
    f(11, "externalTrafficPolicy", Str),
    f(12, "healthCheckNodePort", Int),
    f(13, "publishNotReadyAddresses", Bool),
    rep(18, "clusterIPs", Str),
];
const SERVICE_STATUS: &[F] = &[f(1, "loadBalancer", Msg(&[]))];
const SERVICE: &[F] = &[
    META,
    f(2, "spec", Msg(SERVICE_SPEC)),
    f(3, "status", Msg(SERVICE_STATUS)),
];

const POLICY_RULE: &[F] = &[
    rep(1, "verbs", Str),
    rep(2, "apiGroups", Str),
    rep(3, "resources", Str),
    rep(4, "resourceNames", Str),
    rep(5, "nonResourceURLs", Str),
];
const AGGREGATION_RULE: &[F] = &[rep(1, "clusterRoleSelectors", Msg(LABEL_SELECTOR))];
const ROLE: &[F] = &[
    META,
    rep(2, "rules", Msg(POLICY_RULE)),
    ptr(3, "aggregationRule", Msg(AGGREGATION_RULE)),
];
const SUBJECT: &[F] = &[
    f(1, "kind", Str),
    f(2, "apiGroup", Str),
    f(3, "name", Str),
    f(4, "namespace", Str),
];
const ROLE_REF: &[F] = &[f(1, "apiGroup", Str), f(2, "kind", Str), f(3, "name", Str)];
const BINDING: &[F] = &[
    META,
    rep(2, "subjects", Msg(SUBJECT)),
    f(3, "roleRef", Msg(ROLE_REF)),
];

const RESOURCE_ATTRS: &[F] = &[
    f(1, "namespace", Str),
    f(2, "verb", Str),
    f(3, "group", Str),
    f(4, "version", Str),
    f(5, "resource", Str),
    f(6, "subresource", Str),
    f(7, "name", Str),
];
const NON_RESOURCE_ATTRS: &[F] = &[f(1, "path", Str), f(2, "verb", Str)];
const SSAR_STATUS: &[F] = &[
    f(1, "allowed", Bool),
    f(2, "reason", Str),
    f(3, "evaluationError", Str),
    f(4, "denied", Bool),
];
const SSAR: &[F] = &[
    META,
    f(
        2,
        "spec",
        Msg(&[
            f(1, "resourceAttributes", Msg(RESOURCE_ATTRS)),
            f(2, "nonResourceAttributes", Msg(NON_RESOURCE_ATTRS)),
        ]),
    ),
    f(3, "status", Msg(SSAR_STATUS)),
];
const RESOURCE_RULE: &[F] = &[
    rep(1, "verbs", Str),
    rep(2, "apiGroups", Str),
    rep(3, "resources", Str),
    rep(4, "resourceNames", Str),
];
const NON_RESOURCE_RULE: &[F] = &[rep(1, "verbs", Str), rep(2, "nonResourceURLs", Str)];
const SSRR_STATUS: &[F] = &[
    rep(1, "resourceRules", Msg(RESOURCE_RULE)),
    rep(2, "nonResourceRules", Msg(NON_RESOURCE_RULE)),
    f(3, "incomplete", Bool),
    f(4, "evaluationError", Str),
];
const SSRR: &[F] = &[
    META,
    f(2, "spec", Msg(&[f(1, "namespace", Str)])),
    f(3, "status", Msg(SSRR_STATUS)),
];
const TOKEN_REQUEST: &[F] = &[
    META,
    f(
        2,
        "spec",
        Msg(&[rep(1, "audiences", Str), ptr(4, "expirationSeconds", Int)]),
    ),
    f(
        3,
        "status",
        Msg(&[f(1, "token", Str), f(2, "expirationTimestamp", Time)]),
    ),
];
const PDB_STATUS: &[F] = &[
    f(1, "observedGeneration", Int),
    f(3, "disruptionsAllowed", Int),
    f(4, "currentHealthy", Int),
    f(5, "desiredHealthy", Int),
    f(6, "expectedPods", Int),
];
const PDB: &[F] = &[
    META,
    f(
        2,
        "spec",
        Msg(&[
            ptr(1, "minAvailable", IntOrString),
            ptr(2, "selector", Msg(LABEL_SELECTOR)),
            ptr(3, "maxUnavailable", IntOrString),
            ptr(4, "unhealthyPodEvictionPolicy", Str),
        ]),
    ),
    f(3, "status", Msg(PDB_STATUS)),
];
const JOB_SPEC: &[F] = &[
    ptr(1, "parallelism", Int),
    ptr(2, "completions", Int),
    ptr(3, "activeDeadlineSeconds", Int),
    ptr(4, "selector", Msg(LABEL_SELECTOR)),
    ptr(5, "manualSelector", Bool),
    f(6, "template", Msg(POD_TEMPLATE)),
    ptr(7, "backoffLimit", Int),
    ptr(8, "ttlSecondsAfterFinished", Int),
    ptr(9, "completionMode", Str),
    ptr(10, "suspend", Bool),
];
const JOB_STATUS: &[F] = &[
    f(4, "active", Int),
    f(5, "succeeded", Int),
    f(6, "failed", Int),
    f(7, "completedIndexes", Str),
];
const JOB: &[F] = &[
    META,
    f(2, "spec", Msg(JOB_SPEC)),
    f(3, "status", Msg(JOB_STATUS)),
];
const JOB_TEMPLATE: &[F] = &[META, f(2, "spec", Msg(JOB_SPEC))];
const CRON_JOB: &[F] = &[
    META,
    f(
        2,
        "spec",
        Msg(&[
            f(1, "schedule", Str),
            ptr(2, "startingDeadlineSeconds", Int),
            f(3, "concurrencyPolicy", Str),
            ptr(4, "suspend", Bool),
            f(5, "jobTemplate", Msg(JOB_TEMPLATE)),
            ptr(6, "successfulJobsHistoryLimit", Int),
            ptr(7, "failedJobsHistoryLimit", Int),
            ptr(8, "timeZone", Str),
        ]),
    ),
    f(3, "status", Msg(&[])),
];
const PRIORITY_CLASS: &[F] = &[
    META,
    f(2, "value", Int),
    f(3, "globalDefault", Bool),
    f(4, "description", Str),
    ptr(5, "preemptionPolicy", Str),
];
const QUOTA: &[F] = &[
    META,
    f(
        2,
        "spec",
        Msg(&[f(1, "hard", MapQuantity), rep(2, "scopes", Str)]),
    ),
    f(
        3,
        "status",
        Msg(&[f(1, "hard", MapQuantity), f(2, "used", MapQuantity)]),
    ),
];
const SERVICE_BACKEND_PORT: &[F] = &[f(1, "name", Str), f(2, "number", Int)];
const INGRESS_BACKEND: &[F] = &[ptr(
    4,
    "service",
    Msg(&[f(1, "name", Str), f(2, "port", Msg(SERVICE_BACKEND_PORT))]),
)];
const HTTP_PATH: &[F] = &[
    f(1, "path", Str),
    f(2, "backend", Msg(INGRESS_BACKEND)),
    ptr(3, "pathType", Str),
];
const INGRESS_RULE_VALUE: &[F] = &[ptr(1, "http", Msg(&[rep(1, "paths", Msg(HTTP_PATH))]))];
const INGRESS_RULE: &[F] = &[
    f(1, "host", Str),
    f(2, "ingressRuleValue", Inline(INGRESS_RULE_VALUE)),
];
const INGRESS_TLS: &[F] = &[rep(1, "hosts", Str), f(2, "secretName", Str)];
const INGRESS: &[F] = &[
    META,
    f(
        2,
        "spec",
        Msg(&[
            ptr(1, "defaultBackend", Msg(INGRESS_BACKEND)),
            rep(2, "tls", Msg(INGRESS_TLS)),
            rep(3, "rules", Msg(INGRESS_RULE)),
            ptr(4, "ingressClassName", Str),
        ]),
    ),
    f(3, "status", Msg(&[f(1, "loadBalancer", Msg(&[]))])),
];
const USER_INFO: &[F] = &[
    f(1, "username", Str),
    f(2, "uid", Str),
    rep(3, "groups", Str),
];
const SSR: &[F] = &[
    META,
    f(2, "status", Msg(&[f(1, "userInfo", Msg(USER_INFO))])),
];

/// The kinds klab decodes from protobuf.
fn schema(api_version: &str, kind: &str) -> Option<&'static [F]> {
    Some(match (api_version, kind) {
        ("v1", "Namespace") => NAMESPACE,
        ("v1", "ConfigMap") => CONFIG_MAP,
        ("v1", "Secret") => SECRET,
        ("v1", "ServiceAccount") => SERVICE_ACCOUNT,
        ("v1", "Service") => SERVICE,
        ("apps/v1", "Deployment") => DEPLOYMENT,
        ("policy/v1", "PodDisruptionBudget") => PDB,
        ("batch/v1", "Job") => JOB,
        ("scheduling.k8s.io/v1", "PriorityClass") => PRIORITY_CLASS,
        ("v1", "ResourceQuota") => QUOTA,
        ("networking.k8s.io/v1", "Ingress") => INGRESS,
        ("batch/v1", "CronJob") => CRON_JOB,
        ("rbac.authorization.k8s.io/v1", "Role" | "ClusterRole") => ROLE,
        ("rbac.authorization.k8s.io/v1", "RoleBinding" | "ClusterRoleBinding") => BINDING,
        ("authorization.k8s.io/v1", "SelfSubjectAccessReview") => SSAR,
        ("authorization.k8s.io/v1", "SelfSubjectRulesReview") => SSRR,
        ("authentication.k8s.io/v1", "SelfSubjectReview") => SSR,
        ("authentication.k8s.io/v1", "TokenRequest") => TOKEN_REQUEST,
        _ => return None,
    })
}

fn bad(what: &str) -> ApiError {
    ApiError::bad_request(format!("decoding the protobuf body: {what}"))
}

/// Reads one varint.
fn varint(buf: &mut &[u8]) -> Result<u64, ApiError> {
    let mut out = 0u64;
    for shift in (0..64).step_by(7) {
        let (&b, rest) = buf.split_first().ok_or_else(|| bad("truncated varint"))?;
        *buf = rest;
        out |= u64::from(b & 0x7f) << shift;
        if b & 0x80 == 0 {
            return Ok(out);
        }
    }
    Err(bad("varint too long"))
}

enum Wire<'a> {
    Varint(u64),
    Len(&'a [u8]),
}

/// Splits a message into (field number, value) pairs.
fn fields(mut buf: &[u8]) -> Result<Vec<(u32, Wire<'_>)>, ApiError> {
    let mut out = Vec::new();
    while !buf.is_empty() {
        let key = varint(&mut buf)?;
        let (num, wt) = ((key >> 3) as u32, key & 7);
        let v = match wt {
            0 => Wire::Varint(varint(&mut buf)?),
            2 => {
                let len = varint(&mut buf)? as usize;
                if len > buf.len() {
                    return Err(bad("truncated field"));
                }
                let (v, rest) = buf.split_at(len);
                buf = rest;
                Wire::Len(v)
            }
            1 | 5 => return Err(bad("fixed-width fields are not used by the decoded kinds")),
            _ => return Err(bad("unknown wire type")),
        };
        out.push((num, v));
    }
    Ok(out)
}

fn string(w: &Wire) -> Result<String, ApiError> {
    match w {
        Wire::Len(b) => String::from_utf8(b.to_vec()).map_err(|_| bad("invalid UTF-8")),
        Wire::Varint(_) => Err(bad("expected a string")),
    }
}

fn bytes<'a>(w: &Wire<'a>) -> Result<&'a [u8], ApiError> {
    match w {
        Wire::Len(b) => Ok(b),
        Wire::Varint(_) => Err(bad("expected bytes")),
    }
}

/// A map entry message: key = 1, value = 2.
fn entry<'a>(w: &Wire<'a>) -> Result<(String, Option<Wire<'a>>), ApiError> {
    let (mut k, mut v) = (String::new(), None);
    for (n, x) in fields(bytes(w)?)? {
        match n {
            1 => k = string(&x)?,
            2 => v = Some(x),
            _ => {}
        }
    }
    Ok((k, v))
}

fn value(ty: Ty, w: &Wire, path: &str) -> Result<Value, ApiError> {
    Ok(match ty {
        Str => string(w)?.into(),
        Bytes => base64::engine::general_purpose::STANDARD
            .encode(bytes(w)?)
            .into(),
        Int => match w {
            Wire::Varint(v) => (*v as i64 as i32).into(),
            Wire::Len(_) => return Err(bad("expected an integer")),
        },
        Bool => matches!(w, Wire::Varint(v) if *v != 0).into(),
        Msg(schema) => message(schema, bytes(w)?, path)?,
        Time => {
            let mut secs = 0i64;
            for (n, x) in fields(bytes(w)?)? {
                if let (1, Wire::Varint(v)) = (n, x) {
                    secs = v as i64;
                }
            }
            if secs == 0 {
                Value::Null
            } else {
                time::OffsetDateTime::from_unix_timestamp(secs)
                    .ok()
                    .and_then(|t| {
                        t.format(&time::format_description::well_known::Rfc3339)
                            .ok()
                    })
                    .map(Value::from)
                    .unwrap_or(Value::Null)
            }
        }
        IntOrString => {
            let (mut kind, mut int, mut s) = (0, 0i64, String::new());
            for (n, x) in fields(bytes(w)?)? {
                match (n, &x) {
                    (1, Wire::Varint(v)) => kind = *v,
                    (2, Wire::Varint(v)) => int = *v as i64 as i32 as i64,
                    (3, _) => s = string(&x)?,
                    _ => {}
                }
            }
            if kind == 1 { s.into() } else { int.into() }
        }
        MapStr | MapBytes | MapQuantity | Inline(_) => {
            return Err(bad("maps and inline messages are handled by their field"));
        }
    })
}

fn is_zero(v: &Value) -> bool {
    match v {
        Value::Null => true,
        Value::String(s) => s.is_empty(),
        Value::Bool(b) => !b,
        Value::Number(n) => n.as_i64() == Some(0),
        _ => false,
    }
}

fn message(schema: &'static [F], buf: &[u8], path: &str) -> Result<Value, ApiError> {
    let mut out = Map::new();
    for (num, w) in fields(buf)? {
        let Some(&F(_, name, ty, repeated, pointer)) = schema.iter().find(|f| f.0 == num) else {
            return Err(ApiError::new(
                415,
                "UnsupportedMediaType",
                format!(
                    "klab does not decode protobuf field {num} of {}; send the object as JSON or YAML (kubectl create -f)",
                    if path.is_empty() { "the object" } else { path }
                ),
            ));
        };
        let here = if path.is_empty() {
            name.to_owned()
        } else {
            format!("{path}.{name}")
        };
        match ty {
            Inline(inner) => {
                if let Value::Object(m) = message(inner, bytes(&w)?, path)? {
                    out.extend(m);
                }
            }
            MapStr | MapBytes | MapQuantity => {
                let (k, v) = entry(&w)?;
                let v = match (ty, v) {
                    (MapBytes, Some(v)) => value(Bytes, &v, &here)?,
                    (MapQuantity, Some(v)) => {
                        let q = fields(bytes(&v)?)?;
                        q.iter()
                            .find(|(n, _)| *n == 1)
                            .map(|(_, s)| string(s))
                            .transpose()?
                            .unwrap_or_default()
                            .into()
                    }
                    (_, Some(v)) => string(&v)?.into(),
                    (_, None) => Value::String(String::new()),
                };
                let m = out.entry(name).or_insert_with(|| Value::Object(Map::new()));
                if let Some(m) = m.as_object_mut() {
                    m.insert(k, v);
                }
            }
            _ => {
                let v = value(ty, &w, &here)?;
                if repeated {
                    let a = out.entry(name).or_insert_with(|| Value::Array(vec![]));
                    if let Some(a) = a.as_array_mut() {
                        a.push(v);
                    }
                } else if pointer || !is_zero(&v) {
                    out.insert(name.into(), v);
                }
            }
        }
    }
    Ok(Value::Object(out))
}

/// Decodes an enveloped protobuf body into the JSON form of the object.
pub fn decode(body: &[u8]) -> Result<Value, ApiError> {
    let inner = body
        .strip_prefix(MAGIC)
        .ok_or_else(|| bad("the body lacks the k8s\\0 prefix"))?;
    let (mut av, mut kind, mut raw): (String, String, &[u8]) = (String::new(), String::new(), &[]);
    for (n, w) in fields(inner)? {
        match n {
            1 => {
                for (m, x) in fields(bytes(&w)?)? {
                    match m {
                        1 => av = string(&x)?,
                        2 => kind = string(&x)?,
                        _ => {}
                    }
                }
            }
            2 => raw = bytes(&w)?,
            _ => {}
        }
    }
    let schema = schema(&av, &kind).ok_or_else(|| {
        ApiError::new(
            415,
            "UnsupportedMediaType",
            format!("klab does not decode {kind} ({av}) from protobuf; send it as JSON or YAML (kubectl create -f)"),
        )
    })?;
    let mut obj = message(schema, raw, "")?;
    obj["apiVersion"] = av.into();
    obj["kind"] = kind.into();
    Ok(obj)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(n: u32, wt: u8) -> Vec<u8> {
        enc_varint(((n as u64) << 3) | wt as u64)
    }
    fn enc_varint(mut v: u64) -> Vec<u8> {
        let mut out = vec![];
        loop {
            let b = (v & 0x7f) as u8;
            v >>= 7;
            if v == 0 {
                out.push(b);
                return out;
            }
            out.push(b | 0x80);
        }
    }
    fn len(n: u32, body: &[u8]) -> Vec<u8> {
        let mut out = key(n, 2);
        out.extend(enc_varint(body.len() as u64));
        out.extend(body);
        out
    }

    fn envelope(av: &str, kind: &str, raw: &[u8]) -> Vec<u8> {
        let tm = [len(1, av.as_bytes()), len(2, kind.as_bytes())].concat();
        let mut body = MAGIC.to_vec();
        body.extend(len(1, &tm));
        body.extend(len(2, raw));
        body
    }

    #[test]
    fn namespace_and_deployment() {
        let meta = [len(1, b"team-a"), len(2, b""), len(8, b"")].concat();
        let v = decode(&envelope("v1", "Namespace", &len(1, &meta))).unwrap();
        assert_eq!(
            v,
            serde_json::json!({"metadata": {"name": "team-a"}, "apiVersion": "v1", "kind": "Namespace"})
        );

        let container = [len(1, b"nginx"), len(2, b"nginx:1.25"), len(5, b"")].concat();
        let spec = [
            key(1, 0),
            enc_varint(0),
            len(3, &len(2, &len(2, &container))),
        ]
        .concat();
        let raw = [len(1, &len(1, b"web")), len(2, &spec)].concat();
        let v = decode(&envelope("apps/v1", "Deployment", &raw)).unwrap();
        assert_eq!(v["spec"]["replicas"], 0);
        assert_eq!(
            v["spec"]["template"]["spec"]["containers"][0]["image"],
            "nginx:1.25"
        );
        assert!(
            v["spec"]["template"]["spec"]["containers"][0]
                .get("workingDir")
                .is_none()
        );
    }

    #[test]
    fn unknown_fields_and_kinds_are_refused() {
        let raw = len(1, &len(99, b"x"));
        assert_eq!(
            decode(&envelope("v1", "Namespace", &raw)).unwrap_err().code,
            415
        );
        assert_eq!(decode(&envelope("v1", "Pod", b"")).unwrap_err().code, 415);
        assert_eq!(decode(b"nope").unwrap_err().code, 400);
    }
}
