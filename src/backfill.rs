//! `lb-l7-webhook backfill`: bring the Services that existed before the webhook into line.
//!
//! Lists Namespaces and Services in pages, evaluates each Service with [`crate::report::evaluate_service`] (the
//! webhook's own evaluation, with the namespace's labels from the cluster), and patches every `enable` one with
//! [`patch::build_guarded_patch`]: the webhook's annotations behind a JSON Patch `test` of the annotations the
//! Service had when it was read (or of its resourceVersion when it had none), so a concurrent change makes the
//! patch fail instead of being overwritten.
//!
//! A failed `test` comes back from the API server as HTTP 422 `Invalid` with the generic message "the server
//! rejected our request due to an error in our request" (the patch handler wraps json-patch's own "testing value
//! ... failed" in a generic server response and drops it); an optimistic-concurrency conflict is HTTP 409. On
//! either, the Service is read again, evaluated again and, if it still needs the annotation, patched once more;
//! a second failure is reported. Any other 422 (the patched object is invalid: "Service \"x\" is invalid: ...")
//! is reported at once. A Service deleted in the meantime (404) is counted as gone, not as a failure.
//!
//! `--dry-run` sends the patches with `dryRun=All`: the API server runs admission and validation and stores
//! nothing. A policy in `dry-run` mode never patches: the backfill prints what enforce mode would do and exits 0.
//! Exit status: 0 when every patch succeeded (or none was needed), 1 when any failed, 2 when the backfill could
//! not run (no cluster, no permission to list).

use std::collections::{BTreeMap, HashMap};
use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use k8s_openapi::api::core::v1::{Namespace, Service};
use kube::api::{Api, Patch, PatchParams};

use crate::patch;
use crate::policy::{CompiledPolicy, Decision, DecisionKind, Mode, Policy};
use crate::report::sources::{list_all, namespace_of};
use crate::report::{Summary, evaluate_service};

/// The field manager the backfill's patches are recorded under (`metadata.managedFields`).
pub const FIELD_MANAGER: &str = "lb-l7-webhook-backfill";

/// `backfill`'s arguments. Every flag also reads an `LB_L7_*` environment variable.
#[derive(clap::Args, Debug, Clone)]
pub struct BackfillArgs {
    /// Policy file (YAML), as for `serve`. Without it, the built-in default.
    #[arg(long, env = "LB_L7_POLICY")]
    pub policy: Option<PathBuf>,

    /// Only this namespace's Services.
    #[arg(long, short = 'n', env = "LB_L7_NAMESPACE")]
    pub namespace: Option<String>,

    /// Send the patches with the API server's dry run (dryRun=All): admission and validation run, nothing is stored.
    #[arg(long, env = "LB_L7_BACKFILL_DRY_RUN")]
    pub dry_run: bool,

    /// How many objects each list call asks for (limit/continue paging).
    #[arg(long, env = "LB_L7_PAGE_SIZE", default_value_t = 500, value_parser = clap::value_parser!(u32).range(1..))]
    pub page_size: u32,
}

/// What the backfill does.
#[derive(Debug, Clone, Default)]
pub struct Options {
    pub namespace: Option<String>,
    pub dry_run: bool,
    pub page_size: u32,
}

/// What happened to one Service that needed the annotation.
#[derive(Debug, Clone, PartialEq)]
pub enum Outcome {
    /// Patched (with `dryRun=All` when `--dry-run`).
    Patched { after_conflict: bool },
    /// The policy is in dry-run mode: nothing was sent.
    NotSent,
    /// A conflict, and the Service read again no longer needs the annotation.
    SkippedAfterReread(DecisionKind),
    /// Deleted since it was listed.
    Gone,
    /// The patch failed; the message says why.
    Failed(String),
}

/// What a backfill did, in numbers.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct BackfillSummary {
    /// Every Service listed, by decision at list time.
    pub decisions: Summary,
    pub patched: usize,
    /// Patched after a conflict, a re-read and a retry (also counted in `patched`).
    pub retried: usize,
    pub not_sent: usize,
    pub skipped_after_reread: usize,
    pub gone: usize,
    pub failed: usize,
}

/// Whether a patch error means the Service changed under us: HTTP 409, or HTTP 422 from a failed `test` op.
pub fn is_conflict(err: &kube::Error) -> bool {
    match err {
        kube::Error::Api(status) => {
            status.code == 409 || (status.code == 422 && is_failed_test(&status.message))
        }
        _ => false,
    }
}

fn is_failed_test(message: &str) -> bool {
    let m = message.to_ascii_lowercase();
    // What the API server says (its generic 422 message), and what json-patch says, should a server pass it on.
    m.contains("the server rejected our request due to an error in our request")
        || m.contains("testing value")
        || m.contains("test failed")
        || m.contains("test operation does not apply")
}

