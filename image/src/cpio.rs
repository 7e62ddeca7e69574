//! A writer (and a small reader) for the "newc" cpio format the Linux
//! kernel unpacks as an initramfs.
//!
//! Each member is a 110-byte ASCII header (`070701` then thirteen 8-digit
//! hex fields), the NUL-terminated name padded to a multiple of four bytes,
//! then the data padded likewise. The archive ends with a member named
//! `TRAILER!!!`. All members written here are owned by root, have one link
//! and share one modification time so the output is reproducible.

use std::collections::BTreeMap;
use std::io::{self, Write};

const MAGIC: &[u8; 6] = b"070701";
const TRAILER: &str = "TRAILER!!!";
const HEADER_LEN: usize = 110;

const S_IFDIR: u32 = 0o040_000;
const S_IFREG: u32 = 0o100_000;
const S_IFLNK: u32 = 0o120_000;
const S_IFCHR: u32 = 0o020_000;
const S_IFMT: u32 = 0o170_000;

/// What a member of the archive is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Kind {
    /// A directory.
    Dir,
    /// A regular file with its contents.
    File(Vec<u8>),
    /// A symbolic link with its target.
    Symlink(String),
    /// A character device node.
    CharDev {
        /// Device major number.
        major: u32,
        /// Device minor number.
        minor: u32,
    },
}

impl Kind {
    fn type_bits(&self) -> u32 {
        match self {
            Kind::Dir => S_IFDIR,
            Kind::File(_) => S_IFREG,
            Kind::Symlink(_) => S_IFLNK,
            Kind::CharDev { .. } => S_IFCHR,
        }
    }
}

/// One member: permission bits and kind. Ownership is always root:root.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Member {
    /// Permission bits (e.g. `0o755`), without the file-type bits.
    pub perm: u32,
    /// What the member is.
    pub kind: Kind,
}

/// An in-memory archive, keyed by path (without a leading `/`).
///
/// Members are written sorted by path, so every directory precedes its
/// contents, which the kernel's unpacker requires. Missing parent
/// directories are added automatically with mode 0755.
#[derive(Debug, Default, Clone)]
pub struct Archive {
    members: BTreeMap<String, Member>,
    mtime: u32,
}

/// A problem with a path given to [`Archive`].
#[derive(Debug, thiserror::Error)]
#[error("invalid archive path {0:?}")]
pub struct BadPath(pub String);

impl Archive {
    /// An empty archive whose members carry modification time `mtime`
    /// (seconds since the epoch).
    pub fn new(mtime: u32) -> Self {
        Archive {
            members: BTreeMap::new(),
            mtime,
        }
    }

    /// Adds a directory.
    pub fn dir(&mut self, path: &str, perm: u32) -> Result<(), BadPath> {
        self.insert(path, perm, Kind::Dir)
    }

    /// Adds a regular file.
    pub fn file(&mut self, path: &str, perm: u32, data: Vec<u8>) -> Result<(), BadPath> {
        self.insert(path, perm, Kind::File(data))
    }

    /// Adds a symbolic link.
    pub fn symlink(&mut self, path: &str, target: &str) -> Result<(), BadPath> {
        self.insert(path, 0o777, Kind::Symlink(target.to_owned()))
    }

    /// Adds a character device node.
    pub fn char_dev(
        &mut self,
        path: &str,
        perm: u32,
        major: u32,
        minor: u32,
    ) -> Result<(), BadPath> {
        self.insert(path, perm, Kind::CharDev { major, minor })
    }

    /// The members, sorted by path.
    pub fn members(&self) -> impl Iterator<Item = (&str, &Member)> {
        self.members.iter().map(|(p, m)| (p.as_str(), m))
    }

    /// Total size of file contents, for reporting.
    pub fn payload_len(&self) -> u64 {
        self.members
            .values()
            .map(|m| match &m.kind {
                Kind::File(d) => d.len() as u64,
                _ => 0,
            })
            .sum()
    }

    fn insert(&mut self, path: &str, perm: u32, kind: Kind) -> Result<(), BadPath> {
        let path = normalize(path).ok_or_else(|| BadPath(path.to_owned()))?;
        // Create missing parents; refuse to put something below a non-directory.
        let mut parent = String::new();
        for comp in path.split('/').take(path.split('/').count() - 1) {
            if !parent.is_empty() {
                parent.push('/');
            }
            parent.push_str(comp);
            match self.members.get(&parent) {
                Some(m) if m.kind != Kind::Dir => return Err(BadPath(path)),
                Some(_) => {}
                None => {
                    self.members.insert(
                        parent.clone(),
                        Member {
                            perm: 0o755,
                            kind: Kind::Dir,
                        },
                    );
                }
            }
        }
        self.members.insert(
            path,
            Member {
                perm: perm & 0o7777,
                kind,
            },
        );
        Ok(())
    }

