//! MSI routing: each MSI-X vector of a device is a GSI whose KVM route
//! carries the vector's message, with an irqfd on that GSI. A device
//! raises the vector by writing the eventfd; KVM delivers the message to
//! the guest's local APIC without the vmm in between (the kernel's
//! vhost-net writes the same eventfd itself).
//!
//! `KVM_SET_GSI_ROUTING` replaces the whole table, including the routes
//! the in-kernel irqchip starts with (GSI 0-15 on both PICs and the
//! IOAPIC, 16-23 on the IOAPIC); the serial port and the ACPI event
//! device raise those pins. So every commit writes them again, followed
//! by the MSI routes, and MSI GSIs start at 24.

use std::collections::BTreeMap;
use std::io;
use std::sync::{Arc, Mutex};

use kvm_bindings::{
    kvm_irq_routing_entry, kvm_irq_routing_entry__bindgen_ty_1, kvm_irq_routing_irqchip,
    kvm_irq_routing_msi, KvmIrqRouting, KVM_IRQCHIP_IOAPIC, KVM_IRQCHIP_PIC_MASTER,
    KVM_IRQCHIP_PIC_SLAVE, KVM_IRQ_ROUTING_IRQCHIP, KVM_IRQ_ROUTING_MSI,
};
use kvm_ioctls::VmFd;

/// Pins of the in-kernel IOAPIC: GSIs below this are the irqchip's.
pub const IOAPIC_PINS: u32 = 24;
/// KVM's limit on routing entries.
const MAX_ROUTES: usize = kvm_bindings::KVM_MAX_IRQ_ROUTES;

/// An MSI message: address and data.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct MsiMessage {
    /// The 64-bit message address.
    pub addr: u64,
    /// The message data.
    pub data: u32,
}

/// The VM's GSI routing table (shared by every device).
#[derive(Debug)]
pub struct MsiRouter {
    vm: Arc<VmFd>,
    state: Mutex<Routes>,
}

#[derive(Debug, Default)]
struct Routes {
    next: u32,
    msi: BTreeMap<u32, MsiMessage>,
}

/// A KVM error as an `io::Error` naming what failed.
pub fn kvm_error(what: &str, e: kvm_ioctls::Error) -> io::Error {
    let kind = io::Error::from_raw_os_error(e.errno()).kind();
    io::Error::new(kind, format!("{what}: {e}"))
}

impl MsiRouter {
    /// A router for `vm`, whose irqchip has been created.
    pub fn new(vm: Arc<VmFd>) -> MsiRouter {
        MsiRouter {
            vm,
            state: Mutex::new(Routes {
                next: IOAPIC_PINS,
                msi: BTreeMap::new(),
            }),
        }
    }

    /// The VM.
    pub fn vm(&self) -> &Arc<VmFd> {
        &self.vm
    }

    /// A new GSI for an MSI vector (no route until `set`).
    pub fn allocate(&self) -> io::Result<u32> {
        let mut s = self.state.lock().unwrap_or_else(|e| e.into_inner());
        if s.next as usize >= MAX_ROUTES {
            return Err(io::Error::other("no GSI left for an MSI vector"));
        }
        let gsi = s.next;
        s.next += 1;
        Ok(gsi)
    }

    /// Routes `gsi` to `msg` and commits the table to KVM.
    pub fn set(&self, gsi: u32, msg: MsiMessage) -> io::Result<()> {
        let mut s = self.state.lock().unwrap_or_else(|e| e.into_inner());
        let old = s.msi.insert(gsi, msg);
        let table = routing_table(&s.msi)?;
        if let Err(e) = self.vm.set_gsi_routing(&table) {
            match old {
                Some(o) => s.msi.insert(gsi, o),
                None => s.msi.remove(&gsi),
            };
            return Err(kvm_error("set the GSI routing", e));
        }
        Ok(())
    }
}

