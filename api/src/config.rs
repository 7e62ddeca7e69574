//! What apid is told at start.

use std::net::{Ipv6Addr, SocketAddr};
use std::path::PathBuf;
use std::time::Duration;

use crate::error::ServerError;

/// The port Proxmox VE's API listens on.
pub const DEFAULT_PORT: u16 = 8006;

/// The default listening address: all IPv6 and IPv4 addresses.
pub const DEFAULT_LISTEN: SocketAddr =
    SocketAddr::new(std::net::IpAddr::V6(Ipv6Addr::UNSPECIFIED), DEFAULT_PORT);

/// The default state directory.
pub const DEFAULT_STATE_DIR: &str = "/var/lib/oxbow";

/// How long a failed login waits before it is answered.
pub const DEFAULT_FAILED_LOGIN_DELAY: Duration = Duration::from_secs(2);

/// How many failed logins one source may have within [`LoginFailureLimit::window`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LoginFailureLimit {
    /// Failed (or still running) logins allowed within the window.
    pub max_failures: u32,
    /// The sliding window.
    pub window: Duration,
}

impl Default for LoginFailureLimit {
    fn default() -> Self {
        LoginFailureLimit {
            max_failures: 5,
            window: Duration::from_secs(60),
        }
    }
}

/// apid's configuration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Config {
    /// The address to listen on; an unspecified IPv6 address also accepts
    /// IPv4 connections.
    pub listen: SocketAddr,
    /// The node's state directory.
    pub state_dir: PathBuf,
    /// The node name, as Proxmox clients see it.
    pub node: String,
    /// How long a failed login waits before it is answered.
    pub failed_login_delay: Duration,
    /// The per-source limit of failed logins.
    pub login_failure_limit: LoginFailureLimit,
    /// The directory of storage `local` when `storage.cfg` does not exist.
    pub local_storage: PathBuf,
    /// init's control socket, through which guests are started as units.
    pub init_socket: PathBuf,
    /// The directory of the guests' runtime files (control sockets).
    pub run_dir: PathBuf,
    /// The VMM binary.
    pub vmm_binary: PathBuf,
    /// The container runtime binary.
    pub ctr_binary: PathBuf,
    /// Where the VMMs keep kernels unpacked from bzImages.
    pub kernel_cache: Option<PathBuf>,
    /// The node's live interfaces file (`interfaces.new` and the rollback
    /// state live beside it), as netd's `--interfaces`.
    pub interfaces: PathBuf,
    /// The management bridge that a network apply must keep reachable.
    pub management_bridge: String,
    /// How long netd waits for a network apply to be confirmed before it
    /// probes the management address and rolls back if it is gone.
    pub network_confirm_timeout: Duration,
    /// The directory of `cluster.fw`, `host.fw` and `<vmid>.fw`, as
    /// netd's `--firewall-dir`.
    pub firewall_dir: PathBuf,
}

/// The default directory of storage `local`, as on Proxmox VE.
pub const DEFAULT_LOCAL_STORAGE: &str = "/var/lib/vz";

impl Config {
    /// The default configuration for node `node`.
    pub fn new(node: impl Into<String>) -> Self {
        Config {
            listen: DEFAULT_LISTEN,
            state_dir: PathBuf::from(DEFAULT_STATE_DIR),
            node: node.into(),
            failed_login_delay: DEFAULT_FAILED_LOGIN_DELAY,
            login_failure_limit: LoginFailureLimit::default(),
            local_storage: PathBuf::from(DEFAULT_LOCAL_STORAGE),
            init_socket: PathBuf::from("/run/oxbow/init.sock"),
            run_dir: PathBuf::from("/run/oxbow/guests"),
            vmm_binary: PathBuf::from("/usr/lib/oxbow/vmm"),
            ctr_binary: PathBuf::from("/usr/lib/oxbow/ctr"),
            kernel_cache: Some(PathBuf::from("/var/cache/oxbow/kernels")),
            interfaces: PathBuf::from(netd::staged::NetworkFiles::DEFAULT),
            management_bridge: "vmbr0".to_owned(),
            network_confirm_timeout: Duration::from_secs(60),
            firewall_dir: PathBuf::from(firewall::FIREWALL_DIR),
        }
    }
}

/// Checks that `name` can be a node name: a host name label of letters,
/// digits and '-', not starting or ending with '-', at most 63 characters.
pub fn validate_node_name(name: &str) -> Result<(), ServerError> {
    let valid = !name.is_empty()
        && name.len() <= 63
        && name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
        && !name.starts_with('-')
        && !name.ends_with('-');
    if valid {
        Ok(())
    } else {
        Err(ServerError::InvalidNodeName(name.to_owned()))
    }
}

/// The node name taken from the system host name (up to its first dot).
pub fn system_node_name() -> Result<String, ServerError> {
    let host = nix::unistd::gethostname().map_err(ServerError::Hostname)?;
    let host = host.to_string_lossy();
    let short = host.split('.').next().unwrap_or("");
    validate_node_name(short)?;
    Ok(short.to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn node_names() {
        for good in ["pve1", "node-a", "A", "x1-2-3"] {
            assert!(validate_node_name(good).is_ok(), "{good}");
        }
        let too_long = "a".repeat(64);
        for bad in ["", "-a", "a-", "a.b", "a_b", "nöde", too_long.as_str()] {
            assert!(validate_node_name(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn defaults() {
        let config = Config::new("pve1");
        assert_eq!(config.listen.to_string(), "[::]:8006");
        assert_eq!(config.state_dir, PathBuf::from("/var/lib/oxbow"));
        assert_eq!(config.login_failure_limit.max_failures, 5);
    }
}
