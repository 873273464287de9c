//! Certificate rotation without a restart, done the way Kubernetes updates a Secret volume: the files are links
//! through `..data`, and a rotation swaps that one symlink atomically.

mod common;

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use common::*;
use lb_l7_webhook::certs::{self, PemPair};
use lb_l7_webhook::server::tls::TlsFiles;
use rustls::pki_types::CertificateDer;
use rustls::pki_types::pem::PemObject;

/// A directory laid out like a mounted Secret: `tls.crt -> ..data/tls.crt`, `..data -> ..<version>`.
struct SecretVolume {
    dir: PathBuf,
    version: usize,
}

impl SecretVolume {
    fn new(dir: &Path, cert: &str, key: &str) -> Self {
        let mut v = SecretVolume {
            dir: dir.to_path_buf(),
            version: 0,
        };
        v.swap(cert, key);
        for f in ["tls.crt", "tls.key"] {
            std::os::unix::fs::symlink(format!("..data/{f}"), dir.join(f)).unwrap();
        }
        v
    }

    /// Writes a new version directory, then renames a fresh symlink over `..data` (atomic, like the kubelet).
    fn swap(&mut self, cert: &str, key: &str) {
        self.version += 1;
        let name = format!("..2026_11_24_v{}", self.version);
        let version_dir = self.dir.join(&name);
        std::fs::create_dir(&version_dir).unwrap();
        certs::write_file(&version_dir.join("tls.crt"), cert, false).unwrap();
        certs::write_file(&version_dir.join("tls.key"), key, true).unwrap();
        let tmp = self.dir.join("..data_tmp");
        std::os::unix::fs::symlink(&name, &tmp).unwrap();
        std::fs::rename(&tmp, self.dir.join("..data")).unwrap();
    }

    fn files(&self) -> TlsFiles {
        TlsFiles {
            cert: self.dir.join("tls.crt"),
            key: self.dir.join("tls.key"),
        }
    }
}

fn serving(ca: &PemPair) -> PemPair {
    certs::issue_serving(ca, &["127.0.0.1".into()], 1).unwrap()
}

fn der(pem: &str) -> Vec<u8> {
    CertificateDer::from_pem_slice(pem.as_bytes())
        .unwrap()
        .to_vec()
}

/// The certificate a new TLS connection is served.
async fn served_cert(addr: std::net::SocketAddr, ca: &str) -> Vec<u8> {
    let tls = tls_connect(addr, ca, Proto::H2).await;
    tls.get_ref().1.peer_certificates().unwrap()[0].to_vec()
}

async fn metrics_text(probe: std::net::SocketAddr) -> String {
    String::from_utf8_lossy(&probe_get(probe, "/metrics").await.body).to_string()
}

#[tokio::test]
async fn rotation_under_traffic_fails_no_request_and_new_connections_get_the_new_certificate() {
    install_crypto();
    let dir = tempfile::tempdir().unwrap();
    let ca = certs::generate_ca("rotation CA", 1).unwrap();
    let first = serving(&ca);
    let mut volume = SecretVolume::new(dir.path(), &first.cert_pem, &first.key_pem);
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
    volume.swap(&second.cert_pem, &second.key_pem);
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
    let mut volume = SecretVolume::new(dir.path(), &first.cert_pem, &first.key_pem);
    let server = start_with(config(cluster_policy(), volume.files()), ca.clone(), dir).await;

    // A certificate with another certificate's key.
    let a = serving(&ca);
    let b = serving(&ca);
    volume.swap(&a.cert_pem, &b.key_pem);
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
    volume.swap("garbage", "more garbage");
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
    volume.swap(&good.cert_pem, &good.key_pem);
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
