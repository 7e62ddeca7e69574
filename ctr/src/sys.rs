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
