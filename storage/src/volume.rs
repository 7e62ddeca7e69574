//! Volume ids (`storage:volname`) and the volname grammar of directory
//! storages.
//!
//! | content  | volname                              | path under the storage  |
//! |----------|--------------------------------------|-------------------------|
//! | images   | `<vmid>/vm-<vmid>-<rest>.raw\|qcow2\|vmdk` | `images/<vmid>/...` |
//! | rootdir  | `rootdir/<vmid>` (reserved)          | `private/<vmid>`        |
//! | iso      | `iso/<name>.iso\|.img`               | `template/iso/...`      |
//! | vztmpl   | `vztmpl/<name>.tar.gz\|xz\|zst\|bz2` | `template/cache/...`    |
//! | backup   | `backup/<name>.vma\|tar\|tgz[.gz\|lzo\|zst\|bz2]` | `dump/...`  |
//! | snippets | `snippets/<name>`                    | `snippets/...`          |
//! | import   | `import/<name>.ova\|ovf\|qcow2\|raw\|vmdk` | `import/...`      |
//!
//! File names must use Proxmox's safe characters (`A-Z a-z 0-9 - _ . + =`),
//! may not start with a dot and are at most 255 bytes, so a volname can
//! never name a path outside its content directory.

use std::fmt;
use std::path::PathBuf;
use std::str::FromStr;

use crate::content::ContentType;
use crate::storage_id::{StorageId, StorageIdError};
use crate::vmid::Vmid;

/// Longest file name a volname may carry.
pub const MAX_FILE_NAME_LEN: usize = 255;

/// Why a volume id or volname was rejected.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum VolumeIdError {
    /// No `storage:` prefix.
    #[error("volume id '{volid}' has no 'storage:' prefix")]
    MissingStorage {
        /// The text.
        volid: String,
    },
    /// The storage part is not a valid storage id.
    #[error("volume id '{volid}': {source}")]
    BadStorage {
        /// The text.
        volid: String,
        /// Why.
        #[source]
        source: StorageIdError,
    },
    /// Empty volname, or one with control characters.
    #[error("volume name '{volname}' is empty or contains control characters")]
    BadVolname {
        /// The volname, with control characters escaped.
        volname: String,
    },
    /// A path component that could leave the content directory.
    #[error("volume name '{volname}' contains a path traversal ('..', '.', empty or absolute component)")]
    Traversal {
        /// The volname.
        volname: String,
    },
    /// The volname is not in any directory-storage layout.
    #[error("volume name '{volname}' is not a directory storage volume (expected {expected})")]
    UnknownLayout {
        /// The volname.
        volname: String,
        /// What forms are accepted.
        expected: &'static str,
    },
    /// A file name with characters outside the safe set or a leading dot.
    #[error("file name '{name}' is not allowed: use only A-Z a-z 0-9 - _ . + =, no leading dot, at most {MAX_FILE_NAME_LEN} bytes")]
    UnsafeFileName {
        /// The name.
        name: String,
    },
    /// The extension does not fit the content type.
    #[error("file name '{name}' has the wrong extension for {content} (expected {expected})")]
    WrongExtension {
        /// The name.
        name: String,
        /// The content type.
        content: ContentType,
        /// Accepted extensions.
        expected: &'static str,
    },
    /// An image owned by one VMID but named for another, or not
    /// `vm-<vmid>-` (`subvol-<vmid>-` for a `.subvol` directory).
    #[error(
        "image name '{name}' must start with 'vm-{vmid}-' (or 'base-{vmid}-' for a template's; 'subvol-{vmid}-' for .subvol) for guest {vmid}"
    )]
    ImageOwner {
        /// The name.
        name: String,
        /// The owning VMID from the directory.
        vmid: Vmid,
    },
    /// A bad VMID component.
    #[error("volume name '{volname}': '{text}' is not a valid VMID")]
    BadVmid {
        /// The volname.
        volname: String,
        /// The VMID text.
        text: String,
    },
    /// Linked clones (`<vmid>/<base>/<vmid>/<name>`) are not built yet.
    #[error("volume name '{volname}': linked clones are not supported yet")]
    BaseImage {
        /// The volname.
        volname: String,
    },
}

