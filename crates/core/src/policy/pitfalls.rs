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
        let differs = match &p.target_port {
            Some(IntOrString::Int(t)) => *t != p.port,
            Some(IntOrString::String(s)) => s != &p.port.to_string(),
            None => false,
        };
        if differs {
            let target = match &p.target_port {
                Some(IntOrString::Int(t)) => t.to_string(),
                Some(IntOrString::String(s)) => s.clone(),
                None => String::new(),
            };
            warnings.push(format!(
                "port {} has targetPort {target}: Cilium's L7 redirect has known bugs when targetPort differs from port",
                describe_port(p)
            ));
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
