//! A tap device, opened by name for virtio-net.
//!
//! The VMM only attaches to taps that already exist: netd (VMs) and ctr
//! create them, name them, put them on a bridge and bring them up. Opening
//! goes through `/dev/net/tun` with `IFF_TAP | IFF_NO_PI | IFF_VNET_HDR`,
//! non-blocking, and then sets the vnet header size to the 12 bytes of
//! virtio 1.0's `virtio_net_hdr_v1` (which always carries `num_buffers`), so
//! every frame read or written is that header followed by the Ethernet
//! frame, the layout of a virtio-net buffer.
//!
//! `TUNSETIFF` on a name that does not exist would create a new,
//! non-persistent tap, so [`Tap::open`] first asks the kernel whether the
//! interface exists (in the caller's network namespace) and refuses a
//! missing one by name; and since a tap that someone else created can only
//! be attached if it is persistent, a tap that comes back without
//! `IFF_PERSIST` was created by the open itself (the interface vanished in
//! between) and is closed again, which deletes it, and refused.

use std::ffi::CString;
use std::fs::{File, OpenOptions};
use std::io::{self, IoSlice, IoSliceMut, Read, Write};
use std::os::fd::{AsRawFd, RawFd};
use std::os::unix::fs::OpenOptionsExt;

use libc::{c_int, c_short, c_uint};
use virtio_bindings::virtio_net::{
    VIRTIO_NET_F_GUEST_CSUM, VIRTIO_NET_F_GUEST_ECN, VIRTIO_NET_F_GUEST_TSO4,
    VIRTIO_NET_F_GUEST_TSO6, VIRTIO_NET_F_GUEST_UFO,
};

/// The size of the vnet header in front of every frame: virtio 1.0's
/// `virtio_net_hdr_v1`, `num_buffers` included.
pub const VNET_HDR_LEN: usize = 12;

/// The longest interface name the kernel takes (`IFNAMSIZ` less the NUL).
pub const MAX_NAME_LEN: usize = libc::IFNAMSIZ - 1;

/// An open tap device.
#[derive(Debug)]
pub struct Tap {
    file: File,
    name: String,
}

/// Checks that `name` can be an interface name: 1 to 15 bytes, no `/`,
/// whitespace, `:` or NUL, and not `.` or `..`.
pub fn validate_name(name: &str) -> io::Result<()> {
    let bad = |why: &str| {
        Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("tap {name:?}: {why}"),
        ))
    };
    if name.is_empty() {
        return bad("empty interface name");
    }
    if name.len() > MAX_NAME_LEN {
        return bad("interface name longer than 15 bytes");
    }
    if name == "." || name == ".." {
        return bad("not an interface name");
    }
    if name
        .bytes()
        .any(|b| b == b'/' || b == b':' || b == 0 || b.is_ascii_whitespace())
    {
        return bad("interface name with '/', ':', whitespace or NUL");
    }
    Ok(())
}

/// An OS error's text without std's " (os error N)" suffix.
fn describe(e: &io::Error) -> String {
    let s = e.to_string();
    match s.find(" (os error ") {
        Some(i) => s[..i].to_string(),
        None => s,
    }
}

/// `e` prefixed with the tap's name.
fn named(name: &str, e: io::Error) -> io::Error {
    io::Error::new(e.kind(), format!("tap {name}: {}", describe(&e)))
}

/// An `ifreq` carrying `name` (already validated: shorter than IFNAMSIZ).
fn ifreq(name: &str) -> libc::ifreq {
    // SAFETY: ifreq is plain old data (a name array and a union of
    // integers, arrays and pointers) for which all-zero bytes are valid.
    let mut req: libc::ifreq = unsafe { std::mem::zeroed() };
    for (dst, src) in req.ifr_name.iter_mut().zip(name.bytes()) {
        *dst = src as libc::c_char;
    }
    req
}

/// Whether an interface called `name` exists in this thread's network
/// namespace. (`/sys/class/net` shows the namespace sysfs was mounted in,
/// which need not be ours.)
fn interface_exists(name: &str) -> io::Result<bool> {
    let c = CString::new(name).map_err(|_| io::Error::from(io::ErrorKind::InvalidInput))?;
    // SAFETY: `c` is a NUL-terminated string that outlives the call.
    let index = unsafe { libc::if_nametoindex(c.as_ptr()) };
    if index != 0 {
        return Ok(true);
    }
    let e = io::Error::last_os_error();
    match e.raw_os_error() {
        Some(libc::ENODEV) | Some(libc::ENXIO) => Ok(false),
        _ => Err(e),
    }
}

