//! Stage 2: PID 1 of the system.
//!
//! Mounts what the system needs, loads the drivers of the network and
//! storage hardware, reads the seed volume, sets the host name, prepares
//! cgroup v2, starts a thread that loads the feature modules (KVM, VLANs,
//! nftables, device-mapper…) once the services are up, then hands over to the
//! [`Supervisor`] until a shutdown, which ends in [`crate::power::finish`].
//! A panic anywhere is caught and the supervisor starts over: PID 1 must
//! never exit.

use std::path::{Path, PathBuf};

use nix::mount::MsFlags;
use nix::sys::reboot::set_cad_enabled;

use crate::cmdline::KernelCmdline;
use crate::console::say;
use crate::modules::{load_list, module_dir, Loader, ModIndex};
use crate::seed::{load_seed, FsKind, SeedNeed, SeedOutcome, SeedPaths};
use crate::service::{parse_table, ServiceTable};
use crate::supervisor::{prepare_cgroups, Supervisor, SupervisorConfig};

/// The service table.
pub const SERVICE_TABLE: &str = "/etc/oxbow/services.toml";
/// The state directory.
pub const STATE_DIR: &str = "/var/lib/oxbow";

fn mount_if_missing(src: &str, target: &str, fstype: &str, flags: MsFlags, data: Option<&str>) {
    if crate::stage1::is_mount_point(target) {
        return;
    }
    let _ = std::fs::create_dir_all(target);
    if let Err(e) = nix::mount::mount(Some(src), target, Some(fstype), flags, data) {
        say(format_args!("mount {fstype} on {target}: {e}"));
    }
}

/// Mounts the cgroup v2 hierarchy with `nsdelegate` and `favordynmods`
/// (Linux 6.0 and later; without it where the kernel refuses it). Every
/// service and guest init starts moves a new process into its cgroup
/// before exec; without `favordynmods` each move waits for an RCU grace
/// period (the kernel's per-CPU reader lock on thread groups), which init
/// saw as 40-100 ms per service start under emulation. The price is a
/// plain reader lock on fork and exit.
fn mount_cgroup2(flags: MsFlags) {
    const TARGET: &str = "/sys/fs/cgroup";
    let favoured = !crate::stage1::is_mount_point(TARGET)
        && std::fs::create_dir_all(TARGET).is_ok()
        && nix::mount::mount(
            Some("cgroup2"),
            TARGET,
            Some("cgroup2"),
            flags,
            Some("nsdelegate,favordynmods"),
        )
        .is_ok();
    if !favoured {
        mount_if_missing("cgroup2", TARGET, "cgroup2", flags, Some("nsdelegate"));
    }
}

/// Written once the system modules are loaded; transient units (guests)
/// wait for it, since they need KVM, taps and bridges.
pub const MODULES_READY: &str = "/run/oxbow/modules.ready";
/// The feature modules stage 2 loads: KVM, bridging, VLANs, bonds, nftables,
/// device-mapper… in dependency order.
pub const SYSTEM_MODULE_LIST: &str = "/etc/oxbow/modules-system.list";
/// Module trees whose drivers are loaded before any service starts, for the
/// hardware present: network and storage controllers, USB, ACPI.
const HARDWARE_TREES: &[&str] = &[
    "kernel/drivers/net/",
    "kernel/drivers/block/",
    "kernel/drivers/nvme/",
    "kernel/drivers/ata/",
    "kernel/drivers/scsi/",
    "kernel/drivers/virtio/",
    "kernel/drivers/usb/",
    "kernel/drivers/acpi/",
];
/// Module trees whose drivers are loaded in the background, with the system
/// list: KVM (matched by CPU feature), hardware random number generators,
/// and keyboards and other input devices for the local console.
const BACKGROUND_TREES: &[&str] = &[
    "kernel/arch/x86/kvm/",
    "kernel/drivers/char/hw_random/",
    "kernel/drivers/input/",
    "kernel/drivers/hid/",
];

