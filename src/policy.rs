//! The policy and its evaluation: which Services get Cilium's L7 load-balancing annotation, and why.
//!
//! Pure: no IO. [`Policy::from_yaml`] parses and validates text; [`evaluate`] maps a typed Service and what is
//! known of its namespace to a [`Decision`]. The webhook, the report and the backfill all call [`evaluate`], so
//! they can never disagree about a Service.

use std::collections::BTreeMap;
use std::fmt;

use k8s_openapi::api::core::v1::{Service, ServicePort};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use serde::{Deserialize, Serialize};
use wildmatch::WildMatch;

/// Cilium's annotation that turns on L7 load balancing for a Service.
pub const DEFAULT_ANNOTATION_KEY: &str = "service.cilium.io/lb-l7";
/// The only value of the annotation that Cilium reads as "on" (case-sensitive).
pub const ENABLED_VALUE: &str = "enabled";
/// Cilium's annotation that picks Envoy's load-balancing algorithm.
pub const ALGORITHM_ANNOTATION: &str = "service.cilium.io/lb-l7-algorithm";
/// An old spelling of the annotation that current Cilium ignores.
pub const LEGACY_ANNOTATION_KEY: &str = "io.cilium.service/lb-l7";
/// Written by the webhook next to the annotation: which rule matched, and why.
pub const MATCHED_BY_ANNOTATION: &str = "lb-l7-webhook/matched-by";
/// The label that opts a namespace in (`true`) or a namespace or a Service out (`false`).
pub const OPT_LABEL: &str = "lb-l7-webhook/enabled";
/// The namespace the shipped manifests deploy the webhook into.
pub const WEBHOOK_NAMESPACE: &str = "lb-l7-system";

/// The shipped default policy (`deploy/base/policy.yaml` is the same text).
pub const DEFAULT_POLICY_YAML: &str = include_str!("../deploy/base/policy.yaml");

/// Where a policy applies.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Scope {
    /// Every namespace except `excludedNamespaces`.
    Cluster,
    /// Only namespaces labelled `lb-l7-webhook/enabled=true`.
    NamespaceOptIn,
}

/// Whether the webhook mutates Services or only says what it would do.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Mode {
    #[default]
    Enforce,
    DryRun,
}

/// Envoy's load-balancing algorithm, as Cilium's `service.cilium.io/lb-l7-algorithm` names it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Algorithm {
    RoundRobin,
    LeastRequest,
    Random,
}

impl Algorithm {
    pub fn as_str(self) -> &'static str {
        match self {
            Algorithm::RoundRobin => "round_robin",
            Algorithm::LeastRequest => "least_request",
            Algorithm::Random => "random",
        }
    }

    /// Parses a value as Cilium does, except that unknown values are `None` (Cilium silently uses round robin).
    pub fn parse(value: &str) -> Option<Self> {
        match value {
            "round_robin" => Some(Algorithm::RoundRobin),
            "least_request" => Some(Algorithm::LeastRequest),
            "random" => Some(Algorithm::Random),
            _ => None,
        }
    }
}

impl fmt::Display for Algorithm {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The policy file.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Policy {
    /// `cluster` or `namespace-opt-in`.
    pub scope: Scope,
    /// `enforce` or `dry-run`.
    #[serde(default)]
    pub mode: Mode,
    /// Namespaces never touched, in either scope.
    #[serde(default = "default_excluded_namespaces")]
    pub excluded_namespaces: Vec<String>,
    /// The annotation to set; `service.cilium.io/lb-l7` unless the cluster runs an old Cilium.
    #[serde(default = "default_annotation_key")]
    pub annotation_key: String,
    /// How long the API server waits for the webhook (rendered into the webhook configuration).
    #[serde(default = "default_timeout_seconds")]
    pub timeout_seconds: i32,
    /// Tried in order; the first that matches decides.
    pub rules: Vec<Rule>,
}

fn default_excluded_namespaces() -> Vec<String> {
    [
        "kube-system",
        "kube-public",
        "kube-node-lease",
        WEBHOOK_NAMESPACE,
    ]
    .map(String::from)
    .to_vec()
}

fn default_annotation_key() -> String {
    DEFAULT_ANNOTATION_KEY.to_string()
}

fn default_timeout_seconds() -> i32 {
    5
}

/// One rule: it matches a Service when one of its ports matches `ports`, or its labels match `selector`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Rule {
    pub name: String,
    /// Match by port; `ports: {}` means the defaults (names `grpc`, `grpc-*`; appProtocols `grpc`,
    /// `kubernetes.io/h2c`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ports: Option<PortMatch>,
    /// Match by the Service's labels (Kubernetes label-selector semantics).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub selector: Option<LabelSelector>,
    /// Set `service.cilium.io/lb-l7-algorithm` when the Service has none.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub algorithm: Option<Algorithm>,
}

