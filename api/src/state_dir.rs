//! apid's files in the node's state directory.
//!
//! Everything secret lives in `<state>/priv/` (mode 0700):
//!
//! | file | written by | content |
//! | --- | --- | --- |
//! | `apid-cert.pem` | apid, if missing | self-signed TLS certificate |
//! | `apid-key.pem` | apid, if missing | its private key (mode 0600) |
//! | `authkey.key` | apid, if missing | 32 random bytes that sign tickets (mode 0600) |
//! | `root.shadow` | the seed step at boot | crypt(3) hash of root's password |
//!
//! Files apid creates are written atomically: to a temporary file in the
//! same directory, synced, renamed into place, and the directory synced.

use std::fs::{self, DirBuilder, OpenOptions, Permissions};
use std::io::{self, Write};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use ring::rand::{SecureRandom, SystemRandom};

use crate::error::ServerError;
use crate::ticket::SIGNING_KEY_LEN;

/// Mode of the private directory.
const PRIVATE_DIR_MODE: u32 = 0o700;
/// Mode of secret files.
const SECRET_FILE_MODE: u32 = 0o600;
/// Mode of public files such as the certificate.
const PUBLIC_FILE_MODE: u32 = 0o644;

/// The paths of apid's files under one state directory.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StateDir {
    root: PathBuf,
}

impl StateDir {
    /// The state directory at `root`.
    pub fn new(root: impl Into<PathBuf>) -> Self {
        StateDir { root: root.into() }
    }

    /// The state directory itself.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// `<state>/priv`, the directory of secrets.
    pub fn private_dir(&self) -> PathBuf {
        self.root.join("priv")
    }

    /// The TLS certificate (PEM).
    pub fn certificate(&self) -> PathBuf {
        self.private_dir().join("apid-cert.pem")
    }

    /// The TLS private key (PEM).
    pub fn certificate_key(&self) -> PathBuf {
        self.private_dir().join("apid-key.pem")
    }

    /// The ticket signing key (32 raw bytes).
    pub fn signing_key(&self) -> PathBuf {
        self.private_dir().join("authkey.key")
    }

    /// The crypt(3) hash of root's password (one line).
    pub fn root_password_hash(&self) -> PathBuf {
        self.private_dir().join("root.shadow")
    }

    /// Creates the state directory and `priv/` if missing and makes sure
    /// `priv/` is accessible to its owner only.
    pub fn prepare(&self) -> Result<(), ServerError> {
        fs::create_dir_all(&self.root)
            .map_err(|e| ServerError::io("cannot create", &self.root, e))?;
        let private = self.private_dir();
        match DirBuilder::new().mode(PRIVATE_DIR_MODE).create(&private) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {}
            Err(e) => return Err(ServerError::io("cannot create", &private, e)),
        }
        let mode = fs::metadata(&private)
            .map_err(|e| ServerError::io("cannot inspect", &private, e))?
            .permissions()
            .mode();
        if mode & 0o7777 != PRIVATE_DIR_MODE {
            fs::set_permissions(&private, Permissions::from_mode(PRIVATE_DIR_MODE))
                .map_err(|e| ServerError::io("cannot set the mode of", &private, e))?;
        }
        Ok(())
    }

    /// Reads the ticket signing key, creating a random one if there is none.
    pub fn load_or_create_signing_key(&self) -> Result<[u8; SIGNING_KEY_LEN], ServerError> {
        let path = self.signing_key();
        match fs::read(&path) {
            Ok(bytes) => {
                let len = bytes.len();
                bytes
                    .try_into()
                    .map_err(|_| ServerError::SigningKeyLength { path, len })
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                let mut key = [0u8; SIGNING_KEY_LEN];
                SystemRandom::new()
                    .fill(&mut key)
                    .map_err(|_| ServerError::Random)?;
                write_atomically(&path, &key, SECRET_FILE_MODE)?;
                tracing::info!(path = %path.display(), "created a new ticket signing key");
                Ok(key)
            }
            Err(e) => Err(ServerError::io("cannot read", path, e)),
        }
    }

    /// Writes the TLS certificate and key.
    pub fn store_certificate(&self, cert_pem: &str, key_pem: &str) -> Result<(), ServerError> {
        write_atomically(
            &self.certificate_key(),
            key_pem.as_bytes(),
            SECRET_FILE_MODE,
        )?;
        write_atomically(&self.certificate(), cert_pem.as_bytes(), PUBLIC_FILE_MODE)
    }

    /// What `root.shadow` says about root's password right now.
    pub fn root_password(&self) -> RootPassword {
        let path = self.root_password_hash();
        match fs::read_to_string(&path) {
            Ok(text) => {
                let hash = text.lines().next().unwrap_or("").trim();
                if hash.is_empty() {
                    RootPassword::Missing
                } else if installer::credentials::is_supported_hash(hash) {
                    RootPassword::Hash(hash.to_owned())
                } else {
                    RootPassword::Unusable(format!(
                        "{} does not hold a $6$ or $5$ crypt hash",
                        path.display()
                    ))
                }
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => RootPassword::Missing,
            Err(e) => RootPassword::Unusable(format!("cannot read {}: {e}", path.display())),
        }
    }
}

