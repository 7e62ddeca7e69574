//! Making the kernel match a [`MgmtPlan`].
//!
//! Every step first looks at the current state and only changes what
//! differs, so applying a plan twice does nothing the second time, and no
//! step ever sets an interface down.

use rtnetlink::packet_route::route::RouteProtocol;

use crate::plan::{IpConfig, MgmtPlan};
use crate::rtnl::{IfAddr, Link, Rtnl, RtnlError};
use crate::OWNER_ALIAS;

/// Brings `lo` up.
pub async fn loopback_up(nl: &Rtnl) -> Result<(), RtnlError> {
    let lo = nl.require_link("lo").await?;
    if !lo.up {
        nl.set_up(&lo).await?;
        tracing::info!("lo up");
    }
    Ok(())
}

/// Creates (or adopts) the bridge, gives it the NIC's MAC, enslaves the
/// NIC and brings both up. Returns the bridge as it is afterwards.
pub async fn apply_links(nl: &Rtnl, plan: &MgmtPlan) -> Result<Link, RtnlError> {
    let name = plan.bridge.as_str();
    let nic = match &plan.nic {
        Some(n) => match nl.link(n).await? {
            None => {
                tracing::error!("NIC {n} does not exist; {name} will have no uplink");
                None
            }
            Some(l) if l.is_bridge || l.name == name => {
                tracing::error!("{n} is a bridge, not a NIC; {name} will have no uplink");
                None
            }
            Some(l) => Some(l),
        },
        None => None,
    };

    let (bridge, created) = match nl.link(name).await? {
        Some(l) if !l.is_bridge => return Err(RtnlError::NotABridge(name.to_string())),
        Some(l) => (l, false),
        None => {
            nl.create_bridge(name, nic.as_ref().and_then(|n| n.mac))
                .await?;
            tracing::info!("created bridge {name}");
            (nl.require_link(name).await?, true)
        }
    };
    if bridge.alias.as_deref() != Some(OWNER_ALIAS) {
        if !created {
            tracing::warn!("bridge {name} was not made by netd; adopting it");
        }
        nl.set_alias(&bridge, OWNER_ALIAS).await?;
        tracing::info!("{name}: marked as {OWNER_ALIAS}");
    }

    if let Some(nic) = &nic {
        // The bridge takes the NIC's MAC so that the DHCP server sees the
        // same client whatever the bridge was created with.
        if let Some(mac) = nic.mac {
            if bridge.mac != Some(mac) {
                nl.set_mac(&bridge, mac).await?;
                tracing::info!("{name}: MAC {mac} (from {})", nic.name);
            }
        }
        if nic.controller != Some(bridge.index) {
            if let Some(other) = nic.controller {
                tracing::warn!(
                    "{} was enslaved to link {other}; moving it to {name}",
                    nic.name
                );
            }
            nl.set_controller(nic, &bridge).await?;
            tracing::info!("{} joined {name}", nic.name);
        }
        // A bridge port's own addresses are unreachable; they belong on
        // the bridge.
        for a in nl.addresses(nic.index).await? {
            if a.global {
                nl.del_address(&a).await?;
                tracing::warn!(
                    "{}: removed {}/{} (a bridge port keeps no address)",
                    nic.name,
                    a.address,
                    a.prefix
                );
            }
        }
        if !nic.up {
            nl.set_up(nic).await?;
            tracing::info!("{} up", nic.name);
        }
    }
    if !bridge.up {
        nl.set_up(&bridge).await?;
        tracing::info!("{name} up");
    }
    nl.require_link(name).await
}

/// What [`apply_ip`] changed.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct IpChanges {
    /// The address was added.
    pub added: bool,
    /// Other addresses of the same family that were removed.
    pub removed: Vec<String>,
    /// The default route was set.
    pub route: bool,
}

impl IpChanges {
    /// Whether anything changed.
    pub fn any(&self) -> bool {
        self.added || self.route || !self.removed.is_empty()
    }
}

/// Gives the bridge exactly the address of `cfg` (of its family: other
/// global addresses of that family are removed, since netd owns the
/// bridge) and the default route via its gateway.
pub async fn apply_ip(
    nl: &Rtnl,
    bridge: &Link,
    cfg: &IpConfig,
    protocol: RouteProtocol,
) -> Result<IpChanges, RtnlError> {
    let mut changes = IpChanges::default();
    let existing = nl.addresses(bridge.index).await?;
    let wanted = |a: &IfAddr| a.address == cfg.address && a.prefix == cfg.prefix;
    // Stale addresses go first: removing a primary IPv4 address would also
    // remove a new secondary one in the same subnet.
    for a in &existing {
        if a.global && a.address.is_ipv4() == cfg.address.is_ipv4() && !wanted(a) {
            nl.del_address(a).await?;
            changes.removed.push(format!("{}/{}", a.address, a.prefix));
        }
    }
    if !existing.iter().any(wanted) {
        match nl.add_address(bridge.index, cfg.address, cfg.prefix).await {
            Err(e) if e.errno() == Some(libc::EEXIST) => {}
            r => r?,
        }
        changes.added = true;
    }
    if let Some(gw) = cfg.gateway {
        let routes = nl.default_routes(gw.is_ipv6()).await?;
        let present = routes
            .iter()
            .any(|r| r.gateway == Some(gw) && r.oif == Some(bridge.index) && r.priority == 0);
        if !present {
            nl.replace_default_route(gw, bridge.index, protocol, !cfg.contains(gw))
                .await?;
            changes.route = true;
        }
    }
    Ok(changes)
}

/// Removes the address of `cfg` from the bridge, and the default route via
/// its gateway.
pub async fn remove_ip(nl: &Rtnl, bridge: &Link, cfg: &IpConfig) -> Result<(), RtnlError> {
    if let Some(gw) = cfg.gateway {
        for r in nl.default_routes(gw.is_ipv6()).await? {
            if r.gateway == Some(gw) && r.oif == Some(bridge.index) {
                nl.del_route(&r).await?;
            }
        }
    }
    for a in nl.addresses(bridge.index).await? {
        if a.address == cfg.address {
            nl.del_address(&a).await?;
        }
    }
    Ok(())
}

/// The first global IPv4 address of a link, with its prefix.
pub async fn current_ipv4(
    nl: &Rtnl,
    link: &Link,
) -> Result<Option<(std::net::Ipv4Addr, u8)>, RtnlError> {
    Ok(nl
        .addresses(link.index)
        .await?
        .into_iter()
        .find_map(|a| match a.address {
            std::net::IpAddr::V4(v4) if a.global => Some((v4, a.prefix)),
            _ => None,
        }))
}
