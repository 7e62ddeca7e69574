//! The files the runtime writes into the guest before its init starts:
//! the host name and the network configuration in the distribution's own
//! format, as Proxmox does. They are written from inside the container,
//! after `pivot_root` and as the container's root, so a link the guest
//! placed at one of these paths resolves inside the guest's own tree.

use std::fmt::Write as _;
use std::io::{self, Write};
use std::path::{Path, PathBuf};

use guestconf::{Ipv4Config, Ipv6Config};

use crate::spec::{ContainerSpec, NetSpec};

/// Marks the files (or lines) the runtime manages.
pub const MARKER: &str = "# --- managed by Oxbow from the container's configuration ---";

/// How a guest configures its network.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NetStyle {
    /// ifupdown's `/etc/network/interfaces` (Debian, Devuan).
    Ifupdown,
    /// systemd-networkd's `/etc/systemd/network/<name>.network`.
    Networkd,
    /// Nothing is written.
    None,
}

/// Picks the style for a guest whose root is `root`: ifupdown when the
/// guest has `/etc/network`, else networkd when it has
/// `/etc/systemd/network`; `unmanaged` guests get nothing.
pub fn net_style(ostype: &str, root: &Path) -> NetStyle {
    if ostype == "unmanaged" {
        return NetStyle::None;
    }
    if root.join("etc/network").is_dir() {
        NetStyle::Ifupdown
    } else if root.join("etc/systemd/network").is_dir() {
        NetStyle::Networkd
    } else {
        NetStyle::None
    }
}

/// `/etc/network/interfaces` for `nets`.
pub fn interfaces(nets: &[NetSpec]) -> String {
    let mut out = format!("{MARKER}\nauto lo\niface lo inet loopback\n");
    for net in nets {
        let name = &net.name;
        let mut auto = false;
        let mut body = String::new();
        match &net.ip {
            Some(Ipv4Config::Static { address, prefix }) => {
                auto = true;
                // Address and netmask apart: ifupdown, ifupdown2 and
                // busybox's ifup all read this form.
                let _ = writeln!(body, "\niface {name} inet static");
                let _ = writeln!(body, "\taddress {address}");
                let _ = writeln!(body, "\tnetmask {}", netmask(*prefix));
                if let Some(gw) = net.gw {
                    let _ = writeln!(body, "\tgateway {gw}");
                }
            }
            Some(Ipv4Config::Dhcp) => {
                auto = true;
                let _ = writeln!(body, "\niface {name} inet dhcp");
            }
            Some(Ipv4Config::Manual) => {
                auto = true;
                let _ = writeln!(body, "\niface {name} inet manual");
            }
            None => {}
        }
        match &net.ip6 {
            Some(Ipv6Config::Static { address, prefix }) => {
                auto = true;
                let _ = writeln!(body, "\niface {name} inet6 static");
                let _ = writeln!(body, "\taddress {address}/{prefix}");
                if let Some(gw) = net.gw6 {
                    let _ = writeln!(body, "\tgateway {gw}");
                }
            }
            Some(Ipv6Config::Dhcp) => {
                auto = true;
                let _ = writeln!(body, "\niface {name} inet6 dhcp");
            }
            Some(Ipv6Config::Auto) => {
                auto = true;
                let _ = writeln!(body, "\niface {name} inet6 auto");
            }
            Some(Ipv6Config::Manual) => {
                auto = true;
                let _ = writeln!(body, "\niface {name} inet6 manual");
            }
            None => {}
        }
        if auto {
            let _ = write!(out, "\nauto {name}");
            out.push_str(&body);
        }
    }
    out
}

/// The dotted netmask of a prefix length.
fn netmask(prefix: u8) -> std::net::Ipv4Addr {
    let bits = u32::MAX
        .checked_shl(32 - u32::from(prefix.min(32)))
        .unwrap_or(0);
    std::net::Ipv4Addr::from(bits)
}

/// A systemd-networkd unit for one interface.
pub fn networkd_unit(net: &NetSpec) -> String {
    let mut out = format!("{MARKER}\n[Match]\nName={}\n\n[Network]\n", net.name);
    let dhcp = match (&net.ip, &net.ip6) {
        (Some(Ipv4Config::Dhcp), Some(Ipv6Config::Dhcp)) => Some("yes"),
        (Some(Ipv4Config::Dhcp), _) => Some("ipv4"),
        (_, Some(Ipv6Config::Dhcp)) => Some("ipv6"),
        _ => None,
    };
    if let Some(d) = dhcp {
        let _ = writeln!(out, "DHCP={d}");
    }
    if let Some(Ipv4Config::Static { address, prefix }) = &net.ip {
        let _ = writeln!(out, "Address={address}/{prefix}");
    }
    if let Some(gw) = net.gw {
        let _ = writeln!(out, "Gateway={gw}");
    }
    if let Some(Ipv6Config::Static { address, prefix }) = &net.ip6 {
        let _ = writeln!(out, "Address={address}/{prefix}");
    }
    if let Some(gw) = net.gw6 {
        let _ = writeln!(out, "Gateway={gw}");
    }
    let accept_ra = matches!(net.ip6, Some(Ipv6Config::Auto));
    let _ = writeln!(
        out,
        "IPv6AcceptRA={}",
        if accept_ra { "true" } else { "false" }
    );
    out
}

