//! The node's interfaces file as the `/nodes/{node}/network` endpoints see
//! it: Proxmox's interface objects read from the file, API parameters
//! turned into edits of the file, the file synthesised from the kernel
//! when there is none yet, and the diff between the live and the staged
//! file.
//!
//! The file and its staging (`interfaces.new`, rollback state) belong to
//! `netd::staged`; this module only translates.

use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;

use netd::interfaces::{Family, IfaceKind, InterfacesFile, Method, NetworkConfig};
use netd::reconcile::{Observed, ObservedKind};
use netd::staged::NetworkFiles;
use serde_json::{json, Map, Value};

/// Where the interfaces file is and how applies are made safe.
#[derive(Debug)]
pub struct NetworkSettings {
    /// The live file and its companions.
    pub files: NetworkFiles,
    /// The management bridge (`vmbr0`), which an apply must keep reachable.
    pub bridge: String,
    /// How long netd waits for a confirmation before it probes and
    /// possibly rolls back.
    pub confirm_timeout: Duration,
    /// Orders edits and applies.
    pub lock: tokio::sync::Mutex<()>,
}

impl NetworkSettings {
    /// Settings for the live file `interfaces`.
    pub fn new(interfaces: &Path, bridge: &str, confirm_timeout: Duration) -> NetworkSettings {
        NetworkSettings {
            files: NetworkFiles::new(interfaces),
            bridge: bridge.to_owned(),
            confirm_timeout,
            lock: tokio::sync::Mutex::new(()),
        }
    }
}

/// The route protocol of routes from a DHCP client (`RTPROT_DHCP`).
const RTPROT_DHCP: u8 = 16;

/// An interfaces file describing what the kernel has now for the
/// management bridge `bridge` (its ports, its addresses and default
/// route, or `dhcp` when the default route came from DHCP), with `lo`.
/// apid uses it as the live file while there is none, so that the first
/// apply keeps the bridge netd made at boot from the answer file: planned
/// against the same kernel, it gives no operations on the bridge.
pub fn synthesize(observed: &Observed, bridge: &str) -> String {
    let mut out = String::from("auto lo\niface lo inet loopback\n");
    let Some(link) = observed.links.iter().find(|l| l.name == bridge) else {
        return out;
    };
    let ObservedKind::Bridge {
        stp, forward_delay, ..
    } = &link.kind
    else {
        return out;
    };
    let ports: Vec<&str> = observed
        .links
        .iter()
        .filter(|l| l.controller.as_deref() == Some(bridge))
        .filter(|l| {
            !netd::reconcile::GUEST_PORT_PREFIXES
                .iter()
                .any(|p| l.name.starts_with(p))
        })
        .map(|l| l.name.as_str())
        .collect();
    for port in &ports {
        out.push_str(&format!("\niface {port} inet manual\n"));
    }
    let v4: Vec<_> = observed
        .addresses
        .iter()
        .filter(|a| a.link == bridge && a.net.addr().is_ipv4())
        .collect();
    let route = observed.routes.iter().find(|r| {
        r.dev.as_deref() == Some(bridge) && r.dst.prefix_len() == 0 && r.dst.addr().is_ipv4()
    });
    let dhcp = route.is_some_and(|r| r.protocol == RTPROT_DHCP);
    let method = if dhcp {
        "dhcp"
    } else if v4.is_empty() {
        "manual"
    } else {
        "static"
    };
    out.push_str(&format!("\nauto {bridge}\niface {bridge} inet {method}\n"));
    if !dhcp {
        for a in &v4 {
            out.push_str(&format!("\taddress {}\n", a.net));
        }
        if let Some(gw) = route.and_then(|r| r.gateway) {
            out.push_str(&format!("\tgateway {gw}\n"));
        }
    }
    let ports = if ports.is_empty() {
        "none".to_owned()
    } else {
        ports.join(" ")
    };
    out.push_str(&format!(
        "\tbridge-ports {ports}\n\tbridge-stp {}\n",
        if *stp { "on" } else { "off" }
    ));
    if let Some(fd) = forward_delay {
        out.push_str(&format!("\tbridge-fd {fd}\n"));
    }
    out
}

