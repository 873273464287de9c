//! Named targetPorts (`targetPort: grpc`) resolved through the Services' EndpointSlices (discovery.k8s.io/v1).
//!
//! An EndpointSlice of a Service (label `kubernetes.io/service-name`) names each of its ports after the
//! **Service** port and carries the number the targetPort resolved to in the pods. The warning itself is the core's
//! pure [`lb_l7_core::policy::named_target_port_warnings`]; this module only reads.

use std::collections::{BTreeMap, BTreeSet};

use k8s_openapi::api::core::v1::Service;
use k8s_openapi::api::discovery::v1::EndpointSlice;
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use kube::Client;
use kube::api::{Api, ListParams};
use lb_l7_core::namespace::namespace_of;

use super::{ClusterError, Lookup, list_all, lookup};

/// The label that ties an EndpointSlice to its Service.
pub const SERVICE_NAME_LABEL: &str = "kubernetes.io/service-name";

/// (namespace, Service name) -> Service port name -> the number its named targetPort resolves to.
pub type ResolvedPorts = BTreeMap<(String, String), BTreeMap<String, i32>>;

/// Whether a Service has a named targetPort.
pub fn has_named_target_port(svc: &Service) -> bool {
    svc.spec
        .as_ref()
        .and_then(|s| s.ports.as_ref())
        .is_some_and(|ports| {
            ports
                .iter()
                .any(|p| matches!(p.target_port, Some(IntOrString::String(_))))
        })
}

/// Pure: the resolved port numbers that EndpointSlices carry, by Service.
pub fn resolved_ports(slices: &[EndpointSlice]) -> ResolvedPorts {
    let mut out = ResolvedPorts::new();
    for s in slices {
        let Some(svc) = s
            .metadata
            .labels
            .as_ref()
            .and_then(|l| l.get(SERVICE_NAME_LABEL))
        else {
            continue;
        };
        let ns = namespace_of(&s.metadata).to_string();
        let ports = out.entry((ns, svc.clone())).or_default();
        for p in s.ports.iter().flatten() {
            if let Some(number) = p.port {
                ports.insert(p.name.clone().unwrap_or_default(), number);
            }
        }
    }
    out
}

/// Lists the EndpointSlices of the namespaces that hold a Service with a named targetPort (one paged list per
/// such namespace, only slices that belong to a Service), and resolves them. `Unreadable` when RBAC forbids it:
/// the named targetPorts are then simply not judged.
pub async fn read_resolved_ports<'a>(
    client: &Client,
    services: impl IntoIterator<Item = &'a Service>,
    page_size: u32,
) -> Result<Lookup<ResolvedPorts>, ClusterError> {
    let namespaces: BTreeSet<&str> = services
        .into_iter()
        .filter(|s| has_named_target_port(s))
        .map(|s| namespace_of(&s.metadata))
        .collect();
    let mut slices = Vec::new();
    for ns in namespaces {
        let api: Api<EndpointSlice> = Api::namespaced(client.clone(), ns);
        let listed = list_all(
            &api,
            ListParams::default().labels(SERVICE_NAME_LABEL),
            page_size,
        )
        .await;
        match lookup(&format!("EndpointSlices in namespace {ns}"), listed)? {
            Lookup::Found(mut s) => slices.append(&mut s),
            Lookup::Missing => {}
            Lookup::Unreadable(why) => return Ok(Lookup::Unreadable(why)),
        }
    }
    Ok(Lookup::Found(resolved_ports(&slices)))
}

/// The extra warnings for one Service (none when its named targetPorts could not be resolved).
pub fn warnings_for(svc: &Service, resolved: &ResolvedPorts) -> Vec<String> {
    let key = (
        namespace_of(&svc.metadata).to_string(),
        svc.metadata.name.clone().unwrap_or_default(),
    );
    match resolved.get(&key) {
        Some(ports) => lb_l7_core::policy::named_target_port_warnings(svc, ports),
        None => Vec::new(),
    }
}
