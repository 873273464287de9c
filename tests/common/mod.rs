//! Shared by the integration tests: a real `serve` on a loopback port with generated certificates, and a real
//! TLS client that speaks HTTP/1.1 or HTTP/2 (chosen by ALPN, as the API server does).
#![allow(dead_code)]

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper_util::rt::{TokioExecutor, TokioIo};
use lb_l7_core::policy::Policy;
use lb_l7_webhook::certs::{self, PemPair};
use lb_l7_webhook::server::tls::TlsFiles;
use lb_l7_webhook::server::{Server, ServerConfig};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName};
use tokio::net::TcpStream;
use tokio::sync::oneshot;
use tokio_rustls::TlsConnector;
use tokio_rustls::client::TlsStream;

pub const REVIEW: &[u8] = include_bytes!("../data/reviews/create-grpc-service.json");

pub fn install_crypto() {
    let _ = rustls::crypto::ring::default_provider().install_default();
}

/// A CA and a serving certificate for 127.0.0.1 and localhost, written into `dir`.
pub fn make_certs(dir: &Path) -> (PemPair, TlsFiles) {
    let ca = certs::generate_ca("test CA", 1).expect("CA");
    let serving =
        certs::issue_serving(&ca, &["127.0.0.1".into(), "localhost".into()], 1).expect("cert");
    let files = TlsFiles {
        cert: dir.join("tls.crt"),
        key: dir.join("tls.key"),
    };
    certs::write_file(&files.cert, &serving.cert_pem, false).expect("write");
    certs::write_file(&files.key, &serving.key_pem, true).expect("write");
    (ca, files)
}

pub struct Running {
    pub addr: SocketAddr,
    pub probe: SocketAddr,
    pub ca: PemPair,
    pub dir: tempfile::TempDir,
    stop: Option<oneshot::Sender<()>>,
    pub task: tokio::task::JoinHandle<anyhow::Result<()>>,
}

impl Running {
    /// Stops the server the way SIGTERM does, and waits for it to return.
    pub async fn stop(mut self) -> anyhow::Result<()> {
        if let Some(tx) = self.stop.take() {
            let _ = tx.send(());
        }
        tokio::time::timeout(Duration::from_secs(30), &mut self.task)
            .await
            .expect("server stops in time")
            .expect("server task")
    }
}

pub fn config(policy: Policy, tls: TlsFiles) -> ServerConfig {
    ServerConfig {
        listen: "127.0.0.1:0".parse().unwrap(),
        probe_listen: "127.0.0.1:0".parse().unwrap(),
        policy,
        tls: tls.into(),
        cert_reload_interval: Duration::from_millis(200),
        client_timeout: Duration::from_secs(1),
        drain_timeout: Duration::from_secs(5),
    }
}

/// Starts `serve` in this process on loopback ports.
pub async fn start(policy: Policy) -> Running {
    install_crypto();
    let dir = tempfile::tempdir().expect("tempdir");
    let (ca, tls) = make_certs(dir.path());
    start_with(config(policy, tls), ca, dir).await
}

pub async fn start_with(config: ServerConfig, ca: PemPair, dir: tempfile::TempDir) -> Running {
    install_crypto();
    let server = Server::bind(config).await.expect("bind");
    let addr = server.local_addr().unwrap();
    let probe = server.probe_addr().unwrap();
    let (tx, rx) = oneshot::channel::<()>();
    let task = tokio::spawn(server.serve(async move {
        let _ = rx.await;
    }));
    Running {
        addr,
        probe,
        ca,
        dir,
        stop: Some(tx),
        task,
    }
}

pub fn policy(yaml: &str) -> Policy {
    Policy::from_yaml(yaml).expect("test policy")
}

