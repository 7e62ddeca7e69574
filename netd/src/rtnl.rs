//! A small wrapper over rtnetlink for the requests netd makes.
//!
//! Changes to existing links go out as `RTM_NEWLINK` without `NLM_F_CREATE`
//! (rtnetlink's `change`), which the kernel applies to the existing link
//! and which, unlike `RTM_SETLINK`, does not silently drop attributes that
//! only some link types understand.

use std::fmt;
use std::io;
use std::net::IpAddr;

use futures_util::TryStreamExt;
use rtnetlink::packet_route::address::{AddressAttribute, AddressMessage, AddressScope};
use rtnetlink::packet_route::link::{
    InfoBridge, InfoData, InfoKind, LinkAttribute, LinkFlags, LinkInfo, LinkMessage,
};
use rtnetlink::packet_route::route::{
    RouteAddress, RouteAttribute, RouteHeader, RouteMessage, RouteProtocol,
};
use rtnetlink::{Handle, LinkBridge, LinkMessageBuilder, LinkUnspec, RouteMessageBuilder};

/// A failed netlink request.
#[derive(Debug, thiserror::Error)]
pub enum RtnlError {
    /// The netlink socket could not be opened.
    #[error("cannot open a netlink socket: {0}")]
    Connect(#[source] io::Error),
    /// The kernel refused a request.
    #[error("{op}: {source}")]
    Request {
        /// What was asked, e.g. `create bridge vmbr0`.
        op: String,
        /// The kernel's answer.
        #[source]
        source: rtnetlink::Error,
    },
    /// Sending a request or reading its answer failed
    /// ([`crate::rtnl_sync::SyncRtnl`]).
    #[error("{op}: netlink socket: {source}")]
    Socket {
        /// What was asked.
        op: String,
        /// Why the socket failed.
        #[source]
        source: io::Error,
    },
    /// An interface that must exist does not.
    #[error("interface {0} does not exist")]
    NoSuchLink(String),
    /// The name of the management bridge is taken by something else.
    #[error("{0} exists but is not a bridge")]
    NotABridge(String),
}

impl RtnlError {
    /// The errno the kernel answered with, if it answered with one.
    pub fn errno(&self) -> Option<i32> {
        match self {
            RtnlError::Request {
                source: rtnetlink::Error::NetlinkError(m),
                ..
            } => m.code.map(|c| -c.get()),
            _ => None,
        }
    }
}

fn failed(op: impl Into<String>) -> impl FnOnce(rtnetlink::Error) -> RtnlError {
    let op = op.into();
    move |source| RtnlError::Request { op, source }
}

/// The errno a failed netlink request carries, if it carries one.
pub fn errno_of(e: &rtnetlink::Error) -> Option<i32> {
    match e {
        rtnetlink::Error::NetlinkError(m) => m.code.map(|c| -c.get()),
        _ => None,
    }
}

/// An Ethernet hardware address.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct Mac(pub [u8; 6]);

impl Mac {
    /// Reads a MAC from a link attribute's bytes.
    pub fn from_bytes(b: &[u8]) -> Option<Mac> {
        <[u8; 6]>::try_from(b).ok().map(Mac)
    }
}

impl fmt::Display for Mac {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let b = self.0;
        write!(
            f,
            "{:02x}:{:02x}:{:02x}:{:02x}:{:02x}:{:02x}",
            b[0], b[1], b[2], b[3], b[4], b[5]
        )
    }
}

impl fmt::Debug for Mac {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

/// What netd needs to know about a link.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Link {
    /// Interface index.
    pub index: u32,
    /// Interface name.
    pub name: String,
    /// Hardware address, for Ethernet-like links.
    pub mac: Option<Mac>,
    /// Administratively up.
    pub up: bool,
    /// Has a carrier (`IFF_LOWER_UP`).
    pub lower_up: bool,
    /// The index of the link it is enslaved to.
    pub controller: Option<u32>,
    /// The interface alias (`ip link set DEV alias ...`).
    pub alias: Option<String>,
    /// Whether it is a bridge.
    pub is_bridge: bool,
    /// For a bridge: whether it filters by VLAN (`bridge-vlan-aware`).
    pub vlan_filtering: bool,
    /// The MTU.
    pub mtu: Option<u32>,
}

