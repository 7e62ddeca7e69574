//! Kernel module lists: parsing `modules.dep` and friends, resolving a list
//! of module names to their dependency closure in load order, and pruning
//! hardware trees Oxbow does not ship.

use std::collections::{BTreeSet, HashMap, HashSet};
use std::fs;
use std::path::Path;

use crate::error::{Error, IoContext, Result};

/// Modules the initramfs loads, in the order given. The dependency closure
/// is added automatically. Covers booting from CD/ISO or USB on QEMU's `pc`
/// and `q35` machines and on common server hardware.
pub const INITRAMFS_MODULES: &[&str] = &[
    // virtio devices (QEMU/KVM guests)
    "virtio_pci",
    "virtio_blk",
    "virtio_scsi",
    "virtio_net",
    "virtio_console",
    // disk and CD controllers: IDE (pc), AHCI (q35, servers), NVMe
    "ata_piix",
    "ahci",
    "nvme",
    // common server RAID/HBA controllers
    "megaraid_sas",
    "mpt3sas",
    // USB sticks and BMC virtual media
    "xhci_pci",
    "ehci_pci",
    "usb_storage",
    "uas",
    // SCSI disk and CD-ROM
    "sd_mod",
    "sr_mod",
    "cdrom",
    // filesystems for the medium, the system image and the root overlay
    "isofs",
    "squashfs",
    "overlay",
    "loop",
    "ext4",
    "vfat",
    "nls_cp437",
    "nls_ascii",
    "nls_iso8859_1",
    "nls_utf8",
    // input and the ACPI power button
    "evdev",
    "button",
    // the management bridge, loaded while the disk controllers probe
    "bridge",
];

/// Modules of the initramfs list that stage 1 cannot boot without: each
/// must exist as a module or be built in.
pub const INITRAMFS_REQUIRED: &[&str] =
    &["cdrom", "sr_mod", "isofs", "squashfs", "overlay", "loop"];

/// Feature modules the running system loads, in the order given, on a
/// thread of their own once the services have started. Hardware drivers (NICs, disk
/// controllers, RNGs) are not listed: init loads those of the hardware
/// present by matching device aliases (coldplug). Nor are KVM's vendor
/// modules: init loads `kvm_amd` or `kvm_intel` by CPU feature match, as
/// the other vendor's would be read, checked and relocated only for its
/// init to refuse the CPU.
pub const SYSTEM_MODULES: &[&str] = &[
    "kvm",
    "bridge",
    "8021q",
    "bonding",
    "tun",
    "vhost_net",
    "veth",
    "nf_tables",
    "nft_ct",
    "nft_nat",
    "nf_conntrack",
    "dm_thin_pool",
    "dm_mod",
    "br_netfilter",
];

/// Module trees (relative to `/lib/modules/<kver>/`) left out of the system
/// image: hardware a server hypervisor does not drive. Modules elsewhere
/// that depend on these are left out too.
pub const EXCLUDED_TREES: &[&str] = &[
    "kernel/drivers/gpu/",
    "kernel/drivers/media/",
    "kernel/sound/",
    "kernel/drivers/net/wireless/",
    "kernel/net/wireless/",
    "kernel/net/mac80211/",
    "kernel/drivers/bluetooth/",
    "kernel/net/bluetooth/",
    "kernel/drivers/staging/",
    "kernel/drivers/infiniband/",
    "kernel/drivers/iio/",
    "kernel/drivers/comedi/",
    "kernel/drivers/isdn/",
];

/// Suffixes of compressed module files, longest match first.
pub const COMPRESSED_SUFFIXES: &[&str] = &[".ko.xz", ".ko.zst", ".ko.gz"];

/// Canonical module name: `-` and `_` are interchangeable, `_` is canonical.
pub fn canonical(name: &str) -> String {
    name.replace('-', "_")
}

