//! The webhook's wiring: its configuration, caBundle, endpoints, failurePolicy, timeout and policy.

use super::*;

pub fn check_webhook_exists(mwc: &Lookup<MutatingWebhookConfiguration>, name: &str) -> Check {
    let c = Check::build(
        "webhook.configuration",
        Group::Webhook,
        "MutatingWebhookConfiguration",
    );
    match mwc {
        Lookup::Found(mwc) => {
            let n = mwc.webhooks.as_ref().map_or(0, Vec::len);
            if n == 0 {
                c.fail(
                    format!("MutatingWebhookConfiguration {name} has no webhooks: the API server calls nothing"),
                    "lb-l7-webhook manifests --service lb-l7-system/lb-l7-webhook --ca-bundle-file certs/ca.crt | kubectl apply -f -",
                )
            } else {
                c.ok(format!(
                    "MutatingWebhookConfiguration {name} exists ({})",
                    plural(n, "webhook", "webhooks")
                ))
            }
        }
        Lookup::Missing => c.fail(
            format!("MutatingWebhookConfiguration {name} not found: the API server never calls the webhook, so no Service is annotated"),
            "kubectl apply -k deploy/overlays/namespace-opt-in (or cluster-wide, dry-run, cert-manager: README, Deploy), or, if it has another name (kubectl get mutatingwebhookconfigurations lists them), pass that with --webhook-name",
        ),
        Lookup::Unreadable(why) => c.fail(
            format!("cannot read MutatingWebhookConfiguration {name}: {why}"),
            unreadable_fix("mutatingwebhookconfigurations"),
        ),
    }
}

pub(super) fn webhooks(mwc: &MutatingWebhookConfiguration) -> &[MutatingWebhook] {
    mwc.webhooks.as_deref().unwrap_or(&[])
}

/// `2026-03-01` for a Unix time.
pub fn date(unix: i64) -> String {
    match time::OffsetDateTime::from_unix_timestamp(unix) {
        Ok(t) => t.date().to_string(),
        Err(_) => format!("@{unix}"),
    }
}

/// Each webhook's caBundle parses and at least one of its certificates is valid now; warn within 30 days of the
/// last one's expiry.
pub fn check_ca_bundle(mwc: &MutatingWebhookConfiguration, now: i64) -> Check {
    let c = Check::build("webhook.ca-bundle", Group::Webhook, "caBundle");
    let cert_manager = mwc
        .metadata
        .annotations
        .as_ref()
        .and_then(|a| a.get("cert-manager.io/inject-ca-from"))
        .cloned();
    let name = mwc.metadata.name.as_deref().unwrap_or("lb-l7-webhook");
    // The shipped manifests carry no caBundle: it is patched in (certs/README.md).
    let patch = format!(
        "kubectl patch mutatingwebhookconfiguration {name} --type=json -p '[{{\"op\":\"add\",\"path\":\"/webhooks/0/clientConfig/caBundle\",\"value\":\"'\"$(base64 -w0 certs/ca.crt)\"'\"}}]' (certs/README.md)"
    );
    let (set, renew) = match &cert_manager {
        Some(from) => {
            let (ns, cert) = from
                .split_once('/')
                .unwrap_or(("lb-l7-system", from.as_str()));
            let fix = format!(
                "kubectl -n {ns} describe certificate {cert}; then the cainjector's logs: kubectl -n cert-manager logs deploy/cert-manager-cainjector"
            );
            (fix.clone(), fix)
        }
        None => (
            format!("set it from the CA that signed the webhook's certificate: {patch}"),
            format!(
                "lb-l7-webhook certs --service lb-l7-system/lb-l7-webhook --new-ca --secret-manifest certs/secret.yaml, kubectl apply -f certs/secret.yaml, then {patch}"
            ),
        ),
    };
    let mut soonest: Option<(String, i64, String)> = None;
    for wh in webhooks(mwc) {
        if wh.client_config.url.is_some() && wh.client_config.ca_bundle.is_none() {
            // A URL webhook with a publicly trusted certificate needs no caBundle.
            continue;
        }
        let bundle = wh
            .client_config
            .ca_bundle
            .as_ref()
            .map(|b| b.0.as_slice())
            .unwrap_or(&[]);
        let certs = match lb_l7_core::cabundle::parse_ca_bundle(bundle) {
            Ok(certs) => certs,
            Err(e) => {
                let why = if bundle.is_empty() && cert_manager.is_some() {
                    "caBundle is empty: cert-manager's cainjector has not injected the CA"
                        .to_string()
                } else {
                    e
                };
                return c.fail(
                    format!(
                        "webhook {}: {why}; the API server cannot verify the webhook, so no Service is annotated",
                        wh.name
                    ),
                    set,
                );
            }
        };
        let valid: Vec<&lb_l7_core::cabundle::BundleCert> = certs
            .iter()
            .filter(|c| c.not_before <= now && now < c.not_after)
            .collect();
        let Some(best) = valid.iter().max_by_key(|c| c.not_after) else {
            let (what, when) = match certs.iter().max_by_key(|c| c.not_after) {
                Some(c) if c.not_before > now => ("is not valid before", c.not_before),
                Some(c) => ("expired on", c.not_after),
                None => ("holds no certificate", now),
            };
            return c.fail(
                format!(
                    "webhook {}: caBundle {what} {}: the API server rejects the webhook's TLS, so no Service is annotated",
                    wh.name,
                    date(when)
                ),
                renew,
            );
        };
        if soonest.as_ref().is_none_or(|(_, t, _)| best.not_after < *t) {
            soonest = Some((wh.name.clone(), best.not_after, best.subject.clone()));
        }
    }
    match soonest {
        None => c.ok("every webhook uses a url without a caBundle (system trust roots)"),
        Some((name, not_after, subject)) => {
            let days = (not_after - now) / 86_400;
            let msg = format!(
                "webhook {name}: CA {subject} valid until {} ({days} days)",
                date(not_after)
            );
            if days < CA_WARN_DAYS {
                c.warn(format!("{msg}: expires within {CA_WARN_DAYS} days"), renew)
            } else {
                c.ok(msg)
            }
        }
    }
}

