//! The proof that the admission policies decide what the webhook decides.
//!
//! For every Service of the corpus (tests/data/services/*.yaml) and of a generated set of variants, every
//! policy below and several sets of namespace labels:
//! - the webhook side: the webhook configuration's selectors and matchConditions say whether the API server calls
//!   the webhook; `evaluate` with the namespace's labels decides; when called, the webhook's own
//!   `admission::review` answers an AdmissionReview of the Service, its patch is applied with json-patch, and its
//!   warnings are compared (its decision, warnings and patch are also checked against `evaluate` and `build_patch`
//!   on the whole Service, since the webhook reads only the labels and annotations the policy reads);
//! - the admission-policy side: the bindings' selectors are evaluated with the small label-selector matcher below
//!   (they are not CEL), then every rendered CEL expression (matchConditions, variables, the JSONPatch mutation,
//!   the validations' expressions and messageExpressions) is evaluated with the `cel` crate, the mutation applied
//!   with json-patch, and the warnings policy evaluated on the mutated object (validation runs after mutation).
//!
//! The two must give the same object (so the same annotations) and the same warnings. The webhook gives one
//! warning per port whose targetPort differs; the validation gives them joined with `; `, and the comparison joins
//! them likewise. Kubernetes' CEL library functions used (`lowerAscii`, `join`, `replace`) are the `cel` crate's
//! strings extension, which follows cel-go's `ext.Strings()`; `JSONPatch{...}` is declared as a struct type here
//! as the API server declares it.

use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;
use std::sync::Arc;

use cel::common::types::{CelStruct, STRING_TYPE, Type};
use cel::common::value::{CowVal, Val};
use cel::{Context, Env, ExecutionError, StructType, Value as CelValue};
use k8s_openapi::api::admissionregistration::v1::{MatchCondition, Variable};
use k8s_openapi::api::core::v1::Service;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;
use lb_l7_core::admission::{Reviewed, WARNING_PREFIX, review};
use lb_l7_core::namespace::namespace_of;
use lb_l7_core::patch::build_patch;
use lb_l7_core::policy::{CompiledPolicy, DecisionKind, Mode, NamespaceContext, Policy};
use lb_l7_core::render::admission_policy::{AdmissionPolicies, render_admission_policies};
use lb_l7_core::render::{RenderOptions, match_conditions, render_webhook_configuration};
use serde_json::{Value, json};

fn corpus_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../tests/data/services")
}

/// The corpus: Services, and the Namespaces' labels.
fn corpus() -> (Vec<Value>, BTreeMap<String, BTreeMap<String, String>>) {
    let mut paths: Vec<PathBuf> = std::fs::read_dir(corpus_dir())
        .expect("corpus dir")
        .map(|e| e.expect("entry").path())
        .collect();
    paths.sort();
    let mut services = Vec::new();
    let mut namespaces = BTreeMap::new();
    for path in paths {
        let text = std::fs::read_to_string(&path).expect("read");
        for doc in text.split("\n---\n") {
            let v: Value = serde_saphyr::from_str(doc).expect("corpus YAML");
            match v["kind"].as_str() {
                Some("Service") => services.push(v),
                Some("Namespace") => {
                    let labels: BTreeMap<String, String> =
                        serde_json::from_value(v["metadata"]["labels"].clone()).unwrap_or_default();
                    let name = v["metadata"]["name"].as_str().expect("name").to_string();
                    namespaces.insert(name, labels);
                }
                _ => {}
            }
        }
    }
    assert!(
        services.len() >= 15,
        "the corpus has {} Services",
        services.len()
    );
    (services, namespaces)
}

