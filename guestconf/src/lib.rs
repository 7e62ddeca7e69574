//! Proxmox-format guest configuration files (`qemu-server/<vmid>.conf`,
//! `lxc/<vmid>.conf`) and property strings.
//!
//! - [`GuestConfig`] parses a file and writes it back byte for byte, with
//!   access to keys, the description and the `[…]` sections.
//! - [`PropertyString`] does the same for `key=value,…` values.
//! - [`NetDevice`], [`DiskDevice`], [`BootOrder`], [`MountPoint`],
//!   [`ContainerNet`] and [`ContainerFeatures`] check and read the
//!   structured values; [`validate_vm_key`] and [`validate_ct_key`] check
//!   any single key.
//!
//! The format is described in `docs/guestconf.md`.

mod boot;
mod comment_text;
mod config;
mod container;
mod disk;
mod keys;
mod net;
mod property_string;
mod schema;
mod volume;

pub use boot::{is_boot_device, BootOrder};
pub use comment_text::{decode_comment_text, encode_comment_text};
pub use config::{
    digest, is_valid_key, is_valid_snapshot_name, ConfigError, Entry, GuestConfig, Line,
    ParseError, Section, SectionKind,
};
pub use container::{
    ContainerFeatures, ContainerNet, Ipv4Config, Ipv6Config, MountPoint, MountSource,
    MAX_CT_NET_INDEX, MAX_MOUNT_POINT_INDEX,
};
pub use disk::{DiskBus, DiskDevice, DiskFile, DiskMedia};
pub use keys::{
    check_dns_name, is_known_ct_key, is_known_vm_key, validate_ct_key, validate_vm_key, CT_OSTYPES,
    MAX_VM_MEMORY_MIB, VM_OSTYPES,
};
pub use net::{check_interface_name, MacAddr, NetDevice, MAX_VM_NET_INDEX, NIC_MODELS};
pub use property_string::{Property, PropertyString, PropertySyntaxError};
pub use schema::PropertyError;
pub use volume::{
    format_disk_size, is_valid_storage_id, parse_allocation, parse_disk_size, Allocation,
    SizeError, VolumeId,
};
