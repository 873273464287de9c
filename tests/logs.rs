//! The audit log as an operator reads it: the real `lb-l7-webhook serve` binary with `--log-format json`, reviews
//! sent over HTTPS, and its stderr read back line by line. Every review gets one JSON line with its fields, and on
//! SIGTERM every line still buffered by the log writer is written before the process exits.

mod common;

use std::collections::BTreeSet;
use std::time::Duration;

use common::*;
use serde_json::Value;

/// The review file with this uid.
fn review_with_uid(uid: &str) -> Vec<u8> {
    let text = std::fs::read_to_string(data_path("reviews/bench-service.json")).unwrap();
    let mut v: Value = serde_json::from_str(&text).unwrap();
    v["request"]["uid"] = Value::String(uid.into());
    serde_json::to_vec(&v).unwrap()
}

#[tokio::test]
async fn every_review_is_one_json_audit_line_and_sigterm_writes_them_all() {
    install_crypto();
    let dir = tempfile::tempdir().unwrap();
    let (ca, tls) = make_certs(dir.path());
    let log_path = dir.path().join("serve.log");
    let mut server = Binary::start(
        &tls,
        &["--log", "info", "--log-format", "json"],
        &[],
        std::fs::File::create(&log_path).unwrap().into(),
    )
    .await;
    let addr = server.addr;

    // The bench review is in namespace shop, which the default policy (namespace opt-in) judges as opted in by
    // the API server's namespaceSelector: it is patched, and logged at info.
    let mut uids = BTreeSet::new();
    for proto in [Proto::H1, Proto::H2] {
        let mut conn = connect(addr, &ca.cert_pem, proto).await;
        for i in 0..100 {
            let uid = format!("{proto:?}-{i}-\"quoted\"");
            let answer = conn.review(review_with_uid(&uid)).await;
            assert_eq!(answer.status, 200);
            assert_eq!(answer.json()["response"]["uid"], uid.as_str());
            uids.insert(uid);
        }
    }

    // SIGTERM right after the last answer: lines still waiting for their batch must be written before exit.
    server.sigterm();
    let status = tokio::time::timeout(Duration::from_secs(30), server.child.wait())
        .await
        .expect("serve exits within 30 s of SIGTERM")
        .unwrap();
    assert!(status.success(), "{status}");

    let text = std::fs::read_to_string(&log_path).unwrap();
    let mut logged = BTreeSet::new();
    for line in text.lines() {
        let v: Value =
            serde_json::from_str(line).unwrap_or_else(|e| panic!("not JSON ({e}): {line}"));
        for key in ["timestamp", "level", "message", "target"] {
            assert!(v.get(key).is_some(), "{key} in {line}");
        }
        if v["message"] == "review answered" {
            assert_eq!(v["level"], "INFO", "{line}");
            assert_eq!(v["namespace"], "shop", "{line}");
            assert_eq!(v["operation"], "CREATE", "{line}");
            assert_eq!(v["decision"], "enable", "{line}");
            assert_eq!(v["patched"], true, "{line}");
            assert_eq!(v["outcome"], "patched", "{line}");
            assert!(
                v["reason"]
                    .as_str()
                    .is_some_and(|r| r.contains("matches rule")),
                "{line}"
            );
            assert!(
                v.get("span").is_none(),
                "the review line is in no span: {line}"
            );
            let uid = v["uid"].as_str().expect("uid").to_string();
            assert!(logged.insert(uid), "a review logged twice: {line}");
        }
    }
    let missing: Vec<_> = uids.difference(&logged).collect();
    let unknown: Vec<_> = logged.difference(&uids).collect();
    assert!(
        missing.is_empty() && unknown.is_empty(),
        "every review logged once: {} missing {missing:?}, {} unknown {unknown:?}",
        missing.len(),
        unknown.len()
    );
    assert!(
        text.lines()
            .last()
            .is_some_and(|l| l.contains("\"stopped\"")),
        "the last line says the server stopped: {:?}",
        text.lines().last()
    );
}
