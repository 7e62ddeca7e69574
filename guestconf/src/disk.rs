//! A VM's disks and CD drives: `virtio[n]`, `scsi[n]`, `sata[n]`, `ide[n]`.

use crate::schema::{check_format, rule, Format, PropertyError, Rule, ValueKind};
use crate::volume::{parse_allocation, parse_disk_size, Allocation, VolumeId};

/// The bus a disk is attached to, with the highest index it allows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DiskBus {
    Virtio,
    Scsi,
    Sata,
    Ide,
}

impl DiskBus {
    pub const ALL: [DiskBus; 4] = [DiskBus::Ide, DiskBus::Sata, DiskBus::Scsi, DiskBus::Virtio];

    pub fn prefix(self) -> &'static str {
        match self {
            DiskBus::Virtio => "virtio",
            DiskBus::Scsi => "scsi",
            DiskBus::Sata => "sata",
            DiskBus::Ide => "ide",
        }
    }

    /// The highest `n` of `<bus>[n]`: virtio 15, scsi 30, sata 5, ide 3.
    pub fn max_index(self) -> u32 {
        match self {
            DiskBus::Virtio => 15,
            DiskBus::Scsi => 30,
            DiskBus::Sata => 5,
            DiskBus::Ide => 3,
        }
    }

    /// Splits a key such as `scsi0` into its bus and index; `None` if the key
    /// is not a disk key or the index is out of range (or has a leading 0).
    pub fn from_key(key: &str) -> Option<(DiskBus, u32)> {
        DiskBus::ALL.into_iter().find_map(|bus| {
            let digits = key.strip_prefix(bus.prefix())?;
            let index = parse_index(digits)?;
            (index <= bus.max_index()).then_some((bus, index))
        })
    }
}

/// Reads the `n` of a key like `net12`: digits without a leading zero.
pub(crate) fn parse_index(digits: &str) -> Option<u32> {
    if digits.is_empty()
        || digits.len() > 9
        || (digits.len() > 1 && digits.starts_with('0'))
        || !digits.bytes().all(|b| b.is_ascii_digit())
    {
        return None;
    }
    digits.parse().ok()
}

/// What backs a drive, the `file` property (first, without a key).
#[derive(Debug, Clone, PartialEq)]
pub enum DiskFile {
    /// An existing volume, `storage:volname`.
    Volume(VolumeId),
    /// `storage:SIZE_IN_GiB`: allocate a new volume (create/update calls).
    Allocate(Allocation),
    /// An absolute path on the host, such as `/dev/disk/by-id/…`.
    Path(String),
    /// `none`: an empty CD drive.
    None,
    /// `cdrom`: the host's physical CD drive.
    HostCdrom,
}

impl DiskFile {
    /// Reads a drive's `file`; the reason is returned for a bad value.
    pub fn parse(text: &str) -> Result<DiskFile, String> {
        match text {
            "none" => return Ok(DiskFile::None),
            "cdrom" => return Ok(DiskFile::HostCdrom),
            _ => {}
        }
        if text.starts_with('/') {
            return Ok(DiskFile::Path(text.to_string()));
        }
        if let Some(allocation) = parse_allocation(text) {
            return Ok(DiskFile::Allocate(allocation));
        }
        VolumeId::parse(text).map(DiskFile::Volume)
    }

    /// The allocation request, if `file` is `storage:SIZE_IN_GiB`.
    pub fn allocation(&self) -> Option<&Allocation> {
        match self {
            DiskFile::Allocate(allocation) => Some(allocation),
            _ => None,
        }
    }
}

fn check_file(text: &str) -> Result<(), String> {
    DiskFile::parse(text).map(|_| ())
}

fn check_size(text: &str) -> Result<(), String> {
    parse_disk_size(text).map(|_| ()).map_err(|e| e.to_string())
}

fn check_serial(text: &str) -> Result<(), String> {
    // Stored URL-encoded; QEMU takes at most 20 bytes once decoded.
    let decoded = crate::comment_text::decode_comment_text(text);
    if text.len() > 60 || decoded.len() > 20 {
        return Err("a serial has at most 20 bytes (60 characters URL-encoded)".to_string());
    }
    Ok(())
}

fn check_import_source(text: &str) -> Result<(), String> {
    if text.starts_with('/') {
        return Ok(());
    }
    VolumeId::parse(text).map(|_| ())
}

