//! The DHCPv4 client state machine (RFC 2131, section 4.4).
//!
//! The client gets a lease (INIT-REBOOT for an address the bridge already
//! has, else DISCOVER, OFFER, REQUEST, ACK), reports it, renews it with
//! the granting server at T1, rebinds with any server at T2, and starts
//! over when the lease runs out or a server refuses it. It never gives up:
//! retries back off up to a minute apart and go on for as long as the
//! daemon runs.

use std::future::Future;
use std::hash::{BuildHasher, Hasher};
use std::io;
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4};
use std::time::Duration;

use dhcproto::v4::{Message, MessageType};
use tokio::sync::mpsc;
use tokio::time::{sleep, sleep_until, timeout_at, Instant};

use super::msg::{self, ClientId, Lease, RequestKind, CLIENT_PORT, SERVER_PORT};
use super::DhcpError;

/// Where broadcast messages go.
const BROADCAST: SocketAddrV4 = SocketAddrV4::new(Ipv4Addr::BROADCAST, SERVER_PORT);
/// Waits for a DHCPOFFER: 1, 2, 4, ... seconds, then a minute at most.
const MAX_DISCOVER_WAIT: Duration = Duration::from_secs(64);
/// Waits for a DHCPACK to a REQUEST.
const REQUEST_WAITS: [u64; 4] = [1, 2, 4, 8];
/// Waits for a DHCPACK to an INIT-REBOOT REQUEST before falling back to
/// DISCOVER.
const REBOOT_WAITS: [u64; 3] = [1, 2, 4];
/// The shortest wait between retransmissions while renewing or rebinding
/// (RFC 2131, 4.4.5), unless less of the period is left.
const MIN_RENEW_WAIT: Duration = Duration::from_secs(60);

/// How the client sends and receives datagrams.
pub trait Transport {
    /// Sends one datagram.
    fn send_to(&mut self, packet: &[u8], to: SocketAddrV4) -> impl Future<Output = io::Result<()>>;
    /// Receives one datagram into `buf`. Must be cancel-safe.
    fn recv_from(
        &mut self,
        buf: &mut [u8],
    ) -> impl Future<Output = io::Result<(usize, SocketAddr)>>;
}

/// A UDP socket on port 68 of one interface.
#[derive(Debug)]
pub struct UdpTransport {
    socket: tokio::net::UdpSocket,
}

impl UdpTransport {
    /// Opens the client socket: bound to `0.0.0.0:68` on `device` only
    /// (`SO_BINDTODEVICE`), allowed to broadcast, and sharing the port
    /// (`SO_REUSEADDR`). Must be called inside a Tokio runtime.
    pub fn open(device: &str) -> Result<UdpTransport, DhcpError> {
        let err = |source| DhcpError::Socket {
            device: device.to_string(),
            source,
        };
        use socket2::{Domain, Protocol, Socket, Type};
        let s = Socket::new(Domain::IPV4, Type::DGRAM, Some(Protocol::UDP)).map_err(err)?;
        s.set_reuse_address(true).map_err(err)?;
        s.set_broadcast(true).map_err(err)?;
        s.bind_device(Some(device.as_bytes())).map_err(err)?;
        let local = SocketAddr::from((Ipv4Addr::UNSPECIFIED, CLIENT_PORT));
        s.bind(&local.into()).map_err(err)?;
        s.set_nonblocking(true).map_err(err)?;
        let socket = tokio::net::UdpSocket::from_std(s.into()).map_err(err)?;
        Ok(UdpTransport { socket })
    }
}

impl Transport for UdpTransport {
    async fn send_to(&mut self, packet: &[u8], to: SocketAddrV4) -> io::Result<()> {
        self.socket.send_to(packet, to).await.map(|_| ())
    }

    async fn recv_from(&mut self, buf: &mut [u8]) -> io::Result<(usize, SocketAddr)> {
        self.socket.recv_from(buf).await
    }
}

/// What the client tells the daemon.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DhcpEvent {
    /// A lease was obtained (after start-up or after losing the last one).
    Bound(Lease),
    /// The lease was extended; the new one may differ in details.
    Renewed(Lease),
    /// The lease is gone; the address must be removed. The client is
    /// already looking for a new one.
    Lost {
        /// The lease that was lost.
        lease: Lease,
        /// Why.
        reason: LossReason,
    },
}

/// Why a lease was lost.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LossReason {
    /// No server extended it in time.
    Expired,
    /// A server answered DHCPNAK.
    Refused,
}

