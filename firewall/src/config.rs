//! Parsing Proxmox's firewall files (`cluster.fw`, `host.fw`,
//! `<vmid>.fw`).
//!
//! A file is a list of sections: `[OPTIONS]` (`key: value`), `[ALIASES]`
//! (`name address`), `[IPSET name]` (one `[!]address` or alias a line),
//! `[RULES]` and `[group name]` (rules). `#` starts a comment, at the start
//! of a line or after an entry. Rules read
//!
//! ```text
//! [|]IN|OUT|FORWARD ACTION|Macro(ACTION) [-i IFACE] [-source LIST] [-dest LIST]
//!     [-p PROTO] [-dport PORTS] [-sport PORTS] [-icmp-type TYPE] [-log LEVEL] [# comment]
//! [|]GROUP name [-i IFACE]
//! ```
//!
//! where a leading `|` disables the rule. The parser checks the syntax
//! and the values that stand alone (actions, macro names, protocols,
//! ports, ICMP types, log levels, option values); names that refer to
//! other entries (aliases, ipsets, groups) are resolved by the compiler.

use std::fmt;

use crate::macros;

/// A syntax error, at a line.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{file}, line {line}: {message}")]
pub struct ParseError {
    /// The file's name (e.g. `host.fw`).
    pub file: String,
    /// 1-based line number.
    pub line: usize,
    /// What is wrong.
    pub message: String,
}

/// All syntax errors of a file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ParseErrors(pub Vec<ParseError>);

impl fmt::Display for ParseErrors {
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

impl std::error::Error for ParseErrors {}

/// What a rule does with a packet.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Action {
    /// Let it through.
    Accept,
    /// Drop it silently.
    Drop,
    /// Drop it and tell the sender.
    Reject,
}

impl Action {
    /// Parses `ACCEPT`, `DROP` or `REJECT`.
    pub fn parse(s: &str) -> Option<Action> {
        match s {
            "ACCEPT" => Some(Action::Accept),
            "DROP" => Some(Action::Drop),
            "REJECT" => Some(Action::Reject),
            _ => None,
        }
    }
}

impl fmt::Display for Action {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Action::Accept => "ACCEPT",
            Action::Drop => "DROP",
            Action::Reject => "REJECT",
        })
    }
}

/// Which traffic a rule applies to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Direction {
    /// Towards the host or guest.
    In,
    /// From the host or guest.
    Out,
    /// Routed through the host.
    Forward,
}

impl fmt::Display for Direction {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Direction::In => "IN",
            Direction::Out => "OUT",
            Direction::Forward => "FORWARD",
        })
    }
}

/// What a rule does.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verb {
    /// A plain action.
    Action(Action),
    /// A macro (`SSH(ACCEPT)`): the macro's protocol/port pairs with an
    /// action.
    Macro {
        /// The macro's name as known to [`macros::lookup`].
        name: &'static str,
        /// The action.
        action: Action,
    },
    /// `GROUP name`: the rules of a security group of `cluster.fw`.
    Group(String),
}

/// A syslog level for `-log`, or none.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum LogLevel {
    /// No logging.
    Nolog,
    /// emerg.
    Emerg,
    /// alert.
    Alert,
    /// crit.
    Crit,
    /// err.
    Err,
    /// warning.
    Warning,
    /// notice.
    Notice,
    /// info.
    Info,
    /// debug.
    Debug,
}

impl LogLevel {
    const ALL: [(&'static str, LogLevel); 9] = [
        ("nolog", LogLevel::Nolog),
        ("emerg", LogLevel::Emerg),
        ("alert", LogLevel::Alert),
        ("crit", LogLevel::Crit),
        ("err", LogLevel::Err),
        ("warning", LogLevel::Warning),
        ("notice", LogLevel::Notice),
        ("info", LogLevel::Info),
        ("debug", LogLevel::Debug),
    ];

    /// Parses a level name.
    pub fn parse(s: &str) -> Option<LogLevel> {
        Self::ALL.iter().find(|(n, _)| *n == s).map(|(_, l)| *l)
    }

    /// The syslog number of the level (`nolog` counts as debug).
    pub fn syslog(self) -> u32 {
        match self {
            LogLevel::Emerg => 0,
            LogLevel::Alert => 1,
            LogLevel::Crit => 2,
            LogLevel::Err => 3,
            LogLevel::Warning => 4,
            LogLevel::Notice => 5,
            LogLevel::Info => 6,
            LogLevel::Debug | LogLevel::Nolog => 7,
        }
    }

    /// The level's name, as nftables spells it (`warn` for warning).
    pub fn nft_name(self) -> &'static str {
        match self {
            LogLevel::Warning => "warn",
            l => Self::ALL
                .iter()
                .find(|(_, x)| *x == l)
                .map(|(n, _)| *n)
                .unwrap_or("info"),
        }
    }
}

