//! `lb-l7-webhook manifests`: the MutatingWebhookConfiguration, rendered from the same policy file `serve` reads.
//!
//! [`render_webhook_configuration`] is pure: policy + options in, a typed `MutatingWebhookConfiguration` out.
//! The CLI, the kustomize drift test (tests/deploy.rs) and any tool that compares a live configuration with the
//! intended one all call it, so they never disagree about what the webhook configuration should be.
//!
//! What the API server does with it:
//! - `namespaceSelector`: the policy's `excludedNamespaces` are left out by `kubernetes.io/metadata.name NotIn`
//!   (the API server sets that label on every namespace), and so is any namespace labelled
//!   `lb-l7-webhook/enabled=false`; with scope `namespace-opt-in` only namespaces labelled
//!   `lb-l7-webhook/enabled=true` are sent.
//! - `objectSelector`: Services labelled `lb-l7-webhook/enabled=false` are never sent.
//! - `matchConditions` (CEL, GA in Kubernetes 1.30): ExternalName and headless Services are not sent; they have
//!   no frontend for Cilium's Envoy, so the webhook would only answer "not applicable".
//! - `failurePolicy: Ignore`: if the webhook is down, Services are still created, just not annotated.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context as _;
use k8s_openapi::api::admissionregistration::v1::MutatingWebhookConfiguration;
use lb_l7_core::render::{
    CaSource, ClientTarget, DEFAULT_CONFIGURATION_NAME, MUTATE_PATH, RenderOptions,
    parse_namespaced, render_webhook_configuration, validate_url,
};

/// Output format of `manifests`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum OutputFormat {
    Yaml,
    Json,
}

/// What `manifests` renders.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum)]
pub enum Engine {
    /// The MutatingWebhookConfiguration for `serve` (any Kubernetes from 1.30).
    #[default]
    Webhook,
    /// A MutatingAdmissionPolicy + binding and a ValidatingAdmissionPolicy + binding for the warnings: the API
    /// server applies the policy itself, nothing to run (Kubernetes 1.36+, or 1.34-1.35 with v1beta1).
    AdmissionPolicy,
}

/// `admissionregistration.k8s.io` version of the MutatingAdmissionPolicy.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum)]
pub enum ApiVersionArg {
    /// GA, Kubernetes 1.36+.
    #[default]
    V1,
    /// Kubernetes 1.34-1.35, with the MutatingAdmissionPolicy feature gate and the v1beta1 API enabled.
    V1beta1,
}

/// `manifests`' flags.
#[derive(clap::Args, Debug, Clone)]
pub struct ManifestsArgs {
    /// Policy file (YAML), the same one `serve --policy` reads. Without it, the built-in default.
    #[arg(long, env = "LB_L7_POLICY")]
    pub policy: Option<PathBuf>,

    /// In-cluster webhook Service, NAMESPACE/NAME.
    #[arg(long, env = "LB_L7_MANIFESTS_SERVICE", default_value = "lb-l7-system/lb-l7-webhook", value_parser = parse_namespaced)]
    pub service: (String, String),

    /// Port of --service.
    #[arg(long, env = "LB_L7_MANIFESTS_SERVICE_PORT", default_value_t = 443)]
    pub service_port: i32,

    /// HTTP path of the webhook (for --service).
    #[arg(long, env = "LB_L7_MANIFESTS_SERVICE_PATH", default_value = MUTATE_PATH)]
    pub service_path: String,

    /// A webhook outside the cluster, e.g. https://127.0.0.1:8443/mutate (instead of --service).
    #[arg(long, env = "LB_L7_MANIFESTS_URL", conflicts_with_all = ["service"])]
    pub url: Option<String>,

    /// PEM file of the CA that signed the serving certificate (e.g. certs/ca.crt), rendered as caBundle.
    #[arg(long, env = "LB_L7_MANIFESTS_CA_BUNDLE_FILE")]
    pub ca_bundle_file: Option<PathBuf>,

    /// cert-manager Certificate, NAMESPACE/NAME, whose CA cert-manager's cainjector puts in caBundle
    /// (annotation cert-manager.io/inject-ca-from). Without this and --ca-bundle-file, no caBundle is
    /// rendered (patch it in afterwards; see certs/README.md).
    #[arg(long, env = "LB_L7_MANIFESTS_CERT_MANAGER", conflicts_with = "ca_bundle_file", value_parser = parse_namespaced)]
    pub cert_manager: Option<(String, String)>,