fn irqchip(gsi: u32, chip: u32, pin: u32) -> kvm_irq_routing_entry {
    kvm_irq_routing_entry {
        gsi,
        type_: KVM_IRQ_ROUTING_IRQCHIP,
        u: kvm_irq_routing_entry__bindgen_ty_1 {
            irqchip: kvm_irq_routing_irqchip { irqchip: chip, pin },
        },
        ..Default::default()
    }
}

/// The entries of a full table: the irqchip's own routes, then `msi`.
pub fn routing_entries(msi: &BTreeMap<u32, MsiMessage>) -> Vec<kvm_irq_routing_entry> {
    let mut v = Vec::with_capacity(40 + msi.len());
    for gsi in 0..IOAPIC_PINS {
        if gsi < 8 {
            v.push(irqchip(gsi, KVM_IRQCHIP_PIC_MASTER, gsi));
        } else if gsi < 16 {
            v.push(irqchip(gsi, KVM_IRQCHIP_PIC_SLAVE, gsi - 8));
        }
        v.push(irqchip(gsi, KVM_IRQCHIP_IOAPIC, gsi));
    }
    for (&gsi, m) in msi {
        v.push(kvm_irq_routing_entry {
            gsi,
            type_: KVM_IRQ_ROUTING_MSI,
            u: kvm_irq_routing_entry__bindgen_ty_1 {
                msi: kvm_irq_routing_msi {
                    address_lo: m.addr as u32,
                    address_hi: (m.addr >> 32) as u32,
                    data: m.data,
                    ..Default::default()
                },
            },
            ..Default::default()
        });
    }
    v
}

fn routing_table(msi: &BTreeMap<u32, MsiMessage>) -> io::Result<KvmIrqRouting> {
    KvmIrqRouting::from_entries(&routing_entries(msi))
        .map_err(|e| io::Error::other(format!("GSI routing table: {e:?}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_table_keeps_the_irqchip_routes_before_the_msi_ones() {
        let mut msi = BTreeMap::new();
        msi.insert(
            25,
            MsiMessage {
                addr: 0x1_fee0_1000,
                data: 0x4041,
            },
        );
        msi.insert(24, MsiMessage::default());
        let v = routing_entries(&msi);
        // 16 PIC routes + 24 IOAPIC routes + 2 MSI routes.
        assert_eq!(v.len(), 16 + 24 + 2);
        let chip = |e: &kvm_irq_routing_entry| {
            assert_eq!(e.type_, KVM_IRQ_ROUTING_IRQCHIP);
            // SAFETY: an IRQCHIP entry's union holds `irqchip`.
            let c = unsafe { e.u.irqchip };
            (e.gsi, c.irqchip, c.pin)
        };
        let serial: Vec<_> = v.iter().filter(|e| e.gsi == 4).map(chip).collect();
        assert_eq!(
            serial,
            [(4, KVM_IRQCHIP_PIC_MASTER, 4), (4, KVM_IRQCHIP_IOAPIC, 4)]
        );
        let slave: Vec<_> = v.iter().filter(|e| e.gsi == 10).map(chip).collect();
        assert_eq!(
            slave,
            [(10, KVM_IRQCHIP_PIC_SLAVE, 2), (10, KVM_IRQCHIP_IOAPIC, 10)]
        );
        let high: Vec<_> = v.iter().filter(|e| e.gsi == 23).map(chip).collect();
        assert_eq!(high, [(23, KVM_IRQCHIP_IOAPIC, 23)]);
        let last = v.last().unwrap();
        assert_eq!((last.gsi, last.type_), (25, KVM_IRQ_ROUTING_MSI));
        // SAFETY: an MSI entry's union holds `msi`.
        let m = unsafe { last.u.msi };
        assert_eq!(
            (m.address_lo, m.address_hi, m.data),
            (0xfee0_1000, 1, 0x4041)
        );
        assert!(routing_table(&msi).is_ok());
    }
}
