//! vCPU setup for x86_64: CPUID, MSRs, the local APIC, and the register
//! state at kernel entry (64-bit long mode with identity page tables for a
//! bzImage, 32-bit flat protected mode for PVH).

use kvm_bindings::{
    kvm_fpu, kvm_lapic_state, kvm_msr_entry, kvm_regs, kvm_segment, kvm_sregs, CpuId, Msrs,
};
use kvm_ioctls::VcpuFd;
use vm_memory::{Bytes, GuestAddress, GuestMemoryMmap};

use crate::boot::Entry;
use crate::layout;

/// Errors while setting up a vCPU.
#[derive(Debug, thiserror::Error)]
pub enum CpuError {
    /// A KVM ioctl failed.
    #[error("vCPU {what}: {source}")]
    Kvm {
        /// The step.
        what: &'static str,
        /// The cause.
        source: kvm_ioctls::Error,
    },
    /// Guest memory could not be written.
    #[error("writing boot structures: {0}")]
    Memory(#[from] vm_memory::GuestMemoryError),
}

fn kvm(what: &'static str) -> impl Fn(kvm_ioctls::Error) -> CpuError {
    move |source| CpuError::Kvm { what, source }
}

/// The CPUID of vCPU `id` of `count`, from what KVM supports.
/// `tsc_deadline`: KVM emulates the TSC-deadline timer
/// (`KVM_CAP_TSC_DEADLINE_TIMER`), which `KVM_GET_SUPPORTED_CPUID` leaves
/// for the VMM to announce.
pub fn cpuid_for(supported: &CpuId, id: u8, count: u8, tsc_deadline: bool) -> CpuId {
    let mut c = supported.clone();
    for e in c.as_mut_slice() {
        match e.function {
            1 => {
                // APIC id, logical processor count, CLFLUSH line size (8 * 8).
                e.ebx = (u32::from(id) << 24) | (u32::from(count) << 16) | (8 << 8);
                if count > 1 {
                    e.edx |= 1 << 28; // HTT: the count field is valid
                }
                e.ecx |= 1 << 31; // running under a hypervisor
                if tsc_deadline {
                    e.ecx |= 1 << 24;
                }
            }
            0xb | 0x1f => {
                // x2APIC topology: each vCPU is a core of one package.
                e.edx = u32::from(id);
                match e.index {
                    0 => {
                        e.eax = 0;
                        e.ebx = 1;
                        e.ecx = 1 << 8;
                    }
                    1 => {
                        e.eax = 8;
                        e.ebx = u32::from(count);
                        e.ecx = (2 << 8) | 1;
                    }
                    _ => {
                        e.eax = 0;
                        e.ebx = 0;
                        e.ecx = e.index;
                    }
                }
            }
            0x8000_0008 => {
                // AMD: number of cores minus one.
                e.ecx = (e.ecx & !0xff) | u32::from(count.saturating_sub(1));
            }
            _ => {}
        }
    }
    c
}

const MSR_IA32_SYSENTER_CS: u32 = 0x174;
const MSR_IA32_SYSENTER_ESP: u32 = 0x175;
const MSR_IA32_SYSENTER_EIP: u32 = 0x176;
const MSR_STAR: u32 = 0xc000_0081;
const MSR_LSTAR: u32 = 0xc000_0082;
const MSR_CSTAR: u32 = 0xc000_0083;
const MSR_SYSCALL_MASK: u32 = 0xc000_0084;
const MSR_KERNEL_GS_BASE: u32 = 0xc000_0102;
const MSR_IA32_MISC_ENABLE: u32 = 0x1a0;
const MSR_MTRR_DEF_TYPE: u32 = 0x2ff;

/// The MSRs set at boot, filtered to those KVM knows (`index_list`). The
/// TSC is left alone: KVM starts every vCPU's TSC in step, and writing it
/// per vCPU at different moments makes the guest see unsynchronized TSCs.
pub fn boot_msrs(index_list: &[u32]) -> Vec<kvm_msr_entry> {
    let wanted = [
        (MSR_IA32_SYSENTER_CS, 0),
        (MSR_IA32_SYSENTER_ESP, 0),
        (MSR_IA32_SYSENTER_EIP, 0),
        (MSR_STAR, 0),
        (MSR_CSTAR, 0),
        (MSR_KERNEL_GS_BASE, 0),
        (MSR_SYSCALL_MASK, 0),
        (MSR_LSTAR, 0),
        (MSR_IA32_MISC_ENABLE, 1),          // fast strings
        (MSR_MTRR_DEF_TYPE, (1 << 11) | 6), // MTRRs on, default write-back
    ];
    wanted
        .iter()
        .filter(|(i, _)| index_list.contains(i))
        .map(|&(index, data)| kvm_msr_entry {
            index,
            data,
            ..Default::default()
        })
        .collect()
}

const APIC_LVT0: usize = 0x350;
const APIC_LVT1: usize = 0x360;
const APIC_MODE_NMI: u32 = 0x4;
const APIC_MODE_EXTINT: u32 = 0x7;

fn lapic_get(l: &kvm_lapic_state, reg: usize) -> u32 {
    let b: [u8; 4] = std::array::from_fn(|i| l.regs[reg + i] as u8);
    u32::from_le_bytes(b)
}

fn lapic_set(l: &mut kvm_lapic_state, reg: usize, v: u32) {
    for (i, b) in v.to_le_bytes().iter().enumerate() {
        l.regs[reg + i] = *b as _;
    }
}

/// LINT0 delivers ExtINT (the PIC), LINT1 delivers NMI, as firmware leaves it.
pub fn set_lint(l: &mut kvm_lapic_state) {
    let v0 = lapic_get(l, APIC_LVT0);
    lapic_set(l, APIC_LVT0, (v0 & !0x700) | (APIC_MODE_EXTINT << 8));
    let v1 = lapic_get(l, APIC_LVT1);
    lapic_set(l, APIC_LVT1, (v1 & !0x700) | (APIC_MODE_NMI << 8));
}

/// A GDT entry from flags, base and limit.
pub const fn gdt_entry(flags: u16, base: u32, limit: u32) -> u64 {
    ((base as u64 & 0xff00_0000) << 32)
        | ((base as u64 & 0x00ff_ffff) << 16)
        | (limit as u64 & 0x0000_ffff)
        | ((limit as u64 & 0x000f_0000) << 32)
        | ((flags as u64 & 0xf0ff) << 40)
}

/// The boot GDT: null, 64-bit code (0x08), data (0x10), TSS (0x18),
/// 32-bit code (0x20).
pub const BOOT_GDT: [u64; 5] = [
    0,
    gdt_entry(0xa09b, 0, 0xfffff),
    gdt_entry(0xc093, 0, 0xfffff),
    gdt_entry(0x008b, 0, 0x67),
    gdt_entry(0xc09b, 0, 0xfffff),
];

/// The KVM segment described by GDT entry `index`.
pub fn segment(index: u16, entry: u64) -> kvm_segment {
    let base = ((entry >> 16) & 0xff_ffff) | ((entry >> 32) & 0xff00_0000);
    let limit_raw = (entry & 0xffff) | ((entry >> 32) & 0xf_0000);
    let g = ((entry >> 55) & 1) as u8;
    kvm_segment {
        base,
        limit: if g == 1 {
            ((limit_raw << 12) | 0xfff) as u32
        } else {
            limit_raw as u32
        },
        selector: index * 8,
        type_: ((entry >> 40) & 0xf) as u8,
        present: ((entry >> 47) & 1) as u8,
        dpl: ((entry >> 45) & 3) as u8,
        db: ((entry >> 54) & 1) as u8,
        s: ((entry >> 44) & 1) as u8,
        l: ((entry >> 53) & 1) as u8,
        g,
        avl: ((entry >> 52) & 1) as u8,
        unusable: 0,
        padding: 0,
    }
}

/// Real-mode code at the reset vector (F000:FFF0): write the ACPI reset
/// value to the reset register, then halt. There is no BIOS to jump back
/// into; a kernel that restarts through the reset vector (the BIOS reboot
/// method) ends up here and resets the VM.
pub const RESET_VECTOR_CODE: [u8; 9] = [
    0xb0,
    crate::acpi::RESET_VALUE, // mov al, RESET_VALUE
    0xba,
    (crate::acpi::RESET_PORT & 0xff) as u8,
    (crate::acpi::RESET_PORT >> 8) as u8, // mov dx, RESET_PORT
    0xee,                                 // out dx, al
    0xf4,                                 // hlt
    0xeb,
    0xfd, // jmp back to hlt
];

/// The physical address of the reset vector.
pub const RESET_VECTOR: u64 = 0xf_fff0;

/// Writes the GDT, an empty IDT, identity page tables for the first 4 GiB,
/// and the reset-vector stub.
pub fn write_boot_tables(mem: &GuestMemoryMmap) -> Result<(), CpuError> {
    mem.write_slice(&RESET_VECTOR_CODE, GuestAddress(RESET_VECTOR))?;
    for (i, e) in BOOT_GDT.iter().enumerate() {
        mem.write_obj(*e, GuestAddress(layout::GDT + 8 * i as u64))?;
    }
    mem.write_obj(0u64, GuestAddress(layout::IDT))?;
    mem.write_obj(layout::PDPT | 0x3, GuestAddress(layout::PML4))?;
    for d in 0..4u64 {
        let pd = layout::PD + d * 0x1000;
        mem.write_obj(pd | 0x3, GuestAddress(layout::PDPT + 8 * d))?;
        for i in 0..512u64 {
            let addr = ((d * 512 + i) << 21) | 0x83; // present, writable, 2 MiB
            mem.write_obj(addr, GuestAddress(pd + 8 * i))?;
        }
    }
    Ok(())
}

const CR0_PE: u64 = 1;
const CR0_ET: u64 = 1 << 4;
const CR0_PG: u64 = 1 << 31;
const CR4_PAE: u64 = 1 << 5;
const EFER_LME: u64 = 1 << 8;
const EFER_LMA: u64 = 1 << 10;

/// Special registers at entry.
pub fn entry_sregs(mut s: kvm_sregs, entry: Entry) -> kvm_sregs {
    s.gdt.base = layout::GDT;
    s.gdt.limit = (BOOT_GDT.len() * 8 - 1) as u16;
    s.idt.base = layout::IDT;
    s.idt.limit = 7;
    let code = match entry {
        Entry::Linux64(_) => segment(1, BOOT_GDT[1]),
        Entry::Pvh(_) => segment(4, BOOT_GDT[4]),
    };
    let data = segment(2, BOOT_GDT[2]);
    s.cs = code;
    s.ds = data;
    s.es = data;
    s.fs = data;
    s.gs = data;
    s.ss = data;
    s.tr = segment(3, BOOT_GDT[3]);
    match entry {
        Entry::Linux64(_) => {
            s.cr3 = layout::PML4;
            s.cr4 |= CR4_PAE;
            s.cr0 |= CR0_PE | CR0_PG | CR0_ET;
            s.efer |= EFER_LME | EFER_LMA;
        }
        Entry::Pvh(_) => {
            s.cr0 = CR0_PE | CR0_ET;
            s.cr4 = 0;
            s.efer = 0;
        }
    }
    s
}

/// General registers at entry.
pub fn entry_regs(entry: Entry) -> kvm_regs {
    match entry {
        Entry::Linux64(rip) => kvm_regs {
            rflags: 2,
            rip,
            rsp: layout::BOOT_STACK,
            rbp: layout::BOOT_STACK,
            rsi: layout::ZERO_PAGE,
            ..Default::default()
        },
        Entry::Pvh(rip) => kvm_regs {
            rflags: 2,
            rip,
            rbx: layout::PVH_START_INFO,
            ..Default::default()
        },
    }
}

/// Sets up vCPU `id` of `count`; the boot vCPU (0) also gets the entry state.
pub fn setup_vcpu(
    vcpu: &VcpuFd,
    id: u8,
    count: u8,
    supported: &CpuId,
    tsc_deadline: bool,
    msr_index: &[u32],
    entry: Entry,
) -> Result<(), CpuError> {
    vcpu.set_cpuid2(&cpuid_for(supported, id, count, tsc_deadline))
        .map_err(kvm("set CPUID"))?;
    let msrs = Msrs::from_entries(&boot_msrs(msr_index)).map_err(|_| CpuError::Kvm {
        what: "build MSR list",
        source: kvm_ioctls::Error::new(libc::EINVAL),
    })?;
    vcpu.set_msrs(&msrs).map_err(kvm("set MSRs"))?;
    let mut lapic = vcpu.get_lapic().map_err(kvm("get LAPIC"))?;
    set_lint(&mut lapic);
    vcpu.set_lapic(&lapic).map_err(kvm("set LAPIC"))?;
    let fpu = kvm_fpu {
        fcw: 0x37f,
        mxcsr: 0x1f80,
        ..Default::default()
    };
    vcpu.set_fpu(&fpu).map_err(kvm("set FPU"))?;
    if id == 0 {
        let sregs = vcpu.get_sregs().map_err(kvm("get sregs"))?;
        vcpu.set_sregs(&entry_sregs(sregs, entry))
            .map_err(kvm("set sregs"))?;
        vcpu.set_regs(&entry_regs(entry)).map_err(kvm("set regs"))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use kvm_bindings::kvm_cpuid_entry2;

    #[test]
    fn gdt_entries_decode_to_flat_segments() {
        let cs = segment(1, BOOT_GDT[1]);
        assert_eq!((cs.base, cs.limit, cs.selector), (0, 0xffff_ffff, 8));
        assert_eq!((cs.l, cs.db, cs.present, cs.s, cs.type_), (1, 0, 1, 1, 0xb));
        let ds = segment(2, BOOT_GDT[2]);
        assert_eq!((ds.l, ds.db, ds.type_, ds.g), (0, 1, 3, 1));
        let cs32 = segment(4, BOOT_GDT[4]);
        assert_eq!((cs32.l, cs32.db, cs32.limit), (0, 1, 0xffff_ffff));
        let tr = segment(3, BOOT_GDT[3]);
        assert_eq!((tr.limit, tr.type_, tr.s), (0x67, 0xb, 0));
    }

    #[test]
    fn long_mode_and_pvh_entry_states() {
        let s = entry_sregs(kvm_sregs::default(), Entry::Linux64(0x100200));
        assert_eq!(s.cr0 & (CR0_PE | CR0_PG), CR0_PE | CR0_PG);
        assert_eq!(s.efer & (EFER_LME | EFER_LMA), EFER_LME | EFER_LMA);
        assert_eq!(s.cr3, layout::PML4);
        let p = entry_sregs(kvm_sregs::default(), Entry::Pvh(0x1000000));
        assert_eq!(p.cr0 & CR0_PG, 0);
        assert_eq!(p.cs.db, 1);
        assert_eq!(entry_regs(Entry::Pvh(5)).rbx, layout::PVH_START_INFO);
        assert_eq!(entry_regs(Entry::Linux64(5)).rsi, layout::ZERO_PAGE);
    }

    #[test]
    fn cpuid_carries_apic_id_and_hypervisor_bit() {
        let entries = [
            kvm_cpuid_entry2 {
                function: 1,
                ..Default::default()
            },
            kvm_cpuid_entry2 {
                function: 0xb,
                index: 1,
                ..Default::default()
            },
        ];
        let c = CpuId::from_entries(&entries).unwrap();
        let out = cpuid_for(&c, 3, 4, true);
        let l1 = out.as_slice()[0];
        assert_eq!(l1.ebx >> 24, 3);
        assert_eq!((l1.ebx >> 16) & 0xff, 4);
        assert_ne!(l1.ecx & (1 << 31), 0);
        assert_ne!(l1.ecx & (1 << 24), 0, "TSC deadline announced");
        assert_eq!(cpuid_for(&c, 0, 1, false).as_slice()[0].ecx & (1 << 24), 0);
        assert_eq!(out.as_slice()[1].edx, 3);
        assert_eq!(out.as_slice()[1].ebx, 4);
    }

    #[test]
    fn msrs_only_those_kvm_lists() {
        let m = boot_msrs(&[MSR_LSTAR, MSR_MTRR_DEF_TYPE]);
        assert_eq!(m.len(), 2);
        assert_eq!(m[1].data, (1 << 11) | 6);
    }

    #[test]
    fn lint_modes() {
        let mut l = kvm_lapic_state::default();
        set_lint(&mut l);
        assert_eq!((lapic_get(&l, APIC_LVT0) >> 8) & 7, APIC_MODE_EXTINT);
        assert_eq!((lapic_get(&l, APIC_LVT1) >> 8) & 7, APIC_MODE_NMI);
    }
}
