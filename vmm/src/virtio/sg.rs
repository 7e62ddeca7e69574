//! Scatter-gather lists over guest memory: a descriptor chain's buffers
//! as host `iovec`s, so that a device can move data between a file (a
//! disk image, a tap) and guest memory in one `preadv`/`pwritev`/`readv`/
//! `writev`, without a bounce buffer in between.
//!
//! Every segment is resolved through vm-memory's bounds-checked
//! `get_slices`: a descriptor outside guest memory, running off its end or
//! overflowing the address space makes the whole list an error, exactly
//! where virtio-queue's `Reader`/`Writer` would have refused it. A
//! [`SgList`] borrows the guest memory it points into, so the mapping
//! outlives every pointer in it; [`OwnedSg`] is the same list detached
//! from the borrow, for a worker that owns a clone of the memory (which
//! keeps the mappings alive) and holds a chain across wakeups.

use std::fs::File;
use std::io;
use std::marker::PhantomData;
use std::os::fd::AsRawFd;

use virtio_queue::DescriptorChain;
use vm_memory::{GuestAddress, GuestMemoryBackend, GuestMemoryMmap};

/// At most this many segments per system call (Linux's `UIO_MAXIOV`).
pub const IOV_MAX: usize = 1024;

/// One piece of guest memory, by host address.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Seg {
    ptr: usize,
    len: usize,
}

/// Why a chain cannot be turned into segments.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum SgError {
    /// A buffer is not entirely inside guest memory.
    #[error("a buffer lies outside guest memory")]
    OutsideMemory,
    /// The buffers add up to more than the address space.
    #[error("the buffers' lengths overflow")]
    Overflow,
    /// The chain was cut short (loop, bad next index, too long) or is empty.
    #[error("the chain does not end with a descriptor without NEXT")]
    Unterminated,
    /// A device-readable descriptor follows a device-writable one.
    #[error("a device-readable buffer follows a device-writable one")]
    ReadableAfterWritable,
}

/// The device-readable and device-writable buffers of one chain.
#[derive(Debug)]
pub struct ChainSg<'a> {
    /// What the device reads (the driver's request, a frame to send).
    pub readable: SgList<'a>,
    /// What the device writes (data read, status, a received frame).
    pub writable: SgList<'a>,
}

/// Splits `chain` into its readable and writable buffers, each resolved to
/// host memory. The chain must end properly (its last descriptor without
/// NEXT: virtio-queue's iterator silently stops at a loop, a next index
/// past the table or 4 GiB, which would leave one with NEXT), and the
/// writable descriptors must come after the readable ones (virtio 2.7.4.2).
pub fn chain_sg<'a, M>(
    mem: &'a GuestMemoryMmap,
    chain: DescriptorChain<M>,
) -> Result<ChainSg<'a>, SgError>
where
    M: std::ops::Deref<Target = GuestMemoryMmap>,
{
    let mut readable = SgList::empty();
    let mut writable = SgList::empty();
    let mut open = true;
    let mut any = false;
    let mut in_writable = false;
    for d in chain {
        any = true;
        open = d.has_next();
        if d.is_write_only() {
            in_writable = true;
        } else if in_writable {
            return Err(SgError::ReadableAfterWritable);
        }
        let list = if in_writable {
            &mut writable
        } else {
            &mut readable
        };
        list.push(mem, d.addr(), d.len() as usize)?;
    }
    if !any || open {
        return Err(SgError::Unterminated);
    }
    Ok(ChainSg { readable, writable })
}

/// A list of guest memory segments, borrowing the guest memory.
#[derive(Debug, Clone)]
pub struct SgList<'a> {
    segs: Vec<Seg>,
    len: usize,
    _mem: PhantomData<&'a GuestMemoryMmap>,
}

