//! Kernels unpacked from bzImages, kept for the next boot.
//!
//! A bzImage carries the kernel as a compressed ELF `vmlinux` which its own
//! decompressor unpacks inside the guest on every boot. For Debian's kernel
//! nested under emulation that is about four seconds of every start. With a
//! cache directory (`--kernel-cache`), the VMM unpacks an xz payload itself
//! the first time, keeps the ELF, and boots it through its PVH entry. The
//! next boot of the same file loads the kept ELF and skips the decompressor.
//!
//! - An entry is named after the kernel file's identity: device, inode,
//!   size, modification and change times. Any write to the file, or a new
//!   file in its place, changes the name, so a stale entry is never used.
//! - An entry is written whole or not at all: an unnamed file in the
//!   directory (`O_TMPFILE`), flushed, then linked under its name. A crash
//!   leaves nothing behind.
//! - The directory keeps at most [`MAX_ENTRIES`] kernels; the least recently
//!   used goes first.
//! - Anything unusual (another compression, a payload that is not an ELF
//!   with a PVH note, a directory that cannot be written) returns `None` and
//!   the bzImage boots as it always did.

use std::ffi::CString;
use std::fs::{File, OpenOptions};
use std::io::{Read, Write};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{DirBuilderExt, MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

/// How many kernels the cache keeps.
pub const MAX_ENTRIES: usize = 4;
/// The largest unpacked kernel accepted (Debian's is about 63 MiB).
pub const MAX_UNPACKED: u64 = 512 << 20;
/// The xz stream's magic.
const XZ_MAGIC: &[u8] = &[0xfd, b'7', b'z', b'X', b'Z', 0];

/// Where a kernel's ELF came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Source {
    /// Read from the cache.
    Cached,
    /// Unpacked now (and kept, if the cache could be written).
    Unpacked,
}

/// The compressed payload of a bzImage: the bytes between
/// `payload_offset` and `payload_offset + payload_length` of the
/// protected-mode part (boot protocol 2.08 and later). `None` if `image`
/// is not such a bzImage.
pub fn payload(image: &[u8]) -> Option<&[u8]> {
    let u32_at = |off: usize| -> Option<u32> {
        Some(u32::from_le_bytes(
            image.get(off..off + 4)?.try_into().ok()?,
        ))
    };
    if image.get(0x202..0x206)? != b"HdrS" {
        return None;
    }
    let version = u16::from_le_bytes(image.get(0x206..0x208)?.try_into().ok()?);
    if version < 0x0208 {
        return None;
    }
    let setup_sects = match *image.get(0x1f1)? {
        0 => 4,
        n => n as usize,
    };
    let start = (setup_sects + 1) * 512;
    let offset = start.checked_add(u32_at(0x248)? as usize)?;
    let end = offset.checked_add(u32_at(0x24c)? as usize)?;
    image.get(offset..end)
}

/// Unpacks an xz `payload` into the ELF it holds. The kernel's build
/// appends the unpacked size as four little-endian bytes after the stream;
/// it sizes the buffer, and the result must match it.
pub fn unpack_xz(payload: &[u8]) -> Result<Vec<u8>, String> {
    if !payload.starts_with(XZ_MAGIC) {
        return Err("the payload is not an xz stream".into());
    }
    let tail = payload
        .len()
        .checked_sub(4)
        .ok_or("the payload is too short")?;
    let size = u64::from(u32::from_le_bytes(
        payload[tail..].try_into().expect("four bytes"),
    ));
    if size > MAX_UNPACKED {
        return Err(format!("the payload claims {size} bytes unpacked"));
    }
    let mut out = Vec::with_capacity(size as usize);
    // One stream only: the size after it is not a second stream. `take`
    // bounds the output whatever the stream says.
    liblzma::read::XzDecoder::new(&payload[..tail])
        .take(size + 1)
        .read_to_end(&mut out)
        .map_err(|e| format!("unpacking the xz payload: {e}"))?;
    if out.len() as u64 != size {
        return Err(format!(
            "the payload unpacked to {} bytes, not the {size} it announces",
            out.len()
        ));
    }
    if !out.starts_with(b"\x7fELF") {
        return Err("the payload did not unpack to an ELF file".into());
    }
    Ok(out)
}

/// A directory of unpacked kernels.
#[derive(Debug, Clone)]
pub struct KernelCache {
    dir: PathBuf,
}

