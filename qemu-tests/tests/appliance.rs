//! The appliance booted from its ISO under QEMU.
//!
//! Each test boots one machine; they are slow under emulation, so the suite
//! runs them one at a time (see the Makefile).

use std::time::Duration;

use qemu_tests::{with_appliance, Appliance, BootOptions, Firmware, SeedKind};
use serde_json::json;

const BOOT: Duration = Duration::from_secs(600);
const PASSWORD: &str = "correct-horse-battery";

fn dhcp_answer() -> String {
    format!("[global]\nfqdn = \"pve-test.example.org\"\nroot-password = \"{PASSWORD}\"\n\n[network]\nsource = \"from-dhcp\"\n")
}

fn static_answer() -> String {
    // QEMU's user network: 10.0.2.0/24, gateway 10.0.2.2, DNS 10.0.2.3.
    format!(
        "[global]\nfqdn = \"static.example.org\"\nroot-password = \"{PASSWORD}\"\n\n[network]\nsource = \"from-answer\"\ncidr = \"10.0.2.15/24\"\ngateway = \"10.0.2.2\"\ndns = \"10.0.2.3\"\n"
    )
}

/// Logs in, checks `/version`, and checks the refusals.
fn login_and_version(vm: &mut Appliance) {
    let mut api = vm.wait_for_api(BOOT).expect("API answers");
    assert_eq!(
        api.get_status("/version").unwrap(),
        401,
        "unauthenticated /version"
    );
    let bad = api.login("root@pam", "wrong-password").unwrap();
    assert_eq!(bad.status, 401, "wrong password: {:?}", bad.body);
    let ok = api.login("root@pam", PASSWORD).unwrap();
    assert_eq!(ok.status, 200, "login: {:?}", ok.body);
    let ticket = ok.body["data"]["ticket"].as_str().unwrap();
    assert!(ticket.starts_with("PVE:root@pam:"), "{ticket}");
    assert!(ok.body["data"]["CSRFPreventionToken"].is_string());
    let v = api.get("/version").unwrap();
    assert_eq!(v.status, 200);
    assert!(v.body["data"]["version"].is_string(), "{:?}", v.body);
    // The revision the image recorded for its binaries (make passes the
    // checkout's), as Proxmox shows its own: eight hex digits.
    let repoid = v.body["data"]["repoid"].as_str().unwrap_or_default();
    assert!(
        repoid.len() == 8 && repoid.bytes().all(|b| b.is_ascii_hexdigit()),
        "repoid {repoid:?}"
    );
}

#[test]
fn bios_boot_with_iso_seed_and_dhcp() {
    let opts = || {
        let mut opts = BootOptions::new(Firmware::Bios);
        opts.seed = Some((dhcp_answer(), SeedKind::Iso));
        opts
    };
    with_appliance(opts, |vm| {
        vm.wait_for_serial("stage 1: initramfs", BOOT).unwrap();
        login_and_version(vm);
        let console = vm.serial();
        assert!(
            console.contains("seed: answer.toml applied"),
            "seed not applied"
        );
        assert!(
            console.contains("netd is ready: 10.0.2.15/24 via 10.0.2.2 (dhcp)"),
            "management address not from DHCP"
        );
        assert!(console.contains("[ ok ] apid is ready"));
    });
}

/// The seed on a USB stick behind a USB hub: the stick may still be being
/// enumerated when stage 2 looks for the seed, and usb-storage scans a new
/// stick only after a second, so stage 2 waits for both before it gives up
/// on the seed.
#[test]
fn uefi_boot_with_usb_fat_seed_and_static_network() {
    let opts = || {
        let mut opts = BootOptions::new(Firmware::Uefi);
        opts.seed = Some((static_answer(), SeedKind::UsbFat));
        opts
    };
    with_appliance(opts, |vm| {
        login_and_version(vm);
        let console = vm.serial();
        assert!(console.contains("seed: answer.toml applied"), "{console}");
        assert!(
            console.contains("netd is ready: 10.0.2.15/24 via 10.0.2.2 (static)"),
            "static address not applied"
        );
    });
}

