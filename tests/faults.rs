//! Faults and load: certificate rotation under load, SIGTERM under load against the real binary, a soak of
//! 100,000 reviews that watches the server's memory, and a table of hostile requests.
//!
//! Everything runs on 127.0.0.1 and is bounded in time. The speed of the webhook is measured elsewhere
//! (benches/, BENCHMARKS.md); these tests assert correctness under load, never timing.

mod common;

use std::net::SocketAddr;
use std::path::Path;
use std::process::Stdio;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use common::*;
use http_body_util::{BodyExt, Full};
use hyper_util::rt::{TokioExecutor, TokioIo};
use lb_l7_webhook::certs::{self, PemPair};
use rustls::pki_types::ServerName;
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

const UID: &str = "705ab4f5-6393-11e8-b7cc-42010a800002";

// ---------------------------------------------------------------------------------------------------------------
// Helpers
// ---------------------------------------------------------------------------------------------------------------

/// An HTTP/2 connection whose sender can be cloned, so several tasks share it (concurrent streams).
async fn h2_sender(
    addr: SocketAddr,
    ca_pem: &str,
) -> Result<hyper::client::conn::http2::SendRequest<Full<Bytes>>, String> {
    let tcp = TcpStream::connect(addr).await.map_err(|e| e.to_string())?;
    let tls = tls_connector(ca_pem, Proto::H2)
        .connect(ServerName::try_from("127.0.0.1").unwrap(), tcp)
        .await
        .map_err(|e| e.to_string())?;
    let (send, conn) =
        hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(tls))
            .await
            .map_err(|e| e.to_string())?;
    tokio::spawn(conn);
    Ok(send)
}

fn mutate_request(body: impl Into<Bytes>) -> http::Request<Full<Bytes>> {
    http::Request::builder()
        .method("POST")
        .uri("https://127.0.0.1/mutate")
        .header("content-type", "application/json")
        .body(Full::new(body.into()))
        .unwrap()
}

/// One review over an HTTP/2 sender: Ok(status, body) or the transport error.
async fn h2_review(
    send: &mut hyper::client::conn::http2::SendRequest<Full<Bytes>>,
    body: &'static [u8],
) -> Result<(u16, Bytes), String> {
    send.ready().await.map_err(|e| e.to_string())?;
    let resp = send
        .send_request(mutate_request(body))
        .await
        .map_err(|e| e.to_string())?;
    let status = resp.status().as_u16();
    let body = resp
        .into_body()
        .collect()
        .await
        .map_err(|e| e.to_string())?
        .to_bytes();
    Ok((status, body))
}

/// A connection that fails is a result here, not a panic, so workers can count it.
async fn try_connect(addr: SocketAddr, ca_pem: &str, proto: Proto) -> Result<Conn, String> {
    let tcp = TcpStream::connect(addr).await.map_err(|e| e.to_string())?;
    let tls = tls_connector(ca_pem, proto)
        .connect(ServerName::try_from("127.0.0.1").unwrap(), tcp)
        .await
        .map_err(|e| e.to_string())?;
    let io = TokioIo::new(tls);
    Ok(match proto {
        Proto::H1 => {
            let (send, conn) = hyper::client::conn::http1::handshake(io)
                .await
                .map_err(|e| e.to_string())?;
            tokio::spawn(conn);
            Conn::H1(send)
        }
        Proto::H2 => {
            let (send, conn) = hyper::client::conn::http2::handshake(TokioExecutor::new(), io)
                .await
                .map_err(|e| e.to_string())?;
            tokio::spawn(conn);
            Conn::H2(send)
        }
    })
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
}

