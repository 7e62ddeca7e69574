//! Host tests: the real `netd` binary in a fresh network namespace whose
//! NIC (one end of a veth pair) leads to a second namespace with a real
//! DHCP server.
//!
//! They need root, iproute2, `ping` (iputils-ping), `dnsmasq` (the Debian
//! package dnsmasq-base) and `slirp4netns` (which runs the DHCP server of
//! QEMU's user-mode network, libslirp, for a namespace), and fail with a
//! clear message when one is missing. Addresses come from the
//! documentation ranges and never leave the namespaces the tests create;
//! the slirp test only talks DHCP, which libslirp answers itself.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use serde_json::Value;

const NETD: &str = env!("CARGO_BIN_EXE_netd");

/// Finds a program on PATH or in the sbin directories.
fn tool(name: &str, package: &str) -> PathBuf {
    let path = std::env::var("PATH").unwrap_or_default();
    let dirs = path
        .split(':')
        .map(str::to_string)
        .chain(["/usr/sbin", "/sbin", "/usr/bin", "/bin"].map(String::from));
    for d in dirs {
        let p = Path::new(&d).join(name);
        if p.is_file() {
            return p;
        }
    }
    panic!("`{name}` not found: these tests need it; install the Debian package {package} (apt-get install -y {package})");
}

fn require_root() {
    assert!(
        nix::unistd::geteuid().is_root(),
        "these tests create network namespaces and must run as root"
    );
}

fn ip_tool() -> PathBuf {
    tool("ip", "iproute2")
}

