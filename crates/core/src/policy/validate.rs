//! Parsing and validation: what serde cannot check, with messages that name the field.

use std::fmt;

use wildmatch::WildMatch;

use super::evaluate::CompiledRule;
use super::*;

/// A policy that could not be loaded: the message names the field and what is wrong.
#[derive(Debug, thiserror::Error, PartialEq)]
#[error("{message}")]
pub struct PolicyError {
    pub message: String,
}

impl PolicyError {
    fn at(field: impl fmt::Display, what: impl fmt::Display) -> Self {
        PolicyError {
            message: format!("{field}: {what}"),
        }
    }
}

impl Default for Policy {
    /// The built-in policy: `deploy/base/policy.yaml`.
    fn default() -> Self {
        // The shipped file is checked by a unit test, so this cannot fail in a released binary; fall back to the
        // same values in code rather than panic all the same.
        Policy::from_yaml(DEFAULT_POLICY_YAML).unwrap_or_else(|_| Policy {
            scope: Scope::NamespaceOptIn,
            mode: Mode::Enforce,
            excluded_namespaces: default_excluded_namespaces(),
            annotation_key: default_annotation_key(),
            timeout_seconds: default_timeout_seconds(),
            rules: vec![Rule {
                name: "grpc-ports".into(),
                ports: Some(PortMatch::default()),
                selector: None,
                algorithm: None,
            }],
        })
    }
}

impl Policy {
    /// Parses and validates a policy. Unknown fields are errors.
    ///
    /// The error is one line, `line L column C: what`, for the caller to prefix with the file's name.
    pub fn from_yaml(text: &str) -> Result<Self, PolicyError> {
        let options = serde_saphyr::options! { with_snippet: false };
        let policy: Policy =
            serde_saphyr::from_str_with_options(text, options).map_err(|e| PolicyError {
                message: one_line(&e.to_string()),
            })?;
        policy.validate()?;
        Ok(policy)
    }

    /// Checks what serde cannot: names, globs, selectors, the annotation key, the timeout.
    pub fn validate(&self) -> Result<(), PolicyError> {
        if self.rules.is_empty() {
            return Err(PolicyError::at("rules", "at least one rule is required"));
        }
        validate_qualified_name("annotationKey", &self.annotation_key)?;
        if !(1..=30).contains(&self.timeout_seconds) {
            return Err(PolicyError::at(
                "timeoutSeconds",
                format!(
                    "must be between 1 and 30 (the API server's limit), got {}",
                    self.timeout_seconds
                ),
            ));
        }
        for (i, ns) in self.excluded_namespaces.iter().enumerate() {
            if !is_dns_label(ns) {
                return Err(PolicyError::at(
                    format!("excludedNamespaces[{i}]"),
                    format!("{ns:?} is not a valid namespace name"),
                ));
            }
        }
        let mut seen = std::collections::HashSet::new();
        for (i, rule) in self.rules.iter().enumerate() {
            let at = |field: &str| format!("rules[{i}]{field}");
            if rule.name.trim().is_empty() {
                return Err(PolicyError::at(at(".name"), "must not be empty"));
            }
            if !seen.insert(rule.name.as_str()) {
                return Err(PolicyError::at(
                    at(".name"),
                    format!("duplicate rule name {:?}", rule.name),
                ));
            }
            if rule.ports.is_none() && rule.selector.is_none() {
                return Err(PolicyError::at(
                    at(""),
                    format!(
                        "rule {:?} needs `ports` or `selector` (use `ports: {{}}` for the defaults)",
                        rule.name
                    ),
                ));
            }
            if let Some(ports) = &rule.ports {
                if ports.names.is_empty() && ports.app_protocols.is_empty() {
                    return Err(PolicyError::at(
                        at(".ports"),
                        "names and appProtocols are both empty, so no port can match",
                    ));
                }
                for (j, n) in ports.names.iter().enumerate() {
                    if n.is_empty() {
                        return Err(PolicyError::at(
                            at(&format!(".ports.names[{j}]")),
                            "must not be empty",
                        ));
                    }
                }
                for (j, p) in ports.app_protocols.iter().enumerate() {
                    if p.is_empty() {
                        return Err(PolicyError::at(
                            at(&format!(".ports.appProtocols[{j}]")),
                            "must not be empty",
                        ));
                    }
                }
            }
            if let Some(sel) = &rule.selector {
                if sel.match_labels.is_empty() && sel.match_expressions.is_empty() {
                    return Err(PolicyError::at(
                        at(".selector"),
                        "an empty selector would match every Service; give matchLabels or matchExpressions",
                    ));
                }
                for (k, v) in &sel.match_labels {
                    validate_qualified_name(&at(&format!(".selector.matchLabels[{k:?}]")), k)?;
                    if v.len() > 63 {
                        return Err(PolicyError::at(
                            at(&format!(".selector.matchLabels[{k:?}]")),
                            "a label value has at most 63 characters",
                        ));
                    }
                }
                for (j, e) in sel.match_expressions.iter().enumerate() {
                    let field = at(&format!(".selector.matchExpressions[{j}]"));
                    validate_qualified_name(&format!("{field}.key"), &e.key)?;
                    match e.operator {
                        SelectorOperator::In | SelectorOperator::NotIn if e.values.is_empty() => {
                            return Err(PolicyError::at(
                                format!("{field}.values"),
                                format!("operator {:?} needs at least one value", e.operator),
                            ));
                        }
                        SelectorOperator::Exists | SelectorOperator::DoesNotExist
                            if !e.values.is_empty() =>
                        {
                            return Err(PolicyError::at(
                                format!("{field}.values"),
                                format!("operator {:?} takes no values", e.operator),
                            ));
                        }
                        _ => {}
                    }
                }
            }
        }
        Ok(())
    }

