//! Oxbow's container runtime inside the appliance, where the kernel has
//! the cgroup v2 controllers the CI host lacks (see docs/ctr.md). The
//! Debian 12 template (`make ct-template`) reaches the appliance on a CD
//! labelled `OXBOW-CT`; `ctr unpack` makes a root directory of it, and
//! `ctr start` runs as an init unit, as apid will run it.
//!
//! - limits: a container with `memory: 64`, `swap: 0` and
//!   `lxc.cgroup2.pids.max: 24` whose init is a test script: the limits
//!   are in `oxbow/ct-<vmid>`, fork fails at the pids limit, and a process
//!   that eats memory is killed by the OOM killer of its cgroup;
//! - the same template with its own systemd boots to its `login:` prompt
//!   with no failed unit, and halts on `ctr ctl … shutdown`.

use std::path::PathBuf;
use std::time::Duration;

use qemu_tests::guest::ct_template;
use qemu_tests::guest::GuestAssets;
use qemu_tests::{with_appliance, Appliance, BootOptions, Firmware};

const BOOT: Duration = Duration::from_secs(600);
const STEP: Duration = Duration::from_secs(300);
const CTR: &str = "/usr/lib/oxbow/ctr";
const LABEL: &str = "OXBOW-CT";
/// Where the unit mounts the template CD inside the appliance.
const MEDIA: &str = "/run/ct-media";

/// An ISO labelled [`LABEL`] holding the Debian template.
fn template_iso(dir: &std::path::Path) -> (PathBuf, String) {
    let assets = GuestAssets::default_dir();
    let template = ct_template::locate_in(&assets)
        .expect("the Debian container template: build it with `make ct-template`");
    let name = template.file_name().unwrap().to_string_lossy().into_owned();
    let iso = dir.join("ct.iso");
    qemu_tests::make_data_iso(&iso, LABEL, &[(name.as_str(), template.as_path())]).unwrap();
    (iso, name)
}

/// Runs a shell script as a unit and asserts it ended with status 0.
fn sh(vm: &mut Appliance, unit: &str, script: &str) {
    vm.run_unit(unit, &["/bin/sh", "-c", script]).unwrap();
    let end = vm.wait_unit_stopped(unit, STEP).unwrap();
    if end.code != Some(0) {
        vm.show_unit_log(unit);
        panic!("{unit}: {}", end.how);
    }
}

/// The test init of the limits container: fork until the pids limit
/// stops it, wait until the appliance has read the limits, then eat memory
/// until the OOM killer ends the eater.
const LIMITS_INIT: &str = r#"#!/bin/sh
echo "OXBOW-CT start"
sh -c 'i=0; while [ $i -lt 64 ]; do sleep 300 & i=$((i+1)); echo $i > /run/forks; done' 2>/run/fork.err
echo "OXBOW-CT forks=$(cat /run/forks) error=$(head -c 120 /run/fork.err | tr '\n' ' ')"
pkill sleep
while [ ! -e /oxbow-go ]; do sleep 1; done
tail /dev/zero
echo "OXBOW-CT eater-status=$?"
echo "OXBOW-CT done"
"#;

