//! The boundary every storage type implements.

use std::io;
use std::path::{Path, PathBuf};

use crate::checksum::ExpectedChecksum;
use crate::content::{ContentSet, ContentType};
use crate::storage_id::StorageId;
use crate::vmid::Vmid;
use crate::volume::{ImageFormat, VolumeId, VolumeIdError};

/// Space on a storage, in bytes, and whether it is reachable.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PluginStatus {
    /// Size.
    pub total: u64,
    /// In use.
    pub used: u64,
    /// Available for new data.
    pub avail: u64,
    /// Whether the storage is reachable (a dir storage: its path exists).
    pub active: bool,
}

/// One entry of a content listing (the API's `content` items).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ContentItem {
    /// `storage:volname`.
    pub volid: VolumeId,
    /// Content type.
    pub content: ContentType,
    /// Format label: raw, qcow2, vmdk, iso, tzst, vma.zst, snippet, ...
    pub format: String,
    /// Size in bytes (an image's virtual size).
    pub size: u64,
    /// Bytes allocated on disk (images only).
    pub used: Option<u64>,
    /// Owning guest.
    pub vmid: Option<Vmid>,
    /// Change time of the file, seconds since the epoch.
    pub ctime: i64,
}

/// Size facts of one volume.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VolumeSize {
    /// Size in bytes (an image's virtual size).
    pub size: u64,
    /// Bytes allocated on disk.
    pub used: u64,
    /// Format label as in [`ContentItem::format`].
    pub format: String,
}

/// A storage operation failed.
#[derive(Debug, thiserror::Error)]
pub enum PluginError {
    /// The volume id is malformed or not of this storage's layout.
    #[error(transparent)]
    VolumeId(#[from] VolumeIdError),
    /// The volume id names another storage.
    #[error("volume '{volid}' does not belong to storage '{storage}'")]
    WrongStorage {
        /// The volume.
        volid: VolumeId,
        /// This storage.
        storage: StorageId,
    },
    /// The storage's `content` does not allow this type.
    #[error("storage '{storage}' does not allow content type '{content}'")]
    ContentNotAllowed {
        /// The storage.
        storage: StorageId,
        /// The refused type.
        content: ContentType,
    },
    /// Uploads are only for iso, vztmpl and import.
    #[error("content type '{content}' cannot be uploaded (only iso, vztmpl and import)")]
    NotUploadable {
        /// The refused type.
        content: ContentType,
    },
    /// The target exists and would be overwritten.
    #[error("volume '{volid}' already exists")]
    AlreadyExists {
        /// The volume.
        volid: VolumeId,
    },
    /// The volume is not there.
    #[error("volume '{volid}' does not exist")]
    NotFound {
        /// The volume.
        volid: VolumeId,
    },
    /// The volume is protected (a backup with a `.protected` marker).
    #[error("volume '{volid}' is protected")]
    Protected {
        /// The volume.
        volid: VolumeId,
    },
    /// The upload's digest differs from the expected one.
    #[error(
        "checksum mismatch for upload '{filename}': expected {algorithm} {expected}, got {actual}"
    )]
    ChecksumMismatch {
        /// The target name.
        filename: String,
        /// The algorithm.
        algorithm: String,
        /// Expected hex digest.
        expected: String,
        /// Computed hex digest.
        actual: String,
    },
    /// A format this storage cannot create yet.
    #[error("storage '{storage}' cannot create {format} images yet")]
    UnsupportedFormat {
        /// The storage.
        storage: StorageId,
        /// The format.
        format: ImageFormat,
    },
    /// Bad allocation size.
    #[error("invalid image size {size_bytes} bytes: {reason}")]
    BadSize {
        /// Requested bytes.
        size_bytes: u64,
        /// Why.
        reason: &'static str,
    },
    /// All `vm-<vmid>-disk-<n>` names up to the limit are taken.
    #[error("no free disk name for VM {vmid} on storage '{storage}'")]
    NoFreeName {
        /// The VM.
        vmid: Vmid,
        /// The storage.
        storage: StorageId,
    },
    /// The operation is not built for this storage type.
    #[error("storage '{storage}' ({kind}) does not support {operation}")]
    Unsupported {
        /// The storage.
        storage: StorageId,
        /// Its type.
        kind: String,
        /// What was asked.
        operation: &'static str,
    },
    /// The temp file is not a regular file directly in `upload_temp_dir`.
    #[error("'{path}' is not an upload of storage '{storage}' (expected a regular file in its upload directory)")]
    NotAnUpload {
        /// The path given.
        path: PathBuf,
        /// The storage.
        storage: StorageId,
    },
    /// The upload temp file and the target are on different filesystems.
    #[error("upload '{temp}' is not on the same filesystem as '{target}' (write it under the storage's upload_temp_dir)")]
    CrossDevice {
        /// The temp file.
        temp: PathBuf,
        /// The target.
        target: PathBuf,
    },
    /// A filesystem call failed.
    #[error("cannot {action} {path}: {source}")]
    Io {
        /// What was being done.
        action: &'static str,
        /// On which path.
        path: PathBuf,
        /// The cause.
        #[source]
        source: io::Error,
    },
}

