//! Unpacking a template (`.tar.zst` or `.tar`) into a container's root
//! directory, shifting every owner into the container's id range.
//!
//! The archive is untrusted. Every member is checked before anything is
//! created for it, and everything is created below a staging directory
//! beside the destination, which is renamed into place only when the whole
//! archive was accepted. On any refusal or error the staging directory is
//! removed, so a refused template leaves nothing behind.
//!
//! Rules (see docs/ctr.md):
//! - names and hard-link targets pass [`EntryPath::parse`]: no absolute
//!   names, no `..`; symbolic-link targets pass
//!   [`EntryPath::check_symlink_target`];
//! - every path is walked component by component with `O_NOFOLLOW`, so a
//!   member can never be written through a symbolic link (an archive that
//!   tries, `a -> /etc` then `a/passwd`, is refused);
//! - character and block devices are skipped under `dev/` (as Proxmox
//!   unpacks with `--exclude=./dev/*`; the runtime provides `/dev`) and
//!   refused anywhere else;
//! - owners must lie in the container's id range (0..65536 by default) and
//!   are shifted to the host range (100000.. by default);
//! - set-user-id and set-group-id bits are allowed only on regular files
//!   and directories, and never on a file that group or others may write;
//! - the total size of the files (sparse holes counted) is bounded, so an
//!   archive holding a huge sparse file is refused before its data is
//!   written.

use std::collections::HashMap;
use std::fs::File;
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::path::{Path, PathBuf};

use tar::EntryType;

use crate::idmap::IdMap;
use crate::path::{parse_hardlink_target, EntryPath, PathError};
use crate::sys;

/// What [`unpack_template`] may accept.
#[derive(Debug, Clone)]
pub struct UnpackOptions {
    /// The id mapping: owners in the archive are container ids.
    pub idmap: IdMap,
    /// The most bytes the regular files may add up to (their apparent
    /// sizes, holes included): the root volume's size.
    pub max_bytes: u64,
    /// The most members the archive may have.
    pub max_entries: u64,
}

impl Default for UnpackOptions {
    fn default() -> UnpackOptions {
        UnpackOptions {
            idmap: IdMap::DEFAULT,
            // Proxmox's default root disk for a container.
            max_bytes: 8 << 30,
            max_entries: 2_000_000,
        }
    }
}

/// What an unpack did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UnpackReport {
    /// The root directory now holding the files.
    pub root: PathBuf,
    /// Members created (the root's own entry included).
    pub entries: u64,
    /// Apparent bytes of the regular files.
    pub bytes: u64,
    /// Device nodes under `dev/` that were skipped.
    pub skipped_devices: u64,
}

/// Why a template was not unpacked. Nothing is left behind in any case.
#[derive(Debug, thiserror::Error)]
pub enum UnpackError {
    #[error("{0} exists already")]
    Exists(PathBuf),
    #[error("template {0}: unsupported format (expected .tar.zst or .tar)")]
    Format(PathBuf),
    #[error("opening template {path}")]
    Open {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("reading the template")]
    Read(#[source] io::Error),
    #[error("template member {name:?} refused")]
    Name {
        name: String,
        #[source]
        source: PathError,
    },
    #[error("template member {path}: link target {target:?} refused")]
    LinkTarget {
        path: String,
        target: String,
        #[source]
        source: PathError,
    },
    #[error(
        "template member {path}: device nodes are only accepted under dev/, where they are skipped"
    )]
    DeviceNode { path: String },
    #[error("template member {path}: {reason}")]
    Refused { path: String, reason: String },
    #[error("template member {path}: {size} bytes would exceed the limit of {limit} bytes for the whole root")]
    TooLarge { path: String, size: u64, limit: u64 },
    #[error("the template has more than {0} members")]
    TooManyEntries(u64),
    #[error("{op} {path}")]
    Io {
        op: &'static str,
        path: String,
        #[source]
        source: io::Error,
    },
}

fn io_err(op: &'static str, path: impl std::fmt::Display) -> impl FnOnce(io::Error) -> UnpackError {
    let path = path.to_string();
    move |source| UnpackError::Io { op, path, source }
}

