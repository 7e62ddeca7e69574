//! The supervisor: runs units, restarts them, answers the control socket,
//! and stops everything in reverse order at shutdown.
//!
//! It is one single-threaded loop around `poll(2)`: a signalfd (children,
//! shutdown signals), the control socket and its connections, the optional
//! test control channel, and the power-button input devices. Timers wake
//! it only while something is due: a 100 ms tick while a unit waits for
//! its dependencies or its readiness, else the next restart back-off, stop
//! timeout or back-off reset. With every unit running, PID 1 sleeps until
//! an event comes.

use std::collections::VecDeque;
use std::fs::{self, File, OpenOptions};
use std::io::{ErrorKind, Read, Write};
use std::net::TcpStream;
use std::os::fd::{AsFd, AsRawFd};
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::str::FromStr;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use nix::errno::Errno;
use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
use nix::sys::signal::{kill, SigSet, Signal};
use nix::sys::signalfd::{SfdFlags, SignalFd};
use nix::sys::wait::{waitpid, WaitPidFlag, WaitStatus};
use nix::unistd::Pid;

use crate::console::say;
use crate::control::{Request, Response, UnitState, UnitStatus};
use crate::power::PowerButton;
use crate::service::{Readiness, RestartPolicy, UnitSpec};

const TICK: Duration = Duration::from_millis(100);
const BACKOFF_START: Duration = Duration::from_millis(200);
const BACKOFF_MAX: Duration = Duration::from_secs(10);
/// A unit that stayed up this long gets its back-off reset.
const STABLE_AFTER: Duration = Duration::from_secs(10);

/// What the supervisor was asked to end with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Shutdown {
    /// Power the machine off.
    PowerOff,
    /// Reboot the machine.
    Reboot,
}

/// How the supervisor is set up.
#[derive(Debug, Clone)]
pub struct SupervisorConfig {
    /// The control socket path.
    pub socket_path: PathBuf,
    /// Directory for one `<unit>.log` per unit.
    pub log_dir: PathBuf,
    /// The cgroup v2 root, when units get cgroups.
    pub cgroup_root: Option<PathBuf>,
    /// A serial port carrying the control protocol for tests.
    pub test_channel: Option<PathBuf>,
    /// Input devices that report the ACPI power button.
    pub power_buttons: Vec<PathBuf>,
    /// Transient units wait until this file exists (stage 2 writes it once
    /// the system modules, KVM among them, are loaded).
    pub transient_gate: Option<PathBuf>,
    /// Told once every service of the table has settled: ready, or given
    /// up on for now (back-off, failed, stopped). Stage 2 loads the
    /// feature modules only then, so they do not slow the services' start.
    pub boot_settled: Option<std::sync::mpsc::Sender<()>>,
}

#[derive(Debug)]
struct Unit {
    spec: UnitSpec,
    transient: bool,
    state: UnitState,
    pid: Option<Pid>,
    started_at: Option<SystemTime>,
    started_instant: Option<Instant>,
    start_times: VecDeque<Instant>,
    restarts: u32,
    backoff: Duration,
    next_start: Option<Instant>,
    stop_deadline: Option<Instant>,
    start_after_stop: bool,
    last_exit: Option<String>,
    last_code: Option<i32>,
    cgroup: Option<String>,
}

impl Unit {
    fn new(spec: UnitSpec, transient: bool) -> Unit {
        let cgroup = spec.cgroup.clone().unwrap_or_else(|| {
            if transient {
                format!("guests/{}", spec.name)
            } else {
                format!("system/{}", spec.name)
            }
        });
        Unit {
            spec,
            transient,
            state: UnitState::Waiting,
            pid: None,
            started_at: None,
            started_instant: None,
            start_times: VecDeque::new(),
            restarts: 0,
            backoff: BACKOFF_START,
            next_start: None,
            stop_deadline: None,
            start_after_stop: false,
            last_exit: None,
            last_code: None,
            cgroup: Some(cgroup),
        }
    }

