//! `lb-l7-webhook doctor`: is Cilium ready, is the webhook wired, and did Envoy configs really appear?
//!
//! Three layers: [`fetch`] reads the cluster (get and list; with `--probe` one dry-run create), [`checks`] turns what was read into
//! ok / warn / fail results with a one-line fix each (pure, no IO), and [`render`] prints them.
//!
//! Exit status: 0 when no check fails (warnings allowed), 1 when at least one check fails, 2 when the doctor could
//! not run at all (bad flags, no kubeconfig or in-cluster config, API server unreachable or not done within
//! [`RUN_TIMEOUT`], credentials rejected).
//! A 403 or 404 from the API server is not an error exit: it is a failed check that says which permission or
//! object is missing.

pub mod checks;
pub mod fetch;
pub mod render;

use std::io::{IsTerminal, Write};
use std::process::ExitCode;
use std::time::{SystemTime, UNIX_EPOCH};

use anyhow::Context as _;
use k8s_openapi::api::admissionregistration::v1::MutatingWebhookConfiguration;

pub use crate::cluster::ClusterError as FetchError;
pub use checks::{Check, ClusterState, DiagnoseOptions, Group, Lookup, Report, Status, diagnose};
pub use fetch::fetch;
use lb_l7_core::policy::{Policy, WEBHOOK_NAMESPACE};
use lb_l7_core::render::{RenderOptions, render_webhook_configuration};

/// The MutatingWebhookConfiguration's name in the shipped manifests.
pub const DEFAULT_WEBHOOK_NAME: &str = "lb-l7-webhook";

/// The longest a whole run may take (every read, all pages); beyond it the doctor gives up with exit status 2.
pub const RUN_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(120);

/// Output format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Output {
    /// Sections of checks with a fix under each problem (colour only on a terminal; NO_COLOR turns it off).
    Table,
    /// `{"checks": [{"id", "group", "status", "title", "message", "fix", "objects"}], "summary": {...}}`.
    Json,
}

/// `doctor`'s flags. Every flag also reads an `LB_L7_*` environment variable.
#[derive(clap::Args, Debug, Clone)]
pub struct DoctorArgs {
    /// Look only at Services (and their CiliumEnvoyConfigs) in this namespace. The Cilium and webhook checks are
    /// cluster-wide either way.
    #[arg(long, short = 'n', env = "LB_L7_DOCTOR_NAMESPACE")]
    pub namespace: Option<String>,

    /// Output format.
    #[arg(long, short = 'o', env = "LB_L7_DOCTOR_OUTPUT", value_enum, default_value_t = Output::Table)]
    pub output: Output,

    /// Name of the MutatingWebhookConfiguration.
    #[arg(long, env = "LB_L7_WEBHOOK_NAME", default_value = DEFAULT_WEBHOOK_NAME)]
    pub webhook_name: String,

    /// Namespace of the ConfigMap named by --policy-configmap.
    #[arg(long, env = "LB_L7_WEBHOOK_NAMESPACE", default_value = WEBHOOK_NAMESPACE)]
    pub webhook_namespace: String,

    /// Read the webhook's policy from this ConfigMap (key `policy.yaml`, or its only key) instead of the one the
    /// webhook's Deployment mounts (followed from the MutatingWebhookConfiguration, its Service and Deployment).
    #[arg(long, env = "LB_L7_POLICY_CONFIGMAP")]
    pub policy_configmap: Option<String>,

    /// A policy file to compare with the policy the webhook runs: a warning when they differ. The checks use the
    /// policy the webhook runs. In the admission-policy mode, the file the admission policies were rendered from
    /// (their drift check); without it, the policy the cluster runs.
    #[arg(long, env = "LB_L7_POLICY")]
    pub policy: Option<std::path::PathBuf>,

    /// End-to-end probe (check webhook.probe): a server-side dry-run create (dryRun=All, nothing is stored) of a
    /// Service with a port named grpc in a namespace the policy selects, which must come back annotated. Needs
    /// `create` on Services there (deploy/doctor/probe-rbac.yaml).
    #[arg(long, env = "LB_L7_DOCTOR_PROBE")]
    pub probe: bool,

