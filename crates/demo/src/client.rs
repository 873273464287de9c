//! `demo-client`: calls `protos.Goapp/CreateNewUser` over ONE channel and counts which backend answered each call.
//!
//! One channel is one HTTP/2 connection, as real applications use: exactly the case where an L4 load balancer pins
//! every call to one pod and Cilium's Envoy (with `service.cilium.io/lb-l7: enabled`) picks a pod per request.
//!
//! For tests without Cilium, `--target` also takes a comma-separated list: the client then balances over the
//! targets itself (one connection each), which stands in for an L7 balancer.

use std::future::Future;
use std::io::IsTerminal;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use tokio::time::Instant;
use tonic::transport::{Channel, Endpoint};

use super::pb::NewUser;
use super::pb::goapp_client::GoappClient;
use super::report::{self, Output, Report, RunSettings};
pub use super::stats::{EXIT_NO_DATA, EXIT_OK, EXIT_UNMET, Stats, UNKNOWN_BACKEND};
use super::verdict::{DEFAULT_TOLERANCE, Expectation, Verdict};

/// Calls sent when neither `--requests` nor `--duration` is given.
pub const DEFAULT_REQUESTS: u64 = 300;
/// The most targets `--target` accepts (a list is for tests without Cilium).
pub const MAX_TARGETS: usize = 64;

const EXIT_CODES: &str = "\
Verdict (see docs/demo.md): with n backends seen, each one's fair share is 1/n.
  balanced  at least 2 backends, every share within --tolerance x 1/n of 1/n (default 0.5: with 3 backends
            every backend must serve between 16.7% and 50% of the calls)
  pinned    one backend served every successful call (L4 balancing of one connection)
  skewed    at least 2 backends, but one off its fair share by more than the tolerance

Exit status:
  0  the run finished and met --expect / --expect-backends (or none was given)
  1  the run finished but did not meet --expect / --expect-backends
  2  bad command line
  3  nothing to judge: the target is unreachable or invalid, the connection timed out, or every call failed

Examples:
  demo-client --target http://127.0.0.1:50051 --requests 200
  demo-client --duration 30s --concurrency 16 --rate 200
  demo-client --expect balanced --expect-backends 3 -o json";

/// Command line of `demo-client`.
#[derive(Debug, Clone, clap::Parser)]
#[command(
    name = "demo-client",
    version,
    about = "gRPC demo client for lb-l7-webhook: sends calls over ONE HTTP/2 connection, counts which pod answered \
             each one and says whether the calls were balanced over pods or pinned to one.",
    after_help = EXIT_CODES
)]
pub struct ClientArgs {
    /// gRPC server to call (http://HOST:PORT). A comma-separated list makes the client balance over the targets
    /// itself, one connection each: for testing without Cilium.
    #[arg(long, env = "LB_L7_DEMO_TARGET", default_value = super::DEFAULT_TARGET)]
    pub target: String,