fn run(cmd: &mut Command) -> String {
    let out = cmd.output().unwrap_or_else(|e| panic!("{cmd:?}: {e}"));
    assert!(
        out.status.success(),
        "{cmd:?} failed: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// A network namespace, deleted on drop.
struct Netns {
    name: String,
}

impl Netns {
    fn new(tag: &str) -> Netns {
        static N: AtomicU32 = AtomicU32::new(0);
        let name = format!(
            "netd-{tag}-{}-{}",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed)
        );
        run(Command::new(ip_tool()).args(["netns", "add", &name]));
        Netns { name }
    }

    /// `ip -n NS ARGS...`.
    fn ip(&self, args: &[&str]) -> String {
        run(Command::new(ip_tool()).arg("-n").arg(&self.name).args(args))
    }

    /// `ip -j -n NS ARGS...`, parsed.
    fn ip_json(&self, args: &[&str]) -> Value {
        let mut all = vec!["-j"];
        all.extend_from_slice(args);
        serde_json::from_str(&self.ip(&all)).expect("ip -j gave no JSON")
    }

    /// A command run inside the namespace.
    fn exec(&self, program: impl AsRef<std::ffi::OsStr>) -> Command {
        let mut c = Command::new(ip_tool());
        c.args(["netns", "exec", &self.name]).arg(program);
        c
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        let _ = Command::new(ip_tool())
            .args(["netns", "del", &self.name])
            .stderr(Stdio::null())
            .status();
    }
}

/// A child process, killed on drop.
struct Proc {
    child: Child,
    log: PathBuf,
}

impl Proc {
    fn spawn(mut cmd: Command, log: PathBuf) -> Proc {
        let out = fs::File::create(&log).unwrap();
        cmd.stdin(Stdio::null())
            .stdout(out.try_clone().unwrap())
            .stderr(out);
        let child = cmd.spawn().unwrap_or_else(|e| panic!("{cmd:?}: {e}"));
        Proc { child, log }
    }

    fn log(&self) -> String {
        fs::read_to_string(&self.log).unwrap_or_default()
    }

    fn assert_running(&mut self) {
        if let Some(status) = self.child.try_wait().unwrap() {
            panic!("process exited early ({status}):\n{}", self.log());
        }
    }

    /// Sends SIGTERM and waits for the exit status.
    fn terminate(&mut self) -> ExitStatus {
        let pid = nix::unistd::Pid::from_raw(self.child.id() as i32);
        let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM);
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            if let Some(s) = self.child.try_wait().unwrap() {
                return s;
            }
            assert!(
                Instant::now() < deadline,
                "no exit after SIGTERM:\n{}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A client namespace with NIC `nic0` whose veth peer `srv0` sits in a
/// server namespace with address `server_cidr`.
struct Lab {
    dir: tempfile::TempDir,
    client: Netns,
    server: Netns,
}

impl Lab {
    fn new(tag: &str, server_cidr: &str) -> Lab {
        require_root();
        let client = Netns::new(&format!("{tag}c"));
        let server = Netns::new(&format!("{tag}s"));
        client.ip(&[
            "link",
            "add",
            "nic0",
            "type",
            "veth",
            "peer",
            "name",
            "srv0",
            "netns",
            &server.name,
        ]);
        server.ip(&["addr", "add", server_cidr, "dev", "srv0"]);
        server.ip(&["link", "set", "srv0", "up"]);
        server.ip(&["link", "set", "lo", "up"]);
        Lab {
            dir: tempfile::tempdir().unwrap(),
            client,
            server,
        }
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    /// Starts dnsmasq on `srv0` with the given extra options.
    fn dnsmasq(&self, opts: &[&str]) -> Proc {
        let bin = tool("dnsmasq", "dnsmasq-base");
        let mut cmd = self.server.exec(bin);
        cmd.args([
            "--no-daemon",
            "--conf-file=/dev/null",
            "--user=root",
            "--port=0",
            "--interface=srv0",
            "--bind-interfaces",
            "--except-interface=lo",
            "--log-dhcp",
        ])
        .arg(format!(
            "--dhcp-leasefile={}",
            self.path("leases").display()
        ))
        .arg(format!("--pid-file={}", self.path("dnsmasq.pid").display()))
        .args(opts);
        let p = Proc::spawn(cmd, self.path("dnsmasq.log"));
        std::thread::sleep(Duration::from_millis(300));
        p
    }

    /// Starts netd in the client namespace, logging to `log`.
    fn netd(&self, log: &str, extra: &[&str]) -> Proc {
        let mut cmd = self.client.exec(NETD);
        cmd.env("NETD_LOG", "netd=debug")
            .arg("--answer")
            .arg(self.path("answer.toml"))
            .arg("--ready-file")
            .arg(self.path("netd.ready"))
            .arg("--resolv-conf")
            .arg(self.path("resolv.conf"))
            .arg("--interfaces")
            .arg(self.path("interfaces"))
            .arg("--firewall-dir")
            .arg(self.path("firewall"))
            .args(extra);
        Proc::spawn(cmd, self.path(log))
    }

    /// Waits for the ready file and returns its content.
    fn wait_ready(&self, netd: &mut Proc, within: Duration) -> String {
        let deadline = Instant::now() + within;
        loop {
            if let Ok(s) = fs::read_to_string(self.path("netd.ready")) {
                return s;
            }
            netd.assert_running();
            assert!(
                Instant::now() < deadline,
                "no ready file after {within:?}:\n{}",
                netd.log()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    fn wait_log(&self, netd: &mut Proc, needle: &str, within: Duration) {
        let deadline = Instant::now() + within;
        while !netd.log().contains(needle) {
            netd.assert_running();
            assert!(
                Instant::now() < deadline,
                "no `{needle}` in the log after {within:?}:\n{}",
                netd.log()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    fn link(&self, name: &str) -> Value {
        self.client.ip_json(&["-d", "link", "show", "dev", name])[0].clone()
    }

    /// The IPv4 addresses of a client interface, as `a.b.c.d/len`.
    fn ipv4(&self, dev: &str) -> Vec<String> {
        let v = self.client.ip_json(&["-4", "addr", "show", "dev", dev]);
        v[0]["addr_info"]
            .as_array()
            .map(|a| {
                a.iter()
                    .map(|i| format!("{}/{}", i["local"].as_str().unwrap(), i["prefixlen"]))
                    .collect()
            })
            .unwrap_or_default()
    }

    fn default_route(&self) -> Value {
        let v = self.client.ip_json(&["-4", "route", "show", "default"]);
        assert_eq!(v.as_array().map(Vec::len), Some(1), "default routes: {v}");
        v[0].clone()
    }

    fn ping(&self, addr: &str) {
        let ping = tool("ping", "iputils-ping");
        run(self.client.exec(ping).args(["-c", "1", "-W", "3", addr]));
    }

    fn carrier_changes(&self, dev: &str) -> String {
        run(self
            .client
            .exec("cat")
            .arg(format!("/sys/class/net/{dev}/carrier_changes")))
    }

    /// Checks what every successful run must leave: the bridge, marked as
    /// Oxbow's, with nic0 in it and nic0's MAC, both up.
    fn assert_bridge(&self) {
        let br = self.link("vmbr0");
        assert_eq!(br["linkinfo"]["info_kind"], "bridge", "{br}");
        assert_eq!(br["ifalias"], "oxbow:netd", "{br}");
        let nic = self.link("nic0");
        assert_eq!(nic["master"], "vmbr0", "{nic}");
        assert_eq!(
            br["address"], nic["address"],
            "the bridge has the NIC's MAC"
        );
        for l in [&br, &nic] {
            let flags = l["flags"].as_array().unwrap();
            assert!(flags.iter().any(|f| f == "UP"), "{l}");
        }
    }
}

/// Collects the ARP packets that reach `dev` in namespace `ns` for
/// `within`, on a thread that enters the namespace (an AF_PACKET socket
/// bound to the interface): each packet's 28 bytes.
fn capture_arp(ns: &Netns, dev: &str, within: Duration) -> std::thread::JoinHandle<Vec<Vec<u8>>> {
    let (path, dev) = (format!("/run/netns/{}", ns.name), dev.to_string());
    let (tx, rx) = std::sync::mpsc::channel();
    let handle = std::thread::spawn(move || {
        let f = fs::File::open(&path).unwrap();
        nix::sched::setns(f, nix::sched::CloneFlags::CLONE_NEWNET).unwrap();
        let proto = 0x0806u16.to_be();
        // SAFETY: socket(2) takes no pointers; the descriptor is checked.
        let fd = unsafe { libc::socket(libc::AF_PACKET, libc::SOCK_DGRAM, i32::from(proto)) };
        assert!(
            fd >= 0,
            "AF_PACKET socket: {}",
            std::io::Error::last_os_error()
        );
        let name = std::ffi::CString::new(dev.clone()).unwrap();
        // SAFETY: a valid NUL-terminated name.
        let ifindex = unsafe { libc::if_nametoindex(name.as_ptr()) };
        assert!(ifindex > 0, "no interface {dev} in {path}");
        // SAFETY: sockaddr_ll is plain old data; all zeroes is valid.
        let mut addr: libc::sockaddr_ll = unsafe { std::mem::zeroed() };
        addr.sll_family = libc::AF_PACKET as u16;
        addr.sll_protocol = proto;
        addr.sll_ifindex = ifindex as i32;
        let tv = libc::timeval {
            tv_sec: 0,
            tv_usec: 100_000,
        };
        // SAFETY: the address and the option live through the calls, with
        // the lengths given.
        unsafe {
            assert_eq!(
                libc::bind(
                    fd,
                    std::ptr::addr_of!(addr).cast(),
                    std::mem::size_of::<libc::sockaddr_ll>() as u32
                ),
                0
            );
            libc::setsockopt(
                fd,
                libc::SOL_SOCKET,
                libc::SO_RCVTIMEO,
                std::ptr::addr_of!(tv).cast(),
                std::mem::size_of::<libc::timeval>() as u32,
            );
        }
        tx.send(()).unwrap();
        let end = Instant::now() + within;
        let mut packets = Vec::new();
        let mut buf = [0u8; 1500];
        while Instant::now() < end {
            // SAFETY: the buffer is valid for its length.
            let n = unsafe { libc::recv(fd, buf.as_mut_ptr().cast(), buf.len(), 0) };
            if n >= 28 {
                packets.push(buf[..28].to_vec());
            }
        }
        // SAFETY: the descriptor is ours and closed once.
        unsafe { libc::close(fd) };
        packets
    });
    rx.recv_timeout(Duration::from_secs(10))
        .expect("the capture thread did not start");
    handle
}

fn write_static_answer(lab: &Lab) {
    fs::write(
        lab.path("answer.toml"),
        r#"
[global]
root-password = "test-password"
fqdn = "node1.example.org"

[network]
source = "from-answer"
cidr = "203.0.113.10/24"
gateway = "203.0.113.1"
dns = "203.0.113.53"
"#,
    )
    .unwrap();
}

#[test]
fn dhcp_lease_from_dnsmasq_renewal_and_restart() {
    let lab = Lab::new("dhcp", "198.51.100.1/24");
    let _dnsmasq = lab.dnsmasq(&[
        "--dhcp-range=198.51.100.100,198.51.100.150,255.255.255.0,2m",
        "--dhcp-option=3,198.51.100.1",
        "--dhcp-option=6,198.51.100.53",
        "--dhcp-option=15,lab.example",
        // A short T1, so that the test sees a renewal.
        "--dhcp-option=option:T1,3",
    ]);
    // No answer file: DHCP.
    let mut netd = lab.netd("netd1.log", &["--nic", "nic0"]);
    let ready = lab.wait_ready(&mut netd, Duration::from_secs(30));

    lab.assert_bridge();
    let addrs = lab.ipv4("vmbr0");
    assert_eq!(addrs.len(), 1, "{addrs:?}");
    let addr = &addrs[0];
    assert!(
        addr.starts_with("198.51.100.1") && addr.ends_with("/24"),
        "{addr}"
    );
    assert_ready(&ready, addr, "dhcp");
    assert!(lab.ipv4("nic0").is_empty(), "the port has no address");
    let route = lab.default_route();
    assert_eq!(route["gateway"], "198.51.100.1", "{route}");
    assert_eq!(route["dev"], "vmbr0", "{route}");
    assert_eq!(route["protocol"], "dhcp", "{route}");
    let resolv = fs::read_to_string(lab.path("resolv.conf")).unwrap();
    assert!(resolv.contains("\nnameserver 198.51.100.53\n"), "{resolv}");
    assert!(resolv.contains("\nsearch lab.example\n"), "{resolv}");
    let log = netd.log();
    for line in [
        "created bridge vmbr0",
        "nic0 joined vmbr0",
        &format!("vmbr0: {addr} via 198.51.100.1 (dhcp, lease 120 s)"),
    ] {
        assert!(log.contains(line), "no `{line}` in:\n{log}");
    }
    let leases = fs::read_to_string(lab.path("leases")).unwrap();
    assert!(leases.contains(addr.trim_end_matches("/24")), "{leases}");
    lab.ping("198.51.100.1");

    // T1 is 3 s: the lease is renewed with the server.
    lab.wait_log(&mut netd, "vmbr0: renewed", Duration::from_secs(15));

    // SIGTERM: exit 0, network left as it is.
    let status = netd.terminate();
    assert!(status.success(), "{status}:\n{}", netd.log());
    assert_eq!(lab.ipv4("vmbr0"), addrs);

    // A restart adopts everything without taking anything down.
    let carrier = lab.carrier_changes("vmbr0");
    let ifindex = lab.link("vmbr0")["ifindex"].clone();
    fs::remove_file(lab.path("netd.ready")).unwrap();
    let monitor = Proc::spawn(
        {
            let mut c = Command::new(ip_tool());
            c.args([
                "-n",
                &lab.client.name,
                "monitor",
                "link",
                "address",
                "route",
            ]);
            c
        },
        lab.path("monitor.log"),
    );
    std::thread::sleep(Duration::from_millis(200));
    let mut again = lab.netd("netd2.log", &["--nic", "nic0"]);
    let ready = lab.wait_ready(&mut again, Duration::from_secs(30));
    assert_ready(&ready, addr, "dhcp");
    std::thread::sleep(Duration::from_millis(300));
    let events = monitor.log();
    drop(monitor);
    assert!(
        !events.contains("Deleted"),
        "the restart removed something:\n{events}"
    );
    let log = again.log();
    for word in ["created bridge", "joined", "removed", " up\n"] {
        assert!(
            !log.contains(word),
            "the restart changed links (`{word}`):\n{log}"
        );
    }
    assert_eq!(lab.link("vmbr0")["ifindex"], ifindex);
    assert_eq!(lab.carrier_changes("vmbr0"), carrier);
    assert_eq!(lab.ipv4("vmbr0"), addrs);
    lab.assert_bridge();
    lab.ping("198.51.100.1");
    let status = again.terminate();
    assert!(status.success(), "{status}:\n{}", again.log());
}

#[test]
fn static_answer_address_route_and_resolver() {
    let lab = Lab::new("static", "203.0.113.1/24");
    write_static_answer(&lab);
    let arp = capture_arp(&lab.server, "srv0", Duration::from_secs(6));
    let mut netd = lab.netd("netd1.log", &["--nic", "nic0"]);
    let ready = lab.wait_ready(&mut netd, Duration::from_secs(15));
    assert_eq!(ready, "203.0.113.10/24 via 203.0.113.1 (static)\n");
    lab.assert_bridge();
    // The address is announced twice (RFC 5227), from the bridge's MAC,
    // before anyone asked for it.
    let mac: Vec<u8> = lab.link("vmbr0")["address"]
        .as_str()
        .unwrap()
        .split(':')
        .map(|b| u8::from_str_radix(b, 16).unwrap())
        .collect();
    let mut announcement = vec![0, 1, 8, 0, 6, 4, 0, 1];
    announcement.extend(&mac);
    announcement.extend([203, 0, 113, 10, 0, 0, 0, 0, 0, 0, 203, 0, 113, 10]);
    let seen = arp.join().unwrap();
    assert_eq!(
        seen.iter().filter(|p| **p == announcement).count(),
        2,
        "ARP seen by the server: {seen:?}\n{}",
        netd.log()
    );
    assert_eq!(lab.ipv4("vmbr0"), ["203.0.113.10/24"]);
    let route = lab.default_route();
    assert_eq!(route["gateway"], "203.0.113.1", "{route}");
    assert_eq!(route["dev"], "vmbr0", "{route}");
    assert_eq!(route["protocol"], "static", "{route}");
    let resolv = fs::read_to_string(lab.path("resolv.conf")).unwrap();
    assert!(resolv.ends_with("\nnameserver 203.0.113.53\n"), "{resolv}");
    lab.ping("203.0.113.1");
    let status = netd.terminate();
    assert!(status.success(), "{status}:\n{}", netd.log());

    // Idempotent: a second run changes nothing.
    fs::remove_file(lab.path("netd.ready")).unwrap();
    let mut again = lab.netd("netd2.log", &["--nic", "nic0"]);
    lab.wait_ready(&mut again, Duration::from_secs(15));
    let log = again.log();
    assert!(log.contains("already configured"), "{log}");
    for word in ["created bridge", "joined", "removed"] {
        assert!(!log.contains(word), "`{word}` on the second run:\n{log}");
    }
    assert_eq!(lab.ipv4("vmbr0"), ["203.0.113.10/24"]);
    assert!(again.terminate().success());
}

#[test]
fn boot_firewall_keeps_dhcp_and_management_working() {
    let lab = Lab::new("fw", "198.51.100.1/24");
    fs::create_dir_all(lab.path("firewall")).unwrap();
    fs::write(
        lab.path("firewall/cluster.fw"),
        "[OPTIONS]\nenable: 1\npolicy_in: DROP\n",
    )
    .unwrap();
    fs::write(lab.path("firewall/host.fw"), "[RULES]\nIN DROP -p icmp\n").unwrap();
    let _dnsmasq = lab.dnsmasq(&[
        "--dhcp-range=198.51.100.100,198.51.100.150,255.255.255.0,2m",
        "--dhcp-option=3,198.51.100.1",
    ]);
    let mut netd = lab.netd("netd.log", &["--nic", "nic0"]);
    // The DHCP client gets its lease through a DROP policy.
    let ready = lab.wait_ready(&mut netd, Duration::from_secs(30));
    assert!(ready.contains("(dhcp)"), "{ready}");
    let log = netd.log();
    assert!(log.contains("firewall: host rules from"), "{log}");
    let table = run(lab
        .client
        .exec(tool("nft", "nftables"))
        .args(["list", "table", "inet", "oxbow"]));
    assert!(table.contains("dport { 22, 8006 } accept"), "{table}");
    // The node may still reach out (replies pass conntrack) ...
    lab.ping("198.51.100.1");
    // ... but answers no ping from outside.
    let addr = lab.ipv4("vmbr0")[0].trim_end_matches("/24").to_string();
    let pinged = lab
        .server
        .exec(tool("ping", "iputils-ping"))
        .args(["-c1", "-W1", &addr])
        .status()
        .unwrap();
    assert!(!pinged.success(), "ping passed the firewall");
    assert!(netd.terminate().success());
}

#[test]
fn dhcp_failure_still_signals_ready_and_keeps_trying() {
    let lab = Lab::new("nosrv", "192.0.2.1/24");
    let mut netd = lab.netd("netd.log", &["--nic", "nic0", "--ready-timeout", "2"]);
    let ready = lab.wait_ready(&mut netd, Duration::from_secs(10));
    assert_eq!(ready, "unconfigured\n");
    assert!(
        netd.log().contains("no DHCP lease after 2 s"),
        "{}",
        netd.log()
    );
    lab.assert_bridge();
    assert!(lab.ipv4("vmbr0").is_empty());

    // A server that turns up later is found by the retries.
    let _dnsmasq = lab.dnsmasq(&[
        "--dhcp-range=192.0.2.100,192.0.2.150,255.255.255.0,2m",
        "--dhcp-option=3,192.0.2.1",
        "--dhcp-option=6,192.0.2.53",
    ]);
    lab.wait_log(&mut netd, "(dhcp, lease 120 s)", Duration::from_secs(40));
    let addrs = lab.ipv4("vmbr0");
    assert_eq!(addrs.len(), 1, "{addrs:?}");
    let ready = fs::read_to_string(lab.path("netd.ready")).unwrap();
    assert_ready(&ready, &addrs[0], "dhcp");
    assert!(netd.terminate().success());
}

#[test]
fn missing_nic_still_creates_the_bridge() {
    let lab = Lab::new("nonic", "203.0.113.1/24");
    write_static_answer(&lab);
    let mut netd = lab.netd("netd.log", &["--nic", "nosuchnic"]);
    // netd waits 10 s for the NIC first.
    lab.wait_ready(&mut netd, Duration::from_secs(40));
    let log = netd.log();
    assert!(log.contains("waiting up to 10 s for nosuchnic"), "{log}");
    assert!(log.contains("NIC nosuchnic does not exist"), "{log}");
    assert!(log.contains("created bridge vmbr0"), "{log}");
    let br = lab.link("vmbr0");
    assert_eq!(br["ifalias"], "oxbow:netd", "{br}");
    assert!(
        lab.link("nic0").get("master").is_none(),
        "nic0 was left alone"
    );
    assert_eq!(lab.ipv4("vmbr0"), ["203.0.113.10/24"]);
    assert!(netd.terminate().success());
}

/// A NIC that appears after netd started (a driver still probing) joins
/// the bridge: the one named with `--nic`, and, without it, the first
/// physical NIC found (here in a sysfs tree of the test's own, since a
/// veth has no `device` link to tell it from a physical NIC).
#[test]
fn a_nic_that_appears_late_joins_the_bridge() {
    let lab = Lab::new("latenic", "203.0.113.1/24");
    write_static_answer(&lab);
    // Named: nic0 is renamed away first and comes back a second later.
    lab.client.ip(&["link", "set", "nic0", "name", "later0"]);
    let mut netd = lab.netd("netd1.log", &["--nic", "nic0"]);
    lab.wait_log(
        &mut netd,
        "waiting up to 10 s for nic0",
        Duration::from_secs(15),
    );
    std::thread::sleep(Duration::from_secs(1));
    lab.client.ip(&["link", "set", "later0", "name", "nic0"]);
    lab.wait_ready(&mut netd, Duration::from_secs(20));
    assert!(netd.log().contains("nic0 appeared after"), "{}", netd.log());
    lab.assert_bridge();
    lab.ping("203.0.113.1");
    assert!(netd.terminate().success());

    // Picked: the sysfs tree shows no physical NIC, then nic0.
    lab.client.ip(&["link", "del", "vmbr0"]);
    let class_net = lab.path("class-net");
    fs::create_dir_all(&class_net).unwrap();
    fs::remove_file(lab.path("netd.ready")).unwrap();
    let mut netd = lab.netd(
        "netd2.log",
        &["--sys-class-net", class_net.to_str().unwrap()],
    );
    lab.wait_log(
        &mut netd,
        "waiting up to 10 s for a physical Ethernet NIC",
        Duration::from_secs(15),
    );
    let nic = class_net.join("nic0");
    fs::create_dir_all(nic.join("device")).unwrap();
    fs::write(nic.join("type"), "1\n").unwrap();
    let ifindex = lab.link("nic0")["ifindex"].to_string();
    fs::write(nic.join("ifindex"), format!("{ifindex}\n")).unwrap();
    lab.wait_ready(&mut netd, Duration::from_secs(20));
    assert!(netd.log().contains("nic0 appeared after"), "{}", netd.log());
    lab.assert_bridge();
    lab.ping("203.0.113.1");
    assert!(netd.terminate().success());
}

#[test]
fn dhcp_against_qemu_user_networking() {
    require_root();
    let slirp = tool("slirp4netns", "slirp4netns");
    let dir = tempfile::tempdir().unwrap();
    let ns = Netns::new("slirp");
    // libslirp, as in `qemu -nic user`: server 10.0.2.2, DNS 10.0.2.3, the
    // guest gets 10.0.2.15/24.
    let mut cmd = Command::new(slirp);
    cmd.args([
        "--netns-type=path",
        "--disable-host-loopback",
        "--disable-dns",
    ])
    .arg(Path::new("/run/netns").join(&ns.name))
    .arg("tap0");
    let _slirp = Proc::spawn(cmd, dir.path().join("slirp.log"));
    let deadline = Instant::now() + Duration::from_secs(10);
    while ns.ip(&["-o", "link"]).lines().all(|l| !l.contains("tap0")) {
        assert!(Instant::now() < deadline, "slirp4netns made no tap0");
        std::thread::sleep(Duration::from_millis(100));
    }
    let mut netd = {
        let mut cmd = ns.exec(NETD);
        cmd.arg("--nic")
            .arg("tap0")
            .arg("--answer")
            .arg(dir.path().join("answer.toml"))
            .arg("--ready-file")
            .arg(dir.path().join("netd.ready"))
            .arg("--resolv-conf")
            .arg(dir.path().join("resolv.conf"));
        Proc::spawn(cmd, dir.path().join("netd.log"))
    };
    let deadline = Instant::now() + Duration::from_secs(30);
    let ready = loop {
        if let Ok(s) = fs::read_to_string(dir.path().join("netd.ready")) {
            break s;
        }
        netd.assert_running();
        assert!(Instant::now() < deadline, "no ready file:\n{}", netd.log());
        std::thread::sleep(Duration::from_millis(100));
    };
    assert_ready(&ready, "10.0.2.15/24", "dhcp");
    let log = netd.log();
    assert!(
        log.contains("vmbr0: 10.0.2.15/24 via 10.0.2.2 (dhcp, lease 86400 s)"),
        "{log}"
    );
    let route: Value =
        serde_json::from_str(&ns.ip(&["-j", "-4", "route", "show", "default"])).unwrap();
    assert_eq!(route[0]["gateway"], "10.0.2.2", "{route}");
    assert_eq!(route[0]["dev"], "vmbr0", "{route}");
    let resolv = fs::read_to_string(dir.path().join("resolv.conf")).unwrap();
    assert!(resolv.ends_with("\nnameserver 10.0.2.3\n"), "{resolv}");
    assert!(netd.terminate().success());
}

/// The ready file names the address first and its source last.
fn assert_ready(ready: &str, addr: &str, source: &str) {
    assert_eq!(ready.split(' ').next(), Some(addr), "{ready:?}");
    assert!(ready.ends_with(&format!(" ({source})\n")), "{ready:?}");
}
