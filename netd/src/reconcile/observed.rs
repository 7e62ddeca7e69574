//! The observed network: what netlink dumps say, in plain data.

use std::net::IpAddr;

use ipnet::IpNet;

use super::Route;
use crate::interfaces::{BondMode, XmitHashPolicy};

/// What sort of link the kernel has.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ObservedKind {
    /// A bridge.
    Bridge {
        /// Spanning tree on.
        stp: bool,
        /// Forward delay, seconds.
        forward_delay: Option<u32>,
        /// VLAN filtering on.
        vlan_filtering: bool,
    },
    /// A bond.
    Bond {
        /// Mode.
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
    /// Anything else, with the kernel's kind (`veth`, `tun`, ...) or
    /// `None` for a physical device.
    Other(Option<String>),
}

impl ObservedKind {
    /// A word for messages.
    pub fn word(&self) -> &str {
        match self {
            ObservedKind::Bridge { .. } => "bridge",
            ObservedKind::Bond { .. } => "bond",
            ObservedKind::Vlan { .. } => "VLAN",
            ObservedKind::Other(Some(k)) => k,
            ObservedKind::Other(None) => "device",
        }
    }
}

/// A link in the kernel.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ObservedLink {
    /// Name.
    pub name: String,
    /// What it is.
    pub kind: ObservedKind,
    /// Its alias (netd's mark).
    pub alias: Option<String>,
    /// The link it is enslaved to.
    pub controller: Option<String>,
    /// MTU.
    pub mtu: u32,
    /// Administratively up.
    pub up: bool,
    /// The VLANs it carries as a port of a VLAN-filtering bridge.
    pub vids: Option<Vec<(u16, u16)>>,
}

/// An address in the kernel.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ObservedAddr {
    /// The link.
    pub link: String,
    /// Address and prefix.
    pub net: IpNet,
    /// `IFA_PROTO` (0 when unset).
    pub protocol: u8,
}

/// A route in the kernel.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ObservedRoute {
    /// Destination.
    pub dst: IpNet,
    /// Next hop.
    pub gateway: Option<IpAddr>,
    /// Output link.
    pub dev: Option<String>,
    /// `RTPROT_*`.
    pub protocol: u8,
    /// Routing table.
    pub table: u32,
    /// Metric.
    pub priority: u32,
}

impl ObservedRoute {
    /// The route as the planner compares it, if it has a gateway and a
    /// link.
    pub fn as_route(&self) -> Option<Route> {
        Some(Route {
            dst: self.dst,
            gateway: self.gateway?,
            dev: self.dev.clone()?,
        })
    }
}

/// Everything netd looks at.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Observed {
    /// Links.
    pub links: Vec<ObservedLink>,
    /// Addresses.
    pub addresses: Vec<ObservedAddr>,
    /// Routes of the main table.
    pub routes: Vec<ObservedRoute>,
}

impl Observed {
    /// The names of all links, for validation.
    pub fn link_names(&self) -> Vec<String> {
        self.links.iter().map(|l| l.name.clone()).collect()
    }

