//! The offline report: every input form in tests/data/manifests, every output format read back, and the exit
//! statuses of the real binary (0, 2 on unreadable input, 3 with `--fail-on enable`, 2 before 3).

use std::io::Write;
use std::path::PathBuf;
use std::process::{Command, Stdio};

use lb_l7_core::policy::{DecisionKind, Policy};
use lb_l7_webhook::report::render::{self, PolicyReport, ResultKind};
use lb_l7_webhook::report::{self, OutputFormat, Report};

fn data(path: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/data")
        .join(path)
}

fn report_of(paths: &[&str]) -> Report {
    let paths: Vec<PathBuf> = paths.iter().map(|p| data(p)).collect();
    report::build_report(
        &Policy::default().compile(),
        report::read_offline(&paths, None),
    )
}

fn render(r: &Report, format: OutputFormat, colour: bool) -> String {
    let mut out = Vec::new();
    report::write_report(&mut out, r, format, colour).expect("render");
    String::from_utf8(out).expect("utf8")
}

fn names(r: &Report) -> Vec<String> {
    r.services
        .iter()
        .map(|e| format!("{}/{}:{}", e.namespace, e.name, e.decision))
        .collect()
}

#[test]
fn multi_document_yaml_skips_other_objects() {
    let r = report_of(&["manifests/multi-document.yaml"]);
    assert!(r.errors.is_empty(), "{:?}", r.errors);
    assert_eq!(
        names(&r),
        ["shop/cart:enable", "shop/storefront:no-match"],
        "the Deployment, the ConfigMap and the Knative Service are skipped"
    );
    assert!(
        r.services[0].warnings.is_empty(),
        "{:?}",
        r.services[0].warnings
    );
    assert_eq!(
        r.services[0].source.as_deref(),
        Some(
            format!(
                "{} (document 2)",
                data("manifests/multi-document.yaml").display()
            )
            .as_str()
        )
    );
}

#[test]
fn kind_list_in_yaml_and_json_and_the_api_servers_service_list() {
    let r = report_of(&["manifests/list.yaml"]);
    assert_eq!(
        names(&r),
        [
            "payments/ledger:enable",
            "payments/ledger-enabled:already-enabled"
        ]
    );
    let r = report_of(&["manifests/kubectl-get.json", "manifests/service-list.json"]);
    assert!(r.errors.is_empty(), "{:?}", r.errors);
    assert_eq!(
        names(&r),
        [
            "search/indexer:enable",
            "search/query:no-match",
            "search/raw-grpc:enable",
            "search/raw-http:no-match"
        ],
        "the ServiceList's items carry no kind; the search Namespace comes from the other file"
    );
}

#[test]
fn kustomize_output() {
    let r = report_of(&["manifests/kustomize-output.yaml"]);
    assert!(r.errors.is_empty(), "{:?}", r.errors);
    assert_eq!(
        names(&r),
        [
            "checkout/payment-grpc:enable",
            "checkout/payment-web:no-match"
        ]
    );
}

#[test]
fn a_bad_document_names_file_and_number_and_hides_nothing_else() {
    let r = report_of(&["manifests/bad-documents.yaml", "manifests/list.yaml"]);
    assert_eq!(
        names(&r),
        [
            "broken/good-one:excluded-namespace",
            "broken/good-two:excluded-namespace",
            "payments/ledger:enable",
            "payments/ledger-enabled:already-enabled"
        ]
    );
    let file = data("manifests/bad-documents.yaml").display().to_string();
    let errors: Vec<String> = r.errors.iter().map(|e| e.to_string()).collect();
    assert_eq!(errors.len(), 2, "{errors:#?}");
    assert!(
        errors[0].starts_with(&format!("{file}: document 2 (line ")),
        "{errors:#?}"
    );
    assert!(
        errors[1].starts_with(&format!("{file}: document 4 (line 34)")),
        "{errors:#?}"
    );
    assert!(errors[1].contains("fifty"), "{errors:#?}");
    assert_eq!(report::exit_status(&r, None), report::EXIT_ERRORS);
}

