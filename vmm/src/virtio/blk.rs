//! virtio-blk on a raw image file: read, write, flush, discard,
//! write-zeroes, get-id, and read-only disks.
//!
//! The queue's worker thread pops every available request, checks it and
//! answers at once what needs no disk access; reads, writes, flushes and
//! discards go to a small pool of I/O threads ([`IoPool`]), which move
//! the data straight between the image and guest memory. Their results
//! come back to the worker, which alone writes status bytes and the used
//! ring and interrupts the guest ([`QueueServer`]).

use std::fs::{File, OpenOptions};
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use virtio_queue::QueueT;
use vm_memory::GuestMemoryMmap;

use super::io_pool::IoPool;
use super::{
    device_type, drain, sg, ActiveQueue, Interrupt, Round, VirtioDevice, Worker,
    VIRTIO_F_VERSION_1, VIRTIO_RING_F_EVENT_IDX,
};

/// Sector size of the protocol.
pub const SECTOR: u64 = 512;

const F_SEG_MAX: u64 = 1 << 2;
const F_RO: u64 = 1 << 5;
const F_BLK_SIZE: u64 = 1 << 6;
const F_FLUSH: u64 = 1 << 9;
const F_MQ: u64 = 1 << 12;
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
/// I/O threads of a disk, shared out among its queues (at least one each).
const IO_THREADS: usize = 4;
/// Most request queues a disk offers (one per vCPU up to this).
pub const MAX_QUEUES: u16 = 16;
/// A read or write of at most this many bytes that arrives alone, while
/// nothing is in flight, runs on the worker itself: copying it costs less
/// than handing it to an I/O thread and back.
const INLINE_MAX: usize = 64 << 10;

/// A block device on an image file.
#[derive(Debug)]
pub struct Blk {
    path: PathBuf,
    image: Image,
    /// Request queues offered (`VIRTIO_BLK_F_MQ` when more than one).
    queues: u16,
    /// One worker per active queue.
    workers: Vec<Worker>,
    stats: Arc<Mutex<Stats>>,
    capacity: Arc<Capacity>,
}

/// The open image and what the guest is told about it.
#[derive(Debug, Clone)]
struct Image {
    file: Arc<File>,
    /// The capacity in sectors, shared with [`Capacity`]: a request is
    /// checked against the value when it is parsed and again when it runs.
    sectors: Arc<AtomicU64>,
    readonly: bool,
    id: [u8; 20],
}

impl Image {
    fn disk(&self) -> Disk<'_> {
        Disk {
            file: &self.file,
            sectors: self.sectors.load(Ordering::SeqCst),
            readonly: self.readonly,
            id: &self.id,
        }
    }
}

/// A disk's capacity, shared by the device, its workers and whoever grows
/// the image under a running guest (the control socket's `resize-disk`):
/// [`Capacity::refresh`] takes the image's new size and tells an active
/// driver by the configuration interrupt, as QEMU's `block_resize` does.
/// Linux then logs `new size` and the guest can grow its partitions.
pub struct Capacity {
    file: Arc<File>,
    sectors: Arc<AtomicU64>,
    notifier: super::ConfigNotifier,
}

impl Capacity {
    /// The capacity in sectors.
    pub fn sectors(&self) -> u64 {
        self.sectors.load(Ordering::SeqCst)
    }

    /// Takes the image's size now (rounded down to sectors) as the
    /// capacity and tells the driver if it changed. A smaller image is
    /// refused and the capacity kept: the guest may have data there.
    /// Returns the capacity before and after.
    pub fn refresh(&self) -> std::io::Result<(u64, u64)> {
        self.notifier.change(|| {
            let new = file_len(&self.file)? / SECTOR;
            let old = self.sectors();
            if new < old {
                return Err(std::io::Error::new(
                    std::io::ErrorKind::InvalidInput,
                    format!("the image shrank from {old} to {new} sectors; a disk cannot shrink"),
                ));
            }
            self.sectors.store(new, Ordering::SeqCst);
            Ok(((old, new), new > old))
        })
    }

    fn attach(&self, interrupt: Option<Arc<dyn Interrupt>>) {
        self.notifier.attach(interrupt);
    }
}

impl std::fmt::Debug for Capacity {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Capacity")
            .field("sectors", &self.sectors())
            .finish()
    }
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

