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
                    None => false,
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
            seen.lock()
                .expect("log lock")
                .push((request.method().to_string(), format!("{path}?{query}")));
            if fake.hang_up {
                drop(send);
                continue;
            }
            let (code, body) = fake.answer(&path, &query);
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
    DiagnoseOptions {
        webhook_name: "lb-l7-webhook".into(),
        webhook_namespace: "lb-l7-system".into(),
        policy_configmap: "lb-l7-webhook-policy".into(),
        namespace: None,
        page_size: 500,
        now: NOW,
    }
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

fn cec(ns: &str, name: &str) -> Value {
    json!({ "apiVersion": "cilium.io/v2", "kind": "CiliumEnvoyConfig",
            "metadata": { "name": name, "namespace": ns }, "spec": {} })
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

fn policy_configmap(text: &str) -> Value {
    generated_policy_configmap("lb-l7-webhook-policy", "2029-06-01T00:00:00Z", text)
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
        "/api/v1/namespaces/lb-l7-system/configmaps/lb-l7-webhook-policy?",
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
    f.remove_named("configmaps", "lb-l7-webhook-policy");
    let report = examine(f).await;
    assert_status(
        &report,
        "webhook.policy",
        Status::Fail,
        "lb-l7-system/lb-l7-webhook-policy (or lb-l7-system/lb-l7-webhook-policy-<hash> from kustomize) not found",
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
async fn kustomize_generated_policy_configmap_is_found_newest_first() {
    // deploy/base's configMapGenerator names it lb-l7-webhook-policy-<hash>; old generations linger.
    let mut f = healthy();
    f.remove_named("configmaps", "lb-l7-webhook-policy");
    f.put(
        "configmaps",
        generated_policy_configmap(
            "lb-l7-webhook-policy-7g9k2m5f8t",
            "2029-01-01T00:00:00Z",
            DEFAULT_POLICY_YAML,
        ),
    );
    f.put(
        "configmaps",
        generated_policy_configmap(
            "unrelated-policy-7g9k2m5f8t",
            "2029-12-01T00:00:00Z",
            "not: a policy",
        ),
    );
    let report = examine(f.clone()).await;
    assert_status(
        &report,
        "webhook.policy",
        Status::Ok,
        "lb-l7-system/lb-l7-webhook-policy-7g9k2m5f8t (policy.yaml)",
    );
    assert_status(
        &report,
        "webhook.drift",
        Status::Ok,
        "match what the policy renders",
    );

    // A newer generation with scope cluster: the live configuration was not re-rendered from it.
    let cluster = DEFAULT_POLICY_YAML.replace("scope: namespace-opt-in", "scope: cluster");
    f.put(
        "configmaps",
        generated_policy_configmap(
            "lb-l7-webhook-policy-b2c4d6f8h9",
            "2029-11-01T00:00:00Z",
            &cluster,
        ),
    );
    let report = examine(f).await;
    assert_status(
        &report,
        "webhook.policy",
        Status::Ok,
        "lb-l7-webhook-policy-b2c4d6f8h9",
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
    let report = doctor::examine_with_policy(&client, &options(), Some(&cluster))
        .await
        .expect("ran");
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
