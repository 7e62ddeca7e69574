//! `bench-netd-run`: reconciling one interfaces file from a cold start,
//! `netd interfaces apply` against ifupdown2's `ifreload -a`, inside the
//! appliance for `bench-netd` (it needs 802.1Q and VLAN filtering).
//!
//! ```text
//! bench-netd-run [--runs N] [--bridges N] [--netd PATH] [--work DIR]
//! ```
//!
//! The file: two dummy links stand for NICs (`up0`, `up1`, made before
//! each run, as a node's NICs exist before its network is configured);
//! N bridges `vmbr1001…` (default 100), each with one address and with
//! one 802.1Q VLAN of `up0` (`up0.101…`, VLAN ids 101…) as its port,
//! `bridge-stp off`, `bridge-fd 0`; and one VLAN-aware bridge `vmbr2000`
//! over `up1` with `bridge-vids 2-4094`. Every keyword used is one netd
//! acts on (docs/netd.md).
//!
//! Each run of each side starts cold: this process moves into a fresh
//! network namespace (and mounts a fresh sysfs for it, in a mount
//! namespace of its own), makes the two dummies, and gives each side its
//! file: netd `interfaces.new` beside an empty live file; ifupdown2 the file
//! bind-mounted on `/etc/network/interfaces`, with empty tmpfs state
//! directories (`/run/network`, `/var/tmp/network`). The time is from the
//! spawn to the exit of the command. After each run the kernel state
//! (links with kind, master, VLAN id, VLAN filtering, STP, forward delay,
//! up, MTU; IPv4 addresses; bridge port VLANs with PVID and untagged
//! flags) is read with `ip -j`/`bridge -j` and compared with netd's first
//! run: any difference stops the benchmark. Then every link is deleted.
//!
//! Prints a line per round and, last,
//! `BENCH-NETD {"runs":..,"links":..,"netd_ms":[..],"ifreload_ms":[..]}`.

use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use nix::mount::{mount, MsFlags};
use serde_json::Value;

fn main() -> ExitCode {
    match bench() {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("bench-netd-run: {e:#}");
            ExitCode::FAILURE
        }
    }
}

/// The interfaces file of the benchmark.
fn interfaces_text(bridges: usize) -> String {
    let mut t =
        String::from("auto up0\niface up0 inet manual\n\nauto up1\niface up1 inet manual\n");
    for i in 1..=bridges {
        let vid = 100 + i;
        t += &format!(
            "\nauto up0.{vid}\niface up0.{vid} inet manual\n\
             \nauto vmbr{b}\niface vmbr{b} inet static\n\taddress 10.{hi}.{lo}.1/24\n\
             \tbridge-ports up0.{vid}\n\tbridge-stp off\n\tbridge-fd 0\n",
            b = 1000 + i,
            hi = i / 256,
            lo = i % 256
        );
    }
    t += "\nauto vmbr2000\niface vmbr2000 inet manual\n\tbridge-ports up1\n\tbridge-stp off\n\
          \tbridge-fd 0\n\tbridge-vlan-aware yes\n\tbridge-vids 2-4094\n";
    t
}

