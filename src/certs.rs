//! Certificates: a CA and a serving certificate signed by it (rcgen), written as PEM files.
//!
//! `serve` calls [`ensure_dev_certs`] on its first run so it needs no set-up; the `certs` subcommand builds on
//! the same functions.

use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};

use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa,
    Issuer, KeyPair, KeyUsagePurpose, PublicKeyData, SanType,
};
use time::{Duration, OffsetDateTime};

/// Errors from making or writing certificates; the message names the file or the step.
#[derive(Debug, thiserror::Error)]
pub enum CertError {
    #[error("generating {what}: {source}")]
    Generate {
        what: &'static str,
        #[source]
        source: rcgen::Error,
    },
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{path}: {message}")]
    Invalid { path: PathBuf, message: String },
    #[error("{0}")]
    Flag(String),
}

/// A certificate and its private key, both PEM.
#[derive(Debug, Clone)]
pub struct PemPair {
    pub cert_pem: String,
    pub key_pem: String,
}

/// The four files of a certificate directory.
#[derive(Debug, Clone)]
pub struct CertPaths {
    pub ca_crt: PathBuf,
    pub ca_key: PathBuf,
    pub tls_crt: PathBuf,
    pub tls_key: PathBuf,
}

impl CertPaths {
    pub fn in_dir(dir: &Path) -> Self {
        CertPaths {
            ca_crt: dir.join("ca.crt"),
            ca_key: dir.join("ca.key"),
            tls_crt: dir.join("tls.crt"),
            tls_key: dir.join("tls.key"),
        }
    }
}

fn gen_err(what: &'static str) -> impl FnOnce(rcgen::Error) -> CertError {
    move |source| CertError::Generate { what, source }
}

/// A new self-signed CA.
pub fn generate_ca(common_name: &str, days: u32) -> Result<PemPair, CertError> {
    let now = OffsetDateTime::now_utc();
    // A little slack for clocks that lag behind ours.
    generate_ca_between(
        common_name,
        now - Duration::minutes(5),
        now + Duration::days(i64::from(days.max(1))),
    )
}

/// The validity window of a certificate made at `now` for `validity`: backdated by a tenth of it (at most five
/// minutes) for clocks that lag behind ours, so a one-minute certificate is still mostly in the future.
pub fn window(
    now: OffsetDateTime,
    validity: std::time::Duration,
) -> (OffsetDateTime, OffsetDateTime) {
    let validity = Duration::try_from(validity)
        .unwrap_or(Duration::days(36500))
        .max(Duration::seconds(1));
    let backdate: Duration = (validity / 10_i32).min(Duration::minutes(5));
    (now - backdate, now + validity)
}

/// A new self-signed CA valid from `not_before` to `not_after`.
pub fn generate_ca_between(
    common_name: &str,
    not_before: OffsetDateTime,
    not_after: OffsetDateTime,
) -> Result<PemPair, CertError> {
    let key = KeyPair::generate().map_err(gen_err("the CA key"))?;
    let mut params = CertificateParams::new(Vec::<String>::new()).map_err(gen_err("the CA"))?;
    let mut dn = DistinguishedName::new();
    dn.push(DnType::CommonName, common_name);
    params.distinguished_name = dn;
    params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    params.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    params.not_before = not_before;
    params.not_after = not_after;
    let cert = params.self_signed(&key).map_err(gen_err("the CA"))?;
    Ok(PemPair {
        cert_pem: cert.pem(),
        key_pem: key.serialize_pem(),
    })
}

/// A serving certificate for `sans` (DNS names or IP addresses), signed by the CA.
pub fn issue_serving(ca: &PemPair, sans: &[String], days: u32) -> Result<PemPair, CertError> {
    let now = OffsetDateTime::now_utc();
    issue_serving_between(
        ca,
        sans,
        now - Duration::minutes(5),
        now + Duration::days(i64::from(days.max(1))),
    )
}

