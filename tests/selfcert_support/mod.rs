//! A scripted Kubernetes API server for `serve --cert-secret`: kube's client over a `tower_test` mock, answering
//! request by request what the API server would for one Secret and one MutatingWebhookConfiguration: get, create,
//! update (resourceVersion checked: 409 on a stale one), JSON Patch (test ops and resourceVersion honoured), list
//! and watch (streamed events). It is a mock because no API server runs here. Every request is recorded, and a
//! list or watch without the field selector `metadata.name=NAME` is recorded as an RBAC violation (the chart grants
//! list/watch by resourceNames only).
#![allow(dead_code)]

use std::collections::HashMap;
use std::convert::Infallible;
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use http::{Request, Response, StatusCode};
use http_body_util::BodyExt;
use http_body_util::combinators::UnsyncBoxBody;
use kube::client::Body;
use serde_json::{Value, json};
use tokio::sync::mpsc;
use tower_test::mock;

pub type RespBody = UnsyncBoxBody<Bytes, Infallible>;

pub const NS: &str = "lb-l7-system";
pub const SECRET: &str = "lb-l7-webhook-certs";
pub const WEBHOOK: &str = "lb-l7-webhook";

const SECRETS: &str = "/api/v1/namespaces/lb-l7-system/secrets";
const WEBHOOKS: &str = "/apis/admissionregistration.k8s.io/v1/mutatingwebhookconfigurations";

/// The fake cluster's state and what it saw.
#[derive(Default)]
pub struct State {
    pub secret: Option<Value>,
    pub webhook: Option<Value>,
    pub rv: u64,
    /// Every request: "METHOD path?query".
    pub requests: Vec<String>,
    /// Lists and watches without `fieldSelector=metadata.name=NAME`.
    pub violations: Vec<String>,
    /// Answer every request with 403.
    pub forbid: bool,
    /// On the next create: store this Secret (another replica won) and answer 409.
    pub create_race_winner: Option<Value>,
    /// Every caBundle ever written, in order (base64-decoded PEM).
    pub ca_bundles_written: Vec<Vec<u8>>,
    pub secret_watchers: Vec<mpsc::UnboundedSender<Bytes>>,
    pub webhook_watchers: Vec<mpsc::UnboundedSender<Bytes>>,
}

pub type Shared = Arc<Mutex<State>>;

impl State {
    fn next_rv(&mut self) -> String {
        self.rv += 1;
        (self.rv + 100).to_string()
    }

    fn notify(&mut self, secret: bool, kind: &str) {
        let object = if secret {
            self.secret.clone()
        } else {
            self.webhook.clone()
        };
        let Some(object) = object else { return };
        let mut line = serde_json::to_vec(&json!({"type": kind, "object": object})).unwrap();
        line.push(b'\n');
        let line = Bytes::from(line);
        let watchers = if secret {
            &mut self.secret_watchers
        } else {
            &mut self.webhook_watchers
        };
        watchers.retain(|w| w.send(line.clone()).is_ok());
    }

    /// What a person does with `kubectl apply` of a configuration without caBundle.
    pub fn wipe_ca_bundle(&mut self) {
        let rv = self.next_rv();
        if let Some(w) = self.webhook.as_mut() {
            for hook in w["webhooks"].as_array_mut().unwrap() {
                hook["clientConfig"]
                    .as_object_mut()
                    .unwrap()
                    .remove("caBundle");
            }
            w["metadata"]["resourceVersion"] = json!(rv);
        }
        self.notify(false, "MODIFIED");
    }