fn is_not_found(err: &kube::Error) -> bool {
    matches!(err, kube::Error::Api(s) if s.code == 404)
}

fn describe_error(err: &kube::Error) -> String {
    match err {
        kube::Error::Api(s) => format!("HTTP {} {}: {}", s.code, s.reason, s.message),
        other => other.to_string(),
    }
}

/// Lists, evaluates and patches. Writes one line per change and a summary to `out`.
pub async fn backfill(
    client: kube::Client,
    policy: &Policy,
    options: &Options,
    out: &mut (dyn Write + Send),
) -> anyhow::Result<BackfillSummary> {
    let compiled = policy.compile();
    let ns_api: Api<Namespace> = Api::all(client.clone());
    let namespaces: Vec<Namespace> = match options.namespace.as_deref() {
        Some(ns) => vec![
            ns_api
                .get(ns)
                .await
                .with_context(|| format!("cannot read namespace {ns}"))?,
        ],
        None => list_all(&ns_api, options.page_size)
            .await
            .context("cannot list namespaces")?,
    };
    let labels: HashMap<String, BTreeMap<String, String>> = namespaces
        .into_iter()
        .filter_map(|ns| {
            let name = ns.metadata.name?;
            Some((name, ns.metadata.labels.unwrap_or_default()))
        })
        .collect();
    let list_api: Api<Service> = match options.namespace.as_deref() {
        Some(ns) => Api::namespaced(client.clone(), ns),
        None => Api::all(client.clone()),
    };
    let mut services = list_all(&list_api, options.page_size)
        .await
        .context("cannot list Services")?;
    services.sort_by(|a, b| {
        (namespace_of(a), a.metadata.name.as_deref())
            .cmp(&(namespace_of(b), b.metadata.name.as_deref()))
    });

    let params = PatchParams {
        dry_run: options.dry_run,
        field_manager: Some(FIELD_MANAGER.to_string()),
        ..PatchParams::default()
    };
    let policy_dry_run = policy.mode == Mode::DryRun;
    if policy_dry_run {
        writeln!(
            out,
            "policy mode is dry-run: no Service is patched; this is what enforce mode would do"
        )?;
    }
    let mut summary = BackfillSummary::default();
    for svc in &services {
        let decision = evaluate_service(&compiled, svc, &labels, true);
        summary
            .decisions
            .record(decision.kind, !decision.warnings.is_empty());
        if decision.kind != DecisionKind::Enable {
            continue;
        }
        let ns = namespace_of(svc).to_string();
        let name = svc.metadata.name.clone().unwrap_or_default();
        let outcome = if policy_dry_run {
            Outcome::NotSent
        } else {
            let api: Api<Service> = Api::namespaced(client.clone(), &ns);
            patch_service(&api, &compiled, svc, &decision, &labels, &params).await
        };
        report_outcome(
            out,
            &ns,
            &name,
            svc,
            &decision,
            policy,
            &outcome,
            options.dry_run,
        )?;
        match outcome {
            Outcome::Patched { after_conflict } => {
                summary.patched += 1;
                if after_conflict {
                    summary.retried += 1;
                }
            }
            Outcome::NotSent => summary.not_sent += 1,
            Outcome::SkippedAfterReread(_) => summary.skipped_after_reread += 1,
            Outcome::Gone => summary.gone += 1,
            Outcome::Failed(_) => summary.failed += 1,
        }
    }
    writeln!(
        out,
        "{}",
        summary_line(&summary, options.dry_run, policy_dry_run)
    )?;
    Ok(summary)
}

/// One guarded patch; on a conflict, one re-read, one re-evaluation and one more guarded patch.
async fn patch_service(
    api: &Api<Service>,
    policy: &CompiledPolicy,
    svc: &Service,
    decision: &Decision,
    labels: &HashMap<String, BTreeMap<String, String>>,
    params: &PatchParams,
) -> Outcome {
    let name = svc.metadata.name.as_deref().unwrap_or_default();
    let first = match send_patch(api, name, svc, decision, &policy.policy, params).await {
        Ok(()) => {
            return Outcome::Patched {
                after_conflict: false,
            };
        }
        Err(e) => e,
    };
    if is_not_found(&first) {
        return Outcome::Gone;
    }
    if !is_conflict(&first) {
        return Outcome::Failed(describe_error(&first));
    }
    tracing::info!(service = name, error = %describe_error(&first), "conflict: reading the Service again");
    let fresh = match api.get(name).await {
        Ok(s) => s,
        Err(e) if is_not_found(&e) => return Outcome::Gone,
        Err(e) => {
            return Outcome::Failed(format!(
                "conflict ({}), and reading the Service again failed: {}",
                describe_error(&first),
                describe_error(&e)
            ));
        }
    };
    let again = evaluate_service(policy, &fresh, labels, true);
    if again.kind != DecisionKind::Enable {
        return Outcome::SkippedAfterReread(again.kind);
    }
    match send_patch(api, name, &fresh, &again, &policy.policy, params).await {
        Ok(()) => Outcome::Patched {
            after_conflict: true,
        },
        Err(e) if is_not_found(&e) => Outcome::Gone,
        Err(e) => Outcome::Failed(format!(
            "conflict, and again after reading the Service once more: {}",
            describe_error(&e)
        )),
    }
}

