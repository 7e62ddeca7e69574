//! Oxbow's VMM booting a real Linux guest, nested: the appliance runs under
//! QEMU (whose emulated SVM gives it a real `/dev/kvm`), and inside it the
//! VMM runs as a transient unit and boots the guest test assets
//! (`make guest`) from a CD labelled `OXBOW-GUEST`. The guest's serial
//! console is the appliance's console, so its `OXBOW-GUEST` lines appear on
//! the appliance's serial log.
//!
//! The same assets boot under QEMU on the host in `tests/guest_assets.rs`:
//! if those pass and these fail, the VMM is at fault.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use qemu_tests::guest::{debian, guest_lines, unsplice_init_lines, GuestAssets, GUEST_LABEL};
use qemu_tests::{with_appliance, Appliance, BootOptions, Firmware, UnitExit};

const BOOT: Duration = Duration::from_secs(600);
const GUEST: Duration = Duration::from_secs(300);
/// How long the Debian guest may take to reach its `login:` prompt.
const DEBIAN_BOOT: Duration = Duration::from_secs(900);
/// Where the unit mounts the assets CD inside the appliance.
const MEDIA: &str = "/run/g";
const VMM: &str = "/usr/lib/oxbow/vmm";
const CMDLINE: &str = "console=ttyS0 quiet panic=-1";
/// The user every VMM here gives up root for, as apid's VMM of VM 100 does.
const VMM_USER: &str = qemu_tests::VMM_USER_OF_VM_100;
/// The VMM's kernel cache in the appliance (`--kernel-cache`).
const KERNEL_CACHE: &str = "/run/kernel-cache";

/// Runs `test` on an appliance with the assets CD mounted on [`MEDIA`] and
/// raw `disks` attached as virtio disks (`snapshot=on`), again on a fresh
/// one if the appliance's own kernel fails or a guest triple faults (see
/// [`with_appliance`]).
fn on_appliance_with_assets(disks: Vec<PathBuf>, test: impl Fn(&mut Appliance)) {
    let opts = || {
        let assets = GuestAssets::locate().unwrap();
        let mut opts = BootOptions::new(Firmware::Direct("oxbow.testctl".into()));
        opts.test_channel = true;
        opts.cpus = 2;
        opts.memory_mib = 2048;
        opts.extra_cds = vec![assets.iso];
        opts.extra_disks = disks.clone();
        opts
    };
    with_appliance(opts, |vm| {
        mount_assets(vm);
        test(vm);
    });
}

/// Waits for init's test channel and mounts the assets CD on [`MEDIA`].
fn mount_assets(vm: &mut Appliance) {
    vm.wait_for_serial("test control channel on", BOOT).unwrap();
    let script = format!(
        "exec >/dev/console 2>&1; set -e; mkdir -p {MEDIA}; \
         mount -t iso9660 -o ro LABEL={GUEST_LABEL} {MEDIA}; \
         test -s {MEDIA}/vmlinuz; test -s {MEDIA}/vmlinux; test -s {MEDIA}/initrd.img; \
         echo guest media mounted on {MEDIA}"
    );
    vm.run_unit("guest-media", &["/bin/sh", "-c", &script])
        .unwrap();
    let m = vm.wait_unit_stopped("guest-media", GUEST).unwrap();
    assert_eq!(
        m.code,
        Some(0),
        "mounting the {GUEST_LABEL} CD in the appliance failed: {}",
        m.how
    );
}

/// The VMM's command line for `kernel` on the assets CD with the test
/// initramfs, 2 vCPUs, 256 MiB, the console on the appliance's, and `extra`.
fn vmm_argv(kernel: &str, cmdline: &str, extra: &[&str]) -> Vec<String> {
    let mut argv: Vec<String> = [
        VMM,
        "--kernel",
        &format!("{MEDIA}/{kernel}"),
        "--initrd",
        &format!("{MEDIA}/initrd.img"),
        "--cmdline",
        cmdline,
        "--cpus",
        "2",
        "--memory",
        "256",
        "--serial",
        "file=/dev/console",
        "--user",
        VMM_USER,
        "--seccomp",
        "on",
    ]
    .iter()
    .map(|a| a.to_string())
    .collect();
    argv.extend(extra.iter().map(|a| a.to_string()));
    argv
}