pub fn cluster_policy() -> Policy {
    policy("scope: cluster\nrules: [{name: grpc-ports, ports: {}}]\n")
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Proto {
    H1,
    H2,
}

pub fn tls_connector(ca_pem: &str, proto: Proto) -> TlsConnector {
    install_crypto();
    let mut roots = rustls::RootCertStore::empty();
    for c in CertificateDer::pem_slice_iter(ca_pem.as_bytes()) {
        roots.add(c.expect("CA pem")).expect("CA");
    }
    let mut cfg = rustls::ClientConfig::builder()
        .with_root_certificates(roots)
        .with_no_client_auth();
    cfg.alpn_protocols = match proto {
        Proto::H1 => vec![b"http/1.1".to_vec()],
        Proto::H2 => vec![b"h2".to_vec()],
    };
    TlsConnector::from(Arc::new(cfg))
}

pub async fn tls_connect(addr: SocketAddr, ca_pem: &str, proto: Proto) -> TlsStream<TcpStream> {
    let tcp = TcpStream::connect(addr).await.expect("connect");
    tls_connector(ca_pem, proto)
        .connect(ServerName::try_from("127.0.0.1").unwrap(), tcp)
        .await
        .expect("TLS handshake")
}

/// One connection that sends many requests (keep-alive on HTTP/1.1, streams on HTTP/2).
pub enum Conn {
    H1(hyper::client::conn::http1::SendRequest<Full<Bytes>>),
    H2(hyper::client::conn::http2::SendRequest<Full<Bytes>>),
}

pub async fn connect(addr: SocketAddr, ca_pem: &str, proto: Proto) -> Conn {
    let tls = tls_connect(addr, ca_pem, proto).await;
    let negotiated = tls.get_ref().1.alpn_protocol().map(|p| p.to_vec());
    let io = TokioIo::new(tls);
    match proto {
        Proto::H1 => {
            assert_eq!(negotiated.as_deref(), Some(&b"http/1.1"[..]));
            let (send, conn) = hyper::client::conn::http1::handshake(io).await.expect("h1");
            tokio::spawn(conn);
            Conn::H1(send)
        }
        Proto::H2 => {
            assert_eq!(
                negotiated.as_deref(),
                Some(&b"h2"[..]),
                "server offers h2 by ALPN"
            );
            let (send, conn) = hyper::client::conn::http2::handshake(TokioExecutor::new(), io)
                .await
                .expect("h2");
            tokio::spawn(conn);
            Conn::H2(send)
        }
    }
}

pub struct Answer {
    pub status: u16,
    pub body: Vec<u8>,
}

impl Answer {
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("JSON body ({e}): {}", String::from_utf8_lossy(&self.body)))
    }
}

impl Conn {
    pub async fn send(
        &mut self,
        method: &str,
        path: &str,
        body: impl Into<Bytes>,
    ) -> Result<Answer, hyper::Error> {
        let req = http::Request::builder()
            .method(method)
            .uri(format!("https://127.0.0.1{path}"))
            .header("content-type", "application/json")
            .body(Full::new(body.into()))
            .expect("request");
        let resp = match self {
            Conn::H1(s) => {
                s.ready().await?;
                s.send_request(req).await?
            }
            Conn::H2(s) => {
                s.ready().await?;
                s.send_request(req).await?
            }
        };
        let status = resp.status().as_u16();
        let body = resp.into_body().collect().await?.to_bytes().to_vec();
        Ok(Answer { status, body })
    }

    pub async fn review(&mut self, body: impl Into<Bytes>) -> Answer {
        self.send("POST", "/mutate", body).await.expect("request")
    }
}

/// GET on the plain-HTTP probe port.
pub async fn probe_get(addr: SocketAddr, path: &str) -> Answer {
    let tcp = TcpStream::connect(addr).await.expect("connect probe");
    let (mut send, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tcp))
        .await
        .expect("h1");
    tokio::spawn(conn);
    let req = http::Request::builder()
        .uri(path)
        .header("host", "127.0.0.1")
        .body(Full::new(Bytes::new()))
        .unwrap();
    let resp = send.send_request(req).await.expect("probe request");
    let status = resp.status().as_u16();
    let body = resp
        .into_body()
        .collect()
        .await
        .unwrap()
        .to_bytes()
        .to_vec();
    Answer { status, body }
}

/// The value of one sample line of the Prometheus text, e.g. `lb_l7_webhook_reviews_total{...}`.
pub fn metric(text: &str, name_and_labels: &str) -> Option<f64> {
    text.lines()
        .find_map(|l| l.strip_prefix(name_and_labels)?.trim().parse().ok())
}

pub fn data_path(rel: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/data")
        .join(rel)
}

/// A directory laid out like a mounted Secret (`tls.crt -> ..data/tls.crt`, `..data -> ..<version>`); `swap`
/// replaces the `..data` symlink atomically, as the kubelet does.
pub struct SecretVolume {
    dir: PathBuf,
    version: usize,
}

