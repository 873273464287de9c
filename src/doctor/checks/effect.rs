//! The effect: annotated Services have CiliumEnvoyConfigs, and selected Services are annotated.

use super::*;

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
    c.objects(pending.clone()).warn(
        format!(
            "{} the policy selects {} not annotated (created before the webhook, or while it was unreachable): {}",
            plural(pending.len(), "Service", "Services"),
            if pending.len() == 1 { "is" } else { "are" },
            list_some(&pending)
        ),
        "lb-l7-webhook backfill --dry-run, then lb-l7-webhook backfill",
    )
}
