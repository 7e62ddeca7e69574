//! virtio-net on a tap device.
//!
//! One receive queue (0) and one transmit queue (1), 256 entries each. The
//! guest's frames go to the tap and the tap's frames to the guest, each
//! with the 12-byte `virtio_net_hdr_v1` in front, which the tap reads and
//! writes itself (`IFF_VNET_HDR`), so checksum and segmentation offloads
//! pass through untouched: the kernel checks the guest's headers on the way
//! in and only hands the guest what its acked features allow (see
//! [`tap::offload_flags`]).
//!
//! Transmit pops every available chain and writes its readable buffers
//! (header and frame) to the tap with one `writev` straight from guest
//! memory, with the driver's notifications off meanwhile. Receive takes
//! receive chains ahead of the frames and reads each frame with one
//! `readv` straight into them (as many chains as a longest frame needs with
//! `VIRTIO_NET_F_MRG_RXBUF`), writing `num_buffers` into the header; what
//! does not fit spills into a host buffer and waits for more buffers (or
//! is dropped, without MRG_RXBUF). When the guest has no receive buffer
//! left, the tap is no longer polled until the guest kicks the receive
//! queue.
//!
//! Every address and length a chain names is checked by vm-memory when
//! [`sg::chain_sg`] resolves it; on top of that a chain must end properly
//! (a last descriptor without NEXT: virtio-queue silently cuts loops,
//! indices past the table and chains over 4 GiB short). A malformed chain
//! is returned to the guest with length 0 and counted; it never stops the
//! device.

use std::collections::VecDeque;
use std::fmt;
use std::io;
use std::os::fd::{AsRawFd, RawFd};
use std::str::FromStr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;

use virtio_bindings::virtio_net::{
    VIRTIO_NET_F_CSUM, VIRTIO_NET_F_GUEST_CSUM, VIRTIO_NET_F_GUEST_ECN, VIRTIO_NET_F_GUEST_TSO4,
    VIRTIO_NET_F_GUEST_TSO6, VIRTIO_NET_F_HOST_ECN, VIRTIO_NET_F_HOST_TSO4, VIRTIO_NET_F_HOST_TSO6,
    VIRTIO_NET_F_MAC, VIRTIO_NET_F_MRG_RXBUF, VIRTIO_NET_F_STATUS, VIRTIO_NET_S_LINK_UP,
};
use virtio_queue::QueueT;
use vm_memory::GuestMemoryMmap;
use vmm_sys_util::epoll::{ControlOperation, Epoll, EpollEvent, EventSet};

use super::tap::{self, Tap, VNET_HDR_LEN};
use super::vhost_net::{self, VhostNet};
use super::{
    device_type, drain, sg, ActiveQueue, Interrupt, VirtioDevice, Worker, VIRTIO_F_VERSION_1,
    VIRTIO_RING_F_EVENT_IDX,
};

/// The receive queue's index.
pub const RX_QUEUE: u16 = 0;
/// The transmit queue's index.
pub const TX_QUEUE: u16 = 1;
/// The size of both queues.
pub const QUEUE_SIZE: u16 = 256;

/// The longest frame with its header either way: the vnet header, an
/// Ethernet header with one VLAN tag, and a 64 KiB (segmentation offload)
/// payload.
pub const MAX_FRAME: usize = VNET_HDR_LEN + 18 + 65536;

/// The shortest frame the tap can hand over: header and Ethernet header.
const MIN_FRAME: usize = VNET_HDR_LEN + 14;

/// Where `num_buffers` sits in `virtio_net_hdr_v1`.
const NUM_BUFFERS_OFFSET: usize = 10;

/// At most this many frames are moved to the guest per wakeup, so a flood
/// of received frames cannot starve transmit (the tap stays readable and
/// the next wakeup carries on).
const RX_BATCH: usize = 64;

const fn bit(b: u32) -> u64 {
    1 << b
}

/// The features offered.
pub const FEATURES: u64 = VIRTIO_F_VERSION_1
    | VIRTIO_RING_F_EVENT_IDX
    | bit(VIRTIO_NET_F_CSUM)
    | bit(VIRTIO_NET_F_GUEST_CSUM)
    | bit(VIRTIO_NET_F_MAC)
    | bit(VIRTIO_NET_F_GUEST_TSO4)
    | bit(VIRTIO_NET_F_GUEST_TSO6)
    | bit(VIRTIO_NET_F_GUEST_ECN)
    | bit(VIRTIO_NET_F_HOST_TSO4)
    | bit(VIRTIO_NET_F_HOST_TSO6)
    | bit(VIRTIO_NET_F_HOST_ECN)
    | bit(VIRTIO_NET_F_MRG_RXBUF)
    | bit(VIRTIO_NET_F_STATUS);

/// An Ethernet address.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct MacAddr(pub [u8; 6]);

impl MacAddr {
    /// A random locally administered unicast address, `02:xx:xx:xx:xx:xx`.
    /// (Proxmox generates `BC:24:11:…` from its own vendor prefix; that
    /// belongs in the VM's config, which should always pass its MAC so the
    /// guest keeps it across restarts. A VMM started without one uses the
    /// local range, which no vendor owns.)
    pub fn random() -> io::Result<MacAddr> {
        let mut b = [0u8; 6];
        let mut done = 0;
        while done < b.len() {
            // SAFETY: the pointer and length describe the unfilled tail of
            // `b`, valid for writes for the duration of the call.
            let r = unsafe { libc::getrandom(b[done..].as_mut_ptr().cast(), b.len() - done, 0) };
            if r < 0 {
                let e = io::Error::last_os_error();
                if e.kind() == io::ErrorKind::Interrupted {
                    continue;
                }
                return Err(e);
            }
            done += r as usize;
        }
        b[0] = 0x02;
        Ok(MacAddr(b))
    }

    /// Whether the address is a group (multicast or broadcast) address.
    pub fn is_multicast(&self) -> bool {
        self.0[0] & 1 != 0
    }
}

/// Why a MAC address did not parse.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MacError {
    /// Not six groups of two hex digits separated by `:` or `-`.
    #[error("MAC address {0:?}: expected six hex pairs like 52:54:00:12:34:56")]
    Syntax(String),
    /// A group address cannot be a NIC's own.
    #[error("MAC address {0}: a multicast address cannot be a NIC's address")]
    Multicast(String),
    /// All zeros.
    #[error("MAC address {0}: the all-zero address cannot be a NIC's address")]
    Zero(String),
}

impl FromStr for MacAddr {
    type Err = MacError;

    /// Parses `52:54:00:12:34:56` (or with `-`, any case); refuses
    /// multicast and all-zero addresses.
    fn from_str(s: &str) -> Result<MacAddr, MacError> {
        let syntax = || MacError::Syntax(s.to_string());
        let sep = if s.contains('-') { '-' } else { ':' };
        let mut b = [0u8; 6];
        let mut parts = s.split(sep);
        for byte in &mut b {
            let p = parts.next().ok_or_else(syntax)?;
            if p.len() != 2 || !p.bytes().all(|c| c.is_ascii_hexdigit()) {
                return Err(syntax());
            }
            *byte = u8::from_str_radix(p, 16).map_err(|_| syntax())?;
        }
        if parts.next().is_some() {
            return Err(syntax());
        }
        let mac = MacAddr(b);
        if mac.is_multicast() {
            return Err(MacError::Multicast(mac.to_string()));
        }
        if b == [0; 6] {
            return Err(MacError::Zero(mac.to_string()));
        }
        Ok(mac)
    }
}

impl fmt::Display for MacAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let b = self.0;
        write!(
            f,
            "{:02x}:{:02x}:{:02x}:{:02x}:{:02x}:{:02x}",
            b[0], b[1], b[2], b[3], b[4], b[5]
        )
    }
}

impl fmt::Debug for MacAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "MacAddr({self})")
    }
}

/// Counters, shared with the worker.
#[derive(Debug, Default)]
pub struct Stats {
    /// Frames delivered to the guest.
    pub rx_packets: AtomicU64,
    /// Their bytes, headers excluded.
    pub rx_bytes: AtomicU64,
    /// Frames from the tap the guest did not get (too big for a
    /// non-mergeable buffer, malformed buffer, short read).
    pub rx_dropped: AtomicU64,
    /// Frames written to the tap.
    pub tx_packets: AtomicU64,
    /// Their bytes, headers excluded.
    pub tx_bytes: AtomicU64,
    /// Guest frames the tap refused (tap down, bad header).
    pub tx_dropped: AtomicU64,
    /// Malformed descriptor chains, either queue.
    pub bad_chains: AtomicU64,
    /// Times the worker woke up (tests check that it does not spin).
    pub wakeups: AtomicU64,
}

fn inc(c: &AtomicU64, n: u64) {
    c.fetch_add(n, Ordering::Relaxed);
}

/// A NIC's link: whether it has a carrier (`VIRTIO_NET_S_LINK_UP` in its
/// configuration space), shared by the device, its worker and whoever
/// changes it (the control socket's `set-link`). While the link is down
/// the device moves no frames either way, whatever the driver does, as
/// with a cable pulled out; the driver is told of each change by the
/// configuration interrupt.
pub struct Link {
    up: AtomicBool,
    notifier: super::ConfigNotifier,
}

impl Link {
    /// A link that starts up or down.
    pub fn new(up: bool) -> Link {
        Link {
            up: AtomicBool::new(up),
            notifier: super::ConfigNotifier::default(),
        }
    }

