//! The Debian guest image: a full Debian 12 system (systemd, udev, D-Bus,
//! a getty on the serial console) on an ext4 file system in a raw image,
//! `debian.raw`, which the guest initramfs mounts with
//! `oxbow.root=/dev/vda` before it hands over to systemd.
//!
//! [`build`] makes it without mounting anything:
//!
//! 1. `debootstrap --variant=minbase --include=`[`PACKAGES`] `bookworm`,
//!    cached in the same directory as the ISO's system image base
//!    (`target/cache/rootfs-<key>`, keyed by suite, variant, mirror and
//!    package set; see `image::rootfs::debootstrap_packages`);
//! 2. a copy of it, stripped like the system image (documentation,
//!    manuals, locales, apt's lists and downloaded packages), with the
//!    files of [`config_files`]: host name [`HOSTNAME`], `/etc/hosts`,
//!    `/etc/fstab` mounting `/dev/vda` on `/`, and an empty
//!    `/etc/machine-id` (each boot gets a fresh one, and it is not a
//!    first boot);
//! 3. `mkfs.ext4 -d` of that tree into a sparse raw file of
//!    [`IMAGE_MIB`] MiB labelled [`ROOT_LABEL`], read back with `debugfs`.
//!
//! root keeps debootstrap's locked password: nobody can log in, which the
//! tests do not need (they wait for the `login:` prompt). A stamp beside
//! the image records its inputs; when they are unchanged nothing is done.
//!
//! [`DebianOptions::extra_packages`] and [`DebianOptions::name`] make
//! variants of the same image: `debian-bench.raw` ([`BENCH_NAME`], `make
//! guest-debian-bench`) adds [`BENCH_PACKAGES`] (fio, iperf3 and iproute2)
//! for `bench-vmm-io`, whose guest side is [`IO_BENCH_INIT`], a script in
//! every variant that runs only when the command line names it as init.

use std::fs::{self, File};
use std::io::Read;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{bail, ensure, Context, Result};

/// The file system label of the root file system.
pub const ROOT_LABEL: &str = "oxbow-root";
/// The guest's host name.
pub const HOSTNAME: &str = "oxbow-guest";
/// Packages added to debootstrap's minimal base: systemd as init (with
/// logind, which powers off on the ACPI power button), udev (which tags
/// the serial port for its getty and the button for logind) and the D-Bus
/// system bus logind needs. `login` and `agetty` are in the base already.
pub const PACKAGES: &[&str] = &["systemd-sysv", "udev", "dbus"];
/// Size of the raw image (sparse: only what the files use is allocated).
pub const IMAGE_MIB: u64 = 1024;
/// The image's name (file `<name>.raw`, stamp `<name>.stamp`) in the guest
/// asset directory.
pub const NAME: &str = "debian";
/// The image's file name in the guest asset directory.
pub const IMAGE_NAME: &str = "debian.raw";
/// The benchmark variant's name (`debian-bench.raw`).
pub const BENCH_NAME: &str = "debian-bench";
/// What the benchmark variant adds: the I/O benchmarks' tools and `ip` to
/// address the NIC (debootstrap's minimal base has no iproute2).
pub const BENCH_PACKAGES: &[&str] = &["fio", "iperf3", "iproute2"];
/// The guest side of `bench-vmm-io`, executed as PID 1 by the guest
/// initramfs with `oxbow.init=` this path.
pub const IO_BENCH_INIT: &str = "/usr/local/sbin/oxbow-io-bench";

