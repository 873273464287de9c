//! The policy the installed webhook really runs, followed the way the API server and the kubelet follow it:
//!
//! MutatingWebhookConfiguration (`lb-l7-webhook`) -> its `clientConfig.service` -> that Service's selector -> the
//! Deployment(s) of that namespace whose pod template carries those labels -> the container's `--policy PATH`
//! (or `LB_L7_POLICY`) -> the volume mounted at PATH -> its ConfigMap and key -> [`Policy::from_yaml`].
//!
//! This works for the kustomize base (configMapGenerator's hashed name, mounted with `subPath`) and for the Helm
//! chart, and never guesses by name: kustomize keeps old generations of the ConfigMap (an old dry-run policy
//! included) until they are pruned, and only the one the pods mount is the policy that runs.
//!
//! [`discover`] does the reads; [`resolve`] is the pure step from what was read to the ConfigMap to read.

use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};

use k8s_openapi::api::admissionregistration::v1::MutatingWebhookConfiguration;
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{ConfigMap, Container, Service};
use kube::Client;
use kube::api::{Api, ListParams};
use lb_l7_core::policy::{Mode, Policy, Scope};

use super::{ClusterError, Lookup, list_all, lookup};

/// The MutatingWebhookConfiguration's name in the shipped manifests and the chart.
pub const DEFAULT_WEBHOOK_NAME: &str = "lb-l7-webhook";
/// The key a policy ConfigMap holds the policy under when nothing else says.
pub const DEFAULT_POLICY_KEY: &str = "policy.yaml";

/// Where a policy came from.
#[derive(Debug, Clone, PartialEq)]
pub enum Origin {
    /// The ConfigMap the webhook's pods mount at `--policy` (`deployment` is `namespace/name`), or the ConfigMap
    /// named explicitly (doctor's `--policy-configmap`; `deployment` is then `None`).
    ConfigMap {
        namespace: String,
        name: String,
        key: String,
        deployment: Option<String>,
    },
    /// A policy file given with `--policy`.
    File(PathBuf),
    /// No webhook is installed (no MutatingWebhookConfiguration of that name): the built-in default.
    BuiltInNoWebhook { webhook: String },
    /// The webhook's Deployment runs `serve` without `--policy`: the built-in default.
    BuiltInNoPolicyFlag { deployment: String },
}

impl fmt::Display for Origin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Origin::ConfigMap {
                namespace,
                name,
                key,
                deployment: Some(d),
            } => write!(
                f,
                "ConfigMap {namespace}/{name} key {key}, via Deployment {d}"
            ),
            Origin::ConfigMap {
                namespace,
                name,
                key,
                deployment: None,
            } => write!(f, "ConfigMap {namespace}/{name} key {key}"),
            Origin::File(path) => write!(f, "file {}", path.display()),
            Origin::BuiltInNoWebhook { webhook } => write!(
                f,
                "built-in default (no webhook installed: MutatingWebhookConfiguration {webhook} not found)"
            ),
            Origin::BuiltInNoPolicyFlag { deployment } => write!(
                f,
                "built-in default (Deployment {deployment} runs the webhook without --policy)"
            ),
        }
    }
}

/// A policy and where it came from.
#[derive(Debug, Clone, PartialEq)]
pub struct PolicySource {
    pub policy: Policy,
    pub origin: Origin,
}

pub fn scope_name(scope: Scope) -> &'static str {
    match scope {
        Scope::Cluster => "cluster",
        Scope::NamespaceOptIn => "namespace-opt-in",
    }
}

pub fn mode_name(mode: Mode) -> &'static str {
    match mode {
        Mode::Enforce => "enforce",
        Mode::DryRun => "dry-run",
    }
}

impl PolicySource {
    /// `ConfigMap lb-l7-system/lb-l7-webhook-policy-7g9k2m5f8t key policy.yaml, via Deployment
    /// lb-l7-system/lb-l7-webhook (scope cluster, mode enforce)`.
    pub fn describe(&self) -> String {
        format!(
            "{} (scope {}, mode {})",
            self.origin,
            scope_name(self.policy.scope),
            mode_name(self.policy.mode)
        )
    }
}

/// Why the installed policy could not be found, in words, with a command that fixes it.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("cannot tell which policy the installed webhook runs: {message}")]
pub struct PolicyProblem {
    pub message: String,
    pub fix: String,
}

