//! `lb-l7-webhook certs`: the files it writes, what is in them, and that a real TLS client that trusts only the
//! CA accepts the serving certificate (a rustls handshake over 127.0.0.1).

use std::path::Path;
use std::process::Command;
use std::sync::Arc;
use std::time::Duration;

use base64::Engine as _;
use k8s_openapi::api::core::v1::Secret;
use lb_l7_webhook::certs::{CertsArgs, generate};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use x509_parser::extensions::GeneralName;

fn args(dir: &Path) -> CertsArgs {
    CertsArgs {
        service: "lb-l7-webhook".into(),
        namespace: "lb-l7-system".into(),
        out_dir: dir.to_path_buf(),
        days: 30,
        ca_days: 365,
        sans: vec!["127.0.0.1".into(), "webhook.example.test".into()],
        new_ca: false,
        secret_manifest: None,
        secret_name: "lb-l7-webhook-tls".into(),
    }
}

fn read(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// DNS names and IP addresses in the certificate's subjectAltName.
fn sans(cert_pem: &str) -> (Vec<String>, Vec<String>) {
    let (_, pem) = x509_parser::pem::parse_x509_pem(cert_pem.as_bytes()).unwrap();
    let cert = pem.parse_x509().unwrap();
    let ext = cert
        .subject_alternative_name()
        .unwrap()
        .expect("the serving certificate has a subjectAltName");
    let mut dns = Vec::new();
    let mut ips = Vec::new();
    for name in &ext.value.general_names {
        match name {
            GeneralName::DNSName(d) => dns.push(d.to_string()),
            GeneralName::IPAddress(b) if b.len() == 4 => {
                ips.push(std::net::Ipv4Addr::new(b[0], b[1], b[2], b[3]).to_string())
            }
            _ => {}
        }
    }
    (dns, ips)
}

fn install_provider() {
    let _ = rustls::crypto::ring::default_provider().install_default();
}

/// Serves `tls.crt`/`tls.key` from `dir` on 127.0.0.1 and connects with a client that trusts only `ca_pem`,
/// asking for `server_name`. Returns whether the handshake (and one echoed byte) succeeded.
async fn handshake(dir: &Path, ca_pem: &str, server_name: &str) -> Result<(), String> {
    install_provider();
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(dir.join("tls.crt"))
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap();
    let key = PrivateKeyDer::from_pem_file(dir.join("tls.key")).unwrap();
    let server_config = rustls::ServerConfig::builder()
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .unwrap();
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(server_config));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let server = tokio::spawn(async move {
        let (tcp, _) = listener.accept().await.map_err(|e| e.to_string())?;
        let mut tls = acceptor.accept(tcp).await.map_err(|e| e.to_string())?;
        let mut b = [0u8; 1];
        tls.read_exact(&mut b).await.map_err(|e| e.to_string())?;
        tls.write_all(&b).await.map_err(|e| e.to_string())?;
        tls.shutdown().await.map_err(|e| e.to_string())
    });

    let mut roots = rustls::RootCertStore::empty();
    for c in CertificateDer::pem_slice_iter(ca_pem.as_bytes()) {
        roots.add(c.unwrap()).unwrap();
    }
    let client_config = rustls::ClientConfig::builder()
        .with_root_certificates(roots)
        .with_no_client_auth();
    let connector = tokio_rustls::TlsConnector::from(Arc::new(client_config));
    let name = ServerName::try_from(server_name.to_string()).unwrap();
    let client = async {
        let tcp = tokio::net::TcpStream::connect(addr)
            .await
            .map_err(|e| e.to_string())?;
        let mut tls = connector
            .connect(name, tcp)
            .await
            .map_err(|e| e.to_string())?;
        tls.write_all(b"x").await.map_err(|e| e.to_string())?;
        let mut b = [0u8; 1];
        tls.read_exact(&mut b).await.map_err(|e| e.to_string())?;
        Ok::<_, String>(b)
    };
    let result = tokio::time::timeout(Duration::from_secs(10), client)
        .await
        .map_err(|_| "handshake timed out".to_string())?;
    server.abort();
    result.map(|b| assert_eq!(&b, b"x"))
}

#[test]
fn serving_certificate_names_the_service_and_extra_sans() {
    let dir = tempfile::tempdir().unwrap();
    let out = generate(&args(dir.path())).unwrap();
    assert!(out.new_ca);
    let (dns, ips) = sans(&read(&dir.path().join("tls.crt")));
    for name in [
        "lb-l7-webhook.lb-l7-system.svc",
        "lb-l7-webhook.lb-l7-system.svc.cluster.local",
        "lb-l7-webhook.lb-l7-system",
        "lb-l7-webhook",
        "webhook.example.test",
    ] {
        assert!(
            dns.contains(&name.to_string()),
            "{name} missing from {dns:?}"
        );
    }
    assert_eq!(ips, vec!["127.0.0.1".to_string()]);
}

#[test]
fn the_service_is_named_namespace_slash_name_like_everywhere_else() {
    let dir = tempfile::tempdir().unwrap();
    let mut a = args(dir.path());
    a.service = "shop/hooks".into();
    a.namespace = "ignored-when-the-service-names-one".into();
    generate(&a).unwrap();
    let (dns, _) = sans(&read(&dir.path().join("tls.crt")));
    assert!(dns.contains(&"hooks.shop.svc".to_string()), "{dns:?}");
    a.service = "shop/".into();
    let err = generate(&a).expect_err("not NAMESPACE/NAME");
    assert!(err.to_string().contains("NAMESPACE/NAME"), "{err}");
}

