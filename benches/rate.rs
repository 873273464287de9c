//! A fixed-rate (open-loop) HTTP/2 load generator for the p99 check: requests leave at evenly spaced instants
//! (a pacing thread sleeps until each one), whatever the answers do, and each latency is measured from the
//! instant the request was due, so a slow answer cannot hide the requests queued behind it.
//!
//! Why not h2load --rps: on this machine it sends its requests in bursts (most gaps between request starts are
//! under 50 µs at a nominal 500 µs spacing), so its latencies measure the burst queue, not the server.
//!
//! A `harness = false` bench target, started by `benches/load.sh`:
//!
//! ```text
//! cargo bench --bench rate --no-run        # prints the path of the executable
//! target/release/deps/rate-<hash> --connect 127.0.0.1:8443 --ca certs/ca.crt \
//!     --review tests/data/reviews/bench-service.json --rate 2000 --duration 20 --warmup 2 --connections 4
//! ```
//!
//! It prints one line: `RESULT <sent> <ok> <failed> <achieved/s> <p50 ms> <p99 ms> <p99.9 ms> <max ms>`.
//! Run without `--connect` (as a plain `cargo bench` does), it prints its usage and exits 0.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use bytes::Bytes;
use hdrhistogram::Histogram;
use http_body_util::{BodyExt, Full};
use hyper::client::conn::http2::SendRequest;
use hyper_util::rt::{TokioExecutor, TokioIo};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName};

const USAGE: &str = "usage: rate --connect ADDR --ca FILE --review FILE [--rate N] [--duration S] [--warmup S] \
                     [--connections N]";

struct Args {
    connect: SocketAddr,
    ca: PathBuf,
    review: PathBuf,
    rate: u32,
    duration: u64,
    warmup: u64,
    connections: usize,
}

fn parse_args() -> anyhow::Result<Option<Args>> {
    let (mut connect, mut ca, mut review) = (None, None, None);
    let (mut rate, mut duration, mut warmup, mut connections) = (2000, 20, 2, 4);
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        let mut value = || args.next().with_context(|| format!("{arg} needs a value"));
        match arg.as_str() {
            "--connect" => connect = Some(value()?.parse().context("--connect")?),
            "--ca" => ca = Some(PathBuf::from(value()?)),
            "--review" => review = Some(PathBuf::from(value()?)),
            "--rate" => rate = value()?.parse().context("--rate")?,
            "--duration" => duration = value()?.parse().context("--duration")?,
            "--warmup" => warmup = value()?.parse().context("--warmup")?,
            "--connections" => connections = value()?.parse().context("--connections")?,
            "--bench" => {}
            other => bail!("unknown argument {other:?}\n{USAGE}"),
        }
    }
    let Some(connect) = connect else {
        return Ok(None);
    };
    let (Some(ca), Some(review)) = (ca, review) else {
        bail!("{USAGE}");
    };
    if rate == 0 || connections == 0 {
        bail!("--rate and --connections must be positive");
    }
    Ok(Some(Args {
        connect,
        ca,
        review,
        rate,
        duration,
        warmup,
        connections,
    }))
}

async fn connect(args: &Args) -> anyhow::Result<SendRequest<Full<Bytes>>> {
    let mut roots = rustls::RootCertStore::empty();
    for cert in CertificateDer::pem_file_iter(&args.ca)
        .with_context(|| format!("{}: cannot read", args.ca.display()))?
    {
        roots.add(cert.context("CA certificate")?)?;
    }
    let mut config = rustls::ClientConfig::builder()
        .with_root_certificates(roots)
        .with_no_client_auth();
    config.alpn_protocols = vec![b"h2".to_vec()];
    let tcp = tokio::net::TcpStream::connect(args.connect).await?;
    tcp.set_nodelay(true)?;
    let tls = tokio_rustls::TlsConnector::from(Arc::new(config))
        .connect(ServerName::try_from("127.0.0.1")?, tcp)
        .await?;
    let (send, conn) =
        hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(tls)).await?;
    tokio::spawn(conn);
    Ok(send)
}

