//! Checks a [`NetworkConfig`] as a whole: ports that exist, are used once
//! and form no loop, and addresses and gateways that are not given twice.

use std::collections::{BTreeMap, HashMap};
use std::net::IpAddr;

use super::{ErrorKind, Family, IfaceKind, InterfacesError, InterfacesErrors, NetworkConfig};

/// Checks `config` against itself and against the links the kernel has
/// (`existing`, by name). Every problem is reported, in line order.
pub fn validate(config: &NetworkConfig, existing: &[String]) -> Result<(), InterfacesErrors> {
    let mut errors = Vec::new();
    let declared: HashMap<&str, &super::Iface> =
        config.ifaces.iter().map(|i| (i.name.as_str(), i)).collect();
    let known = |n: &str| declared.contains_key(n) || existing.iter().any(|e| e == n);

    // Ports and slaves: known, not bridges, used once.
    let mut used: BTreeMap<&str, &str> = BTreeMap::new();
    for iface in &config.ifaces {
        let (key, ports): (&str, &[String]) = match &iface.kind {
            IfaceKind::Bridge(b) => ("bridge-ports", &b.ports),
            IfaceKind::Bond(b) => ("bond-slaves", &b.slaves),
            IfaceKind::Vlan(v) => {
                if !known(&v.raw_device) {
                    let key = if iface.option_lines.contains_key("vlan-raw-device") {
                        "vlan-raw-device"
                    } else {
                        "iface"
                    };
                    errors.push(InterfacesError::new(
                        iface.line_of(key),
                        ErrorKind::UnknownPort {
                            iface: iface.name.clone(),
                            port: v.raw_device.clone(),
                        },
                    ));
                }
                continue;
            }
            IfaceKind::Plain => continue,
        };
        let line = iface.line_of(key);
        for port in ports {
            if port == "lo" {
                errors.push(InterfacesError::new(
                    line,
                    ErrorKind::InvalidPort {
                        iface: iface.name.clone(),
                        port: port.clone(),
                    },
                ));
                continue;
            }
            if !known(port) {
                errors.push(InterfacesError::new(
                    line,
                    ErrorKind::UnknownPort {
                        iface: iface.name.clone(),
                        port: port.clone(),
                    },
                ));
            }
            if let Some(lower) = declared.get(port.as_str()) {
                if let Some((_, at)) = lower.addresses.first() {
                    errors.push(InterfacesError::new(
                        *at,
                        ErrorKind::AddressOnPort {
                            iface: port.clone(),
                            controller: iface.name.clone(),
                        },
                    ));
                }
                if matches!(lower.kind, IfaceKind::Bridge(_)) {
                    errors.push(InterfacesError::new(
                        line,
                        ErrorKind::BridgeAsPort {
                            iface: iface.name.clone(),
                            port: port.clone(),
                        },
                    ));
                }
            }
            if let Some(first) = used.insert(port, &iface.name) {
                errors.push(InterfacesError::new(
                    line,
                    ErrorKind::PortUsedTwice {
                        port: port.clone(),
                        first: first.to_string(),
                        second: iface.name.clone(),
                    },
                ));
            }
        }
    }

    for iface in &config.ifaces {
        if let IfaceKind::Bridge(b) = &iface.kind {
            if b.stp && b.fd.is_some_and(|fd| fd < 2) {
                errors.push(InterfacesError::new(
                    iface.line_of("bridge-fd"),
                    ErrorKind::ForwardDelayWithStp,
                ));
            }
        }
    }

    // Loops through ports, slaves and raw devices.
    let mut state: HashMap<&str, u8> = HashMap::new(); // 1 visiting, 2 done
    for iface in &config.ifaces {
        let mut path = Vec::new();
        if let Some(cycle) = find_loop(&iface.name, &declared, &mut state, &mut path) {
            let start = declared[cycle[0].as_str()];
            errors.push(InterfacesError::new(
                start.line,
                ErrorKind::Loop(cycle.join(" -> ")),
            ));
        }
    }

    // Addresses and gateways.
    let mut addresses: HashMap<IpAddr, (&str, usize)> = HashMap::new();
    let mut gateways: HashMap<Family, (&str, usize)> = HashMap::new();
    for iface in &config.ifaces {
        for (net, line) in &iface.addresses {
            if let Some((first_iface, first_line)) =
                addresses.insert(net.addr(), (&iface.name, *line))
            {
                errors.push(InterfacesError::new(
                    *line,
                    ErrorKind::DuplicateAddress {
                        address: net.addr().to_string(),
                        first_iface: first_iface.to_string(),
                        first_line,
                    },
                ));
                addresses.insert(net.addr(), (first_iface, first_line));
            }
        }
        for (family, gw) in [
            (Family::Inet, iface.gateway),
            (Family::Inet6, iface.gateway6),
        ] {
            let Some((_, line)) = gw else { continue };
            if let Some((first_iface, first_line)) = gateways.get(&family) {
                errors.push(InterfacesError::new(
                    line,
                    ErrorKind::DuplicateGateway {
                        family,
                        first_iface: first_iface.to_string(),
                        first_line: *first_line,
                    },
                ));
            } else {
                gateways.insert(family, (&iface.name, line));
            }
        }
    }

    if errors.is_empty() {
        Ok(())
    } else {
        errors.sort_by_key(|e| e.line);
        errors.dedup();
        Err(InterfacesErrors(errors))
    }
}

/// Depth-first search from `name`; returns the names of a cycle, first
/// name repeated at the end, if one is reachable and not reported yet.
fn find_loop<'a>(
    name: &'a str,
    declared: &HashMap<&'a str, &'a super::Iface>,
    state: &mut HashMap<&'a str, u8>,
    path: &mut Vec<&'a str>,
) -> Option<Vec<String>> {
    match state.get(name) {
        Some(2) => return None,
        Some(1) => {
            let from = path.iter().position(|n| *n == name).unwrap_or(0);
            let mut cycle: Vec<String> = path[from..].iter().map(|s| s.to_string()).collect();
            cycle.push(name.to_string());
            return Some(cycle);
        }
        _ => {}
    }
    let iface: &'a super::Iface = declared.get(name)?;
    state.insert(name, 1);
    path.push(name);
    for lower in iface.lowers() {
        if let Some(c) = find_loop(lower, declared, state, path) {
            // Mark the rest done so the same loop is reported once.
            for n in path.iter() {
                state.insert(n, 2);
            }
            return Some(c);
        }
    }
    path.pop();
    state.insert(name, 2);
    None
}
