//! The guest test assets: what a VMM under test boots.
//!
//! [`build`] writes into one directory (`target/guest/` by default):
//!
//! | file                | what |
//! |---------------------|------|
//! | `vmlinuz`           | Debian's kernel (the one the ISO build uses), a bzImage |
//! | `vmlinux`           | the same kernel uncompressed: the ELF inside the bzImage, which carries the PVH entry note |
//! | `initrd.img`        | newc cpio (uncompressed): `/init` = `guest-init`, the virtio modules and their list |
//! | `guest-assets.iso`  | ISO9660 volume [`GUEST_LABEL`] holding the three files above |
//! | `stamp`             | what they were built from; an unchanged stamp skips the rebuild |
//!
//! `guest-init` (`src/bin/guest_init.rs`) reports what the guest sees as
//! `OXBOW-GUEST ...` lines on the console and powers off. The kernel and
//! its modules come from `image::kernel::prepare` (the same apt
//! resolution and cache as `oxbow-image`).
//!
//! [`debian`] builds `debian.raw`, a full Debian guest on ext4, which the
//! same initramfs mounts and starts with `oxbow.root=/dev/vda`.

use std::fs::{self, File};
use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, ensure, Context, Result};

pub mod ct_template;
pub mod debian;

/// The ISO9660 volume id of `guest-assets.iso`.
pub const GUEST_LABEL: &str = "OXBOW-GUEST";
/// The modules the guest initramfs carries (with their dependencies).
pub const GUEST_MODULES: &[&str] = &[
    "virtio_pci",
    "virtio_blk",
    "virtio_net",
    "virtio_rng",
    // the ACPI power button and the event device guest-init reads it from
    "button",
    "evdev",
    // the Debian guest's root file system (`oxbow.root=`); ext4 checksums
    // its metadata with crc32c, which it asks the crypto API for by name,
    // so the implementation is loaded explicitly
    "crc32c_generic",
    "ext4",
    // systemd's automount points (it loads autofs4 itself only from the
    // root file system's module tree, which the Debian guest lacks)
    "autofs4",
];
/// The module list inside the initramfs, read by `guest-init`.
pub const MODULE_LIST: &str = "etc/oxbow/modules.list";
/// Bump when the layout of the assets changes, to force a rebuild.
const FORMAT: u32 = 1;

/// Xen ELF note type of the 32-bit PVH entry point.
pub const XEN_ELFNOTE_PHYS32_ENTRY: u32 = 18;

/// Where the assets are (or go).
#[derive(Debug, Clone)]
pub struct GuestAssets {
    /// The directory.
    pub dir: PathBuf,
    /// The bzImage.
    pub vmlinuz: PathBuf,
    /// The uncompressed ELF kernel.
    pub vmlinux: PathBuf,
    /// The initramfs.
    pub initrd: PathBuf,
    /// The ISO with the three.
    pub iso: PathBuf,
}

impl GuestAssets {
    /// The asset paths in `dir`.
    pub fn in_dir(dir: &Path) -> GuestAssets {
        GuestAssets {
            dir: dir.to_path_buf(),
            vmlinuz: dir.join("vmlinuz"),
            vmlinux: dir.join("vmlinux"),
            initrd: dir.join("initrd.img"),
            iso: dir.join("guest-assets.iso"),
        }
    }

    /// The default directory: `$OXBOW_GUEST_DIR`, else `target/guest`.
    pub fn default_dir() -> PathBuf {
        std::env::var_os("OXBOW_GUEST_DIR")
            .map(PathBuf::from)
            .unwrap_or_else(|| crate::target_dir().join("guest"))
    }

    /// The built assets in the default directory; an error naming
    /// `make guest` if one is missing.
    pub fn locate() -> Result<GuestAssets> {
        let a = GuestAssets::in_dir(&GuestAssets::default_dir());
        for f in [&a.vmlinuz, &a.vmlinux, &a.initrd, &a.iso] {
            if !f.is_file() {
                bail!(
                    "{} is missing: build the guest assets with `make guest`",
                    f.display()
                );
            }
        }
        Ok(a)
    }
}

