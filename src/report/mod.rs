//! `lb-l7-webhook report`: what the policy would do to each Service, from manifests or a live cluster.
//!
//! The report calls the same [`CompiledPolicy::evaluate`] as the webhook, with the namespace's labels (from the
//! Namespace objects in the input, or from the cluster), so the webhook configuration's namespace selector and
//! the webhook's own checks are both accounted for. A Service whose Namespace is not in the input is evaluated as
//! in an unlabelled namespace, and its entry carries a warning that says so.
//!
//! Exit status: 0 when the report is complete; 2 when a file or document could not be read (the report still
//! lists every Service that could be read); 3 with `--fail-on enable` when a Service would be changed. A read
//! error wins over `--fail-on` (2 before 3): the report is incomplete, so "nothing to change" cannot be trusted.

pub mod render;

use std::collections::{BTreeMap, HashMap};
use std::io::{BufWriter, IsTerminal, Write};
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use k8s_openapi::api::core::v1::Service;
use serde::{Deserialize, Serialize};

use crate::cluster::policy_source::Chosen;
use crate::cluster::target_ports::ResolvedPorts;
pub use crate::input::manifests::{FoundService, Inventory, SourceError, namespace_of};
use lb_l7_core::policy::{
    CompiledPolicy, Decision, DecisionKind, Mode, NamespaceContext, OPT_LABEL, Policy, Scope,
    cilium_envoy_config_name, describe_port,
};

/// Exit status when a file or document could not be read (the report lists what could be).
pub const EXIT_ERRORS: u8 = 2;
/// Exit status of `--fail-on enable` when any Service would be changed.
pub const EXIT_WOULD_CHANGE: u8 = 3;

/// Output formats of `report`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum OutputFormat {
    /// NAMESPACE, NAME, PORTS, DECISION, REASON, then warnings and a summary line (colour only on a terminal).
    Table,
    /// One object: `summary`, `services` (one entry per Service) and `errors`.
    Json,
    /// The same as json, in YAML.
    Yaml,
    /// A Markdown table, for a pull-request comment.
    Markdown,
    /// `wgpolicyk8s.io/v1alpha2` PolicyReport objects, one per namespace, for `kubectl apply` and Policy Reporter.
    Policyreport,
}

/// What `--fail-on` fails on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum FailOn {
    /// Any Service that the policy would change (decision `enable`).
    Enable,
}

/// `report`'s arguments. Every flag also reads an `LB_L7_*` environment variable.
#[derive(clap::Args, Debug, Clone)]
pub struct ReportArgs {
    /// Manifest files or directories (YAML, multi-document YAML, `kind: List`, kustomize output, or JSON);
    /// `-` reads stdin. Directories are walked for *.yaml, *.yml and *.json.
    #[arg(value_name = "PATH", conflicts_with = "cluster")]
    pub paths: Vec<PathBuf>,

    /// Read the Services and Namespaces of the cluster instead (kubeconfig, or the in-cluster config).
    #[arg(long, env = "LB_L7_REPORT_CLUSTER")]
    pub cluster: bool,

    /// Only this namespace's Services.
    #[arg(long, short = 'n', env = "LB_L7_NAMESPACE")]
    pub namespace: Option<String>,

    /// Policy file (YAML), as for `serve`. Without it: with --cluster, the policy the installed webhook runs
    /// (the built-in default when none is installed); offline, the built-in default.
    #[arg(long, env = "LB_L7_POLICY")]
    pub policy: Option<PathBuf>,

    /// Output format.
    #[arg(long, short = 'o', env = "LB_L7_REPORT_OUTPUT", value_enum, default_value_t = OutputFormat::Table)]
    pub output: OutputFormat,

    /// Exit with status 3 when any Service would be changed (for CI over a GitOps repository).
    #[arg(long, env = "LB_L7_REPORT_FAIL_ON", value_enum)]
    pub fail_on: Option<FailOn>,

    /// With --cluster: how many objects each list call asks for (limit/continue paging).
    #[arg(long, env = "LB_L7_PAGE_SIZE", default_value_t = 500, value_parser = clap::value_parser!(u32).range(1..))]
    pub page_size: u32,

    /// With --cluster: the MutatingWebhookConfiguration whose webhook's policy is used when --policy is not given.
    #[arg(long, env = "LB_L7_WEBHOOK_NAME", default_value = crate::cluster::policy_source::DEFAULT_WEBHOOK_NAME)]
    pub webhook_name: String,

