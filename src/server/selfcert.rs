//! Self-managed certificates (`serve --cert-secret`): the pure part. Given what the Secret holds, what the webhook
//! configuration's `caBundle`s hold and the time, decide what the Secret must hold next and which certificate may
//! be served. No IO: [`super::certmanager`] reads and writes the objects (through `crate::cluster::certs`).
//!
//! The Secret holds `ca.crt` (one or more CA certificates: the bundle every `caBundle` must equal), `ca.key` (the
//! key of the CA that signs: the one of the bundle whose public key it is), `tls.crt` and `tls.key`.
//!
//! The rules, each a test below:
//! - no usable CA (absent, expired, or `ca.key` belongs to none) -> a new CA, added to the bundle;
//! - the signing CA at two thirds of its lifetime -> a new CA is added to the bundle (the old one stays until it
//!   expires, so the certificate it signed stays trusted);
//! - the serving certificate is re-issued when it is missing, broken, not for every name, at two thirds of its
//!   lifetime, or not signed by the signing CA; but while a usable one exists, a new one is issued only once every
//!   `caBundle` already holds the signing CA (the overlap: the new CA is trusted before anything it signed is served);
//! - expired CAs leave the bundle;
//! - a certificate is served only when every `caBundle` trusts it for the Service's name.

use std::sync::Arc;
use std::time::Duration;

use rcgen::{KeyPair, PublicKeyData};
use rustls::client::WebPkiServerVerifier;
use rustls::client::danger::ServerCertVerifier;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use time::OffsetDateTime;

use crate::certs::{self, CertError, PemPair};

/// The four keys of the Secret.
pub const CA_CRT: &str = "ca.crt";
pub const CA_KEY: &str = "ca.key";
pub const TLS_CRT: &str = "tls.crt";
pub const TLS_KEY: &str = "tls.key";

/// What `serve --cert-secret` was told.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Settings {
    pub secret_namespace: String,
    pub secret_name: String,
    pub webhook_configuration: String,
    /// Names of the serving certificate: the Service's DNS names first (`name.ns.svc` is the one the API server
    /// checks), then every `--san`.
    pub sans: Vec<String>,
    pub ca_validity: Duration,
    pub cert_validity: Duration,
}

impl Settings {
    /// The name a client checks the certificate against: the first SAN (`name.ns.svc`).
    pub fn server_name(&self) -> &str {
        self.sans.first().map(String::as_str).unwrap_or("localhost")
    }
}

/// The Secret's four values (empty when absent).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Contents {
    pub ca_crt: String,
    pub ca_key: String,
    pub tls_crt: String,
    pub tls_key: String,
}

impl Contents {
    /// From the Secret's `data` (values that are not UTF-8 count as absent).
    pub fn from_data<'a>(data: impl IntoIterator<Item = (&'a String, &'a Vec<u8>)>) -> Self {
        let mut c = Contents::default();
        for (k, v) in data {
            let v = String::from_utf8(v.clone()).unwrap_or_default();
            match k.as_str() {
                CA_CRT => c.ca_crt = v,
                CA_KEY => c.ca_key = v,
                TLS_CRT => c.tls_crt = v,
                TLS_KEY => c.tls_key = v,
                _ => {}
            }
        }
        c
    }

    /// The four keys and values.
    pub fn to_data(&self) -> [(&'static str, &str); 4] {
        [
            (CA_CRT, &self.ca_crt),
            (CA_KEY, &self.ca_key),
            (TLS_CRT, &self.tls_crt),
            (TLS_KEY, &self.tls_key),
        ]
    }
}

/// One CA certificate of a bundle.
#[derive(Debug, Clone)]
struct Ca {
    pem: String,
    der: CertificateDer<'static>,
    not_before: i64,
    not_after: i64,
    public_key: Vec<u8>,
}

impl Ca {
    fn renew_at(&self) -> i64 {
        renew_at(self.not_before, self.not_after)
    }
}

fn at(now: i64) -> OffsetDateTime {
    OffsetDateTime::from_unix_timestamp(now).unwrap_or_else(|_| OffsetDateTime::now_utc())
}

