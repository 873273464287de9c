//! A caBundle (PEM certificates, as the API server stores it), parsed once for every edge: `manifests
//! --ca-bundle-file`, doctor's caBundle check and the certificate manager.

/// A certificate of a caBundle, reduced to what the check reports.
#[derive(Debug, Clone, PartialEq)]
pub struct BundleCert {
    pub subject: String,
    pub not_before: i64,
    pub not_after: i64,
}

/// Parses a caBundle (PEM, as the API server stores it). Errors say what is wrong, in words.
pub fn parse_ca_bundle(bundle: &[u8]) -> Result<Vec<BundleCert>, String> {
    if bundle.iter().all(u8::is_ascii_whitespace) {
        return Err("caBundle is empty".into());
    }
    let mut certs = Vec::new();
    for (i, pem) in x509_parser::pem::Pem::iter_from_buffer(bundle).enumerate() {
        let pem = pem.map_err(|e| format!("caBundle PEM block {} does not parse: {e}", i + 1))?;
        if pem.label != "CERTIFICATE" {
            return Err(format!(
                "caBundle PEM block {} is a {:?}, not a CERTIFICATE",
                i + 1,
                pem.label
            ));
        }
        let cert = pem
            .parse_x509()
            .map_err(|e| format!("caBundle certificate {} does not parse: {e}", i + 1))?;
        certs.push(BundleCert {
            subject: cert.subject().to_string(),
            not_before: cert.validity().not_before.timestamp(),
            not_after: cert.validity().not_after.timestamp(),
        });
    }
    if certs.is_empty() {
        return Err("caBundle holds no PEM certificate".into());
    }
    Ok(certs)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ca_bundle_errors_say_what_is_wrong() {
        assert_eq!(parse_ca_bundle(b""), Err("caBundle is empty".to_string()));
        assert_eq!(
            parse_ca_bundle(b"not pem at all"),
            Err("caBundle holds no PEM certificate".to_string())
        );
        let key = b"-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n";
        let err = parse_ca_bundle(key).expect_err("a key is not a CA");
        assert!(err.contains("not a CERTIFICATE"), "{err}");
    }
}
