//! Compiling parsed firewall files into the nftables form of [`crate::nft`].
//!
//! The layout:
//!
//! - `table inet oxbow` for the host: base chains `input`, `output` and
//!   (when there are FORWARD rules) `forward`. Each starts with loopback,
//!   conntrack (established/related accepted, invalid dropped) and the
//!   traffic the node itself needs (DHCP replies, IPv6 neighbour
//!   discovery unless `ndp: 0`), then the rules of `host.fw` and
//!   `cluster.fw`, then the policy as a final rule. SSH (22) and the API
//!   (8006) are accepted (from the `management` ipset of `cluster.fw` if
//!   there is one) right after the last rule that explicitly drops or
//!   rejects one of those ports, or first if none does: they stay
//!   reachable unless a rule denies them by port.
//! - `table bridge oxbow-guests` for the guests: base chains on the
//!   bridge `forward`, `input` and `output` hooks dispatch by interface
//!   name through the verdict maps `guest-out` (frames from a guest port)
//!   and `guest-in` (frames to one) to per-port chains
//!   `g<vmid>-net<n>-out` and `-in`. An accepted outgoing frame returns
//!   to the dispatcher, so that it also passes the receiving guest's
//!   `in` chain; the `in` chain's verdict is final.
//!
//! Aliases and ipsets are looked up in the file's own scope first, then
//! in `cluster.fw` (`dc/name` and `guest/name` choose explicitly). An
//! ipset becomes one nftables set per address family, plus one for its
//! `!` entries; a rule naming addresses of both families becomes one
//! rule per family.

use std::collections::BTreeMap;
use std::fmt;

use ipnet::IpNet;

use crate::config::{
    parse_cidr, Action, Direction, FwFile, IpSet, LogLevel, PortRange, Rule, Verb,
};
use crate::macros;
use crate::nft::{
    AddrValue, Chain, Hook, Match, Rule as NftRule, Ruleset, Set, Table, Verdict, VerdictMap,
    GUEST_TABLE, HOST_TABLE,
};

/// The ports that stay reachable on the host unless explicitly denied.
pub const MANAGEMENT_PORTS: [u16; 2] = [22, 8006];

/// What the kernel's bridge family can do. Debian's kernel (the
/// appliance) has both; a kernel without them gets stateless guest
/// chains and `drop` instead of `reject`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Features {
    /// `ct state` in the bridge family (nf_conntrack_bridge).
    pub bridge_conntrack: bool,
    /// `reject` in the bridge family (nft_reject_bridge).
    pub bridge_reject: bool,
}

impl Default for Features {
    fn default() -> Self {
        Features {
            bridge_conntrack: true,
            bridge_reject: true,
        }
    }
}

/// A guest's network port.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GuestPort {
    /// N of `netN`.
    pub net: u32,
    /// The host-side interface (`tap100i0`, `veth101i0`).
    pub iface: String,
    /// The guest's MAC, for `macfilter`.
    pub mac: Option<String>,
    /// The port's `firewall=1`.
    pub firewall: bool,
    /// The guest's addresses on it, for `ipfilter` without an
    /// `ipfilter-netN` ipset.
    pub ips: Vec<IpNet>,
}

/// A guest with its firewall file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Guest {
    /// VM or container ID.
    pub vmid: u32,
    /// `<vmid>.fw` (empty if there is none).
    pub file: FwFile,
    /// Its ports.
    pub ports: Vec<GuestPort>,
}

/// Everything the compiler reads.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Input {
    /// `cluster.fw`.
    pub cluster: FwFile,
    /// `host.fw`.
    pub host: FwFile,
    /// The guests on this node.
    pub guests: Vec<Guest>,
    /// Kernel capabilities.
    pub features: Features,
}

/// A reference that does not resolve, or an address that does not parse.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{file}, line {line}: {kind}")]
pub struct CompileError {
    /// The file.
    pub file: String,
    /// The line.
    pub line: usize,
    /// What is wrong.
    pub kind: CompileErrorKind,
}

/// What is wrong.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CompileErrorKind {
    /// No such alias.
    #[error("unknown alias `{0}`")]
    UnknownAlias(String),
    /// No such ipset.
    #[error("unknown ipset `{0}`")]
    UnknownIpset(String),
    /// No such security group.
    #[error("unknown security group `{0}`")]
    UnknownGroup(String),
    /// An address list item that is not an address, range or alias.
    #[error("`{0}` is not an address, range or alias")]
    BadAddress(String),
    /// An ipset inside a list.
    #[error("an ipset (`{0}`) must stand alone, not in a list")]
    IpsetInList(String),
    /// A guest rule's `-i` that is not `netN`.
    #[error("`{0}` is not a guest interface (net0, net1, ...)")]
    BadGuestIface(String),
    /// A security group outside `cluster.fw`.
    #[error("security groups belong in cluster.fw")]
    GroupOutsideCluster,
}

/// All problems found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CompileErrors(pub Vec<CompileError>);

