//! The error type of the image builder library.

use std::io;
use std::path::PathBuf;

/// Everything that can go wrong while building an Oxbow image.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// An external tool could not be started at all.
    #[error("could not run `{command}`: {source}")]
    Spawn {
        /// The command line, for the operator to retry by hand.
        command: String,
        /// Why the process could not be started.
        source: io::Error,
    },
    /// An external tool ran and failed.
    #[error("`{command}` failed ({status}){}", stderr_suffix(.stderr))]
    Command {
        /// The command line, for the operator to retry by hand.
        command: String,
        /// How the process ended.
        status: String,
        /// What the process wrote to stderr (trimmed).
        stderr: String,
    },
    /// A filesystem operation failed.
    #[error("{op} {}: {source}", .path.display())]
    Io {
        /// What was being attempted ("read", "create", ...).
        op: &'static str,
        /// The path concerned.
        path: PathBuf,
        /// The underlying error.
        source: io::Error,
    },
    /// The kernel package is unusable for Oxbow or could not be resolved.
    #[error("kernel: {0}")]
    Kernel(String),
    /// A module list could not be resolved.
    #[error("modules: {0}")]
    Modules(String),
    /// Something in the inputs (binaries, overlay, output path) is wrong.
    #[error("{0}")]
    Input(String),
}

fn stderr_suffix(stderr: &str) -> String {
    if stderr.is_empty() {
        String::new()
    } else {
        format!(": {stderr}")
    }
}

/// Result alias for the library.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Attaches an operation and path to an [`io::Error`].
pub(crate) trait IoContext<T> {
    /// Converts the error into [`Error::Io`].
    fn ctx(self, op: &'static str, path: impl Into<PathBuf>) -> Result<T>;
}

impl<T> IoContext<T> for io::Result<T> {
    fn ctx(self, op: &'static str, path: impl Into<PathBuf>) -> Result<T> {
        self.map_err(|source| Error::Io {
            op,
            path: path.into(),
            source,
        })
    }
}
