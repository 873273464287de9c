//! AdmissionReview in, AdmissionReview out. Pure: bytes and a policy in, a response value out.
//!
//! Wire types are our own, on purpose, for two reasons kube-core's typed `AdmissionReview<T>` cannot meet:
//! - the uid must be echoed even when the rest of the request (the object, the kind) is malformed;
//! - `response.patch` must be a base64 string, as the API server's own types write `[]byte`; kube-core writes an
//!   array of numbers (kube-rs issue 1781).
//!
//! One decoder per field, and one pass over the body for a well-formed review: the whole body is checked to be
//! UTF-8, then the envelope is read with the request's fields (the object included) decoded in place. The object
//! is read into only what the policy and the pitfalls look at (metadata name, generateName, namespace, labels,
//! annotations; spec type, clusterIP, ports, sessionAffinity): `managedFields`, `status` and every other field are
//! skipped without building values, and of the labels and annotations only the keys the policy reads are copied
//! (kubectl's `last-applied-configuration`, a copy of the whole object, is not).
//!
//! When that pass fails (a field of the wrong type, a field given twice, an object that is not a Service), the body
//! is read once more with the request's fields captured as raw JSON text (borrowed from the body, no copy), and
//! each is decoded on its own with the same decoders, so that a wrong type in one makes the review `undecodable`
//! (allowed unchanged, uid echoed, a warning saying which field) instead of a 400. Both reads end in the same
//! [`answer`]; a test checks that they answer alike on every review of the corpus.
//!
//! The webhook never blocks a write: every response with a uid says `allowed: true`.

use std::borrow::Cow;
use std::collections::BTreeMap;
use std::fmt;

use base64::Engine as _;
use k8s_openapi::api::core::v1::{Service, ServicePort, ServiceSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use serde::de::{self, Deserializer, IgnoredAny, MapAccess, Visitor};
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;

use crate::patch::patch_bytes;
use crate::policy::{CompiledPolicy, Decision, DecisionKind, Mode, NamespaceContext};
use crate::text::Text;

/// The only AdmissionReview version the webhook registers for.
pub const API_VERSION: &str = "admission.k8s.io/v1";
pub const KIND: &str = "AdmissionReview";
/// Prefix of every warning, so a user who reads `Warning: ...` from kubectl knows who said it. After it comes the
/// object the warning is about (`shop/orders: `), so that in a multi-document apply the user knows which one.
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

    /// Adds `lb-l7-webhook: <namespace>/<name>: <message>` (without the object when it is not known).
    fn warn(&mut self, subject: &Subject<'_>, message: impl fmt::Display) {
        self.warnings
            .push(format!("{WARNING_PREFIX}{subject}{message}"));
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

/// The object a warning is about: `namespace/name: `, `name: `, or nothing when neither is known.
struct Subject<'a> {
    namespace: &'a str,
    name: &'a str,
}

impl fmt::Display for Subject<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match (self.namespace, self.name) {
            ("", "") => Ok(()),
            ("", name) => write!(f, "{name}: "),
            (ns, "") => write!(f, "{ns}/(no name): "),
            (ns, name) => write!(f, "{ns}/{name}: "),
        }
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

/// The AdmissionReview around the request: `R` is [`RequestTyped`] for the one-pass read, [`RequestIn`] for the
/// careful read.
#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Envelope<'a, R> {
    #[serde(default, borrow)]
    api_version: Option<Cow<'a, str>>,
    #[serde(default, borrow)]
    kind: Option<Cow<'a, str>>,
    #[serde(default)]
    request: Option<R>,
}

/// The request's fields the webhook reads, each as raw JSON text borrowed from the body (`None` when absent or
/// null), decoded one by one afterwards so that a wrong type in one does not hide the uid.
#[derive(Default)]
struct RequestIn<'a> {
    uid: Option<&'a RawValue>,
    kind: Option<&'a RawValue>,
    sub_resource: Option<&'a RawValue>,
    name: Option<&'a RawValue>,
    namespace: Option<&'a RawValue>,
    operation: Option<&'a RawValue>,
    object: Option<&'a RawValue>,
    /// The first field other than `uid` given twice (a duplicate uid is a bad request).
    duplicate: Option<&'static str>,
}

impl<'de: 'a, 'a> Deserialize<'de> for RequestIn<'a> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct V<'a>(std::marker::PhantomData<&'a ()>);
        impl<'de: 'a, 'a> Visitor<'de> for V<'a> {
            type Value = RequestIn<'a>;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("an AdmissionRequest object")
            }
            fn visit_map<M: MapAccess<'de>>(self, mut map: M) -> Result<Self::Value, M::Error> {
                let mut r = RequestIn::default();
                while let Some(key) = map.next_key::<Text<'de>>()? {
                    let (slot, field) = match key.0.as_ref() {
                        "uid" => {
                            if r.uid.is_some() {
                                return Err(de::Error::duplicate_field("uid"));
                            }
                            r.uid = Some(map.next_value::<&RawValue>()?);
                            continue;
                        }
                        "kind" => (&mut r.kind, "kind"),
                        "subResource" => (&mut r.sub_resource, "subResource"),
                        "name" => (&mut r.name, "name"),
                        "namespace" => (&mut r.namespace, "namespace"),
                        "operation" => (&mut r.operation, "operation"),
                        "object" => (&mut r.object, "object"),
                        _ => {
                            map.next_value::<IgnoredAny>()?;
                            continue;
                        }
                    };
                    let value = map.next_value::<&RawValue>()?;
                    if slot.is_some() {
                        r.duplicate.get_or_insert(field);
                    }
                    // JSON null reads as absent, as `Option` would.
                    *slot = (value.get() != "null").then_some(value);
                }
                Ok(r)
            }
        }
        deserializer.deserialize_map(V(std::marker::PhantomData))
    }
}

