//! The reconciler against a scripted API server (tests/reconcile_support: kube's client over a tower-test mock,
//! answered request by request from one shared state). Tokio's clock is paused: waits, backoff, the rate limit and
//! the Lease's expiry run on virtual time, so no test depends on how fast this machine is.

mod reconcile_support;

use std::collections::BTreeSet;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use lb_l7_core::policy::Policy;
use lb_l7_webhook::reconcile::{Options, ReconcileMetrics, run_reconciler};
use reconcile_support::FakeApi;
use serde_json::json;
use tokio::sync::watch;

struct Running {
    stop: watch::Sender<bool>,
    task: tokio::task::JoinHandle<anyhow::Result<()>>,
    metrics: ReconcileMetrics,
    ready: Arc<AtomicBool>,
}

impl Running {
    async fn stop(self) {
        let _ = self.stop.send(true);
        let r = self.task.await.expect("the reconciler task");
        assert!(r.is_ok(), "{r:?}");
    }
}

fn policy(extra: &str) -> Policy {
    Policy::from_yaml(&format!(
        "scope: namespace-opt-in\n{extra}rules: [{{name: grpc-ports, ports: {{}}, algorithm: least_request}}]\n"
    ))
    .expect("policy")
}

fn options(identity: &str) -> Options {
    Options {
        identity: identity.to_string(),
        max_patches_per_second: 0.0,
        lease_duration: Duration::from_secs(3),
        lease_retry: Duration::from_millis(500),
        backoff_base: Duration::from_millis(200),
        backoff_max: Duration::from_secs(5),
        ..Options::default()
    }
}

fn start(api: &FakeApi, client: usize, policy: Policy, options: Options) -> Running {
    let metrics = ReconcileMetrics::default();
    let ready = Arc::new(AtomicBool::new(false));
    let (stop, stop_rx) = watch::channel(false);
    let task = tokio::spawn(run_reconciler(
        api.client(client),
        policy,
        options,
        metrics.clone(),
        ready.clone(),
        stop_rx,
    ));
    Running {
        stop,
        task,
        metrics,
        ready,
    }
}

