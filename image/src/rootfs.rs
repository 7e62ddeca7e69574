//! The system image: a lean Debian root (made once by debootstrap and
//! cached), plus the kernel modules, Oxbow's binaries and the overlay.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

use crate::cmd;
use crate::error::{Error, IoContext, Result};
use crate::fsutil;
use crate::kernel::{self, Compressor, Kernel};
use crate::modules::{self, ModuleDb};

/// Debian suite of the system image.
pub const SUITE: &str = "bookworm";
/// Debian mirror debootstrap fetches from.
pub const MIRROR: &str = "http://deb.debian.org/debian";
/// debootstrap variant: essential packages plus apt only.
pub const VARIANT: &str = "minbase";
/// Packages added to the minimal base: networking, storage tools, module
/// loading, process tools and a pager for the console.
pub const PACKAGES: &[&str] = &[
    "iproute2",
    "nftables",
    "e2fsprogs",
    "lvm2",
    "thin-provisioning-tools",
    "btrfs-progs",
    "kmod",
    "procps",
    "util-linux",
    "ca-certificates",
    "less",
];

/// Where Oxbow's binaries live in the system image.
pub const BIN_DIR: &str = "usr/lib/oxbow";
/// The binaries, all fully static.
pub const BINARIES: &[&str] = &["init", "netd", "apid", "vmm", "ctr"];
/// Symlinks to `init`, which also acts as `oxctl` when called by that name.
pub const INIT_LINKS: &[&str] = &["sbin/init", "usr/sbin/oxctl"];
/// The system module list.
pub const SYSTEM_LIST_PATH: &str = "etc/oxbow/modules-system.list";
/// The pinned versions file.
pub const VERSIONS_PATH: &str = "usr/share/oxbow/versions.txt";
/// The source revision of Oxbow's binaries, one line (apid's `/version`
/// reports it as `repoid`). Read at run time rather than compiled in, so
/// that a new commit does not make cargo build apid again.
pub const REVISION_PATH: &str = "usr/lib/oxbow/revision";

/// Paths removed from every staged root: documentation, manuals and
/// translations (nobody reads them on an appliance), apt's package lists,
/// and files debootstrap copies from the build host.
const STRIP: &[&str] = &[
    "usr/share/man",
    "usr/share/locale",
    "usr/share/info",
    "var/lib/apt/lists",
    "var/log/bootstrap.log",
    "etc/resolv.conf",
    "etc/hostname",
];

/// A 64-bit FNV-1a hash: small, dependency-free and stable across Rust
/// releases (unlike `DefaultHasher`), which cache keys need.
pub fn fnv1a64(data: &[u8]) -> u64 {
    data.iter().fold(0xcbf2_9ce4_8422_2325, |h, b| {
        (h ^ u64::from(*b)).wrapping_mul(0x0100_0000_01b3)
    })
}

/// The cache key of a debootstrap result: a hash of everything that goes
/// into it. Package order does not matter.
pub fn cache_key(suite: &str, variant: &str, mirror: &str, packages: &[&str]) -> String {
    let mut pkgs = packages.to_vec();
    pkgs.sort_unstable();
    pkgs.dedup();
    let input = format!(
        "oxbow-rootfs-v1\n{suite}\n{variant}\n{mirror}\n{}\n",
        pkgs.join(",")
    );
    format!("{:016x}", fnv1a64(input.as_bytes()))
}

/// Returns the cached debootstrap result of the system image, [`PACKAGES`]
/// plus `extra`, creating it on first use in `<cache>/rootfs-<key>/`.
pub fn debootstrap(cache: &Path, extra: &[String]) -> Result<PathBuf> {
    let mut packages: Vec<&str> = PACKAGES.to_vec();
    packages.extend(extra.iter().map(String::as_str));
    debootstrap_packages(cache, &packages)
}

/// How often [`debootstrap_packages`] runs debootstrap before it gives up.
const DEBOOTSTRAP_ATTEMPTS: u32 = 3;

