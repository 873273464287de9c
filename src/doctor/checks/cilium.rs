//! Cilium's side: the agent and operator configuration, the CiliumEnvoyConfig CRD, `loadbalancer-l7-ports`.

use super::*;

pub(super) const HELM_UPGRADE: &str =
    "helm upgrade cilium cilium/cilium -n kube-system --reuse-values";
pub(super) const RESTART_CILIUM: &str =
    "then kubectl -n kube-system rollout restart ds/cilium deploy/cilium-operator";

// ---------------------------------------------------------------------------------------------------------------
// Cilium

/// `loadbalancer-l7: envoy`, `enable-envoy-config: "true"`, and kube-proxy replacement on, judged without knowing
/// Cilium's version (see [`check_cilium_config_for`]).
pub fn check_cilium_config(cm: &Lookup<ConfigMap>) -> Vec<Check> {
    check_cilium_config_for(
        cm,
        &CiliumVersion::Unknown("the agent's DaemonSet was not read".to_string()),
    )
}

/// `loadbalancer-l7: envoy`, `enable-envoy-config: "true"`, and kube-proxy replacement on as `version` spells it.
pub fn check_cilium_config_for(cm: &Lookup<ConfigMap>, version: &CiliumVersion) -> Vec<Check> {
    let at = format!("{CILIUM_CONFIG_NAMESPACE}/{CILIUM_CONFIG_NAME}");
    let data = match cm {
        Lookup::Found(cm) => cm.data.clone().unwrap_or_default(),
        Lookup::Missing => {
            return vec![
                Check::build("cilium.config", Group::Cilium, "Cilium's ConfigMap").fail(
                    format!("ConfigMap {at} not found: is Cilium installed (in kube-system)?"),
                    "install Cilium with --set kubeProxyReplacement=true --set loadBalancer.l7.backend=envoy",
                ),
            ];
        }
        Lookup::Unreadable(why) => {
            return vec![
                Check::build("cilium.config", Group::Cilium, "Cilium's ConfigMap").fail(
                    format!("cannot read ConfigMap {at}: {why}"),
                    unreadable_fix(&format!("configmaps/{CILIUM_CONFIG_NAME} in kube-system")),
                ),
            ];
        }
    };
    let get = |k: &str| data.get(k).map(|v| v.trim());
    let shown = |v: Option<&str>| match v {
        Some(v) => format!("is {v:?}"),
        None => "is not set".to_string(),
    };

    let mut out = Vec::new();
    let l7 = get("loadbalancer-l7");
    let c = Check::build(
        "cilium.loadbalancer-l7",
        Group::Cilium,
        "L7 load balancing backend",
    );
    out.push(if l7 == Some("envoy") {
        c.ok(format!("{at} has loadbalancer-l7: envoy"))
    } else {
        c.fail(
            format!("loadbalancer-l7 {} in {at}: Cilium ignores the lb-l7 annotation unless it is \"envoy\"", shown(l7)),
            format!("{HELM_UPGRADE} --set loadBalancer.l7.backend=envoy, {RESTART_CILIUM}"),
        )
    });

    let envoy = get("enable-envoy-config");
    let c = Check::build(
        "cilium.envoy-config",
        Group::Cilium,
        "CiliumEnvoyConfig support",
    );
    out.push(if envoy == Some("true") {
        c.ok(format!("{at} has enable-envoy-config: \"true\""))
    } else {
        c.fail(
            format!("enable-envoy-config {} in {at}: Cilium's operator writes no CiliumEnvoyConfig for annotated Services", shown(envoy)),
            format!("{HELM_UPGRADE} --set envoyConfig.enabled=true, {RESTART_CILIUM}"),
        )
    });

    out.push(check_kube_proxy_replacement(
        get("kube-proxy-replacement"),
        &at,
        version,
    ));
    out
}