/// The tap offloads (`TUN_F_*`) matching the guest features the driver
/// accepted: which packets the kernel may hand the guest with a partial
/// checksum or still to be segmented. The TSO and UFO flags only count
/// with `TUN_F_CSUM` (the kernel refuses them alone, and so does the
/// virtio spec for the guest features).
pub fn offload_flags(acked_features: u64) -> c_uint {
    let has = |bit: u32| acked_features & (1u64 << bit) != 0;
    if !has(VIRTIO_NET_F_GUEST_CSUM) {
        return 0;
    }
    let mut flags = libc::TUN_F_CSUM;
    if has(VIRTIO_NET_F_GUEST_TSO4) {
        flags |= libc::TUN_F_TSO4;
    }
    if has(VIRTIO_NET_F_GUEST_TSO6) {
        flags |= libc::TUN_F_TSO6;
    }
    if has(VIRTIO_NET_F_GUEST_ECN) && (has(VIRTIO_NET_F_GUEST_TSO4) || has(VIRTIO_NET_F_GUEST_TSO6))
    {
        flags |= libc::TUN_F_TSO_ECN;
    }
    if has(VIRTIO_NET_F_GUEST_UFO) {
        flags |= libc::TUN_F_UFO;
    }
    flags
}

impl Tap {
    /// Attaches to the existing tap `name`: non-blocking, with a 12-byte
    /// vnet header and no offloads until [`Tap::set_offload`]. A missing
    /// interface is refused (`tap NAME: No such device`), never created.
    pub fn open(name: &str) -> io::Result<Tap> {
        validate_name(name)?;
        if !interface_exists(name).map_err(|e| named(name, e))? {
            return Err(named(name, io::Error::from_raw_os_error(libc::ENODEV)));
        }
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .custom_flags(libc::O_NONBLOCK | libc::O_CLOEXEC)
            .open("/dev/net/tun")
            .map_err(|e| {
                io::Error::new(
                    e.kind(),
                    format!("tap {name}: /dev/net/tun: {}", describe(&e)),
                )
            })?;

        let mut req = ifreq(name);
        req.ifr_ifru.ifru_flags = (libc::IFF_TAP | libc::IFF_NO_PI | libc::IFF_VNET_HDR) as c_short;
        // SAFETY: TUNSETIFF reads an ifreq; `req` is one, valid for the call.
        let r = unsafe { libc::ioctl(file.as_raw_fd(), libc::TUNSETIFF, &mut req) };
        if r < 0 {
            let e = io::Error::last_os_error();
            let hint = match e.raw_os_error() {
                Some(libc::EINVAL) => {
                    " (it is not a single-queue tap: a tun, a multi-queue tap or another kind of interface)"
                }
                Some(libc::EBUSY) => " (another process has it open)",
                Some(libc::EPERM) => " (needs CAP_NET_ADMIN, or to be the tap's owner or group)",
                _ => "",
            };
            return Err(io::Error::new(
                e.kind(),
                format!("tap {name}: {}{hint}", describe(&e)),
            ));
        }

        let mut got = ifreq("");
        // SAFETY: TUNGETIFF fills an ifreq; `got` is one, valid for the call.
        let r = unsafe { libc::ioctl(file.as_raw_fd(), libc::TUNGETIFF, &mut got) };
        if r < 0 {
            return Err(named(name, io::Error::last_os_error()));
        }
        // SAFETY: TUNGETIFF stored the flags in ifru_flags; every bit
        // pattern is a valid c_short.
        let flags = c_int::from(unsafe { got.ifr_ifru.ifru_flags });
        if flags & libc::IFF_PERSIST == 0 {
            // We just created it: closing the only fd deletes it again.
            drop(file);
            return Err(io::Error::new(
                io::ErrorKind::NotFound,
                format!("tap {name}: No such device (it vanished while being opened; the VMM does not create taps)"),
            ));
        }

        let size: c_int = VNET_HDR_LEN as c_int;
        // SAFETY: TUNSETVNETHDRSZ reads an int through the pointer, which
        // points at `size` for the duration of the call.
        let r = unsafe { libc::ioctl(file.as_raw_fd(), libc::TUNSETVNETHDRSZ, &size) };
        if r < 0 {
            return Err(named(name, io::Error::last_os_error()));
        }
        let tap = Tap {
            file,
            name: name.to_string(),
        };
        tap.set_offload(0)?;
        Ok(tap)
    }