/// The request's fields the webhook reads, decoded in the envelope's pass. Any field given twice fails the pass,
/// so that the careful read ([`RequestIn`]) names it.
#[derive(Default)]
struct RequestTyped<'a> {
    uid: Option<Text<'a>>,
    kind: Option<Gvk<'a>>,
    sub_resource: Option<Text<'a>>,
    name: Option<Text<'a>>,
    namespace: Option<Text<'a>>,
    operation: Option<Text<'a>>,
    object: Option<ServiceIn<'a>>,
}

impl<'de: 'a, 'a> Deserialize<'de> for RequestTyped<'a> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct V<'a>(std::marker::PhantomData<&'a ()>);
        /// Decodes a field once: a second occurrence is an error.
        fn once<'de, M: MapAccess<'de>, T: Deserialize<'de>>(
            map: &mut M,
            seen: &mut bool,
            name: &'static str,
        ) -> Result<Option<T>, M::Error> {
            if std::mem::replace(seen, true) {
                return Err(de::Error::duplicate_field(name));
            }
            map.next_value()
        }
        impl<'de: 'a, 'a> Visitor<'de> for V<'a> {
            type Value = RequestTyped<'a>;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("an AdmissionRequest object")
            }
            fn visit_map<M: MapAccess<'de>>(self, mut map: M) -> Result<Self::Value, M::Error> {
                let mut r = RequestTyped::default();
                let mut seen = [false; 7];
                while let Some(key) = map.next_key::<Text<'de>>()? {
                    match key.0.as_ref() {
                        "uid" => r.uid = once(&mut map, &mut seen[0], "uid")?,
                        "kind" => r.kind = once(&mut map, &mut seen[1], "kind")?,
                        "subResource" => {
                            r.sub_resource = once(&mut map, &mut seen[2], "subResource")?
                        }
                        "name" => r.name = once(&mut map, &mut seen[3], "name")?,
                        "namespace" => r.namespace = once(&mut map, &mut seen[4], "namespace")?,
                        "operation" => r.operation = once(&mut map, &mut seen[5], "operation")?,
                        "object" => r.object = once(&mut map, &mut seen[6], "object")?,
                        _ => {
                            map.next_value::<IgnoredAny>()?;
                        }
                    }
                }
                Ok(r)
            }
        }
        deserializer.deserialize_map(V(std::marker::PhantomData))
    }
}

#[derive(Deserialize)]
struct Gvk<'a> {
    #[serde(default, borrow)]
    group: Cow<'a, str>,
    #[serde(default, borrow)]
    version: Cow<'a, str>,
    #[serde(default, borrow)]
    kind: Cow<'a, str>,
}

/// Decodes one captured request field; the error names the field.
fn field<'a, T: Deserialize<'a>>(
    raw: Option<&'a RawValue>,
    name: &str,
) -> Result<Option<T>, String> {
    raw.map(|r| serde_json::from_str(r.get()))
        .transpose()
        .map_err(|e| format!("request.{name}: {e}"))
}

/// Answers one AdmissionReview. `Err` only when the body is not an AdmissionReview with a uid.
pub fn review(policy: &CompiledPolicy, body: &[u8]) -> Result<Reviewed, BadRequest> {
    // Fields the webhook does not read are skipped without looking at their bytes, so the whole body is checked
    // to be UTF-8 first: a body that is not UTF-8 anywhere is not JSON.
    let text = std::str::from_utf8(body).map_err(|e| {
        BadRequest(format!(
            "body is not a JSON AdmissionReview: not UTF-8 ({e})"
        ))
    })?;
    match review_in_one_pass(policy, text) {
        Some(reviewed) => Ok(reviewed),
        None => review_captured(policy, text),
    }
}

/// The careful read alone (what [`review`] does when the one-pass read fails): the request's fields captured as
/// raw text, then decoded one by one. Public for the tests and the fuzz target, which check that both reads
/// answer alike.
#[doc(hidden)]
pub fn review_captured(policy: &CompiledPolicy, text: &str) -> Result<Reviewed, BadRequest> {
    let envelope: Envelope<RequestIn> = serde_json::from_str(text)
        .map_err(|e| BadRequest(format!("body is not a JSON AdmissionReview: {e}")))?;
    let api_version = envelope.api_version.as_deref().unwrap_or("");
    let kind = envelope.kind.as_deref().unwrap_or("");
    if kind != KIND || api_version != API_VERSION {
        return Err(BadRequest(format!(
            "expected kind {KIND} apiVersion {API_VERSION}, got kind {kind:?} apiVersion {api_version:?}"
        )));
    }
    let req = envelope
        .request
        .ok_or_else(|| BadRequest("AdmissionReview has no request".into()))?;
    let uid: String = match req.uid.map(|u| serde_json::from_str::<String>(u.get())) {
        Some(Ok(uid)) => uid,
        Some(Err(e)) => {
            return Err(BadRequest(format!(
                "request.uid is missing or not a string: {e}"
            )));
        }
        None => return Err(BadRequest("request.uid is missing or not a string".into())),
    };
    if uid.is_empty() {
        return Err(BadRequest("request.uid is empty".into()));
    }
    Ok(answer_captured(policy, uid, &req))
}

