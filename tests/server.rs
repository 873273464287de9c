//! The real server on a loopback port, driven over real TLS with HTTP/1.1 and HTTP/2.

mod common;

use std::time::Duration;

use common::*;
use lb_l7_core::admission::ReviewResponse;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// Decodes the review, applies its patch to the request's object as the API server does, and returns both.
fn applied(answer: &Answer, request: &[u8]) -> (ReviewResponse, serde_json::Value) {
    assert_eq!(
        answer.status,
        200,
        "{}",
        String::from_utf8_lossy(&answer.body)
    );
    let review: ReviewResponse = serde_json::from_slice(&answer.body).expect("AdmissionReview");
    let req: serde_json::Value = serde_json::from_slice(request).unwrap();
    let mut object = req["request"]["object"].clone();
    if let Some(patch) = review.response.decoded_patch() {
        json_patch::patch(&mut object, &patch.expect("patch decodes").0).expect("patch applies");
    }
    (review, object)
}

#[tokio::test]
async fn grpc_service_is_annotated_over_http1_and_http2() {
    let server = start(cluster_policy()).await;
    for proto in [Proto::H1, Proto::H2] {
        let mut conn = connect(server.addr, &server.ca.cert_pem, proto).await;
        // Several reviews on one connection, as the API server keeps its connections.
        for _ in 0..3 {
            let answer = conn.review(REVIEW).await;
            let (review, object) = applied(&answer, REVIEW);
            let resp = &review.response;
            assert_eq!(
                resp.uid, "705ab4f5-6393-11e8-b7cc-42010a800002",
                "{proto:?}"
            );
            assert!(resp.allowed);
            assert_eq!(resp.patch_type.as_deref(), Some("JSONPatch"));
            let a = &object["metadata"]["annotations"];
            assert_eq!(a["service.cilium.io/lb-l7"], "enabled", "{proto:?}");
            assert_eq!(a["owner"], "team-apps", "existing annotations kept");
            assert_eq!(
                a["lb-l7-webhook/matched-by"],
                "port grpc (50051/TCP) matches rule 'grpc-ports'"
            );
        }
    }
    let metrics = probe_get(server.probe, "/metrics").await;
    let text = String::from_utf8_lossy(&metrics.body);
    assert_eq!(
        metric(
            &text,
            r#"lb_l7_webhook_reviews_total{decision="enable",outcome="patched"}"#
        ),
        Some(6.0),
        "{text}"
    );
    assert_eq!(
        metric(&text, "lb_l7_webhook_review_duration_seconds_count"),
        Some(6.0)
    );
    server.stop().await.expect("clean stop");
}

#[tokio::test]
async fn dry_run_policy_answers_with_a_warning_and_no_patch() {
    let server = start(policy(
        "scope: cluster\nmode: dry-run\nrules: [{name: grpc-ports, ports: {}}]\n",
    ))
    .await;
    let mut conn = connect(server.addr, &server.ca.cert_pem, Proto::H2).await;
    let (review, object) = applied(&conn.review(REVIEW).await, REVIEW);
    assert!(review.response.patch.is_none());
    assert!(
        object["metadata"]["annotations"]
            .get("service.cilium.io/lb-l7")
            .is_none()
    );
    // kubectl prints each warning as is: who said it, which Service, what.
    assert!(
        review.response.warnings[0]
            .starts_with("lb-l7-webhook: apps/goappserver: dry-run: would enable"),
        "{:?}",
        review.response.warnings
    );
    server.stop().await.unwrap();
}

