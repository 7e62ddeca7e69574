//! `vmm`: Oxbow's virtual machine monitor. See `vmm --help` and docs/vmm.md.

use std::process::ExitCode;

use vmm::vm::Vm;

fn probe() -> ExitCode {
    let seed = (std::process::id() % 200) as u8 + 1;
    match vmm::probe::run(seed) {
        Ok(r) => {
            println!(
                "kvm probe: API version {}, guest wrote {:#x} for seed {:#x}: ok",
                r.api_version, r.out_byte, seed
            );
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("kvm probe failed: {e}");
            ExitCode::FAILURE
        }
    }
}

/// `vmm ctl SOCKET REQUEST`: one request to a running VMM's control socket.
fn ctl(args: &[String]) -> ExitCode {
    let [socket, request] = args else {
        eprintln!("usage: vmm ctl SOCKET (ping|info|pause|resume|shutdown|stop|JSON)");
        return ExitCode::from(2);
    };
    match vmm::control::client(std::path::Path::new(socket), request) {
        Ok(reply) => {
            println!("{reply}");
            let ok = serde_json::from_str::<serde_json::Value>(&reply)
                .ok()
                .and_then(|v| v.get("ok").and_then(|o| o.as_bool()))
                .unwrap_or(false);
            if ok {
                ExitCode::SUCCESS
            } else {
                ExitCode::FAILURE
            }
        }
        Err(e) => {
            eprintln!("vmm ctl {socket}: {e}");
            ExitCode::FAILURE
        }
    }
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match args.first().map(String::as_str) {
        Some("probe") => return probe(),
        Some("ctl") => return ctl(&args[1..]),
        Some("--help") | Some("-h") => {
            println!("{}", vmm::cli::USAGE);
            return ExitCode::SUCCESS;
        }
        _ => {}
    }
    let config = match vmm::cli::parse(&args) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("vmm: {e}\n{}", vmm::cli::USAGE);
            return ExitCode::from(2);
        }
    };
    let socket = config.api_socket.clone();
    let sandbox = config.sandbox.clone();
    let vm = match Vm::new(config) {
        Ok(vm) => vm,
        Err(e) => {
            eprintln!("vmm: {e}");
            return ExitCode::FAILURE;
        }
    };
    let listener = match &socket {
        None => None,
        Some(path) => match vmm::control::bind(path) {
            Ok(l) => Some(l),
            Err(e) => {
                eprintln!("vmm: control socket {}: {e}", path.display());
                return ExitCode::FAILURE;
            }
        },
    };
    // Everything is open: give up what the guest's run does not need.
    if let Err(e) = vmm::sandbox::enter(&sandbox) {
        eprintln!("vmm: sandbox: {e}");
        return ExitCode::FAILURE;
    }
    if let Some(l) = listener {
        vmm::control::serve(l, vm.handle());
    }
    let result = vm.run();
    if let Some(path) = &socket {
        let _ = std::fs::remove_file(path);
    }
    match result {
        Ok(reason) => {
            if let vmm::exit::ExitReason::Crashed(why) = &reason {
                eprintln!("vmm: guest stopped: {why}");
            } else {
                eprintln!("vmm: guest ended: {reason:?}");
            }
            ExitCode::from(reason.exit_code())
        }
        Err(e) => {
            eprintln!("vmm: {e}");
            ExitCode::FAILURE
        }
    }
}
