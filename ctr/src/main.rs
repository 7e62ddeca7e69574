//! `ctr`: Oxbow's container runtime, a thin front over the `ctr` library
//! (see docs/ctr.md).
//!
//! The program has its own C `main` instead of Rust's start-up
//! (`lang_start`): a container start begins with an exec of this binary,
//! and Rust's start-up spends part of a millisecond under emulation on
//! what the monitor does not use (it finds the main thread's stack by
//! reading `/proc/self/maps` and maps an alternate signal stack, to report
//! stack overflows by name). What it does that matters is kept: SIGPIPE is
//! ignored, so that a write to a closed pipe or socket is an error, not
//! death. `std::env::args` still works (glibc hands the arguments to
//! Rust's standard library at load time); a stack overflow is a plain
//! SIGSEGV and a panic aborts, since nothing can unwind out of `main`.
// (Not for the unit tests: their harness brings its own `main`.)
#![cfg_attr(not(test), no_main)]

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{anyhow, bail, Context, Result};

const USAGE: &str = "usage:
  ctr start --config FILE [--vmid N] [--rootfs DIR] [--storage-cfg FILE]
            [--storage-default DIR] [--socket PATH] [--console-log FILE]
            [--console-socket PATH] [--shutdown-timeout SECONDS]
            [--cgroup-root DIR]
      run the container's monitor until the container ends; exit status 0
      when it powered off or was stopped, 3 when it rebooted, 1 on errors
  ctr unpack TEMPLATE DIR [--max-bytes N] [--ids shifted|host]
      create a container root directory from a .tar.zst template; owners
      shifted to 100000+ (unprivileged, the default) or kept (host: for a
      privileged container)
  ctr destroy DIR
      remove a container root directory
  ctr ctl SOCKET (ping|info|shutdown [SECONDS]|reboot [SECONDS]|stop|JSON)
      send one request to a running monitor
  ctr console SOCKET
      attach the terminal to a container's console socket (Ctrl-a q quits)";

/// The program's entry, called by the C library's start-up.
// SAFETY: the one `main` symbol of this program, with the C signature the
// C library's start-up calls; nothing else defines it (`no_main`).
#[cfg(not(test))]
#[no_mangle]
pub extern "C" fn main(_argc: libc::c_int, _argv: *const *const libc::c_char) -> libc::c_int {
    // SAFETY: setting a signal's disposition to SIG_IGN has no memory
    // effects; no handler is involved.
    unsafe { libc::signal(libc::SIGPIPE, libc::SIG_IGN) };
    let code = run();
    let _ = std::io::Write::flush(&mut std::io::stdout());
    libc::c_int::from(code)
}

#[cfg_attr(test, allow(dead_code))]
fn run() -> u8 {
    netd::logging::init_lazy(
        "RUST_LOG",
        tracing_subscriber::filter::LevelFilter::INFO,
        std::io::IsTerminal::is_terminal(&std::io::stderr()),
    );
    tracing::debug!("ctr {}: logging set up", env!("CARGO_PKG_VERSION"));
    let args: Vec<String> = std::env::args().skip(1).collect();
    let result = match args.first().map(String::as_str) {
        Some("start") => start(&args[1..]),
        Some("unpack") => unpack(&args[1..]).map(|()| 0),
        Some("destroy") => destroy(&args[1..]).map(|()| 0),
        Some("ctl") => ctl(&args[1..]).map(|()| 0),
        Some("console") => console(&args[1..]).map(|()| 0),
        Some("--help" | "-h" | "help") => {
            println!("{USAGE}");
            return 0;
        }
        _ => {
            eprintln!("{USAGE}");
            return 2;
        }
    };
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("ctr: {e:#}");
            1
        }
    }
}

/// `--name value` options after the positional arguments.
struct Options {
    positional: Vec<String>,
    named: Vec<(String, String)>,
}

