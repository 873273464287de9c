//! Renderers of a [`Report`]: table, JSON, YAML, Markdown and `wgpolicyk8s.io/v1alpha2` PolicyReports.
//!
//! Every renderer writes straight to the (buffered) writer it is given; none builds the whole output in memory,
//! except the PolicyReport renderer, which builds one namespace's report at a time.
//!
//! ## Decisions as PolicyReport results
//!
//! | decision | result |
//! |---|---|
//! | `enable` | `fail`: the Service lacks the annotation the policy requires (the webhook or `backfill` adds it) |
//! | `already-enabled` | `pass` |
//! | `opted-out`, `excluded-namespace`, `no-match`, `not-applicable` | `skip`: the policy does not require the annotation |
//!
//! A decision other than `enable` that carries warnings (a pitfall on an enabled Service, a mistyped
//! `Enabled`, the legacy annotation, a namespace missing from the input...) is `warn` instead, so it shows up in
//! Policy Reporter. An `enable` with warnings stays `fail`; its warnings are in the message and the properties.

use std::collections::BTreeMap;
use std::io::Write;

use serde::{Deserialize, Serialize};

use super::{Entry, Report};
use lb_l7_core::policy::DecisionKind;

/// The `policy` name of every PolicyReport result, and the `source`.
pub const POLICY_NAME: &str = "lb-l7-webhook";
/// At most this many results per PolicyReport object: a namespace with more Services gets several reports
/// (`lb-l7-webhook`, `lb-l7-webhook-2`, ...), so each stays well under the API server's object size limit.
pub const MAX_RESULTS_PER_REPORT: usize = 1000;

fn decision_colour(kind: DecisionKind) -> &'static str {
    match kind {
        DecisionKind::Enable => "\x1b[33m", // yellow: would change
        DecisionKind::AlreadyEnabled => "\x1b[32m", // green
        DecisionKind::OptedOut => "\x1b[36m", // cyan
        _ => "\x1b[2m",                     // dim
    }
}

const RESET: &str = "\x1b[0m";

fn ports_text(e: &Entry) -> String {
    if e.ports.is_empty() {
        "-".to_string()
    } else {
        e.ports.join(", ")
    }
}

/// NAMESPACE, NAME, PORTS, DECISION, REASON; then the warnings, one per line, and the summary line.
pub fn table(out: &mut dyn Write, report: &Report, colour: bool) -> std::io::Result<()> {
    let ports: Vec<String> = report.services.iter().map(ports_text).collect();
    let mut w = [
        "NAMESPACE".len(),
        "NAME".len(),
        "PORTS".len(),
        "DECISION".len(),
    ];
    for (e, p) in report.services.iter().zip(&ports) {
        w[0] = w[0].max(e.namespace.chars().count());
        w[1] = w[1].max(e.name.chars().count());
        w[2] = w[2].max(p.chars().count());
        w[3] = w[3].max(e.decision.as_str().len());
    }
    let [w0, w1, w2, w3] = w;
    if let Some(source) = &report.policy.source {
        writeln!(out, "policy: {source}")?;
    }
    if let Some(warning) = &report.policy.warning {
        writeln!(out, "warning: {warning}")?;
    }
    if colour {
        writeln!(
            out,
            "\x1b[1m{:w0$}  {:w1$}  {:w2$}  {:w3$}  REASON{RESET}",
            "NAMESPACE", "NAME", "PORTS", "DECISION"
        )?;
    } else {
        writeln!(
            out,
            "{:w0$}  {:w1$}  {:w2$}  {:w3$}  REASON",
            "NAMESPACE", "NAME", "PORTS", "DECISION"
        )?;
    }
    for (e, p) in report.services.iter().zip(&ports) {
        if colour {
            writeln!(
                out,
                "{:w0$}  {:w1$}  {:w2$}  {}{:w3$}{RESET}  {}",
                e.namespace,
                e.name,
                p,
                decision_colour(e.decision),
                e.decision.as_str(),
                e.reason
            )?;
        } else {
            writeln!(
                out,
                "{:w0$}  {:w1$}  {:w2$}  {:w3$}  {}",
                e.namespace,
                e.name,
                p,
                e.decision.as_str(),
                e.reason
            )?;
        }
    }
    if report.summary.with_warnings > 0 {
        writeln!(out)?;
        writeln!(out, "WARNINGS")?;
        for e in report.services.iter().filter(|e| !e.warnings.is_empty()) {
            for w in &e.warnings {
                if colour {
                    writeln!(out, "\x1b[33m!{RESET} {}/{}: {w}", e.namespace, e.name)?;
                } else {
                    writeln!(out, "! {}/{}: {w}", e.namespace, e.name)?;
                }
            }
        }
    }
    writeln!(out)?;
    writeln!(out, "Summary: {}", report.summary.line())?;
    let on_opt_in = report
        .services
        .iter()
        .filter(|e| e.would_enable_on_opt_in.is_some())
        .count();
    if on_opt_in > 0 {
        writeln!(
            out,
            "{on_opt_in} excluded-namespace Service{} would be enabled once {} namespace opts in \
             (state its labels with --namespace-labels NS=lb-l7-webhook/enabled=true, or --assume-opted-in).",
            if on_opt_in == 1 { "" } else { "s" },
            if on_opt_in == 1 { "its" } else { "their" },
        )?;
    }
    for (ns, labels) in &report.stated_namespace_labels {
        let labels: Vec<String> = labels.iter().map(|(k, v)| format!("{k}={v}")).collect();
        writeln!(
            out,
            "Namespace {ns}: labels stated on the command line, not read: {}",
            labels.join(",")
        )?;
    }
    if report.policy.mode == lb_l7_core::policy::Mode::DryRun {
        writeln!(
            out,
            "Policy mode is dry-run: the webhook only warns; `enable` is what enforce mode would change."
        )?;
    }
    if !report.errors.is_empty() {
        writeln!(
            out,
            "{} input error{} (see stderr): Services in those documents are missing above.",
            report.errors.len(),
            if report.errors.len() == 1 { "" } else { "s" }
        )?;
    }
    Ok(())
}

