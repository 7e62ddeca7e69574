//! Service macros (`SSH(ACCEPT)`) and ICMP type names.

use crate::config::PortRange;

/// One protocol/port combination of a macro.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MacroEntry {
    /// The protocol (canonical name).
    pub proto: &'static str,
    /// Destination ports (empty: any).
    pub dport: &'static [PortRange],
    /// Source ports (empty: any).
    pub sport: &'static [PortRange],
    /// ICMP type (for icmp and ipv6-icmp).
    pub icmp_type: Option<&'static str>,
}

/// A service macro.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Macro {
    /// Its name, as written in rules.
    pub name: &'static str,
    /// What it stands for.
    pub description: &'static str,
    /// Its combinations; the rule applies to each.
    pub entries: &'static [MacroEntry],
}

const fn tcp(dport: &'static [PortRange]) -> MacroEntry {
    MacroEntry {
        proto: "tcp",
        dport,
        sport: &[],
        icmp_type: None,
    }
}

const fn udp(dport: &'static [PortRange]) -> MacroEntry {
    MacroEntry {
        proto: "udp",
        dport,
        sport: &[],
        icmp_type: None,
    }
}

const fn proto(p: &'static str) -> MacroEntry {
    MacroEntry {
        proto: p,
        dport: &[],
        sport: &[],
        icmp_type: None,
    }
}

const fn icmp(t: &'static str) -> MacroEntry {
    MacroEntry {
        proto: "icmp",
        dport: &[],
        sport: &[],
        icmp_type: Some(t),
    }
}

const fn icmp6(t: &'static str) -> MacroEntry {
    MacroEntry {
        proto: "ipv6-icmp",
        dport: &[],
        sport: &[],
        icmp_type: Some(t),
    }
}