#[cfg(unix)]
#[test]
fn private_keys_and_the_secret_manifest_are_mode_0600() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    let manifest = dir.path().join("secret.yaml");
    let status = Command::new(env!("CARGO_BIN_EXE_lb-l7-webhook"))
        .args(["certs", "--out-dir"])
        .arg(dir.path())
        .arg("--secret-manifest")
        .arg(&manifest)
        .status()
        .unwrap();
    assert!(status.success());
    let mode = |name: &str| {
        std::fs::metadata(dir.path().join(name))
            .unwrap()
            .permissions()
            .mode()
            & 0o777
    };
    assert_eq!(mode("ca.key"), 0o600);
    assert_eq!(mode("tls.key"), 0o600);
    assert_eq!(mode("secret.yaml"), 0o600);
    // Certificates are public.
    assert_eq!(mode("tls.crt") & 0o044, 0o044);
}

#[test]
fn rerun_renews_the_serving_certificate_with_the_same_ca_unless_new_ca() {
    let dir = tempfile::tempdir().unwrap();
    generate(&args(dir.path())).unwrap();
    let ca1 = read(&dir.path().join("ca.crt"));
    let ca_key1 = read(&dir.path().join("ca.key"));
    let tls1 = read(&dir.path().join("tls.crt"));

    let again = generate(&args(dir.path())).unwrap();
    assert!(!again.new_ca);
    assert_eq!(
        read(&dir.path().join("ca.crt")),
        ca1,
        "renewal must keep the CA"
    );
    assert_eq!(read(&dir.path().join("ca.key")), ca_key1);
    assert_ne!(
        read(&dir.path().join("tls.crt")),
        tls1,
        "renewal issues a new serving certificate"
    );

    let mut fresh = args(dir.path());
    fresh.new_ca = true;
    let out = generate(&fresh).unwrap();
    assert!(out.new_ca);
    assert_ne!(
        read(&dir.path().join("ca.crt")),
        ca1,
        "--new-ca makes a new CA"
    );
}

#[test]
fn a_ca_whose_key_does_not_match_is_refused_and_named() {
    let dir = tempfile::tempdir().unwrap();
    generate(&args(dir.path())).unwrap();
    let other = tempfile::tempdir().unwrap();
    generate(&args(other.path())).unwrap();
    std::fs::copy(other.path().join("ca.key"), dir.path().join("ca.key")).unwrap();
    let err = generate(&args(dir.path())).unwrap_err().to_string();
    assert!(err.contains("ca.crt"), "{err}");
    assert!(err.contains("do not belong together"), "{err}");
}

#[tokio::test]
async fn a_client_that_trusts_only_the_ca_accepts_the_serving_certificate() {
    let dir = tempfile::tempdir().unwrap();
    generate(&args(dir.path())).unwrap();
    let ca = read(&dir.path().join("ca.crt"));
    handshake(dir.path(), &ca, "lb-l7-webhook.lb-l7-system.svc")
        .await
        .unwrap();
    handshake(dir.path(), &ca, "127.0.0.1").await.unwrap();

    // After a renewal, the same CA still vouches for the new certificate.
    generate(&args(dir.path())).unwrap();
    handshake(
        dir.path(),
        &ca,
        "lb-l7-webhook.lb-l7-system.svc.cluster.local",
    )
    .await
    .unwrap();

    // A name not in the certificate, or another CA, is refused.
    let err = handshake(dir.path(), &ca, "other.lb-l7-system.svc")
        .await
        .unwrap_err();
    assert!(err.to_lowercase().contains("certificate"), "{err}");
    let other = tempfile::tempdir().unwrap();
    generate(&args(other.path())).unwrap();
    let other_ca = read(&other.path().join("ca.crt"));
    assert!(
        handshake(dir.path(), &other_ca, "lb-l7-webhook.lb-l7-system.svc")
            .await
            .is_err()
    );
}

#[test]
fn cli_prints_the_ca_bundle_and_writes_a_tls_secret() {
    let dir = tempfile::tempdir().unwrap();
    let manifest = dir.path().join("secret.yaml");
    let out = Command::new(env!("CARGO_BIN_EXE_lb-l7-webhook"))
        .args([
            "certs",
            "--service",
            "hook",
            "--namespace",
            "team-a",
            "--san",
            "127.0.0.1",
            "--out-dir",
        ])
        .arg(dir.path())
        .arg("--secret-manifest")
        .arg(&manifest)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let ca = read(&dir.path().join("ca.crt"));
    let stdout = String::from_utf8(out.stdout).unwrap();
    assert_eq!(
        stdout.trim(),
        base64::engine::general_purpose::STANDARD.encode(&ca),
        "stdout is exactly the caBundle"
    );

    let secret: Secret = serde_saphyr::from_str(&read(&manifest)).unwrap();
    assert_eq!(secret.type_.as_deref(), Some("kubernetes.io/tls"));
    assert_eq!(secret.metadata.namespace.as_deref(), Some("team-a"));
    assert_eq!(secret.metadata.name.as_deref(), Some("lb-l7-webhook-tls"));
    let data = secret.data.unwrap();
    assert_eq!(
        data["tls.crt"].0,
        read(&dir.path().join("tls.crt")).into_bytes()
    );
    assert_eq!(
        data["tls.key"].0,
        read(&dir.path().join("tls.key")).into_bytes()
    );
    assert_eq!(data["ca.crt"].0, ca.into_bytes());
    let (dns, _) = sans(&String::from_utf8(data["tls.crt"].0.clone()).unwrap());
    assert!(dns.contains(&"hook.team-a.svc".to_string()), "{dns:?}");
}
