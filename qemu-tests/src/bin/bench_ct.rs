//! Container start benchmark: Oxbow's `ctr` against `lxc-start -F`
//! (Debian's lxc) and a bare namespaces + `pivot_root` floor, side by side
//! (`bench-ct-run` describes one run and the configurations).
//!
//! - On the host, if it has `lxc-start`: both configurations, privileged
//!   with no network and unprivileged with the id map and a veth on a
//!   bridge (a host whose cgroup v2 has no controllers, like the
//!   development and CI machines, gives neither side limits).
//! - In the appliance (`target/oxbow-bench-peers.iso`, the product image
//!   plus Debian's lxc, ifupdown2 and busybox-static), booted under QEMU:
//!   both configurations, privileged with no network and unprivileged with
//!   the id map, a veth on a bridge and cgroup v2 limits. ctr is the
//!   appliance's own `/usr/lib/oxbow/ctr`; `lxc-start` comes from the same
//!   system image, so both run on the same kernel and cgroup tree.
//!
//! Usage: `bench-ct [--runs N] [--appliance-runs N] [--iso PATH]
//! [--runner PATH] [--ctr PATH] [--appliance-ctr PATH] [--also-ctr LABEL=PATH]
//! [--no-host] [--no-appliance]`
//! (`--appliance-ctr` runs that ctr binary in the appliance instead of the
//! image's own, to try a change without building the image again;
//! `--also-ctr` adds a second ctr build as a fourth side, on the host and
//! in the appliance, to compare two versions within one run)
//! (`make bench-ct` builds everything first).

use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

use anyhow::{bail, Context, Result};
use qemu_tests::bench::{
    bootstrap_interval, median, median_of_ratios, ratio_of_medians, shell_quote, tagged_json,
    BenchAppliance, CD_MOUNT,
};
use qemu_tests::target_dir;
use serde_json::Value;