/// Ready endpoints in an EndpointSlice (`ready` unset counts as ready, as the API says).
pub(super) fn ready_endpoints(slices: &[EndpointSlice], service: &str) -> usize {
    slices
        .iter()
        .filter(|s| {
            s.metadata
                .labels
                .as_ref()
                .and_then(|l| l.get("kubernetes.io/service-name"))
                .is_some_and(|n| n == service)
        })
        .flat_map(|s| s.endpoints.iter().flatten())
        .filter(|e| e.conditions.as_ref().and_then(|c| c.ready).unwrap_or(true))
        .count()
}

/// The Service(s) the webhook configuration points at, as (namespace, name).
pub fn webhook_services(mwc: &MutatingWebhookConfiguration) -> BTreeSet<(String, String)> {
    webhooks(mwc)
        .iter()
        .filter_map(|w| w.client_config.service.as_ref())
        .map(|s| (s.namespace.clone(), s.name.clone()))
        .collect()
}

/// The webhook's Service has ready endpoints (from discovery.k8s.io/v1 EndpointSlices).
pub fn check_webhook_endpoints(
    mwc: &MutatingWebhookConfiguration,
    endpoints: &BTreeMap<(String, String), Lookup<Vec<EndpointSlice>>>,
) -> Check {
    let c = Check::build("webhook.endpoints", Group::Webhook, "Webhook endpoints");
    let services = webhook_services(mwc);
    if services.is_empty() {
        let urls: Vec<String> = webhooks(mwc)
            .iter()
            .filter_map(|w| w.client_config.url.clone())
            .collect();
        return c.ok(format!(
            "the webhook is called by url ({}): no in-cluster Service to check",
            list_some(&urls)
        ));
    }
    let mut ready_msgs = Vec::new();
    for (ns, name) in &services {
        let at = format!("{ns}/{name}");
        let fix_pods = format!(
            "kubectl -n {ns} get endpointslices -l kubernetes.io/service-name={name} -o wide; kubectl -n {ns} get service {name} -o jsonpath='{{.spec.selector}}'; kubectl -n {ns} get pods --show-labels; kubectl -n {ns} describe deployments (the Service's selector must match ready webhook pods)"
        );
        match endpoints.get(&(ns.clone(), name.clone())) {
            Some(Lookup::Found(slices)) => {
                let ready = ready_endpoints(slices, name);
                if ready == 0 {
                    let why = if slices.is_empty() {
                        "has no EndpointSlices (missing Service, or a selector that matches no pod)"
                    } else {
                        "has no ready endpoints"
                    };
                    return c.objects(vec![at.clone()]).fail(
                        format!("Service {at} {why}: the API server cannot reach the webhook, and with failurePolicy Ignore Services pass unannotated"),
                        fix_pods,
                    );
                }
                ready_msgs.push(format!(
                    "{at} has {}",
                    plural(ready, "ready endpoint", "ready endpoints")
                ));
            }
            Some(Lookup::Unreadable(why)) => {
                return c.fail(
                    format!("cannot list EndpointSlices of {at}: {why}"),
                    unreadable_fix(&format!("endpointslices in {ns}")),
                );
            }
            Some(Lookup::Missing) | None => {
                return c.objects(vec![at.clone()]).fail(
                    format!("Service {at} has no EndpointSlices: the API server cannot reach the webhook"),
                    fix_pods,
                );
            }
        }
    }
    c.ok(ready_msgs.join("; "))
}

