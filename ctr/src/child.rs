//! The container's first process, between `clone` and `exec` of the
//! guest's init. It runs in the new user (unless the container is
//! privileged), mount, pid, uts, ipc and net namespaces (and unshares
//! the cgroup namespace once the monitor has
//! placed it in its cgroup), builds the container's mounts, moves into
//! its root with `pivot_root`, drops what an unprivileged container must
//! not have and becomes the guest's PID 1.
//!
//! Order, and why:
//! 1. while the monitor writes the id maps: `unshare(CLONE_NEWCGROUP)`
//!    (the inner cgroup this process was born in by `clone3` becomes the
//!    root the guest sees), a new session (the console pty, opened as
//!    `/dev/console` after the pivot, becomes its controlling terminal
//!    and the standard streams), all mounts private, the root directory
//!    bound onto itself (a mount point, as `pivot_root` needs) and made
//!    the working directory (before changing ids, as the host path to
//!    the root belongs to host root), `/proc` (with `/proc/sys` and
//!    `/proc/sysrq-trigger` read-only), `/sys` read-only and `cgroup2`
//!    on `/sys/fs/cgroup`: none of it makes a file, which the unmapped
//!    ids could not own;
//! 2. wait for the monitor's first go-ahead: it has written the id maps
//!    (on kernels without `clone3`'s cgroup it has also moved this
//!    process into the inner cgroup, and the cgroup namespace is
//!    unshared only now); it now opens the ptys (their numbers follow on
//!    the pipe, read in step 4 when they are bound) and creates the veths
//!    in this network namespace while steps 3-7 run;
//! 3. become the container's root (`setgroups`, `setresgid`,
//!    `setresuid` to 0: host ids 100000, or the host's root when
//!    privileged);
//! 4. `/dev` (tmpfs with bind mounts of the host's null, zero, full,
//!    random, urandom and tty, a private devpts with `ptmx`, the console
//!    and tty ptys of the monitor); `/proc` and `/sys` now if the root
//!    lacked their directories;
//! 5. `pivot_root(".", ".")` and detach the old root;
//! 6. drop capabilities, install the seccomp filter, ask for SIGKILL if
//!    the monitor dies, set the host name (the UTS namespace's, not a
//!    file), read the guest's files to see what must change, and restore
//!    the signal dispositions (the monitor's mask of ignored signals
//!    follows the pty numbers): all while the monitor may still be making
//!    the veths;
//! 7. wait for the second go-ahead (the veth pairs are there; the
//!    monitor puts their host ends into the bridges meanwhile); write the
//!    guest's host name and network files that must change; empty the
//!    signal mask;
//! 8. exec the guest's init with `container=lxc`.

use std::ffi::CString;
use std::fs;
use std::io::Write;
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::path::{Path, PathBuf};

use nix::mount::{mount, umount2, MntFlags, MsFlags};
use nix::sched::CloneFlags;
use nix::unistd::{Gid, Uid};

use crate::spec::ContainerSpec;
use crate::sys;

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

/// What the child needs from the monitor.
pub struct ChildContext<'a> {
    pub spec: &'a ContainerSpec,
    /// Readable end of the pipe the monitor writes one byte to when the
    /// child may go on.
    pub go: OwnedFd,
    /// Writable end of the pipe an error message goes to; closed by exec.
    pub report: OwnedFd,
    /// Whether a cgroup v2 hierarchy is there to mount.
    pub cgroup: bool,
    /// Whether the child was born in its cgroup (`clone3`); if not, the
    /// monitor moves it there before the first go-ahead.
    pub placed: bool,
}

/// Runs the child's steps and execs the guest's init. On a failure the
/// reason goes to the report pipe and the process exits with status 1.
pub fn run(ctx: ChildContext<'_>) -> ! {
    let err = match setup(&ctx) {
        Ok(never) => match never {},
        Err(e) => e,
    };
    let mut f = std::fs::File::from(ctx.report);
    let _ = f.write_all(err.as_bytes());
    drop(f);
    sys::exit_now(1)
}