/// The script at [`IO_BENCH_INIT`]. Parameters come from the kernel
/// command line: `oxbow.bench.secs` (seconds per run), `oxbow.bench.ip`
/// (the NIC's address/prefix), `oxbow.bench.peer` (the iperf3 server),
/// `oxbow.bench.disk` (the data disk, read-only) and `oxbow.bench.mode`.
/// It prints `OXBOW-IO start` and addresses the NIC. With
/// `oxbow.bench.mode=serve` it then prints `OXBOW-IO info` lines (clock
/// source, CPU flags, CPU vulnerability mitigations, the kernel's KVM
/// messages), runs an iperf3 server, prints `OXBOW-IO serving` and waits
/// to be stopped (the host is the client).
/// Otherwise it prints one `OXBOW-IO {json}` line (4 KiB random read IOPS
/// and 1 MiB sequential read KiB/s from fio's terse output, guest-to-host
/// and host-to-guest Mbit/s from iperf3's receiver summary), or `OXBOW-IO
/// fail <why>`, and powers off through sysrq. Around the iperf3 runs it
/// also prints `OXBOW-IO stat <when> <vector>=<interrupts>... rx_bytes=…
/// rx_packets=… tx_bytes=… tx_packets=…` (the NIC's interrupts from
/// `/proc/interrupts`, eth0's counters from `/proc/net/dev`).
const IO_BENCH_SCRIPT: &str = r#"#!/bin/sh
# bench-vmm-io's guest side (qemu-tests/src/guest/debian.rs), run as PID 1
# by the guest initramfs: fio on the data disk, iperf3 against the host.
export PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin
mount -t tmpfs -o size=64m tmpfs /tmp
mount -t tmpfs -o size=16m tmpfs /run
arg() { for w in $(cat /proc/cmdline); do case "$w" in "$1"=*) echo "${w#*=}";; esac; done; }
# The pause lets the console drain the last line before the kernel's own
# power-off message, which would otherwise land inside it.
off() { sync; sleep 1; echo o >/proc/sysrq-trigger; sleep 60; }
# Messages go to stderr, the console, also from inside $(...).
fail() { echo "OXBOW-IO fail $*" >&2; off; }
secs=$(arg oxbow.bench.secs); ip=$(arg oxbow.bench.ip)
peer=$(arg oxbow.bench.peer); disk=$(arg oxbow.bench.disk)
echo "OXBOW-IO start"
ip link set lo up && ip link set eth0 up && ip addr add "$ip" dev eth0 || fail network
# Serving: an iperf3 server for the host to run against, until the VMM is
# stopped (bench-vmm-io --interleaved: several guests up at once).
if [ "$(arg oxbow.bench.mode)" = serve ]; then
    # What the guest made of its machine: CPU flags, clock source,
    # mitigations (they differ between VMMs when CPUID does).
    {
        echo "OXBOW-IO info clocksource $(cat /sys/devices/system/clocksource/clocksource0/current_clocksource)"
        echo "OXBOW-IO info flags $(grep -m1 '^flags' /proc/cpuinfo | cut -d: -f2)"
        for f in /sys/devices/system/cpu/vulnerabilities/*; do
            echo "OXBOW-IO info vuln ${f##*/}: $(cat "$f")"
        done
        dmesg | grep -i 'kvm' | sed 's/^/OXBOW-IO info dmesg /'
    } >&2
    iperf3 -s -D || fail "iperf3 -s"
    echo "OXBOW-IO serving" >&2
    while :; do sleep 3600; done
fi
# fio NAME RW BS DEPTH: prints "KiB/s IOPS" of the reads.
fio_run() {
    fio --name="$1" --filename="$disk" --readonly --direct=1 --ioengine=libaio \
        --rw="$2" --bs="$3" --iodepth="$4" --time_based --runtime="$secs" \
        --ramp_time=1 --output-format=terse --terse-version=3 >/tmp/fio.out 2>&1 \
        || { cat /tmp/fio.out >&2; fail "fio $1"; }
    awk -F';' 'NF > 8 {print $7, $8}' /tmp/fio.out
}
# iperf ARGS: prints the receiver's Mbit/s.
iperf_run() {
    for try in 1 2 3 4 5; do
        iperf3 -c "$peer" -t "$secs" -O 1 -f m "$@" >/tmp/iperf.out 2>&1 && break
        cat /tmp/iperf.out >&2
        sleep 2
    done
    awk '/receiver/ {for (i = 2; i <= NF; i++) if ($i == "Mbits/sec") v = $(i - 1)}
         END {print v + 0}' /tmp/iperf.out
}
set -- $(fio_run randread randread 4k 32); rr_iops=$2
set -- $(fio_run seqread read 1M 8); sr_kib=$1
# The NIC's interrupts (each of its queues' virtio MSI-X vectors, input
# and output) and eth0's packet and byte counters, before and after
# an iperf3 run: what a run cost the guest, as `OXBOW-IO stat` lines.
nic_stat() {
    irqs=$(awk '/virtio[0-9]+-(input|output)/ {n = 0; for (i = 2; i <= NF; i++) if ($i ~ /^[0-9]+$/) n += $i; else break; printf "%s=%d ", $NF, n}' /proc/interrupts)
    echo "OXBOW-IO stat $1 $irqs$(awk '/eth0:/ {sub(/.*eth0:/, ""); print "rx_bytes=" $1, "rx_packets=" $2, "tx_bytes=" $9, "tx_packets=" $10}' /proc/net/dev)" >&2
}
nic_stat before-tx
tx=$(iperf_run)
nic_stat after-tx
rx=$(iperf_run -R)
nic_stat after-rx
printf 'OXBOW-IO {"randread_iops":%s,"seqread_kib_s":%s,"tx_mbit_s":%s,"rx_mbit_s":%s}\n' \
    "${rr_iops:-0}" "${sr_kib:-0}" "${tx:-0}" "${rx:-0}"
