//! The node's firewall files and applying the whole ruleset.

use std::path::{Path, PathBuf};

/// Where the firewall files are, and the lock that orders changes.
#[derive(Debug)]
pub struct FirewallSettings {
    /// `cluster.fw`, `host.fw` and `<vmid>.fw` live here.
    pub dir: PathBuf,
    /// Held while a file is changed and the ruleset applied.
    pub lock: tokio::sync::Mutex<()>,
}

impl FirewallSettings {
    /// Settings for the files in `dir`.
    pub fn new(dir: &Path) -> FirewallSettings {
        FirewallSettings {
            dir: dir.to_path_buf(),
            lock: tokio::sync::Mutex::new(()),
        }
    }
}
