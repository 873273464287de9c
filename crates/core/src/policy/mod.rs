//! The policy and its evaluation: which Services get Cilium's L7 load-balancing annotation, and why.
//!
//! Pure: no IO. [`Policy::from_yaml`] parses and validates text; [`evaluate`] maps a typed Service and what is
//! known of its namespace to a [`Decision`]. The webhook, the report and the backfill all call [`evaluate`], so
//! they can never disagree about a Service.
//!
//! The module's parts: the model (this file), [`selector`] (label-selector semantics), [`validate`] (what serde
//! cannot check), [`evaluate`] (decisions, reasons), [`ports`] (TLS and TCP ports) and [`pitfalls`] (Cilium's
//! known traps, as warnings).

use std::fmt;

use serde::{Deserialize, Serialize};

mod evaluate;
mod pitfalls;
mod ports;
mod selector;
mod validate;

pub use crate::namespace::{NamespaceContext, NamespaceLabels};
pub use evaluate::{CompiledPolicy, Decision, DecisionKind};
pub use pitfalls::named_target_port_warnings;
pub use ports::{describe_port, is_tls_port};
pub use selector::{LabelSelector, LabelSelectorRequirement, SelectorOperator};
pub use validate::PolicyError;

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
pub const DEFAULT_POLICY_YAML: &str = include_str!("../../../../deploy/base/policy.yaml");

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

/// The name of the CiliumEnvoyConfig that Cilium's operator creates for an L7 Service.
pub fn cilium_envoy_config_name(service: &str) -> String {
    format!("cilium-envoy-lb-{service}")
}

#[cfg(test)]
mod tests;
