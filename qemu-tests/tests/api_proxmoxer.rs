//! The API end to end: a booted appliance driven from the host through
//! the forwarded port by proxmoxer (PyPI), the client Proxmox users script
//! with. The flow itself is `qemu-tests/python/proxmoxer_flow.py`: log in,
//! upload a kernel and an initramfs, create a VM that boots them directly,
//! start it and see it run, check tokens, privileges and CSRF, then (after
//! this test `kill -9`s apid) see the VM still running, grow its disk
//! while it runs (the guest sees the new size), shut it down
//! through ACPI, let it power itself off, see a guest reboot restart it,
//! and (after apid starts again as on a node boot) see the `onboot` VM
//! started, then destroy it; then a Debian 12 container from the uploaded
//! template: create, config, start, list, shutdown, destroy.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use qemu_tests::guest::{ct_template, GuestAssets};
use qemu_tests::{with_appliance, Appliance, BootOptions, Firmware, SeedKind};
use serde_json::json;

const BOOT: Duration = Duration::from_secs(600);
const PASSWORD: &str = "proxmoxer-test-password";

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .to_path_buf()
}

/// The Python environment with proxmoxer (made by `scripts/pyenv.sh`).
fn python() -> PathBuf {
    let out = Command::new(repo().join("scripts/pyenv.sh"))
        .output()
        .expect("scripts/pyenv.sh runs");
    assert!(
        out.status.success(),
        "scripts/pyenv.sh failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let env = String::from_utf8_lossy(&out.stdout).trim().to_string();
    repo().join(env).join("bin/python3")
}

/// Prints what helps to understand a failure: apid's log and the guest's
/// serial console.
fn show_logs(vm: &mut Appliance) {
    vm.show_unit_log("apid");
    let script = "exec >/dev/console 2>&1; for f in /run/oxbow/guests/*.serial.log; do \
                  echo \"----- $f -----\"; cat \"$f\"; done; echo '----- end -----'";
    if vm
        .run_unit("show-guest-logs", &["/bin/sh", "-c", script])
        .is_ok()
    {
        let _ = vm.wait_unit_stopped("show-guest-logs", Duration::from_secs(60));
    }
}

/// Runs one phase of the flow; a failure panics (and [`with_appliance`]
/// decides whether the appliance's own kernel was at fault).
fn run_phase(vm: &mut Appliance, python: &Path, phase: &str, state: &Path) {
    let assets = GuestAssets::locate().unwrap();
    let out = Command::new(python)
        .arg(repo().join("qemu-tests/python/proxmoxer_flow.py"))
        .arg(phase)
        .arg(state)
        .env("OXBOW_API_PORT", vm.api_port.to_string())
        .env("OXBOW_PASSWORD", PASSWORD)
        .env("OXBOW_KERNEL", &assets.vmlinuz)
        .env("OXBOW_INITRD", &assets.initrd)
        .env(
            "OXBOW_CT_TEMPLATE",
            ct_template::locate_in(&GuestAssets::default_dir())
                .expect("the container template: make ct-template"),
        )
        .output()
        .expect("python runs");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    eprintln!("{stdout}");
    if !out.status.success() {
        if vm.responsive() {
            show_logs(vm);
        }
        panic!("proxmoxer flow, phase {phase}, failed:\n{stderr}");
    }
}

#[test]
fn proxmoxer_drives_a_vm_through_its_life() {
    let python = python();
    let opts = || {
        let answer = format!(
            "[global]\nfqdn = \"pve-api.example.org\"\nroot-password = \"{PASSWORD}\"\n\n\
             [network]\nsource = \"from-dhcp\"\n"
        );
        let mut opts = BootOptions::new(Firmware::Direct("oxbow.testctl".into()));
        opts.test_channel = true;
        opts.seed = Some((answer, SeedKind::Iso));
        opts
    };
    with_appliance(opts, |vm| drive_a_vm(vm, &python));
}

fn drive_a_vm(vm: &mut Appliance, python: &Path) {
    vm.wait_for_api(BOOT).expect("API answers");
    vm.wait_for_serial("test control channel on", BOOT).unwrap();

    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("state.json");
    run_phase(vm, python, "before-kill", &state);

    // The guest is up when its test init waits for the power button (a
    // button pressed earlier would be lost, as on any machine whose ACPI
    // driver has not loaded yet). Its console is the VM's serial log.
    let wait = "for i in $(seq 600); do grep -q 'waiting for the power button' \
                /run/oxbow/guests/100.serial.log 2>/dev/null && exit 0; sleep 1; done; exit 1";
    vm.run_unit("wait-guest", &["/bin/sh", "-c", wait]).unwrap();
    let waited = vm.wait_unit_stopped("wait-guest", BOOT).unwrap();
    if waited.code != Some(0) {
        show_logs(vm);
        panic!(
            "the guest never waited for the power button: {}",
            waited.how
        );
    }

    // kill -9 of apid: init starts it again; the VM, a unit of init, runs on.
    restart_apid(vm);
    let vmm = vm
        .testctl(json!({"cmd":"status","unit":"vmm:100"}))
        .unwrap();
    assert_eq!(
        vmm["state"], "running",
        "the VMM after apid was killed: {vmm}"
    );
    // apid had the VMM give up root for VM 100's own user and install its
    // seccomp filter (docs/vmm.md, "The sandbox").
    let pid = vmm["pid"].as_i64().expect("the VMM's pid");
    let before = vm.serial().len();
    // And net0's cable, pulled over the API while the VM ran: the VMM's
    // NIC has no carrier and its tap is down.
    let script = format!(
        "exec >/dev/console 2>&1; grep -E '^(Uid|CapEff|Seccomp):' /proc/{pid}/status \
         | tr -s '\t' ' ' | tr '\n' ';' | sed 's/^/VMM-STATUS /'; echo; \
         echo \"VMM-LINK $(/usr/lib/oxbow/vmm ctl /run/oxbow/guests/100.sock info \
           | grep -o '\"link\":\"[a-z]*\"') tap $(cat /sys/class/net/tap100i0/operstate)\""
    );
    vm.run_unit("vmm-status", &["/bin/sh", "-c", &script])
        .unwrap();
    vm.wait_unit_stopped("vmm-status", BOOT).unwrap();
    let serial = vm.serial();
    let line = |tag: &str| {
        serial
            .get(before..)
            .unwrap_or_default()
            .lines()
            .find(|l| l.contains(tag))
            .unwrap_or_default()
            .to_string()
    };
    let (status, link) = (line("VMM-STATUS "), line("VMM-LINK "));
    assert!(
        link.contains(r#"VMM-LINK "link":"down" tap down"#),
        "net0 after link_down=1 while running: {link:?}"
    );
    for field in [
        "Uid: 3000000100 3000000100 3000000100 3000000100;",
        "CapEff: 0000000000000000;",
        "Seccomp: 2;",
    ] {
        assert!(status.contains(field), "VM 100's VMM: {status:?}");
    }

    // virtio0 grown over the API while the VM runs: the guest sees it
    // (its test init reports a new size of /dev/vda).
    run_phase(vm, python, "resize", &state);
    let wait = "for i in $(seq 120); do grep -q 'disk-resized sectors=4194304' \
                /run/oxbow/guests/100.serial.log 2>/dev/null && exit 0; sleep 1; done; exit 1";
    vm.run_unit("wait-resize", &["/bin/sh", "-c", wait])
        .unwrap();
    let waited = vm.wait_unit_stopped("wait-resize", BOOT).unwrap();
    if waited.code != Some(0) {
        show_logs(vm);
        panic!(
            "the guest did not see its disk grow to 2 GiB: {}",
            waited.how
        );
    }

    run_phase(vm, python, "after-kill", &state);

    // As on a node boot: apid starts for the first time since boot (the
    // marker under /run is gone) and starts the VMs with onboot: 1.
    vm.run_unit(
        "forget-boot",
        &["/bin/rm", "-f", "/run/oxbow/guests/onboot.done"],
    )
    .unwrap();
    assert_eq!(
        vm.wait_unit_stopped("forget-boot", BOOT).unwrap().code,
        Some(0)
    );
    restart_apid(vm);
    run_phase(vm, python, "after-boot", &state);
    run_phase(vm, python, "containers", &state);
    run_phase(vm, python, "network", &state);
}

/// `kill -9` of apid, then waits until init has started it again and it
/// answers.
fn restart_apid(vm: &mut Appliance) {
    let before = vm.testctl(json!({"cmd":"status","unit":"apid"})).unwrap();
    vm.testctl(json!({"cmd":"kill","unit":"apid","signal":"KILL"}))
        .unwrap();
    let mut restarted = false;
    for _ in 0..120 {
        let now = vm.testctl(json!({"cmd":"status","unit":"apid"})).unwrap();
        if now["pid"].is_number() && now["pid"] != before["pid"] && now["state"] == "running" {
            restarted = true;
            break;
        }
        std::thread::sleep(Duration::from_millis(500));
    }
    assert!(restarted, "apid was not restarted after kill -9");
    vm.wait_for_api(BOOT).expect("API answers again");
}
