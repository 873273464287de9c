//! Logging set-up shared by every subcommand.

mod json;
mod writer;

use std::io::Stderr;

use tracing_subscriber::EnvFilter;

pub use json::JsonLine;
pub use writer::{BatchWriter, WriterGuard};

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    Text,
    Json,
}

/// Keeps the log writer running: hold it until the process ends. Dropping it writes out every line still queued.
#[must_use = "dropping the guard stops the log writer"]
pub struct LogGuard {
    _writer: Option<WriterGuard>,
}

impl std::fmt::Debug for LogGuard {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("LogGuard")
    }
}

/// Installs the global subscriber: logs go to stderr, so stdout stays clean for reports and manifests.
///
/// Lines are formatted where they are logged and written in batches by a background thread ([`BatchWriter`]), so
/// a request never waits on stderr: an INFO line is written within 50 ms, a WARN or ERROR line at once. Nothing
/// is dropped: when the buffer is full, logging waits. In JSON ([`JsonLine`]), an event's fields are top-level keys, and the
/// fields of the span it is in (if any) appear once, under `span`.
pub fn init(format: LogFormat, filter: &str) -> LogGuard {
    // kube's client logs each failed request at ERROR itself; the command reports the same failure once, with
    // its context, so kube_client is silent unless the filter names it.
    let filter = if filter.contains("kube") {
        filter.to_string()
    } else {
        format!("{filter},kube_client=off")
    };
    let filter = EnvFilter::try_new(&filter).unwrap_or_else(|_| EnvFilter::new("info"));
    let (writer, guard) = BatchWriter::new(std::io::stderr(), writer::Settings::default());
    // Colour only when a person reads the log on a terminal; never escape codes in a pod's log or a file.
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(is_terminal(&std::io::stderr()))
        .with_writer(writer);
    let installed = match format {
        LogFormat::Text => builder.try_init(),
        LogFormat::Json => builder.json().event_format(JsonLine).try_init(),
    };
    // When a subscriber was already installed (tests), this writer is unused: stop its thread now.
    LogGuard {
        _writer: installed.is_ok().then_some(guard),
    }
}

fn is_terminal(stderr: &Stderr) -> bool {
    std::io::IsTerminal::is_terminal(stderr)
}
