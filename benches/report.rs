//! Offline report speed: a generated manifest of 100,000 Services (plus their Namespaces), read, evaluated and
//! rendered, end to end, as `lb-l7-webhook report FILE` does. The requirement is under 2 s on the project's
//! 2-core machine. A plain harness (`harness = false`): each case runs a few times and prints min/median/max.
//!
//! Run with `cargo bench --bench report` (release profile). `LB_L7_BENCH_SERVICES` changes the count,
//! `LB_L7_BENCH_RUNS` the runs per case.
//!
//! `cargo bench --bench report -- e2e` runs only the end-to-end cases: the release binary itself,
//! `lb-l7-webhook report FILE -o json > /dev/null`, under `/usr/bin/time -v`, `LB_L7_BENCH_E2E_RUNS` times (3) per
//! input (multi-document YAML, JSON List), printing the best wall time and the peak RSS of each run.

use std::fmt::Write as _;
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use lb_l7_core::policy::Policy;
use lb_l7_webhook::report::{self, OutputFormat};

const NAMESPACES: usize = 200;

/// One Service of a realistic mix: gRPC by name, gRPC by appProtocol, HTTP, already enabled, opted out,
/// headless, multi-port with a differing targetPort. `flow` writes the labels in flow style (`{app: x}`).
fn service_yaml(out: &mut String, i: usize, flow: bool) {
    let ns = i % NAMESPACES;
    let t = i % 17;
    let _ = write!(
        out,
        "---\napiVersion: v1\nkind: Service\nmetadata:\n  name: svc-{i}\n  namespace: ns-{ns}\n"
    );
    if flow {
        let _ = writeln!(out, "  labels: {{app: svc-{i}, team: team-{t}}}");
    } else {
        let _ = write!(out, "  labels:\n    app: svc-{i}\n    team: team-{t}\n");
    }
    match i % 7 {
        0 => out.push_str("spec:\n  selector:\n    app: x\n  ports:\n  - name: grpc\n    port: 50051\n    targetPort: 50051\n"),
        1 => out.push_str("spec:\n  selector:\n    app: x\n  ports:\n  - name: api\n    port: 9000\n    appProtocol: kubernetes.io/h2c\n"),
        2 => out.push_str("spec:\n  selector:\n    app: x\n  ports:\n  - name: http\n    port: 80\n    targetPort: 8080\n"),
        3 => out.push_str("  annotations:\n    service.cilium.io/lb-l7: enabled\nspec:\n  selector:\n    app: x\n  ports:\n  - name: grpc\n    port: 50051\n"),
        4 => out.push_str("  annotations:\n    service.cilium.io/lb-l7: disabled\nspec:\n  ports:\n  - name: grpc\n    port: 50051\n"),
        5 => out.push_str("spec:\n  clusterIP: None\n  ports:\n  - name: grpc\n    port: 50051\n"),
        _ => out.push_str("spec:\n  type: ClusterIP\n  sessionAffinity: ClientIP\n  ports:\n  - name: grpc-api\n    port: 80\n    targetPort: 8080\n  - name: metrics\n    port: 9090\n"),
    }
}

fn namespaces_yaml(out: &mut String) {
    for ns in 0..NAMESPACES {
        let label = if ns % 10 == 0 { "false" } else { "true" };
        let _ = write!(
            out,
            "---\napiVersion: v1\nkind: Namespace\nmetadata:\n  name: ns-{ns}\n  labels:\n    lb-l7-webhook/enabled: \"{label}\"\n"
        );
    }
}

fn multi_document_yaml(n: usize, flow: bool) -> String {
    let mut s = String::with_capacity(n * 260);
    namespaces_yaml(&mut s);
    for i in 0..n {
        service_yaml(&mut s, i, flow);
    }
    s
}

