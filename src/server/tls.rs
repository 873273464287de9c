//! TLS with certificate rotation and no restart.
//!
//! [`CertStore`] is rustls' certificate resolver: every new handshake reads the current certificate from an
//! `ArcSwap`, so a reload never touches live connections. [`CertStore::watch`] re-reads the files on a timer
//! rather than waiting for one file's inotify event, because Kubernetes Secret volumes change files by swapping a
//! `..data` symlink. New files that are broken or do not belong together are rejected: the old certificate stays,
//! an error is logged and `lb_l7_webhook_tls_reloads_total{result="failure"}` counts it.

use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwapOption;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;

use super::metrics::{Metrics, ReloadLabels};

/// Why a certificate pair was not loaded. The message names the file.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("{path}: {source}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{path}: {message}")]
    Parse { path: PathBuf, message: String },
    #[error("{cert} and {key} do not belong together: {message}")]
    Mismatch {
        cert: PathBuf,
        key: PathBuf,
        message: String,
    },
}

/// The certificate and key files to serve.
#[derive(Debug, Clone)]
pub struct TlsFiles {
    pub cert: PathBuf,
    pub key: PathBuf,
}

/// A loaded pair, with the bytes it came from (to notice changes) and its expiry.
struct Loaded {
    key: Arc<CertifiedKey>,
    cert_bytes: Vec<u8>,
    key_bytes: Vec<u8>,
    not_after: i64,
}

fn read(path: &Path) -> Result<Vec<u8>, TlsError> {
    std::fs::read(path).map_err(|source| TlsError::Read {
        path: path.to_path_buf(),
        source,
    })
}

/// Parses and checks a pair: the key must be the certificate's.
fn parse_pair(
    files: &TlsFiles,
    cert_bytes: &[u8],
    key_bytes: &[u8],
) -> Result<(Arc<CertifiedKey>, i64), TlsError> {
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(cert_bytes)
        .collect::<Result<_, _>>()
        .map_err(|e| TlsError::Parse {
            path: files.cert.clone(),
            message: format!("not a PEM certificate chain: {e}"),
        })?;
    let first = certs.first().ok_or_else(|| TlsError::Parse {
        path: files.cert.clone(),
        message: "no certificate in the file".into(),
    })?;
    let not_after = x509_parser::parse_x509_certificate(first)
        .map(|(_, c)| c.validity().not_after.timestamp())
        .map_err(|e| TlsError::Parse {
            path: files.cert.clone(),
            message: format!("not an X.509 certificate: {e}"),
        })?;
    let key = PrivateKeyDer::from_pem_slice(key_bytes).map_err(|e| TlsError::Parse {
        path: files.key.clone(),
        message: format!("not a PEM private key: {e}"),
    })?;
    let provider = rustls::crypto::ring::default_provider();
    let certified =
        CertifiedKey::from_der(certs, key, &provider).map_err(|e| TlsError::Mismatch {
            cert: files.cert.clone(),
            key: files.key.clone(),
            message: e.to_string(),
        })?;
    Ok((Arc::new(certified), not_after))
}

/// The serving certificate, swappable at run time.
pub struct CertStore {
    /// The files (or, in memory mode, the names used in error messages).
    files: TlsFiles,
    /// False in memory mode (`serve --cert-secret`): nothing to re-read, [`CertStore::set_pem`] swaps.
    from_files: bool,
    /// None until a first certificate is set in memory mode: handshakes fail meanwhile.
    current: ArcSwapOption<Loaded>,
    metrics: Arc<Metrics>,
}

impl fmt::Debug for CertStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CertStore")
            .field("files", &self.files)
            .finish()
    }
}

impl CertStore {
    /// Loads the pair once; an error here stops `serve` at start.
    pub fn load(files: TlsFiles, metrics: Arc<Metrics>) -> Result<Arc<Self>, TlsError> {
        let cert_bytes = read(&files.cert)?;
        let key_bytes = read(&files.key)?;
        let (key, not_after) = parse_pair(&files, &cert_bytes, &key_bytes)?;
        metrics.tls_cert_not_after.set(not_after);
        Ok(Arc::new(CertStore {
            files,
            from_files: true,
            current: ArcSwapOption::from_pointee(Loaded {
                key,
                cert_bytes,
                key_bytes,
                not_after,
            }),
            metrics,
        }))
    }

    /// A store with no certificate yet, filled by [`CertStore::set_pem`] (`serve --cert-secret`: certificates from
    /// a Secret, kept in memory). `source` names them in errors, e.g. `Secret ns/name`.
    pub fn in_memory(source: &str, metrics: Arc<Metrics>) -> Arc<Self> {
        Arc::new(CertStore {
            files: TlsFiles {
                cert: PathBuf::from(format!("{source} tls.crt")),
                key: PathBuf::from(format!("{source} tls.key")),
            },
            from_files: false,
            current: ArcSwapOption::empty(),
            metrics,
        })
    }

