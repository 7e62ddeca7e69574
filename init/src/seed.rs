//! Block device labels, the seed volume and first-boot credentials.
//!
//! A seed volume is a FAT or ISO9660 filesystem labelled `OXBOW-SEED`
//! holding an `answer.toml` in Proxmox's answer-file syntax. Its root
//! password is hashed and written to the state directory, where `apid`
//! checks logins against it. There is no built-in password.

use std::fs::File;
use std::io::{self, Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};

use installer::answer::RootPassword;
use installer::Answer;

use crate::fsutil::{mkdir_mode, write_atomic};

/// The label of a seed volume.
pub const SEED_LABEL: &str = "OXBOW-SEED";

/// A filesystem kind we can read a label from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FsKind {
    /// ISO9660 (a CD image).
    Iso9660,
    /// FAT12/16/32.
    Vfat,
}

impl FsKind {
    /// The name `mount(2)` takes.
    pub fn mount_type(self) -> &'static str {
        match self {
            FsKind::Iso9660 => "iso9660",
            FsKind::Vfat => "vfat",
        }
    }
}

/// Reads the volume label of an ISO9660 or FAT filesystem at the start of
/// `dev`. Returns `None` for anything else.
pub fn read_label<R: Read + Seek>(dev: &mut R) -> Option<(FsKind, String)> {
    let mut pvd = [0u8; 2048];
    if dev.seek(SeekFrom::Start(16 * 2048)).is_ok()
        && dev.read_exact(&mut pvd).is_ok()
        && pvd[0] == 1
        && &pvd[1..6] == b"CD001"
    {
        let label = String::from_utf8_lossy(&pvd[40..72]).trim_end().to_string();
        return Some((FsKind::Iso9660, label));
    }
    let mut boot = [0u8; 512];
    dev.seek(SeekFrom::Start(0)).ok()?;
    dev.read_exact(&mut boot).ok()?;
    if boot[510] != 0x55 || boot[511] != 0xAA {
        return None;
    }
    let label = if &boot[0x52..0x57] == b"FAT32" {
        &boot[0x47..0x52]
    } else if &boot[0x36..0x39] == b"FAT" {
        &boot[0x2B..0x36]
    } else {
        return None;
    };
    Some((
        FsKind::Vfat,
        String::from_utf8_lossy(label).trim_end().to_string(),
    ))
}

/// Finds a block device whose filesystem carries `label`.
pub fn find_by_label(label: &str) -> Option<(PathBuf, FsKind)> {
    let entries = std::fs::read_dir("/sys/class/block").ok()?;
    let mut names: Vec<String> = entries
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| !n.starts_with("loop") && !n.starts_with("ram"))
        .collect();
    names.sort();
    for name in names {
        let dev = PathBuf::from("/dev").join(&name);
        let Ok(mut f) = File::open(&dev) else {
            continue;
        };
        if let Some((kind, l)) = read_label(&mut f) {
            if l == label {
                return Some((dev, kind));
            }
        }
    }
    None
}

/// Where the seed step leaves its results.
#[derive(Debug, Clone)]
pub struct SeedPaths {
    /// Where the volume is mounted while it is read.
    pub mount_point: PathBuf,
    /// Where the answer file is copied for other services (netd).
    pub answer_copy: PathBuf,
    /// The state directory (`/var/lib/oxbow`).
    pub state_dir: PathBuf,
}

/// The outcome of looking for a seed.
#[derive(Debug)]
pub enum SeedOutcome {
    /// A valid answer file was applied.
    Applied(Box<Answer>),
    /// No seed volume is attached.
    Absent,
    /// A seed was found but could not be used; the reason says why.
    Unusable(String),
}