struct Stats {
    latency_us: Histogram<u64>,
    ok: u64,
    failed: u64,
}

async fn run(args: Args) -> anyhow::Result<()> {
    let body = Bytes::from(
        std::fs::read(&args.review)
            .with_context(|| format!("{}: cannot read", args.review.display()))?,
    );
    let mut senders = Vec::new();
    for _ in 0..args.connections {
        senders.push(connect(&args).await?);
    }
    let stats = Arc::new(Mutex::new(Stats {
        latency_us: Histogram::new_with_bounds(1, 120_000_000, 3)?,
        ok: 0,
        failed: 0,
    }));

    // The pacing thread: one instant every 1/rate seconds, sent to the runtime.
    let period = Duration::from_secs_f64(1.0 / f64::from(args.rate));
    let total = u64::from(args.rate) * (args.warmup + args.duration);
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<Instant>();
    let start = Instant::now() + Duration::from_millis(50);
    let pacer = std::thread::spawn(move || {
        for i in 0..total {
            let due = start + period.mul_f64(i as f64);
            let now = Instant::now();
            if due > now {
                std::thread::sleep(due - now);
            }
            if tx.send(due).is_err() {
                break;
            }
        }
    });
    let measured_from = start + Duration::from_secs(args.warmup);
    let mut tasks = tokio::task::JoinSet::new();
    let mut sent = 0u64;
    while let Some(due) = rx.recv().await {
        let mut send = senders[(sent as usize) % senders.len()].clone();
        let (body, stats) = (body.clone(), stats.clone());
        sent += 1;
        tasks.spawn(async move {
            let req = http::Request::builder()
                .method("POST")
                .uri("https://127.0.0.1/mutate")
                .header("content-type", "application/json")
                .body(Full::new(body));
            let answered = async {
                let req = req.ok()?;
                send.ready().await.ok()?;
                let resp = send.send_request(req).await.ok()?;
                let status = resp.status();
                resp.into_body().collect().await.ok()?;
                Some(status.is_success())
            }
            .await;
            let latency = Instant::now().saturating_duration_since(due);
            if due < measured_from {
                return;
            }
            let Ok(mut s) = stats.lock() else { return };
            if answered == Some(true) {
                s.ok += 1;
                let _ = s.latency_us.record(latency.as_micros().max(1) as u64);
            } else {
                s.failed += 1;
            }
        });
        // Reap finished tasks as we go, so the set stays small.
        while tasks.try_join_next().is_some() {}
    }
    while tasks.join_next().await.is_some() {}
    let _ = pacer.join();
    let s = stats
        .lock()
        .map_err(|_| anyhow::anyhow!("stats lock poisoned"))?;
    let ms = |q: f64| s.latency_us.value_at_quantile(q) as f64 / 1000.0;
    println!(
        "RESULT {} {} {} {:.1} {:.3} {:.3} {:.3} {:.3}",
        s.ok + s.failed,
        s.ok,
        s.failed,
        (s.ok + s.failed) as f64 / args.duration as f64,
        ms(0.5),
        ms(0.99),
        ms(0.999),
        s.latency_us.max() as f64 / 1000.0
    );
    Ok(())
}

fn main() -> ExitCode {
    let args = match parse_args() {
        Ok(Some(args)) => args,
        Ok(None) => {
            println!("rate: nothing to measure here; it is started by benches/load.sh\n{USAGE}");
            return ExitCode::SUCCESS;
        }
        Err(e) => {
            eprintln!("error: {e:#}");
            return ExitCode::from(2);
        }
    };
    let _ = rustls::crypto::ring::default_provider().install_default();
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::from(1);
        }
    };
    match runtime.block_on(run(args)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::from(2)
        }
    }
}
