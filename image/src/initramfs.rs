//! The initramfs: Oxbow's `init` as `/init`, the modules stage 1 needs to
//! find the boot medium and mount the system image, and their list.

use std::collections::HashSet;
use std::fs;
use std::io::Write;
use std::path::Path;

use flate2::write::GzEncoder;
use flate2::Compression;

use crate::cpio::{self, Archive};
use crate::error::{Error, IoContext, Result};
use crate::fsutil;
use crate::kernel::{self, Kernel};
use crate::modules::{self, ModuleDb};

/// Where the initramfs keeps its module list.
pub const MODULE_LIST_PATH: &str = "etc/oxbow/modules.list";
/// Marker telling `init` it runs from the initramfs (stage 1).
pub const MARKER_PATH: &str = "etc/oxbow/initramfs";
/// Empty directories `init` mounts on or pivots into.
pub const EMPTY_DIRS: &[(&str, u32)] = &[
    ("dev", 0o755),
    ("proc", 0o555),
    ("sys", 0o555),
    ("run", 0o755),
    ("tmp", 0o1777),
    ("newroot", 0o755),
];
/// Module metadata files copied from the kernel before running depmod.
const DEPMOD_INPUTS: &[&str] = &["modules.builtin", "modules.builtin.modinfo"];

/// A built initramfs.
#[derive(Debug)]
pub struct Initramfs {
    /// The gzip-compressed newc archive.
    pub gz: Vec<u8>,
    /// Size of the uncompressed archive.
    pub cpio_len: u64,
    /// The module list, paths relative to `/lib/modules/<release>/`.
    pub modules: Vec<String>,
}

/// Assembles the archive from its parts. `module_files` are
/// `(path relative to /lib/modules/<release>/, contents)`.
pub fn assemble(
    init: Vec<u8>,
    release: &str,
    list: &[String],
    module_files: Vec<(String, Vec<u8>)>,
    mtime: u32,
) -> std::result::Result<Archive, cpio::BadPath> {
    let mut a = Archive::new(mtime);
    for (dir, perm) in EMPTY_DIRS {
        a.dir(dir, *perm)?;
    }
    a.char_dev("dev/console", 0o600, 5, 1)?;
    a.file("init", 0o755, init)?;
    a.dir("etc/oxbow", 0o755)?;
    a.file(MARKER_PATH, 0o644, Vec::new())?;
    a.file(
        MODULE_LIST_PATH,
        0o644,
        modules::render_list(list).into_bytes(),
    )?;
    for (rel, data) in module_files {
        a.file(&format!("lib/modules/{release}/{rel}"), 0o644, data)?;
    }
    Ok(a)
}

