//! Thin safe wrappers over the system calls this crate needs.
//!
//! Everything here goes through `nix`, which already exposes these calls
//! safely, so the crate has no `unsafe` code.

use std::fs::File;
use std::io;
use std::path::Path;

use nix::errno::Errno;
use nix::fcntl::{renameat2, RenameFlags};
use nix::sys::statvfs::statvfs;

/// Space on the filesystem holding a path, in bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FilesystemUsage {
    /// Size of the filesystem.
    pub total: u64,
    /// Space in use (total minus all free blocks).
    pub used: u64,
    /// Space available to unprivileged users.
    pub avail: u64,
}

/// `statvfs(path)` as byte counts.
pub fn filesystem_usage(path: &Path) -> io::Result<FilesystemUsage> {
    let st = statvfs(path).map_err(io::Error::from)?;
    let unit = st.fragment_size();
    let total = st.blocks().saturating_mul(unit);
    let free = st.blocks_free().saturating_mul(unit);
    let avail = st.blocks_available().saturating_mul(unit);
    Ok(FilesystemUsage {
        total,
        used: total.saturating_sub(free),
        avail,
    })
}

/// fsyncs a directory so a rename or unlink in it is durable.
pub fn fsync_dir(dir: &Path) -> io::Result<()> {
    File::open(dir)?.sync_all()
}

/// `rename(from, to)` that fails with `AlreadyExists` instead of replacing
/// `to`. Uses `renameat2(RENAME_NOREPLACE)`; on filesystems without it,
/// links `to` then unlinks `from`, which is equally no-clobber.
pub fn rename_no_replace(from: &Path, to: &Path) -> io::Result<()> {
    match renameat2(None, from, None, to, RenameFlags::RENAME_NOREPLACE) {
        Ok(()) => Ok(()),
        Err(Errno::EINVAL) | Err(Errno::ENOSYS) => {
            std::fs::hard_link(from, to)?;
            std::fs::remove_file(from)
        }
        Err(e) => Err(io::Error::from(e)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn usage_numbers_are_consistent() {
        let dir = tempfile::tempdir().unwrap();
        let usage = filesystem_usage(dir.path()).unwrap();
        assert!(usage.total > 0);
        assert!(usage.total >= usage.avail);
        assert!(usage.total >= usage.used);
        assert!(filesystem_usage(&dir.path().join("missing")).is_err());
    }
}