/// `/etc/hosts` with the `127.0.1.1` line naming `hostname`; other lines
/// are kept.
pub fn hosts(current: &str, hostname: &str) -> String {
    let short = hostname.split('.').next().unwrap_or(hostname);
    let names = if short == hostname {
        hostname.to_string()
    } else {
        format!("{hostname} {short}")
    };
    let mut out = String::new();
    let mut replaced = false;
    for line in current.lines() {
        if line.split_whitespace().next() == Some("127.0.1.1") {
            if !replaced {
                let _ = writeln!(out, "127.0.1.1\t{names}");
                replaced = true;
            }
            continue;
        }
        out.push_str(line);
        out.push('\n');
    }
    if !replaced {
        if !current
            .lines()
            .any(|l| l.split_whitespace().next() == Some("127.0.0.1"))
        {
            out.push_str("127.0.0.1\tlocalhost\n");
        }
        let _ = writeln!(out, "127.0.1.1\t{names}");
    }
    out
}

/// Writes `contents` to `path` atomically: a temporary file beside it,
/// fsync, rename. [`plan_guest_files`] has already left out the files that
/// hold what they should, so a restart costs no disk flush.
fn write_atomic(path: &Path, contents: &[u8], mode: u32) -> io::Result<()> {
    use std::os::unix::fs::OpenOptionsExt;
    let dir = path.parent().unwrap_or(Path::new("/"));
    std::fs::create_dir_all(dir)?;
    let name = path.file_name().unwrap_or_default().to_string_lossy();
    let tmp = dir.join(format!(".{name}.oxbow-new"));
    let _ = std::fs::remove_file(&tmp);
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(mode)
        .open(&tmp)?;
    f.write_all(contents)?;
    f.sync_all()?;
    drop(f);
    std::fs::rename(&tmp, path)?;
    if let Ok(d) = std::fs::File::open(dir) {
        let _ = d.sync_all();
    }
    Ok(())
}

/// The guest's host name and network files that differ from what they
/// should be, read by [`plan_guest_files`] and written by
/// [`GuestFiles::write`]: a start reads and compares them while it waits
/// for the network, and writes only once the network is made.
#[derive(Debug, Default)]
pub struct GuestFiles {
    changes: Vec<(PathBuf, Vec<u8>)>,
}

impl GuestFiles {
    /// Writes each changed file (atomically: temporary file, fsync,
    /// rename).
    pub fn write(self) -> io::Result<()> {
        for (path, contents) in self.changes {
            write_atomic(&path, &contents, 0o644)?;
        }
        Ok(())
    }

    /// The files that would be written.
    pub fn paths(&self) -> impl Iterator<Item = &Path> {
        self.changes.iter().map(|(p, _)| p.as_path())
    }
}

/// Reads the host name and network files of the guest whose root is
/// `root` (`/` when called inside the container) and keeps those that
/// differ from what `spec` says they should be.
pub fn plan_guest_files(spec: &ContainerSpec, root: &Path) -> io::Result<GuestFiles> {
    let mut wanted: Vec<(PathBuf, String)> =
        vec![(root.join("etc/hostname"), format!("{}\n", spec.hostname))];
    let hosts_path = root.join("etc/hosts");
    let current = std::fs::read_to_string(&hosts_path).ok();
    let hosts = hosts(current.as_deref().unwrap_or_default(), &spec.hostname);
    let mut plan = GuestFiles::default();
    if current.as_deref() != Some(hosts.as_str()) {
        plan.changes.push((hosts_path, hosts.into_bytes()));
    }
    match net_style(&spec.ostype, root) {
        NetStyle::Ifupdown => {
            wanted.push((root.join("etc/network/interfaces"), interfaces(&spec.nets)));
        }
        NetStyle::Networkd => {
            for net in &spec.nets {
                let path = root.join(format!(
                    "etc/systemd/network/eth-oxbow-{}.network",
                    net.name
                ));
                wanted.push((path, networkd_unit(net)));
            }
        }
        NetStyle::None => {}
    }
    for (path, contents) in wanted {
        if std::fs::read(&path).ok().as_deref() != Some(contents.as_bytes()) {
            plan.changes.push((path, contents.into_bytes()));
        }
    }
    Ok(plan)
}

