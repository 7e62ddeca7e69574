//! The Debian kernel: resolving, downloading and unpacking it (cached by
//! version), and reading its build configuration.

use std::collections::HashMap;
use std::fmt;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

use crate::cmd;
use crate::error::{Error, IoContext, Result};
use crate::fsutil;
use crate::modules::{self, ModuleDb};

/// The Debian meta package that always depends on the current kernel.
pub const META_PACKAGE: &str = "linux-image-amd64";

/// The kernel options, as read from `/boot/config-<release>`.
#[derive(Debug, Default, Clone)]
pub struct KernelConfig {
    values: HashMap<String, String>,
}

impl KernelConfig {
    /// Parses a kernel `.config`.
    pub fn parse(text: &str) -> Self {
        let values = text
            .lines()
            .filter(|l| l.starts_with("CONFIG_"))
            .filter_map(|l| l.split_once('='))
            .map(|(k, v)| (k.to_owned(), v.to_owned()))
            .collect();
        KernelConfig { values }
    }

    /// The raw value of an option (`y`, `m`, a number, a quoted string).
    pub fn get(&self, name: &str) -> Option<&str> {
        self.values.get(name).map(String::as_str)
    }

    /// True if the option is `=y`.
    pub fn is_y(&self, name: &str) -> bool {
        self.get(name) == Some("y")
    }

    /// True if the option is `=y` or `=m`.
    pub fn is_enabled(&self, name: &str) -> bool {
        matches!(self.get(name), Some("y" | "m"))
    }
}

/// The compressor used for the system squashfs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Compressor {
    /// zstd: fast to decompress, good ratio.
    Zstd,
    /// xz: the fallback when the kernel's squashfs lacks zstd.
    Xz,
}

impl Compressor {
    /// The name `mksquashfs -comp` takes.
    pub fn as_str(self) -> &'static str {
        match self {
            Compressor::Zstd => "zstd",
            Compressor::Xz => "xz",
        }
    }
}

impl fmt::Display for Compressor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Chooses the squashfs compressor this kernel can read: zstd when
/// `CONFIG_SQUASHFS_ZSTD=y`, otherwise xz.
pub fn squashfs_compressor(cfg: &KernelConfig) -> Result<Compressor> {
    if cfg.is_y("CONFIG_SQUASHFS_ZSTD") {
        Ok(Compressor::Zstd)
    } else if cfg.is_y("CONFIG_SQUASHFS_XZ") {
        Ok(Compressor::Xz)
    } else {
        Err(Error::Kernel(
            "squashfs supports neither zstd nor xz (CONFIG_SQUASHFS_ZSTD, CONFIG_SQUASHFS_XZ)"
                .into(),
        ))
    }
}

/// Options the boot path depends on: `(option, must be built in)`.
const REQUIRED_OPTIONS: &[(&str, bool)] = &[
    ("CONFIG_BLK_DEV_INITRD", true),
    ("CONFIG_RD_GZIP", true),
    ("CONFIG_DEVTMPFS", true),
    ("CONFIG_MODULES", true),
    ("CONFIG_SQUASHFS", false),
    ("CONFIG_ISO9660_FS", false),
    ("CONFIG_OVERLAY_FS", false),
    ("CONFIG_BLK_DEV_LOOP", false),
];

/// Checks the options the Oxbow boot path relies on (gzip initramfs,
/// devtmpfs, squashfs, iso9660, overlayfs, loop).
pub fn check_config(cfg: &KernelConfig) -> Result<()> {
    let bad: Vec<String> = REQUIRED_OPTIONS
        .iter()
        .filter(|(opt, builtin)| {
            if *builtin {
                !cfg.is_y(opt)
            } else {
                !cfg.is_enabled(opt)
            }
        })
        .map(|(opt, builtin)| format!("{opt}={}", if *builtin { "y" } else { "y or m" }))
        .collect();
    if bad.is_empty() {
        Ok(())
    } else {
        Err(Error::Kernel(format!(
            "the kernel lacks options Oxbow needs: {}",
            bad.join(", ")
        )))
    }
}

