//! The effect: annotated Services have CiliumEnvoyConfigs, and selected Services are annotated.

use super::*;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference;

fn annotation<'a>(svc: &'a Service, key: &str) -> Option<&'a str> {
    svc.metadata
        .annotations
        .as_ref()
        .and_then(|a| a.get(key))
        .map(String::as_str)
}

/// The policy as the doctor uses it to look at a Service that is already annotated: every namespace in scope, so
/// `evaluate` reaches its pitfall warnings for hand-annotated Services in excluded namespaces too.
pub(super) fn widened(policy: &CompiledPolicy) -> CompiledPolicy {
    let mut p = policy.policy.clone();
    p.scope = Scope::Cluster;
    p.excluded_namespaces.clear();
    p.compile()
}

/// The decision for an annotated Service, from the pure core.
pub(super) fn annotated_decision(policy: &CompiledPolicy, svc: &Service) -> policy::Decision {
    policy.evaluate(
        svc,
        NamespaceContext::scope_applied(namespace_of(&svc.metadata)),
    )
}

/// For every Service annotated `enabled`, Cilium's operator made the CiliumEnvoyConfig `cilium-envoy-lb-<name>`.
pub fn check_envoy_configs(
    services: &[Service],
    policy: &CompiledPolicy,
    envoy_configs: &Lookup<BTreeSet<(String, String)>>,
) -> Check {
    let c = Check::build(
        "effect.envoy-configs",
        Group::Effect,
        "CiliumEnvoyConfig per annotated Service",
    );
    let key = policy.policy.annotation_key.as_str();
    let wide = widened(policy);
    let annotated: Vec<&Service> = services
        .iter()
        .filter(|s| annotation(s, key) == Some(ENABLED_VALUE))
        // Headless and ExternalName Services have no frontend; Cilium makes no config for them (and the pitfalls
        // check says the annotation does nothing there).
        .filter(|s| annotated_decision(&wide, s).kind != DecisionKind::NotApplicable)
        .collect();
    if annotated.is_empty() {
        return c.ok(format!(
            "no Service is annotated {key}=enabled, so no CiliumEnvoyConfig is expected"
        ));
    }
    let names: Vec<String> = annotated.iter().map(|s| namespaced(s)).collect();
    let fix_operator = "check the Cilium checks above, then kubectl -n kube-system logs deploy/cilium-operator | grep -i envoy";
    let cecs = match envoy_configs {
        Lookup::Found(cecs) => cecs,
        Lookup::Missing => {
            return c.objects(names.clone()).fail(
                format!(
                    "annotated but Cilium made no Envoy config: the CiliumEnvoyConfig CRD is not installed ({}: {})",
                    plural(names.len(), "Service", "Services"),
                    list_some(&names)
                ),
                format!("{HELM_UPGRADE} --set envoyConfig.enabled=true --set loadBalancer.l7.backend=envoy"),
            );
        }
        Lookup::Unreadable(why) => {
            return c.fail(
                format!("cannot list CiliumEnvoyConfigs: {why}"),
                unreadable_fix("ciliumenvoyconfigs.cilium.io"),
            );
        }
    };
    let missing: Vec<String> = annotated
        .iter()
        .filter(|s| {
            let ns = namespace_of(&s.metadata).to_string();
            let name = policy::cilium_envoy_config_name(s.metadata.name.as_deref().unwrap_or(""));
            !cecs.contains(&(ns, name))
        })
        .map(|s| {
            format!(
                "{} (no {})",
                namespaced(s),
                policy::cilium_envoy_config_name(s.metadata.name.as_deref().unwrap_or(""))
            )
        })
        .collect();
    if missing.is_empty() {
        c.objects(names.clone()).ok(format!(
            "{} annotated {key}=enabled, each with its CiliumEnvoyConfig cilium-envoy-lb-<name>",
            plural(names.len(), "Service", "Services")
        ))
    } else {
        c.objects(missing.clone()).fail(
            format!(
                "annotated but Cilium made no Envoy config: {} of {}: {}",
                missing.len(),
                plural(names.len(), "annotated Service", "annotated Services"),
                list_some(&missing)
            ),
            fix_operator,
        )
    }
}

