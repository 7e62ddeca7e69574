//! Storage identifiers: the `local` in `dir: local` and in `local:iso/x.iso`.

use std::fmt;
use std::str::FromStr;

/// A storage id that failed Proxmox's rule.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "storage id '{id}' is invalid: it must start with a letter, end with a letter or digit, \
     and contain only letters, digits, '-', '_' and '.' (at least two characters)"
)]
pub struct StorageIdError {
    /// The rejected text.
    pub id: String,
}

/// A storage id such as `local` or `local-lvm`.
///
/// Proxmox's rule (`pve-storage-id`, matched case-insensitively) is
/// `[a-z][a-z0-9\-_.]*[a-z0-9]`, so ids have at least two characters.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct StorageId(String);

impl StorageId {
    /// Checks `id` against the storage id rule.
    pub fn new(id: &str) -> Result<Self, StorageIdError> {
        if is_valid_storage_id(id) {
            Ok(Self(id.to_owned()))
        } else {
            Err(StorageIdError { id: id.to_owned() })
        }
    }

    /// The id as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

fn is_valid_storage_id(id: &str) -> bool {
    let bytes = id.as_bytes();
    let (Some(first), Some(last)) = (bytes.first(), bytes.last()) else {
        return false;
    };
    bytes.len() >= 2
        && first.is_ascii_alphabetic()
        && last.is_ascii_alphanumeric()
        && bytes
            .iter()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
}

impl FromStr for StorageId {
    type Err = StorageIdError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::new(s)
    }
}

impl fmt::Display for StorageId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl AsRef<str> for StorageId {
    fn as_ref(&self) -> &str {
        &self.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_proxmox_style_ids() {
        for id in ["local", "local-lvm", "nfs_1", "a.b", "Backup2", "ab"] {
            assert_eq!(StorageId::new(id).map(|s| s.to_string()), Ok(id.to_owned()));
        }
    }

    #[test]
    fn rejects_ids_outside_the_rule() {
        for id in [
            "", "a", "1local", "-x", "local-", "local.", "lo cal", "lo/cal", "lo:cal", "ünï",
            "a\0b",
        ] {
            assert!(StorageId::new(id).is_err(), "{id:?} accepted");
        }
    }
}
