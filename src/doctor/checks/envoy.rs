//! Envoy as Cilium runs it: which Cilium (the agent's image tag), where Envoy runs (inside the agent, or the
//! `cilium-envoy` DaemonSet), which load-balancing algorithm it uses, and the idle timeouts that cut gRPC streams.
//! Also the shape of the Envoy configs the ownership and conflict checks read ([`EnvoyConfigSummary`]).

use k8s_openapi::api::apps::v1::DaemonSet;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, OwnerReference};

use super::*;

/// Cilium's agent DaemonSet (in [`CILIUM_CONFIG_NAMESPACE`]) and its container, whose image tag is the version.
pub const CILIUM_AGENT_DAEMONSET: &str = "cilium";
pub const CILIUM_AGENT_CONTAINER: &str = "cilium-agent";
/// The DaemonSet that runs Envoy outside the agent when `external-envoy-proxy` is `"true"` (the Helm chart's
/// `envoy.enabled`, on by default for new installs since Cilium 1.16).
pub const ENVOY_DAEMONSET: &str = "cilium-envoy";
/// Envoy's idle timeouts as Cilium's operator sets them on every `cilium-envoy-lb-<svc>` (its flags
/// `proxy-stream-idle-timeout-seconds` and `proxy-idle-timeout-seconds`, read from cilium-config; defaults in
/// cilium/cilium `operator/pkg/ciliumenvoyconfig/cell.go`, used in `envoy_config.go`).
pub const STREAM_IDLE_TIMEOUT_KEY: &str = "proxy-stream-idle-timeout-seconds";
pub const STREAM_IDLE_TIMEOUT_DEFAULT: u64 = 300;
pub const IDLE_TIMEOUT_KEY: &str = "proxy-idle-timeout-seconds";
pub const IDLE_TIMEOUT_DEFAULT: u64 = 60;
/// The operator's default algorithm for Services without the annotation (`loadbalancer-l7-algorithm`, default
/// `round_robin` in `operator/pkg/ciliumenvoyconfig/cell.go`).
pub const DEFAULT_ALGORITHM_KEY: &str = "loadbalancer-l7-algorithm";

// ---------------------------------------------------------------------------------------------------------------
// Cilium's version

/// Cilium's version, from the agent's image tag.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CiliumVersion {
    Known {
        major: u64,
        minor: u64,
        patch: Option<u64>,
    },
    /// Why it is unknown (no DaemonSet, a digest-only image, a tag such as `latest`).
    Unknown(String),
}

impl CiliumVersion {
    /// Whether this is at least `major.minor` (`false` when unknown).
    pub fn at_least(&self, (want_major, want_minor): (u64, u64)) -> bool {
        match self {
            CiliumVersion::Known { major, minor, .. } => {
                (*major, *minor) >= (want_major, want_minor)
            }
            CiliumVersion::Unknown(_) => false,
        }
    }
}

impl fmt::Display for CiliumVersion {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            CiliumVersion::Known {
                major,
                minor,
                patch: Some(patch),
            } => write!(f, "Cilium {major}.{minor}.{patch}"),
            CiliumVersion::Known { major, minor, .. } => write!(f, "Cilium {major}.{minor}"),
            CiliumVersion::Unknown(why) => write!(f, "Cilium version unknown ({why})"),
        }
    }
}

/// The tag of an image reference, `None` for a digest-only reference (`repo@sha256:...`) or one without a tag.
/// A registry port (`registry:5000/cilium/cilium`) is not a tag.
pub fn image_tag(image: &str) -> Option<&str> {
    let without_digest = image.split('@').next().unwrap_or(image);
    let last = without_digest.rsplit('/').next().unwrap_or(without_digest);
    last.split_once(':')
        .map(|(_, tag)| tag)
        .filter(|t| !t.is_empty())
}

/// `v1.19.2`, `1.18`, `v1.19.0-rc.1` -> (1, 19, patch); anything else (`latest`, `stable`) -> `None`.
pub fn parse_version_tag(tag: &str) -> Option<(u64, u64, Option<u64>)> {
    let t = tag.strip_prefix('v').unwrap_or(tag);
    let core = t.split(['-', '+']).next().unwrap_or(t);
    let mut parts = core.split('.');
    let major = parts.next()?.parse().ok()?;
    let minor = parts.next()?.parse().ok()?;
    let patch = match parts.next() {
        Some(p) => Some(p.parse().ok()?),
        None => None,
    };
    if parts.next().is_some() {
        return None;
    }
    Some((major, minor, patch))
}