    /// Number of calls to send [default: 300 when --duration is not given].
    #[arg(long, short = 'n', env = "LB_L7_DEMO_REQUESTS", conflicts_with = "duration",
          value_parser = clap::value_parser!(u64).range(1..))]
    pub requests: Option<u64>,

    /// Send calls for this long instead of a number of calls (e.g. 30s, 2m).
    #[arg(long, short = 'd', env = "LB_L7_DEMO_DURATION", value_parser = humantime::parse_duration)]
    pub duration: Option<Duration>,

    /// Calls in flight at once, all on the same connection.
    #[arg(long, short = 'c', env = "LB_L7_DEMO_CONCURRENCY", default_value_t = 8,
          value_parser = clap::value_parser!(u32).range(1..=1024))]
    pub concurrency: u32,

    /// Limit to this many calls per second in total (default: as fast as the server answers).
    #[arg(long, env = "LB_L7_DEMO_RATE", value_parser = parse_rate)]
    pub rate: Option<f64>,

    /// How long connecting may take before the run fails.
    #[arg(long, env = "LB_L7_DEMO_CONNECT_TIMEOUT", default_value = "3s", value_parser = humantime::parse_duration)]
    pub connect_timeout: Duration,

    /// How long one call may take before it counts as failed (deadline exceeded).
    #[arg(long, env = "LB_L7_DEMO_CALL_TIMEOUT", default_value = "2s", value_parser = humantime::parse_duration)]
    pub call_timeout: Duration,

    /// Relative tolerance around the fair share for `balanced` (0.5 = each backend within ±50% of 1/n).
    #[arg(long, env = "LB_L7_DEMO_TOLERANCE", default_value_t = DEFAULT_TOLERANCE, value_parser = parse_tolerance)]
    pub tolerance: f64,

    /// Exit 1 unless the verdict is this.
    #[arg(long, env = "LB_L7_DEMO_EXPECT")]
    pub expect: Option<Verdict>,

    /// Exit 1 unless at least this many backends answered.
    #[arg(long, env = "LB_L7_DEMO_EXPECT_BACKENDS", value_parser = clap::value_parser!(u64).range(1..))]
    pub expect_backends: Option<u64>,

    /// Summary format on stdout.
    #[arg(long, short = 'o', env = "LB_L7_DEMO_OUTPUT", value_enum, default_value_t = Output::Text)]
    pub output: Output,

    /// Never draw the live per-backend bars (they are drawn on stderr only when it is a terminal).
    #[arg(long, env = "LB_L7_DEMO_NO_LIVE")]
    pub no_live: bool,

    /// Log level for this program, or a full tracing EnvFilter (e.g. `info,h2=debug`); logs go to stderr.
    #[arg(long, env = "LB_L7_DEMO_LOG", default_value = "warn")]
    pub log: String,
}

fn parse_rate(text: &str) -> Result<f64, String> {
    match text.trim().parse::<f64>() {
        Ok(rate) if rate.is_finite() && rate > 0.0 => Ok(rate),
        _ => Err(format!(
            "`{text}` is not a rate: give calls per second, a number above 0"
        )),
    }
}

fn parse_tolerance(text: &str) -> Result<f64, String> {
    match text.trim().parse::<f64>() {
        Ok(t) if t.is_finite() && t >= 0.0 => Ok(t),
        _ => Err(format!(
            "`{text}` is not a tolerance: give a number >= 0, e.g. 0.5"
        )),
    }
}

impl ClientArgs {
    /// The settings the report judges the run with.
    pub fn run_settings(&self) -> RunSettings {
        RunSettings {
            tolerance: self.tolerance,
            concurrency: self.concurrency,
            rate: self.rate,
        }
    }

    /// The expectation given by `--expect` and `--expect-backends`.
    pub fn expectation(&self) -> Expectation {
        Expectation {
            verdict: self.expect,
            min_backends: self
                .expect_backends
                .map(|n| usize::try_from(n).unwrap_or(usize::MAX)),
        }
    }

    /// The targets of `--target`, split on commas.
    pub fn targets(&self) -> Result<Vec<String>, ClientError> {
        let targets: Vec<String> = self
            .target
            .split(',')
            .map(str::trim)
            .filter(|t| !t.is_empty())
            .map(str::to_string)
            .collect();
        match targets.len() {
            0 => Err(ClientError::InvalidTarget {
                target: self.target.clone(),
                reason: "no target given".into(),
            }),
            n if n > MAX_TARGETS => Err(ClientError::InvalidTarget {
                target: self.target.clone(),
                reason: format!("{n} targets; at most {MAX_TARGETS}"),
            }),
            _ => Ok(targets),
        }
    }
}

/// Why a run could not measure anything.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("invalid target `{target}`: {reason}")]
    InvalidTarget { target: String, reason: String },
    #[error(
        "cannot connect to {target}: {reason}. Is the server running and reachable from here? \
         (connect timeout {timeout})"
    )]
    Connect {
        target: String,
        reason: String,
        timeout: String,
    },
    #[error("cannot connect to {target}: no connection within the connect timeout of {timeout}")]
    ConnectTimeout { target: String, timeout: String },
    #[error("cannot set up latency histograms: {0}")]
    Histogram(#[from] hdrhistogram::CreationError),
}