    /// Offline: a namespace's labels, as NS=KEY=VALUE[,KEY=VALUE] (repeatable; space-separated in the variable),
    /// for a namespace whose Namespace object is not in the input (they win over the object's when it is).
    #[arg(long = "namespace-labels", value_name = "NS=KEY=VALUE[,KEY=VALUE]", env = "LB_L7_REPORT_NAMESPACE_LABELS",
          value_delimiter = ' ', value_parser = parse_namespace_labels, conflicts_with = "cluster")]
    pub namespace_labels: Vec<StatedLabels>,

    /// Offline: treat every namespace without a Namespace object in the input (nor --namespace-labels) as opted in
    /// (labelled lb-l7-webhook/enabled=true).
    #[arg(long, env = "LB_L7_REPORT_ASSUME_OPTED_IN", conflicts_with = "cluster")]
    pub assume_opted_in: bool,
}

/// One `--namespace-labels` value: a namespace and the labels stated for it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StatedLabels {
    pub namespace: String,
    pub labels: BTreeMap<String, String>,
}

/// Parses `NS=KEY=VALUE[,KEY=VALUE]` (a value may be empty: `NS=KEY=`).
pub fn parse_namespace_labels(text: &str) -> Result<StatedLabels, String> {
    let usage = || {
        format!(
            "{text:?}: expected NS=KEY=VALUE[,KEY=VALUE], e.g. checkout=lb-l7-webhook/enabled=true"
        )
    };
    let (namespace, pairs) = text.split_once('=').ok_or_else(usage)?;
    if namespace.is_empty() || pairs.is_empty() {
        return Err(usage());
    }
    let mut labels = BTreeMap::new();
    for pair in pairs.split(',') {
        let (k, v) = pair.split_once('=').ok_or_else(usage)?;
        if k.is_empty() {
            return Err(usage());
        }
        labels.insert(k.to_string(), v.to_string());
    }
    Ok(StatedLabels {
        namespace: namespace.to_string(),
        labels,
    })
}

/// One Service in a report.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Entry {
    pub namespace: String,
    pub name: String,
    /// Each port as `name (port/protocol)`.
    pub ports: Vec<String>,
    pub decision: DecisionKind,
    pub reason: String,
    pub warnings: Vec<String>,
    /// The rule that matched, when one did.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rule: Option<String>,
    /// The CiliumEnvoyConfig Cilium's operator creates for the Service: for `enable` and `already-enabled`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cilium_envoy_config: Option<String>,
    /// The Service's uid (cluster mode), for PolicyReport resource references.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub uid: Option<String>,
    /// Offline: the file and document the Service came from.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source: Option<String>,
    /// For `excluded-namespace` only because the namespace has not opted in: what the rules decide once it does
    /// (the same evaluation with the namespace labelled `lb-l7-webhook/enabled=true`), when that is `enable`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub would_enable_on_opt_in: Option<OptInHint>,
}

/// What opting the namespace in would do to a Service that its scope excludes today.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct OptInHint {
    /// The label the namespace needs: `lb-l7-webhook/enabled=true`.
    pub label: String,
    /// The rule that would match.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rule: Option<String>,
    /// The rules' reason, e.g. `port grpc (50051/TCP) matches rule 'grpc-ports'`.
    pub reason: String,
}

/// How many Services got each decision.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub struct Summary {
    pub total: usize,
    pub enable: usize,
    pub already_enabled: usize,
    pub opted_out: usize,
    pub excluded_namespace: usize,
    pub no_match: usize,
    pub not_applicable: usize,
    /// Services with at least one warning.
    pub with_warnings: usize,
}

impl Summary {
    pub fn count(&self, kind: DecisionKind) -> usize {
        match kind {
            DecisionKind::Enable => self.enable,
            DecisionKind::AlreadyEnabled => self.already_enabled,
            DecisionKind::OptedOut => self.opted_out,
            DecisionKind::ExcludedNamespace => self.excluded_namespace,
            DecisionKind::NoMatch => self.no_match,
            DecisionKind::NotApplicable => self.not_applicable,
        }
    }

    fn add(&mut self, e: &Entry) {
        self.record(e.decision, !e.warnings.is_empty());
    }

