//! The MutatingWebhookConfiguration, rendered from the policy: the same selectors every edge relies on.
//!
//! [`render_webhook_configuration`] is pure: policy + options in, a typed `MutatingWebhookConfiguration` out.
//! `manifests`, the kustomize and chart drift tests and doctor's drift check all call it, so they never disagree
//! about what the webhook configuration should be.
//! intended one all call it, so they never disagree about what the webhook configuration should be.
//!
//! What the API server does with it:
//! - `namespaceSelector`: the policy's `excludedNamespaces` are left out by `kubernetes.io/metadata.name NotIn`
//!   (the API server sets that label on every namespace), and so is any namespace labelled
//!   `lb-l7-webhook/enabled=false`; with scope `namespace-opt-in` only namespaces labelled
//!   `lb-l7-webhook/enabled=true` are sent.
//! - `objectSelector`: Services labelled `lb-l7-webhook/enabled=false` are never sent.
//! - `matchConditions` (CEL, GA in Kubernetes 1.30): ExternalName and headless Services are not sent; they have
//!   no frontend for Cilium's Envoy, so the webhook would only answer "not applicable".
//! - `failurePolicy: Ignore`: if the webhook is down, Services are still created, just not annotated.

use std::collections::BTreeMap;

use k8s_openapi::api::admissionregistration::v1::{
    MatchCondition, MutatingWebhook, MutatingWebhookConfiguration, RuleWithOperations,
    ServiceReference, WebhookClientConfig,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{
    LabelSelector, LabelSelectorRequirement, ObjectMeta,
};

use crate::policy::{OPT_LABEL, Policy, Scope, WEBHOOK_NAMESPACE};

/// The same policy as a MutatingAdmissionPolicy (and a ValidatingAdmissionPolicy for the warnings).
pub mod admission_policy;

/// `metadata.name` of the configuration the shipped manifests install.
pub const DEFAULT_CONFIGURATION_NAME: &str = "lb-l7-webhook";
/// `webhooks[].name`: the API server requires a fully qualified name (at least three DNS labels).
pub const WEBHOOK_NAME: &str = "lb-l7.services.lb-l7-webhook.io";
/// The Service (and Deployment) name of the shipped manifests.
pub const DEFAULT_SERVICE_NAME: &str = "lb-l7-webhook";
/// The HTTP path `serve` answers AdmissionReviews on.
pub const MUTATE_PATH: &str = "/mutate";
/// The label the API server puts on every namespace, with the namespace's name as value.
pub const NAMESPACE_NAME_LABEL: &str = "kubernetes.io/metadata.name";
/// The cert-manager cainjector annotation: `<namespace>/<Certificate name>`.
pub const CERT_MANAGER_INJECT_ANNOTATION: &str = "cert-manager.io/inject-ca-from";

/// Where the API server sends AdmissionReviews.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ClientTarget {
    /// In-cluster: a Service (the API server connects to `name.namespace.svc`).
    Service {
        namespace: String,
        name: String,
        path: String,
        port: i32,
    },
    /// A webhook outside the cluster (local development, the end-to-end tests): an `https://` URL.
    Url(String),
}

impl ClientTarget {
    /// The shipped Service `lb-l7-system/lb-l7-webhook`, port 443, path `/mutate`.
    pub fn default_service() -> Self {
        ClientTarget::Service {
            namespace: WEBHOOK_NAMESPACE.to_string(),
            name: DEFAULT_SERVICE_NAME.to_string(),
            path: MUTATE_PATH.to_string(),
            port: 443,
        }
    }
}

/// How the API server learns which CA signed the webhook's serving certificate.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CaSource {
    /// `clientConfig.caBundle`: PEM bytes of the CA certificate(s).
    Bundle(Vec<u8>),
    /// cert-manager's cainjector fills `caBundle` from this Certificate (`namespace/name`).
    CertManager { certificate: String },
    /// No `caBundle` in the output: it is patched in after applying (the static kustomize manifests; see
    /// certs/README.md). Until then the API server cannot verify the webhook, and with `failurePolicy: Ignore`
    /// Services are created unchanged.
    Absent,
}

/// Everything besides the policy that the webhook configuration depends on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RenderOptions {
    pub client: ClientTarget,
    pub ca: CaSource,
    /// `metadata.name` of the MutatingWebhookConfiguration.
    pub name: String,
}

