//! Oxbow's virtual machine monitor.
//!
//! One process per VM, started as a transient unit of `init`. It boots a
//! Linux kernel directly, as a bzImage through its 64-bit entry or as an
//! ELF `vmlinux` through its PVH entry ([`boot`], [`cpu`]), on KVM
//! (kvm-ioctls, vm-memory, linux-loader), with hardware-reduced ACPI tables
//! ([`acpi`]), a 16550 console and an i8042 reset line ([`devices`]), and a
//! JSON control socket ([`control`]). [`probe`] proves that `/dev/kvm` runs
//! guest code at all. Its devices are virtio over PCI with MSI-X
//! ([`pci`], [`virtio`]): block, net and rng. Before the guest runs, it
//! gives up root and installs a system call filter ([`sandbox`]).

pub mod acpi;
pub mod boot;
pub mod cli;
pub mod control;
pub mod cpu;
pub mod devices;
pub mod exit;
pub mod irq;
pub mod kcache;
pub mod layout;
pub mod pci;
pub mod probe;
pub mod sandbox;
pub mod virtio;
pub mod vm;

/// The stack size of every thread the VMM starts. The default (2 MiB)
/// could land on a transparent huge page of its own, a whole 2 MiB of
/// RSS per thread; none of these threads needs more than a few pages.
pub const THREAD_STACK: usize = 512 << 10;

/// A thread builder named `name`, on a [`THREAD_STACK`] stack.
pub fn thread(name: impl Into<String>) -> std::thread::Builder {
    std::thread::Builder::new()
        .name(name.into())
        .stack_size(THREAD_STACK)
}
