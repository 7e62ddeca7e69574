//! Boot benchmark: time from QEMU start to the first authenticated
//! `GET /api2/json/version`, side by side with a floor.
//!
//! The floor is the same QEMU command, kernel and modules, with an
//! initramfs whose init only mounts the pseudo filesystems, addresses the
//! NIC and answers on port 8006 (`floor-init`). Both boot the kernel
//! directly (`-kernel`), so firmware time is left out of both; runs
//! alternate between the two sides and the medians are compared.
//!
//! With `--iso-bus virtio` both sides get the ISO as a read-only virtio
//! disk instead of an AHCI CD, and Oxbow's seed is a FAT image on a virtio
//! disk instead of a second CD: the boot of a node from a disk, without the
//! SATA link detection of CD drives.
//!
//! With `--timeline` each of Oxbow's runs also prints when each of init's
//! console lines (and the kernel's hand-over to `/init`) first appeared,
//! in seconds since QEMU started, seen by polling the console file every
//! 10 ms.
//!
//! `--all-lines` prints every console line on the timeline, the kernel's
//! too, and `--cmdline TEXT` adds to Oxbow's kernel command line
//! (`loglevel=7` shows the kernel's driver messages with their times).
//!
//! With `--service-logs` Oxbow's runs also connect init's test channel
//! (`oxbow.testctl`) and, once the API has answered, print the logs of
//! `netd` and `apid`, whose lines carry the guest's wall-clock time: what
//! each daemon did between its start and its readiness.
//!
//! With `--also-iso LABEL=PATH` (repeatable) every run also boots another
//! build of the ISO (the same way, with the same seed) and prints its time and
//! ratio: two builds compared within one run rather than across runs, whose
//! floors differ by up to a second on this machine. The floor keeps the
//! initramfs of the main ISO.
//!
//! Oxbow's seed gives the management address as the floor has it, static
//! (`[network] source = "from-answer"`, 10.0.2.15/24 via 10.0.2.2); with
//! `--network dhcp` it asks QEMU's DHCP server instead, as a seed without
//! a `[network]` section does.
//!
//! Usage: `bench-boot [--runs N] [--floor-init PATH] [--iso-bus ahci|virtio]
//! [--network static|dhcp] [--timeline] [--all-lines]
//! [--cmdline TEXT] [--service-logs] [--also-iso LABEL=PATH]`

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use qemu_tests::{
    extract_from_iso, iso_path, target_dir, Appliance, BootOptions, Firmware, IsoBus, SeedKind,
};

const TIMEOUT: Duration = Duration::from_secs(600);
const POLL: Duration = Duration::from_millis(100);
/// How long one probe of either side may take before a fresh one is made.
const PROBE_TIMEOUT: Duration = Duration::from_millis(300);

fn main() -> Result<()> {
    let mut runs = 3usize;
    let mut bus = IsoBus::Ahci;
    let mut floor_init = target_dir().join("x86_64-unknown-linux-gnu/release/floor-init");
    let mut set = Settings::default();
    let mut also: Vec<(String, PathBuf)> = Vec::new();
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        match a.as_str() {
            "--runs" => runs = args.next().context("--runs N")?.parse()?,
            "--floor-init" => floor_init = PathBuf::from(args.next().context("--floor-init PATH")?),
            "--iso-bus" => {
                bus = match args.next().as_deref() {
                    Some("ahci") => IsoBus::Ahci,
                    Some("virtio") => IsoBus::Virtio,
                    _ => bail!("--iso-bus ahci|virtio"),
                }
            }
            "--timeline" => set.timeline = true,
            "--all-lines" => {
                set.timeline = true;
                set.all_lines = true;
            }
            "--service-logs" => set.logs = true,
            "--cmdline" => set.cmdline = args.next().context("--cmdline TEXT")?,
            "--also-iso" => {
                let v = args.next().context("--also-iso LABEL=PATH")?;
                let (label, path) = v.split_once('=').context("--also-iso LABEL=PATH")?;
                also.push((label.to_string(), PathBuf::from(path)));
            }
            "--network" => {
                set.dhcp = match args.next().as_deref() {
                    Some("static") => false,
                    Some("dhcp") => true,
                    _ => bail!("--network static|dhcp"),
                }
            }
            other => bail!("unknown argument {other}"),
        }
    }
    let work = tempfile::tempdir()?;
    let floor_initrd = build_floor_initrd(&floor_init, work.path())?;
    let mut floor = Vec::new();
    let mut oxbow = Vec::new();
    let mut other = vec![Vec::new(); also.len()];
    // After the kernel: Oxbow's and the other ISOs', with --timeline.
    let mut oxbow_ak = Vec::new();
    let mut other_ak = vec![Vec::new(); also.len()];
    for run in 1..=runs {
        let f = time_floor(&floor_initrd, bus)?;
        let (o, ak) = time_oxbow(None, bus, &set)?;
        println!(
            "run {run}: floor {f:.2} s, oxbow {o:.2} s, ratio {:.2}",
            o / f
        );
        oxbow_ak.extend(ak);
        for (i, (label, iso)) in also.iter().enumerate() {
            let (a, ak) = time_oxbow(Some(iso), bus, &set)?;
            println!("run {run}: {label} {a:.2} s, ratio {:.2}", a / f);
            other[i].push(a);
            other_ak[i].extend(ak);
        }
        floor.push(f);
        oxbow.push(o);
    }
    let (mf, mo) = (median(&mut floor), median(&mut oxbow));
    println!(
        "ISO attached as {bus:?}; Oxbow's address {}",
        if set.dhcp {
            "by DHCP"
        } else {
            "static, from the answer file"
        }
    );
    println!(
        "median of {runs}: floor {mf:.2} s, oxbow {mo:.2} s, ratio {:.2} (goal <= 1.3)",
        mo / mf
    );
    if !oxbow_ak.is_empty() {
        println!(
            "median after the kernel (stage 1 to the answer): oxbow {:.2} s",
            median(&mut oxbow_ak)
        );
    }
    for (i, (label, _)) in also.iter().enumerate() {
        if !other_ak[i].is_empty() {
            println!(
                "median after the kernel (stage 1 to the answer): {label} {:.2} s",
                median(&mut other_ak[i])
            );
        }
        let ma = median(&mut other[i]);
        println!(
            "median of {runs}: {label} {ma:.2} s, ratio {:.2}; oxbow / {label} {:.2}",
            ma / mf,
            mo / ma
        );
    }
    Ok(())
}