#[test]
fn containers_in_the_appliance_get_cgroup_limits_and_boot_systemd() {
    let dir = tempfile::tempdir().unwrap();
    let (iso, name) = template_iso(dir.path());
    let opts = || {
        let mut opts = BootOptions::new(Firmware::Direct("oxbow.testctl".into()));
        opts.test_channel = true;
        opts.memory_mib = 2048;
        opts.extra_cds = vec![iso.clone()];
        opts
    };
    with_appliance(opts, |vm| {
        vm.wait_for_serial("test control channel on", BOOT).unwrap();
        // Two root directories from the template, one per container.
        sh(
            vm,
            "ct-unpack",
            &format!(
                "exec >/dev/console 2>&1; set -e; mkdir -p {MEDIA} /run/ct; \
                 mount -t iso9660 -o ro LABEL={LABEL} {MEDIA}; \
                 {CTR} unpack {MEDIA}/{name} /run/ct/root-300; \
                 {CTR} unpack {MEDIA}/{name} /run/ct/root-301; \
                 echo templates unpacked"
            ),
        );

        // 1. Limits. The test init replaces the guest's /sbin/init.
        let config = "arch: amd64\nhostname: limits\nmemory: 64\nswap: 0\nostype: debian\n\
                      unprivileged: 1\nrootfs: local:rootdir/300\nlxc.cgroup2.pids.max: 24\n";
        sh(
            vm,
            "ct-limits-setup",
            &format!(
                "set -e; printf '%s' '{config}' > /run/ct/300.conf; \
                 rm -f /run/ct/root-300/sbin/init; \
                 cat > /run/ct/root-300/sbin/init <<'EOF'\n{LIMITS_INIT}EOF\n\
                 chmod 755 /run/ct/root-300/sbin/init"
            ),
        );
        let start = |vmid: u32| {
            format!(
                "exec {CTR} start --config /run/ct/{vmid}.conf --rootfs /run/ct/root-{vmid} \
                 --socket /run/ct/{vmid}.sock --console-log /run/ct/{vmid}.console \
                 --shutdown-timeout 60"
            )
        };
        vm.run_unit("ct-300", &["/bin/sh", "-c", &start(300)])
            .unwrap();
        // The limits, read from the appliance while the container runs.
        sh(
            vm,
            "ct-limits-read",
            "for i in $(seq 300); do grep -q forks= /run/ct/300.console 2>/dev/null && break; \
             sleep 1; done; \
             echo \"LIMITS memory.max=$(cat /sys/fs/cgroup/oxbow/ct-300/memory.max) \
             swap.max=$(cat /sys/fs/cgroup/oxbow/ct-300/memory.swap.max) \
             pids.max=$(cat /sys/fs/cgroup/oxbow/ct-300/pids.max)\" >/dev/console; \
             touch /run/ct/root-300/oxbow-go",
        );
        let end = vm.wait_unit_stopped("ct-300", STEP).unwrap();
        sh(
            vm,
            "ct-limits-show",
            "exec >/dev/console; sed 's/^/CONSOLE-300 /' /run/ct/300.console",
        );
        let serial = vm.serial();
        let limits = serial
            .lines()
            .find(|l| l.starts_with("LIMITS "))
            .unwrap_or_default();
        assert!(
            limits.contains("memory.max=67108864")
                && limits.contains("swap.max=0")
                && limits.contains("pids.max=24"),
            "the limits in oxbow/ct-300: {limits:?}"
        );
        let ct_line = |key: &str| {
            serial
                .lines()
                .filter_map(|l| l.strip_prefix("CONSOLE-300 OXBOW-CT "))
                .find(|l| l.starts_with(key))
                .unwrap_or_default()
                .trim_end_matches('\r')
                .to_string()
        };
        let forks = ct_line("forks=");
        let count: u32 = forks
            .strip_prefix("forks=")
            .and_then(|r| r.split_whitespace().next())
            .and_then(|n| n.parse().ok())
            .unwrap_or(u32::MAX);
        assert!(
            count < 24 && forks.contains("fork"),
            "fork under pids.max=24: {forks:?}"
        );
        assert_eq!(
            ct_line("eater-status="),
            "eater-status=137",
            "the memory eater was not killed by SIGKILL (OOM)"
        );
        assert_eq!(ct_line("done"), "done");
        eprintln!("{limits}; {forks}; OOM kill of the eater: status 137");
        assert_eq!(end.code, Some(0), "ctr start: {}", end.how);

        // 2. The template's own systemd, to its login prompt.
        let config = "arch: amd64\nhostname: deb301\nmemory: 512\nswap: 0\nostype: debian\n\
                      unprivileged: 1\nrootfs: local:rootdir/301\n";
        sh(
            vm,
            "ct-deb-setup",
            &format!("printf '%s' '{config}' > /run/ct/301.conf"),
        );
        vm.run_unit("ct-301", &["/bin/sh", "-c", &start(301)])
            .unwrap();
        sh(
            vm,
            "ct-deb-wait",
            "for i in $(seq 240); do grep -q 'deb301 login:' /run/ct/301.console 2>/dev/null \
             && exit 0; sleep 1; done; exit 1",
        );
        sh(
            vm,
            "ct-deb-stop",
            &format!("exec >/dev/console 2>&1; {CTR} ctl /run/ct/301.sock shutdown"),
        );
        let end = vm.wait_unit_stopped("ct-301", STEP).unwrap();
        sh(
            vm,
            "ct-deb-show",
            "exec >/dev/console; sed 's/^/CONSOLE-301 /' /run/ct/301.console; \
             test ! -e /sys/fs/cgroup/oxbow/ct-301 && echo CT-301-CGROUP-GONE",
        );
        let serial = vm.serial();
        let console: Vec<&str> = serial
            .lines()
            .filter(|l| l.starts_with("CONSOLE-301 "))
            .collect();
        assert!(
            console.iter().any(|l| l.contains("deb301 login:")),
            "no login prompt"
        );
        assert!(
            !console.iter().any(|l| l.contains("FAILED")),
            "a unit failed in the Debian container"
        );
        assert_eq!(end.code, Some(0), "ctr start (Debian): {}", end.how);
        assert!(
            serial.contains("CT-301-CGROUP-GONE"),
            "the container's cgroup was left behind"
        );
    });
}