/// Unpacks `template` into the new directory `dest` (which must not
/// exist), owned by the container's root.
///
/// `.tar.zst` is streamed through zstd; `.tar` is read as is.
pub fn unpack_template(
    template: &Path,
    dest: &Path,
    opts: &UnpackOptions,
) -> Result<UnpackReport, UnpackError> {
    let name = template.to_string_lossy();
    let compressed = if name.ends_with(".tar.zst") {
        true
    } else if name.ends_with(".tar") {
        false
    } else {
        return Err(UnpackError::Format(template.to_path_buf()));
    };
    let file = File::open(template).map_err(|source| UnpackError::Open {
        path: template.to_path_buf(),
        source,
    })?;
    let reader: Box<dyn Read> = if compressed {
        Box::new(
            zstd::stream::read::Decoder::new(file).map_err(|source| UnpackError::Open {
                path: template.to_path_buf(),
                source,
            })?,
        )
    } else {
        Box::new(io::BufReader::with_capacity(1 << 16, file))
    };
    unpack_tar(reader, dest, opts)
}

/// Unpacks a tar stream into the new directory `dest`; see
/// [`unpack_template`].
pub fn unpack_tar(
    reader: impl Read,
    dest: &Path,
    opts: &UnpackOptions,
) -> Result<UnpackReport, UnpackError> {
    if dest.symlink_metadata().is_ok() {
        return Err(UnpackError::Exists(dest.to_path_buf()));
    }
    let staging = staging_path(dest);
    remove_tree(&staging).map_err(io_err("removing the stale", staging.display()))?;
    let root_owner = opts.idmap.to_host(0).ok_or_else(|| UnpackError::Refused {
        path: ".".into(),
        reason: "the id map has no root".into(),
    })?;
    std::fs::create_dir(&staging).map_err(io_err("creating", staging.display()))?;
    let result = (|| {
        let root = sys::open_dir(&staging).map_err(io_err("opening", staging.display()))?;
        sys::fchown(root.as_raw_fd(), root_owner, root_owner)
            .map_err(io_err("chown", staging.display()))?;
        sys::fchmod(root.as_raw_fd(), 0o755).map_err(io_err("chmod", staging.display()))?;
        let mut unpacker = Unpacker {
            root,
            opts,
            bytes: 0,
            entries: 0,
            skipped_devices: 0,
            dir_mtimes: Vec::new(),
            cache: HashMap::new(),
        };
        unpacker.run(reader)?;
        unpacker.finish()?;
        // Everything reaches the disk before the rename makes it visible.
        sys::syncfs(unpacker.root.as_raw_fd()).map_err(io_err("syncfs", staging.display()))?;
        Ok((unpacker.entries, unpacker.bytes, unpacker.skipped_devices))
    })();
    match result {
        Ok((entries, bytes, skipped_devices)) => {
            if let Err(e) = sys::rename_noreplace(&staging, dest) {
                let _ = remove_tree(&staging);
                return Err(io_err("renaming into", dest.display())(e));
            }
            if let Some(parent) = dest.parent() {
                let _ = sys::fsync_dir(parent);
            }
            Ok(UnpackReport {
                root: dest.to_path_buf(),
                entries,
                bytes,
                skipped_devices,
            })
        }
        Err(e) => {
            if let Err(cleanup) = remove_tree(&staging) {
                tracing::error!(
                    "removing {} after a failed unpack: {cleanup}",
                    staging.display()
                );
            }
            Err(e)
        }
    }
}

/// The staging directory of `dest`: a hidden sibling.
pub fn staging_path(dest: &Path) -> PathBuf {
    let name = dest
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    dest.with_file_name(format!(".{name}.unpacking"))
}

/// Removes a directory tree without following symbolic links; a missing
/// tree is not an error.
pub fn remove_tree(path: &Path) -> io::Result<()> {
    match std::fs::symlink_metadata(path) {
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(e),
        Ok(m) if m.is_dir() => std::fs::remove_dir_all(path),
        Ok(_) => std::fs::remove_file(path),
    }
}

struct Unpacker<'a> {
    root: OwnedFd,
    opts: &'a UnpackOptions,
    bytes: u64,
    entries: u64,
    skipped_devices: u64,
    /// Directories whose modification time is set at the end (their
    /// children change it while unpacking).
    dir_mtimes: Vec<(EntryPath, u64)>,
    /// Open directories by path, so that the walk is not repeated for
    /// every member.
    cache: HashMap<Vec<Vec<u8>>, OwnedFd>,
}

