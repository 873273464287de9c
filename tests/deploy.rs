//! deploy/: every overlay renders with `kubectl kustomize`, every object is a valid Kubernetes object of its
//! kind, the webhook configuration is exactly what `lb-l7-webhook manifests` renders for the overlay's policy
//! (fails on drift), the pods meet the "restricted" Pod Security Standard, and the Deployment's flags, volumes,
//! ports, probes and Secret names fit together.
//!
//! Needs `kubectl` (it embeds kustomize and works offline); without it each test prints a skip line and passes.

#[path = "typed_support/mod.rs"]
mod typed_support;
use typed_support::typed;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;

use clap::Parser;
use k8s_openapi::api::admissionregistration::v1::MutatingWebhookConfiguration;
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{
    ConfigMap, Container, Namespace, PodSpec, Service, ServiceAccount,
};
use k8s_openapi::api::policy::v1::PodDisruptionBudget;
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use kube::api::DynamicObject;
use lb_l7_core::policy::Policy;
use lb_l7_core::render::{CaSource, RenderOptions, render_webhook_configuration};
use lb_l7_webhook::server::ServeArgs;
use serde_json::Value;

const OVERLAYS: [&str; 4] = [
    "cluster-wide",
    "namespace-opt-in",
    "dry-run",
    "cert-manager",
];

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// `kubectl kustomize DIR`, or `None` (with a skip line) when kubectl is not installed.
fn kustomize(dir: &Path) -> Option<String> {
    let out = match Command::new("kubectl").arg("kustomize").arg(dir).output() {
        Ok(out) => out,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            println!("SKIPPED: kubectl not found; deploy/ was not rendered");
            return None;
        }
        Err(e) => panic!("running kubectl kustomize {}: {e}", dir.display()),
    };
    assert!(
        out.status.success(),
        "kubectl kustomize {} failed:\n{}",
        dir.display(),
        String::from_utf8_lossy(&out.stderr)
    );
    Some(String::from_utf8(out.stdout).expect("kustomize output is UTF-8"))
}

/// Every object of an overlay, typed.
#[derive(Default)]
struct Rendered {
    namespaces: Vec<Namespace>,
    service_accounts: Vec<ServiceAccount>,
    config_maps: Vec<ConfigMap>,
    deployments: Vec<Deployment>,
    services: Vec<Service>,
    pdbs: Vec<PodDisruptionBudget>,
    webhooks: Vec<MutatingWebhookConfiguration>,
    /// cert-manager's Issuers and Certificates (no k8s-openapi type: CRDs).
    cert_manager: Vec<DynamicObject>,
}

fn parse(overlay: &str, text: &str) -> Rendered {
    let docs: Vec<Value> = serde_saphyr::from_multiple(text)
        .unwrap_or_else(|e| panic!("{overlay}: kustomize output is not YAML: {e}"));
    let mut r = Rendered::default();
    for doc in docs.into_iter().filter(|d| !d.is_null()) {
        let api_version = doc["apiVersion"].as_str().unwrap_or_default().to_string();
        let kind = doc["kind"].as_str().unwrap_or_default().to_string();
        let what = format!(
            "{overlay}: {kind} {}",
            doc["metadata"]["name"].as_str().unwrap_or("?")
        );
        match (api_version.as_str(), kind.as_str()) {
            ("v1", "Namespace") => r.namespaces.push(typed(&doc, &what)),
            ("v1", "ServiceAccount") => r.service_accounts.push(typed(&doc, &what)),
            ("v1", "ConfigMap") => r.config_maps.push(typed(&doc, &what)),
            ("v1", "Service") => r.services.push(typed(&doc, &what)),
            ("apps/v1", "Deployment") => r.deployments.push(typed(&doc, &what)),
            ("policy/v1", "PodDisruptionBudget") => r.pdbs.push(typed(&doc, &what)),
            ("admissionregistration.k8s.io/v1", "MutatingWebhookConfiguration") => {
                r.webhooks.push(typed(&doc, &what))
            }
            ("cert-manager.io/v1", "Issuer" | "Certificate") => {
                r.cert_manager.push(typed(&doc, &what))
            }
            _ => panic!("{what}: unexpected {api_version} {kind}; teach tests/deploy.rs its type"),
        }
    }
    r
}