    /// Writes the archive in newc format.
    pub fn write_to<W: Write>(&self, out: &mut W) -> io::Result<()> {
        for (ino, (path, member)) in (1u32..).zip(&self.members) {
            let data: &[u8] = match &member.kind {
                Kind::File(d) => d,
                Kind::Symlink(t) => t.as_bytes(),
                Kind::Dir | Kind::CharDev { .. } => &[],
            };
            let (rmaj, rmin) = match member.kind {
                Kind::CharDev { major, minor } => (major, minor),
                _ => (0, 0),
            };
            let nlink = if member.kind == Kind::Dir { 2 } else { 1 };
            let header = Header {
                ino,
                mode: member.kind.type_bits() | member.perm,
                nlink,
                mtime: self.mtime,
                filesize: len32(data.len())?,
                rdevmajor: rmaj,
                rdevminor: rmin,
            };
            write_member(out, &header, path, data)?;
        }
        let trailer = Header {
            ino: 0,
            mode: 0,
            nlink: 1,
            mtime: 0,
            filesize: 0,
            rdevmajor: 0,
            rdevminor: 0,
        };
        write_member(out, &trailer, TRAILER, &[])
    }

    /// The archive as bytes. Fails only for members over 4 GiB.
    pub fn to_bytes(&self) -> io::Result<Vec<u8>> {
        let mut buf = Vec::new();
        self.write_to(&mut buf)?;
        Ok(buf)
    }
}

fn len32(n: usize) -> io::Result<u32> {
    u32::try_from(n).map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "member over 4 GiB"))
}

/// Strips leading `/` and `./`, rejects empty, `.` and `..` components.
fn normalize(path: &str) -> Option<String> {
    let comps: Vec<&str> = path.split('/').filter(|c| !c.is_empty()).collect();
    let comps: Vec<&str> = comps.into_iter().skip_while(|c| *c == ".").collect();
    if comps.is_empty() || comps.iter().any(|c| *c == "." || *c == "..") {
        return None;
    }
    Some(comps.join("/"))
}

struct Header {
    ino: u32,
    mode: u32,
    nlink: u32,
    mtime: u32,
    filesize: u32,
    rdevmajor: u32,
    rdevminor: u32,
}

fn write_member<W: Write>(out: &mut W, h: &Header, name: &str, data: &[u8]) -> io::Result<()> {
    let namesize = len32(name.len() + 1)?;
    let fields = [
        h.ino,
        h.mode,
        0, // uid
        0, // gid
        h.nlink,
        h.mtime,
        h.filesize,
        0, // devmajor
        0, // devminor
        h.rdevmajor,
        h.rdevminor,
        namesize,
        0, // check
    ];
    let mut header = Vec::with_capacity(HEADER_LEN + name.len() + 4);
    header.extend_from_slice(MAGIC);
    for f in fields {
        header.extend_from_slice(format!("{f:08X}").as_bytes());
    }
    header.extend_from_slice(name.as_bytes());
    header.push(0);
    header.resize(header.len() + pad4(header.len()), 0);
    out.write_all(&header)?;
    out.write_all(data)?;
    out.write_all(&[0u8; 3][..pad4(data.len())])
}

fn pad4(n: usize) -> usize {
    (4 - n % 4) % 4
}

/// A member read back from an archive by [`read`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReadMember {
    /// Path as stored.
    pub path: String,
    /// Full mode including file-type bits.
    pub mode: u32,
    /// Owner.
    pub uid: u32,
    /// Group.
    pub gid: u32,
    /// Device major (for device nodes).
    pub rdevmajor: u32,
    /// Device minor (for device nodes).
    pub rdevminor: u32,
    /// File contents or symlink target.
    pub data: Vec<u8>,
}

impl ReadMember {
    /// True for directories.
    pub fn is_dir(&self) -> bool {
        self.mode & S_IFMT == S_IFDIR
    }
    /// True for regular files.
    pub fn is_file(&self) -> bool {
        self.mode & S_IFMT == S_IFREG
    }
    /// True for character devices.
    pub fn is_char_dev(&self) -> bool {
        self.mode & S_IFMT == S_IFCHR
    }
    /// True for symbolic links.
    pub fn is_symlink(&self) -> bool {
        self.mode & S_IFMT == S_IFLNK
    }
}

