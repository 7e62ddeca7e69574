//! `bench-run`: runs one VMM (ours or QEMU) inside the appliance and
//! measures it from the outside, for `bench-vmm`.
//!
//! ```text
//! bench-run --label NAME --marker TEXT --guest-mib N [--timeout SECS] [--echo] -- COMMAND ARGS...
//! ```
//!
//! It starts COMMAND with the guest's serial console on its stdout, reads
//! until TEXT appears (the guest's first userspace line), and takes the
//! time since the spawn. At that moment it reads the VMM's memory from
//! `/proc/PID/smaps`: the total RSS, and the RSS of the largest anonymous
//! mapping at least as big as the guest (guest RAM, in both VMMs); the
//! difference is the VMM's own overhead. Then it waits for the VMM to exit
//! (the guest powers off) and prints one line (with `--echo`, after every
//! console line of the guest, prefixed with its time since the spawn):
//!
//! ```text
//! BENCH {"label":..,"marker_ms":..,"exit_ms":..,"rss_kib":..,"guest_rss_kib":..,"overhead_kib":..,"hwm_kib":..,"status":..}
//! ```

use std::io::Read;
use std::process::{Command, ExitCode, Stdio};
use std::time::{Duration, Instant};

struct Args {
    label: String,
    marker: String,
    guest_mib: u64,
    timeout: Duration,
    echo: bool,
    command: Vec<String>,
}

fn parse() -> Result<Args, String> {
    let mut a = Args {
        label: String::new(),
        marker: String::new(),
        guest_mib: 0,
        timeout: Duration::from_secs(300),
        echo: false,
        command: Vec::new(),
    };
    let mut it = std::env::args().skip(1);
    while let Some(x) = it.next() {
        let mut v = || it.next().ok_or(format!("{x} needs a value"));
        match x.as_str() {
            "--label" => a.label = v()?,
            "--marker" => a.marker = v()?,
            "--guest-mib" => a.guest_mib = v()?.parse().map_err(|_| "--guest-mib: a number")?,
            "--timeout" => {
                a.timeout = Duration::from_secs(v()?.parse().map_err(|_| "--timeout: seconds")?)
            }
            "--echo" => a.echo = true,
            "--" => {
                a.command = it.by_ref().collect();
                break;
            }
            other => return Err(format!("unknown argument {other}")),
        }
    }
    if a.marker.is_empty() || a.command.is_empty() || a.guest_mib == 0 {
        return Err(
            "usage: bench-run --label NAME --marker TEXT --guest-mib N -- COMMAND...".into(),
        );
    }
    Ok(a)
}

/// (total RSS, RSS of the guest RAM mapping) in KiB, from smaps.
fn memory(pid: u32, guest_kib: u64) -> (u64, u64) {
    let smaps = std::fs::read_to_string(format!("/proc/{pid}/smaps")).unwrap_or_default();
    let mut total = 0;
    let mut best: Option<(u64, u64)> = None; // (size, rss)
    let mut size = 0;
    let mut anonymous = false;
    for line in smaps.lines() {
        let mut f = line.split_whitespace();
        let first = f.next().unwrap_or_default();
        if first.contains('-') && !first.ends_with(':') {
            // A mapping header: "addr-addr perms offset dev inode [path]".
            anonymous = f.nth(4).is_none();
            size = 0;
            continue;
        }
        let kib = || {
            f.clone()
                .next()
                .and_then(|n| n.parse::<u64>().ok())
                .unwrap_or(0)
        };
        match first {
            "Size:" => size = kib(),
            "Rss:" => {
                let rss = kib();
                total += rss;
                if anonymous && size >= guest_kib && best.is_none_or(|(s, _)| size > s) {
                    best = Some((size, rss));
                }
            }
            _ => {}
        }
    }
    (total, best.map(|b| b.1).unwrap_or(0))
}

fn hwm(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.split_whitespace().next().and_then(|n| n.parse().ok()))
        .unwrap_or(0)
}

fn main() -> ExitCode {
    let a = match parse() {
        Ok(a) => a,
        Err(e) => {
            eprintln!("bench-run: {e}");
            return ExitCode::from(2);
        }
    };
    let start = Instant::now();
    let mut child = match Command::new(&a.command[0])
        .args(&a.command[1..])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .spawn()
    {
        Ok(c) => c,
        Err(e) => {
            eprintln!("bench-run: {}: {e}", a.command[0]);
            return ExitCode::FAILURE;
        }
    };
    let pid = child.id();
    let mut out = child.stdout.take().expect("piped stdout");
    let (tx, rx) = std::sync::mpsc::channel();
    let marker = a.marker.clone().into_bytes();
    let echo = a.echo;
    // Reads the console until the marker, then keeps draining it.
    let reader = std::thread::spawn(move || {
        let mut seen = Vec::new();
        let mut buf = [0u8; 4096];
        let mut sent = false;
        let mut line = Vec::new();
        let mut lines = Vec::new();
        while let Ok(n) = out.read(&mut buf) {
            if n == 0 {
                break;
            }
            if echo {
                for &b in &buf[..n] {
                    if b == b'\n' {
                        let ms = start.elapsed().as_secs_f64() * 1000.0;
                        lines.push(format!(
                            "{ms:>9.1} ms | {}",
                            String::from_utf8_lossy(&line).trim_end()
                        ));
                        line.clear();
                    } else {
                        line.push(b);
                    }
                }
            }
            if !sent {
                seen.extend_from_slice(&buf[..n]);
                if seen.windows(marker.len()).any(|w| w == marker.as_slice()) {
                    let _ = tx.send(Instant::now());
                    sent = true;
                }
            }
        }
        lines
    });
    let marker_at = rx.recv_timeout(a.timeout).ok();
    let (rss, guest) = memory(pid, a.guest_mib * 1024);
    let peak = hwm(pid);
    if marker_at.is_none() {
        let _ = child.kill();
    }
    let deadline = start + a.timeout;
    let status = loop {
        match child.try_wait() {
            Ok(Some(s)) => break s.code().unwrap_or(-1),
            Ok(None) if Instant::now() < deadline => std::thread::sleep(Duration::from_millis(2)),
            _ => {
                let _ = child.kill();
                break child.wait().ok().and_then(|s| s.code()).unwrap_or(-1);
            }
        }
    };
    let exit_ms = start.elapsed().as_secs_f64() * 1000.0;
    if a.echo {
        for l in reader.join().unwrap_or_default() {
            println!("{l}");
        }
    }
    let line = serde_json::json!({
        "label": a.label,
        "marker_ms": marker_at.map(|t| (t - start).as_secs_f64() * 1000.0),
        "exit_ms": exit_ms,
        "rss_kib": rss,
        "guest_rss_kib": guest,
        "overhead_kib": rss.saturating_sub(guest),
        "hwm_kib": peak,
        "status": status,
    });
    println!("BENCH {line}");
    if marker_at.is_some() {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}
