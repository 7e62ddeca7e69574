//! `bench-ct-run`: container start time, Oxbow's `ctr` against LXC's
//! `lxc-start -F` and a bare namespaces + `pivot_root` floor, on one
//! machine (the appliance for `bench-ct`, or any root shell with
//! busybox-static and lxc installed).
//!
//! ```text
//! bench-ct-run --config privileged|unprivileged [--runs N] [--work DIR]
//!              [--ctr PATH] [--also-ctr LABEL=PATH] [--busybox PATH]
//!              [--settle-ms MS]
//! bench-ct-run floor ROOT HOSTNAME [--userns]
//! bench-ct-run noop
//! ```
//!
//! All three sides start the same root file system: busybox-static and
//! an `/sbin/init` shell script that writes one line to the FIFO
//! `/bench.fifo` and exits. The time is taken from the spawn of the
//! runtime's command to the moment this process reads that line from the
//! FIFO's host path; then the runtime is left to tear the container down
//! (its init has exited) and waited for, outside the time. Sides alternate
//! within each round after one untimed warm-up round, in an order that
//! goes through every permutation of the sides in turn (round r takes
//! permutation r), so that every side is first, last, and right after
//! every other side equally often: with a fixed order the first side of
//! every round had an advantage of its own (two builds of ctr against
//! each other, swapped between two runs: 0.88 and 1/0.965), and an order
//! merely rotated still had each side follow the same one every round
//! (docs/perf.md).
//!
//! - `privileged`: no user namespace, no network interface (LXC: `lxc.net.0.type
//!   = empty`; ours: `unprivileged: 0`, no `net0`).
//! - `unprivileged`: user namespace with Proxmox's id map (`0 100000
//!   65536`, the root file system's owners shifted), one veth whose host end
//!   joins a bridge, and cgroup limits (memory 256 MiB, no swap, one CPU,
//!   256 tasks).
//!
//! Both runtimes get LXC's Proxmox-like defaults: LXC includes Debian's
//! `common.conf` (capability drops, seccomp profile, `proc:mixed sys:mixed
//! cgroup:mixed`, the cgroup device list) and, unprivileged, `userns.conf`;
//! two ttys; AppArmor unconfined (ours has none). Both carry the cgroup
//! limits Proxmox writes for a container (in the privileged case its
//! defaults: memory 512 MiB, swap 512 MiB, CPU weight 100) where the cgroup
//! v2 controllers exist; where they do not (a host with controllers on
//! cgroup v1), LXC is given none and ours reports them as not applied.
//!
//! The floor (`floor`, run as a child of this program so it is one exec
//! like the others): `clone` with new mount, pid, uts, ipc, net and cgroup
//! namespaces (and a user namespace with the same id map when
//! unprivileged), mounts made private, the root bind-mounted on itself,
//! `/proc` mounted, `pivot_root`, the old root detached, the host name
//! set, `exec` of `/sbin/init`. No `/dev`, no cgroup, no network, no
//! capability drops, no seccomp.
//!
//! Before each start the machine is left alone for `--settle-ms`
//! milliseconds (default 100): a container's network namespace, veth and
//! cgroup are torn down by the kernel after its runtime has exited (the
//! network namespace on a workqueue), and without the pause that work
//! fell on whichever side came next in the round (0 measures that way).
//!
//! `--also-ctr LABEL=PATH` adds another build of `ctr` as a fourth side
//! (say, the previous commit's), started the same way in every round, to
//! compare two versions within one run rather than across runs.
//!
//! Prints a line per round and, last, one line
//! `BENCH-CT {"config":..,"runs":..,"ours_ms":[..],"lxc_ms":[..],"floor_ms":[..]}`.

use std::ffi::CString;
use std::fs;
use std::io::Read;
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitCode, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use nix::mount::{mount, umount2, MntFlags, MsFlags};
use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
use qemu_tests::bench::{median, median_of_ratios};

const INIT: &str = "#!/bin/sh\necho up >/bench.fifo\n";
const BRIDGE: &str = "benchbr0";
const HWADDR: &str = "BC:24:11:00:00:01";
/// Starts of ours with the monitor's debug log after the timed rounds.
const PHASE_RUNS: usize = 5;
const MARKER_TIMEOUT: Duration = Duration::from_secs(120);
const EXIT_TIMEOUT: Duration = Duration::from_secs(120);