impl KernelCache {
    /// The cache in `dir`, made (mode 0700) if missing.
    pub fn open(dir: &Path) -> std::io::Result<Self> {
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir)?;
        Ok(KernelCache {
            dir: dir.to_path_buf(),
        })
    }

    /// The entry's name for the kernel file with metadata `m`.
    pub fn entry_name(m: &std::fs::Metadata) -> String {
        format!(
            "{:x}-{:x}-{:x}-{:x}.{:x}-{:x}.{:x}.vmlinux",
            m.dev(),
            m.ino(),
            m.size(),
            m.mtime(),
            m.mtime_nsec(),
            m.ctime(),
            m.ctime_nsec()
        )
    }

    /// The kept ELF of `kernel`, or the ELF unpacked from it now (and kept).
    /// `None` when `kernel` is not a bzImage with an xz payload, or when the
    /// payload is not what a kernel build makes; the caller then boots the
    /// bzImage itself. Failing to keep the ELF is reported and not an error.
    pub fn vmlinux(&self, kernel: &Path) -> Option<(File, Source)> {
        let mut file = File::open(kernel).ok()?;
        let name = Self::entry_name(&file.metadata().ok()?);
        let entry = self.dir.join(&name);
        if let Ok(f) = File::open(&entry) {
            // Its modification time orders the least recently used.
            let _ = f.set_modified(std::time::SystemTime::now());
            return Some((f, Source::Cached));
        }
        let mut image = Vec::new();
        file.read_to_end(&mut image).ok()?;
        let payload = payload(&image)?;
        if !payload.starts_with(XZ_MAGIC) {
            return None;
        }
        let elf = match unpack_xz(payload) {
            Ok(elf) => elf,
            Err(e) => {
                eprintln!("vmm: kernel {}: {e}; booting the bzImage", kernel.display());
                return None;
            }
        };
        drop(image);
        match self.keep(&name, &elf) {
            Ok(f) => Some((f, Source::Unpacked)),
            Err(e) => {
                eprintln!(
                    "vmm: kernel cache {}: {e}; the unpacked kernel is not kept",
                    self.dir.display()
                );
                Some((memfd_with(&elf).ok()?, Source::Unpacked))
            }
        }
    }

    /// Writes `elf` as entry `name`, whole or not at all, and returns it
    /// open for reading. Older entries beyond [`MAX_ENTRIES`] go.
    fn keep(&self, name: &str, elf: &[u8]) -> std::io::Result<File> {
        let mut f = OpenOptions::new()
            .read(true)
            .write(true)
            .mode(0o600)
            .custom_flags(libc::O_TMPFILE)
            .open(&self.dir)?;
        f.write_all(elf)?;
        f.sync_all()?;
        link_unnamed(&f, &self.dir.join(name))?;
        self.trim(name);
        Ok(f)
    }

    /// Removes the least recently used entries beyond [`MAX_ENTRIES`],
    /// never `keep`.
    fn trim(&self, keep: &str) {
        let Ok(dir) = std::fs::read_dir(&self.dir) else {
            return;
        };
        let mut entries: Vec<(std::time::SystemTime, PathBuf)> = dir
            .flatten()
            .filter(|e| {
                let n = e.file_name();
                let n = n.to_string_lossy();
                n.ends_with(".vmlinux") && n != keep
            })
            .filter_map(|e| Some((e.metadata().ok()?.modified().ok()?, e.path())))
            .collect();
        entries.sort();
        let excess = (entries.len() + 1).saturating_sub(MAX_ENTRIES);
        for (_, path) in entries.into_iter().take(excess) {
            let _ = std::fs::remove_file(path);
        }
    }
}

/// Gives the unnamed (`O_TMPFILE`) file `f` the name `to`. An entry made
/// meanwhile by another VMM from the same kernel is as good as ours.
fn link_unnamed(f: &File, to: &Path) -> std::io::Result<()> {
    use std::os::fd::AsRawFd;
    let from = CString::new(format!("/proc/self/fd/{}", f.as_raw_fd()))?;
    let to_c = CString::new(to.as_os_str().as_bytes())?;
    // SAFETY: both paths are NUL-terminated strings that outlive the call;
    // linkat only reads them.
    let rc = unsafe {
        libc::linkat(
            libc::AT_FDCWD,
            from.as_ptr(),
            libc::AT_FDCWD,
            to_c.as_ptr(),
            libc::AT_SYMLINK_FOLLOW,
        )
    };
    if rc == 0 {
        return Ok(());
    }
    let e = std::io::Error::last_os_error();
    if e.raw_os_error() == Some(libc::EEXIST) {
        Ok(())
    } else {
        Err(e)
    }
}

