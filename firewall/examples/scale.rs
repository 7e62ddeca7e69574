//! Compiles a host.fw with N rules and applies it, timing each step:
//!
//!   cargo run --release -p firewall --example scale -- [N] [--apply] [--netlink]
//!
//! With `--apply` (root) the ruleset is put in force in the current
//! network namespace (run it under `ip netns exec`), through `nft -f` or,
//! with `--netlink`, as one netlink batch; then the rendered script is
//! fed to `nft -f` on its own, as the peer. `--script PATH` saves the
//! rendered script.

use std::io::Write;
use std::process::{Command, Stdio};
use std::time::Instant;

use firewall::{compile, Applier, FwFile, Input, NetlinkApplier, NftApplier};

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let n: usize = args.first().and_then(|a| a.parse().ok()).unwrap_or(10_000);
    let apply = args.iter().any(|a| a == "--apply");
    let netlink = args.iter().any(|a| a == "--netlink");
    let mut text = String::from("[RULES]\n");
    for i in 0..n {
        text += &format!(
            "IN ACCEPT -p tcp -dport {} -source 10.{}.{}.0/24\n",
            1024 + i % 60000,
            (i / 256) % 256,
            i % 256
        );
    }
    let t = Instant::now();
    let host = FwFile::parse("host.fw", &text).expect("valid");
    let cluster = FwFile::parse("cluster.fw", "[OPTIONS]\nenable: 1\n").expect("valid");
    let input = Input {
        cluster,
        host,
        ..Input::default()
    };
    let ruleset = compile(&input).expect("compiles");
    let compiled = t.elapsed();
    let script = ruleset.to_string();
    let rendered = t.elapsed();
    println!(
        "{n} rules: parse+compile {:.1} ms, render {:.1} ms ({} bytes)",
        compiled.as_secs_f64() * 1e3,
        (rendered - compiled).as_secs_f64() * 1e3,
        script.len()
    );
    if let Some(i) = args.iter().position(|a| a == "--script") {
        std::fs::write(&args[i + 1], &script).expect("script written");
    }
    if !apply {
        return;
    }
    let t = Instant::now();
    let ours = if netlink {
        NetlinkApplier.apply(&ruleset).expect("applies");
        t.elapsed() + compiled
    } else {
        NftApplier::default().apply(&ruleset).expect("applies");
        t.elapsed() + rendered
    };
    let t = Instant::now();
    let mut child = Command::new("nft")
        .args(["-f", "-"])
        .stdin(Stdio::piped())
        .spawn()
        .expect("nft runs");
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(script.as_bytes())
        .expect("write");
    assert!(child.wait().expect("nft").success());
    let peer = t.elapsed();
    println!(
        "compile+apply ({}) {:.1} ms; nft -f of the same script alone {:.1} ms; ratio {:.2}",
        if netlink { "netlink" } else { "nft" },
        ours.as_secs_f64() * 1e3,
        peer.as_secs_f64() * 1e3,
        ours.as_secs_f64() / peer.as_secs_f64()
    );
}
