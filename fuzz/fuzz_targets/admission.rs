//! Bytes in, AdmissionReview out: `admission::review` must never panic, must answer exactly as its step-by-step
//! reference path does, and every answer it gives must be encodable, allow the write, echo a non-empty uid and
//! carry a patch that decodes.
#![no_main]

use std::sync::LazyLock;

use lb_l7_core::admission;
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
        let fast = admission::review(policy, data);
        let reference = admission::review_step_by_step(policy, data);
        match (&fast, &reference) {
            (Ok(a), Ok(b)) => {
                assert_eq!(a.response, b.response, "the two paths disagree");
                assert_eq!(a.outcome, b.outcome, "the two paths disagree");
            }
            (Err(a), Err(b)) => assert_eq!(a, b, "the two paths disagree"),
            _ => panic!("one path answers, the other rejects: {fast:?} / {reference:?}"),
        }
        if let Ok(r) = fast {
            assert!(!r.response.response.uid.is_empty());
            assert!(r.response.response.allowed);
            assert!(serde_json::to_vec(&r.response).is_ok());
            if let Some(patch) = r.response.response.decoded_patch() {
                assert!(patch.is_ok(), "patch does not decode: {patch:?}");
            }
        }
    }
});
