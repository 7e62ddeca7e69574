//! The virtio 1.0 PCI transport ("modern" only) with MSI-X.
//!
//! BAR 0 (64-bit, 32 KiB) holds every register block:
//!
//! ```text
//! 0x0000  common configuration (virtio_pci_common_cfg)
//! 0x1000  ISR status (read clears)
//! 0x2000  device configuration
//! 0x3000  notifications: queue n at 0x3000 + 4 n (KVM ioeventfds)
//! 0x4000  MSI-X table (16 bytes per vector)
//! 0x5000  MSI-X pending bits
//! ```

use std::os::fd::AsRawFd;
use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::Arc;

use kvm_ioctls::{IoEventAddress, NoDatamatch};
use virtio_queue::{Queue, QueueT};
use vm_memory::{GuestAddress, GuestMemoryMmap};
use vmm_sys_util::eventfd::EventFd;

use super::{ActiveQueue, Interrupt, VirtioDevice};
use crate::irq::{MsiMessage, MsiRouter};
use crate::pci::{PciConfig, PciDevice};

/// BAR 0's size.
pub const BAR_SIZE: u64 = 0x8000;
const COMMON: u64 = 0x0000;
const COMMON_LEN: u64 = 0x38;
const ISR: u64 = 0x1000;
const DEVICE_CFG: u64 = 0x2000;
const DEVICE_CFG_LEN: u64 = 0x1000;
const NOTIFY: u64 = 0x3000;
const NOTIFY_MULTIPLIER: u32 = 4;
const MSIX_TABLE: u64 = 0x4000;
const MSIX_PBA: u64 = 0x5000;

/// "No vector" in the MSI-X vector registers.
pub const NO_VECTOR: u16 = 0xffff;

/// Device status bits.
mod status {
    pub const ACKNOWLEDGE: u8 = 1;
    pub const DRIVER: u8 = 2;
    pub const DRIVER_OK: u8 = 4;
    pub const FEATURES_OK: u8 = 8;
    pub const FAILED: u8 = 0x80;
}

#[derive(Debug, Clone, Copy, Default)]
struct MsixEntry {
    addr: u64,
    data: u32,
    masked: bool,
}

/// MSI-X state as the guest programmed it: the table and the
/// capability's enable and function-mask bits. Whether a vector is pending
/// lives in its eventfd (see [`Vector`]).
#[derive(Debug)]
pub struct Msix {
    entries: Vec<MsixEntry>,
    enabled: bool,
    function_masked: bool,
}

impl Msix {
    fn new(n: usize) -> Msix {
        Msix {
            entries: vec![
                MsixEntry {
                    masked: true,
                    ..Default::default()
                };
                n
            ],
            enabled: false,
            function_masked: false,
        }
    }

    /// The message vector `i` sends now, or `None` while it may not
    /// interrupt (MSI-X off, the function or the entry masked).
    fn deliverable(&self, i: usize) -> Option<MsiMessage> {
        let e = self.entries.get(i)?;
        (self.enabled && !self.function_masked && !e.masked).then_some(MsiMessage {
            addr: e.addr,
            data: e.data,
        })
    }

    fn raw(&self, i: usize) -> Option<[u8; 16]> {
        let e = self.entries.get(i)?;
        let mut raw = [0u8; 16];
        raw[0..8].copy_from_slice(&e.addr.to_le_bytes());
        raw[8..12].copy_from_slice(&e.data.to_le_bytes());
        raw[12..16].copy_from_slice(&u32::from(e.masked).to_le_bytes());
        Some(raw)
    }

    fn table_read(&self, off: u64, data: &mut [u8]) {
        let (i, field) = ((off / 16) as usize, off % 16);
        match self.raw(i) {
            Some(raw) => super::read_config_bytes(&raw, field, data),
            None => data.fill(0),
        }
    }

