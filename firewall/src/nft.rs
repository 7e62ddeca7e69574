//! The compiled form: nftables tables, sets, maps, chains and rules as
//! plain data. It is pure (no kernel), rendered as an `nft -f` script by
//! its `Display` implementation, and is what an applier consumes; a
//! netlink batch applier can walk the same structures.

use std::fmt;

use crate::config::{LogLevel, PortRange};

/// An nftables address family.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum TableFamily {
    /// IPv4 and IPv6 at layer 3 (the host).
    Inet,
    /// Layer 2 on bridges (the guests).
    Bridge,
}

impl fmt::Display for TableFamily {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            TableFamily::Inet => "inet",
            TableFamily::Bridge => "bridge",
        })
    }
}

/// The host's table.
pub const HOST_TABLE: (TableFamily, &str) = (TableFamily::Inet, "oxbow");
/// The guests' table.
pub const GUEST_TABLE: (TableFamily, &str) = (TableFamily::Bridge, "oxbow-guests");

/// A named set of addresses (interval set).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Set {
    /// Its name.
    pub name: String,
    /// IPv6 (else IPv4) addresses.
    pub ipv6: bool,
    /// Networks, addresses or ranges, as nft writes them.
    pub elements: Vec<String>,
}

/// An interface-name-to-verdict map.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VerdictMap {
    /// Its name.
    pub name: String,
    /// Interface and the chain to jump to.
    pub elements: Vec<(String, String)>,
}

/// Where a base chain hooks in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Hook {
    /// Packets for the local host.
    Input,
    /// Packets from the local host.
    Output,
    /// Packets passing through.
    Forward,
}

impl fmt::Display for Hook {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Hook::Input => "input",
            Hook::Output => "output",
            Hook::Forward => "forward",
        })
    }
}

/// An address value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AddrValue {
    /// A named set.
    Set(String),
    /// Literal networks, addresses or ranges.
    List(Vec<String>),
}

/// One match of a rule.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Match {
    /// Input interface name.
    IifName(String),
    /// Output interface name.
    OifName(String),
    /// A source or destination address.
    Addr {
        /// IPv6 (else IPv4).
        v6: bool,
        /// Source (else destination).
        src: bool,
        /// Must not match.
        negate: bool,
        /// What it is compared with.
        value: AddrValue,
    },
    /// Layer 3 protocol of the packet.
    NfProto {
        /// IPv6 (else IPv4).
        v6: bool,
    },
    /// Layer 4 protocol.
    L4Proto(String),
    /// Transport ports.
    Ports {
        /// Source (else destination) ports.
        src: bool,
        /// The ranges.
        ranges: Vec<PortRange>,
    },
    /// ICMP types.
    IcmpType {
        /// ICMPv6 (else ICMP).
        v6: bool,
        /// Type names.
        types: Vec<String>,
    },
    /// Conntrack state.
    CtState(Vec<&'static str>),
    /// Ethernet source address is not this one.
    EtherSaddrNot(String),
    /// Ethernet type (`arp`, `ip`, `ip6`).
    EtherType(&'static str),
    /// Several fields looked up together in a set of boxes
    /// (`ip saddr . th dport { 10.0.0.0/24 . 22, ... }`).
    Concat {
        /// The fields, in order.
        fields: Vec<ConcatField>,
        /// One element per box: one value (address, network, range,
        /// port or port range) per field.
        elements: Vec<Vec<String>>,
    },
}

/// A field of a [`Match::Concat`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ConcatField {
    /// An address.
    Addr {
        /// IPv6 (else IPv4).
        v6: bool,
        /// Source (else destination).
        src: bool,
    },
    /// A transport port.
    Port {
        /// Source (else destination).
        src: bool,
    },
}

impl fmt::Display for ConcatField {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ConcatField::Addr { v6, src } => write!(
                f,
                "{} {}",
                if *v6 { "ip6" } else { "ip" },
                if *src { "saddr" } else { "daddr" }
            ),
            ConcatField::Port { src } => write!(f, "th {}", if *src { "sport" } else { "dport" }),
        }
    }
}

