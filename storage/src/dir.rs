//! The directory plugin: volumes are files under one path, in Proxmox's
//! layout (`images/<vmid>/`, `template/iso/`, `template/cache/`, `dump/`,
//! `snippets/`, `import/`, `private/`).

use std::collections::{BTreeMap, BTreeSet};
use std::fs::{self, File, OpenOptions};
use std::io::{self, Read};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use crate::atomic_file::move_no_clobber;
use crate::checksum::{file_checksum_hex, ExpectedChecksum};
use crate::config::{ConfigError, StorageEntry};
use crate::content::{ContentSet, ContentType};
use crate::plugin::{ContentItem, PluginError, PluginStatus, StoragePlugin, VolumeSize};
use crate::storage_id::StorageId;
use crate::sys::filesystem_usage;
use crate::vmid::Vmid;
use crate::volume::{
    check_extension, disk_number, parse_image_name, DirVolume, ImageFormat, VolumeId, VolumeIdError,
};

/// Most images one guest may have on one storage (Proxmox's limit).
pub const MAX_VOLUMES_PER_GUEST: u32 = 1024;

/// Name of the upload temp directory under the storage path.
pub const UPLOAD_TEMP_DIR: &str = "upload-tmp";

/// The default subdirectory of each content type.
pub fn default_content_subdir(content: ContentType) -> &'static str {
    match content {
        ContentType::Images => "images",
        ContentType::Rootdir => "private",
        ContentType::Iso => "template/iso",
        ContentType::Vztmpl => "template/cache",
        ContentType::Backup => "dump",
        ContentType::Snippets => "snippets",
        ContentType::Import => "import",
    }
}

/// A `dir:` storage.
#[derive(Debug, Clone)]
pub struct DirStorage {
    id: StorageId,
    path: PathBuf,
    content: ContentSet,
    content_dirs: BTreeMap<ContentType, PathBuf>,
}

impl DirStorage {
    /// A dir storage at `path` allowing `content`, with the default layout.
    pub fn new(id: StorageId, path: &Path, content: ContentSet) -> Self {
        Self {
            id,
            path: path.to_owned(),
            content,
            content_dirs: BTreeMap::new(),
        }
    }

    /// Builds the plugin from a `dir:` section (path, content, content-dirs).
    pub fn from_entry(entry: &StorageEntry) -> Result<Self, ConfigError> {
        let path = entry.path().ok_or_else(|| ConfigError::MissingKey {
            line: 0,
            kind: entry.kind().to_owned(),
            id: entry.id().to_string(),
            key: "path".to_owned(),
        })?;
        let mut storage = Self::new(entry.id().clone(), path, entry.content());
        for (content, dir) in entry.content_dirs() {
            storage
                .content_dirs
                .insert(content, PathBuf::from(dir.trim_start_matches('/')));
        }
        Ok(storage)
    }

    /// The storage's base path.
    pub fn base_path(&self) -> &Path {
        &self.path
    }

    /// The directory holding `content`.
    pub fn content_dir(&self, content: ContentType) -> PathBuf {
        match self.content_dirs.get(&content) {
            Some(dir) => self.path.join(dir),
            None => self.path.join(default_content_subdir(content)),
        }
    }

    fn own_volume(&self, volid: &VolumeId) -> Result<DirVolume, PluginError> {
        if volid.storage() != &self.id {
            return Err(PluginError::WrongStorage {
                volid: volid.clone(),
                storage: self.id.clone(),
            });
        }
        Ok(DirVolume::parse(volid.volname())?)
    }

    fn volume_path(&self, volume: &DirVolume) -> PathBuf {
        self.content_dir(volume.content())
            .join(volume.path_in_content_dir())
    }

    fn volid(&self, volume: &DirVolume) -> Result<VolumeId, PluginError> {
        Ok(VolumeId::new(self.id.clone(), &volume.to_string())?)
    }

    fn require_content(&self, content: ContentType) -> Result<(), PluginError> {
        if self.content.contains(content) {
            Ok(())
        } else {
            Err(PluginError::ContentNotAllowed {
                storage: self.id.clone(),
                content,
            })
        }
    }