    /// The caBundle of every webhook (decoded).
    pub fn ca_bundles(&self) -> Vec<Vec<u8>> {
        use base64::Engine as _;
        self.webhook
            .as_ref()
            .map(|w| {
                w["webhooks"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .map(|h| {
                        h["clientConfig"]["caBundle"]
                            .as_str()
                            .map(|b| base64::engine::general_purpose::STANDARD.decode(b).unwrap())
                            .unwrap_or_default()
                    })
                    .collect()
            })
            .unwrap_or_default()
    }

    /// The Secret's data (decoded), key -> text.
    pub fn secret_data(&self) -> HashMap<String, String> {
        use base64::Engine as _;
        let mut out = HashMap::new();
        if let Some(data) = self
            .secret
            .as_ref()
            .and_then(|s| s["data"].as_object().cloned())
        {
            for (k, v) in data {
                let bytes = base64::engine::general_purpose::STANDARD
                    .decode(v.as_str().unwrap())
                    .unwrap();
                out.insert(k, String::from_utf8(bytes).unwrap());
            }
        }
        out
    }
}

/// The chart's Secret: type Opaque, no data.
pub fn chart_secret() -> Value {
    json!({"apiVersion": "v1", "kind": "Secret", "type": "Opaque",
        "metadata": {"name": SECRET, "namespace": NS, "resourceVersion": "7", "uid": "secret-uid",
            "labels": {"app.kubernetes.io/managed-by": "Helm"}}})
}

/// A webhook configuration with two webhooks and no caBundle.
pub fn webhook_configuration() -> Value {
    let hook = |name: &str| {
        json!({"name": name, "admissionReviewVersions": ["v1"], "sideEffects": "None", "failurePolicy": "Ignore",
            "clientConfig": {"service": {"namespace": NS, "name": "lb-l7-webhook", "path": "/mutate", "port": 443}}})
    };
    json!({"apiVersion": "admissionregistration.k8s.io/v1", "kind": "MutatingWebhookConfiguration",
        "metadata": {"name": WEBHOOK, "resourceVersion": "9", "uid": "webhook-uid"},
        "webhooks": [hook("lb-l7.services.lb-l7-webhook.io"), hook("second.lb-l7-webhook.io")]})
}

fn status(code: u16, reason: &str, message: &str) -> Value {
    json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
        "message": message, "reason": reason, "code": code})
}

fn full(code: StatusCode, body: &Value) -> Response<RespBody> {
    Response::builder()
        .status(code)
        .header("content-type", "application/json")
        .body(
            http_body_util::Full::new(Bytes::from(serde_json::to_vec(body).unwrap()))
                .boxed_unsync(),
        )
        .unwrap()
}

fn streaming(rx: mpsc::UnboundedReceiver<Bytes>) -> Response<RespBody> {
    let stream = futures::stream::unfold(rx, |mut rx| async move {
        rx.recv()
            .await
            .map(|b| (Ok::<_, Infallible>(hyper::body::Frame::data(b)), rx))
    });
    Response::builder()
        .status(StatusCode::OK)
        .header("content-type", "application/json")
        .body(http_body_util::StreamBody::new(stream).boxed_unsync())
        .unwrap()
}

fn query_pairs(q: &str) -> HashMap<String, String> {
    q.split('&')
        .filter_map(|p| p.split_once('='))
        .map(|(k, v)| {
            (
                k.to_string(),
                v.replace("%3D", "=").replace("%2F", "/").replace('+', " "),
            )
        })
        .collect()
}

/// A kube client over the fake, and the fake's state. The fake runs until the client is dropped.
pub fn fake_cluster(state: State) -> (kube::Client, Shared) {
    let shared = Arc::new(Mutex::new(state));
    (fake_client(&shared), shared)
}

/// One more client over the same fake cluster (another replica).
pub fn fake_client(shared: &Shared) -> kube::Client {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let (service, mut handle) = mock::pair::<Request<Body>, Response<RespBody>>();
    let s = shared.clone();
    tokio::spawn(async move {
        while let Some((req, respond)) = handle.next_request().await {
            let (parts, body) = req.into_parts();
            let bytes = body.collect_bytes().await.unwrap_or_default();
            let response = answer(&s, &parts, &bytes);
            respond.send_response(response);
        }
    });
    kube::Client::new(service, "default")
}

