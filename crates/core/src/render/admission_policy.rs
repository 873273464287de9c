//! The policy as a MutatingAdmissionPolicy: the API server applies the mutation itself, with no webhook to run.
//!
//! [`render_admission_policies`] is pure: policy in, typed objects out. The objects decide what the webhook
//! decides (`CompiledPolicy::evaluate` + `patch::build_patch`) for every Service the API server admits:
//!
//! - Scope and exclusions: the bindings' `matchResources` carry the webhook configuration's own
//!   [`namespace_selector`] and [`object_selector`]; CREATE and UPDATE of `services`.
//! - `matchConditions`: ExternalName and headless Services are left alone (as the webhook's
//!   [`match_conditions`]), and so is a Service that has the annotation key with any value (never overwritten).
//! - `variables`: the TCP, non-TLS ports (the same rule as `policy::is_tls_port`), then one variable per rule, the
//!   webhook's reason text when the rule matches, else `""`; rules in order, first match wins. Port names match
//!   exactly or by glob (`*`, `?` become an anchored RE2 regex for `matches()`), appProtocols case-insensitively
//!   (`lowerAscii()`, the patterns lower-cased as `Policy::compile` does), label selectors with
//!   In/NotIn/Exists/DoesNotExist.
//! - One JSONPatch mutation adds the annotation key, the algorithm (when the rule names one and the Service has
//!   none) and `lb-l7-webhook/matched-by` with the same reason the webhook writes (`port grpc (50051/TCP) matches
//!   rule 'grpc-ports'`).
//! - A ValidatingAdmissionPolicy with `validationActions: [Warn]` gives the webhook's warnings: the old key, a
//!   case-only value, and Cilium's pitfalls for a Service that is balanced per request (it runs after mutation,
//!   so it sees the annotation the mutation added). The webhook gives one warning per port whose numeric
//!   targetPort differs from port (a named targetPort is not warned: it usually resolves to the same number, and
//!   only doctor and `report --cluster` can resolve it); here they come joined with `; ` in one warning, as one
//!   validation has one message.
//! - Dry-run mode: no MutatingAdmissionPolicy at all; the ValidatingAdmissionPolicy warns `dry-run: would enable
//!   L7 load balancing (KEY=enabled): REASON`, as the webhook does.
//! - `failurePolicy: Ignore` (a failing expression admits the Service unchanged, as a webhook that is down does),
//!   `reinvocationPolicy: IfNeeded` as the webhook's.
//!
//! The differential test `crates/core/tests/admission_policy_cel.rs` evaluates these expressions with the `cel`
//! crate against the Service corpus and asserts the same decisions and annotations as the webhook.

use std::collections::BTreeMap;

use k8s_openapi::api::admissionregistration::v1::{
    JSONPatch, MatchCondition, MatchResources, MutatingAdmissionPolicy,
    MutatingAdmissionPolicyBinding, MutatingAdmissionPolicyBindingSpec,
    MutatingAdmissionPolicySpec, Mutation, NamedRuleWithOperations, ValidatingAdmissionPolicy,
    ValidatingAdmissionPolicyBinding, ValidatingAdmissionPolicyBindingSpec,
    ValidatingAdmissionPolicySpec, Validation, Variable,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use serde_json::Value;

use super::{match_conditions, namespace_selector, object_selector};
use crate::policy::{
    ALGORITHM_ANNOTATION, ENABLED_VALUE, LEGACY_ANNOTATION_KEY, MATCHED_BY_ANNOTATION, Mode,
    Policy, Rule, SelectorOperator,
};

/// `metadata.name` of the MutatingAdmissionPolicy and its binding.
pub const MUTATING_POLICY_NAME: &str = "lb-l7-webhook";
/// `metadata.name` of the ValidatingAdmissionPolicy (the warnings) and its binding.
pub const WARNINGS_POLICY_NAME: &str = "lb-l7-webhook-warnings";
/// The most rules the admission policy renders: each rule is one CEL variable evaluated for every Service, and
/// the API server bounds the cost of a policy's expressions (a runtime budget per admission request).
pub const MAX_RULES: usize = 32;
/// The most port-name and appProtocol patterns over all rules, for the same reason.
pub const MAX_PATTERNS: usize = 128;

/// `admissionregistration.k8s.io/v1` (Kubernetes 1.36+) or `v1beta1` (1.34-1.35, behind the
/// `MutatingAdmissionPolicy` feature gate and the v1beta1 API being enabled).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum PolicyApiVersion {
    #[default]
    V1,
    V1beta1,
}