/// Loads the drivers of the network and storage hardware present, and the
/// bridge module netd needs. Returns the loader for later loads.
fn hardware_modules() -> Option<Loader> {
    let t0 = std::time::Instant::now();
    let dir = module_dir();
    let sys = Path::new("/sys");
    // Only the aliases of the devices present now are read; the background
    // thread reads the full index for what appears later.
    let devices = crate::modules::device_modaliases(sys);
    let idx = match ModIndex::load_for(&dir, Some(&devices)) {
        Ok(idx) => idx,
        Err(e) => {
            say(format_args!("{}/modules.dep: {e}", dir.display()));
            return None;
        }
    };
    let mut loader = Loader::new(dir, idx);
    loader.coldplug_devices(
        &devices,
        |p| HARDWARE_TREES.iter().any(|t| p.starts_with(t)),
        &["bridge"],
        true,
    );
    loader.report.announce(&format!(
        "hardware modules in {} ms",
        t0.elapsed().as_millis()
    ));
    Some(loader)
}

/// Stage 2's hardware pass ([`hardware_modules`]), running on a thread of
/// its own while the seed is looked for, or its result. Under emulation
/// the pass takes 0.1-0.2 s, mostly reading the module index, and a seed
/// on a CD, whose drivers stage 1 loaded, needs none of it: the seed
/// search waits for the pass only when it needs a module or finds no seed
/// without it.
enum HardwarePass {
    Running(std::thread::JoinHandle<Option<Loader>>),
    Done(Option<Box<Loader>>),
}

impl HardwarePass {
    fn start() -> Self {
        let spawned = std::thread::Builder::new()
            .name("hardware".into())
            .spawn(|| {
                block_signals();
                hardware_modules()
            });
        match spawned {
            Ok(handle) => HardwarePass::Running(handle),
            Err(e) => {
                say(format_args!("cannot start the hardware pass thread: {e}"));
                HardwarePass::Done(hardware_modules().map(Box::new))
            }
        }
    }

    /// Waits for the pass to end and returns its loader.
    fn loader(&mut self) -> Option<&mut Loader> {
        if let HardwarePass::Running(_) = self {
            if let HardwarePass::Running(h) = std::mem::replace(self, HardwarePass::Done(None)) {
                let loader = h.join().unwrap_or_else(|_| {
                    say("the hardware pass panicked");
                    None
                });
                *self = HardwarePass::Done(loader.map(Box::new));
            }
        }
        match self {
            HardwarePass::Done(l) => l.as_deref_mut(),
            HardwarePass::Running(_) => None,
        }
    }

    /// Waits for the pass to end and hands its loader over.
    fn into_loader(mut self) -> Option<Loader> {
        self.loader();
        match self {
            HardwarePass::Done(l) => l.map(|l| *l),
            HardwarePass::Running(_) => None,
        }
    }
}

/// How long the feature modules wait for the services to settle before
/// they load anyway (a service stuck in its start, say).
const SETTLE_LIMIT: std::time::Duration = std::time::Duration::from_secs(10);

