//! Guest ports: the tap of a VM or the host end of a container's veth,
//! put into a bridge the way a guest's `net[n]` asks.
//!
//! - The port takes the bridge's MTU (or the guest's `mtu=` if smaller
//!   or equal; a port larger than its bridge would drop frames).
//! - On a VLAN-aware bridge the port's VLAN list is set exactly: with
//!   `tag=N`, VLAN N is the PVID and leaves untagged and nothing else is
//!   allowed (the kernel's default VLAN 1 is removed); without a tag, VLAN 1
//!   is the untagged PVID. `trunks=` adds tagged VLANs on top.
//! - On a bridge without VLAN filtering a tag or trunks are refused rather
//!   than ignored: the guest would otherwise land in the untagged network.
//!
//! The same call serves `apid` (VM taps) and `ctr` (container veths);
//! calling it again on an attached port converges to the same state.

use futures_util::TryStreamExt;
use rtnetlink::packet_route::link::LinkMessage;
use rtnetlink::packet_route::link::{
    BridgeVlanInfoFlags, InfoData, InfoKind, InfoVeth, LinkAttribute, LinkExtentMask,
};
use rtnetlink::packet_route::AddressFamily;
use rtnetlink::{LinkBridgeVlan, LinkMessageBuilder, LinkUnspec};

use crate::rtnl::{Link, Rtnl, RtnlError};
use crate::rtnl_sync::SyncRtnl;

/// How a guest's `net[n]` wants its port.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PortSpec {
    /// `tag=`: the access VLAN.
    pub tag: Option<u16>,
    /// `trunks=`: VLANs passed tagged, as inclusive ranges.
    pub trunks: Vec<(u16, u16)>,
    /// `mtu=`: at most the bridge's MTU; `None` takes the bridge's.
    pub mtu: Option<u32>,
}

