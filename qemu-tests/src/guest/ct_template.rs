//! The Debian 12 container template, named as Proxmox names its own
//! (`debian-12-standard_<version>-1_amd64.tar.zst`, the version from the
//! base system's `/etc/debian_version`), for tests and for users who
//! upload it to a node's `local:vztmpl/`.
//!
//! [`build`]:
//!
//! 1. `debootstrap --variant=minbase --include=`[`PACKAGES`] `bookworm`,
//!    cached like the ISO's base (`target/cache/rootfs-<key>`, keyed by
//!    suite, variant, mirror and package set);
//! 2. a copy stripped like the system image, with the files of
//!    [`config_files`] and without the state that must differ between
//!    containers (machine id, random seed, SSH host keys if any);
//! 3. `ctr::template::pack_dir` of that tree (owners as numbers, `dev/`
//!    left empty) into `target/guest/<name>`.
//!
//! A stamp beside it records the inputs; when they are unchanged nothing
//! is done.

use std::fs;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};

/// Packages added to debootstrap's minimal base: systemd as init, D-Bus,
/// ifupdown with a DHCP client (the runtime writes
/// `/etc/network/interfaces`, as Proxmox does for Debian), and the tools
/// one expects in a standard template.
pub const PACKAGES: &[&str] = &[
    "systemd-sysv",
    "dbus",
    "ifupdown",
    "isc-dhcp-client",
    "iproute2",
    "iputils-ping",
    "procps",
    "less",
    "ca-certificates",
];
/// Removed besides what `image::rootfs::strip` removes.
const STRIP: &[&str] = &[
    "var/cache/apt/pkgcache.bin",
    "var/cache/apt/srcpkgcache.bin",
    "var/lib/systemd/random-seed",
    // No display or keyboard: the runtime's console gets a getty from
    // systemd's generator.
    "etc/systemd/system/getty.target.wants/getty@tty1.service",
];
/// Bump when the way the template is made changes, to force a rebuild.
const FORMAT: u32 = 1;
/// The stamp's file name in the output directory.
const STAMP: &str = "ct-template.stamp";

/// The files written over the debootstrap result: path, mode, contents.
pub fn config_files() -> Vec<(&'static str, u32, String)> {
    vec![
        // Set at every start from the container's `hostname`.
        ("etc/hostname", 0o644, "localhost\n".to_string()),
        (
            "etc/hosts",
            0o644,
            "127.0.0.1\tlocalhost\n::1\t\tlocalhost ip6-localhost ip6-loopback\n".to_string(),
        ),
        // Empty: a fresh id at the first boot, not a "first boot".
        ("etc/machine-id", 0o444, String::new()),
        (
            "etc/network/interfaces",
            0o644,
            "auto lo\niface lo inet loopback\n".to_string(),
        ),
        ("etc/resolv.conf", 0o644, String::new()),
    ]
}

/// What [`build`] needs.
#[derive(Debug, Clone)]
pub struct TemplateOptions {
    /// The output directory (`target/guest`).
    pub out: PathBuf,
    /// The debootstrap cache shared with `oxbow-image` (`target/cache`).
    pub cache: PathBuf,
}

/// What [`build`] did.
#[derive(Debug, Clone)]
pub struct TemplateReport {
    pub template: PathBuf,
    pub up_to_date: bool,
    pub packages: usize,
    pub bytes: u64,
}

/// The template's file name for Debian version `version` (`12.7`).
pub fn file_name(version: &str) -> String {
    ctr::template::standard_name("debian", version, 1, "amd64")
}

/// The built template in `dir`, if any (the newest by name).
pub fn locate_in(dir: &Path) -> Option<PathBuf> {
    let mut found: Vec<PathBuf> = fs::read_dir(dir)
        .ok()?
        .flatten()
        .map(|e| e.path())
        .filter(|p| {
            p.file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.starts_with("debian-12-standard_") && n.ends_with(".tar.zst"))
        })
        .collect();
    found.sort();
    found.pop()
}

/// Builds the template, or leaves it if the stamp says it is current.
pub fn build(opts: &TemplateOptions) -> Result<TemplateReport> {
    let base = image::rootfs::debootstrap_packages(&opts.cache, PACKAGES)
        .context("debootstrap of the container template (needs root)")?;
    let version = fs::read_to_string(base.join("etc/debian_version"))
        .with_context(|| format!("reading {}/etc/debian_version", base.display()))?
        .trim()
        .to_string();
    let template = opts.out.join(file_name(&version));
    let status = fs::read(base.join("var/lib/dpkg/status"))
        .with_context(|| format!("reading {}/var/lib/dpkg/status", base.display()))?;
    let packages = super::debian::count_installed(&String::from_utf8_lossy(&status));
    let mut config: String = config_files()
        .iter()
        .map(|(p, m, c)| format!("{p} {m:o} {c:?}\n"))
        .collect();
    config.push_str(&STRIP.join(" "));
    let stamp = format!(
        "format {FORMAT}\nbase {}\ndpkg-status {:016x}\npackages {}\nconfig {:016x}\nname {}\n",
        base.file_name().unwrap_or_default().to_string_lossy(),
        super::fnv1a(&status),
        PACKAGES.join(" "),
        super::fnv1a(config.as_bytes()),
        template.display(),
    );
    let stamp_path = opts.out.join(STAMP);
    if fs::read_to_string(&stamp_path).is_ok_and(|s| s == stamp) && template.is_file() {
        return Ok(TemplateReport {
            bytes: fs::metadata(&template)?.len(),
            template,
            up_to_date: true,
            packages,
        });
    }
    fs::create_dir_all(&opts.out).with_context(|| format!("creating {}", opts.out.display()))?;
    let _ = fs::remove_file(&stamp_path);
    let staging = opts.out.join(".ct-template-root.partial");
    image::rootfs::stage(&base, &staging)?;
    image::rootfs::strip(&staging)?;
    for rel in STRIP {
        image::fsutil::remove(&image::fsutil::entry_in_root(&staging, rel)?)?;
    }
    for (path, mode, contents) in config_files() {
        image::fsutil::write_in_root(&staging, path, contents.as_bytes(), mode)?;
    }
    let report = ctr::template::pack_dir(&staging, &template, 10)
        .with_context(|| format!("packing {}", template.display()))?;
    image::rootfs::clear_scratch(&staging)?;
    super::write_atomic(&stamp_path, stamp.as_bytes())?;
    Ok(TemplateReport {
        template,
        up_to_date: false,
        packages,
        bytes: report.bytes,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn named_as_proxmox_names_it() {
        assert_eq!(file_name("12.7"), "debian-12-standard_12.7-1_amd64.tar.zst");
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(locate_in(dir.path()), None);
        for n in [file_name("12.7"), file_name("12.9"), "other.tar.zst".into()] {
            fs::write(dir.path().join(n), b"").unwrap();
        }
        assert_eq!(
            locate_in(dir.path()),
            Some(dir.path().join(file_name("12.9")))
        );
    }
}
