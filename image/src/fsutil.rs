//! Filesystem helpers for working inside a staged root tree.
//!
//! A Debian root made by debootstrap is "usr-merged": `/sbin`, `/bin` and
//! `/lib` are relative symlinks into `/usr`. Paths inside the staged root
//! must therefore be resolved the way the target system will see them,
//! never through the build host's own `/`.

use std::collections::VecDeque;
use std::fs;
use std::os::unix::fs::{symlink, PermissionsExt};
use std::path::{Path, PathBuf};

use crate::error::{Error, IoContext, Result};

const MAX_LINK_HOPS: usize = 40;

/// Resolves `path` (taken as absolute inside `root`) following every
/// symlink as the target system would, with absolute link targets and `..`
/// confined to `root`. Components that do not exist are kept literally.
pub fn resolve_in_root(root: &Path, path: &str) -> Result<PathBuf> {
    let mut pending: VecDeque<String> = path.split('/').map(str::to_owned).collect();
    let mut done: Vec<String> = Vec::new();
    let mut hops = 0;
    while let Some(comp) = pending.pop_front() {
        match comp.as_str() {
            "" | "." => continue,
            ".." => {
                done.pop();
                continue;
            }
            _ => {}
        }
        let candidate = join(root, &done).join(&comp);
        match fs::symlink_metadata(&candidate) {
            Ok(meta) if meta.file_type().is_symlink() => {
                hops += 1;
                if hops > MAX_LINK_HOPS {
                    return Err(Error::Input(format!(
                        "too many symlinks resolving {path} in {}",
                        root.display()
                    )));
                }
                let target = fs::read_link(&candidate).ctx("read link", &candidate)?;
                let target = target.to_string_lossy();
                if target.starts_with('/') {
                    done.clear();
                }
                for c in target.split('/').rev() {
                    pending.push_front(c.to_owned());
                }
            }
            _ => done.push(comp),
        }
    }
    Ok(join(root, &done))
}

/// Like [`resolve_in_root`], but leaves the last component unresolved: the
/// place where an entry named `path` would be created or replaced.
pub fn entry_in_root(root: &Path, path: &str) -> Result<PathBuf> {
    let trimmed = path.trim_end_matches('/');
    let (parent, name) = trimmed.rsplit_once('/').unwrap_or(("", trimmed));
    if name.is_empty() || name == "." || name == ".." {
        return Err(Error::Input(format!("bad path {path:?} inside the root")));
    }
    Ok(resolve_in_root(root, parent)?.join(name))
}

fn join(root: &Path, comps: &[String]) -> PathBuf {
    let mut p = root.to_path_buf();
    p.extend(comps);
    p
}

/// Removes a file, symlink or directory tree; absent paths are fine.
pub fn remove(path: &Path) -> Result<()> {
    match fs::symlink_metadata(path) {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(e).ctx("stat", path),
        Ok(m) if m.is_dir() => fs::remove_dir_all(path).ctx("remove", path),
        Ok(_) => fs::remove_file(path).ctx("remove", path),
    }
}

/// Creates a directory and its parents.
pub fn mkdir_p(path: &Path) -> Result<()> {
    fs::create_dir_all(path).ctx("create directory", path)
}

/// Writes `data` to `rel` inside `root` (through the root's symlinks),
/// replacing whatever was there, with permission bits `mode`.
pub fn write_in_root(root: &Path, rel: &str, data: &[u8], mode: u32) -> Result<PathBuf> {
    let dest = entry_in_root(root, rel)?;
    if let Some(parent) = dest.parent() {
        mkdir_p(parent)?;
    }
    remove(&dest)?;
    fs::write(&dest, data).ctx("write", &dest)?;
    set_mode(&dest, mode)?;
    Ok(dest)
}

/// Copies a host file to `rel` inside `root` with permission bits `mode`.
pub fn copy_into_root(root: &Path, src: &Path, rel: &str, mode: u32) -> Result<PathBuf> {
    let dest = entry_in_root(root, rel)?;
    if let Some(parent) = dest.parent() {
        mkdir_p(parent)?;
    }
    remove(&dest)?;
    fs::copy(src, &dest).ctx("copy to", &dest)?;
    set_mode(&dest, mode)?;
    Ok(dest)
}

