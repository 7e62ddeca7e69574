//! The system calls the runtime makes. Every `unsafe` block of the crate
//! lives here, each with its reason; the rest of the crate is safe Rust.
//! Errors come back as `std::io::Error`, with the errno.

use std::ffi::OsStr;
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::ffi::OsStrExt;
use std::path::Path;

use nix::errno::Errno;
use nix::fcntl::{AtFlags, OFlag};
use nix::sys::stat::{Mode, SFlag, UtimensatFlags};
use nix::sys::time::TimeSpec;
use nix::unistd::{Gid, Uid};

fn os(name: &[u8]) -> &OsStr {
    OsStr::from_bytes(name)
}

fn owned(fd: RawFd) -> OwnedFd {
    // SAFETY: every caller passes a descriptor it has just received from a
    // successful open-like call and does not use or close it otherwise, so
    // the `OwnedFd` is its only owner.
    unsafe { OwnedFd::from_raw_fd(fd) }
}

/// Opens a directory by path (following links in `path`, which is the
/// host's own, trusted path).
pub fn open_dir(path: &Path) -> io::Result<OwnedFd> {
    let fd = nix::fcntl::open(
        path,
        OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC,
        Mode::empty(),
    )?;
    Ok(owned(fd))
}

/// Opens the directory `name` in `dir` without following a symbolic link:
/// `ELOOP` or `ENOTDIR` if `name` is a link or not a directory.
pub fn open_dir_at(dir: RawFd, name: &[u8]) -> io::Result<OwnedFd> {
    let fd = nix::fcntl::openat(
        Some(dir),
        os(name),
        OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC,
        Mode::empty(),
    )?;
    Ok(owned(fd))
}

/// Opens the existing file `name` in `dir` for writing, never a link's
/// target.
pub fn open_write_at(dir: RawFd, name: &[u8]) -> io::Result<OwnedFd> {
    let fd = nix::fcntl::openat(
        Some(dir),
        os(name),
        OFlag::O_WRONLY | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC,
        Mode::empty(),
    )?;
    Ok(owned(fd))
}

/// Creates the regular file `name` in `dir` (which must not exist), mode
/// 0600 until the caller sets the final one.
pub fn create_file_at(dir: RawFd, name: &[u8]) -> io::Result<OwnedFd> {
    let fd = nix::fcntl::openat(
        Some(dir),
        os(name),
        OFlag::O_WRONLY | OFlag::O_CREAT | OFlag::O_EXCL | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC,
        Mode::from_bits_truncate(0o600),
    )?;
    Ok(owned(fd))
}

pub fn mkdir_at(dir: RawFd, name: &[u8], mode: u32) -> io::Result<()> {
    Ok(nix::sys::stat::mkdirat(
        Some(dir),
        os(name),
        Mode::from_bits_truncate(mode),
    )?)
}

pub fn mkfifo_at(dir: RawFd, name: &[u8], mode: u32) -> io::Result<()> {
    nix::sys::stat::mknodat(
        Some(dir),
        os(name),
        SFlag::S_IFIFO,
        Mode::from_bits_truncate(mode & 0o777),
        0,
    )?;
    Ok(())
}

pub fn symlink_at(target: &[u8], dir: RawFd, name: &[u8]) -> io::Result<()> {
    Ok(nix::unistd::symlinkat(os(target), Some(dir), os(name))?)
}

/// A hard link `new_dir/new_name` to `old_dir/old_name`, not following a
/// link at the old name.
pub fn link_at(old_dir: RawFd, old_name: &[u8], new_dir: RawFd, new_name: &[u8]) -> io::Result<()> {
    Ok(nix::unistd::linkat(
        Some(old_dir),
        os(old_name),
        Some(new_dir),
        os(new_name),
        AtFlags::empty(),
    )?)
}

pub fn unlink_at(dir: RawFd, name: &[u8], is_dir: bool) -> io::Result<()> {
    let flag = if is_dir {
        nix::unistd::UnlinkatFlags::RemoveDir
    } else {
        nix::unistd::UnlinkatFlags::NoRemoveDir
    };
    Ok(nix::unistd::unlinkat(Some(dir), os(name), flag)?)
}

