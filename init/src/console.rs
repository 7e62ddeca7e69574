//! Status lines on the system console.
//!
//! PID 1's standard error is the console. Every line starts with `oxbow:` so
//! tests and people can pick them out of the kernel's output.

use std::io::Write;

/// Writes one status line to the console.
pub fn say(msg: impl std::fmt::Display) {
    // One write for the whole line: the console is shared with guests
    // that print to it, and a line written in pieces gets theirs spliced
    // into it. The console is all PID 1 has to report on; a failed write
    // has nowhere better to go.
    let line = format!("oxbow: {msg}\n");
    let _ = std::io::stderr().lock().write_all(line.as_bytes());
}

/// Writes a line to the kernel log, for panics and messages that must reach
/// `dmesg` even when the console is gone.
pub fn kmsg(msg: &str) {
    if let Ok(mut f) = std::fs::OpenOptions::new().write(true).open("/dev/kmsg") {
        let _ = writeln!(f, "<2>oxbow-init: {msg}");
    }
}

/// Installs a panic hook that reports to both the console and the kernel
/// log. PID 1 catches the unwind itself; see [`crate::stage2`].
pub fn install_panic_hook() {
    std::panic::set_hook(Box::new(|info| {
        let msg = format!("panic: {info}");
        say(&msg);
        kmsg(&msg);
    }));
}
