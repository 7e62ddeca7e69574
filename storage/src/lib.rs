//! Oxbow's storage layer (not built yet).
//!
//! Scope: `storage.cfg` in Proxmox's syntax, volume ids such as
//! `local:100/vm-100-disk-0.raw`, and plugins for directories, LVM-thin, ZFS,
//! Ceph RBD, NFS and btrfs, each with allocation, snapshots and content
//! listing (images, rootdir, iso, vztmpl, backup, snippets).
