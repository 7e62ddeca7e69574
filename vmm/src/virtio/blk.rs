//! virtio-blk on a raw image file: read, write, flush, discard,
//! write-zeroes, get-id, and read-only disks.

use std::fs::{File, OpenOptions};
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use virtio_queue::{Queue, QueueT};
use vm_memory::GuestMemoryMmap;

use super::{
    device_type, drain, run_queue, sg, ActiveQueue, Interrupt, VirtioDevice, Worker,
    VIRTIO_F_VERSION_1, VIRTIO_RING_F_EVENT_IDX,
};

/// Sector size of the protocol.
pub const SECTOR: u64 = 512;

const F_SEG_MAX: u64 = 1 << 2;
const F_RO: u64 = 1 << 5;
const F_BLK_SIZE: u64 = 1 << 6;
const F_FLUSH: u64 = 1 << 9;
const F_DISCARD: u64 = 1 << 13;
const F_WRITE_ZEROES: u64 = 1 << 14;

/// Request types.
pub mod req {
    /// Read.
    pub const IN: u32 = 0;
    /// Write.
    pub const OUT: u32 = 1;
    /// Flush.
    pub const FLUSH: u32 = 4;
    /// Device id string.
    pub const GET_ID: u32 = 8;
    /// Discard ranges.
    pub const DISCARD: u32 = 11;
    /// Write zeroes to ranges.
    pub const WRITE_ZEROES: u32 = 13;
}

/// Status byte values.
pub mod status {
    /// Done.
    pub const OK: u8 = 0;
    /// I/O error (also: out of range, write to a read-only disk).
    pub const IOERR: u8 = 1;
    /// Unsupported request.
    pub const UNSUPP: u8 = 2;
}

/// Segments per request the guest may use.
const SEG_MAX: u32 = 126;
/// Largest discard or write-zeroes range, in sectors (1 GiB).
const MAX_DISCARD_SECTORS: u32 = 1 << 21;
/// Largest single read or write (the guest's own limit with SEG_MAX
/// 4 KiB segments is far below this); it bounds one request's system call.
const MAX_IO: usize = 32 << 20;

/// A block device on an image file.
#[derive(Debug)]
pub struct Blk {
    path: PathBuf,
    file: Arc<File>,
    readonly: bool,
    sectors: u64,
    id: [u8; 20],
    worker: Option<Worker>,
    stats: Arc<Mutex<Stats>>,
}

/// Counters reported by `info`.
#[derive(Debug, Default, Clone, Copy, serde::Serialize)]
pub struct Stats {
    /// Read requests.
    pub reads: u64,
    /// Write requests.
    pub writes: u64,
    /// Flushes.
    pub flushes: u64,
    /// Requests that failed.
    pub errors: u64,
}

impl Blk {
    /// Opens `path` (read-only if asked). The file must exist and be a
    /// regular file or a block device; its size is rounded down to sectors.
    pub fn new(path: &Path, readonly: bool) -> std::io::Result<Blk> {
        let file = OpenOptions::new()
            .read(true)
            .write(!readonly)
            .open(path)
            .map_err(|e| std::io::Error::new(e.kind(), format!("disk {}: {e}", path.display())))?;
        let len = file_len(&file)?;
        if len < SECTOR {
            return Err(std::io::Error::new(
                std::io::ErrorKind::InvalidInput,
                format!(
                    "disk {}: {len} bytes, smaller than one sector",
                    path.display()
                ),
            ));
        }
        let mut id = [0u8; 20];
        let name = format!(
            "oxbow-{}",
            path.file_name()
                .map(|n| n.to_string_lossy())
                .unwrap_or_default()
        );
        for (d, s) in id.iter_mut().zip(name.bytes()) {
            *d = s;
        }
        Ok(Blk {
            path: path.to_path_buf(),
            file: Arc::new(file),
            readonly,
            sectors: len / SECTOR,
            id,
            worker: None,
            stats: Arc::default(),
        })
    }

    /// Capacity in sectors.
    pub fn sectors(&self) -> u64 {
        self.sectors
    }

