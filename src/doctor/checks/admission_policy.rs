//! The admission-policy engine (`manifests --engine admission-policy`): no webhook, the API server applies the
//! MutatingAdmissionPolicy itself. Installed means the policy and its binding exist (in dry-run mode, the warnings
//! policy and its binding); then a missing MutatingWebhookConfiguration is no fault. The drift check compares the
//! parts the policy file decides (CEL, selectors, failure and reinvocation policy, validation actions) with what
//! it renders, so API-server defaults elsewhere are not drift.

use k8s_openapi::api::admissionregistration::v1::{
    MatchResources, MutatingAdmissionPolicy, MutatingAdmissionPolicyBinding,
    ValidatingAdmissionPolicy, ValidatingAdmissionPolicyBinding,
};
use lb_l7_core::render::admission_policy::{
    AdmissionPolicies, MUTATING_POLICY_NAME, WARNINGS_POLICY_NAME, render_admission_policies,
};

use super::drift::normalize_selector;
use super::*;

/// The admission policies as read from the cluster. The mutating ones are read as `v1`, else `v1beta1` (converted
/// to the `v1` types, which have the same fields).
#[derive(Debug, Clone)]
pub struct AdmissionPolicyState {
    pub mutating: Lookup<MutatingAdmissionPolicy>,
    pub mutating_binding: Lookup<MutatingAdmissionPolicyBinding>,
    /// `admissionregistration.k8s.io/v1` or `.../v1beta1`: where the mutating policy was found.
    pub mutating_api_version: String,
    pub warnings: Lookup<ValidatingAdmissionPolicy>,
    pub warnings_binding: Lookup<ValidatingAdmissionPolicyBinding>,
}

impl AdmissionPolicyState {
    /// Nothing of the admission-policy engine is installed (the webhook checks alone apply).
    pub fn absent(&self) -> bool {
        matches!(self.mutating, Lookup::Missing) && matches!(self.warnings, Lookup::Missing)
    }

    /// The engine is installed: the mutating policy and its binding, or (dry-run) the warnings policy and its
    /// binding without a mutating policy.
    pub fn installed(&self) -> bool {
        match (&self.mutating, &self.mutating_binding) {
            (Lookup::Found(_), Lookup::Found(_)) => true,
            (Lookup::Missing, _) => {
                matches!(
                    (&self.warnings, &self.warnings_binding),
                    (Lookup::Found(_), Lookup::Found(_))
                )
            }
            _ => false,
        }
    }
}

const APPLY_FIX: &str = "lb-l7-webhook manifests --engine admission-policy --policy policy.yaml | kubectl apply -f - (see README, Webhook or admission policy)";