    fn status(&self, with_cgroup: bool) -> UnitStatus {
        UnitStatus {
            name: self.spec.name.clone(),
            kind: if self.transient {
                "transient"
            } else {
                "service"
            }
            .into(),
            state: self.state,
            pid: self.pid.map(Pid::as_raw),
            started_at: self
                .started_at
                .and_then(|t| t.duration_since(UNIX_EPOCH).ok())
                .map(|d| d.as_secs()),
            restarts: self.restarts,
            last_exit: self.last_exit.clone(),
            last_exit_code: self.last_code,
            cgroup: if with_cgroup {
                self.cgroup.clone()
            } else {
                None
            },
        }
    }

    fn active(&self) -> bool {
        matches!(
            self.state,
            UnitState::Starting
                | UnitState::Running
                | UnitState::Stopping
                | UnitState::Backoff
                | UnitState::Waiting
        )
    }
}

/// A line-oriented endpoint of the control protocol.
trait Channel: Read + Write + AsFd {}
impl Channel for UnixStream {}
impl Channel for File {}

struct Conn {
    chan: Box<dyn Channel>,
    buf: Vec<u8>,
}

/// The supervisor.
pub struct Supervisor {
    cfg: SupervisorConfig,
    units: Vec<Unit>,
    sigfd: SignalFd,
    listener: UnixListener,
    conns: Vec<Conn>,
    test_chan: Option<Conn>,
    buttons: Vec<PowerButton>,
    shutdown: Option<Shutdown>,
    /// Names in the order they were last started, for the reverse stop.
    start_order: Vec<String>,
}

/// Errors that keep the supervisor from starting.
#[derive(Debug, thiserror::Error)]
pub enum SupervisorError {
    /// Signals could not be routed to the loop.
    #[error("cannot set up signal handling: {0}")]
    Signals(#[from] Errno),
    /// The control socket could not be created.
    #[error("cannot create control socket {path}: {source}")]
    Socket {
        /// The socket path.
        path: PathBuf,
        /// The cause.
        source: std::io::Error,
    },
}

/// The signals the loop handles.
fn handled_signals() -> SigSet {
    let mut set = SigSet::empty();
    for s in [
        Signal::SIGCHLD,
        Signal::SIGTERM,
        Signal::SIGINT,
        Signal::SIGPWR,
        Signal::SIGHUP,
        Signal::SIGUSR1,
        Signal::SIGUSR2,
    ] {
        set.add(s);
    }
    set
}

impl Supervisor {
    /// Sets up signals, the control socket and the channels, and queues the
    /// services (already in dependency order).
    pub fn new(
        cfg: SupervisorConfig,
        services: Vec<UnitSpec>,
    ) -> Result<Supervisor, SupervisorError> {
        let mask = handled_signals();
        mask.thread_block()?;
        let sigfd = SignalFd::with_flags(&mask, SfdFlags::SFD_NONBLOCK | SfdFlags::SFD_CLOEXEC)?;
        let sock_err = |source| SupervisorError::Socket {
            path: cfg.socket_path.clone(),
            source,
        };
        if let Some(dir) = cfg.socket_path.parent() {
            fs::create_dir_all(dir).map_err(sock_err)?;
        }
        let _ = fs::remove_file(&cfg.socket_path);
        let listener = UnixListener::bind(&cfg.socket_path).map_err(sock_err)?;
        fs::set_permissions(&cfg.socket_path, fs::Permissions::from_mode(0o600))
            .map_err(sock_err)?;
        listener.set_nonblocking(true).map_err(sock_err)?;
        let test_chan = cfg.test_channel.as_ref().and_then(|p| match open_tty(p) {
            Ok(f) => {
                say(format_args!(
                    "test control channel on {} (enabled by oxbow.testctl)",
                    p.display()
                ));
                Some(Conn {
                    chan: Box::new(f),
                    buf: Vec::new(),
                })
            }
            Err(e) => {
                say(format_args!("test control channel {}: {e}", p.display()));
                None
            }
        });
        let buttons = cfg
            .power_buttons
            .iter()
            .filter_map(|p| match PowerButton::open(p) {
                Ok(b) => Some(b),
                Err(e) => {
                    say(format_args!("power button {}: {e}", p.display()));
                    None
                }
            })
            .collect();
        if let Err(e) = fs::create_dir_all(&cfg.log_dir) {
            say(format_args!("log directory {}: {e}", cfg.log_dir.display()));
        }
        let units = services.into_iter().map(|s| Unit::new(s, false)).collect();
        Ok(Supervisor {
            cfg,
            units,
            sigfd,
            listener,
            conns: Vec::new(),
            test_chan,
            buttons,
            shutdown: None,
            start_order: Vec::new(),
        })
    }