/// Why a port could not be attached.
#[derive(Debug, thiserror::Error)]
pub enum PortError {
    #[error("bridge '{0}' does not exist")]
    NoBridge(String),
    #[error("'{0}' is not a bridge")]
    NotABridge(String),
    #[error("VLAN {0} is out of range (1-4094)")]
    BadVlan(u16),
    #[error("trunks: '{0}' is not a list of VLAN IDs or ranges like 10;20-30")]
    BadTrunks(String),
    #[error("VLAN tags and trunks need a VLAN-aware bridge; '{0}' is not one (set bridge-vlan-aware yes)")]
    NotVlanAware(String),
    #[error("mtu {mtu} is larger than the MTU {bridge_mtu} of bridge '{bridge}'")]
    MtuTooLarge {
        mtu: u32,
        bridge: String,
        bridge_mtu: u32,
    },
    #[error(transparent)]
    Netlink(#[from] RtnlError),
    #[error("{op}: {source}")]
    Request {
        op: String,
        #[source]
        source: rtnetlink::Error,
    },
    #[error("cannot start the netlink runtime: {0}")]
    Runtime(#[source] std::io::Error),
}

/// Parses Proxmox's `trunks=` value: VLAN IDs and ranges separated by
/// `;` (the API also accepts spaces or commas inside the property value).
pub fn parse_trunks(text: &str) -> Result<Vec<(u16, u16)>, PortError> {
    let bad = || PortError::BadTrunks(text.to_string());
    let mut out = Vec::new();
    for part in text
        .split([';', ' ', ','])
        .map(str::trim)
        .filter(|p| !p.is_empty())
    {
        let (a, z) = match part.split_once('-') {
            Some((a, z)) => (a.parse().map_err(|_| bad())?, z.parse().map_err(|_| bad())?),
            None => {
                let v = part.parse().map_err(|_| bad())?;
                (v, v)
            }
        };
        if a > z {
            return Err(bad());
        }
        check_vid(a)?;
        check_vid(z)?;
        out.push((a, z));
    }
    if out.is_empty() {
        return Err(bad());
    }
    Ok(out)
}

fn check_vid(v: u16) -> Result<(), PortError> {
    if (1..=4094).contains(&v) {
        Ok(())
    } else {
        Err(PortError::BadVlan(v))
    }
}

/// The VLAN entries a port of a VLAN-aware bridge should carry, as
/// `(vid, pvid_untagged)`.
pub fn wanted_vlans(spec: &PortSpec) -> Vec<(u16, bool)> {
    let access = spec.tag.unwrap_or(1);
    let mut out = vec![(access, true)];
    for &(a, z) in &spec.trunks {
        for v in a..=z {
            if v != access {
                out.push((v, false));
            }
        }
    }
    out.sort_unstable();
    out.dedup();
    out
}

/// Checks a spec against the bridge it is for, without changing anything.
pub fn check(spec: &PortSpec, bridge: &Link) -> Result<(), PortError> {
    if !bridge.is_bridge {
        return Err(PortError::NotABridge(bridge.name.clone()));
    }
    if let Some(t) = spec.tag {
        check_vid(t)?;
    }
    for &(a, z) in &spec.trunks {
        check_vid(a)?;
        check_vid(z)?;
    }
    if (spec.tag.is_some() || !spec.trunks.is_empty()) && !bridge.vlan_filtering {
        return Err(PortError::NotVlanAware(bridge.name.clone()));
    }
    if let (Some(mtu), Some(bridge_mtu)) = (spec.mtu, bridge.mtu) {
        if mtu > bridge_mtu {
            return Err(PortError::MtuTooLarge {
                mtu,
                bridge: bridge.name.clone(),
                bridge_mtu,
            });
        }
    }
    Ok(())
}

/// Puts `port` into `bridge` as `spec` asks, and brings it up.
pub async fn attach(nl: &Rtnl, port: &str, bridge: &str, spec: &PortSpec) -> Result<(), PortError> {
    let bridge_link = nl
        .link(bridge)
        .await?
        .ok_or_else(|| PortError::NoBridge(bridge.to_string()))?;
    check(spec, &bridge_link)?;
    let port_link = nl.require_link(port).await?;
    let h = nl.handle();
    let request = |op: String| move |source| PortError::Request { op, source };
    if let Some(mtu) = spec.mtu.or(bridge_link.mtu) {
        if port_link.mtu != Some(mtu) {
            h.link()
                .change(LinkUnspec::new_with_index(port_link.index).mtu(mtu).build())
                .execute()
                .await
                .map_err(request(format!("set the MTU of {port} to {mtu}")))?;
        }
    }
    if port_link.controller != Some(bridge_link.index) {
        nl.set_controller(&port_link, &bridge_link).await?;
    }
    if bridge_link.vlan_filtering {
        let have = port_vlans(nl, port_link.index).await?;
        let want = wanted_vlans(spec);
        let stale: Vec<u16> = have
            .iter()
            .map(|&(v, _)| v)
            .filter(|v| !want.iter().any(|(w, _)| w == v))
            .collect();
        for (vid, access) in want.iter().copied() {
            if have.contains(&(vid, access)) {
                continue;
            }
            let flags = if access {
                BridgeVlanInfoFlags::Pvid | BridgeVlanInfoFlags::Untagged
            } else {
                BridgeVlanInfoFlags::empty()
            };
            h.link()
                .set(
                    LinkBridgeVlan::new(port_link.index)
                        .vlan(vid, flags)
                        .build(),
                )
                .execute()
                .await
                .map_err(request(format!("add VLAN {vid} to {port}")))?;
        }
        for vid in stale {
            h.link()
                .del_with_message(
                    LinkBridgeVlan::new(port_link.index)
                        .vlan(vid, BridgeVlanInfoFlags::empty())
                        .build(),
                )
                .execute()
                .await
                .map_err(request(format!("remove VLAN {vid} from {port}")))?;
        }
    }
    nl.set_up(&port_link).await?;
    Ok(())
}

/// A container's end of a veth pair: its name inside the container, MAC,
/// and the process whose network namespace it goes to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VethPeer {
    pub name: String,
    pub mac: Option<[u8; 6]>,
    pub netns_pid: u32,
}

/// Creates the veth pair `host` / `peer` in one request: the peer directly
/// in its network namespace, both ends with the spec's MTU or else the
/// bridge's (`spec` checked against `bridge` first). The host end is left
/// down and outside the bridge; [`join_veth_port`] puts it there. A
/// container start makes the pair before the guest's init runs (its
/// `eth0` must be there when the guest looks) and joins the bridge while
/// the init starts: the join is half of what the kernel does for the
/// whole port (sysfs links, promiscuity, STP, the bridge's and IPv6's
/// notifiers), and the guest's link has no carrier until the host end is
/// up, as with a cable plugged in a moment later.
///
/// Both ends get one transmit and one receive queue. Without them the
/// kernel allocates one of each per possible CPU, registers them in sysfs
/// and then, as veth uses one until XDP asks for more, drops the rest
/// again behind an RCU grace period, all inside the request: a quarter of
/// a millisecond to a millisecond of a container's start under
/// emulation, and more on hosts with many CPUs.
///
/// The requests go over a blocking socket: their caller, the container
/// monitor, has no async runtime, and starting one for a single request
/// cost a container start more than the request.
pub fn create_veth_pair(
    nl: &mut SyncRtnl,
    host: &str,
    peer: &VethPeer,
    bridge: Option<&Link>,
    spec: &PortSpec,
) -> Result<(), PortError> {
    let msg = veth_pair_message(host, peer, bridge, spec)?;
    nl.create_link(msg, format!("create the veth pair {host} / {}", peer.name))
        .map_err(port_error)
}

/// Puts the host end `host` of a pair made by [`create_veth_pair`] into
/// `bridge` and brings it up, in one request (without a bridge it is only
/// brought up). On a VLAN-aware bridge the port's VLANs are then set by
/// [`attach`], on a runtime started for it (several more requests).
pub fn join_veth_port(
    nl: &mut SyncRtnl,
    host: &str,
    bridge: Option<&Link>,
    spec: &PortSpec,
) -> Result<(), PortError> {
    let mut m = LinkUnspec::new_with_name(host).up();
    if let Some(b) = bridge {
        m = m.controller(b.index);
    }
    nl.set_link(m.build(), format!("put {host} into its bridge and up"))
        .map_err(port_error)?;
    match bridge {
        Some(b) if b.vlan_filtering => blocking(async |nl| attach(nl, host, &b.name, spec).await),
        _ => Ok(()),
    }
}

fn port_error(e: RtnlError) -> PortError {
    match e {
        RtnlError::Request { op, source } => PortError::Request { op, source },
        other => PortError::Netlink(other),
    }
}

/// The one `RTM_NEWLINK` of [`create_veth_pair`], after checking `spec`
/// against `bridge`.
fn veth_pair_message(
    host: &str,
    peer: &VethPeer,
    bridge: Option<&Link>,
    spec: &PortSpec,
) -> Result<LinkMessage, PortError> {
    if let Some(b) = bridge {
        check(spec, b)?;
    }
    let mtu = spec.mtu.or(bridge.and_then(|b| b.mtu));
    let mut p = LinkMessageBuilder::<LinkUnspec>::new()
        .name(peer.name.clone())
        .setns_by_pid(peer.netns_pid)
        .append_extra_attribute(LinkAttribute::NumTxQueues(1))
        .append_extra_attribute(LinkAttribute::NumRxQueues(1));
    if let Some(mac) = peer.mac {
        p = p.address(mac.to_vec());
    }
    let mut m = LinkMessageBuilder::<LinkUnspec>::new_with_info_kind(InfoKind::Veth)
        .name(host.to_string())
        .append_extra_attribute(LinkAttribute::NumTxQueues(1))
        .append_extra_attribute(LinkAttribute::NumRxQueues(1));
    if let Some(mtu) = mtu {
        p = p.mtu(mtu);
        m = m.mtu(mtu);
    }
    Ok(m.set_info_data(InfoData::Veth(InfoVeth::Peer(p.build())))
        .build())
}

/// Runs `f` with a netlink connection on a runtime of the calling thread,
/// for callers without an async runtime (the container monitor). `f`'s
/// error type is the caller's, as long as a [`PortError`] converts to it.
pub fn blocking<R, E: From<PortError>>(f: impl AsyncFnOnce(&Rtnl) -> Result<R, E>) -> Result<R, E> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_io()
        .enable_time()
        .build()
        .map_err(PortError::Runtime)?;
    rt.block_on(async {
        let nl = Rtnl::connect().map_err(PortError::from)?;
        f(&nl).await
    })
}

