//! Writing a template: a directory tree packed as `.tar.zst` in the form
//! [`crate::unpack`] reads, owners as numbers, as Proxmox's templates are.

use std::fs::{self, File};
use std::io;
use std::path::{Path, PathBuf};

#[derive(Debug, thiserror::Error)]
pub enum TemplateError {
    #[error("{op} {path}")]
    Io {
        op: &'static str,
        path: PathBuf,
        #[source]
        source: io::Error,
    },
}

fn io_err(op: &'static str, path: &Path) -> impl FnOnce(io::Error) -> TemplateError {
    let path = path.to_path_buf();
    move |source| TemplateError::Io { op, path, source }
}

/// What [`pack_dir`] wrote.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PackReport {
    pub entries: u64,
    /// Size of the compressed template.
    pub bytes: u64,
}

/// Packs the tree at `root` into the template `out` (zstd level `level`),
/// entries sorted by name, owners and times kept, links stored as links.
/// The contents of `dev/` are left out (the runtime makes `/dev`); the
/// directory itself is kept. Written to a temporary file beside `out`,
/// synced and renamed.
pub fn pack_dir(root: &Path, out: &Path, level: i32) -> Result<PackReport, TemplateError> {
    let tmp = out.with_extension("partial");
    let file = File::create(&tmp).map_err(io_err("creating", &tmp))?;
    let result = (|| {
        let enc = zstd::stream::write::Encoder::new(file, level).map_err(io_err("zstd", &tmp))?;
        let mut tar = tar::Builder::new(enc);
        tar.follow_symlinks(false);
        tar.mode(tar::HeaderMode::Complete);
        let mut entries = 0u64;
        let mut stack = vec![PathBuf::new()];
        while let Some(rel) = stack.pop() {
            let path = root.join(&rel);
            let name = if rel.as_os_str().is_empty() {
                PathBuf::from(".")
            } else {
                Path::new(".").join(&rel)
            };
            tar.append_path_with_name(&path, &name)
                .map_err(io_err("adding", &path))?;
            entries += 1;
            let meta = fs::symlink_metadata(&path).map_err(io_err("stat", &path))?;
            if !meta.is_dir() || rel == Path::new("dev") {
                continue;
            }
            let mut children: Vec<PathBuf> = fs::read_dir(&path)
                .map_err(io_err("reading", &path))?
                .map(|e| e.map(|e| rel.join(e.file_name())))
                .collect::<Result<_, _>>()
                .map_err(io_err("reading", &path))?;
            children.sort();
            children.reverse();
            stack.extend(children);
        }
        let enc = tar.into_inner().map_err(io_err("writing", &tmp))?;
        let file = enc.finish().map_err(io_err("finishing", &tmp))?;
        file.sync_all().map_err(io_err("fsync", &tmp))?;
        Ok(entries)
    })();
    let entries = match result {
        Ok(n) => n,
        Err(e) => {
            let _ = fs::remove_file(&tmp);
            return Err(e);
        }
    };
    fs::rename(&tmp, out).map_err(io_err("renaming to", out))?;
    let bytes = fs::metadata(out).map_err(io_err("stat", out))?.len();
    Ok(PackReport { entries, bytes })
}

/// The file name Proxmox gives a template: `<os>-<major>-standard_<version>-<release>_<arch>.tar.zst`,
/// such as `debian-12-standard_12.7-1_amd64.tar.zst`.
pub fn standard_name(os: &str, version: &str, release: u32, arch: &str) -> String {
    let major = version.split('.').next().unwrap_or(version);
    format!("{os}-{major}-standard_{version}-{release}_{arch}.tar.zst")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_like_proxmox() {
        assert_eq!(
            standard_name("debian", "12.7", 1, "amd64"),
            "debian-12-standard_12.7-1_amd64.tar.zst"
        );
    }

    #[test]
    fn packs_what_unpack_reads_without_dev_contents() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("root");
        fs::create_dir_all(root.join("etc")).unwrap();
        fs::create_dir_all(root.join("dev/pts")).unwrap();
        fs::write(root.join("etc/os-release"), "ID=x\n").unwrap();
        std::os::unix::fs::symlink("os-release", root.join("etc/link")).unwrap();
        let out = dir.path().join("t.tar.zst");
        let report = pack_dir(&root, &out, 3).unwrap();
        assert_eq!(report.entries, 5, "., dev, etc, etc/link, etc/os-release");
        let dec = zstd::stream::read::Decoder::new(File::open(&out).unwrap()).unwrap();
        let mut names: Vec<String> = tar::Archive::new(dec)
            .entries()
            .unwrap()
            .map(|e| e.unwrap().path().unwrap().display().to_string())
            .collect();
        names.sort();
        assert_eq!(names, [".", "dev", "etc", "etc/link", "etc/os-release"]);
        assert!(!dir.path().join("t.tar.partial").exists());
    }
}
