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
pub const POLICY_CONFIGMAP_KEY: &str = "policy.yaml";
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
const LIST_IN_MESSAGE: usize = 5;

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
        Report { checks, summary }
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
    /// The ConfigMap holding the webhook's policy.
    pub policy_config: Lookup<ConfigMap>,
    /// Services (all namespaces, or `--namespace`).
    pub services: Lookup<Vec<Service>>,
    /// Namespace labels by namespace name (for the policy's scope).
    pub namespaces: Lookup<crate::cluster::NamespaceLabelMap>,
    /// CiliumEnvoyConfigs as (namespace, name). `Missing` when the CRD is not installed.
    pub envoy_configs: Lookup<BTreeSet<(String, String)>>,
}

/// What the drift check compares: the parts of a webhook entry that the policy decides, normalised so that
/// what means the same compares equal (list order in selectors and rules, an absent versus an empty selector,
/// the API server's defaults for failurePolicy, timeoutSeconds and a rule's scope).
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct PolicyDecidedFields {
    pub namespace_selector: Option<serde_json::Value>,
    pub object_selector: Option<serde_json::Value>,
    pub rules: serde_json::Value,
    pub failure_policy: String,
    pub timeout_seconds: i32,
    pub match_conditions: serde_json::Value,
}

fn sorted(v: &Option<Vec<String>>) -> Vec<String> {
    let mut v = v.clone().unwrap_or_default();
    v.sort();
    v.dedup();
    v
}

fn normalize_selector(sel: Option<&LabelSelector>) -> Option<serde_json::Value> {
    let sel = sel?;
    let labels = sel.match_labels.clone().unwrap_or_default();
    let mut exprs: Vec<(String, String, Vec<String>)> = sel
        .match_expressions
        .iter()
        .flatten()
        .map(|e| (e.key.clone(), e.operator.clone(), sorted(&e.values)))
        .collect();
    exprs.sort();
    exprs.dedup();
    if labels.is_empty() && exprs.is_empty() {
        // Matches everything, exactly as no selector does.
        return None;
    }
    Some(serde_json::json!({ "matchLabels": labels, "matchExpressions": exprs }))
}

impl PolicyDecidedFields {
    pub fn of(webhook: &MutatingWebhook) -> Self {
        let mut rules: Vec<serde_json::Value> = webhook
            .rules
            .iter()
            .flatten()
            .map(|r| {
                serde_json::json!({
                    "apiGroups": sorted(&r.api_groups),
                    "apiVersions": sorted(&r.api_versions),
                    "operations": sorted(&r.operations),
                    "resources": sorted(&r.resources),
                    "scope": r.scope.clone().unwrap_or_else(|| "*".into()),
                })
            })
            .collect();
        rules.sort_by_key(|r| r.to_string());
        let conditions: Vec<(String, String)> = webhook
            .match_conditions
            .iter()
            .flatten()
            .map(|m| (m.name.clone(), m.expression.clone()))
            .collect();
        PolicyDecidedFields {
            namespace_selector: normalize_selector(webhook.namespace_selector.as_ref()),
            object_selector: normalize_selector(webhook.object_selector.as_ref()),
            rules: serde_json::Value::from(rules),
            // The API server's defaults: compare what the fields mean, not whether they were written.
            failure_policy: webhook
                .failure_policy
                .clone()
                .unwrap_or_else(|| "Fail".into()),
            timeout_seconds: webhook.timeout_seconds.unwrap_or(10),
            match_conditions: serde_json::json!(conditions),
        }
    }

    /// The names of the fields that differ.
    pub fn differences(&self, other: &Self) -> Vec<&'static str> {
        let mut out = Vec::new();
        if self.namespace_selector != other.namespace_selector {
            out.push("namespaceSelector");
        }
        if self.object_selector != other.object_selector {
            out.push("objectSelector");
        }
        if self.rules != other.rules {
            out.push("rules");
        }
        if self.failure_policy != other.failure_policy {
            out.push("failurePolicy");
        }
        if self.timeout_seconds != other.timeout_seconds {
            out.push("timeoutSeconds");
        }
        if self.match_conditions != other.match_conditions {
            out.push("matchConditions");
        }
        out
    }
}

/// Settings that are not in the cluster.
#[derive(Debug, Clone)]
pub struct DiagnoseOptions {
    pub webhook_name: String,
    pub webhook_namespace: String,
    pub policy_configmap: String,
    /// Only Services of this namespace (the Cilium and webhook checks are cluster-wide).
    pub namespace: Option<String>,
    /// Items per list call.
    pub page_size: u32,
    /// Now, as Unix seconds (for certificate expiry).
    pub now: i64,
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
    checks.extend(check_cilium_config(&state.cilium_config));
    checks.push(check_envoy_config_crd(&state.envoy_config_crd));
    if let Some(c) = check_l7_ports(&state.cilium_config, &state.services) {
        checks.push(c);
    }

    // The webhook.
    let (policy_check, policy) = check_policy(&state.policy_config, opts);
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
            checks.push(check_legacy_annotation(services, &policy));
            checks.push(check_annotation_case(services, &policy));
            checks.push(check_pitfalls(services, &compiled));
            checks.push(check_not_annotated(services, &compiled, &state.namespaces));
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
    Report::new(checks)
}

fn namespaced(svc: &Service) -> String {
    format!(
        "{}/{}",
        namespace_of(&svc.metadata),
        svc.metadata.name.as_deref().unwrap_or("")
    )
}

