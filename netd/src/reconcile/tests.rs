//! Table-driven planner tests: an interfaces file, an observed state, the
//! expected operations; then the state after those operations must plan
//! to nothing.

use super::*;
use crate::interfaces::InterfacesFile;

fn desired(text: &str, nics: &[&str]) -> Desired {
    let names: Vec<String> = nics.iter().map(|s| s.to_string()).collect();
    let (_, config) = InterfacesFile::parse_valid(text, &names).unwrap();
    Desired::from_config(&config)
}

fn nic(name: &str) -> ObservedLink {
    ObservedLink {
        name: name.into(),
        kind: ObservedKind::Other(None),
        alias: None,
        controller: None,
        mtu: 1500,
        up: false,
        vids: None,
    }
}

fn with(mut l: ObservedLink, f: impl FnOnce(&mut ObservedLink)) -> ObservedLink {
    f(&mut l);
    l
}

fn bridge(name: &str, owned: bool) -> ObservedLink {
    ObservedLink {
        kind: ObservedKind::Bridge {
            stp: false,
            forward_delay: Some(0),
            vlan_filtering: false,
        },
        alias: owned.then(|| OWNER_ALIAS.to_string()),
        up: true,
        ..nic(name)
    }
}

fn addr(link: &str, net: &str, protocol: u8) -> ObservedAddr {
    ObservedAddr {
        link: link.into(),
        net: net.parse().unwrap(),
        protocol,
    }
}

fn route(gw: &str, dev: &str, protocol: u8) -> ObservedRoute {
    let gateway: IpAddr = gw.parse().unwrap();
    ObservedRoute {
        dst: if gateway.is_ipv4() {
            "0.0.0.0/0".parse().unwrap()
        } else {
            "::/0".parse().unwrap()
        },
        gateway: Some(gateway),
        dev: Some(dev.into()),
        protocol,
        table: ROUTE_TABLE_MAIN,
        priority: 0,
    }
}

use std::net::IpAddr;

const SIMPLE: &str = "auto lo
iface lo inet loopback

iface eth0 inet manual

auto vmbr0
iface vmbr0 inet static
\taddress 192.0.2.10/24
\tgateway 192.0.2.1
\tbridge-ports eth0
\tbridge-stp off
\tbridge-fd 0
";

const FULL: &str = "auto bond0
iface bond0 inet manual
\tbond-slaves eth0 eth1
\tbond-mode active-backup
\tbond-miimon 100

auto vmbr0
iface vmbr0 inet static
\taddress 192.0.2.10/24
\tgateway 192.0.2.1
\tbridge-ports bond0
\tbridge-stp off
\tbridge-fd 0
\tmtu 9000

auto vmbr1
iface vmbr1 inet manual
\tbridge-ports eth2.20
\tbridge-stp off
\tbridge-fd 0

auto eth2.20
iface eth2.20 inet manual

auto vmbr0.50
iface vmbr0.50 inet6 static
\taddress 2001:db8:50::2/64
\tgateway 2001:db8:50::1
";

fn ops_text(ops: &[Op]) -> Vec<String> {
    ops.iter().map(Op::to_string).collect()
}

struct Case {
    name: &'static str,
    file: &'static str,
    observed: Observed,
    expect: &'static [&'static str],
}