/// Cilium's version from DaemonSet kube-system/cilium, container `cilium-agent` (the Helm chart's names).
pub fn cilium_version(agent: &Lookup<DaemonSet>) -> CiliumVersion {
    let at = format!("{CILIUM_CONFIG_NAMESPACE}/{CILIUM_AGENT_DAEMONSET}");
    let ds = match agent {
        Lookup::Found(ds) => ds,
        Lookup::Missing => return CiliumVersion::Unknown(format!("no DaemonSet {at}")),
        Lookup::Unreadable(why) => {
            return CiliumVersion::Unknown(format!("cannot read DaemonSet {at}: {why}"));
        }
    };
    let image = ds
        .spec
        .template
        .spec
        .as_ref()
        .and_then(|p| {
            p.containers
                .iter()
                .find(|c| c.name == CILIUM_AGENT_CONTAINER)
        })
        .and_then(|c| c.image.as_deref());
    let Some(image) = image else {
        return CiliumVersion::Unknown(format!(
            "DaemonSet {at} has no container {CILIUM_AGENT_CONTAINER} with an image"
        ));
    };
    let Some(tag) = image_tag(image) else {
        return CiliumVersion::Unknown(format!(
            "DaemonSet {at} runs {image} by digest, without a version tag"
        ));
    };
    match parse_version_tag(tag) {
        Some((major, minor, patch)) => CiliumVersion::Known {
            major,
            minor,
            patch,
        },
        None => CiliumVersion::Unknown(format!(
            "the image tag of DaemonSet {at}, {tag:?}, is not a version"
        )),
    }
}

// ---------------------------------------------------------------------------------------------------------------
// Where Envoy runs

fn config_value<'a>(cm: &'a ConfigMap, key: &str) -> Option<&'a str> {
    cm.data.as_ref().and_then(|d| d.get(key)).map(|v| v.trim())
}

/// `external-envoy-proxy: "true"`: the DaemonSet kube-system/cilium-envoy exists and is fully rolled out (desired =
/// ready = updated, on as many nodes as the agent). Otherwise Envoy is embedded in the agent, which this says.
/// `None` when Cilium's ConfigMap could not be read (its own check fails).
pub fn check_envoy_placement(
    cm: &Lookup<ConfigMap>,
    envoy: &Lookup<DaemonSet>,
    agent: &Lookup<DaemonSet>,
) -> Option<Check> {
    let cm = cm.found()?;
    let at = format!("{CILIUM_CONFIG_NAMESPACE}/{CILIUM_CONFIG_NAME}");
    let ds_at = format!("{CILIUM_CONFIG_NAMESPACE}/{ENVOY_DAEMONSET}");
    let c = Check::build("cilium.envoy-placement", Group::Cilium, "Envoy proxy");
    let external = config_value(cm, "external-envoy-proxy");
    if external != Some("true") {
        let shown = match external {
            Some(v) => format!("is {v:?}"),
            None => "is not set".to_string(),
        };
        return Some(c.ok(format!(
            "embedded Envoy: external-envoy-proxy {shown} in {at}, so Envoy runs inside each cilium agent pod"
        )));
    }
    let c = c.objects(vec![ds_at.clone()]);
    let ds = match envoy {
        Lookup::Found(ds) => ds,
        Lookup::Missing => {
            return Some(c.fail(
                format!(
                    "external-envoy-proxy is \"true\" in {at}, but DaemonSet {ds_at} does not exist: no Envoy runs, so no Service gets L7 load balancing"
                ),
                format!("{HELM_UPGRADE} --set envoy.enabled=true"),
            ));
        }
        Lookup::Unreadable(why) => {
            return Some(c.fail(
                format!(
                    "cannot read DaemonSet {ds_at} (external-envoy-proxy is \"true\"): {why}; the doctor needs get daemonsets.apps in kube-system"
                ),
                unreadable_fix("daemonsets.apps in kube-system (get)"),
            ));
        }
    };
    let status = ds.status.clone().unwrap_or_default();
    let desired = status.desired_number_scheduled;
    let ready = status.number_ready;
    let updated = status.updated_number_scheduled.unwrap_or(0);
    let pods = "kubectl -n kube-system get pods -l k8s-app=cilium-envoy -o wide";
    if desired == 0 {
        return Some(c.fail(
            format!(
                "DaemonSet {ds_at} schedules no pod (desired 0): no node runs Envoy, so no Service gets L7 load balancing"
            ),
            format!(
                "kubectl -n kube-system describe ds/{ENVOY_DAEMONSET} (nodeSelector, tolerations, events)"
            ),
        ));
    }
    if ready < desired {
        return Some(c.fail(
            format!(
                "DaemonSet {ds_at}: {ready} of {desired} pods ready: on the other nodes Envoy is down, and L7 Services called from there fail"
            ),
            format!("{pods}, then fix or delete the pods that are not ready"),
        ));
    }
    let agent_desired = agent
        .found()
        .and_then(|a| a.status.as_ref())
        .map(|s| s.desired_number_scheduled);
    if let Some(agent_desired) = agent_desired
        && agent_desired > desired
    {
        return Some(c.fail(
            format!(
                "DaemonSet {ds_at} runs on {desired} nodes but the cilium agent on {agent_desired}: L7 Services called from the other nodes find no Envoy"
            ),
            format!(
                "kubectl -n kube-system get ds {CILIUM_AGENT_DAEMONSET} {ENVOY_DAEMONSET} -o wide, then give envoy.nodeSelector and envoy.tolerations the agent's values in the Helm values"
            ),
        ));
    }
    let stale = matches!(
        (ds.metadata.generation, status.observed_generation),
        (Some(generation), Some(observed)) if observed < generation
    );
    if updated < desired || stale {
        return Some(c.warn(
            format!(
                "DaemonSet {ds_at}: all {desired} pods ready, {updated} of {desired} updated: a rollout is in progress"
            ),
            format!("kubectl -n kube-system rollout status ds/{ENVOY_DAEMONSET}"),
        ));
    }
    Some(c.ok(format!(
        "external Envoy: DaemonSet {ds_at} has {desired} of {desired} pods ready and updated"
    )))
}

