//! One evaluation, really: the webhook, `report --cluster`, `backfill --dry-run`, `doctor` and the reconciler,
//! given the same cluster, name the same Services.
//!
//! The cluster is the scripted API server of tests/reconcile_support (kube's client over a tower-test mock,
//! answered from one shared state: a mock because no API server runs here). Each edge gets a fresh copy of the
//! same state, so one edge's writes (the reconciler's patches, backfill's server dry run in this fake) cannot
//! change what the next one reads. No webhook configuration is installed in the fake, so every command uses the
//! built-in default policy (namespace opt-in, enforce), as doctor's and report's "which policy" rule says.
//!
//! The webhook itself is not called by the API server here; it is driven as the API server would drive it: the
//! webhook configuration rendered from the same policy decides which namespaces and Services are sent (its
//! selectors are applied by a label-selector matcher below), and each sent Service goes through the webhook's
//! AdmissionReview handling.

mod reconcile_support;

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;
use lb_l7_core::policy::{DecisionKind, Policy};
use lb_l7_core::render::{RenderOptions, render_webhook_configuration};
use lb_l7_webhook::reconcile::{Options, ReconcileMetrics, run_reconciler};
use lb_l7_webhook::{backfill, doctor, report};
use reconcile_support::FakeApi;
use serde_json::{Value, json};

/// The namespaces and Services every edge sees: (namespace, labels) and (namespace, name, annotations, labels).
fn cluster(forbid_namespaces: bool) -> FakeApi {
    let api = FakeApi::new();
    api.put_namespace("apps", json!({"lb-l7-webhook/enabled": "true"}));
    api.put_namespace(
        "shop",
        json!({"lb-l7-webhook/enabled": "true", "team": "a"}),
    );
    api.put_namespace("quiet", json!({}));
    api.put_namespace("off", json!({"lb-l7-webhook/enabled": "false"}));
    api.put_namespace("kube-system", json!({"lb-l7-webhook/enabled": "true"}));
    api.put_service("apps", "api", None, None);
    api.put_service("shop", "orders", None, None);
    api.put_service(
        "apps",
        "done",
        Some(json!({"service.cilium.io/lb-l7": "enabled"})),
        None,
    );
    api.put_service(
        "apps",
        "owner-said-no",
        Some(json!({"service.cilium.io/lb-l7": "disabled"})),
        None,
    );
    api.put_service(
        "apps",
        "opted-out",
        None,
        Some(json!({"lb-l7-webhook/enabled": "false"})),
    );
    api.put_service("quiet", "api", None, None);
    api.put_service("off", "api", None, None);
    api.put_service("kube-system", "dns", None, None);
    if forbid_namespaces {
        api.forbid("namespaces");
    }
    api
}

fn set(items: &[&str]) -> BTreeSet<String> {
    items.iter().map(|s| s.to_string()).collect()
}

/// `report --cluster`: the Services whose decision is `enable`.
async fn report_names(api: &FakeApi, policy: &Policy) -> BTreeSet<String> {
    let inventory = report::read_cluster(&api.client(1), None, 500)
        .await
        .expect("report reads the cluster");
    report::build_report(&policy.compile(), inventory)
        .services
        .iter()
        .filter(|e| e.decision == DecisionKind::Enable)
        .map(|e| format!("{}/{}", e.namespace, e.name))
        .collect()
}

/// `backfill --dry-run`: the Services it names as needing the annotation (patched with dryRun=All, or named and
/// skipped because their namespace's labels are unknown).
async fn backfill_names(api: &FakeApi, policy: &Policy) -> BTreeSet<String> {
    let mut out = Vec::new();
    let options = backfill::Options {
        namespace: None,
        dry_run: true,
        page_size: 500,
    };
    let summary = backfill::backfill(api.client(2), policy, &options, &mut out)
        .await
        .expect("backfill runs");
    let text = String::from_utf8(out).expect("utf-8");
    let named: BTreeSet<String> = text
        .lines()
        .filter_map(|l| {
            l.strip_prefix("patched (server dry run) ")
                .or_else(|| l.strip_prefix("skipped "))
        })
        .filter_map(|rest| rest.split(':').next())
        .map(str::to_string)
        .collect();
    assert_eq!(named.len(), summary.decisions.enable, "{text}");
    named
}