/// What [`lstat_at`] reports.
#[derive(Debug, Clone, Copy)]
pub struct Stat {
    pub is_dir: bool,
}

/// `fstatat(AT_SYMLINK_NOFOLLOW)`: `None` if nothing is there.
pub fn lstat_at(dir: RawFd, name: &[u8]) -> io::Result<Option<Stat>> {
    match nix::sys::stat::fstatat(Some(dir), os(name), AtFlags::AT_SYMLINK_NOFOLLOW) {
        Ok(st) => Ok(Some(Stat {
            is_dir: st.st_mode & libc::S_IFMT == libc::S_IFDIR,
        })),
        Err(Errno::ENOENT) => Ok(None),
        Err(e) => Err(e.into()),
    }
}

pub fn fchown(fd: RawFd, uid: u32, gid: u32) -> io::Result<()> {
    Ok(nix::unistd::fchown(
        fd,
        Some(Uid::from_raw(uid)),
        Some(Gid::from_raw(gid)),
    )?)
}

/// Changes the owner of `name` in `dir` itself, never a link's target.
pub fn lchown_at(dir: RawFd, name: &[u8], uid: u32, gid: u32) -> io::Result<()> {
    Ok(nix::unistd::fchownat(
        Some(dir),
        os(name),
        Some(Uid::from_raw(uid)),
        Some(Gid::from_raw(gid)),
        AtFlags::AT_SYMLINK_NOFOLLOW,
    )?)
}

pub fn fchmod(fd: RawFd, mode: u32) -> io::Result<()> {
    Ok(nix::sys::stat::fchmod(fd, Mode::from_bits_truncate(mode))?)
}

fn mtime_spec(mtime: u64) -> TimeSpec {
    TimeSpec::new(i64::try_from(mtime).unwrap_or(i64::MAX), 0)
}

/// Sets the access and modification times of an open file.
pub fn set_mtime_fd(fd: RawFd, mtime: u64) -> io::Result<()> {
    let t = mtime_spec(mtime);
    Ok(nix::sys::stat::futimens(fd, &t, &t)?)
}

/// Sets the times of `name` in `dir` itself, never a link's target.
pub fn set_mtime_at(dir: RawFd, name: &[u8], mtime: u64) -> io::Result<()> {
    let t = mtime_spec(mtime);
    Ok(nix::sys::stat::utimensat(
        Some(dir),
        os(name),
        &t,
        &t,
        UtimensatFlags::NoFollowSymlink,
    )?)
}

pub fn syncfs(fd: RawFd) -> io::Result<()> {
    Ok(nix::unistd::syncfs(fd)?)
}

pub fn dup(fd: RawFd) -> io::Result<OwnedFd> {
    let new = nix::fcntl::fcntl(fd, nix::fcntl::FcntlArg::F_DUPFD_CLOEXEC(0))?;
    Ok(owned(new))
}

/// Renames `from` to `to`, failing with `EEXIST` if `to` exists.
pub fn rename_noreplace(from: &Path, to: &Path) -> io::Result<()> {
    Ok(nix::fcntl::renameat2(
        None,
        from,
        None,
        to,
        nix::fcntl::RenameFlags::RENAME_NOREPLACE,
    )?)
}

/// Flushes a directory's entries to disk.
pub fn fsync_dir(path: &Path) -> io::Result<()> {
    let fd = open_dir(path)?;
    Ok(nix::unistd::fsync(fd.as_raw_fd())?)
}

