//! Name validation as upstream's `apimachinery/pkg/util/validation`: DNS-1123 labels and
//! subdomains, and the path-segment rule that RBAC objects use.

const LABEL_FMT: &str = "[a-z0-9]([-a-z0-9]*[a-z0-9])?";

/// Which rule a resource's names follow.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NameRule {
    /// RFC 1123 label: at most 63 characters (namespaces, services).
    Label,
    /// RFC 1123 subdomain: at most 253 characters (most objects).
    Subdomain,
    /// Any name usable as a URL path segment (RBAC roles and bindings).
    PathSegment,
}

fn is_label(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 63
        && s.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && !s.starts_with('-')
        && !s.ends_with('-')
}

/// Checks a name; `Err` carries upstream's message after `Invalid value: "NAME": `.
pub fn check_name(rule: NameRule, name: &str) -> Result<(), String> {
    match rule {
        NameRule::Label if !is_label(name) => Err(if name.len() > 63 {
            "must be no more than 63 characters".to_owned()
        } else {
            format!(
                "a lowercase RFC 1123 label must consist of lower case alphanumeric characters or '-', and must start and end with an alphanumeric character (e.g. 'my-name',  or '123-abc', regex used for validation is '{LABEL_FMT}')"
            )
        }),
        NameRule::Subdomain if name.len() > 253 || !name.split('.').all(is_label) => Err(format!(
            "a lowercase RFC 1123 subdomain must consist of lower case alphanumeric characters, '-' or '.', and must start and end with an alphanumeric character (e.g. 'example.com', regex used for validation is '{LABEL_FMT}(\\.{LABEL_FMT})*')"
        )),
        NameRule::PathSegment if name == "." || name == ".." => Err(format!("may not be '{name}'")),
        NameRule::PathSegment if name.contains(['/', '%']) => {
            Err("may not contain '/' or '%'".to_owned())
        }
        _ => Ok(()),
    }
}

const QUALIFIED_FMT: &str = "([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]";

fn is_qualified_part(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 63
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
        && s.bytes().next().is_some_and(|b| b.is_ascii_alphanumeric())
        && s.bytes().last().is_some_and(|b| b.is_ascii_alphanumeric())
}

/// A label or annotation key: `[prefix/]name`, the prefix a DNS subdomain.
pub fn check_qualified_name(key: &str) -> Result<(), String> {
    let (prefix, name) = match key.split_once('/') {
        Some((p, n)) => (Some(p), n),
        None => (None, key),
    };
    if let Some(p) = prefix {
        if p.is_empty() || check_name(NameRule::Subdomain, p).is_err() {
            return Err("prefix part a lowercase RFC 1123 subdomain must consist of lower case alphanumeric characters, '-' or '.', and must start and end with an alphanumeric character".into());
        }
    }
    if !is_qualified_part(name) {
        return Err(format!(
            "name part must consist of alphanumeric characters, '-', '_' or '.', and must start and end with an alphanumeric character (e.g. 'MyName',  or 'my.name',  or '123-abc', regex used for validation is '{QUALIFIED_FMT}')"
        ));
    }
    Ok(())
}

/// A label value: empty, or at most 63 characters of the qualified-name alphabet.
pub fn check_label_value(v: &str) -> Result<(), String> {
    if v.is_empty() || is_qualified_part(v) {
        return Ok(());
    }
    Err(format!(
        "a valid label must be an empty string or consist of alphanumeric characters, '-', '_' or '.', and must start and end with an alphanumeric character (e.g. 'MyValue',  or 'my_value',  or '12345', regex used for validation is '({QUALIFIED_FMT})?')"
    ))
}