fn check_wwn(text: &str) -> Result<(), String> {
    match text.strip_prefix("0x") {
        Some(hex) if hex.len() == 16 && hex.bytes().all(|b| b.is_ascii_hexdigit()) => Ok(()),
        _ => Err("expected 0x followed by 16 hex digits".to_string()),
    }
}

fn check_short_name(text: &str, max: usize) -> Result<(), String> {
    if text.len() > max
        || !text
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-_ ".contains(&b))
    {
        return Err(format!("at most {max} letters, digits, '-', '_' or spaces"));
    }
    Ok(())
}

const UNLIMITED: i64 = i64::MAX;

const COMMON_RULES: &[Rule] = &[
    rule("file", ValueKind::Text(check_file)),
    rule("media", ValueKind::Enum(&["disk", "cdrom"])),
    rule("size", ValueKind::Text(check_size)),
    rule(
        "format",
        ValueKind::Enum(&["raw", "qcow", "qed", "qcow2", "vmdk", "cloop"]),
    ),
    rule(
        "cache",
        ValueKind::Enum(&["none", "writethrough", "writeback", "unsafe", "directsync"]),
    ),
    rule("discard", ValueKind::Enum(&["on", "ignore"])),
    rule("aio", ValueKind::Enum(&["native", "threads", "io_uring"])),
    rule("backup", ValueKind::Boolean),
    rule("replicate", ValueKind::Boolean),
    rule("snapshot", ValueKind::Boolean),
    rule("shared", ValueKind::Boolean),
    rule("detect_zeroes", ValueKind::Boolean),
    rule("serial", ValueKind::Text(check_serial)),
    rule("import-from", ValueKind::Text(check_import_source)),
    rule("rerror", ValueKind::Enum(&["ignore", "report", "stop"])),
    rule(
        "werror",
        ValueKind::Enum(&["enospc", "ignore", "report", "stop"]),
    ),
    rule(
        "bps",
        ValueKind::Integer {
            min: 0,
            max: UNLIMITED,
        },
    ),
    rule(
        "bps_rd",
        ValueKind::Integer {
            min: 0,
            max: UNLIMITED,
        },
    ),
    rule(
        "bps_wr",
        ValueKind::Integer {
            min: 0,
            max: UNLIMITED,
        },
    ),
    rule(
        "bps_max_length",
        ValueKind::Integer {
            min: 1,
            max: UNLIMITED,
        },
    ),
    rule(
        "bps_rd_max_length",
        ValueKind::Integer {
            min: 1,
            max: UNLIMITED,
        },
    ),
    rule(
        "bps_wr_max_length",
        ValueKind::Integer {
            min: 1,
            max: UNLIMITED,
        },
    ),
    rule(
        "iops",
        ValueKind::Integer {
            min: 0,
            max: UNLIMITED,
        },
    ),
    rule(
        "iops_rd",
        ValueKind::Integer {
            min: 0,
            max: UNLIMITED,
        },
    ),
    rule(
        "iops_wr",
        ValueKind::Integer {
            min: 0,
            max: UNLIMITED,
        },
    ),
    rule(
        "iops_max",
        ValueKind::Integer {
            min: 0,
            max: UNLIMITED,
        },
    ),
    rule(
        "iops_rd_max",
        ValueKind::Integer {
            min: 0,
            max: UNLIMITED,
        },
    ),
    rule(
        "iops_wr_max",
        ValueKind::Integer {
            min: 0,
            max: UNLIMITED,
        },
    ),
    rule(
        "iops_max_length",
        ValueKind::Integer {
            min: 1,
            max: UNLIMITED,
        },
    ),
    rule(
        "iops_rd_max_length",
        ValueKind::Integer {
            min: 1,
            max: UNLIMITED,
        },
    ),
    rule(
        "iops_wr_max_length",
        ValueKind::Integer {
            min: 1,
            max: UNLIMITED,
        },
    ),
    rule("mbps", ValueKind::Number),
    rule("mbps_rd", ValueKind::Number),
    rule("mbps_wr", ValueKind::Number),
    rule("mbps_max", ValueKind::Number),
    rule("mbps_rd_max", ValueKind::Number),
    rule("mbps_wr_max", ValueKind::Number),
];

const VIRTIO_RULES: &[Rule] = &[
    rule("iothread", ValueKind::Boolean),
    rule("ro", ValueKind::Boolean),
];