/// The whole report as one JSON object.
pub fn json(out: &mut dyn Write, report: &Report) -> std::io::Result<()> {
    serde_json::to_writer_pretty(&mut *out, report)?;
    writeln!(out)
}

/// Writes YAML through a `fmt::Write` adapter that keeps the writer's own I/O error (a closed pipe stays a
/// closed pipe instead of becoming a serializer error).
fn write_yaml<T: Serialize>(out: &mut dyn Write, value: &T) -> std::io::Result<()> {
    struct Adapter<'a> {
        out: &'a mut dyn Write,
        error: Option<std::io::Error>,
    }
    impl std::fmt::Write for Adapter<'_> {
        fn write_str(&mut self, s: &str) -> std::fmt::Result {
            self.out.write_all(s.as_bytes()).map_err(|e| {
                self.error = Some(e);
                std::fmt::Error
            })
        }
    }
    let mut adapter = Adapter { out, error: None };
    let result = serde_saphyr::to_fmt_writer(&mut adapter, value);
    match (adapter.error, result) {
        (Some(e), _) => Err(e),
        (None, Err(e)) => Err(std::io::Error::other(e)),
        (None, Ok(())) => Ok(()),
    }
}

/// The whole report as one YAML document.
pub fn yaml(out: &mut dyn Write, report: &Report) -> std::io::Result<()> {
    write_yaml(out, report)
}

fn md_escape(s: &str) -> String {
    s.replace('\\', "\\\\")
        .replace('|', "\\|")
        .replace(['\n', '\r'], " ")
}

/// A Markdown section: the summary, a table with a row per Service, and the errors.
pub fn markdown(out: &mut dyn Write, report: &Report) -> std::io::Result<()> {
    writeln!(out, "### lb-l7-webhook report")?;
    writeln!(out)?;
    writeln!(out, "**Summary:** {}", md_escape(&report.summary.line()))?;
    writeln!(out)?;
    writeln!(
        out,
        "| Namespace | Name | Ports | Decision | Reason | Warnings |"
    )?;
    writeln!(out, "|---|---|---|---|---|---|")?;
    for e in &report.services {
        let decision = if e.decision == DecisionKind::Enable {
            format!("**{}**", e.decision)
        } else {
            e.decision.to_string()
        };
        writeln!(
            out,
            "| {} | {} | {} | {} | {} | {} |",
            md_escape(&e.namespace),
            md_escape(&e.name),
            md_escape(&ports_text(e)),
            decision,
            md_escape(&e.reason),
            md_escape(&e.warnings.join("; "))
        )?;
    }
    if !report.errors.is_empty() {
        writeln!(out)?;
        writeln!(
            out,
            "**Errors** (Services in these documents are missing above):"
        )?;
        writeln!(out)?;
        for err in &report.errors {
            writeln!(out, "- {}", md_escape(&err.to_string()))?;
        }
    }
    Ok(())
}

/// A PolicyReport result (`wgpolicyk8s.io/v1alpha2`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ResultKind {
    Pass,
    Fail,
    Warn,
    Error,
    Skip,
}

/// The result for an entry; see the module documentation for the mapping.
pub fn policy_result(e: &Entry) -> ResultKind {
    match e.decision {
        DecisionKind::Enable => ResultKind::Fail,
        _ if !e.warnings.is_empty() => ResultKind::Warn,
        DecisionKind::AlreadyEnabled => ResultKind::Pass,
        DecisionKind::OptedOut
        | DecisionKind::ExcludedNamespace
        | DecisionKind::NoMatch
        | DecisionKind::NotApplicable => ResultKind::Skip,
    }
}