/// A 200 AdmissionReview answer to REVIEW: status, uid echoed, allowed.
fn is_good_answer(status: u16, body: &[u8]) -> bool {
    status == 200 && contains(body, UID.as_bytes()) && contains(body, br#""allowed":true"#)
}

// ---------------------------------------------------------------------------------------------------------------
// Certificate rotation during load
// ---------------------------------------------------------------------------------------------------------------

/// Eight clients send reviews without pause (long-lived HTTP/1.1 and HTTP/2 connections, and clients that open
/// a new connection for every request) while the serving certificate is rotated three times by `..data` symlink
/// swap: a new key from the same CA, again, and finally a certificate from a new CA (clients trust the old and
/// the new CA, as during a CA rollover). No request may fail, and after each swap new connections are served the
/// new certificate.
#[tokio::test]
async fn certificate_rotation_during_load_fails_no_request() {
    install_crypto();
    let dir = tempfile::tempdir().unwrap();
    let old_ca = certs::generate_ca("faults CA 1", 1).unwrap();
    let new_ca = certs::generate_ca("faults CA 2", 1).unwrap();
    let serving = |ca: &PemPair| certs::issue_serving(ca, &["127.0.0.1".into()], 1).unwrap();
    let first = serving(&old_ca);
    let mut volume = SecretVolume::new(dir.path(), &first);
    let trust = format!("{}{}", old_ca.cert_pem, new_ca.cert_pem);
    let server = start_with(
        config(cluster_policy(), volume.files()),
        old_ca.clone(),
        dir,
    )
    .await;

    let stop = Arc::new(AtomicBool::new(false));
    let ok = Arc::new(AtomicUsize::new(0));
    let mut workers = Vec::new();
    for i in 0..8 {
        let (stop, ok, trust) = (stop.clone(), ok.clone(), trust.clone());
        let addr = server.addr;
        let proto = if i % 2 == 0 { Proto::H1 } else { Proto::H2 };
        let reconnect = i >= 6;
        workers.push(tokio::spawn(async move {
            let mut failures = Vec::new();
            let mut conn = None;
            while !stop.load(Ordering::Relaxed) {
                if conn.is_none() || reconnect {
                    match try_connect(addr, &trust, proto).await {
                        Ok(c) => conn = Some(c),
                        Err(e) => {
                            failures.push(format!("{proto:?} connect: {e}"));
                            continue;
                        }
                    }
                }
                let Some(c) = conn.as_mut() else { continue };
                match c.send("POST", "/mutate", REVIEW).await {
                    Ok(a) if is_good_answer(a.status, &a.body) => {
                        ok.fetch_add(1, Ordering::Relaxed);
                    }
                    Ok(a) => failures.push(format!("{proto:?}: HTTP {}", a.status)),
                    Err(e) => failures.push(format!("{proto:?}: {e}")),
                }
            }
            failures
        }));
    }

    assert_eq!(served_cert(server.addr, &trust).await, der(&first.cert_pem));
    let rotations = [serving(&old_ca), serving(&old_ca), serving(&new_ca)];
    for (n, next) in rotations.iter().enumerate() {
        let before = ok.load(Ordering::Relaxed);
        volume.swap(next);
        let swapped = Instant::now();
        while served_cert(server.addr, &trust).await != der(&next.cert_pem) {
            assert!(
                swapped.elapsed() < Duration::from_secs(10),
                "rotation {n}: new connections see the new certificate within 10 s"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        // Let traffic run on the new certificate before the next swap.
        while ok.load(Ordering::Relaxed) < before + 50 {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
    stop.store(true, Ordering::Relaxed);
    let mut failures = Vec::new();
    for w in workers {
        failures.extend(w.await.unwrap());
    }
    assert_eq!(failures, Vec::<String>::new(), "no failed request");
    assert!(ok.load(Ordering::Relaxed) >= 150, "traffic flowed");
    let text = metrics_text(server.probe).await;
    assert_eq!(
        metric(
            &text,
            r#"lb_l7_webhook_tls_reloads_total{result="success"}"#
        ),
        Some(3.0),
        "{text}"
    );
    server.stop().await.unwrap();
}

// ---------------------------------------------------------------------------------------------------------------
// SIGTERM during load, against the real binary
// ---------------------------------------------------------------------------------------------------------------

/// The real `lb-l7-webhook serve` gets SIGTERM while four clients send reviews and one request is half sent.
/// New connections are refused at once; the half-sent request is still answered when the rest of its body comes;
/// no answer is ever an error or a broken review (a client may only see its connection closed, after SIGTERM);
/// the process exits 0 within the drain bound.
#[tokio::test]
async fn sigterm_during_load_finishes_requests_in_flight_and_exits_0() {
    install_crypto();
    let dir = tempfile::tempdir().unwrap();
    let (ca, tls) = make_certs(dir.path());
    let drain = Duration::from_secs(5);
    let mut server = Binary::start(
        &tls,
        &["--log", "warn"],
        &["--drain-timeout", "5s", "--client-timeout", "10s"],
        Stdio::inherit(),
    )
    .await;
    let addr = server.addr;

    let stop = Arc::new(AtomicBool::new(false));
    let term_sent = Arc::new(AtomicBool::new(false));
    let mut workers = Vec::new();
    for i in 0..4 {
        let (stop, term_sent, ca) = (stop.clone(), term_sent.clone(), ca.cert_pem.clone());
        let proto = if i % 2 == 0 { Proto::H1 } else { Proto::H2 };
        workers.push(tokio::spawn(async move {
            let (mut ok, mut bad, mut early_errors) = (0usize, Vec::new(), Vec::new());
            let mut conn = try_connect(addr, &ca, proto).await.ok();
            while !stop.load(Ordering::Relaxed) {
                let Some(c) = conn.as_mut() else {
                    // Connection closed by the drain: a new one must be refused (or, racing the close, served).
                    if !term_sent.load(Ordering::Relaxed) {
                        early_errors.push(format!("{proto:?}: could not connect before SIGTERM"));
                    }
                    match try_connect(addr, &ca, proto).await {
                        Ok(c) => conn = Some(c),
                        Err(_) => break,
                    }
                    continue;
                };
                match c.send("POST", "/mutate", REVIEW).await {
                    Ok(a) if is_good_answer(a.status, &a.body) => ok += 1,
                    Ok(a) => bad.push(format!(
                        "{proto:?}: HTTP {} {}",
                        a.status,
                        String::from_utf8_lossy(&a.body)
                    )),
                    Err(e) => {
                        if !term_sent.load(Ordering::Relaxed) {
                            early_errors.push(format!("{proto:?}: {e}"));
                        }
                        conn = None;
                    }
                }
            }
            (ok, bad, early_errors)
        }));
    }

    // A request in flight: headers and half of the body.
    let mut in_flight = tls_connect(addr, &ca.cert_pem, Proto::H1).await;
    let head = format!(
        "POST /mutate HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n",
        REVIEW.len()
    );
    in_flight.write_all(head.as_bytes()).await.unwrap();
    let half = REVIEW.len() / 2;
    in_flight.write_all(&REVIEW[..half]).await.unwrap();
    in_flight.flush().await.unwrap();
    tokio::time::sleep(Duration::from_millis(500)).await;

    term_sent.store(true, Ordering::Relaxed);
    server.sigterm();
    let sent = Instant::now();

    // New connections are refused.
    let mut refused = false;
    while sent.elapsed() < Duration::from_secs(5) {
        if TcpStream::connect(addr).await.is_err() {
            refused = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(refused, "new connections are refused after SIGTERM");
    assert!(
        server.child.try_wait().unwrap().is_none(),
        "the server waits for the request in flight"
    );

    // The request in flight completes.
    in_flight.write_all(&REVIEW[half..]).await.unwrap();
    in_flight.flush().await.unwrap();
    let answer = read_h1_response(&mut in_flight, Duration::from_secs(10)).await;
    let text = String::from_utf8_lossy(&answer);
    assert!(text.starts_with("HTTP/1.1 200"), "{text}");
    assert!(
        text.contains(UID),
        "the review in flight is answered: {text}"
    );

    let status = tokio::time::timeout(drain + Duration::from_secs(5), server.child.wait())
        .await
        .expect("exits within the drain bound")
        .unwrap();
    assert!(status.success(), "exit code 0, got {status}");

    stop.store(true, Ordering::Relaxed);
    let mut total_ok = 0;
    for w in workers {
        let (ok, bad, early) = tokio::time::timeout(Duration::from_secs(15), w)
            .await
            .expect("workers stop")
            .unwrap();
        assert_eq!(bad, Vec::<String>::new(), "every answer is a good review");
        assert_eq!(early, Vec::<String>::new(), "no error before SIGTERM");
        total_ok += ok;
    }
    assert!(total_ok > 0, "traffic flowed before SIGTERM");
}

fn h1_head_keep_alive(content_length: usize) -> Vec<u8> {
    format!(
        "POST /mutate HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\nContent-Length: {content_length}\r\n\r\n"
    )
    .into_bytes()
}

/// The next response on a keep-alive HTTP/1.1 connection: (status, body). `buf` keeps bytes already read that
/// belong to the responses after it.
async fn next_h1_response<S: tokio::io::AsyncRead + Unpin>(
    s: &mut S,
    buf: &mut Vec<u8>,
) -> Result<(u16, Vec<u8>), String> {
    loop {
        if let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            let head = String::from_utf8_lossy(&buf[..end]).to_ascii_lowercase();
            let status =
                status_of(&buf[..end + 2]).ok_or_else(|| format!("no status line: {head}"))?;
            let len = head
                .lines()
                .find_map(|l| l.strip_prefix("content-length:"))
                .and_then(|v| v.trim().parse::<usize>().ok())
                .ok_or_else(|| format!("no content-length: {head}"))?;
            if buf.len() >= end + 4 + len {
                let body = buf[end + 4..end + 4 + len].to_vec();
                buf.drain(..end + 4 + len);
                return Ok((status, body));
            }
        }
        let mut chunk = [0u8; 64 * 1024];
        match tokio::time::timeout(Duration::from_secs(30), s.read(&mut chunk)).await {
            Ok(Ok(0)) => return Err("connection closed".into()),
            Ok(Ok(n)) => buf.extend_from_slice(&chunk[..n]),
            Ok(Err(e)) => return Err(e.to_string()),
            Err(_) => return Err("no response within 30 s".into()),
        }
    }
}

/// Reads one HTTP/1.1 response (headers and a Content-Length body) or until the peer closes.
async fn read_h1_response<S: tokio::io::AsyncRead + Unpin>(s: &mut S, limit: Duration) -> Vec<u8> {
    let mut buf = Vec::new();
    let deadline = Instant::now() + limit;
    loop {
        if let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            let head = String::from_utf8_lossy(&buf[..end]).to_ascii_lowercase();
            let len = head
                .lines()
                .find_map(|l| l.strip_prefix("content-length:"))
                .and_then(|v| v.trim().parse::<usize>().ok());
            if let Some(len) = len
                && buf.len() >= end + 4 + len
            {
                return buf;
            }
        }
        let mut chunk = [0u8; 16 * 1024];
        let left = deadline.saturating_duration_since(Instant::now());
        match tokio::time::timeout(left, s.read(&mut chunk)).await {
            Ok(Ok(0)) | Ok(Err(_)) | Err(_) => return buf,
            Ok(Ok(n)) => buf.extend_from_slice(&chunk[..n]),
        }
    }
}

// ---------------------------------------------------------------------------------------------------------------
// Soak
// ---------------------------------------------------------------------------------------------------------------

/// utime + stime of a process (`self` or a pid), in seconds, assuming the usual 100 clock ticks per second.
fn cpu_seconds(pid: &str) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    // The fields after the command name, which is in parentheses and may contain spaces.
    let rest = stat.rsplit_once(')').map(|(_, r)| r).unwrap_or("");
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let ticks = |i: usize| {
        fields
            .get(i)
            .and_then(|v| v.parse::<f64>().ok())
            .unwrap_or(0.0)
    };
    (ticks(11) + ticks(12)) / 100.0
}

const SOAK_REVIEWS: usize = 100_000;
const SOAK_WARMUP: usize = 10_000;

/// 100,000 reviews to the real binary over four connections: three HTTP/1.1 keep-alive connections that pipeline
/// 32 requests at a time, and one HTTP/2 connection with eight concurrent streams. Every answer is a good review,
/// the metrics count them all and no error, and the server's RSS after the soak is within 10% of its RSS after a
/// 10,000-review warm-up at the same concurrency.
///
/// The pipelined HTTP/1.1 client is a few lines over the TLS stream rather than hyper's, so that in a debug
/// build the server, not the test's client, does most of the work.
#[tokio::test]
async fn soak_100k_reviews_without_error_or_memory_growth() {
    install_crypto();
    let dir = tempfile::tempdir().unwrap();
    let (ca, tls) = make_certs(dir.path());
    let server = Binary::start(&tls, &["--log", "warn"], &[], Stdio::inherit()).await;
    let ca = ca.cert_pem;

    let mut h1 = Vec::new();
    for _ in 0..3 {
        h1.push(tls_connect(server.addr, &ca, Proto::H1).await);
    }
    let h2 = h2_sender(server.addr, &ca).await.expect("h2 connection");

    // Runs `count` reviews over the same connections; returns the failures.
    async fn run(
        count: usize,
        h1: &mut Vec<tokio_rustls::client::TlsStream<TcpStream>>,
        h2: &hyper::client::conn::http2::SendRequest<Full<Bytes>>,
    ) -> Vec<String> {
        const BATCH: usize = 32;
        let next = Arc::new(AtomicUsize::new(0));
        let mut tasks = tokio::task::JoinSet::new();
        for mut tls in h1.drain(..) {
            let next = next.clone();
            tasks.spawn(async move {
                let request = [h1_head_keep_alive(REVIEW.len()), REVIEW.to_vec()].concat();
                let mut failures = Vec::new();
                let mut buf = Vec::new();
                loop {
                    let first = next.fetch_add(BATCH, Ordering::Relaxed);
                    let n = count.saturating_sub(first).min(BATCH);
                    if n == 0 {
                        break;
                    }
                    if let Err(e) = tls.write_all(&request.repeat(n)).await {
                        failures.push(format!("h1 write: {e}"));
                        break;
                    }
                    for _ in 0..n {
                        match next_h1_response(&mut tls, &mut buf).await {
                            Ok((status, body)) if is_good_answer(status, &body) => {}
                            Ok((status, _)) => failures.push(format!("h1: HTTP {status}")),
                            Err(e) => {
                                failures.push(format!("h1: {e}"));
                                break;
                            }
                        }
                    }
                }
                (Some(tls), failures)
            });
        }
        for _ in 0..8 {
            let (next, mut send) = (next.clone(), h2.clone());
            tasks.spawn(async move {
                let mut failures = Vec::new();
                while next.fetch_add(1, Ordering::Relaxed) < count {
                    match h2_review(&mut send, REVIEW).await {
                        Ok((status, body)) if is_good_answer(status, &body) => {}
                        Ok((status, _)) => failures.push(format!("h2: HTTP {status}")),
                        Err(e) => failures.push(format!("h2: {e}")),
                    }
                }
                (None, failures)
            });
        }
        let mut failures = Vec::new();
        while let Some(done) = tasks.join_next().await {
            let (conn, f) = done.expect("worker");
            h1.extend(conn);
            failures.extend(f);
        }
        failures
    }

    let started = Instant::now();
    let failures = run(SOAK_WARMUP, &mut h1, &h2).await;
    assert_eq!(failures, Vec::<String>::new(), "warm-up");
    let rss_warm = server.rss_kib();
    let failures = run(SOAK_REVIEWS, &mut h1, &h2).await;
    let rss_after = server.rss_kib();
    eprintln!(
        "soak: {} reviews in {:.1?}; CPU seconds: server {:.1}, test client {:.1}; server RSS {} KiB after warm-up, \
         {} KiB after the soak",
        SOAK_WARMUP + SOAK_REVIEWS,
        started.elapsed(),
        cpu_seconds(&server.pid().to_string()),
        cpu_seconds("self"),
        rss_warm,
        rss_after
    );
    assert_eq!(
        failures.len(),
        0,
        "first failures: {:?}",
        &failures[..failures.len().min(5)]
    );
    assert!(
        rss_after * 10 <= rss_warm * 11,
        "server RSS grew from {rss_warm} KiB to {rss_after} KiB (> 10%)"
    );

    let text = metrics_text(server.probe).await;
    let reviews: f64 = text
        .lines()
        .filter(|l| l.starts_with("lb_l7_webhook_reviews_total{"))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum();
    assert_eq!(reviews as usize, SOAK_WARMUP + SOAK_REVIEWS, "{text}");
    assert!(
        !text
            .lines()
            .any(|l| l.starts_with("lb_l7_webhook_request_errors_total{") && !l.ends_with(" 0")),
        "no request errors: {text}"
    );
    server.sigterm();
}

// ---------------------------------------------------------------------------------------------------------------
// Hostile input
// ---------------------------------------------------------------------------------------------------------------

/// What a hostile request must get back.
#[derive(Debug, Clone)]
enum Expect {
    /// HTTP 200 with an AdmissionReview that echoes this uid and allows the write.
    Review(String),
    /// A review for the uid with a patch that applies to the object sent.
    Patched,
    /// The documented error: this status and a JSON body `{"error": "..."}`.
    Error(u16),
    /// A protocol-level violation: hyper answers with a 4xx status line, or closes the connection. Either way
    /// the server must keep serving others.
    HttpErrorOrClosed,
}

/// How a case is sent.
enum How {
    /// A POST /mutate with this body over HTTP/1.1 and over HTTP/2.
    Body(Vec<u8>),
    /// Raw bytes over TLS: chunks written with a pause between them, then the answer read.
    Raw(Vec<Vec<u8>>, Duration),
    /// Raw bytes over plain TCP (no TLS).
    PlainTcp(Vec<u8>),
}

struct Case {
    name: String,
    how: How,
    expect: Expect,
}

fn review_value() -> Value {
    serde_json::from_slice(REVIEW).unwrap()
}

fn with(f: impl FnOnce(&mut Value)) -> Vec<u8> {
    let mut v = review_value();
    f(&mut v);
    serde_json::to_vec(&v).unwrap()
}

/// The review with one more annotation on the Service (the key taken literally).
fn annotate(key: &str, value: Value) -> Vec<u8> {
    with(|v| {
        v["request"]["object"]["metadata"]["annotations"][key] = value;
    })
}

fn set(pointer: &str, value: Value) -> Vec<u8> {
    with(|v| {
        *v.pointer_mut(pointer)
            .unwrap_or_else(|| panic!("{pointer}")) = value
    })
}

/// Replaces the JSON text `"object": {...}` of the review with `object_text`, for objects serde_json cannot
/// write (duplicate keys, deep nesting, invalid escapes).
fn with_object_text(object_text: &str) -> Vec<u8> {
    let mut v = review_value();
    v["request"]["object"] = json!("__OBJECT__");
    serde_json::to_string(&v)
        .unwrap()
        .replace("\"__OBJECT__\"", object_text)
        .into_bytes()
}

fn case(name: impl Into<String>, body: Vec<u8>, expect: Expect) -> Case {
    Case {
        name: name.into(),
        how: How::Body(body),
        expect,
    }
}

fn raw(name: &str, chunks: Vec<Vec<u8>>, pause: Duration, expect: Expect) -> Case {
    Case {
        name: name.into(),
        how: How::Raw(chunks, pause),
        expect,
    }
}

trait PipeReplace {
    fn pipe_replace(self, from: &str, to: &str) -> Vec<u8>;
}

impl PipeReplace for Vec<u8> {
    fn pipe_replace(self, from: &str, to: &str) -> Vec<u8> {
        replace_bytes(&self, from.as_bytes(), to.as_bytes())
    }
}

/// `bytes` with the first `from` replaced by `to` (for bytes a Rust string cannot hold).
fn replace_bytes(bytes: &[u8], from: &[u8], to: &[u8]) -> Vec<u8> {
    let at = bytes.windows(from.len()).position(|w| w == from).unwrap();
    [&bytes[..at], to, &bytes[at + from.len()..]].concat()
}

fn review() -> Expect {
    Expect::Review(UID.into())
}

fn h1_head(extra_headers: &str, content_length: usize) -> Vec<u8> {
    format!(
        "POST /mutate HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\nConnection: close\r\n{extra_headers}Content-Length: {content_length}\r\n\r\n"
    )
    .into_bytes()
}

fn hostile_cases() -> Vec<Case> {
    let bad_request = Expect::Error(400);
    let deep = |n: usize| format!("{}{}", "[".repeat(n), "]".repeat(n));
    let deep_object = |n: usize| format!("{}1{}", "{\"a\":".repeat(n), "}".repeat(n));
    let mut ports: Vec<Value> = (0..10_000)
        .map(|i| json!({"name": format!("http-{i}"), "port": 1 + (i % 65_000), "protocol": "TCP"}))
        .collect();
    ports.push(json!({"name": "grpc", "port": 50051, "protocol": "TCP"}));

    let mut cases = vec![
        // Not JSON, or not whole.
        case("empty body", Vec::new(), bad_request.clone()),
        case("JSON null", b"null".to_vec(), bad_request.clone()),
        case("JSON array", b"[]".to_vec(), bad_request.clone()),
        case("JSON string", b"\"AdmissionReview\"".to_vec(), bad_request.clone()),
        case("JSON number", b"1e999999".to_vec(), bad_request.clone()),
        case("truncated in half", REVIEW[..REVIEW.len() / 2].to_vec(), bad_request.clone()),
        case("truncated by one byte", REVIEW[..REVIEW.len() - 2].to_vec(), bad_request.clone()),
        case("trailing garbage", [REVIEW, b"}{"].concat(), bad_request.clone()),
        case("byte order mark", [b"\xEF\xBB\xBF", REVIEW].concat(), bad_request.clone()),
        case("comments", [b"// hi\n", REVIEW].concat(), bad_request.clone()),
        case("NUL bytes", vec![0u8; 4096], bad_request.clone()),
        // Deep nesting: serde_json's recursion limit (128) answers, never the stack.
        case("100k unclosed [", "[".repeat(100_000).into_bytes(), bad_request.clone()),
        case("100k nested arrays", deep(100_000).into_bytes(), bad_request.clone()),
        // Inside the request the uid is still readable, so the answer is a review: the request is captured as raw
        // text and unknown fields are skipped without recursion, and decoding the object as a Service stops at the
        // first wrong type or at the recursion limit (allowed unchanged, with a warning).
        case("100k nested arrays as request.object", with_object_text(&deep(100_000)), review()),
        case("100k nested objects in an annotation", with_object_text(&format!(
            r#"{{"metadata":{{"name":"x","annotations":{}}}}}"#, deep_object(100_000))), review()),
        case("100k nested arrays in managedFields.fieldsV1 (a JSON field)", with_object_text(&format!(
            r#"{{"metadata":{{"name":"x","managedFields":[{{"fieldsV1":{}}}]}}}}"#, deep(100_000))), review()),
        case("100k nested arrays in an unknown field of the object", with_object_text(&format!(
            r#"{{"metadata":{{"name":"x"}},"extra":{}}}"#, deep(100_000))), review()),
        case("100k nested arrays in an unknown field of the request", with(|v| { v["request"]["extra"] = json!("__DEEP__"); })
            .pipe_replace("\"__DEEP__\"", &deep(100_000)), review()),
        case("nesting 100 deep in an ignored field", set("/request/userInfo", serde_json::from_str(&deep(100)).unwrap()), review()),
        // Huge values, under the 8 MiB limit.
        case("7 MiB annotation value", annotate("big", json!("x".repeat(7 << 20))), Expect::Patched),
        case("1 MiB annotation key", annotate(&"k".repeat(1 << 20), json!("v")), Expect::Patched),
        case("1 MiB uid", set("/request/uid", json!("u".repeat(1 << 20))), Expect::Review("u".repeat(1 << 20))),
        case("50,000 annotations", with(|v| {
            let a = v["request"]["object"]["metadata"]["annotations"].as_object_mut().unwrap();
            for i in 0..50_000 { a.insert(format!("example.com/a{i}"), json!("v")); }
        }), Expect::Patched),
        case("a Service with 10,001 ports", set("/request/object/spec/ports", Value::Array(ports)), Expect::Patched),
        case("annotation key with ~ and /", annotate("a~b/c%2F~1/~0", json!("x")), Expect::Patched),
        case("annotation key ~0~1 only", annotate("~0~1", json!("x")), Expect::Patched),
        case("unicode and escapes in names", with(|v| {
            v["request"]["object"]["metadata"]["labels"]["\u{202e}evil"] = json!("\u{1F600}\u{0000}");
        }), Expect::Patched),
        // The envelope: the documented 400.
        case("kind Pod", set("/kind", json!("Pod")), bad_request.clone()),
        case("apiVersion v1beta1", set("/apiVersion", json!("admission.k8s.io/v1beta1")), bad_request.clone()),
        case("no request", with(|v| { v.as_object_mut().unwrap().remove("request"); }), bad_request.clone()),
        case("no uid", with(|v| { v["request"].as_object_mut().unwrap().remove("uid"); }), bad_request.clone()),
        case("empty uid", set("/request/uid", json!("")), bad_request.clone()),
        // Duplicate keys.
        case("duplicate uid", String::from_utf8_lossy(REVIEW).replacen("\"uid\"", "\"uid\": \"other\", \"uid\"", 1).into_bytes(), bad_request.clone()),
        case("duplicate kind at the top", String::from_utf8_lossy(REVIEW).replacen("\"kind\"", "\"kind\": \"AdmissionReview\", \"kind\"", 1).into_bytes(), bad_request.clone()),
        case("duplicate metadata in the object", with_object_text(r#"{"metadata":{"name":"a"},"metadata":{"name":"b"},"spec":{"ports":[{"name":"grpc","port":1}]}}"#), review()),
        case("duplicate annotation key", with_object_text(r#"{"metadata":{"name":"a","annotations":{"k":"1","k":"2"}},"spec":{"ports":[{"name":"grpc","port":1}]}}"#), Expect::Patched),
        // Not UTF-8 / bad escapes.
        case("invalid UTF-8 in the object", replace_bytes(&with_object_text(r#"{"metadata":{"name":"@@"}}"#), b"@@", b"\xC3\x28"), bad_request.clone()),
        case("invalid UTF-8 in the uid", [&b"{\"apiVersion\":\"admission.k8s.io/v1\",\"kind\":\"AdmissionReview\",\"request\":{\"uid\":\"\xC3\x28\"}}"[..]].concat(), bad_request.clone()),
        // Found by the `admission` fuzz target: bytes that are not UTF-8 in a field the webhook never reads.
        // The decoder skips such fields without looking, so it checks the whole body is UTF-8 first (400).
        case("invalid UTF-8 in an ignored field (fuzz)", replace_bytes(REVIEW, b"system:masters", b"system:mas\xffters"), bad_request.clone()),
        case("lone surrogate in a label", with_object_text(r#"{"metadata":{"name":"a","labels":{"x":"\ud800"}}}"#), review()),
        case("lone surrogate in the uid", String::from_utf8_lossy(REVIEW).replacen(UID, "\\udfff", 1).into_bytes(), bad_request.clone()),
        // Content and method oddities.
        case("number out of range in spec", with_object_text(r#"{"metadata":{"name":"a"},"spec":{"ports":[{"name":"grpc","port":1e400}]}}"#), review()),
        case("port 2^31", set("/request/object/spec/ports/0/port", json!(2_147_483_648u64)), review()),
        case("negative port", set("/request/object/spec/ports/0/port", json!(-1)), Expect::Patched),
    ];

    // Wrong types in every field.
    let envelope = ["/apiVersion", "/kind", "/request", "/request/uid"];
    let fields = [
        "/apiVersion",
        "/kind",
        "/request",
        "/request/uid",
        "/request/kind",
        "/request/kind/group",
        "/request/kind/version",
        "/request/kind/kind",
        "/request/resource",
        "/request/name",
        "/request/namespace",
        "/request/operation",
        "/request/userInfo",
        "/request/object",
        "/request/object/apiVersion",
        "/request/object/kind",
        "/request/object/metadata",
        "/request/object/metadata/name",
        "/request/object/metadata/namespace",
        "/request/object/metadata/labels",
        "/request/object/metadata/annotations",
        "/request/object/metadata/annotations/owner",
        "/request/object/spec",
        "/request/object/spec/type",
        "/request/object/spec/selector",
        "/request/object/spec/ports",
        "/request/object/spec/ports/0",
        "/request/object/spec/ports/0/name",
        "/request/object/spec/ports/0/port",
        "/request/object/spec/ports/0/protocol",
        "/request/object/spec/ports/0/targetPort",
        "/request/oldObject",
        "/request/dryRun",
        "/request/options",
    ];
    let wrong = [
        json!(42),
        json!("text"),
        json!([1]),
        json!({"x": 1}),
        json!(true),
        Value::Null,
    ];
    for field in fields {
        let original = review_value().pointer(field).cloned();
        for value in &wrong {
            if original.as_ref() == Some(value) {
                continue;
            }
            let expect = if field == "/request/uid" && value.is_string() {
                Expect::Review(value.as_str().unwrap_or_default().to_string())
            } else if envelope.contains(&field) {
                bad_request.clone()
            } else {
                review()
            };
            cases.push(case(
                format!("{field} = {value}"),
                set(field, value.clone()),
                expect,
            ));
        }
    }

    // The protocol: slow clients, oversized and broken framing.
    let pause = Duration::from_millis(300);
    let head = h1_head("", REVIEW.len());
    cases.extend([
        raw("slow-loris: headers never finish", vec![b"POST /mutate HTTP/1.1\r\nHost: 127.0.0.1\r\nX-A: ".to_vec()], Duration::ZERO, Expect::HttpErrorOrClosed),
        raw("slow-loris: one header byte every 300 ms", head.chunks(1).take(12).map(|c| c.to_vec()).collect(), pause, Expect::HttpErrorOrClosed),
        raw("body stalls after half", vec![head.clone(), REVIEW[..REVIEW.len() / 2].to_vec()], Duration::ZERO, Expect::Error(408)),
        raw("body dribbled in 5 pieces", {
            let mut v = vec![head.clone()];
            v.extend(REVIEW.chunks(REVIEW.len() / 4 + 1).map(|c| c.to_vec()));
            v
        }, Duration::from_millis(100), review()),
        raw("declared 9 MiB body", vec![h1_head("", 9 << 20)], Duration::ZERO, Expect::Error(413)),
        raw("chunked body over 8 MiB", {
            let mut v = vec![b"POST /mutate HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\nTransfer-Encoding: chunked\r\n\r\n".to_vec()];
            for _ in 0..9 { v.push([format!("{:x}\r\n", 1 << 20).into_bytes(), vec![b' '; 1 << 20], b"\r\n".to_vec()].concat()); }
            v.push(b"0\r\n\r\n".to_vec());
            v
        }, Duration::ZERO, Expect::Error(413)),
        raw("broken chunked framing", vec![b"POST /mutate HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\nhello\r\n0\r\n\r\n".to_vec()], Duration::ZERO, Expect::HttpErrorOrClosed),
        raw("content-length and chunked", vec![[h1_head("Transfer-Encoding: chunked\r\n", 5), b"0\r\n\r\n".to_vec()].concat()], Duration::ZERO, Expect::HttpErrorOrClosed),
        raw("two content-lengths", vec![[h1_head("Content-Length: 7\r\n", REVIEW.len()), REVIEW.to_vec()].concat()], Duration::ZERO, Expect::HttpErrorOrClosed),
        raw("1 MiB header", vec![[h1_head(&format!("X-Big: {}\r\n", "a".repeat(1 << 20)), REVIEW.len()), REVIEW.to_vec()].concat()], Duration::ZERO, Expect::HttpErrorOrClosed),
        raw("non-UTF-8 header value", vec![[replace_bytes(&h1_head("X-Bytes: @@\r\n", REVIEW.len()), b"@@", b"\xff\xfe"), REVIEW.to_vec()].concat()], Duration::ZERO, review()),
        raw("garbage instead of HTTP", vec![b"\x00\x01\x02 hello \xff\r\n\r\n".to_vec()], Duration::ZERO, Expect::HttpErrorOrClosed),
        raw("bad HTTP/2 preface", vec![b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n\x00\x00\x00\x09\x00\x00\x00\x00\x00".to_vec()], Duration::ZERO, Expect::HttpErrorOrClosed),
        Case { name: "plain HTTP on the TLS port".into(), how: How::PlainTcp(head.clone()), expect: Expect::HttpErrorOrClosed },
        Case { name: "TLS record garbage".into(), how: How::PlainTcp(vec![0x16, 0x03, 0x01, 0xff, 0xff, 0, 0, 0]), expect: Expect::HttpErrorOrClosed },
    ]);
    cases
}

fn status_of(raw: &[u8]) -> Option<u16> {
    let line = raw.split(|&b| b == b'\r').next()?;
    let text = std::str::from_utf8(line).ok()?;
    text.strip_prefix("HTTP/1.1 ")?.get(..3)?.parse().ok()
}

fn body_of(raw: &[u8]) -> &[u8] {
    match raw.windows(4).position(|w| w == b"\r\n\r\n") {
        Some(i) => &raw[i + 4..],
        None => &[],
    }
}

/// Checks one answer against the expectation; `sent` is the body sent (for patch application). Returns what is
/// wrong, so the test can list every case that fails.
fn check(expect: &Expect, status: u16, body: &[u8], sent: Option<&[u8]>) -> Result<(), String> {
    let show = || String::from_utf8_lossy(&body[..body.len().min(300)]).to_string();
    macro_rules! ensure {
        ($cond:expr, $($arg:tt)+) => {
            if !$cond {
                return Err(format!($($arg)+));
            }
        };
    }
    match expect {
        Expect::Review(uid) => {
            ensure!(status == 200, "expected 200, got {status}: {}", show());
            let v: Value =
                serde_json::from_slice(body).map_err(|e| format!("not JSON ({e}): {}", show()))?;
            ensure!(
                v["apiVersion"] == "admission.k8s.io/v1" && v["kind"] == "AdmissionReview",
                "not an AdmissionReview: {}",
                show()
            );
            ensure!(
                v["response"]["uid"].as_str() == Some(uid.as_str()),
                "uid not echoed: {}",
                show()
            );
            ensure!(v["response"]["allowed"] == true, "not allowed: {}", show());
        }
        Expect::Patched => {
            check(&review(), status, body, sent)?;
            let review: lb_l7_core::admission::ReviewResponse =
                serde_json::from_slice(body).map_err(|e| e.to_string())?;
            let patch = review
                .response
                .decoded_patch()
                .ok_or_else(|| format!("no patch: {}", show()))?
                .map_err(|e| format!("patch does not decode: {e}"))?;
            let sent: Value =
                serde_json::from_slice(sent.unwrap_or_default()).map_err(|e| e.to_string())?;
            let mut object = sent["request"]["object"].clone();
            let before = object["metadata"]["annotations"].clone();
            json_patch::patch(&mut object, &patch.0)
                .map_err(|e| format!("patch does not apply: {e}"))?;
            let after = &object["metadata"]["annotations"];
            ensure!(
                after["service.cilium.io/lb-l7"] == "enabled",
                "annotation not added: {after}"
            );
            if let Some(before) = before.as_object() {
                for (k, v) in before {
                    ensure!(&after[k] == v, "annotation {k} not kept");
                }
            }
        }
        Expect::Error(code) => {
            ensure!(status == *code, "expected {code}, got {status}: {}", show());
            let v: Value = serde_json::from_slice(body)
                .map_err(|e| format!("error body is not JSON ({e}): {}", show()))?;
            ensure!(v["error"].is_string(), "no \"error\" in {}", show());
        }
        Expect::HttpErrorOrClosed => {
            ensure!(
                status == 0 || (400..500).contains(&status),
                "expected a 4xx or a closed connection, got {status}: {}",
                show()
            );
        }
    }
    Ok(())
}

/// Each case gets a well-formed answer (a review with the uid, the documented 4xx JSON error, or for broken
/// framing a 4xx status line or a closed connection), and after each case the server still answers a good review
/// on a new connection.
#[tokio::test]
async fn hostile_input_gets_a_well_formed_answer_and_the_server_keeps_serving() {
    let server = start(cluster_policy()).await;
    let ca = server.ca.cert_pem.clone();
    let cases = hostile_cases();
    assert!(cases.len() >= 40, "{} cases", cases.len());
    eprintln!("hostile input: {} cases", cases.len());
    let mut wrong = Vec::new();
    for case in &cases {
        let name = case.name.as_str();
        match &case.how {
            How::Body(body) => {
                for proto in [Proto::H1, Proto::H2] {
                    let mut conn = connect(server.addr, &ca, proto).await;
                    let answer = tokio::time::timeout(
                        Duration::from_secs(30),
                        conn.send("POST", "/mutate", body.clone()),
                    )
                    .await
                    .unwrap_or_else(|_| panic!("{name} {proto:?}: answered in time"))
                    .unwrap_or_else(|e| panic!("{name} {proto:?}: {e}"));
                    if let Err(e) = check(&case.expect, answer.status, &answer.body, Some(body)) {
                        wrong.push(format!("{name} ({proto:?}): {e}"));
                    }
                }
            }
            How::Raw(chunks, pause) => {
                let mut tls = tls_connect(server.addr, &ca, Proto::H1).await;
                for chunk in chunks {
                    if tls.write_all(chunk).await.is_err() {
                        break;
                    }
                    let _ = tls.flush().await;
                    tokio::time::sleep(*pause).await;
                }
                let answer = read_h1_response(&mut tls, Duration::from_secs(15)).await;
                let status = status_of(&answer).unwrap_or(0);
                if let Err(e) = check(&case.expect, status, body_of(&answer), None) {
                    wrong.push(format!("{name}: {e}"));
                }
            }
            How::PlainTcp(bytes) => {
                let mut tcp = TcpStream::connect(server.addr).await.unwrap();
                let _ = tcp.write_all(bytes).await;
                let mut buf = Vec::new();
                let read =
                    tokio::time::timeout(Duration::from_secs(15), tcp.read_to_end(&mut buf)).await;
                assert!(read.is_ok(), "{name}: closed in time");
                if let Err(e) = check(&case.expect, status_of(&buf).unwrap_or(0), &buf, None) {
                    wrong.push(format!("{name}: {e}"));
                }
            }
        }
        // Still serving.
        let mut conn = connect(server.addr, &ca, Proto::H2).await;
        let a = conn.review(REVIEW).await;
        assert!(
            is_good_answer(a.status, &a.body),
            "after {name}: server still serves"
        );
    }
    assert!(
        wrong.is_empty(),
        "{} of {} cases answered wrongly:\n{}",
        wrong.len(),
        cases.len(),
        wrong.join("\n")
    );
    server.stop().await.unwrap();
}

// ---------------------------------------------------------------------------------------------------------------
// Fuzz findings
// ---------------------------------------------------------------------------------------------------------------

fn regressions(target: &str) -> Vec<(String, Vec<u8>)> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("fuzz/regressions")
        .join(target);
    let mut files: Vec<(String, Vec<u8>)> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|entry| {
            let path = entry.unwrap().path();
            let bytes = std::fs::read(&path).unwrap();
            (path.display().to_string(), bytes)
        })
        .collect();
    files.sort();
    files
}

/// Every input the `admission` fuzz target failed on (fuzz/regressions/admission/) is answered without a panic: a
/// body that is not UTF-8 anywhere is a bad request, and any review allows the write with a uid, encodes, and
/// carries a patch that decodes.
#[test]
fn admission_fuzz_findings_stay_fixed() {
    let policies = [
        lb_l7_core::policy::Policy::default().compile(),
        cluster_policy().compile(),
    ];
    let files = regressions("admission");
    assert!(!files.is_empty());
    for (name, bytes) in files {
        for policy in &policies {
            match lb_l7_core::admission::review(policy, &bytes) {
                Ok(a) => {
                    assert!(
                        std::str::from_utf8(&bytes).is_ok(),
                        "{name}: not UTF-8, yet answered"
                    );
                    assert!(a.response.response.allowed && !a.uid.is_empty(), "{name}");
                    assert!(serde_json::to_vec(&a.response).is_ok(), "{name}");
                    if let Some(patch) = a.response.response.decoded_patch() {
                        assert!(patch.is_ok(), "{name}: {patch:?}");
                    }
                }
                Err(e) => assert!(!e.0.is_empty(), "{name}"),
            }
        }
    }
}

/// Every input the `policy` fuzz target failed on (fuzz/regressions/policy/) is read without a panic, and a
/// policy it yields compiles and evaluates.
#[test]
fn policy_fuzz_findings_stay_fixed() {
    for (name, bytes) in regressions("policy") {
        let Ok(text) = std::str::from_utf8(&bytes) else {
            continue;
        };
        if let Ok(policy) = lb_l7_core::policy::Policy::from_yaml(text) {
            let svc: k8s_openapi::api::core::v1::Service = serde_json::from_value(json!({
                "metadata": {"name": "api", "namespace": "apps"},
                "spec": {"ports": [{"name": "grpc", "port": 50051}]}
            }))
            .unwrap();
            let compiled = policy.compile();
            let decision = compiled.evaluate(
                &svc,
                lb_l7_core::policy::NamespaceContext::scope_applied("apps"),
            );
            let _ = lb_l7_core::patch::build_patch(&svc, &decision, &compiled.policy);
            eprintln!("{name}: {:?}", decision.kind);
        }
    }
}
