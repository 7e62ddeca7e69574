//! Planning: from the desired network (an interfaces file) and the
//! observed one (netlink dumps) to the list of operations that makes the
//! kernel match, without touching the kernel.
//!
//! [`plan`] is a pure function. Its rules:
//!
//! - **Ownership.** netd changes only what it owns: links whose alias is
//!   [`crate::OWNER_ALIAS`], addresses whose protocol (`IFA_PROTO`) is
//!   [`IFAPROT_OXBOW`], routes whose protocol is [`RTPROT_OXBOW`]. A link
//!   of the right kind that is not marked is adopted (marked); one of the
//!   wrong kind is a [`PlanError::Conflict`]. Declared links that netd
//!   does not create (NICs) are enslaved, sized and brought up, never
//!   deleted. An address or route that is desired and already present is
//!   left as it is whoever made it.
//! - **Guest ports stay.** Ports of an owned bridge whose name starts
//!   with one of [`GUEST_PORT_PREFIXES`] (the taps and veths of guests)
//!   are never released.
//! - **Order.** Deletions first, innermost first: routes, addresses,
//!   VLANs, port releases, bridges, bonds. Then creations and changes:
//!   bonds, bridges, ports, VLANs (and the ports that are VLANs), MTUs and
//!   link state, bridge VLAN lists, addresses, routes.
//! - **Idempotence.** Planning again against the state an apply produced
//!   gives no operations.

mod desired;
pub mod kernel;
mod observed;
#[cfg(test)]
mod tests;

pub use desired::{Desired, DesiredKind, DesiredLink, Route};
pub use observed::{Observed, ObservedAddr, ObservedKind, ObservedLink, ObservedRoute};

use ipnet::IpNet;
use std::collections::{BTreeMap, BTreeSet};
use std::fmt;

use crate::interfaces::{BondMode, XmitHashPolicy};
use crate::OWNER_ALIAS;

/// The `IFA_PROTO` value marking addresses netd added.
pub const IFAPROT_OXBOW: u8 = 0xb0;
/// The route protocol (`RTPROT_*`) marking routes netd added.
pub const RTPROT_OXBOW: u8 = 0xb0;
/// Name prefixes of guest ports (Proxmox's `tapVMIDiN`, `vethVMIDiN` and
/// firewall links), which netd never releases from a bridge.
pub const GUEST_PORT_PREFIXES: [&str; 4] = ["tap", "veth", "fwpr", "fwln"];

/// Whether `name` is a guest's port.
pub fn is_guest_port(name: &str) -> bool {
    GUEST_PORT_PREFIXES.iter().any(|p| name.starts_with(p))
}

/// One change to the kernel.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Op {
    /// Remove an owned route.
    DeleteRoute(Route),
    /// Remove an owned address.
    DeleteAddress {
        /// The link.
        link: String,
        /// The address.
        net: IpNet,
    },
    /// Take a port out of its bridge or bond.
    ReleasePort {
        /// The port.
        port: String,
        /// The bridge or bond it leaves.
        from: String,
    },
    /// Delete an owned link.
    DeleteLink {
        /// The link.
        name: String,
    },
    /// Create a bond (marked, down).
    CreateBond {
        /// Its name.
        name: String,
        /// The mode.
        mode: BondMode,
        /// MII monitoring interval, ms.
        miimon: Option<u32>,
        /// Transmit hash policy.
        xmit_hash_policy: Option<XmitHashPolicy>,
    },
    /// Change a bond's settings that can change while it runs.
    SetBond {
        /// The bond.
        name: String,
        /// MII monitoring interval, ms.
        miimon: Option<u32>,
        /// Transmit hash policy.
        xmit_hash_policy: Option<XmitHashPolicy>,
    },
    /// Create a bridge (marked, down).
    CreateBridge {
        /// Its name.
        name: String,
        /// Spanning tree on.
        stp: bool,
        /// Forward delay in seconds.
        forward_delay: Option<u32>,
        /// VLAN filtering on.
        vlan_filtering: bool,
    },
    /// Change a bridge's settings.
    SetBridge {
        /// The bridge.
        name: String,
        /// Spanning tree on.
        stp: bool,
        /// Forward delay in seconds.
        forward_delay: Option<u32>,
        /// VLAN filtering on.
        vlan_filtering: bool,
    },
    /// Mark an existing link as netd's.
    MarkOwned {
        /// The link.
        name: String,
    },
    /// Put a link into a bridge or bond.
    SetController {
        /// The port.
        port: String,
        /// The bridge or bond.
        controller: String,
    },
    /// Create an 802.1Q VLAN link (marked, down).
    CreateVlan {
        /// Its name.
        name: String,
        /// The link below it.
        raw_device: String,
        /// VLAN ID.
        id: u16,
    },
    /// Set a link's MTU.
    SetMtu {
        /// The link.
        name: String,
        /// The MTU.
        mtu: u32,
    },
    /// Set a link administratively up.
    SetUp {
        /// The link.
        name: String,
    },
    /// Change the VLANs a port of a VLAN-aware bridge carries.
    SetPortVlans {
        /// The port.
        port: String,
        /// Ranges to add (tagged).
        add: Vec<(u16, u16)>,
        /// Ranges to remove.
        remove: Vec<(u16, u16)>,
    },
    /// Add an address, marked.
    AddAddress {
        /// The link.
        link: String,
        /// The address.
        net: IpNet,
    },
    /// Add (or replace, for the same destination and metric) a route,
    /// marked.
    AddRoute(Route),
}

