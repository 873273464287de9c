//! charts/lb-l7-webhook: `helm lint` passes (also `--strict`); `helm template` over a matrix of values renders
//! objects that are valid Kubernetes objects of their kind (a round trip through the k8s-openapi type loses no
//! field); the pods meet the "restricted" Pod Security Standard; the webhook configuration is exactly what
//! `lb-l7-webhook manifests` renders for the same policy (fails on drift); the RBAC is exactly what each mode
//! needs; values.schema.json rejects bad values naming the field; the policy ConfigMap holds the policy.
//!
//! Needs helm, found in this order: `LB_L7_HELM`, `target/tools/bin/helm` (scripts/fetch-helm.sh puts it
//! there), `PATH`. Without it each test prints one `skipped:` line and passes, except under CI (`CI` set), where
//! it fails. No cluster, no network: `helm lint` and `helm template` work offline.

#[path = "typed_support/mod.rs"]
mod typed_support;
use typed_support::typed;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

use k8s_openapi::api::admissionregistration::v1::MutatingWebhookConfiguration;
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{ConfigMap, PodSpec, Secret, Service, ServiceAccount};
use k8s_openapi::api::networking::v1::NetworkPolicy;
use k8s_openapi::api::policy::v1::PodDisruptionBudget;
use k8s_openapi::api::rbac::v1::{ClusterRole, ClusterRoleBinding, PolicyRule, Role, RoleBinding};
use serde_json::{Value, json};

const RELEASE: &str = "lb-l7-webhook";
const NAMESPACE: &str = "lb-l7-system";
const WEBHOOK_NAME: &str = "lb-l7.services.lb-l7-webhook.io";
const LEASE: &str = "lb-l7-webhook-reconciler";
const DIGEST: &str = "sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn chart() -> PathBuf {
    repo().join("charts/lb-l7-webhook")
}

/// The helm binary, or `None` after printing a skip line (a panic under CI).
fn helm() -> Option<PathBuf> {
    static HELM: OnceLock<Option<PathBuf>> = OnceLock::new();
    let found = HELM.get_or_init(|| {
        if let Some(p) = std::env::var_os("LB_L7_HELM") {
            let p = PathBuf::from(p);
            assert!(p.is_file(), "LB_L7_HELM={} is not a file", p.display());
            return Some(p);
        }
        let cached = repo().join("target/tools/bin/helm");
        if cached.is_file() {
            return Some(cached);
        }
        std::env::var_os("PATH").and_then(|path| {
            std::env::split_paths(&path)
                .map(|d| d.join("helm"))
                .find(|p| p.is_file())
        })
    });
    match found {
        Some(p) => Some(p.clone()),
        None if std::env::var_os("CI").is_some() => panic!(
            "helm not found (LB_L7_HELM, target/tools/bin/helm, PATH): run scripts/fetch-helm.sh before the tests"
        ),
        None => {
            println!(
                "skipped: helm not found (LB_L7_HELM, target/tools/bin/helm, PATH); run scripts/fetch-helm.sh"
            );
            None
        }
    }
}

/// Helm's own directories (cache, config, data), under Cargo's scratch directory for integration tests: the
/// tests leave nothing in $HOME.
fn helm_home() -> PathBuf {
    PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("chart-helm-home")
}

fn run_helm(helm: &Path, args: &[&str]) -> std::process::Output {
    let home = helm_home();
    Command::new(helm)
        .args(args)
        .env("HELM_CACHE_HOME", home.join("cache"))
        .env("HELM_CONFIG_HOME", home.join("config"))
        .env("HELM_DATA_HOME", home.join("data"))
        .output()
        .unwrap_or_else(|e| panic!("running {} {args:?}: {e}", helm.display()))
}

/// Values for one render: written to a file as JSON (a YAML subset) and passed with `-f`.
fn values_file(dir: &Path, name: &str, values: &Value) -> PathBuf {
    let path = dir.join(format!("{name}.values.json"));
    std::fs::write(&path, serde_json::to_vec_pretty(values).expect("json")).expect("write values");
    path
}

/// `helm template RELEASE CHART -n NAMESPACE -f VALUES`: Ok(stdout) or Err(stderr).
fn template(helm: &Path, values: &Value) -> Result<String, String> {
    let dir = tempfile::tempdir().expect("tempdir");
    let file = values_file(dir.path(), "case", values);
    let chart = chart();
    let out = run_helm(
        helm,
        &[
            "template",
            RELEASE,
            chart.to_str().expect("utf-8 path"),
            "--namespace",
            NAMESPACE,
            "--values",
            file.to_str().expect("utf-8 path"),
        ],
    );
    if out.status.success() {
        Ok(String::from_utf8(out.stdout).expect("helm output is UTF-8"))
    } else {
        Err(String::from_utf8_lossy(&out.stderr).into_owned())
    }
}

fn render(helm: &Path, case: &str, values: &Value) -> Rendered {
    let text = template(helm, values)
        .unwrap_or_else(|e| panic!("{case}: helm template failed:\n{e}\nvalues: {values:#}"));
    Rendered::parse(case, &text)
}

/// Every object of one render, typed.
#[derive(Default)]
struct Rendered {
    case: String,
    deployments: Vec<Deployment>,
    services: Vec<Service>,
    service_accounts: Vec<ServiceAccount>,
    roles: Vec<Role>,
    cluster_roles: Vec<ClusterRole>,
    role_bindings: Vec<RoleBinding>,
    cluster_role_bindings: Vec<ClusterRoleBinding>,
    pdbs: Vec<PodDisruptionBudget>,
    network_policies: Vec<NetworkPolicy>,
    webhooks: Vec<MutatingWebhookConfiguration>,
    config_maps: Vec<ConfigMap>,
    secrets: Vec<Secret>,
    /// CRD objects (ServiceMonitor, cert-manager Issuer and Certificate): no k8s-openapi type.
    custom: Vec<Value>,
}