/// The one-pass read: `None` when anything is off (the careful read then answers, naming what is wrong).
fn review_in_one_pass(policy: &CompiledPolicy, text: &str) -> Option<Reviewed> {
    let envelope: Envelope<RequestTyped> = serde_json::from_str(text).ok()?;
    if envelope.kind.as_deref() != Some(KIND)
        || envelope.api_version.as_deref() != Some(API_VERSION)
    {
        return None;
    }
    let req = envelope.request?;
    let uid = req.uid.filter(|u| !u.0.is_empty())?.0.into_owned();
    let fields = Fields {
        kind: req.kind?,
        sub_resource: req.sub_resource.map(|t| t.0),
        operation: req.operation?.0,
    };
    let names = (
        req.name.map(|t| t.0.into_owned()).unwrap_or_default(),
        req.namespace.map(|t| t.0.into_owned()).unwrap_or_default(),
    );
    let object = req.object;
    Some(answer(policy, uid, names, Ok(fields), || object.map(Ok)))
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

    /// Ends the review with `outcome` and, when given, one warning.
    fn finish(mut self, outcome: Outcome, warning: Option<&dyn fmt::Display>) -> Self {
        if let Some(w) = warning {
            let subject = Subject {
                namespace: &self.namespace,
                name: &self.name,
            };
            self.response.response.warn(&subject, w);
        }
        self.outcome = outcome;
        self
    }
}

/// The request's fields that say whether the review is handled.
struct Fields<'a> {
    kind: Gvk<'a>,
    sub_resource: Option<Cow<'a, str>>,
    operation: Cow<'a, str>,
}

/// The careful read's answer: each captured field decoded on its own, so an error names the field.
fn answer_captured(policy: &CompiledPolicy, uid: String, req: &RequestIn<'_>) -> Reviewed {
    // Name and namespace first, so that every warning can say which object it is about.
    let name = field::<String>(req.name, "name");
    let namespace = field::<String>(req.namespace, "namespace");
    let names = (
        name.as_ref().ok().cloned().flatten().unwrap_or_default(),
        namespace
            .as_ref()
            .ok()
            .cloned()
            .flatten()
            .unwrap_or_default(),
    );
    let fields = (|| {
        if let Some(dup) = req.duplicate {
            return Err(format!("duplicate field `{dup}`"));
        }
        let kind = field::<Gvk>(req.kind, "kind")?.ok_or("missing field `kind`")?;
        let sub_resource = field::<Cow<str>>(req.sub_resource, "subResource")?;
        name?;
        namespace?;
        let operation =
            field::<Cow<str>>(req.operation, "operation")?.ok_or("missing field `operation`")?;
        Ok(Fields {
            kind,
            sub_resource,
            operation,
        })
    })();
    answer(policy, uid, names, fields, || {
        req.object
            .map(|o| serde_json::from_str::<ServiceIn>(o.get()).map_err(|e| e.to_string()))
    })
}