/// Loads the system module list and the background drivers on a thread of
/// its own, then writes [`MODULES_READY`]. The thread first waits until the
/// supervisor says the services have settled (or [`SETTLE_LIMIT`]): under
/// emulation, loading the feature modules alongside the services' start
/// delayed the API by about 0.4 s (docs/perf.md). Nothing at boot needs
/// them earlier: guests wait for [`MODULES_READY`], and a VLAN, bond or
/// nftables request before then loads its module through the kernel's own
/// on-demand loading.
fn system_modules_in_background(hardware: HardwarePass, settled: std::sync::mpsc::Receiver<()>) {
    let work = move || {
        block_signals();
        let loader = hardware.into_loader();
        let _ = settled.recv_timeout(SETTLE_LIMIT);
        // One module at a time at the lowest priority: the services that
        // start meanwhile come first. (Nice values are per thread on Linux.)
        // SAFETY: setpriority only reads its integer arguments; 0 names the
        // calling thread.
        unsafe {
            libc::setpriority(libc::PRIO_PROCESS, 0, 19);
        }
        let list = std::fs::read_to_string(SYSTEM_MODULE_LIST).unwrap_or_else(|e| {
            say(format_args!("{SYSTEM_MODULE_LIST}: {e}"));
            String::new()
        });
        let report = match loader {
            Some(mut l) => {
                // Counted already: the hardware and seed modules.
                l.report = Default::default();
                // The full index, so devices that appeared since (behind a
                // USB controller, say) find their drivers too.
                match ModIndex::load(&module_dir()) {
                    Ok(idx) => l.set_index(idx),
                    Err(e) => say(format_args!("module index: {e}")),
                }
                let listed: Vec<String> = crate::modules::parse_list(&list)
                    .into_iter()
                    .map(crate::modules::name_of)
                    .collect();
                let listed: Vec<&str> = listed.iter().map(String::as_str).collect();
                l.coldplug_devices(
                    &crate::modules::device_modaliases(Path::new("/sys")),
                    |p| BACKGROUND_TREES.iter().any(|t| p.starts_with(t)),
                    &listed,
                    false,
                );
                l.report
            }
            // No depmod index: walk the list, which is in dependency order.
            None => load_list(Path::new(SYSTEM_MODULE_LIST), &module_dir()).unwrap_or_default(),
        };
        report.announce("system modules");
        if let Err(e) = std::fs::write(MODULES_READY, b"") {
            say(format_args!("{MODULES_READY}: {e}"));
        }
    };
    let spawned = std::thread::Builder::new()
        .name("modules".into())
        .spawn(work);
    if let Err(e) = spawned {
        say(format_args!("cannot start the module loader thread: {e}"));
        // Guests would wait forever; let them try and report what fails.
        let _ = std::fs::write(MODULES_READY, b"");
    }
}

/// Blocks every signal in the calling thread: PID 1's signals belong to
/// the supervisor's signalfd, and one delivered to a helper thread instead
/// would be lost.
fn block_signals() {
    let _ = nix::sys::signal::pthread_sigmask(
        nix::sys::signal::SigmaskHow::SIG_BLOCK,
        Some(&nix::sys::signal::SigSet::all()),
        None,
    );
}

/// Reads the programs of the table's services once, on a thread of their
/// own, while this one does the hardware pass and the seed: their pages
/// are then in the page cache when the services start, instead of being
/// read and decompressed from the squashfs one fault at a time on their
/// way to readiness.
fn prefetch_programs(table: &ServiceTable) {
    let programs: Vec<PathBuf> = table
        .services
        .iter()
        .filter_map(|s| s.exec.first())
        .map(PathBuf::from)
        .collect();
    let spawned = std::thread::Builder::new()
        .name("prefetch".into())
        .spawn(move || {
            block_signals();
            let mut buf = vec![0u8; 128 * 1024];
            for path in programs {
                if let Ok(mut f) = std::fs::File::open(&path) {
                    while matches!(std::io::Read::read(&mut f, &mut buf), Ok(n) if n > 0) {}
                }
            }
        });
    if let Err(e) = spawned {
        say(format_args!("prefetching the services' programs: {e}"));
    }
}

