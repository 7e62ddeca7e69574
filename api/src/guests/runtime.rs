//! Running VMs: each is a VMM process started by init as the transient
//! unit `vmm:<vmid>`, never a child of apid, so restarting apid leaves
//! every VM running. apid asks init (over its control socket) to start,
//! stop and report units, and talks to each VMM over its control socket
//! (`<run>/<vmid>.sock`) for the ACPI power button, pause and resume.
//!
//! A guest that powers itself off ends its VMM with status 0 and the unit
//! stays stopped; a guest reboot ends it with status 3, on which init
//! starts it again (restart policy `on-status 3`).

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use guestconf::{DiskBus, DiskDevice, DiskFile, DiskMedia, GuestConfig, NetDevice};
use init::control::{Client, Request, UnitState, UnitStatus};
use init::service::{RestartPolicy, UnitSpec};
use serde_json::Value;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};

use super::store::{config_number as number, DEFAULT_MEMORY_MIB};

/// What a VM is doing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum VmState {
    /// No VMM runs.
    Stopped,
    /// Its VMM runs.
    Running {
        /// The VMM's pid.
        pid: i32,
        /// Unix time the VMM (last) started.
        started_at: u64,
    },
}

/// How apid reaches init and the VMMs.
#[derive(Debug)]
pub struct VmRuntime {
    /// init's control socket.
    pub init_socket: PathBuf,
    /// Where the VMMs' control sockets and serial logs go.
    pub run_dir: PathBuf,
    /// The VMM binary.
    pub vmm_binary: PathBuf,
    /// The container runtime binary.
    pub ctr_binary: PathBuf,
    /// Where the VMMs keep kernels unpacked from bzImages (`vmm
    /// --kernel-cache`); `None` leaves every bzImage to its own decompressor.
    pub kernel_cache: Option<PathBuf>,
    /// Whether each VMM gives up root for a user of its own once its VM is
    /// built ([`vmm_user`]); only a root apid can have it do so.
    pub vmm_users: bool,
    /// The last answer of [`VmRuntime::states`] and when it came.
    cache: tokio::sync::Mutex<Option<(Instant, StateMap)>>,
    /// Bumped whenever apid starts or stops a VM.
    generation: std::sync::atomic::AtomicU64,
}

/// VM states by VMID.
pub type StateMap = std::collections::HashMap<u32, VmState>;

/// How long [`VmRuntime::states_cached`] reuses an answer of init.
const STATES_MAX_AGE: Duration = Duration::from_millis(500);
/// How long a running VM's VMM may take to bind its control socket.
const VMM_SOCKET_WAIT: Duration = Duration::from_secs(30);
/// How long a start task waits for its guest to come up (the VMM to
/// answer on its control socket, a container's monitor to report its
/// init): both take well under a second natively, seconds under
/// emulation.
const START_WAIT: Duration = Duration::from_secs(60);

/// The init unit of VM `vmid`.
pub fn unit_name(vmid: u32) -> String {
    format!("vmm:{vmid}")
}

/// The init unit of container `vmid`.
pub fn ct_unit_name(vmid: u32) -> String {
    format!("ctr:{vmid}")
}

/// How long a container's monitor waits for a clean shutdown by default.
pub const CT_SHUTDOWN_TIMEOUT: u64 = 60;

/// The first user (and group) id of the VMMs' own users: VM `vmid`'s VMM
/// runs as `VMM_USER_BASE + vmid`, far above the container id maps
/// (100000 up) and below `(uid_t)-1` for every VMID Proxmox allows.
pub const VMM_USER_BASE: u32 = 3_000_000_000;

/// The user and group id VM `vmid`'s VMM runs as (`vmm --user`): one of
/// its own, owning nothing on the host, so a VMM taken over by its guest
/// cannot signal, trace or read another VM's.
pub fn vmm_user(vmid: u32) -> u32 {
    VMM_USER_BASE.saturating_add(vmid)
}

