//! End-to-end against a real API server: `serve` runs on this machine with certificates from `certs`, is
//! registered with `manifests --url https://HOST:PORT/mutate`, and every check goes through the API server.
//!
//! Runs only when `LB_L7_E2E_KUBECONFIG` names a kubeconfig file of a reachable cluster; otherwise it prints
//! one line saying it was skipped, and passes. The API server must be able to reach HOST:PORT on this machine:
//! HOST is 127.0.0.1 unless `LB_L7_E2E_WEBHOOK_HOST` says otherwise (it also goes into the certificate's SANs).
//! See README.md, section "Deploy", for kind and k3d. Everything it creates (namespaces, a Service in
//! kube-system, the webhook configuration) carries the label `lb-l7-webhook-e2e` and is deleted at the end,
//! also when a check fails.

use std::collections::BTreeMap;
use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use k8s_openapi::api::admissionregistration::v1::MutatingWebhookConfiguration;
use k8s_openapi::api::core::v1::{Namespace, Service, ServicePort, ServiceSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::api::{Api, DeleteParams, PostParams};
use kube::config::{KubeConfigOptions, Kubeconfig};
use kube::{Client, Config};

const BIN: &str = env!("CARGO_BIN_EXE_lb-l7-webhook");
const ANNOTATION: &str = "service.cilium.io/lb-l7";
const RUN_LABEL: &str = "lb-l7-webhook-e2e";
/// How long the API server may take to start calling a newly registered (or restarted) webhook.
const SETTLE: Duration = Duration::from_secs(60);

async fn client_from(path: &Path) -> anyhow::Result<Client> {
    let kubeconfig =
        Kubeconfig::read_from(path).map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))?;
    let config = Config::from_custom_kubeconfig(kubeconfig, &KubeConfigOptions::default())
        .await
        .map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))?;
    Ok(Client::try_from(config)?)
}

/// What the test created; deleted on drop (webhook configuration first), even after a failed check.
struct Cleanup {
    kubeconfig: PathBuf,
    run: String,
    webhook_configuration: Option<String>,
    namespaces: Vec<String>,
    kube_system_services: Vec<String>,
    serve: Option<Child>,
}

impl Cleanup {
    fn stop_serve(&mut self) {
        if let Some(mut child) = self.serve.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

impl Drop for Cleanup {
    fn drop(&mut self) {
        self.stop_serve();
        let kubeconfig = self.kubeconfig.clone();
        let webhook = self.webhook_configuration.take();
        let namespaces = std::mem::take(&mut self.namespaces);
        let services = std::mem::take(&mut self.kube_system_services);
        let run = self.run.clone();
        // A thread with its own runtime: Drop cannot await, and the test's runtime may be unwinding.
        let done = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()?;
            rt.block_on(async move {
                let client = client_from(&kubeconfig).await?;
                let dp = DeleteParams::default();
                if let Some(name) = webhook {
                    let api: Api<MutatingWebhookConfiguration> = Api::all(client.clone());
                    if let Err(e) = api.delete(&name, &dp).await {
                        eprintln!("e2e cleanup: MutatingWebhookConfiguration {name}: {e}");
                    }
                }
                let api: Api<Service> = Api::namespaced(client.clone(), "kube-system");
                for name in services {
                    if let Err(e) = api.delete(&name, &dp).await {
                        eprintln!("e2e cleanup: Service kube-system/{name}: {e}");
                    }
                }
                let api: Api<Namespace> = Api::all(client);
                for name in namespaces {
                    if let Err(e) = api.delete(&name, &dp).await {
                        eprintln!("e2e cleanup: Namespace {name}: {e}");
                    }
                }
                anyhow::Ok(())
            })
        });
        match done.join() {
            Ok(Ok(())) => eprintln!("e2e cleanup: deleted what run {run} created"),
            Ok(Err(e)) => {
                eprintln!("e2e cleanup failed (delete objects labelled {RUN_LABEL}={run}): {e:#}")
            }
            Err(_) => eprintln!("e2e cleanup panicked (delete objects labelled {RUN_LABEL}={run})"),
        }
    }
}

fn labels(run: &str, extra: &[(&str, &str)]) -> BTreeMap<String, String> {
    let mut l = BTreeMap::from([(RUN_LABEL.to_string(), run.to_string())]);
    for (k, v) in extra {
        l.insert(k.to_string(), v.to_string());
    }
    l
}

fn service(
    name: &str,
    run: &str,
    port_name: &str,
    port: i32,
    extra_labels: &[(&str, &str)],
) -> Service {
    Service {
        metadata: ObjectMeta {
            name: Some(name.to_string()),
            labels: Some(labels(run, extra_labels)),
            ..Default::default()
        },
        spec: Some(ServiceSpec {
            selector: Some(BTreeMap::from([("app".to_string(), name.to_string())])),
            ports: Some(vec![ServicePort {
                name: Some(port_name.to_string()),
                port,
                ..Default::default()
            }]),
            ..Default::default()
        }),
        ..Default::default()
    }
}