/// Generated Services: every combination of a few port shapes, labels and annotations that the rules, the
/// exclusions and the pitfalls look at.
fn variants() -> Vec<Value> {
    let ports: Vec<Value> = vec![
        json!({"name": "grpc", "port": 50051, "protocol": "TCP", "targetPort": 50051}),
        json!({"name": "grpc-web", "port": 8080, "protocol": "TCP", "targetPort": "http"}),
        json!({"name": "GRPC", "port": 9000}),
        json!({"name": "grpcs", "port": 443}),
        json!({"name": "api-tls", "port": 8443, "appProtocol": "grpc"}),
        json!({"name": "h2", "port": 81, "appProtocol": "Kubernetes.io/H2C"}),
        json!({"name": "web", "port": 80, "appProtocol": "GRPC"}),
        json!({"name": "web", "port": 80, "appProtocol": "HTTPS"}),
        json!({"port": 7000, "appProtocol": "grpc", "targetPort": 7001}),
        json!({"name": "grpc", "port": 53, "protocol": "UDP"}),
        json!({"name": "rpc.v2", "port": 82}),
        json!({"name": "rpcxv2", "port": 83}),
        json!({"name": "grpc-x", "port": 84, "protocol": "SCTP"}),
        json!({"name": "", "port": 85}),
        // Globs must match whole names: a regex left unanchored would take these.
        json!({"name": "rpc.v22", "port": 86, "appProtocol": "xh2cx"}),
        json!({"name": "my-grpc-1", "port": 87, "appProtocol": "h2c"}),
    ];
    let labels: Vec<Option<Value>> = vec![
        None,
        Some(json!({"tier": "backend"})),
        Some(json!({"tier": "frontend", "team": "a"})),
        Some(json!({"lb-l7-webhook/enabled": "false", "tier": "backend"})),
        Some(json!({"app": "grpc", "legacy": "yes"})),
    ];
    let annotations: Vec<Option<Value>> = vec![
        None,
        Some(json!({})),
        Some(json!({"service.cilium.io/lb-l7": "enabled"})),
        Some(json!({"service.cilium.io/lb-l7": "Enabled"})),
        Some(json!({"service.cilium.io/lb-l7": "disabled"})),
        Some(json!({"example.com/l7": "no"})),
        Some(json!({"service.cilium.io/lb-l7-algorithm": "random"})),
        Some(json!({"service.cilium.io/lb-l7-algorithm": "fast\"est\\"})),
        Some(json!({"io.cilium.service/lb-l7": "enabled"})),
        Some(json!({"lb-l7-webhook/matched-by": "someone"})),
    ];
    let mut port_sets: Vec<Vec<Value>> = vec![vec![]];
    for p in &ports {
        port_sets.push(vec![p.clone()]);
    }
    for (i, p) in ports.iter().enumerate() {
        let q = &ports[(i + 5) % ports.len()];
        port_sets.push(vec![q.clone(), p.clone()]);
    }
    let mut out = Vec::new();
    let mut n = 0;
    for (pi, ps) in port_sets.iter().enumerate() {
        for (li, l) in labels.iter().enumerate() {
            for (ai, a) in annotations.iter().enumerate() {
                // A deterministic thinning of the product, so every pair of dimensions still meets often.
                if (pi + 2 * li + 3 * ai) % 3 != 0 {
                    continue;
                }
                n += 1;
                let mut svc = json!({"apiVersion": "v1", "kind": "Service",
                    "metadata": {"name": format!("v{n}"), "namespace": "apps"},
                    "spec": {"type": "ClusterIP", "ports": ps}});
                if ps.is_empty() && n % 2 == 0 {
                    svc["spec"].as_object_mut().expect("spec").remove("ports");
                }
                if let Some(l) = l {
                    svc["metadata"]["labels"] = l.clone();
                }
                if let Some(a) = a {
                    svc["metadata"]["annotations"] = a.clone();
                }
                match n % 7 {
                    0 => svc["spec"]["sessionAffinity"] = json!("ClientIP"),
                    1 => svc["spec"]["clusterIP"] = json!("None"),
                    2 => svc["spec"]["type"] = json!("ExternalName"),
                    _ => {}
                }
                out.push(svc);
            }
        }
    }
    out
}

