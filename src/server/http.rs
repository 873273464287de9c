//! The HTTP edges: `/mutate` on the TLS port, and `/healthz`, `/readyz`, `/metrics` on the plain probe port.
//! Handlers only decode, call the pure core and encode.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use http_body_util::BodyExt;

use super::metrics::{Metrics, ReviewLabels};
use lb_l7_core::admission::{self, Outcome};
use lb_l7_core::policy::CompiledPolicy;

/// The largest AdmissionReview body accepted; larger ones get 413.
pub const MAX_BODY_BYTES: usize = 8 * 1024 * 1024;

/// What the handlers share.
#[derive(Debug)]
pub struct AppState {
    pub policy: CompiledPolicy,
    pub metrics: Arc<Metrics>,
    /// False once shutdown has begun, so `/readyz` fails and endpoints drop the pod.
    pub ready: AtomicBool,
    /// How long a client may take to send the body.
    pub body_timeout: Duration,
    /// False while no certificate that the caBundle trusts is served (`serve --cert-secret`); always true with
    /// certificate files.
    pub cert_ready: Arc<AtomicBool>,
}

/// An error answered as JSON, `{"error": "..."}`, without internals.
#[derive(Debug)]
pub struct ApiError {
    status: StatusCode,
    message: String,
}

impl ApiError {
    fn new(status: StatusCode, message: impl Into<String>) -> Self {
        ApiError {
            status,
            message: message.into(),
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = serde_json::json!({ "error": self.message }).to_string();
        (
            self.status,
            [(header::CONTENT_TYPE, "application/json")],
            body,
        )
            .into_response()
    }
}

/// The webhook router (TLS port).
pub fn webhook_router(state: Arc<AppState>) -> Router {
    Router::new()
        .route("/mutate", post(mutate))
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .with_state(state)
}

/// The probe and metrics router (plain HTTP port).
pub fn probe_router(state: Arc<AppState>) -> Router {
    Router::new()
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
        .fallback(not_found)
        .with_state(state)
}

async fn not_found(State(state): State<Arc<AppState>>) -> ApiError {
    state.metrics.error("not_found");
    ApiError::new(
        StatusCode::NOT_FOUND,
        "not found: the webhook answers POST /mutate",
    )
}

async fn method_not_allowed(State(state): State<Arc<AppState>>) -> ApiError {
    state.metrics.error("method_not_allowed");
    ApiError::new(
        StatusCode::METHOD_NOT_ALLOWED,
        "method not allowed: use POST",
    )
}

async fn readyz(State(state): State<Arc<AppState>>) -> Response {
    if !state.cert_ready.load(Ordering::Relaxed) && state.ready.load(Ordering::Relaxed) {
        (
            StatusCode::SERVICE_UNAVAILABLE,
            "no certificate that the webhook configuration's caBundle trusts is served yet (see the logs and \
             lb_l7_webhook_cert_manager_errors_total)\n",
        )
            .into_response()
    } else if state.ready.load(Ordering::Relaxed) {
        "ok\n".into_response()
    } else {
        state.metrics.error("not_ready");
        (StatusCode::SERVICE_UNAVAILABLE, "shutting down\n").into_response()
    }
}

async fn metrics(State(state): State<Arc<AppState>>) -> Response {
    (
        [(
            header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        state.metrics.encode(),
    )
        .into_response()
}

/// Reads the whole body, at most [`MAX_BODY_BYTES`], within the body timeout.
async fn read_body(state: &AppState, body: Body) -> Result<Bytes, ApiError> {
    // A declared Content-Length over the limit is refused at once, before waiting for (or reading) the body.
    if hyper::body::Body::size_hint(&body).lower() > MAX_BODY_BYTES as u64 {
        state.metrics.error("body_too_large");
        return Err(ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            format!("body is larger than {MAX_BODY_BYTES} bytes"),
        ));
    }
    let limited = http_body_util::Limited::new(body, MAX_BODY_BYTES);
    match tokio::time::timeout(state.body_timeout, limited.collect()).await {
        Err(_) => {
            state.metrics.error("body_timeout");
            Err(ApiError::new(
                StatusCode::REQUEST_TIMEOUT,
                format!("request body not received within {:?}", state.body_timeout),
            ))
        }
        Ok(Err(e)) if e.is::<http_body_util::LengthLimitError>() => {
            state.metrics.error("body_too_large");
            Err(ApiError::new(
                StatusCode::PAYLOAD_TOO_LARGE,
                format!("body is larger than {MAX_BODY_BYTES} bytes"),
            ))
        }
        Ok(Err(e)) => {
            state.metrics.error("body_read");
            Err(ApiError::new(
                StatusCode::BAD_REQUEST,
                format!("body could not be read: {e}"),
            ))
        }
        Ok(Ok(collected)) => Ok(collected.to_bytes()),
    }
}

async fn mutate(State(state): State<Arc<AppState>>, body: Body) -> Result<Response, ApiError> {
    let bytes = read_body(&state, body).await?;
    let started = Instant::now();
    // Nothing below awaits: the review is answered synchronously, and logged as one line carrying every field of
    // the review (no span: a span's fields would be formatted once more for each line).
    let reviewed = match admission::review(&state.policy, &bytes) {
        Ok(r) => r,
        Err(e) => {
            state.metrics.error("bad_request");
            tracing::warn!(error = %e, "rejected a body that is not an AdmissionReview");
            return Err(ApiError::new(StatusCode::BAD_REQUEST, e.0));
        }
    };
    let decision = reviewed
        .decision
        .as_ref()
        .map(|d| d.kind.as_str())
        .unwrap_or("none");
    // One buffer, sized for the usual answer, so the encoder does not grow it step by step.
    let mut body = Vec::with_capacity(
        256 + reviewed
            .response
            .response
            .patch
            .as_ref()
            .map_or(0, String::len)
            + reviewed
                .response
                .response
                .warnings
                .iter()
                .map(|w| w.len() + 4)
                .sum::<usize>(),
    );
    if let Err(e) = serde_json::to_writer(&mut body, &reviewed.response) {
        state.metrics.error("encode");
        return Err(ApiError::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            format!("response could not be encoded: {e}"),
        ));
    }
    state
        .metrics
        .reviews
        .get_or_create(&ReviewLabels {
            decision,
            outcome: reviewed.outcome.as_str(),
        })
        .inc();
    state
        .metrics
        .review_duration
        .observe(started.elapsed().as_secs_f64());
    let reason = reviewed
        .decision
        .as_ref()
        .map(|d| d.reason.as_str())
        .unwrap_or("");
    // The audit line: the same fields at every level.
    macro_rules! audit {
        ($level:ident, $($rest:tt)*) => {
            tracing::$level!(
                uid = reviewed.uid.as_str(),
                namespace = reviewed.namespace.as_str(),
                name = reviewed.name.as_str(),
                operation = reviewed.operation.as_str(),
                decision,
                patched = reviewed.patched(),
                outcome = reviewed.outcome.as_str(),
                $($rest)*
            )
        };
    }
    match reviewed.outcome {
        Outcome::Patched | Outcome::DryRun => audit!(info, reason, "review answered"),
        Outcome::Skipped | Outcome::Undecodable => audit!(
            warn,
            warnings = ?reviewed.response.response.warnings,
            "allowed unchanged (fail open)"
        ),
        Outcome::Unchanged => audit!(debug, reason, "review answered"),
    }
    Ok(([(header::CONTENT_TYPE, "application/json")], body).into_response())
}
