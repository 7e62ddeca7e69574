//! A virtual machine: its memory, vCPUs, devices and the loop that runs it
//! until the guest powers off, resets, or is stopped.

use std::io::Write;
use std::os::fd::AsRawFd;
use std::os::unix::thread::JoinHandleExt;
use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

use kvm_bindings::{kvm_pit_config, KVM_PIT_SPEAKER_DUMMY};
use kvm_ioctls::{Cap, IoEventAddress, Kvm, VcpuExit, VcpuFd, VmFd};
use vm_memory::{Bytes, GuestAddress, GuestMemoryMmap};
use vm_superio::{I8042Device, Serial};
use vmm_sys_util::eventfd::EventFd;

use crate::acpi;
use crate::boot::{self, BootError};
use crate::cpu::{self, CpuError};
use crate::devices::{AcpiPm, IrqTrigger, PortBus, ResetTrigger};
use crate::exit::{ExitReason, ExitSignal};
use crate::irq::MsiRouter;
use crate::layout;
use crate::pci::{self, PciBus};
use crate::virtio::blk::Blk;
use crate::virtio::net::{MacAddr, Net};
use crate::virtio::pci::{self as pci_virtio, VirtioPci};
use crate::virtio::rng::Rng;
use crate::virtio::VirtioDevice;

/// Where the guest's serial console goes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SerialOut {
    /// The VMM's stdout, with stdin as the console's input.
    Stdio,
    /// Appended to a file (or written to a device such as /dev/console).
    File(PathBuf),
    /// Discarded.
    Null,
}

/// What to run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VmConfig {
    /// bzImage or ELF vmlinux with a PVH note.
    pub kernel: PathBuf,
    /// Initial ramdisk.
    pub initrd: Option<PathBuf>,
    /// Kernel command line.
    pub cmdline: String,
    /// Guest memory in MiB.
    pub memory_mib: u64,
    /// Number of vCPUs.
    pub cpus: u8,
    /// The serial console.
    pub serial: SerialOut,
    /// The control socket.
    pub api_socket: Option<PathBuf>,
    /// virtio-blk disks, in PCI slot order.
    pub disks: Vec<DiskConfig>,
    /// virtio-net NICs on existing taps, after the disks.
    pub nets: Vec<NetConfig>,
    /// Whether to add a virtio-rng.
    pub rng: bool,
    /// Where kernels unpacked from bzImages are kept ([`crate::kcache`]);
    /// `None` boots a bzImage through its own decompressor every time.
    pub kernel_cache: Option<PathBuf>,
    /// What the VMM gives up before the guest runs.
    pub sandbox: crate::sandbox::Sandbox,
}

/// A NIC.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NetConfig {
    /// The tap it is attached to (must exist; netd or the caller makes it).
    pub tap: String,
    /// Its MAC; a random locally administered one when absent.
    pub mac: Option<MacAddr>,
    /// Whether the kernel's vhost-net moves its frames.
    pub vhost: crate::virtio::net::VhostMode,
    /// Whether it starts with a carrier (`link=down`: no, as a pulled
    /// cable; `set-link` on the control socket changes it).
    pub link_up: bool,
}

/// A disk.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DiskConfig {
    /// A raw image file or a block device.
    pub path: PathBuf,
    /// Refuse guest writes.
    pub readonly: bool,
}

impl Default for VmConfig {
    fn default() -> Self {
        VmConfig {
            kernel: PathBuf::new(),
            initrd: None,
            cmdline: "console=ttyS0".into(),
            memory_mib: 512,
            cpus: 1,
            serial: SerialOut::Stdio,
            api_socket: None,
            disks: Vec::new(),
            nets: Vec::new(),
            rng: true,
            kernel_cache: None,
            sandbox: crate::sandbox::Sandbox::default(),
        }
    }
}