/// Runs the VMM on `kernel` (a path on the assets CD) as unit `unit` and
/// returns how it ended and the console it produced.
fn run_vmm(
    vm: &mut Appliance,
    unit: &str,
    kernel: &str,
    cmdline: &str,
    extra: &[&str],
) -> (UnitExit, String) {
    let before = vm.serial().len();
    let argv = vmm_argv(kernel, cmdline, extra);
    let argv: Vec<&str> = argv.iter().map(String::as_str).collect();
    vm.run_unit(unit, &argv).unwrap();
    let exit = vm.wait_unit_stopped(unit, GUEST);
    let console = vm.serial();
    let console = console.get(before..).unwrap_or(&console).to_string();
    match exit {
        Ok(e) => (e, console),
        Err(e) => {
            vm.show_unit_log(unit);
            panic!("{unit}: {e:#}");
        }
    }
}

/// Asserts the guest ran to `done` with both vCPUs online and the VMM
/// exited with `code`.
fn check_guest(vm: &mut Appliance, unit: &str, exit: &UnitExit, console: &str, code: i64) {
    let console = unsplice_init_lines(console);
    let lines = guest_lines(&console);
    let ok = exit.code == Some(code)
        && lines.first() == Some(&"start")
        && lines.contains(&"cpus=2")
        && lines.last() == Some(&"done");
    if !ok {
        vm.show_unit_log(unit);
        panic!(
            "{unit}: the VMM {} (expected status {code}); guest lines {lines:?}",
            exit.how
        );
    }
    eprintln!("{unit}: guest lines {lines:?}");
}

