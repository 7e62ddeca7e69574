//! I/O benchmark: virtio-blk (fio) and virtio-net (iperf3) of Oxbow's
//! `vmm` against QEMU (`-enable-kvm`, q35, virtio-blk-pci and
//! virtio-net-pci on a tap, once with vhost-net and once without), side by
//! side in one appliance run: nested, inside the benchmark ISO
//! (`target/oxbow-bench.iso`, which adds Debian's `qemu-system-x86` and
//! `iperf3`) booted under QEMU.
//!
//! Every side boots the same guest: the PVH `vmlinux` (or, with `--kernel
//! vmlinuz`, the bzImage) and initramfs of `make guest`, 2 vCPUs, 512 MiB,
//! root file system `debian-bench.raw` (`make guest-debian-bench`: the
//! Debian guest plus fio, iperf3 and iproute2; attached to the appliance
//! as a virtio disk with `snapshot=on` and to the guest read-only), whose
//! initramfs executes `/usr/local/sbin/oxbow-io-bench` as PID 1 (see
//! `qemu_tests::guest::debian`). That script reads 256 MiB of random data
//! on a second, read-only disk (a file in a tmpfs of the appliance) with
//! fio (`--direct=1 --ioengine=libaio`: 4 KiB random reads at queue depth
//! 32, 1 MiB sequential reads at depth 8), runs iperf3 against the
//! appliance (guest to host, then `-R`), each for `--secs` seconds, prints
//! one `OXBOW-IO {json}` line on the console and powers off. The guest's
//! NIC is on the tap `bench0` (10.77.0.2/24), whose host end carries
//! 10.77.0.1 and an `iperf3 -s` of the appliance.
//!
//! Nested, the appliance sometimes resets in the middle of a side's run
//! (docs/perf.md). That side then loses its sample of the round, a new
//! appliance is booted and prepared, and the run goes on (at most `--runs`
//! restarts); the medians are over the samples each side has, whose count
//! is printed with them.
//!
//! `oxbow` is the VMM as apid runs it (`vhost=auto`: the kernel's vhost-net,
//! which the appliance has); with `--own-path`, `oxbow-own` adds it with
//! its own data path (`vhost=off`, the VMM's default on its command line).
//! Each round boots every side once, in an order rotated every round;
//! medians over `--runs` rounds are compared as ours / QEMU's: `oxbow`
//! against QEMU with and without vhost, and `oxbow-own` against both.
//!
//! Usage: `bench-vmm-io [--runs N] [--secs S] [--only TEXT] [--kernel
//! vmlinux|vmlinuz] [--iso PATH] [--also-vmm LABEL=PATH]... [--own-path]
//! [--threads] [--interleaved ROUNDS]` (`make
//! bench-vmm-io` builds everything first; `--only` keeps the sides whose
//! label contains TEXT; `--also-vmm` adds another build of Oxbow's VMM as
//! a side of its own, e.g. the previous commit's, carried on the
//! benchmark CD).
//!
//! `--interleaved ROUNDS` measures the network only, and in a different
//! way: every side's guest is booted once and all stay up together in one
//! appliance, each on a tap of its own serving iperf3 (the guest script's
//! `oxbow.bench.mode=serve`), while the appliance runs iperf3 against
//! each in turn, ROUNDS times over in a rotated order, so that the sides'
//! runs lie seconds apart instead of a guest boot and a fio run apart.
//! Each pair of sides is then also compared round by round (the median of
//! the per-round ratios, and how many rounds ours was ahead).
//!
//! `--threads` prints, every 2 s of each side's run, the appliance's CPU
//! counters (the `cpu` line of `/proc/stat`: user, nice, system, idle,
//! iowait, irq, softirq, in ticks) and the user and system ticks of each
//! thread of the side's VMM process, and of its vhost worker when it has
//! one (`CPU-SAMPLE <uptime> <cpu counters> | [name]=user+system ...`), for
//! seeing where the appliance's time goes. The sampling reads `/proc` with
//! the shell's builtins only (no process per sample).

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use qemu_tests::bench::{
    median, oxbow_argv, qemu_argv, shell_command, tagged_json, BenchAppliance, GuestSpec, CD_MOUNT,
};
use qemu_tests::guest::{debian, GuestAssets};
use qemu_tests::target_dir;
use serde_json::Value;

