//! A stateful, scripted Kubernetes API server for the reconciler's tests and its benchmark: kube's client over a
//! `tower_test` mock service, answered request by request from one shared state (Namespaces, Services, one
//! Lease, Events) the way the API server would: lists with a resourceVersion, watches that return the changes
//! since it (a watch with nothing new waits, then answers and ends, and the watcher watches again), JSON Patches
//! applied with their `test` ops (a failed test is the API server's 422), updates guarded by resourceVersion
//! (409). It is a mock because no API server runs here. Faults are scripted per Service (`fail_next_patch`) and
//! per watch (`drop_next_watch` answers 410 Gone, which makes the watcher list again).
#![allow(dead_code)]

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::{Arc, Mutex};

use http::{Request, Response, StatusCode};
use kube::client::Body;
use serde_json::{Value, json};
use tokio::time::Instant;
use tower_test::mock::{self, Handle, SendResponse};

type ApiHandle = Handle<Request<Body>, Response<Body>>;

/// One PATCH the server received.
#[derive(Debug, Clone)]
pub struct SeenPatch {
    /// Which client (reconciler) sent it.
    pub client: usize,
    pub namespace: String,
    pub name: String,
    pub body: Value,
    pub at: Instant,
    /// The HTTP status answered.
    pub status: u16,
}

/// One Event the server received.
#[derive(Debug, Clone)]
pub struct SeenEvent {
    pub client: usize,
    pub namespace: String,
    pub reason: String,
    pub note: String,
    pub regarding: String,
}

struct Parked {
    resource: &'static str,
    since: u64,
    respond: SendResponse<Response<Body>>,
}

#[derive(Default)]
struct State {
    rv: u64,
    namespaces: BTreeMap<String, Value>,
    services: BTreeMap<(String, String), Value>,
    lease: Option<Value>,
    /// (resourceVersion, resource, type, object)
    log: Vec<(u64, &'static str, &'static str, Value)>,
    parked: Vec<Parked>,
    patches: Vec<SeenPatch>,
    events: Vec<SeenEvent>,
    faults: HashMap<(String, String), VecDeque<u16>>,
    drop_watch: HashMap<&'static str, usize>,
    requests: usize,
    /// Clients cut off: their requests are never answered (a crashed replica).
    dead: Vec<usize>,
    /// Resources every request on which is answered 403 Forbidden (RBAC that does not allow them).
    forbidden: Vec<&'static str>,
}

/// The shared state; clone freely.
#[derive(Clone, Default)]
pub struct FakeApi {
    state: Arc<Mutex<State>>,
}

fn status(code: u16, reason: &str, message: &str) -> Value {
    json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
        "message": message, "reason": reason, "code": code})
}

fn respond(to: SendResponse<Response<Body>>, code: u16, body: Vec<u8>) {
    let response = Response::builder()
        .status(StatusCode::from_u16(code).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR))
        .header("content-type", "application/json")
        .body(Body::from(body))
        .expect("response");
    to.send_response(response);
}

fn json_body(v: &Value) -> Vec<u8> {
    serde_json::to_vec(v).expect("json")
}

fn query(uri: &http::Uri) -> HashMap<String, String> {
    uri.query()
        .unwrap_or_default()
        .split('&')
        .filter(|p| !p.is_empty())
        .map(|p| {
            let (k, v) = p.split_once('=').unwrap_or((p, ""));
            (k.to_string(), v.to_string())
        })
        .collect()
}

impl FakeApi {
    pub fn new() -> Self {
        Self::default()
    }

    /// A kube client whose requests this server answers, tagged `id` in what it records.
    pub fn client(&self, id: usize) -> kube::Client {
        let _ = rustls::crypto::ring::default_provider().install_default();
        let (service, handle) = mock::pair::<Request<Body>, Response<Body>>();
        let me = self.clone();
        tokio::spawn(async move { me.serve(id, handle).await });
        kube::Client::new(service, "default")
    }

    async fn serve(self, id: usize, mut handle: ApiHandle) {
        while let Some((req, send)) = handle.next_request().await {
            let me = self.clone();
            // Each request on its own task: a parked watch never holds up the next request.
            tokio::spawn(async move { me.answer(id, req, send).await });
        }
    }

