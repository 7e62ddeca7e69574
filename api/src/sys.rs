//! The system calls apid makes itself: persistent tap devices for guests.

use std::fs::OpenOptions;
use std::io;
use std::os::fd::AsRawFd;

/// `TUNSETPERSIST`, `_IOW('T', 203, int)`.
const TUNSETPERSIST: libc::c_ulong = 0x4004_54cb;

fn ifreq(name: &str, flags: libc::c_int) -> io::Result<libc::ifreq> {
    if name.is_empty() || name.len() >= libc::IFNAMSIZ || !name.is_ascii() {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("`{name}` is not a valid interface name"),
        ));
    }
    // SAFETY: ifreq is plain old data; all zeroes is a valid value.
    let mut req: libc::ifreq = unsafe { std::mem::zeroed() };
    for (dst, src) in req.ifr_name.iter_mut().zip(name.bytes()) {
        *dst = src as libc::c_char;
    }
    req.ifr_ifru.ifru_flags = flags as libc::c_short;
    Ok(req)
}

/// Creates tap `name` (or attaches to it if it exists) with the flags the
/// VMM opens it with, and makes it persistent, so that it outlives this
/// call and the VMM can open it.
pub fn create_persistent_tap(name: &str) -> io::Result<()> {
    set_tap_persistence(name, true)
}

/// Removes the persistence of tap `name`, which makes it disappear once no
/// process holds it open; a missing tap is not an error.
pub fn delete_persistent_tap(name: &str) -> io::Result<()> {
    if !std::path::Path::new("/sys/class/net").join(name).exists() {
        return Ok(());
    }
    set_tap_persistence(name, false)
}

fn set_tap_persistence(name: &str, persist: bool) -> io::Result<()> {
    let mut req = ifreq(name, libc::IFF_TAP | libc::IFF_NO_PI | libc::IFF_VNET_HDR)?;
    let tun = OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/net/tun")?;
    // SAFETY: TUNSETIFF reads and writes an ifreq; `req` is one, valid and
    // exclusively borrowed for the call.
    let r = unsafe { libc::ioctl(tun.as_raw_fd(), libc::TUNSETIFF, &mut req) };
    if r < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: TUNSETPERSIST takes an integer argument by value.
    let r = unsafe { libc::ioctl(tun.as_raw_fd(), TUNSETPERSIST, libc::c_ulong::from(persist)) };
    if r < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bad_names_are_refused_before_any_call() {
        assert!(create_persistent_tap("").is_err());
        assert!(create_persistent_tap("a-name-that-is-too-long").is_err());
        assert!(delete_persistent_tap("surely-not-here0").is_ok());
    }
}