fn cases() -> Vec<Case> {
    let lo = with(nic("lo"), |l| l.up = true);
    vec![
        Case {
            name: "fresh node: bridge over a NIC with address and gateway",
            file: SIMPLE,
            observed: Observed {
                links: vec![lo.clone(), nic("eth0")],
                ..Default::default()
            },
            expect: &[
                "create bridge vmbr0",
                "put eth0 into vmbr0",
                "eth0: up",
                "vmbr0: up",
                "vmbr0: add address 192.0.2.10/24",
                "add route 0.0.0.0/0 via 192.0.2.1 dev vmbr0",
            ],
        },
        Case {
            name: "already applied: nothing to do",
            file: SIMPLE,
            observed: Observed {
                links: vec![
                    lo.clone(),
                    with(nic("eth0"), |l| {
                        l.controller = Some("vmbr0".into());
                        l.up = true
                    }),
                    bridge("vmbr0", true),
                ],
                addresses: vec![addr("vmbr0", "192.0.2.10/24", IFAPROT_OXBOW)],
                routes: vec![route("192.0.2.1", "vmbr0", RTPROT_OXBOW)],
            },
            expect: &[],
        },
        Case {
            name: "hand-made bridge and foreign address and route are adopted as they are",
            file: SIMPLE,
            observed: Observed {
                links: vec![
                    lo.clone(),
                    with(nic("eth0"), |l| {
                        l.controller = Some("vmbr0".into());
                        l.up = true
                    }),
                    bridge("vmbr0", false),
                ],
                addresses: vec![addr("vmbr0", "192.0.2.10/24", 0)],
                routes: vec![route("192.0.2.1", "vmbr0", 4)],
            },
            expect: &["vmbr0: mark as oxbow:netd"],
        },
        Case {
            name: "changed address and gateway: old owned ones go first",
            file: SIMPLE,
            observed: Observed {
                links: vec![
                    lo.clone(),
                    with(nic("eth0"), |l| {
                        l.controller = Some("vmbr0".into());
                        l.up = true
                    }),
                    bridge("vmbr0", true),
                ],
                addresses: vec![
                    addr("vmbr0", "192.0.2.99/24", IFAPROT_OXBOW),
                    addr("vmbr0", "198.51.100.7/24", 0),
                ],
                routes: vec![route("192.0.2.254", "vmbr0", RTPROT_OXBOW)],
            },
            expect: &[
                "delete route 0.0.0.0/0 via 192.0.2.254 dev vmbr0",
                "vmbr0: delete address 192.0.2.99/24",
                "vmbr0: add address 192.0.2.10/24",
                "add route 0.0.0.0/0 via 192.0.2.1 dev vmbr0",
            ],
        },
        Case {
            name: "owned leftovers are removed in reverse order; guest taps and foreign links stay",
            file: SIMPLE,
            observed: Observed {
                links: vec![
                    lo.clone(),
                    with(nic("eth0"), |l| {
                        l.controller = Some("vmbr0".into());
                        l.up = true
                    }),
                    bridge("vmbr0", true),
                    with(nic("eth1"), |l| l.controller = Some("vmbr0".into())),
                    with(nic("tap100i0"), |l| {
                        l.controller = Some("vmbr0".into());
                        l.kind = ObservedKind::Other(Some("tun".into()))
                    }),
                    bridge("vmbr9", true),
                    with(nic("eth3"), |l| l.controller = Some("vmbr9".into())),
                    with(nic("vmbr0.7"), |l| {
                        l.alias = Some(OWNER_ALIAS.into());
                        l.kind = ObservedKind::Vlan {
                            raw_device: "vmbr0".into(),
                            id: 7,
                        }
                    }),
                    bridge("docker0", false),
                ],
                addresses: vec![
                    addr("vmbr0", "192.0.2.10/24", IFAPROT_OXBOW),
                    addr("vmbr0.7", "10.7.0.1/24", IFAPROT_OXBOW),
                    addr("docker0", "172.17.0.1/16", 0),
                ],
                routes: vec![
                    route("192.0.2.1", "vmbr0", RTPROT_OXBOW),
                    route("172.17.0.254", "docker0", 4),
                ],
            },
            expect: &[
                "delete vmbr0.7",
                "take eth1 out of vmbr0",
                "delete vmbr9",
            ],
        },
        Case {
            name: "bond, VLAN as a bridge port, VLAN on a bridge, MTU",
            file: FULL,
            observed: Observed {
                links: vec![nic("eth0"), nic("eth1"), nic("eth2")],
                ..Default::default()
            },
            expect: &[
                "create bond bond0 (active-backup)",
                "create bridge vmbr0",
                "create bridge vmbr1",
                "put eth0 into bond0",
                "put eth1 into bond0",
                "put bond0 into vmbr0",
                "create VLAN eth2.20 (eth2 id 20)",
                "create VLAN vmbr0.50 (vmbr0 id 50)",
                "put eth2.20 into vmbr1",
                "vmbr0: mtu 9000",
                "eth0: up",
                "eth1: up",
                "eth2: up",
                "bond0: up",
                "eth2.20: up",
                "vmbr0.50: up",
                "vmbr0: up",
                "vmbr1: up",
                "vmbr0: add address 192.0.2.10/24",
                "vmbr0.50: add address 2001:db8:50::2/64",
                "add route 0.0.0.0/0 via 192.0.2.1 dev vmbr0",
                "add route ::/0 via 2001:db8:50::1 dev vmbr0.50",
            ],
        },
        Case {
            name: "owned bond with another mode is rebuilt; bridge settings change in place",
            file: FULL,
            observed: Observed {
                links: vec![
                    with(nic("eth0"), |l| {
                        l.controller = Some("bond0".into());
                        l.up = true
                    }),
                    with(nic("eth1"), |l| {
                        l.controller = Some("bond0".into());
                        l.up = true
                    }),
                    with(nic("eth2"), |l| l.up = true),
                    with(nic("bond0"), |l| {
                        l.alias = Some(OWNER_ALIAS.into());
                        l.controller = Some("vmbr0".into());
                        l.up = true;
                        l.kind = ObservedKind::Bond {
                            mode: BondMode::BalanceRr,
                            miimon: Some(100),
                            xmit_hash_policy: None,
                        }
                    }),
                    with(bridge("vmbr0", true), |l| {
                        l.mtu = 9000;
                        l.kind = ObservedKind::Bridge {
                            stp: true,
                            forward_delay: Some(15),
                            vlan_filtering: false,
                        }
                    }),
                    with(bridge("vmbr1", true), |_| {}),
                    with(nic("eth2.20"), |l| {
                        l.alias = Some(OWNER_ALIAS.into());
                        l.controller = Some("vmbr1".into());
                        l.up = true;
                        l.kind = ObservedKind::Vlan {
                            raw_device: "eth2".into(),
                            id: 20,
                        }
                    }),
                    with(nic("vmbr0.50"), |l| {
                        l.alias = Some(OWNER_ALIAS.into());
                        l.up = true;
                        l.kind = ObservedKind::Vlan {
                            raw_device: "vmbr0".into(),
                            id: 50,
                        }
                    }),
                ],
                addresses: vec![
                    addr("vmbr0", "192.0.2.10/24", IFAPROT_OXBOW),
                    addr("vmbr0.50", "2001:db8:50::2/64", IFAPROT_OXBOW),
                ],
                routes: vec![
                    route("192.0.2.1", "vmbr0", RTPROT_OXBOW),
                    route("2001:db8:50::1", "vmbr0.50", RTPROT_OXBOW),
                ],
            },
            expect: &[
                "delete bond0",
                "create bond bond0 (active-backup)",
                "vmbr0: stp false, forward delay Some(0), vlan filtering false",
                "put eth0 into bond0",
                "put eth1 into bond0",
                "put bond0 into vmbr0",
                "bond0: up",
            ],
        },
        Case {
            name: "VLAN with another ID is rebuilt, and a VLAN on it follows",
            file: "auto eth0.5\niface eth0.5 inet manual\n\nauto v9\niface v9 inet manual\n\tvlan-raw-device eth0.5\n\tvlan-id 9\n",
            observed: Observed {
                links: vec![
                    with(nic("eth0"), |l| l.up = true),
                    with(nic("eth0.5"), |l| {
                        l.alias = Some(OWNER_ALIAS.into());
                        l.up = true;
                        l.kind = ObservedKind::Vlan { raw_device: "eth0".into(), id: 6 }
                    }),
                    with(nic("v9"), |l| {
                        l.alias = Some(OWNER_ALIAS.into());
                        l.up = true;
                        l.kind = ObservedKind::Vlan { raw_device: "eth0.5".into(), id: 9 }
                    }),
                ],
                ..Default::default()
            },
            expect: &[
                "delete eth0.5",
                "create VLAN eth0.5 (eth0 id 5)",
                "create VLAN v9 (eth0.5 id 9)",
                "eth0.5: up",
                "v9: up",
            ],
        },
        Case {
            name: "VLAN-aware bridge: ports get the VLAN list",
            file: "auto vmbr0\niface vmbr0 inet manual\n\tbridge-ports eth0\n\tbridge-vlan-aware yes\n\tbridge-vids 2-10 20\n",
            observed: Observed {
                links: vec![
                    with(nic("eth0"), |l| {
                        l.up = true;
                        l.controller = Some("vmbr0".into());
                        l.vids = Some(vec![(1, 1), (2, 5), (30, 40)]);
                    }),
                    with(bridge("vmbr0", true), |l| {
                        l.kind = ObservedKind::Bridge {
                            stp: false,
                            forward_delay: Some(15),
                            vlan_filtering: true,
                        }
                    }),
                ],
                ..Default::default()
            },
            expect: &["eth0: vlans +[(6, 10), (20, 20)] -[(30, 40)]"],
        },
    ]
}

