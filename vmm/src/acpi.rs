//! ACPI tables, built with `acpi_tables`: RSDP, XSDT, FADT (hardware-reduced),
//! MADT, DSDT and MCFG.
//!
//! The platform is hardware-reduced ACPI: there are no PM1 blocks, SCI or
//! PM timer. The guest powers off by writing `SLP_TYP(5) | SLP_EN` to the
//! sleep control register, and resets through the reset register. The power
//! button is a control-method button (`PNP0C0C`) notified by a Generic Event
//! Device (`ACPI0013`) whose interrupt the VMM raises; `_EVT` reads which
//! event fired from an I/O register.

use acpi_tables::aml::{
    self, AddressSpaceCacheable, And, Device, EISAName, Equal, Field, FieldAccessType, FieldEntry,
    FieldLockRule, FieldUpdateRule, If, Interrupt, Local, Method, Name, Notify, OpRegion,
    OpRegionSpace, Package, Path, ResourceTemplate, Store,
};
use acpi_tables::fadt::{FADTBuilder, Flags};
use acpi_tables::gas::{AccessSize, AddressSpace, GAS};
use acpi_tables::madt::{
    EnabledStatus, IoApic, LocalInterruptController, ProcessorLocalApic, MADT,
};
use acpi_tables::mcfg::MCFG;
use acpi_tables::rsdp::Rsdp;
use acpi_tables::sdt::Sdt;
use acpi_tables::xsdt::XSDT;
use acpi_tables::Aml;

use crate::layout;

/// OEM id in every table.
pub const OEM_ID: [u8; 6] = *b"OXBOW ";
/// OEM table id in every table.
pub const OEM_TABLE_ID: [u8; 8] = *b"OXBOWVMM";

/// The sleep control register (write `SLP_TYP << 2 | SLP_EN`).
pub const SLEEP_CONTROL_PORT: u16 = 0x600;
/// The sleep status register.
pub const SLEEP_STATUS_PORT: u16 = 0x601;
/// The reset register.
pub const RESET_PORT: u16 = 0x602;
/// The value that resets the machine when written to [`RESET_PORT`].
pub const RESET_VALUE: u8 = 0x1;
/// The GED event register: reading returns and clears the pending events.
pub const GED_PORT: u16 = 0x603;
/// GED event bit: the power button was pressed.
pub const GED_POWER_BUTTON: u8 = 1;
/// The interrupt (IOAPIC pin) of the GED.
pub const GED_GSI: u32 = 5;
/// `SLP_TYP` of S5 as the DSDT declares it.
pub const S5_SLP_TYP: u8 = 5;
/// The serial port's interrupt.
pub const SERIAL_GSI: u32 = 4;

/// The finished tables, each with its guest address.
#[derive(Debug, Clone)]
pub struct Tables {
    /// (address, bytes) for each table, the RSDP first.
    pub blobs: Vec<(u64, Vec<u8>)>,
}

impl Tables {
    /// The RSDP's address.
    pub fn rsdp(&self) -> u64 {
        self.blobs[0].0
    }

    /// The table with `signature`, if built.
    pub fn get(&self, signature: &[u8]) -> Option<&[u8]> {
        self.blobs
            .iter()
            .find(|(_, b)| b.starts_with(signature))
            .map(|(_, b)| b.as_slice())
    }
}

fn bytes(t: &dyn Aml) -> Vec<u8> {
    let mut v = Vec::new();
    t.to_aml_bytes(&mut v);
    v
}

