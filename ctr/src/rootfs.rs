//! Files of a stopped container, read and written from the host: what
//! apid needs at create time (the root password, SSH keys).
//!
//! A container's tree is hostile: its `/etc` may be a link to the host's
//! `/etc`. Every path is therefore resolved with `openat2` and
//! `RESOLVE_IN_ROOT | RESOLVE_NO_MAGICLINKS | RESOLVE_NO_XDEV`, so links
//! resolve inside the root as they would in the running container, and a
//! file is replaced by renaming a new one over it, which replaces a link
//! at its name rather than following it. Owners are container ids, shifted
//! by the id map.

use std::io::{self, Read, Write};
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::fs::MetadataExt;
use std::path::Path;

use crate::idmap::IdMap;
use crate::sys;

/// Owner (container ids) and permission bits of a file in a container.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct GuestFile {
    pub uid: u32,
    pub gid: u32,
    pub mode: u32,
}

impl GuestFile {
    /// Owned by the container's root.
    pub const fn root(mode: u32) -> GuestFile {
        GuestFile {
            uid: 0,
            gid: 0,
            mode,
        }
    }
}

fn invalid(path: &str, why: &str) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidInput, format!("{path}: {why}"))
}

fn unmapped(path: &str) -> io::Error {
    invalid(path, "the owner is outside the container's ids")
}

/// Splits a guest path into the parent directory (relative) and the name.
fn split(path: &str) -> io::Result<(&str, &str)> {
    let rel = path.trim_start_matches('/');
    let (parent, name) = rel.rsplit_once('/').unwrap_or(("", rel));
    if name.is_empty() || name == "." || name == ".." || name.contains('\0') {
        return Err(invalid(path, "not a file name"));
    }
    Ok((if parent.is_empty() { "." } else { parent }, name))
}

fn open_parent(root: &Path, parent: &str) -> io::Result<OwnedFd> {
    let root_fd = sys::open_dir(root)?;
    sys::open_dir_in_root(root_fd.as_raw_fd(), Path::new(parent))
}

/// Reads the file `path` (as the guest names it) of the container whose
/// root directory is `root`, up to `max` bytes; with its owner and mode.
pub fn read_in_rootfs(
    root: &Path,
    path: &str,
    max: u64,
    idmap: &IdMap,
) -> io::Result<(Vec<u8>, GuestFile)> {
    split(path)?;
    let root_fd = sys::open_dir(root)?;
    let file = sys::open_file_in_root(root_fd.as_raw_fd(), path.trim_start_matches('/'))?;
    let file = std::fs::File::from(file);
    let meta = file.metadata()?;
    if !meta.is_file() {
        return Err(invalid(path, "not a regular file"));
    }
    if meta.len() > max {
        return Err(invalid(path, &format!("larger than {max} bytes")));
    }
    let mut data = Vec::new();
    file.take(max).read_to_end(&mut data)?;
    let owner = GuestFile {
        uid: idmap
            .to_container(meta.uid())
            .ok_or_else(|| unmapped(path))?,
        gid: idmap
            .to_container(meta.gid())
            .ok_or_else(|| unmapped(path))?,
        mode: meta.mode() & 0o7777,
    };
    Ok((data, owner))
}

/// Writes `contents` to the file `path` (as the guest names it, such as
/// `/etc/shadow`) of the container whose root directory is `root`: a new
/// file, synced, renamed over the old one.
pub fn write_in_rootfs(
    root: &Path,
    path: &str,
    contents: &[u8],
    owner: GuestFile,
    idmap: &IdMap,
) -> io::Result<()> {
    let (parent, name) = split(path)?;
    let uid = idmap
        .to_host(owner.uid.into())
        .ok_or_else(|| unmapped(path))?;
    let gid = idmap
        .to_host(owner.gid.into())
        .ok_or_else(|| unmapped(path))?;
    let dir = open_parent(root, parent)?;
    let tmp = format!(".{name}.oxbow-new");
    let _ = sys::unlink_at(dir.as_raw_fd(), tmp.as_bytes(), false);
    let file = sys::create_file_at(dir.as_raw_fd(), tmp.as_bytes())?;
    let written = (|| {
        let mut f = std::fs::File::from(file);
        f.write_all(contents)?;
        // chown clears set-id bits, so the mode comes after it.
        sys::fchown(f.as_raw_fd(), uid, gid)?;
        sys::fchmod(f.as_raw_fd(), owner.mode)?;
        f.sync_all()
    })();
    if let Err(e) =
        written.and_then(|()| sys::rename_in(dir.as_raw_fd(), tmp.as_bytes(), name.as_bytes()))
    {
        let _ = sys::unlink_at(dir.as_raw_fd(), tmp.as_bytes(), false);
        return Err(e);
    }
    sys::fsync(dir.as_raw_fd())
}