impl<'a> SgList<'a> {
    /// An empty list.
    pub fn empty() -> SgList<'a> {
        SgList {
            segs: Vec::new(),
            len: 0,
            _mem: PhantomData,
        }
    }

    /// Appends `len` bytes of guest memory at `addr` (several segments if
    /// the range spans memory regions). An error if any byte of it is
    /// outside guest memory.
    pub fn push(
        &mut self,
        mem: &'a GuestMemoryMmap,
        addr: GuestAddress,
        len: usize,
    ) -> Result<(), SgError> {
        if len == 0 {
            return Ok(());
        }
        let total = self.len.checked_add(len).ok_or(SgError::Overflow)?;
        addr.0
            .checked_add(len as u64 - 1)
            .ok_or(SgError::Overflow)?;
        for slice in GuestMemoryBackend::get_slices(mem, addr, len) {
            let slice = slice.map_err(|_| SgError::OutsideMemory)?;
            // The pointer stays valid after the guard goes: an mmap region
            // is unmapped only when the last GuestMemoryMmap holding it is
            // dropped, and `'a` borrows one.
            let ptr = slice.ptr_guard_mut().as_ptr() as usize;
            self.segs.push(Seg {
                ptr,
                len: slice.len(),
            });
        }
        self.len = total;
        Ok(())
    }

    /// Total bytes.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether the list holds no bytes.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Drops the first `n` bytes (all of them if there are fewer).
    pub fn advance(&mut self, n: usize) {
        let mut n = n.min(self.len);
        self.len -= n;
        let mut drop = 0;
        for s in &mut self.segs {
            if n == 0 {
                break;
            }
            if s.len <= n {
                n -= s.len;
                drop += 1;
            } else {
                s.ptr += n;
                s.len -= n;
                n = 0;
            }
        }
        self.segs.drain(..drop);
    }

    /// Splits off everything after the first `at` bytes and returns it;
    /// `self` keeps the first `at` (or all, if it is shorter).
    pub fn split_off(&mut self, at: usize) -> SgList<'a> {
        let mut tail = SgList::empty();
        if at >= self.len {
            return tail;
        }
        let mut keep = 0usize;
        let mut i = 0;
        while i < self.segs.len() {
            let s = self.segs[i];
            if keep + s.len > at {
                let head_part = at - keep;
                if head_part > 0 {
                    self.segs[i].len = head_part;
                    tail.segs.push(Seg {
                        ptr: s.ptr + head_part,
                        len: s.len - head_part,
                    });
                    i += 1;
                }
                break;
            }
            keep += s.len;
            i += 1;
        }
        tail.segs.extend(self.segs.drain(i..));
        tail.len = self.len - at;
        self.len = at;
        tail
    }

    /// Copies `src` into the list's memory from byte `offset` on; an error
    /// if it does not fit.
    pub fn write_at(&self, offset: usize, src: &[u8]) -> io::Result<()> {
        if offset
            .checked_add(src.len())
            .is_none_or(|end| end > self.len)
        {
            return Err(io::Error::from(io::ErrorKind::WriteZero));
        }
        let mut skip = offset;
        let mut src = src;
        for s in &self.segs {
            if src.is_empty() {
                break;
            }
            if skip >= s.len {
                skip -= s.len;
                continue;
            }
            let n = (s.len - skip).min(src.len());
            // SAFETY: the segment lies inside a live guest memory mapping
            // (checked by get_slices when it was pushed; the mapping lives
            // as long as the borrow `'a`), `skip + n <= s.len`, and `src`
            // is host memory that cannot overlap guest RAM.
            unsafe {
                std::ptr::copy_nonoverlapping(src.as_ptr(), (s.ptr + skip) as *mut u8, n);
            }
            src = &src[n..];
            skip = 0;
        }
        Ok(())
    }

    /// Copies the list's first `dst.len()` bytes into `dst`; an error if
    /// the list is shorter.
    pub fn read_into(&self, dst: &mut [u8]) -> io::Result<()> {
        if dst.len() > self.len {
            return Err(io::Error::from(io::ErrorKind::UnexpectedEof));
        }
        let mut done = 0;
        for s in &self.segs {
            if done == dst.len() {
                break;
            }
            let n = s.len.min(dst.len() - done);
            // SAFETY: as in `write_at`: the segment is inside a live guest
            // mapping, `n <= s.len`, and `dst` is host memory.
            unsafe {
                std::ptr::copy_nonoverlapping(s.ptr as *const u8, dst[done..].as_mut_ptr(), n);
            }
            done += n;
        }
        Ok(())
    }

    /// Reads exactly `self.len()` bytes of `file` from `offset` into the
    /// list (`preadv`, repeated after a short read). A read past the end of
    /// the file is an error.
    pub fn read_all_from(&self, file: &File, offset: u64) -> io::Result<()> {
        self.transfer(offset, |iov, cnt, off| {
            // SAFETY: `iov` holds `cnt` iovecs, each inside a live guest
            // mapping (see `push`), valid for writes by the kernel.
            unsafe { libc::preadv(file.as_raw_fd(), iov, cnt, off) }
        })
    }

    /// Writes the list's `self.len()` bytes to `file` at `offset`
    /// (`pwritev`, repeated after a short write).
    pub fn write_all_to(&self, file: &File, offset: u64) -> io::Result<()> {
        self.transfer(offset, |iov, cnt, off| {
            // SAFETY: `iov` holds `cnt` iovecs, each inside a live guest
            // mapping, valid for reads by the kernel.
            unsafe { libc::pwritev(file.as_raw_fd(), iov, cnt, off) }
        })
    }

    fn transfer(
        &self,
        offset: u64,
        mut op: impl FnMut(*const libc::iovec, libc::c_int, libc::off_t) -> isize,
    ) -> io::Result<()> {
        let mut rest = self.clone();
        let mut off = offset;
        let mut iov = Vec::with_capacity(rest.segs.len().min(IOV_MAX));
        while !rest.is_empty() {
            iov.clear();
            iov.extend(rest.segs.iter().take(IOV_MAX).map(Seg::iovec));
            let at = libc::off_t::try_from(off)
                .map_err(|_| io::Error::from(io::ErrorKind::InvalidInput))?;
            let r = op(iov.as_ptr(), iov.len() as libc::c_int, at);
            if r < 0 {
                let e = io::Error::last_os_error();
                if e.kind() == io::ErrorKind::Interrupted {
                    continue;
                }
                return Err(e);
            }
            if r == 0 {
                return Err(io::Error::from(io::ErrorKind::UnexpectedEof));
            }
            rest.advance(r as usize);
            off += r as u64;
        }
        Ok(())
    }

    /// The segments as `iovec`s, appended to `out`.
    pub fn iovecs_into(&self, out: &mut Vec<libc::iovec>) {
        out.extend(self.segs.iter().map(Seg::iovec));
    }

    /// The list without its borrow of guest memory (see [`OwnedSg`]).
    pub fn detach(self) -> OwnedSg {
        OwnedSg {
            segs: self.segs,
            len: self.len,
        }
    }
}