    /// Counts one Service with this decision (and whether it has warnings).
    pub fn record(&mut self, kind: DecisionKind, warned: bool) {
        self.total += 1;
        *match kind {
            DecisionKind::Enable => &mut self.enable,
            DecisionKind::AlreadyEnabled => &mut self.already_enabled,
            DecisionKind::OptedOut => &mut self.opted_out,
            DecisionKind::ExcludedNamespace => &mut self.excluded_namespace,
            DecisionKind::NoMatch => &mut self.no_match,
            DecisionKind::NotApplicable => &mut self.not_applicable,
        } += 1;
        if warned {
            self.with_warnings += 1;
        }
    }

    /// `12 Services: 3 enable, 1 already-enabled, ...` (every decision, zeros included).
    pub fn line(&self) -> String {
        let mut s = format!(
            "{} Service{}:",
            self.total,
            if self.total == 1 { "" } else { "s" }
        );
        for (i, k) in DecisionKind::ALL.iter().enumerate() {
            s.push_str(if i == 0 { " " } else { ", " });
            s.push_str(&format!("{} {}", self.count(*k), k));
        }
        if self.with_warnings > 0 {
            s.push_str(&format!("; {} with warnings", self.with_warnings));
        }
        s
    }
}

/// A report: the entries sorted by namespace and name, their summary, and the inputs that could not be read.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Report {
    pub policy: PolicyInfo,
    pub summary: Summary,
    pub services: Vec<Entry>,
    pub errors: Vec<SourceError>,
    /// Offline: namespace labels stated by `--namespace-labels` or `--assume-opted-in`, not read from the input.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub stated_namespace_labels: BTreeMap<String, BTreeMap<String, String>>,
}

/// What the report says about the policy it applied.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct PolicyInfo {
    pub scope: Scope,
    pub mode: Mode,
    /// Where the policy came from (`--cluster`): the installed webhook's ConfigMap, a file, or the built-in default.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source: Option<String>,
    /// Set when `--policy FILE` differs from the policy the installed webhook runs.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub warning: Option<String>,
}

/// Evaluates one Service as the webhook configuration and the webhook together would: the namespace's labels
/// (unknown when its Namespace is not in the input or could not be read, with a warning saying so) go to the one
/// pure evaluation.
pub fn evaluate_service(policy: &CompiledPolicy, svc: &Service, inventory: &Inventory) -> Decision {
    policy.evaluate(svc, inventory.context(svc))
}

/// Builds one entry, moving the Service's strings rather than copying them.
pub fn entry(service: Service, decision: Decision, source: Option<String>) -> Entry {
    let meta = service.metadata;
    let namespace = meta
        .namespace
        .filter(|n| !n.is_empty())
        .unwrap_or_else(|| "default".to_string());
    let name = meta.name.unwrap_or_default();
    let ports = service
        .spec
        .and_then(|s| s.ports)
        .unwrap_or_default()
        .iter()
        .map(describe_port)
        .collect();
    let cilium_envoy_config = decision
        .kind
        .is_l7()
        .then(|| cilium_envoy_config_name(&name));
    Entry {
        namespace,
        name,
        ports,
        decision: decision.kind,
        reason: decision.reason,
        warnings: decision.warnings,
        rule: decision.rule,
        cilium_envoy_config,
        uid: meta.uid,
        source,
        would_enable_on_opt_in: None,
    }
}

/// For a Service that the scope excludes only because its namespace has not opted in (no `lb-l7-webhook/enabled`
/// label; `false` is the namespace owner's no, and `excludedNamespaces` stays excluded): the same evaluation with
/// the namespace labelled `lb-l7-webhook/enabled=true`, kept when it would `enable`. `labels` caches the assumed
/// labels per namespace.
fn opt_in_hint(
    policy: &CompiledPolicy,
    svc: &Service,
    inventory: &Inventory,
    assumed: &mut HashMap<String, Option<BTreeMap<String, String>>>,
) -> Option<OptInHint> {
    let ns = namespace_of(svc);
    let labels = assumed
        .entry(ns.to_string())
        .or_insert_with(|| {
            let mut labels = inventory.namespaces.get(ns).cloned().unwrap_or_default();
            if labels.contains_key(OPT_LABEL) {
                return None;
            }
            labels.insert(OPT_LABEL.to_string(), "true".to_string());
            Some(labels)
        })
        .as_ref()?;
    let d = policy.evaluate(svc, NamespaceContext::known(ns, labels));
    (d.kind == DecisionKind::Enable).then(|| OptInHint {
        label: format!("{OPT_LABEL}=true"),
        rule: d.rule,
        reason: d.reason,
    })
}

