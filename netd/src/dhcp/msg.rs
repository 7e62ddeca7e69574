//! Building the client's DHCPv4 messages and reading the server's, on top
//! of dhcproto. Nothing here does I/O.

use std::fmt;
use std::net::{IpAddr, Ipv4Addr};

use dhcproto::v4::{DhcpOption, Flags, HType, Message, MessageType, Opcode, OptionCode};
use dhcproto::{Decodable, Decoder, Encodable};

use crate::plan::IpConfig;
use crate::rtnl::Mac;

/// The port DHCP servers listen on.
pub const SERVER_PORT: u16 = 67;
/// The port DHCP clients listen on.
pub const CLIENT_PORT: u16 = 68;
/// The shortest message the client sends: BOOTP's 236-byte fixed part and
/// a 312-byte options area, the size classic BOOTP servers and relays
/// expect; some versions of QEMU's user-mode network (libslirp) drop
/// anything shorter.
pub const MIN_MESSAGE_LEN: usize = 548;
/// The largest message the client accepts (option 57).
pub const MAX_MESSAGE_SIZE: u16 = 1500;
/// A lease time meaning "forever".
pub const INFINITE: u32 = u32::MAX;
/// Lease time assumed when a server gives none.
const DEFAULT_LEASE_SECS: u32 = 3600;

/// What identifies this client to servers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClientId {
    /// The hardware address (chaddr, and the client identifier).
    pub mac: Mac,
    /// Host name to send (option 12), if any.
    pub hostname: Option<String>,
}

/// The four reasons to send a DHCPREQUEST (RFC 2131, 4.3.2).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RequestKind {
    /// Taking up an offer from `server`.
    Selecting {
        /// The server whose offer is taken (option 54).
        server: Ipv4Addr,
        /// The offered address (option 50).
        requested: Ipv4Addr,
    },
    /// Confirming an address held before a restart (INIT-REBOOT).
    Reboot {
        /// The address held (option 50).
        requested: Ipv4Addr,
    },
    /// Extending the lease with the server that granted it (unicast).
    Renewing {
        /// The bound address.
        ciaddr: Ipv4Addr,
    },
    /// Extending the lease with any server (broadcast).
    Rebinding {
        /// The bound address.
        ciaddr: Ipv4Addr,
    },
}

fn base(id: &ClientId, xid: u32, secs: u16, ciaddr: Ipv4Addr, kind: MessageType) -> Message {
    let unspec = Ipv4Addr::UNSPECIFIED;
    let mut m = Message::new_with_id(xid, ciaddr, unspec, unspec, unspec, &id.mac.0);
    m.set_opcode(Opcode::BootRequest)
        .set_htype(HType::Eth)
        .set_secs(secs);
    // Without an address the client cannot receive unicast replies, so it
    // asks servers to broadcast them.
    if ciaddr.is_unspecified() {
        m.set_flags(Flags::default().set_broadcast());
    }
    let opts = m.opts_mut();
    opts.insert(DhcpOption::MessageType(kind));
    let mut client_id = vec![1u8]; // hardware type: Ethernet
    client_id.extend_from_slice(&id.mac.0);
    opts.insert(DhcpOption::ClientIdentifier(client_id));
    opts.insert(DhcpOption::MaxMessageSize(MAX_MESSAGE_SIZE));
    // Servers always send the server identifier (54), so it is not asked
    // for: QEMU's user-mode network complains about requests it does not
    // know. It also sends the mask, router and name servers only when
    // asked.
    opts.insert(DhcpOption::ParameterRequestList(vec![
        OptionCode::SubnetMask,
        OptionCode::Router,
        OptionCode::DomainNameServer,
        OptionCode::DomainName,
        OptionCode::AddressLeaseTime,
        OptionCode::Renewal,
        OptionCode::Rebinding,
    ]));
    if let Some(h) = &id.hostname {
        opts.insert(DhcpOption::Hostname(h.clone()));
    }
    m
}

/// A DHCPDISCOVER, optionally asking for a particular address.
pub fn discover(id: &ClientId, xid: u32, secs: u16, requested: Option<Ipv4Addr>) -> Message {
    let mut m = base(id, xid, secs, Ipv4Addr::UNSPECIFIED, MessageType::Discover);
    if let Some(r) = requested {
        m.opts_mut().insert(DhcpOption::RequestedIpAddress(r));
    }
    m
}