#[tokio::test]
async fn http_errors_are_json_and_the_server_keeps_serving() {
    let server = start(cluster_policy()).await;
    for proto in [Proto::H1, Proto::H2] {
        let mut conn = connect(server.addr, &server.ca.cert_pem, proto).await;
        let cases: Vec<(&str, &str, Vec<u8>, u16)> = vec![
            ("POST", "/mutate", b"not json".to_vec(), 400),
            ("POST", "/mutate", br#"{"kind":"Pod"}"#.to_vec(), 400),
            ("POST", "/validate", REVIEW.to_vec(), 404),
            ("GET", "/", Vec::new(), 404),
            ("GET", "/mutate", Vec::new(), 405),
            ("PUT", "/mutate", REVIEW.to_vec(), 405),
            ("POST", "/mutate", vec![b' '; 8 * 1024 * 1024 + 1], 413),
        ];
        for (method, path, body, status) in cases {
            let answer = conn
                .send(method, path, body)
                .await
                .unwrap_or_else(|e| panic!("{proto:?} {method} {path}: {e}"));
            assert_eq!(answer.status, status, "{proto:?} {method} {path}");
            assert!(
                answer.json()["error"].is_string(),
                "{method} {path}: JSON error body"
            );
            if status == 413 {
                // The connection may be closed after a refused body; a new one must work.
                conn = connect(server.addr, &server.ca.cert_pem, proto).await;
            }
        }
        assert_eq!(
            conn.review(REVIEW).await.status,
            200,
            "{proto:?} still serving"
        );
    }
    // Every error response is counted, by reason: 2 protocols x (2 bad requests, 2 unknown paths, 2 wrong
    // methods, 1 oversized body).
    let text = String::from_utf8_lossy(&probe_get(server.probe, "/metrics").await.body).to_string();
    for (reason, count) in [
        ("bad_request", 4.0),
        ("not_found", 4.0),
        ("method_not_allowed", 4.0),
        ("body_too_large", 2.0),
    ] {
        assert_eq!(
            metric(
                &text,
                &format!("lb_l7_webhook_request_errors_total{{reason=\"{reason}\"}}")
            ),
            Some(count),
            "{reason}: {text}"
        );
    }
    server.stop().await.unwrap();
}

#[tokio::test]
async fn probes_answer_on_the_plain_port() {
    let server = start(cluster_policy()).await;
    assert_eq!(probe_get(server.probe, "/healthz").await.status, 200);
    assert_eq!(probe_get(server.probe, "/readyz").await.status, 200);
    let m = probe_get(server.probe, "/metrics").await;
    assert_eq!(m.status, 200);
    let text = String::from_utf8_lossy(&m.body);
    assert!(
        text.contains("# TYPE lb_l7_webhook_review_duration_seconds histogram"),
        "{text}"
    );
    assert!(
        metric(&text, "lb_l7_webhook_tls_certificate_not_after_seconds").unwrap_or(0.0) > 1.7e9
    );
    assert_eq!(probe_get(server.probe, "/nope").await.status, 404);
    let text = String::from_utf8_lossy(&probe_get(server.probe, "/metrics").await.body).to_string();
    assert_eq!(
        metric(
            &text,
            r#"lb_l7_webhook_request_errors_total{reason="not_found"}"#
        ),
        Some(1.0),
        "{text}"
    );
    server.stop().await.unwrap();
}

#[tokio::test]
async fn a_client_that_stalls_in_the_headers_or_the_body_is_cut_off() {
    let server = start(cluster_policy()).await;
    // Slow-loris: half a request line and headers, then nothing. The server (client timeout 1 s) closes.
    let mut tls = tls_connect(server.addr, &server.ca.cert_pem, Proto::H1).await;
    tls.write_all(b"POST /mutate HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Le")
        .await
        .unwrap();
    let mut buf = Vec::new();
    let read = tokio::time::timeout(Duration::from_secs(10), tls.read_to_end(&mut buf)).await;
    assert!(read.is_ok(), "server closed the stalled connection");

    // Headers complete, body stalls: 408 with a JSON error.
    let mut tls = tls_connect(server.addr, &server.ca.cert_pem, Proto::H1).await;
    tls.write_all(
        b"POST /mutate HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: 100\r\n\r\n{\"kind\"",
    )
    .await
    .unwrap();
    let mut buf = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(10), tls.read_to_end(&mut buf))
        .await
        .expect("answered in time");
    let text = String::from_utf8_lossy(&buf);
    assert!(text.starts_with("HTTP/1.1 408"), "{text}");

    // A client that completes TLS (for either protocol) and then sends nothing is dropped as well.
    for proto in [Proto::H1, Proto::H2] {
        let mut silent = tls_connect(server.addr, &server.ca.cert_pem, proto).await;
        let mut buf = Vec::new();
        let read =
            tokio::time::timeout(Duration::from_secs(10), silent.read_to_end(&mut buf)).await;
        assert!(
            read.is_ok(),
            "{proto:?}: silent TLS client closed by the server"
        );
    }

    // A TCP client that never starts TLS is dropped too, and others are served meanwhile.
    let mut raw = tokio::net::TcpStream::connect(server.addr).await.unwrap();
    let mut conn = connect(server.addr, &server.ca.cert_pem, Proto::H2).await;
    assert_eq!(conn.review(REVIEW).await.status, 200);
    let mut b = [0u8; 1];
    let n = tokio::time::timeout(Duration::from_secs(10), raw.read(&mut b))
        .await
        .expect("closed in time");
    assert!(
        matches!(n, Ok(0) | Err(_)),
        "handshake timeout closes the connection"
    );
    server.stop().await.unwrap();
}

#[tokio::test]
async fn stop_finishes_requests_in_flight_and_refuses_new_connections() {
    let server = start(cluster_policy()).await;
    let addr = server.addr;
    // A request in flight: headers and half the body sent.
    let mut tls = tls_connect(addr, &server.ca.cert_pem, Proto::H1).await;
    let head = format!(
        "POST /mutate HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n",
        REVIEW.len()
    );
    tls.write_all(head.as_bytes()).await.unwrap();
    let half = REVIEW.len() / 2;
    tls.write_all(&REVIEW[..half]).await.unwrap();
    tls.flush().await.unwrap();
    tokio::time::sleep(Duration::from_millis(100)).await;

    let ca = server.ca.cert_pem.clone();
    let stopping = tokio::spawn(server.stop());
    tokio::time::sleep(Duration::from_millis(200)).await;
    // New connections are refused once shutdown has begun.
    assert!(
        tokio::net::TcpStream::connect(addr).await.is_err(),
        "listener closed"
    );

    tls.write_all(&REVIEW[half..]).await.unwrap();
    let mut buf = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(5), tls.read_to_end(&mut buf)).await;
    let text = String::from_utf8_lossy(&buf);
    assert!(
        text.starts_with("HTTP/1.1 200"),
        "in-flight request completed: {text}"
    );
    assert!(text.contains("705ab4f5-6393-11e8-b7cc-42010a800002"));
    stopping.await.unwrap().expect("stops cleanly");
    let _ = ca;
}
