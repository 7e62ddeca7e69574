//! Builds Oxbow's bootable hybrid BIOS+UEFI ISO from Debian packages.
//!
//! The ISO holds the Debian kernel, an initramfs whose `/init` is Oxbow's
//! own init (stage 1: load modules, find the medium labelled `OXBOW`, mount
//! the system image), the system image as a squashfs, and a GRUB menu.
//! Every step is a function here; the `oxbow-image` binary only parses the
//! command line and calls [`build`].
//!
//! The build needs root (debootstrap, device nodes, file ownership) and the
//! Debian tools apt, dpkg, debootstrap, kmod, squashfs-tools, grub
//! (pc + efi), xorriso and mtools.

pub mod cmd;
pub mod cpio;
pub mod error;
pub mod fsutil;
pub mod grub;
pub mod initramfs;
pub mod iso;
pub mod kernel;
pub mod modules;
pub mod rootfs;
pub mod versions;

use std::fmt;
use std::fs;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use error::IoContext;
pub use error::{Error, Result};

/// What to build, from where.
#[derive(Debug, Clone)]
pub struct Options {
    /// Directory with the static binaries `init`, `netd`, `apid` and `vmm`.
    pub bins: PathBuf,
    /// Where to write the ISO.
    pub out: PathBuf,
    /// Download and debootstrap cache.
    pub cache: PathBuf,
    /// Tree copied verbatim over the system image's root.
    pub overlay: PathBuf,
    /// Debian packages added to the system image (a benchmark variant
    /// carries QEMU this way); empty for the product image.
    pub extra_packages: Vec<String>,
    /// The source revision the binaries were built from, written to
    /// [`rootfs::REVISION_PATH`] (apid reports it).
    pub revision: Option<String>,
}

/// What was built, for the closing report.
#[derive(Debug, Clone)]
pub struct Summary {
    /// The ISO written.
    pub out: PathBuf,
    /// Kernel package name.
    pub kernel_package: String,
    /// Kernel package version.
    pub kernel_version: String,
    /// Kernel release.
    pub kernel_release: String,
    /// Squashfs compressor.
    pub compressor: kernel::Compressor,
    /// Compression of the kernel package's modules, if any.
    pub module_compression: Option<&'static str>,
    /// Modules in the initramfs.
    pub initramfs_modules: usize,
    /// Size of the uncompressed initramfs archive.
    pub initrd_cpio_bytes: u64,
    /// Size of `boot/initrd.img`.
    pub initrd_bytes: u64,
    /// Size of `boot/vmlinuz`.
    pub vmlinuz_bytes: u64,
    /// Loadable modules in the system image.
    pub system_modules: usize,
    /// Modules left out of the system image.
    pub pruned_modules: usize,
    /// Bytes of the system image's module tree.
    pub system_module_bytes: u64,
    /// Entries in the system module list.
    pub system_list: usize,
    /// Debian packages in the system image.
    pub packages: usize,
    /// Bytes of the staged system root.
    pub staging_bytes: u64,
    /// Size of `oxbow/system.sfs`.
    pub sfs_bytes: u64,
    /// Size of the ISO.
    pub iso_bytes: u64,
    /// Wall time per step.
    pub steps: Vec<(&'static str, Duration)>,
}

fn mib(bytes: u64) -> String {
    // Display only; precision loss above 2^52 bytes is irrelevant.
    #[allow(clippy::cast_precision_loss)]
    let m = bytes as f64 / (1024.0 * 1024.0);
    format!("{m:.1} MiB")
}

impl fmt::Display for Summary {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "Oxbow ISO: {} ({})",
            self.out.display(),
            mib(self.iso_bytes)
        )?;
        writeln!(
            f,
            "  kernel       {} {} (release {})",
            self.kernel_package, self.kernel_version, self.kernel_release
        )?;
        writeln!(f, "  vmlinuz      {}", mib(self.vmlinuz_bytes))?;
        writeln!(
            f,
            "  initrd.img   {} gzip ({} cpio), {} modules",
            mib(self.initrd_bytes),
            mib(self.initrd_cpio_bytes),
            self.initramfs_modules
        )?;
        writeln!(
            f,
            "  system.sfs   {} {} (root {}, {} packages)",
            mib(self.sfs_bytes),
            self.compressor,
            mib(self.staging_bytes),
            self.packages
        )?;
        writeln!(
            f,
            "  modules      {} in system ({}; {} pruned), {} in system list, files {}",
            self.system_modules,
            mib(self.system_module_bytes),
            self.pruned_modules,
            self.system_list,
            self.module_compression.unwrap_or("uncompressed (.ko)")
        )?;
        let total: Duration = self.steps.iter().map(|(_, d)| *d).sum();
        let steps: Vec<String> = self
            .steps
            .iter()
            .map(|(n, d)| format!("{n} {:.1}s", d.as_secs_f64()))
            .collect();
        write!(
            f,
            "  time         {:.1}s ({})",
            total.as_secs_f64(),
            steps.join(", ")
        )
    }
}

