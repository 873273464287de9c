//! A scripted Kubernetes API server for the backfill and cluster-report tests: kube's client over a
//! `tower_test` mock service. It is a mock because no API server runs here; each test takes the client's requests
//! one by one, checks them (method, path, query, headers, body) and answers what the API server would.
#![allow(dead_code)]

use std::collections::HashMap;
use std::time::Duration;

use http::{Request, Response, StatusCode};
use kube::client::Body;
use serde_json::{Value, json};
use tower_test::mock::{self, Handle};

pub type ApiHandle = Handle<Request<Body>, Response<Body>>;

pub fn mock_client() -> (kube::Client, ApiHandle) {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let (service, handle) = mock::pair::<Request<Body>, Response<Body>>();
    (kube::Client::new(service, "default"), handle)
}

/// One request as the API server would see it.
#[derive(Debug)]
pub struct Seen {
    pub method: http::Method,
    pub path: String,
    pub query: HashMap<String, String>,
    pub content_type: Option<String>,
    pub body: Value,
    respond: tower_test::mock::SendResponse<Response<Body>>,
}

impl Seen {
    pub fn answer(self, status: StatusCode, body: Value) {
        let bytes = serde_json::to_vec(&body).expect("json");
        let response = Response::builder()
            .status(status)
            .header("content-type", "application/json")
            .body(Body::from(bytes))
            .expect("response");
        self.respond.send_response(response);
    }

    pub fn ok(self, body: Value) {
        self.answer(StatusCode::OK, body);
    }

    pub fn assert(&self, method: &str, path: &str) {
        assert_eq!(self.method.as_str(), method, "{self:?}");
        assert_eq!(self.path, path, "{self:?}");
    }
}

/// The next request, within 10 s (a test never hangs).
pub async fn next(handle: &mut ApiHandle) -> Seen {
    let (req, respond) = tokio::time::timeout(Duration::from_secs(10), handle.next_request())
        .await
        .expect("the client sent no request within 10 s")
        .expect("the client went away");
    let (parts, body) = req.into_parts();
    let bytes = body.collect_bytes().await.expect("request body");
    let body = if bytes.is_empty() {
        Value::Null
    } else {
        serde_json::from_slice(&bytes).expect("the request body is JSON")
    };
    let query = parts
        .uri
        .query()
        .map(|q| {
            url_pairs(q)
                .into_iter()
                .collect::<HashMap<String, String>>()
        })
        .unwrap_or_default();
    Seen {
        method: parts.method,
        path: parts.uri.path().to_string(),
        query,
        content_type: parts
            .headers
            .get(http::header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .map(String::from),
        body,
        respond,
    }
}

fn url_pairs(q: &str) -> Vec<(String, String)> {
    q.split('&')
        .filter(|p| !p.is_empty())
        .map(|p| {
            let (k, v) = p.split_once('=').unwrap_or((p, ""));
            (decode(k), decode(v))
        })
        .collect()
}

fn decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'+' => out.push(b' '),
            b'%' if i + 2 < bytes.len() => {
                let hex = std::str::from_utf8(&bytes[i + 1..i + 3]).expect("utf8");
                out.push(u8::from_str_radix(hex, 16).expect("hex"));
                i += 2;
            }
            b => out.push(b),
        }
        i += 1;
    }
    String::from_utf8(out).expect("utf8")
}

pub fn namespace(name: &str, labels: Value) -> Value {
    json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name, "labels": labels}})
}

pub fn service(ns: &str, name: &str, annotations: Option<Value>, ports: Value) -> Value {
    let mut meta = json!({"name": name, "namespace": ns, "resourceVersion": "100", "uid": format!("uid-{name}")});
    if let Some(a) = annotations {
        meta["annotations"] = a;
    }
    json!({"apiVersion": "v1", "kind": "Service", "metadata": meta, "spec": {"ports": ports}})
}

pub fn grpc_ports() -> Value {
    json!([{"name": "grpc", "port": 50051, "protocol": "TCP"}])
}

/// A list page, with a `continue` token when more follow.
pub fn page(kind: &str, items: Vec<Value>, next: Option<&str>) -> Value {
    let mut meta = json!({"resourceVersion": "500"});
    if let Some(t) = next {
        meta["continue"] = json!(t);
    }
    json!({"apiVersion": "v1", "kind": kind, "metadata": meta, "items": items})
}

/// The API server's answer to a JSON Patch whose `test` op failed: 422 Invalid with a generic message (the
/// patch handler wraps json-patch's error in a generic server response and drops its text).
pub fn failed_test_status() -> Value {
    json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
        "message": "the server rejected our request due to an error in our request",
        "reason": "Invalid", "details": {}, "code": 422})
}

pub fn conflict_status(name: &str) -> Value {
    json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
        "message": format!("Operation cannot be fulfilled on services \"{name}\": the object has been modified; please apply your changes to the latest version and try again"),
        "reason": "Conflict", "details": {"name": name, "kind": "services"}, "code": 409})
}