/// A serving certificate for `sans`, signed by the CA, valid from `not_before` to `not_after`.
pub fn issue_serving_between(
    ca: &PemPair,
    sans: &[String],
    not_before: OffsetDateTime,
    not_after: OffsetDateTime,
) -> Result<PemPair, CertError> {
    let ca_key = KeyPair::from_pem(&ca.key_pem).map_err(gen_err("reading the CA key"))?;
    let issuer =
        Issuer::from_ca_cert_pem(&ca.cert_pem, ca_key).map_err(gen_err("reading the CA"))?;
    let key = KeyPair::generate().map_err(gen_err("the serving key"))?;
    let mut params =
        CertificateParams::new(Vec::<String>::new()).map_err(gen_err("the serving certificate"))?;
    params.subject_alt_names = sans
        .iter()
        .map(|s| match s.parse::<std::net::IpAddr>() {
            Ok(ip) => Ok(SanType::IpAddress(ip)),
            Err(_) => s
                .clone()
                .try_into()
                .map(SanType::DnsName)
                .map_err(gen_err("a DNS name")),
        })
        .collect::<Result<_, _>>()?;
    let mut dn = DistinguishedName::new();
    dn.push(
        DnType::CommonName,
        sans.first().map(String::as_str).unwrap_or("lb-l7-webhook"),
    );
    params.distinguished_name = dn;
    params.is_ca = IsCa::ExplicitNoCa;
    params.key_usages = vec![
        KeyUsagePurpose::DigitalSignature,
        KeyUsagePurpose::KeyEncipherment,
    ];
    params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
    params.use_authority_key_identifier_extension = true;
    params.not_before = not_before;
    params.not_after = not_after;
    let cert = params
        .signed_by(&key, &issuer)
        .map_err(gen_err("the serving certificate"))?;
    Ok(PemPair {
        cert_pem: cert.pem(),
        key_pem: key.serialize_pem(),
    })
}

/// Writes a file; private keys get mode 0600 (on Unix) before any byte is written.
pub fn write_file(path: &Path, contents: &str, private: bool) -> Result<(), CertError> {
    let io = |source| CertError::Io {
        path: path.to_path_buf(),
        source,
    };
    if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
        fs::create_dir_all(parent).map_err(io)?;
    }
    let mut options = fs::OpenOptions::new();
    options.write(true).create(true).truncate(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
        if private {
            options.mode(0o600);
        }
        let mut f = options.open(path).map_err(io)?;
        if private {
            f.set_permissions(fs::Permissions::from_mode(0o600))
                .map_err(io)?;
        }
        f.write_all(contents.as_bytes()).map_err(io)?;
    }
    #[cfg(not(unix))]
    {
        let _ = private;
        let mut f = options.open(path).map_err(io)?;
        f.write_all(contents.as_bytes()).map_err(io)?;
    }
    Ok(())
}

fn read(path: &Path) -> Result<String, CertError> {
    fs::read_to_string(path).map_err(|source| CertError::Io {
        path: path.to_path_buf(),
        source,
    })
}

/// Reads the CA in `paths`, if both its files exist.
pub fn read_ca(paths: &CertPaths) -> Result<Option<PemPair>, CertError> {
    if !paths.ca_crt.exists() || !paths.ca_key.exists() {
        return Ok(None);
    }
    Ok(Some(PemPair {
        cert_pem: read(&paths.ca_crt)?,
        key_pem: read(&paths.ca_key)?,
    }))
}

/// For `serve`'s first run: when `dir/tls.crt` does not exist, writes a CA and a serving certificate for
/// localhost, 127.0.0.1 and ::1 into `dir`. Returns the paths and whether anything was written.
pub fn ensure_dev_certs(dir: &Path) -> Result<(CertPaths, bool), CertError> {
    let paths = CertPaths::in_dir(dir);
    if paths.tls_crt.exists() && paths.tls_key.exists() {
        return Ok((paths, false));
    }
    let ca = match read_ca(&paths)? {
        Some(ca) => ca,
        None => {
            let ca = generate_ca("lb-l7-webhook development CA", 3650)?;
            write_file(&paths.ca_crt, &ca.cert_pem, false)?;
            write_file(&paths.ca_key, &ca.key_pem, true)?;
            ca
        }
    };
    let sans = ["localhost", "127.0.0.1", "::1"].map(String::from);
    let serving = issue_serving(&ca, &sans, 365)?;
    write_file(&paths.tls_key, &serving.key_pem, true)?;
    write_file(&paths.tls_crt, &serving.cert_pem, false)?;
    Ok((paths, true))
}

/// The DNS names the API server uses for a webhook Service `name` in `namespace`.
pub fn service_dns_names(name: &str, namespace: &str) -> Vec<String> {
    vec![
        format!("{name}.{namespace}.svc"),
        format!("{name}.{namespace}.svc.cluster.local"),
        format!("{name}.{namespace}"),
        name.to_string(),
    ]
}

impl CertsArgs {
    /// `--service` as (namespace, name): `NAMESPACE/NAME`, or a bare NAME in `--namespace`.
    pub fn service_ref(&self) -> Result<(String, String), CertError> {
        if self.service.contains('/') {
            lb_l7_core::render::parse_namespaced(&self.service).map_err(CertError::Flag)
        } else {
            Ok((self.namespace.clone(), self.service.clone()))
        }
    }
}

