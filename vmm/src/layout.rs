//! The guest physical memory map and the e820 table built from it.
//!
//! ```text
//! 0x0000_0500  GDT                       0x0000_9000  PML4
//! 0x0000_0520  IDT (empty)               0x0000_a000  PDPT
//! 0x0000_6000  PVH start info            0x0000_b000  4 page directories (4 GiB, 2 MiB pages)
//! 0x0000_6040  PVH memory map            0x0002_0000  kernel command line
//! 0x0000_7000  zero page (boot_params)   0x0009_fc00  end of low RAM
//! 0x0000_8ff0  boot stack (grows down)   0x000e_0000  ACPI tables (RSDP first)
//! 0x0010_0000  kernel                    initrd at the top of RAM below 3 GiB
//! 0xc000_0000  MMIO hole: PCI ECAM, 32-bit BARs, IOAPIC, LAPIC, up to 4 GiB
//! 0x1_0000_0000 RAM above the hole, when the guest has more than 3 GiB
//! ```

use kvm_bindings::kvm_userspace_memory_region;
use kvm_ioctls::VmFd;
use vm_memory::{
    GuestAddress, GuestMemoryBackend, GuestMemoryMmap, GuestMemoryRegion, GuestRegionMmap,
    MmapRegion,
};

/// The GDT used while entering the kernel.
pub const GDT: u64 = 0x500;
/// An empty IDT (limit 0) so a stray exception shuts the guest down.
pub const IDT: u64 = 0x520;
/// The PVH `hvm_start_info`.
pub const PVH_START_INFO: u64 = 0x6000;
/// The PVH memory map, right after the start info.
pub const PVH_MEMMAP: u64 = 0x6040;
/// The Linux zero page (`boot_params`).
pub const ZERO_PAGE: u64 = 0x7000;
/// The initial stack pointer.
pub const BOOT_STACK: u64 = 0x8ff0;
/// The top-level page table.
pub const PML4: u64 = 0x9000;
/// The page-directory-pointer table.
pub const PDPT: u64 = 0xa000;
/// The first of four page directories.
pub const PD: u64 = 0xb000;
/// The kernel command line.
pub const CMDLINE: u64 = 0x2_0000;
/// The largest command line we accept, terminator included.
pub const CMDLINE_MAX: usize = 4096;
/// End of the usable RAM below the EBDA.
pub const LOW_RAM_END: u64 = 0x9_fc00;
/// Start of the ACPI tables; the RSDP comes first, where a BIOS would put it.
pub const ACPI_START: u64 = 0xe_0000;
/// End of the ACPI area (exclusive).
pub const ACPI_END: u64 = 0x10_0000;
/// Where high memory (and the kernel) begins.
pub const HIGH_RAM_START: u64 = 0x10_0000;
/// Start of the 32-bit MMIO hole.
pub const MMIO_HOLE_START: u64 = 0xc000_0000;
/// End of the 32-bit MMIO hole.
pub const MMIO_HOLE_END: u64 = 0x1_0000_0000;
/// The PCI ECAM window (256 buses would need 256 MiB; we declare bus 0 only).
pub const PCI_ECAM: u64 = 0xe000_0000;
/// Size of the ECAM window for bus 0.
pub const PCI_ECAM_SIZE: u64 = 1 << 20;
/// 32-bit BARs are placed from here.
pub const PCI_MMIO32_START: u64 = 0xc000_0000;
/// End of the 32-bit BAR window.
pub const PCI_MMIO32_END: u64 = 0xe000_0000;
/// The IOAPIC.
pub const IOAPIC: u64 = 0xfec0_0000;
/// The local APICs.
pub const LAPIC: u64 = 0xfee0_0000;
/// The smallest guest we boot: the Debian kernel alone needs ~64 MiB to unpack.
pub const MIN_MEMORY_MIB: u64 = 128;

/// The e820 entry types we use.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum E820Kind {
    /// Usable RAM.
    Ram = 1,
    /// Reserved.
    Reserved = 2,
}

/// One e820 entry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct E820Entry {
    /// First byte.
    pub addr: u64,
    /// Length in bytes.
    pub size: u64,
    /// Kind.
    pub kind: E820Kind,
}

/// Registers every region of `mem` with KVM, one slot each.
///
/// # Safety
///
/// `mem` must stay mapped for as long as `vm` (and its vCPUs) can run:
/// KVM keeps using the host addresses after this returns.
pub unsafe fn register_memory(vm: &VmFd, mem: &GuestMemoryMmap) -> Result<(), String> {
    for (slot, region) in mem.iter().enumerate() {
        let host = mem
            .get_host_address(region.start_addr())
            .map_err(|e| e.to_string())?;
        let r = kvm_userspace_memory_region {
            slot: slot as u32,
            guest_phys_addr: region.start_addr().0,
            memory_size: region.len(),
            userspace_addr: host as u64,
            flags: 0,
        };
        // SAFETY: the region is a live mapping of `mem`, which the caller
        // keeps alive as long as the VM (this function's contract).
        unsafe { vm.set_user_memory_region(r) }
            .map_err(|e| format!("KVM set memory region: {e}"))?;
    }
    Ok(())
}

