//! `init`: PID 1 of Oxbow (both boot stages), and `oxctl`, the client of
//! its control socket, when called by that name.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use init::control::{Client, Request};
use init::service::{RestartPolicy, UnitSpec};

fn main() -> ExitCode {
    let argv0 = std::env::args().next().unwrap_or_default();
    let name = Path::new(&argv0)
        .file_name()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_default();
    let args: Vec<String> = std::env::args().skip(1).collect();
    if name == "oxctl" || args.first().map(String::as_str) == Some("ctl") {
        let rest = if name == "oxctl" {
            &args[..]
        } else {
            &args[1..]
        };
        return oxctl(rest);
    }
    if args.first().map(String::as_str) == Some("supervise") {
        return supervise(&args[1..]);
    }
    if std::process::id() != 1 {
        eprintln!("init: not PID 1; to talk to init use `oxctl` (or `init ctl`)");
        return ExitCode::from(2);
    }
    if Path::new(init::stage1::INITRAMFS_MARKER).exists() {
        let err = init::stage1::run();
        init::console::say(format_args!("stage 1 failed: {err}"));
        init::console::kmsg(&format!("stage 1 failed: {err}"));
        // PID 1 must not exit; leave the message on the console.
        loop {
            std::thread::sleep(std::time::Duration::from_secs(3600));
        }
    }
    init::stage2::run()
}

/// `init supervise --table FILE --socket PATH --log-dir DIR
/// [--transient-gate FILE] [--settled FILE]`: the
/// supervisor alone, as an ordinary process, without mounts, seed or power
/// handling. `--settled` names a file written once the table's services
/// have settled (when stage 2 would load the feature modules). A shutdown
/// request ends it with status 0 after every unit has stopped. Used by the
/// host tests and handy for trying a service table.
fn supervise(args: &[String]) -> ExitCode {
    let mut table = None;
    let mut socket = None;
    let mut log_dir = None;
    let mut gate = None;
    let mut settled = None;
    let mut it = args.iter();
    while let Some(a) = it.next() {
        let v = it.next().cloned();
        match a.as_str() {
            "--table" => table = v,
            "--socket" => socket = v,
            "--log-dir" => log_dir = v,
            "--transient-gate" => gate = v.map(PathBuf::from),
            "--settled" => settled = v.map(PathBuf::from),
            other => {
                eprintln!("init supervise: unknown argument `{other}`");
                return ExitCode::from(2);
            }
        }
    }
    let (Some(table), Some(socket), Some(log_dir)) = (table, socket, log_dir) else {
        eprintln!("usage: init supervise --table FILE --socket PATH --log-dir DIR");
        return ExitCode::from(2);
    };
    let text = std::fs::read_to_string(&table).unwrap_or_else(|e| {
        init::console::say(format_args!("{table}: {e}"));
        String::new()
    });
    let parsed = init::service::parse_table(&text);
    for p in &parsed.problems {
        init::console::say(format_args!("{table}: {p}"));
    }
    let cfg = init::supervisor::SupervisorConfig {
        socket_path: PathBuf::from(socket),
        log_dir: PathBuf::from(log_dir),
        cgroup_root: None,
        test_channel: None,
        power_buttons: Vec::new(),
        transient_gate: gate,
        boot_settled: settled.map(|path| {
            let (tx, rx) = std::sync::mpsc::channel::<()>();
            std::thread::spawn(move || {
                if rx.recv().is_ok() {
                    if let Err(e) = std::fs::write(&path, b"") {
                        init::console::say(format_args!("{}: {e}", path.display()));
                    }
                }
            });
            tx
        }),
    };
    match init::supervisor::Supervisor::new(cfg, parsed.services) {
        Ok(mut s) => {
            let kind = s.run();
            init::console::say(format_args!("all units stopped ({kind:?} requested)"));
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("init supervise: {e}");
            ExitCode::FAILURE
        }
    }
}

const USAGE: &str = "usage: oxctl [--socket PATH] ping|list|status UNIT|start UNIT|stop UNIT|restart UNIT|kill UNIT [SIGNAL]|remove UNIT|run [--restart always|on-failure|never] NAME -- PROGRAM [ARGS...]|poweroff|reboot";

fn oxctl(args: &[String]) -> ExitCode {
    let mut socket = PathBuf::from(init::control::SOCKET_PATH);
    let mut args = args.to_vec();
    if args.first().map(String::as_str) == Some("--socket") && args.len() >= 2 {
        socket = PathBuf::from(&args[1]);
        args.drain(..2);
    }
    let req = match parse_oxctl(&args) {
        Ok(r) => r,
        Err(e) => {
            eprintln!("oxctl: {e}\n{USAGE}");
            return ExitCode::from(2);
        }
    };
    let result = Client::connect(&socket).and_then(|mut c| c.call(&req));
    match result {
        Ok(v) => {
            if !v.is_null() {
                println!("{}", serde_json::to_string_pretty(&v).unwrap_or_default());
            }
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("oxctl: {e}");
            ExitCode::FAILURE
        }
    }
}

fn parse_oxctl(args: &[String]) -> Result<Request, String> {
    let a: Vec<&str> = args.iter().map(String::as_str).collect();
    let unit = |i: usize| {
        a.get(i)
            .map(|s| s.to_string())
            .ok_or("missing unit name".to_string())
    };
    Ok(match a.first().copied() {
        Some("ping") => Request::Ping,
        Some("list") => Request::List,
        Some("status") => Request::Status { unit: unit(1)? },
        Some("start") => Request::Start { unit: unit(1)? },
        Some("stop") => Request::Stop { unit: unit(1)? },
        Some("restart") => Request::Restart { unit: unit(1)? },
        Some("remove") => Request::Remove { unit: unit(1)? },
        Some("kill") => Request::Kill {
            unit: unit(1)?,
            signal: a.get(2).unwrap_or(&"TERM").to_string(),
        },
        Some("poweroff") => Request::Poweroff,
        Some("reboot") => Request::Reboot,
        Some("run") => {
            let mut i = 1;
            let mut restart = RestartPolicy::Never;
            if a.get(1) == Some(&"--restart") {
                restart = match a.get(2).copied() {
                    Some("always") => RestartPolicy::Always,
                    Some("on-failure") => RestartPolicy::OnFailure,
                    Some("never") => RestartPolicy::Never,
                    other => return Err(format!("bad restart policy {other:?}")),
                };
                i = 3;
            }
            let name = a.get(i).ok_or("missing unit name")?;
            if a.get(i + 1) != Some(&"--") || a.len() < i + 3 {
                return Err("expected `-- PROGRAM [ARGS...]`".into());
            }
            let mut spec = UnitSpec::new(name, &a[i + 2..]);
            spec.restart = restart;
            Request::Run { unit: spec }
        }
        Some(other) => return Err(format!("unknown command `{other}`")),
        None => return Err("no command".into()),
    })
}