/// Reads the answer file from a mounted seed and applies its credentials.
pub fn apply_answer_text(text: &str, paths: &SeedPaths) -> Result<Answer, String> {
    let answer = Answer::parse(text).map_err(|e| e.to_string())?;
    let hash = match &answer.global.root_password {
        RootPassword::Plain(p) => installer::hash_password(p).map_err(|e| e.to_string())?,
        RootPassword::Hashed(h) => h.clone(),
    };
    let priv_dir = paths.state_dir.join("priv");
    mkdir_mode(&priv_dir, 0o700).map_err(|e| format!("{}: {e}", priv_dir.display()))?;
    let shadow = priv_dir.join("root.shadow");
    write_atomic(&shadow, format!("{hash}\n").as_bytes(), 0o600)
        .map_err(|e| format!("{}: {e}", shadow.display()))?;
    if let Some(parent) = paths.answer_copy.parent() {
        mkdir_mode(parent, 0o755).map_err(|e| e.to_string())?;
    }
    write_atomic(&paths.answer_copy, text.as_bytes(), 0o600).map_err(|e| e.to_string())?;
    if !answer.global.root_ssh_keys.is_empty() {
        let ssh = Path::new("/root/.ssh");
        if mkdir_mode(ssh, 0o700).is_ok() {
            let keys = answer.global.root_ssh_keys.join("\n") + "\n";
            let _ = write_atomic(&ssh.join("authorized_keys"), keys.as_bytes(), 0o600);
        }
    }
    Ok(answer)
}

/// How long the seed search waits for USB storage still being set up.
const USB_SETTLE_LIMIT: std::time::Duration = std::time::Duration::from_secs(10);

/// USB mass-storage interfaces (`bInterfaceClass` 08) of the sysfs root
/// `sys` that have no block device yet: a stick enumerated after stage 2's
/// hardware pass has no driver yet, and the kernel's usb-storage waits a
/// second (`delay_use`) before it scans a new stick, so at boot one is
/// often still on its way.
pub fn usb_storage_settling(sys: &Path) -> usize {
    let Ok(entries) = std::fs::read_dir(sys.join("bus/usb/devices")) else {
        return 0;
    };
    entries
        .flatten()
        .map(|e| e.path())
        .filter(|p| {
            std::fs::read_to_string(p.join("bInterfaceClass")).is_ok_and(|c| c.trim() == "08")
                && !has_block_device(p, 5)
        })
        .count()
}

/// How long after a hub appeared its ports may still be powering up: the
/// hub driver switches their power on when it configures the hub and looks
/// at them only after the hub's power-on delay (at least 100 ms for a hub
/// that is not a root hub); until then a hub may report no connection.
const HUB_POWER_SETTLE: std::time::Duration = std::time::Duration::from_millis(300);

/// What [`usb_ports_enumerating`] asks a hub, named by its usbfs node
/// (`/dev/bus/usb/BBB/DDD`).
pub trait HubProbe {
    /// Which of the hub's ports `1..=ports` have a device connected.
    fn connected_ports(&mut self, node: &Path, ports: u32) -> Vec<u32>;
    /// Whether the hub appeared so recently that its ports may still be
    /// powering up ([`HUB_POWER_SETTLE`]).
    fn powering_up(&mut self, node: &Path) -> bool;
}

/// [`HubProbe`] on the running system, through usbfs.
pub struct Usbfs;

impl HubProbe for Usbfs {
    fn connected_ports(&mut self, node: &Path, ports: u32) -> Vec<u32> {
        hub_connected_ports(node, ports)
    }

    /// devtmpfs makes a device's node when the device is added, and its
    /// change time is then; the hub is configured right after.
    fn powering_up(&mut self, node: &Path) -> bool {
        use std::os::unix::fs::MetadataExt;
        let Ok(meta) = std::fs::metadata(node) else {
            return false;
        };
        let made = std::time::UNIX_EPOCH
            + std::time::Duration::new(
                u64::try_from(meta.ctime()).unwrap_or(0),
                u32::try_from(meta.ctime_nsec()).unwrap_or(0),
            );
        std::time::SystemTime::now()
            .duration_since(made)
            .is_ok_and(|age| age < HUB_POWER_SETTLE)
    }
}