const GUEST_MIB: u32 = 512;
/// The NIC options apid gives the VMM (`api::guests::runtime`).
const APID_NET: &str = ",vhost=auto";
const TAP: &str = "bench0";
const HOST_IP: &str = "10.77.0.1";
const GUEST_IP: &str = "10.77.0.2/24";
const GUEST_MAC: &str = "02:0b:10:00:00:02";
/// The data disk inside the appliance: random bytes in a tmpfs.
const DATA: &str = "/run/bench/data.raw";
const DATA_MIB: u32 = 256;

/// The measurements, as the guest reports them, with their units and how
/// they are shown.
const METRICS: &[(&str, &str)] = &[
    ("randread_iops", "fio 4k randread IOPS"),
    ("seqread_mb_s", "fio 1M seqread MB/s"),
    ("tx_mbit_s", "iperf3 guest->host Mbit/s"),
    ("rx_mbit_s", "iperf3 host->guest Mbit/s"),
];

fn main() -> Result<()> {
    let mut runs = 3usize;
    let mut secs = 10u32;
    let mut kernel = "vmlinux".to_string();
    let mut iso = target_dir().join("oxbow-bench.iso");
    let mut only: Option<String> = None;
    let mut also: Vec<(String, PathBuf)> = Vec::new();
    let mut own_path = false;
    let mut threads = false;
    let mut interleaved: Option<usize> = None;
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        let mut value = || args.next().with_context(|| format!("{a} needs a value"));
        match a.as_str() {
            "--runs" => runs = value()?.parse().context("--runs N")?,
            "--secs" => secs = value()?.parse().context("--secs S")?,
            "--kernel" => kernel = value()?,
            "--only" => only = Some(value()?),
            "--iso" => iso = PathBuf::from(value()?),
            "--own-path" => own_path = true,
            "--threads" => threads = true,
            "--interleaved" => {
                let n: usize = value()?.parse().context("--interleaved ROUNDS")?;
                if n == 0 {
                    bail!("--interleaved needs at least 1 round");
                }
                interleaved = Some(n);
            }
            "--also-vmm" => {
                let v = value()?;
                let (label, path) = v.split_once('=').context("--also-vmm LABEL=PATH")?;
                if label.is_empty()
                    || !label
                        .bytes()
                        .all(|b| b.is_ascii_alphanumeric() || b == b'-')
                {
                    bail!("--also-vmm: the label {label:?} must be letters, digits and '-'");
                }
                also.push((label.to_string(), PathBuf::from(path)));
            }
            other => bail!("unknown argument {other}"),
        }
    }
    if !["vmlinux", "vmlinuz"].contains(&kernel.as_str()) {
        bail!("--kernel vmlinux or vmlinuz, not {kernel}");
    }
    if runs == 0 || secs == 0 {
        bail!("--runs and --secs must be at least 1");
    }
    if !iso.exists() {
        bail!("{} does not exist: run `make bench-vmm-io`", iso.display());
    }
    let assets = GuestAssets::locate()?;
    let root_image = debian::locate_bench()?;

    let work = tempfile::tempdir()?;
    let note = work.path().join("README");
    std::fs::write(
        &note,
        "bench-vmm-io: the guest runs from debian-bench.raw; this CD carries only \
         the VMM builds given with --also-vmm\n",
    )?;
    let mut cd_files: Vec<(PathBuf, &str)> = vec![(note, "README")];
    for (label, path) in &also {
        if !path.is_file() {
            bail!("--also-vmm {label}: {} does not exist", path.display());
        }
        cd_files.push((path.clone(), label.as_str()));
    }
    let started = Instant::now();
    let bring_up = || -> Result<(BenchAppliance, String, String, String, String)> {
        let mut vm = BenchAppliance::boot_with(
            &iso,
            &cd_files,
            vec![assets.iso.clone()],
            vec![root_image.clone()],
        )?;
        let qemu_version = vm.prepare_guest_media()?;
        let prep = format!(
            "set -e; mkdir -p /run/bench; mount -t tmpfs -o size={tmpfs}m tmpfs /run/bench; \
             head -c {DATA_MIB}M /dev/urandom >{DATA}; \
             ip tuntap add dev {TAP} mode tap; ip addr add {HOST_IP}/24 dev {TAP}; \
             ip link set {TAP} up; \
             root=$(blkid -L {label}); echo \"BENCH-ROOT $root\"; \
             for i in $(seq 60); do [ -c /dev/vhost-net ] && break; sleep 1; done; \
             [ -c /dev/vhost-net ] || echo 'BENCH-NOTE no /dev/vhost-net'; \
             echo \"IPERF-VERSION $(iperf3 --version | head -1)\"; \
             echo \"KERNEL-VERSION $(uname -r)\"",
            tmpfs = DATA_MIB + 32,
            label = debian::ROOT_LABEL,
        );
        let out = vm
            .run(&prep, Duration::from_secs(600))
            .context("preparing the data disk, the tap and the root disk")?;
        let tagged = |tag: &str| {
            out.lines()
                .find_map(|l| l.split_once(tag).map(|(_, v)| v.trim().to_string()))
                .unwrap_or_default()
        };
        let root = tagged("BENCH-ROOT ");
        if !root.starts_with("/dev/") {
            bail!(
                "no disk labelled {} in the appliance:\n{out}",
                debian::ROOT_LABEL
            );
        }
        if out.contains("BENCH-NOTE no /dev/vhost-net") {
            eprintln!(
                "warning: the appliance has no /dev/vhost-net; QEMU with vhost=on will fail \
                 and Oxbow moves frames itself"
            );
        }
        // iperf3's server, for the whole run.
        vm.start(&format!("exec iperf3 -s -B {HOST_IP}"))?;
        Ok((
            vm,
            root,
            qemu_version,
            tagged("IPERF-VERSION "),
            tagged("KERNEL-VERSION "),
        ))
    };
    let (mut vm, root, qemu_version, iperf_version, kernel_version) = bring_up()?;

    let cmdline = |ip: &str, mode: &str| {
        format!(
            "console=ttyS0 quiet panic=-1 ro oxbow.root=/dev/vda oxbow.init={init} \
             oxbow.bench.secs={secs} oxbow.bench.ip={ip} oxbow.bench.peer={HOST_IP} \
             oxbow.bench.disk=/dev/vdb{mode}",
            init = debian::IO_BENCH_INIT,
        )
    };
    // Every side's command line, for a guest `g` whose NIC is on `tap`.
    let make_sides = |g: &GuestSpec, tap: &str| -> Vec<(String, Vec<String>)> {
        // `net_options` follows the NIC's tap and MAC (`,vhost=auto`).
        let vmm_devices = |net_options: &str| {
            [
                "--disk".into(),
                format!("{root},readonly"),
                "--disk".into(),
                format!("{DATA},readonly"),
                "--net".into(),
                format!("tap={tap},mac={GUEST_MAC}{net_options}"),
                // As apid runs it: its own user (the filter is on by default).
                "--user".into(),
                qemu_tests::VMM_USER_OF_VM_100.into(),
            ]
        };
        let qemu = |vhost: &str| {
            qemu_argv(
                "q35",
                g,
                &[
                    "-drive".into(),
                    format!("file={root},format=raw,if=none,id=root,readonly=on,cache=writeback,aio=threads"),
                    "-device".into(),
                    "virtio-blk-pci,drive=root".into(),
                    "-drive".into(),
                    format!("file={DATA},format=raw,if=none,id=data,readonly=on,cache=writeback,aio=threads"),
                    "-device".into(),
                    "virtio-blk-pci,drive=data".into(),
                    "-netdev".into(),
                    format!("tap,id=n0,ifname={tap},script=no,downscript=no,vhost={vhost}"),
                    "-device".into(),
                    format!("virtio-net-pci,netdev=n0,mac={GUEST_MAC}"),
                ],
            )
        };
        let mut sides: Vec<(String, Vec<String>)> = vec![
            ("oxbow".into(), oxbow_argv(g, &vmm_devices(APID_NET))),
            ("qemu-vhost-on".into(), qemu("on")),
            ("qemu-vhost-off".into(), qemu("off")),
        ];
        if own_path {
            sides.insert(
                1,
                (
                    "oxbow-own".into(),
                    oxbow_argv(g, &vmm_devices(",vhost=off")),
                ),
            );
        }
        for (label, _) in &also {
            let mut argv = oxbow_argv(g, &vmm_devices(APID_NET));
            argv[0] = format!("{CD_MOUNT}/{label}");
            sides.push((format!("oxbow-{label}"), argv));
        }
        if let Some(only) = &only {
            sides.retain(|(label, _)| label.contains(only.as_str()));
        }
        sides
    };
    let g = GuestSpec::from_assets(&kernel, &cmdline(GUEST_IP, ""), GUEST_MIB);
    let sides = make_sides(&g, TAP);
    if sides.is_empty() {
        bail!(
            "--only {}: no side's label contains it",
            only.as_deref().unwrap_or_default()
        );
    }
    println!(
        "appliance up after {:.0} s; QEMU {qemu_version}; {iperf_version}; appliance kernel {kernel_version}",
        started.elapsed().as_secs_f64(),
    );
    if let Some(rounds) = interleaved {
        let guests: Vec<NetGuest> = (0..sides.len())
            .map(|i| {
                let tap = format!("ilv{i}");
                let net = 10 + i;
                let gi = GuestSpec::from_assets(
                    &kernel,
                    &cmdline(&format!("10.77.{net}.2/24"), " oxbow.bench.mode=serve"),
                    GUEST_MIB,
                );
                let (label, argv) = make_sides(&gi, &tap).swap_remove(i);
                NetGuest {
                    label,
                    argv,
                    tap,
                    net,
                }
            })
            .collect();
        // Nested, the appliance sometimes goes down (docs/perf.md): the
        // whole interleaved run is then made again in a new one, twice at
        // most.
        for attempt in 1.. {
            match interleaved_net(&mut vm, &guests, rounds, secs, &kernel) {
                Ok(()) => break,
                Err(e) if attempt < 3 => {
                    println!("attempt {attempt} failed: {e:#}\nbooting a new appliance");
                    let (new_vm, new_root, ..) = bring_up()?;
                    if new_root != root {
                        bail!("the new appliance has the root disk at {new_root}, not {root}");
                    }
                    vm = new_vm;
                }
                Err(e) => return Err(e),
            }
        }
        return Ok(());
    }
    println!(
        "data disk: {DATA_MIB} MiB of random bytes in a tmpfs ({DATA}); root: {root} \
         (debian-bench.raw, snapshot=on); guest: {kernel}, 2 vCPUs, {GUEST_MIB} MiB; \
         {secs} s per fio/iperf3 run"
    );
    println!("configurations:");
    for (label, argv) in &sides {
        println!("  {label}: {}", argv.join(" "));
    }

    // Boot, fio, iperf3 and power-off, with room for a slow nested boot.
    let limit = 300 + 8 * u64::from(secs);
    let mut results: BTreeMap<String, Vec<Value>> = BTreeMap::new();
    let mut restarts = 0usize;
    'rounds: for round in 1..=runs {
        let mut order = sides.clone();
        order.rotate_left((round - 1) % sides.len());
        for (label, argv) in &order {
            let t = Instant::now();
            let script = if threads {
                sampled_command(&shell_command(argv), limit)
            } else {
                format!("exec timeout -s KILL {limit} {}", shell_command(argv))
            };
            let (e, console) = match vm.run_status(&script, Duration::from_secs(limit + 60)) {
                Ok(r) => r,
                Err(err) => {
                    // The appliance itself went away (nested, it sometimes
                    // resets: docs/perf.md). This side loses its sample of
                    // the round; a new appliance takes over for the rest.
                    restarts += 1;
                    println!(
                        "round {round} {label:<15} the appliance stopped ({took:.0} s): {err:#}",
                        took = t.elapsed().as_secs_f64()
                    );
                    if restarts > runs {
                        println!("more appliance restarts than rounds: stopping here");
                        break 'rounds;
                    }
                    println!("booting a new appliance ({restarts} so far)");
                    let (new_vm, new_root, ..) = bring_up()?;
                    if new_root != root {
                        bail!("the new appliance has the root disk at {new_root}, not {root}");
                    }
                    vm = new_vm;
                    continue;
                }
            };
            let took = t.elapsed().as_secs_f64();
            if let Some(why) = console
                .lines()
                .find_map(|l| l.split_once("OXBOW-IO fail ").map(|(_, w)| w.trim()))
            {
                println!(
                    "round {round} {label:<15} the guest failed: {why} ({}, {took:.0} s)",
                    e.how
                );
                continue;
            }
            let v = match tagged_json(&console, "OXBOW-IO") {
                Ok(v) => with_mb_s(v),
                Err(_) => {
                    println!("round {round} {label:<15} no result line ({}, {took:.0} s): a missing sample", e.how);
                    let tail: Vec<&str> = console.lines().rev().take(40).collect();
                    for l in tail.iter().rev() {
                        println!("    | {l}");
                    }
                    continue;
                }
            };
            println!(
                "round {round} {label:<15} randread {:>8.0} IOPS  seqread {:>7.1} MB/s  \
                 guest->host {:>7.1} Mbit/s  host->guest {:>7.1} Mbit/s  ({took:.0} s, {})",
                num(&v, "randread_iops"),
                num(&v, "seqread_mb_s"),
                num(&v, "tx_mbit_s"),
                num(&v, "rx_mbit_s"),
                e.how
            );
            for l in console.lines().filter(|l| l.contains("OXBOW-IO stat ")) {
                println!("    {}", l.trim());
            }
            if threads {
                for l in console.lines().filter(|l| l.starts_with("CPU-SAMPLE ")) {
                    println!("    {l}");
                }
            }
            results.entry(label.clone()).or_default().push(v);
        }
    }

    let med = |label: &str, key: &str| -> f64 {
        let v: Vec<f64> = results
            .get(label)
            .into_iter()
            .flatten()
            .map(|r| num(r, key))
            .filter(|x| *x > 0.0)
            .collect();
        median(&v)
    };
    let count = |label: &str| results.get(label).map_or(0, Vec::len);
    println!(
        "\nmedians of {runs} rounds ({kernel}, 2 vCPUs, {GUEST_MIB} MiB, {secs} s per run; \
         nested KVM inside the appliance under QEMU TCG; {restarts} appliance restarts; \
         samples per side in parentheses):"
    );
    print!("  {:<28}", "");
    for (label, _) in &sides {
        print!(" {:>16}", format!("{label} ({})", count(label)));
    }
    // Oxbow as apid runs it against QEMU either way, and the VMM's own
    // data path against both.
    let mut pairs = vec![("oxbow", "qemu-vhost-on"), ("oxbow", "qemu-vhost-off")];
    if own_path {
        pairs.push(("oxbow-own", "qemu-vhost-on"));
        pairs.push(("oxbow-own", "qemu-vhost-off"));
    }
    for &(ours, peer) in &pairs {
        print!(
            " {:>16}",
            format!("{ours}/{}", peer.trim_start_matches("qemu-"))
        );
    }
    println!();
    for (key, what) in METRICS {
        print!("  {what:<28}");
        for (label, _) in &sides {
            print!(" {:>16.1}", med(label, key));
        }
        for &(ours, peer) in &pairs {
            print!(" {:>16.2}", med(ours, key) / med(peer, key));
        }
        println!();
    }
    Ok(())
}