fn render(overlay: &str) -> Option<Rendered> {
    let text = kustomize(&repo().join("deploy/overlays").join(overlay))?;
    Some(parse(overlay, &text))
}

fn one<'a, T>(items: &'a [T], what: &str) -> &'a T {
    assert_eq!(items.len(), 1, "expected exactly one {what}");
    &items[0]
}

/// The policy in the overlay's ConfigMap, parsed and validated as `serve` does.
fn policy_of(r: &Rendered, overlay: &str) -> Policy {
    let cm = one(&r.config_maps, "ConfigMap");
    let text = cm
        .data
        .as_ref()
        .and_then(|d| d.get("policy.yaml"))
        .unwrap_or_else(|| panic!("{overlay}: the ConfigMap has no policy.yaml"));
    Policy::from_yaml(text).unwrap_or_else(|e| panic!("{overlay}: policy.yaml: {e}"))
}

fn expected_ca(overlay: &str) -> CaSource {
    match overlay {
        "cert-manager" => CaSource::CertManager {
            certificate: "lb-l7-system/lb-l7-webhook".into(),
        },
        _ => CaSource::Absent,
    }
}

#[test]
fn every_overlay_renders_and_every_object_is_typed() {
    for overlay in OVERLAYS {
        let Some(r) = render(overlay) else { return };
        assert_eq!(r.namespaces.len(), 1, "{overlay}");
        assert_eq!(r.service_accounts.len(), 1, "{overlay}");
        assert_eq!(r.deployments.len(), 1, "{overlay}");
        assert_eq!(r.services.len(), 1, "{overlay}");
        assert_eq!(r.pdbs.len(), 1, "{overlay}");
        assert_eq!(r.webhooks.len(), 1, "{overlay}");
        assert_eq!(
            r.cert_manager.is_empty(),
            overlay != "cert-manager",
            "{overlay}"
        );
    }
}

#[test]
fn webhook_configuration_equals_what_manifests_renders_for_the_overlay_policy() {
    for overlay in OVERLAYS {
        let Some(r) = render(overlay) else { return };
        let policy = policy_of(&r, overlay);
        let opts = RenderOptions {
            ca: expected_ca(overlay),
            ..RenderOptions::default()
        };
        let expected = render_webhook_configuration(&policy, &opts);
        let actual = one(&r.webhooks, "MutatingWebhookConfiguration");
        if actual != &expected {
            let show = |c: &MutatingWebhookConfiguration| {
                serde_saphyr::to_string(c).unwrap_or_else(|e| e.to_string())
            };
            panic!(
                "deploy/overlays/{overlay}: the webhook configuration drifted from its policy.\n\
                 --- in the overlay (kubectl kustomize) ---\n{}\n\
                 --- lb-l7-webhook manifests renders ---\n{}\n\
                 Fix the overlay's patch (or deploy/base/mutatingwebhookconfiguration.yaml) to match.",
                show(actual),
                show(&expected)
            );
        }
    }
}

