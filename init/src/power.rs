//! The ACPI power button and the end of a shutdown.
//!
//! Without systemd-logind nobody acts on the power button: the kernel
//! reports it as `KEY_POWER` on an evdev device named "Power Button", and
//! init reads that device itself.

use std::fs::{File, OpenOptions};
use std::io::Read;
use std::os::fd::{AsFd, BorrowedFd};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use nix::mount::{mount, umount2, MntFlags, MsFlags};
use nix::sys::reboot::{reboot, RebootMode};
use nix::sys::signal::{kill, Signal};
use nix::sys::wait::{waitpid, WaitPidFlag, WaitStatus};
use nix::unistd::{sync, Pid};

use crate::console::say;
use crate::supervisor::Shutdown;

const EV_KEY: u16 = 1;
const KEY_POWER: u16 = 116;
/// `struct input_event` on 64-bit: a timeval (16 bytes), type, code, value.
const EVENT_SIZE: usize = 24;

/// Finds the evdev devices that carry a power button.
pub fn find_power_buttons(sys_input: &Path, dev_input: &Path) -> Vec<PathBuf> {
    let Ok(entries) = std::fs::read_dir(sys_input) else {
        return Vec::new();
    };
    let mut found: Vec<PathBuf> = entries
        .flatten()
        .filter_map(|e| {
            let name = e.file_name().to_string_lossy().into_owned();
            if !name.starts_with("event") {
                return None;
            }
            let dev_name = std::fs::read_to_string(e.path().join("device/name")).ok()?;
            dev_name
                .trim()
                .eq_ignore_ascii_case("Power Button")
                .then(|| dev_input.join(&name))
        })
        .collect();
    found.sort();
    found
}

/// An open power-button input device.
#[derive(Debug)]
pub struct PowerButton {
    dev: File,
    pending: Vec<u8>,
}

impl PowerButton {
    /// Opens the device non-blocking.
    pub fn open(path: &Path) -> std::io::Result<PowerButton> {
        let dev = OpenOptions::new()
            .read(true)
            .custom_flags(libc::O_NONBLOCK | libc::O_CLOEXEC)
            .open(path)?;
        Ok(PowerButton {
            dev,
            pending: Vec::new(),
        })
    }

    /// Reads the queued events; true if one was a press of the button.
    pub fn pressed(&mut self) -> bool {
        let mut buf = [0u8; EVENT_SIZE * 16];
        while let Ok(n) = self.dev.read(&mut buf) {
            if n == 0 {
                break;
            }
            self.pending.extend_from_slice(&buf[..n]);
        }
        let mut pressed = false;
        let whole = self.pending.len() / EVENT_SIZE * EVENT_SIZE;
        for ev in self.pending[..whole].chunks_exact(EVENT_SIZE) {
            pressed |= is_power_press(ev);
        }
        self.pending.drain(..whole);
        pressed
    }
}

impl AsFd for PowerButton {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.dev.as_fd()
    }
}

/// Whether one raw `input_event` is a press of KEY_POWER.
pub fn is_power_press(ev: &[u8]) -> bool {
    if ev.len() < EVENT_SIZE {
        return false;
    }
    let ty = u16::from_ne_bytes([ev[16], ev[17]]);
    let code = u16::from_ne_bytes([ev[18], ev[19]]);
    let value = i32::from_ne_bytes([ev[20], ev[21], ev[22], ev[23]]);
    ty == EV_KEY && code == KEY_POWER && value == 1
}