/// `doctor`: the Services its "selected Services annotated" check names as selected and not annotated.
async fn doctor_names(api: &FakeApi) -> BTreeSet<String> {
    let opts = doctor::DiagnoseOptions::at(1_893_456_000);
    let report = doctor::examine(&api.client(3), &opts)
        .await
        .expect("doctor runs");
    let check = report
        .checks
        .iter()
        .find(|c| c.id == "effect.not-annotated")
        .expect("the effect.not-annotated check ran");
    check.objects.iter().cloned().collect()
}

/// The reconciler: the Services it patched once its caches were synced and everything settled.
async fn reconciler_names(api: &FakeApi, policy: &Policy, expect_sync: bool) -> BTreeSet<String> {
    let metrics = ReconcileMetrics::default();
    let ready = Arc::new(AtomicBool::new(false));
    let (stop, stop_rx) = tokio::sync::watch::channel(false);
    let options = Options {
        identity: "one".into(),
        max_patches_per_second: 0.0,
        ..Options::default()
    };
    let task = tokio::spawn(run_reconciler(
        api.client(4),
        policy.clone(),
        options,
        metrics.clone(),
        ready.clone(),
        stop_rx,
    ));
    // Virtual time (the clock is paused): a minute is plenty to sync, win the Lease and patch.
    for _ in 0..600 {
        if ready.load(Ordering::Relaxed) && metrics.leader.get() == 1 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(
        ready.load(Ordering::Relaxed),
        expect_sync,
        "the reconciler's caches synced"
    );
    tokio::time::sleep(Duration::from_secs(10)).await;
    let _ = stop.send(true);
    let _ = tokio::time::timeout(Duration::from_secs(30), task).await;
    api.patches()
        .iter()
        .filter(|p| p.client == 4 && p.status == 200)
        .map(|p| format!("{}/{}", p.namespace, p.name))
        .collect()
}

/// Kubernetes label-selector semantics (matchLabels and In / NotIn / Exists / DoesNotExist).
fn selects(selector: Option<&LabelSelector>, labels: &BTreeMap<String, String>) -> bool {
    let Some(selector) = selector else {
        return true;
    };
    let by_labels = selector
        .match_labels
        .iter()
        .flatten()
        .all(|(k, v)| labels.get(k) == Some(v));
    let by_expressions = selector.match_expressions.iter().flatten().all(|e| {
        let value = labels.get(&e.key);
        let values = e.values.clone().unwrap_or_default();
        match e.operator.as_str() {
            "In" => value.is_some_and(|v| values.contains(v)),
            "NotIn" => value.is_none_or(|v| !values.contains(v)),
            "Exists" => value.is_some(),
            "DoesNotExist" => value.is_none(),
            other => panic!("operator {other}"),
        }
    });
    by_labels && by_expressions
}

/// The webhook, as the API server drives it on a write of each Service: the rendered configuration's selectors
/// decide whether the webhook is called, and the Services it annotates are named.
fn webhook_names(policy: &Policy, namespaces: &Value, services: &[Value]) -> BTreeSet<String> {
    let config = render_webhook_configuration(policy, &RenderOptions::default());
    let webhook = &config.webhooks.as_ref().expect("webhooks")[0];
    let compiled = policy.compile();
    let mut named = BTreeSet::new();
    for svc in services {
        let ns = svc["metadata"]["namespace"].as_str().expect("namespace");
        let name = svc["metadata"]["name"].as_str().expect("name");
        // The API server labels every namespace with its name.
        let mut ns_labels: BTreeMap<String, String> =
            serde_json::from_value(namespaces[ns].clone()).unwrap_or_default();
        ns_labels.insert("kubernetes.io/metadata.name".into(), ns.into());
        let svc_labels: BTreeMap<String, String> =
            serde_json::from_value(svc["metadata"]["labels"].clone()).unwrap_or_default();
        if !selects(webhook.namespace_selector.as_ref(), &ns_labels)
            || !selects(webhook.object_selector.as_ref(), &svc_labels)
        {
            continue;
        }
        let review = json!({
            "apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview",
            "request": {
                "uid": format!("uid-{ns}-{name}"),
                "kind": {"group": "", "version": "v1", "kind": "Service"},
                "resource": {"group": "", "version": "v1", "resource": "services"},
                "namespace": ns, "name": name, "operation": "CREATE",
                "userInfo": {"username": "test"}, "object": svc,
            }
        });
        let body = serde_json::to_vec(&review).expect("json");
        let reviewed = lb_l7_core::admission::review(&compiled, &body).expect("a valid review");
        let answer = serde_json::to_value(&reviewed.response).expect("answer JSON");
        assert_eq!(
            answer["response"]["allowed"], true,
            "the webhook never blocks"
        );
        if reviewed.patched() {
            assert!(answer["response"]["patch"].is_string(), "{answer}");
            named.insert(format!("{ns}/{name}"));
        }
    }
    named
}

#[tokio::test(start_paused = true)]
async fn every_edge_names_the_same_services() {
    let policy = Policy::default();
    let want = set(&["apps/api", "shop/orders"]);

    assert_eq!(report_names(&cluster(false), &policy).await, want, "report");
    assert_eq!(
        backfill_names(&cluster(false), &policy).await,
        want,
        "backfill"
    );
    assert_eq!(doctor_names(&cluster(false)).await, want, "doctor");
    assert_eq!(
        reconciler_names(&cluster(false), &policy, true).await,
        want,
        "reconciler"
    );

    let namespaces = json!({
        "apps": {"lb-l7-webhook/enabled": "true"}, "shop": {"lb-l7-webhook/enabled": "true", "team": "a"},
        "quiet": {}, "off": {"lb-l7-webhook/enabled": "false"}, "kube-system": {"lb-l7-webhook/enabled": "true"},
    });
    let services: Vec<Value> = cluster(false).services();
    assert_eq!(
        webhook_names(&policy, &namespaces, &services),
        want,
        "webhook"
    );
}

#[tokio::test(start_paused = true)]
async fn with_namespaces_unreadable_no_edge_calls_a_service_selected() {
    // RBAC that does not allow reading Namespaces: no namespace's opt-in label is known. Every edge judges the
    // Services as in namespaces without labels (scope namespace-opt-in: none selected) and says why; none of
    // them names a Service that another would then leave alone. (Before one namespace context, doctor named
    // apps/api and shop/orders "selected, run backfill", which backfill then did not patch.)
    let policy = Policy::default();
    assert_eq!(
        report_names(&cluster(true), &policy).await,
        set(&[]),
        "report"
    );
    assert_eq!(
        backfill_names(&cluster(true), &policy).await,
        set(&[]),
        "backfill"
    );
    assert_eq!(doctor_names(&cluster(true)).await, set(&[]), "doctor");
    assert_eq!(
        reconciler_names(&cluster(true), &policy, false).await,
        set(&[]),
        "reconciler"
    );

    // With the cluster-wide scope the same unreadable list names the same Services everywhere: report and
    // backfill name them, and backfill leaves them unpatched (their opt-out labels are unknown).
    let cluster_wide =
        Policy::from_yaml("scope: cluster\nrules: [{name: grpc-ports, ports: {}}]\n")
            .expect("policy");
    let named = report_names(&cluster(true), &cluster_wide).await;
    assert!(
        named.contains("apps/api") && named.contains("off/api"),
        "{named:?}"
    );
    assert_eq!(backfill_names(&cluster(true), &cluster_wide).await, named);
}
