//! Containers run for real on this host: a small template (busybox and a
//! shell-script init that reports what it sees) unpacked with the id
//! shift, its monitor (`ctr start`) run as a process the way init runs
//! it, each in a network namespace of its own test with a bridge in it.
//! Needs root and the kernel's namespaces; skipped with a message
//! otherwise.

use std::fs;
use std::io::Write;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

const BUSYBOX: &str = "/bin/busybox";

/// The init of the test template: prints what it sees on the console,
/// brings the network up with the interfaces file the runtime wrote,
/// pings what /etc/oxbow-test/ping names, then does what
/// /etc/oxbow-test/action says.
const INIT: &str = r#"#!/bin/sh
export PATH=/bin:/sbin
say() { echo "OXBOW-CT $*"; }
trap 'say got-SIGPWR; exit 0' PWR
say start pid=$$ hostname=$(hostname) container=$container uid=$(id -u)
say capbnd=$(grep CapBnd /proc/self/status | cut -f2)
say seccomp=$(grep '^Seccomp:' /proc/self/status | cut -f2)
say cgroup=$(cat /proc/self/cgroup | tr '\n' ' ')
say dev=$(ls /dev | tr '\n' ,)
say devnodes=$(for d in null zero full random urandom tty; do stat -c %n:%a:%t:%T /dev/$d; done | tr '\n' ,) reads=$(head -c 3 /dev/zero | wc -c)$(head -c 3 /dev/urandom | wc -c) writes=$(echo x >/dev/null && echo ok)
say console=$(readlink /proc/self/fd/0)
if echo x > /proc/sysrq-trigger 2>/dev/null; then say sysrq=writable; else say sysrq=ro; fi
if mkdir /sys/kernel/oxbow 2>/dev/null; then say sys=writable; else say sys=ro; fi
if mknod /tmp/mem c 1 1 2>/dev/null; then say mknod=allowed; else say mknod=refused; fi
touch /root/created-in-guest
ifup -a 2>&1 | sed 's/^/OXBOW-CT ifup: /'
say eth0=$(cat /sys/class/net/eth0/address 2>/dev/null) addr=$(ip -o -4 addr show dev eth0 2>/dev/null | awk '{print $4}')
if [ -f /etc/oxbow-test/ping ]; then
  for t in $(cat /etc/oxbow-test/ping); do
    ok=no
    for i in $(seq 1 40); do
      if ping -c 1 -W 1 $t >/dev/null 2>&1; then ok=yes; break; fi
      sleep 0.2
    done
    say ping $t $ok
  done
fi
say ready
case "$(cat /etc/oxbow-test/action 2>/dev/null)" in
  reboot) say rebooting; reboot -f ;;
  poweroff) say powering-off; poweroff -f ;;
  ignore) trap '' PWR; say ignoring-SIGPWR ;;
  echo) read -r l; say echoed "$l" ;;
esac
while :; do sleep 1 & wait $!; done
"#;

fn skip_reason() -> Option<&'static str> {
    if !nix::unistd::geteuid().is_root() {
        return Some("needs root");
    }
    if !Path::new(BUSYBOX).is_file() {
        return Some("needs busybox-static (scripts/install-deps.sh)");
    }
    if !Path::new("/proc/self/ns/user").exists() || !Path::new("/proc/self/ns/cgroup").exists() {
        return Some("the kernel lacks user or cgroup namespaces");
    }
    None
}

/// Says why a test is skipped. Under `make test` (which sets
/// `OXBOW_NO_SKIP`) a skip is a failure: there everything is installed.
fn skip(why: &str) {
    if std::env::var_os("OXBOW_NO_SKIP").is_some() {
        panic!("cannot run: {why} (OXBOW_NO_SKIP is set)");
    }
    eprintln!("skipped: {why}");
}

macro_rules! require_host {
    () => {
        if let Some(why) = skip_reason() {
            skip(why);
            return;
        }
    };
}

/// The small template, as a .tar.zst: busybox with its applets, the test
/// init, the directories a Debian-like guest has.
fn build_template(dir: &Path) -> PathBuf {
    let root = dir.join("template-root");
    for d in [
        "bin",
        "sbin",
        "etc/network/if-up.d",
        "etc/network/if-pre-up.d",
        "etc/network/if-down.d",
        "etc/network/if-post-down.d",
        "etc/oxbow-test",
        "root",
        "tmp",
        "run",
        "var",
        "proc",
        "sys",
        "dev",
    ] {
        fs::create_dir_all(root.join(d)).unwrap();
    }
    fs::set_permissions(root.join("tmp"), fs::Permissions::from_mode(0o1777)).unwrap();
    fs::set_permissions(root.join("root"), fs::Permissions::from_mode(0o700)).unwrap();
    fs::copy(BUSYBOX, root.join("bin/busybox")).unwrap();
    let list = Command::new(BUSYBOX).arg("--list").output().unwrap();
    for applet in String::from_utf8_lossy(&list.stdout).lines() {
        if applet != "busybox" {
            let _ = std::os::unix::fs::symlink("busybox", root.join("bin").join(applet));
        }
    }
    std::os::unix::fs::symlink("../run", root.join("var/run")).unwrap();
    fs::write(root.join("sbin/init"), INIT).unwrap();
    fs::set_permissions(root.join("sbin/init"), fs::Permissions::from_mode(0o755)).unwrap();
    fs::write(root.join("etc/hostname"), "template\n").unwrap();
    fs::write(root.join("etc/passwd"), "root:x:0:0:root:/root:/bin/sh\n").unwrap();
    fs::write(root.join("etc/group"), "root:x:0:\ntty:x:5:\n").unwrap();
    let out = dir.join("busybox-test_1.0-1_amd64.tar.zst");
    let file = fs::File::create(&out).unwrap();
    let enc = zstd::stream::write::Encoder::new(file, 3).unwrap();
    let mut tar = tar::Builder::new(enc);
    tar.follow_symlinks(false);
    tar.mode(tar::HeaderMode::Deterministic);
    tar.append_dir_all(".", &root).unwrap();
    tar.into_inner().unwrap().finish().unwrap();
    fs::remove_dir_all(&root).unwrap();
    out
}

