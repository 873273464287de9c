use super::*;

fn read(text: &str) -> Inventory {
    let mut inv = Inventory::default();
    inv.read_bytes("in.yaml", text.as_bytes());
    inv
}

#[test]
fn splits_documents_at_markers_only() {
    let docs: Vec<(u64, &str)> =
        split_yaml_documents("a: 1\n---\nb: |\n  ---x\n  text\n...\n--- \nc: 3\n").collect();
    assert_eq!(docs[0], (1, "a: 1\n"));
    assert_eq!(docs[1], (3, "b: |\n  ---x\n  text\n"));
    assert_eq!(docs[2].0, 7);
    assert!(docs.iter().any(|(_, d)| d.contains("c: 3")));
    let docs: Vec<(u64, &str)> =
        split_yaml_documents("--- # first\na: 1\n... # end\n--- # second\nb: 2\n").collect();
    let texts: Vec<&str> = docs.iter().map(|(_, d)| d.trim()).collect();
    assert_eq!(texts, ["", "# first\na: 1", "", "# second\nb: 2"]);
}

#[test]
fn reads_services_namespaces_lists_and_skips_others() {
    let inv = read(
        "apiVersion: v1\nkind: Namespace\nmetadata: {name: apps, labels: {team: a}}\n---\n\
             # a comment-only document is not counted\n---\n\
             apiVersion: apps/v1\nkind: Deployment\nmetadata: {name: d}\nspec: {selector: {matchLabels: {a: b}}}\n---\n\
             apiVersion: serving.knative.dev/v1\nkind: Service\nmetadata: {name: kn}\nspec: {template: {}}\n---\n\
             apiVersion: v1\nkind: List\nitems:\n- apiVersion: v1\n  kind: Service\n  metadata: {name: a, namespace: apps}\n  spec: {ports: [{name: grpc, port: 1}]}\n",
    );
    assert!(inv.errors.is_empty(), "{:?}", inv.errors);
    assert_eq!(inv.services.len(), 1);
    assert_eq!(inv.services[0].service.metadata.name.as_deref(), Some("a"));
    assert_eq!(inv.services[0].origin.as_ref().map(|o| o.document), Some(4));
    assert_eq!(inv.namespaces["apps"]["team"], "a");
    assert_eq!(inv.skipped, 2, "Deployment and Knative Service");
}

#[test]
fn a_large_stream_is_decoded_on_several_threads_in_order() {
    let mut text = String::new();
    for i in 0..1500 {
        if i == 1234 {
            text.push_str("---\napiVersion: v1\nkind: Service\nmetadata: {name: bad\n");
        } else {
            text.push_str(&format!(
                "---\napiVersion: v1\nkind: Service\nmetadata: {{name: s{i}}}\n"
            ));
        }
    }
    let inv = read(&text);
    assert_eq!(inv.services.len(), 1499);
    assert_eq!(
        inv.services[1300].origin.as_ref().map(|o| o.document),
        Some(1302)
    );
    assert_eq!(inv.errors.len(), 1);
    assert_eq!(inv.errors[0].document, Some(1235));
}

#[test]
fn spec_before_kind_is_buffered_and_still_typed() {
    let inv = read(
        "spec: {ports: [{name: grpc, port: 9}]}\nmetadata: {name: late}\nkind: Service\napiVersion: v1\n",
    );
    assert!(inv.errors.is_empty(), "{:?}", inv.errors);
    let svc = &inv.services[0].service;
    assert_eq!(svc.metadata.name.as_deref(), Some("late"));
    assert_eq!(
        svc.spec
            .as_ref()
            .and_then(|s| s.ports.as_ref())
            .map(Vec::len),
        Some(1)
    );
}

#[test]
fn api_server_service_list_items_have_no_kind() {
    let mut inv = Inventory::default();
    inv.read_bytes(
            "list.json",
            br#"{"kind":"ServiceList","apiVersion":"v1","metadata":{},"items":[{"metadata":{"name":"x","namespace":"n"},"spec":{}}]}"#,
        );
    assert!(inv.errors.is_empty(), "{:?}", inv.errors);
    assert_eq!(inv.services.len(), 1);
}

#[test]
fn json_list_with_items_before_kind() {
    let mut inv = Inventory::default();
    inv.read_bytes(
            "kubectl.json",
            br#"{"apiVersion":"v1","items":[{"apiVersion":"v1","kind":"Service","metadata":{"name":"x"}},{"apiVersion":"v1","kind":"ConfigMap","metadata":{"name":"c"},"data":{}}],"kind":"List","metadata":{"resourceVersion":""}}"#,
        );
    assert!(inv.errors.is_empty(), "{:?}", inv.errors);
    assert_eq!(inv.services.len(), 1);
    assert_eq!(inv.skipped, 1);
}

#[test]
fn a_bad_document_names_file_document_and_line_and_keeps_the_rest() {
    let inv = read(
        "apiVersion: v1\nkind: Service\nmetadata: {name: a}\n---\napiVersion: v1\nkind: Service\nmetadata: {name: b}\nspec:\n  ports: [{port: notanumber}]\n---\napiVersion: v1\nkind: Service\nmetadata: {name: c}\n",
    );
    assert_eq!(inv.services.len(), 2);
    assert_eq!(inv.errors.len(), 1);
    let e = &inv.errors[0];
    assert_eq!(e.file, "in.yaml");
    assert_eq!(e.document, Some(2));
    assert_eq!(e.line, Some(9), "{e}");
    assert!(
        e.to_string().starts_with("in.yaml: document 2 (line 9): "),
        "{e}"
    );
}
