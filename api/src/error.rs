//! Errors that keep apid from starting or serving.

use std::net::SocketAddr;
use std::path::PathBuf;

/// Why apid could not start or stopped serving.
#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    /// A file or directory in the state directory could not be used.
    #[error("{action} {}", path.display())]
    Io {
        /// What apid was doing, such as "cannot read".
        action: &'static str,
        /// The file or directory concerned.
        path: PathBuf,
        /// The operating system's error.
        #[source]
        source: std::io::Error,
    },
    /// The ticket signing key file has the wrong size.
    #[error("{} holds {len} bytes, but a ticket signing key has 32", path.display())]
    SigningKeyLength {
        /// The key file.
        path: PathBuf,
        /// Its actual size.
        len: usize,
    },
    /// The system's random number generator failed.
    #[error("the system random number generator failed")]
    Random,
    /// The self-signed certificate could not be generated.
    #[error("cannot generate the self-signed TLS certificate")]
    CertificateGeneration(#[source] rcgen::Error),
    /// The certificate or key file is not valid PEM.
    #[error("cannot read PEM from {}", path.display())]
    Pem {
        /// The PEM file.
        path: PathBuf,
        /// What is wrong with it.
        #[source]
        source: rustls_pki_types::pem::Error,
    },
    /// The certificate file holds no certificate.
    #[error("{} holds no certificate", path.display())]
    NoCertificate {
        /// The certificate file.
        path: PathBuf,
    },
    /// rustls refused the certificate and key.
    #[error("cannot set up TLS with the certificate and key")]
    Tls(#[source] rustls::Error),
    /// The node name is not a valid host name.
    #[error("`{0}` is not a valid node name (letters, digits and '-', at most 63)")]
    InvalidNodeName(String),
    /// The system host name could not be read.
    #[error("cannot read the system host name")]
    Hostname(#[source] nix::Error),
    /// `storage.cfg` could not be read or is invalid.
    #[error("storage configuration: {0}")]
    Storage(String),
    /// The listening socket could not be set up.
    #[error("cannot listen on {addr}")]
    Bind {
        /// The address apid tried to listen on.
        addr: SocketAddr,
        /// The operating system's error.
        #[source]
        source: std::io::Error,
    },
}

impl ServerError {
    pub(crate) fn io(
        action: &'static str,
        path: impl Into<PathBuf>,
        source: std::io::Error,
    ) -> Self {
        ServerError::Io {
            action,
            path: path.into(),
            source,
        }
    }
}