/// A volume id: `storage:volname`, e.g. `local:100/vm-100-disk-0.raw`.
///
/// The volname is only checked for being non-empty and free of control
/// characters; each storage type parses its own volnames (see
/// [`DirVolume`]).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct VolumeId {
    storage: StorageId,
    volname: String,
}

impl VolumeId {
    /// Joins a storage id and a volname.
    pub fn new(storage: StorageId, volname: &str) -> Result<Self, VolumeIdError> {
        if volname.is_empty() || volname.chars().any(char::is_control) {
            return Err(VolumeIdError::BadVolname {
                volname: volname.escape_default().to_string(),
            });
        }
        Ok(Self {
            storage,
            volname: volname.to_owned(),
        })
    }

    /// The storage part.
    pub fn storage(&self) -> &StorageId {
        &self.storage
    }

    /// The volname part.
    pub fn volname(&self) -> &str {
        &self.volname
    }

    /// Whether it names a template's base image (`…/base-<vmid>-…`), by
    /// Proxmox's naming, which every storage type follows.
    pub fn is_base_image(&self) -> bool {
        self.volname
            .rsplit('/')
            .next()
            .is_some_and(|name| name.starts_with("base-"))
    }
}

impl FromStr for VolumeId {
    type Err = VolumeIdError;

    fn from_str(volid: &str) -> Result<Self, Self::Err> {
        let (storage, volname) =
            volid
                .split_once(':')
                .ok_or_else(|| VolumeIdError::MissingStorage {
                    volid: volid.to_owned(),
                })?;
        let storage = StorageId::new(storage).map_err(|source| VolumeIdError::BadStorage {
            volid: volid.to_owned(),
            source,
        })?;
        Self::new(storage, volname)
    }
}

impl fmt::Display for VolumeId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.storage, self.volname)
    }
}

/// Disk image formats.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ImageFormat {
    /// Plain raw file.
    Raw,
    /// QEMU copy-on-write v2/v3.
    Qcow2,
    /// VMware disk.
    Vmdk,
    /// A directory holding a container's root file system
    /// (`subvol-<vmid>-disk-<n>.subvol`).
    Subvol,
}

impl ImageFormat {
    /// The name and file extension.
    pub fn as_str(self) -> &'static str {
        match self {
            ImageFormat::Raw => "raw",
            ImageFormat::Qcow2 => "qcow2",
            ImageFormat::Vmdk => "vmdk",
            ImageFormat::Subvol => "subvol",
        }
    }

    /// The name prefix of images in this format: `subvol` for
    /// directories, `vm` for files.
    pub fn name_prefix(self) -> &'static str {
        match self {
            ImageFormat::Subvol => "subvol",
            _ => "vm",
        }
    }
}

impl FromStr for ImageFormat {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "raw" => Ok(ImageFormat::Raw),
            "qcow2" => Ok(ImageFormat::Qcow2),
            "vmdk" => Ok(ImageFormat::Vmdk),
            "subvol" => Ok(ImageFormat::Subvol),
            other => Err(format!(
                "unknown image format '{other}' (expected raw, qcow2, vmdk or subvol)"
            )),
        }
    }
}

