//! The counters a run collects and the exit statuses it ends with: shared by the client (which fills them) and the
//! report (which judges them), so neither imports the other.

use std::collections::BTreeMap;
use std::time::Duration;

use hdrhistogram::Histogram;

/// Exit status when the run finished and met its expectation.
pub const EXIT_OK: u8 = 0;
/// Exit status when the run finished but did not meet `--expect` / `--expect-backends`.
pub const EXIT_UNMET: u8 = 1;
/// Exit status when there was nothing to judge (unreachable, invalid target, every call failed).
pub const EXIT_NO_DATA: u8 = 3;

/// Live counters shared by the workers, the live view and the summary.
#[derive(Debug, Clone)]
pub struct Stats {
    template: Histogram<u64>,
    /// Latency histogram (µs) of each backend's successful calls; its length is the backend's call count.
    pub backends: BTreeMap<String, Histogram<u64>>,
    /// Failed calls by kind (gRPC status code, or `DeadlineExceeded` for the call timeout): count and one message.
    pub failures: BTreeMap<String, (u64, String)>,
    pub ok: u64,
    pub failed: u64,
}

/// Name used for answers from a server that does not fill in `backend` (an older demo server).
pub const UNKNOWN_BACKEND: &str = "(unknown)";

impl Stats {
    pub fn new() -> Result<Self, hdrhistogram::CreationError> {
        Ok(Self {
            // 1µs .. 1h, 3 significant figures.
            template: Histogram::new_with_bounds(1, 3_600_000_000, 3)?,
            backends: BTreeMap::new(),
            failures: BTreeMap::new(),
            ok: 0,
            failed: 0,
        })
    }

    pub fn record_ok(&mut self, backend: &str, latency: Duration) {
        let backend = if backend.is_empty() {
            UNKNOWN_BACKEND
        } else {
            backend
        };
        let micros = u64::try_from(latency.as_micros())
            .unwrap_or(u64::MAX)
            .max(1);
        if let Some(h) = self.backends.get_mut(backend) {
            h.saturating_record(micros);
        } else {
            let mut h = self.template.clone();
            h.saturating_record(micros);
            self.backends.insert(backend.to_string(), h);
        }
        self.ok += 1;
    }

    pub fn record_failure(&mut self, kind: &str, message: &str) {
        let entry = self
            .failures
            .entry(kind.to_string())
            .or_insert_with(|| (0, message.to_string()));
        entry.0 += 1;
        self.failed += 1;
    }

    /// Successful calls per backend, in name order.
    pub fn calls(&self) -> Vec<(String, u64)> {
        self.backends
            .iter()
            .map(|(name, h)| (name.clone(), h.len()))
            .collect()
    }
}