fn median(v: &mut [f64]) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    let n = v.len();
    if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    }
}

/// The appliance's initramfs with a second archive appended whose `/init`
/// (the floor) replaces ours; the kernel unpacks both in order.
fn build_floor_initrd(floor_init: &Path, dir: &Path) -> Result<PathBuf> {
    if !floor_init.exists() {
        bail!(
            "{} is missing: build it with `make bench-boot`",
            floor_init.display()
        );
    }
    let base = dir.join("base.img");
    extract_from_iso(&iso_path(), "/boot/initrd.img", &base)?;
    let stage = dir.join("floor");
    std::fs::create_dir_all(&stage)?;
    std::fs::copy(floor_init, stage.join("init"))?;
    let out = Command::new("sh")
        .arg("-c")
        .arg("echo init | cpio --quiet -o -H newc -R 0:0")
        .current_dir(&stage)
        .output()
        .context("running cpio")?;
    if !out.status.success() {
        bail!("cpio: {}", String::from_utf8_lossy(&out.stderr));
    }
    let mut img = std::fs::read(&base)?;
    while img.len() % 4 != 0 {
        img.push(0);
    }
    img.extend_from_slice(&out.stdout);
    let path = dir.join("floor-initrd.img");
    std::fs::write(&path, img)?;
    Ok(path)
}

fn time_floor(initrd: &Path, bus: IsoBus) -> Result<f64> {
    let mut opts = BootOptions::new(Firmware::Direct(String::new()));
    opts.iso_bus = bus;
    opts.initrd_override = Some(initrd.to_path_buf());
    let vm = Appliance::boot(opts)?;
    let end = Instant::now() + TIMEOUT;
    loop {
        if http_ok(vm.api_port) {
            return Ok(vm.elapsed().as_secs_f64());
        }
        if Instant::now() > end {
            bail!("the floor never answered:\n{}", vm.serial());
        }
        std::thread::sleep(POLL);
    }
}

fn http_ok(port: u16) -> bool {
    let Ok(mut s) = TcpStream::connect(("127.0.0.1", port)) else {
        return false;
    };
    let _ = s.set_read_timeout(Some(PROBE_TIMEOUT));
    if s.write_all(b"GET / HTTP/1.1\r\nhost: x\r\n\r\n").is_err() {
        return false;
    }
    let mut buf = [0u8; 64];
    matches!(s.read(&mut buf), Ok(n) if buf[..n].starts_with(b"HTTP/1.1 200"))
}

