//! `backfill` against a mock of the Kubernetes API server (kube's client over tower-test: no API server runs
//! here). Each test plays the API server request by request and checks what the backfill sends: the paged list
//! calls with `limit` and `continue`, the guarded JSON Patch (its `test` op, its content type), `dryRun=All`, and
//! the conflict path (a failed `test` answers 422, a conflict 409; the backfill reads the Service again,
//! evaluates it again and retries once, then reports).

#[path = "backfill_support/mod.rs"]
mod support;

use http::StatusCode;
use lb_l7_core::policy::Policy;
use lb_l7_webhook::backfill::{self, BackfillSummary, Options};
use serde_json::{Value, json};
use support::*;

fn cluster_policy() -> Policy {
    Policy::from_yaml("scope: cluster\nrules: [{name: grpc-ports, ports: {}}]\n").expect("policy")
}

fn options(page_size: u32, dry_run: bool) -> Options {
    Options {
        namespace: None,
        dry_run,
        page_size,
    }
}

/// Runs the backfill on a task; the test plays the API server on `handle`.
fn start(
    client: kube::Client,
    policy: Policy,
    options: Options,
) -> tokio::task::JoinHandle<(anyhow::Result<BackfillSummary>, String)> {
    tokio::spawn(async move {
        let mut out = Vec::new();
        let r = backfill::backfill(client, &policy, &options, &mut out).await;
        (r, String::from_utf8_lossy(&out).into_owned())
    })
}

async fn finish(
    task: tokio::task::JoinHandle<(anyhow::Result<BackfillSummary>, String)>,
) -> (BackfillSummary, String) {
    let (r, out) = tokio::time::timeout(std::time::Duration::from_secs(10), task)
        .await
        .expect("the backfill finished within 10 s")
        .expect("task");
    (r.expect("backfill ran"), out)
}

/// The namespaces list: one page.
async fn answer_namespaces(handle: &mut ApiHandle, page_size: u32) {
    let req = next(handle).await;
    req.assert("GET", "/api/v1/namespaces");
    assert_eq!(req.query.get("limit"), Some(&page_size.to_string()));
    assert_eq!(req.query.get("continue"), None);
    req.ok(page(
        "NamespaceList",
        vec![
            namespace("apps", json!({})),
            namespace("legacy", json!({"lb-l7-webhook/enabled": "false"})),
        ],
        None,
    ));
}

fn op(patch: &Value, i: usize) -> &Value {
    &patch.as_array().expect("a JSON Patch is an array")[i]
}