/// Services that carry the old key `io.cilium.service/lb-l7`, which current Cilium ignores.
pub fn check_legacy_annotation(services: &[Service], policy: &Policy) -> Check {
    let c = Check::build(
        "effect.legacy-annotation",
        Group::Effect,
        "Old annotation key",
    );
    let key = policy.annotation_key.as_str();
    if key == LEGACY_ANNOTATION_KEY {
        return c.ok(format!(
            "the policy itself uses {LEGACY_ANNOTATION_KEY} (a cluster pinned to an old Cilium)"
        ));
    }
    let mut only_legacy = Vec::new();
    let mut both = Vec::new();
    for svc in services {
        if annotation(svc, LEGACY_ANNOTATION_KEY).is_some() {
            if annotation(svc, key) == Some(ENABLED_VALUE) {
                both.push(namespaced(svc));
            } else {
                only_legacy.push(namespaced(svc));
            }
        }
    }
    let fix = format!(
        "{} (or lb-l7-webhook backfill)",
        annotate_commands(
            &only_legacy,
            &format!("{LEGACY_ANNOTATION_KEY}- {key}=enabled")
        )
    );
    if !only_legacy.is_empty() {
        let mut all = only_legacy.clone();
        all.extend(both);
        c.objects(all).fail(
            format!(
                "{} {} only the old key {LEGACY_ANNOTATION_KEY}, which current Cilium ignores, so L7 balancing is off: {}",
                plural(only_legacy.len(), "Service", "Services"),
                if only_legacy.len() == 1 { "carries" } else { "carry" },
                list_some(&only_legacy)
            ),
            fix,
        )
    } else if !both.is_empty() {
        c.objects(both.clone()).warn(
            format!(
                "{} still {} the old key {LEGACY_ANNOTATION_KEY} next to {key}=enabled (harmless, but confusing): {}",
                plural(both.len(), "Service", "Services"),
                if both.len() == 1 { "carries" } else { "carry" },
                list_some(&both)
            ),
            annotate_commands(&both, &format!("{LEGACY_ANNOTATION_KEY}-")),
        )
    } else {
        c.ok(format!(
            "no Service uses the old key {LEGACY_ANNOTATION_KEY}"
        ))
    }
}

/// Values such as `Enabled` or `ENABLED`: Cilium compares case-sensitively, so L7 stays off.
pub fn check_annotation_case(services: &[Service], policy: &Policy) -> Check {
    let c = Check::build("effect.annotation-value", Group::Effect, "Annotation value");
    let key = policy.annotation_key.as_str();
    let wrong_services: Vec<&Service> = services
        .iter()
        .filter(|svc| {
            annotation(svc, key)
                .is_some_and(|v| v != ENABLED_VALUE && v.trim().eq_ignore_ascii_case(ENABLED_VALUE))
        })
        .collect();
    let wrong: Vec<String> = wrong_services
        .iter()
        .map(|svc| {
            format!(
                "{} ({key}={})",
                namespaced(svc),
                annotation(svc, key).unwrap_or_default()
            )
        })
        .collect();
    let names: Vec<String> = wrong_services.iter().map(|s| namespaced(s)).collect();
    if wrong.is_empty() {
        c.ok(format!(
            "every {key} value is exactly \"enabled\" or deliberately something else"
        ))
    } else {
        c.objects(wrong.clone()).fail(
            format!(
                "{} not exactly \"enabled\" (Cilium compares case-sensitively, and the webhook never overwrites an owner's value), so L7 balancing is off: {}",
                if wrong.len() == 1 { "1 value is".to_string() } else { format!("{} values are", wrong.len()) },
                list_some(&wrong)
            ),
            annotate_commands(&names, &format!("--overwrite {key}=enabled")),
        )
    }
}