/// What [`discover`] found: the installed policy, or why it is not known.
pub type Discovery = Result<PolicySource, PolicyProblem>;

/// The `--policy` path of a container (`--policy PATH`, `--policy=PATH`, else the env `LB_L7_POLICY`).
pub fn policy_path_of(container: &Container) -> Option<String> {
    let words: Vec<&str> = container
        .command
        .iter()
        .flatten()
        .chain(container.args.iter().flatten())
        .map(String::as_str)
        .collect();
    for (i, w) in words.iter().enumerate() {
        if *w == "--policy" {
            return words.get(i + 1).map(|s| s.to_string());
        }
        if let Some(path) = w.strip_prefix("--policy=") {
            return Some(path.to_string());
        }
    }
    container
        .env
        .iter()
        .flatten()
        .find(|e| e.name == "LB_L7_POLICY")
        .and_then(|e| e.value.clone())
}

/// Whether a container runs the webhook server (`serve` among its words, or a `--policy`).
fn runs_serve(container: &Container) -> bool {
    container
        .command
        .iter()
        .flatten()
        .chain(container.args.iter().flatten())
        .any(|w| w == "serve")
}

fn deployment_name(d: &Deployment) -> String {
    format!(
        "{}/{}",
        d.metadata.namespace.as_deref().unwrap_or(""),
        d.metadata.name.as_deref().unwrap_or("")
    )
}

/// Where a Deployment's webhook reads its policy.
#[derive(Debug, Clone, PartialEq)]
pub enum Mounted {
    /// `key` of ConfigMap `name` (in the Deployment's namespace).
    ConfigMap { name: String, key: String },
    /// No `--policy`: the built-in default.
    BuiltIn,
}

/// The pure step: from one Deployment to the ConfigMap (and key) mounted at its webhook container's `--policy`.
pub fn resolve(deployment: &Deployment) -> Result<Mounted, String> {
    let who = format!("Deployment {}", deployment_name(deployment));
    let pod = deployment
        .spec
        .template
        .spec
        .as_ref()
        .ok_or_else(|| format!("{who} has no pod template"))?;
    let with_policy = pod
        .containers
        .iter()
        .find_map(|c| Some((c, policy_path_of(c)?)));
    let (container, path) = match with_policy {
        Some(found) => found,
        None if pod.containers.iter().any(runs_serve) => return Ok(Mounted::BuiltIn),
        None => {
            return Err(format!(
                "{who}: no container runs `lb-l7-webhook serve` (no `serve` or `--policy` in its command or args)"
            ));
        }
    };
    let target = Path::new(&path);
    // The mount that holds the path: the exact file (subPath), else the deepest directory above it.
    let mount = container
        .volume_mounts
        .iter()
        .flatten()
        .filter(|m| {
            let at = Path::new(&m.mount_path);
            target == at || target.starts_with(at)
        })
        .max_by_key(|m| m.mount_path.len())
        .ok_or_else(|| {
            format!(
                "{who}: container {} reads --policy {path}, but no volume is mounted there",
                container.name
            )
        })?;
    let volume = pod
        .volumes
        .iter()
        .flatten()
        .find(|v| v.name == mount.name)
        .ok_or_else(|| format!("{who}: volume {} is mounted but not defined", mount.name))?;
    let cm = volume.config_map.as_ref().ok_or_else(|| {
        format!(
            "{who}: --policy {path} is on volume {}, which is not a ConfigMap volume",
            volume.name
        )
    })?;
    // The file's path inside the volume.
    let inside = if Path::new(&mount.mount_path) == target {
        mount
            .sub_path
            .clone()
            .filter(|s| !s.is_empty())
            .or_else(|| target.file_name().map(|n| n.to_string_lossy().into_owned()))
            .unwrap_or_else(|| DEFAULT_POLICY_KEY.to_string())
    } else {
        let rel = target
            .strip_prefix(&mount.mount_path)
            .map(|p| p.to_string_lossy().into_owned())
            .unwrap_or_default();
        match mount.sub_path.as_deref().filter(|s| !s.is_empty()) {
            Some(sub) => format!("{sub}/{rel}"),
            None => rel,
        }
    };
    // `items` map keys to paths inside the volume; without them each key is a file of its name.
    let key = match &cm.items {
        Some(items) if !items.is_empty() => items
            .iter()
            .find(|i| i.path == inside)
            .map(|i| i.key.clone())
            .ok_or_else(|| {
                format!(
                    "{who}: ConfigMap volume {} has no item at {inside}",
                    volume.name
                )
            })?,
        _ => inside,
    };
    Ok(Mounted::ConfigMap {
        name: cm.name.clone(),
        key,
    })
}

