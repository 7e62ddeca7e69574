//! Reading the [`Observed`] state from netlink dumps and carrying out
//! [`Op`]s over rtnetlink.
//!
//! Link changes go out as `RTM_NEWLINK` without `NLM_F_CREATE` (see
//! [`crate::rtnl`]), so an attribute the kernel cannot apply (VLAN
//! filtering on a kernel without it, say) fails the operation instead of
//! being dropped silently.

use std::collections::HashMap;
use std::net::IpAddr;

use futures_util::TryStreamExt;
use ipnet::IpNet;
use rtnetlink::packet_route::address::{AddressAttribute, AddressMessage, AddressProtocol};
use rtnetlink::packet_route::link::{
    AfSpecBridge, BridgeStpState, BridgeVlanInfoFlags, InfoBond, InfoBridge, InfoData, InfoKind,
    InfoVlan, LinkAttribute, LinkExtentMask, LinkFlags, LinkInfo, LinkMessage,
};
use rtnetlink::packet_route::route::{
    RouteAddress, RouteAttribute, RouteHeader, RouteMessage, RouteProtocol,
};
use rtnetlink::packet_route::AddressFamily;
use rtnetlink::{LinkBridgeVlan, LinkMessageBuilder, LinkUnspec, RouteMessageBuilder};

use super::{
    Observed, ObservedAddr, ObservedKind, ObservedLink, ObservedRoute, Op, Route, IFAPROT_OXBOW,
    ROUTE_TABLE_MAIN, RTPROT_OXBOW,
};
use crate::interfaces::{BondMode, XmitHashPolicy};
use crate::rtnl::{Rtnl, RtnlError};
use crate::OWNER_ALIAS;

/// A failure while observing or applying.
#[derive(Debug, thiserror::Error)]
pub enum KernelError {
    /// A netlink request failed.
    #[error("{op}: {source}")]
    Request {
        /// What was asked.
        op: String,
        /// The kernel's answer.
        #[source]
        source: rtnetlink::Error,
    },
    /// An operation names a link that does not exist.
    #[error("{op}: interface {name} does not exist")]
    NoSuchLink {
        /// What was asked.
        op: String,
        /// The link.
        name: String,
    },
    /// A lookup failed.
    #[error(transparent)]
    Rtnl(#[from] RtnlError),
}

fn failed(op: &Op) -> impl FnOnce(rtnetlink::Error) -> KernelError + '_ {
    move |source| KernelError::Request {
        op: op.to_string(),
        source,
    }
}

fn errno(e: &rtnetlink::Error) -> Option<i32> {
    match e {
        rtnetlink::Error::NetlinkError(m) => m.code.map(|c| -c.get()),
        _ => None,
    }
}

fn kind_of(m: &LinkMessage, names: &HashMap<u32, String>) -> ObservedKind {
    let mut kind = None;
    let mut data = None;
    let mut lower = None;
    for a in &m.attributes {
        match a {
            LinkAttribute::LinkInfo(infos) => {
                for i in infos {
                    match i {
                        LinkInfo::Kind(k) => kind = Some(k.clone()),
                        LinkInfo::Data(d) => data = Some(d.clone()),
                        _ => {}
                    }
                }
            }
            LinkAttribute::Link(l) => lower = names.get(l).cloned(),
            _ => {}
        }
    }
    match (kind, data) {
        (Some(InfoKind::Bridge), d) => {
            let mut stp = false;
            let mut forward_delay = None;
            let mut vlan_filtering = false;
            if let Some(InfoData::Bridge(attrs)) = d {
                for a in &attrs {
                    match a {
                        InfoBridge::StpState(s) => stp = *s != BridgeStpState::Disabled,
                        // Centiseconds in the kernel.
                        InfoBridge::ForwardDelay(fd) => forward_delay = Some(fd / 100),
                        InfoBridge::VlanFiltering(v) => vlan_filtering = *v,
                        _ => {}
                    }
                }
            }
            ObservedKind::Bridge {
                stp,
                forward_delay,
                vlan_filtering,
            }
        }
        (Some(InfoKind::Bond), d) => {
            let mut mode = BondMode::BalanceRr;
            let mut miimon = None;
            let mut xmit_hash_policy = None;
            if let Some(InfoData::Bond(attrs)) = d {
                for a in &attrs {
                    match a {
                        InfoBond::Mode(m) => {
                            mode = u8::from(*m).to_string().parse().unwrap_or(mode);
                        }
                        InfoBond::MiiMon(n) => miimon = Some(*n),
                        InfoBond::XmitHashPolicy(p) => {
                            let n = u8::from(*p) as usize;
                            xmit_hash_policy = [
                                XmitHashPolicy::Layer2,
                                XmitHashPolicy::Layer34,
                                XmitHashPolicy::Layer23,
                                XmitHashPolicy::Encap23,
                                XmitHashPolicy::Encap34,
                                XmitHashPolicy::VlanSrcMac,
                            ]
                            .get(n)
                            .copied();
                        }
                        _ => {}
                    }
                }
            }
            ObservedKind::Bond {
                mode,
                miimon,
                xmit_hash_policy,
            }
        }
        (Some(InfoKind::Vlan), Some(InfoData::Vlan(attrs))) => {
            let id = attrs
                .iter()
                .find_map(|a| match a {
                    InfoVlan::Id(id) => Some(*id),
                    _ => None,
                })
                .unwrap_or(0);
            ObservedKind::Vlan {
                raw_device: lower.unwrap_or_default(),
                id,
            }
        }
        (Some(k), _) => ObservedKind::Other(Some(k.to_string())),
        (None, _) => ObservedKind::Other(None),
    }
}