/// Which ports count as gRPC. A port matches when its name matches one of `names` (exact or glob with `*`
/// and `?`) or its appProtocol matches one of `appProtocols` (case-insensitive).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct PortMatch {
    #[serde(default = "default_port_names")]
    pub names: Vec<String>,
    #[serde(default = "default_app_protocols")]
    pub app_protocols: Vec<String>,
}

impl Default for PortMatch {
    fn default() -> Self {
        PortMatch {
            names: default_port_names(),
            app_protocols: default_app_protocols(),
        }
    }
}

fn default_port_names() -> Vec<String> {
    vec!["grpc".into(), "grpc-*".into()]
}

fn default_app_protocols() -> Vec<String> {
    vec!["grpc".into(), "kubernetes.io/h2c".into()]
}

/// A Kubernetes label selector: every `matchLabels` pair and every expression must hold.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct LabelSelector {
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub match_labels: BTreeMap<String, String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub match_expressions: Vec<LabelSelectorRequirement>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct LabelSelectorRequirement {
    pub key: String,
    pub operator: SelectorOperator,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub values: Vec<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum SelectorOperator {
    In,
    NotIn,
    Exists,
    DoesNotExist,
}

impl LabelSelector {
    /// Kubernetes semantics: all requirements must hold (an empty selector is rejected at validation).
    pub fn matches(&self, labels: &BTreeMap<String, String>) -> bool {
        self.match_labels
            .iter()
            .all(|(k, v)| labels.get(k) == Some(v))
            && self.match_expressions.iter().all(|e| {
                let value = labels.get(&e.key);
                match e.operator {
                    SelectorOperator::In => value.is_some_and(|v| e.values.contains(v)),
                    SelectorOperator::NotIn => value.is_none_or(|v| !e.values.contains(v)),
                    SelectorOperator::Exists => value.is_some(),
                    SelectorOperator::DoesNotExist => value.is_none(),
                }
            })
    }

    /// A short human form, `app=x,tier in (a,b)`, for reasons.
    pub fn describe(&self) -> String {
        let mut parts: Vec<String> = self
            .match_labels
            .iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect();
        for e in &self.match_expressions {
            parts.push(match e.operator {
                SelectorOperator::In => format!("{} in ({})", e.key, e.values.join(",")),
                SelectorOperator::NotIn => format!("{} notin ({})", e.key, e.values.join(",")),
                SelectorOperator::Exists => e.key.clone(),
                SelectorOperator::DoesNotExist => format!("!{}", e.key),
            });
        }
        parts.join(",")
    }
}

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
    pub fn from_yaml(text: &str) -> Result<Self, PolicyError> {
        let policy: Policy = serde_saphyr::from_str(text).map_err(|e| PolicyError {
            message: e.to_string(),
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

/// A policy ready for evaluation.
#[derive(Debug, Clone)]
pub struct CompiledPolicy {
    pub policy: Policy,
    rules: Vec<CompiledRule>,
}

#[derive(Debug, Clone)]
struct CompiledRule {
    names: Vec<WildMatch>,
    app_protocols: Vec<WildMatch>,
}

/// What the policy does with a Service. One vocabulary for the webhook, the report and the backfill.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum DecisionKind {
    /// The policy matches and the annotation is absent: add it.
    Enable,
    /// The annotation is already `enabled`.
    AlreadyEnabled,
    /// The Service's owner said no: the annotation has another value, or the Service has the opt-out label.
    OptedOut,
    /// The namespace is out of the policy's scope.
    ExcludedNamespace,
    /// No rule matches.
    NoMatch,
    /// Cilium cannot balance this Service per request (headless, ExternalName).
    NotApplicable,
}

impl DecisionKind {
    pub const ALL: [DecisionKind; 6] = [
        DecisionKind::Enable,
        DecisionKind::AlreadyEnabled,
        DecisionKind::OptedOut,
        DecisionKind::ExcludedNamespace,
        DecisionKind::NoMatch,
        DecisionKind::NotApplicable,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            DecisionKind::Enable => "enable",
            DecisionKind::AlreadyEnabled => "already-enabled",
            DecisionKind::OptedOut => "opted-out",
            DecisionKind::ExcludedNamespace => "excluded-namespace",
            DecisionKind::NoMatch => "no-match",
            DecisionKind::NotApplicable => "not-applicable",
        }
    }

    /// Whether Cilium balances the Service per request after this decision is carried out.
    pub fn is_l7(self) -> bool {
        matches!(self, DecisionKind::Enable | DecisionKind::AlreadyEnabled)
    }
}

impl fmt::Display for DecisionKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A decision, its reason in words, and warnings about Cilium's pitfalls.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Decision {
    pub kind: DecisionKind,
    pub reason: String,
    pub warnings: Vec<String>,
    /// The rule that matched, for `enable` (and `already-enabled` when a rule also matches).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rule: Option<String>,
    /// The algorithm to set: the rule names one and the Service has none.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub algorithm: Option<Algorithm>,
}

/// What is known of a Service's namespace.
#[derive(Debug, Clone, Copy)]
pub struct NamespaceInfo<'a> {
    pub name: &'a str,
    /// The namespace's labels; `None` when they are not known. The webhook passes `None`: the API server has
    /// already applied the scope through the webhook configuration's namespaceSelector.
    pub labels: Option<&'a BTreeMap<String, String>>,
}