/// The RAM regions of a guest with `mem_bytes` of memory, as (start, size).
pub fn ram_regions(mem_bytes: u64) -> Vec<(GuestAddress, usize)> {
    if mem_bytes <= MMIO_HOLE_START {
        vec![(GuestAddress(0), mem_bytes as usize)]
    } else {
        vec![
            (GuestAddress(0), MMIO_HOLE_START as usize),
            (
                GuestAddress(MMIO_HOLE_END),
                (mem_bytes - MMIO_HOLE_START) as usize,
            ),
        ]
    }
}

/// The boundary guest RAM is mapped on: a transparent huge page.
pub const HUGE_PAGE: usize = 2 << 20;

/// Maps the guest's RAM regions ([`ram_regions`]), each on a [`HUGE_PAGE`]
/// boundary of the VMM's address space and advised for transparent huge
/// pages.
///
/// KVM backs guest memory with 2 MiB entries of the (nested) page table
/// only where the guest-physical and the host-virtual address agree
/// modulo 2 MiB and the host page is huge. `mmap` alone is only page
/// aligned, so without this every 4 KiB page the guest touches is its own
/// fault, and nested each one is a trip through the outer hypervisor.
///
/// Each region is reserved with 2 MiB of slack and the aligned part mapped
/// over it; the slack stays reserved (`PROT_NONE`), so that nothing else,
/// a thread stack for instance, lands beside the guest on a huge page of
/// its own. The mapping is never unmapped: a VMM process runs one VM.
pub fn map_guest_ram(mem_bytes: u64) -> Result<GuestMemoryMmap, String> {
    let mut regions = Vec::new();
    for (start, size) in ram_regions(mem_bytes) {
        let addr = map_aligned(size)?;
        // SAFETY: `addr..addr+size` is the anonymous read-write mapping
        // just made, with these prot and flags; it is never unmapped.
        let mmap = unsafe {
            MmapRegion::build_raw(
                addr,
                size,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_NORESERVE,
            )
        }
        .map_err(|e| format!("guest RAM: {e}"))?;
        regions.push(
            GuestRegionMmap::new(mmap, start)
                .ok_or_else(|| format!("guest RAM at {:#x} overflows", start.0))?,
        );
    }
    GuestMemoryMmap::from_regions(regions).map_err(|e| format!("guest RAM: {e}"))
}

/// An anonymous read-write mapping of `size` bytes starting on a
/// [`HUGE_PAGE`] boundary, advised for huge pages.
fn map_aligned(size: usize) -> Result<*mut u8, String> {
    let err = |what: &str| format!("guest RAM: {what}: {}", std::io::Error::last_os_error());
    let span = size
        .checked_add(HUGE_PAGE)
        .ok_or_else(|| format!("guest RAM of {size} bytes is too large"))?;
    // SAFETY: a fresh reservation; nothing else refers to it.
    let base = unsafe {
        libc::mmap(
            std::ptr::null_mut(),
            span,
            libc::PROT_NONE,
            libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_NORESERVE,
            -1,
            0,
        )
    };
    if base == libc::MAP_FAILED {
        return Err(err("reserving address space"));
    }
    let aligned = (base as usize).next_multiple_of(HUGE_PAGE);
    // SAFETY: `aligned..aligned+size` lies inside the reservation above,
    // which only this function knows of.
    let addr = unsafe {
        libc::mmap(
            aligned as *mut libc::c_void,
            size,
            libc::PROT_READ | libc::PROT_WRITE,
            libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_NORESERVE | libc::MAP_FIXED,
            -1,
            0,
        )
    };
    if addr == libc::MAP_FAILED {
        let e = err("mapping");
        // SAFETY: the reservation made above, not yet handed out.
        unsafe { libc::munmap(base, span) };
        return Err(e);
    }
    // Only advice: a kernel without transparent huge pages refuses it and
    // the guest runs on small pages.
    // SAFETY: the mapping made above.
    unsafe { libc::madvise(addr, size, libc::MADV_HUGEPAGE) };
    Ok(addr as *mut u8)
}

/// The end of RAM below the MMIO hole.
pub fn low_ram_end(mem_bytes: u64) -> u64 {
    mem_bytes.min(MMIO_HOLE_START)
}