/// The tap of network device `index` of VM `vmid`, named as Proxmox does.
pub fn tap_name(vmid: u32, index: u32) -> String {
    format!("tap{vmid}i{index}")
}

/// What starting a VM takes: the VMM's command line and the taps to
/// create on which bridges.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LaunchPlan {
    /// The VMM's argv.
    pub argv: Vec<String>,
    /// The taps, each with its bridge and how it joins it.
    pub taps: Vec<TapPlan>,
}

/// A VM's tap: `tap<vmid>i<n>` on the bridge of `net<n>`, with the
/// NIC's VLAN tag, trunks and MTU.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TapPlan {
    pub name: String,
    pub bridge: String,
    pub port: netd::port::PortSpec,
}

impl VmRuntime {
    /// A runtime that reaches init at `init_socket`, keeps the VMMs'
    /// sockets and logs in `run_dir`, and runs `vmm_binary`.
    pub fn new(
        init_socket: PathBuf,
        run_dir: PathBuf,
        vmm_binary: PathBuf,
        ctr_binary: PathBuf,
    ) -> VmRuntime {
        VmRuntime {
            init_socket,
            run_dir,
            vmm_binary,
            ctr_binary,
            kernel_cache: None,
            // SAFETY: geteuid has no arguments and cannot fail.
            vmm_users: unsafe { libc::geteuid() } == 0,
            cache: tokio::sync::Mutex::new(None),
            generation: std::sync::atomic::AtomicU64::new(0),
        }
    }

    /// The runtime with VMMs keeping unpacked kernels in `dir`.
    pub fn with_kernel_cache(self, dir: Option<PathBuf>) -> Self {
        VmRuntime {
            kernel_cache: dir,
            ..self
        }
    }

    /// [`VmRuntime::states`], reusing an answer up to half a second old:
    /// lists over many VMs, asked often, do not each ask init. Starting
    /// and stopping through apid forgets the cached answer.
    pub async fn states_cached(&self) -> Result<StateMap, String> {
        let mut cache = self.cache.lock().await;
        if let Some((at, states)) = cache.as_ref() {
            if at.elapsed() < STATES_MAX_AGE {
                return Ok(states.clone());
            }
        }
        let states = self.states().await?;
        *cache = Some((Instant::now(), states.clone()));
        Ok(states)
    }

    async fn forget_states(&self) {
        *self.cache.lock().await = None;
        self.generation
            .fetch_add(1, std::sync::atomic::Ordering::SeqCst);
    }

    /// A number that changes whenever apid starts or stops a VM.
    pub fn generation(&self) -> u64 {
        self.generation.load(std::sync::atomic::Ordering::SeqCst)
    }

    /// The VMM control socket of `vmid`.
    pub fn control_socket(&self, vmid: u32) -> PathBuf {
        self.run_dir.join(format!("{vmid}.sock"))
    }

    /// The serial console log of `vmid`.
    pub fn serial_log(&self, vmid: u32) -> PathBuf {
        self.run_dir.join(format!("{vmid}.serial.log"))
    }