/// Writes the host name and network files into the guest whose root is
/// `root` (`/` when called inside the container).
pub fn write_guest_files(spec: &ContainerSpec, root: &Path) -> io::Result<()> {
    plan_guest_files(spec, root)?.write()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn net(name: &str, ip: Option<Ipv4Config>, gw: Option<&str>) -> NetSpec {
        NetSpec {
            index: 0,
            name: name.into(),
            bridge: None,
            hwaddr: None,
            ip,
            gw: gw.map(|g| g.parse().unwrap()),
            ip6: None,
            gw6: None,
            mtu: None,
            tag: None,
        }
    }

    #[test]
    fn interfaces_file_has_static_and_dhcp_stanzas() {
        let nets = [
            net(
                "eth0",
                Some(Ipv4Config::Static {
                    address: "192.0.2.11".parse().unwrap(),
                    prefix: 24,
                }),
                Some("192.0.2.1"),
            ),
            net("eth1", Some(Ipv4Config::Dhcp), None),
            net("eth2", None, None),
        ];
        let text = interfaces(&nets);
        assert_eq!(
            text,
            format!(
                "{MARKER}\nauto lo\niface lo inet loopback\n\nauto eth0\niface eth0 inet static\n\
                 \taddress 192.0.2.11\n\tnetmask 255.255.255.0\n\tgateway 192.0.2.1\n\nauto eth1\niface eth1 inet dhcp\n"
            )
        );
        assert_eq!(netmask(0).to_string(), "0.0.0.0");
        assert_eq!(netmask(20).to_string(), "255.255.240.0");
        assert_eq!(netmask(32).to_string(), "255.255.255.255");
        let unit = networkd_unit(&nets[1]);
        assert!(
            unit.contains("Name=eth1\n") && unit.contains("DHCP=ipv4\n"),
            "{unit}"
        );
    }

    #[test]
    fn hosts_line_is_replaced_or_added() {
        assert_eq!(
            hosts(
                "127.0.0.1\tlocalhost\n127.0.1.1\told\n::1 ip6-localhost\n",
                "web.example.org"
            ),
            "127.0.0.1\tlocalhost\n127.0.1.1\tweb.example.org web\n::1 ip6-localhost\n"
        );
        assert_eq!(hosts("", "web"), "127.0.0.1\tlocalhost\n127.0.1.1\tweb\n");
    }

    #[test]
    fn writes_into_a_root() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(dir.path().join("etc/network")).unwrap();
        let config = guestconf::GuestConfig::parse(
            "unprivileged: 1\nhostname: ct1\nostype: debian\nnet0: name=eth0,bridge=br0,ip=dhcp\n",
        )
        .unwrap();
        let spec = ContainerSpec::from_config(101, &config, dir.path().into()).unwrap();
        write_guest_files(&spec, dir.path()).unwrap();
        let read = |p: &str| std::fs::read_to_string(dir.path().join(p)).unwrap();
        assert_eq!(read("etc/hostname"), "ct1\n");
        assert!(read("etc/hosts").contains("127.0.1.1\tct1\n"));
        assert!(read("etc/network/interfaces").contains("iface eth0 inet dhcp\n"));
        // Once written, nothing is left to change.
        let again = plan_guest_files(&spec, dir.path()).unwrap();
        assert_eq!(again.paths().count(), 0);
        // A changed host name changes the two files that carry it, and a
        // plan writes nothing until it is written.
        let renamed = guestconf::GuestConfig::parse(
            "unprivileged: 1\nhostname: ct2\nostype: debian\nnet0: name=eth0,bridge=br0,ip=dhcp\n",
        )
        .unwrap();
        let spec = ContainerSpec::from_config(101, &renamed, dir.path().into()).unwrap();
        let plan = plan_guest_files(&spec, dir.path()).unwrap();
        let mut changed: Vec<_> = plan
            .paths()
            .map(|p| p.strip_prefix(dir.path()).unwrap().to_path_buf())
            .collect();
        changed.sort();
        assert_eq!(changed, [Path::new("etc/hostname"), Path::new("etc/hosts")]);
        assert_eq!(read("etc/hostname"), "ct1\n");
        plan.write().unwrap();
        assert_eq!(read("etc/hostname"), "ct2\n");
        assert!(read("etc/hosts").contains("127.0.1.1\tct2\n"));
    }
}
