//! The legacy devices on the I/O port bus: the 16550 UART (COM1), the i8042
//! (only its CPU reset command), the ACPI sleep, reset and GED registers, and
//! the ports the kernel probes that have nothing behind them.

use std::io::Write;
use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::{Arc, Mutex};

use vm_superio::{I8042Device, Serial, Trigger};
use vmm_sys_util::eventfd::EventFd;

use crate::acpi;
use crate::exit::{ExitReason, ExitSignal};

/// COM1's base port.
pub const SERIAL_PORT: u16 = 0x3f8;
/// The i8042 data port; the command port is this + 4.
pub const I8042_PORT: u16 = 0x60;

/// Raises an interrupt through a KVM irqfd.
#[derive(Debug)]
pub struct IrqTrigger(pub EventFd);

impl Trigger for IrqTrigger {
    type E = std::io::Error;

    fn trigger(&self) -> std::io::Result<()> {
        self.0.write(1)
    }
}

/// Ends the VM with a reset (the i8042's CPU reset line).
#[derive(Debug)]
pub struct ResetTrigger(pub Arc<ExitSignal>);

impl Trigger for ResetTrigger {
    type E = std::convert::Infallible;

    fn trigger(&self) -> Result<(), Self::E> {
        eprintln!("vmm: the guest asked for a reset (i8042)");
        self.0.request(ExitReason::Reset);
        Ok(())
    }
}

/// The console UART.
pub type SerialDevice = Serial<IrqTrigger, vm_superio::serial::NoEvents, Box<dyn Write + Send>>;

/// The ACPI registers of a hardware-reduced platform.
#[derive(Debug)]
pub struct AcpiPm {
    exit: Arc<ExitSignal>,
    ged_events: AtomicU8,
    ged_irq: IrqTrigger,
}

impl AcpiPm {
    /// A register block that ends the VM through `exit` and raises the GED
    /// interrupt through `ged_irq`.
    pub fn new(exit: Arc<ExitSignal>, ged_irq: EventFd) -> AcpiPm {
        AcpiPm {
            exit,
            ged_events: AtomicU8::new(0),
            ged_irq: IrqTrigger(ged_irq),
        }
    }

    /// Presses the power button: the guest's ACPI sees a GED event and
    /// notifies its power button device.
    pub fn press_power_button(&self) -> std::io::Result<()> {
        self.ged_events
            .fetch_or(acpi::GED_POWER_BUTTON, Ordering::SeqCst);
        self.ged_irq.trigger()
    }

    /// A guest read.
    pub fn read(&self, port: u16) -> u8 {
        match port {
            acpi::GED_PORT => self.ged_events.swap(0, Ordering::SeqCst),
            _ => 0,
        }
    }

    /// A guest write.
    pub fn write(&self, port: u16, value: u8) {
        match port {
            acpi::SLEEP_CONTROL_PORT => {
                const SLP_EN: u8 = 1 << 5;
                let slp_typ = (value >> 2) & 0x7;
                if value & SLP_EN != 0 && slp_typ == acpi::S5_SLP_TYP {
                    self.exit.request(ExitReason::PowerOff);
                }
            }
            acpi::RESET_PORT if value == acpi::RESET_VALUE => {
                eprintln!("vmm: the guest asked for a reset (ACPI reset register)");
                self.exit.request(ExitReason::Reset)
            }
            _ => {}
        }
    }
}

/// Everything on the port bus.
pub struct PortBus {
    /// COM1.
    pub serial: Mutex<SerialDevice>,
    /// The keyboard controller (reset only).
    pub i8042: Mutex<I8042Device<ResetTrigger>>,
    /// ACPI sleep, reset and GED registers.
    pub pm: AcpiPm,
    /// The PCI root bus (config ports 0xcf8-0xcff, ECAM and BARs).
    pub pci: crate::pci::PciBus,
}

impl std::fmt::Debug for PortBus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PortBus").finish_non_exhaustive()
    }
}

impl PortBus {
    /// Handles an `in` of `data.len()` bytes.
    pub fn read(&self, port: u16, data: &mut [u8]) {
        data.fill(0xff);
        if self.pci.pio_read(port, data) {
            return;
        }
        match port {
            SERIAL_PORT..=0x3ff => {
                if let Ok(mut s) = self.serial.lock() {
                    data[0] = s.read((port - SERIAL_PORT) as u8);
                }
            }
            0x60 | 0x64 => {
                if let Ok(mut k) = self.i8042.lock() {
                    data[0] = k.read((port - I8042_PORT) as u8);
                }
            }
            acpi::SLEEP_CONTROL_PORT..=acpi::GED_PORT => data[0] = self.pm.read(port),
            _ => {}
        }
    }