/// Evaluates every Service of an inventory (the policy is compiled once by the caller).
pub fn build_report(policy: &CompiledPolicy, inventory: Inventory) -> Report {
    build_report_resolved(policy, inventory, &ResolvedPorts::new())
}

/// [`build_report`] with named targetPorts resolved (from the cluster's EndpointSlices): a Service Cilium will
/// balance per request is warned when a named targetPort resolves to a number other than its port.
pub fn build_report_resolved(
    policy: &CompiledPolicy,
    inventory: Inventory,
    resolved: &ResolvedPorts,
) -> Report {
    let mut inventory = inventory;
    let services = std::mem::take(&mut inventory.services);
    let mut summary = Summary::default();
    let mut assumed = HashMap::new();
    let mut entries: Vec<Entry> = services
        .into_iter()
        .map(
            |FoundService {
                 service,
                 origin,
                 replaced,
             }| {
                let mut decision = evaluate_service(policy, &service, &inventory);
                if decision.kind.is_l7() {
                    decision
                        .warnings
                        .extend(crate::cluster::target_ports::warnings_for(
                            &service, resolved,
                        ));
                }
                let hint = (decision.kind == DecisionKind::ExcludedNamespace)
                    .then(|| opt_in_hint(policy, &service, &inventory, &mut assumed))
                    .flatten();
                if let Some(h) = &hint {
                    decision.reason = format!(
                        "would enable once namespace {} opts in (label {}): {}",
                        namespace_of(&service),
                        h.label,
                        h.reason
                    );
                }
                if !replaced.is_empty() {
                    let mut all: Vec<String> = replaced.iter().map(|o| o.to_string()).collect();
                    all.extend(origin.as_ref().map(|o| o.to_string()));
                    decision.warnings.push(format!(
                        "the same Service is given {} times ({}): one Service, as the last one defines it",
                        all.len(),
                        all.join(", ")
                    ));
                }
                let mut e = entry(service, decision, origin.map(|o| o.to_string()));
                e.would_enable_on_opt_in = hint;
                e
            },
        )
        .collect();
    let errors = inventory.errors;
    entries.sort_unstable_by(|a, b| (&a.namespace, &a.name).cmp(&(&b.namespace, &b.name)));
    for e in &entries {
        summary.add(e);
    }
    Report {
        policy: PolicyInfo {
            scope: policy.policy.scope,
            mode: policy.policy.mode,
            source: None,
            warning: None,
        },
        summary,
        services: entries,
        errors,
        stated_namespace_labels: inventory.stated,
    }
}

/// Applies `--namespace-labels` and `--assume-opted-in` to an offline inventory (after reading it).
pub fn state_namespaces(inventory: &mut Inventory, stated: &[StatedLabels], assume_opted_in: bool) {
    for s in stated {
        inventory.state_namespace_labels(&s.namespace, &s.labels);
    }
    if assume_opted_in {
        inventory.assume_opted_in();
    }
}

/// Reads offline inputs (files, directories, `-`), keeping only `namespace` when given.
pub fn read_offline(paths: &[PathBuf], namespace: Option<&str>) -> Inventory {
    let mut inv = Inventory::default();
    inv.read_paths(paths);
    if let Some(ns) = namespace {
        inv.retain_namespace(ns);
    }
    inv
}

/// Reads the Services and Namespaces of a cluster (paged) into an inventory. Services must be readable; when the
/// Namespaces are not (403), every entry says its namespace's labels are unknown.
pub async fn read_cluster(
    client: &kube::Client,
    namespace: Option<&str>,
    page_size: u32,
) -> anyhow::Result<Inventory> {
    let inv = crate::cluster::read_inventory(client, namespace, page_size).await?;
    if let crate::cluster::Lookup::Unreadable(why) = &inv.namespaces {
        tracing::warn!(
            "cannot read Namespaces ({why}): their labels are unknown, so no namespace counts as opted in"
        );
    }
    Ok(Inventory::from_cluster(inv)?)
}