    /// A table write; returns the entry it changed.
    fn table_write(&mut self, off: u64, data: &[u8]) -> Option<usize> {
        let (i, field) = ((off / 16) as usize, (off % 16) as usize);
        let mut raw = self.raw(i)?;
        let end = (field + data.len()).min(16);
        raw[field..end].copy_from_slice(&data[..end - field]);
        let e = self.entries.get_mut(i)?;
        e.addr = u64::from_le_bytes(raw[0..8].try_into().unwrap_or_default());
        e.data = u32::from_le_bytes(raw[8..12].try_into().unwrap_or_default());
        e.masked = raw[12] & 1 != 0;
        Some(i)
    }
}

/// One MSI-X vector: an eventfd KVM turns into the vector's message
/// through an irqfd on its own GSI. The irqfd is attached only while the
/// vector may interrupt; while it is masked, a raise just counts in the
/// eventfd, which is the pending bit, delivered when it is unmasked.
#[derive(Debug)]
struct Vector {
    gsi: u32,
    fd: Arc<EventFd>,
    /// The message KVM's route for `gsi` carries, once set.
    route: Option<MsiMessage>,
    attached: bool,
}

impl Vector {
    /// Brings the route and the irqfd in line with `want`, the message
    /// the vector sends now (`None` while it may not interrupt): the route
    /// carries the message once it may, and the irqfd is attached exactly
    /// while it may. A raise counted while it was masked is delivered on
    /// attaching.
    fn sync(&mut self, want: Option<MsiMessage>, router: &MsiRouter) -> std::io::Result<()> {
        let Some(msg) = want else {
            if self.attached {
                self.attached = false;
                router
                    .vm()
                    .unregister_irqfd(&self.fd, self.gsi)
                    .map_err(|e| crate::irq::kvm_error("detach an irqfd", e))?;
            }
            return Ok(());
        };
        if self.route != Some(msg) {
            router.set(self.gsi, msg)?;
            self.route = Some(msg);
        }
        if !self.attached {
            let pending = self.fd.read().is_ok();
            router
                .vm()
                .register_irqfd(&self.fd, self.gsi)
                .map_err(|e| crate::irq::kvm_error("attach an irqfd", e))?;
            self.attached = true;
            if pending {
                self.fd.write(1)?;
            }
        }
        Ok(())
    }

    fn pending(&self) -> bool {
        let mut p = libc::pollfd {
            fd: self.fd.as_raw_fd(),
            events: libc::POLLIN,
            revents: 0,
        };
        // SAFETY: one valid pollfd, no timeout.
        unsafe { libc::poll(&mut p, 1, 0) == 1 && p.revents & libc::POLLIN != 0 }
    }
}

/// Where a device's interrupts go.
pub struct PciInterrupt {
    isr: Arc<AtomicU8>,
    /// The common configuration's `config_generation`, which every
    /// configuration change moves on, so that a driver reading a field
    /// wider than one access (a disk's 64-bit capacity) reads it again.
    generation: Arc<AtomicU8>,
    queue_vectors: Vec<Option<Arc<EventFd>>>,
    config_vector: Option<Arc<EventFd>>,
}

impl std::fmt::Debug for PciInterrupt {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PciInterrupt").finish_non_exhaustive()
    }
}

impl PciInterrupt {
    fn queue_vector(&self, index: u16) -> Option<&Arc<EventFd>> {
        self.queue_vectors.get(usize::from(index))?.as_ref()
    }

    fn send(&self, vector: Option<&Arc<EventFd>>, isr_bit: u8) -> std::io::Result<()> {
        self.isr.fetch_or(isr_bit, Ordering::SeqCst);
        match vector {
            Some(fd) => fd.write(1),
            None => Ok(()),
        }
    }
}

impl Interrupt for PciInterrupt {
    fn queue(&self, index: u16) -> std::io::Result<()> {
        self.send(self.queue_vector(index), 1)
    }
    fn config(&self) -> std::io::Result<()> {
        self.generation.fetch_add(1, Ordering::SeqCst);
        self.send(self.config_vector.as_ref(), 2)
    }
    fn queue_eventfd(&self, index: u16) -> Option<EventFd> {
        self.queue_vector(index)?.try_clone().ok()
    }
}

struct QueueRegs {
    size: u16,
    max: u16,
    vector: u16,
    enabled: bool,
    desc: u64,
    avail: u64,
    used: u64,
    kick: EventFd,
}

