//! Running a benchmark program inside the appliance: the benchmark ISO
//! booted directly with init's test channel, a CD labelled
//! `OXBOW-BENCH` carrying the program (mounted at `/run/b`), and each
//! run a transient unit whose output goes to the serial console, from
//! which the caller picks its result lines.
//!
//! The nested VMM benchmarks (`bench-vmm`, `bench-vmm-io`) also attach
//! the guest assets' CD (mounted at [`GUEST_MOUNT`] by
//! [`BenchAppliance::prepare_guest_media`]) and build both sides' command
//! lines with [`oxbow_argv`] and [`qemu_argv`] from one [`GuestSpec`].

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{bail, Context, Result};

use crate::{Appliance, BootOptions, Firmware, UnitExit};

/// Where the benchmark CD is mounted inside the appliance.
pub const CD_MOUNT: &str = "/run/b";
/// Where the guest assets' CD (`guest-assets.iso`) is mounted.
pub const GUEST_MOUNT: &str = "/run/g";
/// Oxbow's VMM inside the appliance.
pub const VMM: &str = "/usr/lib/oxbow/vmm";

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
        BenchAppliance::boot_with(iso, files, Vec::new(), Vec::new())
    }

    /// [`BenchAppliance::boot`] with further CDs (`extra_cds`, after the
    /// benchmark CD) and raw disks attached as virtio disks with
    /// `snapshot=on` (`extra_disks`; see [`BootOptions`]).
    pub fn boot_with(
        iso: &Path,
        files: &[(PathBuf, &str)],
        extra_cds: Vec<PathBuf>,
        extra_disks: Vec<PathBuf>,
    ) -> Result<BenchAppliance> {
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
        opts.extra_cds.extend(extra_cds);
        opts.extra_disks = extra_disks;
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
        let (e, out) = self.run_status(script, timeout)?;
        if e.code != Some(0) {
            bail!("`{script}` failed ({}):\n{out}", e.how);
        }
        Ok(out)
    }

    /// Like [`BenchAppliance::run`], but returns how the unit ended
    /// instead of failing on a non-zero exit.
    pub fn run_status(&mut self, script: &str, timeout: Duration) -> Result<(UnitExit, String)> {
        let before = self.vm.serial().len();
        let from = self.vm.serial_bytes();
        let unit = self.start(script)?;
        // Init says on the console when a unit ends ("[ ok ] NAME (pid N)
        // exited with status 0"): watched there first, since asking init
        // over the test channel every half second, as the wait below
        // does, would wake the appliance in the middle of what a
        // benchmark measures. The wait then confirms it in one question.
        let started = std::time::Instant::now();
        self.vm
            .wait_for_serial_from(from, &format!(" {unit} (pid "), timeout)?;
        let left = timeout.saturating_sub(started.elapsed());
        let e = match self
            .vm
            .wait_unit_stopped(&unit, left.max(Duration::from_secs(30)))
        {
            Ok(e) => e,
            Err(e) => {
                // The appliance may be gone (QEMU exits on a kernel panic):
                // what its console said last is all there is to go on.
                let console = self.vm.serial();
                let tail = console.get(before..).unwrap_or(&console);
                let mut from = tail.len().saturating_sub(6000);
                while !tail.is_char_boundary(from) {
                    from += 1;
                }
                let tail = &tail[from..];
                let qemu = self.vm.qemu_exit_report().unwrap_or_default();
                return Err(e.context(format!(
                    "{unit} ({script}); the console since it started:\n{tail}\n{qemu}"
                )));
            }
        };
        let out = self
            .vm
            .serial()
            .get(before..)
            .unwrap_or_default()
            .to_string();
        if e.code != Some(0) {
            self.vm.show_unit_log(&unit);
        }
        Ok((e, out))
    }

    /// Starts `script` as a transient unit (output on the console) and
    /// returns at once with the unit's name; for servers that run until
    /// the appliance ends.
    pub fn start(&mut self, script: &str) -> Result<String> {
        self.units += 1;
        let unit = format!("bench-{}", self.units);
        let full = format!("exec >/dev/console 2>&1; {script}");
        self.vm.run_unit(&unit, &["/bin/sh", "-c", &full])?;
        Ok(unit)
    }

    /// Mounts the guest assets' CD on [`GUEST_MOUNT`] and reads the guest
    /// files, the benchmark CD, the VMM and QEMU once, so that no side of
    /// a benchmark pays for the CD; returns QEMU's version line.
    pub fn prepare_guest_media(&mut self) -> Result<String> {
        let script = format!(
            "set -e; mkdir -p {GUEST_MOUNT}; \
             mount -t iso9660 -o ro LABEL={label} {GUEST_MOUNT}; \
             qemu=$(command -v qemu-system-x86_64); \
             echo \"QEMU-VERSION $(\"$qemu\" --version | head -1)\"; \
             cat {GUEST_MOUNT}/* {CD_MOUNT}/* {VMM} \"$qemu\" >/dev/null",
            label = crate::guest::GUEST_LABEL,
        );
        let out = self
            .run(&script, Duration::from_secs(400))
            .context("preparing the appliance: is qemu-system-x86 in the ISO?")?;
        Ok(out
            .lines()
            .find_map(|l| {
                l.split_once("QEMU-VERSION ")
                    .map(|(_, v)| v.trim().to_string())
            })
            .unwrap_or_default())
    }

    /// The appliance, for what the helpers above do not cover.
    pub fn appliance(&mut self) -> &mut Appliance {
        &mut self.vm
    }
}