/// The state of root's password as found in `root.shadow`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RootPassword {
    /// A crypt(3) hash to check logins against.
    Hash(String),
    /// No password is set: the file is missing or empty.
    Missing,
    /// The file exists but cannot be used; the text says why.
    Unusable(String),
}

/// Writes `contents` to `path` so that readers see either the old file or
/// the complete new one, never a partial file, even after a crash.
pub fn write_atomically(path: &Path, contents: &[u8], mode: u32) -> Result<(), ServerError> {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let dir = path.parent().unwrap_or(Path::new("."));
    let file_name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let temp = dir.join(format!(
        ".{file_name}.tmp.{}.{}",
        std::process::id(),
        COUNTER.fetch_add(1, Ordering::Relaxed)
    ));
    let result = (|| {
        let mut file = OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(mode)
            .open(&temp)
            .map_err(|e| ServerError::io("cannot create", &temp, e))?;
        // The mode given to open() is reduced by the umask; set it exactly.
        file.set_permissions(Permissions::from_mode(mode))
            .map_err(|e| ServerError::io("cannot set the mode of", &temp, e))?;
        file.write_all(contents)
            .map_err(|e| ServerError::io("cannot write", &temp, e))?;
        file.sync_all()
            .map_err(|e| ServerError::io("cannot sync", &temp, e))?;
        fs::rename(&temp, path).map_err(|e| ServerError::io("cannot rename into", path, e))
    })();
    if result.is_err() {
        let _ = fs::remove_file(&temp);
        return result;
    }
    fs::File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(|e| ServerError::io("cannot sync the directory", dir, e))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mode_of(path: &Path) -> u32 {
        fs::metadata(path).unwrap().permissions().mode() & 0o7777
    }

    #[test]
    fn prepare_creates_private_dir_with_mode_0700() {
        let temp = tempfile::tempdir().unwrap();
        let state = StateDir::new(temp.path().join("state"));
        state.prepare().unwrap();
        assert_eq!(mode_of(&state.private_dir()), 0o700);
        fs::set_permissions(state.private_dir(), Permissions::from_mode(0o755)).unwrap();
        state.prepare().unwrap();
        assert_eq!(mode_of(&state.private_dir()), 0o700);
    }

    #[test]
    fn signing_key_is_created_once_and_reused() {
        let temp = tempfile::tempdir().unwrap();
        let state = StateDir::new(temp.path());
        state.prepare().unwrap();
        let first = state.load_or_create_signing_key().unwrap();
        assert_eq!(mode_of(&state.signing_key()), 0o600);
        assert_eq!(fs::read(state.signing_key()).unwrap(), first);
        let second = state.load_or_create_signing_key().unwrap();
        assert_eq!(first, second);
        assert_ne!(first, [0u8; SIGNING_KEY_LEN]);
        // No temporary files are left behind.
        let names: Vec<_> = fs::read_dir(state.private_dir())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names, vec![std::ffi::OsString::from("authkey.key")]);
    }

    #[test]
    fn signing_key_of_wrong_size_is_an_error() {
        let temp = tempfile::tempdir().unwrap();
        let state = StateDir::new(temp.path());
        state.prepare().unwrap();
        fs::write(state.signing_key(), b"short").unwrap();
        assert!(matches!(
            state.load_or_create_signing_key(),
            Err(ServerError::SigningKeyLength { len: 5, .. })
        ));
    }

    #[test]
    fn write_atomically_replaces_and_sets_mode() {
        let temp = tempfile::tempdir().unwrap();
        let path = temp.path().join("file");
        write_atomically(&path, b"one", 0o600).unwrap();
        write_atomically(&path, b"two", 0o640).unwrap();
        assert_eq!(fs::read(&path).unwrap(), b"two");
        assert_eq!(mode_of(&path), 0o640);
    }

    #[test]
    fn root_password_states() {
        let temp = tempfile::tempdir().unwrap();
        let state = StateDir::new(temp.path());
        state.prepare().unwrap();
        assert_eq!(state.root_password(), RootPassword::Missing);
        fs::write(state.root_password_hash(), "\n").unwrap();
        assert_eq!(state.root_password(), RootPassword::Missing);
        fs::write(state.root_password_hash(), "plaintext\n").unwrap();
        assert!(matches!(state.root_password(), RootPassword::Unusable(_)));
        let hash = installer::hash_password("pw").unwrap();
        fs::write(state.root_password_hash(), format!("{hash}\n")).unwrap();
        assert_eq!(state.root_password(), RootPassword::Hash(hash));
    }
}
