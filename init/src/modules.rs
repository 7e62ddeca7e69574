//! Loading kernel modules from a list the image build writes.
//!
//! Each line of a list is a path relative to `/lib/modules/<release>/`, and
//! the lines are already in dependency order, so loading is a plain walk
//! with `finit_module(2)`.

use std::ffi::CString;
use std::fs::File;
use std::path::{Path, PathBuf};

use nix::errno::Errno;
use nix::kmod::{finit_module, ModuleInitFlags};

/// What a walk over a module list did.
#[derive(Debug, Default)]
pub struct LoadReport {
    /// Modules loaded by this walk.
    pub loaded: usize,
    /// Modules that were already present.
    pub present: usize,
    /// Modules that failed, with the reason.
    pub failed: Vec<(String, String)>,
}

/// The directory of the running kernel's modules.
pub fn module_dir() -> PathBuf {
    let release = nix::sys::utsname::uname()
        .map(|u| u.release().to_string_lossy().into_owned())
        .unwrap_or_default();
    Path::new("/lib/modules").join(release)
}

/// The entries of a module list: blank lines and `#` comments skipped.
pub fn parse_list(text: &str) -> Vec<&str> {
    text.lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .collect()
}

/// Loads every module named in the list file `list`.
pub fn load_list(list: &Path, dir: &Path) -> std::io::Result<LoadReport> {
    let text = std::fs::read_to_string(list)?;
    let mut report = LoadReport::default();
    let empty = CString::default();
    for rel in parse_list(&text) {
        let path = dir.join(rel);
        let result = File::open(&path).map_err(|e| e.to_string()).and_then(|f| {
            finit_module(&f, &empty, ModuleInitFlags::empty()).map_err(|e| e.to_string())
        });
        match result {
            Ok(()) => report.loaded += 1,
            Err(e) if e == Errno::EEXIST.to_string() => report.present += 1,
            Err(e) => report.failed.push((rel.to_string(), e)),
        }
    }
    Ok(report)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn list_skips_comments_and_blanks() {
        let l = parse_list("# boot\nkernel/a.ko\n\n  kernel/b.ko  \n#x\n");
        assert_eq!(l, vec!["kernel/a.ko", "kernel/b.ko"]);
    }
}