#[derive(Clone, Copy, PartialEq, Eq)]
enum Config {
    Privileged,
    Unprivileged,
}

impl Config {
    fn name(self) -> &'static str {
        match self {
            Config::Privileged => "privileged",
            Config::Unprivileged => "unprivileged",
        }
    }
    fn vmid(self) -> u32 {
        match self {
            Config::Privileged => 9001,
            Config::Unprivileged => 9002,
        }
    }
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let r = if args.first().map(String::as_str) == Some("floor") {
        floor(&args[1..]).map(|()| ExitCode::SUCCESS)
    } else if args.first().map(String::as_str) == Some("noop") {
        return ExitCode::SUCCESS;
    } else {
        bench(&args).map(|()| ExitCode::SUCCESS)
    };
    r.unwrap_or_else(|e| {
        eprintln!("bench-ct-run: {e:#}");
        ExitCode::FAILURE
    })
}

struct Setup {
    config: Config,
    work: PathBuf,
    rootfs: PathBuf,
    ctr: PathBuf,
    /// A second build of ctr to compare, with its label.
    also_ctr: Option<(String, PathBuf)>,
    limits: bool,
}

fn bench(args: &[String]) -> Result<()> {
    let mut config = None;
    let mut runs = 20usize;
    let mut work = PathBuf::from("/var/tmp/bench-ct");
    let mut ctr = PathBuf::from("/usr/lib/oxbow/ctr");
    let mut busybox = PathBuf::from("/bin/busybox");
    let mut also_ctr = None;
    let mut settle = Duration::from_millis(100);
    let mut it = args.iter();
    while let Some(a) = it.next() {
        let mut v = || it.next().with_context(|| format!("{a} needs a value"));
        match a.as_str() {
            "--config" => {
                config = Some(match v()?.as_str() {
                    "privileged" => Config::Privileged,
                    "unprivileged" => Config::Unprivileged,
                    other => bail!("--config {other}: privileged or unprivileged"),
                })
            }
            "--runs" => runs = v()?.parse().context("--runs")?,
            "--settle-ms" => settle = Duration::from_millis(v()?.parse().context("--settle-ms")?),
            "--work" => work = PathBuf::from(v()?),
            "--ctr" => ctr = PathBuf::from(v()?),
            "--busybox" => busybox = PathBuf::from(v()?),
            "--also-ctr" => {
                let value = v()?;
                let (label, path) = value.split_once('=').context("--also-ctr LABEL=PATH")?;
                also_ctr = Some((label.to_string(), PathBuf::from(path)));
            }
            other => bail!("unknown argument {other}"),
        }
    }
    let config = config.context("--config privileged|unprivileged")?;
    let lxc_version = Command::new("lxc-start")
        .arg("--version")
        .output()
        .context("running lxc-start (apt-get install lxc)")?;
    let lxc_version = String::from_utf8_lossy(&lxc_version.stdout)
        .trim()
        .to_string();
    if work.exists() {
        fs::remove_dir_all(&work).with_context(|| format!("clearing {}", work.display()))?;
    }
    fs::create_dir_all(&work)?;
    let owner = match config {
        Config::Privileged => 0,
        Config::Unprivileged => 100_000,
    };
    let rootfs = work.join("rootfs");
    make_rootfs(&rootfs, &busybox, owner)?;
    let limits = ["memory", "cpu", "pids"]
        .iter()
        .all(|c| v2_controllers().iter().any(|x| x == c));
    let setup = Setup {
        config,
        work: work.clone(),
        rootfs,
        ctr,
        also_ctr,
        limits,
    };
    if config == Config::Unprivileged {
        let _ = Command::new("ip")
            .args(["link", "del", BRIDGE])
            .stderr(Stdio::null())
            .status();
        run_ok(Command::new("ip").args(["link", "add", BRIDGE, "type", "bridge"]))?;
        run_ok(Command::new("ip").args(["link", "set", BRIDGE, "up"]))?;
    }
    write_ctr_config(&setup)?;
    write_lxc_config(&setup)?;
    println!(
        "bench-ct-run: {} configuration, {runs} runs, {} ms of quiet before each start; LXC {lxc_version}; cgroup v2 limits {}",
        config.name(),
        settle.as_millis(),
        if limits {
            "applied by both"
        } else {
            "unavailable (controllers not in cgroup v2): none for either"
        }
    );
    let fifo_path = setup.rootfs.join("bench.fifo");
    // Opened read-write, so the FIFO never reports end of file between
    // runs (this process is a writer too).
    let fifo: OwnedFd = nix::fcntl::open(
        &fifo_path,
        nix::fcntl::OFlag::O_RDWR | nix::fcntl::OFlag::O_NONBLOCK | nix::fcntl::OFlag::O_CLOEXEC,
        nix::sys::stat::Mode::empty(),
    )
    .map(|fd| {
        // SAFETY: open returned a new descriptor this function now owns.
        unsafe { <OwnedFd as std::os::fd::FromRawFd>::from_raw_fd(fd) }
    })
    .with_context(|| format!("opening {}", fifo_path.display()))?;

    // For the breakdown: what an exec of each side's binary costs here
    // before it does any work: `ctr --help` (the static binary, its
    // relocation and its log set-up) and this program's `noop` (the
    // floor's binary).
    for (what, mut cmd) in [
        ("`ctr --help`", {
            let mut c = Command::new(&setup.ctr);
            c.arg("--help");
            c
        }),
        ("the floor's binary (`bench-ct-run noop`)", {
            let mut c = Command::new(std::env::current_exe()?);
            c.arg("noop");
            c
        }),
    ] {
        let mut ms = Vec::new();
        for _ in 0..10 {
            let t = Instant::now();
            let st = cmd.stdout(Stdio::null()).stderr(Stdio::null()).status()?;
            ms.push(t.elapsed().as_secs_f64() * 1e3);
            if !st.success() {
                bail!("{what} failed: {st}");
            }
        }
        println!("one exec of {what}: {:.2} ms (median of 10)", median(&ms));
    }
    let mut sides = vec!["ours", "lxc", "floor"];
    if setup.also_ctr.is_some() {
        sides.push("also");
    }
    let mut times: Vec<Vec<f64>> = vec![Vec::new(); sides.len()];
    let result = (|| -> Result<()> {
        for round in 0..=runs {
            // Round r takes the sides in permutation r, so no side is
            // always first after the pause, or always the one after LXC's
            // teardown; the line keeps the sides' order.
            let mut ms_of = vec![0.0; sides.len()];
            for i in permutation(round, sides.len()) {
                let side = sides[i];
                std::thread::sleep(settle);
                let ms = start_once(&setup, side, &fifo)
                    .with_context(|| format!("round {round}, {side}"))?;
                if round > 0 {
                    times[i].push(ms);
                }
                ms_of[i] = ms;
            }
            let line: Vec<String> = sides
                .iter()
                .zip(&ms_of)
                .map(|(side, ms)| format!("{side} {ms:>8.2} ms"))
                .collect();
            let tag = if round == 0 {
                "warm-up".to_string()
            } else {
                format!("round {round:>2}")
            };
            println!("{tag}: {}", line.join("   "));
        }
        Ok(())
    })();
    // A few more starts of ours, not timed, with the monitor's debug log:
    // its steps, each at its time since the spawn.
    let mut phases = Vec::new();
    if result.is_ok() {
        for _ in 0..PHASE_RUNS {
            std::thread::sleep(settle);
            let spawned = std::time::SystemTime::now();
            let marker = start_with_env(&setup, "ours", &fifo, &[("RUST_LOG", "debug")]);
            let log = fs::read_to_string(setup.work.join("ours.log")).unwrap_or_default();
            phases.push((spawned, marker, log));
        }
    }
    if config == Config::Unprivileged {
        let _ = Command::new("ip").args(["link", "del", BRIDGE]).status();
    }
    result?;
    for (run, (spawned, marker, log)) in phases.iter().enumerate() {
        let since_midnight = |t: std::time::SystemTime| {
            t.duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_secs_f64() % 86_400.0)
                .unwrap_or(0.0)
        };
        let t0 = since_midnight(*spawned);
        println!("phases of debug start {}:", run + 1);
        for l in log
            .lines()
            .filter(|l| l.contains("container ") || l.contains("ctr "))
        {
            // "2026-12-03T07:10:00.123456Z DEBUG ctr::monitor: container 1: ..."
            let tod = l.get(11..26).and_then(|t| {
                let mut p = t.split(':');
                let h: f64 = p.next()?.parse().ok()?;
                let m: f64 = p.next()?.parse().ok()?;
                let s: f64 = p.next()?.trim_end_matches('Z').parse().ok()?;
                Some(h * 3600.0 + m * 60.0 + s)
            });
            let what = l
                .split_once("container ")
                .or_else(|| l.split_once("ctr "))
                .map(|(_, w)| w)
                .unwrap_or(l);
            if let Some(tod) = tod {
                println!("phase {:>8.1} ms  {what}", (tod - t0) * 1e3);
            }
        }
        if let Ok(ms) = marker {
            println!("phase {ms:>8.1} ms  the guest init's line on the FIFO");
        }
    }
    let mut med: Vec<f64> = times.iter().map(|t| median(t)).collect();
    // The median of each round's own ratio as well: the sides of a round
    // ran within a second of each other, so it is less moved by what
    // drifts over a run than the ratio of the medians.
    let per_round = |a: usize, b: usize| median_of_ratios(&times[a], &times[b]);
    println!(
        "medians of {runs}: ours {:.2} ms, lxc-start {:.2} ms, floor {:.2} ms; \
         ours/lxc-start {:.2}, ours/floor {:.2} (per round {:.2}), lxc-start/floor {:.2}",
        med[0],
        med[1],
        med[2],
        med[0] / med[1],
        med[0] / med[2],
        per_round(0, 2),
        med[1] / med[2]
    );
    if let Some((label, path)) = &setup.also_ctr {
        println!(
            "also: {label} ({}) {:.2} ms; ours/{label} {:.2} (per round {:.2}), \
             {label}/floor {:.2} (per round {:.2})",
            path.display(),
            med[3],
            med[0] / med[3],
            per_round(0, 3),
            med[3] / med[2],
            per_round(3, 2)
        );
    }
    let mut out = serde_json::json!({
        "config": config.name(),
        "runs": runs,
        "lxc": lxc_version,
        "limits": limits,
        "ours_ms": times[0],
        "lxc_ms": times[1],
        "floor_ms": times[2],
    });
    if let Some((label, _)) = &setup.also_ctr {
        out["also"] = serde_json::json!({ "label": label, "ms": times[3] });
    }
    med.clear();
    println!("BENCH-CT {out}");
    Ok(())
}

