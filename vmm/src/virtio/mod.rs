//! virtio devices and their PCI transport.
//!
//! A device implements [`VirtioDevice`]: it declares its type, queues,
//! features and configuration space, and on [`VirtioDevice::activate`]
//! takes its queues (each with the eventfd KVM signals when the guest
//! notifies it) and an [`Interrupt`] to signal used buffers. Devices run
//! their queues on their own worker thread ([`Worker`]), an epoll loop, so
//! a vCPU never waits for device I/O.

use std::io;
use std::os::fd::{AsRawFd, RawFd};
use std::sync::Arc;
use std::thread::JoinHandle;

use virtio_queue::Queue;
use vm_memory::GuestMemoryMmap;
use vmm_sys_util::epoll::{ControlOperation, Epoll, EpollEvent, EventSet};
use vmm_sys_util::eventfd::EventFd;

pub mod blk;
pub mod io_pool;
pub mod net;
pub mod pci;
pub mod rng;
pub mod sg;
pub mod tap;
pub mod vhost_net;

/// virtio 1.0 (modern) devices only.
pub const VIRTIO_F_VERSION_1: u64 = 1 << 32;
/// `VIRTIO_RING_F_EVENT_IDX`: the driver says in `used_event` after which
/// used entry it wants an interrupt, the device in `avail_event` after
/// which available entry it wants a notification. The transport turns it
/// on in each queue when the driver acked it.
pub const VIRTIO_RING_F_EVENT_IDX: u64 = 1 << 29;

/// virtio device types (virtio spec 5).
pub mod device_type {
    /// Network card.
    pub const NET: u32 = 1;
    /// Block device.
    pub const BLOCK: u32 = 2;
    /// Entropy source.
    pub const RNG: u32 = 4;
}

/// How a device tells the guest about used buffers or a config change.
pub trait Interrupt: Send + Sync {
    /// Queue `index` has new used buffers.
    fn queue(&self, index: u16) -> io::Result<()>;
    /// The device configuration changed.
    fn config(&self) -> io::Result<()>;
    /// An eventfd whose every write raises queue `index`'s interrupt in
    /// the kernel (a KVM irqfd), for a data path outside the vmm (the
    /// kernel's vhost-net) to signal directly; `None` if there is none.
    fn queue_eventfd(&self, _index: u16) -> Option<EventFd> {
        None
    }
}

/// The configuration interrupt of an active device, for whoever changes
/// its configuration space from outside the device (a NIC's link, a disk's
/// capacity). Empty while no driver has set the device up: the driver
/// reads the configuration when it does.
#[derive(Default)]
pub struct ConfigNotifier(std::sync::Mutex<Option<std::sync::Arc<dyn Interrupt>>>);

impl ConfigNotifier {
    /// Sets (on activation) or clears (on reset) the interrupt.
    pub fn attach(&self, interrupt: Option<std::sync::Arc<dyn Interrupt>>) {
        *self.0.lock().unwrap_or_else(|e| e.into_inner()) = interrupt;
    }

    /// Runs `change`, which returns its result and whether the
    /// configuration changed, and then tells an active driver of a change.
    /// The interrupt is held throughout, so a driver that activates the
    /// device meanwhile reads the configuration after the change.
    pub fn change<T>(&self, change: impl FnOnce() -> io::Result<(T, bool)>) -> io::Result<T> {
        let interrupt = self.0.lock().unwrap_or_else(|e| e.into_inner());
        let (out, changed) = change()?;
        if changed {
            if let Some(i) = interrupt.as_ref() {
                i.config()?;
            }
        }
        Ok(out)
    }
}

/// A queue handed to a device when the driver sets DRIVER_OK.
#[derive(Debug)]
pub struct ActiveQueue {
    /// Its index.
    pub index: u16,
    /// The queue itself (addresses, size, ring positions).
    pub queue: Queue,
    /// Becomes readable when the guest notifies the queue.
    pub kick: EventFd,
}

/// A virtio device behind a transport.
pub trait VirtioDevice: Send {
    /// The virtio device type.
    fn device_type(&self) -> u32;
    /// A short name for `info` (`blk`, `net`, `rng`).
    fn name(&self) -> &'static str;
    /// The maximum size of each queue.
    fn queue_sizes(&self) -> Vec<u16>;
    /// Device feature bits offered (include [`VIRTIO_F_VERSION_1`]).
    fn features(&self) -> u64;
    /// Reads the device configuration space.
    fn read_config(&self, offset: u64, data: &mut [u8]);
    /// Writes the device configuration space (most devices ignore it).
    fn write_config(&mut self, _offset: u64, _data: &[u8]) {}
    /// Starts the device with the features the driver accepted.
    fn activate(
        &mut self,
        mem: GuestMemoryMmap,
        acked_features: u64,
        queues: Vec<ActiveQueue>,
        interrupt: Arc<dyn Interrupt>,
    ) -> io::Result<()>;
    /// Stops the device (driver reset); it can be activated again.
    fn reset(&mut self);
    /// What `info` on the control socket reports about it.
    fn info(&self) -> serde_json::Value;
}

