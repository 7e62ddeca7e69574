//! virtio-net's data path in the host kernel: vhost-net.
//!
//! With `vhost=on` (or `auto` where `/dev/vhost-net` opens) the VMM does not
//! move frames itself. At activation it gives the kernel's vhost-net the
//! guest memory map, both rings (addresses, size, next available index),
//! the eventfds KVM signals on the guest's notifications, and the tap. The
//! kernel then moves frames between the rings and the tap on its own
//! thread, as QEMU's `vhost=on` does. The tap keeps its `virtio_net_hdr_v1`
//! (12 bytes, `IFF_VNET_HDR`) and its offloads, set from the acked features
//! as on the VMM's own path.
//!
//! vhost-net tells of used buffers through one eventfd per queue. That is
//! the queue's MSI-X vector's own eventfd, a KVM irqfd
//! ([`Interrupt::queue_eventfd`]), so the kernel raises the guest's
//! interrupt itself; masking detaches the irqfd, as on the VMM's own path.
//! A queue with no vector gets an eventfd of its own and a worker thread
//! relays its calls through the transport's [`Interrupt`].
//!
//! Only the features vhost-net itself understands (ring layout, event
//! index, mergeable receive buffers, version 1) are passed to it; the
//! offloads concern the tap alone.

use std::fs::File;
use std::io;
use std::os::fd::{AsRawFd, RawFd};
use std::os::unix::fs::OpenOptionsExt;
use std::sync::Arc;

use vhost::vhost_kern::vhost_binding::{vhost_vring_file, VHOST_NET_SET_BACKEND};
use vhost::vhost_kern::VhostKernBackend;
use vhost::{VhostBackend, VhostUserMemoryRegionInfo, VringConfigData};
use virtio_queue::QueueT;
use vm_memory::{GuestMemoryBackend, GuestMemoryMmap, GuestMemoryRegion};
use vmm_sys_util::eventfd::EventFd;

use super::tap::Tap;
use super::{drain, ActiveQueue, Interrupt, Worker};

/// The device node.
pub const DEVICE: &str = "/dev/vhost-net";

/// An open `/dev/vhost-net` for one NIC. It is opened with the NIC, while
/// the VMM may still open device nodes (before its sandbox, docs/vmm.md),
/// and serves every activation of the device: a reset gives up the
/// ownership (`VHOST_RESET_OWNER`) so the next activation can take it again.
#[derive(Debug)]
pub struct Device(File);

impl Device {
    /// Opens the device node.
    pub fn open() -> io::Result<Device> {
        std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .custom_flags(libc::O_CLOEXEC | libc::O_NONBLOCK)
            .open(DEVICE)
            .map(Device)
    }
}

/// The kernel backend of one activation: the device and the guest memory
/// its rings live in. Dropping it gives up the ownership, which also
/// detaches the tap from both rings and stops the kernel's worker.
struct Backend {
    device: Arc<Device>,
    mem: Arc<GuestMemoryMmap>,
}

impl AsRawFd for Backend {
    fn as_raw_fd(&self) -> RawFd {
        self.device.0.as_raw_fd()
    }
}

impl VhostKernBackend for Backend {
    type AS = Arc<GuestMemoryMmap>;

    fn mem(&self) -> &Self::AS {
        &self.mem
    }
}

impl Backend {
    /// Attaches `tap` to queue `index`.
    fn set_backend(&self, index: usize, tap: &File) -> io::Result<()> {
        let file = vhost_vring_file {
            index: index as u32,
            fd: tap.as_raw_fd(),
        };
        // SAFETY: the descriptor is an open vhost-net device and `file` is
        // the argument VHOST_NET_SET_BACKEND reads; the result is checked.
        let r = unsafe {
            vmm_sys_util::ioctl::ioctl_with_ref(&self.device.0, VHOST_NET_SET_BACKEND(), &file)
        };
        if r < 0 {
            return Err(io::Error::other(format!(
                "vhost-net: attach the tap: {}",
                io::Error::last_os_error()
            )));
        }
        Ok(())
    }
}

impl Drop for Backend {
    fn drop(&mut self) {
        let _ = self.reset_owner();
    }
}