impl fmt::Display for ImageFormat {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A parsed volname of a directory storage.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DirVolume {
    /// `<vmid>/<name>`: a disk image owned by `vmid`.
    Image {
        /// Owner.
        vmid: Vmid,
        /// File name, `vm-<vmid>-...`.
        name: String,
        /// Format from the extension.
        format: ImageFormat,
    },
    /// `rootdir/<vmid>`: a container's directory (reserved, not built yet).
    Rootdir {
        /// Owner.
        vmid: Vmid,
    },
    /// `iso/<name>`.
    Iso {
        /// File name.
        name: String,
    },
    /// `vztmpl/<name>`.
    Vztmpl {
        /// File name.
        name: String,
    },
    /// `backup/<name>`.
    Backup {
        /// File name.
        name: String,
        /// Owner, from a `vzdump-{qemu,lxc,openvz}-<vmid>-...` name.
        vmid: Option<Vmid>,
    },
    /// `snippets/<name>`.
    Snippet {
        /// File name.
        name: String,
    },
    /// `import/<name>`.
    Import {
        /// File name.
        name: String,
    },
}

const EXPECTED_LAYOUT: &str = "<vmid>/vm-<vmid>-*.raw|qcow2|vmdk, rootdir/<vmid>, iso/*, vztmpl/*, backup/*, snippets/* or import/*";

impl DirVolume {
    /// Parses a volname such as `iso/debian.iso` or `100/vm-100-disk-0.raw`.
    pub fn parse(volname: &str) -> Result<Self, VolumeIdError> {
        if volname.is_empty() || volname.chars().any(char::is_control) {
            return Err(VolumeIdError::BadVolname {
                volname: volname.escape_default().to_string(),
            });
        }
        let parts: Vec<&str> = volname.split('/').collect();
        if parts
            .iter()
            .any(|p| p.is_empty() || *p == "." || *p == "..")
        {
            return Err(VolumeIdError::Traversal {
                volname: volname.to_owned(),
            });
        }
        let unknown = || VolumeIdError::UnknownLayout {
            volname: volname.to_owned(),
            expected: EXPECTED_LAYOUT,
        };
        let [dir, name] = parts.as_slice() else {
            if parts.len() == 4 && parts.first().is_some_and(|p| p.parse::<Vmid>().is_ok()) {
                return Err(VolumeIdError::BaseImage {
                    volname: volname.to_owned(),
                });
            }
            return Err(unknown());
        };
        let (dir, name) = (*dir, *name);
        match dir {
            "iso" => {
                check_extension(name, ContentType::Iso)?;
                Ok(DirVolume::Iso {
                    name: name.to_owned(),
                })
            }
            "vztmpl" => {
                check_extension(name, ContentType::Vztmpl)?;
                Ok(DirVolume::Vztmpl {
                    name: name.to_owned(),
                })
            }
            "backup" => {
                check_extension(name, ContentType::Backup)?;
                Ok(DirVolume::Backup {
                    name: name.to_owned(),
                    vmid: vzdump_owner(name),
                })
            }
            "snippets" => {
                check_file_name(name)?;
                Ok(DirVolume::Snippet {
                    name: name.to_owned(),
                })
            }
            "import" => {
                check_extension(name, ContentType::Import)?;
                Ok(DirVolume::Import {
                    name: name.to_owned(),
                })
            }
            "rootdir" => {
                let vmid = name.parse().map_err(|_| VolumeIdError::BadVmid {
                    volname: volname.to_owned(),
                    text: name.to_owned(),
                })?;
                Ok(DirVolume::Rootdir { vmid })
            }
            _ if dir.bytes().all(|b| b.is_ascii_digit()) => {
                let vmid: Vmid = dir.parse().map_err(|_| VolumeIdError::BadVmid {
                    volname: volname.to_owned(),
                    text: dir.to_owned(),
                })?;
                let format = parse_image_name(name, vmid)?;
                Ok(DirVolume::Image {
                    vmid,
                    name: name.to_owned(),
                    format,
                })
            }
            _ => Err(unknown()),
        }
    }

    /// The content type the volname belongs to.
    pub fn content(&self) -> ContentType {
        match self {
            DirVolume::Image { .. } => ContentType::Images,
            DirVolume::Rootdir { .. } => ContentType::Rootdir,
            DirVolume::Iso { .. } => ContentType::Iso,
            DirVolume::Vztmpl { .. } => ContentType::Vztmpl,
            DirVolume::Backup { .. } => ContentType::Backup,
            DirVolume::Snippet { .. } => ContentType::Snippets,
            DirVolume::Import { .. } => ContentType::Import,
        }
    }

