//! The reconciler: `lb-l7-webhook reconcile`, and `serve --reconcile` (the same loop inside the webhook process).
//!
//! Watches Namespaces and Services ([`crate::cluster::watch`]); every Service whose decision — the webhook's own
//! [`lb_l7_core::policy::CompiledPolicy::evaluate`], with its namespace's labels from the cache — is `enable` gets
//! backfill's guarded patch ([`crate::cluster::patch::guarded_enable`]). A namespace whose labels change enqueues all
//! its Services at once; a periodic full resync catches anything a watch missed. Only the holder of the Lease
//! ([`crate::cluster::lease`]) patches, at most `--max-patches-per-second`, with exponential backoff per Service on
//! errors. `--revert` removes what this tool added ([`plan::revert_patch`]) from Services no longer selected. A
//! dry-run policy sends nothing: it logs, counts and records a `WouldEnable` Event. Excluded namespaces and
//! namespaces not in the cache are never touched. The decisions are in [`plan`] (pure, unit-tested).

pub mod metrics;
pub mod plan;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, SystemTime};

use anyhow::Context as _;
use k8s_openapi::api::core::v1::Service;
use kube::api::{Api, PatchParams};
use lb_l7_core::namespace::{NamespaceContext, namespace_of};
use lb_l7_core::policy::{CompiledPolicy, Decision, DecisionKind, Policy, WEBHOOK_NAMESPACE};
use tokio::sync::{mpsc, watch};
use tokio::time::Instant;

use crate::cluster::events::Events;
use crate::cluster::lease::Elector;
use crate::cluster::patch::{PatchOutcome, describe_error, is_conflict, is_not_found};
use crate::cluster::watch::{Caches, Trigger};
pub use metrics::ReconcileMetrics;
use plan::{Action, Key, TokenBucket, WorkQueue};

/// The field manager of the reconciler's patches (`metadata.managedFields`).
pub const FIELD_MANAGER: &str = "lb-l7-webhook-reconciler";

/// The reconciler's flags, shared by `reconcile` and `serve --reconcile`.
#[derive(clap::Args, Debug, Clone)]
pub struct ReconcileFlags {
    /// How often every Service is looked at again (catches anything a watch missed).
    #[arg(long, env = "LB_L7_RESYNC_INTERVAL", default_value = "10m", value_parser = humantime::parse_duration)]
    pub resync_interval: Duration,

    /// Most patches sent per second (a token bucket); 0 for no limit.
    #[arg(long, env = "LB_L7_MAX_PATCHES_PER_SECOND", default_value_t = 10.0)]
    pub max_patches_per_second: f64,

    /// Namespace of the Lease `lb-l7-webhook-reconciler` (leader election). Default: the namespace this pod runs
    /// in (POD_NAMESPACE, or the service account's namespace file), else lb-l7-system.
    #[arg(long, env = "LB_L7_LEASE_NAMESPACE")]
    pub lease_namespace: Option<String>,

    /// Remove the annotations this tool added (recognised by lb-l7-webhook/matched-by) from Services the policy
    /// no longer selects.
    #[arg(long, env = "LB_L7_REVERT")]
    pub revert: bool,
}

/// `serve`'s reconciler flags.
#[derive(clap::Args, Debug, Clone)]
pub struct ServeReconcileArgs {
    /// Also run the reconciler in this process (same policy, metrics and probe port).
    #[arg(long = "reconcile", env = "LB_L7_RECONCILE")]
    pub enabled: bool,

    #[command(flatten)]
    pub flags: ReconcileFlags,
}

/// `reconcile`'s arguments.
#[derive(clap::Args, Debug, Clone)]
pub struct ReconcileArgs {
    /// Policy file (YAML), as for `serve`. Without it, the built-in default.
    #[arg(long, env = "LB_L7_POLICY")]
    pub policy: Option<PathBuf>,

    /// Address of the plain-HTTP listener for /healthz, /readyz and /metrics.
    #[arg(long, env = "LB_L7_PROBE_LISTEN", default_value = "0.0.0.0:8080")]
    pub probe_listen: SocketAddr,

    #[command(flatten)]
    pub flags: ReconcileFlags,
}