const POLICIES: &[&str] = &[
    // The shipped default (namespace-opt-in).
    lb_l7_core::policy::DEFAULT_POLICY_YAML,
    "scope: cluster\nrules: [{name: grpc-ports, ports: {}}]\n",
    "scope: cluster\nexcludedNamespaces: []\nrules:\n\
     - {name: by-label, selector: {matchLabels: {tier: backend}}, algorithm: least_request}\n\
     - {name: globs, ports: {names: ['rpc.v?', 'grpc-*', GRPC], appProtocols: ['KUBERNETES.IO/*']}, algorithm: random}\n\
     - {name: exprs, selector: {matchExpressions: [{key: team, operator: In, values: [a, b]}, {key: legacy, operator: DoesNotExist}, {key: tier, operator: NotIn, values: [db]}]}}\n\
     - {name: exists, selector: {matchExpressions: [{key: app, operator: Exists}]}, algorithm: round_robin}\n",
    "scope: namespace-opt-in\nmode: dry-run\nrules: [{name: grpc-ports, ports: {}, algorithm: least_request}, {name: it's \"odd\", selector: {matchLabels: {tier: frontend}}}]\n",
    "scope: cluster\nannotationKey: example.com/l7\nexcludedNamespaces: [legacy]\nrules: [{name: grpc, ports: {names: ['*'], appProtocols: []}, algorithm: least_request}]\n",
    "scope: cluster\nmode: dry-run\nannotationKey: io.cilium.service/lb-l7\nrules: [{name: app, ports: {names: [], appProtocols: [grpc, 'h?c']}}]\n",
];

fn env() -> Arc<Env> {
    let mut env = Env::stdlib();
    env.add_extension(cel::extensions::strings)
        .expect("strings extension");
    env.add_type(JsonPatchType(Type::new_struct_type("JSONPatch")))
        .expect("JSONPatch type");
    Arc::new(env)
}

/// `JSONPatch{op, path, value}` as the API server declares it: `op` and `path` strings, `value` of any type. (The
/// crate's `StructDef` compares field types exactly, so it cannot declare a `dyn` field.)
struct JsonPatchType(Type);

impl StructType for JsonPatchType {
    fn get_type(&self) -> &Type {
        &self.0
    }

    fn new_value<'b, 'v>(
        &self,
        fields: BTreeMap<String, CowVal<'b, 'v>>,
    ) -> Result<Box<dyn Val + 'v>, ExecutionError> {
        let mut s = CelStruct::new("JSONPatch".to_owned());
        for (field, value) in fields {
            let is_string = value.get_type() == &STRING_TYPE;
            match field.as_str() {
                "op" | "path" if !is_string => {
                    return Err(ExecutionError::function_error(
                        "JSONPatch",
                        format!("{field} must be a string"),
                    ));
                }
                "op" | "path" | "value" => s.add_field_value(field, value),
                _ => {
                    return Err(ExecutionError::function_error(
                        "JSONPatch",
                        format!("no field {field}"),
                    ));
                }
            }
        }
        Ok(Box::new(s))
    }
}

struct Cel {
    env: Arc<Env>,
    cache: HashMap<String, cel::Program>,
}

impl Cel {
    fn eval(
        &mut self,
        expr: &str,
        object: &CelValue,
        vars: &HashMap<String, CelValue>,
    ) -> CelValue {
        if !self.cache.contains_key(expr) {
            let program = self
                .env
                .compile(expr)
                .unwrap_or_else(|e| panic!("CEL does not parse {expr}: {e:?}"));
            self.cache.insert(expr.to_string(), program);
        }
        let program = &self.cache[expr];
        let mut ctx = Context::with_env(self.env.clone());
        ctx.add_variable_from_value("object", object.clone());
        ctx.add_variable_from_value("variables", CelValue::from(vars.clone()));
        program
            .execute(&ctx)
            .unwrap_or_else(|e| panic!("CEL error in {expr}: {e:?} (object {object:?})"))
    }

