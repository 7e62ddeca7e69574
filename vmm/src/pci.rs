//! A PCI root bus (segment 0, bus 0): configuration space through ports
//! 0xcf8/0xcfc and through the ECAM window, and BAR-mapped MMIO dispatch.
//!
//! Each device's configuration space is a [`PciConfig`]: 256 bytes with a
//! write mask, so read-only fields stay read-only and BAR sizing (write all
//! ones, read back the size mask) works as on hardware.

use std::sync::Mutex;

use crate::layout;

/// Configuration space size we model (the legacy 256 bytes; ECAM reads
/// above that return zero).
pub const CONFIG_SIZE: usize = 256;

/// The first capability's offset.
pub const CAP_START: usize = 0x40;

/// A BAR as the guest has it programmed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Bar {
    /// Index (0-5; a 64-bit BAR takes two slots).
    pub index: usize,
    /// Guest physical address.
    pub addr: u64,
    /// Size (a power of two).
    pub size: u64,
}

/// A type-0 configuration header with capabilities.
#[derive(Debug, Clone)]
pub struct PciConfig {
    data: [u8; CONFIG_SIZE],
    wmask: [u8; CONFIG_SIZE],
    bars: Vec<(usize, u64)>, // (index, size) of 64-bit memory BARs
    next_cap: usize,
    last_cap: Option<usize>,
}

impl PciConfig {
    /// A header with ids and class code.
    pub fn new(vendor: u16, device: u16, class: u32, revision: u8, subsys: (u16, u16)) -> Self {
        let mut c = PciConfig {
            data: [0; CONFIG_SIZE],
            wmask: [0; CONFIG_SIZE],
            bars: Vec::new(),
            next_cap: CAP_START,
            last_cap: None,
        };
        c.set_u16(0x00, vendor);
        c.set_u16(0x02, device);
        c.data[0x08] = revision;
        c.data[0x09] = (class & 0xff) as u8;
        c.data[0x0a] = ((class >> 8) & 0xff) as u8;
        c.data[0x0b] = ((class >> 16) & 0xff) as u8;
        c.set_u16(0x2c, subsys.0);
        c.set_u16(0x2e, subsys.1);
        // Command: I/O, memory, bus master, INTx disable are writable.
        c.wmask[0x04] = 0x07;
        c.wmask[0x05] = 0x04;
        // Interrupt line is scratch space for the OS.
        c.wmask[0x3c] = 0xff;
        c
    }

    fn set_u16(&mut self, off: usize, v: u16) {
        self.data[off..off + 2].copy_from_slice(&v.to_le_bytes());
    }

    fn set_u32(&mut self, off: usize, v: u32) {
        self.data[off..off + 4].copy_from_slice(&v.to_le_bytes());
    }

    /// The dword at `off`.
    pub fn u32_at(&self, off: usize) -> u32 {
        u32::from_le_bytes(self.data[off..off + 4].try_into().unwrap_or([0; 4]))
    }

    /// The word at `off`.
    pub fn u16_at(&self, off: usize) -> u16 {
        u16::from_le_bytes([self.data[off], self.data[off + 1]])
    }

    /// Adds a 64-bit, non-prefetchable memory BAR at `index` (and
    /// `index + 1`) of `size` bytes, placed at `addr` as firmware would.
    pub fn add_bar64(&mut self, index: usize, addr: u64, size: u64) {
        assert!(size.is_power_of_two() && size >= 16 && index < 5);
        assert_eq!(addr % size, 0, "BAR address must be aligned to its size");
        let off = 0x10 + 4 * index;
        self.set_u32(off, (addr as u32) | 0b100);
        self.set_u32(off + 4, (addr >> 32) as u32);
        let mask = !(size - 1);
        self.wmask[off..off + 4].copy_from_slice(&((mask as u32) & !0xf).to_le_bytes());
        self.wmask[off + 4..off + 8].copy_from_slice(&((mask >> 32) as u32).to_le_bytes());
        self.bars.push((index, size));
    }

