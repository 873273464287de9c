//! The demo gRPC apps that show, and check, that Cilium's Envoy spreads calls over pods.
//!
//! - [`server`]: `demo-server`, the `protos.Goapp` service that answers with its own pod name, plus gRPC health and
//!   server reflection.
//! - [`client`]: `demo-client`, which sends calls over ONE channel (one HTTP/2 connection, as real applications do),
//!   counts which backend answered each one and judges the spread ([`verdict`]).
//!
//! Behind an L4 load balancer every call of one connection lands on the same pod (`pinned`); with `lb-l7` on, Envoy
//! picks a pod per request (`balanced`).

pub mod client;
pub mod duration;
pub mod report;
pub mod server;
pub mod stats;
pub mod verdict;

/// The code generated from `protos/apps.proto` (package `protos`).
pub mod pb {
    #![allow(clippy::all, missing_docs)]
    tonic::include_proto!("protos");

    /// The encoded `FileDescriptorSet` of `protos/apps.proto`, written by build.rs, served by reflection.
    pub const FILE_DESCRIPTOR_SET: &[u8] = tonic::include_file_descriptor_set!("apps_descriptor");
}

/// Where the demo Service answers inside the cluster (deploy/demo/).
pub const DEFAULT_TARGET: &str = "http://goappserver.apps.svc.cluster.local:50051";

/// The port the demo server listens on by default.
pub const DEFAULT_PORT: u16 = 50051;

/// The tracing filter for a `--log` value: a bare level (`debug`) applies to this crate only, so `debug` shows one
/// line per call without the HTTP/2 frame logs of h2 and hyper; anything else is used as an EnvFilter as given.
pub fn log_filter(log: &str) -> String {
    let log = log.trim();
    if log.is_empty() {
        "warn,lb_l7_demo=info".to_string()
    } else if log.contains(['=', ',']) {
        log.to_string()
    } else {
        format!("warn,lb_l7_demo={log}")
    }
}

/// Installs the global subscriber: text logs to stderr, filtered by [`log_filter`]'s result.
pub fn init_logging(filter: &str) {
    let filter = tracing_subscriber::EnvFilter::try_new(filter)
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_writer(std::io::stderr)
        .try_init();
}

#[cfg(test)]
mod tests {
    #[test]
    fn bare_levels_apply_to_this_crate() {
        assert_eq!(super::log_filter("debug"), "warn,lb_l7_demo=debug");
        assert_eq!(super::log_filter(""), "warn,lb_l7_demo=info");
        assert_eq!(super::log_filter("h2=trace"), "h2=trace");
    }
}