/// `a, b, c and 4 more`.
fn list_some(items: &[String]) -> String {
    list_some_sep(items, ", ")
}

fn list_some_sep(items: &[String], sep: &str) -> String {
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

fn plural(n: usize, one: &str, many: &str) -> String {
    format!("{n} {}", if n == 1 { one } else { many })
}

fn unreadable_fix(what: &str) -> String {
    format!(
        "give the doctor read access to {what}: kubectl apply -k deploy/doctor (or run it with cluster-admin)"
    )
}

const HELM_UPGRADE: &str = "helm upgrade cilium cilium/cilium -n kube-system --reuse-values";
const RESTART_CILIUM: &str =
    "then kubectl -n kube-system rollout restart ds/cilium deploy/cilium-operator";

// ---------------------------------------------------------------------------------------------------------------
// Cilium

/// `loadbalancer-l7: envoy`, `enable-envoy-config: "true"`, and kube-proxy replacement on.
pub fn check_cilium_config(cm: &Lookup<ConfigMap>) -> Vec<Check> {
    let at = format!("{CILIUM_CONFIG_NAMESPACE}/{CILIUM_CONFIG_NAME}");
    let data = match cm {
        Lookup::Found(cm) => cm.data.clone().unwrap_or_default(),
        Lookup::Missing => {
            return vec![
                Check::build("cilium.config", Group::Cilium, "Cilium's ConfigMap").fail(
                    format!("ConfigMap {at} not found: is Cilium installed (in kube-system)?"),
                    "install Cilium with --set kubeProxyReplacement=true --set loadBalancer.l7.backend=envoy",
                ),
            ];
        }
        Lookup::Unreadable(why) => {
            return vec![
                Check::build("cilium.config", Group::Cilium, "Cilium's ConfigMap").fail(
                    format!("cannot read ConfigMap {at}: {why}"),
                    unreadable_fix(&format!("configmaps/{CILIUM_CONFIG_NAME} in kube-system")),
                ),
            ];
        }
    };
    let get = |k: &str| data.get(k).map(|v| v.trim());
    let shown = |v: Option<&str>| match v {
        Some(v) => format!("is {v:?}"),
        None => "is not set".to_string(),
    };

    let mut out = Vec::new();
    let l7 = get("loadbalancer-l7");
    let c = Check::build(
        "cilium.loadbalancer-l7",
        Group::Cilium,
        "L7 load balancing backend",
    );
    out.push(if l7 == Some("envoy") {
        c.ok(format!("{at} has loadbalancer-l7: envoy"))
    } else {
        c.fail(
            format!("loadbalancer-l7 {} in {at}: Cilium ignores the lb-l7 annotation unless it is \"envoy\"", shown(l7)),
            format!("{HELM_UPGRADE} --set loadBalancer.l7.backend=envoy, {RESTART_CILIUM}"),
        )
    });

    let envoy = get("enable-envoy-config");
    let c = Check::build(
        "cilium.envoy-config",
        Group::Cilium,
        "CiliumEnvoyConfig support",
    );
    out.push(if envoy == Some("true") {
        c.ok(format!("{at} has enable-envoy-config: \"true\""))
    } else {
        c.fail(
            format!("enable-envoy-config {} in {at}: Cilium's operator writes no CiliumEnvoyConfig for annotated Services", shown(envoy)),
            format!("{HELM_UPGRADE} --set envoyConfig.enabled=true, {RESTART_CILIUM}"),
        )
    });

    let kpr = get("kube-proxy-replacement");
    let c = Check::build(
        "cilium.kube-proxy-replacement",
        Group::Cilium,
        "kube-proxy replacement",
    );
    out.push(match kpr {
        Some("true") => c.ok(format!("{at} has kube-proxy-replacement: \"true\"")),
        Some("strict") => c.ok(format!(
            "{at} has kube-proxy-replacement: strict (the spelling of \"true\" before Cilium 1.14; accepted)"
        )),
        _ => c.fail(
            format!("kube-proxy-replacement {} in {at}: Cilium redirects Services to Envoy only with kube-proxy replacement on", shown(kpr)),
            format!("{HELM_UPGRADE} --set kubeProxyReplacement=true (and remove kube-proxy), {RESTART_CILIUM}"),
        ),
    });
    out
}

/// The CRD `ciliumenvoyconfigs.cilium.io` exists.
pub fn check_envoy_config_crd(crd: &Lookup<()>) -> Check {
    let c = Check::build(
        "cilium.envoy-config-crd",
        Group::Cilium,
        "CiliumEnvoyConfig CRD",
    );
    match crd {
        Lookup::Found(()) => c.ok(format!("CustomResourceDefinition {ENVOY_CONFIG_CRD} exists")),
        Lookup::Missing => c.fail(
            format!("CustomResourceDefinition {ENVOY_CONFIG_CRD} not found: Cilium cannot create any Envoy config"),
            format!("{HELM_UPGRADE} --set envoyConfig.enabled=true; cilium-operator registers the CRD when it starts"),
        ),
        Lookup::Unreadable(why) => c.fail(
            format!("cannot read CustomResourceDefinition {ENVOY_CONFIG_CRD}: {why}"),
            unreadable_fix("customresourcedefinitions"),
        ),
    }
}

/// Cilium's `loadbalancer-l7-ports`: space- or comma-separated port numbers.
pub fn parse_l7_ports(value: &str) -> Vec<i32> {
    let mut ports: Vec<i32> = value
        .split(|c: char| c.is_whitespace() || c == ',')
        .filter_map(|p| p.trim().parse().ok())
        .collect();
    ports.sort_unstable();
    ports.dedup();
    ports
}

/// Warn when `loadbalancer-l7-ports` is set: every Service exposing one of those port numbers goes through Envoy,
/// whatever its annotation says. `None` when Cilium's ConfigMap could not be read (its own check fails).
pub fn check_l7_ports(cm: &Lookup<ConfigMap>, services: &Lookup<Vec<Service>>) -> Option<Check> {
    let cm = cm.found()?;
    let c = Check::build(
        "cilium.loadbalancer-l7-ports",
        Group::Cilium,
        "L7 by port number",
    );
    let raw = cm
        .data
        .as_ref()
        .and_then(|d| d.get("loadbalancer-l7-ports"))
        .map(|v| v.trim())
        .filter(|v| !v.is_empty());
    let Some(raw) = raw else {
        return Some(c.ok("loadbalancer-l7-ports is not set: only annotated Services use Envoy"));
    };
    let ports = parse_l7_ports(raw);
    let fix = format!(
        "{HELM_UPGRADE} --set 'loadBalancer.l7.ports={{}}' and let the annotation choose, {RESTART_CILIUM}"
    );
    let caught: Vec<String> = match services {
        Lookup::Found(services) => services
            .iter()
            .filter_map(|svc| {
                let hits: Vec<String> = svc
                    .spec
                    .as_ref()
                    .and_then(|s| s.ports.as_ref())
                    .into_iter()
                    .flatten()
                    .filter(|p| ports.contains(&p.port))
                    .map(|p| p.port.to_string())
                    .collect();
                (!hits.is_empty()).then(|| format!("{} ({})", namespaced(svc), hits.join(",")))
            })
            .collect(),
        _ => {
            return Some(c.warn(
                format!("loadbalancer-l7-ports={raw:?} sends every Service on these ports through Envoy, whatever its annotation (Services could not be listed)"),
                fix,
            ));
        }
    };
    let message = if caught.is_empty() {
        format!(
            "loadbalancer-l7-ports={raw:?} sends every Service on these ports through Envoy, whatever its annotation; none does today"
        )
    } else {
        format!(
            "loadbalancer-l7-ports={raw:?} sends {} through Envoy, and the annotation cannot turn this off: {}",
            plural(caught.len(), "Service", "Services"),
            list_some(&caught)
        )
    };
    Some(c.objects(caught).warn(message, fix))
}

// ---------------------------------------------------------------------------------------------------------------
// The webhook

pub fn check_webhook_exists(mwc: &Lookup<MutatingWebhookConfiguration>, name: &str) -> Check {
    let c = Check::build(
        "webhook.configuration",
        Group::Webhook,
        "MutatingWebhookConfiguration",
    );
    match mwc {
        Lookup::Found(mwc) => {
            let n = mwc.webhooks.as_ref().map_or(0, Vec::len);
            if n == 0 {
                c.fail(
                    format!("MutatingWebhookConfiguration {name} has no webhooks: the API server calls nothing"),
                    "lb-l7-webhook manifests --service lb-l7-system/lb-l7-webhook --ca-bundle-file certs/ca.crt | kubectl apply -f -",
                )
            } else {
                c.ok(format!(
                    "MutatingWebhookConfiguration {name} exists ({})",
                    plural(n, "webhook", "webhooks")
                ))
            }
        }
        Lookup::Missing => c.fail(
            format!("MutatingWebhookConfiguration {name} not found: the API server never calls the webhook, so no Service is annotated"),
            "kubectl apply -k deploy/overlays/<overlay> (see README, Deploy), or pass --webhook-name if it has another name",
        ),
        Lookup::Unreadable(why) => c.fail(
            format!("cannot read MutatingWebhookConfiguration {name}: {why}"),
            unreadable_fix("mutatingwebhookconfigurations"),
        ),
    }
}

fn webhooks(mwc: &MutatingWebhookConfiguration) -> &[MutatingWebhook] {
    mwc.webhooks.as_deref().unwrap_or(&[])
}

/// `2026-03-01` for a Unix time.
pub fn date(unix: i64) -> String {
    match time::OffsetDateTime::from_unix_timestamp(unix) {
        Ok(t) => t.date().to_string(),
        Err(_) => format!("@{unix}"),
    }
}

/// Each webhook's caBundle parses and at least one of its certificates is valid now; warn within 30 days of the
/// last one's expiry.
pub fn check_ca_bundle(mwc: &MutatingWebhookConfiguration, now: i64) -> Check {
    let c = Check::build("webhook.ca-bundle", Group::Webhook, "caBundle");
    let cert_manager = mwc
        .metadata
        .annotations
        .as_ref()
        .and_then(|a| a.get("cert-manager.io/inject-ca-from"))
        .cloned();
    let name = mwc.metadata.name.as_deref().unwrap_or("lb-l7-webhook");
    // The shipped manifests carry no caBundle: it is patched in (certs/README.md).
    let patch = format!(
        "kubectl patch mutatingwebhookconfiguration {name} --type=json -p '[{{\"op\":\"add\",\"path\":\"/webhooks/0/clientConfig/caBundle\",\"value\":\"'\"$(base64 -w0 certs/ca.crt)\"'\"}}]' (certs/README.md)"
    );
    let (set, renew) = match &cert_manager {
        Some(from) => {
            let fix = format!(
                "check cert-manager's Certificate {from} (kubectl describe certificate) and the cainjector's logs"
            );
            (fix.clone(), fix)
        }
        None => (
            format!("set it from the CA that signed the webhook's certificate: {patch}"),
            format!(
                "lb-l7-webhook certs --service lb-l7-webhook --namespace lb-l7-system --new-ca --secret-manifest certs/secret.yaml, kubectl apply -f certs/secret.yaml, then {patch}"
            ),
        ),
    };
    let mut soonest: Option<(String, i64, String)> = None;
    for wh in webhooks(mwc) {
        if wh.client_config.url.is_some() && wh.client_config.ca_bundle.is_none() {
            // A URL webhook with a publicly trusted certificate needs no caBundle.
            continue;
        }
        let bundle = wh
            .client_config
            .ca_bundle
            .as_ref()
            .map(|b| b.0.as_slice())
            .unwrap_or(&[]);
        let certs = match lb_l7_core::cabundle::parse_ca_bundle(bundle) {
            Ok(certs) => certs,
            Err(e) => {
                let why = if bundle.is_empty() && cert_manager.is_some() {
                    "caBundle is empty: cert-manager's cainjector has not injected the CA"
                        .to_string()
                } else {
                    e
                };
                return c.fail(
                    format!(
                        "webhook {}: {why}; the API server cannot verify the webhook, so no Service is annotated",
                        wh.name
                    ),
                    set,
                );
            }
        };
        let valid: Vec<&lb_l7_core::cabundle::BundleCert> = certs
            .iter()
            .filter(|c| c.not_before <= now && now < c.not_after)
            .collect();
        let Some(best) = valid.iter().max_by_key(|c| c.not_after) else {
            let (what, when) = match certs.iter().max_by_key(|c| c.not_after) {
                Some(c) if c.not_before > now => ("is not valid before", c.not_before),
                Some(c) => ("expired on", c.not_after),
                None => ("holds no certificate", now),
            };
            return c.fail(
                format!(
                    "webhook {}: caBundle {what} {}: the API server rejects the webhook's TLS, so no Service is annotated",
                    wh.name,
                    date(when)
                ),
                renew,
            );
        };
        if soonest.as_ref().is_none_or(|(_, t, _)| best.not_after < *t) {
            soonest = Some((wh.name.clone(), best.not_after, best.subject.clone()));
        }
    }
    match soonest {
        None => c.ok("every webhook uses a url without a caBundle (system trust roots)"),
        Some((name, not_after, subject)) => {
            let days = (not_after - now) / 86_400;
            let msg = format!(
                "webhook {name}: CA {subject} valid until {} ({days} days)",
                date(not_after)
            );
            if days < CA_WARN_DAYS {
                c.warn(format!("{msg}: expires within {CA_WARN_DAYS} days"), renew)
            } else {
                c.ok(msg)
            }
        }
    }
}

/// Ready endpoints in an EndpointSlice (`ready` unset counts as ready, as the API says).
fn ready_endpoints(slices: &[EndpointSlice], service: &str) -> usize {
    slices
        .iter()
        .filter(|s| {
            s.metadata
                .labels
                .as_ref()
                .and_then(|l| l.get("kubernetes.io/service-name"))
                .is_some_and(|n| n == service)
        })
        .flat_map(|s| s.endpoints.iter().flatten())
        .filter(|e| e.conditions.as_ref().and_then(|c| c.ready).unwrap_or(true))
        .count()
}

/// The Service(s) the webhook configuration points at, as (namespace, name).
pub fn webhook_services(mwc: &MutatingWebhookConfiguration) -> BTreeSet<(String, String)> {
    webhooks(mwc)
        .iter()
        .filter_map(|w| w.client_config.service.as_ref())
        .map(|s| (s.namespace.clone(), s.name.clone()))
        .collect()
}

/// The webhook's Service has ready endpoints (from discovery.k8s.io/v1 EndpointSlices).
pub fn check_webhook_endpoints(
    mwc: &MutatingWebhookConfiguration,
    endpoints: &BTreeMap<(String, String), Lookup<Vec<EndpointSlice>>>,
) -> Check {
    let c = Check::build("webhook.endpoints", Group::Webhook, "Webhook endpoints");
    let services = webhook_services(mwc);
    if services.is_empty() {
        let urls: Vec<String> = webhooks(mwc)
            .iter()
            .filter_map(|w| w.client_config.url.clone())
            .collect();
        return c.ok(format!(
            "the webhook is called by url ({}): no in-cluster Service to check",
            list_some(&urls)
        ));
    }
    let mut ready_msgs = Vec::new();
    for (ns, name) in &services {
        let at = format!("{ns}/{name}");
        let fix_pods = format!(
            "kubectl -n {ns} get pods,endpointslices -l kubernetes.io/service-name={name}; check the Service's selector and the webhook pods' readiness (kubectl -n {ns} describe deploy)"
        );
        match endpoints.get(&(ns.clone(), name.clone())) {
            Some(Lookup::Found(slices)) => {
                let ready = ready_endpoints(slices, name);
                if ready == 0 {
                    let why = if slices.is_empty() {
                        "has no EndpointSlices (missing Service, or a selector that matches no pod)"
                    } else {
                        "has no ready endpoints"
                    };
                    return c.objects(vec![at.clone()]).fail(
                        format!("Service {at} {why}: the API server cannot reach the webhook, and with failurePolicy Ignore Services pass unannotated"),
                        fix_pods,
                    );
                }
                ready_msgs.push(format!(
                    "{at} has {}",
                    plural(ready, "ready endpoint", "ready endpoints")
                ));
            }
            Some(Lookup::Unreadable(why)) => {
                return c.fail(
                    format!("cannot list EndpointSlices of {at}: {why}"),
                    unreadable_fix(&format!("endpointslices in {ns}")),
                );
            }
            Some(Lookup::Missing) | None => {
                return c.objects(vec![at.clone()]).fail(
                    format!("Service {at} has no EndpointSlices: the API server cannot reach the webhook"),
                    fix_pods,
                );
            }
        }
    }
    c.ok(ready_msgs.join("; "))
}

/// failurePolicy Ignore: a webhook that is down must not block Service writes.
pub fn check_failure_policy(mwc: &MutatingWebhookConfiguration) -> Check {
    let c = Check::build("webhook.failure-policy", Group::Webhook, "failurePolicy");
    let not_ignore: Vec<String> = webhooks(mwc)
        .iter()
        .filter(|w| w.failure_policy.as_deref() != Some("Ignore"))
        .map(|w| {
            format!(
                "{} ({})",
                w.name,
                w.failure_policy.as_deref().unwrap_or("unset, so Fail")
            )
        })
        .collect();
    if not_ignore.is_empty() {
        c.ok("failurePolicy Ignore: Service writes go through unchanged when the webhook is down")
    } else {
        c.objects(not_ignore.clone()).warn(
            format!(
                "failurePolicy is not Ignore for {}: the API server rejects Service writes whenever the webhook is down",
                list_some(&not_ignore)
            ),
            "set failurePolicy: Ignore (what `lb-l7-webhook manifests` renders) and cover missed Services with `lb-l7-webhook backfill`",
        )
    }
}

/// timeoutSeconds at most 10: a slow webhook holds every Service write for that long.
pub fn check_timeout(mwc: &MutatingWebhookConfiguration) -> Check {
    let c = Check::build("webhook.timeout", Group::Webhook, "timeoutSeconds");
    let slow: Vec<String> = webhooks(mwc)
        .iter()
        .filter(|w| w.timeout_seconds.unwrap_or(10) > MAX_RECOMMENDED_TIMEOUT_SECONDS)
        .map(|w| format!("{} ({}s)", w.name, w.timeout_seconds.unwrap_or(10)))
        .collect();
    if slow.is_empty() {
        let longest = webhooks(mwc)
            .iter()
            .map(|w| w.timeout_seconds.unwrap_or(10))
            .max()
            .unwrap_or(10);
        c.ok(format!(
            "timeoutSeconds {longest}: a slow webhook delays a Service write by at most {longest}s"
        ))
    } else {
        c.objects(slow.clone()).warn(
            format!(
                "timeoutSeconds above {MAX_RECOMMENDED_TIMEOUT_SECONDS} for {}: every Service write waits that long when the webhook is slow or unreachable",
                list_some(&slow)
            ),
            "set timeoutSeconds in the policy (default 5) and re-render with `lb-l7-webhook manifests`",
        )
    }
}

/// The policy in the webhook's ConfigMap loads. Returns the check and the policy (when it loads).
pub fn check_policy(cm: &Lookup<ConfigMap>, opts: &DiagnoseOptions) -> (Check, Option<Policy>) {
    let c = Check::build("webhook.policy", Group::Webhook, "Policy ConfigMap");
    let at = format!("{}/{}", opts.webhook_namespace, opts.policy_configmap);
    let fallback = "; the Effect checks use the built-in default policy";
    let cm = match cm {
        Lookup::Found(cm) => cm,
        Lookup::Missing => {
            return (
                c.fail(
                    format!("ConfigMap {at} (or {at}-<hash> from kustomize) not found{fallback}"),
                    "kubectl apply -k deploy/overlays/<overlay>, or pass --policy-configmap/--webhook-namespace where the policy lives",
                ),
                None,
            );
        }
        Lookup::Unreadable(why) => {
            return (
                c.fail(
                    format!("cannot read ConfigMap {at}: {why}{fallback}"),
                    unreadable_fix(&format!("configmaps in {}", opts.webhook_namespace)),
                ),
                None,
            );
        }
    };
    // The name actually found: kustomize's configMapGenerator adds a content hash.
    let at = format!(
        "{}/{}",
        opts.webhook_namespace,
        cm.metadata
            .name
            .as_deref()
            .unwrap_or(&opts.policy_configmap)
    );
    let data = cm.data.clone().unwrap_or_default();
    let found = match data.get(POLICY_CONFIGMAP_KEY) {
        Some(text) => Some((POLICY_CONFIGMAP_KEY.to_string(), text.clone())),
        // A ConfigMap with a single key: whatever its name, that is the policy.
        None if data.len() == 1 => data.iter().next().map(|(k, v)| (k.clone(), v.clone())),
        None => None,
    };
    let Some((key, text)) = found else {
        let keys: Vec<String> = data.keys().cloned().collect();
        return (
            c.fail(
                format!(
                    "ConfigMap {at} has no key {POLICY_CONFIGMAP_KEY} (keys: {}){fallback}",
                    if keys.is_empty() { "none".into() } else { keys.join(", ") }
                ),
                format!(
                    "put the policy under the key {POLICY_CONFIGMAP_KEY}: kubectl -n {} create configmap {} --from-file={POLICY_CONFIGMAP_KEY}=policy.yaml --dry-run=client -o yaml | kubectl apply -f -",
                    opts.webhook_namespace, opts.policy_configmap
                ),
            ),
            None,
        );
    };
    match Policy::from_yaml(&text) {
        Ok(policy) => {
            let scope = match policy.scope {
                Scope::Cluster => "cluster",
                Scope::NamespaceOptIn => "namespace-opt-in",
            };
            let mode = match policy.mode {
                Mode::Enforce => "enforce",
                Mode::DryRun => "dry-run",
            };
            (
                c.ok(format!(
                    "{at} ({key}): scope {scope}, mode {mode}, {}, annotation {}",
                    plural(policy.rules.len(), "rule", "rules"),
                    policy.annotation_key
                )),
                Some(policy),
            )
        }
        Err(e) => (
            c.fail(
                format!("policy in {at} ({key}) is invalid: {e}{fallback}"),
                format!("fix the policy, check it with `lb-l7-webhook report --policy FILE`, and kubectl apply it to {at}"),
            ),
            None,
        ),
    }
}

/// The live webhook configuration's selectors, rules, failurePolicy, timeout and matchConditions equal what the
/// policy renders (`rendered` is `None` when rendering failed).
pub fn check_drift(
    live: &MutatingWebhookConfiguration,
    rendered: Option<&MutatingWebhookConfiguration>,
) -> Check {
    let c = Check::build(
        "webhook.drift",
        Group::Webhook,
        "Selectors match the policy",
    );
    let fix = "re-render from the policy in the ConfigMap: lb-l7-webhook manifests --policy policy.yaml --ca-bundle-file certs/ca.crt | kubectl apply -f - (or kubectl apply -k deploy/overlays/<overlay>)";
    let Some(rendered) = rendered else {
        return c.warn(
            "could not render the webhook configuration from the policy, so drift was not checked",
            fix,
        );
    };
    let live_hooks = webhooks(live);
    let want_hooks = webhooks(rendered);
    let mut drift = Vec::new();
    for want in want_hooks {
        // Match by name; with a single webhook on each side, a renamed one is still compared.
        let have = live_hooks
            .iter()
            .find(|w| w.name == want.name)
            .or_else(|| (live_hooks.len() == 1 && want_hooks.len() == 1).then(|| &live_hooks[0]));
        match have {
            None => drift.push(format!("webhook {} is missing", want.name)),
            Some(have) => {
                let diff =
                    PolicyDecidedFields::of(have).differences(&PolicyDecidedFields::of(want));
                if !diff.is_empty() {
                    drift.push(format!("{}: {}", have.name, diff.join(", ")));
                }
            }
        }
    }
    for have in live_hooks {
        let known = want_hooks.iter().any(|w| w.name == have.name)
            || (live_hooks.len() == 1 && want_hooks.len() == 1);
        if !known {
            drift.push(format!(
                "webhook {} is not in the rendered configuration",
                have.name
            ));
        }
    }
    if drift.is_empty() {
        c.ok("namespaceSelector, objectSelector, rules, failurePolicy, timeoutSeconds and matchConditions match what the policy renders")
    } else {
        c.objects(drift.clone()).fail(
            format!(
                "the live configuration differs from what the policy renders ({}): the API server sends the webhook other Services than the policy expects",
                list_some(&drift)
            ),
            fix,
        )
    }
}

// ---------------------------------------------------------------------------------------------------------------
// The effect

fn annotation<'a>(svc: &'a Service, key: &str) -> Option<&'a str> {
    svc.metadata
        .annotations
        .as_ref()
        .and_then(|a| a.get(key))
        .map(String::as_str)
}

