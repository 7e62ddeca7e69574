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
use std::sync::{Arc, Mutex};

use kvm_bindings::kvm_msi;
use kvm_ioctls::{IoEventAddress, NoDatamatch, VmFd};
use virtio_queue::{Queue, QueueT};
use vm_memory::{GuestAddress, GuestMemoryMmap};
use vmm_sys_util::eventfd::EventFd;

use super::{ActiveQueue, Interrupt, VirtioDevice};
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

/// MSI-X state: the table, pending bits, and the capability's enable and
/// function-mask bits.
#[derive(Debug)]
pub struct Msix {
    entries: Vec<MsixEntry>,
    pending: Vec<bool>,
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
            pending: vec![false; n],
            enabled: false,
            function_masked: false,
        }
    }

    /// Sends vector `v`, or marks it pending while masked. Returns the
    /// message to send, if any.
    fn fire(&mut self, v: u16) -> Option<kvm_msi> {
        let i = usize::from(v);
        let e = *self.entries.get(i)?;
        if !self.enabled {
            return None;
        }
        if self.function_masked || e.masked {
            self.pending[i] = true;
            return None;
        }
        Some(msi(e))
    }

    fn table_read(&self, off: u64, data: &mut [u8]) {
        let (i, field) = ((off / 16) as usize, off % 16);
        let Some(e) = self.entries.get(i) else {
            data.fill(0);
            return;
        };
        let mut raw = [0u8; 16];
        raw[0..8].copy_from_slice(&e.addr.to_le_bytes());
        raw[8..12].copy_from_slice(&e.data.to_le_bytes());
        raw[12..16].copy_from_slice(&u32::from(e.masked).to_le_bytes());
        super::read_config_bytes(&raw, field, data);
    }

    /// A table write; returns a message to send if it unmasked a pending
    /// vector.
    fn table_write(&mut self, off: u64, data: &[u8]) -> Option<kvm_msi> {
        let (i, field) = ((off / 16) as usize, (off % 16) as usize);
        let e = self.entries.get_mut(i)?;
        let mut raw = [0u8; 16];
        raw[0..8].copy_from_slice(&e.addr.to_le_bytes());
        raw[8..12].copy_from_slice(&e.data.to_le_bytes());
        raw[12..16].copy_from_slice(&u32::from(e.masked).to_le_bytes());
        let end = (field + data.len()).min(16);
        raw[field..end].copy_from_slice(&data[..end - field]);
        e.addr = u64::from_le_bytes(raw[0..8].try_into().unwrap_or_default());
        e.data = u32::from_le_bytes(raw[8..12].try_into().unwrap_or_default());
        e.masked = raw[12] & 1 != 0;
        self.deliver_pending(i)
    }

    fn deliver_pending(&mut self, i: usize) -> Option<kvm_msi> {
        let e = *self.entries.get(i)?;
        if self.enabled && !self.function_masked && !e.masked && self.pending[i] {
            self.pending[i] = false;
            return Some(msi(e));
        }
        None
    }

    fn pba_read(&self, off: u64, data: &mut [u8]) {
        let mut bits = vec![0u8; self.pending.len().div_ceil(64) * 8];
        for (i, p) in self.pending.iter().enumerate() {
            if *p {
                bits[i / 8] |= 1 << (i % 8);
            }
        }
        super::read_config_bytes(&bits, off, data);
    }
}

fn msi(e: MsixEntry) -> kvm_msi {
    kvm_msi {
        address_lo: e.addr as u32,
        address_hi: (e.addr >> 32) as u32,
        data: e.data,
        ..Default::default()
    }
}

/// Where a device's interrupts go.
pub struct PciInterrupt {
    vm: Arc<VmFd>,
    msix: Arc<Mutex<Msix>>,
    isr: Arc<AtomicU8>,
    queue_vectors: Vec<u16>,
    config_vector: u16,
}

impl std::fmt::Debug for PciInterrupt {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PciInterrupt").finish_non_exhaustive()
    }
}

impl PciInterrupt {
    fn send(&self, vector: u16, isr_bit: u8) -> std::io::Result<()> {
        self.isr.fetch_or(isr_bit, Ordering::SeqCst);
        if vector == NO_VECTOR {
            return Ok(());
        }
        let m = self
            .msix
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .fire(vector);
        if let Some(m) = m {
            self.vm
                .signal_msi(m)
                .map_err(|e| std::io::Error::from_raw_os_error(e.errno()))?;
        }
        Ok(())
    }
}