    /// What the kernel would look like after `ops`, as far as the planner
    /// can tell: used by the tests to check idempotence, and by dry runs.
    pub fn after(&self, ops: &[super::Op], desired: &super::Desired) -> Observed {
        use super::{DesiredKind, Op, IFAPROT_OXBOW, ROUTE_TABLE_MAIN, RTPROT_OXBOW};
        let mut o = self.clone();
        let link = |o: &mut Observed, name: &str| o.links.iter().position(|l| l.name == name);
        for op in ops {
            match op {
                Op::DeleteRoute(r) => o.routes.retain(|x| x.as_route().as_ref() != Some(r)),
                Op::DeleteAddress { link, net } => {
                    o.addresses.retain(|a| !(&a.link == link && a.net == *net))
                }
                Op::ReleasePort { port, .. } => {
                    if let Some(i) = link(&mut o, port) {
                        o.links[i].controller = None;
                        o.links[i].vids = None;
                    }
                }
                Op::DeleteLink { name } => {
                    o.links.retain(|l| &l.name != name);
                    o.addresses.retain(|a| &a.link != name);
                    o.routes.retain(|r| r.dev.as_deref() != Some(name));
                    for l in &mut o.links {
                        if l.controller.as_deref() == Some(name) {
                            l.controller = None;
                        }
                    }
                    let vlans_on: Vec<String> = o
                        .links
                        .iter()
                        .filter(|l| matches!(&l.kind, ObservedKind::Vlan { raw_device, .. } if raw_device == name))
                        .map(|l| l.name.clone())
                        .collect();
                    o.links.retain(|l| !vlans_on.contains(&l.name));
                }
                Op::CreateBond {
                    name,
                    mode,
                    miimon,
                    xmit_hash_policy,
                } => o.links.push(new_link(
                    name,
                    ObservedKind::Bond {
                        mode: *mode,
                        miimon: *miimon,
                        xmit_hash_policy: *xmit_hash_policy,
                    },
                )),
                Op::SetBond {
                    name,
                    miimon,
                    xmit_hash_policy,
                } => {
                    if let Some(i) = link(&mut o, name) {
                        if let ObservedKind::Bond {
                            miimon: m,
                            xmit_hash_policy: x,
                            ..
                        } = &mut o.links[i].kind
                        {
                            if miimon.is_some() {
                                *m = *miimon;
                            }
                            if xmit_hash_policy.is_some() {
                                *x = *xmit_hash_policy;
                            }
                        }
                    }
                }
                Op::CreateBridge {
                    name,
                    stp,
                    forward_delay,
                    vlan_filtering,
                } => o.links.push(new_link(
                    name,
                    ObservedKind::Bridge {
                        stp: *stp,
                        forward_delay: forward_delay.or(Some(15)),
                        vlan_filtering: *vlan_filtering,
                    },
                )),
                Op::SetBridge {
                    name,
                    stp,
                    forward_delay,
                    vlan_filtering,
                } => {
                    if let Some(i) = link(&mut o, name) {
                        if let ObservedKind::Bridge {
                            stp: s,
                            forward_delay: f,
                            vlan_filtering: v,
                        } = &mut o.links[i].kind
                        {
                            *s = *stp;
                            *v = *vlan_filtering;
                            if forward_delay.is_some() {
                                *f = *forward_delay;
                            }
                        }
                    }
                }
                Op::MarkOwned { name } => {
                    if let Some(i) = link(&mut o, name) {
                        o.links[i].alias = Some(crate::OWNER_ALIAS.to_string());
                    }
                }
                Op::SetController { port, controller } => {
                    if let Some(i) = link(&mut o, port) {
                        o.links[i].controller = Some(controller.clone());
                        let filtering = desired.links.iter().any(|d| {
                            &d.name == controller
                                && matches!(
                                    d.kind,
                                    DesiredKind::Bridge {
                                        vlan_filtering: true,
                                        ..
                                    }
                                )
                        });
                        o.links[i].vids = filtering.then(|| vec![(1, 1)]);
                    }
                }
                Op::CreateVlan {
                    name,
                    raw_device,
                    id,
                } => o.links.push(new_link(
                    name,
                    ObservedKind::Vlan {
                        raw_device: raw_device.clone(),
                        id: *id,
                    },
                )),
                Op::SetMtu { name, mtu } => {
                    if let Some(i) = link(&mut o, name) {
                        o.links[i].mtu = *mtu;
                    }
                }
                Op::SetUp { name } => {
                    if let Some(i) = link(&mut o, name) {
                        o.links[i].up = true;
                    }
                }
                Op::SetPortVlans { port, add, remove } => {
                    if let Some(i) = link(&mut o, port) {
                        let cur = o.links[i].vids.clone().unwrap_or_default();
                        let mut set = super::VidSet::from_ranges(&cur);
                        for &(a, b) in add {
                            for v in a..=b {
                                set.0[v as usize] = true;
                            }
                        }
                        for &(a, b) in remove {
                            for v in a..=b {
                                set.0[v as usize] = false;
                            }
                        }
                        o.links[i].vids = Some(set.minus(&super::VidSet::from_ranges(&[])));
                    }
                }
                Op::AddAddress { link, net } => o.addresses.push(ObservedAddr {
                    link: link.clone(),
                    net: *net,
                    protocol: IFAPROT_OXBOW,
                }),
                Op::AddRoute(r) => {
                    o.routes.retain(|x| {
                        !(x.dst == r.dst && x.table == ROUTE_TABLE_MAIN && x.priority == 0)
                    });
                    o.routes.push(ObservedRoute {
                        dst: r.dst,
                        gateway: Some(r.gateway),
                        dev: Some(r.dev.clone()),
                        protocol: RTPROT_OXBOW,
                        table: ROUTE_TABLE_MAIN,
                        priority: 0,
                    });
                }
            }
        }
        o
    }
}

fn new_link(name: &str, kind: ObservedKind) -> ObservedLink {
    ObservedLink {
        name: name.to_string(),
        kind,
        alias: Some(crate::OWNER_ALIAS.to_string()),
        controller: None,
        mtu: 1500,
        up: false,
        vids: None,
    }
}
