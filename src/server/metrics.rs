//! Prometheus metrics, served as text on the probe port's `/metrics`.

use std::sync::Arc;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ReviewLabels {
    /// The policy's decision, or `none` when no decision was made (skipped or undecodable).
    pub decision: &'static str,
    /// patched | dry-run | unchanged | skipped | undecodable
    pub outcome: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ErrorLabels {
    /// Every HTTP error the webhook answers: bad_request | body_read (400), not_found (404),
    /// method_not_allowed (405), body_timeout (408), body_too_large (413), encode (500), not_ready (503, /readyz
    /// during shutdown).
    pub reason: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ReloadLabels {
    /// success | failure
    pub result: &'static str,
}

/// Every metric the webhook exports.
#[derive(Debug)]
pub struct Metrics {
    registry: Registry,
    pub reviews: Family<ReviewLabels, Counter>,
    pub errors: Family<ErrorLabels, Counter>,
    pub review_duration: Histogram,
    pub tls_reloads: Family<ReloadLabels, Counter>,
    pub tls_cert_not_after: Gauge,
}

impl Metrics {
    pub fn new() -> Arc<Self> {
        let mut registry = Registry::with_prefix("lb_l7_webhook");
        let reviews = Family::<ReviewLabels, Counter>::default();
        registry.register(
            "reviews",
            "AdmissionReviews answered, by decision and outcome",
            reviews.clone(),
        );
        let errors = Family::<ErrorLabels, Counter>::default();
        registry.register(
            "request_errors",
            "Requests answered with an HTTP error status (on either port), by reason",
            errors.clone(),
        );
        // 25 µs .. ~0.8 s: the handler takes microseconds; the tail shows trouble.
        let review_duration = Histogram::new([
            0.000025, 0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.1,
            0.25, 1.0,
        ]);
        registry.register(
            "review_duration_seconds",
            "Time to read, decide and encode one AdmissionReview",
            review_duration.clone(),
        );
        let tls_reloads = Family::<ReloadLabels, Counter>::default();
        registry.register(
            "tls_reloads",
            "Serving certificate reloads; failures keep the old certificate",
            tls_reloads.clone(),
        );
        let tls_cert_not_after = Gauge::default();
        registry.register(
            "tls_certificate_not_after_seconds",
            "Expiry (Unix time) of the certificate being served",
            tls_cert_not_after.clone(),
        );
        Arc::new(Metrics {
            registry,
            reviews,
            errors,
            review_duration,
            tls_reloads,
            tls_cert_not_after,
        })
    }

    /// The Prometheus text exposition.
    pub fn encode(&self) -> String {
        let mut out = String::new();
        if prometheus_client::encoding::text::encode(&mut out, &self.registry).is_err() {
            out.clear();
        }
        out
    }

    pub fn error(&self, reason: &'static str) {
        self.errors.get_or_create(&ErrorLabels { reason }).inc();
    }
}
