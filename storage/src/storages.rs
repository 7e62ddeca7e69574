//! All storages of a node: the parsed `storage.cfg` plus one plugin per
//! storage whose type is built.

use std::collections::BTreeMap;
use std::path::PathBuf;

use crate::config::{ConfigError, StorageConfig};
use crate::content::{ContentSet, ContentType};
use crate::dir::DirStorage;
use crate::new_disk::NewDiskRequest;
use crate::plugin::{PluginError, StoragePlugin};
use crate::storage_id::StorageId;
use crate::vmid::Vmid;
use crate::volume::{ImageFormat, VolumeId};

/// A request against the set of storages failed.
#[derive(Debug, thiserror::Error)]
pub enum StoragesError {
    /// No such storage in `storage.cfg`.
    #[error("storage '{id}' does not exist")]
    UnknownStorage {
        /// The id.
        id: String,
    },
    /// The storage's type has no plugin yet.
    #[error("storage '{id}' has type '{kind}', which is not supported yet")]
    NoPlugin {
        /// The id.
        id: StorageId,
        /// The type.
        kind: String,
    },
    /// `disable` is set.
    #[error("storage '{id}' is disabled")]
    Disabled {
        /// The id.
        id: StorageId,
    },
    /// The `nodes` list leaves this node out.
    #[error("storage '{id}' is not available on node '{node}'")]
    NotOnNode {
        /// The id.
        id: StorageId,
        /// This node.
        node: String,
    },
    /// The storage does not hold guest disks.
    #[error("storage '{id}' does not allow images or rootdir content")]
    NoImageContent {
        /// The id.
        id: StorageId,
    },
    /// A new-disk request named no storage and none was given as default.
    #[error("new-disk request '{request}' names no storage and there is no default storage")]
    NoStorageGiven {
        /// The request.
        request: String,
    },
    /// `size 0` cannot be allocated.
    #[error("cannot allocate a zero-size disk on storage '{id}'")]
    ZeroSize {
        /// The id.
        id: StorageId,
    },
    /// The config's `format` for the storage is not one we allocate.
    #[error("storage '{id}' has default format '{format}', which cannot be allocated")]
    BadDefaultFormat {
        /// The id.
        id: StorageId,
        /// The format text.
        format: String,
    },
    /// A plugin could not be built from its section.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// The plugin failed.
    #[error(transparent)]
    Plugin(#[from] PluginError),
}

/// The API's storage status (`/nodes/{node}/storage/{storage}/status`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StorageStatus {
    /// Storage id.
    pub storage: StorageId,
    /// Section type.
    pub kind: String,
    /// Bytes.
    pub total: u64,
    /// Bytes.
    pub used: u64,
    /// Bytes.
    pub avail: u64,
    /// Reachable now.
    pub active: bool,
    /// Not disabled.
    pub enabled: bool,
    /// Shared flag (or a shared type).
    pub shared: bool,
    /// Allowed content.
    pub content: ContentSet,
}

/// The node's storages.
#[derive(Debug)]
pub struct Storages {
    config: StorageConfig,
    node: String,
    plugins: BTreeMap<StorageId, Box<dyn StoragePlugin>>,
}

impl Storages {
    /// Builds plugins for the sections whose type is implemented (`dir`);
    /// other sections stay in the config without a plugin.
    pub fn new(config: StorageConfig, node: &str) -> Result<Self, StoragesError> {
        let mut plugins: BTreeMap<StorageId, Box<dyn StoragePlugin>> = BTreeMap::new();
        for entry in config.entries() {
            match entry.kind() {
                "dir" => {
                    plugins.insert(entry.id().clone(), Box::new(DirStorage::from_entry(entry)?));
                }
                other => {
                    tracing::debug!(storage = %entry.id(), kind = other, "no plugin for storage type");
                }
            }
        }
        Ok(Self {
            config,
            node: node.to_owned(),
            plugins,
        })
    }

    /// Adds or replaces the plugin of a storage (for types built outside
    /// this crate, and for tests).
    pub fn register(&mut self, plugin: Box<dyn StoragePlugin>) {
        self.plugins.insert(plugin.id().clone(), plugin);
    }

    /// The parsed `storage.cfg`.
    pub fn config(&self) -> &StorageConfig {
        &self.config
    }

    /// The plugin of a storage that is enabled and available on this node.
    pub fn plugin(&self, id: &StorageId) -> Result<&dyn StoragePlugin, StoragesError> {
        let entry = self
            .config
            .get(id)
            .ok_or_else(|| StoragesError::UnknownStorage { id: id.to_string() })?;
        if entry.is_disabled() {
            return Err(StoragesError::Disabled { id: id.clone() });
        }
        if !entry.is_available_on(&self.node) {
            return Err(StoragesError::NotOnNode {
                id: id.clone(),
                node: self.node.clone(),
            });
        }
        self.plugins
            .get(id)
            .map(|p| p.as_ref())
            .ok_or_else(|| StoragesError::NoPlugin {
                id: id.clone(),
                kind: entry.kind().to_owned(),
            })
    }

