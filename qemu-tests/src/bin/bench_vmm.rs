//! VMM benchmark: Oxbow's `vmm` against QEMU (`-enable-kvm`, q35 and
//! microvm), side by side in one environment: nested, inside the appliance
//! booted under QEMU. The appliance is the benchmark variant of the ISO
//! (`target/oxbow-bench.iso`, which adds Debian's `qemu-system-x86`).
//!
//! Each side boots the same kernel (bzImage, then the PVH `vmlinux`) and
//! initramfs (`make guest`) with 2 vCPUs and 256 MiB, under `bench-run`,
//! which times VMM start → the guest's first userspace line
//! (`OXBOW-GUEST start`) and reads the VMM's memory at that moment: total
//! RSS minus the RSS of guest RAM is the VMM's overhead. The guest files
//! are read once before timing, so no side pays the CD; sides alternate
//! within each round, in an order rotated every round; medians are
//! compared. A VMM that shows no marker within [`MARKER_TIMEOUT`] is
//! killed and counts as a missing sample.
//!
//! Usage: `bench-vmm [--runs N] [--only TEXT] [--cmdline TEXT] [--echo]
//! [--vmm PATH] [--iso PATH] [--bench-run PATH]` (`--vmm` runs that vmm
//! binary, from the benchmark CD, as `oxbow`, and the image's own beside it
//! as `oxbow-image`; `--only` keeps the sides whose label
//! contains TEXT; `--cmdline` replaces the guest's command line; `--echo`
//! prints each run's guest console, every line with its time since the
//! VMM's start)
//! (`make bench-vmm` builds everything first).

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

use anyhow::{bail, Context, Result};
use qemu_tests::guest::GuestAssets;
use qemu_tests::{target_dir, Appliance, BootOptions, Firmware};
use serde_json::Value;

const BOOT: Duration = Duration::from_secs(600);
const RUN: Duration = Duration::from_secs(400);
/// bench-run's limit for one VMM to reach the marker.
const MARKER_TIMEOUT: u64 = 180;
const GUEST_MIB: u64 = 256;
const CMDLINE: &str = "console=ttyS0 quiet panic=-1";
const MARKER: &str = "OXBOW-GUEST start";