/// Cilium's pitfalls (multi-port, targetPort, session affinity, unknown algorithm, no frontend) for Services that
/// are annotated `enabled`: the warnings of [`CompiledPolicy::evaluate`].
pub fn check_pitfalls(
    services: &[Service],
    policy: &CompiledPolicy,
    target_ports: &Lookup<crate::cluster::target_ports::ResolvedPorts>,
) -> Check {
    let c = Check::build("effect.pitfalls", Group::Effect, "Cilium pitfalls");
    let key = policy.policy.annotation_key.as_str();
    let wide = widened(policy);
    let mut lines = Vec::new();
    let mut services_warned = 0;
    for svc in services
        .iter()
        .filter(|s| annotation(s, key) == Some(ENABLED_VALUE))
    {
        let before = lines.len();
        let mut d = annotated_decision(&wide, svc);
        if let Lookup::Found(resolved) = target_ports {
            d.warnings
                .extend(crate::cluster::target_ports::warnings_for(svc, resolved));
        }
        for w in d
            .warnings
            .iter()
            // Reported by the legacy-annotation check.
            .filter(|w| !w.contains(LEGACY_ANNOTATION_KEY))
            // Reported by the algorithm check (effect.algorithm).
            .filter(|w| !w.starts_with(policy::ALGORITHM_ANNOTATION))
        {
            lines.push(format!("{}: {w}", namespaced(svc)));
        }
        if lines.len() > before {
            services_warned += 1;
        }
    }
    if lines.is_empty() {
        c.ok("no annotated Service has multiple ports, a targetPort that differs, or session affinity")
    } else {
        c.objects(lines.clone()).warn(
            format!(
                "{} for {}: {}",
                plural(lines.len(), "warning", "warnings"),
                plural(services_warned, "Service", "Services"),
                list_some_sep(&lines, "; ")
            ),
            "give gRPC its own single-port Service with targetPort equal to port and no sessionAffinity",
        )
    }
}

/// Services the policy selects that are not annotated yet (created before the webhook, or written while it was
/// unreachable with failurePolicy Ignore).
pub fn check_not_annotated(
    services: &[Service],
    policy: &CompiledPolicy,
    namespaces: &Lookup<crate::cluster::NamespaceLabelMap>,
    reconciler: &Reconciler,
    opts: &DiagnoseOptions,
) -> Check {
    let c = Check::build(
        "effect.not-annotated",
        Group::Effect,
        "Selected Services annotated",
    );
    let pending: Vec<String> = services
        .iter()
        .filter(|svc| {
            let ns = crate::cluster::namespace_context(namespace_of(&svc.metadata), namespaces);
            policy.evaluate(svc, ns).kind == DecisionKind::Enable
        })
        .map(namespaced)
        .collect();
    if pending.is_empty() {
        return c.ok("every Service the policy selects carries the annotation");
    }
    if policy.policy.mode == Mode::DryRun {
        return c.objects(pending.clone()).ok(format!(
            "dry-run policy: {} would be annotated in enforce mode: {}",
            plural(pending.len(), "Service", "Services"),
            list_some(&pending)
        ));
    }
    // A live reconciler patches them; a stale one is why they stay unannotated.
    let are = if pending.len() == 1 { "is" } else { "are" };
    if let Some(who) = pending_handled_by(reconciler, opts) {
        return c.objects(pending.clone()).ok(format!(
            "{} the policy selects {are} not annotated yet; {who}: {}",
            plural(pending.len(), "Service", "Services"),
            list_some(&pending)
        ));
    }
    let (stale, fix) = match pending_stale(reconciler, opts) {
        Some((words, fix)) => (format!("; {words}"), fix),
        None => (
            String::new(),
            "lb-l7-webhook backfill --dry-run, then lb-l7-webhook backfill".to_string(),
        ),
    };
    c.objects(pending.clone()).warn(
        format!(
            "{} the policy selects {are} not annotated (created before the webhook, or while it was unreachable){stale}: {}",
            plural(pending.len(), "Service", "Services"),
            list_some(&pending)
        ),
        fix,
    )
}