#[test]
fn missing_files_and_directories_are_errors_naming_them() {
    let r = report_of(&["manifests/no-such-file.yaml"]);
    assert_eq!(r.errors.len(), 1);
    assert!(
        r.errors[0]
            .to_string()
            .contains("no-such-file.yaml: cannot read"),
        "{}",
        r.errors[0]
    );
}

#[test]
fn json_output_parses_back() {
    let r = report_of(&["services"]);
    let text = render(&r, OutputFormat::Json, false);
    let back: Report = serde_json::from_str(&text).expect("json parses back");
    assert_eq!(back.services, r.services);
    assert_eq!(back.summary, r.summary);
    let v: serde_json::Value = serde_json::from_str(&text).expect("json");
    let first_enable = v["services"]
        .as_array()
        .expect("services")
        .iter()
        .find(|e| e["decision"] == "enable")
        .expect("an enable entry");
    for field in [
        "namespace",
        "name",
        "decision",
        "reason",
        "warnings",
        "ports",
        "ciliumEnvoyConfig",
    ] {
        assert!(
            first_enable.get(field).is_some(),
            "{field} in {first_enable}"
        );
    }
    assert_eq!(v["summary"]["already-enabled"], r.summary.already_enabled);
}

#[test]
fn yaml_output_parses_back() {
    let r = report_of(&["services"]);
    let text = render(&r, OutputFormat::Yaml, false);
    let back: Report = serde_saphyr::from_str(&text).expect("yaml parses back");
    assert_eq!(back.services, r.services);
    assert_eq!(back.summary, r.summary);
}

#[test]
fn table_has_columns_warnings_and_the_summary_line_and_no_colour_off_a_terminal() {
    let r = report_of(&["services"]);
    let text = render(&r, OutputFormat::Table, false);
    let mut lines = text.lines();
    let header = lines.next().expect("header");
    let columns: Vec<&str> = header.split_whitespace().collect();
    assert_eq!(
        columns,
        ["NAMESPACE", "NAME", "PORTS", "DECISION", "REASON"]
    );
    assert!(
        text.contains(&format!("Summary: {}", r.summary.line())),
        "{text}"
    );
    assert!(r.summary.line().starts_with(&format!(
        "{} Services: {} enable, {} already-enabled, {} opted-out, {} excluded-namespace, {} no-match, {} not-applicable",
        r.summary.total,
        r.summary.enable,
        r.summary.already_enabled,
        r.summary.opted_out,
        r.summary.excluded_namespace,
        r.summary.no_match,
        r.summary.not_applicable
    )));
    assert!(
        text.contains("! apps/pitfalls: sessionAffinity ClientIP"),
        "{text}"
    );
    assert!(!text.contains('\x1b'), "no escape codes off a terminal");
    // One row per Service, the decision in its column.
    let row = text
        .lines()
        .find(|l| l.starts_with("apps ") && l.contains(" grpc-api "))
        .expect("row");
    assert!(row.contains(" enable "), "{row}");
    let coloured = render(&r, OutputFormat::Table, true);
    assert!(
        coloured.contains("\x1b[33menable"),
        "enable is yellow on a terminal"
    );
}

#[test]
fn markdown_has_the_table_header_and_escapes_pipes() {
    let mut r = report_of(&["services"]);
    r.services[0].reason = "a | b".into();
    let text = render(&r, OutputFormat::Markdown, false);
    assert!(
        text.contains("| Namespace | Name | Ports | Decision | Reason | Warnings |\n|---|---|---|---|---|---|\n"),
        "{text}"
    );
    assert!(text.contains("a \\| b"), "{text}");
    let rows = text
        .lines()
        .filter(|l| l.starts_with("| ") && !l.starts_with("| Namespace"))
        .count();
    assert_eq!(rows, r.services.len());
}

fn policy_reports(text: &str) -> Vec<PolicyReport> {
    lb_l7_webhook::input::manifests::split_yaml_documents(text)
        .filter(|(_, d)| !d.trim().is_empty())
        .map(|(_, d)| serde_saphyr::from_str::<PolicyReport>(d).expect("a PolicyReport"))
        .collect()
}