/// USB hubs of the sysfs root `sys` (root hubs included) that may still
/// bring a device: the hub driver debounces a new connection for at least
/// 100 ms before it resets and addresses the device, so at boot a stick
/// can be on its port and still absent from sysfs. Counted: each connected
/// port with no device in sysfs yet; each hub not configured yet (its
/// number of ports still 0: a stick behind it shows only later); each hub
/// whose ports may still be powering up ([`HubProbe::powering_up`]); and
/// one more when a device appeared while the hubs were asked.
/// `dev` is where the usbfs nodes are (`/dev`).
pub fn usb_ports_enumerating(sys: &Path, dev: &Path, probe: &mut impl HubProbe) -> usize {
    let devices = sys.join("bus/usb/devices");
    // Interfaces have a colon in their names.
    let device_names = || -> Vec<String> {
        let Ok(entries) = std::fs::read_dir(&devices) else {
            return Vec::new();
        };
        entries
            .flatten()
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .filter(|n| !n.contains(':'))
            .collect()
    };
    let number =
        |p: PathBuf| -> Option<u32> { std::fs::read_to_string(p).ok()?.trim().parse().ok() };
    let seen = device_names();
    let mut pending = 0;
    for name in &seen {
        let hub = devices.join(name);
        let is_hub =
            std::fs::read_to_string(hub.join("bDeviceClass")).is_ok_and(|c| c.trim() == "09");
        let Some(ports) = number(hub.join("maxchild")).filter(|&n| n > 0) else {
            // The hub driver learns the number of ports from the hub's
            // descriptor when it configures the hub.
            if is_hub {
                pending += 1;
            }
            continue;
        };
        let (Some(bus), Some(devnum)) = (number(hub.join("busnum")), number(hub.join("devnum")))
        else {
            continue;
        };
        let node = dev.join(format!("bus/usb/{bus:03}/{devnum:03}"));
        if probe.powering_up(&node) {
            pending += 1;
            continue;
        }
        // Asked first: a hub busy enumerating answers once it is done,
        // and the child is then there.
        for port in probe.connected_ports(&node, ports) {
            let child = match name.strip_prefix("usb") {
                Some(bus) => format!("{bus}-{port}"),
                None => format!("{name}.{port}"),
            };
            if !devices.join(&child).exists() {
                pending += 1;
            }
        }
    }
    // Asking a hub waits while the hub driver enumerates one of its
    // ports, so devices (a hub, say) may have appeared since the list was
    // read: they are looked at the next time.
    if device_names().iter().any(|n| !seen.contains(n)) {
        pending += 1;
    }
    pending
}

/// Asks the hub at usbfs node `node` (`/dev/bus/usb/BBB/DDD`) for the
/// status of each of its ports `1..=ports` (the hub class's GET_STATUS, as
/// `lsusb -v` does) and returns those with a device connected. Opening the
/// node waits while the hub driver is enumerating one of the hub's ports.
pub fn hub_connected_ports(node: &Path, ports: u32) -> Vec<u32> {
    /// `struct usbdevfs_ctrltransfer` of `<linux/usbdevice_fs.h>`.
    #[repr(C)]
    struct CtrlTransfer {
        request_type: u8,
        request: u8,
        value: u16,
        index: u16,
        length: u16,
        timeout_ms: u32,
        data: *mut u8,
    }
    nix::ioctl_readwrite!(usbdevfs_control, b'U', 0, CtrlTransfer);
    use std::os::fd::AsRawFd;
    let Ok(file) = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(node)
    else {
        return Vec::new();
    };
    let connected = |port: u32| {
        let Ok(index) = u16::try_from(port) else {
            return false;
        };
        let mut status = [0u8; 4];
        let mut xfer = CtrlTransfer {
            // Device to host, class request, recipient "other" (a port).
            request_type: 0xa3,
            request: 0, // GET_STATUS
            value: 0,
            index,
            length: 4,
            timeout_ms: 1000,
            data: status.as_mut_ptr(),
        };
        // SAFETY: `xfer` is a valid usbdevfs_ctrltransfer whose data
        // pointer addresses `status`, 4 bytes as its length says, alive
        // for the call.
        let done = unsafe { usbdevfs_control(file.as_raw_fd(), &mut xfer) };
        // wPortStatus bit 0: PORT_CONNECTION, on USB 2 and USB 3 hubs alike.
        matches!(done, Ok(4)) && status[0] & 1 != 0
    };
    (1..=ports).filter(|&p| connected(p)).collect()
}

/// Whether a `block` directory lies within `depth` levels under `dir`
/// (an interface's disk is at `host*/target*/*/block/sd*`).
fn has_block_device(dir: &Path, depth: u32) -> bool {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return false;
    };
    entries.flatten().any(|e| {
        let is_dir = e.file_type().is_ok_and(|t| t.is_dir());
        is_dir
            && (e.file_name() == "block" || (depth > 0 && has_block_device(&e.path(), depth - 1)))
    })
}