/// Everything after the uid is read: which requests are handled, the object, the decision, the patch. `names`
/// are the request's name and namespace (empty when absent); `object` is asked for only when the request is a
/// CREATE or UPDATE of a Service.
fn answer<'o>(
    policy: &CompiledPolicy,
    uid: String,
    names: (String, String),
    fields: Result<Fields<'_>, String>,
    object: impl FnOnce() -> Option<Result<ServiceIn<'o>, String>>,
) -> Reviewed {
    let mut out = Reviewed::start(uid);
    (out.name, out.namespace) = names;
    let Fields {
        kind,
        sub_resource,
        operation,
    } = match fields {
        Ok(f) => f,
        Err(e) => {
            let w = format!("request could not be decoded ({e}); Service allowed unchanged");
            return out.finish(Outcome::Undecodable, Some(&w));
        }
    };
    out.operation = operation.into_owned();

    if !(kind.group.is_empty() && kind.version == "v1" && kind.kind == "Service") {
        let w = format!(
            "only core/v1 Services are handled, got {}/{} {}; allowed unchanged",
            kind.group, kind.version, kind.kind
        );
        return out.finish(Outcome::Skipped, Some(&w));
    }
    if let Some(sub) = sub_resource.as_deref().filter(|s| !s.is_empty()) {
        let w = format!("subresource {sub:?} is not handled; allowed unchanged");
        return out.finish(Outcome::Skipped, Some(&w));
    }
    if out.operation != "CREATE" && out.operation != "UPDATE" {
        let w = format!(
            "operation {} is not handled (only CREATE and UPDATE); allowed unchanged",
            out.operation
        );
        return out.finish(Outcome::Skipped, Some(&w));
    }
    let svc = match object().map(|o| o.map(|s| s.into_service(policy))) {
        Some(Ok(Some(svc))) => svc,
        Some(Ok(None)) => {
            return out.finish(
                Outcome::Undecodable,
                Some(&"object has no metadata; Service allowed unchanged"),
            );
        }
        Some(Err(e)) => {
            let w = format!("object is not a valid Service ({e}); allowed unchanged");
            return out.finish(Outcome::Undecodable, Some(&w));
        }
        None => {
            return out.finish(
                Outcome::Undecodable,
                Some(&"request has no object; Service allowed unchanged"),
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
    let mut response = AdmissionResponse::allow(std::mem::take(&mut out.response.response.uid));
    let subject = Subject {
        namespace: &out.namespace,
        name: &out.name,
    };
    for w in &decision.warnings {
        response.warn(&subject, w);
    }
    response
        .audit_annotations
        .insert("decision".into(), decision.kind.as_str().into());
    let mut outcome = Outcome::Unchanged;
    if decision.kind == DecisionKind::Enable {
        if policy.policy.mode == Mode::DryRun {
            outcome = Outcome::DryRun;
            response.warn(
                &subject,
                format_args!(
                    "dry-run: would enable L7 load balancing ({}={}): {}",
                    policy.policy.annotation_key,
                    crate::policy::ENABLED_VALUE,
                    decision.reason
                ),
            );
        } else if let Some(bytes) = patch_bytes(&svc, &decision, &policy.policy) {
            match bytes {
                Ok(bytes) => {
                    response.patch = Some(base64::engine::general_purpose::STANDARD.encode(bytes));
                    response.patch_type = Some("JSONPatch".into());
                    outcome = Outcome::Patched;
                }
                Err(e) => {
                    response.warn(
                        &subject,
                        format_args!("patch could not be encoded ({e}); allowed unchanged"),
                    );
                }
            }
        }
    }
    out.response.response = response;
    out.decision = Some(decision);
    out.outcome = outcome;
    out
}

/// The object as read: `None` when it has no metadata. [`ServiceIn::into_service`] makes it a [`Service`] holding
/// only what the policy, the pitfalls and the patch read. Decodes like k8s-openapi's own `Service` for those fields
/// (`apiVersion` and `kind`, when given, must be `v1` and `Service`; a field given twice keeps its last value; null
/// reads as absent) and skips every other field, `managedFields` and `status` included, without building values.
struct ServiceIn<'de>(Option<ServiceRead<'de>>);

/// A Service's fields as read, labels and annotations still borrowed from the body.
struct ServiceRead<'de> {
    service: Service,
    labels: Option<Pairs<'de>>,
    annotations: Option<Pairs<'de>>,
}

impl ServiceIn<'_> {
    /// The [`Service`] the policy evaluates, with only the labels and annotations it reads
    /// ([`CompiledPolicy::reads_label`], [`CompiledPolicy::reads_annotation`]): the others (kubectl's
    /// `last-applied-configuration`, a whole copy of the object, among them) are never copied. Whether the Service
    /// has labels and annotations at all is kept, since the patch depends on it.
    fn into_service(self, policy: &CompiledPolicy) -> Option<Service> {
        let ServiceRead {
            mut service,
            labels,
            annotations,
        } = self.0?;
        service.metadata.labels = labels.map(|l| l.keep(|k| policy.reads_label(k)));
        service.metadata.annotations = annotations.map(|a| a.keep(|k| policy.reads_annotation(k)));
        Some(service)
    }
}

/// A map of strings as read (labels, annotations): its entries in order, keys borrowed from the body when they
/// hold no escapes, values as their raw JSON text, so that a value nobody reads (kubectl's
/// `last-applied-configuration`, an escaped copy of the whole object) is never unescaped or copied. Accepts what a
/// `BTreeMap<String, String>` accepts: every value must be a string, and one with `\u` escapes is decoded at once
/// so that an invalid escape fails here, as it would there. A key given twice keeps its last value.
struct Pairs<'de>(Vec<(Text<'de>, &'de RawValue)>);

impl Pairs<'_> {
    fn keep(self, wanted: impl Fn(&str) -> bool) -> BTreeMap<String, String> {
        self.0
            .into_iter()
            .filter(|(k, _)| wanted(&k.0))
            .map(|(k, v)| (k.0.into_owned(), string_of(v)))
            .collect()
    }
}

/// The string a raw JSON string value holds (checked by [`Pairs`]'s decoder to be a valid string).
fn string_of(raw: &RawValue) -> String {
    let text = raw.get();
    match text.strip_prefix('"').and_then(|t| t.strip_suffix('"')) {
        // No backslash: the text between the quotes is the string itself.
        Some(inner) if !inner.contains('\\') => inner.to_owned(),
        _ => serde_json::from_str(text).unwrap_or_default(),
    }
}