/// A network namespace with a bridge, deleted when dropped.
struct TestNet {
    name: String,
}

impl TestNet {
    fn new(tag: &str) -> TestNet {
        let name = format!("oxct-{tag}-{}", std::process::id());
        let _ = Command::new("ip")
            .args(["netns", "del", &name])
            .stderr(Stdio::null())
            .status();
        run("ip", &["netns", "add", &name]);
        let net = TestNet { name };
        net.exec(&["ip", "link", "set", "lo", "up"]);
        net.exec(&["ip", "link", "add", "br0", "type", "bridge"]);
        net.exec(&["ip", "addr", "add", "192.0.2.1/24", "dev", "br0"]);
        net.exec(&["ip", "link", "set", "br0", "up"]);
        net
    }

    fn exec(&self, args: &[&str]) -> std::process::Output {
        let mut all = vec!["netns", "exec", &self.name];
        all.extend_from_slice(args);
        Command::new("ip").args(&all).output().unwrap()
    }

    fn links(&self) -> String {
        String::from_utf8_lossy(&self.exec(&["ip", "-o", "link"]).stdout).into_owned()
    }

    fn path(&self) -> String {
        format!("/run/netns/{}", self.name)
    }
}

impl Drop for TestNet {
    fn drop(&mut self) {
        let _ = Command::new("ip")
            .args(["netns", "del", &self.name])
            .status();
    }
}

