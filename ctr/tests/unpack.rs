//! Template unpacking on the real file system: the id shift, what is kept,
//! and hostile templates refused with nothing left behind. Needs root (to
//! give files to the container's ids); skipped with a message otherwise.

use std::fs;
use std::io::Write;
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::{Path, PathBuf};
use std::process::Command;

use ctr::{create_from_template, UnpackError, UnpackOptions};

fn is_root() -> bool {
    nix::unistd::geteuid().is_root()
}

macro_rules! require_root {
    () => {
        if !is_root() {
            eprintln!("skipped: needs root to give files to the container's ids");
            return;
        }
    };
}

/// One archive member, written with raw header fields so that hostile
/// names reach the archive unchanged.
struct Member<'a> {
    name: &'a [u8],
    kind: tar::EntryType,
    mode: u32,
    uid: u64,
    gid: u64,
    link: &'a [u8],
    data: &'a [u8],
}

fn member(name: &str, kind: tar::EntryType) -> Member<'_> {
    Member {
        name: name.as_bytes(),
        kind,
        mode: if kind == tar::EntryType::Directory {
            0o755
        } else {
            0o644
        },
        uid: 0,
        gid: 0,
        link: b"",
        data: b"",
    }
}

fn tar_bytes(members: &[Member<'_>]) -> Vec<u8> {
    let mut builder = tar::Builder::new(Vec::new());
    for m in members {
        let mut header = tar::Header::new_gnu();
        {
            let old = header.as_old_mut();
            old.name[..m.name.len()].copy_from_slice(m.name);
            old.linkname[..m.link.len()].copy_from_slice(m.link);
        }
        header.set_entry_type(m.kind);
        header.set_mode(m.mode);
        header.set_uid(m.uid);
        header.set_gid(m.gid);
        header.set_mtime(1_700_000_000);
        header.set_size(m.data.len() as u64);
        if matches!(m.kind, tar::EntryType::Char | tar::EntryType::Block) {
            header.set_device_major(1).unwrap();
            header.set_device_minor(3).unwrap();
        }
        header.set_cksum();
        builder.append(&header, m.data).unwrap();
    }
    builder.into_inner().unwrap()
}

fn write_template(dir: &Path, name: &str, tar: &[u8]) -> PathBuf {
    let path = dir.join(name);
    let mut enc = zstd::stream::write::Encoder::new(fs::File::create(&path).unwrap(), 3).unwrap();
    enc.write_all(tar).unwrap();
    enc.finish().unwrap();
    path
}

/// A scratch directory holding the template, the destination's parent and
/// a canary directory beside it that no member may touch.
struct Scratch {
    dir: tempfile::TempDir,
}

impl Scratch {
    fn new() -> Scratch {
        let dir = tempfile::tempdir().unwrap();
        fs::create_dir(dir.path().join("storage")).unwrap();
        fs::create_dir(dir.path().join("canary")).unwrap();
        fs::write(dir.path().join("canary/passwd"), b"host\n").unwrap();
        Scratch { dir }
    }

    fn dest(&self) -> PathBuf {
        self.dir.path().join("storage/101")
    }

    /// Unpacks `members` as a .tar.zst and returns the error, after
    /// checking that nothing was left: no destination, no staging
    /// directory, the canary untouched.
    fn refused(&self, members: &[Member<'_>]) -> UnpackError {
        let template = write_template(self.dir.path(), "t.tar.zst", &tar_bytes(members));
        let err = create_from_template(&template, &self.dest(), &UnpackOptions::default())
            .expect_err("the template must be refused");
        self.assert_nothing_left();
        err
    }

    fn assert_nothing_left(&self) {
        let left: Vec<_> = fs::read_dir(self.dir.path().join("storage"))
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert!(left.is_empty(), "left behind in the storage: {left:?}");
        let canary: Vec<_> = fs::read_dir(self.dir.path().join("canary"))
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(canary, vec!["passwd"], "the canary directory changed");
        assert_eq!(
            fs::read(self.dir.path().join("canary/passwd")).unwrap(),
            b"host\n"
        );
        let meta = fs::metadata(self.dir.path().join("canary/passwd")).unwrap();
        assert_eq!((meta.uid(), meta.mode() & 0o7777), (0, 0o644));
    }
}

#[test]
fn unpack_shifts_owners_and_keeps_modes_links_and_times() {
    require_root!();
    use tar::EntryType::*;
    let s = Scratch::new();
    let mut setuid = member("./usr/bin/su", Regular);
    setuid.mode = 0o4755;
    setuid.data = b"#!/bin/true\n";
    let mut user_file = member("./home/user/notes", Regular);
    user_file.uid = 1000;
    user_file.gid = 1000;
    user_file.mode = 0o600;
    user_file.data = b"hello";
    let mut home = member("./home/user/", Directory);
    home.uid = 1000;
    home.gid = 1000;
    home.mode = 0o700;
    let mut mail = member("./var/mail/", Directory);
    mail.mode = 0o2775;
    mail.gid = 8;
    let mut abs_link = member("./etc/localtime", Symlink);
    abs_link.link = b"/usr/share/zoneinfo/Etc/UTC";
    let mut rel_link = member("./etc/os-release", Symlink);
    rel_link.link = b"../usr/lib/os-release";
    let mut os_release = member("./usr/lib/os-release", Regular);
    os_release.data = b"ID=test\n";
    let mut hard = member("./usr/bin/su2", Link);
    hard.link = b"./usr/bin/su";
    let mut null = member("./dev/null", Char);
    null.mode = 0o666;
    let mut fifo = member("./run/initctl", Fifo);
    fifo.mode = 0o600;
    let members = vec![
        member("./", Directory),
        member("./etc/", Directory),
        member("./usr/", Directory),
        member("./usr/bin/", Directory),
        member("./usr/lib/", Directory),
        os_release,
        setuid,
        hard,
        abs_link,
        rel_link,
        member("./home/", Directory),
        home,
        user_file,
        member("./var/", Directory),
        mail,
        member("./dev/", Directory),
        null,
        member("./run/", Directory),
        fifo,
    ];
    let template = write_template(s.dir.path(), "t.tar.zst", &tar_bytes(&members));
    let report = create_from_template(&template, &s.dest(), &UnpackOptions::default()).unwrap();
    let root = s.dest();
    assert_eq!(report.skipped_devices, 1);
    assert_eq!(report.bytes, 12 + 5 + 8);

    let meta = |p: &str| fs::symlink_metadata(root.join(p)).unwrap();
    assert_eq!((meta("").uid(), meta("").gid()), (100_000, 100_000));
    assert_eq!(meta("").mode() & 0o7777, 0o755);
    let su = meta("usr/bin/su");
    assert_eq!(
        (su.uid(), su.gid(), su.mode() & 0o7777),
        (100_000, 100_000, 0o4755)
    );
    assert_eq!(su.mtime(), 1_700_000_000);
    assert_eq!(su.ino(), meta("usr/bin/su2").ino(), "hard link kept");
    let notes = meta("home/user/notes");
    assert_eq!(
        (notes.uid(), notes.gid(), notes.mode() & 0o777),
        (101_000, 101_000, 0o600)
    );
    assert_eq!(fs::read(root.join("home/user/notes")).unwrap(), b"hello");
    assert_eq!(meta("home/user").uid(), 101_000);
    assert_eq!(meta("home/user").mode() & 0o7777, 0o700);
    assert_eq!(meta("var/mail").mode() & 0o7777, 0o2775);
    assert_eq!(meta("var/mail").gid(), 100_008);
    assert_eq!(
        meta("home").mtime(),
        1_700_000_000,
        "directory times are set last"
    );
    assert_eq!(
        fs::read_link(root.join("etc/localtime")).unwrap(),
        Path::new("/usr/share/zoneinfo/Etc/UTC")
    );
    assert_eq!(
        meta("etc/localtime").uid(),
        100_000,
        "the link itself is shifted"
    );
    assert_eq!(fs::read(root.join("etc/os-release")).unwrap(), b"ID=test\n");
    assert!(meta("run/initctl").file_type().is_fifo());
    assert!(
        !root.join("dev/null").exists(),
        "device nodes under dev/ are skipped"
    );
    assert!(meta("dev").is_dir());
    assert!(!s.dir.path().join("storage/.101.unpacking").exists());

    // The destination exists now: a second unpack is refused and leaves it.
    let err = create_from_template(&template, &s.dest(), &UnpackOptions::default()).unwrap_err();
    assert!(matches!(err, UnpackError::Exists(_)), "{err}");
    assert!(root.join("usr/bin/su").exists());
}

#[test]
fn plain_tar_and_sparse_files_within_the_limit_stay_sparse() {
    require_root!();
    let s = Scratch::new();
    let src = s.dir.path().join("src");
    fs::create_dir(&src).unwrap();
    let f = fs::File::create(src.join("holes")).unwrap();
    f.set_len(256 << 20).unwrap();
    drop(f);
    let template = s.dir.path().join("t.tar");
    let status = Command::new("tar")
        .args(["--sparse", "--numeric-owner", "-cf"])
        .arg(&template)
        .arg("-C")
        .arg(&src)
        .arg(".")
        .status()
        .unwrap();
    assert!(status.success());
    create_from_template(&template, &s.dest(), &UnpackOptions::default()).unwrap();
    let m = fs::metadata(s.dest().join("holes")).unwrap();
    assert_eq!(m.len(), 256 << 20);
    assert!(
        m.blocks() * 512 < 1 << 20,
        "{} blocks allocated",
        m.blocks()
    );
}

#[test]
fn hostile_absolute_and_parent_names_are_refused() {
    require_root!();
    use tar::EntryType::*;
    let s = Scratch::new();
    let mut abs = member("/tmp/oxbow-ctr-absolute", Regular);
    abs.data = b"x";
    let err = s.refused(&[member("./", Directory), abs]);
    assert!(matches!(err, UnpackError::Name { .. }), "{err}");
    assert!(err.to_string().contains("/tmp/oxbow-ctr-absolute"), "{err}");
    assert!(!Path::new("/tmp/oxbow-ctr-absolute").exists());

    let mut dotdot = member("./etc/../../canary/passwd", Regular);
    dotdot.data = b"pwned";
    let err = s.refused(&[member("./", Directory), member("./etc/", Directory), dotdot]);
    assert!(matches!(err, UnpackError::Name { .. }), "{err}");
}

#[test]
fn hostile_symlink_escapes_are_refused() {
    require_root!();
    use tar::EntryType::*;
    let s = Scratch::new();
    // A relative link climbing out of the root.
    let mut up = member("./etc/evil", Symlink);
    up.link = b"../../../canary";
    let err = s.refused(&[member("./", Directory), member("./etc/", Directory), up]);
    assert!(matches!(err, UnpackError::LinkTarget { .. }), "{err}");

    // An absolute link is fine inside a container, but nothing is ever
    // written through it.
    let canary = s.dir.path().join("canary");
    let target = canary.to_str().unwrap().as_bytes().to_vec();
    let mut link = member("./escape", Symlink);
    link.link = &target;
    let mut through = member("./escape/passwd", Regular);
    through.data = b"pwned";
    let err = s.refused(&[member("./", Directory), link, through]);
    assert!(matches!(err, UnpackError::Refused { .. }), "{err}");
    assert!(err.to_string().contains("symbolic link"), "{err}");

    // A directory member through a link, and a hard link out of the root.
    let mut link = member("./escape", Symlink);
    link.link = &target;
    let err = s.refused(&[
        member("./", Directory),
        link,
        member("./escape/sub/", Directory),
    ]);
    assert!(matches!(err, UnpackError::Refused { .. }), "{err}");
    let mut hard = member("./passwd", Link);
    hard.link = b"../canary/passwd";
    let err = s.refused(&[member("./", Directory), hard]);
    assert!(matches!(err, UnpackError::LinkTarget { .. }), "{err}");
    let hostpw = canary.join("passwd");
    let hostpw = hostpw.to_str().unwrap().as_bytes().to_vec();
    let mut hard = member("./passwd", Link);
    hard.link = &hostpw;
    let err = s.refused(&[member("./", Directory), hard]);
    assert!(matches!(err, UnpackError::LinkTarget { .. }), "{err}");
}

#[test]
fn hostile_device_nodes_and_set_id_files_are_refused() {
    require_root!();
    use tar::EntryType::*;
    let s = Scratch::new();
    let mut dev = member("./etc/mem", Char);
    dev.mode = 0o666;
    let err = s.refused(&[member("./", Directory), member("./etc/", Directory), dev]);
    assert!(matches!(err, UnpackError::DeviceNode { .. }), "{err}");
    let mut blk = member("./disk", Block);
    blk.mode = 0o660;
    let err = s.refused(&[member("./", Directory), blk]);
    assert!(matches!(err, UnpackError::DeviceNode { .. }), "{err}");

    // Set-user-id and writable by anyone: anybody in the container could
    // make it do anything as its owner.
    let mut writable = member("./bin/sh", Regular);
    writable.mode = 0o4777;
    writable.data = b"x";
    let err = s.refused(&[
        member("./", Directory),
        member("./bin/", Directory),
        writable,
    ]);
    assert!(err.to_string().contains("set-id"), "{err}");
    // Owned by an id the container does not have (host root seen through
    // a 32-bit wrap, say).
    let mut foreign = member("./bin/sh", Regular);
    foreign.mode = 0o4755;
    foreign.uid = 70_000;
    foreign.data = b"x";
    let err = s.refused(&[
        member("./", Directory),
        member("./bin/", Directory),
        foreign,
    ]);
    assert!(err.to_string().contains("outside the container"), "{err}");
    let mut group = member("./bin/sh", Regular);
    group.mode = 0o2755;
    group.gid = 4_294_967;
    group.data = b"x";
    let err = s.refused(&[member("./", Directory), member("./bin/", Directory), group]);
    assert!(err.to_string().contains("outside the container"), "{err}");
    // Set-id bits on a fifo mean nothing good.
    let mut fifo = member("./f", Fifo);
    fifo.mode = 0o4644;
    let err = s.refused(&[member("./", Directory), fifo]);
    assert!(err.to_string().contains("set-id"), "{err}");
}

#[test]
fn hostile_huge_sparse_file_is_refused_before_writing() {
    require_root!();
    let s = Scratch::new();
    let src = s.dir.path().join("src");
    fs::create_dir(&src).unwrap();
    fs::write(src.join("small"), b"data").unwrap();
    let f = fs::File::create(src.join("huge")).unwrap();
    f.set_len(1 << 40).unwrap();
    f.write_all_at_end();
    drop(f);
    let tar_path = s.dir.path().join("huge.tar");
    let status = Command::new("tar")
        .args(["--sparse", "--numeric-owner", "-cf"])
        .arg(&tar_path)
        .arg("-C")
        .arg(&src)
        .args([".", "./small", "./huge"])
        .status()
        .unwrap();
    assert!(status.success());
    fs::remove_dir_all(&src).unwrap();
    let archive = fs::read(&tar_path).unwrap();
    assert!(archive.len() < 1 << 20, "the archive itself is small");
    let template = write_template(s.dir.path(), "huge.tar.zst", &archive);
    let started = std::time::Instant::now();
    let err = create_from_template(&template, &s.dest(), &UnpackOptions::default()).unwrap_err();
    assert!(matches!(err, UnpackError::TooLarge { .. }), "{err}");
    assert!(err.to_string().contains("huge"), "{err}");
    assert!(
        started.elapsed().as_secs() < 10,
        "refused without writing 1 TiB"
    );
    s.assert_nothing_left();
}

#[test]
fn truncated_and_unknown_formats_are_refused() {
    require_root!();
    use tar::EntryType::*;
    let s = Scratch::new();
    let mut file = member("./big", Regular);
    let data = vec![7u8; 100_000];
    file.data = &data;
    let tar = tar_bytes(&[member("./", Directory), file]);
    let template = write_template(s.dir.path(), "cut.tar.zst", &tar[..50_000]);
    let err = create_from_template(&template, &s.dest(), &UnpackOptions::default()).unwrap_err();
    assert!(
        matches!(err, UnpackError::Io { .. } | UnpackError::Read(_)),
        "{err}"
    );
    s.assert_nothing_left();
    let gz = s.dir.path().join("t.tar.gz");
    fs::write(&gz, b"whatever").unwrap();
    let err = create_from_template(&gz, &s.dest(), &UnpackOptions::default()).unwrap_err();
    assert!(matches!(err, UnpackError::Format(_)), "{err}");
    s.assert_nothing_left();
}

trait WriteAtEnd {
    fn write_all_at_end(&self);
}

impl WriteAtEnd for fs::File {
    /// One byte of data at the end, so the file is not all hole.
    fn write_all_at_end(&self) {
        use std::os::unix::fs::FileExt;
        self.write_at(b"x", (1 << 40) - 1).unwrap();
    }
}