/// The same Services as one `kind: List` in JSON, as `kubectl get svc -A -o json` writes it.
fn json_list(n: usize) -> String {
    let yaml = multi_document_yaml(n, false);
    let mut items = Vec::with_capacity(n + NAMESPACES);
    for (_, doc) in lb_l7_webhook::input::manifests::split_yaml_documents(&yaml) {
        if doc.trim().is_empty() {
            continue;
        }
        let v: serde_json::Value = serde_saphyr::from_str(doc).expect("generated YAML parses");
        items.push(v);
    }
    serde_json::to_string(&serde_json::json!({"apiVersion": "v1", "kind": "List", "items": items}))
        .expect("json")
}

fn time_case(
    name: &str,
    runs: usize,
    file: &Path,
    format: OutputFormat,
    out_path: &Path,
) -> Duration {
    let policy =
        Policy::from_yaml("scope: namespace-opt-in\nrules: [{name: grpc-ports, ports: {}}]\n")
            .expect("policy");
    // (total, read, evaluate, render) per run.
    let mut times: Vec<[Duration; 4]> = Vec::with_capacity(runs);
    let mut services = 0;
    for _ in 0..runs {
        let start = Instant::now();
        // The whole `report` command but the process start: compile, read, evaluate, render to a file.
        let compiled = policy.compile();
        let inventory = report::read_offline(&[PathBuf::from(file)], None);
        let read = start.elapsed();
        let r = report::build_report(&compiled, inventory);
        let evaluated = start.elapsed();
        let f = std::fs::File::create(out_path).expect("output file");
        let mut out = BufWriter::with_capacity(1 << 16, f);
        report::write_report(&mut out, &r, format, false).expect("render");
        out.flush().expect("flush");
        let total = start.elapsed();
        times.push([total, read, evaluated - read, total - evaluated]);
        assert!(r.errors.is_empty(), "{:?}", r.errors.first());
        services = r.summary.total;
    }
    times.sort();
    let median = times[times.len() / 2];
    let out_size = std::fs::metadata(out_path).map(|m| m.len()).unwrap_or(0);
    println!(
        "{name:<38} {services:>7} Services  min {:.3}s  median {:.3}s  max {:.3}s  \
         (median run: read {:.3}s, evaluate {:.3}s, render {:.3}s; output {:.1} MB)",
        times[0][0].as_secs_f64(),
        median[0].as_secs_f64(),
        times[times.len() - 1][0].as_secs_f64(),
        median[1].as_secs_f64(),
        median[2].as_secs_f64(),
        median[3].as_secs_f64(),
        out_size as f64 / 1e6,
    );
    median[0]
}

/// Runs the release binary on a file `runs` times under `/usr/bin/time -v`: (wall seconds, peak RSS KiB) per run.
fn time_binary(file: &Path, runs: usize) -> Vec<(f64, u64)> {
    let bin = env!("CARGO_BIN_EXE_lb-l7-webhook");
    (0..runs)
        .map(|_| {
            let out = std::process::Command::new("/usr/bin/time")
                .arg("-v")
                .arg(bin)
                .arg("report")
                .arg(file)
                .args(["-o", "json"])
                .env("LB_L7_LOG", "warn")
                .stdout(std::process::Stdio::null())
                .output()
                .expect("/usr/bin/time (apt-get install time)");
            assert!(
                out.status.success(),
                "{}",
                String::from_utf8_lossy(&out.stderr)
            );
            let text = String::from_utf8_lossy(&out.stderr);
            let field = |name: &str| {
                text.lines()
                    .find_map(|l| l.trim().strip_prefix(name))
                    .map(|v| v.trim().to_string())
                    .unwrap_or_else(|| panic!("{name} in {text}"))
            };
            // `m:ss.cc` or `h:mm:ss`.
            let wall = field("Elapsed (wall clock) time (h:mm:ss or m:ss):")
                .split(':')
                .fold(0.0, |acc, part| {
                    acc * 60.0 + part.parse::<f64>().unwrap_or(0.0)
                });
            let rss = field("Maximum resident set size (kbytes):")
                .parse()
                .unwrap_or(0);
            (wall, rss)
        })
        .collect()
}