/// Returns the cached debootstrap result of [`SUITE`], [`VARIANT`] plus
/// `packages`, creating it on first use in `<cache>/rootfs-<key>/`, where
/// the key is [`cache_key`] of all of them: another package set (the
/// guest test image's, say) gets its own directory.
pub fn debootstrap_packages(cache: &Path, packages: &[&str]) -> Result<PathBuf> {
    let key = cache_key(SUITE, VARIANT, MIRROR, packages);
    let dest = cache.join(format!("rootfs-{key}"));
    if dest.join("var/lib/dpkg/status").is_file() {
        tracing::info!("base system cached: {}", dest.display());
        return Ok(dest);
    }
    let tmp = cache.join(format!(".rootfs-{key}.partial"));
    // A mirror caught mid-sync (a point release) fails a download or a
    // hash check for a few minutes: try again before giving up.
    let mut attempt = 1;
    loop {
        clear_scratch(&tmp)?;
        tracing::info!(
            "running debootstrap ({SUITE}, {} extra packages)",
            packages.len()
        );
        let run = cmd::run(
            Command::new("debootstrap")
                .arg(format!("--variant={VARIANT}"))
                .arg(format!("--include={}", packages.join(",")))
                .arg(SUITE)
                .arg(&tmp)
                .arg(MIRROR),
        )
        .map_err(|e| with_log(e, &tmp.join("debootstrap/debootstrap.log")));
        match run {
            Ok(_) => break,
            Err(e) if attempt < DEBOOTSTRAP_ATTEMPTS => {
                tracing::warn!("debootstrap failed (attempt {attempt}), trying again: {e}");
                attempt += 1;
                std::thread::sleep(std::time::Duration::from_secs(30));
            }
            Err(e) => return Err(e),
        }
    }
    fsutil::remove(&dest)?;
    fs::rename(&tmp, &dest).ctx("rename into", &dest)?;
    Ok(dest)
}

/// Appends the end of debootstrap's own log to its failure: its stderr
/// often only says which step failed.
fn with_log(err: Error, log: &Path) -> Error {
    match (err, fs::read_to_string(log)) {
        (
            Error::Command {
                command,
                status,
                stderr,
            },
            Ok(text),
        ) => {
            let lines: Vec<&str> = text.lines().collect();
            let tail = lines[lines.len().saturating_sub(20)..].join("\n");
            Error::Command {
                command,
                status,
                stderr: format!("{stderr}\n--- {}:\n{tail}", log.display()),
            }
        }
        (err, _) => err,
    }
}

/// Removes a scratch directory, refusing if anything is mounted below it
/// (a failed debootstrap can leave /proc or /sys mounted in its target).
pub fn clear_scratch(path: &Path) -> Result<()> {
    let mountinfo = fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
    if let Some(mp) = mounts_below(&mountinfo, path) {
        return Err(Error::Input(format!(
            "{mp} is mounted inside {}; unmount it first",
            path.display()
        )));
    }
    fsutil::remove(path)
}

/// The first mount point in `mountinfo` text at or below `path`.
pub fn mounts_below(mountinfo: &str, path: &Path) -> Option<String> {
    let base = path.to_string_lossy();
    let base = base.trim_end_matches('/');
    mountinfo
        .lines()
        .filter_map(|l| l.split(' ').nth(4))
        .map(|mp| mp.replace("\\040", " "))
        .find(|mp| mp == base || mp.starts_with(&format!("{base}/")))
}

/// Copies the cached base into a fresh staging directory, keeping
/// ownership, modes, device nodes and hard links.
pub fn stage(base: &Path, staging: &Path) -> Result<()> {
    clear_scratch(staging)?;
    fsutil::mkdir_p(staging)?;
    let mut src = base.as_os_str().to_owned();
    src.push("/.");
    cmd::run(
        Command::new("cp")
            .args(["-a", "--reflink=auto"])
            .arg(src)
            .arg(staging),
    )?;
    Ok(())
}