    /// Appends a capability with `body` (its bytes after id and next
    /// pointer) and the bytes of `body` the guest may write; returns its
    /// offset.
    pub fn add_capability(&mut self, id: u8, body: &[u8], writable: &[u8]) -> usize {
        let off = self.next_cap;
        let len = 2 + body.len();
        assert!(
            off + len <= CONFIG_SIZE,
            "capabilities overflow config space"
        );
        self.data[off] = id;
        self.data[off + 1] = 0;
        self.data[off + 2..off + len].copy_from_slice(body);
        for (i, m) in writable.iter().enumerate() {
            self.wmask[off + 2 + i] = *m;
        }
        match self.last_cap {
            None => {
                self.data[0x34] = off as u8;
                self.data[0x06] |= 0x10; // status: capability list
            }
            Some(prev) => self.data[prev + 1] = off as u8,
        }
        self.last_cap = Some(off);
        self.next_cap = (off + len).next_multiple_of(4);
        off
    }

    /// A guest read of `data.len()` bytes at `off`.
    pub fn read(&self, off: usize, data: &mut [u8]) {
        for (i, b) in data.iter_mut().enumerate() {
            *b = self.data.get(off + i).copied().unwrap_or(0);
        }
    }

    /// A guest write; only the writable bits change.
    pub fn write(&mut self, off: usize, data: &[u8]) {
        for (i, b) in data.iter().enumerate() {
            let o = off + i;
            if o < CONFIG_SIZE {
                let m = self.wmask[o];
                self.data[o] = (self.data[o] & !m) | (b & m);
            }
        }
    }

    /// Raw access for the device's own registers (e.g. MSI-X control).
    pub fn bytes_mut(&mut self) -> &mut [u8; CONFIG_SIZE] {
        &mut self.data
    }

    /// The BARs as currently programmed.
    pub fn bars(&self) -> Vec<Bar> {
        self.bars
            .iter()
            .map(|&(index, size)| {
                let off = 0x10 + 4 * index;
                let lo = u64::from(self.u32_at(off) & !0xf);
                let hi = u64::from(self.u32_at(off + 4));
                Bar {
                    index,
                    addr: (hi << 32) | lo,
                    size,
                }
            })
            .collect()
    }

    /// Whether memory decoding is on (command bit 1).
    pub fn memory_enabled(&self) -> bool {
        self.data[0x04] & 0x2 != 0
    }
}

/// A device on the bus.
pub trait PciDevice: Send {
    /// Its configuration space.
    fn config(&self) -> &PciConfig;
    /// A configuration write (the device may react, e.g. BAR moves).
    fn config_write(&mut self, off: usize, data: &[u8]);
    /// A read inside one of its BARs, at `offset` from the BAR's start.
    fn bar_read(&mut self, bar: usize, offset: u64, data: &mut [u8]);
    /// A write inside one of its BARs.
    fn bar_write(&mut self, bar: usize, offset: u64, data: &[u8]);
    /// What `info` reports about it, if anything.
    fn info(&self) -> Option<serde_json::Value> {
        None
    }
}

/// The host bridge at 00:00.0.
#[derive(Debug)]
pub struct HostBridge {
    config: PciConfig,
}

impl HostBridge {
    /// A host bridge (class 06:00:00).
    pub fn new() -> HostBridge {
        HostBridge {
            config: PciConfig::new(0x1b36, 0x0008, 0x06_0000, 0, (0x1af4, 0x1100)),
        }
    }
}

impl Default for HostBridge {
    fn default() -> Self {
        Self::new()
    }
}

impl PciDevice for HostBridge {
    fn config(&self) -> &PciConfig {
        &self.config
    }
    fn config_write(&mut self, off: usize, data: &[u8]) {
        self.config.write(off, data);
    }
    fn bar_read(&mut self, _: usize, _: u64, data: &mut [u8]) {
        data.fill(0xff);
    }
    fn bar_write(&mut self, _: usize, _: u64, _: &[u8]) {}
}

/// Devices by slot number (function 0 only).
pub struct PciBus {
    devices: Vec<Mutex<Box<dyn PciDevice>>>,
    address: Mutex<u32>,
}

impl std::fmt::Debug for PciBus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PciBus")
            .field("devices", &self.devices.len())
            .finish()
    }
}