impl<'a> NamespaceInfo<'a> {
    pub fn new(name: &'a str, labels: Option<&'a BTreeMap<String, String>>) -> Self {
        NamespaceInfo { name, labels }
    }
}

/// Whether the port is marked as TLS: Cilium's Envoy takes cleartext h2c only, so such a port cannot be balanced.
pub fn is_tls_port(port: &ServicePort) -> bool {
    let name = port.name.as_deref().unwrap_or("");
    let app = port
        .app_protocol
        .as_deref()
        .unwrap_or("")
        .to_ascii_lowercase();
    matches!(
        app.as_str(),
        "https" | "tls" | "grpcs" | "kubernetes.io/wss"
    ) || name == "grpcs"
        || name.starts_with("grpcs-")
        || name == "https"
        || name.starts_with("https-")
        || name == "tls"
        || name.ends_with("-tls")
}

fn is_tcp(port: &ServicePort) -> bool {
    port.protocol.as_deref().is_none_or(|p| p == "TCP")
}

/// `grpc (50051/TCP)`, or `50051/TCP` for an unnamed port.
pub fn describe_port(port: &ServicePort) -> String {
    let proto = port.protocol.as_deref().unwrap_or("TCP");
    match port.name.as_deref() {
        Some(n) if !n.is_empty() => format!("{n} ({}/{proto})", port.port),
        _ => format!("{}/{proto}", port.port),
    }
}

impl CompiledPolicy {
    /// Evaluates the policy for one Service. Pure and total: any Service, however odd, gets a decision.
    pub fn evaluate(&self, svc: &Service, ns: NamespaceInfo<'_>) -> Decision {
        let policy = &self.policy;
        let key = policy.annotation_key.as_str();
        let annotations = svc.metadata.annotations.as_ref();
        let annotation = |k: &str| annotations.and_then(|a| a.get(k)).map(String::as_str);
        let mut warnings = Vec::new();
        if key != LEGACY_ANNOTATION_KEY
            && let Some(v) = annotation(LEGACY_ANNOTATION_KEY)
        {
            warnings.push(format!(
                "annotation {LEGACY_ANNOTATION_KEY}={v} is an old spelling that current Cilium ignores; use {key}"
            ));
        }
        let decided = |kind, reason: String, warnings| Decision {
            kind,
            reason,
            warnings,
            rule: None,
            algorithm: None,
        };

        // 1. Scope: what the webhook configuration's selectors keep away from the webhook.
        if policy.is_excluded(ns.name) {
            return decided(
                DecisionKind::ExcludedNamespace,
                format!(
                    "namespace {} is in the policy's excludedNamespaces",
                    ns.name
                ),
                warnings,
            );
        }
        if let Some(labels) = ns.labels {
            let opt = labels.get(OPT_LABEL).map(String::as_str);
            if opt == Some("false") {
                return decided(
                    DecisionKind::ExcludedNamespace,
                    format!("namespace {} is labelled {OPT_LABEL}=false", ns.name),
                    warnings,
                );
            }
            if policy.scope == Scope::NamespaceOptIn && opt != Some("true") {
                return decided(
                    DecisionKind::ExcludedNamespace,
                    format!(
                        "namespace {} is not labelled {OPT_LABEL}=true (scope namespace-opt-in)",
                        ns.name
                    ),
                    warnings,
                );
            }
        }
        let svc_labels = svc.metadata.labels.as_ref();
        if svc_labels
            .and_then(|l| l.get(OPT_LABEL))
            .map(String::as_str)
            == Some("false")
        {
            return decided(
                DecisionKind::OptedOut,
                format!("Service is labelled {OPT_LABEL}=false"),
                warnings,
            );
        }

        // 2. Services that Cilium cannot redirect: no frontend.
        let spec = svc.spec.as_ref();
        let current = annotation(key);
        if let Some(why) = not_applicable(svc) {
            if current == Some(ENABLED_VALUE) {
                warnings.push(format!(
                    "{key}=enabled has no effect here: {why}, so Cilium redirects nothing"
                ));
            }
            return decided(DecisionKind::NotApplicable, why, warnings);
        }

        // 3. The owner has already decided.
        let ports: &[ServicePort] = spec.and_then(|s| s.ports.as_deref()).unwrap_or(&[]);
        match current {
            Some(ENABLED_VALUE) => {
                pitfalls(svc, ports, &mut warnings);
                let mut d = decided(
                    DecisionKind::AlreadyEnabled,
                    format!("annotation {key}=enabled is already set"),
                    warnings,
                );
                d.rule = self
                    .first_match(svc, ports)
                    .map(|(i, _)| policy.rules[i].name.clone());
                return d;
            }
            Some(other) => {
                if other.eq_ignore_ascii_case(ENABLED_VALUE) {
                    warnings.push(format!(
                        "{key}={other} is not exactly \"enabled\" (the value is case-sensitive), so Cilium leaves L7 load balancing off"
                    ));
                }
                return decided(
                    DecisionKind::OptedOut,
                    format!(
                        "annotation {key}={other:?} is set by the Service's owner and is never overwritten"
                    ),
                    warnings,
                );
            }
            None => {}
        }

        // 4. The rules, in order.
        match self.first_match(svc, ports) {
            Some((i, reason)) => {
                let rule = &policy.rules[i];
                pitfalls(svc, ports, &mut warnings);
                let algorithm = rule
                    .algorithm
                    .filter(|_| annotation(ALGORITHM_ANNOTATION).is_none());
                Decision {
                    kind: DecisionKind::Enable,
                    reason,
                    warnings,
                    rule: Some(rule.name.clone()),
                    algorithm,
                }
            }
            None => {
                let reason = match ports.iter().find(|p| is_tls_port(p) && is_tcp(p)) {
                    Some(p)
                        if self.port_rule(p).is_some()
                            || p.name.as_deref().is_some_and(|n| n.starts_with("grpc")) =>
                    {
                        format!(
                            "port {} is TLS; Cilium's Envoy balances only cleartext h2c, so no rule matches",
                            describe_port(p)
                        )
                    }
                    _ if ports.is_empty() => {
                        "Service has no ports, and no rule's selector matches its labels"
                            .to_string()
                    }
                    _ => "no rule matches a port name, appProtocol or the Service's labels"
                        .to_string(),
                };
                decided(DecisionKind::NoMatch, reason, warnings)
            }
        }
    }

