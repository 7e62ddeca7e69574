//! The VMM's sandbox, entered once the VM is built and before any vCPU
//! runs guest code.
//!
//! By then every file the VMM will ever use is open: `/dev/kvm` and the VM
//! and vCPU descriptors, the disks, the taps, `/dev/vhost-net`, the serial
//! output and the control socket. What is left to do is run vCPUs and move
//! data between descriptors it holds, so the sandbox takes away the rest:
//!
//! - `--user UID:GID`: the VMM gives up root for that user and group, with
//!   no supplementary groups. Changing every user id from 0 clears its
//!   capabilities; it checks that it cannot become root again, and it is
//!   made non-dumpable, so other processes of the same user cannot trace
//!   it or read its memory.
//! - seccomp (`--seccomp on`, the default): an allow list of the system
//!   calls the running VMM makes (`ALLOWED`), with argument checks where a
//!   call could reach further: `ioctl` only with KVM's and vhost's request
//!   types and the few tap requests the NIC uses, `clone` only for threads,
//!   `tgkill` only to its own threads, `prctl` only to name a thread.
//!   Anything else kills the whole VMM (`SIGSYS`; the kernel logs the
//!   system call). Two calls are refused with an error instead, because
//!   the C library or the standard library may try them and carry on:
//!   opening a file (`EACCES`) and `clone3` (`ENOSYS`: the C library then
//!   creates its threads with `clone`, whose flags the filter can see).
//!   `--seccomp log` allows and logs what the allow list would have killed,
//!   to find a missing call; `off` installs nothing.
//!
//! The filters are built by seccompiler and installed on every thread of
//! the process (`SECCOMP_FILTER_FLAG_TSYNC`); threads started later inherit
//! them.

use std::collections::BTreeMap;

use seccompiler::{
    BpfProgram, SeccompAction, SeccompCmpArgLen, SeccompCmpOp, SeccompCondition, SeccompFilter,
    SeccompRule, TargetArch,
};

/// `--seccomp`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum SeccompMode {
    /// Kill the VMM on a system call outside the allow list.
    #[default]
    On,
    /// Log such a call and let it through.
    Log,
    /// No filter.
    Off,
}

impl std::str::FromStr for SeccompMode {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "on" => Ok(SeccompMode::On),
            "log" => Ok(SeccompMode::Log),
            "off" => Ok(SeccompMode::Off),
            _ => Err(format!("--seccomp {s}: expected on, log or off")),
        }
    }
}

/// What the VMM gives up before it runs the guest.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Sandbox {
    /// The user and group to run as (`--user`); `None` keeps the caller's.
    pub user: Option<(u32, u32)>,
    /// The system call filter.
    pub seccomp: SeccompMode,
}

/// Parses `--user UID[:GID]` (numbers; the group defaults to the user's
/// number). Root is refused: it would drop nothing.
pub fn parse_user(s: &str) -> Result<(u32, u32), String> {
    let bad = || format!("--user {s}: expected UID[:GID], numbers other than 0");
    let (u, g) = match s.split_once(':') {
        Some((u, g)) => (u, g),
        None => (s, s),
    };
    let uid: u32 = u.parse().map_err(|_| bad())?;
    let gid: u32 = g.parse().map_err(|_| bad())?;
    // (uid_t)-1 means "unchanged" to setresuid.
    if uid == 0 || gid == 0 || uid == u32::MAX || gid == u32::MAX {
        return Err(bad());
    }
    Ok((uid, gid))
}

