//! The node's TLS certificate and the rustls server configuration.
//!
//! On first start apid makes a self-signed certificate for the node name,
//! `localhost`, `127.0.0.1` and `::1`; later starts reuse it.

use std::sync::Arc;

use rcgen::{CertificateParams, DistinguishedName, DnType, KeyPair};
use rustls::ServerConfig;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};

use crate::error::ServerError;
use crate::state_dir::StateDir;

/// How long a generated certificate is valid, in days.
const CERTIFICATE_VALIDITY_DAYS: i64 = 10 * 365;

/// A certificate and its private key, both PEM.
#[derive(Debug, Clone)]
pub struct PemCertificate {
    /// The certificate.
    pub cert: String,
    /// The private key.
    pub key: String,
}

/// The subject alternative names of the certificate for `node`.
pub fn subject_alt_names(node: &str) -> Vec<String> {
    let mut names = vec![node.to_owned()];
    for name in ["localhost", "127.0.0.1", "::1"] {
        if !names.iter().any(|n| n == name) {
            names.push(name.to_owned());
        }
    }
    names
}

/// Makes a self-signed certificate for `node`.
pub fn generate_self_signed(node: &str) -> Result<PemCertificate, ServerError> {
    let mut params = CertificateParams::new(subject_alt_names(node))
        .map_err(ServerError::CertificateGeneration)?;
    let mut subject = DistinguishedName::new();
    subject.push(DnType::CommonName, node);
    subject.push(DnType::OrganizationName, "Oxbow");
    params.distinguished_name = subject;
    let now = time::OffsetDateTime::now_utc();
    params.not_before = now - time::Duration::days(1);
    params.not_after = now + time::Duration::days(CERTIFICATE_VALIDITY_DAYS);
    let key_pair = KeyPair::generate().map_err(ServerError::CertificateGeneration)?;
    let cert = params
        .self_signed(&key_pair)
        .map_err(ServerError::CertificateGeneration)?;
    Ok(PemCertificate {
        cert: cert.pem(),
        key: key_pair.serialize_pem(),
    })
}

/// Makes sure the state directory holds a certificate and key for `node`,
/// generating them if either is missing.
pub fn ensure_certificate(state: &StateDir, node: &str) -> Result<(), ServerError> {
    let cert_exists = state.certificate().exists();
    let key_exists = state.certificate_key().exists();
    if cert_exists && key_exists {
        return Ok(());
    }
    if cert_exists || key_exists {
        tracing::warn!(
            "only one of {} and {} exists; generating a new pair",
            state.certificate().display(),
            state.certificate_key().display()
        );
    }
    let pem = generate_self_signed(node)?;
    state.store_certificate(&pem.cert, &pem.key)?;
    tracing::info!(
        path = %state.certificate().display(),
        "generated a self-signed TLS certificate"
    );
    Ok(())
}

/// The rustls configuration serving the state directory's certificate.
pub fn server_config(state: &StateDir) -> Result<Arc<ServerConfig>, ServerError> {
    let cert_path = state.certificate();
    let key_path = state.certificate_key();
    let certs = CertificateDer::pem_file_iter(&cert_path)
        .and_then(|iter| iter.collect::<Result<Vec<_>, _>>())
        .map_err(|source| ServerError::Pem {
            path: cert_path.clone(),
            source,
        })?;
    if certs.is_empty() {
        return Err(ServerError::NoCertificate { path: cert_path });
    }
    let key = PrivateKeyDer::from_pem_file(&key_path).map_err(|source| ServerError::Pem {
        path: key_path,
        source,
    })?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(ServerError::Tls)?
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .map_err(ServerError::Tls)?;
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn alt_names_are_deduplicated() {
        assert_eq!(
            subject_alt_names("pve1"),
            ["pve1", "localhost", "127.0.0.1", "::1"]
        );
        assert_eq!(
            subject_alt_names("localhost"),
            ["localhost", "127.0.0.1", "::1"]
        );
    }

    #[test]
    fn certificate_is_generated_once_and_loads() {
        let temp = tempfile::tempdir().unwrap();
        let state = StateDir::new(temp.path());
        state.prepare().unwrap();
        ensure_certificate(&state, "pve1").unwrap();
        let cert = std::fs::read_to_string(state.certificate()).unwrap();
        let key = std::fs::read_to_string(state.certificate_key()).unwrap();
        assert!(cert.starts_with("-----BEGIN CERTIFICATE-----"));
        assert!(key.contains("PRIVATE KEY-----"));
        use std::os::unix::fs::PermissionsExt;
        let key_mode = std::fs::metadata(state.certificate_key())
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(key_mode & 0o777, 0o600);

        ensure_certificate(&state, "pve1").unwrap();
        assert_eq!(std::fs::read_to_string(state.certificate()).unwrap(), cert);
        server_config(&state).unwrap();
    }

    #[test]
    fn missing_half_is_regenerated() {
        let temp = tempfile::tempdir().unwrap();
        let state = StateDir::new(temp.path());
        state.prepare().unwrap();
        ensure_certificate(&state, "pve1").unwrap();
        let cert = std::fs::read_to_string(state.certificate()).unwrap();
        std::fs::remove_file(state.certificate_key()).unwrap();
        ensure_certificate(&state, "pve1").unwrap();
        assert_ne!(std::fs::read_to_string(state.certificate()).unwrap(), cert);
        server_config(&state).unwrap();
    }
}