/// `wgpolicyk8s.io/v1alpha2` PolicyReport: the fields this tool writes (and reads back in tests).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PolicyReport {
    pub api_version: String,
    pub kind: String,
    pub metadata: PolicyReportMeta,
    #[serde(default)]
    pub results: Vec<PolicyReportResult>,
    pub summary: PolicyReportSummary,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PolicyReportMeta {
    pub name: String,
    pub namespace: String,
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PolicyReportResult {
    pub source: String,
    pub policy: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rule: Option<String>,
    pub result: ResultKind,
    pub message: String,
    pub category: String,
    pub scored: bool,
    pub resources: Vec<ResourceRef>,
    #[serde(default)]
    pub properties: BTreeMap<String, String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timestamp: Option<Timestamp>,
}

/// A reference to the Service a result is about (a core/v1 ObjectReference).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ResourceRef {
    pub api_version: String,
    pub kind: String,
    pub namespace: String,
    pub name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub uid: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Timestamp {
    pub seconds: i64,
    pub nanos: i32,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PolicyReportSummary {
    pub pass: usize,
    pub fail: usize,
    pub warn: usize,
    pub error: usize,
    pub skip: usize,
}

impl PolicyReportSummary {
    fn add(&mut self, r: ResultKind) {
        *match r {
            ResultKind::Pass => &mut self.pass,
            ResultKind::Fail => &mut self.fail,
            ResultKind::Warn => &mut self.warn,
            ResultKind::Error => &mut self.error,
            ResultKind::Skip => &mut self.skip,
        } += 1;
    }
}

fn result_for(e: &Entry, timestamp: Timestamp) -> PolicyReportResult {
    let result = policy_result(e);
    let mut message = e.reason.clone();
    for w in &e.warnings {
        message.push_str("; warning: ");
        message.push_str(w);
    }
    let mut properties = BTreeMap::new();
    properties.insert("decision".to_string(), e.decision.to_string());
    if let Some(cec) = &e.cilium_envoy_config {
        properties.insert("ciliumEnvoyConfig".to_string(), cec.clone());
    }
    if !e.ports.is_empty() {
        properties.insert("ports".to_string(), e.ports.join(", "));
    }
    if !e.warnings.is_empty() {
        properties.insert("warnings".to_string(), e.warnings.len().to_string());
    }
    PolicyReportResult {
        source: POLICY_NAME.to_string(),
        policy: POLICY_NAME.to_string(),
        rule: Some(
            e.rule
                .clone()
                .unwrap_or_else(|| e.decision.as_str().to_string()),
        ),
        result,
        message,
        category: "Cilium L7 load balancing".to_string(),
        scored: matches!(result, ResultKind::Pass | ResultKind::Fail),
        resources: vec![ResourceRef {
            api_version: "v1".to_string(),
            kind: "Service".to_string(),
            namespace: e.namespace.clone(),
            name: e.name.clone(),
            uid: e.uid.clone(),
        }],
        properties,
        timestamp: Some(timestamp),
    }
}

/// Groups the entries by namespace (they are sorted) into PolicyReports of at most
/// [`MAX_RESULTS_PER_REPORT`] results.
pub fn build_policy_reports(report: &Report) -> Vec<PolicyReport> {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default();
    let timestamp = Timestamp {
        seconds: i64::try_from(now.as_secs()).unwrap_or(i64::MAX),
        nanos: 0,
    };
    let mut reports = Vec::new();
    for group in report.services.chunk_by(|a, b| a.namespace == b.namespace) {
        for (i, chunk) in group.chunks(MAX_RESULTS_PER_REPORT).enumerate() {
            let mut summary = PolicyReportSummary::default();
            let results: Vec<PolicyReportResult> = chunk
                .iter()
                .map(|e| {
                    let r = result_for(e, timestamp);
                    summary.add(r.result);
                    r
                })
                .collect();
            let name = if i == 0 {
                POLICY_NAME.to_string()
            } else {
                format!("{POLICY_NAME}-{}", i + 1)
            };
            reports.push(PolicyReport {
                api_version: "wgpolicyk8s.io/v1alpha2".to_string(),
                kind: "PolicyReport".to_string(),
                metadata: PolicyReportMeta {
                    name,
                    namespace: chunk[0].namespace.clone(),
                    labels: BTreeMap::from([(
                        "app.kubernetes.io/managed-by".to_string(),
                        POLICY_NAME.to_string(),
                    )]),
                },
                results,
                summary,
            });
        }
    }
    reports
}

/// PolicyReports as a multi-document YAML stream, ready for `kubectl apply -f -`.
pub fn policy_reports(out: &mut dyn Write, report: &Report) -> std::io::Result<()> {
    for r in build_policy_reports(report) {
        writeln!(out, "---")?;
        write_yaml(out, &r)?;
    }
    Ok(())
}
