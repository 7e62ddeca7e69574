//! Oxbow's virtual machine monitor.
//!
//! One process per VM, started as a transient unit of `init`. It boots a
//! Linux kernel directly, as a bzImage through its 64-bit entry or as an
//! ELF `vmlinux` through its PVH entry ([`boot`], [`cpu`]), on KVM
//! (kvm-ioctls, vm-memory, linux-loader), with hardware-reduced ACPI tables
//! ([`acpi`]), a 16550 console and an i8042 reset line ([`devices`]), and a
//! JSON control socket ([`control`]). [`probe`] proves that `/dev/kvm` runs
//! guest code at all.
//!
//! Not built yet: virtio-pci devices (block, net, rng).

pub mod acpi;
pub mod boot;
pub mod cli;
pub mod control;
pub mod cpu;
pub mod devices;
pub mod exit;
pub mod layout;
pub mod pci;
pub mod probe;
pub mod virtio;
pub mod vm;