    /// The first rule that matches, with the reason in words.
    fn first_match(&self, svc: &Service, ports: &[ServicePort]) -> Option<(usize, String)> {
        let empty = BTreeMap::new();
        let labels = svc.metadata.labels.as_ref().unwrap_or(&empty);
        self.rules.iter().enumerate().find_map(|(i, compiled)| {
            let rule = &self.policy.rules[i];
            let by_port = ports
                .iter()
                .filter(|p| is_tcp(p) && !is_tls_port(p))
                .find_map(|p| compiled.port_reason(p).map(|r| (p, r)));
            if let Some((p, how)) = by_port {
                let how = match how {
                    PortMatchedBy::Name => String::new(),
                    PortMatchedBy::AppProtocol => format!(
                        " with appProtocol {}",
                        p.app_protocol.as_deref().unwrap_or_default()
                    ),
                };
                return Some((
                    i,
                    format!(
                        "port {}{how} matches rule '{}'",
                        describe_port(p),
                        rule.name
                    ),
                ));
            }
            let sel = rule.selector.as_ref()?;
            sel.matches(labels).then(|| {
                (
                    i,
                    format!(
                        "labels match selector {} of rule '{}'",
                        sel.describe(),
                        rule.name
                    ),
                )
            })
        })
    }

    /// The first rule whose port match (ignoring TLS) accepts the port.
    fn port_rule(&self, port: &ServicePort) -> Option<usize> {
        self.rules
            .iter()
            .position(|r| r.port_reason(port).is_some())
    }
}

#[derive(Debug, Clone, Copy)]
enum PortMatchedBy {
    Name,
    AppProtocol,
}

impl CompiledRule {
    fn port_reason(&self, port: &ServicePort) -> Option<PortMatchedBy> {
        if let Some(name) = port.name.as_deref()
            && self.names.iter().any(|g| g.matches(name))
        {
            return Some(PortMatchedBy::Name);
        }
        if let Some(app) = port.app_protocol.as_deref() {
            let app = app.to_ascii_lowercase();
            if self.app_protocols.iter().any(|g| g.matches(&app)) {
                return Some(PortMatchedBy::AppProtocol);
            }
        }
        None
    }
}