/// The policy as the doctor uses it to look at a Service that is already annotated: every namespace in scope, so
/// `evaluate` reaches its pitfall warnings for hand-annotated Services in excluded namespaces too.
fn widened(policy: &CompiledPolicy) -> CompiledPolicy {
    let mut p = policy.policy.clone();
    p.scope = Scope::Cluster;
    p.excluded_namespaces.clear();
    p.compile()
}

/// The decision for an annotated Service, from the pure core.
fn annotated_decision(policy: &CompiledPolicy, svc: &Service) -> policy::Decision {
    policy.evaluate(
        svc,
        NamespaceContext::scope_applied(namespace_of(&svc.metadata)),
    )
}

/// For every Service annotated `enabled`, Cilium's operator made the CiliumEnvoyConfig `cilium-envoy-lb-<name>`.
pub fn check_envoy_configs(
    services: &[Service],
    policy: &CompiledPolicy,
    envoy_configs: &Lookup<BTreeSet<(String, String)>>,
) -> Check {
    let c = Check::build(
        "effect.envoy-configs",
        Group::Effect,
        "CiliumEnvoyConfig per annotated Service",
    );
    let key = policy.policy.annotation_key.as_str();
    let wide = widened(policy);
    let annotated: Vec<&Service> = services
        .iter()
        .filter(|s| annotation(s, key) == Some(ENABLED_VALUE))
        // Headless and ExternalName Services have no frontend; Cilium makes no config for them (and the pitfalls
        // check says the annotation does nothing there).
        .filter(|s| annotated_decision(&wide, s).kind != DecisionKind::NotApplicable)
        .collect();
    if annotated.is_empty() {
        return c.ok(format!(
            "no Service is annotated {key}=enabled, so no CiliumEnvoyConfig is expected"
        ));
    }
    let names: Vec<String> = annotated.iter().map(|s| namespaced(s)).collect();
    let fix_operator = "check the Cilium checks above, then kubectl -n kube-system logs deploy/cilium-operator | grep -i envoy";
    let cecs = match envoy_configs {
        Lookup::Found(cecs) => cecs,
        Lookup::Missing => {
            return c.objects(names.clone()).fail(
                format!(
                    "annotated but Cilium made no Envoy config: the CiliumEnvoyConfig CRD is not installed ({}: {})",
                    plural(names.len(), "Service", "Services"),
                    list_some(&names)
                ),
                format!("{HELM_UPGRADE} --set envoyConfig.enabled=true --set loadBalancer.l7.backend=envoy"),
            );
        }
        Lookup::Unreadable(why) => {
            return c.fail(
                format!("cannot list CiliumEnvoyConfigs: {why}"),
                unreadable_fix("ciliumenvoyconfigs.cilium.io"),
            );
        }
    };
    let missing: Vec<String> = annotated
        .iter()
        .filter(|s| {
            let ns = namespace_of(&s.metadata).to_string();
            let name = policy::cilium_envoy_config_name(s.metadata.name.as_deref().unwrap_or(""));
            !cecs.contains(&(ns, name))
        })
        .map(|s| {
            format!(
                "{} (no {})",
                namespaced(s),
                policy::cilium_envoy_config_name(s.metadata.name.as_deref().unwrap_or(""))
            )
        })
        .collect();
    if missing.is_empty() {
        c.objects(names.clone()).ok(format!(
            "{} annotated {key}=enabled, each with its CiliumEnvoyConfig cilium-envoy-lb-<name>",
            plural(names.len(), "Service", "Services")
        ))
    } else {
        c.objects(missing.clone()).fail(
            format!(
                "annotated but Cilium made no Envoy config: {} of {}: {}",
                missing.len(),
                plural(names.len(), "annotated Service", "annotated Services"),
                list_some(&missing)
            ),
            fix_operator,
        )
    }
}

