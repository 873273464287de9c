//! The doctor's thin fetch layer: read-only calls through a `kube::Client`, turned into a [`ClusterState`].
//!
//! Every read is a get or a (paged) list. What the API server answers is data for the checks: 404 becomes
//! [`Lookup::Missing`] (a missing CRD included), any other API error (403 from RBAC, 500, ...) becomes
//! [`Lookup::Unreadable`] with the server's message, so the report can say what is wrong and how to fix it.
//! Only errors that mean "no usable API server" (transport errors, 401) end the run: [`FetchError`].

use std::collections::{BTreeMap, BTreeSet};

use k8s_openapi::api::admissionregistration::v1::MutatingWebhookConfiguration;
use k8s_openapi::api::core::v1::ConfigMap;
use k8s_openapi::api::discovery::v1::EndpointSlice;
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::Client;
use kube::api::{Api, ApiResource, DynamicObject, GroupVersionKind, ListParams};

use crate::cluster::{ClusterError, Lookup, lookup as classify, paged, read_inventory};

use super::checks::{
    CILIUM_CONFIG_NAME, CILIUM_CONFIG_NAMESPACE, ClusterState, DiagnoseOptions, ENVOY_CONFIG_CRD,
    webhook_services,
};

/// CiliumEnvoyConfig: a CRD (cilium.io/v2), read as a dynamic object so no Cilium types are needed.
pub fn cilium_envoy_config_resource() -> ApiResource {
    ApiResource::from_gvk_with_plural(
        &GroupVersionKind::gvk("cilium.io", "v2", "CiliumEnvoyConfig"),
        "ciliumenvoyconfigs",
    )
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
    let envoy_configs = async {
        let ar = cilium_envoy_config_resource();
        let api: Api<DynamicObject> = match ns {
            Some(ns) => Api::namespaced_with(client.clone(), ns, &ar),
            None => Api::all_with(client.clone(), &ar),
        };
        let result = paged(ListParams::default(), opts.page_size, |lp| {
            let api = api.clone();
            async move { api.list_metadata(&lp).await }
        })
        .await;
        classify(
            "CiliumEnvoyConfigs",
            result.map(|items| {
                items
                    .into_iter()
                    .filter_map(|m| Some((m.metadata.namespace?, m.metadata.name?)))
                    .collect::<BTreeSet<_>>()
            }),
        )
    };

    // First, alone: when the API server cannot be reached, one request fails (and logs) instead of seven.
    let cilium_config = cilium_config.await?;
    let (envoy_config_crd, webhook, policy_config, inventory, envoy_configs) =
        tokio::join!(crd, webhook, policy_config, inventory, envoy_configs);
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

    Ok(ClusterState {
        cilium_config,
        envoy_config_crd: envoy_config_crd?,
        webhook,
        webhook_endpoints,
        policy_config: policy_config?,
        services: inventory.services,
        namespaces: inventory.namespaces,
        envoy_configs: envoy_configs?,
    })
}

/// Reads the admission-policy engine's objects (`manifests --engine admission-policy`) by name: the mutating
/// policy and its binding as `admissionregistration.k8s.io/v1`, else `v1beta1` (Kubernetes 1.34-1.35), and the
/// warnings ValidatingAdmissionPolicy and its binding (`v1`).
pub async fn fetch_admission_policies(
    client: &Client,
) -> Result<super::checks::AdmissionPolicyState, ClusterError> {
    use k8s_openapi::api::admissionregistration::{v1, v1beta1};
    use lb_l7_core::render::admission_policy::{MUTATING_POLICY_NAME, WARNINGS_POLICY_NAME};

    /// A v1beta1 object as its v1 type (the same fields; only apiVersion differs).
    fn to_v1<B: serde::Serialize, V: serde::de::DeserializeOwned>(beta: B) -> Lookup<V> {
        let converted = serde_json::to_value(beta).and_then(|mut v| {
            if let Some(obj) = v.as_object_mut() {
                obj.insert(
                    "apiVersion".into(),
                    serde_json::Value::String("admissionregistration.k8s.io/v1".into()),
                );
            }
            serde_json::from_value(v)
        });
        match converted {
            Ok(v) => Lookup::Found(v),
            Err(e) => Lookup::Unreadable(format!("v1beta1 object not convertible: {e}")),
        }
    }

    let what = |kind: &str, name: &str| format!("{kind} {name}");
    let (mutating, mutating_binding, warnings, warnings_binding) = tokio::join!(
        async {
            let api: Api<v1::MutatingAdmissionPolicy> = Api::all(client.clone());
            classify(
                &what("MutatingAdmissionPolicy", MUTATING_POLICY_NAME),
                api.get(MUTATING_POLICY_NAME).await,
            )
        },
        async {
            let api: Api<v1::MutatingAdmissionPolicyBinding> = Api::all(client.clone());
            classify(
                &what("MutatingAdmissionPolicyBinding", MUTATING_POLICY_NAME),
                api.get(MUTATING_POLICY_NAME).await,
            )
        },
        async {
            let api: Api<v1::ValidatingAdmissionPolicy> = Api::all(client.clone());
            classify(
                &what("ValidatingAdmissionPolicy", WARNINGS_POLICY_NAME),
                api.get(WARNINGS_POLICY_NAME).await,
            )
        },
        async {
            let api: Api<v1::ValidatingAdmissionPolicyBinding> = Api::all(client.clone());
            classify(
                &what("ValidatingAdmissionPolicyBinding", WARNINGS_POLICY_NAME),
                api.get(WARNINGS_POLICY_NAME).await,
            )
        },
    );
    let (mut mutating, mut mutating_binding) = (mutating?, mutating_binding?);
    let mut mutating_api_version = "admissionregistration.k8s.io/v1".to_string();
    if matches!(mutating, Lookup::Missing) {
        let api: Api<v1beta1::MutatingAdmissionPolicy> = Api::all(client.clone());
        let beta = classify(
            &what("MutatingAdmissionPolicy (v1beta1)", MUTATING_POLICY_NAME),
            api.get(MUTATING_POLICY_NAME).await,
        )?;
        if let Lookup::Found(beta) = beta {
            mutating = to_v1(beta);
            mutating_api_version = "admissionregistration.k8s.io/v1beta1".to_string();
            let api: Api<v1beta1::MutatingAdmissionPolicyBinding> = Api::all(client.clone());
            mutating_binding = match classify(
                &what(
                    "MutatingAdmissionPolicyBinding (v1beta1)",
                    MUTATING_POLICY_NAME,
                ),
                api.get(MUTATING_POLICY_NAME).await,
            )? {
                Lookup::Found(b) => to_v1(b),
                Lookup::Missing => Lookup::Missing,
                Lookup::Unreadable(why) => Lookup::Unreadable(why),
            };
        }
    }
    Ok(super::checks::AdmissionPolicyState {
        mutating,
        mutating_binding,
        mutating_api_version,
        warnings: warnings?,
        warnings_binding: warnings_binding?,
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