/// Proxmox's type word of an interface.
fn type_word(iface: &netd::interfaces::Iface) -> &'static str {
    match &iface.kind {
        IfaceKind::Bridge(_) => "bridge",
        IfaceKind::Bond(_) => "bond",
        IfaceKind::Vlan(_) => "vlan",
        IfaceKind::Plain if iface.name.contains(':') => "alias",
        IfaceKind::Plain => "eth",
    }
}

/// The value of option `key` (`-` or `_` spelling) in any stanza of
/// `name`, as written.
fn raw_option(file: &InterfacesFile, name: &str, key: &str) -> Option<String> {
    let mut current: Option<&str> = None;
    for line in file.lines() {
        match &line.kind {
            netd::interfaces::LineKind::Iface { name: n, .. } => current = Some(n),
            netd::interfaces::LineKind::Auto { .. } => current = None,
            netd::interfaces::LineKind::Option { key: k, value }
                if current == Some(name) && k.replace('_', "-") == key =>
            {
                return Some(value.clone());
            }
            _ => {}
        }
    }
    None
}

/// The interface objects of `GET /nodes/{node}/network`, in file order,
/// followed by the kernel's NICs that the file does not name. `lo` is left
/// out, as in Proxmox.
pub fn entries(file: &InterfacesFile, config: &NetworkConfig, observed: &Observed) -> Vec<Value> {
    let mut out = Vec::new();
    for (priority, iface) in config.ifaces.iter().enumerate() {
        if iface.name == "lo" {
            continue;
        }
        let link = observed.links.iter().find(|l| l.name == iface.name);
        let mut o = Map::new();
        o.insert("iface".into(), json!(iface.name));
        o.insert("type".into(), json!(type_word(iface)));
        o.insert("priority".into(), json!(priority + 1));
        let mut families = Vec::new();
        if let Some(m) = iface.inet {
            families.push("inet");
            o.insert("method".into(), json!(m.to_string()));
        }
        if let Some(m) = iface.inet6 {
            families.push("inet6");
            o.insert("method6".into(), json!(m.to_string()));
        }
        o.insert("families".into(), json!(families));
        if iface.auto {
            o.insert("autostart".into(), json!(1));
        }
        if link.is_some() {
            o.insert("exists".into(), json!(1));
        }
        if link.is_some_and(|l| l.up) {
            o.insert("active".into(), json!(1));
        }
        if let Some(net) = iface
            .addresses
            .iter()
            .map(|(n, _)| n)
            .find(|n| n.addr().is_ipv4())
        {
            o.insert("address".into(), json!(net.addr().to_string()));
            o.insert("netmask".into(), json!(net.netmask().to_string()));
            o.insert("cidr".into(), json!(net.to_string()));
        }
        if let Some(net) = iface
            .addresses
            .iter()
            .map(|(n, _)| n)
            .find(|n| n.addr().is_ipv6())
        {
            o.insert("address6".into(), json!(net.addr().to_string()));
            o.insert("netmask6".into(), json!(net.prefix_len().to_string()));
            o.insert("cidr6".into(), json!(net.to_string()));
        }
        if let Some((gw, _)) = iface.gateway {
            o.insert("gateway".into(), json!(gw.to_string()));
        }
        if let Some((gw, _)) = iface.gateway6 {
            o.insert("gateway6".into(), json!(gw.to_string()));
        }
        if let Some(mtu) = iface.mtu {
            o.insert("mtu".into(), json!(mtu));
        }
        match &iface.kind {
            IfaceKind::Bridge(b) => {
                let ports = if b.ports.is_empty() {
                    String::new()
                } else {
                    b.ports.join(" ")
                };
                o.insert("bridge_ports".into(), json!(ports));
                if b.vlan_aware {
                    o.insert("bridge_vlan_aware".into(), json!(1));
                    if let Some(vids) = raw_option(file, &iface.name, "bridge-vids") {
                        o.insert("bridge_vids".into(), json!(vids));
                    }
                }
            }
            IfaceKind::Bond(b) => {
                o.insert("slaves".into(), json!(b.slaves.join(" ")));
                o.insert("bond_mode".into(), json!(b.mode.to_string()));
                if let Some(p) = b.xmit_hash_policy {
                    o.insert("bond_xmit_hash_policy".into(), json!(p.to_string()));
                }
                if let Some(p) = raw_option(file, &iface.name, "bond-primary") {
                    o.insert("bond-primary".into(), json!(p));
                }
            }
            IfaceKind::Vlan(v) => {
                o.insert("vlan-id".into(), json!(v.id));
                o.insert("vlan-raw-device".into(), json!(v.raw_device));
            }
            IfaceKind::Plain => {}
        }
        if let Some(c) = file.comments(&iface.name, Family::Inet) {
            o.insert("comments".into(), json!(format!("{c}\n")));
        }
        if let Some(c) = file.comments(&iface.name, Family::Inet6) {
            o.insert("comments6".into(), json!(format!("{c}\n")));
        }
        out.push(Value::Object(o));
    }
    let mut priority = config.ifaces.len();
    for link in &observed.links {
        let physical = matches!(link.kind, ObservedKind::Other(None))
            && Path::new("/sys/class/net")
                .join(&link.name)
                .join("device")
                .exists();
        if !physical || config.get(&link.name).is_some() {
            continue;
        }
        priority += 1;
        let mut o = json!({
            "iface": link.name, "type": "eth", "method": "manual", "families": ["inet"],
            "exists": 1, "priority": priority,
        });
        if link.up {
            o["active"] = json!(1);
        }
        out.push(o);
    }
    out
}

