//! Running a benchmark program inside the appliance: the benchmark ISO
//! booted directly with init's test channel, a CD labelled
//! `OXBOW-BENCH` carrying the program (mounted at `/run/b`), and each
//! run a transient unit whose output goes to the serial console, from
//! which the caller picks its result lines.

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{bail, Context, Result};

use crate::{Appliance, BootOptions, Firmware};

/// Where the benchmark CD is mounted inside the appliance.
pub const CD_MOUNT: &str = "/run/b";

const BOOT: Duration = Duration::from_secs(600);

/// A booted benchmark appliance.
pub struct BenchAppliance {
    vm: Appliance,
    _work: tempfile::TempDir,
    units: usize,
}

impl BenchAppliance {
    /// Boots `iso` with a CD holding `files` (host path, name on the CD),
    /// waits for the test channel and mounts the CD on [`CD_MOUNT`].
    pub fn boot(iso: &Path, files: &[(PathBuf, &str)]) -> Result<BenchAppliance> {
        if !iso.exists() {
            bail!("{} does not exist", iso.display());
        }
        let work = tempfile::tempdir()?;
        let cd = work.path().join("bench.iso");
        let grafts: Vec<(&str, &Path)> = files
            .iter()
            .map(|(from, name)| (*name, from.as_path()))
            .collect();
        crate::make_data_iso(&cd, "OXBOW-BENCH", &grafts)?;
        // The harness boots the ISO named by OXBOW_ISO.
        std::env::set_var("OXBOW_ISO", iso);
        let mut opts = BootOptions::new(Firmware::Direct("oxbow.testctl".into()));
        opts.test_channel = true;
        opts.cpus = 2;
        opts.memory_mib = 2048;
        opts.extra_cds = vec![cd];
        let mut vm = Appliance::boot(opts)?;
        vm.wait_for_serial("test control channel on", BOOT)?;
        let mut b = BenchAppliance {
            vm,
            _work: work,
            units: 0,
        };
        b.run(
            "mkdir -p /run/b && mount -t iso9660 -o ro LABEL=OXBOW-BENCH /run/b",
            Duration::from_secs(120),
        )
        .context("mounting the benchmark CD")?;
        Ok(b)
    }

    /// Runs `script` with `/bin/sh -c` as a transient unit, its output on
    /// the console, and returns that output (the console's text from the
    /// start of the unit to its end). A non-zero exit is an error that
    /// carries the output.
    pub fn run(&mut self, script: &str, timeout: Duration) -> Result<String> {
        self.units += 1;
        let unit = format!("bench-{}", self.units);
        let full = format!("exec >/dev/console 2>&1; {script}");
        let before = self.vm.serial().len();
        self.vm.run_unit(&unit, &["/bin/sh", "-c", &full])?;
        let e = self.vm.wait_unit_stopped(&unit, timeout)?;
        let out = self
            .vm
            .serial()
            .get(before..)
            .unwrap_or_default()
            .to_string();
        if e.code != Some(0) {
            bail!("`{script}` failed ({}):\n{out}", e.how);
        }
        Ok(out)
    }
}

/// The JSON of the last line of `text` that contains `tag` followed by a
/// space.
pub fn tagged_json(text: &str, tag: &str) -> Result<serde_json::Value> {
    let prefix = format!("{tag} ");
    let line = text
        .lines()
        .rev()
        .find_map(|l| l.split_once(&prefix).map(|(_, j)| j.trim().to_string()))
        .with_context(|| format!("no {tag} line in:\n{text}"))?;
    serde_json::from_str(&line).with_context(|| format!("parsing {line}"))
}

/// The median of `v` (NaN when empty).
pub fn median(v: &[f64]) -> f64 {
    let mut v = v.to_vec();
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

/// Single-quotes `s` for the shell.
pub fn shell_quote(s: &str) -> String {
    format!("'{}'", s.replace('\'', "'\\''"))
}
