//! `demo-server`: the `protos.Goapp` service, answering with the name of the pod that served each call.
//!
//! Also serves `grpc.health.v1.Health` (Kubernetes' native gRPC probes: `grpc: {port: 50051}`) and server reflection
//! (v1 and v1alpha, so `grpcurl -plaintext HOST:50051 list` works). On shutdown it first reports NOT_SERVING, stops
//! accepting, sends HTTP/2 GOAWAY and waits for in-flight calls, at most `--drain-timeout`.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicI32, Ordering};
use std::time::Duration;

use tokio::net::TcpListener;
use tonic::transport::Server;
use tonic::transport::server::TcpIncoming;
use tonic::{Request, Response, Status};
use tracing::{debug, info, warn};

use super::pb::goapp_server::{Goapp, GoappServer};
use super::pb::{NewUser, User};

/// Command line of `demo-server`.
#[derive(Debug, Clone, clap::Parser)]
#[command(
    name = "demo-server",
    version,
    about = "gRPC demo server for lb-l7-webhook: answers protos.Goapp/CreateNewUser with the name of the pod that \
             served the call, so demo-client can see how calls spread over pods.",
    after_help = "Also serves grpc.health.v1.Health (for Kubernetes' native gRPC probes) and server reflection \
                  (grpcurl -plaintext 127.0.0.1:50051 list).\n\nOn SIGTERM or Ctrl-C: reports NOT_SERVING, stops \
                  accepting, lets in-flight calls finish (at most --drain-timeout) and exits 0.\n\nExit status: 0 \
                  after a clean shutdown; 1 when the server cannot start (e.g. the address is in use) or fails."
)]
pub struct ServerArgs {
    /// Address to listen on.
    #[arg(long, env = "LB_L7_DEMO_LISTEN", default_value = "0.0.0.0:50051")]
    pub listen: SocketAddr,

    /// Name this server reports as the backend of each call. Defaults to POD_NAME (set it from the downward API),
    /// else the hostname.
    #[arg(long, env = "POD_NAME")]
    pub name: Option<String>,

    /// On shutdown, how long in-flight calls may take before the server exits anyway.
    #[arg(long, env = "LB_L7_DEMO_DRAIN_TIMEOUT", default_value = "10s", value_parser = humantime::parse_duration)]
    pub drain_timeout: Duration,

    /// Log level for this program (`debug` logs every call), or a full tracing EnvFilter (e.g. `info,h2=debug`).
    #[arg(long, env = "LB_L7_DEMO_LOG", default_value = "info")]
    pub log: String,
}

/// Why the demo server could not start or stopped with an error.
#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        addr: SocketAddr,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot read the embedded proto descriptors for reflection: {0}")]
    Reflection(#[from] tonic_reflection::server::Error),
    #[error("gRPC server failed: {0}")]
    Transport(#[from] tonic::transport::Error),
}

/// The name this server reports: the given name (from `--name` or POD_NAME), else the hostname, else `unknown`.
pub fn identity(name: Option<&str>) -> String {
    if let Some(name) = name.map(str::trim).filter(|n| !n.is_empty()) {
        return name.to_string();
    }
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .or_else(|| std::env::var("HOSTNAME").ok())
        .map(|h| h.trim().to_string())
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "unknown".to_string())
}

/// The `protos.Goapp` service.
#[derive(Debug)]
pub struct GoappService {
    backend: String,
    next_id: AtomicI32,
}

impl GoappService {
    pub fn new(backend: impl Into<String>) -> Self {
        Self {
            backend: backend.into(),
            next_id: AtomicI32::new(1),
        }
    }
}

#[tonic::async_trait]
impl Goapp for GoappService {
    async fn create_new_user(&self, request: Request<NewUser>) -> Result<Response<User>, Status> {
        let peer = request.remote_addr();
        let NewUser { name, age } = request.into_inner();
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        debug!(backend = %self.backend, peer = ?peer, %name, age, id, "CreateNewUser");
        Ok(Response::new(User {
            name,
            age,
            id,
            backend: self.backend.clone(),
        }))
    }
}

/// Binds `addr` (use port 0 for an ephemeral port; [`TcpListener::local_addr`] tells which).
pub async fn bind(addr: SocketAddr) -> Result<TcpListener, ServerError> {
    TcpListener::bind(addr)
        .await
        .map_err(|source| ServerError::Bind { addr, source })
}