/// Waits (virtual time) until `cond` holds; fails after 10 virtual minutes.
async fn until(what: &str, cond: impl Fn() -> bool) {
    for _ in 0..6000 {
        if cond() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("never happened: {what}");
}

/// Lets everything in flight settle (virtual time).
async fn settle() {
    tokio::time::sleep(Duration::from_secs(5)).await;
}

fn patched(api: &FakeApi) -> BTreeSet<String> {
    api.patches()
        .iter()
        .filter(|p| p.status == 200)
        .map(|p| format!("{}/{}", p.namespace, p.name))
        .collect()
}

fn set(items: &[&str]) -> BTreeSet<String> {
    items.iter().map(|s| s.to_string()).collect()
}

async fn started(api: &FakeApi, r: &Running) {
    until("caches synced and the Lease held", || {
        r.ready.load(Ordering::Relaxed) && r.metrics.leader.get() == 1
    })
    .await;
    let _ = api;
}

#[tokio::test(start_paused = true)]
async fn a_namespace_that_opts_in_gets_exactly_its_selected_services_patched() {
    let api = FakeApi::new();
    api.put_namespace("apps", json!({}));
    api.put_namespace("other", json!({}));
    api.put_namespace("kube-system", json!({"lb-l7-webhook/enabled": "true"}));
    api.put_service("apps", "api", None, None);
    api.put_service("apps", "web", Some(json!({"team": "a"})), None);
    api.put_service(
        "apps",
        "opted-out",
        None,
        Some(json!({"lb-l7-webhook/enabled": "false"})),
    );
    api.put_service(
        "apps",
        "owner-said-no",
        Some(json!({"service.cilium.io/lb-l7": "disabled"})),
        None,
    );
    api.put_service("other", "x", None, None);
    api.put_service("kube-system", "dns", None, None);
    api.put_service("no-such-namespace", "y", None, None);
    let r = start(&api, 1, policy(""), options("a"));
    started(&api, &r).await;
    settle().await;
    assert!(
        api.patches().is_empty(),
        "nothing is opted in yet: {:?}",
        api.patches()
    );

    api.put_namespace("apps", json!({"lb-l7-webhook/enabled": "true"}));
    until("both selected Services patched", || {
        patched(&api).len() == 2
    })
    .await;
    settle().await;
    assert_eq!(patched(&api), set(&["apps/api", "apps/web"]));
    assert_eq!(
        api.patches().len(),
        2,
        "one PATCH each: {:?}",
        api.patches()
    );
    for p in api.patches() {
        assert_eq!(p.body[0]["op"], "test", "the patch is guarded: {}", p.body);
    }
    let web = api.service_annotations("apps", "web");
    assert_eq!(
        web.get("service.cilium.io/lb-l7").map(String::as_str),
        Some("enabled")
    );
    assert_eq!(web.get("team").map(String::as_str), Some("a"));
    assert!(web.contains_key("lb-l7-webhook/matched-by"));
    let events = api.events();
    let enabled: BTreeSet<_> = events
        .iter()
        .filter(|e| e.reason == "L7LoadBalancingEnabled")
        .map(|e| format!("{}/{}", e.namespace, e.regarding))
        .collect();
    assert_eq!(enabled, set(&["apps/api", "apps/web"]));
    assert!(
        events.iter().all(|e| e.note.contains("rule grpc-ports")),
        "{events:?}"
    );
    assert_eq!(r.metrics.patches_with("enabled"), 2);
    r.stop().await;
}

#[tokio::test(start_paused = true)]
async fn conflicts_failed_tests_server_errors_and_dropped_watches_are_survived() {
    let api = FakeApi::new();
    api.put_namespace("apps", json!({"lb-l7-webhook/enabled": "true"}));
    for name in ["conflict", "failed-test", "server-error"] {
        api.put_service("apps", name, None, None);
    }
    api.fail_next_patch("apps", "conflict", &[409]);
    api.fail_next_patch("apps", "failed-test", &[422]);
    api.fail_next_patch("apps", "server-error", &[500, 500]);
    api.drop_next_watch("services", 1);
    api.drop_next_watch("namespaces", 1);
    let r = start(&api, 1, policy(""), options("a"));
    started(&api, &r).await;
    until("all three annotated", || {
        ["conflict", "failed-test", "server-error"].iter().all(|n| {
            api.service_annotations("apps", n)
                .contains_key("service.cilium.io/lb-l7")
        })
    })
    .await;
    // After the dropped watches, a new Service still arrives through the watch and is patched.
    api.put_service("apps", "late", None, None);
    until("the late Service annotated", || {
        api.service_annotations("apps", "late")
            .contains_key("service.cilium.io/lb-l7")
    })
    .await;
    assert!(
        r.metrics.patches_with("failed") >= 2,
        "the two 500s are counted"
    );
    let statuses: Vec<u16> = api
        .patches()
        .iter()
        .filter(|p| p.name == "server-error")
        .map(|p| p.status)
        .collect();
    assert_eq!(statuses, vec![500, 500, 200]);
    r.stop().await;
}

#[tokio::test(start_paused = true)]
async fn revert_removes_only_what_matched_by_marks() {
    let api = FakeApi::new();
    api.put_namespace("apps", json!({"lb-l7-webhook/enabled": "true"}));
    let reason = "port grpc/50051/TCP matches rule 'grpc-ports'";
    api.put_service(
        "apps",
        "ours",
        Some(json!({"service.cilium.io/lb-l7": "enabled", "service.cilium.io/lb-l7-algorithm": "least_request",
            "lb-l7-webhook/matched-by": reason, "team": "a"})),
        None,
    );
    api.put_service(
        "apps",
        "theirs",
        Some(json!({"service.cilium.io/lb-l7": "enabled"})),
        None,
    );
    let mut opts = options("a");
    opts.revert = true;
    let r = start(&api, 1, policy(""), opts);
    started(&api, &r).await;
    settle().await;
    assert!(
        api.patches().is_empty(),
        "both are selected and annotated: {:?}",
        api.patches()
    );

    api.put_namespace("apps", json!({}));
    until("ours reverted", || {
        !api.service_annotations("apps", "ours")
            .contains_key("lb-l7-webhook/matched-by")
    })
    .await;
    settle().await;
    assert_eq!(patched(&api), set(&["apps/ours"]));
    let ours = api.service_annotations("apps", "ours");
    assert_eq!(ours.keys().collect::<Vec<_>>(), vec!["team"]);
    let theirs = api.service_annotations("apps", "theirs");
    assert_eq!(
        theirs.get("service.cilium.io/lb-l7").map(String::as_str),
        Some("enabled")
    );
    assert!(
        api.events()
            .iter()
            .any(|e| e.reason == "L7LoadBalancingReverted" && e.regarding == "ours")
    );
    r.stop().await;
}

#[tokio::test(start_paused = true)]
async fn a_dry_run_policy_never_sends_a_patch() {
    let api = FakeApi::new();
    api.put_namespace("apps", json!({"lb-l7-webhook/enabled": "true"}));
    for name in ["a", "b", "c"] {
        api.put_service("apps", name, None, None);
    }
    let r = start(&api, 1, policy("mode: dry-run\n"), options("a"));
    started(&api, &r).await;
    until("three WouldEnable Events", || {
        api.events()
            .iter()
            .filter(|e| e.reason == "WouldEnable")
            .count()
            == 3
    })
    .await;
    settle().await;
    assert!(api.patches().is_empty(), "{:?}", api.patches());
    assert_eq!(r.metrics.patches_with("would-enable"), 3);
    r.stop().await;
}

#[tokio::test(start_paused = true)]
async fn the_rate_limit_holds() {
    let api = FakeApi::new();
    api.put_namespace("apps", json!({}));
    for i in 0..25 {
        api.put_service("apps", &format!("s{i:02}"), None, None);
    }
    let mut opts = options("a");
    opts.max_patches_per_second = 10.0;
    let r = start(&api, 1, policy(""), opts);
    started(&api, &r).await;
    api.put_namespace("apps", json!({"lb-l7-webhook/enabled": "true"}));
    until("all 25 patched", || patched(&api).len() == 25).await;
    let times: Vec<_> = api.patches().iter().map(|p| p.at).collect();
    for pair in times.windows(2) {
        let gap = pair[1].duration_since(pair[0]);
        assert!(
            gap >= Duration::from_millis(99),
            "two patches {gap:?} apart at 10/s"
        );
    }
    let span = times[times.len() - 1].duration_since(times[0]);
    assert!(
        span >= Duration::from_millis(2390),
        "25 patches at 10/s took {span:?}"
    );
    r.stop().await;
}

#[tokio::test(start_paused = true)]
async fn with_two_replicas_one_patches_and_the_other_takes_over_when_it_dies() {
    let api = FakeApi::new();
    api.put_namespace("apps", json!({"lb-l7-webhook/enabled": "true"}));
    for i in 0..10 {
        api.put_service("apps", &format!("s{i}"), None, None);
    }
    let a = start(&api, 1, policy(""), options("replica-a"));
    let b = start(&api, 2, policy(""), options("replica-b"));
    until("all ten patched", || patched(&api).len() == 10).await;
    settle().await;
    let leader = api.lease_holder().expect("a holder");
    let leader_client = if leader == "replica-a" { 1 } else { 2 };
    assert!(
        api.patches().iter().all(|p| p.client == leader_client),
        "{:?}",
        api.patches()
    );
    assert_eq!(a.metrics.leader.get() + b.metrics.leader.get(), 1);

    // The leader dies without releasing the Lease: the other takes over once it expires.
    api.kill(leader_client);
    let (dead, alive) = if leader_client == 1 { (a, b) } else { (b, a) };
    dead.task.abort();
    api.put_service("apps", "after", None, None);
    until("the survivor patched the new Service", || {
        api.service_annotations("apps", "after")
            .contains_key("service.cilium.io/lb-l7")
    })
    .await;
    let other = if leader == "replica-a" {
        "replica-b"
    } else {
        "replica-a"
    };
    assert_eq!(api.lease_holder().as_deref(), Some(other));
    assert!(
        api.patches()
            .iter()
            .any(|p| p.name == "after" && p.client != leader_client)
    );
    alive.stop().await;
}