/// Starts the container's first process ([`crate::child::entry`]) with the
/// namespaces in `flags`, sharing this process's memory (`CLONE_VM`) and
/// running on `stack` until it execs the guest's init: no copy of the
/// monitor's page tables at the clone, no copy-on-write fault for each
/// page either process writes afterwards, no address space to tear down
/// at the exec (docs/perf.md). The caller keeps `args` and what it points
/// to until the child has execed or ended (it gets them back); the child
/// is born in the caller's cgroup, and the monitor moves it.
pub fn clone_child<'a>(
    flags: libc::c_int,
    stack: &crate::rawsys::Stack,
    args: Box<crate::child::ChildArgs<'a>>,
) -> io::Result<(nix::unistd::Pid, Box<crate::child::ChildArgs<'a>>)> {
    use crate::rawsys::{clone3_vm, clone_vm, CloneArgs};
    let flags = flags as u64 | libc::CLONE_VM as u64;
    let clone_args = CloneArgs {
        flags,
        exit_signal: libc::SIGCHLD as u64,
        stack: stack.bottom() as u64,
        stack_size: stack.size() as u64,
        ..Default::default()
    };
    let entry = crate::child::entry;
    let addr = &*args as *const crate::child::ChildArgs<'a> as usize;
    // SAFETY: the stack is the caller's and unused; the child's arguments
    // and what they point to live until the caller is done with the child,
    // and the child only makes raw system calls.
    let made = match unsafe { clone3_vm(&clone_args, entry, addr) } {
        Err(libc::ENOSYS) => {
            // SAFETY: as above.
            unsafe { clone_vm(flags | libc::SIGCHLD as u64, stack.top(), entry, addr) }
        }
        other => other,
    };
    match made {
        Ok(p) => Ok((nix::unistd::Pid::from_raw(p as libc::pid_t), args)),
        Err(e) => Err(io::Error::from_raw_os_error(e)),
    }
}

/// Installs a seccomp filter on the calling thread (inherited by its
/// children and kept across exec). Needs `CAP_SYS_ADMIN` in the current
/// user namespace or no_new_privs.
pub fn install_seccomp(program: &[libc::sock_filter]) -> io::Result<()> {
    let prog = libc::sock_fprog {
        len: u16::try_from(program.len()).map_err(|_| io::Error::from_raw_os_error(libc::E2BIG))?,
        filter: program.as_ptr() as *mut libc::sock_filter,
    };
    // SAFETY: `prog` points at `program`, which outlives the call; the
    // kernel copies the instructions and does not keep the pointer.
    let ret = unsafe {
        libc::prctl(
            libc::PR_SET_SECCOMP,
            libc::SECCOMP_MODE_FILTER as libc::c_ulong,
            &prog as *const libc::sock_fprog,
            0 as libc::c_ulong,
            0 as libc::c_ulong,
        )
    };
    if ret == -1 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// Runs `f` in a forked child and returns its exit status (for tests that
/// change process-wide state, such as a seccomp filter).
#[cfg(test)]
pub fn in_child(f: impl FnOnce() -> i32) -> i32 {
    // SAFETY: the child only runs `f`, which makes plain system calls and
    // returns, then leaves with _exit without running destructors or
    // touching locks another test thread might hold.
    match unsafe { nix::unistd::fork() }.expect("fork") {
        nix::unistd::ForkResult::Child => {
            let code = f();
            exit_now(code)
        }
        nix::unistd::ForkResult::Parent { child } => {
            match nix::sys::wait::waitpid(child, None).expect("waitpid") {
                nix::sys::wait::WaitStatus::Exited(_, code) => code,
                other => panic!("child ended with {other:?}"),
            }
        }
    }
}

/// A raw system call with integer arguments, for the seccomp tests.
#[cfg(test)]
pub fn raw_syscall(nr: libc::c_long, args: [libc::c_long; 4]) -> Result<libc::c_long, i32> {
    // SAFETY: only used with null or zero arguments, which the kernel
    // rejects or ignores without writing to our memory.
    let ret = unsafe { libc::syscall(nr, args[0], args[1], args[2], args[3]) };
    if ret == -1 {
        return Err(io::Error::last_os_error().raw_os_error().unwrap_or(0));
    }
    Ok(ret)
}

/// The signals this process ignores, as a mask (bit `n - 1` is signal
/// `n`), read from the `SigIgn` line of `/proc/self/status` (one read,
/// where asking for each signal's disposition takes a system call each).
/// SIGPIPE is ignored by Rust programs; others may come from whoever
/// started the monitor.
pub fn ignored_signals_now() -> io::Result<u64> {
    let status = std::fs::read_to_string("/proc/self/status")?;
    ignored_signals(&status)
        .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidData, "no SigIgn in /proc/self/status"))
}

