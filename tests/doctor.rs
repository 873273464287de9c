//! `lb-l7-webhook doctor` against a fake Kubernetes API server.
//!
//! No API server can run on this machine, so these tests put kube-rs's client in front of a **mock**:
//! `tower_test::mock::pair` (as kube-rs controller-rs `src/fixtures.rs` does), answered by a small in-memory fake
//! that serves get and list (with `labelSelector`, `limit` and `continue`) for the objects each test puts in it,
//! 404 for anything else, and 403 for the resources a test forbids. Every request goes through the doctor's real
//! fetch layer; each test then asserts what an admin would read in the report.
//!
//! For each check there is an ok path (the healthy cluster) and a fail path (or, for the checks that only ever
//! warn, a warn path).

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex};

use http::{Request, Response, StatusCode};
use k8s_openapi::api::admissionregistration::v1::MutatingWebhookConfiguration;
use kube::client::Body;
use lb_l7_core::policy::{DEFAULT_POLICY_YAML, Policy};
use lb_l7_core::render::{CaSource, RenderOptions, render_webhook_configuration};
use lb_l7_webhook::doctor::{self, DiagnoseOptions, FetchError, Output, Report, Status};
use serde_json::{Value, json};

/// 2030-01-01T00:00:00Z: the tests' "now", so certificate expiry is deterministic.
const NOW: i64 = 1_893_456_000;
const DAY: i64 = 86_400;

// ---------------------------------------------------------------------------------------------------------------
// The fake API server

/// Objects by resource plural; `None` for a resource type the server does not know (a CRD that is not installed).
#[derive(Clone, Default)]
struct Fake {
    resources: BTreeMap<&'static str, Vec<Value>>,
    /// Resource plurals answered with 403 Forbidden.
    forbidden: BTreeSet<&'static str>,
    /// Answer every request with 401 Unauthorized.
    unauthorized: bool,
    /// Drop every request without an answer (a broken connection).
    hang_up: bool,
    /// Answer creates (the probe's dry-run create) with 403 Forbidden.
    forbid_create: bool,
    /// Namespaces where a created Service comes back annotated, as if the webhook had been called (the webhook
    /// is not in the loop here: the fake plays the API server after admission).
    webhook_annotates: BTreeSet<String>,
}

impl Fake {
    fn put(&mut self, plural: &'static str, obj: Value) {
        self.resources.entry(plural).or_default().push(obj);
    }

    fn set(&mut self, plural: &'static str, objs: Vec<Value>) {
        self.resources.insert(plural, objs);
    }

    fn remove_named(&mut self, plural: &'static str, name: &str) {
        if let Some(objs) = self.resources.get_mut(plural) {
            objs.retain(|o| o["metadata"]["name"] != name);
        }
    }

    fn get_mut(&mut self, plural: &'static str, name: &str) -> &mut Value {
        self.resources
            .get_mut(plural)
            .and_then(|objs| objs.iter_mut().find(|o| o["metadata"]["name"] == name))
            .unwrap_or_else(|| panic!("fixture has no {plural}/{name}"))
    }

    /// A create (POST) or patch: the probe's dry-run create of a Service, the backfill's patches.
    fn write(&self, method: &str, path: &str, query: &str, body: Value) -> (StatusCode, Value) {
        let segs: Vec<&str> = path.trim_start_matches('/').split('/').collect();
        let ["api", "v1", "namespaces", ns, "services", rest @ ..] = segs.as_slice() else {
            return status(
                StatusCode::METHOD_NOT_ALLOWED,
                "MethodNotAllowed",
                "not served by the fake",
            );
        };
        assert!(
            url_params(query).get("dryRun").map(String::as_str) == Some("All"),
            "every write in these tests is a dry run: {method} {path}?{query}"
        );
        if method == "POST" {
            if self.forbid_create {
                return status(
                    StatusCode::FORBIDDEN,
                    "Forbidden",
                    &format!(
                        "services is forbidden: User \"system:serviceaccount:lb-l7-system:lb-l7-webhook-doctor\" cannot create resource \"services\" in the namespace \"{ns}\""
                    ),
                );
            }
            if !self.resources["namespaces"]
                .iter()
                .any(|n| n["metadata"]["name"] == *ns)
            {
                return not_found(path);
            }
            let mut obj = body;
            let generated = format!(
                "{}x7k2p",
                obj["metadata"]["generateName"].as_str().unwrap_or("")
            );
            obj["metadata"]["name"] = json!(generated);
            if self.webhook_annotates.contains(*ns) {
                obj["metadata"]["annotations"] = json!({ "service.cilium.io/lb-l7": "enabled" });
            }
            return (StatusCode::CREATED, obj);
        }
        match rest.first() {
            Some(name) => self.answer(&format!("/api/v1/namespaces/{ns}/services/{name}"), ""),
            None => not_found(path),
        }
    }

    fn answer(&self, path: &str, query: &str) -> (StatusCode, Value) {
        let segs: Vec<&str> = path.trim_start_matches('/').split('/').collect();
        let rest = match segs.as_slice() {
            ["api", "v1", rest @ ..] => rest,
            ["apis", _group, _version, rest @ ..] => rest,
            _ => return not_found(path),
        };
        let (namespace, plural, name) = match rest {
            ["namespaces", ns, plural, tail @ ..] => (Some(*ns), *plural, tail.first().copied()),
            [plural, tail @ ..] => (None, *plural, tail.first().copied()),
            [] => return not_found(path),
        };
        if self.unauthorized {
            return status(StatusCode::UNAUTHORIZED, "Unauthorized", "Unauthorized");
        }
        if self.forbidden.contains(plural) {
            return status(
                StatusCode::FORBIDDEN,
                "Forbidden",
                &format!(
                    "{plural} is forbidden: User \"system:serviceaccount:lb-l7-system:doctor\" cannot list resource \"{plural}\""
                ),
            );
        }
        let Some(objs) = self.resources.get(plural) else {
            return not_found(path);
        };
        let in_ns = |o: &&Value| namespace.is_none_or(|ns| o["metadata"]["namespace"] == ns);
        if let Some(name) = name {
            return match objs
                .iter()
                .filter(in_ns)
                .find(|o| o["metadata"]["name"] == name)
            {
                Some(o) => (StatusCode::OK, o.clone()),
                None => not_found(path),
            };
        }
        let params: BTreeMap<String, String> = url_params(query);
        let selected: Vec<Value> = objs
            .iter()
            .filter(in_ns)
            .filter(|o| match params.get("labelSelector") {
                Some(sel) => sel.split(',').all(|req| match req.split_once('=') {
                    Some((k, v)) => o["metadata"]["labels"][k] == v,
                    // `key`: the label exists.
                    None => !o["metadata"]["labels"][req].is_null(),
                }),
                None => true,
            })
            .cloned()
            .collect();
        let start: usize = params
            .get("continue")
            .and_then(|c| c.parse().ok())
            .unwrap_or(0);
        let limit: usize = params
            .get("limit")
            .and_then(|l| l.parse().ok())
            .unwrap_or(usize::MAX);
        let end = start.saturating_add(limit).min(selected.len());
        let mut metadata = json!({ "resourceVersion": "1" });
        if end < selected.len() {
            metadata["continue"] = json!(end.to_string());
        }
        (
            StatusCode::OK,
            json!({ "apiVersion": "v1", "kind": "List", "metadata": metadata, "items": selected[start..end] }),
        )
    }
}

fn url_params(query: &str) -> BTreeMap<String, String> {
    query
        .split('&')
        .filter_map(|kv| kv.split_once('='))
        .map(|(k, v)| (k.to_string(), percent_decode(v)))
        .collect()
}

fn percent_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::new();
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%'
            && i + 2 < bytes.len()
            && let Ok(b) = u8::from_str_radix(&s[i + 1..i + 3], 16)
        {
            out.push(b);
            i += 3;
        } else {
            out.push(if bytes[i] == b'+' { b' ' } else { bytes[i] });
            i += 1;
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn status(code: StatusCode, reason: &str, message: &str) -> (StatusCode, Value) {
    (
        code,
        json!({ "kind": "Status", "apiVersion": "v1", "status": "Failure", "message": message,
                "reason": reason, "code": code.as_u16() }),
    )
}

fn not_found(path: &str) -> (StatusCode, Value) {
    status(
        StatusCode::NOT_FOUND,
        "NotFound",
        &format!("{path} not found"),
    )
}

/// The requests the doctor made: (method, path?query).
type Log = Arc<Mutex<Vec<(String, String)>>>;

/// A kube client whose every request is answered by `fake`, through kube's tower-test mock.
fn client(fake: Fake) -> (kube::Client, Log) {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let (service, mut handle) = tower_test::mock::pair::<Request<Body>, Response<Body>>();
    let log: Log = Arc::default();
    let seen = log.clone();
    tokio::spawn(async move {
        while let Some((request, send)) = handle.next_request().await {
            let path = request.uri().path().to_string();
            let query = request.uri().query().unwrap_or("").to_string();
            let method = request.method().to_string();
            seen.lock()
                .expect("log lock")
                .push((method.clone(), format!("{path}?{query}")));
            if fake.hang_up {
                drop(send);
                continue;
            }
            let (code, body) = if method == "GET" {
                fake.answer(&path, &query)
            } else {
                let bytes = request
                    .into_body()
                    .collect_bytes()
                    .await
                    .expect("request body");
                let body = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
                fake.write(&method, &path, &query, body)
            };
            let response = Response::builder()
                .status(code)
                .header("content-type", "application/json")
                .body(Body::from(serde_json::to_vec(&body).expect("json")))
                .expect("response");
            send.send_response(response);
        }
    });
    (kube::Client::new(service, "default"), log)
}

fn options() -> DiagnoseOptions {
    DiagnoseOptions::at(NOW)
}

/// Runs the doctor over the fake, bounded in time.
async fn examine_with(fake: Fake, opts: DiagnoseOptions) -> (Result<Report, FetchError>, Log) {
    let (client, log) = client(fake);
    let report = tokio::time::timeout(
        std::time::Duration::from_secs(20),
        doctor::examine(&client, &opts),
    )
    .await
    .expect("the doctor finished");
    (report, log)
}

async fn examine(fake: Fake) -> Report {
    examine_with(fake, options())
        .await
        .0
        .expect("the doctor ran")
}

#[track_caller]
fn check<'a>(report: &'a Report, id: &str) -> &'a doctor::Check {
    report
        .get(id)
        .unwrap_or_else(|| panic!("no check {id} in {:#?}", report.checks))
}

#[track_caller]
fn assert_status(report: &Report, id: &str, want: Status, message_has: &str) {
    let c = check(report, id);
    assert_eq!(c.status, want, "{id}: {c:#?}");
    assert!(
        c.message.contains(message_has),
        "{id}: message {:?} lacks {message_has:?}",
        c.message
    );
    if want == Status::Ok {
        assert!(c.fix.is_none(), "{id}: an ok check has no fix: {c:#?}");
    } else {
        assert!(
            c.fix.as_deref().is_some_and(|f| !f.is_empty()),
            "{id}: a {want} check names a fix: {c:#?}"
        );
    }
}

// ---------------------------------------------------------------------------------------------------------------
// Fixtures: a healthy cluster

fn ca_pem(not_before: i64, not_after: i64) -> String {
    let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).expect("params");
    params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    params
        .distinguished_name
        .push(rcgen::DnType::CommonName, "lb-l7-webhook test CA");
    params.not_before = time::OffsetDateTime::from_unix_timestamp(not_before).expect("time");
    params.not_after = time::OffsetDateTime::from_unix_timestamp(not_after).expect("time");
    let key = rcgen::KeyPair::generate().expect("key");
    params.self_signed(&key).expect("self-signed").pem()
}

fn webhook_configuration(policy: &Policy, ca: Vec<u8>) -> Value {
    let mwc: MutatingWebhookConfiguration = render_webhook_configuration(
        policy,
        &RenderOptions {
            ca: CaSource::Bundle(ca),
            ..RenderOptions::default()
        },
    );
    let mut v = serde_json::to_value(mwc).expect("mwc json");
    v["apiVersion"] = json!("admissionregistration.k8s.io/v1");
    v["kind"] = json!("MutatingWebhookConfiguration");
    v
}

fn service(ns: &str, name: &str, ports: Value, annotations: Value) -> Value {
    json!({
        "apiVersion": "v1", "kind": "Service",
        "metadata": { "name": name, "namespace": ns, "annotations": annotations },
        "spec": { "type": "ClusterIP", "clusterIP": "10.96.0.10", "ports": ports },
    })
}

fn grpc_port() -> Value {
    json!([{ "name": "grpc", "port": 50051, "targetPort": 50051, "protocol": "TCP" }])
}

fn enabled() -> Value {
    json!({ "service.cilium.io/lb-l7": "enabled" })
}

/// The CiliumEnvoyConfig Cilium's operator makes for a Service: `cilium-envoy-lb-<svc>`, controlled by the Service,
/// listing it in `spec.services`.
fn cec(ns: &str, name: &str) -> Value {
    let svc = name.strip_prefix("cilium-envoy-lb-").unwrap_or(name);
    json!({ "apiVersion": "cilium.io/v2", "kind": "CiliumEnvoyConfig",
            "metadata": { "name": name, "namespace": ns,
                          "ownerReferences": [{ "apiVersion": "v1", "kind": "Service", "name": svc,
                                                "uid": format!("uid-{svc}"), "controller": true,
                                                "blockOwnerDeletion": true }] },
            "spec": { "services": [{ "name": svc, "namespace": ns }], "resources": [] } })
}

fn namespace(name: &str, labels: Value) -> Value {
    json!({ "apiVersion": "v1", "kind": "Namespace", "metadata": { "name": name, "labels": labels } })
}

fn endpoint_slice(ready: Option<bool>) -> Value {
    let conditions = match ready {
        Some(r) => json!({ "ready": r }),
        None => json!({}),
    };
    json!({
        "apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice",
        "metadata": { "name": "lb-l7-webhook-abcde", "namespace": "lb-l7-system",
                      "labels": { "kubernetes.io/service-name": "lb-l7-webhook" } },
        "addressType": "IPv4",
        "endpoints": [ { "addresses": ["127.0.0.1"], "conditions": conditions } ],
        "ports": [ { "name": "https", "port": 8443, "protocol": "TCP" } ],
    })
}