/// Errors while building or running a VM.
#[derive(Debug, thiserror::Error)]
pub enum VmError {
    /// The configuration cannot work.
    #[error("{0}")]
    Config(String),
    /// A KVM ioctl failed.
    #[error("KVM {what}: {source}")]
    Kvm {
        /// The step.
        what: &'static str,
        /// The cause.
        source: kvm_ioctls::Error,
    },
    /// Guest memory could not be set up.
    #[error("guest memory: {0}")]
    Memory(String),
    /// Loading the kernel or initrd failed.
    #[error(transparent)]
    Boot(#[from] BootError),
    /// Setting up a vCPU failed.
    #[error(transparent)]
    Cpu(#[from] CpuError),
    /// An I/O error outside the guest (serial file, eventfds, socket).
    #[error("{what}: {source}")]
    Io {
        /// The step.
        what: String,
        /// The cause.
        source: std::io::Error,
    },
}

fn kvm(what: &'static str) -> impl Fn(kvm_ioctls::Error) -> VmError {
    move |source| VmError::Kvm { what, source }
}

fn io(what: impl Into<String>) -> impl FnOnce(std::io::Error) -> VmError {
    let what = what.into();
    move |source| VmError::Io { what, source }
}

/// Whether the vCPUs run, wait, or are finishing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RunState {
    /// Running guest code.
    Running,
    /// Parked outside KVM_RUN.
    Paused,
    /// Leaving for good.
    Exiting,
}

/// Shared between the vCPU threads and whoever pauses or stops them.
#[derive(Debug)]
pub struct RunControl {
    state: Mutex<RunState>,
    cv: Condvar,
    parked: AtomicUsize,
}

impl RunControl {
    fn new() -> RunControl {
        RunControl {
            state: Mutex::new(RunState::Running),
            cv: Condvar::new(),
            parked: AtomicUsize::new(0),
        }
    }

    /// The current state.
    pub fn state(&self) -> RunState {
        *self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn set(&self, s: RunState) {
        *self.state.lock().unwrap_or_else(|e| e.into_inner()) = s;
        self.cv.notify_all();
    }

    /// Blocks while paused; returns false when the vCPU must exit.
    fn wait_runnable(&self) -> bool {
        let mut g = self.state.lock().unwrap_or_else(|e| e.into_inner());
        if *g == RunState::Paused {
            self.parked.fetch_add(1, Ordering::SeqCst);
            while *g == RunState::Paused {
                g = self.cv.wait(g).unwrap_or_else(|e| e.into_inner());
            }
            self.parked.fetch_sub(1, Ordering::SeqCst);
        }
        *g == RunState::Running
    }
}

/// The signal that kicks a vCPU thread out of KVM_RUN.
fn kick_signal() -> libc::c_int {
    vmm_sys_util::signal::SIGRTMIN()
}

extern "C" fn on_kick(_: libc::c_int, _: *mut libc::siginfo_t, _: *mut libc::c_void) {}

/// What the control socket and the main loop can reach of a running VM.
#[derive(Debug)]
pub struct VmHandle {
    /// The exit signal.
    pub exit: Arc<ExitSignal>,
    /// The vCPU run state.
    pub run: Arc<RunControl>,
    /// The port bus (for the power button).
    pub bus: Arc<PortBus>,
    threads: Mutex<Vec<libc::pthread_t>>,
    /// With coalesced configuration-address writes: held while a vCPU
    /// replays the ring, which all vCPUs share.
    coalesced: Option<Mutex<()>>,
    /// The configuration.
    pub config: VmConfig,
    /// Each NIC's link, by its tap's name, for `set-link`.
    pub links: Vec<(String, Arc<crate::virtio::net::Link>)>,
    /// Each disk's capacity, by its image's path as given, for
    /// `resize-disk`.
    pub disks: Vec<(PathBuf, Arc<crate::virtio::blk::Capacity>)>,
}

impl VmHandle {
    fn kick_all(&self) {
        let threads = self.threads.lock().unwrap_or_else(|e| e.into_inner());
        for t in threads.iter() {
            // SAFETY: `t` is the pthread id of a vCPU thread that is joined
            // only after `threads` is cleared, so the id is still valid; the
            // signal has a no-op handler installed before any thread starts.
            unsafe { libc::pthread_kill(*t, kick_signal()) };
        }
    }