    fn with<T>(&self, f: impl FnOnce(&mut State) -> T) -> T {
        let mut s = self.state.lock().expect("state");
        f(&mut s)
    }

    /// Cuts a client off: it gets no more answers (a replica that died without releasing its Lease).
    pub fn kill(&self, id: usize) {
        self.with(|s| s.dead.push(id));
    }

    pub fn patches(&self) -> Vec<SeenPatch> {
        self.with(|s| s.patches.clone())
    }

    pub fn events(&self) -> Vec<SeenEvent> {
        self.with(|s| s.events.clone())
    }

    pub fn lease_holder(&self) -> Option<String> {
        self.with(|s| {
            s.lease
                .as_ref()
                .and_then(|l| l["spec"]["holderIdentity"].as_str().map(String::from))
        })
    }

    pub fn service_annotations(&self, ns: &str, name: &str) -> BTreeMap<String, String> {
        self.with(|s| {
            s.services
                .get(&(ns.to_string(), name.to_string()))
                .and_then(|v| serde_json::from_value(v["metadata"]["annotations"].clone()).ok())
                .unwrap_or_default()
        })
    }

    /// The next `n` PATCHes of this Service are answered with these HTTP codes (409, 422, 500...).
    pub fn fail_next_patch(&self, ns: &str, name: &str, codes: &[u16]) {
        self.with(|s| {
            s.faults
                .entry((ns.to_string(), name.to_string()))
                .or_default()
                .extend(codes)
        });
    }

    /// The next `n` watches of `namespaces` or `services` are answered with a 410 Gone ERROR event.
    pub fn drop_next_watch(&self, resource: &'static str, n: usize) {
        self.with(|s| *s.drop_watch.entry(resource).or_default() += n);
    }

    fn record(s: &mut State, resource: &'static str, kind: &'static str, obj: &mut Value) {
        s.rv += 1;
        obj["metadata"]["resourceVersion"] = json!(s.rv.to_string());
        s.log.push((s.rv, resource, kind, obj.clone()));
    }

    /// Adds or replaces a Namespace (labels as a JSON object).
    pub fn put_namespace(&self, name: &str, labels: Value) {
        self.with(|s| {
            let kind = if s.namespaces.contains_key(name) {
                "MODIFIED"
            } else {
                "ADDED"
            };
            let mut obj = json!({"apiVersion": "v1", "kind": "Namespace",
                "metadata": {"name": name, "uid": format!("ns-{name}"), "labels": labels}});
            Self::record(s, "namespaces", kind, &mut obj);
            s.namespaces.insert(name.to_string(), obj);
            Self::wake(s);
        });
    }

    /// Every Service, as stored.
    pub fn services(&self) -> Vec<Value> {
        self.with(|s| s.services.values().cloned().collect())
    }

    /// Answers every request on `resource` (e.g. "namespaces") with 403 Forbidden from now on.
    pub fn forbid(&self, resource: &'static str) {
        self.with(|s| s.forbidden.push(resource));
    }

    /// Adds or replaces a Service with gRPC ports, with these annotations (or none) and labels.
    pub fn put_service(
        &self,
        ns: &str,
        name: &str,
        annotations: Option<Value>,
        labels: Option<Value>,
    ) {
        self.with(|s| {
            let key = (ns.to_string(), name.to_string());
            let kind = if s.services.contains_key(&key) {
                "MODIFIED"
            } else {
                "ADDED"
            };
            let mut obj = json!({"apiVersion": "v1", "kind": "Service",
                "metadata": {"name": name, "namespace": ns, "uid": format!("uid-{ns}-{name}")},
                "spec": {"ports": [{"name": "grpc", "port": 50051, "protocol": "TCP"}]}});
            if let Some(a) = annotations {
                obj["metadata"]["annotations"] = a;
            }
            if let Some(l) = labels {
                obj["metadata"]["labels"] = l;
            }
            Self::record(s, "services", kind, &mut obj);
            s.services.insert(key, obj);
            Self::wake(s);
        });
    }