    /// Whether it has a carrier.
    pub fn is_up(&self) -> bool {
        self.up.load(Ordering::SeqCst)
    }

    /// Sets it; a change is signalled to an active driver. Returns whether
    /// it changed.
    pub fn set(&self, up: bool) -> io::Result<bool> {
        self.notifier.change(|| {
            let changed = self.up.swap(up, Ordering::SeqCst) != up;
            Ok((changed, changed))
        })
    }

    fn attach(&self, interrupt: Option<Arc<dyn Interrupt>>) {
        self.notifier.attach(interrupt);
    }
}

impl fmt::Debug for Link {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Link").field("up", &self.is_up()).finish()
    }
}

/// The virtio-net device.
#[derive(Debug)]
pub struct Net {
    tap: Arc<Tap>,
    mac: MacAddr,
    link: Arc<Link>,
    worker: Option<Worker>,
    stats: Arc<Stats>,
    /// The kernel's vhost-net, when it moves the frames.
    vhost: Option<Arc<vhost_net::Device>>,
    vhost_running: Option<VhostNet>,
}

/// Where a NIC's frames are moved (`--net ...,vhost=`). The default is the
/// VMM's own path: vhost-net is opt-in until it has been proven outside
/// nested emulation (docs/vmm.md, "vhost-net").
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum VhostMode {
    /// By the kernel's vhost-net where `/dev/vhost-net` opens, else by the
    /// VMM.
    Auto,
    /// By vhost-net; a NIC that cannot use it fails.
    On,
    /// By the VMM's worker thread.
    #[default]
    Off,
}

impl Net {
    /// A NIC on the existing tap `tap_name` (never created here) with
    /// address `mac`, or a random local one (see [`MacAddr::random`]).
    pub fn new(tap_name: &str, mac: Option<MacAddr>) -> io::Result<Net> {
        let tap = Tap::open(tap_name)?;
        let mac = match mac {
            Some(m) => m,
            None => MacAddr::random()?,
        };
        Ok(Net {
            tap: Arc::new(tap),
            mac,
            link: Arc::new(Link::new(true)),
            worker: None,
            stats: Arc::default(),
            vhost: None,
            vhost_running: None,
        })
    }

    /// [`Net::new`] with its frames moved as `mode` says. `On` fails here
    /// if `/dev/vhost-net` does not open.
    pub fn with_vhost(tap_name: &str, mac: Option<MacAddr>, mode: VhostMode) -> io::Result<Net> {
        let mut net = Net::new(tap_name, mac)?;
        net.vhost = match mode {
            VhostMode::Off => None,
            VhostMode::Auto => vhost_net::Device::open().ok(),
            VhostMode::On => Some(vhost_net::Device::open().map_err(|e| {
                io::Error::new(
                    e.kind(),
                    format!("tap {tap_name}: vhost=on: {}: {e}", vhost_net::DEVICE),
                )
            })?),
        }
        .map(Arc::new);
        Ok(net)
    }

    /// The guest's MAC address.
    pub fn mac(&self) -> MacAddr {
        self.mac
    }

    /// Its link, to change from outside ([`Link::set`]).
    pub fn link(&self) -> Arc<Link> {
        self.link.clone()
    }

    /// The tap's name.
    pub fn tap_name(&self) -> &str {
        self.tap.name()
    }

    /// The counters.
    pub fn stats(&self) -> &Stats {
        &self.stats
    }

    /// The configuration space: mac, status, max_virtqueue_pairs.
    fn config(&self) -> [u8; 10] {
        let mut c = [0u8; 10];
        c[..6].copy_from_slice(&self.mac.0);
        let status = if self.link.is_up() {
            VIRTIO_NET_S_LINK_UP as u16
        } else {
            0
        };
        c[6..8].copy_from_slice(&status.to_le_bytes());
        c[8..10].copy_from_slice(&1u16.to_le_bytes());
        c
    }
}

impl VirtioDevice for Net {
    fn device_type(&self) -> u32 {
        device_type::NET
    }

    fn name(&self) -> &'static str {
        "net"
    }

    fn queue_sizes(&self) -> Vec<u16> {
        vec![QUEUE_SIZE, QUEUE_SIZE]
    }

    fn features(&self) -> u64 {
        FEATURES
    }

    fn read_config(&self, offset: u64, data: &mut [u8]) {
        super::read_config_bytes(&self.config(), offset, data);
    }

    fn activate(
        &mut self,
        mem: GuestMemoryMmap,
        acked_features: u64,
        queues: Vec<ActiveQueue>,
        interrupt: Arc<dyn Interrupt>,
    ) -> io::Result<()> {
        self.reset();
        let mut rx = None;
        let mut tx = None;
        for q in queues {
            match q.index {
                RX_QUEUE => rx = Some(q),
                TX_QUEUE => tx = Some(q),
                _ => {}
            }
        }
        let (Some(rx), Some(tx)) = (rx, tx) else {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "virtio-net: the driver did not enable both the receive and the transmit queue",
            ));
        };
        self.tap.set_offload(tap::offload_flags(acked_features))?;
        self.link.attach(Some(interrupt.clone()));
        if let Some(device) = &self.vhost {
            let name = format!("vhost-{}", self.tap.name());
            self.vhost_running = Some(VhostNet::start(
                name,
                device,
                &mem,
                acked_features,
                &self.tap,
                vec![rx, tx],
                interrupt,
            )?);
            return Ok(());
        }

        let tap_poll = TapPoll::new(self.tap.as_raw_fd())?;
        // Chains the driver queued before activation: look at them at once.
        tx.kick.write(1)?;
        let fds = vec![
            rx.kick.as_raw_fd(),
            tx.kick.as_raw_fd(),
            tap_poll.epoll.as_raw_fd(),
        ];
        let mut state = NetWorker {
            mem,
            rx,
            tx,
            tap: self.tap.clone(),
            tap_poll,
            interrupt,
            link: self.link.clone(),
            stats: self.stats.clone(),
            mrg: acked_features & bit(VIRTIO_NET_F_MRG_RXBUF) != 0,
            rx_bufs: VecDeque::new(),
            rx_room: 0,
            rx_frame: vec![0; MAX_FRAME + 1],
            pending: None,
            rx_armed: true,
            tx_blocked: false,
            tap_dead: false,
            rx_used: false,
            tx_used: false,
        };
        state.update_tap_poll();
        let name = format!("net-{}", self.tap.name());
        self.worker = Some(Worker::spawn(name, fds, move |token| {
            state.handle(token);
            true
        })?);
        Ok(())
    }

    fn reset(&mut self) {
        // Dropping the worker stops its thread; dropping vhost-net detaches
        // the tap from it.
        self.worker = None;
        self.vhost_running = None;
        self.link.attach(None);
    }

    fn info(&self) -> serde_json::Value {
        let s = &self.stats;
        let get = |c: &AtomicU64| c.load(Ordering::Relaxed);
        serde_json::json!({
            "tap": self.tap.name(),
            "mac": self.mac.to_string(),
            // With vhost-net the kernel moves the frames: the counters
            // below stay at zero.
            "vhost": self.vhost.is_some(),
            "link": if self.link.is_up() { "up" } else { "down" },
            "rx_packets": get(&s.rx_packets),
            "rx_bytes": get(&s.rx_bytes),
            "rx_dropped": get(&s.rx_dropped),
            "tx_packets": get(&s.tx_packets),
            "tx_bytes": get(&s.tx_bytes),
            "tx_dropped": get(&s.tx_dropped),
            "bad_chains": get(&s.bad_chains),
        })
    }
}

/// The tap's registration in its own epoll set, whose fd the [`Worker`]
/// polls: that way the tap can be dropped from the set while the guest
/// has no receive buffer, and added back on the guest's kick.
struct TapPoll {
    epoll: Epoll,
    fd: RawFd,
    registered: Option<EventSet>,
}

impl TapPoll {
    fn new(fd: RawFd) -> io::Result<TapPoll> {
        Ok(TapPoll {
            epoll: Epoll::new()?,
            fd,
            registered: None,
        })
    }

    /// Polls the tap for `want` (nothing: not at all, so not even for
    /// errors).
    fn set(&mut self, want: EventSet) -> io::Result<()> {
        if self.registered == Some(want) || (want.is_empty() && self.registered.is_none()) {
            return Ok(());
        }
        let ev = EpollEvent::new(want, 0);
        if want.is_empty() {
            self.epoll.ctl(ControlOperation::Delete, self.fd, ev)?;
            self.registered = None;
        } else {
            let op = if self.registered.is_some() {
                ControlOperation::Modify
            } else {
                ControlOperation::Add
            };
            self.epoll.ctl(op, self.fd, ev)?;
            self.registered = Some(want);
        }
        Ok(())
    }
}

/// What happened to a frame offered to the guest.
enum Rx {
    /// It is in the guest's buffers.
    Delivered,
    /// No (or not enough) buffers: keep it and wait for a kick.
    NoBuffers,
    /// Lost: too big for a non-mergeable buffer, too big for the whole
    /// ring, or not a frame.
    Dropped,
    /// The tap has nothing to read (or failed for good).
    Empty,
}

/// A receive chain taken from the ring and checked, waiting for a frame:
/// its writable buffers as host segments.
struct RxBuf {
    head: u16,
    sg: sg::OwnedSg,
}

