//! Bad input to the `vmm` binary: each case gets a clear message, a
//! non-zero exit status, and leaves no control socket behind. These run on
//! any host: every case is refused before a guest instruction runs.

use std::path::{Path, PathBuf};
use std::process::Command;

fn vmm(args: &[&str]) -> (i32, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_vmm"))
        .args(args)
        .output()
        .expect("running vmm");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

struct Dir(PathBuf);

impl Dir {
    fn new(name: &str) -> Dir {
        let d = std::env::temp_dir().join(format!("vmm-bad-{name}-{}", std::process::id()));
        std::fs::create_dir_all(&d).unwrap();
        Dir(d)
    }
    fn path(&self, f: &str) -> String {
        self.0.join(f).display().to_string()
    }
}

impl Drop for Dir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn kvm_present() -> bool {
    Path::new("/dev/kvm").exists()
}

#[test]
fn missing_kernel() {
    let d = Dir::new("missing");
    let sock = d.path("s");
    let (code, err) = vmm(&["--kernel", &d.path("nope"), "--api-socket", &sock]);
    assert_eq!(code, 1, "{err}");
    assert!(
        err.contains("kernel") && err.contains("No such file"),
        "{err}"
    );
    assert!(!Path::new(&sock).exists());
}

#[test]
fn missing_initrd() {
    let d = Dir::new("initrd");
    let k = d.path("k");
    std::fs::write(&k, b"x").unwrap();
    let (code, err) = vmm(&["--kernel", &k, "--initrd", &d.path("nope")]);
    assert_eq!(code, 1, "{err}");
    assert!(err.contains("initrd"), "{err}");
}

#[test]
fn too_little_memory_and_bad_cpus() {
    let d = Dir::new("mem");
    let k = d.path("k");
    std::fs::write(&k, b"x").unwrap();
    let (code, err) = vmm(&["--kernel", &k, "--memory", "64"]);
    assert_eq!(code, 1, "{err}");
    assert!(err.contains("at least 128 MiB"), "{err}");
    let (code, err) = vmm(&["--kernel", &k, "--cpus", "0"]);
    assert_eq!(code, 1, "{err}");
    assert!(err.contains("--cpus 0"), "{err}");
}

#[test]
fn usage_errors_exit_2() {
    let (code, err) = vmm(&["--kernel", "/k", "--bogus"]);
    assert_eq!(code, 2, "{err}");
    assert!(
        err.contains("unknown argument --bogus") && err.contains("usage:"),
        "{err}"
    );
    let (code, err) = vmm(&[]);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("--kernel is required"), "{err}");
}

#[test]
fn corrupt_kernel() {
    if !kvm_present() {
        eprintln!("skipped: no /dev/kvm on this host");
        return;
    }
    let d = Dir::new("corrupt");
    let k = d.path("k");
    // An ELF magic with nothing valid behind it, then a truncated bzImage
    // header: neither loader may accept it.
    let mut bytes = vec![0x7f, b'E', b'L', b'F'];
    bytes.resize(4096, 0xa5);
    std::fs::write(&k, &bytes).unwrap();
    let sock = d.path("s");
    let (code, err) = vmm(&["--kernel", &k, "--api-socket", &sock]);
    assert_eq!(code, 1, "{err}");
    assert!(err.contains("not a bzImage"), "{err}");
    assert!(!Path::new(&sock).exists(), "socket left behind");
}

#[test]
fn ctl_without_a_vmm() {
    let d = Dir::new("ctl");
    let out = Command::new(env!("CARGO_BIN_EXE_vmm"))
        .args(["ctl", &d.path("none"), "info"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("No such file"));
}

#[test]
fn missing_or_bad_disk() {
    let d = Dir::new("disk");
    let k = d.path("k");
    std::fs::write(&k, b"x").unwrap();
    let sock = d.path("s");
    let (code, err) = vmm(&[
        "--kernel",
        &k,
        "--disk",
        &d.path("nope.raw"),
        "--api-socket",
        &sock,
    ]);
    assert_eq!(code, 1, "{err}");
    assert!(err.contains("disk") && err.contains("nope.raw"), "{err}");
    assert!(!Path::new(&sock).exists());
    let (code, err) = vmm(&["--kernel", &k, "--disk", &d.0.display().to_string()]);
    assert_eq!(code, 1, "{err}");
    assert!(err.contains("not a regular file"), "{err}");
    let (code, err) = vmm(&["--kernel", &k, "--disk", "/x.raw,cache=none"]);
    assert_eq!(code, 2, "{err}");
}

#[test]
fn missing_tap_is_refused_and_not_created() {
    let d = Dir::new("tap");
    let k = d.path("k");
    std::fs::write(&k, b"x").unwrap();
    let (code, err) = vmm(&["--kernel", &k, "--net", "tap=oxbow-nope0"]);
    assert_eq!(code, 1, "{err}");
    assert!(err.contains("tap oxbow-nope0"), "{err}");
    assert!(
        !Path::new("/sys/class/net/oxbow-nope0").exists(),
        "a tap was created"
    );
    let (code, err) = vmm(&["--kernel", &k, "--net", "tap=t0,mac=01:00:00:00:00:00"]);
    assert_eq!(code, 2, "{err}");
}
