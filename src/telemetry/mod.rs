//! Logging set-up shared by every subcommand.

use std::io::{BufWriter, Stderr};

use tracing_appender::non_blocking::{NonBlockingBuilder, WorkerGuard};
use tracing_subscriber::EnvFilter;

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    Text,
    Json,
}

/// Keeps the log writer running: hold it until the process ends. Dropping it writes out every line still queued.
#[must_use = "dropping the guard stops the log writer"]
pub struct LogGuard {
    _worker: Option<WorkerGuard>,
}

impl std::fmt::Debug for LogGuard {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("LogGuard")
    }
}

/// Lines that may wait for the writer thread before logging waits. tracing-appender's default (128,000) allocates
/// and touches a slot for each at start, about 4 MiB of resident memory; the writer drains this many lines in
/// one write.
const QUEUED_LINES: usize = 4096;

/// Installs the global subscriber: logs go to stderr, so stdout stays clean for reports and manifests.
///
/// Lines are formatted where they are logged and written by a background thread (tracing-appender), so a request
/// never waits on stderr; the thread writes every line queued since its last write in one go. Nothing is dropped:
/// when the queue is full, logging waits. In JSON, an event's fields are top-level keys, and the fields of the
/// span it is in (if any) appear once, under `span`.
pub fn init(format: LogFormat, filter: &str) -> LogGuard {
    // kube's client logs each failed request at ERROR itself; the command reports the same failure once, with
    // its context, so kube_client is silent unless the filter names it.
    let filter = if filter.contains("kube") {
        filter.to_string()
    } else {
        format!("{filter},kube_client=off")
    };
    let filter = EnvFilter::try_new(&filter).unwrap_or_else(|_| EnvFilter::new("info"));
    let (writer, guard) = NonBlockingBuilder::default()
        .lossy(false)
        .buffered_lines_limit(QUEUED_LINES)
        .thread_name("log-writer")
        .finish(BufWriter::new(std::io::stderr()));
    // Colour only when a person reads the log on a terminal; never escape codes in a pod's log or a file.
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(is_terminal(&std::io::stderr()))
        .with_writer(writer);
    let installed = match format {
        LogFormat::Text => builder.try_init(),
        LogFormat::Json => builder
            .json()
            .flatten_event(true)
            .with_current_span(true)
            .with_span_list(false)
            .try_init(),
    };
    // When a subscriber was already installed (tests), this writer is unused: stop its thread now.
    LogGuard {
        _worker: installed.is_ok().then_some(guard),
    }
}

fn is_terminal(stderr: &Stderr) -> bool {
    std::io::IsTerminal::is_terminal(stderr)
}
