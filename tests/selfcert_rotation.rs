//! `serve --cert-secret` over real TLS on loopback while its certificates rotate fast (a 24-second CA and
//! 12-second serving certificates, set through the Settings the flags produce; the flags themselves accept down to
//! one minute): under load, no review fails, and a client that trusts only the caBundle last written to the
//! webhook configuration always connects. The new CA is in caBundle before anything it signed is served, and the
//! old one leaves only after it expired. Also: a client that does not trust the CA is counted and named.

mod common;
mod selfcert_support;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

use common::*;
use selfcert_support::*;

fn pems(bundle: &[u8]) -> Vec<Vec<u8>> {
    lb_l7_webhook::server::selfcert::bundle_ders(bundle)
        .into_iter()
        .map(|d| d.to_vec())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn certificates_and_the_ca_rotate_under_load_without_a_failed_review() {
    let (client, state) = fake_cluster(State {
        secret: Some(chart_secret()),
        webhook: Some(webhook_configuration()),
        ..Default::default()
    });
    let server = start_self(
        client,
        settings(Duration::from_secs(24), Duration::from_secs(12)),
    )
    .await;
    eventually(10, "ready", || async {
        probe_get(server.probe, "/readyz").await.status == 200
    })
    .await;
    let bundle = || String::from_utf8(state.lock().unwrap().ca_bundles()[0].clone()).unwrap();

    let stop = Arc::new(AtomicBool::new(false));
    let ok = Arc::new(AtomicUsize::new(0));
    let failures = Arc::new(std::sync::Mutex::new(Vec::<String>::new()));
    let mut workers = Vec::new();
    // Two long-lived connections.
    for proto in [Proto::H1, Proto::H2] {
        let (stop, ok, failures) = (stop.clone(), ok.clone(), failures.clone());
        let mut conn = connect(server.addr, &bundle(), proto).await;
        workers.push(tokio::spawn(async move {
            while !stop.load(Ordering::Relaxed) {
                match conn.send("POST", "/mutate", REVIEW).await {
                    Ok(a) if a.status == 200 => {
                        ok.fetch_add(1, Ordering::Relaxed);
                    }
                    other => failures
                        .lock()
                        .unwrap()
                        .push(format!("{proto:?}: {:?}", other.map(|a| a.status))),
                }
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        }));
    }
    // New connections, each trusting only the caBundle as last written.
    for _ in 0..2 {
        let (stop, ok, failures, state) =
            (stop.clone(), ok.clone(), failures.clone(), state.clone());
        let addr = server.addr;
        workers.push(tokio::spawn(async move {
            while !stop.load(Ordering::Relaxed) {
                let trusted =
                    String::from_utf8(state.lock().unwrap().ca_bundles()[0].clone()).unwrap();
                let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
                let tls = tls_connector(&trusted, Proto::H1)
                    .connect(
                        rustls::pki_types::ServerName::try_from("127.0.0.1").unwrap(),
                        tcp,
                    )
                    .await;
                match tls {
                    Ok(_) => {
                        ok.fetch_add(1, Ordering::Relaxed);
                    }
                    Err(e) => failures
                        .lock()
                        .unwrap()
                        .push(format!("new connection: {e}")),
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }));
    }
    {
        let mut conn = connect(server.addr, &bundle(), Proto::H2).await;
        assert_eq!(conn.review(REVIEW).await.status, 200);
    }

    // Wait for a full CA cycle: a second CA, certificates from it, the first CA expired and pruned.
    eventually(50, "the first CA was renewed and then pruned", || async {
        let text = metrics_text(server.probe).await;
        metric(
            &text,
            r#"lb_l7_webhook_cert_rotations_total{what="ca_pruned"}"#,
        )
        .is_some_and(|v| v >= 1.0)
    })
    .await;
    stop.store(true, Ordering::Relaxed);
    for w in workers {
        w.await.unwrap();
    }
    let failures = failures.lock().unwrap().clone();
    assert!(
        failures.is_empty(),
        "{} failures: {failures:?}",
        failures.len()
    );
    assert!(
        ok.load(Ordering::Relaxed) > 100,
        "traffic flowed: {}",
        ok.load(Ordering::Relaxed)
    );

    let text = metrics_text(server.probe).await;
    let count = |what: &str| {
        metric(
            &text,
            &format!(r#"lb_l7_webhook_cert_rotations_total{{what="{what}"}}"#),
        )
        .unwrap_or(0.0)
    };
    assert!(count("ca") >= 2.0, "{text}");
    assert!(count("serving") >= 3.0, "{text}");

    // Every caBundle written overlaps the one before it: no switch from one CA to another in one step.
    let (written, violations, data) = {
        let st = state.lock().unwrap();
        (
            st.ca_bundles_written.clone(),
            st.violations.clone(),
            st.secret_data(),
        )
    };
    assert!(written.len() >= 3, "{}", written.len());
    for pair in written.windows(2) {
        let (a, b) = (pems(&pair[0]), pems(&pair[1]));
        assert!(
            a.iter().any(|c| b.contains(c)),
            "a caBundle change without overlap"
        );
    }
    assert!(violations.is_empty(), "{violations:?}");
    // At the end: one CA, and the served certificate is the Secret's, trusted by the caBundle.
    assert_eq!(
        lb_l7_webhook::server::selfcert::bundle_len(&data["ca.crt"]),
        1
    );
    assert_eq!(
        served_cert(server.addr, &bundle()).await,
        der(&data["tls.crt"])
    );
    server.stop().await;
}

#[tokio::test]
async fn a_client_that_does_not_trust_the_ca_is_counted_as_unknown_ca() {
    let server = start(cluster_policy()).await;
    let other = lb_l7_webhook::certs::generate_ca("not the server's CA", 1).unwrap();
    for _ in 0..3 {
        let tcp = tokio::net::TcpStream::connect(server.addr).await.unwrap();
        let result = tls_connector(&other.cert_pem, Proto::H2)
            .connect(
                rustls::pki_types::ServerName::try_from("127.0.0.1").unwrap(),
                tcp,
            )
            .await;
        assert!(result.is_err(), "the client rejects the certificate");
    }
    // The server sees the client's alert after the client has given up: wait for the count.
    let probe = server.probe;
    let start = std::time::Instant::now();
    loop {
        let text = metrics_text(probe).await;
        if metric(
            &text,
            r#"lb_l7_webhook_tls_handshake_failures_total{reason="unknown_ca"}"#,
        ) == Some(3.0)
        {
            break;
        }
        assert!(start.elapsed() < Duration::from_secs(10), "{text}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // A trusting client still works.
    let mut conn = connect(server.addr, &server.ca.cert_pem, Proto::H2).await;
    assert_eq!(conn.review(REVIEW).await.status, 200);
    server.stop().await.unwrap();
}