/// Polls the console file `path` until `stop` is set and returns each new
/// line of init's (`oxbow:`) or the kernel's start of `/init`, with the
/// time since QEMU started (`started` is QEMU's elapsed time at the call).
fn watch_console(
    path: PathBuf,
    started: Duration,
    all_lines: bool,
    stop: Arc<AtomicBool>,
) -> Vec<(f64, String)> {
    let t0 = Instant::now() - started;
    let mut seen = 0usize;
    let mut out = Vec::new();
    loop {
        let done = stop.load(Ordering::Relaxed);
        let text = std::fs::read(&path).unwrap_or_default();
        let now = t0.elapsed().as_secs_f64();
        // Only whole lines: the rest is read again next time.
        if let Some(end) = text.iter().rposition(|&b| b == b'\n') {
            if end + 1 > seen {
                for line in String::from_utf8_lossy(&text[seen..=end]).lines() {
                    if all_lines || line.contains("oxbow:") || line.contains("Run /init") {
                        out.push((now, line.trim().to_string()));
                    }
                }
                seen = end + 1;
            }
        }
        if done {
            return out;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// How Oxbow's side boots and what it prints, from the command line.
#[derive(Debug, Default)]
struct Settings {
    dhcp: bool,
    timeline: bool,
    all_lines: bool,
    logs: bool,
    cmdline: String,
}

/// Boots Oxbow (`iso`, else the main ISO) and returns the time to the
/// answer, and with `--timeline` the part of it after the kernel (from
/// stage 1's first console line).
fn time_oxbow(iso: Option<&Path>, bus: IsoBus, set: &Settings) -> Result<(f64, Option<f64>)> {
    let Settings {
        dhcp,
        timeline,
        all_lines,
        logs,
        ..
    } = *set;
    let password = "benchmark-password";
    let mut cmdline = set.cmdline.clone();
    if logs {
        cmdline.push_str(" oxbow.testctl");
    }
    let mut opts = BootOptions::new(Firmware::Direct(cmdline));
    opts.test_channel = logs;
    opts.iso = iso.map(Path::to_path_buf);
    opts.iso_bus = bus;
    let seed = match bus {
        IsoBus::Ahci => SeedKind::Iso,
        IsoBus::Virtio => SeedKind::Fat,
    };
    let network = if dhcp {
        ""
    } else {
        // The floor's address, on QEMU's user network.
        "[network]\nsource = \"from-answer\"\ncidr = \"10.0.2.15/24\"\n\
         gateway = \"10.0.2.2\"\ndns = \"10.0.2.3\"\n"
    };
    opts.seed = Some((
        format!("[global]\nroot-password = \"{password}\"\n{network}"),
        seed,
    ));
    let mut vm = Appliance::boot(opts)?;
    let stop = Arc::new(AtomicBool::new(false));
    let watcher = timeline.then(|| {
        let (path, started, stop) = (vm.serial_path(), vm.elapsed(), stop.clone());
        std::thread::spawn(move || watch_console(path, started, all_lines, stop))
    });
    let t = wait_for_api(&vm, password);
    stop.store(true, Ordering::Relaxed);
    let mut after_kernel = None;
    if let Some(w) = watcher {
        for (at, line) in w.join().expect("the console watcher") {
            println!("  {at:7.3} s  {line}");
            if after_kernel.is_none() && line.contains("stage 1: initramfs") {
                after_kernel = t.as_ref().ok().map(|t| t - at);
            }
        }
        if let Ok(t) = t {
            println!("  {t:7.3} s  (the authenticated /version answered)");
        }
    }
    if logs && t.is_ok() {
        let before = std::fs::read(vm.serial_path()).map_or(0, |c| c.len());
        for unit in ["netd", "apid"] {
            vm.show_unit_log(unit);
        }
        let console = std::fs::read(vm.serial_path()).unwrap_or_default();
        let tail = String::from_utf8_lossy(console.get(before..).unwrap_or_default());
        for line in tail.lines() {
            println!("  | {}", line.trim_end());
        }
    }
    t.map(|t| (t, after_kernel))
}

/// Waits for `vm`'s API to log in with `password` and answer `/version`,
/// and returns the time since QEMU started.
fn wait_for_api(vm: &Appliance, password: &str) -> Result<f64> {
    // Short probes until the API answers at all (401 without a ticket), as
    // for the floor: see `ApiClient::with_timeout`. Then the login and the
    // authenticated call, which may take longer under emulation.
    let probe = vm.api_with_timeout(PROBE_TIMEOUT)?;
    let mut api = vm.api()?;
    let end = Instant::now() + TIMEOUT;
    loop {
        if probe.get_status("/version").is_ok()
            && matches!(api.login("root@pam", password), Ok(r) if r.status == 200)
            && matches!(api.get("/version"), Ok(r) if r.status == 200)
        {
            return Ok(vm.elapsed().as_secs_f64());
        }
        if Instant::now() > end {
            bail!("oxbow never answered:\n{}", vm.serial());
        }
        std::thread::sleep(POLL);
    }
}
