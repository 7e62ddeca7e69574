//! `oxbow-image`: builds Oxbow's bootable hybrid BIOS+UEFI ISO.
//!
//! ```text
//! oxbow-image --bins DIR --out PATH [--cache DIR] [--rootfs-overlay DIR] [--extra-packages LIST]
//!             [--revision REV]
//! ```

use std::ffi::OsString;
use std::io::IsTerminal;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{bail, Context};
use tracing_subscriber::EnvFilter;

const USAGE: &str = "\
Usage: oxbow-image --bins DIR --out PATH [--cache DIR] [--rootfs-overlay DIR]
                   [--extra-packages PKG,PKG] [--revision REV]

Builds Oxbow's bootable hybrid BIOS+UEFI ISO from Debian packages.

  --bins DIR             directory with the static binaries init, netd, apid, vmm
  --out PATH             the ISO to write (replaced atomically)
  --cache DIR            download and debootstrap cache [default: target/cache]
  --rootfs-overlay DIR   tree copied over the system root [default: image/rootfs]
  --extra-packages LIST  Debian packages added to the system image (benchmark
                         variants, e.g. qemu-system-x86 as the VMM's peer)
  --revision REV         the source revision the binaries were built from,
                         written to /usr/lib/oxbow/revision (apid's /version
                         reports it as repoid)
  -h, --help             show this help
  -V, --version          show the version

Logging follows RUST_LOG (default: info). Must run as root.";

fn parse(args: impl IntoIterator<Item = OsString>) -> anyhow::Result<Option<image::Options>> {
    let mut bins = None;
    let mut out = None;
    let mut cache = PathBuf::from("target/cache");
    let mut overlay = PathBuf::from("image/rootfs");
    let mut extra_packages = Vec::new();
    let mut revision = None;
    let mut args = args.into_iter();
    while let Some(arg) = args.next() {
        let arg = arg
            .into_string()
            .map_err(|a| anyhow::anyhow!("unexpected argument {a:?}"))?;
        let (flag, inline) = match arg.split_once('=') {
            Some((f, v)) if f.starts_with("--") => (f.to_owned(), Some(v.to_owned())),
            _ => (arg.clone(), None),
        };
        let mut value = |name: &str| -> anyhow::Result<PathBuf> {
            match inline.clone() {
                Some(v) => Ok(PathBuf::from(v)),
                None => args
                    .next()
                    .map(PathBuf::from)
                    .with_context(|| format!("{name} needs a value")),
            }
        };
        match flag.as_str() {
            "--bins" => bins = Some(value("--bins")?),
            "--out" => out = Some(value("--out")?),
            "--cache" => cache = value("--cache")?,
            "--rootfs-overlay" => overlay = value("--rootfs-overlay")?,
            "--extra-packages" => {
                let v = value("--extra-packages")?;
                extra_packages.extend(
                    v.to_string_lossy()
                        .split(',')
                        .filter(|p| !p.is_empty())
                        .map(String::from),
                );
            }
            "--revision" => {
                let v = value("--revision")?.to_string_lossy().into_owned();
                if v.is_empty()
                    || v.len() > 64
                    || !v
                        .bytes()
                        .all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b))
                {
                    bail!("--revision: {v:?} is not a revision (letters, digits, '.', '_', '-')");
                }
                revision = Some(v);
            }
            "-h" | "--help" => {
                println!("{USAGE}");
                return Ok(None);
            }
            "-V" | "--version" => {
                println!("oxbow-image {}", env!("CARGO_PKG_VERSION"));
                return Ok(None);
            }
            other => bail!("unknown argument {other:?}\n\n{USAGE}"),
        }
    }
    let bins = bins.with_context(|| format!("--bins is required\n\n{USAGE}"))?;
    let out = out.with_context(|| format!("--out is required\n\n{USAGE}"))?;
    Ok(Some(image::Options {
        bins,
        out,
        cache,
        overlay,
        extra_packages,
        revision,
    }))
}

fn run() -> anyhow::Result<()> {
    let Some(opts) = parse(std::env::args_os().skip(1))? else {
        return Ok(());
    };
    let summary = image::build(&opts).context("building the Oxbow ISO")?;
    println!("{summary}");
    Ok(())
}

fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .init();
    match run() {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("oxbow-image: {e:#}");
            ExitCode::FAILURE
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(list: &[&str]) -> Vec<OsString> {
        list.iter().map(OsString::from).collect()
    }

    #[test]
    fn defaults_and_forms() {
        let o = parse(args(&["--bins", "b", "--out=x.iso"]))
            .unwrap()
            .unwrap();
        assert_eq!(o.bins, PathBuf::from("b"));
        assert_eq!(o.out, PathBuf::from("x.iso"));
        assert_eq!(o.cache, PathBuf::from("target/cache"));
        assert_eq!(o.overlay, PathBuf::from("image/rootfs"));
        let o = parse(args(&[
            "--bins",
            "b",
            "--out",
            "o",
            "--cache",
            "c",
            "--rootfs-overlay",
            "r",
        ]))
        .unwrap()
        .unwrap();
        assert_eq!(
            (o.cache, o.overlay),
            (PathBuf::from("c"), PathBuf::from("r"))
        );
    }

    #[test]
    fn errors() {
        assert!(parse(args(&["--out", "o"])).is_err());
        assert!(parse(args(&["--bins"])).is_err());
        assert!(parse(args(&["--bins", "b", "--out", "o", "--frob"])).is_err());
        assert!(parse(args(&["--help"])).unwrap().is_none());
        for bad in ["", "a b", "../x", &"f".repeat(65)] {
            assert!(
                parse(args(&["--bins", "b", "--out", "o", "--revision", bad])).is_err(),
                "{bad:?}"
            );
        }
    }

    #[test]
    fn a_revision_is_taken() {
        let o = parse(args(&[
            "--bins",
            "b",
            "--out",
            "o",
            "--revision",
            "3cb6c8e1a2b3",
        ]))
        .unwrap()
        .unwrap();
        assert_eq!(o.revision.as_deref(), Some("3cb6c8e1a2b3"));
        let o = parse(args(&["--bins", "b", "--out", "o"]))
            .unwrap()
            .unwrap();
        assert_eq!(o.revision, None);
    }
}
