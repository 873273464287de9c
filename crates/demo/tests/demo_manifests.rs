//! deploy/demo renders (`kubectl kustomize`, offline) into the objects the walk-through in docs/demo.md relies on.
//! Skipped, with a printed line, when kubectl is not on PATH.

use std::collections::BTreeMap;
use std::process::Command;

use clap::Parser as _;
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::{Container, Namespace, PodSpec, Service};
use lb_l7_core::policy::{DecisionKind, NamespaceContext, Policy};
use lb_l7_demo::client::ClientArgs;
use lb_l7_demo::server::ServerArgs;
use lb_l7_demo::verdict::{Expectation, Verdict};
use serde_json::Value;

const LB_L7: &str = "service.cilium.io/lb-l7";

/// The rendered objects, or None (test skipped) without kubectl.
fn render() -> Option<Vec<Value>> {
    let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/../../deploy/demo");
    let output = match Command::new("kubectl").args(["kustomize", dir]).output() {
        Ok(o) => o,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            println!("skipped: kubectl is not on PATH, cannot render deploy/demo");
            return None;
        }
        Err(e) => panic!("cannot run kubectl: {e}"),
    };
    assert!(
        output.status.success(),
        "kubectl kustomize deploy/demo failed:\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let yaml = String::from_utf8_lossy(&output.stdout);
    match serde_saphyr::from_multiple::<Value>(&yaml) {
        Ok(docs) => Some(docs.into_iter().filter(|d| !d.is_null()).collect()),
        Err(e) => panic!("rendered YAML does not parse: {e}\n{yaml}"),
    }
}

fn one<T: serde::de::DeserializeOwned>(docs: &[Value], kind: &str) -> T {
    let found: Vec<&Value> = docs.iter().filter(|d| d["kind"] == kind).collect();
    assert_eq!(found.len(), 1, "expected one {kind}, found {}", found.len());
    match serde_json::from_value(found[0].clone()) {
        Ok(t) => t,
        Err(e) => panic!("{kind} does not match its Kubernetes type: {e}"),
    }
}

fn pod_spec(spec: Option<&PodSpec>) -> &PodSpec {
    match spec {
        Some(s) => s,
        None => panic!("no pod spec"),
    }
}

fn only_container(spec: &PodSpec) -> &Container {
    assert_eq!(spec.containers.len(), 1);
    &spec.containers[0]
}

/// The restricted Pod Security Standard, container level, plus a read-only root filesystem.
fn assert_restricted(container: &Container) {
    let Some(sc) = container.security_context.as_ref() else {
        panic!("{} has no securityContext", container.name);
    };
    assert_eq!(sc.run_as_non_root, Some(true), "{}", container.name);
    assert_eq!(
        sc.read_only_root_filesystem,
        Some(true),
        "{}",
        container.name
    );
    assert_eq!(
        sc.allow_privilege_escalation,
        Some(false),
        "{}",
        container.name
    );
    assert_eq!(
        sc.capabilities.as_ref().and_then(|c| c.drop.clone()),
        Some(vec!["ALL".to_string()]),
        "{}",
        container.name
    );
    assert_eq!(
        sc.seccomp_profile.as_ref().map(|p| p.type_.as_str()),
        Some("RuntimeDefault"),
        "{}",
        container.name
    );
}