/// What the seed search asks its caller to load.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SeedNeed {
    /// The module of the seed's filesystem, before it is mounted.
    Filesystem(FsKind),
    /// The USB storage drivers (`usb_storage`, `uas`) and the SCSI disk
    /// driver (`sd_mod`), asked for once when USB storage is being set up:
    /// a stick that appeared after the hardware pass has no driver yet, and
    /// its disk appears only once `sd_mod` is loaded, which a boot from a CD
    /// has not needed.
    UsbDisks,
    /// The drivers of the hardware present (stage 2's hardware pass, which
    /// runs meanwhile), asked for once before the search gives up: the seed
    /// may sit on a disk whose controller only that pass gives a driver.
    Drivers,
}

/// [`find_by_label`] for the seed, waiting (at most [`USB_SETTLE_LIMIT`])
/// while USB devices are still being enumerated or USB storage is still
/// being set up and no seed was found.
fn find_seed(sys: &Path, need: &mut impl FnMut(SeedNeed)) -> Option<(PathBuf, FsKind)> {
    let start = std::time::Instant::now();
    let (mut asked, mut told, mut drivers) = (false, false, false);
    loop {
        if let Some(found) = find_by_label(SEED_LABEL) {
            return Some(found);
        }
        let enumerating = usb_ports_enumerating(sys, Path::new("/dev"), &mut Usbfs);
        let settling = usb_storage_settling(sys);
        if enumerating > 0 && !told {
            told = true;
            crate::console::say(format_args!(
                "seed: waiting for {enumerating} USB device(s) being enumerated"
            ));
        }
        if settling > 0 && !asked {
            asked = true;
            crate::console::say(format_args!(
                "seed: waiting for {settling} USB storage device(s) to show their disks"
            ));
            need(SeedNeed::UsbDisks);
        }
        if settling == 0 && enumerating == 0 {
            // The last disk may have appeared between the two looks.
            let found = find_by_label(SEED_LABEL);
            if found.is_some() || drivers {
                return found;
            }
            // Once more with every driver of the hardware loaded: new
            // controllers, new USB hubs to wait for.
            drivers = true;
            need(SeedNeed::Drivers);
            continue;
        }
        if start.elapsed() > USB_SETTLE_LIMIT {
            return None;
        }
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
}

/// Finds, mounts, reads and applies the seed volume. `need` loads what
/// the search asks for (see [`SeedNeed`]): the filesystem's module once
/// the volume's filesystem is known, before it is mounted, and the SCSI
/// disk driver when a USB stick still being set up (see
/// [`usb_storage_settling`]) is waited for.
pub fn load_seed(paths: &SeedPaths, mut need: impl FnMut(SeedNeed)) -> SeedOutcome {
    use nix::mount::{mount, umount, MsFlags};
    let Some((dev, kind)) = find_seed(Path::new("/sys"), &mut need) else {
        return SeedOutcome::Absent;
    };
    need(SeedNeed::Filesystem(kind));
    if let Err(e) = mkdir_mode(&paths.mount_point, 0o700) {
        return SeedOutcome::Unusable(format!("{}: {e}", paths.mount_point.display()));
    }
    if let Err(e) = mount(
        Some(&dev),
        &paths.mount_point,
        Some(kind.mount_type()),
        MsFlags::MS_RDONLY | MsFlags::MS_NOSUID | MsFlags::MS_NODEV | MsFlags::MS_NOEXEC,
        None::<&str>,
    ) {
        return SeedOutcome::Unusable(format!("cannot mount {}: {e}", dev.display()));
    }
    let text = read_answer_file(&paths.mount_point);
    let _ = umount(&paths.mount_point);
    let text = match text {
        Ok(t) => t,
        Err(e) => {
            return SeedOutcome::Unusable(format!(
                "{} has no readable answer.toml: {e}",
                dev.display()
            ))
        }
    };
    match apply_answer_text(&text, paths) {
        Ok(a) => SeedOutcome::Applied(Box::new(a)),
        Err(e) => SeedOutcome::Unusable(e),
    }
}

fn read_answer_file(dir: &Path) -> io::Result<String> {
    // ISO9660 without Rock Ridge may upper-case names.
    for name in ["answer.toml", "ANSWER.TOM", "ANSWER.TOML", "ANSWER.TOM;1"] {
        if let Ok(t) = std::fs::read_to_string(dir.join(name)) {
            return Ok(t);
        }
    }
    Err(io::Error::new(
        io::ErrorKind::NotFound,
        "answer.toml not found",
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Cursor;

    #[test]
    fn iso9660_label() {
        let mut img = vec![0u8; 17 * 2048];
        let pvd = &mut img[16 * 2048..];
        pvd[0] = 1;
        pvd[1..6].copy_from_slice(b"CD001");
        pvd[40..72].copy_from_slice(format!("{:<32}", "OXBOW-SEED").as_bytes());
        assert_eq!(
            read_label(&mut Cursor::new(img)),
            Some((FsKind::Iso9660, "OXBOW-SEED".to_string()))
        );
    }

    #[test]
    fn fat_labels() {
        let mut fat16 = vec![0u8; 40 * 2048];
        fat16[510] = 0x55;
        fat16[511] = 0xAA;
        fat16[0x36..0x3E].copy_from_slice(b"FAT16   ");
        fat16[0x2B..0x36].copy_from_slice(b"OXBOW-SEED ");
        assert_eq!(
            read_label(&mut Cursor::new(fat16.clone())),
            Some((FsKind::Vfat, "OXBOW-SEED".to_string()))
        );
        let mut fat32 = vec![0u8; 512];
        fat32[510] = 0x55;
        fat32[511] = 0xAA;
        fat32[0x52..0x5A].copy_from_slice(b"FAT32   ");
        fat32[0x47..0x52].copy_from_slice(b"SEED2      ");
        assert_eq!(
            read_label(&mut Cursor::new(fat32)),
            Some((FsKind::Vfat, "SEED2".to_string()))
        );
        assert_eq!(read_label(&mut Cursor::new(vec![0u8; 4096])), None);
    }

    #[test]
    fn answer_is_hashed_not_stored_plain_in_state() {
        let d = tempfile::tempdir().unwrap();
        let paths = SeedPaths {
            mount_point: d.path().join("mnt"),
            answer_copy: d.path().join("run/answer.toml"),
            state_dir: d.path().join("state"),
        };
        let a = apply_answer_text(
            "[global]\nroot-password = \"pa55word\"\nfqdn = \"n1.example\"\n",
            &paths,
        )
        .unwrap();
        assert_eq!(a.hostname(), Some("n1"));
        let shadow = std::fs::read_to_string(d.path().join("state/priv/root.shadow")).unwrap();
        assert!(shadow.starts_with("$6$"));
        assert!(!shadow.contains("pa55word"));
        assert!(installer::verify_password("pa55word", shadow.trim()));
        assert!(apply_answer_text("[global]\n", &paths).is_err());
    }

    #[test]
    fn usb_storage_settles_once_its_disk_is_there() {
        let sys = tempfile::tempdir().unwrap();
        let devices = sys.path().join("bus/usb/devices");
        let stick = devices.join("1-1:1.0");
        let keyboard = devices.join("1-2:1.0");
        let unclaimed = devices.join("1-3:1.0");
        for (dir, class, claimed) in [
            (&stick, "08", true),
            (&keyboard, "03", true),
            (&unclaimed, "08", false),
        ] {
            std::fs::create_dir_all(dir).unwrap();
            std::fs::write(dir.join("bInterfaceClass"), format!("{class}\n")).unwrap();
            if claimed {
                std::fs::create_dir(dir.join("driver")).unwrap();
            }
        }
        // Both sticks without their disks yet are settling, the one no
        // driver has claimed yet too (its driver is loaded for it); a
        // keyboard is not waited for.
        assert_eq!(usb_storage_settling(sys.path()), 2);
        std::fs::create_dir_all(stick.join("host2/target2:0:0/2:0:0:0/block/sdb")).unwrap();
        assert_eq!(usb_storage_settling(sys.path()), 1);
        std::fs::create_dir_all(unclaimed.join("host3/target3:0:0/3:0:0:0/block/sdc")).unwrap();
        assert_eq!(usb_storage_settling(sys.path()), 0);
        // No USB at all.
        assert_eq!(usb_storage_settling(&sys.path().join("nothing")), 0);
    }

    #[test]
    fn usb_ports_with_a_device_not_yet_in_sysfs_are_enumerating() {
        /// Connected: root ports 2 to 4 and the hub 1-3's port 1.
        #[derive(Default)]
        struct Fake {
            asked: Vec<(PathBuf, u32)>,
            powering: Vec<&'static str>,
            /// Made while the first hub is asked, as the kernel adds a
            /// device while usbfs waits for the hub.
            appears: Option<PathBuf>,
        }
        impl HubProbe for Fake {
            fn connected_ports(&mut self, node: &Path, ports: u32) -> Vec<u32> {
                if let Some(dir) = self.appears.take() {
                    std::fs::create_dir_all(dir).unwrap();
                }
                self.asked
                    .extend((1..=ports).map(|port| (node.to_path_buf(), port)));
                (1..=ports)
                    .filter(|&port| {
                        matches!(
                            (node.to_str().unwrap(), port),
                            ("/dev/bus/usb/001/001", 2..=4) | ("/dev/bus/usb/001/003", 1)
                        )
                    })
                    .collect()
            }
            fn powering_up(&mut self, node: &Path) -> bool {
                self.powering.iter().any(|p| node == Path::new(p))
            }
        }
        let sys = tempfile::tempdir().unwrap();
        let devices = sys.path().join("bus/usb/devices");
        let add = |name: &str, class: &str, bus: u32, devnum: u32, ports: u32| {
            let d = devices.join(name);
            std::fs::create_dir_all(&d).unwrap();
            std::fs::write(d.join("bDeviceClass"), format!("{class}\n")).unwrap();
            for (attr, v) in [("busnum", bus), ("devnum", devnum), ("maxchild", ports)] {
                std::fs::write(d.join(attr), format!("{v}\n")).unwrap();
            }
        };
        // A root hub with 4 ports: a stick on port 2 and a hub with 2
        // ports on port 3, both in sysfs; a device on port 4 not yet, nor
        // the one on the hub's port 1.
        add("usb1", "09", 1, 1, 4);
        add("1-2", "00", 1, 2, 0);
        add("1-3", "09", 1, 3, 2);
        std::fs::create_dir_all(devices.join("1-0:1.0")).unwrap();
        let dev = Path::new("/dev");
        let mut fake = Fake::default();
        assert_eq!(usb_ports_enumerating(sys.path(), dev, &mut fake), 2);
        // Every port of both hubs asked once; the stick is no hub.
        assert_eq!(fake.asked.len(), 6, "{:?}", fake.asked);
        assert!(fake
            .asked
            .contains(&(PathBuf::from("/dev/bus/usb/001/003"), 2)));
        std::fs::create_dir_all(devices.join("1-4")).unwrap();
        std::fs::create_dir_all(devices.join("1-3.1")).unwrap();
        assert_eq!(
            usb_ports_enumerating(sys.path(), dev, &mut Fake::default()),
            0
        );
        // A hub just enumerated on the hub's port 2: not configured yet,
        // then configured and powering its ports up, then settled.
        add("1-3.2", "09", 1, 5, 0);
        assert_eq!(
            usb_ports_enumerating(sys.path(), dev, &mut Fake::default()),
            1
        );
        add("1-3.2", "09", 1, 5, 4);
        let mut powering = Fake {
            powering: vec!["/dev/bus/usb/001/005"],
            ..Fake::default()
        };
        assert_eq!(usb_ports_enumerating(sys.path(), dev, &mut powering), 1);
        assert!(!powering.asked.iter().any(|(n, _)| n.ends_with("005")));
        assert_eq!(
            usb_ports_enumerating(sys.path(), dev, &mut Fake::default()),
            0
        );
        // A device added while the hubs are asked is looked at next time.
        let mut adding = Fake {
            appears: Some(devices.join("1-3.2.1")),
            ..Fake::default()
        };
        assert_eq!(usb_ports_enumerating(sys.path(), dev, &mut adding), 1);
        assert_eq!(
            usb_ports_enumerating(sys.path(), dev, &mut Fake::default()),
            0
        );
        // No USB at all.
        let nothing = sys.path().join("nothing");
        assert_eq!(
            usb_ports_enumerating(&nothing, dev, &mut Fake::default()),
            0
        );
    }
}
