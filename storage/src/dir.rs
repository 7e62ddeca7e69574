//! The directory plugin: volumes are files under one path, in Proxmox's
//! layout (`images/<vmid>/`, `template/iso/`, `template/cache/`, `dump/`,
//! `snippets/`, `import/`, `private/`).

use std::collections::{BTreeMap, BTreeSet};
use std::fs::{self, File, OpenOptions};
use std::io::{self, Read};
use std::os::unix::fs::{MetadataExt, PermissionsExt};
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
                    Ok(meta) if meta.is_file() || is_subvol(&volume) && meta.is_dir() => {
                        items.push(self.item_for(&volume, &path, &meta)?)
                    }
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

    /// [`PluginError::Unsupported`] for `operation` on this storage.
    fn unsupported(&self, operation: &'static str) -> PluginError {
        PluginError::Unsupported {
            storage: self.id.clone(),
            kind: "dir".to_owned(),
            operation,
        }
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

/// An image's size must be a non-zero multiple of 512 bytes.
fn check_image_size(size_bytes: u64) -> Result<(), PluginError> {
    if size_bytes == 0 || size_bytes % 512 != 0 {
        return Err(PluginError::BadSize {
            size_bytes,
            reason: "must be a non-zero multiple of 512",
        });
    }
    Ok(())
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
        if !matches!(format, ImageFormat::Raw | ImageFormat::Subvol) {
            return Err(PluginError::UnsupportedFormat {
                storage: self.id.clone(),
                format,
            });
        }
        check_image_size(size_bytes)?;
        let dir = self.content_dir(ContentType::Images).join(vmid.to_string());
        fs::create_dir_all(&dir).map_err(|e| PluginError::io("create", &dir, e))?;

        let candidates: Vec<String> = match name {
            Some(name) => {
                let named_format = parse_image_name(name, vmid)?;
                if name.starts_with("base-") {
                    // Base images are made from images, never allocated.
                    return Err(VolumeIdError::ImageOwner {
                        name: name.to_owned(),
                        vmid,
                    }
                    .into());
                }
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
                    .map(|n| format!("{}-{vmid}-disk-{n}.{format}", format.name_prefix()))
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
            // A directory's size is not enforced on a dir storage: it
            // bounds what a template may unpack into it.
            let created = match format {
                ImageFormat::Subvol => fs::create_dir(&path),
                _ => Self::create_raw(&path, size_bytes),
            };
            match created {
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
            return Err(self.unsupported("deleting rootdir subvolumes"));
        }
        let path = self.volume_path(&volume);
        if matches!(volume, DirVolume::Backup { .. }) && sidecar(&path, ".protected").exists() {
            return Err(PluginError::Protected {
                volid: volid.clone(),
            });
        }
        let removed = if is_subvol(&volume) {
            // A container's tree: remove_dir_all never follows its links.
            fs::remove_dir_all(&path)
        } else {
            fs::remove_file(&path)
        };
        match removed {
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
        // The directory whose entry changed, to make the removal durable.
        let mut changed_dir = parent.clone();
        match &volume {
            // Drop the per-VM directory once its last image is gone.
            DirVolume::Image { .. } if fs::remove_dir(&parent).is_ok() => {
                tracing::debug!(dir = %parent.display(), "removed empty image directory");
                changed_dir = parent.parent().map(Path::to_owned).unwrap_or_default();
            }
            DirVolume::Backup { name, .. } => {
                remove_if_present(&sidecar(&path, ".notes"));
                if let Some(stem) = backup_stem(name) {
                    remove_if_present(&parent.join(format!("{stem}.log")));
                }
            }
            _ => {}
        }
        crate::sys::fsync_dir(&changed_dir).map_err(|e| PluginError::io("fsync", &changed_dir, e))
    }

    fn free_image(&self, volid: &VolumeId) -> Result<(), PluginError> {
        match self.own_volume(volid)? {
            DirVolume::Image { .. } => self.delete_volume(volid),
            _ => Err(self.unsupported("free_image on a volume that is not an image")),
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

    fn create_base(&self, volid: &VolumeId) -> Result<VolumeId, PluginError> {
        let volume = self.own_volume(volid)?;
        let DirVolume::Image { vmid, name, format } = &volume else {
            return Err(self.unsupported("base volumes of anything but disk images"));
        };
        if *format != ImageFormat::Raw {
            return Err(PluginError::UnsupportedFormat {
                storage: self.id.clone(),
                format: *format,
            });
        }
        let Some(rest) = name.strip_prefix("vm-") else {
            return Err(self.unsupported("a base volume of a base volume"));
        };
        let base = DirVolume::Image {
            vmid: *vmid,
            name: format!("base-{rest}"),
            format: *format,
        };
        let (from, to) = (self.volume_path(&volume), self.volume_path(&base));
        if !from.is_file() {
            return Err(PluginError::NotFound {
                volid: volid.clone(),
            });
        }
        let base_id = self.volid(&base)?;
        crate::sys::rename_no_replace(&from, &to).map_err(|e| {
            if e.kind() == io::ErrorKind::AlreadyExists {
                PluginError::AlreadyExists {
                    volid: base_id.clone(),
                }
            } else {
                PluginError::io("rename", &from, e)
            }
        })?;
        // Nobody writes a base image: its clones are copies of it.
        let _ = fs::set_permissions(&to, fs::Permissions::from_mode(0o444));
        let dir = to.parent().unwrap_or(&self.path);
        crate::sys::fsync_dir(dir).map_err(|e| PluginError::io("fsync", dir, e))?;
        tracing::info!(from = %volid, to = %base_id, "made a base image");
        Ok(base_id)
    }

    fn resize_image(&self, volid: &VolumeId, size_bytes: u64) -> Result<(), PluginError> {
        let volume = self.own_volume(volid)?;
        if volume.is_base() {
            return Err(self.unsupported("resizing a template's base image"));
        }
        match volume {
            DirVolume::Image {
                format: ImageFormat::Raw,
                ..
            } => {}
            DirVolume::Image { format, .. } => {
                return Err(self.unsupported(if format == ImageFormat::Subvol {
                    "resizing subvolumes (a directory has no size to grow)"
                } else {
                    "resizing images of this format"
                }))
            }
            _ => return Err(self.unsupported("resizing volumes that are not disk images")),
        }
        check_image_size(size_bytes)?;
        let path = self.volume_path(&volume);
        let file = match OpenOptions::new().write(true).open(&path) {
            Ok(file) => file,
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                return Err(PluginError::NotFound {
                    volid: volid.clone(),
                })
            }
            Err(e) => return Err(PluginError::io("open", &path, e)),
        };
        let now = file
            .metadata()
            .map_err(|e| PluginError::io("stat", &path, e))?
            .len();
        if size_bytes < now {
            return Err(PluginError::BadSize {
                size_bytes,
                reason: "smaller than the image: shrinking is not supported",
            });
        }
        if size_bytes > now {
            // The new end reads as zeros and takes no space until written.
            file.set_len(size_bytes)
                .and_then(|()| file.sync_all())
                .map_err(|e| PluginError::io("grow", &path, e))?;
            tracing::info!(%volid, from = now, to = size_bytes, "resized image");
        }
        Ok(())
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
        self.check_is_upload(temp_file)?;
        let result = self.import_upload_inner(content, filename, temp_file, checksum);
        if result.is_err() {
            remove_if_present(temp_file);
        }
        result
    }
}

impl DirStorage {
    /// Refuses anything but a regular file directly in the upload dir, so
    /// a wrong path from a caller is neither published nor deleted.
    fn check_is_upload(&self, temp_file: &Path) -> Result<(), PluginError> {
        let not_an_upload = || PluginError::NotAnUpload {
            path: temp_file.to_owned(),
            storage: self.id.clone(),
        };
        let upload_dir = self.upload_temp_dir()?;
        let same_dir = match (
            temp_file.parent().map(fs::canonicalize),
            fs::canonicalize(&upload_dir),
        ) {
            (Some(Ok(parent)), Ok(dir)) => parent == dir,
            _ => false,
        };
        let regular = fs::symlink_metadata(temp_file).is_ok_and(|m| m.file_type().is_file());
        if same_dir && regular {
            Ok(())
        } else {
            Err(not_an_upload())
        }
    }

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
/// Whether `volume` is a container's directory.
fn is_subvol(volume: &DirVolume) -> bool {
    matches!(
        volume,
        DirVolume::Image {
            format: ImageFormat::Subvol,
            ..
        }
    )
}

fn sizes_of(volume: &DirVolume, path: &Path, meta: &fs::Metadata) -> (u64, u64) {
    if is_subvol(volume) {
        // No quota on a plain directory: no size to report.
        return (0, 0);
    }
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::checksum::ChecksumAlgorithm;
    use crate::upload::UploadWriter;
    use std::io::Write;

    const ABC_SHA256: &str = "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad";

    fn all_content() -> ContentSet {
        ContentType::ALL.into_iter().collect()
    }

    fn storage(root: &Path) -> DirStorage {
        DirStorage::new(StorageId::new("local").unwrap(), root, all_content())
    }

    fn vmid(n: u32) -> Vmid {
        Vmid::new(n).unwrap()
    }

    fn volid(s: &str) -> VolumeId {
        s.parse().unwrap()
    }

    fn touch(path: &Path, bytes: &[u8]) {
        fs::create_dir_all(path.parent().unwrap()).unwrap();
        fs::write(path, bytes).unwrap();
    }

    /// A file in the upload temp dir holding `bytes`.
    fn upload(dir: &DirStorage, bytes: &[u8]) -> PathBuf {
        let mut writer = UploadWriter::create(&dir.upload_temp_dir().unwrap(), None).unwrap();
        writer.write_all(bytes).unwrap();
        writer.finish().unwrap().path
    }

    #[test]
    fn container_directories_are_allocated_listed_and_removed() {
        let root = tempfile::tempdir().unwrap();
        let dir = storage(root.path());
        let raw = dir
            .alloc_image(vmid(101), None, ImageFormat::Raw, 512)
            .unwrap();
        assert_eq!(raw.to_string(), "local:101/vm-101-disk-0.raw");
        // Disk numbers are shared between files and directories.
        let sub = dir
            .alloc_image(vmid(101), None, ImageFormat::Subvol, 8 << 30)
            .unwrap();
        assert_eq!(sub.to_string(), "local:101/subvol-101-disk-1.subvol");
        let path = dir.path(&sub).unwrap();
        assert!(path.is_dir());
        fs::create_dir_all(path.join("etc")).unwrap();
        std::os::unix::fs::symlink("/", path.join("etc/escape")).unwrap();
        let listed: Vec<String> = dir
            .list_content(Some(ContentType::Images), Some(vmid(101)))
            .unwrap()
            .into_iter()
            .map(|i| i.volid.to_string())
            .collect();
        assert_eq!(
            listed,
            [
                "local:101/subvol-101-disk-1.subvol",
                "local:101/vm-101-disk-0.raw"
            ]
        );
        dir.free_image(&sub).unwrap();
        assert!(!path.exists());
        // The link inside was removed, not followed.
        assert!(Path::new("/etc").is_dir());
        assert!(dir.path(&raw).unwrap().is_file());
    }

    #[test]
    fn alloc_picks_the_next_free_disk_number() {
        let root = tempfile::tempdir().unwrap();
        let dir = storage(root.path());
        let names: Vec<String> = (0..3)
            .map(|_| {
                dir.alloc_image(vmid(100), None, ImageFormat::Raw, 1 << 20)
                    .unwrap()
                    .to_string()
            })
            .collect();
        assert_eq!(
            names,
            [
                "local:100/vm-100-disk-0.raw",
                "local:100/vm-100-disk-1.raw",
                "local:100/vm-100-disk-2.raw"
            ]
        );
        // Another VM starts at 0; a freed number is reused.
        let other = dir
            .alloc_image(vmid(101), None, ImageFormat::Raw, 512)
            .unwrap();
        assert_eq!(other.to_string(), "local:101/vm-101-disk-0.raw");
        dir.free_image(&volid("local:100/vm-100-disk-1.raw"))
            .unwrap();
        let reused = dir
            .alloc_image(vmid(100), None, ImageFormat::Raw, 512)
            .unwrap();
        assert_eq!(reused.to_string(), "local:100/vm-100-disk-1.raw");
        // Numbers taken by other formats or custom names count too.
        touch(&root.path().join("images/100/vm-100-disk-3.qcow2"), b"");
        let next = dir
            .alloc_image(vmid(100), None, ImageFormat::Raw, 512)
            .unwrap();
        assert_eq!(next.to_string(), "local:100/vm-100-disk-4.raw");
    }

    #[test]
    fn alloc_creates_a_sparse_file_of_the_size() {
        let root = tempfile::tempdir().unwrap();
        let dir = storage(root.path());
        let id = dir
            .alloc_image(vmid(100), None, ImageFormat::Raw, 8 << 30)
            .unwrap();
        let path = dir.path(&id).unwrap();
        assert_eq!(path, root.path().join("images/100/vm-100-disk-0.raw"));
        let meta = fs::metadata(&path).unwrap();
        assert_eq!(meta.len(), 8 << 30);
        assert!(meta.blocks() * 512 < 1 << 20, "not sparse");
        let size = dir.volume_size(&id).unwrap();
        assert_eq!((size.size, size.format.as_str()), (8 << 30, "raw"));
    }

    #[test]
    fn an_image_becomes_a_read_only_base_image() {
        let root = tempfile::tempdir().unwrap();
        let dir = storage(root.path());
        let id = dir
            .alloc_image(vmid(100), None, ImageFormat::Raw, 1 << 20)
            .unwrap();
        fs::write(dir.path(&id).unwrap(), b"TEMPLATE").unwrap();
        let base = dir.create_base(&id).unwrap();
        assert_eq!(base.to_string(), "local:100/base-100-disk-0.raw");
        let path = dir.path(&base).unwrap();
        assert_eq!(fs::read(&path).unwrap(), b"TEMPLATE");
        assert_eq!(fs::metadata(&path).unwrap().mode() & 0o777, 0o444);
        assert!(!root.path().join("images/100/vm-100-disk-0.raw").exists());
        // Listed and sized as the VM's; its number is taken.
        let listed: Vec<String> = dir
            .list_content(Some(ContentType::Images), Some(vmid(100)))
            .unwrap()
            .into_iter()
            .map(|i| i.volid.to_string())
            .collect();
        assert_eq!(listed, ["local:100/base-100-disk-0.raw"]);
        assert_eq!(dir.volume_size(&base).unwrap().size, 8);
        let next = dir
            .alloc_image(vmid(100), None, ImageFormat::Raw, 512)
            .unwrap();
        assert_eq!(next.to_string(), "local:100/vm-100-disk-1.raw");
        // Refused: a base of a base, a missing image, a taken base name,
        // growing a base image, allocating a base name.
        assert!(dir.create_base(&base).is_err());
        assert!(matches!(
            dir.create_base(&volid("local:100/vm-100-disk-7.raw")),
            Err(PluginError::NotFound { .. })
        ));
        fs::write(root.path().join("images/100/base-100-disk-1.raw"), b"").unwrap();
        assert!(matches!(
            dir.create_base(&next),
            Err(PluginError::AlreadyExists { .. })
        ));
        assert!(dir.path(&next).unwrap().is_file(), "the image stays");
        assert!(dir.resize_image(&base, 2 << 20).is_err());
        assert!(dir
            .alloc_image(
                vmid(100),
                Some("base-100-disk-5.raw"),
                ImageFormat::Raw,
                512
            )
            .is_err());
        // A base image is deleted as any image.
        dir.free_image(&base).unwrap();
        assert!(!path.exists());
    }

    #[test]
    fn resize_grows_a_raw_image_sparsely_and_refuses_the_rest() {
        let root = tempfile::tempdir().unwrap();
        let dir = storage(root.path());
        let id = dir
            .alloc_image(vmid(100), None, ImageFormat::Raw, 1 << 20)
            .unwrap();
        let path = dir.path(&id).unwrap();
        fs::write(&path, vec![7u8; 4096]).unwrap();
        dir.resize_image(&id, 1 << 20).unwrap();
        dir.resize_image(&id, 4 << 30).unwrap();
        let meta = fs::metadata(&path).unwrap();
        assert_eq!(meta.len(), 4 << 30);
        assert!(meta.blocks() * 512 < 1 << 20, "not sparse");
        assert_eq!(fs::read(&path).unwrap()[..4096], [7u8; 4096], "data kept");
        // The same size changes nothing; smaller, odd and zero sizes fail.
        dir.resize_image(&id, 4 << 30).unwrap();
        for bad in [1 << 20, (4 << 30) + 100, 0] {
            let e = dir.resize_image(&id, bad).unwrap_err();
            assert!(matches!(e, PluginError::BadSize { .. }), "{bad}: {e}");
        }
        assert_eq!(fs::metadata(&path).unwrap().len(), 4 << 30);
        let e = dir
            .resize_image(&volid("local:100/vm-100-disk-9.raw"), 1 << 30)
            .unwrap_err();
        assert!(matches!(e, PluginError::NotFound { .. }), "{e}");
        assert!(!root.path().join("images/100/vm-100-disk-9.raw").exists());
        let sub = dir
            .alloc_image(vmid(100), None, ImageFormat::Subvol, 1 << 30)
            .unwrap();
        let e = dir.resize_image(&sub, 2 << 30).unwrap_err();
        assert!(matches!(e, PluginError::Unsupported { .. }), "{e}");
        touch(&root.path().join("iso/x.iso"), b"iso");
        let e = dir
            .resize_image(&volid("local:iso/x.iso"), 1 << 30)
            .unwrap_err();
        assert!(matches!(e, PluginError::Unsupported { .. }), "{e}");
        let e = dir
            .resize_image(&volid("other:100/vm-100-disk-0.raw"), 2 << 30)
            .unwrap_err();
        assert!(matches!(e, PluginError::WrongStorage { .. }), "{e}");
    }

    #[test]
    fn alloc_refuses_overwrite_bad_names_sizes_and_formats() {
        let root = tempfile::tempdir().unwrap();
        let dir = storage(root.path());
        let named = dir
            .alloc_image(vmid(100), Some("vm-100-data.raw"), ImageFormat::Raw, 4096)
            .unwrap();
        assert_eq!(named.to_string(), "local:100/vm-100-data.raw");
        let path = dir.path(&named).unwrap();
        fs::write(&path, b"keep me").unwrap();
        assert!(matches!(
            dir.alloc_image(vmid(100), Some("vm-100-data.raw"), ImageFormat::Raw, 4096),
            Err(PluginError::AlreadyExists { .. })
        ));
        assert_eq!(fs::read(&path).unwrap(), b"keep me");

        for (name, format) in [
            ("vm-101-data.raw", ImageFormat::Raw),
            ("vm-100-data.qcow2", ImageFormat::Raw),
            ("../vm-100-x.raw", ImageFormat::Raw),
            ("vm-100-a b.raw", ImageFormat::Raw),
        ] {
            assert!(
                matches!(
                    dir.alloc_image(vmid(100), Some(name), format, 4096),
                    Err(PluginError::VolumeId(_))
                ),
                "{name}"
            );
        }
        assert!(matches!(
            dir.alloc_image(vmid(100), None, ImageFormat::Qcow2, 4096),
            Err(PluginError::UnsupportedFormat { .. })
        ));
        for size in [0, 1000] {
            assert!(matches!(
                dir.alloc_image(vmid(100), None, ImageFormat::Raw, size),
                Err(PluginError::BadSize { .. })
            ));
        }
        let iso_only = DirStorage::new(
            StorageId::new("isos").unwrap(),
            root.path(),
            [ContentType::Iso].into_iter().collect(),
        );
        assert!(matches!(
            iso_only.alloc_image(vmid(100), None, ImageFormat::Raw, 4096),
            Err(PluginError::ContentNotAllowed { .. })
        ));
    }

    /// A qcow2 header claiming `size` bytes.
    fn qcow2_header(size: u64) -> Vec<u8> {
        let mut header = b"QFI\xfb\0\0\0\x03".to_vec();
        header.resize(24, 0);
        header.extend_from_slice(&size.to_be_bytes());
        header.resize(104, 0);
        header
    }

    fn populate(root: &Path) {
        touch(&root.join("template/iso/debian.iso"), b"iso");
        touch(&root.join("template/iso/notes.txt"), b"not an iso");
        touch(&root.join("template/iso/.hidden.iso"), b"hidden");
        fs::create_dir_all(root.join("template/iso/dir.iso")).unwrap();
        touch(&root.join("template/cache/debian-12.tar.zst"), b"tmpl");
        touch(
            &root.join("dump/vzdump-qemu-100-2024_01_01-00_00_00.vma.zst"),
            b"b100",
        );
        touch(
            &root.join("dump/vzdump-lxc-101-2024_01_01-00_00_00.tar.gz"),
            b"b101",
        );
        touch(
            &root.join("dump/vzdump-qemu-100-2024_01_01-00_00_00.log"),
            b"log",
        );
        touch(&root.join("snippets/user.yaml"), b"#cloud-config");
        touch(&root.join("images/100/vm-100-disk-0.raw"), &[0; 4096]);
        touch(
            &root.join("images/100/vm-100-disk-1.qcow2"),
            &qcow2_header(10 << 30),
        );
        touch(&root.join("images/100/stray.raw"), b"");
        touch(&root.join("images/101/vm-101-disk-0.raw"), &[0; 512]);
        touch(&root.join("images/lost+found/x.raw"), b"");
    }

    fn volids(items: &[ContentItem]) -> Vec<String> {
        items.iter().map(|i| i.volid.to_string()).collect()
    }

    #[test]
    fn listing_filters_by_content_and_vmid() {
        let root = tempfile::tempdir().unwrap();
        populate(root.path());
        let dir = storage(root.path());

        let all = dir.list_content(None, None).unwrap();
        assert_eq!(
            volids(&all),
            [
                "local:100/vm-100-disk-0.raw",
                "local:100/vm-100-disk-1.qcow2",
                "local:101/vm-101-disk-0.raw",
                "local:backup/vzdump-lxc-101-2024_01_01-00_00_00.tar.gz",
                "local:backup/vzdump-qemu-100-2024_01_01-00_00_00.vma.zst",
                "local:iso/debian.iso",
                "local:snippets/user.yaml",
                "local:vztmpl/debian-12.tar.zst",
            ]
        );
        let qcow = all.iter().find(|i| i.format == "qcow2").unwrap();
        assert_eq!(qcow.size, 10 << 30);
        assert_eq!(qcow.vmid, Some(vmid(100)));
        assert_eq!(qcow.content, ContentType::Images);
        assert!(qcow.used.is_some() && qcow.ctime > 0);
        let tmpl = all
            .iter()
            .find(|i| i.content == ContentType::Vztmpl)
            .unwrap();
        assert_eq!(
            (tmpl.format.as_str(), tmpl.size, tmpl.used),
            ("tzst", 4, None)
        );
        let backup = all.iter().find(|i| i.format == "vma.zst").unwrap();
        assert_eq!(backup.vmid, Some(vmid(100)));

        let isos = dir.list_content(Some(ContentType::Iso), None).unwrap();
        assert_eq!(volids(&isos), ["local:iso/debian.iso"]);
        assert_eq!(isos[0].format, "iso");

        let for_100 = dir.list_content(None, Some(vmid(100))).unwrap();
        assert_eq!(
            volids(&for_100),
            [
                "local:100/vm-100-disk-0.raw",
                "local:100/vm-100-disk-1.qcow2",
                "local:backup/vzdump-qemu-100-2024_01_01-00_00_00.vma.zst",
            ]
        );
        let images_101 = dir
            .list_content(Some(ContentType::Images), Some(vmid(101)))
            .unwrap();
        assert_eq!(volids(&images_101), ["local:101/vm-101-disk-0.raw"]);

        // Content the storage does not allow is not listed.
        let iso_only = DirStorage::new(
            StorageId::new("local").unwrap(),
            root.path(),
            [ContentType::Iso].into_iter().collect(),
        );
        assert_eq!(
            volids(&iso_only.list_content(None, None).unwrap()),
            ["local:iso/debian.iso"]
        );
        assert!(iso_only
            .list_content(Some(ContentType::Images), None)
            .unwrap()
            .is_empty());
        // A fresh storage with no subdirectories lists nothing.
        let empty = tempfile::tempdir().unwrap();
        assert!(storage(empty.path())
            .list_content(None, None)
            .unwrap()
            .is_empty());
    }

    #[test]
    fn paths_follow_the_proxmox_layout_and_content_dirs() {
        let root = Path::new("/var/lib/vz");
        let dir = storage(root);
        for (id, rel) in [
            (
                "local:100/vm-100-disk-0.raw",
                "images/100/vm-100-disk-0.raw",
            ),
            ("local:iso/a.iso", "template/iso/a.iso"),
            ("local:vztmpl/a.tar.xz", "template/cache/a.tar.xz"),
            (
                "local:backup/vzdump-qemu-100-x.vma",
                "dump/vzdump-qemu-100-x.vma",
            ),
            ("local:snippets/hook.pl", "snippets/hook.pl"),
            ("local:import/a.ova", "import/a.ova"),
            ("local:rootdir/100", "private/100"),
        ] {
            assert_eq!(dir.path(&volid(id)).unwrap(), root.join(rel), "{id}");
        }
        assert!(matches!(
            dir.path(&volid("other:iso/a.iso")),
            Err(PluginError::WrongStorage { .. })
        ));
        assert!(matches!(
            dir.path(&volid("local:iso/../../etc/passwd")),
            Err(PluginError::VolumeId(_))
        ));

        let config = crate::config::StorageConfig::parse(
            "dir: local\n\tpath /srv\n\tcontent iso,backup\n\tcontent-dirs iso=media/isos,backup=/bk\n",
        )
        .unwrap();
        let overridden = DirStorage::from_entry(&config.entries()[0]).unwrap();
        assert_eq!(
            overridden.path(&volid("local:iso/a.iso")).unwrap(),
            Path::new("/srv/media/isos/a.iso")
        );
        assert_eq!(
            overridden.path(&volid("local:backup/x.vma")).unwrap(),
            Path::new("/srv/bk/x.vma")
        );
    }

    #[test]
    fn delete_removes_volumes_and_refuses_protected_backups() {
        let root = tempfile::tempdir().unwrap();
        populate(root.path());
        let dir = storage(root.path());

        let disk = volid("local:101/vm-101-disk-0.raw");
        dir.free_image(&disk).unwrap();
        assert!(
            !root.path().join("images/101").exists(),
            "empty VM dir kept"
        );
        assert!(matches!(
            dir.free_image(&disk),
            Err(PluginError::NotFound { .. })
        ));
        assert!(matches!(
            dir.free_image(&volid("local:iso/debian.iso")),
            Err(PluginError::Unsupported { .. })
        ));

        let backup = volid("local:backup/vzdump-qemu-100-2024_01_01-00_00_00.vma.zst");
        let backup_path = dir.path(&backup).unwrap();
        touch(&sidecar(&backup_path, ".protected"), b"");
        assert!(matches!(
            dir.delete_volume(&backup),
            Err(PluginError::Protected { .. })
        ));
        assert!(backup_path.exists());
        fs::remove_file(sidecar(&backup_path, ".protected")).unwrap();
        touch(&sidecar(&backup_path, ".notes"), b"before upgrade");
        dir.delete_volume(&backup).unwrap();
        assert!(!backup_path.exists());
        assert!(!sidecar(&backup_path, ".notes").exists());
        assert!(!root
            .path()
            .join("dump/vzdump-qemu-100-2024_01_01-00_00_00.log")
            .exists());

        dir.delete_volume(&volid("local:iso/debian.iso")).unwrap();
        assert!(matches!(
            dir.volume_size(&volid("local:iso/debian.iso")),
            Err(PluginError::NotFound { .. })
        ));
    }

    #[test]
    fn import_moves_a_verified_upload_into_place() {
        let root = tempfile::tempdir().unwrap();
        let dir = storage(root.path());
        let temp = upload(&dir, b"abc");
        let sha = ExpectedChecksum::new(ChecksumAlgorithm::Sha256, ABC_SHA256).unwrap();
        let id = dir
            .import_upload(ContentType::Iso, "debian.iso", &temp, Some(&sha))
            .unwrap();
        assert_eq!(id.to_string(), "local:iso/debian.iso");
        assert_eq!(
            fs::read(root.path().join("template/iso/debian.iso")).unwrap(),
            b"abc"
        );
        assert!(!temp.exists());

        let temp = upload(&dir, b"tmpl");
        let id = dir
            .import_upload(ContentType::Vztmpl, "alpine.tar.xz", &temp, None)
            .unwrap();
        assert_eq!(
            dir.path(&id).unwrap(),
            root.path().join("template/cache/alpine.tar.xz")
        );
        let temp = upload(&dir, b"disk");
        let id = dir
            .import_upload(ContentType::Import, "disk.qcow2", &temp, None)
            .unwrap();
        assert_eq!(id.to_string(), "local:import/disk.qcow2");
    }

    #[test]
    fn a_bad_checksum_leaves_nothing_behind() {
        let root = tempfile::tempdir().unwrap();
        let dir = storage(root.path());
        let temp = upload(&dir, b"abd");
        let sha = ExpectedChecksum::new(ChecksumAlgorithm::Sha256, ABC_SHA256).unwrap();
        let err = dir
            .import_upload(ContentType::Iso, "debian.iso", &temp, Some(&sha))
            .unwrap_err();
        assert!(matches!(err, PluginError::ChecksumMismatch { .. }), "{err}");
        assert!(err.to_string().contains(ABC_SHA256));
        assert!(!temp.exists());
        assert!(!root.path().join("template/iso/debian.iso").exists());
        assert_eq!(
            fs::read_dir(dir.upload_temp_dir().unwrap())
                .unwrap()
                .count(),
            0
        );
    }

    #[test]
    fn import_refuses_overwrite_bad_names_and_disallowed_content() {
        let root = tempfile::tempdir().unwrap();
        let dir = storage(root.path());
        touch(&root.path().join("template/iso/debian.iso"), b"original");
        let temp = upload(&dir, b"new");
        assert!(matches!(
            dir.import_upload(ContentType::Iso, "debian.iso", &temp, None),
            Err(PluginError::AlreadyExists { .. })
        ));
        assert_eq!(
            fs::read(root.path().join("template/iso/debian.iso")).unwrap(),
            b"original"
        );
        assert!(!temp.exists(), "temp file kept after a refused import");

        for (content, name) in [
            (ContentType::Iso, "../escape.iso"),
            (ContentType::Iso, ".hidden.iso"),
            (ContentType::Iso, "debian.txt"),
            (ContentType::Iso, "a b.iso"),
            (ContentType::Vztmpl, "x.iso"),
            (ContentType::Import, "vm.ovf"),
        ] {
            let temp = upload(&dir, b"x");
            assert!(
                matches!(
                    dir.import_upload(content, name, &temp, None),
                    Err(PluginError::VolumeId(_))
                ),
                "{name}"
            );
            assert!(!temp.exists());
        }
        assert!(!root.path().join("escape.iso").exists());
        assert!(!root.path().join("template/escape.iso").exists());

        let temp = upload(&dir, b"x");
        assert!(matches!(
            dir.import_upload(ContentType::Backup, "vzdump-qemu-100-x.vma", &temp, None),
            Err(PluginError::NotUploadable { .. })
        ));
        let iso_only = DirStorage::new(
            StorageId::new("local").unwrap(),
            root.path(),
            [ContentType::Iso].into_iter().collect(),
        );
        let temp = upload(&dir, b"x");
        assert!(matches!(
            iso_only.import_upload(ContentType::Vztmpl, "a.tar.gz", &temp, None),
            Err(PluginError::ContentNotAllowed { .. })
        ));
        assert!(!temp.exists());
    }

    #[test]
    fn import_leaves_files_outside_the_upload_dir_alone() {
        let root = tempfile::tempdir().unwrap();
        let dir = storage(root.path());
        let elsewhere = root.path().join("precious.iso");
        fs::write(&elsewhere, b"mine").unwrap();
        let link = dir.upload_temp_dir().unwrap().join("link");
        std::os::unix::fs::symlink(&elsewhere, &link).unwrap();
        for path in [elsewhere.as_path(), link.as_path()] {
            assert!(matches!(
                dir.import_upload(ContentType::Iso, "x.iso", path, None),
                Err(PluginError::NotAnUpload { .. })
            ));
        }
        assert_eq!(fs::read(&elsewhere).unwrap(), b"mine");
        assert!(!root.path().join("template/iso/x.iso").exists());
    }

    #[test]
    fn status_reports_sane_numbers() {
        let root = tempfile::tempdir().unwrap();
        let status = storage(root.path()).status().unwrap();
        assert!(status.active);
        assert!(status.total > 0);
        assert!(status.total >= status.avail);
        assert!(status.total >= status.used);

        let gone = storage(&root.path().join("missing")).status().unwrap();
        assert!(!gone.active);
        assert_eq!(gone.total, 0);
    }
}
