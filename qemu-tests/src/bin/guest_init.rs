//! `/init` of the guest test initramfs (`make guest`, see the
//! `qemu_tests::guest` module).
//!
//! It reports what the guest sees as machine-readable lines on the console,
//! each starting with `OXBOW-GUEST `, and then powers the machine off:
//!
//! ```text
//! OXBOW-GUEST start
//! OXBOW-GUEST kernel=6.1.0-57-amd64
//! OXBOW-GUEST modules=8/8                 loaded (or already live) / listed
//! OXBOW-GUEST cpus=2                      online CPUs
//! OXBOW-GUEST mem_kib=245092              MemTotal
//! OXBOW-GUEST disk sectors=2048 sector0=OXBOW-DISK-1234
//! OXBOW-GUEST disk=ok|ro|none|fail <why>  /dev/vda: pattern written to sector 1
//! OXBOW-GUEST rng=ok|none|fail <why>      virtio-rng is the current hwrng and reads
//! OXBOW-GUEST net=ok|none|skipped|fail <why>
//! OXBOW-GUEST net-rebind=ok|fail <why>    with oxbow.net-rebind only
//! OXBOW-GUEST link=up|down|fail <why>     with oxbow.link-wait only
//! OXBOW-GUEST done
//! ```
//!
//! The disk check reads sector 0 of `/dev/vda` and prints its text up to
//! the first byte that is not printable ASCII (at most 64 bytes). When that
//! text is `OXBOW-DISK-<token>`, it writes `OXBOW-PATTERN-<token>` to sector
//! 1 (else `OXBOW-PATTERN-none`), zero padded, and fsyncs, so the host can
//! check a round trip. A read-only disk gives `disk=ro` after the read.
//!
//! The network check brings up the first NIC (`eth0`) with the address of
//! `oxbow.ip=ADDR/PREFIX` and sends ICMP echo requests to `oxbow.peer=ADDR`
//! until one is answered (`net=ok`) or 20 s have passed (`net=fail`);
//! without those parameters it prints `net=skipped`. With
//! `oxbow.net-rebind` and a working NIC it then unbinds the NIC's virtio
//! device from `virtio_net` (the driver resets the device) and binds it
//! again (the device is set up anew), and checks the network once more:
//! `net-rebind=ok` or `fail`.
//!
//! With `oxbow.link-wait` the NIC's carrier is reported once it is up
//! (`link=up` or `link=down`); a NIC without one is waited for (up to
//! 60 s, `link=up` when it comes) before the echo requests, and after
//! `net=ok` the carrier's loss is waited for in the same way
//! (`link=down`): the host pulls and plugs the virtual cable meanwhile.
//!
//! With `oxbow.wait-power` on the command line it then prints
//! `OXBOW-GUEST waiting for the power button`, waits for a KEY_POWER press
//! on any `/dev/input/event*` (the ACPI power button, `button` + `evdev`)
//! and prints `OXBOW-GUEST power-button`, as a distribution's logind would.
//! While it waits, a change of `/dev/vda`'s size (the host grew the disk)
//! is reported as `OXBOW-GUEST disk-resized sectors=N`.
//!
//! Then it syncs and calls `reboot(2)`: power off, or restart when the
//! command line has `oxbow.reboot`. Nothing here panics; a failed step is
//! reported and the next one runs.
//!
//! With `oxbow.root=DEV` it is an initramfs for a full system instead:
//! after the modules, CPU and memory lines it prints
//! `OXBOW-GUEST switching to DEV`, waits for `DEV`, mounts it (ext4, or
//! `rootfstype=`; read-write, or read-only with `ro`) on `/newroot`, moves
//! `/dev`, `/proc` and `/sys` there, deletes the initramfs's own files to
//! free their memory, makes the new root `/` and executes `/sbin/init`
//! (`oxbow.init=PATH` for another). The device, disk, RNG and network
//! checks are skipped. If a step of the switch fails it prints
//! `OXBOW-GUEST root=fail <why>`, then `done`, and powers off.

use std::ffi::CString;
use std::fs::{File, OpenOptions};
use std::io::Write;
use std::net::Ipv4Addr;
use std::os::fd::{AsFd, AsRawFd};
use std::os::unix::fs::{FileExt, OpenOptionsExt};
use std::path::Path;
use std::time::{Duration, Instant};