    /// Runs until a shutdown is asked for, then stops every unit in reverse
    /// start order and returns what was asked.
    pub fn run(&mut self) -> Shutdown {
        loop {
            self.tick();
            if let Some(s) = self.shutdown {
                self.stop_all();
                return s;
            }
            let wake = self.next_wake(Instant::now());
            self.wait_for_events(wake);
        }
    }

    /// How long the loop may sleep before [`Supervisor::tick`] has work:
    /// [`TICK`] while a unit waits to start or to be ready (both are polled:
    /// a file, a TCP port, the transient gate), else until the earliest
    /// back-off, stop deadline or back-off reset; `None` when nothing is
    /// due.
    fn next_wake(&self, now: Instant) -> Option<Duration> {
        let mut next: Option<Instant> = None;
        let mut at = |t: Instant| next = Some(next.map_or(t, |n| n.min(t)));
        for u in &self.units {
            match u.state {
                UnitState::Waiting | UnitState::Starting => return Some(TICK),
                UnitState::Backoff => {
                    if let Some(t) = u.next_start {
                        at(t);
                    }
                }
                UnitState::Stopping => {
                    if let Some(t) = u.stop_deadline {
                        at(t);
                    }
                }
                UnitState::Running if u.backoff != BACKOFF_START => {
                    if let Some(t) = u.started_instant {
                        at(t + STABLE_AFTER + Duration::from_millis(1));
                    }
                }
                _ => {}
            }
        }
        next.map(|t| t.saturating_duration_since(now))
    }

    /// Waits for an event, or `timeout` (`None`: no limit).
    fn wait_for_events(&mut self, timeout: Option<Duration>) {
        let ready = {
            let mut fds: Vec<PollFd> = Vec::new();
            fds.push(PollFd::new(self.sigfd.as_fd(), PollFlags::POLLIN));
            fds.push(PollFd::new(self.listener.as_fd(), PollFlags::POLLIN));
            for c in &self.conns {
                fds.push(PollFd::new(c.chan.as_fd(), PollFlags::POLLIN));
            }
            if let Some(t) = &self.test_chan {
                fds.push(PollFd::new(t.chan.as_fd(), PollFlags::POLLIN));
            }
            for b in &self.buttons {
                fds.push(PollFd::new(b.as_fd(), PollFlags::POLLIN));
            }
            let timeout = match timeout {
                // Rounded up, so a deadline is not polled for again early.
                Some(t) => PollTimeout::from(
                    u16::try_from(t.as_nanos().div_ceil(1_000_000)).unwrap_or(u16::MAX),
                ),
                None => PollTimeout::NONE,
            };
            match poll(&mut fds, timeout) {
                Ok(_) => fds
                    .iter()
                    .map(|f| f.revents().is_some_and(|r| !r.is_empty()))
                    .collect::<Vec<bool>>(),
                Err(_) => vec![false; fds.len()],
            }
        };
        let mut i = 0;
        let mut next = || {
            let r = ready.get(i).copied().unwrap_or(false);
            i += 1;
            r
        };
        if next() {
            self.handle_signals();
        }
        if next() {
            self.accept();
        }
        let conn_ready: Vec<bool> = (0..self.conns.len()).map(|_| next()).collect();
        let test_ready = self.test_chan.is_some() && next();
        let button_ready: Vec<bool> = (0..self.buttons.len()).map(|_| next()).collect();
        let mut keep = Vec::with_capacity(self.conns.len());
        let conns = std::mem::take(&mut self.conns);
        for (mut c, r) in conns.into_iter().zip(conn_ready) {
            if !r || self.serve(&mut c) {
                keep.push(c);
            }
        }
        self.conns = keep;
        if test_ready {
            if let Some(mut t) = self.test_chan.take() {
                self.serve(&mut t);
                self.test_chan = Some(t);
            }
        }
        let pressed = self
            .buttons
            .iter_mut()
            .zip(button_ready)
            .any(|(b, r)| r && b.pressed());
        if pressed && self.shutdown.is_none() {
            say("power button pressed: shutting down");
            self.shutdown = Some(Shutdown::PowerOff);
        }
    }

