//! `lb-l7-webhook backfill`: bring the Services that existed before the webhook into line.
//!
//! Reads Namespaces and Services in pages ([`crate::cluster::read_inventory`], the same read report and doctor
//! make), evaluates each Service with the webhook's own evaluation and the namespace's labels from the cluster,
//! and patches every `enable` one with
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
//! When the Namespaces cannot be read (403), nothing is known of opt-in or opt-out labels: every Service is still
//! evaluated and listed, as report and doctor list it, but none is patched (a writer never acts on a guess).
//!
//! `--dry-run` sends the patches with `dryRun=All`: the API server runs admission and validation and stores
//! nothing. A policy in `dry-run` mode never patches: the backfill prints what enforce mode would do and exits 0.
//! Exit status: 0 when every patch succeeded (or none was needed), 1 when any failed, 2 when the backfill could
//! not run (no cluster, no permission to list).

use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use k8s_openapi::api::core::v1::Service;
use kube::api::{Api, PatchParams};

use crate::cluster::patch::PatchOutcome;

use crate::cluster::{Inventory, namespace_context};
use crate::report::Summary;
use lb_l7_core::namespace::{NamespaceLabels, namespace_of};
use lb_l7_core::patch;
use lb_l7_core::policy::{CompiledPolicy, Decision, DecisionKind, Mode, Policy};

/// The field manager the backfill's patches are recorded under (`metadata.managedFields`).
pub const FIELD_MANAGER: &str = "lb-l7-webhook-backfill";

/// `backfill`'s arguments. Every flag also reads an `LB_L7_*` environment variable.
#[derive(clap::Args, Debug, Clone)]
pub struct BackfillArgs {
    /// Policy file (YAML), as for `serve`. Without it, the policy the installed webhook runs (the built-in default
    /// when none is installed).
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

    /// The MutatingWebhookConfiguration whose webhook's policy is used when --policy is not given.
    #[arg(long, env = "LB_L7_WEBHOOK_NAME", default_value = crate::cluster::policy_source::DEFAULT_WEBHOOK_NAME)]
    pub webhook_name: String,
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
    /// The namespace's labels could not be read, so the opt-in and opt-out labels are unknown: not patched.
    NamespaceUnknown,
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
    /// Not patched because the Namespaces could not be read.
    pub namespace_unknown: usize,
}

pub use crate::cluster::patch::is_conflict;

/// Lists, evaluates and patches. Writes one line per change and a summary to `out`.
pub async fn backfill(
    client: kube::Client,
    policy: &Policy,
    options: &Options,
    out: &mut (dyn Write + Send),
) -> anyhow::Result<BackfillSummary> {
    let compiled = policy.compile();
    let inventory =
        crate::cluster::read_inventory(&client, options.namespace.as_deref(), options.page_size)
            .await?;
    let mut services = inventory.services()?.to_vec();
    if let crate::cluster::Lookup::Unreadable(why) = &inventory.namespaces {
        writeln!(
            out,
            "cannot read Namespaces ({why}): their opt-in and opt-out labels are unknown, so no Service is patched; \
             grant list on namespaces"
        )?;
    }
    services.sort_by(|a, b| {
        (namespace_of(&a.metadata), a.metadata.name.as_deref())
            .cmp(&(namespace_of(&b.metadata), b.metadata.name.as_deref()))
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
        let context = inventory.context(svc);
        let decision = compiled.evaluate(svc, context);
        summary
            .decisions
            .record(decision.kind, !decision.warnings.is_empty());
        if decision.kind != DecisionKind::Enable {
            continue;
        }
        let ns = namespace_of(&svc.metadata).to_string();
        let name = svc.metadata.name.clone().unwrap_or_default();
        let outcome = if matches!(context.labels, NamespaceLabels::Unknown(_)) {
            Outcome::NamespaceUnknown
        } else if policy_dry_run {
            Outcome::NotSent
        } else {
            let api: Api<Service> = Api::namespaced(client.clone(), &ns);
            patch_service(&api, &compiled, svc, &decision, &inventory, &params).await
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
            Outcome::NamespaceUnknown => summary.namespace_unknown += 1,
        }
    }
    writeln!(
        out,
        "{}",
        summary_line(&summary, options.dry_run, policy_dry_run)
    )?;
    Ok(summary)
}

/// One guarded patch; on a conflict, one re-read, one re-evaluation and one more guarded patch
/// ([`crate::cluster::patch::guarded_enable`], which the reconciler uses too).
async fn patch_service(
    api: &Api<Service>,
    policy: &CompiledPolicy,
    svc: &Service,
    decision: &Decision,
    inventory: &Inventory,
    params: &PatchParams,
) -> Outcome {
    let outcome = crate::cluster::patch::guarded_enable(
        api,
        &policy.policy,
        svc,
        decision,
        params,
        |fresh| {
            policy.evaluate(
                fresh,
                namespace_context(namespace_of(&fresh.metadata), &inventory.namespaces),
            )
        },
    )
    .await;
    match outcome {
        PatchOutcome::Patched { after_conflict } => Outcome::Patched { after_conflict },
        PatchOutcome::SkippedAfterReread(kind) => Outcome::SkippedAfterReread(kind),
        PatchOutcome::Gone => Outcome::Gone,
        PatchOutcome::Failed { message, .. } => Outcome::Failed(message),
    }
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
        Outcome::NamespaceUnknown => writeln!(
            out,
            "skipped {ns}/{name}: the labels of namespace {ns} are unknown (Namespaces not readable): {adds} not added"
        )?,
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
    if s.namespace_unknown > 0 {
        line.push_str(&format!(
            ", {} not patched (namespace labels unknown)",
            s.namespace_unknown
        ));
    }
    line.push_str(&format!(
        "; unchanged: {} already-enabled, {} opted-out, {} excluded-namespace, {} no-match, {} not-applicable",
        d.already_enabled, d.opted_out, d.excluded_namespace, d.no_match, d.not_applicable
    ));
    line
}

/// Chooses the policy (`--policy FILE`, else the one the installed webhook runs), says which on the first line
/// of `out` (and a `warning:` line when the file differs from the installed policy), then backfills.
pub async fn backfill_chosen(
    client: kube::Client,
    file: Option<(PathBuf, Policy)>,
    webhook_name: &str,
    options: &Options,
    out: &mut (dyn Write + Send),
) -> anyhow::Result<BackfillSummary> {
    let chosen =
        crate::cluster::policy_source::choose(&client, file, webhook_name, options.page_size)
            .await?;
    writeln!(out, "policy: {}", chosen.source.describe()).context("cannot write to stdout")?;
    if let Some(w) = &chosen.warning {
        writeln!(out, "warning: {w}").context("cannot write to stdout")?;
        tracing::warn!("{w}");
    }
    backfill(client, &chosen.source.policy, options, out).await
}

/// The `backfill` subcommand.
pub async fn run(args: BackfillArgs) -> anyhow::Result<ExitCode> {
    let file = match &args.policy {
        Some(path) => Some((
            path.clone(),
            crate::input::load_policy(Some(path.as_path()))?,
        )),
        None => None,
    };
    let client = kube::Client::try_default()
        .await
        .context("cannot build a Kubernetes client from kubeconfig or the in-cluster config")?;
    let options = Options {
        namespace: args.namespace,
        dry_run: args.dry_run,
        page_size: args.page_size,
    };
    let mut out = std::io::stdout();
    let summary = backfill_chosen(client, file, &args.webhook_name, &options, &mut out).await?;
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
