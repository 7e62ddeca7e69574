//! The implementations of the API endpoints, grouped like Proxmox VE's
//! API tree. Each module declares its endpoints in an `ENDPOINTS` table;
//! [`TABLES`] lists them all.

pub mod access;
pub mod cluster;
pub mod firewall;
pub mod lxc;
pub mod network;
pub mod nodes;
pub mod pools;
pub mod qemu;
pub mod qemu_clone;
pub mod qemu_resize;
pub mod qemu_template;
pub mod storage;
pub mod version;

use hyper::Method;

use crate::router::Endpoint;

/// Refuses a client's `digest` that is not the current one (`current`
/// computes it, only when a digest was given): the configuration changed
/// since the client read it. Proxmox's words.
pub(crate) fn check_digest(
    given: Option<&str>,
    current: impl FnOnce() -> String,
) -> Result<(), String> {
    match given {
        Some(d) if d != current() => {
            Err("detected modified configuration - file changed by other user? Try again.".into())
        }
        _ => Ok(()),
    }
}

/// Every module's endpoint table.
pub static TABLES: &[&[Endpoint]] = &[
    firewall::CLUSTER,
    firewall::CLUSTER_RULES,
    firewall::GROUP_RULES,
    firewall::CLUSTER_OPTIONS,
    firewall::CLUSTER_ALIASES,
    firewall::CLUSTER_IPSETS,
    firewall::HOST,
    firewall::HOST_RULES,
    firewall::HOST_OPTIONS,
    firewall::QEMU,
    firewall::QEMU_RULES,
    firewall::QEMU_OPTIONS,
    firewall::QEMU_ALIASES,
    firewall::QEMU_IPSETS,
    firewall::LXC,
    firewall::LXC_RULES,
    firewall::LXC_OPTIONS,
    firewall::LXC_ALIASES,
    firewall::LXC_IPSETS,
    access::ticket::ENDPOINTS,
    access::ENDPOINTS,
    access::users::ENDPOINTS,
    cluster::ENDPOINTS,
    nodes::ENDPOINTS,
    network::ENDPOINTS,
    qemu::ENDPOINTS,
    qemu_clone::ENDPOINTS,
    qemu_resize::ENDPOINTS,
    qemu_template::ENDPOINTS,
    lxc::ENDPOINTS,
    pools::ENDPOINTS,
    storage::ENDPOINTS,
    version::ENDPOINTS,
];

/// The endpoints (method and path) whose body is a streamed
/// `multipart/form-data` upload; see [`crate::upload`].
pub static UPLOADS: &[(Method, &str)] = &[(Method::POST, storage::UPLOAD_PATH)];
