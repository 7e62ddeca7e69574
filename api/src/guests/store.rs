//! Guest configurations: `<state>/qemu-server/<vmid>.conf` (VMs) and
//! `<state>/lxc/<vmid>.conf` (containers) in Proxmox's format, kept in
//! memory as an index that every write updates, so lists never re-read the
//! files.

use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;
use std::sync::{Arc, Mutex, RwLock};

use guestconf::GuestConfig;

use crate::error::ServerError;
use crate::state_dir::write_atomically;

/// What lists show of a VM without parsing its configuration again.
#[derive(Debug, Clone, PartialEq)]
pub struct VmSummary {
    /// `name:`, or `VM <vmid>`.
    pub name: String,
    /// Memory in MiB.
    pub memory_mib: u64,
    /// Cores times sockets.
    pub cpus: u64,
    /// Whether it starts with the node.
    pub onboot: bool,
    /// Whether it is a template (`template: 1`).
    pub template: bool,
    /// The sum of the disks' `size=`, in bytes.
    pub maxdisk: u64,
    /// The configuration's digest.
    pub digest: String,
    /// The start of this VM's `/cluster/resources` entry, with the fields
    /// that change only with its configuration, serialized once:
    /// `{"id":"qemu/100","type":"qemu","node":…,"vmid":…,"name":…,…` (no
    /// closing brace), so that a request over 1,000 VMs copies bytes
    /// instead of serializing them again.
    pub resource_fields: String,
}

/// The number a key such as `memory` (also in its `current=N,…` form),
/// `cores` or `sockets` holds, or `default`.
pub fn config_number(config: &GuestConfig, key: &str, default: u64) -> u64 {
    config
        .get(key)
        .map(|v| v.strip_prefix("current=").unwrap_or(v))
        .and_then(|v| v.split(',').next()?.parse().ok())
        .unwrap_or(default)
}

/// The default memory of a VM, in MiB, as Proxmox's.
pub const DEFAULT_MEMORY_MIB: u64 = 512;

/// What kind of guest a store holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GuestKind {
    /// Virtual machines (`qemu-server/`).
    Qemu,
    /// System containers (`lxc/`).
    Lxc,
}

impl GuestKind {
    /// `qemu` or `lxc`, as in resource ids and API paths.
    pub fn as_str(self) -> &'static str {
        match self {
            GuestKind::Qemu => "qemu",
            GuestKind::Lxc => "lxc",
        }
    }
}

impl VmSummary {
    fn of(kind: GuestKind, vmid: u32, node: &str, config: &GuestConfig) -> VmSummary {
        let number = |key: &str, default: u64| config_number(config, key, default);
        let (maxdisk, name, cpus) = match kind {
            GuestKind::Qemu => (
                config
                    .main()
                    .entries()
                    .filter(|e| guestconf::DiskBus::from_key(e.key()).is_some())
                    .filter_map(|e| guestconf::DiskDevice::parse(e.key(), e.value()).ok())
                    .filter(|d| d.media != guestconf::DiskMedia::Cdrom)
                    .filter_map(|d| d.size)
                    .sum(),
                config
                    .get("name")
                    .map_or_else(|| format!("VM {vmid}"), str::to_owned),
                number("cores", 1) * number("sockets", 1),
            ),
            GuestKind::Lxc => (
                config
                    .main()
                    .entries()
                    .filter_map(|e| guestconf::MountPoint::parse(e.key(), e.value()).ok())
                    .filter_map(|m| m.size)
                    .sum(),
                config
                    .get("hostname")
                    .map_or_else(|| format!("CT{vmid}"), str::to_owned),
                number("cores", 1),
            ),
        };
        let memory_mib = number("memory", DEFAULT_MEMORY_MIB);
        let template = config.get("template") == Some("1");
        let kind = kind.as_str();
        let resource_fields = format!(
            "{{\"id\":\"{kind}/{vmid}\",\"type\":\"{kind}\",\"node\":{},\"vmid\":{vmid},\"name\":{},\"template\":{template},\"maxcpu\":{cpus},\"maxmem\":{},\"maxdisk\":{maxdisk}",
            serde_json::Value::String(node.to_owned()),
            serde_json::Value::String(name.clone()),
            memory_mib * 1024 * 1024,
            template = u8::from(template),
        );
        VmSummary {
            name,
            memory_mib,
            cpus,
            onboot: config.get("onboot") == Some("1"),
            template,
            maxdisk,
            digest: config.digest(),
            resource_fields,
        }
    }
}