// ---------------------------------------------------------------------------------------------------------------
// Idle timeouts (gRPC streams)

/// Informational: Envoy's idle timeouts for L7 load-balanced Services, so a team with long-lived idle gRPC streams
/// knows where to look. Always ok. `None` when Cilium's ConfigMap could not be read.
pub fn check_envoy_timeouts(cm: &Lookup<ConfigMap>) -> Option<Check> {
    let cm = cm.found()?;
    let at = format!("{CILIUM_CONFIG_NAMESPACE}/{CILIUM_CONFIG_NAME}");
    let c = Check::build(
        "cilium.envoy-idle-timeouts",
        Group::Cilium,
        "Envoy idle timeouts",
    );
    let describe = |key: &str, default: u64, what: &str| match config_value(cm, key) {
        Some("0") => format!("{key}: \"0\" (no {what} timeout; Envoy's default is {default} s)"),
        Some(v) => format!("{key}: {v:?} s (default {default} s)"),
        None => format!("{key} not set ({default} s)"),
    };
    let stream = describe(
        STREAM_IDLE_TIMEOUT_KEY,
        STREAM_IDLE_TIMEOUT_DEFAULT,
        "stream idle",
    );
    let idle = describe(IDLE_TIMEOUT_KEY, IDLE_TIMEOUT_DEFAULT, "idle");
    let set = config_value(cm, STREAM_IDLE_TIMEOUT_KEY).is_some()
        || config_value(cm, IDLE_TIMEOUT_KEY).is_some();
    let lead = if set {
        format!("{at} sets ")
    } else {
        String::new()
    };
    Some(c.ok(format!(
        "{lead}{stream}: Envoy resets a gRPC stream with no message for that long; {idle}: it closes upstream connections idle that long"
    )))
}

// ---------------------------------------------------------------------------------------------------------------
// Load-balancing algorithm

/// What Cilium makes of an algorithm name. The operator upper-cases it and looks it up in Envoy's
/// `Cluster.LbPolicy` enum (`operator/pkg/ciliumenvoyconfig/annotations.go` for the annotation,
/// `envoy_config.go` for the default); a name Envoy does not know becomes ROUND_ROBIN without a word.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AlgorithmName {
    /// `round_robin`, `least_request` or `random` (any case): what Cilium documents.
    Documented,
    /// Another name in Envoy's enum (`ring_hash`, `maglev`, ...): passed on as is, but Cilium configures no hash
    /// policy or other settings those need.
    Undocumented,
    /// Unknown to Envoy: silently round robin.
    Unknown,
}

