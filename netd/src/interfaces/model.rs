//! The typed view of an interfaces file.

use std::collections::BTreeMap;
use std::fmt;
use std::net::IpAddr;
use std::str::FromStr;

use ipnet::IpNet;

use super::{valid_ifname, ErrorKind, InterfacesError, InterfacesErrors, InterfacesFile};
use super::{Line, LineKind};

/// An address family of an `iface` stanza.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Family {
    /// IPv4.
    Inet,
    /// IPv6.
    Inet6,
}

impl FromStr for Family {
    type Err = ();
    fn from_str(s: &str) -> Result<Family, ()> {
        match s {
            "inet" => Ok(Family::Inet),
            "inet6" => Ok(Family::Inet6),
            _ => Err(()),
        }
    }
}

impl fmt::Display for Family {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Family::Inet => "inet",
            Family::Inet6 => "inet6",
        })
    }
}

/// How a stanza configures its addresses.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Method {
    /// The addresses written in the file.
    Static,
    /// No addresses from this stanza.
    Manual,
    /// A DHCP client (netd's own, for IPv4).
    Dhcp,
    /// The loopback interface.
    Loopback,
}

impl FromStr for Method {
    type Err = ();
    fn from_str(s: &str) -> Result<Method, ()> {
        match s {
            "static" => Ok(Method::Static),
            "manual" => Ok(Method::Manual),
            "dhcp" => Ok(Method::Dhcp),
            "loopback" => Ok(Method::Loopback),
            _ => Err(()),
        }
    }
}

impl fmt::Display for Method {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Method::Static => "static",
            Method::Manual => "manual",
            Method::Dhcp => "dhcp",
            Method::Loopback => "loopback",
        })
    }
}

/// A bonding mode (`bond-mode`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum BondMode {
    /// balance-rr (0).
    BalanceRr,
    /// active-backup (1).
    ActiveBackup,
    /// balance-xor (2).
    BalanceXor,
    /// broadcast (3).
    Broadcast,
    /// 802.3ad, LACP (4).
    Lacp,
    /// balance-tlb (5).
    BalanceTlb,
    /// balance-alb (6).
    BalanceAlb,
}

impl BondMode {
    const ALL: [(&'static str, BondMode); 7] = [
        ("balance-rr", BondMode::BalanceRr),
        ("active-backup", BondMode::ActiveBackup),
        ("balance-xor", BondMode::BalanceXor),
        ("broadcast", BondMode::Broadcast),
        ("802.3ad", BondMode::Lacp),
        ("balance-tlb", BondMode::BalanceTlb),
        ("balance-alb", BondMode::BalanceAlb),
    ];

    /// The kernel's number for the mode.
    pub fn number(self) -> u8 {
        Self::ALL.iter().position(|(_, m)| *m == self).unwrap_or(0) as u8
    }
}

impl FromStr for BondMode {
    type Err = ();
    fn from_str(s: &str) -> Result<BondMode, ()> {
        if let Ok(n) = s.parse::<usize>() {
            return Self::ALL.get(n).map(|(_, m)| *m).ok_or(());
        }
        Self::ALL
            .iter()
            .find(|(n, _)| *n == s)
            .map(|(_, m)| *m)
            .ok_or(())
    }
}

impl fmt::Display for BondMode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(Self::ALL[self.number() as usize].0)
    }
}

/// A bond's transmit hash policy (`bond-xmit-hash-policy`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum XmitHashPolicy {
    /// layer2.
    Layer2,
    /// layer3+4.
    Layer34,
    /// layer2+3.
    Layer23,
    /// encap2+3.
    Encap23,
    /// encap3+4.
    Encap34,
    /// vlan+srcmac.
    VlanSrcMac,
}