fn run(cmd: &str, args: &[&str]) {
    let out = Command::new(cmd).args(args).output().unwrap();
    assert!(
        out.status.success(),
        "{cmd} {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// One container: its directory (config, root, socket, console log) and
/// its monitor process.
struct Ct {
    vmid: u32,
    dir: tempfile::TempDir,
    monitor: Option<Child>,
}

impl Ct {
    fn new(vmid: u32, template: &Path, conf: &str, action: &str, ping: &str) -> Ct {
        Ct::with_ids(vmid, template, conf, action, ping, ctr::IdMap::DEFAULT)
    }

    /// A container whose template is unpacked with `idmap`
    /// ([`ctr::IdMap::IDENTITY`] for a privileged one).
    fn with_ids(
        vmid: u32,
        template: &Path,
        conf: &str,
        action: &str,
        ping: &str,
        idmap: ctr::IdMap,
    ) -> Ct {
        let dir = tempfile::tempdir().unwrap();
        fs::write(dir.path().join(format!("{vmid}.conf")), conf).unwrap();
        let opts = ctr::UnpackOptions {
            idmap,
            ..Default::default()
        };
        ctr::create_from_template(template, &dir.path().join("rootfs"), &opts).unwrap();
        let test = dir.path().join("rootfs/etc/oxbow-test");
        fs::create_dir_all(&test).unwrap();
        fs::write(test.join("action"), action).unwrap();
        if !ping.is_empty() {
            fs::write(test.join("ping"), ping).unwrap();
        }
        Ct {
            vmid,
            dir,
            monitor: None,
        }
    }

    fn socket(&self) -> PathBuf {
        self.dir.path().join("ctl.sock")
    }

    fn console_socket(&self) -> PathBuf {
        self.dir.path().join("console.sock")
    }

    fn rootfs(&self) -> PathBuf {
        self.dir.path().join("rootfs")
    }

    fn console(&self) -> String {
        fs::read_to_string(self.dir.path().join("console.log")).unwrap_or_default()
    }

    /// Starts the monitor, in `net`'s network namespace if given.
    fn start(&mut self, net: Option<&TestNet>, shutdown_timeout: u64) {
        let bin = env!("CARGO_BIN_EXE_ctr");
        let conf = self.dir.path().join(format!("{}.conf", self.vmid));
        let mut cmd = match net {
            Some(n) => {
                let mut c = Command::new("nsenter");
                c.arg(format!("--net={}", n.path())).arg("--").arg(bin);
                c
            }
            None => Command::new(bin),
        };
        cmd.arg("start")
            .arg("--config")
            .arg(&conf)
            .arg("--rootfs")
            .arg(self.rootfs())
            .arg("--socket")
            .arg(self.socket())
            .arg("--console-log")
            .arg(self.dir.path().join("console.log"))
            .arg("--console-socket")
            .arg(self.console_socket())
            .arg("--shutdown-timeout")
            .arg(shutdown_timeout.to_string())
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        self.monitor = Some(cmd.spawn().unwrap());
    }

    /// Waits until the console shows `marker`; panics with the console
    /// and the monitor's output after `secs`.
    fn wait_console(&mut self, marker: &str, secs: u64) -> String {
        self.wait_console_n(marker, 1, secs)
    }

    /// Waits until the console shows `marker` `n` times.
    fn wait_console_n(&mut self, marker: &str, n: usize, secs: u64) -> String {
        let deadline = Instant::now() + Duration::from_secs(secs);
        loop {
            let text = self.console();
            if text.matches(marker).count() >= n {
                return text;
            }
            if let Some(m) = &mut self.monitor {
                if let Ok(Some(status)) = m.try_wait() {
                    panic!(
                        "the monitor ended ({status}) before {marker:?}\nconsole:\n{text}\n{}",
                        self.monitor_output()
                    );
                }
            }
            if Instant::now() > deadline {
                self.kill_monitor();
                panic!(
                    "no {marker:?} within {secs} s\nconsole:\n{text}\n{}",
                    self.monitor_output()
                );
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    fn kill_monitor(&mut self) {
        if let Some(m) = &mut self.monitor {
            let _ = m.kill();
        }
    }

    fn monitor_output(&mut self) -> String {
        let Some(m) = self.monitor.take() else {
            return String::new();
        };
        let out = m.wait_with_output().unwrap();
        format!(
            "monitor {}:\n{}{}",
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        )
    }

    /// Waits for the monitor to exit within `secs`.
    fn wait_exit(&mut self, secs: u64) -> (ExitStatus, String) {
        let deadline = Instant::now() + Duration::from_secs(secs);
        loop {
            let m = self.monitor.as_mut().expect("monitor running");
            if let Some(status) = m.try_wait().unwrap() {
                let log = self.monitor_output();
                return (status, log);
            }
            if Instant::now() > deadline {
                self.kill_monitor();
                panic!(
                    "the monitor did not exit within {secs} s\nconsole:\n{}\n{}",
                    self.console(),
                    self.monitor_output()
                );
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    fn ctl(&self, req: ctr::Request) -> serde_json::Value {
        ctr::request(&self.socket(), &req).unwrap()
    }

    /// Nothing of the container is left: no cgroup, no socket, no
    /// process, no veth in `net`.
    fn assert_nothing_left(&self, net: Option<&TestNet>) {
        if let Some(root) = ctr::cgroup::Cgroup::v2_root() {
            let cg = ctr::cgroup::Cgroup::path_of(&root, self.vmid);
            assert!(!cg.exists(), "{} left behind", cg.display());
        }
        assert!(!self.socket().exists(), "control socket left behind");
        assert!(
            !self.console_socket().exists(),
            "console socket left behind"
        );
        if let Some(n) = net {
            let links = n.links();
            assert!(
                !links.contains(&format!("veth{}i", self.vmid)),
                "veth left behind:\n{links}"
            );
        }
        let mounts = fs::read_to_string("/proc/self/mountinfo").unwrap();
        let root = self.rootfs().display().to_string();
        assert!(
            !mounts.contains(&root),
            "a mount of the root is left on the host"
        );
    }
}

impl Drop for Ct {
    fn drop(&mut self) {
        self.kill_monitor();
        if let Some(m) = &mut self.monitor {
            let _ = m.wait();
        }
    }
}

fn conf(hostname: &str, net: &str) -> String {
    format!(
        "arch: amd64\nhostname: {hostname}\nmemory: 256\nswap: 0\ncpuunits: 50\nostype: debian\n\
         unprivileged: 1\nrootfs: local:rootdir/900\n{net}"
    )
}

fn line<'a>(console: &'a str, key: &str) -> &'a str {
    console
        .lines()
        .find_map(|l| {
            l.strip_prefix("OXBOW-CT ")
                .and_then(|l| l.strip_prefix(key))
        })
        .unwrap_or_else(|| panic!("no {key:?} line in the console:\n{console}"))
        .trim_end_matches('\r')
}

#[test]
fn container_runs_its_init_as_pid_1_confined() {
    require_host!();
    let tmp = tempfile::tempdir().unwrap();
    let template = build_template(tmp.path());
    let mut ct = Ct::new(901, &template, &conf("ct901.example.org", ""), "", "");
    let started = Instant::now();
    ct.start(None, 10);
    let console = ct.wait_console("OXBOW-CT ready", 30);
    eprintln!("start to ready: {:?}", started.elapsed());
    let first = line(&console, "start ");
    assert_eq!(
        first, "pid=1 hostname=ct901.example.org container=lxc uid=0",
        "{console}"
    );
    // Capabilities: the five LXC drops are gone from the bounding set,
    // the rest is there.
    let capbnd = u64::from_str_radix(line(&console, "capbnd="), 16).unwrap();
    for cap in [16, 17, 25, 32, 33] {
        assert_eq!(capbnd & (1 << cap), 0, "capability {cap} kept: {capbnd:x}");
    }
    for cap in [0, 1, 12, 13, 21] {
        assert_ne!(
            capbnd & (1 << cap),
            0,
            "capability {cap} dropped: {capbnd:x}"
        );
    }
    assert_eq!(line(&console, "seccomp="), "2", "a seccomp filter is on");
    assert_device_nodes(&console);
    let dev = line(&console, "dev=");
    // No shm: the guest's init mounts /dev/shm, as under LXC.
    for d in [
        "null", "zero", "full", "random", "urandom", "tty", "ptmx", "console", "pts", "tty1",
        "tty2",
    ] {
        assert!(dev.split(',').any(|x| x == d), "/dev/{d} missing: {dev}");
    }
    assert!(
        !dev.split(',')
            .any(|x| x == "mem" || x == "kmsg" || x == "sda"),
        "{dev}"
    );
    assert_eq!(line(&console, "console="), "/dev/console");
    assert_eq!(line(&console, "sysrq="), "ro");
    assert_eq!(line(&console, "sys="), "ro");
    assert_eq!(line(&console, "mknod="), "refused");
    if ctr::cgroup::Cgroup::v2_root().is_some() {
        // The v2 entry is the root of the container's cgroup namespace
        // (a hybrid host lists its v1 hierarchies too).
        let cgroups = line(&console, "cgroup=");
        assert!(cgroups.split(' ').any(|e| e == "0::/"), "{cgroups}");
    }
    // Files the guest creates belong to the shifted ids on the host.
    let created = fs::metadata(ct.rootfs().join("root/created-in-guest")).unwrap();
    assert_eq!((created.uid(), created.gid()), (100_000, 100_000));
    let init = fs::metadata(ct.rootfs().join("sbin/init")).unwrap();
    assert_eq!(init.uid(), 100_000);
    // The guest's host name file was written from the config.
    assert_eq!(
        fs::read_to_string(ct.rootfs().join("etc/hostname")).unwrap(),
        "ct901.example.org\n"
    );

    // The monitor waits rather than spins while the guest runs, though
    // nothing holds the guest's ttys open (a master whose slave nobody
    // has open polls as hung up): over two seconds of an idle guest it
    // uses less than a tenth of a CPU (a spinning monitor used about a
    // third on a loaded 2-core machine; a waiting one uses nothing).
    let monitor_pid = ct.monitor.as_ref().unwrap().id();
    let cpu_ticks = || -> u64 {
        let stat = fs::read_to_string(format!("/proc/{monitor_pid}/stat")).unwrap();
        let after = &stat[stat.rfind(')').unwrap() + 2..];
        let f: Vec<&str> = after.split_whitespace().collect();
        // utime and stime, fields 14 and 15 of the line.
        f[11].parse::<u64>().unwrap() + f[12].parse::<u64>().unwrap()
    };
    let before = cpu_ticks();
    std::thread::sleep(Duration::from_secs(2));
    let used = cpu_ticks() - before;
    let hz = nix::unistd::sysconf(nix::unistd::SysconfVar::CLK_TCK)
        .unwrap()
        .unwrap() as u64;
    assert!(
        used < hz / 5,
        "the monitor used {used} ticks of CPU in 2 s of an idle guest (a busy loop)"
    );

    // The monitor answers and places the container in its cgroup.
    let info: ctr::Info = serde_json::from_value(ct.ctl(ctr::Request::Info)).unwrap();
    assert_eq!(info.vmid, 901);
    assert_eq!(info.hostname, "ct901.example.org");
    assert_eq!(info.state, "running");
    let host_status = fs::read_to_string(format!("/proc/{}/status", info.pid)).unwrap();
    assert!(
        host_status.contains("NSpid:")
            && host_status
                .lines()
                .any(|l| l.starts_with("NSpid:") && l.trim_end().ends_with("\t1")),
        "{host_status}"
    );
    let uid_line = host_status.lines().find(|l| l.starts_with("Uid:")).unwrap();
    assert!(
        uid_line.contains("100000"),
        "init runs as host uid 100000: {uid_line}"
    );
    match ctr::cgroup::Cgroup::v2_root() {
        Some(root) => {
            let cg = ctr::cgroup::Cgroup::path_of(&root, 901);
            let procs = fs::read_to_string(cg.join("ns/cgroup.procs")).unwrap();
            assert!(procs.lines().any(|p| p == info.pid.to_string()), "{procs}");
            let controllers = fs::read_to_string(root.join("cgroup.controllers")).unwrap();
            if controllers.split_whitespace().any(|c| c == "memory") {
                assert_eq!(
                    fs::read_to_string(cg.join("memory.max")).unwrap().trim(),
                    (256u64 << 20).to_string()
                );
                assert_eq!(
                    fs::read_to_string(cg.join("memory.swap.max"))
                        .unwrap()
                        .trim(),
                    "0"
                );
            } else {
                // No memory controller in v2 on this kernel: the limits are
                // reported as not in force, never dropped in silence.
                assert!(
                    info.limits_unavailable
                        .iter()
                        .any(|l| l.starts_with("memory.max=268435456")),
                    "{:?}",
                    info.limits_unavailable
                );
            }
            if !controllers.split_whitespace().any(|c| c == "cpu") {
                assert!(
                    info.limits_unavailable
                        .iter()
                        .any(|l| l.starts_with("cpu.weight=50")),
                    "{:?}",
                    info.limits_unavailable
                );
            }
            let owner = fs::metadata(cg.join("ns")).unwrap().uid();
            assert_eq!(owner, 100_000, "the inner cgroup is delegated");
        }
        None => assert!(!info.limits_unavailable.is_empty()),
    }

    // Shutdown: SIGPWR to the (non-systemd) init, which exits 0.
    assert_eq!(
        ct.ctl(ctr::Request::Shutdown { timeout: Some(10) }),
        serde_json::Value::Null
    );
    let (status, log) = ct.wait_exit(15);
    assert_eq!(status.code(), Some(0), "{log}");
    assert!(
        ct.console().contains("OXBOW-CT got-SIGPWR"),
        "{}",
        ct.console()
    );
    ct.assert_nothing_left(None);
}

#[test]
fn containers_ping_each_other_across_a_bridge() {
    require_host!();
    let tmp = tempfile::tempdir().unwrap();
    let template = build_template(tmp.path());
    let net = TestNet::new("ping");
    let net_a = "net0: name=eth0,bridge=br0,hwaddr=BC:24:11:00:09:11,ip=192.0.2.11/24,gw=192.0.2.1,type=veth\n";
    let net_b = "net0: name=eth0,bridge=br0,hwaddr=BC:24:11:00:09:12,ip=192.0.2.12/24,gw=192.0.2.1,type=veth\n";
    // link_down=1: in the bridge, but down, as a cable pulled out.
    let net_c = "net0: name=eth0,bridge=br0,hwaddr=BC:24:11:00:09:13,ip=192.0.2.13/24,link_down=1,type=veth\n";
    let mut b = Ct::new(912, &template, &conf("b", net_b), "", "");
    let mut c = Ct::new(913, &template, &conf("c", net_c), "", "");
    let mut a = Ct::new(
        911,
        &template,
        &conf("a", net_a),
        "",
        "192.0.2.12 192.0.2.1",
    );
    b.start(Some(&net), 10);
    b.wait_console("OXBOW-CT ready", 30);
    c.start(Some(&net), 10);
    c.wait_console("OXBOW-CT ready", 30);
    a.start(Some(&net), 10);
    let console = a.wait_console("OXBOW-CT ready", 60);
    assert!(
        console.contains("OXBOW-CT ping 192.0.2.12 yes"),
        "{console}"
    );
    assert!(console.contains("OXBOW-CT ping 192.0.2.1 yes"), "{console}");
    let unplugged = net.exec(&["ping", "-c", "2", "-W", "1", "192.0.2.13"]);
    assert!(
        !unplugged.status.success(),
        "a container whose link is down answered"
    );
    let down = net.exec(&["ip", "-o", "link", "show", "veth913i0"]);
    let down = String::from_utf8_lossy(&down.stdout);
    assert!(
        down.contains("master br0") && !down.contains(",UP") && !down.contains("<UP"),
        "{down}"
    );
    c.ctl(ctr::Request::Stop);
    let (status, log) = c.wait_exit(10);
    assert_eq!(status.code(), Some(0), "{log}");
    c.assert_nothing_left(Some(&net));
    assert!(
        console.contains("OXBOW-CT eth0=bc:24:11:00:09:11 addr=192.0.2.11/24"),
        "{console}"
    );
    // The interfaces file is the runtime's, in ifupdown syntax.
    let interfaces = fs::read_to_string(a.rootfs().join("etc/network/interfaces")).unwrap();
    assert!(
        interfaces.contains(
            "iface eth0 inet static\n\taddress 192.0.2.11\n\tnetmask 255.255.255.0\n\tgateway 192.0.2.1\n"
        ),
        "{interfaces}"
    );
    // Host ends on the bridge, named as Proxmox names them; the host side
    // reaches the container too.
    let links = net.links();
    for veth in ["veth911i0", "veth912i0"] {
        let l = links
            .lines()
            .find(|l| l.contains(&format!(" {veth}@")))
            .unwrap_or_else(|| panic!("{veth} missing:\n{links}"));
        assert!(l.contains("master br0"), "{l}");
        // One queue each way (not one per possible CPU).
        let detail = net.exec(&["ip", "-d", "-o", "link", "show", veth]);
        let detail = String::from_utf8_lossy(&detail.stdout);
        assert!(detail.contains("numtxqueues 1 numrxqueues 1 "), "{detail}");
    }
    let ping = net.exec(&["ping", "-c", "1", "-W", "2", "192.0.2.12"]);
    assert!(
        ping.status.success(),
        "{}",
        String::from_utf8_lossy(&ping.stdout)
    );

    // Stop: killed at once, exit 0, and nothing left in the namespace.
    a.ctl(ctr::Request::Stop);
    let (status, log) = a.wait_exit(10);
    assert_eq!(status.code(), Some(0), "{log}");
    a.assert_nothing_left(Some(&net));
    // SIGTERM to the monitor (what init sends to stop the unit) shuts the
    // container down.
    let pid = b.monitor.as_ref().unwrap().id();
    // nsenter execs the monitor, so this is the monitor's pid.
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(pid as i32),
        nix::sys::signal::Signal::SIGTERM,
    )
    .unwrap();
    let (status, log) = b.wait_exit(15);
    assert_eq!(status.code(), Some(0), "{log}");
    assert!(b.console().contains("OXBOW-CT got-SIGPWR"));
    b.assert_nothing_left(Some(&net));
}

#[test]
fn guest_reboot_poweroff_and_a_hung_shutdown() {
    require_host!();
    let tmp = tempfile::tempdir().unwrap();
    let template = build_template(tmp.path());

    // reboot(2) in the guest: exit status 3, so init starts it again.
    let mut ct = Ct::new(921, &template, &conf("r", ""), "reboot", "");
    ct.start(None, 10);
    let (status, log) = ct.wait_exit(30);
    assert_eq!(
        status.code(),
        Some(ctr::EXIT_REBOOT as i32),
        "{log}\n{}",
        ct.console()
    );
    assert!(ct.console().contains("OXBOW-CT rebooting"));
    ct.assert_nothing_left(None);
    // Started again (as init's on-status restart does), it comes back up.
    fs::write(ct.rootfs().join("etc/oxbow-test/action"), "").unwrap();
    ct.start(None, 10);
    ct.wait_console_n("OXBOW-CT ready", 2, 30);
    assert_eq!(ct.console().matches("OXBOW-CT start pid=1").count(), 2);
    // A reboot asked through the monitor: shut down, exit 3.
    ct.ctl(ctr::Request::Reboot { timeout: Some(10) });
    let (status, log) = ct.wait_exit(15);
    assert_eq!(status.code(), Some(3), "{log}");
    ct.assert_nothing_left(None);

    // poweroff(8) in the guest: exit status 0.
    let mut ct = Ct::new(922, &template, &conf("p", ""), "poweroff", "");
    ct.start(None, 10);
    let (status, log) = ct.wait_exit(30);
    assert_eq!(status.code(), Some(0), "{log}\n{}", ct.console());
    assert!(ct.console().contains("OXBOW-CT powering-off"));
    ct.assert_nothing_left(None);

    // An init that ignores the power-off signal is killed after the
    // timeout.
    let mut ct = Ct::new(923, &template, &conf("h", ""), "ignore", "");
    ct.start(None, 2);
    ct.wait_console("OXBOW-CT ignoring-SIGPWR", 30);
    let asked = Instant::now();
    ct.ctl(ctr::Request::Shutdown { timeout: Some(2) });
    let (status, log) = ct.wait_exit(20);
    let took = asked.elapsed();
    assert_eq!(status.code(), Some(0), "{log}");
    assert!(
        took >= Duration::from_millis(1900),
        "killed after {took:?}, before the timeout"
    );
    assert!(log.contains("did not end within the timeout"), "{log}");
    assert!(!ct.console().contains("got-SIGPWR"));
    ct.assert_nothing_left(None);
}

#[test]
fn bad_starts_fail_cleanly() {
    require_host!();
    let tmp = tempfile::tempdir().unwrap();
    let template = build_template(tmp.path());
    // A bridge that does not exist: refused before the guest runs, and
    // nothing is left.
    let net = TestNet::new("bad");
    let mut ct = Ct::new(
        931,
        &template,
        &conf("x", "net0: name=eth0,bridge=nosuchbr,ip=dhcp,type=veth\n"),
        "",
        "",
    );
    // The child builds its mounts while the veths are made, but writes
    // the guest's files only once they are: these stay as they were.
    let guest_files = ["etc/hostname", "etc/hosts", "etc/network/interfaces"];
    let read_all = |ct: &Ct| -> Vec<Option<Vec<u8>>> {
        guest_files
            .iter()
            .map(|f| fs::read(ct.rootfs().join(f)).ok())
            .collect()
    };
    let before = read_all(&ct);
    ct.start(Some(&net), 10);
    let (status, log) = ct.wait_exit(20);
    assert_eq!(status.code(), Some(1), "{log}");
    assert!(log.contains("bridge 'nosuchbr' does not exist"), "{log}");
    assert!(!ct.console().contains("OXBOW-CT start"));
    ct.assert_nothing_left(Some(&net));
    assert_eq!(
        read_all(&ct),
        before,
        "a failed start changed the guest's files"
    );
    // A tag on a bridge without VLAN filtering goes to its VLAN bridge
    // (br0v7), whose uplink would be the VLAN link of the bridge's
    // physical port: br0 has none, which is said, and nothing is made.
    let mut ct = Ct::new(
        935,
        &template,
        &conf("t", "net0: name=eth0,bridge=br0,tag=7,ip=dhcp,type=veth\n"),
        "",
        "",
    );
    ct.start(Some(&net), 10);
    let (status, log) = ct.wait_exit(20);
    assert_eq!(status.code(), Some(1), "{log}");
    assert!(
        log.contains("VLAN 7 on bridge 'br0', which is not VLAN-aware, needs a physical port"),
        "{log}"
    );
    assert!(!net.links().contains("br0v7"), "{}", net.links());
    ct.assert_nothing_left(Some(&net));
    // No init in the root.
    let mut ct = Ct::new(932, &template, &conf("y", ""), "", "");
    fs::remove_file(ct.rootfs().join("sbin/init")).unwrap();
    ct.start(None, 10);
    let (status, log) = ct.wait_exit(20);
    assert_eq!(status.code(), Some(1), "{log}");
    assert!(log.contains("/sbin/init"), "{log}");
    ct.assert_nothing_left(None);
    // A step of the container's first process fails (its /dev is a
    // file): the step and the error come back, and nothing is left.
    let mut ct = Ct::new(934, &template, &conf("w", ""), "", "");
    let dev = ct.rootfs().join("dev");
    fs::remove_dir_all(&dev).unwrap();
    fs::write(&dev, "not a directory").unwrap();
    ct.start(None, 10);
    let (status, log) = ct.wait_exit(20);
    assert_eq!(status.code(), Some(1), "{log}");
    assert!(
        log.contains("not a directory in the container: dev: Not a directory"),
        "{log}"
    );
    ct.assert_nothing_left(None);
    // A configuration whose unprivileged key is not a boolean.
    let mut ct = Ct::new(933, &template, "hostname: z\nunprivileged: maybe\n", "", "");
    ct.start(None, 10);
    let (status, log) = ct.wait_exit(20);
    assert_eq!(status.code(), Some(1), "{log}");
    assert!(log.contains("unprivileged"), "{log}");
    // The root directory goes with destroy.
    ctr::destroy_rootfs(&ct.rootfs()).unwrap();
    assert!(!ct.rootfs().exists());
    let _ = std::io::stderr().flush();
}

/// A privileged container (`unprivileged: 0`): no user namespace, so its
/// root is the host's root, but it still has its own pid, mount, uts,
/// ipc, net and cgroup namespaces, lacks the five dropped capabilities
/// and runs under the seccomp filter.
#[test]
fn privileged_container_runs_as_host_root_with_capabilities_dropped() {
    require_host!();
    let tmp = tempfile::tempdir().unwrap();
    let template = build_template(tmp.path());
    let conf = "arch: amd64\nhostname: priv905\nmemory: 256\nswap: 0\nostype: debian\n\
                unprivileged: 0\nrootfs: local:rootdir/905\n";
    let mut ct = Ct::with_ids(905, &template, conf, "", "", ctr::IdMap::IDENTITY);
    ct.start(None, 10);
    let console = ct.wait_console("OXBOW-CT ready", 30);
    assert_eq!(
        line(&console, "start "),
        "pid=1 hostname=priv905 container=lxc uid=0",
        "{console}"
    );
    let capbnd = u64::from_str_radix(line(&console, "capbnd="), 16).unwrap();
    for cap in [16, 17, 25, 32, 33] {
        assert_eq!(capbnd & (1 << cap), 0, "capability {cap} kept: {capbnd:x}");
    }
    for cap in [0, 1, 12, 13, 21] {
        assert_ne!(
            capbnd & (1 << cap),
            0,
            "capability {cap} dropped: {capbnd:x}"
        );
    }
    assert_eq!(line(&console, "seccomp="), "2", "a seccomp filter is on");
    assert_eq!(line(&console, "sysrq="), "ro");
    assert_eq!(line(&console, "sys="), "ro");
    // Its device nodes are made with mknod rather than bound: the same
    // devices, usable.
    assert_device_nodes(&console);
    // Files the guest creates belong to the host's root, and the
    // template's owners were kept.
    let created = fs::metadata(ct.rootfs().join("root/created-in-guest")).unwrap();
    assert_eq!((created.uid(), created.gid()), (0, 0));
    assert_eq!(
        fs::metadata(ct.rootfs().join("sbin/init")).unwrap().uid(),
        0
    );

    let info: ctr::Info = serde_json::from_value(ct.ctl(ctr::Request::Info)).unwrap();
    let host_status = fs::read_to_string(format!("/proc/{}/status", info.pid)).unwrap();
    assert!(
        host_status
            .lines()
            .any(|l| l.starts_with("NSpid:") && l.trim_end().ends_with("\t1")),
        "init is PID 1 in a pid namespace of its own: {host_status}"
    );
    let uid_line = host_status.lines().find(|l| l.starts_with("Uid:")).unwrap();
    assert_eq!(
        uid_line.split_whitespace().skip(1).collect::<Vec<_>>(),
        ["0", "0", "0", "0"],
        "init runs as the host's root: {uid_line}"
    );
    let ns = |pid: &str, kind: &str| fs::read_link(format!("/proc/{pid}/ns/{kind}")).unwrap();
    let init_pid = info.pid.to_string();
    assert_eq!(
        ns(&init_pid, "user"),
        ns("self", "user"),
        "no user namespace"
    );
    for kind in ["pid", "mnt", "uts", "ipc", "net", "cgroup"] {
        assert_ne!(
            ns(&init_pid, kind),
            ns("self", kind),
            "the {kind} namespace is the container's own"
        );
    }
    // The host's user namespace map: the identity.
    let map = fs::read_to_string(format!("/proc/{}/uid_map", info.pid)).unwrap();
    assert_eq!(
        map.split_whitespace().collect::<Vec<_>>(),
        ["0", "0", "4294967295"]
    );

    ct.ctl(ctr::Request::Stop);
    let (status, log) = ct.wait_exit(20);
    assert_eq!(status.code(), Some(0), "{log}");
    ct.assert_nothing_left(None);
}

#[test]
fn a_killed_monitor_takes_its_container_along() {
    require_host!();
    let tmp = tempfile::tempdir().unwrap();
    let template = build_template(tmp.path());
    let net = TestNet::new("kill");
    let mut ct = Ct::new(
        941,
        &template,
        &conf(
            "k",
            "net0: name=eth0,bridge=br0,ip=192.0.2.41/24,type=veth\n",
        ),
        "",
        "",
    );
    ct.start(Some(&net), 10);
    ct.wait_console("OXBOW-CT ready", 30);
    let info: ctr::Info = serde_json::from_value(ct.ctl(ctr::Request::Info)).unwrap();
    ct.kill_monitor();
    let _ = ct.monitor_output();
    // The parent-death signal ends the guest's init, and its pid
    // namespace with it; the veth goes with the network namespace.
    let deadline = Instant::now() + Duration::from_secs(10);
    while Path::new(&format!("/proc/{}", info.pid)).exists() {
        assert!(
            Instant::now() < deadline,
            "the container outlived its monitor"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    let deadline = Instant::now() + Duration::from_secs(10);
    while net.links().contains("veth941i0") {
        assert!(Instant::now() < deadline, "veth outlived the container");
        std::thread::sleep(Duration::from_millis(50));
    }
    // The cgroup is left (empty) by a killed monitor ...
    if let Some(root) = ctr::cgroup::Cgroup::v2_root() {
        assert!(ctr::cgroup::Cgroup::path_of(&root, 941).exists());
    }
    // ... and the next start removes it and runs.
    let _ = fs::remove_file(ct.socket());
    ct.start(Some(&net), 10);
    ct.wait_console_n("OXBOW-CT ready", 2, 30);
    ct.ctl(ctr::Request::Stop);
    let (status, log) = ct.wait_exit(10);
    assert_eq!(status.code(), Some(0), "{log}");
    ct.assert_nothing_left(Some(&net));
}

/// The Debian template of `make ct-template`, if it was built.
fn debian_template() -> Option<PathBuf> {
    let dir = std::env::var_os("OXBOW_GUEST_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/guest"));
    let mut found: Vec<PathBuf> = fs::read_dir(dir)
        .ok()?
        .flatten()
        .map(|e| e.path())
        .filter(|p| {
            p.file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.starts_with("debian-12-standard_") && n.ends_with(".tar.zst"))
        })
        .collect();
    found.sort();
    found.pop()
}

/// dnsmasq as the DHCP server on the test bridge, stopped when dropped.
struct Dhcp(Child);

impl Dhcp {
    fn start(net: &TestNet, dir: &Path, host: &str) -> Dhcp {
        let leases = dir.join("leases");
        let child = Command::new("ip")
            .args(["netns", "exec", &net.name, "dnsmasq", "--no-daemon"])
            .args([
                "--conf-file=/dev/null",
                "--port=0",
                "--interface=br0",
                "--bind-interfaces",
                "--dhcp-range=192.0.2.100,192.0.2.150,255.255.255.0,2m",
                "--dhcp-option=3,192.0.2.1",
            ])
            .arg(format!("--dhcp-host={host}"))
            .arg(format!("--dhcp-leasefile={}", leases.display()))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("dnsmasq (dnsmasq-base)");
        Dhcp(child)
    }
}

impl Drop for Dhcp {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[test]
fn debian_template_boots_systemd_and_powers_off() {
    require_host!();
    let Some(template) = debian_template() else {
        skip("no Debian template; build it with `make ct-template` (needs root)");
        return;
    };
    let net = TestNet::new("deb");
    let tmp = tempfile::tempdir().unwrap();
    // The address comes from DHCP (ifupdown's `inet dhcp`, isc-dhcp-client
    // in the guest), pinned to the container's MAC.
    let _dhcp = Dhcp::start(&net, tmp.path(), "bc:24:11:00:09:51,192.0.2.51");
    let mut ct = Ct::new(
        951,
        &template,
        &conf(
            "deb951",
            "net0: name=eth0,bridge=br0,hwaddr=BC:24:11:00:09:51,ip=dhcp,type=veth\n",
        ),
        "",
        "",
    );
    let started = Instant::now();
    ct.start(Some(&net), 30);
    // systemd's console getty prints the prompt once the system is up.
    let console = ct.wait_console("deb951 login:", 120);
    eprintln!("start to login prompt: {:?}", started.elapsed());
    assert!(console.contains("systemd"), "{console}");
    assert!(!console.contains("FAILED"), "a unit failed:\n{console}");
    let info: ctr::Info = serde_json::from_value(ct.ctl(ctr::Request::Info)).unwrap();
    let comm = fs::read_to_string(format!("/proc/{}/comm", info.pid)).unwrap();
    assert_eq!(comm.trim(), "systemd");
    let interfaces = fs::read_to_string(ct.rootfs().join("etc/network/interfaces")).unwrap();
    assert!(interfaces.contains("iface eth0 inet dhcp"), "{interfaces}");
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let ping = net.exec(&["ping", "-c", "1", "-W", "1", "192.0.2.51"]);
        if ping.status.success() {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the Debian container got no address by DHCP\n{}",
            ct.console()
        );
    }
    eprintln!("start to answering pings: {:?}", started.elapsed());
    // systemd halts on SIGRTMIN+3.
    ct.ctl(ctr::Request::Shutdown { timeout: Some(60) });
    let (status, log) = ct.wait_exit(90);
    assert_eq!(status.code(), Some(0), "{log}");
    assert!(
        !log.contains("did not end within the timeout"),
        "{log}\n{}",
        ct.console()
    );
    ct.assert_nothing_left(Some(&net));
}

#[test]
fn console_socket_reaches_the_guest_console() {
    require_host!();
    use std::io::Read;
    let tmp = tempfile::tempdir().unwrap();
    let template = build_template(tmp.path());
    let mut ct = Ct::new(961, &template, &conf("c", ""), "echo", "");
    ct.start(None, 10);
    ct.wait_console("OXBOW-CT ready", 30);
    let mut client = std::os::unix::net::UnixStream::connect(ct.console_socket()).unwrap();
    client
        .set_read_timeout(Some(Duration::from_millis(200)))
        .unwrap();
    // The guest reads a line from /dev/console and says it back.
    client.write_all(b"hello-console\n").unwrap();
    let mut seen = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(10);
    while !String::from_utf8_lossy(&seen).contains("OXBOW-CT echoed hello-console") {
        assert!(
            Instant::now() < deadline,
            "the client saw: {:?}\nconsole:\n{}",
            String::from_utf8_lossy(&seen),
            ct.console()
        );
        let mut buf = [0u8; 1024];
        if let Ok(n) = client.read(&mut buf) {
            seen.extend_from_slice(&buf[..n]);
        }
    }
    assert!(ct.console().contains("OXBOW-CT echoed hello-console"));
    ct.ctl(ctr::Request::Stop);
    let (status, log) = ct.wait_exit(10);
    assert_eq!(status.code(), Some(0), "{log}");
    ct.assert_nothing_left(None);
}

/// The guest's /dev/null, zero, full, random, urandom and tty are those
/// devices (numbers in hex, as stat prints them), readable and writable by
/// everyone, and work.
fn assert_device_nodes(console: &str) {
    let devnodes = line(console, "devnodes=");
    let devnodes = devnodes.split(' ').next().unwrap_or_default();
    assert_eq!(
        devnodes,
        "/dev/null:666:1:3,/dev/zero:666:1:5,/dev/full:666:1:7,/dev/random:666:1:8,\
         /dev/urandom:666:1:9,/dev/tty:666:5:0,",
        "{console}"
    );
    assert!(console.contains("reads=33 writes=ok"), "{console}");
}