const SCSI_RULES: &[Rule] = &[
    rule("iothread", ValueKind::Boolean),
    rule("ro", ValueKind::Boolean),
    rule("ssd", ValueKind::Boolean),
    rule(
        "queues",
        ValueKind::Integer {
            min: 2,
            max: UNLIMITED,
        },
    ),
    rule("scsiblock", ValueKind::Boolean),
    rule("product", ValueKind::Text(|t| check_short_name(t, 16))),
    rule("vendor", ValueKind::Text(|t| check_short_name(t, 8))),
    rule("wwn", ValueKind::Text(check_wwn)),
];

const SATA_RULES: &[Rule] = &[
    rule("ssd", ValueKind::Boolean),
    rule("wwn", ValueKind::Text(check_wwn)),
];

fn check_ide_model(text: &str) -> Result<(), String> {
    let decoded = crate::comment_text::decode_comment_text(text);
    if text.len() > 120 || decoded.len() > 40 {
        return Err("a model name has at most 40 bytes (120 characters URL-encoded)".to_string());
    }
    Ok(())
}

const IDE_RULES: &[Rule] = &[
    rule("ssd", ValueKind::Boolean),
    rule("wwn", ValueKind::Text(check_wwn)),
    rule("model", ValueKind::Text(check_ide_model)),
];

/// A drive's media type.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DiskMedia {
    Disk,
    Cdrom,
}

/// A VM's drive, `virtio[n]`, `scsi[n]`, `sata[n]` or `ide[n]`. The main
/// properties are fields; every property (including the throttling ones)
/// was checked and is available in order through
/// [`PropertyString`](crate::PropertyString).
#[derive(Debug, Clone, PartialEq)]
pub struct DiskDevice {
    pub bus: DiskBus,
    pub index: u32,
    pub file: DiskFile,
    pub media: DiskMedia,
    /// Bytes; informational, as Proxmox records it.
    pub size: Option<u64>,
    pub format: Option<String>,
    pub cache: Option<String>,
    pub discard: Option<String>,
    pub readonly: Option<bool>,
    pub iothread: Option<bool>,
    pub ssd: Option<bool>,
    pub serial: Option<String>,
    pub backup: Option<bool>,
    pub replicate: Option<bool>,
    pub snapshot: Option<bool>,
}