fn list<T: fmt::Display>(f: &mut fmt::Formatter<'_>, items: &[T]) -> fmt::Result {
    if let [one] = items {
        return write!(f, "{one}");
    }
    f.write_str("{ ")?;
    for (i, x) in items.iter().enumerate() {
        if i > 0 {
            f.write_str(", ")?;
        }
        write!(f, "{x}")?;
    }
    f.write_str(" }")
}

struct Ports<'a>(&'a [PortRange]);

impl fmt::Display for Ports<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let items: Vec<String> = self
            .0
            .iter()
            .map(|&(a, b)| {
                if a == b {
                    a.to_string()
                } else {
                    format!("{a}-{b}")
                }
            })
            .collect();
        list(f, &items)
    }
}

impl fmt::Display for Match {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Match::IifName(n) => write!(f, "iifname {}", quote(n)),
            Match::OifName(n) => write!(f, "oifname {}", quote(n)),
            Match::Addr {
                v6,
                src,
                negate,
                value,
            } => {
                write!(
                    f,
                    "{} {} {}",
                    if *v6 { "ip6" } else { "ip" },
                    if *src { "saddr" } else { "daddr" },
                    if *negate { "!= " } else { "" }
                )?;
                match value {
                    AddrValue::Set(s) => write!(f, "@{s}"),
                    // A single element needs no anonymous set.
                    AddrValue::List(l) => list(f, l),
                }
            }
            Match::NfProto { v6 } => {
                write!(f, "meta nfproto {}", if *v6 { "ipv6" } else { "ipv4" })
            }
            Match::L4Proto(p) => write!(f, "meta l4proto {p}"),
            Match::Ports { src, ranges } => {
                write!(f, "th {} ", if *src { "sport" } else { "dport" })?;
                write!(f, "{}", Ports(ranges))
            }
            Match::IcmpType { v6, types } => {
                write!(f, "{} type ", if *v6 { "icmpv6" } else { "icmp" })?;
                list(f, types)
            }
            Match::CtState(states) => write!(f, "ct state {}", states.join(",")),
            Match::EtherSaddrNot(mac) => write!(f, "ether saddr != {mac}"),
            Match::EtherType(t) => write!(f, "ether type {t}"),
            Match::Concat { fields, elements } => {
                let names: Vec<String> = fields.iter().map(|x| x.to_string()).collect();
                let els: Vec<String> = elements.iter().map(|e| e.join(" . ")).collect();
                write!(f, "{} {{ {} }}", names.join(" . "), els.join(", "))
            }
        }
    }
}

/// What a rule does when it matches.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// Accept (final for this hook).
    Accept,
    /// Drop.
    Drop,
    /// Reject with an ICMP error (or TCP reset).
    Reject,
    /// Go back to the calling chain.
    Return,
    /// Jump to a chain.
    Jump(String),
    /// Jump by input interface through a map.
    IifVmap(String),
    /// Jump by output interface through a map.
    OifVmap(String),
}

impl fmt::Display for Verdict {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Verdict::Accept => f.write_str("accept"),
            Verdict::Drop => f.write_str("drop"),
            Verdict::Reject => f.write_str("reject"),
            Verdict::Return => f.write_str("return"),
            Verdict::Jump(c) => write!(f, "jump {c}"),
            Verdict::IifVmap(m) => write!(f, "iifname vmap @{m}"),
            Verdict::OifVmap(m) => write!(f, "oifname vmap @{m}"),
        }
    }
}

/// A rule.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rule {
    /// All must match.
    pub matches: Vec<Match>,
    /// Log first, with this prefix and level.
    pub log: Option<(String, LogLevel)>,
    /// Then this.
    pub verdict: Verdict,
    /// Where the rule came from (`host.fw:12`).
    pub comment: Option<String>,
}

impl Rule {
    /// A rule with only a verdict.
    pub fn verdict(matches: Vec<Match>, verdict: Verdict) -> Rule {
        Rule {
            matches,
            log: None,
            verdict,
            comment: None,
        }
    }
}

fn quote(s: &str) -> String {
    let clean: String = s
        .chars()
        .filter(|c| (c.is_ascii_graphic() || *c == ' ') && *c != '"' && *c != '\\')
        .collect();
    format!("\"{clean}\"")
}

