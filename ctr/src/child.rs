//! The container's first process, between `clone` and `exec` of the
//! guest's init. It runs in the new user (unless the container is
//! privileged), mount, pid, uts, ipc and net namespaces (and unshares
//! the cgroup namespace once the monitor has
//! placed it in its cgroup), builds the container's mounts, moves into
//! its root with `pivot_root`, drops what an unprivileged container must
//! not have and becomes the guest's PID 1.
//!
//! It shares the monitor's memory (`CLONE_VM`, on a stack of its own)
//! until its exec: it allocates nothing, and makes its system calls
//! through `crate::rawsys`, which leave the monitor's thread-local `errno`
//! alone (docs/ctr.md, "The child shares the monitor's memory").
//!
//! Order, and why:
//! 1. while the monitor writes the id maps: a new session (the console
//!    pty, opened as `/dev/console` after the pivot, becomes its
//!    controlling terminal and the standard streams), all mounts private,
//!    the root directory bound onto itself (a mount point, as
//!    `pivot_root` needs) and made the working directory (before changing
//!    ids, as the host path to the root belongs to host root), `/proc`
//!    (with `/proc/sys` and `/proc/sysrq-trigger` read-only) and `/sys`
//!    read-only: none of it makes a file, which the unmapped ids could
//!    not own;
//! 2. wait for the monitor's first go-ahead: it has written the id maps;
//!    it now opens the ptys (their numbers follow on the pipe, read in
//!    step 4 when they are bound) and creates the veths in this network
//!    namespace while steps 3-7 run, while its cgroup thread finishes
//!    the container's cgroups;
//! 3. become the container's root (`setgroups`, `setresgid`,
//!    `setresuid` to 0: host ids 100000, or the host's root when
//!    privileged);
//! 4. `/dev` (tmpfs with bind mounts of the host's null, zero, full,
//!    random, urandom and tty, or those nodes made when privileged, a
//!    private devpts with `ptmx`, the console and tty ptys of the
//!    monitor); `/proc` and `/sys` now if the root lacked their
//!    directories;
//! 5. `pivot_root(".", ".")` and detach the old root;
//! 6. drop capabilities, install the seccomp filter, ask for SIGKILL if
//!    the monitor dies, set the host name (the UTS namespace's, not a
//!    file), and restore the signal dispositions (the monitor's mask of
//!    ignored signals follows the pty numbers): all while the monitor
//!    may still be making the veths;
//! 7. wait for the second go-ahead (the veth pairs are there and the
//!    monitor has moved this process into its cgroup; it puts the veths'
//!    host ends into the bridges meanwhile, and sends the list of the
//!    guest's host name and network files that must change, which it has
//!    read meanwhile); unshare the cgroup namespace (rooted at the
//!    container's cgroup) and mount `cgroup2` on `/sys/fs/cgroup`; write
//!    the files; empty the signal mask;
//! 8. exec the guest's init with `container=lxc`.

// The child cannot allocate: its errors travel by value (see `Failed`).
#![allow(clippy::result_large_err)]

use std::ffi::{CStr, CString};
use std::os::fd::RawFd;
use std::sync::atomic::{AtomicU64, Ordering};

use crate::guestfiles::PreparedFile;
use crate::rawsys::{cstr, monotonic_ns, sys, Name};
use crate::spec::ContainerSpec;

/// Capabilities removed from the container, as LXC's and Proxmox's
/// defaults do (`lxc.cap.drop`): mac_admin, mac_override, sys_time,
/// sys_module, sys_rawio.
pub const DROPPED_CAPS: &[(u32, &str)] = &[
    (33, "mac_admin"),
    (32, "mac_override"),
    (25, "sys_time"),
    (16, "sys_module"),
    (17, "sys_rawio"),
];

/// Device nodes of the container's `/dev`, with their numbers (fixed by
/// the kernel's ABI): made with `mknod` in a privileged container, bound
/// from the host's `/dev` in an unprivileged one, whose user namespace
/// may not make device nodes.
pub const DEVICES: &[(&str, u64, u64)] = &[
    ("null", 1, 3),
    ("zero", 1, 5),
    ("full", 1, 7),
    ("random", 1, 8),
    ("urandom", 1, 9),
    ("tty", 5, 0),
];