/// The CRD `ciliumenvoyconfigs.cilium.io` exists.
pub fn check_envoy_config_crd(crd: &Lookup<()>) -> Check {
    let c = Check::build(
        "cilium.envoy-config-crd",
        Group::Cilium,
        "CiliumEnvoyConfig CRD",
    );
    match crd {
        Lookup::Found(()) => c.ok(format!("CustomResourceDefinition {ENVOY_CONFIG_CRD} exists")),
        Lookup::Missing => c.fail(
            format!("CustomResourceDefinition {ENVOY_CONFIG_CRD} not found: Cilium cannot create any Envoy config"),
            format!("{HELM_UPGRADE} --set envoyConfig.enabled=true; cilium-operator registers the CRD when it starts"),
        ),
        Lookup::Unreadable(why) => c.fail(
            format!("cannot read CustomResourceDefinition {ENVOY_CONFIG_CRD}: {why}"),
            unreadable_fix("customresourcedefinitions"),
        ),
    }
}

/// Cilium's `loadbalancer-l7-ports`: space- or comma-separated port numbers.
pub fn parse_l7_ports(value: &str) -> Vec<i32> {
    let mut ports: Vec<i32> = value
        .split(|c: char| c.is_whitespace() || c == ',')
        .filter_map(|p| p.trim().parse().ok())
        .collect();
    ports.sort_unstable();
    ports.dedup();
    ports
}

/// Warn when `loadbalancer-l7-ports` is set: every Service exposing one of those port numbers goes through Envoy,
/// whatever its annotation says. `None` when Cilium's ConfigMap could not be read (its own check fails).
pub fn check_l7_ports(cm: &Lookup<ConfigMap>, services: &Lookup<Vec<Service>>) -> Option<Check> {
    let cm = cm.found()?;
    let c = Check::build(
        "cilium.loadbalancer-l7-ports",
        Group::Cilium,
        "L7 by port number",
    );
    let raw = cm
        .data
        .as_ref()
        .and_then(|d| d.get("loadbalancer-l7-ports"))
        .map(|v| v.trim())
        .filter(|v| !v.is_empty());
    let Some(raw) = raw else {
        return Some(c.ok("loadbalancer-l7-ports is not set: only annotated Services use Envoy"));
    };
    let ports = parse_l7_ports(raw);
    let fix = format!(
        "{HELM_UPGRADE} --set 'loadBalancer.l7.ports={{}}' and let the annotation choose, {RESTART_CILIUM}"
    );
    let caught: Vec<String> = match services {
        Lookup::Found(services) => services
            .iter()
            .filter_map(|svc| {
                let hits: Vec<String> = svc
                    .spec
                    .as_ref()
                    .and_then(|s| s.ports.as_ref())
                    .into_iter()
                    .flatten()
                    .filter(|p| ports.contains(&p.port))
                    .map(|p| p.port.to_string())
                    .collect();
                (!hits.is_empty()).then(|| format!("{} ({})", namespaced(svc), hits.join(",")))
            })
            .collect(),
        _ => {
            return Some(c.warn(
                format!("loadbalancer-l7-ports={raw:?} sends every Service on these ports through Envoy, whatever its annotation (Services could not be listed)"),
                fix,
            ));
        }
    };
    let message = if caught.is_empty() {
        format!(
            "loadbalancer-l7-ports={raw:?} sends every Service on these ports through Envoy, whatever its annotation; none does today"
        )
    } else {
        format!(
            "loadbalancer-l7-ports={raw:?} sends {} through Envoy, and the annotation cannot turn this off: {}",
            plural(caught.len(), "Service", "Services"),
            list_some(&caught)
        )
    };
    Some(c.objects(caught).warn(message, fix))
}

/// The first Cilium release that accepts only `true` / `false` for `kube-proxy-replacement`: the old spellings
/// `strict`, `partial`, `probe` and `disabled` are gone (Cilium's `pkg/option/config.go` defines only
/// `KubeProxyReplacementTrue` and `KubeProxyReplacementFalse`, and the Helm chart's `cilium-configmap.yaml` fails on
/// anything else).
pub const KPR_TRUE_ONLY_SINCE: (u64, u64) = (1, 19);

