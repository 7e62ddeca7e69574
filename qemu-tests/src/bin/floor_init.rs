//! The floor of the boot benchmark: the least an init can do before a port
//! answers. It mounts the pseudo filesystems, loads the NIC's modules,
//! addresses the NIC (QEMU's user network, 10.0.2.15/24), and answers every
//! connection on port 8006 with a fixed HTTP response. It is appended to the
//! appliance's initramfs, whose `/init` it replaces, so both boots share
//! the kernel and modules.

use std::ffi::CString;
use std::io::{Read, Write};
use std::net::TcpListener;
use std::os::fd::AsRawFd;
use std::path::Path;
use std::time::Duration;

use nix::kmod::{finit_module, ModuleInitFlags};
use nix::mount::{mount, MsFlags};

fn main() {
    let _ = mount(
        Some("proc"),
        "/proc",
        Some("proc"),
        MsFlags::empty(),
        None::<&str>,
    );
    let _ = mount(
        Some("sysfs"),
        "/sys",
        Some("sysfs"),
        MsFlags::empty(),
        None::<&str>,
    );
    let _ = mount(
        Some("devtmpfs"),
        "/dev",
        Some("devtmpfs"),
        MsFlags::empty(),
        None::<&str>,
    );
    let release = nix::sys::utsname::uname()
        .map(|u| u.release().to_string_lossy().into_owned())
        .unwrap_or_default();
    let dir = Path::new("/lib/modules").join(release);
    let list = std::fs::read_to_string("/etc/oxbow/modules.list").unwrap_or_default();
    let empty = CString::default();
    for rel in list
        .lines()
        .filter(|l| l.contains("virtio") || l.contains("failover"))
    {
        if let Ok(f) = std::fs::File::open(dir.join(rel.trim())) {
            let _ = finit_module(&f, &empty, ModuleInitFlags::empty());
        }
    }
    let nic = loop {
        let found = std::fs::read_dir("/sys/class/net")
            .into_iter()
            .flatten()
            .flatten()
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .find(|n| n != "lo");
        if let Some(n) = found {
            break n;
        }
        std::thread::sleep(Duration::from_millis(10));
    };
    if let Err(e) = configure("lo", [127, 0, 0, 1], [255, 0, 0, 0])
        .and_then(|_| configure(&nic, [10, 0, 2, 15], [255, 255, 255, 0]))
    {
        eprintln!("floor-init: {nic}: {e}");
    }
    eprintln!("floor-init: listening on 8006");
    let listener = match TcpListener::bind("0.0.0.0:8006") {
        Ok(l) => l,
        Err(e) => {
            eprintln!("floor-init: bind: {e}");
            loop {
                std::thread::sleep(Duration::from_secs(3600));
            }
        }
    };
    for mut s in listener.incoming().flatten() {
        let mut buf = [0u8; 1024];
        let _ = s.read(&mut buf);
        let _ = s.write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\nconnection: close\r\n\r\nok");
    }
}

/// Sets an IPv4 address and netmask on `ifname` and brings it up, with the
/// classic interface ioctls.
fn configure(ifname: &str, addr: [u8; 4], mask: [u8; 4]) -> std::io::Result<()> {
    let sock = std::net::UdpSocket::bind("0.0.0.0:0")?;
    let fd = sock.as_raw_fd();
    let ifreq_with = |a: [u8; 4]| {
        // SAFETY: ifreq is plain old data; all-zero is a valid value.
        let mut req: libc::ifreq = unsafe { std::mem::zeroed() };
        for (d, s) in req.ifr_name.iter_mut().zip(ifname.bytes()) {
            *d = s as libc::c_char;
        }
        let sin = libc::sockaddr_in {
            sin_family: libc::AF_INET as libc::sa_family_t,
            sin_port: 0,
            sin_addr: libc::in_addr {
                s_addr: u32::from_ne_bytes(a),
            },
            sin_zero: [0; 8],
        };
        // SAFETY: sockaddr_in fits in the sockaddr of the ifreq union.
        unsafe {
            std::ptr::copy_nonoverlapping(
                (&sin as *const libc::sockaddr_in).cast::<u8>(),
                (&mut req.ifr_ifru.ifru_addr as *mut libc::sockaddr).cast::<u8>(),
                std::mem::size_of::<libc::sockaddr_in>(),
            );
        }
        req
    };
    for (op, a) in [(libc::SIOCSIFADDR, addr), (libc::SIOCSIFNETMASK, mask)] {
        let req = ifreq_with(a);
        // SAFETY: `req` is a valid ifreq for this request and lives across the call.
        if unsafe { libc::ioctl(fd, op as _, &req) } < 0 {
            return Err(std::io::Error::last_os_error());
        }
    }
    let mut req = ifreq_with([0; 4]);
    // SAFETY: as above; SIOCGIFFLAGS fills the flags member.
    if unsafe { libc::ioctl(fd, libc::SIOCGIFFLAGS as _, &mut req) } < 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: the union member just filled by SIOCGIFFLAGS is the flags.
    unsafe {
        req.ifr_ifru.ifru_flags |= (libc::IFF_UP | libc::IFF_RUNNING) as libc::c_short;
    }
    // SAFETY: `req` is valid for SIOCSIFFLAGS.
    if unsafe { libc::ioctl(fd, libc::SIOCSIFFLAGS as _, &req) } < 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(())
}