impl Options {
    fn parse(args: &[String], known: &[&str]) -> Result<Options> {
        let mut positional = Vec::new();
        let mut named = Vec::new();
        let mut it = args.iter();
        while let Some(a) = it.next() {
            if let Some(name) = a.strip_prefix("--") {
                if !known.contains(&name) {
                    bail!("unknown option --{name}\n{USAGE}");
                }
                let value = it.next().ok_or_else(|| anyhow!("--{name} needs a value"))?;
                named.push((name.to_string(), value.clone()));
            } else {
                positional.push(a.clone());
            }
        }
        Ok(Options { positional, named })
    }

    fn get(&self, name: &str) -> Option<&str> {
        self.named
            .iter()
            .rev()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }
}

fn start(args: &[String]) -> Result<u8> {
    let o = Options::parse(
        args,
        &[
            "config",
            "vmid",
            "rootfs",
            "storage-cfg",
            "storage-default",
            "socket",
            "console-log",
            "console-socket",
            "shutdown-timeout",
            "cgroup-root",
        ],
    )?;
    let config_path = PathBuf::from(
        o.get("config")
            .ok_or_else(|| anyhow!("--config is required"))?,
    );
    let vmid: u32 = match o.get("vmid") {
        Some(v) => v.parse().with_context(|| format!("--vmid {v}"))?,
        None => config_path
            .file_stem()
            .and_then(|s| s.to_str())
            .and_then(|s| s.parse().ok())
            .ok_or_else(|| anyhow!("--vmid is required when the file is not named <vmid>.conf"))?,
    };
    let text = std::fs::read_to_string(&config_path)
        .with_context(|| format!("reading {}", config_path.display()))?;
    let config = guestconf::GuestConfig::parse(&text)
        .with_context(|| format!("parsing {}", config_path.display()))?;
    let rootfs = match o.get("rootfs") {
        Some(r) => PathBuf::from(r),
        None => resolve_rootfs(
            &config,
            Path::new(o.get("storage-cfg").unwrap_or("/etc/oxbow/storage.cfg")),
            Path::new(o.get("storage-default").unwrap_or("/var/lib/vz")),
        )?,
    };
    let spec = ctr::ContainerSpec::from_config(vmid, &config, rootfs)
        .with_context(|| format!("container {vmid}"))?;
    tracing::debug!("container {vmid}: configuration read");
    let mut opts = ctr::MonitorOptions {
        socket: o.get("socket").map(PathBuf::from),
        console_log: o.get("console-log").map(PathBuf::from),
        console_socket: o.get("console-socket").map(PathBuf::from),
        cgroup_root: o.get("cgroup-root").map(PathBuf::from),
        ..ctr::MonitorOptions::default()
    };
    if let Some(t) = o.get("shutdown-timeout") {
        opts.shutdown_timeout = Duration::from_secs(
            t.parse()
                .with_context(|| format!("--shutdown-timeout {t}"))?,
        );
    }
    let outcome = ctr::run_monitor(&spec, &opts).with_context(|| format!("container {vmid}"))?;
    Ok(outcome.exit_status())
}

/// The host path of the `rootfs` volume, through `storage.cfg`.
fn resolve_rootfs(
    config: &guestconf::GuestConfig,
    storage_cfg: &Path,
    default_local: &Path,
) -> Result<PathBuf> {
    let text = config
        .get("rootfs")
        .ok_or_else(|| anyhow!("the configuration has no rootfs"))?;
    let mp = guestconf::MountPoint::parse("rootfs", text).context("rootfs")?;
    let guestconf::MountSource::Volume(volume) = mp.source else {
        bail!("rootfs '{text}' is not a volume; pass --rootfs");
    };
    let cfg = storage::StorageConfig::load(storage_cfg, default_local)
        .with_context(|| format!("reading {}", storage_cfg.display()))?;
    let node = nix::unistd::gethostname()
        .map(|h| h.to_string_lossy().into_owned())
        .unwrap_or_else(|_| "localhost".into());
    let storages = storage::Storages::new(cfg, &node).context("storage configuration")?;
    let volid: storage::VolumeId = volume
        .to_string()
        .parse()
        .map_err(|e| anyhow!("rootfs volume {volume}: {e}"))?;
    storages
        .path(&volid)
        .with_context(|| format!("rootfs volume {volid}"))
}