/// kube-proxy replacement, judged by the Cilium version: 1.19 and later need `true`; older releases also accepted
/// `strict` (and `partial`, which replaced only the kube-proxy features it was told to). With the version unknown
/// the judgement is the version-blind one: `true` or `strict`, and the message says the version is unknown.
pub fn check_kube_proxy_replacement(kpr: Option<&str>, at: &str, version: &CiliumVersion) -> Check {
    let c = Check::build(
        "cilium.kube-proxy-replacement",
        Group::Cilium,
        "kube-proxy replacement",
    );
    let shown = match kpr {
        Some(v) => format!("is {v:?}"),
        None => "is not set".to_string(),
    };
    let fix = format!(
        "{HELM_UPGRADE} --set kubeProxyReplacement=true (and remove kube-proxy), {RESTART_CILIUM}"
    );
    let off = "Cilium redirects Services to Envoy only with kube-proxy replacement on";
    match version {
        CiliumVersion::Known { .. } if version.at_least(KPR_TRUE_ONLY_SINCE) => match kpr {
            Some("true") => c.ok(format!(
                "{at} has kube-proxy-replacement: \"true\" ({version})"
            )),
            Some(old @ ("strict" | "partial" | "probe" | "disabled")) => c.fail(
                format!(
                    "kube-proxy-replacement is {old:?} in {at}, but {version} accepts only \"true\" or \"false\": {off}"
                ),
                fix,
            ),
            _ => c.fail(
                format!("kube-proxy-replacement {shown} in {at} ({version}): {off}"),
                fix,
            ),
        },
        CiliumVersion::Known { .. } => match kpr {
            Some("true") => c.ok(format!(
                "{at} has kube-proxy-replacement: \"true\" ({version})"
            )),
            Some(old @ ("strict" | "partial")) => c.ok(format!(
                "{at} has kube-proxy-replacement: {old} ({version}, which still accepts it; Cilium 1.19 and later need \"true\")"
            )),
            _ => c.fail(
                format!("kube-proxy-replacement {shown} in {at} ({version}): {off}"),
                fix,
            ),
        },
        CiliumVersion::Unknown(why) => match kpr {
            Some("true") => c.ok(format!(
                "{at} has kube-proxy-replacement: \"true\" (Cilium version unknown: {why})"
            )),
            Some("strict") => c.ok(format!(
                "{at} has kube-proxy-replacement: strict (the spelling of \"true\" before Cilium 1.14; accepted, but Cilium 1.19 and later need \"true\"; Cilium version unknown: {why})"
            )),
            _ => c.fail(
                format!("kube-proxy-replacement {shown} in {at}: {off} (Cilium version unknown: {why})"),
                fix,
            ),
        },
    }
}

/// The agent's `enable-l7-proxy`: without it the agent redirects nothing to Envoy, so Cilium ignores the lb-l7
/// annotation. Unset means on (Cilium's `pkg/defaults/defaults.go`: `EnableL7Proxy = true`; the Helm chart writes
/// it from `l7Proxy`). `None` when Cilium's ConfigMap could not be read (its own check fails).
pub fn check_l7_proxy(cm: &Lookup<ConfigMap>) -> Option<Check> {
    let cm = cm.found()?;
    let at = format!("{CILIUM_CONFIG_NAMESPACE}/{CILIUM_CONFIG_NAME}");
    let c = Check::build("cilium.l7-proxy", Group::Cilium, "Agent L7 proxy");
    let value = cm
        .data
        .as_ref()
        .and_then(|d| d.get("enable-l7-proxy"))
        .map(|v| v.trim());
    Some(match value {
        Some("true") => c.ok(format!("{at} has enable-l7-proxy: \"true\"")),
        None => c.ok(format!(
            "enable-l7-proxy is not set in {at}: the agent's default is true"
        )),
        Some(v) => c.fail(
            format!(
                "enable-l7-proxy is {v:?} in {at}: the agent redirects nothing to Envoy, so Cilium ignores the lb-l7 annotation"
            ),
            format!("{HELM_UPGRADE} --set l7Proxy=true, {RESTART_CILIUM}"),
        ),
    })
}