#[test]
fn plans_match_the_table_and_are_idempotent() {
    for case in cases() {
        let nics: Vec<&str> = case
            .observed
            .links
            .iter()
            .map(|l| l.name.as_str())
            .collect();
        let d = desired(case.file, &nics);
        let ops = plan(&d, &case.observed).unwrap_or_else(|e| panic!("{}: {e}", case.name));
        assert_eq!(ops_text(&ops), case.expect, "{}", case.name);
        let after = case.observed.after(&ops, &d);
        let again = plan(&d, &after).unwrap();
        assert_eq!(
            ops_text(&again),
            Vec::<String>::new(),
            "{}: second run",
            case.name
        );
    }
}

#[test]
fn foreign_link_of_the_wrong_kind_is_a_conflict() {
    let d = desired(SIMPLE, &["eth0"]);
    let observed = Observed {
        links: vec![
            nic("lo"),
            nic("eth0"),
            with(nic("vmbr0"), |l| {
                l.kind = ObservedKind::Other(Some("veth".into()))
            }),
        ],
        ..Default::default()
    };
    assert_eq!(
        plan(&d, &observed).unwrap_err().to_string(),
        "vmbr0 exists as a veth that netd does not own; the file wants a bridge"
    );
    // An owned one is replaced.
    let observed = Observed {
        links: vec![
            nic("lo"),
            nic("eth0"),
            with(nic("vmbr0"), |l| {
                l.kind = ObservedKind::Other(Some("dummy".into()));
                l.alias = Some(OWNER_ALIAS.into())
            }),
        ],
        ..Default::default()
    };
    let ops = plan(&d, &observed).unwrap();
    assert_eq!(
        ops[0],
        Op::DeleteLink {
            name: "vmbr0".into()
        }
    );
    assert_eq!(ops[1].to_string(), "create bridge vmbr0");
}