    /// Works out how to start `vmid` with `config`; `resolve` maps a volume
    /// id to its path. Every problem is reported before anything is done.
    pub fn plan(
        &self,
        vmid: u32,
        config: &GuestConfig,
        resolve: &dyn Fn(&str) -> Result<PathBuf, String>,
    ) -> Result<LaunchPlan, String> {
        let kernel = config.get("kernel").ok_or(
            "the VM has no 'kernel': firmware boot is not built yet, so a VM boots a kernel \
             directly (set 'kernel: <volume>', optionally 'initrd' and 'cmdline')",
        )?;
        let mut argv = vec![
            self.vmm_binary.display().to_string(),
            "--kernel".into(),
            path_arg(&resolve(kernel)?)?,
        ];
        if let Some(initrd) = config.get("initrd") {
            argv.extend(["--initrd".into(), path_arg(&resolve(initrd)?)?]);
        }
        argv.extend([
            "--cmdline".into(),
            config.get("cmdline").unwrap_or("console=ttyS0").to_owned(),
            "--memory".into(),
            number(config, "memory", DEFAULT_MEMORY_MIB).to_string(),
            "--cpus".into(),
            (number(config, "cores", 1) * number(config, "sockets", 1)).to_string(),
            "--serial".into(),
            format!("file={}", path_arg(&self.serial_log(vmid))?),
            "--api-socket".into(),
            path_arg(&self.control_socket(vmid))?,
        ]);
        if let Some(dir) = &self.kernel_cache {
            argv.extend(["--kernel-cache".into(), path_arg(dir)?]);
        }
        if self.vmm_users {
            let id = vmm_user(vmid);
            argv.extend(["--user".into(), format!("{id}:{id}")]);
        }
        // Every drive becomes a virtio-blk disk, in bus order (virtio,
        // scsi, sata, ide) and index order.
        let mut disks: Vec<(DiskBus, u32, DiskDevice)> = Vec::new();
        let mut nets: Vec<(u32, NetDevice)> = Vec::new();
        for entry in config.main().entries() {
            let key = entry.key();
            if let Some((bus, index)) = DiskBus::from_key(key) {
                let disk =
                    DiskDevice::parse(key, entry.value()).map_err(|e| format!("{key}: {e}"))?;
                disks.push((bus, index, disk));
            } else if let Some(index) = key.strip_prefix("net").and_then(|n| n.parse().ok()) {
                let net = NetDevice::parse(entry.value()).map_err(|e| format!("{key}: {e}"))?;
                nets.push((index, net));
            }
        }
        disks.sort_by_key(|(bus, index, _)| (bus_order(*bus), *index));
        for (bus, index, disk) in disks {
            let key = format!("{}{index}", bus.prefix());
            let path = match &disk.file {
                DiskFile::Volume(volume) => resolve(&volume.to_string())?,
                DiskFile::Path(path) => PathBuf::from(path),
                DiskFile::None => continue,
                DiskFile::HostCdrom => {
                    return Err(format!(
                        "{key}: the host's CD drive cannot be passed through"
                    ))
                }
                DiskFile::Allocate(_) => {
                    return Err(format!("{key}: the disk was never allocated"));
                }
            };
            let mut arg = path_arg(&path)?;
            if disk.media == DiskMedia::Cdrom || disk.readonly == Some(true) {
                arg.push_str(",readonly");
            }
            argv.extend(["--disk".into(), arg]);
        }
        nets.sort_by_key(|(index, _)| *index);
        let mut taps = Vec::new();
        for (index, net) in nets {
            if net.model != "virtio" {
                return Err(format!(
                    "net{index}: only the virtio NIC model is emulated, not '{}'",
                    net.model
                ));
            }
            let bridge = net
                .bridge
                .clone()
                .ok_or_else(|| format!("net{index}: no bridge given"))?;
            let tap = tap_name(vmid, index);
            let mut arg = format!("tap={tap}");
            if let Some(mac) = &net.macaddr {
                arg.push_str(&format!(",mac={mac}"));
            }
            // The kernel's vhost-net where it is available, as Proxmox VE
            // gives every virtio NIC (docs/vmm.md, "vhost-net").
            arg.push_str(",vhost=auto");
            // `link_down=1`: the NIC is there without a carrier, and its
            // tap is down in its bridge (super::live changes both).
            if net.link_down == Some(true) {
                arg.push_str(",link=down");
            }
            argv.extend(["--net".into(), arg]);
            let port = super::live::vm_port_spec(&net).map_err(|e| format!("net{index}: {e}"))?;
            taps.push(TapPlan {
                name: tap,
                bridge,
                port,
            });
        }
        Ok(LaunchPlan { argv, taps })
    }

    async fn init_call(&self, request: Request) -> Result<Value, String> {
        let socket = self.init_socket.clone();
        tokio::task::spawn_blocking(move || {
            Client::connect(&socket)
                .and_then(|mut client| client.call(&request))
                .map_err(|e| e.to_string())
        })
        .await
        .map_err(|e| format!("init call failed: {e}"))?
    }

