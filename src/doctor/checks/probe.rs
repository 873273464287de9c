//! `doctor --probe` (check `webhook.probe`): does the API server really call the webhook, and trust it?
//!
//! A server-side dry-run create (`dryRun=All`) of a throwaway Service (generateName `lb-l7-probe-`, a port named
//! `grpc`, 50051) in a namespace the policy selects runs every admission webhook and stores nothing. The Service
//! must come back with the policy's annotation. The webhook fails open (failurePolicy Ignore), so a caBundle that
//! does not match the served certificate, or a webhook the API server cannot reach, shows only here: the write
//! passes unannotated.

use k8s_openapi::api::core::v1::ServicePort;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;

use super::*;
use crate::cluster::NamespaceLabelMap;

/// The generateName of the probe's Service.
pub const PROBE_GENERATE_NAME: &str = "lb-l7-probe-";

/// The throwaway Service the probe creates with `dryRun=All`.
pub fn probe_service(namespace: &str) -> Service {
    Service {
        metadata: ObjectMeta {
            generate_name: Some(PROBE_GENERATE_NAME.to_string()),
            namespace: Some(namespace.to_string()),
            labels: Some(
                [(
                    "app.kubernetes.io/name".to_string(),
                    "lb-l7-webhook-probe".to_string(),
                )]
                .into(),
            ),
            ..ObjectMeta::default()
        },
        spec: Some(k8s_openapi::api::core::v1::ServiceSpec {
            type_: Some("ClusterIP".to_string()),
            ports: Some(vec![ServicePort {
                name: Some("grpc".to_string()),
                port: 50051,
                protocol: Some("TCP".to_string()),
                ..ServicePort::default()
            }]),
            ..Default::default()
        }),
        ..Service::default()
    }
}

/// Where the probe runs, or why it cannot.
#[derive(Debug, Clone, PartialEq)]
pub enum ProbeTarget {
    Namespace(String),
    /// No namespace the policy selects: the message says why (a warning, not a failure).
    Skip(String),
}

/// Pure: the namespace to probe in. `--probe-namespace` when given; else `default` when the policy enables the
/// probe Service there, else the first namespace (by name) where it does. The policy decides exactly as for a
/// real Service (scope, excluded namespaces, the opt-in label, the rules).
pub fn probe_target(
    policy: &Policy,
    namespaces: &Lookup<NamespaceLabelMap>,
    explicit: Option<&str>,
) -> ProbeTarget {
    if let Some(ns) = explicit {
        return ProbeTarget::Namespace(ns.to_string());
    }
    let map = match namespaces {
        Lookup::Found(map) => map,
        Lookup::Missing | Lookup::Unreadable(_) => {
            return ProbeTarget::Skip(
                "cannot read Namespaces, so no namespace the policy selects is known".to_string(),
            );
        }
    };
    let compiled = policy.compile();
    let mut names: Vec<&String> = map.keys().collect();
    names.sort_by_key(|n| (n.as_str() != "default", n.as_str()));
    for name in names {
        let svc = probe_service(name);
        let ctx = NamespaceContext::known(name, &map[name]);
        if compiled.evaluate(&svc, ctx).kind == DecisionKind::Enable {
            return ProbeTarget::Namespace(name.clone());
        }
    }
    let why = match policy.scope {
        Scope::NamespaceOptIn => format!(
            "no namespace is opted in (label {}=true), so there is nowhere to probe",
            policy::OPT_LABEL
        ),
        Scope::Cluster => {
            "the policy selects no namespace for a Service with a port named grpc".to_string()
        }
    };
    ProbeTarget::Skip(why)
}

/// What the probe saw.
#[derive(Debug, Clone, PartialEq)]
pub enum ProbeOutcome {
    /// Not run: why.
    Skipped(String),
    /// The API server answered the dry-run create; the Service's annotations as it came back (what admission
    /// did).
    Created {
        namespace: String,
        annotations: BTreeMap<String, String>,
    },
    /// The API server refused the create: 403 (RBAC) or another error, in words.
    Refused {
        namespace: String,
        forbidden: bool,
        why: String,
    },
}