/// The checks of the "restricted" Pod Security Standard (and then some: a read-only root filesystem).
fn assert_restricted(spec: &PodSpec, what: &str) {
    let pod_sc = spec.security_context.clone().unwrap_or_default();
    assert_ne!(spec.host_network, Some(true), "{what}: hostNetwork");
    assert_ne!(spec.host_pid, Some(true), "{what}: hostPID");
    assert_ne!(spec.host_ipc, Some(true), "{what}: hostIPC");
    for v in spec.volumes.iter().flatten() {
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
            "{what}: volume {} is of a type restricted forbids",
            v.name
        );
    }
    let pod_seccomp = pod_sc.seccomp_profile.as_ref().map(|p| p.type_.as_str());
    let containers: Vec<&Container> = spec
        .containers
        .iter()
        .chain(spec.init_containers.iter().flatten())
        .collect();
    assert!(!containers.is_empty());
    for c in containers {
        let what = format!("{what}, container {}", c.name);
        let sc = c
            .security_context
            .clone()
            .unwrap_or_else(|| panic!("{what}: no securityContext"));
        assert_ne!(sc.privileged, Some(true), "{what}: privileged");
        assert_eq!(
            sc.allow_privilege_escalation,
            Some(false),
            "{what}: allowPrivilegeEscalation"
        );
        let caps = sc.capabilities.clone().unwrap_or_default();
        assert!(
            caps.drop.iter().flatten().any(|c| c == "ALL"),
            "{what}: capabilities must drop ALL"
        );
        assert!(
            caps.add.iter().flatten().all(|c| c == "NET_BIND_SERVICE"),
            "{what}: only NET_BIND_SERVICE may be added"
        );
        let non_root = sc.run_as_non_root.or(pod_sc.run_as_non_root);
        assert_eq!(non_root, Some(true), "{what}: runAsNonRoot");
        let uid = sc.run_as_user.or(pod_sc.run_as_user);
        assert_ne!(uid, Some(0), "{what}: runAsUser 0");
        let seccomp = sc
            .seccomp_profile
            .as_ref()
            .map(|p| p.type_.as_str())
            .or(pod_seccomp);
        assert!(
            matches!(seccomp, Some("RuntimeDefault" | "Localhost")),
            "{what}: seccompProfile must be RuntimeDefault or Localhost, is {seccomp:?}"
        );
        assert_eq!(
            sc.read_only_root_filesystem,
            Some(true),
            "{what}: readOnlyRootFilesystem"
        );
        for p in c.ports.iter().flatten() {
            assert!(p.host_port.unwrap_or(0) == 0, "{what}: hostPort");
        }
    }
}

#[test]
fn deployment_meets_the_restricted_pod_security_standard() {
    for overlay in OVERLAYS {
        let Some(r) = render(overlay) else { return };
        let d = one(&r.deployments, "Deployment");
        let spec = d.spec.template.spec.as_ref().expect("pod spec");
        assert_restricted(spec, &format!("{overlay}: Deployment"));
        let ns = one(&r.namespaces, "Namespace");
        let labels = ns.metadata.labels.clone().unwrap_or_default();
        assert_eq!(
            labels
                .get("pod-security.kubernetes.io/enforce")
                .map(String::as_str),
            Some("restricted"),
            "{overlay}: the namespace should enforce restricted"
        );
    }
}

/// `lb-l7-webhook serve ...` parsed by the real `ServeArgs`, as main.rs does.
#[derive(Parser, Debug)]
struct Cli {
    #[arg(long, global = true)]
    log_format: Option<String>,
    #[command(subcommand)]
    command: Sub,
}

#[derive(clap::Subcommand, Debug)]
enum Sub {
    Serve(ServeArgs),
}

fn port_number(c: &Container, port: &IntOrString) -> i32 {
    match port {
        IntOrString::Int(n) => *n,
        IntOrString::String(name) => {
            c.ports
                .iter()
                .flatten()
                .find(|p| p.name.as_deref() == Some(name))
                .unwrap_or_else(|| panic!("container has no port named {name}"))
                .container_port
        }
    }
}

