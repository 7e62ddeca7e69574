//! `netd`: Oxbow's network daemon, run by init as a service.

use std::io::IsTerminal;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{bail, Context};

const USAGE: &str = "usage: netd [--answer PATH] [--bridge NAME] [--nic NAME] \
[--ready-file PATH] [--resolv-conf PATH] [--sys-class-net DIR] [--ready-timeout SECS] [--interfaces PATH] [--firewall-dir DIR]";

const TOOL_USAGE: &str = "\
       netd interfaces check FILE
       netd interfaces plan FILE
       netd interfaces apply [--interfaces PATH] [--confirm SECS] [--bridge NAME]
       netd interfaces confirm [--interfaces PATH]
       netd firewall print|apply [--firewall-dir DIR]";

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.iter().any(|a| a == "--help" || a == "-h") {
        println!("{USAGE}\n{TOOL_USAGE}");
        return ExitCode::SUCCESS;
    }
    if matches!(
        args.first().map(String::as_str),
        Some("interfaces" | "firewall")
    ) {
        netd::logging::init(
            "NETD_LOG",
            tracing_subscriber::filter::LevelFilter::WARN,
            std::io::stderr().is_terminal(),
        );
        return match tool(&args) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("netd: {e:#}");
                ExitCode::FAILURE
            }
        };
    }
    let cfg = match parse_args(&args) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("netd: {e:#}\n{USAGE}");
            return ExitCode::from(2);
        }
    };
    netd::logging::init(
        "NETD_LOG",
        tracing_subscriber::filter::LevelFilter::INFO,
        std::io::stderr().is_terminal(),
    );
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

/// The one-shot commands, for operators and tests: the same library
/// calls apid makes.
fn tool(args: &[String]) -> anyhow::Result<()> {
    let mut files = netd::staged::NetworkFiles::new(netd::staged::NetworkFiles::DEFAULT);
    let mut firewall_dir = PathBuf::from(firewall::FIREWALL_DIR);
    let mut confirm: Option<Duration> = None;
    let mut bridge = "vmbr0".to_string();
    let mut positional = Vec::new();
    let mut it = args.iter();
    while let Some(a) = it.next() {
        let mut value = || {
            it.next()
                .cloned()
                .with_context(|| format!("{a} needs a value"))
        };
        match a.as_str() {
            "--interfaces" => files = netd::staged::NetworkFiles::new(value()?),
            "--firewall-dir" => firewall_dir = PathBuf::from(value()?),
            "--bridge" => bridge = value()?,
            "--confirm" => {
                let v = value()?;
                let secs: u64 = v
                    .parse()
                    .with_context(|| format!("--confirm: `{v}` is not a number of seconds"))?;
                confirm = Some(Duration::from_secs(secs));
            }
            _ => positional.push(a.as_str()),
        }
    }
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    rt.block_on(async {
        match positional.as_slice() {
            ["interfaces", "check", file] => {
                let text = std::fs::read_to_string(file).with_context(|| file.to_string())?;
                let nl = netd::rtnl::Rtnl::connect()?;
                let links = netd::reconcile::kernel::observe(&nl).await?.link_names();
                netd::interfaces::InterfacesFile::parse_valid(&text, &links)
                    .with_context(|| file.to_string())?;
                println!("{file}: valid");
            }
            ["interfaces", "plan", file] => {
                let text = std::fs::read_to_string(file).with_context(|| file.to_string())?;
                let nl = netd::rtnl::Rtnl::connect()?;
                for op in netd::staged::plan_text(&nl, &text).await? {
                    println!("{op}");
                }
            }
            ["interfaces", "apply"] => {
                let nl = netd::rtnl::Rtnl::connect()?;
                let probe = match confirm {
                    Some(t) => {
                        let text = files.staged()?.context("nothing staged")?;
                        let config = netd::interfaces::InterfacesFile::parse(&text)?.config()?;
                        let probe = netd::staged::AddressProbe::from_config(&config, &bridge)
                            .with_context(|| format!("{bridge} has no static address to probe"))?;
                        Some((t, probe))
                    }
                    None => None,
                };
                let applied = netd::staged::apply_staged(&nl, &files, probe).await?;
                for op in &applied.ops {
                    println!("{op}");
                }
                if applied.deadline.is_some() {
                    println!("confirm with `netd interfaces confirm` before the deadline");
                }
            }
            ["interfaces", "confirm"] => {
                if !netd::staged::confirm(&files)? {
                    bail!("no change waits for confirmation");
                }
            }
            ["firewall", what @ ("print" | "apply")] => {
                use firewall::Applier;
                let features = firewall::NftApplier::default().detect_features();
                let input = firewall::load(&firewall_dir, vec![], features)?;
                let ruleset = firewall::compile(&input)?.host_only();
                if *what == "print" {
                    print!("{ruleset}");
                } else {
                    firewall::NetlinkApplier.apply(&ruleset)?;
                }
            }
            _ => bail!("unknown command\n{TOOL_USAGE}"),
        }
        Ok(())
    })
}
