//! A guest port's `rate=` (Proxmox: megabytes per second, as a floating
//! point number), enforced on the host end of the port as Proxmox VE
//! enforces it: traffic to the guest leaves the port through an HTB
//! qdisc whose one class has that rate, and traffic from the guest, which
//! enters the host through the port's ingress, is policed to the same
//! rate (what exceeds it is dropped, and TCP slows down to it). Both
//! allow a burst of 1 MiB.
//!
//! The kernel's traffic-control structures go over rtnetlink as the
//! `tc` program would send them; netlink-packet-route models neither HTB
//! nor the police action, so their options are encoded here.

use futures_util::StreamExt;
use rtnetlink::packet_core::{
    DefaultNla, NetlinkMessage, NetlinkPayload, NLM_F_ACK, NLM_F_CREATE, NLM_F_EXCL, NLM_F_REQUEST,
};
use rtnetlink::packet_route::tc::{TcAttribute, TcHandle, TcMessage, TcOption};
use rtnetlink::packet_route::RouteNetlinkMessage;

use crate::port::PortError;
use crate::rtnl::{Link, Rtnl};

/// The burst both directions allow, in bytes (Proxmox's).
pub const BURST: u64 = 1024 * 1024;

/// Bytes per second for Proxmox's `rate=` in MB/s (binary megabytes, as
/// Proxmox multiplies by 1024 * 1024); `None` for no limit (absent or 0).
pub fn rate_bytes(mb_per_s: Option<f64>) -> Option<u64> {
    let bytes = (mb_per_s? * 1024.0 * 1024.0).round();
    (bytes >= 1.0).then_some(bytes as u64)
}

/// The kernel's scheduler clock: one tick is 64 ns (`PSCHED_SHIFT`).
const NS_PER_TICK: f64 = 64.0;

/// The time to send `size` bytes at `rate` bytes per second, in ticks.
fn xmit_ticks(rate: u64, size: u64) -> u32 {
    let ticks = size as f64 / rate as f64 * 1e9 / NS_PER_TICK;
    ticks.min(f64::from(u32::MAX)) as u32
}

const TC_LINKLAYER_ETHERNET: u8 = 1;

/// `struct tc_ratespec`: 12 bytes.
fn ratespec(rate: u64, cell_log: u8) -> Vec<u8> {
    let mut b = Vec::with_capacity(12);
    b.push(cell_log);
    b.push(TC_LINKLAYER_ETHERNET);
    b.extend_from_slice(&0u16.to_ne_bytes()); // overhead
    b.extend_from_slice(&(-1i16).to_ne_bytes()); // cell_align
    b.extend_from_slice(&0u16.to_ne_bytes()); // mpu
    b.extend_from_slice(&(rate.min(u64::from(u32::MAX)) as u32).to_ne_bytes());
    b
}

/// One netlink attribute, padded to 4 bytes.
fn nla(kind: u16, value: &[u8]) -> Vec<u8> {
    let mut b = Vec::with_capacity(4 + value.len() + 3);
    b.extend_from_slice(&((4 + value.len()) as u16).to_ne_bytes());
    b.extend_from_slice(&kind.to_ne_bytes());
    b.extend_from_slice(value);
    b.resize(b.len().div_ceil(4) * 4, 0);
    b
}

const NLA_F_NESTED: u16 = 0x8000;

// include/uapi/linux/pkt_sched.h and pkt_cls.h.
const TCA_HTB_PARMS: u16 = 1;
const TCA_HTB_INIT: u16 = 2;
const TCA_HTB_RATE64: u16 = 6;
const TCA_HTB_CEIL64: u16 = 7;
const TC_HTB_PROTOVER: u32 = 3;
const TCA_MATCHALL_ACT: u16 = 2;
const TCA_ACT_KIND: u16 = 1;
const TCA_ACT_OPTIONS: u16 = 2;
const TCA_POLICE_TBF: u16 = 1;
const TCA_POLICE_RATE: u16 = 2;
const TCA_POLICE_RATE64: u16 = 8;
const TC_ACT_SHOT: i32 = 2;
const ETH_P_ALL: u16 = 0x0003;
/// The policing filter's priority (Proxmox's).
const FILTER_PRIO: u16 = 50;

/// `struct tc_htb_glob` for the qdisc: default class 1:1.
fn htb_init() -> Vec<u8> {
    [TC_HTB_PROTOVER, 10, 1, 0, 0]
        .iter()
        .flat_map(|v| v.to_ne_bytes())
        .collect()
}