    fn item_for(
        &self,
        volume: &DirVolume,
        path: &Path,
        meta: &fs::Metadata,
    ) -> Result<ContentItem, PluginError> {
        let (size, used) = sizes_of(volume, path, meta);
        Ok(ContentItem {
            volid: self.volid(volume)?,
            content: volume.content(),
            format: volume.format_label(),
            size,
            used: matches!(volume, DirVolume::Image { .. }).then_some(used),
            vmid: volume.vmid(),
            ctime: meta.ctime(),
        })
    }

    fn list_images(&self, vmid: Option<Vmid>) -> Result<Vec<ContentItem>, PluginError> {
        let images_dir = self.content_dir(ContentType::Images);
        let mut items = Vec::new();
        for owner_dir in read_dir_names(&images_dir)? {
            let Ok(owner) = owner_dir.parse::<Vmid>() else {
                continue;
            };
            if vmid.is_some_and(|v| v != owner) {
                continue;
            }
            let dir = images_dir.join(&owner_dir);
            if !dir.is_dir() {
                continue;
            }
            for name in read_dir_names(&dir)? {
                let volname = format!("{owner_dir}/{name}");
                let volume = match DirVolume::parse(&volname) {
                    Ok(v) => v,
                    Err(e) => {
                        tracing::debug!(storage = %self.id, %volname, error = %e, "skipping file");
                        continue;
                    }
                };
                let path = dir.join(&name);
                match fs::metadata(&path) {
                    Ok(meta) if meta.is_file() => items.push(self.item_for(&volume, &path, &meta)?),
                    Ok(_) => {}
                    Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                    Err(e) => return Err(PluginError::io("stat", &path, e)),
                }
            }
        }
        Ok(items)
    }

    fn list_files(
        &self,
        content: ContentType,
        vmid: Option<Vmid>,
    ) -> Result<Vec<ContentItem>, PluginError> {
        let prefix = match content {
            ContentType::Iso => "iso",
            ContentType::Vztmpl => "vztmpl",
            ContentType::Backup => "backup",
            ContentType::Snippets => "snippets",
            ContentType::Import => "import",
            ContentType::Images | ContentType::Rootdir => return Ok(Vec::new()),
        };
        let dir = self.content_dir(content);
        let mut items = Vec::new();
        for name in read_dir_names(&dir)? {
            if let Some(v) = vmid {
                if !name.contains(&format!("-{v}-")) {
                    continue;
                }
            }
            let volname = format!("{prefix}/{name}");
            let volume = match DirVolume::parse(&volname) {
                Ok(v) => v,
                Err(e) => {
                    tracing::debug!(storage = %self.id, %volname, error = %e, "skipping file");
                    continue;
                }
            };
            let path = dir.join(&name);
            let meta = match fs::metadata(&path) {
                Ok(meta) if meta.is_file() => meta,
                Ok(_) => continue,
                Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
                Err(e) => return Err(PluginError::io("stat", &path, e)),
            };
            let mut item = self.item_for(&volume, &path, &meta)?;
            if item.vmid.is_none() {
                item.vmid = vmid;
            }
            items.push(item);
        }
        Ok(items)
    }

    fn existing_disk_numbers(&self, vmid: Vmid, dir: &Path) -> Result<BTreeSet<u32>, PluginError> {
        Ok(read_dir_names(dir)?
            .iter()
            .filter_map(|name| disk_number(name, vmid))
            .collect())
    }

    /// Creates `path` as a new sparse raw file of `size_bytes`.
    fn create_raw(path: &Path, size_bytes: u64) -> Result<(), io::Error> {
        let file = OpenOptions::new().write(true).create_new(true).open(path)?;
        let result = file.set_len(size_bytes).and_then(|()| file.sync_all());
        if result.is_err() {
            let _ = fs::remove_file(path);
        }
        result
    }
}

impl StoragePlugin for DirStorage {
    fn id(&self) -> &StorageId {
        &self.id
    }