/// Makes the directory `path` of the container if it is missing (its
/// parent must exist).
pub fn mkdir_in_rootfs(root: &Path, path: &str, owner: GuestFile, idmap: &IdMap) -> io::Result<()> {
    let (parent, name) = split(path)?;
    let uid = idmap
        .to_host(owner.uid.into())
        .ok_or_else(|| unmapped(path))?;
    let gid = idmap
        .to_host(owner.gid.into())
        .ok_or_else(|| unmapped(path))?;
    let dir = open_parent(root, parent)?;
    match sys::mkdir_at(dir.as_raw_fd(), name.as_bytes(), 0o700) {
        Ok(()) => {}
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => return Ok(()),
        Err(e) => return Err(e),
    }
    let new = sys::open_dir_at(dir.as_raw_fd(), name.as_bytes())?;
    sys::fchown(new.as_raw_fd(), uid, gid)?;
    sys::fchmod(new.as_raw_fd(), owner.mode)
}

/// The `/etc/shadow` text with root's password hash replaced by `hash`
/// (a crypt(3) string such as `$y$…` or `$6$…`) and its last change set
/// to `days` since the epoch. A missing root line is added.
pub fn shadow_with_root_hash(shadow: &str, hash: &str, days: u64) -> String {
    let mut out = String::new();
    let mut found = false;
    for line in shadow.lines() {
        let mut fields: Vec<&str> = line.split(':').collect();
        if fields.first() == Some(&"root") && !found {
            found = true;
            fields.resize(fields.len().max(9), "");
            let days = days.to_string();
            fields[1] = hash;
            fields[2] = &days;
            out.push_str(&fields.join(":"));
        } else {
            out.push_str(line);
        }
        out.push('\n');
    }
    if !found {
        out = format!("root:{hash}:{days}:0:99999:7:::\n{out}");
    }
    out
}

/// Sets the container's root password to the crypt(3) hash `hash`
/// (Proxmox's `password` at create time, hashed by the caller).
pub fn set_root_password_hash(root: &Path, hash: &str, idmap: &IdMap) -> io::Result<()> {
    if hash.is_empty() || hash.contains([':', '\n', '\0']) {
        return Err(invalid(
            "/etc/shadow",
            "the hash has a ':', a newline or a NUL",
        ));
    }
    let (text, owner) = read_in_rootfs(root, "/etc/shadow", 1 << 20, idmap)?;
    let days = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() / 86_400)
        .unwrap_or(0);
    let new = shadow_with_root_hash(&String::from_utf8_lossy(&text), hash, days);
    write_in_rootfs(root, "/etc/shadow", new.as_bytes(), owner, idmap)
}