/// Finds the versioned kernel package in `apt-cache depends` output.
pub fn parse_depends(text: &str) -> Option<String> {
    text.lines()
        .filter_map(|l| l.trim().trim_start_matches('|').strip_prefix("Depends:"))
        .map(str::trim)
        .find(|p| {
            p.strip_prefix("linux-image-")
                .is_some_and(|rest| rest.starts_with(|c: char| c.is_ascii_digit()))
        })
        .map(str::to_owned)
}

/// Finds the candidate version in `apt-cache policy` output.
pub fn parse_candidate(text: &str) -> Option<String> {
    text.lines()
        .filter_map(|l| l.trim().strip_prefix("Candidate:"))
        .map(str::trim)
        .find(|v| !v.is_empty() && *v != "(none)")
        .map(str::to_owned)
}

/// An unpacked kernel package.
#[derive(Debug, Clone)]
pub struct Kernel {
    /// Package name, e.g. `linux-image-6.1.0-41-amd64`.
    pub package: String,
    /// Debian package version, e.g. `6.1.158-1`.
    pub version: String,
    /// Kernel release (`uname -r`), e.g. `6.1.0-41-amd64`.
    pub release: String,
    /// Where the package is unpacked.
    pub root: PathBuf,
    /// The build configuration.
    pub config: KernelConfig,
    /// Module metadata of the full module tree.
    pub modules: ModuleDb,
}

impl Kernel {
    /// The kernel image.
    pub fn vmlinuz(&self) -> PathBuf {
        self.root.join(format!("boot/vmlinuz-{}", self.release))
    }

    /// `/lib/modules/<release>` inside the unpacked package.
    pub fn module_dir(&self) -> PathBuf {
        self.root.join(format!("lib/modules/{}", self.release))
    }

    /// The suffix of compressed modules (`.ko.xz`, ...), if compressed.
    pub fn module_compression(&self) -> Option<&'static str> {
        modules::compression(&self.modules)
    }

    /// True if the kernel can load compressed modules itself
    /// (`finit_module` with `MODULE_INIT_COMPRESSED_FILE`). Oxbow ships
    /// plain `.ko` files regardless, so init never needs that flag.
    pub fn decompresses_modules(&self) -> bool {
        self.config.is_y("CONFIG_MODULE_DECOMPRESS")
    }
}

/// Resolves the meta package to the versioned kernel package and its
/// candidate version.
pub fn resolve() -> Result<(String, String)> {
    let deps = cmd::stdout(Command::new("apt-cache").args(["depends", META_PACKAGE]))?;
    let package = parse_depends(&deps).ok_or_else(|| {
        Error::Kernel(format!(
            "`apt-cache depends {META_PACKAGE}` names no linux-image-<version> package"
        ))
    })?;
    let policy = cmd::stdout(Command::new("apt-cache").args(["policy", &package]))?;
    let version = parse_candidate(&policy)
        .ok_or_else(|| Error::Kernel(format!("apt has no installable candidate for {package}")))?;
    Ok((package, version))
}

/// Downloads the package into `<cache>/debs/` unless already there.
pub fn download(cache: &Path, package: &str, version: &str) -> Result<PathBuf> {
    let debs = cache.join("debs");
    fsutil::mkdir_p(&debs)?;
    let deb = debs.join(format!(
        "{package}_{}_amd64.deb",
        version.replace(':', "%3a")
    ));
    if deb.is_file() {
        tracing::info!("kernel package cached: {}", deb.display());
        return Ok(deb);
    }
    let tmp = debs.join(".download");
    fsutil::remove(&tmp)?;
    fsutil::mkdir_p(&tmp)?;
    tracing::info!("downloading {package} {version}");
    cmd::run(
        Command::new("apt-get")
            .current_dir(&tmp)
            .args(["-q", "-o", "APT::Sandbox::User=root", "download"])
            .arg(format!("{package}={version}")),
    )?;
    let got = fsutil::list_files(&tmp)?
        .into_iter()
        .find(|f| f.ends_with(".deb"))
        .ok_or_else(|| Error::Kernel(format!("apt-get download left no .deb for {package}")))?;
    fs::rename(tmp.join(got), &deb).ctx("rename into", &deb)?;
    fsutil::remove(&tmp)?;
    Ok(deb)
}

