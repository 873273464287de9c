//! Certificates: a CA and a serving certificate signed by it (rcgen), written as PEM files.
//!
//! `serve` calls [`ensure_dev_certs`] on its first run so it needs no set-up; the `certs` subcommand builds on
//! the same functions.

use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};

use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa,
    Issuer, KeyPair, KeyUsagePurpose, SanType,
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

fn validity(params: &mut CertificateParams, days: u32) {
    let now = OffsetDateTime::now_utc();
    // A little slack for clocks that lag behind ours.
    params.not_before = now - Duration::minutes(5);
    params.not_after = now + Duration::days(i64::from(days.max(1)));
}

/// A new self-signed CA.
pub fn generate_ca(common_name: &str, days: u32) -> Result<PemPair, CertError> {
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
    validity(&mut params, days);
    let cert = params.self_signed(&key).map_err(gen_err("the CA"))?;
    Ok(PemPair {
        cert_pem: cert.pem(),
        key_pem: key.serialize_pem(),
    })
}

/// A serving certificate for `sans` (DNS names or IP addresses), signed by the CA.
pub fn issue_serving(ca: &PemPair, sans: &[String], days: u32) -> Result<PemPair, CertError> {
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
    validity(&mut params, days);
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