/// A port or inclusive port range.
pub type PortRange = (u16, u16);

/// A rule, as written.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rule {
    /// Its line.
    pub line: usize,
    /// `false` for a `|`-disabled rule.
    pub enabled: bool,
    /// Direction (for a group reference, the direction is taken from
    /// the group's own rules).
    pub direction: Option<Direction>,
    /// What it does.
    pub verb: Verb,
    /// `-i`: a host interface, or a guest's `netN`.
    pub iface: Option<String>,
    /// `-source`, unresolved.
    pub source: Option<String>,
    /// `-dest`, unresolved.
    pub dest: Option<String>,
    /// `-p`, the protocol name (canonical) or number.
    pub proto: Option<String>,
    /// `-dport`.
    pub dport: Option<Vec<PortRange>>,
    /// `-sport`.
    pub sport: Option<Vec<PortRange>>,
    /// `-icmp-type`.
    pub icmp_type: Option<String>,
    /// `-log`.
    pub log: Option<LogLevel>,
}

/// An `[ALIASES]` entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Alias {
    /// Its line.
    pub line: usize,
    /// The name (compared case-insensitively).
    pub name: String,
    /// The address or network.
    pub cidr: ipnet::IpNet,
}

/// An `[IPSET]` entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IpSetEntry {
    /// Its line.
    pub line: usize,
    /// `!`: excluded from the set.
    pub nomatch: bool,
    /// An address, network, or alias name.
    pub value: String,
}

/// An `[IPSET name]` section.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IpSet {
    /// Its header's line.
    pub line: usize,
    /// The name (compared case-insensitively).
    pub name: String,
    /// Entries.
    pub entries: Vec<IpSetEntry>,
}

/// A `[group name]` section of `cluster.fw`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Group {
    /// Its header's line.
    pub line: usize,
    /// The name (compared case-insensitively).
    pub name: String,
    /// Its rules.
    pub rules: Vec<Rule>,
}

/// An `[OPTIONS]` entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OptionEntry {
    /// Its line.
    pub line: usize,
    /// The key.
    pub key: String,
    /// The value.
    pub value: String,
}

/// One parsed firewall file.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct FwFile {
    /// The file's name, for messages.
    pub name: String,
    /// `[OPTIONS]`.
    pub options: Vec<OptionEntry>,
    /// `[ALIASES]`.
    pub aliases: Vec<Alias>,
    /// `[IPSET ...]` sections.
    pub ipsets: Vec<IpSet>,
    /// `[RULES]`.
    pub rules: Vec<Rule>,
    /// `[group ...]` sections.
    pub groups: Vec<Group>,
}

/// Options with boolean values.
const BOOL_OPTIONS: [&str; 9] = [
    "enable",
    "ipfilter",
    "macfilter",
    "dhcp",
    "ndp",
    "radv",
    "nosmurfs",
    "tcpflags",
    "ebtables",
];
/// Options with a policy value.
const POLICY_OPTIONS: [&str; 3] = ["policy_in", "policy_out", "policy_forward"];
/// Options with a log level value.
const LOG_OPTIONS: [&str; 3] = ["log_level_in", "log_level_out", "log_level_forward"];

impl FwFile {
    /// The value of option `key`, if set.
    pub fn option(&self, key: &str) -> Option<&str> {
        self.options
            .iter()
            .rev()
            .find(|o| o.key == key)
            .map(|o| o.value.as_str())
    }

    /// A boolean option (`1`/`0`), or `default`.
    pub fn flag(&self, key: &str, default: bool) -> bool {
        self.option(key).map(|v| v == "1").unwrap_or(default)
    }

    /// A policy option, or `default`.
    pub fn policy(&self, key: &str) -> Option<Action> {
        self.option(key).and_then(Action::parse)
    }

    /// The group called `name`.
    pub fn group(&self, name: &str) -> Option<&Group> {
        self.groups
            .iter()
            .find(|g| g.name.eq_ignore_ascii_case(name))
    }