use nix::kmod::{finit_module, ModuleInitFlags};
use nix::mount::{mount, MsFlags};
use nix::sys::reboot::{reboot, RebootMode};
use nix::sys::socket::{
    recvfrom, sendto, setsockopt, socket, sockopt, AddressFamily, MsgFlags, SockFlag, SockProtocol,
    SockType, SockaddrIn,
};
use nix::sys::time::TimeVal;

/// The module list in the initramfs: paths relative to
/// `/lib/modules/<release>/`, dependencies first.
const MODULE_LIST: &str = "/etc/oxbow/modules.list";
/// virtio device ids (virtio spec 5): network card, block device.
const VIRTIO_NET: &str = "0x0001";
const VIRTIO_BLK: &str = "0x0002";
/// How long a present virtio device may take to show up as `vda`/`eth0`.
const DEVICE_WAIT: Duration = Duration::from_secs(10);
/// How long the echo requests are repeated.
const PING_FOR: Duration = Duration::from_secs(20);

fn main() {
    mount_pseudo_filesystems();
    reopen_console_if_needed();
    say("start");
    let release = nix::sys::utsname::uname()
        .map(|u| u.release().to_string_lossy().into_owned())
        .unwrap_or_default();
    say(&format!("kernel={release}"));
    load_modules(&release);
    let online = std::fs::read_to_string("/sys/devices/system/cpu/online").unwrap_or_default();
    say(&format!("cpus={}", count_cpus(&online)));
    say(&format!("mem_kib={}", mem_total_kib()));
    let cmdline = std::fs::read_to_string("/proc/cmdline").unwrap_or_default();
    if let Some(dev) = param(&cmdline, "oxbow.root") {
        say(&format!("switching to {dev}"));
        // Returns only if the switch failed.
        let why = switch_root(dev, &cmdline);
        say(&format!("root=fail {why}"));
        finish(&cmdline);
    }
    say(&format!("disk={}", check_disk()));
    say(&format!("rng={}", check_rng()));
    let net = check_net(&cmdline);
    say(&format!("net={net}"));
    if net.starts_with("ok ") && cmdline.split_whitespace().any(|w| w == "oxbow.link-wait") {
        say(&wait_carrier(false));
    }
    if net.starts_with("ok ") && cmdline.split_whitespace().any(|w| w == "oxbow.net-rebind") {
        let again = match rebind_nic() {
            Ok(()) => check_net(&cmdline),
            Err(e) => format!("fail {e}"),
        };
        say(&format!("net-rebind={again}"));
    }
    if cmdline.split_whitespace().any(|w| w == "oxbow.wait-power") {
        say("waiting for the power button");
        wait_power_button();
        say("power-button");
    }
    finish(&cmdline);
}

/// Prints `done`, syncs and powers off (or restarts with `oxbow.reboot`).
fn finish(cmdline: &str) -> ! {
    say("done");
    nix::unistd::sync();
    let how = if cmdline.split_whitespace().any(|w| w == "oxbow.reboot") {
        RebootMode::RB_AUTOBOOT
    } else {
        RebootMode::RB_POWER_OFF
    };
    let err = reboot(how).err();
    say(&format!("reboot failed: {err:?}"));
    // PID 1 must not exit: the kernel would panic.
    loop {
        std::thread::sleep(Duration::from_secs(3600));
    }
}

/// Where the new root is mounted before it becomes `/`.
const NEW_ROOT: &str = "/newroot";