/// Services that carry the old key `io.cilium.service/lb-l7`, which current Cilium ignores.
pub fn check_legacy_annotation(services: &[Service], policy: &Policy) -> Check {
    let c = Check::build(
        "effect.legacy-annotation",
        Group::Effect,
        "Old annotation key",
    );
    let key = policy.annotation_key.as_str();
    if key == LEGACY_ANNOTATION_KEY {
        return c.ok(format!(
            "the policy itself uses {LEGACY_ANNOTATION_KEY} (a cluster pinned to an old Cilium)"
        ));
    }
    let mut only_legacy = Vec::new();
    let mut both = Vec::new();
    for svc in services {
        if annotation(svc, LEGACY_ANNOTATION_KEY).is_some() {
            if annotation(svc, key) == Some(ENABLED_VALUE) {
                both.push(namespaced(svc));
            } else {
                only_legacy.push(namespaced(svc));
            }
        }
    }
    let fix = format!(
        "kubectl annotate service -n NS NAME {LEGACY_ANNOTATION_KEY}- {key}=enabled (or run lb-l7-webhook backfill)"
    );
    if !only_legacy.is_empty() {
        let mut all = only_legacy.clone();
        all.extend(both);
        c.objects(all).fail(
            format!(
                "{} {} only the old key {LEGACY_ANNOTATION_KEY}, which current Cilium ignores, so L7 balancing is off: {}",
                plural(only_legacy.len(), "Service", "Services"),
                if only_legacy.len() == 1 { "carries" } else { "carry" },
                list_some(&only_legacy)
            ),
            fix,
        )
    } else if !both.is_empty() {
        c.objects(both.clone()).warn(
            format!(
                "{} still {} the old key {LEGACY_ANNOTATION_KEY} next to {key}=enabled (harmless, but confusing): {}",
                plural(both.len(), "Service", "Services"),
                if both.len() == 1 { "carries" } else { "carry" },
                list_some(&both)
            ),
            format!("kubectl annotate service -n NS NAME {LEGACY_ANNOTATION_KEY}-"),
        )
    } else {
        c.ok(format!(
            "no Service uses the old key {LEGACY_ANNOTATION_KEY}"
        ))
    }
}