/// The first port of the type-1 configuration mechanism.
pub const CONFIG_ADDRESS_PORT: u16 = 0xcf8;
/// The data port.
pub const CONFIG_DATA_PORT: u16 = 0xcfc;

/// Whether `port` is one of the configuration mechanism's ports
/// (0xcf8-0xcff).
pub fn is_config_port(port: u16) -> bool {
    (CONFIG_ADDRESS_PORT..=0xcff).contains(&port)
}

impl PciBus {
    /// A bus with the host bridge in slot 0.
    pub fn new() -> PciBus {
        PciBus {
            devices: vec![Mutex::new(Box::new(HostBridge::new()))],
            address: Mutex::new(0),
        }
    }

    /// Adds a device in the next slot and returns the slot.
    pub fn add(&mut self, dev: Box<dyn PciDevice>) -> usize {
        self.devices.push(Mutex::new(dev));
        self.devices.len() - 1
    }

    /// `info` of every device that reports one, with its slot.
    pub fn info(&self) -> Vec<serde_json::Value> {
        let mut v = Vec::new();
        for (slot, d) in self.devices.iter().enumerate() {
            let Ok(d) = d.lock() else { continue };
            if let Some(mut i) = d.info() {
                if let Some(o) = i.as_object_mut() {
                    o.insert("pci".into(), format!("00:{slot:02x}.0").into());
                }
                v.push(i);
            }
        }
        v
    }

    /// Number of slots used.
    pub fn len(&self) -> usize {
        self.devices.len()
    }

    /// Whether only the host bridge is there.
    pub fn is_empty(&self) -> bool {
        self.devices.len() <= 1
    }

    fn config_access(
        &self,
        slot: usize,
        function: usize,
        off: usize,
        data: &mut [u8],
        write: Option<&[u8]>,
    ) {
        let dev = (function == 0).then(|| self.devices.get(slot)).flatten();
        match (dev, write) {
            (Some(d), None) => match d.lock() {
                Ok(d) => d.config().read(off, data),
                Err(_) => data.fill(0xff),
            },
            (Some(d), Some(w)) => {
                if let Ok(mut d) = d.lock() {
                    d.config_write(off, w);
                }
            }
            (None, None) => data.fill(0xff),
            (None, Some(_)) => {}
        }
    }

    /// Port I/O on 0xcf8-0xcff; returns false if the port is not ours.
    pub fn pio_read(&self, port: u16, data: &mut [u8]) -> bool {
        match port {
            CONFIG_ADDRESS_PORT if data.len() == 4 => {
                let a = *self.address.lock().unwrap_or_else(|e| e.into_inner());
                data.copy_from_slice(&a.to_le_bytes());
            }
            CONFIG_DATA_PORT..=0xcff => {
                let a = *self.address.lock().unwrap_or_else(|e| e.into_inner());
                data.fill(0xff);
                if let Some((slot, func, off)) = decode_cf8(a) {
                    let off = off + usize::from(port - CONFIG_DATA_PORT);
                    self.config_access(slot, func, off, data, None);
                }
            }
            0xcf8..=0xcfb => data.fill(0xff),
            _ => return false,
        }
        true
    }

    /// Port writes on 0xcf8-0xcff; returns false if the port is not ours.
    pub fn pio_write(&self, port: u16, data: &[u8]) -> bool {
        match port {
            CONFIG_ADDRESS_PORT if data.len() == 4 => {
                let v = u32::from_le_bytes(data.try_into().unwrap_or([0; 4]));
                *self.address.lock().unwrap_or_else(|e| e.into_inner()) = v;
            }
            CONFIG_DATA_PORT..=0xcff => {
                let a = *self.address.lock().unwrap_or_else(|e| e.into_inner());
                if let Some((slot, func, off)) = decode_cf8(a) {
                    let off = off + usize::from(port - CONFIG_DATA_PORT);
                    self.config_access(slot, func, off, &mut [], Some(data));
                }
            }
            0xcf8..=0xcfb => {}
            _ => return false,
        }
        true
    }