/// What [`build`] needs.
#[derive(Debug, Clone)]
pub struct BuildOptions {
    /// The static `guest-init` binary.
    pub init: PathBuf,
    /// The output directory.
    pub out: PathBuf,
    /// The kernel cache shared with `oxbow-image` (`target/cache`).
    pub cache: PathBuf,
}

/// What [`build`] did.
#[derive(Debug, Clone)]
pub struct BuildReport {
    /// The assets.
    pub assets: GuestAssets,
    /// Kernel package and Debian version.
    pub kernel: String,
    /// True if the stamp matched and nothing was rebuilt.
    pub up_to_date: bool,
    /// The modules in the initramfs, in load order.
    pub modules: Vec<String>,
    /// The PVH entry point of `vmlinux` (guest physical address).
    pub pvh_entry: u64,
}

/// Builds the assets, or leaves them if the stamp says they are current.
pub fn build(opts: &BuildOptions) -> Result<BuildReport> {
    let init = fs::read(&opts.init).with_context(|| {
        format!(
            "reading {} (build it with `make guest`)",
            opts.init.display()
        )
    })?;
    image::check_static_elf(&init).map_err(|e| anyhow::anyhow!("{}: {e}", opts.init.display()))?;
    let kernel = image::kernel::prepare(&opts.cache).context("preparing the Debian kernel")?;
    let assets = GuestAssets::in_dir(&opts.out);
    let stamp = format!(
        "format {FORMAT}\nkernel {} {} {}\ninit {:016x}\nmodules {}\n",
        kernel.package,
        kernel.version,
        kernel.release,
        fnv1a(&init),
        GUEST_MODULES.join(" ")
    );
    let stamp_path = opts.out.join("stamp");
    let resolved = kernel.modules.resolve(GUEST_MODULES);
    ensure!(
        resolved.missing.is_empty(),
        "kernel {} has neither module nor built-in for {:?}",
        kernel.release,
        resolved.missing
    );
    let modules: Vec<String> = resolved
        .paths
        .iter()
        .map(|p| image::modules::uncompressed_path(p))
        .collect();
    let current = fs::read_to_string(&stamp_path).is_ok_and(|s| s == stamp)
        && [
            &assets.vmlinuz,
            &assets.vmlinux,
            &assets.initrd,
            &assets.iso,
        ]
        .iter()
        .all(|f| f.is_file());
    let kernel_name = format!("{} {}", kernel.package, kernel.version);
    if current {
        let pvh_entry = pvh_entry(&read_head(&assets.vmlinux)?)?;
        return Ok(BuildReport {
            assets,
            kernel: kernel_name,
            up_to_date: true,
            modules,
            pvh_entry,
        });
    }
    fs::create_dir_all(&opts.out).with_context(|| format!("creating {}", opts.out.display()))?;
    let _ = fs::remove_file(&stamp_path);

    // vmlinuz, and the ELF inside it.
    let bz = fs::read(kernel.vmlinuz())
        .with_context(|| format!("reading {}", kernel.vmlinuz().display()))?;
    let elf = extract_vmlinux(&bz)?;
    let pvh_entry = pvh_entry(&elf).context("the extracted vmlinux")?;
    write_atomic(&assets.vmlinuz, &bz)?;
    write_atomic(&assets.vmlinux, &elf)?;

    // The initramfs.
    let mut files = Vec::new();
    for (src, dest) in resolved.paths.iter().zip(&modules) {
        let data = read_module(&kernel.module_dir().join(src))?;
        files.push((dest.clone(), data));
    }
    let cpio = initramfs(init, &kernel.release, &modules, files)?;
    write_atomic(&assets.initrd, &cpio)?;

    // The ISO.
    make_iso(&assets)?;
    write_atomic(&stamp_path, stamp.as_bytes())?;
    Ok(BuildReport {
        assets,
        kernel: kernel_name,
        up_to_date: false,
        modules,
        pvh_entry,
    })
}

