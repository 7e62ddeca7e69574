//! The guest test assets (`make guest`) booted under the host's QEMU,
//! without Oxbow's VMM: they prove the kernel, the extracted PVH `vmlinux`,
//! the initramfs and `guest-init`, so that when a nested VMM test fails
//! (`tests/vmm_nested.rs`), the VMM is to blame. The same goes for the
//! Debian guest image (`make guest-debian`), booted to its `login:` prompt.

use std::fs;
use std::os::unix::fs::FileExt;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use qemu_tests::guest::{self, debian, GuestAssets, GuestRun, GUEST_LABEL, MODULE_LIST};

const TIMEOUT: Duration = Duration::from_secs(300);

fn assets() -> GuestAssets {
    GuestAssets::locate().unwrap()
}

/// Asserts the guest printed `line` (without the prefix) as a whole line.
fn has(run: &GuestRun, line: &str) {
    assert!(
        run.lines().contains(&line),
        "the guest did not print `OXBOW-GUEST {line}`; console:\n{}",
        run.console
    );
}

/// The guest line starting with `prefix`.
fn line_starting<'a>(run: &'a GuestRun, prefix: &str) -> &'a str {
    run.lines()
        .into_iter()
        .find(|l| l.starts_with(prefix))
        .unwrap_or_else(|| {
            panic!(
                "the guest printed no `OXBOW-GUEST {prefix}...`; console:\n{}",
                run.console
            )
        })
}

/// Checks the report from start to done and a clean QEMU exit.
fn ran_to_done(run: &GuestRun) {
    let lines = run.lines();
    assert_eq!(lines.first(), Some(&"start"), "console:\n{}", run.console);
    assert_eq!(lines.last(), Some(&"done"), "console:\n{}", run.console);
    has(run, "cpus=2");
    let modules = line_starting(run, "modules=");
    let (loaded, listed) = modules["modules=".len()..].split_once('/').unwrap();
    assert_eq!(loaded, listed, "not every module loaded: {}", run.console);
    assert!(
        run.status.success(),
        "QEMU exited with {}; console:\n{}",
        run.status,
        run.console
    );
    eprintln!("guest ran to done in {:.1} s", run.elapsed.as_secs_f64());
}

#[test]
fn assets_are_consistent() {
    let a = assets();
    // vmlinux is exactly the ELF inside vmlinuz, and has the PVH entry.
    let bz = fs::read(&a.vmlinuz).unwrap();
    let elf = fs::read(&a.vmlinux).unwrap();
    assert_eq!(guest::bzimage_payload(&bz).unwrap().0, "xz");
    assert!(guest::extract_vmlinux(&bz).unwrap() == elf);
    let entry = guest::pvh_entry(&elf).unwrap();
    assert!(entry >= 0x10_0000, "PVH entry {entry:#x} below 1 MiB");

    // The initramfs: a static /init and the listed virtio modules.
    let initrd = fs::read(&a.initrd).unwrap();
    let members = image::cpio::read(&initrd).unwrap();
    let get = |p: &str| {
        members
            .iter()
            .find(|m| m.path == p)
            .unwrap_or_else(|| panic!("the initramfs has no {p}"))
    };
    image::check_static_elf(&get("init").data).unwrap();
    assert!(get("dev/console").is_char_dev());
    let list = String::from_utf8(get(MODULE_LIST).data.clone()).unwrap();
    let release = members
        .iter()
        .find_map(|m| m.path.strip_prefix("lib/modules/")?.split('/').next())
        .unwrap();
    let names: Vec<String> = list.lines().map(image::modules::module_name).collect();
    for want in guest::GUEST_MODULES {
        assert!(names.iter().any(|n| n == want), "{want} not in {names:?}");
    }
    let pos = |n: &str| names.iter().position(|x| x == n).unwrap();
    assert!(
        pos("virtio") < pos("virtio_pci"),
        "dependencies first: {names:?}"
    );
    assert!(
        pos("failover") < pos("virtio_net"),
        "dependencies first: {names:?}"
    );
    for rel in list.lines() {
        let m = get(&format!("lib/modules/{release}/{rel}"));
        assert!(
            rel.ends_with(".ko") && m.data.starts_with(b"\x7fELF"),
            "{rel} is not a plain module"
        );
    }

    // The ISO carries the label and the same three files.
    let mut head = vec![0u8; 34 * 1024];
    fs::File::open(&a.iso)
        .unwrap()
        .read_exact_at(&mut head, 0)
        .unwrap();
    assert_eq!(image::iso::volume_id(&head).as_deref(), Some(GUEST_LABEL));
    let t = tempfile::tempdir().unwrap();
    for (name, local) in [("/initrd.img", &a.initrd), ("/vmlinuz", &a.vmlinuz)] {
        let out = t.path().join(name.trim_start_matches('/'));
        qemu_tests::extract_from_iso(&a.iso, name, &out).unwrap();
        assert!(
            fs::read(&out).unwrap() == fs::read(local).unwrap(),
            "{name} on the ISO differs"
        );
    }
}

