//! From a decision to the annotations to add, and to the JSON Patch that adds them. Pure.

use json_patch::jsonptr::{PointerBuf, Token};
use json_patch::{AddOperation, Patch, PatchOperation, TestOperation};
use k8s_openapi::api::core::v1::Service;
use serde::{Serialize, Serializer};
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

/// [`build_patch`]'s patch as the JSON bytes the webhook sends, written straight from the annotations to add
/// without building the patch's values. The same operations, paths and values; the members of a created
/// annotation map come in [`annotations_to_add`]'s order. The tests decode these bytes and compare them with
/// [`build_patch`].
pub fn patch_bytes(
    svc: &Service,
    decision: &Decision,
    policy: &Policy,
) -> Option<Result<Vec<u8>, serde_json::Error>> {
    #[derive(Serialize)]
    struct Add<P, V> {
        op: &'static str,
        path: P,
        value: V,
    }
    /// The annotations to add, as one JSON object.
    struct Members<'a>(&'a [(String, String)]);
    impl Serialize for Members<'_> {
        fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
            serializer.collect_map(self.0.iter().map(|(k, v)| (k, v)))
        }
    }
    /// `/metadata/annotations/` and the key as a JSON Pointer token (`~` as `~0`, `/` as `~1`).
    struct MemberPath<'a>(&'a str);
    impl Serialize for MemberPath<'_> {
        fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
            let token = Token::new(self.0);
            let mut path = String::with_capacity(ANNOTATIONS.len() + 1 + token.encoded().len());
            path.push_str(ANNOTATIONS);
            path.push('/');
            path.push_str(token.encoded());
            serializer.serialize_str(&path)
        }
    }
    const ANNOTATIONS: &str = "/metadata/annotations";
    let adds = annotations_to_add(svc, decision, policy);
    if adds.is_empty() {
        return None;
    }
    let mut out = Vec::with_capacity(256);
    let written = if svc.metadata.annotations.is_none() {
        serde_json::to_writer(
            &mut out,
            &[Add {
                op: "add",
                path: ANNOTATIONS,
                value: Members(&adds),
            }],
        )
    } else {
        serde_json::Serializer::new(&mut out).collect_seq(adds.iter().map(|(k, v)| Add {
            op: "add",
            path: MemberPath(k),
            value: v,
        }))
    };
    Some(written.map(|()| out))
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::policy::{NamespaceContext, Policy};
    use serde_json::json;

    fn policy(extra: &str) -> Policy {
        Policy::from_yaml(&format!("scope: cluster\n{extra}rules: [{{name: grpc-ports, ports: {{}}, algorithm: least_request}}]\n"))
            .expect("policy")
    }

    /// Applies the patch as the API server does, to the JSON form of the Service.
    fn apply(svc: &Service, p: &Policy) -> (Option<Patch>, Value) {
        let d = p
            .compile()
            .evaluate(svc, NamespaceContext::scope_applied("apps"));
        let patch = build_patch(svc, &d, p);
        // What the webhook sends: the same patch.
        let sent = patch_bytes(svc, &d, p).map(|b| {
            serde_json::from_slice::<Patch>(&b.expect("encodes"))
                .expect("the webhook's patch decodes")
        });
        assert_eq!(sent, patch);
        let mut doc = serde_json::to_value(svc).expect("json");
        if let Some(patch) = &patch {
            json_patch::patch(&mut doc, &patch.0).expect("patch applies");
        }
        (patch, doc)
    }

    fn grpc(annotations: Option<Value>) -> Service {
        let mut v = json!({"metadata": {"name": "api", "namespace": "apps"},
            "spec": {"ports": [{"name": "grpc", "port": 50051}]}});
        if let Some(a) = annotations {
            v["metadata"]["annotations"] = a;
        }
        serde_json::from_value(v).expect("svc")
    }

    #[test]
    fn creates_annotations_when_absent() {
        let (patch, doc) = apply(&grpc(None), &policy(""));
        let patch = patch.expect("a patch");
        assert_eq!(patch.0.len(), 1, "one op creates the whole map");
        assert_eq!(
            serde_json::to_value(&patch).unwrap()[0]["path"],
            "/metadata/annotations"
        );
        let a = &doc["metadata"]["annotations"];
        assert_eq!(a["service.cilium.io/lb-l7"], "enabled");
        assert_eq!(a["service.cilium.io/lb-l7-algorithm"], "least_request");
        assert_eq!(
            a["lb-l7-webhook/matched-by"],
            "port grpc (50051/TCP) matches rule 'grpc-ports'"
        );
    }

    #[test]
    fn adds_members_with_escaped_keys_when_annotations_exist() {
        let (patch, doc) = apply(
            &grpc(Some(json!({"team": "x", "a~b/c": "keep"}))),
            &policy(""),
        );
        let ops = serde_json::to_value(patch.expect("patch")).unwrap();
        let paths: Vec<&str> = ops
            .as_array()
            .unwrap()
            .iter()
            .map(|o| o["path"].as_str().unwrap())
            .collect();
        assert_eq!(
            paths,
            [
                "/metadata/annotations/service.cilium.io~1lb-l7",
                "/metadata/annotations/service.cilium.io~1lb-l7-algorithm",
                "/metadata/annotations/lb-l7-webhook~1matched-by",
            ]
        );
        let a = &doc["metadata"]["annotations"];
        assert_eq!(a["team"], "x");
        assert_eq!(a["a~b/c"], "keep");
        assert_eq!(a["service.cilium.io/lb-l7"], "enabled");
    }

    #[test]
    fn empty_annotation_map_gets_members() {
        let (patch, doc) = apply(&grpc(Some(json!({}))), &policy(""));
        assert_eq!(patch.expect("patch").0.len(), 3);
        assert_eq!(
            doc["metadata"]["annotations"]["service.cilium.io/lb-l7"],
            "enabled"
        );
    }

    #[test]
    fn existing_algorithm_is_never_overwritten() {
        let (patch, doc) = apply(
            &grpc(Some(json!({"service.cilium.io/lb-l7-algorithm": "random"}))),
            &policy(""),
        );
        assert_eq!(patch.expect("patch").0.len(), 2);
        assert_eq!(
            doc["metadata"]["annotations"]["service.cilium.io/lb-l7-algorithm"],
            "random"
        );
    }

    #[test]
    fn key_with_tilde_and_slash_is_escaped() {
        let p = policy("annotationKey: example.com/lb-l7\n");
        let (patch, doc) = apply(&grpc(Some(json!({}))), &p);
        let ops = serde_json::to_value(patch.expect("patch")).unwrap();
        assert_eq!(ops[0]["path"], "/metadata/annotations/example.com~1lb-l7");
        assert_eq!(
            doc["metadata"]["annotations"]["example.com/lb-l7"],
            "enabled"
        );
        // RFC 6901: '~' is written '~0' and '/' '~1'.
        let mut ptr = annotations_pointer();
        ptr.push_back("a~b/c");
        assert_eq!(ptr.as_str(), "/metadata/annotations/a~0b~1c");
    }

    #[test]
    fn no_patch_for_other_decisions() {
        for a in [
            json!({"service.cilium.io/lb-l7": "enabled"}),
            json!({"service.cilium.io/lb-l7": "disabled"}),
        ] {
            let (patch, _) = apply(&grpc(Some(a)), &policy(""));
            assert!(patch.is_none());
        }
        let web: Service = serde_json::from_value(
            json!({"metadata": {"name": "w"}, "spec": {"ports": [{"name": "http", "port": 80}]}}),
        )
        .unwrap();
        assert!(apply(&web, &policy("")).0.is_none());
    }

    #[test]
    fn guarded_patch_tests_the_annotations_it_read() {
        let p = policy("");
        let svc = grpc(Some(json!({"team": "x"})));
        let d = p
            .compile()
            .evaluate(&svc, NamespaceContext::scope_applied("apps"));
        let patch = build_guarded_patch(&svc, &d, &p).expect("patch");
        let ops = serde_json::to_value(&patch).unwrap();
        assert_eq!(
            ops[0],
            json!({"op": "test", "path": "/metadata/annotations", "value": {"team": "x"}})
        );
        // Unchanged object: applies. Changed concurrently: the test op fails, nothing is written.
        let mut doc = serde_json::to_value(&svc).unwrap();
        json_patch::patch(&mut doc, &patch.0).expect("applies to what was read");
        let mut changed = serde_json::to_value(&svc).unwrap();
        changed["metadata"]["annotations"]["service.cilium.io/lb-l7"] = json!("disabled");
        let before = changed.clone();
        assert!(json_patch::patch(&mut changed, &patch.0).is_err());
        assert_eq!(changed, before);

        let mut bare = grpc(None);
        bare.metadata.resource_version = Some("42".into());
        let d = p
            .compile()
            .evaluate(&bare, NamespaceContext::scope_applied("apps"));
        let ops = serde_json::to_value(build_guarded_patch(&bare, &d, &p).unwrap()).unwrap();
        assert_eq!(
            ops[0],
            json!({"op": "test", "path": "/metadata/resourceVersion", "value": "42"})
        );
    }
}
