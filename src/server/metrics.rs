//! Prometheus metrics, served as text on the probe port's `/metrics`.

use std::sync::Arc;

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeLabelSet};
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

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ReasonLabels {
    pub reason: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct WhatLabels {
    /// ca | ca_pruned | serving | ca_bundle
    pub what: &'static str,
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
    /// TLS handshakes that failed, by reason (`unknown_ca`: the client, e.g. the API server, does not trust our CA).
    pub tls_handshake_failures: Family<ReasonLabels, Counter>,
    /// `serve --cert-secret`: failed steps of the certificate manager, by reason.
    pub cert_manager_errors: Family<ReasonLabels, Counter>,
    /// `serve --cert-secret`: what the certificate manager wrote (a new CA, a new serving certificate, caBundle).
    pub cert_rotations: Family<WhatLabels, Counter>,
    /// Collectors registered after construction (the reconciler's, under `serve --reconcile`).
    extra: ExtraCollectors,
}

/// Collectors added with [`Metrics::register`], encoded into the same registry.
#[derive(Debug, Default, Clone)]
struct ExtraCollectors(Arc<std::sync::RwLock<Vec<Box<dyn MoreMetrics>>>>);

/// Metrics that encode themselves into a registry they were not registered in at construction.
pub trait MoreMetrics: std::fmt::Debug + Send + Sync + 'static {
    fn encode_into(&self, encoder: &mut DescriptorEncoder) -> Result<(), std::fmt::Error>;
}

impl Collector for ExtraCollectors {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let Ok(all) = self.0.read() else {
            return Ok(());
        };
        for c in all.iter() {
            c.encode_into(&mut encoder)?;
        }
        Ok(())
    }
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
        let tls_handshake_failures = Family::<ReasonLabels, Counter>::default();
        registry.register(
            "tls_handshake_failures",
            "TLS handshakes on the webhook port that failed, by reason (unknown_ca / bad_certificate: the client \
             does not trust the served certificate; from the API server that means a wrong caBundle)",
            tls_handshake_failures.clone(),
        );
        let cert_manager_errors = Family::<ReasonLabels, Counter>::default();
        registry.register(
            "cert_manager_errors",
            "serve --cert-secret: failed Kubernetes calls or certificate steps of the certificate manager, by reason",
            cert_manager_errors.clone(),
        );
        let cert_rotations = Family::<WhatLabels, Counter>::default();
        registry.register(
            "cert_rotations",
            "serve --cert-secret: writes of the certificate manager: a new CA (ca), expired CAs removed (ca_pruned), \
             a new serving certificate (serving), caBundle set or restored (ca_bundle)",
            cert_rotations.clone(),
        );
        let extra = ExtraCollectors::default();
        registry.register_collector(Box::new(extra.clone()));
        Arc::new(Metrics {
            registry,
            reviews,
            errors,
            review_duration,
            tls_reloads,
            tls_cert_not_after,
            tls_handshake_failures,
            cert_manager_errors,
            cert_rotations,
            extra,
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

    /// Adds a collector to the registry `/metrics` encodes (e.g. the reconciler's metrics).
    pub fn register(&self, collector: Box<dyn MoreMetrics>) {
        if let Ok(mut all) = self.extra.0.write() {
            all.push(collector);
        }
    }

    pub fn error(&self, reason: &'static str) {
        self.errors.get_or_create(&ErrorLabels { reason }).inc();
    }
}