/// Checks that `data` is an x86-64 ELF executable without a program
/// interpreter, i.e. fully static (static-pie included).
pub fn check_static_elf(data: &[u8]) -> std::result::Result<(), String> {
    const PT_INTERP: u32 = 3;
    let u16_at = |o: usize| data.get(o..o + 2).map(|b| u16::from_le_bytes([b[0], b[1]]));
    let u32_at = |o: usize| {
        data.get(o..o + 4)
            .map(|b| u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
    };
    let u64_at = |o: usize| {
        data.get(o..o + 8).map(|b| {
            let mut a = [0u8; 8];
            a.copy_from_slice(b);
            u64::from_le_bytes(a)
        })
    };
    if data.get(..4) != Some(b"\x7fELF") {
        return Err("not an ELF file".into());
    }
    if data.get(4..6) != Some(&[2, 1]) || u16_at(0x12) != Some(62) {
        return Err("not a 64-bit little-endian x86-64 ELF file".into());
    }
    let bad = || "truncated ELF header".to_owned();
    let phoff = usize::try_from(u64_at(0x20).ok_or_else(bad)?).map_err(|_| bad())?;
    let phentsize = usize::from(u16_at(0x36).ok_or_else(bad)?);
    let phnum = usize::from(u16_at(0x38).ok_or_else(bad)?);
    for i in 0..phnum {
        let p_type = u32_at(phoff + i * phentsize).ok_or_else(bad)?;
        if p_type == PT_INTERP {
            return Err("dynamically linked (has a program interpreter); build it static".into());
        }
    }
    Ok(())
}

/// Validates the inputs before any slow step runs.
pub fn check_inputs(opts: &Options) -> Result<()> {
    if !running_as_root() {
        return Err(Error::Input(
            "oxbow-image must run as root (debootstrap, device nodes, file ownership)".into(),
        ));
    }
    for name in rootfs::BINARIES {
        let path = opts.bins.join(name);
        let data = fs::read(&path).ctx("read", &path)?;
        check_static_elf(&data).map_err(|e| Error::Input(format!("{}: {e}", path.display())))?;
    }
    if !opts.overlay.is_dir() {
        return Err(Error::Input(format!(
            "rootfs overlay {} is not a directory",
            opts.overlay.display()
        )));
    }
    let parent = opts
        .out
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    if !parent.is_dir() {
        return Err(Error::Input(format!(
            "output directory {} does not exist",
            parent.display()
        )));
    }
    Ok(())
}

fn running_as_root() -> bool {
    // The effective uid of a process is readable without unsafe through
    // the owner of its /proc entry.
    use std::os::unix::fs::MetadataExt;
    fs::metadata("/proc/self")
        .map(|m| m.uid() == 0)
        .unwrap_or(false)
}

/// The modification time stamped into the initramfs: `SOURCE_DATE_EPOCH`
/// when set, for reproducible builds, else 0.
fn source_date_epoch() -> u32 {
    std::env::var("SOURCE_DATE_EPOCH")
        .ok()
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0)
}

/// Scratch space below the cache, removed when dropped.
struct WorkDir(PathBuf);

