//! `vmm`: Oxbow's virtual machine monitor. Only `vmm probe` exists so far.

use std::process::ExitCode;

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match args.first().map(String::as_str) {
        Some("probe") => {
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
        _ => {
            eprintln!("usage: vmm probe");
            ExitCode::from(2)
        }
    }
}
