//! The monitor: one process per running container, run by init as the
//! transient unit `ctr:<vmid>`. It creates the container (cgroups,
//! console and tty ptys, the namespaces through `clone`, the id maps, the
//! veths), then stays to hold the console, answer its control socket and
//! carry out stop, shutdown and reboot. When the container's init ends it
//! removes what it made and exits with the outcome:
//!
//! | exit status | meaning |
//! |---|---|
//! | 0 | the container powered off, halted, or was stopped or shut down |
//! | 3 | the container rebooted (init's `on-status = 3` restarts the unit) |
//! | 1 | an error (printed) |

use std::fs::{File, OpenOptions};
use std::io::{self, BufRead, BufReader, Read, Write};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};
use std::os::unix::fs::OpenOptionsExt;
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
use nix::sys::signal::{kill, SigSet, Signal};
use nix::sys::signalfd::{SfdFlags, SignalFd};
use nix::sys::wait::{waitpid, WaitPidFlag, WaitStatus};
use nix::unistd::Pid;
use serde::{Deserialize, Serialize};

use crate::cgroup::{Cgroup, CgroupError};
use crate::child::{self, ChildArgs, ChildMarks, Prepared};
use crate::guestfiles::PreparedFile;
use crate::net::{self, NetError};
use crate::rawsys::{monotonic_ns, Stack};
use crate::spec::ContainerSpec;
use crate::sys;

/// Exit status of a monitor whose container rebooted.
pub const EXIT_REBOOT: u8 = 3;

/// How a container ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Outcome {
    /// Powered off, halted, stopped or shut down: stays stopped.
    Poweroff,
    /// Rebooted: the monitor's unit is started again.
    Reboot,
}

impl Outcome {
    /// The monitor's exit status for this outcome.
    pub fn exit_status(self) -> u8 {
        match self {
            Outcome::Poweroff => 0,
            Outcome::Reboot => EXIT_REBOOT,
        }
    }
}

/// How the monitor runs.
#[derive(Debug, Clone)]
pub struct MonitorOptions {
    /// The control socket (`/run/oxbow/ctr/<vmid>.sock`); none for no
    /// socket.
    pub socket: Option<PathBuf>,
    /// Where the console's output is appended; none for standard output
    /// (which init sends to the unit's log).
    pub console_log: Option<PathBuf>,
    /// A socket to attach to the console (`/run/oxbow/ctr/<vmid>.console`):
    /// the bytes of one connection go to the console, the console's
    /// output goes to it as well as to the log. A new connection takes
    /// over from the previous one.
    pub console_socket: Option<PathBuf>,
    /// How long a shutdown waits for the guest before killing it.
    pub shutdown_timeout: Duration,
    /// The cgroup v2 root; `None` finds it in `/proc/self/mountinfo`.
    pub cgroup_root: Option<PathBuf>,
}

