//! `netd`: Oxbow's network daemon, run by init as a service.

use std::io::IsTerminal;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{bail, Context};

const USAGE: &str = "usage: netd [--answer PATH] [--bridge NAME] [--nic NAME] \
[--ready-file PATH] [--resolv-conf PATH] [--sys-class-net DIR] [--ready-timeout SECS] [--interfaces PATH] [--firewall-dir DIR]";

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.iter().any(|a| a == "--help" || a == "-h") {
        println!("{USAGE}");
        return ExitCode::SUCCESS;
    }
    let cfg = match parse_args(&args) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("netd: {e:#}\n{USAGE}");
            return ExitCode::from(2);
        }
    };
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("NETD_LOG")
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .init();
    match netd::run(&cfg).context("netd failed") {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("netd: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn parse_args(args: &[String]) -> anyhow::Result<netd::Config> {
    let mut cfg = netd::Config::default();
    let mut it = args.iter();
    while let Some(flag) = it.next() {
        let mut value = || {
            it.next()
                .cloned()
                .with_context(|| format!("{flag} needs a value"))
        };
        match flag.as_str() {
            "--answer" => cfg.answer = PathBuf::from(value()?),
            "--bridge" => cfg.bridge = value()?,
            "--nic" => cfg.nic = Some(value()?),
            "--ready-file" => cfg.ready_file = PathBuf::from(value()?),
            "--resolv-conf" => cfg.resolv_conf = PathBuf::from(value()?),
            "--interfaces" => cfg.interfaces = PathBuf::from(value()?),
            "--firewall-dir" => cfg.firewall_dir = PathBuf::from(value()?),
            "--sys-class-net" => cfg.sys_class_net = PathBuf::from(value()?),
            "--ready-timeout" => {
                let v = value()?;
                let secs: u64 = v.parse().with_context(|| {
                    format!("--ready-timeout: `{v}` is not a number of seconds")
                })?;
                cfg.ready_timeout = Duration::from_secs(secs);
            }
            other => bail!("unknown argument `{other}`"),
        }
    }
    if cfg.bridge.is_empty() || cfg.bridge.len() > 15 || cfg.bridge.contains(['/', ' ']) {
        bail!("`{}` is not a valid interface name", cfg.bridge);
    }
    Ok(cfg)
}