/// Everything the worker thread owns.
struct NetWorker {
    /// Guest memory; this clone keeps the mappings that the segments of
    /// `rx_bufs` point into alive.
    mem: GuestMemoryMmap,
    rx: ActiveQueue,
    tx: ActiveQueue,
    tap: Arc<Tap>,
    tap_poll: TapPoll,
    interrupt: Arc<dyn Interrupt>,
    link: Arc<Link>,
    stats: Arc<Stats>,
    /// VIRTIO_NET_F_MRG_RXBUF was acked: a frame may span several chains.
    mrg: bool,
    /// Receive chains popped and checked but not used yet, in ring order.
    rx_bufs: VecDeque<RxBuf>,
    /// Their total bytes.
    rx_room: usize,
    /// Where a frame goes that does not (yet) fit in the guest's buffers;
    /// one byte longer than the longest frame, so a frame that fills it is
    /// known to be truncated.
    rx_frame: Vec<u8>,
    /// The length of a frame in `rx_frame` that waits for guest buffers.
    pending: Option<usize>,
    /// The tap is polled for reading.
    rx_armed: bool,
    /// The tap refused a write with EAGAIN: poll it for writing.
    tx_blocked: bool,
    /// Reading the tap failed for good (the interface was deleted).
    tap_dead: bool,
    rx_used: bool,
    tx_used: bool,
}

impl NetWorker {
    fn handle(&mut self, token: usize) {
        inc(&self.stats.wakeups, 1);
        match token {
            0 => {
                drain(&self.rx.kick);
                self.on_rx_kick();
            }
            1 => {
                drain(&self.tx.kick);
                self.process_tx();
            }
            _ => {
                if self.tx_blocked {
                    self.process_tx();
                }
                if self.rx_armed {
                    self.process_rx();
                }
            }
        }
        self.signal();
    }

    /// Interrupts for the queues that got used buffers, if the driver
    /// wants them (with EVENT_IDX: if the used index passed its
    /// `used_event`).
    fn signal(&mut self) {
        if std::mem::take(&mut self.rx_used)
            && self.rx.queue.needs_notification(&self.mem).unwrap_or(true)
        {
            let _ = self.interrupt.queue(self.rx.index);
        }
        if std::mem::take(&mut self.tx_used)
            && self.tx.queue.needs_notification(&self.mem).unwrap_or(true)
        {
            let _ = self.interrupt.queue(self.tx.index);
        }
    }

    fn update_tap_poll(&mut self) {
        let mut want = EventSet::empty();
        if self.rx_armed && !self.tap_dead {
            want |= EventSet::IN;
        }
        if self.tx_blocked && !self.tap_dead {
            want |= EventSet::OUT;
        }
        if let Err(e) = self.tap_poll.set(want) {
            eprintln!("vmm: net {}: epoll: {e}", self.tap.name());
        }
    }

    /// Sends every available transmit chain to the tap, each in one
    /// `writev` straight from the guest's buffers, with the driver's
    /// notifications off meanwhile. Notifications go back on only when
    /// the ring is empty; while the tap is full they stay off and the tap
    /// is polled for writing instead.
    fn process_tx(&mut self) {
        if self.tx_blocked {
            self.tx_blocked = false;
            self.update_tap_poll();
        }
        loop {
            let _ = self.tx.queue.disable_notification(&self.mem);
            while let Some(chain) = self.tx.queue.pop_descriptor_chain(&self.mem) {
                let head = chain.head_index();
                let sent = match sg::chain_sg(&self.mem, chain) {
                    // No carrier: the frame goes nowhere.
                    Ok(_) if !self.link.is_up() => {
                        inc(&self.stats.tx_dropped, 1);
                        true
                    }
                    Ok(c) if (VNET_HDR_LEN..=MAX_FRAME).contains(&c.readable.len()) => loop {
                        match sg::writev(&*self.tap, &c.readable) {
                            Ok(_) => {
                                inc(&self.stats.tx_packets, 1);
                                inc(
                                    &self.stats.tx_bytes,
                                    (c.readable.len() - VNET_HDR_LEN) as u64,
                                );
                            }
                            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                            Err(e) if e.kind() == io::ErrorKind::WouldBlock => break false,
                            // Tap down (EIO) or a header the kernel refuses
                            // (EINVAL): the frame is lost, as on a real wire.
                            Err(_) => inc(&self.stats.tx_dropped, 1),
                        }
                        break true;
                    },
                    _ => {
                        inc(&self.stats.bad_chains, 1);
                        true
                    }
                };
                if !sent {
                    // The tap's queue is full: leave the chain available
                    // and wait until it takes more.
                    let prev = self.tx.queue.next_avail().wrapping_sub(1);
                    self.tx.queue.set_next_avail(prev);
                    self.tx_blocked = true;
                    self.update_tap_poll();
                    return;
                }
                // Transmit buffers are only read: the used length is 0. A
                // head index past the ring cannot be returned at all.
                if self.tx.queue.add_used(&self.mem, head, 0).is_ok() {
                    self.tx_used = true;
                }
            }
            match self.tx.queue.enable_notification(&self.mem) {
                Ok(true) => continue,
                _ => return,
            }
        }
    }

    /// The guest posted receive buffers: take them, deliver the waiting
    /// frame, then poll the tap again.
    fn on_rx_kick(&mut self) {
        // Buffers are taken as frames need them; the driver need not
        // notify again until the device runs out (see `take_rx_buffers`).
        let _ = self.rx.queue.disable_notification(&self.mem);
        if let Some(len) = self.pending {
            match self.deliver_copy(len) {
                Rx::NoBuffers => return,
                _ => self.pending = None,
            }
        }
        if !self.rx_armed {
            self.rx_armed = true;
            self.update_tap_poll();
        }
        self.process_rx();
    }

    /// Moves frames from the tap to the guest until the tap is empty, the
    /// guest has no buffers, or the batch is done.
    fn process_rx(&mut self) {
        if self.tap_dead {
            return;
        }
        for _ in 0..RX_BATCH {
            match self.receive() {
                Rx::Delivered | Rx::Dropped => {}
                Rx::Empty => return,
                Rx::NoBuffers => {
                    self.rx_armed = false;
                    self.update_tap_poll();
                    return;
                }
            }
        }
    }

    /// Pops receive chains until the buffers taken hold `want` bytes (one
    /// chain is enough without MRG_RXBUF) or the ring is empty. A
    /// malformed chain, or one with less than a header's room (virtio
    /// 5.1.6.3), goes back at once with length 0.
    fn take_rx_buffers(&mut self, want: usize) {
        let enough = |w: &NetWorker| {
            if w.mrg {
                w.rx_room >= want
            } else {
                !w.rx_bufs.is_empty()
            }
        };
        while !enough(self) {
            let Some(chain) = self.rx.queue.pop_descriptor_chain(&self.mem) else {
                return;
            };
            let head = chain.head_index();
            match sg::chain_sg(&self.mem, chain) {
                Ok(c) if c.writable.len() >= VNET_HDR_LEN => {
                    self.rx_room += c.writable.len();
                    self.rx_bufs.push_back(RxBuf {
                        head,
                        sg: c.writable.detach(),
                    });
                }
                _ => {
                    inc(&self.stats.bad_chains, 1);
                    if self.rx.queue.add_used(&self.mem, head, 0).is_ok() {
                        self.rx_used = true;
                    }
                }
            }
        }
    }

    /// [`NetWorker::take_rx_buffers`]; when the ring cannot provide
    /// `want`, notifications go back on, and the ring is looked at once
    /// more in case the driver added buffers before it saw that.
    fn take_rx_buffers_or_notify(&mut self, want: usize) {
        self.take_rx_buffers(want);
        let short = if self.mrg {
            self.rx_room < want
        } else {
            self.rx_bufs.is_empty()
        };
        if short
            && self
                .rx
                .queue
                .enable_notification(&self.mem)
                .unwrap_or(false)
        {
            let _ = self.rx.queue.disable_notification(&self.mem);
            self.take_rx_buffers(want);
        }
    }

