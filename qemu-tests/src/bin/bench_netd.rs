//! Network reconcile benchmark: `netd interfaces apply` against
//! ifupdown2's `ifreload -a` on the same interfaces file, from a cold
//! start, inside the appliance (`target/oxbow-bench-peers.iso`, the product
//! image plus Debian's lxc, ifupdown2 and busybox-static): the host's
//! kernel has neither 802.1Q nor VLAN filtering. `bench-netd-run`
//! describes the file, the cold start and the state check.
//!
//! Usage: `bench-netd [--runs N] [--bridges N] [--iso PATH] [--runner PATH]`
//! (`make bench-netd` builds everything first).

use std::path::PathBuf;
use std::time::Duration;

use anyhow::{bail, Context, Result};
use qemu_tests::bench::{median, tagged_json, BenchAppliance, CD_MOUNT};
use qemu_tests::target_dir;
use serde_json::Value;

fn main() -> Result<()> {
    let mut runs = 5usize;
    let mut bridges = 100usize;
    let mut iso = target_dir().join("oxbow-bench-peers.iso");
    let mut runner = target_dir().join("x86_64-unknown-linux-gnu/release/bench-netd-run");
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        let mut v = || args.next().with_context(|| format!("{a} needs a value"));
        match a.as_str() {
            "--runs" => runs = v()?.parse()?,
            "--bridges" => bridges = v()?.parse()?,
            "--iso" => iso = PathBuf::from(v()?),
            "--runner" => runner = PathBuf::from(v()?),
            other => bail!("unknown argument {other}"),
        }
    }
    let mut vm = BenchAppliance::boot(&iso, &[(runner, "bench-netd-run")])?;
    let out = vm.run(
        &format!("{CD_MOUNT}/bench-netd-run --runs {runs} --bridges {bridges}"),
        Duration::from_secs(3600),
    )?;
    for l in out.lines().filter(|l| {
        [
            "bench-netd-run",
            "kernel state",
            "warm-up",
            "round",
            "medians",
            "  ",
        ]
        .iter()
        .any(|p| l.starts_with(p))
            || l.ends_with("(first run):")
    }) {
        println!("{l}");
    }
    let v = tagged_json(&out, "BENCH-NETD")?;
    let ms = |k: &str| -> f64 {
        let xs: Vec<f64> = v[k]
            .as_array()
            .map(|a| a.iter().filter_map(Value::as_f64).collect())
            .unwrap_or_default();
        median(&xs)
    };
    let (n, i) = (ms("netd_ms"), ms("ifreload_ms"));
    println!(
        "\n{} links from cold, medians of {}: netd {n:.0} ms, ifreload -a {i:.0} ms (ifupdown2 {}): \
         netd/ifreload {:.3} (goal <= 0.2: {})",
        v["links"],
        v["runs"],
        v["ifupdown2"].as_str().unwrap_or("?"),
        n / i,
        if n / i <= 0.2 { "met" } else { "not met" }
    );
    Ok(())
}