/// Services annotated `enabled` that have a frontend: the ones Cilium's operator makes a CiliumEnvoyConfig for.
fn annotated_for_l7<'a>(services: &'a [Service], policy: &CompiledPolicy) -> Vec<&'a Service> {
    let key = policy.policy.annotation_key.as_str();
    let wide = widened(policy);
    services
        .iter()
        .filter(|s| annotation(s, key) == Some(ENABLED_VALUE))
        .filter(|s| annotated_decision(&wide, s).kind != DecisionKind::NotApplicable)
        .collect()
}

/// Whether `owner` is the controller reference Cilium's operator sets for `svc` (kind Service, its name, and its
/// uid when both are known): `controllerutil.SetControllerReference(svc, cec)` in cilium/cilium
/// `operator/pkg/ciliumenvoyconfig/ciliumenvoyconfig_reconcile.go`.
fn is_service_controller(owner: &OwnerReference, svc: &Service) -> bool {
    owner.controller == Some(true)
        && owner.kind == "Service"
        && owner.api_version == "v1"
        && Some(owner.name.as_str()) == svc.metadata.name.as_deref()
        && match svc.metadata.uid.as_deref() {
            Some(uid) if !owner.uid.is_empty() => owner.uid == uid,
            _ => true,
        }
}

/// Each `cilium-envoy-lb-<svc>` is controlled by its Service. One that is not was written by someone else: the
/// operator updates only its spec (it never sets the owner on an object it did not create), so it is left behind
/// when the Service goes, and whoever wrote it may write it back. `None` when CiliumEnvoyConfigs cannot be listed
/// (effect.envoy-configs says why).
pub fn check_envoy_config_owners(
    services: &[Service],
    policy: &CompiledPolicy,
    configs: &Lookup<Vec<EnvoyConfigSummary>>,
) -> Option<Check> {
    let configs = configs.found()?;
    let c = Check::build(
        "effect.envoy-config-owner",
        Group::Effect,
        "CiliumEnvoyConfig owned by its Service",
    );
    let mut checked = 0;
    let mut wrong: Vec<(String, String, String)> = Vec::new();
    for svc in annotated_for_l7(services, policy) {
        let ns = namespace_of(&svc.metadata);
        let name = policy::cilium_envoy_config_name(svc.metadata.name.as_deref().unwrap_or(""));
        let Some(cec) = configs
            .iter()
            .find(|c| c.namespace.as_deref() == Some(ns) && c.name == name)
        else {
            continue;
        };
        checked += 1;
        if cec.owners.iter().any(|o| is_service_controller(o, svc)) {
            continue;
        }
        let why = match cec.controller() {
            None => "has no controller ownerReference".to_string(),
            Some(o)
                if o.kind == "Service" && Some(o.name.as_str()) == svc.metadata.name.as_deref() =>
            {
                format!(
                    "is controlled by an earlier Service {} (uid {})",
                    o.name, o.uid
                )
            }
            Some(o) => format!("is controlled by {} {}", o.kind, o.name),
        };
        wrong.push((
            ns.to_string(),
            name,
            format!(
                "{} {why}, not by Service {}",
                cec.describe(),
                namespaced(svc)
            ),
        ));
    }
    if wrong.is_empty() {
        return Some(c.ok(if checked == 0 {
            "no annotated Service has a CiliumEnvoyConfig to check yet".to_string()
        } else {
            format!(
                "{} cilium-envoy-lb-<name> controlled by its Service",
                plural(checked, "CiliumEnvoyConfig", "CiliumEnvoyConfigs")
            )
        }));
    }
    let restart = "then kubectl -n kube-system rollout restart deploy/cilium-operator (it recreates it, owned by the Service)";
    let fix = match wrong.as_slice() {
        [(ns, name, _)] => format!("kubectl -n {ns} delete ciliumenvoyconfig {name}, {restart}"),
        _ => format!("kubectl -n NS delete ciliumenvoyconfig NAME for each one listed, {restart}"),
    };
    let lines: Vec<String> = wrong.into_iter().map(|(_, _, line)| line).collect();
    Some(c.objects(lines.clone()).warn(
        format!(
            "{} not made by Cilium's operator for the Service (it only overwrites the spec, and the config outlives the Service): {}",
            plural(lines.len(), "CiliumEnvoyConfig is", "CiliumEnvoyConfigs are"),
            list_some_sep(&lines, "; ")
        ),
        fix,
    ))
}