impl fmt::Display for CompileErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, e) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str("; ")?;
            }
            write!(f, "{e}")?;
        }
        Ok(())
    }
}

impl std::error::Error for CompileErrors {}

/// Address matches for one side (source or destination) of a rule, per
/// family; `None` when the side has no address of that family.
#[derive(Debug, Clone, Default)]
struct Side {
    v4: Option<Vec<(bool, AddrValue)>>,
    v6: Option<Vec<(bool, AddrValue)>>,
}

impl Side {
    fn family(&self, v6: bool) -> Option<&Vec<(bool, AddrValue)>> {
        if v6 {
            self.v6.as_ref()
        } else {
            self.v4.as_ref()
        }
    }
}

/// One protocol/port combination of a rule.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Combo {
    proto: Option<String>,
    dport: Option<Vec<PortRange>>,
    sport: Option<Vec<PortRange>>,
    icmp_type: Option<String>,
}

/// A rule with its references resolved and its macro or group expanded.
#[derive(Debug, Clone)]
struct Expanded {
    direction: Direction,
    action: Action,
    iface: Option<String>,
    src: Option<Side>,
    dst: Option<Side>,
    combos: Vec<Combo>,
    log: Option<LogLevel>,
    origin: String,
    file: String,
    line: usize,
}

impl Expanded {
    /// Whether it drops or rejects a management port by naming it.
    fn denies_management(&self) -> bool {
        self.direction == Direction::In
            && self.action != Action::Accept
            && self.combos.iter().any(|c| {
                c.proto.as_deref() == Some("tcp")
                    && c.dport.as_ref().is_some_and(|d| {
                        d.iter()
                            .any(|&(a, b)| MANAGEMENT_PORTS.iter().any(|p| (a..=b).contains(p)))
                    })
            })
    }
}

/// Name resolution and the sets one table needs.
struct Scope<'a> {
    dc: &'a FwFile,
    local: Option<&'a FwFile>,
    /// Set-name prefix of the local scope (`host`, `g100`).
    prefix: String,
    sets: BTreeMap<String, Set>,
    errors: Vec<CompileError>,
}

fn set_name(prefix: &str, name: &str, suffix: &str) -> String {
    format!("{prefix}-{}-{suffix}", name.to_ascii_lowercase())
}

fn split_ref(s: &str) -> (Option<&'static str>, &str) {
    if let Some(n) = s.strip_prefix("dc/") {
        (Some("dc"), n)
    } else if let Some(n) = s.strip_prefix("guest/") {
        (Some("guest"), n)
    } else {
        (None, s)
    }
}