/// A virtio device on PCI.
pub struct VirtioPci {
    config: PciConfig,
    device: Box<dyn VirtioDevice>,
    router: Arc<MsiRouter>,
    mem: GuestMemoryMmap,
    msix: Msix,
    vectors: Vec<Vector>,
    msix_cap: usize,
    isr: Arc<AtomicU8>,
    queues: Vec<QueueRegs>,
    device_feature_select: u32,
    driver_feature_select: u32,
    driver_features: u64,
    status: u8,
    config_generation: Arc<AtomicU8>,
    config_vector: u16,
    queue_select: u16,
    active: bool,
    notify_base: u64,
}

impl std::fmt::Debug for VirtioPci {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("VirtioPci")
            .field("device", &self.device.name())
            .field("status", &self.status)
            .finish()
    }
}

fn vendor_cap(cfg_type: u8, offset: u64, length: u64, extra: Option<u32>) -> Vec<u8> {
    // After id and next: cap_len, cfg_type, bar, id, padding[2], offset, length.
    let len = if extra.is_some() { 20u8 } else { 16u8 };
    let mut b = vec![len, cfg_type, 0, 0, 0, 0];
    b.extend_from_slice(&(offset as u32).to_le_bytes());
    b.extend_from_slice(&(length as u32).to_le_bytes());
    if let Some(x) = extra {
        b.extend_from_slice(&x.to_le_bytes());
    }
    b
}

impl VirtioPci {
    /// Wraps `device`, with BAR 0 at `bar_addr`, registering one ioeventfd
    /// per queue with KVM and taking a GSI from `router` for each MSI-X
    /// vector.
    pub fn new(
        device: Box<dyn VirtioDevice>,
        router: Arc<MsiRouter>,
        mem: GuestMemoryMmap,
        bar_addr: u64,
    ) -> std::io::Result<VirtioPci> {
        let vm = router.vm();
        let ty = device.device_type();
        let class = match ty {
            super::device_type::NET => 0x02_0000,
            super::device_type::BLOCK => 0x01_8000,
            _ => 0xff_0000,
        };
        let mut config = PciConfig::new(0x1af4, 0x1040 + ty as u16, class, 1, (0x1af4, 0x40));
        config.add_bar64(0, bar_addr, BAR_SIZE);
        let nq = device.queue_sizes().len();
        config.add_capability(0x09, &vendor_cap(1, COMMON, COMMON_LEN, None), &[]);
        config.add_capability(0x09, &vendor_cap(3, ISR, 4, None), &[]);
        config.add_capability(
            0x09,
            &vendor_cap(2, NOTIFY, 0x1000, Some(NOTIFY_MULTIPLIER)),
            &[],
        );
        config.add_capability(0x09, &vendor_cap(4, DEVICE_CFG, DEVICE_CFG_LEN, None), &[]);
        let vectors = nq + 1;
        let mut msix_body = Vec::new();
        msix_body.extend_from_slice(&((vectors - 1) as u16).to_le_bytes());
        msix_body.extend_from_slice(&(MSIX_TABLE as u32).to_le_bytes());
        msix_body.extend_from_slice(&(MSIX_PBA as u32).to_le_bytes());
        let msix_cap = config.add_capability(0x11, &msix_body, &[0, 0xc0]);
        let mut msi_vectors = Vec::with_capacity(vectors);
        for _ in 0..vectors {
            msi_vectors.push(Vector {
                gsi: router.allocate()?,
                fd: Arc::new(EventFd::new(libc::EFD_NONBLOCK)?),
                route: None,
                attached: false,
            });
        }

        let mut queues = Vec::new();
        for (i, max) in device.queue_sizes().into_iter().enumerate() {
            let kick = EventFd::new(libc::EFD_NONBLOCK)?;
            let addr = bar_addr + NOTIFY + i as u64 * u64::from(NOTIFY_MULTIPLIER);
            vm.register_ioevent(&kick, &IoEventAddress::Mmio(addr), NoDatamatch)
                .map_err(|e| std::io::Error::from_raw_os_error(e.errno()))?;
            queues.push(QueueRegs {
                size: max,
                max,
                vector: NO_VECTOR,
                enabled: false,
                desc: 0,
                avail: 0,
                used: 0,
                kick,
            });
        }
        Ok(VirtioPci {
            config,
            device,
            router,
            mem,
            msix: Msix::new(vectors),
            vectors: msi_vectors,
            msix_cap,
            isr: Arc::new(AtomicU8::new(0)),
            queues,
            device_feature_select: 0,
            driver_feature_select: 0,
            driver_features: 0,
            status: 0,
            config_generation: Arc::new(AtomicU8::new(0)),
            config_vector: NO_VECTOR,
            queue_select: 0,
            active: false,
            notify_base: bar_addr + NOTIFY,
        })
    }