pub(crate) fn vid_ranges(m: &LinkMessage) -> Option<Vec<(u16, u16)>> {
    let mut out = Vec::new();
    let mut start = None;
    let mut any = false;
    for a in &m.attributes {
        let LinkAttribute::AfSpecBridge(specs) = a else {
            continue;
        };
        for s in specs {
            let AfSpecBridge::VlanInfo(v) = s else {
                continue;
            };
            any = true;
            if v.flags.contains(BridgeVlanInfoFlags::RangeBegin) {
                start = Some(v.vid);
            } else if v.flags.contains(BridgeVlanInfoFlags::RangeEnd) {
                out.push((start.take().unwrap_or(v.vid), v.vid));
            } else {
                out.push((v.vid, v.vid));
            }
        }
    }
    any.then_some(out)
}

/// Reads links, addresses and main-table routes.
pub async fn observe(nl: &Rtnl) -> Result<Observed, KernelError> {
    let h = nl.handle();
    let dump_failed = |what: &'static str| {
        move |source| KernelError::Request {
            op: format!("list {what}"),
            source,
        }
    };
    let msgs: Vec<LinkMessage> = h
        .link()
        .get()
        .execute()
        .try_collect()
        .await
        .map_err(dump_failed("links"))?;
    let names: HashMap<u32, String> = msgs
        .iter()
        .filter_map(|m| {
            m.attributes.iter().find_map(|a| match a {
                LinkAttribute::IfName(n) => Some((m.header.index, n.clone())),
                _ => None,
            })
        })
        .collect();
    // Bridge ports with their VLANs (only VLAN-filtering bridges list any).
    let port_msgs: Vec<LinkMessage> = h
        .link()
        .get()
        .set_filter_mask(
            AddressFamily::Bridge,
            vec![LinkExtentMask::BrvlanCompressed],
        )
        .execute()
        .try_collect()
        .await
        .map_err(dump_failed("bridge ports"))?;
    let vids: HashMap<u32, Vec<(u16, u16)>> = port_msgs
        .iter()
        .filter_map(|m| vid_ranges(m).map(|v| (m.header.index, v)))
        .collect();

    let mut observed = Observed::default();
    for m in &msgs {
        let Some(name) = names.get(&m.header.index) else {
            continue;
        };
        let mut link = ObservedLink {
            name: name.clone(),
            kind: kind_of(m, &names),
            alias: None,
            controller: None,
            mtu: 0,
            up: m.header.flags.contains(LinkFlags::Up),
            vids: vids.get(&m.header.index).cloned(),
        };
        for a in &m.attributes {
            match a {
                LinkAttribute::IfAlias(s) if !s.is_empty() => link.alias = Some(s.clone()),
                LinkAttribute::Controller(c) if *c != 0 => link.controller = names.get(c).cloned(),
                LinkAttribute::Mtu(n) => link.mtu = *n,
                _ => {}
            }
        }
        observed.links.push(link);
    }

    let addrs: Vec<AddressMessage> = h
        .address()
        .get()
        .execute()
        .try_collect()
        .await
        .map_err(dump_failed("addresses"))?;
    for m in addrs {
        let Some(link) = names.get(&m.header.index) else {
            continue;
        };
        let mut local = None;
        let mut address = None;
        let mut protocol = 0;
        for a in &m.attributes {
            match a {
                AddressAttribute::Local(ip) => local = Some(*ip),
                AddressAttribute::Address(ip) => address = Some(*ip),
                AddressAttribute::Protocol(p) => protocol = u8::from(*p),
                _ => {}
            }
        }
        let Some(ip) = local.or(address) else {
            continue;
        };
        let Ok(net) = IpNet::new(ip, m.header.prefix_len) else {
            continue;
        };
        observed.addresses.push(ObservedAddr {
            link: link.clone(),
            net,
            protocol,
        });
    }

    for ipv6 in [false, true] {
        let query = if ipv6 {
            RouteMessageBuilder::<std::net::Ipv6Addr>::new().build()
        } else {
            RouteMessageBuilder::<std::net::Ipv4Addr>::new().build()
        };
        let family = query.header.address_family;
        let routes: Vec<RouteMessage> = h
            .route()
            .get(query)
            .execute()
            .try_collect()
            .await
            .map_err(dump_failed("routes"))?;
        for m in routes {
            if m.header.address_family != family {
                continue;
            }
            let mut table = u32::from(m.header.table);
            let mut dst: Option<IpAddr> = None;
            let mut gateway = None;
            let mut dev = None;
            let mut priority = 0;
            for a in &m.attributes {
                match a {
                    RouteAttribute::Table(t) => table = *t,
                    RouteAttribute::Destination(RouteAddress::Inet(d)) => dst = Some((*d).into()),
                    RouteAttribute::Destination(RouteAddress::Inet6(d)) => dst = Some((*d).into()),
                    RouteAttribute::Gateway(RouteAddress::Inet(g)) => gateway = Some((*g).into()),
                    RouteAttribute::Gateway(RouteAddress::Inet6(g)) => gateway = Some((*g).into()),
                    RouteAttribute::Oif(i) => dev = names.get(i).cloned(),
                    RouteAttribute::Priority(p) => priority = *p,
                    _ => {}
                }
            }
            if table != ROUTE_TABLE_MAIN {
                continue;
            }
            let unspecified: IpAddr = if ipv6 {
                std::net::Ipv6Addr::UNSPECIFIED.into()
            } else {
                std::net::Ipv4Addr::UNSPECIFIED.into()
            };
            let Ok(dst) = IpNet::new(
                dst.unwrap_or(unspecified),
                m.header.destination_prefix_length,
            ) else {
                continue;
            };
            observed.routes.push(ObservedRoute {
                dst,
                gateway,
                dev,
                protocol: u8::from(m.header.protocol),
                table,
                priority,
            });
        }
    }
    Ok(observed)
}