    /// metadata.name of the MutatingWebhookConfiguration.
    #[arg(long, env = "LB_L7_MANIFESTS_NAME", default_value = DEFAULT_CONFIGURATION_NAME)]
    pub name: String,

    /// Output format.
    #[arg(short = 'o', long, env = "LB_L7_MANIFESTS_OUTPUT", value_enum, default_value_t = OutputFormat::Yaml)]
    pub output: OutputFormat,

    /// What to render: the webhook configuration, or the same policy as admission policies (no webhook).
    #[arg(long, env = "LB_L7_MANIFESTS_ENGINE", value_enum, default_value_t = Engine::Webhook)]
    pub engine: Engine,

    /// With --engine admission-policy: the MutatingAdmissionPolicy's API version.
    #[arg(long, env = "LB_L7_MANIFESTS_API_VERSION", value_enum, default_value_t = ApiVersionArg::V1)]
    pub api_version: ApiVersionArg,
}

/// The header of the YAML output of `--engine admission-policy`.
const ADMISSION_POLICY_HEADER: &str = "\
# lb-l7-webhook manifests --engine admission-policy: the policy as admission policies, applied by the API server
# itself (no webhook). MutatingAdmissionPolicy: admissionregistration.k8s.io/v1 from Kubernetes 1.36, v1beta1 on
# 1.34-1.35 with the MutatingAdmissionPolicy feature gate. The ValidatingAdmissionPolicy gives the webhook's
# warnings (validationActions: [Warn]); lb-l7-webhook/matched-by carries the same reason the webhook writes.
";

/// The admission policies for `policy` as text: YAML documents (with a header), or a JSON `v1 List`.
pub fn admission_policies_text(
    policy: &lb_l7_core::policy::Policy,
    api_version: ApiVersionArg,
    format: OutputFormat,
) -> anyhow::Result<String> {
    use lb_l7_core::render::admission_policy::{PolicyApiVersion, render_admission_policies};
    let rendered = render_admission_policies(policy)
        .context("the policy cannot be rendered as admission policies")?;
    let version = match api_version {
        ApiVersionArg::V1 => PolicyApiVersion::V1,
        ApiVersionArg::V1beta1 => PolicyApiVersion::V1beta1,
    };
    let docs = rendered.documents(version);
    Ok(match format {
        OutputFormat::Yaml => {
            let mut s = String::from(ADMISSION_POLICY_HEADER);
            if rendered.mutating.is_none() {
                s.push_str("# mode: dry-run: no MutatingAdmissionPolicy; the would-enable message is a warning.\n");
            }
            for doc in &docs {
                s.push_str("---\n");
                s.push_str(&serde_saphyr::to_string(doc).context("serializing as YAML")?);
                if !s.ends_with('\n') {
                    s.push('\n');
                }
            }
            s
        }
        OutputFormat::Json => {
            let list = serde_json::json!({"apiVersion": "v1", "kind": "List", "items": docs});
            let mut s = serde_json::to_string_pretty(&list).context("serializing as JSON")?;
            s.push('\n');
            s
        }
    })
}

/// Reads a CA bundle and checks it holds at least one PEM certificate (the same parser doctor uses).
pub fn read_ca_bundle(path: &std::path::Path) -> anyhow::Result<Vec<u8>> {
    let bytes = std::fs::read(path)
        .with_context(|| format!("CA bundle {}: cannot read", path.display()))?;
    lb_l7_core::cabundle::parse_ca_bundle(&bytes).map_err(|e| {
        anyhow::anyhow!(
            "CA bundle {}: {e} (give the CA certificate, e.g. certs/ca.crt)",
            path.display()
        )
    })?;
    Ok(bytes)
}

/// Serializes the configuration as YAML or JSON (with a trailing newline).
pub fn to_text(
    config: &MutatingWebhookConfiguration,
    format: OutputFormat,
) -> anyhow::Result<String> {
    Ok(match format {
        OutputFormat::Yaml => {
            let mut s = serde_saphyr::to_string(config)
                .context("serializing the webhook configuration as YAML")?;
            if !s.ends_with('\n') {
                s.push('\n');
            }
            s
        }
        OutputFormat::Json => {
            let mut s = serde_json::to_string_pretty(config)
                .context("serializing the webhook configuration as JSON")?;
            s.push('\n');
            s
        }
    })
}