    /// An MMIO read; returns false if nothing is mapped there.
    pub fn mmio_read(&self, addr: u64, data: &mut [u8]) -> bool {
        if let Some((slot, func, off)) = decode_ecam(addr) {
            self.config_access(slot, func, off, data, None);
            return true;
        }
        self.bar_access(addr, |d, bar, offset| d.bar_read(bar, offset, data))
    }

    /// An MMIO write; returns false if nothing is mapped there.
    pub fn mmio_write(&self, addr: u64, data: &[u8]) -> bool {
        if let Some((slot, func, off)) = decode_ecam(addr) {
            self.config_access(slot, func, off, &mut [], Some(data));
            return true;
        }
        self.bar_access(addr, |d, bar, offset| d.bar_write(bar, offset, data))
    }

    fn bar_access(&self, addr: u64, f: impl FnOnce(&mut dyn PciDevice, usize, u64)) -> bool {
        for d in &self.devices[1..] {
            let Ok(mut d) = d.lock() else { continue };
            if !d.config().memory_enabled() {
                continue;
            }
            let hit = d
                .config()
                .bars()
                .into_iter()
                .find(|b| addr >= b.addr && addr - b.addr < b.size);
            if let Some(b) = hit {
                f(d.as_mut(), b.index, addr - b.addr);
                return true;
            }
        }
        false
    }
}

impl Default for PciBus {
    fn default() -> Self {
        Self::new()
    }
}

/// Decodes a 0xcf8 address: enabled, bus 0 → (slot, function, register).
pub fn decode_cf8(a: u32) -> Option<(usize, usize, usize)> {
    let enabled = a & 0x8000_0000 != 0;
    let bus = (a >> 16) & 0xff;
    (enabled && bus == 0).then_some((
        ((a >> 11) & 0x1f) as usize,
        ((a >> 8) & 0x7) as usize,
        (a & 0xfc) as usize,
    ))
}

