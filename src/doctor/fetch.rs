//! The doctor's thin fetch layer: read-only calls through a `kube::Client`, turned into a [`ClusterState`].
//!
//! Every read is a get or a (paged) list. What the API server answers is data for the checks: 404 becomes
//! [`Lookup::Missing`] (a missing CRD included), any other API error (403 from RBAC, 500, ...) becomes
//! [`Lookup::Unreadable`] with the server's message, so the report can say what is wrong and how to fix it.
//! Only errors that mean "no usable API server" (transport errors, 401) end the run: [`FetchError`].

use std::collections::{BTreeMap, BTreeSet};

use k8s_openapi::api::admissionregistration::v1::MutatingWebhookConfiguration;
use k8s_openapi::api::apps::v1::DaemonSet;
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::ConfigMap;
use k8s_openapi::api::discovery::v1::EndpointSlice;
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::Client;
use kube::api::{Api, ApiResource, DynamicObject, GroupVersionKind, ListParams, ObjectList};

use crate::cluster::{ClusterError, Lookup, lookup as classify, paged, read_inventory};

use super::checks::{
    CILIUM_AGENT_DAEMONSET, CILIUM_CONFIG_NAME, CILIUM_CONFIG_NAMESPACE, ClusterState,
    DiagnoseOptions, ENVOY_CONFIG_CRD, ENVOY_DAEMONSET, EnvoyConfigSummary, RECONCILER_LEASE,
    webhook_services,
};

/// CiliumEnvoyConfig: a CRD (cilium.io/v2), read as a dynamic object so no Cilium types are needed.
pub fn cilium_envoy_config_resource() -> ApiResource {
    ApiResource::from_gvk_with_plural(
        &GroupVersionKind::gvk("cilium.io", "v2", "CiliumEnvoyConfig"),
        "ciliumenvoyconfigs",
    )
}

/// CiliumClusterwideEnvoyConfig: the cluster-scoped twin of CiliumEnvoyConfig (cilium.io/v2), also read dynamically.
pub fn cilium_clusterwide_envoy_config_resource() -> ApiResource {
    ApiResource::from_gvk_with_plural(
        &GroupVersionKind::gvk("cilium.io", "v2", "CiliumClusterwideEnvoyConfig"),
        "ciliumclusterwideenvoyconfigs",
    )
}

/// One page of Envoy configs cut down to what the checks use (owners, `spec.services`), so a large cluster's
/// xDS resources are never all held at once.
fn summarize_page(
    page: ObjectList<DynamicObject>,
    clusterwide: bool,
) -> ObjectList<EnvoyConfigSummary> {
    ObjectList {
        types: page.types,
        metadata: page.metadata,
        items: page
            .items
            .into_iter()
            .filter_map(|o| EnvoyConfigSummary::from_parts(o.metadata, &o.data, clusterwide))
            .collect(),
    }
}

/// Whether `name` is `base` plus a kustomize content-hash suffix (`-` and 10 lowercase letters or digits).
pub fn is_generated_name(name: &str, base: &str) -> bool {
    name.strip_prefix(base)
        .and_then(|rest| rest.strip_prefix('-'))
        .is_some_and(|hash| {
            hash.len() == 10
                && hash
                    .bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit())
        })
}

/// The newest ConfigMap generated from `base` (kustomize keeps old generations until they are pruned).
fn newest_generation(all: Vec<ConfigMap>, base: &str) -> Option<ConfigMap> {
    all.into_iter()
        .filter(|cm| {
            cm.metadata
                .name
                .as_deref()
                .is_some_and(|n| is_generated_name(n, base))
        })
        .max_by(|a, b| {
            let key = |cm: &ConfigMap| {
                (
                    cm.metadata.creation_timestamp.as_ref().map(|t| t.0),
                    cm.metadata.name.clone(),
                )
            };
            key(a).cmp(&key(b))
        })
}

