//! Bytes in, AdmissionReview out: `admission::review` must never panic, must reject a body that is not UTF-8,
//! must answer as the careful read alone (`review_captured`) does, and every answer it gives must be encodable,
//! allow the write, echo a non-empty uid, name the object in every warning it can, and carry a patch that decodes.
#![no_main]

use std::sync::LazyLock;

use lb_l7_core::admission::{self, WARNING_PREFIX};
use lb_l7_core::policy::{CompiledPolicy, Policy};
use libfuzzer_sys::fuzz_target;

static POLICIES: LazyLock<Vec<CompiledPolicy>> = LazyLock::new(|| {
    let cluster = "scope: cluster\nrules:\n- name: grpc\n  ports: {}\n  algorithm: least_request\n- name: by-label\n  \
                   selector: {matchExpressions: [{key: tier, operator: In, values: [api]}]}\n";
    let dry_run = "scope: cluster\nmode: dry-run\nrules: [{name: grpc, ports: {}}]\n";
    let mut policies = vec![Policy::default().compile()];
    for yaml in [cluster, dry_run] {
        if let Ok(p) = Policy::from_yaml(yaml) {
            policies.push(p.compile());
        }
    }
    policies
});

fuzz_target!(|data: &[u8]| {
    for policy in POLICIES.iter() {
        let answered = admission::review(policy, data);
        // The one-pass read and the careful read answer alike.
        if let Ok(text) = std::str::from_utf8(data) {
            assert_eq!(
                format!("{answered:?}"),
                format!("{:?}", admission::review_captured(policy, text)),
                "the one-pass read and the careful read differ"
            );
        }
        let Ok(r) = answered else {
            continue;
        };
        assert!(
            std::str::from_utf8(data).is_ok(),
            "answered a body that is not UTF-8"
        );
        assert!(!r.response.response.uid.is_empty());
        assert!(r.response.response.allowed);
        assert!(serde_json::to_vec(&r.response).is_ok());
        if let Some(patch) = r.response.response.decoded_patch() {
            assert!(patch.is_ok(), "patch does not decode: {patch:?}");
        }
        for w in &r.response.response.warnings {
            assert!(w.starts_with(WARNING_PREFIX), "{w}");
            if !r.name.is_empty() {
                assert!(
                    w[WARNING_PREFIX.len()..].contains(&format!("{}: ", r.name)),
                    "{w}"
                );
            }
        }
    }
});