#[tokio::test]
async fn lists_in_pages_and_patches_each_enable_service_with_a_guarded_json_patch() {
    let (client, mut handle) = mock_client();
    let task = start(client, cluster_policy(), options(2, false));
    answer_namespaces(&mut handle, 2).await;

    // Services: two pages, linked by a continue token.
    let req = next(&mut handle).await;
    req.assert("GET", "/api/v1/services");
    assert_eq!(req.query.get("limit").map(String::as_str), Some("2"));
    assert_eq!(req.query.get("continue"), None);
    req.ok(page(
        "ServiceList",
        vec![
            service(
                "apps",
                "api",
                Some(json!({"team": "payments"})),
                grpc_ports(),
            ),
            service("apps", "web", None, json!([{"name": "http", "port": 80}])),
        ],
        Some("page-2-token"),
    ));
    let req = next(&mut handle).await;
    req.assert("GET", "/api/v1/services");
    assert_eq!(req.query.get("limit").map(String::as_str), Some("2"));
    assert_eq!(
        req.query.get("continue").map(String::as_str),
        Some("page-2-token")
    );
    req.ok(page(
        "ServiceList",
        vec![
            service("apps", "bare", None, grpc_ports()),
            service("legacy", "old", None, grpc_ports()),
            service(
                "apps",
                "done",
                Some(json!({"service.cilium.io/lb-l7": "enabled"})),
                grpc_ports(),
            ),
        ],
        None,
    ));

    // apps/api: annotations exist, so the patch tests them as they were read.
    let req = next(&mut handle).await;
    req.assert("PATCH", "/api/v1/namespaces/apps/services/api");
    assert_eq!(
        req.content_type.as_deref(),
        Some("application/json-patch+json")
    );
    assert_eq!(req.query.get("dryRun"), None, "not a dry run");
    assert_eq!(
        req.query.get("fieldManager").map(String::as_str),
        Some(backfill::FIELD_MANAGER)
    );
    assert_eq!(
        op(&req.body, 0),
        &json!({"op": "test", "path": "/metadata/annotations", "value": {"team": "payments"}})
    );
    assert_eq!(
        op(&req.body, 1),
        &json!({"op": "add", "path": "/metadata/annotations/service.cilium.io~1lb-l7", "value": "enabled"})
    );
    assert_eq!(
        op(&req.body, 2)["path"],
        "/metadata/annotations/lb-l7-webhook~1matched-by"
    );
    let mut patched = service(
        "apps",
        "api",
        Some(json!({"team": "payments", "service.cilium.io/lb-l7": "enabled"})),
        grpc_ports(),
    );
    patched["metadata"]["resourceVersion"] = json!("101");
    req.ok(patched);

    // apps/bare: no annotations, so the guard is the resourceVersion, and one op creates the map.
    let req = next(&mut handle).await;
    req.assert("PATCH", "/api/v1/namespaces/apps/services/bare");
    assert_eq!(
        op(&req.body, 0),
        &json!({"op": "test", "path": "/metadata/resourceVersion", "value": "100"})
    );
    assert_eq!(op(&req.body, 1)["op"], "add");
    assert_eq!(op(&req.body, 1)["path"], "/metadata/annotations");
    assert_eq!(
        op(&req.body, 1)["value"]["service.cilium.io/lb-l7"],
        "enabled"
    );
    req.ok(service(
        "apps",
        "bare",
        Some(json!({"service.cilium.io/lb-l7": "enabled"})),
        grpc_ports(),
    ));

    // Nothing else: web has no gRPC port, legacy/old is in an opted-out namespace, apps/done is already enabled.
    let (summary, out) = finish(task).await;
    assert_eq!(summary.decisions.total, 5);
    assert_eq!(summary.patched, 2);
    assert_eq!(summary.failed, 0);
    assert_eq!(summary.decisions.already_enabled, 1);
    assert_eq!(summary.decisions.excluded_namespace, 1);
    assert_eq!(summary.decisions.no_match, 1);
    assert!(
        out.contains("patched apps/api: service.cilium.io/lb-l7=enabled"),
        "{out}"
    );
    assert!(out.contains("patched apps/bare: "), "{out}");
    assert!(
        out.contains("backfill: 5 Services listed; 2 to enable: 2 patched, 0 failed"),
        "{out}"
    );
}

#[tokio::test]
async fn dry_run_sends_dry_run_all() {
    let (client, mut handle) = mock_client();
    let task = start(client, cluster_policy(), options(500, true));
    answer_namespaces(&mut handle, 500).await;
    let req = next(&mut handle).await;
    req.assert("GET", "/api/v1/services");
    req.ok(page(
        "ServiceList",
        vec![service("apps", "api", None, grpc_ports())],
        None,
    ));
    let req = next(&mut handle).await;
    req.assert("PATCH", "/api/v1/namespaces/apps/services/api");
    assert_eq!(req.query.get("dryRun").map(String::as_str), Some("All"));
    req.ok(service(
        "apps",
        "api",
        Some(json!({"service.cilium.io/lb-l7": "enabled"})),
        grpc_ports(),
    ));
    let (summary, out) = finish(task).await;
    assert_eq!(summary.patched, 1);
    assert!(out.contains("patched (server dry run) apps/api"), "{out}");
}

