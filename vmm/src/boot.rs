//! Loading the kernel and initrd and writing what the kernel reads at entry:
//! the zero page (bzImage, Linux boot protocol) or the `hvm_start_info`
//! (ELF `vmlinux` through its PVH entry).

use std::fs::File;
use std::io::Seek;
use std::path::Path;

use linux_loader::loader::bootparam::{boot_params, setup_header};
use linux_loader::loader::elf::start_info::{hvm_memmap_table_entry, hvm_start_info};
use linux_loader::loader::{BzImage, Elf, KernelLoader, PvhBootCapability};
use vm_memory::{Bytes, GuestAddress, GuestMemoryMmap};

use crate::kcache::{KernelCache, Source};
use crate::layout::{self, E820Entry};

/// How the vCPU enters the kernel.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Entry {
    /// 64-bit entry of a bzImage: `rip`, with `rsi` pointing at the zero page.
    Linux64(u64),
    /// PVH 32-bit entry of an ELF kernel: `rip`, with `ebx` pointing at the
    /// start info.
    Pvh(u64),
}

/// Errors while loading the guest's software.
#[derive(Debug, thiserror::Error)]
pub enum BootError {
    /// The kernel file cannot be opened or read.
    #[error("kernel {path}: {source}")]
    KernelFile {
        /// The path.
        path: String,
        /// The cause.
        source: std::io::Error,
    },
    /// The kernel is neither a bzImage nor an ELF with a PVH entry.
    #[error("kernel {path}: not a bzImage ({bz}) nor an ELF vmlinux ({elf})")]
    KernelFormat {
        /// The path.
        path: String,
        /// Why the bzImage loader refused it.
        bz: linux_loader::loader::Error,
        /// Why the ELF loader refused it.
        elf: linux_loader::loader::Error,
    },
    /// An ELF kernel without the PVH note.
    #[error("kernel {0}: ELF without a PVH entry note (XEN_ELFNOTE_PHYS32_ENTRY)")]
    NoPvhEntry(String),
    /// The bzImage is too old for a 64-bit entry.
    #[error("kernel {0}: boot protocol {1:#x} without a 64-bit entry point (need 2.12+ with XLF_KERNEL_64)")]
    No64BitEntry(String, u16),
    /// The initrd cannot be read.
    #[error("initrd {path}: {source}")]
    InitrdFile {
        /// The path.
        path: String,
        /// The cause.
        source: std::io::Error,
    },
    /// The initrd does not fit.
    #[error("initrd of {size} bytes does not fit in guest memory above the kernel (ends at {kernel_end:#x}, limit {limit:#x})")]
    InitrdTooBig {
        /// Its size.
        size: u64,
        /// End of the kernel.
        kernel_end: u64,
        /// Highest address usable.
        limit: u64,
    },
    /// The command line is too long or has a NUL.
    #[error("kernel command line: {0}")]
    Cmdline(String),
    /// Guest memory could not be written.
    #[error("writing guest memory: {0}")]
    Memory(#[from] vm_memory::GuestMemoryError),
}

/// What was loaded where.
#[derive(Debug, Clone, Copy)]
pub struct Loaded {
    /// How to enter the kernel.
    pub entry: Entry,
    /// The initrd, as (address, size).
    pub initrd: Option<(u64, u64)>,
    /// The bzImage's setup header (None for ELF).
    pub header: Option<setup_header>,
    /// Byte after the kernel image.
    pub kernel_end: u64,
}

const XLF_KERNEL_64: u16 = 1;

/// Loads the ELF kernel `f` into guest memory: `Some` with its PVH entry,
/// `None` for an ELF without the PVH note.
fn load_pvh_elf(
    mem: &GuestMemoryMmap,
    f: &mut File,
) -> Result<Option<Loaded>, linux_loader::loader::Error> {
    let r = Elf::load(mem, None, f, Some(GuestAddress(layout::HIGH_RAM_START)))?;
    Ok(match r.pvh_boot_cap {
        PvhBootCapability::PvhEntryPresent(a) => Some(Loaded {
            entry: Entry::Pvh(a.0),
            initrd: None,
            header: None,
            kernel_end: r.kernel_end,
        }),
        _ => None,
    })
}

/// Loads `kernel` (bzImage or PVH ELF) into guest memory. With `cache`, a
/// bzImage whose payload the cache can unpack boots as that ELF instead,
/// through its PVH entry ([`crate::kcache`]).
pub fn load_kernel(
    mem: &GuestMemoryMmap,
    kernel: &Path,
    cache: Option<&KernelCache>,
) -> Result<Loaded, BootError> {
    let path = kernel.display().to_string();
    if let Some((mut f, source)) = cache.and_then(|c| c.vmlinux(kernel)) {
        let loaded = match f.rewind().map(|()| load_pvh_elf(mem, &mut f)) {
            Ok(Ok(Some(l))) => Ok(l),
            Ok(Ok(None)) => Err("no PVH entry note".to_string()),
            Ok(Err(e)) => Err(e.to_string()),
            Err(e) => Err(e.to_string()),
        };
        match loaded {
            Ok(l) => {
                let how = match source {
                    Source::Cached => "kept in the kernel cache",
                    Source::Unpacked => "unpacked now",
                };
                eprintln!("vmm: kernel {path}: booting its vmlinux, {how}, through the PVH entry");
                return Ok(l);
            }
            Err(e) => {
                eprintln!("vmm: kernel {path}: its unpacked vmlinux: {e}; booting the bzImage")
            }
        }
    }
    let open = || {
        File::open(kernel).map_err(|source| BootError::KernelFile {
            path: path.clone(),
            source,
        })
    };
    let elf = match load_pvh_elf(mem, &mut open()?) {
        Ok(Some(loaded)) => return Ok(loaded),
        Ok(None) => return Err(BootError::NoPvhEntry(path)),
        Err(e) => e,
    };
    let mut f = open()?;
    match BzImage::load(
        mem,
        None,
        &mut f,
        Some(GuestAddress(layout::HIGH_RAM_START)),
    ) {
        Ok(r) => {
            let hdr = r.setup_header.unwrap_or_default();
            if hdr.version < 0x020c || hdr.xloadflags & XLF_KERNEL_64 == 0 {
                return Err(BootError::No64BitEntry(path, hdr.version));
            }
            Ok(Loaded {
                entry: Entry::Linux64(r.kernel_load.0 + 0x200),
                initrd: None,
                header: Some(hdr),
                kernel_end: r.kernel_end,
            })
        }
        Err(bz) => Err(BootError::KernelFormat { path, bz, elf }),
    }
}

/// Where an initrd of `size` bytes goes: page aligned, as high as possible
/// below `limit` (the kernel's `initrd_addr_max` and the end of low RAM).
pub fn initrd_address(size: u64, kernel_end: u64, limit: u64) -> Option<u64> {
    let top = limit.checked_sub(size)? & !0xfff;
    (top >= kernel_end.next_multiple_of(0x1000)).then_some(top)
}

/// Loads the initrd, high in low RAM, and records it in `loaded`.
pub fn load_initrd(
    mem: &GuestMemoryMmap,
    mem_bytes: u64,
    initrd: &Path,
    loaded: &mut Loaded,
) -> Result<(), BootError> {
    let path = initrd.display().to_string();
    let err = |source| BootError::InitrdFile {
        path: path.clone(),
        source,
    };
    let mut f = File::open(initrd).map_err(err)?;
    let size = f.metadata().map_err(err)?.len();
    let mut limit = layout::low_ram_end(mem_bytes);
    if let Some(h) = loaded.header {
        limit = limit.min(u64::from(h.initrd_addr_max) + 1);
    }
    let addr = initrd_address(size, loaded.kernel_end, limit).ok_or(BootError::InitrdTooBig {
        size,
        kernel_end: loaded.kernel_end,
        limit,
    })?;
    mem.read_exact_volatile_from(GuestAddress(addr), &mut f, size as usize)
        .map_err(|e| match e {
            vm_memory::GuestMemoryError::IOError(io) => err(io),
            other => BootError::Memory(other),
        })?;
    loaded.initrd = Some((addr, size));
    Ok(())
}

/// Writes the NUL-terminated command line.
pub fn write_cmdline(mem: &GuestMemoryMmap, cmdline: &str) -> Result<(), BootError> {
    if cmdline.len() + 1 > layout::CMDLINE_MAX {
        return Err(BootError::Cmdline(format!(
            "{} bytes, at most {} allowed",
            cmdline.len(),
            layout::CMDLINE_MAX - 1
        )));
    }
    if cmdline.contains('\0') {
        return Err(BootError::Cmdline("contains a NUL byte".into()));
    }
    let mut bytes = cmdline.as_bytes().to_vec();
    bytes.push(0);
    mem.write_slice(&bytes, GuestAddress(layout::CMDLINE))?;
    Ok(())
}

/// The zero page for a bzImage.
pub fn zero_page(
    header: setup_header,
    cmdline_len: usize,
    initrd: Option<(u64, u64)>,
    e820: &[E820Entry],
    rsdp: u64,
) -> boot_params {
    let mut p = boot_params {
        hdr: header,
        ..Default::default()
    };
    p.hdr.type_of_loader = 0xff;
    p.hdr.boot_flag = 0xaa55;
    p.hdr.cmd_line_ptr = layout::CMDLINE as u32;
    p.hdr.cmdline_size = cmdline_len as u32;
    if let Some((addr, size)) = initrd {
        p.hdr.ramdisk_image = addr as u32;
        p.hdr.ramdisk_size = size as u32;
    }
    p.acpi_rsdp_addr = rsdp;
    for (slot, e) in p.e820_table.iter_mut().zip(e820) {
        slot.addr = e.addr;
        slot.size = e.size;
        slot.r#type = e.kind as u32;
    }
    p.e820_entries = e820.len().min(p.e820_table.len()) as u8;
    p
}

/// The PVH start info and its memory map.
pub fn pvh_start_info(
    e820: &[E820Entry],
    rsdp: u64,
) -> (hvm_start_info, Vec<hvm_memmap_table_entry>) {
    let map: Vec<_> = e820
        .iter()
        .map(|e| hvm_memmap_table_entry {
            addr: e.addr,
            size: e.size,
            type_: e.kind as u32,
            reserved: 0,
        })
        .collect();
    let info = hvm_start_info {
        magic: 0x336e_c578,
        version: 1,
        cmdline_paddr: layout::CMDLINE,
        rsdp_paddr: rsdp,
        memmap_paddr: layout::PVH_MEMMAP,
        memmap_entries: map.len() as u32,
        nr_modules: 0,
        modlist_paddr: 0,
        ..Default::default()
    };
    (info, map)
}

/// Writes the structures the kernel reads at entry.
pub fn write_boot_info(
    mem: &GuestMemoryMmap,
    loaded: &Loaded,
    cmdline: &str,
    mem_bytes: u64,
    rsdp: u64,
) -> Result<(), BootError> {
    write_cmdline(mem, cmdline)?;
    let e820 = layout::e820(mem_bytes);
    match (loaded.entry, loaded.header) {
        (Entry::Linux64(_), Some(h)) => {
            let zp = zero_page(h, cmdline.len(), loaded.initrd, &e820, rsdp);
            mem.write_obj(zp, GuestAddress(layout::ZERO_PAGE))?;
        }
        _ => {
            let (mut info, map) = pvh_start_info(&e820, rsdp);
            for (i, e) in map.iter().enumerate() {
                let at =
                    layout::PVH_MEMMAP + (i * std::mem::size_of::<hvm_memmap_table_entry>()) as u64;
                mem.write_obj(*e, GuestAddress(at))?;
            }
            if let Some((addr, size)) = loaded.initrd {
                // One module, the initrd; its descriptor follows the map.
                let at = layout::PVH_MEMMAP
                    + (map.len() * std::mem::size_of::<hvm_memmap_table_entry>()) as u64;
                let module = linux_loader::loader::elf::start_info::hvm_modlist_entry {
                    paddr: addr,
                    size,
                    cmdline_paddr: 0,
                    reserved: 0,
                };
                mem.write_obj(module, GuestAddress(at))?;
                info.nr_modules = 1;
                info.modlist_paddr = at;
            }
            mem.write_obj(info, GuestAddress(layout::PVH_START_INFO))?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    const MIB: u64 = 1 << 20;

    #[test]
    fn zero_page_carries_cmdline_initrd_rsdp_and_e820() {
        let hdr = setup_header {
            version: 0x020f,
            header: 0x5372_6448,
            initrd_addr_max: 0x7fff_ffff,
            ..Default::default()
        };
        let e820 = layout::e820(512 * MIB);
        let p = zero_page(hdr, 42, Some((0x1000_0000, 0x20_0000)), &e820, 0xe_0000);
        assert_eq!({ p.hdr.type_of_loader }, 0xff);
        assert_eq!({ p.hdr.boot_flag }, 0xaa55);
        assert_eq!({ p.hdr.cmd_line_ptr }, layout::CMDLINE as u32);
        assert_eq!({ p.hdr.cmdline_size }, 42);
        assert_eq!({ p.hdr.ramdisk_image }, 0x1000_0000);
        assert_eq!({ p.hdr.ramdisk_size }, 0x20_0000);
        assert_eq!({ p.acpi_rsdp_addr }, 0xe_0000);
        assert_eq!(p.e820_entries, 3);
        let last = p.e820_table[2];
        assert_eq!({ last.addr } + { last.size }, 512 * MIB);
        assert_eq!({ last.r#type }, 1);
        assert_eq!({ p.e820_table[1].r#type }, 2);
        // The zero page is exactly one page, as the boot protocol lays it out.
        assert_eq!(std::mem::size_of::<boot_params>(), 4096);
    }

    #[test]
    fn initrd_goes_high_and_page_aligned() {
        let a = initrd_address(0x12345, 0x200_0000, 256 * MIB).unwrap();
        assert_eq!(a % 0x1000, 0);
        assert!(a + 0x12345 <= 256 * MIB);
        assert!(256 * MIB - (a + 0x12345) < 0x1000);
        assert_eq!(initrd_address(300 * MIB, 0x200_0000, 256 * MIB), None);
        assert_eq!(initrd_address(255 * MIB, 0x200_0000, 256 * MIB), None);
    }

    #[test]
    fn pvh_start_info_has_magic_and_map() {
        let e820 = layout::e820(256 * MIB);
        let (info, map) = pvh_start_info(&e820, 0xe_0000);
        assert_eq!({ info.magic }, 0x336e_c578);
        assert_eq!({ info.memmap_entries }, 3);
        assert_eq!(map[2].addr + map[2].size, 256 * MIB);
        assert_eq!({ info.rsdp_paddr }, 0xe_0000);
        assert_eq!({ info.cmdline_paddr }, layout::CMDLINE);
    }

    #[test]
    fn garbage_kernel_is_refused() {
        let mem: GuestMemoryMmap =
            GuestMemoryMmap::from_ranges(&layout::ram_regions(128 * MIB)).unwrap();
        let dir = std::env::temp_dir().join(format!("vmm-boot-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let k = dir.join("garbage");
        std::fs::write(&k, vec![0x5a; 8192]).unwrap();
        let e = load_kernel(&mem, &k, None).unwrap_err();
        assert!(matches!(e, BootError::KernelFormat { .. }), "{e}");
        let e = load_kernel(&mem, &dir.join("missing"), None).unwrap_err();
        assert!(matches!(e, BootError::KernelFile { .. }), "{e}");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
