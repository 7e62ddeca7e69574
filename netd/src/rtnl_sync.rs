//! A blocking rtnetlink socket, for a caller that makes a few requests and
//! goes on with other work: the container monitor, which creates a veth
//! pair or two while a container starts.
//!
//! It speaks the same messages as [`crate::rtnl::Rtnl`] (netlink-packet-route's
//! types, built the same way) over a plain `NETLINK_ROUTE` socket from
//! netlink-sys, one request at a time, without an async runtime: building
//! a Tokio runtime and rtnetlink's connection task, and running that code
//! for the first time, cost a container start more than the requests
//! themselves (docs/perf.md, "Containers").
//!
//! Errors are rtnetlink's: the kernel's refusal is
//! `rtnetlink::Error::NetlinkError`, so [`crate::rtnl::errno_of`] reads it
//! as it does for the async socket.

use std::io;

use rtnetlink::packet_core::{
    NetlinkBuffer, NetlinkMessage, NetlinkPayload, NlasIterator, NLMSG_DONE, NLMSG_ERROR,
    NLMSG_NOOP, NLMSG_OVERRUN, NLM_F_ACK, NLM_F_CREATE, NLM_F_EXCL, NLM_F_REQUEST,
};
use rtnetlink::packet_route::link::{LinkAttribute, LinkExtentMask, LinkMessage};
use rtnetlink::packet_route::RouteNetlinkMessage;
use rtnetlink::sys::{protocols::NETLINK_ROUTE, Socket, SocketAddr};

use crate::rtnl::{errno_of, Link, RtnlError};

/// Room for one datagram of answers; the kernel sizes its answers to a
/// page or to what a single message needs, far below this.
const RECV_BUFFER: usize = 64 * 1024;

/// A connected, blocking rtnetlink socket.
pub struct SyncRtnl {
    socket: Socket,
    seq: u32,
    buf: Vec<u8>,
}

impl std::fmt::Debug for SyncRtnl {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SyncRtnl")
    }
}

impl SyncRtnl {
    /// Opens the socket, bound to an address the kernel picks and
    /// connected to the kernel.
    pub fn connect() -> Result<SyncRtnl, RtnlError> {
        let mut socket = Socket::new(NETLINK_ROUTE).map_err(RtnlError::Connect)?;
        socket.bind_auto().map_err(RtnlError::Connect)?;
        socket
            .connect(&SocketAddr::new(0, 0))
            .map_err(RtnlError::Connect)?;
        Ok(SyncRtnl {
            socket,
            seq: 0,
            buf: Vec::with_capacity(RECV_BUFFER),
        })
    }