/// One start: spawn, wait for the init's line on the FIFO (timed), then
/// wait for the runtime to finish (not timed).
fn start_once(setup: &Setup, side: &str, fifo: &OwnedFd) -> Result<f64> {
    start_with_env(setup, side, fifo, &[])
}

/// [`start_once`] with variables added to the side's environment.
fn start_with_env(setup: &Setup, side: &str, fifo: &OwnedFd, env: &[(&str, &str)]) -> Result<f64> {
    let log = fs::File::create(setup.work.join(format!("{side}.log")))?;
    let mut cmd = match side {
        "ours" | "also" => {
            let ctr = match (&setup.also_ctr, side) {
                (Some((_, path)), "also") => path,
                _ => &setup.ctr,
            };
            let mut c = Command::new(ctr);
            c.arg("start")
                .arg("--config")
                .arg(setup.work.join(format!("ctr/{}.conf", setup.config.vmid())))
                .arg("--rootfs")
                .arg(&setup.rootfs)
                .arg("--console-log")
                .arg(setup.work.join("ours-console.log"))
                .arg("--shutdown-timeout")
                .arg("5");
            c
        }
        "lxc" => {
            let mut c = Command::new("lxc-start");
            c.arg("-F")
                .arg("-n")
                .arg(lxc_name(setup.config))
                .arg("-P")
                .arg(setup.work.join("lxc"))
                .arg("-o")
                .arg(setup.work.join("lxc-start.log"))
                .arg("-l")
                .arg("ERROR");
            c
        }
        _ => {
            let mut c = Command::new(std::env::current_exe()?);
            c.arg("floor").arg(&setup.rootfs).arg("bench");
            if setup.config == Config::Unprivileged {
                c.arg("--userns");
            }
            c
        }
    };
    cmd.envs(env.iter().copied())
        .stdin(Stdio::null())
        .stdout(log.try_clone()?)
        .stderr(log);
    let t = Instant::now();
    let mut child = cmd.spawn().with_context(|| format!("spawning {side}"))?;
    let mut pfd = [PollFd::new(fifo.as_fd(), PollFlags::POLLIN)];
    let timeout =
        PollTimeout::try_from(MARKER_TIMEOUT.as_millis() as i32).unwrap_or(PollTimeout::MAX);
    let ready = poll(&mut pfd, timeout).context("poll")?;
    let elapsed = t.elapsed();
    if ready == 0 {
        let _ = child.kill();
        let _ = child.wait();
        bail!(
            "no line from the container's init within {MARKER_TIMEOUT:?}; log:\n{}",
            side_log(setup, side)
        );
    }
    let mut buf = [0u8; 64];
    let _ = nix::unistd::read(fifo.as_raw_fd(), &mut buf);
    let status = wait_timeout(&mut child, EXIT_TIMEOUT)?;
    if !status.success() {
        bail!(
            "{side} exited with {status}; log:\n{}",
            side_log(setup, side)
        );
    }
    Ok(elapsed.as_secs_f64() * 1e3)
}