off
"#;

/// Removed besides what `image::rootfs::strip` removes: apt's package
/// caches (rebuilt by apt when needed), state that must differ between
/// machines, and two units' enablement: the reaper of e2scrub's LVM
/// snapshots (there is no LVM; it costs 10 s of a nested boot) and the
/// getty on `tty1` (the VMM has no display or keyboard).
const STRIP: &[&str] = &[
    "var/cache/apt/pkgcache.bin",
    "var/cache/apt/srcpkgcache.bin",
    "var/lib/systemd/random-seed",
    "etc/systemd/system/multi-user.target.wants/e2scrub_reap.service",
    "etc/systemd/system/getty.target.wants/getty@tty1.service",
];
/// Bump when the way the image is made changes, to force a rebuild.
const FORMAT: u32 = 1;

/// The files written over the debootstrap result: path inside the root,
/// permission bits, contents.
pub fn config_files() -> Vec<(&'static str, u32, String)> {
    vec![
        ("etc/hostname", 0o644, format!("{HOSTNAME}\n")),
        (
            "etc/hosts",
            0o644,
            format!(
                "127.0.0.1\tlocalhost\n127.0.1.1\t{HOSTNAME}\n\
                 ::1\t\tlocalhost ip6-localhost ip6-loopback\n"
            ),
        ),
        // The initramfs mounts the root read-write; a fresh image needs no
        // fsck at every boot (pass 0).
        (
            "etc/fstab",
            0o644,
            "# <file system> <mount point> <type> <options> <dump> <pass>\n\
             /dev/vda / ext4 rw,errors=remount-ro 0 0\n"
                .to_string(),
        ),
        ("etc/machine-id", 0o444, String::new()),
        // logind handles the ACPI power button; it starts in parallel with
        // the gettys and, nested, may come up many seconds after the
        // prompt. Showing the prompt only once logind runs makes
        // `login:` mean "the button works now".
        (
            "etc/systemd/system/serial-getty@.service.d/after-logind.conf",
            0o644,
            "[Unit]\nAfter=systemd-logind.service\n".to_string(),
        ),
        // The journal in memory: the disk is a throw-away snapshot in the
        // tests, and every write is slow when nested.
        (
            "etc/systemd/journald.conf.d/volatile.conf",
            0o644,
            "[Journal]\nStorage=volatile\n".to_string(),
        ),
        (
            IO_BENCH_INIT.trim_start_matches('/'),
            0o755,
            IO_BENCH_SCRIPT.to_string(),
        ),
    ]
}

/// The image path in `dir`.
pub fn image_in(dir: &Path) -> PathBuf {
    dir.join(IMAGE_NAME)
}

/// The built image in the default guest asset directory; an error naming
/// `make guest-debian` if it is missing.
pub fn locate() -> Result<PathBuf> {
    locate_named(NAME, "guest-debian")
}

/// The built benchmark variant (`debian-bench.raw`); an error naming
/// `make guest-debian-bench` if it is missing.
pub fn locate_bench() -> Result<PathBuf> {
    locate_named(BENCH_NAME, "guest-debian-bench")
}

fn locate_named(name: &str, target: &str) -> Result<PathBuf> {
    let p = super::GuestAssets::default_dir().join(format!("{name}.raw"));
    if !p.is_file() {
        bail!(
            "{} is missing: build it with `make {target}` (needs root)",
            p.display()
        );
    }
    Ok(p)
}

/// What [`build`] needs.
#[derive(Debug, Clone)]
pub struct DebianOptions {
    /// The output directory (`target/guest`).
    pub out: PathBuf,
    /// The debootstrap cache shared with `oxbow-image` (`target/cache`).
    pub cache: PathBuf,
    /// The image's name: it is written to `<out>/<name>.raw`, with its
    /// stamp in `<out>/<name>.stamp` ([`NAME`] for `debian.raw`).
    pub name: String,
    /// Debian packages installed besides [`PACKAGES`].
    pub extra_packages: Vec<String>,
}