impl Default for MonitorOptions {
    fn default() -> MonitorOptions {
        MonitorOptions {
            socket: None,
            console_log: None,
            console_socket: None,
            shutdown_timeout: Duration::from_secs(60),
            cgroup_root: None,
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum MonitorError {
    #[error("the root directory {0} does not exist")]
    NoRoot(PathBuf),
    #[error("the root directory {0} has no {1}")]
    NoInit(PathBuf, String),
    #[error("cgroup")]
    Cgroup(#[from] CgroupError),
    #[error("network")]
    Net(#[from] NetError),
    #[error("{op}")]
    Io {
        op: String,
        #[source]
        source: io::Error,
    },
    #[error("starting the container failed: {0}")]
    Child(String),
}

fn io_err(op: impl Into<String>) -> impl FnOnce(io::Error) -> MonitorError {
    let op = op.into();
    move |source| MonitorError::Io { op, source }
}

fn nix_err(op: impl Into<String>) -> impl FnOnce(nix::Error) -> MonitorError {
    let op = op.into();
    move |e| MonitorError::Io {
        op,
        source: e.into(),
    }
}

/// A request on the control socket: one JSON object per line.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(tag = "cmd", rename_all = "lowercase")]
pub enum Request {
    Ping,
    Info,
    /// Ask the guest's init to power off; kill it after `timeout` seconds
    /// (default: the monitor's shutdown timeout).
    Shutdown {
        #[serde(default)]
        timeout: Option<u64>,
    },
    /// Ask the guest to shut down, then start it again (exit status 3).
    Reboot {
        #[serde(default)]
        timeout: Option<u64>,
    },
    /// Kill the container now.
    Stop,
}

/// What `info` answers.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Info {
    pub vmid: u32,
    /// The container's init as the host sees it.
    pub pid: i32,
    /// `running` or `stopping`.
    pub state: String,
    pub hostname: String,
    /// The outer cgroup, or none when cgroups are unavailable.
    pub cgroup: Option<String>,
    /// Limits that are not in force, with the reason.
    pub limits_unavailable: Vec<String>,
    /// The host ends of the veth pairs.
    pub veths: Vec<String>,
    /// The console pty's host path.
    pub console: String,
}

struct Running {
    pid: Pid,
    cgroup: Option<Cgroup>,
    veths: Vec<String>,
    console_master: OwnedFd,
    /// The monitor's own descriptor of the console's slave: while it is
    /// open, the master never reads EIO between two guest processes
    /// holding the console. Held, never read.
    _console_slave: OwnedFd,
    tty_masters: Vec<OwnedFd>,
    /// The monitor's own descriptors of the tty slaves, for the same
    /// reason: with no slave open (no getty on that tty yet, or ever), a
    /// master polls as hung up on every call, and the monitor would spin
    /// on it, taking a CPU from the guest while it boots.
    tty_slaves: Vec<OwnedFd>,
    console_path: PathBuf,
    /// Set once a stop, shutdown or reboot was asked for.
    stopping: Option<Stopping>,
}

#[derive(Debug, Clone, Copy)]
struct Stopping {
    deadline: Option<Instant>,
    reboot: bool,
    killed: bool,
}

/// Runs container `spec` until its init ends; see the module docs.
pub fn run(spec: &ContainerSpec, opts: &MonitorOptions) -> Result<Outcome, MonitorError> {
    if !spec.rootfs.is_dir() {
        return Err(MonitorError::NoRoot(spec.rootfs.clone()));
    }
    let init_rel = spec.init.trim_start_matches('/');
    if std::fs::symlink_metadata(spec.rootfs.join(init_rel)).is_err() {
        return Err(MonitorError::NoInit(spec.rootfs.clone(), spec.init.clone()));
    }
    // Signals arrive through a signalfd; block them first so the child
    // inherits the block, which it lifts before exec.
    let mut mask = SigSet::empty();
    for s in [
        Signal::SIGCHLD,
        Signal::SIGTERM,
        Signal::SIGINT,
        Signal::SIGHUP,
    ] {
        mask.add(s);
    }
    mask.thread_block().map_err(nix_err("blocking signals"))?;
    let signals = SignalFd::with_flags(&mask, SfdFlags::SFD_CLOEXEC | SfdFlags::SFD_NONBLOCK)
        .map_err(nix_err("signalfd"))?;

    let listener = match &opts.socket {
        Some(path) => Some(bind_socket(path)?),
        None => None,
    };
    let console_listener = match &opts.console_socket {
        Some(path) => Some(bind_socket(path)?),
        None => None,
    };
    let mut console_out: Box<dyn Write> = match &opts.console_log {
        Some(path) => Box::new(
            OpenOptions::new()
                .create(true)
                .append(true)
                .mode(0o600)
                .open(path)
                .map_err(io_err(format!("opening {}", path.display())))?,
        ),
        None => Box::new(io::stdout()),
    };

    let result = start(spec, opts).and_then(|mut running| {
        let outcome = supervise(
            spec,
            opts,
            &mut running,
            &signals,
            (listener.as_ref(), console_listener.as_ref()),
            console_out.as_mut(),
        );
        cleanup(spec, &mut running);
        outcome
    });
    for path in [&opts.socket, &opts.console_socket].into_iter().flatten() {
        let _ = std::fs::remove_file(path);
    }
    result
}

fn bind_socket(path: &Path) -> Result<UnixListener, MonitorError> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).map_err(io_err(format!("creating {}", dir.display())))?;
    }
    let _ = std::fs::remove_file(path);
    let listener =
        UnixListener::bind(path).map_err(io_err(format!("binding {}", path.display())))?;
    std::fs::set_permissions(path, std::os::unix::fs::PermissionsExt::from_mode(0o600))
        .map_err(io_err(format!("chmod {}", path.display())))?;
    listener
        .set_nonblocking(true)
        .map_err(io_err("non-blocking socket"))?;
    Ok(listener)
}

/// A pty whose slave belongs to the container's root and tty group.
fn container_pty(spec: &ContainerSpec) -> Result<(OwnedFd, OwnedFd, u32), MonitorError> {
    let (master, slave, number) = sys::open_pty().map_err(io_err("opening a pty"))?;
    let root = spec.idmap.host_base;
    let tty_group = spec.idmap.to_host(5).unwrap_or(root);
    sys::fchown(slave.as_raw_fd(), root, tty_group).map_err(io_err("chown pty"))?;
    sys::fchmod(slave.as_raw_fd(), 0o620).map_err(io_err("chmod pty"))?;
    Ok((master, slave, number))
}

/// The first go-ahead on the child's pipe: its ids are mapped and it is
/// in its cgroup; it may unshare the cgroup namespace and build its
/// mounts. The numbers of the console's and the ttys' ptys follow once
/// the monitor has opened them, each a little-endian `u32` (the child
/// reads them when it comes to bind them), then the mask of the signals
/// to restore to their default disposition, a little-endian `u64`.
pub const GO_MOUNTS: &[u8] = b"m";
/// The second: the veth pairs are made (their host ends join their
/// bridges while the child goes on); it may write the guest's files and
/// exec. The address and the length of the files to write follow, each a
/// little-endian `u64` (the child shares the monitor's memory).
pub const GO_FILES: &[u8] = b"n";

/// The child's stack, of which it uses a few pages.
const CHILD_STACK: usize = 256 * 1024;
/// The stack of the thread that makes a container's cgroups.
const CGROUP_THREAD_STACK: usize = 256 * 1024;

/// The ptys of a start: the console's and one per tty.
struct Ptys {
    console: (OwnedFd, OwnedFd, u32),
    ttys: Vec<(OwnedFd, OwnedFd, u32)>,
}

impl Ptys {
    fn open(spec: &ContainerSpec) -> Result<Ptys, MonitorError> {
        let console = container_pty(spec)?;
        let ttys = (0..spec.ttys)
            .map(|_| container_pty(spec))
            .collect::<Result<_, _>>()?;
        Ok(Ptys { console, ttys })
    }