fn side_log(setup: &Setup, side: &str) -> String {
    let mut s = fs::read_to_string(setup.work.join(format!("{side}.log"))).unwrap_or_default();
    if side == "lxc" {
        s += &fs::read_to_string(setup.work.join("lxc-start.log")).unwrap_or_default();
    }
    s
}

fn wait_timeout(child: &mut Child, timeout: Duration) -> Result<std::process::ExitStatus> {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(s) = child.try_wait()? {
            return Ok(s);
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            bail!("did not exit within {timeout:?}");
        }
        std::thread::sleep(Duration::from_millis(2));
    }
}

fn lxc_name(config: Config) -> String {
    format!("bench-{}", config.name())
}

/// The controllers of the cgroup v2 hierarchy (`/sys/fs/cgroup` or the
/// hybrid layout's `/sys/fs/cgroup/unified`).
fn v2_controllers() -> Vec<String> {
    for root in ["/sys/fs/cgroup", "/sys/fs/cgroup/unified"] {
        if let Ok(s) = fs::read_to_string(format!("{root}/cgroup.controllers")) {
            return s.split_whitespace().map(str::to_string).collect();
        }
    }
    Vec::new()
}

fn write_ctr_config(s: &Setup) -> Result<()> {
    let dir = s.work.join("ctr");
    fs::create_dir_all(&dir)?;
    let mut conf = String::from("arch: amd64\nhostname: bench\nostype: unmanaged\ntty: 2\n");
    match s.config {
        // Proxmox's defaults apply: memory 512, swap 512, cpuunits 100.
        Config::Privileged => conf += "unprivileged: 0\n",
        Config::Unprivileged => {
            conf += "unprivileged: 1\nmemory: 256\nswap: 0\ncpulimit: 1\ncpuunits: 100\n\
                     lxc.cgroup2.pids.max: 256\n";
            conf += &format!("net0: name=eth0,bridge={BRIDGE},hwaddr={HWADDR},type=veth\n");
        }
    }
    fs::write(dir.join(format!("{}.conf", s.config.vmid())), conf)?;
    Ok(())
}