    fn conditions(&mut self, conds: &[MatchCondition], object: &CelValue) -> bool {
        conds
            .iter()
            .all(|c| self.eval(&c.expression, object, &HashMap::new()) == CelValue::Bool(true))
    }

    fn variables(&mut self, vars: &[Variable], object: &CelValue) -> HashMap<String, CelValue> {
        let mut out = HashMap::new();
        for v in vars {
            let value = self.eval(&v.expression, object, &out);
            out.insert(v.name.clone(), value);
        }
        out
    }
}

fn cel_json(v: &CelValue) -> Value {
    match v {
        CelValue::Struct(s) => {
            let mut obj = serde_json::Map::new();
            for (k, f) in s.field_values() {
                let f = CelValue::try_from(&*f).expect("field value");
                obj.insert(k, cel_json(&f));
            }
            Value::Object(obj)
        }
        CelValue::List(items) => Value::Array(items.iter().map(cel_json).collect()),
        other => other.json().expect("JSON value"),
    }
}

/// Kubernetes label-selector semantics, for the bindings' and the webhook configuration's selectors.
fn selector_matches(sel: &LabelSelector, labels: &BTreeMap<String, String>) -> bool {
    sel.match_labels
        .iter()
        .flatten()
        .all(|(k, v)| labels.get(k) == Some(v))
        && sel.match_expressions.iter().flatten().all(|e| {
            let values = e.values.clone().unwrap_or_default();
            let value = labels.get(&e.key);
            match e.operator.as_str() {
                "In" => value.is_some_and(|v| values.contains(v)),
                "NotIn" => value.is_none_or(|v| !values.contains(v)),
                "Exists" => value.is_some(),
                "DoesNotExist" => value.is_none(),
                other => panic!("operator {other}"),
            }
        })
}

#[derive(Debug, PartialEq)]
struct Outcome {
    object: Value,
    warnings: Vec<String>,
}

/// What the webhook does with the Service.
fn webhook(
    compiled: &CompiledPolicy,
    svc_json: &Value,
    ns_labels: &BTreeMap<String, String>,
    cel: &mut Cel,
) -> (Outcome, DecisionKind) {
    let policy = &compiled.policy;
    let svc: Service = serde_json::from_value(svc_json.clone()).expect("Service");
    let ns = namespace_of(&svc.metadata).to_string();
    let decision = compiled.evaluate(&svc, NamespaceContext::known(&ns, ns_labels));
    let config = render_webhook_configuration(policy, &RenderOptions::default());
    let hook = &config.webhooks.as_ref().expect("webhooks")[0];
    let svc_labels = svc.metadata.labels.clone().unwrap_or_default();
    let object = cel::to_value(svc_json).expect("CEL value");
    let called = selector_matches(hook.namespace_selector.as_ref().expect("ns sel"), ns_labels)
        && selector_matches(hook.object_selector.as_ref().expect("obj sel"), &svc_labels)
        && cel.conditions(&match_conditions(), &object);
    let mut doc = svc_json.clone();
    let mut warnings = Vec::new();
    if called {
        let answer = compiled.evaluate(&svc, NamespaceContext::scope_applied(&ns));
        assert_eq!(answer.kind, decision.kind, "{svc_json}");
        let reviewed = review_of(compiled, &ns, svc_json);
        assert_eq!(reviewed.decision.as_ref(), Some(&answer), "{svc_json}");
        let response = &reviewed.response.response;
        let prefix = format!(
            "{WARNING_PREFIX}{ns}/{}: ",
            svc.metadata.name.as_deref().unwrap_or_default()
        );
        let sent: Vec<&str> = response
            .warnings
            .iter()
            .map(|w| w.strip_prefix(&prefix).expect("prefixed warning"))
            .collect();
        let mut target_ports = Vec::new();
        for w in &sent {
            if w.contains("has targetPort") {
                target_ports.push(*w);
            } else {
                if !target_ports.is_empty() {
                    warnings.push(target_ports.join("; "));
                    target_ports.clear();
                }
                warnings.push(w.to_string());
            }
        }
        if !target_ports.is_empty() {
            warnings.push(target_ports.join("; "));
        }
        let expected_patch =
            build_patch(&svc, &answer, policy).filter(|_| policy.mode != Mode::DryRun);
        match response.decoded_patch() {
            Some(patch) => {
                let patch = patch.expect("the webhook's patch decodes");
                assert_eq!(Some(&patch), expected_patch.as_ref(), "{svc_json}");
                json_patch::patch(&mut doc, &patch.0).expect("the webhook's patch applies");
            }
            None => assert_eq!(expected_patch, None, "{svc_json}"),
        }
    } else {
        assert!(
            !decision.kind.is_l7() || decision.kind == DecisionKind::AlreadyEnabled,
            "the webhook is not called for a Service it would enable: {svc_json}"
        );
    }
    (
        Outcome {
            object: doc,
            warnings,
        },
        decision.kind,
    )
}