fn step<T, E: std::fmt::Display>(what: &str, r: Result<T, E>) -> Result<T, String> {
    r.map_err(|e| format!("{what}: {e}"))
}

/// The child's end of the go pipe. The monitor's messages come within a
/// few milliseconds of each other, so a read first polls without
/// sleeping (yielding the CPU to anything else runnable) for up to
/// [`Go::SPIN`] before it blocks: a child asleep in `read` leaves its CPU
/// idle, and the monitor's write must then wake it there, an
/// inter-processor interrupt and the idle CPU's way back, which costs
/// milliseconds under emulation (docs/perf.md, "a start's wake-ups").
struct Go {
    fd: OwnedFd,
}

impl Go {
    const SPIN: std::time::Duration = std::time::Duration::from_millis(20);

    fn new(fd: OwnedFd) -> Result<Go, String> {
        // The flag is on the pipe's open file description, which only this
        // process reads (the monitor closed its copy of this end).
        let flags = step(
            "go pipe flags",
            nix::fcntl::fcntl(fd.as_raw_fd(), nix::fcntl::FcntlArg::F_GETFL),
        )?;
        let flags = nix::fcntl::OFlag::from_bits_truncate(flags) | nix::fcntl::OFlag::O_NONBLOCK;
        step(
            "go pipe flags",
            nix::fcntl::fcntl(fd.as_raw_fd(), nix::fcntl::FcntlArg::F_SETFL(flags)),
        )?;
        Ok(Go { fd })
    }

    /// Fills `buf`; end of file means the monitor gave up.
    fn read_exact(&mut self, buf: &mut [u8]) -> Result<(), String> {
        let gone = || "the monitor went away before the start".to_string();
        let mut got = 0;
        let mut spin_until = None;
        while got < buf.len() {
            match nix::unistd::read(self.fd.as_raw_fd(), &mut buf[got..]) {
                Ok(0) => return Err(gone()),
                Ok(n) => got += n,
                Err(nix::errno::Errno::EINTR) => {}
                Err(nix::errno::Errno::EAGAIN) => {
                    let now = std::time::Instant::now();
                    let until = *spin_until.get_or_insert(now + Go::SPIN);
                    if now < until {
                        std::thread::yield_now();
                    } else {
                        let mut fds = [nix::poll::PollFd::new(
                            self.fd.as_fd(),
                            nix::poll::PollFlags::POLLIN,
                        )];
                        match nix::poll::poll(&mut fds, nix::poll::PollTimeout::NONE) {
                            Ok(_) | Err(nix::errno::Errno::EINTR) => {}
                            Err(_) => return Err(gone()),
                        }
                    }
                }
                Err(_) => return Err(gone()),
            }
        }
        Ok(())
    }

    /// Waits for the go-ahead `expected`.
    fn wait(&mut self, expected: &[u8]) -> Result<(), String> {
        let mut byte = [0u8; 1];
        self.read_exact(&mut byte)?;
        if byte[..] == *expected {
            Ok(())
        } else {
            Err(format!("unexpected go-ahead {:?}", byte[0] as char))
        }
    }

    /// Reads the `N` bytes that follow a go-ahead.
    fn read_array<const N: usize>(&mut self) -> Result<[u8; N], String> {
        let mut buf = [0u8; N];
        self.read_exact(&mut buf)?;
        Ok(buf)
    }

    /// Reads the host path of the next pty the monitor opened.
    fn next_pty(&mut self) -> Result<PathBuf, String> {
        Ok(sys::pty_path(u32::from_le_bytes(self.read_array()?)))
    }
}