/// `certs`' flags.
#[derive(clap::Args, Debug, Clone)]
pub struct CertsArgs {
    /// The webhook's Service, NAMESPACE/NAME as every other command names objects (the certificate is for
    /// NAME.NAMESPACE.svc and friends). A bare NAME still works, with its namespace from --namespace.
    #[arg(
        long,
        env = "LB_L7_CERTS_SERVICE",
        value_name = "NAMESPACE/NAME",
        default_value = "lb-l7-webhook"
    )]
    pub service: String,

    /// Namespace of the webhook's Service when --service is a bare NAME (the older form).
    #[arg(long, env = "LB_L7_CERTS_NAMESPACE", default_value = lb_l7_core::policy::WEBHOOK_NAMESPACE)]
    pub namespace: String,

    /// Directory for ca.crt, ca.key, tls.crt and tls.key.
    #[arg(long, env = "LB_L7_CERTS_OUT_DIR", default_value = "certs")]
    pub out_dir: PathBuf,

    /// Validity of the serving certificate, in days.
    #[arg(long, env = "LB_L7_CERTS_DAYS", default_value_t = 365, value_parser = clap::value_parser!(u32).range(1..=3650))]
    pub days: u32,

    /// Validity of a new CA, in days.
    #[arg(long, env = "LB_L7_CERTS_CA_DAYS", default_value_t = 3650, value_parser = clap::value_parser!(u32).range(1..=36500))]
    pub ca_days: u32,

    /// An extra DNS name or IP address for the serving certificate (repeat it for more).
    #[arg(long = "san", env = "LB_L7_CERTS_SAN", value_delimiter = ',')]
    pub sans: Vec<String>,

    /// Make a new CA even when out-dir already has one (every caBundle must then be updated).
    #[arg(long, env = "LB_L7_CERTS_NEW_CA")]
    pub new_ca: bool,

    /// Also write a Secret manifest (type kubernetes.io/tls, with ca.crt) to this file; mode 0600.
    #[arg(long, env = "LB_L7_CERTS_SECRET_MANIFEST")]
    pub secret_manifest: Option<PathBuf>,

    /// metadata.name of the Secret manifest (the deploy/ manifests mount `lb-l7-webhook-tls`).
    #[arg(
        long,
        env = "LB_L7_CERTS_SECRET_NAME",
        default_value = "lb-l7-webhook-tls"
    )]
    pub secret_name: String,
}

/// What [`generate`] did.
#[derive(Debug, Clone)]
pub struct CertsOutcome {
    pub paths: CertPaths,
    /// Whether a new CA was made (otherwise the existing one signed the serving certificate).
    pub new_ca: bool,
    /// The SANs of the serving certificate.
    pub sans: Vec<String>,
    /// The caBundle value: base64 of ca.crt.
    pub ca_bundle_base64: String,
    pub ca: PemPair,
    pub serving: PemPair,
}

/// Writes a file atomically: a temporary file beside it, then a rename, so a `serve` watching the directory
/// never reads half a file.
fn write_atomic(path: &Path, contents: &str, private: bool) -> Result<(), CertError> {
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let tmp = path.with_file_name(format!(".{name}.tmp"));
    write_file(&tmp, contents, private)?;
    fs::rename(&tmp, path).map_err(|source| CertError::Io {
        path: path.to_path_buf(),
        source,
    })
}

/// Checks that `key_pem` is the private key of `cert_pem` (their public keys are the same).
pub fn check_pair(cert_pem: &str, key_pem: &str, cert_path: &Path) -> Result<(), CertError> {
    let invalid = |message: String| CertError::Invalid {
        path: cert_path.to_path_buf(),
        message,
    };
    let (_, pem) = x509_parser::pem::parse_x509_pem(cert_pem.as_bytes())
        .map_err(|e| invalid(format!("not a PEM certificate: {e}")))?;
    let cert = pem
        .parse_x509()
        .map_err(|e| invalid(format!("not an X.509 certificate: {e}")))?;
    let key = KeyPair::from_pem(key_pem)
        .map_err(|e| invalid(format!("its private key does not parse: {e}")))?;
    if cert.public_key().subject_public_key.data.as_ref() != key.der_bytes() {
        return Err(invalid(
            "the certificate and its .key file do not belong together".to_string(),
        ));
    }
    Ok(())
}