/// The macros, by name.
pub const MACROS: &[Macro] = &[
    Macro {
        name: "BGP",
        description: "Border Gateway Protocol",
        entries: &[tcp(&[(179, 179)])],
    },
    Macro {
        name: "Ceph",
        description: "Ceph monitors (v1 and v2) and OSD/MDS/MGR daemons",
        entries: &[tcp(&[(3300, 3300), (6789, 6789), (6800, 7300)])],
    },
    Macro {
        name: "DHCPfwd",
        description: "forwarded DHCP traffic",
        entries: &[MacroEntry {
            proto: "udp",
            dport: &[(67, 68)],
            sport: &[(67, 68)],
            icmp_type: None,
        }],
    },
    Macro {
        name: "DHCPv6",
        description: "DHCPv6 traffic",
        entries: &[MacroEntry {
            proto: "udp",
            dport: &[(546, 547)],
            sport: &[(546, 547)],
            icmp_type: None,
        }],
    },
    Macro {
        name: "DNS",
        description: "Domain Name System",
        entries: &[udp(&[(53, 53)]), tcp(&[(53, 53)])],
    },
    Macro {
        name: "FTP",
        description: "File Transfer Protocol (control)",
        entries: &[tcp(&[(21, 21)])],
    },
    Macro {
        name: "Git",
        description: "Git daemon",
        entries: &[tcp(&[(9418, 9418)])],
    },
    Macro {
        name: "GRE",
        description: "Generic Routing Encapsulation",
        entries: &[proto("gre")],
    },
    Macro {
        name: "HKP",
        description: "OpenPGP key servers",
        entries: &[tcp(&[(11371, 11371)])],
    },
    Macro {
        name: "HTTP",
        description: "web traffic",
        entries: &[tcp(&[(80, 80)])],
    },
    Macro {
        name: "HTTPS",
        description: "secure web traffic",
        entries: &[tcp(&[(443, 443)])],
    },
    Macro {
        name: "ICMP",
        description: "all ICMP and ICMPv6",
        entries: &[proto("icmp"), proto("ipv6-icmp")],
    },
    Macro {
        name: "IMAP",
        description: "Internet Message Access Protocol",
        entries: &[tcp(&[(143, 143)])],
    },
    Macro {
        name: "IMAPS",
        description: "IMAP over TLS",
        entries: &[tcp(&[(993, 993)])],
    },
    Macro {
        name: "IPsec",
        description: "IPsec (IKE, ESP, AH)",
        entries: &[udp(&[(500, 500), (4500, 4500)]), proto("esp"), proto("ah")],
    },
    Macro {
        name: "IRC",
        description: "Internet Relay Chat",
        entries: &[tcp(&[(6667, 6667)])],
    },
    Macro {
        name: "Jabber",
        description: "XMPP client traffic",
        entries: &[tcp(&[(5222, 5222)])],
    },
    Macro {
        name: "Kerberos",
        description: "Kerberos",
        entries: &[tcp(&[(88, 88)]), udp(&[(88, 88)])],
    },
    Macro {
        name: "LDAP",
        description: "Lightweight Directory Access Protocol",
        entries: &[tcp(&[(389, 389)])],
    },
    Macro {
        name: "LDAPS",
        description: "LDAP over TLS",
        entries: &[tcp(&[(636, 636)])],
    },
    Macro {
        name: "MDNS",
        description: "multicast DNS",
        entries: &[udp(&[(5353, 5353)])],
    },
    Macro {
        name: "MySQL",
        description: "MySQL and MariaDB",
        entries: &[tcp(&[(3306, 3306)])],
    },
    Macro {
        name: "NFS",
        description: "NFS v4 and the portmapper",
        entries: &[
            tcp(&[(111, 111), (2049, 2049)]),
            udp(&[(111, 111), (2049, 2049)]),
        ],
    },
    Macro {
        name: "NTP",
        description: "Network Time Protocol",
        entries: &[udp(&[(123, 123)])],
    },
    Macro {
        name: "OpenVPN",
        description: "OpenVPN",
        entries: &[udp(&[(1194, 1194)])],
    },
    Macro {
        name: "OSPF",
        description: "Open Shortest Path First",
        entries: &[proto("89")],
    },
    Macro {
        name: "Ping",
        description: "ICMP and ICMPv6 echo requests",
        entries: &[icmp("echo-request"), icmp6("echo-request")],
    },
    Macro {
        name: "POP3",
        description: "Post Office Protocol",
        entries: &[tcp(&[(110, 110)])],
    },
    Macro {
        name: "POP3S",
        description: "POP3 over TLS",
        entries: &[tcp(&[(995, 995)])],
    },
    Macro {
        name: "PostgreSQL",
        description: "PostgreSQL",
        entries: &[tcp(&[(5432, 5432)])],
    },
    Macro {
        name: "RDP",
        description: "Remote Desktop Protocol",
        entries: &[tcp(&[(3389, 3389)])],
    },
    Macro {
        name: "Rsync",
        description: "rsync daemon",
        entries: &[tcp(&[(873, 873)])],
    },
    Macro {
        name: "SMB",
        description: "Microsoft SMB/CIFS and NetBIOS",
        entries: &[
            udp(&[(135, 135), (445, 445)]),
            udp(&[(137, 139)]),
            MacroEntry {
                proto: "udp",
                dport: &[(1024, 65535)],
                sport: &[(137, 137)],
                icmp_type: None,
            },
            tcp(&[(135, 135), (139, 139), (445, 445)]),
        ],
    },
    Macro {
        name: "SMTP",
        description: "mail transfer",
        entries: &[tcp(&[(25, 25)])],
    },
    Macro {
        name: "SMTPS",
        description: "mail transfer over TLS",
        entries: &[tcp(&[(465, 465)])],
    },
    Macro {
        name: "SNMP",
        description: "Simple Network Management Protocol",
        entries: &[udp(&[(161, 162)]), tcp(&[(161, 161)])],
    },
    Macro {
        name: "SPICEproxy",
        description: "Proxmox's SPICE proxy",
        entries: &[tcp(&[(3128, 3128)])],
    },
    Macro {
        name: "Squid",
        description: "Squid web proxy",
        entries: &[tcp(&[(3128, 3128)])],
    },
    Macro {
        name: "SSH",
        description: "Secure Shell",
        entries: &[tcp(&[(22, 22)])],
    },
    Macro {
        name: "Submission",
        description: "mail submission",
        entries: &[tcp(&[(587, 587)])],
    },
    Macro {
        name: "Syslog",
        description: "syslog",
        entries: &[udp(&[(514, 514)]), tcp(&[(514, 514)])],
    },
    Macro {
        name: "Telnet",
        description: "Telnet",
        entries: &[tcp(&[(23, 23)])],
    },
    Macro {
        name: "Traceroute",
        description: "traceroute (UDP probes and echo requests)",
        entries: &[
            udp(&[(33434, 33524)]),
            icmp("echo-request"),
            icmp6("echo-request"),
        ],
    },
    Macro {
        name: "VNC",
        description: "VNC displays 0 to 99",
        entries: &[tcp(&[(5900, 5999)])],
    },
    Macro {
        name: "Web",
        description: "HTTP and HTTPS",
        entries: &[tcp(&[(80, 80), (443, 443)])],
    },
];

/// Finds a macro by name (case-insensitively).
pub fn lookup(name: &str) -> Option<&'static Macro> {
    MACROS.iter().find(|m| m.name.eq_ignore_ascii_case(name))
}

const ICMP_TYPES: [&str; 15] = [
    "echo-reply",
    "destination-unreachable",
    "source-quench",
    "redirect",
    "echo-request",
    "router-advertisement",
    "router-solicitation",
    "time-exceeded",
    "parameter-problem",
    "timestamp-request",
    "timestamp-reply",
    "info-request",
    "info-reply",
    "address-mask-request",
    "address-mask-reply",
];