    /// Whether it is a template's base image (`base-<vmid>-…`).
    pub fn is_base(&self) -> bool {
        matches!(self, DirVolume::Image { name, .. } if name.starts_with("base-"))
    }

    /// The owning VMID, for images, rootdirs and vzdump backups.
    pub fn vmid(&self) -> Option<Vmid> {
        match self {
            DirVolume::Image { vmid, .. } | DirVolume::Rootdir { vmid } => Some(*vmid),
            DirVolume::Backup { vmid, .. } => *vmid,
            _ => None,
        }
    }

    /// The path relative to the content directory of [`Self::content`]
    /// (`<vmid>/<name>` for images, `<vmid>` for rootdirs, else the name).
    pub fn path_in_content_dir(&self) -> PathBuf {
        match self {
            DirVolume::Image { vmid, name, .. } => PathBuf::from(vmid.to_string()).join(name),
            DirVolume::Rootdir { vmid } => PathBuf::from(vmid.to_string()),
            DirVolume::Iso { name }
            | DirVolume::Vztmpl { name }
            | DirVolume::Backup { name, .. }
            | DirVolume::Snippet { name }
            | DirVolume::Import { name } => PathBuf::from(name),
        }
    }

    /// The format string the API reports (`raw`, `iso`, `tzst`, `vma.zst`,
    /// `snippet`, ...).
    pub fn format_label(&self) -> String {
        match self {
            DirVolume::Image { format, .. } => format.as_str().to_owned(),
            DirVolume::Rootdir { .. } => "subvol".to_owned(),
            DirVolume::Iso { .. } => "iso".to_owned(),
            DirVolume::Vztmpl { name } => {
                let lower = name.to_ascii_lowercase();
                let ext = lower.rsplit('.').next().unwrap_or("gz");
                format!("t{ext}")
            }
            DirVolume::Backup { name, .. } => backup_extension(name).unwrap_or("raw").to_owned(),
            DirVolume::Snippet { .. } => "snippet".to_owned(),
            DirVolume::Import { name } => name
                .rsplit('.')
                .next()
                .unwrap_or("raw")
                .to_ascii_lowercase(),
        }
    }
}

impl fmt::Display for DirVolume {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DirVolume::Image { vmid, name, .. } => write!(f, "{vmid}/{name}"),
            DirVolume::Rootdir { vmid } => write!(f, "rootdir/{vmid}"),
            DirVolume::Iso { name } => write!(f, "iso/{name}"),
            DirVolume::Vztmpl { name } => write!(f, "vztmpl/{name}"),
            DirVolume::Backup { name, .. } => write!(f, "backup/{name}"),
            DirVolume::Snippet { name } => write!(f, "snippets/{name}"),
            DirVolume::Import { name } => write!(f, "import/{name}"),
        }
    }
}

/// Checks a bare file name against the safe set: `A-Z a-z 0-9 - _ . + =`,
/// no leading dot, at most [`MAX_FILE_NAME_LEN`] bytes.
pub fn check_file_name(name: &str) -> Result<(), VolumeIdError> {
    let safe = !name.is_empty()
        && name.len() <= MAX_FILE_NAME_LEN
        && !name.starts_with('.')
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'+' | b'='));
    if safe {
        Ok(())
    } else {
        Err(VolumeIdError::UnsafeFileName {
            name: name.escape_default().to_string(),
        })
    }
}

