//! Oxbow's system container runtime.
//!
//! - [`unpack`]: a template (`.tar.zst`) into an id-shifted root directory,
//!   refusing hostile archives and leaving nothing behind when it does;
//! - [`path`]: the sanitizer for the names and link targets in an archive.
//!
//! See docs/ctr.md for the processes, the namespace order, the id mapping,
//! the cgroup layout and the trust boundary.

pub mod idmap;
pub mod path;
mod sys;
pub mod unpack;

pub use idmap::IdMap;
pub use path::{EntryPath, PathError};
pub use unpack::{unpack_template, UnpackError, UnpackOptions, UnpackReport};

/// Creates a container's root directory `rootfs` from a template
/// (`local:vztmpl/<name>.tar.zst`, resolved to a file by the caller).
pub fn create_from_template(
    template: &std::path::Path,
    rootfs: &std::path::Path,
    opts: &UnpackOptions,
) -> Result<UnpackReport, UnpackError> {
    unpack_template(template, rootfs, opts)
}