fn unpack(args: &[String]) -> Result<()> {
    let o = Options::parse(args, &["max-bytes", "ids"])?;
    let [template, dest] = o.positional.as_slice() else {
        bail!("{USAGE}");
    };
    let mut opts = ctr::UnpackOptions::default();
    if let Some(m) = o.get("max-bytes") {
        opts.max_bytes = m.parse().with_context(|| format!("--max-bytes {m}"))?;
    }
    match o.get("ids") {
        None | Some("shifted") => {}
        Some("host") => opts.idmap = ctr::IdMap::IDENTITY,
        Some(other) => bail!("--ids {other}: shifted or host"),
    }
    let report = ctr::create_from_template(Path::new(template), Path::new(dest), &opts)?;
    println!(
        "{}: {} entries, {} bytes, {} device nodes skipped",
        report.root.display(),
        report.entries,
        report.bytes,
        report.skipped_devices
    );
    Ok(())
}

fn destroy(args: &[String]) -> Result<()> {
    let [dir] = args else {
        bail!("{USAGE}");
    };
    ctr::destroy_rootfs(Path::new(dir)).with_context(|| format!("removing {dir}"))
}

fn ctl(args: &[String]) -> Result<()> {
    let (socket, rest) = args.split_first().ok_or_else(|| anyhow!("{USAGE}"))?;
    let timeout = rest.get(1).map(|t| t.parse::<u64>()).transpose()?;
    let request: ctr::Request = match rest.first().map(String::as_str) {
        Some("ping") => ctr::Request::Ping,
        Some("info") => ctr::Request::Info,
        Some("shutdown") => ctr::Request::Shutdown { timeout },
        Some("reboot") => ctr::Request::Reboot { timeout },
        Some("stop") => ctr::Request::Stop,
        Some(json) if json.starts_with('{') => serde_json::from_str(json)?,
        _ => bail!("{USAGE}"),
    };
    let data = ctr::request(Path::new(socket), &request)
        .with_context(|| format!("control socket {socket}"))?;
    println!("{data}");
    Ok(())
}

/// Relays the terminal to a console socket until Ctrl-a q or the
/// container's end. The terminal is in raw mode meanwhile.
fn console(args: &[String]) -> Result<()> {
    use std::io::{Read, Write};
    use std::os::unix::net::UnixStream;
    let [socket] = args else {
        bail!("{USAGE}");
    };
    let stream = UnixStream::connect(socket).with_context(|| format!("console socket {socket}"))?;
    let stdin = std::io::stdin();
    let saved = nix::sys::termios::tcgetattr(&stdin).ok();
    if let Some(t) = &saved {
        let mut raw = t.clone();
        nix::sys::termios::cfmakeraw(&mut raw);
        nix::sys::termios::tcsetattr(&stdin, nix::sys::termios::SetArg::TCSANOW, &raw)
            .context("raw terminal")?;
        eprint!("[attached to {socket}; Ctrl-a q detaches]\r\n");
    }
    let mut to_guest = stream.try_clone()?;
    std::thread::spawn(move || {
        let mut buf = [0u8; 1024];
        let mut prefix = false;
        loop {
            let n = match std::io::stdin().read(&mut buf) {
                Ok(0) | Err(_) => break,
                Ok(n) => n,
            };
            for &b in &buf[..n] {
                if prefix && b == b'q' {
                    let _ = to_guest.shutdown(std::net::Shutdown::Both);
                    return;
                }
                prefix = b == 0x01;
                if !prefix && to_guest.write_all(&[b]).is_err() {
                    return;
                }
            }
        }
        let _ = to_guest.shutdown(std::net::Shutdown::Write);
    });
    let mut from_guest = &stream;
    let mut stdout = std::io::stdout();
    let mut buf = [0u8; 4096];
    loop {
        match from_guest.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => {
                stdout.write_all(&buf[..n])?;
                stdout.flush()?;
            }
        }
    }
    if let Some(t) = &saved {
        let _ = nix::sys::termios::tcsetattr(&stdin, nix::sys::termios::SetArg::TCSANOW, t);
    }
    Ok(())
}
