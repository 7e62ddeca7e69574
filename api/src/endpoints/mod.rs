//! The implementations of the API endpoints, grouped like Proxmox VE's
//! API tree. Each module declares its endpoints in an `ENDPOINTS` table;
//! [`TABLES`] lists them all.

pub mod access;
pub mod cluster;
pub mod nodes;
pub mod pools;
pub mod qemu;
pub mod version;

use crate::router::Endpoint;

/// Every module's endpoint table.
pub static TABLES: &[&[Endpoint]] = &[
    access::ticket::ENDPOINTS,
    access::ENDPOINTS,
    access::users::ENDPOINTS,
    cluster::ENDPOINTS,
    nodes::ENDPOINTS,
    qemu::ENDPOINTS,
    pools::ENDPOINTS,
    version::ENDPOINTS,
];