#[test]
fn deployment_flags_volumes_ports_and_probes_fit_together() {
    for overlay in OVERLAYS {
        let Some(r) = render(overlay) else { return };
        let d = one(&r.deployments, "Deployment");
        let dspec = &d.spec;
        assert_eq!(dspec.replicas, Some(2), "{overlay}: replicas");
        let pod = dspec.template.spec.as_ref().expect("pod spec");
        assert_eq!(
            pod.automount_service_account_token,
            Some(false),
            "{overlay}"
        );
        let sa = one(&r.service_accounts, "ServiceAccount");
        assert_eq!(pod.service_account_name, sa.metadata.name, "{overlay}");
        assert_eq!(sa.automount_service_account_token, Some(false), "{overlay}");
        assert!(
            pod.topology_spread_constraints
                .iter()
                .flatten()
                .any(|t| t.topology_key == "kubernetes.io/hostname"),
            "{overlay}: pods are spread across nodes"
        );
        let pod_labels = dspec
            .template
            .metadata
            .as_ref()
            .and_then(|m| m.labels.clone())
            .unwrap_or_default();
        let selects =
            |sel: &BTreeMap<String, String>| sel.iter().all(|(k, v)| pod_labels.get(k) == Some(v));

        let c = one(&pod.containers, "container");
        let mut argv = vec!["lb-l7-webhook".to_string()];
        argv.extend(c.args.iter().flatten().cloned());
        let cli = Cli::try_parse_from(&argv)
            .unwrap_or_else(|e| panic!("{overlay}: the container's args do not parse: {e}"));
        assert_eq!(cli.log_format.as_deref(), Some("json"), "{overlay}");
        let Sub::Serve(serve) = cli.command;

        // Every file serve reads is on a mounted volume of the right source.
        let mounts = c.volume_mounts.clone().unwrap_or_default();
        let volume = |name: &str| {
            pod.volumes
                .iter()
                .flatten()
                .find(|v| v.name == name)
                .unwrap_or_else(|| panic!("{overlay}: no volume {name}"))
                .clone()
        };
        let policy_path = serve.policy.clone().expect("--policy");
        let policy_mount = mounts
            .iter()
            .find(|m| Path::new(&m.mount_path) == policy_path)
            .unwrap_or_else(|| {
                panic!(
                    "{overlay}: --policy {} is not mounted",
                    policy_path.display()
                )
            });
        let cm_name = volume(&policy_mount.name)
            .config_map
            .expect("policy from a ConfigMap")
            .name;
        let cm = one(&r.config_maps, "ConfigMap");
        assert_eq!(
            cm.metadata.name.as_ref(),
            Some(&cm_name),
            "{overlay}: policy ConfigMap name"
        );
        assert_eq!(policy_mount.sub_path.as_deref(), Some("policy.yaml"));

        let cert = serve.tls_cert.clone().expect("--tls-cert");
        let key = serve.tls_key.clone().expect("--tls-key");
        assert_eq!(
            cert.parent(),
            key.parent(),
            "{overlay}: cert and key in one directory"
        );
        let tls_mount = mounts
            .iter()
            .find(|m| Some(Path::new(&m.mount_path)) == cert.parent())
            .unwrap_or_else(|| panic!("{overlay}: the directory of --tls-cert is not a mount"));
        assert!(
            tls_mount.sub_path.is_none(),
            "{overlay}: a subPath mount never sees a rotated Secret"
        );
        let secret = volume(&tls_mount.name).secret.expect("TLS from a Secret");
        let secret_name = secret.secret_name.expect("secretName");
        assert_eq!(secret.default_mode, Some(0o440), "{overlay}: TLS file mode");
        assert_eq!(cert.file_name().and_then(|f| f.to_str()), Some("tls.crt"));
        assert_eq!(key.file_name().and_then(|f| f.to_str()), Some("tls.key"));
        if overlay == "cert-manager" {
            let cert_obj = r
                .cert_manager
                .iter()
                .find(|o| o.metadata.name.as_deref() == Some("lb-l7-webhook"))
                .expect("Certificate lb-l7-webhook");
            assert_eq!(
                cert_obj.data["spec"]["secretName"],
                secret_name.as_str(),
                "{overlay}"
            );
            let dns: Vec<&str> = cert_obj.data["spec"]["dnsNames"]
                .as_array()
                .expect("dnsNames")
                .iter()
                .filter_map(Value::as_str)
                .collect();
            assert!(dns.contains(&"lb-l7-webhook.lb-l7-system.svc"), "{dns:?}");
            // Each issuerRef names an Issuer in the overlay.
            for o in r
                .cert_manager
                .iter()
                .filter(|o| o.types.as_ref().is_some_and(|t| t.kind == "Certificate"))
            {
                let issuer = o.data["spec"]["issuerRef"]["name"]
                    .as_str()
                    .expect("issuerRef.name");
                assert!(
                    r.cert_manager.iter().any(|i| i
                        .types
                        .as_ref()
                        .is_some_and(|t| t.kind == "Issuer")
                        && i.metadata.name.as_deref() == Some(issuer)),
                    "{overlay}: Issuer {issuer} is missing"
                );
            }
        } else {
            assert_eq!(
                secret_name, "lb-l7-webhook-tls",
                "the name `certs --secret-manifest` writes"
            );
        }

        // Ports: Service 443 -> the container port serve listens on; probes on serve's probe port.
        let svc = one(&r.services, "Service");
        let sspec = svc.spec.as_ref().expect("service spec");
        assert!(
            selects(sspec.selector.as_ref().expect("selector")),
            "{overlay}: Service selects the pods"
        );
        let sport = one(sspec.ports.as_deref().unwrap_or_default(), "Service port");
        assert_eq!(sport.port, 443);
        let target = port_number(c, sport.target_port.as_ref().expect("targetPort"));
        assert_eq!(
            target,
            i32::from(serve.listen.port()),
            "{overlay}: Service targetPort = --listen"
        );
        for (what, probe, path) in [
            ("readiness", c.readiness_probe.as_ref(), "/readyz"),
            ("liveness", c.liveness_probe.as_ref(), "/healthz"),
        ] {
            let get = probe
                .and_then(|p| p.http_get.as_ref())
                .unwrap_or_else(|| panic!("{overlay}: {what} probe"));
            assert_eq!(get.path.as_deref(), Some(path));
            assert_eq!(
                port_number(c, &get.port),
                i32::from(serve.probe_listen.port()),
                "{overlay}: {what} port"
            );
        }
        let sleep = c
            .lifecycle
            .as_ref()
            .and_then(|l| l.pre_stop.as_ref())
            .and_then(|p| p.sleep.as_ref())
            .unwrap_or_else(|| panic!("{overlay}: preStop sleep"));
        let grace = pod.termination_grace_period_seconds.unwrap_or(30);
        assert!(
            sleep.seconds + serve.drain_timeout.as_secs() as i64 <= grace,
            "{overlay}: preStop sleep + drain timeout must fit in terminationGracePeriodSeconds"
        );
        let res = c.resources.as_ref().expect("resources");
        for key in ["cpu", "memory"] {
            assert!(
                res.requests.as_ref().is_some_and(|m| m.contains_key(key)),
                "{overlay}: requests.{key}"
            );
        }
        assert!(
            res.limits
                .as_ref()
                .is_some_and(|m| m.contains_key("memory")),
            "{overlay}: limits.memory"
        );

        // The PDB covers the pods, and the webhook's Service reference is this Service.
        let pdb = one(&r.pdbs, "PodDisruptionBudget");
        let pdb_sel = pdb
            .spec
            .as_ref()
            .and_then(|s| s.selector.as_ref())
            .and_then(|s| s.match_labels.clone());
        assert!(
            selects(&pdb_sel.unwrap_or_default()),
            "{overlay}: PDB selects the pods"
        );
        let wh = one(&r.webhooks, "webhook configuration");
        let svc_ref = wh
            .webhooks
            .as_ref()
            .and_then(|w| w[0].client_config.service.clone())
            .expect("service ref");
        assert_eq!(Some(&svc_ref.name), svc.metadata.name.as_ref());
        assert_eq!(Some(&svc_ref.namespace), svc.metadata.namespace.as_ref());
        assert_eq!(svc_ref.port, Some(sport.port));
    }
}

