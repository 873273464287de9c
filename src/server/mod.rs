//! `lb-l7-webhook serve`: the HTTPS admission webhook, its probe port, and graceful shutdown.
//!
//! The TLS port runs its own accept loop over hyper-util's auto (HTTP/1.1 + HTTP/2) connection builder, so every
//! limit is ours to set: TLS handshake timeout, header-read timeout (slow-loris), body timeout, and a bounded
//! drain on SIGTERM. Probes and metrics are on a separate plain-HTTP port.

pub mod http;
pub mod metrics;
pub mod selfcert;
pub mod tls;
// serve --cert-secret and TLS handshake failures.
pub mod certmanager;
pub mod handshake;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use anyhow::Context as _;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use hyper_util::server::graceful::GracefulShutdown;
use hyper_util::service::TowerToHyperService;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpListener;
use tokio::sync::watch;

use http::AppState;
use lb_l7_core::policy::Policy;
use metrics::Metrics;
use tls::{CertStore, TlsFiles};

/// `serve`'s flags. Every flag also reads an `LB_L7_*` environment variable.
#[derive(clap::Args, Debug, Clone)]
pub struct ServeArgs {
    /// Address of the HTTPS webhook listener.
    #[arg(long, env = "LB_L7_LISTEN", default_value = "0.0.0.0:8443")]
    pub listen: SocketAddr,

    /// Address of the plain-HTTP listener for /healthz, /readyz and /metrics.
    #[arg(long, env = "LB_L7_PROBE_LISTEN", default_value = "0.0.0.0:8080")]
    pub probe_listen: SocketAddr,

    /// Policy file (YAML). Without it, the built-in default: namespace opt-in, enforce, gRPC ports.
    #[arg(long, env = "LB_L7_POLICY")]
    pub policy: Option<PathBuf>,

    /// PEM certificate chain to serve. With neither --tls-cert nor --tls-key (nor --cert-secret),
    /// `certs/dev/tls.crt` is used, and generated (with a CA beside it) when it does not exist.
    #[arg(long, env = "LB_L7_TLS_CERT", requires = "tls_key")]
    pub tls_cert: Option<PathBuf>,

    /// PEM private key of --tls-cert.
    #[arg(long, env = "LB_L7_TLS_KEY", requires = "tls_cert")]
    pub tls_key: Option<PathBuf>,

    /// Directory for the generated development certificates (not `certs/`, where the `certs` command writes the
    /// cluster's).
    #[arg(long, env = "LB_L7_CERTS_DIR", default_value = "certs/dev")]
    pub certs_dir: PathBuf,

    /// How often the certificate files are re-read (rotation without a restart).
    #[arg(long, env = "LB_L7_CERT_RELOAD_INTERVAL", default_value = "2s", value_parser = humantime::parse_duration)]
    pub cert_reload_interval: Duration,

    /// Longest time a client may take for the TLS handshake, for request headers, and for a request body.
    #[arg(long, env = "LB_L7_CLIENT_TIMEOUT", default_value = "10s", value_parser = humantime::parse_duration)]
    pub client_timeout: Duration,

    /// On SIGTERM, how long requests in flight may take to finish before the process exits anyway.
    #[arg(long, env = "LB_L7_DRAIN_TIMEOUT", default_value = "20s", value_parser = humantime::parse_duration)]
    pub drain_timeout: Duration,

    /// Self-managed certificates: keep a CA and the serving certificate in this Secret (NAMESPACE/NAME; created,
    /// or filled in when it exists without them), serve them from memory, and keep the caBundle of every webhook
    /// of --webhook-configuration equal to the CA(s). Needs the kubeconfig or the in-cluster config.
    #[arg(long, env = "LB_L7_CERT_SECRET", value_name = "NAMESPACE/NAME", requires = "webhook_configuration",
          conflicts_with_all = ["tls_cert", "tls_key"], value_parser = lb_l7_core::render::parse_namespaced)]
    pub cert_secret: Option<(String, String)>,

    /// With --cert-secret: the MutatingWebhookConfiguration whose caBundle serve keeps.
    #[arg(long, env = "LB_L7_WEBHOOK_CONFIGURATION", requires = "cert_secret")]
    pub webhook_configuration: Option<String>,

    /// With --cert-secret: the webhook's Service (NAMESPACE/NAME); the certificate is for NAME, NAME.NAMESPACE,
    /// NAME.NAMESPACE.svc and NAME.NAMESPACE.svc.cluster.local. Default: lb-l7-webhook in the Secret's namespace.
    #[arg(long, env = "LB_L7_SERVICE", value_name = "NAMESPACE/NAME", value_parser = lb_l7_core::render::parse_namespaced)]
    pub service: Option<(String, String)>,

    /// With --cert-secret: one more DNS name or IP address for the serving certificate (repeat for more).
    #[arg(
        long = "san",
        env = "LB_L7_SANS",
        value_delimiter = ',',
        value_name = "NAME_OR_IP"
    )]
    pub sans: Vec<String>,

    /// With --cert-secret: lifetime of a new CA (renewed at two thirds, with an overlap in caBundle).
    #[arg(long, env = "LB_L7_CA_VALIDITY", default_value = "10years", value_parser = parse_validity)]
    pub ca_validity: Duration,

    /// With --cert-secret: lifetime of a serving certificate (renewed at two thirds).
    #[arg(long, env = "LB_L7_CERT_VALIDITY", default_value = "1year", value_parser = parse_validity)]
    pub cert_validity: Duration,

    /// `--reconcile` and the reconciler's flags.
    #[command(flatten)]
    pub reconcile: crate::reconcile::ServeReconcileArgs,
}