/// Mounts `dev` as the new root and executes its init in it. Returns only
/// on failure, with the reason.
fn switch_root(dev: &str, cmdline: &str) -> String {
    let fstype = param(cmdline, "rootfstype").unwrap_or("ext4");
    let init = param(cmdline, "oxbow.init").unwrap_or("/sbin/init");
    let mut flags = MsFlags::empty();
    if cmdline.split_whitespace().any(|w| w == "ro") {
        flags |= MsFlags::MS_RDONLY;
    }
    if wait_for(|| Path::new(dev).exists().then_some(())).is_none() {
        return format!("{dev} did not appear within {DEVICE_WAIT:?}");
    }
    if let Err(e) = std::fs::create_dir_all(NEW_ROOT) {
        return format!("mkdir {NEW_ROOT}: {e}");
    }
    if let Err(e) = mount(Some(dev), NEW_ROOT, Some(fstype), flags, None::<&str>) {
        return format!("mount {dev} ({fstype}) on {NEW_ROOT}: {e}");
    }
    // The init must exist in the new root (it may be an absolute symlink,
    // so look it up from inside).
    if !init_exists(Path::new(NEW_ROOT), init) {
        let _ = nix::mount::umount(NEW_ROOT);
        return format!("{dev} has no {init}");
    }
    for dir in ["/dev", "/proc", "/sys"] {
        let to = format!("{NEW_ROOT}{dir}");
        let _ = std::fs::create_dir_all(&to);
        if let Err(e) = mount(
            Some(dir),
            to.as_str(),
            None::<&str>,
            MsFlags::MS_MOVE,
            None::<&str>,
        ) {
            return format!("moving {dir} to {to}: {e}");
        }
    }
    free_initramfs();
    if let Err(e) = nix::unistd::chdir(NEW_ROOT) {
        return format!("chdir {NEW_ROOT}: {e}");
    }
    if let Err(e) = mount(Some("."), "/", None::<&str>, MsFlags::MS_MOVE, None::<&str>) {
        return format!("moving {NEW_ROOT} to /: {e}");
    }
    if let Err(e) = nix::unistd::chroot(".") {
        return format!("chroot: {e}");
    }
    if let Err(e) = nix::unistd::chdir("/") {
        return format!("chdir /: {e}");
    }
    let Ok(path) = CString::new(init) else {
        return format!("bad init path {init:?}");
    };
    let err = nix::unistd::execv(&path, &[&path]).unwrap_err();
    format!("exec {init}: {err}")
}

/// Whether `init` names an executable file inside `root`, following
/// symlinks (absolute ones relative to `root`) up to a depth of 8.
fn init_exists(root: &Path, init: &str) -> bool {
    let mut path = std::path::PathBuf::from(init);
    for _ in 0..8 {
        let inside = root.join(path.strip_prefix("/").unwrap_or(&path));
        match std::fs::read_link(&inside) {
            Ok(target) => {
                path = if target.is_absolute() {
                    target
                } else {
                    path.parent().unwrap_or(Path::new("/")).join(target)
                };
            }
            Err(_) => return inside.is_file(),
        }
    }
    false
}

/// Deletes the initramfs's files (the root file system is a tmpfs or
/// ramfs whose memory is freed only this way), leaving the new root and
/// anything else mounted alone: only top-level entries on the same
/// device as `/` go, and nothing is mounted below them any more.
fn free_initramfs() {
    use std::os::unix::fs::MetadataExt;
    let Ok(root_dev) = std::fs::metadata("/").map(|m| m.dev()) else {
        return;
    };
    let Ok(entries) = std::fs::read_dir("/") else {
        return;
    };
    for e in entries.flatten() {
        let path = e.path();
        if path == Path::new(NEW_ROOT) {
            continue;
        }
        match std::fs::symlink_metadata(&path) {
            Ok(m) if m.dev() == root_dev && m.is_dir() => {
                let _ = std::fs::remove_dir_all(&path);
            }
            Ok(m) if m.dev() == root_dev => {
                let _ = std::fs::remove_file(&path);
            }
            _ => {}
        }
    }
}