/// Checks that a raw value is a JSON string that decodes as one, with serde_json's error when it does not.
fn check_string<E: de::Error>(raw: &RawValue) -> Result<(), E> {
    let text = raw.get();
    let unexpected = match text.as_bytes().first() {
        Some(b'"') => {
            // serde_json checked every escape's form while reading the value; only what a `\u` escape stands
            // for (a lone surrogate) is left to check.
            if text.contains('\\')
                && text.contains("\\u")
                && let Err(e) = serde_json::from_str::<Cow<str>>(text)
            {
                let at = format!(" at line {} column {}", e.line(), e.column());
                let message = e.to_string();
                return Err(E::custom(message.strip_suffix(&at).unwrap_or(&message)));
            }
            return Ok(());
        }
        Some(b'{') => de::Unexpected::Map,
        Some(b'[') => de::Unexpected::Seq,
        Some(b't') => de::Unexpected::Bool(true),
        Some(b'f') => de::Unexpected::Bool(false),
        Some(b'n') => de::Unexpected::Unit,
        _ => match (
            text.parse::<u64>(),
            text.parse::<i64>(),
            text.parse::<f64>(),
        ) {
            (Ok(u), _, _) => de::Unexpected::Unsigned(u),
            (_, Ok(i), _) => de::Unexpected::Signed(i),
            (_, _, Ok(f)) => de::Unexpected::Float(f),
            _ => de::Unexpected::Other("a number"),
        },
    };
    Err(E::invalid_type(unexpected, &"a string"))
}

impl<'de> Deserialize<'de> for Pairs<'de> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = Pairs<'de>;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a map")
            }
            fn visit_map<M: MapAccess<'de>>(self, mut map: M) -> Result<Pairs<'de>, M::Error> {
                let mut pairs = Vec::with_capacity(map.size_hint().unwrap_or(8).min(64));
                while let Some(key) = map.next_key::<Text<'de>>()? {
                    let value: &RawValue = map.next_value()?;
                    check_string(value)?;
                    pairs.push((key, value));
                }
                Ok(Pairs(pairs))
            }
        }
        deserializer.deserialize_map(V)
    }
}

impl<'de> Deserialize<'de> for ServiceIn<'de> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = ServiceIn<'de>;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a Service")
            }
            fn visit_map<M: MapAccess<'de>>(self, mut map: M) -> Result<ServiceIn<'de>, M::Error> {
                let mut metadata: Option<MetaIn> = None;
                let mut spec: Option<SpecIn> = None;
                while let Some(key) = map.next_key::<Text<'de>>()? {
                    match key.0.as_ref() {
                        "apiVersion" => expect_str(&mut map, "v1")?,
                        "kind" => expect_str(&mut map, "Service")?,
                        "metadata" => metadata = map.next_value()?,
                        "spec" => spec = map.next_value()?,
                        _ => {
                            map.next_value::<IgnoredAny>()?;
                        }
                    }
                }
                let metadata = metadata.unwrap_or_default();
                if !metadata.present {
                    return Ok(ServiceIn(None));
                }
                Ok(ServiceIn(Some(ServiceRead {
                    service: Service {
                        metadata: metadata.meta,
                        spec: spec.map(|s| s.0),
                        status: None,
                    },
                    labels: metadata.labels,
                    annotations: metadata.annotations,
                })))
            }
        }
        deserializer.deserialize_map(V)
    }
}

fn expect_str<'de, M: MapAccess<'de>>(map: &mut M, expected: &'static str) -> Result<(), M::Error> {
    let Text(value) = map.next_value()?;
    if value != expected {
        return Err(de::Error::invalid_value(
            de::Unexpected::Str(&value),
            &expected,
        ));
    }
    Ok(())
}

/// ObjectMeta's fields the webhook reads, labels and annotations as read; `present` is false when every field of
/// ObjectMeta is absent or null (what k8s-openapi decodes to `ObjectMeta::default()`).
#[derive(Default)]
struct MetaIn<'de> {
    meta: ObjectMeta,
    labels: Option<Pairs<'de>>,
    annotations: Option<Pairs<'de>>,
    present: bool,
}

/// ObjectMeta's other fields: skipped, but a non-null value makes the metadata present.
const OTHER_META_FIELDS: &[&str] = &[
    "creationTimestamp",
    "deletionGracePeriodSeconds",
    "deletionTimestamp",
    "finalizers",
    "generation",
    "managedFields",
    "ownerReferences",
    "resourceVersion",
    "selfLink",
    "uid",
];

impl<'de> Deserialize<'de> for MetaIn<'de> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = MetaIn<'de>;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("ObjectMeta")
            }
            fn visit_map<M: MapAccess<'de>>(self, mut map: M) -> Result<MetaIn<'de>, M::Error> {
                let mut m = ObjectMeta::default();
                let (mut labels, mut annotations) = (None, None);
                let mut other = false;
                while let Some(key) = map.next_key::<Text<'de>>()? {
                    match key.0.as_ref() {
                        "name" => m.name = map.next_value()?,
                        "generateName" => m.generate_name = map.next_value()?,
                        "namespace" => m.namespace = map.next_value()?,
                        "labels" => labels = map.next_value()?,
                        "annotations" => annotations = map.next_value()?,
                        k if OTHER_META_FIELDS.contains(&k) => {
                            if map.next_value::<Option<IgnoredAny>>()?.is_some() {
                                other = true;
                            }
                        }
                        _ => {
                            map.next_value::<IgnoredAny>()?;
                        }
                    }
                }
                let present = other
                    || labels.is_some()
                    || annotations.is_some()
                    || m != ObjectMeta::default();
                Ok(MetaIn {
                    meta: m,
                    labels,
                    annotations,
                    present,
                })
            }
        }
        deserializer.deserialize_map(V)
    }
}

/// ServiceSpec's fields the webhook reads; the others are skipped.
struct SpecIn(ServiceSpec);

