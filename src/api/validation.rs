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

#[cfg(test)]
mod tests {
    use super::*;

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