/// Another CiliumEnvoyConfig, or a CiliumClusterwideEnvoyConfig, that lists an annotated Service in
/// `spec.services` also redirects its traffic to an Envoy listener: two configs for one Service is a conflict
/// Cilium does not resolve (cilium/cilium#33767), and which one wins is not defined. `None` when
/// CiliumEnvoyConfigs cannot be listed (effect.envoy-configs says why).
pub fn check_envoy_config_conflicts(
    services: &[Service],
    policy: &CompiledPolicy,
    configs: &Lookup<Vec<EnvoyConfigSummary>>,
    clusterwide: &Lookup<Vec<EnvoyConfigSummary>>,
) -> Option<Check> {
    let namespaced_configs = configs.found()?;
    let c = Check::build(
        "effect.envoy-config-conflicts",
        Group::Effect,
        "One Envoy config per Service",
    );
    // A cluster without the CiliumClusterwideEnvoyConfig CRD has none.
    let clusterwide_configs: &[EnvoyConfigSummary] = match clusterwide {
        Lookup::Found(all) => all,
        Lookup::Missing | Lookup::Unreadable(_) => &[],
    };
    let mut lines = Vec::new();
    let mut first_other: Option<&EnvoyConfigSummary> = None;
    let mut first_service: Option<&Service> = None;
    for svc in annotated_for_l7(services, policy) {
        let ns = namespace_of(&svc.metadata);
        let name = svc.metadata.name.as_deref().unwrap_or("");
        let own_name = policy::cilium_envoy_config_name(name);
        let target = (ns.to_string(), name.to_string());
        let own = namespaced_configs
            .iter()
            .find(|c| c.namespace.as_deref() == Some(ns) && c.name == own_name);
        let others: Vec<&EnvoyConfigSummary> = namespaced_configs
            .iter()
            .filter(|c| !(c.namespace.as_deref() == Some(ns) && c.name == own_name))
            .chain(clusterwide_configs.iter())
            .filter(|c| c.services.contains(&target))
            .collect();
        for other in others {
            let with = match own {
                Some(own) => format!("{} and {}", own.describe(), other.describe()),
                None => format!("{} (and no {own_name})", other.describe()),
            };
            lines.push(format!("Service {}: {with}", namespaced(svc)));
            first_other.get_or_insert(other);
            first_service.get_or_insert(svc);
        }
    }
    let (Some(other), Some(svc)) = (first_other, first_service) else {
        if let Lookup::Unreadable(why) = clusterwide {
            return Some(c.warn(
                format!(
                    "no CiliumEnvoyConfig redirects an annotated Service a second time, but CiliumClusterwideEnvoyConfigs could not be listed: {why}"
                ),
                unreadable_fix("ciliumclusterwideenvoyconfigs.cilium.io (list)"),
            ));
        }
        return Some(c.ok(
            "no other CiliumEnvoyConfig or CiliumClusterwideEnvoyConfig lists an annotated Service in spec.services",
        ));
    };
    let edit = match &other.namespace {
        Some(ns) => format!("kubectl -n {ns} edit ciliumenvoyconfig {}", other.name),
        None => format!("kubectl edit ciliumclusterwideenvoyconfig {}", other.name),
    };
    let key = policy.policy.annotation_key.as_str();
    let fix = format!(
        "remove Service {} from spec.services of {} ({edit}), or leave the Service to it: kubectl annotate service -n {} {} --overwrite {key}=disabled",
        namespaced(svc),
        other.describe(),
        namespace_of(&svc.metadata),
        svc.metadata.name.as_deref().unwrap_or(""),
    );
    Some(c.objects(lines.clone()).warn(
        format!(
            "{} redirect the same Service to Envoy, a conflict Cilium does not resolve (cilium/cilium#33767): {}",
            plural(lines.len(), "pair of Envoy configs", "pairs of Envoy configs"),
            list_some_sep(&lines, "; ")
        ),
        fix,
    ))
}