#[derive(Debug, Clone)]
struct Entry {
    config: GuestConfig,
    summary: VmSummary,
}

/// The VM configurations of this node.
#[derive(Debug)]
pub struct VmStore {
    kind: GuestKind,
    dir: PathBuf,
    node: String,
    generation: std::sync::atomic::AtomicU64,
    index: RwLock<BTreeMap<u32, Entry>>,
    locks: Mutex<HashMap<u32, Arc<tokio::sync::Mutex<()>>>>,
}

impl VmStore {
    /// Loads every `<vmid>.conf` under `dir` (created if missing). Files
    /// that do not parse are skipped with a warning.
    pub fn open(
        dir: impl Into<PathBuf>,
        node: &str,
        kind: GuestKind,
    ) -> Result<VmStore, ServerError> {
        let dir = dir.into();
        std::fs::create_dir_all(&dir).map_err(|e| ServerError::io("cannot create", &dir, e))?;
        let mut index = BTreeMap::new();
        let entries =
            std::fs::read_dir(&dir).map_err(|e| ServerError::io("cannot read", &dir, e))?;
        for entry in entries.flatten() {
            let path = entry.path();
            let Some(vmid) = path
                .file_name()
                .and_then(|n| n.to_str())
                .and_then(|n| n.strip_suffix(".conf"))
                .and_then(|n| n.parse::<u32>().ok())
            else {
                continue;
            };
            let parsed = std::fs::read_to_string(&path)
                .map_err(|e| e.to_string())
                .and_then(|text| GuestConfig::parse(&text).map_err(|e| e.to_string()));
            match parsed {
                Ok(config) => {
                    let summary = VmSummary::of(kind, vmid, node, &config);
                    index.insert(vmid, Entry { config, summary });
                }
                Err(e) => tracing::warn!("skipping {}: {e}", path.display()),
            }
        }
        Ok(VmStore {
            kind,
            dir,
            node: node.to_owned(),
            generation: std::sync::atomic::AtomicU64::new(0),
            index: RwLock::new(index),
            locks: Mutex::new(HashMap::new()),
        })
    }

    /// The lock of VM `vmid`: held across read-modify-write of its
    /// configuration and across lifecycle operations.
    pub fn lock(&self, vmid: u32) -> Arc<tokio::sync::Mutex<()>> {
        let mut locks = self.locks.lock().unwrap_or_else(|p| p.into_inner());
        Arc::clone(locks.entry(vmid).or_default())
    }

    /// The configuration file of `vmid`.
    pub fn path(&self, vmid: u32) -> PathBuf {
        self.dir.join(format!("{vmid}.conf"))
    }

    /// The configuration of `vmid`.
    pub fn get(&self, vmid: u32) -> Option<GuestConfig> {
        self.read().get(&vmid).map(|e| e.config.clone())
    }

    /// Whether `vmid` exists.
    pub fn exists(&self, vmid: u32) -> bool {
        self.read().contains_key(&vmid)
    }

    /// Every VM with its summary, by VMID.
    pub fn list(&self) -> Vec<(u32, VmSummary)> {
        self.read()
            .iter()
            .map(|(vmid, e)| (*vmid, e.summary.clone()))
            .collect()
    }

    /// Calls `f` with every VM and its summary, by VMID, without copying
    /// them (the index is read-locked meanwhile: keep `f` short).
    pub fn for_each(&self, mut f: impl FnMut(u32, &VmSummary)) {
        for (vmid, entry) in self.read().iter() {
            f(*vmid, &entry.summary);
        }
    }

    fn bump(&self) {
        self.generation
            .fetch_add(1, std::sync::atomic::Ordering::SeqCst);
    }

    /// A number that changes with every write or removal.
    pub fn generation(&self) -> u64 {
        self.generation.load(std::sync::atomic::Ordering::SeqCst)
    }

    /// The number of VMs.
    pub fn len(&self) -> usize {
        self.read().len()
    }