    /// Serves this pair from the next handshake on. `Ok(true)` when it differs from the one served; a broken pair
    /// is rejected and the old one stays.
    pub fn set_pem(&self, cert_pem: &[u8], key_pem: &[u8]) -> Result<bool, TlsError> {
        if let Some(current) = self.current.load().as_ref()
            && current.cert_bytes == cert_pem
            && current.key_bytes == key_pem
        {
            return Ok(false);
        }
        let (key, not_after) = parse_pair(&self.files, cert_pem, key_pem)?;
        self.current.store(Some(Arc::new(Loaded {
            key,
            cert_bytes: cert_pem.to_vec(),
            key_bytes: key_pem.to_vec(),
            not_after,
        })));
        self.metrics.tls_cert_not_after.set(not_after);
        Ok(true)
    }

    /// The PEM certificate chain being served, if any.
    pub fn current_cert_pem(&self) -> Option<Vec<u8>> {
        self.current.load().as_ref().map(|l| l.cert_bytes.clone())
    }

    /// A rustls server config that resolves through this store and offers h2 and http/1.1.
    pub fn server_config(self: &Arc<Self>) -> rustls::ServerConfig {
        let mut config = rustls::ServerConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .map(|b| b.with_no_client_auth().with_cert_resolver(self.clone()))
        // ring supports the default versions; this branch cannot be taken, but never panic on it.
        .unwrap_or_else(|_| {
            rustls::ServerConfig::builder()
                .with_no_client_auth()
                .with_cert_resolver(self.clone())
        });
        config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
        config
    }

    /// Re-reads the files; swaps in the new pair when they changed and are good.
    /// Returns `Ok(true)` when a new certificate is now served.
    pub fn reload(&self) -> Result<bool, TlsError> {
        if !self.from_files {
            return Ok(false);
        }
        let cert_bytes = read(&self.files.cert)?;
        let key_bytes = read(&self.files.key)?;
        let current = self.current.load();
        if let Some(current) = current.as_ref()
            && cert_bytes == current.cert_bytes
            && key_bytes == current.key_bytes
        {
            return Ok(false);
        }
        // A Secret volume swaps both files at once, but two reads can straddle the swap: read the certificate
        // again and try later if it moved meanwhile.
        if read(&self.files.cert)? != cert_bytes {
            return Ok(false);
        }
        match parse_pair(&self.files, &cert_bytes, &key_bytes) {
            Ok((key, not_after)) => {
                self.current.store(Some(Arc::new(Loaded {
                    key,
                    cert_bytes,
                    key_bytes,
                    not_after,
                })));
                self.metrics.tls_cert_not_after.set(not_after);
                Ok(true)
            }
            Err(e) => Err(e),
        }
    }

    /// Expiry of the certificate being served (Unix seconds).
    pub fn not_after(&self) -> i64 {
        self.current
            .load()
            .as_ref()
            .map(|l| l.not_after)
            .unwrap_or(0)
    }

    /// Re-reads the files every `interval` until `stop` fires. Failures are logged and counted once per new
    /// content, and the old certificate stays.
    pub async fn watch(
        self: Arc<Self>,
        interval: Duration,
        mut stop: tokio::sync::watch::Receiver<bool>,
    ) {
        if !self.from_files {
            return;
        }
        let mut ticker = tokio::time::interval(interval);
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut last_failure: Option<(Vec<u8>, Vec<u8>)> = None;
        loop {
            tokio::select! {
                _ = ticker.tick() => {}
                _ = stop.changed() => return,
            }
            let store = self.clone();
            let result = tokio::task::spawn_blocking(move || {
                let r = store.reload();
                let seen = (read(&store.files.cert).ok(), read(&store.files.key).ok());
                (r, seen)
            })
            .await;
            let Ok((result, seen)) = result else { continue };
            match result {
                Ok(true) => {
                    last_failure = None;
                    self.metrics
                        .tls_reloads
                        .get_or_create(&ReloadLabels { result: "success" })
                        .inc();
                    tracing::info!(cert = %self.files.cert.display(), not_after = self.not_after(), "serving a new TLS certificate");
                }
                Ok(false) => {}
                Err(e) => {
                    let seen = match seen {
                        (Some(c), Some(k)) => Some((c, k)),
                        _ => None,
                    };
                    if seen.is_none() || seen != last_failure {
                        self.metrics
                            .tls_reloads
                            .get_or_create(&ReloadLabels { result: "failure" })
                            .inc();
                        tracing::error!(error = %e, "new TLS certificate rejected; still serving the old one");
                        last_failure = seen;
                    }
                }
            }
        }
    }
}

impl ResolvesServerCert for CertStore {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        self.current.load().as_ref().map(|l| l.key.clone())
    }
}