/// Decodes an ECAM address in bus 0's window → (slot, function, offset).
pub fn decode_ecam(addr: u64) -> Option<(usize, usize, usize)> {
    let off = addr.checked_sub(layout::PCI_ECAM)?;
    (off < layout::PCI_ECAM_SIZE).then_some((
        ((off >> 15) & 0x1f) as usize,
        ((off >> 12) & 0x7) as usize,
        (off & 0xfff) as usize,
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    struct Dummy(PciConfig, Vec<(u64, Vec<u8>)>);
    impl PciDevice for Dummy {
        fn config(&self) -> &PciConfig {
            &self.0
        }
        fn config_write(&mut self, off: usize, data: &[u8]) {
            self.0.write(off, data);
        }
        fn bar_read(&mut self, _: usize, offset: u64, data: &mut [u8]) {
            data.fill(offset as u8);
        }
        fn bar_write(&mut self, _: usize, offset: u64, data: &[u8]) {
            self.1.push((offset, data.to_vec()));
        }
    }

    fn cf8(slot: u32, off: u32) -> [u8; 4] {
        (0x8000_0000 | (slot << 11) | off).to_le_bytes()
    }

    fn bus_with_dummy() -> PciBus {
        let mut c = PciConfig::new(0x1af4, 0x1042, 0x01_8000, 1, (0x1af4, 0x40));
        c.add_bar64(0, 0xc000_0000, 0x8000);
        c.add_capability(0x09, &[16, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0], &[]);
        c.add_capability(0x11, &[0, 0, 0, 0, 0, 0, 0, 0, 0, 0], &[0, 0xc0]);
        let mut bus = PciBus::new();
        bus.add(Box::new(Dummy(c, Vec::new())));
        bus
    }

    #[test]
    fn ids_through_cf8_and_ecam() {
        let bus = bus_with_dummy();
        bus.pio_write(0xcf8, &cf8(1, 0));
        let mut v = [0u8; 4];
        bus.pio_read(0xcfc, &mut v);
        assert_eq!(u32::from_le_bytes(v), 0x1042_1af4);
        let mut w = [0u8; 2];
        bus.pio_read(0xcfe, &mut w);
        assert_eq!(u16::from_le_bytes(w), 0x1042);
        // ECAM: slot 1 at 1 << 15.
        assert!(bus.mmio_read(layout::PCI_ECAM + (1 << 15), &mut v));
        assert_eq!(u32::from_le_bytes(v), 0x1042_1af4);
        // Host bridge class in slot 0.
        assert!(bus.mmio_read(layout::PCI_ECAM + 8, &mut v));
        assert_eq!(u32::from_le_bytes(v) >> 8, 0x06_0000);
        // Empty slot and other functions read all ones.
        bus.pio_write(0xcf8, &cf8(7, 0));
        bus.pio_read(0xcfc, &mut v);
        assert_eq!(v, [0xff; 4]);
        bus.pio_write(
            0xcf8,
            &(0x8000_0000u32 | (1 << 11) | (1 << 8)).to_le_bytes(),
        );
        bus.pio_read(0xcfc, &mut v);
        assert_eq!(v, [0xff; 4]);
    }

    #[test]
    fn bar_sizing_and_moving() {
        let bus = bus_with_dummy();
        let ecam = layout::PCI_ECAM + (1 << 15);
        let mut v = [0u8; 4];
        bus.mmio_read(ecam + 0x10, &mut v);
        assert_eq!(u32::from_le_bytes(v), 0xc000_0004);
        bus.mmio_write(ecam + 0x10, &[0xff; 4]);
        bus.mmio_write(ecam + 0x14, &[0xff; 4]);
        bus.mmio_read(ecam + 0x10, &mut v);
        assert_eq!(
            u32::from_le_bytes(v),
            0xffff_8004,
            "size 0x8000, 64-bit type kept"
        );
        bus.mmio_read(ecam + 0x14, &mut v);
        assert_eq!(u32::from_le_bytes(v), 0xffff_ffff);
        bus.mmio_write(ecam + 0x10, &0xd000_0000u32.to_le_bytes());
        bus.mmio_write(ecam + 0x14, &[0; 4]);
        // Decoding off: the BAR does not answer.
        assert!(!bus.mmio_read(0xd000_0010, &mut v));
        bus.mmio_write(ecam + 0x04, &[0x06, 0, 0, 0]);
        assert!(bus.mmio_read(0xd000_0010, &mut v));
        assert_eq!(v, [0x10; 4]);
        assert!(!bus.mmio_read(0xc000_0010, &mut v), "old address unmapped");
    }

    #[test]
    fn read_only_fields_stay_and_capabilities_chain() {
        let bus = bus_with_dummy();
        let ecam = layout::PCI_ECAM + (1 << 15);
        bus.mmio_write(ecam, &[0; 4]);
        let mut v = [0u8; 4];
        bus.mmio_read(ecam, &mut v);
        assert_eq!(u32::from_le_bytes(v), 0x1042_1af4);
        let mut b = [0u8; 1];
        bus.mmio_read(ecam + 0x06, &mut b);
        assert_ne!(b[0] & 0x10, 0);
        bus.mmio_read(ecam + 0x34, &mut b);
        assert_eq!(b[0], 0x40);
        let mut cap = [0u8; 2];
        bus.mmio_read(ecam + 0x40, &mut cap);
        assert_eq!(cap, [0x09, 0x50]);
        bus.mmio_read(ecam + 0x50, &mut cap);
        assert_eq!(cap, [0x11, 0x00]);
        // Only the MSI-X enable/mask bits are writable in message control.
        bus.mmio_write(ecam + 0x52, &[0xff, 0xff]);
        bus.mmio_read(ecam + 0x52, &mut cap);
        assert_eq!(cap, [0x00, 0xc0]);
    }

    #[test]
    fn decoders_reject_other_buses_and_ranges() {
        assert_eq!(decode_cf8(0x0000_0800), None, "enable bit clear");
        assert_eq!(decode_cf8(0x8001_0000), None, "bus 1");
        assert_eq!(decode_cf8(0x8000_0a14), Some((1, 2, 0x14)));
        assert_eq!(decode_ecam(layout::PCI_ECAM - 1), None);
        assert_eq!(decode_ecam(layout::PCI_ECAM + layout::PCI_ECAM_SIZE), None);
    }
}