fn cilium_config(data: Value) -> Value {
    json!({ "apiVersion": "v1", "kind": "ConfigMap",
            "metadata": { "name": "cilium-config", "namespace": "kube-system" }, "data": data })
}

fn healthy_cilium_data() -> Value {
    json!({ "loadbalancer-l7": "envoy", "enable-envoy-config": "true", "kube-proxy-replacement": "true",
            "loadbalancer-l7-algorithm": "round_robin" })
}

/// The name kustomize's configMapGenerator gives the policy ConfigMap in the healthy fixture.
const POLICY_CM: &str = "lb-l7-webhook-policy-7g9k2m5f8t";

/// The policy ConfigMap the healthy fixture's Deployment mounts.
fn policy_configmap(text: &str) -> Value {
    generated_policy_configmap(POLICY_CM, "2029-06-01T00:00:00Z", text)
}

/// The webhook's Service (deploy/base/service.yaml).
fn webhook_service() -> Value {
    json!({
        "apiVersion": "v1", "kind": "Service",
        "metadata": { "name": "lb-l7-webhook", "namespace": "lb-l7-system",
                      "labels": { "app.kubernetes.io/name": "lb-l7-webhook" } },
        "spec": { "type": "ClusterIP", "clusterIP": "10.96.0.20",
                  "selector": { "app.kubernetes.io/name": "lb-l7-webhook" },
                  "ports": [{ "name": "https", "port": 443, "targetPort": "https", "protocol": "TCP" }] },
    })
}

/// The webhook's Deployment as deploy/base ships it (read from the file), with the policy ConfigMap's name as
/// kustomize's configMapGenerator rewrites it (`lb-l7-webhook-policy` -> `configmap`).
fn kustomize_deployment(configmap: &str) -> Value {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/deploy/base/deployment.yaml");
    let text = std::fs::read_to_string(path).expect("deploy/base/deployment.yaml");
    let mut d: Value = serde_saphyr::from_str(&text).expect("deployment YAML");
    let volumes = d["spec"]["template"]["spec"]["volumes"]
        .as_array_mut()
        .expect("volumes");
    let policy = volumes
        .iter_mut()
        .find(|v| v["name"] == "policy")
        .expect("policy volume");
    policy["configMap"]["name"] = json!(configmap);
    d
}

fn generated_policy_configmap(name: &str, created: &str, text: &str) -> Value {
    json!({ "apiVersion": "v1", "kind": "ConfigMap",
            "metadata": { "name": name, "namespace": "lb-l7-system", "creationTimestamp": created },
            "data": { "policy.yaml": text } })
}

/// Cilium set up for L7, the webhook installed from the default policy with a valid CA and a ready pod, and one
/// annotated gRPC Service with its CiliumEnvoyConfig.
fn healthy() -> Fake {
    let mut f = Fake::default();
    f.put("configmaps", cilium_config(healthy_cilium_data()));
    f.put("configmaps", policy_configmap(DEFAULT_POLICY_YAML));
    f.put("deployments", kustomize_deployment(POLICY_CM));
    f.put("services", webhook_service());
    f.put(
        "customresourcedefinitions",
        json!({ "apiVersion": "apiextensions.k8s.io/v1", "kind": "CustomResourceDefinition",
                "metadata": { "name": "ciliumenvoyconfigs.cilium.io" } }),
    );
    let ca = ca_pem(NOW - 10 * DAY, NOW + 365 * DAY);
    f.put(
        "mutatingwebhookconfigurations",
        webhook_configuration(&Policy::default(), ca.into_bytes()),
    );
    f.put("endpointslices", endpoint_slice(Some(true)));
    f.put(
        "namespaces",
        namespace("apps", json!({ "lb-l7-webhook/enabled": "true" })),
    );
    f.put("namespaces", namespace("kube-system", json!({})));
    f.put("namespaces", namespace("lb-l7-system", json!({})));
    f.put(
        "services",
        service("apps", "greeter", grpc_port(), enabled()),
    );
    f.put(
        "services",
        service(
            "apps",
            "web",
            json!([{ "name": "http", "port": 80, "targetPort": 80 }]),
            json!({}),
        ),
    );
    f.put("ciliumenvoyconfigs", cec("apps", "cilium-envoy-lb-greeter"));
    f
}

const ALL_CHECKS: [&str; 16] = [
    "cilium.loadbalancer-l7",
    "cilium.envoy-config",
    "cilium.kube-proxy-replacement",
    "cilium.envoy-config-crd",
    "cilium.loadbalancer-l7-ports",
    "webhook.configuration",
    "webhook.ca-bundle",
    "webhook.endpoints",
    "webhook.failure-policy",
    "webhook.timeout",
    "webhook.policy",
    "webhook.drift",
    "effect.envoy-configs",
    "effect.legacy-annotation",
    "effect.annotation-value",
    "effect.pitfalls",
];

// ---------------------------------------------------------------------------------------------------------------
// The healthy cluster: every check ok, exit 0, and the doctor only reads

#[tokio::test]
async fn healthy_cluster_is_all_ok_and_only_read() {
    let (report, log) = examine_with(healthy(), options()).await;
    let report = report.expect("the doctor ran");
    for id in ALL_CHECKS.iter().chain(["effect.not-annotated"].iter()) {
        assert_eq!(
            check(&report, id).status,
            Status::Ok,
            "{:#?}",
            check(&report, id)
        );
    }
    assert_eq!(report.summary.fail, 0);
    assert_eq!(report.summary.warn, 0);
    assert_eq!(doctor::exit_code(&report), std::process::ExitCode::SUCCESS);
    assert_status(
        &report,
        "webhook.endpoints",
        Status::Ok,
        "lb-l7-system/lb-l7-webhook has 1 ready endpoint",
    );
    assert_status(
        &report,
        "webhook.ca-bundle",
        Status::Ok,
        "valid until 2031-01-01",
    );
    assert_status(
        &report,
        "effect.envoy-configs",
        Status::Ok,
        "1 Service annotated",
    );

    let log = log.lock().expect("log").clone();
    assert!(
        log.iter().all(|(method, _)| method == "GET"),
        "the doctor only reads: {log:?}"
    );
    let paths: Vec<&str> = log.iter().map(|(_, p)| p.as_str()).collect();
    for want in [
        "/api/v1/namespaces/kube-system/configmaps/cilium-config?",
        "/apis/apiextensions.k8s.io/v1/customresourcedefinitions/ciliumenvoyconfigs.cilium.io?",
        "/apis/admissionregistration.k8s.io/v1/mutatingwebhookconfigurations/lb-l7-webhook?",
        "/api/v1/namespaces/lb-l7-system/services/lb-l7-webhook?",
        "/api/v1/namespaces/lb-l7-system/configmaps/lb-l7-webhook-policy-7g9k2m5f8t?",
    ] {
        assert!(paths.contains(&want), "{want} not requested: {paths:?}");
    }
    assert!(
        paths.iter().any(|p| p
            .starts_with("/apis/discovery.k8s.io/v1/namespaces/lb-l7-system/endpointslices?")
            && p.contains("labelSelector=kubernetes.io%2Fservice-name%3Dlb-l7-webhook")),
        "EndpointSlices listed by the service-name label: {paths:?}"
    );
    assert!(
        paths
            .iter()
            .any(|p| p.starts_with("/apis/cilium.io/v2/ciliumenvoyconfigs?")),
        "CiliumEnvoyConfigs listed cluster-wide: {paths:?}"
    );
}

// ---------------------------------------------------------------------------------------------------------------
// Cilium

#[tokio::test]
async fn cilium_config_keys_fail_when_l7_is_not_set_up() {
    let mut f = healthy();
    f.get_mut("configmaps", "cilium-config")["data"] = json!({
        "loadbalancer-l7": "disabled", "enable-envoy-config": "false",
    });
    let report = examine(f).await;
    assert_status(
        &report,
        "cilium.loadbalancer-l7",
        Status::Fail,
        "loadbalancer-l7 is \"disabled\"",
    );
    assert!(
        check(&report, "cilium.loadbalancer-l7")
            .fix
            .as_deref()
            .is_some_and(|f| f.contains("loadBalancer.l7.backend=envoy"))
    );
    assert_status(
        &report,
        "cilium.envoy-config",
        Status::Fail,
        "enable-envoy-config is \"false\"",
    );
    assert_status(
        &report,
        "cilium.kube-proxy-replacement",
        Status::Fail,
        "kube-proxy-replacement is not set",
    );
    assert!(
        check(&report, "cilium.kube-proxy-replacement")
            .fix
            .as_deref()
            .is_some_and(|f| f.contains("kubeProxyReplacement=true"))
    );
    assert!(report.failed());
    assert_eq!(doctor::exit_code(&report), std::process::ExitCode::from(1));
}

#[tokio::test]
async fn older_cilium_strict_kube_proxy_replacement_is_accepted() {
    let mut f = healthy();
    f.get_mut("configmaps", "cilium-config")["data"]["kube-proxy-replacement"] = json!("strict");
    let report = examine(f).await;
    assert_status(
        &report,
        "cilium.kube-proxy-replacement",
        Status::Ok,
        "before Cilium 1.14",
    );
}

#[tokio::test]
async fn missing_cilium_config_is_one_clear_failure() {
    let mut f = healthy();
    f.remove_named("configmaps", "cilium-config");
    let report = examine(f).await;
    assert_status(
        &report,
        "cilium.config",
        Status::Fail,
        "is Cilium installed",
    );
    assert!(
        report.get("cilium.loadbalancer-l7").is_none(),
        "no per-key noise when the ConfigMap is missing"
    );
    assert!(report.failed());
}

#[tokio::test]
async fn forbidden_reads_are_failed_checks_with_an_rbac_fix_not_an_error_exit() {
    let mut f = healthy();
    f.forbidden.insert("configmaps");
    f.forbidden.insert("ciliumenvoyconfigs");
    let report = examine(f).await;
    assert_status(&report, "cilium.config", Status::Fail, "forbidden");
    assert!(
        check(&report, "cilium.config")
            .fix
            .as_deref()
            .is_some_and(|f| f.contains("deploy/doctor"))
    );
    assert_status(&report, "webhook.policy", Status::Fail, "HTTP 403");
    assert_status(
        &report,
        "effect.envoy-configs",
        Status::Fail,
        "cannot list CiliumEnvoyConfigs",
    );
}

#[tokio::test]
async fn unreadable_services_fail_the_effect_checks_with_an_rbac_fix() {
    let mut f = healthy();
    f.forbidden.insert("services");
    let report = examine(f).await;
    assert_status(
        &report,
        "effect.services",
        Status::Fail,
        "cannot list Services",
    );
    assert!(report.get("effect.envoy-configs").is_none());
}

#[tokio::test]
async fn missing_envoy_config_crd_fails_with_a_fix_not_an_error() {
    let mut f = healthy();
    f.set("customresourcedefinitions", vec![]);
    // Without the CRD the API server answers 404 for the whole resource type.
    f.resources.remove("ciliumenvoyconfigs");
    let report = examine(f).await;
    assert_status(
        &report,
        "cilium.envoy-config-crd",
        Status::Fail,
        "ciliumenvoyconfigs.cilium.io not found",
    );
    assert!(
        check(&report, "cilium.envoy-config-crd")
            .fix
            .as_deref()
            .is_some_and(|f| f.contains("envoyConfig.enabled=true"))
    );
    assert_status(
        &report,
        "effect.envoy-configs",
        Status::Fail,
        "annotated but Cilium made no Envoy config",
    );
    assert_status(
        &report,
        "effect.envoy-configs",
        Status::Fail,
        "CRD is not installed",
    );
    assert_eq!(
        check(&report, "effect.envoy-configs").objects,
        vec!["apps/greeter"]
    );
}

#[tokio::test]
async fn l7_ports_warns_and_names_the_services_it_catches() {
    let mut f = healthy();
    f.get_mut("configmaps", "cilium-config")["data"]["loadbalancer-l7-ports"] = json!("50051 8080");
    f.put(
        "services",
        service(
            "other",
            "legacy-api",
            json!([{ "name": "api", "port": 8080 }]),
            json!({ "service.cilium.io/lb-l7": "disabled" }),
        ),
    );
    let report = examine(f).await;
    assert_status(
        &report,
        "cilium.loadbalancer-l7-ports",
        Status::Warn,
        "annotation cannot turn this off",
    );
    let c = check(&report, "cilium.loadbalancer-l7-ports");
    assert_eq!(
        c.objects,
        vec!["apps/greeter (50051)", "other/legacy-api (8080)"]
    );
    assert!(c.message.contains("2 Services"), "{c:#?}");
    assert!(!report.failed(), "a warning alone does not fail the run");
    assert_eq!(doctor::exit_code(&report), std::process::ExitCode::SUCCESS);
}

// ---------------------------------------------------------------------------------------------------------------
// The webhook

#[tokio::test]
async fn missing_webhook_configuration_fails() {
    let mut f = healthy();
    f.set("mutatingwebhookconfigurations", vec![]);
    let report = examine(f).await;
    assert_status(
        &report,
        "webhook.configuration",
        Status::Fail,
        "never calls the webhook",
    );
    for id in ["webhook.ca-bundle", "webhook.endpoints", "webhook.drift"] {
        assert!(report.get(id).is_none(), "{id} needs the configuration");
    }
}

#[tokio::test]
async fn webhook_name_flag_is_used() {
    let mut opts = options();
    opts.webhook_name = "renamed".into();
    let (report, log) = examine_with(healthy(), opts).await;
    let report = report.expect("ran");
    assert_status(
        &report,
        "webhook.configuration",
        Status::Fail,
        "MutatingWebhookConfiguration renamed not found",
    );
    let log = log.lock().expect("log").clone();
    assert!(
        log.iter()
            .any(|(_, p)| p.ends_with("/mutatingwebhookconfigurations/renamed?")),
        "{log:?}"
    );
}

fn set_ca(f: &mut Fake, pem: &str) {
    let mwc = f.get_mut("mutatingwebhookconfigurations", "lb-l7-webhook");
    mwc["webhooks"][0]["clientConfig"]["caBundle"] = json!(base64_encode(pem.as_bytes()));
}

