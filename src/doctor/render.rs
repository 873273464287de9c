//! Renderers for the doctor's report: a table for people (colour only on a terminal) and JSON for scripts.

use std::fmt::Write as _;

use super::checks::{Group, Report, Status};

const RESET: &str = "\x1b[0m";

fn paint(status: Status) -> &'static str {
    match status {
        Status::Ok => "\x1b[32m",
        Status::Warn => "\x1b[33m",
        Status::Fail => "\x1b[1;31m",
    }
}

fn label(status: Status) -> &'static str {
    match status {
        Status::Ok => "ok",
        Status::Warn => "warn",
        Status::Fail => "FAIL",
    }
}

/// One section per group; each check on one line (status, title, message), its fix on the next.
pub fn table(report: &Report, colour: bool) -> String {
    let width = report
        .checks
        .iter()
        .map(|c| c.title.chars().count())
        .max()
        .unwrap_or(0);
    let mut out = String::new();
    let mut group: Option<Group> = None;
    for c in &report.checks {
        if group != Some(c.group) {
            if group.is_some() {
                out.push('\n');
            }
            group = Some(c.group);
            let _ = writeln!(out, "{}", c.group.title());
        }
        let status = format!("{:<4}", label(c.status));
        let status = if colour {
            format!("{}{status}{RESET}", paint(c.status))
        } else {
            status
        };
        let _ = writeln!(out, "  {status}  {:<width$}  {}", c.title, c.message);
        if let Some(fix) = &c.fix {
            let _ = writeln!(out, "        {:<width$}  fix: {fix}", "");
        }
    }
    let s = report.summary;
    let _ = writeln!(out, "\n{} ok, {} warn, {} fail", s.ok, s.warn, s.fail);
    out
}

/// `{"checks": [...], "summary": {"ok": n, "warn": n, "fail": n}}`, pretty-printed.
pub fn json(report: &Report) -> Result<String, serde_json::Error> {
    let mut s = serde_json::to_string_pretty(report)?;
    s.push('\n');
    Ok(s)
}