pub fn classify_algorithm(value: &str) -> AlgorithmName {
    match value.to_ascii_uppercase().as_str() {
        "ROUND_ROBIN" | "LEAST_REQUEST" | "RANDOM" => AlgorithmName::Documented,
        "RING_HASH" | "MAGLEV" | "CLUSTER_PROVIDED" | "LOAD_BALANCING_POLICY_CONFIG" => {
            AlgorithmName::Undocumented
        }
        _ => AlgorithmName::Unknown,
    }
}

fn algorithm_problem(value: &str) -> Option<&'static str> {
    match classify_algorithm(value) {
        AlgorithmName::Documented => None,
        AlgorithmName::Undocumented => Some(
            "Envoy knows it but Cilium sets none of what it needs (no hash policy), so requests are not balanced as named",
        ),
        AlgorithmName::Unknown => Some("unknown to Envoy, so Cilium silently uses round_robin"),
    }
}

/// The operator's default `loadbalancer-l7-algorithm`. Unset or empty is round_robin (fine). `None` when Cilium's
/// ConfigMap could not be read.
pub fn check_default_algorithm(cm: &Lookup<ConfigMap>) -> Option<Check> {
    let cm = cm.found()?;
    let at = format!("{CILIUM_CONFIG_NAMESPACE}/{CILIUM_CONFIG_NAME}");
    let c = Check::build(
        "cilium.loadbalancer-l7-algorithm",
        Group::Cilium,
        "Default L7 algorithm",
    );
    let value = config_value(cm, DEFAULT_ALGORITHM_KEY).filter(|v| !v.is_empty());
    let Some(value) = value else {
        return Some(c.ok(format!(
            "{DEFAULT_ALGORITHM_KEY} is not set in {at}: Services without the algorithm annotation use round_robin"
        )));
    };
    Some(match algorithm_problem(value) {
        None => c.ok(format!(
            "{at} has {DEFAULT_ALGORITHM_KEY}: {value}, for Services without the algorithm annotation"
        )),
        Some(problem) => c.objects(vec![at.clone()]).warn(
            format!(
                "{DEFAULT_ALGORITHM_KEY} is {value:?} in {at}, not round_robin, least_request or random: {problem}"
            ),
            format!(
                "{HELM_UPGRADE} --set loadBalancer.l7.algorithm=least_request, then kubectl -n kube-system rollout restart deploy/cilium-operator"
            ),
        ),
    })
}

/// `service.cilium.io/lb-l7-algorithm` on Services annotated for L7: an unknown value falls back to round robin
/// (not to the operator's default). An empty value means the operator's default.
pub fn check_algorithm_annotations(services: &[Service], policy: &CompiledPolicy) -> Check {
    let c = Check::build("effect.algorithm", Group::Effect, "Algorithm annotation");
    let key = policy.policy.annotation_key.as_str();
    let algorithm_key = policy::ALGORITHM_ANNOTATION;
    let mut wrong = Vec::new();
    let mut first: Option<&Service> = None;
    let mut problems = BTreeSet::new();
    for svc in services {
        let annotations = svc.metadata.annotations.as_ref();
        if annotations.and_then(|a| a.get(key)).map(String::as_str) != Some(ENABLED_VALUE) {
            continue;
        }
        let Some(value) = annotations
            .and_then(|a| a.get(algorithm_key))
            .filter(|v| !v.is_empty())
        else {
            continue;
        };
        if let Some(problem) = algorithm_problem(value) {
            wrong.push(format!("{} ({algorithm_key}={value})", namespaced(svc)));
            first.get_or_insert(svc);
            problems.insert(problem);
        }
    }
    let Some(first) = first else {
        return c.ok(format!(
            "every {algorithm_key} on an annotated Service is round_robin, least_request or random"
        ));
    };
    let fix = if wrong.len() == 1 {
        format!(
            "kubectl annotate service -n {} {} --overwrite {algorithm_key}=least_request (or round_robin, random)",
            namespace_of(&first.metadata),
            first.metadata.name.as_deref().unwrap_or("")
        )
    } else {
        format!(
            "kubectl annotate service -n NS NAME --overwrite {algorithm_key}=least_request (or round_robin, random), for each one listed"
        )
    };
    c.objects(wrong.clone()).warn(
        format!(
            "{} not round_robin, least_request or random ({}): {}",
            if wrong.len() == 1 {
                "1 algorithm annotation is".to_string()
            } else {
                format!("{} algorithm annotations are", wrong.len())
            },
            problems.into_iter().collect::<Vec<_>>().join("; "),
            list_some(&wrong)
        ),
        fix,
    )
}