    fn handle_signals(&mut self) {
        while let Ok(Some(info)) = self.sigfd.read_signal() {
            let Ok(sig) = Signal::try_from(info.ssi_signo as i32) else {
                continue;
            };
            match sig {
                Signal::SIGCHLD => self.reap(),
                Signal::SIGTERM | Signal::SIGPWR | Signal::SIGUSR2 if self.shutdown.is_none() => {
                    say(format_args!("{sig}: shutting down"));
                    self.shutdown = Some(Shutdown::PowerOff);
                }
                Signal::SIGINT if self.shutdown.is_none() => {
                    say("ctrl-alt-del: rebooting");
                    self.shutdown = Some(Shutdown::Reboot);
                }
                _ => {}
            }
        }
        // A SIGCHLD may be merged with others; reaping is cheap, so always try.
        self.reap();
    }

    fn accept(&mut self) {
        while let Ok((s, _)) = self.listener.accept() {
            if s.set_nonblocking(true).is_ok() {
                self.conns.push(Conn {
                    chan: Box::new(s),
                    buf: Vec::new(),
                });
            }
        }
    }

    /// Reads what a connection sent and answers each complete line. Returns
    /// false when the connection should be dropped.
    fn serve(&mut self, c: &mut Conn) -> bool {
        let mut tmp = [0u8; 4096];
        let mut open = true;
        loop {
            match c.chan.read(&mut tmp) {
                Ok(0) => {
                    open = false;
                    break;
                }
                Ok(n) => c.buf.extend_from_slice(&tmp[..n]),
                Err(e) if e.kind() == ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == ErrorKind::Interrupted => continue,
                Err(_) => {
                    open = false;
                    break;
                }
            }
            if c.buf.len() > 1 << 20 {
                let _ = write_line(c.chan.as_mut(), &Response::err("request line too long"));
                return false;
            }
        }
        while let Some(pos) = c.buf.iter().position(|b| *b == b'\n') {
            let line: Vec<u8> = c.buf.drain(..=pos).collect();
            let text = String::from_utf8_lossy(&line);
            let text = text.trim();
            if text.is_empty() {
                continue;
            }
            let resp = match serde_json::from_str::<Request>(text) {
                Ok(req) => self.handle(req),
                Err(e) => Response::err(format!("bad request: {e}")),
            };
            if write_line(c.chan.as_mut(), &resp).is_err() {
                return false;
            }
        }
        open
    }

    /// Carries out one control request.
    pub fn handle(&mut self, req: Request) -> Response {
        match req {
            Request::Ping => Response::ok("pong"),
            Request::List => {
                let with_cg = self.cfg.cgroup_root.is_some();
                Response::ok(
                    self.units
                        .iter()
                        .map(|u| u.status(with_cg))
                        .collect::<Vec<_>>(),
                )
            }
            Request::Status { unit } => match self.find(&unit) {
                Some(i) => Response::ok(self.units[i].status(self.cfg.cgroup_root.is_some())),
                None => Response::err(format!("no such unit `{unit}`")),
            },
            Request::Start { unit } => match self.find(&unit) {
                Some(i) => {
                    let u = &mut self.units[i];
                    match u.state {
                        UnitState::Stopped | UnitState::Failed => {
                            u.start_times.clear();
                            u.backoff = BACKOFF_START;
                            u.state = UnitState::Waiting;
                            Response::ok(())
                        }
                        UnitState::Stopping => {
                            u.start_after_stop = true;
                            Response::ok(())
                        }
                        _ => Response::ok(()),
                    }
                }
                None => Response::err(format!("no such unit `{unit}`")),
            },
            Request::Stop { unit } => match self.find(&unit) {
                Some(i) => {
                    self.begin_stop(i, false);
                    Response::ok(())
                }
                None => Response::err(format!("no such unit `{unit}`")),
            },
            Request::Restart { unit } => match self.find(&unit) {
                Some(i) => {
                    if self.units[i].pid.is_some() {
                        self.begin_stop(i, true);
                    } else {
                        self.units[i].state = UnitState::Waiting;
                    }
                    Response::ok(())
                }
                None => Response::err(format!("no such unit `{unit}`")),
            },
            Request::Kill { unit, signal } => {
                let Some(i) = self.find(&unit) else {
                    return Response::err(format!("no such unit `{unit}`"));
                };
                let sig = match parse_signal(&signal) {
                    Ok(s) => s,
                    Err(e) => return Response::err(e),
                };
                match self.units[i].pid {
                    Some(pid) => match kill(pid, sig) {
                        Ok(()) => Response::ok(pid.as_raw()),
                        Err(e) => Response::err(format!("kill {unit}: {e}")),
                    },
                    None => Response::err(format!("unit `{unit}` is not running")),
                }
            }
            Request::Run { unit } => self.run_transient(unit),
            Request::Remove { unit } => match self.find(&unit) {
                Some(i) if !self.units[i].transient => {
                    Response::err(format!("`{unit}` is a service, not a transient unit"))
                }
                Some(i) if self.units[i].active() => {
                    Response::err(format!("unit `{unit}` is still active; stop it first"))
                }
                Some(i) => {
                    self.units.remove(i);
                    Response::ok(())
                }
                None => Response::err(format!("no such unit `{unit}`")),
            },
            Request::Poweroff => {
                self.shutdown.get_or_insert(Shutdown::PowerOff);
                Response::ok(())
            }
            Request::Reboot => {
                self.shutdown.get_or_insert(Shutdown::Reboot);
                Response::ok(())
            }
        }
    }