/// The webhook's answer to a CREATE of the Service in namespace `ns`.
fn review_of(compiled: &CompiledPolicy, ns: &str, svc_json: &Value) -> Reviewed {
    let body = json!({
        "apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview",
        "request": {
            "uid": "u", "kind": {"group": "", "version": "v1", "kind": "Service"},
            "namespace": ns, "name": svc_json["metadata"]["name"], "operation": "CREATE",
            "object": svc_json,
        }
    });
    let reviewed = review(compiled, &serde_json::to_vec(&body).unwrap()).expect("a review");
    assert_eq!(reviewed.response.response.uid, "u");
    reviewed
}

/// What the API server does with the Service under the admission policies.
fn admission_policies(
    rendered: &AdmissionPolicies,
    svc_json: &Value,
    ns_labels: &BTreeMap<String, String>,
    cel: &mut Cel,
) -> Outcome {
    let svc_labels: BTreeMap<String, String> =
        serde_json::from_value(svc_json["metadata"]["labels"].clone()).unwrap_or_default();
    let bound = |m: &Option<k8s_openapi::api::admissionregistration::v1::MatchResources>| {
        let m = m.as_ref().expect("matchResources");
        selector_matches(m.namespace_selector.as_ref().expect("ns"), ns_labels)
            && selector_matches(m.object_selector.as_ref().expect("obj"), &svc_labels)
    };
    let mut doc = svc_json.clone();
    if let Some((policy, binding)) = &rendered.mutating {
        let spec = policy.spec.as_ref().expect("spec");
        let object = cel::to_value(&doc).expect("CEL value");
        if bound(&binding.spec.as_ref().expect("spec").match_resources)
            && cel.conditions(spec.match_conditions.as_deref().unwrap_or(&[]), &object)
        {
            let vars = cel.variables(spec.variables.as_deref().unwrap_or(&[]), &object);
            for m in spec.mutations.iter().flatten() {
                assert_eq!(m.patch_type, "JSONPatch");
                let expr = m
                    .json_patch
                    .as_ref()
                    .and_then(|j| j.expression.as_deref())
                    .expect("expression");
                let ops = cel_json(&cel.eval(expr, &object, &vars));
                let patch: json_patch::Patch = serde_json::from_value(ops.clone())
                    .unwrap_or_else(|e| panic!("not a JSON patch: {ops} ({e})"));
                json_patch::patch(&mut doc, &patch.0).expect("the policy's patch applies");
            }
        }
    }
    let mut warnings = Vec::new();
    let (policy, binding) = &rendered.warnings;
    let spec = policy.spec.as_ref().expect("spec");
    let object = cel::to_value(&doc).expect("CEL value");
    if bound(&binding.spec.match_resources)
        && cel.conditions(spec.match_conditions.as_deref().unwrap_or(&[]), &object)
    {
        let vars = cel.variables(spec.variables.as_deref().unwrap_or(&[]), &object);
        for v in spec.validations.iter().flatten() {
            if cel.eval(&v.expression, &object, &vars) != CelValue::Bool(true) {
                let msg = v.message_expression.as_deref().expect("messageExpression");
                match cel.eval(msg, &object, &vars) {
                    CelValue::String(s) => warnings.push(s.to_string()),
                    other => panic!("message {other:?}"),
                }
            }
        }
    }
    Outcome {
        object: doc,
        warnings,
    }
}