/// The DHCPv4 client of one interface.
#[derive(Debug)]
pub struct Client<T> {
    transport: T,
    id: ClientId,
    iface: String,
    /// An address the interface already has, to confirm first.
    reboot: Option<Ipv4Addr>,
    /// An address to ask for in DISCOVER.
    hint: Option<Ipv4Addr>,
    xids: std::collections::hash_map::RandomState,
    xid_count: u64,
}

impl<T: Transport> Client<T> {
    /// A client for interface `iface` (named in logs).
    pub fn new(transport: T, id: ClientId, iface: &str) -> Client<T> {
        Client {
            transport,
            id,
            iface: iface.to_string(),
            reboot: None,
            hint: None,
            xids: Default::default(),
            xid_count: 0,
        }
    }

    /// Starts by confirming `addr`, which the interface already has (from
    /// before a restart of netd), instead of asking for a new lease.
    pub fn with_previous(mut self, addr: Option<Ipv4Addr>) -> Client<T> {
        self.reboot = addr;
        self.hint = addr;
        self
    }

    /// Runs until `events` is closed.
    pub async fn run(mut self, events: mpsc::Sender<DhcpEvent>) {
        loop {
            let (mut lease, mut bound_at) = self.acquire().await;
            if events.send(DhcpEvent::Bound(lease.clone())).await.is_err() {
                return;
            }
            loop {
                match self.maintain(&lease, bound_at).await {
                    Ok((new, at)) => {
                        lease = new;
                        bound_at = at;
                        if events
                            .send(DhcpEvent::Renewed(lease.clone()))
                            .await
                            .is_err()
                        {
                            return;
                        }
                    }
                    Err(reason) => {
                        self.hint = (reason == LossReason::Expired).then_some(lease.address);
                        let lost = DhcpEvent::Lost {
                            lease: lease.clone(),
                            reason,
                        };
                        if events.send(lost).await.is_err() {
                            return;
                        }
                        break;
                    }
                }
            }
        }
    }

    fn new_xid(&mut self) -> u32 {
        let mut h = self.xids.build_hasher();
        h.write_u64(self.xid_count);
        self.xid_count += 1;
        h.finish() as u32
    }

    /// INIT-REBOOT or INIT through to BOUND. Returns the lease and when it
    /// started.
    async fn acquire(&mut self) -> (Lease, Instant) {
        let started = Instant::now();
        if let Some(addr) = self.reboot.take() {
            let xid = self.new_xid();
            let kind = RequestKind::Reboot { requested: addr };
            match self.request(xid, started, kind, &REBOOT_WAITS).await {
                Granted::Ack(lease, sent) => return (lease, sent),
                Granted::Nak => {
                    tracing::info!("{}: the DHCP server no longer grants {addr}", self.iface);
                    self.hint = None;
                }
                Granted::Unusable | Granted::NoAnswer => {}
            }
        }
        // Retransmissions keep the transaction ID, so that an offer that
        // comes late (servers may probe the address first) still counts.
        let mut xid = self.new_xid();
        let mut attempt = 0u32;
        loop {
            let wait = discover_wait(attempt);
            attempt += 1;
            if attempt == 5 {
                tracing::warn!("{}: no DHCP offer yet; still trying", self.iface);
            }
            let d = msg::discover(&self.id, xid, secs_since(started), self.hint);
            let Some((_, reply, src)) = self
                .exchange(&d, BROADCAST, Instant::now() + wait, &[MessageType::Offer])
                .await
            else {
                tracing::debug!("{}: no DHCPOFFER within {wait:?}", self.iface);
                continue;
            };
            let offer = match Lease::from_reply(&reply, src) {
                Ok(o) => o,
                Err(e) => {
                    tracing::warn!("{}: ignoring DHCPOFFER from {src}: {e}", self.iface);
                    continue;
                }
            };
            tracing::debug!(
                "{}: offered {} by {}",
                self.iface,
                offer.address,
                offer.server
            );
            let kind = RequestKind::Selecting {
                server: offer.server,
                requested: offer.address,
            };
            match self.request(xid, started, kind, &REQUEST_WAITS).await {
                Granted::Ack(lease, sent) => return (lease, sent),
                Granted::Nak => tracing::warn!(
                    "{}: {} refused {} after offering it",
                    self.iface,
                    offer.server,
                    offer.address
                ),
                Granted::Unusable | Granted::NoAnswer => {}
            }
            self.hint = None;
            xid = self.new_xid();
            // Do not loop tightly on a server that offers and then refuses.
            sleep(discover_wait(attempt.min(2))).await;
        }
    }

