//! netd's DHCPv4 client.
//!
//! [`msg`] builds and reads messages (with dhcproto); [`client`] runs the
//! RFC 2131 state machine over a [`client::Transport`], normally a UDP
//! socket bound to port 68 on the management bridge, and reports leases as
//! [`client::DhcpEvent`]s for the daemon to apply.

pub mod client;
pub mod msg;

pub use client::{Client, DhcpEvent, LossReason, Transport, UdpTransport};
pub use msg::{ClientId, Lease};

/// The DHCP client could not start.
#[derive(Debug, thiserror::Error)]
pub enum DhcpError {
    /// The socket could not be set up.
    #[error("cannot open the DHCP client socket on {device}: {source}")]
    Socket {
        /// The interface it was to be bound to.
        device: String,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
}