    /// Sends `msg` with `flags` (`NLM_F_REQUEST` and `NLM_F_ACK` are
    /// added) and returns what the kernel answered before its
    /// acknowledgement; a refusal is `Err` with the kernel's errno.
    pub fn request(
        &mut self,
        msg: RouteNetlinkMessage,
        flags: u16,
        op: impl Into<String>,
    ) -> Result<Vec<RouteNetlinkMessage>, RtnlError> {
        let op = op.into();
        let mut answers = Vec::new();
        self.exchange(msg, flags, &op, |m| {
            let m = NetlinkMessage::<RouteNetlinkMessage>::deserialize(m.into_inner())
                .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))?;
            if let NetlinkPayload::InnerMessage(inner) = m.payload {
                answers.push(inner);
            }
            Ok(())
        })?;
        Ok(answers)
    }

    /// Sends `msg` and hands each answer before the acknowledgement to
    /// `answer` as the whole netlink message, its header checked and the
    /// rest unparsed.
    fn exchange(
        &mut self,
        msg: RouteNetlinkMessage,
        flags: u16,
        op: &str,
        mut answer: impl FnMut(NetlinkBuffer<&[u8]>) -> io::Result<()>,
    ) -> Result<(), RtnlError> {
        let io_failed = |e: io::Error| RtnlError::Socket {
            op: op.to_string(),
            source: e,
        };
        let invalid = |what: &str| io_failed(io::Error::new(io::ErrorKind::InvalidData, what));
        self.seq = self.seq.wrapping_add(1);
        let mut req = NetlinkMessage::from(msg);
        req.header.flags = flags | NLM_F_REQUEST | NLM_F_ACK;
        req.header.sequence_number = self.seq;
        req.finalize();
        let mut out = vec![0u8; req.buffer_len()];
        req.serialize(&mut out);
        self.socket.send(&out, 0).map_err(io_failed)?;
        loop {
            self.buf.clear();
            let n = self.socket.recv(&mut self.buf, 0).map_err(io_failed)?;
            if n > self.buf.len() {
                return Err(io_failed(io::Error::other(format!(
                    "an answer of {n} bytes does not fit the {RECV_BUFFER}-byte buffer"
                ))));
            }
            let mut at = 0;
            while at < self.buf.len() {
                let header = NetlinkBuffer::new_checked(&self.buf[at..])
                    .map_err(|_| invalid("a truncated netlink message"))?;
                let len = header.length() as usize;
                if len == 0 {
                    return Err(invalid("a netlink message of length 0"));
                }
                let (kind, seq) = (header.message_type(), header.sequence_number());
                let bytes = &self.buf[at..at + len];
                let message = NetlinkBuffer::new(bytes);
                // NLMSG_ALIGN: messages in a datagram start on 4 bytes.
                at += (len + 3) & !3;
                if seq != self.seq {
                    continue;
                }
                match kind {
                    NLMSG_ERROR => {
                        let m = NetlinkMessage::<RouteNetlinkMessage>::deserialize(bytes).map_err(
                            |e| io_failed(io::Error::new(io::ErrorKind::InvalidData, e)),
                        )?;
                        return match m.payload {
                            NetlinkPayload::Error(e) if e.code.is_none() => Ok(()),
                            NetlinkPayload::Error(e) => Err(RtnlError::Request {
                                op: op.to_string(),
                                source: rtnetlink::Error::NetlinkError(e),
                            }),
                            _ => Err(invalid("an unreadable netlink error")),
                        };
                    }
                    NLMSG_DONE => return Ok(()),
                    NLMSG_NOOP | NLMSG_OVERRUN => {}
                    _ => answer(message).map_err(io_failed)?,
                }
            }
        }
    }

    /// Looks a link up by name; `None` if there is none.
    pub fn link(&mut self, name: &str) -> Result<Option<Link>, RtnlError> {
        let mut msg = LinkMessage::default();
        msg.attributes.push(LinkAttribute::IfName(name.to_string()));
        match self.request(
            RouteNetlinkMessage::GetLink(msg),
            0,
            format!("look up {name}"),
        ) {
            Ok(answers) => Ok(answers.iter().find_map(|a| match a {
                RouteNetlinkMessage::NewLink(m) => Some(Link::from_message(m)),
                _ => None,
            })),
            Err(RtnlError::Request { source, .. }) if errno_of(&source) == Some(libc::ENODEV) => {
                Ok(None)
            }
            Err(e) => Err(e),
        }
    }

    /// Looks a link up by name as [`SyncRtnl::link`] does, but fills only
    /// what putting a port into a bridge needs: the index, the name, the
    /// MTU, whether it is a bridge and whether it filters by VLAN (the
    /// rest keeps [`Link`]'s empty values). The kernel is asked to leave
    /// out the statistics and only those attributes are read from its
    /// answer: a full parse of a bridge's answer (about 1.8 KB: every
    /// bridge option, the IPv4 and IPv6 settings) is a container start's
    /// longest piece of its own code under emulation (docs/perf.md).
    pub fn link_brief(&mut self, name: &str) -> Result<Option<Link>, RtnlError> {
        let mut msg = LinkMessage::default();
        msg.attributes.push(LinkAttribute::IfName(name.to_string()));
        msg.attributes
            .push(LinkAttribute::ExtMask(vec![LinkExtentMask::SkipStats]));
        let mut found = None;
        let op = format!("look up {name}");
        let done = self.exchange(RouteNetlinkMessage::GetLink(msg), 0, &op, |m| {
            if m.message_type() == libc::RTM_NEWLINK && found.is_none() {
                found = brief_link(m.payload())
                    .ok_or_else(|| {
                        io::Error::new(io::ErrorKind::InvalidData, "a malformed link message")
                    })
                    .map(Some)?;
            }
            Ok(())
        });
        match done {
            Ok(()) => Ok(found),
            Err(RtnlError::Request { source, .. }) if errno_of(&source) == Some(libc::ENODEV) => {
                Ok(None)
            }
            Err(e) => Err(e),
        }
    }

    /// Creates a link as `msg` describes (`NLM_F_CREATE | NLM_F_EXCL`).
    pub fn create_link(&mut self, msg: LinkMessage, op: String) -> Result<(), RtnlError> {
        self.request(
            RouteNetlinkMessage::NewLink(msg),
            NLM_F_CREATE | NLM_F_EXCL,
            op,
        )
        .map(drop)
    }

    /// Changes an existing link as `msg` describes (found by the index, or
    /// by the name when the index is 0).
    pub fn set_link(&mut self, msg: LinkMessage, op: String) -> Result<(), RtnlError> {
        self.request(RouteNetlinkMessage::NewLink(msg), 0, op)
            .map(drop)
    }

    /// Deletes the link `name`; `false` if there was none.
    pub fn delete_link(&mut self, name: &str) -> Result<bool, RtnlError> {
        let mut msg = LinkMessage::default();
        msg.attributes.push(LinkAttribute::IfName(name.to_string()));
        match self.request(
            RouteNetlinkMessage::DelLink(msg),
            0,
            format!("delete {name}"),
        ) {
            Ok(_) => Ok(true),
            Err(RtnlError::Request { source, .. }) if errno_of(&source) == Some(libc::ENODEV) => {
                Ok(false)
            }
            Err(e) => Err(e),
        }
    }
}