/// One guest of `--interleaved`: a side's command line, its own tap and
/// subnet (`10.77.<net>.0/24`, the guest at `.2`).
struct NetGuest {
    label: String,
    argv: Vec<String>,
    tap: String,
    net: usize,
}

/// `--interleaved`: every side's guest is booted once, all of them up at
/// the same time in one appliance, each serving iperf3 on its own tap;
/// then the appliance runs iperf3 against them in turn, `rounds` times
/// over, guest to host and host to guest, in an order rotated every
/// round (after 10 s of quiet and an untimed run each way per guest), so
/// that the sides' runs follow each other within seconds and whatever
/// drifts in the appliance drifts for all of them. Besides the
/// medians, each pair of sides is compared round by round (the median of
/// the per-round ratios).
fn interleaved_net(
    vm: &mut BenchAppliance,
    guests: &[NetGuest],
    rounds: usize,
    secs: u32,
    kernel: &str,
) -> Result<()> {
    const BOOT_LIMIT: u64 = 600;
    let run_limit = 4 * u64::from(secs) + 60;
    let total =
        BOOT_LIMIT * guests.len() as u64 + 3 * run_limit * 2 * guests.len() as u64 * rounds as u64;
    println!(
        "interleaved: {rounds} rounds of iperf3 against every guest, {secs} s per run; guests:"
    );
    for g in guests {
        println!(
            "  {} (tap {}, 10.77.{}.2): {}",
            g.label,
            g.tap,
            g.net,
            g.argv.join(" ")
        );
    }
    let mut script = String::from(
        "set -u; pids=; stop() { kill -9 $pids 2>/dev/null; wait; }; \
         rate() { awk '/receiver/ {for (i = 2; i <= NF; i++) if ($i == \"Mbits/sec\") v = $(i - 1)} \
         END {print v + 0}' \"$1\"; }; ",
    );
    for g in guests {
        let (tap, n, label) = (&g.tap, g.net, &g.label);
        let log = format!("/run/bench/{tap}.log");
        script += &format!(
            "ip tuntap add dev {tap} mode tap && ip addr add 10.77.{n}.1/24 dev {tap} && \
             ip link set {tap} up || {{ stop; exit 3; }}; \
             timeout -s KILL {total} {cmd} >{log} 2>&1 </dev/null & p=$!; pids=\"$pids $p\"; \
             for t in $(seq {BOOT_LIMIT}); do grep -q 'OXBOW-IO serving' {log} && break; \
               kill -0 $p 2>/dev/null || break; sleep 1; done; \
             if grep -q 'OXBOW-IO serving' {log}; then echo \"NET-UP {label} $t\"; \
               sed -n 's/^.*OXBOW-IO info /NET-INFO {label} /p' {log}; \
             else echo \"NET-FAIL {label} did not come up\"; tail -n 60 {log}; stop; exit 4; fi; ",
            cmd = shell_command(&g.argv),
        );
    }
    // Quiet after the last boot, then one untimed run each way per guest
    // (the first connection of a guest's life sets up what later ones
    // find ready: ARP, the sockets' memory, the code paths).
    script += "sleep 10; ";
    for g in guests {
        script += &format!(
            "for flag in -R ''; do timeout {run_limit} iperf3 -c 10.77.{n}.2 -t 2 -f m $flag \
             >/dev/null 2>&1; done; ",
            n = g.net
        );
    }
    for round in 1..=rounds {
        let mut order: Vec<&NetGuest> = guests.iter().collect();
        order.rotate_left((round - 1) % guests.len());
        for (dir, flag) in [("tx", " -R"), ("rx", "")] {
            for g in &order {
                script += &format!(
                    "v=0; for try in 1 2 3; do \
                       if timeout {run_limit} iperf3 -c 10.77.{n}.2 -t {secs} -O 1 -f m{flag} \
                         >/run/bench/iperf.out 2>&1; then v=$(rate /run/bench/iperf.out); break; fi; \
                       cat /run/bench/iperf.out; sleep 2; done; \
                     echo \"NET-RUN {round} {label} {dir} $v\"; ",
                    n = g.net,
                    label = g.label,
                );
            }
        }
    }
    script += "for f in /run/bench/ilv*.log; do grep -h 'vmm:' $f; done; stop; exit 0";
    let before = vm.appliance().serial().len();
    let t = Instant::now();
    let outcome = vm.run_status(&script, Duration::from_secs(total + 120));
    let console = vm
        .appliance()
        .serial()
        .get(before..)
        .unwrap_or_default()
        .to_string();
    match &outcome {
        Ok((e, _)) => println!(
            "the run ended ({}) after {:.0} s",
            e.how,
            t.elapsed().as_secs_f64()
        ),
        Err(err) => println!(
            "the appliance stopped after {:.0} s: {err:#}\nthe runs it finished are below",
            t.elapsed().as_secs_f64()
        ),
    }
    // (round, label, dir) -> Mbit/s
    let mut runs: BTreeMap<(usize, String, String), f64> = BTreeMap::new();
    let mut failed = false;
    for l in console.lines() {
        if let Some((_, rest)) = l.split_once("NET-UP ") {
            println!("  up: {}", rest.trim());
        } else if let Some((_, rest)) = l.split_once("NET-INFO ") {
            println!("  guest: {}", rest.trim());
        } else if let Some((_, rest)) = l.split_once("NET-FAIL ") {
            // The end of that guest's console follows.
            println!("  failed: {}", rest.trim());
            failed = true;
        } else if failed {
            println!("    | {l}");
        } else if l.contains("vmm:") {
            println!("  {}", l.trim());
        } else if let Some((_, rest)) = l.split_once("NET-RUN ") {
            let w: Vec<&str> = rest.split_whitespace().collect();
            if let [round, label, dir, v] = w[..] {
                let (Ok(round), Ok(v)) = (round.parse::<usize>(), v.parse::<f64>()) else {
                    continue;
                };
                println!("round {round} {label:<15} {dir} {v:>8.1} Mbit/s");
                if v > 0.0 {
                    runs.insert((round, label.to_string(), dir.to_string()), v);
                }
            }
        }
    }
    let labels: Vec<&str> = guests.iter().map(|g| g.label.as_str()).collect();
    let mut pairs: Vec<(&str, &str)> = Vec::new();
    for peer in ["qemu-vhost-on", "qemu-vhost-off"]
        .into_iter()
        .filter(|p| labels.contains(p))
    {
        for ours in labels.iter().filter(|l| l.starts_with("oxbow")) {
            pairs.push((ours, peer));
        }
    }
    // Another build (`--also-vmm`) against the VMM of the image.
    if labels.contains(&"oxbow") {
        for other in labels.iter().filter(|l| l.starts_with("oxbow-")) {
            pairs.push((other, "oxbow"));
        }
    }
    println!(
        "\nmedians over {rounds} interleaved rounds ({kernel}, 2 vCPUs, {GUEST_MIB} MiB, \
         {secs} s per run; nested KVM inside the appliance under QEMU TCG; runs per side in \
         parentheses):"
    );
    for (dir, what) in [
        ("tx", "iperf3 guest->host Mbit/s"),
        ("rx", "iperf3 host->guest Mbit/s"),
    ] {
        let vals = |label: &str| -> Vec<f64> {
            runs.iter()
                .filter(|((_, l, d), _)| l == label && d == dir)
                .map(|(_, v)| *v)
                .collect()
        };
        print!("  {what:<28}");
        for label in &labels {
            let v = vals(label);
            print!(" {label} {:.1} ({})", median(&v), v.len());
        }
        println!();
        for (ours, peer) in &pairs {
            let ratios: Vec<f64> = (1..=rounds)
                .filter_map(|r| {
                    let a = runs.get(&(r, ours.to_string(), dir.to_string()))?;
                    let b = runs.get(&(r, peer.to_string(), dir.to_string()))?;
                    Some(a / b)
                })
                .collect();
            let mut sorted = ratios.clone();
            sorted.sort_by(|a, b| a.total_cmp(b));
            println!(
                "    {ours}/{peer}: ratio of medians {:.2}; per round: median {:.2}, range {:.2}-{:.2} over {} rounds, ahead in {}",
                median(&vals(ours)) / median(&vals(peer)),
                median(&ratios),
                sorted.first().copied().unwrap_or(f64::NAN),
                sorted.last().copied().unwrap_or(f64::NAN),
                ratios.len(),
                ratios.iter().filter(|r| **r >= 1.0).count(),
            );
        }
    }
    match outcome? {
        (e, _) if e.code == Some(0) => Ok(()),
        (e, _) => bail!("the interleaved run failed ({})", e.how),
    }
}

