//! A KVM smoke test: create a VM with one page of memory, run a few
//! real-mode instructions on one vCPU, and check the port I/O and halt they
//! cause. It proves that `/dev/kvm` is usable, not merely present.

use kvm_ioctls::{Kvm, VcpuExit};
use vm_memory::{Bytes, GuestAddress, GuestMemoryMmap};

/// Where the code is loaded and started.
const CODE_ADDR: u64 = 0x1000;
/// The port the code writes to.
const PORT: u16 = 0x3f8;

/// Real-mode code: `mov dx, 0x3f8; mov al, [0x1100]; add al, 1; out dx, al; hlt`.
/// The byte at 0x1100 is filled in by the host, so the answer proves the
/// guest really read memory and computed.
const CODE: [u8; 11] = [
    0xba, 0xf8, 0x03, // mov dx, 0x3f8
    0xa0, 0x00, 0x11, // mov al, [0x1100]
    0x04, 0x01, // add al, 1
    0xee, // out dx, al
    0xf4, // hlt
    0x00,
];

/// Errors of the probe.
#[derive(Debug, thiserror::Error)]
pub enum ProbeError {
    /// A KVM ioctl failed.
    #[error("KVM {what}: {source}")]
    Kvm {
        /// The step.
        what: &'static str,
        /// The cause.
        source: kvm_ioctls::Error,
    },
    /// Guest memory could not be set up.
    #[error("guest memory: {0}")]
    Memory(String),
    /// The guest did something other than expected.
    #[error("unexpected guest behaviour: {0}")]
    Unexpected(String),
}

/// What the probe saw.
#[derive(Debug, PartialEq, Eq)]
pub struct ProbeReport {
    /// `KVM_GET_API_VERSION`.
    pub api_version: i32,
    /// The byte the guest wrote to the port.
    pub out_byte: u8,
}

fn kvm(what: &'static str) -> impl Fn(kvm_ioctls::Error) -> ProbeError {
    move |source| ProbeError::Kvm { what, source }
}

/// Runs the probe with `seed` as the value the guest increments.
pub fn run(seed: u8) -> Result<ProbeReport, ProbeError> {
    let kvm_fd = Kvm::new().map_err(kvm("open /dev/kvm"))?;
    let api_version = kvm_fd.get_api_version();
    let vm = kvm_fd.create_vm().map_err(kvm("create VM"))?;
    let mem: GuestMemoryMmap<()> = GuestMemoryMmap::from_ranges(&[(GuestAddress(0), 0x10000)])
        .map_err(|e| ProbeError::Memory(e.to_string()))?;
    mem.write_slice(&CODE, GuestAddress(CODE_ADDR))
        .map_err(|e| ProbeError::Memory(e.to_string()))?;
    mem.write_obj(seed, GuestAddress(0x1100))
        .map_err(|e| ProbeError::Memory(e.to_string()))?;
    // SAFETY: `mem` is dropped only after the vCPU and the VM (explicit
    // drops below), so KVM never sees the mapping go away while it can use it.
    unsafe { crate::layout::register_memory(&vm, &mem) }.map_err(ProbeError::Memory)?;
    let mut vcpu = vm.create_vcpu(0).map_err(kvm("create vCPU"))?;
    let mut sregs = vcpu.get_sregs().map_err(kvm("get sregs"))?;
    sregs.cs.base = 0;
    sregs.cs.selector = 0;
    vcpu.set_sregs(&sregs).map_err(kvm("set sregs"))?;
    let mut regs = vcpu.get_regs().map_err(kvm("get regs"))?;
    regs.rip = CODE_ADDR;
    regs.rflags = 2;
    vcpu.set_regs(&regs).map_err(kvm("set regs"))?;
    let mut out_byte = None;
    for _ in 0..16 {
        match vcpu.run().map_err(kvm("run vCPU"))? {
            VcpuExit::IoOut(PORT, data) if data.len() == 1 => out_byte = Some(data[0]),
            VcpuExit::Hlt => break,
            other => return Err(ProbeError::Unexpected(format!("{other:?}"))),
        }
    }
    drop(vcpu);
    drop(vm);
    drop(mem);
    let out_byte =
        out_byte.ok_or_else(|| ProbeError::Unexpected("halted without writing the port".into()))?;
    if out_byte != seed.wrapping_add(1) {
        return Err(ProbeError::Unexpected(format!(
            "guest wrote {out_byte:#x}, expected {:#x}",
            seed.wrapping_add(1)
        )));
    }
    Ok(ProbeReport {
        api_version,
        out_byte,
    })
}