async fn send_patch(
    api: &Api<Service>,
    name: &str,
    svc: &Service,
    decision: &Decision,
    policy: &Policy,
    params: &PatchParams,
) -> Result<(), kube::Error> {
    // `enable` always yields a patch; were it ever empty, there would be nothing to send.
    let Some(p) = patch::build_guarded_patch(svc, decision, policy) else {
        return Ok(());
    };
    api.patch(name, params, &Patch::<()>::Json(p))
        .await
        .map(|_| ())
}

#[allow(clippy::too_many_arguments)]
fn report_outcome(
    out: &mut dyn Write,
    ns: &str,
    name: &str,
    svc: &Service,
    decision: &Decision,
    policy: &Policy,
    outcome: &Outcome,
    server_dry_run: bool,
) -> std::io::Result<()> {
    let adds = patch::annotations_to_add(svc, decision, policy)
        .into_iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect::<Vec<_>>()
        .join(", ");
    let dry = if server_dry_run {
        " (server dry run)"
    } else {
        ""
    };
    match outcome {
        Outcome::Patched { after_conflict } => {
            let retry = if *after_conflict {
                " after a conflict and a re-read"
            } else {
                ""
            };
            writeln!(out, "patched{dry}{retry} {ns}/{name}: {adds}")?;
        }
        Outcome::NotSent => writeln!(out, "would patch {ns}/{name}: {adds}")?,
        Outcome::SkippedAfterReread(kind) => writeln!(
            out,
            "skipped {ns}/{name}: it changed since it was listed, and is now {kind}"
        )?,
        Outcome::Gone => writeln!(out, "skipped {ns}/{name}: deleted since it was listed")?,
        Outcome::Failed(why) => {
            writeln!(out, "FAILED {ns}/{name}: {why}")?;
            tracing::error!(namespace = ns, service = name, error = %why, "patch failed");
        }
    }
    for w in &decision.warnings {
        writeln!(out, "  warning: {w}")?;
    }
    Ok(())
}

fn summary_line(s: &BackfillSummary, server_dry_run: bool, policy_dry_run: bool) -> String {
    let d = &s.decisions;
    let verb = if server_dry_run {
        "patched (server dry run)"
    } else {
        "patched"
    };
    let mut line = format!(
        "backfill: {} Service{} listed; {} to enable: ",
        d.total,
        if d.total == 1 { "" } else { "s" },
        d.enable
    );
    if policy_dry_run {
        line.push_str(&format!("{} not patched (policy mode dry-run)", s.not_sent));
    } else {
        line.push_str(&format!("{} {verb}", s.patched));
        if s.retried > 0 {
            line.push_str(&format!(" ({} after a conflict)", s.retried));
        }
        line.push_str(&format!(", {} failed", s.failed));
        if s.skipped_after_reread > 0 {
            line.push_str(&format!(
                ", {} changed meanwhile and no longer need it",
                s.skipped_after_reread
            ));
        }
        if s.gone > 0 {
            line.push_str(&format!(", {} deleted meanwhile", s.gone));
        }
    }
    line.push_str(&format!(
        "; unchanged: {} already-enabled, {} opted-out, {} excluded-namespace, {} no-match, {} not-applicable",
        d.already_enabled, d.opted_out, d.excluded_namespace, d.no_match, d.not_applicable
    ));
    line
}

/// The `backfill` subcommand.
pub async fn run(args: BackfillArgs) -> anyhow::Result<ExitCode> {
    let policy = crate::server::load_policy(args.policy.as_deref())?;
    let client = kube::Client::try_default()
        .await
        .context("cannot build a Kubernetes client from kubeconfig or the in-cluster config")?;
    let options = Options {
        namespace: args.namespace,
        dry_run: args.dry_run,
        page_size: args.page_size,
    };
    let mut out = std::io::stdout();
    let summary = backfill(client, &policy, &options, &mut out).await?;
    out.flush().context("cannot write to stdout")?;
    if summary.failed > 0 {
        eprintln!(
            "error: {} patch{} failed (see FAILED lines above)",
            summary.failed,
            if summary.failed == 1 { "" } else { "es" }
        );
        return Ok(ExitCode::from(1));
    }
    Ok(ExitCode::SUCCESS)
}
