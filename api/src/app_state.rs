//! What every request handler shares.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use std::sync::Arc;

use crate::access::AccessStore;
use crate::login_throttle::LoginThrottle;
use crate::state_dir::StateDir;
use crate::tasks::TaskStore;
use crate::ticket::TicketSigner;

/// The shared state of a running apid.
#[derive(Debug)]
pub struct AppState {
    /// The node name.
    pub node: String,
    /// Users, tokens, groups, pools, roles and ACLs.
    pub access: AccessStore,
    /// The node's storages (`storage.cfg` and their plugins).
    pub storage: storage::Storages,
    /// VM configurations.
    pub vms: crate::guests::VmStore,
    /// Container configurations.
    pub cts: crate::guests::VmStore,
    /// How VMs are started, stopped and asked.
    pub runtime: crate::guests::VmRuntime,
    /// The last answer of `/cluster/resources`.
    pub resources_cache: crate::endpoints::cluster::ResourcesCache,
    /// Running and finished tasks.
    pub tasks: Arc<TaskStore>,
    /// The node's state directory.
    pub state_dir: StateDir,
    /// Signs and checks tickets and CSRF tokens.
    pub signer: TicketSigner,
    /// Limits failed logins per source.
    pub login_throttle: LoginThrottle,
    /// How long a failed login waits before it is answered.
    pub failed_login_delay: Duration,
    /// The node's interfaces file and how applies are made safe.
    pub network: crate::network::NetworkSettings,
    /// The firewall files and the lock that orders their changes.
    pub firewall: crate::firewall::FirewallSettings,
}

/// The current unix time in seconds.
pub fn unix_now() -> i64 {
    match SystemTime::now().duration_since(UNIX_EPOCH) {
        Ok(since) => i64::try_from(since.as_secs()).unwrap_or(i64::MAX),
        Err(before) => -i64::try_from(before.duration().as_secs()).unwrap_or(i64::MAX),
    }
}
