//! What `demo-client` shows: the live bars while it runs, and the summary (text table or JSON) at the end.

use std::fmt::Write as _;
use std::io::Write as _;
use std::time::Duration;

use super::duration::human;
use super::stats::{EXIT_NO_DATA, EXIT_OK, EXIT_UNMET, Stats};
use super::verdict::{Expectation, Judgement, Verdict, check, judge};

/// Summary format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Output {
    /// A table for people.
    Text,
    /// One JSON object, for machines.
    Json,
}

/// One backend's line of the summary.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct BackendReport {
    pub name: String,
    pub calls: u64,
    /// Fraction of the successful calls (0..1).
    pub share: f64,
    pub p50_ms: f64,
    pub p99_ms: f64,
    pub max_ms: f64,
}

/// One kind of failure.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct FailureReport {
    pub kind: String,
    pub count: u64,
    pub example: String,
}

/// The expectation as it appears in the report.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct ExpectationReport {
    pub verdict: Option<Verdict>,
    pub min_backends: Option<usize>,
    pub met: bool,
    pub unmet: Vec<String>,
}

/// Everything a run found out.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct Report {
    /// The verdict, also inside `judgement`; here for `jq -r .verdict`.
    pub verdict: Verdict,
    pub targets: Vec<String>,
    /// `one-connection` (the real case) or `client-side-balanced` (a target list, for tests without Cilium).
    pub mode: &'static str,
    pub ok: u64,
    pub failed: u64,
    pub elapsed_seconds: f64,
    pub calls_per_second: f64,
    pub concurrency: u32,
    pub rate: Option<f64>,
    pub interrupted: bool,
    pub backends: Vec<BackendReport>,
    pub failures: Vec<FailureReport>,
    pub judgement: Judgement,
    pub expectation: ExpectationReport,
}

fn ms(micros: u64) -> f64 {
    micros as f64 / 1000.0
}

/// What the report needs of the run's settings (the client's flags).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RunSettings {
    /// `--tolerance`: how far from an even share still counts as balanced.
    pub tolerance: f64,
    pub concurrency: u32,
    pub rate: Option<f64>,
}

impl Report {
    pub fn new(
        args: RunSettings,
        targets: Vec<String>,
        stats: &Stats,
        elapsed: Duration,
        interrupted: bool,
        expectation: Expectation,
    ) -> Self {
        let calls = stats.calls();
        let counts: Vec<u64> = calls.iter().map(|(_, c)| *c).collect();
        let judgement = judge(&counts, args.tolerance);
        let unmet = check(&judgement, &expectation);
        let total = stats.ok.max(1) as f64;
        let backends = stats
            .backends
            .iter()
            .map(|(name, h)| BackendReport {
                name: name.clone(),
                calls: h.len(),
                share: h.len() as f64 / total,
                p50_ms: ms(h.value_at_quantile(0.50)),
                p99_ms: ms(h.value_at_quantile(0.99)),
                max_ms: ms(h.max()),
            })
            .collect();
        let failures = stats
            .failures
            .iter()
            .map(|(kind, (count, example))| FailureReport {
                kind: kind.clone(),
                count: *count,
                example: example.clone(),
            })
            .collect();
        let secs = elapsed.as_secs_f64();
        Self {
            verdict: judgement.verdict,
            mode: if targets.len() > 1 {
                "client-side-balanced"
            } else {
                "one-connection"
            },
            targets,
            ok: stats.ok,
            failed: stats.failed,
            elapsed_seconds: secs,
            calls_per_second: if secs > 0.0 {
                (stats.ok + stats.failed) as f64 / secs
            } else {
                0.0
            },
            concurrency: args.concurrency,
            rate: args.rate,
            interrupted,
            backends,
            failures,
            judgement,
            expectation: ExpectationReport {
                verdict: expectation.verdict,
                min_backends: expectation.min_backends,
                met: unmet.is_empty(),
                unmet: unmet.iter().map(ToString::to_string).collect(),
            },
        }
    }

    /// 0: finished and met the expectation; 1: finished, expectation not met; 3: no call succeeded.
    pub fn exit_code(&self) -> u8 {
        if self.ok == 0 {
            EXIT_NO_DATA
        } else if self.expectation.met {
            EXIT_OK
        } else {
            EXIT_UNMET
        }
    }

    /// The error line for a run where no call succeeded.
    pub fn no_calls_message(&self) -> String {
        let kinds: Vec<String> = self
            .failures
            .iter()
            .map(|f| format!("{} x {} ({})", f.count, f.kind, f.example))
            .collect();
        let what = if kinds.is_empty() {
            "no call was sent".to_string()
        } else {
            format!("all {} calls failed: {}", self.failed, kinds.join("; "))
        };
        format!(
            "{what}. Is {} the demo server (protos.Goapp), reachable and answering?",
            self.targets.join(", ")
        )
    }

