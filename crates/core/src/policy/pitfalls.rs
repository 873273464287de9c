//! Cilium's known pitfalls for a Service that is (or will be) balanced by Envoy, as warnings.

use k8s_openapi::api::core::v1::{Service, ServicePort};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;

use super::ports::describe_port;
use super::*;

/// `Some(reason)` when Cilium has no frontend to redirect for this Service.
pub(super) fn not_applicable(svc: &Service) -> Option<String> {
    let spec = svc.spec.as_ref()?;
    if spec.type_.as_deref() == Some("ExternalName") {
        return Some("ExternalName Service: a DNS alias with no frontend for Envoy".to_string());
    }
    if spec.cluster_ip.as_deref() == Some("None") {
        return Some("headless Service (clusterIP: None): no frontend for Envoy".to_string());
    }
    None
}

/// Cilium's known pitfalls for a Service that is (or will be) balanced by Envoy.
pub(super) fn pitfalls(svc: &Service, ports: &[ServicePort], warnings: &mut Vec<String>) {
    if ports.len() > 1 {
        warnings.push(format!(
            "Service has {} ports: Cilium sends every TCP port through Envoy, and multi-port L7 Services have known Cilium bugs",
            ports.len()
        ));
    }
    for p in ports {
        // A named targetPort (`targetPort: grpc`) names a container port; only the pod knows its number, so it is
        // judged where a cluster is at hand: [`named_target_port_warnings`].
        if let Some(IntOrString::Int(t)) = &p.target_port
            && *t != p.port
        {
            warnings.push(target_port_warning(p, &t.to_string()));
        }
    }
    let spec = svc.spec.as_ref();
    if spec.and_then(|s| s.session_affinity.as_deref()) == Some("ClientIP") {
        warnings.push(
            "sessionAffinity ClientIP: Cilium turns session affinity off for L7 load-balanced Services".to_string(),
        );
    }
    if let Some(v) = svc
        .metadata
        .annotations
        .as_ref()
        .and_then(|a| a.get(ALGORITHM_ANNOTATION))
        && Algorithm::parse(v).is_none()
    {
        warnings.push(format!(
            "{ALGORITHM_ANNOTATION}={v:?} is not round_robin, least_request or random: Cilium silently uses round_robin"
        ));
    }
}

fn target_port_warning(p: &ServicePort, target: &str) -> String {
    format!(
        "port {} has targetPort {target}: Cilium's L7 redirect has known bugs when targetPort differs from port",
        describe_port(p)
    )
}

/// The targetPort warnings for the Service's named targetPorts (`targetPort: grpc`), once resolved.
///
/// `resolved` maps a Service port's name to the number its named targetPort resolves to in the pods (what the
/// Service's EndpointSlices carry: their ports are named after the Service's ports). A named targetPort is warned
/// only when it resolves to a number other than `port`; one that is not in `resolved` (no endpoints yet) is not
/// warned. Call it only for Services the evaluation gave pitfall warnings to (decision `enable` or
/// `already-enabled`), as [`super::CompiledPolicy::evaluate`] does for numeric targetPorts.
pub fn named_target_port_warnings(
    svc: &Service,
    resolved: &std::collections::BTreeMap<String, i32>,
) -> Vec<String> {
    let ports = svc
        .spec
        .as_ref()
        .and_then(|s| s.ports.as_deref())
        .unwrap_or(&[]);
    ports
        .iter()
        .filter_map(|p| {
            let Some(IntOrString::String(target)) = &p.target_port else {
                return None;
            };
            let number = *resolved.get(p.name.as_deref().unwrap_or(""))?;
            (number != p.port)
                .then(|| target_port_warning(p, &format!("{target} (resolves to {number})")))
        })
        .collect()
}