impl fmt::Display for Rule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for m in &self.matches {
            write!(f, "{m} ")?;
        }
        if let Some((prefix, level)) = &self.log {
            write!(
                f,
                "log prefix {} level {} ",
                quote(prefix),
                level.nft_name()
            )?;
        }
        write!(f, "{}", self.verdict)?;
        if let Some(c) = &self.comment {
            write!(f, " comment {}", quote(c))?;
        }
        Ok(())
    }
}

/// A chain.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Chain {
    /// Its name.
    pub name: String,
    /// For a base chain, its hook (filter type, filter priority, policy
    /// accept: the rules end with the real policy).
    pub hook: Option<Hook>,
    /// Its rules, in order.
    pub rules: Vec<Rule>,
}

/// A table netd owns.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Table {
    /// Family.
    pub family: TableFamily,
    /// Name.
    pub name: String,
    /// Address sets.
    pub sets: Vec<Set>,
    /// Verdict maps.
    pub maps: Vec<VerdictMap>,
    /// Chains.
    pub chains: Vec<Chain>,
}

impl Table {
    /// How many rules it holds.
    pub fn rule_count(&self) -> usize {
        self.chains.iter().map(|c| c.rules.len()).sum()
    }
}

/// The whole compiled firewall: the tables netd owns that should exist.
/// Owned tables not listed are removed when it is applied (but see
/// [`Ruleset::host_only`]).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Ruleset {
    /// Tables.
    pub tables: Vec<Table>,
    /// Leave the guests' table as it is in the kernel.
    pub keep_guest_table: bool,
}

impl Ruleset {
    /// This ruleset limited to the host's table: applying it leaves the
    /// guests' table in the kernel alone (netd's start-up apply, which
    /// knows no guests, must not drop running guests' rules).
    pub fn host_only(mut self) -> Ruleset {
        self.tables.retain(|t| t.family == HOST_TABLE.0);
        self.keep_guest_table = true;
        self
    }

    /// The tables netd owns that applying this ruleset replaces.
    pub fn replaced_tables(&self) -> Vec<(TableFamily, &'static str)> {
        if self.keep_guest_table {
            vec![HOST_TABLE]
        } else {
            vec![HOST_TABLE, GUEST_TABLE]
        }
    }

    /// The table of `family`, if present.
    pub fn table(&self, family: TableFamily) -> Option<&Table> {
        self.tables.iter().find(|t| t.family == family)
    }
}

impl fmt::Display for Table {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "table {} {} {{", self.family, self.name)?;
        for s in &self.sets {
            writeln!(f, "\tset {} {{", s.name)?;
            writeln!(
                f,
                "\t\ttype {}",
                if s.ipv6 { "ipv6_addr" } else { "ipv4_addr" }
            )?;
            writeln!(f, "\t\tflags interval")?;
            writeln!(f, "\t\tauto-merge")?;
            if !s.elements.is_empty() {
                writeln!(f, "\t\telements = {{ {} }}", s.elements.join(", "))?;
            }
            writeln!(f, "\t}}")?;
        }
        for m in &self.maps {
            writeln!(f, "\tmap {} {{", m.name)?;
            writeln!(f, "\t\ttype ifname : verdict")?;
            if !m.elements.is_empty() {
                let e: Vec<String> = m
                    .elements
                    .iter()
                    .map(|(i, c)| format!("{} : jump {c}", quote(i)))
                    .collect();
                writeln!(f, "\t\telements = {{ {} }}", e.join(", "))?;
            }
            writeln!(f, "\t}}")?;
        }
        for c in &self.chains {
            writeln!(f, "\tchain {} {{", c.name)?;
            if let Some(h) = c.hook {
                writeln!(
                    f,
                    "\t\ttype filter hook {h} priority filter; policy accept;"
                )?;
            }
            for r in &c.rules {
                writeln!(f, "\t\t{r}")?;
            }
            writeln!(f, "\t}}")?;
        }
        writeln!(f, "}}")
    }
}

impl fmt::Display for Ruleset {
    /// The `nft -f` script: for each table netd owns, create it if
    /// missing and delete it (so that the script also works on a clean
    /// host), then define it anew if it should exist. nft runs the whole
    /// script as one transaction.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (family, name) in self.replaced_tables() {
            writeln!(f, "add table {family} {name}")?;
            writeln!(f, "delete table {family} {name}")?;
        }
        for t in &self.tables {
            write!(f, "{t}")?;
        }
        Ok(())
    }
}