/// Two thirds into a lifetime.
fn renew_at(not_before: i64, not_after: i64) -> i64 {
    not_before + (not_after - not_before).max(0) * 2 / 3
}

/// The certificates of a PEM bundle that parse (others are dropped).
fn parse_bundle(pem: &str) -> Vec<Ca> {
    let mut out = Vec::new();
    for block in pem.split_inclusive("-----END CERTIFICATE-----") {
        let Some(start) = block.find("-----BEGIN CERTIFICATE-----") else {
            continue;
        };
        let block = &block[start..];
        let Ok(der) = CertificateDer::from_pem_slice(block.as_bytes()) else {
            continue;
        };
        let Ok((_, cert)) = x509_parser::parse_x509_certificate(&der) else {
            continue;
        };
        out.push(Ca {
            pem: format!("{}\n", block.trim_end()),
            not_before: cert.validity().not_before.timestamp(),
            not_after: cert.validity().not_after.timestamp(),
            public_key: cert.public_key().subject_public_key.data.to_vec(),
            der: der.clone().into_owned(),
        });
    }
    out
}

/// The DER certificates of a PEM bundle (a `caBundle`).
pub fn bundle_ders(pem: &[u8]) -> Vec<CertificateDer<'static>> {
    CertificateDer::pem_slice_iter(pem)
        .filter_map(Result::ok)
        .collect()
}

/// Whether a client that trusts exactly `bundle` (PEM) accepts `cert_pem` (chain) for `name` at `now`.
pub fn trusts(bundle: &[u8], cert_pem: &[u8], name: &str, now: i64) -> bool {
    let mut roots = rustls::RootCertStore::empty();
    for der in bundle_ders(bundle) {
        let _ = roots.add(der);
    }
    if roots.is_empty() {
        return false;
    }
    let Ok(verifier) = WebPkiServerVerifier::builder_with_provider(
        Arc::new(roots),
        Arc::new(rustls::crypto::ring::default_provider()),
    )
    .build() else {
        return false;
    };
    let chain = bundle_ders(cert_pem);
    let Some((leaf, rest)) = chain.split_first() else {
        return false;
    };
    let Ok(name) = ServerName::try_from(name.to_string()) else {
        return false;
    };
    let now = UnixTime::since_unix_epoch(Duration::from_secs(now.max(0) as u64));
    verifier
        .verify_server_cert(leaf, rest, &name, &[], now)
        .is_ok()
}

/// Whether `key_pem` is the private key of `cert_pem`'s first certificate.
fn pair_matches(cert_pem: &str, key_pem: &str) -> bool {
    let Some(der) = bundle_ders(cert_pem.as_bytes()).into_iter().next() else {
        return false;
    };
    let Ok((_, cert)) = x509_parser::parse_x509_certificate(&der) else {
        return false;
    };
    let Ok(key) = KeyPair::from_pem(key_pem) else {
        return false;
    };
    cert.public_key().subject_public_key.data.as_ref() == key.der_bytes()
}

/// Validity (not_before, not_after) of the first certificate of `pem`.
fn validity_of(pem: &str) -> Option<(i64, i64)> {
    let der = bundle_ders(pem.as_bytes()).into_iter().next()?;
    let (_, cert) = x509_parser::parse_x509_certificate(&der).ok()?;
    Some((
        cert.validity().not_before.timestamp(),
        cert.validity().not_after.timestamp(),
    ))
}

/// What changed in a plan (for logs and `lb_l7_webhook_cert_rotations_total{what}`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Change {
    /// A new CA joined the bundle.
    NewCa,
    /// Expired CAs left the bundle.
    PrunedCa,
    /// A new serving certificate.
    Serving,
}

impl Change {
    pub fn as_str(self) -> &'static str {
        match self {
            Change::NewCa => "ca",
            Change::PrunedCa => "ca_pruned",
            Change::Serving => "serving",
        }
    }
}