/// Removes what a running Oxbow does not need. Documentation goes except
/// each package's `copyright` file, which the licences ask to ship.
pub fn strip(staging: &Path) -> Result<()> {
    let archives = staging.join("var/cache/apt/archives");
    if archives.is_dir() {
        for f in fsutil::list_files(&archives)? {
            if f.ends_with(".deb") {
                fsutil::remove(&archives.join(f))?;
            }
        }
    }
    for p in STRIP {
        fsutil::remove(&fsutil::entry_in_root(staging, p)?)?;
    }
    let doc = fsutil::resolve_in_root(staging, "usr/share/doc")?;
    if doc.is_dir() {
        prune_docs(&doc)?;
    }
    Ok(())
}

/// Keeps only `<pkg>/copyright` below `doc` (copyright files of packages
/// whose doc directory is a symlink to another package's stay reachable).
fn prune_docs(doc: &Path) -> Result<()> {
    for entry in fs::read_dir(doc).ctx("read directory", doc)? {
        let entry = entry.ctx("read directory", doc)?;
        let path = entry.path();
        let ft = entry.file_type().ctx("stat", &path)?;
        if !ft.is_dir() {
            if !ft.is_symlink() {
                fsutil::remove(&path)?;
            }
            continue;
        }
        for inner in fs::read_dir(&path).ctx("read directory", &path)? {
            let inner = inner.ctx("read directory", &path)?;
            if inner.file_name() != "copyright" {
                fsutil::remove(&inner.path())?;
            }
        }
    }
    Ok(())
}

/// What ended up in the system image's module tree.
#[derive(Debug)]
pub struct SystemModules {
    /// Metadata of the staged tree (after depmod).
    pub db: ModuleDb,
    /// Modules left out with the excluded trees.
    pub pruned: usize,
    /// Bytes of the staged tree.
    pub bytes: u64,
    /// The resolved system module list.
    pub list: Vec<String>,
}

/// Adds `/lib/modules/<release>` minus the excluded trees, makes it
/// loadable with `finit_module`, runs depmod and writes the system module
/// list.
pub fn install_modules(staging: &Path, kernel: &Kernel) -> Result<SystemModules> {
    let rel = format!("lib/modules/{}", kernel.release);
    let dest = fsutil::resolve_in_root(staging, &rel)?;
    fsutil::remove(&dest)?;
    let pruned = kernel.modules.pruned(modules::EXCLUDED_TREES);
    let src = kernel.module_dir();
    let mut copied = Vec::new();
    for f in fsutil::list_files(&src)? {
        if pruned.contains(&f) {
            continue;
        }
        let to = dest.join(&f);
        if let Some(parent) = to.parent() {
            fsutil::mkdir_p(parent)?;
        }
        fs::copy(src.join(&f), &to).ctx("copy to", &to)?;
        copied.push(f);
    }
    // Oxbow ships plain .ko files only: init hands them to finit_module
    // as they are, which works whether or not the kernel could decompress
    // them itself (and squashfs compresses them as well as xz would).
    if let Some(suffix) = kernel.module_compression() {
        tracing::info!(
            "decompressing {suffix} system modules (in-kernel decompression: {})",
            kernel.decompresses_modules()
        );
        kernel::decompress_modules(&dest, &copied)?;
    }
    kernel::depmod(staging, &kernel.release)?;
    let db = ModuleDb::load(&dest)?;
    for name in modules::SYSTEM_MODULES {
        if kernel.modules.path_of(name).is_some() && db.path_of(name).is_none() {
            tracing::warn!("system module {name} was pruned with the excluded trees");
        }
    }
    let res = modules::resolve_list(&db, "system", modules::SYSTEM_MODULES, &[])?;
    fsutil::write_in_root(
        staging,
        SYSTEM_LIST_PATH,
        modules::render_list(&res.paths).as_bytes(),
        0o644,
    )?;
    Ok(SystemModules {
        bytes: fsutil::tree_size(&dest)?,
        pruned: pruned.len(),
        db,
        list: res.paths,
    })
}