/// The engine's checks: installed (`admission-policy.installed`), both engines at once
/// (`admission-policy.engines`) and drift against the policy file (`admission-policy.drift`). Empty when nothing
/// of the engine is installed.
pub fn check_admission_policies(
    state: &AdmissionPolicyState,
    webhook: &Lookup<MutatingWebhookConfiguration>,
    policy: Option<&Policy>,
) -> Vec<Check> {
    if state.absent() {
        return Vec::new();
    }
    let mut out = Vec::new();
    let c = Check::build(
        "admission-policy.installed",
        Group::Webhook,
        "MutatingAdmissionPolicy",
    );
    let unreadable = [
        (&state.mutating.as_unit(), "mutatingadmissionpolicies"),
        (
            &state.mutating_binding.as_unit(),
            "mutatingadmissionpolicybindings",
        ),
        (&state.warnings.as_unit(), "validatingadmissionpolicies"),
        (
            &state.warnings_binding.as_unit(),
            "validatingadmissionpolicybindings",
        ),
    ]
    .into_iter()
    .find_map(|(l, what)| match l {
        Lookup::Unreadable(why) => Some((what, why.clone())),
        _ => None,
    });
    out.push(if let Some((what, why)) = unreadable {
        c.fail(format!("cannot read {what}: {why}"), unreadable_fix(what))
    } else {
        match (&state.mutating, &state.mutating_binding) {
            (Lookup::Found(_), Lookup::Found(_)) => c.ok(format!(
                "MutatingAdmissionPolicy {MUTATING_POLICY_NAME} and its binding exist ({}): the API server annotates Services itself",
                state.mutating_api_version
            )),
            (Lookup::Found(_), _) => c.fail(
                format!("MutatingAdmissionPolicy {MUTATING_POLICY_NAME} has no binding {MUTATING_POLICY_NAME}: the API server applies nothing"),
                APPLY_FIX,
            ),
            _ if state.installed() => c.ok(format!(
                "ValidatingAdmissionPolicy {WARNINGS_POLICY_NAME} and its binding exist, with no MutatingAdmissionPolicy: dry-run, Services get warnings only"
            )),
            _ => c.fail(
                format!("ValidatingAdmissionPolicy {WARNINGS_POLICY_NAME} exists but neither MutatingAdmissionPolicy {MUTATING_POLICY_NAME} nor a complete binding: nothing is annotated"),
                APPLY_FIX,
            ),
        }
    });
    if state.installed()
        && let Lookup::Found(_) = webhook
    {
        out.push(
            Check::build(
                "admission-policy.engines",
                Group::Webhook,
                "One engine",
            )
            .warn(
                "both the MutatingWebhookConfiguration and the admission policies are installed: both annotate (the same way), and the webhook still has to run",
                "once `kubectl apply --dry-run=server -f svc.yaml -o yaml` shows the annotation from the policy, delete the MutatingWebhookConfiguration and the webhook Deployment",
            ),
        );
    }
    out.push(check_admission_policy_drift(state, policy));
    out
}

/// The parts of the objects that the policy file decides, as JSON, for comparison.
fn decided(
    mutating: Option<&MutatingAdmissionPolicy>,
    mutating_binding: Option<&MutatingAdmissionPolicyBinding>,
    warnings: Option<&ValidatingAdmissionPolicy>,
    warnings_binding: Option<&ValidatingAdmissionPolicyBinding>,
) -> Vec<(&'static str, serde_json::Value)> {
    let selectors = |m: Option<&MatchResources>| {
        serde_json::json!({
            "namespaceSelector": normalize_selector(m.and_then(|m| m.namespace_selector.as_ref())),
            "objectSelector": normalize_selector(m.and_then(|m| m.object_selector.as_ref())),
        })
    };
    let mspec = mutating.and_then(|p| p.spec.as_ref());
    let vspec = warnings.and_then(|p| p.spec.as_ref());
    vec![
        (
            "MutatingAdmissionPolicy",
            serde_json::json!({
                "present": mutating.is_some(),
                "failurePolicy": mspec.and_then(|s| s.failure_policy.clone()).unwrap_or_else(|| "Fail".into()),
                "reinvocationPolicy": mspec.and_then(|s| s.reinvocation_policy.clone()).unwrap_or_else(|| "Never".into()),
                "matchConditions": mspec.map(|s| serde_json::to_value(&s.match_conditions).unwrap_or_default()),
                "variables": mspec.map(|s| serde_json::to_value(&s.variables).unwrap_or_default()),
                "mutations": mspec.map(|s| serde_json::to_value(&s.mutations).unwrap_or_default()),
            }),
        ),
        (
            "MutatingAdmissionPolicyBinding",
            match mutating_binding.and_then(|b| b.spec.as_ref()) {
                Some(s) => serde_json::json!({
                    "policyName": s.policy_name,
                    "matchResources": selectors(s.match_resources.as_ref()),
                }),
                None => serde_json::Value::Null,
            },
        ),
        (
            "ValidatingAdmissionPolicy",
            serde_json::json!({
                "present": warnings.is_some(),
                "failurePolicy": vspec.and_then(|s| s.failure_policy.clone()).unwrap_or_else(|| "Fail".into()),
                "matchConditions": vspec.map(|s| serde_json::to_value(&s.match_conditions).unwrap_or_default()),
                "variables": vspec.map(|s| serde_json::to_value(&s.variables).unwrap_or_default()),
                "validations": vspec.map(|s| serde_json::to_value(&s.validations).unwrap_or_default()),
            }),
        ),
        (
            "ValidatingAdmissionPolicyBinding",
            match warnings_binding {
                Some(b) => serde_json::json!({
                    "policyName": b.spec.policy_name,
                    "validationActions": sorted(&Some(b.spec.validation_actions.clone())),
                    "matchResources": selectors(b.spec.match_resources.as_ref()),
                }),
                None => serde_json::Value::Null,
            },
        ),
    ]
}