    /// The device's `info`.
    pub fn device_info(&self) -> serde_json::Value {
        let mut v = self.device.info();
        if let Some(o) = v.as_object_mut() {
            o.insert("type".into(), self.device.name().into());
            o.insert("status".into(), self.status.into());
            o.insert("active".into(), self.active.into());
        }
        v
    }

    fn reset(&mut self) {
        if self.active {
            self.device.reset();
            self.active = false;
        }
        self.status = 0;
        self.driver_features = 0;
        self.config_vector = NO_VECTOR;
        self.queue_select = 0;
        self.isr.store(0, Ordering::SeqCst);
        for q in &mut self.queues {
            q.size = q.max;
            q.vector = NO_VECTOR;
            q.enabled = false;
            q.desc = 0;
            q.avail = 0;
            q.used = 0;
        }
    }

    fn activate(&mut self) {
        let mut active = Vec::new();
        for (i, r) in self.queues.iter().enumerate() {
            if !r.enabled {
                continue;
            }
            let Ok(mut q) = Queue::new(r.max) else {
                continue;
            };
            q.set_size(r.size);
            q.set_desc_table_address(Some(r.desc as u32), Some((r.desc >> 32) as u32));
            q.set_avail_ring_address(Some(r.avail as u32), Some((r.avail >> 32) as u32));
            q.set_used_ring_address(Some(r.used as u32), Some((r.used >> 32) as u32));
            q.set_ready(true);
            q.set_event_idx(self.driver_features & super::VIRTIO_RING_F_EVENT_IDX != 0);
            if !q.is_valid(&self.mem) {
                self.status |= status::FAILED;
                return;
            }
            let Ok(kick) = r.kick.try_clone() else {
                self.status |= status::FAILED;
                return;
            };
            active.push(ActiveQueue {
                index: i as u16,
                queue: q,
                kick,
            });
        }
        let fd = |v: u16| self.vectors.get(usize::from(v)).map(|v| v.fd.clone());
        let irq = Arc::new(PciInterrupt {
            isr: self.isr.clone(),
            generation: self.config_generation.clone(),
            queue_vectors: self.queues.iter().map(|q| fd(q.vector)).collect(),
            config_vector: fd(self.config_vector),
        });
        match self
            .device
            .activate(self.mem.clone(), self.driver_features, active, irq)
        {
            Ok(()) => self.active = true,
            Err(_) => self.status |= status::FAILED,
        }
    }

