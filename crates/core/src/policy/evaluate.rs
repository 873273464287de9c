//! Evaluation: a typed Service and its namespace context in, a [`Decision`] out. Pure and total.

use std::collections::BTreeMap;
use std::fmt;

use k8s_openapi::api::core::v1::{Service, ServicePort};
use serde::{Deserialize, Serialize};
use wildmatch::WildMatch;

use super::pitfalls::{not_applicable, pitfalls};
use super::ports::{describe_port, is_tcp, is_tls_port};
use super::*;

/// A policy ready for evaluation.
#[derive(Debug, Clone)]
pub struct CompiledPolicy {
    pub policy: Policy,
    pub(super) rules: Vec<CompiledRule>,
}

#[derive(Debug, Clone)]
pub(super) struct CompiledRule {
    pub(super) names: Vec<WildMatch>,
    pub(super) app_protocols: Vec<WildMatch>,
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

impl CompiledPolicy {
    /// Evaluates the policy for one Service. Pure and total: any Service, however odd, gets a decision.
    ///
    /// When the namespace's labels are unknown, the Service is judged as in a namespace without labels, and the
    /// decision's last warning says so.
    pub fn evaluate(&self, svc: &Service, ns: NamespaceContext<'_>) -> Decision {
        let mut decision = self.decide(svc, ns);
        if let Some(w) = ns.warning() {
            decision.warnings.push(w);
        }
        decision
    }

    /// Whether [`Self::evaluate`], or the patch built from its decision, can read this annotation of a Service:
    /// the policy's annotation key, the legacy spelling and the algorithm. A reader that decodes only what it needs
    /// (the webhook) keeps these and drops the Service's other annotations; the decision and the patch are the
    /// same, as long as it keeps whether the Service has annotations at all. Change this with `decide`.
    pub fn reads_annotation(&self, key: &str) -> bool {
        key == self.policy.annotation_key
            || key == LEGACY_ANNOTATION_KEY
            || key == ALGORITHM_ANNOTATION
    }

    /// Whether [`Self::evaluate`] can read this label of a Service: the opt-out label and every key a rule's
    /// selector names. Like [`Self::reads_annotation`], for readers that drop the other labels.
    pub fn reads_label(&self, key: &str) -> bool {
        key == OPT_LABEL
            || self
                .policy
                .rules
                .iter()
                .filter_map(|r| r.selector.as_ref())
                .any(|s| {
                    s.match_labels.contains_key(key)
                        || s.match_expressions.iter().any(|e| e.key == key)
                })
    }

    fn decide(&self, svc: &Service, ns: NamespaceContext<'_>) -> Decision {
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
        if let Some(labels) = ns.labels_for_scope() {
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