impl Link {
    /// Link `index` with nothing else known yet.
    pub(crate) fn empty(index: u32) -> Link {
        Link {
            index,
            name: String::new(),
            mac: None,
            up: false,
            lower_up: false,
            controller: None,
            alias: None,
            is_bridge: false,
            vlan_filtering: false,
            mtu: None,
        }
    }

    pub(crate) fn from_message(m: &LinkMessage) -> Link {
        let mut link = Link {
            up: m.header.flags.contains(LinkFlags::Up),
            lower_up: m.header.flags.contains(LinkFlags::LowerUp),
            ..Link::empty(m.header.index)
        };
        for attr in &m.attributes {
            match attr {
                LinkAttribute::IfName(n) => link.name = n.clone(),
                LinkAttribute::Address(a) => link.mac = Mac::from_bytes(a),
                LinkAttribute::Controller(c) if *c != 0 => link.controller = Some(*c),
                LinkAttribute::IfAlias(a) if !a.is_empty() => link.alias = Some(a.clone()),
                LinkAttribute::Mtu(mtu) => link.mtu = Some(*mtu),
                LinkAttribute::LinkInfo(infos) => {
                    link.is_bridge = infos
                        .iter()
                        .any(|i| matches!(i, LinkInfo::Kind(InfoKind::Bridge)));
                    link.vlan_filtering = infos.iter().any(|i| {
                        matches!(i, LinkInfo::Data(InfoData::Bridge(attrs))
                            if attrs.contains(&InfoBridge::VlanFiltering(true)))
                    });
                }
                _ => {}
            }
        }
        link
    }
}

/// An address on an interface.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IfAddr {
    /// The address.
    pub address: IpAddr,
    /// Its prefix length.
    pub prefix: u8,
    /// Global scope (not link-local or host).
    pub global: bool,
    message: AddressMessage,
}

/// A default route in the main table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DefaultRoute {
    /// The next hop, if the route has one.
    pub gateway: Option<IpAddr>,
    /// The output interface.
    pub oif: Option<u32>,
    /// Routing metric.
    pub priority: u32,
    message: RouteMessage,
}

/// A connection to the kernel's routing netlink.
#[derive(Clone)]
pub struct Rtnl {
    handle: Handle,
}

impl fmt::Debug for Rtnl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Rtnl")
    }
}

impl Rtnl {
    /// Opens the socket. Must be called inside a Tokio runtime, which then
    /// drives the connection.
    pub fn connect() -> Result<Rtnl, RtnlError> {
        let (conn, handle, _) = rtnetlink::new_connection().map_err(RtnlError::Connect)?;
        tokio::spawn(conn);
        Ok(Rtnl { handle })
    }

    /// The underlying rtnetlink handle.
    pub(crate) fn handle(&self) -> &Handle {
        &self.handle
    }

    /// Looks a link up by name; `None` if there is none.
    pub async fn link(&self, name: &str) -> Result<Option<Link>, RtnlError> {
        let mut s = self.handle.link().get().match_name(name).execute();
        match s.try_next().await {
            Ok(m) => Ok(m.as_ref().map(Link::from_message)),
            Err(e) if errno_of(&e) == Some(libc::ENODEV) => Ok(None),
            Err(e) => Err(failed(format!("look up {name}"))(e)),
        }
    }

    /// The link that has address `ip`, if any.
    pub async fn link_carrying(&self, ip: IpAddr) -> Result<Option<Link>, RtnlError> {
        let msgs: Vec<AddressMessage> = self
            .handle
            .address()
            .get()
            .execute()
            .try_collect()
            .await
            .map_err(failed("list addresses"))?;
        let index = msgs.iter().find_map(|m| {
            m.attributes
                .iter()
                .any(|a| matches!(a, AddressAttribute::Local(a) | AddressAttribute::Address(a) if *a == ip))
                .then_some(m.header.index)
        });
        let Some(index) = index else {
            return Ok(None);
        };
        let mut s = self.handle.link().get().match_index(index).execute();
        match s.try_next().await {
            Ok(m) => Ok(m.as_ref().map(Link::from_message)),
            Err(e) if errno_of(&e) == Some(libc::ENODEV) => Ok(None),
            Err(e) => Err(failed(format!("look up link {index}"))(e)),
        }
    }