/// The module name of a path such as `kernel/drivers/usb/host/xhci-pci.ko.xz`.
pub fn module_name(path: &str) -> String {
    let file = path.rsplit('/').next().unwrap_or(path);
    let stem = COMPRESSED_SUFFIXES
        .iter()
        .chain(&[".ko"])
        .find_map(|s| file.strip_suffix(s))
        .unwrap_or(file);
    canonical(stem)
}

/// The path a module has once decompressed (`.ko.xz` → `.ko`).
pub fn uncompressed_path(path: &str) -> String {
    for s in COMPRESSED_SUFFIXES {
        if let Some(base) = path.strip_suffix(s) {
            return format!("{base}.ko");
        }
    }
    path.to_owned()
}

/// The parsed module metadata of one kernel.
#[derive(Debug, Default, Clone)]
pub struct ModuleDb {
    /// Canonical name → path relative to the module directory.
    by_name: HashMap<String, String>,
    /// Path → its dependencies (paths), as listed in `modules.dep`.
    deps: HashMap<String, Vec<String>>,
    /// All paths in `modules.dep` order.
    order: Vec<String>,
    /// Canonical names of built-in modules.
    builtin: HashSet<String>,
    /// Canonical name → modules/aliases to load first (`softdep ... pre:`).
    soft_pre: HashMap<String, Vec<String>>,
    /// Exact (non-wildcard) alias → canonical module names.
    aliases: HashMap<String, Vec<String>>,
}

/// The outcome of resolving a list of module names.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Resolution {
    /// Module paths, dependencies first, each once.
    pub paths: Vec<String>,
    /// Requested names that are built into the kernel.
    pub builtin: Vec<String>,
    /// Requested names that this kernel does not have at all.
    pub missing: Vec<String>,
}

impl ModuleDb {
    /// Parses the text of `modules.dep`, `modules.builtin`, `modules.softdep`
    /// and `modules.alias` (the last two may be empty).
    pub fn parse(dep: &str, builtin: &str, softdep: &str, alias: &str) -> Self {
        let mut db = ModuleDb::default();
        for line in dep.lines() {
            let Some((path, rest)) = line.split_once(':') else {
                continue;
            };
            let path = path.trim().to_owned();
            if path.is_empty() {
                continue;
            }
            let deps = rest.split_whitespace().map(str::to_owned).collect();
            db.by_name.insert(module_name(&path), path.clone());
            db.deps.insert(path.clone(), deps);
            db.order.push(path);
        }
        db.builtin = builtin
            .lines()
            .map(str::trim)
            .filter(|l| !l.is_empty())
            .map(module_name)
            .collect();
        for line in softdep.lines() {
            let mut words = line.split_whitespace();
            if words.next() != Some("softdep") {
                continue;
            }
            let Some(name) = words.next() else { continue };
            let mut pre = false;
            let entry = db.soft_pre.entry(canonical(name)).or_default();
            for w in words {
                match w {
                    "pre:" => pre = true,
                    "post:" => pre = false,
                    w if pre => entry.push(w.to_owned()),
                    _ => {}
                }
            }
        }
        for line in alias.lines() {
            let mut words = line.split_whitespace();
            if words.next() != Some("alias") {
                continue;
            }
            let (Some(a), Some(m)) = (words.next(), words.next()) else {
                continue;
            };
            if a.contains(['*', '?', '[']) {
                continue;
            }
            db.aliases
                .entry(a.to_owned())
                .or_default()
                .push(canonical(m));
        }
        db
    }

    /// Reads the metadata from a module directory (`.../lib/modules/<kver>`),
    /// which must already have been processed by `depmod`.
    pub fn load(dir: &Path) -> Result<Self> {
        let read = |name: &str, required: bool| -> Result<String> {
            let p = dir.join(name);
            match fs::read_to_string(&p) {
                Ok(s) => Ok(s),
                Err(e) if !required && e.kind() == std::io::ErrorKind::NotFound => {
                    Ok(String::new())
                }
                Err(e) => Err(e).ctx("read", p),
            }
        };
        Ok(Self::parse(
            &read("modules.dep", true)?,
            &read("modules.builtin", false)?,
            &read("modules.softdep", false)?,
            &read("modules.alias", false)?,
        ))
    }