    fn common_read(&self, off: u64, data: &mut [u8]) {
        let q = self.queues.get(usize::from(self.queue_select));
        let features = self.device.features();
        let mut raw = [0u8; COMMON_LEN as usize];
        let dfs = if self.device_feature_select < 2 {
            (features >> (32 * self.device_feature_select)) as u32
        } else {
            0
        };
        raw[0..4].copy_from_slice(&self.device_feature_select.to_le_bytes());
        raw[4..8].copy_from_slice(&dfs.to_le_bytes());
        raw[8..12].copy_from_slice(&self.driver_feature_select.to_le_bytes());
        let drf = if self.driver_feature_select < 2 {
            (self.driver_features >> (32 * self.driver_feature_select)) as u32
        } else {
            0
        };
        raw[12..16].copy_from_slice(&drf.to_le_bytes());
        raw[16..18].copy_from_slice(&self.config_vector.to_le_bytes());
        raw[18..20].copy_from_slice(&(self.queues.len() as u16).to_le_bytes());
        raw[20] = self.status;
        raw[21] = self.config_generation.load(Ordering::SeqCst);
        raw[22..24].copy_from_slice(&self.queue_select.to_le_bytes());
        if let Some(q) = q {
            raw[24..26].copy_from_slice(&q.size.to_le_bytes());
            raw[26..28].copy_from_slice(&q.vector.to_le_bytes());
            raw[28..30].copy_from_slice(&u16::from(q.enabled).to_le_bytes());
            raw[30..32].copy_from_slice(&self.queue_select.to_le_bytes());
            raw[32..40].copy_from_slice(&q.desc.to_le_bytes());
            raw[40..48].copy_from_slice(&q.avail.to_le_bytes());
            raw[48..56].copy_from_slice(&q.used.to_le_bytes());
        }
        super::read_config_bytes(&raw, off, data);
    }

    fn common_write(&mut self, off: u64, data: &[u8]) {
        let mut b = [0u8; 8];
        let n = data.len().min(8);
        b[..n].copy_from_slice(&data[..n]);
        let v32 = u32::from_le_bytes(b[0..4].try_into().unwrap_or_default());
        let v16 = v32 as u16;
        let sel = usize::from(self.queue_select);
        // Queue registers may only change before DRIVER_OK.
        let q_writable = self.status & status::DRIVER_OK == 0;
        let set64 = |cur: &mut u64, half_hi: bool, v: u32, whole: Option<u64>| match whole {
            Some(w) => *cur = w,
            None if half_hi => *cur = (*cur & 0xffff_ffff) | (u64::from(v) << 32),
            None => *cur = (*cur & !0xffff_ffff) | u64::from(v),
        };
        let whole = (data.len() == 8).then(|| u64::from_le_bytes(b));
        match off {
            0x00 => self.device_feature_select = v32,
            0x08 => self.driver_feature_select = v32,
            0x0c if self.status & status::FEATURES_OK == 0 => match self.driver_feature_select {
                0 => self.driver_features = (self.driver_features & !0xffff_ffff) | u64::from(v32),
                1 => {
                    self.driver_features =
                        (self.driver_features & 0xffff_ffff) | (u64::from(v32) << 32)
                }
                _ => {}
            },
            0x10 => self.config_vector = v16,
            0x14 => self.write_status(data.first().copied().unwrap_or(0)),
            0x16 => self.queue_select = v16,
            0x18 if q_writable => {
                if let Some(q) = self.queues.get_mut(sel) {
                    if v16.is_power_of_two() && v16 <= q.max {
                        q.size = v16;
                    }
                }
            }
            0x1a => {
                if let Some(q) = self.queues.get_mut(sel) {
                    q.vector = v16;
                }
            }
            0x1c if q_writable => {
                if let Some(q) = self.queues.get_mut(sel) {
                    q.enabled = v16 == 1;
                }
            }
            0x20 | 0x24 if q_writable => {
                if let Some(q) = self.queues.get_mut(sel) {
                    set64(&mut q.desc, off == 0x24, v32, whole);
                }
            }
            0x28 | 0x2c if q_writable => {
                if let Some(q) = self.queues.get_mut(sel) {
                    set64(&mut q.avail, off == 0x2c, v32, whole);
                }
            }
            0x30 | 0x34 if q_writable => {
                if let Some(q) = self.queues.get_mut(sel) {
                    set64(&mut q.used, off == 0x34, v32, whole);
                }
            }
            _ => {}
        }
    }

    fn write_status(&mut self, v: u8) {
        if v == 0 {
            self.reset();
            return;
        }
        let mut v = v;
        if v & status::FEATURES_OK != 0 && self.status & status::FEATURES_OK == 0 {
            // The driver may only accept what the device offered.
            if self.driver_features & !self.device.features() != 0 {
                v &= !status::FEATURES_OK;
            }
        }
        let was_ok = self.status & status::DRIVER_OK != 0;
        self.status = v;
        let need = status::ACKNOWLEDGE | status::DRIVER | status::FEATURES_OK | status::DRIVER_OK;
        if !was_ok && v & need == need && !self.active {
            self.activate();
        }
    }