fn setup(ctx: &ChildContext<'_>) -> Result<std::convert::Infallible, String> {
    let spec = ctx.spec;
    let mut go = Go::new(step("dup go pipe", ctx.go.try_clone())?)?;
    // 1. What needs neither the id maps nor the cgroup (unless the child
    // was born in it), done while the monitor writes them instead of
    // waiting for its go-ahead: the cgroup namespace, rooted at the
    // cgroup the child was born in; a new session (the console becomes
    // its terminal after the pivot); mounts private; the root directory
    // as a mount point; /proc and /sys, which make no files.
    if ctx.cgroup && ctx.placed {
        unshare_cgroup()?;
    }
    step("setsid", nix::unistd::setsid())?;
    step(
        "making mounts private",
        mount(
            None::<&str>,
            "/",
            None::<&str>,
            MsFlags::MS_REC | MsFlags::MS_PRIVATE,
            None::<&str>,
        ),
    )?;
    let rootfs = &spec.rootfs;
    step(
        &format!("bind mount of {}", rootfs.display()),
        mount(
            Some(rootfs),
            rootfs,
            None::<&str>,
            MsFlags::MS_BIND | MsFlags::MS_REC,
            None::<&str>,
        ),
    )?;
    step("chdir into the root", nix::unistd::chdir(rootfs))?;
    // A directory made now would belong to the host's root (the child's
    // ids are not mapped yet): a root without /proc or /sys gets them
    // after the go-ahead.
    let is_dir = |d: &str| fs::symlink_metadata(d).is_ok_and(|m| m.is_dir());
    let early_proc = (!ctx.cgroup || ctx.placed) && is_dir("proc") && is_dir("sys");
    if early_proc {
        mount_proc_sys(ctx.cgroup)?;
    }
    // 2. The monitor's first go-ahead: the id maps are written (and the
    // child is in its cgroup).
    go.wait(crate::monitor::GO_MOUNTS)?;
    if ctx.cgroup && !ctx.placed {
        unshare_cgroup()?;
    }
    // 3. The container's root user.
    step("setgroups", nix::unistd::setgroups(&[]))?;
    step(
        "setresgid",
        nix::unistd::setresgid(Gid::from_raw(0), Gid::from_raw(0), Gid::from_raw(0)),
    )?;
    step(
        "setresuid",
        nix::unistd::setresuid(Uid::from_raw(0), Uid::from_raw(0), Uid::from_raw(0)),
    )?;
    // 4. /dev (and /proc and /sys if not yet).
    for dir in ["dev", "proc", "sys"] {
        ensure_dir(Path::new(dir))?;
    }
    mount_dev(&mut go, spec.ttys, spec.privileged)?;
    if !early_proc {
        mount_proc_sys(ctx.cgroup)?;
    }
    // The last line of the child's own on the monitor's log: after the
    // pivot its standard streams are the console.
    tracing::debug!("container {}: child: mounts made", spec.vmid);
    // 5. Into the root.
    step("pivot_root", nix::unistd::pivot_root(".", "."))?;
    step("detaching the old root", umount2(".", MntFlags::MNT_DETACH))?;
    step("chdir /", nix::unistd::chdir("/"))?;
    // The console, opened by its name in the container so the guest sees
    // /dev/console as its standard streams, as the controlling terminal.
    let console = step(
        "opening /dev/console",
        nix::fcntl::open(
            "/dev/console",
            nix::fcntl::OFlag::O_RDWR | nix::fcntl::OFlag::O_CLOEXEC,
            nix::sys::stat::Mode::empty(),
        ),
    )?;
    for fd in 0..3 {
        step("dup2 console", nix::unistd::dup2(console, fd))?;
    }
    step("TIOCSCTTY", sys::set_controlling_tty(0))?;
    // 6. Privileges, while the monitor may still be making the network:
    // nothing after this needs what they take away (the seccomp filter
    // denies module loading, kexec, open_by_handle_at and keyctl only).
    let mut mask = 0u64;
    for (cap, name) in DROPPED_CAPS {
        step(
            &format!("dropping cap_{name}"),
            sys::drop_bounding_cap(*cap),
        )?;
        mask |= 1 << cap;
    }
    step("dropping capabilities", sys::drop_caps(mask))?;
    step("clearing ambient capabilities", sys::clear_ambient_caps())?;
    step(
        "seccomp filter",
        crate::seccomp::install(spec.features.keyctl),
    )?;
    step(
        "parent-death signal",
        nix::sys::prctl::set_pdeathsig(nix::sys::signal::Signal::SIGKILL),
    )?;
    // 7. Names and the guest's own files, once the network is made: a
    // start that fails there leaves the container's tree as it was. What
    // they should hold is worked out while waiting.
    let files = step(
        "reading the guest's host name and network files",
        crate::guestfiles::plan_guest_files(spec, Path::new("/")),
    )?;
    // The host name lives in the UTS namespace, not in the tree.
    step("sethostname", nix::unistd::sethostname(&spec.hostname))?;
    let ignored = u64::from_le_bytes(go.read_array()?);
    step(
        "signal dispositions",
        sys::reset_signal_dispositions(ignored),
    )?;
    go.wait(crate::monitor::GO_FILES)?;
    step(
        "writing the guest's host name and network files",
        files.write(),
    )?;
    step(
        "signal mask",
        nix::sys::signal::SigSet::empty().thread_set_mask(),
    )?;
    // 8. The guest's init.
    let init = step("init path", CString::new(spec.init.as_str()))?;
    let ttys: Vec<String> = (1..=spec.ttys).map(|n| format!("tty{n}")).collect();
    let env = [
        "container=lxc".to_string(),
        format!("container_ttys={}", ttys.join(" ")),
        "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin".to_string(),
        "TERM=linux".to_string(),
        "HOME=/".to_string(),
    ];
    let env: Vec<CString> = env
        .into_iter()
        .map(|e| CString::new(e).expect("no NUL in the environment"))
        .collect();
    let err = nix::unistd::execve(&init, &[&init], &env).unwrap_err();
    Err(format!("executing {}: {err}", spec.init))
}