/// Runs PID 1. Never returns.
pub fn run() -> ! {
    crate::console::install_panic_hook();
    if let Err(e) = crate::stage1::mount_pseudo_filesystems() {
        say(e);
    }
    crate::stage1::reopen_console();
    say(format_args!(
        "stage 2: oxbow init {}",
        env!("CARGO_PKG_VERSION")
    ));
    let nosuid = MsFlags::MS_NOSUID | MsFlags::MS_NODEV;
    mount_if_missing(
        "devpts",
        "/dev/pts",
        "devpts",
        MsFlags::MS_NOSUID | MsFlags::MS_NOEXEC,
        Some("mode=0620,ptmxmode=0666"),
    );
    mount_if_missing("tmpfs", "/dev/shm", "tmpfs", nosuid, Some("mode=1777"));
    mount_if_missing("tmpfs", "/tmp", "tmpfs", nosuid, Some("mode=1777"));
    mount_cgroup2(nosuid | MsFlags::MS_NOEXEC);
    for d in ["/run/oxbow", "/var/log/oxbow", STATE_DIR] {
        let _ = std::fs::create_dir_all(d);
    }
    // Ctrl-alt-del then reaches PID 1 as SIGINT instead of an instant reboot.
    let _ = set_cad_enabled(false);

    let table_text = std::fs::read_to_string(SERVICE_TABLE).unwrap_or_else(|e| {
        say(format_args!("{SERVICE_TABLE}: {e}"));
        String::new()
    });
    let table = parse_table(&table_text);
    prefetch_programs(&table);

    let cmdline = KernelCmdline::read();
    let mut hardware = HardwarePass::start();
    let seed_paths = SeedPaths {
        mount_point: PathBuf::from("/run/oxbow/seed"),
        answer_copy: PathBuf::from("/run/oxbow/answer.toml"),
        state_dir: PathBuf::from(STATE_DIR),
    };
    let mut hostname = std::fs::read_to_string("/etc/hostname")
        .ok()
        .map(|h| h.trim().to_string())
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "oxbow".to_string());
    let seed_modules = |need: SeedNeed| {
        let modules: &[&str] = match need {
            SeedNeed::Filesystem(FsKind::Vfat) => &["vfat", "nls_cp437", "nls_utf8", "nls_ascii"],
            SeedNeed::Filesystem(_) => return,
            SeedNeed::UsbDisks => &["usb_storage", "uas", "sd_mod"],
            SeedNeed::Drivers => &[],
        };
        if let Some(l) = hardware.loader() {
            for m in modules {
                l.load(m);
            }
        }
    };
    let seed = load_seed(&seed_paths, seed_modules);
    let (settled_tx, settled_rx) = std::sync::mpsc::channel();
    system_modules_in_background(hardware, settled_rx);
    match seed {
        SeedOutcome::Applied(answer) => {
            say("seed: answer.toml applied (root password set)");
            if let Some(h) = answer.hostname() {
                hostname = h.to_string();
            }
        }
        SeedOutcome::Absent => {}
        SeedOutcome::Unusable(why) => say(format_args!("seed: not used: {why}")),
    }
    if !Path::new(STATE_DIR).join("priv/root.shadow").exists() {
        say("no root password is set, so the API refuses every login: attach a volume labelled OXBOW-SEED with an answer.toml ([global] root-password = \"...\") and reboot");
    }
    if let Err(e) = nix::unistd::sethostname(&hostname) {
        say(format_args!("hostname {hostname}: {e}"));
    }
    let _ = std::fs::write("/etc/hostname", format!("{hostname}\n"));

    let cgroup_root = PathBuf::from("/sys/fs/cgroup");
    let cgroup_root = match prepare_cgroups(&cgroup_root) {
        Ok(c) => {
            say(format_args!("cgroup v2 controllers: {}", c.join(" ")));
            Some(cgroup_root)
        }
        Err(e) => {
            say(format_args!(
                "cgroup v2 unavailable, units run without cgroups: {e}"
            ));
            None
        }
    };

    for p in &table.problems {
        say(format_args!("{SERVICE_TABLE}: {p}"));
    }

    let cfg = SupervisorConfig {
        socket_path: PathBuf::from(crate::control::SOCKET_PATH),
        log_dir: PathBuf::from("/var/log/oxbow"),
        cgroup_root,
        test_channel: cmdline
            .flag("oxbow.testctl")
            .then(|| PathBuf::from(cmdline.value("oxbow.testctl.port").unwrap_or("/dev/ttyS1"))),
        power_buttons: crate::power::find_power_buttons(
            Path::new("/sys/class/input"),
            Path::new("/dev/input"),
        ),
        transient_gate: Some(PathBuf::from(MODULES_READY)),
        boot_settled: Some(settled_tx),
    };
    if cfg.power_buttons.is_empty() {
        say("no power button input device found");
    }
    loop {
        let services = table.services.clone();
        let cfg = cfg.clone();
        let outcome = std::panic::catch_unwind(move || {
            let mut sup = Supervisor::new(cfg, services)?;
            Ok::<_, crate::supervisor::SupervisorError>(sup.run())
        });
        match outcome {
            Ok(Ok(kind)) => crate::power::finish(kind),
            Ok(Err(e)) => say(format_args!("supervisor: {e}; retrying in 5 s")),
            Err(_) => say("supervisor panicked; starting it again in 5 s"),
        }
        std::thread::sleep(std::time::Duration::from_secs(5));
    }
}