fn base64_encode(bytes: &[u8]) -> String {
    use base64::Engine as _;
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

#[tokio::test]
async fn expired_ca_bundle_fails() {
    let mut f = healthy();
    set_ca(&mut f, &ca_pem(NOW - 400 * DAY, NOW - 2 * DAY));
    let report = examine(f).await;
    assert_status(
        &report,
        "webhook.ca-bundle",
        Status::Fail,
        "expired on 2029-12-30",
    );
}

#[tokio::test]
async fn ca_bundle_expiring_within_30_days_warns() {
    let mut f = healthy();
    set_ca(&mut f, &ca_pem(NOW - 300 * DAY, NOW + 12 * DAY));
    let report = examine(f).await;
    assert_status(
        &report,
        "webhook.ca-bundle",
        Status::Warn,
        "expires within 30 days",
    );
    assert_status(&report, "webhook.ca-bundle", Status::Warn, "(12 days)");
}

#[tokio::test]
async fn unparsable_or_empty_ca_bundle_fails() {
    let mut f = healthy();
    set_ca(
        &mut f,
        "-----BEGIN CERTIFICATE-----\nbm90IGEgY2VydA==\n-----END CERTIFICATE-----\n",
    );
    let report = examine(f).await;
    assert_status(&report, "webhook.ca-bundle", Status::Fail, "does not parse");

    let mut f = healthy();
    let mwc = f.get_mut("mutatingwebhookconfigurations", "lb-l7-webhook");
    mwc["webhooks"][0]["clientConfig"]
        .as_object_mut()
        .expect("clientConfig")
        .remove("caBundle");
    let report = examine(f).await;
    assert_status(
        &report,
        "webhook.ca-bundle",
        Status::Fail,
        "caBundle is empty",
    );
}

#[tokio::test]
async fn webhook_without_ready_endpoints_fails() {
    let mut f = healthy();
    f.set("endpointslices", vec![endpoint_slice(Some(false))]);
    let report = examine(f).await;
    assert_status(
        &report,
        "webhook.endpoints",
        Status::Fail,
        "has no ready endpoints",
    );

    let mut f = healthy();
    f.set("endpointslices", vec![]);
    let report = examine(f).await;
    assert_status(
        &report,
        "webhook.endpoints",
        Status::Fail,
        "has no EndpointSlices",
    );
    assert_eq!(
        check(&report, "webhook.endpoints").objects,
        vec!["lb-l7-system/lb-l7-webhook"]
    );
}

#[tokio::test]
async fn endpoint_without_ready_condition_counts_as_ready() {
    let mut f = healthy();
    f.set("endpointslices", vec![endpoint_slice(None)]);
    let report = examine(f).await;
    assert_status(&report, "webhook.endpoints", Status::Ok, "1 ready endpoint");
}

#[tokio::test]
async fn failure_policy_fail_and_long_timeout_warn() {
    let mut f = healthy();
    let mwc = f.get_mut("mutatingwebhookconfigurations", "lb-l7-webhook");
    mwc["webhooks"][0]["failurePolicy"] = json!("Fail");
    mwc["webhooks"][0]["timeoutSeconds"] = json!(30);
    let report = examine(f).await;
    assert_status(
        &report,
        "webhook.failure-policy",
        Status::Warn,
        "rejects Service writes whenever the webhook is down",
    );
    assert_status(&report, "webhook.timeout", Status::Warn, "(30s)");
    // The policy renders Ignore and 5 s, so the live configuration has also drifted.
    assert_status(
        &report,
        "webhook.drift",
        Status::Fail,
        "failurePolicy, timeoutSeconds",
    );

    let mut f = healthy();
    let mwc = f.get_mut("mutatingwebhookconfigurations", "lb-l7-webhook");
    mwc["webhooks"][0]
        .as_object_mut()
        .expect("webhook")
        .remove("failurePolicy");
    let report = examine(f).await;
    assert_status(
        &report,
        "webhook.failure-policy",
        Status::Warn,
        "unset, so Fail",
    );
}

#[tokio::test]
async fn selectors_that_drift_from_the_policy_fail() {
    // The live configuration selects opted-in namespaces, but the policy in the ConfigMap now says cluster-wide.
    let mut f = healthy();
    let cluster = DEFAULT_POLICY_YAML.replace("scope: namespace-opt-in", "scope: cluster");
    assert_ne!(cluster, DEFAULT_POLICY_YAML);
    f.set(
        "configmaps",
        vec![
            cilium_config(healthy_cilium_data()),
            policy_configmap(&cluster),
        ],
    );
    let report = examine(f).await;
    assert_status(&report, "webhook.drift", Status::Fail, "namespaceSelector");
    assert!(
        !check(&report, "webhook.drift")
            .message
            .contains("objectSelector")
    );

    // Someone removed the objectSelector and the matchConditions by hand.
    let mut f = healthy();
    let mwc = f.get_mut("mutatingwebhookconfigurations", "lb-l7-webhook");
    let hook = mwc["webhooks"][0].as_object_mut().expect("webhook");
    hook.remove("objectSelector");
    hook.remove("matchConditions");
    let report = examine(f).await;
    assert_status(
        &report,
        "webhook.drift",
        Status::Fail,
        "objectSelector, matchConditions",
    );
}

#[tokio::test]
async fn reordered_selector_values_are_not_drift() {
    let mut f = healthy();
    let mwc = f.get_mut("mutatingwebhookconfigurations", "lb-l7-webhook");
    let exprs = mwc["webhooks"][0]["namespaceSelector"]["matchExpressions"]
        .as_array_mut()
        .expect("expressions");
    exprs.reverse();
    for e in exprs.iter_mut() {
        if let Some(values) = e["values"].as_array_mut() {
            values.reverse();
        }
    }
    let report = examine(f).await;
    assert_status(
        &report,
        "webhook.drift",
        Status::Ok,
        "match what the policy renders",
    );
}

#[tokio::test]
async fn missing_or_invalid_policy_configmap_fails() {
    let mut f = healthy();
    f.remove_named("configmaps", POLICY_CM);
    let report = examine(f).await;
    assert_status(
        &report,
        "webhook.policy",
        Status::Fail,
        "ConfigMap lb-l7-system/lb-l7-webhook-policy-7g9k2m5f8t, which Deployment lb-l7-system/lb-l7-webhook mounts as its policy, not found",
    );
    assert_status(
        &report,
        "webhook.policy",
        Status::Fail,
        "built-in default policy",
    );
    assert!(
        report.get("webhook.drift").is_none(),
        "no policy, no drift check"
    );
    // The effect checks still run, with the default policy.
    assert_status(
        &report,
        "effect.envoy-configs",
        Status::Ok,
        "1 Service annotated",
    );

    let mut f = healthy();
    f.set(
        "configmaps",
        vec![
            cilium_config(healthy_cilium_data()),
            policy_configmap("scope: cluster\nrules: []\n"),
        ],
    );
    let report = examine(f).await;
    assert_status(
        &report,
        "webhook.policy",
        Status::Fail,
        "rules: at least one rule is required",
    );
}

#[tokio::test]
async fn policy_is_followed_from_the_webhook_deployment_not_guessed_by_name() {
    // The healthy fixture: deploy/base's Deployment mounting the kustomize-hashed ConfigMap with subPath.
    let report = examine(healthy()).await;
    assert_status(
        &report,
        "webhook.policy",
        Status::Ok,
        "ConfigMap lb-l7-system/lb-l7-webhook-policy-7g9k2m5f8t key policy.yaml, via Deployment lb-l7-system/lb-l7-webhook (scope namespace-opt-in, mode enforce)",
    );

    // Newer ConfigMaps by the old naming rule (an unrelated generation, a plain lb-l7-webhook-policy) are not read.
    let mut f = healthy();
    let cluster = DEFAULT_POLICY_YAML.replace("scope: namespace-opt-in", "scope: cluster");
    f.put(
        "configmaps",
        generated_policy_configmap(
            "lb-l7-webhook-policy-b2c4d6f8h9",
            "2029-12-01T00:00:00Z",
            &cluster,
        ),
    );
    f.put(
        "configmaps",
        generated_policy_configmap("lb-l7-webhook-policy", "2029-12-02T00:00:00Z", &cluster),
    );
    let report = examine(f.clone()).await;
    assert_status(&report, "webhook.policy", Status::Ok, POLICY_CM);
    assert_status(
        &report,
        "webhook.drift",
        Status::Ok,
        "match what the policy renders",
    );

    // --policy-configmap names one explicitly: that one is read (and the live configuration drifts from it).
    let mut opts = options();
    opts.policy_configmap = Some("lb-l7-webhook-policy-b2c4d6f8h9".into());
    let (report, _) = examine_with(f, opts).await;
    let report = report.expect("ran");
    assert_status(
        &report,
        "webhook.policy",
        Status::Ok,
        "ConfigMap lb-l7-system/lb-l7-webhook-policy-b2c4d6f8h9 key policy.yaml (scope cluster",
    );
    assert_status(&report, "webhook.drift", Status::Fail, "namespaceSelector");
}

// ---------------------------------------------------------------------------------------------------------------
// The effect

#[tokio::test]
async fn annotated_service_without_envoy_config_fails() {
    let mut f = healthy();
    f.set(
        "ciliumenvoyconfigs",
        vec![cec("apps", "cilium-envoy-lb-someone-else")],
    );
    f.put(
        "services",
        service("other", "billing", grpc_port(), enabled()),
    );
    f.put(
        "ciliumenvoyconfigs",
        cec("other", "cilium-envoy-lb-billing"),
    );
    let report = examine(f).await;
    assert_status(
        &report,
        "effect.envoy-configs",
        Status::Fail,
        "annotated but Cilium made no Envoy config",
    );
    let c = check(&report, "effect.envoy-configs");
    assert_eq!(c.objects, vec!["apps/greeter (no cilium-envoy-lb-greeter)"]);
    assert!(c.message.contains("1 of 2 annotated Services"), "{c:#?}");
}

#[tokio::test]
async fn envoy_config_in_another_namespace_does_not_count() {
    let mut f = healthy();
    f.set(
        "ciliumenvoyconfigs",
        vec![cec("default", "cilium-envoy-lb-greeter")],
    );
    let report = examine(f).await;
    assert_status(
        &report,
        "effect.envoy-configs",
        Status::Fail,
        "apps/greeter",
    );
}

#[tokio::test]
async fn legacy_annotation_key_fails_and_leftover_warns() {
    let mut f = healthy();
    f.put(
        "services",
        service(
            "apps",
            "old",
            grpc_port(),
            json!({ "io.cilium.service/lb-l7": "enabled" }),
        ),
    );
    let report = examine(f).await;
    assert_status(
        &report,
        "effect.legacy-annotation",
        Status::Fail,
        "current Cilium ignores",
    );
    assert_eq!(
        check(&report, "effect.legacy-annotation").objects,
        vec!["apps/old"]
    );

    let mut f = healthy();
    f.get_mut("services", "greeter")["metadata"]["annotations"]["io.cilium.service/lb-l7"] =
        json!("enabled");
    let report = examine(f).await;
    assert_status(
        &report,
        "effect.legacy-annotation",
        Status::Warn,
        "next to service.cilium.io/lb-l7=enabled",
    );
    // The pitfalls check leaves the legacy key to its own check.
    assert_status(
        &report,
        "effect.pitfalls",
        Status::Ok,
        "no annotated Service",
    );
}

#[tokio::test]
async fn annotation_value_that_differs_only_by_case_fails() {
    let mut f = healthy();
    f.put(
        "services",
        service(
            "apps",
            "shouty",
            grpc_port(),
            json!({ "service.cilium.io/lb-l7": "Enabled" }),
        ),
    );
    let report = examine(f).await;
    assert_status(
        &report,
        "effect.annotation-value",
        Status::Fail,
        "apps/shouty (service.cilium.io/lb-l7=Enabled)",
    );
    assert!(
        check(&report, "effect.annotation-value")
            .fix
            .as_deref()
            .is_some_and(|f| f.contains("--overwrite service.cilium.io/lb-l7=enabled"))
    );
    // A deliberate opt-out is not a problem.
    let mut f = healthy();
    f.put(
        "services",
        service(
            "apps",
            "off",
            grpc_port(),
            json!({ "service.cilium.io/lb-l7": "disabled" }),
        ),
    );
    let report = examine(f).await;
    assert_status(
        &report,
        "effect.annotation-value",
        Status::Ok,
        "exactly \"enabled\"",
    );
}

#[tokio::test]
async fn pitfall_warnings_come_from_the_policy_evaluation() {
    let mut f = healthy();
    f.put(
        "services",
        service(
            "apps",
            "multi",
            json!([{ "name": "grpc", "port": 50051, "targetPort": 9000 }, { "name": "metrics", "port": 9090 }]),
            enabled(),
        ),
    );
    f.put("ciliumenvoyconfigs", cec("apps", "cilium-envoy-lb-multi"));
    let mut sticky = service("apps", "sticky", grpc_port(), enabled());
    sticky["spec"]["sessionAffinity"] = json!("ClientIP");
    f.put("services", sticky);
    f.put("ciliumenvoyconfigs", cec("apps", "cilium-envoy-lb-sticky"));
    let report = examine(f).await;
    let c = check(&report, "effect.pitfalls");
    assert_eq!(c.status, Status::Warn, "{c:#?}");
    let all = c.objects.join("\n");
    assert!(all.contains("apps/multi: Service has 2 ports"), "{all}");
    assert!(
        all.contains("apps/multi: port grpc (50051/TCP) has targetPort 9000"),
        "{all}"
    );
    assert!(
        all.contains("apps/sticky: sessionAffinity ClientIP"),
        "{all}"
    );
    assert!(!all.contains("apps/greeter"), "{all}");
    assert_eq!(c.objects.len(), 3);
    assert!(!report.failed());
}

#[tokio::test]
async fn selected_but_unannotated_services_warn_with_backfill() {
    let mut f = healthy();
    f.put(
        "services",
        service("apps", "new-grpc", grpc_port(), json!({})),
    );
    // Not in an opted-in namespace: not selected, so not reported.
    f.put("namespaces", namespace("quiet", json!({})));
    f.put("services", service("quiet", "grpc", grpc_port(), json!({})));
    let report = examine(f).await;
    assert_status(
        &report,
        "effect.not-annotated",
        Status::Warn,
        "apps/new-grpc",
    );
    let c = check(&report, "effect.not-annotated");
    assert_eq!(c.objects, vec!["apps/new-grpc"]);
    assert!(c.fix.as_deref().is_some_and(|f| f.contains("backfill")));
}

#[tokio::test]
async fn namespace_flag_reads_only_that_namespace() {
    let mut f = healthy();
    f.put(
        "services",
        service("other", "billing", grpc_port(), enabled()),
    );
    let mut opts = options();
    opts.namespace = Some("apps".into());
    let (report, log) = examine_with(f, opts).await;
    let report = report.expect("ran");
    // other/billing has no CiliumEnvoyConfig, but it is outside --namespace.
    assert_status(
        &report,
        "effect.envoy-configs",
        Status::Ok,
        "1 Service annotated",
    );
    let log = log.lock().expect("log").clone();
    let paths: Vec<&str> = log.iter().map(|(_, p)| p.as_str()).collect();
    assert!(
        paths
            .iter()
            .any(|p| p.starts_with("/api/v1/namespaces/apps/services?")),
        "{paths:?}"
    );
    assert!(
        paths
            .iter()
            .any(|p| p.starts_with("/apis/cilium.io/v2/namespaces/apps/ciliumenvoyconfigs?")),
        "{paths:?}"
    );
    assert!(paths.contains(&"/api/v1/namespaces/apps?"), "{paths:?}");
    assert!(
        !paths.iter().any(|p| p.starts_with("/api/v1/services?")),
        "{paths:?}"
    );
}

#[tokio::test]
async fn services_are_read_page_by_page() {
    let mut f = healthy();
    for i in 0..600 {
        f.put(
            "services",
            service(
                "apps",
                &format!("plain-{i:03}"),
                json!([{ "name": "http", "port": 80 }]),
                json!({}),
            ),
        );
    }
    // The last Service of the last page is the one that needs attention.
    f.put(
        "services",
        service(
            "apps",
            "zz-last",
            grpc_port(),
            json!({ "service.cilium.io/lb-l7": "ENABLED" }),
        ),
    );
    let (report, log) = examine_with(f, options()).await;
    let report = report.expect("ran");
    assert_status(
        &report,
        "effect.annotation-value",
        Status::Fail,
        "apps/zz-last",
    );
    let log = log.lock().expect("log").clone();
    let pages: Vec<&str> = log
        .iter()
        .map(|(_, p)| p.as_str())
        .filter(|p| p.starts_with("/api/v1/services?"))
        .collect();
    assert_eq!(pages.len(), 2, "{pages:?}");
    assert!(pages.iter().all(|p| p.contains("limit=500")), "{pages:?}");
    assert!(pages[1].contains("continue=500"), "{pages:?}");
}

// ---------------------------------------------------------------------------------------------------------------
// RBAC: deploy/doctor grants exactly what the doctor reads, and only reads

#[derive(Debug)]
struct RbacRule {
    /// `None` for a ClusterRole (any namespace and cluster-scoped objects).
    namespace: Option<String>,
    groups: Vec<String>,
    resources: Vec<String>,
    verbs: Vec<String>,
    names: Vec<String>,
}

fn strings(v: &Value) -> Vec<String> {
    v.as_array()
        .map(|a| {
            a.iter()
                .filter_map(|s| s.as_str().map(String::from))
                .collect()
        })
        .unwrap_or_default()
}

fn doctor_rbac() -> Vec<RbacRule> {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/deploy/doctor/rbac.yaml");
    let text = std::fs::read_to_string(path).expect("deploy/doctor/rbac.yaml");
    let docs: Vec<Value> = serde_saphyr::from_multiple(&text).expect("rbac.yaml parses");
    let bound: BTreeSet<(String, String)> = docs
        .iter()
        .filter(|d| d["kind"] == "RoleBinding" || d["kind"] == "ClusterRoleBinding")
        .map(|d| {
            assert_eq!(
                d["subjects"],
                json!([{ "kind": "ServiceAccount", "name": "lb-l7-webhook-doctor", "namespace": "lb-l7-system" }]),
                "{d}"
            );
            (
                d["roleRef"]["kind"].as_str().unwrap_or("").to_string(),
                d["metadata"]["namespace"].as_str().unwrap_or("").to_string(),
            )
        })
        .collect();
    let mut rules = Vec::new();
    for d in &docs {
        let kind = d["kind"].as_str().unwrap_or("");
        if kind != "Role" && kind != "ClusterRole" {
            continue;
        }
        let ns = d["metadata"]["namespace"]
            .as_str()
            .unwrap_or("")
            .to_string();
        assert!(
            bound.contains(&(kind.to_string(), ns.clone())),
            "{kind} in {ns:?} is bound"
        );
        for r in d["rules"].as_array().expect("rules") {
            rules.push(RbacRule {
                namespace: (kind == "Role").then(|| ns.clone()),
                groups: strings(&r["apiGroups"]),
                resources: strings(&r["resources"]),
                verbs: strings(&r["verbs"]),
                names: strings(&r["resourceNames"]),
            });
        }
    }
    rules
}

/// (apiGroup, resource, namespace, name) of a request path.
fn request_target(path: &str) -> (String, String, Option<String>, Option<String>) {
    let segs: Vec<&str> = path.trim_start_matches('/').split('/').collect();
    let (group, rest) = match segs.as_slice() {
        ["api", "v1", rest @ ..] => ("", rest),
        ["apis", group, _, rest @ ..] => (*group, rest),
        _ => panic!("unexpected path {path}"),
    };
    let (ns, resource, name) = match rest {
        ["namespaces", ns, resource, tail @ ..] => (Some(ns.to_string()), *resource, tail.first()),
        [resource, tail @ ..] => (None, *resource, tail.first()),
        [] => panic!("unexpected path {path}"),
    };
    (
        group.into(),
        resource.into(),
        ns,
        name.map(|n| n.to_string()),
    )
}

#[tokio::test]
async fn deploy_doctor_rbac_is_read_only_and_covers_every_request() {
    let rules = doctor_rbac();
    for r in &rules {
        for v in &r.verbs {
            assert!(v == "get" || v == "list", "read-only: {r:?}");
        }
        assert!(
            !r.resources.iter().any(|x| x == "secrets" || x == "*"),
            "{r:?}"
        );
    }
    // Every path the doctor can take: the healthy cluster, a kustomize-named policy ConfigMap (a list in the
    // webhook's namespace) and --namespace.
    let mut generated = healthy();
    generated.remove_named("configmaps", "lb-l7-webhook-policy");
    generated.put(
        "configmaps",
        generated_policy_configmap(
            "lb-l7-webhook-policy-7g9k2m5f8t",
            "2029-01-01T00:00:00Z",
            DEFAULT_POLICY_YAML,
        ),
    );
    let mut one_ns = options();
    one_ns.namespace = Some("apps".into());
    let mut requests = Vec::new();
    for (fake, opts) in [
        (healthy(), options()),
        (generated, options()),
        (healthy(), one_ns),
    ] {
        let (report, log) = examine_with(fake, opts).await;
        assert!(report.is_ok());
        requests.extend(log.lock().expect("log").clone());
    }
    assert!(requests.len() > 20, "{requests:?}");
    for (method, url) in &requests {
        let path = url.split('?').next().unwrap_or("");
        let (group, resource, ns, name) = request_target(path);
        let verb = if name.is_some() { "get" } else { "list" };
        assert_eq!(method, "GET");
        let allowed = rules.iter().any(|r| {
            r.groups.contains(&group)
                && r.resources.contains(&resource)
                && r.verbs.iter().any(|v| v == verb)
                && (r.names.is_empty() || name.as_ref().is_some_and(|n| r.names.contains(n)))
                && match &r.namespace {
                    None => true,
                    Some(role_ns) => ns.as_ref() == Some(role_ns),
                }
        });
        assert!(
            allowed,
            "deploy/doctor does not allow {verb} {group}/{resource} ns={ns:?} name={name:?}"
        );
    }
}

// ---------------------------------------------------------------------------------------------------------------
// Errors that stop the run (exit status 2 in main) and the renderers

#[tokio::test]
async fn rejected_credentials_stop_the_run() {
    let mut f = healthy();
    f.unauthorized = true;
    let (report, _) = examine_with(f, options()).await;
    let err = report.expect_err("401 is not a check result");
    assert!(matches!(err, FetchError::Unauthorized { .. }), "{err:?}");
    assert!(
        err.to_string().contains("rejected the credentials"),
        "{err}"
    );
}

#[tokio::test]
async fn an_unreachable_api_server_stops_the_run() {
    let mut f = healthy();
    f.hang_up = true;
    let (report, _) = examine_with(f, options()).await;
    let err = report.expect_err("no answer is not a check result");
    assert!(matches!(err, FetchError::Connection { .. }), "{err:?}");
    assert!(
        err.to_string()
            .contains("cannot reach the Kubernetes API server"),
        "{err}"
    );
}

#[tokio::test]
async fn json_output_is_what_scripts_read() {
    let mut f = healthy();
    f.set("ciliumenvoyconfigs", vec![]);
    let report = examine(f).await;
    let mut out = Vec::new();
    let code = doctor::print(&report, Output::Json, false, &mut out).expect("printed");
    assert_eq!(code, std::process::ExitCode::from(1));
    let v: Value = serde_json::from_slice(&out).expect("valid JSON");
    let checks = v["checks"].as_array().expect("checks");
    assert_eq!(checks.len(), report.checks.len());
    let cec = checks
        .iter()
        .find(|c| c["id"] == "effect.envoy-configs")
        .expect("envoy-configs in JSON");
    assert_eq!(cec["status"], "fail");
    assert_eq!(cec["group"], "effect");
    assert!(cec["fix"].as_str().is_some_and(|f| !f.is_empty()));
    assert_eq!(
        cec["objects"],
        json!(["apps/greeter (no cilium-envoy-lb-greeter)"])
    );
    let ok = checks
        .iter()
        .find(|c| c["id"] == "cilium.loadbalancer-l7")
        .expect("l7");
    assert_eq!(ok["status"], "ok");
    assert!(ok.get("fix").is_none(), "an ok check has no fix: {ok}");
    assert_eq!(
        v["policy"],
        json!({
            "source": format!("ConfigMap lb-l7-system/{POLICY_CM} key policy.yaml, via Deployment lb-l7-system/lb-l7-webhook"),
            "scope": "namespace-opt-in",
            "mode": "enforce",
        })
    );
    assert_eq!(v["summary"]["fail"], 1);
    assert_eq!(
        v["summary"]["ok"].as_u64(),
        Some((report.checks.len() - 1) as u64)
    );
}

#[tokio::test]
async fn table_output_groups_checks_and_prints_fixes_without_colour_off_a_terminal() {
    let mut f = healthy();
    f.get_mut("configmaps", "cilium-config")["data"]["enable-envoy-config"] = json!("false");
    let report = examine(f).await;
    let mut out = Vec::new();
    let code = doctor::print(&report, Output::Table, false, &mut out).expect("printed");
    assert_eq!(code, std::process::ExitCode::from(1));
    let text = String::from_utf8(out).expect("utf-8");
    assert!(
        !text.contains('\x1b'),
        "no colour when not on a terminal:\n{text}"
    );
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines[0], "Cilium");
    assert!(
        lines.contains(&"Webhook") && lines.contains(&"Effect"),
        "{text}"
    );
    let fail = lines
        .iter()
        .position(|l| l.trim_start().starts_with("FAIL") && l.contains("CiliumEnvoyConfig support"))
        .unwrap_or_else(|| panic!("a FAIL line for enable-envoy-config:\n{text}"));
    assert!(
        lines[fail + 1]
            .trim_start()
            .starts_with("fix: helm upgrade cilium"),
        "{text}"
    );
    assert!(
        text.trim_end()
            .ends_with(&format!("{} ok, 0 warn, 1 fail", report.summary.ok)),
        "{text}"
    );

    let mut coloured = Vec::new();
    doctor::print(&report, Output::Table, true, &mut coloured).expect("printed");
    assert!(
        String::from_utf8_lossy(&coloured).contains("\x1b[1;31mFAIL"),
        "colour on a terminal"
    );
}