fn lock(stats: &Mutex<Stats>) -> MutexGuard<'_, Stats> {
    // A worker that panicked while holding the lock cannot leave the counters half-written in a way that matters
    // here: keep counting.
    stats
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// How a run ended.
#[derive(Debug)]
pub struct Outcome {
    pub report: Report,
    pub exit_code: u8,
}

/// Builds the one channel: one connection to one target, eagerly connected so an unreachable target fails fast;
/// or, for a list, a client-side balanced channel (lazy, one connection per target).
async fn channel(args: &ClientArgs, targets: &[String]) -> Result<Channel, ClientError> {
    let endpoint = |target: &str| -> Result<Endpoint, ClientError> {
        let endpoint =
            Endpoint::from_shared(target.to_string()).map_err(|e| ClientError::InvalidTarget {
                target: target.to_string(),
                reason: format!("{e}; use http://HOST:PORT"),
            })?;
        if endpoint.uri().host().is_none() {
            return Err(ClientError::InvalidTarget {
                target: target.to_string(),
                reason: "no host; use http://HOST:PORT".into(),
            });
        }
        if endpoint.uri().scheme_str() != Some("http") {
            return Err(ClientError::InvalidTarget {
                target: target.to_string(),
                reason: "only http:// (cleartext h2c, what Cilium's Envoy balances) is supported"
                    .into(),
            });
        }
        Ok(endpoint
            .connect_timeout(args.connect_timeout)
            .timeout(args.call_timeout)
            .tcp_nodelay(true))
    };
    let timeout = super::duration::human(args.connect_timeout);
    if let [target] = targets {
        let endpoint = endpoint(target)?;
        match tokio::time::timeout(args.connect_timeout, endpoint.connect()).await {
            Ok(Ok(channel)) => Ok(channel),
            Ok(Err(e)) => Err(ClientError::Connect {
                target: target.clone(),
                reason: error_chain(&e),
                timeout,
            }),
            Err(_) => Err(ClientError::ConnectTimeout {
                target: target.clone(),
                timeout,
            }),
        }
    } else {
        let endpoints = targets
            .iter()
            .map(|t| endpoint(t))
            .collect::<Result<Vec<_>, _>>()?;
        let (channel, tx) = Channel::balance_channel(endpoints.len().max(1));
        for endpoint in endpoints {
            let key = endpoint.uri().clone();
            tx.try_send(tonic::transport::channel::Change::Insert(key, endpoint))
                .map_err(|e| ClientError::InvalidTarget {
                    target: args.target.clone(),
                    reason: format!("cannot add to the balancer: {e}"),
                })?;
        }
        Ok(channel)
    }
}

const DEADLINE_EXCEEDED: &str = "DeadlineExceeded";

fn no_answer_within(call_timeout: Duration) -> String {
    format!(
        "no answer within the call timeout of {}",
        super::duration::human(call_timeout)
    )
}

/// A failed call's kind (the gRPC status code name) and message. tonic reports its own client-side deadline as
/// `Cancelled: Timeout expired`; that is counted as `DeadlineExceeded`, which is what happened.
pub fn classify(status: &tonic::Status, call_timeout: Duration) -> (String, String) {
    if status.code() == tonic::Code::DeadlineExceeded
        || (status.code() == tonic::Code::Cancelled && status.message() == "Timeout expired")
    {
        return (
            DEADLINE_EXCEEDED.to_string(),
            no_answer_within(call_timeout),
        );
    }
    let message = if status.message().is_empty() {
        status.code().description().to_string()
    } else {
        status.message().to_string()
    };
    (format!("{:?}", status.code()), message)
}