fn bench() -> Result<()> {
    let mut runs = 5usize;
    let mut bridges = 100usize;
    let mut netd = PathBuf::from("/usr/lib/oxbow/netd");
    let mut work = PathBuf::from("/var/tmp/bench-netd");
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        let mut v = || args.next().with_context(|| format!("{a} needs a value"));
        match a.as_str() {
            "--runs" => runs = v()?.parse()?,
            "--bridges" => bridges = v()?.parse()?,
            "--netd" => netd = PathBuf::from(v()?),
            "--work" => work = PathBuf::from(v()?),
            other => bail!("unknown argument {other}"),
        }
    }
    if !(1..=250).contains(&bridges) {
        bail!("--bridges: 1 to 250");
    }
    if Command::new("ifreload").arg("--help").output().is_err() {
        bail!("ifreload is missing (apt-get install ifupdown2)");
    }
    let version = Command::new("dpkg-query")
        .args(["-W", "-f", "${Version}", "ifupdown2"])
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).to_string())
        .unwrap_or_default();
    let version = if version.is_empty() {
        "(version unknown)".to_string()
    } else {
        version
    };
    if !Path::new("/etc/network/interfaces").exists() {
        bail!("/etc/network/interfaces is missing: ifupdown2's file to bind over");
    }
    if work.exists() {
        fs::remove_dir_all(&work)?;
    }
    fs::create_dir_all(work.join("netd"))?;
    let text = interfaces_text(bridges);
    let file = work.join("interfaces");
    fs::write(&file, &text)?;

    // A mount namespace of our own: sysfs per network namespace, and
    // ifupdown2's file and state directories, invisible to the rest.
    nix::sched::unshare(nix::sched::CloneFlags::CLONE_NEWNS).context("unshare(CLONE_NEWNS)")?;
    mount(
        None::<&str>,
        "/",
        None::<&str>,
        MsFlags::MS_REC | MsFlags::MS_PRIVATE,
        None::<&str>,
    )?;
    mount(
        Some(&file),
        "/etc/network/interfaces",
        None::<&str>,
        MsFlags::MS_BIND,
        None::<&str>,
    )
    .context("binding the file on /etc/network/interfaces")?;

    println!(
        "bench-netd-run: {bridges} bridges on {bridges} VLANs of up0 and one VLAN-aware bridge \
         over up1 ({} links); ifupdown2 {version}; {runs} runs",
        2 * bridges + 3
    );
    let mut reference: Option<BTreeMap<String, String>> = None;
    let (mut netd_ms, mut ifreload_ms) = (Vec::new(), Vec::new());
    for round in 0..=runs {
        let mut line = Vec::new();
        for side in ["netd", "ifreload"] {
            fresh_netns()?;
            let mut cmd = if side == "netd" {
                let live = work.join("netd/interfaces");
                let _ = fs::remove_file(&live);
                let _ = fs::remove_file(work.join("netd/interfaces.rollback"));
                fs::write(&live, "")?;
                fs::write(work.join("netd/interfaces.new"), &text)?;
                let mut c = Command::new(&netd);
                c.args(["interfaces", "apply", "--interfaces"]).arg(&live);
                c
            } else {
                for dir in ["/run/network", "/var/tmp/network"] {
                    fs::create_dir_all(dir)?;
                    mount(
                        Some("tmpfs"),
                        dir,
                        Some("tmpfs"),
                        MsFlags::empty(),
                        Some("mode=755"),
                    )
                    .with_context(|| format!("tmpfs on {dir}"))?;
                }
                let mut c = Command::new("ifreload");
                c.arg("-a");
                c
            };
            let log = work.join(format!("{side}.log"));
            cmd.stdin(Stdio::null())
                .stdout(fs::File::create(&log)?)
                .stderr(fs::File::create(work.join(format!("{side}.err")))?);
            let t = Instant::now();
            let status = cmd.status().with_context(|| format!("running {side}"))?;
            let ms = t.elapsed().as_secs_f64() * 1e3;
            let err = fs::read_to_string(work.join(format!("{side}.err"))).unwrap_or_default();
            if !status.success() {
                bail!("{side} failed ({status}):\n{err}");
            }
            let state = snapshot(bridges)?;
            match &reference {
                None => {
                    println!(
                        "kernel state after netd: {} entries (links, addresses, port VLANs)",
                        state.len()
                    );
                    reference = Some(state);
                }
                Some(r) => {
                    let diff = differences(r, &state);
                    if !diff.is_empty() {
                        bail!(
                            "{side} left another kernel state than netd (netd's | {side}'s):\n{}\n\
                             {side}'s stderr:\n{err}",
                            diff.join("\n")
                        );
                    }
                }
            }
            if round == 0 && !err.trim().is_empty() {
                println!("{side} said on stderr (first run):");
                for l in err.lines().take(10) {
                    println!("  {l}");
                }
            }
            delete_links(bridges)?;
            if side == "ifreload" {
                for dir in ["/run/network", "/var/tmp/network"] {
                    nix::mount::umount2(dir, nix::mount::MntFlags::MNT_DETACH)?;
                }
            }
            if round > 0 {
                if side == "netd" {
                    netd_ms.push(ms);
                } else {
                    ifreload_ms.push(ms);
                }
            }
            line.push(format!("{side} {ms:>9.1} ms"));
        }
        let tag = if round == 0 {
            "warm-up (state identical)".to_string()
        } else {
            format!("round {round:>2}")
        };
        println!("{tag}: {}", line.join("   "));
    }
    let (n, i) = (
        qemu_tests::bench::median(&netd_ms),
        qemu_tests::bench::median(&ifreload_ms),
    );
    println!(
        "medians of {runs}: netd interfaces apply {n:.1} ms, ifreload -a {i:.1} ms; netd/ifreload {:.3}",
        n / i
    );
    let out = serde_json::json!({
        "runs": runs,
        "bridges": bridges,
        "links": 2 * bridges + 3,
        "ifupdown2": version,
        "netd_ms": netd_ms,
        "ifreload_ms": ifreload_ms,
    });
    println!("BENCH-NETD {out}");
    Ok(())
}

/// Leaves the current network namespace for a new one with `lo` up and
/// the two dummy NICs, and mounts that namespace's sysfs on `/sys`.
fn fresh_netns() -> Result<()> {
    nix::sched::unshare(nix::sched::CloneFlags::CLONE_NEWNET).context("unshare(CLONE_NEWNET)")?;
    mount(
        Some("sysfs"),
        "/sys",
        Some("sysfs"),
        MsFlags::empty(),
        None::<&str>,
    )
    .context("sysfs on /sys")?;
    ip_batch("link set lo up\nlink add up0 type dummy\nlink add up1 type dummy\n")
}