    /// Looks a link up by name and fails if there is none.
    pub async fn require_link(&self, name: &str) -> Result<Link, RtnlError> {
        self.link(name)
            .await?
            .ok_or_else(|| RtnlError::NoSuchLink(name.to_string()))
    }

    /// Creates a bridge, down, with the kernel's defaults (no STP, no VLAN
    /// filtering) and, if given, hardware address `mac`. Setting the MAC at
    /// creation, before the bridge is ever up, also gives it the matching
    /// IPv6 link-local address.
    pub async fn create_bridge(&self, name: &str, mac: Option<Mac>) -> Result<(), RtnlError> {
        // `LinkBridge::new` would also set the link up.
        let mut b = LinkMessageBuilder::<LinkBridge>::new(name);
        if let Some(mac) = mac {
            b = b.address(mac.0.to_vec());
        }
        self.handle
            .link()
            .add(b.build())
            .execute()
            .await
            .map_err(failed(format!("create bridge {name}")))
    }

    /// Sets the alias of a link.
    pub async fn set_alias(&self, link: &Link, alias: &str) -> Result<(), RtnlError> {
        self.change(
            LinkUnspec::new_with_index(link.index).alias(alias).build(),
            format!("set alias of {}", link.name),
        )
        .await
    }

    /// Sets the hardware address of a link.
    pub async fn set_mac(&self, link: &Link, mac: Mac) -> Result<(), RtnlError> {
        self.change(
            LinkUnspec::new_with_index(link.index)
                .address(mac.0.to_vec())
                .build(),
            format!("set address of {} to {mac}", link.name),
        )
        .await
    }

    /// Enslaves `link` to `controller`.
    pub async fn set_controller(&self, link: &Link, controller: &Link) -> Result<(), RtnlError> {
        self.change(
            LinkUnspec::new_with_index(link.index)
                .controller(controller.index)
                .build(),
            format!("put {} into {}", link.name, controller.name),
        )
        .await
    }

    /// Deletes link `name`; `false` if there was none.
    pub async fn delete_link(&self, name: &str) -> Result<bool, RtnlError> {
        let Some(link) = self.link(name).await? else {
            return Ok(false);
        };
        match self.handle.link().del(link.index).execute().await {
            Ok(()) => Ok(true),
            Err(e) if errno_of(&e) == Some(libc::ENODEV) => Ok(false),
            Err(e) => Err(failed(format!("delete {name}"))(e)),
        }
    }

    /// Sets a link administratively up.
    pub async fn set_up(&self, link: &Link) -> Result<(), RtnlError> {
        self.change(
            LinkUnspec::new_with_index(link.index).up().build(),
            format!("bring {} up", link.name),
        )
        .await
    }

    /// Takes `link` down.
    pub async fn set_down(&self, link: &Link) -> Result<(), RtnlError> {
        self.change(
            LinkUnspec::new_with_index(link.index).down().build(),
            format!("take {} down", link.name),
        )
        .await
    }

    async fn change(&self, msg: LinkMessage, op: String) -> Result<(), RtnlError> {
        self.handle
            .link()
            .change(msg)
            .execute()
            .await
            .map_err(failed(op))
    }

    /// Lists the addresses of a link.
    pub async fn addresses(&self, index: u32) -> Result<Vec<IfAddr>, RtnlError> {
        let msgs: Vec<AddressMessage> = self
            .handle
            .address()
            .get()
            .set_link_index_filter(index)
            .execute()
            .try_collect()
            .await
            .map_err(failed(format!("list addresses of link {index}")))?;
        Ok(msgs
            .into_iter()
            // The filter is applied in user space by rtnetlink, but be sure.
            .filter(|m| m.header.index == index)
            .filter_map(|m| {
                let mut local = None;
                let mut addr = None;
                for a in &m.attributes {
                    match a {
                        AddressAttribute::Local(ip) => local = Some(*ip),
                        AddressAttribute::Address(ip) => addr = Some(*ip),
                        _ => {}
                    }
                }
                let address = local.or(addr)?;
                Some(IfAddr {
                    address,
                    prefix: m.header.prefix_len,
                    global: m.header.scope == AddressScope::Universe,
                    message: m,
                })
            })
            .collect())
    }