    /// The numbers, as the child reads them after [`GO_MOUNTS`].
    fn numbers(&self) -> Vec<u8> {
        std::iter::once(&self.console)
            .chain(&self.ttys)
            .flat_map(|(_, _, n)| n.to_le_bytes())
            .collect()
    }
}

fn start(spec: &ContainerSpec, opts: &MonitorOptions) -> Result<Running, MonitorError> {
    tracing::debug!("container {}: starting", spec.vmid);
    let cgroup_root = opts.cgroup_root.clone().or_else(Cgroup::v2_root);
    if cgroup_root.is_none() {
        tracing::warn!(
            "container {}: no cgroup v2 hierarchy: no limits are in force \
             and stopping relies on the pid namespace",
            spec.vmid
        );
    }
    // What the child needs, ready before the clone: it shares this
    // process's memory until its exec and allocates nothing.
    let (child_prep, stack) = Prepared::new(spec, cgroup_root.is_some())
        .map_err(MonitorError::Child)
        .and_then(|p| Ok((p, Stack::new(CHILD_STACK).map_err(io_err("child stack"))?)))?;
    // When the child reached its steps, and when the monitor did, for
    // the debug log.
    let debug = tracing::enabled!(tracing::Level::DEBUG);
    let marks = ChildMarks::new(debug);
    let mut steps = Steps::new(debug);
    // The cgroups are made on a thread of their own while this one
    // clones and prepares the child's ptys, files and veths: the clone
    // (most of it the kernel making the new network namespace) and the
    // cgroups (directories with controllers, limits, delegation) are a
    // start's two longest steps before the child runs, and neither needs
    // the other. The child is born in the monitor's cgroup and moved into
    // its own before the second go-ahead, before it unshares its cgroup
    // namespace and long before the guest's init runs. This thread
    // clones: the child's parent-death signal follows the thread that
    // made it.
    let mut making: Making = cgroup_root.map(|root| {
        let (vmid, limits, idmap) = (spec.vmid, spec.limits.clone(), spec.idmap);
        std::thread::Builder::new()
            .name("ctr-cgroup".into())
            .stack_size(CGROUP_THREAD_STACK)
            .spawn({
                let root = root.clone();
                move || Cgroup::create(&root, vmid, &limits, &idmap)
            })
            .map_err(|_| root)
    });
    let cloned = (|| {
        let (go_r, go_w) =
            nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC).map_err(nix_err("pipe"))?;
        let (rep_r, rep_w) =
            nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC).map_err(nix_err("pipe"))?;
        // A privileged container has no user namespace of its own.
        let userns = if spec.privileged {
            0
        } else {
            libc::CLONE_NEWUSER
        };
        let flags = userns
            | libc::CLONE_NEWNS
            | libc::CLONE_NEWPID
            | libc::CLONE_NEWUTS
            | libc::CLONE_NEWIPC
            | libc::CLONE_NEWNET;
        let args = Box::new(ChildArgs {
            prepared: &child_prep,
            go: go_r.as_raw_fd(),
            go_w: go_w.as_raw_fd(),
            report: rep_w.as_raw_fd(),
            report_r: rep_r.as_raw_fd(),
            marks: &marks,
        });
        steps.mark_clone();
        let (pid, child_args) = sys::clone_child(flags, &stack, args).map_err(io_err("clone"))?;
        drop(go_r);
        drop(rep_w);
        Ok::<_, MonitorError>((pid, go_w, File::from(rep_r), child_args))
    })();
    let (pid, go_w, mut report, child_args) = match cloned {
        Ok(cloned) => cloned,
        Err(e) => {
            // A start that fails here leaves no cgroup behind.
            if let Ok(Some(cg)) = cgroup_made(spec, &mut making) {
                let _ = cg.remove();
            }
            return Err(e);
        }
    };
    let mut cgroup: Option<Cgroup> = None;
    // The guest's files to write, which the child reads from here.
    let mut files: Option<Vec<PreparedFile>> = None;
    // Declared after everything of this process's memory the child uses,
    // so that a panic unwinding from here ends the child before any of it
    // is freed.
    let child_runs = EndOnUnwind(pid);
    let mut veths = None;
    // Kept open until the child is done with them (even when the start
    // fails here): a pty closed before the child binds it is gone.
    let mut ptys = None;
    let prepared = (|| -> Result<(), MonitorError> {
        if !spec.privileged {
            let line = spec.idmap.proc_map_line();
            for map in ["uid_map", "gid_map"] {
                let path = format!("/proc/{pid}/{map}");
                std::fs::write(&path, &line).map_err(io_err(format!("writing {path}")))?;
            }
        }
        tracing::debug!("container {}: cloned, id maps written", spec.vmid);
        // Two go-aheads: the child builds its mounts while the ptys and
        // the veths are made, and writes the guest's files only after the
        // second.
        nix::unistd::write(&go_w, GO_MOUNTS).map_err(nix_err("releasing the child"))?;
        steps.mark("maps");
        let opened = ptys.insert(Ptys::open(spec)?);
        steps.mark("ptys");
        nix::unistd::write(&go_w, &opened.numbers()).map_err(nix_err("releasing the child"))?;
        // The child inherited the monitor's dispositions with the clone,
        // and the monitor has changed none since. Read here, where the
        // monitor has time to spare while the child builds its mounts.
        let ignored = sys::ignored_signals_now().map_err(io_err("reading SigIgn"))?;
        nix::unistd::write(&go_w, &ignored.to_le_bytes())
            .map_err(nix_err("releasing the child"))?;
        // The guest's host name and network files, read as the container
        // would resolve them, while the child builds its mounts.
        let plan = crate::guestfiles::plan_in_root(spec, &spec.rootfs)
            .map_err(io_err("reading the guest's host name and network files"))?;
        let to_write = files.insert(plan.prepared());
        steps.mark("files read");
        let made = veths.insert(net::create_veths(spec.vmid, pid.as_raw(), &spec.nets)?);
        tracing::debug!("container {}: ptys and veth pairs made", spec.vmid);
        steps.mark("veths");
        // The cgroups, made meanwhile; the child goes into its own.
        cgroup = cgroup_made(spec, &mut making)?;
        if let Some(cg) = &cgroup {
            cg.add(pid.as_raw())?;
        }
        steps.mark("cgroup");
        let mut go = GO_FILES.to_vec();
        go.extend_from_slice(&(to_write.as_ptr() as u64).to_le_bytes());
        go.extend_from_slice(&(to_write.len() as u64).to_le_bytes());
        nix::unistd::write(&go_w, &go).map_err(nix_err("releasing the child"))?;
        // The host ends join their bridges while the child execs the
        // guest's init.
        made.join().or_else(|e| {
            // A pair goes away with its network namespace: when the
            // guest's init has already ended, that is for the monitor's
            // supervision to see, not a failed start.
            if init_ended(pid) {
                tracing::debug!(
                    "container {}: ended before its veths joined: {e}",
                    spec.vmid
                );
                Ok(())
            } else {
                Err(e)
            }
        })?;
        steps.mark("joined");
        Ok(())
    })();
    drop(go_w);
    // A start that failed before the cgroups were waited for still waits
    // for them, to remove them.
    if making.is_some() {
        cgroup = cgroup_made(spec, &mut making).ok().flatten();
    }
    let veths = veths.map(|v| v.names()).unwrap_or_default();
    // The child reports a failure on the pipe; exec closes it.
    let mut message = Vec::new();
    let _ = report.read_to_end(&mut message);
    steps.mark("exec seen");
    tracing::debug!("container {}: {}", spec.vmid, steps.describe(&marks));
    // The child has execed or ended: what it read of this process's
    // memory may go.
    drop(child_runs);
    drop(child_args);
    drop(stack);
    drop(child_prep);
    drop(files);
    let message = child::describe(&message);
    // A failed step of the child comes first: the monitor's own error is
    // then only its consequence (a broken go pipe).
    let checked = match (prepared, ptys) {
        _ if !message.is_empty() => Err(MonitorError::Child(message)),
        (Ok(()), Some(ptys)) => Ok(ptys),
        (Err(e), _) => Err(e),
        (Ok(()), None) => Err(MonitorError::Child("no ptys were opened".into())),
    };
    let ptys = match checked {
        Ok(ptys) => ptys,
        Err(e) => {
            let _ = kill(pid, Signal::SIGKILL);
            let _ = waitpid(pid, None);
            release(spec, cgroup.as_ref(), &veths);
            return Err(e);
        }
    };
    let (console_master, console_slave, console_number) = ptys.console;
    let (tty_masters, tty_slaves): (Vec<_>, Vec<_>) =
        ptys.ttys.into_iter().map(|(m, s, _)| (m, s)).unzip();
    tracing::info!("container {} started: init is pid {pid}", spec.vmid);
    Ok(Running {
        pid,
        cgroup,
        veths,
        console_master,
        // The monitor keeps its copy of the console slave open: output is
        // not lost with EIO when the guest closes its last descriptor of it.
        _console_slave: console_slave,
        tty_masters,
        tty_slaves,
        console_path: sys::pty_path(console_number),
        stopping: None,
    })
}