const ICMPV6_TYPES: [&str; 18] = [
    "destination-unreachable",
    "packet-too-big",
    "time-exceeded",
    "parameter-problem",
    "echo-request",
    "echo-reply",
    "mld-listener-query",
    "mld-listener-report",
    "mld-listener-done",
    "nd-router-solicit",
    "nd-router-advert",
    "nd-neighbor-solicit",
    "nd-neighbor-advert",
    "nd-redirect",
    "router-renumbering",
    "ind-neighbor-solicit",
    "ind-neighbor-advert",
    "mld2-listener-report",
];

/// The nftables name of ICMP type `t` (a name, an iptables-style alias,
/// or a number), for ICMPv6 if `v6`.
pub fn nft_icmp_type(t: &str, v6: bool) -> Option<String> {
    if let Ok(n) = t.parse::<u8>() {
        return Some(n.to_string());
    }
    let t = t.to_ascii_lowercase();
    let alias = match (v6, t.as_str()) {
        (true, "router-solicitation") => "nd-router-solicit",
        (true, "router-advertisement") => "nd-router-advert",
        (true, "neighbour-solicitation" | "neighbor-solicitation") => "nd-neighbor-solicit",
        (true, "neighbour-advertisement" | "neighbor-advertisement") => "nd-neighbor-advert",
        (_, "ping") => "echo-request",
        (_, "pong") => "echo-reply",
        (_, s) => s,
    };
    let list: &[&str] = if v6 { &ICMPV6_TYPES } else { &ICMP_TYPES };
    list.contains(&alias).then(|| alias.to_string())
}

/// The number of ICMP type `t` in nft's spelling (see [`nft_icmp_type`]).
pub fn icmp_type_number(t: &str, v6: bool) -> Option<u8> {
    if let Ok(n) = t.parse::<u8>() {
        return Some(n);
    }
    let v4: [u8; 15] = [0, 3, 4, 5, 8, 9, 10, 11, 12, 13, 14, 15, 16, 17, 18];
    let v6n: [u8; 18] = [
        1, 2, 3, 4, 128, 129, 130, 131, 132, 133, 134, 135, 136, 137, 138, 141, 142, 143,
    ];
    if v6 {
        ICMPV6_TYPES.iter().position(|n| *n == t).map(|i| v6n[i])
    } else {
        ICMP_TYPES.iter().position(|n| *n == t).map(|i| v4[i])
    }
}

/// Whether `t` is a known ICMP (or ICMPv6, if `v6`) type.
pub fn valid_icmp_type(t: &str, v6: bool) -> bool {
    nft_icmp_type(t, v6).is_some()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn macros_are_sound() {
        for want in ["SSH", "HTTP", "HTTPS", "DNS", "Ping", "NTP", "SMB", "Ceph"] {
            assert!(lookup(want).is_some(), "{want} missing");
        }
        assert_eq!(lookup("ssh").unwrap().name, "SSH");
        let mut names: Vec<&str> = MACROS.iter().map(|m| m.name).collect();
        names.sort_unstable_by_key(|n| n.to_ascii_lowercase());
        names.dedup_by_key(|n| n.to_ascii_lowercase());
        assert_eq!(names.len(), MACROS.len(), "duplicate macro names");
        for m in MACROS {
            assert!(!m.entries.is_empty(), "{}", m.name);
            for e in m.entries {
                for &(a, b) in e.dport.iter().chain(e.sport) {
                    assert!(a <= b, "{}", m.name);
                }
                if let Some(t) = e.icmp_type {
                    assert!(valid_icmp_type(t, e.proto == "ipv6-icmp"), "{}", m.name);
                }
            }
        }
    }

    #[test]
    fn icmp_numbers() {
        assert_eq!(icmp_type_number("echo-request", false), Some(8));
        assert_eq!(icmp_type_number("echo-request", true), Some(128));
        assert_eq!(icmp_type_number("nd-neighbor-solicit", true), Some(135));
        assert_eq!(icmp_type_number("address-mask-reply", false), Some(18));
        assert_eq!(icmp_type_number("mld2-listener-report", true), Some(143));
        for t in ICMP_TYPES {
            assert!(icmp_type_number(t, false).is_some());
        }
        for t in ICMPV6_TYPES {
            assert!(icmp_type_number(t, true).is_some());
        }
    }

    #[test]
    fn icmp_names() {
        assert_eq!(
            nft_icmp_type("echo-request", false).as_deref(),
            Some("echo-request")
        );
        assert_eq!(
            nft_icmp_type("neighbour-solicitation", true).as_deref(),
            Some("nd-neighbor-solicit")
        );
        assert_eq!(nft_icmp_type("8", false).as_deref(), Some("8"));
        assert_eq!(nft_icmp_type("packet-too-big", false), None);
    }
}