    fn run_transient(&mut self, spec: UnitSpec) -> Response {
        if let Err(e) = spec.validate() {
            return Response::err(e);
        }
        if let Some(i) = self.find(&spec.name) {
            let u = &self.units[i];
            if !u.transient {
                return Response::err(format!("`{}` is the name of a service", spec.name));
            }
            if u.active() {
                return Response::err(format!("unit `{}` is already active", spec.name));
            }
            self.units.remove(i);
        }
        if let Some(missing) = spec.after.iter().find(|d| self.find(d).is_none()) {
            return Response::err(format!(
                "unit `{}` needs `{missing}`, which does not exist",
                spec.name
            ));
        }
        let name = spec.name.clone();
        self.units.push(Unit::new(spec, true));
        let i = self.units.len() - 1;
        if self.units[i].spec.after.is_empty() && self.gate_open() {
            self.start(i);
            let u = &mut self.units[i];
            if u.pid.is_none() {
                // The program could not even be executed: report it to the
                // caller rather than retrying something that cannot work.
                u.state = UnitState::Failed;
                u.next_start = None;
                let why = u.last_exit.clone().unwrap_or_default();
                return Response::err(format!("unit `{name}` failed to start: {why}"));
            }
        }
        Response::ok(self.units[i].status(self.cfg.cgroup_root.is_some()))
    }

    fn find(&self, name: &str) -> Option<usize> {
        self.units.iter().position(|u| u.spec.name == name)
    }

    fn gate_open(&self) -> bool {
        self.cfg.transient_gate.as_ref().is_none_or(|p| p.exists())
    }

    fn is_ready(&self, name: &str) -> bool {
        self.find(name)
            .is_some_and(|i| self.units[i].state == UnitState::Running)
    }

    /// Periodic work: start waiting units, check readiness, restart after
    /// back-off, escalate overdue stops.
    fn tick(&mut self) {
        let now = Instant::now();
        for i in 0..self.units.len() {
            match self.units[i].state {
                UnitState::Waiting
                    if self.shutdown.is_none()
                        && (!self.units[i].transient || self.gate_open())
                        && self.units[i].spec.after.iter().all(|d| self.is_ready(d)) =>
                {
                    self.start(i);
                }
                UnitState::Starting => {
                    let ready = match &self.units[i].spec.ready {
                        Readiness::Started => true,
                        Readiness::File(p) => p.exists(),
                        Readiness::Tcp(a) => {
                            TcpStream::connect_timeout(a, Duration::from_millis(50)).is_ok()
                        }
                    };
                    if ready {
                        self.units[i].state = UnitState::Running;
                        let note = match &self.units[i].spec.ready {
                            Readiness::File(p) => ready_note(p),
                            _ => String::new(),
                        };
                        say(format_args!(
                            "[ ok ] {} is ready{note}",
                            self.units[i].spec.name
                        ));
                    }
                }
                UnitState::Backoff
                    if self.shutdown.is_none()
                        && self.units[i].next_start.is_some_and(|t| t <= now) =>
                {
                    self.start(i);
                }
                UnitState::Stopping => {
                    let u = &mut self.units[i];
                    if u.stop_deadline.is_some_and(|t| t <= now) {
                        u.stop_deadline = None;
                        say(format_args!(
                            "{} did not stop in {} s: killing it",
                            u.spec.name, u.spec.stop_timeout
                        ));
                        if let Some(pid) = u.pid {
                            let _ = kill(pid, Signal::SIGKILL);
                        }
                        if let Some(cg) = self.cgroup_dir(i) {
                            kill_cgroup(&cg);
                        }
                    }
                }
                UnitState::Running => {
                    let u = &mut self.units[i];
                    if u.started_instant
                        .is_some_and(|t| now.duration_since(t) > STABLE_AFTER)
                    {
                        u.backoff = BACKOFF_START;
                    }
                }
                _ => {}
            }
        }
        self.tell_if_settled();
    }