/// Builds the initramfs in `work` (a scratch directory).
pub fn build(kernel: &Kernel, init: &Path, work: &Path, mtime: u32) -> Result<Initramfs> {
    let res = modules::resolve_list(
        &kernel.modules,
        "initramfs",
        modules::INITRAMFS_MODULES,
        modules::INITRAMFS_REQUIRED,
    )?;

    // Stage the chosen modules and let depmod write metadata matching them.
    let stage = work.join("initramfs");
    fsutil::remove(&stage)?;
    let moddir = stage.join(format!("lib/modules/{}", kernel.release));
    let src = kernel.module_dir();
    for rel in &res.paths {
        let dest = moddir.join(rel);
        if let Some(parent) = dest.parent() {
            fsutil::mkdir_p(parent)?;
        }
        fs::copy(src.join(rel), &dest).ctx("copy to", &dest)?;
    }
    fsutil::mkdir_p(&moddir)?;
    for name in DEPMOD_INPUTS {
        let from = src.join(name);
        if from.is_file() {
            fs::copy(&from, moddir.join(name)).ctx("copy", &from)?;
        }
    }
    let order_path = src.join("modules.order");
    let order = fs::read_to_string(&order_path).ctx("read", &order_path)?;
    let shipped: HashSet<String> = res
        .paths
        .iter()
        .map(|p| modules::uncompressed_path(p))
        .collect();
    let order: String = order
        .lines()
        .filter(|l| shipped.contains(&modules::uncompressed_path(l)))
        .map(|l| format!("{}\n", modules::uncompressed_path(l)))
        .collect();
    fs::write(moddir.join("modules.order"), order).ctx("write", moddir.join("modules.order"))?;
    if kernel.module_compression().is_some() {
        kernel::decompress_modules(&moddir, &res.paths)?;
    }
    kernel::depmod(&stage, &kernel.release)?;

    // Resolve again against what is actually shipped, so the list and the
    // shipped modules.dep agree (and carry the decompressed names).
    let db = ModuleDb::load(&moddir)?;
    let shipped_res = db.resolve(modules::INITRAMFS_MODULES);
    if shipped_res.paths.len() != res.paths.len() {
        return Err(Error::Modules(format!(
            "initramfs closure changed after staging: {} modules, expected {}",
            shipped_res.paths.len(),
            res.paths.len()
        )));
    }

    let init_bytes = fs::read(init).ctx("read", init)?;
    let mut files = Vec::new();
    for rel in fsutil::list_files(&moddir)? {
        let data = fs::read(moddir.join(&rel)).ctx("read", moddir.join(&rel))?;
        files.push((rel, data));
    }
    let archive = assemble(
        init_bytes,
        &kernel.release,
        &shipped_res.paths,
        files,
        mtime,
    )
    .map_err(|e| Error::Input(e.to_string()))?;
    let raw = archive.to_bytes().ctx("encode", "initramfs")?;

    // Read the archive back: a broken initramfs is only found at boot time.
    let members = cpio::read(&raw).map_err(|e| Error::Input(format!("initramfs: {e}")))?;
    let console_ok = members.iter().any(|m| {
        m.path == "dev/console" && m.is_char_dev() && (m.rdevmajor, m.rdevminor) == (5, 1)
    });
    if !console_ok || !members.iter().any(|m| m.path == "init" && m.is_file()) {
        return Err(Error::Input("initramfs lacks /init or /dev/console".into()));
    }

    // Level 6: within 1% of level 9 on kernel modules, at a tenth of the time.
    let mut enc = GzEncoder::new(Vec::new(), Compression::default());
    enc.write_all(&raw).ctx("compress", "initramfs")?;
    let gz = enc.finish().ctx("compress", "initramfs")?;
    fsutil::remove(&stage)?;
    Ok(Initramfs {
        gz,
        cpio_len: raw.len() as u64,
        modules: shipped_res.paths,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn layout() {
        let list = vec!["kernel/fs/isofs/isofs.ko".to_owned()];
        let files = vec![
            ("kernel/fs/isofs/isofs.ko".to_owned(), b"\x7fELF".to_vec()),
            (
                "modules.dep".to_owned(),
                b"kernel/fs/isofs/isofs.ko:\n".to_vec(),
            ),
        ];
        let a = assemble(b"ELF".to_vec(), "6.1.0-1-amd64", &list, files, 0).unwrap();
        let members = cpio::read(&a.to_bytes().unwrap()).unwrap();
        let get = |p: &str| {
            members
                .iter()
                .find(|m| m.path == p)
                .unwrap_or_else(|| panic!("{p} missing"))
        };
        assert!(get("init").is_file());
        assert_eq!(get("init").mode & 0o7777, 0o755);
        let console = get("dev/console");
        assert!(console.is_char_dev());
        assert_eq!((console.rdevmajor, console.rdevminor), (5, 1));
        assert_eq!(console.mode & 0o7777, 0o600);
        for (d, _) in EMPTY_DIRS {
            assert!(get(d).is_dir(), "{d}");
        }
        assert!(get(MARKER_PATH).data.is_empty());
        assert_eq!(get(MODULE_LIST_PATH).data, b"kernel/fs/isofs/isofs.ko\n");
        assert!(get("lib/modules/6.1.0-1-amd64/kernel/fs/isofs/isofs.ko").is_file());
        assert!(get("lib/modules/6.1.0-1-amd64/modules.dep").is_file());
        assert!(members.iter().all(|m| m.uid == 0 && m.gid == 0));
        // only the listed empty directories are empty
        assert!(get("newroot").is_dir());
    }
}
