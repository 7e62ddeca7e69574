//! A container's network links: one veth pair per `net[n]`. The host end,
//! `veth<vmid>i<n>`, joins the configured bridge with the bridge's MTU
//! and, on a VLAN-aware bridge, the `tag` as its untagged PVID (on a
//! bridge without VLAN filtering, a tagged port joins the bridge's VLAN
//! bridge `<bridge>v<tag>` instead, as under Proxmox); the other
//! end is created directly in the container's network namespace under its
//! configured name (`eth0`) and MAC address. The guest's own network
//! configuration brings it up.
//!
//! Links are made over rtnetlink with `netd::port`, the code that also
//! puts VM taps into their bridges, in two steps: before the guest's init
//! runs, one request creates a pair with its peer already in the
//! container's namespace ([`create_veths`]); while the init starts, one
//! more puts the host end in its bridge and up ([`Veths::join`]; a
//! VLAN-aware bridge then gets the port's VLANs). The guest finds its
//! `eth0` from the start, without carrier for the moment the join takes.
//! The requests go over a blocking socket (`netd::rtnl_sync`): no async
//! runtime is started for them, which a start would otherwise pay for. When
//! the container's network namespace goes away, the kernel deletes both
//! ends of every pair, so nothing is left behind even after a crash.

use netd::port::{self, PortError, PortSpec, VethPeer};
use netd::rtnl::Link;
use netd::rtnl_sync::SyncRtnl;

use crate::spec::NetSpec;

#[derive(Debug, thiserror::Error)]
pub enum NetError {
    #[error("net{index}: bridge '{bridge}' does not exist")]
    NoBridge { index: u32, bridge: String },
    #[error("net{index}: '{hwaddr}' is not a MAC address")]
    BadMac { index: u32, hwaddr: String },
    #[error("net{index}: {source}")]
    Port {
        index: u32,
        #[source]
        source: PortError,
    },
    #[error(transparent)]
    Netlink(#[from] PortError),
}

/// Reads `aa:bb:cc:dd:ee:ff`.
pub fn parse_mac(text: &str) -> Option<[u8; 6]> {
    let mut mac = [0u8; 6];
    let mut parts = text.split(':');
    for b in &mut mac {
        let part = parts.next()?;
        if part.len() != 2 {
            return None;
        }
        *b = u8::from_str_radix(part, 16).ok()?;
    }
    parts.next().is_none().then_some(mac)
}

/// Deletes the link `name` if it exists (deleting one end of a veth pair
/// deletes both).
pub fn delete_link(name: &str) -> Result<(), NetError> {
    let mut nl = SyncRtnl::connect().map_err(PortError::from)?;
    nl.delete_link(name).map_err(PortError::from)?;
    Ok(())
}

/// One veth pair made by [`create_veths`], its host end not yet in its
/// bridge.
struct Made {
    index: u32,
    host: String,
    bridge: Option<Link>,
    spec: PortSpec,
}

/// The veth pairs of a start, made and waiting for [`Veths::join`].
pub struct Veths {
    nl: Option<SyncRtnl>,
    made: Vec<Made>,
}

impl Veths {
    /// The host ends' names.
    pub fn names(&self) -> Vec<String> {
        self.made.iter().map(|m| m.host.clone()).collect()
    }