impl Seg {
    fn iovec(&self) -> libc::iovec {
        libc::iovec {
            iov_base: self.ptr as *mut libc::c_void,
            iov_len: self.len,
        }
    }
}

/// An [`SgList`] detached from its borrow of guest memory, so a worker can
/// hold a chain's buffers across wakeups. Its owner must keep a clone of
/// the same `GuestMemoryMmap` for as long as it uses the list (the clone
/// keeps the mappings alive); [`OwnedSg::attach`] ties it to that borrow
/// again. Holding one is harmless; only attaching it needs that promise.
#[derive(Debug, Clone)]
pub struct OwnedSg {
    segs: Vec<Seg>,
    len: usize,
}

impl OwnedSg {
    /// The list again, borrowing `mem`.
    ///
    /// # Safety
    ///
    /// `mem` must be the guest memory the list was made from, or a clone of
    /// it (clones share the mappings): the segments point into its
    /// mappings, which stay mapped while `mem` lives.
    pub unsafe fn attach<'a>(&self, _mem: &'a GuestMemoryMmap) -> SgList<'a> {
        SgList {
            segs: self.segs.clone(),
            len: self.len,
            _mem: PhantomData,
        }
    }

    /// Total bytes.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether the list holds no bytes.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }
}

/// `readv` on `fd` into `iov` (at most [`IOV_MAX`] of them); the byte
/// count, or the error.
///
/// # Safety
///
/// Every `iovec` must describe memory valid for writes during the call:
/// segments of a live [`SgList`] (see [`SgList::iovecs_into`]) or host
/// buffers the caller holds mutably.
pub unsafe fn readv(fd: &impl AsRawFd, iov: &[libc::iovec]) -> io::Result<usize> {
    let cnt = iov.len().min(IOV_MAX) as libc::c_int;
    // SAFETY: the caller vouches for the iovecs; `cnt` does not exceed
    // their number.
    let r = unsafe { libc::readv(fd.as_raw_fd(), iov.as_ptr(), cnt) };
    if r < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(r as usize)
    }
}

/// `writev` of `list` to `fd`, in one call (one frame on a tap); the
/// byte count, or the error.
pub fn writev(fd: &impl AsRawFd, list: &SgList<'_>) -> io::Result<usize> {
    let mut iov = Vec::with_capacity(list.segs.len());
    list.iovecs_into(&mut iov);
    if iov.len() > IOV_MAX {
        return Err(io::Error::from(io::ErrorKind::InvalidInput));
    }
    // SAFETY: `iov` holds valid iovecs inside live guest mappings (see
    // `SgList::push`), read by the kernel during the call.
    let r = unsafe { libc::writev(fd.as_raw_fd(), iov.as_ptr(), iov.len() as libc::c_int) };
    if r < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(r as usize)
    }
}

