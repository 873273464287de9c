//! Drift: the live webhook configuration against what the policy renders.

use super::*;

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

pub(super) fn sorted(v: &Option<Vec<String>>) -> Vec<String> {
    let mut v = v.clone().unwrap_or_default();
    v.sort();
    v.dedup();
    v
}

pub(super) fn normalize_selector(sel: Option<&LabelSelector>) -> Option<serde_json::Value> {
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
    let fix = "re-render it from the webhook's policy: kubectl apply -k deploy/overlays/namespace-opt-in (or the overlay you installed: cluster-wide, dry-run, cert-manager), or with the policy in policy.yaml: lb-l7-webhook manifests --policy policy.yaml --ca-bundle-file certs/ca.crt | kubectl apply -f -";
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
