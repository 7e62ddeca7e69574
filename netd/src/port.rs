//! Guest ports: the tap of a VM or the host end of a container's veth,
//! put into a bridge the way a guest's `net[n]` asks.
//!
//! - The port takes the bridge's MTU (or the guest's `mtu=` if smaller
//!   or equal; a port larger than its bridge would drop frames).
//! - On a VLAN-aware bridge the port's VLAN list is set exactly, as
//!   Proxmox VE sets it: with `tag=N`, VLAN N is the PVID and leaves
//!   untagged; without a tag, VLAN 1 is the untagged PVID. `trunks=` adds
//!   those VLANs tagged; a port with neither tag nor trunks carries every
//!   other VLAN (2-4094) tagged, so that a guest doing its own tagging
//!   reaches them all. The kernel's default VLAN 1 goes where it is not
//!   wanted.
//! - On a bridge without VLAN filtering, a tag puts the port into the
//!   bridge's VLAN bridge `<bridge>v<tag>` instead, as Proxmox does: a
//!   bridge of its own for that VLAN whose uplink is the VLAN link
//!   `<port>.<tag>` of each physical port of the bridge (`eth…`, `en…`,
//!   `bond…`), made when the first guest asks for it and left in place
//!   (see [`vlan_bridge`]). Trunks are refused there rather than ignored:
//!   only a VLAN-aware bridge can pass several VLANs to one port.
//!
//! The same call serves `apid` (VM taps) and `ctr` (container veths);
//! calling it again on an attached port converges to the same state.