    fn config_bytes(&self) -> [u8; 60] {
        let mut c = [0u8; 60];
        c[0..8].copy_from_slice(&self.sectors.to_le_bytes());
        c[12..16].copy_from_slice(&SEG_MAX.to_le_bytes());
        c[20..24].copy_from_slice(&(SECTOR as u32).to_le_bytes());
        c[34..36].copy_from_slice(&1u16.to_le_bytes()); // num_queues
        c[36..40].copy_from_slice(&MAX_DISCARD_SECTORS.to_le_bytes());
        c[40..44].copy_from_slice(&1u32.to_le_bytes()); // max_discard_seg
        c[44..48].copy_from_slice(&1u32.to_le_bytes()); // discard_sector_alignment
        c[48..52].copy_from_slice(&MAX_DISCARD_SECTORS.to_le_bytes());
        c[52..56].copy_from_slice(&1u32.to_le_bytes()); // max_write_zeroes_seg
        c[56] = 1; // write_zeroes_may_unmap
        c
    }
}

fn file_len(f: &File) -> std::io::Result<u64> {
    let m = f.metadata()?;
    if m.file_type().is_file() {
        return Ok(m.len());
    }
    // A block device: its size is where a seek to the end lands.
    let mut f = f;
    std::io::Seek::seek(&mut f, std::io::SeekFrom::End(0))
}

/// What one request did: the bytes written into the guest's buffers
/// (data and status) and the status.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Done {
    /// Used length.
    pub len: u32,
    /// Status byte.
    pub status: u8,
}

/// The disk a request runs against.
#[derive(Debug, Clone, Copy)]
pub struct Disk<'a> {
    /// The image.
    pub file: &'a File,
    /// Its size in sectors.
    pub sectors: u64,
    /// Read-only.
    pub readonly: bool,
    /// The id string.
    pub id: &'a [u8; 20],
}

fn range_ok(disk: &Disk, sector: u64, bytes: u64) -> bool {
    bytes % SECTOR == 0
        && sector
            .checked_add(bytes / SECTOR)
            .is_some_and(|end| end <= disk.sectors)
}

fn punch(file: &File, off: u64, len: u64, zero: bool) -> std::io::Result<()> {
    let mode = if zero {
        libc::FALLOC_FL_ZERO_RANGE
    } else {
        libc::FALLOC_FL_PUNCH_HOLE | libc::FALLOC_FL_KEEP_SIZE
    };
    // SAFETY: fallocate on an owned, open fd with plain integer arguments.
    let r = unsafe { libc::fallocate(file.as_raw_fd(), mode, off as i64, len as i64) };
    if r == 0 {
        Ok(())
    } else {
        Err(std::io::Error::last_os_error())
    }
}

/// Runs one request (a popped chain) and writes its status.
///
/// Data moves straight between the image and the chain's guest buffers
/// (`preadv`/`pwritev` over [`sg::chain_sg`]'s segments), without a copy
/// in between. A chain that does not resolve (a buffer outside guest
/// memory, a loop, no writable byte for the status) is answered with used
/// length 0 and nothing is read or written.
pub fn handle<M>(
    chain: virtio_queue::DescriptorChain<M>,
    mem: &GuestMemoryMmap,
    disk: &Disk,
    stats: &mut Stats,
) -> Done
where
    M: std::ops::Deref<Target = GuestMemoryMmap> + Clone,
{
    let fail = Done {
        len: 0,
        status: status::IOERR,
    };
    let Ok(sg::ChainSg {
        readable: mut request,
        writable: mut data,
    }) = sg::chain_sg(mem, chain)
    else {
        stats.errors += 1;
        return fail;
    };
    if data.is_empty() {
        stats.errors += 1;
        return fail; // no room for the status byte
    }
    let status_byte = data.split_off(data.len() - 1);
    let finish = |st: u8, data_len: u32, stats: &mut Stats| {
        if st != status::OK {
            stats.errors += 1;
        }
        let _ = status_byte.write_at(0, &[st]);
        Done {
            len: data_len + 1,
            status: st,
        }
    };
    let mut header = [0u8; 16];
    if request.read_into(&mut header).is_err() {
        return finish(status::IOERR, 0, stats);
    }
    request.advance(header.len());
    let kind = u32::from_le_bytes([header[0], header[1], header[2], header[3]]);
    let mut s8 = [0u8; 8];
    s8.copy_from_slice(&header[8..16]);
    let sector = u64::from_le_bytes(s8);

    let mut data_len = 0u32;
    let st = match kind {
        req::IN => {
            let n = data.len();
            if n > MAX_IO
                || !range_ok(disk, sector, n as u64)
                || data.read_all_from(disk.file, sector * SECTOR).is_err()
            {
                status::IOERR
            } else {
                data_len = n as u32;
                stats.reads += 1;
                status::OK
            }
        }
        req::OUT => {
            let n = request.len();
            if disk.readonly
                || n > MAX_IO
                || !range_ok(disk, sector, n as u64)
                || request.write_all_to(disk.file, sector * SECTOR).is_err()
            {
                status::IOERR
            } else {
                stats.writes += 1;
                status::OK
            }
        }
        req::FLUSH => {
            stats.flushes += 1;
            if disk.readonly || disk.file.sync_data().is_ok() {
                status::OK
            } else {
                status::IOERR
            }
        }
        req::GET_ID => {
            let n = data.len().min(20);
            if data.write_at(0, &disk.id[..n]).is_err() {
                status::IOERR
            } else {
                data_len = n as u32;
                status::OK
            }
        }
        req::DISCARD | req::WRITE_ZEROES => discard(disk, &mut request, kind == req::WRITE_ZEROES),
        _ => status::UNSUPP,
    };
    finish(st, data_len, stats)
}