#[test]
fn the_webhook_never_sees_its_own_namespace() {
    for overlay in OVERLAYS {
        let Some(r) = render(overlay) else { return };
        let policy = policy_of(&r, overlay);
        let ns = one(&r.namespaces, "Namespace");
        let name = ns.metadata.name.clone().expect("namespace name");
        assert!(
            policy.is_excluded(&name),
            "{overlay}: {name} must be in excludedNamespaces, or the webhook would gate its own Service"
        );
        for o in [
            &r.deployments[0].metadata,
            &r.services[0].metadata,
            &r.config_maps[0].metadata,
        ] {
            assert_eq!(o.namespace.as_ref(), Some(&name), "{overlay}");
        }
    }
}

#[test]
fn overlay_modes_and_scopes_are_what_their_names_say() {
    use lb_l7_core::policy::{Mode, Scope};
    let expect = [
        ("cluster-wide", Scope::Cluster, Mode::Enforce),
        ("namespace-opt-in", Scope::NamespaceOptIn, Mode::Enforce),
        ("dry-run", Scope::Cluster, Mode::DryRun),
        ("cert-manager", Scope::NamespaceOptIn, Mode::Enforce),
    ];
    for (overlay, scope, mode) in expect {
        let Some(r) = render(overlay) else { return };
        let p = policy_of(&r, overlay);
        assert_eq!((p.scope, p.mode), (scope, mode), "{overlay}");
    }
    // The base ships the built-in default policy unchanged.
    let base = std::fs::read_to_string(repo().join("deploy/base/policy.yaml"))
        .expect("deploy/base/policy.yaml");
    assert_eq!(
        Policy::from_yaml(&base).expect("base policy"),
        Policy::default()
    );
}