/// 64-bit FNV-1a, for the stamp.
fn fnv1a(data: &[u8]) -> u64 {
    data.iter().fold(0xcbf2_9ce4_8422_2325, |h, &b| {
        (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
    })
}

fn read_head(path: &Path) -> Result<Vec<u8>> {
    let mut buf = Vec::new();
    File::open(path)
        .and_then(|f| f.take(64 << 20).read_to_end(&mut buf))
        .with_context(|| format!("reading {}", path.display()))?;
    Ok(buf)
}

/// Writes `data` to a temporary name beside `path`, then renames it.
fn write_atomic(path: &Path, data: &[u8]) -> Result<()> {
    let tmp = path.with_extension("partial");
    fs::write(&tmp, data).with_context(|| format!("writing {}", tmp.display()))?;
    fs::rename(&tmp, path).with_context(|| format!("renaming to {}", path.display()))
}

/// A module file's contents, decompressed if the kernel ships it
/// compressed (the guest loads plain `.ko` with `finit_module`).
fn read_module(path: &Path) -> Result<Vec<u8>> {
    let name = path.to_string_lossy();
    let tool = if name.ends_with(".ko.xz") {
        Some("xz")
    } else if name.ends_with(".ko.zst") {
        Some("zstd")
    } else if name.ends_with(".ko.gz") {
        Some("gzip")
    } else {
        None
    };
    match tool {
        None => fs::read(path).with_context(|| format!("reading {}", path.display())),
        Some(tool) => {
            let data = fs::read(path).with_context(|| format!("reading {}", path.display()))?;
            decompress_with(tool, &data).with_context(|| format!("decompressing {name}"))
        }
    }
}

/// Runs `tool -dc` with `data` on stdin and returns its stdout.
fn decompress_with(tool: &str, data: &[u8]) -> Result<Vec<u8>> {
    let mut child = Command::new(tool)
        .arg("-dc")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .with_context(|| format!("running {tool} (apt-get install xz-utils zstd gzip)"))?;
    let mut stdin = child.stdin.take().context("stdin")?;
    let input = data.to_vec();
    let writer = std::thread::spawn(move || std::io::Write::write_all(&mut stdin, &input));
    let out = child.wait_with_output()?;
    let written = writer
        .join()
        .map_err(|_| anyhow::anyhow!("writer thread panicked"))?;
    if !out.status.success() {
        bail!(
            "{tool} -dc failed ({}): {}",
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    written.with_context(|| format!("feeding {tool}"))?;
    Ok(out.stdout)
}

/// The compressed kernel inside a bzImage: `(compressor, payload)`.
///
/// The boot protocol header (`HdrS`, version 2.08 or later) gives the
/// payload's offset and length relative to the protected-mode code, which
/// follows the `setup_sects` real-mode sectors.
pub fn bzimage_payload(bz: &[u8]) -> Result<(&'static str, &[u8])> {
    let u16_at = |o: usize| bz.get(o..o + 2).map(|b| u16::from_le_bytes([b[0], b[1]]));
    let u32_at = |o: usize| {
        bz.get(o..o + 4)
            .map(|b| u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
    };
    ensure!(
        bz.get(0x202..0x206) == Some(b"HdrS"),
        "not a bzImage: no HdrS boot header at 0x202"
    );
    let version = u16_at(0x206).unwrap_or(0);
    ensure!(
        version >= 0x0208,
        "boot protocol {version:#06x} is older than 2.08, which has no payload fields"
    );
    let setup_sects = match bz[0x1f1] {
        0 => 4,
        n => usize::from(n),
    };
    let pm_start = (setup_sects + 1) * 512;
    let offset = u32_at(0x248).context("short header")? as usize;
    let length = u32_at(0x24c).context("short header")? as usize;
    let payload = bz
        .get(pm_start + offset..pm_start + offset + length)
        .with_context(|| {
            format!(
                "payload {offset:#x}+{length:#x} lies outside the {}-byte file",
                bz.len()
            )
        })?;
    let kind = if payload.starts_with(&[0xfd, b'7', b'z', b'X', b'Z', 0]) {
        "xz"
    } else if payload.starts_with(&[0x28, 0xb5, 0x2f, 0xfd]) {
        "zstd"
    } else if payload.starts_with(&[0x1f, 0x8b]) {
        "gzip"
    } else {
        bail!(
            "the bzImage payload is compressed with something other than xz, zstd or gzip (magic {:02x?})",
            &payload[..payload.len().min(6)]
        );
    };
    Ok((kind, payload))
}

/// Decompresses the ELF kernel out of a bzImage.
///
/// The kernel build appends the uncompressed size (4 bytes, little
/// endian) to xz and zstd payloads; it is stripped before decompressing
/// and checked against the result.
pub fn extract_vmlinux(bz: &[u8]) -> Result<Vec<u8>> {
    let (kind, payload) = bzimage_payload(bz)?;
    let (stream, size) = match kind {
        "gzip" => (payload, None),
        _ => {
            ensure!(payload.len() > 4, "payload too short");
            let (s, tail) = payload.split_at(payload.len() - 4);
            (
                s,
                Some(u32::from_le_bytes([tail[0], tail[1], tail[2], tail[3]]) as usize),
            )
        }
    };
    let elf = decompress_with(kind, stream).context("decompressing the bzImage payload")?;
    if let Some(size) = size {
        ensure!(
            elf.len() == size,
            "decompressed {} bytes, but the bzImage says {size}",
            elf.len()
        );
    }
    ensure!(
        elf.starts_with(b"\x7fELF"),
        "the bzImage payload is not an ELF file"
    );
    Ok(elf)
}

/// The PVH entry point of an x86-64 ELF kernel: the `Xen` note of type
/// [`XEN_ELFNOTE_PHYS32_ENTRY`] in a `PT_NOTE` segment.
pub fn pvh_entry(elf: &[u8]) -> Result<u64> {
    let u16_at = |o: usize| elf.get(o..o + 2).map(|b| u16::from_le_bytes([b[0], b[1]]));
    let u32_at = |o: usize| {
        elf.get(o..o + 4)
            .map(|b| u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
    };
    let u64_at = |o: usize| {
        elf.get(o..o + 8).map(|b| {
            let mut a = [0u8; 8];
            a.copy_from_slice(b);
            u64::from_le_bytes(a)
        })
    };
    ensure!(elf.starts_with(b"\x7fELF"), "not an ELF file");
    ensure!(
        elf.get(4) == Some(&2) && elf.get(5) == Some(&1),
        "not a 64-bit little-endian ELF file"
    );
    ensure!(u16_at(0x12) == Some(62), "not an x86-64 ELF file");
    let phoff = u64_at(0x20).context("short ELF header")? as usize;
    let phentsize = usize::from(u16_at(0x36).context("short ELF header")?);
    let phnum = usize::from(u16_at(0x38).context("short ELF header")?);
    ensure!(
        phentsize >= 56,
        "program header entries of {phentsize} bytes"
    );
    for i in 0..phnum {
        let ph = phoff + i * phentsize;
        if u32_at(ph) != Some(4) {
            continue; // not PT_NOTE
        }
        let off = u64_at(ph + 8).context("short program header")? as usize;
        let size = u64_at(ph + 32).context("short program header")? as usize;
        let notes = elf
            .get(off..off + size)
            .context("PT_NOTE segment outside the file")?;
        let mut at = 0;
        while at + 12 <= notes.len() {
            let word = |o: usize| {
                u32::from_le_bytes([notes[o], notes[o + 1], notes[o + 2], notes[o + 3]]) as usize
            };
            let (namesz, descsz, kind) = (word(at), word(at + 4), word(at + 8) as u32);
            let name_at = at + 12;
            let desc_at = name_at + namesz.next_multiple_of(4);
            let next = desc_at + descsz.next_multiple_of(4);
            let name = notes.get(name_at..name_at + namesz).unwrap_or_default();
            let desc = notes.get(desc_at..desc_at + descsz).unwrap_or_default();
            if name == b"Xen\0" && kind == XEN_ELFNOTE_PHYS32_ENTRY {
                let entry = match desc.len() {
                    4 => u64::from(u32::from_le_bytes([desc[0], desc[1], desc[2], desc[3]])),
                    8 => {
                        let mut a = [0u8; 8];
                        a.copy_from_slice(desc);
                        u64::from_le_bytes(a)
                    }
                    n => bail!("the PVH entry note has a {n}-byte value"),
                };
                ensure!(
                    entry != 0 && entry <= u64::from(u32::MAX),
                    "the PVH entry point {entry:#x} is not a 32-bit physical address"
                );
                return Ok(entry);
            }
            at = next;
        }
    }
    bail!(
        "the kernel has no PVH entry: no Xen ELF note of type {XEN_ELFNOTE_PHYS32_ENTRY} \
         (XEN_ELFNOTE_PHYS32_ENTRY; the kernel needs CONFIG_PVH=y)"
    )
}

/// The guest initramfs: `/init`, `/dev/console`, the modules under
/// `/lib/modules/<release>/` and their list, in load order.
pub fn initramfs(
    init: Vec<u8>,
    release: &str,
    list: &[String],
    modules: Vec<(String, Vec<u8>)>,
) -> Result<Vec<u8>> {
    let mut a = image::cpio::Archive::new(0);
    for d in ["dev", "proc", "sys"] {
        a.dir(d, 0o755)?;
    }
    a.char_dev("dev/console", 0o600, 5, 1)?;
    a.file("init", 0o755, init)?;
    a.file(
        MODULE_LIST,
        0o644,
        image::modules::render_list(list).into_bytes(),
    )?;
    for (rel, data) in modules {
        a.file(&format!("lib/modules/{release}/{rel}"), 0o644, data)?;
    }
    let bytes = a.to_bytes()?;
    let members = image::cpio::read(&bytes).map_err(|e| anyhow::anyhow!("initramfs: {e}"))?;
    ensure!(
        members.iter().any(|m| m.path == "init" && m.is_file()),
        "the initramfs has no /init"
    );
    Ok(bytes)
}

/// Writes the ISO with xorriso and checks its volume id.
fn make_iso(a: &GuestAssets) -> Result<()> {
    let tmp = a.iso.with_extension("partial");
    crate::make_data_iso(
        &tmp,
        GUEST_LABEL,
        &[
            ("vmlinuz", &a.vmlinuz),
            ("vmlinux", &a.vmlinux),
            ("initrd.img", &a.initrd),
        ],
    )?;
    let head = read_head(&tmp)?;
    let id = image::iso::volume_id(&head);
    ensure!(
        id.as_deref() == Some(GUEST_LABEL),
        "{} has volume id {id:?}, expected {GUEST_LABEL}",
        tmp.display()
    );
    fs::rename(&tmp, &a.iso).with_context(|| format!("renaming to {}", a.iso.display()))
}

/// How a direct QEMU boot of a guest ended.
#[derive(Debug)]
pub struct GuestRun {
    /// QEMU's exit status.
    pub status: ExitStatus,
    /// The guest's serial console.
    pub console: String,
    /// From QEMU's start to its exit.
    pub elapsed: Duration,
    /// From QEMU's start to the console showing the marker of
    /// [`boot_direct_press_power`], if one was given and seen.
    pub marker_at: Option<Duration>,
}

impl GuestRun {
    /// The `OXBOW-GUEST` lines, without the prefix.
    pub fn lines(&self) -> Vec<&str> {
        guest_lines(&self.console)
    }
}

/// The `OXBOW-GUEST` lines of a console, without the prefix.
pub fn guest_lines(console: &str) -> Vec<&str> {
    console
        .lines()
        .filter_map(|l| {
            l.split_once("OXBOW-GUEST ")
                .map(|(_, rest)| rest.trim_end())
        })
        .collect()
}

/// The console with init's status lines taken out of the middle of other
/// lines, for [`guest_lines`] of a nested guest's console. Its UART reaches the appliance's console a byte at
/// a time, so init's line (one write: `oxbow: ...\n`) can land inside one
/// of the guest's: `power-buoxbow: [ ok ] ...\ntton`.
pub fn unsplice_init_lines(console: &str) -> String {
    let mut out = String::with_capacity(console.len());
    let mut rest = console;
    while let Some(i) = rest.find("oxbow: ") {
        let at_line_start = i == 0 || rest[..i].ends_with('\n');
        let end = rest[i..].find('\n').map_or(rest.len(), |n| i + n + 1);
        if at_line_start {
            out.push_str(&rest[..end]);
        } else {
            out.push_str(&rest[..i]);
        }
        rest = &rest[end..];
    }
    out.push_str(rest);
    out
}

/// Boots `kernel` and `initrd` directly under the host's QEMU with
/// `append`, the serial console in a file, `extra` arguments (disks,
/// NICs), `-no-reboot`, and kills QEMU after `timeout`.
pub fn boot_direct(
    kernel: &Path,
    initrd: &Path,
    append: &str,
    extra: &[String],
    timeout: Duration,
) -> Result<GuestRun> {
    run_direct(kernel, initrd, append, extra, None, timeout)
}

/// Like [`boot_direct`] with 512 MiB, but once the console shows
/// `marker` it presses the ACPI power button (QMP `system_powerdown`) and
/// waits for QEMU to exit. An error if the marker never shows.
pub fn boot_direct_press_power(
    kernel: &Path,
    initrd: &Path,
    append: &str,
    extra: &[String],
    marker: &str,
    timeout: Duration,
) -> Result<GuestRun> {
    let run = run_direct(kernel, initrd, append, extra, Some(marker), timeout)?;
    if run.marker_at.is_none() {
        bail!(
            "QEMU exited ({}) before the console showed {marker:?}; console:\n{}",
            run.status,
            run.console
        );
    }
    Ok(run)
}

fn run_direct(
    kernel: &Path,
    initrd: &Path,
    append: &str,
    extra: &[String],
    press_power_at: Option<&str>,
    timeout: Duration,
) -> Result<GuestRun> {
    let dir = tempfile::Builder::new().prefix("oxbow-guest-").tempdir()?;
    let serial = dir.path().join("serial.log");
    let qmp = dir.path().join("qmp.sock");
    let memory = if press_power_at.is_some() {
        "512"
    } else {
        "256"
    };
    let mut child = Command::new("qemu-system-x86_64")
        .args(crate::accel_args())
        .args([
            "-m",
            memory,
            "-smp",
            "2",
            "-display",
            "none",
            "-no-reboot",
            "-nodefaults",
        ])
        .arg("-serial")
        .arg(format!("file:{}", serial.display()))
        .arg("-qmp")
        .arg(format!("unix:{},server=on,wait=off", qmp.display()))
        .arg("-kernel")
        .arg(kernel)
        .arg("-initrd")
        .arg(initrd)
        .arg("-append")
        .arg(append)
        .args(extra)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .context("starting qemu-system-x86_64 (apt-get install qemu-system-x86)")?;
    let start = Instant::now();
    let console = || String::from_utf8_lossy(&fs::read(&serial).unwrap_or_default()).into_owned();
    let mut marker_at = None;
    loop {
        if let Some(status) = child.try_wait()? {
            let mut err = String::new();
            if let Some(mut e) = child.stderr.take() {
                let _ = e.read_to_string(&mut err);
            }
            if !err.trim().is_empty() {
                eprintln!("QEMU stderr: {}", err.trim());
            }
            return Ok(GuestRun {
                status,
                console: console(),
                elapsed: start.elapsed(),
                marker_at,
            });
        }
        if let (Some(marker), None) = (press_power_at, marker_at) {
            if console().contains(marker) {
                marker_at = Some(start.elapsed());
                if let Err(e) = crate::qmp_execute(&qmp, "system_powerdown", serde_json::json!({}))
                {
                    let _ = child.kill();
                    let _ = child.wait();
                    bail!("pressing the power button: {e:#}; console:\n{}", console());
                }
            }
        }
        if start.elapsed() > timeout {
            let _ = child.kill();
            let _ = child.wait();
            bail!(
                "QEMU did not exit within {timeout:?}; console:\n{}",
                console()
            );
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A minimal x86-64 ELF with one PT_NOTE segment holding `notes`.
    fn elf_with_notes(notes: &[u8]) -> Vec<u8> {
        let mut e = vec![0u8; 64 + 56];
        e[..4].copy_from_slice(b"\x7fELF");
        e[4] = 2; // 64-bit
        e[5] = 1; // little endian
        e[6] = 1;
        e[0x10..0x12].copy_from_slice(&2u16.to_le_bytes()); // ET_EXEC
        e[0x12..0x14].copy_from_slice(&62u16.to_le_bytes()); // x86-64
        e[0x20..0x28].copy_from_slice(&64u64.to_le_bytes()); // e_phoff
        e[0x36..0x38].copy_from_slice(&56u16.to_le_bytes()); // e_phentsize
        e[0x38..0x3a].copy_from_slice(&1u16.to_le_bytes()); // e_phnum
        let ph = 64;
        e[ph..ph + 4].copy_from_slice(&4u32.to_le_bytes()); // PT_NOTE
        e[ph + 8..ph + 16].copy_from_slice(&120u64.to_le_bytes()); // p_offset
        e[ph + 32..ph + 40].copy_from_slice(&(notes.len() as u64).to_le_bytes()); // p_filesz
        e.extend_from_slice(notes);
        e
    }

    fn note(name: &[u8], kind: u32, desc: &[u8]) -> Vec<u8> {
        let mut n = Vec::new();
        n.extend_from_slice(&(name.len() as u32).to_le_bytes());
        n.extend_from_slice(&(desc.len() as u32).to_le_bytes());
        n.extend_from_slice(&kind.to_le_bytes());
        n.extend_from_slice(name);
        n.resize(n.len().next_multiple_of(4), 0);
        n.extend_from_slice(desc);
        n.resize(n.len().next_multiple_of(4), 0);
        n
    }

    #[test]
    fn finds_the_pvh_note_after_other_notes() {
        let mut notes = note(b"GNU\0", 3, &[1, 2, 3, 4, 5]);
        notes.extend(note(b"Xen\0", 6, b"linux\0"));
        notes.extend(note(
            b"Xen\0",
            XEN_ELFNOTE_PHYS32_ENTRY,
            &0x0100_0230u64.to_le_bytes(),
        ));
        assert_eq!(pvh_entry(&elf_with_notes(&notes)).unwrap(), 0x0100_0230);
        let four = note(
            b"Xen\0",
            XEN_ELFNOTE_PHYS32_ENTRY,
            &0x0200_0000u32.to_le_bytes(),
        );
        assert_eq!(pvh_entry(&elf_with_notes(&four)).unwrap(), 0x0200_0000);
    }

    #[test]
    fn no_pvh_note_is_an_error() {
        let notes = note(b"Xen\0", 6, b"linux\0");
        let err = pvh_entry(&elf_with_notes(&notes)).unwrap_err().to_string();
        assert!(err.contains("XEN_ELFNOTE_PHYS32_ENTRY"), "{err}");
        // Type 18 under another owner is not the PVH note.
        let other = note(b"GNU\0", XEN_ELFNOTE_PHYS32_ENTRY, &1u32.to_le_bytes());
        assert!(pvh_entry(&elf_with_notes(&other)).is_err());
        assert!(pvh_entry(b"MZ not an elf").is_err());
    }

    /// A bzImage-shaped buffer: a header naming `payload` after 4 setup sectors.
    fn bzimage(payload: &[u8]) -> Vec<u8> {
        let mut bz = vec![0u8; 5 * 512];
        bz[0x1f1] = 4;
        bz[0x202..0x206].copy_from_slice(b"HdrS");
        bz[0x206..0x208].copy_from_slice(&0x020fu16.to_le_bytes());
        bz.extend_from_slice(&[0xcc; 100]); // decompressor code
        bz[0x248..0x24c].copy_from_slice(&100u32.to_le_bytes());
        bz[0x24c..0x250].copy_from_slice(&(payload.len() as u32).to_le_bytes());
        bz.extend_from_slice(payload);
        bz.extend_from_slice(&[0xee; 64]); // what follows the payload
        bz
    }

    #[test]
    fn extracts_an_xz_payload_and_checks_its_size() {
        let elf = elf_with_notes(&note(
            b"Xen\0",
            XEN_ELFNOTE_PHYS32_ENTRY,
            &0x0100_0000u32.to_le_bytes(),
        ));
        let mut child = Command::new("xz")
            .args(["-c", "--check=crc32"])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .expect("xz (apt-get install xz-utils)");
        std::io::Write::write_all(&mut child.stdin.take().unwrap(), &elf).unwrap();
        let mut payload = child.wait_with_output().unwrap().stdout;
        payload.extend_from_slice(&(elf.len() as u32).to_le_bytes());
        let bz = bzimage(&payload);
        assert_eq!(bzimage_payload(&bz).unwrap().0, "xz");
        let got = extract_vmlinux(&bz).unwrap();
        assert_eq!(got, elf);
        assert_eq!(pvh_entry(&got).unwrap(), 0x0100_0000);

        // A wrong size trailer is caught.
        let n = payload.len();
        payload[n - 4..].copy_from_slice(&1u32.to_le_bytes());
        let err = extract_vmlinux(&bzimage(&payload)).unwrap_err().to_string();
        assert!(err.contains("says 1"), "{err}");
    }

    #[test]
    fn rejects_what_is_not_a_bzimage() {
        assert!(bzimage_payload(&[0u8; 4096]).is_err());
        let err = bzimage_payload(&bzimage(b"BZh91AY&SY"))
            .unwrap_err()
            .to_string();
        assert!(err.contains("other than xz"), "{err}");
    }

    #[test]
    fn initramfs_layout() {
        let list = vec!["kernel/drivers/virtio/virtio.ko".to_owned()];
        let files = vec![(list[0].clone(), b"\x7fELF module".to_vec())];
        let bytes = initramfs(b"\x7fELF init".to_vec(), "6.1.0-9-amd64", &list, files).unwrap();
        let members = image::cpio::read(&bytes).unwrap();
        let get = |p: &str| members.iter().find(|m| m.path == p).unwrap();
        assert_eq!(get("init").mode & 0o777, 0o755);
        assert_eq!(get(MODULE_LIST).data, b"kernel/drivers/virtio/virtio.ko\n");
        assert_eq!(
            get("lib/modules/6.1.0-9-amd64/kernel/drivers/virtio/virtio.ko").data,
            b"\x7fELF module"
        );
        let console = get("dev/console");
        assert!(console.is_char_dev());
        assert_eq!((console.rdevmajor, console.rdevminor), (5, 1));
    }

    #[test]
    fn guest_lines_are_parsed() {
        let c =
            "[    0.5] foo\r\nOXBOW-GUEST start\r\nnoise OXBOW-GUEST cpus=2\nOXBOW-GUEST done\n";
        assert_eq!(guest_lines(c), ["start", "cpus=2", "done"]);
        let spliced = "OXBOW-GUEST power-buoxbow: [ ok ] ctl exited with status 0\ntton\n\
                       oxbow: a line of its own\nOXBOW-GUEST done\n";
        assert_eq!(
            guest_lines(&unsplice_init_lines(spliced)),
            ["power-button", "done"]
        );
        assert_eq!(
            unsplice_init_lines(spliced),
            "OXBOW-GUEST power-button\noxbow: a line of its own\nOXBOW-GUEST done\n"
        );
    }
}