/// The VLANs of bridge port `index`, as `(vid, pvid_untagged)`, one entry
/// per VLAN.
pub async fn port_vlans(nl: &Rtnl, index: u32) -> Result<Vec<(u16, bool)>, PortError> {
    let msgs: Vec<_> = nl
        .handle()
        .link()
        .get()
        .set_filter_mask(AddressFamily::Bridge, vec![LinkExtentMask::Brvlan])
        .execute()
        .try_collect()
        .await
        .map_err(|source| PortError::Request {
            op: "list bridge port VLANs".to_string(),
            source,
        })?;
    let mut out = Vec::new();
    for m in msgs.iter().filter(|m| m.header.index == index) {
        for a in &m.attributes {
            let LinkAttribute::AfSpecBridge(specs) = a else {
                continue;
            };
            for s in specs {
                if let rtnetlink::packet_route::link::AfSpecBridge::VlanInfo(v) = s {
                    let access = v.flags.contains(BridgeVlanInfoFlags::Pvid)
                        && v.flags.contains(BridgeVlanInfoFlags::Untagged);
                    out.push((v.vid, access));
                }
            }
        }
    }
    out.sort_unstable();
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bridge(vlan_filtering: bool) -> Link {
        Link {
            index: 3,
            name: "vmbr1".into(),
            mac: None,
            up: true,
            lower_up: true,
            controller: None,
            alias: None,
            is_bridge: true,
            vlan_filtering,
            mtu: Some(1500),
        }
    }

    #[test]
    fn trunks_parse_like_proxmox() {
        assert_eq!(parse_trunks("10;20-22").unwrap(), vec![(10, 10), (20, 22)]);
        assert_eq!(parse_trunks(" 7 ").unwrap(), vec![(7, 7)]);
        for bad in ["", "x", "5-2", "0", "4095", "10;;a", "1-4095"] {
            assert!(parse_trunks(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn vlans_wanted_for_a_tag_and_trunks() {
        assert_eq!(wanted_vlans(&PortSpec::default()), vec![(1, true)]);
        let spec = PortSpec {
            tag: Some(20),
            trunks: vec![(19, 21), (30, 30)],
            mtu: None,
        };
        assert_eq!(
            wanted_vlans(&spec),
            vec![(19, false), (20, true), (21, false), (30, false)]
        );
    }

    #[test]
    fn tags_need_a_vlan_aware_bridge_and_mtu_fits() {
        let tagged = PortSpec {
            tag: Some(5),
            ..PortSpec::default()
        };
        assert!(matches!(
            check(&tagged, &bridge(false)),
            Err(PortError::NotVlanAware(_))
        ));
        check(&tagged, &bridge(true)).unwrap();
        check(&PortSpec::default(), &bridge(false)).unwrap();
        let big = PortSpec {
            mtu: Some(9000),
            ..PortSpec::default()
        };
        assert!(matches!(
            check(&big, &bridge(true)),
            Err(PortError::MtuTooLarge { .. })
        ));
        let zero = PortSpec {
            tag: Some(0),
            ..PortSpec::default()
        };
        assert!(matches!(
            check(&zero, &bridge(true)),
            Err(PortError::BadVlan(0))
        ));
    }
}
