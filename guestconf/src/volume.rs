//! Volume ids (`storage:volname`), allocation requests (`storage:SIZE`)
//! and Proxmox's disk-size syntax (`32G`, `512M`, `1.5T`).

use std::fmt;

/// Why a size is not in Proxmox's disk-size syntax.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SizeError {
    #[error("'{0}' is not a size: expected a number with an optional unit K, M, G or T (or KiB, MiB, GiB, TiB)")]
    Syntax(String),
    #[error("size '{0}' is too large")]
    TooLarge(String),
}

/// Parses a disk size to bytes: a decimal number (fraction allowed) with
/// an optional binary unit `K`, `M`, `G`, `T` or `KiB` … `TiB`; no unit
/// means bytes. Fractions of a byte are dropped, as Proxmox does.
pub fn parse_disk_size(text: &str) -> Result<u64, SizeError> {
    let syntax = || SizeError::Syntax(crate::property_string::excerpt(text));
    let number_end = text
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(text.len());
    let (number, unit) = text.split_at(number_end);
    let shift = match unit {
        "" => 0,
        "K" | "KiB" => 10,
        "M" | "MiB" => 20,
        "G" | "GiB" => 30,
        "T" | "TiB" => 40,
        _ => return Err(syntax()),
    };
    let (whole, fraction) = match number.split_once('.') {
        Some((whole, fraction)) => (whole, Some(fraction)),
        None => (number, None),
    };
    let all_digits = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit());
    if !all_digits(whole) || !fraction.is_none_or(all_digits) {
        return Err(syntax());
    }
    let too_large = || SizeError::TooLarge(crate::property_string::excerpt(text));
    let whole: u128 = whole.parse().map_err(|_| too_large())?;
    let mut bytes = whole.checked_mul(1u128 << shift).ok_or_else(too_large)?;
    if let Some(fraction) = fraction {
        // 18 digits are more than a 2^40 multiplier can make use of.
        let digits = &fraction[..fraction.len().min(18)];
        let numerator: u128 = digits.parse().map_err(|_| syntax())?;
        let denominator = 10u128.pow(u32::try_from(digits.len()).map_err(|_| syntax())?);
        bytes += (numerator << shift) / denominator;
    }
    u64::try_from(bytes).map_err(|_| too_large())
}

/// Writes a byte count in the largest unit that represents it exactly, as
/// Proxmox writes `size=`: `34359738368` becomes `32G`.
pub fn format_disk_size(bytes: u64) -> String {
    for (shift, unit) in [(40, 'T'), (30, 'G'), (20, 'M'), (10, 'K')] {
        if bytes != 0 && bytes % (1u64 << shift) == 0 {
            return format!("{}{unit}", bytes >> shift);
        }
    }
    bytes.to_string()
}

/// Whether `id` is a storage id: a letter, then letters, digits, `-`, `_`
/// or `.`, ending in a letter or digit; at least 2 characters.
pub fn is_valid_storage_id(id: &str) -> bool {
    let bytes = id.as_bytes();
    match (bytes.first(), bytes.last()) {
        (Some(first), Some(last)) if bytes.len() >= 2 => {
            first.is_ascii_alphabetic()
                && last.is_ascii_alphanumeric()
                && bytes
                    .iter()
                    .all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(b))
        }
        _ => false,
    }
}

/// A volume id, `storage:volname`, such as `local-lvm:vm-100-disk-0` or
/// `local:iso/debian-12.iso`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VolumeId {
    pub storage: String,
    pub volname: String,
}

impl VolumeId {
    /// Parses `storage:volname`; the reason is returned for a bad id.
    pub fn parse(text: &str) -> Result<VolumeId, String> {
        let Some((storage, volname)) = text.split_once(':') else {
            return Err("expected a volume id 'storage:volume'".to_string());
        };
        if !is_valid_storage_id(storage) {
            return Err(format!(
                "'{}' is not a storage id",
                crate::property_string::excerpt(storage)
            ));
        }
        if volname.is_empty() {
            return Err("the volume name after ':' is empty".to_string());
        }
        if volname.contains(['\n', '\0']) {
            return Err("the volume name contains a control character".to_string());
        }
        Ok(VolumeId {
            storage: storage.to_string(),
            volname: volname.to_string(),
        })
    }