/// Values such as `Enabled` or `ENABLED`: Cilium compares case-sensitively, so L7 stays off.
pub fn check_annotation_case(services: &[Service], policy: &Policy) -> Check {
    let c = Check::build("effect.annotation-value", Group::Effect, "Annotation value");
    let key = policy.annotation_key.as_str();
    let wrong: Vec<String> = services
        .iter()
        .filter_map(|svc| {
            let v = annotation(svc, key)?;
            (v != ENABLED_VALUE && v.trim().eq_ignore_ascii_case(ENABLED_VALUE))
                .then(|| format!("{} ({key}={v})", namespaced(svc)))
        })
        .collect();
    if wrong.is_empty() {
        c.ok(format!(
            "every {key} value is exactly \"enabled\" or deliberately something else"
        ))
    } else {
        c.objects(wrong.clone()).fail(
            format!(
                "{} not exactly \"enabled\" (Cilium compares case-sensitively, and the webhook never overwrites an owner's value), so L7 balancing is off: {}",
                if wrong.len() == 1 { "1 value is".to_string() } else { format!("{} values are", wrong.len()) },
                list_some(&wrong)
            ),
            format!("kubectl annotate service -n NS NAME --overwrite {key}=enabled"),
        )
    }
}

/// Cilium's pitfalls (multi-port, targetPort, session affinity, unknown algorithm, no frontend) for Services that
/// are annotated `enabled`: the warnings of [`CompiledPolicy::evaluate`].
pub fn check_pitfalls(services: &[Service], policy: &CompiledPolicy) -> Check {
    let c = Check::build("effect.pitfalls", Group::Effect, "Cilium pitfalls");
    let key = policy.policy.annotation_key.as_str();
    let wide = widened(policy);
    let mut lines = Vec::new();
    let mut services_warned = 0;
    for svc in services
        .iter()
        .filter(|s| annotation(s, key) == Some(ENABLED_VALUE))
    {
        let before = lines.len();
        let d = annotated_decision(&wide, svc);
        for w in d
            .warnings
            .iter()
            // Reported by the legacy-annotation check.
            .filter(|w| !w.contains(LEGACY_ANNOTATION_KEY))
        {
            lines.push(format!("{}: {w}", namespaced(svc)));
        }
        if lines.len() > before {
            services_warned += 1;
        }
    }
    if lines.is_empty() {
        c.ok("no annotated Service has multiple ports, a targetPort that differs, or session affinity")
    } else {
        c.objects(lines.clone()).warn(
            format!(
                "{} for {}: {}",
                plural(lines.len(), "warning", "warnings"),
                plural(services_warned, "Service", "Services"),
                list_some_sep(&lines, "; ")
            ),
            "give gRPC its own single-port Service with targetPort equal to port and no sessionAffinity",
        )
    }
}