impl PolicyApiVersion {
    pub fn api_version(self) -> &'static str {
        match self {
            PolicyApiVersion::V1 => "admissionregistration.k8s.io/v1",
            PolicyApiVersion::V1beta1 => "admissionregistration.k8s.io/v1beta1",
        }
    }
}

/// A policy feature the admission policy cannot carry: rendering refuses rather than render a different policy.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AdmissionPolicyError {
    #[error(
        "the policy has {0} rules; the admission policy renders at most {MAX_RULES} (one CEL variable per rule, \
         within the API server's CEL cost budget): use --engine webhook, or merge rules"
    )]
    TooManyRules(usize),
    #[error(
        "the policy has {0} port-name and appProtocol patterns; the admission policy renders at most \
         {MAX_PATTERNS} (within the API server's CEL cost budget): use --engine webhook, or fewer patterns"
    )]
    TooManyPatterns(usize),
}

/// What `manifests --engine admission-policy` prints, as typed `v1` objects. In dry-run mode there is no
/// mutating policy: only the warnings.
#[derive(Debug, Clone, PartialEq)]
pub struct AdmissionPolicies {
    pub mutating: Option<(MutatingAdmissionPolicy, MutatingAdmissionPolicyBinding)>,
    pub warnings: (ValidatingAdmissionPolicy, ValidatingAdmissionPolicyBinding),
}

impl AdmissionPolicies {
    /// The objects as JSON documents, in apply order (policy before binding). The mutating policy and its binding
    /// carry `api_version`; the ValidatingAdmissionPolicy is GA (`v1`) on every version that has the mutating one.
    pub fn documents(&self, api_version: PolicyApiVersion) -> Vec<Value> {
        let mut out = Vec::with_capacity(4);
        if let Some((policy, binding)) = &self.mutating {
            for mut doc in [to_json(policy), to_json(binding)] {
                if let Some(obj) = doc.as_object_mut() {
                    obj.insert(
                        "apiVersion".into(),
                        Value::String(api_version.api_version().into()),
                    );
                }
                out.push(doc);
            }
        }
        out.push(to_json(&self.warnings.0));
        out.push(to_json(&self.warnings.1));
        out
    }
}

fn to_json<T: serde::Serialize>(value: &T) -> Value {
    // k8s-openapi's types always serialize (plain structs of strings, lists and maps).
    serde_json::to_value(value).unwrap_or(Value::Null)
}

/// A CEL string literal for any text (double-quoted, escaped).
pub fn cel_string(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '"' => out.push_str("\\\""),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if (c as u32) < 0x20 || c == '\u{7f}' => {
                out.push_str(&format!("\\u{:04x}", c as u32));
            }
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

/// An anchored RE2 regex for a glob with `*` (any run of characters) and `?` (one character), as `wildmatch`
/// reads it; everything else literal. `(?s)` so that `*` and `?` match any character, as in the glob.
pub fn glob_regex(glob: &str) -> String {
    let mut out = String::from("^(?s)");
    for c in glob.chars() {
        match c {
            '*' => out.push_str(".*"),
            '?' => out.push('.'),
            '\\' | '.' | '+' | '(' | ')' | '|' | '[' | ']' | '{' | '}' | '^' | '$' => {
                out.push('\\');
                out.push(c);
            }
            c => out.push(c),
        }
    }
    out.push('$');
    out
}

/// A JSON Pointer token (`/` as `~1`, `~` as `~0`), as `jsonpatch.escapeKey` would give.
pub fn json_pointer_token(key: &str) -> String {
    key.replace('~', "~0").replace('/', "~1")
}

/// `x` matches a glob or an exact value.
fn pattern_test(value: &str, pattern: &str) -> String {
    if pattern.contains('*') || pattern.contains('?') {
        format!("{value}.matches({})", cel_string(&glob_regex(pattern)))
    } else {
        format!("{value} == {}", cel_string(pattern))
    }
}

fn any_of(tests: Vec<String>) -> String {
    if tests.is_empty() {
        "false".to_string()
    } else {
        format!("({})", tests.join(" || "))
    }
}

/// `policy::is_tls_port` in CEL, for a port `p`.
pub fn tls_port_expression() -> String {
    "(has(p.appProtocol) && p.appProtocol.lowerAscii() in [\"https\", \"tls\", \"grpcs\", \"kubernetes.io/wss\"]) \
     || (has(p.name) && (p.name == \"grpcs\" || p.name.startsWith(\"grpcs-\") || p.name == \"https\" \
     || p.name.startsWith(\"https-\") || p.name == \"tls\" || p.name.endsWith(\"-tls\")))"
        .to_string()
}

/// `policy::describe_port` in CEL, for a port `p`.
fn describe_port_expression() -> &'static str {
    "(has(p.name) && p.name != \"\" ? p.name + \" (\" + string(p.port) + \"/\" + (has(p.protocol) ? p.protocol : \"TCP\") + \")\" \
     : string(p.port) + \"/\" + (has(p.protocol) ? p.protocol : \"TCP\"))"
}