/// The e820 map of a guest with `mem_bytes` of memory.
pub fn e820(mem_bytes: u64) -> Vec<E820Entry> {
    let mut v = vec![
        E820Entry {
            addr: 0,
            size: LOW_RAM_END,
            kind: E820Kind::Ram,
        },
        E820Entry {
            addr: LOW_RAM_END,
            size: HIGH_RAM_START - LOW_RAM_END,
            kind: E820Kind::Reserved,
        },
        E820Entry {
            addr: HIGH_RAM_START,
            size: low_ram_end(mem_bytes) - HIGH_RAM_START,
            kind: E820Kind::Ram,
        },
    ];
    if mem_bytes > MMIO_HOLE_START {
        v.push(E820Entry {
            addr: MMIO_HOLE_END,
            size: mem_bytes - MMIO_HOLE_START,
            kind: E820Kind::Ram,
        });
    }
    v
}

#[cfg(test)]
mod tests {
    use super::*;

    const MIB: u64 = 1 << 20;

    #[test]
    fn guest_ram_is_huge_page_aligned() {
        for mib in [128, 300, 3072 + 64] {
            let mem = map_guest_ram(mib * MIB).unwrap();
            let regions: Vec<_> = mem.iter().collect();
            assert_eq!(regions.len(), ram_regions(mib * MIB).len());
            let mut total = 0;
            for r in regions {
                let host = mem.get_host_address(r.start_addr()).unwrap() as usize;
                assert_eq!(host % HUGE_PAGE, 0, "{mib} MiB guest");
                total += r.len();
            }
            assert_eq!(total, mib * MIB);
            // Writable at both ends.
            let hole = if mib * MIB > MMIO_HOLE_START {
                MMIO_HOLE_END - MMIO_HOLE_START
            } else {
                0
            };
            let last = GuestAddress(mib * MIB - 8 + hole);
            use vm_memory::Bytes;
            mem.write_obj(0x1234_5678u64, GuestAddress(0)).unwrap();
            mem.write_obj(0x8765_4321u64, last).unwrap();
            assert_eq!(mem.read_obj::<u64>(last).unwrap(), 0x8765_4321);
        }
    }

    fn ends_ordered(v: &[E820Entry]) -> bool {
        v.windows(2).all(|w| w[0].addr + w[0].size <= w[1].addr)
    }

    #[test]
    fn small_guest_has_low_ram_hole_and_high_ram() {
        let v = e820(256 * MIB);
        assert_eq!(v.len(), 3);
        assert_eq!(
            v[0],
            E820Entry {
                addr: 0,
                size: 0x9_fc00,
                kind: E820Kind::Ram
            }
        );
        assert_eq!(v[1].kind, E820Kind::Reserved);
        assert_eq!(v[1].addr + v[1].size, 0x10_0000);
        assert_eq!(v[2].addr, 0x10_0000);
        assert_eq!(v[2].addr + v[2].size, 256 * MIB);
        assert!(ends_ordered(&v));
        let ram: u64 = v
            .iter()
            .filter(|e| e.kind == E820Kind::Ram)
            .map(|e| e.size)
            .sum();
        assert_eq!(ram, 256 * MIB - (0x10_0000 - 0x9_fc00));
    }

    #[test]
    fn big_guest_splits_around_the_mmio_hole() {
        let v = e820(4096 * MIB);
        assert_eq!(v.len(), 4);
        assert_eq!(v[2].addr + v[2].size, MMIO_HOLE_START);
        assert_eq!(v[3].addr, 1 << 32);
        assert_eq!(v[3].size, 1 << 30);
        assert!(ends_ordered(&v));
        let r = ram_regions(4096 * MIB);
        assert_eq!(r.len(), 2);
        assert_eq!(r[0].1 as u64 + r[1].1 as u64, 4096 * MIB);
    }

    #[test]
    fn fixed_structures_do_not_overlap() {
        let spots = [
            (GDT, 0x20),
            (IDT, 0x8),
            (PVH_START_INFO, 0x40),
            (PVH_MEMMAP, 0x400),
            (ZERO_PAGE, 0x1000),
            (PML4, 0x1000),
            (PDPT, 0x1000),
            (PD, 0x4000),
            (CMDLINE, CMDLINE_MAX as u64),
        ];
        for (i, a) in spots.iter().enumerate() {
            assert!(a.0 + a.1 <= LOW_RAM_END);
            for b in &spots[i + 1..] {
                assert!(
                    a.0 + a.1 <= b.0 || b.0 + b.1 <= a.0,
                    "{a:x?} overlaps {b:x?}"
                );
            }
        }
        const { assert!(BOOT_STACK > ZERO_PAGE + 0x1000 && BOOT_STACK < PML4) };
    }
}
