//! Snapshot tests: firewall files compiled to the nft script, compared
//! with `tests/snapshots/<case>.nft`. Run with `UPDATE_SNAPSHOTS=1` to
//! rewrite the snapshots after an intended change, and review the diff.

use std::path::PathBuf;

use firewall::{compile, Features, FwFile, Guest, GuestPort, Input};

fn fw(name: &str, text: &str) -> FwFile {
    FwFile::parse(name, text).unwrap_or_else(|e| panic!("{e}"))
}

fn snapshot(case: &str, input: &Input) {
    let script = compile(input)
        .unwrap_or_else(|e| panic!("{case}: {e}"))
        .to_string();
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/snapshots")
        .join(format!("{case}.nft"));
    if std::env::var_os("UPDATE_SNAPSHOTS").is_some() {
        std::fs::write(&path, &script).unwrap();
        return;
    }
    let expected = std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("{}: {e} (run with UPDATE_SNAPSHOTS=1)", path.display()));
    if script != expected {
        let diff: Vec<String> = script
            .lines()
            .zip(expected.lines().chain(std::iter::repeat("<missing>")))
            .enumerate()
            .filter(|(_, (a, b))| a != b)
            .take(5)
            .map(|(i, (a, b))| format!("line {}:\n  got:  {a}\n  want: {b}", i + 1))
            .collect();
        panic!(
            "{case}: compiled script differs from {}:\n{}\n(run with UPDATE_SNAPSHOTS=1 to accept)",
            path.display(),
            diff.join("\n")
        );
    }
}

const CLUSTER: &str = "[OPTIONS]
enable: 1
policy_in: DROP
log_level_in: info

[ALIASES]
office 192.0.2.0/24 # the office
backup_v6 2001:db8:b::/48

[IPSET management] # who may manage the nodes
office
!192.0.2.66
2001:db8:1::/64

[IPSET monitoring]
198.51.100.7

[RULES]
IN Ping(ACCEPT)
IN ACCEPT -source +monitoring -p udp -dport 161

[group webserver] # public web
IN HTTP(ACCEPT)
IN HTTPS(ACCEPT)
IN ACCEPT -p tcp -dport 8080:8090 -source dc/office
";

#[test]
fn firewall_disabled_removes_our_tables() {
    let input = Input {
        cluster: fw("cluster.fw", "[OPTIONS]\nenable: 0\n\n[RULES]\nIN DROP\n"),
        ..Input::default()
    };
    snapshot("disabled", &input);
}

#[test]
fn host_rules_macros_aliases_ipsets_groups() {
    let host = fw(
        "host.fw",
        "[OPTIONS]
ndp: 1

[RULES]
IN SSH(ACCEPT) -source +management -log info
IN ACCEPT -i vmbr0 -source 192.0.2.10-192.0.2.20,office,2001:db8::5 -p tcp -dport 3128
IN DNS(ACCEPT) -dest 203.0.113.53
IN ACCEPT -p icmpv6 -icmp-type echo-request -source backup_v6
|IN DROP -p tcp -dport 25
GROUP webserver -i vmbr0
OUT REJECT -p tcp -dport 25 -log warning
OUT ACCEPT -dest +dc/monitoring
",
    );
    let input = Input {
        cluster: fw("cluster.fw", CLUSTER),
        host,
        ..Input::default()
    };
    snapshot("host", &input);
}

#[test]
fn management_ports_follow_an_explicit_deny() {
    let input = Input {
        cluster: fw("cluster.fw", "[OPTIONS]\nenable: 1\npolicy_in: REJECT\n"),
        host: fw(
            "host.fw",
            "[RULES]\nIN ACCEPT -source 10.1.1.1\nIN DROP -p tcp -dport 8006 -source 10.0.0.0/8\nIN DROP -source 10.0.0.0/8\nFORWARD ACCEPT -p tcp -dport 443\n",
        ),
        ..Input::default()
    };
    snapshot("management-deny", &input);
}

#[test]
fn guests_dispatch_per_port() {
    let vm = fw(
        "100.fw",
        "[OPTIONS]
enable: 1
dhcp: 1
ndp: 1
ipfilter: 1
policy_in: DROP
policy_out: REJECT
log_level_in: info

[ALIASES]
db 10.0.0.5

[IPSET ipfilter-net0]
10.0.0.100
2001:db8:100::100

[RULES]
IN SSH(ACCEPT) -source dc/office
IN ACCEPT -i net0 -p tcp -dport 5432 -source db
OUT ACCEPT -p udp -dport 53
OUT DNS(ACCEPT) -dest +dc/monitoring
GROUP webserver
",
    );
    let ct = fw(
        "101.fw",
        "[OPTIONS]\nenable: 1\nmacfilter: 0\nipfilter: 1\n\n[RULES]\nIN ACCEPT -p tcp -dport 80 -i net1\nOUT DROP -p tcp -dport 25\n",
    );
    let off = fw("102.fw", "[OPTIONS]\nenable: 0\n\n[RULES]\nIN ACCEPT\n");
    let input = Input {
        cluster: fw("cluster.fw", CLUSTER),
        host: FwFile::default(),
        guests: vec![
            Guest {
                vmid: 100,
                file: vm,
                ports: vec![
                    GuestPort {
                        net: 0,
                        iface: "tap100i0".into(),
                        mac: Some("BC:24:11:00:01:00".into()),
                        firewall: true,
                        ips: vec![],
                    },
                    GuestPort {
                        net: 1,
                        iface: "tap100i1".into(),
                        mac: Some("BC:24:11:00:01:01".into()),
                        firewall: false,
                        ips: vec![],
                    },
                ],
            },
            Guest {
                vmid: 101,
                file: ct,
                ports: vec![GuestPort {
                    net: 1,
                    iface: "veth101i1".into(),
                    mac: None,
                    firewall: true,
                    ips: vec!["10.0.1.101/24".parse().unwrap()],
                }],
            },
            Guest {
                vmid: 102,
                file: off,
                ports: vec![GuestPort {
                    net: 0,
                    iface: "tap102i0".into(),
                    mac: None,
                    firewall: true,
                    ips: vec![],
                }],
            },
        ],
        features: Features::default(),
    };
    snapshot("guests", &input);
    let stateless = Input {
        features: Features {
            bridge_conntrack: false,
            bridge_reject: false,
        },
        ..input
    };
    snapshot("guests-stateless", &stateless);
}

#[test]
fn long_runs_of_similar_rules_are_merged() {
    let mut rules = String::from("[RULES]\n");
    for i in 0..20 {
        rules += &format!(
            "IN ACCEPT -p tcp -dport {} -source 10.0.{i}.0/24\n",
            1000 + i
        );
    }
    for i in 0..4 {
        rules += &format!("IN DROP -p udp -dport {}\n", 2000 + 10 * i);
    }
    rules += "IN ACCEPT -p tcp -dport 22 -source 10.1.0.0/16 -log info\n";
    let input = Input {
        cluster: fw("cluster.fw", "[OPTIONS]\nenable: 1\n"),
        host: fw("host.fw", &rules),
        ..Input::default()
    };
    snapshot("merged", &input);
}