/// `Some(reason)` when Cilium has no frontend to redirect for this Service.
fn not_applicable(svc: &Service) -> Option<String> {
    let spec = svc.spec.as_ref()?;
    if spec.type_.as_deref() == Some("ExternalName") {
        return Some("ExternalName Service: a DNS alias with no frontend for Envoy".to_string());
    }
    if spec.cluster_ip.as_deref() == Some("None") {
        return Some("headless Service (clusterIP: None): no frontend for Envoy".to_string());
    }
    None
}

/// Cilium's known pitfalls for a Service that is (or will be) balanced by Envoy.
fn pitfalls(svc: &Service, ports: &[ServicePort], warnings: &mut Vec<String>) {
    if ports.len() > 1 {
        warnings.push(format!(
            "Service has {} ports: Cilium sends every TCP port through Envoy, and multi-port L7 Services have known Cilium bugs",
            ports.len()
        ));
    }
    for p in ports {
        let differs = match &p.target_port {
            Some(IntOrString::Int(t)) => *t != p.port,
            Some(IntOrString::String(s)) => s != &p.port.to_string(),
            None => false,
        };
        if differs {
            let target = match &p.target_port {
                Some(IntOrString::Int(t)) => t.to_string(),
                Some(IntOrString::String(s)) => s.clone(),
                None => String::new(),
            };
            warnings.push(format!(
                "port {} has targetPort {target}: Cilium's L7 redirect has known bugs when targetPort differs from port",
                describe_port(p)
            ));
        }
    }
    let spec = svc.spec.as_ref();
    if spec.and_then(|s| s.session_affinity.as_deref()) == Some("ClientIP") {
        warnings.push(
            "sessionAffinity ClientIP: Cilium turns session affinity off for L7 load-balanced Services".to_string(),
        );
    }
    if let Some(v) = svc
        .metadata
        .annotations
        .as_ref()
        .and_then(|a| a.get(ALGORITHM_ANNOTATION))
        && Algorithm::parse(v).is_none()
    {
        warnings.push(format!(
            "{ALGORITHM_ANNOTATION}={v:?} is not round_robin, least_request or random: Cilium silently uses round_robin"
        ));
    }
}