    pub fn to_json(&self) -> String {
        serde_json::to_string_pretty(self).unwrap_or_else(|e| format!("{{\"error\": \"{e}\"}}"))
    }

    pub fn to_text(&self) -> String {
        let mut out = String::new();
        let connection = if self.mode == "client-side-balanced" {
            format!(
                "client-side balanced over {} connections (test mode)",
                self.targets.len()
            )
        } else {
            "over 1 connection".to_string()
        };
        let _ = writeln!(
            out,
            "{} calls ({} ok, {} failed) to {}, {}, in {} ({:.0} calls/s), concurrency {}{}{}",
            self.ok + self.failed,
            self.ok,
            self.failed,
            self.targets.join(", "),
            connection,
            human(Duration::from_secs_f64(self.elapsed_seconds)),
            self.calls_per_second,
            self.concurrency,
            self.rate
                .map(|r| format!(", rate {r}/s"))
                .unwrap_or_default(),
            if self.interrupted {
                ", interrupted"
            } else {
                ""
            },
        );
        let _ = writeln!(out);
        let width = self
            .backends
            .iter()
            .map(|b| b.name.chars().count())
            .chain(std::iter::once("BACKEND".len()))
            .max()
            .unwrap_or(7);
        let _ = writeln!(
            out,
            "{:<width$}  {:>7}  {:>6}  {:>9}  {:>9}",
            "BACKEND", "CALLS", "SHARE", "P50", "P99"
        );
        for b in &self.backends {
            let _ = writeln!(
                out,
                "{:<width$}  {:>7}  {:>5.1}%  {:>9}  {:>9}  {}",
                b.name,
                b.calls,
                b.share * 100.0,
                human(Duration::from_secs_f64(b.p50_ms / 1000.0)),
                human(Duration::from_secs_f64(b.p99_ms / 1000.0)),
                bar(b.share, 1.0, 20),
            );
        }
        if self.backends.is_empty() {
            let _ = writeln!(out, "(no successful calls)");
        }
        for f in &self.failures {
            let _ = writeln!(out, "failed: {} x {}: {}", f.count, f.kind, f.example);
        }
        let _ = writeln!(out);
        let j = &self.judgement;
        let detail = match j.verdict {
            Verdict::NoCalls => "no call succeeded".to_string(),
            Verdict::Pinned => "1 backend served every call".to_string(),
            Verdict::Balanced | Verdict::Skewed => format!(
                "{} backends, fair share {:.1}%, largest deviation {:.0}% of it, tolerance {:.0}%",
                j.backends,
                j.fair_share * 100.0,
                j.max_deviation * 100.0,
                j.tolerance * 100.0
            ),
        };
        let _ = writeln!(out, "verdict: {} ({detail})", j.verdict);
        let e = &self.expectation;
        if e.verdict.is_some() || e.min_backends.is_some() {
            let mut wanted = Vec::new();
            if let Some(v) = e.verdict {
                wanted.push(v.to_string());
            }
            if let Some(n) = e.min_backends {
                wanted.push(format!("at least {n} backends"));
            }
            if e.met {
                let _ = writeln!(out, "expectation met: {}", wanted.join(", "));
            } else {
                let _ = writeln!(out, "expectation NOT met: {}", e.unmet.join("; "));
            }
        }
        out
    }
}

/// A bar of `width` cells for `value` out of `max`.
pub fn bar(value: f64, max: f64, width: usize) -> String {
    let filled = if max > 0.0 {
        ((value / max) * width as f64)
            .round()
            .clamp(0.0, width as f64) as usize
    } else {
        0
    };
    format!("{}{}", "█".repeat(filled), "░".repeat(width - filled))
}

/// The live per-backend bars, redrawn in place on stderr. Only used when stderr is a terminal.
#[derive(Debug)]
pub struct LiveView {
    enabled: bool,
    lines: usize,
}

impl LiveView {
    pub fn new(enabled: bool) -> Self {
        Self { enabled, lines: 0 }
    }

    pub fn enabled(&self) -> bool {
        self.enabled
    }

    /// The frame for these counters (pure, for tests): a header and one bar per backend.
    pub fn frame(stats: &Stats, elapsed: Duration) -> Vec<String> {
        let mut lines = vec![format!(
            "{} ok, {} failed, {}",
            stats.ok,
            stats.failed,
            human(elapsed)
        )];
        let calls = stats.calls();
        let most = calls.iter().map(|(_, c)| *c).max().unwrap_or(0) as f64;
        let width = calls
            .iter()
            .map(|(n, _)| n.chars().count())
            .max()
            .unwrap_or(0);
        let total = stats.ok.max(1) as f64;
        for (name, c) in calls {
            lines.push(format!(
                "{name:<width$}  {}  {c:>7} {:>5.1}%",
                bar(c as f64, most, 30),
                c as f64 / total * 100.0
            ));
        }
        lines
    }

