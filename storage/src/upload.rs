//! Receiving uploads: a temp file that hashes as it is written, and
//! Proxmox's normalisation of client file names.

use std::fs::File;
use std::io::{self, Write};
use std::path::{Path, PathBuf};

use crate::atomic_file::create_unique_file;
use crate::checksum::{ChecksumAlgorithm, ChecksumHasher};

/// Prefix of temp files in a storage's upload directory.
pub const UPLOAD_TEMP_PREFIX: &str = "upload-";

/// Turns a client-supplied name into a storable one, as Proxmox does for
/// uploads: drop everything up to the last `/` or `\`, then replace every
/// character outside `A-Z a-z 0-9 _ . -` with `_`.
///
/// The result still goes through the volname checks (no leading dot, right
/// extension) when it is imported.
pub fn normalize_upload_filename(name: &str) -> String {
    let name = name.trim_end_matches(['\n', '\r']);
    let base = name.rsplit(['/', '\\']).next().unwrap_or(name);
    base.chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-') {
                c
            } else {
                '_'
            }
        })
        .collect()
}

/// Writes an upload body to a new temp file in a storage's upload
/// directory, hashing it on the way when an algorithm is given.
///
/// Dropping the writer before [`UploadWriter::finish`] removes the file.
#[derive(Debug)]
pub struct UploadWriter {
    path: PathBuf,
    file: Option<File>,
    hasher: Option<ChecksumHasher>,
    size: u64,
}

/// A complete upload waiting to be imported.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FinishedUpload {
    /// The temp file; pass it to `import_upload`, which consumes it.
    pub path: PathBuf,
    /// Bytes written.
    pub size: u64,
    /// The digest, lower-case hex, when an algorithm was given.
    pub checksum_hex: Option<String>,
}

impl UploadWriter {
    /// Creates a new temp file in `dir` (a storage's `upload_temp_dir`).
    pub fn create(dir: &Path, algorithm: Option<ChecksumAlgorithm>) -> io::Result<Self> {
        let (path, file) = create_unique_file(dir, UPLOAD_TEMP_PREFIX)?;
        tracing::debug!(path = %path.display(), "upload temp file created");
        Ok(Self {
            path,
            file: Some(file),
            hasher: algorithm.map(ChecksumHasher::new),
            size: 0,
        })
    }

    /// The temp file's path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Flushes to disk and hands over the file.
    pub fn finish(mut self) -> io::Result<FinishedUpload> {
        let file = self
            .file
            .take()
            .ok_or_else(|| io::Error::other("upload writer already finished"))?;
        if let Err(e) = file.sync_all() {
            let _ = std::fs::remove_file(&self.path);
            return Err(e);
        }
        Ok(FinishedUpload {
            path: self.path.clone(),
            size: self.size,
            checksum_hex: self.hasher.take().map(ChecksumHasher::finish_hex),
        })
    }
}

impl Write for UploadWriter {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let file = self
            .file
            .as_mut()
            .ok_or_else(|| io::Error::other("upload writer already finished"))?;
        let n = file.write(buf)?;
        let written = buf.get(..n).unwrap_or_default();
        if let Some(hasher) = self.hasher.as_mut() {
            hasher.update(written);
        }
        self.size += n as u64;
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        match self.file.as_mut() {
            Some(file) => file.flush(),
            None => Ok(()),
        }
    }
}

impl Drop for UploadWriter {
    fn drop(&mut self) {
        if self.file.is_some() {
            if let Err(e) = std::fs::remove_file(&self.path) {
                tracing::warn!(path = %self.path.display(), error = %e, "cannot remove abandoned upload");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn normalises_like_proxmox() {
        assert_eq!(normalize_upload_filename("debian.iso"), "debian.iso");
        assert_eq!(
            normalize_upload_filename("C:\\Users\\me\\My Disk (1).iso"),
            "My_Disk__1_.iso"
        );
        assert_eq!(normalize_upload_filename("../../etc/passwd"), "passwd");
        assert_eq!(normalize_upload_filename("a+b=c.iso\n"), "a_b_c.iso");
        assert_eq!(normalize_upload_filename("ünï.iso"), "_n_.iso");
    }

    #[test]
    fn writer_hashes_and_abandoned_writers_clean_up() {
        let dir = tempfile::tempdir().unwrap();
        let mut writer = UploadWriter::create(dir.path(), Some(ChecksumAlgorithm::Sha256)).unwrap();
        writer.write_all(b"ab").unwrap();
        writer.write_all(b"c").unwrap();
        let done = writer.finish().unwrap();
        assert_eq!(done.size, 3);
        assert_eq!(
            done.checksum_hex.as_deref(),
            Some("ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad")
        );
        assert_eq!(std::fs::read(&done.path).unwrap(), b"abc");

        let mut abandoned = UploadWriter::create(dir.path(), None).unwrap();
        abandoned.write_all(b"partial").unwrap();
        let path = abandoned.path().to_owned();
        drop(abandoned);
        assert!(!path.exists());
    }
}