/// Checks the safe-name rule and the extension `content` requires.
pub fn check_extension(name: &str, content: ContentType) -> Result<(), VolumeIdError> {
    check_file_name(name)?;
    let lower = name.to_ascii_lowercase();
    let (ok, expected) = match content {
        ContentType::Iso => (
            has_stem_and_suffix(&lower, &[".iso", ".img"]),
            ".iso or .img",
        ),
        ContentType::Vztmpl => (
            has_stem_and_suffix(&lower, &[".tar.gz", ".tar.xz", ".tar.zst", ".tar.bz2"]),
            ".tar.gz, .tar.xz, .tar.zst or .tar.bz2",
        ),
        ContentType::Backup => (
            backup_extension(name).is_some(),
            ".vma, .tar or .tgz, optionally compressed with .gz, .lzo, .zst or .bz2",
        ),
        ContentType::Import => (
            has_stem_and_suffix(&lower, &[".ova", ".ovf", ".qcow2", ".raw", ".vmdk"]),
            ".ova, .ovf, .qcow2, .raw or .vmdk",
        ),
        ContentType::Images => (
            has_stem_and_suffix(name, &[".raw", ".qcow2", ".vmdk", ".subvol"]),
            ".raw, .qcow2, .vmdk or .subvol",
        ),
        ContentType::Snippets => (true, "any"),
        ContentType::Rootdir => (false, "none (rootdirs are directories)"),
    };
    if ok {
        Ok(())
    } else {
        Err(VolumeIdError::WrongExtension {
            name: name.to_owned(),
            content,
            expected,
        })
    }
}

fn has_stem_and_suffix(name: &str, suffixes: &[&str]) -> bool {
    suffixes
        .iter()
        .any(|s| name.len() > s.len() && name.ends_with(s))
}

/// The backup extension (`vma.zst`, `tar`, `tgz`, ...), case-sensitive as
/// in Proxmox.
fn backup_extension(name: &str) -> Option<&str> {
    for base in ["vma", "tar"] {
        for compression in ["", ".gz", ".lzo", ".zst", ".bz2"] {
            let ext_len = base.len() + compression.len();
            let Some(dot) = name.len().checked_sub(ext_len + 1) else {
                continue;
            };
            let ext = name.get(dot + 1..)?;
            if dot > 0
                && name.as_bytes().get(dot) == Some(&b'.')
                && ext.strip_prefix(base) == Some(compression)
            {
                return Some(ext);
            }
        }
    }
    name.strip_suffix(".tgz")
        .filter(|stem| !stem.is_empty())
        .map(|_| "tgz")
}

/// The VMID of a `vzdump-<type>-<vmid>-<rest>` backup name.
fn vzdump_owner(name: &str) -> Option<Vmid> {
    let rest = name.strip_prefix("vzdump-")?;
    let (kind, rest) = rest.split_once('-')?;
    if !matches!(kind, "qemu" | "lxc" | "openvz") {
        return None;
    }
    let (vmid, tail) = rest.split_once('-')?;
    if tail.is_empty() {
        return None;
    }
    vmid.parse().ok()
}

/// Checks an image file name for `vmid` and returns its format.
pub fn parse_image_name(name: &str, vmid: Vmid) -> Result<ImageFormat, VolumeIdError> {
    check_extension(name, ContentType::Images)?;
    let ext = name.rsplit('.').next().unwrap_or_default();
    let format: ImageFormat = ext.parse().map_err(|_| VolumeIdError::WrongExtension {
        name: name.to_owned(),
        content: ContentType::Images,
        expected: ".raw, .qcow2, .vmdk or .subvol",
    })?;
    // Files are vm-<vmid>-… (base-<vmid>-… once a template's), container
    // directories subvol-<vmid>-….
    let owner_prefix = format!("{}-{vmid}-", format.name_prefix());
    let base_prefix = format!("base-{vmid}-");
    let rest = name.strip_prefix(&owner_prefix).or_else(|| {
        (format != ImageFormat::Subvol)
            .then(|| name.strip_prefix(&base_prefix))
            .flatten()
    });
    match rest {
        Some(rest) if rest.split('.').next().is_some_and(|stem| !stem.is_empty()) => Ok(format),
        _ => Err(VolumeIdError::ImageOwner {
            name: name.to_owned(),
            vmid,
        }),
    }
}