impl Rendered {
    fn parse(case: &str, text: &str) -> Rendered {
        let docs: Vec<Value> = serde_saphyr::from_multiple(text)
            .unwrap_or_else(|e| panic!("{case}: helm template output is not YAML: {e}\n{text}"));
        let mut r = Rendered {
            case: case.to_string(),
            ..Rendered::default()
        };
        for doc in docs.into_iter().filter(|d| !d.is_null()) {
            let api_version = doc["apiVersion"].as_str().unwrap_or_default().to_string();
            let kind = doc["kind"].as_str().unwrap_or_default().to_string();
            let what = format!(
                "{case}: {api_version} {kind} {}",
                doc["metadata"]["name"].as_str().unwrap_or("<no name>")
            );
            match (api_version.as_str(), kind.as_str()) {
                ("apps/v1", "Deployment") => r.deployments.push(typed(&doc, &what)),
                ("v1", "Service") => r.services.push(typed(&doc, &what)),
                ("v1", "ServiceAccount") => r.service_accounts.push(typed(&doc, &what)),
                ("v1", "ConfigMap") => r.config_maps.push(typed(&doc, &what)),
                ("v1", "Secret") => r.secrets.push(typed(&doc, &what)),
                ("rbac.authorization.k8s.io/v1", "Role") => r.roles.push(typed(&doc, &what)),
                ("rbac.authorization.k8s.io/v1", "ClusterRole") => {
                    r.cluster_roles.push(typed(&doc, &what))
                }
                ("rbac.authorization.k8s.io/v1", "RoleBinding") => {
                    r.role_bindings.push(typed(&doc, &what))
                }
                ("rbac.authorization.k8s.io/v1", "ClusterRoleBinding") => {
                    r.cluster_role_bindings.push(typed(&doc, &what))
                }
                ("policy/v1", "PodDisruptionBudget") => r.pdbs.push(typed(&doc, &what)),
                ("networking.k8s.io/v1", "NetworkPolicy") => {
                    r.network_policies.push(typed(&doc, &what))
                }
                ("admissionregistration.k8s.io/v1", "MutatingWebhookConfiguration") => {
                    r.webhooks.push(typed(&doc, &what))
                }
                ("monitoring.coreos.com/v1", "ServiceMonitor")
                | ("cert-manager.io/v1", "Issuer")
                | ("cert-manager.io/v1", "Certificate") => {
                    assert!(
                        doc["metadata"]["name"].is_string(),
                        "{what}: no metadata.name"
                    );
                    assert!(doc["spec"].is_object(), "{what}: no spec");
                    r.custom.push(doc)
                }
                _ => {
                    panic!("{what}: the chart renders a kind this test does not know; add it here")
                }
            }
        }
        r
    }

    fn deployment(&self) -> &Deployment {
        assert_eq!(self.deployments.len(), 1, "{}: one Deployment", self.case);
        &self.deployments[0]
    }

    fn pod(&self) -> &PodSpec {
        self.deployment()
            .spec
            .template
            .spec
            .as_ref()
            .expect("pod spec")
    }

    fn args(&self) -> Vec<String> {
        self.pod().containers[0].args.clone().unwrap_or_default()
    }

    fn webhook(&self) -> &MutatingWebhookConfiguration {
        assert_eq!(
            self.webhooks.len(),
            1,
            "{}: one MutatingWebhookConfiguration",
            self.case
        );
        &self.webhooks[0]
    }

    fn config_map(&self, name: &str) -> &ConfigMap {
        self.config_maps
            .iter()
            .find(|c| c.metadata.name.as_deref() == Some(name))
            .unwrap_or_else(|| panic!("{}: no ConfigMap {name}", self.case))
    }

    fn custom(&self, kind: &str) -> Vec<&Value> {
        self.custom.iter().filter(|d| d["kind"] == kind).collect()
    }
}

/// The value of `--flag` in an argument list (`None` when absent).
fn flag<'a>(args: &'a [String], name: &str) -> Option<&'a str> {
    args.iter().position(|a| a == name).map(|i| {
        args.get(i + 1)
            .map(String::as_str)
            .unwrap_or_else(|| panic!("{name} has no value"))
    })
}

fn flag_values<'a>(args: &'a [String], name: &str) -> Vec<&'a str> {
    args.windows(2)
        .filter(|w| w[0] == name)
        .map(|w| w[1].as_str())
        .collect()
}

// ---------------------------------------------------------------------------------------------------------
// The matrix of values.