impl<'a> Scope<'a> {
    fn new(dc: &'a FwFile, local: Option<&'a FwFile>, prefix: &str) -> Scope<'a> {
        Scope {
            dc,
            local,
            prefix: prefix.to_string(),
            sets: BTreeMap::new(),
            errors: Vec::new(),
        }
    }

    fn err(&mut self, file: &str, line: usize, kind: CompileErrorKind) {
        self.errors.push(CompileError {
            file: file.to_string(),
            line,
            kind,
        });
    }

    /// Looks an alias up; `local_first` is false inside the cluster's
    /// own objects.
    fn alias(&self, reference: &str, local_first: bool) -> Option<IpNet> {
        let (which, name) = split_ref(reference);
        let find = |f: &FwFile| {
            f.aliases
                .iter()
                .find(|a| a.name.eq_ignore_ascii_case(name))
                .map(|a| a.cidr)
        };
        match which {
            Some("dc") => find(self.dc),
            Some(_) => self.local.and_then(find),
            None => {
                let local = if local_first {
                    self.local.and_then(find)
                } else {
                    None
                };
                local.or_else(|| find(self.dc))
            }
        }
    }

    /// Finds an ipset; returns it, whether it is the cluster's, and its
    /// nft name stem.
    fn ipset(&self, reference: &str) -> Option<(&'a IpSet, bool, String)> {
        let (which, name) = split_ref(reference);
        let find = |f: &'a FwFile| f.ipsets.iter().find(|s| s.name.eq_ignore_ascii_case(name));
        let local = || self.local.and_then(find).map(|s| (s, false));
        let dc = || find(self.dc).map(|s| (s, true));
        let (set, is_dc) = match which {
            Some("dc") => dc(),
            Some(_) => local(),
            None => local().or_else(dc),
        }?;
        let stem = if is_dc { "dc" } else { self.prefix.as_str() };
        Some((set, is_dc, stem.to_string()))
    }

    /// Makes the nft sets of an ipset and returns the matches per family.
    fn ipset_side(&mut self, file: &str, line: usize, reference: &str) -> Option<Side> {
        let Some((set, is_dc, stem)) = self.ipset(reference) else {
            self.err(
                file,
                line,
                CompileErrorKind::UnknownIpset(reference.to_string()),
            );
            return None;
        };
        let mut lists: [Vec<String>; 4] = Default::default(); // v4, v4 nomatch, v6, v6 nomatch
        for e in &set.entries {
            let net = match parse_cidr(&e.value) {
                Some(n) => n,
                None => match self.alias(&e.value, !is_dc) {
                    Some(n) => n,
                    None => {
                        let owner = if is_dc {
                            self.dc.name.clone()
                        } else {
                            self.local.map(|l| l.name.clone()).unwrap_or_default()
                        };
                        self.err(
                            &owner,
                            e.line,
                            CompileErrorKind::UnknownAlias(e.value.clone()),
                        );
                        continue;
                    }
                },
            };
            let i = usize::from(net.addr().is_ipv6()) * 2 + usize::from(e.nomatch);
            lists[i].push(net.to_string());
        }
        let mut side = Side::default();
        for (v6, base) in [(false, 0), (true, 2)] {
            if lists[base].is_empty() {
                continue;
            }
            let fam = if v6 { "v6" } else { "v4" };
            let name = set_name(&stem, &set.name, fam);
            self.sets.entry(name.clone()).or_insert_with(|| Set {
                name: name.clone(),
                ipv6: v6,
                elements: lists[base].clone(),
            });
            let mut m = vec![(false, AddrValue::Set(name))];
            if !lists[base + 1].is_empty() {
                let nm = set_name(&stem, &set.name, &format!("{fam}-nomatch"));
                self.sets.entry(nm.clone()).or_insert_with(|| Set {
                    name: nm.clone(),
                    ipv6: v6,
                    elements: lists[base + 1].clone(),
                });
                m.push((true, AddrValue::Set(nm)));
            }
            if v6 {
                side.v6 = Some(m);
            } else {
                side.v4 = Some(m);
            }
        }
        Some(side)
    }

    /// Resolves `-source`/`-dest`.
    fn side(&mut self, file: &str, line: usize, text: &str, local_first: bool) -> Option<Side> {
        if let Some(set) = text.strip_prefix('+').filter(|s| !s.contains(',')) {
            return self.ipset_side(file, line, set);
        }
        let mut v4 = Vec::new();
        let mut v6 = Vec::new();
        let mut ok = true;
        for item in text.split(',') {
            let item = item.trim();
            if item.starts_with('+') {
                self.err(file, line, CompileErrorKind::IpsetInList(item.to_string()));
                ok = false;
                continue;
            }
            if let Some((a, b)) = item.split_once('-') {
                if let (Ok(a), Ok(b)) =
                    (a.parse::<std::net::IpAddr>(), b.parse::<std::net::IpAddr>())
                {
                    if a.is_ipv6() != b.is_ipv6() || a > b {
                        self.err(file, line, CompileErrorKind::BadAddress(item.to_string()));
                        ok = false;
                    } else if a.is_ipv6() {
                        v6.push(format!("{a}-{b}"));
                    } else {
                        v4.push(format!("{a}-{b}"));
                    }
                    continue;
                }
            }
            let net = match parse_cidr(item) {
                Some(n) => n,
                None if crate::config::valid_name(split_ref(item).1) => {
                    match self.alias(item, local_first) {
                        Some(n) => n,
                        None => {
                            self.err(file, line, CompileErrorKind::UnknownAlias(item.to_string()));
                            ok = false;
                            continue;
                        }
                    }
                }
                None => {
                    self.err(file, line, CompileErrorKind::BadAddress(item.to_string()));
                    ok = false;
                    continue;
                }
            };
            if net.addr().is_ipv6() {
                v6.push(net.to_string());
            } else {
                v4.push(net.to_string());
            }
        }
        if !ok {
            return None;
        }
        let wrap = |l: Vec<String>| (!l.is_empty()).then(|| vec![(false, AddrValue::List(l))]);
        Some(Side {
            v4: wrap(v4),
            v6: wrap(v6),
        })
    }

    /// Resolves and expands the enabled rules of `file` (its groups come
    /// from the cluster file).
    fn expand(&mut self, file: &FwFile, rules: &[Rule], local_first: bool) -> Vec<Expanded> {
        let mut out = Vec::new();
        for r in rules.iter().filter(|r| r.enabled) {
            if let Verb::Group(g) = &r.verb {
                let Some(group) = self.dc.group(g) else {
                    self.err(
                        &file.name,
                        r.line,
                        CompileErrorKind::UnknownGroup(g.clone()),
                    );
                    continue;
                };
                let dc = self.dc;
                for mut e in self.expand(dc, &group.rules, false) {
                    if r.iface.is_some() {
                        e.iface = r.iface.clone();
                    }
                    e.origin = format!(
                        "{} (group {} from {}:{})",
                        e.origin, group.name, file.name, r.line
                    );
                    out.push(e);
                }
                continue;
            }
            let Some(direction) = r.direction else {
                continue;
            };
            let src = match &r.source {
                Some(s) => match self.side(&file.name, r.line, s, local_first) {
                    Some(side) => Some(side),
                    None => continue,
                },
                None => None,
            };
            let dst = match &r.dest {
                Some(s) => match self.side(&file.name, r.line, s, local_first) {
                    Some(side) => Some(side),
                    None => continue,
                },
                None => None,
            };
            let (action, combos) =
                match &r.verb {
                    Verb::Action(a) => (
                        *a,
                        vec![Combo {
                            proto: r.proto.clone(),
                            dport: r.dport.clone(),
                            sport: r.sport.clone(),
                            icmp_type: r.icmp_type.clone(),
                        }],
                    ),
                    Verb::Macro { name, action } => {
                        let m = macros::lookup(name).expect("macro checked by the parser");
                        let combos =
                            m.entries
                                .iter()
                                .map(|e| Combo {
                                    proto: Some(e.proto.to_string()),
                                    dport: r.dport.clone().or_else(|| {
                                        (!e.dport.is_empty()).then(|| e.dport.to_vec())
                                    }),
                                    sport: r.sport.clone().or_else(|| {
                                        (!e.sport.is_empty()).then(|| e.sport.to_vec())
                                    }),
                                    icmp_type: e.icmp_type.map(str::to_string),
                                })
                                .collect();
                        (*action, combos)
                    }
                    Verb::Group(_) => unreachable!("handled above"),
                };
            out.push(Expanded {
                direction,
                action,
                iface: r.iface.clone(),
                src,
                dst,
                combos,
                log: r.log.filter(|l| *l != LogLevel::Nolog),
                origin: format!("{}:{}", file.name, r.line),
                file: file.name.clone(),
                line: r.line,
            });
        }
        out
    }
}