/// A humantime duration of at least one minute.
fn parse_validity(s: &str) -> Result<Duration, String> {
    let d = humantime::parse_duration(s).map_err(|e| e.to_string())?;
    if d < Duration::from_secs(60) {
        return Err(format!("{s} is shorter than one minute"));
    }
    Ok(d)
}

/// Where the serving certificate comes from.
#[derive(Debug, Clone)]
pub enum TlsSource {
    /// PEM files, re-read every --cert-reload-interval.
    Files(TlsFiles),
    /// `--cert-secret`: a Secret this process keeps, served from memory.
    Secret(Box<selfcert::Settings>),
}

impl From<TlsFiles> for TlsSource {
    fn from(files: TlsFiles) -> Self {
        TlsSource::Files(files)
    }
}

impl ServeArgs {
    /// The settings of `--cert-secret`, when given.
    pub fn self_managed(&self) -> Option<selfcert::Settings> {
        let (ns, name) = self.cert_secret.clone()?;
        let (svc_ns, svc) = self
            .service
            .clone()
            .unwrap_or_else(|| (ns.clone(), "lb-l7-webhook".to_string()));
        let mut sans = crate::certs::service_dns_names(&svc, &svc_ns);
        for san in &self.sans {
            let san = san.trim();
            if !san.is_empty() && !sans.iter().any(|s| s == san) {
                sans.push(san.to_string());
            }
        }
        Some(selfcert::Settings {
            secret_namespace: ns,
            secret_name: name,
            webhook_configuration: self.webhook_configuration.clone().unwrap_or_default(),
            sans,
            ca_validity: self.ca_validity,
            cert_validity: self.cert_validity,
        })
    }
}

/// Everything a running server needs, resolved from flags.
#[derive(Debug, Clone)]
pub struct ServerConfig {
    pub listen: SocketAddr,
    pub probe_listen: SocketAddr,
    pub policy: Policy,
    pub tls: TlsSource,
    pub cert_reload_interval: Duration,
    pub client_timeout: Duration,
    pub drain_timeout: Duration,
}

impl ServerConfig {
    /// Resolves flags: reads the policy and, on a first run without certificates, generates them.
    pub fn from_args(args: &ServeArgs) -> anyhow::Result<Self> {
        let policy = crate::input::load_policy(args.policy.as_deref())?;
        let tls = match (&args.tls_cert, &args.tls_key, args.self_managed()) {
            (_, _, Some(settings)) => TlsSource::Secret(Box::new(settings)),
            (Some(cert), Some(key), None) => TlsSource::Files(TlsFiles {
                cert: cert.clone(),
                key: key.clone(),
            }),
            _ => {
                let (paths, generated) = crate::certs::ensure_dev_certs(&args.certs_dir)
                    .context("generating development certificates")?;
                if generated {
                    tracing::info!(
                        ca = %paths.ca_crt.display(),
                        cert = %paths.tls_crt.display(),
                        "generated a development CA and a serving certificate for localhost, 127.0.0.1 and ::1; \
                         trust the CA to call the webhook (curl --cacert {})",
                        paths.ca_crt.display()
                    );
                } else {
                    tracing::info!(cert = %paths.tls_crt.display(), ca = %paths.ca_crt.display(), "using existing certificates");
                }
                TlsSource::Files(TlsFiles {
                    cert: paths.tls_crt,
                    key: paths.tls_key,
                })
            }
        };
        Ok(ServerConfig {
            listen: args.listen,
            probe_listen: args.probe_listen,
            policy,
            tls,
            cert_reload_interval: args.cert_reload_interval,
            client_timeout: args.client_timeout,
            drain_timeout: args.drain_timeout,
        })
    }
}