/// Services the policy selects that are not annotated yet (created before the webhook, or written while it was
/// unreachable with failurePolicy Ignore).
pub fn check_not_annotated(
    services: &[Service],
    policy: &CompiledPolicy,
    namespaces: &Lookup<crate::cluster::NamespaceLabelMap>,
) -> Check {
    let c = Check::build(
        "effect.not-annotated",
        Group::Effect,
        "Selected Services annotated",
    );
    let pending: Vec<String> = services
        .iter()
        .filter(|svc| {
            let ns = crate::cluster::namespace_context(namespace_of(&svc.metadata), namespaces);
            policy.evaluate(svc, ns).kind == DecisionKind::Enable
        })
        .map(namespaced)
        .collect();
    if pending.is_empty() {
        return c.ok("every Service the policy selects carries the annotation");
    }
    if policy.policy.mode == Mode::DryRun {
        return c.objects(pending.clone()).ok(format!(
            "dry-run policy: {} would be annotated in enforce mode: {}",
            plural(pending.len(), "Service", "Services"),
            list_some(&pending)
        ));
    }
    c.objects(pending.clone()).warn(
        format!(
            "{} the policy selects {} not annotated (created before the webhook, or while it was unreachable): {}",
            plural(pending.len(), "Service", "Services"),
            if pending.len() == 1 { "is" } else { "are" },
            list_some(&pending)
        ),
        "lb-l7-webhook backfill --dry-run, then lb-l7-webhook backfill",
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelectorRequirement;

    #[test]
    fn l7_ports_accept_spaces_and_commas() {
        assert_eq!(parse_l7_ports("50051 8080"), vec![8080, 50051]);
        assert_eq!(parse_l7_ports("50051,8080, 50051"), vec![8080, 50051]);
        assert_eq!(parse_l7_ports("  "), Vec::<i32>::new());
        assert_eq!(parse_l7_ports("grpc 9000"), vec![9000]);
    }

    fn requirement(key: &str, op: &str, values: &[&str]) -> LabelSelectorRequirement {
        LabelSelectorRequirement {
            key: key.into(),
            operator: op.into(),
            values: Some(values.iter().map(|v| v.to_string()).collect()),
        }
    }

    #[test]
    fn selectors_compare_by_meaning() {
        let a = LabelSelector {
            match_expressions: Some(vec![
                requirement("a", "In", &["x", "y"]),
                requirement("b", "NotIn", &["z"]),
            ]),
            match_labels: None,
        };
        let b = LabelSelector {
            match_expressions: Some(vec![
                requirement("b", "NotIn", &["z"]),
                requirement("a", "In", &["y", "x"]),
            ]),
            match_labels: Some(BTreeMap::new()),
        };
        assert_eq!(normalize_selector(Some(&a)), normalize_selector(Some(&b)));
        assert_eq!(normalize_selector(Some(&LabelSelector::default())), None);
        let c = LabelSelector {
            match_expressions: Some(vec![requirement("a", "In", &["x"])]),
            match_labels: None,
        };
        assert_ne!(normalize_selector(Some(&a)), normalize_selector(Some(&c)));
    }

    #[test]
    fn long_lists_are_cut_in_messages() {
        let items: Vec<String> = (1..=7).map(|i| format!("ns/s{i}")).collect();
        assert_eq!(
            list_some(&items),
            "ns/s1, ns/s2, ns/s3, ns/s4, ns/s5 and 2 more"
        );
        assert_eq!(list_some(&items[..2]), "ns/s1, ns/s2");
    }

    #[test]
    fn report_counts_and_fails_only_on_fail() {
        let warn = Check::build("x", Group::Cilium, "x").warn("w", "f");
        let ok = Check::build("y", Group::Cilium, "y").ok("fine");
        let report = Report::new(vec![warn.clone(), ok.clone()]);
        assert_eq!(
            report.summary,
            Summary {
                ok: 1,
                warn: 1,
                fail: 0
            }
        );
        assert!(!report.failed());
        let fail = Check::build("z", Group::Effect, "z").fail("bad", "fix it");
        assert!(Report::new(vec![warn, ok, fail]).failed());
    }
}