impl Default for RenderOptions {
    fn default() -> Self {
        RenderOptions {
            client: ClientTarget::default_service(),
            ca: CaSource::Absent,
            name: DEFAULT_CONFIGURATION_NAME.to_string(),
        }
    }
}

fn strings(items: &[&str]) -> Vec<String> {
    items.iter().map(|s| s.to_string()).collect()
}

fn requirement(key: &str, operator: &str, values: Vec<String>) -> LabelSelectorRequirement {
    LabelSelectorRequirement {
        key: key.to_string(),
        operator: operator.to_string(),
        values: Some(values),
    }
}

/// The namespaceSelector for a policy: see the module documentation.
pub fn namespace_selector(policy: &Policy) -> LabelSelector {
    let mut exprs = Vec::new();
    if policy.scope == Scope::NamespaceOptIn {
        exprs.push(requirement(OPT_LABEL, "In", strings(&["true"])));
    }
    // `NotIn` with no values is invalid; an empty exclude list simply has no expression.
    if !policy.excluded_namespaces.is_empty() {
        exprs.push(requirement(
            NAMESPACE_NAME_LABEL,
            "NotIn",
            policy.excluded_namespaces.clone(),
        ));
    }
    if policy.scope == Scope::Cluster {
        exprs.push(requirement(OPT_LABEL, "NotIn", strings(&["false"])));
    }
    LabelSelector {
        match_expressions: Some(exprs),
        match_labels: None,
    }
}

/// The objectSelector: Services labelled `lb-l7-webhook/enabled=false` are never sent.
pub fn object_selector() -> LabelSelector {
    LabelSelector {
        match_expressions: Some(vec![requirement(OPT_LABEL, "NotIn", strings(&["false"]))]),
        match_labels: None,
    }
}

/// CEL conditions that spare the API server a call for Services the webhook never changes. Every field access
/// is guarded with `has()`: a condition that errors would, with `failurePolicy: Ignore`, skip the webhook too,
/// but silently and with an error in the API server's log.
pub fn match_conditions() -> Vec<MatchCondition> {
    vec![
        MatchCondition {
            name: "not-external-name".to_string(),
            expression: "!has(object.spec) || !has(object.spec.type) || object.spec.type != 'ExternalName'"
                .to_string(),
        },
        MatchCondition {
            name: "not-headless".to_string(),
            expression:
                "!has(object.spec) || !has(object.spec.clusterIP) || object.spec.clusterIP != 'None'"
                    .to_string(),
        },
    ]
}

/// The MutatingWebhookConfiguration for `policy`. Pure: same input, same output.
pub fn render_webhook_configuration(
    policy: &Policy,
    opts: &RenderOptions,
) -> MutatingWebhookConfiguration {
    let client_config = WebhookClientConfig {
        ca_bundle: match &opts.ca {
            CaSource::Bundle(pem) => Some(k8s_openapi::ByteString(pem.clone())),
            CaSource::CertManager { .. } | CaSource::Absent => None,
        },
        service: match &opts.client {
            ClientTarget::Service {
                namespace,
                name,
                path,
                port,
            } => Some(ServiceReference {
                namespace: namespace.clone(),
                name: name.clone(),
                path: Some(path.clone()),
                port: Some(*port),
            }),
            ClientTarget::Url(_) => None,
        },
        url: match &opts.client {
            ClientTarget::Url(url) => Some(url.clone()),
            ClientTarget::Service { .. } => None,
        },
    };
    let annotations = match &opts.ca {
        CaSource::CertManager { certificate } => Some(BTreeMap::from([(
            CERT_MANAGER_INJECT_ANNOTATION.to_string(),
            certificate.clone(),
        )])),
        _ => None,
    };
    MutatingWebhookConfiguration {
        metadata: ObjectMeta {
            name: Some(opts.name.clone()),
            labels: Some(BTreeMap::from([(
                "app.kubernetes.io/name".to_string(),
                "lb-l7-webhook".to_string(),
            )])),
            annotations,
            ..ObjectMeta::default()
        },
        webhooks: Some(vec![MutatingWebhook {
            name: WEBHOOK_NAME.to_string(),
            admission_review_versions: strings(&["v1"]),
            client_config,
            failure_policy: Some("Ignore".to_string()),
            side_effects: "None".to_string(),
            timeout_seconds: Some(policy.timeout_seconds),
            reinvocation_policy: Some("IfNeeded".to_string()),
            match_policy: Some("Equivalent".to_string()),
            rules: Some(vec![RuleWithOperations {
                api_groups: Some(strings(&[""])),
                api_versions: Some(strings(&["v1"])),
                operations: Some(strings(&["CREATE", "UPDATE"])),
                resources: Some(strings(&["services"])),
                scope: Some("Namespaced".to_string()),
            }]),
            namespace_selector: Some(namespace_selector(policy)),
            object_selector: Some(object_selector()),
            match_conditions: Some(match_conditions()),
        }]),
    }
}

