//! Every file in `tests/examples/` must parse, be written back byte for
//! byte, and have every key Oxbow knows pass its validator.

use std::fs;
use std::path::{Path, PathBuf};

use guestconf::{
    digest, is_known_ct_key, is_known_vm_key, validate_ct_key, validate_vm_key, DiskDevice,
    GuestConfig, NetDevice, PropertyString, Section,
};

fn example_files() -> Vec<PathBuf> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/examples");
    let mut files: Vec<PathBuf> = fs::read_dir(&dir)
        .expect("examples directory is readable")
        .map(|entry| entry.expect("directory entry").path())
        .filter(|path| path.extension().is_some_and(|ext| ext == "conf"))
        .collect();
    files.sort();
    files
}

fn read(name: &str) -> String {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/examples")
        .join(name);
    fs::read_to_string(path).expect("example is readable")
}

fn is_container(config: &GuestConfig) -> bool {
    config.get("rootfs").is_some()
}

fn sections(config: &GuestConfig) -> impl Iterator<Item = &Section> {
    std::iter::once(config.main()).chain(config.sections())
}

#[test]
fn every_example_round_trips() {
    let files = example_files();
    assert!(
        files.len() >= 6,
        "expected at least 6 examples, found {}",
        files.len()
    );
    for path in files {
        let text = fs::read_to_string(&path).expect("example is readable");
        let config =
            GuestConfig::parse(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        assert_eq!(config.to_string(), text, "{}", path.display());
        assert_eq!(config.digest(), digest(&text));
        for section in sections(&config) {
            for entry in section.entries() {
                // Every value that is a property string round-trips too.
                if let Ok(parsed) = PropertyString::parse(entry.value()) {
                    assert_eq!(parsed.to_string(), entry.value(), "{}", path.display());
                }
            }
        }
    }
}

#[test]
fn known_keys_in_examples_are_valid() {
    for path in example_files() {
        let text = fs::read_to_string(&path).expect("example is readable");
        let config = GuestConfig::parse(&text).expect("example parses");
        let container = is_container(&config);
        for section in sections(&config) {
            for entry in section.entries() {
                let (key, value) = (entry.key(), entry.value());
                let result = if container && is_known_ct_key(key) {
                    validate_ct_key(key, value)
                } else if !container && is_known_vm_key(key) {
                    validate_vm_key(key, value)
                } else {
                    continue;
                };
                assert_eq!(result, Ok(()), "{}: {key}: {value}", path.display());
            }
        }
    }
}

#[test]
fn linux_vm_example() {
    let config = GuestConfig::parse(&read("100-debian-web.conf")).expect("parses");
    assert_eq!(
        config.description().as_deref(),
        Some("Public web server for the shop front end.\nOwner: web team, ticket OPS-4711\nBackups: nightly at 02:00, 100% of disks")
    );
    let cdrom = DiskDevice::parse("ide2", config.get("ide2").unwrap_or_default()).expect("ide2");
    assert_eq!(cdrom.size, Some(629 << 20));
    let nic = NetDevice::parse(config.get("net0").unwrap_or_default()).expect("net0");
    assert_eq!(nic.tag, Some(20));
}

#[test]
fn snapshot_example() {
    let config = GuestConfig::parse(&read("101-snapshots.conf")).expect("parses");
    assert_eq!(
        config.snapshot_names().collect::<Vec<_>>(),
        ["gcc13", "gcc14"]
    );
    assert_eq!(config.get("parent"), Some("gcc14"));
    let gcc14 = config.snapshot("gcc14").expect("gcc14 exists");
    assert_eq!(gcc14.get("parent"), Some("gcc13"));
    assert_eq!(
        gcc14.get("vmstate"),
        Some("local:101/vm-101-state-gcc14.raw")
    );
    assert_eq!(
        gcc14.description().as_deref(),
        Some("gcc 14 from testing, taken while running.")
    );
}

#[test]
fn pending_example() {
    let config = GuestConfig::parse(&read("102-pending.conf")).expect("parses");
    let pending = config.pending().expect("has [PENDING]");
    assert_eq!(pending.get("delete"), Some("sockets"));
    assert_eq!(pending.get("memory"), Some("4096"));
    assert_eq!(config.get("memory"), Some("2048"));
}

#[test]
fn odd_whitespace_example() {
    let text = read("103-odd-whitespace.conf");
    assert!(!text.ends_with('\n'));
    let mut config = GuestConfig::parse(&text).expect("parses");
    assert_eq!(config.get("memory"), Some("1024"));
    assert_eq!(config.get("name"), Some("odd-spacing"));
    assert_eq!(
        config.get("scsi0"),
        Some("local-lvm:vm-103-disk-0,size=10G")
    );
    assert_eq!(
        config.snapshot("pre-edit").and_then(|s| s.get("snaptime")),
        Some("1700000000")
    );
    // Editing one key leaves every other byte alone.
    config.set("cores", "8").expect("set");
    assert_eq!(config.to_string(), text.replacen("cores:4", "cores: 8", 1));
}