use futures_util::TryStreamExt;
use rtnetlink::packet_route::link::LinkMessage;
use rtnetlink::packet_route::link::{
    BridgeVlanInfoFlags, InfoData, InfoKind, InfoVeth, InfoVlan, LinkAttribute, LinkExtentMask,
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
    /// `rate=`, in bytes per second both ways ([`crate::ratelimit`]);
    /// `None` for no limit.
    pub rate: Option<u64>,
    /// `link_down=1`: the port joins its bridge but stays down (the
    /// guest's link has no carrier), as a cable pulled out.
    pub down: bool,
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
    #[error("trunks need a VLAN-aware bridge; '{0}' is not one (set bridge-vlan-aware yes)")]
    NotVlanAware(String),
    #[error("VLAN {tag} on bridge '{bridge}', which is not VLAN-aware, needs a physical port (eth*, en*, bond*) in it to carry the VLAN; it has none (or set bridge-vlan-aware yes)")]
    NoUplink { bridge: String, tag: u16 },
    #[error("the VLAN bridge for VLAN {tag} of '{bridge}' would be named '{name}', longer than the kernel's 15 characters")]
    NameTooLong {
        bridge: String,
        tag: u16,
        name: String,
    },
    #[error("'{0}' exists and is not a bridge: it cannot be the VLAN bridge")]
    NotAVlanBridge(String),
    #[error("'{link}' is already a port of '{other}', not of the VLAN bridge '{bridge}'")]
    UplinkTaken {
        link: String,
        other: String,
        bridge: String,
    },
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
    #[error("rate limit on {0}: the kernel has no match-all classifier or police action (cls_matchall, act_police) to limit what the guest sends; no limit was set")]
    NoPolicing(String),
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
/// `(vid, pvid_untagged)`: the access VLAN (the tag, or 1), the trunks,
/// and, for a port with neither, every VLAN from 2 to 4094 (Proxmox VE's
/// rule for an untagged guest port).
pub fn wanted_vlans(spec: &PortSpec) -> Vec<(u16, bool)> {
    let access = spec.tag.unwrap_or(1);
    let mut out = vec![(access, true)];
    let all = [(2, 4094)];
    let trunks: &[(u16, u16)] = if spec.tag.is_none() && spec.trunks.is_empty() {
        &all
    } else {
        &spec.trunks
    };
    for &(a, z) in trunks {
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
    if !spec.trunks.is_empty() && !bridge.vlan_filtering {
        return Err(PortError::NotVlanAware(bridge.name.clone()));
    }
    if spec.tag.is_some() && !bridge.vlan_filtering {
        // The caller puts the port into the VLAN bridge instead
        // ([`resolve_vlan_bridge`]); a tag left here would be lost.
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
    let (bridge_link, spec) = resolve_vlan_bridge(nl, bridge_link, spec).await?;
    let spec = &spec;
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
        use std::collections::BTreeSet;
        let have: BTreeSet<(u16, bool)> =
            port_vlans(nl, port_link.index).await?.into_iter().collect();
        let want = wanted_vlans(spec);
        let wanted_ids: BTreeSet<u16> = want.iter().map(|&(v, _)| v).collect();
        let stale: Vec<u16> = have
            .iter()
            .map(|&(v, _)| v)
            .filter(|v| !wanted_ids.contains(v))
            .collect();
        // The access VLAN alone (the kernel takes no PVID on a range),
        // then the tagged ones in ranges: one request for 2-4094.
        let missing: Vec<(u16, bool)> =
            want.iter().copied().filter(|w| !have.contains(w)).collect();
        if let Some(&(vid, _)) = missing.iter().find(|(_, access)| *access) {
            h.link()
                .set(
                    LinkBridgeVlan::new(port_link.index)
                        .vlan(
                            vid,
                            BridgeVlanInfoFlags::Pvid | BridgeVlanInfoFlags::Untagged,
                        )
                        .build(),
                )
                .execute()
                .await
                .map_err(request(format!("add VLAN {vid} to {port}")))?;
        }
        let tagged: Vec<u16> = missing
            .iter()
            .filter(|(_, access)| !access)
            .map(|&(v, _)| v)
            .collect();
        if !tagged.is_empty() {
            h.link()
                .set(vlan_ranges(port_link.index, &tagged))
                .execute()
                .await
                .map_err(request(format!("add VLANs to {port}")))?;
        }
        if !stale.is_empty() {
            h.link()
                .del_with_message(vlan_ranges(port_link.index, &stale))
                .execute()
                .await
                .map_err(request(format!("remove VLANs from {port}")))?;
        }
    }
    if !spec.down {
        nl.set_up(&port_link).await?;
    } else if port_link.up {
        nl.set_down(&port_link).await?;
    }
    if spec.rate.is_some() {
        crate::ratelimit::set(nl, &port_link, spec.rate).await?;
    }
    Ok(())
}

/// [`attach`] for a port that may be attached already, as a running
/// guest's port whose settings change: it may also have to lose a rate
/// limit it has (`attach` sets one only when the spec has it).
pub async fn replug(nl: &Rtnl, port: &str, bridge: &str, spec: &PortSpec) -> Result<(), PortError> {
    attach(nl, port, bridge, spec).await?;
    if spec.rate.is_none() {
        let link = nl.require_link(port).await?;
        crate::ratelimit::set(nl, &link, None).await?;
    }
    Ok(())
}

/// The bridge and spec a port really goes to: for a tag on a bridge
/// without VLAN filtering (and no trunks, which [`check`] refuses there),
/// the VLAN bridge of that tag ([`vlan_bridge`]) with the tag taken off,
/// since the VLAN bridge's uplink carries it; otherwise both unchanged.
pub async fn resolve_vlan_bridge(
    nl: &Rtnl,
    bridge: Link,
    spec: &PortSpec,
) -> Result<(Link, PortSpec), PortError> {
    match spec.tag {
        Some(tag) if bridge.is_bridge && !bridge.vlan_filtering && spec.trunks.is_empty() => {
            let vlan = vlan_bridge(nl, &bridge, tag).await?;
            let spec = PortSpec {
                tag: None,
                ..spec.clone()
            };
            Ok((vlan, spec))
        }
        _ => Ok((bridge, spec.clone())),
    }
}

/// The name of the VLAN bridge for `tag` on `bridge` (`vmbr0v5`).
pub fn vlan_bridge_name(bridge: &str, tag: u16) -> String {
    format!("{bridge}v{tag}")
}

/// Whether `name` is a port that can carry a bridge's VLANs out of the
/// host, by Proxmox's rule: `eth<n>`, `bond<n>` or `en…`, or a VLAN of
/// one (`eno1.100`).
pub fn is_uplink_name(name: &str) -> bool {
    let (base, vlan) = match name.split_once('.') {
        Some((b, v)) => (b, Some(v)),
        None => (name, None),
    };
    if vlan.is_some_and(|v| v.is_empty() || !v.bytes().all(|c| c.is_ascii_digit())) {
        return false;
    }
    let numbered = |prefix: &str| {
        base.strip_prefix(prefix)
            .is_some_and(|n| !n.is_empty() && n.bytes().all(|c| c.is_ascii_digit()))
    };
    numbered("eth") || numbered("bond") || base.strip_prefix("en").is_some_and(|r| !r.is_empty())
}

/// Makes sure the VLAN bridge `<bridge>v<tag>` of a bridge without VLAN
/// filtering is there and up, with the VLAN link `<port>.<tag>` of each
/// of the bridge's uplinks ([`is_uplink_name`]) up and in it, and returns
/// it: Proxmox's way of putting a tagged guest on such a bridge. What
/// exists already is used as it is (another guest on the same VLAN made
/// it, or one started at the same moment: a link that appeared between
/// the look and the request is taken). Nothing is taken down when the
/// last guest leaves, as under Proxmox. The new links get no IPv6
/// addresses of their own: the host has no business on a guest VLAN.
/// They are not marked as netd's, so an apply of the interfaces file
/// leaves them alone.
pub async fn vlan_bridge(nl: &Rtnl, bridge: &Link, tag: u16) -> Result<Link, PortError> {
    check_vid(tag)?;
    let name = vlan_bridge_name(&bridge.name, tag);
    let too_long = |name: &str| {
        (name.len() > 15).then(|| PortError::NameTooLong {
            bridge: bridge.name.clone(),
            tag,
            name: name.to_string(),
        })
    };
    if let Some(e) = too_long(&name) {
        return Err(e);
    }
    let all: Vec<Link> = nl
        .handle()
        .link()
        .get()
        .execute()
        .map_ok(|m| Link::from_message(&m))
        .try_collect()
        .await
        .map_err(|source| PortError::Request {
            op: "list links".into(),
            source,
        })?;
    let uplinks: Vec<&Link> = all
        .iter()
        .filter(|l| l.controller == Some(bridge.index) && is_uplink_name(&l.name))
        .collect();
    if uplinks.is_empty() {
        return Err(PortError::NoUplink {
            bridge: bridge.name.clone(),
            tag,
        });
    }
    let request = |op: String| move |source| PortError::Request { op, source };
    let exists = |e: &rtnetlink::Error| crate::rtnl::errno_of(e) == Some(libc::EEXIST);
    let vlan_bridge = match all.iter().find(|l| l.name == name) {
        Some(l) => l.clone(),
        None => {
            if let Err(e) = nl.create_bridge(&name, None).await {
                match &e {
                    RtnlError::Request { source, .. } if exists(source) => {}
                    _ => return Err(e.into()),
                }
            }
            disable_ipv6(&name);
            nl.require_link(&name).await?
        }
    };
    if !vlan_bridge.is_bridge {
        return Err(PortError::NotAVlanBridge(name));
    }
    // The parent's MTU and its bridge settings, as Proxmox copies them.
    if let Some(mtu) = bridge.mtu.filter(|&m| vlan_bridge.mtu != Some(m)) {
        nl.handle()
            .link()
            .change(
                LinkUnspec::new_with_index(vlan_bridge.index)
                    .mtu(mtu)
                    .build(),
            )
            .execute()
            .await
            .map_err(request(format!("set the MTU of {name} to {mtu}")))?;
    }
    copy_bridge_settings(&bridge.name, &name);
    for uplink in uplinks {
        let vname = format!("{}.{tag}", uplink.name);
        if let Some(e) = too_long(&vname) {
            return Err(e);
        }
        let vlan = match all.iter().find(|l| l.name == vname) {
            Some(l) => l.clone(),
            None => {
                let msg = LinkMessageBuilder::<LinkUnspec>::new_with_info_kind(InfoKind::Vlan)
                    .name(vname.clone())
                    .link(uplink.index)
                    .set_info_data(InfoData::Vlan(vec![InfoVlan::Id(tag)]))
                    .build();
                if let Err(e) = nl.handle().link().add(msg).execute().await {
                    if !exists(&e) {
                        return Err(request(format!("create the VLAN link {vname}"))(e));
                    }
                }
                disable_ipv6(&vname);
                nl.require_link(&vname).await?
            }
        };
        match vlan.controller {
            Some(c) if c == vlan_bridge.index => {}
            Some(c) => {
                let other = all
                    .iter()
                    .find(|l| l.index == c)
                    .map_or_else(|| c.to_string(), |l| l.name.clone());
                return Err(PortError::UplinkTaken {
                    link: vname,
                    other,
                    bridge: name,
                });
            }
            None => nl.set_controller(&vlan, &vlan_bridge).await?,
        }
        if !vlan.up {
            nl.set_up(&vlan).await?;
        }
    }
    if !vlan_bridge.up {
        nl.set_up(&vlan_bridge).await?;
    }
    // Looked up again, with the state and MTU it has now.
    Ok(nl.require_link(&name).await?)
}

/// Copies the bridge settings Proxmox copies to a VLAN bridge (ageing,
/// STP and its timers, multicast snooping and querier) from `from` to
/// `to` through sysfs, where they differ. Best effort: a setting the
/// kernel refuses is logged and the port still attached.
fn copy_bridge_settings(from: &str, to: &str) {
    const SETTINGS: [&str; 8] = [
        "ageing_time",
        "stp_state",
        "priority",
        "forward_delay",
        "hello_time",
        "max_age",
        "multicast_snooping",
        "multicast_querier",
    ];
    let read = |bridge: &str, s: &str| {
        std::fs::read_to_string(format!("/sys/class/net/{bridge}/bridge/{s}"))
            .map(|v| v.trim().to_string())
    };
    for setting in SETTINGS {
        let Ok(value) = read(from, setting) else {
            continue;
        };
        if read(to, setting).is_ok_and(|v| v == value) {
            continue;
        }
        let path = format!("/sys/class/net/{to}/bridge/{setting}");
        if let Err(e) = std::fs::write(&path, &value) {
            tracing::warn!("{to}: {setting} not copied from {from}: {e}");
        }
    }
}

/// Turns IPv6 off on a link netd made for guests' traffic only (best
/// effort: a kernel without IPv6 has no such switch).
fn disable_ipv6(name: &str) {
    let _ = std::fs::write(format!("/proc/sys/net/ipv6/conf/{name}/disable_ipv6"), "1");
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
    let mut m = LinkUnspec::new_with_name(host);
    if !spec.down {
        m = m.up();
    }
    if let Some(b) = bridge {
        m = m.controller(b.index);
    }
    nl.set_link(m.build(), format!("put {host} into its bridge and up"))
        .map_err(port_error)?;
    match bridge {
        // `attach` also sets the rate limit.
        Some(b) if b.vlan_filtering => blocking(async |nl| attach(nl, host, &b.name, spec).await),
        _ if spec.rate.is_some() => blocking(async |nl| {
            let port = nl.require_link(host).await?;
            crate::ratelimit::set(nl, &port, spec.rate).await
        }),
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

/// An `AF_BRIDGE` message for port `index` listing `vids` (tagged, no
/// flags) as ranges of consecutive IDs.
fn vlan_ranges(index: u32, vids: &[u16]) -> LinkMessage {
    let mut sorted = vids.to_vec();
    sorted.sort_unstable();
    sorted.dedup();
    let mut b = LinkBridgeVlan::new(index);
    let none = BridgeVlanInfoFlags::empty();
    for (a, z) in runs(&sorted) {
        b = if a == z {
            b.vlan(a, none)
        } else {
            b.vlan_range_start(a, none).vlan_range_end(z, none)
        };
    }
    b.build()
}

/// Sorted IDs as runs of consecutive ones, `(first, last)`.
fn runs(sorted: &[u16]) -> Vec<(u16, u16)> {
    let mut out: Vec<(u16, u16)> = Vec::new();
    for &v in sorted {
        match out.last_mut() {
            Some((_, z)) if z.checked_add(1) == Some(v) => *z = v,
            _ => out.push((v, v)),
        }
    }
    out
}

/// The VLANs of bridge port `index`, as `(vid, pvid_untagged)`, one entry
/// per VLAN.
pub async fn port_vlans(nl: &Rtnl, index: u32) -> Result<Vec<(u16, bool)>, PortError> {
    let msgs: Vec<_> = nl
        .handle()
        .link()
        .get()
        .set_filter_mask(
            AddressFamily::Bridge,
            vec![LinkExtentMask::BrvlanCompressed],
        )
        .execute()
        .try_collect()
        .await
        .map_err(|source| PortError::Request {
            op: "list bridge port VLANs".to_string(),
            source,
        })?;
    // Compressed: a run of VLANs with the same flags comes as its first
    // and last entry, so a trunk of 4093 VLANs is two entries, not 4093.
    let mut out = Vec::new();
    let mut begin = None;
    for m in msgs.iter().filter(|m| m.header.index == index) {
        for a in &m.attributes {
            let LinkAttribute::AfSpecBridge(specs) = a else {
                continue;
            };
            for s in specs {
                let rtnetlink::packet_route::link::AfSpecBridge::VlanInfo(v) = s else {
                    continue;
                };
                let access = v.flags.contains(BridgeVlanInfoFlags::Pvid)
                    && v.flags.contains(BridgeVlanInfoFlags::Untagged);
                if v.flags.contains(BridgeVlanInfoFlags::RangeBegin) {
                    begin = Some(v.vid);
                } else if v.flags.contains(BridgeVlanInfoFlags::RangeEnd) {
                    let first = begin.take().unwrap_or(v.vid);
                    out.extend((first..=v.vid).map(|vid| (vid, access)));
                } else {
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
        // Untagged without trunks: VLAN 1 untagged, every other tagged.
        let untagged = wanted_vlans(&PortSpec::default());
        assert_eq!(untagged.len(), 4094);
        assert_eq!(untagged[0], (1, true));
        assert!(untagged[1..].iter().all(|&(_, access)| !access));
        assert_eq!(untagged[4093], (4094, false));
        // A tag alone: that VLAN only.
        let tagged = PortSpec {
            tag: Some(7),
            ..PortSpec::default()
        };
        assert_eq!(wanted_vlans(&tagged), vec![(7, true)]);
        assert_eq!(runs(&[2, 3, 4, 9, 11, 12]), vec![(2, 4), (9, 9), (11, 12)]);
        assert_eq!(runs(&[4094]), vec![(4094, 4094)]);
        let spec = PortSpec {
            tag: Some(20),
            trunks: vec![(19, 21), (30, 30)],
            ..PortSpec::default()
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

    #[test]
    fn uplinks_are_named_as_proxmox_finds_them() {
        for name in [
            "eth0", "eth12", "bond0", "eno1", "enp3s0f1", "ens18", "eno1.100",
        ] {
            assert!(is_uplink_name(name), "{name}");
        }
        for name in [
            "veth100i0",
            "tap100i0",
            "vmbr0",
            "eth",
            "ethx",
            "bond",
            "en",
            "eno1.",
            "eno1.x",
            "lo",
            "fwpr100p0",
            "dummy0",
        ] {
            assert!(!is_uplink_name(name), "{name}");
        }
        assert_eq!(vlan_bridge_name("vmbr0", 5), "vmbr0v5");
    }
}