// ---------------------------------------------------------------------------------------------------------------
// Envoy configs, as the ownership and conflict checks read them

/// A CiliumEnvoyConfig or CiliumClusterwideEnvoyConfig, cut down to what the checks read.
#[derive(Debug, Clone, PartialEq)]
pub struct EnvoyConfigSummary {
    /// `None` for a CiliumClusterwideEnvoyConfig.
    pub namespace: Option<String>,
    pub name: String,
    pub owners: Vec<OwnerReference>,
    /// `spec.services` as (namespace, name): the Services whose traffic it redirects to Envoy. In a
    /// CiliumEnvoyConfig the namespace is always its own; in a cluster-wide one it defaults to `default`
    /// (cilium/cilium `pkg/k8s/apis/cilium.io/v2/cec_types.go`, `ServiceListener`).
    pub services: Vec<(String, String)>,
}

impl EnvoyConfigSummary {
    /// From a dynamic object's metadata and the rest of its body; `None` without a name.
    pub fn from_parts(
        metadata: ObjectMeta,
        data: &serde_json::Value,
        clusterwide: bool,
    ) -> Option<Self> {
        let name = metadata.name?;
        let namespace = if clusterwide {
            None
        } else {
            metadata.namespace
        };
        let services = data["spec"]["services"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|s| {
                let svc_name = s["name"].as_str()?.to_string();
                let svc_ns = match &namespace {
                    Some(ns) => ns.clone(),
                    None => s["namespace"]
                        .as_str()
                        .filter(|n| !n.is_empty())
                        .unwrap_or("default")
                        .to_string(),
                };
                Some((svc_ns, svc_name))
            })
            .collect();
        Some(EnvoyConfigSummary {
            namespace,
            name,
            owners: metadata.owner_references.unwrap_or_default(),
            services,
        })
    }

    /// `CiliumEnvoyConfig apps/x` or `CiliumClusterwideEnvoyConfig x`.
    pub fn describe(&self) -> String {
        match &self.namespace {
            Some(ns) => format!("CiliumEnvoyConfig {ns}/{}", self.name),
            None => format!("CiliumClusterwideEnvoyConfig {}", self.name),
        }
    }

