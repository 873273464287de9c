//! The manifest reader reads the objects kubectl reads: for each YAML feature below, the report over the YAML is
//! the report over the same objects written as JSON (which has one reading). Each case also checks the decision
//! the feature must lead to, so a reader that drops a field on both sides still fails.

use lb_l7_core::policy::Policy;
use lb_l7_webhook::report::{self, Entry, Inventory, Report};

const NAMESPACE_JSON: &str = r#"{"apiVersion":"v1","kind":"Namespace","metadata":{"name":"shop","labels":{"lb-l7-webhook/enabled":"true"}}}"#;

fn report_of(file: &str, bytes: &[u8]) -> Report {
    let mut inv = Inventory::default();
    inv.read_bytes(file, bytes);
    report::build_report(&Policy::default().compile(), inv)
}

/// The entries without their `source` (file and document differ between the two inputs by construction).
fn entries(r: &Report) -> Vec<Entry> {
    r.services
        .iter()
        .cloned()
        .map(|mut e| {
            e.source = None;
            e
        })
        .collect()
}

/// Reads `yaml` and `json` (objects, without the shop Namespace, which both get), asserts that both read without
/// errors and give the same report, and returns the `namespace/name:decision` lines.
fn same_as_json(yaml: &str, json_objects: &[&str]) -> Vec<String> {
    let yaml_report = report_of("case.yaml", yaml.as_bytes());
    let mut items = vec![NAMESPACE_JSON.to_string()];
    items.extend(json_objects.iter().map(|o| o.to_string()));
    let json = format!(
        r#"{{"apiVersion":"v1","kind":"List","items":[{}]}}"#,
        items.join(",")
    );
    let json_report = report_of("case.json", json.as_bytes());
    assert!(
        yaml_report.errors.is_empty(),
        "YAML errors: {:?}",
        yaml_report.errors
    );
    assert!(
        json_report.errors.is_empty(),
        "JSON errors: {:?}",
        json_report.errors
    );
    assert_eq!(entries(&yaml_report), entries(&json_report), "{yaml}");
    assert_eq!(yaml_report.summary, json_report.summary);
    yaml_report
        .services
        .iter()
        .map(|e| format!("{}/{}:{}", e.namespace, e.name, e.decision))
        .collect()
}

const NAMESPACE_YAML: &str = "apiVersion: v1\nkind: Namespace\nmetadata:\n  name: shop\n  labels:\n    lb-l7-webhook/enabled: \"true\"\n";

#[test]
fn block_merge_key_under_spec_keeps_its_ports() {
    // The bug of the hand-written reader: this Service read as `no-match`, while kubectl reads its grpc port.
    let yaml = format!(
        "{NAMESPACE_YAML}---\n\
         apiVersion: v1\nkind: Service\nmetadata:\n  name: orders\n  namespace: shop\n\
         x-defaults: &grpc\n  ports:\n  - name: grpc\n    port: 50051\n\
         spec:\n  <<: *grpc\n  type: ClusterIP\n"
    );
    let lines = same_as_json(
        &yaml,
        &[
            r#"{"apiVersion":"v1","kind":"Service","metadata":{"name":"orders","namespace":"shop"},"spec":{"ports":[{"name":"grpc","port":50051}],"type":"ClusterIP"}}"#,
        ],
    );
    assert_eq!(lines, ["shop/orders:enable"]);
}

#[test]
fn flow_merge_keys_a_list_of_merges_and_local_keys_winning() {
    let yaml = format!(
        "{NAMESPACE_YAML}---\n\
         apiVersion: v1\nkind: Service\n\
         metadata: {{<<: [{{name: from-merge, namespace: shop}}, {{name: later-merge, labels: {{team: a}}}}], name: cart}}\n\
         spec: {{<<: {{ports: [{{name: grpc-api, port: 9000}}]}}}}\n"
    );
    let lines = same_as_json(
        &yaml,
        &[
            r#"{"apiVersion":"v1","kind":"Service","metadata":{"name":"cart","namespace":"shop","labels":{"team":"a"}},"spec":{"ports":[{"name":"grpc-api","port":9000}]}}"#,
        ],
    );
    assert_eq!(lines, ["shop/cart:enable"]);
}

#[test]
fn anchors_and_aliases() {
    let yaml = format!(
        "{NAMESPACE_YAML}---\n\
         apiVersion: v1\nkind: List\nitems:\n\
         - apiVersion: v1\n  kind: Service\n  metadata: {{name: a, namespace: &ns shop, labels: &labels {{app: x}}}}\n\
         \x20 spec:\n    ports: &ports\n    - name: grpc\n      port: 1\n\
         - apiVersion: v1\n  kind: Service\n  metadata: {{name: b, namespace: *ns, labels: *labels}}\n  spec: {{ports: *ports}}\n"
    );
    let svc = |name: &str| {
        format!(
            r#"{{"apiVersion":"v1","kind":"Service","metadata":{{"name":"{name}","namespace":"shop","labels":{{"app":"x"}}}},"spec":{{"ports":[{{"name":"grpc","port":1}}]}}}}"#
        )
    };
    let lines = same_as_json(&yaml, &[&svc("a"), &svc("b")]);
    assert_eq!(lines, ["shop/a:enable", "shop/b:enable"]);
}