fn write_lxc_config(s: &Setup) -> Result<()> {
    let dir = s.work.join("lxc").join(lxc_name(s.config));
    fs::create_dir_all(&dir)?;
    let mut conf = String::from("lxc.include = /usr/share/lxc/config/common.conf\n");
    if s.config == Config::Unprivileged {
        conf += "lxc.include = /usr/share/lxc/config/userns.conf\n\
                 lxc.idmap = u 0 100000 65536\nlxc.idmap = g 0 100000 65536\n";
    }
    conf += &format!(
        "lxc.rootfs.path = dir:{}\nlxc.uts.name = bench\nlxc.init.cmd = /sbin/init\n\
         lxc.tty.max = 2\nlxc.apparmor.profile = unconfined\n\
         lxc.environment = container=lxc\n",
        s.rootfs.display()
    );
    match s.config {
        Config::Privileged => {
            conf += "lxc.net.0.type = empty\n";
            if s.limits {
                conf += "lxc.cgroup2.memory.max = 536870912\n\
                         lxc.cgroup2.memory.swap.max = 536870912\n\
                         lxc.cgroup2.cpu.weight = 100\n";
            }
        }
        Config::Unprivileged => {
            conf += &format!(
                "lxc.net.0.type = veth\nlxc.net.0.link = {BRIDGE}\nlxc.net.0.name = eth0\n\
                 lxc.net.0.hwaddr = {HWADDR}\nlxc.net.0.veth.pair = veth{}i0\n",
                s.config.vmid()
            );
            if s.limits {
                conf += "lxc.cgroup2.memory.max = 268435456\n\
                         lxc.cgroup2.memory.swap.max = 0\n\
                         lxc.cgroup2.cpu.max = 100000 100000\n\
                         lxc.cgroup2.cpu.weight = 100\n\
                         lxc.cgroup2.pids.max = 256\n";
            }
        }
    }
    fs::write(dir.join("config"), conf)?;
    Ok(())
}