#[cfg(test)]
mod ownership_tests {
    use super::*;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;

    fn svc(ns: &str, name: &str, uid: Option<&str>) -> Service {
        Service {
            metadata: ObjectMeta {
                name: Some(name.into()),
                namespace: Some(ns.into()),
                uid: uid.map(String::from),
                annotations: Some(BTreeMap::from([(
                    "service.cilium.io/lb-l7".to_string(),
                    "enabled".to_string(),
                )])),
                ..ObjectMeta::default()
            },
            spec: Some(k8s_openapi::api::core::v1::ServiceSpec {
                cluster_ip: Some("10.96.0.10".into()),
                ports: Some(vec![k8s_openapi::api::core::v1::ServicePort {
                    port: 50051,
                    ..Default::default()
                }]),
                ..Default::default()
            }),
            ..Service::default()
        }
    }

    fn owner(kind: &str, name: &str, uid: &str, controller: bool) -> OwnerReference {
        OwnerReference {
            api_version: "v1".into(),
            kind: kind.into(),
            name: name.into(),
            uid: uid.into(),
            controller: Some(controller),
            block_owner_deletion: None,
        }
    }

    fn config(
        ns: Option<&str>,
        name: &str,
        owners: Vec<OwnerReference>,
        services: &[(&str, &str)],
    ) -> EnvoyConfigSummary {
        EnvoyConfigSummary {
            namespace: ns.map(String::from),
            name: name.into(),
            owners,
            services: services
                .iter()
                .map(|(n, s)| (n.to_string(), s.to_string()))
                .collect(),
        }
    }

    #[test]
    fn the_operators_controller_reference_is_kind_name_and_uid() {
        let s = svc("apps", "greeter", Some("u1"));
        assert!(is_service_controller(
            &owner("Service", "greeter", "u1", true),
            &s
        ));
        assert!(!is_service_controller(
            &owner("Service", "greeter", "u0", true),
            &s
        ));
        assert!(!is_service_controller(
            &owner("Service", "greeter", "u1", false),
            &s
        ));
        assert!(!is_service_controller(
            &owner("Gateway", "greeter", "u1", true),
            &s
        ));
        // The Service's uid unknown: kind and name decide.
        assert!(is_service_controller(
            &owner("Service", "greeter", "u9", true),
            &svc("apps", "greeter", None)
        ));
    }

    #[test]
    fn owners_and_conflicts_name_both_objects() {
        let policy = Policy::default().compile();
        let services = vec![svc("apps", "greeter", Some("u1"))];
        let own = config(
            Some("apps"),
            "cilium-envoy-lb-greeter",
            vec![owner("Service", "greeter", "u1", true)],
            &[("apps", "greeter")],
        );
        let c = check_envoy_config_owners(&services, &policy, &Lookup::Found(vec![own.clone()]))
            .expect("check");
        assert_eq!(c.status, Status::Ok, "{c:?}");
        let foreign = config(
            Some("apps"),
            "cilium-envoy-lb-greeter",
            vec![],
            &[("apps", "greeter")],
        );
        let c = check_envoy_config_owners(&services, &policy, &Lookup::Found(vec![foreign]))
            .expect("check");
        assert_eq!(c.status, Status::Warn);
        assert!(check_envoy_config_owners(&services, &policy, &Lookup::Missing).is_none());

        let ccec = config(None, "gw", vec![], &[("apps", "greeter")]);
        let c = check_envoy_config_conflicts(
            &services,
            &policy,
            &Lookup::Found(vec![own.clone()]),
            &Lookup::Found(vec![ccec]),
        )
        .expect("check");
        assert_eq!(c.status, Status::Warn);
        assert_eq!(
            c.objects,
            vec![
                "Service apps/greeter: CiliumEnvoyConfig apps/cilium-envoy-lb-greeter and CiliumClusterwideEnvoyConfig gw"
            ]
        );
        let c = check_envoy_config_conflicts(
            &services,
            &policy,
            &Lookup::Found(vec![own]),
            &Lookup::Missing,
        )
        .expect("check");
        assert_eq!(c.status, Status::Ok);
    }
}