/// A running vhost-net backend for one NIC. Dropping it detaches the tap
/// and stops the kernel's worker.
pub struct VhostNet {
    /// Held for its drop, which gives up the ownership (and with it the
    /// tap and the worker).
    _backend: Backend,
    /// The queues, kept so their kick eventfds stay what the kernel holds.
    _queues: Vec<ActiveQueue>,
    /// Relays the calls of queues with no irqfd, if any.
    _worker: Option<Worker>,
}

impl std::fmt::Debug for VhostNet {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("VhostNet").finish_non_exhaustive()
    }
}

fn err(what: &str) -> impl Fn(vhost::Error) -> io::Error + '_ {
    move |e| io::Error::other(format!("vhost-net: {what}: {e}"))
}

impl VhostNet {
    /// Hands `queues` (receive first, then transmit, by their index) of a
    /// device on `tap` over to vhost-net with the driver's `acked`
    /// features. `name` names the interrupt thread.
    pub fn start(
        name: String,
        device: &Arc<Device>,
        mem: &GuestMemoryMmap,
        acked: u64,
        tap: &Tap,
        queues: Vec<ActiveQueue>,
        interrupt: Arc<dyn Interrupt>,
    ) -> io::Result<VhostNet> {
        let backend = Backend {
            device: device.clone(),
            mem: Arc::new(mem.clone()),
        };
        backend.set_owner().map_err(err("set owner"))?;
        let supported = backend.get_features().map_err(err("get features"))?;
        backend
            .set_features(acked & supported)
            .map_err(err("set features"))?;
        let mut regions = Vec::new();
        for r in mem.iter() {
            let host = mem
                .get_host_address(r.start_addr())
                .map_err(|e| io::Error::other(format!("vhost-net: guest memory: {e}")))?;
            regions.push(VhostUserMemoryRegionInfo {
                guest_phys_addr: r.start_addr().0,
                memory_size: r.len(),
                userspace_addr: host as u64,
                mmap_offset: 0,
                mmap_handle: -1,
            });
        }
        backend
            .set_mem_table(&regions)
            .map_err(err("set the memory table"))?;

        // A queue whose interrupt is an irqfd gets it as its call eventfd:
        // the kernel then signals the guest with no thread of ours in
        // between. Otherwise a worker relays the calls.
        let mut calls = Vec::new();
        for q in &queues {
            let i = usize::from(q.index);
            let (call, relay) = match interrupt.queue_eventfd(q.index) {
                Some(fd) => (fd, false),
                None => (EventFd::new(libc::EFD_NONBLOCK)?, true),
            };
            let size = q.queue.size();
            backend.set_vring_num(i, size).map_err(err("ring size"))?;
            let config = VringConfigData {
                queue_max_size: q.queue.max_size(),
                queue_size: size,
                flags: 0,
                desc_table_addr: q.queue.desc_table(),
                used_ring_addr: q.queue.used_ring(),
                avail_ring_addr: q.queue.avail_ring(),
                log_addr: None,
            };
            backend
                .set_vring_addr(i, &config)
                .map_err(err("ring addresses"))?;
            backend
                .set_vring_base(i, q.queue.next_avail())
                .map_err(err("ring position"))?;
            backend
                .set_vring_call(i, &call)
                .map_err(err("call eventfd"))?;
            backend
                .set_vring_kick(i, &q.kick)
                .map_err(err("kick eventfd"))?;
            if relay {
                calls.push((q.index, call));
            }
        }
        for q in &queues {
            backend.set_backend(usize::from(q.index), tap.file())?;
            // Chains the driver queued before activation.
            q.kick.write(1)?;
        }

        let worker = if calls.is_empty() {
            None
        } else {
            let fds = calls.iter().map(|(_, c)| c.as_raw_fd()).collect();
            Some(Worker::spawn(name, fds, move |token| {
                if let Some((index, call)) = calls.get(token) {
                    drain(call);
                    let _ = interrupt.queue(*index);
                }
                true
            })?)
        };
        Ok(VhostNet {
            _backend: backend,
            _queues: queues,
            _worker: worker,
        })
    }
}