/// busybox-static with its applets, the init script and the FIFO, all
/// owned by `owner` (0, or 100000 for the shifted root).
fn make_rootfs(root: &Path, busybox: &Path, owner: u32) -> Result<()> {
    for d in [
        "bin", "sbin", "etc", "dev", "proc", "sys", "tmp", "root", "run", "var",
    ] {
        fs::create_dir_all(root.join(d))?;
    }
    fs::set_permissions(root.join("tmp"), fs::Permissions::from_mode(0o1777))?;
    fs::copy(busybox, root.join("bin/busybox")).with_context(|| {
        format!(
            "copying {} (apt-get install busybox-static)",
            busybox.display()
        )
    })?;
    let list = Command::new(busybox).arg("--list").output()?;
    for applet in String::from_utf8_lossy(&list.stdout).lines() {
        if applet != "busybox" {
            let _ = std::os::unix::fs::symlink("busybox", root.join("bin").join(applet));
        }
    }
    fs::write(root.join("sbin/init"), INIT)?;
    fs::set_permissions(root.join("sbin/init"), fs::Permissions::from_mode(0o755))?;
    fs::write(root.join("etc/hostname"), "bench\n")?;
    fs::write(root.join("etc/hosts"), "127.0.0.1 localhost\n")?;
    fs::write(root.join("etc/passwd"), "root:x:0:0:root:/root:/bin/sh\n")?;
    fs::write(root.join("etc/group"), "root:x:0:\ntty:x:5:\n")?;
    nix::unistd::mkfifo(
        &root.join("bench.fifo"),
        nix::sys::stat::Mode::from_bits_truncate(0o666),
    )
    .context("mkfifo")?;
    fs::set_permissions(root.join("bench.fifo"), fs::Permissions::from_mode(0o666))?;
    chown_tree(root, owner)
}

fn chown_tree(path: &Path, owner: u32) -> Result<()> {
    std::os::unix::fs::lchown(path, Some(owner), Some(owner))
        .with_context(|| format!("chown {}", path.display()))?;
    let meta = fs::symlink_metadata(path)?;
    if meta.is_dir() {
        for e in fs::read_dir(path)? {
            chown_tree(&e?.path(), owner)?;
        }
    }
    Ok(())
}

fn run_ok(cmd: &mut Command) -> Result<()> {
    let out = cmd.output().with_context(|| format!("running {cmd:?}"))?;
    if !out.status.success() {
        bail!("{cmd:?}: {}", String::from_utf8_lossy(&out.stderr));
    }
    Ok(())
}

/// The floor: namespaces, `pivot_root`, `/proc`, exec.
fn floor(args: &[String]) -> Result<()> {
    let (root, hostname) = match args {
        [r, h, ..] => (PathBuf::from(r), h.clone()),
        _ => bail!("usage: bench-ct-run floor ROOT HOSTNAME [--userns]"),
    };
    let userns = args.iter().any(|a| a == "--userns");
    let (go_r, go_w) = nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC)?;
    let mut flags = libc::CLONE_NEWNS
        | libc::CLONE_NEWPID
        | libc::CLONE_NEWUTS
        | libc::CLONE_NEWIPC
        | libc::CLONE_NEWNET
        | libc::CLONE_NEWCGROUP;
    if userns {
        flags |= libc::CLONE_NEWUSER;
    }
    // SAFETY: a clone without CLONE_VM and without a new stack behaves
    // like fork: the child gets a copy of this process. This process has
    // one thread (it was just exec'd and spawned none), so the child may
    // go on running Rust code; it only makes system calls and execs or
    // exits.
    let pid = unsafe {
        libc::syscall(
            libc::SYS_clone,
            (flags | libc::SIGCHLD) as libc::c_ulong,
            0usize,
            0usize,
            0usize,
            0usize,
        )
    };
    if pid < 0 {
        bail!("clone: {}", std::io::Error::last_os_error());
    }
    if pid == 0 {
        drop(go_w);
        let err = floor_child(go_r, &root, &hostname, userns).unwrap_err();
        eprintln!("floor: {err:#}");
        std::process::exit(1);
    }
    drop(go_r);
    if userns {
        for map in ["uid_map", "gid_map"] {
            fs::write(format!("/proc/{pid}/{map}"), "0 100000 65536\n")
                .with_context(|| format!("writing {map}"))?;
        }
    }
    nix::unistd::write(&go_w, b"g")?;
    drop(go_w);
    let status = nix::sys::wait::waitpid(nix::unistd::Pid::from_raw(pid as i32), None)?;
    match status {
        nix::sys::wait::WaitStatus::Exited(_, 0) => Ok(()),
        other => bail!("the floor's init ended with {other:?}"),
    }
}