fn annotations_expression() -> &'static str {
    "has(object.metadata.annotations) ? object.metadata.annotations : {}"
}

fn label_in(key: &str) -> String {
    format!("{} in variables.labels", cel_string(key))
}

fn selector_expression(rule: &Rule) -> String {
    let Some(sel) = &rule.selector else {
        return "false".to_string();
    };
    let mut terms = Vec::new();
    for (k, v) in &sel.match_labels {
        terms.push(format!(
            "({} && variables.labels[{}] == {})",
            label_in(k),
            cel_string(k),
            cel_string(v)
        ));
    }
    for e in &sel.match_expressions {
        let values = format!(
            "[{}]",
            e.values
                .iter()
                .map(|v| cel_string(v))
                .collect::<Vec<_>>()
                .join(", ")
        );
        terms.push(match e.operator {
            SelectorOperator::In => format!(
                "({} && variables.labels[{}] in {values})",
                label_in(&e.key),
                cel_string(&e.key)
            ),
            SelectorOperator::NotIn => format!(
                "(!({}) || !(variables.labels[{}] in {values}))",
                label_in(&e.key),
                cel_string(&e.key)
            ),
            SelectorOperator::Exists => format!("({})", label_in(&e.key)),
            SelectorOperator::DoesNotExist => format!("!({})", label_in(&e.key)),
        });
    }
    if terms.is_empty() {
        "true".to_string()
    } else {
        terms.join(" && ")
    }
}

/// One rule's variable: the webhook's reason text when the rule matches the Service, else `""`.
fn rule_expression(rule: &Rule) -> String {
    let reason_tail = cel_string(&format!(" matches rule '{}'", rule.name));
    let by_selector = match &rule.selector {
        Some(sel) => format!(
            "({}) ? {} : \"\"",
            selector_expression(rule),
            cel_string(&format!(
                "labels match selector {} of rule '{}'",
                sel.describe(),
                rule.name
            ))
        ),
        None => "\"\"".to_string(),
    };
    let Some(ports) = &rule.ports else {
        return by_selector;
    };
    let by_name = any_of(
        ports
            .names
            .iter()
            .map(|n| pattern_test("p.name", n))
            .collect(),
    );
    let by_name = format!("(has(p.name) && {by_name})");
    let by_app = any_of(
        ports
            .app_protocols
            .iter()
            .map(|a| pattern_test("p.appProtocol.lowerAscii()", &a.to_ascii_lowercase()))
            .collect(),
    );
    let by_app = format!("(has(p.appProtocol) && {by_app})");
    format!(
        "variables.eligiblePorts.exists(p, {by_name} || {by_app}) ? \
         variables.eligiblePorts.filter(p, {by_name} || {by_app}).map(p, \"port \" + {desc} + \
         ({by_name} ? \"\" : \" with appProtocol \" + p.appProtocol) + {reason_tail})[0] : ({by_selector})",
        desc = describe_port_expression(),
    )
}

fn variable(name: &str, expression: String) -> Variable {
    Variable {
        name: name.to_string(),
        expression,
    }
}