/// Adds SSH public keys to root's `authorized_keys` (Proxmox's
/// `ssh-public-keys`), making `/root/.ssh` if needed.
pub fn add_root_ssh_keys(root: &Path, keys: &str, idmap: &IdMap) -> io::Result<()> {
    mkdir_in_rootfs(root, "/root/.ssh", GuestFile::root(0o700), idmap)?;
    let path = "/root/.ssh/authorized_keys";
    let mut text = match read_in_rootfs(root, path, 1 << 20, idmap) {
        Ok((t, _)) => String::from_utf8_lossy(&t).into_owned(),
        Err(e) if e.kind() == io::ErrorKind::NotFound => String::new(),
        Err(e) => return Err(e),
    };
    for key in keys.lines().map(str::trim).filter(|k| !k.is_empty()) {
        if !text.lines().any(|l| l.trim() == key) {
            if !text.is_empty() && !text.ends_with('\n') {
                text.push('\n');
            }
            text.push_str(key);
            text.push('\n');
        }
    }
    write_in_rootfs(root, path, text.as_bytes(), GuestFile::root(0o600), idmap)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn root_hash_replaces_the_root_line_only() {
        let shadow = "root:*:19000:0:99999:7:::\ndaemon:*:19000:0:99999:7:::\n";
        assert_eq!(
            shadow_with_root_hash(shadow, "$y$j9T$abc", 20000),
            "root:$y$j9T$abc:20000:0:99999:7:::\ndaemon:*:19000:0:99999:7:::\n"
        );
        assert_eq!(
            shadow_with_root_hash("daemon:*:1::::::\n", "$6$x", 5),
            "root:$6$x:5:0:99999:7:::\ndaemon:*:1::::::\n"
        );
        assert_eq!(
            shadow_with_root_hash("root:x\n", "h", 1),
            "root:h:1::::::\n"
        );
    }

    #[test]
    fn host_writes_stay_inside_a_hostile_root() {
        if !nix::unistd::geteuid().is_root() {
            eprintln!("skipped: needs root to give files to the container's ids");
            return;
        }
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("root");
        let host = dir.path().join("host");
        std::fs::create_dir_all(root.join("inside")).unwrap();
        std::fs::create_dir_all(&host).unwrap();
        std::fs::write(host.join("shadow"), "root:host:1::::::\n").unwrap();
        let idmap = IdMap::DEFAULT;
        // /etc is a link to the host's directory (absolute) and /var climbs
        // out with `..`: both resolve inside the root.
        std::os::unix::fs::symlink(&host, root.join("etc")).unwrap();
        std::os::unix::fs::symlink("../../../../..", root.join("var")).unwrap();
        let err = set_root_password_hash(&root, "$6$x", &idmap).unwrap_err();
        assert_eq!(err.raw_os_error(), Some(libc::ENOENT), "{err}");
        let err = write_in_rootfs(&root, "/etc/shadow", b"x", GuestFile::root(0o640), &idmap)
            .unwrap_err();
        assert_eq!(err.raw_os_error(), Some(libc::ENOENT), "{err}");
        // The link's target as the container sees it, made inside.
        let inside = root.join(host.strip_prefix("/").unwrap());
        std::fs::create_dir_all(&inside).unwrap();
        std::fs::write(inside.join("shadow"), "root:*:1:0:99999:7:::\n").unwrap();
        std::os::unix::fs::chown(inside.join("shadow"), Some(100_000), Some(100_042)).unwrap();
        set_root_password_hash(&root, "$6$salt$hash", &idmap).unwrap();
        assert_eq!(
            std::fs::read_to_string(host.join("shadow")).unwrap(),
            "root:host:1::::::\n"
        );
        let text = std::fs::read_to_string(inside.join("shadow")).unwrap();
        assert!(text.starts_with("root:$6$salt$hash:"), "{text}");
        let meta = std::fs::metadata(inside.join("shadow")).unwrap();
        assert_eq!((meta.uid(), meta.gid()), (100_000, 100_042), "owner kept");
        write_in_rootfs(
            &root,
            "/var/inside/file",
            b"v\n",
            GuestFile::root(0o644),
            &idmap,
        )
        .unwrap();
        assert_eq!(
            std::fs::read_to_string(root.join("inside/file")).unwrap(),
            "v\n"
        );
        // A link at the file itself is replaced, not followed.
        std::os::unix::fs::symlink(host.join("shadow"), root.join("inside/passwd")).unwrap();
        write_in_rootfs(
            &root,
            "/inside/passwd",
            b"p\n",
            GuestFile::root(0o644),
            &idmap,
        )
        .unwrap();
        assert_eq!(
            std::fs::read_to_string(host.join("shadow")).unwrap(),
            "root:host:1::::::\n"
        );
        assert!(!std::fs::symlink_metadata(root.join("inside/passwd"))
            .unwrap()
            .is_symlink());
        assert!(write_in_rootfs(&root, "/inside/..", b"", GuestFile::root(0o644), &idmap).is_err());
        // SSH keys: /root/.ssh made inside, keys added once.
        std::fs::create_dir_all(root.join("root")).unwrap();
        add_root_ssh_keys(&root, "ssh-ed25519 AAAA one\n", &idmap).unwrap();
        add_root_ssh_keys(&root, "ssh-ed25519 AAAA one\nssh-ed25519 BBBB two", &idmap).unwrap();
        assert_eq!(
            std::fs::read_to_string(root.join("root/.ssh/authorized_keys")).unwrap(),
            "ssh-ed25519 AAAA one\nssh-ed25519 BBBB two\n"
        );
        let ssh = std::fs::metadata(root.join("root/.ssh")).unwrap();
        assert_eq!((ssh.uid(), ssh.mode() & 0o777), (100_000, 0o700));
    }
}
