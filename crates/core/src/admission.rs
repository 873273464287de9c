//! AdmissionReview in, AdmissionReview out. Pure: bytes and a policy in, a response value out.
//!
//! Wire types are our own, on purpose, for two reasons kube-core's typed `AdmissionReview<T>` cannot meet:
//! - the uid must be echoed even when the rest of the request (the object, the kind) is malformed, so the request
//!   is read in two steps: first the uid alone, then the rest;
//! - `response.patch` must be a base64 string, as the API server's own types write `[]byte`; kube-core writes an
//!   array of numbers (kube-rs issue 1781).
//!
//! The webhook never blocks a write: every response with a uid says `allowed: true`.

use std::borrow::Cow;
use std::collections::BTreeMap;

use base64::Engine as _;
use k8s_openapi::api::core::v1::Service;
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;

use crate::patch::build_patch;
use crate::policy::{CompiledPolicy, Decision, DecisionKind, Mode, NamespaceContext};

/// The only AdmissionReview version the webhook registers for.
pub const API_VERSION: &str = "admission.k8s.io/v1";
pub const KIND: &str = "AdmissionReview";
/// Prefix of every warning, so a user who reads `Warning: ...` from kubectl knows who said it.
pub const WARNING_PREFIX: &str = "lb-l7-webhook: ";

/// The AdmissionReview the webhook answers with.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ReviewResponse {
    pub api_version: String,
    pub kind: String,
    pub response: AdmissionResponse,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct AdmissionResponse {
    pub uid: String,
    pub allowed: bool,
    /// The JSON Patch, base64-encoded as the API server expects.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub patch: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub patch_type: Option<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub warnings: Vec<String>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub audit_annotations: BTreeMap<String, String>,
}

impl AdmissionResponse {
    /// Allowed, unchanged: the start of every response.
    fn allow(uid: String) -> Self {
        AdmissionResponse {
            uid,
            allowed: true,
            patch: None,
            patch_type: None,
            warnings: Vec::new(),
            audit_annotations: BTreeMap::new(),
        }
    }

    fn warn(mut self, message: impl AsRef<str>) -> Self {
        self.warnings
            .push(format!("{WARNING_PREFIX}{}", message.as_ref()));
        self
    }

    /// The decoded JSON Patch, if any (for tests and tools).
    pub fn decoded_patch(&self) -> Option<Result<json_patch::Patch, String>> {
        self.patch.as_ref().map(|p| {
            let bytes = base64::engine::general_purpose::STANDARD
                .decode(p)
                .map_err(|e| e.to_string())?;
            serde_json::from_slice(&bytes).map_err(|e| e.to_string())
        })
    }
}

/// What happened to a review, for the log line, the span and the metrics.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Outcome {
    /// An `enable` decision, answered with a patch.
    Patched,
    /// An `enable` decision in dry-run mode: no patch, a warning.
    DryRun,
    /// Any other decision: no patch.
    Unchanged,
    /// Not a CREATE or UPDATE of a Service: allowed unchanged with a warning.
    Skipped,
    /// The request or its object could not be decoded: allowed unchanged with a warning (fail open).
    Undecodable,
}

impl Outcome {
    pub fn as_str(self) -> &'static str {
        match self {
            Outcome::Patched => "patched",
            Outcome::DryRun => "dry-run",
            Outcome::Unchanged => "unchanged",
            Outcome::Skipped => "skipped",
            Outcome::Undecodable => "undecodable",
        }
    }
}

/// A review answered, with what the log needs to know about it.
#[derive(Debug, Clone)]
pub struct Reviewed {
    pub response: ReviewResponse,
    pub uid: String,
    pub namespace: String,
    pub name: String,
    pub operation: String,
    pub decision: Option<Decision>,
    pub outcome: Outcome,
}

impl Reviewed {
    pub fn patched(&self) -> bool {
        self.outcome == Outcome::Patched
    }
}