async fn index_of(nl: &Rtnl, op: &Op, name: &str) -> Result<u32, KernelError> {
    match nl.link(name).await? {
        Some(l) => Ok(l.index),
        None => Err(KernelError::NoSuchLink {
            op: op.to_string(),
            name: name.to_string(),
        }),
    }
}

fn bridge_attrs(stp: bool, forward_delay: Option<u32>, vlan_filtering: bool) -> Vec<InfoBridge> {
    let mut v = vec![InfoBridge::StpState(if stp {
        BridgeStpState::KernelStp
    } else {
        BridgeStpState::Disabled
    })];
    if let Some(fd) = forward_delay {
        v.push(InfoBridge::ForwardDelay(fd * 100));
    }
    // Sent only when wanted (or when it must be switched off), so that a
    // kernel without VLAN filtering can still run plain bridges.
    if vlan_filtering {
        v.push(InfoBridge::VlanFiltering(true));
    }
    v
}

fn bond_attrs(
    mode: Option<BondMode>,
    miimon: Option<u32>,
    xmit: Option<XmitHashPolicy>,
) -> Vec<InfoBond> {
    let mut v = Vec::new();
    if let Some(m) = mode {
        v.push(InfoBond::Mode(m.number().into()));
    }
    if let Some(n) = miimon {
        v.push(InfoBond::MiiMon(n));
    }
    if let Some(x) = xmit {
        v.push(InfoBond::XmitHashPolicy(x.number().into()));
    }
    v
}