/// The system calls the running VMM makes, allowed with any arguments.
/// (`ioctl`, `clone`, `tgkill` and `prctl` are allowed with argument
/// checks, in [`rules`].)
const ALLOWED: &[(&str, libc::c_long)] = &[
    // Memory: the allocator, thread stacks and their guard pages.
    ("brk", libc::SYS_brk),
    ("mmap", libc::SYS_mmap),
    ("munmap", libc::SYS_munmap),
    ("mremap", libc::SYS_mremap),
    ("mprotect", libc::SYS_mprotect),
    ("madvise", libc::SYS_madvise),
    // Threads: started when the guest's driver activates a device, and
    // their locks, signals and exits.
    ("futex", libc::SYS_futex),
    ("set_robust_list", libc::SYS_set_robust_list),
    ("rseq", libc::SYS_rseq),
    ("sigaltstack", libc::SYS_sigaltstack),
    ("rt_sigaction", libc::SYS_rt_sigaction),
    ("rt_sigprocmask", libc::SYS_rt_sigprocmask),
    ("rt_sigreturn", libc::SYS_rt_sigreturn),
    ("sched_yield", libc::SYS_sched_yield),
    ("sched_getaffinity", libc::SYS_sched_getaffinity),
    ("getpid", libc::SYS_getpid),
    ("gettid", libc::SYS_gettid),
    ("getuid", libc::SYS_getuid),
    ("geteuid", libc::SYS_geteuid),
    ("getgid", libc::SYS_getgid),
    ("getegid", libc::SYS_getegid),
    ("exit", libc::SYS_exit),
    ("exit_group", libc::SYS_exit_group),
    ("restart_syscall", libc::SYS_restart_syscall),
    // Time (through the vDSO where the clock source allows, else these)
    // and randomness (virtio-rng, hash seeds).
    ("clock_gettime", libc::SYS_clock_gettime),
    ("gettimeofday", libc::SYS_gettimeofday),
    ("time", libc::SYS_time),
    ("clock_nanosleep", libc::SYS_clock_nanosleep),
    ("nanosleep", libc::SYS_nanosleep),
    ("getrandom", libc::SYS_getrandom),
    // Data on descriptors already open: disks, taps, eventfds, the serial
    // output, the control socket.
    ("read", libc::SYS_read),
    ("write", libc::SYS_write),
    ("readv", libc::SYS_readv),
    ("writev", libc::SYS_writev),
    ("pread64", libc::SYS_pread64),
    ("pwrite64", libc::SYS_pwrite64),
    ("preadv", libc::SYS_preadv),
    ("pwritev", libc::SYS_pwritev),
    ("preadv2", libc::SYS_preadv2),
    ("pwritev2", libc::SYS_pwritev2),
    ("lseek", libc::SYS_lseek),
    ("fsync", libc::SYS_fsync),
    ("fdatasync", libc::SYS_fdatasync),
    ("fallocate", libc::SYS_fallocate),
    ("fstat", libc::SYS_fstat),
    ("newfstatat", libc::SYS_newfstatat),
    ("statx", libc::SYS_statx),
    ("fcntl", libc::SYS_fcntl),
    ("close", libc::SYS_close),
    ("eventfd2", libc::SYS_eventfd2),
    ("poll", libc::SYS_poll),
    ("ppoll", libc::SYS_ppoll),
    ("epoll_create1", libc::SYS_epoll_create1),
    ("epoll_ctl", libc::SYS_epoll_ctl),
    ("epoll_wait", libc::SYS_epoll_wait),
    ("epoll_pwait", libc::SYS_epoll_pwait),
    // The control socket's connections.
    ("accept4", libc::SYS_accept4),
    ("recvfrom", libc::SYS_recvfrom),
    ("sendto", libc::SYS_sendto),
    ("recvmsg", libc::SYS_recvmsg),
    ("sendmsg", libc::SYS_sendmsg),
    ("shutdown", libc::SYS_shutdown),
    // Removing the control socket at the end (refused by the file system
    // once the VMM has given up root; its next start replaces it).
    ("unlink", libc::SYS_unlink),
    ("unlinkat", libc::SYS_unlinkat),
];

/// Opening a file: refused with `EACCES`.
const REFUSED_EACCES: &[libc::c_long] = &[libc::SYS_open, libc::SYS_openat, libc::SYS_creat];
/// `clone3`: refused with `ENOSYS`, so threads are made with `clone`.
const REFUSED_ENOSYS: &[libc::c_long] = &[libc::SYS_clone3];

/// Request types (bits 8-15 of an ioctl request) allowed whole: KVM's and
/// vhost's, on the descriptors the VMM holds.
const IOCTL_TYPES: &[u64] = &[0xae, 0xaf];

/// Single ioctl requests allowed: the tap requests of NIC activation.
const IOCTL_REQUESTS: &[u64] = &[
    libc::TUNSETOFFLOAD,
    libc::TUNSETVNETHDRSZ,
    libc::TUNGETVNETHDRSZ,
    libc::TUNGETIFF,
    libc::TUNGETFEATURES,
];

fn cond(arg: u8, op: SeccompCmpOp, value: u64) -> SeccompCondition {
    SeccompCondition::new(arg, SeccompCmpArgLen::Dword, op, value).expect("argument index below 6")
}

fn rule(conditions: Vec<SeccompCondition>) -> SeccompRule {
    SeccompRule::new(conditions).expect("a rule with conditions")
}

