//! A policy file (any text) in: `Policy::from_yaml` must never panic, and a policy it accepts must compile and
//! evaluate fixed Services (and build their patch) without panicking.
#![no_main]

use std::collections::BTreeMap;
use std::sync::LazyLock;

use k8s_openapi::api::core::v1::{Service, ServicePort, ServiceSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use lb_l7_core::patch::build_patch;
use lb_l7_core::policy::{NamespaceContext, Policy};
use libfuzzer_sys::fuzz_target;

static SERVICES: LazyLock<Vec<Service>> = LazyLock::new(|| {
    let labels: BTreeMap<String, String> = [
        ("app", "api"),
        ("tier", "api"),
        ("lb-l7-webhook/enabled", "true"),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v.to_string()))
    .collect();
    let port = |name: &str, app: Option<&str>| ServicePort {
        name: Some(name.into()),
        port: 50051,
        app_protocol: app.map(String::from),
        ..Default::default()
    };
    vec![
        Service {
            metadata: ObjectMeta {
                name: Some("api".into()),
                namespace: Some("apps".into()),
                labels: Some(labels),
                annotations: Some([("owner".to_string(), "me".to_string())].into()),
                ..Default::default()
            },
            spec: Some(ServiceSpec {
                ports: Some(vec![
                    port("grpc", None),
                    port("http", Some("kubernetes.io/h2c")),
                    port("grpc-tls", None),
                ]),
                ..Default::default()
            }),
            ..Default::default()
        },
        Service {
            metadata: ObjectMeta {
                name: Some("bare".into()),
                ..Default::default()
            },
            spec: Some(ServiceSpec {
                type_: Some("ExternalName".into()),
                cluster_ip: Some("None".into()),
                ..Default::default()
            }),
            ..Default::default()
        },
    ]
});

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let Ok(policy) = Policy::from_yaml(text) else {
        return;
    };
    let compiled = policy.compile();
    let ns_labels: BTreeMap<String, String> =
        [("lb-l7-webhook/enabled".to_string(), "true".to_string())].into();
    for svc in SERVICES.iter() {
        for ns in [
            NamespaceContext::scope_applied("apps"),
            NamespaceContext::known("apps", &ns_labels),
            NamespaceContext::scope_applied("kube-system"),
        ] {
            let decision = compiled.evaluate(svc, ns);
            let _ = build_patch(svc, &decision, &compiled.policy);
        }
    }
});