/// Creates (or replaces) the symlink `rel` inside `root` pointing at `target`.
pub fn symlink_in_root(root: &Path, rel: &str, target: &str) -> Result<PathBuf> {
    let dest = entry_in_root(root, rel)?;
    if let Some(parent) = dest.parent() {
        mkdir_p(parent)?;
    }
    remove(&dest)?;
    symlink(target, &dest).ctx("create symlink", &dest)?;
    Ok(dest)
}

/// Sets permission bits.
pub fn set_mode(path: &Path, mode: u32) -> Result<()> {
    fs::set_permissions(path, fs::Permissions::from_mode(mode)).ctx("chmod", path)
}

/// Copies the tree `src` over `root`, resolving destination paths through
/// the root's symlinks. Files and symlinks replace what is there; new
/// entries are owned by the user running the build (root).
///
/// The overlay comes from a source checkout, whose modes depend on the
/// developer's umask, so modes are normalised: files become 0755 if any
/// execute bit is set and 0644 otherwise, new directories 0755, and
/// existing directories keep theirs. Files named `.keep` (placeholders for
/// empty directories) are skipped. Returns the number of files and
/// symlinks copied.
pub fn overlay_tree(src: &Path, root: &Path) -> Result<usize> {
    let mut count = 0;
    overlay_dir(src, root, "", &mut count)?;
    Ok(count)
}

fn overlay_dir(src: &Path, root: &Path, rel: &str, count: &mut usize) -> Result<()> {
    let dir = src.join(rel);
    let mut entries: Vec<_> = fs::read_dir(&dir)
        .ctx("read directory", &dir)?
        .collect::<std::io::Result<_>>()
        .ctx("read directory", &dir)?;
    entries.sort_by_key(|e| e.file_name());
    for entry in entries {
        let name = entry.file_name();
        let name = name.to_str().ok_or_else(|| {
            Error::Input(format!(
                "non-UTF-8 name in overlay: {}",
                entry.path().display()
            ))
        })?;
        let child = if rel.is_empty() {
            name.to_owned()
        } else {
            format!("{rel}/{name}")
        };
        let path = entry.path();
        let meta = fs::symlink_metadata(&path).ctx("stat", &path)?;
        let ft = meta.file_type();
        if ft.is_dir() {
            let dest = resolve_in_root(root, &child)?;
            if !dest.is_dir() {
                remove(&dest)?;
                mkdir_p(&dest)?;
                set_mode(&dest, 0o755)?;
            }
            overlay_dir(src, root, &child, count)?;
        } else if name == ".keep" {
            continue;
        } else if ft.is_symlink() {
            let target = fs::read_link(&path).ctx("read link", &path)?;
            symlink_in_root(root, &child, &target.to_string_lossy())?;
            *count += 1;
        } else if ft.is_file() {
            let mode = if meta.permissions().mode() & 0o111 != 0 {
                0o755
            } else {
                0o644
            };
            copy_into_root(root, &path, &child, mode)?;
            *count += 1;
        } else {
            return Err(Error::Input(format!(
                "overlay entry {} is not a file, directory or symlink",
                path.display()
            )));
        }
    }
    Ok(())
}

/// Total size in bytes of the regular files under `path` (symlinks not
/// followed).
pub fn tree_size(path: &Path) -> Result<u64> {
    let meta = fs::symlink_metadata(path).ctx("stat", path)?;
    if !meta.is_dir() {
        return Ok(if meta.is_file() { meta.len() } else { 0 });
    }
    let mut total = 0;
    for entry in fs::read_dir(path).ctx("read directory", path)? {
        let entry = entry.ctx("read directory", path)?;
        total += tree_size(&entry.path())?;
    }
    Ok(total)
}

/// Lists the regular files under `dir` as sorted paths relative to it.
pub fn list_files(dir: &Path) -> Result<Vec<String>> {
    let mut out = Vec::new();
    list_into(dir, "", &mut out)?;
    out.sort();
    Ok(out)
}