/// What to do with the Secret.
#[derive(Debug, Clone, Default)]
pub struct Plan {
    /// The Secret's new contents, when they must change.
    pub write: Option<Contents>,
    pub changes: Vec<Change>,
    /// True when a new serving certificate is due but waits until every caBundle holds the signing CA.
    pub waiting_for_ca_bundle: bool,
}

/// Decides what the Secret must hold next. `observed` is the `caBundle` of every webhook of the configuration
/// (`None` when the configuration could not be read).
pub fn plan(
    current: &Contents,
    observed: Option<&[Vec<u8>]>,
    now: i64,
    settings: &Settings,
) -> Result<Plan, CertError> {
    let mut changes = Vec::new();
    let parsed = parse_bundle(&current.ca_crt);
    let mut cas: Vec<Ca> = parsed
        .iter()
        .filter(|c| c.not_after > now)
        .cloned()
        .collect();
    if cas.len() != parsed.len() && !parsed.is_empty() {
        changes.push(Change::PrunedCa);
    }
    let key_public = KeyPair::from_pem(&current.ca_key)
        .ok()
        .map(|k| k.der_bytes().to_vec());
    let mut signing = cas
        .iter()
        .position(|c| Some(&c.public_key) == key_public.as_ref());
    let mut ca_key = current.ca_key.clone();
    let due = match signing {
        None => true,
        Some(i) => now >= cas[i].renew_at(),
    };
    if due {
        let (not_before, not_after) = certs::window(at(now), settings.ca_validity);
        let cn = format!(
            "lb-l7-webhook CA {}",
            at(now)
                .format(&time::format_description::well_known::Rfc3339)
                .unwrap_or_default()
        );
        let ca = certs::generate_ca_between(&cn, not_before, not_after)?;
        let mut new = parse_bundle(&ca.cert_pem);
        let Some(new) = new.pop() else {
            return Err(CertError::Invalid {
                path: "generated CA".into(),
                message: "does not parse".into(),
            });
        };
        cas.push(new);
        signing = Some(cas.len() - 1);
        ca_key = ca.key_pem;
        changes.push(Change::NewCa);
    }
    let Some(signing) = signing.map(|i| cas[i].clone()) else {
        return Err(CertError::Invalid {
            path: "CA".into(),
            message: "no signing CA".into(),
        });
    };
    let bundle: String = cas.iter().map(|c| c.pem.as_str()).collect();

    // The serving certificate.
    let name = settings.server_name();
    let usable = pair_matches(&current.tls_crt, &current.tls_key)
        && trusts(bundle.as_bytes(), current.tls_crt.as_bytes(), name, now)
        && settings.sans.iter().all(|san| {
            trusts(bundle.as_bytes(), current.tls_crt.as_bytes(), san, now)
                || san.parse::<std::net::IpAddr>().is_ok() && has_ip(&current.tls_crt, san)
        });
    let signed_by_signing = usable
        && trusts(
            signing.pem.as_bytes(),
            current.tls_crt.as_bytes(),
            name,
            now,
        );
    let renew = match validity_of(&current.tls_crt) {
        Some((nb, na)) => now >= renew_at(nb, na),
        None => true,
    };
    let mut tls = (current.tls_crt.clone(), current.tls_key.clone());
    let mut waiting = false;
    if !usable || renew || !signed_by_signing {
        let signing_trusted = observed.is_some_and(|bundles| {
            bundles
                .iter()
                .all(|b| bundle_ders(b).contains(&signing.der))
        });
        if signing_trusted || !usable {
            let (not_before, not_after) = certs::window(at(now), settings.cert_validity);
            // Never valid past the CA that signs it.
            let cap = OffsetDateTime::from_unix_timestamp(signing.not_after).unwrap_or(not_after);
            let serving = certs::issue_serving_between(
                &PemPair {
                    cert_pem: signing.pem.clone(),
                    key_pem: ca_key.clone(),
                },
                &settings.sans,
                not_before,
                not_after.min(cap),
            )?;
            tls = (serving.cert_pem, serving.key_pem);
            changes.push(Change::Serving);
        } else {
            waiting = true;
        }
    }
    let next = Contents {
        ca_crt: bundle,
        ca_key,
        tls_crt: tls.0,
        tls_key: tls.1,
    };
    Ok(Plan {
        write: (next != *current).then_some(next),
        changes,
        waiting_for_ca_bundle: waiting,
    })
}

