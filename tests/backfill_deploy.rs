//! deploy/backfill: the Job's and the CronJob's RBAC grant exactly what the issue allows, and the policy they
//! read is the webhook's.

use std::path::PathBuf;

use serde_json::Value;

fn dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("deploy/backfill")
}

fn docs(file: &str) -> Vec<Value> {
    let text = std::fs::read_to_string(dir().join(file)).expect("read");
    lb_l7_webhook::input::manifests::split_yaml_documents(&text)
        .filter(|(_, d)| {
            d.lines()
                .any(|l| !l.trim().is_empty() && !l.trim_start().starts_with('#'))
        })
        .map(|(_, d)| serde_saphyr::from_str(d).expect("YAML"))
        .collect()
}

/// (resource, verb) pairs a ClusterRole (or the Role in lb-l7-system) grants, sorted. A resource outside the core
/// group is `group/resource`; one limited to names is `resource:name,...`.
fn grants_of(file: &str, kind: &str, role: &str) -> Vec<(String, String)> {
    let docs = docs(file);
    let cr = docs
        .iter()
        .find(|d| d["kind"] == kind && d["metadata"]["name"] == role)
        .expect("role");
    let mut out = Vec::new();
    for rule in cr["rules"].as_array().expect("rules") {
        let groups = rule["apiGroups"].as_array().expect("apiGroups");
        assert_eq!(groups.len(), 1, "one group per rule: {rule}");
        let group = groups[0].as_str().expect("str");
        let names: Vec<&str> = rule["resourceNames"]
            .as_array()
            .map(|n| n.iter().filter_map(Value::as_str).collect())
            .unwrap_or_default();
        for r in rule["resources"].as_array().expect("resources") {
            let mut r = r.as_str().expect("str").to_string();
            if !group.is_empty() {
                r = format!("{group}/{r}");
            }
            if !names.is_empty() {
                r = format!("{r}:{}", names.join(","));
            }
            for v in rule["verbs"].as_array().expect("verbs") {
                out.push((r.clone(), v.as_str().expect("str").to_string()));
            }
        }
    }
    out.sort();
    out
}

fn grants(file: &str, role: &str) -> Vec<(String, String)> {
    grants_of(file, "ClusterRole", role)
}

fn pairs(p: &[(&str, &str)]) -> Vec<(String, String)> {
    p.iter()
        .map(|(a, b)| (a.to_string(), b.to_string()))
        .collect()
}

#[test]
fn backfill_role_is_get_list_namespaces_and_services_and_patch_services() {
    assert_eq!(
        grants("rbac-backfill.yaml", "lb-l7-webhook-backfill"),
        pairs(&[
            (
                "admissionregistration.k8s.io/mutatingwebhookconfigurations:lb-l7-webhook",
                "get"
            ),
            ("namespaces", "get"),
            ("namespaces", "list"),
            ("services", "get"),
            ("services", "list"),
            ("services", "patch"),
        ])
    );
}

#[test]
fn backfill_and_report_read_the_webhooks_deployments_and_its_policy_configmap_only_in_its_namespace()
 {
    for (file, role) in [
        ("rbac-backfill.yaml", "lb-l7-webhook-backfill"),
        ("rbac-report.yaml", "lb-l7-webhook-report"),
    ] {
        assert_eq!(
            grants_of(file, "Role", role),
            pairs(&[
                ("apps/deployments", "get"),
                ("apps/deployments", "list"),
                ("configmaps", "get"),
            ]),
            "{file}"
        );
        let d = docs(file);
        let role_doc = d.iter().find(|x| x["kind"] == "Role").expect("Role");
        assert_eq!(role_doc["metadata"]["namespace"], "lb-l7-system");
        let binding = d
            .iter()
            .find(|x| x["kind"] == "RoleBinding")
            .expect("RoleBinding");
        assert_eq!(binding["roleRef"]["name"], role);
        assert_eq!(binding["subjects"][0]["name"], role);
    }
}

#[test]
fn report_role_is_read_only() {
    assert_eq!(
        grants("rbac-report.yaml", "lb-l7-webhook-report"),
        pairs(&[
            (
                "admissionregistration.k8s.io/mutatingwebhookconfigurations:lb-l7-webhook",
                "get"
            ),
            ("discovery.k8s.io/endpointslices", "get"),
            ("discovery.k8s.io/endpointslices", "list"),
            ("namespaces", "get"),
            ("namespaces", "list"),
            ("services", "get"),
            ("services", "list"),
        ])
    );
}

#[test]
fn bindings_and_workloads_use_their_own_service_accounts() {
    for (rbac, workload, sa) in [
        ("rbac-backfill.yaml", "job.yaml", "lb-l7-webhook-backfill"),
        ("rbac-report.yaml", "cronjob.yaml", "lb-l7-webhook-report"),
    ] {
        let rbac_docs = docs(rbac);
        let binding = rbac_docs
            .iter()
            .find(|d| d["kind"] == "ClusterRoleBinding")
            .expect("binding");
        assert_eq!(binding["roleRef"]["name"], sa);
        assert_eq!(binding["subjects"][0]["name"], sa);
        assert_eq!(binding["subjects"][0]["namespace"], "lb-l7-system");
        let w = &docs(workload)[0];
        let pod = if w["kind"] == "CronJob" {
            &w["spec"]["jobTemplate"]["spec"]["template"]["spec"]
        } else {
            &w["spec"]["template"]["spec"]
        };
        assert_eq!(pod["serviceAccountName"], sa, "{workload}");
        let args: Vec<&str> = pod["containers"][0]["args"]
            .as_array()
            .expect("args")
            .iter()
            .filter_map(Value::as_str)
            .collect();
        if w["kind"] == "CronJob" {
            assert_eq!(&args[..2], ["report", "--cluster"]);
        } else {
            assert_eq!(args[0], "backfill");
        }
    }
}

#[test]
fn the_jobs_use_the_installed_webhooks_policy_not_a_copy() {
    assert!(
        !dir().join("policy.yaml").exists(),
        "no copy of the policy to keep in step"
    );
    for workload in ["job.yaml", "cronjob.yaml"] {
        let w = &docs(workload)[0];
        let pod = if w["kind"] == "CronJob" {
            &w["spec"]["jobTemplate"]["spec"]["template"]["spec"]
        } else {
            &w["spec"]["template"]["spec"]
        };
        let args = &pod["containers"][0]["args"];
        assert!(
            !args
                .as_array()
                .expect("args")
                .iter()
                .any(|a| a == "--policy"),
            "{workload}: {args}"
        );
        assert!(pod["volumes"].is_null(), "{workload}: no policy volume");
    }
}