#[test]
fn vmm_boots_bzimage_guest_nested() {
    on_appliance_with_assets(Vec::new(), |vm| {
        // A raw disk in the appliance's tmpfs whose sector 0 carries a token.
        let disk = "/run/guest-disk.raw";
        let make = format!("printf OXBOW-DISK-7311 > {disk} && truncate -s 1M {disk}");
        vm.run_unit("make-disk", &["/bin/sh", "-c", &make]).unwrap();
        assert_eq!(
            vm.wait_unit_stopped("make-disk", GUEST).unwrap().code,
            Some(0)
        );
        // A bridge with an address and a tap on it: the guest's NIC pings the
        // bridge's address through the tap.
        let net = "exec >/dev/console 2>&1; set -e; \
               ip link add brtest type bridge; ip addr add 10.99.0.1/24 dev brtest; \
               ip link set brtest up; ip tuntap add dev vmtap0 mode tap; \
               ip link set vmtap0 master brtest; ip link set vmtap0 up; \
               ip tuntap add dev vmtap1 mode tap; \
               ip link set vmtap1 master brtest; ip link set vmtap1 up";
        vm.run_unit("make-net", &["/bin/sh", "-c", net]).unwrap();
        assert_eq!(
            vm.wait_unit_stopped("make-net", GUEST).unwrap().code,
            Some(0)
        );
        let cmdline = format!("{CMDLINE} oxbow.ip=10.99.0.2/24 oxbow.peer=10.99.0.1");
        let (exit, console) = run_vmm(
            vm,
            "guest-bzimage",
            "vmlinuz",
            &cmdline,
            &["--disk", disk, "--net", "tap=vmtap0,mac=02:0b:0b:00:00:02"],
        );
        check_guest(vm, "guest-bzimage", &exit, &console, 0);
        let console = unsplice_init_lines(&console);
        let lines = guest_lines(&console);
        assert!(
            lines.contains(&"disk sectors=2048 sector0=OXBOW-DISK-7311")
                && lines.contains(&"disk=ok"),
            "virtio-blk: {lines:?}"
        );
        assert!(lines.contains(&"rng=ok"), "virtio-rng: {lines:?}");
        assert!(
            lines.iter().any(|l| l.starts_with("net=ok ")),
            "virtio-net over vmtap0 on brtest: {lines:?}"
        );
        // The pattern the guest wrote to sector 1, read on the host side.
        let check = format!(
        "exec >/dev/console; printf 'SECTOR1 '; dd if={disk} bs=512 skip=1 count=1 2>/dev/null | tr -d '\\000'; echo"
    );
        let before = vm.serial().len();
        vm.run_unit("check-disk", &["/bin/sh", "-c", &check])
            .unwrap();
        assert_eq!(
            vm.wait_unit_stopped("check-disk", GUEST).unwrap().code,
            Some(0)
        );
        // init's "started check-disk" line may land inside the unit's own
        // line, as in the guest's lines above.
        let out = vm.serial();
        let out = unsplice_init_lines(out.get(before..).unwrap_or_default());
        assert!(
            out.lines()
                .any(|l| l.trim_end() == "SECTOR1 OXBOW-PATTERN-7311"),
            "sector 1 of the disk after the guest ran: {out:?}"
        );

        // With a kernel cache: the first boot unpacks the bzImage's payload
        // and boots the ELF through its PVH entry, the second boots the
        // kept ELF. Both reach the test init, each with a NIC on a second
        // tap: the first's frames moved by the kernel's vhost-net, which
        // raises the guest's interrupts through the vectors' irqfds
        // itself, the second's by the VMM (`vhost=off` spelt out, as by
        // default). Each guest then unbinds its NIC from the driver and
        // binds it again: the device is reset (vhost-net's ownership given
        // up) and set up anew (taken again, in the VMM's sandbox, from the
        // instance it opened before), and the network works again.
        let vhost = ["--net", "tap=vmtap1,mac=02:0b:0b:00:00:03,vhost=on"];
        let no_vhost = ["--net", "tap=vmtap1,mac=02:0b:0b:00:00:03,vhost=off"];
        for (unit, how, net) in [
            ("guest-bzcache-1", "unpacked now", &vhost[..]),
            ("guest-bzcache-2", "kept in the kernel cache", &no_vhost[..]),
        ] {
            let mut extra = vec!["--kernel-cache", KERNEL_CACHE];
            extra.extend_from_slice(net);
            let cmdline =
                format!("{CMDLINE} oxbow.ip=10.99.0.3/24 oxbow.peer=10.99.0.1 oxbow.net-rebind");
            let (exit, console) = run_vmm(vm, unit, "vmlinuz", &cmdline, &extra);
            check_guest(vm, unit, &exit, &console, 0);
            let lines = guest_lines(&unsplice_init_lines(&console)).join("\n");
            assert!(
                lines.contains("net=ok ") && lines.contains("net-rebind=ok "),
                "{unit}: virtio-net ({}) over vmtap1, and after a rebind: {lines}",
                net[1]
            );
            let said = format!("booting its vmlinux, {how}, through the PVH entry");
            let grep = format!("grep -qF '{said}' /var/log/oxbow/{unit}.log");
            vm.run_unit(&format!("{unit}-log"), &["/bin/sh", "-c", &grep])
                .unwrap();
            let found = vm.wait_unit_stopped(&format!("{unit}-log"), GUEST).unwrap();
            if found.code != Some(0) {
                vm.show_unit_log(unit);
                panic!("{unit}: the VMM's log does not say {said:?}");
            }
        }
    });
}

#[test]
fn vmm_boots_pvh_vmlinux_guest_nested_and_reports_reboot() {
    on_appliance_with_assets(Vec::new(), |vm| {
        let (exit, console) = run_vmm(vm, "guest-pvh", "vmlinux", CMDLINE, &["--no-rng"]);
        check_guest(vm, "guest-pvh", &exit, &console, 0);
        assert!(
            guest_lines(&unsplice_init_lines(&console)).contains(&"rng=none"),
            "--no-rng left an RNG"
        );
        // A guest that reboots makes the VMM exit with status 3.
        let reboot = format!("{CMDLINE} oxbow.reboot");
        let (exit, console) = run_vmm(vm, "guest-pvh-reboot", "vmlinux", &reboot, &[]);
        check_guest(vm, "guest-pvh-reboot", &exit, &console, 3);
    });
}

