//! Oxbow's virtual machine monitor.
//!
//! Scope: guest memory and vCPUs on KVM (kvm-ioctls, vm-memory), direct
//! kernel boot of bzImage and PVH ELF kernels (linux-loader), ACPI tables
//! (acpi_tables), a 16550 serial console and i8042, virtio-pci devices
//! (block, net, rng), and a JSON control socket. One process per VM, started
//! as a transient unit of `init`.
//!
//! Built so far: [`probe`], which proves that `/dev/kvm` runs guest code.

pub mod probe;