    pub fn draw(&mut self, stats: &Stats, elapsed: Duration) {
        if !self.enabled {
            return;
        }
        let frame = Self::frame(stats, elapsed);
        let mut out = String::new();
        if self.lines > 0 {
            // Back to the first line of the previous frame, then clear to the end of the screen.
            let _ = write!(out, "\x1b[{}F\x1b[J", self.lines);
        }
        for line in &frame {
            out.push_str(line);
            out.push('\n');
        }
        self.lines = frame.len();
        let mut stderr = std::io::stderr().lock();
        let _ = stderr.write_all(out.as_bytes());
        let _ = stderr.flush();
    }

    /// Removes the last frame, so the summary stands alone.
    pub fn clear(&mut self) {
        if self.enabled && self.lines > 0 {
            let mut stderr = std::io::stderr().lock();
            let _ = write!(stderr, "\x1b[{}F\x1b[J", self.lines);
            let _ = stderr.flush();
            self.lines = 0;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    fn stats(calls: &[(&str, u64)], failed: u64) -> Stats {
        let Ok(mut s) = Stats::new() else {
            panic!("histogram bounds are constants");
        };
        for (name, n) in calls {
            for i in 0..*n {
                s.record_ok(name, Duration::from_micros(1000 + i));
            }
        }
        for _ in 0..failed {
            s.record_failure("Unavailable", "connection refused");
        }
        s
    }

    use crate::client::ClientArgs;

    fn report(calls: &[(&str, u64)], failed: u64, flags: &[&str]) -> Report {
        let mut argv = vec!["demo-client"];
        argv.extend_from_slice(flags);
        let args = ClientArgs::parse_from(argv);
        let targets = args.targets().unwrap_or_default();
        Report::new(
            args.run_settings(),
            targets,
            &stats(calls, failed),
            Duration::from_secs(1),
            false,
            args.expectation(),
        )
    }

    #[test]
    fn balanced_run_exits_zero_and_says_so() {
        let r = report(
            &[("pod-a", 100), ("pod-b", 98), ("pod-c", 102)],
            0,
            &["--expect", "balanced", "--expect-backends", "3"],
        );
        assert_eq!(r.verdict, Verdict::Balanced);
        assert_eq!(r.exit_code(), EXIT_OK);
        let text = r.to_text();
        assert!(text.contains("verdict: balanced"), "{text}");
        assert!(text.contains("expectation met"), "{text}");
        assert!(text.contains("pod-b"), "{text}");
        let json: serde_json::Value = serde_json::from_str(&r.to_json()).unwrap_or_default();
        assert_eq!(json["verdict"], "balanced");
        assert_eq!(json["backends"][0]["name"], "pod-a");
        assert_eq!(json["backends"][0]["calls"], 100);
        assert_eq!(json["expectation"]["met"], true);
    }

    #[test]
    fn pinned_run_against_balanced_expectation_exits_one() {
        let r = report(&[("pod-a", 300)], 0, &["--expect", "balanced"]);
        assert_eq!(r.verdict, Verdict::Pinned);
        assert_eq!(r.exit_code(), EXIT_UNMET);
        assert!(
            r.to_text()
                .contains("expectation NOT met: expected verdict `balanced`, got `pinned`")
        );
    }

    #[test]
    fn no_successful_call_exits_three_with_the_reason() {
        let r = report(&[], 8, &["--target", "http://127.0.0.1:9"]);
        assert_eq!(r.verdict, Verdict::NoCalls);
        assert_eq!(r.exit_code(), EXIT_NO_DATA);
        let message = r.no_calls_message();
        assert!(message.contains("all 8 calls failed"), "{message}");
        assert!(message.contains("connection refused"), "{message}");
        assert!(message.contains("http://127.0.0.1:9"), "{message}");
    }

    #[test]
    fn live_frame_has_a_bar_per_backend() {
        let frame = LiveView::frame(
            &stats(&[("pod-a", 30), ("pod-b", 15)], 1),
            Duration::from_secs(2),
        );
        assert_eq!(frame.len(), 3);
        assert!(frame[0].starts_with("45 ok, 1 failed"));
        assert!(frame[1].starts_with("pod-a"));
        assert!(frame[1].contains(&"█".repeat(30)));
        assert!(frame[2].contains(&"█".repeat(15)));
    }

    #[test]
    fn bars_are_bounded() {
        assert_eq!(bar(0.5, 1.0, 4), "██░░");
        assert_eq!(bar(2.0, 1.0, 4), "████");
        assert_eq!(bar(1.0, 0.0, 4), "░░░░");
    }
}
