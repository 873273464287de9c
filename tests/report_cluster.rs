//! `report --cluster` against a mock of the Kubernetes API server (kube's client over tower-test: no API server
//! runs here). Checks the paged list calls (`limit`, then `continue` until the last page) for Namespaces and
//! Services, and that namespace labels from the cluster drive the decisions.

#[path = "backfill_support/mod.rs"]
mod support;

use lb_l7_core::policy::{DecisionKind, Policy};
use lb_l7_webhook::report::{self, read_cluster};
use serde_json::json;
use support::*;

#[tokio::test]
async fn pages_every_list_and_evaluates_with_cluster_namespace_labels() {
    let (client, mut handle) = mock_client();
    let task = tokio::spawn(async move { read_cluster(&client, None, 2).await });

    // Namespaces: two pages.
    let req = next(&mut handle).await;
    req.assert("GET", "/api/v1/namespaces");
    assert_eq!(req.query.get("limit").map(String::as_str), Some("2"));
    assert_eq!(req.query.get("continue"), None);
    req.ok(page(
        "NamespaceList",
        vec![
            namespace("apps", json!({"lb-l7-webhook/enabled": "true"})),
            namespace("quiet", json!({})),
        ],
        Some("ns-token"),
    ));
    let req = next(&mut handle).await;
    req.assert("GET", "/api/v1/namespaces");
    assert_eq!(
        req.query.get("continue").map(String::as_str),
        Some("ns-token")
    );
    req.ok(page(
        "NamespaceList",
        vec![namespace("kube-system", json!({}))],
        None,
    ));

    // Services: three pages.
    let req = next(&mut handle).await;
    req.assert("GET", "/api/v1/services");
    assert_eq!(req.query.get("limit").map(String::as_str), Some("2"));
    assert_eq!(req.query.get("continue"), None);
    req.ok(page(
        "ServiceList",
        vec![
            service("apps", "api", None, grpc_ports()),
            service("quiet", "api", None, grpc_ports()),
        ],
        Some("svc-1"),
    ));
    let req = next(&mut handle).await;
    assert_eq!(req.query.get("continue").map(String::as_str), Some("svc-1"));
    req.ok(page(
        "ServiceList",
        vec![
            service("kube-system", "kube-dns", None, grpc_ports()),
            service(
                "apps",
                "on",
                Some(json!({"service.cilium.io/lb-l7": "enabled"})),
                grpc_ports(),
            ),
        ],
        Some("svc-2"),
    ));
    let req = next(&mut handle).await;
    assert_eq!(req.query.get("continue").map(String::as_str), Some("svc-2"));
    assert_eq!(req.query.get("limit").map(String::as_str), Some("2"));
    // A Service whose namespace was deleted between the two lists.
    req.ok(page(
        "ServiceList",
        vec![service("gone", "late", None, grpc_ports())],
        None,
    ));

    let inv = tokio::time::timeout(std::time::Duration::from_secs(10), task)
        .await
        .expect("done within 10 s")
        .expect("task")
        .expect("read");
    assert!(handle.next_request().await.is_none(), "no more requests");

    let r = report::build_report(&Policy::default().compile(), inv);
    let decision = |ns: &str, name: &str| {
        r.services
            .iter()
            .find(|e| e.namespace == ns && e.name == name)
            .unwrap_or_else(|| panic!("{ns}/{name}"))
    };
    assert_eq!(decision("apps", "api").decision, DecisionKind::Enable);
    assert_eq!(decision("apps", "api").uid.as_deref(), Some("uid-api"));
    assert_eq!(
        decision("apps", "on").decision,
        DecisionKind::AlreadyEnabled
    );
    assert_eq!(
        decision("quiet", "api").decision,
        DecisionKind::ExcludedNamespace
    );
    assert_eq!(
        decision("kube-system", "kube-dns").decision,
        DecisionKind::ExcludedNamespace
    );
    let late = decision("gone", "late");
    assert_eq!(late.decision, DecisionKind::ExcludedNamespace);
    assert!(
        late.warnings[0].contains("namespace gone was not found in the cluster"),
        "{:?}",
        late.warnings
    );
    assert_eq!(r.summary.total, 5);
    assert!(r.errors.is_empty());
}

#[tokio::test]
async fn one_namespace_gets_that_namespace_and_lists_its_services() {
    let (client, mut handle) = mock_client();
    let task = tokio::spawn(async move { read_cluster(&client, Some("apps"), 500).await });
    let req = next(&mut handle).await;
    req.assert("GET", "/api/v1/namespaces/apps");
    req.ok(namespace("apps", json!({"lb-l7-webhook/enabled": "true"})));
    let req = next(&mut handle).await;
    req.assert("GET", "/api/v1/namespaces/apps/services");
    assert_eq!(req.query.get("limit").map(String::as_str), Some("500"));
    req.ok(page(
        "ServiceList",
        vec![service("apps", "api", None, grpc_ports())],
        None,
    ));
    let inv = task.await.expect("task").expect("read");
    assert_eq!(inv.services.len(), 1);
    assert_eq!(inv.namespaces["apps"]["lb-l7-webhook/enabled"], "true");
}

#[tokio::test]
async fn unreadable_namespaces_leave_every_namespace_unknown_and_the_services_still_listed() {
    let (client, mut handle) = mock_client();
    let task = tokio::spawn(async move { read_cluster(&client, None, 500).await });
    next(&mut handle).await.answer(
        http::StatusCode::FORBIDDEN,
        json!({"kind": "Status", "apiVersion": "v1", "status": "Failure", "code": 403, "reason": "Forbidden",
            "message": "namespaces is forbidden: User \"x\" cannot list resource \"namespaces\""}),
    );
    let req = next(&mut handle).await;
    req.assert("GET", "/api/v1/services");
    req.ok(page(
        "ServiceList",
        vec![service("apps", "api", None, grpc_ports())],
        None,
    ));
    let inv = task.await.expect("task").expect("services were readable");
    assert_eq!(
        inv.namespace_source,
        lb_l7_webhook::input::manifests::NamespaceSource::Unreadable
    );
    let mut policy = Policy::default();
    policy.scope = lb_l7_core::policy::Scope::Cluster;
    let r = report::build_report(&policy.compile(), inv);
    let e = &r.services[0];
    assert!(
        e.warnings
            .iter()
            .any(|w| w.contains("Namespaces could not be read")),
        "{:?}",
        e.warnings
    );
}

#[tokio::test]
async fn a_service_list_error_names_what_could_not_be_listed() {
    let (client, mut handle) = mock_client();
    let task = tokio::spawn(async move { read_cluster(&client, None, 500).await });
    let req = next(&mut handle).await;
    req.assert("GET", "/api/v1/namespaces");
    req.ok(page(
        "NamespaceList",
        vec![namespace("apps", json!({}))],
        None,
    ));
    next(&mut handle).await.answer(
        http::StatusCode::FORBIDDEN,
        json!({"kind": "Status", "apiVersion": "v1", "status": "Failure", "code": 403, "reason": "Forbidden",
            "message": "services is forbidden: User \"x\" cannot list resource \"services\""}),
    );
    let err = task.await.expect("task").expect_err("forbidden");
    let text = format!("{err:#}");
    assert!(text.contains("cannot list Services"), "{text}");
    assert!(text.contains("forbidden"), "{text}");
}