    /// Status in the API's shape. Disabled, unplugged or other-node
    /// storages report `active: false` and zero sizes rather than failing.
    pub fn status(&self, id: &StorageId) -> Result<StorageStatus, StoragesError> {
        let entry = self
            .config
            .get(id)
            .ok_or_else(|| StoragesError::UnknownStorage { id: id.to_string() })?;
        let mut status = StorageStatus {
            storage: id.clone(),
            kind: entry.kind().to_owned(),
            total: 0,
            used: 0,
            avail: 0,
            active: false,
            enabled: !entry.is_disabled(),
            shared: entry.is_shared(),
            content: entry.content(),
        };
        match self.plugin(id) {
            Ok(plugin) => {
                let space = plugin.status()?;
                status.total = space.total;
                status.used = space.used;
                status.avail = space.avail;
                status.active = space.active;
            }
            Err(e) => tracing::debug!(storage = %id, reason = %e, "storage is not active"),
        }
        Ok(status)
    }

    /// Allocates a new image of `size_bytes` for `vmid` on `storage`, named
    /// `vm-<vmid>-disk-<n>`, in `format` or the storage's default format
    /// (raw when unset). Returns e.g. `local:100/vm-100-disk-0.raw`.
    pub fn allocate(
        &self,
        storage: &StorageId,
        vmid: Vmid,
        size_bytes: u64,
        format: Option<ImageFormat>,
    ) -> Result<VolumeId, StoragesError> {
        let plugin = self.plugin(storage)?;
        let content = plugin.content();
        if !content.contains(ContentType::Images) && !content.contains(ContentType::Rootdir) {
            return Err(StoragesError::NoImageContent {
                id: storage.clone(),
            });
        }
        if size_bytes == 0 {
            return Err(StoragesError::ZeroSize {
                id: storage.clone(),
            });
        }
        let format = match format {
            Some(format) => format,
            None => self.default_format(storage)?,
        };
        Ok(plugin.alloc_image(vmid, None, format, size_bytes)?)
    }

    /// Allocates what a parsed `STORAGE:SIZE` asks for; `default_storage`
    /// is used when the request names none.
    pub fn allocate_new_disk(
        &self,
        request: &NewDiskRequest,
        default_storage: Option<&StorageId>,
        vmid: Vmid,
        format: Option<ImageFormat>,
    ) -> Result<VolumeId, StoragesError> {
        let storage = request
            .storage
            .as_ref()
            .or(default_storage)
            .ok_or_else(|| StoragesError::NoStorageGiven {
                request: request.to_string(),
            })?;
        self.allocate(storage, vmid, request.size_bytes, format)
    }

    /// The size in bytes of a volume (an image's virtual size).
    pub fn volume_size(&self, volid: &VolumeId) -> Result<u64, StoragesError> {
        Ok(self.plugin(volid.storage())?.volume_size(volid)?.size)
    }

    /// Makes an image a template's base image and returns its new id
    /// (see [`StoragePlugin::create_base`]).
    pub fn create_base(&self, volid: &VolumeId) -> Result<VolumeId, StoragesError> {
        Ok(self.plugin(volid.storage())?.create_base(volid)?)
    }

    /// Grows an image to `size_bytes` (see [`StoragePlugin::resize_image`]).
    pub fn resize(&self, volid: &VolumeId, size_bytes: u64) -> Result<(), StoragesError> {
        Ok(self
            .plugin(volid.storage())?
            .resize_image(volid, size_bytes)?)
    }

    /// The file or device path of a volume.
    pub fn path(&self, volid: &VolumeId) -> Result<PathBuf, StoragesError> {
        Ok(self.plugin(volid.storage())?.path(volid)?)
    }

    /// Removes a volume.
    pub fn free(&self, volid: &VolumeId) -> Result<(), StoragesError> {
        Ok(self.plugin(volid.storage())?.delete_volume(volid)?)
    }

    /// Every image owned by `vmid` on the storages usable on this node
    /// that hold images (what a VM purge removes; backups are not
    /// included). Storages without a plugin, disabled or on other nodes
    /// are skipped.
    pub fn vm_volumes(&self, vmid: Vmid) -> Result<Vec<VolumeId>, StoragesError> {
        let mut volumes = Vec::new();
        for entry in self.config.entries() {
            let Ok(plugin) = self.plugin(entry.id()) else {
                continue;
            };
            for content in [ContentType::Images, ContentType::Rootdir] {
                if plugin.content().contains(content) {
                    volumes.extend(
                        plugin
                            .list_content(Some(content), Some(vmid))?
                            .into_iter()
                            .map(|item| item.volid),
                    );
                }
            }
        }
        volumes.sort();
        volumes.dedup();
        Ok(volumes)
    }