/// How the reconciler runs, resolved from flags (tests set the lease timings).
#[derive(Debug, Clone)]
pub struct Options {
    pub resync_interval: Duration,
    pub max_patches_per_second: f64,
    pub lease_namespace: String,
    pub identity: String,
    pub revert: bool,
    /// How long a Lease holder that stopped renewing keeps it.
    pub lease_duration: Duration,
    /// How often the Lease is renewed, or tried.
    pub lease_retry: Duration,
    pub backoff_base: Duration,
    pub backoff_max: Duration,
}

impl Options {
    pub fn from_flags(flags: &ReconcileFlags) -> Self {
        Options {
            resync_interval: flags.resync_interval,
            max_patches_per_second: flags.max_patches_per_second,
            lease_namespace: flags
                .lease_namespace
                .clone()
                .or_else(crate::cluster::lease::own_namespace)
                .unwrap_or_else(|| WEBHOOK_NAMESPACE.to_string()),
            identity: crate::cluster::lease::identity(),
            revert: flags.revert,
            ..Options::default()
        }
    }
}

impl Default for Options {
    fn default() -> Self {
        Options {
            resync_interval: Duration::from_secs(600),
            max_patches_per_second: 10.0,
            lease_namespace: WEBHOOK_NAMESPACE.to_string(),
            identity: "lb-l7-webhook".to_string(),
            revert: false,
            lease_duration: Duration::from_secs(15),
            lease_retry: Duration::from_secs(2),
            backoff_base: Duration::from_millis(500),
            backoff_max: Duration::from_secs(300),
        }
    }
}

/// Keeps the Lease while running; publishes whether we hold it. Releases it on shutdown.
async fn elect(
    mut elector: Elector,
    retry: Duration,
    leader: watch::Sender<bool>,
    mut shutdown: watch::Receiver<bool>,
    metrics: ReconcileMetrics,
) {
    loop {
        let held = match elector.try_acquire_or_renew().await {
            Ok(held) => held,
            Err(e) => {
                tracing::warn!(error = %describe_error(&e), "leader election: reading or writing the Lease failed");
                false
            }
        };
        leader.send_if_modified(|was| {
            if *was != held {
                tracing::info!(
                    identity = elector.identity(),
                    leader = held,
                    "leadership changed"
                );
                *was = held;
                true
            } else {
                false
            }
        });
        metrics.leader.set(i64::from(held));
        tokio::select! {
            () = tokio::time::sleep(retry) => {}
            _ = shutdown.changed() => break,
        }
    }
    if *leader.borrow()
        && let Err(e) = elector.release().await
    {
        tracing::warn!(error = %describe_error(&e), "releasing the Lease failed; it expires on its own");
    }
    leader.send_replace(false);
    metrics.leader.set(0);
}

/// A decision that is not `enable`, for a Service whose namespace is excluded or not in the cache.
fn not_enable(reason: String) -> Decision {
    Decision {
        kind: DecisionKind::ExcludedNamespace,
        reason,
        warnings: Vec::new(),
        rule: None,
        algorithm: None,
    }
}

/// Re-evaluates a Service read again after a conflict, with the namespace as the cache has it now.
fn reevaluate(policy: &CompiledPolicy, caches: &Caches, fresh: &Service) -> Decision {
    let ns = namespace_of(&fresh.metadata);
    if policy.policy.is_excluded(ns) {
        return not_enable(format!("namespace {ns} is excluded"));
    }
    match caches.namespace_labels(ns) {
        Some(labels) => policy.evaluate(fresh, NamespaceContext::known(ns, &labels)),
        None => not_enable(format!("namespace {ns} is not in the cache")),
    }
}

fn describe(decision: &Decision) -> String {
    match &decision.rule {
        Some(rule) => format!("rule {rule}: {}", decision.reason),
        None => decision.reason.clone(),
    }
}

struct Worker {
    client: kube::Client,
    policy: CompiledPolicy,
    options: Options,
    caches: Caches,
    metrics: ReconcileMetrics,
    events: Events,
    triggers: mpsc::UnboundedSender<Trigger>,
    queue: WorkQueue,
    bucket: TokenBucket,
    attempts: HashMap<Key, u32>,
    would_reported: HashMap<Key, Option<String>>,
    params: PatchParams,
}

impl Worker {
    fn enqueue_all(&mut self, namespace: Option<&str>) {
        for svc in self.caches.services.state() {
            if namespace.is_none_or(|ns| namespace_of(&svc.metadata) == ns) {
                self.queue.push(plan::key_of(&svc));
            }
        }
    }