/// How an expanded rule's `-i` turns into a match.
#[derive(Clone, Copy, PartialEq, Eq)]
enum IfaceMatch {
    In,
    Out,
    Ignore,
}

/// Emits the nft rules of one expanded rule.
fn emit(e: &Expanded, chain: &str, iface: IfaceMatch, verdict: Verdict) -> Vec<NftRule> {
    let mut out = Vec::new();
    for c in &e.combos {
        let families: Vec<Option<bool>> = if e.src.is_none() && e.dst.is_none() {
            vec![None]
        } else {
            [false, true]
                .into_iter()
                .filter(|v6| {
                    e.src.as_ref().is_none_or(|s| s.family(*v6).is_some())
                        && e.dst.as_ref().is_none_or(|s| s.family(*v6).is_some())
                })
                .map(Some)
                .collect()
        };
        for fam in families {
            let icmp_v6 = match c.proto.as_deref() {
                Some("icmp") => Some(false),
                Some("ipv6-icmp") => Some(true),
                _ => None,
            };
            if let (Some(f), Some(i)) = (fam, icmp_v6) {
                if f != i {
                    continue;
                }
            }
            let mut m = Vec::new();
            match (iface, &e.iface) {
                (IfaceMatch::In, Some(i)) => m.push(Match::IifName(i.clone())),
                (IfaceMatch::Out, Some(i)) => m.push(Match::OifName(i.clone())),
                _ => {}
            }
            for (src, side) in [(true, &e.src), (false, &e.dst)] {
                if let (Some(side), Some(v6)) = (side, fam) {
                    for (negate, value) in side.family(v6).into_iter().flatten() {
                        m.push(Match::Addr {
                            v6,
                            src,
                            negate: *negate,
                            value: value.clone(),
                        });
                    }
                }
            }
            if let Some(p) = &c.proto {
                m.push(Match::L4Proto(p.clone()));
            }
            if let Some(s) = &c.sport {
                m.push(Match::Ports {
                    src: true,
                    ranges: s.clone(),
                });
            }
            if let Some(d) = &c.dport {
                m.push(Match::Ports {
                    src: false,
                    ranges: d.clone(),
                });
            }
            if let (Some(t), Some(v6)) = (&c.icmp_type, icmp_v6) {
                if let Some(name) = macros::nft_icmp_type(t, v6) {
                    m.push(Match::IcmpType {
                        v6,
                        types: vec![name],
                    });
                }
            }
            out.push(NftRule {
                matches: m,
                log: e.log.map(|l| (format!("{chain} {}: ", e.action), l)),
                verdict: verdict.clone(),
                comment: Some(e.origin.clone()),
            });
        }
    }
    out
}

fn action_verdict(a: Action, accept: Verdict, can_reject: bool) -> Verdict {
    match a {
        Action::Accept => accept,
        Action::Drop => Verdict::Drop,
        Action::Reject if can_reject => Verdict::Reject,
        Action::Reject => Verdict::Drop,
    }
}

fn policy_rule(
    chain: &str,
    policy: Action,
    log: Option<LogLevel>,
    can_reject: bool,
    accept: Option<Verdict>,
) -> Option<NftRule> {
    let verdict = match policy {
        Action::Accept => accept?,
        a => action_verdict(a, Verdict::Accept, can_reject),
    };
    Some(NftRule {
        matches: vec![],
        log: log
            .filter(|l| *l != LogLevel::Nolog)
            .map(|l| (format!("{chain} policy {policy}: "), l)),
        verdict,
        comment: Some("policy".into()),
    })
}