/// The `type` filter of `GET /nodes/{node}/network`.
pub fn type_matches(filter: &str, entry: &Value) -> bool {
    let kind = entry["type"].as_str().unwrap_or_default();
    match filter {
        "any_bridge" | "any_local_bridge" => kind == "bridge" || kind == "OVSBridge",
        other => kind == other,
    }
}

/// The parameters of `POST`/`PUT /nodes/{node}/network[/{iface}]` that
/// become options of the inet stanza, with their file keys.
const INET_OPTIONS: &[(&str, &str)] = &[
    ("bridge_ports", "bridge-ports"),
    ("bridge_vlan_aware", "bridge-vlan-aware"),
    ("bridge_vids", "bridge-vids"),
    ("slaves", "bond-slaves"),
    ("bond_mode", "bond-mode"),
    ("bond_xmit_hash_policy", "bond-xmit-hash-policy"),
    ("bond-primary", "bond-primary"),
    ("vlan-id", "vlan-id"),
    ("vlan-raw-device", "vlan-raw-device"),
    ("mtu", "mtu"),
];

/// A wrong parameter: its name and why.
pub type ParamError = (String, String);

fn perr(name: &str, why: impl Into<String>) -> ParamError {
    (name.to_owned(), why.into())
}

/// The address of family `v6` given as `cidr[6]` or `address[6]` with
/// `netmask[6]`, normalized to `addr/prefix`.
fn address_param(
    params: &BTreeMap<String, String>,
    v6: bool,
) -> Result<Option<String>, ParamError> {
    let sfx = if v6 { "6" } else { "" };
    let (cidr_key, addr_key, mask_key) = (
        format!("cidr{sfx}"),
        format!("address{sfx}"),
        format!("netmask{sfx}"),
    );
    let text = if let Some(c) = params.get(&cidr_key) {
        c.clone()
    } else if let Some(a) = params.get(&addr_key) {
        let mask = params
            .get(&mask_key)
            .ok_or_else(|| perr(&mask_key, "address given without a netmask"))?;
        let prefix = match mask.parse::<u8>() {
            Ok(p) => p,
            Err(_) => match mask.parse::<std::net::Ipv4Addr>() {
                Ok(m) if !v6 => ipnet::ipv4_mask_to_prefix(m)
                    .map_err(|_| perr(&mask_key, format!("invalid netmask '{mask}'")))?,
                _ => return Err(perr(&mask_key, format!("invalid netmask '{mask}'"))),
            },
        };
        format!("{a}/{prefix}")
    } else {
        return Ok(None);
    };
    let net: ipnet::IpNet = text
        .parse()
        .map_err(|_| perr(&cidr_key, format!("invalid address '{text}'")))?;
    if net.addr().is_ipv6() != v6 {
        return Err(perr(
            &cidr_key,
            format!("'{text}' is of the wrong address family"),
        ));
    }
    Ok(Some(net.to_string()))
}