    fn kind(&self) -> &'static str {
        "dir"
    }

    fn content(&self) -> &ContentSet {
        &self.content
    }

    fn status(&self) -> Result<PluginStatus, PluginError> {
        if !self.path.is_dir() {
            tracing::warn!(storage = %self.id, path = %self.path.display(), "storage path is not a directory");
            return Ok(PluginStatus {
                total: 0,
                used: 0,
                avail: 0,
                active: false,
            });
        }
        let usage =
            filesystem_usage(&self.path).map_err(|e| PluginError::io("statvfs", &self.path, e))?;
        Ok(PluginStatus {
            total: usage.total,
            used: usage.used,
            avail: usage.avail,
            active: true,
        })
    }

    fn list_content(
        &self,
        content: Option<ContentType>,
        vmid: Option<Vmid>,
    ) -> Result<Vec<ContentItem>, PluginError> {
        let wanted: Vec<ContentType> = match content {
            Some(c) => vec![c],
            None => ContentType::ALL.to_vec(),
        };
        let mut items = Vec::new();
        for content in wanted {
            if !self.content.contains(content) {
                continue;
            }
            match content {
                ContentType::Images => items.extend(self.list_images(vmid)?),
                // Containers on a dir storage use raw images, listed as
                // images; subvolume rootdirs are not built yet.
                ContentType::Rootdir => {}
                ContentType::Iso
                | ContentType::Vztmpl
                | ContentType::Snippets
                | ContentType::Import
                    if vmid.is_some() => {}
                other => items.extend(self.list_files(other, vmid)?),
            }
        }
        items.sort_by(|a, b| a.volid.cmp(&b.volid));
        Ok(items)
    }

    fn alloc_image(
        &self,
        vmid: Vmid,
        name: Option<&str>,
        format: ImageFormat,
        size_bytes: u64,
    ) -> Result<VolumeId, PluginError> {
        if !self.content.contains(ContentType::Images)
            && !self.content.contains(ContentType::Rootdir)
        {
            return Err(PluginError::ContentNotAllowed {
                storage: self.id.clone(),
                content: ContentType::Images,
            });
        }
        if format != ImageFormat::Raw {
            return Err(PluginError::UnsupportedFormat {
                storage: self.id.clone(),
                format,
            });
        }
        if size_bytes == 0 || size_bytes % 512 != 0 {
            return Err(PluginError::BadSize {
                size_bytes,
                reason: "must be a non-zero multiple of 512",
            });
        }
        let dir = self.content_dir(ContentType::Images).join(vmid.to_string());
        fs::create_dir_all(&dir).map_err(|e| PluginError::io("create", &dir, e))?;

        let candidates: Vec<String> = match name {
            Some(name) => {
                let named_format = parse_image_name(name, vmid)?;
                if named_format != format {
                    return Err(VolumeIdError::WrongExtension {
                        name: name.to_owned(),
                        content: ContentType::Images,
                        expected: format.as_str(),
                    }
                    .into());
                }
                vec![name.to_owned()]
            }
            None => {
                let taken = self.existing_disk_numbers(vmid, &dir)?;
                (0..MAX_VOLUMES_PER_GUEST)
                    .filter(|n| !taken.contains(n))
                    .map(|n| format!("vm-{vmid}-disk-{n}.{format}"))
                    .collect()
            }
        };
        for candidate in candidates {
            let volume = DirVolume::Image {
                vmid,
                name: candidate,
                format,
            };
            let volid = self.volid(&volume)?;
            let path = self.volume_path(&volume);
            match Self::create_raw(&path, size_bytes) {
                Ok(()) => {
                    crate::sys::fsync_dir(&dir).map_err(|e| PluginError::io("fsync", &dir, e))?;
                    tracing::info!(%volid, size_bytes, "allocated image");
                    return Ok(volid);
                }
                // Explicit names must not be overwritten; generated names
                // move on to the next number (another allocation won).
                Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {
                    if name.is_some() {
                        return Err(PluginError::AlreadyExists { volid });
                    }
                }
                Err(e) => return Err(PluginError::io("create", &path, e)),
            }
        }
        Err(PluginError::NoFreeName {
            vmid,
            storage: self.id.clone(),
        })
    }

    fn delete_volume(&self, volid: &VolumeId) -> Result<(), PluginError> {
        let volume = self.own_volume(volid)?;
        if let DirVolume::Rootdir { .. } = volume {
            return Err(PluginError::Unsupported {
                storage: self.id.clone(),
                kind: "dir".to_owned(),
                operation: "deleting rootdir subvolumes",
            });
        }
        let path = self.volume_path(&volume);
        if matches!(volume, DirVolume::Backup { .. }) && sidecar(&path, ".protected").exists() {
            return Err(PluginError::Protected {
                volid: volid.clone(),
            });
        }
        match fs::remove_file(&path) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                return Err(PluginError::NotFound {
                    volid: volid.clone(),
                })
            }
            Err(e) => return Err(PluginError::io("remove", &path, e)),
        }
        tracing::info!(%volid, "deleted volume");
        let parent = path.parent().map(Path::to_owned).unwrap_or_default();
        match &volume {
            // Drop the per-VM directory once its last image is gone.
            DirVolume::Image { .. } if fs::remove_dir(&parent).is_ok() => {
                tracing::debug!(dir = %parent.display(), "removed empty image directory");
            }
            DirVolume::Backup { name, .. } => {
                remove_if_present(&sidecar(&path, ".notes"));
                if let Some(stem) = backup_stem(name) {
                    remove_if_present(&parent.join(format!("{stem}.log")));
                }
            }
            _ => {}
        }
        crate::sys::fsync_dir(&parent).map_err(|e| PluginError::io("fsync", &parent, e))
    }

    fn free_image(&self, volid: &VolumeId) -> Result<(), PluginError> {
        match self.own_volume(volid)? {
            DirVolume::Image { .. } => self.delete_volume(volid),
            _ => Err(PluginError::Unsupported {
                storage: self.id.clone(),
                kind: "dir".to_owned(),
                operation: "free_image on a volume that is not an image",
            }),
        }
    }

    fn path(&self, volid: &VolumeId) -> Result<PathBuf, PluginError> {
        let volume = self.own_volume(volid)?;
        Ok(self.volume_path(&volume))
    }

    fn volume_size(&self, volid: &VolumeId) -> Result<VolumeSize, PluginError> {
        let volume = self.own_volume(volid)?;
        let path = self.volume_path(&volume);
        let meta = match fs::metadata(&path) {
            Ok(meta) => meta,
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                return Err(PluginError::NotFound {
                    volid: volid.clone(),
                })
            }
            Err(e) => return Err(PluginError::io("stat", &path, e)),
        };
        let (size, used) = sizes_of(&volume, &path, &meta);
        Ok(VolumeSize {
            size,
            used,
            format: volume.format_label(),
        })
    }

    fn upload_temp_dir(&self) -> Result<PathBuf, PluginError> {
        let dir = self.path.join(UPLOAD_TEMP_DIR);
        fs::create_dir_all(&dir).map_err(|e| PluginError::io("create", &dir, e))?;
        Ok(dir)
    }

    fn import_upload(
        &self,
        content: ContentType,
        filename: &str,
        temp_file: &Path,
        checksum: Option<&ExpectedChecksum>,
    ) -> Result<VolumeId, PluginError> {
        let result = self.import_upload_inner(content, filename, temp_file, checksum);
        if result.is_err() {
            remove_if_present(temp_file);
        }
        result
    }
}