fn main() -> Result<()> {
    let mut runs = 3usize;
    let mut iso = target_dir().join("oxbow-bench.iso");
    let mut bench_run = target_dir().join("x86_64-unknown-linux-gnu/release/bench-run");
    let mut only: Option<String> = None;
    let mut cmdline = CMDLINE.to_string();
    let mut echo = false;
    let mut vmm: Option<PathBuf> = None;
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        match a.as_str() {
            "--runs" => runs = args.next().context("--runs N")?.parse()?,
            "--only" => only = Some(args.next().context("--only TEXT")?),
            "--cmdline" => cmdline = args.next().context("--cmdline TEXT")?,
            "--echo" => echo = true,
            "--vmm" => vmm = Some(PathBuf::from(args.next().context("--vmm PATH")?)),
            "--iso" => iso = PathBuf::from(args.next().context("--iso PATH")?),
            "--bench-run" => bench_run = PathBuf::from(args.next().context("--bench-run PATH")?),
            other => bail!("unknown argument {other}"),
        }
    }
    if !iso.exists() {
        bail!("{} does not exist: run `make bench-vmm`", iso.display());
    }
    let assets = GuestAssets::locate()?;
    let work = tempfile::tempdir()?;
    let cd_dir = work.path().join("cd");
    std::fs::create_dir_all(&cd_dir)?;
    std::fs::copy(&bench_run, cd_dir.join("bench-run"))
        .with_context(|| format!("copying {}", bench_run.display()))?;
    if let Some(v) = &vmm {
        std::fs::copy(v, cd_dir.join("vmm")).with_context(|| format!("copying {}", v.display()))?;
    }
    // With --vmm, that binary is "oxbow" and the image's own runs beside
    // it as "oxbow-image", so a change is compared in the same run.
    let mut oxbows = vec![("oxbow", "/usr/lib/oxbow/vmm")];
    if vmm.is_some() {
        oxbows = vec![
            ("oxbow", "/run/b/vmm"),
            ("oxbow-image", "/usr/lib/oxbow/vmm"),
        ];
    }
    let bench_iso = work.path().join("bench.iso");
    let out = Command::new("xorriso")
        .args(["-as", "mkisofs", "-quiet", "-r", "-V", "OXBOW-BENCH", "-o"])
        .arg(&bench_iso)
        .arg(&cd_dir)
        .output()?;
    if !out.status.success() {
        bail!("xorriso: {}", String::from_utf8_lossy(&out.stderr));
    }

    // The harness boots the ISO named by OXBOW_ISO.
    std::env::set_var("OXBOW_ISO", &iso);
    let mut opts = BootOptions::new(Firmware::Direct("oxbow.testctl".into()));
    opts.test_channel = true;
    opts.cpus = 2;
    opts.memory_mib = 2048;
    opts.extra_cds = vec![assets.iso.clone(), bench_iso];
    let mut vm = Appliance::boot(opts)?;
    vm.wait_for_serial("test control channel on", BOOT)?;
    let prep = "exec >/dev/console 2>&1; set -e; mkdir -p /run/g /run/b; \
                mount -t iso9660 -o ro LABEL=OXBOW-GUEST /run/g; \
                mount -t iso9660 -o ro LABEL=OXBOW-BENCH /run/b; \
                command -v qemu-system-x86_64; \
                qemu-system-x86_64 --version | head -1; \
                cat /run/g/* /run/b/* /usr/lib/oxbow/vmm \
                    \"$(command -v qemu-system-x86_64)\" >/dev/null";
    vm.run_unit("bench-prep", &["/bin/sh", "-c", prep])?;
    let e = vm.wait_unit_stopped("bench-prep", RUN)?;
    if e.code != Some(0) {
        bail!(
            "preparing the appliance failed ({}): is qemu-system-x86 in the ISO?",
            e.how
        );
    }

    let qemu_common = |machine: &str, kernel: &str| -> Vec<String> {
        [
            "qemu-system-x86_64",
            "-enable-kvm",
            "-cpu",
            "host",
            "-M",
            machine,
            "-m",
            "256",
            "-smp",
            "2",
            "-nodefaults",
            "-no-user-config",
            "-display",
            "none",
            "-serial",
            "stdio",
            "-no-reboot",
            "-kernel",
            kernel,
            "-initrd",
            "/run/g/initrd.img",
            "-append",
            cmdline.as_str(),
        ]
        .iter()
        .map(|s| s.to_string())
        .collect()
    };
    let oxbow = |vmm_path: &str, kernel: &str| -> Vec<String> {
        [
            vmm_path,
            "--kernel",
            kernel,
            "--initrd",
            "/run/g/initrd.img",
            "--cmdline",
            cmdline.as_str(),
            "--cpus",
            "2",
            "--memory",
            "256",
            "--serial",
            "stdio",
            "--no-rng",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect()
    };
    let mut sides: Vec<(String, Vec<String>)> = Vec::new();
    for (fmt, kernel) in [("bzImage", "/run/g/vmlinuz"), ("pvh", "/run/g/vmlinux")] {
        for (name, path) in &oxbows {
            sides.push((format!("{name} {fmt}"), oxbow(path, kernel)));
        }
        sides.push((format!("qemu-q35 {fmt}"), qemu_common("q35", kernel)));
        sides.push((
            format!("qemu-microvm {fmt}"),
            qemu_common("microvm", kernel),
        ));
    }

    if let Some(only) = &only {
        sides.retain(|(label, _)| label.contains(only.as_str()));
        if sides.is_empty() {
            bail!("--only {only}: no side's label contains it");
        }
    }
    let mut results: BTreeMap<String, Vec<Value>> = BTreeMap::new();
    let mut n = 0;
    for round in 1..=runs {
        let mut order = sides.clone();
        order.rotate_left((round - 1) % sides.len());
        for (label, cmd) in &order {
            n += 1;
            let unit = format!("bench-{n}");
            let mut argv: Vec<String> = vec![
                "/run/b/bench-run".into(),
                "--label".into(),
                label.clone(),
                "--marker".into(),
                MARKER.into(),
                "--guest-mib".into(),
                GUEST_MIB.to_string(),
                "--timeout".into(),
                MARKER_TIMEOUT.to_string(),
            ];
            if echo {
                argv.push("--echo".into());
            }
            argv.push("--".into());
            argv.extend(cmd.iter().cloned());
            let script = format!(
                "exec >/dev/console 2>&1; exec {}",
                argv.iter()
                    .map(|a| shell_quote(a))
                    .collect::<Vec<_>>()
                    .join(" ")
            );
            let before = vm.serial().len();
            vm.run_unit(&unit, &["/bin/sh", "-c", &script])?;
            let e = vm.wait_unit_stopped(&unit, RUN)?;
            let console = vm.serial();
            let line = console
                .get(before..)
                .unwrap_or_default()
                .lines()
                .find_map(|l| l.split_once("BENCH ").map(|(_, j)| j.trim().to_string()));
            let Some(line) = line else {
                vm.show_unit_log(&unit);
                bail!("{label}: no BENCH line ({})", e.how);
            };
            let v: Value =
                serde_json::from_str(&line).with_context(|| format!("parsing {line}"))?;
            if echo {
                let console = vm.serial();
                for l in console
                    .get(before..)
                    .unwrap_or_default()
                    .lines()
                    .filter(|l| l.contains(" ms | "))
                {
                    println!("  {label}: {l}");
                }
            }
            if v["marker_ms"].is_null() {
                println!("round {round} {label:<22} no marker within {MARKER_TIMEOUT} s: a missing sample");
                continue;
            }
            println!(
                "round {round} {label:<22} marker {:>7.0} ms  exit {:>7.0} ms  rss {:>6} KiB  guest {:>6} KiB  overhead {:>6} KiB",
                v["marker_ms"].as_f64().unwrap_or(f64::NAN),
                v["exit_ms"].as_f64().unwrap_or(f64::NAN),
                v["rss_kib"],
                v["guest_rss_kib"],
                v["overhead_kib"]
            );
            results.entry(label.clone()).or_default().push(v);
        }
    }
    let med = |label: &str, key: &str| -> f64 {
        let mut v: Vec<f64> = results
            .get(label)
            .into_iter()
            .flatten()
            .filter_map(|r| r[key].as_f64())
            .collect();
        median(&mut v)
    };
    println!("\nmedians of {runs} (2 vCPUs, {GUEST_MIB} MiB, nested KVM inside the appliance under QEMU TCG):");
    for fmt in ["bzImage", "pvh"] {
        for (name, _) in &oxbows {
            let o = format!("{name} {fmt}");
            let (om, oo) = (med(&o, "marker_ms"), med(&o, "overhead_kib"));
            println!(
                "  {o:<22} start->userspace {om:>7.0} ms   overhead {:>7.1} MiB",
                oo / 1024.0
            );
            for peer in ["qemu-q35", "qemu-microvm"] {
                let p = format!("{peer} {fmt}");
                let (pm, po) = (med(&p, "marker_ms"), med(&p, "overhead_kib"));
                println!(
                    "  {p:<22} start->userspace {pm:>7.0} ms   overhead {:>7.1} MiB   {name}/peer: time {:.2}, overhead {:.2}",
                    po / 1024.0,
                    om / pm,
                    oo / po
                );
            }
        }
    }
    Ok(())
}

fn median(v: &mut [f64]) -> f64 {
    if v.is_empty() {
        return f64::NAN;
    }
    v.sort_by(|a, b| a.total_cmp(b));
    let m = v.len() / 2;
    if v.len() % 2 == 1 {
        v[m]
    } else {
        (v[m - 1] + v[m]) / 2.0
    }
}

fn shell_quote(s: &str) -> String {
    format!("'{}'", s.replace('\'', "'\\''"))
}