/// Whether a pod template's labels carry every label of a Service's selector.
fn selects(selector: &BTreeMap<String, String>, deployment: &Deployment) -> bool {
    let labels = deployment
        .spec
        .template
        .metadata
        .as_ref()
        .and_then(|m| m.labels.as_ref());
    !selector.is_empty()
        && labels.is_some_and(|l| selector.iter().all(|(k, v)| l.get(k) == Some(v)))
}

/// Parses the policy under `key` of a ConfigMap.
pub fn policy_from_configmap(
    cm: &ConfigMap,
    key: &str,
    origin: Origin,
) -> Result<PolicySource, PolicyProblem> {
    let at = format!(
        "{}/{}",
        cm.metadata.namespace.as_deref().unwrap_or(""),
        cm.metadata.name.as_deref().unwrap_or("")
    );
    let data = cm.data.clone().unwrap_or_default();
    let Some(text) = data.get(key) else {
        let keys: Vec<&str> = data.keys().map(String::as_str).collect();
        return Err(PolicyProblem {
            message: format!(
                "ConfigMap {at} has no key {key} (keys: {})",
                if keys.is_empty() {
                    "none".to_string()
                } else {
                    keys.join(", ")
                }
            ),
            fix: format!(
                "kubectl -n {} create configmap {} --from-file={key}=policy.yaml --dry-run=client -o yaml | kubectl apply -f -",
                cm.metadata.namespace.as_deref().unwrap_or(""),
                cm.metadata.name.as_deref().unwrap_or("")
            ),
        });
    };
    let restart = match &origin {
        Origin::ConfigMap {
            deployment: Some(d),
            ..
        } => {
            let (ns, name) = d.split_once('/').unwrap_or(("", d));
            format!(" && kubectl -n {ns} rollout restart deployment {name}")
        }
        _ => String::new(),
    };
    match Policy::from_yaml(text) {
        Ok(policy) => Ok(PolicySource { policy, origin }),
        Err(e) => Err(PolicyProblem {
            message: format!("the policy in ConfigMap {at} (key {key}) is invalid: {e}"),
            fix: format!(
                "kubectl -n {ns} get configmap {name} -o jsonpath='{{.data.{k}}}' > policy.yaml; fix it, check it with lb-l7-webhook manifests --policy policy.yaml > /dev/null, then kubectl -n {ns} create configmap {name} --from-file={key}=policy.yaml --dry-run=client -o yaml | kubectl apply -f -{restart}",
                ns = cm.metadata.namespace.as_deref().unwrap_or(""),
                name = cm.metadata.name.as_deref().unwrap_or(""),
                k = key.replace('.', "\\."),
            ),
        }),
    }
}

fn unreadable(what: &str, why: &str, resource: &str) -> PolicyProblem {
    PolicyProblem {
        message: format!("cannot read {what}: {why}"),
        fix: format!(
            "grant get/list of {resource}: kubectl apply -k deploy/doctor (doctor's reads) or kubectl apply -k deploy/backfill (the backfill Job's and the report CronJob's)"
        ),
    }
}

/// Reads a ConfigMap named explicitly (doctor's `--policy-configmap`), key `policy.yaml` or its only key.
pub async fn read_named_configmap(
    client: &Client,
    namespace: &str,
    name: &str,
) -> Result<Discovery, ClusterError> {
    let api: Api<ConfigMap> = Api::namespaced(client.clone(), namespace);
    let what = format!("ConfigMap {namespace}/{name}");
    Ok(match lookup(&what, api.get(name).await)? {
        Lookup::Found(cm) => {
            let data = cm.data.clone().unwrap_or_default();
            let key = if data.contains_key(DEFAULT_POLICY_KEY) || data.len() != 1 {
                DEFAULT_POLICY_KEY.to_string()
            } else {
                data.keys().next().cloned().unwrap_or_default()
            };
            let origin = Origin::ConfigMap {
                namespace: namespace.to_string(),
                name: name.to_string(),
                key: key.clone(),
                deployment: None,
            };
            policy_from_configmap(&cm, &key, origin)
        }
        Lookup::Missing => Err(PolicyProblem {
            message: format!("{what} (given with --policy-configmap) not found"),
            fix: format!(
                "kubectl -n {namespace} get configmaps; pass the policy ConfigMap's name with --policy-configmap, or leave the flag out to follow the webhook's Deployment"
            ),
        }),
        Lookup::Unreadable(why) => Err(unreadable(
            &what,
            &why,
            &format!("configmaps in {namespace}"),
        )),
    })
}

