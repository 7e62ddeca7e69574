//! `netd`, Oxbow's network daemon.
//!
//! This slice sets up the management network of a node: it brings `lo` up,
//! picks the first physical NIC, puts it into the bridge `vmbr0` (which it
//! creates and marks as Oxbow's), and gives the bridge an address, either
//! the static one of the answer file or one leased over DHCPv4 by the client
//! in [`dhcp`]. Once the node has an address (or DHCP has failed for a
//! while) it writes a ready file so that init's supervisor can start the
//! API, and then it stays up to renew the lease.
//!
//! The work is split the way the later, fuller daemon will need it:
//! [`plan`] decides what the management network should look like from the
//! answer file and sysfs, without touching the kernel, and [`apply`] makes
//! the kernel match over rtnetlink, changing only what differs. Running
//! twice, or restarting the daemon, leaves the same state and never takes
//! an interface down.

pub mod announce;
pub mod apply;
pub mod daemon;
pub mod dhcp;
pub mod fsutil;
pub mod interfaces;
pub mod logging;
pub mod ping;
pub mod plan;
pub mod port;
pub mod ratelimit;
pub mod reconcile;
pub mod resolv;
pub mod rtnl;
pub mod rtnl_sync;
pub mod staged;
pub mod sys;
pub mod sysfs;

use std::path::PathBuf;
use std::time::Duration;

pub use daemon::run;

/// The alias netd sets on bridges it created or adopted, so that they can
/// be told apart from bridges made by hand.
pub const OWNER_ALIAS: &str = "oxbow:netd";

/// Where and how netd runs. [`Config::default`] gives the values a booted
/// node uses.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Config {
    /// The answer file; when it does not exist the node uses DHCP.
    pub answer: PathBuf,
    /// The management bridge.
    pub bridge: String,
    /// Written once the node has an address, or once DHCP has failed for
    /// [`Config::ready_timeout`].
    pub ready_file: PathBuf,
    /// The resolver configuration netd writes.
    pub resolv_conf: PathBuf,
    /// The NIC to put into the bridge, instead of the one found in sysfs.
    pub nic: Option<String>,
    /// The sysfs directory listing network interfaces.
    pub sys_class_net: PathBuf,
    /// How long DHCP may fail before the ready file is written anyway.
    pub ready_timeout: Duration,
    /// The interfaces file, beside which an unconfirmed apply leaves its
    /// rollback state (see [`staged`]).
    pub interfaces: PathBuf,
    /// The firewall files; with a `cluster.fw` there, the host's part of
    /// the firewall is applied at start-up.
    pub firewall_dir: PathBuf,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            answer: PathBuf::from("/run/oxbow/answer.toml"),
            bridge: "vmbr0".to_string(),
            ready_file: PathBuf::from("/run/oxbow/netd.ready"),
            resolv_conf: PathBuf::from("/etc/resolv.conf"),
            nic: None,
            sys_class_net: PathBuf::from(sysfs::SYS_CLASS_NET),
            ready_timeout: Duration::from_secs(20),
            interfaces: PathBuf::from(staged::NetworkFiles::DEFAULT),
            firewall_dir: PathBuf::from(firewall::FIREWALL_DIR),
        }
    }
}

/// Why netd stopped.
#[derive(Debug, thiserror::Error)]
pub enum NetdError {
    /// The async runtime could not be built.
    #[error("cannot start the runtime: {0}")]
    Runtime(#[source] std::io::Error),
    /// A signal handler could not be installed.
    #[error("cannot install a signal handler: {0}")]
    Signal(#[source] std::io::Error),
    /// A netlink request failed.
    #[error(transparent)]
    Netlink(#[from] rtnl::RtnlError),
    /// The DHCP client could not start.
    #[error(transparent)]
    Dhcp(#[from] dhcp::DhcpError),
    /// The bridge has no MAC to identify the DHCP client by.
    #[error("{0} has no hardware address")]
    NoHardwareAddress(String),
    /// A file netd maintains could not be written.
    #[error("cannot write {path}: {source}")]
    Write {
        /// The file.
        path: PathBuf,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
}