fn ip_batch(cmds: &str) -> Result<()> {
    let mut child = Command::new("ip")
        .args(["-batch", "-"])
        .stdin(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .context("running ip")?;
    use std::io::Write;
    child
        .stdin
        .take()
        .context("ip's stdin")?
        .write_all(cmds.as_bytes())?;
    let out = child.wait_with_output()?;
    if !out.status.success() {
        bail!("ip -batch: {}", String::from_utf8_lossy(&out.stderr));
    }
    Ok(())
}

fn delete_links(bridges: usize) -> Result<()> {
    let mut cmds = String::from("link del vmbr2000\n");
    for i in 1..=bridges {
        cmds += &format!("link del vmbr{}\nlink del up0.{}\n", 1000 + i, 100 + i);
    }
    cmds += "link del up0\nlink del up1\n";
    ip_batch(&cmds)?;
    // Let the kernel finish with the links before the next run.
    std::thread::sleep(Duration::from_millis(200));
    Ok(())
}

fn json_of(args: &[&str]) -> Result<Value> {
    let out = Command::new(args[0]).args(&args[1..]).output()?;
    if !out.status.success() {
        bail!("{args:?}: {}", String::from_utf8_lossy(&out.stderr));
    }
    let text = String::from_utf8_lossy(&out.stdout);
    if text.trim().is_empty() {
        return Ok(Value::Array(Vec::new()));
    }
    serde_json::from_str(&text).with_context(|| format!("parsing the output of {args:?}"))
}

/// The benchmark's part of the kernel state, one entry per link, address
/// and port VLAN range.
fn snapshot(bridges: usize) -> Result<BTreeMap<String, String>> {
    let ours = |name: &str| -> bool {
        name == "up0"
            || name == "up1"
            || name == "vmbr2000"
            || name.strip_prefix("up0.").is_some()
            || name
                .strip_prefix("vmbr")
                .and_then(|n| n.parse::<usize>().ok())
                .is_some_and(|n| (1001..=1000 + bridges).contains(&n))
    };
    let mut state = BTreeMap::new();
    for l in json_of(&["ip", "-d", "-j", "link", "show"])?
        .as_array()
        .cloned()
        .unwrap_or_default()
    {
        let name = l["ifname"].as_str().unwrap_or_default().to_string();
        if !ours(&name) {
            continue;
        }
        let info = &l["linkinfo"];
        let data = &info["info_data"];
        let up = l["flags"]
            .as_array()
            .is_some_and(|f| f.iter().any(|x| x == "UP"));
        let mut desc = format!(
            "kind={} master={} up={up} mtu={}",
            info["info_kind"].as_str().unwrap_or("-"),
            l["master"].as_str().unwrap_or("-"),
            l["mtu"]
        );
        if info["info_kind"] == "vlan" {
            desc += &format!(" vlan={} protocol={}", data["id"], data["protocol"]);
        }
        if info["info_kind"] == "bridge" {
            desc += &format!(
                " vlan_filtering={} stp_state={} forward_delay={}",
                data["vlan_filtering"], data["stp_state"], data["forward_delay"]
            );
        }
        state.insert(format!("link {name}"), desc);
    }
    for a in json_of(&["ip", "-j", "-4", "addr", "show"])?
        .as_array()
        .cloned()
        .unwrap_or_default()
    {
        let name = a["ifname"].as_str().unwrap_or_default();
        if !ours(name) {
            continue;
        }
        for i in a["addr_info"].as_array().cloned().unwrap_or_default() {
            state.insert(
                format!(
                    "addr {name} {}/{}",
                    i["local"].as_str().unwrap_or("?"),
                    i["prefixlen"]
                ),
                String::new(),
            );
        }
    }
    for p in json_of(&["bridge", "-j", "-compressvlans", "vlan", "show"])?
        .as_array()
        .cloned()
        .unwrap_or_default()
    {
        let name = p["ifname"].as_str().unwrap_or_default();
        if !ours(name) {
            continue;
        }
        for v in p["vlans"].as_array().cloned().unwrap_or_default() {
            let range = match v["vlanEnd"].as_u64() {
                Some(end) => format!("{}-{end}", v["vlan"]),
                None => v["vlan"].to_string(),
            };
            let flags: Vec<String> = v["flags"]
                .as_array()
                .map(|f| {
                    f.iter()
                        .filter_map(|x| x.as_str().map(str::to_string))
                        .collect()
                })
                .unwrap_or_default();
            state.insert(format!("vlan {name} {range}"), flags.join(","));
        }
    }
    Ok(state)
}

fn differences(a: &BTreeMap<String, String>, b: &BTreeMap<String, String>) -> Vec<String> {
    let mut out = Vec::new();
    for (k, v) in a {
        match b.get(k) {
            None => out.push(format!("  {k}: {v} | (missing)")),
            Some(w) if w != v => out.push(format!("  {k}: {v} | {w}")),
            _ => {}
        }
    }
    for (k, v) in b {
        if !a.contains_key(k) {
            out.push(format!("  {k}: (missing) | {v}"));
        }
    }
    out.truncate(40);
    out
}
