//! The few raw system calls `init` needs that `nix` does not wrap.
//!
//! Every `unsafe` block of the crate lives here.

use std::fs::{File, OpenOptions};
use std::io;
use std::os::fd::{AsRawFd, RawFd};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::Command;

const LOOP_SET_FD: libc::c_ulong = 0x4C00;
const LOOP_CTL_GET_FREE: libc::c_ulong = 0x4C82;

/// Attaches `file` read-only to a free loop device and returns its path.
pub fn loop_attach_readonly(file: &Path) -> io::Result<PathBuf> {
    let backing = File::open(file)?;
    let ctl = OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/loop-control")?;
    // SAFETY: LOOP_CTL_GET_FREE takes no argument and returns a number; the
    // descriptor is a valid open /dev/loop-control.
    let n = unsafe { libc::ioctl(ctl.as_raw_fd(), LOOP_CTL_GET_FREE) };
    if n < 0 {
        return Err(io::Error::last_os_error());
    }
    let dev = PathBuf::from(format!("/dev/loop{n}"));
    let lo = OpenOptions::new().read(true).open(&dev)?;
    // SAFETY: LOOP_SET_FD takes a file descriptor by value; both descriptors
    // are open for the duration of the call. A read-only backing descriptor
    // makes the loop device read-only.
    let r = unsafe { libc::ioctl(lo.as_raw_fd(), LOOP_SET_FD, backing.as_raw_fd()) };
    if r < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(dev)
}

/// Prepares `cmd` to start as a service of init: a new session, an empty
/// signal mask, and membership of the cgroup whose `cgroup.procs` is open as
/// `cgroup_procs` (if any).
pub fn prepare_service_command(cmd: &mut Command, cgroup_procs: Option<RawFd>) {
    let cg = cgroup_procs;
    // SAFETY: the closure runs in the forked child before exec. It calls only
    // async-signal-safe functions (setsid, sigprocmask, write) on values
    // captured by copy, and allocates nothing.
    unsafe {
        cmd.pre_exec(move || {
            libc::setsid();
            let mut set: libc::sigset_t = std::mem::zeroed();
            libc::sigemptyset(&mut set);
            libc::sigprocmask(libc::SIG_SETMASK, &set, std::ptr::null_mut());
            if let Some(fd) = cg {
                let zero = b"0\n";
                if libc::write(fd, zero.as_ptr().cast(), zero.len()) < 0 {
                    return Err(io::Error::last_os_error());
                }
            }
            Ok(())
        });
    }
}

/// Puts a terminal into raw mode, for the test control channel.
pub fn make_raw(fd: &File) -> io::Result<()> {
    use nix::sys::termios::{cfmakeraw, tcgetattr, tcsetattr, SetArg};
    let mut t = tcgetattr(fd).map_err(io::Error::from)?;
    cfmakeraw(&mut t);
    tcsetattr(fd, SetArg::TCSANOW, &t).map_err(io::Error::from)
}
