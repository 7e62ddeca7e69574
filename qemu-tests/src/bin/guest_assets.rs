//! Builds the guest test assets (see `qemu_tests::guest`): the Debian
//! kernel as bzImage and as uncompressed ELF, an initramfs whose `/init` is
//! `guest-init`, and an ISO labelled `OXBOW-GUEST` with the three; or, with
//! `--debian`, the Debian guest's root file system image `debian.raw`
//! (`qemu_tests::guest::debian`; runs debootstrap, so it needs root); or,
//! with `--ct-template`, the Debian 12 container template
//! `debian-12-standard_<version>-1_amd64.tar.zst`
//! (`qemu_tests::guest::ct_template`; debootstrap too).
//!
//! Usage: `guest-assets --init PATH [--out DIR] [--cache DIR]`,
//! `guest-assets --debian [--name NAME] [--packages PKG,PKG] [--out DIR] [--cache DIR]` or
//! `guest-assets --ct-template [--out DIR] [--cache DIR]`
//! (defaults: `target/guest`, `target/cache`; `--name debian`, no extra
//! packages). `make guest` builds the static `guest-init` first and runs
//! the first; `make guest-debian` the second; `make guest-debian-bench`
//! the second with `--name debian-bench --packages fio,iperf3,iproute2`;
//! `make ct-template` the third.

use std::path::PathBuf;
use std::time::Instant;

use anyhow::{bail, Context, Result};
use qemu_tests::guest::{self, debian, BuildOptions, GuestAssets};

const USAGE: &str = "usage: guest-assets --init PATH [--out DIR] [--cache DIR]\n       \
                     guest-assets --debian [--name NAME] [--packages PKG,PKG] [--out DIR] [--cache DIR]\n       \
                     guest-assets --ct-template [--out DIR] [--cache DIR]";

fn main() -> Result<()> {
    let mut init = None;
    let mut debian = false;
    let mut ct_template = false;
    let mut name = debian::NAME.to_string();
    let mut extra_packages: Vec<String> = Vec::new();
    let mut out = GuestAssets::default_dir();
    let mut cache = qemu_tests::target_dir().join("cache");
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        let mut value = || args.next().with_context(|| format!("{a} needs a value"));
        match a.as_str() {
            "--init" => init = Some(PathBuf::from(value()?)),
            "--out" => out = PathBuf::from(value()?),
            "--cache" => cache = PathBuf::from(value()?),
            "--debian" => debian = true,
            "--name" => name = value()?,
            "--packages" => extra_packages.extend(
                value()?
                    .split(',')
                    .filter(|p| !p.is_empty())
                    .map(str::to_string),
            ),
            "--ct-template" => ct_template = true,
            other => bail!("unknown argument {other}\n{USAGE}"),
        }
    }
    let start = Instant::now();
    let mib = |b: u64| b as f64 / (1 << 20) as f64;
    if ct_template {
        if init.is_some() || debian {
            bail!("--ct-template, --debian and --init build different things\n{USAGE}");
        }
        let r = qemu_tests::guest::ct_template::build(
            &qemu_tests::guest::ct_template::TemplateOptions { out, cache },
        )?;
        println!(
            "container template {} ({}, {:.1} s): {} packages, {:.1} MiB",
            r.template.display(),
            if r.up_to_date { "up to date" } else { "built" },
            start.elapsed().as_secs_f64(),
            r.packages,
            mib(r.bytes)
        );
        return Ok(());
    }
    if debian {
        if init.is_some() {
            bail!("--debian and --init build different things\n{USAGE}");
        }
        let opts = debian::DebianOptions {
            name,
            extra_packages,
            ..debian::DebianOptions::standard(out, cache)
        };
        let r = debian::build(&opts)?;
        println!(
            "Debian guest image {} ({}, {:.1} s)",
            r.image.display(),
            if r.up_to_date { "up to date" } else { "built" },
            start.elapsed().as_secs_f64()
        );
        println!(
            "  {} packages, {}: ext4 labelled {}, {:.0} MiB, {:.1} MiB allocated{}",
            r.packages,
            opts.packages().join(" "),
            debian::ROOT_LABEL,
            mib(r.image_bytes),
            mib(r.allocated_bytes),
            if r.tree_bytes > 0 {
                format!(", {:.1} MiB of files", mib(r.tree_bytes))
            } else {
                String::new()
            }
        );
        return Ok(());
    }
    let init = init.context(USAGE)?;
    let r = guest::build(&BuildOptions { init, out, cache })?;
    let size = |p: &PathBuf| mib(std::fs::metadata(p).map_or(0, |m| m.len()));
    println!(
        "guest assets in {} ({}, {:.1} s)",
        r.assets.dir.display(),
        if r.up_to_date { "up to date" } else { "built" },
        start.elapsed().as_secs_f64()
    );
    println!("  kernel      {}", r.kernel);
    println!("  vmlinuz     {:.1} MiB", size(&r.assets.vmlinuz));
    println!(
        "  vmlinux     {:.1} MiB, PVH entry {:#x}",
        size(&r.assets.vmlinux),
        r.pvh_entry
    );
    println!(
        "  initrd.img  {:.1} MiB, {} modules: {}",
        size(&r.assets.initrd),
        r.modules.len(),
        r.modules
            .iter()
            .map(|m| image::modules::module_name(m))
            .collect::<Vec<_>>()
            .join(" ")
    );
    println!(
        "  iso         {:.1} MiB, volume {}",
        size(&r.assets.iso),
        guest::GUEST_LABEL
    );
    Ok(())
}