/// The `SigIgn` mask of a `/proc/<pid>/status` text: bit `n - 1` is
/// signal `n`.
pub fn ignored_signals(status: &str) -> Option<u64> {
    let hex = status.lines().find_map(|l| l.strip_prefix("SigIgn:"))?;
    u64::from_str_radix(hex.trim(), 16).ok()
}

/// Opens a new pty: the master (close-on-exec, non-blocking), its slave
/// (close-on-exec, opened through the master, so it is the slave of this
/// very master whatever is mounted where) and the slave's number (its
/// path is [`pty_path`]).
pub fn open_pty() -> io::Result<(OwnedFd, OwnedFd, u32)> {
    let master = nix::fcntl::open(
        "/dev/ptmx",
        OFlag::O_RDWR | OFlag::O_NOCTTY | OFlag::O_CLOEXEC | OFlag::O_NONBLOCK,
        Mode::empty(),
    )?;
    // SAFETY: open returned a new descriptor that nothing else owns.
    let master = unsafe { OwnedFd::from_raw_fd(master) };
    let unlock: libc::c_int = 0;
    // SAFETY: TIOCSPTLCK reads one int from the pointer, which is valid.
    if unsafe { libc::ioctl(master.as_raw_fd(), libc::TIOCSPTLCK, &unlock) } == -1 {
        return Err(io::Error::last_os_error());
    }
    let flags = libc::O_RDWR | libc::O_NOCTTY | libc::O_CLOEXEC;
    // SAFETY: TIOCGPTPEER takes open flags as an integer and returns a new
    // descriptor, which is owned from here on.
    let slave = unsafe { libc::ioctl(master.as_raw_fd(), libc::TIOCGPTPEER, flags) };
    if slave == -1 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: as above: a new descriptor nothing else owns.
    let slave = unsafe { OwnedFd::from_raw_fd(slave) };
    let mut number: libc::c_uint = 0;
    // SAFETY: TIOCGPTN writes one unsigned int to the pointer, which is
    // valid for that.
    if unsafe { libc::ioctl(master.as_raw_fd(), libc::TIOCGPTN, &mut number) } == -1 {
        return Err(io::Error::last_os_error());
    }
    Ok((master, slave, number))
}

/// The path of pty slave `number` of the devpts instance that `/dev/ptmx`
/// opens, the one mounted on `/dev/pts`.
pub fn pty_path(number: u32) -> std::path::PathBuf {
    std::path::PathBuf::from(format!("/dev/pts/{number}"))
}