#[test]
fn kvm_restart_no_seed_and_power_button() {
    let opts = || {
        let mut opts = BootOptions::new(Firmware::Direct("oxbow.testctl".into()));
        opts.test_channel = true;
        opts
    };
    with_appliance(opts, |vm| {
        let mut api = vm.wait_for_api(BOOT).unwrap();

        // No seed: no password exists, every login is refused, and the console says why.
        assert!(vm.serial().contains("no root password is set"));
        assert_eq!(api.login("root@pam", "").unwrap().status, 401);
        assert_eq!(api.login("root@pam", PASSWORD).unwrap().status, 401);

        // /dev/kvm inside the appliance runs a guest.
        vm.testctl(json!({"cmd":"run","unit":{"name":"kvm-probe","exec":["/usr/lib/oxbow/vmm","probe"],"restart":"never"}}))
        .unwrap();
        let mut probe = json!(null);
        for _ in 0..600 {
            probe = vm
                .testctl(json!({"cmd":"status","unit":"kvm-probe"}))
                .unwrap();
            if probe["pid"].is_null() && !probe["last_exit"].is_null() {
                break;
            }
            std::thread::sleep(Duration::from_millis(500));
        }
        assert_eq!(probe["last_exit_code"], json!(0), "KVM probe: {probe}");

        // init restarts apid after it is killed.
        let before = vm.testctl(json!({"cmd":"status","unit":"apid"})).unwrap();
        let old_pid = before["pid"].as_i64().expect("apid has a pid");
        vm.testctl(json!({"cmd":"kill","unit":"apid","signal":"KILL"}))
            .unwrap();
        let mut after = json!(null);
        for _ in 0..600 {
            after = vm.testctl(json!({"cmd":"status","unit":"apid"})).unwrap();
            if after["state"] == json!("running")
                && after["pid"].as_i64().is_some_and(|p| p != old_pid)
            {
                break;
            }
            std::thread::sleep(Duration::from_millis(500));
        }
        assert_eq!(after["state"], json!("running"), "{after}");
        assert_eq!(after["restarts"], json!(1), "{after}");
        assert_eq!(after["last_exit"], json!("killed by SIGKILL"));
        assert_eq!(
            api.get_status("/version").unwrap(),
            401,
            "the restarted apid answers"
        );

        // The power button: services stop in reverse order, then QEMU exits by itself.
        vm.power_button().unwrap();
        let status = vm.wait_exit(Duration::from_secs(300)).unwrap();
        assert!(status.success(), "QEMU exit status {status}");
        let console = vm.serial();
        let at = |s: &str| {
            console
                .find(s)
                .unwrap_or_else(|| panic!("console lacks {s:?}"))
        };
        assert!(at("power button pressed") < at("stopping apid"));
        assert!(at("stopped apid") < at("stopping netd"));
        assert!(at("stopped netd") < at("powering off"));
        assert_eq!(vm.kernel_failure(), None, "a clean power-off is no failure");
    });
}

/// The harness tells an appliance whose own CPU triple faulted (QEMU, run
/// with `-no-reboot`, exits without a word on the console) from one that
/// ended otherwise, so that `with_appliance` boots a fresh one for the
/// test: nested KVM under QEMU's emulated SVM sometimes brings the
/// appliance down this way. The kernel's `reboot=t` reboots by a triple
/// fault, which SysRq's `b` asks for.
#[test]
fn an_appliance_that_triple_faults_is_told_apart() {
    let mut opts = BootOptions::new(Firmware::Direct("oxbow.testctl reboot=t".into()));
    opts.test_channel = true;
    let mut vm = Appliance::boot(opts).unwrap();
    vm.wait_for_serial("test control channel on", BOOT).unwrap();
    vm.run_unit(
        "triple-fault",
        &["/bin/sh", "-c", "sleep 1; echo b >/proc/sysrq-trigger"],
    )
    .unwrap();
    let status = vm.wait_exit(Duration::from_secs(120)).unwrap();
    assert!(status.success(), "QEMU exit status {status}");
    let failure = vm.kernel_failure();
    assert!(
        failure
            .as_deref()
            .is_some_and(|f| f.contains("triple fault")),
        "{failure:?}"
    );
}