/// Whether the certificate lists `ip` among its IP SANs (webpki checks IPs only for IP server names; `trusts`
/// covers that too, this is a fallback for addresses rustls cannot parse as a name).
fn has_ip(cert_pem: &str, ip: &str) -> bool {
    let Ok(ip) = ip.parse::<std::net::IpAddr>() else {
        return false;
    };
    let Some(der) = bundle_ders(cert_pem.as_bytes()).into_iter().next() else {
        return false;
    };
    let Ok((_, cert)) = x509_parser::parse_x509_certificate(&der) else {
        return false;
    };
    let Ok(Some(san)) = cert.subject_alternative_name() else {
        return false;
    };
    san.value.general_names.iter().any(|g| match g {
        x509_parser::extensions::GeneralName::IPAddress(b) => match ip {
            std::net::IpAddr::V4(v4) => *b == v4.octets(),
            std::net::IpAddr::V6(v6) => *b == v6.octets(),
        },
        _ => false,
    })
}

/// The certificate and key to serve from `contents`, when every observed `caBundle` trusts it.
pub fn servable(
    contents: &Contents,
    observed: Option<&[Vec<u8>]>,
    settings: &Settings,
    now: i64,
) -> Option<(String, String)> {
    if !pair_matches(&contents.tls_crt, &contents.tls_key)
        || PrivateKeyDer::from_pem_slice(contents.tls_key.as_bytes()).is_err()
    {
        return None;
    }
    trusted_by_all(observed, contents.tls_crt.as_bytes(), settings, now)
        .then(|| (contents.tls_crt.clone(), contents.tls_key.clone()))
}

/// Whether every observed `caBundle` trusts `cert_pem` for the server name.
pub fn trusted_by_all(
    observed: Option<&[Vec<u8>]>,
    cert_pem: &[u8],
    settings: &Settings,
    now: i64,
) -> bool {
    observed.is_some_and(|bundles| {
        bundles
            .iter()
            .all(|b| trusts(b, cert_pem, settings.server_name(), now))
    })
}

/// When to look again (at the latest): the next renewal or expiry in `contents`, at least one second and at most
/// ten minutes away (a resync in case a watch missed something).
pub fn next_check(contents: &Contents, now: i64) -> Duration {
    let mut times = Vec::new();
    for ca in parse_bundle(&contents.ca_crt) {
        times.push(ca.renew_at());
        times.push(ca.not_after);
    }
    if let Some((nb, na)) = validity_of(&contents.tls_crt) {
        times.push(renew_at(nb, na));
    }
    let next = times.into_iter().filter(|t| *t > now).min();
    let secs = next.map(|t| t - now).unwrap_or(600).clamp(1, 600);
    Duration::from_secs(secs as u64)
}

/// Expiry (Unix seconds) of the first certificate of `pem`, if it parses.
pub fn not_after(pem: &str) -> Option<i64> {
    validity_of(pem).map(|(_, na)| na)
}