/// A body that is not an AdmissionReview: the server answers 400 with this message.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("{0}")]
pub struct BadRequest(pub String);

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Envelope<'a> {
    #[serde(default, borrow)]
    api_version: Option<Cow<'a, str>>,
    #[serde(default, borrow)]
    kind: Option<Cow<'a, str>>,
    #[serde(default, borrow)]
    request: Option<&'a RawValue>,
}

#[derive(Deserialize)]
struct UidOnly {
    uid: String,
}

/// The request's fields the webhook reads; `O` is the object: raw JSON text on the step-by-step path, a decoded
/// Service on the fast path.
#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct RequestIn<O> {
    /// Read here only on the fast path; the step-by-step path reads it first, alone.
    #[serde(default)]
    uid: Option<String>,
    kind: Gvk,
    #[serde(default)]
    sub_resource: Option<String>,
    #[serde(default)]
    name: Option<String>,
    #[serde(default)]
    namespace: Option<String>,
    operation: String,
    #[serde(default = "none")]
    object: Option<O>,
}

fn none<O>() -> Option<O> {
    None
}

impl<O> RequestIn<O> {
    /// Splits off the uid and the object, leaving the fields [`answer`] reads.
    fn split(self) -> (Option<String>, RequestIn<()>, Option<O>) {
        let RequestIn {
            uid,
            kind,
            sub_resource,
            name,
            namespace,
            operation,
            object,
        } = self;
        let rest = RequestIn {
            uid: None,
            kind,
            sub_resource,
            name,
            namespace,
            operation,
            object: None,
        };
        (uid, rest, object)
    }
}

#[derive(Deserialize)]
struct Gvk {
    #[serde(default)]
    group: String,
    #[serde(default)]
    version: String,
    #[serde(default)]
    kind: String,
}

/// The whole review in one pass: the fast path for a well-formed review.
#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct FastEnvelope<'a> {
    #[serde(default, borrow)]
    api_version: Option<Cow<'a, str>>,
    #[serde(default, borrow)]
    kind: Option<Cow<'a, str>>,
    request: RequestIn<Service>,
}

/// The object of a request, decoded already (fast path) or still raw JSON text.
// Built once per review and moved straight into `answer`: boxing the Service would only add an allocation.
#[allow(clippy::large_enum_variant)]
enum ObjectIn<'a> {
    Decoded(Option<Service>),
    Raw(Option<&'a RawValue>),
}

/// Answers one AdmissionReview. `Err` only when the body is not an AdmissionReview with a uid.
///
/// A well-formed review is decoded in one pass. Anything else takes the step-by-step path, which reads the
/// envelope, then the uid alone, then the request, then the object, so that the uid is echoed and the warning
/// says what is wrong. Both paths give the same answer: the fast path only succeeds where every step would.
pub fn review(policy: &CompiledPolicy, body: &[u8]) -> Result<Reviewed, BadRequest> {
    // Fields the webhook does not read are skipped without a UTF-8 check, so the whole body is checked first:
    // the step-by-step path rejects invalid UTF-8 anywhere in the request, and the fast path must not be laxer.
    if let Ok(text) = std::str::from_utf8(body)
        && let Ok(fast) = serde_json::from_str::<FastEnvelope>(text)
        && fast.kind.as_deref() == Some(KIND)
        && fast.api_version.as_deref() == Some(API_VERSION)
        && fast.request.uid.as_deref().is_some_and(|u| !u.is_empty())
    {
        let (uid, req, object) = fast.request.split();
        return Ok(answer(
            policy,
            uid.unwrap_or_default(),
            req,
            ObjectIn::Decoded(object),
        ));
    }
    review_step_by_step(policy, body)
}