/// Unpacks the package into `<cache>/kernel-<version>/` unless already
/// there, and runs `depmod` on it (Debian generates `modules.dep` at
/// install time, so the package does not carry it).
pub fn unpack(cache: &Path, deb: &Path, release: &str, version: &str) -> Result<PathBuf> {
    let dest = cache.join(format!("kernel-{version}"));
    if dest.join(format!("boot/vmlinuz-{release}")).is_file()
        && dest
            .join(format!("lib/modules/{release}/modules.dep"))
            .is_file()
    {
        tracing::info!("kernel unpacked already: {}", dest.display());
        return Ok(dest);
    }
    let tmp = cache.join(format!(".kernel-{version}.partial"));
    fsutil::remove(&tmp)?;
    tracing::info!("unpacking {}", deb.display());
    cmd::run(Command::new("dpkg-deb").arg("-x").arg(deb).arg(&tmp))?;
    for need in [
        format!("boot/vmlinuz-{release}"),
        format!("boot/config-{release}"),
        format!("lib/modules/{release}/modules.order"),
    ] {
        if !tmp.join(&need).is_file() {
            return Err(Error::Kernel(format!("{} has no /{need}", deb.display())));
        }
    }
    depmod(&tmp, release)?;
    fsutil::remove(&dest)?;
    fs::rename(&tmp, &dest).ctx("rename into", &dest)?;
    Ok(dest)
}

/// Resolves, downloads and unpacks the kernel, and reads its configuration
/// and module metadata.
pub fn prepare(cache: &Path) -> Result<Kernel> {
    let (package, version) = resolve()?;
    let release = package
        .strip_prefix("linux-image-")
        .unwrap_or(&package)
        .to_owned();
    let deb = download(cache, &package, &version)?;
    let root = unpack(cache, &deb, &release, &version)?;
    let cfg_path = root.join(format!("boot/config-{release}"));
    let config = KernelConfig::parse(&fs::read_to_string(&cfg_path).ctx("read", &cfg_path)?);
    check_config(&config)?;
    let modules = modules::load(&root.join(format!("lib/modules/{release}")))?;
    Ok(Kernel {
        package,
        version,
        release,
        root,
        config,
        modules,
    })
}

/// Runs `depmod` for `release` on the tree rooted at `base`.
pub fn depmod(base: &Path, release: &str) -> Result<()> {
    cmd::run(Command::new("depmod").arg("-b").arg(base).arg(release))?;
    Ok(())
}