/// `command` in the background, killed after `limit` seconds, with a
/// `CPU-SAMPLE` line every 2 s while it runs (see `--threads`); the
/// script's status is the command's.
fn sampled_command(command: &str, limit: u64) -> String {
    // `stat` fields after "pid (comm) ": utime is the 12th, stime the 13th.
    // Only builtins in the loop: a subshell per thread per sample would
    // cost more than what it measures under emulation.
    let ticks = r#"read -r l < "$1/stat"; set -- ${l##*) }; T="${12}+${13}""#;
    format!(
        "ticks() {{ {ticks}; }}; \
         {command} & p=$!; (sleep {limit}; kill -9 $p 2>/dev/null) & w=$!; \
         while kill -0 $p 2>/dev/null; do \
           read -r up _ < /proc/uptime; read -r cpu < /proc/stat; s=\"CPU-SAMPLE $up ${{cpu#cpu }} |\"; \
           for t in /proc/$p/task/*; do read -r c < $t/comm; ticks $t; s=\"$s [$c]=$T\"; done; \
           for k in /proc/[0-9]*; do read -r c < $k/comm 2>/dev/null || continue; \
             [ \"$c\" = \"vhost-$p\" ] && ticks $k && s=\"$s [vhost]=$T\"; done; \
           echo \"$s\"; sleep 2; \
         done; kill $w 2>/dev/null; wait $p"
    )
}

/// A number from the guest's line (0 when missing or not a number).
fn num(v: &Value, key: &str) -> f64 {
    v[key].as_f64().unwrap_or(0.0)
}

/// Adds `seqread_mb_s` (10^6 bytes per second) from fio's KiB/s.
fn with_mb_s(mut v: Value) -> Value {
    let kib = num(&v, "seqread_kib_s");
    v["seqread_mb_s"] = serde_json::json!(kib * 1024.0 / 1e6);
    v
}