/// Resolves flags into [`RenderOptions`] (reads the CA bundle file).
pub fn options_from_args(args: &ManifestsArgs) -> anyhow::Result<RenderOptions> {
    let client = match &args.url {
        Some(url) => {
            validate_url(url).map_err(|e| anyhow::anyhow!("--url {e}"))?;
            ClientTarget::Url(url.clone())
        }
        None => {
            if !args.service_path.starts_with('/') {
                anyhow::bail!("--service-path {:?} must start with '/'", args.service_path);
            }
            if !(1..=65535).contains(&args.service_port) {
                anyhow::bail!("--service-port {} is not a port number", args.service_port);
            }
            ClientTarget::Service {
                namespace: args.service.0.clone(),
                name: args.service.1.clone(),
                path: args.service_path.clone(),
                port: args.service_port,
            }
        }
    };
    let ca = match (&args.ca_bundle_file, &args.cert_manager) {
        (Some(path), _) => CaSource::Bundle(read_ca_bundle(path)?),
        (None, Some((ns, name))) => CaSource::CertManager {
            certificate: format!("{ns}/{name}"),
        },
        (None, None) => CaSource::Absent,
    };
    Ok(RenderOptions {
        client,
        ca,
        name: args.name.clone(),
    })
}

/// `lb-l7-webhook manifests`: prints the webhook configuration on stdout.
pub async fn run(args: ManifestsArgs) -> anyhow::Result<ExitCode> {
    let policy = crate::input::load_policy(args.policy.as_deref())?;
    if args.engine == Engine::AdmissionPolicy {
        let text = admission_policies_text(&policy, args.api_version, args.output)?;
        use std::io::Write as _;
        let mut out = std::io::stdout().lock();
        out.write_all(text.as_bytes())
            .and_then(|()| out.flush())
            .context("writing to stdout")?;
        return Ok(ExitCode::SUCCESS);
    }
    let opts = options_from_args(&args)?;
    if opts.ca == CaSource::Absent {
        tracing::warn!(
            "no --ca-bundle-file or --cert-manager: the configuration has no caBundle, so the API server cannot \
             verify the webhook until one is patched in (see certs/README.md)"
        );
    }
    let text = to_text(&render_webhook_configuration(&policy, &opts), args.output)?;
    use std::io::Write as _;
    let mut out = std::io::stdout().lock();
    out.write_all(text.as_bytes())
        .and_then(|()| out.flush())
        .context("writing to stdout")?;
    Ok(ExitCode::SUCCESS)
}

#[cfg(test)]
mod tests {
    use super::*;
    use lb_l7_core::policy::Policy;

    #[test]
    fn yaml_and_json_round_trip_to_the_same_object() {
        let cfg = render_webhook_configuration(
            &Policy::default(),
            &RenderOptions {
                ca: CaSource::Bundle(b"-----BEGIN CERTIFICATE-----\n".to_vec()),
                ..RenderOptions::default()
            },
        );
        let yaml = to_text(&cfg, OutputFormat::Yaml).unwrap();
        let back: MutatingWebhookConfiguration = serde_saphyr::from_str(&yaml).unwrap();
        assert_eq!(back, cfg);
        let json = to_text(&cfg, OutputFormat::Json).unwrap();
        let back: MutatingWebhookConfiguration = serde_json::from_str(&json).unwrap();
        assert_eq!(back, cfg);
        assert!(json.contains("\"apiVersion\": \"admissionregistration.k8s.io/v1\""));
    }

    #[test]
    fn admission_policy_yaml_is_four_documents_of_the_asked_version() {
        let text = admission_policies_text(
            &Policy::default(),
            ApiVersionArg::V1beta1,
            OutputFormat::Yaml,
        )
        .unwrap();
        let docs: Vec<serde_json::Value> = text
            .split("\n---\n")
            .skip(1)
            .map(|d| serde_saphyr::from_str(d).unwrap())
            .collect();
        let kinds: Vec<String> = docs
            .iter()
            .map(|d| {
                format!(
                    "{} {}",
                    d["apiVersion"].as_str().unwrap(),
                    d["kind"].as_str().unwrap()
                )
            })
            .collect();
        assert_eq!(
            kinds,
            [
                "admissionregistration.k8s.io/v1beta1 MutatingAdmissionPolicy",
                "admissionregistration.k8s.io/v1beta1 MutatingAdmissionPolicyBinding",
                "admissionregistration.k8s.io/v1 ValidatingAdmissionPolicy",
                "admissionregistration.k8s.io/v1 ValidatingAdmissionPolicyBinding",
            ]
        );
    }
}