impl DirStorage {
    fn import_upload_inner(
        &self,
        content: ContentType,
        filename: &str,
        temp_file: &Path,
        checksum: Option<&ExpectedChecksum>,
    ) -> Result<VolumeId, PluginError> {
        let prefix = match content {
            ContentType::Iso => "iso",
            ContentType::Vztmpl => "vztmpl",
            ContentType::Import => "import",
            other => return Err(PluginError::NotUploadable { content: other }),
        };
        self.require_content(content)?;
        check_extension(filename, content)?;
        if content == ContentType::Import && filename.to_ascii_lowercase().ends_with(".ovf") {
            return Err(VolumeIdError::WrongExtension {
                name: filename.to_owned(),
                content,
                expected: ".ova, .qcow2, .raw or .vmdk (an .ovf cannot be uploaded)",
            }
            .into());
        }
        let volume = DirVolume::parse(&format!("{prefix}/{filename}"))?;
        let volid = self.volid(&volume)?;
        let target = self.volume_path(&volume);
        if target.exists() {
            return Err(PluginError::AlreadyExists { volid });
        }
        if let Some(expected) = checksum {
            let actual = file_checksum_hex(temp_file, expected.algorithm())
                .map_err(|e| PluginError::io("hash", temp_file, e))?;
            if !expected.matches(&actual) {
                return Err(PluginError::ChecksumMismatch {
                    filename: filename.to_owned(),
                    algorithm: expected.algorithm().to_string(),
                    expected: expected.hex().to_owned(),
                    actual,
                });
            }
        }
        let dir = self.content_dir(content);
        fs::create_dir_all(&dir).map_err(|e| PluginError::io("create", &dir, e))?;
        match move_no_clobber(temp_file, &target) {
            Ok(()) => {
                tracing::info!(%volid, "imported upload");
                Ok(volid)
            }
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {
                Err(PluginError::AlreadyExists { volid })
            }
            Err(e) if e.raw_os_error() == Some(nix::libc::EXDEV) => Err(PluginError::CrossDevice {
                temp: temp_file.to_owned(),
                target,
            }),
            Err(e) => Err(PluginError::io("move upload to", &target, e)),
        }
    }
}

