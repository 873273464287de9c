//! From a decision to the annotations to add, and to the JSON Patch that adds them. Pure.

use std::collections::BTreeMap;

use json_patch::{AddOperation, Patch, PatchOperation, TestOperation};
use json_patch::jsonptr::PointerBuf;
use k8s_openapi::api::core::v1::Service;
use serde_json::Value;

use crate::policy::{
    ALGORITHM_ANNOTATION, Decision, DecisionKind, ENABLED_VALUE, MATCHED_BY_ANNOTATION, Policy,
};

/// The annotations an `enable` decision adds, in a stable order. Empty for any other decision.
///
/// Never includes a key the Service already has, except our own `lb-l7-webhook/matched-by`, which is refreshed.
pub fn annotations_to_add(
    svc: &Service,
    decision: &Decision,
    policy: &Policy,
) -> Vec<(String, String)> {
    if decision.kind != DecisionKind::Enable {
        return Vec::new();
    }
    let existing = svc.metadata.annotations.as_ref();
    let has = |k: &str| existing.is_some_and(|a| a.contains_key(k));
    let mut out = Vec::with_capacity(3);
    if !has(&policy.annotation_key) {
        out.push((policy.annotation_key.clone(), ENABLED_VALUE.to_string()));
    }
    if let Some(alg) = decision.algorithm
        && !has(ALGORITHM_ANNOTATION)
    {
        out.push((ALGORITHM_ANNOTATION.to_string(), alg.as_str().to_string()));
    }
    out.push((MATCHED_BY_ANNOTATION.to_string(), decision.reason.clone()));
    out
}

fn annotations_pointer() -> PointerBuf {
    PointerBuf::from_tokens(["metadata", "annotations"])
}

/// The JSON Patch that the webhook returns for a decision: `None` unless the decision is `enable`.
///
/// Creates `/metadata/annotations` when the Service has none; otherwise adds one member per annotation, with `/`
/// and `~` in keys escaped as the JSON Pointer standard says (`~1`, `~0`).
pub fn build_patch(svc: &Service, decision: &Decision, policy: &Policy) -> Option<Patch> {
    let adds = annotations_to_add(svc, decision, policy);
    if adds.is_empty() {
        return None;
    }
    let ops = if svc.metadata.annotations.is_none() {
        let map: serde_json::Map<String, Value> = adds
            .into_iter()
            .map(|(k, v)| (k, Value::String(v)))
            .collect();
        vec![PatchOperation::Add(AddOperation {
            path: annotations_pointer(),
            value: Value::Object(map),
        })]
    } else {
        adds.into_iter()
            .map(|(k, v)| {
                let mut path = annotations_pointer();
                path.push_back(k.as_str());
                PatchOperation::Add(AddOperation {
                    path,
                    value: Value::String(v),
                })
            })
            .collect()
    };
    Some(Patch(ops))
}

/// The patch the backfill sends to the API server: the same annotations, guarded by a `test` of the annotations
/// the Service had when it was read, so a concurrent change makes the patch fail instead of being overwritten.
pub fn build_guarded_patch(svc: &Service, decision: &Decision, policy: &Policy) -> Option<Patch> {
    let mut patch = build_patch(svc, decision, policy)?;
    let seen: Value = match &svc.metadata.annotations {
        Some(a) => serde_json::to_value(a).unwrap_or(Value::Null),
        None => Value::Null,
    };
    let mut ops = Vec::with_capacity(patch.0.len() + 1);
    if svc.metadata.annotations.is_some() {
        ops.push(PatchOperation::Test(TestOperation {
            path: annotations_pointer(),
            value: seen,
        }));
    } else if let Some(rv) = &svc.metadata.resource_version {
        // No annotations to test: guard on the resourceVersion instead, which changes on every write.
        ops.push(PatchOperation::Test(TestOperation {
            path: PointerBuf::from_tokens(["metadata", "resourceVersion"]),
            value: Value::String(rv.clone()),
        }));
    }
    ops.append(&mut patch.0);
    Some(Patch(ops))
}

/// The Service's annotations after the patch, for reports and tests.
pub fn annotations_after(
    svc: &Service,
    decision: &Decision,
    policy: &Policy,
) -> BTreeMap<String, String> {
    let mut all = svc.metadata.annotations.clone().unwrap_or_default();
    all.extend(annotations_to_add(svc, decision, policy));
    all
}
