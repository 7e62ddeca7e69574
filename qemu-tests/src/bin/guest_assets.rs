//! Builds the guest test assets (see `qemu_tests::guest`): the Debian
//! kernel as bzImage and as uncompressed ELF, an initramfs whose `/init` is
//! `guest-init`, and an ISO labelled `OXBOW-GUEST` with the three.
//!
//! Usage: `guest-assets --init PATH [--out DIR] [--cache DIR]`
//! (defaults: `target/guest`, `target/cache`). `make guest` builds the
//! static `guest-init` first and runs this.

use std::path::PathBuf;
use std::time::Instant;

use anyhow::{bail, Context, Result};
use qemu_tests::guest::{self, BuildOptions, GuestAssets};

fn main() -> Result<()> {
    let mut init = None;
    let mut out = GuestAssets::default_dir();
    let mut cache = qemu_tests::target_dir().join("cache");
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        let mut value = || args.next().with_context(|| format!("{a} needs a value"));
        match a.as_str() {
            "--init" => init = Some(PathBuf::from(value()?)),
            "--out" => out = PathBuf::from(value()?),
            "--cache" => cache = PathBuf::from(value()?),
            other => bail!("unknown argument {other}; usage: guest-assets --init PATH [--out DIR] [--cache DIR]"),
        }
    }
    let init = init.context("usage: guest-assets --init PATH [--out DIR] [--cache DIR]")?;
    let start = Instant::now();
    let r = guest::build(&BuildOptions { init, out, cache })?;
    let size = |p: &PathBuf| std::fs::metadata(p).map_or(0, |m| m.len()) as f64 / (1 << 20) as f64;
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
