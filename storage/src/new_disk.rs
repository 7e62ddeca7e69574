//! `STORAGE:SIZE` in a guest create request, e.g. `scsi0: local:32`,
//! meaning "allocate a new 32 GiB disk on `local`".
//!
//! Proxmox's rule for VMs is `^(([^/:\s]+):)?(\d+(\.\d+)?)$`: an optional
//! storage, then a size in GiB with an optional decimal fraction (`0.5`).
//! Containers require the storage. The size is converted to KiB and
//! truncated, as Proxmox does before it allocates.

use std::fmt;

use crate::storage_id::{StorageId, StorageIdError};

const KIB: u64 = 1024;
const GIB: u128 = 1 << 30;

/// A new-disk spec that is not `STORAGE:SIZE`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NewDiskError {
    /// The size is not `<digits>` or `<digits>.<digits>`.
    #[error("'{spec}' is not a new-disk request (expected [STORAGE:]SIZE_IN_GIB such as local:32 or local:0.5)")]
    NotASize {
        /// The text.
        spec: String,
    },
    /// The storage part is not a valid storage id.
    #[error("new-disk request '{spec}': {source}")]
    BadStorage {
        /// The text.
        spec: String,
        /// Why.
        #[source]
        source: StorageIdError,
    },
    /// The size does not fit in 64 bits of bytes.
    #[error("new-disk request '{spec}': size is too large")]
    TooLarge {
        /// The text.
        spec: String,
    },
}

/// A parsed `STORAGE:SIZE`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewDiskRequest {
    /// Where to allocate; `None` means the request's default storage.
    pub storage: Option<StorageId>,
    /// Size in bytes, truncated to whole KiB. Zero is Proxmox's
    /// "size comes from elsewhere" (e.g. `import-from`); it cannot be
    /// allocated as such.
    pub size_bytes: u64,
}

impl fmt::Display for NewDiskRequest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if let Some(storage) = &self.storage {
            write!(f, "{storage}:")?;
        }
        write!(f, "{} bytes", self.size_bytes)
    }
}

/// Parses the volume part of a disk option (`local:32`, `local-lvm:0.5`,
/// `16`), without the `,key=value` options that may follow it.
pub fn parse_new_disk(spec: &str) -> Result<NewDiskRequest, NewDiskError> {
    let (storage, size) = match spec.split_once(':') {
        Some((storage, size)) => (Some(storage), size),
        None => (None, spec),
    };
    let not_a_size = || NewDiskError::NotASize {
        spec: spec.to_owned(),
    };
    let (whole, fraction) = match size.split_once('.') {
        Some((whole, fraction)) => (whole, Some(fraction)),
        None => (size, None),
    };
    let all_digits = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit());
    if !all_digits(whole) || fraction.is_some_and(|f| !all_digits(f)) {
        return Err(not_a_size());
    }
    let storage = match storage {
        Some(s) if s.is_empty() || s.contains('/') || s.contains(char::is_whitespace) => {
            return Err(not_a_size())
        }
        Some(s) => Some(
            StorageId::new(s).map_err(|source| NewDiskError::BadStorage {
                spec: spec.to_owned(),
                source,
            })?,
        ),
        None => None,
    };
    let too_large = || NewDiskError::TooLarge {
        spec: spec.to_owned(),
    };
    let whole: u128 = whole
        .trim_start_matches('0')
        .parse::<u128>()
        .or_else(|_| {
            if whole.bytes().all(|b| b == b'0') {
                Ok(0)
            } else {
                Err(())
            }
        })
        .map_err(|()| too_large())?;
    let mut bytes = whole.checked_mul(GIB).ok_or_else(too_large)?;
    if let Some(fraction) = fraction {
        // Digits past the 12th change the result by well under one KiB.
        let digits = fraction.get(..fraction.len().min(12)).unwrap_or(fraction);
        let numerator: u128 = digits.parse().map_err(|_| not_a_size())?;
        let denominator = 10u128.pow(u32::try_from(digits.len()).map_err(|_| not_a_size())?);
        bytes = bytes
            .checked_add(numerator * GIB / denominator)
            .ok_or_else(too_large)?;
    }
    let bytes = u64::try_from(bytes).map_err(|_| too_large())?;
    Ok(NewDiskRequest {
        storage,
        size_bytes: bytes / KIB * KIB,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parsed(spec: &str) -> (Option<String>, u64) {
        let r = parse_new_disk(spec).unwrap_or_else(|e| panic!("{spec}: {e}"));
        (r.storage.map(|s| s.to_string()), r.size_bytes)
    }

    #[test]
    fn sizes_are_gib_with_fractions() {
        assert_eq!(parsed("local:32"), (Some("local".into()), 32 << 30));
        assert_eq!(
            parsed("local-lvm:0.5"),
            (Some("local-lvm".into()), 512 << 20)
        );
        assert_eq!(parsed("16"), (None, 16 << 30));
        assert_eq!(parsed("local:0"), (Some("local".into()), 0));
        assert_eq!(parsed("local:007"), (Some("local".into()), 7 << 30));
        // 0.1 GiB = 107374182.4 bytes, truncated to whole KiB.
        assert_eq!(parsed("local:0.1"), (Some("local".into()), 104_857 * 1024));
        assert_eq!(
            parsed("local:1.0000000000000000001"),
            (Some("local".into()), 1 << 30)
        );
    }

    #[test]
    fn non_sizes_are_rejected() {
        for spec in [
            "",
            "local:",
            "local:32G",
            "local:-1",
            "local:1.",
            "local:.5",
            "local:1e3",
            "local:100/vm-100-disk-0.raw",
            ":32",
            "a/b:32",
            "local: 32",
            "local:1,5",
        ] {
            assert!(
                matches!(parse_new_disk(spec), Err(NewDiskError::NotASize { .. })),
                "{spec:?}"
            );
        }
        assert!(matches!(
            parse_new_disk("9local:32"),
            Err(NewDiskError::BadStorage { .. })
        ));
        assert!(matches!(
            parse_new_disk("local:99999999999999999999"),
            Err(NewDiskError::TooLarge { .. })
        ));
    }
}
