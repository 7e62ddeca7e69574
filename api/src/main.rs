//! `apid`: Oxbow's management API daemon, run by init as a service.

use std::io::IsTerminal;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{bail, Context};
use tokio::signal::unix::{signal, SignalKind};

const USAGE: &str = "usage: apid [--listen ADDR:PORT] [--state-dir DIR] [--node NAME] \
[--local-storage DIR] [--init-socket PATH] [--run-dir DIR] [--interfaces PATH] [--firewall-dir DIR]";

/// Command-line options; anything not given takes the library's default.
#[derive(Debug, Default)]
struct Options {
    listen: Option<SocketAddr>,
    state_dir: Option<PathBuf>,
    node: Option<String>,
    local_storage: Option<PathBuf>,
    init_socket: Option<PathBuf>,
    run_dir: Option<PathBuf>,
    interfaces: Option<PathBuf>,
    firewall_dir: Option<PathBuf>,
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.iter().any(|a| a == "--help" || a == "-h") {
        println!("{USAGE}");
        return ExitCode::SUCCESS;
    }
    let options = match parse_args(&args) {
        Ok(options) => options,
        Err(e) => {
            eprintln!("apid: {e:#}\n{USAGE}");
            return ExitCode::from(2);
        }
    };
    netd::logging::init(
        "APID_LOG",
        tracing_subscriber::filter::LevelFilter::INFO,
        std::io::stderr().is_terminal(),
    );
    match run(options) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("apid: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn run(options: Options) -> anyhow::Result<()> {
    let node = match options.node {
        Some(node) => node,
        None => api::system_node_name().context("cannot choose the node name (try --node)")?,
    };
    let mut config = api::Config::new(node);
    if let Some(listen) = options.listen {
        config.listen = listen;
    }
    if let Some(state_dir) = options.state_dir {
        config.state_dir = state_dir;
    }
    if let Some(path) = options.local_storage {
        config.local_storage = path;
    }
    if let Some(path) = options.init_socket {
        config.init_socket = path;
    }
    if let Some(path) = options.run_dir {
        config.run_dir = path;
    }
    if let Some(path) = options.interfaces {
        config.interfaces = path;
    }
    if let Some(path) = options.firewall_dir {
        config.firewall_dir = path;
    }
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    let result = runtime.block_on(async {
        let mut terminate = signal(SignalKind::terminate()).context("cannot handle SIGTERM")?;
        let mut interrupt = signal(SignalKind::interrupt()).context("cannot handle SIGINT")?;
        let shutdown = async move {
            tokio::select! {
                _ = terminate.recv() => tracing::info!("SIGTERM received"),
                _ = interrupt.recv() => tracing::info!("SIGINT received"),
            }
        };
        api::serve(config, shutdown).await.context("apid failed")
    });
    // Requests still running (a delayed failed login, say) must not hold
    // up the exit.
    runtime.shutdown_timeout(Duration::from_millis(200));
    result
}

fn parse_args(args: &[String]) -> anyhow::Result<Options> {
    let mut options = Options::default();
    let mut it = args.iter();
    while let Some(flag) = it.next() {
        let mut value = || {
            it.next()
                .cloned()
                .with_context(|| format!("{flag} needs a value"))
        };
        match flag.as_str() {
            "--listen" => {
                let v = value()?;
                let addr = v.parse().with_context(|| {
                    format!("--listen: `{v}` is not an address with port, like [::]:8006")
                })?;
                options.listen = Some(addr);
            }
            "--state-dir" => options.state_dir = Some(PathBuf::from(value()?)),
            "--node" => options.node = Some(value()?),
            "--local-storage" => options.local_storage = Some(PathBuf::from(value()?)),
            "--init-socket" => options.init_socket = Some(PathBuf::from(value()?)),
            "--run-dir" => options.run_dir = Some(PathBuf::from(value()?)),
            "--interfaces" => options.interfaces = Some(PathBuf::from(value()?)),
            "--firewall-dir" => options.firewall_dir = Some(PathBuf::from(value()?)),
            other => bail!("unknown argument `{other}`"),
        }
    }
    Ok(options)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(list: &[&str]) -> Vec<String> {
        list.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn parses_all_options() {
        let options = parse_args(&args(&[
            "--listen",
            "0.0.0.0:8443",
            "--state-dir",
            "/srv/state",
            "--node",
            "pve1",
        ]))
        .unwrap();
        assert_eq!(options.listen, Some("0.0.0.0:8443".parse().unwrap()));
        assert_eq!(options.state_dir, Some(PathBuf::from("/srv/state")));
        assert_eq!(options.node.as_deref(), Some("pve1"));
    }

    #[test]
    fn rejects_bad_arguments() {
        assert!(parse_args(&args(&["--listen"])).is_err());
        assert!(parse_args(&args(&["--listen", "localhost:8006"])).is_err());
        assert!(parse_args(&args(&["--frobnicate"])).is_err());
    }
}