    fn retry_later(&mut self, key: Key) {
        let attempt = self.attempts.entry(key.clone()).or_insert(0);
        let delay = plan::backoff(
            *attempt,
            self.options.backoff_base,
            self.options.backoff_max,
        );
        *attempt += 1;
        let tx = self.triggers.clone();
        tracing::debug!(namespace = key.0, service = key.1, ?delay, "retrying later");
        tokio::spawn(async move {
            tokio::time::sleep(delay).await;
            let _ = tx.send(Trigger::Service {
                namespace: key.0,
                name: key.1,
            });
        });
    }

    async fn rate_limit(&mut self) {
        if let Some(wait) = self.bucket.take(Instant::now()) {
            tokio::time::sleep(wait).await;
        }
    }

    async fn process(&mut self, key: Key) {
        let (ns, name) = (key.0.as_str(), key.1.as_str());
        let Some(svc) = self.caches.service(ns, name) else {
            self.attempts.remove(&key);
            return;
        };
        let labels = self.caches.namespace_labels(ns);
        match plan::plan(&self.policy, &svc, labels.as_ref(), self.options.revert) {
            Action::Nothing => {
                self.attempts.remove(&key);
            }
            Action::WouldEnable(decision) => {
                let rv = svc.metadata.resource_version.clone();
                if self.would_reported.get(&key) == Some(&rv) {
                    return;
                }
                self.would_reported.insert(key.clone(), rv);
                tracing::info!(namespace = ns, service = name, reason = %describe(&decision),
                    "policy mode is dry-run: would enable L7 load balancing");
                self.metrics.patch("would-enable");
                self.events
                    .publish(
                        &svc,
                        "WouldEnable",
                        "Enable",
                        format!(
                            "dry-run policy: would set L7 load balancing ({})",
                            describe(&decision)
                        ),
                    )
                    .await;
            }
            Action::Enable(decision) => {
                self.rate_limit().await;
                let api: Api<Service> = Api::namespaced(self.client.clone(), ns);
                let (policy, caches) = (&self.policy, &self.caches);
                let outcome = crate::cluster::patch::guarded_enable(
                    &api,
                    &policy.policy,
                    &svc,
                    &decision,
                    &self.params,
                    |fresh| reevaluate(policy, caches, fresh),
                )
                .await;
                match outcome {
                    PatchOutcome::Patched { after_conflict } => {
                        self.attempts.remove(&key);
                        self.metrics.patch("enabled");
                        tracing::info!(namespace = ns, service = name, after_conflict, reason = %describe(&decision),
                            "enabled L7 load balancing");
                        self.events
                            .publish(
                                &svc,
                                "L7LoadBalancingEnabled",
                                "Enable",
                                format!(
                                    "set {}=enabled ({})",
                                    self.policy.policy.annotation_key,
                                    describe(&decision)
                                ),
                            )
                            .await;
                    }
                    PatchOutcome::SkippedAfterReread(kind) => {
                        self.attempts.remove(&key);
                        self.metrics.patch("skipped");
                        tracing::info!(namespace = ns, service = name, now = %kind, "changed meanwhile; no longer needs the annotation");
                    }
                    PatchOutcome::Gone => {
                        self.attempts.remove(&key);
                        self.metrics.patch("gone");
                    }
                    PatchOutcome::Failed { message, conflict } => {
                        self.metrics
                            .patch(if conflict { "conflict" } else { "failed" });
                        tracing::warn!(namespace = ns, service = name, error = %message, "patch failed; retrying with backoff");
                        self.retry_later(key);
                    }
                }
            }
            Action::Revert {
                patch,
                removed,
                why,
            } => {
                self.rate_limit().await;
                let api: Api<Service> = Api::namespaced(self.client.clone(), ns);
                match crate::cluster::patch::send_json_patch(&api, name, patch, &self.params).await
                {
                    Ok(()) => {
                        self.attempts.remove(&key);
                        self.metrics.patch("reverted");
                        tracing::info!(namespace = ns, service = name, removed = ?removed, reason = %why.reason,
                            "reverted: no longer selected");
                        self.events
                            .publish(
                                &svc,
                                "L7LoadBalancingReverted",
                                "Revert",
                                format!("removed {} ({})", removed.join(", "), describe(&why)),
                            )
                            .await;
                    }
                    Err(e) if is_not_found(&e) => {
                        self.attempts.remove(&key);
                        self.metrics.patch("gone");
                    }
                    Err(e) => {
                        // A failed `test`: someone changed the annotations; the watch brings the new object and
                        // the next look judges it afresh.
                        self.metrics.patch(if is_conflict(&e) {
                            "conflict"
                        } else {
                            "failed"
                        });
                        tracing::warn!(namespace = ns, service = name, error = %describe_error(&e), "revert failed; retrying with backoff");
                        self.retry_later(key);
                    }
                }
            }
        }
    }
}