/// Discard or write-zeroes: one or more 16-byte segments (sector,
/// num_sectors, flags) in `request`.
fn discard(disk: &Disk, request: &mut sg::SgList<'_>, zero: bool) -> u8 {
    if disk.readonly {
        return status::IOERR;
    }
    while request.len() >= 16 {
        let mut seg = [0u8; 16];
        if request.read_into(&mut seg).is_err() {
            return status::IOERR;
        }
        request.advance(16);
        let mut s8 = [0u8; 8];
        s8.copy_from_slice(&seg[0..8]);
        let s = u64::from_le_bytes(s8);
        let n = u32::from_le_bytes([seg[8], seg[9], seg[10], seg[11]]);
        if n > MAX_DISCARD_SECTORS || !range_ok(disk, s, u64::from(n) * SECTOR) {
            return status::IOERR;
        }
        if punch(disk.file, s * SECTOR, u64::from(n) * SECTOR, zero).is_err() {
            return status::IOERR;
        }
    }
    status::OK
}

/// Serves every available request; returns whether any buffer was used.
pub fn process(q: &mut Queue, mem: &GuestMemoryMmap, disk: &Disk, stats: &mut Stats) -> bool {
    let mut used = false;
    while let Some(chain) = q.pop_descriptor_chain(mem) {
        let head = chain.head_index();
        let done = handle(chain, mem, disk, stats);
        // A head index past the ring cannot be returned; skip it.
        if q.add_used(mem, head, done.len).is_ok() {
            used = true;
        }
    }
    used
}