/// A DHCPREQUEST.
pub fn request(id: &ClientId, xid: u32, secs: u16, kind: RequestKind) -> Message {
    let ciaddr = match kind {
        RequestKind::Renewing { ciaddr } | RequestKind::Rebinding { ciaddr } => ciaddr,
        RequestKind::Selecting { .. } | RequestKind::Reboot { .. } => Ipv4Addr::UNSPECIFIED,
    };
    let mut m = base(id, xid, secs, ciaddr, MessageType::Request);
    let opts = m.opts_mut();
    match kind {
        RequestKind::Selecting { server, requested } => {
            opts.insert(DhcpOption::ServerIdentifier(server));
            opts.insert(DhcpOption::RequestedIpAddress(requested));
        }
        RequestKind::Reboot { requested } => {
            opts.insert(DhcpOption::RequestedIpAddress(requested));
        }
        RequestKind::Renewing { .. } | RequestKind::Rebinding { .. } => {}
    }
    m
}

/// Encodes a message, padded to [`MIN_MESSAGE_LEN`].
pub fn encode(m: &Message) -> Result<Vec<u8>, dhcproto::error::EncodeError> {
    let mut bytes = m.to_vec()?;
    if bytes.len() < MIN_MESSAGE_LEN {
        // Zero bytes after the end option are pad options.
        bytes.resize(MIN_MESSAGE_LEN, 0);
    }
    Ok(bytes)
}

/// Decodes a message; `None` if it is not one.
pub fn decode(bytes: &[u8]) -> Option<Message> {
    Message::decode(&mut Decoder::new(bytes)).ok()
}

/// The type of `m` if it is a server's reply to transaction `xid` of the
/// client with hardware address `mac`; `None` for anything else.
pub fn reply_type(m: &Message, xid: u32, mac: Mac) -> Option<MessageType> {
    if m.opcode() != Opcode::BootReply || m.xid() != xid || m.chaddr().get(..6) != Some(&mac.0[..])
    {
        return None;
    }
    m.opts().msg_type()
}

/// An offered or granted lease.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Lease {
    /// The client's address (yiaddr).
    pub address: Ipv4Addr,
    /// The prefix length, from the subnet mask.
    pub prefix: u8,
    /// The first router (option 3).
    pub router: Option<Ipv4Addr>,
    /// Name servers (option 6).
    pub dns: Vec<Ipv4Addr>,
    /// Domain name (option 15).
    pub domain: Option<String>,
    /// The server that granted it (option 54).
    pub server: Ipv4Addr,
    /// Lease time in seconds ([`INFINITE`] for no end).
    pub lease_secs: u32,
    /// Renewal time T1 in seconds.
    pub t1_secs: u32,
    /// Rebinding time T2 in seconds.
    pub t2_secs: u32,
}

/// A reply that cannot be used as a lease.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LeaseError {
    /// It offers no address.
    #[error("no address offered")]
    NoAddress,
    /// Its subnet mask is not a prefix.
    #[error("subnet mask {0} is not contiguous")]
    BadMask(Ipv4Addr),
    /// It does not say which server sent it.
    #[error("no server identifier")]
    NoServer,
}

impl Lease {
    /// Reads the lease out of an OFFER or ACK that arrived from `source`.
    pub fn from_reply(m: &Message, source: Ipv4Addr) -> Result<Lease, LeaseError> {
        let address = m.yiaddr();
        if address.is_unspecified() || address.is_broadcast() || address.is_multicast() {
            return Err(LeaseError::NoAddress);
        }
        let opts = m.opts();
        let prefix = match opts.get(OptionCode::SubnetMask) {
            Some(DhcpOption::SubnetMask(mask)) => {
                prefix_from_mask(*mask).ok_or(LeaseError::BadMask(*mask))?
            }
            _ => classful_prefix(address),
        };
        let router = match opts.get(OptionCode::Router) {
            Some(DhcpOption::Router(list)) => list.iter().copied().find(|r| !r.is_unspecified()),
            _ => None,
        };
        let dns = match opts.get(OptionCode::DomainNameServer) {
            Some(DhcpOption::DomainNameServer(list)) => list.clone(),
            _ => Vec::new(),
        };
        let domain = match opts.get(OptionCode::DomainName) {
            Some(DhcpOption::DomainName(d)) => Some(d.trim_end_matches('\0').to_string()),
            _ => None,
        }
        .filter(|d| !d.is_empty());
        let server = match opts.get(OptionCode::ServerIdentifier) {
            Some(DhcpOption::ServerIdentifier(s)) => *s,
            _ if !source.is_unspecified() => source,
            _ if !m.siaddr().is_unspecified() => m.siaddr(),
            _ => return Err(LeaseError::NoServer),
        };
        let lease_secs = match opts.get(OptionCode::AddressLeaseTime) {
            Some(DhcpOption::AddressLeaseTime(t)) => (*t).max(1),
            _ => DEFAULT_LEASE_SECS,
        };
        let (t1_secs, t2_secs) = if lease_secs == INFINITE {
            (INFINITE, INFINITE)
        } else {
            let t2 = match opts.get(OptionCode::Rebinding) {
                Some(DhcpOption::Rebinding(t)) => *t,
                _ => (u64::from(lease_secs) * 7 / 8) as u32,
            }
            .min(lease_secs);
            let t1 = match opts.get(OptionCode::Renewal) {
                Some(DhcpOption::Renewal(t)) => *t,
                _ => lease_secs / 2,
            }
            .min(t2);
            (t1, t2)
        };
        Ok(Lease {
            address,
            prefix,
            router,
            dns,
            domain,
            server,
            lease_secs,
            t1_secs,
            t2_secs,
        })
    }

