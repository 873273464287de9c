//! The workspace's shape, checked rather than promised (ARCHITECTURE.md):
//! - the core crate's dependency closure holds no runtime, HTTP server, Kubernetes client, CLI or gRPC crate, so
//!   the compiler keeps it pure;
//! - the webhook binary links no gRPC or demo crate (tonic, prost, hdrhistogram live in crates/demo);
//! - every path the Dockerfile copies and every package and binary it builds exists in the workspace.
//!
//! The dependency graph comes from `cargo metadata` (the resolved graph, features included), the Dockerfile from
//! the dockerfile-parser crate.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::process::Command;

use serde_json::Value;

fn root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

/// `cargo metadata` of the workspace: the resolved graph.
fn metadata() -> Value {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let out = Command::new(cargo)
        .args(["metadata", "--format-version", "1", "--offline", "--locked"])
        .current_dir(root())
        .output()
        .expect("run cargo metadata");
    assert!(
        out.status.success(),
        "cargo metadata failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).expect("cargo metadata JSON")
}

/// Package name by package id.
fn names(meta: &Value) -> BTreeMap<String, String> {
    meta["packages"]
        .as_array()
        .expect("packages")
        .iter()
        .map(|p| {
            (
                p["id"].as_str().expect("id").to_string(),
                p["name"].as_str().expect("name").to_string(),
            )
        })
        .collect()
}

/// The names of every package a workspace member needs to build (normal dependencies, transitively; build
/// scripts' and dev-dependencies excluded).
fn normal_closure(meta: &Value, package: &str) -> BTreeSet<String> {
    let names = names(meta);
    let nodes: BTreeMap<&str, &Value> = meta["resolve"]["nodes"]
        .as_array()
        .expect("resolve.nodes")
        .iter()
        .map(|n| (n["id"].as_str().expect("node id"), n))
        .collect();
    let start = names
        .iter()
        .find(|(_, n)| n.as_str() == package)
        .map(|(id, _)| id.clone())
        .unwrap_or_else(|| panic!("{package} is not in the workspace"));
    let mut seen = BTreeSet::new();
    let mut stack = vec![start];
    while let Some(id) = stack.pop() {
        if !seen.insert(id.clone()) {
            continue;
        }
        for dep in nodes[id.as_str()]["deps"].as_array().expect("deps") {
            let normal = dep["dep_kinds"]
                .as_array()
                .expect("dep_kinds")
                .iter()
                .any(|k| k["kind"].is_null());
            if normal {
                stack.push(dep["pkg"].as_str().expect("pkg").to_string());
            }
        }
    }
    seen.iter().map(|id| names[id].clone()).collect()
}

#[test]
fn the_core_depends_on_no_runtime_server_client_cli_or_grpc_crate() {
    let closure = normal_closure(&metadata(), "lb-l7-core");
    let forbidden = [
        "tokio",
        "hyper",
        "axum",
        "kube",
        "kube-client",
        "kube-runtime",
        "clap",
        "tonic",
        "reqwest",
        "tracing-subscriber",
    ];
    let found: Vec<&str> = forbidden
        .iter()
        .copied()
        .filter(|f| closure.contains(*f))
        .collect();
    assert!(
        found.is_empty(),
        "lb-l7-core must stay pure, but its dependencies pull in {found:?}"
    );
    // It really is the typed core: the Kubernetes types and the patch format are there.
    assert!(closure.contains("k8s-openapi") && closure.contains("json-patch"));
}

#[test]
fn the_webhook_binary_links_no_grpc_or_demo_crate() {
    let closure = normal_closure(&metadata(), "lb-l7-webhook");
    for demo_only in ["tonic", "prost", "hdrhistogram", "lb-l7-demo"] {
        assert!(
            !closure.contains(demo_only),
            "lb-l7-webhook must not link {demo_only}"
        );
    }
    assert!(closure.contains("lb-l7-core"));
}

#[test]
fn the_core_forbids_unsafe_code() {
    let lib = std::fs::read_to_string(root().join("crates/core/src/lib.rs")).expect("core lib.rs");
    assert!(lib.contains("#![forbid(unsafe_code)]"));
}

#[test]
fn the_dockerfile_copies_and_builds_what_the_workspace_has() {
    use dockerfile_parser::{Dockerfile, Instruction, ShellOrExecExpr};

    let text = std::fs::read_to_string(root().join("Dockerfile")).expect("Dockerfile");
    let dockerfile = Dockerfile::parse(&text).expect("the Dockerfile parses");
    let meta = metadata();
    let members: BTreeSet<String> = meta["workspace_members"]
        .as_array()
        .expect("workspace_members")
        .iter()
        .map(|id| names(&meta)[id.as_str().expect("id")].clone())
        .collect();
    let bins: BTreeSet<String> = meta["packages"]
        .as_array()
        .expect("packages")
        .iter()
        .filter(|p| members.contains(p["name"].as_str().unwrap_or_default()))
        .flat_map(|p| p["targets"].as_array().cloned().unwrap_or_default())
        .filter(|t| {
            t["kind"]
                .as_array()
                .is_some_and(|k| k.iter().any(|k| k == "bin"))
        })
        .map(|t| t["name"].as_str().expect("target name").to_string())
        .collect();

    let mut copied = 0;
    let mut built = BTreeSet::new();
    for instruction in &dockerfile.instructions {
        match instruction {
            Instruction::Copy(copy) if copy.flags.iter().all(|f| f.name.content != "from") => {
                for source in &copy.sources {
                    let path = root().join(&source.content);
                    assert!(
                        path.exists(),
                        "Dockerfile copies {}, which is not in the workspace",
                        source.content
                    );
                    copied += 1;
                }
            }
            Instruction::Run(run) => {
                let ShellOrExecExpr::Shell(shell) = &run.expr else {
                    continue;
                };
                let command = shell.to_string();
                // Only the `cargo build` command of the RUN line (not `mkdir -p` and the like).
                let Some(build) = command
                    .split("&&")
                    .find(|part| part.contains("cargo build"))
                else {
                    continue;
                };
                let words: Vec<&str> = build.split_whitespace().collect();
                for pair in words.windows(2) {
                    match pair[0] {
                        "--bin" => {
                            assert!(
                                bins.contains(pair[1]),
                                "Dockerfile builds --bin {}, which no workspace member has ({bins:?})",
                                pair[1]
                            );
                            built.insert(pair[1].to_string());
                        }
                        "-p" | "--package" => assert!(
                            members.contains(pair[1]),
                            "Dockerfile builds -p {}, which is not a workspace member ({members:?})",
                            pair[1]
                        ),
                        _ => {}
                    }
                }
            }
            _ => {}
        }
    }
    assert!(copied >= 5, "the build stage copies the sources");
    // The image ships every binary the chart, deploy/ and the demo run.
    for wanted in ["lb-l7-webhook", "demo-server", "demo-client"] {
        assert!(built.contains(wanted), "the image does not build {wanted}");
    }
}