    /// Parks every vCPU outside KVM_RUN.
    pub fn pause(&self) -> Result<(), String> {
        match self.run.state() {
            RunState::Exiting => return Err("the VM is stopping".into()),
            RunState::Paused => return Ok(()),
            RunState::Running => {}
        }
        self.run.set(RunState::Paused);
        let n = self.threads.lock().map(|t| t.len()).unwrap_or(0);
        for _ in 0..500 {
            if self.run.parked.load(Ordering::SeqCst) >= n {
                return Ok(());
            }
            self.kick_all();
            std::thread::sleep(Duration::from_millis(2));
        }
        Err("vCPUs did not park within 1 s".into())
    }

    /// Lets the vCPUs run again.
    pub fn resume(&self) -> Result<(), String> {
        match self.run.state() {
            RunState::Exiting => Err("the VM is stopping".into()),
            _ => {
                self.run.set(RunState::Running);
                Ok(())
            }
        }
    }

    /// Presses the ACPI power button.
    pub fn shutdown(&self) -> Result<(), String> {
        self.bus.pm.press_power_button().map_err(|e| e.to_string())
    }
}

/// A built VM, ready to run.
pub struct Vm {
    _kvm: Kvm,
    _vm: Arc<VmFd>,
    mem: GuestMemoryMmap,
    vcpus: Vec<VcpuFd>,
    handle: Arc<VmHandle>,
}

impl std::fmt::Debug for Vm {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Vm")
            .field("config", &self.handle.config)
            .finish()
    }
}

fn open_serial(out: &SerialOut) -> Result<Box<dyn Write + Send>, VmError> {
    Ok(match out {
        SerialOut::Stdio => Box::new(std::io::stdout()),
        SerialOut::Null => Box::new(std::io::sink()),
        SerialOut::File(p) => Box::new(
            std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(p)
                .map_err(io(format!("serial output {}", p.display())))?,
        ),
    })
}

/// Checks a configuration before anything is created.
pub fn validate(c: &VmConfig) -> Result<(), VmError> {
    if c.cpus == 0 || c.cpus > 254 {
        return Err(VmError::Config(format!(
            "--cpus {}: must be 1 to 254",
            c.cpus
        )));
    }
    if c.memory_mib < layout::MIN_MEMORY_MIB {
        return Err(VmError::Config(format!(
            "--memory {} MiB: at least {} MiB are needed to unpack a kernel",
            c.memory_mib,
            layout::MIN_MEMORY_MIB
        )));
    }
    if c.memory_mib > (1 << 20) {
        return Err(VmError::Config(format!(
            "--memory {} MiB: at most 1 TiB",
            c.memory_mib
        )));
    }
    for (what, p) in
        std::iter::once(("kernel", &c.kernel)).chain(c.initrd.iter().map(|p| ("initrd", p)))
    {
        let m = std::fs::metadata(p).map_err(io(format!("{what} {}", p.display())))?;
        if !m.is_file() {
            return Err(VmError::Config(format!(
                "{what} {}: not a regular file",
                p.display()
            )));
        }
    }
    for n in &c.nets {
        let name = std::ffi::CString::new(n.tap.as_str())
            .map_err(|_| VmError::Config(format!("tap {:?}: bad name", n.tap)))?;
        // SAFETY: `name` is a valid NUL-terminated string for the call.
        if unsafe { libc::if_nametoindex(name.as_ptr()) } == 0 {
            return Err(VmError::Config(format!(
                "tap {}: no such interface (the VMM attaches to existing taps only)",
                n.tap
            )));
        }
    }
    for d in &c.disks {
        let m = std::fs::metadata(&d.path).map_err(io(format!("disk {}", d.path.display())))?;
        if !m.is_file() && !std::os::unix::fs::FileTypeExt::is_block_device(&m.file_type()) {
            return Err(VmError::Config(format!(
                "disk {}: not a regular file or block device",
                d.path.display()
            )));
        }
    }
    Ok(())
}

impl Vm {
    /// Creates the VM: memory, irqchip, devices, kernel and vCPUs.
    pub fn new(config: VmConfig) -> Result<Vm, VmError> {
        validate(&config)?;
        let mem_bytes = config.memory_mib << 20;
        let kvm_fd = Kvm::new().map_err(kvm("open /dev/kvm"))?;
        if kvm_fd.get_api_version() != 12 {
            return Err(VmError::Config(format!(
                "KVM API version {} (12 expected)",
                kvm_fd.get_api_version()
            )));
        }
        for cap in [Cap::Irqchip, Cap::UserMemory, Cap::Irqfd, Cap::Pit2] {
            if !kvm_fd.check_extension(cap) {
                return Err(VmError::Config(format!("KVM lacks {cap:?}")));
            }
        }
        let max = kvm_fd.get_max_vcpus();
        if usize::from(config.cpus) > max {
            return Err(VmError::Config(format!(
                "--cpus {}: KVM allows {max}",
                config.cpus
            )));
        }
        let vm = Arc::new(kvm_fd.create_vm().map_err(kvm("create VM"))?);
        vm.set_tss_address(0xfffb_d000)
            .map_err(kvm("set TSS address"))?;
        vm.set_identity_map_address(0xfffb_c000)
            .map_err(kvm("set identity map address"))?;
        vm.create_irq_chip().map_err(kvm("create irqchip"))?;
        vm.create_pit2(kvm_pit_config {
            flags: KVM_PIT_SPEAKER_DUMMY,
            ..Default::default()
        })
        .map_err(kvm("create PIT"))?;

        let mem = layout::map_guest_ram(mem_bytes).map_err(VmError::Memory)?;
        // SAFETY: `mem` is owned by the `Vm`, which drops it only after the
        // VM fd and the vCPUs (field order and `run`); the virtio workers
        // hold clones of it, so the mapping outlives every user.
        unsafe { layout::register_memory(&vm, &mem) }.map_err(VmError::Memory)?;

        let cache = config.kernel_cache.as_deref().and_then(|dir| {
            crate::kcache::KernelCache::open(dir)
                .map_err(|e| eprintln!("vmm: kernel cache {}: {e}; not used", dir.display()))
                .ok()
        });
        let mut loaded = boot::load_kernel(&mem, &config.kernel, cache.as_ref())?;
        if let Some(initrd) = &config.initrd {
            boot::load_initrd(&mem, mem_bytes, initrd, &mut loaded)?;
        }
        let tables = acpi::build(config.cpus);
        for (addr, blob) in &tables.blobs {
            mem.write_slice(blob, GuestAddress(*addr))
                .map_err(|e| VmError::Memory(e.to_string()))?;
        }
        boot::write_boot_info(&mem, &loaded, &config.cmdline, mem_bytes, tables.rsdp())?;
        cpu::write_boot_tables(&mem)?;

        let exit = Arc::new(ExitSignal::new().map_err(io("eventfd"))?);
        let serial_irq = EventFd::new(libc::EFD_NONBLOCK).map_err(io("eventfd"))?;
        vm.register_irqfd(&serial_irq, acpi::SERIAL_GSI)
            .map_err(kvm("serial irqfd"))?;
        let ged_irq = EventFd::new(libc::EFD_NONBLOCK).map_err(io("eventfd"))?;
        vm.register_irqfd(&ged_irq, acpi::GED_GSI)
            .map_err(kvm("GED irqfd"))?;
        let mut pci = PciBus::new();
        let mut devices: Vec<Box<dyn VirtioDevice>> = Vec::new();
        let mut disks = Vec::new();
        for d in &config.disks {
            let blk = Blk::new(&d.path, d.readonly)
                .map_err(io("virtio-blk"))?
                .with_queues(u16::from(config.cpus));
            disks.push((d.path.clone(), blk.capacity()));
            devices.push(Box::new(blk));
        }
        let mut links = Vec::new();
        for n in &config.nets {
            let net = Net::with_vhost(&n.tap, n.mac, n.vhost).map_err(io("virtio-net"))?;
            let link = net.link();
            // Before the guest runs: no driver to tell yet.
            let _ = link.set(n.link_up);
            links.push((n.tap.clone(), link));
            devices.push(Box::new(net));
        }
        if config.rng {
            devices.push(Box::new(Rng::new()));
        }
        let router = Arc::new(MsiRouter::new(vm.clone()));
        for (n, dev) in devices.into_iter().enumerate() {
            let name = dev.name();
            let p = VirtioPci::new(dev, router.clone(), mem.clone(), pci_virtio::bar_address(n))
                .map_err(io(format!("virtio-{name} on PCI")))?;
            pci.add(Box::new(p));
        }
        let bus = Arc::new(PortBus {
            serial: Mutex::new(Serial::new(
                IrqTrigger(serial_irq),
                open_serial(&config.serial)?,
            )),
            i8042: Mutex::new(I8042Device::new(ResetTrigger(exit.clone()))),
            pm: AcpiPm::new(exit.clone(), ged_irq),
            pci,
        });

        let supported = kvm_fd
            .get_supported_cpuid(kvm_bindings::KVM_MAX_CPUID_ENTRIES)
            .map_err(kvm("get supported CPUID"))?;
        let msr_index = kvm_fd
            .get_msr_index_list()
            .map_err(kvm("get MSR index list"))?;
        let tsc_deadline = kvm_fd.check_extension(Cap::TscDeadlineTimer);
        // Writes of the PCI configuration address (0xcf8) are queued by
        // KVM in a ring instead of each exiting to the vmm; they are
        // replayed when the guest next touches a configuration port.
        // Every configuration read is an address write and a data read,
        // so this halves the exits of the kernel's port-I/O PCI scans.
        let coalesced = kvm_fd.check_extension(Cap::CoalescedPio)
            && vm
                .register_coalesced_mmio(
                    IoEventAddress::Pio(u64::from(pci::CONFIG_ADDRESS_PORT)),
                    4,
                )
                .is_ok();
        let mut vcpus = Vec::new();
        for id in 0..config.cpus {
            let mut vcpu = vm.create_vcpu(u64::from(id)).map_err(kvm("create vCPU"))?;
            if coalesced {
                vcpu.map_coalesced_mmio_ring()
                    .map_err(kvm("map the coalesced I/O ring"))?;
            }
            cpu::setup_vcpu(
                &vcpu,
                id,
                config.cpus,
                &supported,
                tsc_deadline,
                msr_index.as_slice(),
                loaded.entry,
            )?;
            vcpus.push(vcpu);
        }
        let handle = Arc::new(VmHandle {
            exit,
            run: Arc::new(RunControl::new()),
            bus,
            threads: Mutex::new(Vec::new()),
            coalesced: coalesced.then(|| Mutex::new(())),
            config,
            links,
            disks,
        });
        Ok(Vm {
            _kvm: kvm_fd,
            _vm: vm,
            mem,
            vcpus,
            handle,
        })
    }

