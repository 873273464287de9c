//! Certificate rotation without a restart, done the way Kubernetes updates a Secret volume: the files are links
//! through `..data`, and a rotation swaps that one symlink atomically.

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use common::*;
use lb_l7_webhook::certs::{self, PemPair};

fn serving(ca: &PemPair) -> PemPair {
    certs::issue_serving(ca, &["127.0.0.1".into()], 1).unwrap()
}

#[tokio::test]
async fn rotation_under_traffic_fails_no_request_and_new_connections_get_the_new_certificate() {
    install_crypto();
    let dir = tempfile::tempdir().unwrap();
    let ca = certs::generate_ca("rotation CA", 1).unwrap();
    let first = serving(&ca);
    let mut volume = SecretVolume::new(dir.path(), &first);
    let server = start_with(config(cluster_policy(), volume.files()), ca.clone(), dir).await;
    assert_eq!(
        served_cert(server.addr, &ca.cert_pem).await,
        der(&first.cert_pem)
    );

    // Traffic: two long-lived connections (h1 and h2) and a stream of new connections, until told to stop.
    let stop = Arc::new(AtomicBool::new(false));
    let ok = Arc::new(AtomicUsize::new(0));
    let mut workers = Vec::new();
    for proto in [Proto::H1, Proto::H2] {
        let (stop, ok, ca) = (stop.clone(), ok.clone(), ca.cert_pem.clone());
        let addr = server.addr;
        workers.push(tokio::spawn(async move {
            let mut conn = connect(addr, &ca, proto).await;
            let mut failures = 0;
            while !stop.load(Ordering::Relaxed) {
                match conn.send("POST", "/mutate", REVIEW).await {
                    Ok(a) if a.status == 200 => ok.fetch_add(1, Ordering::Relaxed),
                    _ => {
                        failures += 1;
                        0
                    }
                };
            }
            failures
        }));
    }
    {
        let (stop, ok, ca) = (stop.clone(), ok.clone(), ca.cert_pem.clone());
        let addr = server.addr;
        workers.push(tokio::spawn(async move {
            let mut failures = 0;
            while !stop.load(Ordering::Relaxed) {
                let mut conn = connect(addr, &ca, Proto::H1).await;
                match conn.send("POST", "/mutate", REVIEW).await {
                    Ok(a) if a.status == 200 => ok.fetch_add(1, Ordering::Relaxed),
                    _ => {
                        failures += 1;
                        0
                    }
                };
            }
            failures
        }));
    }
    tokio::time::sleep(Duration::from_millis(300)).await;

    let second = serving(&ca);
    volume.swap(&second);
    let swapped = Instant::now();
    let mut seen_new = false;
    while swapped.elapsed() < Duration::from_secs(10) {
        if served_cert(server.addr, &ca.cert_pem).await == der(&second.cert_pem) {
            seen_new = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(
        seen_new,
        "a new connection sees the new certificate within 10 s"
    );
    tokio::time::sleep(Duration::from_millis(300)).await;
    stop.store(true, Ordering::Relaxed);
    let mut failures = 0;
    for w in workers {
        failures += w.await.unwrap();
    }
    assert_eq!(failures, 0, "no failed request during rotation");
    assert!(ok.load(Ordering::Relaxed) > 10, "traffic really flowed");
    let text = metrics_text(server.probe).await;
    assert_eq!(
        metric(
            &text,
            r#"lb_l7_webhook_tls_reloads_total{result="success"}"#
        ),
        Some(1.0),
        "{text}"
    );
    server.stop().await.unwrap();
}

#[tokio::test]
async fn broken_or_mismatched_new_files_are_rejected_and_the_old_certificate_stays() {
    install_crypto();
    let dir = tempfile::tempdir().unwrap();
    let ca = certs::generate_ca("rotation CA", 1).unwrap();
    let first = serving(&ca);
    let mut volume = SecretVolume::new(dir.path(), &first);
    let server = start_with(config(cluster_policy(), volume.files()), ca.clone(), dir).await;

    // A certificate with another certificate's key.
    let a = serving(&ca);
    let b = serving(&ca);
    volume.swap(&PemPair {
        cert_pem: a.cert_pem,
        key_pem: b.key_pem,
    });
    tokio::time::sleep(Duration::from_millis(800)).await;
    assert_eq!(
        served_cert(server.addr, &ca.cert_pem).await,
        der(&first.cert_pem)
    );
    let text = metrics_text(server.probe).await;
    assert_eq!(
        metric(
            &text,
            r#"lb_l7_webhook_tls_reloads_total{result="failure"}"#
        ),
        Some(1.0),
        "counted once: {text}"
    );

    // Not PEM at all.
    volume.swap(&PemPair {
        cert_pem: "garbage".into(),
        key_pem: "more garbage".into(),
    });
    tokio::time::sleep(Duration::from_millis(800)).await;
    assert_eq!(
        served_cert(server.addr, &ca.cert_pem).await,
        der(&first.cert_pem)
    );
    let mut conn = connect(server.addr, &ca.cert_pem, Proto::H2).await;
    assert_eq!(conn.review(REVIEW).await.status, 200, "still serving");
    let text = metrics_text(server.probe).await;
    assert_eq!(
        metric(
            &text,
            r#"lb_l7_webhook_tls_reloads_total{result="failure"}"#
        ),
        Some(2.0),
        "{text}"
    );

    // A good pair again is picked up.
    let good = serving(&ca);
    volume.swap(&good);
    let t = Instant::now();
    while served_cert(server.addr, &ca.cert_pem).await != der(&good.cert_pem) {
        assert!(
            t.elapsed() < Duration::from_secs(10),
            "good certificate picked up"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    server.stop().await.unwrap();
}