/// The variables that decide, shared by the mutating policy and (in dry-run) the warnings: `matched` is the list
/// of `[reason, algorithm]` of the rules that match, in rule order; its first entry decides.
pub fn decision_variables(policy: &Policy) -> Vec<Variable> {
    let mut vars = vec![
        variable(
            "ports",
            "has(object.spec) && has(object.spec.ports) ? object.spec.ports : []".into(),
        ),
        variable(
            "eligiblePorts",
            format!(
                "variables.ports.filter(p, (!has(p.protocol) || p.protocol == \"TCP\") && !({}))",
                tls_port_expression()
            ),
        ),
        variable(
            "labels",
            "has(object.metadata.labels) ? object.metadata.labels : {}".into(),
        ),
    ];
    let mut matched = Vec::new();
    for (i, rule) in policy.rules.iter().enumerate() {
        let name = format!("rule{i}");
        vars.push(variable(&name, rule_expression(rule)));
        matched.push(format!(
            "[variables.{name}, {}]",
            cel_string(rule.algorithm.map(|a| a.as_str()).unwrap_or(""))
        ));
    }
    vars.push(variable(
        "matched",
        format!("[{}].filter(m, m[0] != \"\")", matched.join(", ")),
    ));
    vars
}

fn check_limits(policy: &Policy) -> Result<(), AdmissionPolicyError> {
    if policy.rules.len() > MAX_RULES {
        return Err(AdmissionPolicyError::TooManyRules(policy.rules.len()));
    }
    let patterns: usize = policy
        .rules
        .iter()
        .filter_map(|r| r.ports.as_ref())
        .map(|p| p.names.len() + p.app_protocols.len())
        .sum();
    if patterns > MAX_PATTERNS {
        return Err(AdmissionPolicyError::TooManyPatterns(patterns));
    }
    Ok(())
}

fn meta(name: &str) -> ObjectMeta {
    ObjectMeta {
        name: Some(name.to_string()),
        labels: Some(BTreeMap::from([(
            "app.kubernetes.io/name".to_string(),
            "lb-l7-webhook".to_string(),
        )])),
        ..ObjectMeta::default()
    }
}

fn service_rules() -> MatchResources {
    MatchResources {
        resource_rules: Some(vec![NamedRuleWithOperations {
            api_groups: Some(vec![String::new()]),
            api_versions: Some(vec!["v1".into()]),
            operations: Some(vec!["CREATE".into(), "UPDATE".into()]),
            resources: Some(vec!["services".into()]),
            scope: Some("Namespaced".into()),
            resource_names: None,
        }]),
        match_policy: Some("Equivalent".into()),
        ..MatchResources::default()
    }
}

fn binding_match(policy: &Policy) -> MatchResources {
    MatchResources {
        namespace_selector: Some(namespace_selector(policy)),
        object_selector: Some(object_selector()),
        ..MatchResources::default()
    }
}

/// `has the annotation KEY`, for the Service being admitted.
fn has_annotation(key: &str) -> String {
    format!(
        "(has(object.metadata.annotations) && {} in object.metadata.annotations)",
        cel_string(key)
    )
}

fn json_patch_add(path: &str, value: &str) -> String {
    format!(
        "JSONPatch{{op: \"add\", path: {}, value: {value}}}",
        cel_string(path)
    )
}

/// The JSONPatch expression: `[]` when no rule matches, else the webhook's annotations.
pub fn mutation_expression(policy: &Policy) -> String {
    let key_path = format!(
        "/metadata/annotations/{}",
        json_pointer_token(&policy.annotation_key)
    );
    let alg_path = format!(
        "/metadata/annotations/{}",
        json_pointer_token(ALGORITHM_ANNOTATION)
    );
    let by_path = format!(
        "/metadata/annotations/{}",
        json_pointer_token(MATCHED_BY_ANNOTATION)
    );
    format!(
        "size(variables.matched) == 0 ? [] : \
         (has(object.metadata.annotations) ? [] : [{create}]) + \
         [{key}] + \
         (variables.matched[0][1] != \"\" && !{has_alg} ? [{alg}] : []) + \
         [{by}]",
        create = json_patch_add("/metadata/annotations", "{}"),
        key = json_patch_add(&key_path, &cel_string(ENABLED_VALUE)),
        has_alg = has_annotation(ALGORITHM_ANNOTATION),
        alg = json_patch_add(&alg_path, "variables.matched[0][1]"),
        by = json_patch_add(&by_path, "variables.matched[0][0]"),
    )
}