#[tokio::test]
async fn a_policy_in_dry_run_mode_never_patches() {
    let (client, mut handle) = mock_client();
    let policy =
        Policy::from_yaml("scope: cluster\nmode: dry-run\nrules: [{name: g, ports: {}}]\n")
            .expect("policy");
    let task = start(client, policy, options(500, false));
    answer_namespaces(&mut handle, 500).await;
    next(&mut handle).await.ok(page(
        "ServiceList",
        vec![service("apps", "api", None, grpc_ports())],
        None,
    ));
    let (summary, out) = finish(task).await;
    assert_eq!(summary.patched, 0);
    assert_eq!(summary.not_sent, 1);
    assert!(
        out.starts_with("policy mode is dry-run: no Service is patched"),
        "{out}"
    );
    assert!(
        out.contains("would patch apps/api: service.cilium.io/lb-l7=enabled"),
        "{out}"
    );
    // No PATCH was sent: the client is done and dropped its end.
    assert!(handle.next_request().await.is_none());
}

#[tokio::test]
async fn a_failed_test_is_retried_once_after_a_re_read() {
    let (client, mut handle) = mock_client();
    let task = start(client, cluster_policy(), options(500, false));
    answer_namespaces(&mut handle, 500).await;
    next(&mut handle).await.ok(page(
        "ServiceList",
        vec![service(
            "apps",
            "api",
            Some(json!({"team": "a"})),
            grpc_ports(),
        )],
        None,
    ));
    let req = next(&mut handle).await;
    req.assert("PATCH", "/api/v1/namespaces/apps/services/api");
    assert_eq!(op(&req.body, 0)["value"], json!({"team": "a"}));
    req.answer(StatusCode::UNPROCESSABLE_ENTITY, failed_test_status());

    // Re-read: someone added an annotation meanwhile.
    let req = next(&mut handle).await;
    req.assert("GET", "/api/v1/namespaces/apps/services/api");
    let mut fresh = service(
        "apps",
        "api",
        Some(json!({"team": "a", "owner": "b"})),
        grpc_ports(),
    );
    fresh["metadata"]["resourceVersion"] = json!("150");
    req.ok(fresh);

    // The retry tests what was read the second time.
    let req = next(&mut handle).await;
    req.assert("PATCH", "/api/v1/namespaces/apps/services/api");
    assert_eq!(
        op(&req.body, 0),
        &json!({"op": "test", "path": "/metadata/annotations", "value": {"team": "a", "owner": "b"}})
    );
    req.ok(service(
        "apps",
        "api",
        Some(json!({"service.cilium.io/lb-l7": "enabled"})),
        grpc_ports(),
    ));

    let (summary, out) = finish(task).await;
    assert_eq!(summary.patched, 1);
    assert_eq!(summary.retried, 1);
    assert_eq!(summary.failed, 0);
    assert!(
        out.contains("patched after a conflict and a re-read apps/api"),
        "{out}"
    );
}

#[tokio::test]
async fn a_second_conflict_is_reported_as_failed() {
    let (client, mut handle) = mock_client();
    let task = start(client, cluster_policy(), options(500, false));
    answer_namespaces(&mut handle, 500).await;
    next(&mut handle).await.ok(page(
        "ServiceList",
        vec![service("apps", "api", None, grpc_ports())],
        None,
    ));
    next(&mut handle)
        .await
        .answer(StatusCode::CONFLICT, conflict_status("api"));
    let req = next(&mut handle).await;
    req.assert("GET", "/api/v1/namespaces/apps/services/api");
    req.ok(service("apps", "api", None, grpc_ports()));
    let req = next(&mut handle).await;
    req.assert("PATCH", "/api/v1/namespaces/apps/services/api");
    req.answer(StatusCode::UNPROCESSABLE_ENTITY, failed_test_status());

    let (summary, out) = finish(task).await;
    assert_eq!(summary.failed, 1);
    assert_eq!(summary.patched, 0);
    assert!(out.contains("FAILED apps/api: conflict, and again after reading the Service once more: HTTP 422 Invalid"), "{out}");
    // Exactly one retry: nothing more is sent.
    assert!(handle.next_request().await.is_none());
}