    /// Puts every host end into its bridge and up.
    pub fn join(&mut self) -> Result<(), NetError> {
        let Some(nl) = self.nl.as_mut() else {
            return Ok(());
        };
        for m in &self.made {
            port::join_veth_port(nl, &m.host, m.bridge.as_ref(), &m.spec).map_err(|source| {
                NetError::Port {
                    index: m.index,
                    source,
                }
            })?;
        }
        Ok(())
    }
}

/// Creates the veth pairs of `nets` for container `vmid`, whose network
/// namespace is that of process `pid`, each host end down and outside its
/// bridge until [`Veths::join`]. On an error, the pairs already made are
/// deleted again.
pub fn create_veths(vmid: u32, pid: i32, nets: &[NetSpec]) -> Result<Veths, NetError> {
    if nets.is_empty() {
        return Ok(Veths {
            nl: None,
            made: Vec::new(),
        });
    }
    let pid = u32::try_from(pid).expect("a process id is positive");
    let mut nl = SyncRtnl::connect().map_err(PortError::from)?;
    tracing::debug!("container {vmid}: netlink connected");
    let mut made = Vec::new();
    for net in nets {
        match create_veth(&mut nl, vmid, pid, net) {
            Ok(m) => made.push(m),
            Err(e) => {
                for m in &made {
                    let _ = nl.delete_link(&m.host);
                }
                return Err(e);
            }
        }
    }
    Ok(Veths { nl: Some(nl), made })
}

fn create_veth(nl: &mut SyncRtnl, vmid: u32, pid: u32, net: &NetSpec) -> Result<Made, NetError> {
    let host = net.host_name(vmid);
    let port_err = |source| NetError::Port {
        index: net.index,
        source,
    };
    let bridge = match &net.bridge {
        Some(name) => match nl.link_brief(name).map_err(|e| port_err(e.into()))? {
            Some(link) if link.is_bridge => Some(link),
            _ => {
                return Err(NetError::NoBridge {
                    index: net.index,
                    bridge: name.clone(),
                })
            }
        },
        None => None,
    };
    tracing::debug!("container {vmid}: net{}: bridge looked up", net.index);
    let mac = match &net.hwaddr {
        Some(text) => Some(parse_mac(text).ok_or_else(|| NetError::BadMac {
            index: net.index,
            hwaddr: text.clone(),
        })?),
        None => None,
    };
    let peer = VethPeer {
        name: net.name.clone(),
        mac,
        netns_pid: pid,
    };
    let mut spec = PortSpec {
        tag: net.tag,
        trunks: net.trunks.clone(),
        mtu: net.mtu,
        rate: net.rate,
        down: net.link_down,
    };
    // A tag on a bridge without VLAN filtering: the port goes into the
    // bridge's VLAN bridge (`vmbr0v5`), made here if no guest has yet
    // (netd::port::vlan_bridge; a rare path, on a runtime of its own).
    let bridge = match (bridge, net.tag) {
        (Some(b), Some(_)) if !b.vlan_filtering => {
            let (b, resolved) =
                port::blocking(async |nl| port::resolve_vlan_bridge(nl, b, &spec).await)
                    .map_err(port_err)?;
            spec = resolved;
            tracing::debug!("container {vmid}: net{}: VLAN bridge {}", net.index, b.name);
            Some(b)
        }
        (b, _) => b,
    };
    let made = match port::create_veth_pair(nl, &host, &peer, bridge.as_ref(), &spec) {
        // A pair left by a monitor that was killed while its container's
        // namespace lived on cannot exist (the pair dies with the
        // namespace), but a same-named link made by hand would block us.
        Err(PortError::Request { source, .. })
            if netd::rtnl::errno_of(&source) == Some(libc::EEXIST) =>
        {
            tracing::warn!("deleting the existing link {host}");
            nl.delete_link(&host).map_err(|e| port_err(e.into()))?;
            port::create_veth_pair(nl, &host, &peer, bridge.as_ref(), &spec)
        }
        other => other,
    };
    if let Err(e) = made {
        let _ = nl.delete_link(&host);
        return Err(port_err(e));
    }
    Ok(Made {
        index: net.index,
        host,
        bridge,
        spec,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn macs_parse() {
        assert_eq!(
            parse_mac("BC:24:11:00:03:0a"),
            Some([0xbc, 0x24, 0x11, 0, 3, 0x0a])
        );
        for bad in [
            "",
            "BC:24:11:00:03",
            "BC:24:11:00:03:0a:01",
            "BC:24:11:00:03:0",
            "zz:24:11:00:03:0a",
        ] {
            assert_eq!(parse_mac(bad), None, "{bad}");
        }
    }
}