/// The cgroups of a start in the making: on their thread, or (no thread
/// to be had) to be made below this root.
type Making = Option<Result<std::thread::JoinHandle<Result<Cgroup, CgroupError>>, PathBuf>>;

/// Waits for the cgroups of a start (or makes them on this thread if no
/// thread could be had).
fn cgroup_made(spec: &ContainerSpec, making: &mut Making) -> Result<Option<Cgroup>, CgroupError> {
    match making.take() {
        None => Ok(None),
        Some(Ok(thread)) => thread
            .join()
            .unwrap_or_else(|panic| std::panic::resume_unwind(panic))
            .map(Some),
        Some(Err(root)) => Cgroup::create(&root, spec.vmid, &spec.limits, &spec.idmap).map(Some),
    }
}

/// The monitor's own steps of a start after the clone, for the debug log
/// beside the child's ([`ChildMarks`]), in milliseconds since the clone.
struct Steps {
    on: bool,
    clone: u64,
    marks: Vec<(&'static str, u64)>,
}

impl Steps {
    fn new(on: bool) -> Steps {
        Steps {
            on,
            clone: 0,
            marks: Vec::with_capacity(if on { 8 } else { 0 }),
        }
    }

    fn mark(&mut self, what: &'static str) {
        if self.on {
            self.marks.push((what, monotonic_ns()));
        }
    }