#[tokio::test]
async fn a_service_that_no_longer_needs_the_annotation_after_a_conflict_is_skipped() {
    let (client, mut handle) = mock_client();
    let task = start(client, cluster_policy(), options(500, false));
    answer_namespaces(&mut handle, 500).await;
    next(&mut handle).await.ok(page(
        "ServiceList",
        vec![service("apps", "api", None, grpc_ports())],
        None,
    ));
    next(&mut handle)
        .await
        .answer(StatusCode::UNPROCESSABLE_ENTITY, failed_test_status());
    // Its owner opted it out meanwhile.
    next(&mut handle).await.ok(service(
        "apps",
        "api",
        Some(json!({"service.cilium.io/lb-l7": "disabled"})),
        grpc_ports(),
    ));
    let (summary, out) = finish(task).await;
    assert_eq!(summary.skipped_after_reread, 1);
    assert_eq!(summary.failed, 0);
    assert!(
        out.contains("skipped apps/api: it changed since it was listed, and is now opted-out"),
        "{out}"
    );
    assert!(handle.next_request().await.is_none());
}

#[tokio::test]
async fn other_errors_are_not_retried() {
    let (client, mut handle) = mock_client();
    let task = start(client, cluster_policy(), options(500, false));
    answer_namespaces(&mut handle, 500).await;
    next(&mut handle).await.ok(page(
        "ServiceList",
        vec![service("apps", "api", None, grpc_ports())],
        None,
    ));
    next(&mut handle).await.answer(
        StatusCode::FORBIDDEN,
        json!({"kind": "Status", "apiVersion": "v1", "status": "Failure", "code": 403, "reason": "Forbidden",
            "message": "services \"api\" is forbidden: User \"system:serviceaccount:lb-l7-system:backfill\" cannot patch resource \"services\""}),
    );
    let (summary, out) = finish(task).await;
    assert_eq!(summary.failed, 1);
    assert!(out.contains("FAILED apps/api: HTTP 403 Forbidden"), "{out}");
    assert!(handle.next_request().await.is_none());
}

#[tokio::test]
async fn one_namespace_reads_that_namespace_only() {
    let (client, mut handle) = mock_client();
    let task = start(
        client,
        Policy::default(),
        Options {
            namespace: Some("apps".into()),
            dry_run: false,
            page_size: 50,
        },
    );
    let req = next(&mut handle).await;
    req.assert("GET", "/api/v1/namespaces/apps");
    req.ok(namespace("apps", json!({"lb-l7-webhook/enabled": "true"})));
    let req = next(&mut handle).await;
    req.assert("GET", "/api/v1/namespaces/apps/services");
    assert_eq!(req.query.get("limit").map(String::as_str), Some("50"));
    req.ok(page(
        "ServiceList",
        vec![service(
            "apps",
            "api",
            Some(json!({"service.cilium.io/lb-l7": "enabled"})),
            grpc_ports(),
        )],
        None,
    ));
    // Second run of a backfill: the Service is already enabled, nothing is patched.
    let (summary, out) = finish(task).await;
    assert_eq!(summary.decisions.already_enabled, 1);
    assert_eq!(summary.patched, 0);
    assert!(out.contains("0 to enable: 0 patched, 0 failed"), "{out}");
    assert!(handle.next_request().await.is_none());
}

#[tokio::test]
async fn conflict_detection_matches_what_the_api_server_returns() {
    let status = |v: Value| kube::Error::Api(Box::new(serde_json::from_value(v).expect("status")));
    assert!(backfill::is_conflict(&status(failed_test_status())));
    assert!(backfill::is_conflict(&status(conflict_status("x"))));
    // A 422 because the patched object is invalid is not a conflict.
    assert!(!backfill::is_conflict(&status(
        json!({"code": 422, "reason": "Invalid",
        "message": "Service \"x\" is invalid: metadata.annotations: Invalid value"})
    )));
    assert!(!backfill::is_conflict(&status(
        json!({"code": 403, "reason": "Forbidden", "message": "no"})
    )));
}
