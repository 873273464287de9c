//! The demo apps over real gRPC on 127.0.0.1: what a cluster admin checks, without a cluster.
//!
//! Servers run in this process on ephemeral loopback ports; the client is the real `demo-client` binary, so its
//! output and exit status are tested as users see them.

use std::net::SocketAddr;
use std::process::{ExitStatus, Stdio};
use std::time::Duration;

use lb_l7_demo::pb::NewUser;
use lb_l7_demo::pb::goapp_client::GoappClient;
use lb_l7_demo::server;
use serde_json::Value;
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::net::TcpListener;
use tokio::process::Command;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;
use tokio::time::timeout;
use tonic::transport::{Channel, Endpoint};

/// Every test step is bounded by this: a hang is a failure, not a stuck CI.
const BOUND: Duration = Duration::from_secs(30);

struct DemoServer {
    addr: SocketAddr,
    stop: Option<oneshot::Sender<()>>,
    task: JoinHandle<Result<(), server::ServerError>>,
}

impl DemoServer {
    async fn start(name: &str) -> Self {
        let listener = match server::bind(SocketAddr::from(([127, 0, 0, 1], 0))).await {
            Ok(l) => l,
            Err(e) => panic!("bind 127.0.0.1:0: {e}"),
        };
        let addr = match listener.local_addr() {
            Ok(a) => a,
            Err(e) => panic!("local_addr: {e}"),
        };
        let (stop, stopped) = oneshot::channel::<()>();
        let task = tokio::spawn(server::serve(
            listener,
            name.to_string(),
            Duration::from_secs(5),
            async {
                let _ = stopped.await;
            },
        ));
        Self {
            addr,
            stop: Some(stop),
            task,
        }
    }

    fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    async fn shutdown(mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        match timeout(BOUND, &mut self.task).await {
            Ok(Ok(Ok(()))) => {}
            other => panic!("server did not stop cleanly: {other:?}"),
        }
    }
}

async fn three_servers() -> [DemoServer; 3] {
    [
        DemoServer::start("pod-a").await,
        DemoServer::start("pod-b").await,
        DemoServer::start("pod-c").await,
    ]
}

struct Run {
    status: ExitStatus,
    stdout: String,
    stderr: String,
}

impl Run {
    fn json(&self) -> Value {
        serde_json::from_str(&self.stdout).unwrap_or_else(|e| {
            panic!(
                "stdout is not JSON ({e}):\n{}\nstderr:\n{}",
                self.stdout, self.stderr
            )
        })
    }

    fn code(&self) -> Option<i32> {
        self.status.code()
    }
}

