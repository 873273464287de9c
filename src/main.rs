//! The `lb-l7-webhook` command line: a thin edge over the library.

use std::process::ExitCode;

use clap::{Parser, Subcommand};
use lb_l7_webhook::telemetry::{self, LogFormat};

/// mimalloc rather than glibc's malloc: the review path allocates for every string it keeps from the object, and
/// glibc's malloc and free were about a sixth of the instructions of a served review (BENCHMARKS.md).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// Turns on Cilium's per-request (L7) load balancing for gRPC Services.
///
/// gRPC keeps one long-lived HTTP/2 connection per client, so Kubernetes' per-connection balancing pins every
/// call of a client to one pod. Cilium balances per request through Envoy for Services annotated
/// `service.cilium.io/lb-l7: enabled`; this tool adds that annotation to the gRPC Services a policy selects.
#[derive(Parser, Debug)]
#[command(name = "lb-l7-webhook", version, about, long_about)]
struct Cli {
    /// Log format.
    #[arg(long, global = true, help_heading = "Global options", env = "LB_L7_LOG_FORMAT", value_enum, default_value_t = LogFormat::Text)]
    log_format: LogFormat,

    /// Log filter (tracing EnvFilter syntax), e.g. `info` or `lb_l7_webhook=debug`.
    #[arg(
        long,
        global = true,
        help_heading = "Global options",
        env = "LB_L7_LOG",
        default_value = "info"
    )]
    log: String,

    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Run the HTTPS mutating admission webhook.
    Serve(Box<lb_l7_webhook::server::ServeArgs>),
    /// Print the MutatingWebhookConfiguration for a policy (the same file `serve --policy` reads).
    Manifests(lb_l7_webhook::manifests::ManifestsArgs),
    /// Dry-run report: what the policy would do to each Service, from manifests (files, directories, `-`) or
    /// the cluster. Exit 2 on unreadable input, 3 with `--fail-on enable` when a Service would change.
    Report(lb_l7_webhook::report::ReportArgs),
    /// Patch the existing Services the policy would enable (guarded JSON Patch; `--dry-run` for dryRun=All).
    /// Exit 1 if any patch failed.
    Backfill(lb_l7_webhook::backfill::BackfillArgs),
    /// Write a CA and a serving certificate for the webhook's Service; print the base64 caBundle.
    Certs(lb_l7_webhook::certs::CertsArgs),
    /// Check Cilium, the webhook and their effect in a cluster; exit 0 (ok), 1 (a check failed), 2 (cannot run).
    Doctor(lb_l7_webhook::doctor::DoctorArgs),
    /// Keep the cluster true: watch Namespaces and Services and patch (one leader, rate-limited) every Service the
    /// policy enables; `--revert` removes what it added from Services no longer selected.
    Reconcile(lb_l7_webhook::reconcile::ReconcileArgs),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    // Held to the end of main: dropping it writes out the log lines still queued.
    let _log = telemetry::init(cli.log_format, &cli.log);
    // The one crypto provider of the whole process (ring): install it before anything builds a TLS config.
    let _ = rustls::crypto::ring::default_provider().install_default();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::from(1);
        }
    };
    let result: anyhow::Result<ExitCode> = runtime.block_on(async move {
        match cli.command {
            Command::Serve(args) => lb_l7_webhook::server::run(*args)
                .await
                .map(|()| ExitCode::SUCCESS),
            Command::Manifests(args) => lb_l7_webhook::manifests::run(args).await,
            Command::Report(args) => lb_l7_webhook::report::run(args).await,
            Command::Backfill(args) => lb_l7_webhook::backfill::run(args).await,
            Command::Certs(args) => lb_l7_webhook::certs::run(args).await,
            Command::Doctor(args) => lb_l7_webhook::doctor::run(args).await,
            Command::Reconcile(args) => lb_l7_webhook::reconcile::run(args).await,
            // Each further subcommand: `Command::X(args) => lb_l7_webhook::x::run(args).await` returning
            // anyhow::Result<ExitCode>.
        }
    });
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {}", error_line(&e));
            ExitCode::from(2)
        }
    }
}

/// The error and its causes on one line, each cause once: some errors (kube's among them) already print their
/// source in their own message, and the chain would repeat it.
fn error_line(error: &anyhow::Error) -> String {
    let mut line = String::new();
    for cause in error.chain() {
        let text = cause.to_string();
        let text = text.trim().trim_start_matches("error: ");
        if text.is_empty() || line.contains(text) {
            continue;
        }
        if !line.is_empty() {
            line.push_str(": ");
        }
        line.push_str(text);
    }
    line.replace('\n', " ")
}
