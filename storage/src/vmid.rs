//! Guest ids (VMIDs), which own image volumes.

use std::fmt;
use std::str::FromStr;

/// Smallest VMID Proxmox accepts.
pub const MIN_VMID: u32 = 100;
/// Largest VMID Proxmox accepts.
pub const MAX_VMID: u32 = 999_999_999;

/// A VMID outside Proxmox's range or not a plain number.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "'{text}' is not a valid VMID (a number from {MIN_VMID} to {MAX_VMID} without leading zeros)"
)]
pub struct VmidError {
    /// The rejected text.
    pub text: String,
}

/// A guest id, 100 ..= 999999999 (Proxmox's `pve-vmid`: `[1-9][0-9]{2,8}`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Vmid(u32);

impl Vmid {
    /// Checks that `value` is in range.
    pub fn new(value: u32) -> Result<Self, VmidError> {
        if (MIN_VMID..=MAX_VMID).contains(&value) {
            Ok(Self(value))
        } else {
            Err(VmidError {
                text: value.to_string(),
            })
        }
    }

    /// The numeric id.
    pub fn get(self) -> u32 {
        self.0
    }
}

impl FromStr for Vmid {
    type Err = VmidError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let err = || VmidError { text: s.to_owned() };
        if s.starts_with('0') || s.is_empty() || !s.bytes().all(|b| b.is_ascii_digit()) {
            return Err(err());
        }
        let value: u32 = s.parse().map_err(|_| err())?;
        Self::new(value).map_err(|_| err())
    }
}

impl fmt::Display for Vmid {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_the_proxmox_range() {
        assert_eq!("100".parse::<Vmid>().map(Vmid::get), Ok(100));
        assert_eq!("999999999".parse::<Vmid>().map(Vmid::get), Ok(999_999_999));
        for bad in ["", "99", "0100", "1000000000", "+100", "10a", "-100"] {
            assert!(bad.parse::<Vmid>().is_err(), "{bad:?} accepted");
        }
        assert!(Vmid::new(99).is_err());
    }
}