/// The live admission policies against what the policy file renders.
pub fn check_admission_policy_drift(
    state: &AdmissionPolicyState,
    policy: Option<&Policy>,
) -> Check {
    let c = Check::build(
        "admission-policy.drift",
        Group::Webhook,
        "Admission policies match the policy",
    );
    let Some(policy) = policy else {
        return c.warn(
            "no policy to compare the admission policies with (no --policy file and no policy ConfigMap)",
            "lb-l7-webhook doctor --policy policy.yaml",
        );
    };
    let rendered: AdmissionPolicies = match render_admission_policies(policy) {
        Ok(r) => r,
        Err(e) => {
            return c.fail(
                format!("the policy cannot be rendered as admission policies: {e}"),
                "use the webhook engine for this policy (see README, Webhook or admission policy)",
            );
        }
    };
    let want = decided(
        rendered.mutating.as_ref().map(|(p, _)| p),
        rendered.mutating.as_ref().map(|(_, b)| b),
        Some(&rendered.warnings.0),
        Some(&rendered.warnings.1),
    );
    let have = decided(
        state.mutating.found(),
        state.mutating_binding.found(),
        state.warnings.found(),
        state.warnings_binding.found(),
    );
    let differ: Vec<String> = want
        .iter()
        .zip(&have)
        .filter(|(w, h)| w.1 != h.1)
        .map(|(w, _)| w.0.to_string())
        .collect();
    if differ.is_empty() {
        c.ok("the admission policies and bindings are what the policy renders")
    } else {
        c.objects(differ.clone()).fail(
            format!(
                "{} differ from what the policy renders: Services are not decided as the policy says",
                list_some(&differ)
            ),
            APPLY_FIX,
        )
    }
}

trait AsUnit {
    fn as_unit(&self) -> Lookup<()>;
}

impl<T> AsUnit for Lookup<T> {
    fn as_unit(&self) -> Lookup<()> {
        match self {
            Lookup::Found(_) => Lookup::Found(()),
            Lookup::Missing => Lookup::Missing,
            Lookup::Unreadable(why) => Lookup::Unreadable(why.clone()),
        }
    }
}

/// The report with the engine's checks: when the admission policies are installed, a missing
/// MutatingWebhookConfiguration (and a missing policy ConfigMap, the webhook's) is no fault.
pub fn amend_report(
    report: Report,
    state: &AdmissionPolicyState,
    webhook: &Lookup<MutatingWebhookConfiguration>,
    policy: Option<&Policy>,
) -> Report {
    let extra = check_admission_policies(state, webhook, policy);
    if extra.is_empty() {
        return report;
    }
    let installed = state.installed();
    let mut checks: Vec<Check> = report
        .checks
        .into_iter()
        .map(|mut c| {
            if installed && c.status == Status::Fail {
                let replace = match c.id {
                    "webhook.configuration" if matches!(webhook, Lookup::Missing) => Some(
                        "no MutatingWebhookConfiguration: the admission-policy engine is installed instead, nothing to run",
                    ),
                    "webhook.policy" if policy.is_some() && c.message.contains("not found") => Some(
                        "no policy ConfigMap (the webhook's): the admission-policy engine carries the policy, compared with --policy",
                    ),
                    _ => None,
                };
                if let Some(message) = replace {
                    c.status = Status::Ok;
                    c.message = message.to_string();
                    c.fix = None;
                }
            }
            c
        })
        .collect();
    // After the webhook checks, before the effect.
    let at = checks
        .iter()
        .position(|c| c.group == Group::Effect)
        .unwrap_or(checks.len());
    checks.splice(at..at, extra);
    Report::new(checks)
}