/// Blocks until an input device reports KEY_POWER pressed.
fn wait_power_button() {
    const EV_KEY: u16 = 1;
    const KEY_POWER: u16 = 116;
    // struct input_event on x86_64: timeval (16), type (2), code (2), value (4).
    const EVENT_SIZE: usize = 24;
    let devices: Vec<File> = wait_for(|| {
        let v: Vec<File> = std::fs::read_dir("/dev/input")
            .into_iter()
            .flatten()
            .flatten()
            .filter(|e| e.file_name().to_string_lossy().starts_with("event"))
            .filter_map(|e| File::open(e.path()).ok())
            .collect();
        (!v.is_empty()).then_some(v)
    })
    .unwrap_or_default();
    if devices.is_empty() {
        say("no input device for the power button");
        return;
    }
    let (tx, rx) = std::sync::mpsc::channel();
    for mut dev in devices {
        let tx = tx.clone();
        std::thread::spawn(move || {
            use std::io::Read;
            let mut ev = [0u8; EVENT_SIZE];
            while dev.read_exact(&mut ev).is_ok() {
                let kind = u16::from_le_bytes([ev[16], ev[17]]);
                let code = u16::from_le_bytes([ev[18], ev[19]]);
                let value = i32::from_le_bytes([ev[20], ev[21], ev[22], ev[23]]);
                if kind == EV_KEY && code == KEY_POWER && value == 1 {
                    let _ = tx.send(());
                    return;
                }
            }
        });
    }
    let size = || std::fs::read_to_string("/sys/block/vda/size").unwrap_or_default();
    let mut sectors = size();
    while let Err(std::sync::mpsc::RecvTimeoutError::Timeout) =
        rx.recv_timeout(Duration::from_millis(250))
    {
        let now = size();
        if now != sectors {
            say(&format!("disk-resized sectors={}", now.trim()));
            sectors = now;
        }
    }
}

/// Writes one `OXBOW-GUEST` line to the console in a single write.
fn say(msg: &str) {
    let line = format!("OXBOW-GUEST {msg}\n");
    let _ = std::io::stdout().lock().write_all(line.as_bytes());
}

fn mount_pseudo_filesystems() {
    for (fs, dir) in [("proc", "/proc"), ("sysfs", "/sys"), ("devtmpfs", "/dev")] {
        let _ = std::fs::create_dir_all(dir);
        let _ = mount(Some(fs), dir, Some(fs), MsFlags::empty(), None::<&str>);
    }
}

/// The kernel opens `/dev/console` for init only if the node exists in
/// the initramfs; if stdout is not open, open it now from devtmpfs.
fn reopen_console_if_needed() {
    if nix::fcntl::fcntl(1, nix::fcntl::FcntlArg::F_GETFD).is_ok() {
        return;
    }
    if let Ok(c) = OpenOptions::new()
        .read(true)
        .write(true)
        .custom_flags(libc::O_NOCTTY)
        .open("/dev/console")
    {
        for fd in 0..3 {
            let _ = nix::unistd::dup2(c.as_raw_fd(), fd);
        }
    }
}

/// Loads the listed modules in order; a module that fails (already live,
/// or no such hardware) does not stop the others.
fn load_modules(release: &str) {
    let dir = Path::new("/lib/modules").join(release);
    let list = std::fs::read_to_string(MODULE_LIST).unwrap_or_default();
    let params = CString::default();
    let (mut listed, mut loaded) = (0, 0);
    for rel in list.lines().map(str::trim).filter(|l| !l.is_empty()) {
        listed += 1;
        let result = File::open(dir.join(rel))
            .map_err(|e| e.to_string())
            .and_then(|f| {
                finit_module(&f, &params, ModuleInitFlags::empty()).map_err(|e| e.to_string())
            });
        match result {
            Ok(()) => loaded += 1,
            Err(e) if e.contains("EEXIST") => loaded += 1,
            Err(e) => say(&format!("module {rel}: {e}")),
        }
    }
    say(&format!("modules={loaded}/{listed}"));
}

/// Counts the CPUs in a list such as `0-3,5,7-8`.
fn count_cpus(list: &str) -> usize {
    list.trim()
        .split(',')
        .filter(|r| !r.is_empty())
        .map(|r| match r.split_once('-') {
            Some((a, b)) => match (a.parse::<usize>(), b.parse::<usize>()) {
                (Ok(a), Ok(b)) if b >= a => b - a + 1,
                _ => 0,
            },
            None => usize::from(r.parse::<usize>().is_ok()),
        })
        .sum()
}