    fn events_since(s: &State, resource: &str, since: u64) -> Vec<Value> {
        s.log
            .iter()
            .filter(|(rv, r, _, _)| *rv > since && *r == resource)
            .map(|(_, _, t, o)| json!({"type": t, "object": o}))
            .collect()
    }

    fn watch_body(events: &[Value]) -> Vec<u8> {
        let mut out = Vec::new();
        for e in events {
            out.extend(json_body(e));
            out.push(b'\n');
        }
        out
    }

    fn wake(s: &mut State) {
        let parked = std::mem::take(&mut s.parked);
        for p in parked {
            let events = Self::events_since(s, p.resource, p.since);
            if events.is_empty() {
                s.parked.push(p);
            } else {
                respond(p.respond, 200, Self::watch_body(&events));
            }
        }
    }

    async fn answer(self, id: usize, req: Request<Body>, send: SendResponse<Response<Body>>) {
        let (parts, body) = req.into_parts();
        let bytes = body.collect_bytes().await.unwrap_or_default();
        let body: Value = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
        let path = parts.uri.path().to_string();
        let q = query(&parts.uri);
        let method = parts.method.as_str().to_string();
        let segments: Vec<&str> = path.trim_matches('/').split('/').collect();
        if self.with(|s| s.dead.contains(&id)) {
            // Never answered: the caller's future waits (the task owning `send` keeps it alive until dropped).
            std::future::pending::<()>().await;
            drop(send);
            return;
        }
        let mut s = self.state.lock().expect("state");
        s.requests += 1;
        let rest: &[&str] = match segments.as_slice() {
            ["api", _, rest @ ..] | ["apis", _, _, rest @ ..] => rest,
            _ => &[],
        };
        let requested = match rest {
            ["namespaces", _, resource, ..] => *resource,
            [resource, ..] => *resource,
            [] => "",
        };
        if let Some(resource) = s.forbidden.iter().find(|r| **r == requested) {
            let message = format!(
                "{resource} is forbidden: User \"test\" cannot {method} resource \"{resource}\""
            );
            respond(send, 403, json_body(&status(403, "Forbidden", &message)));
            return;
        }
        match (method.as_str(), segments.as_slice()) {
            ("GET", ["api", "v1", resource @ ("namespaces" | "services")]) => {
                let resource: &'static str = if *resource == "namespaces" {
                    "namespaces"
                } else {
                    "services"
                };
                if q.get("watch").map(String::as_str) == Some("true")
                    || q.get("watch").map(String::as_str) == Some("1")
                {
                    if let Some(n) = s.drop_watch.get_mut(resource)
                        && *n > 0
                    {
                        *n -= 1;
                        let gone = json!({"type": "ERROR", "object": status(410, "Expired", "too old resource version")});
                        respond(send, 200, Self::watch_body(&[gone]));
                        return;
                    }
                    let since = q
                        .get("resourceVersion")
                        .and_then(|v| v.parse().ok())
                        .unwrap_or(0);
                    let events = Self::events_since(&s, resource, since);
                    if events.is_empty() {
                        s.parked.push(Parked {
                            resource,
                            since,
                            respond: send,
                        });
                    } else {
                        respond(send, 200, Self::watch_body(&events));
                    }
                    return;
                }
                let (kind, items): (&str, Vec<Value>) = if resource == "namespaces" {
                    ("NamespaceList", s.namespaces.values().cloned().collect())
                } else {
                    ("ServiceList", s.services.values().cloned().collect())
                };
                let list = json!({"apiVersion": "v1", "kind": kind,
                    "metadata": {"resourceVersion": s.rv.to_string()}, "items": items});
                respond(send, 200, json_body(&list));
            }
            ("GET", ["api", "v1", "namespaces", ns, "services", name]) => {
                match s.services.get(&(ns.to_string(), name.to_string())) {
                    Some(v) => respond(send, 200, json_body(v)),
                    None => respond(send, 404, json_body(&status(404, "NotFound", "not found"))),
                }
            }
            ("PATCH", ["api", "v1", "namespaces", ns, "services", name]) => {
                let key = (ns.to_string(), name.to_string());
                let at = Instant::now();
                let forced = s.faults.get_mut(&key).and_then(VecDeque::pop_front);
                let code = if let Some(code) = forced {
                    let st = match code {
                        409 => status(
                            409,
                            "Conflict",
                            "the object has been modified; please apply your changes to the latest version and try again",
                        ),
                        422 => status(
                            422,
                            "Invalid",
                            "the server rejected our request due to an error in our request",
                        ),
                        c => status(c, "InternalError", "an error on the server"),
                    };
                    respond(send, code, json_body(&st));
                    code
                } else if let Some(current) = s.services.get(&key).cloned() {
                    let ops: Result<json_patch::Patch, _> = serde_json::from_value(body.clone());
                    let mut doc = current;
                    match ops
                        .map_err(|e| e.to_string())
                        .and_then(|p| json_patch::patch(&mut doc, &p.0).map_err(|e| e.to_string()))
                    {
                        Ok(()) => {
                            Self::record(&mut s, "services", "MODIFIED", &mut doc);
                            s.services.insert(key.clone(), doc.clone());
                            respond(send, 200, json_body(&doc));
                            Self::wake(&mut s);
                            200
                        }
                        Err(_) => {
                            respond(
                                send,
                                422,
                                json_body(&status(
                                    422,
                                    "Invalid",
                                    "the server rejected our request due to an error in our request",
                                )),
                            );
                            422
                        }
                    }
                } else {
                    respond(send, 404, json_body(&status(404, "NotFound", "not found")));
                    404
                };
                s.patches.push(SeenPatch {
                    client: id,
                    namespace: ns.to_string(),
                    name: name.to_string(),
                    body,
                    at,
                    status: code,
                });
            }
            ("POST", ["apis", "events.k8s.io", "v1", "namespaces", ns, "events"]) => {
                s.events.push(SeenEvent {
                    client: id,
                    namespace: ns.to_string(),
                    reason: body["reason"].as_str().unwrap_or_default().to_string(),
                    note: body["note"].as_str().unwrap_or_default().to_string(),
                    regarding: body["regarding"]["name"]
                        .as_str()
                        .unwrap_or_default()
                        .to_string(),
                });
                respond(send, 201, json_body(&body));
            }
            (
                "GET",
                [
                    "apis",
                    "coordination.k8s.io",
                    "v1",
                    "namespaces",
                    _,
                    "leases",
                    _,
                ],
            ) => match &s.lease {
                Some(l) => respond(send, 200, json_body(l)),
                None => respond(send, 404, json_body(&status(404, "NotFound", "not found"))),
            },
            (
                "POST",
                [
                    "apis",
                    "coordination.k8s.io",
                    "v1",
                    "namespaces",
                    _,
                    "leases",
                ],
            ) => {
                if s.lease.is_some() {
                    respond(
                        send,
                        409,
                        json_body(&status(409, "AlreadyExists", "exists")),
                    );
                } else {
                    let mut l = body;
                    s.rv += 1;
                    l["metadata"]["resourceVersion"] = json!(s.rv.to_string());
                    s.lease = Some(l.clone());
                    respond(send, 201, json_body(&l));
                }
            }
            (
                "PUT",
                [
                    "apis",
                    "coordination.k8s.io",
                    "v1",
                    "namespaces",
                    _,
                    "leases",
                    _,
                ],
            ) => {
                let current = s
                    .lease
                    .as_ref()
                    .map(|l| l["metadata"]["resourceVersion"].clone());
                if current.as_ref() != Some(&body["metadata"]["resourceVersion"]) {
                    respond(
                        send,
                        409,
                        json_body(&status(409, "Conflict", "the object has been modified")),
                    );
                } else {
                    let mut l = body;
                    s.rv += 1;
                    l["metadata"]["resourceVersion"] = json!(s.rv.to_string());
                    s.lease = Some(l.clone());
                    respond(send, 200, json_body(&l));
                }
            }
            _ => respond(
                send,
                404,
                json_body(&status(
                    404,
                    "NotFound",
                    &format!("{method} {path}: not in this fake"),
                )),
            ),
        }
    }
}