    /// The namespace --probe creates its dry-run Service in (default: `default` when the policy selects it, else
    /// the first namespace it selects).
    #[arg(long, env = "LB_L7_DOCTOR_PROBE_NAMESPACE", requires = "probe")]
    pub probe_namespace: Option<String>,

    /// Items per list call (Services, Namespaces, CiliumEnvoyConfigs, EndpointSlices), read page by page.
    #[arg(long, env = "LB_L7_PAGE_SIZE", default_value_t = crate::cluster::DEFAULT_PAGE_SIZE, value_parser = clap::value_parser!(u32).range(1..))]
    pub page_size: u32,
}

impl DoctorArgs {
    pub fn options(&self, now: i64) -> anyhow::Result<DiagnoseOptions> {
        let policy_file = match &self.policy {
            Some(path) => Some((
                path.clone(),
                crate::input::load_policy(Some(path.as_path()))?,
            )),
            None => None,
        };
        Ok(DiagnoseOptions {
            webhook_name: self.webhook_name.clone(),
            webhook_namespace: self.webhook_namespace.clone(),
            policy_configmap: self.policy_configmap.clone(),
            policy_file,
            probe: self.probe,
            probe_namespace: self.probe_namespace.clone(),
            namespace: self.namespace.clone(),
            page_size: self.page_size,
            now,
        })
    }
}

/// The webhook configuration the policy renders (`lb-l7-webhook manifests`), for the drift check. Only the parts
/// the policy decides are compared, so the client config and caBundle given here do not matter.
pub fn render_for_drift(policy: &Policy, webhook_name: &str) -> MutatingWebhookConfiguration {
    let opts = RenderOptions {
        name: webhook_name.to_string(),
        ..RenderOptions::default()
    };
    render_webhook_configuration(policy, &opts)
}

/// Fetches and diagnoses: the whole doctor without the printing. Tests call this with a mocked client.
///
/// The admission-policy engine's checks compare the live admission policies with what `--policy FILE` renders,
/// or else the policy the cluster's webhook runs.
pub async fn examine(client: &kube::Client, opts: &DiagnoseOptions) -> Result<Report, FetchError> {
    let state = fetch(client, opts).await?;
    let render = |policy: &Policy| Some(render_for_drift(policy, &opts.webhook_name));
    let report = diagnose(&state, opts, Some(&render));
    let admission = fetch::fetch_admission_policies(client).await?;
    let installed = checks::check_policy(&state.policy, opts).1;
    let policy = opts
        .policy_file
        .as_ref()
        .map(|(_, p)| p)
        .or(installed.as_ref());
    Ok(checks::amend_report(
        report,
        &admission,
        &state.webhook,
        policy,
    ))
}

/// Renders the report and returns the exit status it calls for.
pub fn print(
    report: &Report,
    output: Output,
    colour: bool,
    out: &mut dyn Write,
) -> anyhow::Result<ExitCode> {
    let text = match output {
        Output::Table => render::table(report, colour),
        Output::Json => render::json(report).context("cannot serialize the report")?,
    };
    out.write_all(text.as_bytes())
        .and_then(|()| out.flush())
        .context("cannot write the report to stdout")?;
    Ok(exit_code(report))
}

/// 0 when nothing fails, 1 when something fails.
pub fn exit_code(report: &Report) -> ExitCode {
    if report.failed() {
        ExitCode::from(1)
    } else {
        ExitCode::SUCCESS
    }
}

fn unix_now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}

/// `lb-l7-webhook doctor`. Errors (exit status 2 in `main`) mean the doctor could not look at the cluster.
pub async fn run(args: DoctorArgs) -> anyhow::Result<ExitCode> {
    let client = kube::Client::try_default().await.context(
        "cannot configure a Kubernetes client (no usable kubeconfig or in-cluster service account)",
    )?;
    let opts = args.options(unix_now())?;
    let report = tokio::time::timeout(RUN_TIMEOUT, examine(&client, &opts))
        .await
        .map_err(|_| {
            anyhow::anyhow!(
                "the Kubernetes API server did not answer all reads within {} s",
                RUN_TIMEOUT.as_secs()
            )
        })??;
    let stdout = std::io::stdout();
    let colour = args.output == Output::Table
        && stdout.is_terminal()
        && std::env::var_os("NO_COLOR").is_none_or(|v| v.is_empty());
    print(&report, args.output, colour, &mut stdout.lock())
}