/// Installs the binaries under `/usr/lib/oxbow` and the links to `init`.
pub fn install_binaries(staging: &Path, bins: &Path) -> Result<()> {
    for name in BINARIES {
        fsutil::copy_into_root(
            staging,
            &bins.join(name),
            &format!("{BIN_DIR}/{name}"),
            0o755,
        )?;
    }
    for link in INIT_LINKS {
        fsutil::symlink_in_root(staging, link, &format!("/{BIN_DIR}/init"))?;
    }
    Ok(())
}

/// Builds the squashfs of the staged root.
pub fn mksquashfs(staging: &Path, out: &Path, comp: Compressor) -> Result<()> {
    if let Some(parent) = out.parent() {
        fsutil::mkdir_p(parent)?;
    }
    cmd::run(
        Command::new("mksquashfs")
            .arg(staging)
            .arg(out)
            .args(["-noappend", "-comp", comp.as_str(), "-processors", "2"])
            .args(["-no-progress", "-quiet"]),
    )?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fnv_known_values() {
        assert_eq!(fnv1a64(b""), 0xcbf2_9ce4_8422_2325);
        assert_eq!(fnv1a64(b"a"), 0xaf63_dc4c_8601_ec8c);
    }

    #[test]
    fn cache_key_ignores_order_but_not_content() {
        let a = cache_key("bookworm", "minbase", MIRROR, &["less", "kmod"]);
        let b = cache_key("bookworm", "minbase", MIRROR, &["kmod", "less"]);
        let c = cache_key("bookworm", "minbase", MIRROR, &["kmod"]);
        let d = cache_key("trixie", "minbase", MIRROR, &["kmod", "less"]);
        assert_eq!(a, b);
        assert_ne!(a, c);
        assert_ne!(a, d);
        assert_eq!(a.len(), 16);
    }

    #[test]
    fn mount_detection() {
        let info = "22 1 0:21 / /proc rw - proc proc rw\n\
                    90 1 0:5 / /cache/.rootfs-x.partial/proc rw - proc proc rw\n";
        assert_eq!(
            mounts_below(info, Path::new("/cache/.rootfs-x.partial")).unwrap(),
            "/cache/.rootfs-x.partial/proc"
        );
        assert_eq!(mounts_below(info, Path::new("/cache/.rootfs-x")), None);
    }

    #[test]
    fn strip_keeps_copyright() {
        let t = tempfile::tempdir().unwrap();
        let r = t.path();
        for d in [
            "usr/share/doc/less",
            "usr/share/man/man1",
            "var/cache/apt/archives/partial",
            "etc",
        ] {
            fs::create_dir_all(r.join(d)).unwrap();
        }
        fs::write(r.join("usr/share/doc/less/copyright"), "GPL").unwrap();
        fs::write(r.join("usr/share/doc/less/changelog.gz"), "x").unwrap();
        std::os::unix::fs::symlink("less", r.join("usr/share/doc/other")).unwrap();
        fs::write(r.join("var/cache/apt/archives/less_1_amd64.deb"), "x").unwrap();
        fs::write(r.join("etc/resolv.conf"), "nameserver 192.0.2.1").unwrap();
        strip(r).unwrap();
        assert!(r.join("usr/share/doc/less/copyright").is_file());
        assert!(!r.join("usr/share/doc/less/changelog.gz").exists());
        assert!(r.join("usr/share/doc/other/copyright").is_file());
        assert!(!r.join("usr/share/man").exists());
        assert!(!r.join("var/cache/apt/archives/less_1_amd64.deb").exists());
        assert!(r.join("var/cache/apt/archives/partial").is_dir());
        assert!(!r.join("etc/resolv.conf").exists());
    }
}