// ---------------------------------------------------------------------------------------------------------------
// One policy source: the policy the webhook's pods mount, used and named by doctor, report and backfill

/// `kubectl kustomize deploy/overlays/OVERLAY` as objects, or `None` (with a skip line) without kubectl.
fn kustomize(overlay: &str) -> Option<Vec<Value>> {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("deploy/overlays")
        .join(overlay);
    let out = match std::process::Command::new("kubectl")
        .arg("kustomize")
        .arg(&dir)
        .output()
    {
        Ok(out) => out,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            println!("skipped: kubectl not found (it builds the kustomize overlays)");
            return None;
        }
        Err(e) => panic!("kubectl kustomize {}: {e}", dir.display()),
    };
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8(out.stdout).expect("utf-8");
    Some(serde_saphyr::from_multiple(&text).expect("kustomize output"))
}

fn plural_of(kind: &str) -> Option<&'static str> {
    Some(match kind {
        "Deployment" => "deployments",
        "ConfigMap" => "configmaps",
        "Service" => "services",
        "MutatingWebhookConfiguration" => "mutatingwebhookconfigurations",
        "Namespace" => "namespaces",
        _ => return None,
    })
}

/// The healthy fixture with the webhook's own objects replaced by an overlay's, as `kubectl apply -k` leaves them.
fn apply_overlay(f: &mut Fake, docs: &[Value]) {
    f.remove_named("deployments", "lb-l7-webhook");
    f.remove_named("services", "lb-l7-webhook");
    f.remove_named("mutatingwebhookconfigurations", "lb-l7-webhook");
    for d in docs {
        let Some(plural) = d["kind"].as_str().and_then(plural_of) else {
            continue;
        };
        if plural == "namespaces" {
            f.remove_named("namespaces", d["metadata"]["name"].as_str().unwrap_or(""));
        }
        f.put(plural, d.clone());
    }
}

fn configmap_names(docs: &[Value]) -> Vec<String> {
    docs.iter()
        .filter(|d| d["kind"] == "ConfigMap")
        .filter_map(|d| d["metadata"]["name"].as_str().map(String::from))
        .collect()
}

