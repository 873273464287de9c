//! The Kubernetes calls of `serve --cert-secret`: one Secret and one MutatingWebhookConfiguration, both by name.
//!
//! RBAC (the chart's `rbac-certificates.yaml`) allows `create` on Secrets and `get, list, watch, update, patch`
//! on these two objects by `resourceNames` only, so every call here names the object: gets by name, writes by name
//! with the resourceVersion that was read (optimistic concurrency), and lists/watches with the field selector
//! `metadata.name=NAME`, which the API server authorizes against `resourceNames`. Nothing is ever deleted.

use std::collections::BTreeMap;

use futures::{Stream, StreamExt};
use k8s_openapi::ByteString;
use k8s_openapi::api::admissionregistration::v1::MutatingWebhookConfiguration;
use k8s_openapi::api::core::v1::Secret;
use kube::api::{Api, Patch, PatchParams, PostParams};
use kube::runtime::{WatchStreamExt, watcher};

/// Why a call failed, with what to do about it. `reason()` is the metric label.
#[derive(Debug, thiserror::Error)]
pub enum CertApiError {
    #[error(
        "{op}: forbidden (HTTP 403): {message}. Fix: give the webhook's ServiceAccount `{verb}` on {resource} \
         (the chart's RBAC `*-certificates` does; check `kubectl auth can-i {verb} {resource} --as=system:serviceaccount:NAMESPACE:NAME`)"
    )]
    Forbidden {
        op: String,
        verb: &'static str,
        resource: String,
        message: String,
    },
    #[error(
        "{op}: conflict (HTTP 409): another writer (another replica?) changed it first; reading it again"
    )]
    Conflict { op: String },
    #[error("{op}: not found (HTTP 404). Fix: {fix}")]
    NotFound { op: String, fix: String },
    #[error(
        "{op}: cannot reach the Kubernetes API server: {source}. Fix: check the API server's health and that the pod \
         may reach it (NetworkPolicy egress, the in-cluster config or kubeconfig)"
    )]
    Unreachable {
        op: String,
        #[source]
        source: kube::Error,
    },
    #[error("{op}: {message}")]
    Api { op: String, message: String },
}

impl CertApiError {
    /// The `reason` label of `lb_l7_webhook_cert_manager_errors_total`.
    pub fn reason(&self) -> &'static str {
        match self {
            CertApiError::Forbidden { .. } => "forbidden",
            CertApiError::Conflict { .. } => "conflict",
            CertApiError::NotFound { .. } => "not_found",
            CertApiError::Unreachable { .. } => "api_unreachable",
            CertApiError::Api { .. } => "api_error",
        }
    }
}

/// The two objects, by name.
#[derive(Clone)]
pub struct CertObjects {
    secrets: Api<Secret>,
    webhooks: Api<MutatingWebhookConfiguration>,
    pub secret_namespace: String,
    pub secret_name: String,
    pub webhook_name: String,
}

fn classify(
    op: String,
    verb: &'static str,
    resource: String,
    fix_404: &str,
    e: kube::Error,
) -> CertApiError {
    match e {
        kube::Error::Api(s) if s.code == 403 => CertApiError::Forbidden {
            op,
            verb,
            resource,
            message: s.message.clone(),
        },
        kube::Error::Api(s) if s.code == 409 => CertApiError::Conflict { op },
        kube::Error::Api(s) if s.code == 404 => CertApiError::NotFound {
            op,
            fix: fix_404.to_string(),
        },
        kube::Error::Api(s) => CertApiError::Api {
            op,
            message: super::status_text(&s),
        },
        source => CertApiError::Unreachable { op, source },
    }
}

impl CertObjects {
    pub fn new(
        client: kube::Client,
        secret_namespace: &str,
        secret_name: &str,
        webhook_name: &str,
    ) -> Self {
        CertObjects {
            secrets: Api::namespaced(client.clone(), secret_namespace),
            webhooks: Api::all(client),
            secret_namespace: secret_namespace.to_string(),
            secret_name: secret_name.to_string(),
            webhook_name: webhook_name.to_string(),
        }
    }

    fn secret_ref(&self) -> String {
        format!("secrets/{} -n {}", self.secret_name, self.secret_namespace)
    }

    fn secret_err(&self, op: &str, verb: &'static str, e: kube::Error) -> CertApiError {
        classify(
            format!("{op} Secret {}/{}", self.secret_namespace, self.secret_name),
            verb,
            self.secret_ref(),
            "it was deleted meanwhile; it is created again",
            e,
        )
    }

    fn webhook_err(&self, op: &str, verb: &'static str, e: kube::Error) -> CertApiError {
        classify(
            format!("{op} MutatingWebhookConfiguration {}", self.webhook_name),
            verb,
            format!("mutatingwebhookconfigurations/{}", self.webhook_name),
            "install it (helm install / kubectl apply), or pass the right --webhook-configuration",
            e,
        )
    }

    /// The Secret, or `None` when it does not exist.
    pub async fn get_secret(&self) -> Result<Option<Secret>, CertApiError> {
        self.secrets
            .get_opt(&self.secret_name)
            .await
            .map_err(|e| self.secret_err("reading", "get", e))
    }

