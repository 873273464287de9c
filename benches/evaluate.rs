//! Criterion benches of the pure core: `evaluate`, `build_patch`, and the whole `admission::review` (bytes in,
//! response value out, serialized as the server does), on a small Service (1 port, 2 annotations) and a large one
//! (100 ports, 50 annotations).
//!
//! Also the load-test review (tests/data/reviews/bench-service.json) through `admission::review`, alone and with
//! the answer encoded as the server does.
//!
//! Run: `cargo bench --bench evaluate` (numbers in BENCHMARKS.md).

use std::collections::BTreeMap;
use std::hint::black_box;

use criterion::{Criterion, criterion_group, criterion_main};
use k8s_openapi::api::core::v1::{Service, ServicePort, ServiceSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use lb_l7_core::admission;
use lb_l7_core::patch::build_patch;
use lb_l7_core::policy::{CompiledPolicy, NamespaceContext, Policy};

/// A Service with `ports` ports (the last one named `grpc`, so every rule has to look at all of them) and
/// `annotations` annotations.
fn service(ports: usize, annotations: usize) -> Service {
    let mut spec_ports = Vec::with_capacity(ports);
    for i in 0..ports {
        let last = i + 1 == ports;
        spec_ports.push(ServicePort {
            name: Some(if last {
                "grpc".to_string()
            } else {
                format!("http-{i}")
            }),
            port: 8000 + i as i32,
            protocol: Some("TCP".into()),
            app_protocol: (!last).then(|| "http".to_string()),
            ..Default::default()
        });
    }
    let annotations: BTreeMap<String, String> = (0..annotations)
        .map(|i| {
            (
                format!("example.com/annotation-{i}"),
                format!("value of annotation {i}"),
            )
        })
        .collect();
    let labels: BTreeMap<String, String> = [
        ("app.kubernetes.io/name", "checkout"),
        ("app.kubernetes.io/part-of", "shop"),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v.to_string()))
    .collect();
    Service {
        metadata: ObjectMeta {
            name: Some("checkout".into()),
            namespace: Some("shop".into()),
            labels: Some(labels),
            annotations: Some(annotations),
            ..Default::default()
        },
        spec: Some(ServiceSpec {
            type_: Some("ClusterIP".into()),
            ports: Some(spec_ports),
            ..Default::default()
        }),
        ..Default::default()
    }
}

/// The AdmissionReview the API server would send for `svc`.
fn review_body(svc: &Service) -> Vec<u8> {
    serde_json::to_vec(&serde_json::json!({
        "apiVersion": "admission.k8s.io/v1",
        "kind": "AdmissionReview",
        "request": {
            "uid": "3f6c2a9e-8d41-4b7a-9c55-0e2d7b1a6f10",
            "kind": {"group": "", "version": "v1", "kind": "Service"},
            "resource": {"group": "", "version": "v1", "resource": "services"},
            "name": "checkout",
            "namespace": "shop",
            "operation": "CREATE",
            "userInfo": {"username": "admin"},
            "object": svc,
            "oldObject": null,
            "dryRun": false
        }
    }))
    .unwrap_or_default()
}

fn policy() -> CompiledPolicy {
    // The built-in default (the file deploy/base/policy.yaml).
    Policy::default().compile()
}

fn benches(c: &mut Criterion) {
    let policy = policy();
    for (label, ports, annotations) in [("small", 1, 2), ("large", 100, 50)] {
        let svc = service(ports, annotations);
        let body = review_body(&svc);
        let ns = NamespaceContext::scope_applied("shop");
        let decision = policy.evaluate(&svc, ns);
        assert_eq!(decision.kind.as_str(), "enable", "{label}: {decision:?}");

        let mut group = c.benchmark_group(format!(
            "{label} ({ports} ports, {annotations} annotations)"
        ));
        group.bench_function("evaluate", |b| {
            b.iter(|| policy.evaluate(black_box(&svc), black_box(ns)))
        });
        group.bench_function("build_patch", |b| {
            b.iter(|| build_patch(black_box(&svc), black_box(&decision), &policy.policy))
        });
        group.bench_function("evaluate + build_patch", |b| {
            b.iter(|| {
                let d = policy.evaluate(black_box(&svc), black_box(ns));
                build_patch(&svc, &d, &policy.policy)
            })
        });
        group.bench_function(
            format!("admission::review + encode ({} B)", body.len()),
            |b| {
                b.iter(|| {
                    let reviewed = admission::review(&policy, black_box(&body));
                    reviewed.map(|r| serde_json::to_vec(&r.response).unwrap_or_default())
                })
            },
        );
        group.finish();
    }
}

/// The load-test body (tests/data/reviews/bench-service.json) through the one decode path.
fn load_test_body(c: &mut Criterion) {
    let policy = policy();
    let body = include_bytes!("../tests/data/reviews/bench-service.json");
    let mut group = c.benchmark_group(format!("bench-service.json ({} B)", body.len()));
    group.bench_function("admission::review", |b| {
        b.iter(|| admission::review(&policy, black_box(body)))
    });
    group.bench_function("admission::review + encode", |b| {
        b.iter(|| {
            admission::review(&policy, black_box(body))
                .map(|r| serde_json::to_vec(&r.response).unwrap_or_default())
        })
    });
    group.finish();
}

criterion_group!(evaluate, benches, load_test_body);
criterion_main!(evaluate);