/// Decompresses module files in place (`x.ko.xz` → `x.ko`); `files` are
/// relative to `dir`. Uses the matching command-line tool, in batches, and
/// rewrites `modules.order` to the new names so depmod keeps the order.
pub fn decompress_modules(dir: &Path, files: &[String]) -> Result<()> {
    for (suffix, tool, args) in [
        (".ko.xz", "xz", &["-d", "-f", "-q"][..]),
        (".ko.zst", "zstd", &["-d", "-f", "-q", "--rm"][..]),
        (".ko.gz", "gzip", &["-d", "-f", "-q"][..]),
    ] {
        let batch: Vec<&String> = files.iter().filter(|f| f.ends_with(suffix)).collect();
        for chunk in batch.chunks(500) {
            cmd::run(
                Command::new(tool)
                    .current_dir(dir)
                    .args(args)
                    .arg("--")
                    .args(chunk.iter().map(|s| s.as_str())),
            )?;
        }
    }
    let order = dir.join("modules.order");
    if order.is_file() {
        let text = fs::read_to_string(&order).ctx("read", &order)?;
        let renamed: String = text
            .lines()
            .map(|l| format!("{}\n", modules::uncompressed_path(l)))
            .collect();
        fs::write(&order, renamed).ctx("write", &order)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn config_and_compressor() {
        let cfg = KernelConfig::parse(
            "# comment\nCONFIG_SQUASHFS=m\nCONFIG_SQUASHFS_ZSTD=y\nCONFIG_SQUASHFS_XZ=y\n# CONFIG_X is not set\n",
        );
        assert_eq!(squashfs_compressor(&cfg).unwrap(), Compressor::Zstd);
        assert!(cfg.is_enabled("CONFIG_SQUASHFS"));
        assert!(!cfg.is_y("CONFIG_SQUASHFS"));
        assert_eq!(cfg.get("CONFIG_X"), None);
        let xz = KernelConfig::parse("CONFIG_SQUASHFS_XZ=y\n");
        assert_eq!(squashfs_compressor(&xz).unwrap(), Compressor::Xz);
        assert!(squashfs_compressor(&KernelConfig::default()).is_err());
    }

    #[test]
    fn required_options() {
        let good = KernelConfig::parse(
            "CONFIG_BLK_DEV_INITRD=y\nCONFIG_RD_GZIP=y\nCONFIG_DEVTMPFS=y\nCONFIG_MODULES=y\n\
             CONFIG_SQUASHFS=m\nCONFIG_ISO9660_FS=m\nCONFIG_OVERLAY_FS=y\nCONFIG_BLK_DEV_LOOP=m\n",
        );
        check_config(&good).unwrap();
        let bad = KernelConfig::parse("CONFIG_RD_GZIP=m\n");
        let msg = check_config(&bad).unwrap_err().to_string();
        assert!(msg.contains("CONFIG_RD_GZIP=y"), "{msg}");
        assert!(msg.contains("CONFIG_ISO9660_FS=y or m"), "{msg}");
    }

    #[test]
    fn decompresses_in_place() {
        if Command::new("xz").arg("--version").output().is_err() {
            eprintln!("xz not installed; skipping");
            return;
        }
        let t = tempfile::tempdir().unwrap();
        let dir = t.path();
        fs::create_dir_all(dir.join("kernel/fs")).unwrap();
        fs::write(dir.join("kernel/fs/a.ko"), b"module a").unwrap();
        cmd::run(Command::new("xz").current_dir(dir).arg("kernel/fs/a.ko")).unwrap();
        fs::write(dir.join("modules.order"), "kernel/fs/a.ko.xz\n").unwrap();
        decompress_modules(dir, &["kernel/fs/a.ko.xz".to_owned()]).unwrap();
        assert_eq!(fs::read(dir.join("kernel/fs/a.ko")).unwrap(), b"module a");
        assert!(!dir.join("kernel/fs/a.ko.xz").exists());
        assert_eq!(
            fs::read_to_string(dir.join("modules.order")).unwrap(),
            "kernel/fs/a.ko\n"
        );
    }

    #[test]
    fn apt_output_parsing() {
        let deps = "linux-image-amd64\n  Depends: linux-image-6.1.0-41-amd64\n";
        assert_eq!(parse_depends(deps).unwrap(), "linux-image-6.1.0-41-amd64");
        let alt = "linux-image-amd64\n |Depends: linux-image-6.12.1-amd64\n  Depends: foo\n";
        assert_eq!(parse_depends(alt).unwrap(), "linux-image-6.12.1-amd64");
        assert_eq!(parse_depends("x\n  Depends: linux-base\n"), None);
        let policy = "linux-image-6.1.0-41-amd64:\n  Installed: (none)\n  Candidate: 6.1.158-1\n";
        assert_eq!(parse_candidate(policy).unwrap(), "6.1.158-1");
        assert_eq!(parse_candidate("  Candidate: (none)\n"), None);
    }
}
