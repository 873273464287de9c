//! The Service corpus in tests/data/services: every decision and every warning, each Service stating what the
//! report must say about it (`lb-l7-webhook.test/decision` and `lb-l7-webhook.test/warnings`). Read through the
//! report's own reader and evaluated with the built-in policy (scope namespace-opt-in), as
//! `lb-l7-webhook report tests/data/services` would.

use std::collections::BTreeSet;
use std::path::PathBuf;

use lb_l7_core::policy::{DecisionKind, Policy};
use lb_l7_webhook::input::manifests::Inventory;
use lb_l7_webhook::report::{self, Entry};

const DECISION: &str = "lb-l7-webhook.test/decision";
const WARNINGS: &str = "lb-l7-webhook.test/warnings";

/// Warning keywords of the corpus and the text each stands for in a warning.
const WARNING_KEYWORDS: &[(&str, &str)] = &[
    ("legacy", "is an old spelling that current Cilium ignores"),
    (
        "multi-port",
        "ports: Cilium sends every TCP port through Envoy",
    ),
    ("target-port", "has targetPort"),
    ("session-affinity", "sessionAffinity ClientIP"),
    ("algorithm", "is not round_robin, least_request or random"),
    ("case", "the value is case-sensitive"),
    ("no-effect", "has no effect here"),
    (
        "unknown-namespace",
        "is not in the input (no Namespace object)",
    ),
];

fn corpus_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/data/services")
}

struct Expected {
    decision: DecisionKind,
    warnings: Vec<String>,
}

/// The expectations, read from the Services' annotations (not through the code under test).
fn expectations() -> Vec<(String, Expected)> {
    let mut out = Vec::new();
    let mut paths: Vec<PathBuf> = std::fs::read_dir(corpus_dir())
        .expect("corpus dir")
        .map(|e| e.expect("entry").path())
        .collect();
    paths.sort();
    for path in paths {
        let text = std::fs::read_to_string(&path).expect("read");
        for doc in text.split("\n---\n") {
            let v: serde_json::Value = serde_saphyr::from_str(doc).expect("corpus YAML");
            if v["kind"] != "Service" {
                continue;
            }
            let a = &v["metadata"]["annotations"];
            let decision: DecisionKind =
                serde_json::from_value(a[DECISION].clone()).expect("decision annotation");
            let warnings = a[WARNINGS]
                .as_str()
                .expect("warnings annotation")
                .split_whitespace()
                .map(String::from)
                .collect();
            let key = format!(
                "{}/{}",
                v["metadata"]["namespace"].as_str().expect("namespace"),
                v["metadata"]["name"].as_str().expect("name")
            );
            out.push((key, Expected { decision, warnings }));
        }
    }
    out
}

fn corpus_report() -> report::Report {
    let mut inv = Inventory::default();
    inv.read_paths(&[corpus_dir()]);
    assert!(inv.errors.is_empty(), "{:?}", inv.errors);
    report::build_report(&Policy::default().compile(), inv)
}

fn find<'a>(r: &'a report::Report, key: &str) -> &'a Entry {
    r.services
        .iter()
        .find(|e| format!("{}/{}", e.namespace, e.name) == key)
        .unwrap_or_else(|| panic!("{key} is not in the report"))
}

#[test]
fn every_service_gets_its_stated_decision_and_warnings() {
    let r = corpus_report();
    let expected = expectations();
    assert_eq!(r.services.len(), expected.len());
    for (key, exp) in &expected {
        let e = find(&r, key);
        assert_eq!(e.decision, exp.decision, "{key}: {}", e.reason);
        assert_eq!(
            e.warnings.len(),
            exp.warnings.len(),
            "{key}: warnings {:#?}, expected {:?}",
            e.warnings,
            exp.warnings
        );
        for kw in &exp.warnings {
            let (_, text) = WARNING_KEYWORDS
                .iter()
                .find(|(k, _)| k == kw)
                .unwrap_or_else(|| panic!("{key}: unknown warning keyword {kw}"));
            assert!(
                e.warnings.iter().any(|w| w.contains(text)),
                "{key}: no warning with {text:?} in {:#?}",
                e.warnings
            );
        }
    }
}