/// Runs the reconciler until `shutdown` turns true. `ready` turns true once both caches are listed.
pub async fn run_reconciler(
    client: kube::Client,
    policy: Policy,
    options: Options,
    metrics: ReconcileMetrics,
    ready: Arc<AtomicBool>,
    mut shutdown: watch::Receiver<bool>,
) -> anyhow::Result<()> {
    let (tx, mut rx) = mpsc::unbounded_channel();
    let (caches, watch_task) = crate::cluster::watch::start(client.clone(), tx.clone());
    let (leader_tx, mut leader_rx) = watch::channel(false);
    let elector = Elector::new(
        client.clone(),
        &options.lease_namespace,
        options.identity.clone(),
        options.lease_duration,
    );
    let elector_task = tokio::spawn(elect(
        elector,
        options.lease_retry,
        leader_tx,
        shutdown.clone(),
        metrics.clone(),
    ));
    tracing::info!(identity = %options.identity, lease_namespace = %options.lease_namespace,
        resync_interval = ?options.resync_interval, max_patches_per_second = options.max_patches_per_second,
        revert = options.revert, mode = ?policy.mode, "reconciler starting");
    let mut w = Worker {
        events: Events::new(client.clone(), options.identity.clone()),
        bucket: TokenBucket::new(options.max_patches_per_second, 1, Instant::now()),
        client,
        policy: policy.compile(),
        caches: caches.clone(),
        metrics: metrics.clone(),
        triggers: tx,
        queue: WorkQueue::default(),
        attempts: HashMap::new(),
        would_reported: HashMap::new(),
        params: PatchParams {
            field_manager: Some(FIELD_MANAGER.to_string()),
            ..PatchParams::default()
        },
        options,
    };
    let mut resync = tokio::time::interval_at(
        Instant::now() + w.options.resync_interval,
        w.options.resync_interval,
    );
    resync.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let ready_caches = caches.clone();
    let synced_fut = ready_caches.wait_until_ready();
    tokio::pin!(synced_fut);
    let mut synced = false;
    let mut resync_started: Option<Instant> = None;
    loop {
        w.metrics.queue_depth.set(w.queue.len() as i64);
        if w.queue.is_empty()
            && let Some(started) = resync_started.take()
        {
            w.metrics
                .last_resync_duration
                .set(started.elapsed().as_secs_f64());
            let now = SystemTime::now()
                .duration_since(SystemTime::UNIX_EPOCH)
                .map(|d| d.as_secs_f64())
                .unwrap_or_default();
            w.metrics.last_resync.set(now);
            tracing::info!(took = ?started.elapsed(), "full resync done");
        }
        let leader = *leader_rx.borrow();
        let can_work = synced && leader && !w.queue.is_empty();
        tokio::select! {
            biased;
            _ = shutdown.changed() => break,
            ok = &mut synced_fut, if !synced => {
                if !ok {
                    anyhow::bail!("the watch caches stopped before they were listed");
                }
                synced = true;
                ready.store(true, Ordering::Relaxed);
                w.metrics.cache_synced.set(1);
                tracing::info!(namespaces = caches.namespaces.state().len(), services = caches.services.state().len(),
                    "caches synced: looking at every Service");
                w.enqueue_all(None);
                resync_started = Some(Instant::now());
            }
            changed = leader_rx.changed() => {
                if changed.is_err() {
                    break;
                }
                if *leader_rx.borrow() && synced {
                    w.enqueue_all(None);
                    resync_started = Some(Instant::now());
                }
            }
            Some(trigger) = rx.recv() => match trigger {
                Trigger::Service { namespace, name } => {
                    w.queue.push((namespace, name));
                }
                Trigger::Namespace(ns) => w.enqueue_all(Some(&ns)),
            },
            _ = resync.tick() => {
                if synced {
                    w.enqueue_all(None);
                    resync_started = Some(Instant::now());
                }
            }
            () = std::future::ready(()), if can_work => {
                if let Some(key) = w.queue.pop() {
                    w.process(key).await;
                }
            }
        }
    }
    watch_task.abort();
    let _ = elector_task.await;
    tracing::info!("reconciler stopped");
    Ok(())
}