    /// The VM's state, as init reports its unit.
    pub async fn state(&self, vmid: u32) -> Result<VmState, String> {
        self.unit_state(&unit_name(vmid)).await
    }

    /// Whether the VM runs; a state init cannot tell (no init to ask)
    /// counts as stopped, so a change then waits for the next start.
    pub async fn is_running(&self, vmid: u32) -> bool {
        self.state(vmid).await.is_ok_and(|s| s != VmState::Stopped)
    }

    /// The state of a guest's init unit `unit`.
    pub async fn unit_state(&self, unit: &str) -> Result<VmState, String> {
        Ok(self
            .unit_status(unit)
            .await?
            .map_or(VmState::Stopped, |status| state_of(&status)))
    }

    /// What init reports of unit `unit`; `None` if it has no such unit.
    async fn unit_status(&self, unit: &str) -> Result<Option<UnitStatus>, String> {
        let answer = self
            .init_call(Request::Status {
                unit: unit.to_owned(),
            })
            .await;
        match answer {
            Ok(value) => serde_json::from_value(value)
                .map(Some)
                .map_err(|e| e.to_string()),
            Err(e) if e.contains("no such unit") => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// The state of every guest (VM or container: VMIDs are unique across
    /// both) that has a unit, from one question to init; guests without a
    /// unit are stopped.
    pub async fn states(&self) -> Result<StateMap, String> {
        let answer = self.init_call(Request::List).await?;
        let units: Vec<UnitStatus> = serde_json::from_value(answer).map_err(|e| e.to_string())?;
        Ok(units
            .iter()
            .filter_map(|unit| {
                let vmid = unit
                    .name
                    .strip_prefix("vmm:")
                    .or_else(|| unit.name.strip_prefix("ctr:"))?
                    .parse()
                    .ok()?;
                Some((vmid, state_of(unit)))
            })
            .collect())
    }

    /// Starts the VMM of `vmid` as an init unit, after creating its taps.
    pub async fn start(&self, vmid: u32, plan: &LaunchPlan) -> Result<(), String> {
        std::fs::create_dir_all(&self.run_dir)
            .map_err(|e| format!("cannot create {}: {e}", self.run_dir.display()))?;
        for tap in &plan.taps {
            attach_tap(tap).await?;
        }
        // A unit left from an earlier run (stopped or failed) is replaced.
        let _ = self
            .init_call(Request::Remove {
                unit: unit_name(vmid),
            })
            .await;
        let _ = std::fs::remove_file(self.control_socket(vmid));
        let mut unit = UnitSpec::new(
            &unit_name(vmid),
            &plan.argv.iter().map(String::as_str).collect::<Vec<_>>(),
        );
        unit.restart = RestartPolicy::OnStatus(3);
        unit.stop_timeout = 5;
        // Reboots come at most every few seconds; a crash loop still hits
        // the start limit.
        unit.start_limit = 10;
        self.init_call(Request::Run { unit }).await?;
        self.forget_states().await;
        self.wait_vmm_up(vmid).await
    }

    /// Waits until the VMM init just started for VM `vmid` answers on its
    /// control socket ([`Self::wait_started`]).
    async fn wait_vmm_up(&self, vmid: u32) -> Result<(), String> {
        self.wait_started(&unit_name(vmid), &format!("VM {vmid}"), || async {
            self.vmm_call(vmid, "info").await.map(drop)
        })
        .await
    }

    /// Waits until VM `vmid`'s VMM, which was process `old_pid` and was
    /// asked to reset, has been started again by init and answers.
    pub async fn wait_restarted(&self, vmid: u32, old_pid: i32) -> Result<(), String> {
        let end = Instant::now() + START_WAIT;
        loop {
            match self.state(vmid).await? {
                VmState::Running { pid, .. } if pid != 0 && pid != old_pid => break,
                VmState::Stopped => return Err(format!("VM {vmid} stopped instead of resetting")),
                _ if Instant::now() >= end => {
                    return Err(format!(
                        "VM {vmid} was not started again within {} s",
                        START_WAIT.as_secs()
                    ))
                }
                _ => tokio::time::sleep(Duration::from_millis(100)).await,
            }
        }
        // A new VMM process: what was cached of the old one is stale.
        self.forget_states().await;
        self.wait_vmm_up(vmid).await
    }

    /// Waits until a guest just started as init unit `unit` has come up,
    /// as `probe` says (its VMM or monitor answering on its control
    /// socket), as a Proxmox start task does before it ends: a start
    /// that fails makes the task fail, with how the unit's process
    /// ended. A guest that ran and already powered off (its process
    /// ended with status 0) has started.
    async fn wait_started<F, Fut>(&self, unit: &str, what: &str, probe: F) -> Result<(), String>
    where
        F: Fn() -> Fut,
        Fut: std::future::Future<Output = Result<(), String>>,
    {
        let end = Instant::now() + START_WAIT;
        loop {
            let why = match probe().await {
                Ok(()) => return Ok(()),
                Err(e) => e,
            };
            let Some(status) = self.unit_status(unit).await? else {
                return Err(format!("{what} failed to start: init has no unit {unit}"));
            };
            if matches!(status.state, UnitState::Stopped | UnitState::Failed) {
                self.forget_states().await;
                if status.last_exit_code == Some(0) {
                    return Ok(());
                }
                let ended = status.last_exit.as_deref().unwrap_or("stopped");
                return Err(format!(
                    "{what} failed to start: its process {ended} \
                     (the log of init's unit {unit} has the reason)"
                ));
            }
            if Instant::now() >= end {
                return Err(format!(
                    "{what} did not come up within {} s: {why}",
                    START_WAIT.as_secs()
                ));
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Runs a container's monitor (`argv`) as init unit `ctr:<vmid>`,
    /// restarted when the guest reboots (exit status 3). init's stop
    /// timeout is above the monitor's own shutdown timeout, so that init
    /// never cuts a clean shutdown short.
    pub async fn start_ct(&self, vmid: u32, argv: &[String]) -> Result<(), String> {
        std::fs::create_dir_all(&self.run_dir)
            .map_err(|e| format!("cannot create {}: {e}", self.run_dir.display()))?;
        let unit_name = ct_unit_name(vmid);
        let _ = self
            .init_call(Request::Remove {
                unit: unit_name.clone(),
            })
            .await;
        let _ = std::fs::remove_file(self.ct_socket(vmid));
        let mut unit = UnitSpec::new(
            &unit_name,
            &argv.iter().map(String::as_str).collect::<Vec<_>>(),
        );
        unit.restart = RestartPolicy::OnStatus(3);
        unit.stop_timeout = CT_SHUTDOWN_TIMEOUT + 10;
        unit.start_limit = 10;
        self.init_call(Request::Run { unit }).await?;
        self.forget_states().await;
        // The monitor serves its socket once the guest's init runs.
        self.wait_started(&unit_name, &format!("CT {vmid}"), || async {
            match self.ct_call(vmid, ctr::Request::Info).await? {
                info if info.get("pid").is_some() => Ok(()),
                info => Err(format!("no init yet: {info}")),
            }
        })
        .await
    }

    /// The control socket of container `vmid`'s monitor.
    pub fn ct_socket(&self, vmid: u32) -> PathBuf {
        self.run_dir.join(format!("ct-{vmid}.sock"))
    }

    /// The console log of container `vmid`.
    pub fn ct_console_log(&self, vmid: u32) -> PathBuf {
        self.run_dir.join(format!("ct-{vmid}.console.log"))
    }

    /// Sends `request` to container `vmid`'s monitor.
    pub async fn ct_call(&self, vmid: u32, request: ctr::Request) -> Result<Value, String> {
        let socket = self.ct_socket(vmid);
        tokio::task::spawn_blocking(move || ctr::request(&socket, &request))
            .await
            .map_err(|e| e.to_string())?
            .map_err(|e| format!("container {vmid}: {e}"))
    }

    /// Waits until init's unit `unit` no longer runs; false if `timeout`
    /// passed first.
    pub async fn wait_unit_stopped(&self, unit: &str, timeout: Duration) -> Result<bool, String> {
        let end = Instant::now() + timeout;
        loop {
            if self.unit_state(unit).await? == VmState::Stopped {
                self.forget_states().await;
                return Ok(true);
            }
            if Instant::now() >= end {
                return Ok(false);
            }
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
    }

    /// Ends container `vmid` at once: its monitor's `stop`, else init's.
    pub async fn stop_ct(&self, vmid: u32) -> Result<(), String> {
        if self.ct_call(vmid, ctr::Request::Stop).await.is_err() {
            self.init_call(Request::Stop {
                unit: ct_unit_name(vmid),
            })
            .await?;
        }
        if !self
            .wait_unit_stopped(&ct_unit_name(vmid), Duration::from_secs(30))
            .await?
        {
            return Err(format!("container {vmid} did not stop"));
        }
        Ok(())
    }

    /// Forgets the stopped unit of container `vmid`.
    pub async fn cleanup_ct(&self, vmid: u32) {
        let _ = self
            .init_call(Request::Remove {
                unit: ct_unit_name(vmid),
            })
            .await;
    }

    /// Ends the VM at once.
    pub async fn stop(&self, vmid: u32) -> Result<(), String> {
        if self.vmm_call(vmid, "stop").await.is_err() {
            self.init_call(Request::Stop {
                unit: unit_name(vmid),
            })
            .await?;
        }
        self.wait_stopped(vmid, Duration::from_secs(15)).await?;
        self.forget_states().await;
        Ok(())
    }

    /// Waits until the VM is stopped, then removes its control socket;
    /// false if `timeout` passed first.
    pub async fn wait_stopped(&self, vmid: u32, timeout: Duration) -> Result<bool, String> {
        let end = Instant::now() + timeout;
        loop {
            if self.state(vmid).await? == VmState::Stopped {
                let _ = std::fs::remove_file(self.control_socket(vmid));
                return Ok(true);
            }
            if Instant::now() >= end {
                return Ok(false);
            }
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
    }

    /// Forgets the stopped unit of `vmid` and removes its control socket
    /// (a VMM that gave up root cannot remove it from the run directory)
    /// and its taps.
    pub async fn cleanup(&self, vmid: u32, config: Option<&GuestConfig>) {
        let _ = self
            .init_call(Request::Remove {
                unit: unit_name(vmid),
            })
            .await;
        let _ = std::fs::remove_file(self.control_socket(vmid));
        if let Some(config) = config {
            for entry in config.main().entries() {
                if let Some(index) = entry.key().strip_prefix("net").and_then(|n| n.parse().ok()) {
                    let _ = crate::sys::delete_persistent_tap(&tap_name(vmid, index));
                }
            }
        }
    }

    /// Sends `cmd` to the VM's control socket and returns the answer's data.
    pub async fn vmm_call(&self, vmid: u32, cmd: &str) -> Result<Value, String> {
        self.vmm_request(vmid, serde_json::json!({ "cmd": cmd }))
            .await
    }

    /// Sends `request` (a JSON object with its `cmd`) to the VM's control
    /// socket and returns the answer's data.
    pub async fn vmm_request(&self, vmid: u32, request: Value) -> Result<Value, String> {
        let socket = self.control_socket(vmid);
        // A VMM binds its socket once it has built the VM, which takes a
        // few seconds under emulation: a running unit without one yet is
        // waited for.
        let deadline = Instant::now() + VMM_SOCKET_WAIT;
        let stream = loop {
            match tokio::net::UnixStream::connect(&socket).await {
                Ok(s) => break s,
                Err(e)
                    if matches!(
                        e.kind(),
                        std::io::ErrorKind::NotFound | std::io::ErrorKind::ConnectionRefused
                    ) && Instant::now() < deadline
                        && self.state(vmid).await? != VmState::Stopped =>
                {
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
                Err(e) => return Err(format!("cannot reach the VMM of VM {vmid}: {e}")),
            }
        };
        let call = async {
            let (read, mut write) = stream.into_split();
            let line = format!("{request}\n");
            write
                .write_all(line.as_bytes())
                .await
                .map_err(|e| e.to_string())?;
            let mut answer = String::new();
            BufReader::new(read)
                .read_line(&mut answer)
                .await
                .map_err(|e| e.to_string())?;
            let answer: Value = serde_json::from_str(&answer).map_err(|e| e.to_string())?;
            if answer["ok"] == true {
                Ok(answer["data"].clone())
            } else {
                Err(answer["error"].as_str().unwrap_or("refused").to_owned())
            }
        };
        tokio::time::timeout(Duration::from_secs(10), call)
            .await
            .map_err(|_| format!("the VMM of VM {vmid} did not answer"))?
    }
}

fn state_of(status: &UnitStatus) -> VmState {
    match (status.state, status.pid) {
        (UnitState::Stopped | UnitState::Failed, _) => VmState::Stopped,
        (_, Some(pid)) => VmState::Running {
            pid,
            started_at: status.started_at.unwrap_or(0),
        },
        // Waiting for the module gate or in restart back-off: about to
        // run again.
        (_, None) => VmState::Running {
            pid: 0,
            started_at: status.started_at.unwrap_or(0),
        },
    }
}

fn bus_order(bus: DiskBus) -> u8 {
    match bus {
        DiskBus::Virtio => 0,
        DiskBus::Scsi => 1,
        DiskBus::Sata => 2,
        DiskBus::Ide => 3,
    }
}

fn path_arg(path: &Path) -> Result<String, String> {
    let text = path
        .to_str()
        .ok_or_else(|| format!("{} is not valid UTF-8", path.display()))?;
    if text.contains(',') {
        return Err(format!(
            "{text}: paths with commas cannot be passed to the VMM"
        ));
    }
    Ok(text.to_owned())
}

async fn attach_tap(tap: &TapPlan) -> Result<(), String> {
    let name = &tap.name;
    crate::sys::create_persistent_tap(name)
        .map_err(|e| format!("cannot create tap {name}: {e}"))?;
    let nl = netd::rtnl::Rtnl::connect().map_err(|e| format!("netlink: {e}"))?;
    // A persistent tap may be left from an earlier run, up or limited.
    netd::port::replug(&nl, name, &tap.bridge, &tap.port)
        .await
        .map_err(|e| format!("cannot add {name} to {}: {e}", tap.bridge))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn runtime() -> VmRuntime {
        VmRuntime {
            vmm_users: false,
            ..VmRuntime::new(
                "/run/init.sock".into(),
                "/run/guests".into(),
                "/usr/lib/oxbow/vmm".into(),
                "/usr/lib/oxbow/ctr".into(),
            )
        }
    }

    fn resolve(volume: &str) -> Result<PathBuf, String> {
        let (storage, name) = volume.split_once(':').ok_or("no storage")?;
        if storage != "local" {
            return Err(format!("storage '{storage}' does not exist"));
        }
        Ok(PathBuf::from("/vz").join(name))
    }

    #[test]
    fn a_config_becomes_a_vmm_command_line() {
        let config = GuestConfig::parse(
            "cmdline: console=ttyS0 quiet\ncores: 2\ninitrd: local:iso/initrd.img\n\
             kernel: local:iso/vmlinuz.img\nmemory: 256\n\
             net0: virtio=02:00:00:00:00:01,bridge=vmbr0\n\
             ide2: local:iso/tools.iso,media=cdrom\nvirtio1: local:100/vm-100-disk-1.raw,size=1G\n\
             virtio0: local:100/vm-100-disk-0.raw,size=1G\nsockets: 1\n",
        )
        .unwrap();
        let plan = runtime().plan(100, &config, &resolve).unwrap();
        assert_eq!(
            plan.argv.join(" "),
            "/usr/lib/oxbow/vmm --kernel /vz/iso/vmlinuz.img --initrd /vz/iso/initrd.img \
             --cmdline console=ttyS0 quiet --memory 256 --cpus 2 \
             --serial file=/run/guests/100.serial.log --api-socket /run/guests/100.sock \
             --disk /vz/100/vm-100-disk-0.raw --disk /vz/100/vm-100-disk-1.raw \
             --disk /vz/iso/tools.iso,readonly --net tap=tap100i0,mac=02:00:00:00:00:01,vhost=auto"
        );
        assert_eq!(
            plan.taps,
            [TapPlan {
                name: "tap100i0".to_owned(),
                bridge: "vmbr0".to_owned(),
                port: netd::port::PortSpec::default(),
            }]
        );
        let tagged = GuestConfig::parse(
            "kernel: local:iso/k.img\nnet0: virtio=02:00:00:00:00:01,bridge=vmbr1,tag=5,trunks=7;9-10,mtu=1400,rate=2.5\n",
        )
        .unwrap();
        let plan = runtime().plan(100, &tagged, &resolve).unwrap();
        assert_eq!(
            plan.taps[0].port,
            netd::port::PortSpec {
                tag: Some(5),
                trunks: vec![(7, 7), (9, 10)],
                mtu: Some(1400),
                rate: Some(2_621_440),
                down: false,
            }
        );
        // A pulled cable: the NIC is there, without a carrier, its tap down.
        let down = GuestConfig::parse(
            "kernel: local:iso/k.img\nnet0: virtio=02:00:00:00:00:01,bridge=vmbr1,link_down=1\n",
        )
        .unwrap();
        let plan = runtime().plan(100, &down, &resolve).unwrap();
        assert!(plan
            .argv
            .join(" ")
            .ends_with(" --net tap=tap100i0,mac=02:00:00:00:00:01,vhost=auto,link=down"));
        assert!(plan.taps[0].port.down);
        let cached = runtime().with_kernel_cache(Some("/var/cache/k".into()));
        let plan = cached.plan(100, &tagged, &resolve).unwrap();
        assert!(plan.argv.join(" ").contains(" --kernel-cache /var/cache/k"));
        let users = VmRuntime {
            vmm_users: true,
            ..runtime()
        };
        let plan = users.plan(104, &tagged, &resolve).unwrap();
        assert!(plan
            .argv
            .join(" ")
            .contains(" --user 3000000104:3000000104"));
    }

    #[test]
    fn what_cannot_run_is_refused_with_the_reason() {
        let rt = runtime();
        let no_kernel = GuestConfig::parse("memory: 256\n").unwrap();
        assert!(rt
            .plan(100, &no_kernel, &resolve)
            .unwrap_err()
            .contains("firmware"));
        let bad_trunks = GuestConfig::parse(
            "kernel: local:iso/k.img\nnet0: virtio=02:00:00:00:00:01,bridge=vmbr0,trunks=9-4\n",
        )
        .unwrap();
        assert!(rt
            .plan(100, &bad_trunks, &resolve)
            .unwrap_err()
            .contains("trunks"));
        let e1000 =
            GuestConfig::parse("kernel: local:iso/k.img\nnet0: e1000,bridge=vmbr0\n").unwrap();
        assert!(rt
            .plan(100, &e1000, &resolve)
            .unwrap_err()
            .contains("virtio"));
        let elsewhere = GuestConfig::parse("kernel: nfs:iso/k.img\n").unwrap();
        assert!(rt
            .plan(100, &elsewhere, &resolve)
            .unwrap_err()
            .contains("nfs"));
    }
}