    /// Whether there are no VMs.
    pub fn is_empty(&self) -> bool {
        self.read().is_empty()
    }

    /// The summary of `vmid`.
    pub fn summary(&self, vmid: u32) -> Option<VmSummary> {
        self.read().get(&vmid).map(|e| e.summary.clone())
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, BTreeMap<u32, Entry>> {
        self.index.read().unwrap_or_else(|p| p.into_inner())
    }

    /// Writes `config` as `vmid`'s configuration (atomically) and updates
    /// the index. Call with the VM's lock held.
    pub fn write(&self, vmid: u32, config: GuestConfig) -> Result<(), ServerError> {
        write_atomically(&self.path(vmid), config.to_string().as_bytes(), 0o640)?;
        let summary = VmSummary::of(self.kind, vmid, &self.node, &config);
        self.index
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .insert(vmid, Entry { config, summary });
        self.bump();
        Ok(())
    }

    /// Removes `vmid`'s configuration. Call with the VM's lock held.
    pub fn remove(&self, vmid: u32) -> Result<(), ServerError> {
        let path = self.path(vmid);
        match std::fs::remove_file(&path) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(ServerError::io("cannot remove", path, e)),
        }
        self.index
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .remove(&vmid);
        self.bump();
        Ok(())
    }

    /// The smallest VMID from 100 up that neither this store nor `other`
    /// (the other kind of guest) uses.
    pub fn next_free(&self, other: &VmStore) -> u32 {
        let (index, others) = (self.read(), other.read());
        (100..)
            .find(|id| !index.contains_key(id) && !others.contains_key(id))
            .unwrap_or(100)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const CONF: &str = "# web server\nboot: order=virtio0\ncores: 2\nmemory: 1024\nname: web\n\
        onboot: 1\nsockets: 2\nvirtio0: local:100/vm-100-disk-0.raw,size=8G\n\
        ide2: local:iso/x.iso,media=cdrom,size=1G\n";

    #[test]
    fn configs_are_indexed_written_and_reloaded() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("100.conf"), CONF).unwrap();
        std::fs::write(dir.path().join("101.conf"), "not a config line\n").unwrap();
        std::fs::write(dir.path().join("notes.txt"), "x").unwrap();
        let store = VmStore::open(dir.path(), "pve1", GuestKind::Qemu).unwrap();
        let list = store.list();
        assert_eq!(list.len(), 1);
        let (vmid, summary) = &list[0];
        assert_eq!(*vmid, 100);
        assert_eq!(summary.name, "web");
        assert_eq!(summary.memory_mib, 1024);
        assert_eq!(summary.cpus, 4);
        assert!(summary.onboot);
        assert_eq!(summary.maxdisk, 8 << 30);
        assert_eq!(summary.digest, guestconf::digest(CONF));
        let cts = tempfile::tempdir().unwrap();
        let cts = VmStore::open(cts.path(), "pve1", GuestKind::Lxc).unwrap();
        assert_eq!(store.next_free(&cts), 101);
        let mut ct = GuestConfig::new();
        ct.set("hostname", "web2").unwrap();
        ct.set("rootfs", "local:101/subvol-101-disk-0.subvol,size=8G")
            .unwrap();
        cts.write(101, ct).unwrap();
        assert_eq!(store.next_free(&cts), 102);
        let summary = cts.summary(101).unwrap();
        assert_eq!((summary.name.as_str(), summary.maxdisk), ("web2", 8 << 30));
        assert!(summary
            .resource_fields
            .starts_with(r#"{"id":"lxc/101","type":"lxc""#));

        let mut config = GuestConfig::new();
        config.set("memory", "256").unwrap();
        store.write(102, config).unwrap();
        assert_eq!(
            std::fs::read_to_string(dir.path().join("102.conf")).unwrap(),
            "memory: 256\n"
        );
        assert_eq!(store.summary(102).unwrap().name, "VM 102");
        let again = VmStore::open(dir.path(), "pve1", GuestKind::Qemu).unwrap();
        assert!(again.exists(102));
        again.remove(102).unwrap();
        assert!(!again.exists(102));
        assert!(!dir.path().join("102.conf").exists());
        // The config text is kept byte for byte.
        assert_eq!(again.get(100).unwrap().to_string(), CONF);
    }
}
