//! Failed TLS handshakes on the webhook port: a reason for the metric `lb_l7_webhook_tls_handshake_failures_total`
//! and a warn line, at most one per reason every ten seconds (with the number of failures not logged meanwhile).
//!
//! The line that matters most: the API server answers a certificate it does not trust with the alert
//! `unknown_ca` (or `bad_certificate`), and with `failurePolicy: Ignore` the Service is then written unannotated.
//! That means the webhook configuration's `caBundle` does not hold the CA of the served certificate.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use rustls::AlertDescription;

use super::metrics::{Metrics, ReasonLabels};

/// The reason label and a sentence for the log.
pub fn classify(error: &std::io::Error) -> (&'static str, String) {
    let rustls_error = error
        .get_ref()
        .and_then(|inner| inner.downcast_ref::<rustls::Error>());
    const CA_HINT: &str = "the client does not trust the served certificate; if the client is the Kubernetes API \
                           server, the webhook configuration's caBundle does not hold the CA that signed it \
                           (compare `kubectl get mutatingwebhookconfiguration NAME -o jsonpath='{.webhooks[0].clientConfig.caBundle}' | base64 -d` with the CA; \
                           `lb-l7-webhook doctor` checks it)";
    match rustls_error {
        Some(rustls::Error::AlertReceived(alert)) => match alert {
            AlertDescription::UnknownCA => (
                "unknown_ca",
                format!("the client sent the TLS alert unknown_ca: {CA_HINT}"),
            ),
            AlertDescription::BadCertificate => (
                "bad_certificate",
                format!("the client sent the TLS alert bad_certificate: {CA_HINT}"),
            ),
            AlertDescription::CertificateUnknown => (
                "certificate_unknown",
                format!("the client sent the TLS alert certificate_unknown: {CA_HINT}"),
            ),
            AlertDescription::CertificateExpired => (
                "certificate_expired",
                "the client sent the TLS alert certificate_expired: the served certificate has expired (or the \
                 client's clock is wrong)"
                    .to_string(),
            ),
            other => (
                "alert",
                format!("the client sent the TLS alert {other:?}"),
            ),
        },
        Some(rustls::Error::InvalidMessage(_)) => (
            "not_tls",
            "the client did not speak TLS (plain HTTP to the HTTPS port?)".to_string(),
        ),
        Some(rustls::Error::PeerIncompatible(p)) => (
            "incompatible",
            format!("no TLS version or cipher suite in common with the client: {p:?}"),
        ),
        Some(rustls::Error::General(m)) if m.contains("no server certificate") => (
            "no_certificate",
            "no certificate to serve yet (serve --cert-secret: the caBundle does not trust one yet)".to_string(),
        ),
        Some(other) => ("tls_error", format!("TLS error: {other}")),
        None if error.kind() == std::io::ErrorKind::UnexpectedEof => (
            "eof",
            "the client closed the connection during the handshake".to_string(),
        ),
        None => ("io", format!("connection error: {error}")),
    }
}

/// Counts every failure and logs at most one line per reason per window.
#[derive(Debug)]
pub struct HandshakeLog {
    window: Duration,
    /// reason -> (when last logged, failures not logged since)
    seen: Mutex<HashMap<&'static str, (Instant, u64)>>,
}

impl Default for HandshakeLog {
    fn default() -> Self {
        HandshakeLog {
            window: Duration::from_secs(10),
            seen: Mutex::new(HashMap::new()),
        }
    }
}

impl HandshakeLog {
    pub fn failed(&self, metrics: &Metrics, peer: SocketAddr, reason: &'static str, what: &str) {
        metrics
            .tls_handshake_failures
            .get_or_create(&ReasonLabels { reason })
            .inc();
        let suppressed = {
            let Ok(mut seen) = self.seen.lock() else {
                return;
            };
            let now = Instant::now();
            match seen.get_mut(reason) {
                Some((last, count)) if now.duration_since(*last) < self.window => {
                    *count += 1;
                    return;
                }
                Some((last, count)) => {
                    let n = *count;
                    *last = now;
                    *count = 0;
                    n
                }
                None => {
                    seen.insert(reason, (now, 0));
                    0
                }
            }
        };
        tracing::warn!(
            %peer,
            reason,
            suppressed,
            "TLS handshake failed: {what} (at most one line per reason every {:?}; `suppressed` counts the others)",
            self.window
        );
    }

    pub fn timed_out(&self, metrics: &Metrics, peer: SocketAddr) {
        self.failed(
            metrics,
            peer,
            "timeout",
            "the client did not finish the handshake within --client-timeout",
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_unknown_ca_alert_says_the_ca_bundle_is_wrong() {
        let e = std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            rustls::Error::AlertReceived(AlertDescription::UnknownCA),
        );
        let (reason, text) = classify(&e);
        assert_eq!(reason, "unknown_ca");
        assert!(text.contains("caBundle"), "{text}");
        let eof = std::io::Error::from(std::io::ErrorKind::UnexpectedEof);
        assert_eq!(classify(&eof).0, "eof");
    }

    #[test]
    fn every_failure_is_counted_and_lines_are_limited_per_reason() {
        let metrics = Metrics::new();
        let log = HandshakeLog::default();
        let peer: SocketAddr = "127.0.0.1:1".parse().unwrap();
        for _ in 0..5 {
            log.failed(&metrics, peer, "unknown_ca", "x");
        }
        log.failed(&metrics, peer, "eof", "y");
        let text = metrics.encode();
        assert!(
            text.contains(r#"lb_l7_webhook_tls_handshake_failures_total{reason="unknown_ca"} 5"#),
            "{text}"
        );
        let seen = log.seen.lock().unwrap();
        assert_eq!(seen.get("unknown_ca").map(|s| s.1), Some(4), "4 not logged");
        assert_eq!(seen.get("eof").map(|s| s.1), Some(0));
    }
}
