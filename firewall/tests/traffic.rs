//! Host tests: compiled rulesets applied with nft inside network
//! namespaces, judged by real TCP, UDP and ICMP traffic between them.
//!
//! They need root, iproute2, nftables and `ping` (iputils-ping).
//! Addresses come from the documentation ranges and never leave the
//! namespaces.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream, UdpSocket};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use firewall::{
    compile, Applier, Features, FwFile, Guest, GuestPort, Input, NetlinkApplier, NftApplier,
};

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

struct Netns {
    name: String,
}

impl Netns {
    fn new(tag: &str) -> Netns {
        assert!(
            nix::unistd::geteuid().is_root(),
            "these tests create network namespaces and must run as root"
        );
        static N: AtomicU32 = AtomicU32::new(0);
        let name = format!(
            "fw-{tag}-{}-{}",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed)
        );
        run(Command::new("ip").args(["netns", "add", &name]));
        let ns = Netns { name };
        ns.ip(&["link", "set", "lo", "up"]);
        ns
    }

    fn ip(&self, args: &[&str]) -> String {
        run(Command::new("ip").arg("-n").arg(&self.name).args(args))
    }

    /// Runs `f` on a thread inside the namespace (children it spawns are
    /// in the namespace too).
    fn enter<R: Send>(&self, f: impl FnOnce() -> R + Send) -> R {
        let path = format!("/run/netns/{}", self.name);
        std::thread::scope(|s| {
            s.spawn(|| {
                let fd = std::fs::File::open(&path).unwrap();
                nix::sched::setns(&fd, nix::sched::CloneFlags::CLONE_NEWNET).unwrap();
                f()
            })
            .join()
            .unwrap()
        })
    }

    /// Serves TCP (echoing one line) and UDP (echoing a datagram) on
    /// `ports` in the background, for as long as the namespace lives.
    fn serve(&self, tcp: &[u16], udp: &[u16]) {
        for &port in tcp {
            let l = self.enter(|| TcpListener::bind(("0.0.0.0", port)).unwrap());
            std::thread::spawn(move || {
                for mut s in l.incoming().flatten() {
                    let mut b = [0u8; 64];
                    let n = s.read(&mut b).unwrap_or(0);
                    let _ = s.write_all(&b[..n]);
                }
            });
        }
        for &port in udp {
            let u = self.enter(|| UdpSocket::bind(("0.0.0.0", port)).unwrap());
            std::thread::spawn(move || {
                let mut b = [0u8; 64];
                while let Ok((n, from)) = u.recv_from(&mut b) {
                    let _ = u.send_to(&b[..n], from);
                }
            });
        }
    }

    fn tcp(&self, to: &str, port: u16) -> Reach {
        let addr: SocketAddr = format!("{to}:{port}").parse().unwrap();
        self.enter(
            || match TcpStream::connect_timeout(&addr, Duration::from_millis(700)) {
                Ok(mut s) => {
                    s.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
                    s.write_all(b"hi").unwrap();
                    let mut b = [0u8; 2];
                    match s.read_exact(&mut b) {
                        Ok(()) if &b == b"hi" => Reach::Open,
                        _ => Reach::Dropped,
                    }
                }
                Err(e) if e.kind() == std::io::ErrorKind::ConnectionRefused => Reach::Refused,
                Err(_) => Reach::Dropped,
            },
        )
    }

    fn udp(&self, to: &str, port: u16) -> Reach {
        self.enter(|| {
            let u = UdpSocket::bind("0.0.0.0:0").unwrap();
            u.set_read_timeout(Some(Duration::from_millis(700)))
                .unwrap();
            // Connected, so that an ICMP port-unreachable shows as
            // ECONNREFUSED.
            u.connect((to, port)).unwrap();
            u.send(b"hi").unwrap();
            let mut b = [0u8; 8];
            match u.recv(&mut b) {
                Ok(_) => Reach::Open,
                Err(e) if e.kind() == std::io::ErrorKind::ConnectionRefused => Reach::Refused,
                Err(_) => Reach::Dropped,
            }
        })
    }

    fn ping(&self, to: &str) -> bool {
        Command::new("ip")
            .args(["netns", "exec", &self.name, "ping", "-c1", "-W1", to])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .map(|s| s.success())
            .unwrap_or(false)
    }

    fn apply(&self, applier: &(dyn Applier + Sync), input: &Input) -> Result<(), String> {
        let ruleset = compile(input).map_err(|e| e.to_string())?;
        self.enter(|| applier.apply(&ruleset))
            .map_err(|e| e.to_string())
    }

    fn ruleset(&self) -> String {
        run(Command::new("ip").args(["netns", "exec", &self.name, "nft", "list", "ruleset"]))
    }

    fn features(&self) -> Features {
        self.enter(|| NftApplier::default().detect_features())
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        let _ = Command::new("ip")
            .args(["netns", "del", &self.name])
            .stderr(Stdio::null())
            .status();
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Reach {
    Open,
    Refused,
    Dropped,
}

/// `node` (192.0.2.10) and `client` (192.0.2.1) on a veth pair.
fn pair(tag: &str) -> (Netns, Netns) {
    let node = Netns::new(tag);
    let client = Netns::new(&format!("{tag}c"));
    run(Command::new("ip").args([
        "link",
        "add",
        "eth0",
        "netns",
        &node.name,
        "type",
        "veth",
        "peer",
        "name",
        "eth0",
        "netns",
        &client.name,
    ]));
    node.ip(&["addr", "add", "192.0.2.10/24", "dev", "eth0"]);
    client.ip(&["addr", "add", "192.0.2.1/24", "dev", "eth0"]);
    node.ip(&["link", "set", "eth0", "up"]);
    client.ip(&["link", "set", "eth0", "up"]);
    (node, client)
}

/// Both appliers: through the nft program, and one netlink batch.
fn appliers() -> Vec<(&'static str, Box<dyn Applier + Sync>)> {
    vec![
        ("nft", Box::new(NftApplier::default())),
        ("netlink", Box::new(NetlinkApplier)),
    ]
}

fn fw(name: &str, text: &str) -> FwFile {
    FwFile::parse(name, text).unwrap_or_else(|e| panic!("{e}"))
}

fn host_input(host_rules: &str) -> Input {
    Input {
        cluster: fw("cluster.fw", "[OPTIONS]\nenable: 1\npolicy_in: DROP\n"),
        host: fw("host.fw", &format!("[RULES]\n{host_rules}")),
        ..Input::default()
    }
}

#[test]
fn host_ruleset_allows_and_denies_tcp_udp_icmp() {
    for (name, applier) in appliers() {
        host_traffic(name, applier.as_ref());
    }
}

fn host_traffic(tag: &str, applier: &(dyn Applier + Sync)) {
    let (node, client) = pair(&format!("h{tag}"));
    node.serve(&[22, 80, 5000, 8006], &[5353, 5354]);
    client.serve(&[7000], &[]);
    // Without a firewall everything answers.
    assert_eq!(client.tcp("192.0.2.10", 5000), Reach::Open);
    assert!(client.ping("192.0.2.10"));

    node.apply(
        applier,
        &host_input("IN HTTP(ACCEPT)\nIN ACCEPT -p udp -dport 5353 -source 192.0.2.0/24\n"),
    )
    .unwrap();
    assert_eq!(client.tcp("192.0.2.10", 80), Reach::Open);
    assert_eq!(client.tcp("192.0.2.10", 5000), Reach::Dropped);
    assert_eq!(client.udp("192.0.2.10", 5353), Reach::Open);
    assert_eq!(client.udp("192.0.2.10", 5354), Reach::Dropped);
    assert!(!client.ping("192.0.2.10"), "ping passed a DROP policy");
    // Management stays reachable without a rule for it.
    assert_eq!(client.tcp("192.0.2.10", 8006), Reach::Open);
    assert_eq!(client.tcp("192.0.2.10", 22), Reach::Open);
    // Replies to the node's own connections come back (conntrack).
    assert_eq!(node.tcp("192.0.2.1", 7000), Reach::Open);

    // A new ruleset: ping allowed, 5000 rejected, the API explicitly
    // denied while SSH stays.
    node.apply(
        applier,
        &host_input(
            "IN Ping(ACCEPT)\nIN REJECT -p tcp -dport 5000\nIN DROP -p tcp -dport 8006\nIN DROP\n",
        ),
    )
    .unwrap();
    assert!(client.ping("192.0.2.10"));
    assert_eq!(client.tcp("192.0.2.10", 5000), Reach::Refused);
    assert_eq!(client.tcp("192.0.2.10", 8006), Reach::Dropped);
    assert_eq!(client.tcp("192.0.2.10", 22), Reach::Open);
    assert_eq!(client.tcp("192.0.2.10", 80), Reach::Dropped);

    // Long runs of similar rules are merged into set lookups
    // (firewall::optimize); they must still mean what they say.
    let mut rules = String::new();
    for i in 0..20 {
        rules += &format!(
            "IN ACCEPT -p tcp -dport {} -source 192.0.2.{}\n",
            5000 + i,
            1 + i
        );
    }
    for i in 0..5 {
        rules += &format!("IN ACCEPT -p udp -dport {}\n", 5350 + i);
    }
    let merged = host_input(&rules);
    let compiled = compile(&merged).unwrap().to_string();
    assert!(compiled.contains("ip saddr . th dport {"), "{compiled}");
    assert!(
        compiled.contains("th dport { 5350, 5351, 5352, 5353, 5354 }"),
        "{compiled}"
    );
    node.apply(applier, &merged).unwrap();
    assert_eq!(client.tcp("192.0.2.10", 5000), Reach::Open);
    assert_eq!(client.tcp("192.0.2.10", 80), Reach::Dropped);
    assert_eq!(client.udp("192.0.2.10", 5353), Reach::Open);
    assert_eq!(client.udp("192.0.2.10", 5354), Reach::Open);
    assert_eq!(client.udp("192.0.2.10", 5352), Reach::Refused);
    assert_eq!(client.udp("192.0.2.10", 5355), Reach::Dropped);
    client.ip(&["addr", "add", "192.0.2.2/24", "dev", "eth0"]);
    let from_second = client.enter(|| {
        let s = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
        s.bind(&"192.0.2.2:0".parse::<SocketAddr>().unwrap().into())
            .unwrap();
        // Nothing listens on 5001: reaching it means being refused.
        s.connect_timeout(
            &"192.0.2.10:5001".parse::<SocketAddr>().unwrap().into(),
            Duration::from_millis(700),
        )
        .map_err(|e| e.kind())
    });
    assert_eq!(
        from_second.unwrap_err(),
        std::io::ErrorKind::ConnectionRefused,
        "192.0.2.2 may reach 5001"
    );
    assert_eq!(
        client.tcp("192.0.2.10", 5001),
        Reach::Dropped,
        "192.0.2.1 may not"
    );
    client.ip(&["addr", "del", "192.0.2.2/24", "dev", "eth0"]);

    // Switching the firewall off removes our tables.
    node.apply(applier, &Input::default()).unwrap();
    assert_eq!(client.tcp("192.0.2.10", 5000), Reach::Open);
    assert!(!node.ruleset().contains("oxbow"));
}

#[test]
fn bad_reference_or_refused_ruleset_keeps_the_previous_one() {
    for (name, applier) in appliers() {
        keep_previous(name, applier.as_ref());
    }
}

fn keep_previous(tag: &str, applier: &(dyn Applier + Sync)) {
    let (node, client) = pair(&format!("k{tag}"));
    node.serve(&[80, 5000], &[]);
    // A table of someone else's, which must survive our applies.
    node.enter(|| {
        run(Command::new("nft").args(["add", "table", "inet", "other"]));
    });
    node.apply(applier, &host_input("IN HTTP(ACCEPT)\n"))
        .unwrap();
    let before = node.ruleset();

    let err = node
        .apply(
            applier,
            &host_input("IN HTTP(ACCEPT)\nIN ACCEPT -source nosuchalias\n"),
        )
        .unwrap_err();
    assert_eq!(err, "host.fw, line 3: unknown alias `nosuchalias`");
    let err = node
        .apply(
            applier,
            &host_input("IN ACCEPT -source +nosuchset -p tcp -dport 5000\n"),
        )
        .unwrap_err();
    assert_eq!(err, "host.fw, line 2: unknown ipset `nosuchset`");
    assert_eq!(node.ruleset(), before);

    // One the kernel refuses half-way (a jump to a missing chain): the
    // transaction is aborted as a whole.
    let mut ruleset = compile(&host_input("IN ACCEPT -p tcp -dport 5000\n")).unwrap();
    ruleset.tables[0].chains[0]
        .rules
        .push(firewall::nft::Rule::verdict(
            vec![],
            firewall::nft::Verdict::Jump("missing".into()),
        ));
    let err = node.enter(|| applier.apply(&ruleset)).unwrap_err();
    assert!(err.to_string().contains("nft refused"), "{err}");
    assert!(
        err.to_string().contains("missing") || err.to_string().contains("No such file"),
        "{err}"
    );
    assert_eq!(node.ruleset(), before);
    assert_eq!(client.tcp("192.0.2.10", 80), Reach::Open);
    assert_eq!(client.tcp("192.0.2.10", 5000), Reach::Dropped);
    assert!(node.ruleset().contains("table inet other"));
}

#[test]
fn guest_ruleset_filters_bridged_traffic_per_port() {
    for (name, applier) in appliers() {
        guest_traffic(name, applier.as_ref());
    }
}

fn guest_traffic(tag: &str, applier: &(dyn Applier + Sync)) {
    // node: bridge br0 with ports eth0 (to client) and tap100i0 (to the
    // guest namespace).
    let (node, client) = pair(&format!("g{tag}"));
    let guest = Netns::new(&format!("vm{tag}"));
    node.ip(&["addr", "flush", "dev", "eth0"]);
    node.ip(&["link", "add", "br0", "type", "bridge"]);
    node.ip(&["link", "set", "eth0", "master", "br0"]);
    run(Command::new("ip").args([
        "link",
        "add",
        "tap100i0",
        "netns",
        &node.name,
        "type",
        "veth",
        "peer",
        "name",
        "eth0",
        "netns",
        &guest.name,
    ]));
    node.ip(&["link", "set", "tap100i0", "master", "br0"]);
    node.ip(&["link", "set", "tap100i0", "up"]);
    node.ip(&["link", "set", "br0", "up"]);
    guest.ip(&["link", "set", "eth0", "address", "bc:24:11:00:01:00"]);
    guest.ip(&["addr", "add", "192.0.2.100/24", "dev", "eth0"]);
    guest.ip(&["link", "set", "eth0", "up"]);
    guest.serve(&[80, 5000], &[53]);
    assert_eq!(client.tcp("192.0.2.100", 5000), Reach::Open);

    let features = node.features();
    let input = Input {
        cluster: fw("cluster.fw", "[OPTIONS]\nenable: 1\n"),
        host: fw("host.fw", "[OPTIONS]\nenable: 0\n"),
        guests: vec![Guest {
            vmid: 100,
            file: fw(
                "100.fw",
                "[OPTIONS]\nenable: 1\npolicy_in: DROP\n\n[RULES]\nIN HTTP(ACCEPT)\nIN DNS(ACCEPT) -source 192.0.2.1\nIN REJECT -p tcp -dport 5000\n",
            ),
            ports: vec![GuestPort {
                net: 0,
                iface: "tap100i0".into(),
                mac: Some("bc:24:11:00:01:00".into()),
                firewall: true,
                ips: vec![],
            }],
        }],
        features,
    };
    node.apply(applier, &input).unwrap();
    assert_eq!(client.tcp("192.0.2.100", 80), Reach::Open);
    assert_eq!(client.udp("192.0.2.100", 53), Reach::Open);
    let rejected = client.tcp("192.0.2.100", 5000);
    if features.bridge_reject {
        assert_eq!(rejected, Reach::Refused);
    } else {
        assert_eq!(rejected, Reach::Dropped);
    }
    assert!(
        !client.ping("192.0.2.100"),
        "ping passed the guest's DROP policy"
    );
    // The guest may send out (policy_out ACCEPT); replies come back
    // through conntrack where the kernel has it in the bridge family.
    assert!(delivered(&guest, &client, "192.0.2.1", 9000));
    if features.bridge_conntrack {
        assert!(guest.ping("192.0.2.1"));
    }

    // A host-only apply (netd's start-up) leaves the guests' table alone.
    let host_only = compile(&Input {
        guests: vec![],
        ..input.clone()
    })
    .unwrap()
    .host_only();
    node.enter(|| applier.apply(&host_only)).unwrap();
    assert!(
        !client.ping("192.0.2.100"),
        "guest rules gone after a host-only apply"
    );
    assert_eq!(client.tcp("192.0.2.100", 80), Reach::Open);

    // macfilter: a guest that changes its MAC is cut off.
    guest.ip(&["link", "set", "eth0", "address", "bc:24:11:00:01:99"]);
    guest.ip(&["neigh", "flush", "all"]);
    assert!(
        !delivered(&guest, &client, "192.0.2.1", 9001),
        "spoofed MAC got through"
    );
}

/// Whether a datagram from `from` reaches a socket in `to` on `ip:port`.
fn delivered(from: &Netns, to: &Netns, ip: &str, port: u16) -> bool {
    let rx = to.enter(|| UdpSocket::bind(("0.0.0.0", port)).unwrap());
    rx.set_read_timeout(Some(Duration::from_millis(1500)))
        .unwrap();
    from.enter(|| {
        let u = UdpSocket::bind("0.0.0.0:0").unwrap();
        // The first datagram may wait for ARP; send a few.
        for _ in 0..3 {
            let _ = u.send_to(b"hello", (ip, port));
            std::thread::sleep(Duration::from_millis(100));
        }
    });
    let mut b = [0u8; 8];
    rx.recv_from(&mut b).is_ok()
}

#[test]
fn snapshots_pass_the_kernel_check() {
    let ns = Netns::new("check");
    let features = ns.features();
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/snapshots");
    let mut names = vec!["disabled", "host", "management-deny", "merged"];
    names.push(if features.bridge_conntrack && features.bridge_reject {
        "guests"
    } else {
        "guests-stateless"
    });
    for name in names {
        let script = std::fs::read_to_string(dir.join(format!("{name}.nft"))).unwrap();
        let ok = ns.enter(|| {
            let mut child = Command::new("nft")
                .args(["-c", "-f", "-"])
                .stdin(Stdio::piped())
                .stderr(Stdio::piped())
                .spawn()
                .unwrap();
            child
                .stdin
                .take()
                .unwrap()
                .write_all(script.as_bytes())
                .unwrap();
            child.wait_with_output().unwrap()
        });
        assert!(
            ok.status.success(),
            "{name}.nft: {}",
            String::from_utf8_lossy(&ok.stderr)
        );
    }
}
