//! Finding the NIC for the management bridge in sysfs, and waiting for a
//! link's carrier there.
//!
//! The directory is a parameter so that tests can build a fake tree.

use std::fs;
use std::io;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// Where the kernel lists network interfaces.
pub const SYS_CLASS_NET: &str = "/sys/class/net";

/// `ARPHRD_ETHER`, the `type` of an Ethernet interface.
const ARPHRD_ETHER: u32 = 1;

/// A physical Ethernet interface that may join the management bridge.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SysNic {
    /// Interface name.
    pub name: String,
    /// Kernel interface index.
    pub ifindex: u32,
    /// The interface it is enslaved to, if any (only ever the management
    /// bridge for a candidate).
    pub master: Option<String>,
}

/// What [`wait_for_carrier`] saw.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Carrier {
    /// The link had a carrier after this long.
    Up(Duration),
    /// No carrier within the limit.
    TimedOut,
    /// The `carrier` file cannot be read (another sysfs layout): not waited
    /// for.
    Unknown,
}

/// Waits until `link` under `sys_class_net` reports a carrier (for a
/// bridge: a port up and forwarding), looking every 20 ms for at most
/// `limit`. While the link is down the kernel answers `EINVAL`, which
/// counts as no carrier yet.
pub async fn wait_for_carrier(sys_class_net: &Path, link: &str, limit: Duration) -> Carrier {
    let file = sys_class_net.join(link).join("carrier");
    let start = tokio::time::Instant::now();
    loop {
        match fs::read_to_string(&file) {
            Ok(s) if s.trim() == "1" => return Carrier::Up(start.elapsed()),
            Ok(_) | Err(_) if start.elapsed() >= limit => return Carrier::TimedOut,
            Ok(_) => {}
            Err(e) if e.kind() == io::ErrorKind::InvalidInput => {}
            Err(_) => return Carrier::Unknown,
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// A failure to list the interfaces.
#[derive(Debug, thiserror::Error)]
#[error("cannot list {path}: {source}")]
pub struct SysfsError {
    /// The directory.
    pub path: PathBuf,
    /// The cause.
    #[source]
    pub source: io::Error,
}

/// Lists the interfaces that could join `bridge`, lowest ifindex first.
///
/// A candidate is backed by a device (it has a `device` link, as physical
/// and virtio NICs do), is Ethernet (`type` 1), is neither a bridge nor a
/// wireless interface, and is not enslaved to anything but `bridge`.
pub fn candidates(class_net: &Path, bridge: &str) -> Result<Vec<SysNic>, SysfsError> {
    let entries = fs::read_dir(class_net).map_err(|source| SysfsError {
        path: class_net.to_path_buf(),
        source,
    })?;
    let mut found = Vec::new();
    for entry in entries.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        let dir = entry.path();
        match inspect(&dir, &name, bridge) {
            Ok(Some(nic)) => found.push(nic),
            Ok(None) => {}
            Err(e) => tracing::debug!("skipping {}: {e}", dir.display()),
        }
    }
    found.sort_by_key(|n| n.ifindex);
    Ok(found)
}

/// Picks the NIC for `bridge`: one already in it if there is one (a
/// restarted netd keeps what it set up), otherwise the free candidate with
/// the lowest ifindex.
pub fn pick_nic(class_net: &Path, bridge: &str) -> Result<Option<SysNic>, SysfsError> {
    let all = candidates(class_net, bridge)?;
    let in_bridge = all.iter().find(|n| n.master.is_some()).cloned();
    Ok(in_bridge.or_else(|| all.into_iter().next()))
}

fn inspect(dir: &Path, name: &str, bridge: &str) -> io::Result<Option<SysNic>> {
    let exists = |p: &str| dir.join(p).symlink_metadata().is_ok();
    if !exists("device") || exists("bridge") || exists("wireless") || exists("phy80211") {
        return Ok(None);
    }
    if read_number(&dir.join("type"))? != ARPHRD_ETHER {
        return Ok(None);
    }
    let master = match fs::read_link(dir.join("master")) {
        Ok(target) => Some(
            target
                .file_name()
                .map(|s| s.to_string_lossy().into_owned())
                .unwrap_or_default(),
        ),
        Err(e) if e.kind() == io::ErrorKind::NotFound => None,
        Err(e) => return Err(e),
    };
    if master.as_deref().is_some_and(|m| m != bridge) {
        return Ok(None);
    }
    // A bridge port without a `master` link would be odd, but it is still
    // someone else's port.
    if master.is_none() && exists("brport") {
        return Ok(None);
    }
    Ok(Some(SysNic {
        name: name.to_string(),
        ifindex: read_number(&dir.join("ifindex"))?,
        master,
    }))
}

fn read_number(path: &Path) -> io::Result<u32> {
    let text = fs::read_to_string(path)?;
    text.trim().parse().map_err(|_| {
        io::Error::new(
            io::ErrorKind::InvalidData,
            format!("{}: `{}` is not a number", path.display(), text.trim()),
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::symlink;

    struct Fake {
        dir: tempfile::TempDir,
    }

    impl Fake {
        fn new() -> Fake {
            let dir = tempfile::tempdir().unwrap();
            fs::create_dir_all(dir.path().join("devices/pci0000:00")).unwrap();
            Fake { dir }
        }

        fn root(&self) -> PathBuf {
            self.dir.path().join("class/net")
        }

        /// Adds an interface; `device` says whether it has a `device` link.
        fn iface(&self, name: &str, ifindex: u32, kind: u32, device: bool) -> PathBuf {
            let d = self.root().join(name);
            fs::create_dir_all(&d).unwrap();
            fs::write(d.join("ifindex"), format!("{ifindex}\n")).unwrap();
            fs::write(d.join("type"), format!("{kind}\n")).unwrap();
            fs::write(d.join("address"), "52:54:00:12:34:56\n").unwrap();
            if device {
                symlink(self.dir.path().join("devices/pci0000:00"), d.join("device")).unwrap();
            }
            d
        }

        fn enslave(&self, port: &str, master: &str) {
            let d = self.root().join(port);
            symlink(format!("../{master}"), d.join("master")).unwrap();
            fs::create_dir_all(d.join("brport")).unwrap();
        }
    }

    fn names(v: &[SysNic]) -> Vec<&str> {
        v.iter().map(|n| n.name.as_str()).collect()
    }

    #[test]
    fn picks_lowest_ifindex_physical_ethernet() {
        let f = Fake::new();
        f.iface("lo", 1, 772, false);
        f.iface("ens5", 5, 1, true);
        f.iface("ens3", 3, 1, true);
        f.iface("veth0", 2, 1, false);
        f.iface("ib0", 4, 32, true);
        let w = f.iface("wlan0", 0, 1, true);
        fs::create_dir(w.join("wireless")).unwrap();
        let b = f.iface("br9", 6, 1, false);
        fs::create_dir(b.join("bridge")).unwrap();
        assert_eq!(
            names(&candidates(&f.root(), "vmbr0").unwrap()),
            ["ens3", "ens5"]
        );
        let nic = pick_nic(&f.root(), "vmbr0").unwrap().unwrap();
        assert_eq!(
            nic,
            SysNic {
                name: "ens3".into(),
                ifindex: 3,
                master: None
            }
        );
    }

    #[test]
    fn skips_ports_of_other_bridges_but_keeps_our_own() {
        let f = Fake::new();
        f.iface("eno1", 2, 1, true);
        f.iface("eno2", 3, 1, true);
        f.iface("eno3", 4, 1, true);
        f.enslave("eno1", "br-other");
        f.enslave("eno3", "vmbr0");
        assert_eq!(
            names(&candidates(&f.root(), "vmbr0").unwrap()),
            ["eno2", "eno3"]
        );
        // The port already in vmbr0 wins over a lower free ifindex.
        let nic = pick_nic(&f.root(), "vmbr0").unwrap().unwrap();
        assert_eq!(nic.name, "eno3");
        assert_eq!(nic.master.as_deref(), Some("vmbr0"));
    }

    #[test]
    fn a_bridge_port_without_master_link_is_skipped() {
        let f = Fake::new();
        let d = f.iface("eth0", 2, 1, true);
        fs::create_dir(d.join("brport")).unwrap();
        assert_eq!(pick_nic(&f.root(), "vmbr0").unwrap(), None);
    }

    #[test]
    fn none_found_and_broken_entries() {
        let f = Fake::new();
        f.iface("lo", 1, 772, false);
        let d = f.iface("eth0", 2, 1, true);
        fs::write(d.join("type"), "garbage").unwrap();
        assert_eq!(pick_nic(&f.root(), "vmbr0").unwrap(), None);
        assert!(pick_nic(&f.dir.path().join("missing"), "vmbr0").is_err());
    }
}