impl VirtioDevice for Blk {
    fn device_type(&self) -> u32 {
        device_type::BLOCK
    }
    fn name(&self) -> &'static str {
        "blk"
    }
    fn queue_sizes(&self) -> Vec<u16> {
        vec![256]
    }
    fn features(&self) -> u64 {
        let mut f = VIRTIO_F_VERSION_1 | VIRTIO_RING_F_EVENT_IDX | F_SEG_MAX | F_BLK_SIZE | F_FLUSH;
        if self.readonly {
            f |= F_RO;
        } else {
            f |= F_DISCARD | F_WRITE_ZEROES;
        }
        f
    }
    fn read_config(&self, offset: u64, data: &mut [u8]) {
        super::read_config_bytes(&self.config_bytes(), offset, data);
    }
    fn activate(
        &mut self,
        mem: GuestMemoryMmap,
        _acked: u64,
        mut queues: Vec<ActiveQueue>,
        irq: Arc<dyn Interrupt>,
    ) -> std::io::Result<()> {
        let Some(mut aq) = queues.pop() else {
            return Ok(());
        };
        let file = self.file.clone();
        let (sectors, readonly, id) = (self.sectors, self.readonly, self.id);
        let stats = self.stats.clone();
        let fds = vec![aq.kick.as_raw_fd()];
        self.worker = Some(Worker::spawn("virtio-blk".into(), fds, move |_| {
            drain(&aq.kick);
            let disk = Disk {
                file: &file,
                sectors,
                readonly,
                id: &id,
            };
            let mut s = stats.lock().unwrap_or_else(|e| e.into_inner());
            run_queue(&mut aq, &mem, irq.as_ref(), |q| {
                process(q, &mem, &disk, &mut s)
            });
            true
        })?);
        Ok(())
    }
    fn reset(&mut self) {
        // Dropping the worker stops its thread.
        self.worker = None;
    }
    fn info(&self) -> serde_json::Value {
        serde_json::json!({
            "path": self.path.display().to_string(),
            "readonly": self.readonly,
            "sectors": self.sectors,
            "stats": *self.stats.lock().unwrap_or_else(|e| e.into_inner()),
        })
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use virtio_queue::desc::{split::Descriptor as SplitDescriptor, RawDescriptor};
    use virtio_queue::mock::MockSplitQueue;
    use vm_memory::{Bytes, GuestAddress};

    pub(crate) const NEXT: u16 = 1;
    pub(crate) const WRITE: u16 = 2;

    pub(crate) fn desc(addr: u64, len: u32, flags: u16, next: u16) -> RawDescriptor {
        RawDescriptor::from(SplitDescriptor::new(addr, len, flags, next))
    }

    pub(crate) fn mem() -> GuestMemoryMmap {
        GuestMemoryMmap::from_ranges(&[(GuestAddress(0), 1 << 20)]).unwrap()
    }

    /// The used ring's (id, len) entries.
    pub(crate) fn used(
        m: &GuestMemoryMmap,
        q: &MockSplitQueue<GuestMemoryMmap>,
    ) -> Vec<(u32, u32)> {
        let base = q.used_addr().0;
        let idx: u16 = m.read_obj(GuestAddress(base + 2)).unwrap();
        (0..u64::from(idx))
            .map(|i| {
                let id: u32 = m.read_obj(GuestAddress(base + 4 + 8 * i)).unwrap();
                let len: u32 = m.read_obj(GuestAddress(base + 8 + 8 * i)).unwrap();
                (id, len)
            })
            .collect()
    }

    struct Img(PathBuf);
    impl Drop for Img {
        fn drop(&mut self) {
            let _ = std::fs::remove_file(&self.0);
        }
    }

    fn image(name: &str) -> Img {
        let p = std::env::temp_dir().join(format!("vmm-blk-{name}-{}", std::process::id()));
        let mut data = vec![0u8; 64 * 1024];
        for (i, b) in data.iter_mut().enumerate() {
            *b = (i / 512) as u8;
        }
        std::fs::write(&p, data).unwrap();
        Img(p)
    }

    const HDR: u64 = 0x2_0000;
    const DATA: u64 = 0x2_1000;
    const STATUS: u64 = 0x2_3000;

    fn header(m: &GuestMemoryMmap, at: u64, kind: u32, sector: u64) {
        m.write_obj(kind, GuestAddress(at)).unwrap();
        m.write_obj(0u32, GuestAddress(at + 4)).unwrap();
        m.write_obj(sector, GuestAddress(at + 8)).unwrap();
    }

    fn run(blk: &Blk, m: &GuestMemoryMmap, descs: &[RawDescriptor]) -> (Vec<(u32, u32)>, Stats) {
        let q = MockSplitQueue::create(m, GuestAddress(0), 16);
        q.add_desc_chains(descs, 0).unwrap();
        let mut queue: Queue = q.create_queue().unwrap();
        let disk = Disk {
            file: &blk.file,
            sectors: blk.sectors,
            readonly: blk.readonly,
            id: &blk.id,
        };
        let mut stats = Stats::default();
        process(&mut queue, m, &disk, &mut stats);
        (used(m, &q), stats)
    }

    fn status_byte(m: &GuestMemoryMmap) -> u8 {
        m.read_obj(GuestAddress(STATUS)).unwrap()
    }

    #[test]
    fn read_write_flush_get_id() {
        let img = image("rw");
        let blk = Blk::new(&img.0, false).unwrap();
        assert_eq!(blk.sectors(), 128);
        let m = mem();
        header(&m, HDR, req::IN, 3);
        let (u, _) = run(
            &blk,
            &m,
            &[
                desc(HDR, 16, NEXT, 1),
                desc(DATA, 1024, NEXT | WRITE, 2),
                desc(STATUS, 1, WRITE, 0),
            ],
        );
        assert_eq!(u, vec![(0, 1025)]);
        assert_eq!(status_byte(&m), status::OK);
        let got: [u8; 2] = [
            m.read_obj(GuestAddress(DATA)).unwrap(),
            m.read_obj(GuestAddress(DATA + 600)).unwrap(),
        ];
        assert_eq!(got, [3, 4]);

        header(&m, HDR, req::OUT, 10);
        m.write_slice(&[0xab; 512], GuestAddress(DATA)).unwrap();
        let (u, s) = run(
            &blk,
            &m,
            &[
                desc(HDR, 16, NEXT, 1),
                desc(DATA, 512, NEXT, 2),
                desc(STATUS, 1, WRITE, 0),
            ],
        );
        assert_eq!((u, s.writes), (vec![(0, 1)], 1));
        let file = std::fs::read(&img.0).unwrap();
        assert!(file[10 * 512..11 * 512].iter().all(|b| *b == 0xab));
        assert_eq!(file[11 * 512], 11);

        header(&m, HDR, req::FLUSH, 0);
        let (u, _) = run(
            &blk,
            &m,
            &[desc(HDR, 16, NEXT, 1), desc(STATUS, 1, WRITE, 0)],
        );
        assert_eq!((u, status_byte(&m)), (vec![(0, 1)], status::OK));

        header(&m, HDR, req::GET_ID, 0);
        let (u, _) = run(
            &blk,
            &m,
            &[
                desc(HDR, 16, NEXT, 1),
                desc(DATA, 20, NEXT | WRITE, 2),
                desc(STATUS, 1, WRITE, 0),
            ],
        );
        assert_eq!(u, vec![(0, 21)]);
        let mut id = [0u8; 6];
        m.read_slice(&mut id, GuestAddress(DATA)).unwrap();
        assert_eq!(&id, b"oxbow-");
    }

    #[test]
    fn discard_and_write_zeroes_read_back_zero() {
        let img = image("discard");
        let blk = Blk::new(&img.0, false).unwrap();
        let m = mem();
        for (kind, sector) in [(req::DISCARD, 8u64), (req::WRITE_ZEROES, 20)] {
            header(&m, HDR, kind, 0);
            m.write_obj(sector, GuestAddress(DATA)).unwrap();
            m.write_obj(8u32, GuestAddress(DATA + 8)).unwrap();
            m.write_obj(0u32, GuestAddress(DATA + 12)).unwrap();
            let (u, _) = run(
                &blk,
                &m,
                &[
                    desc(HDR, 16, NEXT, 1),
                    desc(DATA, 16, NEXT, 2),
                    desc(STATUS, 1, WRITE, 0),
                ],
            );
            assert_eq!((u, status_byte(&m)), (vec![(0, 1)], status::OK), "{kind}");
            let file = std::fs::read(&img.0).unwrap();
            let at = sector as usize * 512;
            assert!(file[at..at + 8 * 512].iter().all(|b| *b == 0), "{kind}");
            assert_eq!(file[at + 8 * 512], (sector + 8) as u8);
            assert_eq!(file.len(), 64 * 1024, "size kept");
        }
    }

    #[test]
    fn out_of_range_readonly_and_unknown_requests_fail_cleanly() {
        let img = image("ro");
        let before = std::fs::read(&img.0).unwrap();
        let blk = Blk::new(&img.0, true).unwrap();
        assert_ne!(blk.features() & F_RO, 0);
        let m = mem();
        header(&m, HDR, req::OUT, 0);
        let (u, s) = run(
            &blk,
            &m,
            &[
                desc(HDR, 16, NEXT, 1),
                desc(DATA, 512, NEXT, 2),
                desc(STATUS, 1, WRITE, 0),
            ],
        );
        assert_eq!(
            (u, status_byte(&m), s.errors),
            (vec![(0, 1)], status::IOERR, 1)
        );
        assert_eq!(
            std::fs::read(&img.0).unwrap(),
            before,
            "read-only disk unchanged"
        );
        // Reading past the end: sector 127 is the last, 2 sectors from it is out.
        header(&m, HDR, req::IN, 127);
        let (_, _) = run(
            &blk,
            &m,
            &[
                desc(HDR, 16, NEXT, 1),
                desc(DATA, 1024, NEXT | WRITE, 2),
                desc(STATUS, 1, WRITE, 0),
            ],
        );
        assert_eq!(status_byte(&m), status::IOERR);
        // A sector number that would overflow.
        header(&m, HDR, req::IN, u64::MAX);
        run(
            &blk,
            &m,
            &[
                desc(HDR, 16, NEXT, 1),
                desc(DATA, 512, NEXT | WRITE, 2),
                desc(STATUS, 1, WRITE, 0),
            ],
        );
        assert_eq!(status_byte(&m), status::IOERR);
        header(&m, HDR, 99, 0);
        run(
            &blk,
            &m,
            &[desc(HDR, 16, NEXT, 1), desc(STATUS, 1, WRITE, 0)],
        );
        assert_eq!(status_byte(&m), status::UNSUPP);
    }

    #[test]
    fn malformed_chains_are_errors_not_panics() {
        let img = image("bad");
        let before = std::fs::read(&img.0).unwrap();
        let blk = Blk::new(&img.0, false).unwrap();
        let m = mem();
        header(&m, HDR, req::IN, 0);
        // Data buffer outside guest memory.
        let (u, _) = run(
            &blk,
            &m,
            &[
                desc(HDR, 16, NEXT, 1),
                desc(0xffff_ffff_0000, 512, NEXT | WRITE, 2),
                desc(STATUS, 1, WRITE, 0),
            ],
        );
        assert_eq!(u, vec![(0, 0)]);
        // A buffer running off the end of guest memory.
        let (u, _) = run(
            &blk,
            &m,
            &[
                desc(HDR, 16, NEXT, 1),
                desc((1 << 20) - 256, 512, NEXT | WRITE, 2),
                desc(STATUS, 1, WRITE, 0),
            ],
        );
        assert_eq!(u, vec![(0, 0)]);
        // An oversized length.
        header(&m, HDR, req::OUT, 0);
        let (u, _) = run(
            &blk,
            &m,
            &[
                desc(HDR, 16, NEXT, 1),
                desc(DATA, u32::MAX, NEXT, 2),
                desc(STATUS, 1, WRITE, 0),
            ],
        );
        assert_eq!(u, vec![(0, 0)]);
        // A descriptor loop: 0 -> 1 -> 0.
        let (u, _) = run(
            &blk,
            &m,
            &[desc(HDR, 16, NEXT, 1), desc(DATA, 512, NEXT, 0)],
        );
        assert!(u.iter().all(|&(_, len)| len == 0), "{u:?}");
        // A chain without a writable status byte.
        let (u, _) = run(&blk, &m, &[desc(HDR, 16, NEXT, 1), desc(DATA, 512, 0, 0)]);
        assert_eq!(u, vec![(0, 0)]);
        // A header shorter than 16 bytes.
        let (u, _) = run(
            &blk,
            &m,
            &[desc(HDR, 8, NEXT, 1), desc(STATUS, 1, WRITE, 0)],
        );
        assert_eq!(u, vec![(0, 1)]);
        assert_eq!(status_byte(&m), status::IOERR);
        assert_eq!(
            std::fs::read(&img.0).unwrap(),
            before,
            "nothing was written"
        );
    }

    #[test]
    fn scatter_gather_requests_reach_the_right_bytes() {
        let img = image("sg");
        let blk = Blk::new(&img.0, false).unwrap();
        let m = mem();
        let end = 1u64 << 20;
        // A read of sectors 5 and 6 into three buffers of odd sizes, the
        // last one ending exactly at the end of guest memory and holding
        // the status byte after its data.
        header(&m, HDR, req::IN, 5);
        let (u, s) = run(
            &blk,
            &m,
            &[
                desc(HDR, 16, NEXT, 1),
                desc(DATA, 300, NEXT | WRITE, 2),
                desc(DATA + 0x800, 212, NEXT | WRITE, 3),
                desc(end - 513, 513, WRITE, 0),
            ],
        );
        assert_eq!((u, s.reads, s.errors), (vec![(0, 1025)], 1, 0));
        let at = |a: u64| m.read_obj::<u8>(GuestAddress(a)).unwrap();
        assert_eq!([at(DATA), at(DATA + 299)], [5, 5]);
        assert_eq!([at(DATA + 0x800), at(DATA + 0x800 + 211)], [5, 5]);
        assert_eq!([at(end - 513), at(end - 2)], [6, 6]);
        assert_eq!(at(end - 1), status::OK);

        // A write whose header and data share one descriptor.
        m.write_obj(req::OUT, GuestAddress(HDR)).unwrap();
        m.write_obj(30u64, GuestAddress(HDR + 8)).unwrap();
        m.write_slice(&[0xcd; 512], GuestAddress(HDR + 16)).unwrap();
        let (u, s) = run(
            &blk,
            &m,
            &[desc(HDR, 16 + 512, NEXT, 1), desc(STATUS, 1, WRITE, 0)],
        );
        assert_eq!(
            (u, s.writes, status_byte(&m)),
            (vec![(0, 1)], 1, status::OK)
        );
        let file = std::fs::read(&img.0).unwrap();
        assert!(file[30 * 512..31 * 512].iter().all(|b| *b == 0xcd));
        assert_eq!((file[29 * 512 + 511], file[31 * 512]), (29, 31));

        // A write whose data runs off the end of guest memory: nothing
        // is written, the chain comes back empty.
        header(&m, HDR, req::OUT, 40);
        let (u, _) = run(
            &blk,
            &m,
            &[
                desc(HDR, 16, NEXT, 1),
                desc(end - 256, 512, NEXT, 2),
                desc(STATUS, 1, WRITE, 0),
            ],
        );
        assert_eq!(u, vec![(0, 0)]);
        assert_eq!(std::fs::read(&img.0).unwrap()[40 * 512], 40);
    }

    #[derive(Default)]
    struct CountIrq(std::sync::atomic::AtomicUsize);
    impl Interrupt for CountIrq {
        fn queue(&self, _: u16) -> std::io::Result<()> {
            self.0.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            Ok(())
        }
        fn config(&self) -> std::io::Result<()> {
            Ok(())
        }
    }

    /// A flush request as descriptors `at` and `at + 1`.
    fn flush_chain(m: &GuestMemoryMmap, q: &MockSplitQueue<GuestMemoryMmap>, at: u16) {
        header(m, HDR, req::FLUSH, 0);
        q.add_desc_chains(
            &[desc(HDR, 16, NEXT, at + 1), desc(STATUS, 1, WRITE, 0)],
            at,
        )
        .unwrap();
    }

    /// The driver's `used_event` (after the available ring) and the
    /// device's `avail_event` (after the used ring) for a 16-entry queue.
    fn used_event_addr(q: &MockSplitQueue<GuestMemoryMmap>) -> GuestAddress {
        GuestAddress(q.avail_addr().0 + 4 + 2 * 16)
    }
    fn avail_event_addr(q: &MockSplitQueue<GuestMemoryMmap>) -> GuestAddress {
        GuestAddress(q.used_addr().0 + 4 + 8 * 16)
    }

    #[test]
    fn event_idx_interrupts_only_past_used_event_and_asks_for_the_next_kick() {
        let img = image("evidx");
        let blk = Blk::new(&img.0, false).unwrap();
        let m = mem();
        let q = MockSplitQueue::create(&m, GuestAddress(0), 16);
        for i in 0..3 {
            flush_chain(&m, &q, 2 * i);
        }
        let mut queue: Queue = q.create_queue().unwrap();
        queue.set_event_idx(true);
        let mut aq = ActiveQueue {
            index: 0,
            queue,
            kick: vmm_sys_util::eventfd::EventFd::new(libc::EFD_NONBLOCK).unwrap(),
        };
        let disk = Disk {
            file: &blk.file,
            sectors: blk.sectors,
            readonly: blk.readonly,
            id: &blk.id,
        };
        let irq = CountIrq::default();
        let mut stats = Stats::default();

        // The driver wants an interrupt once entry 2 is used: three
        // requests served in one go raise exactly one.
        m.write_obj(2u16, used_event_addr(&q)).unwrap();
        let rounds = run_queue(&mut aq, &m, &irq, |q| process(q, &m, &disk, &mut stats));
        assert_eq!((rounds, used(&m, &q).len()), (1, 3));
        assert_eq!(irq.0.load(std::sync::atomic::Ordering::SeqCst), 1);
        // The device wants a notification for the next available entry.
        assert_eq!(m.read_obj::<u16>(avail_event_addr(&q)).unwrap(), 3);

        // used_event far ahead (the driver is polling): no interrupt.
        m.write_obj(100u16, used_event_addr(&q)).unwrap();
        flush_chain(&m, &q, 6);
        run_queue(&mut aq, &m, &irq, |q| process(q, &m, &disk, &mut stats));
        assert_eq!(used(&m, &q).len(), 4);
        assert_eq!(irq.0.load(std::sync::atomic::Ordering::SeqCst), 1);
        assert_eq!(m.read_obj::<u16>(avail_event_addr(&q)).unwrap(), 4);

        // used_event wrapped around the 16-bit index space: entry 65535
        // already passed, so nothing is due.
        m.write_obj(u16::MAX, used_event_addr(&q)).unwrap();
        flush_chain(&m, &q, 8);
        run_queue(&mut aq, &m, &irq, |q| process(q, &m, &disk, &mut stats));
        assert_eq!(irq.0.load(std::sync::atomic::Ordering::SeqCst), 1);
        // used_event = the index just used (4): due.
        m.write_obj(5u16, used_event_addr(&q)).unwrap();
        flush_chain(&m, &q, 10);
        run_queue(&mut aq, &m, &irq, |q| process(q, &m, &disk, &mut stats));
        assert_eq!(irq.0.load(std::sync::atomic::Ordering::SeqCst), 2);
    }

    #[test]
    fn notifications_are_off_while_the_queue_is_worked() {
        let img = image("nonotify");
        let blk = Blk::new(&img.0, false).unwrap();
        let m = mem();
        let q = MockSplitQueue::create(&m, GuestAddress(0), 16);
        flush_chain(&m, &q, 0);
        let mut aq = ActiveQueue {
            index: 0,
            queue: q.create_queue().unwrap(),
            kick: vmm_sys_util::eventfd::EventFd::new(libc::EFD_NONBLOCK).unwrap(),
        };
        let disk = Disk {
            file: &blk.file,
            sectors: blk.sectors,
            readonly: blk.readonly,
            id: &blk.id,
        };
        let irq = CountIrq::default();
        let mut stats = Stats::default();
        let used_flags = || m.read_obj::<u16>(q.used_addr()).unwrap();
        let mut calls = 0;
        let mut flags_seen = Vec::new();
        let rounds = run_queue(&mut aq, &m, &irq, |queue| {
            calls += 1;
            flags_seen.push(used_flags());
            let used = process(queue, &m, &disk, &mut stats);
            if calls == 1 {
                // The driver adds a request after the device emptied the
                // ring but before notifications are back on and, seeing
                // NO_NOTIFY, does not kick.
                flush_chain(&m, &q, 2);
            }
            used
        });
        // VRING_USED_F_NO_NOTIFY while working, cleared afterwards; the
        // request added meanwhile was served without a kick.
        assert_eq!(flags_seen, [1, 1]);
        assert_eq!(used_flags(), 0);
        assert_eq!(rounds, 2);
        assert_eq!(used(&m, &q).len(), 2);
        assert_eq!(irq.0.load(std::sync::atomic::Ordering::SeqCst), 2);
    }

    #[test]
    fn bad_images_are_refused() {
        let missing = std::env::temp_dir().join("vmm-blk-does-not-exist.raw");
        let e = Blk::new(&missing, false).unwrap_err().to_string();
        assert!(e.contains("vmm-blk-does-not-exist.raw"), "{e}");
        let tiny = image("tiny");
        std::fs::write(&tiny.0, [0u8; 100]).unwrap();
        let e = Blk::new(&tiny.0, false).unwrap_err().to_string();
        assert!(e.contains("smaller than one sector"), "{e}");
    }
}