    /// Adds an address to a link.
    pub async fn add_address(
        &self,
        index: u32,
        address: IpAddr,
        prefix: u8,
    ) -> Result<(), RtnlError> {
        self.handle
            .address()
            .add(index, address, prefix)
            .execute()
            .await
            .map_err(failed(format!("add {address}/{prefix}")))
    }

    /// Removes an address listed by [`Rtnl::addresses`].
    pub async fn del_address(&self, addr: &IfAddr) -> Result<(), RtnlError> {
        match self
            .handle
            .address()
            .del(addr.message.clone())
            .execute()
            .await
        {
            Err(e) if errno_of(&e) == Some(libc::EADDRNOTAVAIL) => Ok(()),
            r => r.map_err(failed(format!("remove {}/{}", addr.address, addr.prefix))),
        }
    }

    /// Lists the default routes of the main table for one address family.
    pub async fn default_routes(&self, ipv6: bool) -> Result<Vec<DefaultRoute>, RtnlError> {
        let query = if ipv6 {
            RouteMessageBuilder::<std::net::Ipv6Addr>::new().build()
        } else {
            RouteMessageBuilder::<std::net::Ipv4Addr>::new().build()
        };
        let family = query.header.address_family;
        let msgs: Vec<RouteMessage> = self
            .handle
            .route()
            .get(query)
            .execute()
            .try_collect()
            .await
            .map_err(failed("list routes"))?;
        Ok(msgs
            .into_iter()
            .filter(|m| {
                m.header.address_family == family && m.header.destination_prefix_length == 0
            })
            .filter(|m| table_of(m) == u32::from(RouteHeader::RT_TABLE_MAIN))
            .map(|m| {
                let mut r = DefaultRoute {
                    gateway: None,
                    oif: None,
                    priority: 0,
                    message: RouteMessage::default(),
                };
                for a in &m.attributes {
                    match a {
                        RouteAttribute::Gateway(RouteAddress::Inet(g)) => {
                            r.gateway = Some((*g).into())
                        }
                        RouteAttribute::Gateway(RouteAddress::Inet6(g)) => {
                            r.gateway = Some((*g).into())
                        }
                        RouteAttribute::Oif(i) => r.oif = Some(*i),
                        RouteAttribute::Priority(p) => r.priority = *p,
                        _ => {}
                    }
                }
                r.message = m;
                r
            })
            .collect())
    }

    /// Adds or replaces the default route (metric 0) via `gateway` out of
    /// link `oif`. `onlink` is needed when the gateway is outside every
    /// prefix of the link.
    pub async fn replace_default_route(
        &self,
        gateway: IpAddr,
        oif: u32,
        protocol: RouteProtocol,
        onlink: bool,
    ) -> Result<(), RtnlError> {
        let msg = match gateway {
            IpAddr::V4(g) => {
                let b = RouteMessageBuilder::<std::net::Ipv4Addr>::new()
                    .gateway(g)
                    .output_interface(oif)
                    .protocol(protocol);
                if onlink { b.onlink() } else { b }.build()
            }
            IpAddr::V6(g) => {
                let b = RouteMessageBuilder::<std::net::Ipv6Addr>::new()
                    .gateway(g)
                    .output_interface(oif)
                    .protocol(protocol);
                if onlink { b.onlink() } else { b }.build()
            }
        };
        self.handle
            .route()
            .add(msg)
            .replace()
            .execute()
            .await
            .map_err(failed(format!("set default route via {gateway}")))
    }

    /// Removes a route listed by [`Rtnl::default_routes`]; one already gone
    /// is fine.
    pub async fn del_route(&self, route: &DefaultRoute) -> Result<(), RtnlError> {
        match self
            .handle
            .route()
            .del(route.message.clone())
            .execute()
            .await
        {
            Err(e) if errno_of(&e) == Some(libc::ESRCH) => Ok(()),
            r => r.map_err(failed("remove default route")),
        }
    }
}

fn table_of(m: &RouteMessage) -> u32 {
    m.attributes
        .iter()
        .find_map(|a| match a {
            RouteAttribute::Table(t) => Some(*t),
            _ => None,
        })
        .unwrap_or(u32::from(m.header.table))
}