impl XmitHashPolicy {
    const ALL: [(&'static str, XmitHashPolicy); 6] = [
        ("layer2", XmitHashPolicy::Layer2),
        ("layer3+4", XmitHashPolicy::Layer34),
        ("layer2+3", XmitHashPolicy::Layer23),
        ("encap2+3", XmitHashPolicy::Encap23),
        ("encap3+4", XmitHashPolicy::Encap34),
        ("vlan+srcmac", XmitHashPolicy::VlanSrcMac),
    ];

    /// The kernel's number for the policy.
    pub fn number(self) -> u8 {
        Self::ALL.iter().position(|(_, m)| *m == self).unwrap_or(0) as u8
    }
}

impl FromStr for XmitHashPolicy {
    type Err = ();
    fn from_str(s: &str) -> Result<XmitHashPolicy, ()> {
        Self::ALL
            .iter()
            .find(|(n, _)| *n == s)
            .map(|(_, m)| *m)
            .ok_or(())
    }
}

impl fmt::Display for XmitHashPolicy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(Self::ALL[self.number() as usize].0)
    }
}

/// Bridge settings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BridgeOpts {
    /// `bridge-ports` (`none` gives none).
    pub ports: Vec<String>,
    /// `bridge-stp`, off by default.
    pub stp: bool,
    /// `bridge-fd`, the forward delay in seconds (kernel default 15 when
    /// not given).
    pub fd: Option<u32>,
    /// `bridge-vlan-aware`.
    pub vlan_aware: bool,
    /// `bridge-vids` as inclusive ranges (for a VLAN-aware bridge; Proxmox
    /// defaults to 2-4094).
    pub vids: Vec<(u16, u16)>,
}

/// Bond settings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BondOpts {
    /// `bond-slaves` (`none` gives none).
    pub slaves: Vec<String>,
    /// `bond-mode`, balance-rr by default.
    pub mode: BondMode,
    /// `bond-miimon` in milliseconds.
    pub miimon: Option<u32>,
    /// `bond-xmit-hash-policy`.
    pub xmit_hash_policy: Option<XmitHashPolicy>,
}

/// 802.1Q VLAN settings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VlanOpts {
    /// The link the VLAN sits on.
    pub raw_device: String,
    /// The VLAN ID, 1 to 4094.
    pub id: u16,
}

/// What sort of link an interface is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum IfaceKind {
    /// A link netd does not create (a NIC, `lo`).
    Plain,
    /// A Linux bridge.
    Bridge(BridgeOpts),
    /// A bond.
    Bond(BondOpts),
    /// An 802.1Q VLAN.
    Vlan(VlanOpts),
}

impl IfaceKind {
    /// A word for messages.
    pub fn word(&self) -> &'static str {
        match self {
            IfaceKind::Plain => "interface",
            IfaceKind::Bridge(_) => "bridge",
            IfaceKind::Bond(_) => "bond",
            IfaceKind::Vlan(_) => "VLAN",
        }
    }
}

/// One interface, with both of its stanzas (inet and inet6) merged.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Iface {
    /// Interface name.
    pub name: String,
    /// The line of its first `iface` header.
    pub line: usize,
    /// Named by an `auto` line.
    pub auto: bool,
    /// The IPv4 method, if there is an inet stanza.
    pub inet: Option<Method>,
    /// The IPv6 method, if there is an inet6 stanza.
    pub inet6: Option<Method>,
    /// Static addresses with their prefix, each with its line.
    pub addresses: Vec<(IpNet, usize)>,
    /// The IPv4 default gateway, with its line.
    pub gateway: Option<(IpAddr, usize)>,
    /// The IPv6 default gateway, with its line.
    pub gateway6: Option<(IpAddr, usize)>,
    /// `mtu`.
    pub mtu: Option<u32>,
    /// What sort of link it is.
    pub kind: IfaceKind,
    /// The line of each option, by its canonical (`-`) name.
    pub option_lines: BTreeMap<String, usize>,
}