    fn mark_clone(&mut self) {
        if self.on {
            self.clone = monotonic_ns();
        }
    }

    /// "steps after the clone (ms): child entered 0.41, ...; monitor maps ...".
    fn describe(&self, child: &ChildMarks) -> String {
        let ms = |t: u64| {
            if t == 0 || self.clone == 0 {
                "-".to_string()
            } else {
                format!("{:.2}", (t as f64 - self.clone as f64) / 1e6)
            }
        };
        let list = |l: &mut dyn Iterator<Item = (&str, u64)>| {
            l.map(|(what, t)| format!("{what} {}", ms(t)))
                .collect::<Vec<_>>()
                .join(", ")
        };
        format!(
            "steps after the clone (ms): child {}; monitor {}",
            list(&mut child.read()),
            list(&mut self.marks.iter().copied())
        )
    }
}

/// Kills and reaps the child if dropped while the thread unwinds from a
/// panic: until its exec the child runs in the monitor's memory (its stack,
/// its arguments, the guest's files), which unwinding frees.
struct EndOnUnwind(Pid);

impl Drop for EndOnUnwind {
    fn drop(&mut self) {
        if std::thread::panicking() {
            let _ = kill(self.0, Signal::SIGKILL);
            let _ = waitpid(self.0, None);
        }
    }
}

/// Whether process `pid`, a child of this one, has ended (it is not
/// reaped: its status stays for `waitpid`).
fn init_ended(pid: Pid) -> bool {
    matches!(
        nix::sys::wait::waitid(
            nix::sys::wait::Id::Pid(pid),
            WaitPidFlag::WEXITED | WaitPidFlag::WNOHANG | WaitPidFlag::WNOWAIT,
        ),
        Ok(WaitStatus::Exited(..) | WaitStatus::Signaled(..))
    )
}

fn info(spec: &ContainerSpec, running: &Running) -> Info {
    Info {
        vmid: spec.vmid,
        pid: running.pid.as_raw(),
        state: if running.stopping.is_some() {
            "stopping".into()
        } else {
            "running".into()
        },
        hostname: spec.hostname.clone(),
        cgroup: running
            .cgroup
            .as_ref()
            .map(|c| c.outer.display().to_string()),
        limits_unavailable: match &running.cgroup {
            Some(c) => c.unavailable.clone(),
            None => vec!["all limits: no cgroup v2 hierarchy".to_string()],
        },
        veths: running.veths.clone(),
        console: running.console_path.display().to_string(),
    }
}

/// The signal that asks the guest's init to power off: SIGRTMIN+3 for
/// systemd, SIGPWR for the others (sysvinit, busybox), as LXC does.
fn poweroff_signal(pid: Pid) -> libc::c_int {
    let comm = std::fs::read_to_string(format!("/proc/{pid}/comm")).unwrap_or_default();
    if comm.trim() == "systemd" {
        libc::SIGRTMIN() + 3
    } else {
        libc::SIGPWR
    }
}

fn kill_container(running: &mut Running) {
    match &running.cgroup {
        Some(cg) => cg.kill(),
        // Killing a pid namespace's init kills everything in it.
        None => {
            let _ = kill(running.pid, Signal::SIGKILL);
        }
    }
    if let Some(s) = &mut running.stopping {
        s.killed = true;
    }
}

fn begin_stop(spec: &ContainerSpec, running: &mut Running, timeout: Duration, reboot: bool) {
    if let Some(s) = &mut running.stopping {
        s.reboot |= reboot;
        return;
    }
    let sig = poweroff_signal(running.pid);
    tracing::info!(
        "container {}: asking init (pid {}) to power off with signal {sig}",
        spec.vmid,
        running.pid
    );
    let _ = sys_kill(running.pid, sig);
    running.stopping = Some(Stopping {
        deadline: Some(Instant::now() + timeout),
        reboot,
        killed: false,
    });
}

fn sys_kill(pid: Pid, sig: libc::c_int) -> nix::Result<()> {
    // Real-time signals have no `Signal` variant; go through the raw
    // number, which nix's safe kill cannot take.
    match Signal::try_from(sig) {
        Ok(s) => kill(pid, s),
        Err(_) => sys::kill_raw(pid.as_raw(), sig)
            .map_err(|e| nix::Error::from_raw(e.raw_os_error().unwrap_or(libc::EINVAL))),
    }
}

fn handle_request(
    spec: &ContainerSpec,
    opts: &MonitorOptions,
    running: &mut Running,
    line: &str,
) -> serde_json::Value {
    let request: Request = match serde_json::from_str(line) {
        Ok(r) => r,
        Err(e) => return serde_json::json!({"ok": false, "error": format!("bad request: {e}")}),
    };
    let timeout = |t: Option<u64>| t.map(Duration::from_secs).unwrap_or(opts.shutdown_timeout);
    match request {
        Request::Ping => serde_json::json!({"ok": true, "data": "pong"}),
        Request::Info => serde_json::json!({"ok": true, "data": info(spec, running)}),
        Request::Shutdown { timeout: t } => {
            begin_stop(spec, running, timeout(t), false);
            serde_json::json!({"ok": true, "data": null})
        }
        Request::Reboot { timeout: t } => {
            begin_stop(spec, running, timeout(t), true);
            serde_json::json!({"ok": true, "data": null})
        }
        Request::Stop => {
            if running.stopping.is_none() {
                running.stopping = Some(Stopping {
                    deadline: None,
                    reboot: false,
                    killed: false,
                });
            }
            kill_container(running);
            serde_json::json!({"ok": true, "data": null})
        }
    }
}

fn serve_client(
    spec: &ContainerSpec,
    opts: &MonitorOptions,
    running: &mut Running,
    stream: UnixStream,
) {
    let _ = stream.set_nonblocking(false);
    let _ = stream.set_read_timeout(Some(Duration::from_secs(2)));
    let mut reader = BufReader::new(&stream);
    let mut line = String::new();
    if reader.read_line(&mut line).is_err() || line.trim().is_empty() {
        return;
    }
    let answer = handle_request(spec, opts, running, line.trim());
    let mut w = &stream;
    let _ = writeln!(w, "{answer}");
}

/// Reads whatever the pty master has and hands each chunk to `out`;
/// false once it is closed.
fn drain(master: BorrowedFd<'_>, mut out: impl FnMut(&[u8])) -> bool {
    let mut buf = [0u8; 4096];
    loop {
        match nix::unistd::read(master.as_raw_fd(), &mut buf) {
            Ok(0) => return false,
            Ok(n) => out(&buf[..n]),
            Err(nix::errno::Errno::EAGAIN) => return true,
            Err(nix::errno::Errno::EINTR) => continue,
            Err(_) => return false,
        }
    }
}

/// The console's output: the log, and the attached client if any (a
/// client that cannot keep up is dropped rather than stalling the guest).
struct ConsoleOut<'a> {
    log: &'a mut dyn Write,
    client: Option<UnixStream>,
}