impl SecretVolume {
    pub fn new(dir: &Path, pair: &PemPair) -> Self {
        let mut v = SecretVolume {
            dir: dir.to_path_buf(),
            version: 0,
        };
        v.swap(pair);
        for f in ["tls.crt", "tls.key"] {
            std::os::unix::fs::symlink(format!("..data/{f}"), dir.join(f)).unwrap();
        }
        v
    }

    /// Writes a new version directory, then renames a fresh symlink over `..data`.
    pub fn swap(&mut self, pair: &PemPair) {
        self.version += 1;
        let name = format!("..2026_11_24_v{}", self.version);
        let version_dir = self.dir.join(&name);
        std::fs::create_dir(&version_dir).unwrap();
        certs::write_file(&version_dir.join("tls.crt"), &pair.cert_pem, false).unwrap();
        certs::write_file(&version_dir.join("tls.key"), &pair.key_pem, true).unwrap();
        let tmp = self.dir.join("..data_tmp");
        std::os::unix::fs::symlink(&name, &tmp).unwrap();
        std::fs::rename(&tmp, self.dir.join("..data")).unwrap();
    }

    pub fn files(&self) -> TlsFiles {
        TlsFiles {
            cert: self.dir.join("tls.crt"),
            key: self.dir.join("tls.key"),
        }
    }
}

/// The DER of the first certificate in a PEM text.
pub fn der(pem: &str) -> Vec<u8> {
    CertificateDer::from_pem_slice(pem.as_bytes())
        .unwrap()
        .to_vec()
}

/// The certificate a new TLS connection is served.
pub async fn served_cert(addr: SocketAddr, ca: &str) -> Vec<u8> {
    let tls = tls_connect(addr, ca, Proto::H2).await;
    tls.get_ref().1.peer_certificates().unwrap()[0].to_vec()
}

/// The probe port's `/metrics` text.
pub async fn metrics_text(probe: SocketAddr) -> String {
    String::from_utf8_lossy(&probe_get(probe, "/metrics").await.body).to_string()
}

/// `lb-l7-webhook serve`, the real binary, on loopback ports, with the given certificate files.
pub struct Binary {
    pub child: tokio::process::Child,
    pub addr: SocketAddr,
    pub probe: SocketAddr,
}

pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free loopback port")
}

impl Binary {
    /// `lb-l7-webhook <global> serve --listen .. --probe-listen .. --tls-cert .. --tls-key .. <extra>`, its
    /// stderr to `stderr`; returns once both ports accept connections.
    pub async fn start(
        tls: &TlsFiles,
        global: &[&str],
        extra: &[&str],
        stderr: std::process::Stdio,
    ) -> Binary {
        // Ports from the kernel; a port taken again between here and the bind makes the start fail, visibly.
        let addr: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
        let probe: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
        let mut child = tokio::process::Command::new(env!("CARGO_BIN_EXE_lb-l7-webhook"))
            .args(global)
            .args(["serve", "--listen"])
            .arg(addr.to_string())
            .arg("--probe-listen")
            .arg(probe.to_string())
            .arg("--tls-cert")
            .arg(&tls.cert)
            .arg("--tls-key")
            .arg(&tls.key)
            .args(extra)
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::null())
            .stderr(stderr)
            .kill_on_drop(true)
            .spawn()
            .expect("spawn lb-l7-webhook");
        let started = Instant::now();
        loop {
            if let Ok(Some(status)) = child.try_wait() {
                panic!("lb-l7-webhook serve exited at start: {status}");
            }
            if TcpStream::connect(addr).await.is_ok() && TcpStream::connect(probe).await.is_ok() {
                break;
            }
            assert!(
                started.elapsed() < Duration::from_secs(30),
                "lb-l7-webhook serve listens within 30 s"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        Binary { child, addr, probe }
    }

    pub fn pid(&self) -> u32 {
        self.child.id().expect("running")
    }

    /// VmRSS of the server process, in KiB.
    pub fn rss_kib(&self) -> u64 {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.pid())).unwrap();
        status
            .lines()
            .find_map(|l| l.strip_prefix("VmRSS:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
            .expect("VmRSS in /proc/PID/status")
    }

    pub fn sigterm(&self) {
        let status = std::process::Command::new("kill")
            .args(["-TERM", &self.pid().to_string()])
            .status()
            .expect("kill");
        assert!(status.success());
    }
}