impl<'de> Deserialize<'de> for SpecIn {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = SpecIn;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("ServiceSpec")
            }
            fn visit_map<M: MapAccess<'de>>(self, mut map: M) -> Result<SpecIn, M::Error> {
                let mut s = ServiceSpec::default();
                while let Some(key) = map.next_key::<Text<'de>>()? {
                    match key.0.as_ref() {
                        "type" => s.type_ = map.next_value()?,
                        "clusterIP" => s.cluster_ip = map.next_value()?,
                        "ports" => s.ports = map.next_value::<Option<Vec<ServicePort>>>()?,
                        "sessionAffinity" => s.session_affinity = map.next_value()?,
                        _ => {
                            map.next_value::<IgnoredAny>()?;
                        }
                    }
                }
                Ok(SpecIn(s))
            }
        }
        deserializer.deserialize_map(V)
    }
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
                "lb-l7-webhook: apps/api: dry-run: would enable L7 load balancing (service.cilium.io/lb-l7=enabled): port grpc (50051/TCP) matches rule 'grpc-ports'"
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
            w[0].starts_with("lb-l7-webhook: apps/api: sessionAffinity ClientIP"),
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
    fn every_warning_names_the_object_it_is_about() {
        let mut obj = grpc_object();
        obj["spec"]["sessionAffinity"] = json!("ClientIP");
        obj["spec"]["ports"] = json!([{"name": "grpc", "port": 50051, "targetPort": 9000}]);
        let r = run(CLUSTER, &request("CREATE", obj));
        let w = &r.response.response.warnings;
        assert_eq!(w.len(), 2, "{w:?}");
        assert!(
            w.iter().all(|w| w.starts_with("lb-l7-webhook: apps/api: ")),
            "{w:?}"
        );
        // Skipped and undecodable reviews name the object too, as far as the request says.
        let r = run(CLUSTER, &request("DELETE", Value::Null));
        assert_eq!(
            r.response.response.warnings,
            [
                "lb-l7-webhook: apps/api: operation DELETE is not handled (only CREATE and UPDATE); allowed unchanged"
            ]
        );
        let mut body = request("CREATE", json!("a string"));
        body["request"]["name"] = Value::Null;
        body["request"]["namespace"] = Value::Null;
        let r = run(CLUSTER, &body);
        assert!(
            r.response.response.warnings[0]
                .starts_with("lb-l7-webhook: object is not a valid Service"),
            "{:?}",
            r.response.response.warnings
        );
        // The name from the object when the request has none (a CREATE with generateName has neither).
        let mut body = request("CREATE", grpc_object());
        body["request"]["name"] = Value::Null;
        body["request"]["object"]["spec"]["sessionAffinity"] = json!("ClientIP");
        let r = run(CLUSTER, &body);
        assert!(
            r.response.response.warnings[0].starts_with("lb-l7-webhook: apps/api: sessionAffinity"),
            "{:?}",
            r.response.response.warnings
        );
    }

    #[test]
    fn a_wrong_type_in_one_request_field_still_echoes_the_uid_and_names_the_field() {
        for (field, value) in [
            ("operation", json!(7)),
            ("kind", json!("Service")),
            ("subResource", json!(["status"])),
            ("name", json!({"a": 1})),
        ] {
            let mut body = request("CREATE", grpc_object());
            body["request"][field] = value;
            let r = run(CLUSTER, &body);
            let resp = &r.response.response;
            assert_eq!(resp.uid, "uid-1", "{field}");
            assert_eq!(r.outcome, Outcome::Undecodable, "{field}");
            assert!(
                resp.warnings[0].contains(&format!("request.{field}: ")),
                "{field}: {:?}",
                resp.warnings
            );
        }
        // A field given twice in the request (other than the uid): undecodable, never a 400.
        let body = serde_json::to_string(&request("CREATE", grpc_object()))
            .unwrap()
            .replacen("\"operation\"", "\"operation\":\"DELETE\",\"operation\"", 1);
        let r = review(&Policy::default().compile(), body.as_bytes()).expect("a review");
        assert_eq!(r.outcome, Outcome::Undecodable);
        assert!(r.response.response.warnings[0].contains("duplicate field `operation`"));
    }

    #[test]
    fn label_and_annotation_maps_are_read_as_a_map_of_strings_would_be() {
        // `Pairs` keeps values as raw text; it must accept and refuse what `BTreeMap<String, String>` does, with
        // the same message (less the position), and give the same strings.
        fn without_position(e: &serde_json::Error) -> String {
            let at = format!(" at line {} column {}", e.line(), e.column());
            let m = e.to_string();
            m.strip_suffix(&at).unwrap_or(&m).to_string()
        }
        let values = [
            r#""plain""#,
            r#""""#,
            r#""with \"quotes\" and \\ and \/ and \n""#,
            r#""\u00e9t\u00e9 \ud83d\ude00""#,
            r#""\\u0041 is not an escape""#,
            r#""\ud800""#,
            r#""\udfff x""#,
            r#""\ud800\u0041""#,
            "1",
            "-1",
            "18446744073709551616",
            "1.5",
            "-0.0",
            "true",
            "false",
            "null",
            "[]",
            r#"["a"]"#,
            "{}",
            r#"{"a": "b"}"#,
        ];
        for v in values {
            let text = format!(r#"{{"k": {v}, "x": "y", "k2": {v}}}"#);
            let expected = serde_json::from_str::<BTreeMap<String, String>>(&text);
            let got = serde_json::from_str::<Pairs>(&text).map(|p| p.keep(|_| true));
            match (&expected, &got) {
                (Ok(e), Ok(g)) => assert_eq!(e, g, "{v}"),
                (Err(e), Err(g)) => assert_eq!(without_position(e), without_position(g), "{v}"),
                _ => panic!("{v}: a map of strings gives {expected:?}, Pairs {got:?}"),
            }
        }
        // A key given twice keeps its last value; keys with escapes are read as keys.
        let p: Pairs = serde_json::from_str(r#"{"k": "1", "\u006b": "2", "a\/b": "3"}"#).unwrap();
        let kept = p.keep(|k| k != "x");
        assert_eq!(kept.get("k").map(String::as_str), Some("2"));
        assert_eq!(kept.get("a/b").map(String::as_str), Some("3"));
        // A number too large for f64 is refused by both, with different words.
        assert!(serde_json::from_str::<Pairs>(r#"{"k": 1e400}"#).is_err());
        assert!(serde_json::from_str::<BTreeMap<String, String>>(r#"{"k": 1e400}"#).is_err());
    }

    #[test]
    fn fields_the_policy_does_not_read_are_skipped_whatever_they_hold() {
        // managedFields, status, the selector and unknown fields: skipped, the Service is still patched.
        let mut obj = grpc_object();
        obj["metadata"]["managedFields"] =
            json!([{"manager": "kubectl", "fieldsV1": {"f:spec": {"f:ports": {}}}}]);
        obj["metadata"]["uid"] = json!("abc");
        obj["spec"]["selector"] = json!({"app": "api"});
        obj["spec"]["clusterIPs"] = json!(["10.0.0.1"]);
        obj["status"] = json!({"loadBalancer": {}});
        obj["extra"] = json!([[[{}]]]);
        let r = run(CLUSTER, &request("CREATE", obj));
        assert_eq!(r.outcome, Outcome::Patched);
        // What the policy reads is checked as k8s-openapi checks it.
        for obj in [
            json!({"apiVersion": "v2", "metadata": {"name": "api"}}),
            json!({"kind": "Pod", "metadata": {"name": "api"}}),
            json!({"metadata": {"name": "api", "labels": {"a": 1}}}),
            json!({"metadata": {"name": "api"}, "spec": {"sessionAffinity": 1}}),
            json!({"metadata": {"name": "api"}, "spec": {"ports": [{"port": "x"}]}}),
        ] {
            let r = run(CLUSTER, &request("CREATE", obj.clone()));
            assert_eq!(r.outcome, Outcome::Undecodable, "{obj}");
            assert!(
                r.response.response.warnings[0].contains("object is not a valid Service"),
                "{obj}: {:?}",
                r.response.response.warnings
            );
        }
        // Metadata holding only fields the policy does not read is still metadata; null or {} is none.
        let r = run(
            CLUSTER,
            &request(
                "CREATE",
                json!({"metadata": {"uid": "u"}, "spec": {"ports": [{"name": "grpc", "port": 1}]}}),
            ),
        );
        assert_eq!(r.outcome, Outcome::Patched);
        for meta in [Value::Null, json!({}), json!({"name": null, "other": 1})] {
            let r = run(CLUSTER, &request("CREATE", json!({"metadata": meta})));
            assert!(
                r.response.response.warnings[0].contains("object has no metadata"),
                "{:?}",
                r.response.response.warnings
            );
        }
    }

    /// Bodies for the read-equivalence test: the review files and fuzz seeds, each with every request field the
    /// webhook reads removed, null, or of each wrong JSON type, objects that are not quite Services, other kinds,
    /// operations and subresources, and fields given twice.
    fn equivalence_corpus() -> Vec<String> {
        let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
        let mut bases = Vec::new();
        for dir in ["tests/data/reviews", "fuzz/seeds/admission"] {
            for entry in std::fs::read_dir(root.join(dir)).expect(dir) {
                let text = std::fs::read_to_string(entry.expect("entry").path()).expect("read");
                bases.push(serde_json::from_str::<Value>(&text).expect("a JSON review"));
            }
        }
        bases.push(request("CREATE", grpc_object()));
        let odd_values = [
            Value::Null,
            json!(5),
            json!("x"),
            json!(""),
            json!({}),
            json!([]),
            json!(true),
        ];
        let mut out = Vec::new();
        for base in &bases {
            out.push(base.to_string());
            for f in [
                "uid",
                "kind",
                "subResource",
                "name",
                "namespace",
                "operation",
                "object",
            ] {
                let mut b = base.clone();
                b["request"].as_object_mut().unwrap().remove(f);
                out.push(b.to_string());
                for v in &odd_values {
                    let mut b = base.clone();
                    b["request"][f] = v.clone();
                    out.push(b.to_string());
                }
            }
            for (pointer, v) in [
                (
                    "/request/kind",
                    json!({"group": "apps", "version": "v1", "kind": "Deployment"}),
                ),
                (
                    "/request/kind",
                    json!({"version": "v1", "kind": "Service", "kind2": 1}),
                ),
                ("/request/operation", json!("DELETE")),
                ("/request/operation", json!("CONNECT")),
                ("/request/subResource", json!("status")),
                ("/request/object/apiVersion", json!("v2")),
                ("/request/object/kind", json!("Pod")),
                ("/request/object/metadata", Value::Null),
                ("/request/object/metadata", json!({})),
                ("/request/object/metadata/labels", json!({"a": 1})),
                ("/request/object/metadata/annotations", json!(["x"])),
                (
                    "/request/object/metadata/managedFields",
                    json!([{"f": [[{}]]}]),
                ),
                ("/request/object/spec", Value::Null),
                ("/request/object/spec/ports", json!([{"port": "x"}])),
                ("/request/object/spec/ports", json!({})),
                ("/request/object/spec/sessionAffinity", json!(1)),
                ("/request/object/status", json!({"x": [1, {"y": null}]})),
                ("/request/oldObject", json!({"metadata": 5})),
                ("/apiVersion", json!("admission.k8s.io/v1beta1")),
                ("/kind", json!("Other")),
                ("/request", Value::Null),
                ("/request", json!([])),
            ] {
                let mut b = base.clone();
                let (parent, key) = pointer.rsplit_once('/').unwrap();
                let target = if parent.is_empty() {
                    Some(&mut b)
                } else {
                    b.pointer_mut(parent)
                };
                if let Some(Value::Object(m)) = target {
                    m.insert(key.to_string(), v);
                    out.push(b.to_string());
                }
            }
            // Fields given twice: the first occurrence added in front of the object's own.
            let text = base.to_string();
            for dup in [
                r#""uid":"other","#,
                r#""operation":"CREATE","#,
                r#""name":"dup","#,
                r#""object":null,"#,
                r#""kind":{"group":"","version":"v1","kind":"Service"},"#,
            ] {
                out.push(text.replacen(r#""request":{"#, &format!(r#""request":{{{dup}"#), 1));
            }
            out.push(text.replacen(r#""metadata":{"#, r#""metadata":{"name":"first","#, 1));
        }
        out
    }

    #[test]
    fn the_one_pass_read_and_the_careful_read_answer_alike() {
        let policies = [
            Policy::default().compile(),
            Policy::from_yaml(CLUSTER).unwrap().compile(),
            Policy::from_yaml(
                "scope: cluster\nmode: dry-run\nrules: [{name: grpc-ports, ports: {}}]\n",
            )
            .unwrap()
            .compile(),
        ];
        let corpus = equivalence_corpus();
        for body in &corpus {
            for p in &policies {
                let both = review(p, body.as_bytes());
                let careful = review_captured(p, body);
                assert_eq!(format!("{both:?}"), format!("{careful:?}"), "{body}");
            }
        }
        // The review files themselves, and a good share of the variants, take the one-pass read (the others
        // are broken on purpose).
        assert!(review_in_one_pass(&policies[0], &corpus[0]).is_some());
        let one_pass = corpus
            .iter()
            .filter(|b| review_in_one_pass(&policies[0], b).is_some())
            .count();
        assert!(
            one_pass * 3 > corpus.len(),
            "only {one_pass} of {} reviews took the one-pass read",
            corpus.len()
        );
    }

    #[test]
    fn keys_and_values_written_with_escapes_read_as_the_same_review() {
        // Strings without escapes are borrowed from the body, the others copied: both must read alike.
        let plain = include_str!("../../../tests/data/reviews/bench-service.json");
        let escaped = plain
            .replace("\"name\":", "\"na\\u006de\":")
            .replace("\"labels\":", "\"\\u006cabels\":")
            .replace("\"ports\":", "\"port\\u0073\":")
            .replace("\"operation\":", "\"operatio\\u006e\":")
            .replace("\"CREATE\"", "\"CR\\u0045ATE\"")
            .replace("\"grpc", "\"\\u0067rpc");
        assert_ne!(plain, escaped);
        let p = Policy::default().compile();
        let a = review(&p, plain.as_bytes()).expect("review");
        let b = review(&p, escaped.as_bytes()).expect("review");
        assert_eq!(a.outcome, Outcome::Patched);
        assert_eq!(format!("{a:?}"), format!("{b:?}"));
        assert!(review_in_one_pass(&p, &escaped).is_some());
    }

    #[test]
    fn the_load_test_review_is_patched_with_the_same_patch_as_a_full_decode() {
        // bench-service.json carries managedFields, status and a full spec: the partial decode must give the
        // same decision and patch as evaluating the whole k8s-openapi Service.
        let body = include_bytes!("../../../tests/data/reviews/bench-service.json");
        let p = Policy::default().compile();
        let r = review(&p, body).expect("review");
        assert_eq!(r.outcome, Outcome::Patched);
        let v: Value = serde_json::from_slice(body).unwrap();
        let svc: Service = serde_json::from_value(v["request"]["object"].clone()).unwrap();
        let full = p.evaluate(&svc, NamespaceContext::scope_applied(&r.namespace));
        let decision = r.decision.clone().unwrap();
        assert_eq!(
            (decision.kind, &decision.reason, &decision.warnings),
            (full.kind, &full.reason, &full.warnings)
        );
        let patch = crate::patch::build_patch(&svc, &full, &p.policy).unwrap();
        assert_eq!(r.response.response.decoded_patch().unwrap().unwrap(), patch);
    }
}