/// The DSDT's AML body.
pub fn dsdt_body() -> Vec<u8> {
    // Each object is serialized within one statement: the builders borrow
    // their children, which live until the end of that statement.
    let mut v = Vec::new();
    Name::new(
        "_S5_".into(),
        &Package::new(vec![&S5_SLP_TYP, &S5_SLP_TYP, &0u8, &0u8]),
    )
    .to_aml_bytes(&mut v);
    Device::new(
        "_SB_.PWRB".into(),
        vec![
            &Name::new("_HID".into(), &EISAName::new("PNP0C0C")),
            &Name::new("_UID".into(), &0u8),
        ],
    )
    .to_aml_bytes(&mut v);
    let ged_addr = u64::from(GED_PORT);
    Device::new(
        "_SB_.GED_".into(),
        vec![
            &Name::new("_HID".into(), &"ACPI0013"),
            &Name::new("_UID".into(), &0u8),
            &Name::new(
                "_CRS".into(),
                &ResourceTemplate::new(vec![&Interrupt::new(true, true, false, false, GED_GSI)]),
            ),
            &OpRegion::new("GDST".into(), OpRegionSpace::SystemIO, &ged_addr, &1u8),
            &Field::new(
                "GDST".into(),
                FieldAccessType::Byte,
                FieldLockRule::NoLock,
                FieldUpdateRule::WriteAsZeroes,
                vec![FieldEntry::Named(*b"GDAT", 8)],
            ),
            &Method::new(
                "_EVT".into(),
                1,
                true,
                vec![
                    &Store::new(&Local(0), &Path::new("GDAT")),
                    &And::new(&Local(1), &Local(0), &GED_POWER_BUTTON),
                    &If::new(
                        &Equal::new(&Local(1), &GED_POWER_BUTTON),
                        vec![&Notify::new(&Path::new("\\_SB_.PWRB"), &0x80u8)],
                    ),
                ],
            ),
        ],
    )
    .to_aml_bytes(&mut v);
    // The PCI root bridge: bus 0, the config ports, all other I/O ports,
    // and the 32-bit BAR window; ECAM is reserved as a motherboard resource.
    Device::new(
        "_SB_.PCI0".into(),
        vec![
            &Name::new("_HID".into(), &EISAName::new("PNP0A08")),
            &Name::new("_CID".into(), &EISAName::new("PNP0A03")),
            &Name::new("_ADR".into(), &0u8),
            &Name::new("_SEG".into(), &0u8),
            &Name::new("_UID".into(), &0u8),
            &Name::new("_BBN".into(), &0u8),
            &Name::new(
                "_CRS".into(),
                &ResourceTemplate::new(vec![
                    &aml::AddressSpace::new_bus_number(0u16, 0u16),
                    &aml::IO::new(0xcf8, 0xcf8, 1, 8),
                    &aml::AddressSpace::new_io(0u16, 0xcf7u16, None),
                    &aml::AddressSpace::new_io(0xd00u16, 0xffffu16, None),
                    &aml::AddressSpace::new_memory(
                        AddressSpaceCacheable::NotCacheable,
                        true,
                        layout::PCI_MMIO32_START as u32,
                        (layout::PCI_MMIO32_END - 1) as u32,
                        None,
                    ),
                ]),
            ),
        ],
    )
    .to_aml_bytes(&mut v);
    Device::new(
        "_SB_.MRES".into(),
        vec![
            &Name::new("_HID".into(), &EISAName::new("PNP0C02")),
            &Name::new("_UID".into(), &0u8),
            &Name::new(
                "_CRS".into(),
                &ResourceTemplate::new(vec![&aml::Memory32Fixed::new(
                    false,
                    layout::PCI_ECAM as u32,
                    layout::PCI_ECAM_SIZE as u32,
                )]),
            ),
        ],
    )
    .to_aml_bytes(&mut v);
    Device::new(
        "_SB_.COM1".into(),
        vec![
            &Name::new("_HID".into(), &EISAName::new("PNP0501")),
            &Name::new("_UID".into(), &0u8),
            &Name::new(
                "_CRS".into(),
                &ResourceTemplate::new(vec![
                    &aml::IO::new(0x3f8, 0x3f8, 0, 8),
                    &Interrupt::new(true, true, false, false, SERIAL_GSI),
                ]),
            ),
        ],
    )
    .to_aml_bytes(&mut v);
    v
}