fn log_option(f: &FwFile, key: &str) -> Option<LogLevel> {
    f.option(key).and_then(LogLevel::parse)
}

const ND_TYPES: [&str; 5] = [
    "nd-router-solicit",
    "nd-router-advert",
    "nd-neighbor-solicit",
    "nd-neighbor-advert",
    "nd-redirect",
];

fn icmpv6(types: &[&str]) -> Vec<Match> {
    vec![
        Match::L4Proto("ipv6-icmp".into()),
        Match::IcmpType {
            v6: true,
            types: types.iter().map(|s| s.to_string()).collect(),
        },
    ]
}

fn udp_ports(sport: u16, dport: u16) -> Vec<Match> {
    vec![
        Match::L4Proto("udp".into()),
        Match::Ports {
            src: true,
            ranges: vec![(sport, sport)],
        },
        Match::Ports {
            src: false,
            ranges: vec![(dport, dport)],
        },
    ]
}

fn compile_host(input: &Input, errors: &mut Vec<CompileError>) -> Option<Table> {
    let (cluster, host) = (&input.cluster, &input.host);
    if !host.flag("enable", true) {
        return None;
    }
    let mut scope = Scope::new(cluster, Some(host), "host");
    let mut rules = scope.expand(host, &host.rules, true);
    rules.extend(scope.expand(cluster, &cluster.rules, false));
    let policy = |key: &str, default: Action| {
        host.policy(key)
            .or_else(|| cluster.policy(key))
            .unwrap_or(default)
    };
    let log = |key: &str| log_option(host, key).or_else(|| log_option(cluster, key));

    // input
    let mut input_rules = vec![
        NftRule::verdict(vec![Match::IifName("lo".into())], Verdict::Accept),
        NftRule::verdict(
            vec![Match::CtState(vec!["established", "related"])],
            Verdict::Accept,
        ),
        NftRule::verdict(vec![Match::CtState(vec!["invalid"])], Verdict::Drop),
        // Replies to the node's own DHCP client (broadcast, so not seen
        // as related by conntrack).
        NftRule::verdict(udp_ports(67, 68), Verdict::Accept),
    ];
    if host.flag("ndp", true) {
        input_rules.push(NftRule::verdict(icmpv6(&ND_TYPES), Verdict::Accept));
    }
    let ins: Vec<&Expanded> = rules
        .iter()
        .filter(|e| e.direction == Direction::In)
        .collect();
    let last_deny = ins.iter().rposition(|e| e.denies_management());
    let management = {
        let mut m = Vec::new();
        let ports = Match::Ports {
            src: false,
            ranges: MANAGEMENT_PORTS.iter().map(|&p| (p, p)).collect(),
        };
        let tcp = Match::L4Proto("tcp".into());
        let has_set = cluster
            .ipsets
            .iter()
            .any(|s| s.name.eq_ignore_ascii_case("management"));
        if has_set {
            if let Some(side) = scope.ipset_side(&cluster.name, 0, "dc/management") {
                for v6 in [false, true] {
                    if let Some(list) = side.family(v6) {
                        let mut matches: Vec<Match> = list
                            .iter()
                            .map(|(negate, value)| Match::Addr {
                                v6,
                                src: true,
                                negate: *negate,
                                value: value.clone(),
                            })
                            .collect();
                        matches.push(tcp.clone());
                        matches.push(ports.clone());
                        m.push(NftRule {
                            comment: Some("management access".into()),
                            ..NftRule::verdict(matches, Verdict::Accept)
                        });
                    }
                }
            }
        } else {
            m.push(NftRule {
                comment: Some("management access".into()),
                ..NftRule::verdict(vec![tcp, ports], Verdict::Accept)
            });
        }
        m
    };
    let split = last_deny.map(|k| k + 1).unwrap_or(0);
    for e in &ins[..split] {
        input_rules.extend(emit(
            e,
            "host-in",
            IfaceMatch::In,
            action_verdict(e.action, Verdict::Accept, true),
        ));
    }
    input_rules.extend(management);
    for e in &ins[split..] {
        input_rules.extend(emit(
            e,
            "host-in",
            IfaceMatch::In,
            action_verdict(e.action, Verdict::Accept, true),
        ));
    }
    input_rules.extend(policy_rule(
        "host-in",
        policy("policy_in", Action::Drop),
        log("log_level_in"),
        true,
        Some(Verdict::Accept),
    ));

    // output
    let mut output_rules = vec![
        NftRule::verdict(vec![Match::OifName("lo".into())], Verdict::Accept),
        NftRule::verdict(
            vec![Match::CtState(vec!["established", "related"])],
            Verdict::Accept,
        ),
    ];
    for e in rules.iter().filter(|e| e.direction == Direction::Out) {
        output_rules.extend(emit(
            e,
            "host-out",
            IfaceMatch::Out,
            action_verdict(e.action, Verdict::Accept, true),
        ));
    }
    output_rules.extend(policy_rule(
        "host-out",
        policy("policy_out", Action::Accept),
        log("log_level_out"),
        true,
        Some(Verdict::Accept),
    ));

    let mut chains = vec![
        Chain {
            name: "input".into(),
            hook: Some(Hook::Input),
            rules: input_rules,
        },
        Chain {
            name: "output".into(),
            hook: Some(Hook::Output),
            rules: output_rules,
        },
    ];

    // forward (routed traffic), only when asked for
    let fwd: Vec<&Expanded> = rules
        .iter()
        .filter(|e| e.direction == Direction::Forward)
        .collect();
    let fwd_policy = host
        .policy("policy_forward")
        .or_else(|| cluster.policy("policy_forward"));
    if !fwd.is_empty() || fwd_policy.is_some() {
        let mut fr = vec![NftRule::verdict(
            vec![Match::CtState(vec!["established", "related"])],
            Verdict::Accept,
        )];
        for e in fwd {
            fr.extend(emit(
                e,
                "host-fwd",
                IfaceMatch::In,
                action_verdict(e.action, Verdict::Accept, true),
            ));
        }
        fr.extend(policy_rule(
            "host-fwd",
            fwd_policy.unwrap_or(Action::Accept),
            log("log_level_forward"),
            true,
            Some(Verdict::Accept),
        ));
        chains.push(Chain {
            name: "forward".into(),
            hook: Some(Hook::Forward),
            rules: fr,
        });
    }
    errors.append(&mut scope.errors);
    Some(Table {
        family: HOST_TABLE.0,
        name: HOST_TABLE.1.into(),
        sets: scope.sets.into_values().collect(),
        maps: vec![],
        chains,
    })
}