/// Field errors of an object, as upstream's per-kind validation reports the common ones:
/// label keys and values, annotation keys, a pod's containers, a workload's selector and
/// template labels, a service's ports. Each is `(field path, message)`.
pub fn check_object(kind: &str, obj: &serde_json::Value) -> Vec<(String, String)> {
    use serde_json::Value;
    let mut errs = Vec::new();
    let str_map = |ptr: &str| -> Vec<(String, String)> {
        obj.pointer(ptr)
            .and_then(Value::as_object)
            .map(|m| {
                m.iter()
                    .map(|(k, v)| (k.clone(), v.as_str().unwrap_or_default().to_owned()))
                    .collect()
            })
            .unwrap_or_default()
    };
    for (k, v) in str_map("/metadata/labels") {
        if let Err(e) = check_qualified_name(&k) {
            errs.push((
                "metadata.labels".into(),
                format!("Invalid value: \"{k}\": {e}"),
            ));
        }
        if let Err(e) = check_label_value(&v) {
            errs.push((
                "metadata.labels".into(),
                format!("Invalid value: \"{v}\": {e}"),
            ));
        }
    }
    for (k, _) in str_map("/metadata/annotations") {
        if let Err(e) = check_qualified_name(&k) {
            errs.push((
                "metadata.annotations".into(),
                format!("Invalid value: \"{k}\": {e}"),
            ));
        }
    }
    let containers = |errs: &mut Vec<(String, String)>, base: &str, spec: Option<&Value>| {
        let list = spec
            .and_then(|s| s.get("containers"))
            .and_then(Value::as_array);
        match list {
            None => errs.push((format!("{base}.containers"), "Required value".into())),
            Some(cs) if cs.is_empty() => {
                errs.push((format!("{base}.containers"), "Required value".into()))
            }
            Some(cs) => {
                for (i, c) in cs.iter().enumerate() {
                    for f in ["name", "image"] {
                        if c.get(f).and_then(Value::as_str).is_none_or(str::is_empty) {
                            errs.push((
                                format!("{base}.containers[{i}].{f}"),
                                "Required value".into(),
                            ));
                        }
                    }
                }
            }
        }
    };
    match kind {
        "Pod" => containers(&mut errs, "spec", obj.get("spec")),
        "Deployment" | "ReplicaSet" | "DaemonSet" | "StatefulSet" => {
            let selector = obj
                .pointer("/spec/selector/matchLabels")
                .and_then(Value::as_object);
            let has_expr = obj.pointer("/spec/selector/matchExpressions").is_some();
            if selector.is_none() && !has_expr {
                errs.push(("spec.selector".into(), "Required value".into()));
            }
            let labels = obj
                .pointer("/spec/template/metadata/labels")
                .and_then(Value::as_object);
            if let Some(sel) = selector {
                let matches = sel
                    .iter()
                    .all(|(k, v)| labels.and_then(|l| l.get(k)) == Some(v));
                if !matches {
                    errs.push((
                        "spec.template.metadata.labels".into(),
                        "Invalid value: `selector` does not match template `labels`".into(),
                    ));
                }
            }
            containers(
                &mut errs,
                "spec.template.spec",
                obj.pointer("/spec/template/spec"),
            );
        }
        "Service" => {
            let ty = obj
                .pointer("/spec/type")
                .and_then(Value::as_str)
                .unwrap_or("ClusterIP");
            let headless = obj.pointer("/spec/clusterIP").and_then(Value::as_str) == Some("None");
            let ports = obj.pointer("/spec/ports").and_then(Value::as_array);
            if ty != "ExternalName" && !headless && ports.is_none_or(|p| p.is_empty()) {
                errs.push(("spec.ports".into(), "Required value".into()));
            }
            for (i, p) in ports.into_iter().flatten().enumerate() {
                let port = p.get("port").and_then(Value::as_i64).unwrap_or(0);
                if !(1..=65535).contains(&port) {
                    errs.push((
                        format!("spec.ports[{i}].port"),
                        format!("Invalid value: {port}: must be between 1 and 65535, inclusive"),
                    ));
                }
            }
        }
        _ => {}
    }
    errs
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn objects() {
        let pod = serde_json::json!({"metadata": {"labels": {"app": "web", "bad key": "x y"}}, "spec": {"containers": [{"name": "c"}]}});
        let errs = check_object("Pod", &pod);
        let fields: Vec<&str> = errs.iter().map(|(f, _)| f.as_str()).collect();
        assert_eq!(
            fields,
            [
                "metadata.labels",
                "metadata.labels",
                "spec.containers[0].image"
            ]
        );
        let deploy = serde_json::json!({"spec": {"selector": {"matchLabels": {"a": "b"}}, "template": {"metadata": {"labels": {"a": "c"}}, "spec": {"containers": [{"name": "c", "image": "i"}]}}}});
        assert_eq!(
            check_object("Deployment", &deploy)[0].0,
            "spec.template.metadata.labels"
        );
        assert!(check_qualified_name("app.kubernetes.io/name").is_ok());
        assert!(check_object("Service", &serde_json::json!({"spec": {}}))[0].0 == "spec.ports");
    }

    #[test]
    fn names() {
        assert!(check_name(NameRule::Subdomain, "web-1.example").is_ok());
        assert!(check_name(NameRule::Subdomain, "Web").is_err());
        assert!(check_name(NameRule::Subdomain, "a..b").is_err());
        assert!(check_name(NameRule::Label, "a.b").is_err());
        assert!(check_name(NameRule::Label, &"a".repeat(64)).is_err());
        assert!(check_name(NameRule::PathSegment, "system:node").is_ok());
        assert!(check_name(NameRule::PathSegment, "a/b").is_err());
    }
}