/// A cgroup namespace rooted at the cgroup the child is in.
fn unshare_cgroup() -> Result<(), String> {
    step(
        "unshare(CLONE_NEWCGROUP)",
        nix::sched::unshare(CloneFlags::CLONE_NEWCGROUP),
    )
}

fn ensure_dir(path: &Path) -> Result<(), String> {
    match fs::symlink_metadata(path) {
        Ok(m) if m.is_dir() => Ok(()),
        Ok(_) => Err(format!(
            "/{} in the container is not a directory",
            path.display()
        )),
        Err(_) => step(&format!("mkdir /{}", path.display()), fs::create_dir(path)),
    }
}

/// Bind-mounts `source` on a new file `target` in the container's fresh
/// `/dev` (so nothing is there to check first: one `mknod` makes the
/// mount point).
fn bind(source: &Path, target: &Path) -> Result<(), String> {
    match nix::sys::stat::mknod(
        target,
        nix::sys::stat::SFlag::S_IFREG,
        nix::sys::stat::Mode::from_bits_truncate(0o666),
        0,
    ) {
        Ok(()) | Err(nix::errno::Errno::EEXIST) => {}
        Err(e) => return Err(format!("creating {}: {e}", target.display())),
    }
    step(
        &format!("bind mount of {} on {}", source.display(), target.display()),
        mount(
            Some(source),
            target,
            None::<&str>,
            MsFlags::MS_BIND,
            None::<&str>,
        ),
    )
}

/// Makes directory `path` in the container's fresh `/dev`.
fn dev_dir(path: &str) -> Result<(), String> {
    step(&format!("mkdir /{path}"), fs::create_dir(path))
}

