//! The doctor's checks: pure functions from what was fetched to ok / warn / fail results.
//!
//! Nothing here does IO. [`diagnose`] takes a [`ClusterState`] (filled by [`super::fetch`], or built by hand in
//! tests) and returns a [`Report`]. Service-level judgements (pitfall warnings, what the policy would do) come
//! from [`CompiledPolicy::evaluate`], so the doctor, the webhook and the report never disagree about a Service.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;

use k8s_openapi::api::admissionregistration::v1::{MutatingWebhook, MutatingWebhookConfiguration};
use k8s_openapi::api::core::v1::{ConfigMap, Service};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;
use lb_l7_core::namespace::namespace_of;
use serde::Serialize;

use lb_l7_core::policy::{
    self, CompiledPolicy, DecisionKind, ENABLED_VALUE, LEGACY_ANNOTATION_KEY, Mode,
    NamespaceContext, Policy, Scope,
};

/// The key of the webhook's policy in its ConfigMap (the file name `serve --policy` reads).
pub const POLICY_CONFIGMAP_KEY: &str = crate::cluster::policy_source::DEFAULT_POLICY_KEY;
/// Cilium's ConfigMap.
pub const CILIUM_CONFIG_NAMESPACE: &str = "kube-system";
pub const CILIUM_CONFIG_NAME: &str = "cilium-config";
/// The CRD that Cilium's operator writes L7 load-balancing configuration into.
pub const ENVOY_CONFIG_CRD: &str = "ciliumenvoyconfigs.cilium.io";
/// Warn when the webhook's CA expires within this many days.
pub const CA_WARN_DAYS: i64 = 30;
/// The API server's own default (and the longest timeout we recommend): a slow webhook holds Service writes.
pub const MAX_RECOMMENDED_TIMEOUT_SECONDS: i32 = 10;
/// How many object names a one-line message lists before "and N more".
pub(super) const LIST_IN_MESSAGE: usize = 5;

/// How a check came out.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    Ok,
    Warn,
    Fail,
}

impl Status {
    pub fn as_str(self) -> &'static str {
        match self {
            Status::Ok => "ok",
            Status::Warn => "warn",
            Status::Fail => "fail",
        }
    }
}

impl fmt::Display for Status {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Which part of the chain a check looks at.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Group {
    Cilium,
    Webhook,
    Effect,
}

impl Group {
    pub fn title(self) -> &'static str {
        match self {
            Group::Cilium => "Cilium",
            Group::Webhook => "Webhook",
            Group::Effect => "Effect",
        }
    }
}

/// One result: a stable id (for scripts), a title, a one-line message and, unless ok, a one-line fix.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Check {
    pub id: &'static str,
    pub group: Group,
    pub status: Status,
    pub title: String,
    pub message: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub fix: Option<String>,
    /// The objects concerned (`namespace/name`), all of them (the message lists only the first few).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub objects: Vec<String>,
}

impl Check {
    fn build(id: &'static str, group: Group, title: impl Into<String>) -> CheckBuilder {
        CheckBuilder {
            id,
            group,
            title: title.into(),
            objects: Vec::new(),
        }
    }
}

struct CheckBuilder {
    id: &'static str,
    group: Group,
    title: String,
    objects: Vec<String>,
}

impl CheckBuilder {
    fn objects(mut self, objects: Vec<String>) -> Self {
        self.objects = objects;
        self
    }

    fn ok(self, message: impl Into<String>) -> Check {
        self.finish(Status::Ok, message.into(), None)
    }

    fn warn(self, message: impl Into<String>, fix: impl Into<String>) -> Check {
        self.finish(Status::Warn, message.into(), Some(fix.into()))
    }

    fn fail(self, message: impl Into<String>, fix: impl Into<String>) -> Check {
        self.finish(Status::Fail, message.into(), Some(fix.into()))
    }

