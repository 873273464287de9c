//! lb-l7-core: the pure core of lb-l7-webhook. No IO, no async runtime, no Kubernetes client: typed values in,
//! values out. Every edge (the webhook server, report, backfill, the reconciler, doctor, the rendered manifests)
//! calls these functions, so none of them can disagree about a Service.
//!
//! - [`policy`]: the policy model, its validation, and [`policy::CompiledPolicy::evaluate`] (a decision, its reason
//!   in words and Cilium's pitfalls as warnings).
//! - [`namespace`]: what is known of a Service's namespace, the one context every edge passes to `evaluate`.
//! - [`patch`]: the annotations a decision adds, as a JSON Patch (the webhook's, and the guarded one controllers
//!   send).
//! - [`admission`]: AdmissionReview bytes in, AdmissionReview out (fail open, uid always echoed).
//! - [`render`]: the MutatingWebhookConfiguration for a policy, and ([`render::admission_policy`]) the same
//!   policy as a MutatingAdmissionPolicy with a ValidatingAdmissionPolicy for the warnings.
//! - [`cabundle`]: caBundle PEM parsing.
//! - [`text`]: a string read by serde that borrows from the input when it can (the admission and manifest readers).
#![forbid(unsafe_code)]

pub mod admission;
pub mod cabundle;
pub mod namespace;
pub mod patch;
pub mod policy;
pub mod render;
pub mod text;