/// What the child needs, made by the monitor before the clone: the child
/// shares the monitor's memory and allocates nothing, so every string it
/// passes to the kernel is ready here. The monitor keeps it alive and
/// unchanged until the child has execed or ended.
pub struct Prepared {
    rootfs: CString,
    hostname: CString,
    init: CString,
    argv: [*const libc::c_char; 2],
    _env: Vec<CString>,
    envp: Vec<*const libc::c_char>,
    seccomp: Vec<libc::sock_filter>,
    ttys: u32,
    privileged: bool,
    /// Whether a cgroup v2 hierarchy is there to mount.
    cgroup: bool,
    /// The C library's first real-time signal (its own lie below it).
    sigrtmin: i32,
}

impl Prepared {
    pub fn new(spec: &ContainerSpec, cgroup: bool) -> Result<Prepared, String> {
        let c =
            |what: &str, s: &[u8]| CString::new(s).map_err(|_| format!("{what} has a NUL byte"));
        let rootfs = c("the root path", spec.rootfs.as_os_str().as_encoded_bytes())?;
        let init = c("the init path", spec.init.as_bytes())?;
        let ttys: Vec<String> = (1..=spec.ttys).map(|n| format!("tty{n}")).collect();
        let env = [
            "container=lxc".to_string(),
            format!("container_ttys={}", ttys.join(" ")),
            "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin".to_string(),
            "TERM=linux".to_string(),
            "HOME=/".to_string(),
        ];
        let env: Vec<CString> = env
            .iter()
            .map(|e| c("the environment", e.as_bytes()))
            .collect::<Result<_, _>>()?;
        let envp = env
            .iter()
            .map(|e| e.as_ptr())
            .chain(std::iter::once(std::ptr::null()))
            .collect();
        Ok(Prepared {
            argv: [init.as_ptr(), std::ptr::null()],
            rootfs,
            hostname: c("the host name", spec.hostname.as_bytes())?,
            init,
            _env: env,
            envp,
            seccomp: crate::seccomp::program(spec.features.keyctl),
            ttys: spec.ttys,
            privileged: spec.privileged,
            cgroup,
            sigrtmin: libc::SIGRTMIN(),
        })
    }
}

/// The child's arguments, one set per clone attempt.
pub struct ChildArgs<'a> {
    pub prepared: &'a Prepared,
    /// Readable end of the pipe the monitor writes its go-aheads to.
    pub go: RawFd,
    /// The monitor's end of it, closed in the child.
    pub go_w: RawFd,
    /// Writable end of the pipe an error message goes to; closed by exec.
    pub report: RawFd,
    /// The monitor's end of it, closed in the child.
    pub report_r: RawFd,
    /// Where the child notes when it reached its steps.
    pub marks: &'a ChildMarks,
}

/// When the child reached its steps, for the monitor's debug log
/// (`CLOCK_MONOTONIC` nanoseconds, 0 for a step not reached): the child
/// stores them in the monitor's memory, which it shares, and the monitor
/// reads them once the child has execed or ended.
pub struct ChildMarks {
    /// Whether to note them at all (the debug log is on): each note is a
    /// system call.
    on: bool,
    at: [AtomicU64; ChildMarks::NAMES.len()],
}

impl ChildMarks {
    /// The steps, in the order the child reaches them.
    pub const NAMES: [&'static str; 10] = [
        "entered",
        "root bound",
        "proc and sys",
        "released to mount",
        "dev",
        "pivoted",
        "privileges dropped",
        "ready for the network",
        "released",
        "exec",
    ];
    const ENTERED: usize = 0;
    const ROOT_BOUND: usize = 1;
    const PROC_SYS: usize = 2;
    const MOUNTS: usize = 3;
    const DEV: usize = 4;
    const PIVOTED: usize = 5;
    const PRIVILEGES: usize = 6;
    const READY: usize = 7;
    const RELEASED: usize = 8;
    const EXEC: usize = 9;

    pub fn new(on: bool) -> ChildMarks {
        ChildMarks {
            on,
            at: Default::default(),
        }
    }

    fn mark(&self, step: usize) {
        if self.on {
            self.at[step].store(monotonic_ns(), Ordering::Release);
        }
    }