fn grpc_service(name: &str, run: &str) -> Service {
    service(name, run, "grpc", 50051, &[])
}

/// Creates a Service through the API server (optionally dry-run) and returns what it stored (or would store)
/// and the `Warning` headers of the response.
async fn create(
    client: &Client,
    ns: &str,
    svc: &Service,
    dry_run: bool,
) -> anyhow::Result<(Service, Vec<String>)> {
    let pp = PostParams {
        dry_run,
        field_manager: Some("lb-l7-webhook-e2e".into()),
    };
    let req = kube::core::Request::new(format!("/api/v1/namespaces/{ns}/services"))
        .create(&pp, serde_json::to_vec(svc)?)?;
    let (parts, body) = req.into_parts();
    let resp = client
        .send(http::Request::from_parts(
            parts,
            kube::client::Body::from(body),
        ))
        .await?;
    let status = resp.status();
    let warnings = resp
        .headers()
        .get_all("warning")
        .iter()
        .filter_map(|v| v.to_str().ok().map(String::from))
        .collect();
    let bytes = resp.into_body().collect_bytes().await?;
    anyhow::ensure!(
        status.is_success(),
        "creating Service {ns}/{}: HTTP {status}: {}",
        svc.metadata.name.as_deref().unwrap_or("?"),
        String::from_utf8_lossy(&bytes)
    );
    Ok((serde_json::from_slice(&bytes)?, warnings))
}

fn annotation(svc: &Service) -> Option<&str> {
    svc.metadata
        .annotations
        .as_ref()?
        .get(ANNOTATION)
        .map(String::as_str)
}