    /// Parses the text of a file called `name`.
    pub fn parse(name: &str, text: &str) -> Result<FwFile, ParseErrors> {
        let mut file = FwFile {
            name: name.to_string(),
            ..FwFile::default()
        };
        let mut errors = Vec::new();
        enum Section {
            None,
            Options,
            Aliases,
            IpSet,
            Rules,
            Group,
        }
        let mut section = Section::None;
        for (i, raw) in text.lines().enumerate() {
            let line = i + 1;
            let err = |message: String| ParseError {
                file: name.to_string(),
                line,
                message,
            };
            let content = raw.split('#').next().unwrap_or_default().trim();
            if content.is_empty() {
                continue;
            }
            if let Some(inner) = content.strip_prefix('[') {
                let Some(inner) = inner.strip_suffix(']') else {
                    errors.push(err(format!("section header `{content}` lacks `]`")));
                    continue;
                };
                let mut w = inner.split_whitespace();
                let head = w.next().unwrap_or_default();
                let arg = w.next();
                if w.next().is_some() {
                    errors.push(err(format!("unexpected words in `[{inner}]`")));
                    continue;
                }
                section = match (head.to_ascii_uppercase().as_str(), arg) {
                    ("OPTIONS", None) => Section::Options,
                    ("ALIASES", None) => Section::Aliases,
                    ("RULES", None) => Section::Rules,
                    ("IPSET", Some(n)) if valid_name(n) => {
                        file.ipsets.push(IpSet {
                            line,
                            name: n.to_string(),
                            entries: vec![],
                        });
                        Section::IpSet
                    }
                    ("GROUP", Some(n)) if valid_name(n) => {
                        file.groups.push(Group {
                            line,
                            name: n.to_string(),
                            rules: vec![],
                        });
                        Section::Group
                    }
                    ("IPSET" | "GROUP", Some(n)) => {
                        errors.push(err(format!("`{n}` is not a valid name")));
                        Section::None
                    }
                    _ => {
                        errors.push(err(format!("unknown section `[{inner}]`")));
                        Section::None
                    }
                };
                continue;
            }
            let r: Result<(), String> = match section {
                Section::None => Err("entry outside of a section".to_string()),
                Section::Options => parse_option(content).map(|(key, value)| {
                    file.options.push(OptionEntry { line, key, value });
                }),
                Section::Aliases => parse_alias(content).map(|(name, cidr)| {
                    file.aliases.push(Alias { line, name, cidr });
                }),
                Section::IpSet => parse_ipset_entry(content).map(|(nomatch, value)| {
                    if let Some(set) = file.ipsets.last_mut() {
                        set.entries.push(IpSetEntry {
                            line,
                            nomatch,
                            value,
                        });
                    }
                }),
                Section::Rules => parse_rule(line, content).map(|r| file.rules.push(r)),
                Section::Group => parse_rule(line, content).and_then(|r| {
                    if matches!(r.verb, Verb::Group(_)) {
                        return Err("a group cannot refer to another group".to_string());
                    }
                    if let Some(g) = file.groups.last_mut() {
                        g.rules.push(r);
                    }
                    Ok(())
                }),
            };
            if let Err(m) = r {
                errors.push(err(m));
            }
        }
        if errors.is_empty() {
            Ok(file)
        } else {
            Err(ParseErrors(errors))
        }
    }
}

/// Whether `s` is a valid alias, ipset or group name.
pub fn valid_name(s: &str) -> bool {
    let mut c = s.chars();
    c.next().is_some_and(|f| f.is_ascii_alphabetic())
        && s.len() <= 64
        && c.all(|ch| ch.is_ascii_alphanumeric() || ch == '-' || ch == '_')
}

fn parse_option(content: &str) -> Result<(String, String), String> {
    let (key, value) = content
        .split_once(':')
        .ok_or_else(|| format!("option `{content}` is not `key: value`"))?;
    let key = key.trim();
    let value = value.trim();
    if BOOL_OPTIONS.contains(&key) && value != "0" && value != "1" {
        return Err(format!("{key}: `{value}` is not 0 or 1"));
    }
    if POLICY_OPTIONS.contains(&key) && Action::parse(value).is_none() {
        return Err(format!("{key}: `{value}` is not ACCEPT, DROP or REJECT"));
    }
    if LOG_OPTIONS.contains(&key) && LogLevel::parse(value).is_none() {
        return Err(format!("{key}: `{value}` is not a log level"));
    }
    Ok((key.to_string(), value.to_string()))
}