/// The issue's scenario: README's path applies the dry-run overlay, then cluster-wide. kustomize never deletes the
/// old ConfigMap generation, so both exist (the dry-run one even looks newer here); the pods mount cluster-wide's.
#[tokio::test]
async fn after_dry_run_then_cluster_wide_the_doctor_reads_the_policy_the_pods_mount() {
    let (Some(dry), Some(wide)) = (kustomize("dry-run"), kustomize("cluster-wide")) else {
        return;
    };
    let dry_cm = configmap_names(&dry);
    let wide_cm = configmap_names(&wide);
    assert_eq!(dry_cm.len(), 1);
    assert_eq!(wide_cm.len(), 1);
    assert_ne!(dry_cm, wide_cm, "two generations with different hashes");

    let mut f = healthy();
    f.set("configmaps", vec![cilium_config(healthy_cilium_data())]);
    apply_overlay(&mut f, &dry);
    apply_overlay(&mut f, &wide);
    // The dry-run generation stays behind (and carries the later timestamp: no "newest" rule may pick it).
    let mut old = dry
        .iter()
        .find(|d| d["kind"] == "ConfigMap")
        .expect("dry-run ConfigMap")
        .clone();
    old["metadata"]["creationTimestamp"] = json!("2029-12-31T00:00:00Z");
    f.put("configmaps", old);
    // A gRPC Service in a namespace that never opted in: cluster-wide selects it, dry-run would never annotate it.
    f.put("namespaces", namespace("shop", json!({})));
    f.put(
        "services",
        service("shop", "orders", grpc_port(), json!({})),
    );

    let report = examine(f.clone()).await;
    assert_status(
        &report,
        "webhook.policy",
        Status::Ok,
        &format!(
            "ConfigMap lb-l7-system/{} key policy.yaml, via Deployment lb-l7-system/lb-l7-webhook (scope cluster, mode enforce)",
            wide_cm[0]
        ),
    );
    assert_status(&report, "effect.not-annotated", Status::Warn, "shop/orders");

    // backfill --dry-run (no --policy) names the same policy first and would patch shop/orders.
    let (client, log) = client(f.clone());
    let mut out = Vec::new();
    let options = lb_l7_webhook::backfill::Options {
        namespace: None,
        dry_run: true,
        page_size: 500,
    };
    let summary =
        lb_l7_webhook::backfill::backfill_chosen(client, None, "lb-l7-webhook", &options, &mut out)
            .await
            .expect("backfill ran");
    let out = String::from_utf8(out).expect("utf-8");
    let first = out.lines().next().unwrap_or("");
    assert!(
        first.starts_with(&format!(
            "policy: ConfigMap lb-l7-system/{} key policy.yaml",
            wide_cm[0]
        )) && first.ends_with("(scope cluster, mode enforce)"),
        "{out}"
    );
    assert_eq!(summary.patched, 1, "{out}");
    assert!(out.contains("shop/orders"), "{out}");
    let log = log.lock().expect("log").clone();
    assert!(
        log.iter().any(|(m, p)| m == "PATCH"
            && p.starts_with("/api/v1/namespaces/shop/services/orders?")
            && p.contains("dryRun=All")),
        "{log:?}"
    );
}

/// The Helm chart's shape: `<release>-policy` without a hash, extra args, a second Deployment in the namespace
/// whose pods the webhook's Service does not select.
#[tokio::test]
async fn chart_style_deployment_is_followed_and_other_deployments_are_ignored() {
    let cluster = DEFAULT_POLICY_YAML.replace("scope: namespace-opt-in", "scope: cluster");
    let labels =
        json!({ "app.kubernetes.io/name": "lb-l7-webhook", "app.kubernetes.io/instance": "edge" });
    let mut f = healthy();
    f.remove_named("deployments", "lb-l7-webhook");
    f.put(
        "deployments",
        json!({
            "apiVersion": "apps/v1", "kind": "Deployment",
            "metadata": { "name": "edge-lb-l7-webhook", "namespace": "lb-l7-system" },
            "spec": { "selector": { "matchLabels": labels }, "template": {
                "metadata": { "labels": labels },
                "spec": {
                    "containers": [{ "name": "webhook", "image": "lb-l7-webhook:dev",
                        "args": ["serve", "--policy", "/etc/lb-l7-webhook/policy.yaml", "--listen", "0.0.0.0:8443",
                                 "--cert-secret", "lb-l7-system/edge-lb-l7-webhook-tls"],
                        "volumeMounts": [{ "name": "policy", "mountPath": "/etc/lb-l7-webhook/policy.yaml",
                                           "subPath": "policy.yaml", "readOnly": true }] }],
                    "volumes": [{ "name": "policy", "configMap": { "name": "edge-lb-l7-webhook-policy" } }] } } },
        }),
    );
    // Left over from an old install, with other labels and another policy: not selected by the Service.
    f.put(
        "deployments",
        kustomize_deployment("lb-l7-webhook-policy-oldoldoldo"),
    );
    f.put(
        "configmaps",
        generated_policy_configmap(
            "lb-l7-webhook-policy-oldoldoldo",
            "2029-12-01T00:00:00Z",
            "scope: namespace-opt-in\nmode: dry-run\nrules: [{name: x, ports: {}}]\n",
        ),
    );
    f.put(
        "configmaps",
        generated_policy_configmap(
            "edge-lb-l7-webhook-policy",
            "2029-01-01T00:00:00Z",
            &cluster,
        ),
    );
    f.get_mut("services", "lb-l7-webhook")["spec"]["selector"] = labels.clone();
    let report = examine(f).await;
    assert_status(
        &report,
        "webhook.policy",
        Status::Ok,
        "ConfigMap lb-l7-system/edge-lb-l7-webhook-policy key policy.yaml, via Deployment lb-l7-system/edge-lb-l7-webhook (scope cluster, mode enforce)",
    );
}

#[tokio::test]
async fn without_policy_flag_or_webhook_the_built_in_default_is_named() {
    let mut f = healthy();
    let d = f.get_mut("deployments", "lb-l7-webhook");
    d["spec"]["template"]["spec"]["containers"][0]["args"] =
        json!(["serve", "--log-format", "json"]);
    let report = examine(f).await;
    assert_status(
        &report,
        "webhook.policy",
        Status::Ok,
        "built-in default (Deployment lb-l7-system/lb-l7-webhook runs the webhook without --policy) (scope namespace-opt-in, mode enforce)",
    );

    let mut f = healthy();
    f.remove_named("mutatingwebhookconfigurations", "lb-l7-webhook");
    let (client, _) = client(f);
    let chosen = lb_l7_webhook::cluster::policy_source::choose(&client, None, "lb-l7-webhook", 500)
        .await
        .expect("chosen");
    assert_eq!(
        chosen.source.describe(),
        "built-in default (no webhook installed: MutatingWebhookConfiguration lb-l7-webhook not found) (scope namespace-opt-in, mode enforce)"
    );
    assert!(chosen.warning.is_none());
}

#[tokio::test]
async fn a_webhook_whose_policy_cannot_be_followed_fails_the_policy_check_and_stops_report() {
    let mut f = healthy();
    f.forbidden.insert("deployments");
    let report = examine(f.clone()).await;
    assert_status(
        &report,
        "webhook.policy",
        Status::Fail,
        "cannot read Deployments in namespace lb-l7-system",
    );
    // report and backfill without --policy cannot guess: they stop and say how to go on.
    let (client, _) = client(f);
    let err = lb_l7_webhook::cluster::policy_source::choose(&client, None, "lb-l7-webhook", 500)
        .await
        .expect_err("unknown policy");
    let text = format!("{err:#}");
    assert!(
        text.contains("cannot tell which policy the installed webhook runs"),
        "{text}"
    );
    assert!(text.contains("--policy FILE"), "{text}");
}

#[tokio::test]
async fn report_cluster_uses_the_installed_policy_and_says_which() {
    let cluster = DEFAULT_POLICY_YAML.replace("scope: namespace-opt-in", "scope: cluster");
    let mut f = healthy();
    f.set(
        "configmaps",
        vec![
            cilium_config(healthy_cilium_data()),
            policy_configmap(&cluster),
        ],
    );
    f.put("namespaces", namespace("shop", json!({})));
    f.put(
        "services",
        service("shop", "orders", grpc_port(), json!({})),
    );
    let (c1, _) = client(f.clone());
    let client = c1;
    let chosen = lb_l7_webhook::cluster::policy_source::choose(&client, None, "lb-l7-webhook", 500)
        .await
        .expect("chosen");
    let report = lb_l7_webhook::report::cluster_report(&client, &chosen, None, 500)
        .await
        .expect("report");
    let orders = report
        .services
        .iter()
        .find(|e| e.namespace == "shop" && e.name == "orders")
        .expect("shop/orders");
    assert_eq!(orders.decision, lb_l7_core::policy::DecisionKind::Enable);
    let want = format!(
        "ConfigMap lb-l7-system/{POLICY_CM} key policy.yaml, via Deployment lb-l7-system/lb-l7-webhook (scope cluster, mode enforce)"
    );
    let mut table = Vec::new();
    lb_l7_webhook::report::write_report(
        &mut table,
        &report,
        lb_l7_webhook::report::OutputFormat::Table,
        false,
    )
    .expect("table");
    let table = String::from_utf8(table).expect("utf-8");
    assert_eq!(
        table.lines().next(),
        Some(format!("policy: {want}").as_str()),
        "{table}"
    );
    let mut js = Vec::new();
    lb_l7_webhook::report::write_report(
        &mut js,
        &report,
        lb_l7_webhook::report::OutputFormat::Json,
        false,
    )
    .expect("json");
    let js: Value = serde_json::from_slice(&js).expect("json");
    assert_eq!(js["policy"]["source"], json!(want));
    assert_eq!(js["policy"]["scope"], "cluster");
    assert_eq!(js["policy"]["mode"], "enforce");

    // --policy FILE that differs from the installed one: used, and warned about in the table and JSON.
    let (client, _) = self::client(f);
    let chosen = lb_l7_webhook::cluster::policy_source::choose(
        &client,
        Some(("my-policy.yaml".into(), Policy::default())),
        "lb-l7-webhook",
        500,
    )
    .await
    .expect("chosen");
    let warning = chosen.warning.clone().expect("a warning");
    assert!(
        warning.starts_with("--policy my-policy.yaml differs from the policy the installed webhook runs (ConfigMap lb-l7-system/"),
        "{warning}"
    );
    let report = lb_l7_webhook::report::cluster_report(&client, &chosen, None, 500)
        .await
        .expect("report");
    assert_eq!(
        report.policy.source.as_deref(),
        Some("file my-policy.yaml (scope namespace-opt-in, mode enforce)")
    );
    assert_eq!(report.policy.warning.as_deref(), Some(warning.as_str()));

    // The same file as the installed policy: no warning.
    let (client, _) = self::client(healthy());
    let chosen = lb_l7_webhook::cluster::policy_source::choose(
        &client,
        Some(("same.yaml".into(), Policy::default())),
        "lb-l7-webhook",
        500,
    )
    .await
    .expect("chosen");
    assert!(chosen.warning.is_none(), "{:?}", chosen.warning);
}

#[tokio::test]
async fn doctor_policy_flag_that_differs_warns() {
    let cluster = DEFAULT_POLICY_YAML.replace("scope: namespace-opt-in", "scope: cluster");
    let mut opts = options();
    opts.policy_file = Some((
        "cluster.yaml".into(),
        Policy::from_yaml(&cluster).expect("policy"),
    ));
    let (report, _) = examine_with(healthy(), opts).await;
    let report = report.expect("ran");
    assert_status(
        &report,
        "webhook.policy",
        Status::Warn,
        "--policy cluster.yaml differs from it",
    );
    let fix = check(&report, "webhook.policy")
        .fix
        .clone()
        .unwrap_or_default();
    assert!(
        fix.contains(&format!("kubectl -n lb-l7-system create configmap {POLICY_CM} --from-file=policy.yaml=cluster.yaml"))
            && fix.contains("kubectl -n lb-l7-system rollout restart deployment lb-l7-webhook"),
        "{fix}"
    );

    let mut opts = options();
    opts.policy_file = Some(("same.yaml".into(), Policy::default()));
    let (report, _) = examine_with(healthy(), opts).await;
    assert_status(
        &report.expect("ran"),
        "webhook.policy",
        Status::Ok,
        "scope namespace-opt-in",
    );
}

// ---------------------------------------------------------------------------------------------------------------
// Named targetPorts, resolved through EndpointSlices

fn service_slice(ns: &str, svc: &str, port_name: &str, number: i32) -> Value {
    json!({
        "apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice",
        "metadata": { "name": format!("{svc}-abcde"), "namespace": ns,
                      "labels": { "kubernetes.io/service-name": svc } },
        "addressType": "IPv4",
        "endpoints": [ { "addresses": ["10.0.0.7"], "conditions": { "ready": true } } ],
        "ports": [ { "name": port_name, "port": number, "protocol": "TCP" } ],
    })
}

#[tokio::test]
async fn named_target_ports_warn_only_when_they_resolve_to_another_number() {
    let named = json!([{ "name": "grpc", "port": 50051, "targetPort": "grpc", "protocol": "TCP" }]);
    let mut f = healthy();
    // The demo Service's shape: targetPort grpc resolves to 50051 in the pods.
    f.put(
        "services",
        service("apps", "goappserver", named.clone(), enabled()),
    );
    f.put(
        "ciliumenvoyconfigs",
        cec("apps", "cilium-envoy-lb-goappserver"),
    );
    f.put(
        "endpointslices",
        service_slice("apps", "goappserver", "grpc", 50051),
    );
    let report = examine(f.clone()).await;
    assert_status(
        &report,
        "effect.pitfalls",
        Status::Ok,
        "no annotated Service",
    );

    // Another Service whose named targetPort resolves to 9000.
    f.put(
        "services",
        service("apps", "moved", named.clone(), enabled()),
    );
    f.put("ciliumenvoyconfigs", cec("apps", "cilium-envoy-lb-moved"));
    f.put(
        "endpointslices",
        service_slice("apps", "moved", "grpc", 9000),
    );
    let report = examine(f.clone()).await;
    let c = check(&report, "effect.pitfalls");
    assert_eq!(c.status, Status::Warn, "{c:#?}");
    assert_eq!(
        c.objects,
        vec![
            "apps/moved: port grpc (50051/TCP) has targetPort grpc (resolves to 9000): Cilium's L7 redirect has known bugs when targetPort differs from port"
        ]
    );

    // report --cluster resolves them the same way.
    let (client, _) = client(f);
    let chosen = lb_l7_webhook::cluster::policy_source::choose(&client, None, "lb-l7-webhook", 500)
        .await
        .expect("chosen");
    let report = lb_l7_webhook::report::cluster_report(&client, &chosen, None, 500)
        .await
        .expect("report");
    let warnings = |name: &str| {
        report
            .services
            .iter()
            .find(|e| e.name == name)
            .map(|e| e.warnings.clone())
            .unwrap_or_default()
    };
    assert!(
        warnings("goappserver").is_empty(),
        "{:?}",
        warnings("goappserver")
    );
    assert_eq!(warnings("moved").len(), 1, "{:?}", warnings("moved"));
    assert!(warnings("moved")[0].contains("resolves to 9000"));
}

