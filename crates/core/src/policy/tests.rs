use super::*;
use k8s_openapi::api::core::v1::Service;
use serde_json::json;
use std::collections::BTreeMap;

fn svc(v: serde_json::Value) -> Service {
    serde_json::from_value(v).expect("test Service")
}

fn grpc_svc() -> Service {
    svc(json!({
        "metadata": {"name": "api", "namespace": "apps"},
        "spec": {"ports": [{"name": "grpc", "port": 50051, "targetPort": 50051}]}
    }))
}

fn labels(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

fn cluster_policy() -> CompiledPolicy {
    Policy::from_yaml("scope: cluster\nrules:\n  - name: grpc-ports\n    ports: {}\n")
        .expect("policy")
        .compile()
}

fn eval(p: &CompiledPolicy, s: &Service) -> Decision {
    p.evaluate(s, NamespaceContext::scope_applied("apps"))
}

#[test]
fn shipped_default_policy_parses_and_is_opt_in_enforce_grpc() {
    let p = Policy::from_yaml(DEFAULT_POLICY_YAML).expect("shipped policy is valid");
    assert_eq!(p.scope, Scope::NamespaceOptIn);
    assert_eq!(p.mode, Mode::Enforce);
    assert_eq!(p.annotation_key, "service.cilium.io/lb-l7");
    assert_eq!(p.timeout_seconds, 5);
    assert_eq!(p.rules.len(), 1);
    assert_eq!(p.rules[0].ports, Some(PortMatch::default()));
    assert_eq!(p.rules[0].algorithm, None);
    for ns in [
        "kube-system",
        "kube-public",
        "kube-node-lease",
        "lb-l7-system",
    ] {
        assert!(p.is_excluded(ns), "{ns} excluded by default");
    }
    assert_eq!(Policy::default(), p);
}

#[test]
fn enable_by_port_name_with_reason() {
    let d = eval(&cluster_policy(), &grpc_svc());
    assert_eq!(d.kind, DecisionKind::Enable);
    assert_eq!(d.reason, "port grpc (50051/TCP) matches rule 'grpc-ports'");
    assert_eq!(d.rule.as_deref(), Some("grpc-ports"));
    assert!(d.warnings.is_empty(), "{:?}", d.warnings);
}

#[test]
fn enable_by_glob_port_name_and_by_app_protocol() {
    let p = cluster_policy();
    let d = eval(
        &p,
        &svc(
            json!({"metadata": {"name": "a"}, "spec": {"ports": [{"name": "grpc-api", "port": 9000}]}}),
        ),
    );
    assert_eq!(d.kind, DecisionKind::Enable);
    let d = eval(
        &p,
        &svc(
            json!({"metadata": {"name": "a"}, "spec": {"ports": [{"name": "web", "port": 8080, "appProtocol": "kubernetes.io/h2c"}]}}),
        ),
    );
    assert_eq!(d.kind, DecisionKind::Enable);
    assert_eq!(
        d.reason,
        "port web (8080/TCP) with appProtocol kubernetes.io/h2c matches rule 'grpc-ports'"
    );
    let d = eval(
        &p,
        &svc(
            json!({"metadata": {"name": "a"}, "spec": {"ports": [{"port": 8080, "appProtocol": "GRPC"}]}}),
        ),
    );
    assert_eq!(
        d.kind,
        DecisionKind::Enable,
        "appProtocol compares case-insensitively"
    );
}

#[test]
fn no_match_for_http_udp_and_empty_services() {
    let p = cluster_policy();
    let d = eval(
        &p,
        &svc(
            json!({"metadata": {"name": "web"}, "spec": {"ports": [{"name": "http", "port": 80}]}}),
        ),
    );
    assert_eq!(d.kind, DecisionKind::NoMatch);
    let d = eval(
        &p,
        &svc(
            json!({"metadata": {"name": "u"}, "spec": {"ports": [{"name": "grpc", "port": 53, "protocol": "UDP"}]}}),
        ),
    );
    assert_eq!(d.kind, DecisionKind::NoMatch, "gRPC runs over TCP only");
    let d = eval(&p, &svc(json!({"metadata": {"name": "e"}})));
    assert_eq!(d.kind, DecisionKind::NoMatch);
    assert!(d.reason.contains("no ports"), "{}", d.reason);
}

#[test]
fn tls_ports_never_count() {
    let p = cluster_policy();
    for port in [
        json!({"name": "grpcs", "port": 443}),
        json!({"name": "grpc-tls", "port": 443}),
        json!({"name": "grpc", "port": 443, "appProtocol": "https"}),
        json!({"name": "grpc-api", "port": 443, "appProtocol": "tls"}),
    ] {
        let s = svc(json!({"metadata": {"name": "s"}, "spec": {"ports": [port.clone()]}}));
        let d = eval(&p, &s);
        assert_eq!(d.kind, DecisionKind::NoMatch, "{port}");
        assert!(d.reason.contains("TLS"), "{port}: {}", d.reason);
    }
}

#[test]
fn already_enabled_and_owner_values_are_respected() {
    let p = cluster_policy();
    let mut s = grpc_svc();
    s.metadata.annotations = Some(labels(&[(DEFAULT_ANNOTATION_KEY, "enabled")]));
    let d = eval(&p, &s);
    assert_eq!(d.kind, DecisionKind::AlreadyEnabled);
    assert_eq!(d.rule.as_deref(), Some("grpc-ports"));

    s.metadata.annotations = Some(labels(&[(DEFAULT_ANNOTATION_KEY, "disabled")]));
    let d = eval(&p, &s);
    assert_eq!(d.kind, DecisionKind::OptedOut);
    assert!(d.warnings.is_empty());

    s.metadata.annotations = Some(labels(&[(DEFAULT_ANNOTATION_KEY, "Enabled")]));
    let d = eval(&p, &s);
    assert_eq!(
        d.kind,
        DecisionKind::OptedOut,
        "the value is case-sensitive"
    );
    assert!(d.warnings[0].contains("case-sensitive"), "{:?}", d.warnings);
}

#[test]
fn opt_out_label_on_service() {
    let mut s = grpc_svc();
    s.metadata.labels = Some(labels(&[(OPT_LABEL, "false")]));
    let d = eval(&cluster_policy(), &s);
    assert_eq!(d.kind, DecisionKind::OptedOut);
    assert!(d.reason.contains("lb-l7-webhook/enabled=false"));
}

#[test]
fn scope_cluster_excludes_listed_and_opted_out_namespaces() {
    let p = cluster_policy();
    let s = grpc_svc();
    let d = p.evaluate(&s, NamespaceContext::scope_applied("kube-system"));
    assert_eq!(d.kind, DecisionKind::ExcludedNamespace);
    let out = labels(&[(OPT_LABEL, "false")]);
    let d = p.evaluate(&s, NamespaceContext::known("apps", &out));
    assert_eq!(d.kind, DecisionKind::ExcludedNamespace);
    let none = BTreeMap::new();
    let d = p.evaluate(&s, NamespaceContext::known("apps", &none));
    assert_eq!(
        d.kind,
        DecisionKind::Enable,
        "cluster scope needs no namespace label"
    );
}

#[test]
fn scope_opt_in_needs_the_namespace_label_when_labels_are_known() {
    let p = Policy::default().compile();
    let s = grpc_svc();
    let none = BTreeMap::new();
    let d = p.evaluate(&s, NamespaceContext::known("apps", &none));
    assert_eq!(d.kind, DecisionKind::ExcludedNamespace);
    assert!(d.reason.contains("not labelled lb-l7-webhook/enabled=true"));
    let on = labels(&[(OPT_LABEL, "true")]);
    assert_eq!(
        p.evaluate(&s, NamespaceContext::known("apps", &on)).kind,
        DecisionKind::Enable
    );
    // The webhook does not know the labels: the API server's namespaceSelector already applied the scope.
    assert_eq!(
        p.evaluate(&s, NamespaceContext::scope_applied("apps")).kind,
        DecisionKind::Enable
    );
    // The exclude list applies in opt-in scope too, even when the namespace is labelled.
    assert_eq!(
        p.evaluate(&s, NamespaceContext::known("kube-system", &on))
            .kind,
        DecisionKind::ExcludedNamespace
    );
}

#[test]
fn headless_and_external_name_are_not_applicable() {
    let p = cluster_policy();
    let mut s = grpc_svc();
    s.spec.as_mut().unwrap().cluster_ip = Some("None".into());
    s.metadata.annotations = Some(labels(&[(DEFAULT_ANNOTATION_KEY, "enabled")]));
    let d = eval(&p, &s);
    assert_eq!(d.kind, DecisionKind::NotApplicable);
    assert!(d.reason.contains("headless"));
    assert!(
        d.warnings.iter().any(|w| w.contains("no effect")),
        "{:?}",
        d.warnings
    );
    let s = svc(
        json!({"metadata": {"name": "x"}, "spec": {"type": "ExternalName", "externalName": "example.org", "ports": [{"name": "grpc", "port": 1}]}}),
    );
    let d = eval(&p, &s);
    assert_eq!(d.kind, DecisionKind::NotApplicable);
    assert!(d.reason.contains("ExternalName"));
}

#[test]
fn every_pitfall_warning() {
    let p = cluster_policy();
    let s = svc(json!({
        "metadata": {"name": "x", "annotations": {
            "io.cilium.service/lb-l7": "enabled",
            "service.cilium.io/lb-l7-algorithm": "fastest"}},
        "spec": {"sessionAffinity": "ClientIP", "ports": [
            {"name": "grpc", "port": 80, "targetPort": 8080},
            {"name": "metrics", "port": 9090, "targetPort": "metrics"}]}
    }));
    let d = eval(&p, &s);
    assert_eq!(d.kind, DecisionKind::Enable);
    let all = d.warnings.join("\n");
    assert!(
        all.contains("io.cilium.service/lb-l7=enabled is an old spelling"),
        "{all}"
    );
    assert!(all.contains("Service has 2 ports"), "{all}");
    assert!(
        all.contains("port grpc (80/TCP) has targetPort 8080"),
        "{all}"
    );
    // A named targetPort is not judged without the pods: see named_target_port_warnings.
    assert!(!all.contains("targetPort metrics"), "{all}");
    assert!(all.contains("sessionAffinity ClientIP"), "{all}");
    assert!(all.contains("\"fastest\""), "{all}");
    assert_eq!(d.warnings.len(), 5, "{all}");
}

#[test]
fn named_target_ports_warn_only_when_they_resolve_to_another_number() {
    let s = svc(json!({
        "metadata": {"name": "x"},
        "spec": {"ports": [
            {"name": "grpc", "port": 50051, "targetPort": "grpc"},
            {"name": "admin", "port": 9000, "targetPort": "admin"},
            {"name": "pending", "port": 7000, "targetPort": "pending"},
            {"name": "numeric", "port": 80, "targetPort": 8080}]}
    }));
    let resolved: std::collections::BTreeMap<String, i32> = [
        ("grpc".to_string(), 50051),
        ("admin".to_string(), 9443),
        ("numeric".to_string(), 8080),
    ]
    .into_iter()
    .collect();
    let w = named_target_port_warnings(&s, &resolved);
    assert_eq!(
        w,
        vec![
            "port admin (9000/TCP) has targetPort admin (resolves to 9443): Cilium's L7 redirect has known bugs when targetPort differs from port"
                .to_string()
        ]
    );
    assert!(named_target_port_warnings(&s, &Default::default()).is_empty());
}

#[test]
fn the_demo_service_named_target_port_is_not_warned() {
    let text = include_str!("../../../../deploy/demo/service.yaml");
    let s: Service = serde_saphyr::from_str(text).expect("deploy/demo/service.yaml");
    let d = cluster_policy().evaluate(&s, NamespaceContext::scope_applied("apps"));
    assert_eq!(d.kind, DecisionKind::Enable, "{d:?}");
    assert!(
        d.warnings.iter().all(|w| !w.contains("targetPort")),
        "{:?}",
        d.warnings
    );
}

#[test]
fn legacy_key_alone_is_reported_even_without_a_match() {
    let s = svc(
        json!({"metadata": {"name": "x", "annotations": {"io.cilium.service/lb-l7": "enabled"}},
            "spec": {"ports": [{"name": "http", "port": 80}]}}),
    );
    let d = eval(&cluster_policy(), &s);
    assert_eq!(d.kind, DecisionKind::NoMatch);
    assert_eq!(d.warnings.len(), 1);
}

#[test]
fn rules_are_tried_in_order_and_labels_match_with_kubernetes_semantics() {
    let p = Policy::from_yaml(
        r#"
scope: cluster
rules:
  - name: payments
    selector:
      matchLabels: {team: payments}
      matchExpressions:
        - {key: tier, operator: In, values: [backend, api]}
        - {key: legacy, operator: DoesNotExist}
    algorithm: least_request
  - name: grpc-ports
    ports: {}
    algorithm: random
"#,
    )
    .expect("policy")
    .compile();
    let mut s = grpc_svc();
    s.metadata.labels = Some(labels(&[("team", "payments"), ("tier", "api")]));
    let d = eval(&p, &s);
    assert_eq!(d.rule.as_deref(), Some("payments"));
    assert_eq!(d.algorithm, Some(Algorithm::LeastRequest));
    assert!(
        d.reason
            .contains("labels match selector team=payments,tier in (backend,api),!legacy"),
        "{}",
        d.reason
    );

    s.metadata.labels = Some(labels(&[
        ("team", "payments"),
        ("tier", "api"),
        ("legacy", ""),
    ]));
    let d = eval(&p, &s);
    assert_eq!(
        d.rule.as_deref(),
        Some("grpc-ports"),
        "DoesNotExist fails, so the next rule decides"
    );
    assert_eq!(d.algorithm, Some(Algorithm::Random));

    // A label-only rule matches a Service with no gRPC port at all.
    let web = svc(
        json!({"metadata": {"name": "w", "labels": {"team": "payments", "tier": "backend"}},
            "spec": {"ports": [{"name": "http", "port": 80}]}}),
    );
    assert_eq!(eval(&p, &web).kind, DecisionKind::Enable);

    // The Service's own algorithm annotation wins.
    let mut s = grpc_svc();
    s.metadata.annotations = Some(labels(&[(ALGORITHM_ANNOTATION, "round_robin")]));
    assert_eq!(eval(&p, &s).algorithm, None);
}

#[test]
fn selector_operators() {
    let sel = |op: SelectorOperator, values: &[&str]| LabelSelector {
        match_labels: BTreeMap::new(),
        match_expressions: vec![LabelSelectorRequirement {
            key: "k".into(),
            operator: op,
            values: values.iter().map(|v| v.to_string()).collect(),
        }],
    };
    let with = labels(&[("k", "a")]);
    let without = BTreeMap::new();
    assert!(sel(SelectorOperator::In, &["a", "b"]).matches(&with));
    assert!(!sel(SelectorOperator::In, &["a"]).matches(&without));
    assert!(!sel(SelectorOperator::NotIn, &["a"]).matches(&with));
    assert!(sel(SelectorOperator::NotIn, &["a"]).matches(&without));
    assert!(sel(SelectorOperator::Exists, &[]).matches(&with));
    assert!(!sel(SelectorOperator::Exists, &[]).matches(&without));
    assert!(sel(SelectorOperator::DoesNotExist, &[]).matches(&without));
    assert!(!sel(SelectorOperator::DoesNotExist, &[]).matches(&with));
}

#[test]
fn custom_annotation_key() {
    let p = Policy::from_yaml(
        "scope: cluster\nannotationKey: io.cilium/lb-l7\nrules: [{name: r, ports: {}}]\n",
    )
    .expect("policy")
    .compile();
    let mut s = grpc_svc();
    s.metadata.annotations = Some(labels(&[("io.cilium/lb-l7", "enabled")]));
    assert_eq!(eval(&p, &s).kind, DecisionKind::AlreadyEnabled);
}

#[test]
fn invalid_policies_name_the_field() {
    let cases: &[(&str, &str)] = &[
        ("scope: cluster\nrules: []\n", "rules: at least one rule"),
        ("scope: cluster\nrulez: []\n", "rulez"),
        (
            "scope: everywhere\nrules: [{name: r, ports: {}}]\n",
            "everywhere",
        ),
        (
            "scope: cluster\nrules: [{name: r}]\n",
            "rules[0]: rule \"r\" needs `ports` or `selector`",
        ),
        (
            "scope: cluster\nrules: [{name: r, ports: {namez: [x]}}]\n",
            "namez",
        ),
        (
            "scope: cluster\nrules: [{name: r, ports: {}}, {name: r, ports: {}}]\n",
            "rules[1].name: duplicate",
        ),
        (
            "scope: cluster\nrules: [{name: r, selector: {}}]\n",
            "rules[0].selector: an empty selector",
        ),
        (
            "scope: cluster\nrules: [{name: r, selector: {matchExpressions: [{key: a, operator: In}]}}]\n",
            "rules[0].selector.matchExpressions[0].values",
        ),
        (
            "scope: cluster\nrules: [{name: r, selector: {matchExpressions: [{key: a, operator: Near, values: [x]}]}}]\n",
            "Near",
        ),
        (
            "scope: cluster\nrules: [{name: r, ports: {}, algorithm: fastest}]\n",
            "fastest",
        ),
        (
            "scope: cluster\nannotationKey: \"a b\"\nrules: [{name: r, ports: {}}]\n",
            "annotationKey",
        ),
        (
            "scope: cluster\ntimeoutSeconds: 60\nrules: [{name: r, ports: {}}]\n",
            "timeoutSeconds",
        ),
        (
            "scope: cluster\nexcludedNamespaces: [Kube_System]\nrules: [{name: r, ports: {}}]\n",
            "excludedNamespaces[0]",
        ),
        (
            "scope: cluster\nrules: [{name: r, ports: {names: [], appProtocols: []}}]\n",
            "rules[0].ports",
        ),
        ("", ""),
    ];
    for (text, expected) in cases {
        let err = Policy::from_yaml(text).expect_err(text);
        assert!(err.message.contains(expected), "{text:?}: {}", err.message);
    }
}
