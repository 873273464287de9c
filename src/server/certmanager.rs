//! `serve --cert-secret`: keeps the Secret, the webhook configuration's `caBundle` and the served certificate in
//! step. The decisions are [`super::selfcert`]'s; the calls are `crate::cluster::certs`'.
//!
//! One pass ([`CertManager::reconcile`]): read the webhook configuration, then the Secret (in that order: a
//! `caBundle` written by another replica came from a Secret at most as new as the one read after it, so a pass never
//! takes a CA out of `caBundle` that the Secret still holds); write the Secret when the plan says so (create, or
//! update with the resourceVersion read; a 409 starts the pass again); set every `caBundle` to the Secret's
//! `ca.crt`; serve the Secret's certificate when every `caBundle` trusts it. A pass runs at start, on every watch
//! event of either object, at the next renewal or expiry, and after an error (with backoff).

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use futures::StreamExt;
use tokio::sync::{Notify, watch};

use super::metrics::{Metrics, ReasonLabels, WhatLabels};
use super::selfcert::{self, Contents, Settings};
use super::tls::CertStore;
use crate::cluster::certs::{CertApiError, CertObjects, ca_bundles, secret_data};

/// Why a pass failed.
#[derive(Debug, thiserror::Error)]
pub enum CertManagerError {
    #[error(transparent)]
    Api(#[from] CertApiError),
    #[error("making certificates: {0}")]
    Certificate(#[from] crate::certs::CertError),
    #[error("the certificate in Secret {secret} cannot be served: {source}")]
    Serve {
        secret: String,
        #[source]
        source: super::tls::TlsError,
    },
}

impl CertManagerError {
    pub fn reason(&self) -> &'static str {
        match self {
            CertManagerError::Api(e) => e.reason(),
            CertManagerError::Certificate(_) => "certificate",
            CertManagerError::Serve { .. } => "certificate",
        }
    }
}

/// The certificate manager of one `serve`.
pub struct CertManager {
    objects: CertObjects,
    settings: Settings,
    store: Arc<CertStore>,
    metrics: Arc<Metrics>,
    /// True while the served certificate is trusted by every caBundle (read by `/readyz`).
    trusted: Arc<AtomicBool>,
}

fn now() -> i64 {
    time::OffsetDateTime::now_utc().unix_timestamp()
}

impl CertManager {
    pub fn new(
        client: kube::Client,
        settings: Settings,
        store: Arc<CertStore>,
        metrics: Arc<Metrics>,
        trusted: Arc<AtomicBool>,
    ) -> Self {
        CertManager {
            objects: CertObjects::new(
                client,
                &settings.secret_namespace,
                &settings.secret_name,
                &settings.webhook_configuration,
            ),
            settings,
            store,
            metrics,
            trusted,
        }
    }

    fn secret_ref(&self) -> String {
        format!(
            "{}/{}",
            self.settings.secret_namespace, self.settings.secret_name
        )
    }

    fn count_error(&self, e: &CertManagerError) {
        self.metrics
            .cert_manager_errors
            .get_or_create(&ReasonLabels { reason: e.reason() })
            .inc();
    }

    fn count(&self, what: &'static str) {
        self.metrics
            .cert_rotations
            .get_or_create(&WhatLabels { what })
            .inc();
    }

    /// One pass; returns when to look again at the latest.
    pub async fn reconcile(&self) -> Result<Duration, CertManagerError> {
        for _ in 0..5 {
            match self.pass().await {
                Err(CertManagerError::Api(e @ CertApiError::Conflict { .. })) => {
                    // Expected when replicas start together: read what won and go on from there.
                    self.count_error(&CertManagerError::Api(CertApiError::Conflict {
                        op: String::new(),
                    }));
                    tracing::info!(reason = "conflict", "{e}");
                }
                other => return other,
            }
        }
        Ok(Duration::from_secs(1))
    }