// ---------------------------------------------------------------------------------------------------------------
// doctor --probe: a server-side dry-run create that must come back annotated

fn probing(ns: Option<&str>) -> DiagnoseOptions {
    let mut o = options();
    o.probe = true;
    o.probe_namespace = ns.map(String::from);
    o
}

#[tokio::test]
async fn probe_is_off_by_default_and_ok_when_the_service_comes_back_annotated() {
    let report = examine(healthy()).await;
    assert!(report.get("webhook.probe").is_none());

    let mut f = healthy();
    f.webhook_annotates.insert("apps".into());
    let (report, log) = examine_with(f, probing(None)).await;
    let report = report.expect("ran");
    assert_status(
        &report,
        "webhook.probe",
        Status::Ok,
        "a dry-run Service in apps came back with service.cilium.io/lb-l7=enabled",
    );
    let log = log.lock().expect("log").clone();
    let posts: Vec<&String> = log
        .iter()
        .filter(|(m, _)| m == "POST")
        .map(|(_, p)| p)
        .collect();
    assert_eq!(posts.len(), 1, "{log:?}");
    assert!(
        posts[0].starts_with("/api/v1/namespaces/apps/services?")
            && posts[0].contains("dryRun=All"),
        "{posts:?}"
    );
}

#[tokio::test]
async fn probe_fails_naming_the_likely_cause_when_not_annotated() {
    // Everything looks fine, but the API server's call fails (a caBundle for another CA): fail open, no annotation.
    let (report, _) = examine_with(healthy(), probing(None)).await;
    let report = report.expect("ran");
    assert_status(
        &report,
        "webhook.probe",
        Status::Fail,
        "came back without service.cilium.io/lb-l7",
    );
    let c = check(&report, "webhook.probe");
    assert!(
        c.message
            .contains("lb_l7_webhook_tls_handshake_failures_total"),
        "{c:#?}"
    );
    assert!(
        c.fix
            .as_deref()
            .is_some_and(|f| f.starts_with("kubectl -n lb-l7-system logs deploy/lb-l7-webhook")),
        "{c:#?}"
    );

    // No ready endpoints: that is named as the cause.
    let mut f = healthy();
    f.set("endpointslices", vec![endpoint_slice(Some(false))]);
    let (report, _) = examine_with(f, probing(None)).await;
    let report = report.expect("ran");
    assert_status(
        &report,
        "webhook.probe",
        Status::Fail,
        "likely cause: the webhook is unreachable",
    );
}

#[tokio::test]
async fn probe_with_a_dry_run_policy_expects_no_annotation() {
    let dry = DEFAULT_POLICY_YAML.replace("mode: enforce", "mode: dry-run");
    assert_ne!(dry, DEFAULT_POLICY_YAML);
    let mut f = healthy();
    f.set(
        "configmaps",
        vec![cilium_config(healthy_cilium_data()), policy_configmap(&dry)],
    );
    let (report, _) = examine_with(f, probing(None)).await;
    assert_status(
        &report.expect("ran"),
        "webhook.probe",
        Status::Ok,
        "the policy's mode is dry-run",
    );
}

#[tokio::test]
async fn probe_skips_with_a_warning_when_no_namespace_is_opted_in_and_uses_probe_namespace() {
    let mut f = healthy();
    f.set(
        "namespaces",
        vec![
            namespace("apps", json!({})),
            namespace("kube-system", json!({})),
        ],
    );
    let (report, log) = examine_with(f.clone(), probing(None)).await;
    let report = report.expect("ran");
    assert_status(
        &report,
        "webhook.probe",
        Status::Warn,
        "no namespace is opted in",
    );
    assert!(log.lock().expect("log").iter().all(|(m, _)| m == "GET"));

    f.webhook_annotates.insert("kube-system".into());
    let (report, log) = examine_with(f, probing(Some("kube-system"))).await;
    assert_status(
        &report.expect("ran"),
        "webhook.probe",
        Status::Ok,
        "in kube-system",
    );
    assert!(
        log.lock()
            .expect("log")
            .iter()
            .any(|(m, p)| m == "POST" && p.starts_with("/api/v1/namespaces/kube-system/services?"))
    );
}

#[tokio::test]
async fn probe_without_create_permission_fails_with_the_rbac_fix() {
    let mut f = healthy();
    f.forbid_create = true;
    let (report, _) = examine_with(f, probing(None)).await;
    let report = report.expect("ran");
    assert_status(&report, "webhook.probe", Status::Fail, "was refused");
    let fix = check(&report, "webhook.probe")
        .fix
        .clone()
        .unwrap_or_default();
    assert!(fix.contains("deploy/doctor/probe-rbac.yaml"), "{fix}");
}

#[tokio::test]
async fn deploy_doctor_probe_rbac_allows_the_probe_and_nothing_else() {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/deploy/doctor/probe-rbac.yaml");
    let text = std::fs::read_to_string(path).expect("probe-rbac.yaml");
    let docs: Vec<Value> = serde_saphyr::from_multiple(&text).expect("parses");
    let role = docs.iter().find(|d| d["kind"] == "Role").expect("Role");
    assert_eq!(
        role["rules"],
        json!([{ "apiGroups": [""], "resources": ["services"], "verbs": ["create"] }])
    );
    let binding = docs
        .iter()
        .find(|d| d["kind"] == "RoleBinding")
        .expect("RoleBinding");
    assert_eq!(
        binding["metadata"]["namespace"],
        role["metadata"]["namespace"]
    );
    assert_eq!(
        binding["subjects"],
        json!([{ "kind": "ServiceAccount", "name": "lb-l7-webhook-doctor", "namespace": "lb-l7-system" }])
    );
    // The probe in the Role's namespace is allowed; with the fake's annotation it passes.
    let ns = role["metadata"]["namespace"]
        .as_str()
        .expect("namespace")
        .to_string();
    let mut f = healthy();
    f.put(
        "namespaces",
        namespace(&ns, json!({ "lb-l7-webhook/enabled": "true" })),
    );
    f.webhook_annotates.insert(ns.clone());
    let (report, log) = examine_with(f, probing(None)).await;
    assert_status(
        &report.expect("ran"),
        "webhook.probe",
        Status::Ok,
        &format!("in {ns}"),
    );
    let log = log.lock().expect("log").clone();
    for (method, url) in log.iter().filter(|(m, _)| m != "GET") {
        let (group, resource, req_ns, _) = request_target(url.split('?').next().unwrap_or(""));
        assert_eq!(
            (
                method.as_str(),
                group.as_str(),
                resource.as_str(),
                req_ns.as_deref()
            ),
            ("POST", "", "services", Some(ns.as_str()))
        );
    }
}

// ---------------------------------------------------------------------------------------------------------------
// Fixes that work as printed

/// Every `lb-l7-webhook SUBCOMMAND ...` command in a fix, parsed by the real clap definitions of that subcommand.
/// Returns how many were parsed.
fn assert_commands_parse(fix: &str) -> usize {
    use clap::{Args, Command};
    let words: Vec<&str> = fix.split_whitespace().collect();
    let mut parsed = 0;
    for (i, w) in words.iter().enumerate() {
        if w.trim_start_matches(['`', '(']) != "lb-l7-webhook" {
            continue;
        }
        // `--service lb-l7-webhook --namespace ...`: a value, not a command.
        let Some(sub) = words.get(i + 1).filter(|s| !s.starts_with('-')) else {
            continue;
        };
        if i > 0 && words[i - 1].starts_with('-') {
            continue;
        }
        let sub = sub.trim_end_matches([',', ')', ';', '`']);
        let cmd = match sub {
            "manifests" => lb_l7_webhook::manifests::ManifestsArgs::augment_args(Command::new("x")),
            "certs" => lb_l7_webhook::certs::CertsArgs::augment_args(Command::new("x")),
            "backfill" => lb_l7_webhook::backfill::BackfillArgs::augment_args(Command::new("x")),
            "doctor" => lb_l7_webhook::doctor::DoctorArgs::augment_args(Command::new("x")),
            "report" => lb_l7_webhook::report::ReportArgs::augment_args(Command::new("x")),
            other => panic!("fix names an unknown subcommand {other:?}: {fix}"),
        };
        let mut argv = vec!["x".to_string()];
        if !words[i + 1].ends_with([',', ')', ';', '`']) {
            for w in &words[i + 2..] {
                if w.starts_with(['|', '>', ';', '&', '(']) || *w == "then" || *w == "or" {
                    break;
                }
                let clean = w.trim_end_matches([',', ')', ';', '`']);
                argv.push(clean.to_string());
                if clean.len() != w.len() {
                    break;
                }
            }
        }
        if let Err(e) = cmd.try_get_matches_from(&argv) {
            panic!(
                "fix command `lb-l7-webhook {sub} {}` does not parse: {e}\nin: {fix}",
                argv[1..].join(" ")
            );
        }
        parsed += 1;
    }
    parsed
}

#[tokio::test]
async fn printed_fixes_have_no_placeholders_and_their_commands_parse() {
    // A cluster where many checks fail or warn at once.
    let mut f = healthy();
    f.remove_named("mutatingwebhookconfigurations", "lb-l7-webhook");
    let mut fakes = vec![f];
    let mut f = healthy();
    f.set("endpointslices", vec![]);
    set_ca(&mut f, &ca_pem(NOW - 100 * DAY, NOW - DAY));
    let mwc = f.get_mut("mutatingwebhookconfigurations", "lb-l7-webhook");
    mwc["webhooks"][0]["failurePolicy"] = json!("Fail");
    mwc["webhooks"][0]["timeoutSeconds"] = json!(30);
    mwc["webhooks"][0]
        .as_object_mut()
        .expect("hook")
        .remove("objectSelector");
    f.put(
        "services",
        service(
            "apps",
            "old",
            grpc_port(),
            json!({ "io.cilium.service/lb-l7": "enabled" }),
        ),
    );
    f.put(
        "services",
        service(
            "apps",
            "shouty",
            grpc_port(),
            json!({ "service.cilium.io/lb-l7": "Enabled" }),
        ),
    );
    f.put("services", service("apps", "new", grpc_port(), json!({})));
    f.set("ciliumenvoyconfigs", vec![]);
    fakes.push(f);
    let mut f = healthy();
    f.set("namespaces", vec![namespace("apps", json!({}))]);
    fakes.push(f);
    // A configuration without webhooks, and an invalid policy.
    let mut f = healthy();
    f.get_mut("mutatingwebhookconfigurations", "lb-l7-webhook")["webhooks"] = json!([]);
    fakes.push(f);
    let mut f = healthy();
    f.set(
        "configmaps",
        vec![
            cilium_config(healthy_cilium_data()),
            policy_configmap("scope: cluster\nrules: []\n"),
        ],
    );
    fakes.push(f);
    let mut fixes = Vec::new();
    for f in fakes {
        let (report, _) = examine_with(f, probing(None)).await;
        fixes.extend(
            report
                .expect("ran")
                .checks
                .into_iter()
                .filter_map(|c| c.fix),
        );
    }
    // --policy FILE that differs: the fix deploys it.
    let mut opts = probing(None);
    opts.policy_file = Some((
        "cluster.yaml".into(),
        Policy::from_yaml(
            &DEFAULT_POLICY_YAML.replace("scope: namespace-opt-in", "scope: cluster"),
        )
        .expect("policy"),
    ));
    let (report, _) = examine_with(healthy(), opts).await;
    fixes.extend(
        report
            .expect("ran")
            .checks
            .into_iter()
            .filter_map(|c| c.fix),
    );
    for want in [
        "lb-l7-webhook manifests --service",
        "lb-l7-webhook manifests --policy policy.yaml > /dev/null",
        "lb-l7-webhook manifests --policy cluster.yaml",
        "lb-l7-webhook certs --service",
    ] {
        assert!(
            fixes.iter().any(|f| f.contains(want)),
            "no fix with {want:?}: {fixes:#?}"
        );
    }
    assert!(fixes.len() >= 8, "{fixes:#?}");
    let mut commands = 0;
    for fix in &fixes {
        for placeholder in ["<", "NS NAME", " NS ", "NAME "] {
            assert!(
                !fix.contains(placeholder),
                "placeholder {placeholder:?} in fix: {fix}"
            );
        }
        commands += assert_commands_parse(fix);
    }
    assert!(commands >= 6, "{fixes:#?}");
}

// ---------------------------------------------------------------------------------------------------------------
// Every way Cilium can silently ignore the annotation (issue 14): the agent's L7 proxy, Envoy's placement, Cilium's
// version, Envoy config ownership and conflicts, the algorithm, idle timeouts, and the reconciler's Lease

fn agent_daemonset(image: &str, nodes: i32) -> Value {
    json!({ "apiVersion": "apps/v1", "kind": "DaemonSet",
            "metadata": { "name": "cilium", "namespace": "kube-system", "generation": 4 },
            "spec": { "selector": { "matchLabels": { "k8s-app": "cilium" } },
                      "template": { "spec": { "containers": [
                          { "name": "cilium-agent", "image": image } ] } } },
            "status": { "desiredNumberScheduled": nodes, "currentNumberScheduled": nodes,
                        "numberReady": nodes, "updatedNumberScheduled": nodes,
                        "numberMisscheduled": 0, "observedGeneration": 4 } })
}

fn envoy_daemonset(desired: i32, ready: i32, updated: i32) -> Value {
    json!({ "apiVersion": "apps/v1", "kind": "DaemonSet",
            "metadata": { "name": "cilium-envoy", "namespace": "kube-system", "generation": 2 },
            "spec": { "selector": { "matchLabels": { "k8s-app": "cilium-envoy" } },
                      "template": { "spec": { "containers": [
                          { "name": "cilium-envoy", "image": "quay.io/cilium/cilium-envoy:v1.35.3" } ] } } },
            "status": { "desiredNumberScheduled": desired, "currentNumberScheduled": desired,
                        "numberReady": ready, "updatedNumberScheduled": updated,
                        "numberMisscheduled": 0, "observedGeneration": 2 } })
}