/// Serves Goapp, health and reflection on `listener` until `shutdown` resolves, then drains for at most
/// `drain_timeout`.
pub async fn serve(
    listener: TcpListener,
    backend: String,
    drain_timeout: Duration,
    shutdown: impl Future<Output = ()> + Send,
) -> Result<(), ServerError> {
    let local = listener
        .local_addr()
        .map(|a| a.to_string())
        .unwrap_or_default();
    let (health, health_service) = tonic_health::server::health_reporter();
    health.set_serving::<GoappServer<GoappService>>().await;

    let reflection_v1 = tonic_reflection::server::Builder::configure()
        .register_encoded_file_descriptor_set(super::pb::FILE_DESCRIPTOR_SET)
        .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
        .build_v1()?;
    let reflection_v1alpha = tonic_reflection::server::Builder::configure()
        .register_encoded_file_descriptor_set(super::pb::FILE_DESCRIPTOR_SET)
        .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
        .build_v1alpha()?;

    let (drain_tx, drain_rx) = tokio::sync::oneshot::channel::<()>();
    let reporter = health.clone();
    let signal = async move {
        shutdown.await;
        info!("shutting down: NOT_SERVING, draining in-flight calls");
        reporter
            .set_service_status("", tonic_health::ServingStatus::NotServing)
            .await;
        reporter
            .set_not_serving::<GoappServer<GoappService>>()
            .await;
        let _ = drain_tx.send(());
    };

    info!(listen = %local, %backend, "demo-server listening");
    let server = Server::builder()
        .add_service(health_service)
        .add_service(reflection_v1)
        .add_service(reflection_v1alpha)
        .add_service(GoappServer::new(GoappService::new(backend)))
        .serve_with_incoming_shutdown(TcpIncoming::from(listener).with_nodelay(Some(true)), signal);
    tokio::pin!(server);

    tokio::select! {
        result = &mut server => result?,
        () = async {
            if drain_rx.await.is_ok() {
                tokio::time::sleep(drain_timeout).await;
            } else {
                std::future::pending::<()>().await;
            }
        } => {
            warn!(?drain_timeout, "drain timeout reached with connections still open; exiting anyway");
        }
    }
    info!("demo-server stopped");
    Ok(())
}

/// Resolves on SIGTERM (Kubernetes stopping the pod) or Ctrl-C.
pub async fn termination_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        match signal(SignalKind::terminate()) {
            Ok(mut term) => {
                tokio::select! {
                    _ = term.recv() => info!("SIGTERM received"),
                    _ = tokio::signal::ctrl_c() => info!("Ctrl-C received"),
                }
            }
            Err(error) => {
                warn!(%error, "cannot listen for SIGTERM; only Ctrl-C stops the server");
                let _ = tokio::signal::ctrl_c().await;
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
}

/// What `demo-server` does: bind, serve until SIGTERM/Ctrl-C, drain.
pub async fn run(args: &ServerArgs) -> Result<(), ServerError> {
    let listener = bind(args.listen).await?;
    let backend = identity(args.name.as_deref());
    serve(listener, backend, args.drain_timeout, termination_signal()).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn identity_prefers_the_given_name() {
        assert_eq!(identity(Some("goappserver-abc")), "goappserver-abc");
        assert_eq!(identity(Some("  pod-1 \n")), "pod-1");
        // Empty falls back to the hostname: never empty.
        assert!(!identity(Some("")).is_empty());
        assert!(!identity(None).is_empty());
    }

    #[tokio::test]
    async fn answers_with_its_backend_name() {
        let service = GoappService::new("pod-a");
        let first = service
            .create_new_user(Request::new(NewUser {
                name: "ada".into(),
                age: 36,
            }))
            .await
            .map(Response::into_inner);
        let second = service
            .create_new_user(Request::new(NewUser::default()))
            .await
            .map(Response::into_inner);
        assert_eq!(
            first.ok(),
            Some(User {
                name: "ada".into(),
                age: 36,
                id: 1,
                backend: "pod-a".into()
            })
        );
        assert_eq!(second.map(|u| u.id).ok(), Some(2));
    }
}