/// The allow list with its argument checks, for a process whose id is
/// `pid`.
fn rules(pid: u32) -> BTreeMap<i64, Vec<SeccompRule>> {
    let mut m: BTreeMap<i64, Vec<SeccompRule>> = BTreeMap::new();
    for (_, nr) in ALLOWED {
        m.insert(*nr, Vec::new());
    }
    // Let through to the second and third filters, which refuse them.
    for nr in REFUSED_EACCES.iter().chain(REFUSED_ENOSYS) {
        m.insert(*nr, Vec::new());
    }
    let mut ioctl: Vec<SeccompRule> = IOCTL_TYPES
        .iter()
        .map(|t| rule(vec![cond(1, SeccompCmpOp::MaskedEq(0xff00), t << 8)]))
        .collect();
    ioctl.extend(
        IOCTL_REQUESTS
            .iter()
            .map(|r| rule(vec![cond(1, SeccompCmpOp::Eq, *r)])),
    );
    m.insert(libc::SYS_ioctl, ioctl);
    let thread = libc::CLONE_THREAD as u64;
    m.insert(
        libc::SYS_clone,
        vec![rule(vec![cond(0, SeccompCmpOp::MaskedEq(thread), thread)])],
    );
    m.insert(
        libc::SYS_tgkill,
        vec![rule(vec![cond(0, SeccompCmpOp::Eq, u64::from(pid))])],
    );
    m.insert(
        libc::SYS_prctl,
        vec![rule(vec![cond(
            0,
            SeccompCmpOp::Eq,
            libc::PR_SET_NAME as u64,
        )])],
    );
    m
}

fn refuse(nrs: &[libc::c_long], errno: i32) -> Result<SeccompFilter, String> {
    let m = nrs.iter().map(|nr| (*nr, Vec::new())).collect();
    SeccompFilter::new(
        m,
        SeccompAction::Allow,
        SeccompAction::Errno(errno as u32),
        TargetArch::x86_64,
    )
    .map_err(|e| format!("seccomp filter: {e}"))
}

/// The filters for `mode` in a process whose id is `pid`, in the order
/// they are installed (none for `Off`).
pub fn filters(mode: SeccompMode, pid: u32) -> Result<Vec<BpfProgram>, String> {
    let unlisted = match mode {
        SeccompMode::Off => return Ok(Vec::new()),
        SeccompMode::On => SeccompAction::KillProcess,
        SeccompMode::Log => SeccompAction::Log,
    };
    let allow = SeccompFilter::new(
        rules(pid),
        unlisted,
        SeccompAction::Allow,
        TargetArch::x86_64,
    )
    .map_err(|e| format!("seccomp filter: {e}"))?;
    // The allow list goes last: installing a filter is itself a system
    // call it does not allow.
    [
        refuse(REFUSED_EACCES, libc::EACCES)?,
        refuse(REFUSED_ENOSYS, libc::ENOSYS)?,
        allow,
    ]
    .into_iter()
    .map(|f| BpfProgram::try_from(f).map_err(|e| format!("seccomp filter: {e}")))
    .collect()
}

fn os_err(what: &str) -> String {
    format!("{what}: {}", std::io::Error::last_os_error())
}

/// Gives up root for `uid`/`gid`, for good.
fn become_user(uid: u32, gid: u32) -> Result<(), String> {
    // SAFETY: plain system calls on integers and a null group list.
    unsafe {
        if libc::geteuid() != 0 {
            if libc::getuid() == uid && libc::getgid() == gid {
                return Ok(());
            }
            return Err(format!(
                "--user {uid}:{gid}: the VMM must start as root to change its user"
            ));
        }
        if libc::setgroups(0, std::ptr::null()) != 0 {
            return Err(os_err("setgroups"));
        }
        if libc::setresgid(gid, gid, gid) != 0 {
            return Err(os_err("setresgid"));
        }
        if libc::setresuid(uid, uid, uid) != 0 {
            return Err(os_err("setresuid"));
        }
        if libc::setuid(0) == 0 || libc::geteuid() == 0 {
            return Err("--user: root could be taken back".into());
        }
        if libc::prctl(libc::PR_SET_DUMPABLE, 0, 0, 0, 0) != 0 {
            return Err(os_err("PR_SET_DUMPABLE"));
        }
    }
    Ok(())
}