fn route_message(r: &Route, oif: u32, onlink: bool) -> RouteMessage {
    let protocol = RouteProtocol::from(RTPROT_OXBOW);
    match (r.dst, r.gateway) {
        (IpNet::V4(d), IpAddr::V4(g)) => {
            let b = RouteMessageBuilder::<std::net::Ipv4Addr>::new()
                .destination_prefix(d.network(), d.prefix_len())
                .gateway(g)
                .output_interface(oif)
                .protocol(protocol);
            if onlink { b.onlink() } else { b }.build()
        }
        (IpNet::V6(d), IpAddr::V6(g)) => {
            let b = RouteMessageBuilder::<std::net::Ipv6Addr>::new()
                .destination_prefix(d.network(), d.prefix_len())
                .gateway(g)
                .output_interface(oif)
                .protocol(protocol);
            if onlink { b.onlink() } else { b }.build()
        }
        _ => RouteMessage::default(),
    }
}

async fn change(nl: &Rtnl, op: &Op, msg: LinkMessage) -> Result<(), KernelError> {
    nl.handle()
        .link()
        .change(msg)
        .execute()
        .await
        .map_err(failed(op))
}

/// Sets netd's alias on a link. The kernel ignores `IFLA_IFALIAS` when
/// it creates a link, so creation is followed by this change.
async fn mark(nl: &Rtnl, op: &Op, name: &str) -> Result<(), KernelError> {
    let index = index_of(nl, op, name).await?;
    change(
        nl,
        op,
        LinkUnspec::new_with_index(index).alias(OWNER_ALIAS).build(),
    )
    .await
}