#[test]
fn crlf_line_endings_and_a_byte_order_mark() {
    let yaml = format!(
        "\u{feff}{NAMESPACE_YAML}---\napiVersion: v1\nkind: Service\nmetadata:\n  name: crlf\n  namespace: shop\n\
         \x20 annotations:\n    note: |\n      two\n      lines\nspec:\n  ports:\n  - name: grpc\n    port: 7\n"
    )
    .replace('\n', "\r\n");
    let lines = same_as_json(
        &yaml,
        &[
            r#"{"apiVersion":"v1","kind":"Service","metadata":{"name":"crlf","namespace":"shop","annotations":{"note":"two\nlines\n"}},"spec":{"ports":[{"name":"grpc","port":7}]}}"#,
        ],
    );
    assert_eq!(lines, ["shop/crlf:enable"]);
}

#[test]
fn document_markers_with_comments_and_empty_documents() {
    let yaml = format!(
        "%YAML 1.1\n--- # the namespace\n{NAMESPACE_YAML}... # end of it\n---\n---\n# only a comment\n--- # a Service\n\
         apiVersion: v1\nkind: Service\nmetadata: {{name: marked, namespace: shop}}\nspec: {{ports: [{{name: grpc, port: 5}}]}}\n...\n"
    );
    let lines = same_as_json(
        &yaml,
        &[
            r#"{"apiVersion":"v1","kind":"Service","metadata":{"name":"marked","namespace":"shop"},"spec":{"ports":[{"name":"grpc","port":5}]}}"#,
        ],
    );
    assert_eq!(lines, ["shop/marked:enable"]);
}

#[test]
fn explicit_keys() {
    let yaml = format!(
        "{NAMESPACE_YAML}---\n? apiVersion\n: v1\n? kind\n: Service\nmetadata:\n  ? name\n  : explicit\n  namespace: shop\n\
         spec:\n  ports:\n  - ? name\n    : grpc\n    port: 3\n"
    );
    let lines = same_as_json(
        &yaml,
        &[
            r#"{"apiVersion":"v1","kind":"Service","metadata":{"name":"explicit","namespace":"shop"},"spec":{"ports":[{"name":"grpc","port":3}]}}"#,
        ],
    );
    assert_eq!(lines, ["shop/explicit:enable"]);
}

#[test]
fn kind_list() {
    let yaml = format!(
        "apiVersion: v1\nkind: List\nitems:\n- {}\n- apiVersion: v1\n  kind: Service\n  metadata: {{name: listed, namespace: shop}}\n  spec:\n    ports: [{{name: http, port: 80}}]\n",
        NAMESPACE_JSON
    );
    let lines = same_as_json(
        &yaml,
        &[
            r#"{"apiVersion":"v1","kind":"Service","metadata":{"name":"listed","namespace":"shop"},"spec":{"ports":[{"name":"http","port":80}]}}"#,
        ],
    );
    assert_eq!(lines, ["shop/listed:no-match"]);
}

#[test]
fn folded_and_literal_strings() {
    let yaml = format!(
        "{NAMESPACE_YAML}---\napiVersion: v1\nkind: Service\nmetadata:\n  name: strings\n  namespace: shop\n  annotations:\n\
         \x20   folded: >\n      one\n      two\n\n      three\n\
         \x20   literal: |-\n      keep\n        indented\n\
         \x20   service.cilium.io/lb-l7: >-\n      enabled\n\
         spec:\n  ports:\n  - name: grpc\n    port: 2\n"
    );
    let lines = same_as_json(
        &yaml,
        &[
            r#"{"apiVersion":"v1","kind":"Service","metadata":{"name":"strings","namespace":"shop","annotations":{"folded":"one two\nthree\n","literal":"keep\n  indented","service.cilium.io/lb-l7":"enabled"}},"spec":{"ports":[{"name":"grpc","port":2}]}}"#,
        ],
    );
    assert_eq!(
        lines,
        ["shop/strings:already-enabled"],
        "the folded annotation reads as `enabled`"
    );
}

#[test]
fn a_bad_document_in_a_merged_stream_still_names_file_document_and_line() {
    let yaml = "apiVersion: v1\nkind: Service\nmetadata: {name: a}\n---\nbase: &b {port: x}\napiVersion: v1\nkind: Service\nmetadata:\n  name: b\nspec:\n  ports:\n  - <<: *b\n---\napiVersion: v1\nkind: Service\nmetadata:\n  name: c\n  labels: [unclosed\n";
    let r = report_of("bad.yaml", yaml.as_bytes());
    let errors: Vec<String> = r.errors.iter().map(|e| e.to_string()).collect();
    assert_eq!(errors.len(), 2, "{errors:?}");
    assert!(
        errors[0].starts_with("bad.yaml: document 2 (line 5): "),
        "{errors:?}"
    );
    assert!(
        errors[1].starts_with("bad.yaml: document 3 (line 1"),
        "{errors:?}"
    );
    assert_eq!(r.services.len(), 1, "document 1 is still read");
}