/// Copies `src` (a little-endian config structure) into a guest read at
/// `offset`; bytes past the end read as zero.
pub fn read_config_bytes(src: &[u8], offset: u64, data: &mut [u8]) {
    for (i, b) in data.iter_mut().enumerate() {
        *b = usize::try_from(offset)
            .ok()
            .and_then(|o| o.checked_add(i))
            .and_then(|o| src.get(o))
            .copied()
            .unwrap_or(0);
    }
}

/// A device's worker thread: an epoll loop over its queue eventfds (and
/// any other fds, such as a tap), stopped through its own eventfd.
#[derive(Debug)]
pub struct Worker {
    stop: EventFd,
    thread: Option<JoinHandle<()>>,
}

/// The epoll token of the stop eventfd.
const STOP_TOKEN: u64 = u64::MAX;

impl Worker {
    /// Starts `name` polling `fds` (token = position in `fds`) and calling
    /// `handle(token)` for each readable one. `handle` returns false to end
    /// the loop.
    pub fn spawn<F>(name: String, fds: Vec<RawFd>, mut handle: F) -> io::Result<Worker>
    where
        F: FnMut(usize) -> bool + Send + 'static,
    {
        let stop = EventFd::new(libc::EFD_NONBLOCK)?;
        let epoll = Epoll::new()?;
        epoll.ctl(
            ControlOperation::Add,
            stop.as_raw_fd(),
            EpollEvent::new(EventSet::IN, STOP_TOKEN),
        )?;
        for (i, fd) in fds.iter().enumerate() {
            epoll.ctl(
                ControlOperation::Add,
                *fd,
                EpollEvent::new(EventSet::IN, i as u64),
            )?;
        }
        let thread = crate::thread(name).spawn(move || {
            let mut events = vec![EpollEvent::default(); 16];
            loop {
                let n = match epoll.wait(-1, &mut events) {
                    Ok(n) => n,
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                    Err(_) => return,
                };
                for ev in &events[..n] {
                    if ev.data() == STOP_TOKEN || !handle(ev.data() as usize) {
                        return;
                    }
                }
            }
        })?;
        Ok(Worker {
            stop,
            thread: Some(thread),
        })
    }

    /// Stops the thread and waits for it.
    pub fn stop(&mut self) {
        let _ = self.stop.write(1);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

impl Drop for Worker {
    fn drop(&mut self) {
        self.stop();
    }
}

/// After a queue was processed: interrupts the guest if buffers were used
/// and the driver wants to hear about it.
pub fn signal_used(aq: &mut ActiveQueue, mem: &GuestMemoryMmap, irq: &dyn Interrupt, used: bool) {
    use virtio_queue::QueueT;
    if used && aq.queue.needs_notification(mem).unwrap_or(true) {
        let _ = irq.queue(aq.index);
    }
}

/// What one round of [`run_queue`]'s `process` did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Round {
    /// Buffers were used: the guest may be due an interrupt.
    pub used: bool,
    /// The device takes no more for now (its requests in flight are at
    /// their bound): notifications stay off and the queue is left alone
    /// until the device comes back to it by itself.
    pub hold: bool,
}

/// Works a queue after a kick until it is empty, with the driver's
/// notifications off meanwhile: `process` serves what is available and
/// says what it did; the guest is interrupted as it asked
/// ([`signal_used`]); unless `process` holds the queue, notifications go
/// back on, and if the driver added buffers in between (virtio-queue reads
/// the index again after enabling), the queue is worked again instead of
/// waiting for a kick that will not come. Returns how many rounds it took.
pub fn run_queue(
    aq: &mut ActiveQueue,
    mem: &GuestMemoryMmap,
    irq: &dyn Interrupt,
    mut process: impl FnMut(&mut Queue) -> Round,
) -> usize {
    use virtio_queue::QueueT;
    let mut rounds = 0;
    loop {
        rounds += 1;
        // Without EVENT_IDX this sets VRING_USED_F_NO_NOTIFY; with it,
        // the driver stops notifying by itself once it has passed
        // `avail_event`, which is only moved when notifications go back on.
        let _ = aq.queue.disable_notification(mem);
        let round = process(&mut aq.queue);
        signal_used(aq, mem, irq, round.used);
        if round.hold {
            return rounds;
        }
        match aq.queue.enable_notification(mem) {
            Ok(true) => continue,
            _ => return rounds,
        }
    }
}

/// Reads and discards an eventfd's counter (a queue kick).
pub fn drain(evt: &EventFd) {
    let _ = evt.read();
}