/// The number of CA certificates in a PEM bundle.
pub fn bundle_len(pem: &str) -> usize {
    parse_bundle(pem).len()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings(ca: u64, cert: u64) -> Settings {
        Settings {
            secret_namespace: "lb-l7-system".into(),
            secret_name: "lb-l7-webhook-certs".into(),
            webhook_configuration: "lb-l7-webhook".into(),
            sans: crate::certs::service_dns_names("lb-l7-webhook", "lb-l7-system")
                .into_iter()
                .chain(["127.0.0.1".to_string()])
                .collect(),
            ca_validity: Duration::from_secs(ca),
            cert_validity: Duration::from_secs(cert),
        }
    }

    fn now() -> i64 {
        OffsetDateTime::now_utc().unix_timestamp()
    }

    fn applied(c: &Contents, p: &Plan) -> Contents {
        p.write.clone().unwrap_or_else(|| c.clone())
    }

    const DAY: u64 = 86400;

    #[test]
    fn an_empty_secret_gets_a_ca_and_a_serving_certificate_for_every_name() {
        let s = settings(3650 * DAY, 365 * DAY);
        let p = plan(&Contents::default(), None, now(), &s).unwrap();
        let c = p.write.expect("written");
        assert_eq!(p.changes, vec![Change::NewCa, Change::Serving]);
        assert_eq!(bundle_len(&c.ca_crt), 1);
        for san in &s.sans {
            assert!(
                trusts(c.ca_crt.as_bytes(), c.tls_crt.as_bytes(), san, now()),
                "{san}"
            );
        }
        assert!(pair_matches(&c.tls_crt, &c.tls_key));
        // Not served until the caBundle holds the CA.
        assert!(servable(&c, None, &s, now()).is_none());
        assert!(servable(&c, Some(&[Vec::new()]), &s, now()).is_none());
        assert!(servable(&c, Some(&[c.ca_crt.clone().into_bytes()]), &s, now()).is_some());
    }

    #[test]
    fn a_valid_secret_is_kept_as_it_is() {
        let s = settings(3650 * DAY, 365 * DAY);
        let c = applied(
            &Contents::default(),
            &plan(&Contents::default(), None, now(), &s).unwrap(),
        );
        let bundles = [c.ca_crt.clone().into_bytes()];
        let p = plan(&c, Some(&bundles), now(), &s).unwrap();
        assert!(p.write.is_none(), "{:?}", p.changes);
        assert!(!p.waiting_for_ca_bundle);
        let next = next_check(&c, now());
        assert_eq!(next, Duration::from_secs(600), "resync at the latest");
    }

    #[test]
    fn a_missing_name_or_a_foreign_key_gets_a_new_serving_certificate_from_the_same_ca() {
        let s = settings(3650 * DAY, 365 * DAY);
        let c = applied(
            &Contents::default(),
            &plan(&Contents::default(), None, now(), &s).unwrap(),
        );
        let bundles = [c.ca_crt.clone().into_bytes()];
        let mut more = s.clone();
        more.sans.push("webhook.example.com".into());
        let p = plan(&c, Some(&bundles), now(), &more).unwrap();
        let n = p.write.expect("reissued");
        assert_eq!(p.changes, vec![Change::Serving]);
        assert_eq!(n.ca_crt, c.ca_crt, "same CA");
        assert!(trusts(
            n.ca_crt.as_bytes(),
            n.tls_crt.as_bytes(),
            "webhook.example.com",
            now()
        ));

        let other = applied(
            &Contents::default(),
            &plan(&Contents::default(), None, now(), &s).unwrap(),
        );
        let broken = Contents {
            tls_key: other.tls_key,
            ..c.clone()
        };
        let p = plan(&broken, Some(&bundles), now(), &s).unwrap();
        assert_eq!(p.changes, vec![Change::Serving]);
        assert_eq!(p.write.unwrap().ca_crt, c.ca_crt);
    }

    #[test]
    fn the_serving_certificate_renews_at_two_thirds_of_its_lifetime() {
        let s = settings(3650 * DAY, 90);
        let c = applied(
            &Contents::default(),
            &plan(&Contents::default(), None, now(), &s).unwrap(),
        );
        let bundles = [c.ca_crt.clone().into_bytes()];
        let (nb, na) = validity_of(&c.tls_crt).unwrap();
        let at = renew_at(nb, na);
        assert!(
            plan(&c, Some(&bundles), at - 1, &s)
                .unwrap()
                .write
                .is_none()
        );
        let p = plan(&c, Some(&bundles), at, &s).unwrap();
        assert_eq!(p.changes, vec![Change::Serving]);
        let t = now();
        assert_eq!(next_check(&c, t), Duration::from_secs((at - t) as u64));
    }

    #[test]
    fn a_ca_renewal_overlaps_the_new_ca_is_trusted_before_it_signs_what_is_served() {
        let s = settings(90, 60);
        let c1 = applied(
            &Contents::default(),
            &plan(&Contents::default(), None, now(), &s).unwrap(),
        );
        let old_bundle = [c1.ca_crt.clone().into_bytes()];
        let ca1 = parse_bundle(&c1.ca_crt).pop().unwrap();
        let t = ca1.renew_at();

        // Two thirds in: a second CA joins the bundle; the serving certificate stays (signed by the old CA).
        let p = plan(&c1, Some(&old_bundle), t, &s).unwrap();
        assert!(p.changes.contains(&Change::NewCa), "{:?}", p.changes);
        assert!(!p.changes.contains(&Change::Serving));
        assert!(p.waiting_for_ca_bundle);
        let c2 = p.write.unwrap();
        assert_eq!(bundle_len(&c2.ca_crt), 2);
        assert_eq!(c2.tls_crt, c1.tls_crt);
        assert!(servable(&c2, Some(&old_bundle), &s, t).is_some());

        // The same view again changes nothing (no flapping between CAs).
        let p = plan(&c2, Some(&old_bundle), t, &s).unwrap();
        assert!(p.write.is_none(), "{:?}", p.changes);

        // Once the caBundle holds both, a certificate from the new CA.
        let both = [c2.ca_crt.clone().into_bytes()];
        let p = plan(&c2, Some(&both), t, &s).unwrap();
        assert_eq!(p.changes, vec![Change::Serving]);
        let c3 = p.write.unwrap();
        assert!(!trusts(
            c1.ca_crt.as_bytes(),
            c3.tls_crt.as_bytes(),
            s.server_name(),
            t
        ));
        assert!(servable(&c3, Some(&both), &s, t).is_some());
        assert!(
            servable(&c3, Some(&old_bundle), &s, t).is_none(),
            "never served to a caBundle that lacks its CA"
        );

        // After the old CA expired, it leaves the bundle.
        let p = plan(&c3, Some(&both), ca1.not_after, &s).unwrap();
        assert!(p.changes.contains(&Change::PrunedCa), "{:?}", p.changes);
        assert_eq!(bundle_len(&p.write.unwrap().ca_crt), 1);
    }

    #[test]
    fn a_ca_key_that_belongs_to_no_ca_of_the_bundle_starts_a_new_ca_and_keeps_the_old_ones() {
        let s = settings(3650 * DAY, 365 * DAY);
        let c = applied(
            &Contents::default(),
            &plan(&Contents::default(), None, now(), &s).unwrap(),
        );
        let lost = Contents {
            ca_key: String::new(),
            ..c.clone()
        };
        let bundles = [c.ca_crt.clone().into_bytes()];
        let p = plan(&lost, Some(&bundles), now(), &s).unwrap();
        assert_eq!(p.changes, vec![Change::NewCa]);
        let n = p.write.unwrap();
        assert_eq!(bundle_len(&n.ca_crt), 2);
        assert!(n.ca_crt.starts_with(&c.ca_crt));
        assert_eq!(n.tls_crt, c.tls_crt, "kept until the new CA is trusted");
    }

    #[test]
    fn garbage_in_the_secret_is_replaced() {
        let s = settings(3650 * DAY, 365 * DAY);
        let junk = Contents {
            ca_crt: "junk".into(),
            ca_key: "junk".into(),
            tls_crt: "junk".into(),
            tls_key: "junk".into(),
        };
        let p = plan(&junk, Some(&[b"junk".to_vec()]), now(), &s).unwrap();
        assert_eq!(p.changes, vec![Change::NewCa, Change::Serving]);
        let c = p.write.unwrap();
        assert_eq!(bundle_len(&c.ca_crt), 1);
    }

    #[test]
    fn one_minute_validities_give_checks_within_the_minute() {
        let s = settings(60, 60);
        let c = applied(
            &Contents::default(),
            &plan(&Contents::default(), None, now(), &s).unwrap(),
        );
        let next = next_check(&c, now());
        assert!(next <= Duration::from_secs(40), "{next:?}");
        assert!(next >= Duration::from_secs(30), "{next:?}");
    }
}