    fn finish(self, status: Status, message: String, fix: Option<String>) -> Check {
        Check {
            id: self.id,
            group: self.group,
            status,
            title: self.title,
            message,
            fix,
            objects: self.objects,
        }
    }
}

/// Counts per status.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct Summary {
    pub ok: usize,
    pub warn: usize,
    pub fail: usize,
}

/// Every check, in a fixed order (Cilium, then the webhook, then the effect).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Report {
    pub checks: Vec<Check>,
    pub summary: Summary,
    /// The policy the checks used: where it came from, its scope and mode (`None` when it could not be found, and
    /// the Effect checks used the built-in default).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub policy: Option<PolicyUsed>,
}

/// Which policy the doctor used, for scripts (`-o json`).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct PolicyUsed {
    pub source: String,
    pub scope: Scope,
    pub mode: Mode,
}

impl Report {
    pub fn new(checks: Vec<Check>) -> Self {
        let mut summary = Summary::default();
        for c in &checks {
            match c.status {
                Status::Ok => summary.ok += 1,
                Status::Warn => summary.warn += 1,
                Status::Fail => summary.fail += 1,
            }
        }
        Report {
            checks,
            summary,
            policy: None,
        }
    }

    /// Whether any check failed (exit status 1).
    pub fn failed(&self) -> bool {
        self.summary.fail > 0
    }

    /// The check with this id, if it ran.
    pub fn get(&self, id: &str) -> Option<&Check> {
        self.checks.iter().find(|c| c.id == id)
    }
}

pub use crate::cluster::Lookup;

/// What the doctor read from the cluster. Built by [`super::fetch::fetch`]; tests build it by hand.
#[derive(Debug, Clone)]
pub struct ClusterState {
    /// kube-system/cilium-config.
    pub cilium_config: Lookup<ConfigMap>,
    /// The CRD `ciliumenvoyconfigs.cilium.io` (only its presence matters).
    pub envoy_config_crd: Lookup<()>,
    /// The MutatingWebhookConfiguration.
    pub webhook: Lookup<MutatingWebhookConfiguration>,
    /// EndpointSlices of each Service the webhook configuration points at, keyed by (namespace, name).
    pub webhook_endpoints: BTreeMap<(String, String), Lookup<Vec<EndpointSlice>>>,
    /// The policy the webhook runs (followed from its Deployment, or the ConfigMap named by
    /// `--policy-configmap`), or why it is not known.
    pub policy: crate::cluster::policy_source::Discovery,
    /// Services (all namespaces, or `--namespace`).
    pub services: Lookup<Vec<Service>>,
    /// Namespace labels by namespace name (for the policy's scope).
    pub namespaces: Lookup<crate::cluster::NamespaceLabelMap>,
    /// CiliumEnvoyConfigs as (namespace, name). `Missing` when the CRD is not installed.
    pub envoy_configs: Lookup<BTreeSet<(String, String)>>,
    /// DaemonSet kube-system/cilium: the agent (its image tag gives Cilium's version).
    pub cilium_agent: Lookup<k8s_openapi::api::apps::v1::DaemonSet>,
    /// DaemonSet kube-system/cilium-envoy: Envoy outside the agent (`external-envoy-proxy: "true"`).
    pub envoy_daemonset: Lookup<k8s_openapi::api::apps::v1::DaemonSet>,
    /// The same CiliumEnvoyConfigs as `envoy_configs`, with their owners and `spec.services`.
    pub envoy_config_objects: Lookup<Vec<EnvoyConfigSummary>>,
    /// CiliumClusterwideEnvoyConfigs (always cluster-wide). `Missing` when the CRD is not installed.
    pub clusterwide_envoy_configs: Lookup<Vec<EnvoyConfigSummary>>,
    /// The reconciler's Lease in the webhook's namespace. `Missing`: no reconciler is installed.
    pub reconciler_lease: Lookup<k8s_openapi::api::coordination::v1::Lease>,
    /// Named targetPorts resolved through the Services' EndpointSlices.
    pub target_ports: Lookup<crate::cluster::target_ports::ResolvedPorts>,
    /// The end-to-end probe's outcome (`--probe`); `None` when it was not asked for.
    pub probe: Option<ProbeOutcome>,
}