/// The step-by-step path alone: the reference the fast path of [`review`] must agree with (the `admission` fuzz
/// target and the unit tests compare them).
pub fn review_step_by_step(policy: &CompiledPolicy, body: &[u8]) -> Result<Reviewed, BadRequest> {
    let envelope: Envelope = serde_json::from_slice(body)
        .map_err(|e| BadRequest(format!("body is not a JSON AdmissionReview: {e}")))?;
    let api_version = envelope.api_version.as_deref().unwrap_or("");
    let kind = envelope.kind.as_deref().unwrap_or("");
    if kind != KIND || api_version != API_VERSION {
        return Err(BadRequest(format!(
            "expected kind {KIND} apiVersion {API_VERSION}, got kind {kind:?} apiVersion {api_version:?}"
        )));
    }
    let raw = envelope
        .request
        .ok_or_else(|| BadRequest("AdmissionReview has no request".into()))?;
    let UidOnly { uid } = serde_json::from_str(raw.get())
        .map_err(|e| BadRequest(format!("request.uid is missing or not a string: {e}")))?;
    if uid.is_empty() {
        return Err(BadRequest("request.uid is empty".into()));
    }

    let req: RequestIn<&RawValue> = match serde_json::from_str(raw.get()) {
        Ok(r) => r,
        Err(e) => {
            let allow = AdmissionResponse::allow(uid.clone());
            let out = Reviewed::start(uid);
            return Ok(out.finish(
                Outcome::Undecodable,
                allow.warn(format!(
                    "request could not be decoded ({e}); Service allowed unchanged"
                )),
            ));
        }
    };
    let (_, req, object) = req.split();
    Ok(answer(policy, uid, req, ObjectIn::Raw(object)))
}

impl Reviewed {
    fn start(uid: String) -> Self {
        Reviewed {
            response: ReviewResponse {
                api_version: API_VERSION.into(),
                kind: KIND.into(),
                response: AdmissionResponse::allow(uid.clone()),
            },
            uid,
            namespace: String::new(),
            name: String::new(),
            operation: String::new(),
            decision: None,
            outcome: Outcome::Undecodable,
        }
    }

    fn finish(mut self, outcome: Outcome, response: AdmissionResponse) -> Self {
        self.outcome = outcome;
        self.response.response = response;
        self
    }
}