#[cfg(test)]
mod tests {
    use std::io::{Read, Seek, Write};

    use virtio_queue::desc::{split::Descriptor as SplitDescriptor, RawDescriptor};
    use virtio_queue::mock::MockSplitQueue;
    use virtio_queue::{Queue, QueueT};
    use vm_memory::Bytes;

    use super::*;

    const NEXT: u16 = 1;
    const WRITE: u16 = 2;
    const MEM: u64 = 1 << 20;

    fn desc(addr: u64, len: u32, flags: u16, next: u16) -> RawDescriptor {
        RawDescriptor::from(SplitDescriptor::new(addr, len, flags, next))
    }

    fn mem() -> GuestMemoryMmap {
        GuestMemoryMmap::from_ranges(&[(GuestAddress(0), MEM as usize)]).unwrap()
    }

    /// The chain `descs` (table entries from 0) as segment lists.
    fn sg_of(m: &GuestMemoryMmap, descs: &[RawDescriptor]) -> Result<(usize, usize), SgError> {
        let q = MockSplitQueue::create(m, GuestAddress(0), 16);
        q.add_desc_chains(descs, 0).unwrap();
        let mut queue: Queue = q.create_queue().unwrap();
        let chain = queue.pop_descriptor_chain(m).unwrap();
        chain_sg(m, chain).map(|c| (c.readable.len(), c.writable.len()))
    }

    fn tmpfile(name: &str, data: &[u8]) -> (File, std::path::PathBuf) {
        let p = std::env::temp_dir().join(format!("vmm-sg-{name}-{}", std::process::id()));
        let mut f = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(true)
            .open(&p)
            .unwrap();
        f.write_all(data).unwrap();
        (f, p)
    }

    #[test]
    fn a_chain_splits_into_readable_and_writable_segments() {
        let m = mem();
        let descs = [
            desc(0x1_0000, 16, NEXT, 1),
            desc(0x2_0000, 100, NEXT, 2),
            desc(0x3_0000, 200, NEXT | WRITE, 3),
            desc(0x4_0000, 1, WRITE, 0),
        ];
        assert_eq!(sg_of(&m, &descs), Ok((116, 201)));
        // Zero-length descriptors count for nothing.
        let descs = [desc(0x1_0000, 0, NEXT, 1), desc(0x2_0000, 8, WRITE, 0)];
        assert_eq!(sg_of(&m, &descs), Ok((0, 8)));
    }

    #[test]
    fn malformed_chains_are_errors() {
        let m = mem();
        // Outside guest memory, straddling its end, a huge length.
        for d in [
            desc(MEM, 1, WRITE, 0),
            desc(MEM - 10, 11, WRITE, 0),
            desc(0x1000, u32::MAX, 0, 0),
        ] {
            assert_eq!(sg_of(&m, &[d]), Err(SgError::OutsideMemory), "{d:?}");
        }
        // An address range that wraps around.
        assert_eq!(
            sg_of(&m, &[desc(u64::MAX - 4, 16, 0, 0)]),
            Err(SgError::Overflow)
        );
        // A loop, and a next index past the table.
        assert_eq!(
            sg_of(&m, &[desc(0x1000, 8, NEXT, 1), desc(0x2000, 8, NEXT, 0)]),
            Err(SgError::Unterminated)
        );
        assert_eq!(
            sg_of(&m, &[desc(0x1000, 8, NEXT, 99)]),
            Err(SgError::Unterminated)
        );
        // Readable after writable.
        assert_eq!(
            sg_of(
                &m,
                &[desc(0x1000, 8, NEXT | WRITE, 1), desc(0x2000, 8, 0, 0)]
            ),
            Err(SgError::ReadableAfterWritable)
        );
    }

    #[test]
    fn a_buffer_ending_at_the_end_of_guest_memory_is_usable() {
        let m = mem();
        let mut l = SgList::empty();
        l.push(&m, GuestAddress(MEM - 4096), 4096).unwrap();
        let data: Vec<u8> = (0..8192u32).map(|i| (i % 251) as u8).collect();
        let (f, p) = tmpfile("end", &data);
        l.read_all_from(&f, 4096).unwrap();
        let mut got = vec![0u8; 4096];
        m.read_slice(&mut got, GuestAddress(MEM - 4096)).unwrap();
        assert_eq!(got, data[4096..]);
        // Reading past the end of the file is an error, not a short read.
        assert!(l.read_all_from(&f, 8192 - 100).is_err());
        // One byte more would run off the end of memory.
        let mut l2 = SgList::empty();
        assert_eq!(
            l2.push(&m, GuestAddress(MEM - 4096), 4097),
            Err(SgError::OutsideMemory)
        );
        assert!(l2.is_empty());
        let _ = std::fs::remove_file(p);
    }