/// The reconciler's Lease, renewed `ago` seconds before the tests' "now".
fn reconciler_lease(holder: &str, ago: i64) -> Value {
    let renewed = time::OffsetDateTime::from_unix_timestamp(NOW - ago)
        .expect("time")
        .format(&time::format_description::well_known::Rfc3339)
        .expect("rfc3339");
    json!({ "apiVersion": "coordination.k8s.io/v1", "kind": "Lease",
            "metadata": { "name": "lb-l7-webhook-reconciler", "namespace": "lb-l7-system" },
            "spec": { "holderIdentity": holder, "leaseDurationSeconds": 15, "renewTime": renewed } })
}

fn clusterwide_envoy_config(name: &str, services: Value) -> Value {
    json!({ "apiVersion": "cilium.io/v2", "kind": "CiliumClusterwideEnvoyConfig",
            "metadata": { "name": name }, "spec": { "services": services, "resources": [] } })
}

/// The healthy cluster as a Cilium 1.19 install from Helm defaults looks: the agent's DaemonSet with its version
/// tag, Envoy in its own DaemonSet on every node, timeouts written out, and a live reconciler.
fn healthy_external_envoy() -> Fake {
    let mut f = healthy();
    f.put(
        "daemonsets",
        agent_daemonset("quay.io/cilium/cilium:v1.19.1@sha256:0123456789abcdef", 3),
    );
    f.put("daemonsets", envoy_daemonset(3, 3, 3));
    let data = &mut f.get_mut("configmaps", "cilium-config")["data"];
    data["external-envoy-proxy"] = json!("true");
    data["enable-l7-proxy"] = json!("true");
    data["proxy-idle-timeout-seconds"] = json!("60");
    data["proxy-stream-idle-timeout-seconds"] = json!("3600");
    f.put("leases", reconciler_lease("lb-l7-webhook-7c9f-abcde", 4));
    f.set("ciliumclusterwideenvoyconfigs", vec![]);
    f
}

const NEW_CHECKS: [&str; 9] = [
    "cilium.l7-proxy",
    "cilium.envoy-placement",
    "cilium.envoy-idle-timeouts",
    "cilium.loadbalancer-l7-algorithm",
    "webhook.reconciler",
    "effect.envoy-config-owner",
    "effect.envoy-config-conflicts",
    "effect.algorithm",
    "effect.not-annotated",
];

#[tokio::test]
async fn external_envoy_cilium_1_19_and_a_live_reconciler_are_all_ok() {
    let (report, log) = examine_with(healthy_external_envoy(), options()).await;
    let report = report.expect("the doctor ran");
    for id in NEW_CHECKS {
        assert_eq!(
            check(&report, id).status,
            Status::Ok,
            "{:#?}",
            check(&report, id)
        );
    }
    assert_eq!(
        (report.summary.warn, report.summary.fail),
        (0, 0),
        "{report:#?}"
    );
    assert_status(
        &report,
        "cilium.kube-proxy-replacement",
        Status::Ok,
        "(Cilium 1.19.1)",
    );
    assert_status(
        &report,
        "cilium.envoy-placement",
        Status::Ok,
        "DaemonSet kube-system/cilium-envoy has 3 of 3 pods ready and updated",
    );
    assert_status(
        &report,
        "cilium.envoy-idle-timeouts",
        Status::Ok,
        "proxy-stream-idle-timeout-seconds: \"3600\" s (default 300 s)",
    );
    assert_status(
        &report,
        "webhook.reconciler",
        Status::Ok,
        "lb-l7-webhook-7c9f-abcde holds Lease lb-l7-system/lb-l7-webhook-reconciler, renewed 4s ago",
    );
    assert_status(
        &report,
        "effect.envoy-config-owner",
        Status::Ok,
        "1 CiliumEnvoyConfig cilium-envoy-lb-<name> controlled by its Service",
    );
    let log = log.lock().expect("log").clone();
    let paths: Vec<&str> = log.iter().map(|(_, p)| p.as_str()).collect();
    for want in [
        "/apis/apps/v1/namespaces/kube-system/daemonsets/cilium?",
        "/apis/apps/v1/namespaces/kube-system/daemonsets/cilium-envoy?",
        "/apis/coordination.k8s.io/v1/namespaces/lb-l7-system/leases/lb-l7-webhook-reconciler?",
    ] {
        assert!(paths.contains(&want), "{want} not requested: {paths:?}");
    }
    assert!(
        paths.iter().any(
            |p| p.starts_with("/apis/cilium.io/v2/ciliumclusterwideenvoyconfigs?")
                && p.contains("limit=500")
        ),
        "CiliumClusterwideEnvoyConfigs listed page by page: {paths:?}"
    );
}

#[tokio::test]
async fn agent_l7_proxy_off_fails() {
    let mut f = healthy();
    f.get_mut("configmaps", "cilium-config")["data"]["enable-l7-proxy"] = json!("false");
    let report = examine(f).await;
    assert_status(
        &report,
        "cilium.l7-proxy",
        Status::Fail,
        "enable-l7-proxy is \"false\" in kube-system/cilium-config",
    );
    assert!(
        check(&report, "cilium.l7-proxy")
            .fix
            .as_deref()
            .is_some_and(|f| f.contains("--set l7Proxy=true"))
    );
    assert!(report.failed());
}

#[tokio::test]
async fn embedded_envoy_is_said_and_needs_no_daemonset() {
    let report = examine(healthy()).await;
    assert_status(
        &report,
        "cilium.envoy-placement",
        Status::Ok,
        "embedded Envoy: external-envoy-proxy is not set",
    );
}

#[tokio::test]
async fn external_envoy_missing_not_ready_or_unreadable_fails() {
    let mut f = healthy_external_envoy();
    f.remove_named("daemonsets", "cilium-envoy");
    let report = examine(f).await;
    assert_status(
        &report,
        "cilium.envoy-placement",
        Status::Fail,
        "DaemonSet kube-system/cilium-envoy does not exist",
    );
    assert!(
        check(&report, "cilium.envoy-placement")
            .fix
            .as_deref()
            .is_some_and(|f| f.contains("--set envoy.enabled=true"))
    );

    let mut f = healthy_external_envoy();
    f.remove_named("daemonsets", "cilium-envoy");
    f.put("daemonsets", envoy_daemonset(3, 1, 3));
    let report = examine(f).await;
    assert_status(
        &report,
        "cilium.envoy-placement",
        Status::Fail,
        "1 of 3 pods ready",
    );
    assert_eq!(
        check(&report, "cilium.envoy-placement").objects,
        vec!["kube-system/cilium-envoy"]
    );

    let mut f = healthy_external_envoy();
    f.remove_named("daemonsets", "cilium-envoy");
    f.put("daemonsets", envoy_daemonset(3, 3, 1));
    let report = examine(f).await;
    assert_status(
        &report,
        "cilium.envoy-placement",
        Status::Warn,
        "1 of 3 updated",
    );

    let mut f = healthy_external_envoy();
    f.forbidden.insert("daemonsets");
    let report = examine(f).await;
    assert_status(
        &report,
        "cilium.envoy-placement",
        Status::Fail,
        "the doctor needs get daemonsets.apps in kube-system",
    );
    assert_status(&report, "cilium.envoy-placement", Status::Fail, "HTTP 403");
    assert!(
        check(&report, "cilium.envoy-placement")
            .fix
            .as_deref()
            .is_some_and(|f| f.contains("kubectl apply -k deploy/doctor"))
    );
    // The agent's DaemonSet is unreadable too: the version is unknown, and kube-proxy replacement is judged as
    // without it.
    assert_status(
        &report,
        "cilium.kube-proxy-replacement",
        Status::Ok,
        "Cilium version unknown: cannot read DaemonSet kube-system/cilium",
    );
}

#[tokio::test]
async fn kube_proxy_replacement_is_judged_by_the_agents_version() {
    let with = |image: &str, kpr: &str| {
        let mut f = healthy();
        f.put("daemonsets", agent_daemonset(image, 3));
        f.get_mut("configmaps", "cilium-config")["data"]["kube-proxy-replacement"] = json!(kpr);
        f
    };
    let report = examine(with("quay.io/cilium/cilium:v1.19.0", "strict")).await;
    assert_status(
        &report,
        "cilium.kube-proxy-replacement",
        Status::Fail,
        "Cilium 1.19.0 accepts only \"true\" or \"false\"",
    );
    let report = examine(with("quay.io/cilium/cilium:v1.16.3", "strict")).await;
    assert_status(
        &report,
        "cilium.kube-proxy-replacement",
        Status::Ok,
        "Cilium 1.16.3, which still accepts it",
    );
    let report = examine(with("quay.io/cilium/cilium:v1.15.7", "partial")).await;
    assert_status(
        &report,
        "cilium.kube-proxy-replacement",
        Status::Ok,
        "partial",
    );
    // A digest-only image has no version: say so, and judge as without one.
    let report = examine(with(
        "quay.io/cilium/cilium@sha256:0123456789abcdef",
        "strict",
    ))
    .await;
    assert_status(
        &report,
        "cilium.kube-proxy-replacement",
        Status::Ok,
        "by digest, without a version tag",
    );
    let report = examine(with(
        "quay.io/cilium/cilium@sha256:0123456789abcdef",
        "partial",
    ))
    .await;
    assert_status(
        &report,
        "cilium.kube-proxy-replacement",
        Status::Fail,
        "Cilium version unknown",
    );
}

#[tokio::test]
async fn unknown_algorithms_warn_with_the_value() {
    let mut f = healthy();
    f.get_mut("configmaps", "cilium-config")["data"]["loadbalancer-l7-algorithm"] =
        json!("fastest");
    f.put(
        "services",
        service(
            "apps",
            "dashed",
            grpc_port(),
            json!({ "service.cilium.io/lb-l7": "enabled",
                    "service.cilium.io/lb-l7-algorithm": "least-request" }),
        ),
    );
    f.put("ciliumenvoyconfigs", cec("apps", "cilium-envoy-lb-dashed"));
    // Cilium upper-cases the name before looking it up: this one is fine.
    f.put(
        "services",
        service(
            "apps",
            "shouting",
            grpc_port(),
            json!({ "service.cilium.io/lb-l7": "enabled",
                    "service.cilium.io/lb-l7-algorithm": "LEAST_REQUEST" }),
        ),
    );
    f.put(
        "ciliumenvoyconfigs",
        cec("apps", "cilium-envoy-lb-shouting"),
    );
    let report = examine(f).await;
    assert_status(
        &report,
        "cilium.loadbalancer-l7-algorithm",
        Status::Warn,
        "loadbalancer-l7-algorithm is \"fastest\" in kube-system/cilium-config",
    );
    assert_status(
        &report,
        "cilium.loadbalancer-l7-algorithm",
        Status::Warn,
        "Cilium silently uses round_robin",
    );
    assert_status(
        &report,
        "effect.algorithm",
        Status::Warn,
        "apps/dashed (service.cilium.io/lb-l7-algorithm=least-request)",
    );
    let c = check(&report, "effect.algorithm");
    assert_eq!(
        c.objects,
        vec!["apps/dashed (service.cilium.io/lb-l7-algorithm=least-request)"]
    );
    assert_eq!(
        c.fix.as_deref(),
        Some(
            "kubectl annotate service -n apps dashed --overwrite service.cilium.io/lb-l7-algorithm=least_request (or round_robin, random)"
        )
    );
    // One warning per problem: the pitfalls check leaves the algorithm to effect.algorithm.
    assert_status(
        &report,
        "effect.pitfalls",
        Status::Ok,
        "no annotated Service",
    );
    assert!(!report.failed());
}

#[tokio::test]
async fn envoy_config_not_controlled_by_its_service_warns_naming_both() {
    let mut f = healthy();
    f.remove_named("ciliumenvoyconfigs", "cilium-envoy-lb-greeter");
    f.put(
        "ciliumenvoyconfigs",
        json!({ "apiVersion": "cilium.io/v2", "kind": "CiliumEnvoyConfig",
                "metadata": { "name": "cilium-envoy-lb-greeter", "namespace": "apps" },
                "spec": { "services": [{ "name": "greeter" }] } }),
    );
    let report = examine(f).await;
    assert_status(
        &report,
        "effect.envoy-config-owner",
        Status::Warn,
        "CiliumEnvoyConfig apps/cilium-envoy-lb-greeter has no controller ownerReference, not by Service apps/greeter",
    );
    assert_eq!(
        check(&report, "effect.envoy-config-owner").fix.as_deref(),
        Some(
            "kubectl -n apps delete ciliumenvoyconfig cilium-envoy-lb-greeter, then kubectl -n kube-system rollout restart deploy/cilium-operator (it recreates it, owned by the Service)"
        )
    );
    // It lists the Service too, but it is the operator's name: ownership, not a second config.
    assert_status(
        &report,
        "effect.envoy-config-conflicts",
        Status::Ok,
        "no other",
    );

    // The Service was deleted and made again: the config still points at the old one's uid.
    let mut f = healthy();
    f.get_mut("services", "greeter")["metadata"]["uid"] = json!("uid-greeter-2");
    let report = examine(f).await;
    assert_status(
        &report,
        "effect.envoy-config-owner",
        Status::Warn,
        "is controlled by an earlier Service greeter (uid uid-greeter)",
    );
    // Same uid: ok.
    let mut f = healthy();
    f.get_mut("services", "greeter")["metadata"]["uid"] = json!("uid-greeter");
    let report = examine(f).await;
    assert_status(
        &report,
        "effect.envoy-config-owner",
        Status::Ok,
        "controlled by its Service",
    );
}