#[test]
fn bzimage_guest_uses_virtio_disk_net_rng_and_powers_off() {
    let a = assets();
    let t = tempfile::tempdir().unwrap();
    let disk = t.path().join("disk.raw");
    let token = format!(
        "{:x}",
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap()
            .subsec_nanos()
            ^ std::process::id()
    );
    let f = fs::File::create(&disk).unwrap();
    f.set_len(1 << 20).unwrap();
    f.write_all_at(format!("OXBOW-DISK-{token}").as_bytes(), 0)
        .unwrap();
    drop(f);
    let extra: Vec<String> = [
        "-drive",
        &format!("file={},format=raw,if=virtio", disk.display()),
        "-netdev",
        "user,id=n0",
        "-device",
        "virtio-net-pci,netdev=n0",
        "-device",
        "virtio-rng-pci",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    // QEMU's user network answers pings to its gateway, 10.0.2.2.
    let run = guest::boot_direct(
        &a.vmlinuz,
        &a.initrd,
        "console=ttyS0 quiet panic=-1 oxbow.ip=10.0.2.15/24 oxbow.peer=10.0.2.2",
        &extra,
        TIMEOUT,
    )
    .unwrap();
    ran_to_done(&run);
    has(
        &run,
        &format!("disk sectors=2048 sector0=OXBOW-DISK-{token}"),
    );
    has(&run, "disk=ok");
    has(&run, "rng=ok");
    let net = line_starting(&run, "net=");
    assert!(net.starts_with("net=ok eth0 10.0.2.15"), "{}", run.console);
    assert!(
        run.console.contains("reboot: Power down"),
        "the guest did not power off: {}",
        run.console
    );
    // The guest's write reached the image.
    let mut sector1 = [0u8; 512];
    fs::File::open(&disk)
        .unwrap()
        .read_exact_at(&mut sector1, 512)
        .unwrap();
    let want = format!("OXBOW-PATTERN-{token}\0");
    assert!(
        sector1.starts_with(want.as_bytes()),
        "sector 1 holds {:?}",
        String::from_utf8_lossy(&sector1[..40])
    );
}

#[test]
fn pvh_vmlinux_guest_without_devices_reboots() {
    let a = assets();
    let run = guest::boot_direct(
        &a.vmlinux,
        &a.initrd,
        "console=ttyS0 quiet panic=-1 oxbow.reboot",
        &[],
        TIMEOUT,
    )
    .unwrap();
    ran_to_done(&run);
    has(&run, "disk=none");
    has(&run, "net=none");
    has(&run, "rng=none");
    assert!(
        run.console.contains("reboot: Restarting system"),
        "oxbow.reboot did not restart: {}",
        run.console
    );
}

#[test]
fn debian_image_is_consistent() {
    let raw = debian::locate().unwrap();
    let head = debian::read_superblock(&raw).unwrap();
    assert_eq!(
        debian::ext4_label(&head).as_deref(),
        Some(debian::ROOT_LABEL)
    );
    assert_eq!(fs::metadata(&raw).unwrap().len(), debian::IMAGE_MIB << 20);
    // Read back without mounting anything.
    for (path, _, contents) in debian::config_files() {
        assert_eq!(
            debian::debugfs_cat(&raw, &format!("/{path}")).unwrap(),
            contents,
            "/{path} in the image"
        );
    }
    let shadow = debian::debugfs_cat(&raw, "/etc/shadow").unwrap();
    let root = shadow.lines().find(|l| l.starts_with("root:")).unwrap();
    let hash = root.split(':').nth(1).unwrap();
    assert!(
        hash.starts_with('*') || hash.starts_with('!'),
        "root must have no usable password: {root}"
    );
    for unit in [
        "/lib/systemd/system/systemd-logind.service",
        "/lib/systemd/system/serial-getty@.service",
        "/lib/systemd/system/systemd-udevd.service",
        "/lib/systemd/system/dbus.service",
    ] {
        debian::debugfs_cat(&raw, unit)
            .ok()
            .filter(|c| !c.is_empty())
            .unwrap_or_else(|| panic!("{unit} missing in the image"));
    }
}

/// The Debian image boots on the assets' initramfs (`oxbow.root=`) under
/// the host's QEMU to the serial getty's prompt; the ACPI power button
/// (QMP `system_powerdown`) makes logind power it off. The image file is
/// attached with `snapshot=on` and stays unchanged.
#[test]
fn debian_guest_boots_to_login_and_powers_off_on_the_button() {
    let a = assets();
    let raw = debian::locate().unwrap();
    let mtime = || fs::metadata(&raw).unwrap().modified().unwrap();
    let before = mtime();
    let extra: Vec<String> = [
        "-drive",
        &format!("file={},format=raw,if=virtio,snapshot=on", raw.display()),
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    let marker = format!("{} login:", debian::HOSTNAME);
    let run = guest::boot_direct_press_power(
        &a.vmlinux,
        &a.initrd,
        "console=ttyS0 quiet panic=-1 oxbow.root=/dev/vda",
        &extra,
        &marker,
        TIMEOUT,
    )
    .unwrap();
    let lines = run.lines();
    assert!(
        lines.contains(&"switching to /dev/vda") && !lines.iter().any(|l| l.starts_with("root=")),
        "console:\n{}",
        run.console
    );
    assert!(
        run.status.success() && run.console.contains("reboot: Power down"),
        "the guest did not power off on the button ({}); console:\n{}",
        run.status,
        run.console
    );
    eprintln!(
        "Debian guest: login prompt after {:.1} s, powered off after {:.1} s",
        run.marker_at.unwrap().as_secs_f64(),
        run.elapsed.as_secs_f64()
    );
    assert_eq!(mtime(), before, "the image was written to");
}
