//! The desired network, as the planner sees it.

use std::collections::BTreeMap;
use std::fmt;
use std::net::IpAddr;

use ipnet::IpNet;

use crate::interfaces::{BondMode, IfaceKind, Method, NetworkConfig, XmitHashPolicy};

/// What sort of link is wanted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DesiredKind {
    /// A link netd does not create (a NIC, `lo`); it must exist.
    Existing,
    /// A bridge.
    Bridge {
        /// Spanning tree on.
        stp: bool,
        /// Forward delay in seconds; `None` leaves the kernel's.
        forward_delay: Option<u32>,
        /// VLAN filtering (`bridge-vlan-aware`).
        vlan_filtering: bool,
        /// The VLANs its ports carry when VLAN-aware.
        vids: Vec<(u16, u16)>,
    },
    /// A bond.
    Bond {
        /// The mode.
        mode: BondMode,
        /// MII monitoring interval, ms.
        miimon: Option<u32>,
        /// Transmit hash policy.
        xmit_hash_policy: Option<XmitHashPolicy>,
    },
    /// An 802.1Q VLAN.
    Vlan {
        /// The link below.
        raw_device: String,
        /// VLAN ID.
        id: u16,
    },
}

impl DesiredKind {
    /// A word for messages.
    pub fn word(&self) -> &'static str {
        match self {
            DesiredKind::Existing => "interface",
            DesiredKind::Bridge { .. } => "bridge",
            DesiredKind::Bond { .. } => "bond",
            DesiredKind::Vlan { .. } => "VLAN",
        }
    }
}

/// A wanted link.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DesiredLink {
    /// Its name.
    pub name: String,
    /// What it is.
    pub kind: DesiredKind,
    /// The bridge or bond it is a port of.
    pub controller: Option<String>,
    /// Its MTU, if the file sets one.
    pub mtu: Option<u32>,
    /// Whether it must be up (it is `auto`, or below an `auto` link).
    pub up: bool,
}

/// A wanted route (in the main table, metric 0).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct Route {
    /// Destination.
    pub dst: IpNet,
    /// Next hop.
    pub gateway: IpAddr,
    /// Output link.
    pub dev: String,
}

impl fmt::Display for Route {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} via {} dev {}", self.dst, self.gateway, self.dev)
    }
}

/// The whole desired network.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Desired {
    /// Links, in file order.
    pub links: Vec<DesiredLink>,
    /// Addresses by link.
    pub addresses: Vec<(String, IpNet)>,
    /// Routes.
    pub routes: Vec<Route>,
    /// Links whose IPv4 address comes from DHCP (netd's client).
    pub dhcp: Vec<String>,
}

impl Desired {
    /// The desired network of a (validated) interfaces file.
    pub fn from_config(config: &NetworkConfig) -> Desired {
        let mut controller: BTreeMap<&str, &str> = BTreeMap::new();
        for i in &config.ifaces {
            let ports = match &i.kind {
                IfaceKind::Bridge(b) => &b.ports,
                IfaceKind::Bond(b) => &b.slaves,
                _ => continue,
            };
            for p in ports {
                controller.insert(p, &i.name);
            }
        }
        // Everything below an auto interface must be up too.
        let mut up: Vec<&str> = config
            .ifaces
            .iter()
            .filter(|i| i.auto)
            .map(|i| i.name.as_str())
            .collect();
        let mut k = 0;
        while k < up.len() {
            if let Some(i) = config.get(up[k]) {
                for l in i.lowers() {
                    if !up.contains(&l) {
                        up.push(l);
                    }
                }
            }
            k += 1;
        }
        let mut d = Desired::default();
        let push_link = |d: &mut Desired, link: DesiredLink| {
            if !d.links.iter().any(|l| l.name == link.name) {
                d.links.push(link);
            }
        };
        for i in &config.ifaces {
            let kind = match &i.kind {
                IfaceKind::Plain => DesiredKind::Existing,
                IfaceKind::Bridge(b) => DesiredKind::Bridge {
                    stp: b.stp,
                    forward_delay: b.fd,
                    vlan_filtering: b.vlan_aware,
                    vids: if b.vids.is_empty() {
                        vec![(2, 4094)]
                    } else {
                        b.vids.clone()
                    },
                },
                IfaceKind::Bond(b) => DesiredKind::Bond {
                    mode: b.mode,
                    miimon: b.miimon,
                    xmit_hash_policy: b.xmit_hash_policy,
                },
                IfaceKind::Vlan(v) => DesiredKind::Vlan {
                    raw_device: v.raw_device.clone(),
                    id: v.id,
                },
            };
            push_link(
                &mut d,
                DesiredLink {
                    name: i.name.clone(),
                    kind,
                    controller: controller.get(i.name.as_str()).map(|c| c.to_string()),
                    mtu: i.mtu,
                    up: up.contains(&i.name.as_str()),
                },
            );
            if i.inet == Some(Method::Dhcp) {
                d.dhcp.push(i.name.clone());
            }
            for (net, _) in &i.addresses {
                let method = if net.addr().is_ipv4() {
                    i.inet
                } else {
                    i.inet6
                };
                if matches!(method, Some(Method::Dhcp) | Some(Method::Loopback)) {
                    continue;
                }
                d.addresses.push((i.name.clone(), *net));
            }
            for (gw, _) in [i.gateway, i.gateway6].into_iter().flatten() {
                let method = if gw.is_ipv4() { i.inet } else { i.inet6 };
                if method == Some(Method::Dhcp) {
                    continue;
                }
                let dst = if gw.is_ipv4() {
                    IpNet::V4(Default::default())
                } else {
                    IpNet::V6(Default::default())
                };
                d.routes.push(Route {
                    dst,
                    gateway: gw,
                    dev: i.name.clone(),
                });
            }
        }
        // Ports named only as ports (NICs not declared on their own).
        for i in &config.ifaces {
            for l in i.lowers() {
                let is_raw = matches!(i.kind, IfaceKind::Vlan(_));
                push_link(
                    &mut d,
                    DesiredLink {
                        name: l.to_string(),
                        kind: DesiredKind::Existing,
                        controller: (!is_raw).then(|| i.name.clone()),
                        mtu: None,
                        up: up.contains(&l),
                    },
                );
            }
        }
        d
    }
}
