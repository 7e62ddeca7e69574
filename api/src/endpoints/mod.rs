//! The implementations of the API endpoints, grouped like Proxmox VE's
//! API tree.

pub mod access;
pub mod version;