/// The control socket answers `info`, `pause` and `resume` while the guest
/// runs; `shutdown` presses the ACPI power button, the guest sees KEY_POWER
/// and powers off, and the VMM exits 0. Meanwhile it runs as its own user
/// with no capabilities and its seccomp filter.
/// The control socket: `info`, `pause`/`resume`, an unknown command
/// refused, the VMM's sandbox, `set-link` (the guest's NIC starts with
/// its cable pulled, `link=down`: the guest sees no carrier and waits;
/// plugged in, it gets one and pings the bridge; pulled again, it loses
/// it), and `shutdown` pressing the ACPI power button.
#[test]
fn vmm_control_socket_and_acpi_power_button_nested() {
    on_appliance_with_assets(Vec::new(), |vm| {
        let net = "exec >/dev/console 2>&1; set -e; \
               ip link add brlink type bridge; ip addr add 10.98.0.1/24 dev brlink; \
               ip link set brlink up; ip tuntap add dev lnktap0 mode tap; \
               ip link set lnktap0 master brlink; ip link set lnktap0 up";
        vm.run_unit("make-net", &["/bin/sh", "-c", net]).unwrap();
        assert_eq!(
            vm.wait_unit_stopped("make-net", GUEST).unwrap().code,
            Some(0)
        );
        let sock = "/run/guest-acpi.sock";
        let cmdline = format!(
            "{CMDLINE} oxbow.ip=10.98.0.2/24 oxbow.peer=10.98.0.1 oxbow.link-wait oxbow.wait-power"
        );
        let before = vm.serial().len();
        let from = vm.serial_bytes();
        let argv = vmm_argv(
            "vmlinux",
            &cmdline,
            &[
                "--api-socket",
                sock,
                "--net",
                "tap=lnktap0,mac=02:0b:0b:00:00:09,link=down",
            ],
        );
        let argv: Vec<&str> = argv.iter().map(String::as_str).collect();
        vm.run_unit("guest-acpi", &argv).unwrap();
        // The answers go to files, printed by the `ctl` unit below while
        // the guest is quiet: the guest writes to the same console right
        // when its carrier changes, and the two writers' bytes would mix.
        let set_link = |vm: &mut Appliance, unit: &str, up: bool| {
            let script = format!(
                "exec >/run/{unit}.out 2>&1; \
                 {VMM} ctl {sock} '{{\"cmd\":\"set-link\",\"tap\":\"lnktap0\",\"up\":{up}}}'"
            );
            vm.run_unit(unit, &["/bin/sh", "-c", &script]).unwrap();
            vm.wait_unit_stopped(unit, GUEST).unwrap();
        };
        let wait = |vm: &mut Appliance, marker: &str| {
            if !matches!(vm.wait_for_serial_from(from, marker, GUEST), Ok(true)) {
                vm.show_unit_log("guest-acpi");
                panic!("no {marker:?} on the console");
            }
        };
        wait(vm, "OXBOW-GUEST link=down");
        set_link(vm, "link-up", true);
        wait(vm, "OXBOW-GUEST net=");
        set_link(vm, "link-down", false);
        wait(vm, "OXBOW-GUEST waiting for the power button");
        let script = format!(
            "exec >/dev/console 2>&1; set -e; \
         for u in link-up link-down; do echo \"CTL-LINK $(cat /run/$u.out)\"; done; \
         info=$({VMM} ctl {sock} info); echo \"CTL-INFO $info\"; \
         for p in /proc/[0-9]*; do [ \"$(cat $p/comm 2>/dev/null)\" = vmm ] && pid=${{p#/proc/}}; done; \
         grep -E '^(Uid|Gid|Groups|CapEff|CapPrm|NoNewPrivs|Seccomp):' /proc/$pid/status \
           | tr -s '\t' ' ' | tr '\n' ';' | sed 's/^/CTL-STATUS /'; echo; \
         {VMM} ctl {sock} pause >/dev/null; \
         paused=$({VMM} ctl {sock} info); echo \"CTL-PAUSED $paused\"; \
         {VMM} ctl {sock} resume >/dev/null; \
         if {VMM} ctl {sock} explode >/dev/null; then exit 1; fi; \
         {VMM} ctl {sock} shutdown >/dev/null"
        );
        // The reply to `shutdown` is not printed: the guest answers the button
        // at once on the same console, and the two writers' bytes would mix.
        vm.run_unit("ctl", &["/bin/sh", "-c", &script]).unwrap();
        let ctl = vm.wait_unit_stopped("ctl", GUEST).unwrap();
        let exit = vm.wait_unit_stopped("guest-acpi", GUEST).unwrap();
        let console = vm.serial();
        let console = console.get(before..).unwrap_or(&console).to_string();
        let line = |tag: &str| {
            console
                .lines()
                .find(|l| l.contains(tag))
                .unwrap_or_default()
                .to_string()
        };
        let (info, paused) = (line("CTL-INFO "), line("CTL-PAUSED "));
        let links: Vec<&str> = console
            .lines()
            .filter(|l| l.contains("CTL-LINK "))
            .collect();
        // The VMM runs as VMM_USER with no capabilities and its filter.
        let status = line("CTL-STATUS ");
        let id = VMM_USER.split(':').next().unwrap();
        let sandboxed = [
            format!("Uid: {id} {id} {id} {id};"),
            format!("Gid: {id} {id} {id} {id};"),
            "Groups: ;".to_string(),
            "CapPrm: 0000000000000000;".to_string(),
            "CapEff: 0000000000000000;".to_string(),
            "NoNewPrivs: 1;".to_string(),
            "Seccomp: 2;".to_string(),
        ]
        .iter()
        .all(|f| status.contains(f.as_str()));
        let console = unsplice_init_lines(&console);
        let lines = guest_lines(&console);
        let ok = ctl.code == Some(0)
            && sandboxed
            && info.contains(r#""state":"running""#)
            && info.contains(r#""vcpus":2"#)
            && info.contains(r#""memory_mib":256"#)
            && paused.contains(r#""state":"paused""#)
            && links.len() == 2
            && links
                .iter()
                .all(|l| l.contains(r#"{"data":{"changed":true},"ok":true}"#))
            && info.contains(r#""link":"down""#)
            && lines.iter().any(|l| l.starts_with("net=ok "))
            && lines
                .iter()
                .filter(|l| l.starts_with("link="))
                .copied()
                .collect::<Vec<_>>()
                == ["link=down", "link=up", "link=down"]
            && lines.contains(&"power-button")
            && lines.last() == Some(&"done")
            && exit.code == Some(0);
        if !ok {
            vm.show_unit_log("ctl");
            vm.show_unit_log("guest-acpi");
            panic!(
                "ctl {}; status {status:?}; info {info:?}; paused {paused:?}; \
                 set-link {links:?}; guest lines {lines:?}; VMM {}",
                ctl.how, exit.how
            );
        }
    });
}

/// A full Debian 12 guest (`make guest-debian`: systemd, udev, logind, a
/// getty on the serial console) boots nested to its `login:` prompt: the
/// appliance gets `debian.raw` as a virtio disk (`snapshot=on`), finds it
/// by its label with `blkid -L` and hands the block device to the VMM with
/// `--disk`; the assets' initramfs mounts it (`oxbow.root=/dev/vda`) and
/// executes systemd. `vmm ctl shutdown` presses the ACPI power button,
/// logind powers the guest off and the VMM exits 0.
#[test]
fn vmm_boots_debian_to_login_nested() {
    let raw = debian::locate().unwrap();
    on_appliance_with_assets(vec![raw], |vm| {
        let sock = "/run/debian.sock";
        let cmdline = format!("{CMDLINE} oxbow.root=/dev/vda");
        let before = vm.serial().len();
        let script = format!(
        "dev=$(blkid -L {label}) || {{ echo 'no file system labelled {label}' >&2; exit 1; }}; \
         echo \"DEBIAN-ROOT $dev\" >/dev/console; \
         exec {VMM} --kernel {MEDIA}/vmlinux --initrd {MEDIA}/initrd.img \
         --cmdline '{cmdline}' --cpus 2 --memory 512 --disk \"$dev\" \
         --serial file=/dev/console --api-socket {sock} --user {VMM_USER}",
        label = debian::ROOT_LABEL,
    );
        let started = Instant::now();
        vm.run_unit("debian", &["/bin/sh", "-c", &script]).unwrap();
        let since = |vm: &Appliance| {
            let c = vm.serial();
            c.get(before..).unwrap_or(&c).to_string()
        };
        let login = format!("{} login:", debian::HOSTNAME);
        let mut switched = None;
        let mut prompt = None;
        let end = Instant::now() + DEBIAN_BOOT;
        while prompt.is_none() && Instant::now() < end {
            let console = since(vm);
            if switched.is_none() && console.contains("OXBOW-GUEST switching to /dev/vda") {
                switched = Some(started.elapsed());
            }
            if console.contains(&login) {
                prompt = Some(started.elapsed());
            }
            let st = vm
                .testctl(serde_json::json!({"cmd":"status","unit":"debian"}))
                .unwrap();
            if prompt.is_none() && st["pid"].is_null() && !st["last_exit"].is_null() {
                vm.show_unit_log("debian");
                panic!("the VMM ended before the login prompt: {st}");
            }
            std::thread::sleep(Duration::from_millis(500));
        }
        let Some(prompt) = prompt else {
            vm.show_unit_log("debian");
            panic!("no {login:?} within {DEBIAN_BOOT:?} (initramfs switched after {switched:?})");
        };
        let console = since(vm);
        let dev = console
            .lines()
            .find_map(|l| l.trim_end().strip_prefix("DEBIAN-ROOT "))
            .unwrap_or_default()
            .to_string();
        eprintln!(
            "debian: root {dev}; initramfs switched after {:.1} s, login prompt after {:.1} s \
         (from the unit's start)",
            switched.map_or(f64::NAN, |d| d.as_secs_f64()),
            prompt.as_secs_f64()
        );
        let console = unsplice_init_lines(&console);
        let lines = guest_lines(&console);
        assert!(
            lines.contains(&"switching to /dev/vda")
                && !lines.iter().any(|l| l.starts_with("root=")),
            "guest lines {lines:?}"
        );

        // A clean shutdown: the power button, then logind.
        let pressed = Instant::now();
        let ctl = format!("exec >/var/log/oxbow/debian-ctl.out 2>&1; {VMM} ctl {sock} shutdown");
        vm.run_unit("debian-ctl", &["/bin/sh", "-c", &ctl]).unwrap();
        let ctl = vm.wait_unit_stopped("debian-ctl", GUEST).unwrap();
        assert_eq!(ctl.code, Some(0), "vmm ctl shutdown: {}", ctl.how);
        let exit = match vm.wait_unit_stopped("debian", GUEST) {
            Ok(e) => e,
            Err(e) => {
                vm.show_unit_log("debian");
                panic!("the guest did not power off after the power button: {e:#}");
            }
        };
        let console = since(vm);
        if exit.code != Some(0) || !console.contains("reboot: Power down") {
            vm.show_unit_log("debian");
            panic!(
                "after the power button the VMM {} (expected status 0)",
                exit.how
            );
        }
        eprintln!(
            "debian: powered off {:.1} s after the power button",
            pressed.elapsed().as_secs_f64()
        );
    });
}