fn list_into(base: &Path, rel: &str, out: &mut Vec<String>) -> Result<()> {
    let dir = base.join(rel);
    for entry in fs::read_dir(&dir).ctx("read directory", &dir)? {
        let entry = entry.ctx("read directory", &dir)?;
        let name = entry.file_name().to_string_lossy().into_owned();
        let child = if rel.is_empty() {
            name
        } else {
            format!("{rel}/{name}")
        };
        let ft = entry.file_type().ctx("stat", entry.path())?;
        if ft.is_dir() {
            list_into(base, &child, out)?;
        } else if ft.is_file() {
            out.push(child);
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A miniature usr-merged root.
    fn usrmerged() -> tempfile::TempDir {
        let t = tempfile::tempdir().unwrap();
        let r = t.path();
        fs::create_dir_all(r.join("usr/sbin")).unwrap();
        fs::create_dir_all(r.join("usr/lib")).unwrap();
        fs::create_dir_all(r.join("etc")).unwrap();
        symlink("usr/sbin", r.join("sbin")).unwrap();
        symlink("usr/lib", r.join("lib")).unwrap();
        symlink("/usr/lib", r.join("abslib")).unwrap();
        symlink("../../etc", r.join("usr/lib/up")).unwrap();
        t
    }

    #[test]
    fn resolves_through_usrmerge_links() {
        let t = usrmerged();
        let r = t.path();
        assert_eq!(
            resolve_in_root(r, "/sbin/init").unwrap(),
            r.join("usr/sbin/init")
        );
        assert_eq!(
            resolve_in_root(r, "lib/modules/6.1").unwrap(),
            r.join("usr/lib/modules/6.1")
        );
        assert_eq!(
            resolve_in_root(r, "/abslib/x").unwrap(),
            r.join("usr/lib/x")
        );
        assert_eq!(
            resolve_in_root(r, "/lib/up/hostname").unwrap(),
            r.join("etc/hostname")
        );
        // `..` cannot climb out of the root
        assert_eq!(resolve_in_root(r, "/../../etc").unwrap(), r.join("etc"));
        assert_eq!(entry_in_root(r, "/sbin").unwrap(), r.join("sbin"));
    }

    #[test]
    fn symlink_through_merged_sbin() {
        let t = usrmerged();
        let r = t.path();
        symlink_in_root(r, "/sbin/init", "/usr/lib/oxbow/init").unwrap();
        let link = r.join("usr/sbin/init");
        assert_eq!(
            fs::read_link(&link).unwrap(),
            Path::new("/usr/lib/oxbow/init")
        );
        // /sbin itself is still the usrmerge link
        assert!(fs::symlink_metadata(r.join("sbin"))
            .unwrap()
            .file_type()
            .is_symlink());
    }

    #[test]
    fn overlay_copies_and_skips_keep() {
        let t = usrmerged();
        let r = t.path();
        let o = tempfile::tempdir().unwrap();
        fs::create_dir_all(o.path().join("etc/oxbow")).unwrap();
        fs::write(o.path().join("etc/hostname"), "oxbow\n").unwrap();
        fs::write(o.path().join("etc/oxbow/.keep"), "").unwrap();
        fs::create_dir_all(o.path().join("sbin")).unwrap();
        fs::write(o.path().join("sbin/tool"), "x").unwrap();
        set_mode(&o.path().join("sbin/tool"), 0o770).unwrap();
        set_mode(&o.path().join("etc/hostname"), 0o664).unwrap();
        set_mode(&o.path().join("etc"), 0o775).unwrap();
        set_mode(&r.join("etc"), 0o755).unwrap();
        fs::write(r.join("etc/hostname"), "old\n").unwrap();

        assert_eq!(overlay_tree(o.path(), r).unwrap(), 2);
        assert_eq!(
            fs::read_to_string(r.join("etc/hostname")).unwrap(),
            "oxbow\n"
        );
        let mode = |p: &str| fs::metadata(r.join(p)).unwrap().permissions().mode() & 0o7777;
        assert_eq!(mode("etc/hostname"), 0o644);
        assert_eq!(mode("etc"), 0o755);
        assert_eq!(mode("etc/oxbow"), 0o755);
        assert!(r.join("etc/oxbow").is_dir());
        assert!(!r.join("etc/oxbow/.keep").exists());
        let tool = r.join("usr/sbin/tool");
        assert_eq!(
            fs::metadata(&tool).unwrap().permissions().mode() & 0o777,
            0o755
        );
        assert!(fs::symlink_metadata(r.join("sbin"))
            .unwrap()
            .file_type()
            .is_symlink());
    }

    #[test]
    fn sizes_and_listing() {
        let t = tempfile::tempdir().unwrap();
        fs::create_dir_all(t.path().join("a/b")).unwrap();
        fs::write(t.path().join("a/b/f"), "12345").unwrap();
        fs::write(t.path().join("g"), "12").unwrap();
        symlink("g", t.path().join("h")).unwrap();
        assert_eq!(tree_size(t.path()).unwrap(), 7);
        assert_eq!(list_files(t.path()).unwrap(), ["a/b/f", "g"]);
    }
}