/// The error and its sources, joined: `transport error: tcp connect error: Connection refused (os error 111)`.
fn error_chain(error: &(dyn std::error::Error + 'static)) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(e) = source {
        let next = e.to_string();
        if !text.contains(&next) {
            text.push_str(": ");
            text.push_str(&next);
        }
        source = e.source();
    }
    text
}

/// Runs the calls and judges them. `interrupt` (e.g. Ctrl-C) stops sending new calls; the summary still comes.
/// `live`: draw the live bars on stderr.
pub async fn run(
    args: &ClientArgs,
    live: bool,
    interrupt: impl Future<Output = ()>,
) -> Result<Outcome, ClientError> {
    let targets = args.targets()?;
    let stats = Stats::new()?;
    let channel = channel(args, &targets).await?;
    let client = GoappClient::new(channel);

    let requests = match (args.requests, args.duration) {
        (Some(n), _) => Some(n),
        (None, None) => Some(DEFAULT_REQUESTS),
        (None, Some(_)) => None,
    };
    let concurrency = args.concurrency.max(1);
    let start = Instant::now();
    let deadline = args.duration.map(|d| start + d);
    let next = Arc::new(AtomicU64::new(0));
    let stop = Arc::new(AtomicBool::new(false));
    let stats = Arc::new(Mutex::new(stats));

    let mut workers = tokio::task::JoinSet::new();
    for _ in 0..concurrency {
        let mut client = client.clone();
        let next = next.clone();
        let stop = stop.clone();
        let stats = stats.clone();
        let call_timeout = args.call_timeout;
        let rate = args.rate;
        workers.spawn(async move {
            loop {
                if stop.load(Ordering::Relaxed) {
                    break;
                }
                let i = next.fetch_add(1, Ordering::Relaxed);
                if requests.is_some_and(|n| i >= n) {
                    break;
                }
                if let Some(rate) = rate {
                    let at = start + Duration::from_secs_f64(i as f64 / rate);
                    if deadline.is_some_and(|d| at >= d) {
                        break;
                    }
                    tokio::time::sleep_until(at).await;
                }
                if deadline.is_some_and(|d| Instant::now() >= d) || stop.load(Ordering::Relaxed) {
                    break;
                }
                let mut request = tonic::Request::new(NewUser {
                    name: format!("user-{i}"),
                    age: i32::try_from(i % 100).unwrap_or(0),
                });
                request.set_timeout(call_timeout);
                let sent = Instant::now();
                let answer =
                    tokio::time::timeout(call_timeout, client.create_new_user(request)).await;
                let latency = sent.elapsed();
                let mut stats = lock(&stats);
                match answer {
                    Ok(Ok(user)) => stats.record_ok(&user.into_inner().backend, latency),
                    Ok(Err(status)) => {
                        let (kind, message) = classify(&status, call_timeout);
                        stats.record_failure(&kind, &message);
                    }
                    Err(_) => {
                        stats.record_failure(DEADLINE_EXCEEDED, &no_answer_within(call_timeout))
                    }
                }
                // Nothing has ever worked and every worker has failed at least once: more calls only wait for
                // more timeouts.
                if stats.ok == 0 && stats.failed >= u64::from(concurrency) {
                    stop.store(true, Ordering::Relaxed);
                }
            }
        });
    }

    let mut interrupted = false;
    let mut tick = tokio::time::interval(Duration::from_millis(200));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    let mut view = report::LiveView::new(live);
    tokio::pin!(interrupt);
    loop {
        tokio::select! {
            joined = workers.join_next() => {
                match joined {
                    None => break,
                    Some(Err(e)) if e.is_panic() => tracing::error!(error = %e, "a worker panicked"),
                    Some(_) => {}
                }
            }
            () = &mut interrupt, if !interrupted => {
                interrupted = true;
                stop.store(true, Ordering::Relaxed);
                tracing::warn!("interrupted: finishing the calls in flight, then the summary");
            }
            _ = tick.tick(), if view.enabled() => {
                let stats = lock(&stats).clone();
                view.draw(&stats, start.elapsed());
            }
        }
    }
    let elapsed = start.elapsed();
    view.clear();

    let stats = lock(&stats).clone();
    let report = Report::new(
        args.run_settings(),
        targets,
        &stats,
        elapsed,
        interrupted,
        args.expectation(),
    );
    let exit_code = report.exit_code();
    Ok(Outcome { report, exit_code })
}