#[test]
fn the_manifests_command_prints_each_overlays_webhook_configuration() {
    for overlay in OVERLAYS {
        let Some(r) = render(overlay) else { return };
        let text = one(&r.config_maps, "ConfigMap")
            .data
            .as_ref()
            .and_then(|d| d.get("policy.yaml"))
            .cloned()
            .expect("policy.yaml");
        let dir = tempfile::tempdir().expect("temp dir");
        let policy = dir.path().join("policy.yaml");
        std::fs::write(&policy, text).expect("write policy");
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_lb-l7-webhook"));
        cmd.args(["manifests", "-o", "json", "--policy"])
            .arg(&policy);
        if overlay == "cert-manager" {
            cmd.args(["--cert-manager", "lb-l7-system/lb-l7-webhook"]);
        }
        let out = cmd.output().expect("run lb-l7-webhook manifests");
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let printed: MutatingWebhookConfiguration = serde_json::from_slice(&out.stdout)
            .expect("manifests prints a MutatingWebhookConfiguration");
        assert_eq!(
            &printed,
            one(&r.webhooks, "webhook configuration"),
            "{overlay}"
        );
    }
}

/// deploy/overlays/reconciler: the base plus `serve --reconcile` (flags `serve` accepts), a token, and exactly
/// the reconciler's RBAC (the chart's `reconciler.enabled=true`).
#[test]
fn the_reconciler_overlay_runs_serve_reconcile_with_exactly_its_rbac() {
    let Some(text) = kustomize(&repo().join("deploy/overlays/reconciler")) else {
        return;
    };
    let docs: Vec<Value> = serde_saphyr::from_multiple(&text).expect("YAML");
    let find = |kind: &str| -> Vec<&Value> { docs.iter().filter(|d| d["kind"] == kind).collect() };
    let d: Deployment = serde_json::from_value(find("Deployment")[0].clone()).expect("Deployment");
    let pod = d.spec.template.spec.clone().expect("pod spec");
    assert_eq!(pod.automount_service_account_token, Some(true));
    let c = &pod.containers[0];
    let args = c.args.clone().unwrap_or_default();
    let cli = Cli::try_parse_from(std::iter::once("lb-l7-webhook".to_string()).chain(args))
        .expect("serve accepts the overlay's flags");
    let Sub::Serve(serve) = cli.command;
    assert!(serve.reconcile.enabled);
    assert_eq!(serve.reconcile.flags.max_patches_per_second, 10.0);
    let env: Vec<_> = c.env.iter().flatten().map(|e| e.name.as_str()).collect();
    assert_eq!(env, ["POD_NAME", "POD_NAMESPACE"]);
    let rules = |kind: &str| -> Value { find(kind)[0]["rules"].clone() };
    assert_eq!(
        rules("ClusterRole"),
        serde_json::json!([
            {"apiGroups": [""], "resources": ["namespaces"], "verbs": ["list", "watch"]},
            {"apiGroups": [""], "resources": ["services"], "verbs": ["list", "watch", "patch"]},
            {"apiGroups": [""], "resources": ["events"], "verbs": ["create", "patch"]},
            {"apiGroups": ["events.k8s.io"], "resources": ["events"], "verbs": ["create", "patch"]},
        ])
    );
    assert_eq!(
        rules("Role"),
        serde_json::json!([
            {"apiGroups": ["coordination.k8s.io"], "resources": ["leases"], "verbs": ["create"]},
            {"apiGroups": ["coordination.k8s.io"], "resources": ["leases"],
             "resourceNames": [lb_l7_webhook::cluster::lease::LEASE_NAME], "verbs": ["get", "update"]},
        ])
    );
    assert_eq!(find("Role")[0]["metadata"]["namespace"], "lb-l7-system");
    for binding in ["ClusterRoleBinding", "RoleBinding"] {
        assert_eq!(
            find(binding)[0]["subjects"],
            serde_json::json!([{"kind": "ServiceAccount", "name": "lb-l7-webhook", "namespace": "lb-l7-system"}])
        );
    }
}