    /// Number of loadable modules.
    pub fn len(&self) -> usize {
        self.order.len()
    }

    /// True if the kernel has no loadable modules.
    pub fn is_empty(&self) -> bool {
        self.order.is_empty()
    }

    /// All module paths, in `modules.dep` order.
    pub fn paths(&self) -> &[String] {
        &self.order
    }

    /// The path of a module by name, if it is loadable.
    pub fn path_of(&self, name: &str) -> Option<&str> {
        self.by_name.get(&canonical(name)).map(String::as_str)
    }

    /// True if the named module is built into the kernel.
    pub fn is_builtin(&self, name: &str) -> bool {
        self.builtin.contains(&canonical(name))
    }

    /// Resolves `names` to the modules to load, dependencies first.
    ///
    /// Each module's `softdep ... pre:` modules (by name or exact alias) are
    /// loaded before it when they exist. Built-in names are reported in
    /// [`Resolution::builtin`] and unknown ones in [`Resolution::missing`].
    pub fn resolve<S: AsRef<str>>(&self, names: &[S]) -> Resolution {
        let mut res = Resolution::default();
        let mut done = HashSet::new();
        for name in names {
            let name = name.as_ref();
            if let Some(path) = self.path_of(name) {
                self.visit(path, &mut done, &mut Vec::new(), &mut res.paths);
            } else if self.is_builtin(name) {
                res.builtin.push(name.to_owned());
            } else {
                res.missing.push(name.to_owned());
            }
        }
        res
    }

    fn visit(
        &self,
        path: &str,
        done: &mut HashSet<String>,
        stack: &mut Vec<String>,
        out: &mut Vec<String>,
    ) {
        // `stack` guards against cycles, which depmod never writes but a
        // hand-made file could contain.
        if done.contains(path) || stack.iter().any(|p| p == path) {
            return;
        }
        stack.push(path.to_owned());
        for soft in self.soft_pre.get(&module_name(path)).into_iter().flatten() {
            for target in self.soft_targets(soft) {
                self.visit(&target, done, stack, out);
            }
        }
        // modprobe loads the last-listed dependency first; do the same.
        for dep in self.deps.get(path).into_iter().flatten().rev() {
            self.visit(dep, done, stack, out);
        }
        stack.pop();
        done.insert(path.to_owned());
        out.push(path.to_owned());
    }

    /// Loadable modules a softdep entry (a module name or an alias) names.
    fn soft_targets(&self, soft: &str) -> Vec<String> {
        if let Some(p) = self.path_of(soft) {
            return vec![p.to_owned()];
        }
        self.aliases
            .get(soft)
            .into_iter()
            .flatten()
            .filter_map(|m| self.path_of(m))
            .map(str::to_owned)
            .collect()
    }

    /// The modules to leave out when `trees` (path prefixes) are dropped:
    /// every module under one of them, plus every module that depends on
    /// such a module (it could never load).
    pub fn pruned(&self, trees: &[&str]) -> BTreeSet<String> {
        let mut gone: BTreeSet<String> = self
            .order
            .iter()
            .filter(|p| trees.iter().any(|t| p.starts_with(t)))
            .cloned()
            .collect();
        loop {
            let more: Vec<String> = self
                .order
                .iter()
                .filter(|p| !gone.contains(*p))
                .filter(|p| self.deps[*p].iter().any(|d| gone.contains(d)))
                .cloned()
                .collect();
            if more.is_empty() {
                return gone;
            }
            gone.extend(more);
        }
    }
}

