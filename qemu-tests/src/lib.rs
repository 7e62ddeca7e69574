//! Boots the Oxbow ISO under QEMU and drives it from the outside.
//!
//! [`Appliance::boot`] starts QEMU with the ISO (BIOS, UEFI, or the ISO's
//! kernel loaded directly so the command line can carry test flags), an
//! optional seed volume, the API port forwarded to a free loopback port, the
//! serial console written to a file, QMP on a unix socket, and optionally
//! init's test control channel on the second serial port.
//!
//! Where the host's `/dev/kvm` can run a real kernel (the CPU shows `vmx` or
//! `svm`), QEMU uses it; elsewhere it emulates with `-cpu max`, which gives
//! the appliance an emulated SVM and so a working `/dev/kvm` of its own.
//!
//! When a test fails, dropping the [`Appliance`] prints its serial console.
//!
//! [`with_appliance`] runs a test on a fresh appliance again (at most
//! [`ATTEMPTS`] times in all) when the appliance's *own* kernel failed under
//! emulation (panic, soft lockup, RCU stall) and the appliance stopped
//! answering, or when the whole appliance froze (init silent on its test
//! channel and the console silent for [`FROZEN_QUIET`]), or when a nested
//! guest triple faulted, as guests under this emulated SVM do now and then
//! under any VMM; any other failure fails the test at once. QEMU's view of
//! the vCPUs is printed with it.
//!
//! [`guest`] builds and boots the guest test assets (a kernel and an
//! initramfs whose init reports what it sees), which a VMM under test runs.

use std::io::{BufRead, BufReader, Write};
use std::net::TcpListener;
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use serde_json::{json, Value};

pub mod bench;
pub mod guest;

/// Firmware, or direct kernel boot.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Firmware {
    /// SeaBIOS, booting the ISO through its El Torito BIOS image.
    Bios,
    /// OVMF, booting the ISO's EFI system partition.
    Uefi,
    /// The ISO's kernel and initramfs loaded by QEMU with this extra
    /// command line; the ISO is still attached for the system image.
    Direct(String),
}

/// The kind of seed volume to attach.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SeedKind {
    /// An ISO9660 image on a second CD drive.
    Iso,
    /// A FAT image on a virtio disk.
    Fat,
    /// A FAT image on a USB stick (usb-storage on an xHCI controller),
    /// as one is plugged into a server.
    UsbFat,
}

/// How the ISO is attached.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IsoBus {
    /// A CD drive on q35's AHCI controller (`ide.0`), as a server's DVD
    /// drive or a virtual CD in a hypervisor.
    Ahci,
    /// A read-only virtio disk, as a disk an image was written to.
    Virtio,
}

/// How to boot.
#[derive(Debug, Clone)]
pub struct BootOptions {
    /// The ISO to boot instead of [`iso_path`]'s.
    pub iso: Option<PathBuf>,
    /// Where the ISO is attached.
    pub iso_bus: IsoBus,
    /// Firmware or direct boot.
    pub firmware: Firmware,
    /// An `answer.toml` to put on a seed volume, and its kind.
    pub seed: Option<(String, SeedKind)>,
    /// Whether to connect init's test control channel (ttyS1). It only
    /// works when the command line carries `oxbow.testctl`.
    pub test_channel: bool,
    /// Guest memory in MiB.
    pub memory_mib: u32,
    /// vCPUs.
    pub cpus: u32,
    /// With [`Firmware::Direct`], this initramfs instead of the ISO's.
    pub initrd_override: Option<PathBuf>,
    /// Further ISO images, attached read-only as CD drives on the AHCI
    /// ports after the boot CD (`ide.0`) and the seed (`ide.1`): `ide.2`
    /// to `ide.5`.
    pub extra_cds: Vec<PathBuf>,
    /// Raw disk images attached as virtio block devices with
    /// `snapshot=on`: the appliance may write to them, but its writes go
    /// to a temporary overlay and the files never change.
    pub extra_disks: Vec<PathBuf>,
}

impl BootOptions {
    /// Defaults: 2 GiB, 2 vCPUs, no seed, no test channel.
    pub fn new(firmware: Firmware) -> BootOptions {
        BootOptions {
            iso: None,
            iso_bus: IsoBus::Ahci,
            firmware,
            seed: None,
            test_channel: false,
            memory_mib: 2048,
            cpus: 2,
            initrd_override: None,
            extra_cds: Vec::new(),
            extra_disks: Vec::new(),
        }
    }
}

/// The repository's `target/` directory.
pub fn target_dir() -> PathBuf {
    if let Ok(t) = std::env::var("CARGO_TARGET_DIR") {
        return PathBuf::from(t);
    }
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../target")
}

/// The ISO under test: `$OXBOW_ISO`, else `target/oxbow.iso`.
pub fn iso_path() -> PathBuf {
    std::env::var_os("OXBOW_ISO")
        .map(PathBuf::from)
        .unwrap_or_else(|| target_dir().join("oxbow.iso"))
}