/// The certificate files for a webhook Service: reuses the CA in `args.out_dir` unless `args.new_ca` (or there is
/// none), and always issues a new serving certificate.
pub fn generate(args: &CertsArgs) -> Result<CertsOutcome, CertError> {
    let (namespace, service) = args.service_ref()?;
    let paths = CertPaths::in_dir(&args.out_dir);
    let existing = if args.new_ca { None } else { read_ca(&paths)? };
    let (ca, new_ca) = match existing {
        Some(ca) => {
            check_pair(&ca.cert_pem, &ca.key_pem, &paths.ca_crt)?;
            (ca, false)
        }
        None => {
            let ca = generate_ca(
                &format!("lb-l7-webhook CA ({service}.{namespace})"),
                args.ca_days,
            )?;
            write_atomic(&paths.ca_key, &ca.key_pem, true)?;
            write_atomic(&paths.ca_crt, &ca.cert_pem, false)?;
            (ca, true)
        }
    };
    let mut sans = service_dns_names(&service, &namespace);
    for san in &args.sans {
        let san = san.trim();
        if !san.is_empty() && !sans.iter().any(|s| s == san) {
            sans.push(san.to_string());
        }
    }
    let serving = issue_serving(&ca, &sans, args.days)?;
    // Key first, then certificate: a reader that sees the new certificate also finds its key.
    write_atomic(&paths.tls_key, &serving.key_pem, true)?;
    write_atomic(&paths.tls_crt, &serving.cert_pem, false)?;
    use base64::Engine as _;
    let ca_bundle_base64 = base64::engine::general_purpose::STANDARD.encode(&ca.cert_pem);
    Ok(CertsOutcome {
        paths,
        new_ca,
        sans,
        ca_bundle_base64,
        ca,
        serving,
    })
}

/// A Secret of type kubernetes.io/tls with `tls.crt`, `tls.key` and `ca.crt`.
pub fn tls_secret(
    name: &str,
    namespace: &str,
    serving: &PemPair,
    ca: &PemPair,
) -> k8s_openapi::api::core::v1::Secret {
    use k8s_openapi::ByteString;
    use std::collections::BTreeMap;
    k8s_openapi::api::core::v1::Secret {
        metadata: k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta {
            name: Some(name.to_string()),
            namespace: Some(namespace.to_string()),
            labels: Some(BTreeMap::from([(
                "app.kubernetes.io/name".to_string(),
                "lb-l7-webhook".to_string(),
            )])),
            ..Default::default()
        },
        type_: Some("kubernetes.io/tls".to_string()),
        data: Some(BTreeMap::from([
            (
                "tls.crt".to_string(),
                ByteString(serving.cert_pem.clone().into_bytes()),
            ),
            (
                "tls.key".to_string(),
                ByteString(serving.key_pem.clone().into_bytes()),
            ),
            (
                "ca.crt".to_string(),
                ByteString(ca.cert_pem.clone().into_bytes()),
            ),
        ])),
        ..Default::default()
    }
}

/// `lb-l7-webhook certs`: writes the files, prints the base64 caBundle on stdout and what to do next on stderr.
pub async fn run(args: CertsArgs) -> anyhow::Result<std::process::ExitCode> {
    use anyhow::Context as _;
    let outcome = generate(&args)?;
    let (namespace, _) = args.service_ref()?;
    if let Some(path) = &args.secret_manifest {
        let secret = tls_secret(&args.secret_name, &namespace, &outcome.serving, &outcome.ca);
        let yaml = serde_saphyr::to_string(&secret).context("serializing the Secret manifest")?;
        write_file(path, &yaml, true)?;
        eprintln!(
            "wrote {} (Secret {}/{}, type kubernetes.io/tls; it holds the private key)",
            path.display(),
            namespace,
            args.secret_name
        );
    }
    eprintln!(
        "{} {} and wrote {} + {} for {}",
        if outcome.new_ca {
            "made a new CA"
        } else {
            "kept the CA"
        },
        outcome.paths.ca_crt.display(),
        outcome.paths.tls_crt.display(),
        outcome.paths.tls_key.display(),
        outcome.sans.join(", ")
    );
    if outcome.new_ca {
        eprintln!(
            "a new CA: the webhook configuration needs its caBundle (printed on stdout), e.g. after applying deploy/:\n  \
             kubectl patch mutatingwebhookconfiguration lb-l7-webhook --type=json \
             -p '[{{\"op\":\"add\",\"path\":\"/webhooks/0/clientConfig/caBundle\",\"value\":\"'\"$(base64 -w0 {})\"'\"}}]'",
            outcome.paths.ca_crt.display()
        );
    }
    println!("{}", outcome.ca_bundle_base64);
    Ok(std::process::ExitCode::SUCCESS)
}