impl Interrupt for PciInterrupt {
    fn queue(&self, index: u16) -> std::io::Result<()> {
        let v = self
            .queue_vectors
            .get(usize::from(index))
            .copied()
            .unwrap_or(NO_VECTOR);
        self.send(v, 1)
    }
    fn config(&self) -> std::io::Result<()> {
        self.send(self.config_vector, 2)
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
    vm: Arc<VmFd>,
    mem: GuestMemoryMmap,
    msix: Arc<Mutex<Msix>>,
    msix_cap: usize,
    isr: Arc<AtomicU8>,
    queues: Vec<QueueRegs>,
    device_feature_select: u32,
    driver_feature_select: u32,
    driver_features: u64,
    status: u8,
    config_generation: u8,
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
    /// per queue with KVM.
    pub fn new(
        device: Box<dyn VirtioDevice>,
        vm: Arc<VmFd>,
        mem: GuestMemoryMmap,
        bar_addr: u64,
    ) -> std::io::Result<VirtioPci> {
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
            vm,
            mem,
            msix: Arc::new(Mutex::new(Msix::new(vectors))),
            msix_cap,
            isr: Arc::new(AtomicU8::new(0)),
            queues,
            device_feature_select: 0,
            driver_feature_select: 0,
            driver_features: 0,
            status: 0,
            config_generation: 0,
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
        let irq = Arc::new(PciInterrupt {
            vm: self.vm.clone(),
            msix: self.msix.clone(),
            isr: self.isr.clone(),
            queue_vectors: self.queues.iter().map(|q| q.vector).collect(),
            config_vector: self.config_vector,
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
        raw[21] = self.config_generation;
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
            let _ = self.vm.unregister_ioevent(
                &q.kick,
                &IoEventAddress::Mmio(self.notify_base + step),
                NoDatamatch,
            );
            let _ =
                self.vm
                    .register_ioevent(&q.kick, &IoEventAddress::Mmio(base + step), NoDatamatch);
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
            let mut m = self.msix.lock().unwrap_or_else(|e| e.into_inner());
            m.enabled = c & 0x80 != 0;
            m.function_masked = c & 0x40 != 0;
            let send: Vec<kvm_msi> = (0..m.entries.len())
                .filter_map(|i| m.deliver_pending(i))
                .collect();
            drop(m);
            for s in send {
                let _ = self.vm.signal_msi(s);
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
            o if (MSIX_TABLE..MSIX_PBA).contains(&o) => self
                .msix
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .table_read(o - MSIX_TABLE, data),
            o if (MSIX_PBA..BAR_SIZE).contains(&o) => self
                .msix
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .pba_read(o - MSIX_PBA, data),
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
                let send = self
                    .msix
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .table_write(o - MSIX_TABLE, data);
                if let Some(s) = send {
                    let _ = self.vm.signal_msi(s);
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
    fn msix_masking_and_pending() {
        let mut m = Msix::new(2);
        m.enabled = true;
        assert!(m.fire(0).is_none(), "entries start masked");
        assert!(m.pending[0]);
        let mut e = [0u8; 16];
        e[0..8].copy_from_slice(&0xfee0_0000u64.to_le_bytes());
        e[8..12].copy_from_slice(&0x41u32.to_le_bytes());
        let delivered = m
            .table_write(0, &e)
            .expect("unmask delivers the pending vector");
        assert_eq!((delivered.address_lo, delivered.data), (0xfee0_0000, 0x41));
        assert!(!m.pending[0]);
        assert!(m.fire(0).is_some());
        m.function_masked = true;
        assert!(m.fire(0).is_none());
        let mut pba = [0u8; 8];
        m.pba_read(0, &mut pba);
        assert_eq!(pba[0], 1);
        assert!(m.fire(5).is_none(), "out-of-range vector is ignored");
        let mut t = [0u8; 4];
        m.table_read(8, &mut t);
        assert_eq!(u32::from_le_bytes(t), 0x41);
        m.table_read(12, &mut t);
        assert_eq!(u32::from_le_bytes(t), 0);
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