/// The mutating policy's `matchConditions`: the webhook's (not ExternalName, not headless) and "the annotation
/// key is absent" (any value is the owner's and is never overwritten).
pub fn mutating_match_conditions(policy: &Policy) -> Vec<MatchCondition> {
    let mut out = match_conditions();
    out.push(MatchCondition {
        name: "annotation-absent".into(),
        expression: format!("!{}", has_annotation(&policy.annotation_key)),
    });
    out
}

/// The warnings policy's variables: the decision's (for dry-run), the annotations, whether the Service is
/// balanced per request after mutation, and the targetPort warnings.
pub fn warning_variables(policy: &Policy) -> Vec<Variable> {
    let key = cel_string(&policy.annotation_key);
    let mut vars = Vec::new();
    let mut l7 = format!(
        "{key} in variables.annotations && variables.annotations[{key}] == {}",
        cel_string(ENABLED_VALUE)
    );
    vars.push(variable("annotations", annotations_expression().into()));
    if policy.mode == Mode::DryRun {
        vars.extend(decision_variables(policy));
        l7 =
            format!("({l7}) || (!({key} in variables.annotations) && size(variables.matched) > 0)");
    } else {
        vars.push(variable(
            "ports",
            "has(object.spec) && has(object.spec.ports) ? object.spec.ports : []".into(),
        ));
    }
    vars.push(variable("l7", l7));
    vars.push(variable(
        "targetPortWarnings",
        format!(
            "variables.ports.filter(p, has(p.targetPort) && string(p.targetPort).matches('^[0-9]+$') && string(p.targetPort) != string(p.port)).map(p, \
             \"port \" + {} + \" has targetPort \" + string(p.targetPort) + \
             \": Cilium's L7 redirect has known bugs when targetPort differs from port\")",
            describe_port_expression()
        ),
    ));
    vars
}

fn validation(name: &str, expression: String, message_expression: String) -> Validation {
    Validation {
        expression,
        message_expression: Some(message_expression),
        message: Some(format!("lb-l7-webhook: {name}")),
        reason: None,
    }
}

/// The warnings as validations, in the order the webhook gives them.
pub fn warning_validations(policy: &Policy) -> Vec<Validation> {
    let key_text = &policy.annotation_key;
    let key = cel_string(key_text);
    let ann = |k: &str| format!("variables.annotations[{}]", cel_string(k));
    let mut out = Vec::new();
    if key_text != LEGACY_ANNOTATION_KEY {
        out.push(validation(
            "old annotation key",
            format!(
                "!({} in variables.annotations)",
                cel_string(LEGACY_ANNOTATION_KEY)
            ),
            format!(
                "{} + {} + {}",
                cel_string(&format!("annotation {LEGACY_ANNOTATION_KEY}=")),
                ann(LEGACY_ANNOTATION_KEY),
                cel_string(&format!(
                    " is an old spelling that current Cilium ignores; use {key_text}"
                ))
            ),
        ));
    }
    out.push(validation(
        "value differs from enabled only in case",
        format!(
            "!({key} in variables.annotations) || {v} == \"enabled\" || {v}.lowerAscii() != \"enabled\"",
            v = ann(key_text)
        ),
        format!(
            "{} + {} + {}",
            cel_string(&format!("{key_text}=")),
            ann(key_text),
            cel_string(
                " is not exactly \"enabled\" (the value is case-sensitive), so Cilium leaves L7 load balancing off"
            )
        ),
    ));
    out.push(validation(
        "several ports",
        "!variables.l7 || size(variables.ports) <= 1".into(),
        "\"Service has \" + string(size(variables.ports)) + \" ports: Cilium sends every TCP port through Envoy, \
         and multi-port L7 Services have known Cilium bugs\""
            .into(),
    ));
    out.push(validation(
        "targetPort differs from port",
        "!variables.l7 || size(variables.targetPortWarnings) == 0".into(),
        "variables.targetPortWarnings.join(\"; \")".into(),
    ));
    out.push(validation(
        "sessionAffinity ClientIP",
        "!variables.l7 || !has(object.spec) || !has(object.spec.sessionAffinity) || object.spec.sessionAffinity != \"ClientIP\"".into(),
        cel_string(
            "sessionAffinity ClientIP: Cilium turns session affinity off for L7 load-balanced Services",
        ),
    ));
    let alg = ann(ALGORITHM_ANNOTATION);
    out.push(validation(
        "unknown algorithm",
        format!(
            "!variables.l7 || !({} in variables.annotations) || {alg} in [\"round_robin\", \"least_request\", \"random\"]",
            cel_string(ALGORITHM_ANNOTATION)
        ),
        format!(
            r#"{} + {alg}.replace("\\", "\\\\").replace("\"", "\\\"") + {}"#,
            cel_string(&format!("{ALGORITHM_ANNOTATION}=\"")),
            cel_string(
                "\" is not round_robin, least_request or random: Cilium silently uses round_robin"
            )
        ),
    ));
    if policy.mode == Mode::DryRun {
        out.push(validation(
            "dry-run",
            format!("{key} in variables.annotations || size(variables.matched) == 0"),
            format!(
                "{} + variables.matched[0][0]",
                cel_string(&format!(
                    "dry-run: would enable L7 load balancing ({key_text}={ENABLED_VALUE}): "
                ))
            ),
        ));
    }
    out
}