#[test]
fn policyreport_output_deserializes_back_one_per_namespace_with_matching_summaries() {
    let r = report_of(&["services"]);
    let text = render(&r, OutputFormat::Policyreport, false);
    let reports = policy_reports(&text);
    let mut namespaces: Vec<&str> = r.services.iter().map(|e| e.namespace.as_str()).collect();
    namespaces.dedup();
    assert_eq!(
        reports
            .iter()
            .map(|p| p.metadata.namespace.as_str())
            .collect::<Vec<_>>(),
        namespaces
    );
    let mut total = 0;
    for p in &reports {
        assert_eq!(p.api_version, "wgpolicyk8s.io/v1alpha2");
        assert_eq!(p.kind, "PolicyReport");
        assert_eq!(p.metadata.name, "lb-l7-webhook");
        let count = |k: ResultKind| p.results.iter().filter(|r| r.result == k).count();
        assert_eq!(p.summary.pass, count(ResultKind::Pass));
        assert_eq!(p.summary.fail, count(ResultKind::Fail));
        assert_eq!(p.summary.warn, count(ResultKind::Warn));
        assert_eq!(p.summary.skip, count(ResultKind::Skip));
        assert_eq!(p.summary.error, 0);
        for res in &p.results {
            assert_eq!(res.policy, "lb-l7-webhook");
            assert_eq!(res.resources.len(), 1);
            assert_eq!(res.resources[0].kind, "Service");
            assert_eq!(res.resources[0].namespace, p.metadata.namespace);
        }
        total += p.results.len();
    }
    assert_eq!(total, r.summary.total);
    // The mapping, on the corpus.
    let result = |ns: &str, name: &str| {
        reports
            .iter()
            .flat_map(|p| &p.results)
            .find(|x| x.resources[0].namespace == ns && x.resources[0].name == name)
            .unwrap_or_else(|| panic!("{ns}/{name}"))
            .clone()
    };
    assert_eq!(result("apps", "grpc-api").result, ResultKind::Fail);
    assert_eq!(
        result("apps", "grpc-api").rule.as_deref(),
        Some("grpc-ports")
    );
    assert_eq!(
        result("apps", "pitfalls").result,
        ResultKind::Fail,
        "enable stays fail"
    );
    assert_eq!(result("apps", "enabled").result, ResultKind::Pass);
    assert_eq!(result("apps", "owner-says-no").result, ResultKind::Skip);
    assert_eq!(result("apps", "capitalised").result, ResultKind::Warn);
    assert_eq!(result("apps", "web").result, ResultKind::Skip);
    assert_eq!(result("apps", "old-spelling").result, ResultKind::Warn);
    assert_eq!(result("apps", "stateful-enabled").result, ResultKind::Warn);
    assert_eq!(
        result("apps", "enabled").properties["ciliumEnvoyConfig"],
        "cilium-envoy-lb-enabled"
    );
}

#[test]
fn a_namespace_with_many_services_gets_several_reports() {
    let mut r = report_of(&["services"]);
    let template = r.services[0].clone();
    r.services = (0..2500)
        .map(|i| {
            let mut e = template.clone();
            e.namespace = "big".into();
            e.name = format!("svc-{i:04}");
            e
        })
        .collect();
    let reports = render::build_policy_reports(&r);
    assert_eq!(
        reports
            .iter()
            .map(|p| p.metadata.name.as_str())
            .collect::<Vec<_>>(),
        ["lb-l7-webhook", "lb-l7-webhook-2", "lb-l7-webhook-3"]
    );
    assert_eq!(reports.iter().map(|p| p.results.len()).sum::<usize>(), 2500);
}

#[test]
fn decisions_map_to_results_as_documented() {
    let r = report_of(&["services"]);
    for e in &r.services {
        let expected = match e.decision {
            DecisionKind::Enable => ResultKind::Fail,
            _ if !e.warnings.is_empty() => ResultKind::Warn,
            DecisionKind::AlreadyEnabled => ResultKind::Pass,
            _ => ResultKind::Skip,
        };
        assert_eq!(
            render::policy_result(e),
            expected,
            "{}/{}",
            e.namespace,
            e.name
        );
    }
}