/// `serve --reconcile`: starts the reconciler beside the webhook, its metrics in the webhook's registry. The
/// webhook's readiness does not wait for the caches (a webhook that fails open should serve at once).
pub async fn spawn_in_server(
    args: &ServeReconcileArgs,
    policy_file: Option<&std::path::Path>,
    metrics: &crate::server::metrics::Metrics,
) -> anyhow::Result<Option<tokio::task::JoinHandle<()>>> {
    if !args.enabled {
        return Ok(None);
    }
    let policy = crate::input::load_policy(policy_file)?;
    let client = kube::Client::try_default().await.context(
        "--reconcile: cannot build a Kubernetes client from kubeconfig or the in-cluster config",
    )?;
    let m = ReconcileMetrics::default();
    metrics.register(Box::new(m.clone()));
    let options = Options::from_flags(&args.flags);
    let (stop_tx, stop_rx) = watch::channel(false);
    Ok(Some(tokio::spawn(async move {
        let ready = Arc::new(AtomicBool::new(false));
        let run = run_reconciler(client, policy, options, m, ready, stop_rx);
        tokio::select! {
            r = run => if let Err(e) = r { tracing::error!(error = %e, "reconciler stopped"); },
            () = crate::server::shutdown_signal() => { let _ = stop_tx.send(true); }
        }
    })))
}

/// The probe and metrics router of `reconcile`: `/readyz` answers 200 once the caches are synced.
pub fn probe_router(
    registry: Arc<prometheus_client::registry::Registry>,
    ready: Arc<AtomicBool>,
) -> axum::Router {
    use axum::http::{StatusCode, header};
    use axum::routing::get;
    axum::Router::new()
        .route("/healthz", get(|| async { "ok\n" }))
        .route(
            "/readyz",
            get(move || {
                let ready = ready.load(Ordering::Relaxed);
                async move {
                    if ready {
                        (StatusCode::OK, "ok\n")
                    } else {
                        (StatusCode::SERVICE_UNAVAILABLE, "caches not synced\n")
                    }
                }
            }),
        )
        .route(
            "/metrics",
            get(move || {
                let mut out = String::new();
                if prometheus_client::encoding::text::encode(&mut out, &registry).is_err() {
                    out.clear();
                }
                async move {
                    (
                        [(
                            header::CONTENT_TYPE,
                            "application/openmetrics-text; version=1.0.0; charset=utf-8",
                        )],
                        out,
                    )
                }
            }),
        )
}

/// The `reconcile` subcommand.
pub async fn run(args: ReconcileArgs) -> anyhow::Result<ExitCode> {
    let policy = crate::input::load_policy(args.policy.as_deref())?;
    let client = kube::Client::try_default()
        .await
        .context("cannot build a Kubernetes client from kubeconfig or the in-cluster config")?;
    let metrics = ReconcileMetrics::default();
    let mut registry = prometheus_client::registry::Registry::with_prefix("lb_l7_webhook");
    registry.register_collector(Box::new(metrics.clone()));
    let ready = Arc::new(AtomicBool::new(false));
    let listener = tokio::net::TcpListener::bind(args.probe_listen)
        .await
        .with_context(|| format!("binding the probe listener {}", args.probe_listen))?;
    let app = probe_router(Arc::new(registry), ready.clone());
    let (stop_tx, stop_rx) = watch::channel(false);
    let mut probe_stop = stop_rx.clone();
    let probe = tokio::spawn(async move {
        let _ = axum::serve(listener, app)
            .with_graceful_shutdown(async move {
                let _ = probe_stop.changed().await;
            })
            .await;
    });
    tokio::spawn(async move {
        crate::server::shutdown_signal().await;
        let _ = stop_tx.send(true);
    });
    let options = Options::from_flags(&args.flags);
    let result = run_reconciler(client, policy, options, metrics, ready, stop_rx).await;
    let _ = probe.await;
    result.map(|()| ExitCode::SUCCESS)
}