    /// Creates the Secret (type Opaque) with `data`. A 409 means another replica created it first.
    pub async fn create_secret(&self, data: &[(&str, &str)]) -> Result<Secret, CertApiError> {
        let secret = Secret {
            metadata: kube::core::ObjectMeta {
                name: Some(self.secret_name.clone()),
                namespace: Some(self.secret_namespace.clone()),
                labels: Some(BTreeMap::from([(
                    "app.kubernetes.io/name".to_string(),
                    "lb-l7-webhook".to_string(),
                )])),
                ..Default::default()
            },
            type_: Some("Opaque".to_string()),
            data: Some(to_data(data)),
            ..Default::default()
        };
        self.secrets
            .create(&PostParams::default(), &secret)
            .await
            .map_err(|e| self.secret_err("creating", "create", e))
    }

    /// Replaces the data keys of `current` (as read; its resourceVersion makes this fail with 409 when someone
    /// wrote in between). Other keys, labels, annotations and the type stay.
    pub async fn update_secret(
        &self,
        current: &Secret,
        data: &[(&str, &str)],
    ) -> Result<Secret, CertApiError> {
        let mut next = current.clone();
        let merged = next.data.get_or_insert_with(BTreeMap::new);
        merged.extend(to_data(data));
        self.secrets
            .replace(&self.secret_name, &PostParams::default(), &next)
            .await
            .map_err(|e| self.secret_err("updating", "update", e))
    }

    /// The webhook configuration, or `None` when it does not exist.
    pub async fn get_webhook_configuration(
        &self,
    ) -> Result<Option<MutatingWebhookConfiguration>, CertApiError> {
        self.webhooks
            .get_opt(&self.webhook_name)
            .await
            .map_err(|e| self.webhook_err("reading", "get", e))
    }

    /// Sets `caBundle` of every webhook of `current` (as read) to `bundle`: a JSON Patch that tests each webhook's
    /// name and carries the resourceVersion that was read, so it applies to exactly what was read (409 otherwise).
    pub async fn patch_ca_bundle(
        &self,
        current: &MutatingWebhookConfiguration,
        bundle: &[u8],
    ) -> Result<MutatingWebhookConfiguration, CertApiError> {
        use base64::Engine as _;
        let value = base64::engine::general_purpose::STANDARD.encode(bundle);
        let mut ops = vec![serde_json::json!({
            "op": "replace",
            "path": "/metadata/resourceVersion",
            "value": current.metadata.resource_version.clone().unwrap_or_default(),
        })];
        for (i, w) in current.webhooks.iter().flatten().enumerate() {
            ops.push(serde_json::json!({"op": "test", "path": format!("/webhooks/{i}/name"), "value": w.name}));
            ops.push(serde_json::json!({"op": "add", "path": format!("/webhooks/{i}/clientConfig/caBundle"), "value": value}));
        }
        let patch: json_patch::Patch = serde_json::from_value(serde_json::Value::Array(ops))
            .map_err(|e| CertApiError::Api {
                op: "building the caBundle patch".into(),
                message: e.to_string(),
            })?;
        self.webhooks
            .patch(
                &self.webhook_name,
                &PatchParams::default(),
                &Patch::Json::<()>(patch),
            )
            .await
            .map_err(|e| self.webhook_err("patching caBundle of", "patch", e))
    }

    /// A stream that yields `Ok(())` whenever the Secret changes (and after every (re)list), or the error of a
    /// failed list/watch (the stream backs off and goes on). Lists and watches only this one object.
    pub fn watch_secret(&self) -> impl Stream<Item = Result<(), CertApiError>> + Send + use<> {
        let fields = format!("metadata.name={}", self.secret_name);
        let this = self.clone();
        watcher(
            self.secrets.clone(),
            watcher::Config::default().fields(&fields),
        )
        .default_backoff()
        .map(move |r| {
            r.map(|_| ())
                .map_err(|e| this.secret_err("watching", "watch", watch_error(e)))
        })
    }

    /// Like [`watch_secret`](Self::watch_secret), for the webhook configuration.
    pub fn watch_webhook_configuration(
        &self,
    ) -> impl Stream<Item = Result<(), CertApiError>> + Send + use<> {
        let fields = format!("metadata.name={}", self.webhook_name);
        let this = self.clone();
        watcher(
            self.webhooks.clone(),
            watcher::Config::default().fields(&fields),
        )
        .default_backoff()
        .map(move |r| {
            r.map(|_| ())
                .map_err(|e| this.webhook_err("watching", "watch", watch_error(e)))
        })
    }
}

fn watch_error(e: watcher::Error) -> kube::Error {
    match e {
        watcher::Error::InitialListFailed(e)
        | watcher::Error::WatchStartFailed(e)
        | watcher::Error::WatchFailed(e) => e,
        watcher::Error::WatchError(status) => kube::Error::Api(status),
        other => kube::Error::Api(Box::new(kube::core::Status::failure(
            &other.to_string(),
            "WatchFailed",
        ))),
    }
}

fn to_data(data: &[(&str, &str)]) -> BTreeMap<String, ByteString> {
    data.iter()
        .map(|(k, v)| (k.to_string(), ByteString(v.as_bytes().to_vec())))
        .collect()
}

/// The `caBundle` of every webhook of a configuration (empty when unset).
pub fn ca_bundles(config: &MutatingWebhookConfiguration) -> Vec<Vec<u8>> {
    config
        .webhooks
        .iter()
        .flatten()
        .map(|w| {
            w.client_config
                .ca_bundle
                .as_ref()
                .map(|b| b.0.clone())
                .unwrap_or_default()
        })
        .collect()
}

/// The Secret's data as key -> bytes.
pub fn secret_data(secret: &Secret) -> BTreeMap<String, Vec<u8>> {
    secret
        .data
        .iter()
        .flatten()
        .map(|(k, v)| (k.clone(), v.0.clone()))
        .collect()
}