/// Polls until `check` holds (the API server picks up webhook configurations and endpoints asynchronously).
async fn eventually<F, Fut>(what: &str, mut check: F) -> anyhow::Result<()>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = anyhow::Result<bool>>,
{
    let start = Instant::now();
    let mut last = String::new();
    while start.elapsed() < SETTLE {
        match check().await {
            Ok(true) => return Ok(()),
            Ok(false) => last = "not yet".into(),
            Err(e) => last = format!("{e:#}"),
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    anyhow::bail!("{what}: still not true after {SETTLE:?} ({last})")
}

fn run_bin(args: &[&str]) -> anyhow::Result<std::process::Output> {
    let out = Command::new(BIN).args(args).output()?;
    anyhow::ensure!(
        out.status.success(),
        "lb-l7-webhook {}: {}",
        args.join(" "),
        String::from_utf8_lossy(&out.stderr)
    );
    Ok(out)
}

/// `lb-l7-webhook manifests --policy POLICY --url URL --ca-bundle-file CA --name NAME -o json`, parsed.
fn render_config(
    policy: &Path,
    url: &str,
    ca: &Path,
    name: &str,
) -> anyhow::Result<MutatingWebhookConfiguration> {
    let out = Command::new(BIN)
        .args([
            "manifests",
            "--url",
            url,
            "--name",
            name,
            "-o",
            "json",
            "--policy",
        ])
        .arg(policy)
        .arg("--ca-bundle-file")
        .arg(ca)
        .output()?;
    anyhow::ensure!(
        out.status.success(),
        "lb-l7-webhook manifests: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    Ok(serde_json::from_slice(&out.stdout)?)
}

fn start_serve(
    dir: &Path,
    listen: SocketAddr,
    probe: SocketAddr,
    policy: &Path,
) -> anyhow::Result<Child> {
    let log = std::fs::File::create(dir.join(format!("serve-{}.log", listen.port())))?;
    let child = Command::new(BIN)
        .args([
            "serve",
            "--listen",
            &listen.to_string(),
            "--probe-listen",
            &probe.to_string(),
        ])
        .arg("--policy")
        .arg(policy)
        .arg("--tls-cert")
        .arg(dir.join("tls.crt"))
        .arg("--tls-key")
        .arg(dir.join("tls.key"))
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()?;
    Ok(child)
}

async fn wait_listening(addr: SocketAddr) -> anyhow::Result<()> {
    let start = Instant::now();
    while start.elapsed() < Duration::from_secs(20) {
        if tokio::net::TcpStream::connect(addr).await.is_ok() {
            return Ok(());
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    anyhow::bail!("serve did not listen on {addr} within 20 s")
}

fn free_port(ip: IpAddr) -> anyhow::Result<u16> {
    Ok(std::net::TcpListener::bind((ip, 0))?.local_addr()?.port())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn webhook_through_a_real_api_server() -> anyhow::Result<()> {
    let Some(kubeconfig) = std::env::var_os("LB_L7_E2E_KUBECONFIG").filter(|v| !v.is_empty())
    else {
        println!(
            "SKIPPED e2e: set LB_L7_E2E_KUBECONFIG to a cluster's kubeconfig to run it (README, section Deploy)"
        );
        return Ok(());
    };
    let kubeconfig = PathBuf::from(kubeconfig);
    let _ = rustls::crypto::ring::default_provider().install_default();
    let reachable = async {
        let client = client_from(&kubeconfig).await?;
        let v = tokio::time::timeout(Duration::from_secs(10), client.apiserver_version()).await??;
        anyhow::Ok((client, v))
    };
    let (client, version) = match reachable.await {
        Ok(ok) => ok,
        Err(e) => {
            println!(
                "SKIPPED e2e: the cluster of {} is not reachable: {e:#}",
                kubeconfig.display()
            );
            return Ok(());
        }
    };
    eprintln!(
        "e2e: API server {}.{} ({})",
        version.major, version.minor, version.git_version
    );

    let host: IpAddr = std::env::var("LB_L7_E2E_WEBHOOK_HOST")
        .unwrap_or_else(|_| "127.0.0.1".into())
        .parse()
        .map_err(|e| {
            anyhow::anyhow!("LB_L7_E2E_WEBHOOK_HOST must be an IP address of this machine: {e}")
        })?;
    let run = format!(
        "{:x}{:x}",
        std::process::id(),
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)?
            .as_secs()
            & 0xffff
    );
    let dir = tempfile::tempdir()?;
    let mut guard = Cleanup {
        kubeconfig: kubeconfig.clone(),
        run: run.clone(),
        webhook_configuration: None,
        namespaces: Vec::new(),
        kube_system_services: Vec::new(),
        serve: None,
    };

    // Certificates from `certs`, with HOST in the SANs.
    let d = dir
        .path()
        .to_str()
        .ok_or_else(|| anyhow::anyhow!("temp dir is not UTF-8"))?;
    run_bin(&["certs", "--out-dir", d, "--san", &host.to_string()])?;

    // Policies: the shipped default (namespace-opt-in, enforce) and the dry-run overlay's (cluster, dry-run).
    let deploy = Path::new(env!("CARGO_MANIFEST_DIR")).join("deploy");
    let enforce = deploy.join("base/policy.yaml");
    let dry_run = deploy.join("overlays/dry-run/policy.yaml");
    let listen = SocketAddr::new(host, free_port(host)?);
    let probe = SocketAddr::new([127, 0, 0, 1].into(), free_port([127, 0, 0, 1].into())?);
    guard.serve = Some(start_serve(dir.path(), listen, probe, &enforce)?);
    wait_listening(listen).await?;

    // Namespaces: one opted in, one not.
    let ns_api: Api<Namespace> = Api::all(client.clone());
    let ns_in = format!("lb-l7-e2e-{run}-in");
    let ns_out = format!("lb-l7-e2e-{run}-out");
    for (name, opt_in) in [(&ns_in, true), (&ns_out, false)] {
        let extra: &[(&str, &str)] = if opt_in {
            &[("lb-l7-webhook/enabled", "true")]
        } else {
            &[]
        };
        let ns = Namespace {
            metadata: ObjectMeta {
                name: Some(name.clone()),
                labels: Some(labels(&run, extra)),
                ..Default::default()
            },
            ..Default::default()
        };
        ns_api.create(&PostParams::default(), &ns).await?;
        guard.namespaces.push(name.clone());
    }

    // Register the webhook exactly as `manifests` renders it.
    let config_name = format!("lb-l7-e2e-{run}");
    let url = format!("https://{}/mutate", SocketAddr::new(host, listen.port()));
    let ca = dir.path().join("ca.crt");
    let mut config = render_config(&enforce, &url, &ca, &config_name)?;
    config
        .metadata
        .labels
        .get_or_insert_with(BTreeMap::new)
        .insert(RUN_LABEL.into(), run.clone());
    let mwc_api: Api<MutatingWebhookConfiguration> = Api::all(client.clone());
    mwc_api.create(&PostParams::default(), &config).await?;
    guard.webhook_configuration = Some(config_name.clone());

    // Wait until the API server calls the webhook (dry-run creates store nothing).
    eventually("the API server calls the webhook", || async {
        let (svc, _) = create(&client, &ns_in, &grpc_service("probe", &run), true).await?;
        Ok(annotation(&svc) == Some("enabled"))
    })
    .await?;

    // 1. A gRPC Service in an opted-in namespace comes back annotated.
    let (svc, _) = create(&client, &ns_in, &grpc_service("grpc", &run), false).await?;
    assert_eq!(
        annotation(&svc),
        Some("enabled"),
        "gRPC Service in an opted-in namespace"
    );
    let stored = Api::<Service>::namespaced(client.clone(), &ns_in)
        .get("grpc")
        .await?;
    assert_eq!(
        annotation(&stored),
        Some("enabled"),
        "the annotation is stored"
    );

    // 2. Unchanged: a namespace not opted in, the opt-out label, a plain HTTP Service, kube-system.
    let (svc, _) = create(&client, &ns_out, &grpc_service("grpc", &run), false).await?;
    assert_eq!(
        annotation(&svc),
        None,
        "gRPC Service in a namespace that is not opted in"
    );
    let opted_out = service(
        "grpc-opted-out",
        &run,
        "grpc",
        50051,
        &[("lb-l7-webhook/enabled", "false")],
    );
    let (svc, _) = create(&client, &ns_in, &opted_out, false).await?;
    assert_eq!(
        annotation(&svc),
        None,
        "Service labelled lb-l7-webhook/enabled=false"
    );
    let (svc, _) = create(
        &client,
        &ns_in,
        &service("http", &run, "http", 80, &[]),
        false,
    )
    .await?;
    assert_eq!(annotation(&svc), None, "plain HTTP Service");
    let ks_name = format!("lb-l7-e2e-{run}");
    guard.kube_system_services.push(ks_name.clone());
    let (svc, _) = create(&client, "kube-system", &grpc_service(&ks_name, &run), false).await?;
    assert_eq!(annotation(&svc), None, "gRPC Service in kube-system");

    // 3. `kubectl apply --dry-run=server` shows the annotation and stores nothing.
    let dry = grpc_service("grpc-dry", &run);
    let (svc, _) = create(&client, &ns_in, &dry, true).await?;
    assert_eq!(
        annotation(&svc),
        Some("enabled"),
        "server-side dry-run shows the annotation"
    );
    if Command::new("kubectl")
        .arg("version")
        .arg("--client")
        .output()
        .is_ok()
    {
        let manifest = dir.path().join("dry.json");
        std::fs::write(&manifest, serde_json::to_vec(&dry)?)?;
        let out = Command::new("kubectl")
            .arg("--kubeconfig")
            .arg(&kubeconfig)
            .args([
                "apply",
                "--dry-run=server",
                "-o",
                "json",
                "-n",
                &ns_in,
                "-f",
            ])
            .arg(&manifest)
            .output()?;
        assert!(
            out.status.success(),
            "kubectl apply --dry-run=server: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let shown: Service = serde_json::from_slice(&out.stdout)?;
        assert_eq!(
            annotation(&shown),
            Some("enabled"),
            "kubectl apply --dry-run=server shows the annotation"
        );
    } else {
        eprintln!("e2e: kubectl not found; checked server-side dry-run through the API only");
    }
    let api = Api::<Service>::namespaced(client.clone(), &ns_in);
    assert!(
        api.get_opt("grpc-dry").await?.is_none(),
        "a dry-run stores nothing"
    );

    // 4. The dry-run overlay's policy (and its webhook configuration): Services unchanged, and the API
    //    server's response carries the webhook's warning.
    guard.stop_serve();
    guard.serve = Some(start_serve(dir.path(), listen, probe, &dry_run)?);
    wait_listening(listen).await?;
    let mut current = mwc_api.get(&config_name).await?;
    current.webhooks = render_config(&dry_run, &url, &ca, &config_name)?.webhooks;
    mwc_api
        .replace(&config_name, &PostParams::default(), &current)
        .await?;
    eventually("the restarted webhook answers in dry-run mode", || async {
        let (svc, warnings) = create(&client, &ns_in, &grpc_service("probe", &run), true).await?;
        Ok(annotation(&svc).is_none() && warnings.iter().any(|w| w.contains("would enable")))
    })
    .await?;
    let (svc, warnings) =
        create(&client, &ns_in, &grpc_service("grpc-dry-mode", &run), false).await?;
    assert_eq!(annotation(&svc), None, "dry-run mode changes nothing");
    assert!(
        warnings
            .iter()
            .any(|w| w.contains("lb-l7-webhook") && w.contains("would enable")),
        "dry-run mode warns; warnings: {warnings:?}"
    );

    // 5. Fail open: with serve stopped, creating a Service still succeeds (unchanged).
    guard.stop_serve();
    let created = tokio::time::timeout(
        Duration::from_secs(40),
        create(
            &client,
            &ns_in,
            &grpc_service("grpc-fail-open", &run),
            false,
        ),
    )
    .await
    .map_err(|_| {
        anyhow::anyhow!("creating a Service with the webhook down took more than 40 s")
    })??;
    assert_eq!(
        annotation(&created.0),
        None,
        "fail open: created, unchanged"
    );

    drop(guard);
    Ok(())
}