/// Builds all tables for `cpus` vCPUs, laid out from [`layout::ACPI_START`].
pub fn build(cpus: u8) -> Tables {
    let mut dsdt = Sdt::new(*b"DSDT", 36, 6, OEM_ID, OEM_TABLE_ID, 1);
    dsdt.append_slice(&dsdt_body());

    let mut madt = MADT::new(
        OEM_ID,
        OEM_TABLE_ID,
        1,
        LocalInterruptController::Address(layout::LAPIC as u32),
    );
    for id in 0..cpus {
        madt.add_structure(ProcessorLocalApic::new(id, id, EnabledStatus::Enabled));
    }
    madt.add_structure(IoApic::new(0, layout::IOAPIC as u32, 0));

    let mut mcfg = MCFG::new(OEM_ID, OEM_TABLE_ID, 1);
    mcfg.add_ecam(layout::PCI_ECAM, 0, 0, 0);

    // Layout: RSDP, then DSDT, FADT, MADT, MCFG, XSDT, each 16-byte aligned.
    let align = |a: u64| a.next_multiple_of(16);
    let rsdp_addr = layout::ACPI_START;
    let dsdt_addr = align(rsdp_addr + Rsdp::len() as u64);
    let fadt_addr = align(dsdt_addr + dsdt.len() as u64);

    let sleep_ctl = GAS::new(
        AddressSpace::SystemIo,
        8,
        0,
        AccessSize::ByteAccess,
        u64::from(SLEEP_CONTROL_PORT),
    );
    let sleep_sts = GAS::new(
        AddressSpace::SystemIo,
        8,
        0,
        AccessSize::ByteAccess,
        u64::from(SLEEP_STATUS_PORT),
    );
    let reset = GAS::new(
        AddressSpace::SystemIo,
        8,
        0,
        AccessSize::ByteAccess,
        u64::from(RESET_PORT),
    );
    let mut fb = FADTBuilder::new(OEM_ID, OEM_TABLE_ID, 1)
        .dsdt_64(dsdt_addr)
        .flag(Flags::HwReducedAcpi)
        .flag(Flags::ResetRegSup)
        .flag(Flags::PwrButton)
        .flag(Flags::SlpButton);
    fb.sleep_control_reg = sleep_ctl;
    fb.sleep_status_reg = sleep_sts;
    fb.reset_reg = reset;
    fb.reset_value = RESET_VALUE;
    // IA-PC boot flags: no VGA (bit 2), no CMOS RTC (bit 5). The i8042
    // flag stays clear: the kernel then skips probing a keyboard controller
    // that only implements the reset command.
    fb.iapc_boot_arch = (0x4u16 | 0x20).into();
    fb.hypervisor_vendor_identity = u64::from_le_bytes(*b"OXBOWVMM").into();
    let fadt = bytes(&fb.finalize());

    let madt_addr = align(fadt_addr + fadt.len() as u64);
    let madt = bytes(&madt);
    let mcfg_addr = align(madt_addr + madt.len() as u64);
    let mcfg = bytes(&mcfg);
    let xsdt_addr = align(mcfg_addr + mcfg.len() as u64);
    let mut xsdt = XSDT::new(OEM_ID, OEM_TABLE_ID, 1);
    xsdt.add_entry(fadt_addr);
    xsdt.add_entry(madt_addr);
    xsdt.add_entry(mcfg_addr);
    let xsdt = bytes(&xsdt);
    let rsdp = bytes(&Rsdp::new(OEM_ID, xsdt_addr));
    let end = xsdt_addr + xsdt.len() as u64;
    assert!(end <= layout::ACPI_END, "ACPI tables overflow their area");

    Tables {
        blobs: vec![
            (rsdp_addr, rsdp),
            (dsdt_addr, dsdt.as_slice().to_vec()),
            (fadt_addr, fadt),
            (madt_addr, madt),
            (mcfg_addr, mcfg),
            (xsdt_addr, xsdt),
        ],
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::process::Command;

    fn sum(b: &[u8]) -> u8 {
        b.iter().fold(0u8, |a, x| a.wrapping_add(*x))
    }

    #[test]
    fn every_table_checksums_to_zero_and_has_its_length() {
        let t = build(4);
        let rsdp = &t.blobs[0].1;
        assert_eq!(&rsdp[..8], b"RSD PTR ");
        assert_eq!(sum(&rsdp[..20]), 0);
        assert_eq!(sum(rsdp), 0);
        for (_, b) in &t.blobs[1..] {
            let len = u32::from_le_bytes(b[4..8].try_into().unwrap()) as usize;
            assert_eq!(len, b.len(), "{}", String::from_utf8_lossy(&b[..4]));
            assert_eq!(sum(b), 0, "{}", String::from_utf8_lossy(&b[..4]));
        }
    }

    #[test]
    fn tables_point_at_each_other() {
        let t = build(2);
        let addr = |sig: &[u8]| t.blobs.iter().find(|(_, b)| b.starts_with(sig)).unwrap().0;
        let rsdp = &t.blobs[0].1;
        let xsdt_addr = u64::from_le_bytes(rsdp[24..32].try_into().unwrap());
        assert_eq!(xsdt_addr, addr(b"XSDT"));
        let xsdt = t.get(b"XSDT").unwrap();
        let entries: Vec<u64> = xsdt[36..]
            .chunks(8)
            .map(|c| u64::from_le_bytes(c.try_into().unwrap()))
            .collect();
        assert_eq!(entries, vec![addr(b"FACP"), addr(b"APIC"), addr(b"MCFG")]);
        let fadt = t.get(b"FACP").unwrap();
        // X_DSDT at offset 140.
        assert_eq!(
            u64::from_le_bytes(fadt[140..148].try_into().unwrap()),
            addr(b"DSDT")
        );
        // Hardware-reduced flag (bit 20) at offset 112.
        let flags = u32::from_le_bytes(fadt[112..116].try_into().unwrap());
        assert_ne!(flags & (1 << 20), 0);
        // MADT: header 44 bytes, then two local APICs (8) and an IOAPIC (12).
        let madt = t.get(b"APIC").unwrap();
        assert_eq!(madt.len(), 44 + 2 * 8 + 12);
        assert_eq!(madt[44], 0);
        assert_eq!(madt[44 + 3], 0);
        assert_eq!(madt[52 + 3], 1);
        assert_eq!(madt[60], 1);
    }

    /// Decompiles every table with `iasl -d` (Debian's acpica-tools) and
    /// checks what it says about them.
    #[test]
    fn iasl_disassembles_the_tables() {
        if Command::new("iasl").arg("-v").output().is_err() {
            panic!("iasl not found: install acpica-tools (scripts/install-deps.sh)");
        }
        let dir = std::env::temp_dir().join(format!("vmm-acpi-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let t = build(2);
        let mut text = String::new();
        for (_, b) in &t.blobs[1..] {
            let sig = String::from_utf8_lossy(&b[..4]).to_lowercase();
            let dat = dir.join(format!("{sig}.dat"));
            std::fs::write(&dat, b).unwrap();
            let out = Command::new("iasl")
                .arg("-d")
                .arg(&dat)
                .current_dir(&dir)
                .output()
                .unwrap();
            assert!(
                out.status.success(),
                "iasl -d {sig}: {}",
                String::from_utf8_lossy(&out.stderr)
            );
            let dsl = std::fs::read_to_string(dir.join(format!("{sig}.dsl"))).unwrap();
            assert!(
                !dsl.contains("Invalid checksum") && !dsl.contains("Incorrect checksum"),
                "{dsl}"
            );
            text.push_str(&dsl);
        }
        std::fs::remove_dir_all(&dir).unwrap();
        for want in [
            "Name (_S5, Package",
            "Device (_SB.PWRB)",
            "EisaId (\"PNP0C0C\")",
            "Device (_SB.GED)",
            "\"ACPI0013\"",
            "Method (_EVT, 1, Serialized)",
            "Notify (\\_SB.PWRB, 0x80)",
            "OperationRegion (GDST, SystemIO, 0x0603, One)",
            "Hardware Reduced (V5) : 1",
            "Local Apic Address : FEE00000",
            "Address : FEC00000",
            "Base Address : 00000000E0000000",
            "Device (_SB.PCI0)",
            "EisaId (\"PNP0A08\")",
            "0xC0000000,         // Range Minimum",
            "0xDFFFFFFF,         // Range Maximum",
            "EisaId (\"PNP0C02\")",
        ] {
            assert!(text.contains(want), "missing {want:?} in\n{text}");
        }
    }
}