/// An anonymous in-memory file holding `bytes`, for a kernel unpacked
/// without a writable cache.
fn memfd_with(bytes: &[u8]) -> std::io::Result<File> {
    use std::os::fd::FromRawFd;
    // SAFETY: the name is a NUL-terminated literal; memfd_create returns a
    // new descriptor that nothing else owns, or -1.
    let fd = unsafe { libc::memfd_create(c"vmlinux".as_ptr(), libc::MFD_CLOEXEC) };
    if fd < 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: `fd` was just created and is owned by nothing else.
    let mut f = unsafe { File::from_raw_fd(fd) };
    f.write_all(bytes)?;
    Ok(f)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Seek;

    /// A bzImage-shaped buffer around `payload`: setup header with `HdrS`,
    /// version 2.15, one setup sector, the payload 0x100 bytes into the
    /// protected-mode part.
    fn bzimage(payload: &[u8]) -> Vec<u8> {
        let mut img = vec![0u8; 2 * 512 + 0x100];
        img[0x1f1] = 1;
        img[0x202..0x206].copy_from_slice(b"HdrS");
        img[0x206..0x208].copy_from_slice(&0x020fu16.to_le_bytes());
        img[0x248..0x24c].copy_from_slice(&0x100u32.to_le_bytes());
        img[0x24c..0x250].copy_from_slice(&(payload.len() as u32).to_le_bytes());
        img.extend_from_slice(payload);
        img.extend_from_slice(b"trailer");
        img
    }

    /// `data` as a kernel build packs it: an xz stream, then its size.
    fn xz_with_size(data: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        let mut enc = liblzma::write::XzEncoder::new(&mut out, 1);
        enc.write_all(data).unwrap();
        enc.finish().unwrap();
        out.extend_from_slice(&(data.len() as u32).to_le_bytes());
        out
    }

    fn fake_elf() -> Vec<u8> {
        let mut v = b"\x7fELF".to_vec();
        v.extend((0..100_000u32).map(|i| (i % 251) as u8));
        v
    }

    #[test]
    fn payload_is_found_and_bad_headers_are_not_bzimages() {
        let img = bzimage(b"PAYLOAD");
        assert_eq!(payload(&img), Some(&b"PAYLOAD"[..]));
        let mut old = img.clone();
        old[0x206..0x208].copy_from_slice(&0x0206u16.to_le_bytes());
        assert_eq!(payload(&old), None);
        let mut magic = img.clone();
        magic[0x202] = b'X';
        assert_eq!(payload(&magic), None);
        let mut long = img.clone();
        long[0x24c..0x250].copy_from_slice(&u32::MAX.to_le_bytes());
        assert_eq!(payload(&long), None);
        assert_eq!(payload(&img[..0x100]), None);
    }

    #[test]
    fn xz_payloads_unpack_and_bad_ones_are_refused() {
        let elf = fake_elf();
        assert_eq!(unpack_xz(&xz_with_size(&elf)).unwrap(), elf);
        // Not an ELF.
        assert!(unpack_xz(&xz_with_size(b"plain text")).is_err());
        // A size that does not match.
        let mut wrong = xz_with_size(&elf);
        let n = wrong.len();
        wrong[n - 4..].copy_from_slice(&10u32.to_le_bytes());
        assert!(unpack_xz(&wrong).is_err());
        // A truncated stream.
        let good = xz_with_size(&elf);
        assert!(unpack_xz(&good[..good.len() / 2]).is_err());
        // Not xz at all, or too short.
        assert!(unpack_xz(b"\x1f\x8b gzip").is_err());
        assert!(unpack_xz(XZ_MAGIC).is_err());
    }

    #[test]
    fn an_entry_is_kept_then_reused_and_changes_with_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let cache = KernelCache::open(&dir.path().join("cache")).unwrap();
        let kernel = dir.path().join("vmlinuz");
        let elf = fake_elf();
        std::fs::write(&kernel, bzimage(&xz_with_size(&elf))).unwrap();

        let (mut f, src) = cache.vmlinux(&kernel).unwrap();
        assert_eq!(src, Source::Unpacked);
        let mut got = Vec::new();
        f.rewind().unwrap();
        f.read_to_end(&mut got).unwrap();
        assert_eq!(got, elf);

        let (mut f, src) = cache.vmlinux(&kernel).unwrap();
        assert_eq!(src, Source::Cached);
        got.clear();
        f.read_to_end(&mut got).unwrap();
        assert_eq!(got, elf);

        // A new kernel in the same place is unpacked again, never served
        // from the old entry.
        let mut elf2 = fake_elf();
        elf2.extend_from_slice(b"second");
        std::fs::write(&kernel, bzimage(&xz_with_size(&elf2))).unwrap();
        let (mut f, src) = cache.vmlinux(&kernel).unwrap();
        assert_eq!(src, Source::Unpacked);
        got.clear();
        f.rewind().unwrap();
        f.read_to_end(&mut got).unwrap();
        assert_eq!(got, elf2);
    }

    #[test]
    fn others_boot_as_bzimages_and_the_cache_stays_bounded() {
        let dir = tempfile::tempdir().unwrap();
        let cache = KernelCache::open(&dir.path().join("cache")).unwrap();
        let kernel = dir.path().join("vmlinuz");
        // Not xz: left to the bzImage path, nothing kept.
        std::fs::write(&kernel, bzimage(b"\x1f\x8b\x08 gzip payload")).unwrap();
        assert!(cache.vmlinux(&kernel).is_none());
        // A corrupt xz payload: the same.
        let mut bad = xz_with_size(&fake_elf());
        bad[40] ^= 0xff;
        std::fs::write(&kernel, bzimage(&bad)).unwrap();
        assert!(cache.vmlinux(&kernel).is_none());
        assert_eq!(std::fs::read_dir(&cache.dir).unwrap().count(), 0);

        for i in 0..MAX_ENTRIES + 2 {
            let k = dir.path().join(format!("k{i}"));
            let mut elf = fake_elf();
            elf.push(i as u8);
            std::fs::write(&k, bzimage(&xz_with_size(&elf))).unwrap();
            assert_eq!(cache.vmlinux(&k).unwrap().1, Source::Unpacked);
        }
        assert_eq!(std::fs::read_dir(&cache.dir).unwrap().count(), MAX_ENTRIES);
    }
}