/// The file key(s) a `delete` list entry removes, with its family.
fn deleted_option(key: &str) -> Option<(Family, &'static str)> {
    Some(match key {
        "cidr" | "address" | "netmask" => (Family::Inet, "address"),
        "gateway" => (Family::Inet, "gateway"),
        "cidr6" | "address6" | "netmask6" => (Family::Inet6, "address"),
        "gateway6" => (Family::Inet6, "gateway"),
        _ => {
            let (_, file_key) = INET_OPTIONS.iter().find(|(k, _)| *k == key)?;
            (Family::Inet, file_key)
        }
    })
}

/// Applies `params` (of a create when `create`, else of an update) to
/// interface `name` in `file`. Fails, naming the parameter, on what
/// cannot be expressed; the result is validated by staging it.
pub fn edit_iface(
    file: &mut InterfacesFile,
    name: &str,
    params: &BTreeMap<String, String>,
    create: bool,
) -> Result<(), ParamError> {
    let kind = params.get("type").map(String::as_str).unwrap_or("eth");
    if kind.starts_with("OVS") || kind == "fabric" || kind == "vnet" || kind == "unknown" {
        return Err(perr(
            "type",
            format!("interface type '{kind}' is not supported by Oxbow"),
        ));
    }
    let exists = file
        .lines()
        .iter()
        .any(|l| matches!(&l.kind, netd::interfaces::LineKind::Iface { name: n, .. } if n == name));
    if create && exists {
        return Err(perr("iface", format!("interface '{name}' already exists")));
    }
    if !create && !exists {
        return Err(perr("iface", format!("interface '{name}' does not exist")));
    }
    let v4 = address_param(params, false)?;
    let v6 = address_param(params, true)?;
    if create {
        let mut options: Vec<(&str, &str)> = Vec::new();
        match kind {
            "bridge" => {
                if !params.contains_key("bridge_ports") {
                    options.push(("bridge-ports", "none"));
                }
                options.push(("bridge-stp", "off"));
                options.push(("bridge-fd", "0"));
            }
            "bond" => {
                if !params.contains_key("slaves") {
                    options.push(("bond-slaves", "none"));
                }
                options.push(("bond-miimon", "100"));
                if !params.contains_key("bond_mode") {
                    options.push(("bond-mode", "balance-rr"));
                }
            }
            _ => {}
        }
        let method = if v4.is_some() {
            Method::Static
        } else {
            Method::Manual
        };
        let auto = params.get("autostart").map(String::as_str) != Some("0");
        file.add_iface(name, Family::Inet, method, auto, &options)
            .map_err(|e| perr("iface", e.to_string()))?;
    } else if let Some(a) = params.get("autostart") {
        file.set_auto(name, a == "1");
    }
    if let Some(deletes) = params.get("delete") {
        for key in deletes.split([',', ';', ' ']).filter(|k| !k.is_empty()) {
            match key {
                "comments" => {
                    file.set_comments(name, Family::Inet, None);
                }
                "comments6" => {
                    file.set_comments(name, Family::Inet6, None);
                }
                "autostart" => file.set_auto(name, false),
                _ => {
                    let (family, file_key) = deleted_option(key)
                        .ok_or_else(|| perr("delete", format!("cannot delete '{key}'")))?;
                    file.set_option(name, family, file_key, None);
                    if file_key == "address" {
                        file.set_method(name, family, Method::Manual);
                    }
                }
            }
        }
    }
    for (param, file_key) in INET_OPTIONS {
        let Some(value) = params.get(*param) else {
            continue;
        };
        let value = match *param {
            "bridge_ports" | "slaves" if value.trim().is_empty() => "none".to_owned(),
            "bridge_ports" | "slaves" => value
                .split([',', ';', ' '])
                .filter(|s| !s.is_empty())
                .collect::<Vec<_>>()
                .join(" "),
            "bridge_vlan_aware" => (if value == "1" { "yes" } else { "no" }).to_owned(),
            _ => value.clone(),
        };
        file.set_option(name, Family::Inet, file_key, Some(&value));
    }
    if let Some(addr) = &v4 {
        file.set_method(name, Family::Inet, Method::Static);
        file.set_option(name, Family::Inet, "address", Some(addr));
        file.set_option(name, Family::Inet, "netmask", None);
    }
    if let Some(gw) = params.get("gateway") {
        file.set_option(name, Family::Inet, "gateway", Some(gw));
    }
    if v6.is_some() || params.contains_key("gateway6") || params.contains_key("comments6") {
        let has6 = file.lines().iter().any(|l| {
            matches!(&l.kind, netd::interfaces::LineKind::Iface { name: n, family: Family::Inet6, .. } if n == name)
        });
        if !has6 {
            file.add_iface(name, Family::Inet6, Method::Static, false, &[])
                .map_err(|e| perr("iface", e.to_string()))?;
        }
        if let Some(addr) = &v6 {
            file.set_option(name, Family::Inet6, "address", Some(addr));
        }
        if let Some(gw) = params.get("gateway6") {
            file.set_option(name, Family::Inet6, "gateway", Some(gw));
        }
    }
    if let Some(c) = params.get("comments") {
        file.set_comments(name, Family::Inet, Some(c));
    }
    if let Some(c) = params.get("comments6") {
        file.set_comments(name, Family::Inet6, Some(c));
    }
    Ok(())
}