fn answer(shared: &Shared, parts: &http::request::Parts, body: &[u8]) -> Response<RespBody> {
    let mut st = shared.lock().unwrap();
    let path = parts.uri.path().to_string();
    let query = query_pairs(parts.uri.query().unwrap_or(""));
    st.requests.push(format!(
        "{} {}{}",
        parts.method,
        path,
        parts
            .uri
            .query()
            .map(|q| format!("?{q}"))
            .unwrap_or_default()
    ));
    if st.forbid {
        return full(
            StatusCode::FORBIDDEN,
            &status(
                403,
                "Forbidden",
                "secrets \"lb-l7-webhook-certs\" is forbidden: User \"system:serviceaccount:lb-l7-system:lb-l7-webhook\" cannot get resource \"secrets\"",
            ),
        );
    }
    let method = parts.method.as_str();
    let secret_path = format!("{SECRETS}/{SECRET}");
    let webhook_path = format!("{WEBHOOKS}/{WEBHOOK}");
    // Lists and watches: by field selector only.
    if method == "GET" && (path == SECRETS || path == WEBHOOKS) {
        let name = if path == SECRETS { SECRET } else { WEBHOOK };
        if query.get("fieldSelector").map(String::as_str) != Some(&format!("metadata.name={name}"))
        {
            st.violations.push(format!("{path} {query:?}"));
            return full(
                StatusCode::FORBIDDEN,
                &status(403, "Forbidden", "list without resourceNames"),
            );
        }
        let secret = path == SECRETS;
        if query.get("watch").map(String::as_str) == Some("true") {
            let (tx, rx) = mpsc::unbounded_channel();
            if secret {
                st.secret_watchers.push(tx);
            } else {
                st.webhook_watchers.push(tx);
            }
            return streaming(rx);
        }
        let item = if secret {
            st.secret.clone()
        } else {
            st.webhook.clone()
        };
        let rv = (st.rv + 100).to_string();
        let kind = if secret {
            "SecretList"
        } else {
            "MutatingWebhookConfigurationList"
        };
        return full(
            StatusCode::OK,
            &json!({"kind": kind, "apiVersion": if secret {"v1"} else {"admissionregistration.k8s.io/v1"},
                "metadata": {"resourceVersion": rv}, "items": item.into_iter().collect::<Vec<_>>()}),
        );
    }
    match (method, path.as_str()) {
        ("GET", p) if p == secret_path => match &st.secret {
            Some(s) => full(StatusCode::OK, s),
            None => full(
                StatusCode::NOT_FOUND,
                &status(404, "NotFound", "secrets \"lb-l7-webhook-certs\" not found"),
            ),
        },
        ("GET", p) if p == webhook_path => match &st.webhook {
            Some(w) => full(StatusCode::OK, w),
            None => full(StatusCode::NOT_FOUND, &status(404, "NotFound", "not found")),
        },
        ("POST", SECRETS) => {
            if let Some(mut winner) = st.create_race_winner.take() {
                winner["metadata"]["resourceVersion"] = json!(st.next_rv());
                st.secret = Some(winner);
                st.notify(true, "ADDED");
                return full(
                    StatusCode::CONFLICT,
                    &status(
                        409,
                        "AlreadyExists",
                        "secrets \"lb-l7-webhook-certs\" already exists",
                    ),
                );
            }
            if st.secret.is_some() {
                return full(
                    StatusCode::CONFLICT,
                    &status(409, "AlreadyExists", "already exists"),
                );
            }
            let mut obj: Value = serde_json::from_slice(body).unwrap();
            obj["metadata"]["resourceVersion"] = json!(st.next_rv());
            st.secret = Some(obj.clone());
            st.notify(true, "ADDED");
            full(StatusCode::CREATED, &obj)
        }
        ("PUT", p) if p == secret_path => {
            let mut obj: Value = serde_json::from_slice(body).unwrap();
            let current = st
                .secret
                .as_ref()
                .map(|s| s["metadata"]["resourceVersion"].clone());
            if current != Some(obj["metadata"]["resourceVersion"].clone()) {
                return full(
                    StatusCode::CONFLICT,
                    &status(409, "Conflict", "the object has been modified"),
                );
            }
            obj["metadata"]["resourceVersion"] = json!(st.next_rv());
            st.secret = Some(obj.clone());
            st.notify(true, "MODIFIED");
            full(StatusCode::OK, &obj)
        }
        ("PATCH", p) if p == webhook_path => {
            let Some(current) = st.webhook.clone() else {
                return full(StatusCode::NOT_FOUND, &status(404, "NotFound", "not found"));
            };
            let patch: json_patch::Patch = serde_json::from_slice(body).unwrap();
            let mut next = current.clone();
            if json_patch::patch(&mut next, &patch).is_err() {
                return full(
                    StatusCode::UNPROCESSABLE_ENTITY,
                    &status(422, "Invalid", "the server rejected our request"),
                );
            }
            if next["metadata"]["resourceVersion"] != current["metadata"]["resourceVersion"] {
                return full(
                    StatusCode::CONFLICT,
                    &status(409, "Conflict", "the object has been modified"),
                );
            }
            next["metadata"]["resourceVersion"] = json!(st.next_rv());
            st.webhook = Some(next.clone());
            let bundles = st.ca_bundles();
            if let Some(first) = bundles.first() {
                st.ca_bundles_written.push(first.clone());
            }
            st.notify(false, "MODIFIED");
            full(StatusCode::OK, &next)
        }
        _ => full(
            StatusCode::NOT_FOUND,
            &status(404, "NotFound", &format!("no route {method} {path}")),
        ),
    }
}