    /// The open tap (for vhost-net's backend).
    pub fn file(&self) -> &File {
        &self.file
    }

    /// The interface name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Sets the offloads the reader accepts (`TUN_F_*`, see
    /// [`offload_flags`]).
    pub fn set_offload(&self, flags: c_uint) -> io::Result<()> {
        // SAFETY: TUNSETOFFLOAD takes its argument by value and touches no
        // memory of ours.
        let r = unsafe {
            libc::ioctl(
                self.file.as_raw_fd(),
                libc::TUNSETOFFLOAD,
                libc::c_ulong::from(flags),
            )
        };
        if r < 0 {
            let e = io::Error::last_os_error();
            return Err(io::Error::new(
                e.kind(),
                format!(
                    "tap {}: TUNSETOFFLOAD {flags:#x}: {}",
                    self.name,
                    describe(&e)
                ),
            ));
        }
        Ok(())
    }

    /// Reads one frame (vnet header first); `WouldBlock` when none is
    /// queued. A buffer shorter than the frame truncates it.
    pub fn read(&self, buf: &mut [u8]) -> io::Result<usize> {
        (&self.file).read(buf)
    }

    /// Reads one frame scattered over `bufs`.
    pub fn read_vectored(&self, bufs: &mut [IoSliceMut<'_>]) -> io::Result<usize> {
        (&self.file).read_vectored(bufs)
    }

    /// Sends one frame (vnet header first) in one write.
    pub fn write(&self, buf: &[u8]) -> io::Result<usize> {
        (&self.file).write(buf)
    }

    /// Sends one frame gathered from `bufs` in one write.
    pub fn write_vectored(&self, bufs: &[IoSlice<'_>]) -> io::Result<usize> {
        (&self.file).write_vectored(bufs)
    }
}

impl AsRawFd for Tap {
    fn as_raw_fd(&self) -> RawFd {
        self.file.as_raw_fd()
    }
}

/// Tap plumbing for the tests: a private network namespace, taps that
/// delete themselves, interface flags, and a packet socket on the tap.
#[cfg(test)]
pub(crate) mod testutil {
    use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
    use std::sync::atomic::{AtomicU32, Ordering};
    use std::time::{Duration, Instant};

    use super::*;

    /// Moves the calling thread into a new network namespace, so its taps
    /// are private and go away with it. Without CAP_SYS_ADMIN the thread
    /// stays where it is (the taps then have unique names and are
    /// deleted by [`TestTap`]'s drop).
    pub fn private_netns() {
        // SAFETY: unshare takes flags only; CLONE_NEWNET affects only the
        // calling thread and is allowed in a multithreaded process.
        let _ = unsafe { libc::unshare(libc::CLONE_NEWNET) };
    }

    /// A name no other test in this process uses.
    pub fn unique_name(prefix: &str) -> String {
        static N: AtomicU32 = AtomicU32::new(0);
        let n = N.fetch_add(1, Ordering::Relaxed);
        let name = format!("{prefix}{}x{n}", std::process::id() % 100_000);
        assert!(name.len() <= MAX_NAME_LEN, "{name}");
        name
    }

    fn ioctl_or_panic(fd: RawFd, req: libc::Ioctl, arg: *mut libc::ifreq, what: &str) {
        // SAFETY: `arg` points at a live ifreq for the duration of the
        // call; the requests used here read or fill one.
        let r = unsafe { libc::ioctl(fd, req, arg) };
        if r < 0 {
            let e = io::Error::last_os_error();
            panic!("{what}: {e} (creating and configuring taps needs CAP_NET_ADMIN: run the tests as root)");
        }
    }

    /// A persistent tap (or tun) made for a test; dropping it deletes it.
    pub struct TestTap {
        pub name: String,
        kind: c_int,
    }

    impl TestTap {
        /// A persistent tap called `name`, down.
        pub fn tap(name: &str) -> TestTap {
            TestTap::create(name, libc::IFF_TAP)
        }

        /// A persistent tun (layer 3) device called `name`.
        pub fn tun(name: &str) -> TestTap {
            TestTap::create(name, libc::IFF_TUN)
        }

        fn create(name: &str, kind: c_int) -> TestTap {
            let f = OpenOptions::new()
                .read(true)
                .write(true)
                .open("/dev/net/tun")
                .unwrap_or_else(|e| panic!("/dev/net/tun: {e}"));
            let mut req = ifreq(name);
            req.ifr_ifru.ifru_flags = (kind | libc::IFF_NO_PI | libc::IFF_VNET_HDR) as c_short;
            ioctl_or_panic(
                f.as_raw_fd(),
                libc::TUNSETIFF,
                &mut req,
                &format!("creating {name}"),
            );
            // SAFETY: TUNSETPERSIST takes its argument by value.
            let r = unsafe { libc::ioctl(f.as_raw_fd(), libc::TUNSETPERSIST, 1 as libc::c_ulong) };
            assert!(
                r == 0,
                "TUNSETPERSIST {name}: {}",
                io::Error::last_os_error()
            );
            TestTap {
                name: name.to_string(),
                kind,
            }
        }

        /// Sets IFF_UP (a tap must be up to take frames from the device;
        /// writes to a down tap fail with EIO). Do it after the device has
        /// attached: a tap has a carrier only while an fd is attached, and
        /// bringing it up with one starts its queueing discipline at once,
        /// whereas a carrier that comes later starts it only when the
        /// kernel's link watcher gets round to it; frames sent to the tap
        /// before that are dropped.
        pub fn set_up(&self) {
            let s = socket(libc::AF_INET, libc::SOCK_DGRAM, 0);
            let mut req = ifreq(&self.name);
            ioctl_or_panic(s.as_raw_fd(), libc::SIOCGIFFLAGS, &mut req, "SIOCGIFFLAGS");
            // SAFETY: SIOCGIFFLAGS filled ifru_flags.
            unsafe { req.ifr_ifru.ifru_flags |= libc::IFF_UP as c_short };
            ioctl_or_panic(s.as_raw_fd(), libc::SIOCSIFFLAGS, &mut req, "SIOCSIFFLAGS");
        }

        /// The interface index.
        pub fn index(&self) -> c_int {
            let c = CString::new(self.name.as_str()).unwrap();
            // SAFETY: `c` is NUL-terminated and outlives the call.
            let i = unsafe { libc::if_nametoindex(c.as_ptr()) };
            assert!(i != 0, "{}: {}", self.name, io::Error::last_os_error());
            i as c_int
        }
    }

    impl Drop for TestTap {
        fn drop(&mut self) {
            let Ok(f) = OpenOptions::new()
                .read(true)
                .write(true)
                .open("/dev/net/tun")
            else {
                return;
            };
            let mut req = ifreq(&self.name);
            req.ifr_ifru.ifru_flags = (self.kind | libc::IFF_NO_PI | libc::IFF_VNET_HDR) as c_short;
            // SAFETY: TUNSETIFF reads the ifreq, valid for the call.
            if unsafe { libc::ioctl(f.as_raw_fd(), libc::TUNSETIFF, &mut req) } == 0 {
                // SAFETY: TUNSETPERSIST takes its argument by value.
                unsafe { libc::ioctl(f.as_raw_fd(), libc::TUNSETPERSIST, 0 as libc::c_ulong) };
            }
        }
    }

    fn socket(domain: c_int, ty: c_int, proto: c_int) -> OwnedFd {
        // SAFETY: socket takes integers only.
        let fd = unsafe { libc::socket(domain, ty | libc::SOCK_CLOEXEC, proto) };
        assert!(fd >= 0, "socket: {}", io::Error::last_os_error());
        // SAFETY: `fd` is a new descriptor that nothing else owns.
        unsafe { OwnedFd::from_raw_fd(fd) }
    }

    /// An AF_PACKET socket bound to one interface: sees every frame the
    /// interface receives (what the device wrote to the tap) and sends
    /// frames out of it (what the device then reads from the tap).
    pub struct PacketSocket(OwnedFd);

    impl PacketSocket {
        /// Binds to interface `index`.
        pub fn bind(index: c_int) -> PacketSocket {
            let proto = (libc::ETH_P_ALL as u16).to_be();
            let s = socket(libc::AF_PACKET, libc::SOCK_RAW, c_int::from(proto));
            // SAFETY: sockaddr_ll is plain old data; zero is valid.
            let mut sa: libc::sockaddr_ll = unsafe { std::mem::zeroed() };
            sa.sll_family = libc::AF_PACKET as u16;
            sa.sll_protocol = proto;
            sa.sll_ifindex = index;
            // SAFETY: `sa` is a sockaddr_ll of the size passed.
            let r = unsafe {
                libc::bind(
                    s.as_raw_fd(),
                    (&sa as *const libc::sockaddr_ll).cast(),
                    std::mem::size_of::<libc::sockaddr_ll>() as libc::socklen_t,
                )
            };
            assert!(r == 0, "bind packet socket: {}", io::Error::last_os_error());
            let tv = libc::timeval {
                tv_sec: 0,
                tv_usec: 50_000,
            };
            // SAFETY: SO_RCVTIMEO reads a timeval of the size passed.
            let r = unsafe {
                libc::setsockopt(
                    s.as_raw_fd(),
                    libc::SOL_SOCKET,
                    libc::SO_RCVTIMEO,
                    (&tv as *const libc::timeval).cast(),
                    std::mem::size_of::<libc::timeval>() as libc::socklen_t,
                )
            };
            assert!(r == 0, "SO_RCVTIMEO: {}", io::Error::last_os_error());
            PacketSocket(s)
        }

        /// Sends `frame` (an Ethernet frame) out of the interface.
        pub fn send(&self, frame: &[u8]) {
            // SAFETY: the pointer and length describe `frame`.
            let r =
                unsafe { libc::send(self.0.as_raw_fd(), frame.as_ptr().cast(), frame.len(), 0) };
            assert!(
                r == frame.len() as isize,
                "send: {}",
                io::Error::last_os_error()
            );
        }

        /// Sends `frame` with a 10-byte `virtio_net_hdr` in front, which the
        /// kernel turns into checksum and segmentation offload metadata
        /// (PACKET_VNET_HDR).
        pub fn send_with_vnet_hdr(&self, hdr: &[u8; 10], frame: &[u8]) {
            const PACKET_VNET_HDR: c_int = 15;
            let on: c_int = 1;
            // SAFETY: PACKET_VNET_HDR reads an int of the size passed.
            let r = unsafe {
                libc::setsockopt(
                    self.0.as_raw_fd(),
                    libc::SOL_PACKET,
                    PACKET_VNET_HDR,
                    (&on as *const c_int).cast(),
                    std::mem::size_of::<c_int>() as libc::socklen_t,
                )
            };
            assert!(r == 0, "PACKET_VNET_HDR: {}", io::Error::last_os_error());
            let mut buf = hdr.to_vec();
            buf.extend_from_slice(frame);
            self.send(&buf);
        }

        /// The first frame seen within `timeout` that `want` accepts.
        pub fn recv_matching(
            &self,
            timeout: Duration,
            want: impl Fn(&[u8]) -> bool,
        ) -> Option<Vec<u8>> {
            let deadline = Instant::now() + timeout;
            let mut buf = vec![0u8; 70_000];
            while Instant::now() < deadline {
                // SAFETY: the pointer and length describe `buf`.
                let r = unsafe {
                    libc::recv(self.0.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len(), 0)
                };
                if r > 0 && want(&buf[..r as usize]) {
                    return Some(buf[..r as usize].to_vec());
                }
            }
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use super::testutil::*;
    use super::*;

    #[test]
    fn names_are_checked_before_anything_is_opened() {
        for bad in ["", "abcdefghijklmnop", "a/b", "a b", "a:1", ".", ".."] {
            let e = Tap::open(bad).unwrap_err();
            assert_eq!(e.kind(), io::ErrorKind::InvalidInput, "{bad:?}: {e}");
            assert!(e.to_string().starts_with("tap "), "{e}");
        }
        assert!(validate_name("abcdefghijklmno").is_ok());
    }

    #[test]
    fn a_missing_tap_is_refused_by_name_and_not_created() {
        private_netns();
        let name = unique_name("oxmiss");
        let e = Tap::open(&name).unwrap_err();
        assert_eq!(e.to_string(), format!("tap {name}: No such device"));
        assert!(!interface_exists(&name).unwrap(), "{name} was created");
    }

    #[test]
    fn opens_an_existing_tap_with_a_12_byte_vnet_header() {
        private_netns();
        let t = TestTap::tap(&unique_name("oxopen"));
        let tap = Tap::open(&t.name).unwrap();
        assert_eq!(tap.name(), t.name);

        let mut req = ifreq("");
        // SAFETY: TUNGETIFF fills the ifreq.
        let r = unsafe { libc::ioctl(tap.as_raw_fd(), libc::TUNGETIFF, &mut req) };
        assert_eq!(r, 0);
        // SAFETY: filled by TUNGETIFF.
        let flags = c_int::from(unsafe { req.ifr_ifru.ifru_flags });
        let want = libc::IFF_TAP | libc::IFF_NO_PI | libc::IFF_VNET_HDR | libc::IFF_PERSIST;
        assert_eq!(flags & want, want, "{flags:#x}");

        let mut size: c_int = 0;
        // SAFETY: TUNGETVNETHDRSZ writes an int.
        let r = unsafe { libc::ioctl(tap.as_raw_fd(), libc::TUNGETVNETHDRSZ, &mut size) };
        assert_eq!(r, 0);
        assert_eq!(size, 12);

        // SAFETY: F_GETFL takes no pointer.
        let fl = unsafe { libc::fcntl(tap.as_raw_fd(), libc::F_GETFL) };
        assert!(fl & libc::O_NONBLOCK != 0);

        // Every offload set the device can ask for is accepted.
        let all = offload_flags(u64::MAX);
        assert_eq!(
            all,
            libc::TUN_F_CSUM
                | libc::TUN_F_TSO4
                | libc::TUN_F_TSO6
                | libc::TUN_F_TSO_ECN
                | libc::TUN_F_UFO
        );
        tap.set_offload(all & !libc::TUN_F_UFO).unwrap();
        tap.set_offload(0).unwrap();

        // Nothing queued: a read would block.
        let mut buf = [0u8; 64];
        assert_eq!(
            tap.read(&mut buf).unwrap_err().kind(),
            io::ErrorKind::WouldBlock
        );

        // A second open of a single-queue tap is busy.
        let e = Tap::open(&t.name).unwrap_err();
        assert!(e.to_string().contains("another process has it open"), "{e}");
    }

    #[test]
    fn a_tun_or_a_non_tun_interface_is_not_a_tap() {
        private_netns();
        let t = TestTap::tun(&unique_name("oxtun"));
        let e = Tap::open(&t.name).unwrap_err();
        assert!(e.to_string().contains("not a single-queue tap"), "{e}");
        let e = Tap::open("lo").unwrap_err();
        assert!(e.to_string().starts_with("tap lo: "), "{e}");
    }

    #[test]
    fn offloads_follow_the_guest_features() {
        let f = |bits: &[u32]| bits.iter().fold(0u64, |a, b| a | 1 << b);
        assert_eq!(offload_flags(0), 0);
        // TSO without checksum offload is not a valid combination.
        assert_eq!(offload_flags(f(&[VIRTIO_NET_F_GUEST_TSO4])), 0);
        assert_eq!(
            offload_flags(f(&[VIRTIO_NET_F_GUEST_CSUM])),
            libc::TUN_F_CSUM
        );
        assert_eq!(
            offload_flags(f(&[
                VIRTIO_NET_F_GUEST_CSUM,
                VIRTIO_NET_F_GUEST_TSO4,
                VIRTIO_NET_F_GUEST_TSO6
            ])),
            libc::TUN_F_CSUM | libc::TUN_F_TSO4 | libc::TUN_F_TSO6
        );
        assert_eq!(
            offload_flags(f(&[VIRTIO_NET_F_GUEST_CSUM, VIRTIO_NET_F_GUEST_ECN])),
            libc::TUN_F_CSUM
        );
    }
}