/// Finds the policy the installed webhook runs (see the module documentation). Reads: the
/// MutatingWebhookConfiguration `webhook_name` (get), the Service it calls (get), the Deployments of that
/// namespace (list), and the ConfigMap their pods mount (get). A 404 or 403 on the way is a [`PolicyProblem`];
/// only an unusable API server is an error.
pub async fn discover(
    client: &Client,
    webhook_name: &str,
    page_size: u32,
) -> Result<Discovery, ClusterError> {
    let what = format!("MutatingWebhookConfiguration {webhook_name}");
    let api: Api<MutatingWebhookConfiguration> = Api::all(client.clone());
    let mwc = match lookup(&what, api.get(webhook_name).await)? {
        Lookup::Found(mwc) => mwc,
        Lookup::Missing => {
            return Ok(Ok(PolicySource {
                policy: Policy::default(),
                origin: Origin::BuiltInNoWebhook {
                    webhook: webhook_name.to_string(),
                },
            }));
        }
        Lookup::Unreadable(why) => {
            return Ok(Err(unreadable(
                &what,
                &why,
                &format!("mutatingwebhookconfigurations ({webhook_name})"),
            )));
        }
    };
    discover_from(client, &mwc, page_size).await
}

/// [`discover`] from a MutatingWebhookConfiguration already read.
pub async fn discover_from(
    client: &Client,
    mwc: &MutatingWebhookConfiguration,
    page_size: u32,
) -> Result<Discovery, ClusterError> {
    let webhook_name = mwc.metadata.name.as_deref().unwrap_or(DEFAULT_WEBHOOK_NAME);
    if mwc.webhooks.as_ref().is_none_or(Vec::is_empty) {
        return Ok(Err(PolicyProblem {
            message: format!(
                "MutatingWebhookConfiguration {webhook_name} has no webhooks, so there is no webhook Deployment to follow"
            ),
            fix: "kubectl apply -k deploy/overlays/namespace-opt-in (or the overlay you installed: cluster-wide, dry-run, cert-manager)".to_string(),
        }));
    }
    let Some(svc_ref) = mwc
        .webhooks
        .iter()
        .flatten()
        .find_map(|w| w.client_config.service.as_ref())
    else {
        return Ok(Err(PolicyProblem {
            message: format!(
                "MutatingWebhookConfiguration {webhook_name} calls the webhook by url, not through an in-cluster Service, so its Deployment cannot be followed"
            ),
            fix: "name the ConfigMap that holds the webhook's policy with doctor's --policy-configmap (report and backfill: pass the policy file with --policy)".to_string(),
        }));
    };
    let (ns, svc_name) = (svc_ref.namespace.as_str(), svc_ref.name.as_str());
    let what = format!("Service {ns}/{svc_name}");
    let services: Api<Service> = Api::namespaced(client.clone(), ns);
    let selector = match lookup(&what, services.get(svc_name).await)? {
        Lookup::Found(svc) => svc.spec.and_then(|s| s.selector).unwrap_or_default(),
        Lookup::Missing => {
            return Ok(Err(PolicyProblem {
                message: format!(
                    "{what}, which MutatingWebhookConfiguration {webhook_name} calls, not found"
                ),
                fix: "kubectl apply -k deploy/overlays/namespace-opt-in (or the overlay you installed: cluster-wide, dry-run, cert-manager; README, Deploy)"
                    .to_string(),
            }));
        }
        Lookup::Unreadable(why) => {
            return Ok(Err(unreadable(&what, &why, &format!("services in {ns}"))));
        }
    };
    let what = format!("Deployments in namespace {ns}");
    let deployments: Api<Deployment> = Api::namespaced(client.clone(), ns);
    let listed = match lookup(
        &what,
        list_all(&deployments, ListParams::default(), page_size).await,
    )? {
        Lookup::Found(d) => d,
        Lookup::Missing => Vec::new(),
        Lookup::Unreadable(why) => {
            return Ok(Err(unreadable(
                &what,
                &why,
                &format!("deployments in {ns}"),
            )));
        }
    };
    let mut selected: Vec<&Deployment> = listed.iter().filter(|d| selects(&selector, d)).collect();
    selected.sort_by_key(|d| deployment_name(d));
    if selected.is_empty() {
        let sel: Vec<String> = selector.iter().map(|(k, v)| format!("{k}={v}")).collect();
        return Ok(Err(PolicyProblem {
            message: format!(
                "no Deployment in namespace {ns} has pods that Service {ns}/{svc_name} selects ({})",
                if sel.is_empty() {
                    "the Service has no selector".to_string()
                } else {
                    sel.join(",")
                }
            ),
            fix: format!(
                "kubectl -n {ns} get deployments --show-labels: the Service's selector must match the webhook Deployment's pod labels (or install the webhook: README, Deploy)"
            ),
        }));
    }
    let mut mounted: Vec<(String, Mounted)> = Vec::new();
    for d in &selected {
        match resolve(d) {
            Ok(m) => mounted.push((deployment_name(d), m)),
            Err(why) => {
                return Ok(Err(PolicyProblem {
                    message: why,
                    fix: format!(
                        "kubectl -n {ns} get deployment {} -o yaml: mount the policy ConfigMap at the path given to --policy (as deploy/base/deployment.yaml does)",
                        d.metadata.name.as_deref().unwrap_or("")
                    ),
                }));
            }
        }
    }
    let (first_name, first) = &mounted[0];
    if let Some((other_name, _)) = mounted.iter().find(|(_, m)| m != first) {
        return Ok(Err(PolicyProblem {
            message: format!(
                "Deployments {first_name} and {other_name} both serve Service {ns}/{svc_name} with different policies"
            ),
            fix: format!(
                "kubectl -n {ns} delete deployment {} (keep one webhook Deployment)",
                other_name.rsplit('/').next().unwrap_or(other_name)
            ),
        }));
    }
    let (name, key) = match first {
        Mounted::BuiltIn => {
            return Ok(Ok(PolicySource {
                policy: Policy::default(),
                origin: Origin::BuiltInNoPolicyFlag {
                    deployment: first_name.clone(),
                },
            }));
        }
        Mounted::ConfigMap { name, key } => (name, key),
    };
    let what = format!("ConfigMap {ns}/{name}");
    let configmaps: Api<ConfigMap> = Api::namespaced(client.clone(), ns);
    Ok(match lookup(&what, configmaps.get(name).await)? {
        Lookup::Found(cm) => policy_from_configmap(
            &cm,
            key,
            Origin::ConfigMap {
                namespace: ns.to_string(),
                name: name.clone(),
                key: key.clone(),
                deployment: Some(first_name.clone()),
            },
        ),
        Lookup::Missing => Err(PolicyProblem {
            message: format!(
                "{what}, which Deployment {first_name} mounts as its policy, not found: its pods cannot start"
            ),
            fix: "kubectl apply -k deploy/overlays/namespace-opt-in (or the overlay you installed: cluster-wide, dry-run, cert-manager) to re-create it"
                .to_string(),
        }),
        Lookup::Unreadable(why) => Err(unreadable(&what, &why, &format!("configmaps in {ns}"))),
    })
}