/// Parses `NAMESPACE/NAME`.
pub fn parse_namespaced(s: &str) -> Result<(String, String), String> {
    match s.split_once('/') {
        Some((ns, name)) if !ns.is_empty() && !name.is_empty() && !name.contains('/') => {
            Ok((ns.to_string(), name.to_string()))
        }
        _ => Err(format!("{s:?} is not NAMESPACE/NAME")),
    }
}

/// Checks a webhook URL the way the API server does (https, a host, no query or fragment).
pub fn validate_url(url: &str) -> Result<(), String> {
    let rest = url
        .strip_prefix("https://")
        .ok_or_else(|| format!("{url:?}: the API server only calls https:// webhooks"))?;
    let host = rest.split('/').next().unwrap_or_default();
    if host.is_empty() {
        return Err(format!("{url:?}: no host"));
    }
    if url.contains('?') || url.contains('#') {
        return Err(format!(
            "{url:?}: a webhook URL may not have a query or fragment"
        ));
    }
    if host.contains('@') {
        return Err(format!(
            "{url:?}: a webhook URL may not carry user information"
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy(scope: Scope) -> Policy {
        Policy {
            scope,
            ..Policy::default()
        }
    }

    fn exprs(sel: &LabelSelector) -> Vec<(String, String, Vec<String>)> {
        sel.match_expressions
            .iter()
            .flatten()
            .map(|e| {
                (
                    e.key.clone(),
                    e.operator.clone(),
                    e.values.clone().unwrap_or_default(),
                )
            })
            .collect()
    }

    #[test]
    fn cluster_scope_excludes_the_exclude_list_and_opted_out_namespaces() {
        let p = policy(Scope::Cluster);
        let cfg = render_webhook_configuration(&p, &RenderOptions::default());
        let wh = &cfg.webhooks.as_ref().unwrap()[0];
        let ns = exprs(wh.namespace_selector.as_ref().unwrap());
        assert!(ns.contains(&(
            NAMESPACE_NAME_LABEL.into(),
            "NotIn".into(),
            p.excluded_namespaces.clone()
        )));
        assert!(ns.contains(&(OPT_LABEL.into(), "NotIn".into(), vec!["false".into()])));
        assert!(!ns.iter().any(|(_, op, _)| op == "In"));
        assert_eq!(
            exprs(wh.object_selector.as_ref().unwrap()),
            vec![(
                OPT_LABEL.to_string(),
                "NotIn".to_string(),
                vec!["false".to_string()]
            )]
        );
    }

    #[test]
    fn namespace_opt_in_requires_the_label_and_still_excludes() {
        let p = policy(Scope::NamespaceOptIn);
        let cfg = render_webhook_configuration(&p, &RenderOptions::default());
        let wh = &cfg.webhooks.as_ref().unwrap()[0];
        let ns = exprs(wh.namespace_selector.as_ref().unwrap());
        assert!(ns.contains(&(OPT_LABEL.into(), "In".into(), vec!["true".into()])));
        assert!(ns.contains(&(
            NAMESPACE_NAME_LABEL.into(),
            "NotIn".into(),
            p.excluded_namespaces.clone()
        )));
    }

    #[test]
    fn empty_exclude_list_renders_no_invalid_notin() {
        let mut p = policy(Scope::Cluster);
        p.excluded_namespaces.clear();
        let cfg = render_webhook_configuration(&p, &RenderOptions::default());
        let ns = exprs(
            cfg.webhooks.as_ref().unwrap()[0]
                .namespace_selector
                .as_ref()
                .unwrap(),
        );
        assert!(ns.iter().all(|(_, _, values)| !values.is_empty()));
    }

    #[test]
    fn safe_defaults_and_timeout_from_policy() {
        let p = Policy {
            timeout_seconds: 7,
            ..Policy::default()
        };
        let cfg = render_webhook_configuration(&p, &RenderOptions::default());
        let wh = &cfg.webhooks.as_ref().unwrap()[0];
        assert_eq!(wh.failure_policy.as_deref(), Some("Ignore"));
        assert_eq!(wh.side_effects, "None");
        assert_eq!(wh.timeout_seconds, Some(7));
        assert_eq!(wh.reinvocation_policy.as_deref(), Some("IfNeeded"));
        assert_eq!(wh.match_policy.as_deref(), Some("Equivalent"));
        assert_eq!(wh.admission_review_versions, vec!["v1"]);
        let rule = &wh.rules.as_ref().unwrap()[0];
        assert_eq!(
            rule.operations.as_deref(),
            Some(&["CREATE".to_string(), "UPDATE".to_string()][..])
        );
        assert_eq!(
            rule.resources.as_deref(),
            Some(&["services".to_string()][..])
        );
        assert_eq!(rule.api_groups.as_deref(), Some(&[String::new()][..]));
        assert_eq!(rule.api_versions.as_deref(), Some(&["v1".to_string()][..]));
    }

    #[test]
    fn ca_sources_and_client_targets() {
        let p = Policy::default();
        let bundle = render_webhook_configuration(
            &p,
            &RenderOptions {
                client: ClientTarget::Url("https://127.0.0.1:8443/mutate".into()),
                ca: CaSource::Bundle(b"PEM".to_vec()),
                name: "x".into(),
            },
        );
        let wh = &bundle.webhooks.as_ref().unwrap()[0];
        assert_eq!(
            wh.client_config.url.as_deref(),
            Some("https://127.0.0.1:8443/mutate")
        );
        assert!(wh.client_config.service.is_none());
        assert_eq!(
            wh.client_config.ca_bundle.as_ref().map(|b| b.0.as_slice()),
            Some(&b"PEM"[..])
        );
        assert!(bundle.metadata.annotations.is_none());
        assert_eq!(bundle.metadata.name.as_deref(), Some("x"));

        let cm = render_webhook_configuration(
            &p,
            &RenderOptions {
                ca: CaSource::CertManager {
                    certificate: "lb-l7-system/lb-l7-webhook".into(),
                },
                ..RenderOptions::default()
            },
        );
        let wh = &cm.webhooks.as_ref().unwrap()[0];
        assert!(wh.client_config.ca_bundle.is_none());
        let svc = wh.client_config.service.as_ref().unwrap();
        assert_eq!(
            (svc.namespace.as_str(), svc.name.as_str()),
            ("lb-l7-system", "lb-l7-webhook")
        );
        assert_eq!(
            (svc.path.as_deref(), svc.port),
            (Some("/mutate"), Some(443))
        );
        assert_eq!(
            cm.metadata
                .annotations
                .as_ref()
                .and_then(|a| a.get(CERT_MANAGER_INJECT_ANNOTATION))
                .map(String::as_str),
            Some("lb-l7-system/lb-l7-webhook")
        );
    }

    #[test]
    fn match_conditions_guard_every_field_access() {
        for c in match_conditions() {
            for field in ["spec.type", "spec.clusterIP"] {
                if c.expression.contains(&format!("object.{field} !=")) {
                    assert!(
                        c.expression.contains(&format!("!has(object.{field})")),
                        "{}",
                        c.expression
                    );
                    assert!(
                        c.expression.contains("!has(object.spec)"),
                        "{}",
                        c.expression
                    );
                }
            }
        }
    }

    #[test]
    fn urls_are_checked_like_the_api_server_does() {
        assert!(validate_url("https://127.0.0.1:8443/mutate").is_ok());
        assert!(validate_url("http://127.0.0.1:8443/mutate").is_err());
        assert!(validate_url("https:///mutate").is_err());
        assert!(validate_url("https://h/mutate?x=1").is_err());
        assert!(parse_namespaced("ns/name").is_ok());
        assert!(parse_namespaced("ns").is_err());
        assert!(parse_namespaced("a/b/c").is_err());
    }
}
