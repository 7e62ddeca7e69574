//! A container's network links: one veth pair per `net[n]`. The host end,
//! `veth<vmid>i<n>`, joins the configured bridge with the bridge's MTU;
//! the other end is created directly in the container's network
//! namespace under its configured name (`eth0`) and MAC address. The
//! guest's own network configuration brings it up.
//!
//! Links are made over rtnetlink ([`crate::rtnl`]), in the monitor's
//! network namespace. When the container's network namespace goes away,
//! the kernel deletes both ends of every pair, so nothing is left behind
//! even after a crash.

use crate::rtnl::{self, Rtnl};
use crate::spec::NetSpec;

#[derive(Debug, thiserror::Error)]
pub enum NetError {
    #[error("net{index}: bridge '{bridge}' does not exist")]
    NoBridge { index: u32, bridge: String },
    #[error("net{index}: '{hwaddr}' is not a MAC address")]
    BadMac { index: u32, hwaddr: String },
    #[error("{what}")]
    Netlink {
        what: String,
        #[source]
        source: std::io::Error,
    },
}

fn nl_err(what: impl Into<String>) -> impl FnOnce(std::io::Error) -> NetError {
    let what = what.into();
    move |source| NetError::Netlink { what, source }
}

/// The link `name` in the current network namespace, if it exists.
pub fn link_info(name: &str) -> Result<Option<rtnl::Link>, NetError> {
    let mut nl = Rtnl::connect().map_err(nl_err("opening a netlink socket"))?;
    nl.link(name).map_err(nl_err(format!("looking up {name}")))
}

/// Deletes the link `name` if it exists (deleting one end of a veth pair
/// deletes both).
pub fn delete_link(name: &str) -> Result<(), NetError> {
    let mut nl = Rtnl::connect().map_err(nl_err("opening a netlink socket"))?;
    delete_with(&mut nl, name)
}

fn delete_with(nl: &mut Rtnl, name: &str) -> Result<(), NetError> {
    match nl.delete(name) {
        Ok(()) => Ok(()),
        Err(e) if e.raw_os_error() == Some(libc::ENODEV) => Ok(()),
        Err(e) => Err(nl_err(format!("deleting {name}"))(e)),
    }
}

/// Creates the veth pairs of `nets` for container `vmid`, whose network
/// namespace is that of process `pid`. Returns the host ends' names. On an
/// error, the pairs already made are deleted again.
pub fn create_veths(vmid: u32, pid: i32, nets: &[NetSpec]) -> Result<Vec<String>, NetError> {
    if nets.is_empty() {
        return Ok(Vec::new());
    }
    let mut nl = Rtnl::connect().map_err(nl_err("opening a netlink socket"))?;
    let mut made = Vec::new();
    for net in nets {
        match create_veth(&mut nl, vmid, pid, net) {
            Ok(name) => made.push(name),
            Err(e) => {
                for name in &made {
                    let _ = delete_with(&mut nl, name);
                }
                return Err(e);
            }
        }
    }
    Ok(made)
}

fn create_veth(nl: &mut Rtnl, vmid: u32, pid: i32, net: &NetSpec) -> Result<String, NetError> {
    let host = net.host_name(vmid);
    let bridge = match &net.bridge {
        Some(name) => match nl
            .link(name)
            .map_err(nl_err(format!("looking up {name}")))?
        {
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
    let mac = match &net.hwaddr {
        Some(text) => Some(rtnl::parse_mac(text).ok_or_else(|| NetError::BadMac {
            index: net.index,
            hwaddr: text.clone(),
        })?),
        None => None,
    };
    // A pair left by a monitor that was killed while its container's
    // namespace lived on cannot exist (the pair dies with the namespace),
    // but a same-named link made by hand would block us: say so.
    if nl
        .link(&host)
        .map_err(nl_err(format!("looking up {host}")))?
        .is_some()
    {
        tracing::warn!("deleting the existing link {host}");
        delete_with(nl, &host)?;
    }
    let mtu = net.mtu.or(bridge.as_ref().and_then(|b| b.mtu));
    let pid = u32::try_from(pid).expect("a process id is positive");
    nl.create_veth(&host, &net.name, mtu, mac, pid)
        .map_err(nl_err(format!(
            "creating the veth pair {host} / {} (net{})",
            net.name, net.index
        )))?;
    let attached = nl
        .link(&host)
        .map_err(nl_err(format!("looking up {host}")))
        .and_then(|l| {
            let l = l.ok_or_else(|| {
                nl_err(format!("looking up {host}"))(std::io::Error::from_raw_os_error(
                    libc::ENODEV,
                ))
            })?;
            nl.attach_up(l.index, bridge.as_ref().map(|b| b.index))
                .map_err(nl_err(match &net.bridge {
                    Some(b) => format!("attaching {host} to {b} and bringing it up"),
                    None => format!("bringing {host} up"),
                }))
        });
    if let Err(e) = attached {
        let _ = delete_with(nl, &host);
        return Err(e);
    }
    Ok(host)
}