/// Names in a directory; a missing directory is empty.
fn read_dir_names(dir: &Path) -> Result<Vec<String>, PluginError> {
    let entries = match fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(PluginError::io("read directory", dir, e)),
    };
    let mut names = Vec::new();
    for entry in entries {
        let entry = entry.map_err(|e| PluginError::io("read directory", dir, e))?;
        match entry.file_name().into_string() {
            Ok(name) => names.push(name),
            Err(raw) => {
                tracing::debug!(dir = %dir.display(), name = ?raw, "skipping non-UTF-8 name")
            }
        }
    }
    names.sort();
    Ok(names)
}

/// (size, used) of a volume file: an image's virtual size for qcow2, the
/// file length otherwise; used is the allocated blocks.
fn sizes_of(volume: &DirVolume, path: &Path, meta: &fs::Metadata) -> (u64, u64) {
    let used = meta.blocks().saturating_mul(512);
    let size = match volume {
        DirVolume::Image {
            format: ImageFormat::Qcow2,
            ..
        } => match qcow2_virtual_size(path) {
            Ok(size) => size,
            Err(e) => {
                tracing::warn!(path = %path.display(), error = %e, "cannot read qcow2 header, reporting file size");
                meta.len()
            }
        },
        _ => meta.len(),
    };
    (size, used)
}

/// The virtual size from a qcow2 header (magic `QFI\xfb`, size at byte 24).
fn qcow2_virtual_size(path: &Path) -> io::Result<u64> {
    let mut header = [0u8; 32];
    File::open(path)?.read_exact(&mut header)?;
    let (magic, rest) = header.split_at(4);
    if magic != b"QFI\xfb" {
        return Err(io::Error::new(io::ErrorKind::InvalidData, "no qcow2 magic"));
    }
    let size_bytes: [u8; 8] = rest
        .get(20..28)
        .and_then(|s| s.try_into().ok())
        .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidData, "short qcow2 header"))?;
    Ok(u64::from_be_bytes(size_bytes))
}

fn sidecar(path: &Path, suffix: &str) -> PathBuf {
    let mut os = path.as_os_str().to_owned();
    os.push(suffix);
    PathBuf::from(os)
}

/// `vzdump-qemu-100-2024_01_01-00_00_00` of a backup name.
fn backup_stem(name: &str) -> Option<&str> {
    [".vma", ".tar", ".tgz"]
        .iter()
        .filter_map(|ext| name.rfind(ext).map(|i| name.get(..i)))
        .flatten()
        .find(|stem| !stem.is_empty())
}

fn remove_if_present(path: &Path) {
    match fs::remove_file(path) {
        Ok(()) => {}
        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
        Err(e) => tracing::warn!(path = %path.display(), error = %e, "cannot remove file"),
    }
}