/// The check over the probe's outcome. `earlier` are the checks already made: a failed caBundle or endpoints
/// check names the likely cause first.
pub fn check_probe(
    outcome: &ProbeOutcome,
    policy: &Policy,
    earlier: &[Check],
    source: &crate::cluster::policy_source::Discovery,
) -> Check {
    let c = Check::build("webhook.probe", Group::Webhook, "End-to-end probe");
    let key = policy.annotation_key.as_str();
    match outcome {
        ProbeOutcome::Skipped(why) => c.warn(
            format!("probe not run: {why}"),
            match policy.scope {
                Scope::NamespaceOptIn => format!(
                    "opt a namespace in and probe again: kubectl label namespace default {}=true && lb-l7-webhook doctor --probe; or name one: lb-l7-webhook doctor --probe --probe-namespace default",
                    policy::OPT_LABEL
                ),
                Scope::Cluster => {
                    "name a namespace the policy selects: lb-l7-webhook doctor --probe --probe-namespace default".to_string()
                }
            },
        ),
        ProbeOutcome::Refused {
            namespace,
            forbidden: true,
            why,
        } => c.fail(
            format!("the dry-run create of a Service in {namespace} was refused: {why}"),
            format!(
                "a dry-run create still needs the create verb: kubectl -n {namespace} create role lb-l7-webhook-doctor-probe --verb=create --resource=services && kubectl -n {namespace} create rolebinding lb-l7-webhook-doctor-probe --role=lb-l7-webhook-doctor-probe --serviceaccount=lb-l7-system:lb-l7-webhook-doctor (the same as deploy/doctor/probe-rbac.yaml for namespace {namespace}), or run doctor --probe as a user who may create Services there"
            ),
        ),
        ProbeOutcome::Refused { namespace, why, .. } => c.fail(
            format!("the dry-run create of a Service in {namespace} failed: {why}"),
            format!(
                "kubectl -n {namespace} create service clusterip lb-l7-probe --tcp=50051:50051 --dry-run=server -o yaml shows the API server's answer"
            ),
        ),
        ProbeOutcome::Created {
            namespace,
            annotations,
        } => {
            let value = annotations.get(key).cloned();
            match (value.as_deref(), policy.mode) {
                (Some(ENABLED_VALUE), _) => c.ok(format!(
                    "a dry-run Service in {namespace} came back with {key}={ENABLED_VALUE}: the API server calls the webhook and trusts it"
                )),
                (None, Mode::DryRun) => c.ok(format!(
                    "a dry-run Service in {namespace} came back without {key}, as expected: the policy's mode is dry-run (the webhook only warns); switch to enforce to prove the chain"
                )),
                (other, _) => {
                    let got = match other {
                        Some(v) => format!("with {key}={v:?}"),
                        None => format!("without {key}"),
                    };
                    let (cause, fix) = likely_cause(namespace, earlier, source);
                    c.fail(
                        format!(
                            "a dry-run Service with a port named grpc in {namespace} came back {got}: Services written now pass unannotated; likely cause: {cause}"
                        ),
                        fix,
                    )
                }
            }
        }
    }
}

/// The likely cause of an unannotated probe, most specific first, and a command that shows or fixes it.
fn likely_cause(
    namespace: &str,
    earlier: &[Check],
    source: &crate::cluster::policy_source::Discovery,
) -> (String, String) {
    let failed = |id: &str| {
        earlier
            .iter()
            .find(|c| c.id == id && c.status == Status::Fail)
    };
    if let Some(c) = failed("webhook.ca-bundle") {
        return (
            format!("the caBundle ({})", c.message),
            c.fix.clone().unwrap_or_default(),
        );
    }
    if let Some(c) = failed("webhook.endpoints") {
        return (
            format!("the webhook is unreachable ({})", c.message),
            c.fix.clone().unwrap_or_default(),
        );
    }
    if let Some(c) = failed("webhook.drift") {
        return (
            format!(
                "the webhook configuration's selectors do not select namespace {namespace} ({})",
                c.message
            ),
            c.fix.clone().unwrap_or_default(),
        );
    }
    let (ns, deploy) = match source {
        Ok(crate::cluster::policy_source::PolicySource {
            origin:
                crate::cluster::policy_source::Origin::ConfigMap {
                    deployment: Some(d),
                    ..
                }
                | crate::cluster::policy_source::Origin::BuiltInNoPolicyFlag { deployment: d },
            ..
        }) => {
            let (ns, name) = d.split_once('/').unwrap_or(("lb-l7-system", d));
            (ns.to_string(), name.to_string())
        }
        _ => ("lb-l7-system".to_string(), "lb-l7-webhook".to_string()),
    };
    (
        format!(
            "the API server's call to the webhook failed and failurePolicy Ignore let the Service through: most often a caBundle that does not match the certificate the webhook serves (the webhook counts these in lb_l7_webhook_tls_handshake_failures_total and logs them at warn), else a webhook the API server cannot reach, or namespace {namespace} not selected by the webhook configuration"
        ),
        format!(
            "kubectl -n {ns} logs deploy/{deploy} | grep -i handshake; if it says unknown CA, set the caBundle from the CA that signed the serving certificate (certs/README.md)"
        ),
    )
}