/// `serve --cert-secret` in this process, on loopback ports, over the fake cluster.
pub struct SelfServer {
    pub addr: std::net::SocketAddr,
    pub probe: std::net::SocketAddr,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    task: tokio::task::JoinHandle<anyhow::Result<()>>,
}

impl SelfServer {
    pub async fn stop(mut self) {
        if let Some(tx) = self.stop.take() {
            let _ = tx.send(());
        }
        tokio::time::timeout(std::time::Duration::from_secs(30), &mut self.task)
            .await
            .expect("server stops in time")
            .expect("server task")
            .expect("server");
    }
}

/// Settings as the chart passes them, plus 127.0.0.1 (the tests connect to it).
pub fn settings(
    ca: std::time::Duration,
    cert: std::time::Duration,
) -> lb_l7_webhook::server::selfcert::Settings {
    let mut sans = lb_l7_webhook::certs::service_dns_names("lb-l7-webhook", NS);
    sans.push("127.0.0.1".into());
    lb_l7_webhook::server::selfcert::Settings {
        secret_namespace: NS.into(),
        secret_name: SECRET.into(),
        webhook_configuration: WEBHOOK.into(),
        sans,
        ca_validity: ca,
        cert_validity: cert,
    }
}

pub async fn start_self(
    client: kube::Client,
    settings: lb_l7_webhook::server::selfcert::Settings,
) -> SelfServer {
    use lb_l7_webhook::server::{Server, ServerConfig, TlsSource};
    let config = ServerConfig {
        listen: "127.0.0.1:0".parse().unwrap(),
        probe_listen: "127.0.0.1:0".parse().unwrap(),
        policy: lb_l7_core::policy::Policy::from_yaml(
            "scope: cluster\nrules: [{name: grpc-ports, ports: {}}]\n",
        )
        .unwrap(),
        tls: TlsSource::Secret(Box::new(settings)),
        cert_reload_interval: std::time::Duration::from_millis(200),
        client_timeout: std::time::Duration::from_secs(2),
        drain_timeout: std::time::Duration::from_secs(5),
    };
    let server = Server::bind_with_client(config, Some(client))
        .await
        .expect("bind");
    let addr = server.local_addr().unwrap();
    let probe = server.probe_addr().unwrap();
    let (tx, rx) = tokio::sync::oneshot::channel::<()>();
    let task = tokio::spawn(server.serve(async move {
        let _ = rx.await;
    }));
    SelfServer {
        addr,
        probe,
        stop: Some(tx),
        task,
    }
}

/// Polls `cond` every 50 ms for at most `secs` seconds.
pub async fn eventually<F, Fut>(secs: u64, what: &str, mut cond: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let start = std::time::Instant::now();
    while !cond().await {
        assert!(
            start.elapsed() < std::time::Duration::from_secs(secs),
            "not within {secs} s: {what}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
}