/// Resolves a list and turns missing modules into warnings; fails only if a
/// name in `required` is neither loadable nor built in.
pub fn resolve_list(
    db: &ModuleDb,
    what: &str,
    names: &[&str],
    required: &[&str],
) -> Result<Resolution> {
    let res = db.resolve(names);
    for name in &res.builtin {
        tracing::info!("{what} modules: {name} is built into the kernel");
    }
    for name in &res.missing {
        if required.contains(&name.as_str()) {
            return Err(Error::Modules(format!(
                "{what} list needs {name}, which this kernel has neither as a module nor built in"
            )));
        }
        tracing::warn!("{what} modules: {name} does not exist in this kernel; skipped");
    }
    Ok(res)
}

/// Renders a module list file: one path per line, in load order.
pub fn render_list(paths: &[String]) -> String {
    let mut s = String::new();
    for p in paths {
        s.push_str(p);
        s.push('\n');
    }
    s
}

/// Reads a kernel's module directory and says whether its modules are
/// compressed, and with which suffix.
pub fn compression(db: &ModuleDb) -> Option<&'static str> {
    db.paths()
        .iter()
        .find_map(|p| COMPRESSED_SUFFIXES.iter().find(|s| p.ends_with(*s)))
        .copied()
}

/// Convenience for callers holding a module directory path.
pub fn load(dir: &Path) -> Result<ModuleDb> {
    let db = ModuleDb::load(dir)?;
    if db.is_empty() {
        return Err(Error::Modules(format!(
            "{} lists no modules",
            dir.join("modules.dep").display()
        )));
    }
    Ok(db)
}

#[cfg(test)]
mod tests {
    use super::*;

    const DEP: &str = "\
kernel/fs/ext4/ext4.ko: kernel/lib/crc16.ko kernel/fs/mbcache.ko kernel/fs/jbd2/jbd2.ko
kernel/lib/crc16.ko:
kernel/fs/mbcache.ko:
kernel/fs/jbd2/jbd2.ko:
kernel/crypto/crc32c_generic.ko:
kernel/drivers/scsi/sr_mod.ko: kernel/drivers/cdrom/cdrom.ko kernel/drivers/scsi/scsi_mod.ko kernel/drivers/scsi/scsi_common.ko
kernel/drivers/cdrom/cdrom.ko: kernel/drivers/scsi/scsi_common.ko
kernel/drivers/scsi/scsi_mod.ko: kernel/drivers/scsi/scsi_common.ko
kernel/drivers/scsi/scsi_common.ko:
kernel/drivers/usb/host/xhci-pci.ko: kernel/drivers/usb/host/xhci-hcd.ko kernel/drivers/usb/core/usbcore.ko kernel/drivers/usb/common/usb-common.ko
kernel/drivers/usb/host/xhci-hcd.ko: kernel/drivers/usb/core/usbcore.ko kernel/drivers/usb/common/usb-common.ko
kernel/drivers/usb/core/usbcore.ko: kernel/drivers/usb/common/usb-common.ko
kernel/drivers/usb/common/usb-common.ko:
kernel/drivers/gpu/drm/drm.ko:
kernel/drivers/gpu/drm/qxl/qxl.ko: kernel/drivers/gpu/drm/drm.ko
kernel/drivers/platform/x86/thing.ko: kernel/drivers/gpu/drm/drm.ko
kernel/drivers/platform/x86/thing_user.ko: kernel/drivers/platform/x86/thing.ko kernel/drivers/gpu/drm/drm.ko
";
    const BUILTIN: &str = "kernel/drivers/virtio/virtio.ko\nkernel/fs/nls/nls_base.ko\n";
    const SOFTDEP: &str =
        "# comment\nsoftdep ext4 pre: crypto-crc32c\nsoftdep sr_mod post: nothing\n";
    const ALIAS: &str = "alias crypto-crc32c crc32c_generic\nalias pci:v*d* xhci_pci\n";