/// A unified diff (`diff -u`) from `old` to `new`, with three lines of
/// context, or an empty string when they are equal.
pub fn unified_diff(old_name: &str, new_name: &str, old: &str, new: &str) -> String {
    if old == new {
        return String::new();
    }
    let a: Vec<&str> = old.lines().collect();
    let b: Vec<&str> = new.lines().collect();
    // Longest common subsequence table, from the ends.
    let mut lcs = vec![vec![0u32; b.len() + 1]; a.len() + 1];
    for i in (0..a.len()).rev() {
        for j in (0..b.len()).rev() {
            lcs[i][j] = if a[i] == b[j] {
                lcs[i + 1][j + 1] + 1
            } else {
                lcs[i + 1][j].max(lcs[i][j + 1])
            };
        }
    }
    // The edit script: (tag, line index in a, line index in b).
    let mut script: Vec<(char, usize, usize)> = Vec::new();
    let (mut i, mut j) = (0, 0);
    while i < a.len() || j < b.len() {
        if i < a.len() && j < b.len() && a[i] == b[j] {
            script.push((' ', i, j));
            i += 1;
            j += 1;
        } else if i < a.len() && (j == b.len() || lcs[i + 1][j] >= lcs[i][j + 1]) {
            script.push(('-', i, j));
            i += 1;
        } else {
            script.push(('+', i, j));
            j += 1;
        }
    }
    const CONTEXT: usize = 3;
    let mut out = format!("--- {old_name}\n+++ {new_name}\n");
    let mut k = 0;
    while k < script.len() {
        if script[k].0 == ' ' {
            k += 1;
            continue;
        }
        let start = k.saturating_sub(CONTEXT);
        // Extend while changes are at most 2*CONTEXT lines apart.
        let mut end = k;
        let mut last_change = k;
        while end < script.len() {
            if script[end].0 != ' ' {
                last_change = end;
            } else if end - last_change > 2 * CONTEXT {
                break;
            }
            end += 1;
        }
        let end = (last_change + CONTEXT + 1).min(script.len());
        let hunk = &script[start..end];
        let old_len = hunk.iter().filter(|e| e.0 != '+').count();
        let new_len = hunk.iter().filter(|e| e.0 != '-').count();
        let old_start = hunk[0].1 + usize::from(old_len > 0);
        let new_start = hunk[0].2 + usize::from(new_len > 0);
        out.push_str(&format!(
            "@@ -{old_start},{old_len} +{new_start},{new_len} @@\n"
        ));
        for (tag, ai, bj) in hunk {
            let text = if *tag == '+' { b[*bj] } else { a[*ai] };
            out.push(*tag);
            out.push_str(text);
            out.push('\n');
        }
        k = end;
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn params(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect()
    }

    #[test]
    fn create_update_and_delete_options() {
        let mut file = InterfacesFile::parse("auto lo\niface lo inet loopback\n").unwrap();
        edit_iface(
            &mut file,
            "vmbr1",
            &params(&[
                ("type", "bridge"),
                ("cidr", "198.51.100.1/24"),
                ("bridge_vlan_aware", "1"),
                ("comments", "lab"),
            ]),
            true,
        )
        .unwrap();
        assert_eq!(
            file.to_string(),
            "auto lo\niface lo inet loopback\n\nauto vmbr1\niface vmbr1 inet static\n\
             \tbridge-ports none\n\tbridge-stp off\n\tbridge-fd 0\n\tbridge-vlan-aware yes\n\
             \taddress 198.51.100.1/24\n#lab\n"
        );
        let err = edit_iface(&mut file, "vmbr1", &params(&[("type", "bridge")]), true).unwrap_err();
        assert_eq!(err.0, "iface");
        edit_iface(
            &mut file,
            "vmbr1",
            &params(&[
                ("type", "bridge"),
                ("address", "198.51.100.2"),
                ("netmask", "255.255.255.0"),
                ("delete", "comments,bridge_vlan_aware"),
                ("mtu", "1400"),
            ]),
            false,
        )
        .unwrap();
        let config = file.config().unwrap();
        let iface = config.get("vmbr1").unwrap();
        assert_eq!(iface.addresses[0].0.to_string(), "198.51.100.2/24");
        assert_eq!(iface.mtu, Some(1400));
        assert_eq!(file.comments("vmbr1", Family::Inet), None);
        let entries = entries(&file, &config, &Observed::default());
        assert_eq!(entries[0]["iface"], "vmbr1");
        assert_eq!(entries[0]["type"], "bridge");
        assert_eq!(entries[0]["netmask"], "255.255.255.0");
        assert_eq!(entries[0]["autostart"], 1);
        assert!(entries[0].get("bridge_vlan_aware").is_none());
        let err = edit_iface(&mut file, "vmbr1", &params(&[("type", "OVSBridge")]), false);
        assert_eq!(err.unwrap_err().0, "type");
        let err = edit_iface(
            &mut file,
            "vmbr1",
            &params(&[("address", "10.0.0.1")]),
            false,
        );
        assert_eq!(err.unwrap_err().0, "netmask");
    }

    #[test]
    fn diffs_are_unified() {
        assert_eq!(unified_diff("a", "b", "x\n", "x\n"), "");
        let old = "1\n2\n3\n4\n5\n6\n7\n8\n9\n";
        let new = "1\n2\n3\n4\nfive\n6\n7\n8\n9\nten\n";
        assert_eq!(
            unified_diff("interfaces", "interfaces.new", old, new),
            "--- interfaces\n+++ interfaces.new\n@@ -2,8 +2,9 @@\n 2\n 3\n 4\n-5\n+five\n 6\n 7\n 8\n 9\n+ten\n"
        );
        assert_eq!(
            unified_diff("a", "b", "", "x\n"),
            "--- a\n+++ b\n@@ -0,0 +1,1 @@\n+x\n"
        );
    }
}