/// `report --cluster` with a chosen policy: reads the inventory, resolves named targetPorts through the
/// EndpointSlices of the Services that have them, evaluates, and says which policy was used.
pub async fn cluster_report(
    client: &kube::Client,
    chosen: &Chosen,
    namespace: Option<&str>,
    page_size: u32,
) -> anyhow::Result<Report> {
    let inventory = read_cluster(client, namespace, page_size).await?;
    let resolved = match crate::cluster::target_ports::read_resolved_ports(
        client,
        inventory.services.iter().map(|f| &f.service),
        page_size,
    )
    .await?
    {
        crate::cluster::Lookup::Found(r) => r,
        crate::cluster::Lookup::Missing => ResolvedPorts::new(),
        crate::cluster::Lookup::Unreadable(why) => {
            tracing::warn!(
                "cannot read EndpointSlices ({why}): named targetPorts are not checked against port"
            );
            ResolvedPorts::new()
        }
    };
    let compiled = chosen.source.policy.compile();
    let mut report = build_report_resolved(&compiled, inventory, &resolved);
    report.policy.source = Some(chosen.source.describe());
    report.policy.warning = chosen.warning.clone();
    Ok(report)
}

/// The exit status for a report (see the module documentation for the precedence).
pub fn exit_status(report: &Report, fail_on: Option<FailOn>) -> u8 {
    if !report.errors.is_empty() {
        EXIT_ERRORS
    } else if fail_on == Some(FailOn::Enable) && report.summary.enable > 0 {
        EXIT_WOULD_CHANGE
    } else {
        0
    }
}

/// Writes a report in a format.
pub fn write_report(
    out: &mut dyn Write,
    report: &Report,
    format: OutputFormat,
    colour: bool,
) -> anyhow::Result<()> {
    match format {
        OutputFormat::Table => render::table(out, report, colour)?,
        OutputFormat::Json => render::json(out, report)?,
        OutputFormat::Yaml => render::yaml(out, report)?,
        OutputFormat::Markdown => render::markdown(out, report)?,
        OutputFormat::Policyreport => render::policy_reports(out, report)?,
    }
    Ok(())
}

/// The `report` subcommand.
pub async fn run(args: ReportArgs) -> anyhow::Result<ExitCode> {
    let policy: Policy = crate::input::load_policy(args.policy.as_deref())?;
    let report = if args.cluster {
        let client = kube::Client::try_default()
            .await
            .context("cannot build a Kubernetes client from kubeconfig or the in-cluster config")?;
        let file = args.policy.clone().map(|path| (path, policy));
        let chosen = crate::cluster::policy_source::choose(
            &client,
            file,
            &args.webhook_name,
            args.page_size,
        )
        .await?;
        if let Some(w) = &chosen.warning {
            eprintln!("warning: {w}");
        }
        cluster_report(&client, &chosen, args.namespace.as_deref(), args.page_size).await?
    } else {
        if args.paths.is_empty() {
            anyhow::bail!(
                "nothing to report on: give manifest files or directories, `-` for stdin, or --cluster"
            );
        }
        let paths = args.paths.clone();
        let namespace = args.namespace.clone();
        let mut inventory =
            tokio::task::spawn_blocking(move || read_offline(&paths, namespace.as_deref()))
                .await
                .context("the manifest reader stopped")?;
        state_namespaces(&mut inventory, &args.namespace_labels, args.assume_opted_in);
        for n in &inventory.notices {
            eprintln!("note: {n}");
        }
        build_report(&policy.compile(), inventory)
    };
    for e in &report.errors {
        eprintln!("error: {e}");
    }
    let stdout = std::io::stdout();
    let colour = stdout.is_terminal() && std::env::var_os("NO_COLOR").is_none();
    let mut out = BufWriter::with_capacity(1 << 16, stdout.lock());
    let written = write_report(&mut out, &report, args.output, colour)
        .and_then(|()| out.flush().context("cannot write the report"));
    if let Err(e) = written {
        // `report | head` closes the pipe early: not an error of the report.
        let broken_pipe = e
            .chain()
            .filter_map(|c| c.downcast_ref::<std::io::Error>())
            .any(|io| io.kind() == std::io::ErrorKind::BrokenPipe);
        if !broken_pipe {
            return Err(e);
        }
    }
    if !report.errors.is_empty() {
        eprintln!(
            "error: {} input error{}: the report above lists only what could be read",
            report.errors.len(),
            if report.errors.len() == 1 { "" } else { "s" }
        );
    }
    Ok(ExitCode::from(exit_status(&report, args.fail_on)))
}
