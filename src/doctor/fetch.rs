//! The doctor's thin fetch layer: read-only calls through a `kube::Client`, turned into a [`ClusterState`]; the one
//! write is `--probe`'s dry-run create (`dryRun=All`, nothing is stored), off by default.
//!
//! Every read is a get or a (paged) list. What the API server answers is data for the checks: 404 becomes
//! [`Lookup::Missing`] (a missing CRD included), any other API error (403 from RBAC, 500, ...) becomes
//! [`Lookup::Unreadable`] with the server's message, so the report can say what is wrong and how to fix it.
//! Only errors that mean "no usable API server" (transport errors, 401) end the run: [`FetchError`].

use std::collections::{BTreeMap, BTreeSet};

use k8s_openapi::api::admissionregistration::v1::MutatingWebhookConfiguration;
use k8s_openapi::api::apps::v1::DaemonSet;
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::{ConfigMap, Service};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::Client;
use kube::api::{
    Api, ApiResource, DynamicObject, GroupVersionKind, ListParams, ObjectList, PostParams,
};
use lb_l7_core::policy::Policy;

use crate::cluster::policy_source::{self, Origin, PolicyProblem, PolicySource};
use crate::cluster::target_ports;
use crate::cluster::{ClusterError, Lookup, lookup as classify, paged, read_inventory};

use super::checks::{
    CILIUM_AGENT_DAEMONSET, CILIUM_CONFIG_NAME, CILIUM_CONFIG_NAMESPACE, ClusterState,
    DiagnoseOptions, ENVOY_CONFIG_CRD, ENVOY_DAEMONSET, EnvoyConfigSummary, ProbeOutcome,
    ProbeTarget, RECONCILER_LEASE, probe_service, probe_target, unreadable_fix, webhook_services,
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
    let (envoy_config_crd, webhook, inventory, envoy_config_objects) =
        tokio::join!(crd, webhook, inventory, envoy_config_objects);
    let inventory = inventory?;
    let webhook = webhook?;

    // The policy the webhook runs: the ConfigMap named by --policy-configmap, else followed from the webhook's
    // Deployment (never "the newest ConfigMap by name": kustomize keeps old generations).
    let policy = match (&opts.policy_configmap, &webhook) {
        (Some(name), _) => {
            policy_source::read_named_configmap(client, &opts.webhook_namespace, name).await?
        }
        (None, Lookup::Found(mwc)) => {
            policy_source::discover_from(client, mwc, opts.page_size).await?
        }
        (None, Lookup::Missing) => Ok(PolicySource {
            policy: Policy::default(),
            origin: Origin::BuiltInNoWebhook {
                webhook: opts.webhook_name.clone(),
            },
        }),
        (None, Lookup::Unreadable(why)) => Err(PolicyProblem {
            message: format!(
                "cannot read MutatingWebhookConfiguration {}, so its Deployment and policy cannot be followed: {why}",
                opts.webhook_name
            ),
            fix: unreadable_fix("mutatingwebhookconfigurations"),
        }),
    };

    let target_ports = match &inventory.services {
        Lookup::Found(services) => {
            target_ports::read_resolved_ports(client, services, opts.page_size).await?
        }
        Lookup::Missing => Lookup::Missing,
        Lookup::Unreadable(why) => Lookup::Unreadable(why.clone()),
    };

    let probe = if opts.probe {
        let effective = policy
            .as_ref()
            .map(|s| s.policy.clone())
            .unwrap_or_default();
        Some(
            match probe_target(
                &effective,
                &inventory.namespaces,
                opts.probe_namespace.as_deref(),
            ) {
                ProbeTarget::Skip(why) => ProbeOutcome::Skipped(why),
                ProbeTarget::Namespace(ns) => run_probe(client, &ns).await?,
            },
        )
    } else {
        None
    };

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
        policy,
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
        target_ports,
        probe,
    })
}

/// The probe's one write: a server-side dry-run create (`dryRun=All`: admission runs, nothing is stored).
async fn run_probe(client: &Client, namespace: &str) -> Result<ProbeOutcome, ClusterError> {
    let api: Api<Service> = Api::namespaced(client.clone(), namespace);
    let params = PostParams {
        dry_run: true,
        field_manager: Some("lb-l7-webhook-doctor".to_string()),
    };
    let what = format!("a dry-run create of a Service in namespace {namespace}");
    let result = api.create(&params, &probe_service(namespace)).await;
    let forbidden = matches!(&result, Err(kube::Error::Api(s)) if s.code == 403);
    Ok(match classify(&what, result)? {
        Lookup::Found(service) => ProbeOutcome::Created {
            namespace: namespace.to_string(),
            annotations: service.metadata.annotations.unwrap_or_default(),
        },
        Lookup::Missing => ProbeOutcome::Refused {
            namespace: namespace.to_string(),
            forbidden: false,
            why: format!("namespace {namespace} not found (HTTP 404)"),
        },
        Lookup::Unreadable(why) => ProbeOutcome::Refused {
            namespace: namespace.to_string(),
            forbidden,
            why,
        },
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