impl fmt::Display for Op {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Op::DeleteRoute(r) => write!(f, "delete route {r}"),
            Op::DeleteAddress { link, net } => write!(f, "{link}: delete address {net}"),
            Op::ReleasePort { port, from } => write!(f, "take {port} out of {from}"),
            Op::DeleteLink { name } => write!(f, "delete {name}"),
            Op::CreateBond { name, mode, .. } => write!(f, "create bond {name} ({mode})"),
            Op::SetBond { name, .. } => write!(f, "{name}: set bond options"),
            Op::CreateBridge { name, .. } => write!(f, "create bridge {name}"),
            Op::SetBridge {
                name,
                stp,
                forward_delay,
                vlan_filtering,
            } => write!(
                f,
                "{name}: stp {stp}, forward delay {forward_delay:?}, vlan filtering {vlan_filtering}"
            ),
            Op::MarkOwned { name } => write!(f, "{name}: mark as {OWNER_ALIAS}"),
            Op::SetController { port, controller } => write!(f, "put {port} into {controller}"),
            Op::CreateVlan {
                name,
                raw_device,
                id,
            } => write!(f, "create VLAN {name} ({raw_device} id {id})"),
            Op::SetMtu { name, mtu } => write!(f, "{name}: mtu {mtu}"),
            Op::SetUp { name } => write!(f, "{name}: up"),
            Op::SetPortVlans { port, add, remove } => {
                write!(f, "{port}: vlans +{add:?} -{remove:?}")
            }
            Op::AddAddress { link, net } => write!(f, "{link}: add address {net}"),
            Op::AddRoute(r) => write!(f, "add route {r}"),
        }
    }
}

/// Why no plan could be made.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PlanError {
    /// A link of the desired name exists, is not netd's, and is not what
    /// the file wants.
    #[error("{name} exists as a {found} that netd does not own; the file wants a {wanted}")]
    Conflict {
        /// The link.
        name: String,
        /// What it is.
        found: String,
        /// What the file wants.
        wanted: String,
    },
    /// A link the file needs (a NIC) does not exist.
    #[error("{0} does not exist")]
    Missing(String),
}

/// A set of VLAN IDs.
#[derive(Clone, PartialEq, Eq)]
struct VidSet(Vec<bool>);

impl VidSet {
    fn from_ranges(r: &[(u16, u16)]) -> VidSet {
        let mut s = vec![false; 4095];
        for &(a, b) in r {
            for v in a..=b.min(4094) {
                s[v as usize] = true;
            }
        }
        VidSet(s)
    }

    fn minus(&self, other: &VidSet) -> Vec<(u16, u16)> {
        let mut out = Vec::new();
        let mut start: Option<u16> = None;
        for v in 1..=4095u16 {
            let inside = v < 4095 && self.0[v as usize] && !other.0[v as usize];
            match (inside, start) {
                (true, None) => start = Some(v),
                (false, Some(s)) => {
                    out.push((s, v - 1));
                    start = None;
                }
                _ => {}
            }
        }
        out
    }
}

/// A bond that is down and has no slaves: it carries nothing, so netd may
/// rebuild it even when it did not make it.
fn idle_bond(o: &ObservedLink, links: &[ObservedLink]) -> bool {
    matches!(o.kind, ObservedKind::Bond { .. })
        && !o.up
        && !links
            .iter()
            .any(|l| l.controller.as_deref() == Some(o.name.as_str()))
}