/// The link of an `RTM_NEWLINK` payload (`struct ifinfomsg` and its
/// attributes), reading only the index, `IFLA_IFNAME`, `IFLA_MTU` and, in
/// `IFLA_LINKINFO`, the kind and the bridge's `IFLA_BR_VLAN_FILTERING`.
fn brief_link(payload: &[u8]) -> Option<Link> {
    use libc::{IFLA_IFNAME, IFLA_INFO_DATA, IFLA_INFO_KIND, IFLA_LINKINFO, IFLA_MTU};
    /// Not in the libc crate: `linux/if_link.h`'s bridge options.
    const IFLA_BR_VLAN_FILTERING: u16 = 7;
    let index = u32::from_ne_bytes(payload.get(4..8)?.try_into().ok()?);
    let mut link = Link::empty(index);
    let c_str =
        |v: &[u8]| String::from_utf8_lossy(v.split(|b| *b == 0).next().unwrap_or(v)).into_owned();
    for nla in NlasIterator::new(payload.get(std::mem::size_of::<libc::ifinfomsg>()..)?) {
        let nla = nla.ok()?;
        match nla.kind() {
            IFLA_IFNAME => link.name = c_str(nla.value()),
            IFLA_MTU => link.mtu = Some(u32::from_ne_bytes(nla.value().get(..4)?.try_into().ok()?)),
            IFLA_LINKINFO => {
                for info in NlasIterator::new(nla.value()) {
                    let info = info.ok()?;
                    match info.kind() {
                        IFLA_INFO_KIND => link.is_bridge = c_str(info.value()) == "bridge",
                        IFLA_INFO_DATA => {
                            for opt in NlasIterator::new(info.value()) {
                                let opt = opt.ok()?;
                                if opt.kind() == IFLA_BR_VLAN_FILTERING {
                                    link.vlan_filtering = opt.value().first() == Some(&1);
                                }
                            }
                        }
                        _ => {}
                    }
                }
            }
            _ => {}
        }
    }
    // The data of a kind other than a bridge has other meanings.
    link.vlan_filtering &= link.is_bridge;
    Some(link)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Needs only a network namespace's loopback: every process has one.
    #[test]
    fn looks_up_loopback_and_a_missing_link() {
        let mut nl = SyncRtnl::connect().expect("netlink socket");
        let lo = nl.link("lo").expect("request").expect("lo exists");
        assert_eq!(lo.name, "lo");
        assert_eq!(lo.index, 1);
        assert!(!lo.is_bridge);
        assert!(nl.link("oxbow-none0").expect("request").is_none());
        // A refusal carries the kernel's errno and names the request.
        let err = nl
            .create_link(LinkMessage::default(), "create nothing".into())
            .unwrap_err();
        assert!(err.to_string().starts_with("create nothing"), "{err}");
        assert!(err.errno().is_some(), "{err:?}");
        // The socket still works after a refusal.
        assert!(nl.link("lo").expect("request").is_some());
    }
}