    #[test]
    fn a_range_over_two_regions_becomes_two_segments() {
        let m = GuestMemoryMmap::from_ranges(&[
            (GuestAddress(0), 0x1_0000),
            (GuestAddress(0x1_0000), 0x1_0000),
        ])
        .unwrap();
        let mut l = SgList::empty();
        l.push(&m, GuestAddress(0xff00), 0x200).unwrap();
        assert_eq!((l.segs.len(), l.len()), (2, 0x200));
        let data: Vec<u8> = (0..0x200u32).map(|i| i as u8).collect();
        let (mut f, p) = tmpfile("regions", &data);
        l.read_all_from(&f, 0).unwrap();
        let mut got = vec![0u8; 0x200];
        m.read_slice(&mut got, GuestAddress(0xff00)).unwrap();
        assert_eq!(got, data);
        // And back out, at another offset.
        l.write_all_to(&f, 0x1000).unwrap();
        let mut all = Vec::new();
        f.rewind().unwrap();
        f.read_to_end(&mut all).unwrap();
        assert_eq!(&all[0x1000..0x1200], &data[..]);
        let _ = std::fs::remove_file(p);
    }

    #[test]
    fn advance_split_and_copies_cross_segment_boundaries() {
        let m = mem();
        let mut l = SgList::empty();
        for (a, n) in [(0x1000u64, 10usize), (0x2000, 5), (0x3000, 20)] {
            l.push(&m, GuestAddress(a), n).unwrap();
        }
        assert_eq!(l.len(), 35);
        let src: Vec<u8> = (1..=35).collect();
        l.write_at(0, &src).unwrap();
        let mut back = vec![0u8; 35];
        l.read_into(&mut back).unwrap();
        assert_eq!(back, src);
        assert!(l.write_at(30, &[0; 6]).is_err(), "past the end");
        assert!(l.write_at(usize::MAX, &[0]).is_err(), "overflowing offset");

        let mut tail = l.clone();
        let rest = tail.split_off(12); // 10 + 2 of the second segment
        assert_eq!((tail.len(), rest.len()), (12, 23));
        let mut b = vec![0u8; 23];
        rest.read_into(&mut b).unwrap();
        assert_eq!(b, src[12..]);
        assert_eq!(tail.split_off(12).len(), 0);

        l.advance(13);
        assert_eq!(l.len(), 22);
        let mut b = vec![0u8; 22];
        l.read_into(&mut b).unwrap();
        assert_eq!(b, src[13..]);
        l.advance(100);
        assert!(l.is_empty());
        assert!(l.read_into(&mut [0u8; 1]).is_err());
    }

    #[test]
    fn more_segments_than_one_system_call_takes() {
        let m = mem();
        let mut l = SgList::empty();
        // 1500 two-byte pieces, every other 4 bytes: over IOV_MAX.
        for i in 0..1500u64 {
            l.push(&m, GuestAddress(0x1_0000 + 4 * i), 2).unwrap();
        }
        let data: Vec<u8> = (0..3000u32).map(|i| (i * 7) as u8).collect();
        let (f, p) = tmpfile("many", &data);
        l.read_all_from(&f, 0).unwrap();
        for i in [0usize, 1023, 1024, 1499] {
            let mut two = [0u8; 2];
            m.read_slice(&mut two, GuestAddress(0x1_0000 + 4 * i as u64))
                .unwrap();
            assert_eq!(two, data[2 * i..2 * i + 2], "piece {i}");
        }
        let _ = std::fs::remove_file(p);
    }

    #[test]
    fn an_owned_list_attaches_again() {
        let m = mem();
        let mut l = SgList::empty();
        l.push(&m, GuestAddress(0x5000), 64).unwrap();
        let owned = l.detach();
        assert_eq!(owned.len(), 64);
        // SAFETY: `m` is the memory the list was made from.
        let again = unsafe { owned.attach(&m) };
        again.write_at(60, b"abcd").unwrap();
        let mut b = [0u8; 4];
        m.read_slice(&mut b, GuestAddress(0x5000 + 60)).unwrap();
        assert_eq!(&b, b"abcd");
    }
}