/// The header fields of a member, checked.
struct Member {
    path: EntryPath,
    kind: EntryType,
    mode: u32,
    uid: u32,
    gid: u32,
    mtime: u64,
    size: u64,
}

impl Unpacker<'_> {
    fn run(&mut self, reader: impl Read) -> Result<(), UnpackError> {
        let mut archive = tar::Archive::new(reader);
        let entries = archive.entries().map_err(UnpackError::Read)?;
        for entry in entries {
            let mut entry = entry.map_err(UnpackError::Read)?;
            self.entries += 1;
            if self.entries > self.opts.max_entries {
                return Err(UnpackError::TooManyEntries(self.opts.max_entries));
            }
            let kind = entry.header().entry_type();
            if matches!(
                kind,
                EntryType::XGlobalHeader | EntryType::XHeader | EntryType::GNULongName
            ) {
                continue;
            }
            let member = self.check(&entry)?;
            let link = entry.link_name_bytes().map(|l| l.into_owned());
            self.create(member, link, &mut entry)?;
        }
        Ok(())
    }

    fn check<R: Read>(&self, entry: &tar::Entry<'_, R>) -> Result<Member, UnpackError> {
        let name = entry.path_bytes();
        let path = EntryPath::parse(&name).map_err(|source| UnpackError::Name {
            name: String::from_utf8_lossy(&name).into_owned(),
            source,
        })?;
        let header = entry.header();
        let refused = |reason: String| UnpackError::Refused {
            path: path.to_string(),
            reason,
        };
        let mode = header.mode().map_err(UnpackError::Read)? & 0o7777;
        let uid = header.uid().map_err(UnpackError::Read)?;
        let gid = header.gid().map_err(UnpackError::Read)?;
        let mtime = header.mtime().unwrap_or(0);
        let host_uid = self.opts.idmap.to_host(uid).ok_or_else(|| {
            refused(format!(
                "owner {uid} is outside the container's {} ids",
                self.opts.idmap.count
            ))
        })?;
        let host_gid = self.opts.idmap.to_host(gid).ok_or_else(|| {
            refused(format!(
                "group {gid} is outside the container's {} ids",
                self.opts.idmap.count
            ))
        })?;
        let kind = header.entry_type();
        let set_id = mode & 0o6000 != 0;
        if set_id {
            match kind {
                EntryType::Regular | EntryType::Continuous | EntryType::GNUSparse => {
                    if mode & 0o022 != 0 {
                        return Err(refused(format!(
                            "set-id file writable by group or others (mode {mode:o})"
                        )));
                    }
                }
                EntryType::Directory => {}
                _ => {
                    return Err(refused(format!(
                        "set-id bits on a {kind:?} (mode {mode:o})"
                    )))
                }
            }
        }
        let size = entry.size();
        Ok(Member {
            path,
            kind,
            mode,
            uid: host_uid,
            gid: host_gid,
            mtime,
            size,
        })
    }

    /// Opens the directory at `components` below the root, creating
    /// missing directories, never following a symbolic link.
    fn dir(&mut self, components: &[Vec<u8>]) -> Result<RawFd, UnpackError> {
        if components.is_empty() {
            return Ok(self.root.as_raw_fd());
        }
        if let Some(fd) = self.cache.get(components) {
            return Ok(fd.as_raw_fd());
        }
        let parent = self.dir(&components[..components.len() - 1])?;
        let name = &components[components.len() - 1];
        let shown = || String::from_utf8_lossy(&components.join(&b'/')).into_owned();
        let fd = match sys::open_dir_at(parent, name) {
            Ok(fd) => fd,
            Err(e) if e.raw_os_error() == Some(libc::ENOENT) => {
                let owner = self.opts.idmap.host_base;
                sys::mkdir_at(parent, name, 0o755).map_err(io_err("mkdir", shown()))?;
                let fd = sys::open_dir_at(parent, name).map_err(io_err("opening", shown()))?;
                sys::fchown(fd.as_raw_fd(), owner, owner).map_err(io_err("chown", shown()))?;
                fd
            }
            Err(e) if matches!(e.raw_os_error(), Some(libc::ELOOP | libc::ENOTDIR)) => {
                return Err(UnpackError::Refused {
                    path: shown(),
                    reason: "a path goes through it, but it is a symbolic link or a file".into(),
                })
            }
            Err(e) => return Err(io_err("opening", shown())(e)),
        };
        // Keep the cache small: an archive lists a directory's members
        // together, so only recent directories matter.
        if self.cache.len() > 256 {
            self.cache.clear();
        }
        let raw = fd.as_raw_fd();
        self.cache.insert(components.to_vec(), fd);
        Ok(raw)
    }

    /// Removes whatever is at `name` in `dir` unless it is a directory and
    /// `keep_dir` is set. Returns true if a directory was kept.
    fn clear_slot(
        &mut self,
        dir: RawFd,
        name: &[u8],
        keep_dir: bool,
        path: &EntryPath,
    ) -> Result<bool, UnpackError> {
        match sys::lstat_at(dir, name) {
            Ok(None) => Ok(false),
            Ok(Some(st)) if st.is_dir => {
                if keep_dir {
                    return Ok(true);
                }
                // An earlier member made a directory here; only an empty
                // one can be replaced.
                self.cache.retain(|k, _| !k.starts_with(path.components()));
                sys::unlink_at(dir, name, true).map_err(io_err("replacing directory", path))?;
                Ok(false)
            }
            Ok(Some(_)) => {
                sys::unlink_at(dir, name, false).map_err(io_err("replacing", path))?;
                Ok(false)
            }
            Err(e) => Err(io_err("stat", path)(e)),
        }
    }

    fn create<R: Read>(
        &mut self,
        m: Member,
        link: Option<Vec<u8>>,
        data: &mut tar::Entry<'_, R>,
    ) -> Result<(), UnpackError> {
        let shown = m.path.to_string();
        if m.path.is_root() {
            if m.kind != EntryType::Directory {
                return Err(UnpackError::Refused {
                    path: shown,
                    reason: "the root must be a directory".into(),
                });
            }
            let root = self.root.as_raw_fd();
            sys::fchown(root, m.uid, m.gid).map_err(io_err("chown", &shown))?;
            sys::fchmod(root, m.mode).map_err(io_err("chmod", &shown))?;
            self.dir_mtimes.push((m.path, m.mtime));
            return Ok(());
        }
        let Some((parents, name)) = m.path.split_last() else {
            unreachable!("the root was handled above");
        };
        let parents = parents.to_vec();
        let name = name.to_vec();
        match m.kind {
            EntryType::Regular | EntryType::Continuous | EntryType::GNUSparse => {
                let left = self.opts.max_bytes - self.bytes;
                if m.size > left {
                    return Err(UnpackError::TooLarge {
                        path: shown,
                        size: m.size,
                        limit: self.opts.max_bytes,
                    });
                }
                self.bytes += m.size;
                let dir = self.dir(&parents)?;
                self.clear_slot(dir, &name, false, &m.path)?;
                let file = sys::create_file_at(dir, &name).map_err(io_err("creating", &shown))?;
                let mut file = File::from(file);
                copy_sparse(data, &mut file, m.size).map_err(io_err("writing", &shown))?;
                let fd = file.as_raw_fd();
                // chown clears set-id bits, so the mode comes after it.
                sys::fchown(fd, m.uid, m.gid).map_err(io_err("chown", &shown))?;
                sys::fchmod(fd, m.mode).map_err(io_err("chmod", &shown))?;
                sys::set_mtime_fd(fd, m.mtime).map_err(io_err("utimens", &shown))?;
            }
            EntryType::Directory => {
                let dir = self.dir(&parents)?;
                if !self.clear_slot(dir, &name, true, &m.path)? {
                    sys::mkdir_at(dir, &name, 0o700).map_err(io_err("mkdir", &shown))?;
                }
                let fd = self.dir(m.path.components())?;
                sys::fchown(fd, m.uid, m.gid).map_err(io_err("chown", &shown))?;
                sys::fchmod(fd, m.mode).map_err(io_err("chmod", &shown))?;
                self.dir_mtimes.push((m.path, m.mtime));
            }
            EntryType::Symlink => {
                let target = link.unwrap_or_default();
                m.path
                    .check_symlink_target(&target)
                    .map_err(|source| UnpackError::LinkTarget {
                        path: shown.clone(),
                        target: String::from_utf8_lossy(&target).into_owned(),
                        source,
                    })?;
                let dir = self.dir(&parents)?;
                self.clear_slot(dir, &name, false, &m.path)?;
                sys::symlink_at(&target, dir, &name).map_err(io_err("symlink", &shown))?;
                sys::lchown_at(dir, &name, m.uid, m.gid).map_err(io_err("chown", &shown))?;
                sys::set_mtime_at(dir, &name, m.mtime).map_err(io_err("utimens", &shown))?;
            }
            EntryType::Link => {
                let raw = link.unwrap_or_default();
                let target =
                    parse_hardlink_target(&raw).map_err(|source| UnpackError::LinkTarget {
                        path: shown.clone(),
                        target: String::from_utf8_lossy(&raw).into_owned(),
                        source,
                    })?;
                let Some((tparents, tname)) = target.split_last() else {
                    unreachable!("hard-link targets are never the root");
                };
                let (tparents, tname) = (tparents.to_vec(), tname.to_vec());
                let tdir = self.dir(&tparents)?;
                let tdir = sys::dup(tdir).map_err(io_err("dup", &shown))?;
                match sys::lstat_at(tdir.as_raw_fd(), &tname) {
                    Ok(Some(st)) if !st.is_dir => {}
                    Ok(_) => {
                        return Err(UnpackError::Refused {
                            path: shown,
                            reason: format!(
                            "hard link to {target}, which is not an earlier file of the template"
                        ),
                        })
                    }
                    Err(e) => return Err(io_err("stat", &target)(e)),
                }
                let dir = self.dir(&parents)?;
                self.clear_slot(dir, &name, false, &m.path)?;
                sys::link_at(tdir.as_raw_fd(), &tname, dir, &name)
                    .map_err(io_err("link", &shown))?;
            }
            EntryType::Char | EntryType::Block => {
                if m.path.starts_with(b"dev") {
                    self.skipped_devices += 1;
                    return Ok(());
                }
                return Err(UnpackError::DeviceNode { path: shown });
            }
            EntryType::Fifo => {
                let dir = self.dir(&parents)?;
                self.clear_slot(dir, &name, false, &m.path)?;
                sys::mkfifo_at(dir, &name, m.mode).map_err(io_err("mkfifo", &shown))?;
                sys::lchown_at(dir, &name, m.uid, m.gid).map_err(io_err("chown", &shown))?;
            }
            other => {
                return Err(UnpackError::Refused {
                    path: shown,
                    reason: format!("unsupported member type {other:?}"),
                })
            }
        }
        Ok(())
    }

    /// Sets the directories' modification times, deepest first.
    fn finish(&mut self) -> Result<(), UnpackError> {
        let mut dirs = std::mem::take(&mut self.dir_mtimes);
        dirs.sort_by_key(|d| std::cmp::Reverse(d.0.components().len()));
        for (path, mtime) in dirs {
            let fd = self.dir(path.components())?;
            sys::set_mtime_fd(fd, mtime).map_err(io_err("utimens", &path))?;
        }
        self.cache.clear();
        Ok(())
    }
}

/// Copies exactly `size` bytes from `src` to `dst`, seeking over blocks of
/// zeros so that sparse files stay sparse.
fn copy_sparse(src: &mut impl Read, dst: &mut File, size: u64) -> io::Result<()> {
    let mut buf = vec![0u8; 1 << 16];
    let mut done = 0u64;
    let mut pending_hole = false;
    while done < size {
        let want = usize::try_from((size - done).min(buf.len() as u64)).unwrap_or(buf.len());
        let n = src.read(&mut buf[..want])?;
        if n == 0 {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "the archive ends inside this file",
            ));
        }
        if buf[..n].iter().all(|b| *b == 0) {
            dst.seek(SeekFrom::Current(n as i64))?;
            pending_hole = true;
        } else {
            dst.write_all(&buf[..n])?;
            pending_hole = false;
        }
        done += n as u64;
    }
    if pending_hole {
        dst.set_len(size)?;
    }
    Ok(())
}