/// Settings that are not in the cluster.
#[derive(Debug, Clone)]
pub struct DiagnoseOptions {
    pub webhook_name: String,
    pub webhook_namespace: String,
    /// An explicit policy ConfigMap (in `webhook_namespace`) instead of the one the webhook's Deployment mounts.
    pub policy_configmap: Option<String>,
    /// `--policy FILE`: compared with the installed policy (a warning when they differ).
    pub policy_file: Option<(std::path::PathBuf, Policy)>,
    /// Run the end-to-end probe (a server-side dry-run create of a Service).
    pub probe: bool,
    /// The namespace to probe in, instead of the first one the policy selects.
    pub probe_namespace: Option<String>,
    /// Only Services of this namespace (the Cilium and webhook checks are cluster-wide).
    pub namespace: Option<String>,
    /// Items per list call.
    pub page_size: u32,
    /// Now, as Unix seconds (for certificate expiry).
    pub now: i64,
}

impl DiagnoseOptions {
    /// The shipped names (webhook `lb-l7-webhook` in `lb-l7-system`), every namespace, no probe, no policy file,
    /// default page size, at `now` (Unix seconds).
    pub fn at(now: i64) -> Self {
        DiagnoseOptions {
            webhook_name: crate::doctor::DEFAULT_WEBHOOK_NAME.to_string(),
            webhook_namespace: lb_l7_core::policy::WEBHOOK_NAMESPACE.to_string(),
            policy_configmap: None,
            policy_file: None,
            probe: false,
            probe_namespace: None,
            namespace: None,
            page_size: crate::cluster::DEFAULT_PAGE_SIZE,
            now,
        }
    }
}

/// The webhook configuration the policy renders (the drift check's reference); `None` skips the drift check.
pub type Renderer<'a> = &'a dyn Fn(&Policy) -> Option<MutatingWebhookConfiguration>;

/// Runs every check over what was fetched.
pub fn diagnose(
    state: &ClusterState,
    opts: &DiagnoseOptions,
    render: Option<Renderer<'_>>,
) -> Report {
    let mut checks = Vec::new();
    let services = state.services.found().map(Vec::as_slice).unwrap_or(&[]);

    // Cilium.
    let version = cilium_version(&state.cilium_agent);
    checks.extend(check_cilium_config_for(&state.cilium_config, &version));
    checks.push(check_envoy_config_crd(&state.envoy_config_crd));
    if let Some(c) = check_l7_ports(&state.cilium_config, &state.services) {
        checks.push(c);
    }
    checks.extend(check_l7_proxy(&state.cilium_config));
    checks.extend(check_envoy_placement(
        &state.cilium_config,
        &state.envoy_daemonset,
        &state.cilium_agent,
    ));
    checks.extend(check_envoy_timeouts(&state.cilium_config));
    checks.extend(check_default_algorithm(&state.cilium_config));

    // The webhook.
    let (policy_check, policy) = check_policy(&state.policy, opts);
    checks.push(check_webhook_exists(&state.webhook, &opts.webhook_name));
    if let Lookup::Found(mwc) = &state.webhook {
        checks.push(check_ca_bundle(mwc, opts.now));
        checks.push(check_webhook_endpoints(mwc, &state.webhook_endpoints));
        checks.push(check_failure_policy(mwc));
        checks.push(check_timeout(mwc));
    }
    checks.push(policy_check);
    if let (Lookup::Found(mwc), Some(render)) = (&state.webhook, render)
        && let Some(policy) = policy.as_ref()
    {
        checks.push(check_drift(mwc, render(policy).as_ref()));
    }
    let reconciler = reconciler_state(&state.reconciler_lease, opts.now);
    checks.push(check_reconciler(&reconciler, opts));
    if let Some(outcome) = &state.probe {
        let policy = policy.clone().unwrap_or_default();
        checks.push(check_probe(outcome, &policy, &checks, &state.policy));
    }

    // The effect.
    let policy = policy.unwrap_or_default();
    let compiled = policy.compile();
    match &state.services {
        Lookup::Found(_) => {
            checks.push(check_envoy_configs(
                services,
                &compiled,
                &state.envoy_configs,
            ));
            checks.extend(check_envoy_config_owners(
                services,
                &compiled,
                &state.envoy_config_objects,
            ));
            checks.extend(check_envoy_config_conflicts(
                services,
                &compiled,
                &state.envoy_config_objects,
                &state.clusterwide_envoy_configs,
            ));
            checks.push(check_legacy_annotation(services, &policy));
            checks.push(check_annotation_case(services, &policy));
            checks.push(check_pitfalls(services, &compiled, &state.target_ports));
            checks.push(check_algorithm_annotations(services, &compiled));
            checks.push(check_not_annotated(
                services,
                &compiled,
                &state.namespaces,
                &reconciler,
                opts,
            ));
        }
        Lookup::Missing | Lookup::Unreadable(_) => {
            let why = match &state.services {
                Lookup::Unreadable(why) => why.as_str(),
                _ => "the API server does not serve services",
            };
            checks.push(
                Check::build("effect.services", Group::Effect, "Services readable").fail(
                    format!("cannot list Services, so the effect was not checked: {why}"),
                    unreadable_fix("services"),
                ),
            );
        }
    }
    let mut report = Report::new(checks);
    report.policy = state.policy.as_ref().ok().map(|s| PolicyUsed {
        source: s.origin.to_string(),
        scope: s.policy.scope,
        mode: s.policy.mode,
    });
    report
}