fn guest_net(iface: &str) -> Option<u32> {
    iface.strip_prefix("net")?.parse().ok()
}

fn compile_guests(input: &Input, errors: &mut Vec<CompileError>) -> Option<Table> {
    let f = input.features;
    let mut sets: BTreeMap<String, Set> = BTreeMap::new();
    let mut chains = Vec::new();
    let mut map_in = Vec::new();
    let mut map_out = Vec::new();
    for g in &input.guests {
        let file = &g.file;
        if !file.flag("enable", false) || !g.ports.iter().any(|p| p.firewall) {
            continue;
        }
        for grp in &file.groups {
            errors.push(CompileError {
                file: file.name.clone(),
                line: grp.line,
                kind: CompileErrorKind::GroupOutsideCluster,
            });
        }
        let prefix = format!("g{}", g.vmid);
        let mut scope = Scope::new(&input.cluster, Some(file), &prefix);
        let rules = scope.expand(file, &file.rules, true);
        for e in &rules {
            if let Some(i) = &e.iface {
                if guest_net(i).is_none() {
                    let (f, l) = (e.file.clone(), e.line);
                    scope.err(&f, l, CompileErrorKind::BadGuestIface(i.clone()));
                }
            }
        }
        let policy_in = file.policy("policy_in").unwrap_or(Action::Drop);
        let policy_out = file.policy("policy_out").unwrap_or(Action::Accept);
        let dhcp = file.flag("dhcp", false);
        let ndp = file.flag("ndp", true);
        let radv = file.flag("radv", false);
        let macfilter = file.flag("macfilter", true);
        let ipfilter = file.flag("ipfilter", false);
        for port in g.ports.iter().filter(|p| p.firewall) {
            let net = format!("net{}", port.net);
            let applies = |e: &&Expanded| e.iface.as_deref().is_none_or(|i| i == net);
            let out_name = format!("{prefix}-{net}-out");
            let in_name = format!("{prefix}-{net}-in");

            // Frames from the guest.
            let mut out = Vec::new();
            if macfilter {
                if let Some(mac) = &port.mac {
                    out.push(NftRule::verdict(
                        vec![Match::EtherSaddrNot(mac.to_ascii_lowercase())],
                        Verdict::Drop,
                    ));
                }
            }
            out.push(NftRule::verdict(
                vec![Match::EtherType("arp")],
                Verdict::Return,
            ));
            if dhcp {
                out.push(NftRule::verdict(udp_ports(68, 67), Verdict::Return));
                out.push(NftRule::verdict(udp_ports(546, 547), Verdict::Return));
            }
            if ipfilter {
                let set_ref = format!("guest/ipfilter-{net}");
                let side = if scope.ipset(&set_ref).is_some_and(|(_, dc, _)| !dc) {
                    scope
                        .ipset_side(&file.name, 0, &set_ref)
                        .unwrap_or_default()
                } else {
                    let list = |v6: bool| {
                        let l: Vec<String> = port
                            .ips
                            .iter()
                            .filter(|n| n.addr().is_ipv6() == v6)
                            .map(|n| n.addr().to_string())
                            .collect();
                        (!l.is_empty()).then(|| vec![(false, AddrValue::List(l))])
                    };
                    Side {
                        v4: list(false),
                        v6: list(true),
                    }
                };
                for v6 in [false, true] {
                    let mut allowed = side.family(v6).cloned().unwrap_or_default();
                    if v6 {
                        // Link-local addresses are always the guest's own.
                        allowed.push((false, AddrValue::List(vec!["fe80::/10".into()])));
                    }
                    if allowed.is_empty() {
                        out.push(NftRule::verdict(vec![Match::NfProto { v6 }], Verdict::Drop));
                        continue;
                    }
                    // Drop unless in one of the allowed lists.
                    let positives: Vec<&AddrValue> = allowed
                        .iter()
                        .filter(|(neg, _)| !neg)
                        .map(|(_, v)| v)
                        .collect();
                    let mut m = Vec::new();
                    for v in positives {
                        m.push(Match::Addr {
                            v6,
                            src: true,
                            negate: true,
                            value: v.clone(),
                        });
                    }
                    out.push(NftRule::verdict(m, Verdict::Drop));
                    for (_, v) in allowed.iter().filter(|(neg, _)| *neg) {
                        out.push(NftRule::verdict(
                            vec![Match::Addr {
                                v6,
                                src: true,
                                negate: false,
                                value: v.clone(),
                            }],
                            Verdict::Drop,
                        ));
                    }
                }
            }
            if ndp {
                out.push(NftRule::verdict(
                    icmpv6(&[
                        "nd-router-solicit",
                        "nd-neighbor-solicit",
                        "nd-neighbor-advert",
                    ]),
                    Verdict::Return,
                ));
            }
            if !radv {
                out.push(NftRule::verdict(
                    icmpv6(&["nd-router-advert"]),
                    Verdict::Drop,
                ));
            }
            for e in rules
                .iter()
                .filter(|e| e.direction == Direction::Out)
                .filter(applies)
            {
                out.extend(emit(
                    e,
                    &out_name,
                    IfaceMatch::Ignore,
                    action_verdict(e.action, Verdict::Return, f.bridge_reject),
                ));
            }
            out.extend(policy_rule(
                &out_name,
                policy_out,
                log_option(file, "log_level_out"),
                f.bridge_reject,
                None,
            ));

            // Frames to the guest.
            let mut inr = vec![NftRule::verdict(
                vec![Match::EtherType("arp")],
                Verdict::Accept,
            )];
            if dhcp {
                inr.push(NftRule::verdict(udp_ports(67, 68), Verdict::Accept));
                inr.push(NftRule::verdict(udp_ports(547, 546), Verdict::Accept));
            }
            if ndp {
                inr.push(NftRule::verdict(icmpv6(&ND_TYPES), Verdict::Accept));
            }
            for e in rules
                .iter()
                .filter(|e| e.direction == Direction::In)
                .filter(applies)
            {
                inr.extend(emit(
                    e,
                    &in_name,
                    IfaceMatch::Ignore,
                    action_verdict(e.action, Verdict::Accept, f.bridge_reject),
                ));
            }
            inr.extend(policy_rule(
                &in_name,
                policy_in,
                log_option(file, "log_level_in"),
                f.bridge_reject,
                Some(Verdict::Accept),
            ));
            map_out.push((port.iface.clone(), out_name.clone()));
            map_in.push((port.iface.clone(), in_name.clone()));
            chains.push(Chain {
                name: out_name,
                hook: None,
                rules: out,
            });
            chains.push(Chain {
                name: in_name,
                hook: None,
                rules: inr,
            });
        }
        sets.append(&mut scope.sets);
        errors.append(&mut scope.errors);
    }
    if map_in.is_empty() {
        return None;
    }
    let ct = |hook_rules: &mut Vec<NftRule>| {
        if f.bridge_conntrack {
            hook_rules.push(NftRule::verdict(
                vec![Match::CtState(vec!["established", "related"])],
                Verdict::Accept,
            ));
            hook_rules.push(NftRule::verdict(
                vec![Match::CtState(vec!["invalid"])],
                Verdict::Drop,
            ));
        }
    };
    let mut forward = Vec::new();
    ct(&mut forward);
    forward.push(NftRule::verdict(
        vec![],
        Verdict::IifVmap("guest-out".into()),
    ));
    forward.push(NftRule::verdict(
        vec![],
        Verdict::OifVmap("guest-in".into()),
    ));
    let mut inp = Vec::new();
    ct(&mut inp);
    inp.push(NftRule::verdict(
        vec![],
        Verdict::IifVmap("guest-out".into()),
    ));
    let mut outp = Vec::new();
    ct(&mut outp);
    outp.push(NftRule::verdict(
        vec![],
        Verdict::OifVmap("guest-in".into()),
    ));
    let mut all = vec![
        Chain {
            name: "forward".into(),
            hook: Some(Hook::Forward),
            rules: forward,
        },
        Chain {
            name: "input".into(),
            hook: Some(Hook::Input),
            rules: inp,
        },
        Chain {
            name: "output".into(),
            hook: Some(Hook::Output),
            rules: outp,
        },
    ];
    all.extend(chains);
    Some(Table {
        family: GUEST_TABLE.0,
        name: GUEST_TABLE.1.into(),
        sets: sets.into_values().collect(),
        maps: vec![
            VerdictMap {
                name: "guest-in".into(),
                elements: map_in,
            },
            VerdictMap {
                name: "guest-out".into(),
                elements: map_out,
            },
        ],
        chains: all,
    })
}