#[test]
fn missing_nic_is_an_error() {
    let d = desired(SIMPLE, &["eth0"]);
    let observed = Observed {
        links: vec![nic("lo")],
        ..Default::default()
    };
    let err = plan(&d, &observed).unwrap_err();
    assert_eq!(err, PlanError::Missing("eth0".into()));
}

#[test]
fn dhcp_interfaces_keep_their_addresses() {
    let d = desired(
        "auto vmbr0\niface vmbr0 inet dhcp\n\tbridge-ports eth0\n",
        &["eth0"],
    );
    assert_eq!(d.dhcp, ["vmbr0"]);
    let observed = Observed {
        links: vec![
            with(nic("eth0"), |l| {
                l.up = true;
                l.controller = Some("vmbr0".into())
            }),
            bridge("vmbr0", true),
        ],
        addresses: vec![addr("vmbr0", "10.0.2.15/24", 0)],
        routes: vec![route("10.0.2.2", "vmbr0", 16)],
    };
    assert_eq!(plan(&d, &observed).unwrap(), vec![]);
}

#[test]
fn foreign_bond_of_another_mode_is_rebuilt_only_when_idle() {
    // The bonding module makes an empty, down `bond0` in balance-rr when it
    // loads: a file asking for active-backup gets it rebuilt.
    let file =
        "auto bond0\niface bond0 inet manual\n\tbond-slaves eth0 eth1\n\tbond-mode active-backup\n";
    let d = desired(file, &["eth0", "eth1"]);
    let stray = || {
        with(nic("bond0"), |l| {
            l.kind = ObservedKind::Bond {
                mode: BondMode::BalanceRr,
                miimon: None,
                xmit_hash_policy: None,
            }
        })
    };
    let observed = Observed {
        links: vec![nic("eth0"), nic("eth1"), stray()],
        ..Default::default()
    };
    let ops = ops_text(&plan(&d, &observed).unwrap());
    assert_eq!(ops[0], "delete bond0");
    assert_eq!(ops[1], "create bond bond0 (active-backup)");
    let again = plan(&d, &observed.after(&plan(&d, &observed).unwrap(), &d)).unwrap();
    assert!(again.is_empty(), "{:?}", ops_text(&again));
    // One that is up (in use by someone) is a conflict, never kept as is.
    let observed = Observed {
        links: vec![nic("eth0"), nic("eth1"), with(stray(), |l| l.up = true)],
        ..Default::default()
    };
    assert_eq!(
        plan(&d, &observed).unwrap_err().to_string(),
        "bond0 exists as a bond in mode balance-rr (up or with slaves) that netd does not own; \
         the file wants a bond in mode active-backup"
    );
}