/// Parses a newc archive (up to its trailer). Used to verify the
/// initramfs after writing it.
pub fn read(mut buf: &[u8]) -> Result<Vec<ReadMember>, String> {
    let total = buf.len();
    let mut members = Vec::new();
    loop {
        let at = total - buf.len();
        if buf.len() < HEADER_LEN {
            return Err(format!("truncated header at offset {at}"));
        }
        if &buf[..6] != MAGIC && &buf[..6] != b"070702" {
            return Err(format!("bad magic at offset {at}"));
        }
        let mut fields = [0u32; 13];
        for (i, f) in fields.iter_mut().enumerate() {
            let s = std::str::from_utf8(&buf[6 + i * 8..6 + (i + 1) * 8])
                .map_err(|_| format!("non-ASCII header at offset {at}"))?;
            *f = u32::from_str_radix(s, 16)
                .map_err(|_| format!("bad hex field {s:?} at offset {at}"))?;
        }
        let namesize = fields[11] as usize;
        let filesize = fields[6] as usize;
        let name_end = HEADER_LEN + namesize;
        let data_start = name_end + pad4(name_end);
        let data_end = data_start + filesize;
        if namesize == 0 || buf.len() < data_end {
            return Err(format!("truncated member at offset {at}"));
        }
        let name = String::from_utf8_lossy(&buf[HEADER_LEN..name_end - 1]).into_owned();
        if name == TRAILER {
            return Ok(members);
        }
        members.push(ReadMember {
            path: name,
            mode: fields[1],
            uid: fields[2],
            gid: fields[3],
            rdevmajor: fields[9],
            rdevminor: fields[10],
            data: buf[data_start..data_end].to_vec(),
        });
        let next = (data_end + pad4(data_end)).min(buf.len());
        buf = &buf[next..];
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::process::{Command, Stdio};

    fn sample() -> Archive {
        let mut a = Archive::new(0);
        a.file("/init", 0o755, b"#!/bin/true\n".to_vec()).unwrap();
        a.dir("/dev", 0o755).unwrap();
        a.char_dev("/dev/console", 0o600, 5, 1).unwrap();
        a.file("etc/oxbow/initramfs", 0o644, Vec::new()).unwrap();
        a.symlink("/bin", "usr/bin").unwrap();
        a
    }

    #[test]
    fn parents_are_created_and_sorted_first() {
        let a = sample();
        let paths: Vec<&str> = a.members().map(|(p, _)| p).collect();
        assert_eq!(
            paths,
            [
                "bin",
                "dev",
                "dev/console",
                "etc",
                "etc/oxbow",
                "etc/oxbow/initramfs",
                "init"
            ]
        );
    }

    #[test]
    fn rejects_bad_paths() {
        let mut a = Archive::new(0);
        assert!(a.file("/", 0o644, Vec::new()).is_err());
        assert!(a.file("a/../b", 0o644, Vec::new()).is_err());
        a.file("f", 0o644, Vec::new()).unwrap();
        assert!(a.file("f/g", 0o644, Vec::new()).is_err());
    }

    #[test]
    fn round_trip_with_own_reader() {
        let bytes = sample().to_bytes().unwrap();
        assert_eq!(bytes.len() % 4, 0);
        let members = read(&bytes).unwrap();
        let console = members.iter().find(|m| m.path == "dev/console").unwrap();
        assert!(console.is_char_dev());
        assert_eq!((console.rdevmajor, console.rdevminor), (5, 1));
        assert_eq!(console.mode & 0o7777, 0o600);
        let init = members.iter().find(|m| m.path == "init").unwrap();
        assert!(init.is_file());
        assert_eq!(init.mode & 0o7777, 0o755);
        assert_eq!(init.data, b"#!/bin/true\n");
        let bin = members.iter().find(|m| m.path == "bin").unwrap();
        assert!(bin.is_symlink());
        assert_eq!(bin.data, b"usr/bin");
        assert!(members.iter().all(|m| m.uid == 0 && m.gid == 0));
        assert!(members.iter().find(|m| m.path == "etc").unwrap().is_dir());
    }

    #[test]
    fn readable_by_gnu_cpio() {
        let bytes = sample().to_bytes().unwrap();
        let child = Command::new("cpio")
            .args(["-itv", "--quiet"])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn();
        let Ok(mut child) = child else {
            eprintln!("cpio not installed; skipping");
            return;
        };
        child.stdin.take().unwrap().write_all(&bytes).unwrap();
        let out = child.wait_with_output().unwrap();
        assert!(out.status.success());
        let listing = String::from_utf8(out.stdout).unwrap();
        let console = listing
            .lines()
            .find(|l| l.ends_with(" dev/console"))
            .unwrap_or_else(|| panic!("no dev/console in:\n{listing}"));
        assert!(console.starts_with("crw-------"), "{console}");
        assert!(console.contains("5,"), "{console}");
        let names: Vec<&str> = listing
            .lines()
            .map(|l| l.split(" -> ").next().unwrap_or(l))
            .map(|l| l.rsplit(' ').next().unwrap_or(""))
            .collect();
        for want in ["init", "dev", "etc/oxbow/initramfs", "bin"] {
            assert!(names.contains(&want), "{want} missing from:\n{listing}");
        }
    }
}