/// The last steps of a shutdown, once every unit is stopped: end the
/// remaining processes, sync, unmount, and power off or reboot. Never
/// returns.
pub fn finish(kind: Shutdown) -> ! {
    say("sending SIGTERM to remaining processes");
    let _ = kill(Pid::from_raw(-1), Signal::SIGTERM);
    reap_for(Duration::from_secs(3));
    let _ = kill(Pid::from_raw(-1), Signal::SIGKILL);
    reap_for(Duration::from_millis(200));
    sync();
    let n = unmount_all();
    say(format_args!("unmounted {n} filesystems"));
    let _ = mount(
        None::<&str>,
        "/",
        None::<&str>,
        MsFlags::MS_REMOUNT | MsFlags::MS_RDONLY,
        None::<&str>,
    );
    sync();
    let mode = match kind {
        Shutdown::PowerOff => {
            say("powering off");
            RebootMode::RB_POWER_OFF
        }
        Shutdown::Reboot => {
            say("rebooting");
            RebootMode::RB_AUTOBOOT
        }
    };
    let err = reboot(mode);
    say(format_args!("reboot(2) failed: {err:?}; halting"));
    loop {
        std::thread::sleep(Duration::from_secs(3600));
    }
}

/// Reaps children until none are left or `limit` passes.
fn reap_for(limit: Duration) {
    let end = Instant::now() + limit;
    while Instant::now() < end {
        match waitpid(Pid::from_raw(-1), Some(WaitPidFlag::WNOHANG)) {
            Ok(WaitStatus::StillAlive) => std::thread::sleep(Duration::from_millis(20)),
            Ok(_) => {}
            Err(_) => return,
        }
    }
}

/// Unmounts everything but the root and the kernel filesystems that the
/// final steps still use, innermost first. Returns how many went.
fn unmount_all() -> usize {
    let Ok(text) = std::fs::read_to_string("/proc/self/mountinfo") else {
        return 0;
    };
    let keep = ["/", "/proc", "/sys", "/dev"];
    let points: Vec<String> = text
        .lines()
        .filter_map(|l| l.split(' ').nth(4).map(unescape_mount_point))
        .filter(|p| !keep.contains(&p.as_str()))
        .collect();
    points
        .iter()
        .rev()
        .filter(|p| umount2(p.as_str(), MntFlags::MNT_DETACH).is_ok())
        .count()
}

/// Undoes the octal escapes of `/proc/self/mountinfo` (`\040` is a space).
pub fn unescape_mount_point(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'\\'
            && i + 3 < b.len()
            && b[i + 1..i + 4].iter().all(|c| (b'0'..=b'7').contains(c))
        {
            let v = (b[i + 1] - b'0') * 64 + (b[i + 2] - b'0') * 8 + (b[i + 3] - b'0');
            out.push(v);
            i += 4;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event(ty: u16, code: u16, value: i32) -> Vec<u8> {
        let mut e = vec![0u8; 16];
        e.extend_from_slice(&ty.to_ne_bytes());
        e.extend_from_slice(&code.to_ne_bytes());
        e.extend_from_slice(&value.to_ne_bytes());
        e
    }

    #[test]
    fn power_press_only() {
        assert!(is_power_press(&event(1, 116, 1)));
        assert!(!is_power_press(&event(1, 116, 0)), "release");
        assert!(!is_power_press(&event(1, 30, 1)), "another key");
        assert!(!is_power_press(&event(0, 0, 0)), "sync event");
    }

    #[test]
    fn finds_buttons_by_name() {
        let d = tempfile::tempdir().unwrap();
        for (ev, name) in [
            ("event0", "Power Button\n"),
            ("event1", "AT Translated Set 2 keyboard\n"),
            ("event2", "Power Button\n"),
        ] {
            std::fs::create_dir_all(d.path().join(ev).join("device")).unwrap();
            std::fs::write(d.path().join(ev).join("device/name"), name).unwrap();
        }
        let found = find_power_buttons(d.path(), Path::new("/dev/input"));
        assert_eq!(
            found,
            [
                PathBuf::from("/dev/input/event0"),
                PathBuf::from("/dev/input/event2")
            ]
        );
    }

    #[test]
    fn mountinfo_escapes() {
        assert_eq!(unescape_mount_point("/mnt/a\\040b"), "/mnt/a b");
        assert_eq!(unescape_mount_point("/plain"), "/plain");
    }
}