impl PluginError {
    /// An [`PluginError::Io`] for `action` on `path`.
    pub fn io(action: &'static str, path: &Path, source: io::Error) -> Self {
        PluginError::Io {
            action,
            path: path.to_owned(),
            source,
        }
    }
}

/// One storage of one type (dir, later LVM-thin, ZFS, RBD, NFS, btrfs).
///
/// Methods take full volume ids and refuse ids of other storages. All
/// sizes are bytes. Implementations must be usable from several threads.
pub trait StoragePlugin: Send + Sync + std::fmt::Debug {
    /// The storage id.
    fn id(&self) -> &StorageId;

    /// The section type in `storage.cfg` (`dir`, ...).
    fn kind(&self) -> &'static str;

    /// The content types this storage is configured for.
    fn content(&self) -> &ContentSet;

    /// Space and reachability.
    fn status(&self) -> Result<PluginStatus, PluginError>;

    /// Volumes, optionally only of one content type and/or owned by one
    /// guest. As in Proxmox, a VMID filter leaves out iso, vztmpl,
    /// snippets and import content, which has no owner.
    fn list_content(
        &self,
        content: Option<ContentType>,
        vmid: Option<Vmid>,
    ) -> Result<Vec<ContentItem>, PluginError>;

    /// Creates an image for `vmid`: `name` (which must be `vm-<vmid>-...`
    /// with the format's extension) or the next free `vm-<vmid>-disk-<n>`.
    /// Never overwrites.
    fn alloc_image(
        &self,
        vmid: Vmid,
        name: Option<&str>,
        format: ImageFormat,
        size_bytes: u64,
    ) -> Result<VolumeId, PluginError>;

    /// Removes a volume of any content type.
    fn delete_volume(&self, volid: &VolumeId) -> Result<(), PluginError>;

    /// Removes an image volume (refuses other content).
    fn free_image(&self, volid: &VolumeId) -> Result<(), PluginError>;

    /// Where the volume lives (file or block device).
    fn path(&self, volid: &VolumeId) -> Result<PathBuf, PluginError>;

    /// Size, allocation and format of an existing volume.
    fn volume_size(&self, volid: &VolumeId) -> Result<VolumeSize, PluginError>;

    /// Makes an image a template's base image (`vm-<vmid>-…` becomes
    /// `base-<vmid>-…`, read-only) and returns its new id.
    fn create_base(&self, volid: &VolumeId) -> Result<VolumeId, PluginError>;

    /// Grows an image to `size_bytes` (a non-zero multiple of 512) and
    /// makes that durable. Refuses to shrink one; the same size changes
    /// nothing.
    fn resize_image(&self, volid: &VolumeId, size_bytes: u64) -> Result<(), PluginError>;

    /// A directory for upload temp files on the same filesystem as the
    /// upload targets, created if needed.
    fn upload_temp_dir(&self) -> Result<PathBuf, PluginError>;

    /// Moves a finished upload into place as `content`/`filename`.
    ///
    /// `temp_file` must be a regular file directly in
    /// [`Self::upload_temp_dir`]; anything else is refused and left alone.
    /// Verifies `checksum` first when given. The temp file is consumed:
    /// moved on success, removed on any other failure. Refuses content
    /// types the storage does not allow and existing targets.
    fn import_upload(
        &self,
        content: ContentType,
        filename: &str,
        temp_file: &Path,
        checksum: Option<&ExpectedChecksum>,
    ) -> Result<VolumeId, PluginError>;
}
