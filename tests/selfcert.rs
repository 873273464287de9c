//! `serve --cert-secret` against a scripted API server (tower-test, request by request): the Secret created when
//! absent, the winner of a create race used, the chart's empty Secret filled in by update, caBundle patched in and
//! restored after someone wipes it, 403 seen as an error metric and a pod that is not ready. And the
//! development-certificate directory of `serve` is not the `certs` command's.

mod common;
mod selfcert_support;

use std::time::Duration;

use clap::Parser;
use common::*;
use lb_l7_webhook::server::selfcert::{self, Contents};
use selfcert_support::*;
use serde_json::json;

const YEAR: Duration = Duration::from_secs(365 * 86400);

fn long() -> lb_l7_webhook::server::selfcert::Settings {
    settings(10 * YEAR, YEAR)
}

async fn ready(probe: std::net::SocketAddr) -> bool {
    probe_get(probe, "/readyz").await.status == 200
}

fn assert_consistent(state: &State) {
    let data = state.secret_data();
    let mut keys: Vec<_> = data.keys().cloned().collect();
    keys.sort();
    assert_eq!(keys, ["ca.crt", "ca.key", "tls.crt", "tls.key"]);
    for bundle in state.ca_bundles() {
        assert_eq!(
            String::from_utf8(bundle).unwrap(),
            data["ca.crt"],
            "every webhook's caBundle is the Secret's ca.crt"
        );
    }
    assert!(state.violations.is_empty(), "{:?}", state.violations);
    assert_eq!(
        state.secret.as_ref().unwrap()["type"],
        json!("Opaque"),
        "never kubernetes.io/tls"
    );
    assert!(
        !state.requests.iter().any(|r| r.starts_with("DELETE")),
        "{:?}",
        state.requests
    );
}