    /// Brings vector `i` in line with the MSI-X state ([`Vector::sync`]).
    fn sync_vector(&mut self, i: usize) {
        let want = self.msix.deliverable(i);
        let Some(v) = self.vectors.get_mut(i) else {
            return;
        };
        if let Err(e) = v.sync(want, &self.router) {
            eprintln!(
                "vmm: virtio-{} MSI-X vector {i} (GSI {}): {e}",
                self.device.name(),
                v.gsi
            );
        }
    }

    fn pba_read(&self, off: u64, data: &mut [u8]) {
        let mut bits = vec![0u8; self.vectors.len().div_ceil(64) * 8];
        for (i, v) in self.vectors.iter().enumerate() {
            if !v.attached && v.pending() {
                bits[i / 8] |= 1 << (i % 8);
            }
        }
        super::read_config_bytes(&bits, off, data);
    }

    /// Re-registers the queue notifications after the guest moved BAR 0.
    fn bar_moved(&mut self) {
        let Some(bar) = self.config.bars().into_iter().find(|b| b.index == 0) else {
            return;
        };
        let base = bar.addr + NOTIFY;
        if base == self.notify_base || bar.addr == 0 || bar.addr >= u64::MAX - BAR_SIZE {
            return;
        }
        for (i, q) in self.queues.iter().enumerate() {
            let step = i as u64 * u64::from(NOTIFY_MULTIPLIER);
            let _ = self.router.vm().unregister_ioevent(
                &q.kick,
                &IoEventAddress::Mmio(self.notify_base + step),
                NoDatamatch,
            );
            let _ = self.router.vm().register_ioevent(
                &q.kick,
                &IoEventAddress::Mmio(base + step),
                NoDatamatch,
            );
        }
        self.notify_base = base;
    }

    /// The raw fds KVM signals for this device's queues (for tests).
    pub fn kick_fds(&self) -> Vec<i32> {
        self.queues.iter().map(|q| q.kick.as_raw_fd()).collect()
    }
}

impl PciDevice for VirtioPci {
    fn config(&self) -> &PciConfig {
        &self.config
    }

    fn config_write(&mut self, off: usize, data: &[u8]) {
        self.config.write(off, data);
        if (0x10..0x18).contains(&off) {
            // Only act once the high half is written too (or a sizing
            // probe ends): compare against the current registration.
            let bar = self.config.bars().into_iter().find(|b| b.index == 0);
            if let Some(b) = bar {
                if b.addr % BAR_SIZE == 0 && b.addr + BAR_SIZE <= (1 << 46) {
                    self.bar_moved();
                }
            }
        }
        let ctl = self.msix_cap + 3;
        if (off..off + data.len()).contains(&ctl) {
            let c = self.config.bytes_mut()[ctl];
            self.msix.enabled = c & 0x80 != 0;
            self.msix.function_masked = c & 0x40 != 0;
            for i in 0..self.vectors.len() {
                self.sync_vector(i);
            }
        }
    }

    fn bar_read(&mut self, _bar: usize, offset: u64, data: &mut [u8]) {
        match offset {
            o if o < COMMON + COMMON_LEN => self.common_read(o - COMMON, data),
            o if (ISR..ISR + 4).contains(&o) => {
                data.fill(0);
                if o == ISR {
                    data[0] = self.isr.swap(0, Ordering::SeqCst);
                }
            }
            o if (DEVICE_CFG..DEVICE_CFG + DEVICE_CFG_LEN).contains(&o) => {
                self.device.read_config(o - DEVICE_CFG, data)
            }
            o if (MSIX_TABLE..MSIX_PBA).contains(&o) => self.msix.table_read(o - MSIX_TABLE, data),
            o if (MSIX_PBA..BAR_SIZE).contains(&o) => self.pba_read(o - MSIX_PBA, data),
            _ => data.fill(0),
        }
    }