/// Reads everything the checks need. Independent reads run concurrently.
pub async fn fetch(client: &Client, opts: &DiagnoseOptions) -> Result<ClusterState, ClusterError> {
    let ns = opts.namespace.as_deref();

    let cilium_config = async {
        let api: Api<ConfigMap> = Api::namespaced(client.clone(), CILIUM_CONFIG_NAMESPACE);
        classify(
            &format!("ConfigMap {CILIUM_CONFIG_NAMESPACE}/{CILIUM_CONFIG_NAME}"),
            api.get(CILIUM_CONFIG_NAME).await,
        )
    };
    let crd = async {
        let api: Api<CustomResourceDefinition> = Api::all(client.clone());
        classify(
            &format!("CustomResourceDefinition {ENVOY_CONFIG_CRD}"),
            api.get_metadata(ENVOY_CONFIG_CRD).await.map(|_| ()),
        )
    };
    let webhook = async {
        let api: Api<MutatingWebhookConfiguration> = Api::all(client.clone());
        classify(
            &format!("MutatingWebhookConfiguration {}", opts.webhook_name),
            api.get(&opts.webhook_name).await,
        )
    };
    let policy_config = async {
        let api: Api<ConfigMap> = Api::namespaced(client.clone(), &opts.webhook_namespace);
        let what = format!(
            "ConfigMap {}/{}",
            opts.webhook_namespace, opts.policy_configmap
        );
        match classify(&what, api.get(&opts.policy_configmap).await)? {
            // kustomize's configMapGenerator appends a content hash to the name (deploy/base does).
            Lookup::Missing => {
                let listed = paged(ListParams::default(), opts.page_size, |lp| {
                    let api = api.clone();
                    async move { api.list(&lp).await }
                })
                .await;
                Ok(match classify(&what, listed)? {
                    Lookup::Found(all) => newest_generation(all, &opts.policy_configmap)
                        .map_or(Lookup::Missing, Lookup::Found),
                    // Not allowed to list: report the get's 404, which is what was asked for.
                    Lookup::Missing | Lookup::Unreadable(_) => Lookup::Missing,
                })
            }
            other => Ok(other),
        }
    };
    let inventory = read_inventory(client, ns, opts.page_size);
    let envoy_config_objects = async {
        let ar = cilium_envoy_config_resource();
        let api: Api<DynamicObject> = match ns {
            Some(ns) => Api::namespaced_with(client.clone(), ns, &ar),
            None => Api::all_with(client.clone(), &ar),
        };
        // Whole objects, not metadata: the ownership and conflict checks read spec.services.
        let result = paged(ListParams::default(), opts.page_size, |lp| {
            let api = api.clone();
            async move { api.list(&lp).await.map(|page| summarize_page(page, false)) }
        })
        .await;
        classify("CiliumEnvoyConfigs", result)
    };

    // First, alone: when the API server cannot be reached, one request fails (and logs) instead of seven.
    let cilium_config = cilium_config.await?;
    let (envoy_config_crd, webhook, policy_config, inventory, envoy_config_objects) =
        tokio::join!(crd, webhook, policy_config, inventory, envoy_config_objects);
    let inventory = inventory?;
    let webhook = webhook?;

    let mut webhook_endpoints = BTreeMap::new();
    if let Lookup::Found(mwc) = &webhook {
        for (svc_ns, svc_name) in webhook_services(mwc) {
            let api: Api<EndpointSlice> = Api::namespaced(client.clone(), &svc_ns);
            let lp =
                ListParams::default().labels(&format!("kubernetes.io/service-name={svc_name}"));
            let result = paged(lp, opts.page_size, |lp| {
                let api = api.clone();
                async move { api.list(&lp).await }
            })
            .await;
            let lookup = classify(
                &format!("EndpointSlices of Service {svc_ns}/{svc_name}"),
                result,
            )?;
            webhook_endpoints.insert((svc_ns, svc_name), lookup);
        }
    }

    // Envoy's placement, Cilium's version, cluster-wide Envoy configs and the reconciler's Lease.
    let daemonset = |name: &'static str| async move {
        let api: Api<DaemonSet> = Api::namespaced(client.clone(), CILIUM_CONFIG_NAMESPACE);
        classify(
            &format!("DaemonSet {CILIUM_CONFIG_NAMESPACE}/{name}"),
            api.get(name).await,
        )
    };
    let clusterwide_envoy_configs = async {
        let api: Api<DynamicObject> =
            Api::all_with(client.clone(), &cilium_clusterwide_envoy_config_resource());
        let result = paged(ListParams::default(), opts.page_size, |lp| {
            let api = api.clone();
            async move { api.list(&lp).await.map(|page| summarize_page(page, true)) }
        })
        .await;
        classify("CiliumClusterwideEnvoyConfigs", result)
    };
    let reconciler_lease = async {
        let api: Api<Lease> = Api::namespaced(client.clone(), &opts.webhook_namespace);
        classify(
            &format!("Lease {}/{RECONCILER_LEASE}", opts.webhook_namespace),
            api.get(RECONCILER_LEASE).await,
        )
    };
    let (cilium_agent, envoy_daemonset, clusterwide_envoy_configs, reconciler_lease) = tokio::join!(
        daemonset(CILIUM_AGENT_DAEMONSET),
        daemonset(ENVOY_DAEMONSET),
        clusterwide_envoy_configs,
        reconciler_lease
    );
    let envoy_config_objects = envoy_config_objects?;

    Ok(ClusterState {
        cilium_config,
        envoy_config_crd: envoy_config_crd?,
        webhook,
        webhook_endpoints,
        policy_config: policy_config?,
        services: inventory.services,
        namespaces: inventory.namespaces,
        envoy_configs: match &envoy_config_objects {
            Lookup::Found(all) => Lookup::Found(
                all.iter()
                    .filter_map(|c| Some((c.namespace.clone()?, c.name.clone())))
                    .collect::<BTreeSet<_>>(),
            ),
            Lookup::Missing => Lookup::Missing,
            Lookup::Unreadable(why) => Lookup::Unreadable(why.clone()),
        },
        cilium_agent: cilium_agent?,
        envoy_daemonset: envoy_daemonset?,
        envoy_config_objects,
        clusterwide_envoy_configs: clusterwide_envoy_configs?,
        reconciler_lease: reconciler_lease?,
    })
}

#[cfg(test)]
mod tests {
    use super::is_generated_name;

    #[test]
    fn kustomize_generated_names() {
        assert!(is_generated_name(
            "lb-l7-webhook-policy-7g9k2m5f8t",
            "lb-l7-webhook-policy"
        ));
        assert!(!is_generated_name(
            "lb-l7-webhook-policy",
            "lb-l7-webhook-policy"
        ));
        assert!(!is_generated_name(
            "lb-l7-webhook-policy-old",
            "lb-l7-webhook-policy"
        ));
        assert!(!is_generated_name(
            "lb-l7-webhook-policy-7G9K2M5F8T",
            "lb-l7-webhook-policy"
        ));
        assert!(!is_generated_name(
            "other-7g9k2m5f8t",
            "lb-l7-webhook-policy"
        ));
    }
}