/// Compiles the firewall. With `enable: 1` missing from `cluster.fw` the
/// result is empty: applying it removes netd's tables. Every unresolved
/// reference is reported.
pub fn compile(input: &Input) -> Result<Ruleset, CompileErrors> {
    let mut errors = Vec::new();
    for grp in &input.host.groups {
        errors.push(CompileError {
            file: input.host.name.clone(),
            line: grp.line,
            kind: CompileErrorKind::GroupOutsideCluster,
        });
    }
    let mut ruleset = Ruleset::default();
    if input.cluster.flag("enable", false) {
        ruleset.tables.extend(compile_host(input, &mut errors));
        ruleset.tables.extend(compile_guests(input, &mut errors));
    }
    for t in &mut ruleset.tables {
        for c in &mut t.chains {
            crate::optimize::merge_similar_rules(c);
        }
    }
    if errors.is_empty() {
        Ok(ruleset)
    } else {
        errors.sort_by(|a, b| (&a.file, a.line).cmp(&(&b.file, b.line)));
        errors.dedup();
        Err(CompileErrors(errors))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn input(cluster: &str, host: &str) -> Input {
        Input {
            cluster: FwFile::parse("cluster.fw", cluster).unwrap(),
            host: FwFile::parse("host.fw", host).unwrap(),
            ..Input::default()
        }
    }

    fn errors(i: &Input) -> Vec<String> {
        compile(i)
            .unwrap_err()
            .0
            .iter()
            .map(|e| e.to_string())
            .collect()
    }

    const ON: &str = "[OPTIONS]\nenable: 1\n";

    #[test]
    fn unresolved_references_are_all_reported() {
        let i = input(
            &format!("{ON}\n[IPSET s]\nnosuch\n"),
            "[RULES]\nIN ACCEPT -source a1\nIN ACCEPT -dest +nope\nGROUP g\nIN ACCEPT -source +s,10.0.0.1\nIN ACCEPT -source 10.0.0.9-10.0.0.1\nIN ACCEPT -dest +s\n",
        );
        assert_eq!(
            errors(&i),
            [
                "cluster.fw, line 5: unknown alias `nosuch`",
                "host.fw, line 2: unknown alias `a1`",
                "host.fw, line 3: unknown ipset `nope`",
                "host.fw, line 4: unknown security group `g`",
                "host.fw, line 5: an ipset (`+s`) must stand alone, not in a list",
                "host.fw, line 6: `10.0.0.9-10.0.0.1` is not an address, range or alias",
            ]
        );
    }

    #[test]
    fn guest_files_are_checked() {
        let mut i = input(ON, "");
        i.guests.push(Guest {
            vmid: 7,
            file: FwFile::parse(
                "7.fw",
                "[OPTIONS]\nenable: 1\n[RULES]\nIN ACCEPT -i eth0\n[group x]\nIN DROP\n",
            )
            .unwrap(),
            ports: vec![GuestPort {
                net: 0,
                iface: "tap7i0".into(),
                mac: None,
                firewall: true,
                ips: vec![],
            }],
        });
        assert_eq!(
            errors(&i),
            [
                "7.fw, line 4: `eth0` is not a guest interface (net0, net1, ...)",
                "7.fw, line 5: security groups belong in cluster.fw",
            ]
        );
    }

    #[test]
    fn mixed_families_split_and_impossible_ones_vanish() {
        let i = input(
            ON,
            "[RULES]\nIN ACCEPT -source 10.0.0.1,2001:db8::1\nIN ACCEPT -source 10.0.0.1 -dest 2001:db8::1\nIN ACCEPT -p icmp -source 2001:db8::1\n",
        );
        let r = compile(&i).unwrap();
        let input_chain = &r.table(crate::TableFamily::Inet).unwrap().chains[0];
        let from_rules: Vec<String> = input_chain
            .rules
            .iter()
            .filter(|r| {
                r.comment
                    .as_deref()
                    .is_some_and(|c| c.starts_with("host.fw"))
            })
            .map(|r| r.to_string())
            .collect();
        assert_eq!(
            from_rules,
            [
                "ip saddr 10.0.0.1/32 accept comment \"host.fw:2\"",
                "ip6 saddr 2001:db8::1/128 accept comment \"host.fw:2\"",
            ]
        );
    }

    #[test]
    fn disabled_cluster_or_host() {
        assert_eq!(
            compile(&input("", "[RULES]\nIN DROP\n")).unwrap(),
            Ruleset::default()
        );
        let r = compile(&input(ON, "[OPTIONS]\nenable: 0\n")).unwrap();
        assert!(r.tables.is_empty());
    }
}