    /// Each step's name and time, 0 if not reached.
    pub fn read(&self) -> impl Iterator<Item = (&'static str, u64)> + '_ {
        ChildMarks::NAMES
            .into_iter()
            .zip(self.at.iter().map(|a| a.load(Ordering::Acquire)))
    }
}

/// The child's entry point (`arg` is the address of a [`ChildArgs`]):
/// runs the steps and execs the guest's init. On a failure the reason goes
/// to the report pipe (see [`describe`]) and the process exits with
/// status 1.
pub extern "C" fn entry(arg: usize) -> ! {
    // SAFETY: the monitor passes the address of a `ChildArgs` that it
    // keeps alive and unchanged until this process has execed or ended.
    let args = unsafe { &*(arg as *const ChildArgs<'_>) };
    args.marks.mark(ChildMarks::ENTERED);
    let failed = match setup(args) {
        Ok(never) => match never {},
        Err(f) => f,
    };
    // A monitor that gave up knows why; the child only reports its own
    // failures, which then explain whatever the monitor saw.
    if failed.what == MONITOR_GONE {
        let _ = sys!(libc::SYS_exit_group, 1);
    }
    let mut msg = Name::new().push(failed.what.as_bytes());
    if !failed.detail.bytes().is_empty() {
        msg = msg.push(b" ").push(failed.detail.bytes());
    }
    let mut out = [0u8; 165];
    let text = msg.bytes();
    out[..text.len()].copy_from_slice(text);
    out[text.len()] = 0;
    out[text.len() + 1..text.len() + 5].copy_from_slice(&failed.errno.to_le_bytes());
    let _ = sys!(libc::SYS_write, args.report, out.as_ptr(), text.len() + 5);
    let _ = sys!(libc::SYS_exit_group, 1);
    // exit_group does not return.
    loop {
        let _ = sys!(libc::SYS_exit, 1);
    }
}

/// The monitor's reading of what the child reported: the step, then a
/// NUL and the error number.
pub fn describe(report: &[u8]) -> String {
    match report.iter().position(|&b| b == 0) {
        Some(nul) if report.len() >= nul + 5 => {
            let text = String::from_utf8_lossy(&report[..nul]);
            let mut errno = [0u8; 4];
            errno.copy_from_slice(&report[nul + 1..nul + 5]);
            match i32::from_le_bytes(errno) {
                0 => text.into_owned(),
                e => format!("{text}: {}", std::io::Error::from_raw_os_error(e)),
            }
        }
        _ => String::from_utf8_lossy(report).into_owned(),
    }
}

/// What the child "fails" with when the monitor closed the go pipe.
const MONITOR_GONE: &str = "the monitor went away before the start";

/// A failed step: what, on which path, and the error number (0 if none).
/// Carried by value (a path of up to 159 bytes in it): the child cannot
/// allocate a box.
struct Failed {
    what: &'static str,
    detail: Name,
    errno: i32,
}

type Step<T> = Result<T, Failed>;

fn failed(what: &'static str) -> impl FnOnce(i32) -> Failed {
    move |errno| Failed {
        what,
        detail: Name::new(),
        errno,
    }
}

fn failed_on<'p>(what: &'static str, path: &'p [u8]) -> impl FnOnce(i32) -> Failed + 'p {
    move |errno| Failed {
        what,
        detail: Name::new().push(path),
        errno,
    }
}

/// The child's end of the go pipe. The monitor's messages come within a
/// few milliseconds of each other, so a read first polls without
/// sleeping (yielding the CPU to anything else runnable) for up to
/// [`Go::SPIN_NS`] before it blocks: a child asleep in `read` leaves its
/// CPU idle, and the monitor's write must then wake it there, an
/// inter-processor interrupt and the idle CPU's way back, which costs
/// milliseconds under emulation (docs/perf.md, "a start's wake-ups").
struct Go {
    fd: RawFd,
}

impl Go {
    const SPIN_NS: u64 = 20_000_000;

    fn new(fd: RawFd) -> Step<Go> {
        // The flag is on the pipe's open file description, which only this
        // process reads (the monitor closed its copy of this end).
        let flags = sys!(libc::SYS_fcntl, fd, libc::F_GETFL).map_err(failed("go pipe flags"))?;
        sys!(
            libc::SYS_fcntl,
            fd,
            libc::F_SETFL,
            flags | libc::O_NONBLOCK as usize
        )
        .map_err(failed("go pipe flags"))?;
        Ok(Go { fd })
    }

    fn gone() -> Failed {
        Failed {
            what: MONITOR_GONE,
            detail: Name::new(),
            errno: 0,
        }
    }

    /// Fills `buf`; end of file means the monitor gave up.
    fn read_exact(&mut self, buf: &mut [u8]) -> Step<()> {
        let mut got = 0;
        let mut spin_until = None;
        while got < buf.len() {
            let rest = &mut buf[got..];
            match sys!(libc::SYS_read, self.fd, rest.as_mut_ptr(), rest.len()) {
                Ok(0) => return Err(Go::gone()),
                Ok(n) => got += n,
                Err(libc::EINTR) => {}
                Err(libc::EAGAIN) => {
                    let now = monotonic_ns();
                    let until = *spin_until.get_or_insert(now + Go::SPIN_NS);
                    if now < until {
                        let _ = sys!(libc::SYS_sched_yield);
                    } else {
                        let mut pfd = libc::pollfd {
                            fd: self.fd,
                            events: libc::POLLIN,
                            revents: 0,
                        };
                        match sys!(libc::SYS_poll, &mut pfd as *mut libc::pollfd, 1, -1i32) {
                            Ok(_) | Err(libc::EINTR) => {}
                            Err(_) => return Err(Go::gone()),
                        }
                    }
                }
                Err(_) => return Err(Go::gone()),
            }
        }
        Ok(())
    }

    /// Waits for the go-ahead `expected`.
    fn wait(&mut self, expected: &[u8]) -> Step<()> {
        let mut byte = [0u8; 1];
        self.read_exact(&mut byte)?;
        if byte[..] == *expected {
            Ok(())
        } else {
            Err(Failed {
                what: "unexpected go-ahead",
                detail: Name::new().push(&byte),
                errno: 0,
            })
        }
    }

    /// Reads the `N` bytes that follow a go-ahead.
    fn read_array<const N: usize>(&mut self) -> Step<[u8; N]> {
        let mut buf = [0u8; N];
        self.read_exact(&mut buf)?;
        Ok(buf)
    }

    /// Reads the host path of the next pty the monitor opened.
    fn next_pty(&mut self) -> Step<Name> {
        let n = u32::from_le_bytes(self.read_array()?);
        Ok(Name::new().push(b"/dev/pts/").number(n))
    }
}

const NOSUID: u64 = libc::MS_NOSUID;
const NODEV: u64 = libc::MS_NODEV;
const NOEXEC: u64 = libc::MS_NOEXEC;

fn mount(
    source: Option<&CStr>,
    target: &CStr,
    fstype: Option<&CStr>,
    flags: u64,
    data: Option<&CStr>,
    what: &'static str,
) -> Step<()> {
    let ptr = |s: Option<&CStr>| s.map_or(0, cstr);
    sys!(
        libc::SYS_mount,
        ptr(source),
        cstr(target),
        ptr(fstype),
        flags,
        ptr(data)
    )
    .map(drop)
    .map_err(failed_on(what, target.to_bytes()))
}

fn stat_mode(path: &CStr) -> Option<u32> {
    // SAFETY: a plain-old-data structure, filled in by the kernel.
    let mut st: libc::stat = unsafe { std::mem::zeroed() };
    sys!(
        libc::SYS_newfstatat,
        libc::AT_FDCWD,
        cstr(path),
        &mut st as *mut libc::stat,
        libc::AT_SYMLINK_NOFOLLOW
    )
    .ok()?;
    Some(st.st_mode & libc::S_IFMT)
}

fn is_dir(path: &CStr) -> bool {
    stat_mode(path) == Some(libc::S_IFDIR)
}

/// A C string of a [`Name`].
fn c(name: &Name) -> &CStr {
    // SAFETY: a `Name`'s buffer always ends in a NUL after its bytes.
    unsafe { CStr::from_ptr(name.ptr() as *const libc::c_char) }
}

fn setup(args: &ChildArgs<'_>) -> Step<std::convert::Infallible> {
    let p = args.prepared;
    let _ = sys!(libc::SYS_close, args.go_w);
    let _ = sys!(libc::SYS_close, args.report_r);
    let mut go = Go::new(args.go)?;
    // 1. What needs neither the id maps nor the cgroup, done while the
    // monitor writes the maps instead of waiting for its go-ahead: a new
    // session (the console becomes its terminal after the pivot); mounts
    // private; the root directory as a mount point; /proc and /sys, which
    // make no files.
    sys!(libc::SYS_setsid).map_err(failed("setsid"))?;
    mount(
        None,
        c"/",
        None,
        libc::MS_REC | libc::MS_PRIVATE,
        None,
        "making mounts private",
    )?;
    mount(
        Some(&p.rootfs),
        &p.rootfs,
        None,
        libc::MS_BIND | libc::MS_REC,
        None,
        "bind mount of the root on itself:",
    )?;
    sys!(libc::SYS_chdir, cstr(&p.rootfs)).map_err(failed("chdir into the root"))?;
    args.marks.mark(ChildMarks::ROOT_BOUND);
    // A directory made now would belong to the host's root (the child's
    // ids are not mapped yet): a root without /proc or /sys gets them
    // after the go-ahead.
    let early_proc = is_dir(c"proc") && is_dir(c"sys");
    if early_proc {
        mount_proc_sys()?;
    }
    args.marks.mark(ChildMarks::PROC_SYS);
    // 2. The monitor's first go-ahead: the id maps are written (and the
    // child is in its cgroup).
    go.wait(crate::monitor::GO_MOUNTS)?;
    args.marks.mark(ChildMarks::MOUNTS);
    // 3. The container's root user, by bare system calls, which change
    // this process's credentials only (the C library's would signal the
    // monitor's threads, whose memory this process shares).
    sys!(libc::SYS_setgroups, 0, 0).map_err(failed("setgroups"))?;
    sys!(libc::SYS_setresgid, 0, 0, 0).map_err(failed("setresgid"))?;
    sys!(libc::SYS_setresuid, 0, 0, 0).map_err(failed("setresuid"))?;
    // 4. /dev (and /proc and /sys if not yet).
    // (/proc and /sys are known to be directories when mounted early.)
    let dirs: &[&CStr] = if early_proc {
        &[c"dev"]
    } else {
        &[c"dev", c"proc", c"sys"]
    };
    for dir in dirs {
        ensure_dir(dir)?;
    }
    mount_dev(&mut go, p.ttys, p.privileged)?;
    args.marks.mark(ChildMarks::DEV);
    if !early_proc {
        mount_proc_sys()?;
    }
    // 5. Into the root.
    sys!(libc::SYS_pivot_root, cstr(c"."), cstr(c".")).map_err(failed("pivot_root"))?;
    sys!(libc::SYS_umount2, cstr(c"."), libc::MNT_DETACH)
        .map_err(failed("detaching the old root"))?;
    sys!(libc::SYS_chdir, cstr(c"/")).map_err(failed("chdir /"))?;
    args.marks.mark(ChildMarks::PIVOTED);
    // The console, opened by its name in the container so the guest sees
    // /dev/console as its standard streams, as the controlling terminal.
    let console = sys!(
        libc::SYS_openat,
        libc::AT_FDCWD,
        cstr(c"/dev/console"),
        libc::O_RDWR | libc::O_CLOEXEC
    )
    .map_err(failed("opening /dev/console"))?;
    for fd in 0..3 {
        sys!(libc::SYS_dup2, console, fd).map_err(failed("dup2 console"))?;
    }
    sys!(libc::SYS_ioctl, 0, libc::TIOCSCTTY, 0).map_err(failed("TIOCSCTTY"))?;
    // 6. Privileges, while the monitor may still be making the network:
    // nothing after this needs what they take away (the seccomp filter
    // denies module loading, kexec, open_by_handle_at and keyctl only).
    drop_privileges(&p.seccomp)?;
    args.marks.mark(ChildMarks::PRIVILEGES);
    sys!(libc::SYS_prctl, libc::PR_SET_PDEATHSIG, libc::SIGKILL)
        .map_err(failed("parent-death signal"))?;
    // The host name lives in the UTS namespace, not in the tree.
    sys!(
        libc::SYS_sethostname,
        cstr(&p.hostname),
        p.hostname.as_bytes().len()
    )
    .map_err(failed("sethostname"))?;
    let ignored = u64::from_le_bytes(go.read_array()?);
    reset_signal_dispositions(ignored, p.sigrtmin)?;
    // 7. The guest's own files, once the network is made: a start that
    // fails there leaves the container's tree as it was. The monitor has
    // read them meanwhile and sends what must change with the go-ahead.
    args.marks.mark(ChildMarks::READY);
    go.wait(crate::monitor::GO_FILES)?;
    args.marks.mark(ChildMarks::RELEASED);
    // The monitor has moved this process into its cgroup by now; cgroup2
    // shows the cgroup namespace of the process that mounts it.
    if p.cgroup {
        unshare_cgroup()?;
        mount_cgroup(c"/sys/fs/cgroup")?;
    }
    let addr = u64::from_le_bytes(go.read_array()?) as usize;
    let len = u64::from_le_bytes(go.read_array()?) as usize;
    let files: &[PreparedFile] = if len == 0 {
        &[]
    } else {
        // SAFETY: the monitor sent the address and length of a slice it
        // keeps alive and unchanged until this process has execed or
        // ended.
        unsafe { std::slice::from_raw_parts(addr as *const PreparedFile, len) }
    };
    for file in files {
        write_file(file)?;
    }
    let empty = 0u64;
    sys!(
        libc::SYS_rt_sigprocmask,
        libc::SIG_SETMASK,
        &empty as *const u64,
        0,
        8
    )
    .map_err(failed("signal mask"))?;
    // 8. The guest's init.
    args.marks.mark(ChildMarks::EXEC);
    let err = sys!(
        libc::SYS_execve,
        cstr(&p.init),
        p.argv.as_ptr(),
        p.envp.as_ptr()
    )
    .err()
    .unwrap_or(0);
    Err(failed_on("executing", p.init.as_bytes())(err))
}

/// A cgroup namespace rooted at the cgroup the child is in.
fn unshare_cgroup() -> Step<()> {
    sys!(libc::SYS_unshare, libc::CLONE_NEWCGROUP)
        .map(drop)
        .map_err(failed("unshare(CLONE_NEWCGROUP)"))
}

fn ensure_dir(path: &CStr) -> Step<()> {
    match stat_mode(path) {
        Some(libc::S_IFDIR) => Ok(()),
        Some(_) => Err(failed_on(
            "not a directory in the container:",
            path.to_bytes(),
        )(libc::ENOTDIR)),
        None => sys!(libc::SYS_mkdir, cstr(path), 0o777)
            .map(drop)
            .map_err(failed_on("mkdir", path.to_bytes())),
    }
}

/// Bind-mounts `source` on a new file `target` in the container's fresh
/// `/dev` (so nothing is there to check first: one `mknod` makes the
/// mount point).
fn bind(source: &CStr, target: &CStr) -> Step<()> {
    match sys!(
        libc::SYS_mknodat,
        libc::AT_FDCWD,
        cstr(target),
        libc::S_IFREG | 0o666,
        0
    ) {
        Ok(_) | Err(libc::EEXIST) => {}
        Err(e) => return Err(failed_on("creating", target.to_bytes())(e)),
    }
    mount(
        Some(source),
        target,
        None,
        libc::MS_BIND,
        None,
        "bind mount on",
    )
}

fn dev_dir(path: &CStr) -> Step<()> {
    sys!(libc::SYS_mkdir, cstr(path), 0o777)
        .map(drop)
        .map_err(failed_on("mkdir", path.to_bytes()))
}

/// `/dev`; the ptys' numbers are read from the go pipe when they are
/// needed, as the monitor opens them while the rest is made.
fn mount_dev(go: &mut Go, ttys: u32, privileged: bool) -> Step<()> {
    mount(
        Some(c"none"),
        c"dev",
        Some(c"tmpfs"),
        NOSUID | NOEXEC,
        Some(c"mode=755,size=65536k"),
        "tmpfs on",
    )?;
    // mknod's mode goes through the umask, which the guest's init
    // inherits: cleared for the nodes only.
    let umask = privileged.then(|| sys!(libc::SYS_umask, 0).unwrap_or(0o022));
    for (dev, major, minor) in DEVICES {
        let target = Name::new().push(b"dev/").push(dev.as_bytes());
        if privileged {
            sys!(
                libc::SYS_mknodat,
                libc::AT_FDCWD,
                target.ptr(),
                libc::S_IFCHR | 0o666,
                libc::makedev(*major as u32, *minor as u32)
            )
            .map_err(failed_on("mknod", target.bytes()))?;
        } else {
            let source = Name::new().push(b"/dev/").push(dev.as_bytes());
            bind(c(&source), c(&target))?;
        }
    }
    if let Some(mask) = umask {
        let _ = sys!(libc::SYS_umask, mask);
    }
    dev_dir(c"dev/pts")?;
    mount(
        Some(c"devpts"),
        c"dev/pts",
        Some(c"devpts"),
        NOSUID | NOEXEC,
        Some(c"newinstance,ptmxmode=0666,mode=0620,gid=5"),
        "devpts on",
    )?;
    sys!(libc::SYS_symlink, cstr(c"pts/ptmx"), cstr(c"dev/ptmx")).map_err(failed("/dev/ptmx"))?;
    bind(c(&go.next_pty()?), c"dev/console")?;
    for n in 1..=ttys {
        let tty = Name::new().push(b"dev/tty").number(n);
        bind(c(&go.next_pty()?), c(&tty))?;
    }
    // No /dev/shm: the guest's init mounts it (systemd, Debian's
    // mountdevsubfs), as under LXC, which leaves it out too.
    for (target, link) in [
        (c"/proc/self/fd", c"dev/fd"),
        (c"/proc/self/fd/0", c"dev/stdin"),
        (c"/proc/self/fd/1", c"dev/stdout"),
        (c"/proc/self/fd/2", c"dev/stderr"),
    ] {
        sys!(libc::SYS_symlink, cstr(target), cstr(link))
            .map_err(failed_on("symlink", link.to_bytes()))?;
    }
    Ok(())
}

fn mount_proc_sys() -> Step<()> {
    let hardened = NOSUID | NODEV | NOEXEC;
    mount(
        Some(c"proc"),
        c"proc",
        Some(c"proc"),
        hardened,
        None,
        "proc on",
    )?;
    // Proxmox's "mixed" /proc: the parts that reach the host read-only.
    for ro in [c"proc/sys", c"proc/sysrq-trigger"] {
        // Kernels without magic SysRq have no trigger file: the bind
        // finds out (no look first, a lookup costs as much as the bind).
        match sys!(libc::SYS_mount, cstr(ro), cstr(ro), 0, libc::MS_BIND, 0) {
            Ok(_) => {}
            Err(libc::ENOENT) => continue,
            Err(e) => return Err(failed_on("bind mount of", ro.to_bytes())(e)),
        }
        mount(
            None,
            ro,
            None,
            libc::MS_BIND | libc::MS_REMOUNT | libc::MS_RDONLY | hardened,
            None,
            "read-only remount of",
        )?;
    }
    mount(
        Some(c"sysfs"),
        c"sys",
        Some(c"sysfs"),
        hardened | libc::MS_RDONLY,
        None,
        "sysfs on",
    )?;
    Ok(())
}

/// The cgroup v2 hierarchy, as the cgroup namespace shows it, on `target`.
fn mount_cgroup(target: &CStr) -> Step<()> {
    mount(
        Some(c"cgroup2"),
        target,
        Some(c"cgroup2"),
        NOSUID | NODEV | NOEXEC,
        None,
        "cgroup2 on",
    )
}

#[repr(C)]
struct CapHeader {
    version: u32,
    pid: libc::c_int,
}

#[repr(C)]
#[derive(Clone, Copy, Default)]
struct CapData {
    effective: u32,
    permitted: u32,
    inheritable: u32,
}

/// LXC's capability drops (bounding set, then the sets this process
/// holds, then the ambient set), and the seccomp filter.
fn drop_privileges(filter: &[libc::sock_filter]) -> Step<()> {
    let mut mask = 0u64;
    for (cap, _) in DROPPED_CAPS {
        sys!(libc::SYS_prctl, libc::PR_CAPBSET_DROP, *cap)
            .map_err(failed("dropping a capability from the bounding set"))?;
        mask |= 1 << cap;
    }
    let mut header = CapHeader {
        version: 0x2008_0522,
        pid: 0,
    };
    let mut data = [CapData::default(); 2];
    sys!(
        libc::SYS_capget,
        &mut header as *mut CapHeader,
        data.as_mut_ptr()
    )
    .map_err(failed("capget"))?;
    for (i, d) in data.iter_mut().enumerate() {
        let keep = !((mask >> (32 * i)) as u32);
        d.effective &= keep;
        d.permitted &= keep;
        d.inheritable &= keep;
    }
    sys!(
        libc::SYS_capset,
        &mut header as *mut CapHeader,
        data.as_ptr()
    )
    .map_err(failed("dropping capabilities"))?;
    sys!(
        libc::SYS_prctl,
        libc::PR_CAP_AMBIENT,
        libc::PR_CAP_AMBIENT_CLEAR_ALL,
        0,
        0,
        0
    )
    .map_err(failed("clearing ambient capabilities"))?;
    let prog = libc::sock_fprog {
        len: filter.len() as u16,
        filter: filter.as_ptr() as *mut libc::sock_filter,
    };
    sys!(
        libc::SYS_prctl,
        libc::PR_SET_SECCOMP,
        libc::SECCOMP_MODE_FILTER,
        &prog as *const libc::sock_fprog
    )
    .map(drop)
    .map_err(failed("seccomp filter"))
}

/// The kernel's `struct sigaction` on x86-64.
#[repr(C)]
struct KernelSigaction {
    handler: usize,
    flags: u64,
    restorer: usize,
    mask: u64,
}

/// Restores the default disposition of every signal in `ignored` (the
/// monitor's `SigIgn`), so that the container's init starts as if started
/// by the kernel. Handled signals need nothing: `exec` resets them.
/// Signals 32 up to `sigrtmin` belong to the C library's threads
/// (cancellation, set*id); the guest's own C library sets them up.
fn reset_signal_dispositions(ignored: u64, sigrtmin: i32) -> Step<()> {
    let default = KernelSigaction {
        handler: libc::SIG_DFL,
        flags: 0,
        restorer: 0,
        mask: 0,
    };
    for sig in 1..=64 {
        if ignored & (1u64 << (sig - 1)) == 0
            || sig == libc::SIGKILL
            || sig == libc::SIGSTOP
            || (32..sigrtmin).contains(&sig)
        {
            continue;
        }
        sys!(
            libc::SYS_rt_sigaction,
            sig,
            &default as *const KernelSigaction,
            0,
            8
        )
        .map_err(failed("restoring a signal's default disposition"))?;
    }
    Ok(())
}

/// Writes one of the guest's files atomically, as the container's root
/// inside its tree: a temporary file beside it, fsync, rename, the
/// directory synced.
fn write_file(file: &PreparedFile) -> Step<()> {
    let create = || {
        sys!(
            libc::SYS_openat,
            libc::AT_FDCWD,
            cstr(&file.tmp),
            libc::O_WRONLY | libc::O_CREAT | libc::O_EXCL | libc::O_CLOEXEC,
            0o644
        )
    };
    let _ = sys!(libc::SYS_unlink, cstr(&file.tmp));
    let fd = match create() {
        Err(libc::ENOENT) => {
            let _ = sys!(libc::SYS_mkdir, cstr(&file.dir), 0o755);
            create()
        }
        other => other,
    }
    .map_err(failed_on("creating", file.tmp.to_bytes()))?;
    let written = (|| {
        let mut done = 0;
        while done < file.contents.len() {
            let rest = &file.contents[done..];
            match sys!(libc::SYS_write, fd, rest.as_ptr(), rest.len()) {
                Ok(n) => done += n,
                Err(libc::EINTR) => {}
                Err(e) => return Err(e),
            }
        }
        sys!(libc::SYS_fsync, fd).map(drop)
    })();
    let _ = sys!(libc::SYS_close, fd);
    if let Err(e) =
        written.and_then(|()| sys!(libc::SYS_rename, cstr(&file.tmp), cstr(&file.path)).map(drop))
    {
        let _ = sys!(libc::SYS_unlink, cstr(&file.tmp));
        return Err(failed_on("writing", file.path.to_bytes())(e));
    }
    if let Ok(dir) = sys!(
        libc::SYS_openat,
        libc::AT_FDCWD,
        cstr(&file.dir),
        libc::O_RDONLY | libc::O_DIRECTORY | libc::O_CLOEXEC
    ) {
        let _ = sys!(libc::SYS_fsync, dir);
        let _ = sys!(libc::SYS_close, dir);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reports_read_as_the_step_and_its_error() {
        let mut r = b"mkdir dev/pts".to_vec();
        r.push(0);
        r.extend_from_slice(&libc::EACCES.to_le_bytes());
        assert_eq!(
            describe(&r),
            "mkdir dev/pts: Permission denied (os error 13)"
        );
        let mut r = b"the monitor went away before the start".to_vec();
        r.push(0);
        r.extend_from_slice(&0i32.to_le_bytes());
        assert_eq!(describe(&r), "the monitor went away before the start");
        assert_eq!(describe(b"plain"), "plain");
    }

    #[test]
    fn ignored_signals_are_reset_in_a_child() {
        use crate::sys::{ignored_signals, ignored_signals_now, in_child};
        let code = in_child(|| {
            // SAFETY: SIG_IGN installs no handler code; this child only
            // makes system calls and exits.
            unsafe {
                libc::signal(libc::SIGUSR1, libc::SIG_IGN);
                libc::signal(libc::SIGRTMIN() + 3, libc::SIG_IGN);
            }
            let Ok(ignored) = ignored_signals_now() else {
                return 2;
            };
            if reset_signal_dispositions(ignored, libc::SIGRTMIN()).is_err() {
                return 2;
            }
            let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
            // Only the C library's own signals may stay ignored.
            let libc_own = (32..libc::SIGRTMIN()).fold(0u64, |m, s| m | 1 << (s - 1));
            match ignored_signals(&status) {
                Some(m) if m & !libc_own == 0 => 0,
                _ => 1,
            }
        });
        assert_eq!(code, 0);
    }
}