impl ConsoleOut<'_> {
    fn write(&mut self, bytes: &[u8]) {
        let _ = self.log.write_all(bytes);
        if let Some(c) = &mut self.client {
            if c.write_all(bytes).is_err() {
                self.client = None;
            }
        }
    }
}

/// Writes a console client's input to the pty; what the guest does not
/// take at once is dropped.
fn console_input(master: BorrowedFd<'_>, client: &mut Option<UnixStream>) {
    let Some(c) = client else {
        return;
    };
    let mut buf = [0u8; 4096];
    match c.read(&mut buf) {
        Ok(0) => *client = None,
        Ok(n) => {
            let mut rest = &buf[..n];
            while !rest.is_empty() {
                match nix::unistd::write(master, rest) {
                    Ok(w) => rest = &rest[w..],
                    Err(nix::errno::Errno::EINTR) => {}
                    Err(_) => break,
                }
            }
        }
        Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
        Err(_) => *client = None,
    }
}

/// What a poll slot stands for.
#[derive(Clone, Copy, PartialEq)]
enum Slot {
    Signals,
    Console,
    Control,
    ConsoleListener,
    ConsoleClient,
    Tty(usize),
}

fn supervise(
    spec: &ContainerSpec,
    opts: &MonitorOptions,
    running: &mut Running,
    signals: &SignalFd,
    listeners: (Option<&UnixListener>, Option<&UnixListener>),
    log: &mut dyn Write,
) -> Result<Outcome, MonitorError> {
    let (control, console_listener) = listeners;
    let mut console = ConsoleOut { log, client: None };
    loop {
        let timeout = match running
            .stopping
            .and_then(|s| s.deadline)
            .filter(|_| !running.stopping.is_some_and(|s| s.killed))
        {
            Some(d) => {
                let left = d.saturating_duration_since(Instant::now());
                PollTimeout::try_from(left.as_millis().min(60_000) as i32 + 1)
                    .unwrap_or(PollTimeout::MAX)
            }
            None => PollTimeout::NONE,
        };
        let mut slots = vec![Slot::Signals, Slot::Console];
        let mut fds = vec![
            PollFd::new(signals.as_fd(), PollFlags::POLLIN),
            PollFd::new(running.console_master.as_fd(), PollFlags::POLLIN),
        ];
        if let Some(l) = control {
            slots.push(Slot::Control);
            fds.push(PollFd::new(l.as_fd(), PollFlags::POLLIN));
        }
        if let Some(l) = console_listener {
            slots.push(Slot::ConsoleListener);
            fds.push(PollFd::new(l.as_fd(), PollFlags::POLLIN));
        }
        if let Some(c) = &console.client {
            slots.push(Slot::ConsoleClient);
            fds.push(PollFd::new(c.as_fd(), PollFlags::POLLIN));
        }
        for (i, m) in running.tty_masters.iter().enumerate() {
            slots.push(Slot::Tty(i));
            fds.push(PollFd::new(m.as_fd(), PollFlags::POLLIN));
        }
        match poll(&mut fds, timeout) {
            Ok(_) | Err(nix::errno::Errno::EINTR) => {}
            Err(e) => return Err(nix_err("poll")(e)),
        }
        let ready: Vec<Slot> = fds
            .iter()
            .zip(&slots)
            .filter(|(f, _)| f.revents().is_some_and(|r| !r.is_empty()))
            .map(|(_, s)| *s)
            .collect();
        drop(fds);
        for slot in ready {
            match slot {
                Slot::Console => {
                    drain(running.console_master.as_fd(), |b| console.write(b));
                    let _ = console.log.flush();
                }
                Slot::Tty(i) => {
                    drain(running.tty_masters[i].as_fd(), |_| {});
                }
                Slot::Control => {
                    if let Some(l) = control {
                        while let Ok((stream, _)) = l.accept() {
                            serve_client(spec, opts, running, stream);
                        }
                    }
                }
                Slot::ConsoleListener => {
                    if let Some(l) = console_listener {
                        // The newest client takes the console over.
                        while let Ok((stream, _)) = l.accept() {
                            if stream.set_nonblocking(true).is_ok() {
                                console.client = Some(stream);
                            }
                        }
                    }
                }
                Slot::ConsoleClient => {
                    console_input(running.console_master.as_fd(), &mut console.client);
                }
                Slot::Signals => {
                    while let Ok(Some(info)) = signals.read_signal() {
                        match Signal::try_from(info.ssi_signo as i32) {
                            Ok(Signal::SIGTERM) | Ok(Signal::SIGINT) | Ok(Signal::SIGHUP) => {
                                tracing::info!(
                                    "container {}: the monitor was asked to stop (signal {})",
                                    spec.vmid,
                                    info.ssi_signo
                                );
                                begin_stop(spec, running, opts.shutdown_timeout, false);
                            }
                            _ => {}
                        }
                    }
                }
            }
        }
        if let Some(s) = running.stopping {
            if !s.killed && s.deadline.is_some_and(|d| Instant::now() >= d) {
                tracing::warn!(
                    "container {}: init did not end within the timeout: killing it",
                    spec.vmid
                );
                kill_container(running);
            }
        }
        match waitpid(running.pid, Some(WaitPidFlag::WNOHANG)) {
            Ok(WaitStatus::StillAlive) => {}
            Ok(status) => {
                drain(running.console_master.as_fd(), |b| console.write(b));
                let _ = console.log.flush();
                return Ok(outcome(spec, running, status));
            }
            Err(nix::errno::Errno::ECHILD) => return Ok(Outcome::Poweroff),
            Err(e) => return Err(nix_err("waitpid")(e)),
        }
    }
}

