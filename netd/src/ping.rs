//! A minimal ICMP echo ("ping") over a raw socket, used to tell whether
//! the management address still reaches its gateway.

use std::io::{self, Read};
use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use socket2::{Domain, Protocol, SockAddr, Socket, Type};

fn checksum(data: &[u8]) -> u16 {
    let mut sum: u32 = 0;
    for chunk in data.chunks(2) {
        let word = u16::from_be_bytes([chunk[0], *chunk.get(1).unwrap_or(&0)]);
        sum += u32::from(word);
    }
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    !(sum as u16)
}

/// Sends one echo request from `source` to `target` and waits up to
/// `timeout` for the reply. Needs `CAP_NET_RAW`.
pub async fn ping(source: IpAddr, target: IpAddr, timeout: Duration) -> io::Result<bool> {
    let v6 = target.is_ipv6();
    let socket = if v6 {
        Socket::new(Domain::IPV6, Type::RAW, Some(Protocol::ICMPV6))?
    } else {
        Socket::new(Domain::IPV4, Type::RAW, Some(Protocol::ICMPV4))?
    };
    socket.set_nonblocking(true)?;
    socket.bind(&SockAddr::from(SocketAddr::new(source, 0)))?;
    let id = (std::process::id() as u16) ^ 0x0b0b;
    let seq: u16 = 1;
    let mut packet = vec![if v6 { 128 } else { 8 }, 0, 0, 0];
    packet.extend_from_slice(&id.to_be_bytes());
    packet.extend_from_slice(&seq.to_be_bytes());
    packet.extend_from_slice(b"oxbow-netd");
    if !v6 {
        // The kernel fills in ICMPv6 checksums itself.
        let c = checksum(&packet);
        packet[2..4].copy_from_slice(&c.to_be_bytes());
    }
    // A connected raw socket only receives packets from `target`.
    socket.connect(&SockAddr::from(SocketAddr::new(target, 0)))?;
    let fd = crate::sys::async_socket(socket)?;
    fd.get_ref().send(&packet)?;
    let wait = async {
        let mut buf = [0u8; 1500];
        loop {
            let mut guard = fd.readable().await?;
            let received = guard.try_io(|s| s.get_ref().read(&mut buf));
            let Ok(result) = received else { continue };
            let data = &buf[..result?];
            let icmp = if v6 {
                data
            } else {
                let ihl = usize::from(data.first().copied().unwrap_or(0) & 0x0f) * 4;
                data.get(ihl..).unwrap_or_default()
            };
            let reply = if v6 { 129 } else { 0 };
            if icmp.len() >= 8
                && icmp[0] == reply
                && icmp[4..6] == id.to_be_bytes()
                && icmp[6..8] == seq.to_be_bytes()
            {
                return Ok::<bool, io::Error>(true);
            }
        }
    };
    match tokio::time::timeout(timeout, wait).await {
        Ok(r) => r,
        Err(_) => Ok(false),
    }
}