impl Drop for WorkDir {
    fn drop(&mut self) {
        if let Err(e) = rootfs::clear_scratch(&self.0) {
            tracing::warn!("leaving scratch directory behind: {e}");
        }
    }
}

/// Removes `work-<pid>` directories of builds that are no longer running
/// (killed before they could clean up).
fn remove_stale_work(cache: &Path) -> Result<()> {
    for entry in fs::read_dir(cache).ctx("read directory", cache)? {
        let entry = entry.ctx("read directory", cache)?;
        let name = entry.file_name();
        let Some(pid) = name.to_str().and_then(|n| n.strip_prefix("work-")) else {
            continue;
        };
        if pid.parse::<u32>().is_ok() && !Path::new("/proc").join(pid).exists() {
            tracing::info!("removing stale {}", entry.path().display());
            rootfs::clear_scratch(&entry.path())?;
        }
    }
    Ok(())
}

struct Timer {
    steps: Vec<(&'static str, Duration)>,
    last: Instant,
}

impl Timer {
    fn lap(&mut self, name: &'static str) {
        let now = Instant::now();
        self.steps.push((name, now - self.last));
        tracing::info!(
            "step {name} done in {:.1}s",
            (now - self.last).as_secs_f64()
        );
        self.last = now;
    }
}

fn file_len(path: &Path) -> Result<u64> {
    Ok(fs::metadata(path).ctx("stat", path)?.len())
}

/// Builds the ISO described by `opts`.
pub fn build(opts: &Options) -> Result<Summary> {
    check_inputs(opts)?;
    fsutil::mkdir_p(&opts.cache)?;
    let cache = fs::canonicalize(&opts.cache).ctx("resolve", &opts.cache)?;
    let mut timer = Timer {
        steps: Vec::new(),
        last: Instant::now(),
    };

    // Kernel: resolve, download and unpack (cached by version).
    let kernel = kernel::prepare(&cache)?;
    let compressor = kernel::squashfs_compressor(&kernel.config)?;
    tracing::info!(
        "kernel {} {} (release {}), squashfs {compressor}, modules {}",
        kernel.package,
        kernel.version,
        kernel.release,
        kernel.module_compression().unwrap_or("uncompressed")
    );
    timer.lap("kernel");

    remove_stale_work(&cache)?;
    let work = WorkDir(cache.join(format!("work-{}", std::process::id())));
    rootfs::clear_scratch(&work.0)?;
    fsutil::mkdir_p(&work.0)?;
    let tree = work.0.join("iso");

    // Initramfs.
    let initrd = initramfs::build(
        &kernel,
        &opts.bins.join("init"),
        &work.0,
        source_date_epoch(),
    )?;
    fsutil::write_in_root(&tree, iso::INITRD, &initrd.gz, 0o644)?;
    timer.lap("initramfs");

    // System image.
    let base = rootfs::debootstrap(&cache, &opts.extra_packages)?;
    timer.lap("debootstrap");
    let staging = work.0.join("system");
    rootfs::stage(&base, &staging)?;
    rootfs::strip(&staging)?;
    let sysmods = rootfs::install_modules(&staging, &kernel)?;
    rootfs::install_binaries(&staging, &opts.bins)?;
    let overlaid = fsutil::overlay_tree(&opts.overlay, &staging)?;
    tracing::info!("overlay: {overlaid} files from {}", opts.overlay.display());
    let packages = versions::installed(&staging)?;
    let versions_txt = versions::render(
        &versions::Header {
            kernel_package: &kernel.package,
            kernel_version: &kernel.version,
            kernel_release: &kernel.release,
            suite: rootfs::SUITE,
        },
        &packages,
    );
    fsutil::write_in_root(
        &staging,
        rootfs::VERSIONS_PATH,
        versions_txt.as_bytes(),
        0o644,
    )?;
    if let Some(revision) = &opts.revision {
        fsutil::write_in_root(
            &staging,
            rootfs::REVISION_PATH,
            format!("{revision}\n").as_bytes(),
            0o644,
        )?;
    }
    let staging_bytes = fsutil::tree_size(&staging)?;
    timer.lap("system");

    let sfs = tree.join(iso::SYSTEM_SFS);
    rootfs::mksquashfs(&staging, &sfs, compressor)?;
    rootfs::clear_scratch(&staging)?;
    timer.lap("squashfs");

    // ISO.
    fsutil::copy_into_root(&tree, &kernel.vmlinuz(), iso::VMLINUZ, 0o644)?;
    fsutil::write_in_root(&tree, iso::GRUB_CFG, grub::render().as_bytes(), 0o644)?;
    fsutil::write_in_root(&tree, iso::VERSIONS, versions_txt.as_bytes(), 0o644)?;
    let mut tmp_name = opts.out.as_os_str().to_owned();
    tmp_name.push(format!(".partial-{}", std::process::id()));
    let tmp = PathBuf::from(tmp_name);
    let made = iso::mkrescue(&tree, &tmp).and_then(|()| iso::publish(&tmp, &opts.out));
    if made.is_err() {
        let _ = fsutil::remove(&tmp);
    }
    made?;
    timer.lap("iso");

    Ok(Summary {
        out: opts.out.clone(),
        kernel_package: kernel.package.clone(),
        kernel_version: kernel.version.clone(),
        kernel_release: kernel.release.clone(),
        compressor,
        module_compression: kernel.module_compression(),
        initramfs_modules: initrd.modules.len(),
        initrd_cpio_bytes: initrd.cpio_len,
        initrd_bytes: initrd.gz.len() as u64,
        vmlinuz_bytes: file_len(&kernel.vmlinuz())?,
        system_modules: sysmods.db.len(),
        pruned_modules: sysmods.pruned,
        system_module_bytes: sysmods.bytes,
        system_list: sysmods.list.len(),
        packages: packages.len(),
        staging_bytes,
        sfs_bytes: file_len(&sfs)?,
        iso_bytes: file_len(&opts.out)?,
        steps: timer.steps,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn elf(interp: bool) -> Vec<u8> {
        let mut d = vec![0u8; 64 + 2 * 56];
        d[..4].copy_from_slice(b"\x7fELF");
        d[4] = 2;
        d[5] = 1;
        d[0x12] = 62;
        d[0x20] = 64; // e_phoff
        d[0x36] = 56; // e_phentsize
        d[0x38] = 2; // e_phnum
        d[64] = 1; // PT_LOAD
        d[64 + 56] = if interp { 3 } else { 2 }; // PT_INTERP or PT_DYNAMIC
        d
    }

    #[test]
    fn static_elf_check() {
        check_static_elf(&elf(false)).unwrap();
        assert!(check_static_elf(&elf(true))
            .unwrap_err()
            .contains("dynamically"));
        assert!(check_static_elf(b"#!/bin/sh\n").is_err());
        let mut truncated = elf(false);
        truncated.truncate(80);
        assert!(check_static_elf(&truncated).is_err());
    }

    #[test]
    fn summary_renders() {
        let s = Summary {
            out: "oxbow.iso".into(),
            kernel_package: "linux-image-6.1.0-41-amd64".into(),
            kernel_version: "6.1.158-1".into(),
            kernel_release: "6.1.0-41-amd64".into(),
            compressor: kernel::Compressor::Zstd,
            module_compression: None,
            initramfs_modules: 40,
            initrd_cpio_bytes: 8 << 20,
            initrd_bytes: 3 << 20,
            vmlinuz_bytes: 8 << 20,
            system_modules: 3000,
            pruned_modules: 900,
            system_module_bytes: 250 << 20,
            system_list: 60,
            packages: 150,
            staging_bytes: 400 << 20,
            sfs_bytes: 120 << 20,
            iso_bytes: 140 << 20,
            steps: vec![("kernel", Duration::from_secs(2))],
        };
        let text = s.to_string();
        assert!(text.contains("oxbow.iso (140.0 MiB)"), "{text}");
        assert!(text.contains("kernel 2.0s"), "{text}");
    }
}