/// Reads the end of the container's init: `reboot(2)` in a pid namespace
/// ends its init with SIGHUP for a restart and SIGINT for a halt or power
/// off.
fn outcome(spec: &ContainerSpec, running: &Running, status: WaitStatus) -> Outcome {
    let asked = running.stopping;
    let outcome = match (asked, status) {
        (Some(s), _) if s.reboot => Outcome::Reboot,
        (Some(_), _) => Outcome::Poweroff,
        (None, WaitStatus::Signaled(_, Signal::SIGHUP, _)) => Outcome::Reboot,
        _ => Outcome::Poweroff,
    };
    tracing::info!(
        "container {}: init ended ({status:?}): {outcome:?}",
        spec.vmid
    );
    outcome
}

/// Removes what the monitor made: what is left in the cgroups is killed
/// and the cgroups removed; veths still present are deleted (the kernel
/// deletes them with the network namespace, but not always at once).
fn cleanup(spec: &ContainerSpec, running: &mut Running) {
    // The guest is gone: nothing more to keep the ttys open for.
    running.tty_slaves.clear();
    release(spec, running.cgroup.as_ref(), &running.veths);
}

/// Removes what a start made on the host: the cgroup (killing what is
/// left in it) and the veths.
fn release(spec: &ContainerSpec, cgroup: Option<&Cgroup>, veths: &[String]) {
    if let Some(cg) = cgroup {
        if cg.is_populated() {
            cg.kill();
        }
        if let Err(e) = cg.remove() {
            tracing::error!("container {}: {e}: {:?}", spec.vmid, e.source_chain());
        }
    }
    for veth in veths {
        if let Err(e) = net::delete_link(veth) {
            tracing::warn!("container {}: {e}", spec.vmid);
        }
    }
}

