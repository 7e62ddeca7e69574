//! Root password hashes in crypt(3) form.
//!
//! The plain password from an answer file is never stored: it is hashed with
//! SHA-512-crypt and only the hash is written to the state directory, where
//! `apid` checks logins against it.

use sha_crypt::{sha256_check, sha512_check, sha512_simple, Sha512Params};

/// Errors from hashing a password.
#[derive(Debug, thiserror::Error)]
pub enum CredentialError {
    /// The hashing library refused its parameters.
    #[error("cannot hash the password: {0}")]
    Hash(String),
}

/// Whether `hash` is a crypt(3) form we can verify.
pub fn is_supported_hash(hash: &str) -> bool {
    (hash.starts_with("$6$") || hash.starts_with("$5$")) && hash.matches('$').count() >= 3
}

/// Hashes a password with SHA-512-crypt and a random salt.
pub fn hash_password(password: &str) -> Result<String, CredentialError> {
    let params = Sha512Params::new(5000).map_err(|e| CredentialError::Hash(format!("{e:?}")))?;
    sha512_simple(password, &params).map_err(|e| CredentialError::Hash(format!("{e:?}")))
}

/// Checks a password against a `$6$` or `$5$` hash.
pub fn verify_password(password: &str, hash: &str) -> bool {
    if hash.starts_with("$6$") {
        sha512_check(password, hash).is_ok()
    } else if hash.starts_with("$5$") {
        sha256_check(password, hash).is_ok()
    } else {
        false
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip() {
        let h = hash_password("correct horse").unwrap();
        assert!(h.starts_with("$6$"));
        assert!(verify_password("correct horse", &h));
        assert!(!verify_password("wrong horse", &h));
    }

    #[test]
    fn openssl_passwd_6() {
        // Made with `openssl passwd -6 -salt saltsalt secret`.
        let h = "$6$saltsalt$TVLlQcbpFVof5W3Yz4DTP6gRstiNuHwwTt6GLc1E5n0U0aDehy0S5knV8wiOQSpT0Y77vwPZN.Pq.H91p5hVO1";
        assert!(verify_password("secret", h));
        assert!(!verify_password("Secret", h));
    }
}
