//! Oxbow's system container runtime (not built yet).
//!
//! Scope: unpack `.tar.zst` templates into an id-shifted rootfs, start a
//! distribution's own init in user, mount, pid, uts, ipc, net and cgroup
//! namespaces after `pivot_root`, apply cgroup v2 limits, wire a veth to a
//! bridge, and carry Proxmox's stop and reboot semantics. One monitor
//! process per container, started as a transient unit of `init`.