fn main() -> Result<()> {
    let bins = target_dir().join("x86_64-unknown-linux-gnu/release");
    let mut runs = 20usize;
    let mut appliance_runs = 20usize;
    let mut iso = target_dir().join("oxbow-bench-peers.iso");
    let mut runner = bins.join("bench-ct-run");
    // The shipped ctr (Makefile: its own build profile).
    let mut ctr = target_dir().join("image-bins/ctr");
    let mut appliance_ctr: Option<PathBuf> = None;
    let mut also_ctr: Option<(String, PathBuf)> = None;
    let mut host = true;
    let mut appliance = true;
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        let mut v = || args.next().with_context(|| format!("{a} needs a value"));
        match a.as_str() {
            "--runs" => runs = v()?.parse()?,
            "--appliance-runs" => appliance_runs = v()?.parse()?,
            "--iso" => iso = PathBuf::from(v()?),
            "--runner" => runner = PathBuf::from(v()?),
            "--ctr" => ctr = PathBuf::from(v()?),
            "--appliance-ctr" => appliance_ctr = Some(PathBuf::from(v()?)),
            "--also-ctr" => {
                let value = v()?;
                let (label, path) = value.split_once('=').context("--also-ctr LABEL=PATH")?;
                also_ctr = Some((label.to_string(), PathBuf::from(path)));
            }
            "--no-host" => host = false,
            "--no-appliance" => appliance = false,
            other => bail!("unknown argument {other}"),
        }
    }
    let mut results: Vec<(String, Value)> = Vec::new();
    if host {
        if Command::new("lxc-start").arg("--version").output().is_ok() {
            for config in ["privileged", "unprivileged"] {
                println!("== on the host: {config} ==");
                let out = Command::new(&runner)
                    .args(["--config", config, "--runs", &runs.to_string()])
                    .arg("--ctr")
                    .arg(&ctr)
                    .args(also_ctr.iter().flat_map(|(label, path)| {
                        [
                            "--also-ctr".to_string(),
                            format!("{label}={}", path.display()),
                        ]
                    }))
                    .args(["--work", "/var/tmp/oxbow-bench-ct"])
                    .output()
                    .with_context(|| format!("running {}", runner.display()))?;
                let text = String::from_utf8_lossy(&out.stdout).into_owned();
                print!("{text}");
                if !out.status.success() {
                    bail!(
                        "bench-ct-run on the host failed:\n{}",
                        String::from_utf8_lossy(&out.stderr)
                    );
                }
                results.push(("host".into(), tagged_json(&text, "BENCH-CT")?));
            }
        } else {
            println!("the host has no lxc-start (apt-get install lxc): host row skipped");
        }
    }
    if appliance {
        let mut files = vec![(runner.clone(), "bench-ct-run")];
        if let Some(c) = &appliance_ctr {
            files.push((c.clone(), "ctr"));
        }
        if let Some((_, c)) = &also_ctr {
            files.push((c.clone(), "also-ctr"));
        }
        let mut vm = BenchAppliance::boot(&iso, &files)?;
        let mut ctr_arg = if appliance_ctr.is_some() {
            format!(" --ctr {CD_MOUNT}/ctr")
        } else {
            String::new()
        };
        if let Some((label, _)) = &also_ctr {
            ctr_arg += &format!(" --also-ctr {}={CD_MOUNT}/also-ctr", shell_quote(label));
        }
        for config in ["privileged", "unprivileged"] {
            println!("== in the appliance: {config} ==");
            let cmd = format!(
                "{CD_MOUNT}/bench-ct-run --config {} --runs {appliance_runs}{ctr_arg}",
                shell_quote(config)
            );
            let out = vm.run(&cmd, Duration::from_secs(3600))?;
            for l in out.lines().filter(|l| {
                l.starts_with("warm-up")
                    || l.starts_with("round")
                    || l.starts_with("medians")
                    || l.starts_with("bench-ct-run")
                    || l.starts_with("one exec")
                    || l.starts_with("phase")
                    || l.starts_with("also")
            }) {
                println!("{l}");
            }
            results.push(("appliance".into(), tagged_json(&out, "BENCH-CT")?));
        }
    }
    println!(
        "\nwhere        configuration  runs  ours ms  lxc-start ms  floor ms  ours/lxc  \
         ours/floor [95%]     per round [95%]      goal (<=0.8 lxc, <=1.5 floor)"
    );
    for (place, v) in &results {
        let series = |k: &str| -> Vec<f64> {
            v[k].as_array()
                .map(|a| a.iter().filter_map(Value::as_f64).collect())
                .unwrap_or_default()
        };
        let (ours, lxc, floor) = (series("ours_ms"), series("lxc_ms"), series("floor_ms"));
        let (o, l, f) = (median(&ours), median(&lxc), median(&floor));
        // The goal is judged on the ratio of the medians; the rounds' own
        // ratios and their median are shown beside it. The bracketed
        // ranges are 95% bootstrap intervals over the rounds
        // (`bootstrap_interval`): "met" means the estimate is under the
        // goal, "clearly" that the whole interval is.
        let (rf_lo, rf_hi) = bootstrap_interval(&ours, &floor, 2000, ratio_of_medians);
        let (pr_lo, pr_hi) = bootstrap_interval(&ours, &floor, 2000, median_of_ratios);
        let (_, rl_hi) = bootstrap_interval(&ours, &lxc, 2000, ratio_of_medians);
        let judge = |est: f64, hi: f64, goal: f64| match (est <= goal, hi <= goal) {
            (true, true) => "clearly met",
            (true, false) => "met",
            (false, _) => "not met",
        };
        println!(
            "{place:<12} {:<14} {:>4}  {o:>7.2}  {l:>12.2}  {f:>8.2}  {:>8.2}  \
             {:>5.2} [{rf_lo:.2}-{rf_hi:.2}]  {:>5.2} [{pr_lo:.2}-{pr_hi:.2}]  \
             lxc {}, floor {}",
            v["config"].as_str().unwrap_or("?"),
            v["runs"],
            o / l,
            o / f,
            median_of_ratios(&ours, &floor),
            judge(o / l, rl_hi, 0.8),
            judge(o / f, rf_hi, 1.5),
        );
    }
    Ok(())
}