impl Iface {
    /// The line of option `key` (canonical name), or the header's line.
    pub fn line_of(&self, key: &str) -> usize {
        self.option_lines.get(key).copied().unwrap_or(self.line)
    }

    /// The links this one is built on: bridge ports, bond slaves, or the
    /// VLAN's raw device.
    pub fn lowers(&self) -> Vec<&str> {
        match &self.kind {
            IfaceKind::Plain => vec![],
            IfaceKind::Bridge(b) => b.ports.iter().map(String::as_str).collect(),
            IfaceKind::Bond(b) => b.slaves.iter().map(String::as_str).collect(),
            IfaceKind::Vlan(v) => vec![v.raw_device.as_str()],
        }
    }
}

/// The interfaces of a file, in the order of their first stanza.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct NetworkConfig {
    /// The interfaces.
    pub ifaces: Vec<Iface>,
}

impl NetworkConfig {
    /// The interface called `name`.
    pub fn get(&self, name: &str) -> Option<&Iface> {
        self.ifaces.iter().find(|i| i.name == name)
    }
}

/// Options collected for one interface before they are interpreted.
struct Raw<'a> {
    name: String,
    line: usize,
    inet: Option<(Method, usize)>,
    inet6: Option<(Method, usize)>,
    /// (canonical key, value, line, family of the stanza)
    options: Vec<(String, &'a str, usize, Family)>,
}

fn canonical(key: &str) -> String {
    key.replace('_', "-")
}

fn bad(line: usize, key: &str, value: &str, reason: impl Into<String>) -> InterfacesError {
    InterfacesError::new(
        line,
        ErrorKind::BadValue {
            key: key.to_string(),
            value: value.to_string(),
            reason: reason.into(),
        },
    )
}

fn parse_bool(line: usize, key: &str, v: &str) -> Result<bool, InterfacesError> {
    match v {
        "yes" | "on" | "1" | "true" => Ok(true),
        "no" | "off" | "0" | "false" => Ok(false),
        _ => Err(bad(line, key, v, "want yes or no")),
    }
}

fn parse_u32(line: usize, key: &str, v: &str, min: u32, max: u32) -> Result<u32, InterfacesError> {
    match v.parse::<u32>() {
        Ok(n) if (min..=max).contains(&n) => Ok(n),
        _ => Err(bad(
            line,
            key,
            v,
            format!("want a number from {min} to {max}"),
        )),
    }
}

fn parse_names(line: usize, key: &str, v: &str) -> Result<Vec<String>, InterfacesError> {
    let names: Vec<String> = v
        .split_ascii_whitespace()
        .filter(|w| *w != "none")
        .map(str::to_string)
        .collect();
    if let Some(n) = names.iter().find(|n| !valid_ifname(n)) {
        return Err(bad(line, key, v, format!("`{n}` is not an interface name")));
    }
    Ok(names)
}

fn parse_vid(s: &str) -> Option<u16> {
    s.parse::<u16>().ok().filter(|n| (1..=4094).contains(n))
}

fn parse_vids(line: usize, key: &str, v: &str) -> Result<Vec<(u16, u16)>, InterfacesError> {
    let mut out = Vec::new();
    for w in v.split_ascii_whitespace() {
        let range = match w.split_once('-') {
            Some((a, b)) => parse_vid(a).zip(parse_vid(b)).filter(|(a, b)| a <= b),
            None => parse_vid(w).map(|n| (n, n)),
        };
        out.push(range.ok_or_else(|| {
            bad(
                line,
                key,
                v,
                format!("`{w}` is not a VLAN ID or range within 1-4094"),
            )
        })?);
    }
    if out.is_empty() {
        return Err(bad(line, key, v, "no VLAN IDs"));
    }
    Ok(out)
}

