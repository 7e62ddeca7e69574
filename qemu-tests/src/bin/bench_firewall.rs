//! Firewall benchmark: Oxbow's firewall against `nft -f`, side by side,
//! on the host, each side in a fresh network namespace of its own.
//!
//! The input is a `host.fw` with N rules (10,000 by default), each
//! `IN ACCEPT -p tcp -dport P -source 10.A.B.0/24` with its own address
//! and port, and a `cluster.fw` that enables the firewall. Per round:
//!
//! - **oxbow**: parse both files, compile, and apply the result as one
//!   nf_tables netlink batch (`firewall::NetlinkApplier`), timed from the
//!   text to the kernel's answer. The compiler merges the 10,000 rules
//!   into one rule that looks `address . port` up in a set.
//! - **nft -f, same script**: `nft -f` of the script the compiler renders
//!   for that same ruleset (the set form), so both sides end in the same
//!   kernel state (checked with `nft list ruleset` once before timing).
//! - **nft -f, one rule per line**: the 10,000 rules as a plain nft
//!   script, one `ip saddr … th dport … accept` rule per line, in the same
//!   table and chain layout with the same fixed rules around them: what
//!   the same policy costs as a hand-written ruleset without the merge.
//!
//! Both nft sides include starting the `nft` program. Rounds alternate the
//! sides; medians are compared.
//!
//! Usage: `bench-firewall [--rules N] [--runs N]` (root).

use std::io::Write;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use firewall::{compile, Applier, FwFile, Input, NetlinkApplier, Ruleset};

fn main() -> Result<()> {
    let mut rules = 10_000usize;
    let mut runs = 9usize;
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        match a.as_str() {
            "--rules" => rules = args.next().context("--rules N")?.parse()?,
            "--runs" => runs = args.next().context("--runs N")?.parse()?,
            other => bail!("unknown argument {other}"),
        }
    }
    if !(1..=65_536).contains(&rules) {
        bail!("--rules must be 1 to 65536");
    }
    let nft = Command::new("nft")
        .arg("--version")
        .output()
        .context("running nft (apt-get install nftables)")?;
    let nft_version = String::from_utf8_lossy(&nft.stdout).trim().to_string();

    let host_fw = host_fw(rules);
    let cluster_fw = "[OPTIONS]\nenable: 1\n";
    let ruleset = compile_text(&host_fw, cluster_fw)?;
    let same_script = ruleset.to_string();
    let plain_script = plain_script(&same_script, rules)?;

    // The three sides must describe one policy; the first two one state.
    let ours_state = in_fresh_netns(|| {
        NetlinkApplier.apply(&ruleset)?;
        list_ruleset()
    })?;
    let same_state = in_fresh_netns(|| {
        nft_f(&same_script)?;
        list_ruleset()
    })?;
    // One known difference in form: the netlink applier sends the five
    // neighbour-discovery ICMPv6 types (133 to 137) as one interval, nft
    // as five elements; both match the same packets.
    let same_state = same_state.replace(
        "icmpv6 type { nd-router-solicit, nd-router-advert, nd-neighbor-solicit, nd-neighbor-advert, nd-redirect }",
        "icmpv6 type { 133-137 }",
    );
    if ours_state != same_state {
        let (a, b) = first_difference(&ours_state, &same_state);
        bail!("netlink apply and nft -f of the rendered script differ:\n  netlink: {a}\n  nft -f:  {b}");
    }
    let plain_rules = in_fresh_netns(|| {
        nft_f(&plain_script)?;
        Ok(list_ruleset()?
            .lines()
            .filter(|l| l.contains(" accept comment \"host.fw:"))
            .count())
    })?;
    if plain_rules != rules {
        bail!("the plain script put {plain_rules} rules in force, not {rules}");
    }

    println!(
        "{rules} host rules; {nft_version}; same-script {} bytes, plain script {} bytes",
        same_script.len(),
        plain_script.len()
    );
    let (mut ours, mut same, mut plain) = (Vec::new(), Vec::new(), Vec::new());
    let mut compile_ms = Vec::new();
    for round in 1..=runs {
        let (o, c) = in_fresh_netns(|| {
            let t = Instant::now();
            let r = compile_text(&host_fw, cluster_fw)?;
            let c = t.elapsed();
            NetlinkApplier.apply(&r)?;
            Ok((t.elapsed(), c))
        })?;
        let s = in_fresh_netns(|| timed(|| nft_f(&same_script)))?;
        let p = in_fresh_netns(|| timed(|| nft_f(&plain_script)))?;
        println!(
            "round {round:>2}: oxbow {:>8.1} ms (compile {:>5.1})   nft -f same script {:>8.1} ms   nft -f one rule per line {:>8.1} ms",
            ms(o),
            ms(c),
            ms(s),
            ms(p)
        );
        ours.push(ms(o));
        compile_ms.push(ms(c));
        same.push(ms(s));
        plain.push(ms(p));
    }
    let (o, s, p) = (median(&mut ours), median(&mut same), median(&mut plain));
    println!("\nmedians of {runs}, each side in a fresh network namespace:");
    println!(
        "  oxbow (parse + compile + netlink batch)   {o:>8.1} ms   (parse + compile {:.1} ms)",
        median(&mut compile_ms)
    );
    println!(
        "  nft -f, the same (merged) script          {s:>8.1} ms   oxbow/nft {:.3}",
        o / s
    );
    println!(
        "  nft -f, the {rules} rules one per line    {p:>8.1} ms   oxbow/nft {:.3}",
        o / p
    );
    Ok(())
}