/// The disk number of `vm-<vmid>-disk-<n>.<ext>` (or `base-…`,
/// `subvol-…`), if the name has that form.
pub fn disk_number(name: &str, vmid: Vmid) -> Option<u32> {
    let rest = ["vm", "base", "subvol"]
        .iter()
        .find_map(|prefix| name.strip_prefix(&format!("{prefix}-{vmid}-disk-")))?;
    let (number, _ext) = rest.split_once('.')?;
    if number.is_empty() || (number.len() > 1 && number.starts_with('0')) {
        return None;
    }
    number.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn vmid(n: u32) -> Vmid {
        Vmid::new(n).unwrap()
    }

    #[test]
    fn volume_ids_parse_and_format() {
        let volid: VolumeId = "local:100/vm-100-disk-0.raw".parse().unwrap();
        assert_eq!(volid.storage().as_str(), "local");
        assert_eq!(volid.volname(), "100/vm-100-disk-0.raw");
        assert_eq!(volid.to_string(), "local:100/vm-100-disk-0.raw");
        // Only the first colon separates.
        let odd: VolumeId = "nfs1:snippets/a:b".parse().unwrap();
        assert_eq!(odd.volname(), "snippets/a:b");

        assert!(matches!(
            "no-colon".parse::<VolumeId>(),
            Err(VolumeIdError::MissingStorage { .. })
        ));
        assert!(matches!(
            "9bad:iso/x.iso".parse::<VolumeId>(),
            Err(VolumeIdError::BadStorage { .. })
        ));
        assert!(matches!(
            "local:".parse::<VolumeId>(),
            Err(VolumeIdError::BadVolname { .. })
        ));
        assert!(matches!(
            "local:iso/a\0.iso".parse::<VolumeId>(),
            Err(VolumeIdError::BadVolname { .. })
        ));
    }

    #[test]
    fn dir_volnames_round_trip_with_their_paths() {
        let cases = [
            (
                "100/vm-100-disk-0.raw",
                ContentType::Images,
                "100/vm-100-disk-0.raw",
                "raw",
                Some(100),
            ),
            (
                "105/vm-105-cloudinit.qcow2",
                ContentType::Images,
                "105/vm-105-cloudinit.qcow2",
                "qcow2",
                Some(105),
            ),
            (
                "iso/debian-12.5.0-amd64-netinst.iso",
                ContentType::Iso,
                "debian-12.5.0-amd64-netinst.iso",
                "iso",
                None,
            ),
            ("iso/Win.IMG", ContentType::Iso, "Win.IMG", "iso", None),
            (
                "vztmpl/debian-12-standard_12.2-1_amd64.tar.zst",
                ContentType::Vztmpl,
                "debian-12-standard_12.2-1_amd64.tar.zst",
                "tzst",
                None,
            ),
            (
                "backup/vzdump-qemu-100-2024_01_02-03_04_05.vma.zst",
                ContentType::Backup,
                "vzdump-qemu-100-2024_01_02-03_04_05.vma.zst",
                "vma.zst",
                Some(100),
            ),
            (
                "backup/vzdump-lxc-101-2024_01_02-03_04_05.tar.gz",
                ContentType::Backup,
                "vzdump-lxc-101-2024_01_02-03_04_05.tar.gz",
                "tar.gz",
                Some(101),
            ),
            (
                "backup/manual.tgz",
                ContentType::Backup,
                "manual.tgz",
                "tgz",
                None,
            ),
            (
                "snippets/user-data.yaml",
                ContentType::Snippets,
                "user-data.yaml",
                "snippet",
                None,
            ),
            (
                "import/appliance.ova",
                ContentType::Import,
                "appliance.ova",
                "ova",
                None,
            ),
            (
                "rootdir/200",
                ContentType::Rootdir,
                "200",
                "subvol",
                Some(200),
            ),
        ];
        for (volname, content, rel, format, owner) in cases {
            let vol = DirVolume::parse(volname).unwrap_or_else(|e| panic!("{volname}: {e}"));
            assert_eq!(vol.content(), content, "{volname}");
            assert_eq!(vol.to_string(), volname);
            assert_eq!(vol.path_in_content_dir(), PathBuf::from(rel), "{volname}");
            assert_eq!(vol.format_label(), format, "{volname}");
            assert_eq!(vol.vmid().map(Vmid::get), owner, "{volname}");
        }
    }

    #[test]
    fn traversal_and_unsafe_names_are_rejected() {
        let bad = [
            "../etc/passwd",
            "iso/../../etc/shadow",
            "iso/..",
            "iso/./x.iso",
            "/iso/x.iso",
            "iso//x.iso",
            "iso/",
            "iso/a/b.iso",
            "iso/.hidden.iso",
            "iso/evil name.iso",
            "iso/semi;colon.iso",
            "iso/ünï.iso",
            "snippets/.bashrc",
            "snippets/a\\b",
            "100/../101/vm-101-disk-0.raw",
            "100/vm-101-disk-0.raw",
            "100/disk.raw",
            "100/vm-100-.raw",
            "100/vm-100-disk-0.img",
            "099/vm-99-disk-0.raw",
            "100/base-101-disk-0.raw",
            "100/base-100-disk-0.subvol",
            "100/base-100-disk-0.raw/101/vm-101-disk-0.qcow2",
            "iso/x.txt",
            "iso/.iso",
            "vztmpl/x.tar",
            "backup/x.vma.xz",
            "images/100/vm-100-disk-0.raw",
            "rootdir/abc",
            "etc/passwd",
        ];
        for volname in bad {
            assert!(DirVolume::parse(volname).is_err(), "{volname:?} accepted");
        }
        let long = format!("iso/{}.iso", "a".repeat(252));
        assert!(DirVolume::parse(&long).is_err());
        let ok_long = format!("iso/{}.iso", "a".repeat(251));
        assert!(DirVolume::parse(&ok_long).is_ok());
        assert!(matches!(
            DirVolume::parse("iso/../x.iso"),
            Err(VolumeIdError::Traversal { .. })
        ));
        assert!(matches!(
            DirVolume::parse("100/vm-101-disk-0.raw"),
            Err(VolumeIdError::ImageOwner { .. })
        ));
        // A template's base image; linked clones of one are not built.
        let base = DirVolume::parse("100/base-100-disk-0.raw").unwrap();
        assert!(base.is_base() && base.vmid() == Some(vmid(100)));
        assert!(!DirVolume::parse("100/vm-100-disk-0.raw").unwrap().is_base());
        assert!(matches!(
            DirVolume::parse("100/base-100-disk-0.raw/101/vm-101-disk-0.qcow2"),
            Err(VolumeIdError::BaseImage { .. })
        ));
        assert_eq!(disk_number("base-100-disk-3.raw", vmid(100)), Some(3));
        // Container directories are subvol-<vmid>-…, files vm-<vmid>-….
        let sub = DirVolume::parse("101/subvol-101-disk-0.subvol").unwrap();
        assert_eq!(sub.format_label(), "subvol");
        assert_eq!(sub.content(), ContentType::Images);
        for bad in [
            "101/vm-101-disk-0.subvol",
            "101/subvol-101-disk-0.raw",
            "101/subvol-102-disk-0.subvol",
        ] {
            assert!(
                matches!(DirVolume::parse(bad), Err(VolumeIdError::ImageOwner { .. })),
                "{bad}"
            );
        }
        assert_eq!(disk_number("subvol-101-disk-3.subvol", vmid(101)), Some(3));
    }

    #[test]
    fn disk_numbers_are_read_from_standard_names() {
        let v = vmid(100);
        assert_eq!(disk_number("vm-100-disk-0.raw", v), Some(0));
        assert_eq!(disk_number("vm-100-disk-12.qcow2", v), Some(12));
        assert_eq!(disk_number("vm-100-disk-01.raw", v), None);
        assert_eq!(disk_number("vm-100-cloudinit.qcow2", v), None);
        assert_eq!(disk_number("vm-1000-disk-1.raw", v), None);
    }
}