/// The policy a command that talks to a cluster uses: `--policy FILE` when given, else the installed one.
#[derive(Debug, Clone)]
pub struct Chosen {
    pub source: PolicySource,
    /// Set when `--policy FILE` was given and the cluster's policy is known and differs (or is unknown).
    pub warning: Option<String>,
}

/// Chooses the policy for `report --cluster` and `backfill`: the file when given (with a warning when the
/// installed webhook runs another policy), else the installed policy; an installed policy that cannot be found
/// is an error that says how to go on.
pub async fn choose(
    client: &Client,
    file: Option<(PathBuf, Policy)>,
    webhook_name: &str,
    page_size: u32,
) -> anyhow::Result<Chosen> {
    let installed = discover(client, webhook_name, page_size).await?;
    match (file, installed) {
        (Some((path, policy)), installed) => {
            let warning = match &installed {
                Ok(cluster) if cluster.policy != policy => Some(format!(
                    "--policy {} differs from the policy the installed webhook runs ({}): the results are for the file, not for what the webhook does",
                    path.display(),
                    cluster.describe()
                )),
                Ok(_) => None,
                Err(problem) => Some(format!(
                    "--policy {}: could not compare with the installed webhook's policy: {}",
                    path.display(),
                    problem.message
                )),
            };
            Ok(Chosen {
                source: PolicySource {
                    policy,
                    origin: Origin::File(path),
                },
                warning,
            })
        }
        (None, Ok(source)) => Ok(Chosen {
            source,
            warning: None,
        }),
        (None, Err(problem)) => Err(anyhow::anyhow!(
            "{problem} (fix: {}; or pass the policy with --policy FILE)",
            problem.fix
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn deployment(
        args: serde_json::Value,
        mounts: serde_json::Value,
        volumes: serde_json::Value,
    ) -> Deployment {
        serde_json::from_value(json!({
            "metadata": {"name": "lb-l7-webhook", "namespace": "lb-l7-system"},
            "spec": {"selector": {}, "template": {
                "metadata": {"labels": {"app": "w"}},
                "spec": {"containers": [{"name": "webhook", "args": args, "volumeMounts": mounts}],
                         "volumes": volumes}}}
        }))
        .expect("deployment")
    }

    #[test]
    fn subpath_mount_of_a_hashed_configmap() {
        let d = deployment(
            json!(["serve", "--policy", "/etc/lb-l7-webhook/policy.yaml"]),
            json!([{"name": "policy", "mountPath": "/etc/lb-l7-webhook/policy.yaml", "subPath": "policy.yaml"}]),
            json!([{"name": "policy", "configMap": {"name": "lb-l7-webhook-policy-7g9k2m5f8t"}}]),
        );
        assert_eq!(
            resolve(&d),
            Ok(Mounted::ConfigMap {
                name: "lb-l7-webhook-policy-7g9k2m5f8t".into(),
                key: "policy.yaml".into()
            })
        );
    }

    #[test]
    fn directory_mount_with_items_and_equals_flag() {
        let d = deployment(
            json!(["serve", "--policy=/config/rules.yaml"]),
            json!([{"name": "cfg", "mountPath": "/config"}]),
            json!([{"name": "cfg", "configMap": {"name": "p", "items": [{"key": "the-policy", "path": "rules.yaml"}]}}]),
        );
        assert_eq!(
            resolve(&d),
            Ok(Mounted::ConfigMap {
                name: "p".into(),
                key: "the-policy".into()
            })
        );
    }

    #[test]
    fn the_env_variable_counts_as_the_flag() {
        let mut d = deployment(
            json!(["serve"]),
            json!([{"name": "policy", "mountPath": "/etc/p"}]),
            json!([{"name": "policy", "configMap": {"name": "from-env"}}]),
        );
        if let Some(spec) = d.spec.template.spec.as_mut() {
            spec.containers[0].env = Some(vec![k8s_openapi::api::core::v1::EnvVar {
                name: "LB_L7_POLICY".into(),
                value: Some("/etc/p/rules.yaml".into()),
                ..Default::default()
            }]);
        }
        assert_eq!(
            resolve(&d),
            Ok(Mounted::ConfigMap {
                name: "from-env".into(),
                key: "rules.yaml".into()
            })
        );
    }

    #[test]
    fn a_configmap_without_the_key_or_with_an_invalid_policy_is_a_problem() {
        let cm: ConfigMap = serde_json::from_value(json!({
            "metadata": {"name": "p", "namespace": "lb-l7-system"},
            "data": {"other.yaml": "x"}
        }))
        .expect("cm");
        let origin = Origin::File("x".into());
        let err = policy_from_configmap(&cm, "policy.yaml", origin.clone()).expect_err("no key");
        assert_eq!(
            err.message,
            "ConfigMap lb-l7-system/p has no key policy.yaml (keys: other.yaml)"
        );
        let err = policy_from_configmap(&cm, "other.yaml", origin).expect_err("invalid");
        assert!(
            err.message
                .starts_with("the policy in ConfigMap lb-l7-system/p (key other.yaml) is invalid"),
            "{}",
            err.message
        );
    }

    #[test]
    fn no_policy_flag_is_the_built_in_default_and_a_missing_mount_is_said() {
        let d = deployment(
            json!(["serve", "--log-format", "json"]),
            json!([]),
            json!([]),
        );
        assert_eq!(resolve(&d), Ok(Mounted::BuiltIn));
        let d = deployment(
            json!(["serve", "--policy", "/p.yaml"]),
            json!([]),
            json!([]),
        );
        let err = resolve(&d).expect_err("no mount");
        assert!(err.contains("no volume is mounted there"), "{err}");
    }
}