fn floor_child(
    go: OwnedFd,
    root: &Path,
    hostname: &str,
    userns: bool,
) -> Result<std::convert::Infallible> {
    let mut b = [0u8; 1];
    fs::File::from(go).read_exact(&mut b).context("go pipe")?;
    if userns {
        nix::unistd::setgroups(&[]).context("setgroups")?;
        let (g, u) = (nix::unistd::Gid::from_raw(0), nix::unistd::Uid::from_raw(0));
        nix::unistd::setresgid(g, g, g).context("setresgid")?;
        nix::unistd::setresuid(u, u, u).context("setresuid")?;
    }
    mount(
        None::<&str>,
        "/",
        None::<&str>,
        MsFlags::MS_REC | MsFlags::MS_PRIVATE,
        None::<&str>,
    )
    .context("making mounts private")?;
    mount(
        Some(root),
        root,
        None::<&str>,
        MsFlags::MS_BIND | MsFlags::MS_REC,
        None::<&str>,
    )
    .context("bind mount of the root")?;
    nix::unistd::chdir(root).context("chdir")?;
    // Before the pivot: in a user namespace the kernel mounts a new proc
    // only while a full one is visible in the mount namespace.
    mount(
        Some("proc"),
        "proc",
        Some("proc"),
        MsFlags::MS_NOSUID | MsFlags::MS_NODEV | MsFlags::MS_NOEXEC,
        None::<&str>,
    )
    .context("mounting /proc")?;
    nix::unistd::pivot_root(".", ".").context("pivot_root")?;
    umount2(".", MntFlags::MNT_DETACH).context("detaching the old root")?;
    nix::unistd::chdir("/").context("chdir /")?;
    nix::unistd::sethostname(hostname).context("sethostname")?;
    let init = CString::new("/sbin/init").expect("no NUL");
    let env = [CString::new("container=lxc").expect("no NUL")];
    let err = nix::unistd::execve(&init, &[&init], &env).unwrap_err();
    bail!("exec /sbin/init: {err}")
}

/// Permutation number `r` (counting on past the last) of `0..n`, in
/// lexicographic order: `r` read as a number whose digits have the bases
/// n, n - 1, ..., 1, each digit picking one of the sides still left.
fn permutation(r: usize, n: usize) -> Vec<usize> {
    let mut left: Vec<usize> = (0..n).collect();
    let mut bases: usize = (1..=n).product();
    let mut r = r % bases;
    let mut out = Vec::with_capacity(n);
    for k in (1..=n).rev() {
        bases /= k;
        out.push(left.remove(r / bases));
        r %= bases;
    }
    out
}

#[cfg(test)]
mod tests {
    use super::permutation;

    #[test]
    fn rounds_go_through_every_order_evenly() {
        for n in 1..=4 {
            let total: usize = (1..=n).product();
            let orders: Vec<Vec<usize>> = (0..total).map(|r| permutation(r, n)).collect();
            let mut distinct = orders.clone();
            distinct.sort();
            distinct.dedup();
            assert_eq!(distinct.len(), total, "n = {n}");
            assert!(orders.iter().all(|o| {
                let mut s = o.clone();
                s.sort();
                s == (0..n).collect::<Vec<_>>()
            }));
            assert_eq!(permutation(total, n), orders[0]);
            // Every side comes right after every other side equally often.
            let mut after = vec![vec![0usize; n]; n];
            for o in &orders {
                for w in o.windows(2) {
                    after[w[0]][w[1]] += 1;
                }
            }
            for a in 0..n {
                for b in 0..n {
                    if a != b {
                        assert_eq!(after[a][b], after[0][1], "n = {n}: {a} then {b}");
                    }
                }
            }
        }
    }
}