/// Everything after the request is read: which requests are handled, the object, the decision, the patch.
fn answer(
    policy: &CompiledPolicy,
    uid: String,
    req: RequestIn<()>,
    object: ObjectIn<'_>,
) -> Reviewed {
    let allow = AdmissionResponse::allow(uid.clone());
    let mut out = Reviewed::start(uid);
    out.namespace = req.namespace.unwrap_or_default();
    out.name = req.name.unwrap_or_default();
    out.operation = req.operation;

    if !(req.kind.group.is_empty() && req.kind.version == "v1" && req.kind.kind == "Service") {
        let k = format!("{}/{} {}", req.kind.group, req.kind.version, req.kind.kind);
        return out.finish(
            Outcome::Skipped,
            allow.warn(format!(
                "only core/v1 Services are handled, got {k}; allowed unchanged"
            )),
        );
    }
    if let Some(sub) = req.sub_resource.as_deref().filter(|s| !s.is_empty()) {
        return out.finish(
            Outcome::Skipped,
            allow.warn(format!(
                "subresource {sub:?} is not handled; allowed unchanged"
            )),
        );
    }
    if out.operation != "CREATE" && out.operation != "UPDATE" {
        let op = out.operation.clone();
        return out.finish(
            Outcome::Skipped,
            allow.warn(format!(
                "operation {op} is not handled (only CREATE and UPDATE); allowed unchanged"
            )),
        );
    }
    let decoded = match object {
        ObjectIn::Decoded(svc) => svc.map(Ok),
        ObjectIn::Raw(raw) => raw.map(|o| serde_json::from_str::<Service>(o.get())),
    };
    let svc: Service = match decoded {
        Some(Ok(svc)) if svc.metadata != Default::default() => svc,
        Some(Ok(_)) => {
            return out.finish(
                Outcome::Undecodable,
                allow.warn("object has no metadata; Service allowed unchanged"),
            );
        }
        Some(Err(e)) => {
            return out.finish(
                Outcome::Undecodable,
                allow.warn(format!(
                    "object is not a valid Service ({e}); allowed unchanged"
                )),
            );
        }
        None => {
            return out.finish(
                Outcome::Undecodable,
                allow.warn("request has no object; Service allowed unchanged"),
            );
        }
    };
    if out.name.is_empty() {
        out.name = svc
            .metadata
            .name
            .clone()
            .or_else(|| svc.metadata.generate_name.clone())
            .unwrap_or_default();
    }
    if out.namespace.is_empty() {
        out.namespace = svc.metadata.namespace.clone().unwrap_or_default();
    }

    let decision = policy.evaluate(&svc, NamespaceContext::scope_applied(&out.namespace));
    let mut response = allow;
    for w in &decision.warnings {
        response = response.warn(w);
    }
    response
        .audit_annotations
        .insert("decision".into(), decision.kind.as_str().into());
    let mut outcome = Outcome::Unchanged;
    if decision.kind == DecisionKind::Enable {
        if policy.policy.mode == Mode::DryRun {
            outcome = Outcome::DryRun;
            response = response.warn(format!(
                "dry-run: would enable L7 load balancing ({}={}): {}",
                policy.policy.annotation_key,
                crate::policy::ENABLED_VALUE,
                decision.reason
            ));
        } else if let Some(patch) = build_patch(&svc, &decision, &policy.policy) {
            match serde_json::to_vec(&patch) {
                Ok(bytes) => {
                    response.patch = Some(base64::engine::general_purpose::STANDARD.encode(bytes));
                    response.patch_type = Some("JSONPatch".into());
                    outcome = Outcome::Patched;
                }
                Err(e) => {
                    response = response.warn(format!(
                        "patch could not be encoded ({e}); allowed unchanged"
                    ));
                }
            }
        }
    }
    out.decision = Some(decision);
    out.finish(outcome, response)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::policy::Policy;
    use serde_json::{Value, json};

    fn request(op: &str, object: Value) -> Value {
        json!({
            "apiVersion": API_VERSION, "kind": KIND,
            "request": {
                "uid": "uid-1",
                "kind": {"group": "", "version": "v1", "kind": "Service"},
                "resource": {"group": "", "version": "v1", "resource": "services"},
                "namespace": "apps", "name": "api", "operation": op,
                "userInfo": {"username": "u"},
                "object": object,
            }
        })
    }

    fn grpc_object() -> Value {
        json!({"apiVersion": "v1", "kind": "Service",
            "metadata": {"name": "api", "namespace": "apps"},
            "spec": {"ports": [{"name": "grpc", "port": 50051}]}})
    }

    fn run(policy: &str, body: &Value) -> Reviewed {
        let p = Policy::from_yaml(policy).expect("policy").compile();
        review(&p, &serde_json::to_vec(body).unwrap()).expect("a review")
    }

    const CLUSTER: &str = "scope: cluster\nrules: [{name: grpc-ports, ports: {}}]\n";

    #[test]
    fn enable_answers_with_a_base64_json_patch_that_applies() {
        let r = run(CLUSTER, &request("CREATE", grpc_object()));
        let resp = &r.response.response;
        assert_eq!(resp.uid, "uid-1");
        assert!(resp.allowed);
        assert_eq!(resp.patch_type.as_deref(), Some("JSONPatch"));
        assert_eq!(r.outcome, Outcome::Patched);
        // Wire form: a base64 string, as the API server's []byte.
        let wire = serde_json::to_value(&r.response).unwrap();
        assert!(wire["response"]["patch"].is_string());
        assert_eq!(wire["apiVersion"], "admission.k8s.io/v1");
        let patch = resp.decoded_patch().expect("patch").expect("decodes");
        let mut obj = grpc_object();
        json_patch::patch(&mut obj, &patch.0).expect("applies");
        assert_eq!(
            obj["metadata"]["annotations"]["service.cilium.io/lb-l7"],
            "enabled"
        );
        assert_eq!(resp.audit_annotations["decision"], "enable");
    }

    #[test]
    fn update_of_an_already_enabled_service_is_unchanged() {
        let mut obj = grpc_object();
        obj["metadata"]["annotations"] = json!({"service.cilium.io/lb-l7": "enabled"});
        let r = run(CLUSTER, &request("UPDATE", obj));
        assert_eq!(r.outcome, Outcome::Unchanged);
        assert!(r.response.response.patch.is_none());
        assert_eq!(r.decision.unwrap().kind, DecisionKind::AlreadyEnabled);
    }

    #[test]
    fn dry_run_mode_never_patches_and_says_what_it_would_do() {
        let r = run(
            "scope: cluster\nmode: dry-run\nrules: [{name: grpc-ports, ports: {}}]\n",
            &request("CREATE", grpc_object()),
        );
        let resp = &r.response.response;
        assert!(resp.patch.is_none() && resp.patch_type.is_none());
        assert_eq!(r.outcome, Outcome::DryRun);
        assert_eq!(
            resp.warnings,
            [
                "lb-l7-webhook: dry-run: would enable L7 load balancing (service.cilium.io/lb-l7=enabled): port grpc (50051/TCP) matches rule 'grpc-ports'"
            ]
        );
    }

    #[test]
    fn pitfall_warnings_reach_the_user() {
        let mut obj = grpc_object();
        obj["spec"]["sessionAffinity"] = json!("ClientIP");
        let r = run(CLUSTER, &request("CREATE", obj));
        let w = &r.response.response.warnings;
        assert_eq!(w.len(), 1);
        assert!(
            w[0].starts_with("lb-l7-webhook: sessionAffinity ClientIP"),
            "{w:?}"
        );
        assert!(r.response.response.patch.is_some());
    }

    #[test]
    fn excluded_namespace_and_opt_out_are_unchanged() {
        let mut body = request("CREATE", grpc_object());
        body["request"]["namespace"] = json!("kube-system");
        let r = run(CLUSTER, &body);
        assert_eq!(r.decision.unwrap().kind, DecisionKind::ExcludedNamespace);
        assert!(r.response.response.patch.is_none());
        let mut obj = grpc_object();
        obj["metadata"]["labels"] = json!({"lb-l7-webhook/enabled": "false"});
        let r = run(CLUSTER, &request("CREATE", obj));
        assert_eq!(r.decision.unwrap().kind, DecisionKind::OptedOut);
    }

    #[test]
    fn namespace_comes_from_the_object_when_the_request_has_none() {
        let mut body = request("CREATE", grpc_object());
        body["request"]["namespace"] = Value::Null;
        body["request"]["object"]["metadata"]["namespace"] = json!("kube-system");
        let r = run(CLUSTER, &body);
        assert_eq!(r.namespace, "kube-system");
        assert_eq!(r.decision.unwrap().kind, DecisionKind::ExcludedNamespace);
    }

    #[test]
    fn other_kinds_operations_and_subresources_are_allowed_unchanged_with_a_warning() {
        let mut pod = request("CREATE", json!({"metadata": {"name": "p"}}));
        pod["request"]["kind"] = json!({"group": "", "version": "v1", "kind": "Pod"});
        let mut status = request("UPDATE", grpc_object());
        status["request"]["subResource"] = json!("status");
        let delete = request("DELETE", Value::Null);
        for body in [pod, status, delete] {
            let r = run(CLUSTER, &body);
            let resp = &r.response.response;
            assert_eq!(resp.uid, "uid-1");
            assert!(resp.allowed && resp.patch.is_none());
            assert_eq!(resp.warnings.len(), 1, "{:?}", resp.warnings);
            assert_eq!(r.outcome, Outcome::Skipped);
        }
    }

    #[test]
    fn invalid_objects_fail_open_with_the_uid() {
        let cases = [
            json!({"metadata": {"name": 42}}),
            json!({"metadata": {"name": "x"}, "spec": {"ports": "grpc"}}),
            json!({"kind": "Service"}),
            json!("a string"),
            Value::Null,
        ];
        for obj in cases {
            let r = run(CLUSTER, &request("CREATE", obj.clone()));
            let resp = &r.response.response;
            assert_eq!(resp.uid, "uid-1", "{obj}");
            assert!(resp.allowed && resp.patch.is_none(), "{obj}");
            assert_eq!(r.outcome, Outcome::Undecodable, "{obj}");
            assert!(
                resp.warnings[0].contains("allowed unchanged"),
                "{obj}: {:?}",
                resp.warnings
            );
        }
        // A request whose fields have the wrong types still echoes its uid.
        let mut body = request("CREATE", grpc_object());
        body["request"]["kind"] = json!("Service");
        let r = run(CLUSTER, &body);
        assert_eq!(r.response.response.uid, "uid-1");
        assert_eq!(r.outcome, Outcome::Undecodable);
    }

    #[test]
    fn bodies_that_are_not_admission_reviews_are_bad_requests() {
        let p = Policy::default().compile();
        let cases: Vec<Vec<u8>> = vec![
            b"".to_vec(),
            b"not json".to_vec(),
            b"[]".to_vec(),
            br#"{"kind":"AdmissionReview","apiVersion":"admission.k8s.io/v1beta1","request":{"uid":"x"}}"#.to_vec(),
            br#"{"kind":"AdmissionReview","apiVersion":"admission.k8s.io/v1"}"#.to_vec(),
            br#"{"kind":"AdmissionReview","apiVersion":"admission.k8s.io/v1","request":{"uid":7}}"#.to_vec(),
            br#"{"kind":"AdmissionReview","apiVersion":"admission.k8s.io/v1","request":{"uid":""}}"#.to_vec(),
            br#"{"kind":"AdmissionReview","apiVersion":"admission.k8s.io/v1","request":{"uid":"a","uid":"b"}}"#.to_vec(),
            vec![0xff, 0xfe, b'{'],
        ];
        for body in cases {
            assert!(
                review(&p, &body).is_err(),
                "{}",
                String::from_utf8_lossy(&body)
            );
        }
    }

    #[test]
    fn fixture_in_tests_data_is_patched() {
        let body = include_bytes!("../../../tests/data/reviews/create-grpc-service.json");
        let r = review(&Policy::default().compile(), body).expect("review");
        assert_eq!(r.outcome, Outcome::Patched);
        assert_eq!(
            r.response.response.uid,
            "705ab4f5-6393-11e8-b7cc-42010a800002"
        );
    }

    #[test]
    fn the_one_pass_path_answers_exactly_as_the_step_by_step_path() {
        let p =
            Policy::from_yaml("scope: cluster\nrules: [{name: grpc-ports, ports: {}}]\n").unwrap();
        let p = p.compile();
        let grpc = grpc_object();
        let mut bodies: Vec<Vec<u8>> = vec![
            include_bytes!("../../../tests/data/reviews/create-grpc-service.json").to_vec(),
            include_bytes!("../../../tests/data/reviews/bench-service.json").to_vec(),
        ];
        for v in [
            request("CREATE", grpc.clone()),
            request("UPDATE", grpc.clone()),
            request("DELETE", grpc.clone()),
            request("CREATE", json!({"metadata": {}})),
            request("CREATE", json!(null)),
            request(
                "CREATE",
                json!({"metadata": {"name": "x"}, "spec": {"ports": "no"}}),
            ),
            {
                let mut r = request("CREATE", grpc.clone());
                r["request"]["kind"]["kind"] = json!("Pod");
                r
            },
            {
                let mut r = request("CREATE", grpc.clone());
                r["request"]["subResource"] = json!("status");
                r
            },
            {
                let mut r = request("CREATE", grpc.clone());
                r["request"]["operation"] = json!(7);
                r
            },
            {
                let mut r = request("CREATE", grpc.clone());
                r["request"]["uid"] = json!("");
                r
            },
        ] {
            bodies.push(serde_json::to_vec(&v).unwrap());
        }
        for body in &bodies {
            let fast = review(&p, body).map(|r| {
                (
                    r.response,
                    r.outcome,
                    r.uid,
                    r.name,
                    r.namespace,
                    r.operation,
                )
            });
            let slow = review_step_by_step(&p, body).map(|r| {
                (
                    r.response,
                    r.outcome,
                    r.uid,
                    r.name,
                    r.namespace,
                    r.operation,
                )
            });
            assert_eq!(fast, slow, "{}", String::from_utf8_lossy(body));
        }
    }
}