#[test]
fn demo_manifests_render_what_the_walk_through_needs() {
    let Some(docs) = render() else {
        return;
    };
    let kinds: Vec<&str> = docs.iter().filter_map(|d| d["kind"].as_str()).collect();
    assert_eq!(kinds.len(), 4, "{kinds:?}");

    // The namespace opts in to the webhook.
    let ns: Namespace = one(&docs, "Namespace");
    assert_eq!(ns.metadata.name.as_deref(), Some("apps"));
    let ns_labels = ns.metadata.labels.clone().unwrap_or_default();
    assert_eq!(
        ns_labels.get("lb-l7-webhook/enabled").map(String::as_str),
        Some("true")
    );

    // The Service: port named grpc, and NO lb-l7 annotation (the webhook adds it).
    let svc: Service = one(&docs, "Service");
    assert_eq!(svc.metadata.name.as_deref(), Some("goappserver"));
    assert_eq!(svc.metadata.namespace.as_deref(), Some("apps"));
    assert!(
        !svc.metadata
            .annotations
            .as_ref()
            .is_some_and(|a| a.contains_key(LB_L7)),
        "the Service must not carry {LB_L7}: the webhook adds it"
    );
    let Some(spec) = svc.spec.as_ref() else {
        panic!("Service without spec");
    };
    let ports = spec.ports.clone().unwrap_or_default();
    assert_eq!(ports.len(), 1);
    assert_eq!(ports[0].name.as_deref(), Some("grpc"));
    assert_eq!(ports[0].port, 50051);

    // And the project's own policy, as shipped, would annotate it in this namespace.
    let decision = Policy::default()
        .compile()
        .evaluate(&svc, NamespaceContext::known("apps", &ns_labels));
    assert_eq!(decision.kind, DecisionKind::Enable, "{}", decision.reason);

    // The server: 3 replicas behind the Service, POD_NAME from the downward API, native gRPC probes, restricted.
    let deploy: Deployment = one(&docs, "Deployment");
    assert_eq!(deploy.metadata.namespace.as_deref(), Some("apps"));
    let dspec = &deploy.spec;
    assert_eq!(dspec.replicas, Some(3));
    let pod_labels: BTreeMap<String, String> = dspec
        .template
        .metadata
        .as_ref()
        .and_then(|m| m.labels.clone())
        .unwrap_or_default();
    let selector = spec.selector.clone().unwrap_or_default();
    assert!(!selector.is_empty());
    for (k, v) in &selector {
        assert_eq!(
            pod_labels.get(k),
            Some(v),
            "Service selector {k} does not select the pods"
        );
    }
    let pod = pod_spec(dspec.template.spec.as_ref());
    let server = only_container(pod);
    assert_eq!(server.image.as_deref(), Some("lb-l7-webhook:dev"));
    assert_eq!(server.command, Some(vec!["demo-server".to_string()]));
    let pod_name = server
        .env
        .iter()
        .flatten()
        .find(|e| e.name == "POD_NAME")
        .and_then(|e| e.value_from.as_ref())
        .and_then(|v| v.field_ref.as_ref())
        .map(|f| f.field_path.clone());
    assert_eq!(pod_name.as_deref(), Some("metadata.name"));
    for (what, probe) in [
        ("readiness", server.readiness_probe.as_ref()),
        ("liveness", server.liveness_probe.as_ref()),
    ] {
        let grpc = probe.and_then(|p| p.grpc.as_ref());
        assert_eq!(
            grpc.map(|g| g.port),
            Some(50051),
            "{what} probe must be grpc on 50051"
        );
    }
    let container_ports = server.ports.clone().unwrap_or_default();
    assert!(
        container_ports
            .iter()
            .any(|p| p.name.as_deref() == Some("grpc") && p.container_port == 50051)
    );
    assert_restricted(server);
    let mut argv = vec!["demo-server".to_string()];
    argv.extend(server.args.clone().unwrap_or_default());
    match ServerArgs::try_parse_from(&argv) {
        Ok(args) => assert_eq!(args.listen.port(), 50051),
        Err(e) => panic!("the Deployment's args are not valid demo-server flags: {e}"),
    }

    // The Job: the client, against the Service, expecting balanced over 3 backends.
    let job: Job = one(&docs, "Job");
    assert_eq!(job.metadata.name.as_deref(), Some("validate-l7"));
    assert_eq!(job.metadata.namespace.as_deref(), Some("apps"));
    let Some(jspec) = job.spec.as_ref() else {
        panic!("Job without spec");
    };
    let jpod = pod_spec(jspec.template.spec.as_ref());
    assert_eq!(jpod.restart_policy.as_deref(), Some("Never"));
    let client = only_container(jpod);
    assert_eq!(client.image.as_deref(), Some("lb-l7-webhook:dev"));
    assert_eq!(client.command, Some(vec!["demo-client".to_string()]));
    assert_restricted(client);
    let args = client.args.clone().unwrap_or_default();
    let pair = |flag: &str| {
        args.iter()
            .position(|a| a == flag)
            .and_then(|i| args.get(i + 1))
            .cloned()
    };
    assert_eq!(pair("--expect").as_deref(), Some("balanced"));
    assert_eq!(pair("--expect-backends").as_deref(), Some("3"));
    let mut argv = vec!["demo-client".to_string()];
    argv.extend(args.clone());
    match ClientArgs::try_parse_from(&argv) {
        Ok(parsed) => {
            assert_eq!(
                parsed.expectation(),
                Expectation {
                    verdict: Some(Verdict::Balanced),
                    min_backends: Some(3)
                }
            );
            assert_eq!(parsed.target, lb_l7_demo::DEFAULT_TARGET);
            assert!(
                !parsed.target.contains(','),
                "the Job must use ONE connection to the Service"
            );
        }
        Err(e) => panic!("the Job's args are not valid demo-client flags: {e}"),
    }
}