/// Whether the host's KVM can boot a real kernel.
pub fn host_kvm_usable() -> bool {
    if std::env::var("OXBOW_QEMU_ACCEL").is_ok_and(|v| v == "tcg") {
        return false;
    }
    let cpu = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let virt = cpu
        .lines()
        .filter(|l| l.starts_with("flags"))
        .any(|l| l.split_whitespace().any(|f| f == "vmx" || f == "svm"));
    virt && Path::new("/dev/kvm").exists()
}

/// The accelerator and CPU arguments for QEMU on this host.
pub fn accel_args() -> Vec<String> {
    if host_kvm_usable() {
        vec!["-accel".into(), "kvm".into(), "-cpu".into(), "host".into()]
    } else {
        vec![
            "-accel".into(),
            "tcg,thread=multi".into(),
            "-cpu".into(),
            // OXBOW_QEMU_CPU overrides the emulated CPU model, say
            // `max,la57=off`, to compare models.
            std::env::var("OXBOW_QEMU_CPU").unwrap_or_else(|_| "max".into()),
        ]
    }
}

/// A free TCP port on the loopback address.
pub fn free_port() -> Result<u16> {
    let l = TcpListener::bind("127.0.0.1:0")?;
    Ok(l.local_addr()?.port())
}

/// Extracts a file from an ISO with xorriso.
pub fn extract_from_iso(iso: &Path, inside: &str, to: &Path) -> Result<()> {
    let out = Command::new("xorriso")
        .args(["-osirrox", "on", "-indev"])
        .arg(iso)
        .args(["-extract", inside])
        .arg(to)
        .output()
        .context("running xorriso (apt-get install xorriso)")?;
    if !out.status.success() {
        bail!(
            "xorriso -extract {inside}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    Ok(())
}

/// Writes an ISO 9660 volume (Rock Ridge names) labelled `label` holding
/// `files`, each `(name on the volume, file on the host)`.
pub fn make_data_iso(out: &Path, label: &str, files: &[(&str, &Path)]) -> Result<()> {
    let mut cmd = Command::new("xorriso");
    cmd.args([
        "-as",
        "mkisofs",
        "-quiet",
        "-r",
        "-J",
        "-V",
        label,
        "-graft-points",
        "-o",
    ])
    .arg(out);
    for (name, path) in files {
        cmd.arg(format!("/{name}={}", path.display()));
    }
    run(&mut cmd).context("writing an ISO with xorriso (apt-get install xorriso)")
}

/// Writes a seed volume holding `answer` as `answer.toml`.
pub fn make_seed(dir: &Path, answer: &str, kind: SeedKind) -> Result<PathBuf> {
    let src = dir.join("seed-src");
    std::fs::create_dir_all(&src)?;
    std::fs::write(src.join("answer.toml"), answer)?;
    match kind {
        SeedKind::Iso => {
            let img = dir.join("seed.iso");
            make_data_iso(
                &img,
                "OXBOW-SEED",
                &[("answer.toml", &src.join("answer.toml"))],
            )?;
            Ok(img)
        }
        SeedKind::Fat | SeedKind::UsbFat => {
            let img = dir.join("seed.img");
            run(Command::new("mkfs.vfat")
                .args(["-C", "-n", "OXBOW-SEED"])
                .arg(&img)
                .arg("4096"))?;
            run(Command::new("mcopy")
                .arg("-i")
                .arg(&img)
                .arg(src.join("answer.toml"))
                .arg("::answer.toml"))?;
            Ok(img)
        }
    }
}

fn run(cmd: &mut Command) -> Result<()> {
    let out = cmd.output().with_context(|| format!("running {cmd:?}"))?;
    if !out.status.success() {
        bail!("{cmd:?} failed: {}", String::from_utf8_lossy(&out.stderr));
    }
    Ok(())
}

/// A running appliance.
pub struct Appliance {
    child: Option<Child>,
    dir: tempfile::TempDir,
    /// The loopback port forwarded to the appliance's 8006.
    pub api_port: u16,
    started: Instant,
    exit: Option<ExitStatus>,
}

impl Appliance {
    /// Boots the ISO as `opts` says.
    pub fn boot(opts: BootOptions) -> Result<Appliance> {
        let iso = opts.iso.clone().unwrap_or_else(iso_path);
        if !iso.exists() {
            bail!("{} does not exist: build it with `make iso`", iso.display());
        }
        let dir = tempfile::Builder::new().prefix("oxbow-qemu-").tempdir()?;
        let api_port = free_port()?;
        let serial = dir.path().join("serial.log");
        let mut cmd = Command::new("qemu-system-x86_64");
        cmd.args(accel_args())
            .args(["-machine", "q35", "-m"])
            .arg(opts.memory_mib.to_string())
            .arg("-smp")
            .arg(opts.cpus.to_string())
            .args(["-display", "none", "-no-reboot", "-nodefaults"])
            // With -no-reboot a reset of the appliance ends QEMU without a
            // word on the console; QEMU's reset log says whether its CPU
            // triple faulted (see Appliance::kernel_failure).
            .args(["-d", "cpu_reset", "-D"])
            .arg(dir.path().join(QEMU_LOG))
            .args([
                "-chardev",
                &format!("file,id=ser0,path={}", serial.display()),
            ])
            .args(["-serial", "chardev:ser0"])
            .args([
                "-qmp",
                &format!(
                    "unix:{},server=on,wait=off",
                    dir.path().join("qmp.sock").display()
                ),
            ])
            .args([
                "-netdev",
                &format!("user,id=n0,hostfwd=tcp:127.0.0.1:{api_port}-:8006"),
            ])
            .args(["-device", "virtio-net-pci,netdev=n0"])
            .args(["-device", "virtio-rng-pci"])
            .args([
                "-drive",
                &match opts.iso_bus {
                    IsoBus::Ahci => format!(
                        "file={},media=cdrom,if=none,id=cd0,readonly=on",
                        iso.display()
                    ),
                    IsoBus::Virtio => format!(
                        "file={},format=raw,if=none,id=cd0,readonly=on",
                        iso.display()
                    ),
                },
            ]);
        let device = match opts.iso_bus {
            IsoBus::Ahci => "ide-cd,drive=cd0,bus=ide.0",
            IsoBus::Virtio => "virtio-blk-pci,drive=cd0",
        };
        // A direct kernel boot takes boot index 0 itself.
        if matches!(opts.firmware, Firmware::Direct(_)) {
            cmd.args(["-device", device]);
        } else {
            cmd.args(["-device", &format!("{device},bootindex=0")]);
        }
        if opts.test_channel {
            let sock = dir.path().join("testctl.sock");
            cmd.args([
                "-chardev",
                &format!("socket,id=tc,path={},server=on,wait=off", sock.display()),
            ])
            .args(["-serial", "chardev:tc"]);
        }
        match &opts.firmware {
            Firmware::Bios => {}
            Firmware::Uefi => {
                let vars = dir.path().join("OVMF_VARS.fd");
                std::fs::copy("/usr/share/OVMF/OVMF_VARS_4M.fd", &vars)
                    .context("copying OVMF variables (apt-get install ovmf)")?;
                cmd.args([
                    "-drive",
                    "if=pflash,format=raw,unit=0,readonly=on,file=/usr/share/OVMF/OVMF_CODE_4M.fd",
                ])
                .args([
                    "-drive",
                    &format!("if=pflash,format=raw,unit=1,file={}", vars.display()),
                ]);
            }
            Firmware::Direct(extra) => {
                let kernel = dir.path().join("vmlinuz");
                let initrd = dir.path().join("initrd.img");
                extract_from_iso(&iso, "/boot/vmlinuz", &kernel)?;
                match &opts.initrd_override {
                    Some(p) => {
                        std::fs::copy(p, &initrd)
                            .with_context(|| format!("copying {}", p.display()))?;
                    }
                    None => extract_from_iso(&iso, "/boot/initrd.img", &initrd)?,
                }
                // loglevel=5 after quiet: the register dump and stack of a
                // kernel failure (printed at the default level) reach the
                // console; routine messages (info, notice) still do not.
                cmd.arg("-kernel")
                    .arg(&kernel)
                    .arg("-initrd")
                    .arg(&initrd)
                    .arg("-append")
                    .arg(format!(
                        "console=ttyS0,115200 oxbow.label=OXBOW quiet loglevel=5 panic=-1 {extra}"
                    ));
            }
        }
        if let Some((answer, kind)) = &opts.seed {
            let img = make_seed(dir.path(), answer, *kind)?;
            match kind {
                SeedKind::Iso => cmd
                    .args([
                        "-drive",
                        &format!(
                            "file={},media=cdrom,if=none,id=seed,readonly=on",
                            img.display()
                        ),
                    ])
                    .args(["-device", "ide-cd,drive=seed,bus=ide.1"]),
                SeedKind::Fat => cmd.args([
                    "-drive",
                    &format!("file={},format=raw,if=virtio", img.display()),
                ]),
                // The stick sits behind a hub, as on many servers' front
                // ports: it is enumerated later than on a root port, and
                // init's wait for ports still being enumerated looks
                // through the hub too.
                SeedKind::UsbFat => cmd
                    .args(["-device", "qemu-xhci,id=usbseedhc"])
                    .args(["-device", "usb-hub,bus=usbseedhc.0,port=1"])
                    .args([
                        "-drive",
                        &format!("file={},format=raw,if=none,id=usbseed", img.display()),
                    ])
                    .args([
                        "-device",
                        "usb-storage,bus=usbseedhc.0,port=1.1,drive=usbseed",
                    ]),
            };
        }
        if opts.extra_cds.len() > 4 {
            bail!(
                "q35's AHCI has room for 4 extra CD drives, not {}",
                opts.extra_cds.len()
            );
        }
        for (i, img) in opts.extra_cds.iter().enumerate() {
            if !img.is_file() {
                bail!("{} does not exist", img.display());
            }
            cmd.args([
                "-drive",
                &format!(
                    "file={},media=cdrom,if=none,id=xcd{i},readonly=on",
                    img.display()
                ),
            ])
            .args(["-device", &format!("ide-cd,drive=xcd{i},bus=ide.{}", i + 2)]);
        }
        for (i, img) in opts.extra_disks.iter().enumerate() {
            if !img.is_file() {
                bail!("{} does not exist", img.display());
            }
            cmd.args([
                "-drive",
                &format!(
                    "file={},format=raw,if=none,id=xdisk{i},snapshot=on",
                    img.display()
                ),
            ])
            .args(["-device", &format!("virtio-blk-pci,drive=xdisk{i}")]);
        }
        cmd.stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        let child = cmd
            .spawn()
            .context("starting qemu-system-x86_64 (apt-get install qemu-system-x86)")?;
        Ok(Appliance {
            child: Some(child),
            dir,
            api_port,
            started: Instant::now(),
            exit: None,
        })
    }

    /// What QEMU logged of its CPUs' resets (empty if nothing).
    pub fn qemu_log(&self) -> String {
        let b = std::fs::read(self.dir.path().join(QEMU_LOG)).unwrap_or_default();
        String::from_utf8_lossy(&b).into_owned()
    }

    /// Seconds since QEMU was started.
    pub fn elapsed(&self) -> Duration {
        self.started.elapsed()
    }

    /// The file QEMU writes the serial console to.
    pub fn serial_path(&self) -> PathBuf {
        self.dir.path().join("serial.log")
    }

    /// The serial console so far.
    pub fn serial(&self) -> String {
        let b = std::fs::read(self.serial_path()).unwrap_or_default();
        String::from_utf8_lossy(&b).into_owned()
    }

    /// Waits until the serial console contains `marker`. Gives up early
    /// when the console has shown a kernel failure for
    /// [`KERNEL_FAILURE_GRACE`] without reaching `marker`.
    pub fn wait_for_serial(&mut self, marker: &str, timeout: Duration) -> Result<()> {
        let end = Instant::now() + timeout;
        let mut failure_seen: Option<Instant> = None;
        loop {
            let console = self.serial();
            if console.contains(marker) {
                return Ok(());
            }
            if let Some(st) = self.try_exit()? {
                bail!("QEMU exited ({st}) before the console showed {marker:?}");
            }
            if let Some(line) = kernel_failure_line(&console) {
                let since = *failure_seen.get_or_insert_with(Instant::now);
                if since.elapsed() > KERNEL_FAILURE_GRACE {
                    bail!("the console did not show {marker:?}; a kernel failed: {line}");
                }
            }
            if Instant::now() > end {
                bail!("the console did not show {marker:?} within {timeout:?}");
            }
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    /// The serial console's length in bytes (an offset for
    /// [`Appliance::wait_for_serial_from`]).
    pub fn serial_bytes(&self) -> u64 {
        std::fs::metadata(self.serial_path()).map_or(0, |m| m.len())
    }

    /// Waits until the serial console, from byte `from` on, contains
    /// `marker`, reading only what has come since the last look. False
    /// when `timeout` passes or QEMU exits first: the caller finds out
    /// why by its own means.
    pub fn wait_for_serial_from(
        &mut self,
        from: u64,
        marker: &str,
        timeout: Duration,
    ) -> Result<bool> {
        use std::io::{Read, Seek, SeekFrom};
        let end = Instant::now() + timeout;
        let mut file = std::fs::File::open(self.serial_path()).context("opening the console")?;
        file.seek(SeekFrom::Start(from))?;
        let mut seen: Vec<u8> = Vec::new();
        loop {
            file.read_to_end(&mut seen)?;
            if seen.windows(marker.len()).any(|w| w == marker.as_bytes()) {
                return Ok(true);
            }
            // Only a marker's length of what was read can still be the
            // start of a match.
            let keep = seen.len().saturating_sub(marker.len());
            seen.drain(..keep);
            if self.try_exit()?.is_some() || Instant::now() > end {
                return Ok(false);
            }
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    fn try_exit(&mut self) -> Result<Option<ExitStatus>> {
        if let Some(st) = self.exit {
            return Ok(Some(st));
        }
        if let Some(c) = self.child.as_mut() {
            if let Some(st) = c.try_wait()? {
                self.exit = Some(st);
                return Ok(Some(st));
            }
        }
        Ok(None)
    }

    /// If QEMU has exited: how, and what it wrote on stderr.
    pub fn qemu_exit_report(&mut self) -> Option<String> {
        let st = self.try_exit().ok().flatten()?;
        let mut err = String::new();
        if let Some(e) = self.child.as_mut().and_then(|c| c.stderr.as_mut()) {
            let _ = std::io::Read::read_to_string(e, &mut err);
        }
        Some(format!("QEMU exited ({st}); its stderr:\n{err}"))
    }

    /// Waits for QEMU to exit by itself.
    pub fn wait_exit(&mut self, timeout: Duration) -> Result<ExitStatus> {
        let end = Instant::now() + timeout;
        loop {
            if let Some(st) = self.try_exit()? {
                return Ok(st);
            }
            if Instant::now() > end {
                bail!("QEMU did not exit within {timeout:?}");
            }
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    /// Runs one QMP command and returns its `return` value.
    pub fn qmp(&self, command: &str, arguments: Value) -> Result<Value> {
        qmp_execute(&self.dir.path().join("qmp.sock"), command, arguments)
    }

    /// QEMU's view of the appliance's vCPUs (`info cpus` and `info
    /// registers -a` from its monitor), for a failure report: it tells a
    /// vCPU halted in the appliance's idle loop from one spinning, and
    /// shows where. Framed by `----- vCPUs -----` and `----- end -----`
    /// lines; errors are reported in the text, never returned.
    pub fn cpu_report(&self) -> String {
        let mut out = String::from("----- vCPUs -----\n");
        for cmd in ["info cpus", "info registers -a"] {
            out += &match self.qmp("human-monitor-command", json!({ "command-line": cmd })) {
                Ok(v) => format!("(qemu) {cmd}\n{}\n", v.as_str().unwrap_or_default()),
                Err(e) => format!("(qemu) {cmd}: {e:#}\n"),
            };
        }
        out + "----- end -----"
    }

    /// Presses the ACPI power button.
    pub fn power_button(&self) -> Result<()> {
        self.qmp("system_powerdown", json!({})).map(|_| ())
    }

    /// Sends a request over init's test control channel and returns the
    /// `data` of its answer.
    pub fn testctl(&self, request: Value) -> Result<Value> {
        self.testctl_within(request, Duration::from_secs(30))
    }

    /// [`Appliance::testctl`], waiting at most `timeout` for the answer.
    pub fn testctl_within(&self, request: Value, timeout: Duration) -> Result<Value> {
        let s = UnixStream::connect(self.dir.path().join("testctl.sock"))
            .context("connecting to the test channel")?;
        s.set_read_timeout(Some(timeout))?;
        let mut w = s.try_clone()?;
        writeln!(w, "{request}")?;
        let mut r = BufReader::new(s);
        loop {
            let mut line = String::new();
            if r.read_line(&mut line)? == 0 {
                bail!("test channel closed");
            }
            let Ok(v) = serde_json::from_str::<Value>(line.trim()) else {
                continue;
            };
            if v["ok"] == json!(true) {
                return Ok(v["data"].clone());
            }
            bail!("init refused {request}: {}", v["error"]);
        }
    }

    /// Whether `e` is a test-channel answer that did not come in time.
    pub fn is_timeout(e: &anyhow::Error) -> bool {
        e.chain().any(|c| {
            c.downcast_ref::<std::io::Error>().is_some_and(|io| {
                matches!(
                    io.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                )
            })
        })
    }

    /// Starts a transient unit running `argv` (never restarted) over the
    /// test channel.
    pub fn run_unit(&self, name: &str, argv: &[&str]) -> Result<()> {
        self.testctl(json!({"cmd":"run","unit":{"name":name,"exec":argv,"restart":"never"}}))
            .map(|_| ())
    }

    /// Waits until unit `name` has run and ended, and says how.
    pub fn wait_unit_stopped(&mut self, name: &str, timeout: Duration) -> Result<UnitExit> {
        let end = Instant::now() + timeout;
        let mut reported = false;
        loop {
            // A nested guest can starve the appliance for longer than one
            // answer's limit: no answer yet is not an error before `end`.
            let st = match self.testctl(json!({"cmd":"status","unit":name})) {
                Err(e) if Self::is_timeout(&e) && Instant::now() < end => {
                    eprintln!("test channel: no answer about {name} yet ({e}); asking again");
                    if !reported {
                        reported = true;
                        eprintln!("{}", self.cpu_report());
                    }
                    continue;
                }
                other => other?,
            };
            let ended = matches!(st["state"].as_str(), Some("stopped" | "failed"));
            if ended && st["pid"].is_null() && !st["last_exit"].is_null() {
                return Ok(UnitExit {
                    how: st["last_exit"].as_str().unwrap_or_default().to_string(),
                    code: st["last_exit_code"].as_i64(),
                    status: st,
                });
            }
            if let Some(q) = self.try_exit()? {
                bail!("QEMU exited ({q}) while unit {name} was {}", st["state"]);
            }
            if Instant::now() > end {
                bail!("unit {name} did not end within {timeout:?}: {st}");
            }
            std::thread::sleep(Duration::from_millis(500));
        }
    }

    /// Copies `/var/log/oxbow/<name>.log` (a unit's stdout and stderr) onto
    /// the serial console between marker lines, so a failing test prints
    /// it with the console. Best effort: errors are ignored.
    /// (Also the kernel's last records of processes killed by their
    /// seccomp filter, such as a VMM's.)
    pub fn show_unit_log(&mut self, name: &str) {
        let shower = format!("show-log-{name}");
        let script = format!(
            "exec >/dev/console 2>&1; echo '----- /var/log/oxbow/{name}.log -----'; \
             cat /var/log/oxbow/{name}.log; echo '----- end of {name}.log -----'; \
             dmesg | grep 'type=1326' | tail -n 20 | sed 's/^/seccomp: /'"
        );
        if self.run_unit(&shower, &["/bin/sh", "-c", &script]).is_ok() {
            let _ = self.wait_unit_stopped(&shower, Duration::from_secs(60));
        }
    }

    /// An API client for the forwarded port.
    pub fn api(&self) -> Result<ApiClient> {
        self.api_with_timeout(Duration::from_secs(30))
    }

    /// An API client for the forwarded port whose requests give up after
    /// `timeout` (see [`ApiClient::with_timeout`]).
    pub fn api_with_timeout(&self, timeout: Duration) -> Result<ApiClient> {
        ApiClient::with_timeout(
            &format!("https://127.0.0.1:{}/api2/json", self.api_port),
            timeout,
        )
    }

    /// Waits until the API answers anything over TLS.
    pub fn wait_for_api(&mut self, timeout: Duration) -> Result<ApiClient> {
        let probe = self.api_with_timeout(Duration::from_secs(2))?;
        let end = Instant::now() + timeout;
        loop {
            if probe.get_status("/version").is_ok() {
                return self.api();
            }
            if let Some(st) = self.try_exit()? {
                bail!("QEMU exited ({st}) before the API answered");
            }
            if Instant::now() > end {
                bail!("the API did not answer within {timeout:?}");
            }
            std::thread::sleep(Duration::from_millis(500));
        }
    }
}

/// `vmm --user` as apid passes it to VM 100's VMM (3000000000 + VMID,
/// `api::guests::runtime::vmm_user`), for the nested tests and benchmarks
/// that run the VMM as apid does.
pub const VMM_USER_OF_VM_100: &str = "3000000100:3000000100";

/// What a Linux kernel prints when it panics, locks up or stalls.
pub const KERNEL_FAILURES: &[&str] = &[
    "Kernel panic",
    "soft lockup",
    "BUG: unable to handle",
    "rcu_preempt detected stalls",
    "corrupted stack end",
];

/// What Oxbow's VMM logs when its guest triple faults. In this nested
/// setup (an emulated SVM below the appliance's KVM) guests triple fault
/// now and then at points where they ran fine before, under QEMU's VMM as
/// under ours (docs/perf.md), so [`with_appliance`] runs such a test
/// again. A VMM that makes its guest fault every time still fails it.
pub const NESTED_GUEST_FAILURE: &str = "vmm: triple fault";

/// The file in an appliance's directory where QEMU logs its CPUs' resets
/// (`-d cpu_reset`).
const QEMU_LOG: &str = "qemu-reset.log";

/// What QEMU's reset log says when an emulated CPU triple faults outside a
/// nested guest: the appliance's own kernel failed, and with `-no-reboot`
/// QEMU exits at once, the console silent.
pub const APPLIANCE_TRIPLE_FAULT: &str = "Triple fault";

/// How long [`Appliance::wait_for_serial`] waits on after the console
/// showed a kernel failure (a stall can end by itself).
pub const KERNEL_FAILURE_GRACE: Duration = Duration::from_secs(120);

/// How long init must stay silent on its test channel, with nothing
/// reaching the console, before [`Appliance::kernel_failure`] calls the
/// appliance frozen.
pub const FROZEN_QUIET: Duration = Duration::from_secs(60);

/// How many appliances [`with_appliance`] boots at most for one test.
pub const ATTEMPTS: u32 = 3;

/// The first console line that shows a kernel failure, if any.
fn kernel_failure_line(console: &str) -> Option<&str> {
    console
        .lines()
        .find(|l| KERNEL_FAILURES.iter().any(|f| l.contains(f)))
}

impl Appliance {
    /// The first line of a unit's log in the appliance that shows a nested
    /// guest's triple fault ([`NESTED_GUEST_FAILURE`]), if the appliance
    /// still answers and has one. Every VMM the tests start, by hand or
    /// through apid, is a unit of init and logs to `/var/log/oxbow`.
    pub fn nested_guest_failure(&mut self) -> Option<String> {
        const MARK: &str = "NESTED-GUEST-FAILURE ";
        let found = |console: &str| {
            console
                .lines()
                .find_map(|l| l.split_once(MARK).map(|(_, rest)| rest.to_string()))
        };
        if let Some(line) = found(&self.serial()) {
            return Some(line);
        }
        if self.try_exit().ok().flatten().is_some() || !self.responsive() {
            return None;
        }
        let script = format!(
            "exec >/dev/console 2>&1; grep -H '{NESTED_GUEST_FAILURE}' /var/log/oxbow/*.log \
             | head -n 1 | sed 's/^/{MARK}/'"
        );
        self.run_unit("find-nested-failure", &["/bin/sh", "-c", &script])
            .ok()?;
        self.wait_unit_stopped("find-nested-failure", Duration::from_secs(60))
            .ok()?;
        found(&self.serial())
    }

    /// Whether init answers on the test channel within a few seconds.
    /// Appliances booted without the channel never do.
    pub fn responsive(&self) -> bool {
        self.testctl_within(
            json!({"cmd":"status","unit":"apid"}),
            Duration::from_secs(15),
        )
        .is_ok()
    }

    /// What shows that the appliance's own kernel failed, if it did:
    /// - the console shows a panic, lockup or stall, *and* QEMU has exited
    ///   or init no longer answers (a nested guest writes to the same
    ///   console, so a failure line alone may be the guest's);
    /// - or QEMU exited because the appliance's CPU triple faulted (its
    ///   reset log says so; a nested guest's triple fault is the
    ///   appliance's KVM's business and never resets the appliance);
    /// - or the appliance froze: it has a test channel, init does not
    ///   answer on it, and nothing reaches the console for
    ///   [`FROZEN_QUIET`]. No Oxbow process can silence both the kernel's
    ///   console and PID 1; nested KVM under QEMU's emulated CPU sometimes
    ///   stops the whole appliance without a word.
    pub fn kernel_failure(&mut self) -> Option<String> {
        let console = self.serial();
        let exited = self.try_exit().ok().flatten().is_some();
        if exited && self.qemu_log().contains(APPLIANCE_TRIPLE_FAULT) {
            return Some("its CPU triple faulted: QEMU logged a reset for it and exited".into());
        }
        if let Some(line) = kernel_failure_line(&console) {
            let line = line.to_string();
            return (exited || !self.responsive()).then_some(line);
        }
        if exited || !self.dir.path().join("testctl.sock").exists() {
            return None;
        }
        let (start, before) = (Instant::now(), console.len());
        if self.responsive() {
            return None;
        }
        std::thread::sleep(FROZEN_QUIET.saturating_sub(start.elapsed()));
        let silent = self.serial().len() == before && !self.responsive();
        silent.then(|| {
            format!(
                "froze: no answer on the test channel and no console output for {:?}\n{}",
                start.elapsed(),
                self.cpu_report()
            )
        })
    }
}

/// Runs `test` on an appliance booted with `opts()`. When the test fails
/// because the appliance's own kernel failed ([`Appliance::kernel_failure`]:
/// nested KVM under QEMU's emulated CPU occasionally panics or locks up the
/// appliance's kernel, below any Oxbow process) or a nested guest triple
/// faulted ([`Appliance::nested_guest_failure`]), the console is printed and
/// the test runs again on a fresh appliance, [`ATTEMPTS`] times at most.
/// Any other failure fails the test at once, with the console printed.
pub fn with_appliance(opts: impl Fn() -> BootOptions, test: impl Fn(&mut Appliance)) {
    for attempt in 1..=ATTEMPTS {
        let mut slot: Option<Appliance> = None;
        let run = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            let vm = slot.insert(Appliance::boot(opts()).expect("QEMU starts"));
            test(vm);
        }));
        let Err(panic) = run else { return };
        let failure = slot.as_mut().and_then(|vm| {
            vm.kernel_failure()
                .map(|line| format!("the appliance's kernel failed ({line})"))
                .or_else(|| {
                    vm.nested_guest_failure()
                        .map(|line| format!("a nested guest triple faulted ({line})"))
                })
        });
        match failure {
            Some(what) if attempt < ATTEMPTS => {
                let vm = slot.take().expect("an appliance that failed");
                eprintln!(
                    "----- attempt {attempt} of {ATTEMPTS}: {what}; its console ({:.1} s): -----\n{}\n\
                     ----- booting a fresh appliance -----",
                    vm.elapsed().as_secs_f64(),
                    vm.serial()
                );
            }
            // Unwinding drops the appliance, which prints its console.
            _ => std::panic::resume_unwind(panic),
        }
    }
}

/// How a unit's last run ended (see [`Appliance::wait_unit_stopped`]).
#[derive(Debug, Clone)]
pub struct UnitExit {
    /// init's description, e.g. `exited with status 1`, `killed by SIGKILL`.
    pub how: String,
    /// The exit code, if it exited rather than being killed.
    pub code: Option<i64>,
    /// The full status object.
    pub status: Value,
}

/// Connects to the QMP socket `sock`, runs one command and returns its
/// `return` value.
pub fn qmp_execute(sock: &Path, command: &str, arguments: Value) -> Result<Value> {
    let s = UnixStream::connect(sock).context("connecting to QMP")?;
    s.set_read_timeout(Some(Duration::from_secs(30)))?;
    let mut w = s.try_clone()?;
    let mut r = BufReader::new(s);
    let mut line = String::new();
    r.read_line(&mut line)?; // greeting
    writeln!(w, "{}", json!({"execute": "qmp_capabilities"}))?;
    read_qmp_return(&mut r)?;
    writeln!(w, "{}", json!({"execute": command, "arguments": arguments}))?;
    read_qmp_return(&mut r)
}

fn read_qmp_return(r: &mut impl BufRead) -> Result<Value> {
    loop {
        let mut line = String::new();
        if r.read_line(&mut line)? == 0 {
            bail!("QMP closed");
        }
        let v: Value = serde_json::from_str(line.trim())?;
        if let Some(ret) = v.get("return") {
            return Ok(ret.clone());
        }
        if let Some(err) = v.get("error") {
            bail!("QMP error: {err}");
        }
    }
}

impl Drop for Appliance {
    fn drop(&mut self) {
        let exited = self.try_exit().ok().flatten();
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
            if std::thread::panicking() {
                let mut err = String::new();
                if let Some(mut e) = c.stderr.take() {
                    let _ = std::io::Read::read_to_string(&mut e, &mut err);
                }
                if let Some(st) = exited {
                    let faults = self.qemu_log().matches(APPLIANCE_TRIPLE_FAULT).count();
                    eprintln!(
                        "----- QEMU had exited by itself ({st}); its reset log shows {faults} \
                         triple fault(s) -----"
                    );
                }
                eprintln!("----- QEMU stderr -----\n{err}");
            }
        }
        if std::thread::panicking() {
            eprintln!(
                "----- serial console ({:.1} s) -----\n{}\n----- end -----",
                self.elapsed().as_secs_f64(),
                self.serial()
            );
        }
    }
}

/// A small client of Oxbow's (and Proxmox's) `/api2/json`.
pub struct ApiClient {
    base: String,
    http: reqwest::blocking::Client,
    ticket: Option<String>,
    csrf: Option<String>,
}

/// A response: status and JSON body.
#[derive(Debug)]
pub struct ApiResponse {
    /// HTTP status code.
    pub status: u16,
    /// The body as JSON (`null` if it was not JSON).
    pub body: Value,
}

impl ApiClient {
    /// A client for `base`, e.g. `https://127.0.0.1:8006/api2/json`. The
    /// appliance's certificate is self-signed, so it is not verified.
    pub fn new(base: &str) -> Result<ApiClient> {
        ApiClient::with_timeout(base, Duration::from_secs(30))
    }

    /// A client whose requests give up after `timeout`. Pollers want a
    /// short one: while the guest is not listening yet, QEMU's user network
    /// holds a forwarded connection open and retries its SYN to the guest
    /// with exponential back-off, so a long-lived attempt can wait seconds
    /// after the port has opened. A fresh connection does not.
    pub fn with_timeout(base: &str, timeout: Duration) -> Result<ApiClient> {
        let http = reqwest::blocking::Client::builder()
            .danger_accept_invalid_certs(true)
            .timeout(timeout)
            .build()?;
        Ok(ApiClient {
            base: base.trim_end_matches('/').to_string(),
            http,
            ticket: None,
            csrf: None,
        })
    }

    fn finish(resp: reqwest::blocking::Response) -> Result<ApiResponse> {
        let status = resp.status();
        let text = resp.text()?;
        Ok(ApiResponse {
            status: status.as_u16(),
            body: serde_json::from_str(&text).unwrap_or(Value::Null),
        })
    }

    fn with_auth(
        &self,
        rb: reqwest::blocking::RequestBuilder,
        csrf: bool,
    ) -> reqwest::blocking::RequestBuilder {
        let mut rb = rb;
        if let Some(t) = &self.ticket {
            rb = rb.header("Cookie", format!("PVEAuthCookie={}", urlencode(t)));
        }
        if csrf {
            if let Some(c) = &self.csrf {
                rb = rb.header("CSRFPreventionToken", c);
            }
        }
        rb
    }

    /// GET with the ticket, if logged in.
    pub fn get(&self, path: &str) -> Result<ApiResponse> {
        let rb = self.with_auth(self.http.get(format!("{}{path}", self.base)), false);
        Self::finish(rb.send()?)
    }

    /// GET returning only the status code.
    pub fn get_status(&self, path: &str) -> Result<u16> {
        Ok(self.get(path)?.status)
    }

    /// POST form parameters, with ticket and CSRF token when `csrf` is set.
    pub fn post(&self, path: &str, form: &[(&str, &str)], csrf: bool) -> Result<ApiResponse> {
        let rb = self.with_auth(
            self.http.post(format!("{}{path}", self.base)).form(form),
            csrf,
        );
        Self::finish(rb.send()?)
    }

    /// Logs in; on success keeps the ticket and CSRF token.
    pub fn login(&mut self, user: &str, password: &str) -> Result<ApiResponse> {
        let r = self.post(
            "/access/ticket",
            &[("username", user), ("password", password)],
            false,
        )?;
        if r.status == 200 {
            self.ticket = r.body["data"]["ticket"].as_str().map(str::to_string);
            self.csrf = r.body["data"]["CSRFPreventionToken"]
                .as_str()
                .map(str::to_string);
        }
        Ok(r)
    }
}

fn urlencode(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::kernel_failure_line;

    #[test]
    fn kernel_failures_are_found_on_the_console() {
        let ok = "oxbow: stage 2\n[   1.0] virtio_net virtio0 enp0s2: renamed\n";
        assert_eq!(kernel_failure_line(ok), None);
        let lockup = "oxbow: stage 2\n[  32.56] watchdog: BUG: soft lockup - CPU#0 stuck for 26s! [init:1]\n";
        assert_eq!(
            kernel_failure_line(lockup),
            Some("[  32.56] watchdog: BUG: soft lockup - CPU#0 stuck for 26s! [init:1]")
        );
        let panic =
            "x\n[ 9.1] Kernel panic - not syncing: corrupted stack end detected inside scheduler\n";
        assert!(kernel_failure_line(panic).is_some_and(|l| l.contains("Kernel panic")));
    }
}