    async fn pass(&self) -> Result<Duration, CertManagerError> {
        let webhook = self.objects.get_webhook_configuration().await?;
        let secret = self.objects.get_secret().await?;
        let mut contents = secret
            .as_ref()
            .map(|s| Contents::from_data(&secret_data(s)))
            .unwrap_or_default();
        let mut observed = webhook.as_ref().map(ca_bundles);
        let now = now();
        let plan = selfcert::plan(&contents, observed.as_deref(), now, &self.settings)?;
        if let Some(next) = plan.write {
            let data = next.to_data();
            match &secret {
                None => {
                    self.objects.create_secret(&data).await?;
                }
                Some(current) => {
                    self.objects.update_secret(current, &data).await?;
                }
            }
            for change in &plan.changes {
                self.count(change.as_str());
            }
            tracing::info!(
                secret = %self.secret_ref(),
                changes = ?plan.changes.iter().map(|c| c.as_str()).collect::<Vec<_>>(),
                cas = selfcert::bundle_len(&next.ca_crt),
                serving_not_after = selfcert::not_after(&next.tls_crt).unwrap_or(0),
                "wrote the certificate Secret"
            );
            contents = next;
        } else if plan.waiting_for_ca_bundle {
            tracing::info!("a new serving certificate waits until every caBundle holds the new CA");
        }

        // caBundle of every webhook = the Secret's ca.crt.
        let Some(config) = &webhook else {
            self.trusted.store(false, Ordering::Relaxed);
            return Err(CertApiError::NotFound {
                op: format!(
                    "reading MutatingWebhookConfiguration {}",
                    self.settings.webhook_configuration
                ),
                fix: "install it (helm install / kubectl apply), or pass the right --webhook-configuration; \
                      its caBundle is written as soon as it exists"
                    .into(),
            }
            .into());
        };
        let want = contents.ca_crt.as_bytes();
        let bundles = ca_bundles(config);
        if bundles.iter().any(|b| b != want) {
            let wiped = bundles.iter().any(|b| b.is_empty());
            let updated = self.objects.patch_ca_bundle(config, want).await?;
            self.count("ca_bundle");
            if wiped && secret.is_some() {
                tracing::warn!(
                    webhook_configuration = %self.settings.webhook_configuration,
                    "caBundle was empty (the configuration was re-applied?): restored it from Secret {}",
                    self.secret_ref()
                );
            } else {
                tracing::info!(
                    webhook_configuration = %self.settings.webhook_configuration,
                    cas = selfcert::bundle_len(&contents.ca_crt),
                    "set caBundle of every webhook to the Secret's ca.crt"
                );
            }
            observed = Some(ca_bundles(&updated));
        }

        // Serve what every caBundle trusts.
        let now = self::now();
        if let Some((cert, key)) =
            selfcert::servable(&contents, observed.as_deref(), &self.settings, now)
        {
            let changed = self
                .store
                .set_pem(cert.as_bytes(), key.as_bytes())
                .map_err(|source| CertManagerError::Serve {
                    secret: self.secret_ref(),
                    source,
                })?;
            if changed {
                tracing::info!(
                    not_after = self.store.not_after(),
                    "serving a new TLS certificate from Secret {}",
                    self.secret_ref()
                );
            }
        }
        let trusted = self.store.current_cert_pem().is_some_and(|pem| {
            selfcert::trusted_by_all(observed.as_deref(), &pem, &self.settings, now)
        });
        if trusted != self.trusted.swap(trusted, Ordering::Relaxed) {
            if trusted {
                tracing::info!("ready: the served certificate is trusted by every caBundle");
            } else {
                tracing::warn!(
                    "not ready: the served certificate is not trusted by every caBundle of {}",
                    self.settings.webhook_configuration
                );
            }
        }
        Ok(selfcert::next_check(&contents, now))
    }

    /// Runs passes until `stop` fires: at start, on watch events, at the next renewal, and after errors with
    /// backoff (1 s doubling to 30 s).
    pub async fn run(self, mut stop: watch::Receiver<bool>) {
        let wake = Arc::new(Notify::new());
        let mut watches = Vec::new();
        for stream in [
            self.objects.watch_secret().boxed(),
            self.objects.watch_webhook_configuration().boxed(),
        ] {
            let wake = wake.clone();
            let metrics = self.metrics.clone();
            watches.push(tokio::spawn(async move {
                let mut stream = stream;
                while let Some(event) = stream.next().await {
                    match event {
                        Ok(()) => wake.notify_one(),
                        Err(e) => {
                            metrics
                                .cert_manager_errors
                                .get_or_create(&ReasonLabels { reason: e.reason() })
                                .inc();
                            tracing::warn!(reason = e.reason(), "{e}");
                        }
                    }
                }
            }));
        }
        let mut backoff = Duration::from_secs(1);
        loop {
            let wait = match self.reconcile().await {
                Ok(next) => {
                    backoff = Duration::from_secs(1);
                    next
                }
                Err(e) => {
                    self.count_error(&e);
                    tracing::error!(reason = e.reason(), retry_in = ?backoff, "certificate manager: {e}");
                    let wait = backoff;
                    backoff = (backoff * 2).min(Duration::from_secs(30));
                    wait
                }
            };
            tokio::select! {
                _ = stop.changed() => break,
                () = wake.notified() => {}
                () = tokio::time::sleep(wait) => {}
            }
        }
        for w in watches {
            w.abort();
        }
    }
}