/// `struct tc_htb_opt` for class 1:1: rate and ceiling `rate`, a burst
/// of [`BURST`] either way.
fn htb_class(rate: u64) -> Vec<u8> {
    let mut b = ratespec(rate, 0);
    b.extend(ratespec(rate, 0));
    let buffer = xmit_ticks(rate, BURST);
    for v in [buffer, buffer, 0, 0, 0] {
        b.extend_from_slice(&v.to_ne_bytes());
    }
    b
}

/// The police action's options: `struct tc_police` (exceeding traffic
/// dropped, no MTU cut so large offloaded packets pass) and the rate
/// table the kernel requires with a rate, as `tc` computes it.
fn police_options(rate: u64) -> Vec<u8> {
    // The table's cells cover packets up to 2047 bytes (tc's default).
    let mut cell_log = 0u8;
    while (2047u32 >> cell_log) > 255 {
        cell_log += 1;
    }
    let mut parm = Vec::with_capacity(56);
    parm.extend_from_slice(&0u32.to_ne_bytes()); // index
    parm.extend_from_slice(&TC_ACT_SHOT.to_ne_bytes()); // action on exceed
    parm.extend_from_slice(&0u32.to_ne_bytes()); // limit
    parm.extend_from_slice(&xmit_ticks(rate, BURST).to_ne_bytes()); // burst
    parm.extend_from_slice(&u32::MAX.to_ne_bytes()); // mtu
    parm.extend(ratespec(rate, cell_log));
    parm.extend_from_slice(&[0u8; 12]); // peakrate
    parm.extend_from_slice(&[0u8; 12]); // refcnt, bindcnt, capab
    let table: Vec<u8> = (0..256u64)
        .flat_map(|i| xmit_ticks(rate, (i + 1) << cell_log).to_ne_bytes())
        .collect();
    let mut opts = nla(TCA_POLICE_TBF, &parm);
    opts.extend(nla(TCA_POLICE_RATE, &table));
    if rate > u64::from(u32::MAX) {
        opts.extend(nla(TCA_POLICE_RATE64, &rate.to_ne_bytes()));
    }
    opts
}

/// `TCA_MATCHALL_ACT`'s value: one police action.
fn matchall_police(rate: u64) -> Vec<u8> {
    let mut action = nla(TCA_ACT_KIND, b"police\0");
    action.extend(nla(TCA_ACT_OPTIONS | NLA_F_NESTED, &police_options(rate)));
    nla(1 | NLA_F_NESTED, &action)
}

async fn send(nl: &Rtnl, msg: RouteNetlinkMessage, flags: u16, op: &str) -> Result<(), PortError> {
    let mut req = NetlinkMessage::from(msg);
    req.header.flags = NLM_F_REQUEST | NLM_F_ACK | flags;
    let mut handle = nl.handle().clone();
    let failed = |source| PortError::Request {
        op: op.to_string(),
        source,
    };
    let mut response = handle.request(req).map_err(failed)?;
    while let Some(m) = response.next().await {
        if let NetlinkPayload::Error(e) = m.payload {
            if e.code.is_some() {
                return Err(failed(rtnetlink::Error::NetlinkError(e)));
            }
        }
    }
    Ok(())
}

fn tc_message(port: &Link, handle: u32, parent: u32, info: u32) -> TcMessage {
    let mut m = TcMessage::with_index(port.index as i32);
    m.header.handle = TcHandle::from(handle);
    m.header.parent = TcHandle::from(parent);
    m.header.info = info;
    m
}

/// Sets port `port`'s rate limit to `rate` bytes per second both ways, or
/// removes it (`None`). What an earlier start left is replaced. A limit
/// the kernel cannot apply in full (one without the police action, say)
/// is an error that leaves the port without any.
pub async fn set(nl: &Rtnl, port: &Link, rate: Option<u64>) -> Result<(), PortError> {
    clear(nl, port).await?;
    let Some(rate) = rate else {
        return Ok(());
    };
    let made = add(nl, port, rate).await;
    if made.is_err() {
        let _ = clear(nl, port).await;
    }
    made
}