    fn bar_write(&mut self, _bar: usize, offset: u64, data: &[u8]) {
        match offset {
            o if o < COMMON + COMMON_LEN => self.common_write(o - COMMON, data),
            o if (DEVICE_CFG..DEVICE_CFG + DEVICE_CFG_LEN).contains(&o) => {
                self.device.write_config(o - DEVICE_CFG, data)
            }
            o if (NOTIFY..NOTIFY + 0x1000).contains(&o) => {
                // Normally caught by the ioeventfd; a notification that
                // reaches us anyway (e.g. a wider write) is forwarded.
                let i = ((o - NOTIFY) / u64::from(NOTIFY_MULTIPLIER)) as usize;
                if let Some(q) = self.queues.get(i) {
                    let _ = q.kick.write(1);
                }
            }
            o if (MSIX_TABLE..MSIX_PBA).contains(&o) => {
                if let Some(i) = self.msix.table_write(o - MSIX_TABLE, data) {
                    self.sync_vector(i);
                }
            }
            _ => {}
        }
    }

    fn info(&self) -> Option<serde_json::Value> {
        Some(self.device_info())
    }
}

/// Where the BARs of the `n`th virtio device go (firmware-style
/// assignment inside the 32-bit window the DSDT declares).
pub fn bar_address(n: usize) -> u64 {
    crate::layout::PCI_MMIO32_START + n as u64 * BAR_SIZE
}