    /// Handles an MMIO read; unmapped addresses read all-ones.
    pub fn mmio_read(&self, addr: u64, data: &mut [u8]) {
        if !self.pci.mmio_read(addr, data) {
            data.fill(0xff);
        }
    }

    /// Handles an MMIO write; writes to unmapped addresses are dropped.
    pub fn mmio_write(&self, addr: u64, data: &[u8]) {
        let _ = self.pci.mmio_write(addr, data);
    }

    /// Handles an `out`.
    pub fn write(&self, port: u16, data: &[u8]) {
        if self.pci.pio_write(port, data) {
            return;
        }
        let Some(&value) = data.first() else { return };
        match port {
            SERIAL_PORT..=0x3ff => {
                if let Ok(mut s) = self.serial.lock() {
                    let _ = s.write((port - SERIAL_PORT) as u8, value);
                }
            }
            0x60 | 0x64 => {
                if let Ok(mut k) = self.i8042.lock() {
                    let _ = k.write((port - I8042_PORT) as u8, value);
                }
            }
            acpi::SLEEP_CONTROL_PORT..=acpi::GED_PORT => self.pm.write(port, value),
            _ => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn new_bus() -> (PortBus, Arc<ExitSignal>, EventFd, Arc<Mutex<Vec<u8>>>) {
        #[derive(Clone)]
        struct Sink(Arc<Mutex<Vec<u8>>>);
        impl Write for Sink {
            fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
                self.0.lock().unwrap().extend_from_slice(b);
                Ok(b.len())
            }
            fn flush(&mut self) -> std::io::Result<()> {
                Ok(())
            }
        }
        let exit = Arc::new(ExitSignal::new().unwrap());
        let out = Arc::new(Mutex::new(Vec::new()));
        let irq = EventFd::new(libc::EFD_NONBLOCK).unwrap();
        let ged = EventFd::new(libc::EFD_NONBLOCK).unwrap();
        let bus = PortBus {
            serial: Mutex::new(Serial::new(
                IrqTrigger(irq.try_clone().unwrap()),
                Box::new(Sink(out.clone())) as Box<dyn Write + Send>,
            )),
            i8042: Mutex::new(I8042Device::new(ResetTrigger(exit.clone()))),
            pm: AcpiPm::new(exit.clone(), ged.try_clone().unwrap()),
            pci: crate::pci::PciBus::new(),
        };
        (bus, exit, ged, out)
    }

    #[test]
    fn serial_output_reaches_the_writer() {
        let (bus, _, _, out) = new_bus();
        for b in b"hi\n" {
            bus.write(SERIAL_PORT, &[*b]);
        }
        assert_eq!(out.lock().unwrap().as_slice(), b"hi\n");
        let mut lsr = [0u8];
        bus.read(SERIAL_PORT + 5, &mut lsr);
        assert_ne!(lsr[0] & 0x20, 0, "transmitter empty");
    }

    #[test]
    fn s5_powers_off_and_reset_resets() {
        let (bus, exit, _, _) = new_bus();
        bus.write(acpi::SLEEP_CONTROL_PORT, &[(1 << 2) | (1 << 5)]);
        assert_eq!(exit.reason(), None, "S1 is not power-off");
        bus.write(acpi::SLEEP_CONTROL_PORT, &[(5 << 2) | (1 << 5)]);
        assert_eq!(exit.reason(), Some(ExitReason::PowerOff));
        let (bus, exit, _, _) = new_bus();
        bus.write(0x64, &[0xfe]);
        assert_eq!(exit.reason(), Some(ExitReason::Reset));
        let (bus, exit, _, _) = new_bus();
        bus.write(acpi::RESET_PORT, &[acpi::RESET_VALUE]);
        assert_eq!(exit.reason(), Some(ExitReason::Reset));
    }

    #[test]
    fn power_button_raises_ged_and_reads_clear() {
        let (bus, _, ged, _) = new_bus();
        bus.pm.press_power_button().unwrap();
        assert_eq!(ged.read().unwrap(), 1);
        let mut v = [0u8];
        bus.read(acpi::GED_PORT, &mut v);
        assert_eq!(v[0], acpi::GED_POWER_BUTTON);
        bus.read(acpi::GED_PORT, &mut v);
        assert_eq!(v[0], 0);
    }

    #[test]
    fn unknown_ports_read_all_ones() {
        let (bus, exit, _, _) = new_bus();
        let mut v = [0u8; 4];
        bus.read(0x2f8, &mut v);
        assert_eq!(v, [0xff; 4]);
        bus.write(0x80, &[0x12]);
        assert_eq!(exit.reason(), None);
    }
}