/// A nested guest as both VMMs boot it: direct kernel boot from the guest
/// assets' CD.
#[derive(Debug, Clone)]
pub struct GuestSpec {
    /// The kernel inside the appliance (bzImage or PVH `vmlinux`).
    pub kernel: String,
    /// The initramfs inside the appliance.
    pub initrd: String,
    /// The kernel command line.
    pub cmdline: String,
    /// vCPUs.
    pub cpus: u32,
    /// Memory in MiB.
    pub memory_mib: u32,
}

impl GuestSpec {
    /// `kernel` (a file name on the guest assets' CD) with its initramfs,
    /// `cmdline`, 2 vCPUs and `memory_mib`.
    pub fn from_assets(kernel: &str, cmdline: &str, memory_mib: u32) -> GuestSpec {
        GuestSpec {
            kernel: format!("{GUEST_MOUNT}/{kernel}"),
            initrd: format!("{GUEST_MOUNT}/initrd.img"),
            cmdline: cmdline.to_string(),
            cpus: 2,
            memory_mib,
        }
    }
}

/// Oxbow's VMM booting `g` with the console on stdout and no RNG (QEMU
/// gets none either), then `devices` (`--disk`, `--net`).
pub fn oxbow_argv(g: &GuestSpec, devices: &[String]) -> Vec<String> {
    let mut v: Vec<String> = [
        VMM,
        "--kernel",
        &g.kernel,
        "--initrd",
        &g.initrd,
        "--cmdline",
        &g.cmdline,
        "--cpus",
        &g.cpus.to_string(),
        "--memory",
        &g.memory_mib.to_string(),
        "--serial",
        "stdio",
        "--no-rng",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    v.extend(devices.iter().cloned());
    v
}

/// Debian's QEMU on the appliance's KVM (`-enable-kvm -cpu host`) booting
/// `g` on `machine` (`q35`, `microvm`) with no default devices, the console
/// on stdout and `-no-reboot`, then `devices` (`-drive`, `-netdev`,
/// `-device`).
pub fn qemu_argv(machine: &str, g: &GuestSpec, devices: &[String]) -> Vec<String> {
    let mut v: Vec<String> = [
        "qemu-system-x86_64",
        "-enable-kvm",
        "-cpu",
        "host",
        "-M",
        machine,
        "-m",
        &g.memory_mib.to_string(),
        "-smp",
        &g.cpus.to_string(),
        "-nodefaults",
        "-no-user-config",
        "-display",
        "none",
        "-serial",
        "stdio",
        "-no-reboot",
        "-kernel",
        &g.kernel,
        "-initrd",
        &g.initrd,
        "-append",
        &g.cmdline,
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    v.extend(devices.iter().cloned());
    v
}

/// `argv` as one shell command line, each word single-quoted.
pub fn shell_command(argv: &[String]) -> String {
    argv.iter()
        .map(|a| shell_quote(a))
        .collect::<Vec<_>>()
        .join(" ")
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

/// A 95% interval for `stat` over paired rounds, by the percentile
/// bootstrap: `resamples` times, as many rounds as there are are drawn with
/// replacement (the pairs `(a[i], b[i])` kept together, so what a round
/// shared between its sides stays shared) and `stat` is taken of each
/// draw; the interval runs from the 2.5th to the 97.5th percentile of
/// those. The draws come from a fixed seed, so one set of rounds always
/// gives the same interval. `(NaN, NaN)` when there are no rounds.
pub fn bootstrap_interval(
    a: &[f64],
    b: &[f64],
    resamples: usize,
    stat: impl Fn(&[f64], &[f64]) -> f64,
) -> (f64, f64) {
    let n = a.len().min(b.len());
    if n == 0 || resamples == 0 {
        return (f64::NAN, f64::NAN);
    }
    // xorshift64*: enough for drawing indices, and no dependency.
    let mut state: u64 = 0x9E37_79B9_7F4A_7C15;
    let mut next = move || {
        state ^= state >> 12;
        state ^= state << 25;
        state ^= state >> 27;
        state.wrapping_mul(0x2545_F491_4F6C_DD1D)
    };
    let (mut da, mut db) = (vec![0.0; n], vec![0.0; n]);
    let mut stats: Vec<f64> = (0..resamples)
        .map(|_| {
            for k in 0..n {
                let i = (next() % n as u64) as usize;
                da[k] = a[i];
                db[k] = b[i];
            }
            stat(&da, &db)
        })
        .collect();
    stats.sort_by(|x, y| x.total_cmp(y));
    let at = |q: f64| stats[((resamples - 1) as f64 * q).round() as usize];
    (at(0.025), at(0.975))
}

/// The ratio of the medians of two series.
pub fn ratio_of_medians(a: &[f64], b: &[f64]) -> f64 {
    median(a) / median(b)
}

/// The median of the rounds' own ratios `a[i] / b[i]`.
pub fn median_of_ratios(a: &[f64], b: &[f64]) -> f64 {
    let r: Vec<f64> = a.iter().zip(b).map(|(x, y)| x / y).collect();
    median(&r)
}

/// Single-quotes `s` for the shell.
pub fn shell_quote(s: &str) -> String {
    format!("'{}'", s.replace('\'', "'\\''"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn both_vmms_boot_the_same_guest() {
        let g = GuestSpec::from_assets("vmlinux", "console=ttyS0 quiet", 512);
        let ours = oxbow_argv(&g, &["--disk".into(), "/dev/vdb,readonly".into()]);
        let qemu = qemu_argv("q35", &g, &["-device".into(), "virtio-rng-pci".into()]);
        let after = |v: &[String], flag: &str| {
            v.iter()
                .position(|a| a == flag)
                .and_then(|i| v.get(i + 1))
                .cloned()
                .unwrap_or_default()
        };
        assert_eq!(ours[0], VMM);
        assert_eq!(after(&ours, "--kernel"), "/run/g/vmlinux");
        assert_eq!(after(&qemu, "-kernel"), "/run/g/vmlinux");
        assert_eq!(after(&ours, "--initrd"), after(&qemu, "-initrd"));
        assert_eq!(after(&ours, "--cmdline"), after(&qemu, "-append"));
        assert_eq!(
            (after(&ours, "--memory"), after(&qemu, "-m")),
            ("512".into(), "512".into())
        );
        assert_eq!(
            (after(&ours, "--cpus"), after(&qemu, "-smp")),
            ("2".into(), "2".into())
        );
        assert_eq!(after(&qemu, "-M"), "q35");
        assert!(qemu.contains(&"-enable-kvm".to_string()));
        assert_eq!(ours.last().unwrap(), "/dev/vdb,readonly");
        assert_eq!(qemu.last().unwrap(), "virtio-rng-pci");
    }

    #[test]
    fn bootstrap_intervals_hold_the_estimate_and_narrow_with_more_rounds() {
        // Identical ratios in every round: no spread to resample.
        let a = [20.0, 40.0, 30.0, 50.0];
        let b = [10.0, 20.0, 15.0, 25.0];
        assert_eq!(
            bootstrap_interval(&a, &b, 500, median_of_ratios),
            (2.0, 2.0)
        );
        // Noisy rounds around a ratio of 1.4: the interval holds the
        // estimate, and four times the rounds make it narrower.
        let series = |n: usize| -> (Vec<f64>, Vec<f64>) {
            (0..n)
                .map(|i| {
                    let noise = ((i * 7919) % 101) as f64 / 100.0 - 0.5;
                    let floor = 50.0 + 10.0 * noise;
                    (
                        floor * (1.4 + 0.2 * (((i * 104_729) % 97) as f64 / 96.0 - 0.5)),
                        floor,
                    )
                })
                .unzip()
        };
        let (a, b) = series(50);
        let (lo, hi) = bootstrap_interval(&a, &b, 1000, ratio_of_medians);
        let est = ratio_of_medians(&a, &b);
        assert!(lo <= est && est <= hi && lo < hi, "{lo} {est} {hi}");
        let (a4, b4) = series(200);
        let (lo4, hi4) = bootstrap_interval(&a4, &b4, 1000, ratio_of_medians);
        assert!(hi4 - lo4 < hi - lo, "{lo4}-{hi4} against {lo}-{hi}");
        // The same rounds give the same interval.
        assert_eq!(bootstrap_interval(&a, &b, 1000, ratio_of_medians), (lo, hi));
        assert!(bootstrap_interval(&[], &[], 100, ratio_of_medians)
            .0
            .is_nan());
    }

    #[test]
    fn shell_command_quotes_every_word() {
        let argv = vec!["vmm".to_string(), "a b".into(), "it's".into()];
        assert_eq!(shell_command(&argv), r"'vmm' 'a b' 'it'\''s'");
    }
}