fn parse_alias(content: &str) -> Result<(String, ipnet::IpNet), String> {
    let mut w = content.split_whitespace();
    let (Some(name), Some(addr), None) = (w.next(), w.next(), w.next()) else {
        return Err(format!("alias `{content}` is not `name address`"));
    };
    if !valid_name(name) {
        return Err(format!("`{name}` is not a valid alias name"));
    }
    let cidr = parse_cidr(addr).ok_or_else(|| format!("`{addr}` is not an address"))?;
    Ok((name.to_string(), cidr))
}

/// An address or network (`10.0.0.1`, `10.0.0.0/8`, `2001:db8::/32`).
pub fn parse_cidr(s: &str) -> Option<ipnet::IpNet> {
    if let Ok(n) = s.parse::<ipnet::IpNet>() {
        return Some(n.trunc());
    }
    let ip: std::net::IpAddr = s.parse().ok()?;
    Some(ipnet::IpNet::from(ip))
}

fn parse_ipset_entry(content: &str) -> Result<(bool, String), String> {
    let mut w = content.split_whitespace();
    let (Some(v), None) = (w.next(), w.next()) else {
        return Err(format!("ipset entry `{content}` has more than one word"));
    };
    let (nomatch, v) = match v.strip_prefix('!') {
        Some(rest) => (true, rest),
        None => (false, v),
    };
    if parse_cidr(v).is_none() && !valid_ref(v) {
        return Err(format!("`{v}` is neither an address nor an alias"));
    }
    Ok((nomatch, v.to_string()))
}

/// `name`, `dc/name` or `guest/name`.
fn valid_ref(s: &str) -> bool {
    let name = s
        .strip_prefix("dc/")
        .or_else(|| s.strip_prefix("guest/"))
        .unwrap_or(s);
    valid_name(name)
}

/// Protocol names we accept for `-p`, with their canonical nft name.
const PROTOCOLS: [(&str, &str); 14] = [
    ("tcp", "tcp"),
    ("udp", "udp"),
    ("icmp", "icmp"),
    ("icmpv6", "ipv6-icmp"),
    ("ipv6-icmp", "ipv6-icmp"),
    ("sctp", "sctp"),
    ("udplite", "udplite"),
    ("dccp", "dccp"),
    ("gre", "gre"),
    ("esp", "esp"),
    ("ah", "ah"),
    ("ospf", "89"),
    ("vrrp", "112"),
    ("igmp", "igmp"),
];

/// The canonical name of protocol `p` (a name or a number 0-255).
pub fn canonical_proto(p: &str) -> Option<String> {
    if let Ok(n) = p.parse::<u8>() {
        return Some(match n {
            6 => "tcp".into(),
            17 => "udp".into(),
            1 => "icmp".into(),
            58 => "ipv6-icmp".into(),
            n => n.to_string(),
        });
    }
    let lower = p.to_ascii_lowercase();
    PROTOCOLS
        .iter()
        .find(|(n, _)| *n == lower)
        .map(|(_, c)| c.to_string())
}

/// Whether protocol `p` (canonical) has ports.
pub fn has_ports(p: &str) -> bool {
    matches!(p, "tcp" | "udp" | "sctp" | "udplite" | "dccp")
}

fn parse_port(s: &str) -> Option<u16> {
    s.parse::<u16>().ok()
}

/// Parses a port list: `22`, `80,443`, `1000:2000`.
pub fn parse_ports(s: &str) -> Option<Vec<PortRange>> {
    let mut out = Vec::new();
    for part in s.split(',') {
        let part = part.trim();
        let r = match part.split_once(':').or_else(|| part.split_once('-')) {
            Some((a, b)) => (parse_port(a)?, parse_port(b)?),
            None => {
                let p = parse_port(part)?;
                (p, p)
            }
        };
        if r.0 > r.1 {
            return None;
        }
        out.push(r);
    }
    (!out.is_empty()).then_some(out)
}