impl DiskDevice {
    /// Parses and checks the value of the disk key `key` (such as `scsi0`).
    pub fn parse(key: &str, text: &str) -> Result<DiskDevice, PropertyError> {
        let Some((bus, index)) = DiskBus::from_key(key) else {
            return Err(PropertyError::invalid(
                key,
                text,
                "not a disk key (virtio0-15, scsi0-30, sata0-5, ide0-3)",
            ));
        };
        let bus_rules = match bus {
            DiskBus::Virtio => VIRTIO_RULES,
            DiskBus::Scsi => SCSI_RULES,
            DiskBus::Sata => SATA_RULES,
            DiskBus::Ide => IDE_RULES,
        };
        let format = Format {
            rules: &[COMMON_RULES, bus_rules],
            default_key: Some("file"),
            aliases: &[("volume", "file")],
        };
        let checked = check_format(&format, text)?;
        let file_text = checked.require("file")?;
        let file =
            DiskFile::parse(file_text).map_err(|r| PropertyError::invalid("file", file_text, r))?;
        let media = match checked.get("media") {
            Some("cdrom") => DiskMedia::Cdrom,
            _ => DiskMedia::Disk,
        };
        if media == DiskMedia::Cdrom {
            if bus == DiskBus::Virtio {
                return Err(PropertyError::invalid(
                    "media",
                    "cdrom",
                    "virtio drives cannot be CD drives",
                ));
            }
            for key in ["snapshot", "format"] {
                if let Some(value) = checked.get(key) {
                    return Err(PropertyError::invalid(
                        key,
                        value,
                        "not allowed with media=cdrom",
                    ));
                }
            }
        } else if matches!(file, DiskFile::None | DiskFile::HostCdrom) {
            return Err(PropertyError::invalid(
                "file",
                file_text,
                "only valid with media=cdrom",
            ));
        }
        Ok(DiskDevice {
            bus,
            index,
            file,
            media,
            size: checked.get("size").and_then(|s| parse_disk_size(s).ok()),
            format: checked.string("format"),
            cache: checked.string("cache"),
            discard: checked.string("discard"),
            readonly: checked.bool("ro"),
            iothread: checked.bool("iothread"),
            ssd: checked.bool("ssd"),
            serial: checked.string("serial"),
            backup: checked.bool("backup"),
            replicate: checked.bool("replicate"),
            snapshot: checked.bool("snapshot"),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bus_and_index_from_key() {
        assert_eq!(DiskBus::from_key("virtio15"), Some((DiskBus::Virtio, 15)));
        assert_eq!(DiskBus::from_key("scsi30"), Some((DiskBus::Scsi, 30)));
        assert_eq!(DiskBus::from_key("sata5"), Some((DiskBus::Sata, 5)));
        assert_eq!(DiskBus::from_key("ide3"), Some((DiskBus::Ide, 3)));
        for bad in [
            "virtio16", "scsi31", "sata6", "ide4", "scsi", "scsi01", "nvme0", "ide-1",
        ] {
            assert_eq!(DiskBus::from_key(bad), None, "{bad}");
        }
    }

    #[test]
    fn parses_a_disk() {
        let disk = DiskDevice::parse(
            "virtio0",
            "local:100/vm-100-disk-0.raw,size=32G,discard=on,iothread=1",
        )
        .unwrap();
        assert_eq!(disk.bus, DiskBus::Virtio);
        assert_eq!(
            disk.file,
            DiskFile::Volume(VolumeId {
                storage: "local".into(),
                volname: "100/vm-100-disk-0.raw".into()
            })
        );
        assert_eq!(disk.size, Some(32 << 30));
        assert_eq!(disk.discard.as_deref(), Some("on"));
        assert_eq!(disk.iothread, Some(true));
        assert_eq!(disk.media, DiskMedia::Disk);
    }

    #[test]
    fn allocation_request() {
        let disk = DiskDevice::parse("scsi0", "local-lvm:32,ssd=1,cache=writeback").unwrap();
        let allocation = disk.file.allocation().unwrap();
        assert_eq!(allocation.storage, "local-lvm");
        assert_eq!(allocation.size_gib, 32.0);
        let disk = DiskDevice::parse("scsi1", "file=local:0.5").unwrap();
        assert_eq!(
            disk.file.allocation().map(Allocation::size_bytes),
            Some(1 << 29)
        );
    }

    #[test]
    fn cd_drives() {
        let cd = DiskDevice::parse("ide2", "none,media=cdrom").unwrap();
        assert_eq!(cd.file, DiskFile::None);
        assert_eq!(cd.media, DiskMedia::Cdrom);
        let cd =
            DiskDevice::parse("sata1", "local:iso/debian-12.iso,media=cdrom,size=629M").unwrap();
        assert_eq!(cd.size, Some(629 << 20));
        assert!(DiskDevice::parse("ide2", "cdrom,media=cdrom").is_ok());
    }

    #[test]
    fn errors() {
        let cases = [
            ("scsi0", "local-lvm:vm-100-disk-0,size=32X", "not a size"),
            ("scsi0", "local-lvm:vm-100-disk-0,size=", "empty value"),
            (
                "scsi0",
                "local-lvm:vm-100-disk-0,discard=off",
                "expected one of: on, ignore",
            ),
            (
                "scsi0",
                "local-lvm:vm-100-disk-0,format=vdi",
                "expected one of",
            ),
            ("scsi0", "size=32G", "'file' is required"),
            ("scsi0", "vm-100-disk-0", "volume id"),
            (
                "scsi0",
                "local-lvm:vm-100-disk-0,volume=local-lvm:x",
                "given twice",
            ),
            (
                "virtio0",
                "local:iso/a.iso,media=cdrom",
                "cannot be CD drives",
            ),
            (
                "virtio0",
                "local:vm-100-disk-0,ssd=1",
                "unknown property 'ssd'",
            ),
            (
                "sata0",
                "local:vm-100-disk-0,iothread=1",
                "unknown property 'iothread'",
            ),
            ("ide0", "none", "only valid with media=cdrom"),
            (
                "ide2",
                "none,media=cdrom,format=raw",
                "not allowed with media=cdrom",
            ),
            ("scsi31", "local:x", "not a disk key"),
            ("scsi0", "local:x,wwn=0x12", "16 hex digits"),
            (
                "scsi0",
                "local:x,serial=ABCDEFGHIJKLMNOPQRSTUVWXYZ",
                "at most 20",
            ),
        ];
        for (key, text, needle) in cases {
            let error = DiskDevice::parse(key, text).unwrap_err().to_string();
            assert!(error.contains(needle), "{key}: {text}: {error}");
        }
    }
}
