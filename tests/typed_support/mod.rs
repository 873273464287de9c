//! Rendered manifests (helm template, kubectl kustomize) into their k8s-openapi types: shared by tests/chart.rs and
//! tests/deploy.rs.

use serde::de::DeserializeOwned;
use serde_json::Value;

/// Deserializes one rendered object into its type and back, failing when a field does not survive the round trip
/// (a misspelt or misplaced field the API server would reject or drop).
pub fn typed<T: DeserializeOwned + serde::Serialize>(doc: &Value, what: &str) -> T {
    let t: T = serde_json::from_value(doc.clone())
        .unwrap_or_else(|e| panic!("{what} does not deserialize: {e}\n{doc:#}"));
    let back = serde_json::to_value(&t).expect("serializes");
    assert_eq!(
        &back, doc,
        "{what}: fields were lost in a round trip through its type"
    );
    t
}