    /// Broadcasts a REQUEST, retransmitted after each of `waits` seconds,
    /// until the server ACKs or NAKs it.
    async fn request(
        &mut self,
        xid: u32,
        started: Instant,
        kind: RequestKind,
        waits: &[u64],
    ) -> Granted {
        for wait in waits {
            let m = msg::request(&self.id, xid, secs_since(started), kind);
            let sent = Instant::now();
            match self
                .exchange(
                    &m,
                    BROADCAST,
                    sent + secs(*wait),
                    &[MessageType::Ack, MessageType::Nak],
                )
                .await
            {
                Some((MessageType::Ack, reply, src)) => {
                    return match Lease::from_reply(&reply, src) {
                        Ok(lease) => Granted::Ack(lease, sent),
                        Err(e) => {
                            tracing::warn!("{}: unusable DHCPACK from {src}: {e}", self.iface);
                            Granted::Unusable
                        }
                    };
                }
                Some(_) => return Granted::Nak,
                None => {}
            }
        }
        Granted::NoAnswer
    }

    /// BOUND, RENEWING and REBINDING. Returns the extended lease and when
    /// it started, or why it was lost.
    async fn maintain(
        &mut self,
        lease: &Lease,
        bound_at: Instant,
    ) -> Result<(Lease, Instant), LossReason> {
        if lease.is_infinite() {
            return std::future::pending().await;
        }
        let t1 = bound_at + secs(lease.t1_secs.into());
        let t2 = bound_at + secs(lease.t2_secs.into());
        let end = bound_at + secs(lease.lease_secs.into());
        sleep_until(t1).await;
        let started = Instant::now();
        let ciaddr = lease.address;
        let want = [MessageType::Ack, MessageType::Nak];
        for (until, kind, to, what) in [
            (
                t2,
                RequestKind::Renewing { ciaddr },
                SocketAddrV4::new(lease.server, SERVER_PORT),
                "renewing",
            ),
            (
                end,
                RequestKind::Rebinding { ciaddr },
                BROADCAST,
                "rebinding",
            ),
        ] {
            tracing::debug!(
                "{}: {what} the lease on {ciaddr} with {}",
                self.iface,
                to.ip()
            );
            let xid = self.new_xid();
            loop {
                let sent = Instant::now();
                if sent >= until {
                    break;
                }
                let m = msg::request(&self.id, xid, secs_since(started), kind);
                match self
                    .exchange(&m, to, sent + renew_wait(sent, until), &want)
                    .await
                {
                    Some((MessageType::Ack, reply, src)) => match Lease::from_reply(&reply, src) {
                        Ok(new) => return Ok((new, sent)),
                        Err(e) => {
                            tracing::warn!("{}: unusable DHCPACK from {src}: {e}", self.iface)
                        }
                    },
                    Some((_, _, src)) => {
                        tracing::warn!(
                            "{}: DHCP server {src} refused to extend the lease on {ciaddr}",
                            self.iface
                        );
                        return Err(LossReason::Refused);
                    }
                    None => {}
                }
            }
        }
        Err(LossReason::Expired)
    }

    /// Sends `m` to `to` and waits until `deadline` for a reply to it of
    /// one of the `want`ed types. Replies to other transactions or clients
    /// are ignored. A failed send is logged and counts as no reply.
    async fn exchange(
        &mut self,
        m: &Message,
        to: SocketAddrV4,
        deadline: Instant,
        want: &[MessageType],
    ) -> Option<(MessageType, Message, Ipv4Addr)> {
        let kind = m.opts().msg_type();
        match msg::encode(m) {
            Ok(bytes) => {
                if let Err(e) = self.transport.send_to(&bytes, to).await {
                    tracing::warn!("{}: cannot send DHCP {kind:?} to {to}: {e}", self.iface);
                    sleep_until(deadline).await;
                    return None;
                }
            }
            Err(e) => {
                tracing::error!("{}: cannot encode DHCP {kind:?}: {e}", self.iface);
                sleep_until(deadline).await;
                return None;
            }
        }
        let mut buf = vec![0u8; 2048];
        loop {
            let (n, from) = match timeout_at(deadline, self.transport.recv_from(&mut buf)).await {
                Err(_) => return None,
                Ok(Ok(r)) => r,
                Ok(Err(e)) => {
                    tracing::warn!("{}: DHCP socket: {e}", self.iface);
                    sleep_until(deadline.min(Instant::now() + Duration::from_millis(200))).await;
                    continue;
                }
            };
            let Some(reply) = msg::decode(&buf[..n]) else {
                tracing::debug!(
                    "{}: ignoring a malformed DHCP message from {from}",
                    self.iface
                );
                continue;
            };
            let Some(kind) = msg::reply_type(&reply, m.xid(), self.id.mac) else {
                tracing::debug!(
                    "{}: ignoring a DHCP message for another transaction from {from}",
                    self.iface
                );
                continue;
            };
            if !want.contains(&kind) {
                tracing::debug!("{}: ignoring DHCP {kind:?} from {from}", self.iface);
                continue;
            }
            let src = match from {
                SocketAddr::V4(a) => *a.ip(),
                SocketAddr::V6(_) => Ipv4Addr::UNSPECIFIED,
            };
            return Some((kind, reply, src));
        }
    }
}