/// The admission policies for `policy`. Pure: same input, same output.
pub fn render_admission_policies(
    policy: &Policy,
) -> Result<AdmissionPolicies, AdmissionPolicyError> {
    check_limits(policy)?;
    let mutating = (policy.mode == Mode::Enforce).then(|| {
        (
            MutatingAdmissionPolicy {
                metadata: meta(MUTATING_POLICY_NAME),
                spec: Some(MutatingAdmissionPolicySpec {
                    failure_policy: Some("Ignore".into()),
                    reinvocation_policy: Some("IfNeeded".into()),
                    match_constraints: Some(service_rules()),
                    match_conditions: Some(mutating_match_conditions(policy)),
                    variables: Some(decision_variables(policy)),
                    mutations: Some(vec![Mutation {
                        patch_type: "JSONPatch".into(),
                        json_patch: Some(JSONPatch {
                            expression: Some(mutation_expression(policy)),
                        }),
                        apply_configuration: None,
                    }]),
                    param_kind: None,
                }),
            },
            MutatingAdmissionPolicyBinding {
                metadata: meta(MUTATING_POLICY_NAME),
                spec: Some(MutatingAdmissionPolicyBindingSpec {
                    policy_name: Some(MUTATING_POLICY_NAME.into()),
                    match_resources: Some(binding_match(policy)),
                    param_ref: None,
                }),
            },
        )
    });
    let warnings = (
        ValidatingAdmissionPolicy {
            metadata: meta(WARNINGS_POLICY_NAME),
            spec: Some(ValidatingAdmissionPolicySpec {
                failure_policy: Some("Ignore".into()),
                match_constraints: Some(service_rules()),
                match_conditions: Some(match_conditions()),
                variables: Some(warning_variables(policy)),
                validations: Some(warning_validations(policy)),
                audit_annotations: None,
                param_kind: None,
            }),
            status: None,
        },
        ValidatingAdmissionPolicyBinding {
            metadata: meta(WARNINGS_POLICY_NAME),
            spec: ValidatingAdmissionPolicyBindingSpec {
                policy_name: WARNINGS_POLICY_NAME.into(),
                validation_actions: vec!["Warn".into()],
                match_resources: Some(binding_match(policy)),
                param_ref: None,
            },
        },
    );
    Ok(AdmissionPolicies { mutating, warnings })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn globs_become_anchored_regexes_with_metacharacters_escaped() {
        assert_eq!(glob_regex("grpc-*"), "^(?s)grpc-.*$");
        assert_eq!(glob_regex("a?.b(c)"), "^(?s)a.\\.b\\(c\\)$");
    }

    #[test]
    fn cel_strings_escape_quotes_backslashes_and_controls() {
        assert_eq!(cel_string("a\"b\\c\n\u{1}"), "\"a\\\"b\\\\c\\n\\u0001\"");
    }

    #[test]
    fn annotation_keys_are_escaped_as_json_pointer_tokens() {
        assert_eq!(
            json_pointer_token("service.cilium.io/lb-l7"),
            "service.cilium.io~1lb-l7"
        );
        assert_eq!(json_pointer_token("a~b/c"), "a~0b~1c");
    }

    #[test]
    fn too_many_rules_is_an_error_naming_the_feature() {
        let rules: String = (0..=MAX_RULES)
            .map(|i| format!("  - {{name: r{i}, ports: {{}}}}\n"))
            .collect();
        let p = Policy::from_yaml(&format!("scope: cluster\nrules:\n{rules}")).expect("policy");
        let err = render_admission_policies(&p).expect_err("too many rules");
        assert_eq!(err, AdmissionPolicyError::TooManyRules(MAX_RULES + 1));
        assert!(err.to_string().contains("rules"), "{err}");
    }

    #[test]
    fn dry_run_renders_no_mutation_and_a_dry_run_warning() {
        let p = Policy::from_yaml("scope: cluster\nmode: dry-run\nrules: [{name: g, ports: {}}]\n")
            .expect("policy");
        let r = render_admission_policies(&p).expect("renders");
        assert!(r.mutating.is_none());
        let spec = r.warnings.0.spec.as_ref().expect("spec");
        let v = spec.validations.as_ref().expect("validations");
        assert!(
            v.last()
                .and_then(|v| v.message_expression.as_deref())
                .is_some_and(|m| m.contains("dry-run"))
        );
        assert_eq!(
            r.warnings.1.spec.validation_actions,
            vec!["Warn".to_string()]
        );
    }

    /// Each document deserializes into k8s-openapi's type for its kind and apiVersion, and serializes back to
    /// the same JSON (so no field was dropped or misnamed).
    #[test]
    fn documents_are_the_kubernetes_types_for_v1_and_v1beta1() {
        use k8s_openapi::api::admissionregistration::{v1, v1beta1};
        fn round_trip<T: serde::de::DeserializeOwned + serde::Serialize>(doc: &Value) {
            let typed: T = serde_json::from_value(doc.clone()).expect("deserializes");
            assert_eq!(&serde_json::to_value(&typed).expect("serializes"), doc);
        }
        let p = Policy::from_yaml(crate::policy::DEFAULT_POLICY_YAML).expect("policy");
        let r = render_admission_policies(&p).expect("renders");
        for version in [PolicyApiVersion::V1, PolicyApiVersion::V1beta1] {
            let docs = r.documents(version);
            let kinds: Vec<(&str, &str)> = docs
                .iter()
                .map(|d| {
                    (
                        d["apiVersion"].as_str().unwrap_or(""),
                        d["kind"].as_str().unwrap_or(""),
                    )
                })
                .collect();
            let v = version.api_version();
            assert_eq!(
                kinds,
                [
                    (v, "MutatingAdmissionPolicy"),
                    (v, "MutatingAdmissionPolicyBinding"),
                    (
                        "admissionregistration.k8s.io/v1",
                        "ValidatingAdmissionPolicy"
                    ),
                    (
                        "admissionregistration.k8s.io/v1",
                        "ValidatingAdmissionPolicyBinding"
                    ),
                ]
            );
            match version {
                PolicyApiVersion::V1 => {
                    round_trip::<v1::MutatingAdmissionPolicy>(&docs[0]);
                    round_trip::<v1::MutatingAdmissionPolicyBinding>(&docs[1]);
                }
                PolicyApiVersion::V1beta1 => {
                    round_trip::<v1beta1::MutatingAdmissionPolicy>(&docs[0]);
                    round_trip::<v1beta1::MutatingAdmissionPolicyBinding>(&docs[1]);
                }
            }
            round_trip::<v1::ValidatingAdmissionPolicy>(&docs[2]);
            round_trip::<v1::ValidatingAdmissionPolicyBinding>(&docs[3]);
            let spec = &docs[0]["spec"];
            assert_eq!(spec["failurePolicy"], "Ignore");
            assert_eq!(spec["reinvocationPolicy"], "IfNeeded");
            assert_eq!(spec["mutations"][0]["patchType"], "JSONPatch");
            assert_eq!(
                docs[1]["spec"]["matchResources"]["namespaceSelector"],
                serde_json::to_value(namespace_selector(&p)).expect("json")
            );
        }
    }
}