/// A bound, not yet serving, webhook: the listeners are open, so the addresses are known (tests bind port 0).
pub struct Server {
    config: ServerConfig,
    listener: TcpListener,
    probe_listener: TcpListener,
    state: Arc<AppState>,
    certs: Arc<CertStore>,
    cert_manager: Option<certmanager::CertManager>,
}

impl Server {
    /// Loads the certificate and binds both listeners. Errors name what failed. With `--cert-secret`, the
    /// Kubernetes client comes from the kubeconfig or the in-cluster config.
    pub async fn bind(config: ServerConfig) -> anyhow::Result<Self> {
        Self::bind_with_client(config, None).await
    }

    /// Like [`Server::bind`], with this Kubernetes client for `--cert-secret` (tests pass a mock).
    pub async fn bind_with_client(
        config: ServerConfig,
        client: Option<kube::Client>,
    ) -> anyhow::Result<Self> {
        let metrics = Metrics::new();
        let cert_ready = Arc::new(AtomicBool::new(true));
        let (certs, cert_manager) = match &config.tls {
            TlsSource::Files(files) => (
                CertStore::load(files.clone(), metrics.clone())
                    .context("loading the serving certificate")?,
                None,
            ),
            TlsSource::Secret(settings) => {
                let client = match client {
                    Some(c) => c,
                    None => kube::Client::try_default().await.context(
                        "--cert-secret needs the Kubernetes API: no kubeconfig or in-cluster config",
                    )?,
                };
                let store = CertStore::in_memory(
                    &format!(
                        "Secret {}/{}",
                        settings.secret_namespace, settings.secret_name
                    ),
                    metrics.clone(),
                );
                cert_ready.store(false, Ordering::Relaxed);
                let manager = certmanager::CertManager::new(
                    client,
                    (**settings).clone(),
                    store.clone(),
                    metrics.clone(),
                    cert_ready.clone(),
                );
                (store, Some(manager))
            }
        };
        let listener = TcpListener::bind(config.listen)
            .await
            .with_context(|| format!("binding the webhook listener {}", config.listen))?;
        let probe_listener = TcpListener::bind(config.probe_listen)
            .await
            .with_context(|| format!("binding the probe listener {}", config.probe_listen))?;
        let state = Arc::new(AppState {
            policy: config.policy.compile(),
            metrics,
            ready: true.into(),
            body_timeout: config.client_timeout,
            cert_ready,
        });
        Ok(Server {
            config,
            listener,
            probe_listener,
            state,
            certs,
            cert_manager,
        })
    }

    pub fn local_addr(&self) -> std::io::Result<SocketAddr> {
        self.listener.local_addr()
    }

    pub fn probe_addr(&self) -> std::io::Result<SocketAddr> {
        self.probe_listener.local_addr()
    }

    pub fn metrics(&self) -> Arc<Metrics> {
        self.state.metrics.clone()
    }

    /// Serves until `shutdown` resolves, then stops accepting, lets requests in flight finish (at most the drain
    /// timeout) and returns.
    pub async fn serve(self, shutdown: impl Future<Output = ()>) -> anyhow::Result<()> {
        let Server {
            config,
            listener,
            probe_listener,
            state,
            certs,
            cert_manager,
        } = self;
        let (stop_tx, stop_rx) = watch::channel(false);
        let cert_manager = cert_manager.map(|m| tokio::spawn(m.run(stop_rx.clone())));
        let handshakes = Arc::new(handshake::HandshakeLog::default());

        let reloader = tokio::spawn(
            certs
                .clone()
                .watch(config.cert_reload_interval, stop_rx.clone()),
        );
        let probe_app = http::probe_router(state.clone());
        let mut probe_stop = stop_rx.clone();
        let probe = tokio::spawn(async move {
            let _ = axum::serve(probe_listener, probe_app)
                .with_graceful_shutdown(async move {
                    let _ = probe_stop.changed().await;
                })
                .await;
        });

        let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(certs.server_config()));
        let app = http::webhook_router(state.clone());
        let graceful = GracefulShutdown::new();
        let mut builder = auto::Builder::new(TokioExecutor::new());
        builder
            .http1()
            .timer(TokioTimer::new())
            .header_read_timeout(config.client_timeout)
            .keep_alive(true);
        builder
            .http2()
            .timer(TokioTimer::new())
            .keep_alive_interval(Some(Duration::from_secs(30)))
            .keep_alive_timeout(Duration::from_secs(20))
            .max_concurrent_streams(256);
        let builder = Arc::new(builder);
        tracing::info!(
            listen = %listener.local_addr().map(|a| a.to_string()).unwrap_or_default(),
            probe = %config.probe_listen,
            scope = ?config.policy.scope,
            mode = ?config.policy.mode,
            rules = config.policy.rules.len(),
            "lb-l7-webhook serving"
        );