fn matrix() -> Vec<(&'static str, Value)> {
    let ca_pem = "-----BEGIN CERTIFICATE-----\nMIIBdummy\n-----END CERTIFICATE-----\n";
    let ca_bundle = base64_encode(ca_pem.as_bytes());
    vec![
        ("defaults", json!({})),
        (
            "cert-manager",
            json!({"certificates": {"mode": "cert-manager", "extraSANs": ["webhook.example.com", "10.0.0.7"]}}),
        ),
        (
            "cert-manager with an existing ClusterIssuer",
            json!({"certificates": {"mode": "cert-manager", "certManager": {"issuerRef": {"kind": "ClusterIssuer", "name": "corp-ca"}}}}),
        ),
        (
            "secret",
            json!({"certificates": {"mode": "secret", "secretName": "my-tls", "caBundle": ca_bundle}}),
        ),
        (
            "self with SANs",
            json!({"certificates": {"extraSANs": ["webhook.example.com", "10.0.0.7"], "certValidity": "720h"}}),
        ),
        ("reconciler", json!({"reconciler": {"enabled": true}})),
        (
            "reconciler revert",
            json!({"reconciler": {"enabled": true, "revert": true, "resyncInterval": "5m", "maxPatchesPerSecond": 2.5}}),
        ),
        (
            "cert-manager + reconciler",
            json!({"certificates": {"mode": "cert-manager"}, "reconciler": {"enabled": true}}),
        ),
        (
            "hostNetwork",
            json!({"hostNetwork": true, "ports": {"webhook": 10250, "probes": 10251}}),
        ),
        (
            "networkPolicy",
            json!({"networkPolicy": {"enabled": true, "probesFrom": [{"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "monitoring"}}}], "egress": [{"ports": [{"port": 443, "protocol": "TCP"}]}]}}),
        ),
        (
            "serviceMonitor",
            json!({"serviceMonitor": {"enabled": true, "labels": {"release": "prometheus"}}}),
        ),
        ("dashboard", json!({"grafanaDashboard": {"enabled": true}})),
        (
            "pdb off",
            json!({"podDisruptionBudget": {"enabled": false}}),
        ),
        ("one replica", json!({"replicas": 1})),
        (
            "cluster-wide dry-run",
            json!({"policy": yaml_file("deploy/overlays/dry-run/policy.yaml")}),
        ),
        (
            "digest",
            json!({"image": {"repository": "registry.example/lb-l7-webhook", "digest": DIGEST}}),
        ),
        (
            "everything",
            json!({
                "replicas": 3, "imagePullSecrets": [{"name": "regcred"}], "priorityClassName": "system-cluster-critical",
                "nodeSelector": {"kubernetes.io/os": "linux"},
                "tolerations": [{"key": "dedicated", "operator": "Exists", "effect": "NoSchedule"}],
                "commonLabels": {"team": "platform"}, "annotations": {"owner": "platform"},
                "podLabels": {"extra": "yes"}, "podAnnotations": {"example.com/scrape": "true"},
                "logFormat": "text", "logLevel": "debug", "webhookConfiguration": {"name": "lb-l7-webhook-prod"},
                "networkPolicy": {"enabled": true}, "serviceMonitor": {"enabled": true}, "grafanaDashboard": {"enabled": true},
                "reconciler": {"enabled": true}, "podDisruptionBudget": {"maxUnavailable": "50%"},
            }),
        ),
    ]
}

fn base64_encode(bytes: &[u8]) -> String {
    use base64::Engine as _;
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

fn yaml_file(rel: &str) -> Value {
    let text = std::fs::read_to_string(repo().join(rel)).unwrap_or_else(|e| panic!("{rel}: {e}"));
    serde_saphyr::from_str(&text).unwrap_or_else(|e| panic!("{rel}: {e}"))
}

/// Chart values as they end up (chart defaults overlaid with the case's), for the few the checks need.
fn get<'a>(values: &'a Value, path: &[&str]) -> Option<&'a Value> {
    path.iter().try_fold(values, |v, k| v.get(*k))
}

fn mode_of(values: &Value) -> &str {
    get(values, &["certificates", "mode"])
        .and_then(Value::as_str)
        .unwrap_or("self")
}

fn reconciler_of(values: &Value) -> bool {
    get(values, &["reconciler", "enabled"])
        .and_then(Value::as_bool)
        .unwrap_or(false)
}

#[test]
fn lint_default_and_strict() {
    let Some(helm) = helm() else { return };
    let chart = chart();
    let chart = chart.to_str().expect("utf-8");
    for args in [vec!["lint", chart], vec!["lint", "--strict", chart]] {
        let out = run_helm(&helm, &args);
        assert!(
            out.status.success(),
            "helm {args:?} failed:\n{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    // Strict, with every optional part on.
    let dir = tempfile::tempdir().expect("tempdir");
    let (_, everything) = matrix()
        .into_iter()
        .find(|(n, _)| *n == "everything")
        .expect("case");
    let file = values_file(dir.path(), "everything", &everything);
    let out = run_helm(
        &helm,
        &[
            "lint",
            "--strict",
            chart,
            "--values",
            file.to_str().expect("utf-8"),
        ],
    );
    assert!(
        out.status.success(),
        "helm lint --strict with every option on failed:\n{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn template_matrix_renders_valid_objects() {
    let Some(helm) = helm() else { return };
    for (case, values) in matrix() {
        let r = render(&helm, case, &values);
        check_common(&r, &values);
    }
}

/// What must hold for every combination of values.
fn check_common(r: &Rendered, values: &Value) {
    let case = r.case.as_str();
    let mode = mode_of(values);
    let reconciler = reconciler_of(values);
    let host_network = get(values, &["hostNetwork"])
        .and_then(Value::as_bool)
        .unwrap_or(false);

    // One Deployment, its pods restricted, its flags matching the mode.
    let d = r.deployment();
    let spec = &d.spec;
    let replicas = get(values, &["replicas"])
        .and_then(Value::as_i64)
        .unwrap_or(2) as i32;
    assert_eq!(spec.replicas, Some(replicas), "{case}: replicas");
    let pod = r.pod();
    check_pod_security(case, pod, host_network);
    let selector = spec.selector.match_labels.clone().expect("selector");
    let pod_labels = spec
        .template
        .metadata
        .as_ref()
        .and_then(|m| m.labels.clone())
        .expect("pod labels");
    for (k, v) in &selector {
        assert_eq!(
            pod_labels.get(k),
            Some(v),
            "{case}: the pods lack selector label {k}"
        );
    }
    let c = &pod.containers[0];
    let args = r.args();
    assert_eq!(args[0], "serve", "{case}: the container runs serve");
    assert_eq!(
        flag(&args, "--policy"),
        Some("/etc/lb-l7-webhook/policy.yaml"),
        "{case}"
    );
    let ports = get(values, &["ports"]).cloned().unwrap_or(json!({}));
    let webhook_port = ports.get("webhook").and_then(Value::as_i64).unwrap_or(8443);
    let probe_port = ports.get("probes").and_then(Value::as_i64).unwrap_or(8080);
    assert_eq!(
        flag(&args, "--listen"),
        Some(format!("0.0.0.0:{webhook_port}").as_str()),
        "{case}"
    );
    assert_eq!(
        flag(&args, "--probe-listen"),
        Some(format!("0.0.0.0:{probe_port}").as_str()),
        "{case}"
    );
    assert!(
        flag(&args, "--log-format").is_some() && flag(&args, "--log").is_some(),
        "{case}: log flags"
    );
    let container_ports: BTreeMap<String, i32> = c
        .ports
        .iter()
        .flatten()
        .map(|p| (p.name.clone().unwrap_or_default(), p.container_port))
        .collect();
    assert_eq!(
        container_ports.get("https"),
        Some(&(webhook_port as i32)),
        "{case}: https port"
    );
    assert_eq!(
        container_ports.get("probes"),
        Some(&(probe_port as i32)),
        "{case}: probes port"
    );
    for (probe, path) in [
        (&c.readiness_probe, "/readyz"),
        (&c.liveness_probe, "/healthz"),
    ] {
        let get = probe
            .as_ref()
            .and_then(|p| p.http_get.as_ref())
            .expect("an HTTP probe");
        assert_eq!(get.path.as_deref(), Some(path), "{case}");
        assert_eq!(
            get.port,
            k8s_openapi::apimachinery::pkg::util::intstr::IntOrString::String("probes".into()),
            "{case}"
        );
    }
    assert_eq!(
        pod.host_network.unwrap_or(false),
        host_network,
        "{case}: hostNetwork"
    );

    // The policy ConfigMap is mounted, and its checksum is in the pod template.
    let fullname = d.metadata.name.clone().expect("name");
    let policy_cm = format!("{fullname}-policy");
    r.config_map(&policy_cm);
    let volumes = pod.volumes.clone().unwrap_or_default();
    assert!(
        volumes
            .iter()
            .any(|v| v.config_map.as_ref().map(|c| c.name.as_str()) == Some(policy_cm.as_str())),
        "{case}: the policy ConfigMap is not mounted"
    );
    let annotations = spec
        .template
        .metadata
        .as_ref()
        .and_then(|m| m.annotations.clone())
        .unwrap_or_default();
    assert_eq!(
        annotations.get("checksum/policy").map(String::len),
        Some(64),
        "{case}: checksum/policy annotation"
    );

    // Certificates: flags, volumes, token, Secret, and where caBundle comes from.
    let token = pod.automount_service_account_token;
    let wh = r.webhook();
    let hook = &wh.webhooks.as_ref().expect("webhooks")[0];
    let wh_annotations = wh.metadata.annotations.clone().unwrap_or_default();
    let tls_volume = volumes.iter().find(|v| v.name == "tls");
    match mode {
        "self" => {
            let secret = flag(&args, "--cert-secret").expect("--cert-secret");
            assert_eq!(secret, format!("{NAMESPACE}/{fullname}-certs"), "{case}");
            assert_eq!(
                flag(&args, "--webhook-configuration"),
                wh.metadata.name.as_deref(),
                "{case}"
            );
            assert_eq!(
                flag(&args, "--service"),
                Some(format!("{NAMESPACE}/{fullname}").as_str()),
                "{case}"
            );
            assert!(
                flag(&args, "--ca-validity").is_some() && flag(&args, "--cert-validity").is_some(),
                "{case}"
            );
            let sans: Vec<&str> = get(values, &["certificates", "extraSANs"])
                .and_then(Value::as_array)
                .map(|a| a.iter().filter_map(Value::as_str).collect())
                .unwrap_or_default();
            assert_eq!(flag_values(&args, "--san"), sans, "{case}: --san");
            assert!(
                flag(&args, "--tls-cert").is_none() && tls_volume.is_none(),
                "{case}: no mounted cert"
            );
            assert_eq!(token, Some(true), "{case}: mode self needs the token");
            assert_eq!(r.secrets.len(), 1, "{case}: the runtime Secret");
            let s = &r.secrets[0];
            assert_eq!(
                s.metadata.name.as_deref(),
                Some(format!("{fullname}-certs").as_str())
            );
            assert!(
                s.data.is_none() && s.string_data.is_none(),
                "{case}: the chart ships the Secret without data"
            );
            assert_eq!(
                s.type_.as_deref(),
                Some("Opaque"),
                "{case}: serve fills it with ca.crt/ca.key/tls.crt/tls.key"
            );
            let s_annotations = s.metadata.annotations.clone().unwrap_or_default();
            assert!(
                !s_annotations.contains_key("helm.sh/resource-policy"),
                "{case}: uninstall deletes the Secret"
            );
            assert!(
                hook.client_config.ca_bundle.is_none(),
                "{case}: serve writes caBundle"
            );
            assert!(
                !wh_annotations.contains_key("cert-manager.io/inject-ca-from"),
                "{case}"
            );
        }
        "cert-manager" | "secret" => {
            assert_eq!(
                flag(&args, "--tls-cert"),
                Some("/etc/lb-l7-webhook/tls/tls.crt"),
                "{case}"
            );
            assert_eq!(
                flag(&args, "--tls-key"),
                Some("/etc/lb-l7-webhook/tls/tls.key"),
                "{case}"
            );
            assert!(flag(&args, "--cert-secret").is_none(), "{case}");
            let secret_name = tls_volume
                .and_then(|v| v.secret.as_ref())
                .and_then(|s| s.secret_name.clone())
                .expect("the tls volume is a Secret");
            let mount = c
                .volume_mounts
                .iter()
                .flatten()
                .find(|m| m.name == "tls")
                .expect("tls mount");
            assert_eq!(mount.mount_path, "/etc/lb-l7-webhook/tls", "{case}");
            assert!(
                mount.sub_path.is_none(),
                "{case}: never subPath (rotation swaps ..data)"
            );
            assert_eq!(
                token,
                Some(reconciler),
                "{case}: a token only for the reconciler"
            );
            assert!(r.secrets.is_empty(), "{case}: the chart ships no Secret");
            if mode == "cert-manager" {
                let certs = r.custom("Certificate");
                let serving = certs
                    .iter()
                    .find(|c| c["metadata"]["name"] == fullname.as_str())
                    .expect("the serving Certificate");
                assert_eq!(
                    serving["spec"]["secretName"],
                    secret_name.as_str(),
                    "{case}"
                );
                let dns: Vec<&str> = serving["spec"]["dnsNames"]
                    .as_array()
                    .expect("dnsNames")
                    .iter()
                    .filter_map(Value::as_str)
                    .collect();
                assert!(
                    dns.contains(&format!("{fullname}.{NAMESPACE}.svc").as_str()),
                    "{case}: {dns:?}"
                );
                assert_eq!(
                    wh_annotations.get("cert-manager.io/inject-ca-from"),
                    Some(&format!("{NAMESPACE}/{fullname}")),
                    "{case}"
                );
                let own_chain =
                    get(values, &["certificates", "certManager", "issuerRef"]).is_none();
                assert_eq!(
                    r.custom("Issuer").len(),
                    if own_chain { 2 } else { 0 },
                    "{case}: Issuers"
                );
                assert!(
                    hook.client_config.ca_bundle.is_none(),
                    "{case}: the cainjector writes caBundle"
                );
            } else {
                assert_eq!(secret_name, "my-tls", "{case}");
                let bundle = hook
                    .client_config
                    .ca_bundle
                    .as_ref()
                    .expect("caBundle rendered");
                assert!(
                    String::from_utf8_lossy(&bundle.0).contains("BEGIN CERTIFICATE"),
                    "{case}"
                );
            }
        }
        other => panic!("unknown mode {other}"),
    }

    // The reconciler's flags.
    if reconciler {
        assert!(args.iter().any(|a| a == "--reconcile"), "{case}");
        assert!(flag(&args, "--resync-interval").is_some(), "{case}");
        assert!(flag(&args, "--max-patches-per-second").is_some(), "{case}");
        assert_eq!(flag(&args, "--lease-namespace"), Some(NAMESPACE), "{case}");
        let revert = get(values, &["reconciler", "revert"])
            .and_then(Value::as_bool)
            .unwrap_or(false);
        assert_eq!(
            args.iter().any(|a| a == "--revert"),
            revert,
            "{case}: --revert"
        );
    } else {
        for f in [
            "--reconcile",
            "--revert",
            "--lease-namespace",
            "--resync-interval",
        ] {
            assert!(
                !args.iter().any(|a| a == f),
                "{case}: {f} without the reconciler"
            );
        }
    }
    check_rbac(r, mode, reconciler, &fullname);

    // The Service the webhook configuration calls selects the pods and reaches the https port.
    let svc = r
        .services
        .iter()
        .find(|s| s.metadata.name.as_deref() == Some(fullname.as_str()))
        .expect("the webhook Service");
    let svc_spec = svc.spec.as_ref().expect("spec");
    assert_eq!(
        svc_spec.selector.as_ref(),
        Some(&selector),
        "{case}: Service selector"
    );
    let svc_port = svc_spec
        .ports
        .as_ref()
        .expect("ports")
        .iter()
        .find(|p| p.port == 443)
        .expect("port 443");
    assert_eq!(
        svc_port.target_port,
        Some(k8s_openapi::apimachinery::pkg::util::intstr::IntOrString::String("https".into())),
        "{case}"
    );
    let target = hook
        .client_config
        .service
        .as_ref()
        .expect("clientConfig.service");
    assert_eq!(
        (
            target.namespace.as_str(),
            target.name.as_str(),
            target.path.as_deref(),
            target.port
        ),
        (NAMESPACE, fullname.as_str(), Some("/mutate"), Some(443)),
        "{case}: clientConfig.service"
    );
    assert_eq!(hook.name, WEBHOOK_NAME, "{case}");
    let expected_name = get(values, &["webhookConfiguration", "name"])
        .and_then(Value::as_str)
        .unwrap_or("lb-l7-webhook");
    assert_eq!(wh.metadata.name.as_deref(), Some(expected_name), "{case}");
    // Uninstall removes it: a plain chart object, never a hook kept behind.
    assert!(
        !wh_annotations.keys().any(|k| k.starts_with("helm.sh/")),
        "{case}: the webhook configuration must not be a hook or kept: {wh_annotations:?}"
    );

    // PodDisruptionBudget: on by default when there is more than one replica.
    let pdb_on = get(values, &["podDisruptionBudget", "enabled"])
        .and_then(Value::as_bool)
        .unwrap_or(true);
    let max_unavailable = get(values, &["podDisruptionBudget", "maxUnavailable"]).is_some();
    assert_eq!(
        r.pdbs.len(),
        usize::from(pdb_on && (replicas > 1 || max_unavailable)),
        "{case}: PDB"
    );
    for pdb in &r.pdbs {
        let s = pdb.spec.as_ref().expect("spec");
        assert_eq!(
            s.selector.as_ref().and_then(|l| l.match_labels.as_ref()),
            Some(&selector),
            "{case}"
        );
        assert!(
            s.min_available.is_some() != s.max_unavailable.is_some(),
            "{case}: one of the two"
        );
    }

    // Optional parts.
    let on = |k: &str| {
        get(values, &[k, "enabled"])
            .and_then(Value::as_bool)
            .unwrap_or(false)
    };
    assert_eq!(
        r.network_policies.len(),
        usize::from(on("networkPolicy")),
        "{case}: NetworkPolicy"
    );
    for np in &r.network_policies {
        let s = np.spec.as_ref().expect("spec");
        assert_eq!(
            s.pod_selector
                .as_ref()
                .and_then(|l| l.match_labels.as_ref()),
            Some(&selector),
            "{case}"
        );
        let ports: Vec<i32> = s
            .ingress
            .iter()
            .flatten()
            .flat_map(|i| i.ports.iter().flatten())
            .filter_map(|p| match p.port {
                Some(k8s_openapi::apimachinery::pkg::util::intstr::IntOrString::Int(n)) => Some(n),
                _ => None,
            })
            .collect();
        assert_eq!(
            ports,
            vec![webhook_port as i32, probe_port as i32],
            "{case}: NetworkPolicy ports"
        );
    }
    assert_eq!(
        r.custom("ServiceMonitor").len(),
        usize::from(on("serviceMonitor")),
        "{case}: ServiceMonitor"
    );
    for sm in r.custom("ServiceMonitor") {
        let metrics_svc = r
            .services
            .iter()
            .find(|s| s.metadata.name.as_deref() == Some(format!("{fullname}-metrics").as_str()))
            .expect("the metrics Service");
        let svc_labels = metrics_svc.metadata.labels.clone().unwrap_or_default();
        for (k, v) in sm["spec"]["selector"]["matchLabels"]
            .as_object()
            .expect("matchLabels")
        {
            assert_eq!(
                svc_labels.get(k).map(String::as_str),
                v.as_str(),
                "{case}: ServiceMonitor selector"
            );
        }
        assert_eq!(sm["spec"]["endpoints"][0]["port"], "metrics", "{case}");
        assert_eq!(sm["spec"]["endpoints"][0]["path"], "/metrics", "{case}");
    }
    let dashboards: Vec<&ConfigMap> = r
        .config_maps
        .iter()
        .filter(|c| {
            c.metadata
                .labels
                .as_ref()
                .is_some_and(|l| l.get("grafana_dashboard").map(String::as_str) == Some("1"))
        })
        .collect();
    assert_eq!(
        dashboards.len(),
        usize::from(on("grafanaDashboard")),
        "{case}: dashboard ConfigMap"
    );
    for cm in dashboards {
        let json_text = cm
            .data
            .as_ref()
            .and_then(|d| d.get("lb-l7-webhook.json"))
            .expect("dashboard JSON");
        let dash: Value = serde_json::from_str(json_text).expect("the dashboard is JSON");
        let exprs = dash["panels"]
            .as_array()
            .expect("panels")
            .iter()
            .flat_map(|p| p["targets"].as_array().cloned().unwrap_or_default())
            .filter_map(|t| t["expr"].as_str().map(String::from))
            .collect::<Vec<_>>()
            .join("\n");
        for metric in [
            "lb_l7_webhook_reviews_total",
            "lb_l7_webhook_request_errors_total",
            "lb_l7_webhook_review_duration_seconds_bucket",
            "lb_l7_webhook_tls_reloads_total",
            "lb_l7_webhook_tls_certificate_not_after_seconds",
            "lb_l7_webhook_tls_handshake_failures_total",
        ] {
            assert!(
                exprs.contains(metric),
                "{case}: the dashboard has no panel for {metric}"
            );
        }
    }

    // commonLabels and annotations reach every object.
    if let Some(Value::Object(common)) = get(values, &["commonLabels"]) {
        for (meta, what) in all_metadata(r) {
            let labels = meta.labels.clone().unwrap_or_default();
            for (k, v) in common {
                assert_eq!(
                    labels.get(k).map(String::as_str),
                    v.as_str(),
                    "{case}: {what} lacks label {k}"
                );
            }
        }
    }
    if let Some(Value::Object(extra)) = get(values, &["annotations"]) {
        for (meta, what) in all_metadata(r) {
            let a = meta.annotations.clone().unwrap_or_default();
            for (k, v) in extra {
                assert_eq!(
                    a.get(k).map(String::as_str),
                    v.as_str(),
                    "{case}: {what} lacks annotation {k}"
                );
            }
        }
    }

    // The image: by digest when one is given, else the tag (default appVersion).
    let image = c.image.clone().expect("image");
    if let Some(digest) = get(values, &["image", "digest"]).and_then(Value::as_str) {
        assert!(image.ends_with(&format!("@{digest}")), "{case}: {image}");
    } else {
        assert!(image.starts_with("lb-l7-webhook:"), "{case}: {image}");
    }
}

fn all_metadata(
    r: &Rendered,
) -> Vec<(
    k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta,
    String,
)> {
    let mut out = Vec::new();
    macro_rules! add {
        ($v:expr, $kind:literal) => {
            for o in &$v {
                out.push((
                    o.metadata.clone(),
                    format!("{} {:?}", $kind, o.metadata.name),
                ));
            }
        };
    }
    add!(r.deployments, "Deployment");
    add!(r.services, "Service");
    add!(r.service_accounts, "ServiceAccount");
    add!(r.roles, "Role");
    add!(r.cluster_roles, "ClusterRole");
    add!(r.role_bindings, "RoleBinding");
    add!(r.cluster_role_bindings, "ClusterRoleBinding");
    add!(r.pdbs, "PodDisruptionBudget");
    add!(r.network_policies, "NetworkPolicy");
    add!(r.webhooks, "MutatingWebhookConfiguration");
    add!(r.config_maps, "ConfigMap");
    add!(r.secrets, "Secret");
    for c in &r.custom {
        let meta = serde_json::from_value(c["metadata"].clone()).expect("metadata");
        out.push((meta, format!("{} {}", c["kind"], c["metadata"]["name"])));
    }
    out
}

/// The "restricted" Pod Security Standard (v1.30+), as far as a pod template shows it. With hostNetwork the pod
/// is not even "baseline" (host namespaces); then everything else is still checked.
fn check_pod_security(case: &str, pod: &PodSpec, host_network: bool) {
    if host_network {
        println!(
            "{case}: hostNetwork pods do not meet the baseline Pod Security Standard; checking the rest"
        );
    } else {
        assert_ne!(pod.host_network, Some(true), "{case}: hostNetwork");
    }
    assert_ne!(pod.host_pid, Some(true), "{case}: hostPID");
    assert_ne!(pod.host_ipc, Some(true), "{case}: hostIPC");
    for v in pod.volumes.iter().flatten() {
        assert!(v.host_path.is_none(), "{case}: hostPath volume {}", v.name);
        let allowed = v.config_map.is_some()
            || v.secret.is_some()
            || v.empty_dir.is_some()
            || v.projected.is_some()
            || v.downward_api.is_some()
            || v.csi.is_some()
            || v.ephemeral.is_some()
            || v.persistent_volume_claim.is_some();
        assert!(
            allowed,
            "{case}: volume {} has a type the restricted standard forbids",
            v.name
        );
    }
    let psc = pod.security_context.clone().unwrap_or_default();
    assert_ne!(psc.run_as_user, Some(0), "{case}: pod runAsUser 0");
    let pod_seccomp = psc.seccomp_profile.as_ref().map(|s| s.type_.clone());
    for c in pod
        .containers
        .iter()
        .chain(pod.init_containers.iter().flatten())
    {
        let what = format!("{case}: container {}", c.name);
        let sc = c.security_context.clone().unwrap_or_default();
        assert_eq!(
            sc.allow_privilege_escalation,
            Some(false),
            "{what}: allowPrivilegeEscalation"
        );
        assert_ne!(sc.privileged, Some(true), "{what}: privileged");
        assert!(
            sc.run_as_non_root.or(psc.run_as_non_root) == Some(true),
            "{what}: runAsNonRoot (container or pod)"
        );
        assert_ne!(sc.run_as_user, Some(0), "{what}: runAsUser 0");
        let caps = sc.capabilities.clone().unwrap_or_default();
        assert!(
            caps.drop.iter().flatten().any(|d| d == "ALL"),
            "{what}: capabilities.drop ALL"
        );
        assert!(
            caps.add.iter().flatten().all(|a| a == "NET_BIND_SERVICE"),
            "{what}: only NET_BIND_SERVICE may be added"
        );
        let seccomp = sc
            .seccomp_profile
            .as_ref()
            .map(|s| s.type_.clone())
            .or(pod_seccomp.clone());
        assert!(
            matches!(seccomp.as_deref(), Some("RuntimeDefault" | "Localhost")),
            "{what}: seccompProfile RuntimeDefault"
        );
        if !host_network {
            for p in c.ports.iter().flatten() {
                assert!(p.host_port.is_none(), "{what}: hostPort");
            }
        }
    }
}

// ---------------------------------------------------------------------------------------------------------
// RBAC: exactly what each mode needs.

fn rule(groups: &[&str], resources: &[&str], names: &[&str], verbs: &[&str]) -> PolicyRule {
    let v = |s: &[&str]| s.iter().map(|x| x.to_string()).collect::<Vec<_>>();
    PolicyRule {
        api_groups: Some(v(groups)),
        resources: Some(v(resources)),
        resource_names: if names.is_empty() {
            None
        } else {
            Some(v(names))
        },
        verbs: v(verbs),
        non_resource_urls: None,
    }
}

fn check_rbac(r: &Rendered, mode: &str, reconciler: bool, fullname: &str) {
    let case = r.case.as_str();
    let mut want_roles: BTreeMap<String, Vec<PolicyRule>> = BTreeMap::new();
    let mut want_cluster_roles: BTreeMap<String, Vec<PolicyRule>> = BTreeMap::new();
    if mode == "self" {
        let secret = format!("{fullname}-certs");
        want_roles.insert(
            format!("{fullname}-certificates"),
            vec![
                rule(&[""], &["secrets"], &[], &["create"]),
                rule(
                    &[""],
                    &["secrets"],
                    &[&secret],
                    &["get", "list", "watch", "update", "patch"],
                ),
            ],
        );
        let config = r.webhook().metadata.name.clone().expect("name");
        want_cluster_roles.insert(
            format!("{fullname}-certificates"),
            vec![rule(
                &["admissionregistration.k8s.io"],
                &["mutatingwebhookconfigurations"],
                &[&config],
                &["get", "list", "watch", "update", "patch"],
            )],
        );
    }
    if reconciler {
        want_cluster_roles.insert(
            format!("{fullname}-reconciler"),
            vec![
                rule(&[""], &["namespaces"], &[], &["list", "watch"]),
                rule(&[""], &["services"], &[], &["list", "watch", "patch"]),
                rule(&[""], &["events"], &[], &["create", "patch"]),
                rule(&["events.k8s.io"], &["events"], &[], &["create", "patch"]),
            ],
        );
        want_roles.insert(
            format!("{fullname}-reconciler"),
            vec![
                rule(&["coordination.k8s.io"], &["leases"], &[], &["create"]),
                rule(
                    &["coordination.k8s.io"],
                    &["leases"],
                    &[LEASE],
                    &["get", "update"],
                ),
            ],
        );
    }
    let roles: BTreeMap<String, Vec<PolicyRule>> = r
        .roles
        .iter()
        .map(|x| {
            assert_eq!(
                x.metadata.namespace.as_deref(),
                Some(NAMESPACE),
                "{case}: Role namespace"
            );
            (
                x.metadata.name.clone().expect("name"),
                x.rules.clone().unwrap_or_default(),
            )
        })
        .collect();
    let cluster_roles: BTreeMap<String, Vec<PolicyRule>> = r
        .cluster_roles
        .iter()
        .map(|x| {
            assert!(x.aggregation_rule.is_none(), "{case}: no aggregation");
            (
                x.metadata.name.clone().expect("name"),
                x.rules.clone().unwrap_or_default(),
            )
        })
        .collect();
    assert_eq!(
        roles, want_roles,
        "{case}: Roles (mode {mode}, reconciler {reconciler})"
    );
    assert_eq!(
        cluster_roles, want_cluster_roles,
        "{case}: ClusterRoles (mode {mode}, reconciler {reconciler})"
    );

    // Each role is bound, once, to the chart's ServiceAccount and nothing else.
    let sa = r.service_accounts.first().expect("a ServiceAccount");
    assert_eq!(sa.metadata.name.as_deref(), Some(fullname), "{case}");
    assert_eq!(
        r.pod().service_account_name.as_deref(),
        Some(fullname),
        "{case}"
    );
    let subjects_ok = |subjects: &Option<Vec<k8s_openapi::api::rbac::v1::Subject>>| {
        let s = subjects.as_ref().expect("subjects");
        s.len() == 1
            && s[0].kind == "ServiceAccount"
            && s[0].name == fullname
            && s[0].namespace.as_deref() == Some(NAMESPACE)
    };
    let role_refs: Vec<String> = r
        .role_bindings
        .iter()
        .map(|b| {
            assert!(subjects_ok(&b.subjects), "{case}: RoleBinding subjects");
            assert_eq!(b.role_ref.kind, "Role", "{case}");
            b.role_ref.name.clone()
        })
        .collect();
    assert_eq!(role_refs.len(), want_roles.len(), "{case}: RoleBindings");
    assert!(
        want_roles.keys().all(|k| role_refs.contains(k)),
        "{case}: every Role bound"
    );
    let cluster_refs: Vec<String> = r
        .cluster_role_bindings
        .iter()
        .map(|b| {
            assert!(
                subjects_ok(&b.subjects),
                "{case}: ClusterRoleBinding subjects"
            );
            assert_eq!(b.role_ref.kind, "ClusterRole", "{case}");
            b.role_ref.name.clone()
        })
        .collect();
    assert_eq!(
        cluster_refs.len(),
        want_cluster_roles.len(),
        "{case}: ClusterRoleBindings"
    );
    assert!(
        want_cluster_roles.keys().all(|k| cluster_refs.contains(k)),
        "{case}: every ClusterRole bound"
    );
}

#[test]
fn rbac_is_minimal_for_each_mode() {
    let Some(helm) = helm() else { return };
    let ca_bundle =
        base64_encode(b"-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n");
    for mode in ["self", "cert-manager", "secret"] {
        for reconciler in [false, true] {
            let values = json!({
                "certificates": {"mode": mode, "secretName": if mode == "secret" { "mine" } else { "" }, "caBundle": ca_bundle},
                "reconciler": {"enabled": reconciler},
            });
            let r = render(
                &helm,
                &format!("rbac {mode} reconciler={reconciler}"),
                &values,
            );
            check_rbac(&r, mode, reconciler, RELEASE);
            let token = r.pod().automount_service_account_token;
            assert_eq!(
                token,
                Some(mode == "self" || reconciler),
                "{}: automountServiceAccountToken",
                r.case
            );
            if mode != "self" && !reconciler {
                assert!(
                    r.roles.is_empty() && r.cluster_roles.is_empty(),
                    "{}: no RBAC at all when serve calls no API",
                    r.case
                );
            }
        }
    }
}

// ---------------------------------------------------------------------------------------------------------
// Drift: the chart's webhook is what `lb-l7-webhook manifests` renders for the same policy.

/// `lb-l7-webhook manifests --policy FILE -o json`, its first webhook.
fn manifests_webhook(policy_file: &Path) -> Value {
    let out = Command::new(env!("CARGO_BIN_EXE_lb-l7-webhook"))
        .args(["manifests", "--policy"])
        .arg(policy_file)
        .args(["-o", "json"])
        .output()
        .expect("run lb-l7-webhook manifests");
    assert!(
        out.status.success(),
        "lb-l7-webhook manifests --policy {} failed:\n{}",
        policy_file.display(),
        String::from_utf8_lossy(&out.stderr)
    );
    let v: Value = serde_json::from_slice(&out.stdout).expect("manifests -o json prints JSON");
    v["webhooks"][0].clone()
}

fn without_client_config(mut hook: Value) -> Value {
    hook.as_object_mut()
        .expect("a webhook is an object")
        .remove("clientConfig");
    hook
}

#[test]
fn webhook_matches_manifests_for_every_policy() {
    let Some(helm) = helm() else { return };
    let base = yaml_file("deploy/base/policy.yaml");
    let with = |f: &dyn Fn(&mut serde_json::Map<String, Value>)| {
        let mut p = base.clone();
        f(p.as_object_mut().expect("policy is a map"));
        p
    };
    let policies: Vec<(&str, Value)> = vec![
        ("opt-in (default)", base.clone()),
        (
            "cluster-wide",
            yaml_file("deploy/overlays/cluster-wide/policy.yaml"),
        ),
        ("dry-run", yaml_file("deploy/overlays/dry-run/policy.yaml")),
        (
            "cluster, empty excludedNamespaces",
            with(&|p| {
                p.insert("scope".into(), json!("cluster"));
                p.insert("excludedNamespaces".into(), json!([]));
            }),
        ),
        (
            "opt-in, empty excludedNamespaces",
            with(&|p| {
                p.insert("excludedNamespaces".into(), json!([]));
            }),
        ),
        (
            "excludedNamespaces left out (serve's default list)",
            with(&|p| {
                p.remove("excludedNamespaces");
            }),
        ),
        (
            "only scope and rules (every other key serve's default)",
            with(&|p| {
                p.retain(|k, _| k == "scope" || k == "rules");
            }),
        ),
        (
            "custom timeout",
            with(&|p| {
                p.insert("timeoutSeconds".into(), json!(12));
            }),
        ),
        (
            "selector rule with algorithm, other excludes",
            with(&|p| {
                p.insert("scope".into(), json!("cluster"));
                p.insert(
                    "excludedNamespaces".into(),
                    json!(["kube-system", "payments-system", "lb-l7-system"]),
                );
                p.insert(
                "rules".into(),
                json!([
                    {"name": "payments", "selector": {"matchLabels": {"team": "payments"},
                        "matchExpressions": [{"key": "tier", "operator": "In", "values": ["backend"]}]},
                     "algorithm": "least_request"},
                    {"name": "grpc-ports", "ports": {}}
                ]),
            );
            }),
        ),
    ];
    let dir = tempfile::tempdir().expect("tempdir");
    for (i, (case, policy)) in policies.into_iter().enumerate() {
        let file = dir.path().join(format!("policy-{i}.yaml"));
        std::fs::write(&file, serde_json::to_vec_pretty(&policy).expect("json"))
            .expect("write policy");
        let want = manifests_webhook(&file);

        // Chart values: the policy as given; a key the policy leaves out is removed (null) from the chart's default.
        let mut chart_policy = policy.clone();
        for key in [
            "mode",
            "excludedNamespaces",
            "annotationKey",
            "timeoutSeconds",
        ] {
            if policy.get(key).is_none() {
                chart_policy[key] = Value::Null;
            }
        }
        let r = render(
            &helm,
            &format!("drift: {case}"),
            &json!({"policy": chart_policy}),
        );
        let got = serde_json::to_value(&r.webhook().webhooks.as_ref().expect("webhooks")[0])
            .expect("json");
        assert_eq!(
            without_client_config(got.clone()),
            without_client_config(want.clone()),
            "drift ({case}): the chart's webhook differs from `lb-l7-webhook manifests --policy`.\n\
             chart:     {got:#}\nmanifests: {want:#}\nFix charts/lb-l7-webhook/templates/mutatingwebhookconfiguration.yaml."
        );

        // The ConfigMap serve reads holds the same policy.
        let cm = r.config_map(&format!("{RELEASE}-policy"));
        let text = cm
            .data
            .as_ref()
            .and_then(|d| d.get("policy.yaml"))
            .expect("policy.yaml");
        let in_cm: Value = serde_saphyr::from_str(text).expect("the ConfigMap's policy is YAML");
        assert_eq!(
            in_cm, policy,
            "drift ({case}): the policy ConfigMap differs from the policy given"
        );
    }
}

#[test]
fn default_policy_is_deploy_base_policy() {
    let Some(helm) = helm() else { return };
    let r = render(&helm, "default policy", &json!({}));
    let cm = r.config_map(&format!("{RELEASE}-policy"));
    let text = cm
        .data
        .as_ref()
        .and_then(|d| d.get("policy.yaml"))
        .expect("policy.yaml");
    let in_cm: Value = serde_saphyr::from_str(text).expect("YAML");
    assert_eq!(
        in_cm,
        yaml_file("deploy/base/policy.yaml"),
        "values.yaml's policy drifted from deploy/base/policy.yaml"
    );
    assert_eq!(in_cm["scope"], "namespace-opt-in");
    assert_eq!(in_cm["mode"], "enforce");
}

#[test]
fn policy_change_rolls_the_pods() {
    let Some(helm) = helm() else { return };
    let checksum = |values: &Value| {
        let r = render(&helm, "checksum", values);
        let d = r.deployment();
        d.spec
            .template
            .metadata
            .as_ref()
            .and_then(|m| m.annotations.clone())
            .unwrap_or_default()["checksum/policy"]
            .clone()
    };
    let a = checksum(&json!({}));
    assert_eq!(
        a,
        checksum(&json!({"replicas": 3})),
        "only the policy moves the checksum"
    );
    assert_ne!(
        a,
        checksum(&json!({"policy": {"mode": "dry-run"}})),
        "a policy change must change the checksum"
    );
}

// ---------------------------------------------------------------------------------------------------------
// values.schema.json rejects bad values, naming the field.

#[test]
fn schema_rejects_bad_values() {
    let Some(helm) = helm() else { return };
    let cases: Vec<(Value, &str)> = vec![
        (json!({"replicas": "two"}), "/replicas"),
        (json!({"replicas": 0}), "/replicas"),
        (
            json!({"certificates": {"mode": "foo"}}),
            "/certificates/mode",
        ),
        (json!({"policy": {"scope": "everything"}}), "/policy/scope"),
        (json!({"policy": {"mode": "audit"}}), "/policy/mode"),
        (
            json!({"policy": {"timeoutSeconds": 60}}),
            "/policy/timeoutSeconds",
        ),
        (json!({"policy": {"rules": []}}), "/policy/rules"),
        (
            json!({"policy": {"rules": [{"name": "neither ports nor selector"}]}}),
            "/policy/rules/0",
        ),
        (
            json!({"policy": {"rules": [{"name": "r", "ports": {}, "algorithm": "fastest"}]}}),
            "/policy/rules/0/algorithm",
        ),
        (
            json!({"policy": {"rules": [{"name": "r", "port": {}}]}}),
            "port",
        ),
        (
            json!({"policy": {"excludedNamespaces": ["Kube_System"]}}),
            "/policy/excludedNamespaces/0",
        ),
        (json!({"policy": {"unknownKey": true}}), "unknownKey"),
        (json!({"bogus": 1}), "bogus"),
        (json!({"image": {"digest": "latest"}}), "/image/digest"),
        (
            json!({"image": {"pullPolicy": "Sometimes"}}),
            "/image/pullPolicy",
        ),
        (
            json!({"certificates": {"caValidity": "ten years"}}),
            "/certificates/caValidity",
        ),
        (json!({"ports": {"webhook": 70000}}), "/ports/webhook"),
        (json!({"hostNetwork": "yes"}), "/hostNetwork"),
        (json!({"logFormat": "xml"}), "/logFormat"),
        (
            json!({"reconciler": {"maxPatchesPerSecond": 0}}),
            "/reconciler/maxPatchesPerSecond",
        ),
        (json!({"commonLabels": {"team": 5}}), "/commonLabels/team"),
    ];
    for (values, field) in cases {
        match template(&helm, &values) {
            Ok(_) => panic!("values {values} were accepted; values.schema.json should reject them"),
            Err(stderr) => assert!(
                stderr.contains(field),
                "values {values}: the error does not name {field}:\n{stderr}"
            ),
        }
    }
    // Mode-dependent requirements fail in the templates with a message that says what to set.
    let ca_bundle =
        base64_encode(b"-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n");
    let cases: Vec<(Value, &str)> = vec![
        (
            json!({"certificates": {"mode": "secret", "caBundle": ca_bundle}}),
            "certificates.secretName is required",
        ),
        (
            json!({"certificates": {"mode": "secret", "secretName": "t"}}),
            "certificates.caBundle is required",
        ),
        (
            json!({"certificates": {"mode": "secret", "secretName": "t", "caBundle": "Zm9vCg=="}}),
            "certificates.caBundle must be base64 of PEM",
        ),
    ];
    for (values, message) in cases {
        match template(&helm, &values) {
            Ok(_) => panic!("values {values} were accepted"),
            Err(stderr) => assert!(
                stderr.contains(message),
                "values {values}: expected {message:?} in:\n{stderr}"
            ),
        }
    }
}

/// `report --cluster`, `backfill` and `doctor` follow the chart's Deployment to the policy it mounts: for every
/// render of the matrix, the webhook configuration's Service selects the Deployment's pods, and the Deployment's
/// `--policy` resolves to the chart's policy ConfigMap (key `policy.yaml`), which holds a valid policy.
#[test]
fn the_installed_policy_is_followed_from_the_chart_deployment() {
    use lb_l7_webhook::cluster::policy_source::{Mounted, resolve};
    let Some(helm) = helm() else { return };
    for (case, values) in matrix() {
        let r = render(&helm, case, &values);
        let d = r.deployment();
        let fullname = d.metadata.name.clone().expect("name");
        let hook_service = r.webhooks[0].webhooks.as_ref().expect("webhooks")[0]
            .client_config
            .service
            .clone()
            .expect("service");
        let svc = r
            .services
            .iter()
            .find(|s| s.metadata.name.as_deref() == Some(hook_service.name.as_str()))
            .unwrap_or_else(|| panic!("{case}: the webhook's Service is rendered"));
        let selector = svc
            .spec
            .as_ref()
            .and_then(|s| s.selector.clone())
            .expect("selector");
        let labels = d
            .spec
            .template
            .metadata
            .as_ref()
            .and_then(|m| m.labels.clone())
            .expect("pod labels");
        assert!(
            selector.iter().all(|(k, v)| labels.get(k) == Some(v)),
            "{case}: the Service selects the Deployment's pods"
        );
        let want = Mounted::ConfigMap {
            name: format!("{fullname}-policy"),
            key: "policy.yaml".into(),
        };
        assert_eq!(resolve(d), Ok(want), "{case}");
        let cm = r.config_map(&format!("{fullname}-policy"));
        let text = cm
            .data
            .as_ref()
            .and_then(|m| m.get("policy.yaml"))
            .expect("policy.yaml");
        lb_l7_core::policy::Policy::from_yaml(text)
            .unwrap_or_else(|e| panic!("{case}: the chart's policy is invalid: {e}"));
    }
}