trait SourceChain {
    fn source_chain(&self) -> Vec<String>;
}

impl<E: std::error::Error> SourceChain for E {
    fn source_chain(&self) -> Vec<String> {
        let mut out = Vec::new();
        let mut cur = self.source();
        while let Some(e) = cur {
            out.push(e.to_string());
            cur = e.source();
        }
        out
    }
}

/// Sends one request to a monitor's control socket and returns the
/// `data` of its answer, or the error it gave.
pub fn request(socket: &Path, req: &Request) -> Result<serde_json::Value, io::Error> {
    let stream = UnixStream::connect(socket)?;
    stream.set_read_timeout(Some(Duration::from_secs(10)))?;
    let mut w = &stream;
    let line = serde_json::to_string(req).map_err(io::Error::other)?;
    writeln!(w, "{line}")?;
    let mut answer = String::new();
    BufReader::new(&stream).read_line(&mut answer)?;
    let value: serde_json::Value = serde_json::from_str(&answer).map_err(io::Error::other)?;
    if value["ok"] == serde_json::Value::Bool(true) {
        Ok(value["data"].clone())
    } else {
        Err(io::Error::other(
            value["error"]
                .as_str()
                .unwrap_or("the monitor refused")
                .to_string(),
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_read_like_inits_protocol() {
        let r: Request = serde_json::from_str(r#"{"cmd":"shutdown","timeout":5}"#).unwrap();
        assert_eq!(r, Request::Shutdown { timeout: Some(5) });
        let r: Request = serde_json::from_str(r#"{"cmd":"reboot"}"#).unwrap();
        assert_eq!(r, Request::Reboot { timeout: None });
        assert!(serde_json::from_str::<Request>(r#"{"cmd":"explode"}"#).is_err());
        assert_eq!(Outcome::Reboot.exit_status(), 3);
        assert_eq!(Outcome::Poweroff.exit_status(), 0);
    }
}
