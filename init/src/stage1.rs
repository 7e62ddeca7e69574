//! Stage 1: from the initramfs to the system image.
//!
//! 1. Mount `/proc`, `/sys`, `/dev` (devtmpfs) and `/run`, and reopen the
//!    console on the new `/dev`.
//! 2. Load the drivers of the hardware present (coldplug, see
//!    [`crate::modules`]) and the filesystems below, until the block device
//!    whose ISO9660 label is `oxbow.label` (default `OXBOW`) shows up; after
//!    10 s without it, load every module of `/etc/oxbow/modules.list`.
//! 3. Mount the medium read-only.
//! 4. Attach `oxbow/system.sfs` to a loop device, mount it read-only, and put
//!    a tmpfs-backed overlay over it on `/newroot`.
//! 5. Move the pseudo filesystems into the new root, switch root, and go on
//!    as stage 2 in this same process when `/sbin/init` is this same build
//!    (as the image makes it); else exec `/sbin/init`.

use std::ffi::CString;
use std::fs::OpenOptions;
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use nix::mount::{mount, MsFlags};
use nix::unistd::{chdir, chroot, dup2, execv};

use crate::cmdline::KernelCmdline;
use crate::console::say;
use crate::seed::{find_by_label, FsKind};

/// Marker file present only in the initramfs.
pub const INITRAMFS_MARKER: &str = "/etc/oxbow/initramfs";
const MEDIUM: &str = "/run/oxbow/medium";
const LOWER: &str = "/run/oxbow/lower";
const RW: &str = "/run/oxbow/rw";
const NEWROOT: &str = "/newroot";

/// Errors of stage 1; each names the step that failed.
#[derive(Debug, thiserror::Error)]
pub enum Stage1Error {
    /// A mount failed.
    #[error("mount {what} on {target}: {source}")]
    Mount {
        /// What was mounted.
        what: String,
        /// Where.
        target: String,
        /// The cause.
        source: nix::Error,
    },
    /// The boot medium never appeared.
    #[error("no block device labelled {0} appeared within 60 s (is the ISO attached?)")]
    NoMedium(String),
    /// Another step failed.
    #[error("{0}")]
    Step(String),
}

fn mnt(
    src: Option<&str>,
    target: &str,
    fstype: Option<&str>,
    flags: MsFlags,
    data: Option<&str>,
) -> Result<(), Stage1Error> {
    std::fs::create_dir_all(target)
        .map_err(|e| Stage1Error::Step(format!("mkdir {target}: {e}")))?;
    mount(src, target, fstype, flags, data).map_err(|source| Stage1Error::Mount {
        what: src.or(fstype).unwrap_or("?").to_string(),
        target: target.to_string(),
        source,
    })
}

/// Mounts `/proc`, `/sys`, `/dev` and `/run` when they are not mounted yet.
pub fn mount_pseudo_filesystems() -> Result<(), Stage1Error> {
    let nosuid = MsFlags::MS_NOSUID | MsFlags::MS_NODEV | MsFlags::MS_NOEXEC;
    if !Path::new("/proc/self").exists() {
        mnt(Some("proc"), "/proc", Some("proc"), nosuid, None)?;
    }
    if !Path::new("/sys/kernel").exists() {
        mnt(Some("sysfs"), "/sys", Some("sysfs"), nosuid, None)?;
    }
    if !Path::new("/dev/null").exists() {
        mnt(
            Some("devtmpfs"),
            "/dev",
            Some("devtmpfs"),
            MsFlags::MS_NOSUID,
            Some("mode=0755"),
        )?;
    }
    if !is_mount_point("/run") {
        mnt(
            Some("tmpfs"),
            "/run",
            Some("tmpfs"),
            MsFlags::MS_NOSUID | MsFlags::MS_NODEV,
            Some("mode=0755"),
        )?;
    }
    Ok(())
}

/// Whether `path` is listed as a mount point in `/proc/self/mountinfo`.
pub fn is_mount_point(path: &str) -> bool {
    std::fs::read_to_string("/proc/self/mountinfo")
        .map(|t| t.lines().any(|l| l.split(' ').nth(4) == Some(path)))
        .unwrap_or(false)
}

/// Points standard input, output and error at `/dev/console`.
pub fn reopen_console() {
    if let Ok(c) = OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/console")
    {
        let fd = c.as_raw_fd();
        for target in 0..3 {
            let _ = dup2(fd, target);
        }
    }
}

/// Runs stage 1. Returns only on failure.
pub fn run() -> Stage1Error {
    match run_steps() {
        Ok(never) => match never {},
        Err(e) => e,
    }
}