    /// Tells [`SupervisorConfig::boot_settled`], once (it is taken from the
    /// configuration), when no service of the table is waiting or starting
    /// any more.
    fn tell_if_settled(&mut self) {
        if self.cfg.boot_settled.is_none() {
            return;
        }
        let settling = self
            .units
            .iter()
            .any(|u| !u.transient && matches!(u.state, UnitState::Waiting | UnitState::Starting));
        if !settling {
            if let Some(tx) = self.cfg.boot_settled.take() {
                let _ = tx.send(());
            }
        }
    }

    fn cgroup_dir(&self, i: usize) -> Option<PathBuf> {
        let root = self.cfg.cgroup_root.as_ref()?;
        Some(root.join(self.units[i].cgroup.as_ref()?))
    }

    /// Starts unit `i` now.
    fn start(&mut self, i: usize) {
        let now = Instant::now();
        let cg_dir = self.cgroup_dir(i);
        let log_path = self.cfg.log_dir.join(format!(
            "{}.log",
            self.units[i].spec.name.replace(['/', ':'], "-")
        ));
        let u = &mut self.units[i];
        let interval = Duration::from_secs(u.spec.start_interval);
        while u
            .start_times
            .front()
            .is_some_and(|t| now.duration_since(*t) > interval)
        {
            u.start_times.pop_front();
        }
        if u.start_times.len() >= u.spec.start_limit as usize {
            u.state = UnitState::Failed;
            say(format_args!(
                "[fail] {} started {} times in {} s: giving up (start it again with `oxctl start {}`)",
                u.spec.name, u.spec.start_limit, u.spec.start_interval, u.spec.name
            ));
            return;
        }
        u.start_times.push_back(now);
        let mut cmd = Command::new(&u.spec.exec[0]);
        cmd.args(&u.spec.exec[1..])
            .env("PATH", "/usr/sbin:/usr/bin:/sbin:/bin")
            .envs(&u.spec.env)
            .current_dir("/")
            .stdin(Stdio::null());
        match OpenOptions::new()
            .create(true)
            .append(true)
            .mode(0o640)
            .open(&log_path)
        {
            Ok(f) => {
                let f2 = f.try_clone().ok();
                cmd.stdout(f);
                if let Some(f2) = f2 {
                    cmd.stderr(f2);
                }
            }
            Err(e) => say(format_args!(
                "{}: log {}: {e}",
                u.spec.name,
                log_path.display()
            )),
        }
        let procs = cg_dir.as_ref().and_then(|d| {
            fs::create_dir_all(d).ok()?;
            OpenOptions::new()
                .write(true)
                .custom_flags(libc::O_CLOEXEC)
                .open(d.join("cgroup.procs"))
                .ok()
        });
        crate::sys::prepare_service_command(&mut cmd, procs.as_ref().map(|f| f.as_raw_fd()));
        match cmd.spawn() {
            Ok(child) => {
                let pid = Pid::from_raw(child.id() as i32);
                u.pid = Some(pid);
                u.started_at = Some(SystemTime::now());
                u.started_instant = Some(now);
                u.state = UnitState::Starting;
                u.next_start = None;
                say(format_args!("[ ok ] started {} (pid {pid})", u.spec.name));
                if u.spec.ready == Readiness::Started {
                    u.state = UnitState::Running;
                }
                self.start_order.retain(|n| *n != self.units[i].spec.name);
                self.start_order.push(self.units[i].spec.name.clone());
            }
            Err(e) => {
                let why = format!("cannot start {}: {e}", u.spec.exec[0]);
                say(format_args!("[fail] {}: {why}", u.spec.name));
                u.last_exit = Some(why);
                u.last_code = None;
                self.after_exit(i, true);
            }
        }
    }

