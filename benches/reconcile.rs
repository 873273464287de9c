//! The reconciler's speed and memory, against the in-process scripted API server of its tests
//! (tests/reconcile_support: kube's client over a tower-test mock, answered from shared state; no network).
//!
//! 1. From a namespace being labelled `lb-l7-webhook/enabled=true` to the last of its 1,000 Services patched, at
//!    the default rate limit (10 patches/s) and without one (`--max-patches-per-second 0`).
//! 2. The process's resident memory grown by caching 10,000 Services (RSS from /proc/self/status before the
//!    reconciler starts and after its caches are synced; includes the list response's buffers).
//!
//! Run: `cargo bench --bench reconcile` (`-- --quick` skips the 100 s rate-limited run).

#[path = "../tests/reconcile_support/mod.rs"]
mod reconcile_support;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use lb_l7_core::policy::Policy;
use lb_l7_webhook::reconcile::{Options, ReconcileMetrics, run_reconciler};
use reconcile_support::FakeApi;
use serde_json::json;
use tokio::sync::watch;

fn policy() -> Policy {
    Policy::from_yaml("scope: namespace-opt-in\nrules: [{name: grpc-ports, ports: {}}]\n")
        .expect("policy")
}

fn options(rate: f64) -> Options {
    Options {
        identity: "bench".into(),
        max_patches_per_second: rate,
        lease_retry: Duration::from_millis(100),
        ..Options::default()
    }
}

fn rss_kib() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmRSS:"))
                .and_then(|l| l.split_whitespace().nth(1)?.parse().ok())
        })
        .unwrap_or(0)
}

async fn wait(what: &str, limit: Duration, cond: impl Fn() -> bool) {
    let start = Instant::now();
    while !cond() {
        if start.elapsed() > limit {
            panic!("{what}: not within {limit:?}");
        }
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
}

async fn label_to_last_patch(services: usize, rate: f64) -> Duration {
    let api = FakeApi::new();
    api.put_namespace("apps", json!({}));
    for i in 0..services {
        api.put_service("apps", &format!("svc-{i:05}"), None, None);
    }
    let metrics = ReconcileMetrics::default();
    let ready = Arc::new(AtomicBool::new(false));
    let (stop, stop_rx) = watch::channel(false);
    let task = tokio::spawn(run_reconciler(
        api.client(1),
        policy(),
        options(rate),
        metrics.clone(),
        ready.clone(),
        stop_rx,
    ));
    wait("synced and leader", Duration::from_secs(60), || {
        ready.load(Ordering::Relaxed) && metrics.leader.get() == 1
    })
    .await;
    let start = Instant::now();
    api.put_namespace("apps", json!({"lb-l7-webhook/enabled": "true"}));
    wait("all patched", Duration::from_secs(600), || {
        metrics.patches_with("enabled") as usize >= services
    })
    .await;
    let took = start.elapsed();
    let _ = stop.send(true);
    let _ = task.await;
    took
}

async fn memory(services: usize) -> (u64, u64) {
    let api = FakeApi::new();
    api.put_namespace("apps", json!({}));
    for i in 0..services {
        api.put_service("apps", &format!("svc-{i:05}"), None, None);
    }
    let before = rss_kib();
    let metrics = ReconcileMetrics::default();
    let ready = Arc::new(AtomicBool::new(false));
    let (stop, stop_rx) = watch::channel(false);
    let task = tokio::spawn(run_reconciler(
        api.client(1),
        policy(),
        options(10.0),
        metrics.clone(),
        ready.clone(),
        stop_rx,
    ));
    wait("synced", Duration::from_secs(120), || {
        ready.load(Ordering::Relaxed)
    })
    .await;
    // Let the first full look at every Service (nothing to patch) finish.
    tokio::time::sleep(Duration::from_secs(1)).await;
    let after = rss_kib();
    let _ = stop.send(true);
    let _ = task.await;
    (before, after)
}

fn main() {
    let quick = std::env::args().any(|a| a == "--quick");
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    rt.block_on(async {
        let (before, after) = memory(10_000).await;
        println!(
            "memory: 10,000 Services cached: RSS {before} KiB -> {after} KiB (+{} KiB, {:.1} KiB per Service)",
            after.saturating_sub(before),
            after.saturating_sub(before) as f64 / 10_000.0
        );
        let unlimited = label_to_last_patch(1000, 0.0).await;
        println!("namespace labelled -> last of 1,000 Services patched, no rate limit: {unlimited:.2?}");
        if !quick {
            let limited = label_to_last_patch(1000, 10.0).await;
            println!("namespace labelled -> last of 1,000 Services patched, 10 patches/s (default): {limited:.2?}");
        }
    });
}