#[test]
fn the_corpus_covers_every_decision_and_every_warning() {
    let expected = expectations();
    let decisions: BTreeSet<DecisionKind> = expected.iter().map(|(_, e)| e.decision).collect();
    for d in DecisionKind::ALL {
        assert!(decisions.contains(&d), "no Service in the corpus gets {d}");
    }
    let warnings: BTreeSet<&str> = expected
        .iter()
        .flat_map(|(_, e)| e.warnings.iter().map(String::as_str))
        .collect();
    for (kw, _) in WARNING_KEYWORDS {
        assert!(warnings.contains(kw), "no Service in the corpus warns {kw}");
    }
}

#[test]
fn envoy_config_names_only_for_enable_and_already_enabled() {
    let r = corpus_report();
    for e in &r.services {
        match e.decision {
            DecisionKind::Enable | DecisionKind::AlreadyEnabled => assert_eq!(
                e.cilium_envoy_config.as_deref(),
                Some(format!("cilium-envoy-lb-{}", e.name).as_str()),
                "{}/{}",
                e.namespace,
                e.name
            ),
            _ => assert_eq!(e.cilium_envoy_config, None, "{}/{}", e.namespace, e.name),
        }
    }
    assert_eq!(
        find(&r, "apps/pitfalls").ports,
        ["grpc (80/TCP)", "metrics (9090/TCP)"]
    );
}

#[test]
fn summary_counts_match_the_entries() {
    let r = corpus_report();
    assert_eq!(r.summary.total, r.services.len());
    for d in DecisionKind::ALL {
        let n = r.services.iter().filter(|e| e.decision == d).count();
        assert_eq!(r.summary.count(d), n, "{d}");
    }
    assert_eq!(
        r.summary.with_warnings,
        r.services.iter().filter(|e| !e.warnings.is_empty()).count()
    );
    // Sorted by namespace, then name.
    let keys: Vec<(&str, &str)> = r
        .services
        .iter()
        .map(|e| (e.namespace.as_str(), e.name.as_str()))
        .collect();
    let mut sorted = keys.clone();
    sorted.sort();
    assert_eq!(keys, sorted);
}

#[test]
fn scope_cluster_turns_unlabelled_namespaces_in_but_keeps_exclusions_and_opt_outs() {
    let policy = Policy::from_yaml("scope: cluster\nrules: [{name: grpc-ports, ports: {}}]\n")
        .expect("policy")
        .compile();
    let mut inv = Inventory::default();
    inv.read_paths(&[corpus_dir()]);
    let r = report::build_report(&policy, inv);
    assert_eq!(find(&r, "unlabelled/quiet").decision, DecisionKind::Enable);
    let stray = find(&r, "nowhere/stray");
    assert_eq!(stray.decision, DecisionKind::Enable);
    assert!(
        stray.warnings[0].contains("namespace nowhere is not in the input"),
        "{:?}",
        stray.warnings
    );
    assert_eq!(
        find(&r, "legacy/old-api").decision,
        DecisionKind::ExcludedNamespace,
        "a namespace labelled lb-l7-webhook/enabled=false stays out"
    );
    assert_eq!(
        find(&r, "kube-system/dns").decision,
        DecisionKind::ExcludedNamespace,
        "excludedNamespaces wins over the opt-in label"
    );
    assert_eq!(
        find(&r, "apps/labelled-out").decision,
        DecisionKind::OptedOut
    );
}

#[test]
fn namespace_filter_keeps_one_namespace() {
    let inv = report::read_offline(&[corpus_dir()], Some("kube-system"));
    let r = report::build_report(&Policy::default().compile(), inv);
    assert_eq!(r.services.len(), 1);
    assert_eq!(r.services[0].name, "dns");
}