/// Runs the real `demo-client` binary with `args`.
async fn demo_client(args: &[&str]) -> Run {
    let mut command = Command::new(env!("CARGO_BIN_EXE_demo-client"));
    command
        .args(args)
        .arg("--no-live")
        .stdin(Stdio::null())
        .kill_on_drop(true);
    let output = match timeout(BOUND, command.output()).await {
        Ok(Ok(output)) => output,
        Ok(Err(e)) => panic!("cannot run demo-client: {e}"),
        Err(_) => panic!("demo-client did not finish within {BOUND:?}: {args:?}"),
    };
    Run {
        status: output.status,
        stdout: String::from_utf8_lossy(&output.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
    }
}

/// One channel to `url` (plain h2c over loopback).
async fn connect(url: &str) -> Channel {
    let endpoint = match Endpoint::from_shared(url.to_string()) {
        Ok(e) => e,
        Err(e) => panic!("bad url {url}: {e}"),
    };
    match timeout(BOUND, endpoint.connect()).await {
        Ok(Ok(c)) => c,
        other => panic!("connect {url}: {other:?}"),
    }
}

fn backend_names(report: &Value) -> Vec<String> {
    report["backends"]
        .as_array()
        .map(|backends| {
            backends
                .iter()
                .filter_map(|b| b["name"].as_str().map(str::to_string))
                .collect()
        })
        .unwrap_or_default()
}

#[tokio::test]
async fn one_connection_to_one_of_three_servers_is_pinned() {
    let servers = three_servers().await;
    let target = servers[1].url();
    let run = demo_client(&[
        "--target",
        &target,
        "--requests",
        "60",
        "--concurrency",
        "4",
        "--expect",
        "pinned",
        "-o",
        "json",
    ])
    .await;
    assert_eq!(
        run.code(),
        Some(0),
        "stdout:\n{}\nstderr:\n{}",
        run.stdout,
        run.stderr
    );
    let report = run.json();
    assert_eq!(report["verdict"], "pinned");
    assert_eq!(report["mode"], "one-connection");
    assert_eq!(report["ok"], 60);
    assert_eq!(report["failed"], 0);
    assert_eq!(backend_names(&report), vec!["pod-b"]);
    assert_eq!(report["backends"][0]["share"], 1.0);

    // The same run as a Job that expects L7 balancing fails, and says why.
    let run = demo_client(&[
        "--target",
        &target,
        "--requests",
        "30",
        "--expect",
        "balanced",
        "--expect-backends",
        "3",
    ])
    .await;
    assert_eq!(
        run.code(),
        Some(1),
        "stdout:\n{}\nstderr:\n{}",
        run.stdout,
        run.stderr
    );
    assert!(run.stdout.contains("verdict: pinned"), "{}", run.stdout);
    assert!(
        run.stdout
            .contains("expected verdict `balanced`, got `pinned`"),
        "{}",
        run.stdout
    );
    assert!(
        run.stdout.contains("expected at least 3 backends, saw 1"),
        "{}",
        run.stdout
    );

    for s in servers {
        s.shutdown().await;
    }
}

#[tokio::test]
async fn calls_spread_over_three_servers_are_balanced() {
    let servers = three_servers().await;
    let targets = servers
        .iter()
        .map(DemoServer::url)
        .collect::<Vec<_>>()
        .join(",");
    let run = demo_client(&[
        "--target",
        &targets,
        "--requests",
        "300",
        "--concurrency",
        "8",
        "--expect",
        "balanced",
        "--expect-backends",
        "3",
        "-o",
        "json",
    ])
    .await;
    assert_eq!(
        run.code(),
        Some(0),
        "stdout:\n{}\nstderr:\n{}",
        run.stdout,
        run.stderr
    );
    let report = run.json();
    assert_eq!(report["verdict"], "balanced");
    assert_eq!(report["mode"], "client-side-balanced");
    assert_eq!(report["ok"], 300);
    assert_eq!(backend_names(&report), vec!["pod-a", "pod-b", "pod-c"]);
    assert_eq!(report["judgement"]["backends"], 3);
    assert_eq!(report["expectation"]["met"], true);
    let calls: u64 = report["backends"]
        .as_array()
        .map(|b| b.iter().filter_map(|b| b["calls"].as_u64()).sum())
        .unwrap_or(0);
    assert_eq!(calls, 300);

    // The text summary shows the same spread as a table.
    let run = demo_client(&["--target", &targets, "--requests", "150"]).await;
    assert_eq!(run.code(), Some(0), "stderr:\n{}", run.stderr);
    for header in ["BACKEND", "CALLS", "SHARE", "P50", "P99"] {
        assert!(run.stdout.contains(header), "{}", run.stdout);
    }
    for name in ["pod-a", "pod-b", "pod-c"] {
        assert!(run.stdout.contains(name), "{}", run.stdout);
    }
    assert!(run.stdout.contains("verdict: balanced"), "{}", run.stdout);

    for s in servers {
        s.shutdown().await;
    }
}

#[tokio::test]
async fn replies_keep_the_old_fields_and_name_the_backend() {
    let server = DemoServer::start("pod-x").await;
    let mut client = match timeout(BOUND, GoappClient::connect(server.url())).await {
        Ok(Ok(c)) => c,
        other => panic!("connect: {other:?}"),
    };
    let user = match timeout(
        BOUND,
        client.create_new_user(NewUser {
            name: "ada".into(),
            age: 36,
        }),
    )
    .await
    {
        Ok(Ok(r)) => r.into_inner(),
        other => panic!("call: {other:?}"),
    };
    assert_eq!(user.name, "ada");
    assert_eq!(user.age, 36);
    assert!(user.id > 0);
    assert_eq!(user.backend, "pod-x");
    server.shutdown().await;
}

#[tokio::test]
async fn health_answers_serving() {
    use tonic_health::pb::health_check_response::ServingStatus;
    use tonic_health::pb::{HealthCheckRequest, health_client::HealthClient};

    let server = DemoServer::start("pod-h").await;
    let mut health = HealthClient::new(connect(&server.url()).await);
    // "" is the whole server: what Kubernetes' `grpc: {port: 50051}` probe asks.
    for service in ["", "protos.Goapp"] {
        let answer = timeout(
            BOUND,
            health.check(HealthCheckRequest {
                service: service.to_string(),
            }),
        )
        .await;
        match answer {
            Ok(Ok(r)) => assert_eq!(
                r.into_inner().status(),
                ServingStatus::Serving,
                "service {service:?}"
            ),
            other => panic!("health check {service:?}: {other:?}"),
        }
    }
    server.shutdown().await;
}

#[tokio::test]
async fn reflection_lists_and_describes_goapp() {
    use tonic_reflection::pb::v1::server_reflection_client::ServerReflectionClient;
    use tonic_reflection::pb::v1::server_reflection_request::MessageRequest;
    use tonic_reflection::pb::v1::server_reflection_response::MessageResponse;
    use tonic_reflection::pb::v1::{ServerReflectionRequest, ServerReflectionResponse};

    let server = DemoServer::start("pod-r").await;
    let mut reflection = ServerReflectionClient::new(connect(&server.url()).await);

    async fn ask(
        client: &mut ServerReflectionClient<Channel>,
        request: MessageRequest,
    ) -> Option<MessageResponse> {
        let requests = tokio_stream::iter(vec![ServerReflectionRequest {
            host: String::new(),
            message_request: Some(request),
        }]);
        let mut answers = match timeout(BOUND, client.server_reflection_info(requests)).await {
            Ok(Ok(r)) => r.into_inner(),
            other => panic!("reflection: {other:?}"),
        };
        match timeout(BOUND, answers.message()).await {
            Ok(Ok(Some(ServerReflectionResponse {
                message_response, ..
            }))) => message_response,
            other => panic!("reflection answer: {other:?}"),
        }
    }

    // `grpcurl -plaintext 127.0.0.1:PORT list`
    let services = match ask(&mut reflection, MessageRequest::ListServices(String::new())).await {
        Some(MessageResponse::ListServicesResponse(list)) => {
            list.service.into_iter().map(|s| s.name).collect::<Vec<_>>()
        }
        other => panic!("list services: {other:?}"),
    };
    for expected in ["protos.Goapp", "grpc.health.v1.Health"] {
        assert!(services.iter().any(|s| s == expected), "{services:?}");
    }

    // `grpcurl -plaintext 127.0.0.1:PORT describe protos.Goapp`: the descriptor has the new `backend` field.
    match ask(
        &mut reflection,
        MessageRequest::FileContainingSymbol("protos.Goapp".to_string()),
    )
    .await
    {
        Some(MessageResponse::FileDescriptorResponse(files)) => {
            let file = files.file_descriptor_proto.concat();
            let text = String::from_utf8_lossy(&file);
            for needle in ["apps.proto", "Goapp", "CreateNewUser", "backend"] {
                assert!(
                    text.contains(needle),
                    "{needle} missing from the descriptor"
                );
            }
        }
        other => panic!("file containing symbol: {other:?}"),
    }
    server.shutdown().await;
}

#[tokio::test]
async fn unreachable_target_is_a_clear_error_with_exit_3() {
    // A port nothing listens on: bind, note it, close it.
    let port = match TcpListener::bind("127.0.0.1:0").await {
        Ok(l) => match l.local_addr() {
            Ok(a) => a.port(),
            Err(e) => panic!("local_addr: {e}"),
        },
        Err(e) => panic!("bind: {e}"),
    };
    let target = format!("http://127.0.0.1:{port}");
    let run = demo_client(&[
        "--target",
        &target,
        "--connect-timeout",
        "2s",
        "--requests",
        "5",
    ])
    .await;
    assert_eq!(
        run.code(),
        Some(3),
        "stdout:\n{}\nstderr:\n{}",
        run.stdout,
        run.stderr
    );
    assert!(
        run.stderr.contains(&format!("cannot connect to {target}")),
        "{}",
        run.stderr
    );
    assert!(
        run.stdout.is_empty(),
        "no summary without a connection: {}",
        run.stdout
    );
}

#[tokio::test]
async fn server_that_never_answers_times_out_with_exit_3() {
    // Accepts TCP connections and then says nothing, like a hung process behind a Service.
    let listener = match TcpListener::bind("127.0.0.1:0").await {
        Ok(l) => l,
        Err(e) => panic!("bind: {e}"),
    };
    let target = match listener.local_addr() {
        Ok(a) => format!("http://{a}"),
        Err(e) => panic!("local_addr: {e}"),
    };
    let silent = tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((socket, _)) = listener.accept().await {
            held.push(socket);
        }
    });
    let run = demo_client(&[
        "--target",
        &target,
        "--connect-timeout",
        "1s",
        "--call-timeout",
        "300ms",
        "--requests",
        "50",
        "--concurrency",
        "2",
        "-o",
        "json",
    ])
    .await;
    silent.abort();
    assert_eq!(
        run.code(),
        Some(3),
        "stdout:\n{}\nstderr:\n{}",
        run.stdout,
        run.stderr
    );
    assert!(run.stderr.contains("calls failed"), "{}", run.stderr);
    assert!(run.stderr.contains("DeadlineExceeded"), "{}", run.stderr);
    assert!(
        run.stderr.contains("call timeout of 300ms"),
        "{}",
        run.stderr
    );
    // It gives up once every worker has failed and nothing ever worked, instead of waiting out all 50 calls.
    let report = run.json();
    assert_eq!(report["verdict"], "no-calls");
    assert_eq!(report["ok"], 0);
    assert!(
        report["failed"]
            .as_u64()
            .is_some_and(|n| (2..50).contains(&n)),
        "{report}"
    );
}