fn lock_stats(stats: &Mutex<Stats>) -> MutexGuard<'_, Stats> {
    stats.lock().unwrap_or_else(|e| e.into_inner())
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
        let file = Arc::new(file);
        let sectors = Arc::new(AtomicU64::new(len / SECTOR));
        Ok(Blk {
            path: path.to_path_buf(),
            capacity: Arc::new(Capacity {
                file: file.clone(),
                sectors: sectors.clone(),
                notifier: super::ConfigNotifier::default(),
            }),
            image: Image {
                file,
                sectors,
                readonly,
                id,
            },
            queues: 1,
            workers: Vec::new(),
            stats: Arc::default(),
        })
    }

    /// Offers `n` request queues (clamped to 1..=[`MAX_QUEUES`]), one per
    /// vCPU as QEMU does: Linux then gives each CPU its own queue, and a
    /// request completes on the CPU that made it, without an IPI.
    pub fn with_queues(mut self, n: u16) -> Blk {
        self.queues = n.clamp(1, MAX_QUEUES);
        self
    }

    /// Capacity in sectors.
    pub fn sectors(&self) -> u64 {
        self.capacity.sectors()
    }

    /// The handle that grows the disk under a running guest.
    pub fn capacity(&self) -> Arc<Capacity> {
        self.capacity.clone()
    }

    /// The image's path, as given.
    pub fn path(&self) -> &Path {
        &self.path
    }

    fn config_bytes(&self) -> [u8; 60] {
        let mut c = [0u8; 60];
        c[0..8].copy_from_slice(&self.sectors().to_le_bytes());
        c[12..16].copy_from_slice(&SEG_MAX.to_le_bytes());
        c[20..24].copy_from_slice(&(SECTOR as u32).to_le_bytes());
        c[34..36].copy_from_slice(&self.queues.to_le_bytes()); // num_queues
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

/// What a valid request asks of the disk. The lists point into guest
/// memory (see [`sg::OwnedSg`]).
#[derive(Debug)]
enum Op {
    /// Fill `data` from the image at byte `offset`.
    Read { data: sg::OwnedSg, offset: u64 },
    /// Write `data` to the image at byte `offset`.
    Write { data: sg::OwnedSg, offset: u64 },
    /// `fdatasync` the image.
    Flush,
    /// Discard (or zero) the ranges listed in `segments`.
    Discard { segments: sg::OwnedSg, zero: bool },
}

/// A checked request that needs the disk: what an I/O thread runs.
#[derive(Debug)]
pub struct Job {
    /// The chain's head, for the used ring.
    head: u16,
    op: Op,
    /// The chain's last writable byte.
    status: sg::OwnedSg,
    /// Bytes of data the guest gets back on success.
    data_len: u32,
}

/// A popped chain after [`parse`].
#[derive(Debug)]
enum Parsed {
    /// Answered without the disk (malformed, refused, get-id, unknown):
    /// its status byte, if it has one, is written.
    Answered(Done),
    /// Needs the disk.
    Disk(Job),
}

/// Checks a popped chain and turns it into a [`Job`], or answers it.
///
/// A chain that does not resolve (a buffer outside guest memory, a loop,
/// no writable byte for the status) is answered with used length 0 and
/// nothing is read or written. A request out of the disk's range, too
/// large, or writing a read-only disk gets `IOERR`; an unknown type
/// `UNSUPP`.
fn parse<M>(
    chain: virtio_queue::DescriptorChain<M>,
    mem: &GuestMemoryMmap,
    disk: &Disk,
    stats: &mut Stats,
) -> Parsed
where
    M: std::ops::Deref<Target = GuestMemoryMmap> + Clone,
{
    let head = chain.head_index();
    let fail = Parsed::Answered(Done {
        len: 0,
        status: status::IOERR,
    });
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
    let answer = |st: u8, data_len: u32, stats: &mut Stats| {
        if st != status::OK {
            stats.errors += 1;
        }
        let _ = status_byte.write_at(0, &[st]);
        Parsed::Answered(Done {
            len: data_len + 1,
            status: st,
        })
    };
    let mut header = [0u8; 16];
    if request.read_into(&mut header).is_err() {
        return answer(status::IOERR, 0, stats);
    }
    request.advance(header.len());
    let kind = u32::from_le_bytes([header[0], header[1], header[2], header[3]]);
    let mut s8 = [0u8; 8];
    s8.copy_from_slice(&header[8..16]);
    let sector = u64::from_le_bytes(s8);

    let mut data_len = 0u32;
    let op = match kind {
        req::IN => {
            let n = data.len();
            if n > MAX_IO || !range_ok(disk, sector, n as u64) {
                return answer(status::IOERR, 0, stats);
            }
            data_len = n as u32;
            Op::Read {
                data: data.detach(),
                offset: sector * SECTOR,
            }
        }
        req::OUT => {
            let n = request.len();
            if disk.readonly || n > MAX_IO || !range_ok(disk, sector, n as u64) {
                return answer(status::IOERR, 0, stats);
            }
            Op::Write {
                data: request.detach(),
                offset: sector * SECTOR,
            }
        }
        req::FLUSH => {
            stats.flushes += 1;
            if disk.readonly {
                return answer(status::OK, 0, stats);
            }
            Op::Flush
        }
        req::GET_ID => {
            let n = data.len().min(20);
            return if data.write_at(0, &disk.id[..n]).is_err() {
                answer(status::IOERR, 0, stats)
            } else {
                answer(status::OK, n as u32, stats)
            };
        }
        req::DISCARD | req::WRITE_ZEROES => {
            if disk.readonly {
                return answer(status::IOERR, 0, stats);
            }
            Op::Discard {
                segments: request.detach(),
                zero: kind == req::WRITE_ZEROES,
            }
        }
        _ => return answer(status::UNSUPP, 0, stats),
    };
    Parsed::Disk(Job {
        head,
        op,
        status: status_byte.detach(),
        data_len,
    })
}

impl Job {
    /// Whether it is a read or write of at most `max` bytes (see
    /// [`INLINE_MAX`]).
    fn is_small_transfer(&self, max: usize) -> bool {
        match &self.op {
            Op::Read { data, .. } | Op::Write { data, .. } => data.len() <= max,
            Op::Flush | Op::Discard { .. } => false,
        }
    }

    /// Moves the data between the image and guest memory (`preadv`/
    /// `pwritev` straight into the request's buffers), or flushes or
    /// discards; returns the status. Writes no status byte.
    ///
    /// # Safety
    ///
    /// `mem` must be the guest memory the job was parsed from, or a clone
    /// of it: the job's lists point into its mappings.
    unsafe fn run(&self, disk: &Disk, mem: &GuestMemoryMmap) -> u8 {
        let ok = match &self.op {
            Op::Read { data, offset } => {
                // SAFETY: the caller vouches that `mem` is the job's memory.
                let data = unsafe { data.attach(mem) };
                data.read_all_from(disk.file, *offset).is_ok()
            }
            Op::Write { data, offset } => {
                // SAFETY: as above.
                let data = unsafe { data.attach(mem) };
                data.write_all_to(disk.file, *offset).is_ok()
            }
            Op::Flush => disk.file.sync_data().is_ok(),
            Op::Discard { segments, zero } => {
                // SAFETY: as above.
                let mut segments = unsafe { segments.attach(mem) };
                return discard(disk, &mut segments, *zero);
            }
        };
        if ok {
            status::OK
        } else {
            status::IOERR
        }
    }

    /// Writes the status byte after [`Job::run`] and counts the request;
    /// what goes into the used ring.
    ///
    /// # Safety
    ///
    /// As for [`Job::run`].
    unsafe fn complete(&self, st: u8, mem: &GuestMemoryMmap, stats: &mut Stats) -> Done {
        match (&self.op, st) {
            (Op::Read { .. }, status::OK) => stats.reads += 1,
            (Op::Write { .. }, status::OK) => stats.writes += 1,
            _ => {}
        }
        if st != status::OK {
            stats.errors += 1;
        }
        // SAFETY: the caller vouches that `mem` is the job's memory.
        let status_byte = unsafe { self.status.attach(mem) };
        let _ = status_byte.write_at(0, &[st]);
        let data_len = if st == status::OK { self.data_len } else { 0 };
        Done {
            len: data_len + 1,
            status: st,
        }
    }
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

/// A job and the status it ran to.
type Finished = (Job, u8);

/// The owner of a queue, on the device's worker thread. It alone pops
/// chains, writes status bytes and the used ring, and interrupts the
/// guest; its pool's threads only move request data.
///
/// At most `max_in_flight` requests (the queue's size) are with the pool
/// at once: past that the queue is left alone, with the driver's
/// notifications off, until results come back. Dropping the server drops
/// the pool, which abandons the jobs not started and waits for the
/// running ones; the chains in flight are never returned, which a device
/// reset allows.
struct QueueServer {
    aq: ActiveQueue,
    mem: GuestMemoryMmap,
    image: Image,
    irq: Arc<dyn Interrupt>,
    stats: Arc<Mutex<Stats>>,
    pool: IoPool<Job, Finished>,
    in_flight: usize,
    max_in_flight: usize,
    inline_max: usize,
}

impl QueueServer {
    /// A server with `threads` I/O threads.
    fn new(
        aq: ActiveQueue,
        mem: GuestMemoryMmap,
        image: Image,
        irq: Arc<dyn Interrupt>,
        stats: Arc<Mutex<Stats>>,
        threads: usize,
    ) -> std::io::Result<QueueServer> {
        let (pool_mem, pool_image) = (mem.clone(), image.clone());
        let pool = IoPool::new("virtio-blk", threads, move |job: Job| {
            // SAFETY: every job comes from `parse` over the server's
            // memory, of which `pool_mem` is a clone.
            let st = unsafe { job.run(&pool_image.disk(), &pool_mem) };
            (job, st)
        })?;
        Ok(QueueServer::with_pool(aq, mem, image, irq, stats, pool))
    }

    fn with_pool(
        aq: ActiveQueue,
        mem: GuestMemoryMmap,
        image: Image,
        irq: Arc<dyn Interrupt>,
        stats: Arc<Mutex<Stats>>,
        pool: IoPool<Job, Finished>,
    ) -> QueueServer {
        let max_in_flight = usize::from(aq.queue.size()).max(1);
        QueueServer {
            aq,
            mem,
            image,
            irq,
            stats,
            pool,
            in_flight: 0,
            max_in_flight,
            inline_max: INLINE_MAX,
        }
    }

    /// The guest notified the queue.
    fn kick(&mut self) {
        drain(&self.aq.kick);
        self.serve(false);
    }

    /// The pool has results: all that are ready go into the used ring,
    /// then the queue is served again (room in flight may have opened,
    /// and the driver may have added requests without a kick).
    fn collect(&mut self) {
        let mut used = false;
        {
            let mut stats = lock_stats(&self.stats);
            for (job, st) in self.pool.completions() {
                self.in_flight -= 1;
                // SAFETY: the job was parsed over `self.mem`.
                let done = unsafe { job.complete(st, &self.mem, &mut stats) };
                // A head index past the ring cannot be returned; skip it.
                used |= self
                    .aq
                    .queue
                    .add_used(&self.mem, job.head, done.len)
                    .is_ok();
            }
        }
        self.serve(used);
    }

    /// Works the queue through [`super::run_queue`]: pops everything
    /// available up to the in-flight bound, answers what needs no disk,
    /// hands the rest to the pool (or runs a lone small transfer here),
    /// and at the bound holds the queue with notifications off, since the
    /// next result brings the worker back. `used`: buffers were already
    /// used since the last interrupt check.
    fn serve(&mut self, used: bool) {
        let QueueServer {
            aq,
            mem,
            image,
            irq,
            stats,
            pool,
            in_flight,
            max_in_flight,
            inline_max,
        } = self;
        let mem: &GuestMemoryMmap = mem;
        let mut earlier = used;
        super::run_queue(aq, mem, irq.as_ref(), |queue| {
            let mut used = std::mem::take(&mut earlier);
            let mut jobs = Vec::new();
            {
                let mut stats = lock_stats(stats);
                let disk = image.disk();
                while *in_flight + jobs.len() < *max_in_flight {
                    let Some(chain) = queue.pop_descriptor_chain(mem) else {
                        break;
                    };
                    let head = chain.head_index();
                    match parse(chain, mem, &disk, &mut stats) {
                        Parsed::Answered(done) => {
                            used |= queue.add_used(mem, head, done.len).is_ok();
                        }
                        Parsed::Disk(job) => jobs.push(job),
                    }
                }
                if *in_flight == 0 && jobs.len() == 1 && jobs[0].is_small_transfer(*inline_max) {
                    let job = &jobs[0];
                    // SAFETY: the job was just parsed over `mem`.
                    let done = unsafe {
                        let st = job.run(&disk, mem);
                        job.complete(st, mem, &mut stats)
                    };
                    used |= queue.add_used(mem, job.head, done.len).is_ok();
                    jobs.clear();
                }
            }
            if !jobs.is_empty() {
                *in_flight += jobs.len();
                pool.submit(jobs);
            }
            Round {
                used,
                hold: *in_flight >= *max_in_flight,
            }
        });
    }
}

impl VirtioDevice for Blk {
    fn device_type(&self) -> u32 {
        device_type::BLOCK
    }
    fn name(&self) -> &'static str {
        "blk"
    }
    fn queue_sizes(&self) -> Vec<u16> {
        vec![256; usize::from(self.queues)]
    }
    fn features(&self) -> u64 {
        let mut f = VIRTIO_F_VERSION_1 | VIRTIO_RING_F_EVENT_IDX | F_SEG_MAX | F_BLK_SIZE | F_FLUSH;
        if self.queues > 1 {
            f |= F_MQ;
        }
        if self.image.readonly {
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
        queues: Vec<ActiveQueue>,
        irq: Arc<dyn Interrupt>,
    ) -> std::io::Result<()> {
        // A driver without MQ enables queue 0 only.
        let threads = IO_THREADS.div_ceil(queues.len().max(1)).max(1);
        let mut workers = Vec::new();
        for aq in queues {
            let mut server = QueueServer::new(
                aq,
                mem.clone(),
                self.image.clone(),
                irq.clone(),
                self.stats.clone(),
                threads,
            )?;
            let fds = vec![server.aq.kick.as_raw_fd(), server.pool.completion_fd()];
            let name = format!("virtio-blk-q{}", server.aq.index);
            // On an error, dropping `workers` stops the queues started so far.
            workers.push(Worker::spawn(name, fds, move |token| {
                match token {
                    0 => server.kick(),
                    _ => server.collect(),
                }
                true
            })?);
        }
        self.workers = workers;
        self.capacity.attach(Some(irq));
        Ok(())
    }
    fn reset(&mut self) {
        self.capacity.attach(None);
        // Dropping a worker stops its thread, which drops its server and
        // with it the pool: queued jobs are abandoned and running ones
        // finish before this returns, so no I/O thread touches guest
        // memory after the reset.
        self.workers.clear();
    }
    fn info(&self) -> serde_json::Value {
        serde_json::json!({
            "path": self.path.display().to_string(),
            "readonly": self.image.readonly,
            "sectors": self.sectors(),
            "queues": self.queues,
            "stats": *lock_stats(&self.stats),
        })
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::Condvar;
    use std::time::Duration;
    use virtio_queue::desc::{split::Descriptor as SplitDescriptor, RawDescriptor};
    use virtio_queue::mock::MockSplitQueue;
    use virtio_queue::Queue;
    use vm_memory::{Bytes, GuestAddress};
    use vmm_sys_util::eventfd::EventFd;

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

    #[derive(Default)]
    pub(crate) struct CountIrq(AtomicUsize, AtomicUsize);
    impl CountIrq {
        fn count(&self) -> usize {
            self.0.load(Ordering::SeqCst)
        }
        fn config_count(&self) -> usize {
            self.1.load(Ordering::SeqCst)
        }
    }
    impl Interrupt for CountIrq {
        fn queue(&self, _: u16) -> std::io::Result<()> {
            self.0.fetch_add(1, Ordering::SeqCst);
            Ok(())
        }
        fn config(&self) -> std::io::Result<()> {
            self.1.fetch_add(1, Ordering::SeqCst);
            Ok(())
        }
    }

    fn active(q: &MockSplitQueue<GuestMemoryMmap>, event_idx: bool) -> ActiveQueue {
        let mut queue: Queue = q.create_queue().unwrap();
        queue.set_event_idx(event_idx);
        ActiveQueue {
            index: 0,
            queue,
            kick: EventFd::new(libc::EFD_NONBLOCK).unwrap(),
        }
    }

    /// A queue server over `q` with `threads` I/O threads, which hands
    /// every transfer to them (no inline fast path), its interrupt
    /// counter and its statistics.
    fn server(
        blk: &Blk,
        m: &GuestMemoryMmap,
        q: &MockSplitQueue<GuestMemoryMmap>,
        threads: usize,
        event_idx: bool,
    ) -> (QueueServer, Arc<CountIrq>, Arc<Mutex<Stats>>) {
        let irq = Arc::new(CountIrq::default());
        let stats = Arc::new(Mutex::new(Stats::default()));
        let mut s = QueueServer::new(
            active(q, event_idx),
            m.clone(),
            blk.image.clone(),
            irq.clone(),
            stats.clone(),
            threads,
        )
        .unwrap();
        s.inline_max = 0;
        (s, irq, stats)
    }

    /// Collects results as the worker would until nothing is in flight.
    fn settle(s: &mut QueueServer) {
        while s.in_flight > 0 {
            assert!(s.pool.wait(10_000), "results did not come back");
            s.collect();
        }
    }

    /// Serves `descs` (table entries from 0) through the I/O threads.
    fn run(blk: &Blk, m: &GuestMemoryMmap, descs: &[RawDescriptor]) -> (Vec<(u32, u32)>, Stats) {
        let q = MockSplitQueue::create(m, GuestAddress(0), 16);
        q.add_desc_chains(descs, 0).unwrap();
        let (mut s, _, stats) = server(blk, m, &q, 2, false);
        s.kick();
        settle(&mut s);
        let stats = *stats.lock().unwrap();
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
        let (mut s, irq, _) = server(&blk, &m, &q, 4, true);

        // The driver wants an interrupt once entry 2 is used: three
        // requests, however their results come back, raise exactly one.
        m.write_obj(2u16, used_event_addr(&q)).unwrap();
        s.kick();
        settle(&mut s);
        assert_eq!(used(&m, &q).len(), 3);
        assert_eq!(irq.count(), 1);
        // The device wants a notification for the next available entry.
        assert_eq!(m.read_obj::<u16>(avail_event_addr(&q)).unwrap(), 3);

        // used_event far ahead (the driver is polling): no interrupt.
        m.write_obj(100u16, used_event_addr(&q)).unwrap();
        flush_chain(&m, &q, 6);
        s.kick();
        settle(&mut s);
        assert_eq!(used(&m, &q).len(), 4);
        assert_eq!(irq.count(), 1);
        assert_eq!(m.read_obj::<u16>(avail_event_addr(&q)).unwrap(), 4);

        // used_event wrapped around the 16-bit index space: entry 65535
        // already passed, so nothing is due.
        m.write_obj(u16::MAX, used_event_addr(&q)).unwrap();
        flush_chain(&m, &q, 8);
        s.kick();
        settle(&mut s);
        assert_eq!(irq.count(), 1);
        // used_event = the index just used (4): due.
        m.write_obj(5u16, used_event_addr(&q)).unwrap();
        flush_chain(&m, &q, 10);
        s.kick();
        settle(&mut s);
        assert_eq!(irq.count(), 2);
    }

    #[test]
    fn notifications_are_off_while_the_queue_is_worked() {
        let m = mem();
        let q = MockSplitQueue::create(&m, GuestAddress(0), 16);
        flush_chain(&m, &q, 0);
        let mut aq = active(&q, false);
        let irq = CountIrq::default();
        let used_flags = || m.read_obj::<u16>(q.used_addr()).unwrap();
        let mut calls = 0;
        let mut flags_seen = Vec::new();
        let rounds = super::super::run_queue(&mut aq, &m, &irq, |queue| {
            calls += 1;
            flags_seen.push(used_flags());
            let mut used = false;
            while let Some(chain) = queue.pop_descriptor_chain(&m) {
                used |= queue.add_used(&m, chain.head_index(), 0).is_ok();
            }
            if calls == 1 {
                // The driver adds a request after the device emptied the
                // ring but before notifications are back on and, seeing
                // NO_NOTIFY, does not kick.
                flush_chain(&m, &q, 2);
            }
            Round { used, hold: false }
        });
        // VRING_USED_F_NO_NOTIFY while working, cleared afterwards; the
        // request added meanwhile was served without a kick.
        assert_eq!(flags_seen, [1, 1]);
        assert_eq!(used_flags(), 0);
        assert_eq!(rounds, 2);
        assert_eq!(used(&m, &q).len(), 2);
        assert_eq!(irq.count(), 2);
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

    /// Request `i`'s header, data and status areas.
    fn slot(i: u64) -> (u64, u64, u64) {
        let base = 0x4_0000 + i * 0x2000;
        (base, base + 0x100, base + 0x1f00)
    }

    /// A read of sectors `sector` and `sector + 1` into slot `i`, as
    /// descriptors `3i..3i+3`.
    fn read_chain(m: &GuestMemoryMmap, i: u16, sector: u64) -> Vec<RawDescriptor> {
        read_chain_into(m, u64::from(i), i, sector)
    }

    /// [`read_chain`] into slot `slot_i`, as descriptors `3k..3k+3` (for
    /// a second queue whose table starts again at 0).
    fn read_chain_into(
        m: &GuestMemoryMmap,
        slot_i: u64,
        k: u16,
        sector: u64,
    ) -> Vec<RawDescriptor> {
        let (h, d, st) = slot(slot_i);
        header(m, h, req::IN, sector);
        m.write_slice(&[0xee; 1024], GuestAddress(d)).unwrap();
        m.write_obj(0xeeu8, GuestAddress(st)).unwrap();
        let at = 3 * k;
        vec![
            desc(h, 16, NEXT, at + 1),
            desc(d, 1024, NEXT | WRITE, at + 2),
            desc(st, 1, WRITE, 0),
        ]
    }

    /// Queues `n` reads on `q`: request `i` of sectors `i` and `i + 1`
    /// into slot `i`.
    fn add_reads(m: &GuestMemoryMmap, q: &MockSplitQueue<GuestMemoryMmap>, n: u16) {
        let descs: Vec<_> = (0..n)
            .flat_map(|i| read_chain(m, i, u64::from(i)))
            .collect();
        q.add_desc_chains(&descs, 0).unwrap();
    }

    fn slot_status(m: &GuestMemoryMmap, i: u64) -> u8 {
        m.read_obj(GuestAddress(slot(i).2)).unwrap()
    }

    fn slot_data(m: &GuestMemoryMmap, i: u64) -> Vec<u8> {
        let mut v = vec![0u8; 1024];
        m.read_slice(&mut v, GuestAddress(slot(i).1)).unwrap();
        v
    }

    /// A gate I/O threads wait at until the test opens it.
    #[derive(Default)]
    struct Gate {
        open: Mutex<Option<u16>>,
        changed: Condvar,
    }

    impl Gate {
        /// Lets the job with head `head` through.
        fn let_through(&self, head: u16) {
            *self.open.lock().unwrap() = Some(head);
            self.changed.notify_all();
        }
        /// Lets every job through.
        fn open_all(&self) {
            self.let_through(u16::MAX);
        }
        fn wait_for(&self, head: u16) {
            let mut g = self.open.lock().unwrap();
            while *g != Some(head) && *g != Some(u16::MAX) {
                g = self.changed.wait(g).unwrap();
            }
        }
    }

    /// What the threads of a [`gated_server`]'s pool share with the test.
    #[derive(Default)]
    struct Gated {
        /// Each job waits here for its head.
        gate: Arc<Gate>,
        /// Jobs taken by a thread.
        started: Arc<AtomicUsize>,
        /// Jobs run through.
        ran: Arc<AtomicUsize>,
    }

    /// A queue server over `q` whose pool of `threads` threads counts each
    /// job it takes (`started`), waits at the gate for the job's head,
    /// then runs it and counts it (`ran`); with its interrupt counter.
    fn gated_server(
        blk: &Blk,
        m: &GuestMemoryMmap,
        q: &MockSplitQueue<GuestMemoryMmap>,
        threads: usize,
    ) -> (QueueServer, Gated, Arc<CountIrq>) {
        let g = Gated::default();
        let (pm, image) = (m.clone(), blk.image.clone());
        let (gate, started, ran) = (g.gate.clone(), g.started.clone(), g.ran.clone());
        let pool = IoPool::new("test", threads, move |job: Job| {
            started.fetch_add(1, Ordering::SeqCst);
            gate.wait_for(job.head);
            // SAFETY: the jobs come from a server over `m`, of which `pm`
            // is a clone.
            let st = unsafe { job.run(&image.disk(), &pm) };
            ran.fetch_add(1, Ordering::SeqCst);
            (job, st)
        })
        .unwrap();
        let irq = Arc::new(CountIrq::default());
        let s = QueueServer::with_pool(
            active(q, false),
            m.clone(),
            blk.image.clone(),
            irq.clone(),
            Arc::default(),
            pool,
        );
        (s, g, irq)
    }

    fn wait_until(what: &str, cond: impl Fn() -> bool) {
        for _ in 0..5000 {
            if cond() {
                return;
            }
            std::thread::sleep(Duration::from_millis(2));
        }
        panic!("timed out waiting until {what}");
    }

    #[test]
    fn many_requests_in_flight_with_malformed_ones_among_them() {
        let img = image("many");
        let blk = Blk::new(&img.0, false).unwrap();
        let m = mem();
        let q = MockSplitQueue::create(&m, GuestAddress(0), 128);
        let n = 32u16;
        let mut descs = Vec::new();
        for i in 0..n {
            let mut chain = read_chain(&m, i, u64::from(i) * 3);
            match i % 8 {
                // Data outside guest memory.
                3 => chain[1] = desc(0xffff_ffff_0000, 1024, NEXT | WRITE, 3 * i + 2),
                // Past the end of the disk (127 is the last sector).
                5 => header(&m, slot(u64::from(i)).0, req::IN, 127),
                // A write among the reads, of sector 100 + i.
                6 => {
                    let (h, d, _) = slot(u64::from(i));
                    header(&m, h, req::OUT, 100 + u64::from(i) / 8);
                    m.write_slice(&[0x5a; 512], GuestAddress(d)).unwrap();
                    chain[1] = desc(d, 512, NEXT, 3 * i + 2);
                }
                // Nothing writable, so no status byte.
                7 => {
                    let (_, d, st) = slot(u64::from(i));
                    chain[1] = desc(d, 1024, NEXT, 3 * i + 2);
                    chain[2] = desc(st, 1, 0, 0);
                }
                _ => {}
            }
            descs.extend(chain);
        }
        q.add_desc_chains(&descs, 0).unwrap();
        let (mut s, _, stats) = server(&blk, &m, &q, 4, false);
        s.kick();
        settle(&mut s);

        let mut u = used(&m, &q);
        assert_eq!(u.len(), usize::from(n), "every request answered once");
        u.sort_unstable();
        for (i, &(id, len)) in u.iter().enumerate() {
            let i = i as u64;
            assert_eq!(u64::from(id), 3 * i, "head of request {i}");
            let (want_len, want_status) = match i % 8 {
                3 | 7 => (0, 0xee),
                5 => (1, status::IOERR),
                6 => (1, status::OK),
                _ => (1025, status::OK),
            };
            assert_eq!(
                (len, slot_status(&m, i)),
                (want_len, want_status),
                "request {i}"
            );
            let data = slot_data(&m, i);
            if want_len == 1025 {
                // Sectors 3i and 3i + 1.
                assert!(data[..512].iter().all(|b| *b as u64 == 3 * i), "{i}");
                assert!(data[512..].iter().all(|b| *b as u64 == 3 * i + 1), "{i}");
            } else if i % 8 != 6 {
                assert!(data.iter().all(|b| *b == 0xee), "request {i} untouched");
            }
        }
        let file = std::fs::read(&img.0).unwrap();
        for k in 0..4 {
            let at = (100 + k) * 512;
            assert!(file[at..at + 512].iter().all(|b| *b == 0x5a), "write {k}");
        }
        let st = *stats.lock().unwrap();
        assert_eq!((st.reads, st.writes, st.errors), (16, 4, 12));
    }

    #[test]
    fn results_out_of_order_are_all_returned() {
        let img = image("order");
        let blk = Blk::new(&img.0, false).unwrap();
        let m = mem();
        let q = MockSplitQueue::create(&m, GuestAddress(0), 32);
        let n = 8u16;
        add_reads(&m, &q, n);
        let (mut s, g, irq) = gated_server(&blk, &m, &q, 8);
        s.kick();
        assert_eq!(s.in_flight, 8);
        wait_until("all jobs started", || g.started.load(Ordering::SeqCst) == 8);
        // Finish them last to first, collecting each before the next.
        for i in (0..n).rev() {
            g.gate.let_through(3 * i);
            let left = s.in_flight - 1;
            while s.in_flight > left {
                assert!(s.pool.wait(10_000));
                s.collect();
            }
        }
        let u = used(&m, &q);
        let want: Vec<_> = (0..u32::from(n)).rev().map(|i| (3 * i, 1025)).collect();
        assert_eq!(u, want);
        for i in 0..u64::from(n) {
            assert_eq!(slot_status(&m, i), status::OK);
            let data = slot_data(&m, i);
            assert!(data[..512].iter().all(|b| u64::from(*b) == i));
            assert!(data[512..].iter().all(|b| u64::from(*b) == i + 1));
        }
        assert_eq!(irq.count(), 8, "no EVENT_IDX: one interrupt per batch");
    }

    #[test]
    fn in_flight_is_bounded_and_the_rest_waits_with_notifications_off() {
        let img = image("bound");
        let blk = Blk::new(&img.0, false).unwrap();
        let m = mem();
        let q = MockSplitQueue::create(&m, GuestAddress(0), 32);
        let descs: Vec<_> = (0..8).flat_map(|i| read_chain(&m, i, 0)).collect();
        q.add_desc_chains(&descs, 0).unwrap();
        let (mut s, g, _) = gated_server(&blk, &m, &q, 2);
        assert_eq!(s.max_in_flight, 32, "the queue's size");
        s.max_in_flight = 3;
        s.kick();
        assert_eq!(s.in_flight, 3);
        // NO_NOTIFY stays set while the device is at its bound.
        assert_eq!(m.read_obj::<u16>(q.used_addr()).unwrap(), 1);
        g.gate.open_all();
        settle(&mut s);
        assert_eq!(used(&m, &q).len(), 8);
        // The first three went to the pool. A later request may run on the
        // worker instead: when results come back one at a time, the last
        // one can be found alone with nothing in flight (INLINE_MAX).
        let ran = g.ran.load(Ordering::SeqCst);
        assert!((3..=8).contains(&ran), "the pool ran {ran}");
        assert_eq!(m.read_obj::<u16>(q.used_addr()).unwrap(), 0);
    }

    #[test]
    fn a_lone_small_request_runs_on_the_worker() {
        let img = image("inline");
        let blk = Blk::new(&img.0, false).unwrap();
        let m = mem();
        let q = MockSplitQueue::create(&m, GuestAddress(0), 16);
        q.add_desc_chains(&read_chain(&m, 0, 9), 0).unwrap();
        let (mut s, g, _) = gated_server(&blk, &m, &q, 1);
        s.kick();
        assert_eq!(s.in_flight, 0);
        assert_eq!(used(&m, &q), vec![(0, 1025)]);
        assert_eq!(slot_data(&m, 0)[0], 9);
        assert_eq!(g.started.load(Ordering::SeqCst), 0, "the pool saw nothing");
    }

    #[test]
    fn dropping_the_server_with_requests_in_flight_leaves_guest_memory_alone() {
        let img = image("reset");
        let blk = Blk::new(&img.0, false).unwrap();
        let m = mem();
        let q = MockSplitQueue::create(&m, GuestAddress(0), 32);
        let n = 6u16;
        add_reads(&m, &q, n);
        let (mut s, g, _) = gated_server(&blk, &m, &q, 2);
        s.kick();
        assert_eq!(s.in_flight, 6);
        // Two jobs are running (held at the gate), four wait in the queue.
        wait_until("two jobs started", || g.started.load(Ordering::SeqCst) == 2);
        // The reset: the worker drops its server.
        let reset = std::thread::spawn(move || drop(s));
        std::thread::sleep(Duration::from_millis(50));
        assert!(!reset.is_finished(), "the reset waits for running jobs");
        g.gate.open_all();
        reset.join().unwrap();
        // The two running reads finished, the others never started, and
        // no thread that could run them is left.
        assert_eq!(g.ran.load(Ordering::SeqCst), 2);
        assert_eq!(Arc::strong_count(&g.ran), 1);
        let snapshot = |m: &GuestMemoryMmap| {
            let mut v = vec![0u8; 0x10_0000];
            m.read_slice(&mut v, GuestAddress(0)).unwrap();
            v
        };
        let before = snapshot(&m);
        // Nothing went into the used ring, no status byte was written,
        // and the abandoned requests' buffers are as the driver left them.
        assert!(used(&m, &q).is_empty());
        let untouched = (0..u64::from(n))
            .filter(|&i| slot_data(&m, i).iter().all(|b| *b == 0xee))
            .count();
        assert_eq!(untouched, 4);
        for i in 0..u64::from(n) {
            assert_eq!(slot_status(&m, i), 0xee, "status of {i}");
        }
        std::thread::sleep(Duration::from_millis(50));
        assert!(snapshot(&m) == before, "guest memory changed after reset");
    }

    #[test]
    fn a_grown_image_grows_the_disk_and_tells_the_driver() {
        let img = image("grow");
        let mut blk = Blk::new(&img.0, false).unwrap();
        let capacity = blk.capacity();
        assert_eq!(capacity.refresh().unwrap(), (128, 128), "no change");
        let capacity_bytes = |blk: &Blk| {
            let mut c = [0u8; 8];
            blk.read_config(0, &mut c);
            u64::from_le_bytes(c)
        };
        // Grown before the driver is there: nobody to tell.
        std::fs::OpenOptions::new()
            .write(true)
            .open(&img.0)
            .unwrap()
            .set_len(192 * SECTOR)
            .unwrap();
        assert_eq!(capacity.refresh().unwrap(), (128, 192));
        assert_eq!((blk.sectors(), capacity_bytes(&blk)), (192, 192));

        // Grown under an active driver: one configuration interrupt, and a
        // read past the old end succeeds.
        let m = mem();
        let q = MockSplitQueue::create(&m, GuestAddress(0), 64);
        let aq = active(&q, false);
        let kick = aq.kick.try_clone().unwrap();
        let irq = Arc::new(CountIrq::default());
        blk.activate(m.clone(), 0, vec![aq], irq.clone()).unwrap();
        std::fs::OpenOptions::new()
            .write(true)
            .open(&img.0)
            .unwrap()
            .set_len(256 * SECTOR + 100)
            .unwrap();
        assert_eq!(capacity.refresh().unwrap(), (192, 256), "whole sectors");
        assert_eq!(irq.config_count(), 1);
        assert_eq!(capacity_bytes(&blk), 256);
        q.add_desc_chains(&read_chain(&m, 0, 254), 0).unwrap();
        kick.write(1).unwrap();
        wait_until("the read used", || used(&m, &q).len() == 1);
        assert_eq!(slot_status(&m, 0), status::OK, "a read past the old end");

        // A shrunk image is refused and the capacity kept.
        std::fs::OpenOptions::new()
            .write(true)
            .open(&img.0)
            .unwrap()
            .set_len(100 * SECTOR)
            .unwrap();
        assert!(capacity.refresh().is_err());
        assert_eq!((blk.sectors(), irq.config_count()), (256, 1));
        blk.reset();
        assert_eq!(
            capacity.refresh().unwrap_err().kind(),
            std::io::ErrorKind::InvalidInput
        );
    }

    #[test]
    fn the_device_serves_many_requests_then_resets_and_serves_again() {
        let img = image("device");
        let mut blk = Blk::new(&img.0, false).unwrap();
        let m = mem();
        for round in 0..2u64 {
            let q = MockSplitQueue::create(&m, GuestAddress(0), 64);
            let descs: Vec<_> = (0..20)
                .flat_map(|i| read_chain(&m, i, u64::from(i) + round))
                .collect();
            q.add_desc_chains(&descs, 0).unwrap();
            let aq = active(&q, false);
            let kick = aq.kick.try_clone().unwrap();
            let irq = Arc::new(CountIrq::default());
            blk.activate(m.clone(), 0, vec![aq], irq.clone()).unwrap();
            kick.write(1).unwrap();
            wait_until("all requests used", || used(&m, &q).len() == 20);
            wait_until("the interrupt", || irq.count() >= 1);
            for i in 0..20u64 {
                assert_eq!(slot_data(&m, i)[0] as u64, i + round, "round {round}");
                assert_eq!(slot_status(&m, i), status::OK);
            }
            blk.reset();
        }
        assert_eq!(blk.info()["stats"]["reads"], 40);
        // A reset with large reads in flight: once it returns, guest
        // memory stays as it is.
        let q = MockSplitQueue::create(&m, GuestAddress(0), 64);
        let descs: Vec<_> = (0..16u16)
            .flat_map(|i| {
                let (h, _, st) = slot(u64::from(i));
                header(&m, h, req::IN, 0);
                let at = 3 * i;
                vec![
                    desc(h, 16, NEXT, at + 1),
                    desc(0x8_0000, 64 * 1024, NEXT | WRITE, at + 2),
                    desc(st, 1, WRITE, 0),
                ]
            })
            .collect();
        q.add_desc_chains(&descs, 0).unwrap();
        let aq = active(&q, false);
        let kick = aq.kick.try_clone().unwrap();
        blk.activate(m.clone(), 0, vec![aq], Arc::new(CountIrq::default()))
            .unwrap();
        kick.write(1).unwrap();
        std::thread::sleep(Duration::from_millis(1));
        blk.reset();
        let mut before = vec![0u8; 0x10_0000];
        m.read_slice(&mut before, GuestAddress(0)).unwrap();
        std::thread::sleep(Duration::from_millis(50));
        let mut after = vec![0u8; 0x10_0000];
        m.read_slice(&mut after, GuestAddress(0)).unwrap();
        assert!(before == after, "guest memory changed after reset");
    }

    #[test]
    fn a_disk_offers_one_queue_per_vcpu_and_serves_each() {
        let img = image("mq");
        let single = Blk::new(&img.0, false).unwrap();
        assert_eq!(single.features() & F_MQ, 0);
        let mut blk = Blk::new(&img.0, false).unwrap().with_queues(2);
        assert_ne!(blk.features() & F_MQ, 0);
        assert_eq!(blk.queue_sizes().len(), 2);
        let mut nq = [0u8; 2];
        blk.read_config(34, &mut nq);
        assert_eq!(u16::from_le_bytes(nq), 2);
        assert_eq!(
            Blk::new(&img.0, false).unwrap().with_queues(999).queues,
            MAX_QUEUES
        );
        assert_eq!(Blk::new(&img.0, false).unwrap().with_queues(0).queues, 1);

        // Two queues with their own rings; requests 0-7 on the first,
        // 10-17 (into their own slots) on the second.
        let m = mem();
        let qa = MockSplitQueue::create(&m, GuestAddress(0), 64);
        let qb = MockSplitQueue::create(&m, GuestAddress(0x1_0000), 64);
        add_reads(&m, &qa, 8);
        let b: Vec<_> = (0..8u16)
            .flat_map(|k| read_chain_into(&m, u64::from(10 + k), k, u64::from(10 + k)))
            .collect();
        qb.add_desc_chains(&b, 0).unwrap();
        let aqa = active(&qa, false);
        let mut aqb = active(&qb, false);
        aqb.index = 1;
        let (ka, kb) = (aqa.kick.try_clone().unwrap(), aqb.kick.try_clone().unwrap());
        let irq = Arc::new(CountIrq::default());
        blk.activate(m.clone(), 0, vec![aqa, aqb], irq.clone())
            .unwrap();
        kb.write(1).unwrap();
        wait_until("the second queue's requests", || used(&m, &qb).len() == 8);
        assert!(used(&m, &qa).is_empty(), "served without its kick");
        ka.write(1).unwrap();
        wait_until("the first queue's requests", || used(&m, &qa).len() == 8);
        for i in (0..8u64).chain(10..18) {
            assert_eq!(slot_status(&m, i), status::OK, "request {i}");
            assert_eq!(slot_data(&m, i)[0] as u64, i, "request {i}");
        }
        blk.reset();
        assert_eq!(blk.info()["stats"]["reads"], 16);
        assert_eq!(blk.info()["queues"], 2);
    }
}