/// `/dev`; the ptys' numbers are read from the go pipe when they are
/// needed, as the monitor opens them while the rest is made.
fn mount_dev(go: &mut Go, ttys: u32, privileged: bool) -> Result<(), String> {
    let nosuid_noexec = MsFlags::MS_NOSUID | MsFlags::MS_NOEXEC;
    step(
        "tmpfs on /dev",
        mount(
            Some("none"),
            "dev",
            Some("tmpfs"),
            nosuid_noexec,
            Some("mode=755,size=65536k"),
        ),
    )?;
    // mknod's mode goes through the umask, which the guest's init
    // inherits: cleared for the nodes only.
    let umask = privileged.then(|| nix::sys::stat::umask(nix::sys::stat::Mode::empty()));
    for (dev, major, minor) in DEVICES {
        let target = Path::new("dev").join(dev);
        if privileged {
            step(
                &format!("mknod /dev/{dev}"),
                nix::sys::stat::mknod(
                    &target,
                    nix::sys::stat::SFlag::S_IFCHR,
                    nix::sys::stat::Mode::from_bits_truncate(0o666),
                    nix::sys::stat::makedev(*major, *minor),
                ),
            )?;
        } else {
            bind(&Path::new("/dev").join(dev), &target)?;
        }
    }
    if let Some(mask) = umask {
        nix::sys::stat::umask(mask);
    }
    dev_dir("dev/pts")?;
    step(
        "devpts on /dev/pts",
        mount(
            Some("devpts"),
            "dev/pts",
            Some("devpts"),
            nosuid_noexec,
            Some("newinstance,ptmxmode=0666,mode=0620,gid=5"),
        ),
    )?;
    step(
        "/dev/ptmx",
        std::os::unix::fs::symlink("pts/ptmx", "dev/ptmx"),
    )?;
    bind(&go.next_pty()?, Path::new("dev/console"))?;
    for n in 1..=ttys {
        bind(&go.next_pty()?, &PathBuf::from(format!("dev/tty{n}")))?;
    }
    dev_dir("dev/shm")?;
    step(
        "tmpfs on /dev/shm",
        mount(
            Some("shm"),
            "dev/shm",
            Some("tmpfs"),
            MsFlags::MS_NOSUID | MsFlags::MS_NODEV,
            Some("mode=1777"),
        ),
    )?;
    for (link, target) in [
        ("dev/fd", "/proc/self/fd"),
        ("dev/stdin", "/proc/self/fd/0"),
        ("dev/stdout", "/proc/self/fd/1"),
        ("dev/stderr", "/proc/self/fd/2"),
    ] {
        step(link, std::os::unix::fs::symlink(target, link))?;
    }
    Ok(())
}

fn mount_proc_sys(cgroup: bool) -> Result<(), String> {
    let hardened = MsFlags::MS_NOSUID | MsFlags::MS_NODEV | MsFlags::MS_NOEXEC;
    step(
        "proc on /proc",
        mount(Some("proc"), "proc", Some("proc"), hardened, None::<&str>),
    )?;
    // Proxmox's "mixed" /proc: the parts that reach the host read-only.
    for ro in ["proc/sys", "proc/sysrq-trigger"] {
        // Kernels without magic SysRq have no trigger file.
        if fs::symlink_metadata(ro).is_err() {
            continue;
        }
        step(
            &format!("bind {ro}"),
            mount(Some(ro), ro, None::<&str>, MsFlags::MS_BIND, None::<&str>),
        )?;
        step(
            &format!("{ro} read-only"),
            mount(
                None::<&str>,
                ro,
                None::<&str>,
                MsFlags::MS_BIND | MsFlags::MS_REMOUNT | MsFlags::MS_RDONLY | hardened,
                None::<&str>,
            ),
        )?;
    }
    step(
        "sysfs on /sys",
        mount(
            Some("sysfs"),
            "sys",
            Some("sysfs"),
            hardened | MsFlags::MS_RDONLY,
            None::<&str>,
        ),
    )?;
    if cgroup {
        step(
            "cgroup2 on /sys/fs/cgroup",
            mount(
                Some("cgroup2"),
                "sys/fs/cgroup",
                Some("cgroup2"),
                hardened,
                None::<&str>,
            ),
        )?;
    }
    Ok(())
}
