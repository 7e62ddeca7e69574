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
    NetlinkMessage, NetlinkPayload, NLM_F_ACK, NLM_F_CREATE, NLM_F_EXCL, NLM_F_REQUEST,
};
use rtnetlink::packet_route::link::{LinkAttribute, LinkMessage};
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
        let io_failed = |e: io::Error| RtnlError::Socket {
            op: op.clone(),
            source: e,
        };
        self.seq = self.seq.wrapping_add(1);
        let mut req = NetlinkMessage::from(msg);
        req.header.flags = flags | NLM_F_REQUEST | NLM_F_ACK;
        req.header.sequence_number = self.seq;
        req.finalize();
        let mut out = vec![0u8; req.buffer_len()];
        req.serialize(&mut out);
        self.socket.send(&out, 0).map_err(io_failed)?;
        let mut answers = Vec::new();
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
                let m = NetlinkMessage::<RouteNetlinkMessage>::deserialize(&self.buf[at..])
                    .map_err(|e| io_failed(io::Error::new(io::ErrorKind::InvalidData, e)))?;
                let len = m.header.length as usize;
                if len == 0 {
                    return Err(io_failed(io::Error::new(
                        io::ErrorKind::InvalidData,
                        "a netlink message of length 0",
                    )));
                }
                // NLMSG_ALIGN: messages in a datagram start on 4 bytes.
                at += (len + 3) & !3;
                if m.header.sequence_number != self.seq {
                    continue;
                }
                match m.payload {
                    NetlinkPayload::Error(e) if e.code.is_none() => return Ok(answers),
                    NetlinkPayload::Error(e) => {
                        return Err(RtnlError::Request {
                            op,
                            source: rtnetlink::Error::NetlinkError(e),
                        })
                    }
                    NetlinkPayload::Done(_) => return Ok(answers),
                    NetlinkPayload::InnerMessage(inner) => answers.push(inner),
                    _ => {}
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

    /// Creates a link as `msg` describes (`NLM_F_CREATE | NLM_F_EXCL`).
    pub fn create_link(&mut self, msg: LinkMessage, op: String) -> Result<(), RtnlError> {
        self.request(
            RouteNetlinkMessage::NewLink(msg),
            NLM_F_CREATE | NLM_F_EXCL,
            op,
        )
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