fn main() {
    // `cargo bench` passes `--bench`; a filter argument, if any, selects cases by substring.
    let filter: Option<String> = std::env::args().skip(1).find(|a| !a.starts_with("--"));
    let n: usize = std::env::var("LB_L7_BENCH_SERVICES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(100_000);
    let runs: usize = std::env::var("LB_L7_BENCH_RUNS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(5)
        .max(1);
    let dir = tempfile::tempdir().expect("tempdir");
    let yaml_path = dir.path().join("services.yaml");
    let json_path = dir.path().join("services.json");
    let out_path = dir.path().join("out");
    let t = Instant::now();
    let yaml = multi_document_yaml(n, false);
    std::fs::write(&yaml_path, &yaml).expect("write yaml");
    let json = json_list(n);
    std::fs::write(&json_path, &json).expect("write json");
    println!(
        "generated {n} Services in {NAMESPACES} namespaces: YAML {:.1} MB, JSON {:.1} MB ({:.1}s)",
        yaml.len() as f64 / 1e6,
        json.len() as f64 / 1e6,
        t.elapsed().as_secs_f64()
    );
    // The same Services with their labels in flow style (`{app: x}`, common in hand-written YAML).
    let flow_path = dir.path().join("services-flow.yaml");
    std::fs::write(&flow_path, multi_document_yaml(n, true)).expect("write flow-style yaml");
    drop((yaml, json));

    let cases: [(&str, &Path, OutputFormat); 8] = [
        (
            "yaml multi-document -> table",
            &yaml_path,
            OutputFormat::Table,
        ),
        ("json kind: List -> table", &json_path, OutputFormat::Table),
        (
            "yaml multi-document -> json",
            &yaml_path,
            OutputFormat::Json,
        ),
        (
            "yaml multi-document -> markdown",
            &yaml_path,
            OutputFormat::Markdown,
        ),
        (
            "yaml multi-document -> yaml",
            &yaml_path,
            OutputFormat::Yaml,
        ),
        (
            "yaml multi-document -> policyreport",
            &yaml_path,
            OutputFormat::Policyreport,
        ),
        ("json kind: List -> json", &json_path, OutputFormat::Json),
        ("yaml flow style -> table", &flow_path, OutputFormat::Table),
    ];
    let e2e_runs: usize = std::env::var("LB_L7_BENCH_E2E_RUNS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(3)
        .max(1);
    let load = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
    for (name, file) in [
        ("e2e: binary, yaml multi-document -> json", &yaml_path),
        ("e2e: binary, json kind: List -> json", &json_path),
    ] {
        if filter.as_deref().is_some_and(|f| !name.contains(f)) {
            continue;
        }
        let runs = time_binary(file, e2e_runs);
        let best = runs.iter().map(|r| r.0).fold(f64::INFINITY, f64::min);
        let rss: Vec<String> = runs
            .iter()
            .map(|r| format!("{:.0}", r.1 as f64 / 1024.0))
            .collect();
        println!(
            "{name:<42} best of {e2e_runs}: {best:.2}s wall (runs: {}); peak RSS MiB per run: {}",
            runs.iter()
                .map(|r| format!("{:.2}", r.0))
                .collect::<Vec<_>>()
                .join(", "),
            rss.join(", ")
        );
    }
    println!(
        "load average at start (1, 5, 15 min): {}",
        load.split_whitespace()
            .take(3)
            .collect::<Vec<_>>()
            .join(" ")
    );
    let mut over = Vec::new();
    for (name, file, format) in cases {
        if filter.as_deref().is_some_and(|f| !name.contains(f)) {
            continue;
        }
        let median = time_case(name, runs, file, format, &out_path);
        if median >= Duration::from_secs(2) {
            over.push(name);
        }
    }
    if !over.is_empty() {
        println!("over the 2 s budget (median): {}", over.join(", "));
    }
}