    /// Decides what follows the end of unit `i`'s process.
    fn after_exit(&mut self, i: usize, failed: bool) {
        let shutting_down = self.shutdown.is_some();
        let u = &mut self.units[i];
        if u.state == UnitState::Stopping {
            u.state = UnitState::Stopped;
            u.stop_deadline = None;
            if std::mem::take(&mut u.start_after_stop) && !shutting_down {
                u.state = UnitState::Waiting;
            }
            return;
        }
        let restart = !shutting_down
            && match u.spec.restart {
                RestartPolicy::Always => true,
                RestartPolicy::OnFailure => failed,
                RestartPolicy::Never => false,
                RestartPolicy::OnStatus(status) => u.last_code == Some(status),
            };
        if !restart {
            u.state = if failed {
                UnitState::Failed
            } else {
                UnitState::Stopped
            };
            return;
        }
        u.restarts += 1;
        u.state = UnitState::Backoff;
        u.next_start = Some(Instant::now() + u.backoff);
        say(format_args!(
            "{}: restarting in {} ms",
            u.spec.name,
            u.backoff.as_millis()
        ));
        u.backoff = (u.backoff * 2).min(BACKOFF_MAX);
    }

    /// Reaps every exited child.
    fn reap(&mut self) {
        loop {
            let (pid, how, code, failed) =
                match waitpid(Pid::from_raw(-1), Some(WaitPidFlag::WNOHANG)) {
                    Ok(WaitStatus::Exited(pid, code)) => (
                        pid,
                        format!("exited with status {code}"),
                        Some(code),
                        code != 0,
                    ),
                    Ok(WaitStatus::Signaled(pid, sig, _)) => {
                        (pid, format!("killed by {sig}"), None, true)
                    }
                    Ok(WaitStatus::StillAlive) | Err(_) => return,
                    Ok(_) => continue,
                };
            let Some(i) = self.units.iter().position(|u| u.pid == Some(pid)) else {
                continue;
            };
            if let Some(cg) = self.cgroup_dir(i) {
                kill_cgroup(&cg);
                let _ = fs::remove_dir(&cg);
            }
            let u = &mut self.units[i];
            u.pid = None;
            let stopping = u.state == UnitState::Stopping;
            let level = if failed && !stopping {
                "[fail]"
            } else {
                "[ ok ]"
            };
            say(format_args!("{level} {} (pid {pid}) {how}", u.spec.name));
            u.last_exit = Some(how);
            u.last_code = code;
            self.after_exit(i, failed);
        }
    }

    fn begin_stop(&mut self, i: usize, start_after: bool) {
        let u = &mut self.units[i];
        match u.pid {
            Some(pid) => {
                say(format_args!("stopping {}", u.spec.name));
                u.state = UnitState::Stopping;
                u.start_after_stop = start_after;
                u.stop_deadline = Some(Instant::now() + u.spec.stop_timeout());
                let _ = kill(pid, Signal::SIGTERM);
            }
            None => {
                u.state = if start_after {
                    UnitState::Waiting
                } else {
                    UnitState::Stopped
                };
            }
        }
    }

