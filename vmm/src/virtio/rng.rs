//! virtio-rng: one queue whose writable buffers are filled from the
//! host's `getrandom(2)`.

use std::io::Write;
use std::sync::{Arc, Mutex};

use virtio_queue::{Queue, QueueT};
use vm_memory::GuestMemoryMmap;

use super::{
    device_type, drain, signal_used, ActiveQueue, Interrupt, VirtioDevice, Worker,
    VIRTIO_F_VERSION_1,
};

/// At most this much entropy per request.
const MAX_REQUEST: usize = 64 * 1024;

/// The entropy device.
#[derive(Debug, Default)]
pub struct Rng {
    worker: Option<Worker>,
    served: Arc<Mutex<u64>>,
}

impl Rng {
    /// A new device.
    pub fn new() -> Rng {
        Rng::default()
    }
}

/// Serves every available request on `q`; returns whether any was used.
pub fn process(q: &mut Queue, mem: &GuestMemoryMmap) -> (bool, u64) {
    let mut used_any = false;
    let mut bytes = 0u64;
    while let Some(chain) = q.pop_descriptor_chain(mem) {
        let head = chain.head_index();
        let written = match chain.writer(mem) {
            Ok(mut w) => {
                let n = w.available_bytes().min(MAX_REQUEST);
                let mut buf = vec![0u8; n];
                match getrandom(&mut buf) {
                    Ok(()) => w.write_all(&buf).map(|_| n as u32).unwrap_or(0),
                    Err(_) => 0,
                }
            }
            // A malformed chain: give it back empty.
            Err(_) => 0,
        };
        bytes += u64::from(written);
        if q.add_used(mem, head, written).is_err() {
            break;
        }
        used_any = true;
    }
    (used_any, bytes)
}

fn getrandom(buf: &mut [u8]) -> std::io::Result<()> {
    let mut done = 0;
    while done < buf.len() {
        // SAFETY: the pointer and length describe the unfilled tail of
        // `buf`, which is valid for writes for the duration of the call.
        let r = unsafe { libc::getrandom(buf[done..].as_mut_ptr().cast(), buf.len() - done, 0) };
        if r < 0 {
            let e = std::io::Error::last_os_error();
            if e.kind() == std::io::ErrorKind::Interrupted {
                continue;
            }
            return Err(e);
        }
        done += r as usize;
    }
    Ok(())
}

impl VirtioDevice for Rng {
    fn device_type(&self) -> u32 {
        device_type::RNG
    }
    fn name(&self) -> &'static str {
        "rng"
    }
    fn queue_sizes(&self) -> Vec<u16> {
        vec![256]
    }
    fn features(&self) -> u64 {
        VIRTIO_F_VERSION_1
    }
    fn read_config(&self, _offset: u64, data: &mut [u8]) {
        data.fill(0);
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
        let served = self.served.clone();
        let fds = vec![std::os::fd::AsRawFd::as_raw_fd(&aq.kick)];
        self.worker = Some(Worker::spawn("virtio-rng".into(), fds, move |_| {
            drain(&aq.kick);
            let (used, bytes) = process(&mut aq.queue, &mem);
            if let Ok(mut s) = served.lock() {
                *s += bytes;
            }
            signal_used(&mut aq, &mem, irq.as_ref(), used);
            true
        })?);
        Ok(())
    }
    fn reset(&mut self) {
        // Dropping the worker stops its thread.
        self.worker = None;
    }
    fn info(&self) -> serde_json::Value {
        serde_json::json!({ "bytes_served": *self.served.lock().unwrap_or_else(|e| e.into_inner()) })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::virtio::blk::tests::{desc, mem, used, NEXT, WRITE};
    use virtio_queue::mock::MockSplitQueue;
    use vm_memory::{Bytes, GuestAddress};

    #[test]
    fn fills_writable_buffers_and_refuses_bad_ones() {
        let m = mem();
        let q = MockSplitQueue::create(&m, GuestAddress(0), 16);
        q.add_desc_chains(
            &[
                desc(0x2_0000, 64, WRITE | NEXT, 1),
                desc(0x2_1000, 64, WRITE, 0),
                desc(0xffff_0000_0000, 64, WRITE, 0),
            ],
            0,
        )
        .unwrap();
        let mut queue: Queue = q.create_queue().unwrap();
        let (used_any, bytes) = process(&mut queue, &m);
        assert!(used_any);
        assert_eq!(bytes, 128);
        assert_eq!(used(&m, &q), vec![(0, 128), (2, 0)]);
        let mut a = [0u8; 64];
        m.read_slice(&mut a, GuestAddress(0x2_0000)).unwrap();
        assert_ne!(a, [0u8; 64], "random bytes were written");
    }
}