/// Modules stage 1 always loads: the filesystems of the boot medium, the
/// system image and the root overlay, the CD driver, the power button, and
/// the bridge of the management network (loaded here while the disk
/// controllers probe, rather than later on the way to the network).
/// Drivers for the controllers come from coldplug.
const ALWAYS: &[&str] = &[
    "isofs", "squashfs", "loop", "sr_mod", "evdev", "button", "bridge",
];
/// Loaded once the medium is found, without `async_probe`: the kernel then
/// finishes every probe still running (the other ports of the disk
/// controllers) before the load returns, so the disks present at boot, a
/// seed volume among them, are all there for stage 2.
const LAST: &str = "overlay";
/// Module trees loaded with `async_probe` (see
/// [`crate::modules::load_params`]): disk controllers, whose probe (SATA
/// link detection, the SCSI scan) would otherwise hold up the loads and the
/// search for the medium until every port has been looked at.
const ASYNC_PROBE: &[&str] = &["kernel/drivers/ata/", "kernel/drivers/scsi/"];
/// How long coldplug alone may look for the boot medium before every module
/// of the list is loaded.
const COLDPLUG_GRACE: Duration = Duration::from_secs(10);
/// How long stage 1 waits for the boot medium in all.
const MEDIUM_TIMEOUT: Duration = Duration::from_secs(60);

/// Loads drivers until the medium labelled `label` shows up: first those
/// of the hardware present (coldplug, repeated as new devices appear), then,
/// if that is not enough, every module of the initramfs list.
///
/// The loads run on a thread of their own while this one looks for the
/// label every 20 ms: a module load can take long to return (the kernel
/// makes a driver loaded without `async_probe` wait for every probe still
/// running, the SATA links and the SCSI scan included), and the medium is
/// often there before it does.
fn find_medium(label: &str) -> Result<PathBuf, Stage1Error> {
    use std::sync::atomic::{AtomicBool, Ordering};
    let stop = AtomicBool::new(false);
    let (found, report) = std::thread::scope(|scope| {
        let plug = scope.spawn(|| coldplug_until(&stop));
        let start = Instant::now();
        let found = loop {
            if let Some((dev, FsKind::Iso9660)) = find_by_label(label) {
                // Said now, not after the loads below: when the medium
                // appeared, apart from what finishing the loads takes.
                say(format_args!("boot medium {label} is {}", dev.display()));
                break Ok(dev);
            }
            if start.elapsed() > MEDIUM_TIMEOUT {
                break Err(Stage1Error::NoMedium(label.to_string()));
            }
            std::thread::sleep(Duration::from_millis(20));
        };
        stop.store(true, Ordering::Relaxed);
        let report = plug.join().unwrap_or_else(|_| {
            say("the module loader of stage 1 panicked");
            Default::default()
        });
        (found, report)
    });
    report.announce("modules");
    found
}