/// How a REQUEST ended.
enum Granted {
    /// The server acknowledged: the lease, and when the REQUEST was sent.
    Ack(Lease, Instant),
    /// The server refused.
    Nak,
    /// The server acknowledged with a message we cannot use (logged).
    Unusable,
    /// No answer to any retransmission.
    NoAnswer,
}

fn secs(n: u64) -> Duration {
    Duration::from_secs(n)
}

fn secs_since(t: Instant) -> u16 {
    u16::try_from(t.elapsed().as_secs()).unwrap_or(u16::MAX)
}

/// How long to wait for an offer on the `attempt`th DISCOVER (from 0).
fn discover_wait(attempt: u32) -> Duration {
    secs(1u64 << attempt.min(6)).min(MAX_DISCOVER_WAIT)
}

/// How long to wait before retransmitting while renewing or rebinding:
/// half the time left, at least a minute, and never past `until`.
fn renew_wait(now: Instant, until: Instant) -> Duration {
    let left = until.saturating_duration_since(now);
    (left / 2).max(MIN_RENEW_WAIT).min(left)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dhcp::msg::tests::{id, slirp_reply, MAC};
    use dhcproto::v4::{DhcpOption, OptionCode};

    const SERVER: Ipv4Addr = Ipv4Addr::new(10, 0, 2, 2);
    const LEASED: Ipv4Addr = Ipv4Addr::new(10, 0, 2, 15);

    struct Sent {
        msg: Message,
        len: usize,
        to: SocketAddrV4,
        at: Instant,
    }

    struct FakeNet {
        sent: mpsc::UnboundedSender<Sent>,
        replies: mpsc::UnboundedReceiver<Vec<u8>>,
    }

    impl Transport for FakeNet {
        async fn send_to(&mut self, packet: &[u8], to: SocketAddrV4) -> io::Result<()> {
            let msg = msg::decode(packet).expect("the client sent garbage");
            let _ = self.sent.send(Sent {
                msg,
                len: packet.len(),
                to,
                at: Instant::now(),
            });
            Ok(())
        }

        async fn recv_from(&mut self, buf: &mut [u8]) -> io::Result<(usize, SocketAddr)> {
            match self.replies.recv().await {
                Some(b) => {
                    buf[..b.len()].copy_from_slice(&b);
                    Ok((b.len(), SocketAddr::from((SERVER, SERVER_PORT))))
                }
                None => std::future::pending().await,
            }
        }
    }

    /// The test plays the DHCP server.
    struct Server {
        sent: mpsc::UnboundedReceiver<Sent>,
        replies: mpsc::UnboundedSender<Vec<u8>>,
        events: mpsc::Receiver<DhcpEvent>,
    }

    impl Server {
        fn start(previous: Option<Ipv4Addr>) -> Server {
            let (sent_tx, sent) = mpsc::unbounded_channel();
            let (replies, replies_rx) = mpsc::unbounded_channel();
            let (tx, events) = mpsc::channel(4);
            let net = FakeNet {
                sent: sent_tx,
                replies: replies_rx,
            };
            let client = Client::new(net, id(), "vmbr0").with_previous(previous);
            tokio::spawn(client.run(tx));
            Server {
                sent,
                replies,
                events,
            }
        }

        async fn next(&mut self) -> Sent {
            self.sent.recv().await.expect("the client stopped")
        }

        fn reply(&self, to: &Message, kind: MessageType, lease_secs: u32) {
            let mut m = slirp_reply(to, kind);
            m.opts_mut()
                .insert(DhcpOption::AddressLeaseTime(lease_secs));
            if kind == MessageType::Nak {
                m.set_yiaddr(Ipv4Addr::UNSPECIFIED);
            }
            self.replies.send(msg::encode(&m).unwrap()).unwrap();
        }

        async fn event(&mut self) -> DhcpEvent {
            self.events.recv().await.expect("the client stopped")
        }

        /// Runs DISCOVER to ACK and returns the lease and when it was
        /// granted.
        async fn bind(&mut self, lease_secs: u32) -> (Lease, Instant) {
            let d = self.next().await;
            assert_eq!(d.msg.opts().msg_type(), Some(MessageType::Discover));
            self.reply(&d.msg, MessageType::Offer, lease_secs);
            let r = self.next().await;
            assert_eq!(r.msg.opts().msg_type(), Some(MessageType::Request));
            self.reply(&r.msg, MessageType::Ack, lease_secs);
            match self.event().await {
                DhcpEvent::Bound(l) => (l, r.at),
                other => panic!("expected Bound, got {other:?}"),
            }
        }
    }

    fn opt(m: &Message, code: OptionCode) -> Option<&DhcpOption> {
        m.opts().get(code)
    }

    #[tokio::test(start_paused = true)]
    async fn discover_offer_request_ack_then_renew_at_t1() {
        let mut s = Server::start(None);
        let d = s.next().await;
        assert_eq!(d.msg.opts().msg_type(), Some(MessageType::Discover));
        assert_eq!(d.to, BROADCAST);
        assert_eq!(d.len, msg::MIN_MESSAGE_LEN);
        assert!(d.msg.flags().broadcast());
        assert_eq!(&d.msg.chaddr()[..6], &MAC.0);

        // An offer for another transaction is ignored...
        let mut stray = slirp_reply(&d.msg, MessageType::Offer);
        stray.set_xid(d.msg.xid().wrapping_add(1));
        stray.set_yiaddr(Ipv4Addr::new(10, 0, 2, 99));
        s.replies.send(msg::encode(&stray).unwrap()).unwrap();
        // ...and the real one taken up.
        s.reply(&d.msg, MessageType::Offer, 3600);
        let r = s.next().await;
        assert_eq!(r.msg.opts().msg_type(), Some(MessageType::Request));
        assert_eq!(r.msg.xid(), d.msg.xid());
        assert_eq!(r.to, BROADCAST);
        assert_eq!(
            opt(&r.msg, OptionCode::ServerIdentifier),
            Some(&DhcpOption::ServerIdentifier(SERVER))
        );
        assert_eq!(
            opt(&r.msg, OptionCode::RequestedIpAddress),
            Some(&DhcpOption::RequestedIpAddress(LEASED))
        );
        s.reply(&r.msg, MessageType::Ack, 3600);
        let DhcpEvent::Bound(lease) = s.event().await else {
            panic!("expected Bound");
        };
        assert_eq!(lease.address, LEASED);
        assert_eq!(lease.prefix, 24);
        assert_eq!(lease.router, Some(SERVER));
        assert_eq!(lease.dns, vec![Ipv4Addr::new(10, 0, 2, 3)]);
        assert_eq!((lease.lease_secs, lease.t1_secs), (3600, 1800));

        // Renewal: unicast to the server at T1, from the bound address.
        let renew = s.next().await;
        assert_eq!(renew.at - r.at, Duration::from_secs(1800));
        assert_eq!(renew.msg.opts().msg_type(), Some(MessageType::Request));
        assert_eq!(renew.to, SocketAddrV4::new(SERVER, SERVER_PORT));
        assert_eq!(renew.msg.ciaddr(), LEASED);
        assert!(!renew.msg.flags().broadcast());
        assert!(opt(&renew.msg, OptionCode::ServerIdentifier).is_none());
        s.reply(&renew.msg, MessageType::Ack, 7200);
        match s.event().await {
            DhcpEvent::Renewed(l) => assert_eq!(l.lease_secs, 7200),
            other => panic!("expected Renewed, got {other:?}"),
        }
        // The next renewal follows the new lease's T1.
        let again = s.next().await;
        assert_eq!(again.at - renew.at, Duration::from_secs(3600));
    }

    #[tokio::test(start_paused = true)]
    async fn discover_backs_off_and_keeps_its_xid() {
        let mut s = Server::start(None);
        let mut times = Vec::new();
        let mut xids = Vec::new();
        for _ in 0..5 {
            let d = s.next().await;
            assert_eq!(d.msg.opts().msg_type(), Some(MessageType::Discover));
            times.push(d.at);
            xids.push(d.msg.xid());
        }
        let gaps: Vec<u64> = times.windows(2).map(|w| (w[1] - w[0]).as_secs()).collect();
        assert_eq!(gaps, [1, 2, 4, 8]);
        assert!(xids.iter().all(|x| *x == xids[0]));
        // A late answer to the first DISCOVER is still good.
        let first = s.next().await;
        s.reply(&first.msg, MessageType::Offer, 600);
        let r = s.next().await;
        assert_eq!(r.msg.opts().msg_type(), Some(MessageType::Request));
        assert_eq!(r.msg.xid(), xids[0]);
        assert!(r.msg.secs() >= 15, "secs counts from the first DISCOVER");
    }

    #[tokio::test(start_paused = true)]
    async fn nak_on_renewal_loses_the_lease_and_starts_over() {
        let mut s = Server::start(None);
        s.bind(600).await;
        let renew = s.next().await;
        s.reply(&renew.msg, MessageType::Nak, 0);
        match s.event().await {
            DhcpEvent::Lost { lease, reason } => {
                assert_eq!(lease.address, LEASED);
                assert_eq!(reason, LossReason::Refused);
            }
            other => panic!("expected Lost, got {other:?}"),
        }
        let d = s.next().await;
        assert_eq!(d.msg.opts().msg_type(), Some(MessageType::Discover));
        assert!(opt(&d.msg, OptionCode::RequestedIpAddress).is_none());
    }

    #[tokio::test(start_paused = true)]
    async fn unanswered_renewal_rebinds_then_expires() {
        let mut s = Server::start(None);
        let (lease, bound) = s.bind(200).await;
        assert_eq!((lease.t1_secs, lease.t2_secs), (100, 175));
        let mut seen = Vec::new();
        loop {
            let m = s.next().await;
            if m.msg.opts().msg_type() == Some(MessageType::Discover) {
                // After the lease ran out: ask again, for the same address.
                assert_eq!(
                    opt(&m.msg, OptionCode::RequestedIpAddress),
                    Some(&DhcpOption::RequestedIpAddress(LEASED))
                );
                break;
            }
            assert_eq!(m.msg.ciaddr(), LEASED);
            seen.push(((m.at - bound).as_secs(), *m.to.ip()));
        }
        assert_eq!(
            seen,
            [(100, SERVER), (160, SERVER), (175, Ipv4Addr::BROADCAST)]
        );
        match s.event().await {
            DhcpEvent::Lost { reason, .. } => assert_eq!(reason, LossReason::Expired),
            other => panic!("expected Lost, got {other:?}"),
        }
    }

    #[tokio::test(start_paused = true)]
    async fn restart_confirms_the_address_it_has() {
        let mut s = Server::start(Some(LEASED));
        let r = s.next().await;
        assert_eq!(r.msg.opts().msg_type(), Some(MessageType::Request));
        assert_eq!(r.msg.ciaddr(), Ipv4Addr::UNSPECIFIED);
        assert!(r.msg.flags().broadcast());
        assert!(opt(&r.msg, OptionCode::ServerIdentifier).is_none());
        assert_eq!(
            opt(&r.msg, OptionCode::RequestedIpAddress),
            Some(&DhcpOption::RequestedIpAddress(LEASED))
        );
        s.reply(&r.msg, MessageType::Ack, 600);
        assert!(matches!(s.event().await, DhcpEvent::Bound(l) if l.address == LEASED));
    }

    #[tokio::test(start_paused = true)]
    async fn refused_restart_address_falls_back_to_discover() {
        let mut s = Server::start(Some(LEASED));
        let r = s.next().await;
        s.reply(&r.msg, MessageType::Nak, 0);
        let d = s.next().await;
        assert_eq!(d.msg.opts().msg_type(), Some(MessageType::Discover));
        assert!(opt(&d.msg, OptionCode::RequestedIpAddress).is_none());
        // Without an answer at all, INIT-REBOOT gives up after 1 + 2 + 4 s.
        let mut s = Server::start(Some(LEASED));
        let first = s.next().await;
        let d = loop {
            let m = s.next().await;
            if m.msg.opts().msg_type() == Some(MessageType::Discover) {
                break m;
            }
        };
        assert_eq!((d.at - first.at).as_secs(), 7);
        assert_eq!(
            opt(&d.msg, OptionCode::RequestedIpAddress),
            Some(&DhcpOption::RequestedIpAddress(LEASED))
        );
    }
}