/// The benchmark's `host.fw`: `n` rules with distinct sources and ports.
fn host_fw(n: usize) -> String {
    let mut text = String::from("[RULES]\n");
    for i in 0..n {
        let (a, b, port) = rule_values(i);
        text += &format!("IN ACCEPT -p tcp -dport {port} -source 10.{a}.{b}.0/24\n");
    }
    text
}

fn rule_values(i: usize) -> (usize, usize, usize) {
    ((i / 256) % 256, i % 256, 1024 + i % 60_000)
}

fn compile_text(host: &str, cluster: &str) -> Result<Ruleset> {
    let host = FwFile::parse("host.fw", host).map_err(|e| anyhow::anyhow!("host.fw: {e}"))?;
    let cluster =
        FwFile::parse("cluster.fw", cluster).map_err(|e| anyhow::anyhow!("cluster.fw: {e}"))?;
    let input = Input {
        cluster,
        host,
        ..Input::default()
    };
    compile(&input).map_err(|e| anyhow::anyhow!("compiling: {e}"))
}

/// The rendered script with its one merged rule replaced by the rules it
/// stands for, one per line, each with its source line as comment.
fn plain_script(rendered: &str, n: usize) -> Result<String> {
    let mut out = String::new();
    let mut replaced = false;
    for line in rendered.lines() {
        if line.contains("comment \"host.fw:2 .. host.fw:") {
            let indent = &line[..line.len() - line.trim_start().len()];
            for i in 0..n {
                let (a, b, port) = rule_values(i);
                out += &format!(
                    "{indent}meta l4proto tcp ip saddr 10.{a}.{b}.0/24 th dport {port} accept comment \"host.fw:{}\"\n",
                    i + 2
                );
            }
            replaced = true;
        } else {
            out += line;
            out.push('\n');
        }
    }
    if !replaced {
        bail!("the rendered script has no merged rule to expand");
    }
    Ok(out)
}

/// Runs `f` on a new thread in a network namespace of its own, which
/// goes away with the thread.
fn in_fresh_netns<T: Send>(f: impl FnOnce() -> Result<T> + Send) -> Result<T> {
    std::thread::scope(|s| {
        s.spawn(move || {
            nix::sched::unshare(nix::sched::CloneFlags::CLONE_NEWNET)
                .context("unshare(CLONE_NEWNET): run as root")?;
            f()
        })
        .join()
        .map_err(|_| anyhow::anyhow!("benchmark thread panicked"))?
    })
}

fn nft_f(script: &str) -> Result<()> {
    let mut child = Command::new("nft")
        .args(["-f", "-"])
        .stdin(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .context("running nft")?;
    child
        .stdin
        .take()
        .context("nft's stdin")?
        .write_all(script.as_bytes())?;
    let out = child.wait_with_output()?;
    if !out.status.success() {
        bail!("nft -f: {}", String::from_utf8_lossy(&out.stderr));
    }
    Ok(())
}

/// The first line on which two listings differ, each cut to 200 bytes.
fn first_difference(a: &str, b: &str) -> (String, String) {
    let cut = |l: Option<&str>| -> String {
        let l = l.unwrap_or("(end)").trim();
        l.char_indices()
            .nth(200)
            .map_or(l, |(i, _)| &l[..i])
            .to_string()
    };
    let (mut la, mut lb) = (a.lines(), b.lines());
    loop {
        let (x, y) = (la.next(), lb.next());
        if x != y || x.is_none() {
            return (cut(x), cut(y));
        }
    }
}

fn list_ruleset() -> Result<String> {
    let out = Command::new("nft").args(["list", "ruleset"]).output()?;
    if !out.status.success() {
        bail!("nft list ruleset: {}", String::from_utf8_lossy(&out.stderr));
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

fn timed(f: impl FnOnce() -> Result<()>) -> Result<Duration> {
    let t = Instant::now();
    f()?;
    Ok(t.elapsed())
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

fn median(v: &mut [f64]) -> f64 {
    if v.is_empty() {
        return f64::NAN;
    }
    v.sort_by(|a, b| a.total_cmp(b));
    let m = v.len() / 2;
    if v.len() % 2 == 1 {
        v[m]
    } else {
        (v[m - 1] + v[m]) / 2.0
    }
}