/// A guest address inside the BAR window (for the tests).
pub fn notify_address(bar: u64, queue: u16) -> GuestAddress {
    GuestAddress(bar + NOTIFY + u64::from(queue) * u64::from(NOTIFY_MULTIPLIER))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn msix_table_and_masking() {
        let mut m = Msix::new(2);
        assert!(m.deliverable(0).is_none(), "MSI-X starts disabled");
        m.enabled = true;
        assert!(m.deliverable(0).is_none(), "entries start masked");
        let mut e = [0u8; 16];
        e[0..8].copy_from_slice(&0xfee0_0000u64.to_le_bytes());
        e[8..12].copy_from_slice(&0x41u32.to_le_bytes());
        assert_eq!(m.table_write(0, &e), Some(0));
        let msg = MsiMessage {
            addr: 0xfee0_0000,
            data: 0x41,
        };
        assert_eq!(m.deliverable(0), Some(msg));
        assert!(m.deliverable(1).is_none(), "the other entry stays masked");
        m.function_masked = true;
        assert!(m.deliverable(0).is_none());
        m.function_masked = false;
        // A dword write of the control word masks the entry again.
        assert_eq!(m.table_write(12, &1u32.to_le_bytes()), Some(0));
        assert!(m.deliverable(0).is_none());
        assert_eq!(m.table_write(32, &e), None, "out-of-range entry is ignored");
        assert!(m.deliverable(5).is_none());
        let mut t = [0u8; 4];
        m.table_read(8, &mut t);
        assert_eq!(u32::from_le_bytes(t), 0x41);
        m.table_read(12, &mut t);
        assert_eq!(u32::from_le_bytes(t), 1);
        m.table_read(40, &mut t);
        assert_eq!(t, [0; 4]);
    }

    /// The vectors on a real VM: KVM takes the routes and irqfds, a raise
    /// while masked stays pending (and shows in the PBA), unmasking
    /// delivers it (the kernel consumes the count), and masking again
    /// detaches the irqfd. Delivery into a running guest is proven by the
    /// appliance's guest boots, whose every disk and network interrupt
    /// takes this path.
    #[test]
    fn vectors_route_through_kvm_irqfds() {
        let kvm = kvm_ioctls::Kvm::new().expect("this test needs /dev/kvm");
        let vm = Arc::new(kvm.create_vm().expect("create a VM"));
        vm.create_irq_chip().expect("irqchip");
        let router = Arc::new(MsiRouter::new(vm));
        let mem = crate::layout::map_guest_ram(16 << 20).expect("memory");
        let bar = bar_address(0);
        let mut p = VirtioPci::new(
            Box::new(crate::virtio::rng::Rng::new()),
            router.clone(),
            mem,
            bar,
        )
        .expect("a virtio-rng on PCI");
        assert_eq!(p.vectors.len(), 2, "one queue and the configuration");
        assert_eq!(
            p.vectors.iter().map(|v| v.gsi).collect::<Vec<_>>(),
            [24, 25],
            "MSI GSIs follow the IOAPIC's pins"
        );
        let pba = |p: &mut VirtioPci| {
            let mut b = [0u8; 8];
            p.bar_read(0, MSIX_PBA, &mut b);
            b[0]
        };
        // Masked (as entries start): a raise is pending.
        p.vectors[0].fd.write(1).unwrap();
        assert_eq!(pba(&mut p), 1);
        assert!(!p.vectors[0].attached);
        // The guest programs entry 0 and enables MSI-X.
        let mut e = [0u8; 16];
        e[0..8].copy_from_slice(&0xfee0_0000u64.to_le_bytes());
        e[8..12].copy_from_slice(&0x4041u32.to_le_bytes());
        e[12] = 1;
        p.bar_write(0, MSIX_TABLE, &e);
        let ctl = p.msix_cap + 2;
        p.config_write(ctl, &0x8000u16.to_le_bytes());
        assert!(p.msix.enabled);
        assert_eq!(pba(&mut p), 1, "still masked");
        // Unmasking attaches the irqfd and delivers the pending raise.
        p.bar_write(0, MSIX_TABLE + 12, &0u32.to_le_bytes());
        let msg = MsiMessage {
            addr: 0xfee0_0000,
            data: 0x4041,
        };
        assert_eq!(p.vectors[0].route, Some(msg));
        assert!(p.vectors[0].attached);
        assert!(!p.vectors[0].pending(), "KVM consumed the raise");
        assert_eq!(pba(&mut p), 0);
        p.vectors[0].fd.write(1).unwrap();
        assert!(
            !p.vectors[0].pending(),
            "KVM consumes raises while attached"
        );
        // The function mask detaches every vector; a raise waits again.
        p.config_write(ctl, &0xc000u16.to_le_bytes());
        assert!(!p.vectors[0].attached);
        p.vectors[0].fd.write(1).unwrap();
        assert_eq!(pba(&mut p), 1);
        p.config_write(ctl, &0x8000u16.to_le_bytes());
        assert!(p.vectors[0].attached);
        assert_eq!(pba(&mut p), 0);
        // A new message is routed; the config vector never was.
        e[8..12].copy_from_slice(&0x4042u32.to_le_bytes());
        e[12] = 0;
        p.bar_write(0, MSIX_TABLE, &e);
        assert_eq!(p.vectors[0].route.map(|m| m.data), Some(0x4042));
        assert_eq!(p.vectors[1].route, None);
        // The queue's interrupt writes the vector's eventfd.
        p.queues[0].vector = 0;
        p.config_vector = 1;
        let fd = |v: u16| p.vectors.get(usize::from(v)).map(|v| v.fd.clone());
        let irq = PciInterrupt {
            isr: p.isr.clone(),
            generation: p.config_generation.clone(),
            queue_vectors: vec![fd(0)],
            config_vector: fd(1),
        };
        irq.config().unwrap();
        assert!(p.vectors[1].pending(), "the masked config vector waits");
        assert!(irq.queue_eventfd(0).is_some());
        assert!(irq.queue_eventfd(1).is_none());
        assert_eq!(p.isr.load(Ordering::SeqCst), 2);
        assert_eq!(
            p.config_generation.load(Ordering::SeqCst),
            1,
            "a config change moves the generation on"
        );
    }

    #[test]
    fn capabilities_describe_the_bar_layout() {
        let c = vendor_cap(2, NOTIFY, 0x1000, Some(4));
        assert_eq!(c.len(), 18);
        assert_eq!(c[0], 20);
        assert_eq!(c[1], 2);
        assert_eq!(u32::from_le_bytes(c[6..10].try_into().unwrap()), 0x3000);
        assert_eq!(u32::from_le_bytes(c[14..18].try_into().unwrap()), 4);
        const { assert!(MSIX_PBA + 8 <= BAR_SIZE && DEVICE_CFG + DEVICE_CFG_LEN <= NOTIFY) };
    }
}