        tokio::pin!(shutdown);
        loop {
            let (tcp, peer) = tokio::select! {
                () = &mut shutdown => break,
                accepted = listener.accept() => match accepted {
                    Ok(a) => a,
                    Err(e) => {
                        // Out of file descriptors and the like: back off briefly rather than spin.
                        tracing::warn!(error = %e, "accept failed");
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        continue;
                    }
                },
            };
            let _ = tcp.set_nodelay(true);
            let acceptor = acceptor.clone();
            let service = TowerToHyperService::new(app.clone());
            let builder = builder.clone();
            let watcher = graceful.watcher();
            let handshake_timeout = config.client_timeout;
            let (handshakes, metrics) = (handshakes.clone(), state.metrics.clone());
            tokio::spawn(async move {
                let tls = match tokio::time::timeout(handshake_timeout, acceptor.accept(tcp)).await
                {
                    Ok(Ok(tls)) => tls,
                    Ok(Err(e)) => {
                        let (reason, what) = handshake::classify(&e);
                        handshakes.failed(&metrics, peer, reason, &what);
                        return;
                    }
                    Err(_) => {
                        handshakes.timed_out(&metrics, peer);
                        return;
                    }
                };
                // A client that completes TLS and then sends nothing would wait in protocol detection (or the
                // HTTP/2 preface) forever: give it the same client timeout to send its first bytes.
                let seen = Arc::new(AtomicBool::new(false));
                let io = FirstBytes {
                    inner: tls,
                    seen: seen.clone(),
                };
                let conn = watcher.watch(
                    builder
                        .serve_connection(TokioIo::new(io), service)
                        .into_owned(),
                );
                tokio::pin!(conn);
                let result = tokio::select! {
                    r = &mut conn => r,
                    () = tokio::time::sleep(handshake_timeout) => {
                        if !seen.load(Ordering::Relaxed) {
                            tracing::debug!(%peer, "client sent nothing after the TLS handshake; closing");
                            return;
                        }
                        conn.await
                    }
                };
                if let Err(e) = result {
                    tracing::debug!(%peer, error = %e, "connection ended with an error");
                }
            });
        }

        // Stop accepting: new connections are refused from here on.
        drop(listener);
        state.ready.store(false, Ordering::Relaxed);
        tracing::info!(drain_timeout = ?config.drain_timeout, "shutting down: finishing requests in flight");
        let drained = tokio::time::timeout(config.drain_timeout, graceful.shutdown()).await;
        if drained.is_err() {
            tracing::warn!("drain timeout reached; closing the remaining connections");
        }
        let _ = stop_tx.send(true);
        let _ = reloader.await;
        if let Some(m) = cert_manager {
            let _ = m.await;
        }
        let _ = probe.await;
        tracing::info!("stopped");
        Ok(())
    }
}

/// Passes reads and writes through, and notes when the first bytes arrive.
struct FirstBytes<T> {
    inner: T,
    seen: Arc<AtomicBool>,
}

impl<T: AsyncRead + Unpin> AsyncRead for FirstBytes<T> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let before = buf.filled().len();
        let polled = Pin::new(&mut self.inner).poll_read(cx, buf);
        if buf.filled().len() > before {
            self.seen.store(true, Ordering::Relaxed);
        }
        polled
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for FirstBytes<T> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

/// Resolves when the process receives SIGTERM or SIGINT (Ctrl-C).
pub async fn shutdown_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        match signal(SignalKind::terminate()) {
            Ok(mut term) => {
                tokio::select! {
                    _ = term.recv() => tracing::info!("SIGTERM received"),
                    _ = tokio::signal::ctrl_c() => tracing::info!("SIGINT received"),
                }
            }
            Err(_) => {
                let _ = tokio::signal::ctrl_c().await;
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
}

/// `lb-l7-webhook serve`.
pub async fn run(args: ServeArgs) -> anyhow::Result<()> {
    let config = ServerConfig::from_args(&args)?;
    let server = Server::bind(config).await?;
    let _reconciler = crate::reconcile::spawn_in_server(
        &args.reconcile,
        args.policy.as_deref(),
        &server.metrics(),
    )
    .await?;
    server.serve(shutdown_signal()).await
}