/// Enters the sandbox `s` (see the module's documentation). Call it once
/// the VM is built and before its vCPUs start.
pub fn enter(s: &Sandbox) -> Result<(), String> {
    if let Some((uid, gid)) = s.user {
        become_user(uid, gid)?;
    }
    for f in filters(s.seccomp, std::process::id())? {
        seccompiler::apply_filter_all_threads(&f).map_err(|e| format!("seccomp: {e}"))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::process::ExitStatusExt;
    use std::process::Command;

    #[test]
    fn user_argument() {
        assert_eq!(
            parse_user("3000000100:3000000100"),
            Ok((3_000_000_100, 3_000_000_100))
        );
        assert_eq!(parse_user("1234"), Ok((1234, 1234)));
        assert_eq!(parse_user("1234:99"), Ok((1234, 99)));
        for bad in [
            "0",
            "0:5",
            "5:0",
            "root",
            "",
            "1:",
            ":1",
            "4294967295",
            "-1",
        ] {
            assert!(parse_user(bad).is_err(), "{bad:?} accepted");
        }
        assert_eq!("log".parse(), Ok(SeccompMode::Log));
        assert!("yes".parse::<SeccompMode>().is_err());
    }

    #[test]
    fn filters_build() {
        assert!(filters(SeccompMode::Off, 1).unwrap().is_empty());
        for mode in [SeccompMode::On, SeccompMode::Log] {
            let f = filters(mode, 1).unwrap();
            assert_eq!(f.len(), 3);
            assert!(f.iter().all(|p| !p.is_empty()));
        }
        let names: Vec<&str> = ALLOWED.iter().map(|(n, _)| *n).collect();
        for denied in [
            "execve", "socket", "ptrace", "mount", "kill", "open", "openat",
        ] {
            assert!(!names.contains(&denied), "{denied} is on the allow list");
        }
    }

    /// Which of the sandboxed children below to be, when this test binary
    /// is run again by [`run_child`].
    const CHILD: &str = "OXBOW_VMM_SANDBOX_CHILD";

    /// Runs this test binary again for the test `name` only, as the
    /// sandboxed child `role`.
    fn run_child(name: &str, role: &str) -> std::process::Output {
        Command::new(std::env::current_exe().unwrap())
            .args(["--exact", name, "--nocapture", "--test-threads", "1"])
            .env(CHILD, role)
            .output()
            .unwrap()
    }

    fn in_child() -> Option<String> {
        std::env::var(CHILD).ok()
    }

    /// In the sandbox, what the VMM does works (threads, eventfds, files
    /// already open, its own ioctls), opening a file and `clone3` fail
    /// with an error, and anything outside the list kills the process.
    #[test]
    fn sandboxed_child() {
        let Some(role) = in_child() else { return };
        let eventfd = vmm_sys_util::eventfd::EventFd::new(libc::EFD_NONBLOCK).unwrap();
        // Root (as the tests run in CI) gives up its user too.
        // SAFETY: no arguments; cannot fail.
        let root = unsafe { libc::geteuid() } == 0;
        let user = root.then_some((65534, 65534));
        enter(&Sandbox {
            user,
            seccomp: SeccompMode::On,
        })
        .unwrap();
        if root {
            // SAFETY: no arguments; cannot fail.
            let uid = unsafe { libc::getuid() };
            assert_eq!(uid, 65534);
        }
        let t = std::thread::Builder::new()
            .name("worker".into())
            .spawn(move || {
                eventfd.write(5).unwrap();
                eventfd.read().unwrap()
            })
            .unwrap();
        assert_eq!(t.join().unwrap(), 5);
        let e = std::fs::File::open("/etc/hostname").unwrap_err();
        assert_eq!(e.raw_os_error(), Some(libc::EACCES));
        // SAFETY: clone3 with a null argument; the filter answers first.
        let r = unsafe { libc::syscall(libc::SYS_clone3, 0usize, 0usize) };
        assert_eq!(r, -1);
        assert_eq!(
            std::io::Error::last_os_error().raw_os_error(),
            Some(libc::ENOSYS)
        );
        println!("sandbox allowed what it should");
        match role.as_str() {
            "socket" => {
                // SAFETY: a plain system call; the filter kills first.
                unsafe { libc::socket(libc::AF_INET, libc::SOCK_STREAM, 0) };
            }
            "ioctl" => {
                // A tty request the VMM never makes, on its own stdout.
                let mut ws = [0u16; 4];
                // SAFETY: TIOCGWINSZ writes a `winsize`, 4 u16s.
                unsafe { libc::ioctl(1, libc::TIOCGWINSZ, ws.as_mut_ptr()) };
            }
            "kill" => {
                // SAFETY: signal 0 only checks; the filter kills first.
                unsafe { libc::kill(1, 0) };
            }
            _ => return,
        }
        println!("sandbox let a forbidden call through");
    }

    #[test]
    fn sandbox_allows_the_vmm_and_kills_the_rest() {
        if in_child().is_some() {
            return;
        }
        let name = "sandbox::tests::sandboxed_child";
        let ok = run_child(name, "allowed");
        let out = String::from_utf8_lossy(&ok.stdout);
        assert!(
            ok.status.success() && out.contains("sandbox allowed what it should"),
            "{:?}\n{out}\n{}",
            ok.status,
            String::from_utf8_lossy(&ok.stderr)
        );
        for role in ["socket", "ioctl", "kill"] {
            let o = run_child(name, role);
            let out = String::from_utf8_lossy(&o.stdout);
            assert!(
                out.contains("sandbox allowed what it should"),
                "{role}: {out}"
            );
            assert!(
                !out.contains("let a forbidden call through"),
                "{role}: {out}"
            );
            assert_eq!(
                o.status.signal(),
                Some(libc::SIGSYS),
                "{role}: {:?}",
                o.status
            );
        }
    }
}
