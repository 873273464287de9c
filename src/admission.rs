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
use crate::policy::{CompiledPolicy, Decision, DecisionKind, Mode, NamespaceInfo};

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

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct RequestIn<'a> {
    kind: Gvk,
    #[serde(default)]
    sub_resource: Option<String>,
    #[serde(default)]
    name: Option<String>,
    #[serde(default)]
    namespace: Option<String>,
    operation: String,
    #[serde(default, borrow)]
    object: Option<&'a RawValue>,
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

/// Answers one AdmissionReview. `Err` only when the body is not an AdmissionReview with a uid.
pub fn review(policy: &CompiledPolicy, body: &[u8]) -> Result<Reviewed, BadRequest> {
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

    let mut out = Reviewed {
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
    };
    let finish = |mut out: Reviewed, outcome, response: AdmissionResponse| {
        out.outcome = outcome;
        out.response.response = response;
        out
    };
    let allow = AdmissionResponse::allow(out.uid.clone());

    let req: RequestIn = match serde_json::from_str(raw.get()) {
        Ok(r) => r,
        Err(e) => {
            return Ok(finish(
                out,
                Outcome::Undecodable,
                allow.warn(format!(
                    "request could not be decoded ({e}); Service allowed unchanged"
                )),
            ));
        }
    };
    out.namespace = req.namespace.clone().unwrap_or_default();
    out.name = req.name.clone().unwrap_or_default();
    out.operation = req.operation.clone();

    if !(req.kind.group.is_empty() && req.kind.version == "v1" && req.kind.kind == "Service") {
        let k = format!("{}/{} {}", req.kind.group, req.kind.version, req.kind.kind);
        return Ok(finish(
            out,
            Outcome::Skipped,
            allow.warn(format!(
                "only core/v1 Services are handled, got {k}; allowed unchanged"
            )),
        ));
    }
    if let Some(sub) = req.sub_resource.as_deref().filter(|s| !s.is_empty()) {
        return Ok(finish(
            out,
            Outcome::Skipped,
            allow.warn(format!(
                "subresource {sub:?} is not handled; allowed unchanged"
            )),
        ));
    }
    if req.operation != "CREATE" && req.operation != "UPDATE" {
        let op = req.operation.clone();
        return Ok(finish(
            out,
            Outcome::Skipped,
            allow.warn(format!(
                "operation {op} is not handled (only CREATE and UPDATE); allowed unchanged"
            )),
        ));
    }
    let svc: Service = match req.object.map(|o| serde_json::from_str::<Service>(o.get())) {
        Some(Ok(svc)) if svc.metadata != Default::default() => svc,
        Some(Ok(_)) => {
            return Ok(finish(
                out,
                Outcome::Undecodable,
                allow.warn("object has no metadata; Service allowed unchanged"),
            ));
        }
        Some(Err(e)) => {
            return Ok(finish(
                out,
                Outcome::Undecodable,
                allow.warn(format!(
                    "object is not a valid Service ({e}); allowed unchanged"
                )),
            ));
        }
        None => {
            return Ok(finish(
                out,
                Outcome::Undecodable,
                allow.warn("request has no object; Service allowed unchanged"),
            ));
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

    let decision = policy.evaluate(&svc, NamespaceInfo::new(&out.namespace, None));
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
    Ok(finish(out, outcome, response))
}
