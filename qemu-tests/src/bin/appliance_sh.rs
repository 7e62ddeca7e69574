//! `appliance-sh`: boots a benchmark image with init's test channel and
//! runs shell scripts in it one after the other, printing what each wrote
//! to the console: for measuring a step by hand inside the appliance
//! (what a benchmark's breakdown does not show), not for tests.
//!
//! ```text
//! appliance-sh [--iso PATH] [--file PATH=NAME]... [--timeout SECS] SCRIPT...
//! ```
//!
//! `--iso` defaults to `target/oxbow-bench-peers.iso`; each `--file` is put
//! on the benchmark CD as NAME, mounted at `/run/b` before the first
//! script. Every script runs with `/bin/sh -c` as a transient unit; a
//! failing script is reported and the next one still runs.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{bail, Context, Result};
use qemu_tests::bench::BenchAppliance;
use qemu_tests::target_dir;

fn main() -> ExitCode {
    match run() {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::FAILURE,
        Err(e) => {
            eprintln!("appliance-sh: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn run() -> Result<bool> {
    let mut iso = target_dir().join("oxbow-bench-peers.iso");
    let mut files: Vec<(PathBuf, String)> = Vec::new();
    let mut timeout = Duration::from_secs(600);
    let mut scripts = Vec::new();
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        let mut v = || args.next().with_context(|| format!("{a} needs a value"));
        match a.as_str() {
            "--iso" => iso = PathBuf::from(v()?),
            "--file" => {
                let value = v()?;
                let (path, name) = value.split_once('=').context("--file PATH=NAME")?;
                files.push((PathBuf::from(path), name.to_string()));
            }
            "--timeout" => timeout = Duration::from_secs(v()?.parse().context("--timeout")?),
            other if other.starts_with("--") => bail!("unknown argument {other}"),
            _ => scripts.push(a),
        }
    }
    if scripts.is_empty() {
        bail!("usage: appliance-sh [--iso PATH] [--file PATH=NAME]... [--timeout SECS] SCRIPT...");
    }
    let files: Vec<(PathBuf, &str)> = files.iter().map(|(p, n)| (p.clone(), n.as_str())).collect();
    let mut vm = BenchAppliance::boot(&iso, &files)?;
    let mut ok = true;
    for script in &scripts {
        println!("== {script}");
        let (exit, out) = vm.run_status(script, timeout)?;
        print!("{out}");
        if exit.code != Some(0) {
            println!("== failed: {}", exit.how);
            ok = false;
        }
    }
    Ok(ok)
}