fn parse_rule(line: usize, content: &str) -> Result<Rule, String> {
    let (enabled, content) = match content.strip_prefix('|') {
        Some(rest) => (false, rest.trim_start()),
        None => (true, content),
    };
    let mut w = content.split_whitespace();
    let first = w.next().unwrap_or_default();
    let mut rule = Rule {
        line,
        enabled,
        direction: None,
        verb: Verb::Action(Action::Accept),
        iface: None,
        source: None,
        dest: None,
        proto: None,
        dport: None,
        sport: None,
        icmp_type: None,
        log: None,
    };
    match first.to_ascii_uppercase().as_str() {
        "GROUP" => {
            let name = w.next().ok_or("GROUP without a name")?;
            if !valid_name(name) {
                return Err(format!("`{name}` is not a valid group name"));
            }
            rule.verb = Verb::Group(name.to_string());
        }
        dir @ ("IN" | "OUT" | "FORWARD") => {
            rule.direction = Some(match dir {
                "IN" => Direction::In,
                "OUT" => Direction::Out,
                _ => Direction::Forward,
            });
            let verb = w.next().ok_or("rule without an action")?;
            rule.verb = parse_verb(verb)?;
        }
        _ => return Err(format!("`{first}` is not IN, OUT, FORWARD or GROUP")),
    }
    while let Some(flag) = w.next() {
        let name = flag.trim_start_matches('-');
        if !flag.starts_with('-') || name.is_empty() {
            return Err(format!("unexpected `{flag}`"));
        }
        let value = w.next().ok_or_else(|| format!("{flag} needs a value"))?;
        let dup = |set: bool| {
            if set {
                Err(format!("{flag} given twice"))
            } else {
                Ok(())
            }
        };
        match name {
            "i" | "iface" => {
                dup(rule.iface.is_some())?;
                rule.iface = Some(value.to_string());
            }
            "source" => {
                dup(rule.source.is_some())?;
                rule.source = Some(value.to_string());
            }
            "dest" => {
                dup(rule.dest.is_some())?;
                rule.dest = Some(value.to_string());
            }
            "p" | "proto" => {
                dup(rule.proto.is_some())?;
                rule.proto = Some(
                    canonical_proto(value).ok_or_else(|| format!("unknown protocol `{value}`"))?,
                );
            }
            "dport" => {
                dup(rule.dport.is_some())?;
                rule.dport =
                    Some(parse_ports(value).ok_or_else(|| format!("invalid port list `{value}`"))?);
            }
            "sport" => {
                dup(rule.sport.is_some())?;
                rule.sport =
                    Some(parse_ports(value).ok_or_else(|| format!("invalid port list `{value}`"))?);
            }
            "icmp-type" => {
                dup(rule.icmp_type.is_some())?;
                rule.icmp_type = Some(value.to_string());
            }
            "log" => {
                dup(rule.log.is_some())?;
                rule.log = Some(
                    LogLevel::parse(value).ok_or_else(|| format!("unknown log level `{value}`"))?,
                );
            }
            _ => return Err(format!("unknown rule option `{flag}`")),
        }
    }
    if matches!(rule.verb, Verb::Group(_))
        && (rule.source.is_some()
            || rule.dest.is_some()
            || rule.proto.is_some()
            || rule.dport.is_some()
            || rule.sport.is_some()
            || rule.icmp_type.is_some())
    {
        return Err("a GROUP rule takes only -i".to_string());
    }
    if let Some(p) = &rule.proto {
        if (rule.dport.is_some() || rule.sport.is_some()) && !has_ports(p) {
            return Err(format!("protocol {p} has no ports"));
        }
        if rule.icmp_type.is_some() && p != "icmp" && p != "ipv6-icmp" {
            return Err("-icmp-type needs -p icmp or -p icmpv6".to_string());
        }
    } else if matches!(rule.verb, Verb::Action(_)) {
        if rule.dport.is_some() || rule.sport.is_some() {
            return Err("ports need a protocol (-p)".to_string());
        }
        if rule.icmp_type.is_some() {
            return Err("-icmp-type needs -p icmp or -p icmpv6".to_string());
        }
    }
    if let (Some(t), Some(p)) = (&rule.icmp_type, &rule.proto) {
        if !macros::valid_icmp_type(t, p == "ipv6-icmp") {
            return Err(format!("unknown ICMP type `{t}`"));
        }
    }
    Ok(rule)
}

