//! The few rtnetlink requests the monitor makes for its veths, sent
//! synchronously on one netlink socket (the monitor is single-threaded
//! and has no async runtime): look a link up by name, create a veth pair
//! with its peer in another network namespace, attach a link to a bridge
//! and bring it up in one request, delete a link.
//!
//! Requests are answered in the network namespace of the calling process,
//! which is what `ip` did before; no program is started (one exec of `ip`
//! costs about 100 ms in the appliance under emulation, and a veth took
//! five of them).

use std::io;

use netlink_packet_core::{
    NetlinkHeader, NetlinkMessage, NetlinkPayload, NLM_F_ACK, NLM_F_CREATE, NLM_F_EXCL,
    NLM_F_REQUEST,
};
use netlink_packet_route::link::{
    InfoData, InfoKind, InfoVeth, LinkAttribute, LinkFlags, LinkInfo, LinkMessage,
};
use netlink_packet_route::RouteNetlinkMessage;
use netlink_sys::{protocols::NETLINK_ROUTE, Socket, SocketAddr};

/// What the runtime needs to know about an existing link.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Link {
    pub index: u32,
    pub is_bridge: bool,
    pub mtu: Option<u32>,
}

/// A netlink route socket bound in the caller's network namespace.
pub struct Rtnl {
    socket: Socket,
    seq: u32,
}

impl std::fmt::Debug for Rtnl {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Rtnl").field("seq", &self.seq).finish()
    }
}

impl Rtnl {
    /// Opens and binds the socket.
    pub fn connect() -> io::Result<Rtnl> {
        let mut socket = Socket::new(NETLINK_ROUTE)?;
        socket.bind_auto()?;
        socket.connect(&SocketAddr::new(0, 0))?;
        Ok(Rtnl { socket, seq: 0 })
    }

