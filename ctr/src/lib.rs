//! Oxbow's system container runtime.
//!
//! - [`unpack`]: a template (`.tar.zst`) into an id-shifted root directory,
//!   refusing hostile archives and leaving nothing behind when it does;
//!   [`path`] is the sanitizer for the names and link targets in an
//!   archive;
//! - [`spec`]: the part of `lxc/<vmid>.conf` the runtime acts on;
//! - [`monitor`]: one process per running container (namespaces, console,
//!   control socket, stop, shutdown and reboot), with [`child`] the steps
//!   from `clone` to the guest's init;
//! - [`cgroup`], [`net`], [`seccomp`], [`guestfiles`]: the container's
//!   cgroups, veths, system call filter and the files written into the
//!   guest;
//! - [`template`]: packing a directory tree as a template;
//! - [`rootfs`]: reading and writing files of a stopped container from the
//!   host (root password, SSH keys) without leaving its tree.
//!
//! See docs/ctr.md for the processes, the namespace order, the id mapping,
//! the cgroup layout and the trust boundary.

pub mod cgroup;
pub mod child;
pub mod guestfiles;
pub mod idmap;
pub mod monitor;
pub mod net;
pub mod path;
mod rawsys;
pub mod rootfs;
pub mod seccomp;
pub mod spec;
mod sys;
pub mod template;
pub mod unpack;

use std::path::Path;

pub use idmap::IdMap;
pub use monitor::{request, Info, MonitorError, MonitorOptions, Outcome, Request, EXIT_REBOOT};
pub use path::{EntryPath, PathError};
pub use spec::{ContainerSpec, Limits, NetSpec, SpecError};
pub use unpack::{unpack_template, UnpackError, UnpackOptions, UnpackReport};

/// Creates a container's root directory `rootfs` from a template
/// (`local:vztmpl/<name>.tar.zst`, resolved to a file by the caller).
pub fn create_from_template(
    template: &Path,
    rootfs: &Path,
    opts: &UnpackOptions,
) -> Result<UnpackReport, UnpackError> {
    unpack_template(template, rootfs, opts)
}

/// Removes a container's root directory (when the container is
/// destroyed), never following links inside it. A missing directory is
/// not an error.
pub fn destroy_rootfs(rootfs: &Path) -> std::io::Result<()> {
    unpack::remove_tree(rootfs)
}

/// Runs the container's monitor until the container ends (see
/// [`monitor`]). Call from a single-threaded process: the `ctr start`
/// binary, run by init as the unit `ctr:<vmid>`.
pub fn run_monitor(spec: &ContainerSpec, opts: &MonitorOptions) -> Result<Outcome, MonitorError> {
    monitor::run(spec, opts)
}