fn mem_total_kib() -> u64 {
    std::fs::read_to_string("/proc/meminfo")
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix("MemTotal:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or(0)
}

/// Whether a virtio device of type `id` exists, bound or not.
fn virtio_device_present(id: &str) -> bool {
    std::fs::read_dir("/sys/bus/virtio/devices")
        .into_iter()
        .flatten()
        .flatten()
        .any(|e| std::fs::read_to_string(e.path().join("device")).is_ok_and(|d| d.trim() == id))
}

/// Waits up to [`DEVICE_WAIT`] for `probe` to find something.
fn wait_for<T>(mut probe: impl FnMut() -> Option<T>) -> Option<T> {
    let end = Instant::now() + DEVICE_WAIT;
    loop {
        if let Some(v) = probe() {
            return Some(v);
        }
        if Instant::now() > end {
            return None;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// The printable ASCII text at the start of `sector`, at most 64 bytes.
fn sector_text(sector: &[u8]) -> String {
    sector
        .iter()
        .take(64)
        .take_while(|b| b.is_ascii_graphic())
        .map(|&b| b as char)
        .collect()
}

/// The 512 bytes to write to sector 1 after reading `sector0_text`.
fn pattern_sector(sector0_text: &str) -> [u8; 512] {
    let token = sector0_text
        .strip_prefix("OXBOW-DISK-")
        .filter(|t| !t.is_empty())
        .unwrap_or("none");
    let text = format!("OXBOW-PATTERN-{token}");
    let mut sector = [0u8; 512];
    for (d, s) in sector.iter_mut().zip(text.bytes()) {
        *d = s;
    }
    sector
}

fn check_disk() -> String {
    if !virtio_device_present(VIRTIO_BLK) {
        return "none".into();
    }
    let dev = Path::new("/dev/vda");
    if wait_for(|| dev.exists().then_some(())).is_none() {
        return "fail a virtio block device is present but /dev/vda did not appear".into();
    }
    let sectors = std::fs::read_to_string("/sys/block/vda/size").unwrap_or_default();
    let read_only = std::fs::read_to_string("/sys/block/vda/ro").is_ok_and(|r| r.trim() == "1");
    let file = match OpenOptions::new().read(true).write(!read_only).open(dev) {
        Ok(f) => f,
        Err(e) => return format!("fail open /dev/vda: {e}"),
    };
    let mut sector0 = [0u8; 512];
    if let Err(e) = file.read_exact_at(&mut sector0, 0) {
        return format!("fail read sector 0: {e}");
    }
    let text = sector_text(&sector0);
    say(&format!("disk sectors={} sector0={text}", sectors.trim()));
    if read_only {
        return "ro".into();
    }
    if let Err(e) = file.write_all_at(&pattern_sector(&text), 512) {
        return format!("fail write sector 1: {e}");
    }
    if let Err(e) = file.sync_all() {
        return format!("fail fsync: {e}");
    }
    "ok".into()
}

fn check_rng() -> String {
    let current =
        std::fs::read_to_string("/sys/class/misc/hw_random/rng_current").unwrap_or_default();
    if !current.starts_with("virtio_rng") {
        return if virtio_device_present("0x0004") {
            format!("fail virtio-rng present but the current hwrng is {current:?}")
        } else {
            "none".into()
        };
    }
    let mut buf = [0u8; 16];
    match File::open("/dev/hwrng").and_then(|f| f.read_exact_at(&mut buf, 0)) {
        Ok(()) => "ok".into(),
        Err(e) => format!("fail read /dev/hwrng: {e}"),
    }
}

/// The value of `key=` on the kernel command line.
fn param<'a>(cmdline: &'a str, key: &str) -> Option<&'a str> {
    cmdline
        .split_whitespace()
        .find_map(|w| w.strip_prefix(key)?.strip_prefix('='))
}

/// Parses `10.0.0.2/24` into address and netmask.
fn parse_cidr(s: &str) -> Option<(Ipv4Addr, Ipv4Addr)> {
    let (addr, prefix) = s.split_once('/')?;
    let prefix: u32 = prefix.parse().ok().filter(|p| *p <= 32)?;
    let mask = u32::MAX.checked_shl(32 - prefix).unwrap_or(0);
    Some((addr.parse().ok()?, Ipv4Addr::from(mask)))
}

/// The first network interface other than `lo`, preferring `eth0`.
fn find_nic() -> Option<String> {
    let mut names: Vec<String> = std::fs::read_dir("/sys/class/net")
        .ok()?
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n != "lo")
        .collect();
    names.sort();
    names
        .iter()
        .position(|n| n == "eth0")
        .map(|i| names.swap_remove(i))
        .or_else(|| names.into_iter().next())
}

/// Unbinds the NIC's virtio device from its driver and binds it again,
/// waiting for its interface to go and to come back.
fn rebind_nic() -> Result<(), String> {
    let nic = find_nic().ok_or("no NIC to rebind")?;
    let link = std::fs::read_link(format!("/sys/class/net/{nic}/device"))
        .map_err(|e| format!("{nic}: no device link: {e}"))?;
    let dev = link
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .ok_or("the device link has no name")?;
    let driver = "/sys/bus/virtio/drivers/virtio_net";
    std::fs::write(format!("{driver}/unbind"), &dev)
        .map_err(|e| format!("unbinding {dev}: {e}"))?;
    wait_for(|| find_nic().is_none().then_some(()))
        .ok_or_else(|| format!("{nic} stayed after {dev} was unbound"))?;
    std::fs::write(format!("{driver}/bind"), &dev).map_err(|e| format!("binding {dev}: {e}"))?;
    Ok(())
}

fn check_net(cmdline: &str) -> String {
    if !virtio_device_present(VIRTIO_NET) {
        return "none".into();
    }
    let Some(nic) = wait_for(find_nic) else {
        return "fail a virtio NIC is present but no interface appeared".into();
    };
    let (Some(cidr), Some(peer)) = (param(cmdline, "oxbow.ip"), param(cmdline, "oxbow.peer"))
    else {
        return format!("skipped {nic}: no oxbow.ip= and oxbow.peer= on the command line");
    };
    let Some((addr, mask)) = parse_cidr(cidr) else {
        return format!("fail bad oxbow.ip={cidr}");
    };
    let Ok(peer) = peer.parse::<Ipv4Addr>() else {
        return format!("fail bad oxbow.peer={peer}");
    };
    if let Err(e) = configure_nic(&nic, addr, mask) {
        return format!("fail configuring {nic}: {e}");
    }
    if cmdline.split_whitespace().any(|w| w == "oxbow.link-wait") {
        let up = carrier(&nic) == Some(true);
        say(if up { "link=up" } else { "link=down" });
        if !up {
            let now = wait_carrier(true);
            say(&now);
            if now != "link=up" {
                return format!("fail {nic}: no carrier");
            }
        }
    }
    match ping(peer) {
        Ok(n) => format!("ok {nic} {addr} echo reply from {peer} after {n} request(s)"),
        Err(e) => format!("fail {nic} {addr} ping {peer}: {e}"),
    }
}

/// How long a change of the carrier is waited for.
const CARRIER_WAIT: Duration = Duration::from_secs(60);

/// Whether `nic` (up) has a carrier.
fn carrier(nic: &str) -> Option<bool> {
    let text = std::fs::read_to_string(format!("/sys/class/net/{nic}/carrier")).ok()?;
    Some(text.trim() == "1")
}

/// Waits for the first NIC's carrier to become `up`: `link=up` or
/// `link=down` when it did, else `link=fail …`.
fn wait_carrier(up: bool) -> String {
    let Some(nic) = find_nic() else {
        return "link=fail no NIC".into();
    };
    let start = Instant::now();
    while start.elapsed() < CARRIER_WAIT {
        if carrier(&nic) == Some(up) {
            return if up { "link=up" } else { "link=down" }.into();
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    format!(
        "link=fail {nic} still {} after {CARRIER_WAIT:?}",
        if up { "down" } else { "up" }
    )
}

/// Sets an IPv4 address and netmask on `nic` and brings it up, with the
/// interface ioctls.
fn configure_nic(nic: &str, addr: Ipv4Addr, mask: Ipv4Addr) -> std::io::Result<()> {
    let sock = std::net::UdpSocket::bind("0.0.0.0:0")?;
    let fd = sock.as_raw_fd();
    let request = |a: Ipv4Addr| {
        // SAFETY: `ifreq` is plain old data, for which all zeroes is valid.
        let mut req: libc::ifreq = unsafe { std::mem::zeroed() };
        for (d, s) in req.ifr_name.iter_mut().take(15).zip(nic.bytes()) {
            *d = s as libc::c_char;
        }
        let sin = libc::sockaddr_in {
            sin_family: libc::AF_INET as libc::sa_family_t,
            sin_port: 0,
            sin_addr: libc::in_addr {
                s_addr: u32::from_ne_bytes(a.octets()),
            },
            sin_zero: [0; 8],
        };
        // SAFETY: the union member is a `sockaddr`, which has the size of a
        // `sockaddr_in`; both are plain old data.
        unsafe {
            req.ifr_ifru.ifru_addr = std::mem::transmute::<libc::sockaddr_in, libc::sockaddr>(sin);
        }
        req
    };
    for (op, a) in [(libc::SIOCSIFADDR, addr), (libc::SIOCSIFNETMASK, mask)] {
        let req = request(a);
        // SAFETY: `req` is a valid `ifreq` for this request and outlives the call.
        if unsafe { libc::ioctl(fd, op as _, &req) } < 0 {
            return Err(std::io::Error::last_os_error());
        }
    }
    let mut req = request(Ipv4Addr::UNSPECIFIED);
    // SAFETY: as above; SIOCGIFFLAGS writes the flags member of `req`.
    if unsafe { libc::ioctl(fd, libc::SIOCGIFFLAGS as _, &mut req) } < 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: SIOCGIFFLAGS just filled the flags member of the union.
    unsafe {
        req.ifr_ifru.ifru_flags |= (libc::IFF_UP | libc::IFF_RUNNING) as libc::c_short;
    }
    // SAFETY: `req` is a valid `ifreq` for SIOCSIFFLAGS.
    if unsafe { libc::ioctl(fd, libc::SIOCSIFFLAGS as _, &req) } < 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(())
}

/// The internet checksum (RFC 1071).
fn checksum(data: &[u8]) -> u16 {
    let mut sum: u32 = data
        .chunks(2)
        .map(|c| u32::from(u16::from_be_bytes([c[0], *c.get(1).unwrap_or(&0)])))
        .sum();
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    !(sum as u16)
}

/// An ICMP echo request with this identifier and sequence number.
fn echo_request(id: u16, seq: u16) -> Vec<u8> {
    let mut p = vec![8, 0, 0, 0];
    p.extend_from_slice(&id.to_be_bytes());
    p.extend_from_slice(&seq.to_be_bytes());
    p.extend_from_slice(b"oxbow-guest-echo");
    let c = checksum(&p);
    p[2..4].copy_from_slice(&c.to_be_bytes());
    p
}

/// True if `packet` (IPv4 header + ICMP, as a raw socket returns it) is
/// the echo reply to our request `id`.
fn is_echo_reply(packet: &[u8], id: u16) -> bool {
    let Some(ihl) = packet.first().map(|b| usize::from(b & 0x0f) * 4) else {
        return false;
    };
    let icmp = packet.get(ihl..).unwrap_or_default();
    icmp.len() >= 8 && icmp[0] == 0 && icmp[4..6] == id.to_be_bytes()
}

/// Sends echo requests to `peer` once a second until one is answered;
/// returns how many were sent.
fn ping(peer: Ipv4Addr) -> Result<u32, String> {
    let sock = socket(
        AddressFamily::Inet,
        SockType::Raw,
        SockFlag::SOCK_CLOEXEC,
        SockProtocol::Icmp,
    )
    .map_err(|e| format!("raw socket: {e}"))?;
    setsockopt(&sock, sockopt::ReceiveTimeout, &TimeVal::new(0, 200_000))
        .map_err(|e| format!("SO_RCVTIMEO: {e}"))?;
    let to = SockaddrIn::from(std::net::SocketAddrV4::new(peer, 0));
    let id = std::process::id() as u16 ^ 0x0b0b;
    let end = Instant::now() + PING_FOR;
    let mut sent = 0u32;
    let mut next_send = Instant::now();
    let mut last_err = String::from("no reply");
    while Instant::now() < end {
        if Instant::now() >= next_send {
            sent += 1;
            let req = echo_request(id, sent as u16);
            if let Err(e) = sendto(sock.as_fd().as_raw_fd(), &req, &to, MsgFlags::empty()) {
                last_err = format!("send: {e}");
            }
            next_send = Instant::now() + Duration::from_secs(1);
        }
        let mut buf = [0u8; 1500];
        match recvfrom::<SockaddrIn>(sock.as_fd().as_raw_fd(), &mut buf) {
            Ok((n, Some(from))) if from.ip() == peer && is_echo_reply(&buf[..n], id) => {
                return Ok(sent);
            }
            Ok(_) => {}
            Err(nix::errno::Errno::EAGAIN) | Err(nix::errno::Errno::EINTR) => {}
            Err(e) => last_err = format!("receive: {e}"),
        }
    }
    Err(format!("{last_err} after {sent} request(s)"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cpu_lists() {
        assert_eq!(count_cpus("0\n"), 1);
        assert_eq!(count_cpus("0-1\n"), 2);
        assert_eq!(count_cpus("0-3,5,7-8"), 7);
        assert_eq!(count_cpus(""), 0);
    }

    #[test]
    fn disk_pattern() {
        let mut s0 = [0u8; 512];
        s0[..16].copy_from_slice(b"OXBOW-DISK-abc12");
        let text = sector_text(&s0);
        assert_eq!(text, "OXBOW-DISK-abc12");
        assert!(pattern_sector(&text).starts_with(b"OXBOW-PATTERN-abc12\0"));
        assert!(pattern_sector("").starts_with(b"OXBOW-PATTERN-none\0"));
        assert_eq!(sector_text(&[0xeb, 0x63, 0x90]), "");
    }

    #[test]
    fn command_line() {
        let c = "console=ttyS0 oxbow.ip=10.0.0.2/24 oxbow.peer=10.0.0.1 quiet";
        assert_eq!(param(c, "oxbow.ip"), Some("10.0.0.2/24"));
        assert_eq!(param(c, "oxbow.peer"), Some("10.0.0.1"));
        assert_eq!(param(c, "oxbow"), None);
        assert_eq!(
            parse_cidr("10.0.0.2/24"),
            Some(([10, 0, 0, 2].into(), [255, 255, 255, 0].into()))
        );
        assert_eq!(
            parse_cidr("10.0.0.2/0"),
            Some(([10, 0, 0, 2].into(), [0, 0, 0, 0].into()))
        );
        assert_eq!(parse_cidr("10.0.0.2/33"), None);
        assert_eq!(parse_cidr("10.0.0.2"), None);
    }

    #[test]
    fn init_lookup_follows_symlinks_inside_the_root() {
        let t = tempfile::tempdir().unwrap();
        let r = t.path();
        std::fs::create_dir_all(r.join("usr/lib/systemd")).unwrap();
        std::fs::create_dir_all(r.join("usr/sbin")).unwrap();
        std::fs::write(r.join("usr/lib/systemd/systemd"), b"\x7fELF").unwrap();
        // Debian: /sbin -> usr/sbin, /usr/sbin/init -> ../lib/systemd/systemd
        std::os::unix::fs::symlink("usr/sbin", r.join("sbin")).unwrap();
        std::os::unix::fs::symlink("../lib/systemd/systemd", r.join("usr/sbin/init")).unwrap();
        std::os::unix::fs::symlink("/usr/lib/systemd/systemd", r.join("abs")).unwrap();
        std::os::unix::fs::symlink("loop", r.join("loop")).unwrap();
        assert!(init_exists(r, "/usr/sbin/init"));
        assert!(init_exists(r, "/abs"));
        assert!(!init_exists(r, "/missing"));
        assert!(!init_exists(r, "/loop"));
    }

    #[test]
    fn icmp() {
        let req = echo_request(0x1234, 1);
        assert_eq!(checksum(&req), 0, "a packet with its checksum sums to zero");
        let mut reply = vec![0x45u8; 1];
        reply.resize(20, 0);
        let mut icmp = req.clone();
        icmp[0] = 0;
        reply.extend_from_slice(&icmp);
        assert!(is_echo_reply(&reply, 0x1234));
        assert!(!is_echo_reply(&reply, 0x4321));
        let mut echo = reply.clone();
        echo[20] = 8;
        assert!(!is_echo_reply(&echo, 0x1234));
        assert!(!is_echo_reply(&[], 1));
    }
}