/// The name of the CiliumEnvoyConfig that Cilium's operator creates for an L7 Service.
pub fn cilium_envoy_config_name(service: &str) -> String {
    format!("cilium-envoy-lb-{service}")
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn svc(v: serde_json::Value) -> Service {
        serde_json::from_value(v).expect("test Service")
    }

    fn grpc_svc() -> Service {
        svc(json!({
            "metadata": {"name": "api", "namespace": "apps"},
            "spec": {"ports": [{"name": "grpc", "port": 50051, "targetPort": 50051}]}
        }))
    }

    fn labels(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    fn cluster_policy() -> CompiledPolicy {
        Policy::from_yaml("scope: cluster\nrules:\n  - name: grpc-ports\n    ports: {}\n")
            .expect("policy")
            .compile()
    }

    fn eval(p: &CompiledPolicy, s: &Service) -> Decision {
        p.evaluate(s, NamespaceInfo::new("apps", None))
    }

    #[test]
    fn shipped_default_policy_parses_and_is_opt_in_enforce_grpc() {
        let p = Policy::from_yaml(DEFAULT_POLICY_YAML).expect("shipped policy is valid");
        assert_eq!(p.scope, Scope::NamespaceOptIn);
        assert_eq!(p.mode, Mode::Enforce);
        assert_eq!(p.annotation_key, "service.cilium.io/lb-l7");
        assert_eq!(p.timeout_seconds, 5);
        assert_eq!(p.rules.len(), 1);
        assert_eq!(p.rules[0].ports, Some(PortMatch::default()));
        assert_eq!(p.rules[0].algorithm, None);
        for ns in [
            "kube-system",
            "kube-public",
            "kube-node-lease",
            "lb-l7-system",
        ] {
            assert!(p.is_excluded(ns), "{ns} excluded by default");
        }
        assert_eq!(Policy::default(), p);
    }

    #[test]
    fn enable_by_port_name_with_reason() {
        let d = eval(&cluster_policy(), &grpc_svc());
        assert_eq!(d.kind, DecisionKind::Enable);
        assert_eq!(d.reason, "port grpc (50051/TCP) matches rule 'grpc-ports'");
        assert_eq!(d.rule.as_deref(), Some("grpc-ports"));
        assert!(d.warnings.is_empty(), "{:?}", d.warnings);
    }

    #[test]
    fn enable_by_glob_port_name_and_by_app_protocol() {
        let p = cluster_policy();
        let d = eval(
            &p,
            &svc(
                json!({"metadata": {"name": "a"}, "spec": {"ports": [{"name": "grpc-api", "port": 9000}]}}),
            ),
        );
        assert_eq!(d.kind, DecisionKind::Enable);
        let d = eval(
            &p,
            &svc(
                json!({"metadata": {"name": "a"}, "spec": {"ports": [{"name": "web", "port": 8080, "appProtocol": "kubernetes.io/h2c"}]}}),
            ),
        );
        assert_eq!(d.kind, DecisionKind::Enable);
        assert_eq!(
            d.reason,
            "port web (8080/TCP) with appProtocol kubernetes.io/h2c matches rule 'grpc-ports'"
        );
        let d = eval(
            &p,
            &svc(
                json!({"metadata": {"name": "a"}, "spec": {"ports": [{"port": 8080, "appProtocol": "GRPC"}]}}),
            ),
        );
        assert_eq!(
            d.kind,
            DecisionKind::Enable,
            "appProtocol compares case-insensitively"
        );
    }

    #[test]
    fn no_match_for_http_udp_and_empty_services() {
        let p = cluster_policy();
        let d = eval(
            &p,
            &svc(
                json!({"metadata": {"name": "web"}, "spec": {"ports": [{"name": "http", "port": 80}]}}),
            ),
        );
        assert_eq!(d.kind, DecisionKind::NoMatch);
        let d = eval(
            &p,
            &svc(
                json!({"metadata": {"name": "u"}, "spec": {"ports": [{"name": "grpc", "port": 53, "protocol": "UDP"}]}}),
            ),
        );
        assert_eq!(d.kind, DecisionKind::NoMatch, "gRPC runs over TCP only");
        let d = eval(&p, &svc(json!({"metadata": {"name": "e"}})));
        assert_eq!(d.kind, DecisionKind::NoMatch);
        assert!(d.reason.contains("no ports"), "{}", d.reason);
    }

    #[test]
    fn tls_ports_never_count() {
        let p = cluster_policy();
        for port in [
            json!({"name": "grpcs", "port": 443}),
            json!({"name": "grpc-tls", "port": 443}),
            json!({"name": "grpc", "port": 443, "appProtocol": "https"}),
            json!({"name": "grpc-api", "port": 443, "appProtocol": "tls"}),
        ] {
            let s = svc(json!({"metadata": {"name": "s"}, "spec": {"ports": [port.clone()]}}));
            let d = eval(&p, &s);
            assert_eq!(d.kind, DecisionKind::NoMatch, "{port}");
            assert!(d.reason.contains("TLS"), "{port}: {}", d.reason);
        }
    }

    #[test]
    fn already_enabled_and_owner_values_are_respected() {
        let p = cluster_policy();
        let mut s = grpc_svc();
        s.metadata.annotations = Some(labels(&[(DEFAULT_ANNOTATION_KEY, "enabled")]));
        let d = eval(&p, &s);
        assert_eq!(d.kind, DecisionKind::AlreadyEnabled);
        assert_eq!(d.rule.as_deref(), Some("grpc-ports"));

        s.metadata.annotations = Some(labels(&[(DEFAULT_ANNOTATION_KEY, "disabled")]));
        let d = eval(&p, &s);
        assert_eq!(d.kind, DecisionKind::OptedOut);
        assert!(d.warnings.is_empty());

        s.metadata.annotations = Some(labels(&[(DEFAULT_ANNOTATION_KEY, "Enabled")]));
        let d = eval(&p, &s);
        assert_eq!(
            d.kind,
            DecisionKind::OptedOut,
            "the value is case-sensitive"
        );
        assert!(d.warnings[0].contains("case-sensitive"), "{:?}", d.warnings);
    }

    #[test]
    fn opt_out_label_on_service() {
        let mut s = grpc_svc();
        s.metadata.labels = Some(labels(&[(OPT_LABEL, "false")]));
        let d = eval(&cluster_policy(), &s);
        assert_eq!(d.kind, DecisionKind::OptedOut);
        assert!(d.reason.contains("lb-l7-webhook/enabled=false"));
    }

    #[test]
    fn scope_cluster_excludes_listed_and_opted_out_namespaces() {
        let p = cluster_policy();
        let s = grpc_svc();
        let d = p.evaluate(&s, NamespaceInfo::new("kube-system", None));
        assert_eq!(d.kind, DecisionKind::ExcludedNamespace);
        let out = labels(&[(OPT_LABEL, "false")]);
        let d = p.evaluate(&s, NamespaceInfo::new("apps", Some(&out)));
        assert_eq!(d.kind, DecisionKind::ExcludedNamespace);
        let none = BTreeMap::new();
        let d = p.evaluate(&s, NamespaceInfo::new("apps", Some(&none)));
        assert_eq!(
            d.kind,
            DecisionKind::Enable,
            "cluster scope needs no namespace label"
        );
    }

    #[test]
    fn scope_opt_in_needs_the_namespace_label_when_labels_are_known() {
        let p = Policy::default().compile();
        let s = grpc_svc();
        let none = BTreeMap::new();
        let d = p.evaluate(&s, NamespaceInfo::new("apps", Some(&none)));
        assert_eq!(d.kind, DecisionKind::ExcludedNamespace);
        assert!(d.reason.contains("not labelled lb-l7-webhook/enabled=true"));
        let on = labels(&[(OPT_LABEL, "true")]);
        assert_eq!(
            p.evaluate(&s, NamespaceInfo::new("apps", Some(&on))).kind,
            DecisionKind::Enable
        );
        // The webhook does not know the labels: the API server's namespaceSelector already applied the scope.
        assert_eq!(
            p.evaluate(&s, NamespaceInfo::new("apps", None)).kind,
            DecisionKind::Enable
        );
        // The exclude list applies in opt-in scope too, even when the namespace is labelled.
        assert_eq!(
            p.evaluate(&s, NamespaceInfo::new("kube-system", Some(&on)))
                .kind,
            DecisionKind::ExcludedNamespace
        );
    }

    #[test]
    fn headless_and_external_name_are_not_applicable() {
        let p = cluster_policy();
        let mut s = grpc_svc();
        s.spec.as_mut().unwrap().cluster_ip = Some("None".into());
        s.metadata.annotations = Some(labels(&[(DEFAULT_ANNOTATION_KEY, "enabled")]));
        let d = eval(&p, &s);
        assert_eq!(d.kind, DecisionKind::NotApplicable);
        assert!(d.reason.contains("headless"));
        assert!(
            d.warnings.iter().any(|w| w.contains("no effect")),
            "{:?}",
            d.warnings
        );
        let s = svc(
            json!({"metadata": {"name": "x"}, "spec": {"type": "ExternalName", "externalName": "example.org", "ports": [{"name": "grpc", "port": 1}]}}),
        );
        let d = eval(&p, &s);
        assert_eq!(d.kind, DecisionKind::NotApplicable);
        assert!(d.reason.contains("ExternalName"));
    }

    #[test]
    fn every_pitfall_warning() {
        let p = cluster_policy();
        let s = svc(json!({
            "metadata": {"name": "x", "annotations": {
                "io.cilium.service/lb-l7": "enabled",
                "service.cilium.io/lb-l7-algorithm": "fastest"}},
            "spec": {"sessionAffinity": "ClientIP", "ports": [
                {"name": "grpc", "port": 80, "targetPort": 8080},
                {"name": "metrics", "port": 9090, "targetPort": "metrics"}]}
        }));
        let d = eval(&p, &s);
        assert_eq!(d.kind, DecisionKind::Enable);
        let all = d.warnings.join("\n");
        assert!(
            all.contains("io.cilium.service/lb-l7=enabled is an old spelling"),
            "{all}"
        );
        assert!(all.contains("Service has 2 ports"), "{all}");
        assert!(
            all.contains("port grpc (80/TCP) has targetPort 8080"),
            "{all}"
        );
        assert!(
            all.contains("port metrics (9090/TCP) has targetPort metrics"),
            "{all}"
        );
        assert!(all.contains("sessionAffinity ClientIP"), "{all}");
        assert!(all.contains("\"fastest\""), "{all}");
        assert_eq!(d.warnings.len(), 6, "{all}");
    }

    #[test]
    fn legacy_key_alone_is_reported_even_without_a_match() {
        let s = svc(
            json!({"metadata": {"name": "x", "annotations": {"io.cilium.service/lb-l7": "enabled"}},
            "spec": {"ports": [{"name": "http", "port": 80}]}}),
        );
        let d = eval(&cluster_policy(), &s);
        assert_eq!(d.kind, DecisionKind::NoMatch);
        assert_eq!(d.warnings.len(), 1);
    }

    #[test]
    fn rules_are_tried_in_order_and_labels_match_with_kubernetes_semantics() {
        let p = Policy::from_yaml(
            r#"
scope: cluster
rules:
  - name: payments
    selector:
      matchLabels: {team: payments}
      matchExpressions:
        - {key: tier, operator: In, values: [backend, api]}
        - {key: legacy, operator: DoesNotExist}
    algorithm: least_request
  - name: grpc-ports
    ports: {}
    algorithm: random
"#,
        )
        .expect("policy")
        .compile();
        let mut s = grpc_svc();
        s.metadata.labels = Some(labels(&[("team", "payments"), ("tier", "api")]));
        let d = eval(&p, &s);
        assert_eq!(d.rule.as_deref(), Some("payments"));
        assert_eq!(d.algorithm, Some(Algorithm::LeastRequest));
        assert!(
            d.reason
                .contains("labels match selector team=payments,tier in (backend,api),!legacy"),
            "{}",
            d.reason
        );

        s.metadata.labels = Some(labels(&[
            ("team", "payments"),
            ("tier", "api"),
            ("legacy", ""),
        ]));
        let d = eval(&p, &s);
        assert_eq!(
            d.rule.as_deref(),
            Some("grpc-ports"),
            "DoesNotExist fails, so the next rule decides"
        );
        assert_eq!(d.algorithm, Some(Algorithm::Random));

        // A label-only rule matches a Service with no gRPC port at all.
        let web = svc(
            json!({"metadata": {"name": "w", "labels": {"team": "payments", "tier": "backend"}},
            "spec": {"ports": [{"name": "http", "port": 80}]}}),
        );
        assert_eq!(eval(&p, &web).kind, DecisionKind::Enable);

        // The Service's own algorithm annotation wins.
        let mut s = grpc_svc();
        s.metadata.annotations = Some(labels(&[(ALGORITHM_ANNOTATION, "round_robin")]));
        assert_eq!(eval(&p, &s).algorithm, None);
    }

    #[test]
    fn selector_operators() {
        let sel = |op: SelectorOperator, values: &[&str]| LabelSelector {
            match_labels: BTreeMap::new(),
            match_expressions: vec![LabelSelectorRequirement {
                key: "k".into(),
                operator: op,
                values: values.iter().map(|v| v.to_string()).collect(),
            }],
        };
        let with = labels(&[("k", "a")]);
        let without = BTreeMap::new();
        assert!(sel(SelectorOperator::In, &["a", "b"]).matches(&with));
        assert!(!sel(SelectorOperator::In, &["a"]).matches(&without));
        assert!(!sel(SelectorOperator::NotIn, &["a"]).matches(&with));
        assert!(sel(SelectorOperator::NotIn, &["a"]).matches(&without));
        assert!(sel(SelectorOperator::Exists, &[]).matches(&with));
        assert!(!sel(SelectorOperator::Exists, &[]).matches(&without));
        assert!(sel(SelectorOperator::DoesNotExist, &[]).matches(&without));
        assert!(!sel(SelectorOperator::DoesNotExist, &[]).matches(&with));
    }

    #[test]
    fn custom_annotation_key() {
        let p = Policy::from_yaml(
            "scope: cluster\nannotationKey: io.cilium/lb-l7\nrules: [{name: r, ports: {}}]\n",
        )
        .expect("policy")
        .compile();
        let mut s = grpc_svc();
        s.metadata.annotations = Some(labels(&[("io.cilium/lb-l7", "enabled")]));
        assert_eq!(eval(&p, &s).kind, DecisionKind::AlreadyEnabled);
    }

    #[test]
    fn invalid_policies_name_the_field() {
        let cases: &[(&str, &str)] = &[
            ("scope: cluster\nrules: []\n", "rules: at least one rule"),
            ("scope: cluster\nrulez: []\n", "rulez"),
            (
                "scope: everywhere\nrules: [{name: r, ports: {}}]\n",
                "everywhere",
            ),
            (
                "scope: cluster\nrules: [{name: r}]\n",
                "rules[0]: rule \"r\" needs `ports` or `selector`",
            ),
            (
                "scope: cluster\nrules: [{name: r, ports: {namez: [x]}}]\n",
                "namez",
            ),
            (
                "scope: cluster\nrules: [{name: r, ports: {}}, {name: r, ports: {}}]\n",
                "rules[1].name: duplicate",
            ),
            (
                "scope: cluster\nrules: [{name: r, selector: {}}]\n",
                "rules[0].selector: an empty selector",
            ),
            (
                "scope: cluster\nrules: [{name: r, selector: {matchExpressions: [{key: a, operator: In}]}}]\n",
                "rules[0].selector.matchExpressions[0].values",
            ),
            (
                "scope: cluster\nrules: [{name: r, selector: {matchExpressions: [{key: a, operator: Near, values: [x]}]}}]\n",
                "Near",
            ),
            (
                "scope: cluster\nrules: [{name: r, ports: {}, algorithm: fastest}]\n",
                "fastest",
            ),
            (
                "scope: cluster\nannotationKey: \"a b\"\nrules: [{name: r, ports: {}}]\n",
                "annotationKey",
            ),
            (
                "scope: cluster\ntimeoutSeconds: 60\nrules: [{name: r, ports: {}}]\n",
                "timeoutSeconds",
            ),
            (
                "scope: cluster\nexcludedNamespaces: [Kube_System]\nrules: [{name: r, ports: {}}]\n",
                "excludedNamespaces[0]",
            ),
            (
                "scope: cluster\nrules: [{name: r, ports: {names: [], appProtocols: []}}]\n",
                "rules[0].ports",
            ),
            ("", ""),
        ];
        for (text, expected) in cases {
            let err = Policy::from_yaml(text).expect_err(text);
            assert!(err.message.contains(expected), "{text:?}: {}", err.message);
        }
    }
}