    fn db() -> ModuleDb {
        ModuleDb::parse(DEP, BUILTIN, SOFTDEP, ALIAS)
    }

    fn pos(res: &Resolution, name: &str) -> usize {
        res.paths
            .iter()
            .position(|p| module_name(p) == name)
            .unwrap_or_else(|| panic!("{name} not in {:?}", res.paths))
    }

    #[test]
    fn names() {
        assert_eq!(
            module_name("kernel/drivers/usb/host/xhci-pci.ko"),
            "xhci_pci"
        );
        assert_eq!(
            module_name("kernel/fs/nls/nls_iso8859-1.ko.xz"),
            "nls_iso8859_1"
        );
        assert_eq!(uncompressed_path("a/b.ko.zst"), "a/b.ko");
        assert_eq!(uncompressed_path("a/b.ko"), "a/b.ko");
    }

    #[test]
    fn closure_is_deps_first_and_deduplicated() {
        let res = db().resolve(&["sr_mod", "xhci_pci", "cdrom", "ext4"]);
        assert!(res.missing.is_empty() && res.builtin.is_empty());
        assert!(pos(&res, "scsi_common") < pos(&res, "scsi_mod"));
        assert!(pos(&res, "scsi_common") < pos(&res, "cdrom"));
        assert!(pos(&res, "cdrom") < pos(&res, "sr_mod"));
        assert!(pos(&res, "scsi_mod") < pos(&res, "sr_mod"));
        assert!(pos(&res, "usb_common") < pos(&res, "usbcore"));
        assert!(pos(&res, "usbcore") < pos(&res, "xhci_hcd"));
        assert!(pos(&res, "xhci_hcd") < pos(&res, "xhci_pci"));
        // the softdep (through its alias) comes before ext4, as do hard deps
        assert!(pos(&res, "crc32c_generic") < pos(&res, "ext4"));
        assert!(pos(&res, "jbd2") < pos(&res, "ext4"));
        let unique: HashSet<_> = res.paths.iter().collect();
        assert_eq!(unique.len(), res.paths.len());
        assert_eq!(res.paths.len(), 13);
        // requested order is kept where dependencies allow it
        assert!(pos(&res, "sr_mod") < pos(&res, "xhci_pci"));
    }

    #[test]
    fn builtin_and_missing_are_reported() {
        let res = db().resolve(&["virtio", "nls-base", "nosuch", "cdrom"]);
        assert_eq!(res.builtin, ["virtio", "nls-base"]);
        assert_eq!(res.missing, ["nosuch"]);
        assert_eq!(
            res.paths,
            [
                "kernel/drivers/scsi/scsi_common.ko",
                "kernel/drivers/cdrom/cdrom.ko"
            ]
        );
    }

    #[test]
    fn required_missing_is_an_error() {
        let db = db();
        assert!(resolve_list(&db, "test", &["nosuch", "cdrom"], &[]).is_ok());
        assert!(resolve_list(&db, "test", &["nosuch"], &["nosuch"]).is_err());
        assert!(resolve_list(&db, "test", &["virtio"], &["virtio"]).is_ok());
    }

    #[test]
    fn pruning_follows_dependents() {
        let gone = db().pruned(&["kernel/drivers/gpu/"]);
        let names: Vec<String> = gone.iter().map(|p| module_name(p)).collect();
        assert_eq!(names, ["drm", "qxl", "thing", "thing_user"]);
    }

    #[test]
    fn list_rendering() {
        let paths = vec!["kernel/a.ko".to_owned(), "kernel/b.ko".to_owned()];
        assert_eq!(render_list(&paths), "kernel/a.ko\nkernel/b.ko\n");
    }

    #[test]
    fn compression_detection() {
        assert_eq!(compression(&db()), None);
        let xz = ModuleDb::parse("kernel/a.ko.xz:\n", "", "", "");
        assert_eq!(compression(&xz), Some(".ko.xz"));
    }
}