/// Stage 1's module loads, until `stop` is set: coldplug at once, again
/// right after each pass that loaded something (a driver makes new devices
/// appear: virtio_pci the virtio NIC, AHCI the CD) and else every 200 ms;
/// the whole initramfs list if coldplug has not found the medium within
/// [`COLDPLUG_GRACE`]. A last pass after `stop` loads [`LAST`] and the
/// drivers of the devices the last loads made appear (the virtio NIC,
/// typically) rather than leaving them to stage 2, which would first have
/// to read the system's module index.
fn coldplug_until(stop: &std::sync::atomic::AtomicBool) -> crate::modules::LoadReport {
    use crate::modules::{load_list, module_dir, LoadReport, Loader, ModIndex};
    use std::sync::atomic::Ordering;
    let dir = module_dir();
    let sys = Path::new("/sys");
    crate::modules::set_options(crate::modules::machine_options(sys));
    let mut loader = match ModIndex::load(&dir) {
        Ok(idx) => {
            let mut l = Loader::new(dir.clone(), idx);
            l.set_async_probe(ASYNC_PROBE);
            Some(l)
        }
        Err(e) => {
            say(format_args!("{}/modules.dep: {e}", dir.display()));
            None
        }
    };
    let start = Instant::now();
    let mut full_list: Option<LoadReport> = None;
    let mut extra = ALWAYS;
    let mut next_scan = start;
    while !stop.load(Ordering::Relaxed) {
        let now = Instant::now();
        if full_list.is_none() && (loader.is_none() || now > start + COLDPLUG_GRACE) {
            say("boot medium not found by hardware match: loading every boot module");
            let list = Path::new("/etc/oxbow/modules.list");
            full_list = Some(load_list(list, &dir).unwrap_or_else(|e| {
                say(format_args!("module list: {e}"));
                LoadReport::default()
            }));
        }
        if now >= next_scan {
            let loaded = loader
                .as_mut()
                .map_or(0, |l| l.coldplug(sys, boot_driver, extra));
            extra = &[];
            next_scan = if loaded > 0 {
                Instant::now()
            } else {
                Instant::now() + Duration::from_millis(200)
            };
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    if let Some(l) = loader.as_mut() {
        l.coldplug(sys, boot_driver, &[LAST]);
    }
    let mut report = loader.map(|l| l.report).unwrap_or_default();
    if let Some(r) = full_list {
        report.merge(r);
    }
    report
}

/// Whether coldplug in stage 1 loads this module: device drivers yes, the
/// CPU-feature matches of `arch/` (checksum and crypto acceleration) no;
/// stage 2 has them if anything needs them.
fn boot_driver(path: &str) -> bool {
    !path.starts_with("kernel/arch/")
}

fn run_steps() -> Result<std::convert::Infallible, Stage1Error> {
    let t0 = Instant::now();
    mount_pseudo_filesystems()?;
    reopen_console();
    say("stage 1: initramfs");
    let cmdline = KernelCmdline::read();
    let label = cmdline.value("oxbow.label").unwrap_or("OXBOW").to_string();
    let dev = find_medium(&label)?;
    let ro = MsFlags::MS_RDONLY;
    mnt(
        Some(&dev.to_string_lossy()),
        MEDIUM,
        Some("iso9660"),
        ro | MsFlags::MS_NOSUID | MsFlags::MS_NODEV,
        None,
    )?;
    let sfs = Path::new(MEDIUM).join("oxbow/system.sfs");
    let lo = crate::sys::loop_attach_readonly(&sfs)
        .map_err(|e| Stage1Error::Step(format!("loop device for {}: {e}", sfs.display())))?;
    mnt(
        Some(&lo.to_string_lossy()),
        LOWER,
        Some("squashfs"),
        ro,
        None,
    )?;
    mnt(
        Some("tmpfs"),
        RW,
        Some("tmpfs"),
        MsFlags::empty(),
        Some("mode=0755"),
    )?;
    for d in ["upper", "work"] {
        std::fs::create_dir_all(Path::new(RW).join(d))
            .map_err(|e| Stage1Error::Step(format!("mkdir {RW}/{d}: {e}")))?;
    }
    let opts = format!("lowerdir={LOWER},upperdir={RW}/upper,workdir={RW}/work");
    mnt(
        Some("overlay"),
        NEWROOT,
        Some("overlay"),
        MsFlags::empty(),
        Some(&opts),
    )?;
    for p in ["/dev", "/proc", "/sys", "/run"] {
        let target = format!("{NEWROOT}{p}");
        mnt(Some(p), &target, None, MsFlags::MS_MOVE, None)?;
    }
    say(format_args!(
        "switching to the system image after {} ms",
        t0.elapsed().as_millis()
    ));
    chdir(NEWROOT).map_err(|e| Stage1Error::Step(format!("chdir {NEWROOT}: {e}")))?;
    mount(Some("."), "/", None::<&str>, MsFlags::MS_MOVE, None::<&str>).map_err(|source| {
        Stage1Error::Mount {
            what: NEWROOT.into(),
            target: "/".into(),
            source,
        }
    })?;
    chroot(".").map_err(|e| Stage1Error::Step(format!("chroot: {e}")))?;
    chdir("/").map_err(|e| Stage1Error::Step(format!("chdir /: {e}")))?;
    if same_build(Path::new("/proc/self/exe"), Path::new(STAGE2)) {
        // The image puts one build of init in the initramfs and in the
        // system image: this process goes on as stage 2 instead of
        // executing the copy in the squashfs, whose pages would have to be
        // read and decompressed again (0.1 s under emulation).
        crate::stage2::run()
    }
    let init = CString::new(STAGE2).unwrap_or_default();
    let err = execv(&init, std::slice::from_ref(&init));
    Err(Stage1Error::Step(format!("exec {STAGE2}: {err:?}")))
}

/// Stage 2's program in the system image.
const STAGE2: &str = "/sbin/init";

/// Whether `running` (this program) and `stage2` are the same build of
/// init, as far as their size tells without reading the squashfs copy: an
/// image always pairs its initramfs with its own system image, and a copy
/// of another size (a hand-made image, say) is executed as before.
fn same_build(running: &Path, stage2: &Path) -> bool {
    match (std::fs::metadata(running), std::fs::metadata(stage2)) {
        (Ok(a), Ok(b)) => a.is_file() && b.is_file() && a.len() == b.len(),
        _ => false,
    }
}
