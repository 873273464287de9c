//! Sending guarded JSON Patches to Services: the one send/retry path that `backfill` and the reconciler share.
//!
//! A failed `test` comes back from the API server as HTTP 422 `Invalid` with the generic message "the server
//! rejected our request due to an error in our request"; an optimistic-concurrency conflict is HTTP 409. On
//! either, [`guarded_enable`] reads the Service again, lets the caller evaluate it again and, if it still needs the
//! annotation, patches once more; a second failure is reported. A Service deleted in the meantime (404) is gone,
//! not a failure.

use k8s_openapi::api::core::v1::Service;
use kube::api::{Api, Patch, PatchParams};
use lb_l7_core::patch;
use lb_l7_core::policy::{Decision, DecisionKind, Policy};

/// What happened to one guarded patch.
#[derive(Debug, Clone, PartialEq)]
pub enum PatchOutcome {
    /// Patched (with `dryRun=All` when the params say so).
    Patched { after_conflict: bool },
    /// A conflict, and the Service read again no longer needs the change.
    SkippedAfterReread(DecisionKind),
    /// Deleted since it was read.
    Gone,
    /// The patch failed; the message says why. `conflict` when the last failure was a 409 or a failed `test`.
    Failed { message: String, conflict: bool },
}

/// Whether a patch error means the Service changed under us: HTTP 409, or HTTP 422 from a failed `test` op.
pub fn is_conflict(err: &kube::Error) -> bool {
    match err {
        kube::Error::Api(status) => {
            status.code == 409 || (status.code == 422 && is_failed_test(&status.message))
        }
        _ => false,
    }
}

fn is_failed_test(message: &str) -> bool {
    let m = message.to_ascii_lowercase();
    // What the API server says (its generic 422 message), and what json-patch says, should a server pass it on.
    m.contains("the server rejected our request due to an error in our request")
        || m.contains("testing value")
        || m.contains("test failed")
        || m.contains("test operation does not apply")
}

/// HTTP 404.
pub fn is_not_found(err: &kube::Error) -> bool {
    matches!(err, kube::Error::Api(s) if s.code == 404)
}

/// An API error in words: `HTTP code reason: message`.
pub fn describe_error(err: &kube::Error) -> String {
    match err {
        kube::Error::Api(s) => format!("HTTP {} {}: {}", s.code, s.reason, s.message),
        other => other.to_string(),
    }
}

/// Sends one JSON Patch to a Service.
pub async fn send_json_patch(
    api: &Api<Service>,
    name: &str,
    p: json_patch::Patch,
    params: &PatchParams,
) -> Result<(), kube::Error> {
    api.patch(name, params, &Patch::<()>::Json(p))
        .await
        .map(|_| ())
}

async fn send_enable(
    api: &Api<Service>,
    name: &str,
    svc: &Service,
    decision: &Decision,
    policy: &Policy,
    params: &PatchParams,
) -> Result<(), kube::Error> {
    // `enable` always yields a patch; were it ever empty, there would be nothing to send.
    let Some(p) = patch::build_guarded_patch(svc, decision, policy) else {
        return Ok(());
    };
    send_json_patch(api, name, p, params).await
}

/// One guarded patch that adds the annotations of an `enable` decision; on a conflict, one re-read, one
/// re-evaluation (`reevaluate`, with the caller's namespace context) and one more guarded patch.
pub async fn guarded_enable(
    api: &Api<Service>,
    policy: &Policy,
    svc: &Service,
    decision: &Decision,
    params: &PatchParams,
    reevaluate: impl Fn(&Service) -> Decision,
) -> PatchOutcome {
    let name = svc.metadata.name.as_deref().unwrap_or_default();
    let first = match send_enable(api, name, svc, decision, policy, params).await {
        Ok(()) => {
            return PatchOutcome::Patched {
                after_conflict: false,
            };
        }
        Err(e) => e,
    };
    if is_not_found(&first) {
        return PatchOutcome::Gone;
    }
    if !is_conflict(&first) {
        return PatchOutcome::Failed {
            message: describe_error(&first),
            conflict: false,
        };
    }
    tracing::info!(service = name, error = %describe_error(&first), "conflict: reading the Service again");
    let fresh = match api.get(name).await {
        Ok(s) => s,
        Err(e) if is_not_found(&e) => return PatchOutcome::Gone,
        Err(e) => {
            return PatchOutcome::Failed {
                message: format!(
                    "conflict ({}), and reading the Service again failed: {}",
                    describe_error(&first),
                    describe_error(&e)
                ),
                conflict: false,
            };
        }
    };
    let again = reevaluate(&fresh);
    if again.kind != DecisionKind::Enable {
        return PatchOutcome::SkippedAfterReread(again.kind);
    }
    match send_enable(api, name, &fresh, &again, policy, params).await {
        Ok(()) => PatchOutcome::Patched {
            after_conflict: true,
        },
        Err(e) if is_not_found(&e) => PatchOutcome::Gone,
        Err(e) => PatchOutcome::Failed {
            conflict: is_conflict(&e),
            message: format!(
                "conflict, and again after reading the Service once more: {}",
                describe_error(&e)
            ),
        },
    }
}