#[tokio::test]
async fn an_absent_secret_is_created_the_ca_bundle_patched_in_and_the_certificate_served() {
    let (client, state) = fake_cluster(State {
        webhook: Some(webhook_configuration()),
        ..Default::default()
    });
    let server = start_self(client, long()).await;
    eventually(10, "ready", || ready(server.probe)).await;
    let (data, requests) = {
        let st = state.lock().unwrap();
        assert_consistent(&st);
        (st.secret_data(), st.requests.clone())
    };
    assert!(
        requests
            .iter()
            .any(|r| r == "POST /api/v1/namespaces/lb-l7-system/secrets?"
                || r == "POST /api/v1/namespaces/lb-l7-system/secrets"),
        "{requests:?}"
    );
    assert_eq!(
        served_cert(server.addr, &data["ca.crt"]).await,
        der(&data["tls.crt"]),
        "the Secret's certificate is served, trusted by the caBundle"
    );
    let text = metrics_text(server.probe).await;
    for what in ["ca", "serving", "ca_bundle"] {
        assert_eq!(
            metric(
                &text,
                &format!(r#"lb_l7_webhook_cert_rotations_total{{what="{what}"}}"#)
            ),
            Some(1.0),
            "{what}: {text}"
        );
    }
    server.stop().await;
}

#[tokio::test]
async fn a_create_race_lost_with_409_uses_the_secret_that_won() {
    let s = long();
    let now = time::OffsetDateTime::now_utc().unix_timestamp();
    let winner = selfcert::plan(&Contents::default(), None, now, &s)
        .unwrap()
        .write
        .unwrap();
    let mut secret = json!({"apiVersion": "v1", "kind": "Secret", "type": "Opaque",
        "metadata": {"name": SECRET, "namespace": NS}, "data": {}});
    for (k, v) in winner.to_data() {
        use base64::Engine as _;
        secret["data"][k] = json!(base64::engine::general_purpose::STANDARD.encode(v));
    }
    let (client, state) = fake_cluster(State {
        webhook: Some(webhook_configuration()),
        create_race_winner: Some(secret),
        ..Default::default()
    });
    let server = start_self(client, s).await;
    eventually(10, "ready", || ready(server.probe)).await;
    {
        let st = state.lock().unwrap();
        assert_consistent(&st);
        let data = st.secret_data();
        assert_eq!(data["ca.crt"], winner.ca_crt, "the winner's CA");
        assert_eq!(data["tls.crt"], winner.tls_crt, "the winner's certificate");
        assert!(
            !st.requests.iter().any(|r| r.starts_with("PUT")),
            "nothing to update: {:?}",
            st.requests
        );
    }
    assert_eq!(
        served_cert(server.addr, &winner.ca_crt).await,
        der(&winner.tls_crt)
    );
    let text = metrics_text(server.probe).await;
    assert_eq!(
        metric(
            &text,
            r#"lb_l7_webhook_cert_manager_errors_total{reason="conflict"}"#
        ),
        Some(1.0),
        "{text}"
    );
    server.stop().await;
}

#[tokio::test]
async fn the_charts_empty_secret_is_filled_in_by_update_with_its_resource_version() {
    let (client, state) = fake_cluster(State {
        secret: Some(chart_secret()),
        webhook: Some(webhook_configuration()),
        ..Default::default()
    });
    let server = start_self(client, long()).await;
    eventually(10, "ready", || ready(server.probe)).await;
    {
        let st = state.lock().unwrap();
        assert_consistent(&st);
        assert!(
            st.requests.iter().any(|r| r
                == "PUT /api/v1/namespaces/lb-l7-system/secrets/lb-l7-webhook-certs"
                || r.starts_with(
                    "PUT /api/v1/namespaces/lb-l7-system/secrets/lb-l7-webhook-certs?"
                )),
            "{:?}",
            st.requests
        );
        assert!(
            !st.requests.iter().any(|r| r.starts_with("POST")),
            "{:?}",
            st.requests
        );
        assert_eq!(
            st.secret.as_ref().unwrap()["metadata"]["labels"]["app.kubernetes.io/managed-by"],
            json!("Helm"),
            "the chart's labels stay"
        );
    }
    server.stop().await;
}

#[tokio::test]
async fn a_wiped_ca_bundle_is_restored_after_the_watch_event() {
    let (client, state) = fake_cluster(State {
        webhook: Some(webhook_configuration()),
        ..Default::default()
    });
    let server = start_self(client, long()).await;
    eventually(10, "ready", || ready(server.probe)).await;
    let ca = state.lock().unwrap().secret_data()["ca.crt"].clone();
    // Let the watches start (the list and the watch request of each object).
    eventually(10, "both watches started", || {
        let st = state.clone();
        async move {
            let st = st.lock().unwrap();
            st.requests
                .iter()
                .filter(|r| r.contains("watch=true"))
                .count()
                >= 2
        }
    })
    .await;

    state.lock().unwrap().wipe_ca_bundle();
    // Nothing but the watch event can bring it back this fast: the next timed check is ten minutes away.
    eventually(5, "caBundle restored", || {
        let st = state.clone();
        let ca = ca.clone();
        async move {
            st.lock()
                .unwrap()
                .ca_bundles()
                .iter()
                .all(|b| *b == ca.as_bytes())
        }
    })
    .await;
    assert_consistent(&state.lock().unwrap());
    let text = metrics_text(server.probe).await;
    assert_eq!(
        metric(
            &text,
            r#"lb_l7_webhook_cert_rotations_total{what="ca_bundle"}"#
        ),
        Some(2.0),
        "{text}"
    );
    assert!(ready(server.probe).await);
    let tls_crt = state.lock().unwrap().secret_data()["tls.crt"].clone();
    assert_eq!(served_cert(server.addr, &ca).await, der(&tls_crt));
    server.stop().await;
}

#[tokio::test]
async fn forbidden_is_an_error_metric_and_the_pod_stays_not_ready() {
    let (client, _state) = fake_cluster(State {
        webhook: Some(webhook_configuration()),
        forbid: true,
        ..Default::default()
    });
    let server = start_self(client, long()).await;
    eventually(10, "403 counted", || async {
        metric(
            &metrics_text(server.probe).await,
            r#"lb_l7_webhook_cert_manager_errors_total{reason="forbidden"}"#,
        )
        .is_some_and(|v| v >= 1.0)
    })
    .await;
    let answer = probe_get(server.probe, "/readyz").await;
    assert_eq!(answer.status, 503);
    assert!(
        String::from_utf8_lossy(&answer.body).contains("caBundle"),
        "{}",
        String::from_utf8_lossy(&answer.body)
    );
    // Nothing is served: a handshake fails, and is counted.
    let tcp = tokio::net::TcpStream::connect(server.addr).await.unwrap();
    let other = lb_l7_webhook::certs::generate_ca("other", 1).unwrap();
    assert!(
        tls_connector(&other.cert_pem, Proto::H1)
            .connect(
                rustls::pki_types::ServerName::try_from("127.0.0.1").unwrap(),
                tcp
            )
            .await
            .is_err()
    );
    eventually(5, "no_certificate counted", || async {
        metric(
            &metrics_text(server.probe).await,
            r#"lb_l7_webhook_tls_handshake_failures_total{reason="no_certificate"}"#,
        )
        .is_some_and(|v| v >= 1.0)
    })
    .await;
    server.stop().await;
}

#[derive(Parser)]
struct Serve {
    #[command(flatten)]
    args: lb_l7_webhook::server::ServeArgs,
}

#[derive(Parser)]
struct Certs {
    #[command(flatten)]
    args: lb_l7_webhook::certs::CertsArgs,
}

#[test]
fn serves_development_certificates_and_the_certs_command_do_not_share_a_directory() {
    let serve = Serve::parse_from(["serve"]).args;
    let mut certs = Certs::parse_from(["certs"]).args;
    assert_eq!(serve.certs_dir, std::path::Path::new("certs/dev"));
    assert_eq!(
        certs.out_dir,
        std::path::Path::new("certs"),
        "where the docs say"
    );

    // The quick start's server, then the deploy step's `certs`, both with their defaults, in one directory.
    let cwd = tempfile::tempdir().unwrap();
    let (dev, generated) =
        lb_l7_webhook::certs::ensure_dev_certs(&cwd.path().join(&serve.certs_dir)).unwrap();
    assert!(generated);
    let before = std::fs::read(&dev.tls_crt).unwrap();
    let dev_ca = std::fs::read(&dev.ca_crt).unwrap();
    certs.out_dir = cwd.path().join(&certs.out_dir);
    let deployed = lb_l7_webhook::certs::generate(&certs).unwrap();
    assert_ne!(deployed.paths.tls_crt, dev.tls_crt);
    assert_eq!(
        std::fs::read(&dev.tls_crt).unwrap(),
        before,
        "the dev server's certificate is untouched"
    );
    assert_eq!(std::fs::read(&dev.ca_crt).unwrap(), dev_ca);
    // And the dev certificate still is for localhost (curl --cacert certs/dev/ca.crt https://localhost:8443).
    let dev_pem = String::from_utf8(before).unwrap();
    assert!(selfcert::trusts(
        &dev_ca,
        dev_pem.as_bytes(),
        "localhost",
        time::OffsetDateTime::now_utc().unix_timestamp()
    ));
}

#[test]
fn the_charts_self_mode_arguments_parse_into_the_settings() {
    // As charts/lb-l7-webhook/templates/deployment.yaml passes them (mode self, one extra SAN).
    let serve = Serve::try_parse_from([
        "serve",
        "--cert-secret",
        "lb-l7-system/lb-l7-webhook-certs",
        "--webhook-configuration",
        "lb-l7-webhook",
        "--service",
        "lb-l7-system/lb-l7-webhook",
        "--san",
        "webhook.example.com",
        "--ca-validity",
        "87600h",
        "--cert-validity",
        "8760h",
    ])
    .unwrap()
    .args;
    let s = serve.self_managed().expect("self-managed");
    assert_eq!(s.secret_namespace, "lb-l7-system");
    assert_eq!(s.secret_name, "lb-l7-webhook-certs");
    assert_eq!(s.webhook_configuration, "lb-l7-webhook");
    assert_eq!(s.server_name(), "lb-l7-webhook.lb-l7-system.svc");
    for name in [
        "lb-l7-webhook",
        "lb-l7-webhook.lb-l7-system",
        "lb-l7-webhook.lb-l7-system.svc.cluster.local",
        "webhook.example.com",
    ] {
        assert!(s.sans.iter().any(|n| n == name), "{name}: {:?}", s.sans);
    }
    assert_eq!(s.ca_validity, Duration::from_secs(87600 * 3600));
    assert_eq!(s.cert_validity, Duration::from_secs(8760 * 3600));

    // The defaults: ten years and one year; one minute is the shortest; no mixing with certificate files.
    let d = Serve::try_parse_from([
        "serve",
        "--cert-secret",
        "ns/s",
        "--webhook-configuration",
        "w",
        "--cert-validity",
        "1m",
    ])
    .unwrap()
    .args;
    assert_eq!(
        d.ca_validity,
        Duration::from_secs(3650 * 86400 + 2 * 86400 + 43200)
    );
    assert_eq!(d.cert_validity, Duration::from_secs(60));
    assert!(
        Serve::try_parse_from([
            "serve",
            "--cert-secret",
            "ns/s",
            "--webhook-configuration",
            "w",
            "--cert-validity",
            "59s"
        ])
        .is_err()
    );
    assert!(
        Serve::try_parse_from(["serve", "--cert-secret", "ns/s"]).is_err(),
        "needs --webhook-configuration"
    );
    assert!(
        Serve::try_parse_from([
            "serve",
            "--cert-secret",
            "no-namespace",
            "--webhook-configuration",
            "w"
        ])
        .is_err()
    );
    assert!(
        Serve::try_parse_from([
            "serve",
            "--cert-secret",
            "ns/s",
            "--webhook-configuration",
            "w",
            "--tls-cert",
            "a",
            "--tls-key",
            "b"
        ])
        .is_err()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replicas_that_start_together_converge_on_one_secret_and_one_ca() {
    let (client, state) = fake_cluster(State {
        webhook: Some(webhook_configuration()),
        ..Default::default()
    });
    let mut servers = vec![start_self(client, long()).await];
    for _ in 0..2 {
        servers.push(start_self(fake_client(&state), long()).await);
    }
    for s in &servers {
        eventually(10, "every replica ready", || ready(s.probe)).await;
    }
    let data = {
        let st = state.lock().unwrap();
        assert_consistent(&st);
        st.secret_data()
    };
    assert_eq!(selfcert::bundle_len(&data["ca.crt"]), 1, "one CA");
    let mut new_cas = 0.0;
    for s in &servers {
        assert_eq!(
            served_cert(s.addr, &data["ca.crt"]).await,
            der(&data["tls.crt"]),
            "every replica serves the Secret's certificate"
        );
        new_cas += metric(
            &metrics_text(s.probe).await,
            r#"lb_l7_webhook_cert_rotations_total{what="ca"}"#,
        )
        .unwrap_or(0.0);
    }
    assert_eq!(new_cas, 1.0, "one CA written in all");
    for s in servers {
        s.stop().await;
    }
}
