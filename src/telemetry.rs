//! Logging set-up shared by every subcommand.

use tracing_subscriber::EnvFilter;

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    Text,
    Json,
}

/// Installs the global subscriber: logs go to stderr, so stdout stays clean for reports and manifests.
pub fn init(format: LogFormat, filter: &str) {
    // kube's client logs each failed request at ERROR itself; the command reports the same failure once, with
    // its context, so kube_client is silent unless the filter names it.
    let filter = if filter.contains("kube") {
        filter.to_string()
    } else {
        format!("{filter},kube_client=off")
    };
    let filter = EnvFilter::try_new(&filter).unwrap_or_else(|_| EnvFilter::new("info"));
    // Colour only when a person reads the log on a terminal; never escape codes in a pod's log or a file.
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_writer(std::io::stderr);
    let _ = match format {
        LogFormat::Text => builder.try_init(),
        LogFormat::Json => builder.json().flatten_event(true).try_init(),
    };
}