    /// Reads one frame from the tap straight into the guest's buffers: one
    /// `readv` over the taken receive chains (enough for the longest frame
    /// with MRG_RXBUF, else the one chain), with `rx_frame` behind them
    /// for what does not fit. A frame that fits is delivered without a
    /// copy; one that spilled over waits in `rx_frame` (MRG_RXBUF: for
    /// more buffers) or is dropped (a single buffer too small).
    fn receive(&mut self) -> Rx {
        if !self.link.is_up() {
            return self.discard();
        }
        if let Some(len) = self.pending {
            return match self.deliver_copy(len) {
                Rx::NoBuffers => Rx::NoBuffers,
                r => {
                    self.pending = None;
                    r
                }
            };
        }
        // Room for a longest frame if the ring has it; notifications go
        // back on only when there is no buffer at all (or, below, when a
        // frame does not fit), not whenever less than that is posted.
        self.take_rx_buffers(MAX_FRAME);
        if self.rx_bufs.is_empty() {
            self.take_rx_buffers_or_notify(1);
        }
        if self.rx_bufs.is_empty() {
            // Leave the frame in the kernel until the guest posts buffers.
            return Rx::NoBuffers;
        }
        let mut iov: Vec<libc::iovec> = Vec::with_capacity(self.rx_bufs.len() * 2 + 1);
        let mut room = 0usize;
        for b in &self.rx_bufs {
            if room > MAX_FRAME {
                break;
            }
            // SAFETY: every buffer in `rx_bufs` was made from `self.mem`.
            unsafe { b.sg.attach(&self.mem) }.iovecs_into(&mut iov);
            room += b.sg.len();
            if !self.mrg {
                break;
            }
        }
        let spill = (MAX_FRAME + 1).saturating_sub(room);
        if spill > 0 {
            iov.push(libc::iovec {
                iov_base: self.rx_frame.as_mut_ptr().cast(),
                iov_len: spill,
            });
        }
        // SAFETY: `iov` holds the segments of buffers made from
        // `self.mem`, which is alive, and the spill area in `rx_frame`,
        // which nothing else touches during the call.
        let n = match unsafe { sg::readv(&*self.tap, &iov) } {
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => return Rx::Dropped,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Rx::Empty,
            Err(e) => return self.tap_failed(e),
        };
        if !(MIN_FRAME..=MAX_FRAME).contains(&n) {
            inc(&self.stats.rx_dropped, 1);
            return Rx::Dropped;
        }
        if n <= room {
            self.complete_rx(n, None);
            return Rx::Delivered;
        }
        if !self.mrg {
            // One buffer too small for the frame: drop the frame, keep
            // the buffer for the next one.
            inc(&self.stats.rx_dropped, 1);
            return Rx::Dropped;
        }
        // Not enough buffers for this frame: gather it into `rx_frame`
        // (its tail is already there) and let it wait.
        self.rx_frame.copy_within(..n - room, room);
        let mut off = 0;
        for b in &self.rx_bufs {
            if off == room {
                break;
            }
            let take = b.sg.len().min(room - off);
            // SAFETY: every buffer in `rx_bufs` was made from `self.mem`.
            let list = unsafe { b.sg.attach(&self.mem) };
            let _ = list.read_into(&mut self.rx_frame[off..off + take]);
            off += take;
        }
        self.pending = Some(n);
        match self.deliver_copy(n) {
            Rx::NoBuffers => Rx::NoBuffers,
            r => {
                self.pending = None;
                r
            }
        }
    }

