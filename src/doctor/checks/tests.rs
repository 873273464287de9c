use super::*;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelectorRequirement;

#[test]
fn l7_ports_accept_spaces_and_commas() {
    assert_eq!(parse_l7_ports("50051 8080"), vec![8080, 50051]);
    assert_eq!(parse_l7_ports("50051,8080, 50051"), vec![8080, 50051]);
    assert_eq!(parse_l7_ports("  "), Vec::<i32>::new());
    assert_eq!(parse_l7_ports("grpc 9000"), vec![9000]);
}

fn requirement(key: &str, op: &str, values: &[&str]) -> LabelSelectorRequirement {
    LabelSelectorRequirement {
        key: key.into(),
        operator: op.into(),
        values: Some(values.iter().map(|v| v.to_string()).collect()),
    }
}

#[test]
fn selectors_compare_by_meaning() {
    let a = LabelSelector {
        match_expressions: Some(vec![
            requirement("a", "In", &["x", "y"]),
            requirement("b", "NotIn", &["z"]),
        ]),
        match_labels: None,
    };
    let b = LabelSelector {
        match_expressions: Some(vec![
            requirement("b", "NotIn", &["z"]),
            requirement("a", "In", &["y", "x"]),
        ]),
        match_labels: Some(BTreeMap::new()),
    };
    assert_eq!(normalize_selector(Some(&a)), normalize_selector(Some(&b)));
    assert_eq!(normalize_selector(Some(&LabelSelector::default())), None);
    let c = LabelSelector {
        match_expressions: Some(vec![requirement("a", "In", &["x"])]),
        match_labels: None,
    };
    assert_ne!(normalize_selector(Some(&a)), normalize_selector(Some(&c)));
}

#[test]
fn long_lists_are_cut_in_messages() {
    let items: Vec<String> = (1..=7).map(|i| format!("ns/s{i}")).collect();
    assert_eq!(
        list_some(&items),
        "ns/s1, ns/s2, ns/s3, ns/s4, ns/s5 and 2 more"
    );
    assert_eq!(list_some(&items[..2]), "ns/s1, ns/s2");
}

#[test]
fn report_counts_and_fails_only_on_fail() {
    let warn = Check::build("x", Group::Cilium, "x").warn("w", "f");
    let ok = Check::build("y", Group::Cilium, "y").ok("fine");
    let report = Report::new(vec![warn.clone(), ok.clone()]);
    assert_eq!(
        report.summary,
        Summary {
            ok: 1,
            warn: 1,
            fail: 0
        }
    );
    assert!(!report.failed());
    let fail = Check::build("z", Group::Effect, "z").fail("bad", "fix it");
    assert!(Report::new(vec![warn, ok, fail]).failed());
}
