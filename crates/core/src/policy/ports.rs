//! Which ports count: TCP, and never TLS (Cilium's Envoy takes cleartext h2c only).

use k8s_openapi::api::core::v1::ServicePort;

/// Whether the port is marked as TLS: Cilium's Envoy takes cleartext h2c only, so such a port cannot be balanced.
pub fn is_tls_port(port: &ServicePort) -> bool {
    let name = port.name.as_deref().unwrap_or("");
    let app = port
        .app_protocol
        .as_deref()
        .unwrap_or("")
        .to_ascii_lowercase();
    matches!(
        app.as_str(),
        "https" | "tls" | "grpcs" | "kubernetes.io/wss"
    ) || name == "grpcs"
        || name.starts_with("grpcs-")
        || name == "https"
        || name.starts_with("https-")
        || name == "tls"
        || name.ends_with("-tls")
}

pub(super) fn is_tcp(port: &ServicePort) -> bool {
    port.protocol.as_deref().is_none_or(|p| p == "TCP")
}

/// `grpc (50051/TCP)`, or `50051/TCP` for an unnamed port.
pub fn describe_port(port: &ServicePort) -> String {
    let proto = port.protocol.as_deref().unwrap_or("TCP");
    match port.name.as_deref() {
        Some(n) if !n.is_empty() => format!("{n} ({}/{proto})", port.port),
        _ => format!("{}/{proto}", port.port),
    }
}