    /// If the volume name is a number (`local-lvm:32`, `local:0.5`), this is
    /// a request to allocate a new volume of that many GiB on the storage,
    /// as the create and update API calls read it.
    pub fn allocation_gib(&self) -> Option<f64> {
        crate::schema::parse_number(&self.volname)
    }
}

impl fmt::Display for VolumeId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.storage, self.volname)
    }
}

/// A request to allocate a new volume, `storage:SIZE_IN_GiB`.
#[derive(Debug, Clone, PartialEq)]
pub struct Allocation {
    pub storage: String,
    pub size_gib: f64,
}

impl Allocation {
    /// The requested size in bytes (fractions of a byte dropped).
    pub fn size_bytes(&self) -> u64 {
        // `as` saturates for out-of-range floats, which is what we want here.
        (self.size_gib * f64::from(1u32 << 30)) as u64
    }
}

/// Reads `storage:SIZE` (SIZE in GiB, fraction allowed) as an allocation
/// request; `None` for anything else.
pub fn parse_allocation(text: &str) -> Option<Allocation> {
    let volume = VolumeId::parse(text).ok()?;
    let size_gib = volume.allocation_gib()?;
    Some(Allocation {
        storage: volume.storage,
        size_gib,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes() {
        assert_eq!(parse_disk_size("32G"), Ok(32 << 30));
        assert_eq!(parse_disk_size("512M"), Ok(512 << 20));
        assert_eq!(parse_disk_size("1T"), Ok(1 << 40));
        assert_eq!(parse_disk_size("4KiB"), Ok(4096));
        assert_eq!(parse_disk_size("1.5G"), Ok(3 << 29));
        assert_eq!(parse_disk_size("1000"), Ok(1000));
        assert_eq!(parse_disk_size("0.5K"), Ok(512));
        for bad in [
            "", "G", "32g", "32GB", "-1G", "1..5G", "1.G", ".5G", "3 G", "1e3",
        ] {
            assert!(
                matches!(parse_disk_size(bad), Err(SizeError::Syntax(_))),
                "{bad}"
            );
        }
        assert!(matches!(
            parse_disk_size("99999999999999999999T"),
            Err(SizeError::TooLarge(_))
        ));
        assert!(matches!(
            parse_disk_size("16777216T"),
            Err(SizeError::TooLarge(_))
        ));
    }

    #[test]
    fn formats_sizes() {
        assert_eq!(format_disk_size(32 << 30), "32G");
        assert_eq!(format_disk_size(1536 << 20), "1536M");
        assert_eq!(format_disk_size(1000), "1000");
        assert_eq!(format_disk_size(0), "0");
        assert_eq!(format_disk_size(2 << 40), "2T");
    }

    #[test]
    fn volume_ids() {
        let volume = VolumeId::parse("local-lvm:vm-100-disk-0").unwrap();
        assert_eq!(volume.storage, "local-lvm");
        assert_eq!(volume.to_string(), "local-lvm:vm-100-disk-0");
        assert_eq!(volume.allocation_gib(), None);
        for bad in [
            "nocolon", ":x", "a:x", "1st:x", "local-:x", "local:", "lo cal:x",
        ] {
            assert!(VolumeId::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn allocations() {
        let allocation = parse_allocation("local-lvm:32").unwrap();
        assert_eq!(allocation.storage, "local-lvm");
        assert_eq!(allocation.size_bytes(), 32 << 30);
        assert_eq!(
            parse_allocation("local:0.5").map(|a| a.size_bytes()),
            Some(1 << 29)
        );
        assert_eq!(parse_allocation("local:vm-100-disk-0"), None);
        assert_eq!(parse_allocation("local:32G"), None);
    }
}