/// Sends signal number `sig` (which may be a real-time signal, which
/// nix's `Signal` cannot name) to `pid`.
pub fn kill_raw(pid: libc::pid_t, sig: libc::c_int) -> io::Result<()> {
    // SAFETY: kill takes two integers and touches no memory of ours.
    let ret = unsafe { libc::kill(pid, sig) };
    if ret == -1 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// Ends the process at once, without running exit handlers or destructors
/// (for a test's forked child).
#[cfg(test)]
pub fn exit_now(code: i32) -> ! {
    // SAFETY: _exit only ends the process; it cannot return or corrupt
    // anything.
    unsafe { libc::_exit(code) }
}

/// Opens the directory `rel` below `root` the way the container would
/// see it: links resolve inside `root` (`RESOLVE_IN_ROOT`: `..` stops at
/// `root`, absolute targets start at it), never through `/proc` magic
/// links, never onto another mount.
pub fn open_dir_in_root(root: RawFd, rel: &Path) -> io::Result<OwnedFd> {
    open_in_root(
        root,
        rel,
        OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC,
    )
}

/// `openat2` with `RESOLVE_IN_ROOT | RESOLVE_NO_MAGICLINKS |
/// RESOLVE_NO_XDEV`. The kernel answers `EAGAIN` when a rename or a mount
/// anywhere on the system raced with a `..` of the path and it cannot
/// prove the walk stayed inside; the call is then simply made again, as
/// openat2(2) advises (a busy host renames files all the time).
fn open_in_root(root: RawFd, rel: &Path, flags: OFlag) -> io::Result<OwnedFd> {
    let mut tries = 0;
    loop {
        let how = nix::fcntl::OpenHow::new().flags(flags).resolve(
            nix::fcntl::ResolveFlag::RESOLVE_IN_ROOT
                | nix::fcntl::ResolveFlag::RESOLVE_NO_MAGICLINKS
                | nix::fcntl::ResolveFlag::RESOLVE_NO_XDEV,
        );
        match nix::fcntl::openat2(root, rel, how) {
            Err(nix::errno::Errno::EAGAIN) if tries < 100 => tries += 1,
            done => return Ok(owned(done?)),
        }
    }
}

/// Renames `from` to `to`, both in directory `dir`; a link at `to` is
/// replaced, not followed.
pub fn rename_in(dir: RawFd, from: &[u8], to: &[u8]) -> io::Result<()> {
    Ok(nix::fcntl::renameat(
        Some(dir),
        os(from),
        Some(dir),
        os(to),
    )?)
}

pub fn fsync(fd: RawFd) -> io::Result<()> {
    Ok(nix::unistd::fsync(fd)?)
}

/// Opens the file `rel` below `root` for reading, resolving links inside
/// the root as [`open_dir_in_root`] does; never blocks on a fifo.
pub fn open_file_in_root(root: RawFd, rel: &str) -> io::Result<OwnedFd> {
    open_in_root(
        root,
        Path::new(rel),
        OFlag::O_RDONLY | OFlag::O_NONBLOCK | OFlag::O_CLOEXEC,
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_ignored_set_comes_from_sigign() {
        let status = "Name:\tctr\nSigBlk:\t0000000000010000\nSigIgn:\t0000000000001000\nSigCgt:\t0000000180000000\n";
        // SIGPIPE (13) is bit 12.
        assert_eq!(ignored_signals(status), Some(1 << 12));
        assert_eq!(ignored_signals("Name:\tctr\n"), None);
        assert_eq!(ignored_signals("SigIgn:\tzz\n"), None);
    }

    #[test]
    fn a_pty_opens_with_its_slave_and_path() {
        let (master, slave, number) = open_pty().expect("pty");
        // The number names the slave: the same file as the descriptor.
        let by_path = std::fs::metadata(pty_path(number)).expect("the slave's path");
        let by_fd = nix::sys::stat::fstat(slave.as_raw_fd()).unwrap();
        assert_eq!(
            std::os::unix::fs::MetadataExt::rdev(&by_path),
            by_fd.st_rdev
        );
        let flags = nix::fcntl::fcntl(master.as_raw_fd(), nix::fcntl::FcntlArg::F_GETFL).unwrap();
        assert!(OFlag::from_bits_truncate(flags).contains(OFlag::O_NONBLOCK));
        for fd in [&master, &slave] {
            let fdflags = nix::fcntl::fcntl(fd.as_raw_fd(), nix::fcntl::FcntlArg::F_GETFD).unwrap();
            assert!(nix::fcntl::FdFlag::from_bits_truncate(fdflags)
                .contains(nix::fcntl::FdFlag::FD_CLOEXEC));
        }
        // What goes into the slave comes out of the master.
        nix::unistd::write(&slave, b"x").unwrap();
        let mut buf = [0u8; 8];
        let mut n = 0;
        for _ in 0..100 {
            match nix::unistd::read(master.as_raw_fd(), &mut buf) {
                Ok(k) => {
                    n = k;
                    break;
                }
                Err(_) => std::thread::sleep(std::time::Duration::from_millis(5)),
            }
        }
        assert_eq!(&buf[..n], b"x");
    }
}
