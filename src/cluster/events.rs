//! Kubernetes Events on the Services the reconciler changes (kube-runtime's recorder, `events.k8s.io/v1`).

use k8s_openapi::api::core::v1::Service;
use kube::Resource;
use kube::runtime::events::{Event, EventType, Recorder, Reporter};

/// The reporting controller's name in `kubectl describe`.
pub const CONTROLLER: &str = "lb-l7-webhook-reconciler";

#[derive(Clone)]
pub struct Events {
    recorder: std::sync::Arc<Recorder>,
}

impl std::fmt::Debug for Events {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Events")
    }
}

impl Events {
    pub fn new(client: kube::Client, instance: String) -> Self {
        let reporter = Reporter {
            controller: CONTROLLER.to_string(),
            instance: Some(instance),
        };
        Events {
            recorder: std::sync::Arc::new(Recorder::new(client, reporter)),
        }
    }

    /// Records one Normal Event on a Service; a failure is logged, never fatal (the patch is what matters).
    pub async fn publish(&self, svc: &Service, reason: &str, action: &str, note: String) {
        let reference = svc.object_ref(&());
        let event = Event {
            type_: EventType::Normal,
            reason: reason.to_string(),
            note: Some(note),
            action: action.to_string(),
            secondary: None,
        };
        if let Err(e) = self.recorder.publish(&event, &reference).await {
            tracing::warn!(
                service = svc.metadata.name.as_deref().unwrap_or_default(),
                error = %e,
                "recording an Event failed"
            );
        }
    }
}