fn parse_verb(s: &str) -> Result<Verb, String> {
    if let Some(a) = Action::parse(s) {
        return Ok(Verb::Action(a));
    }
    let (name, rest) = s
        .split_once('(')
        .ok_or_else(|| format!("`{s}` is not an action or Macro(ACTION)"))?;
    let action = rest
        .strip_suffix(')')
        .and_then(Action::parse)
        .ok_or_else(|| format!("`{s}` is not Macro(ACCEPT|DROP|REJECT)"))?;
    let m = macros::lookup(name).ok_or_else(|| format!("unknown macro `{name}`"))?;
    Ok(Verb::Macro {
        name: m.name,
        action,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_all_sections() {
        let f = FwFile::parse(
            "cluster.fw",
            "[OPTIONS]\nenable: 1\npolicy_in: DROP\n\n[ALIASES]\nmgmt 192.0.2.0/24 # office\n\n\
             [IPSET management] # who may manage\nmgmt\n!192.0.2.9\n2001:db8::/64\n\n\
             [RULES]\nIN SSH(ACCEPT) -source +management -log info\n|OUT DROP -p udp -dport 53\n\
             GROUP web -i vmbr0\n\n[group web]\nIN ACCEPT -p tcp -dport 80,443,8000:8080\n",
        )
        .unwrap();
        assert_eq!(f.option("enable"), Some("1"));
        assert_eq!(f.policy("policy_in"), Some(Action::Drop));
        assert_eq!(f.aliases[0].name, "mgmt");
        assert_eq!(f.ipsets[0].entries.len(), 3);
        assert!(f.ipsets[0].entries[1].nomatch);
        assert_eq!(f.rules.len(), 3);
        assert_eq!(
            f.rules[0].verb,
            Verb::Macro {
                name: "SSH",
                action: Action::Accept
            }
        );
        assert_eq!(f.rules[0].log, Some(LogLevel::Info));
        assert!(!f.rules[1].enabled);
        assert_eq!(f.rules[2].verb, Verb::Group("web".into()));
        assert_eq!(f.rules[2].iface.as_deref(), Some("vmbr0"));
        assert_eq!(
            f.group("WEB").unwrap().rules[0].dport,
            Some(vec![(80, 80), (443, 443), (8000, 8080)])
        );
    }

    #[test]
    fn syntax_errors_carry_file_and_line() {
        let cases = [
            (
                "[RULES]\nIN ACCEPT -p tcp -dport 99999\n",
                2,
                "invalid port list",
            ),
            ("[RULES]\nIN FOO\n", 2, "`FOO` is not an action"),
            ("[RULES]\nIN NoSuch(ACCEPT)\n", 2, "unknown macro `NoSuch`"),
            ("[RULES]\nIN ACCEPT -dport 22\n", 2, "ports need a protocol"),
            (
                "[RULES]\nIN ACCEPT -p udp -icmp-type echo-request\n",
                2,
                "-icmp-type needs",
            ),
            (
                "[RULES]\nIN ACCEPT -p icmp -icmp-type bogus\n",
                2,
                "unknown ICMP type",
            ),
            ("[RULES]\nIN ACCEPT -x 1\n", 2, "unknown rule option"),
            ("[RULES]\nIN ACCEPT -log loud\n", 2, "unknown log level"),
            (
                "\n[OPTIONS]\nenable: yes\n",
                3,
                "enable: `yes` is not 0 or 1",
            ),
            (
                "[OPTIONS]\npolicy_in: ALLOW\n",
                2,
                "is not ACCEPT, DROP or REJECT",
            ),
            ("[ALIASES]\nx 10.0.0.300\n", 2, "is not an address"),
            ("[IPSET s]\n10.0.0.1 10.0.0.2\n", 2, "more than one word"),
            ("[FOO]\n", 1, "unknown section"),
            ("IN ACCEPT\n", 1, "outside of a section"),
            ("[group g]\nGROUP h\n", 2, "cannot refer to another group"),
            ("[RULES]\nGROUP g -p tcp\n", 2, "takes only -i"),
        ];
        for (text, line, msg) in cases {
            let e = FwFile::parse("host.fw", text).unwrap_err();
            assert_eq!(e.0[0].line, line, "{text:?}: {e}");
            assert_eq!(e.0[0].file, "host.fw");
            assert!(e.0[0].message.contains(msg), "{text:?}: {e}");
        }
    }

    #[test]
    fn protocols_and_ports() {
        assert_eq!(canonical_proto("TCP").as_deref(), Some("tcp"));
        assert_eq!(canonical_proto("icmpv6").as_deref(), Some("ipv6-icmp"));
        assert_eq!(canonical_proto("47").as_deref(), Some("47"));
        assert_eq!(canonical_proto("6").as_deref(), Some("tcp"));
        assert_eq!(canonical_proto("bogus"), None);
        assert_eq!(parse_ports("1:2,3"), Some(vec![(1, 2), (3, 3)]));
        assert_eq!(parse_ports("5:1"), None);
        assert_eq!(parse_ports(""), None);
    }
}