#[tokio::test]
async fn a_second_envoy_config_for_a_service_warns_naming_both() {
    let mut f = healthy();
    f.put(
        "ciliumclusterwideenvoyconfigs",
        clusterwide_envoy_config(
            "mesh-gateway",
            json!([{ "name": "greeter", "namespace": "apps" }]),
        ),
    );
    // Without a namespace a cluster-wide config means `default`: not apps/greeter.
    f.put(
        "ciliumclusterwideenvoyconfigs",
        clusterwide_envoy_config("other", json!([{ "name": "greeter" }])),
    );
    f.put(
        "ciliumenvoyconfigs",
        json!({ "apiVersion": "cilium.io/v2", "kind": "CiliumEnvoyConfig",
                "metadata": { "name": "retries", "namespace": "apps" },
                "spec": { "services": [{ "name": "greeter", "namespace": "ignored-for-namespaced" }] } }),
    );
    let report = examine(f).await;
    let c = check(&report, "effect.envoy-config-conflicts");
    assert_eq!(c.status, Status::Warn, "{c:#?}");
    assert_eq!(
        c.objects,
        vec![
            "Service apps/greeter: CiliumEnvoyConfig apps/cilium-envoy-lb-greeter and CiliumEnvoyConfig apps/retries",
            "Service apps/greeter: CiliumEnvoyConfig apps/cilium-envoy-lb-greeter and CiliumClusterwideEnvoyConfig mesh-gateway",
        ]
    );
    assert!(c.message.contains("cilium/cilium#33767"), "{c:#?}");
    assert!(
        c.fix
            .as_deref()
            .is_some_and(|f| f.contains("kubectl -n apps edit ciliumenvoyconfig retries")),
        "{c:#?}"
    );
    assert!(!report.failed());

    // Cluster-wide configs that cannot be listed: say so instead of a silent ok.
    let mut f = healthy();
    f.forbidden.insert("ciliumclusterwideenvoyconfigs");
    let report = examine(f).await;
    assert_status(
        &report,
        "effect.envoy-config-conflicts",
        Status::Warn,
        "CiliumClusterwideEnvoyConfigs could not be listed",
    );
}

#[tokio::test]
async fn a_live_reconciler_replaces_the_backfill_advice_and_a_stale_one_is_named() {
    let pending = |f: &mut Fake| {
        f.put(
            "services",
            service("apps", "new-grpc", grpc_port(), json!({})),
        );
    };
    let mut f = healthy_external_envoy();
    pending(&mut f);
    let report = examine(f).await;
    assert_status(
        &report,
        "effect.not-annotated",
        Status::Ok,
        "the reconciler (lb-l7-webhook-7c9f-abcde, Lease lb-l7-system/lb-l7-webhook-reconciler renewed 4s ago) will patch them: apps/new-grpc",
    );
    assert_eq!(
        check(&report, "effect.not-annotated").objects,
        vec!["apps/new-grpc"]
    );

    let mut f = healthy_external_envoy();
    pending(&mut f);
    f.set(
        "leases",
        vec![reconciler_lease("lb-l7-webhook-7c9f-abcde", 2 * 3600)],
    );
    let report = examine(f).await;
    assert_status(
        &report,
        "webhook.reconciler",
        Status::Warn,
        "was last renewed by lb-l7-webhook-7c9f-abcde 2h ago, beyond its 15s lease",
    );
    assert_status(
        &report,
        "effect.not-annotated",
        Status::Warn,
        "so nothing patches them",
    );
    assert!(
        check(&report, "effect.not-annotated")
            .fix
            .as_deref()
            .is_some_and(|f| f.contains("lb-l7-webhook backfill"))
    );

    // No Lease: no reconciler installed, which is fine; the advice stays backfill.
    let mut f = healthy();
    pending(&mut f);
    let report = examine(f).await;
    assert_status(
        &report,
        "webhook.reconciler",
        Status::Ok,
        "no reconciler installed",
    );
    assert_eq!(
        check(&report, "effect.not-annotated").fix.as_deref(),
        Some("lb-l7-webhook backfill --dry-run, then lb-l7-webhook backfill")
    );
}

#[tokio::test]
async fn deploy_doctor_grants_the_new_reads_by_name_and_nothing_more() {
    let rules = doctor_rbac();
    let find = |resource: &str| -> Vec<&RbacRule> {
        rules
            .iter()
            .filter(|r| r.resources.iter().any(|x| x == resource))
            .collect()
    };
    let ds = find("daemonsets");
    assert_eq!(ds.len(), 1, "{ds:?}");
    assert_eq!(ds[0].namespace.as_deref(), Some("kube-system"));
    assert_eq!(ds[0].groups, vec!["apps"]);
    assert_eq!(ds[0].verbs, vec!["get"]);
    assert_eq!(ds[0].names, vec!["cilium", "cilium-envoy"]);
    let leases = find("leases");
    assert_eq!(leases.len(), 1, "{leases:?}");
    assert_eq!(leases[0].namespace.as_deref(), Some("lb-l7-system"));
    assert_eq!(leases[0].groups, vec!["coordination.k8s.io"]);
    assert_eq!(leases[0].verbs, vec!["get"]);
    assert_eq!(leases[0].names, vec!["lb-l7-webhook-reconciler"]);
    let ccec = find("ciliumclusterwideenvoyconfigs");
    assert_eq!(ccec.len(), 1, "{ccec:?}");
    assert_eq!(ccec[0].namespace, None);
    assert_eq!(ccec[0].verbs, vec!["list"]);
    // And every request of the richest cluster is allowed (the general RBAC test covers the others).
    let (report, log) = examine_with(healthy_external_envoy(), options()).await;
    assert!(report.is_ok());
    for (_, url) in log.lock().expect("log").iter() {
        let path = url.split('?').next().unwrap_or("");
        let (group, resource, ns, name) = request_target(path);
        let verb = if name.is_some() { "get" } else { "list" };
        assert!(
            rules.iter().any(|r| r.groups.contains(&group)
                && r.resources.contains(&resource)
                && r.verbs.iter().any(|v| v == verb)
                && (r.names.is_empty() || name.as_ref().is_some_and(|n| r.names.contains(n)))
                && r.namespace
                    .as_ref()
                    .is_none_or(|role_ns| ns.as_ref() == Some(role_ns))),
            "deploy/doctor does not allow {verb} {group}/{resource} ns={ns:?} name={name:?}"
        );
    }
}

#[tokio::test]
async fn new_checks_appear_in_json_and_in_their_table_section() {
    let mut f = healthy_external_envoy();
    f.remove_named("daemonsets", "cilium-envoy");
    let report = examine(f).await;
    let mut out = Vec::new();
    let code = doctor::print(&report, Output::Json, false, &mut out).expect("printed");
    assert_eq!(code, std::process::ExitCode::from(1));
    let v: Value = serde_json::from_slice(&out).expect("valid JSON");
    let placement = v["checks"]
        .as_array()
        .expect("checks")
        .iter()
        .find(|c| c["id"] == "cilium.envoy-placement")
        .expect("envoy-placement in JSON");
    assert_eq!(placement["group"], "cilium");
    assert_eq!(placement["status"], "fail");
    assert_eq!(placement["objects"], json!(["kube-system/cilium-envoy"]));
    assert!(
        placement["fix"]
            .as_str()
            .is_some_and(|f| f.contains("envoy.enabled=true"))
    );

    let mut out = Vec::new();
    doctor::print(&report, Output::Table, false, &mut out).expect("printed");
    let text = String::from_utf8(out).expect("utf-8");
    let section = |title: &str| {
        text.split("\n\n")
            .find(|s| s.starts_with(title))
            .unwrap_or_else(|| panic!("no {title} section:\n{text}"))
            .to_string()
    };
    assert!(section("Cilium").contains("FAIL  Envoy proxy"), "{text}");
    assert!(section("Webhook").contains("ok    Reconciler"), "{text}");
    assert!(
        section("Effect").contains("One Envoy config per Service"),
        "{text}"
    );
}

// ---------------------------------------------------------------------------------------------------------------
// The admission-policy engine (manifests --engine admission-policy): no webhook, the API server applies the policy

/// A cluster with the admission policies the default policy renders and no webhook at all.
fn admission_policy_install() -> Fake {
    use lb_l7_core::render::admission_policy::{PolicyApiVersion, render_admission_policies};
    let mut f = healthy();
    f.set("mutatingwebhookconfigurations", vec![]);
    f.set("endpointslices", vec![]);
    let policy = Policy::from_yaml(DEFAULT_POLICY_YAML).expect("policy");
    let docs = render_admission_policies(&policy)
        .expect("renders")
        .documents(PolicyApiVersion::V1);
    for doc in docs {
        let plural = match doc["kind"].as_str() {
            Some("MutatingAdmissionPolicy") => "mutatingadmissionpolicies",
            Some("MutatingAdmissionPolicyBinding") => "mutatingadmissionpolicybindings",
            Some("ValidatingAdmissionPolicy") => "validatingadmissionpolicies",
            Some("ValidatingAdmissionPolicyBinding") => "validatingadmissionpolicybindings",
            other => panic!("kind {other:?}"),
        };
        f.put(plural, doc);
    }
    f
}

#[tokio::test]
async fn admission_policies_without_a_webhook_are_a_healthy_install() {
    let (report, log) = examine_with(admission_policy_install(), options()).await;
    let report = report.expect("the doctor ran");
    assert_status(
        &report,
        "webhook.configuration",
        Status::Ok,
        "admission-policy engine is installed",
    );
    assert_status(
        &report,
        "admission-policy.installed",
        Status::Ok,
        "MutatingAdmissionPolicy lb-l7-webhook and its binding exist (admissionregistration.k8s.io/v1)",
    );
    assert_status(
        &report,
        "admission-policy.drift",
        Status::Ok,
        "what the policy renders",
    );
    assert!(report.get("admission-policy.engines").is_none());
    assert_eq!(report.summary.fail, 0, "{:#?}", report.checks);
    assert_eq!(report.summary.warn, 0, "{:#?}", report.checks);
    let log = log.lock().expect("log").clone();
    for want in [
        "/apis/admissionregistration.k8s.io/v1/mutatingadmissionpolicies/lb-l7-webhook?",
        "/apis/admissionregistration.k8s.io/v1/mutatingadmissionpolicybindings/lb-l7-webhook?",
        "/apis/admissionregistration.k8s.io/v1/validatingadmissionpolicies/lb-l7-webhook-warnings?",
        "/apis/admissionregistration.k8s.io/v1/validatingadmissionpolicybindings/lb-l7-webhook-warnings?",
    ] {
        assert!(
            log.iter().any(|(_, p)| p == want),
            "{want} not requested: {log:?}"
        );
    }
}

#[tokio::test]
async fn admission_policy_that_drifts_from_the_policy_fails() {
    let mut f = admission_policy_install();
    // Someone edited the live policy: a rule that matches every port name.
    let live = f.get_mut("mutatingadmissionpolicies", "lb-l7-webhook");
    live["spec"]["variables"][3]["expression"] = json!("\"port matches rule 'anything'\"");
    let report = examine(f).await;
    assert_status(
        &report,
        "admission-policy.drift",
        Status::Fail,
        "MutatingAdmissionPolicy differ from what the policy renders",
    );

    // The policy file given with --policy wins over the ConfigMap: scope cluster renders another selector.
    let cluster = Policy::from_yaml("scope: cluster\nrules: [{name: grpc-ports, ports: {}}]\n")
        .expect("policy");
    let (client, _log) = client(admission_policy_install());
    let opts = DiagnoseOptions {
        policy_file: Some(("cluster.yaml".into(), cluster)),
        ..options()
    };
    let report = doctor::examine(&client, &opts).await.expect("ran");
    let c = check(&report, "admission-policy.drift");
    assert_eq!(c.status, Status::Fail, "{c:#?}");
    assert!(
        c.objects
            .contains(&"MutatingAdmissionPolicyBinding".to_string()),
        "{c:#?}"
    );
}

#[tokio::test]
async fn admission_policy_without_its_binding_fails_and_the_missing_webhook_still_fails() {
    let mut f = admission_policy_install();
    f.set("mutatingadmissionpolicybindings", vec![]);
    let report = examine(f).await;
    assert_status(
        &report,
        "admission-policy.installed",
        Status::Fail,
        "has no binding",
    );
    assert_status(
        &report,
        "webhook.configuration",
        Status::Fail,
        "never calls the webhook",
    );
}

#[tokio::test]
async fn both_engines_at_once_warn() {
    let mut f = admission_policy_install();
    let ca = ca_pem(NOW - 10 * DAY, NOW + 365 * DAY);
    f.put(
        "mutatingwebhookconfigurations",
        webhook_configuration(&Policy::default(), ca.into_bytes()),
    );
    f.put("endpointslices", endpoint_slice(Some(true)));
    let report = examine(f).await;
    assert_status(
        &report,
        "admission-policy.engines",
        Status::Warn,
        "both the MutatingWebhookConfiguration and the admission policies",
    );
    assert_status(&report, "webhook.configuration", Status::Ok, "exists");
}

/// Kubernetes 1.34-1.35: the mutating policy is served as v1beta1 only (v1 paths are 404), and the doctor finds it.
#[tokio::test]
async fn v1beta1_admission_policies_are_found_on_1_34() {
    use lb_l7_core::render::admission_policy::{PolicyApiVersion, render_admission_policies};
    let mut fake = admission_policy_install();
    let policy = Policy::from_yaml(DEFAULT_POLICY_YAML).expect("policy");
    let docs = render_admission_policies(&policy)
        .expect("renders")
        .documents(PolicyApiVersion::V1beta1);
    fake.set("mutatingadmissionpolicies", vec![docs[0].clone()]);
    fake.set("mutatingadmissionpolicybindings", vec![docs[1].clone()]);
    let _ = rustls::crypto::ring::default_provider().install_default();
    let (service, mut handle) = tower_test::mock::pair::<Request<Body>, Response<Body>>();
    tokio::spawn(async move {
        while let Some((request, send)) = handle.next_request().await {
            let path = request.uri().path().to_string();
            let query = request.uri().query().unwrap_or("").to_string();
            let (code, body) =
                if path.contains("/admissionregistration.k8s.io/v1/mutatingadmission") {
                    not_found(&path)
                } else {
                    fake.answer(&path, &query)
                };
            let response = Response::builder()
                .status(code)
                .header("content-type", "application/json")
                .body(Body::from(serde_json::to_vec(&body).expect("json")))
                .expect("response");
            send.send_response(response);
        }
    });
    let client = kube::Client::new(service, "default");
    let report = tokio::time::timeout(
        std::time::Duration::from_secs(20),
        doctor::examine(&client, &options()),
    )
    .await
    .expect("finished")
    .expect("ran");
    assert_status(
        &report,
        "admission-policy.installed",
        Status::Ok,
        "(admissionregistration.k8s.io/v1beta1)",
    );
    assert_status(
        &report,
        "admission-policy.drift",
        Status::Ok,
        "what the policy renders",
    );
    assert_eq!(report.summary.fail, 0, "{:#?}", report.checks);
}