/// A netmask in dotted or prefix-length form.
fn parse_netmask(v: &str, v6: bool) -> Option<u8> {
    if let Ok(n) = v.parse::<u8>() {
        return (n <= if v6 { 128 } else { 32 }).then_some(n);
    }
    let m: std::net::Ipv4Addr = v.parse().ok()?;
    let bits = u32::from(m);
    let prefix = bits.leading_ones();
    (bits.checked_shl(prefix).unwrap_or(0) == 0).then_some(prefix as u8)
}

/// The VLAN an interface name like `eno1.50` stands for.
fn dotted_vlan(name: &str) -> Option<(&str, u16)> {
    let (raw, id) = name.rsplit_once('.')?;
    (!raw.is_empty()).then_some(())?;
    Some((raw, parse_vid(id)?))
}

/// Reads the typed view of `file`.
pub(super) fn build(file: &InterfacesFile) -> Result<NetworkConfig, InterfacesErrors> {
    let mut errors = Vec::new();
    let mut raws: Vec<Raw<'_>> = Vec::new();
    let mut auto: Vec<&str> = Vec::new();
    let mut current: Option<(usize, Family)> = None;
    for (i, Line { kind, .. }) in file.lines().iter().enumerate() {
        let number = i + 1;
        match kind {
            LineKind::Auto { keyword, names } => {
                current = None;
                if keyword == "auto" || keyword == "allow-auto" {
                    auto.extend(names.iter().map(String::as_str));
                }
            }
            LineKind::Source => current = None,
            LineKind::Iface {
                name,
                family,
                method,
            } => {
                let idx = match raws.iter().position(|r| &r.name == name) {
                    Some(idx) => idx,
                    None => {
                        raws.push(Raw {
                            name: name.clone(),
                            line: number,
                            inet: None,
                            inet6: None,
                            options: Vec::new(),
                        });
                        raws.len() - 1
                    }
                };
                let slot = match family {
                    Family::Inet => &mut raws[idx].inet,
                    Family::Inet6 => &mut raws[idx].inet6,
                };
                if let Some((_, first)) = slot {
                    errors.push(InterfacesError::new(
                        number,
                        ErrorKind::DuplicateIface {
                            name: name.clone(),
                            family: *family,
                            first: *first,
                        },
                    ));
                } else {
                    *slot = Some((*method, number));
                }
                current = Some((idx, *family));
            }
            LineKind::Option { key, value } => {
                if let Some((idx, family)) = current {
                    raws[idx]
                        .options
                        .push((canonical(key), value.as_str(), number, family));
                }
            }
            LineKind::Blank | LineKind::Comment => {}
        }
    }

    let mut ifaces = Vec::new();
    for raw in raws {
        match interpret(raw, &auto) {
            Ok(i) => ifaces.push(i),
            Err(mut e) => errors.append(&mut e),
        }
    }
    if errors.is_empty() {
        Ok(NetworkConfig { ifaces })
    } else {
        errors.sort_by_key(|e| e.line);
        Err(InterfacesErrors(errors))
    }
}

