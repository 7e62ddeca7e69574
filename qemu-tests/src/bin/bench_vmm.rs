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
//! [--vmm PATH] [--iso PATH] [--bench-run PATH]` (`make bench-vmm` builds
//! everything first):
//! - `--only` keeps the sides whose label contains TEXT;
//! - `--cmdline` replaces the guest's command line;
//! - `--echo` prints each run's guest console, every line with its time
//!   since the VMM's start;
//! - `--vmm` runs that vmm binary, from the benchmark CD, as `oxbow`, and
//!   the image's own beside it as `oxbow-image`, so a change is compared
//!   within one run;
//! - `--kernel-cache` adds two bzImage sides for each Oxbow binary: with
//!   `vmm --kernel-cache` on an empty directory every run (`-unpack`: the
//!   VMM unpacks the payload itself, a VM's first boot of that kernel) and
//!   on a directory filled before timing (`-cached`: every later boot).

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::{bail, Context, Result};
use qemu_tests::bench::{
    median, oxbow_argv, qemu_argv, shell_command, BenchAppliance, GuestSpec, CD_MOUNT, VMM,
};
use qemu_tests::guest::GuestAssets;
use qemu_tests::target_dir;
use serde_json::Value;

const RUN: Duration = Duration::from_secs(400);
/// bench-run's limit for one VMM to reach the marker.
const MARKER_TIMEOUT: u64 = 180;
const GUEST_MIB: u32 = 256;
const CMDLINE: &str = "console=ttyS0 quiet panic=-1";
const MARKER: &str = "OXBOW-GUEST start";
/// `--kernel-cache`: the directory emptied before every `-unpack` run and
/// the one filled before timing for the `-cached` runs (each with the Oxbow
/// side's name appended).
const COLD_CACHE: &str = "/run/bench-kcache-cold";
const WARM_CACHE: &str = "/run/bench-kcache-warm";

fn main() -> Result<()> {
    let mut runs = 3usize;
    let mut iso = target_dir().join("oxbow-bench.iso");
    let mut bench_run = target_dir().join("x86_64-unknown-linux-gnu/release/bench-run");
    let mut only: Option<String> = None;
    let mut cmdline = CMDLINE.to_string();
    let mut echo = false;
    let mut vmm: Option<PathBuf> = None;
    let mut kernel_cache = false;
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        match a.as_str() {
            "--runs" => runs = args.next().context("--runs N")?.parse()?,
            "--only" => only = Some(args.next().context("--only TEXT")?),
            "--cmdline" => cmdline = args.next().context("--cmdline TEXT")?,
            "--echo" => echo = true,
            "--kernel-cache" => kernel_cache = true,
            "--vmm" => vmm = Some(PathBuf::from(args.next().context("--vmm PATH")?)),
            "--iso" => iso = PathBuf::from(args.next().context("--iso PATH")?),
            "--bench-run" => bench_run = PathBuf::from(args.next().context("--bench-run PATH")?),
            other => bail!("unknown argument {other}"),
        }
    }
    if !iso.exists() {
        bail!("{} does not exist: run `make bench-vmm`", iso.display());
    }
    if !bench_run.is_file() {
        bail!(
            "{} does not exist: run `make bench-vmm`",
            bench_run.display()
        );
    }
    let assets = GuestAssets::locate()?;
    let mut files = vec![(bench_run, "bench-run")];
    if let Some(v) = &vmm {
        files.push((v.clone(), "vmm"));
    }
    let mut vm = BenchAppliance::boot_with(&iso, &files, vec![assets.iso.clone()], Vec::new())?;
    let qemu_version = vm.prepare_guest_media()?;
    println!("QEMU in the appliance: {qemu_version}");

    let cd_vmm = format!("{CD_MOUNT}/vmm");
    let oxbows: Vec<(&str, &str)> = if vmm.is_some() {
        vec![("oxbow", cd_vmm.as_str()), ("oxbow-image", VMM)]
    } else {
        vec![("oxbow", VMM)]
    };
    let mut sides: Vec<(String, Vec<String>)> = Vec::new();
    // Our sides of each kernel format, for the summary.
    let mut ours: BTreeMap<&str, Vec<String>> = BTreeMap::new();
    for (fmt, kernel) in [("bzImage", "vmlinuz"), ("pvh", "vmlinux")] {
        let g = GuestSpec::from_assets(kernel, &cmdline, GUEST_MIB);
        for (name, path) in &oxbows {
            let mut argv = oxbow_argv(&g, &[]);
            argv[0] = path.to_string();
            let mut variants = vec![(name.to_string(), argv.clone())];
            if kernel_cache && fmt == "bzImage" {
                for (suffix, dir) in [("unpack", COLD_CACHE), ("cached", WARM_CACHE)] {
                    let mut a = argv.clone();
                    a.extend(["--kernel-cache".into(), format!("{dir}-{name}")]);
                    variants.push((format!("{name}-{suffix}"), a));
                }
            }
            for (label, argv) in variants {
                ours.entry(fmt).or_default().push(label.clone());
                sides.push((format!("{label} {fmt}"), argv));
            }
        }
        sides.push((format!("qemu-q35 {fmt}"), qemu_argv("q35", &g, &[])));
        sides.push((format!("qemu-microvm {fmt}"), qemu_argv("microvm", &g, &[])));
    }

    if let Some(only) = &only {
        sides.retain(|(label, _)| label.contains(only.as_str()));
        if sides.is_empty() {
            bail!("--only {only}: no side's label contains it");
        }
    }
    // The `-cached` sides' directories are filled before timing.
    for (label, cmd) in sides.iter().filter(|(l, _)| l.contains("-cached ")) {
        let (e, _) = vm.run_status(&format!("exec {} >/dev/null", shell_command(cmd)), RUN)?;
        if e.code != Some(0) {
            bail!("{label}: filling the kernel cache failed ({})", e.how);
        }
    }
    let mut results: BTreeMap<String, Vec<Value>> = BTreeMap::new();
    let mut n = 0;
    for round in 1..=runs {
        let mut order = sides.clone();
        order.rotate_left((round - 1) % sides.len());
        for (label, cmd) in &order {
            n += 1;
            let mut argv: Vec<String> = vec![
                format!("{CD_MOUNT}/bench-run"),
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
            // An `-unpack` side starts from an empty cache every run.
            let clear = match argv.iter().find(|a| a.starts_with(COLD_CACHE)) {
                Some(dir) => format!("rm -rf {dir}; "),
                None => String::new(),
            };
            let (e, console) =
                vm.run_status(&format!("{clear}exec {}", shell_command(&argv)), RUN)?;
            let line = console
                .lines()
                .find_map(|l| l.split_once("BENCH ").map(|(_, j)| j.trim().to_string()));
            let Some(line) = line else {
                bail!("{label} (run {n}): no BENCH line ({})", e.how);
            };
            let v: Value =
                serde_json::from_str(&line).with_context(|| format!("parsing {line}"))?;
            if echo {
                for l in console.lines().filter(|l| l.contains(" ms | ")) {
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
        let v: Vec<f64> = results
            .get(label)
            .into_iter()
            .flatten()
            .filter_map(|r| r[key].as_f64())
            .collect();
        median(&v)
    };
    println!("\nmedians of {runs} (2 vCPUs, {GUEST_MIB} MiB, nested KVM inside the appliance under QEMU TCG):");
    for fmt in ["bzImage", "pvh"] {
        for name in ours.get(fmt).into_iter().flatten() {
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
