//! Label and field selectors: parsing `?labelSelector=` and `?fieldSelector=` and matching.
//!
//! Mirrors k8s.io/apimachinery `pkg/labels` (the full syntax: `=`, `==`, `!=`, `in`, `notin`,
//! existence `key` and `!key`, `>` and `<` on integers) and `pkg/fields` (`=`, `==`, `!=`).
//! Leaves out label key/value syntax validation beyond what parsing needs.

use std::collections::BTreeMap;

#[derive(Debug, thiserror::Error, PartialEq)]
pub enum SelectorError {
    #[error("unable to parse requirement: {0}")]
    ParseRequirement(String),
    #[error("found '{found}', expected: {expected}")]
    Unexpected { found: String, expected: String },
}

#[derive(Debug, Clone, PartialEq)]
pub enum Op {
    Exists,
    DoesNotExist,
    Equals,
    NotEquals,
    In,
    NotIn,
    GreaterThan,
    LessThan,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Requirement {
    pub key: String,
    pub op: Op,
    pub values: Vec<String>,
}

/// A parsed label selector: all requirements must hold (an empty selector matches everything).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct LabelSelector(pub Vec<Requirement>);

impl Requirement {
    fn matches(&self, labels: &BTreeMap<String, String>) -> bool {
        let value = labels.get(&self.key);
        match self.op {
            Op::Exists => value.is_some(),
            Op::DoesNotExist => value.is_none(),
            Op::Equals | Op::In => value.is_some_and(|v| self.values.contains(v)),
            Op::NotEquals | Op::NotIn => value.is_none_or(|v| !self.values.contains(v)),
            Op::GreaterThan | Op::LessThan => {
                let (Some(v), Some(bound)) = (
                    value.and_then(|v| v.parse::<i64>().ok()),
                    self.values.first().and_then(|b| b.parse::<i64>().ok()),
                ) else {
                    return false;
                };
                if self.op == Op::GreaterThan {
                    v > bound
                } else {
                    v < bound
                }
            }
        }
    }
}

impl LabelSelector {
    pub fn matches(&self, labels: &BTreeMap<String, String>) -> bool {
        self.0.iter().all(|r| r.matches(labels))
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

/// Splits at top-level commas: commas inside `( … )` belong to a set.
fn split_requirements(s: &str) -> Result<Vec<&str>, SelectorError> {
    let mut out = Vec::new();
    let (mut depth, mut start) = (0i32, 0usize);
    for (i, c) in s.char_indices() {
        match c {
            '(' => depth += 1,
            ')' => depth -= 1,
            ',' if depth == 0 => {
                out.push(&s[start..i]);
                start = i + 1;
            }
            _ => {}
        }
        if !(0..=1).contains(&depth) {
            return Err(SelectorError::ParseRequirement(s.to_owned()));
        }
    }
    out.push(&s[start..]);
    Ok(out)
}

fn valid_key(key: &str) -> bool {
    !key.is_empty()
        && key
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.' | '/'))
}

fn parse_requirement(raw: &str) -> Result<Requirement, SelectorError> {
    let s = raw.trim();
    let bad = || SelectorError::ParseRequirement(raw.trim().to_owned());
    if let Some(key) = s.strip_prefix('!') {
        let key = key.trim();
        return valid_key(key)
            .then(|| Requirement {
                key: key.to_owned(),
                op: Op::DoesNotExist,
                values: vec![],
            })
            .ok_or_else(bad);
    }
    for (token, op) in [
        ("!=", Op::NotEquals),
        ("==", Op::Equals),
        ("=", Op::Equals),
        (">", Op::GreaterThan),
        ("<", Op::LessThan),
    ] {
        if let Some((k, v)) = s.split_once(token) {
            let (k, v) = (k.trim(), v.trim());
            if !valid_key(k) || v.contains(['=', '!', '(', ')', ' ']) {
                return Err(bad());
            }
            return Ok(Requirement {
                key: k.to_owned(),
                op,
                values: vec![v.to_owned()],
            });
        }
    }
    let mut words = s.splitn(2, char::is_whitespace);
    let key = words.next().unwrap_or_default();
    let rest = words.next().unwrap_or_default().trim();
    if !valid_key(key) {
        return Err(bad());
    }
    if rest.is_empty() {
        return Ok(Requirement {
            key: key.to_owned(),
            op: Op::Exists,
            values: vec![],
        });
    }
    let (op, set) = if let Some(set) = rest.strip_prefix("notin") {
        (Op::NotIn, set)
    } else if let Some(set) = rest.strip_prefix("in") {
        (Op::In, set)
    } else {
        return Err(SelectorError::Unexpected {
            found: rest.to_owned(),
            expected: "in, notin, =, ==, !=, gt, lt".into(),
        });
    };
    let set = set
        .trim()
        .strip_prefix('(')
        .and_then(|s| s.strip_suffix(')'))
        .ok_or_else(bad)?;
    let values: Vec<String> = set
        .split(',')
        .map(|v| v.trim().to_owned())
        .filter(|v| !v.is_empty())
        .collect();
    if values.is_empty() {
        return Err(bad());
    }
    Ok(Requirement {
        key: key.to_owned(),
        op,
        values,
    })
}

/// Parses a label selector in the syntax of `kubectl get -l`.
pub fn parse_labels(s: &str) -> Result<LabelSelector, SelectorError> {
    if s.trim().is_empty() {
        return Ok(LabelSelector::default());
    }
    split_requirements(s)?
        .into_iter()
        .map(parse_requirement)
        .collect::<Result<Vec<_>, _>>()
        .map(LabelSelector)
}

/// One `field=value` or `field!=value` term of a field selector.
#[derive(Debug, Clone, PartialEq)]
pub struct FieldTerm {
    pub field: String,
    pub equals: bool,
    pub value: String,
}

/// Parses a field selector; which fields are allowed is the resource's business.
pub fn parse_fields(s: &str) -> Result<Vec<FieldTerm>, SelectorError> {
    if s.trim().is_empty() {
        return Ok(vec![]);
    }
    s.split(',')
        .map(|term| {
            let term = term.trim();
            let (field, equals, value) = if let Some((f, v)) = term.split_once("!=") {
                (f, false, v)
            } else if let Some((f, v)) = term.split_once("==") {
                (f, true, v)
            } else if let Some((f, v)) = term.split_once('=') {
                (f, true, v)
            } else {
                return Err(SelectorError::ParseRequirement(term.to_owned()));
            };
            Ok(FieldTerm {
                field: field.trim().to_owned(),
                equals,
                value: value.trim().to_owned(),
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn labels(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn full_syntax() {
        let sel =
            parse_labels("app=web, tier in (front,back),env notin (prod),canary,!old,n>3").unwrap();
        assert_eq!(sel.0.len(), 6);
        let l = labels(&[
            ("app", "web"),
            ("tier", "front"),
            ("canary", ""),
            ("n", "4"),
        ]);
        assert!(sel.matches(&l));
        let l = labels(&[
            ("app", "web"),
            ("tier", "front"),
            ("canary", ""),
            ("n", "3"),
        ]);
        assert!(!sel.matches(&l));
        assert!(parse_labels("a!=b").unwrap().matches(&labels(&[])));
        assert!(
            parse_labels("a==b")
                .unwrap()
                .matches(&labels(&[("a", "b")]))
        );
    }

    #[test]
    fn rejects_garbage() {
        assert!(parse_labels("a in b").is_err());
        assert!(parse_labels("a b c").is_err());
        assert!(parse_labels("(a)").is_err());
        assert!(parse_fields("metadata.name").is_err());
    }

    #[test]
    fn field_terms() {
        let f = parse_fields("metadata.name=x,spec.nodeName!=").unwrap();
        assert_eq!(f[1].field, "spec.nodeName");
        assert!(!f[1].equals);
        assert_eq!(f[1].value, "");
    }
}