    /// Sends one request and returns the messages of its answer up to the
    /// acknowledgement (or the link asked for). A negative answer is an
    /// error with the kernel's errno.
    fn request(&mut self, msg: RouteNetlinkMessage, flags: u16) -> io::Result<Vec<LinkMessage>> {
        self.seq = self.seq.wrapping_add(1);
        let mut header = NetlinkHeader::default();
        header.flags = flags;
        header.sequence_number = self.seq;
        let mut packet = NetlinkMessage::new(header, NetlinkPayload::InnerMessage(msg));
        packet.finalize();
        let mut buf = vec![0u8; packet.buffer_len()];
        packet.serialize(&mut buf);
        self.socket.send(&buf, 0)?;
        let mut links = Vec::new();
        loop {
            let (data, _) = self.socket.recv_from_full()?;
            let mut offset = 0;
            while offset < data.len() {
                let reply = NetlinkMessage::<RouteNetlinkMessage>::deserialize(&data[offset..])
                    .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e.to_string()))?;
                let len = reply.header.length as usize;
                if len == 0 {
                    break;
                }
                offset += len;
                if reply.header.sequence_number != self.seq {
                    continue;
                }
                match reply.payload {
                    NetlinkPayload::Error(e) => {
                        return match e.code {
                            None => Ok(links),
                            Some(code) => Err(io::Error::from_raw_os_error(-code.get())),
                        };
                    }
                    NetlinkPayload::InnerMessage(RouteNetlinkMessage::NewLink(l)) => {
                        links.push(l);
                        if flags & NLM_F_ACK == 0 {
                            return Ok(links);
                        }
                    }
                    NetlinkPayload::Done(_) => return Ok(links),
                    _ => {}
                }
            }
        }
    }

    /// The link named `name`, or `None` if there is none.
    pub fn link(&mut self, name: &str) -> io::Result<Option<Link>> {
        let mut msg = LinkMessage::default();
        msg.attributes.push(LinkAttribute::IfName(name.to_string()));
        match self.request(RouteNetlinkMessage::GetLink(msg), NLM_F_REQUEST) {
            Ok(links) => Ok(links.into_iter().next().map(|l| describe(&l))),
            Err(e) if e.raw_os_error() == Some(libc::ENODEV) => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// Creates the veth pair `host` / `peer`, the peer moved at once into
    /// the network namespace of process `netns_pid`.
    pub fn create_veth(
        &mut self,
        host: &str,
        peer: &str,
        mtu: Option<u32>,
        peer_mac: Option<[u8; 6]>,
        netns_pid: u32,
    ) -> io::Result<()> {
        let mut peer_msg = LinkMessage::default();
        peer_msg
            .attributes
            .push(LinkAttribute::IfName(peer.to_string()));
        if let Some(m) = mtu {
            peer_msg.attributes.push(LinkAttribute::Mtu(m));
        }
        if let Some(mac) = peer_mac {
            peer_msg
                .attributes
                .push(LinkAttribute::Address(mac.to_vec()));
        }
        peer_msg.attributes.push(LinkAttribute::NetNsPid(netns_pid));
        let mut msg = LinkMessage::default();
        msg.attributes.push(LinkAttribute::IfName(host.to_string()));
        if let Some(m) = mtu {
            msg.attributes.push(LinkAttribute::Mtu(m));
        }
        msg.attributes.push(LinkAttribute::LinkInfo(vec![
            LinkInfo::Kind(InfoKind::Veth),
            LinkInfo::Data(InfoData::Veth(InfoVeth::Peer(peer_msg))),
        ]));
        self.request(
            RouteNetlinkMessage::NewLink(msg),
            NLM_F_REQUEST | NLM_F_ACK | NLM_F_CREATE | NLM_F_EXCL,
        )
        .map(|_| ())
    }

    /// Makes link `index` a port of `bridge` (if any) and brings it up,
    /// in one request.
    pub fn attach_up(&mut self, index: u32, bridge: Option<u32>) -> io::Result<()> {
        let mut msg = LinkMessage::default();
        msg.header.index = index;
        msg.header.flags = LinkFlags::Up;
        msg.header.change_mask = LinkFlags::Up;
        if let Some(b) = bridge {
            msg.attributes.push(LinkAttribute::Controller(b));
        }
        self.request(RouteNetlinkMessage::NewLink(msg), NLM_F_REQUEST | NLM_F_ACK)
            .map(|_| ())
    }

    /// Deletes link `name`.
    pub fn delete(&mut self, name: &str) -> io::Result<()> {
        let mut msg = LinkMessage::default();
        msg.attributes.push(LinkAttribute::IfName(name.to_string()));
        self.request(RouteNetlinkMessage::DelLink(msg), NLM_F_REQUEST | NLM_F_ACK)
            .map(|_| ())
    }
}

fn describe(l: &LinkMessage) -> Link {
    let mut link = Link {
        index: l.header.index,
        is_bridge: false,
        mtu: None,
    };
    for a in &l.attributes {
        match a {
            LinkAttribute::Mtu(m) => link.mtu = Some(*m),
            LinkAttribute::LinkInfo(infos) => {
                link.is_bridge = infos
                    .iter()
                    .any(|i| matches!(i, LinkInfo::Kind(InfoKind::Bridge)));
            }
            _ => {}
        }
    }
    link
}

/// Parses `aa:bb:cc:dd:ee:ff`.
pub fn parse_mac(text: &str) -> Option<[u8; 6]> {
    let mut mac = [0u8; 6];
    let mut parts = text.split(':');
    for b in &mut mac {
        *b = u8::from_str_radix(parts.next()?, 16).ok()?;
    }
    parts.next().is_none().then_some(mac)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn macs_parse() {
        assert_eq!(
            parse_mac("BC:24:11:00:00:0a"),
            Some([0xbc, 0x24, 0x11, 0, 0, 0x0a])
        );
        assert_eq!(parse_mac("BC:24:11:00:00"), None);
        assert_eq!(parse_mac("BC:24:11:00:00:00:01"), None);
        assert_eq!(parse_mac("zz:24:11:00:00:00"), None);
    }
}