    /// Compiles the policy for evaluation (globs are parsed once, not per Service).
    pub fn compile(&self) -> CompiledPolicy {
        CompiledPolicy {
            rules: self
                .rules
                .iter()
                .map(|r| CompiledRule {
                    names: r
                        .ports
                        .as_ref()
                        .map(|p| p.names.iter().map(|n| WildMatch::new(n)).collect())
                        .unwrap_or_default(),
                    app_protocols: r
                        .ports
                        .as_ref()
                        .map(|p| {
                            p.app_protocols
                                .iter()
                                .map(|n| WildMatch::new(&n.to_ascii_lowercase()))
                                .collect()
                        })
                        .unwrap_or_default(),
                })
                .collect(),
            policy: self.clone(),
        }
    }

    /// Whether the namespace is in the policy's exclude list.
    pub fn is_excluded(&self, namespace: &str) -> bool {
        self.excluded_namespaces.iter().any(|n| n == namespace)
    }
}

fn is_dns_label(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 63
        && s.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && !s.starts_with('-')
        && !s.ends_with('-')
}

/// A Kubernetes qualified name (`prefix/name`), as used for label and annotation keys.
fn validate_qualified_name(field: &str, key: &str) -> Result<(), PolicyError> {
    let (prefix, name) = match key.split_once('/') {
        Some((p, n)) => (Some(p), n),
        None => (None, key),
    };
    let name_ok = !name.is_empty()
        && name.len() <= 63
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
        && name.as_bytes()[0].is_ascii_alphanumeric()
        && name.as_bytes()[name.len() - 1].is_ascii_alphanumeric();
    let prefix_ok = prefix.is_none_or(|p| {
        !p.is_empty() && p.len() <= 253 && p.split('.').all(is_dns_label) && !p.contains('/')
    });
    if name_ok && prefix_ok {
        Ok(())
    } else {
        Err(PolicyError::at(
            field,
            format!(
                "{key:?} is not a valid Kubernetes key (optional DNS prefix, '/', then a name of at most 63 characters)"
            ),
        ))
    }
}

/// The parser's message as one line, without its own `error: ` prefix (the caller prints one).
fn one_line(message: &str) -> String {
    let first = message.lines().next().unwrap_or_default().trim();
    first.strip_prefix("error: ").unwrap_or(first).to_string()
}