pub(super) fn namespaced(svc: &Service) -> String {
    format!(
        "{}/{}",
        namespace_of(&svc.metadata),
        svc.metadata.name.as_deref().unwrap_or("")
    )
}

/// `a, b, c and 4 more`.
pub(super) fn list_some(items: &[String]) -> String {
    list_some_sep(items, ", ")
}

pub(super) fn list_some_sep(items: &[String], sep: &str) -> String {
    if items.len() <= LIST_IN_MESSAGE {
        items.join(sep)
    } else {
        format!(
            "{} and {} more",
            items[..LIST_IN_MESSAGE].join(sep),
            items.len() - LIST_IN_MESSAGE
        )
    }
}

pub(super) fn plural(n: usize, one: &str, many: &str) -> String {
    format!("{n} {}", if n == 1 { one } else { many })
}

/// `kubectl annotate service -n apps a b ARGS && kubectl annotate service -n shop c ARGS`: one pasteable command per
/// namespace for Services given as `namespace/name`.
pub(super) fn annotate_commands(services: &[String], args: &str) -> String {
    let mut by_ns: BTreeMap<&str, Vec<&str>> = BTreeMap::new();
    for s in services {
        let (ns, name) = s.split_once('/').unwrap_or(("default", s));
        by_ns.entry(ns).or_default().push(name);
    }
    by_ns
        .iter()
        .map(|(ns, names)| {
            format!(
                "kubectl annotate service -n {ns} {} {args}",
                names.join(" ")
            )
        })
        .collect::<Vec<_>>()
        .join(" && ")
}

pub(crate) fn unreadable_fix(what: &str) -> String {
    format!(
        "give the doctor read access to {what}: kubectl apply -k deploy/doctor (or run it with cluster-admin)"
    )
}

mod admission_policy;
mod cilium;
mod drift;
mod effect;
mod envoy;
mod probe;
mod reconciler;
mod webhook;

pub use admission_policy::*;
pub use cilium::*;
pub use drift::*;
pub use effect::*;
pub use envoy::*;
pub use probe::*;
pub use reconciler::*;
pub use webhook::*;

#[cfg(test)]
mod tests;