/// failurePolicy Ignore: a webhook that is down must not block Service writes.
pub fn check_failure_policy(mwc: &MutatingWebhookConfiguration) -> Check {
    let c = Check::build("webhook.failure-policy", Group::Webhook, "failurePolicy");
    let not_ignore: Vec<String> = webhooks(mwc)
        .iter()
        .filter(|w| w.failure_policy.as_deref() != Some("Ignore"))
        .map(|w| {
            format!(
                "{} ({})",
                w.name,
                w.failure_policy.as_deref().unwrap_or("unset, so Fail")
            )
        })
        .collect();
    if not_ignore.is_empty() {
        c.ok("failurePolicy Ignore: Service writes go through unchanged when the webhook is down")
    } else {
        c.objects(not_ignore.clone()).warn(
            format!(
                "failurePolicy is not Ignore for {}: the API server rejects Service writes whenever the webhook is down",
                list_some(&not_ignore)
            ),
            "set failurePolicy: Ignore (what `lb-l7-webhook manifests` renders) and cover missed Services with `lb-l7-webhook backfill`",
        )
    }
}

/// timeoutSeconds at most 10: a slow webhook holds every Service write for that long.
pub fn check_timeout(mwc: &MutatingWebhookConfiguration) -> Check {
    let c = Check::build("webhook.timeout", Group::Webhook, "timeoutSeconds");
    let slow: Vec<String> = webhooks(mwc)
        .iter()
        .filter(|w| w.timeout_seconds.unwrap_or(10) > MAX_RECOMMENDED_TIMEOUT_SECONDS)
        .map(|w| format!("{} ({}s)", w.name, w.timeout_seconds.unwrap_or(10)))
        .collect();
    if slow.is_empty() {
        let longest = webhooks(mwc)
            .iter()
            .map(|w| w.timeout_seconds.unwrap_or(10))
            .max()
            .unwrap_or(10);
        c.ok(format!(
            "timeoutSeconds {longest}: a slow webhook delays a Service write by at most {longest}s"
        ))
    } else {
        c.objects(slow.clone()).warn(
            format!(
                "timeoutSeconds above {MAX_RECOMMENDED_TIMEOUT_SECONDS} for {}: every Service write waits that long when the webhook is slow or unreachable",
                list_some(&slow)
            ),
            "set timeoutSeconds in the policy (default 5) and re-render with `lb-l7-webhook manifests`",
        )
    }
}

/// The policy the webhook runs: followed from its Deployment to the ConfigMap its pods mount (or the ConfigMap
/// named by `--policy-configmap`), and loaded. Returns the check and the policy the Effect checks use.
pub fn check_policy(
    found: &crate::cluster::policy_source::Discovery,
    opts: &DiagnoseOptions,
) -> (Check, Option<Policy>) {
    let c = Check::build("webhook.policy", Group::Webhook, "Policy");
    let fallback = "; the Effect checks use the built-in default policy";
    let source = match found {
        Ok(source) => source,
        Err(problem) => {
            return (
                c.fail(
                    format!("{}{fallback}", problem.message),
                    problem.fix.clone(),
                ),
                None,
            );
        }
    };
    let policy = &source.policy;
    let message = format!(
        "{}: {}, annotation {}",
        source.describe(),
        plural(policy.rules.len(), "rule", "rules"),
        policy.annotation_key
    );
    let check = match &opts.policy_file {
        Some((path, file)) if file != policy => c.warn(
            format!(
                "{message}; --policy {} differs from it (the checks use the policy the webhook runs)",
                path.display()
            ),
            deploy_policy_fix(&source.origin, path),
        ),
        _ => c.ok(message),
    };
    (check, Some(policy.clone()))
}

/// Commands that make the webhook run the policy in `file` (serve reads its policy once, at start).
fn deploy_policy_fix(
    origin: &crate::cluster::policy_source::Origin,
    file: &std::path::Path,
) -> String {
    use crate::cluster::policy_source::Origin;
    let f = file.display();
    let render = format!(
        "re-render the webhook configuration: lb-l7-webhook manifests --policy {f} --ca-bundle-file certs/ca.crt | kubectl apply -f -"
    );
    match origin {
        Origin::ConfigMap {
            namespace,
            name,
            key,
            deployment: Some(deployment),
        } => format!(
            "if {f} is the policy you want: kubectl -n {namespace} create configmap {name} --from-file={key}={f} --dry-run=client -o yaml | kubectl apply -f - && kubectl -n {namespace} rollout restart deployment {}; then {render}",
            deployment.rsplit('/').next().unwrap_or(deployment)
        ),
        _ => format!(
            "if {f} is the policy you want, copy it to the overlay's policy.yaml and kubectl apply -k deploy/overlays/namespace-opt-in (or your overlay); then {render}"
        ),
    }
}
