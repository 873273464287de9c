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

/// (resource, verb) pairs a ClusterRole grants, sorted.
fn grants(file: &str, role: &str) -> Vec<(String, String)> {
    let docs = docs(file);
    let cr = docs
        .iter()
        .find(|d| d["kind"] == "ClusterRole" && d["metadata"]["name"] == role)
        .expect("ClusterRole");
    let mut out = Vec::new();
    for rule in cr["rules"].as_array().expect("rules") {
        assert_eq!(
            rule["apiGroups"],
            serde_json::json!([""]),
            "core group only"
        );
        for r in rule["resources"].as_array().expect("resources") {
            for v in rule["verbs"].as_array().expect("verbs") {
                out.push((
                    r.as_str().expect("str").to_string(),
                    v.as_str().expect("str").to_string(),
                ));
            }
        }
    }
    out.sort();
    out
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
            ("namespaces", "get"),
            ("namespaces", "list"),
            ("services", "get"),
            ("services", "list"),
            ("services", "patch"),
        ])
    );
}

#[test]
fn report_role_is_read_only() {
    assert_eq!(
        grants("rbac-report.yaml", "lb-l7-webhook-report"),
        pairs(&[
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
fn the_policy_is_the_webhooks() {
    let here = std::fs::read_to_string(dir().join("policy.yaml")).expect("read");
    let base = std::fs::read_to_string(dir().join("../base/policy.yaml")).expect("read");
    assert_eq!(
        here, base,
        "deploy/backfill/policy.yaml must match deploy/base/policy.yaml (copy it after changing the policy)"
    );
}