fn namespace_label_sets(
    ns: &str,
    known: &BTreeMap<String, BTreeMap<String, String>>,
) -> Vec<BTreeMap<String, String>> {
    let mut sets = vec![
        BTreeMap::new(),
        BTreeMap::from([("lb-l7-webhook/enabled".to_string(), "true".to_string())]),
        BTreeMap::from([("lb-l7-webhook/enabled".to_string(), "false".to_string())]),
    ];
    if let Some(l) = known.get(ns) {
        sets.push(l.clone());
    }
    for s in &mut sets {
        s.insert("kubernetes.io/metadata.name".to_string(), ns.to_string());
    }
    sets
}

#[test]
fn admission_policies_decide_what_the_webhook_decides() {
    let (mut services, namespaces) = corpus();
    let corpus_len = services.len();
    services.extend(variants());
    let mut cel = Cel {
        env: env(),
        cache: HashMap::new(),
    };
    let mut cases = 0;
    let mut kinds: BTreeMap<(usize, DecisionKind), usize> = BTreeMap::new();
    let mut warned = 0;
    let mut patched = 0;
    for (pi, text) in POLICIES.iter().enumerate() {
        let policy = Policy::from_yaml(text).unwrap_or_else(|e| panic!("policy {pi}: {e}"));
        let compiled = policy.compile();
        let rendered = render_admission_policies(&policy).expect("renders");
        assert_eq!(rendered.mutating.is_none(), policy.mode == Mode::DryRun);
        for (si, svc) in services.iter().enumerate() {
            // A corpus Service is tried in its own namespace, an excluded one and a labelled-out one, each with
            // every set of namespace labels; a variant in `apps`, with one of the label sets in turn.
            let ns = svc["metadata"]["namespace"]
                .as_str()
                .unwrap_or("default")
                .to_string();
            let spaces: &[&str] = if si < corpus_len {
                &[ns.as_str(), "kube-system", "legacy"]
            } else {
                &[ns.as_str()]
            };
            for &nsn in spaces {
                let mut svc = svc.clone();
                svc["metadata"]["namespace"] = json!(nsn);
                let mut sets = namespace_label_sets(nsn, &namespaces);
                if si >= corpus_len {
                    sets = vec![sets.swap_remove((si + pi) % sets.len())];
                }
                for labels in sets {
                    let (expected, kind) = webhook(&compiled, &svc, &labels, &mut cel);
                    let got = admission_policies(&rendered, &svc, &labels, &mut cel);
                    assert_eq!(
                        got, expected,
                        "policy {pi}, namespace labels {labels:?}, Service {svc}"
                    );
                    cases += 1;
                    *kinds.entry((pi, kind)).or_default() += 1;
                    warned += usize::from(!got.warnings.is_empty());
                    patched += usize::from(got.object != svc);
                }
            }
        }
    }
    eprintln!(
        "{cases} cases ({corpus_len} corpus Services + variants) x policies x namespaces: {patched} mutated, \
         {warned} with warnings; decisions per policy: {kinds:?}"
    );
    // The test cannot pass vacuously: every policy enables some Services and leaves others alone.
    for pi in 0..POLICIES.len() {
        for kind in [
            DecisionKind::Enable,
            DecisionKind::NoMatch,
            DecisionKind::ExcludedNamespace,
            DecisionKind::OptedOut,
        ] {
            assert!(
                kinds.get(&(pi, kind)).is_some_and(|n| *n > 0),
                "policy {pi} never decides {kind}"
            );
        }
    }
    assert!(
        patched > 100 && warned > 100,
        "{patched} mutated, {warned} warned"
    );
}