    /// Whether the lease never ends.
    pub fn is_infinite(&self) -> bool {
        self.lease_secs == INFINITE
    }

    /// The address configuration the lease gives.
    pub fn ip_config(&self) -> IpConfig {
        IpConfig {
            address: IpAddr::V4(self.address),
            prefix: self.prefix,
            gateway: self.router.map(IpAddr::V4),
            dns: self.dns.iter().copied().map(IpAddr::V4).collect(),
            search: self.domain.clone(),
        }
    }
}

impl fmt::Display for Lease {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.address, self.prefix)?;
        if let Some(r) = self.router {
            write!(f, " via {r}")?;
        }
        if self.is_infinite() {
            write!(f, " (dhcp, infinite lease)")
        } else {
            write!(f, " (dhcp, lease {} s)", self.lease_secs)
        }
    }
}

/// The prefix length of a subnet mask; `None` if the mask has holes.
pub fn prefix_from_mask(mask: Ipv4Addr) -> Option<u8> {
    let m = u32::from(mask);
    let ones = m.leading_ones();
    (ones + m.trailing_zeros() >= 32).then_some(ones as u8)
}

/// The prefix of an address's historic class, for servers that send no
/// mask.
fn classful_prefix(a: Ipv4Addr) -> u8 {
    match a.octets()[0] {
        0..=127 => 8,
        128..=191 => 16,
        _ => 24,
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    pub(crate) const MAC: Mac = Mac([0x52, 0x54, 0x00, 0x12, 0x34, 0x56]);

    pub(crate) fn id() -> ClientId {
        ClientId {
            mac: MAC,
            hostname: Some("node1".into()),
        }
    }

    fn ip(s: &str) -> Ipv4Addr {
        s.parse().unwrap()
    }

    /// A reply as QEMU's user-mode network sends it.
    pub(crate) fn slirp_reply(req: &Message, kind: MessageType) -> Message {
        let mut m = Message::new_with_id(
            req.xid(),
            Ipv4Addr::UNSPECIFIED,
            ip("10.0.2.15"),
            ip("10.0.2.2"),
            Ipv4Addr::UNSPECIFIED,
            &req.chaddr()[..6],
        );
        m.set_opcode(Opcode::BootReply);
        let o = m.opts_mut();
        o.insert(DhcpOption::MessageType(kind));
        o.insert(DhcpOption::ServerIdentifier(ip("10.0.2.2")));
        o.insert(DhcpOption::SubnetMask(ip("255.255.255.0")));
        o.insert(DhcpOption::Router(vec![ip("10.0.2.2")]));
        o.insert(DhcpOption::DomainNameServer(vec![ip("10.0.2.3")]));
        o.insert(DhcpOption::AddressLeaseTime(86400));
        m
    }

    #[test]
    fn discover_is_broadcast_padded_and_identifies_the_client() {
        let m = discover(&id(), 0xdead_beef, 3, None);
        let bytes = encode(&m).unwrap();
        assert_eq!(bytes.len(), MIN_MESSAGE_LEN);
        // op, htype, hlen, hops, xid, secs, flags as on the wire.
        assert_eq!(
            &bytes[..12],
            &[1, 1, 6, 0, 0xde, 0xad, 0xbe, 0xef, 0, 3, 0x80, 0]
        );
        assert_eq!(&bytes[28..34], &MAC.0);
        assert_eq!(&bytes[236..240], &[99, 130, 83, 99]);
        let back = decode(&bytes).unwrap();
        assert_eq!(back.opts().msg_type(), Some(MessageType::Discover));
        assert!(back.flags().broadcast());
        assert_eq!(
            back.opts().get(OptionCode::ClientIdentifier),
            Some(&DhcpOption::ClientIdentifier(vec![
                1, 0x52, 0x54, 0, 0x12, 0x34, 0x56
            ]))
        );
        assert_eq!(
            back.opts().get(OptionCode::Hostname),
            Some(&DhcpOption::Hostname("node1".into()))
        );
        let Some(DhcpOption::ParameterRequestList(prl)) =
            back.opts().get(OptionCode::ParameterRequestList)
        else {
            panic!("no parameter request list");
        };
        for code in [
            OptionCode::SubnetMask,
            OptionCode::Router,
            OptionCode::DomainNameServer,
        ] {
            assert!(prl.contains(&code), "{code:?} not requested");
        }
        assert!(back.opts().get(OptionCode::RequestedIpAddress).is_none());
        let hinted = discover(&id(), 1, 0, Some(ip("10.0.2.15")));
        assert_eq!(
            hinted.opts().get(OptionCode::RequestedIpAddress),
            Some(&DhcpOption::RequestedIpAddress(ip("10.0.2.15")))
        );
    }

    #[test]
    fn requests_carry_what_each_state_needs() {
        let sel = request(
            &id(),
            7,
            0,
            RequestKind::Selecting {
                server: ip("10.0.2.2"),
                requested: ip("10.0.2.15"),
            },
        );
        assert_eq!(sel.opts().msg_type(), Some(MessageType::Request));
        assert!(sel.flags().broadcast());
        assert_eq!(sel.ciaddr(), Ipv4Addr::UNSPECIFIED);
        assert_eq!(
            sel.opts().get(OptionCode::ServerIdentifier),
            Some(&DhcpOption::ServerIdentifier(ip("10.0.2.2")))
        );
        assert_eq!(
            sel.opts().get(OptionCode::RequestedIpAddress),
            Some(&DhcpOption::RequestedIpAddress(ip("10.0.2.15")))
        );

        let reboot = request(
            &id(),
            7,
            0,
            RequestKind::Reboot {
                requested: ip("10.0.2.15"),
            },
        );
        assert!(reboot.opts().get(OptionCode::ServerIdentifier).is_none());
        assert!(reboot.opts().get(OptionCode::RequestedIpAddress).is_some());

        let renew = request(
            &id(),
            7,
            0,
            RequestKind::Renewing {
                ciaddr: ip("10.0.2.15"),
            },
        );
        assert_eq!(renew.ciaddr(), ip("10.0.2.15"));
        assert!(!renew.flags().broadcast());
        assert!(renew.opts().get(OptionCode::ServerIdentifier).is_none());
        assert!(renew.opts().get(OptionCode::RequestedIpAddress).is_none());
        let bytes = encode(&renew).unwrap();
        assert_eq!(&bytes[12..16], &[10, 0, 2, 15]);
    }

    #[test]
    fn parses_an_offer_and_an_ack() {
        let req = discover(&id(), 42, 0, None);
        let offer = decode(&encode(&slirp_reply(&req, MessageType::Offer)).unwrap()).unwrap();
        assert_eq!(reply_type(&offer, 42, MAC), Some(MessageType::Offer));
        let lease = Lease::from_reply(&offer, ip("10.0.2.2")).unwrap();
        assert_eq!(
            lease,
            Lease {
                address: ip("10.0.2.15"),
                prefix: 24,
                router: Some(ip("10.0.2.2")),
                dns: vec![ip("10.0.2.3")],
                domain: None,
                server: ip("10.0.2.2"),
                lease_secs: 86400,
                t1_secs: 43200,
                t2_secs: 75600,
            }
        );
        assert_eq!(
            lease.to_string(),
            "10.0.2.15/24 via 10.0.2.2 (dhcp, lease 86400 s)"
        );
        let cfg = lease.ip_config();
        assert_eq!(cfg.address, IpAddr::V4(ip("10.0.2.15")));
        assert_eq!(cfg.gateway, Some(IpAddr::V4(ip("10.0.2.2"))));
        assert_eq!(cfg.dns, vec![IpAddr::V4(ip("10.0.2.3"))]);

        let mut ack = slirp_reply(&req, MessageType::Ack);
        let o = ack.opts_mut();
        o.insert(DhcpOption::SubnetMask(ip("255.255.240.0")));
        o.insert(DhcpOption::AddressLeaseTime(600));
        o.insert(DhcpOption::Renewal(100));
        o.insert(DhcpOption::DomainName("lab.example".into()));
        o.insert(DhcpOption::DomainNameServer(vec![
            ip("10.0.2.3"),
            ip("10.0.2.4"),
        ]));
        let ack = decode(&encode(&ack).unwrap()).unwrap();
        assert_eq!(reply_type(&ack, 42, MAC), Some(MessageType::Ack));
        let lease = Lease::from_reply(&ack, Ipv4Addr::UNSPECIFIED).unwrap();
        assert_eq!(lease.prefix, 20);
        assert_eq!(
            (lease.lease_secs, lease.t1_secs, lease.t2_secs),
            (600, 100, 525)
        );
        assert_eq!(lease.domain.as_deref(), Some("lab.example"));
        assert_eq!(lease.dns.len(), 2);
    }

    #[test]
    fn rejects_replies_for_others_and_unusable_leases() {
        let req = discover(&id(), 42, 0, None);
        let offer = slirp_reply(&req, MessageType::Offer);
        assert_eq!(reply_type(&offer, 43, MAC), None, "wrong xid");
        let other = Mac([2, 0, 0, 0, 0, 1]);
        assert_eq!(reply_type(&offer, 42, other), None, "wrong chaddr");
        // Our own request echoed back (a BOOTREQUEST) is not a reply.
        assert_eq!(reply_type(&req, 42, MAC), None);

        let mut bad = offer.clone();
        bad.opts_mut()
            .insert(DhcpOption::SubnetMask(ip("255.0.255.0")));
        assert_eq!(
            Lease::from_reply(&bad, ip("10.0.2.2")),
            Err(LeaseError::BadMask(ip("255.0.255.0")))
        );
        let mut none = offer.clone();
        none.set_yiaddr(Ipv4Addr::UNSPECIFIED);
        assert_eq!(
            Lease::from_reply(&none, ip("10.0.2.2")),
            Err(LeaseError::NoAddress)
        );
        let mut anon = offer;
        anon.opts_mut().remove(OptionCode::ServerIdentifier);
        anon.set_siaddr(Ipv4Addr::UNSPECIFIED);
        assert_eq!(
            Lease::from_reply(&anon, Ipv4Addr::UNSPECIFIED),
            Err(LeaseError::NoServer)
        );
        // Without option 54 the packet's source names the server.
        assert_eq!(
            Lease::from_reply(&anon, ip("10.0.2.9")).unwrap().server,
            ip("10.0.2.9")
        );
    }

    #[test]
    fn lease_times_defaults_and_infinity() {
        let req = discover(&id(), 1, 0, None);
        let mut m = slirp_reply(&req, MessageType::Ack);
        m.opts_mut().remove(OptionCode::SubnetMask);
        m.opts_mut().insert(DhcpOption::AddressLeaseTime(INFINITE));
        let l = Lease::from_reply(&m, ip("10.0.2.2")).unwrap();
        assert_eq!(l.prefix, 8, "class A default without a mask");
        assert!(l.is_infinite());
        assert_eq!((l.t1_secs, l.t2_secs), (INFINITE, INFINITE));
        // T1 beyond T2 is clamped.
        m.opts_mut().insert(DhcpOption::AddressLeaseTime(100));
        m.opts_mut().insert(DhcpOption::Renewal(90));
        m.opts_mut().insert(DhcpOption::Rebinding(80));
        let l = Lease::from_reply(&m, ip("10.0.2.2")).unwrap();
        assert_eq!((l.t1_secs, l.t2_secs), (80, 80));
    }

    #[test]
    fn mask_to_prefix() {
        for (mask, p) in [
            ("255.255.255.0", Some(24)),
            ("255.255.255.255", Some(32)),
            ("0.0.0.0", Some(0)),
            ("255.255.254.0", Some(23)),
            ("255.255.0.255", None),
            ("0.255.255.255", None),
        ] {
            assert_eq!(prefix_from_mask(ip(mask)), p, "{mask}");
        }
    }
}