// The real binary: exit statuses and stdin.

fn bin() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_lb-l7-webhook"));
    c.env("LB_L7_LOG", "warn").env_remove("LB_L7_POLICY");
    c
}

fn run(args: &[&str], stdin: Option<&[u8]>) -> (i32, String, String) {
    let mut child = bin()
        .arg("report")
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn");
    if let Some(input) = stdin {
        child
            .stdin
            .take()
            .expect("stdin")
            .write_all(input)
            .expect("write");
    }
    drop(child.stdin.take());
    let out = child.wait_with_output().expect("wait");
    (
        out.status.code().expect("exit code"),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn exit_status_zero_three_and_two_before_three() {
    let list = data("manifests/list.yaml");
    let list = list.to_str().expect("path");
    let (code, out, _) = run(&[list], None);
    assert_eq!(code, 0, "{out}");
    let (code, _, _) = run(&[list, "--fail-on", "enable"], None);
    assert_eq!(code, 3, "ledger would be enabled");
    let web = data("manifests/kubectl-get.json");
    let (code, _, _) = run(
        &[
            web.to_str().expect("path"),
            "-n",
            "nowhere",
            "--fail-on",
            "enable",
        ],
        None,
    );
    assert_eq!(code, 0, "nothing to enable in that namespace");
    let bad = data("manifests/bad-documents.yaml");
    let (code, out, err) = run(
        &[
            bad.to_str().expect("path"),
            list,
            "--fail-on",
            "enable",
            "-o",
            "json",
        ],
        None,
    );
    assert_eq!(code, 2, "input errors win over --fail-on");
    assert!(err.contains("bad-documents.yaml: document 2"), "{err}");
    let v: serde_json::Value = serde_json::from_str(&out).expect("json on stdout, errors included");
    assert_eq!(v["errors"].as_array().map(Vec::len), Some(2));
    assert_eq!(
        v["summary"]["enable"], 1,
        "the good documents are still reported"
    );
}

#[test]
fn stdin_and_a_policy_file() {
    let input = std::fs::read(data("manifests/kustomize-output.yaml")).expect("read");
    let (code, out, err) = run(&["-", "-o", "json"], Some(&input));
    assert_eq!(code, 0, "{err}");
    let v: serde_json::Value = serde_json::from_str(&out).expect("json");
    assert_eq!(v["services"][0]["source"], "- (document 3)");

    let dir = tempfile::tempdir().expect("tempdir");
    let policy = dir.path().join("policy.yaml");
    std::fs::write(
        &policy,
        "scope: cluster\nrules: [{name: web, ports: {names: [http]}}]\n",
    )
    .expect("write");
    let (code, out, _) = run(
        &[
            "-",
            "--policy",
            policy.to_str().expect("path"),
            "-o",
            "json",
        ],
        Some(&input),
    );
    assert_eq!(code, 0);
    let v: serde_json::Value = serde_json::from_str(&out).expect("json");
    assert_eq!(v["services"][1]["name"], "payment-web");
    assert_eq!(v["services"][1]["decision"], "enable");
    assert_eq!(v["services"][1]["rule"], "web");

    std::fs::write(&policy, "scope: everywhere\nrules: []\n").expect("write");
    let (code, _, err) = run(
        &["-", "--policy", policy.to_str().expect("path")],
        Some(&input),
    );
    assert_eq!(code, 2);
    assert!(
        err.contains("policy.yaml") && err.contains("everywhere"),
        "{err}"
    );

    let (code, _, err) = run(&[], None);
    assert_eq!(code, 2);
    assert!(err.contains("--cluster"), "{err}");
}

// Manifests the way users have them: kustomize directories, namespaces not in the input, objects given twice.

fn kubectl_on_path() -> bool {
    Command::new("kubectl")
        .args(["version", "--client"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

#[test]
fn a_kustomize_directory_is_built_not_read_raw() {
    if !kubectl_on_path() {
        println!("SKIPPED: kubectl is not on PATH");
        return;
    }
    let base = data("manifests/kustomize/base");
    let (code, out, err) = run(&[base.to_str().expect("path"), "-o", "json"], None);
    assert_eq!(code, 0, "{err}");
    let v: serde_json::Value = serde_json::from_str(&out).expect("json");
    let lines: Vec<String> = v["services"]
        .as_array()
        .expect("services")
        .iter()
        .map(|e| format!("{}/{}:{}", e["namespace"], e["name"], e["decision"]).replace('"', ""))
        .collect();
    assert_eq!(
        lines,
        [
            "checkout/payment-grpc:enable",
            "checkout/payment-web:no-match"
        ],
        "the namespace: transformer applies; {err}"
    );
    assert!(err.contains("kubectl kustomize"), "{err}");

    // Found while walking a bigger directory: that subtree is built, the rest read as files, and stderr says so.
    let dir = tempfile::tempdir().expect("tempdir");
    let sub = dir.path().join("apps/checkout");
    std::fs::create_dir_all(&sub).expect("mkdir");
    for f in ["kustomization.yaml", "namespace.yaml", "services.yaml"] {
        std::fs::copy(base.join(f), sub.join(f)).expect("copy");
    }
    std::fs::copy(data("manifests/list.yaml"), dir.path().join("list.yaml")).expect("copy");
    let (code, out, err) = run(&[dir.path().to_str().expect("path"), "-o", "json"], None);
    assert_eq!(code, 0, "{err}");
    let v: serde_json::Value = serde_json::from_str(&out).expect("json");
    let names: Vec<String> = v["services"]
        .as_array()
        .expect("services")
        .iter()
        .map(|e| format!("{}/{}", e["namespace"], e["name"]).replace('"', ""))
        .collect();
    assert_eq!(
        names,
        [
            "checkout/payment-grpc",
            "checkout/payment-web",
            "payments/ledger",
            "payments/ledger-enabled"
        ],
        "no raw default/payment-grpc; {err}"
    );
    assert!(
        err.contains(&format!("{}: a kustomization inside", sub.display())),
        "{err}"
    );
}

#[test]
fn a_kustomize_directory_without_kubectl_stops_and_says_how() {
    let empty = tempfile::tempdir().expect("tempdir");
    let base = data("manifests/kustomize/base");
    let base = base.to_str().expect("path");
    let out = bin()
        .env("PATH", empty.path())
        .args(["report", base, "-o", "json"])
        .output()
        .expect("run");
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains(&format!(
            "kubectl kustomize {base} | lb-l7-webhook report -"
        )),
        "{err}"
    );
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).expect("json");
    assert_eq!(
        v["summary"]["total"], 0,
        "no raw answer: the files of the kustomization are not read"
    );
}

fn offline(args: &[&str]) -> serde_json::Value {
    let input = std::fs::read(data("manifests/kustomize/base/services.yaml")).expect("read");
    // The kustomization's Services without its Namespace object, in namespace checkout.
    let input = String::from_utf8(input)
        .expect("utf8")
        .replace("metadata:\n", "metadata:\n  namespace: checkout\n");
    let mut all = vec!["-", "-o", "json"];
    all.extend_from_slice(args);
    let (code, out, err) = run(&all, Some(input.as_bytes()));
    assert_eq!(code, 0, "{err}");
    serde_json::from_str(&out).expect("json")
}

#[test]
fn without_namespace_objects_the_report_says_what_the_rules_decide_once_opted_in() {
    let v = offline(&[]);
    let grpc = &v["services"][0];
    assert_eq!(grpc["name"], "payment-grpc");
    assert_eq!(
        grpc["decision"], "excluded-namespace",
        "the scope still decides"
    );
    assert_eq!(
        grpc["reason"],
        "would enable once namespace checkout opts in (label lb-l7-webhook/enabled=true): port grpc (50051/TCP) matches rule 'grpc-ports'"
    );
    assert_eq!(grpc["wouldEnableOnOptIn"]["rule"], "grpc-ports");
    assert_eq!(
        grpc["wouldEnableOnOptIn"]["label"],
        "lb-l7-webhook/enabled=true"
    );
    let web = &v["services"][1];
    assert_eq!(web["name"], "payment-web");
    assert_eq!(web["decision"], "excluded-namespace");
    assert!(
        web.get("wouldEnableOnOptIn").is_none(),
        "no rule matches http: {web}"
    );

    // The table says it too.
    let input = std::fs::read(data("manifests/kustomize/base/services.yaml")).expect("read");
    let (_, table, _) = run(&["-"], Some(&input));
    assert!(
        table.contains("would enable once namespace default opts in")
            && table.contains(
                "1 excluded-namespace Service would be enabled once its namespace opts in"
            ),
        "{table}"
    );

    // A namespace labelled false is its owner's no: no hint.
    let (_, out, _) = run(
        &[
            "-",
            "-o",
            "json",
            "--namespace-labels",
            "default=lb-l7-webhook/enabled=false",
        ],
        Some(&input),
    );
    let v: serde_json::Value = serde_json::from_str(&out).expect("json");
    assert!(v["services"][0].get("wouldEnableOnOptIn").is_none(), "{v}");
}

#[test]
fn namespace_labels_and_assume_opted_in_state_what_the_input_lacks() {
    let v = offline(&[
        "--namespace-labels",
        "checkout=lb-l7-webhook/enabled=true,team=pay",
    ]);
    assert_eq!(v["services"][0]["decision"], "enable");
    assert_eq!(v["services"][1]["decision"], "no-match");
    assert!(
        v["services"][0]["warnings"]
            .as_array()
            .expect("warnings")
            .is_empty(),
        "{v}"
    );
    assert_eq!(
        v["statedNamespaceLabels"]["checkout"]["team"], "pay",
        "the report says which labels were stated"
    );

    let v = offline(&["--assume-opted-in"]);
    assert_eq!(v["services"][0]["decision"], "enable");
    assert_eq!(
        v["statedNamespaceLabels"]["checkout"]["lb-l7-webhook/enabled"],
        "true"
    );

    // From the environment, as every flag.
    let input = std::fs::read(data("manifests/kustomize/base/services.yaml")).expect("read");
    let mut child = bin()
        .env(
            "LB_L7_REPORT_NAMESPACE_LABELS",
            "other=a=b default=lb-l7-webhook/enabled=true",
        )
        .args(["report", "-", "-o", "json"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("spawn");
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(&input)
        .expect("write");
    let out = child.wait_with_output().expect("wait");
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).expect("json");
    assert_eq!(v["services"][0]["decision"], "enable", "{v}");

    // A malformed value is refused with the expected shape.
    let (code, _, err) = run(&["-", "--namespace-labels", "checkout"], Some(b""));
    assert_eq!(code, 2);
    assert!(err.contains("NS=KEY=VALUE"), "{err}");
}

#[test]
fn the_same_service_given_twice_is_one_service_with_a_warning_naming_both() {
    let dir = tempfile::tempdir().expect("tempdir");
    let copy = dir.path().join("again.yaml");
    std::fs::copy(data("manifests/kustomize-output.yaml"), &copy).expect("copy");
    let r = report::build_report(
        &Policy::default().compile(),
        report::read_offline(
            &[data("manifests/kustomize-output.yaml"), copy.clone()],
            None,
        ),
    );
    assert!(r.errors.is_empty(), "{:?}", r.errors);
    assert_eq!(
        names(&r),
        [
            "checkout/payment-grpc:enable",
            "checkout/payment-web:no-match"
        ]
    );
    let file = data("manifests/kustomize-output.yaml")
        .display()
        .to_string();
    let warning = r.services[0]
        .warnings
        .iter()
        .find(|w| w.contains("given 2 times"))
        .unwrap_or_else(|| panic!("{:?}", r.services[0].warnings));
    assert_eq!(
        warning,
        &format!(
            "the same Service is given 2 times ({file} (document 3), {} (document 3)): one Service, as the last one defines it",
            copy.display()
        )
    );
    assert_eq!(r.summary.total, 2);
}
