//! Writing files so that readers see either the old or the new content.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;

/// Replaces `path` with `content` atomically: the bytes go to a temporary
/// file in the same directory, which is synced and then renamed over
/// `path`; the directory is synced last. Missing parent directories are
/// created.
pub fn write_atomic(path: &Path, content: &[u8]) -> io::Result<()> {
    let name = path
        .file_name()
        .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "path has no file name"))?;
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    };
    fs::create_dir_all(dir)?;
    let mut tmp_name = std::ffi::OsString::from(".");
    tmp_name.push(name);
    tmp_name.push(format!(".netd-{}.tmp", std::process::id()));
    let tmp = dir.join(tmp_name);
    let result = (|| {
        let mut f = OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o644)
            .open(&tmp)?;
        f.write_all(content)?;
        f.sync_all()?;
        fs::rename(&tmp, path)
    })();
    if result.is_err() {
        let _ = fs::remove_file(&tmp);
        return result;
    }
    File::open(dir)?.sync_all()
}

/// Like [`write_atomic`], but leaves the file alone when it already holds
/// `content`. Returns whether it wrote.
pub fn write_if_changed(path: &Path, content: &[u8]) -> io::Result<bool> {
    match fs::read(path) {
        Ok(old) if old == content => return Ok(false),
        _ => {}
    }
    write_atomic(path, content)?;
    Ok(true)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn writes_replaces_and_skips_unchanged() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("sub/file");
        write_atomic(&path, b"one\n").unwrap();
        assert_eq!(fs::read(&path).unwrap(), b"one\n");
        assert!(write_if_changed(&path, b"two\n").unwrap());
        assert_eq!(fs::read(&path).unwrap(), b"two\n");
        assert!(!write_if_changed(&path, b"two\n").unwrap());
        // No temporary files are left behind.
        let names: Vec<_> = fs::read_dir(dir.path().join("sub"))
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names, ["file"]);
    }
}