    /// What the control socket needs.
    pub fn handle(&self) -> Arc<VmHandle> {
        self.handle.clone()
    }

    /// Guest memory (for tests and, later, snapshots).
    pub fn memory(&self) -> &GuestMemoryMmap {
        &self.mem
    }

    /// Runs the vCPUs until the VM ends, and says why.
    pub fn run(mut self) -> Result<ExitReason, VmError> {
        vmm_sys_util::signal::register_signal_handler(kick_signal(), on_kick).map_err(|e| {
            io("installing the vCPU kick handler")(std::io::Error::from_raw_os_error(e.errno()))
        })?;
        let mut joins: Vec<JoinHandle<()>> = Vec::new();
        for (id, vcpu) in self.vcpus.drain(..).enumerate() {
            let h = self.handle.clone();
            let j = crate::thread(format!("vcpu{id}"))
                .spawn(move || vcpu_loop(vcpu, &h))
                .map_err(io("spawning a vCPU thread"))?;
            joins.push(j);
        }
        if let Ok(mut t) = self.handle.threads.lock() {
            *t = joins.iter().map(|j| j.as_pthread_t()).collect();
        }
        if self.handle.config.serial == SerialOut::Stdio {
            let bus = self.handle.bus.clone();
            let _ = crate::thread("stdin").spawn(move || stdin_loop(&bus));
        }
        wait_readable(self.handle.exit.eventfd().as_raw_fd());
        let reason = self
            .handle
            .exit
            .reason()
            .unwrap_or_else(|| ExitReason::Crashed("exit signalled without a reason".into()));
        self.handle.run.set(RunState::Exiting);
        for _ in 0..1000 {
            if joins.iter().all(|j| j.is_finished()) {
                break;
            }
            self.handle.kick_all();
            std::thread::sleep(Duration::from_millis(1));
        }
        if let Ok(mut t) = self.handle.threads.lock() {
            t.clear();
        }
        for j in joins {
            if j.is_finished() {
                let _ = j.join();
            }
        }
        if let Ok(mut s) = self.handle.bus.serial.lock() {
            let _ = s.writer_mut().flush();
        }
        Ok(reason)
    }
}

fn wait_readable(fd: i32) {
    loop {
        let mut p = libc::pollfd {
            fd,
            events: libc::POLLIN,
            revents: 0,
        };
        // SAFETY: `p` is a valid pollfd for the duration of the call and
        // the count is 1.
        let r = unsafe { libc::poll(&mut p, 1, -1) };
        if r > 0 {
            return;
        }
    }
}

fn stdin_loop(bus: &PortBus) {
    use std::io::Read;
    let mut buf = [0u8; 64];
    let mut stdin = std::io::stdin();
    loop {
        match stdin.read(&mut buf) {
            Ok(0) | Err(_) => return,
            Ok(n) => {
                let mut rest = &buf[..n];
                while !rest.is_empty() {
                    let taken = bus
                        .serial
                        .lock()
                        .ok()
                        .and_then(|mut s| s.enqueue_raw_bytes(rest).ok())
                        .unwrap_or(rest.len());
                    rest = &rest[taken..];
                    if !rest.is_empty() {
                        std::thread::sleep(Duration::from_millis(5));
                    }
                }
            }
        }
    }
}

/// Replays the port writes KVM queued in the coalesced ring, in order.
fn replay_queued_writes(vcpu: &mut VcpuFd, h: &VmHandle) {
    let Some(lock) = &h.coalesced else {
        return;
    };
    let _one_at_a_time = lock.lock().unwrap_or_else(|e| e.into_inner());
    while let Ok(Some(e)) = vcpu.coalesced_mmio_read() {
        let len = (e.len as usize).min(e.data.len());
        // SAFETY: `pio` is a plain integer in a union of integers.
        if unsafe { e.__bindgen_anon_1.pio } == 1 {
            h.bus.write(e.phys_addr as u16, &e.data[..len]);
        }
    }
}

fn vcpu_loop(mut vcpu: VcpuFd, h: &VmHandle) {
    let trace = std::env::var_os("OXBOW_VMM_TRACE").is_some();
    loop {
        if !h.run.wait_runnable() {
            return;
        }
        // A configuration-port access is served after the queued address
        // writes are replayed; replaying needs the vCPU, which the exit
        // still borrows, so the access is noted and served below.
        let mut cfg_read: Option<(u16, *mut u8, usize)> = None;
        let mut cfg_write: Option<(u16, [u8; 4], usize)> = None;
        let queued = h.coalesced.is_some();
        let r = vcpu.run();
        if trace {
            match &r {
                Ok(VcpuExit::IoIn(p, _)) | Ok(VcpuExit::IoOut(p, _))
                    if (0x3f8..0x400).contains(p) => {}
                other => eprintln!("vcpu exit: {other:?}"),
            }
        }
        match r {
            Ok(VcpuExit::IoIn(port, data)) if queued && pci::is_config_port(port) => {
                cfg_read = Some((port, data.as_mut_ptr(), data.len()));
            }
            Ok(VcpuExit::IoOut(port, data))
                if queued && pci::is_config_port(port) && data.len() <= 4 =>
            {
                let mut bytes = [0u8; 4];
                bytes[..data.len()].copy_from_slice(data);
                cfg_write = Some((port, bytes, data.len()));
            }
            Ok(VcpuExit::IoIn(port, data)) => h.bus.read(port, data),
            Ok(VcpuExit::IoOut(port, data)) => h.bus.write(port, data),
            Ok(VcpuExit::MmioRead(addr, data)) => h.bus.mmio_read(addr, data),
            Ok(VcpuExit::MmioWrite(addr, data)) => h.bus.mmio_write(addr, data),
            Ok(VcpuExit::Hlt) | Ok(VcpuExit::IrqWindowOpen) | Ok(VcpuExit::Intr) => {}
            Ok(VcpuExit::Shutdown) => {
                // A triple fault: the guest crashed rather than asked for
                // a reset, though the machine resets the same way. Say so,
                // with where it was, so a crash loop can be told apart.
                // On AMD, KVM reinitializes the vCPU on the shutdown
                // intercept, so the registers read back as the reset
                // state (rip 0xfff0, cr0 0x10) and say nothing.
                let regs = vcpu.get_regs().ok();
                let sregs = vcpu.get_sregs().ok();
                let rip = regs.map_or(0, |r| r.rip);
                let cr0 = sregs.map_or(0, |s| s.cr0);
                if rip == 0xfff0 && cr0 == 0x10 {
                    eprintln!(
                        "vmm: triple fault (the vCPU's state was reset with it): the guest resets"
                    );
                } else {
                    eprintln!(
                        "vmm: triple fault (rip {rip:#x}, rsp {:#x}, cr0 {cr0:#x}, cr3 {:#x}, cr4 {:#x}, efer {:#x}): the guest resets",
                        regs.map_or(0, |r| r.rsp),
                        sregs.map_or(0, |s| s.cr3),
                        sregs.map_or(0, |s| s.cr4),
                        sregs.map_or(0, |s| s.efer),
                    );
                }
                h.exit.request(ExitReason::Reset)
            }
            Ok(VcpuExit::SystemEvent(kind, _)) => match kind {
                kvm_bindings::KVM_SYSTEM_EVENT_SHUTDOWN => h.exit.request(ExitReason::PowerOff),
                kvm_bindings::KVM_SYSTEM_EVENT_RESET => {
                    eprintln!("vmm: the guest asked for a reset (KVM system event)");
                    h.exit.request(ExitReason::Reset)
                }
                other => h
                    .exit
                    .request(ExitReason::Crashed(format!("system event {other}"))),
            },
            Ok(VcpuExit::FailEntry(reason, cpu)) => h.exit.request(ExitReason::Crashed(format!(
                "KVM entry failed on CPU {cpu}: hardware reason {reason:#x}"
            ))),
            Ok(VcpuExit::InternalError) => h
                .exit
                .request(ExitReason::Crashed("KVM internal error".into())),
            Ok(other) => h.exit.request(ExitReason::Crashed(format!(
                "unhandled vCPU exit {other:?}"
            ))),
            Err(e) if e.errno() == libc::EINTR || e.errno() == libc::EAGAIN => {}
            Err(e) => h.exit.request(ExitReason::Crashed(format!("KVM_RUN: {e}"))),
        }
        if cfg_read.is_some() || cfg_write.is_some() {
            replay_queued_writes(&mut vcpu, h);
        }
        if let Some((port, bytes, len)) = cfg_write {
            h.bus.write(port, &bytes[..len]);
        }
        if let Some((port, ptr, len)) = cfg_read {
            // SAFETY: `ptr..ptr+len` is the data area of this vCPU's
            // `kvm_run` page, which stays mapped as long as `vcpu`; the
            // exit that borrowed it has ended and nothing else refers to
            // it until the next KVM_RUN, which reads the answer from it.
            let data = unsafe { std::slice::from_raw_parts_mut(ptr, len) };
            h.bus.read(port, data);
        }
        if h.exit.reason().is_some() && h.run.state() == RunState::Running {
            // Another thread requested the end; stop without waiting for a kick.
            return;
        }
    }
}