impl DebianOptions {
    /// `debian.raw`: [`PACKAGES`] only.
    pub fn standard(out: PathBuf, cache: PathBuf) -> DebianOptions {
        DebianOptions {
            out,
            cache,
            name: NAME.to_string(),
            extra_packages: Vec::new(),
        }
    }

    /// Every package the image gets: [`PACKAGES`], then the extra ones.
    pub fn packages(&self) -> Vec<&str> {
        let mut p: Vec<&str> = PACKAGES.to_vec();
        for x in &self.extra_packages {
            if !p.contains(&x.as_str()) {
                p.push(x);
            }
        }
        p
    }
}

/// What [`build`] did.
#[derive(Debug, Clone)]
pub struct DebianReport {
    /// The raw image.
    pub image: PathBuf,
    /// True if the stamp matched and nothing was rebuilt.
    pub up_to_date: bool,
    /// Debian packages installed in the image.
    pub packages: usize,
    /// Bytes of the regular files in the root (0 when up to date).
    pub tree_bytes: u64,
    /// The image's size.
    pub image_bytes: u64,
    /// Bytes the sparse image occupies on disk.
    pub allocated_bytes: u64,
}

/// Builds the image, or leaves it if the stamp says it is current.
pub fn build(opts: &DebianOptions) -> Result<DebianReport> {
    ensure!(
        !opts.name.is_empty()
            && opts
                .name
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_'),
        "image name {:?}: letters, digits, '-' and '_' only",
        opts.name
    );
    let image = opts.out.join(format!("{}.raw", opts.name));
    let packages_list = opts.packages();
    let base = image::rootfs::debootstrap_packages(&opts.cache, &packages_list)
        .context("debootstrap of the Debian guest (needs root)")?;
    let status = fs::read(base.join("var/lib/dpkg/status"))
        .with_context(|| format!("reading {}/var/lib/dpkg/status", base.display()))?;
    let packages = count_installed(&String::from_utf8_lossy(&status));
    let mut config: String = config_files()
        .iter()
        .map(|(p, m, c)| format!("{p} {m:o} {c:?}\n"))
        .collect();
    config.push_str(&STRIP.join(" "));
    let stamp = format!(
        "format {FORMAT}\nsuite {}\nbase {}\ndpkg-status {:016x}\npackages {}\n\
         label {ROOT_LABEL}\nsize-mib {IMAGE_MIB}\nconfig {:016x}\n",
        image::rootfs::SUITE,
        base.file_name().unwrap_or_default().to_string_lossy(),
        super::fnv1a(&status),
        packages_list.join(" "),
        super::fnv1a(config.as_bytes()),
    );
    let stamp_path = opts.out.join(format!("{}.stamp", opts.name));
    if fs::read_to_string(&stamp_path).is_ok_and(|s| s == stamp) && image.is_file() {
        let m = fs::metadata(&image)?;
        return Ok(DebianReport {
            image,
            up_to_date: true,
            packages,
            tree_bytes: 0,
            image_bytes: m.len(),
            allocated_bytes: m.blocks() * 512,
        });
    }
    fs::create_dir_all(&opts.out).with_context(|| format!("creating {}", opts.out.display()))?;
    let _ = fs::remove_file(&stamp_path);

    let staging = opts.out.join(format!(".{}-root.partial", opts.name));
    image::rootfs::stage(&base, &staging)?;
    image::rootfs::strip(&staging)?;
    for rel in STRIP {
        image::fsutil::remove(&image::fsutil::entry_in_root(&staging, rel)?)?;
    }
    for (path, mode, contents) in config_files() {
        image::fsutil::write_in_root(&staging, path, contents.as_bytes(), mode)?;
    }
    let tree_bytes = image::fsutil::tree_size(&staging)?;
    ensure!(
        tree_bytes < IMAGE_MIB * (1 << 20) * 3 / 4,
        "the guest root holds {} MiB, too much for a {IMAGE_MIB} MiB image",
        tree_bytes >> 20
    );

    let tmp = image.with_extension("partial");
    let _ = fs::remove_file(&tmp);
    let out = Command::new("mkfs.ext4")
        .args(["-q", "-F", "-L", ROOT_LABEL, "-d"])
        .arg(&staging)
        .arg(&tmp)
        .arg(format!("{IMAGE_MIB}M"))
        .output()
        .context("running mkfs.ext4 (apt-get install e2fsprogs)")?;
    if !out.status.success() {
        bail!(
            "mkfs.ext4 -d {} failed: {}",
            staging.display(),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let label = ext4_label(&read_superblock(&tmp)?);
    ensure!(
        label.as_deref() == Some(ROOT_LABEL),
        "{} has ext4 label {label:?}, expected {ROOT_LABEL}",
        tmp.display()
    );
    let hostname = debugfs_cat(&tmp, "/etc/hostname")?;
    ensure!(
        hostname.trim() == HOSTNAME,
        "/etc/hostname in {} reads {hostname:?}",
        tmp.display()
    );
    fs::rename(&tmp, &image).with_context(|| format!("renaming to {}", image.display()))?;
    image::rootfs::clear_scratch(&staging)?;
    super::write_atomic(&stamp_path, stamp.as_bytes())?;
    let m = fs::metadata(&image)?;
    Ok(DebianReport {
        image,
        up_to_date: false,
        packages,
        tree_bytes,
        image_bytes: m.len(),
        allocated_bytes: m.blocks() * 512,
    })
}

/// The number of installed packages in a dpkg status file.
pub fn count_installed(status: &str) -> usize {
    status
        .lines()
        .filter(|l| *l == "Status: install ok installed")
        .count()
}

/// The first 2 KiB of a file: enough for the ext4 superblock.
pub fn read_superblock(path: &Path) -> Result<Vec<u8>> {
    let mut buf = Vec::new();
    File::open(path)
        .and_then(|f| f.take(2048).read_to_end(&mut buf))
        .with_context(|| format!("reading {}", path.display()))?;
    Ok(buf)
}

/// The volume label of an ext2/3/4 file system from its first 2 KiB
/// (the superblock is at 1024: magic `0xEF53` at +0x38, the 16-byte
/// `s_volume_name` at +0x78); `None` if it is not one.
pub fn ext4_label(head: &[u8]) -> Option<String> {
    let sb = head.get(1024..2048)?;
    if sb[0x38..0x3a] != 0xef53u16.to_le_bytes() {
        return None;
    }
    let name = &sb[0x78..0x88];
    let end = name.iter().position(|&b| b == 0).unwrap_or(name.len());
    Some(String::from_utf8_lossy(&name[..end]).into_owned())
}

/// A file's contents inside an ext4 image, read with `debugfs` (nothing
/// is mounted).
pub fn debugfs_cat(image: &Path, path: &str) -> Result<String> {
    let out = Command::new("debugfs")
        .arg("-R")
        .arg(format!("cat {path}"))
        .arg(image)
        .output()
        .context("running debugfs (apt-get install e2fsprogs)")?;
    ensure!(
        out.status.success(),
        "debugfs cat {path}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn label_from_superblock() {
        let mut head = vec![0u8; 2048];
        assert_eq!(ext4_label(&head), None);
        head[1024 + 0x38..1024 + 0x3a].copy_from_slice(&0xef53u16.to_le_bytes());
        head[1024 + 0x78..1024 + 0x78 + 10].copy_from_slice(b"oxbow-root");
        assert_eq!(ext4_label(&head).as_deref(), Some("oxbow-root"));
        head[1024 + 0x78..1024 + 0x88].copy_from_slice(b"0123456789abcdef");
        assert_eq!(ext4_label(&head).as_deref(), Some("0123456789abcdef"));
        assert_eq!(ext4_label(&head[..1500]), None);
    }

    #[test]
    fn config_mounts_vda_and_names_the_host() {
        let files = config_files();
        let get = |p: &str| &files.iter().find(|(q, _, _)| *q == p).unwrap().2;
        assert!(get("etc/fstab")
            .lines()
            .any(|l| l.split_whitespace().take(3).eq(["/dev/vda", "/", "ext4"])));
        assert_eq!(get("etc/hostname"), "oxbow-guest\n");
        assert!(get("etc/hosts").contains("oxbow-guest"));
        assert_eq!(get("etc/machine-id"), "");
    }

    #[test]
    fn installed_packages_are_counted() {
        let status = "Package: a\nStatus: install ok installed\n\n\
                      Package: b\nStatus: deinstall ok config-files\n\n\
                      Package: c\nStatus: install ok installed\n";
        assert_eq!(count_installed(status), 2);
    }
}