    /// The ownerReference with `controller: true`, if any.
    pub fn controller(&self) -> Option<&OwnerReference> {
        self.owners.iter().find(|o| o.controller == Some(true))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::apps::v1::{DaemonSetSpec, DaemonSetStatus};
    use k8s_openapi::api::core::v1::{Container, PodSpec, PodTemplateSpec};

    fn cm(pairs: &[(&str, &str)]) -> Lookup<ConfigMap> {
        Lookup::Found(ConfigMap {
            data: Some(
                pairs
                    .iter()
                    .map(|(k, v)| (k.to_string(), v.to_string()))
                    .collect(),
            ),
            ..ConfigMap::default()
        })
    }

    fn agent(image: &str, desired: i32) -> Lookup<DaemonSet> {
        Lookup::Found(DaemonSet {
            spec: DaemonSetSpec {
                template: PodTemplateSpec {
                    spec: Some(PodSpec {
                        containers: vec![Container {
                            name: CILIUM_AGENT_CONTAINER.into(),
                            image: Some(image.into()),
                            ..Container::default()
                        }],
                        ..PodSpec::default()
                    }),
                    ..PodTemplateSpec::default()
                },
                ..DaemonSetSpec::default()
            },
            status: Some(DaemonSetStatus {
                desired_number_scheduled: desired,
                number_ready: desired,
                updated_number_scheduled: Some(desired),
                ..DaemonSetStatus::default()
            }),
            ..DaemonSet::default()
        })
    }

    fn envoy(desired: i32, ready: i32, updated: i32) -> Lookup<DaemonSet> {
        Lookup::Found(DaemonSet {
            status: Some(DaemonSetStatus {
                desired_number_scheduled: desired,
                number_ready: ready,
                updated_number_scheduled: Some(updated),
                ..DaemonSetStatus::default()
            }),
            ..DaemonSet::default()
        })
    }

    #[test]
    fn image_tags_and_versions() {
        assert_eq!(
            image_tag("quay.io/cilium/cilium:v1.19.2@sha256:abc"),
            Some("v1.19.2")
        );
        assert_eq!(
            image_tag("registry:5000/cilium/cilium:v1.18.0"),
            Some("v1.18.0")
        );
        assert_eq!(image_tag("registry:5000/cilium/cilium"), None);
        assert_eq!(image_tag("quay.io/cilium/cilium@sha256:abc"), None);
        assert_eq!(parse_version_tag("v1.19.2"), Some((1, 19, Some(2))));
        assert_eq!(parse_version_tag("1.18"), Some((1, 18, None)));
        assert_eq!(parse_version_tag("v1.20.0-rc.1"), Some((1, 20, Some(0))));
        assert_eq!(parse_version_tag("latest"), None);
        assert_eq!(parse_version_tag("v1.19.x"), None);
    }

    #[test]
    fn version_comes_from_the_agent_container_or_says_why_not() {
        let v = cilium_version(&agent("quay.io/cilium/cilium:v1.19.1@sha256:abc", 3));
        assert_eq!(v.to_string(), "Cilium 1.19.1");
        assert!(v.at_least((1, 19)) && !v.at_least((1, 20)));
        let v = cilium_version(&agent("quay.io/cilium/cilium@sha256:abc", 3));
        assert!(v.to_string().contains("by digest"), "{v}");
        assert!(!v.at_least((1, 0)));
        let v = cilium_version(&Lookup::Unreadable("forbidden (HTTP 403)".into()));
        assert!(
            v.to_string()
                .contains("cannot read DaemonSet kube-system/cilium"),
            "{v}"
        );
    }

    #[test]
    fn kube_proxy_replacement_by_version() {
        let at = "kube-system/cilium-config";
        let new = CiliumVersion::Known {
            major: 1,
            minor: 19,
            patch: Some(0),
        };
        let old = CiliumVersion::Known {
            major: 1,
            minor: 16,
            patch: None,
        };
        let unknown = CiliumVersion::Unknown("no DaemonSet kube-system/cilium".into());
        assert_eq!(
            check_kube_proxy_replacement(Some("true"), at, &new).status,
            Status::Ok
        );
        let c = check_kube_proxy_replacement(Some("strict"), at, &new);
        assert_eq!(c.status, Status::Fail);
        assert!(c.message.contains("Cilium 1.19.0 accepts only"), "{c:?}");
        for v in ["strict", "partial", "true"] {
            assert_eq!(
                check_kube_proxy_replacement(Some(v), at, &old).status,
                Status::Ok,
                "{v}"
            );
        }
        assert_eq!(
            check_kube_proxy_replacement(Some("false"), at, &old).status,
            Status::Fail
        );
        // Unknown version: as before (true or strict), and the message says so.
        let c = check_kube_proxy_replacement(Some("strict"), at, &unknown);
        assert_eq!(c.status, Status::Ok);
        assert!(c.message.contains("Cilium version unknown"), "{c:?}");
        assert_eq!(
            check_kube_proxy_replacement(Some("partial"), at, &unknown).status,
            Status::Fail
        );
    }

    #[test]
    fn l7_proxy_must_not_be_off() {
        assert_eq!(check_l7_proxy(&cm(&[])).map(|c| c.status), Some(Status::Ok));
        assert_eq!(
            check_l7_proxy(&cm(&[("enable-l7-proxy", "true")])).map(|c| c.status),
            Some(Status::Ok)
        );
        let c = check_l7_proxy(&cm(&[("enable-l7-proxy", "false")])).expect("check");
        assert_eq!(c.status, Status::Fail);
        assert!(c.fix.as_deref().is_some_and(|f| f.contains("l7Proxy=true")));
        assert!(check_l7_proxy(&Lookup::Missing).is_none());
    }

    #[test]
    fn envoy_placement() {
        let external = cm(&[("external-envoy-proxy", "true")]);
        let embedded =
            check_envoy_placement(&cm(&[]), &Lookup::Missing, &Lookup::Missing).expect("check");
        assert_eq!(embedded.status, Status::Ok);
        assert!(embedded.message.contains("embedded Envoy"), "{embedded:?}");
        let ok = check_envoy_placement(&external, &envoy(3, 3, 3), &agent("c:v1.19.0", 3))
            .expect("check");
        assert_eq!(ok.status, Status::Ok, "{ok:?}");
        let missing =
            check_envoy_placement(&external, &Lookup::Missing, &Lookup::Missing).expect("check");
        assert_eq!(missing.status, Status::Fail);
        assert!(
            missing
                .fix
                .as_deref()
                .is_some_and(|f| f.contains("envoy.enabled=true"))
        );
        let forbidden = check_envoy_placement(
            &external,
            &Lookup::Unreadable("forbidden (HTTP 403 Forbidden)".into()),
            &Lookup::Missing,
        )
        .expect("check");
        assert_eq!(forbidden.status, Status::Fail);
        assert!(
            forbidden
                .message
                .contains("get daemonsets.apps in kube-system")
        );
        let not_ready =
            check_envoy_placement(&external, &envoy(3, 2, 3), &Lookup::Missing).expect("check");
        assert_eq!(not_ready.status, Status::Fail);
        assert!(
            not_ready.message.contains("2 of 3 pods ready"),
            "{not_ready:?}"
        );
        let fewer_nodes = check_envoy_placement(&external, &envoy(2, 2, 2), &agent("c:v1.19.0", 3))
            .expect("check");
        assert_eq!(fewer_nodes.status, Status::Fail);
        let rolling =
            check_envoy_placement(&external, &envoy(3, 3, 1), &Lookup::Missing).expect("check");
        assert_eq!(rolling.status, Status::Warn);
        let none =
            check_envoy_placement(&external, &envoy(0, 0, 0), &Lookup::Missing).expect("check");
        assert_eq!(none.status, Status::Fail);
    }

    #[test]
    fn idle_timeouts_are_shown_with_the_defaults() {
        let c = check_envoy_timeouts(&cm(&[])).expect("check");
        assert_eq!(c.status, Status::Ok);
        assert!(
            c.message.contains("(300 s)") && c.message.contains("(60 s)"),
            "{c:?}"
        );
        let c = check_envoy_timeouts(&cm(&[(STREAM_IDLE_TIMEOUT_KEY, "3600")])).expect("check");
        assert_eq!(c.status, Status::Ok);
        assert!(
            c.message
                .contains("proxy-stream-idle-timeout-seconds: \"3600\" s (default 300 s)"),
            "{c:?}"
        );
        assert!(c.fix.is_none());
    }

    #[test]
    fn algorithm_names() {
        assert_eq!(
            classify_algorithm("least_request"),
            AlgorithmName::Documented
        );
        assert_eq!(
            classify_algorithm("LEAST_REQUEST"),
            AlgorithmName::Documented
        );
        assert_eq!(classify_algorithm("maglev"), AlgorithmName::Undocumented);
        assert_eq!(classify_algorithm("least-request"), AlgorithmName::Unknown);
        assert_eq!(classify_algorithm(" random"), AlgorithmName::Unknown);
        let c = check_default_algorithm(&cm(&[(DEFAULT_ALGORITHM_KEY, "fastest")])).expect("check");
        assert_eq!(c.status, Status::Warn);
        assert!(c.message.contains("\"fastest\"") && c.message.contains("round_robin"));
        assert_eq!(
            check_default_algorithm(&cm(&[])).map(|c| c.status),
            Some(Status::Ok)
        );
    }

    #[test]
    fn envoy_config_services_resolve_namespaces_as_cilium_does() {
        let meta = |ns: Option<&str>| ObjectMeta {
            name: Some("x".into()),
            namespace: ns.map(String::from),
            ..ObjectMeta::default()
        };
        let data = serde_json::json!({ "spec": { "services": [
            { "name": "a", "namespace": "elsewhere" }, { "name": "b" } ] } });
        let cec = EnvoyConfigSummary::from_parts(meta(Some("apps")), &data, false).expect("cec");
        assert_eq!(
            cec.services,
            vec![
                ("apps".to_string(), "a".to_string()),
                ("apps".into(), "b".into())
            ]
        );
        assert_eq!(cec.describe(), "CiliumEnvoyConfig apps/x");
        let ccec = EnvoyConfigSummary::from_parts(meta(None), &data, true).expect("ccec");
        assert_eq!(
            ccec.services,
            vec![
                ("elsewhere".to_string(), "a".to_string()),
                ("default".into(), "b".into())
            ]
        );
        assert_eq!(ccec.describe(), "CiliumClusterwideEnvoyConfig x");
    }
}