    /// Stops every unit, one at a time, in reverse start order. Units that
    /// never started are simply marked stopped.
    fn stop_all(&mut self) {
        let order: Vec<String> = self.start_order.iter().rev().cloned().collect();
        for name in order {
            let Some(i) = self.find(&name) else { continue };
            if self.units[i].pid.is_none() {
                continue;
            }
            self.begin_stop(i, false);
            while self.units[i].pid.is_some() {
                self.wait_for_events(Some(TICK));
                self.tick();
            }
            say(format_args!("stopped {name}"));
        }
        for u in &mut self.units {
            if u.pid.is_none() {
                u.state = UnitState::Stopped;
            }
        }
    }
}

fn write_line(chan: &mut dyn Channel, resp: &Response) -> std::io::Result<()> {
    let mut line = serde_json::to_vec(resp).unwrap_or_default();
    line.push(b'\n');
    let deadline = Instant::now() + Duration::from_secs(2);
    let mut off = 0;
    while off < line.len() {
        match chan.write(&line[off..]) {
            Ok(0) => return Err(ErrorKind::WriteZero.into()),
            Ok(n) => off += n,
            Err(e) if e.kind() == ErrorKind::WouldBlock && Instant::now() < deadline => {
                std::thread::sleep(Duration::from_millis(5));
            }
            Err(e) if e.kind() == ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    chan.flush()
}

fn parse_signal(name: &str) -> Result<Signal, String> {
    let upper = name.to_ascii_uppercase();
    let full = if upper.starts_with("SIG") {
        upper
    } else {
        format!("SIG{upper}")
    };
    Signal::from_str(&full).map_err(|_| format!("unknown signal `{name}`"))
}

/// Kills every process left in a cgroup.
fn kill_cgroup(dir: &Path) {
    if fs::write(dir.join("cgroup.kill"), "1").is_ok() {
        return;
    }
    if let Ok(procs) = fs::read_to_string(dir.join("cgroup.procs")) {
        for pid in procs.lines().filter_map(|l| l.trim().parse::<i32>().ok()) {
            let _ = kill(Pid::from_raw(pid), Signal::SIGKILL);
        }
    }
}

fn open_tty(path: &Path) -> std::io::Result<File> {
    let f = OpenOptions::new()
        .read(true)
        .write(true)
        .custom_flags(libc::O_NOCTTY | libc::O_NONBLOCK | libc::O_CLOEXEC)
        .open(path)?;
    crate::sys::make_raw(&f)?;
    Ok(f)
}

/// Creates the cgroup subtrees `system` (services) and `guests` (transient
/// units) under `root` and delegates every available controller to them.
/// Returns the controllers enabled.
pub fn prepare_cgroups(root: &Path) -> std::io::Result<Vec<String>> {
    let available = fs::read_to_string(root.join("cgroup.controllers"))?;
    let controllers: Vec<String> = available.split_whitespace().map(str::to_string).collect();
    let enable = controllers
        .iter()
        .map(|c| format!("+{c}"))
        .collect::<Vec<_>>()
        .join(" ");
    if !enable.is_empty() {
        fs::write(root.join("cgroup.subtree_control"), &enable)?;
    }
    for sub in ["system", "guests"] {
        let d = root.join(sub);
        fs::create_dir_all(&d)?;
        if !enable.is_empty() {
            fs::write(d.join("cgroup.subtree_control"), &enable)?;
        }
    }
    Ok(controllers)
}

/// The first line of a ready file, shown on the console after "is ready":
/// netd puts the management address there. Empty when the file is empty,
/// unreadable or not text; cut at 200 bytes.
fn ready_note(path: &std::path::Path) -> String {
    let Ok(bytes) = std::fs::read(path) else {
        return String::new();
    };
    let head = &bytes[..bytes.len().min(200)];
    let line = head.split(|b| *b == b'\n').next().unwrap_or_default();
    match std::str::from_utf8(line) {
        Ok(text) if !text.trim().is_empty() && !text.chars().any(char::is_control) => {
            format!(": {}", text.trim())
        }
        _ => String::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signal_names() {
        assert_eq!(parse_signal("KILL").unwrap(), Signal::SIGKILL);
        assert_eq!(parse_signal("sigterm").unwrap(), Signal::SIGTERM);
        assert!(parse_signal("NOPE").is_err());
    }

    #[test]
    fn ready_note_takes_the_first_printable_line() {
        let dir = std::env::temp_dir().join(format!("oxbow-note-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let f = dir.join("ready");
        std::fs::write(&f, "10.0.2.15/24 via 10.0.2.2 (dhcp)\nmore\n").unwrap();
        assert_eq!(ready_note(&f), ": 10.0.2.15/24 via 10.0.2.2 (dhcp)");
        std::fs::write(&f, "").unwrap();
        assert_eq!(ready_note(&f), "");
        std::fs::write(&f, "a\x1b[2Jb\n").unwrap();
        assert_eq!(ready_note(&f), "");
        assert_eq!(ready_note(&dir.join("missing")), "");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