#[tokio::test]
async fn help_documents_flags_and_exit_codes() {
    let run = demo_client(&["--help"]).await;
    assert_eq!(run.code(), Some(0), "{}", run.stderr);
    for needle in [
        "--target",
        "--requests",
        "--duration",
        "--concurrency",
        "--rate",
        "--connect-timeout",
        "--call-timeout",
        "--expect",
        "--expect-backends",
        "Exit status:",
        "0  the run finished and met",
        "1  the run finished but did not meet",
        "3  nothing to judge",
        "balanced",
        "pinned",
        "skewed",
    ] {
        assert!(
            run.stdout.contains(needle),
            "--help lacks {needle:?}:\n{}",
            run.stdout
        );
    }
    let bad = demo_client(&["--requests", "0"]).await;
    assert_eq!(bad.code(), Some(2), "{}", bad.stderr);
}

#[tokio::test]
async fn server_binary_serves_its_pod_name_and_drains_on_sigterm() {
    let mut child = match Command::new(env!("CARGO_BIN_EXE_demo-server"))
        .args(["--listen", "127.0.0.1:0", "--log", "info"])
        .env("POD_NAME", "goappserver-test-0")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
    {
        Ok(c) => c,
        Err(e) => panic!("cannot start demo-server: {e}"),
    };
    let Some(stderr) = child.stderr.take() else {
        panic!("no stderr pipe");
    };
    let mut lines = BufReader::new(stderr).lines();
    // The "listening" log line names the ephemeral port.
    let addr = timeout(BOUND, async {
        while let Ok(Some(line)) = lines.next_line().await {
            if line.contains("demo-server listening")
                && let Some(at) = line.find("127.0.0.1:")
            {
                let digits: String = line[at + "127.0.0.1:".len()..]
                    .chars()
                    .take_while(char::is_ascii_digit)
                    .collect();
                return Some(format!("http://127.0.0.1:{digits}"));
            }
        }
        None
    })
    .await;
    let Ok(Some(target)) = addr else {
        panic!("demo-server did not log its address: {addr:?}");
    };
    // Keep draining stderr so the child never blocks on a full pipe.
    let drain = tokio::spawn(async move {
        let mut rest = Vec::new();
        while let Ok(Some(line)) = lines.next_line().await {
            rest.push(line);
        }
        rest
    });

    let run = demo_client(&["--target", &target, "--requests", "20", "-o", "json"]).await;
    assert_eq!(run.code(), Some(0), "{}", run.stderr);
    assert_eq!(backend_names(&run.json()), vec!["goappserver-test-0"]);

    let Some(pid) = child.id() else {
        panic!("demo-server exited early");
    };
    let killed = Command::new("kill")
        .args(["-TERM", &pid.to_string()])
        .status()
        .await;
    assert!(killed.is_ok_and(|s| s.success()), "kill -TERM failed");
    let status = match timeout(BOUND, child.wait()).await {
        Ok(Ok(s)) => s,
        other => panic!("demo-server did not stop on SIGTERM: {other:?}"),
    };
    assert_eq!(status.code(), Some(0));
    let rest = match timeout(BOUND, drain).await {
        Ok(Ok(rest)) => rest.join("\n"),
        other => panic!("stderr: {other:?}"),
    };
    assert!(rest.contains("SIGTERM received"), "{rest}");
    assert!(rest.contains("demo-server stopped"), "{rest}");
}