/// Whether to draw the live view: asked for, and stderr is a terminal.
pub fn live_view_wanted(args: &ClientArgs) -> bool {
    !args.no_live && std::io::stderr().is_terminal()
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[test]
    fn targets_split_on_commas() {
        let args = ClientArgs::parse_from(["demo-client", "--target", "http://a:1, http://b:2,,"]);
        assert_eq!(
            args.targets().ok(),
            Some(vec!["http://a:1".to_string(), "http://b:2".to_string()])
        );
        let empty = ClientArgs::parse_from(["demo-client", "--target", " , "]);
        assert!(matches!(
            empty.targets(),
            Err(ClientError::InvalidTarget { .. })
        ));
    }

    #[test]
    fn defaults_work_in_the_cluster() {
        let args = ClientArgs::parse_from(["demo-client"]);
        assert_eq!(args.target, super::super::DEFAULT_TARGET);
        assert_eq!(args.requests, None);
        assert_eq!(args.concurrency, 8);
        assert_eq!(args.connect_timeout, Duration::from_secs(3));
        assert_eq!(args.call_timeout, Duration::from_secs(2));
        assert_eq!(args.expectation(), Expectation::default());
    }

    #[test]
    fn expectation_flags() {
        let args = ClientArgs::parse_from([
            "demo-client",
            "--expect",
            "balanced",
            "--expect-backends",
            "3",
        ]);
        assert_eq!(
            args.expectation(),
            Expectation {
                verdict: Some(Verdict::Balanced),
                min_backends: Some(3)
            }
        );
        assert!(ClientArgs::try_parse_from(["demo-client", "--expect", "no-calls"]).is_err());
        assert!(ClientArgs::try_parse_from(["demo-client", "--requests", "0"]).is_err());
        assert!(ClientArgs::try_parse_from(["demo-client", "--rate", "-1"]).is_err());
        assert!(
            ClientArgs::try_parse_from(["demo-client", "--requests", "5", "--duration", "1s"])
                .is_err()
        );
    }

    #[test]
    fn tonic_timeouts_count_as_deadline_exceeded() {
        let timeout = Duration::from_millis(300);
        let expected = (
            "DeadlineExceeded".to_string(),
            "no answer within the call timeout of 300ms".to_string(),
        );
        assert_eq!(
            classify(&tonic::Status::cancelled("Timeout expired"), timeout),
            expected
        );
        assert_eq!(
            classify(&tonic::Status::deadline_exceeded("late"), timeout),
            expected
        );
        assert_eq!(
            classify(&tonic::Status::cancelled("by peer"), timeout),
            ("Cancelled".to_string(), "by peer".to_string())
        );
        assert_eq!(
            classify(&tonic::Status::unavailable(""), timeout).0,
            "Unavailable"
        );
    }

    #[test]
    fn stats_count_per_backend() {
        let Ok(mut stats) = Stats::new() else {
            panic!("histogram bounds are constants");
        };
        stats.record_ok("a", Duration::from_millis(1));
        stats.record_ok("a", Duration::from_millis(3));
        stats.record_ok("", Duration::ZERO);
        stats.record_failure("Unavailable", "connection refused");
        stats.record_failure("Unavailable", "other text");
        assert_eq!(
            stats.calls(),
            vec![(UNKNOWN_BACKEND.to_string(), 1), ("a".to_string(), 2)]
        );
        assert_eq!(stats.ok, 3);
        assert_eq!(stats.failed, 2);
        assert_eq!(
            stats.failures.get("Unavailable"),
            Some(&(2, "connection refused".to_string()))
        );
    }
}
