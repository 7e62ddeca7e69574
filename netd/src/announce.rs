//! ARP announcements (RFC 5227, section 2.3) of the management address.
//!
//! When netd gives the bridge an IPv4 address, static or leased, it tells
//! the link so: an ARP request whose sender and target address are both
//! the new address, broadcast from the bridge's MAC. Neighbours that
//! already know the address (a router, the administrator's machine, a
//! monitoring system retrying its connection) update or fill their ARP
//! cache at once, instead of reaching the node only after their next ARP
//! request has been answered, or keeping a stale MAC from before a
//! reboot or a NIC swap.
//!
//! An announcement sent before the bridge forwards through its port is
//! lost, so the first one waits for the bridge's carrier; the second
//! follows [`ANNOUNCE_INTERVAL`] later, as the RFC asks.

use std::io;
use std::net::Ipv4Addr;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::path::PathBuf;
use std::time::Duration;

use crate::rtnl::Mac;

/// How many announcements are sent (RFC 5227's ANNOUNCE_NUM).
pub const ANNOUNCE_NUM: u32 = 2;
/// The time between them (RFC 5227's ANNOUNCE_INTERVAL).
pub const ANNOUNCE_INTERVAL: Duration = Duration::from_secs(2);
/// How long the first announcement waits for the bridge's carrier.
const CARRIER_WAIT: Duration = Duration::from_secs(5);

const ETH_P_ARP: u16 = 0x0806;

/// The 28 bytes of an ARP announcement of `ip` by `mac`: an Ethernet/IPv4
/// request whose sender and target protocol addresses are both `ip` and
/// whose target hardware address is zero.
pub fn announcement(mac: Mac, ip: Ipv4Addr) -> [u8; 28] {
    let mut p = [0u8; 28];
    p[0..2].copy_from_slice(&1u16.to_be_bytes()); // hardware type: Ethernet
    p[2..4].copy_from_slice(&0x0800u16.to_be_bytes()); // protocol type: IPv4
    p[4] = 6; // hardware address length
    p[5] = 4; // protocol address length
    p[6..8].copy_from_slice(&1u16.to_be_bytes()); // operation: request
    p[8..14].copy_from_slice(&mac.0);
    p[14..18].copy_from_slice(&ip.octets());
    // p[18..24]: target hardware address, zero.
    p[24..28].copy_from_slice(&ip.octets());
    p
}

/// Broadcasts one announcement of `ip` by `mac` on the interface `ifindex`.
pub fn send(ifindex: u32, mac: Mac, ip: Ipv4Addr) -> io::Result<()> {
    // SAFETY: socket(2) takes no pointers; the result is checked before
    // it is wrapped, so the OwnedFd owns a valid descriptor.
    let fd = unsafe {
        let fd = libc::socket(
            libc::AF_PACKET,
            libc::SOCK_DGRAM | libc::SOCK_CLOEXEC,
            i32::from(ETH_P_ARP.to_be()),
        );
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        OwnedFd::from_raw_fd(fd)
    };
    // SAFETY: sockaddr_ll is plain old data, for which all zeroes is valid.
    let mut to: libc::sockaddr_ll = unsafe { std::mem::zeroed() };
    to.sll_family = libc::AF_PACKET as u16;
    to.sll_protocol = ETH_P_ARP.to_be();
    to.sll_ifindex = ifindex as i32;
    to.sll_halen = 6;
    to.sll_addr[..6].copy_from_slice(&[0xff; 6]);
    let packet = announcement(mac, ip);
    // SAFETY: the buffer and the address are valid for the lengths given
    // and outlive the call; the descriptor is open.
    let sent = unsafe {
        libc::sendto(
            fd.as_raw_fd(),
            packet.as_ptr().cast(),
            packet.len(),
            0,
            std::ptr::addr_of!(to).cast(),
            std::mem::size_of::<libc::sockaddr_ll>() as libc::socklen_t,
        )
    };
    if sent < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// Announces `ip` on the bridge in the background: once the bridge has a
/// carrier (at most [`CARRIER_WAIT`]), then [`ANNOUNCE_NUM`]` - 1` more
/// times [`ANNOUNCE_INTERVAL`] apart. Failures are logged, never fatal.
pub fn spawn(sys_class_net: PathBuf, bridge: &str, ifindex: u32, mac: Mac, ip: Ipv4Addr) {
    let bridge = bridge.to_string();
    tokio::spawn(async move {
        // Sent anyway without a carrier: it may still reach someone.
        crate::sysfs::wait_for_carrier(&sys_class_net, &bridge, CARRIER_WAIT).await;
        for i in 0..ANNOUNCE_NUM {
            if i > 0 {
                tokio::time::sleep(ANNOUNCE_INTERVAL).await;
            }
            match send(ifindex, mac, ip) {
                Ok(()) if i == 0 => tracing::info!("{bridge}: announced {ip} (ARP)"),
                Ok(()) => {}
                Err(e) => {
                    tracing::warn!("{bridge}: cannot announce {ip}: {e}");
                    return;
                }
            }
        }
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn announcement_layout() {
        let p = announcement(
            Mac([0x52, 0x54, 0, 0x12, 0x34, 0x56]),
            Ipv4Addr::new(10, 0, 2, 15),
        );
        assert_eq!(
            p,
            [
                0, 1, 8, 0, 6, 4, 0, 1, // Ethernet, IPv4, request
                0x52, 0x54, 0, 0x12, 0x34, 0x56, 10, 0, 2, 15, // sender
                0, 0, 0, 0, 0, 0, 10, 0, 2, 15, // target
            ]
        );
    }
}