/// Plans the operations that turn `observed` into `desired`.
pub fn plan(desired: &Desired, observed: &Observed) -> Result<Vec<Op>, PlanError> {
    let obs: BTreeMap<&str, &ObservedLink> = observed
        .links
        .iter()
        .map(|l| (l.name.as_str(), l))
        .collect();
    let want: BTreeMap<&str, &DesiredLink> =
        desired.links.iter().map(|l| (l.name.as_str(), l)).collect();
    let owned = |l: &ObservedLink| l.alias.as_deref() == Some(OWNER_ALIAS);

    // Which desired links must be (re)created, and which owned links go.
    let mut create: BTreeSet<&str> = BTreeSet::new();
    let mut delete: Vec<&ObservedLink> = Vec::new();
    let mut mark: Vec<&str> = Vec::new();
    for d in &desired.links {
        let Some(o) = obs.get(d.name.as_str()) else {
            match d.kind {
                DesiredKind::Existing => return Err(PlanError::Missing(d.name.clone())),
                _ => {
                    create.insert(&d.name);
                }
            }
            continue;
        };
        let same_kind = match (&d.kind, &o.kind) {
            (DesiredKind::Existing, _) => true,
            (DesiredKind::Bridge { .. }, ObservedKind::Bridge { .. }) => true,
            (DesiredKind::Bond { mode, .. }, ObservedKind::Bond { mode: m, .. }) => {
                // A bond's mode changes only when it is empty and down:
                // an owned one is rebuilt instead, and so is an empty, down
                // one made by someone else (the `bond0` the bonding module
                // creates when it loads), which carries nothing. A busy one
                // with another mode is a conflict, never silently kept.
                mode == m
            }
            (
                DesiredKind::Vlan { raw_device, id },
                ObservedKind::Vlan {
                    raw_device: r,
                    id: i,
                },
            ) => (raw_device == r && id == i) || !owned(o),
            _ => false,
        };
        if same_kind {
            if !owned(o) && d.kind != DesiredKind::Existing {
                mark.push(&d.name);
            }
        } else if owned(o) || idle_bond(o, &observed.links) {
            delete.push(o);
            create.insert(&d.name);
        } else {
            let (found, wanted) = match (&o.kind, &d.kind) {
                (ObservedKind::Bond { mode: m, .. }, DesiredKind::Bond { mode, .. }) => (
                    format!("bond in mode {m} (up or with slaves)"),
                    format!("bond in mode {mode}"),
                ),
                _ => (o.kind.word().to_string(), d.kind.word().to_string()),
            };
            return Err(PlanError::Conflict {
                name: d.name.clone(),
                found,
                wanted,
            });
        }
    }
    for o in &observed.links {
        if owned(o) && !want.contains_key(o.name.as_str()) {
            delete.push(o);
        }
    }
    // VLANs on a link that is deleted go with it.
    for d in &desired.links {
        if let Some(ObservedKind::Vlan { raw_device, .. }) =
            obs.get(d.name.as_str()).map(|o| &o.kind)
        {
            if delete.iter().any(|o| &o.name == raw_device) {
                create.insert(&d.name);
                mark.retain(|m| *m != d.name);
            }
        }
    }
    let deleted: BTreeSet<&str> = delete.iter().map(|o| o.name.as_str()).collect();
    // A link that is deleted, or whose controller is, loses its routes,
    // addresses and place by itself.
    let gone = |name: &str| deleted.contains(name);

    let mut ops = Vec::new();

    // 1. Routes.
    for r in &observed.routes {
        if r.protocol != RTPROT_OXBOW || r.table != ROUTE_TABLE_MAIN {
            continue;
        }
        let Some(route) = r.as_route() else { continue };
        if !desired.routes.contains(&route) && !gone(&route.dev) {
            ops.push(Op::DeleteRoute(route));
        }
    }
    // 2. Addresses.
    for a in &observed.addresses {
        if a.protocol != IFAPROT_OXBOW || gone(&a.link) {
            continue;
        }
        let still = desired
            .addresses
            .iter()
            .any(|(l, n)| *l == a.link && n == &a.net)
            && !create.contains(a.link.as_str());
        if !still {
            ops.push(Op::DeleteAddress {
                link: a.link.clone(),
                net: a.net,
            });
        }
    }
    // 3. VLANs; 4. ports; 5. bridges; 6. bonds.
    let del_kind = |ops: &mut Vec<Op>, pick: fn(&ObservedKind) -> bool| {
        for o in delete.iter().filter(|o| pick(&o.kind)) {
            ops.push(Op::DeleteLink {
                name: o.name.clone(),
            });
        }
    };
    del_kind(&mut ops, |k| matches!(k, ObservedKind::Vlan { .. }));
    for o in &observed.links {
        let Some(ctrl) = &o.controller else { continue };
        let Some(c) = obs.get(ctrl.as_str()) else {
            continue;
        };
        if !owned(c) || gone(ctrl) || gone(&o.name) || is_guest_port(&o.name) {
            continue;
        }
        let desired_ctrl = want
            .get(o.name.as_str())
            .and_then(|d| d.controller.as_deref());
        if desired_ctrl.is_none() {
            ops.push(Op::ReleasePort {
                port: o.name.clone(),
                from: ctrl.clone(),
            });
        }
    }
    del_kind(&mut ops, |k| matches!(k, ObservedKind::Bridge { .. }));
    del_kind(&mut ops, |k| {
        !matches!(k, ObservedKind::Vlan { .. } | ObservedKind::Bridge { .. })
    });

    // 7. Bonds.
    for d in &desired.links {
        let DesiredKind::Bond {
            mode,
            miimon,
            xmit_hash_policy,
        } = &d.kind
        else {
            continue;
        };
        if create.contains(d.name.as_str()) {
            ops.push(Op::CreateBond {
                name: d.name.clone(),
                mode: *mode,
                miimon: *miimon,
                xmit_hash_policy: *xmit_hash_policy,
            });
            continue;
        }
        if mark.contains(&d.name.as_str()) {
            ops.push(Op::MarkOwned {
                name: d.name.clone(),
            });
        }
        if let Some(ObservedKind::Bond {
            miimon: m,
            xmit_hash_policy: x,
            ..
        }) = obs.get(d.name.as_str()).map(|o| &o.kind)
        {
            let miimon_differs = miimon.is_some() && miimon != m;
            let xmit_differs = xmit_hash_policy.is_some() && xmit_hash_policy != x;
            if miimon_differs || xmit_differs {
                ops.push(Op::SetBond {
                    name: d.name.clone(),
                    miimon: *miimon,
                    xmit_hash_policy: *xmit_hash_policy,
                });
            }
        }
    }
    // 8. Bridges.
    for d in &desired.links {
        let DesiredKind::Bridge {
            stp,
            forward_delay,
            vlan_filtering,
            ..
        } = &d.kind
        else {
            continue;
        };
        if create.contains(d.name.as_str()) {
            ops.push(Op::CreateBridge {
                name: d.name.clone(),
                stp: *stp,
                forward_delay: *forward_delay,
                vlan_filtering: *vlan_filtering,
            });
            continue;
        }
        if mark.contains(&d.name.as_str()) {
            ops.push(Op::MarkOwned {
                name: d.name.clone(),
            });
        }
        if let Some(ObservedKind::Bridge {
            stp: s,
            forward_delay: fd,
            vlan_filtering: vf,
            ..
        }) = obs.get(d.name.as_str()).map(|o| &o.kind)
        {
            let fd_differs = forward_delay.is_some() && forward_delay != fd;
            if stp != s || vlan_filtering != vf || fd_differs {
                ops.push(Op::SetBridge {
                    name: d.name.clone(),
                    stp: *stp,
                    forward_delay: *forward_delay,
                    vlan_filtering: *vlan_filtering,
                });
            }
        }
    }
    // 9. Ports that are not VLANs (bond slaves first, then bridge ports).
    let is_vlan = |name: &str| {
        want.get(name)
            .is_some_and(|d| matches!(d.kind, DesiredKind::Vlan { .. }))
    };
    let controller_kind = |name: &str| want.get(name).map(|d| d.kind.word());
    let needs_controller = |d: &DesiredLink| -> Option<Op> {
        let ctrl = d.controller.as_ref()?;
        let current = obs.get(d.name.as_str()).and_then(|o| o.controller.as_ref());
        let fresh = create.contains(d.name.as_str()) || create.contains(ctrl.as_str());
        (fresh || current != Some(ctrl)).then(|| Op::SetController {
            port: d.name.clone(),
            controller: ctrl.clone(),
        })
    };
    for wanted_ctrl in ["bond", "bridge"] {
        for d in &desired.links {
            if is_vlan(&d.name)
                || d.controller
                    .as_deref()
                    .and_then(controller_kind)
                    .is_none_or(|k| k != wanted_ctrl)
            {
                continue;
            }
            ops.extend(needs_controller(d));
        }
    }
    // 10. VLANs, lower ones first.
    let mut vlans: Vec<&DesiredLink> = desired
        .links
        .iter()
        .filter(|d| matches!(d.kind, DesiredKind::Vlan { .. }))
        .collect();
    let depth = |d: &DesiredLink| {
        let mut n = 0;
        let mut cur = d;
        while let DesiredKind::Vlan { raw_device, .. } = &cur.kind {
            match want.get(raw_device.as_str()) {
                Some(next) if n < 16 => {
                    cur = next;
                    n += 1;
                }
                _ => break,
            }
        }
        n
    };
    vlans.sort_by_key(|d| depth(d));
    for d in &vlans {
        let DesiredKind::Vlan { raw_device, id } = &d.kind else {
            continue;
        };
        if create.contains(d.name.as_str()) {
            ops.push(Op::CreateVlan {
                name: d.name.clone(),
                raw_device: raw_device.clone(),
                id: *id,
            });
        } else if mark.contains(&d.name.as_str()) {
            ops.push(Op::MarkOwned {
                name: d.name.clone(),
            });
        }
    }
    // 11. Ports that are VLANs.
    for d in &vlans {
        ops.extend(needs_controller(d));
    }
    // 12. MTU, then up, lower links first.
    let mut order: Vec<&DesiredLink> = desired.links.iter().collect();
    order.sort_by_key(|d| match d.kind {
        DesiredKind::Existing => 0,
        DesiredKind::Bond { .. } => 1,
        DesiredKind::Vlan { .. } => 2 + depth(d),
        DesiredKind::Bridge { .. } => 40,
    });
    for d in &order {
        let Some(mtu) = d.mtu else { continue };
        let fresh = create.contains(d.name.as_str());
        let current = obs.get(d.name.as_str()).map(|o| o.mtu);
        if fresh || current != Some(mtu) {
            ops.push(Op::SetMtu {
                name: d.name.clone(),
                mtu,
            });
        }
    }
    for d in &order {
        let fresh = create.contains(d.name.as_str());
        let is_up = obs.get(d.name.as_str()).is_some_and(|o| o.up);
        if d.up && (fresh || !is_up) {
            ops.push(Op::SetUp {
                name: d.name.clone(),
            });
        }
    }
    // 13. VLANs of the ports of VLAN-aware bridges.
    for d in &desired.links {
        let DesiredKind::Bridge {
            vlan_filtering: true,
            vids,
            ..
        } = &d.kind
        else {
            continue;
        };
        let wanted = VidSet::from_ranges(vids);
        for port in desired
            .links
            .iter()
            .filter(|p| p.controller.as_deref() == Some(d.name.as_str()))
        {
            let fresh = create.contains(port.name.as_str())
                || create.contains(d.name.as_str())
                || obs
                    .get(port.name.as_str())
                    .is_none_or(|o| o.controller.as_deref() != Some(d.name.as_str()));
            let current = if fresh {
                VidSet::from_ranges(&[(1, 1)])
            } else {
                VidSet::from_ranges(
                    obs.get(port.name.as_str())
                        .and_then(|o| o.vids.as_deref())
                        .unwrap_or(&[(1, 1)]),
                )
            };
            let add = wanted.minus(&current);
            // VLAN 1, the default PVID, stays.
            let remove: Vec<(u16, u16)> = current
                .minus(&wanted)
                .into_iter()
                .flat_map(|(a, b)| match (a, b) {
                    (1, 1) => vec![],
                    (1, b) => vec![(2, b)],
                    r => vec![r],
                })
                .collect();
            if !add.is_empty() || !remove.is_empty() {
                ops.push(Op::SetPortVlans {
                    port: port.name.clone(),
                    add,
                    remove,
                });
            }
        }
    }
    // 14. Addresses.
    for (link, net) in &desired.addresses {
        let present = !create.contains(link.as_str())
            && observed
                .addresses
                .iter()
                .any(|a| &a.link == link && a.net == *net);
        if !present {
            ops.push(Op::AddAddress {
                link: link.clone(),
                net: *net,
            });
        }
    }
    // 15. Routes.
    for r in &desired.routes {
        let present = !create.contains(r.dev.as_str())
            && observed.routes.iter().any(|o| {
                o.table == ROUTE_TABLE_MAIN && o.priority == 0 && o.as_route().as_ref() == Some(r)
            });
        if !present {
            ops.push(Op::AddRoute(r.clone()));
        }
    }
    Ok(ops)
}

/// The kernel's main routing table.
pub const ROUTE_TABLE_MAIN: u32 = 254;
