//! Oxbow's storage layer.
//!
//! - [`config`]: `storage.cfg` in Proxmox's section-config syntax, read and
//!   written back without loss.
//! - [`volume`]: volume ids (`local:iso/x.iso`) and the directory layout's
//!   volnames, with path traversal ruled out by construction.
//! - [`plugin`]: the [`StoragePlugin`] trait every storage type implements;
//!   [`dir`] is the first one.
//! - [`storages`]: the node's storages by id, used by the API daemon.
//! - [`new_disk`]: the `local:32` new-disk syntax of guest create requests.
//! - [`checksum`] and [`upload`]: verifying and receiving uploads.
//!
//! Scope still to come: LVM-thin, ZFS, Ceph RBD, NFS and btrfs plugins,
//! snapshots, qcow2 creation, base images and linked clones.

pub mod atomic_file;
pub mod checksum;
pub mod config;
pub mod content;
pub mod dir;
pub mod new_disk;
pub mod plugin;
pub mod storage_id;
pub mod storages;
pub mod sys;
pub mod upload;
pub mod vmid;
pub mod volume;

pub use checksum::{ChecksumAlgorithm, ExpectedChecksum};
pub use config::{StorageConfig, StorageEntry};
pub use content::{ContentSet, ContentType};
pub use dir::DirStorage;
pub use new_disk::{parse_new_disk, NewDiskRequest};
pub use plugin::{ContentItem, PluginError, PluginStatus, StoragePlugin, VolumeSize};
pub use storage_id::StorageId;
pub use storages::{StorageStatus, Storages, StoragesError};
pub use upload::{normalize_upload_filename, FinishedUpload, UploadWriter};
pub use vmid::Vmid;
pub use volume::{DirVolume, ImageFormat, VolumeId};