fn interpret(raw: Raw<'_>, auto: &[&str]) -> Result<Iface, Vec<InterfacesError>> {
    let mut errors = Vec::new();
    let mut iface = Iface {
        auto: auto.contains(&raw.name.as_str()),
        name: raw.name,
        line: raw.line,
        inet: raw.inet.map(|(m, _)| m),
        inet6: raw.inet6.map(|(m, _)| m),
        addresses: Vec::new(),
        gateway: None,
        gateway6: None,
        mtu: None,
        kind: IfaceKind::Plain,
        option_lines: BTreeMap::new(),
    };
    let mut bridge: Option<BridgeOpts> = None;
    let mut bond: Option<BondOpts> = None;
    let mut vlan_raw: Option<(String, usize)> = None;
    let mut vlan_id: Option<(u16, usize)> = None;
    let mut netmasks: Vec<(&str, usize, Family)> = Vec::new();
    let mut kinds: Vec<(&'static str, usize)> = Vec::new();

    let new_bridge = || BridgeOpts {
        ports: vec![],
        stp: false,
        fd: None,
        vlan_aware: false,
        vids: vec![],
    };
    let new_bond = || BondOpts {
        slaves: vec![],
        mode: BondMode::BalanceRr,
        miimon: None,
        xmit_hash_policy: None,
    };

    for (key, value, line, family) in raw.options {
        iface.option_lines.entry(key.clone()).or_insert(line);
        let k = key.as_str();
        match k {
            "bridge-ports" | "bridge-stp" | "bridge-fd" | "bridge-vlan-aware" | "bridge-vids" => {
                kinds.push(("bridge", line))
            }
            "bond-slaves" | "bond-mode" | "bond-miimon" | "bond-xmit-hash-policy" => {
                kinds.push(("bond", line))
            }
            "vlan-raw-device" | "vlan-id" => kinds.push(("VLAN", line)),
            _ => {}
        }
        let r: Result<(), InterfacesError> = (|| {
            match k {
                "address" => {
                    let net = match value.parse::<IpNet>() {
                        Ok(n) => n,
                        Err(_) => {
                            let ip: IpAddr = value.parse().map_err(|_| {
                                bad(
                                    line,
                                    k,
                                    value,
                                    "want an address with a prefix, e.g. 192.0.2.10/24",
                                )
                            })?;
                            IpNet::new(ip, if ip.is_ipv4() { 32 } else { 128 })
                                .expect("full-length prefix is valid")
                        }
                    };
                    iface.addresses.push((net, line));
                }
                "netmask" => netmasks.push((value, line, family)),
                "gateway" => {
                    let gw: IpAddr = value
                        .parse()
                        .map_err(|_| bad(line, k, value, "want an IP address"))?;
                    let slot = if gw.is_ipv4() {
                        &mut iface.gateway
                    } else {
                        &mut iface.gateway6
                    };
                    if slot.is_some() {
                        return Err(bad(line, k, value, "a second gateway of the same family"));
                    }
                    *slot = Some((gw, line));
                }
                "mtu" => iface.mtu = Some(parse_u32(line, k, value, 68, 65535)?),
                "bridge-ports" => {
                    bridge.get_or_insert_with(new_bridge).ports = parse_names(line, k, value)?;
                }
                "bridge-stp" => {
                    bridge.get_or_insert_with(new_bridge).stp = parse_bool(line, k, value)?;
                }
                "bridge-fd" => {
                    bridge.get_or_insert_with(new_bridge).fd =
                        Some(parse_u32(line, k, value, 0, 30)?);
                }
                "bridge-vlan-aware" => {
                    bridge.get_or_insert_with(new_bridge).vlan_aware = parse_bool(line, k, value)?;
                }
                "bridge-vids" => {
                    bridge.get_or_insert_with(new_bridge).vids = parse_vids(line, k, value)?;
                }
                "bond-slaves" => {
                    bond.get_or_insert_with(new_bond).slaves = parse_names(line, k, value)?;
                }
                "bond-mode" => {
                    bond.get_or_insert_with(new_bond).mode = value.parse().map_err(|()| {
                        bad(line, k, value, "unknown mode (balance-rr, active-backup, balance-xor, broadcast, 802.3ad, balance-tlb, balance-alb)")
                    })?;
                }
                "bond-miimon" => {
                    bond.get_or_insert_with(new_bond).miimon =
                        Some(parse_u32(line, k, value, 0, u32::MAX)?);
                }
                "bond-xmit-hash-policy" => {
                    bond.get_or_insert_with(new_bond).xmit_hash_policy =
                        Some(value.parse().map_err(|()| {
                            bad(line, k, value, "unknown policy (layer2, layer2+3, layer3+4, encap2+3, encap3+4, vlan+srcmac)")
                        })?);
                }
                "vlan-raw-device" => {
                    let names = parse_names(line, k, value)?;
                    let [dev] = names.as_slice() else {
                        return Err(bad(line, k, value, "want one interface"));
                    };
                    vlan_raw = Some((dev.clone(), line));
                }
                "vlan-id" => {
                    let id = parse_vid(value)
                        .ok_or_else(|| bad(line, k, value, "want a VLAN ID from 1 to 4094"))?;
                    vlan_id = Some((id, line));
                }
                // Options netd does not act on (post-up scripts, DNS,
                // comments, OVS, ...) are kept in the file and ignored.
                _ => {}
            }
            Ok(())
        })();
        if let Err(e) = r {
            errors.push(e);
        }
    }

    // Old-style `address A` + `netmask M`.
    for (mask, line, family) in netmasks.iter().filter(|(m, _, _)| !m.is_empty()) {
        let v6 = *family == Family::Inet6;
        let Some(prefix) = parse_netmask(mask, v6) else {
            errors.push(bad(
                *line,
                "netmask",
                mask,
                "want a netmask or a prefix length",
            ));
            continue;
        };
        if let Some((a, _)) = iface
            .addresses
            .iter_mut()
            .find(|(a, _)| a.addr().is_ipv6() == v6 && a.prefix_len() == if v6 { 128 } else { 32 })
        {
            match IpNet::new(a.addr(), prefix) {
                Ok(n) => *a = n,
                Err(_) => errors.push(bad(*line, "netmask", mask, "too long for the address")),
            }
        }
    }

    let dotted = dotted_vlan(&iface.name);
    if dotted.is_some() {
        kinds.push(("VLAN", iface.line));
    }
    let mut distinct: Vec<(&'static str, usize)> = Vec::new();
    for k in kinds {
        if !distinct.iter().any(|(d, _)| *d == k.0) {
            distinct.push(k);
        }
    }
    if distinct.len() > 1 {
        errors.push(InterfacesError::new(
            distinct[1].1,
            ErrorKind::ConflictingKind {
                name: iface.name.clone(),
                a: distinct[0].0,
                b: distinct[1].0,
            },
        ));
    }
    iface.kind = match distinct.first().map(|(k, _)| *k) {
        Some("bridge") => IfaceKind::Bridge(bridge.unwrap_or_else(new_bridge)),
        Some("bond") => IfaceKind::Bond(bond.unwrap_or_else(new_bond)),
        Some("VLAN") => {
            let (raw_device, id) = match (dotted, vlan_raw, vlan_id) {
                (Some((raw, id)), r, i) => {
                    if let Some((r, line)) = r.filter(|(r, _)| r != raw) {
                        errors.push(bad(
                            line,
                            "vlan-raw-device",
                            &r,
                            format!("the name {} says {raw}", iface.name),
                        ));
                    }
                    if let Some((i, line)) = i.filter(|(i, _)| *i != id) {
                        errors.push(bad(
                            line,
                            "vlan-id",
                            &i.to_string(),
                            format!("the name {} says {id}", iface.name),
                        ));
                    }
                    (raw.to_string(), id)
                }
                (None, Some((raw, _)), Some((id, _))) => (raw, id),
                (None, None, _) => {
                    if !iface.option_lines.contains_key("vlan-raw-device") {
                        errors.push(InterfacesError::syntax(
                            iface.line,
                            format!("VLAN {} has no vlan-raw-device", iface.name),
                        ));
                    }
                    (String::new(), 1)
                }
                (None, Some(_), None) => {
                    if !iface.option_lines.contains_key("vlan-id") {
                        errors.push(InterfacesError::syntax(
                            iface.line,
                            format!("VLAN {} has no vlan-id", iface.name),
                        ));
                    }
                    (String::new(), 1)
                }
            };
            IfaceKind::Vlan(VlanOpts { raw_device, id })
        }
        _ => IfaceKind::Plain,
    };

    if errors.is_empty() {
        Ok(iface)
    } else {
        Err(errors)
    }
}
