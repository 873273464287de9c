//! The limit of the stack on this machine: a minimal hyper + rustls (ring) HTTPS server on the same tokio
//! runtime, TLS settings (HTTP/2 and HTTP/1.1 by ALPN) and connection builder as `serve`, that reads the request
//! body and answers every request with a canned response, without parsing anything.
//!
//! The canned response is the webhook's own answer to the review file given with `--review`, computed once at
//! start with the built-in policy, so both servers send exactly the same bytes.
//!
//! It is a `harness = false` bench target so that it lives under `benches/` and builds with the release profile:
//!
//! ```text
//! cargo bench --bench baseline_server --no-run      # prints the path of the executable
//! target/release/deps/baseline_server-<hash> --listen 127.0.0.1:9443 \
//!     --tls-cert certs/tls.crt --tls-key certs/tls.key --review tests/data/reviews/bench-service.json
//! ```
//!
//! Run without `--listen` (as a plain `cargo bench` does), it prints this usage and exits 0. `benches/load.sh`
//! builds and starts it.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

use anyhow::{Context, bail};
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::{Request, Response};
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use tokio::net::TcpListener;

const USAGE: &str =
    "usage: baseline_server --listen ADDR --tls-cert FILE --tls-key FILE --review FILE";

struct Args {
    listen: SocketAddr,
    cert: PathBuf,
    key: PathBuf,
    review: PathBuf,
}

fn parse_args() -> anyhow::Result<Option<Args>> {
    let mut listen = None;
    let mut cert = None;
    let mut key = None;
    let mut review = None;
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        let mut value = || args.next().with_context(|| format!("{arg} needs a value"));
        match arg.as_str() {
            "--listen" => listen = Some(value()?.parse().context("--listen")?),
            "--tls-cert" => cert = Some(PathBuf::from(value()?)),
            "--tls-key" => key = Some(PathBuf::from(value()?)),
            "--review" => review = Some(PathBuf::from(value()?)),
            // What `cargo bench` passes to every bench target.
            "--bench" => {}
            other => bail!("unknown argument {other:?}\n{USAGE}"),
        }
    }
    let Some(listen) = listen else {
        return Ok(None);
    };
    match (cert, key, review) {
        (Some(cert), Some(key), Some(review)) => Ok(Some(Args {
            listen,
            cert,
            key,
            review,
        })),
        _ => bail!("{USAGE}"),
    }
}

fn tls_config(args: &Args) -> anyhow::Result<rustls::ServerConfig> {
    let certs = CertificateDer::pem_file_iter(&args.cert)
        .and_then(|it| it.collect::<Result<Vec<_>, _>>())
        .with_context(|| format!("{}: not a PEM certificate chain", args.cert.display()))?;
    let key = PrivateKeyDer::from_pem_file(&args.key)
        .with_context(|| format!("{}: not a PEM private key", args.key.display()))?;
    let mut config = rustls::ServerConfig::builder()
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .context("certificate and key")?;
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(config)
}

/// The webhook's answer to the review, with the built-in policy: the bytes this server sends every time.
fn canned_response(args: &Args) -> anyhow::Result<Bytes> {
    let review = std::fs::read(&args.review)
        .with_context(|| format!("{}: cannot read", args.review.display()))?;
    let policy = lb_l7_core::policy::Policy::default().compile();
    let reviewed = lb_l7_core::admission::review(&policy, &review)
        .map_err(|e| anyhow::anyhow!("{}: {e}", args.review.display()))?;
    Ok(Bytes::from(serde_json::to_vec(&reviewed.response)?))
}

async fn serve(args: Args) -> anyhow::Result<()> {
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(tls_config(&args)?));
    let canned = canned_response(&args)?;
    let listener = TcpListener::bind(args.listen)
        .await
        .with_context(|| format!("binding {}", args.listen))?;
    eprintln!(
        "baseline_server: listening on {}, answering {} bytes",
        args.listen,
        canned.len()
    );
    let builder = Arc::new(auto::Builder::new(TokioExecutor::new()));
    loop {
        let Ok((tcp, _)) = listener.accept().await else {
            continue;
        };
        let _ = tcp.set_nodelay(true);
        let (acceptor, builder, canned) = (acceptor.clone(), builder.clone(), canned.clone());
        tokio::spawn(async move {
            let Ok(tls) = acceptor.accept(tcp).await else {
                return;
            };
            let service = hyper::service::service_fn(move |req: Request<Incoming>| {
                let canned = canned.clone();
                async move {
                    // Read the body as the webhook does, but do nothing with it.
                    let _ = req.into_body().collect().await;
                    Ok::<_, Infallible>(
                        Response::builder()
                            .header("content-type", "application/json")
                            .body(Full::new(canned))
                            .unwrap_or_default(),
                    )
                }
            });
            let _ = builder.serve_connection(TokioIo::new(tls), service).await;
        });
    }
}

fn main() -> ExitCode {
    let args = match parse_args() {
        Ok(Some(args)) => args,
        Ok(None) => {
            println!(
                "baseline_server: nothing to measure here; it is started by benches/load.sh\n{USAGE}"
            );
            return ExitCode::SUCCESS;
        }
        Err(e) => {
            eprintln!("error: {e:#}");
            return ExitCode::from(2);
        }
    };
    let _ = rustls::crypto::ring::default_provider().install_default();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::from(1);
        }
    };
    match runtime.block_on(serve(args)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::from(2)
        }
    }
}