/// Carries out one operation.
pub async fn apply_op(nl: &Rtnl, op: &Op) -> Result<(), KernelError> {
    let h = nl.handle();
    match op {
        Op::DeleteRoute(r) => {
            let oif = index_of(nl, op, &r.dev).await?;
            let mut msg = route_message(r, oif, false);
            msg.header.table = RouteHeader::RT_TABLE_MAIN;
            match h.route().del(msg).execute().await {
                Err(e) if errno(&e) == Some(libc::ESRCH) => Ok(()),
                r => r.map_err(failed(op)),
            }
        }
        Op::DeleteAddress { link, net } => {
            let index = index_of(nl, op, link).await?;
            let mut req = h.address().add(index, net.addr(), net.prefix_len());
            let msg = req.message_mut().clone();
            match h.address().del(msg).execute().await {
                Err(e) if errno(&e) == Some(libc::EADDRNOTAVAIL) => Ok(()),
                r => r.map_err(failed(op)),
            }
        }
        Op::ReleasePort { port, .. } => {
            let index = index_of(nl, op, port).await?;
            change(
                nl,
                op,
                LinkUnspec::new_with_index(index).nocontroller().build(),
            )
            .await
        }
        Op::DeleteLink { name } => {
            let index = index_of(nl, op, name).await?;
            match h.link().del(index).execute().await {
                Err(e) if errno(&e) == Some(libc::ENODEV) => Ok(()),
                r => r.map_err(failed(op)),
            }
        }
        Op::CreateBond {
            name,
            mode,
            miimon,
            xmit_hash_policy,
        } => {
            let msg = LinkMessageBuilder::<LinkUnspec>::new_with_info_kind(InfoKind::Bond)
                .name(name.clone())
                .set_info_data(InfoData::Bond(bond_attrs(
                    Some(*mode),
                    *miimon,
                    *xmit_hash_policy,
                )))
                .build();
            h.link().add(msg).execute().await.map_err(failed(op))?;
            mark(nl, op, name).await
        }
        Op::SetBond {
            name,
            miimon,
            xmit_hash_policy,
        } => {
            let index = index_of(nl, op, name).await?;
            let msg = LinkMessageBuilder::<LinkUnspec>::new_with_info_kind(InfoKind::Bond)
                .index(index)
                .set_info_data(InfoData::Bond(bond_attrs(None, *miimon, *xmit_hash_policy)))
                .build();
            change(nl, op, msg).await
        }
        Op::CreateBridge {
            name,
            stp,
            forward_delay,
            vlan_filtering,
        } => {
            let msg = LinkMessageBuilder::<LinkUnspec>::new_with_info_kind(InfoKind::Bridge)
                .name(name.clone())
                .set_info_data(InfoData::Bridge(bridge_attrs(
                    *stp,
                    *forward_delay,
                    *vlan_filtering,
                )))
                .build();
            h.link().add(msg).execute().await.map_err(failed(op))?;
            mark(nl, op, name).await
        }
        Op::SetBridge {
            name,
            stp,
            forward_delay,
            vlan_filtering,
        } => {
            let index = index_of(nl, op, name).await?;
            let mut attrs = bridge_attrs(*stp, *forward_delay, *vlan_filtering);
            if !vlan_filtering {
                attrs.push(InfoBridge::VlanFiltering(false));
            }
            let msg = LinkMessageBuilder::<LinkUnspec>::new_with_info_kind(InfoKind::Bridge)
                .index(index)
                .set_info_data(InfoData::Bridge(attrs))
                .build();
            change(nl, op, msg).await
        }
        Op::MarkOwned { name } => mark(nl, op, name).await,
        Op::SetController { port, controller } => {
            let index = index_of(nl, op, port).await?;
            let ctrl = index_of(nl, op, controller).await?;
            change(
                nl,
                op,
                LinkUnspec::new_with_index(index).controller(ctrl).build(),
            )
            .await
        }
        Op::CreateVlan {
            name,
            raw_device,
            id,
        } => {
            let raw = index_of(nl, op, raw_device).await?;
            let msg = LinkMessageBuilder::<LinkUnspec>::new_with_info_kind(InfoKind::Vlan)
                .name(name.clone())
                .link(raw)
                .set_info_data(InfoData::Vlan(vec![InfoVlan::Id(*id)]))
                .build();
            h.link().add(msg).execute().await.map_err(failed(op))?;
            mark(nl, op, name).await
        }
        Op::SetMtu { name, mtu } => {
            let index = index_of(nl, op, name).await?;
            change(nl, op, LinkUnspec::new_with_index(index).mtu(*mtu).build()).await
        }
        Op::SetUp { name } => {
            let index = index_of(nl, op, name).await?;
            change(nl, op, LinkUnspec::new_with_index(index).up().build()).await
        }
        Op::SetPortVlans { port, add, remove } => {
            let index = index_of(nl, op, port).await?;
            let build = |ranges: &[(u16, u16)]| {
                let mut b = LinkBridgeVlan::new(index);
                for &(a, z) in ranges {
                    if a == z {
                        b = b.vlan(a, BridgeVlanInfoFlags::empty());
                    } else {
                        b = b
                            .vlan_range_start(a, BridgeVlanInfoFlags::empty())
                            .vlan_range_end(z, BridgeVlanInfoFlags::empty());
                    }
                }
                b.build()
            };
            if !remove.is_empty() {
                h.link()
                    .del_with_message(build(remove))
                    .execute()
                    .await
                    .map_err(failed(op))?;
            }
            if !add.is_empty() {
                // RTM_SETLINK in AF_BRIDGE is how the bridge takes VLAN
                // lists; it reports errors.
                h.link()
                    .set(build(add))
                    .execute()
                    .await
                    .map_err(failed(op))?;
            }
            Ok(())
        }
        Op::AddAddress { link, net } => {
            let index = index_of(nl, op, link).await?;
            let mut req = h.address().add(index, net.addr(), net.prefix_len());
            req.message_mut()
                .attributes
                .push(AddressAttribute::Protocol(AddressProtocol::from(
                    IFAPROT_OXBOW,
                )));
            req.execute().await.map_err(failed(op))
        }
        Op::AddRoute(r) => {
            let oif = index_of(nl, op, &r.dev).await?;
            let res = h
                .route()
                .add(route_message(r, oif, false))
                .replace()
                .execute()
                .await;
            match res {
                // A gateway outside every prefix of the link.
                Err(e) if errno(&e) == Some(libc::ENETUNREACH) => h
                    .route()
                    .add(route_message(r, oif, true))
                    .replace()
                    .execute()
                    .await
                    .map_err(failed(op)),
                r => r.map_err(failed(op)),
            }
        }
    }
}

/// Carries out `ops` in order, stopping at the first failure. Returns how
/// many were done with the error.
pub async fn apply(nl: &Rtnl, ops: &[Op]) -> Result<(), (usize, KernelError)> {
    for (i, op) in ops.iter().enumerate() {
        apply_op(nl, op).await.map_err(|e| (i, e))?;
        tracing::info!("{op}");
    }
    Ok(())
}