    /// With the link down: a frame read from the tap is lost (and one
    /// that waited for buffers with it), so that the tap's queue does not
    /// fill with frames the guest would get late.
    fn discard(&mut self) -> Rx {
        if self.pending.take().is_some() {
            inc(&self.stats.rx_dropped, 1);
        }
        let iov = [libc::iovec {
            iov_base: self.rx_frame.as_mut_ptr().cast(),
            iov_len: self.rx_frame.len(),
        }];
        // SAFETY: the one segment is `rx_frame`, held mutably here.
        match unsafe { sg::readv(&*self.tap, &iov) } {
            Ok(_) => {
                inc(&self.stats.rx_dropped, 1);
                Rx::Dropped
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => Rx::Dropped,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => Rx::Empty,
            Err(e) => self.tap_failed(e),
        }
    }

    /// Reading the tap failed for good (the interface was deleted): it is
    /// polled no more.
    fn tap_failed(&mut self, e: io::Error) -> Rx {
        eprintln!(
            "vmm: net {}: reading the tap: {e}; receive stopped",
            self.tap.name()
        );
        self.tap_dead = true;
        self.update_tap_poll();
        Rx::Empty
    }

    /// Returns the first buffers that hold `n` bytes of frame (already in
    /// them, or copied from `frame`) as used, with `num_buffers` in the
    /// header.
    fn complete_rx(&mut self, n: usize, frame: Option<&[u8]>) {
        let mut left = n;
        let mut count = 0usize;
        for b in &self.rx_bufs {
            if left == 0 {
                break;
            }
            left -= left.min(b.sg.len());
            count += 1;
        }
        let num_buffers = (count as u16).to_le_bytes();
        let mut off = 0;
        for i in 0..count {
            let Some(b) = self.rx_bufs.pop_front() else {
                break;
            };
            self.rx_room -= b.sg.len();
            let take = b.sg.len().min(n - off);
            // SAFETY: every buffer in `rx_bufs` was made from `self.mem`.
            let list = unsafe { b.sg.attach(&self.mem) };
            let written = match frame {
                Some(f) => list.write_at(0, &f[off..off + take]).is_ok(),
                None => true,
            };
            if i == 0 {
                let _ = list.write_at(NUM_BUFFERS_OFFSET, &num_buffers);
            }
            off += take;
            let len = if written { take as u32 } else { 0 };
            let _ = self.rx.queue.add_used(&self.mem, b.head, len);
        }
        self.rx_used = true;
        inc(&self.stats.rx_packets, 1);
        inc(&self.stats.rx_bytes, (n - VNET_HDR_LEN) as u64);
    }

    /// Copies the frame waiting in `rx_frame[..len]` into receive buffers.
    fn deliver_copy(&mut self, len: usize) -> Rx {
        self.take_rx_buffers_or_notify(len);
        if self.mrg {
            if self.rx_room < len {
                if self.rx_bufs.len() >= usize::from(self.rx.queue.size()) {
                    // A whole ring of tiny buffers cannot hold it, and
                    // waiting would stop receive for good.
                    inc(&self.stats.rx_dropped, 1);
                    return Rx::Dropped;
                }
                return Rx::NoBuffers;
            }
        } else {
            match self.rx_bufs.front() {
                None => return Rx::NoBuffers,
                Some(b) if b.sg.len() < len => {
                    inc(&self.stats.rx_dropped, 1);
                    return Rx::Dropped;
                }
                Some(_) => {}
            }
        }
        let frame = std::mem::take(&mut self.rx_frame);
        self.complete_rx(len, Some(&frame[..len]));
        self.rx_frame = frame;
        Rx::Delivered
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;
    use std::sync::atomic::AtomicUsize;
    use std::time::{Duration, Instant};

    use virtio_bindings::virtio_net::{VIRTIO_NET_HDR_F_NEEDS_CSUM, VIRTIO_NET_HDR_GSO_TCPV4};
    use virtio_bindings::virtio_ring::{VRING_DESC_F_NEXT, VRING_DESC_F_WRITE};
    use virtio_queue::desc::split::Descriptor as SplitDescriptor;
    use virtio_queue::desc::RawDescriptor;
    use virtio_queue::mock::MockSplitQueue;
    use virtio_queue::Queue;
    use vm_memory::{Bytes, GuestAddress};
    use vmm_sys_util::eventfd::EventFd;

    use super::super::tap::testutil::{private_netns, unique_name, PacketSocket, TestTap};
    use super::*;

    const MEM_SIZE: usize = 8 << 20;
    const TIMEOUT: Duration = Duration::from_secs(5);
    const ETHERTYPE: [u8; 2] = [0x88, 0xb5];

    #[derive(Default)]
    struct CountIrq {
        rx: AtomicUsize,
        tx: AtomicUsize,
        config: AtomicUsize,
    }

    impl Interrupt for CountIrq {
        fn queue(&self, index: u16) -> io::Result<()> {
            match index {
                RX_QUEUE => &self.rx,
                _ => &self.tx,
            }
            .fetch_add(1, Ordering::SeqCst);
            Ok(())
        }
        fn config(&self) -> io::Result<()> {
            self.config.fetch_add(1, Ordering::SeqCst);
            Ok(())
        }
    }

    fn memory() -> GuestMemoryMmap {
        GuestMemoryMmap::from_ranges(&[(GuestAddress(0), MEM_SIZE)]).unwrap()
    }

    /// The guest side of one queue.
    struct Driver<'a> {
        mem: &'a GuestMemoryMmap,
        q: MockSplitQueue<'a, GuestMemoryMmap>,
        kick: EventFd,
        next_desc: u16,
        seen: u16,
        /// Head index → buffer address, for receive chains.
        bufs: HashMap<u16, u64>,
        /// Where the next buffer is carved from.
        next_addr: u64,
    }

    impl<'a> Driver<'a> {
        fn new(mem: &'a GuestMemoryMmap, ring: u64, buffers: u64) -> Driver<'a> {
            Driver {
                mem,
                q: MockSplitQueue::create(mem, GuestAddress(ring), QUEUE_SIZE),
                kick: EventFd::new(libc::EFD_NONBLOCK).unwrap(),
                next_desc: 0,
                seen: 0,
                bufs: HashMap::new(),
                next_addr: buffers,
            }
        }

        fn active(&self, index: u16) -> ActiveQueue {
            ActiveQueue {
                index,
                queue: self.q.create_queue::<Queue>().unwrap(),
                kick: self.kick.try_clone().unwrap(),
            }
        }

        /// The queue with VIRTIO_RING_F_EVENT_IDX on, as the transport
        /// sets it when the driver acked the feature.
        fn active_event_idx(&self, index: u16) -> ActiveQueue {
            let mut a = self.active(index);
            a.queue.set_event_idx(true);
            a
        }

        /// The driver's `used_event` (after the available ring).
        fn set_used_event(&self, v: u16) {
            let at = self.q.avail_addr().0 + 4 + 2 * u64::from(QUEUE_SIZE);
            self.mem.write_obj(v, GuestAddress(at)).unwrap();
        }

        /// The device's `avail_event` (after the used ring).
        fn avail_event(&self) -> u16 {
            let at = self.q.used_addr().0 + 4 + 8 * u64::from(QUEUE_SIZE);
            self.mem.read_obj(GuestAddress(at)).unwrap()
        }

        /// Puts `descs` (with their own flags and next fields) in the
        /// table at the next free indices; the first is the head.
        fn add_raw(&mut self, descs: &[RawDescriptor]) -> u16 {
            let head = self.next_desc;
            self.q.add_desc_chains(descs, head).unwrap();
            self.next_desc += descs.len() as u16;
            head
        }

        /// A chain of (addr, len, writable) descriptors linked in order.
        fn add(&mut self, descs: &[(u64, u32, bool)]) -> u16 {
            let base = self.next_desc;
            let raw: Vec<RawDescriptor> = descs
                .iter()
                .enumerate()
                .map(|(i, &(addr, len, w))| {
                    let mut flags = if w { VRING_DESC_F_WRITE as u16 } else { 0 };
                    let mut next = 0;
                    if i + 1 < descs.len() {
                        flags |= VRING_DESC_F_NEXT as u16;
                        next = base + i as u16 + 1;
                    }
                    RawDescriptor::from(SplitDescriptor::new(addr, len, flags, next))
                })
                .collect();
            self.add_raw(&raw)
        }

        /// A transmit chain holding `bytes`, split at `split` over two
        /// descriptors.
        fn add_tx(&mut self, bytes: &[u8], split: usize) -> u16 {
            let a = self.next_addr;
            self.mem.write_slice(bytes, GuestAddress(a)).unwrap();
            self.next_addr += (bytes.len() as u64 + 0xfff) & !0xfff;
            let (x, y) = (split as u32, (bytes.len() - split) as u32);
            self.add(&[(a, x, false), (a + u64::from(x), y, false)])
        }

        /// `n` receive buffers of `size` bytes, one descriptor each.
        fn add_rx(&mut self, n: usize, size: u32) {
            for _ in 0..n {
                let a = self.next_addr;
                self.next_addr += (u64::from(size) + 0xfff) & !0xfff;
                let head = self.add(&[(a, size, true)]);
                self.bufs.insert(head, a);
            }
        }

        fn notify(&self) {
            self.kick.write(1).unwrap();
        }

        fn used_idx(&self) -> u16 {
            self.q.used().idx().load()
        }

        /// The next used element, waiting for it.
        fn next_used(&mut self, timeout: Duration) -> Option<(u16, u32)> {
            let deadline = Instant::now() + timeout;
            while self.used_idx() == self.seen {
                if Instant::now() > deadline {
                    return None;
                }
                std::thread::sleep(Duration::from_millis(2));
            }
            let e = self
                .q
                .used()
                .ring()
                .ref_at(usize::from(self.seen % QUEUE_SIZE))
                .unwrap()
                .load();
            self.seen = self.seen.wrapping_add(1);
            Some((e.id() as u16, e.len()))
        }

        /// The next received packet: (num_buffers, header, frame, used
        /// lengths of its buffers).
        fn recv(&mut self, timeout: Duration) -> Option<Packet> {
            let (id, len) = self.next_used(timeout)?;
            let mut data = self.read_buf(id, len);
            assert!(data.len() >= VNET_HDR_LEN, "short buffer {len}");
            let n = u16::from_le_bytes([data[10], data[11]]);
            let mut lens = vec![len];
            for _ in 1..n {
                let (id, len) = self.next_used(timeout).expect("rest of a merged packet");
                data.extend(self.read_buf(id, len));
                lens.push(len);
            }
            let frame = data.split_off(VNET_HDR_LEN);
            Some(Packet {
                num_buffers: n,
                hdr: data,
                frame,
                lens,
            })
        }

        /// The next received packet that carries `marker`, skipping any
        /// other traffic the kernel sends on the tap.
        fn recv_marked(&mut self, marker: &[u8]) -> Packet {
            let deadline = Instant::now() + TIMEOUT;
            loop {
                let left = deadline.saturating_duration_since(Instant::now());
                let p = self.recv(left).unwrap_or_else(|| {
                    panic!(
                        "no packet with {marker:?}\nDEBUG {}",
                        std::fs::read_to_string("/proc/thread-self/net/dev").unwrap_or_default()
                    )
                });
                if contains(&p.frame, marker) {
                    return p;
                }
            }
        }

        fn read_buf(&self, id: u16, len: u32) -> Vec<u8> {
            let addr = self.bufs[&id];
            let mut v = vec![0u8; len as usize];
            self.mem.read_slice(&mut v, GuestAddress(addr)).unwrap();
            v
        }
    }

    struct Packet {
        num_buffers: u16,
        hdr: Vec<u8>,
        frame: Vec<u8>,
        lens: Vec<u32>,
    }

    fn contains(hay: &[u8], needle: &[u8]) -> bool {
        hay.windows(needle.len()).any(|w| w == needle)
    }

    /// An Ethernet frame to `dst` of our test ethertype carrying `marker`,
    /// padded to `len` bytes.
    fn frame(dst: [u8; 6], marker: &[u8], len: usize) -> Vec<u8> {
        let mut f = Vec::with_capacity(len);
        f.extend_from_slice(&dst);
        f.extend_from_slice(&[0x02, 0, 0, 0, 0, 0xaa]);
        f.extend_from_slice(&ETHERTYPE);
        f.extend_from_slice(marker);
        f.resize(len.max(f.len()), 0x5a);
        f
    }

    /// A test tap, still down, without IPv6 chatter.
    fn lab(prefix: &str) -> TestTap {
        private_netns();
        let t = TestTap::tap(&unique_name(prefix));
        // Best effort: fewer router solicitations and MLD reports on the
        // tap the tests read from.
        let _ = std::fs::write(
            format!("/proc/sys/net/ipv6/conf/{}/disable_ipv6", t.name),
            "1",
        );
        t
    }

    /// The device on tap `t`, then the tap brought up (see
    /// [`TestTap::set_up`] for why in this order), and a packet socket on
    /// it (bound once it is up: binding to a down interface fails sends).
    fn open_net(t: &TestTap, mac: Option<MacAddr>) -> (Net, PacketSocket) {
        let net = Net::new(&t.name, mac).unwrap();
        t.set_up();
        (net, PacketSocket::bind(t.index()))
    }

    fn wait_for(what: &str, mut f: impl FnMut() -> bool) {
        let deadline = Instant::now() + TIMEOUT;
        while !f() {
            assert!(Instant::now() < deadline, "timed out waiting for {what}");
            std::thread::sleep(Duration::from_millis(2));
        }
    }

    const ALL: u64 = FEATURES;
    const NO_MRG: u64 = FEATURES & !bit(VIRTIO_NET_F_MRG_RXBUF);

    fn activate(
        net: &mut Net,
        mem: &GuestMemoryMmap,
        rx: &Driver<'_>,
        tx: &Driver<'_>,
        acked: u64,
    ) -> Arc<CountIrq> {
        let irq = Arc::new(CountIrq::default());
        net.activate(
            mem.clone(),
            acked,
            vec![rx.active(RX_QUEUE), tx.active(TX_QUEUE)],
            irq.clone(),
        )
        .unwrap();
        irq
    }

    #[test]
    fn mac_addresses_parse_print_and_generate() {
        let m: MacAddr = "52:54:00:12:34:56".parse().unwrap();
        assert_eq!(m.0, [0x52, 0x54, 0x00, 0x12, 0x34, 0x56]);
        assert_eq!(m.to_string(), "52:54:00:12:34:56");
        let m: MacAddr = "BC-24-11-AB-cd-EF".parse().unwrap();
        assert_eq!(m.to_string(), "bc:24:11:ab:cd:ef");
        for bad in [
            "",
            "52:54:00:12:34",
            "52:54:00:12:34:56:78",
            "52:54:00:12:34:5",
            "52:54:00:12:34:567",
            "52:54:00:12:34:zz",
            "52:54-00:12:34:56",
            "+2:54:00:12:34:56",
        ] {
            assert!(
                matches!(bad.parse::<MacAddr>(), Err(MacError::Syntax(_))),
                "{bad}"
            );
        }
        assert!(matches!(
            "01:00:5e:00:00:01".parse::<MacAddr>(),
            Err(MacError::Multicast(_))
        ));
        assert!(matches!(
            "ff:ff:ff:ff:ff:ff".parse::<MacAddr>(),
            Err(MacError::Multicast(_))
        ));
        assert!(matches!(
            "00:00:00:00:00:00".parse::<MacAddr>(),
            Err(MacError::Zero(_))
        ));

        let a = MacAddr::random().unwrap();
        let b = MacAddr::random().unwrap();
        assert_eq!(a.0[0], 0x02, "locally administered unicast: {a}");
        assert_ne!(a, b);
        assert_eq!(a.to_string().parse::<MacAddr>().unwrap(), a);
    }

    #[test]
    fn a_missing_tap_is_refused_by_name() {
        private_netns();
        let name = unique_name("oxnone");
        let e = Net::new(&name, None).unwrap_err();
        assert_eq!(e.to_string(), format!("tap {name}: No such device"));
    }

    #[test]
    fn features_config_and_info() {
        let t = lab("oxcfg");
        let mac: MacAddr = "52:54:00:12:34:56".parse().unwrap();
        let (net, _sock) = open_net(&t, Some(mac));
        assert_eq!(net.device_type(), 1);
        assert_eq!(net.queue_sizes(), [256, 256]);
        let f = net.features();
        for b in [
            VIRTIO_NET_F_CSUM,
            VIRTIO_NET_F_GUEST_CSUM,
            VIRTIO_NET_F_MAC,
            VIRTIO_NET_F_GUEST_TSO4,
            VIRTIO_NET_F_GUEST_TSO6,
            VIRTIO_NET_F_HOST_TSO4,
            VIRTIO_NET_F_HOST_TSO6,
            VIRTIO_NET_F_MRG_RXBUF,
            VIRTIO_NET_F_STATUS,
        ] {
            assert!(f & bit(b) != 0, "feature {b}");
        }
        assert!(f & VIRTIO_F_VERSION_1 != 0);
        // No control queue, no multiqueue.
        assert_eq!(f & (bit(17) | bit(22)), 0);

        let mut c = [0xffu8; 12];
        net.read_config(0, &mut c);
        assert_eq!(c, [0x52, 0x54, 0, 0x12, 0x34, 0x56, 1, 0, 1, 0, 0, 0]);
        let mut c = [0u8; 2];
        net.read_config(6, &mut c);
        assert_eq!(u16::from_le_bytes(c), VIRTIO_NET_S_LINK_UP as u16);
        net.read_config(u64::MAX, &mut c);
        assert_eq!(c, [0, 0]);

        let i = net.info();
        assert_eq!(i["tap"], t.name.as_str());
        assert_eq!(i["mac"], "52:54:00:12:34:56");
        assert_eq!(net.tap_name(), t.name);

        let random = Net::new(&unique_name("oxno"), None);
        assert!(random.is_err());
    }

    #[test]
    fn transmit_reaches_the_tap() {
        let t = lab("oxtx");
        let mem = memory();
        let mut rx = Driver::new(&mem, 0, 0x10_0000);
        let mut tx = Driver::new(&mem, 0x1_0000, 0x40_0000);
        let (mut net, sock) = open_net(&t, None);
        let irq = activate(&mut net, &mem, &rx, &tx, ALL);
        rx.add_rx(4, 2048);
        rx.notify();

        let f = frame([0xff; 6], b"oxbow-tx-1", 200);
        let mut bytes = vec![0u8; VNET_HDR_LEN];
        bytes.extend_from_slice(&f);
        // Split inside the frame, so the two descriptors are gathered.
        let head = tx.add_tx(&bytes, VNET_HDR_LEN + 30);
        tx.notify();

        assert_eq!(tx.next_used(TIMEOUT), Some((head, 0)));
        let got = sock
            .recv_matching(TIMEOUT, |p| contains(p, b"oxbow-tx-1"))
            .expect("the frame on the tap");
        assert_eq!(got, f);
        wait_for("tx interrupt", || irq.tx.load(Ordering::SeqCst) >= 1);
        assert_eq!(net.stats().tx_packets.load(Ordering::SeqCst), 1);
        assert_eq!(net.stats().tx_bytes.load(Ordering::SeqCst), 200);

        // A batch of frames in one kick, including a checksum-offload one.
        let mut heads = Vec::new();
        for i in 0..10u8 {
            let mut b = vec![0u8; VNET_HDR_LEN];
            if i == 9 {
                // NEEDS_CSUM: csum_start 14 + 20, offset 6 (a UDP checksum).
                b[0] = 1;
                b[6..8].copy_from_slice(&34u16.to_le_bytes());
                b[8..10].copy_from_slice(&6u16.to_le_bytes());
            }
            b.extend(frame([0xff; 6], &[b'b', b'a', b't', i], 100));
            heads.push(tx.add_tx(&b, VNET_HDR_LEN));
        }
        tx.notify();
        for h in heads {
            assert_eq!(tx.next_used(TIMEOUT), Some((h, 0)));
        }
        for i in 0..10u8 {
            sock.recv_matching(TIMEOUT, |p| contains(p, &[b'b', b'a', b't', i]))
                .unwrap_or_else(|| panic!("frame {i}"));
        }
        assert_eq!(net.stats().tx_packets.load(Ordering::SeqCst), 11);
        assert_eq!(net.stats().bad_chains.load(Ordering::SeqCst), 0);
        net.reset();
    }

    /// A NIC whose link is down reads as such, moves no frame either
    /// way, and tells the driver when the link comes up, after which
    /// frames flow again.
    #[test]
    fn a_link_down_moves_nothing_and_its_changes_are_signalled() {
        let t = lab("oxlnk");
        let mem = memory();
        let mut rx = Driver::new(&mem, 0, 0x10_0000);
        let mut tx = Driver::new(&mem, 0x1_0000, 0x40_0000);
        let mac: MacAddr = "52:54:00:00:00:07".parse().unwrap();
        let (mut net, sock) = open_net(&t, Some(mac));
        let link = net.link();
        assert!(!link.set(true).unwrap(), "already up");
        assert!(link.set(false).unwrap());
        let status = |net: &Net| {
            let mut c = [0u8; 2];
            net.read_config(6, &mut c);
            u16::from_le_bytes(c)
        };
        assert_eq!(status(&net), 0);
        assert_eq!(net.info()["link"], "down");
        let irq = activate(&mut net, &mem, &rx, &tx, ALL);
        rx.add_rx(16, 2048);
        rx.notify();

        // The guest sends anyway: the chain is used, the frame is lost.
        let mut bytes = vec![0u8; VNET_HDR_LEN];
        bytes.extend(frame([0xff; 6], b"oxbow-lnk-tx-down", 120));
        let head = tx.add_tx(&bytes, VNET_HDR_LEN);
        tx.notify();
        assert_eq!(tx.next_used(TIMEOUT), Some((head, 0)));
        assert!(sock
            .recv_matching(Duration::from_millis(300), |p| contains(
                p,
                b"oxbow-lnk-tx-down"
            ))
            .is_none());
        assert_eq!(net.stats().tx_dropped.load(Ordering::SeqCst), 1);
        assert_eq!(net.stats().tx_packets.load(Ordering::SeqCst), 0);
        // A frame for the guest is read and dropped.
        sock.send(&frame(mac.0, b"oxbow-lnk-rx-down", 120));
        wait_for("the frame dropped", || {
            net.stats().rx_dropped.load(Ordering::SeqCst) >= 1
        });
        assert_eq!(net.stats().rx_packets.load(Ordering::SeqCst), 0);
        assert_eq!(irq.config.load(Ordering::SeqCst), 0);

        // Plugged in: one configuration interrupt, the status reads up,
        // and frames go both ways.
        assert!(link.set(true).unwrap());
        assert_eq!(irq.config.load(Ordering::SeqCst), 1);
        assert_eq!(status(&net), VIRTIO_NET_S_LINK_UP as u16);
        sock.send(&frame(mac.0, b"oxbow-lnk-rx-up", 120));
        let p = rx.recv_marked(b"oxbow-lnk-rx-up");
        assert!(contains(&p.frame, b"oxbow-lnk-rx-up"));
        let mut bytes = vec![0u8; VNET_HDR_LEN];
        bytes.extend(frame([0xff; 6], b"oxbow-lnk-tx-up", 120));
        let head = tx.add_tx(&bytes, VNET_HDR_LEN);
        tx.notify();
        assert_eq!(tx.next_used(TIMEOUT), Some((head, 0)));
        sock.recv_matching(TIMEOUT, |p| contains(p, b"oxbow-lnk-tx-up"))
            .expect("the frame on the tap once the link is up");
        // Down again, signalled again; after a reset nothing is signalled.
        assert!(link.set(false).unwrap());
        assert_eq!(irq.config.load(Ordering::SeqCst), 2);
        net.reset();
        assert!(link.set(true).unwrap());
        assert_eq!(irq.config.load(Ordering::SeqCst), 2);
    }

    #[test]
    fn receive_lands_in_a_guest_buffer_with_its_header() {
        let t = lab("oxrx");
        let mem = memory();
        let mut rx = Driver::new(&mem, 0, 0x10_0000);
        let tx = Driver::new(&mem, 0x1_0000, 0x40_0000);
        let mac: MacAddr = "52:54:00:00:00:01".parse().unwrap();
        let (mut net, sock) = open_net(&t, Some(mac));
        let irq = activate(&mut net, &mem, &rx, &tx, ALL);
        rx.add_rx(16, 2048);
        rx.notify();

        let f = frame(mac.0, b"oxbow-rx-1", 300);
        sock.send(&f);
        let p = rx.recv_marked(b"oxbow-rx-1");
        assert_eq!(p.frame, f);
        assert_eq!(p.num_buffers, 1);
        // No checksum or segmentation work for the guest, one buffer.
        assert_eq!(p.hdr, [0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1, 0]);
        assert_eq!(p.lens, [(VNET_HDR_LEN + 300) as u32]);
        wait_for("rx interrupt", || irq.rx.load(Ordering::SeqCst) >= 1);
        assert!(net.stats().rx_packets.load(Ordering::SeqCst) >= 1);
        net.reset();
    }

    #[test]
    fn a_frame_spans_mergeable_buffers() {
        let t = lab("oxmrg");
        let mem = memory();
        let mut rx = Driver::new(&mem, 0, 0x10_0000);
        let tx = Driver::new(&mem, 0x1_0000, 0x40_0000);
        let (mut net, sock) = open_net(&t, None);
        let _irq = activate(&mut net, &mem, &rx, &tx, ALL);
        rx.add_rx(32, 64);
        rx.notify();

        let f = frame([0xff; 6], b"oxbow-mrg", 300);
        sock.send(&f);
        let p = rx.recv_marked(b"oxbow-mrg");
        assert_eq!(p.frame, f);
        // 312 bytes in 64-byte buffers.
        assert_eq!(p.num_buffers, 5);
        assert_eq!(p.lens, [64, 64, 64, 64, 56]);
        net.reset();
    }

    #[test]
    fn without_mergeable_buffers_a_frame_needs_one_big_enough_buffer() {
        let t = lab("oxnom");
        let mem = memory();
        let mut rx = Driver::new(&mem, 0, 0x10_0000);
        let tx = Driver::new(&mem, 0x1_0000, 0x40_0000);
        let (mut net, sock) = open_net(&t, None);
        let _irq = activate(&mut net, &mem, &rx, &tx, NO_MRG);
        // One 100-byte buffer: a 300-byte frame is dropped, the buffer
        // stays for the next frame, which fits.
        rx.add_rx(1, 100);
        rx.notify();
        sock.send(&frame([0xff; 6], b"oxbow-big", 300));
        wait_for("the big frame dropped", || {
            net.stats().rx_dropped.load(Ordering::SeqCst) >= 1
        });
        assert_eq!(rx.used_idx(), 0);
        let f = frame([0xff; 6], b"oxbow-small", 60);
        sock.send(&f);
        let p = rx.recv_marked(b"oxbow-small");
        assert_eq!(p.frame, f);
        assert_eq!(p.num_buffers, 1);
        net.reset();
    }

    /// An IPv4/TCP frame with `payload` bytes of payload (starting with
    /// `marker`), its TCP checksum left for offload.
    fn tcp_frame(marker: &[u8], payload: usize) -> Vec<u8> {
        let mut f = vec![0xff; 6];
        f.extend_from_slice(&[0x02, 0, 0, 0, 0, 0xaa, 0x08, 0x00]);
        let total = (20 + 20 + payload) as u16;
        let mut ip = vec![0x45, 0];
        ip.extend_from_slice(&total.to_be_bytes());
        ip.extend_from_slice(&[0, 1, 0x40, 0, 64, 6, 0, 0, 10, 0, 0, 1, 10, 0, 0, 2]);
        let mut sum = 0u32;
        for w in ip.chunks(2) {
            sum += u32::from(u16::from_be_bytes([w[0], w[1]]));
        }
        while sum > 0xffff {
            sum = (sum & 0xffff) + (sum >> 16);
        }
        ip[10..12].copy_from_slice(&(!(sum as u16)).to_be_bytes());
        f.extend(ip);
        // Ports 1234 → 5678, seq 1, ACK|PSH, window 65535.
        f.extend_from_slice(&[0x04, 0xd2, 0x16, 0x2e, 0, 0, 0, 1, 0, 0, 0, 0, 0x50, 0x18]);
        f.extend_from_slice(&[0xff, 0xff, 0, 0, 0, 0]);
        let start = f.len();
        f.extend_from_slice(marker);
        f.resize(start + payload, 0x5a);
        f
    }

    #[test]
    fn guest_offloads_decide_what_the_tap_hands_over() {
        // The kernel hands over a 3000-byte TCP segment with a partial
        // checksum: as is to a guest that acked GUEST_CSUM and GUEST_TSO4,
        // as three checksummed 1000-byte segments to one that did not.
        let segment = |hdr: &[u8]| hdr[1] == VIRTIO_NET_HDR_GSO_TCPV4 as u8;
        for (acked, want) in [(ALL, 1usize), (ALL & !bit(VIRTIO_NET_F_GUEST_CSUM), 3)] {
            let t = lab("oxtso");
            let mem = memory();
            let mut rx = Driver::new(&mem, 0, 0x10_0000);
            let tx = Driver::new(&mem, 0x1_0000, 0x40_0000);
            let (mut net, sock) = open_net(&t, None);
            let _irq = activate(&mut net, &mem, &rx, &tx, acked);
            rx.add_rx(64, 4096);
            rx.notify();

            // NEEDS_CSUM, TCPV4, hdr_len 54, gso_size 1000, csum at 34+16.
            let mut vh = [0u8; 10];
            vh[0] = VIRTIO_NET_HDR_F_NEEDS_CSUM as u8;
            vh[1] = VIRTIO_NET_HDR_GSO_TCPV4 as u8;
            vh[2..4].copy_from_slice(&54u16.to_le_bytes());
            vh[4..6].copy_from_slice(&1000u16.to_le_bytes());
            vh[6..8].copy_from_slice(&34u16.to_le_bytes());
            vh[8..10].copy_from_slice(&16u16.to_le_bytes());
            sock.send_with_vnet_hdr(&vh, &tcp_frame(b"oxbow-tso", 3000));

            let first = rx.recv_marked(b"oxbow-tso");
            let mut got = vec![first];
            while got.len() < want {
                got.push(rx.recv(TIMEOUT).expect("the other segments"));
            }
            let payload: usize = got.iter().map(|p| p.frame.len() - 54).sum();
            assert_eq!(payload, 3000);
            if want == 1 {
                let h = &got[0].hdr;
                assert!(segment(h), "{h:?}");
                assert_eq!(h[0] & VIRTIO_NET_HDR_F_NEEDS_CSUM as u8, 1, "{h:?}");
                assert_eq!(u16::from_le_bytes([h[4], h[5]]), 1000, "{h:?}");
                assert_eq!(u16::from_le_bytes([h[6], h[7]]), 34, "{h:?}");
                assert_eq!(u16::from_le_bytes([h[8], h[9]]), 16, "{h:?}");
                // 3054 bytes in 4 KiB buffers: one buffer.
                assert_eq!(got[0].num_buffers, 1);
            } else {
                for p in &got {
                    assert!(!segment(&p.hdr), "{:?}", p.hdr);
                    assert_eq!(p.hdr[0] & VIRTIO_NET_HDR_F_NEEDS_CSUM as u8, 0);
                    assert_eq!(p.frame.len(), 1054);
                }
            }
            net.reset();
        }
    }

    #[test]
    fn event_idx_suppresses_interrupts_and_kicks() {
        let t = lab("oxevidx");
        let mem = memory();
        let mut rx = Driver::new(&mem, 0, 0x10_0000);
        let mut tx = Driver::new(&mem, 0x1_0000, 0x40_0000);
        let (mut net, sock) = open_net(&t, None);
        let irq = Arc::new(CountIrq::default());
        // The driver polls transmit completions (used_event far ahead) and
        // wants an interrupt for the first received frame.
        tx.set_used_event(1000);
        rx.set_used_event(0);
        net.activate(
            mem.clone(),
            ALL,
            vec![rx.active_event_idx(RX_QUEUE), tx.active_event_idx(TX_QUEUE)],
            irq.clone(),
        )
        .unwrap();
        rx.add_rx(1, 2048);
        rx.notify();

        let mut heads = Vec::new();
        for i in 0..5u8 {
            let mut b = vec![0u8; VNET_HDR_LEN];
            b.extend(frame([0xff; 6], &[b'e', b'v', i], 80));
            heads.push(tx.add_tx(&b, VNET_HDR_LEN));
        }
        tx.notify();
        for h in heads {
            assert_eq!(tx.next_used(TIMEOUT), Some((h, 0)));
        }
        for i in 0..5u8 {
            sock.recv_matching(TIMEOUT, |p| contains(p, &[b'e', b'v', i]))
                .unwrap_or_else(|| panic!("frame {i}"));
        }
        // All five went out without a transmit interrupt, and the device
        // asks to be notified at the next available entry.
        wait_for("tx avail_event", || tx.avail_event() == 5);
        assert_eq!(irq.tx.load(Ordering::SeqCst), 0);

        // The one receive buffer takes the first frame; the device does
        // not ask for kicks while it has buffers.
        let f = frame([0xff; 6], b"oxbow-evidx-rx", 100);
        sock.send(&f);
        let p = rx.recv_marked(b"oxbow-evidx-rx");
        assert_eq!(p.frame, f);
        wait_for("rx interrupt", || irq.rx.load(Ordering::SeqCst) >= 1);
        // The next frame finds no buffer: now it asks for a kick at the
        // next available entry, and the frame waits in the tap.
        let g = frame([0xff; 6], b"oxbow-evidx-rx2", 100);
        sock.send(&g);
        wait_for("rx avail_event", || rx.avail_event() == 1);
        rx.add_rx(1, 2048);
        rx.notify();
        let p = rx.recv_marked(b"oxbow-evidx-rx2");
        assert_eq!(p.frame, g);
        net.reset();
    }

    #[test]
    fn a_frame_larger_than_the_posted_buffers_waits_for_more() {
        let t = lab("oxspill");
        let mem = memory();
        let mut rx = Driver::new(&mem, 0, 0x10_0000);
        let tx = Driver::new(&mem, 0x1_0000, 0x40_0000);
        let (mut net, sock) = open_net(&t, None);
        let _irq = activate(&mut net, &mem, &rx, &tx, ALL);
        // Two 64-byte buffers cannot hold 312 bytes: the frame is read
        // into them and the spill area, then kept.
        rx.add_rx(2, 64);
        rx.notify();
        let f = frame([0xff; 6], b"oxbow-spill", 300);
        sock.send(&f);
        wait_for("the frame read and kept", || {
            net.stats().wakeups.load(Ordering::SeqCst) >= 2
        });
        std::thread::sleep(Duration::from_millis(100));
        assert_eq!(rx.used_idx(), 0);
        rx.add_rx(3, 64);
        rx.notify();
        let p = rx.recv_marked(b"oxbow-spill");
        assert_eq!(p.frame, f);
        assert_eq!(p.num_buffers, 5);
        assert_eq!(p.lens, [64, 64, 64, 64, 56]);
        assert_eq!(net.stats().rx_dropped.load(Ordering::SeqCst), 0);
        net.reset();
    }

    #[test]
    fn a_frame_waits_for_buffers_without_spinning() {
        let t = lab("oxwait");
        let mem = memory();
        let mut rx = Driver::new(&mem, 0, 0x10_0000);
        let tx = Driver::new(&mem, 0x1_0000, 0x40_0000);
        let (mut net, sock) = open_net(&t, None);
        let _irq = activate(&mut net, &mem, &rx, &tx, ALL);

        let f = frame([0xff; 6], b"oxbow-wait", 80);
        sock.send(&f);
        // The frame is read from the tap, finds no buffer and waits; the
        // worker stops polling the tap instead of spinning on it.
        std::thread::sleep(Duration::from_millis(300));
        let wakeups = net.stats().wakeups.load(Ordering::SeqCst);
        assert!(wakeups < 20, "{wakeups} wakeups with no receive buffer");
        assert_eq!(rx.used_idx(), 0);

        rx.add_rx(8, 2048);
        rx.notify();
        let p = rx.recv_marked(b"oxbow-wait");
        assert_eq!(p.frame, f);
        assert_eq!(net.stats().rx_dropped.load(Ordering::SeqCst), 0);
        net.reset();
    }

    #[test]
    fn malformed_transmit_chains_fail_alone() {
        let t = lab("oxbadtx");
        let mem = memory();
        let rx = Driver::new(&mem, 0, 0x10_0000);
        let mut tx = Driver::new(&mem, 0x1_0000, 0x40_0000);
        let (mut net, sock) = open_net(&t, None);
        let _irq = activate(&mut net, &mem, &rx, &tx, ALL);
        let buf = 0x20_0000u64;
        let d = |addr: u64, len: u32, flags: u32, next: u16| {
            RawDescriptor::from(SplitDescriptor::new(addr, len, flags as u16, next))
        };

        let mut bad = vec![
            // Outside guest memory.
            tx.add(&[(0x1_0000_0000, 100, false)]),
            // Straddling the end of guest memory.
            tx.add(&[(MEM_SIZE as u64 - 50, 100, false)]),
            // A huge length.
            tx.add(&[(buf, u32::MAX, false)]),
            // Inside memory, but longer than any frame.
            tx.add(&[(buf, 0x10000, false), (buf, 0x10000, false)]),
            // Shorter than the header.
            tx.add(&[(buf, 4, false)]),
        ];
        // A descriptor that points at itself.
        let i = tx.next_desc;
        bad.push(tx.add_raw(&[d(buf, 64, VRING_DESC_F_NEXT, i)]));
        // A loop over two descriptors.
        let i = tx.next_desc;
        bad.push(tx.add_raw(&[
            d(buf, 64, VRING_DESC_F_NEXT, i + 1),
            d(buf, 64, VRING_DESC_F_NEXT, i),
        ]));
        // A next index past the table.
        bad.push(tx.add_raw(&[d(buf, 64, VRING_DESC_F_NEXT, 999)]));
        // Then a good frame: the device carries on.
        let mut good = vec![0u8; VNET_HDR_LEN];
        good.extend(frame([0xff; 6], b"oxbow-after-bad", 64));
        let good_head = tx.add_tx(&good, VNET_HDR_LEN);
        tx.notify();

        for h in &bad {
            assert_eq!(tx.next_used(TIMEOUT), Some((*h, 0)));
        }
        assert_eq!(tx.next_used(TIMEOUT), Some((good_head, 0)));
        sock.recv_matching(TIMEOUT, |p| contains(p, b"oxbow-after-bad"))
            .expect("the good frame after the bad ones");
        assert_eq!(
            net.stats().bad_chains.load(Ordering::SeqCst),
            bad.len() as u64
        );
        assert_eq!(net.stats().tx_packets.load(Ordering::SeqCst), 1);
        net.reset();
    }

    #[test]
    fn a_head_index_past_the_ring_is_skipped() {
        let t = lab("oxhead");
        let mem = memory();
        let rx = Driver::new(&mem, 0, 0x10_0000);
        let mut tx = Driver::new(&mem, 0x1_0000, 0x40_0000);
        let (mut net, sock) = open_net(&t, None);
        let _irq = activate(&mut net, &mem, &rx, &tx, ALL);
        // An avail ring entry naming descriptor 300 of 256.
        let avail = tx.q.avail();
        let idx = avail.idx().load();
        avail
            .ring()
            .ref_at(usize::from(idx % QUEUE_SIZE))
            .unwrap()
            .store(300);
        avail.idx().store(idx + 1);
        let mut good = vec![0u8; VNET_HDR_LEN];
        good.extend(frame([0xff; 6], b"oxbow-head", 64));
        let h = tx.add_tx(&good, VNET_HDR_LEN);
        tx.notify();
        assert_eq!(tx.next_used(TIMEOUT), Some((h, 0)));
        sock.recv_matching(TIMEOUT, |p| contains(p, b"oxbow-head"))
            .expect("the good frame");
        assert_eq!(net.stats().bad_chains.load(Ordering::SeqCst), 1);
        net.reset();
    }

    #[test]
    fn malformed_receive_chains_are_returned_empty() {
        let t = lab("oxbadrx");
        let mem = memory();
        let mut rx = Driver::new(&mem, 0, 0x10_0000);
        let tx = Driver::new(&mem, 0x1_0000, 0x40_0000);
        let (mut net, sock) = open_net(&t, None);
        let _irq = activate(&mut net, &mem, &rx, &tx, ALL);
        let buf = 0x30_0000u64;
        let d = |addr: u64, len: u32, flags: u32, next: u16| {
            RawDescriptor::from(SplitDescriptor::new(addr, len, flags as u16, next))
        };
        let mut bad = vec![
            rx.add(&[(0x1_0000_0000, 2048, true)]),
            rx.add(&[(buf, u32::MAX, true)]),
            // Device-readable only: nowhere to write.
            rx.add(&[(buf, 2048, false)]),
            // Smaller than a header.
            rx.add(&[(buf, 8, true)]),
        ];
        let i = rx.next_desc;
        bad.push(rx.add_raw(&[d(buf, 2048, VRING_DESC_F_NEXT | VRING_DESC_F_WRITE, i)]));
        rx.add_rx(8, 2048);
        rx.notify();

        let f = frame([0xff; 6], b"oxbow-rx-after-bad", 100);
        sock.send(&f);
        for h in &bad {
            assert_eq!(rx.next_used(TIMEOUT), Some((*h, 0)));
        }
        let p = rx.recv_marked(b"oxbow-rx-after-bad");
        assert_eq!(p.frame, f);
        assert_eq!(
            net.stats().bad_chains.load(Ordering::SeqCst),
            bad.len() as u64
        );
        net.reset();
    }

    #[test]
    fn reset_stops_the_worker_and_a_new_activation_works() {
        let t = lab("oxreset");
        let mem = memory();
        let (mut net, sock) = open_net(&t, None);
        {
            let rx = Driver::new(&mem, 0, 0x10_0000);
            let tx = Driver::new(&mem, 0x1_0000, 0x40_0000);
            let _irq = activate(&mut net, &mem, &rx, &tx, ALL);
        }
        net.reset();
        // Nobody reads the tap now: the frame waits in the kernel.
        let f = frame([0xff; 6], b"oxbow-after-reset", 70);
        sock.send(&f);
        std::thread::sleep(Duration::from_millis(100));
        assert_eq!(net.stats().rx_packets.load(Ordering::SeqCst), 0);

        // The driver sets the device up again, with other rings.
        let mut rx = Driver::new(&mem, 0x2_0000, 0x50_0000);
        let mut tx = Driver::new(&mem, 0x3_0000, 0x60_0000);
        let _irq = activate(&mut net, &mem, &rx, &tx, NO_MRG);
        rx.add_rx(8, 2048);
        rx.notify();
        let p = rx.recv_marked(b"oxbow-after-reset");
        assert_eq!(p.frame, f);
        let mut b = vec![0u8; VNET_HDR_LEN];
        b.extend(frame([0xff; 6], b"oxbow-tx-again", 64));
        let h = tx.add_tx(&b, 5);
        tx.notify();
        assert_eq!(tx.next_used(TIMEOUT), Some((h, 0)));
        sock.recv_matching(TIMEOUT, |p| contains(p, b"oxbow-tx-again"))
            .expect("transmit after reactivation");
        net.reset();
        net.reset();
    }

    #[test]
    fn activation_needs_both_queues() {
        let t = lab("oxq");
        let mem = memory();
        let rx = Driver::new(&mem, 0, 0x10_0000);
        let (mut net, _sock) = open_net(&t, None);
        let e = net
            .activate(
                mem.clone(),
                ALL,
                vec![rx.active(RX_QUEUE)],
                Arc::new(CountIrq::default()),
            )
            .unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::InvalidInput);
    }
}