/// Removes whatever limits port `port`: a root qdisc (the kernel's
/// default is none on a veth or tap) and the ingress qdisc with its
/// filters.
async fn clear(nl: &Rtnl, port: &Link) -> Result<(), PortError> {
    for (handle, parent) in [(0, TcHandle::ROOT), (0xffff_0000, TcHandle::INGRESS)] {
        let m = tc_message(port, handle, parent.into(), 0);
        match send(
            nl,
            RouteNetlinkMessage::DelQueueDiscipline(m),
            0,
            "delete a qdisc",
        )
        .await
        {
            Err(PortError::Request { source, .. })
                if matches!(
                    crate::rtnl::errno_of(&source),
                    Some(libc::ENOENT | libc::EINVAL)
                ) => {}
            other => other?,
        }
    }
    Ok(())
}

async fn add(nl: &Rtnl, port: &Link, rate: u64) -> Result<(), PortError> {
    let create = NLM_F_CREATE | NLM_F_EXCL;
    let name = &port.name;
    // To the guest: HTB, default class 1:1 at the rate.
    let mut q = tc_message(port, 0x0001_0000, TcHandle::ROOT.into(), 0);
    q.attributes.push(TcAttribute::Kind("htb".into()));
    q.attributes.push(TcAttribute::Options(vec![TcOption::Other(
        DefaultNla::new(TCA_HTB_INIT, htb_init()),
    )]));
    send(
        nl,
        RouteNetlinkMessage::NewQueueDiscipline(q),
        create,
        &format!("add the HTB qdisc of {name}"),
    )
    .await?;
    let mut c = tc_message(port, 0x0001_0001, 0x0001_0000, 0);
    c.attributes.push(TcAttribute::Kind("htb".into()));
    let mut opts = vec![TcOption::Other(DefaultNla::new(
        TCA_HTB_PARMS,
        htb_class(rate),
    ))];
    if rate > u64::from(u32::MAX) {
        for kind in [TCA_HTB_RATE64, TCA_HTB_CEIL64] {
            opts.push(TcOption::Other(DefaultNla::new(
                kind,
                rate.to_ne_bytes().to_vec(),
            )));
        }
    }
    c.attributes.push(TcAttribute::Options(opts));
    send(
        nl,
        RouteNetlinkMessage::NewTrafficClass(c),
        create,
        &format!("add the HTB class of {name}"),
    )
    .await?;
    // From the guest: the ingress qdisc and a match-all filter policing.
    let mut i = tc_message(port, 0xffff_0000, TcHandle::INGRESS.into(), 0);
    i.attributes.push(TcAttribute::Kind("ingress".into()));
    send(
        nl,
        RouteNetlinkMessage::NewQueueDiscipline(i),
        create,
        &format!("add the ingress qdisc of {name}"),
    )
    .await?;
    let info = (u32::from(FILTER_PRIO) << 16) | u32::from(ETH_P_ALL.to_be());
    let mut f = tc_message(port, 0, 0xffff_0000, info);
    f.attributes.push(TcAttribute::Kind("matchall".into()));
    f.attributes.push(TcAttribute::Options(vec![TcOption::Other(
        DefaultNla::new(TCA_MATCHALL_ACT | NLA_F_NESTED, matchall_police(rate)),
    )]));
    match send(
        nl,
        RouteNetlinkMessage::NewTrafficFilter(f),
        create,
        &format!("add the policing filter of {name}"),
    )
    .await
    {
        Err(PortError::Request { source, .. })
            if crate::rtnl::errno_of(&source) == Some(libc::ENOENT) =>
        {
            Err(PortError::NoPolicing(name.clone()))
        }
        other => other,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rates_are_binary_megabytes_and_ticks_are_64_ns() {
        assert_eq!(rate_bytes(Some(1.0)), Some(1_048_576));
        assert_eq!(rate_bytes(Some(12.5)), Some(13_107_200));
        assert_eq!(rate_bytes(Some(0.0)), None);
        assert_eq!(rate_bytes(None), None);
        // 1 MiB at 1 MiB/s: one second, 15,625,000 ticks of 64 ns.
        assert_eq!(xmit_ticks(1_048_576, BURST), 15_625_000);
        // Longer than the field holds: capped.
        assert_eq!(xmit_ticks(1, BURST), u32::MAX);
        assert_eq!(ratespec(1_048_576, 3).len(), 12);
        assert_eq!(htb_class(1_048_576).len(), 44);
        assert_eq!(htb_init().len(), 20);
        // tc_police (56 bytes) and the 1 KiB table, each with its header.
        assert_eq!(police_options(1_048_576).len(), 4 + 56 + 4 + 1024);
    }
}
