//! The reconciler's metrics. Registered as one collector into the registry that `/metrics` encodes: the webhook's
//! under `serve --reconcile` ([`crate::server::metrics::Metrics::register`]), or its own under `reconcile`.

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeLabelSet, EncodeMetric};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use std::sync::atomic::AtomicU64;

use crate::server::metrics::MoreMetrics;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct PatchLabels {
    /// enabled | reverted | would-enable | skipped | gone | conflict | failed
    pub result: &'static str,
}

/// Every metric the reconciler exports (handles: clones share the values).
#[derive(Clone, Debug, Default)]
pub struct ReconcileMetrics {
    pub patches: Family<PatchLabels, Counter>,
    pub queue_depth: Gauge,
    pub last_resync: Gauge<f64, AtomicU64>,
    pub last_resync_duration: Gauge<f64, AtomicU64>,
    pub leader: Gauge,
    pub cache_synced: Gauge,
}

impl ReconcileMetrics {
    pub fn patch(&self, result: &'static str) {
        self.patches.get_or_create(&PatchLabels { result }).inc();
    }

    pub fn patches_with(&self, result: &'static str) -> u64 {
        self.patches.get_or_create(&PatchLabels { result }).get()
    }
}

fn one(
    encoder: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    metric: &impl EncodeMetric,
) -> Result<(), std::fmt::Error> {
    let m = encoder.encode_descriptor(name, help, None, metric.metric_type())?;
    metric.encode(m)
}

impl Collector for ReconcileMetrics {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        self.encode_into(&mut encoder)
    }
}

impl MoreMetrics for ReconcileMetrics {
    fn encode_into(&self, encoder: &mut DescriptorEncoder) -> Result<(), std::fmt::Error> {
        one(
            encoder,
            "reconcile_patches",
            "Reconciler patches by result (would-enable: policy in dry-run mode, nothing sent).",
            &self.patches,
        )?;
        one(
            encoder,
            "reconcile_queue_depth",
            "Services waiting to be looked at.",
            &self.queue_depth,
        )?;
        one(
            encoder,
            "reconcile_last_full_resync_timestamp_seconds",
            "When the last full resync finished (Unix time).",
            &self.last_resync,
        )?;
        one(
            encoder,
            "reconcile_last_full_resync_duration_seconds",
            "How long the last full resync took, from enqueueing every Service to an empty queue.",
            &self.last_resync_duration,
        )?;
        one(
            encoder,
            "reconcile_leader",
            "1 when this replica holds the reconciler's Lease and patches.",
            &self.leader,
        )?;
        one(
            encoder,
            "reconcile_cache_synced",
            "1 once the Namespace and Service caches have been listed.",
            &self.cache_synced,
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn registered_into_serves_registry_they_show_on_its_metrics_page() {
        let serve = crate::server::metrics::Metrics::new();
        let before = serve.encode();
        assert!(!before.contains("reconcile"), "{before}");
        let m = ReconcileMetrics::default();
        serve.register(Box::new(m.clone()));
        m.leader.set(1);
        m.patch("enabled");
        m.queue_depth.set(7);
        let text = serve.encode();
        assert!(text.contains("lb_l7_webhook_reconcile_leader 1"), "{text}");
        assert!(
            text.contains("lb_l7_webhook_reconcile_patches_total{result=\"enabled\"} 1"),
            "{text}"
        );
        assert!(
            text.contains("lb_l7_webhook_reconcile_queue_depth 7"),
            "{text}"
        );
        assert!(
            text.contains("lb_l7_webhook_review_duration_seconds_count 0"),
            "the webhook's own metrics stay: {text}"
        );
        assert!(text.trim_end().ends_with("# EOF"), "{text}");
    }
}