    fn default_format(&self, storage: &StorageId) -> Result<ImageFormat, StoragesError> {
        match self.config.get(storage).and_then(|e| e.default_format()) {
            None => Ok(ImageFormat::Raw),
            Some(text) => text.parse().map_err(|_| StoragesError::BadDefaultFormat {
                id: storage.clone(),
                format: text.to_owned(),
            }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::new_disk::parse_new_disk;
    use std::path::Path;

    fn id(s: &str) -> StorageId {
        StorageId::new(s).unwrap()
    }

    fn vmid(n: u32) -> Vmid {
        Vmid::new(n).unwrap()
    }

    fn storages(a: &Path, b: &Path) -> Storages {
        let text = format!(
            "dir: local\n\tpath {}\n\tcontent iso,images,rootdir\n\n\
             dir: second\n\tpath {}\n\tcontent images\n\n\
             dir: isos\n\tpath {}\n\tcontent iso\n\n\
             dir: off\n\tpath {}\n\tdisable\n\n\
             dir: elsewhere\n\tpath {}\n\tnodes pve2\n\n\
             lvmthin: local-lvm\n\tthinpool data\n\tvgname pve\n\tcontent rootdir,images\n\n",
            a.display(),
            b.display(),
            a.display(),
            a.display(),
            a.display()
        );
        Storages::new(StorageConfig::parse(&text).unwrap(), "pve1").unwrap()
    }

    #[test]
    fn allocate_size_free_and_purge() {
        let (a, b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
        let all = storages(a.path(), b.path());

        let first = all
            .allocate(&id("local"), vmid(100), 1 << 30, None)
            .unwrap();
        assert_eq!(first.to_string(), "local:100/vm-100-disk-0.raw");
        let request = parse_new_disk("local:0.5").unwrap();
        let second = all
            .allocate_new_disk(&request, None, vmid(100), None)
            .unwrap();
        assert_eq!(second.to_string(), "local:100/vm-100-disk-1.raw");
        assert_eq!(all.volume_size(&second).unwrap(), 512 << 20);
        let on_default = all
            .allocate_new_disk(
                &parse_new_disk("2").unwrap(),
                Some(&id("second")),
                vmid(100),
                None,
            )
            .unwrap();
        assert_eq!(on_default.to_string(), "second:100/vm-100-disk-0.raw");
        all.allocate(&id("second"), vmid(101), 4096, Some(ImageFormat::Raw))
            .unwrap();

        let owned: Vec<String> = all
            .vm_volumes(vmid(100))
            .unwrap()
            .iter()
            .map(ToString::to_string)
            .collect();
        assert_eq!(
            owned,
            [
                "local:100/vm-100-disk-0.raw",
                "local:100/vm-100-disk-1.raw",
                "second:100/vm-100-disk-0.raw"
            ]
        );
        for volid in all.vm_volumes(vmid(100)).unwrap() {
            all.free(&volid).unwrap();
        }
        assert!(all.vm_volumes(vmid(100)).unwrap().is_empty());
        assert_eq!(all.vm_volumes(vmid(101)).unwrap().len(), 1);
        assert!(matches!(
            all.volume_size(&first),
            Err(StoragesError::Plugin(PluginError::NotFound { .. }))
        ));
    }

    #[test]
    fn allocation_refusals_name_the_reason() {
        let (a, b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
        let all = storages(a.path(), b.path());
        let err = |storage: &str| {
            all.allocate(&id(storage), vmid(100), 4096, None)
                .unwrap_err()
        };
        assert!(matches!(err("nope"), StoragesError::UnknownStorage { .. }));
        assert!(matches!(err("off"), StoragesError::Disabled { .. }));
        assert!(matches!(err("elsewhere"), StoragesError::NotOnNode { .. }));
        assert!(matches!(err("local-lvm"), StoragesError::NoPlugin { .. }));
        assert!(matches!(err("isos"), StoragesError::NoImageContent { .. }));
        assert!(matches!(
            all.allocate(&id("local"), vmid(100), 0, None),
            Err(StoragesError::ZeroSize { .. })
        ));
        assert!(matches!(
            all.allocate_new_disk(&parse_new_disk("8").unwrap(), None, vmid(100), None),
            Err(StoragesError::NoStorageGiven { .. })
        ));
        assert_eq!(
            err("local-lvm").to_string(),
            "storage 'local-lvm' has type 'lvmthin', which is not supported yet"
        );
    }

    #[test]
    fn status_has_the_api_fields() {
        let (a, b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
        let all = storages(a.path(), b.path());
        let local = all.status(&id("local")).unwrap();
        assert!(local.active && local.enabled && !local.shared);
        assert_eq!(local.kind, "dir");
        assert_eq!(local.content.to_string(), "images,iso,rootdir");
        assert!(local.total >= local.avail && local.total > 0);

        let off = all.status(&id("off")).unwrap();
        assert!(!off.enabled && !off.active);
        let lvm = all.status(&id("local-lvm")).unwrap();
        assert!(lvm.enabled && !lvm.active);
        assert!(all.status(&id("nope")).is_err());
    }
}
